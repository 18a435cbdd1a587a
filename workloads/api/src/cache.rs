//! The Redis read model as the API uses it: read a document (`HMGET v del
//! d`), read a page of a user's list (`ZRANGE ... BYSCORE REV`), check how far
//! the model has applied one purchase, and fill documents and list members
//! after a MySQL read through the shared guarded script
//! (`paystream_core::readmodel::SCRIPT`), so a fill never overwrites a newer
//! version the consumer wrote. It speaks to Standalone, Sentinel and Cluster
//! deployments alike through [`crate::link`]. Values come back as [`Bytes`] that own the
//! reply buffers, so a hit is served without copying or re-serialising.
//!
//! The cache tracks whether Redis is usable: a connection error marks it down
//! at once (requests then go straight to MySQL instead of each waiting for a
//! timeout), a `PING` that fails or times out in the health loop does too, and
//! the health loop marks it up when `PING` answers again. It also keeps the model's completeness
//! ([`ModelStatus`]) from the consumer's offset marks, refreshed in the
//! background, because a user's list is only trusted when the model is
//! complete.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use bytes::Bytes;
use paystream_core::readmodel::{
    Cursor, Keys, ModelStatus, ScriptCall, Version, member, model_status, parse_member, score,
};
use paystream_runtime::redis_client::RedisTarget;
use redis::{RedisError, Script, Value};

use crate::document;
use crate::link::{Link, is_connection_error};
use crate::metrics::ApiMetrics;
use crate::store::Joined;

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// The deployment and how to log in.
    pub target: RedisTarget,
    /// Multiplexed connections to spread requests over (Standalone).
    pub connections: usize,
    /// Response timeout of one command.
    pub timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Key prefix of the read model.
    pub prefix: String,
    /// The change topics whose marks say whether the model is complete.
    pub topics: Vec<String>,
    /// Tombstone lifetime passed to the script (deletes only; fills are live).
    pub tombstone_ttl_ms: u64,
}

/// Redis failed or is known to be down.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Marked down; not tried.
    #[error("redis is down")]
    Down,
    /// A command failed.
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    /// A reply had an unexpected shape.
    #[error("unexpected redis reply: {0}")]
    Reply(&'static str),
}

/// One stored document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doc {
    /// Its version.
    pub version: u64,
    /// Whether it is a delete tombstone.
    pub deleted: bool,
    /// The view JSON (absent on tombstones).
    pub data: Option<Bytes>,
}

/// One page of a user's list: `(score, purchase id)` newest first, and
/// whether more follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The entries.
    pub entries: Vec<(i64, u64)>,
    /// Whether entries follow the last one.
    pub more: bool,
}

const STATUS_COMPLETE: u8 = 0;
const STATUS_REBUILDING: u8 = 1;
const STATUS_UNKNOWN: u8 = 2;

/// The read model in Redis.
pub struct Cache {
    link: Link,
    keys: Keys,
    script: Script,
    up: AtomicBool,
    status: AtomicU8,
    topics: Vec<String>,
    tombstone_ttl_ms: u64,
    metrics: ApiMetrics,
}

/// `HMGET key v del d`: a document's version, tombstone flag and body.
fn hmget(key: &str) -> redis::Cmd {
    let mut c = redis::cmd("HMGET");
    c.arg(key).arg("v").arg("del").arg("d");
    c
}

fn text(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn number<T: std::str::FromStr>(v: &Value) -> Option<T> {
    match v {
        Value::Int(n) => n.to_string().parse().ok(),
        other => std::str::from_utf8(text(other)?).ok()?.parse().ok(),
    }
}

fn parse_doc(reply: Value) -> Result<Option<Doc>, CacheError> {
    let Value::Array(mut fields) = reply else {
        return Err(CacheError::Reply("HMGET did not return an array"));
    };
    if fields.len() != 3 {
        return Err(CacheError::Reply("HMGET returned the wrong arity"));
    }
    let d = fields.pop();
    let del = fields.pop();
    let v = fields.pop();
    let Some(version) = v.as_ref().and_then(number::<u64>) else {
        return Ok(None);
    };
    let deleted = del.as_ref().and_then(text) == Some(b"1");
    let data = match d {
        Some(Value::BulkString(b)) if !deleted => Some(Bytes::from(b)),
        _ => None,
    };
    if !deleted && data.is_none() {
        return Ok(None);
    }
    Ok(Some(Doc {
        version,
        deleted,
        data,
    }))
}

fn parse_scored(reply: Value) -> Result<Vec<(i64, u64)>, CacheError> {
    let Value::Array(items) = reply else {
        return Err(CacheError::Reply("ZRANGE did not return an array"));
    };
    // RESP2 gives [member, score, ...]; RESP3 gives [[member, score], ...].
    let mut flat = Vec::with_capacity(items.len() * 2);
    for it in items {
        match it {
            Value::Array(pair) => flat.extend(pair),
            other => flat.push(other),
        }
    }
    let mut out = Vec::with_capacity(flat.len() / 2);
    for pair in flat.chunks(2) {
        let [m, s] = pair else {
            return Err(CacheError::Reply("ZRANGE WITHSCORES had an odd length"));
        };
        let id = text(m)
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(parse_member)
            .ok_or(CacheError::Reply("list member is not a purchase id"))?;
        let sc = match s {
            Value::Double(f) => *f,
            other => number::<f64>(other).ok_or(CacheError::Reply("list score is not a number"))?,
        };
        out.push((sc as i64, id));
    }
    Ok(out)
}

impl Cache {
    /// Connections are made lazily: the API starts while Redis is down.
    pub fn new(c: &RedisConfig, metrics: ApiMetrics) -> Result<Self, RedisError> {
        let link =
            Link::new(&c.target, c.connections, c.timeout, c.connect_timeout).map_err(|e| {
                RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "redis",
                    e.to_string(),
                ))
            })?;
        let keys = Keys::new(&c.prefix).map_err(|e| {
            RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "key prefix",
                e.to_string(),
            ))
        })?;
        Ok(Self {
            link,
            keys,
            script: Script::new(paystream_core::readmodel::SCRIPT),
            up: AtomicBool::new(true),
            status: AtomicU8::new(STATUS_UNKNOWN),
            topics: c.topics.clone(),
            tombstone_ttl_ms: c.tombstone_ttl_ms,
            metrics,
        })
    }

    /// The key layout.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Whether Redis is believed usable.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn set_up(&self, up: bool) {
        if self.up.swap(up, Ordering::Relaxed) != up {
            if up {
                tracing::info!("redis answers");
            } else {
                tracing::warn!("redis is down: reads fall back to mysql");
            }
        }
        self.metrics.redis_up.set(i64::from(up));
        if !up {
            self.set_status(ModelStatus::Unknown);
        }
    }

    fn check<T>(&self, r: Result<T, RedisError>) -> Result<T, CacheError> {
        match r {
            Ok(v) => Ok(v),
            Err(e) => {
                // A broken connection marks Redis down at once. A slow answer
                // only sends this request to MySQL: under a burst of load a
                // timeout is not an outage, and the health loop's PING (which
                // has the same timeout) decides whether Redis is stalled.
                self.link.failed(&e);
                if is_connection_error(&e) {
                    self.set_up(false);
                }
                Err(CacheError::Redis(e))
            }
        }
    }

    fn guard(&self) -> Result<(), CacheError> {
        if self.is_up() {
            Ok(())
        } else {
            Err(CacheError::Down)
        }
    }

    /// One document.
    pub async fn doc(&self, key: &str) -> Result<Option<Doc>, CacheError> {
        self.guard()?;
        let r = match self.link.conn().await {
            Ok(mut c) => hmget(key).query_async::<Value>(&mut c).await,
            Err(e) => Err(e),
        };
        parse_doc(self.check(r)?)
    }

    /// Two documents in one pipelined round trip.
    pub async fn doc_pair(
        &self,
        a: &str,
        b: &str,
    ) -> Result<(Option<Doc>, Option<Doc>), CacheError> {
        self.guard()?;
        let r = self.link.query_all(vec![hmget(a), hmget(b)]).await;
        let mut replies = self.check(r)?.into_iter();
        match (replies.next(), replies.next()) {
            (Some(x), Some(y)) => Ok((parse_doc(x)?, parse_doc(y)?)),
            _ => Err(CacheError::Reply("a pipeline returned too few replies")),
        }
    }

    /// Several documents in one pipeline.
    pub async fn docs(&self, keys: &[String]) -> Result<Vec<Option<Doc>>, CacheError> {
        self.guard()?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let r = self
            .link
            .query_all(keys.iter().map(|k| hmget(k)).collect())
            .await;
        self.check(r)?.into_iter().map(parse_doc).collect()
    }

    /// Up to `limit` entries of `user_id`'s list after `after`, newest first.
    pub async fn page(
        &self,
        user_id: u64,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page, CacheError> {
        self.guard()?;
        let key = self.keys.user_purchases(user_id);
        let max = match after {
            Some(c) => c.score.to_string(),
            None => "+inf".to_string(),
        };
        let want = limit as usize + 1;
        let mut window = want + 8;
        for _ in 0..6 {
            let r = match self.link.conn().await {
                Ok(mut c) => {
                    redis::cmd("ZRANGE")
                        .arg(&key)
                        .arg(&max)
                        .arg("-inf")
                        .arg("BYSCORE")
                        .arg("REV")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(window)
                        .arg("WITHSCORES")
                        .query_async::<Value>(&mut c)
                        .await
                }
                Err(e) => Err(e),
            };
            let fetched = parse_scored(self.check(r)?)?;
            let full = fetched.len() == window;
            let mut entries: Vec<(i64, u64)> = fetched
                .into_iter()
                .filter(|(s, id)| after.is_none_or(|c| c.is_before(*s, *id)))
                .collect();
            if entries.len() >= want || !full {
                let more = entries.len() > limit as usize;
                entries.truncate(limit as usize);
                return Ok(Page { entries, more });
            }
            window *= 4;
        }
        Err(CacheError::Reply(
            "too many list entries share one timestamp",
        ))
    }

    /// Whether the model has applied purchase `purchase_id` at `version` or
    /// later, both in `user_id`'s list and in its document.
    pub async fn has_applied(
        &self,
        user_id: u64,
        purchase_id: u64,
        version: u64,
    ) -> Result<bool, CacheError> {
        self.guard()?;
        let mut rank = redis::cmd("HGET");
        rank.arg(self.keys.user_versions(user_id))
            .arg(member(purchase_id));
        let mut doc = redis::cmd("HGET");
        doc.arg(self.keys.purchase(purchase_id)).arg("v");
        let r = self.link.query_all(vec![rank, doc]).await;
        let replies = self.check(r)?;
        let rank = replies.first().and_then(number::<u64>);
        let doc = replies.get(1).and_then(number::<u64>);
        Ok(rank.is_some_and(|r| r >= Version::live(version).rank())
            && doc.is_some_and(|v| v >= version))
    }

    /// Writes documents (and list members, when `members`) for rows read
    /// from MySQL, through the guarded script. Failures are counted, never
    /// returned: a fill is an optimisation.
    pub async fn fill(&self, rows: &[Joined], members: bool) {
        if !self.is_up() || rows.is_empty() {
            return;
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut calls = Vec::with_capacity(rows.len() * 3);
        let mut packages = std::collections::BTreeSet::new();
        for (p, k) in rows {
            calls.push(ScriptCall::Doc {
                key: self.keys.purchase(p.id),
                version: Version::live(p.version),
                json: String::from_utf8_lossy(&document::purchase_bytes(p)).into_owned(),
                tombstone_ttl_ms: self.tombstone_ttl_ms,
            });
            if packages.insert(k.id) {
                calls.push(ScriptCall::Doc {
                    key: self.keys.package(k.id),
                    version: Version::live(k.version),
                    json: String::from_utf8_lossy(&document::package_bytes(k)).into_owned(),
                    tombstone_ttl_ms: self.tombstone_ttl_ms,
                });
            }
            if members {
                calls.push(ScriptCall::Member {
                    user_id: p.user_id,
                    purchase_id: p.id,
                    version: Version::live(p.version),
                    score: score(p.created_at),
                    tombstone_ttl_ms: self.tombstone_ttl_ms,
                    now_ms,
                });
            }
        }
        self.run_calls(&calls).await;
    }

    /// Writes one package document read from MySQL.
    pub async fn fill_package(&self, k: &paystream_core::readmodel::PackageView) {
        if !self.is_up() {
            return;
        }
        let call = ScriptCall::Doc {
            key: self.keys.package(k.id),
            version: Version::live(k.version),
            json: String::from_utf8_lossy(&document::package_bytes(k)).into_owned(),
            tombstone_ttl_ms: self.tombstone_ttl_ms,
        };
        self.run_calls(&[call]).await;
    }

    async fn run_calls(&self, calls: &[ScriptCall]) {
        let conn = match self.link.conn().await {
            Ok(c) => c,
            Err(e) => {
                self.metrics.fills_failed.inc_by(calls.len() as u64);
                let _ = self.check::<()>(Err(e));
                return;
            }
        };
        let runs = calls.iter().map(|call| {
            let mut inv = self.script.prepare_invoke();
            for k in call.keys(&self.keys) {
                inv.key(k);
            }
            for a in call.args() {
                inv.arg(a);
            }
            let mut c = conn.clone();
            async move { inv.invoke_async::<i64>(&mut c).await }
        });
        for r in futures::future::join_all(runs).await {
            match self.check(r) {
                Ok(1) => {
                    self.metrics.fills_applied.inc();
                }
                Ok(_) => {
                    self.metrics.fills_ignored.inc();
                }
                Err(e) => {
                    self.metrics.fills_failed.inc();
                    tracing::debug!(error = %e, "cache fill failed");
                }
            }
        }
    }

    /// `PING`; marks Redis up or down.
    pub async fn ping(&self) -> bool {
        let r = match self.link.conn().await {
            Ok(mut c) => redis::cmd("PING").query_async::<String>(&mut c).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &r {
            self.link.failed(e);
        }
        let ok = r.is_ok();
        self.set_up(ok);
        ok
    }

    /// Re-reads the consumer's offset marks and judges the model.
    pub async fn refresh_status(&self) {
        if !self.is_up() {
            self.set_status(ModelStatus::Unknown);
            return;
        }
        let r = match self.link.conn().await {
            Ok(mut c) => {
                redis::cmd("HGETALL")
                    .arg(self.keys.meta_offsets())
                    .query_async::<BTreeMap<String, String>>(&mut c)
                    .await
            }
            Err(e) => Err(e),
        };
        match self.check(r) {
            Ok(fields) => {
                let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
                self.set_status(model_status(&fields, &topics));
            }
            Err(_) => self.set_status(ModelStatus::Unknown),
        }
    }

    fn set_status(&self, s: ModelStatus) {
        let v = match s {
            ModelStatus::Complete => STATUS_COMPLETE,
            ModelStatus::Rebuilding => STATUS_REBUILDING,
            ModelStatus::Unknown => STATUS_UNKNOWN,
        };
        self.status.store(v, Ordering::Relaxed);
        self.metrics
            .model_complete
            .set(i64::from(v == STATUS_COMPLETE));
    }

    /// The model's completeness as last judged.
    pub fn model_status(&self) -> ModelStatus {
        match self.status.load(Ordering::Relaxed) {
            STATUS_COMPLETE => ModelStatus::Complete,
            STATUS_REBUILDING => ModelStatus::Rebuilding,
            _ => ModelStatus::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_documents() {
        let live = Value::Array(vec![bulk("3"), bulk("0"), bulk("{\"id\":1}")]);
        let d = parse_doc(live).ok().flatten();
        assert_eq!(d.as_ref().map(|d| d.version), Some(3));
        assert_eq!(
            d.and_then(|d| d.data),
            Some(Bytes::from_static(b"{\"id\":1}"))
        );
        let tomb = Value::Array(vec![bulk("4"), bulk("1"), Value::Nil]);
        let d = parse_doc(tomb).ok().flatten();
        assert_eq!(d.map(|d| (d.deleted, d.data)), Some((true, None)));
        let absent = Value::Array(vec![Value::Nil, Value::Nil, Value::Nil]);
        assert_eq!(parse_doc(absent).ok(), Some(None));
        assert!(parse_doc(Value::Nil).is_err());
    }

    #[test]
    fn parses_scored_members_in_both_protocols() {
        let resp2 = Value::Array(vec![
            bulk(&member(9)),
            bulk("1714780799999999"),
            bulk(&member(8)),
            bulk("1714780799999998"),
        ]);
        assert_eq!(
            parse_scored(resp2).ok(),
            Some(vec![(1_714_780_799_999_999, 9), (1_714_780_799_999_998, 8)])
        );
        let resp3 = Value::Array(vec![Value::Array(vec![
            bulk(&member(7)),
            Value::Double(1_700_000_000_000_000.0),
        ])]);
        assert_eq!(
            parse_scored(resp3).ok(),
            Some(vec![(1_700_000_000_000_000, 7)])
        );
        assert!(parse_scored(Value::Array(vec![bulk("x"), bulk("1")])).is_err());
    }
}
