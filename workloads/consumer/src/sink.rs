//! Applies planned writes to Redis: pipelined `EVALSHA` of the read-model
//! script, and the offset marks that tell the consumer whether Redis still
//! holds what it applied.
//!
//! The sink connects lazily and forgets a connection that failed, so the next
//! call reconnects; the caller retries with backoff. Writes are idempotent
//! (version-guarded), so retrying a half-applied batch is safe. In a Cluster
//! each pipeline holds the writes of one hash slot; on a single server a
//! pipeline holds up to `pipeline_len` writes. A server that lost the script
//! (restart, failover, `SCRIPT FLUSH`) answers `NOSCRIPT`; the sink then sends
//! `SCRIPT LOAD` in front of each pipeline and retries once.

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt;
use paystream_core::readmodel::{self, Keys, Mark, ScriptCall};
use redis::cluster_routing::Slot;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, ServerErrorKind};

use crate::redis_client::{ConnectError, RedisArgs, RedisConn};

/// A Redis call failed; the caller retries.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// No connection.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// A command failed.
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
}

/// How many writes landed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Writes that changed the model.
    pub applied: u64,
    /// Writes the version guard refused (replays, stale images).
    pub ignored: u64,
}

/// The Redis side of the consumer.
pub struct Sink {
    args: RedisArgs,
    keys: Keys,
    sha: String,
    conn: Option<RedisConn>,
    pipeline_len: usize,
    concurrency: usize,
}

fn script_sha() -> String {
    redis::Script::new(readmodel::SCRIPT).get_hash().to_string()
}

fn is_noscript(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
        || e.code() == Some("NOSCRIPT")
        || e.to_string().contains("NOSCRIPT")
}

fn load_cmd() -> Cmd {
    let mut c = redis::cmd("SCRIPT");
    c.arg("LOAD").arg(readmodel::SCRIPT);
    c
}

impl Sink {
    /// A sink for the model under `keys`; nothing is connected yet.
    pub fn new(args: RedisArgs, keys: Keys, pipeline_len: usize) -> Self {
        Self {
            args,
            keys,
            sha: script_sha(),
            conn: None,
            pipeline_len: pipeline_len.max(1),
            concurrency: 16,
        }
    }

    /// The model's keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The current connection, opening one if needed.
    pub async fn connection(&mut self) -> Result<RedisConn, SinkError> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        let c = self.args.connect().await?;
        self.conn = Some(c.clone());
        Ok(c)
    }

    fn forget<T>(&mut self, r: Result<T, SinkError>) -> Result<T, SinkError> {
        if r.is_err() {
            self.conn = None;
        }
        r
    }

    /// Round-trips a PING.
    pub async fn ping(&mut self) -> Result<(), SinkError> {
        let r = async {
            let mut c = self.connection().await?;
            redis::cmd("PING").query_async::<String>(&mut c).await?;
            Ok(())
        }
        .await;
        self.forget(r)
    }

    fn evalsha(&self, keys: &[String], args: &[String]) -> Cmd {
        let mut c = redis::cmd("EVALSHA");
        c.arg(&self.sha).arg(keys.len()).arg(keys).arg(args);
        c
    }

    /// Groups `calls` into pipelines: by slot in a Cluster, by count otherwise.
    fn pipelines(&self, calls: &[ScriptCall], cluster: bool) -> Vec<Vec<Cmd>> {
        let mut groups: Vec<Vec<Cmd>> = Vec::new();
        if cluster {
            let mut by_slot: HashMap<Slot, Vec<Cmd>> = HashMap::new();
            for call in calls {
                let keys = call.keys(&self.keys);
                let slot = Slot::for_key(keys.first().map(String::as_str).unwrap_or(""));
                by_slot
                    .entry(slot)
                    .or_default()
                    .push(self.evalsha(&keys, &call.args()));
            }
            for (_, cmds) in by_slot {
                for chunk in cmds.chunks(self.pipeline_len) {
                    groups.push(chunk.to_vec());
                }
            }
        } else {
            for chunk in calls.chunks(self.pipeline_len) {
                groups.push(
                    chunk
                        .iter()
                        .map(|c| self.evalsha(&c.keys(&self.keys), &c.args()))
                        .collect(),
                );
            }
        }
        groups
    }

    async fn run_pipelines(
        &self,
        conn: &RedisConn,
        groups: &[Vec<Cmd>],
        with_load: bool,
    ) -> Result<Vec<i64>, RedisError> {
        let pipelines: Vec<Pipeline> = groups
            .iter()
            .map(|cmds| {
                let mut p = Pipeline::with_capacity(cmds.len() + 1);
                if with_load {
                    p.add_command(load_cmd()).ignore();
                }
                for cmd in cmds {
                    p.add_command(cmd.clone());
                }
                p
            })
            .collect();
        let requests: Vec<_> = pipelines
            .into_iter()
            .map(|p| {
                let mut c = conn.clone();
                async move { p.query_async::<Vec<i64>>(&mut c).await }
            })
            .collect();
        let results: Vec<Result<Vec<i64>, RedisError>> = futures::stream::iter(requests)
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let mut out = Vec::new();
        for r in results {
            out.extend(r?);
        }
        Ok(out)
    }

    /// Runs `cmds` (one pipeline per group), reloading the script once on NOSCRIPT.
    async fn run(&mut self, groups: Vec<Vec<Cmd>>) -> Result<Vec<i64>, SinkError> {
        let conn = self.connection().await?;
        let r = match self.run_pipelines(&conn, &groups, false).await {
            Err(e) if is_noscript(&e) => {
                tracing::info!("redis lost the read-model script; loading it again");
                self.run_pipelines(&conn, &groups, true).await
            }
            other => other,
        };
        self.forget(r.map_err(SinkError::from))
    }

    /// Applies `calls` (order-free: at most one per target).
    pub async fn apply(&mut self, calls: &[ScriptCall]) -> Result<Applied, SinkError> {
        if calls.is_empty() {
            return Ok(Applied::default());
        }
        let cluster = self.connection().await?.is_cluster();
        let groups = self.pipelines(calls, cluster);
        let results = self.run(groups).await?;
        let applied = results.iter().filter(|r| **r == 1).count() as u64;
        Ok(Applied {
            applied,
            ignored: results.len() as u64 - applied,
        })
    }

    /// Reads the marks of `fields` (missing ones are `None`).
    pub async fn read_marks(&mut self, fields: &[String]) -> Result<Vec<Option<Mark>>, SinkError> {
        if fields.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.keys.meta_offsets();
        let r = async {
            let mut c = self.connection().await?;
            let raw: Vec<Option<String>> = redis::cmd("HMGET")
                .arg(&key)
                .arg(fields)
                .query_async(&mut c)
                .await?;
            Ok(raw
                .into_iter()
                .map(|v| v.and_then(|s| Mark::parse(&s)))
                .collect())
        }
        .await;
        self.forget(r)
    }

    /// Writes marks and other meta fields unconditionally.
    pub async fn write_meta(&mut self, fields: &[(String, String)]) -> Result<(), SinkError> {
        if fields.is_empty() {
            return Ok(());
        }
        let key = self.keys.meta_offsets();
        let r = async {
            let mut c = self.connection().await?;
            let mut cmd = redis::cmd("HSET");
            cmd.arg(&key);
            for (f, v) in fields {
                cmd.arg(f).arg(v);
            }
            cmd.query_async::<i64>(&mut c).await?;
            Ok(())
        }
        .await;
        self.forget(r)
    }

    /// Advances marks that exist; returns the fields whose mark was missing.
    pub async fn advance_marks(
        &mut self,
        marks: &[(String, Mark)],
    ) -> Result<Vec<String>, SinkError> {
        if marks.is_empty() {
            return Ok(Vec::new());
        }
        let (keys, args) = readmodel::marks_call(&self.keys, marks);
        let cmd = self.evalsha(&keys, &args);
        let r = async {
            let conn = self.connection().await?;
            let mut c = conn.clone();
            let first: Result<Vec<String>, RedisError> = cmd.query_async(&mut c).await;
            match first {
                Err(e) if is_noscript(&e) => {
                    load_cmd().query_async::<String>(&mut c).await?;
                    Ok(cmd.query_async(&mut c).await?)
                }
                other => Ok(other?),
            }
        }
        .await;
        self.forget(r)
    }

    /// Every field of the marks hash.
    pub async fn all_meta(&mut self) -> Result<BTreeMap<String, String>, SinkError> {
        let key = self.keys.meta_offsets();
        let r = async {
            let mut c = self.connection().await?;
            Ok(redis::cmd("HGETALL").arg(&key).query_async(&mut c).await?)
        }
        .await;
        self.forget(r)
    }
}
