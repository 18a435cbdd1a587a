//! The CDC benchmark: paystream's producer against Debezium's MariaDB
//! connector, in the same run, on the same MariaDB and Kafka, measured by the
//! same code, with `mariadb-binlog` reading the same binlog as the ceiling.
//!
//! For every engine (`--engines`, each `--repeat` times, the order reversed on
//! every other repetition) one *point* is measured:
//!
//! 1. **Setup**: a fresh database with a `purchases` table like the real one;
//!    the engine is started, a marker row is written until it shows up in the
//!    engine's table topic (the engine is streaming), and the engine is
//!    stopped. Its saved position (paystream's checkpoint, Debezium's offset
//!    file) is now just before the backlog.
//! 2. **Backlog**: `--rows` rows in transactions of `--txn-rows`, written while
//!    the engine is stopped. Each engine gets its own backlog in its own
//!    database, written the same way right before its own drain: the two
//!    backlogs are the same statements over the same number of rows (their
//!    binlog sizes are reported), every engine reads only its own backlog plus
//!    the other's setup rows, and the page cache is equally warm for both. A
//!    single shared backlog would give identical bytes, but paystream's
//!    checkpoint cannot be rewound to replay it, so repeats and the order of
//!    the engines' latency runs would have to be worked around.
//! 3. **Ceiling**: with no engine running, `mariadb-binlog` reads the
//!    backlog's binlog range from the server ([`ceiling`]).
//! 4. **Drain**: the engine is started and timed until the backlog is in
//!    Kafka (paystream: a checkpoint covers the last backlog transaction;
//!    Debezium: the table topic holds all its rows). The clock starts at the
//!    process start, so it includes start-up (a JVM and plugin scan for
//!    Debezium); the time to the first backlog record and the rate from there
//!    on ("streaming") are reported too.
//! 5. **Latency at a fixed rate**: with the engine caught up, single-row
//!    transactions at `--rate` rows/s for `--seconds`, open loop (rows are
//!    scheduled by the clock, not by the previous reply). Each row's
//!    commit-side timestamp is its own `created_at = NOW(6)`, decoded from the
//!    engine's event (paystream: an ISO-8601 string; Debezium: a
//!    MicroTimestamp, microseconds since the epoch), against the moment a
//!    `read_committed` consumer receives it. Debezium's `source.ts_ms` is not
//!    used: MariaDB's binlog event time has whole seconds only.
//! 6. **Peak RSS**: the kernel's high-water mark (`VmHWM`) of the engine's
//!    process, the producer or the Connect JVM, over drain and latency run.
//!
//! Results: per engine each run and the median over runs, the ceiling, and
//! paystream-over-other ratios of the medians measured in this run.

mod ceiling;
mod debezium;
mod paystream;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mysql_async::Conn;
use mysql_async::prelude::*;
use paystream_testkit::{Stack, unique_name};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::{Value, json};

use crate::mysql::admin;
use crate::report::{median, percentile, write};

/// CDC benchmark parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Rows in the backlog (one backlog per engine and repetition).
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
    /// Engines to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "paystream,debezium")]
    engines: Vec<EngineKind>,
    /// Measure every engine this many times; the report gives each run and the median.
    #[arg(long, default_value_t = 2)]
    repeat: u32,
    /// Give up on a drain after this many seconds.
    #[arg(long, default_value_t = 1800)]
    drain_timeout_secs: u64,
    /// The producer binary (release build).
    #[arg(long, default_value_t = default_producer())]
    producer: String,
    /// Extra Debezium connector property, `key=value` (repeatable; overrides the defaults).
    #[arg(long = "debezium-prop", value_name = "KEY=VALUE")]
    debezium_props: Vec<String>,
    /// Extra Kafka Connect worker property, `key=value` (repeatable; overrides the defaults).
    #[arg(long = "debezium-worker-prop", value_name = "KEY=VALUE")]
    debezium_worker_props: Vec<String>,
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

/// A CDC engine under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineKind {
    /// paystream's producer.
    Paystream,
    /// Debezium's MariaDB connector in a Kafka Connect standalone worker.
    Debezium,
}

impl EngineKind {
    fn name(self) -> &'static str {
        match self {
            Self::Paystream => "paystream",
            Self::Debezium => "debezium",
        }
    }
}

/// Decodes the commit-side timestamp (microseconds since the epoch, the
/// DATETIME read as UTC) of the benchmark row in one change event.
type Decoder = fn(&[u8]) -> Option<i64>;

/// What the measurement code needs from an engine. Setup (users, grants,
/// topics, configuration) happens in each engine's constructor.
trait Engine {
    /// The Kafka topic with the change events of the benchmark table.
    fn table_topic(&self) -> String;
    /// Starts the engine's process; it resumes from its saved position.
    fn start(&mut self) -> anyhow::Result<()>;
    /// Fails when the engine's process exited or reported a fatal error.
    fn check(&mut self) -> anyhow::Result<()>;
    /// Blocks until everything up to `target` is in Kafka.
    fn wait_drained(&mut self, target: &DrainTarget, deadline: Duration) -> anyhow::Result<()>;
    /// The decoder of this engine's change events.
    fn decoder(&self) -> Decoder;
    /// `VmHWM` of the running process, KiB.
    fn peak_rss_kib(&self) -> Option<u64>;
    /// Stops the process gracefully (it saves its position).
    fn stop(&mut self) -> anyhow::Result<()>;
    /// Deletes what the engine created in Kafka (and MariaDB beyond the database).
    async fn cleanup(&mut self) -> anyhow::Result<()>;
    /// The engine's configuration, for the report.
    fn describe(&self) -> Value;
}

/// Where a drain is complete.
#[derive(Debug, Clone)]
struct DrainTarget {
    /// GTID sequence number of the last backlog transaction.
    last_seq: u64,
    /// Records the table topic holds once the backlog is in (non-transactional
    /// engines): the count before the drain plus the backlog rows.
    table_records: i64,
}

/// A child process of the benchmark: the producer or the Connect JVM.
struct Proc {
    child: Child,
    what: String,
    log: PathBuf,
}

impl Proc {
    fn spawn(cmd: &mut Command, what: &str, log: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let out = std::fs::File::create(log)?;
        let child = cmd
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        Ok(Self {
            child,
            what: what.to_owned(),
            log: log.to_owned(),
        })
    }

    fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        vm_hwm_kib(&status)
    }

    fn check(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); its log: {}",
                self.what,
                self.log.display()
            );
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `grace`.
    fn stop(&mut self, grace: Duration) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        let start = Instant::now();
        while start.elapsed() < grace {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop within {grace:?}; killing it", self.what);
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `VmHWM` in KiB from the text of `/proc/<pid>/status`.
fn vm_hwm_kib(status: &str) -> Option<u64> {
    crate::operator::proc_status_field(status, "VmHWM")
}

/// The highest sequence number in a GTID position (`0-1-42,1-2-7` -> 42).
fn seq_of(gtid_pos: &str) -> u64 {
    gtid_pos
        .split(',')
        .filter_map(|g| g.rsplit('-').next()?.trim().parse().ok())
        .max()
        .unwrap_or(0)
}

/// `a / b`, or NaN when either is missing.
fn ratio(a: f64, b: f64) -> f64 {
    if a.is_finite() && b.is_finite() && b != 0.0 {
        a / b
    } else {
        f64::NAN
    }
}

/// A JSON number, or null for NaN/infinity.
fn num(x: f64) -> Value {
    if x.is_finite() { json!(x) } else { Value::Null }
}

pub(crate) fn kafka_admin(stack: &Stack) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", &stack.kafka_bootstrap)
        .create()?)
}

/// Creates topics (replication 1, the local broker), failing on any error
/// other than "already exists".
async fn create_topics(stack: &Stack, topics: &[NewTopic<'_>]) -> anyhow::Result<()> {
    let admin = kafka_admin(stack)?;
    for r in admin.create_topics(topics, &AdminOptions::new()).await? {
        match r {
            Ok(_) => {}
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => bail!("creating topic {t}: {e}"),
        }
    }
    Ok(())
}

/// Deletes every topic whose name starts with `prefix`.
async fn delete_topics_with_prefix(stack: &Stack, prefix: &str) -> anyhow::Result<()> {
    let consumer = plain_consumer(stack)?;
    let md = consumer.fetch_metadata(None, Duration::from_secs(10))?;
    let names: Vec<String> = md
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    kafka_admin(stack)?
        .delete_topics(&refs, &AdminOptions::new())
        .await?;
    Ok(())
}

/// A `read_committed` consumer of the stack's Kafka with a fresh group.
pub(crate) fn plain_consumer(stack: &Stack) -> anyhow::Result<BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", &stack.kafka_bootstrap)
        .set("group.id", unique_name("bench"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .create()?)
}

/// The partitions of `topic`, waiting up to `deadline` for it to exist.
pub(crate) fn partitions(
    consumer: &BaseConsumer,
    topic: &str,
    deadline: Duration,
) -> anyhow::Result<Vec<i32>> {
    let start = Instant::now();
    loop {
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
        let ps: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if !ps.is_empty() {
            return Ok(ps);
        }
        if start.elapsed() > deadline {
            bail!("topic {topic} did not appear within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A `read_committed` consumer of every partition of `topic` from `from`
/// (`None`: each partition's current high watermark).
fn reader(stack: &Stack, topic: &str, from: Option<Offset>) -> anyhow::Result<BaseConsumer> {
    let consumer = plain_consumer(stack)?;
    let ps = partitions(&consumer, topic, Duration::from_secs(120))?;
    let mut tpl = TopicPartitionList::new();
    for p in ps {
        let offset = match from {
            Some(o) => o,
            None => Offset::Offset(
                consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(5))?
                    .1,
            ),
        };
        tpl.add_partition_offset(topic, p, offset)?;
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

/// Sum over partitions of the high watermarks of `topic`.
fn high_watermarks(consumer: &BaseConsumer, topic: &str, ps: &[i32]) -> anyhow::Result<i64> {
    let mut sum = 0;
    for &p in ps {
        sum += consumer
            .fetch_watermarks(topic, p, Duration::from_secs(5))?
            .1;
    }
    Ok(sum)
}

/// MariaDB's `NOW(6)` minus UTC, in microseconds (0 on a UTC server): both
/// engines label DATETIME values as UTC, so latencies subtract this.
async fn tz_offset_us(c: &mut Conn) -> anyhow::Result<i64> {
    let off: i64 = c
        .query_first("SELECT TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), NOW(6))")
        .await?
        .context("time zone offset")?;
    // Whole seconds: the two calls above are not the same instant.
    Ok((off as f64 / 1e6).round() as i64 * 1_000_000)
}

/// Starts the engine, writes marker rows until one reaches its table topic,
/// and stops it: its saved position is then past the setup.
async fn prime<E: Engine>(engine: &mut E, stack: &Stack, db: &str) -> anyhow::Result<()> {
    engine.start()?;
    let consumer = reader(stack, &engine.table_topic(), Some(Offset::Beginning))?;
    let decode = engine.decoder();
    let mut c = admin(stack).await?;
    let start = Instant::now();
    let mut last_marker: Option<Instant> = None;
    let mut n = 0;
    loop {
        if last_marker.is_none_or(|t| t.elapsed() > Duration::from_secs(2)) {
            c.exec_drop(
                format!("INSERT INTO {db}.purchases (user_id, package_id, quantity, amount, currency, idempotency_key, created_at) VALUES (1, 1, 1, 0.00, 'EUR', ?, NOW(6))"),
                (format!("ready-{n}"),),
            )
            .await?;
            n += 1;
            last_marker = Some(Instant::now());
            engine.check()?;
        }
        if let Some(m) = consumer.poll(Duration::from_millis(100))
            && m?.payload().and_then(decode).is_some()
        {
            break;
        }
        if start.elapsed() > Duration::from_secs(300) {
            bail!("the engine did not stream a marker row within 5 minutes");
        }
    }
    engine.stop()
}

/// The backlog written for one point.
#[derive(Debug, Clone)]
struct Backlog {
    rows: u64,
    write_secs: f64,
    /// `SHOW MASTER STATUS` before the first backlog transaction.
    start_file: String,
    start_pos: u64,
    /// `@@gtid_binlog_pos` before the first backlog transaction.
    start_gtid: String,
    /// `@@last_gtid` of the last backlog transaction.
    last_gtid: String,
    /// Binlog bytes from the start to the end of the backlog.
    binlog_bytes: u64,
}

async fn master_status(c: &mut Conn) -> anyhow::Result<(String, u64)> {
    let row: mysql_async::Row = c
        .query_first("SHOW MASTER STATUS")
        .await?
        .context("SHOW MASTER STATUS returned nothing (binlog off?)")?;
    let file: String = row.get(0).context("binlog file")?;
    let pos: u64 = row.get(1).context("binlog position")?;
    Ok((file, pos))
}

/// Bytes between two binlog coordinates, given each file's size.
fn binlog_span(start: (&str, u64), end: (&str, u64), files: &[(String, u64)]) -> u64 {
    if start.0 == end.0 {
        return end.1.saturating_sub(start.1);
    }
    let mut bytes = 0;
    let mut inside = false;
    for (name, size) in files {
        if name == start.0 {
            inside = true;
            bytes += size.saturating_sub(start.1);
        } else if name == end.0 {
            bytes += end.1;
            break;
        } else if inside {
            bytes += size;
        }
    }
    bytes
}

async fn write_backlog(
    c: &mut Conn,
    db: &str,
    rows: u64,
    txn_rows: u64,
) -> anyhow::Result<Backlog> {
    let (start_file, start_pos) = master_status(c).await?;
    let start_gtid: String = c
        .query_first("SELECT @@gtid_binlog_pos")
        .await?
        .context("gtid")?;
    let t = Instant::now();
    let mut written = 0;
    while written < rows {
        let n = txn_rows.min(rows - written);
        c.query_drop(format!(
            "INSERT INTO {db}.purchases (user_id, package_id, quantity, amount, currency, status, idempotency_key, created_at) \
             SELECT 1 + seq % 1000, 1 + seq % 20, 1, 9.99, 'EUR', 'pending', CONCAT('b{written}-', seq), NOW(6) FROM {db}.seq_1_to_{n}"
        ))
        .await?;
        written += n;
    }
    let last_gtid: String = c
        .query_first("SELECT @@last_gtid")
        .await?
        .context("last gtid")?;
    let write_secs = t.elapsed().as_secs_f64();
    let (end_file, end_pos) = master_status(c).await?;
    let files: Vec<(String, u64)> = c
        .query::<mysql_async::Row, _>("SHOW BINARY LOGS")
        .await?
        .into_iter()
        .filter_map(|r| Some((r.get::<String, _>(0)?, r.get::<u64, _>(1)?)))
        .collect();
    let binlog_bytes = binlog_span((&start_file, start_pos), (&end_file, end_pos), &files);
    Ok(Backlog {
        rows,
        write_secs,
        start_file,
        start_pos,
        start_gtid,
        last_gtid,
        binlog_bytes,
    })
}

/// Open-loop latency run against the engine's table topic.
async fn latency_run(
    args: &Args,
    stack: &Stack,
    db: &str,
    topic: &str,
    decode: Decoder,
    tz_off_us: i64,
) -> anyhow::Result<Value> {
    let consumer = reader(stack, topic, None)?;
    let expected = args.rate * args.seconds;
    let writers_done = Arc::new(AtomicBool::new(false));
    let done = writers_done.clone();
    let started = Instant::now();
    let reading = std::thread::spawn(move || {
        let mut lat: Vec<(f64, f64)> = Vec::with_capacity(expected as usize);
        let mut done_at: Option<Instant> = None;
        while (lat.len() as u64) < expected {
            if done.load(Ordering::Relaxed) {
                // Stragglers get 30 s after the last write.
                if done_at.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(30) {
                    break;
                }
            }
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) {
                let seen_us = chrono::Utc::now().timestamp_micros();
                if let Some(created) = m.payload().and_then(decode) {
                    lat.push((
                        started.elapsed().as_secs_f64(),
                        (seen_us - (created - tz_off_us)) as f64 / 1000.0,
                    ));
                }
            }
        }
        lat
    });
    let writers = 4u64;
    let mut handles = Vec::new();
    let t0 = tokio::time::Instant::now();
    for w in 0..writers {
        let stack = stack.clone();
        let db = db.to_owned();
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
    let mut result = Ok(());
    for h in handles {
        if let Err(e) = h.await.map_err(anyhow::Error::from).and_then(|r| r) {
            result = Err(e);
        }
    }
    let achieved = expected as f64 / t0.elapsed().as_secs_f64();
    writers_done.store(true, Ordering::Relaxed);
    let timed = tokio::task::spawn_blocking(move || reading.join())
        .await?
        .map_err(|_| anyhow::anyhow!("latency reader panicked"))?;
    result?;
    let thirds = p99_by_third(&timed, args.seconds as f64);
    let mut lat: Vec<f64> = timed.into_iter().map(|(_, l)| l).collect();
    lat.sort_by(f64::total_cmp);
    Ok(json!({
        "target_rate": args.rate, "achieved_rate": achieved, "seconds": args.seconds,
        "expected": expected, "samples": lat.len(),
        "p50_ms": num(percentile(&lat, 50.0)), "p99_ms": num(percentile(&lat, 99.0)),
        "max_ms": num(percentile(&lat, 100.0)),
        "p99_ms_by_third": thirds.iter().map(|p| num(*p)).collect::<Vec<_>>(),
    }))
}

/// The p99 of the samples seen in each third of a run of `secs` seconds
/// (samples are `(seconds since the run began, latency)`; late stragglers
/// count in the last third), to tell a tail spread over the run from one
/// bunched at its start or end. Pure.
pub fn p99_by_third(samples: &[(f64, f64)], secs: f64) -> [f64; 3] {
    let mut thirds: [Vec<f64>; 3] = Default::default();
    for (at, lat) in samples {
        let i = ((at / (secs / 3.0)).floor().max(0.0) as usize).min(2);
        thirds[i].push(*lat);
    }
    thirds.map(|mut t| {
        t.sort_by(f64::total_cmp);
        percentile(&t, 99.0)
    })
}

/// One point: setup, backlog, ceiling, drain, latency, for one engine.
async fn measure<E: Engine>(
    engine: &mut E,
    args: &Args,
    stack: &Stack,
    db: &str,
    tz_off_us: i64,
) -> anyhow::Result<(Value, Value)> {
    prime(engine, stack, db).await?;

    let mut c = admin(stack).await?;
    eprintln!(
        "  backlog: {} rows in transactions of {}",
        args.rows, args.txn_rows
    );
    let backlog = write_backlog(&mut c, db, args.rows, args.txn_rows).await?;
    eprintln!(
        "  written in {:.1}s ({} binlog bytes); ceiling read with mariadb-binlog",
        backlog.write_secs, backlog.binlog_bytes
    );
    let ceiling = match ceiling::measure(stack, &backlog, db) {
        Ok(c) => {
            eprintln!(
                "  ceiling: raw {:.0} rows/s, decoded {:.0} rows/s",
                c["raw"]["rows_per_second"].as_f64().unwrap_or(f64::NAN),
                c["decoded"]["rows_per_second"].as_f64().unwrap_or(f64::NAN)
            );
            c
        }
        Err(e) => {
            eprintln!("  ceiling not measured: {e:#}");
            json!({"error": format!("{e:#}")})
        }
    };

    let topic = engine.table_topic();
    let counter = plain_consumer(stack)?;
    let ps = partitions(&counter, &topic, Duration::from_secs(60))?;
    let base = high_watermarks(&counter, &topic, &ps)?;
    let target = DrainTarget {
        last_seq: seq_of(&backlog.last_gtid),
        table_records: base + backlog.rows as i64,
    };

    // Drain, with a watcher for the first backlog record reaching Kafka.
    let drain_start = Instant::now();
    engine.start()?;
    let stop_watch = Arc::new(AtomicBool::new(false));
    let watching = {
        let stop = stop_watch.clone();
        let topic = topic.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match high_watermarks(&counter, &topic, &ps) {
                    Ok(n) if n > base => return Some(drain_start.elapsed().as_secs_f64()),
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            None
        })
    };
    let drained = engine.wait_drained(&target, Duration::from_secs(args.drain_timeout_secs));
    let drain_secs = drain_start.elapsed().as_secs_f64();
    stop_watch.store(true, Ordering::Relaxed);
    let first_secs = watching.join().ok().flatten();
    drained?;
    let drain_rss = engine.peak_rss_kib();
    let rows_per_sec = backlog.rows as f64 / drain_secs;
    let streaming = first_secs
        .map(|f| backlog.rows as f64 / (drain_secs - f).max(1e-3))
        .unwrap_or(f64::NAN);
    eprintln!(
        "  drained in {drain_secs:.1}s: {rows_per_sec:.0} rows/s ({streaming:.0} rows/s after the first record at {:.1}s)",
        first_secs.unwrap_or(f64::NAN)
    );

    eprintln!("  latency run: {} rows/s for {}s", args.rate, args.seconds);
    let latency = latency_run(args, stack, db, &topic, engine.decoder(), tz_off_us).await?;
    let peak_rss = engine.peak_rss_kib().or(drain_rss);
    engine.stop()?;
    eprintln!(
        "  latency p50 {} ms, p99 {} ms (by third of the run {}); peak RSS {:.1} MiB",
        latency["p50_ms"],
        latency["p99_ms"],
        latency["p99_ms_by_third"],
        peak_rss.unwrap_or(0) as f64 / 1024.0
    );

    let run = json!({
        "backlog": {
            "rows": backlog.rows, "txn_rows": args.txn_rows, "write_seconds": backlog.write_secs,
            "binlog_bytes": backlog.binlog_bytes,
            "drain_seconds": drain_secs, "rows_per_second": rows_per_sec,
            "first_record_seconds": first_secs, "streaming_rows_per_second": num(streaming),
            "peak_rss_kib_during_drain": drain_rss,
        },
        "latency": latency,
        "peak_rss_kib": peak_rss,
    });
    Ok((run, ceiling))
}

/// Sets up one engine in a fresh database, measures it, and cleans up.
async fn point(
    kind: EngineKind,
    args: &Args,
    stack: &Stack,
    tz_off_us: i64,
) -> anyhow::Result<(Value, Value, Value)> {
    let db = unique_name(match kind {
        EngineKind::Paystream => "bench_cdc",
        EngineKind::Debezium => "bench_dbz",
    });
    let mut c = admin(stack).await?;
    c.query_drop(format!("CREATE DATABASE {db}")).await?;
    c.query_drop(format!(
        "CREATE TABLE {db}.purchases LIKE payments.purchases"
    ))
    .await?;
    let result = async {
        match kind {
            EngineKind::Paystream => {
                let mut e = paystream::Paystream::setup(stack, &db, &args.producer).await?;
                let r = measure(&mut e, args, stack, &db, tz_off_us).await;
                let _ = e.stop();
                if let Err(err) = e.cleanup().await {
                    eprintln!("  cleanup: {err:#}");
                }
                r.map(|(run, ceiling)| (run, ceiling, e.describe()))
            }
            EngineKind::Debezium => {
                let mut e = debezium::Debezium::setup(
                    stack,
                    &db,
                    &args.debezium_props,
                    &args.debezium_worker_props,
                )
                .await?;
                let r = measure(&mut e, args, stack, &db, tz_off_us).await;
                let _ = e.stop();
                if let Err(err) = e.cleanup().await {
                    eprintln!("  cleanup: {err:#}");
                }
                r.map(|(run, ceiling)| (run, ceiling, e.describe()))
            }
        }
    }
    .await;
    c.query_drop(format!("DROP DATABASE {db}")).await?;
    result
}

/// A number at a JSON path of every run.
fn field(runs: &[Value], path: &[&str]) -> Vec<f64> {
    runs.iter()
        .filter_map(|r| {
            path.iter()
                .try_fold(r, |v, k| v.get(*k))
                .and_then(Value::as_f64)
        })
        .collect()
}

fn median_of(runs: &[Value], path: &[&str]) -> f64 {
    median(&field(runs, path))
}

/// Runs the CDC benchmark and writes its report.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.engines.is_empty() || args.repeat == 0 {
        bail!("nothing to measure: give --engines and --repeat >= 1");
    }
    let stack = Stack::from_env();
    let mut c = admin(&stack).await?;
    let tz_off_us = tz_offset_us(&mut c).await?;
    drop(c);

    let mut engines: Vec<EngineKind> = Vec::new();
    for e in &args.engines {
        if !engines.contains(e) {
            engines.push(*e);
        }
    }
    let mut runs: Vec<(EngineKind, Value)> = Vec::new();
    let mut ceilings: Vec<Value> = Vec::new();
    let mut configs = serde_json::Map::new();
    for r in 0..args.repeat {
        let mut order = engines.clone();
        if r % 2 == 1 {
            order.reverse();
        }
        for kind in order {
            eprintln!("[{}/{}] {}", r + 1, args.repeat, kind.name());
            let (run, ceiling, config) = point(kind, &args, &stack, tz_off_us).await?;
            runs.push((kind, run));
            if ceiling.get("error").is_none() {
                ceilings.push(ceiling);
            }
            configs.insert(kind.name().to_owned(), config);
        }
    }

    let runs_of = |k: EngineKind| -> Vec<Value> {
        runs.iter()
            .filter(|(kind, _)| *kind == k)
            .map(|(_, v)| v.clone())
            .collect()
    };
    let mut engines_json = serde_json::Map::new();
    let mut med = std::collections::BTreeMap::new();
    for &k in &engines {
        let rs = runs_of(k);
        let m = Medians {
            rows_per_second: median_of(&rs, &["backlog", "rows_per_second"]),
            streaming_rows_per_second: median_of(&rs, &["backlog", "streaming_rows_per_second"]),
            drain_seconds: median_of(&rs, &["backlog", "drain_seconds"]),
            first_record_seconds: median_of(&rs, &["backlog", "first_record_seconds"]),
            p50_ms: median_of(&rs, &["latency", "p50_ms"]),
            p99_ms: median_of(&rs, &["latency", "p99_ms"]),
            max_ms: median_of(&rs, &["latency", "max_ms"]),
            peak_rss_kib: median_of(&rs, &["peak_rss_kib"]),
            drain_rss_kib: median_of(&rs, &["backlog", "peak_rss_kib_during_drain"]),
        };
        engines_json.insert(
            k.name().to_owned(),
            json!({
                "config": configs.get(k.name()).cloned().unwrap_or(Value::Null),
                "median": m.to_json(),
                "runs": rs,
            }),
        );
        med.insert(k.name(), m);
    }
    let ceiling_med = json!({
        "raw_rows_per_second": num(median_of(&ceilings, &["raw", "rows_per_second"])),
        "raw_mib_per_second": num(median_of(&ceilings, &["raw", "mib_per_second"])),
        "decoded_rows_per_second": num(median_of(&ceilings, &["decoded", "rows_per_second"])),
    });
    let ceiling_raw = median_of(&ceilings, &["raw", "rows_per_second"]);
    let ceiling_decoded = median_of(&ceilings, &["decoded", "rows_per_second"]);

    let ps = med.get("paystream");
    let dz = med.get("debezium");
    let both = ps.zip(dz);
    let r = |f: fn(&Medians) -> f64| both.map(|(p, d)| ratio(f(p), f(d))).unwrap_or(f64::NAN);
    let ratios = json!({
        "paystream_over_debezium": {
            "rows_per_second": num(r(|m| m.rows_per_second)),
            "streaming_rows_per_second": num(r(|m| m.streaming_rows_per_second)),
            "p50_ms": num(r(|m| m.p50_ms)),
            "p99_ms": num(r(|m| m.p99_ms)),
            "peak_rss_kib": num(r(|m| m.peak_rss_kib)),
        },
        "paystream_over_ceiling": {
            "raw_rows_per_second": num(ps.map(|p| ratio(p.streaming_rows_per_second, ceiling_raw)).unwrap_or(f64::NAN)),
            "decoded_rows_per_second": num(ps.map(|p| ratio(p.streaming_rows_per_second, ceiling_decoded)).unwrap_or(f64::NAN)),
        },
        "debezium_over_ceiling": {
            "raw_rows_per_second": num(dz.map(|d| ratio(d.streaming_rows_per_second, ceiling_raw)).unwrap_or(f64::NAN)),
            "decoded_rows_per_second": num(dz.map(|d| ratio(d.streaming_rows_per_second, ceiling_decoded)).unwrap_or(f64::NAN)),
        },
        "how_to_read": "paystream divided by the other; rows/s above 1 and latency or RSS below 1 favour paystream. Ceiling ratios use streaming rows/s (after the first record) against mariadb-binlog reading the same binlog range.",
    });

    // The top level keeps the single-engine shape: paystream's medians (or the
    // first engine's when paystream is not measured).
    let lead = ps.or_else(|| med.values().next());
    let lead_json = lead.map(Medians::to_json).unwrap_or(Value::Null);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let json = json!({
        "benchmark": "cdc",
        "date": chrono::Utc::now().to_rfc3339(),
        "machine": {"cores": cores},
        "backlog": {"rows": args.rows, "txn_rows": args.txn_rows,
                     "drain_seconds": lead_json["drain_seconds"].clone(),
                     "rows_per_second": lead_json["rows_per_second"].clone(),
                     "peak_rss_kib_during_drain": lead_json["drain_rss_kib"].clone()},
        "latency": {"target_rate": args.rate, "seconds": args.seconds,
                     "p50_ms": lead_json["p50_ms"].clone(), "p99_ms": lead_json["p99_ms"].clone(),
                     "max_ms": lead_json["max_ms"].clone()},
        "peak_rss_kib": lead_json["peak_rss_kib"].clone(),
        "repeat": args.repeat,
        "engines": engines_json,
        "ceiling": {"tool": ceiling::DESCRIPTION, "median": ceiling_med, "runs": ceilings},
        "ratios": ratios,
    });
    let order: Vec<&str> = engines.iter().map(|k| k.name()).collect();
    let md = markdown(&args, cores, &order, &med, &json);
    let (j, m) = write("cdc", &json, &md)?;
    println!("{md}\nwritten: {} and {}", j.display(), m.display());
    Ok(())
}

/// The medians of one engine over its runs.
struct Medians {
    rows_per_second: f64,
    streaming_rows_per_second: f64,
    drain_seconds: f64,
    first_record_seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    peak_rss_kib: f64,
    drain_rss_kib: f64,
}

impl Medians {
    fn to_json(&self) -> Value {
        json!({
            "rows_per_second": num(self.rows_per_second),
            "streaming_rows_per_second": num(self.streaming_rows_per_second),
            "drain_seconds": num(self.drain_seconds),
            "first_record_seconds": num(self.first_record_seconds),
            "p50_ms": num(self.p50_ms), "p99_ms": num(self.p99_ms), "max_ms": num(self.max_ms),
            "peak_rss_kib": num(self.peak_rss_kib), "drain_rss_kib": num(self.drain_rss_kib),
        })
    }
}

fn fmt(x: f64, digits: usize) -> String {
    if x.is_finite() {
        format!("{x:.digits$}")
    } else {
        "n/a".to_owned()
    }
}

fn fmt_ratio(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}x")
    } else {
        "n/a".to_owned()
    }
}

fn markdown(
    args: &Args,
    cores: usize,
    names: &[&str],
    med: &std::collections::BTreeMap<&str, Medians>,
    json: &Value,
) -> String {
    let both = med.contains_key("paystream") && med.contains_key("debezium");
    let mut s = format!(
        "# CDC benchmark: paystream against Debezium\n\n\
         Machine: {cores} cores, the local stack on loopback (MariaDB 10.11, Kafka 4.4), \
         release producer, {}. Backlog: {} rows in transactions of {}, one per engine; \
         latency: {} rows/s for {} s, open loop. Medians of {} run(s) per engine.\n\n",
        debezium::DESCRIPTION,
        args.rows,
        args.txn_rows,
        args.rate,
        args.seconds,
        args.repeat
    );
    s.push_str("| measure |");
    for n in names {
        s.push_str(&format!(" {n} |"));
    }
    if both {
        s.push_str(" paystream / debezium |");
    }
    s.push_str("\n| --- |");
    for _ in names {
        s.push_str(" --- |");
    }
    if both {
        s.push_str(" --- |");
    }
    s.push('\n');
    type Row = (&'static str, fn(&Medians) -> f64, usize, f64);
    let rows: [Row; 8] = [
        (
            "**drain rate** (rows/s, from process start)",
            |m| m.rows_per_second,
            0,
            1.0,
        ),
        (
            "streaming rate (rows/s, after the first record)",
            |m| m.streaming_rows_per_second,
            0,
            1.0,
        ),
        ("drain time (s)", |m| m.drain_seconds, 1, 1.0),
        (
            "start to first record in Kafka (s)",
            |m| m.first_record_seconds,
            1,
            1.0,
        ),
        ("**commit-to-Kafka p50** (ms)", |m| m.p50_ms, 1, 1.0),
        ("**commit-to-Kafka p99** (ms)", |m| m.p99_ms, 1, 1.0),
        ("latency max (ms)", |m| m.max_ms, 1, 1.0),
        ("**peak RSS** (MiB)", |m| m.peak_rss_kib, 1, 1.0 / 1024.0),
    ];
    for (label, f, digits, scale) in rows {
        s.push_str(&format!("| {label} |"));
        for n in names {
            s.push_str(&format!(" {} |", fmt(f(&med[n]) * scale, digits)));
        }
        if both {
            s.push_str(&format!(
                " {} |",
                fmt_ratio(ratio(f(&med["paystream"]), f(&med["debezium"])))
            ));
        }
        s.push('\n');
    }
    if both {
        s.push_str(
            "\nThe ratio is paystream's figure divided by Debezium's: above 1 favours paystream \
             for rates, below 1 favours it for times, latency and memory.\n",
        );
    }
    let c = &json["ceiling"]["median"];
    let ratios = &json["ratios"];
    s.push_str(&format!(
        "\n**Ceiling** (`mariadb-binlog` reading the same backlog's binlog range from the server, \
         no engine running): raw transfer {} rows/s ({} MiB/s); decoded to text {} rows/s. \
         paystream streams at {} of the raw ceiling ({} of the decoded one); Debezium at {} ({}).\n",
        fmt(c["raw_rows_per_second"].as_f64().unwrap_or(f64::NAN), 0),
        fmt(c["raw_mib_per_second"].as_f64().unwrap_or(f64::NAN), 1),
        fmt(c["decoded_rows_per_second"].as_f64().unwrap_or(f64::NAN), 0),
        fmt_ratio(ratios["paystream_over_ceiling"]["raw_rows_per_second"].as_f64().unwrap_or(f64::NAN)),
        fmt_ratio(ratios["paystream_over_ceiling"]["decoded_rows_per_second"].as_f64().unwrap_or(f64::NAN)),
        fmt_ratio(ratios["debezium_over_ceiling"]["raw_rows_per_second"].as_f64().unwrap_or(f64::NAN)),
        fmt_ratio(ratios["debezium_over_ceiling"]["decoded_rows_per_second"].as_f64().unwrap_or(f64::NAN)),
    ));

    if both {
        let p = &med["paystream"];
        let d = &med["debezium"];
        let mut behind = Vec::new();
        if p.rows_per_second < d.rows_per_second {
            behind.push("drain rate from process start");
        }
        if p.streaming_rows_per_second < d.streaming_rows_per_second {
            behind.push("streaming rate");
        }
        if p.p50_ms > d.p50_ms {
            behind.push("latency p50");
        }
        if p.p99_ms > d.p99_ms {
            behind.push("latency p99");
        }
        if p.peak_rss_kib > d.peak_rss_kib {
            behind.push("peak RSS");
        }
        s.push_str("\n**Where paystream is behind** in this run: ");
        if behind.is_empty() {
            s.push_str("nowhere against Debezium");
        } else {
            s.push_str(&behind.join(", "));
        }
        s.push_str(&format!(
            "; against the raw binlog read it reaches {} of the ceiling, which is the headroom left.\n",
            fmt_ratio(ratios["paystream_over_ceiling"]["raw_rows_per_second"].as_f64().unwrap_or(f64::NAN))
        ));
    }

    if args.repeat > 1 {
        s.push_str("\n## Each run\n\n| engine | run | drain rows/s | streaming rows/s | p50 ms | p99 ms | peak RSS MiB |\n| --- | --- | --- | --- | --- | --- | --- |\n");
        for n in names {
            if let Some(rs) = json["engines"][n]["runs"].as_array() {
                for (i, r) in rs.iter().enumerate() {
                    let g = |p: &[&str]| {
                        p.iter()
                            .try_fold(r, |v, k| v.get(*k))
                            .and_then(Value::as_f64)
                            .unwrap_or(f64::NAN)
                    };
                    s.push_str(&format!(
                        "| {n} | {} | {} | {} | {} | {} | {} |\n",
                        i + 1,
                        fmt(g(&["backlog", "rows_per_second"]), 0),
                        fmt(g(&["backlog", "streaming_rows_per_second"]), 0),
                        fmt(g(&["latency", "p50_ms"]), 1),
                        fmt(g(&["latency", "p99_ms"]), 1),
                        fmt(g(&["peak_rss_kib"]) / 1024.0, 1),
                    ));
                }
            }
        }
    }

    s.push_str(
        "\n## How to read it\n\n\
         - **Drain rate**: a stopped engine, a backlog written meanwhile, then rows per second \
           from starting the engine's process to the whole backlog being in Kafka (paystream: \
           its checkpoint covers the last backlog transaction, events committed; Debezium: the \
           table topic holds every backlog row). It includes start-up, which weighs on a JVM; \
           the streaming rate excludes it (from the first backlog record in Kafka to the last).\n\
         - **Latency**: from the row's own `NOW(6)` inside its INSERT to a `read_committed` \
           consumer receiving it; includes the Kafka commit (paystream's transactions) or the \
           producer's linger (Debezium), and the consumer's fetch.\n\
         - **Peak RSS**: `VmHWM` of the producer process, or of the Kafka Connect JVM running \
           Debezium (heap `-Xms256M -Xmx2G`, Kafka's stock Connect settings): a JVM's RSS is \
           mostly its heap sizing, not its working set.\n\
         - **Ceiling**: `mariadb-binlog --read-from-remote-server` over the same binlog range: \
           raw (`--raw`, bytes to a file) is the transfer ceiling, decoded \
           (`--base64-output=decode-rows --verbose`) also turns every row into text.\n\
         - Both engines run alone (never at the same time) on the same MariaDB and Kafka; each \
           gets its own backlog of the same shape. Figures from a shared 2-core machine are \
           noisy: compare the ratios, measured in the same run, and use `--repeat`.\n\
         - Configuration of both engines and each run's figures are in the JSON file next to \
           this one; `docs/benchmarks.md` explains the Debezium setup.\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p99_is_taken_per_third_of_the_run() {
        // 15 s run: a slow start, a quiet middle, and a straggler after the end.
        let mut samples: Vec<(f64, f64)> = (0..100).map(|i| (i as f64 * 0.05, 90.0)).collect();
        samples.extend((0..100).map(|i| (5.0 + i as f64 * 0.05, 10.0)));
        samples.extend((0..50).map(|i| (10.0 + i as f64 * 0.05, 20.0)));
        samples.push((16.0, 40.0));
        assert_eq!(p99_by_third(&samples, 15.0), [90.0, 10.0, 40.0]);
        assert!(p99_by_third(&[], 15.0).iter().all(|p| p.is_nan()));
    }

    #[test]
    fn vm_hwm_is_read_from_proc_status() {
        let status = "Name:\tjava\nVmPeak:\t 9 kB\nVmHWM:\t  1205388 kB\nVmRSS:\t 1 kB\n";
        assert_eq!(vm_hwm_kib(status), Some(1_205_388));
        assert_eq!(vm_hwm_kib("Name:\tx\n"), None);
    }

    #[test]
    fn gtid_sequence_is_the_highest() {
        assert_eq!(seq_of("0-1-38234"), 38234);
        assert_eq!(seq_of("0-1-42,1-2-7"), 42);
        assert_eq!(seq_of(""), 0);
    }

    #[test]
    fn ratios_guard_missing_values() {
        assert_eq!(ratio(10.0, 4.0), 2.5);
        assert!(ratio(1.0, 0.0).is_nan());
        assert!(ratio(f64::NAN, 2.0).is_nan());
        assert_eq!(num(f64::NAN), Value::Null);
    }

    #[test]
    fn binlog_span_within_and_across_files() {
        let files = vec![
            ("b.000001".to_owned(), 1000),
            ("b.000002".to_owned(), 5000),
            ("b.000003".to_owned(), 300),
        ];
        assert_eq!(
            binlog_span(("b.000002", 100), ("b.000002", 900), &files),
            800
        );
        assert_eq!(
            binlog_span(("b.000001", 400), ("b.000003", 200), &files),
            600 + 5000 + 200
        );
    }

    #[test]
    fn json_fields_of_runs() {
        let runs = vec![
            json!({"latency": {"p50_ms": 3.0}}),
            json!({"latency": {"p50_ms": 1.0}}),
            json!({"latency": {}}),
        ];
        assert_eq!(field(&runs, &["latency", "p50_ms"]), vec![3.0, 1.0]);
        assert_eq!(median_of(&runs, &["latency", "p50_ms"]), 2.0);
    }
}
