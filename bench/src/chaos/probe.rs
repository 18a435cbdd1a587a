//! Recovery probes and the API readers. A probe inserts a new purchase
//! straight into MariaDB (owned by the probe user, whom nobody else reads)
//! and polls until the pipeline carried it: every 75 ms it reads the
//! purchase's document from the private Redis directly and, once the
//! consumer wrote it, asks the API, which must answer it. The API is not
//! asked before: on a miss it would read MySQL and fill Redis itself, which
//! would hide a stalled pipeline. The readers read touched purchases and
//! users' lists through the API all run long and judge every 200 against
//! MySQL read right after: newer than MySQL, or different fields at the
//! same version, is a wrong answer.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use mysql_async::Conn;
use mysql_async::prelude::*;
use paystream_core::readmodel::{Keys, ModelStatus, PurchaseView, model_status};
use paystream_testkit::Stack;
use serde_json::Value as Json;
use tokio::time::Instant;

use super::api::Api;
use super::rng::Rng;
use super::timeline::Timeline;
use super::writer::Touched;
use crate::mysql::admin;

/// Polls per second of a probe.
const POLL: Duration = Duration::from_millis(75);

/// MySQL rows of `ids` as the API should show them.
pub async fn mysql_views(
    c: &mut Conn,
    db: &str,
    ids: &[u64],
) -> anyhow::Result<HashMap<u64, PurchaseView>> {
    let rows = paystream_testkit::checker::mysql_purchases_in(c, db, Some(ids)).await?;
    Ok(rows.into_iter().map(|v| (v.id, v)).collect())
}

/// Whether an API answer is wrong given MySQL's row read after it: newer
/// than MySQL, or different at the same version. A row gone from MySQL
/// cannot be judged.
pub fn judge(api: &PurchaseView, mysql: Option<&PurchaseView>) -> Option<String> {
    let m = mysql?;
    if api.version > m.version {
        return Some(format!(
            "purchase {}: API v{} is newer than MySQL v{}",
            api.id, api.version, m.version
        ));
    }
    if api.version == m.version && api != m {
        return Some(format!(
            "purchase {} v{}: API {api:?} but MySQL {m:?}",
            api.id, api.version
        ));
    }
    None
}

// ---- Probes -------------------------------------------------------------------------

/// Inserts probe purchases and waits for them to come through.
pub struct Prober {
    /// The stack (MariaDB).
    pub stack: Stack,
    /// The scratch database.
    pub db: String,
    /// The read model's keys.
    pub keys: Keys,
    /// The private Redis, directly.
    pub redis_url: String,
    /// The probe user (nobody else writes or reads their list).
    pub user: u64,
    /// New purchase ids.
    pub next_id: Arc<AtomicU64>,
    /// Probes so far.
    pub n: u64,
}

/// What a probe saw.
#[derive(Debug, Clone)]
pub struct Probed {
    /// The probe's purchase id.
    pub id: u64,
    /// When MariaDB acknowledged the insert.
    pub inserted: Option<Instant>,
    /// When the API first served it (after the read model held it).
    pub visible: Option<Instant>,
}

impl Prober {
    /// Inserts a probe (retrying until `deadline`); a duplicate key means an
    /// earlier attempt committed without an answer.
    async fn insert(&self, id: u64, deadline: Instant) -> Option<Instant> {
        let sql = format!(
            "INSERT INTO {}.purchases (id, user_id, package_id, quantity, amount, currency, idempotency_key) \
             VALUES ({id}, {}, 1, 1, 1.99, 'EUR', 'probe-{id}')",
            self.db, self.user
        );
        while Instant::now() < deadline && !super::interrupted() {
            let attempt = async {
                let mut c = admin(&self.stack).await?;
                c.query_drop(&sql).await?;
                anyhow::Ok(())
            };
            match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                Ok(Ok(())) => return Some(Instant::now()),
                Ok(Err(e)) if e.to_string().contains("Duplicate entry") => {
                    return Some(Instant::now());
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        None
    }

    /// Whether the read model holds purchase `id`, live.
    async fn in_redis(
        &self,
        conn: &mut Option<redis::aio::MultiplexedConnection>,
        id: u64,
    ) -> bool {
        if conn.is_none() {
            let client = redis::Client::open(self.redis_url.as_str()).ok();
            let made = match client {
                Some(c) => {
                    tokio::time::timeout(
                        Duration::from_secs(1),
                        c.get_multiplexed_async_connection(),
                    )
                    .await
                }
                None => return false,
            };
            *conn = made.ok().and_then(Result::ok);
        }
        let Some(c) = conn.as_mut() else { return false };
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.keys.purchase(id)).arg("v").arg("del");
        let got = cmd.query_async::<(Option<u64>, Option<String>)>(c);
        match tokio::time::timeout(Duration::from_secs(1), got).await {
            Ok(Ok((Some(_), Some(del)))) => del == "0",
            Ok(Ok(_)) => false,
            _ => {
                *conn = None;
                false
            }
        }
    }

    /// One probe: insert, then poll until the API serves it or `cap` after `from`.
    pub async fn probe(&mut self, api: &Api, from: Instant, cap: Duration) -> Probed {
        self.n += 1;
        let id = super::writer::new_id(&self.next_id);
        let deadline = from + cap;
        let inserted = self.insert(id, deadline).await;
        let mut out = Probed {
            id,
            inserted,
            visible: None,
        };
        if inserted.is_none() {
            return out;
        }
        let mut conn = None;
        while Instant::now() < deadline && !super::interrupted() {
            let tick = Instant::now() + POLL;
            if self.in_redis(&mut conn, id).await
                && let Ok(a) = api.get(&format!("/v1/purchases/{id}")).await
                && a.status == 200
            {
                out.visible = Some(Instant::now());
                return out;
            }
            tokio::time::sleep_until(tick).await;
        }
        out
    }
}

/// Waits until the consumer's marks in the private Redis say the model is
/// complete again (every partition of `topics` live, the API's own test),
/// polling every 100 ms until `cap` after `from`: after a data loss, when
/// the rebuild finished.
pub async fn model_complete(
    url: &str,
    keys: &Keys,
    topics: &[String],
    from: Instant,
    cap: Duration,
) -> Option<Instant> {
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    while Instant::now() < from + cap && !super::interrupted() {
        let tick = Instant::now() + Duration::from_millis(100);
        if conn.is_none() {
            let client = redis::Client::open(url).ok()?;
            conn = tokio::time::timeout(
                Duration::from_secs(1),
                client.get_multiplexed_async_connection(),
            )
            .await
            .ok()
            .and_then(Result::ok);
        }
        if let Some(c) = conn.as_mut() {
            let mut cmd = redis::cmd("HGETALL");
            cmd.arg(keys.meta_offsets());
            let got = cmd.query_async::<BTreeMap<String, String>>(c);
            match tokio::time::timeout(Duration::from_secs(1), got).await {
                Ok(Ok(fields)) if model_status(&fields, &topics) == ModelStatus::Complete => {
                    return Some(Instant::now());
                }
                Ok(Ok(_)) => {}
                _ => conn = None,
            }
        }
        tokio::time::sleep_until(tick).await;
    }
    None
}

// ---- Readers --------------------------------------------------------------------------

/// What a reader needs.
pub struct ReaderCtx {
    /// The API.
    pub api: Arc<Api>,
    /// The stack (MariaDB).
    pub stack: Stack,
    /// The scratch database.
    pub db: String,
    /// What the writers touched.
    pub touched: Arc<Touched>,
    /// Where answers are counted.
    pub timeline: Arc<Timeline>,
    /// Set to stop reading.
    pub stop: Arc<AtomicBool>,
}

/// The purchases of a 200 answer: one document or a page's items.
fn answered(body: &[u8]) -> Vec<PurchaseView> {
    let Ok(v) = serde_json::from_slice::<Json>(body) else {
        return Vec::new();
    };
    let docs = match v.get("items") {
        Some(Json::Array(items)) => items.clone(),
        _ => vec![v],
    };
    docs.into_iter()
        .filter_map(|d| serde_json::from_value(d).ok())
        .collect()
}

/// Reads through the API until told to stop: two in three reads are one
/// touched purchase, the rest a touched user's first page.
pub async fn reader(ctx: Arc<ReaderCtx>, seed: u64, k: u64) {
    let mut rng = Rng::fork(seed, 200 + k);
    let mut mysql: Option<Conn> = None;
    while !ctx.stop.load(Ordering::Relaxed) {
        let path = if rng.below(3) < 2 {
            ctx.touched
                .sample_purchase(&mut rng)
                .map(|id| format!("/v1/purchases/{id}"))
        } else {
            ctx.touched
                .sample_user(&mut rng)
                .map(|u| format!("/v1/users/{u}/purchases?limit=20"))
        };
        let Some(path) = path else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        match ctx.api.get(&path).await {
            Err(_) => ctx.timeline.add(|b| b.read_errors += 1),
            Ok(a) => {
                ctx.timeline.add(|b| {
                    b.reads += 1;
                    b.five_xx += u64::from(a.status >= 500);
                });
                if a.status == 200 {
                    check(&ctx, &mut mysql, &answered(&a.body)).await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Judges `views` against MySQL (when MySQL answers).
async fn check(ctx: &ReaderCtx, mysql: &mut Option<Conn>, views: &[PurchaseView]) {
    if views.is_empty() {
        return;
    }
    if mysql.is_none() {
        *mysql = tokio::time::timeout(Duration::from_secs(2), admin(&ctx.stack))
            .await
            .ok()
            .and_then(Result::ok);
    }
    let Some(c) = mysql.as_mut() else { return };
    let ids: Vec<u64> = views.iter().map(|v| v.id).collect();
    let rows =
        match tokio::time::timeout(Duration::from_secs(5), mysql_views(c, &ctx.db, &ids)).await {
            Ok(Ok(r)) => r,
            _ => {
                *mysql = None;
                return;
            }
        };
    for v in views {
        if let Some(w) = judge(v, rows.get(&v.id)) {
            ctx.timeline.wrong(w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view(id: u64, version: u64, status: &str) -> PurchaseView {
        serde_json::from_value(json!({
            "id": id, "user_id": 1, "package_id": 2, "quantity": 1, "amount": "9.99", "currency": "EUR",
            "status": status, "created_at": "2026-11-27T05:00:00.123456Z",
            "updated_at": "2026-11-27T05:00:00.123456Z", "version": version,
        }))
        .unwrap()
    }

    #[test]
    fn wrong_answers_are_newer_or_different_at_the_same_version() {
        let m = view(1, 3, "paid");
        assert!(judge(&view(1, 3, "paid"), Some(&m)).is_none());
        assert!(judge(&view(1, 2, "pending"), Some(&m)).is_none());
        assert!(
            judge(&view(1, 4, "paid"), Some(&m))
                .unwrap()
                .contains("newer")
        );
        assert!(judge(&view(1, 3, "cancelled"), Some(&m)).is_some());
        assert!(judge(&view(1, 9, "paid"), None).is_none());
    }

    #[test]
    fn answers_are_read_as_documents_or_pages() {
        let doc = serde_json::to_vec(&json!({
            "id": 7, "user_id": 1, "package_id": 2, "quantity": 1, "amount": "9.99", "currency": "EUR",
            "status": "paid", "created_at": "2026-11-27T05:00:00.123456Z",
            "updated_at": "2026-11-27T05:00:00.123456Z", "version": 2,
            "package": {"id": 2, "code": "x", "name": "X", "price": "9.99", "currency": "EUR", "active": true, "version": 1}
        }))
        .unwrap();
        assert_eq!(answered(&doc).len(), 1);
        let page = format!(
            "{{\"items\":[{}, {}],\"next_cursor\":null}}",
            String::from_utf8_lossy(&doc),
            String::from_utf8_lossy(&doc)
        );
        assert_eq!(answered(page.as_bytes()).len(), 2);
        assert!(answered(b"{\"items\":[]}").is_empty());
        assert!(answered(b"not json").is_empty());
    }
}
