//! Harness for the consumer's integration tests: a scratch database, the real
//! producer writing its change topics, the real consumer binary as a child
//! process writing a Redis (the shared standalone one under a unique key
//! prefix, a private server, or the local Cluster), and the checker that
//! compares Redis with MySQL.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use paystream_consumer::redis_client::{RedisArgs, RedisConn, RedisMode};
use paystream_core::readmodel::Keys;
use paystream_testkit::cdc::Scratch;
use paystream_testkit::checker::{self, Report};
use paystream_testkit::process::Service;
use paystream_testkit::{Stack, unique_name};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// Which Redis the consumer writes.
#[derive(Debug, Clone)]
pub enum Target {
    /// A standalone server.
    Standalone { url: String },
    /// The local Redis Cluster.
    Cluster {
        nodes: Vec<String>,
        password: String,
    },
    /// A primary found through a Sentinel.
    Sentinel {
        sentinel: String,
        master: String,
        password: String,
    },
}

impl Target {
    /// The shared stack Redis, database 0 (tests separate by key prefix).
    pub fn shared() -> Self {
        Self::Standalone {
            url: Stack::from_env().redis_url(),
        }
    }

    /// The local Redis Cluster, started if needed.
    pub fn cluster() -> Self {
        Self::Cluster {
            nodes: paystream_testkit::redis_cluster(),
            password: Stack::from_env().redis_password,
        }
    }

    /// The consumer's flags for this target.
    pub fn flags(&self) -> Vec<String> {
        match self {
            Self::Standalone { url } => vec!["--redis-url".into(), url.clone()],
            Self::Cluster { nodes, password } => vec![
                "--redis-mode".into(),
                "cluster".into(),
                "--redis-nodes".into(),
                nodes.join(","),
                "--redis-password".into(),
                password.clone(),
            ],
            Self::Sentinel {
                sentinel,
                master,
                password,
            } => vec![
                "--redis-mode".into(),
                "sentinel".into(),
                "--redis-nodes".into(),
                sentinel.clone(),
                "--redis-sentinel-master".into(),
                master.clone(),
                "--redis-password".into(),
                password.clone(),
            ],
        }
    }

    /// The same target as client settings.
    pub fn args(&self) -> RedisArgs {
        match self {
            Self::Standalone { url } => RedisArgs::standalone(url),
            Self::Cluster { nodes, password } => {
                let mut a = RedisArgs::standalone("redis://unused");
                a.redis_mode = RedisMode::Cluster;
                a.redis_nodes = nodes.clone();
                a.redis_password = Some(password.clone());
                a
            }
            Self::Sentinel {
                sentinel,
                master,
                password,
            } => {
                let mut a = RedisArgs::standalone("redis://unused");
                a.redis_mode = RedisMode::Sentinel;
                a.redis_nodes = vec![sentinel.clone()];
                a.redis_sentinel_master = master.clone();
                a.redis_password = Some(password.clone());
                a
            }
        }
    }

    /// A connection for the test's own reads and writes.
    pub async fn conn(&self) -> RedisConn {
        self.args().connect().await.unwrap()
    }
}

/// A scratch database, its producer, and where its consumers write.
pub struct Pipeline {
    pub s: Scratch,
    pub producer: Service,
    pub target: Target,
    pub keys: Keys,
    pub group: String,
}

impl Pipeline {
    /// Creates the scratch database, seeds users and packages, starts the
    /// producer and waits until it is ready.
    pub async fn start(tag: &str, target: Target, users: u64, packages: u64) -> Self {
        let s = Scratch::new(tag).await;
        let mut c = s.conn().await;
        seed(&mut c, users, packages).await;
        let producer = s.spawn_producer(&["--max-chunk-records", "500"]);
        producer.wait_ready(Duration::from_secs(120)).await;
        let keys = Keys::new(&s.prefix).unwrap();
        let group = format!("{}-consumer", s.prefix);
        Self {
            s,
            producer,
            target,
            keys,
            group,
        }
    }

    /// The consumer's flags; `extra` come last and win.
    pub fn consumer_args(&self, instance: Option<&str>, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = [
            "--topic-prefix",
            &self.s.prefix,
            "--database",
            &self.s.db,
            "--kafka-bootstrap",
            &self.s.stack.kafka_bootstrap,
            "--group-id",
            &self.group,
            "--batch-linger-ms",
            "10",
            "--check-interval-ms",
            "200",
            "--max-backoff-secs",
            "1",
            "--kafka-property",
            "session.timeout.ms=6000",
            "--kafka-property",
            "heartbeat.interval.ms=500",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(id) = instance {
            a.extend([
                "--group-instance-id".to_string(),
                format!("{}-{id}", self.s.prefix),
            ]);
        }
        a.extend(self.target.flags());
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    /// Starts a consumer (static member `instance`, if given).
    pub fn consumer(&self, instance: Option<&str>, extra: &[&str]) -> Service {
        Service::spawn(
            &format!("{}-consumer", self.s.prefix),
            std::path::Path::new(env!("CARGO_BIN_EXE_paystream-consumer")),
            &self.consumer_args(instance, extra),
            &[("PAYSTREAM_LOG", "info,paystream_consumer=debug")],
        )
    }

    /// One comparison of Redis with MySQL.
    pub async fn check(&self) -> Report {
        let mut my = self.s.conn().await;
        let redis = self.target.conn().await;
        checker::compare(&mut my, &self.s.db, &redis, &self.keys)
            .await
            .unwrap()
    }

    /// Polls the checker until Redis equals MySQL; panics with the last
    /// report (and the consumers' logs) after `deadline`.
    pub async fn converge(&self, deadline: Duration, consumers: &[&Service]) -> Report {
        let start = Instant::now();
        loop {
            let r = self.check().await;
            if r.is_equal() {
                return r;
            }
            if start.elapsed() >= deadline {
                let logs: Vec<String> = consumers
                    .iter()
                    .map(|c| {
                        let t = c.log_text();
                        let tail: Vec<&str> = t.lines().rev().take(40).collect();
                        format!(
                            "--- {} ---\n{}",
                            c.log.display(),
                            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                        )
                    })
                    .collect();
                panic!(
                    "Redis never converged to MySQL in {deadline:?}: {r}\n{}",
                    logs.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits until the group has committed, on both change topics, every
    /// record that is in them now.
    pub async fn wait_applied(&self, deadline: Duration) {
        let topics = [self.s.topic("purchases"), self.s.topic("packages")];
        let ends = data_ends(&self.s.stack.kafka_bootstrap, &topics).await;
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.s.stack.kafka_bootstrap)
            .set("group.id", &self.group)
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let start = Instant::now();
        loop {
            let mut tpl = TopicPartitionList::new();
            for ((t, p), _) in &ends {
                tpl.add_partition(t, *p);
            }
            let committed = consumer
                .committed_offsets(tpl, Duration::from_secs(5))
                .unwrap();
            let behind: Vec<String> = ends
                .iter()
                .filter(|((t, p), end)| {
                    let c = committed
                        .find_partition(t, *p)
                        .and_then(|e| match e.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        })
                        .unwrap_or(0);
                    c < *end
                })
                .map(|((t, p), end)| format!("{t}#{p} < {end}"))
                .collect();
            if behind.is_empty() {
                return;
            }
            assert!(
                start.elapsed() < deadline,
                "the consumer group never committed {behind:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops the producer, drops the scratch database and deletes the
    /// model's keys (tests share the stack Redis under unique prefixes).
    pub async fn drop(self) {
        drop(self.producer);
        let servers: Vec<RedisArgs> = match &self.target {
            Target::Cluster { nodes, password } => nodes
                .iter()
                .map(|n| RedisArgs::standalone(&format!("redis://:{password}@{n}/")))
                .collect(),
            other => vec![other.args()],
        };
        for server in servers {
            if let Ok(mut c) = server.connect().await {
                delete_prefix(&mut c, &format!("{}:", self.keys.prefix())).await;
            }
        }
        self.s.drop().await;
    }
}

/// Per partition of `topics`: the offset after the last data record (what a
/// consumer that applied everything commits). Reads each partition to its end.
pub async fn data_ends(bootstrap: &str, topics: &[String]) -> Vec<((String, i32), i64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique_name("ends"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut out = Vec::new();
    for t in topics {
        let md = consumer
            .fetch_metadata(Some(t), Duration::from_secs(5))
            .unwrap();
        let parts: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
        for p in parts {
            let (low, high) = consumer
                .fetch_watermarks(t, p, Duration::from_secs(5))
                .unwrap();
            let mut last = low;
            if high > low {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(t, p, Offset::Beginning).unwrap();
                consumer.assign(&tpl).unwrap();
                let start = Instant::now();
                loop {
                    assert!(start.elapsed() < Duration::from_secs(60), "reading {t}#{p}");
                    match consumer.poll(Duration::from_millis(100)) {
                        Some(Ok(m)) => {
                            use rdkafka::message::Message;
                            last = m.offset() + 1;
                        }
                        Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
                        Some(Err(e)) => panic!("{e}"),
                        None => {}
                    }
                }
            }
            out.push(((t.clone(), p), last));
        }
    }
    out
}

/// Sends one record by hand (not transactional) to `topic`/`partition`.
pub async fn send_raw(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).partition(partition);
    if let Some(k) = key {
        rec = rec.key(k);
    }
    if let Some(v) = value {
        rec = rec.payload(v);
    }
    producer
        .send(rec, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// Users 1..=users and packages 1..=packages.
pub async fn seed(c: &mut mysql_async::Conn, users: u64, packages: u64) {
    if users > 0 {
        let rows: Vec<String> = (1..=users)
            .map(|u| format!("({u}, 'u{u}@x.io', 'User {u}')"))
            .collect();
        c.query_drop(format!(
            "INSERT INTO users (id, email, display_name) VALUES {}",
            rows.join(",")
        ))
        .await
        .unwrap();
    }
    if packages > 0 {
        let rows: Vec<String> = (1..=packages)
            .map(|p| format!("({p}, 'p{p}', 'Package {p}', {p}.99, 'EUR')"))
            .collect();
        c.query_drop(format!(
            "INSERT INTO packages (id, code, name, price, currency) VALUES {}",
            rows.join(",")
        ))
        .await
        .unwrap();
    }
}

/// A tiny deterministic PRNG (xorshift64*): the seed is printed so a failing
/// run can be replayed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Writes `rows` row changes: purchase inserts (multi-row), status and
/// quantity updates, moves between users, deletes, and now and then a
/// catalogue change (package name and price). Stores progress in `progress`.
pub async fn mixed_load(
    c: &mut mysql_async::Conn,
    rows: usize,
    seed: u64,
    users: u64,
    packages: u64,
    progress: &std::sync::atomic::AtomicUsize,
) {
    use std::sync::atomic::Ordering;
    let mut rng = Rng(seed | 1);
    let statuses = ["pending", "paid", "cancelled", "refunded"];
    let first: Option<u64> = c
        .query_first("SELECT COALESCE(MAX(id), 0) FROM purchases")
        .await
        .unwrap();
    let mut next_id = first.unwrap_or(0) + 1;
    let mut live: Vec<u64> = c.query("SELECT id FROM purchases").await.unwrap();
    let mut done = 0usize;
    while done < rows {
        let size = if rng.below(40) == 0 {
            2000
        } else {
            1 + rng.below(150) as usize
        };
        let size = size.min(rows - done);
        let mut tx = c.start_transaction(Default::default()).await.unwrap();
        let mut inserts = Vec::new();
        for _ in 0..size {
            let roll = rng.below(100);
            if roll < 55 || live.len() < 20 {
                let user = 1 + rng.below(users);
                let pkg = 1 + rng.below(packages);
                let q = 1 + rng.below(5);
                inserts.push(format!(
                    "({next_id}, {user}, {pkg}, {q}, {}.{:02}, 'EUR', '{}', 'k{next_id}', NOW(6) - INTERVAL {} SECOND)",
                    q * 10,
                    rng.below(100),
                    statuses[rng.below(4) as usize],
                    rng.below(1_000_000)
                ));
                next_id += 1;
            } else if roll < 85 {
                let id = live[rng.below(live.len() as u64) as usize];
                tx.exec_drop(
                    "UPDATE purchases SET status = ?, quantity = quantity + 1 WHERE id = ?",
                    (statuses[rng.below(4) as usize], id),
                )
                .await
                .unwrap();
            } else if roll < 90 {
                let id = live[rng.below(live.len() as u64) as usize];
                tx.exec_drop(
                    "UPDATE purchases SET user_id = ? WHERE id = ?",
                    (1 + rng.below(users), id),
                )
                .await
                .unwrap();
            } else if roll < 98 {
                let i = rng.below(live.len() as u64) as usize;
                let id = live.swap_remove(i);
                tx.exec_drop("DELETE FROM purchases WHERE id = ?", (id,))
                    .await
                    .unwrap();
            } else {
                tx.exec_drop(
                    "UPDATE packages SET name = CONCAT('Package ', id, ' r', version), price = price + 1 WHERE id = ?",
                    (1 + rng.below(packages),),
                )
                .await
                .unwrap();
            }
            done += 1;
        }
        if !inserts.is_empty() {
            tx.query_drop(format!(
                "INSERT INTO purchases (id, user_id, package_id, quantity, amount, currency, status, idempotency_key, created_at) VALUES {}",
                inserts.join(",")
            ))
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        let first_new = next_id - inserts.len() as u64;
        live.extend(first_new..next_id);
        progress.store(done, Ordering::Relaxed);
    }
}

/// Deletes every key starting with `prefix` on one server.
pub async fn delete_prefix(c: &mut RedisConn, prefix: &str) {
    let mut cursor = 0u64;
    loop {
        let Ok((next, keys)) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async::<(u64, Vec<String>)>(c)
            .await
        else {
            return;
        };
        if !keys.is_empty() {
            let mut pipe = redis::pipe();
            for k in keys {
                pipe.cmd("UNLINK").arg(k).ignore();
            }
            let _ = pipe.query_async::<()>(c).await;
        }
        cursor = next;
        if cursor == 0 {
            return;
        }
    }
}
