//! Talking to the run's API over HTTP: a hyper client with a timeout per
//! request, HS256 tokens minted with the run's secret (an admin token for the
//! readers, a user's token for writes), and the API writer, a task that buys
//! packages (`POST /v1/purchases`) and pays some of them
//! (`POST /v1/purchases/{id}/payments`) as random users, retrying a failed
//! write with the same `Idempotency-Key` so a retry never writes twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, ETAG};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value as Json, json};

use super::pipeline::{PACKAGES, SECRET};
use super::rng::Rng;
use super::timeline::Timeline;
use super::writer::Touched;

type Http = Client<HttpConnector, Full<Bytes>>;

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// The version in the `ETag`, if any.
    pub etag: Option<u64>,
    /// The body.
    pub body: Bytes,
}

/// The run's API.
pub struct Api {
    http: Http,
    base: String,
    admin: String,
    timeout: Duration,
}

/// The version an `ETag: "<version>"` names.
pub fn etag_version(etag: &str) -> Option<u64> {
    etag.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .ok()
}

/// A bearer token for user `sub` (with the admin scope if `admin`), valid
/// for a day.
pub fn token(sub: u64, admin: bool) -> anyhow::Result<String> {
    let mut claims = json!({"sub": sub.to_string(), "exp": Utc::now().timestamp() + 86_400});
    if admin {
        claims["scope"] = json!("admin");
    }
    let t = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )?;
    Ok(format!("Bearer {t}"))
}

impl Api {
    /// A client of the API at `base` (`http://host:port`).
    pub fn new(base: String) -> anyhow::Result<Self> {
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .pool_idle_timeout(Duration::from_secs(5))
            .build_http();
        Ok(Self {
            http,
            base,
            admin: token(1, true)?,
            timeout: Duration::from_secs(5),
        })
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> anyhow::Result<Answer> {
        let call = async {
            let resp = self.http.request(req).await?;
            let status = resp.status().as_u16();
            let etag = resp
                .headers()
                .get(ETAG)
                .and_then(|v| v.to_str().ok())
                .and_then(etag_version);
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok(Answer { status, etag, body })
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .context("no answer within 5 s")?
    }

    /// `GET path` as the admin.
    pub async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        let req = Request::get(format!("{}{path}", self.base))
            .header(AUTHORIZATION, &self.admin)
            .body(Full::new(Bytes::new()))?;
        self.send(req).await
    }

    /// `POST path` with a JSON body, as `auth`, with an idempotency key.
    pub async fn post(
        &self,
        path: &str,
        auth: &str,
        key: &str,
        body: &Json,
    ) -> anyhow::Result<Answer> {
        let req = Request::post(format!("{}{path}", self.base))
            .header(AUTHORIZATION, auth)
            .header(CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", key)
            .body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?;
        self.send(req).await
    }
}

/// Sends one write up to four times with the same key until it is
/// answered with something other than a 5xx.
async fn write_once(api: &Api, path: &str, auth: &str, key: &str, body: &Json) -> Option<Answer> {
    for attempt in 0..4u64 {
        if let Ok(a) = api.post(path, auth, key, body).await
            && a.status < 500
        {
            return Some(a);
        }
        tokio::time::sleep(Duration::from_millis(500 * (attempt + 1))).await;
    }
    None
}

/// Buys (and sometimes pays) as random users of `1..=users`, about
/// `per_sec` purchases a second, until `stop`.
pub async fn api_writer(
    api: Arc<Api>,
    seed: u64,
    users: u64,
    per_sec: u64,
    touched: Arc<Touched>,
    timeline: Arc<Timeline>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = Rng::fork(seed, 3);
    let pause = Duration::from_millis(1000 / per_sec.max(1));
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let user = rng.between(1, users);
        let Ok(auth) = token(user, false) else { break };
        let body = json!({"package_id": rng.between(1, PACKAGES), "quantity": rng.between(1, 5)});
        let bought = write_once(
            &api,
            "/v1/purchases",
            &auth,
            &format!("api-{seed}-{n}"),
            &body,
        )
        .await;
        let id = match bought {
            Some(a) if a.status == 201 => serde_json::from_slice::<Json>(&a.body)
                .ok()
                .and_then(|d| d["id"].as_u64()),
            _ => None,
        };
        let Some(id) = id else {
            timeline.add(|b| b.api_write_failures += 1);
            tokio::time::sleep(pause).await;
            continue;
        };
        timeline.add(|b| b.api_writes += 1);
        touched.purchase(id);
        touched.user(user);
        if rng.percent(50) {
            let path = format!("/v1/purchases/{id}/payments");
            let paid = write_once(
                &api,
                &path,
                &auth,
                &format!("pay-{seed}-{n}"),
                &json!({"method": "card"}),
            )
            .await;
            // 409 (already paid, changed concurrently) is a refusal, not a failure.
            match paid {
                Some(a) if a.status == 201 || a.status == 409 => {
                    timeline.add(|b| b.api_writes += 1)
                }
                _ => timeline.add(|b| b.api_write_failures += 1),
            }
        }
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_and_tokens() {
        assert_eq!(etag_version("\"7\""), Some(7));
        assert_eq!(etag_version("W/\"12\""), Some(12));
        assert_eq!(etag_version("x"), None);
        let t = token(5, true).unwrap();
        assert!(t.starts_with("Bearer "));
        assert_eq!(t.split('.').count(), 3);
    }
}
