//! Harness for the API's integration tests: the real router in process
//! (requests go through every middleware via `tower::ServiceExt::oneshot`,
//! no sockets), against the local stack's MariaDB (`payments`, app user) and
//! Redis under a unique key prefix, with fixtures the test creates itself
//! (users with unique e-mails, packages with unique codes) and tokens.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use paystream_api::app::{self, App, Limits};
use paystream_api::auth::{JwtAlgorithm, Verifier, VerifierConfig};
use paystream_api::cache::{Cache, RedisConfig};
use paystream_api::metrics::ApiMetrics;
use paystream_api::near::{self, NearCache};
use paystream_api::reads::Reads;
use paystream_api::store::{Store, StoreConfig};
use paystream_core::envelope::change_topic;
use paystream_core::readmodel::Keys;
use paystream_runtime::redis_client::{RedisConn, RedisTarget};
use paystream_testkit::{Stack, unique_name, wait_for};
use prometheus_client::registry::Registry;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions, MySqlSslMode};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub const SECRET: &str = "paystream-test-secret-0123456789abcdef";

/// How to build the API under test.
#[derive(Clone)]
pub struct Opts {
    pub redis_url: String,
    /// A Sentinel or Cluster deployment instead of `redis_url`.
    pub redis_target: Option<RedisTarget>,
    pub mysql_port: u16,
    pub mysql_user: String,
    pub mysql_password: String,
    pub database: String,
    pub prefix: String,
    pub topic_prefix: String,
    pub near_capacity: u64,
    pub read_concurrency: usize,
    pub read_wait_ms: u64,
    pub request_timeout_ms: u64,
    pub query_timeout_ms: u64,
    pub redis_timeout_ms: u64,
    pub max_body_bytes: usize,
    pub rs256_public_pem: Option<Vec<u8>>,
}

impl Default for Opts {
    fn default() -> Self {
        let stack = Stack::from_env();
        let prefix = unique_name("apitest").replace('_', "-");
        Self {
            redis_url: stack.redis_url(),
            redis_target: None,
            mysql_port: stack.mysql_port,
            mysql_user: stack.app.user.clone(),
            mysql_password: stack.app.password.clone(),
            database: "payments".into(),
            topic_prefix: prefix.clone(),
            prefix,
            near_capacity: 0,
            read_concurrency: 16,
            read_wait_ms: 2000,
            request_timeout_ms: 5000,
            query_timeout_ms: 3000,
            redis_timeout_ms: 300,
            max_body_bytes: 4096,
            rs256_public_pem: None,
        }
    }
}

impl Opts {
    /// Where the API finds Redis.
    pub fn target(&self) -> RedisTarget {
        self.redis_target
            .clone()
            .unwrap_or_else(|| RedisTarget::standalone(&self.redis_url))
    }
}

/// The API under test.
pub struct Api {
    pub app: Arc<App>,
    pub router: Router,
    pub metrics: ApiMetrics,
    pub opts: Opts,
    pub keys: Keys,
    pub admin: MySqlPool,
    pub stop: CancellationToken,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a problem document with `status` and returns it.
    pub fn problem(&self, status: u16) -> serde_json::Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        let p = self.json();
        assert_eq!(p["status"], status);
        assert!(p["type"].as_str().unwrap().starts_with("/problems/"), "{p}");
        assert!(!p["title"].as_str().unwrap().is_empty(), "{p}");
        assert!(!p["detail"].as_str().unwrap().is_empty(), "{p}");
        p
    }
}

pub async fn admin_pool(database: &str) -> MySqlPool {
    let stack = Stack::from_env();
    MySqlPoolOptions::new()
        .max_connections(4)
        .connect(&stack.mysql_url(&stack.admin, database))
        .await
        .unwrap()
}

impl Api {
    pub async fn start() -> Self {
        Self::with(Opts::default()).await
    }

    pub async fn with(opts: Opts) -> Self {
        let mut registry = Registry::with_prefix("paystream");
        let metrics = ApiMetrics::register(&mut registry);
        let redis = RedisConfig {
            target: opts.target(),
            connections: 2,
            timeout: Duration::from_millis(opts.redis_timeout_ms),
            connect_timeout: Duration::from_millis(500),
            prefix: opts.prefix.clone(),
            topics: ["purchases", "packages"]
                .iter()
                .map(|t| change_topic(&opts.topic_prefix, &opts.database, t))
                .collect(),
            tombstone_ttl_ms: 86_400_000,
        };
        let cache = Arc::new(Cache::new(&redis, metrics.clone()).unwrap());
        let store = Arc::new(Store::new(
            &StoreConfig {
                host: "127.0.0.1".into(),
                port: opts.mysql_port,
                user: opts.mysql_user.clone(),
                password: opts.mysql_password.clone(),
                database: opts.database.clone(),
                ssl_mode: MySqlSslMode::Disabled,
                ssl_ca: None,
                max_connections: 16,
                min_connections: 0,
                acquire_timeout: Duration::from_secs(2),
                read_concurrency: opts.read_concurrency,
                read_wait: Duration::from_millis(opts.read_wait_ms),
                query_timeout: Duration::from_millis(opts.query_timeout_ms),
            },
            metrics.clone(),
        ));
        let stop = CancellationToken::new();
        let near = (opts.near_capacity > 0).then(|| {
            let n = Arc::new(NearCache::new(
                opts.near_capacity,
                Duration::from_secs(60),
                metrics.clone(),
            ));
            tokio::spawn(near::run_invalidation(
                n.clone(),
                redis.clone(),
                vec![
                    format!("{}:purchase:", opts.prefix),
                    format!("{}:package:", opts.prefix),
                ],
                stop.clone(),
            ));
            n
        });
        let verifier = Verifier::new(&VerifierConfig {
            algorithm: if opts.rs256_public_pem.is_some() {
                JwtAlgorithm::Rs256
            } else {
                JwtAlgorithm::Hs256
            },
            secret: Some(SECRET.into()),
            public_key_pem: opts.rs256_public_pem.clone(),
            issuer: None,
            audience: None,
            leeway_secs: 5,
            admin_scope: "admin".into(),
        })
        .unwrap();
        let app = Arc::new(App {
            verifier,
            reads: Reads::new(cache, store.clone(), near, metrics.clone()),
            store,
            metrics: metrics.clone(),
            registry: Arc::new(registry),
            limits: Limits {
                page_size: 20,
                max_page_size: 100,
                max_quantity: 1000,
                max_body_bytes: opts.max_body_bytes,
                request_timeout: Duration::from_millis(opts.request_timeout_ms),
            },
            openapi: Default::default(),
            bench_body: Bytes::from_static(b"{\"p\":\"x\"}"),
            mysql_up: AtomicBool::new(false),
        });
        let readiness = paystream_runtime::readiness::Readiness::new();
        tokio::spawn(app::health_loop(
            app.clone(),
            readiness.register("reads"),
            Duration::from_millis(100),
            stop.clone(),
        ));
        let router = app::router(app.clone(), true);
        wait_for("api ready", Duration::from_secs(20), || {
            let ready = app.is_ready();
            async move { ready.then_some(()) }
        })
        .await
        .unwrap();
        let admin = admin_pool(&opts.database).await;
        Self {
            keys: Keys::new(&opts.prefix).unwrap(),
            app,
            router,
            metrics,
            opts,
            admin,
            stop,
        }
    }

    pub async fn send(&self, req: Request<Body>) -> Resp {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        let mut b = Request::get(path);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        self.send(b.body(Body::empty()).unwrap()).await
    }

    pub async fn post(&self, path: &str, token: &str, key: Option<&str>, body: &str) -> Resp {
        let mut b = Request::post(path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json");
        if let Some(k) = key {
            b = b.header("idempotency-key", k);
        }
        self.send(b.body(Body::from(body.to_string())).unwrap())
            .await
    }

    /// Buys `quantity` of `package` as `user`; asserts 201.
    pub async fn buy(&self, user: u64, package: u64, quantity: u32) -> serde_json::Value {
        let r = self
            .post(
                "/v1/purchases",
                &token(user),
                Some(&unique_name("k")),
                &format!(r#"{{"package_id":{package},"quantity":{quantity}}}"#),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        r.json()
    }

    /// A connection of the test's own, to the same deployment.
    pub async fn redis(&self) -> RedisConn {
        self.opts
            .target()
            .connect(Duration::from_secs(5))
            .await
            .unwrap()
    }

    /// The version of purchase `id`'s document in Redis, if any.
    pub async fn stored_version(&self, id: u64) -> Option<u64> {
        let mut c = self.redis().await;
        let v: Option<String> = redis::cmd("HGET")
            .arg(self.keys.purchase(id))
            .arg("v")
            .query_async(&mut c)
            .await
            .unwrap();
        v.and_then(|v| v.parse().ok())
    }

    /// Marks the read model complete, as a live consumer would.
    pub async fn mark_model_complete(&self) {
        let mut c = self.redis().await;
        let key = self.keys.meta_offsets();
        for t in ["purchases", "packages"] {
            let topic = change_topic(&self.opts.topic_prefix, &self.opts.database, t);
            let _: () = redis::cmd("HSET")
                .arg(&key)
                .arg(format!("n:{topic}"))
                .arg(1)
                .arg(format!("{topic}#0"))
                .arg(1)
                .query_async(&mut c)
                .await
                .unwrap();
        }
        wait_for("model complete", Duration::from_secs(10), || {
            let s = self.app.reads.cache().model_status();
            async move { (s == paystream_core::readmodel::ModelStatus::Complete).then_some(()) }
        })
        .await
        .unwrap();
    }

    /// Deletes every key under this API's prefix.
    pub async fn clear_prefix(&self) {
        let mut c = self.redis().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.opts.prefix))
            .query_async(&mut c)
            .await
            .unwrap();
        for k in keys {
            let _: () = redis::cmd("DEL").arg(k).query_async(&mut c).await.unwrap();
        }
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.stop.cancel();
        // Leave nothing under this test's prefix in the shared Redis.
        let url = self.opts.redis_url.clone();
        let pattern = format!("{}:*", self.opts.prefix);
        let _ = std::thread::spawn(move || -> redis::RedisResult<()> {
            let mut c = redis::Client::open(url.as_str())?
                .get_connection_with_timeout(Duration::from_secs(2))?;
            let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(&mut c)?;
            for k in keys {
                redis::cmd("DEL").arg(k).query::<()>(&mut c)?;
            }
            Ok(())
        })
        .join();
    }
}

/// A user of our own.
pub async fn user(admin: &MySqlPool) -> u64 {
    sqlx::query("INSERT INTO users (email, display_name) VALUES (?, 'api test')")
        .bind(format!("{}@test.paystream", unique_name("api")))
        .execute(admin)
        .await
        .unwrap()
        .last_insert_id()
}

/// A package of our own at `price` (EUR).
pub async fn package(admin: &MySqlPool, price: &str, active: bool) -> u64 {
    sqlx::query(
        "INSERT INTO packages (code, name, price, currency, active) VALUES (?, 'API test pack', ?, 'EUR', ?)",
    )
    .bind(unique_name("pkg"))
    .bind(price.parse::<rust_decimal::Decimal>().unwrap())
    .bind(active)
    .execute(admin)
    .await
    .unwrap()
    .last_insert_id()
}

pub fn claims_token(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

pub fn exp() -> u64 {
    jsonwebtoken::get_current_timestamp() + 3600
}

pub fn token(user: u64) -> String {
    claims_token(serde_json::json!({"sub": user.to_string(), "exp": exp()}))
}

pub fn admin_token(user: u64) -> String {
    claims_token(serde_json::json!({"sub": user.to_string(), "exp": exp(), "scope": "read admin"}))
}
