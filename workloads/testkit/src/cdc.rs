//! The change-data-capture harness shared by every crate whose tests need the
//! producer running: a scratch database with copies of the payments tables
//! (and their version triggers), a unique topic prefix, the real
//! `paystream-producer` binary as a child process, and a stock
//! `read_committed` Kafka reader.
//!
//! The producer binary is found through `PAYSTREAM_PRODUCER_BIN`, or built
//! (once per test process) with `cargo build -p paystream-producer`, whose
//! JSON output names the executable; a fresh clone therefore needs no manual
//! step, and an up-to-date build costs a second.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::process::Service;
use crate::{Stack, unique_name};

/// An administrative connection to the local MariaDB over TCP.
pub async fn try_admin(stack: &Stack) -> Result<Conn, mysql_async::Error> {
    Conn::new(
        OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(stack.mysql_port)
            .user(Some(stack.admin.user.clone()))
            .pass(Some(stack.admin.password.clone()))
            .prefer_socket(false),
    )
    .await
}

/// [`try_admin`] for tests: a failure is a panic that names the port.
pub async fn admin(stack: &Stack) -> Conn {
    try_admin(stack)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to MariaDB on {}: {e}", stack.mysql_port))
}

/// A scratch database holding copies of the payments tables.
#[derive(Debug, Clone)]
pub struct Scratch {
    /// The stack.
    pub stack: Stack,
    /// The database name, `cdc_<tag>_<unique>`.
    pub db: String,
    /// The topic prefix: the database name with dashes.
    pub prefix: String,
}

impl Scratch {
    /// Creates database `cdc_<tag>_<unique>` with the four payments tables
    /// and their version triggers, readable by the CDC user.
    pub async fn new(tag: &str) -> Self {
        let stack = Stack::from_env();
        let db = unique_name(&format!("cdc_{tag}"));
        let prefix = db.replace('_', "-");
        let mut c = admin(&stack).await;
        let mut run = async |sql: String| {
            c.query_drop(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
        };
        run(format!("CREATE DATABASE {db}")).await;
        for t in ["users", "packages", "purchases", "payments"] {
            run(format!("CREATE TABLE {db}.{t} LIKE payments.{t}")).await;
        }
        for t in ["packages", "purchases", "payments"] {
            run(format!(
                "CREATE TRIGGER {db}.tr_{t}_version BEFORE UPDATE ON {db}.{t} FOR EACH ROW SET NEW.version = OLD.version + 1"
            ))
            .await;
        }
        run(format!("GRANT SELECT ON {db}.* TO 'paystream_cdc'@'%'")).await;
        Self { stack, db, prefix }
    }

    /// An administrative connection using this database.
    pub async fn conn(&self) -> Conn {
        let mut c = admin(&self.stack).await;
        c.query_drop(format!("USE {}", self.db))
            .await
            .unwrap_or_else(|e| panic!("USE {}: {e}", self.db));
        c
    }

    /// The change topic of `table`.
    pub fn topic(&self, table: &str) -> String {
        format!("{}.{}.{}", self.prefix, self.db, table)
    }

    /// The producer's flags for this database; `extra` flags come last and win.
    pub fn producer_args(&self, extra: &[&str]) -> Vec<String> {
        // Unique per database, so parallel tests never share a replica id.
        let hash = self.db.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let server_id = 10_000 + (hash % 2_000_000_000);
        let mut args: Vec<String> = [
            "--mysql-host",
            "127.0.0.1",
            "--mysql-port",
            &self.stack.mysql_port.to_string(),
            "--mysql-user",
            &self.stack.cdc.user,
            "--mysql-password",
            &self.stack.cdc.password,
            "--server-id",
            &server_id.to_string(),
            "--topic-prefix",
            &self.prefix,
            "--include-table",
            &format!("{}.*", self.db),
            "--kafka-bootstrap",
            &self.stack.kafka_bootstrap,
            "--partitions",
            "3",
            "--heartbeat-secs",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// Starts `binary` as this database's producer.
    pub fn producer_with(&self, binary: &std::path::Path, extra: &[&str]) -> Service {
        Service::spawn(
            &format!("{}-producer", self.prefix),
            binary,
            &self.producer_args(extra),
            &[("PAYSTREAM_LOG", "info,paystream_producer=debug")],
        )
    }

    /// Starts the workspace's `paystream-producer` (see [`producer_binary`]).
    pub fn spawn_producer(&self, extra: &[&str]) -> Service {
        self.producer_with(&producer_binary(), extra)
    }

    /// Drops the database.
    pub async fn drop(self) {
        let mut c = admin(&self.stack).await;
        let _ = c
            .query_drop(format!("DROP DATABASE IF EXISTS {}", self.db))
            .await;
    }
}

/// The `paystream-producer` executable: `PAYSTREAM_PRODUCER_BIN`, or the one
/// `cargo build -p paystream-producer` produces (built once per process).
pub fn producer_binary() -> PathBuf {
    match std::env::var("PAYSTREAM_PRODUCER_BIN") {
        Ok(p) => PathBuf::from(p),
        Err(_) => crate::process::workspace_binary("paystream-producer"),
    }
}

/// One record as a stock consumer sees it.
#[derive(Debug, Clone)]
pub struct Rec {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key as JSON.
    pub key: Option<serde_json::Value>,
    /// Value as JSON; `None` for a tombstone.
    pub value: Option<serde_json::Value>,
    /// The raw value bytes.
    pub raw: Option<Vec<u8>>,
}

/// Reads every committed record of `topic` (all partitions, from the
/// beginning) until `done` holds for what was read, or the deadline passes
/// (then it panics).
pub async fn read_until(
    bootstrap: &str,
    topic: &str,
    deadline: Duration,
    done: impl Fn(&[Rec]) -> bool,
) -> Vec<Rec> {
    let (recs, complete) = read_for(bootstrap, topic, deadline, &done).await;
    assert!(
        complete,
        "deadline passed for {topic} with {} records: {:#?}",
        recs.len(),
        recs.iter().rev().take(5).collect::<Vec<_>>()
    );
    recs
}

/// Like [`read_until`], but returns what it read when the deadline passes,
/// with `false`. Values that are not JSON come back with `value: None` and
/// their bytes in `raw`.
pub async fn read_for(
    bootstrap: &str,
    topic: &str,
    deadline: Duration,
    done: &impl Fn(&[Rec]) -> bool,
) -> (Vec<Rec>, bool) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique_name("test-reader"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap_or_else(|e| panic!("kafka reader: {e}"));
    let start = Instant::now();
    let partitions = loop {
        if let Ok(md) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            let ps: Vec<i32> = md
                .topics()
                .iter()
                .filter(|t| t.error().is_none())
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            if !ps.is_empty() {
                break ps;
            }
        }
        if start.elapsed() >= deadline {
            return (Vec::new(), false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        let _ = tpl.add_partition_offset(topic, *p, Offset::Beginning);
    }
    consumer
        .assign(&tpl)
        .unwrap_or_else(|e| panic!("assign {topic}: {e}"));
    let mut out: Vec<Rec> = Vec::new();
    while !done(&out) {
        if start.elapsed() >= deadline {
            return (out, false);
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(Rec {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().and_then(|k| serde_json::from_slice(k).ok()),
                value: m.payload().and_then(|v| serde_json::from_slice(v).ok()),
                raw: m.payload().map(<[u8]>::to_vec),
            }),
            Some(Err(e)) => panic!("consumer error on {topic}: {e}"),
            None => tokio::task::yield_now().await,
        }
    }
    (out, true)
}

/// Non-tombstone events grouped by key, in offset order.
pub fn by_key(recs: &[Rec]) -> BTreeMap<String, Vec<serde_json::Value>> {
    let mut sorted = recs.to_vec();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    let mut m: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for r in sorted {
        if let (Some(k), Some(v)) = (r.key, r.value) {
            m.entry(k.to_string()).or_default().push(v);
        }
    }
    m
}
