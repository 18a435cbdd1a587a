//! The API's connections to Redis, for every deployment the consumer
//! supports. Standalone: a few reconnecting `ConnectionManager`s, made
//! lazily so the API starts while Redis is down, with requests spread over
//! them. Sentinel and Cluster: one multiplexed connection opened on demand
//! through [`RedisTarget::connect`] and forgotten after a connection error,
//! so the next request asks the Sentinels for the current primary again
//! (after a failover they close the old primary's clients) or re-reads the
//! Cluster's slot map. A Cluster refuses a pipeline whose keys hash to
//! different slots, so [`Link::query_all`] sends those as concurrent single
//! commands instead; everything else is the same code for every mode.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use paystream_runtime::redis_client::{ConnectError, RedisConn, RedisMode, RedisTarget};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, RedisError, Value};

enum Kind {
    Managed {
        conns: Vec<ConnectionManager>,
        next: AtomicUsize,
    },
    OnDemand {
        target: Box<RedisTarget>,
        timeout: Duration,
        current: Mutex<Option<RedisConn>>,
        connecting: tokio::sync::Mutex<()>,
    },
}

/// How the API reaches Redis.
pub struct Link {
    kind: Kind,
    cluster: bool,
}

/// A connection failure, as the `redis` crate's I/O error so that callers
/// treat it like a refused connection.
fn connect_failed(e: ConnectError) -> RedisError {
    match e {
        ConnectError::Redis(e) => e,
        other => RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            other.to_string(),
        )),
    }
}

/// Whether `e` means the connection itself is gone (not a slow or refused
/// command), so the next request should open a new one.
pub fn is_connection_error(e: &RedisError) -> bool {
    !e.is_timeout() && (e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal())
}

impl Link {
    /// Connections to `target`; nothing is connected yet. `connections` is
    /// the number of Standalone managers; `timeout` bounds each response and
    /// `connect_timeout` each connection attempt.
    pub fn new(
        target: &RedisTarget,
        connections: usize,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Self, ConnectError> {
        target.validate()?;
        let kind = match target.redis_mode {
            RedisMode::Standalone => {
                let client = target.standalone_client()?;
                let cfg = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(timeout))
                    .set_connection_timeout(Some(connect_timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(500))
                    .set_pipeline_buffer_size(4096);
                let mut conns = Vec::with_capacity(connections.max(1));
                for _ in 0..connections.max(1) {
                    conns.push(ConnectionManager::new_lazy_with_config(
                        client.clone(),
                        cfg.clone(),
                    )?);
                }
                Kind::Managed {
                    conns,
                    next: AtomicUsize::new(0),
                }
            }
            RedisMode::Sentinel | RedisMode::Cluster => Kind::OnDemand {
                target: Box::new(target.clone()),
                timeout: timeout.max(connect_timeout),
                current: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
            },
        };
        Ok(Self {
            kind,
            cluster: target.redis_mode == RedisMode::Cluster,
        })
    }

    /// Whether commands of one pipeline must share a hash slot.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// A connection, opening one first if needed.
    pub async fn conn(&self) -> Result<RedisConn, RedisError> {
        match &self.kind {
            Kind::Managed { conns, next } => {
                let i = next.fetch_add(1, Ordering::Relaxed) % conns.len();
                match conns.get(i).or(conns.first()) {
                    Some(c) => Ok(RedisConn::Managed(c.clone())),
                    None => Err(connect_failed(ConnectError::Config(
                        "no Redis connection configured".into(),
                    ))),
                }
            }
            Kind::OnDemand {
                target,
                timeout,
                current,
                connecting,
            } => {
                if let Some(c) = Self::current(current) {
                    return Ok(c);
                }
                // One caller connects; the others wait for its result.
                let _turn = connecting.lock().await;
                if let Some(c) = Self::current(current) {
                    return Ok(c);
                }
                let c = target.connect(*timeout).await.map_err(connect_failed)?;
                *current.lock().unwrap_or_else(PoisonError::into_inner) = Some(c.clone());
                Ok(c)
            }
        }
    }

    fn current(current: &Mutex<Option<RedisConn>>) -> Option<RedisConn> {
        current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Called with every failed command: a connection error drops the
    /// on-demand connection so the next request makes a new one (managers
    /// reconnect by themselves).
    pub fn failed(&self, e: &RedisError) {
        if let Kind::OnDemand { current, .. } = &self.kind
            && is_connection_error(e)
        {
            *current.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }

    /// Runs `cmds` and returns their replies in order: one pipelined round
    /// trip, or concurrent single commands in a Cluster (where their keys
    /// may live on different slots).
    pub async fn query_all(&self, cmds: Vec<Cmd>) -> Result<Vec<Value>, RedisError> {
        let conn = self.conn().await?;
        if self.cluster {
            let runs = cmds.into_iter().map(|cmd| {
                let mut c = conn.clone();
                async move { cmd.query_async::<Value>(&mut c).await }
            });
            futures::future::join_all(runs).await.into_iter().collect()
        } else {
            let mut p = redis::pipe();
            for cmd in cmds {
                p.add_command(cmd);
            }
            let mut c = conn;
            p.query_async(&mut c).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(mode: RedisMode, nodes: &[&str]) -> RedisTarget {
        let mut t = RedisTarget::standalone("redis://127.0.0.1:1/0");
        t.redis_mode = mode;
        t.redis_nodes = nodes.iter().map(|n| n.to_string()).collect();
        t
    }

    #[tokio::test]
    async fn modes_choose_their_connections() {
        let ms = Duration::from_millis(100);
        let l = Link::new(&target(RedisMode::Standalone, &[]), 3, ms, ms).unwrap();
        assert!(!l.is_cluster());
        assert!(matches!(&l.kind, Kind::Managed { conns, .. } if conns.len() == 3));
        let l = Link::new(&target(RedisMode::Cluster, &["a:1"]), 3, ms, ms).unwrap();
        assert!(l.is_cluster());
        assert!(matches!(l.kind, Kind::OnDemand { .. }));
        let l = Link::new(&target(RedisMode::Sentinel, &["s:26379"]), 3, ms, ms).unwrap();
        assert!(!l.is_cluster());
        assert!(Link::new(&target(RedisMode::Cluster, &[]), 1, ms, ms).is_err());
    }

    #[test]
    fn connect_failures_count_as_connection_errors() {
        let e = connect_failed(ConnectError::Config("no answer from the Sentinels".into()));
        assert!(is_connection_error(&e));
        assert!(e.to_string().contains("Sentinels"));
        let slow = RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "slow"));
        assert!(!is_connection_error(&slow));
    }

    #[tokio::test]
    async fn an_unreachable_cluster_is_an_error_not_a_hang() {
        let ms = Duration::from_millis(200);
        let l = Link::new(&target(RedisMode::Cluster, &["127.0.0.1:1"]), 1, ms, ms).unwrap();
        let e = l.conn().await.err().unwrap();
        assert!(is_connection_error(&e), "{e}");
    }
}
