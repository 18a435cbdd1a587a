//! The rebuild benchmark: how fast the consumer rebuilds the Redis read
//! model from the change topics after Redis lost its data, next to a ceiling
//! measured in the same run: a bare `read_committed` client reading the same
//! topics from their beginning (what Kafka and librdkafka alone allow here).
//!
//! It seeds `--rows` purchases into a scratch database, runs the release
//! producer, and a consumer whose read model lives in a private Redis (no
//! persistence, nothing else on it). Once the model is complete it repeats,
//! `--repeat` times: the ceiling read, then FLUSHALL and the time until the
//! consumer's marks say the model is complete again. The replay rate is the
//! records the consumer read meanwhile (its `records_total` counter) over the
//! time from its first replay to complete; the time from the flush, which
//! also holds noticing the loss (up to one check interval), is reported
//! beside it. Everything it created is removed at the end.

use std::time::Duration;

use anyhow::{Context, bail};
use mysql_async::prelude::*;
use paystream_core::readmodel::{Keys, ModelStatus, model_status};
use paystream_testkit::cdc::Scratch;
use paystream_testkit::process::Service;
use paystream_testkit::redis_server::RedisServer;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::{Value as Json, json};
use tokio::time::Instant;

use crate::cdc::{partitions, plain_consumer};
use crate::freshness::{clear_kafka, ready, release_bin};
use crate::report::{median, write};

/// Rebuild benchmark flags.
#[derive(clap::Args)]
pub struct Args {
    /// Purchases in the model.
    #[arg(long, default_value_t = 200_000)]
    rows: u64,
    /// Users owning them.
    #[arg(long, default_value_t = 20_000)]
    users: u64,
    /// Rebuilds measured (each after a ceiling read).
    #[arg(long, default_value_t = 3)]
    repeat: u32,
    /// The producer binary (release build).
    #[arg(long, default_value_t = release_bin("paystream-producer"))]
    producer: String,
    /// The consumer binary (release build).
    #[arg(long, default_value_t = release_bin("paystream-consumer"))]
    consumer: String,
    /// An extra consumer flag, e.g. `--consumer-arg=--batch-max-records=5000`.
    #[arg(long = "consumer-arg", allow_hyphen_values = true)]
    consumer_args: Vec<String>,
}

/// The records a rebuild is expected to reach, per second (issue 19).
const TARGET_PER_SEC: f64 = 50_000.0;

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.rows == 0 || args.users == 0 || args.repeat == 0 {
        bail!("--rows, --users and --repeat must be positive");
    }
    let scratch = Scratch::new("rebuild").await;
    let result = tokio::select! {
        r = measure(&args, &scratch) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if let Err(e) = clear_kafka(&scratch).await {
        eprintln!("rebuild: could not remove the Kafka topics: {e}");
    }
    scratch.drop().await;
    let json = result?;
    let md = markdown(&json);
    let (j, m) = write("rebuild", &json, &md)?;
    println!("{md}\nwritten: {} and {}", j.display(), m.display());
    Ok(())
}

async fn seed(scratch: &Scratch, rows: u64, users: u64) -> anyhow::Result<()> {
    let mut c = scratch.conn().await;
    c.query_drop(format!(
        "INSERT INTO users (id, email, display_name) \
         SELECT seq, CONCAT('r', seq, '@rebuild.paystream'), 'rebuild' FROM seq_1_to_{users}"
    ))
    .await?;
    c.query_drop(
        "INSERT INTO packages (id, code, name, price, currency) VALUES (1, 'rb', 'Rebuild pack', 4.50, 'EUR')",
    )
    .await?;
    let mut done = 0;
    while done < rows {
        let n = (rows - done).min(20_000);
        c.query_drop(format!(
            "INSERT INTO purchases (user_id, package_id, quantity, amount, currency, idempotency_key) \
             SELECT 1 + (seq + {done}) % {users}, 1, 1 + seq % 3, 4.50, 'EUR', CONCAT('rb-', seq + {done}) \
             FROM seq_1_to_{n}"
        ))
        .await?;
        done += n;
    }
    Ok(())
}

struct Run {
    producer: Service,
    consumer: Service,
    redis: RedisServer,
    keys: Keys,
    topics: Vec<String>,
}

impl Run {
    async fn status(&self) -> anyhow::Result<ModelStatus> {
        let client = redis::Client::open(self.redis.url(0))?;
        let mut c = client.get_multiplexed_async_connection().await?;
        let fields: std::collections::BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.meta_offsets())
            .query_async(&mut c)
            .await?;
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        Ok(model_status(&fields, &topics))
    }

    async fn records(&self) -> f64 {
        self.consumer
            .metric("paystream_consumer_records_total")
            .await
            .unwrap_or(0.0)
    }
}

async fn start(args: &Args, scratch: &Scratch) -> anyhow::Result<Run> {
    let quiet = [("PAYSTREAM_LOG", "warn")];
    let mut producer = Service::spawn(
        &format!("{}-producer", scratch.prefix),
        std::path::Path::new(&args.producer),
        &scratch.producer_args(&[]),
        &quiet,
    );
    ready("producer", &mut producer).await?;
    let redis = RedisServer::start().await;
    let group = format!("{}-consumer", scratch.prefix);
    let mut flags: Vec<String> = [
        "--topic-prefix",
        &scratch.prefix,
        "--database",
        &scratch.db,
        "--group-id",
        &group,
        "--kafka-bootstrap",
        &scratch.stack.kafka_bootstrap,
        "--redis-url",
        &redis.url(0),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    flags.extend(args.consumer_args.iter().cloned());
    let mut consumer = Service::spawn(&group, std::path::Path::new(&args.consumer), &flags, &quiet);
    ready("consumer", &mut consumer).await?;
    let keys = Keys::new(&scratch.prefix).map_err(|e| anyhow::anyhow!("key prefix {e:?}"))?;
    let topics = vec![scratch.topic("purchases"), scratch.topic("packages")];
    Ok(Run {
        producer,
        consumer,
        redis,
        keys,
        topics,
    })
}

/// Polls every 20 ms until the model is complete and the consumer has read
/// at least `records`; returns when the consumer's first replay was seen
/// (if `since_rebuilds` is given) and when the model turned complete.
async fn until_complete(
    run: &Run,
    records: f64,
    since_rebuilds: Option<f64>,
    deadline: Duration,
) -> anyhow::Result<(Option<Instant>, Instant)> {
    let started = Instant::now();
    let mut replaying = None;
    loop {
        if let (None, Some(before)) = (replaying, since_rebuilds) {
            let now = run
                .consumer
                .metric("paystream_consumer_rebuilds_total")
                .await;
            if now.is_some_and(|n| n > before) {
                replaying = Some(Instant::now());
            }
        }
        if run.status().await? == ModelStatus::Complete && run.records().await >= records {
            return Ok((replaying, Instant::now()));
        }
        if started.elapsed() > deadline {
            bail!(
                "the model was not complete after {deadline:?}; consumer log {}",
                run.consumer.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads every partition of `topics` from its beginning to its current end
/// with a bare `read_committed` client; returns (records, seconds).
fn ceiling_read(stack: &paystream_testkit::Stack, topics: &[String]) -> anyhow::Result<(u64, f64)> {
    let c: BaseConsumer = plain_consumer(stack)?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = std::collections::HashMap::new();
    for t in topics {
        for p in partitions(&c, t, Duration::from_secs(30))? {
            let (low, high) = c.fetch_watermarks(t, p, Duration::from_secs(10))?;
            if high > low {
                tpl.add_partition_offset(t, p, Offset::Beginning)?;
                ends.insert((t.clone(), p), high);
            }
        }
    }
    c.assign(&tpl)?;
    let started = std::time::Instant::now();
    let mut records = 0u64;
    while !ends.is_empty() {
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the ceiling read did not reach the ends: {ends:?}");
        }
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            use rdkafka::message::Message;
            let m = m.context("ceiling read")?;
            records += 1;
            let key = (m.topic().to_string(), m.partition());
            if ends.get(&key).is_some_and(|end| m.offset() + 1 >= *end) {
                ends.remove(&key);
            }
            continue;
        }
        // Nothing came: a partition whose last offsets are commit markers
        // ends at its position (asked only here: it costs a lock each time).
        let positions = c.position()?;
        ends.retain(|(t, p), end| {
            !matches!(positions.find_partition(t, *p).map(|e| e.offset()),
                Some(Offset::Offset(o)) if o >= *end)
        });
    }
    Ok((records, started.elapsed().as_secs_f64()))
}

async fn measure(args: &Args, scratch: &Scratch) -> anyhow::Result<Json> {
    eprintln!(
        "rebuild: database {}, prefix {}",
        scratch.db, scratch.prefix
    );
    seed(scratch, args.rows, args.users).await?;
    let run = start(args, scratch).await?;
    let built = Instant::now();
    until_complete(&run, args.rows as f64, None, Duration::from_secs(900)).await?;
    eprintln!(
        "rebuild: first build in {:.1} s",
        built.elapsed().as_secs_f64()
    );
    let mut rounds = Vec::new();
    for i in 0..args.repeat {
        let (stack, topics) = (scratch.stack.clone(), run.topics.clone());
        let (ceil_records, ceil_secs) =
            tokio::task::spawn_blocking(move || ceiling_read(&stack, &topics)).await??;
        let before = run.records().await;
        let rebuilds = run
            .consumer
            .metric("paystream_consumer_rebuilds_total")
            .await
            .unwrap_or(0.0);
        let client = redis::Client::open(run.redis.url(0))?;
        let mut c = client.get_multiplexed_async_connection().await?;
        let flushed = Instant::now();
        redis::cmd("FLUSHALL").query_async::<()>(&mut c).await?;
        let (replaying, complete) = until_complete(
            &run,
            before + ceil_records as f64 * 0.9,
            Some(rebuilds),
            Duration::from_secs(900),
        )
        .await?;
        let read = run.records().await - before;
        let replay_secs = complete
            .duration_since(replaying.unwrap_or(flushed))
            .as_secs_f64();
        let round = json!({
            "round": i + 1,
            "records": read,
            "replay_secs": replay_secs,
            "from_flush_secs": complete.duration_since(flushed).as_secs_f64(),
            "records_per_sec": read / replay_secs.max(1e-9),
            "ceiling_records": ceil_records,
            "ceiling_secs": ceil_secs,
            "ceiling_records_per_sec": ceil_records as f64 / ceil_secs.max(1e-9),
        });
        eprintln!("rebuild: {round}");
        rounds.push(round);
    }
    let rate = median(&field(&rounds, "records_per_sec"));
    let ceiling = median(&field(&rounds, "ceiling_records_per_sec"));
    drop(run.producer);
    Ok(json!({
        "benchmark": "rebuild",
        "measured": chrono::Utc::now().to_rfc3339(),
        "rows": args.rows,
        "users": args.users,
        "consumer_args": args.consumer_args,
        "rounds": rounds,
        "median_records_per_sec": rate,
        "median_ceiling_records_per_sec": ceiling,
        "ratio_to_ceiling": rate / ceiling,
        "target_records_per_sec": TARGET_PER_SEC,
        "ratio_to_target": rate / TARGET_PER_SEC,
        "median_from_flush_secs": median(&field(&rounds, "from_flush_secs")),
    }))
}

fn field(rounds: &[Json], name: &str) -> Vec<f64> {
    rounds.iter().filter_map(|r| r[name].as_f64()).collect()
}

fn markdown(j: &Json) -> String {
    let num = |k: &str| j[k].as_f64().unwrap_or(f64::NAN);
    let mut md = format!(
        "# Rebuild of the read model after Redis lost its data\n\n\
         {} purchases of {} users; measured {}.\n\n\
         | | records/s | ratio |\n|---|---:|---:|\n\
         | consumer replay (median) | {:.0} | |\n\
         | ceiling: bare read_committed read of the same topics | {:.0} | {:.2} of it |\n\
         | target | {:.0} | {:.2} of it |\n\n\
         From FLUSHALL to a complete model (median, includes noticing the loss): {:.2} s.\n\n\
         | round | records | replay s | from flush s | records/s | ceiling records/s |\n\
         |---:|---:|---:|---:|---:|---:|\n",
        j["rows"],
        j["users"],
        j["measured"].as_str().unwrap_or("?"),
        num("median_records_per_sec"),
        num("median_ceiling_records_per_sec"),
        num("ratio_to_ceiling"),
        num("target_records_per_sec"),
        num("ratio_to_target"),
        num("median_from_flush_secs"),
    );
    for r in j["rounds"].as_array().into_iter().flatten() {
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        md.push_str(&format!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} |\n",
            r["round"],
            f("records"),
            f("replay_secs"),
            f("from_flush_secs"),
            f("records_per_sec"),
            f("ceiling_records_per_sec")
        ));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_the_ratios() {
        let j = json!({
            "rows": 10, "users": 2, "measured": "t",
            "median_records_per_sec": 25_000.0, "median_ceiling_records_per_sec": 100_000.0,
            "ratio_to_ceiling": 0.25, "target_records_per_sec": 50_000.0, "ratio_to_target": 0.5,
            "median_from_flush_secs": 1.5,
            "rounds": [{"round": 1, "records": 10.0, "replay_secs": 0.5, "from_flush_secs": 1.5,
                        "records_per_sec": 20.0, "ceiling_records_per_sec": 40.0}],
        });
        let md = markdown(&j);
        assert!(md.contains("| consumer replay (median) | 25000 |"), "{md}");
        assert!(md.contains("| 100000 | 0.25 of it |"), "{md}");
        assert!(md.contains("| 50000 | 0.50 of it |"), "{md}");
        assert!(md.contains("| 1 | 10 | 0.50 | 1.50 | 20 | 40 |"), "{md}");
        assert_eq!(
            field(j["rounds"].as_array().unwrap(), "records"),
            vec![10.0]
        );
    }
}
