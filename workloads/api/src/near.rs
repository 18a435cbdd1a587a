//! The optional in-process near cache of read-model documents, off by
//! default (`--near-cache-capacity 0`). It is bounded (entries and a TTL) and
//! kept correct by Redis client-side caching: a dedicated RESP3 connection
//! runs `CLIENT TRACKING ON BCAST` for the purchase and package key prefixes,
//! and every `invalidate` push removes the named keys. While that connection
//! is down the near cache is bypassed and emptied, because invalidations may
//! have been missed.
//!
//! A read that races a write cannot leave a stale entry behind: every
//! invalidation bumps a sequence number before it removes keys, and an insert
//! re-checks the number it read before going to Redis, removing its own
//! entry if any invalidation arrived in between.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use paystream_runtime::redis_client::ConnectError;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ProtocolVersion, PushInfo, PushKind, Value};
use tokio_util::sync::CancellationToken;

use crate::cache::{Doc, RedisConfig};
use crate::metrics::ApiMetrics;

/// The near cache.
pub struct NearCache {
    docs: moka::sync::Cache<String, Doc>,
    seq: AtomicU64,
    live: AtomicBool,
    metrics: ApiMetrics,
}

impl NearCache {
    /// A cache of at most `capacity` documents, each kept at most `ttl`.
    pub fn new(capacity: u64, ttl: Duration, metrics: ApiMetrics) -> Self {
        Self {
            docs: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            seq: AtomicU64::new(0),
            live: AtomicBool::new(false),
            metrics,
        }
    }

    /// Whether invalidations are flowing (the cache is only used then).
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::SeqCst)
    }

    /// A cached document.
    pub fn get(&self, key: &str) -> Option<Doc> {
        if !self.is_live() {
            return None;
        }
        let d = self.docs.get(key);
        if d.is_some() {
            self.metrics.near_hit.inc();
        } else {
            self.metrics.near_miss.inc();
        }
        d
    }

    /// The invalidation sequence; read it before reading Redis.
    pub fn ticket(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    /// Caches `doc` read from Redis after `ticket` was taken.
    pub fn insert(&self, key: &str, doc: Doc, ticket: u64) {
        if !self.is_live() {
            return;
        }
        self.docs.insert(key.to_string(), doc);
        if self.seq.load(Ordering::SeqCst) != ticket {
            self.docs.invalidate(key);
        }
    }

    /// Drops the named keys.
    pub fn invalidate<'a>(&self, keys: impl IntoIterator<Item = &'a [u8]>) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        for k in keys {
            if let Ok(k) = std::str::from_utf8(k) {
                self.docs.invalidate(k);
            }
            self.metrics.near_invalidations.inc();
        }
    }

    /// Drops everything.
    pub fn clear(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        self.docs.invalidate_all();
    }

    fn set_live(&self, live: bool) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        if !live {
            self.docs.invalidate_all();
        }
        self.live.store(live, Ordering::SeqCst);
    }

    /// Handles one push message from the tracking connection.
    pub fn on_push(&self, push: &PushInfo) {
        match push.kind {
            PushKind::Invalidate => match push.data.first() {
                Some(Value::Array(keys)) => self.invalidate(keys.iter().filter_map(|k| match k {
                    Value::BulkString(b) => Some(b.as_slice()),
                    _ => None,
                })),
                // A null key list means the server flushed everything.
                _ => self.clear(),
            },
            PushKind::Disconnection => self.set_live(false),
            _ => {}
        }
    }
}

async fn track(
    near: &Arc<NearCache>,
    c: &RedisConfig,
    prefixes: &[String],
) -> Result<MultiplexedConnection, redis::RedisError> {
    let client = c
        .target
        .standalone_client_speaking(Some(ProtocolVersion::RESP3))
        .map_err(|e| match e {
            ConnectError::Redis(e) => e,
            other => redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "near cache",
                other.to_string(),
            )),
        })?;
    let n = Arc::clone(near);
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(c.connect_timeout))
        .set_response_timeout(Some(c.timeout))
        .set_push_sender(move |p: PushInfo| {
            n.on_push(&p);
            Ok::<(), std::convert::Infallible>(())
        });
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let mut cmd = redis::cmd("CLIENT");
    cmd.arg("TRACKING").arg("ON").arg("BCAST");
    for p in prefixes {
        cmd.arg("PREFIX").arg(p);
    }
    cmd.query_async::<()>(&mut conn).await?;
    Ok(conn)
}

/// Keeps the tracking connection up until `stop`; the near cache is live
/// only while it is.
pub async fn run_invalidation(
    near: Arc<NearCache>,
    config: RedisConfig,
    prefixes: Vec<String>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    while !stop.is_cancelled() {
        match track(&near, &config, &prefixes).await {
            Ok(mut conn) => {
                backoff = Duration::from_millis(100);
                near.set_live(true);
                tracing::info!("near cache live: Redis invalidation tracking on");
                // The push sender reports a disconnection; PING notices a
                // silent one.
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                    let ok = redis::cmd("PING")
                        .query_async::<String>(&mut conn)
                        .await
                        .is_ok();
                    if !ok || !near.is_live() {
                        break;
                    }
                }
                near.set_live(false);
            }
            Err(e) => {
                near.set_live(false);
                tracing::debug!(error = %e, "near-cache tracking connection failed");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use prometheus_client::registry::Registry;

    fn doc(v: u64) -> Doc {
        Doc {
            version: v,
            deleted: false,
            data: Some(Bytes::from_static(b"{}")),
        }
    }

    fn near() -> NearCache {
        let m = ApiMetrics::register(&mut Registry::default());
        NearCache::new(100, Duration::from_secs(60), m)
    }

    #[test]
    fn bypassed_until_live_and_invalidated_by_push() {
        let n = near();
        let t = n.ticket();
        n.insert("k", doc(1), t);
        assert_eq!(n.get("k"), None, "not live: nothing cached");
        n.set_live(true);
        let t = n.ticket();
        n.insert("k", doc(1), t);
        assert_eq!(n.get("k").map(|d| d.version), Some(1));
        n.on_push(&PushInfo {
            kind: PushKind::Invalidate,
            data: vec![Value::Array(vec![Value::BulkString(b"k".to_vec())])],
        });
        assert_eq!(n.get("k"), None);
        let t = n.ticket();
        n.insert("k", doc(2), t);
        n.on_push(&PushInfo {
            kind: PushKind::Invalidate,
            data: vec![Value::Nil],
        });
        assert_eq!(n.get("k"), None, "flush clears all");
        let t = n.ticket();
        n.insert("k", doc(2), t);
        n.on_push(&PushInfo {
            kind: PushKind::Disconnection,
            data: vec![],
        });
        assert!(!n.is_live());
        n.set_live(true);
        assert_eq!(n.get("k"), None, "a disconnection empties the cache");
    }

    #[test]
    fn an_invalidation_during_a_read_wins() {
        let n = near();
        n.set_live(true);
        let t = n.ticket();
        // The read is in flight; a write to the key is invalidated now.
        n.invalidate([b"k".as_slice()]);
        n.insert("k", doc(1), t);
        assert_eq!(n.get("k"), None, "the stale read is not kept");
    }
}
