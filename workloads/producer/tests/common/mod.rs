//! Harness for the producer's integration tests: a scratch database with the
//! payments tables, the producer binary as a real child process, and a stock
//! `read_committed` Kafka reader.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder};
use paystream_testkit::{Stack, unique_name, wait_for};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// A scratch database holding copies of the payments tables.
pub struct Scratch {
    pub stack: Stack,
    pub db: String,
    pub prefix: String,
}

pub async fn admin(stack: &Stack) -> Conn {
    Conn::new(
        OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(stack.mysql_port)
            .user(Some(stack.admin.user.clone()))
            .pass(Some(stack.admin.password.clone()))
            .prefer_socket(false),
    )
    .await
    .unwrap()
}

impl Scratch {
    /// Creates database `cdc_<unique>` with the four payments tables and lets
    /// the CDC user read it.
    pub async fn new(tag: &str) -> Self {
        let stack = Stack::from_env();
        let db = unique_name(&format!("cdc_{tag}"));
        let prefix = db.replace('_', "-");
        let mut c = admin(&stack).await;
        c.query_drop(format!("CREATE DATABASE {db}")).await.unwrap();
        for t in ["users", "packages", "purchases", "payments"] {
            c.query_drop(format!("CREATE TABLE {db}.{t} LIKE payments.{t}"))
                .await
                .unwrap();
        }
        for t in ["packages", "purchases", "payments"] {
            c.query_drop(format!(
                "CREATE TRIGGER {db}.tr_{t}_version BEFORE UPDATE ON {db}.{t} FOR EACH ROW SET NEW.version = OLD.version + 1"
            ))
            .await
            .unwrap();
        }
        c.query_drop(format!("GRANT SELECT ON {db}.* TO 'paystream_cdc'@'%'"))
            .await
            .unwrap();
        Self { stack, db, prefix }
    }

    pub async fn conn(&self) -> Conn {
        let mut c = admin(&self.stack).await;
        c.query_drop(format!("USE {}", self.db)).await.unwrap();
        c
    }

    pub fn topic(&self, table: &str) -> String {
        format!("{}.{}.{}", self.prefix, self.db, table)
    }

    /// Starts the producer for this database; `extra` adds flags (later
    /// flags win over the defaults).
    pub fn producer(&self, extra: &[&str]) -> Producer {
        Producer::spawn(self, extra)
    }

    pub async fn drop(self) {
        let mut c = admin(&self.stack).await;
        let _ = c
            .query_drop(format!("DROP DATABASE IF EXISTS {}", self.db))
            .await;
    }
}

/// The producer binary running as a child process.
pub struct Producer {
    pub child: Child,
    pub log: PathBuf,
    pub ops: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Producer {
    pub fn spawn(s: &Scratch, extra: &[&str]) -> Self {
        let log_dir = paystream_testkit::repo_root().join("var/test-logs");
        std::fs::create_dir_all(&log_dir).unwrap();
        let log = log_dir.join(format!("{}-{}.log", s.prefix, unique_name("run")));
        let out = std::fs::File::create(&log).unwrap();
        let ops = format!("127.0.0.1:{}", free_port());
        let server_id = 10_000 + (std::process::id() % 50_000);
        let child = Command::new(env!("CARGO_BIN_EXE_paystream-producer"))
            .args([
                "--mysql-host",
                "127.0.0.1",
                "--mysql-port",
                &s.stack.mysql_port.to_string(),
                "--mysql-user",
                &s.stack.cdc.user,
                "--mysql-password",
                &s.stack.cdc.password,
                "--server-id",
                &server_id.to_string(),
                "--topic-prefix",
                &s.prefix,
                "--include-table",
                &format!("{}.*", s.db),
                "--kafka-bootstrap",
                &s.stack.kafka_bootstrap,
                "--partitions",
                "3",
                "--ops-addr",
                &ops,
                "--heartbeat-secs",
                "1",
            ])
            .args(extra)
            .env("PAYSTREAM_LOG", "info,paystream_producer=debug")
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        Self { child, log, ops }
    }

    /// SIGKILL: no chance to commit anything.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().unwrap()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Body of `/readyz`, or the connection error.
    pub async fn readyz(&self) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut s) = tokio::net::TcpStream::connect(&self.ops).await else {
            return (0, "not listening".into());
        };
        let _ = s
            .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf).await;
        let code = buf.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        (code, buf)
    }

    pub async fn wait_ready(&self) {
        wait_for("producer ready", Duration::from_secs(60), || async {
            (self.readyz().await.0 == 200).then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n--- producer log ---\n{}", self.log_text()));
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One record as a stock consumer sees it.
#[derive(Debug, Clone)]
pub struct Rec {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<serde_json::Value>,
    pub value: Option<serde_json::Value>,
}

/// Reads every committed record of `topic` (all partitions, from the
/// beginning) until `done` holds for what was read, or the deadline passes.
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
/// with `false`.
pub async fn read_for(
    bootstrap: &str,
    topic: &str,
    deadline: Duration,
    done: &impl Fn(&[Rec]) -> bool,
) -> (Vec<Rec>, bool) {
    let bootstrap = bootstrap.to_string();
    let topic = topic.to_string();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", unique_name("test-reader"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let start = std::time::Instant::now();
    // The topic may not exist yet: wait for its metadata.
    let partitions = loop {
        let md = consumer.fetch_metadata(Some(&topic), Duration::from_secs(5));
        if let Ok(md) = md {
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
        assert!(start.elapsed() < deadline, "topic {topic} never appeared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition_offset(&topic, *p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out: Vec<Rec> = Vec::new();
    while !done(&out) {
        if start.elapsed() >= deadline {
            return (out, false);
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(Rec {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(|k| {
                    serde_json::from_slice(k).unwrap_or_else(|_| {
                        serde_json::Value::String(String::from_utf8_lossy(k).into())
                    })
                }),
                value: m.payload().map(|v| serde_json::from_slice(v).unwrap()),
            }),
            Some(Err(e)) => panic!("consumer error: {e}"),
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
