//! The CDC benchmark.
//!
//! 1. **Backlog drain**: the producer is stopped after its (empty) snapshot,
//!    `--rows` rows are written in transactions of `--txn-rows`, then the
//!    producer is started and timed until its checkpoint covers the last
//!    transaction. Peak RSS is the kernel's high-water mark (`VmHWM`).
//! 2. **Latency at a fixed rate**: with the producer caught up, single-row
//!    transactions are written at `--rate` rows/s for `--seconds`; each row
//!    carries its commit-side timestamp (`created_at = NOW(6)`), and a
//!    `read_committed` consumer records when it sees the row. Sending is
//!    open-loop: rows are scheduled by the clock, not by the previous reply.
//!
//! Everything runs against the local stack on this machine, with the release
//! producer binary.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder};
use paystream_core::checkpoint::Checkpoint;
use paystream_testkit::{Stack, unique_name};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::json;

use crate::report::{percentile, write};

/// CDC benchmark parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Rows in the backlog.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Rows per source transaction in the backlog.
    #[arg(long, default_value_t = 1_000)]
    txn_rows: u64,
    /// Rows per second for the latency run.
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    /// Seconds of the latency run.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// The producer binary (release build).
    #[arg(long, default_value_t = default_producer())]
    producer: String,
}

fn default_producer() -> String {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| {
        format!(
            "{}/.cache/paystream/target",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    format!("{target}/release/paystream-producer")
}

async fn admin(stack: &Stack) -> anyhow::Result<Conn> {
    Ok(Conn::new(
        OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(stack.mysql_port)
            .user(Some(stack.admin.user.clone()))
            .pass(Some(stack.admin.password.clone()))
            .prefer_socket(false),
    )
    .await?)
}

struct Producer {
    child: std::process::Child,
}

impl Producer {
    fn start(args: &Args, stack: &Stack, db: &str, prefix: &str) -> anyhow::Result<Self> {
        let log = paystream_testkit::repo_root().join(format!("var/test-logs/bench-{prefix}.log"));
        std::fs::create_dir_all(log.parent().context("log dir")?)?;
        let out = std::fs::File::create(&log)?;
        let child = std::process::Command::new(&args.producer)
            .args([
                "--mysql-port",
                &stack.mysql_port.to_string(),
                "--mysql-user",
                &stack.cdc.user,
                "--mysql-password",
                &stack.cdc.password,
                "--server-id",
                "9001",
                "--topic-prefix",
                prefix,
                "--include-table",
                &format!("{db}.*"),
                "--kafka-bootstrap",
                &stack.kafka_bootstrap,
                "--partitions",
                "6",
                "--ops-addr",
                "127.0.0.1:0",
            ])
            .env("PAYSTREAM_LOG", "warn")
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (run `make bench-cdc`, which builds it)",
                    args.producer
                )
            })?;
        Ok(Self { child })
    }

    fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    }

    fn stop(mut self) -> anyhow::Result<()> {
        std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Follows the checkpoint topic; returns when `done` holds for a checkpoint.
fn follow_checkpoints(
    consumer: &BaseConsumer,
    deadline: Duration,
    done: impl Fn(&Checkpoint) -> bool,
) -> anyhow::Result<Checkpoint> {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(50)) {
            let m = m?;
            if let Some(p) = m.payload() {
                let cp: Checkpoint = serde_json::from_slice(p)?;
                if done(&cp) {
                    return Ok(cp);
                }
            }
        }
    }
    bail!("no matching checkpoint within {deadline:?}")
}

fn reader(stack: &Stack, topic: &str, from: Offset) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &stack.kafka_bootstrap)
        .set("group.id", unique_name("bench"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .create()?;
    let start = Instant::now();
    let partitions = loop {
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
        let ps: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if !ps.is_empty() {
            break ps;
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("topic {topic} did not appear");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, p, from)?;
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

fn seq_of(gtid_pos: &str) -> u64 {
    gtid_pos
        .split(',')
        .filter_map(|g| g.rsplit('-').next()?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// Runs the CDC benchmark and writes its report.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let stack = Stack::from_env();
    let db = unique_name("bench_cdc");
    let prefix = db.replace('_', "-");
    let mut c = admin(&stack).await?;
    c.query_drop(format!("CREATE DATABASE {db}")).await?;
    c.query_drop(format!(
        "CREATE TABLE {db}.purchases LIKE payments.purchases"
    ))
    .await?;
    c.query_drop(format!("GRANT SELECT ON {db}.* TO 'paystream_cdc'@'%'"))
        .await?;

    // The producer takes its (empty) snapshot and records a checkpoint.
    let producer = Producer::start(&args, &stack, &db, &prefix)?;
    let checkpoints = reader(&stack, &format!("{prefix}.checkpoints"), Offset::Beginning)?;
    follow_checkpoints(&checkpoints, Duration::from_secs(60), |cp| {
        cp.snapshot == paystream_core::checkpoint::SnapshotState::Done
    })?;
    producer.stop()?;

    // The backlog.
    eprintln!(
        "writing a backlog of {} rows in transactions of {}",
        args.rows, args.txn_rows
    );
    let write_start = Instant::now();
    let mut written = 0;
    while written < args.rows {
        let n = args.txn_rows.min(args.rows - written);
        c.query_drop(format!(
            "INSERT INTO {db}.purchases (user_id, package_id, quantity, amount, currency, status, idempotency_key, created_at) \
             SELECT 1 + seq % 1000, 1 + seq % 20, 1, 9.99, 'EUR', 'pending', CONCAT('b{written}-', seq), NOW(6) FROM {db}.seq_1_to_{n}"
        ))
        .await?;
        written += n;
    }
    let write_secs = write_start.elapsed().as_secs_f64();
    let last: String = c
        .query_first("SELECT @@gtid_binlog_pos")
        .await?
        .context("gtid")?;
    let target = seq_of(&last);

    // Drain it.
    let producer = Producer::start(&args, &stack, &db, &prefix)?;
    let drain_start = Instant::now();
    follow_checkpoints(&checkpoints, Duration::from_secs(1800), |cp| {
        seq_of(&cp.gtid) >= target
    })?;
    let drain_secs = drain_start.elapsed().as_secs_f64();
    let drain_rss = producer.peak_rss_kib();
    let rows_per_sec = args.rows as f64 / drain_secs;
    eprintln!(
        "drained {} rows in {drain_secs:.1}s: {rows_per_sec:.0} rows/s",
        args.rows
    );

    // Latency at a fixed rate.
    let topic = format!("{prefix}.{db}.purchases");
    let consumer = reader(&stack, &topic, Offset::End)?;
    let (tx, rx) = std::sync::mpsc::channel::<Vec<f64>>();
    let expected = args.rate * args.seconds;
    let reading = std::thread::spawn(move || {
        let mut lat = Vec::with_capacity(expected as usize);
        let start = Instant::now();
        while (lat.len() as u64) < expected && start.elapsed() < Duration::from_secs(300) {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) {
                let seen_us = chrono::Utc::now().timestamp_micros();
                let Some(v) = m
                    .payload()
                    .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
                else {
                    continue;
                };
                let created = v["after"]["created_at"]
                    .as_str()
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
                if let Some(created) = created {
                    lat.push((seen_us - created.timestamp_micros()) as f64 / 1000.0);
                }
            }
        }
        let _ = tx.send(lat);
    });
    eprintln!("latency run: {} rows/s for {}s", args.rate, args.seconds);
    let writers = 4u64;
    let mut handles = Vec::new();
    let t0 = tokio::time::Instant::now();
    for w in 0..writers {
        let stack = stack.clone();
        let db = db.clone();
        let per_writer = expected / writers;
        let interval = Duration::from_secs_f64(writers as f64 / args.rate as f64);
        handles.push(tokio::spawn(async move {
            let mut c = admin(&stack).await?;
            for i in 0..per_writer {
                tokio::time::sleep_until(t0 + interval * i as u32).await;
                c.exec_drop(
                    format!("INSERT INTO {db}.purchases (user_id, package_id, quantity, amount, currency, idempotency_key, created_at) VALUES (1, 1, 1, 1.00, 'EUR', ?, NOW(6))"),
                    (format!("lat-{w}-{i}"),),
                )
                .await?;
            }
            anyhow::Ok(())
        }));
    }
    for h in handles {
        h.await??;
    }
    let achieved = expected as f64 / t0.elapsed().as_secs_f64();
    let mut lat = rx.recv_timeout(Duration::from_secs(330))?;
    reading.join().ok();
    lat.sort_by(f64::total_cmp);
    let (p50, p99, max) = (
        percentile(&lat, 50.0),
        percentile(&lat, 99.0),
        percentile(&lat, 100.0),
    );
    let peak_rss = producer.peak_rss_kib().or(drain_rss);
    producer.stop()?;
    c.query_drop(format!("DROP DATABASE {db}")).await?;

    let json = json!({
        "benchmark": "cdc",
        "date": chrono::Utc::now().to_rfc3339(),
        "machine": {"cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
        "backlog": {"rows": args.rows, "txn_rows": args.txn_rows, "write_seconds": write_secs,
                     "drain_seconds": drain_secs, "rows_per_second": rows_per_sec, "peak_rss_kib_during_drain": drain_rss},
        "latency": {"target_rate": args.rate, "achieved_rate": achieved, "seconds": args.seconds, "samples": lat.len(),
                     "p50_ms": p50, "p99_ms": p99, "max_ms": max},
        "peak_rss_kib": peak_rss,
    });
    let md = format!(
        "# CDC benchmark\n\nMachine: {} cores, the local stack on loopback, release producer.\n\n\
         | measure | value |\n| --- | --- |\n\
         | backlog drained | {} rows in transactions of {} |\n\
         | drain time | {drain_secs:.1} s |\n\
         | **drain rate** | **{rows_per_sec:.0} rows/s** |\n\
         | latency run | {} rows/s offered ({achieved:.0} achieved) for {} s, {} samples |\n\
         | **commit-to-visible p50** | **{p50:.1} ms** |\n\
         | **commit-to-visible p99** | **{p99:.1} ms** |\n\
         | max | {max:.1} ms |\n\
         | **peak RSS** | **{:.1} MiB** |\n\n\
         How to read it: the drain rate is rows per second from a stopped producer's \
         checkpoint to the checkpoint covering the last backlog transaction (events \
         committed to Kafka). Latency runs from the row's `NOW(6)` inside its INSERT to \
         a `read_committed` consumer receiving it, so it includes the Kafka commit and \
         the consumer's fetch. Figures from one run on a shared 2-core machine are noisy: \
         compare ratios measured in the same run, and repeat.\n",
        json["machine"]["cores"],
        args.rows,
        args.txn_rows,
        args.rate,
        args.seconds,
        lat.len(),
        peak_rss.unwrap_or(0) as f64 / 1024.0,
    );
    let (j, m) = write("cdc", &json, &md)?;
    println!("{md}\nwritten: {} and {}", j.display(), m.display());
    Ok(())
}
