//! The freshness benchmark: how long after MariaDB acknowledges a commit the
//! change is visible through the payment API, at sustained write rates. It
//! creates its own database, topic prefix, consumer group and Redis key
//! prefix, starts the release producer, consumer and API as child processes,
//! seeds `--rows` purchases and waits until the read model serves all of
//! them, then writes open-loop (each write is scheduled by the clock, not by
//! the previous reply; `--writers` connections) at each `--rates` value for
//! `--seconds`, `--repeat` times, interleaving the rates. Most writes UPDATE
//! an existing purchase (visible when `GET /v1/purchases/{id}` returns the
//! new version in its `ETag`); `--insert-percent` INSERT a new purchase
//! (visible when the owner's list, served from Redis, contains it). About
//! `--samples-per-sec` writes per second are followed: each followed change
//! is read through the API right after its commit is acknowledged, again
//! whenever Redis reports (client-side tracking, `CLIENT TRACKING ON BCAST`)
//! that the consumer touched its key, and every `--poll-ms` in any case; the
//! latency is commit-ack to the first API response carrying the change, so
//! it is an upper bound whose error is about one API round trip (reported).
//! Everything it created is removed at the end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::header::{AUTHORIZATION, ETAG};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mysql_async::Conn;
use mysql_async::prelude::*;
use paystream_core::readmodel::Keys;
use paystream_testkit::cdc::Scratch;
use paystream_testkit::process::{Service, free_port};
use paystream_testkit::{Stack, repo_root, unique_name, wait_for};
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use redis::{AsyncConnectionConfig, PushInfo, PushKind, Value};
use serde_json::{Value as Json, json};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::cdc::{partitions, plain_consumer};
use crate::mysql::admin;
use crate::report::{percentile, write};

/// HS256 secret shared by the benchmark's API and its token.
const SECRET: &str = "bench-freshness-secret-0123456789abcdef-0";

/// Freshness benchmark parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Sustained write rates, rows per second (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    rates: Vec<u64>,
    /// Seconds of writing per rate and repetition.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Repetitions of every rate (interleaved: 1k, 5k, 1k, 5k, ...).
    #[arg(long, default_value_t = 2)]
    repeat: u32,
    /// Purchases seeded (and kept in the read model) before writing.
    #[arg(long, default_value_t = 20_000)]
    rows: u64,
    /// Users owning them.
    #[arg(long, default_value_t = 1_000)]
    users: u64,
    /// MariaDB connections writing (each owns a share of rows and users).
    #[arg(long, default_value_t = 32)]
    writers: u64,
    /// Percentage of writes that INSERT a purchase; the rest UPDATE one.
    #[arg(long, default_value_t = 10)]
    insert_percent: u64,
    /// Followed (sampled) writes per second, spread over all writers.
    #[arg(long, default_value_t = 200)]
    samples_per_sec: u64,
    /// Poll interval per followed change, milliseconds (besides the wake-up
    /// on Redis's invalidation when `--tracking` is on).
    #[arg(long, default_value_t = 20)]
    poll_ms: u64,
    /// Wake a follower when Redis reports its key changed (client tracking).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    tracking: bool,
    /// Seconds of writing at the first rate before measuring (not reported).
    #[arg(long, default_value_t = 5)]
    warmup_secs: u64,
    /// Give up on a followed change after this many seconds (counted missing).
    #[arg(long, default_value_t = 30)]
    give_up_secs: u64,
    /// The producer binary (release build).
    #[arg(long, default_value_t = release_bin("paystream-producer"))]
    producer: String,
    /// The consumer binary (release build).
    #[arg(long, default_value_t = release_bin("paystream-consumer"))]
    consumer: String,
    /// The API binary (release build).
    #[arg(long, default_value_t = release_bin("paystream-api"))]
    api: String,
}

pub(crate) fn release_bin(name: &str) -> String {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| {
        format!(
            "{}/.cache/paystream/target",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    format!("{target}/release/{name}")
}

// ---- Pure helpers -----------------------------------------------------------

/// Whether write number `g` (global, from 0) is an INSERT: spreads
/// `percent` inserts evenly over every hundred writes.
fn is_insert(g: u64, percent: u64) -> bool {
    let p = percent.min(100);
    (g + 1) * p / 100 != g * p / 100
}

/// Follow one write in `every`, so that about `samples_per_sec` writes per
/// second are followed at `rate` writes per second.
fn sample_every(rate: u64, samples_per_sec: u64) -> u64 {
    rate.checked_div(samples_per_sec).unwrap_or(u64::MAX).max(1)
}

/// Writes writer `w` of `writers` performs out of `total` (it owns global
/// write numbers `w, w + writers, w + 2 * writers, ...`).
fn writes_of(w: u64, writers: u64, total: u64) -> u64 {
    if w >= total {
        0
    } else {
        (total - w).div_ceil(writers)
    }
}

/// The offset, from the phase's start, at which write number `g` is due.
fn due(g: u64, rate: u64) -> Duration {
    Duration::from_secs_f64(g as f64 / rate.max(1) as f64)
}

/// The version an `ETag: "<version>"` names.
fn etag_version(etag: &str) -> Option<u64> {
    etag.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .ok()
}

/// The item with `id` in a list page (`{"items":[...]}`), if listed.
fn list_item(page: &Json, id: u64) -> Option<&Json> {
    page["items"]
        .as_array()?
        .iter()
        .find(|i| i["id"].as_u64() == Some(id))
}

/// A document's timestamp field (`updated_at`, `created_at`).
fn doc_time(doc: &Json, field: &str) -> Option<DateTime<Utc>> {
    let s = doc[field].as_str()?;
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// n, p50, p90, p99 and max of `values` (milliseconds), nearest rank.
fn summary(values: &[f64]) -> Json {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let p = |q: f64| (!v.is_empty()).then(|| round3(percentile(&v, q)));
    json!({"n": v.len(), "p50_ms": p(50.0), "p90_ms": p(90.0), "p99_ms": p(99.0), "max_ms": p(100.0)})
}

/// Median, minimum and maximum of the values that are present.
fn median_spread(values: &[Option<f64>]) -> (Option<f64>, Option<f64>, Option<f64>) {
    let mut v: Vec<f64> = values.iter().flatten().copied().collect();
    if v.is_empty() {
        return (None, None, None);
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (Some(median), v.first().copied(), v.last().copied())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `a - b` in milliseconds, negative when `a` came first.
fn signed_ms(a: Instant, b: Instant) -> f64 {
    if a >= b { ms(a - b) } else { -ms(b - a) }
}

// ---- Following changes through the API ---------------------------------------

/// A followed change: woken by Redis invalidations of its key; also told
/// when its change event became readable in Kafka.
#[derive(Default)]
struct Watch {
    notify: Notify,
    pushed: Mutex<Option<Instant>>,
    /// When a `read_committed` reader got the event, and the event's `ts_ms`
    /// (when the producer built it).
    kafka: Mutex<Option<(Instant, Option<i64>)>>,
}

/// Followed changes by Redis key.
type Watches = Arc<Mutex<HashMap<String, Arc<Watch>>>>;
/// Followed changes by purchase id, with the version their event carries.
type ById = Arc<Mutex<HashMap<u64, (u64, Arc<Watch>)>>>;

/// Handles one push of the tracking connection: wakes the followers of the
/// invalidated keys and records when Redis first reported each.
fn on_push(watches: &Watches, push: &PushInfo) {
    if push.kind != PushKind::Invalidate {
        return;
    }
    let now = Instant::now();
    let Some(Value::Array(keys)) = push.data.first() else {
        return;
    };
    let Ok(map) = watches.lock() else { return };
    for k in keys {
        let Value::BulkString(b) = k else { continue };
        let Some(w) = std::str::from_utf8(b).ok().and_then(|k| map.get(k)) else {
            continue;
        };
        if let Ok(mut p) = w.pushed.lock() {
            p.get_or_insert(now);
        }
        w.notify.notify_one();
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Update,
    Insert,
}

/// What visibility means for one followed write.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// `GET /v1/purchases/{id}` answers this version or a later one.
    Purchase { id: u64, version: u64 },
    /// `GET /v1/users/{user}/purchases` lists purchase `id`.
    Listed { user: u64, id: u64 },
}

impl Target {
    fn kind(self) -> Kind {
        match self {
            Target::Purchase { .. } => Kind::Update,
            Target::Listed { .. } => Kind::Insert,
        }
    }
}

struct Sample {
    kind: Kind,
    visible_ms: f64,
    redis_ms: Option<f64>,
    kafka_ms: Option<f64>,
    built_ms: Option<f64>,
    statement_ms: Option<f64>,
    rtt_ms: f64,
    by_push: bool,
    polls: u32,
}

enum Outcome {
    Seen(Sample),
    Missing(Kind),
}

type Http = Client<HttpConnector, Empty<Bytes>>;

struct Reader {
    http: Http,
    base: String,
    auth: String,
    poll: Duration,
    give_up: Duration,
    watches: Watches,
    by_id: ById,
}

impl Reader {
    async fn get(&self, path: &str) -> anyhow::Result<(u16, Option<u64>, Bytes)> {
        let req = Request::get(format!("{}{path}", self.base))
            .header(AUTHORIZATION, &self.auth)
            .body(Empty::<Bytes>::new())?;
        let resp = self.http.request(req).await?;
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .and_then(etag_version);
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, etag, body))
    }

    /// `Some(commit-side timestamp if the answer has one)` once `target` is
    /// visible.
    async fn probe(&self, target: Target) -> anyhow::Result<Option<Option<DateTime<Utc>>>> {
        match target {
            Target::Purchase { id, version } => {
                let (status, etag, body) = self.get(&format!("/v1/purchases/{id}")).await?;
                if status != 200 || etag.is_none_or(|v| v < version) {
                    return Ok(None);
                }
                let doc: Json = serde_json::from_slice(&body)?;
                Ok(Some(doc_time(&doc, "updated_at")))
            }
            Target::Listed { user, id } => {
                let (status, _, body) = self
                    .get(&format!("/v1/users/{user}/purchases?limit=5"))
                    .await?;
                if status != 200 {
                    return Ok(None);
                }
                let page: Json = serde_json::from_slice(&body)?;
                Ok(list_item(&page, id).map(|item| doc_time(item, "created_at")))
            }
        }
    }

    /// Reads `target` through the API until it is visible (or the follower
    /// gives up), waking on Redis invalidations of `key` and every poll.
    async fn follow(
        self: Arc<Self>,
        key: String,
        watch: Arc<Watch>,
        target: Target,
        (ack, ack_wall): (Instant, DateTime<Utc>),
        out: mpsc::UnboundedSender<Outcome>,
    ) {
        let mut polls = 0;
        let mut by_push = false;
        let outcome = loop {
            let sent = Instant::now();
            let seen = self.probe(target).await;
            let recv = Instant::now();
            let recv_wall = Utc::now();
            polls += 1;
            if let Ok(Some(stamp)) = seen {
                let pushed = watch.pushed.lock().ok().and_then(|p| *p);
                let kafka = watch.kafka.lock().ok().and_then(|k| *k);
                break Outcome::Seen(Sample {
                    kind: target.kind(),
                    visible_ms: signed_ms(recv, ack),
                    redis_ms: pushed.map(|p| signed_ms(p, ack)),
                    kafka_ms: kafka.map(|(k, _)| signed_ms(k, ack)),
                    built_ms: kafka
                        .and_then(|(_, ts)| ts)
                        .map(|ts| (ts - ack_wall.timestamp_millis()) as f64),
                    statement_ms: stamp.map(|t| (recv_wall - t).as_seconds_f64() * 1000.0),
                    rtt_ms: ms(recv - sent),
                    by_push,
                    polls,
                });
            }
            if ack.elapsed() > self.give_up {
                break Outcome::Missing(target.kind());
            }
            by_push = tokio::select! {
                _ = watch.notify.notified() => true,
                _ = tokio::time::sleep(self.poll) => false,
            };
        };
        if let Ok(mut m) = self.watches.lock() {
            m.remove(&key);
        }
        let id = match target {
            Target::Purchase { id, .. } | Target::Listed { id, .. } => id,
        };
        if let Ok(mut m) = self.by_id.lock() {
            m.remove(&id);
        }
        let _ = out.send(outcome);
    }
}

/// Keeps a RESP3 connection with `CLIENT TRACKING ON BCAST` on the purchase
/// and user-list keys of `keys`; its pushes wake the followers.
async fn track(
    stack: &Stack,
    keys: &Keys,
    watches: &Watches,
) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let mut info: redis::ConnectionInfo =
        redis::IntoConnectionInfo::into_connection_info(stack.redis_url().as_str())?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    info = info.set_redis_settings(settings);
    let client = redis::Client::open(info)?;
    let w = Arc::clone(watches);
    let config = AsyncConnectionConfig::new().set_push_sender(move |p: PushInfo| {
        on_push(&w, &p);
        Ok::<(), std::convert::Infallible>(())
    });
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    redis::cmd("CLIENT")
        .arg("TRACKING")
        .arg("ON")
        .arg("BCAST")
        .arg("PREFIX")
        .arg(format!("{}:purchase:", keys.prefix()))
        .arg("PREFIX")
        .arg(format!("{}:user:", keys.prefix()))
        .query_async::<()>(&mut conn)
        .await?;
    Ok(conn)
}

// ---- Writing ------------------------------------------------------------------

/// The statements every writer runs, against the benchmark's database.
struct Sql {
    update: String,
    version: String,
    insert: String,
}

impl Sql {
    fn new(db: &str) -> Self {
        Self {
            update: format!("UPDATE {db}.purchases SET quantity = quantity + 1 WHERE id = ?"),
            version: format!("SELECT version FROM {db}.purchases WHERE id = ?"),
            insert: format!(
                "INSERT INTO {db}.purchases (user_id, package_id, quantity, amount, currency, idempotency_key) \
                 VALUES (?, 1, 1, 9.99, 'EUR', ?)"
            ),
        }
    }
}

/// One writing connection and the rows and users it owns (so a row's
/// writes are sequential and versions are easy to follow).
struct Writer {
    w: u64,
    conn: Conn,
    sql: Arc<Sql>,
    rows: Vec<u64>,
    users: Vec<u64>,
    updates: u64,
    inserts: u64,
}

/// What one writer did in one phase.
#[derive(Default)]
struct Written {
    ok: u64,
    errors: u64,
    followed: u64,
    last_ack: Option<Instant>,
    lag_ms: Vec<f64>,
    first_error: Option<String>,
}

struct Phase {
    rate: u64,
    total: u64,
    writers: u64,
    insert_percent: u64,
    every: u64,
    t0: Instant,
    keys: Keys,
    reader: Arc<Reader>,
    run: String,
}

impl Writer {
    /// Prepares the statements, so the first scheduled write does not pay for it.
    async fn prepare(&mut self) -> anyhow::Result<()> {
        for q in [&self.sql.update, &self.sql.version, &self.sql.insert] {
            self.conn.prep(q.as_str()).await?;
        }
        Ok(())
    }

    async fn run(mut self, p: Arc<Phase>, out: mpsc::UnboundedSender<Outcome>) -> (Self, Written) {
        let mut done = Written::default();
        let n = writes_of(self.w, p.writers, p.total);
        for i in 0..n {
            let g = i * p.writers + self.w;
            let at = p.t0 + due(g, p.rate);
            tokio::time::sleep_until(at).await;
            done.lag_ms
                .push(ms(Instant::now().saturating_duration_since(at)));
            let result = if is_insert(g, p.insert_percent) && !self.users.is_empty() {
                self.insert(&p, &out, &mut done).await
            } else if !self.rows.is_empty() {
                self.update(&p, &out, &mut done).await
            } else {
                Ok(())
            };
            match result {
                Ok(()) => done.ok += 1,
                Err(e) => {
                    done.errors += 1;
                    done.first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        (self, done)
    }

    /// Registers a follower for `key`, unless one is still following it.
    fn watch(p: &Phase, key: &str) -> Option<Arc<Watch>> {
        let mut m = p.reader.watches.lock().ok()?;
        if m.contains_key(key) {
            return None;
        }
        let w = Arc::new(Watch::default());
        m.insert(key.to_string(), Arc::clone(&w));
        Some(w)
    }

    fn unwatch(p: &Phase, key: &str) {
        if let Ok(mut m) = p.reader.watches.lock() {
            m.remove(key);
        }
    }

    /// Starts following a committed change.
    fn follow(
        p: &Phase,
        (key, watch): (String, Arc<Watch>),
        target: Target,
        ack: (Instant, DateTime<Utc>),
        out: &mpsc::UnboundedSender<Outcome>,
    ) {
        let (id, version) = match target {
            Target::Purchase { id, version } => (id, version),
            Target::Listed { id, .. } => (id, 1),
        };
        if let Ok(mut m) = p.reader.by_id.lock() {
            m.insert(id, (version, Arc::clone(&watch)));
        }
        tokio::spawn(Arc::clone(&p.reader).follow(key, watch, target, ack, out.clone()));
    }

    async fn update(
        &mut self,
        p: &Phase,
        out: &mpsc::UnboundedSender<Outcome>,
        done: &mut Written,
    ) -> anyhow::Result<()> {
        let id = self.rows[(self.updates % self.rows.len() as u64) as usize];
        let followed = self.updates.is_multiple_of(p.every);
        self.updates += 1;
        let key = p.keys.purchase(id);
        let watch = if followed { Self::watch(p, &key) } else { None };
        let r = self.conn.exec_drop(self.sql.update.as_str(), (id,)).await;
        let ack = (Instant::now(), Utc::now());
        done.last_ack = Some(ack.0);
        if let Err(e) = r {
            if watch.is_some() {
                Self::unwatch(p, &key);
            }
            return Err(e.into());
        }
        if let Some(watch) = watch {
            let version: Option<u64> = self
                .conn
                .exec_first(self.sql.version.as_str(), (id,))
                .await?;
            let version = version.context("the updated purchase is gone")?;
            done.followed += 1;
            Self::follow(p, (key, watch), Target::Purchase { id, version }, ack, out);
        }
        Ok(())
    }

    async fn insert(
        &mut self,
        p: &Phase,
        out: &mpsc::UnboundedSender<Outcome>,
        done: &mut Written,
    ) -> anyhow::Result<()> {
        let user = self.users[(self.inserts % self.users.len() as u64) as usize];
        let followed = self.inserts.is_multiple_of(p.every);
        let idem = format!("{}-{}-{}", p.run, self.w, self.inserts);
        self.inserts += 1;
        let key = p.keys.user_purchases(user);
        let watch = if followed { Self::watch(p, &key) } else { None };
        let r = self
            .conn
            .exec_drop(self.sql.insert.as_str(), (user, idem))
            .await;
        let ack = (Instant::now(), Utc::now());
        done.last_ack = Some(ack.0);
        if let Err(e) = r {
            if watch.is_some() {
                Self::unwatch(p, &key);
            }
            return Err(e.into());
        }
        let id = self.conn.last_insert_id().context("no insert id")?;
        if let Some(watch) = watch {
            done.followed += 1;
            Self::follow(p, (key, watch), Target::Listed { user, id }, ack, out);
        }
        Ok(())
    }
}

/// Reads the purchases change topic (`read_committed`, from its end) on a
/// thread of its own and records, for every followed purchase, when the
/// event carrying its new version became readable, until `stop`.
fn follow_kafka(
    stack: &Stack,
    topic: &str,
    by_id: ById,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let consumer = plain_consumer(stack)?;
    let partitions = partitions(&consumer, topic, Duration::from_secs(60))?;
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, p, Offset::End)?;
    }
    consumer.assign(&tpl)?;
    Ok(std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) else {
                continue;
            };
            let now = Instant::now();
            let Some(id) = m.key().and_then(event_id) else {
                continue;
            };
            let Some(watch) = by_id
                .lock()
                .ok()
                .and_then(|w| w.get(&id).map(|(v, w)| (*v, Arc::clone(w))))
            else {
                continue;
            };
            let (version, watch) = watch;
            let Some((v, ts)) = m.payload().and_then(event_version) else {
                continue;
            };
            if v >= version
                && let Ok(mut k) = watch.kafka.lock()
            {
                k.get_or_insert((now, ts));
            }
        }
    }))
}

/// The purchase id of a change event's key, `{"id":N}`.
fn event_id(key: &[u8]) -> Option<u64> {
    serde_json::from_slice::<Json>(key).ok()?["id"].as_u64()
}

/// The row version after the change and the event's `ts_ms`.
fn event_version(value: &[u8]) -> Option<(u64, Option<i64>)> {
    let v: Json = serde_json::from_slice(value).ok()?;
    Some((v["after"]["version"].as_u64()?, v["ts_ms"].as_i64()))
}

// ---- The run --------------------------------------------------------------------

struct Pipeline {
    producer: Service,
    consumer: Service,
    api: Service,
    api_base: String,
}

fn check_binary(path: &str) -> anyhow::Result<std::path::PathBuf> {
    let p = std::path::PathBuf::from(path);
    if !p.is_file() {
        bail!("{path} is missing: run `make bench-freshness`, which builds the release binaries");
    }
    Ok(p)
}

pub(crate) async fn ready(what: &str, s: &mut Service) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        if s.readyz().await.0 == 200 {
            return Ok(());
        }
        if s.exited() || start.elapsed() > Duration::from_secs(120) {
            bail!(
                "the {what} did not become ready; its log is {}",
                s.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

async fn start_pipeline(args: &Args, scratch: &Scratch) -> anyhow::Result<Pipeline> {
    let stack = &scratch.stack;
    let (producer_bin, consumer_bin, api_bin) = (
        check_binary(&args.producer)?,
        check_binary(&args.consumer)?,
        check_binary(&args.api)?,
    );
    let quiet = [("PAYSTREAM_LOG", "warn")];
    let mut producer = Service::spawn(
        &format!("{}-producer", scratch.prefix),
        &producer_bin,
        &scratch.producer_args(&[]),
        &quiet,
    );
    ready("producer", &mut producer).await?;
    let group = format!("{}-consumer", scratch.prefix);
    let redis_url = stack.redis_url();
    let mut consumer = Service::spawn(
        &group,
        &consumer_bin,
        &strings(&[
            "--topic-prefix",
            &scratch.prefix,
            "--database",
            &scratch.db,
            "--group-id",
            &group,
            "--kafka-bootstrap",
            &stack.kafka_bootstrap,
            "--redis-url",
            &redis_url,
        ]),
        &quiet,
    );
    ready("consumer", &mut consumer).await?;
    let port = free_port();
    let mysql_port = stack.mysql_port.to_string();
    let mut api = Service::spawn(
        &format!("{}-api", scratch.prefix),
        &api_bin,
        &strings(&[
            "--listen-addr",
            &format!("127.0.0.1:{port}"),
            "--mysql-port",
            &mysql_port,
            "--mysql-user",
            &stack.admin.user,
            "--mysql-password",
            &stack.admin.password,
            "--mysql-database",
            &scratch.db,
            "--redis-url",
            &redis_url,
            "--redis-key-prefix",
            &scratch.prefix,
            "--topic-prefix",
            &scratch.prefix,
            "--jwt-secret",
            SECRET,
        ]),
        &quiet,
    );
    ready("API", &mut api).await?;
    Ok(Pipeline {
        producer,
        consumer,
        api,
        api_base: format!("http://127.0.0.1:{port}"),
    })
}

/// Creates the scratch database (users, packages, purchases with the
/// version trigger) and seeds it; returns the purchase ids.
async fn seed(scratch: &Scratch, rows: u64, users: u64) -> anyhow::Result<Vec<u64>> {
    let db = &scratch.db;
    let mut c = admin(&scratch.stack).await?;
    c.query_drop(format!("CREATE DATABASE {db}")).await?;
    for t in ["users", "packages", "purchases"] {
        c.query_drop(format!("CREATE TABLE {db}.{t} LIKE payments.{t}"))
            .await?;
    }
    for t in ["packages", "purchases"] {
        c.query_drop(format!(
            "CREATE TRIGGER {db}.tr_{t}_version BEFORE UPDATE ON {db}.{t} FOR EACH ROW SET NEW.version = OLD.version + 1"
        ))
        .await?;
    }
    c.query_drop(format!("GRANT SELECT ON {db}.* TO 'paystream_cdc'@'%'"))
        .await?;
    c.query_drop(format!(
        "INSERT INTO {db}.users (id, email, display_name) \
         SELECT seq, CONCAT('u', seq, '@bench.paystream'), 'bench' FROM {db}.seq_1_to_{users}"
    ))
    .await?;
    c.query_drop(format!(
        "INSERT INTO {db}.packages (id, code, name, price, currency) VALUES (1, 'fresh', 'Freshness pack', 9.99, 'EUR')"
    ))
    .await?;
    let mut done = 0;
    while done < rows {
        let n = (rows - done).min(10_000);
        c.query_drop(format!(
            "INSERT INTO {db}.purchases (user_id, package_id, quantity, amount, currency, idempotency_key) \
             SELECT 1 + (seq + {done}) % {users}, 1, 1, 9.99, 'EUR', CONCAT('seed-', seq + {done}) FROM {db}.seq_1_to_{n}"
        ))
        .await?;
        done += n;
    }
    let ids: Vec<u64> = c
        .query(format!("SELECT id FROM {db}.purchases ORDER BY id"))
        .await?;
    Ok(ids)
}

/// Waits until every seeded purchase is in the read model and the API
/// trusts it for lists, then reads each once through the API.
async fn warm(
    stack: &Stack,
    keys: &Keys,
    ids: &[u64],
    pipeline: &Pipeline,
    reader: &Arc<Reader>,
) -> anyhow::Result<()> {
    let client = redis::Client::open(stack.redis_url())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let start = Instant::now();
    loop {
        let mut present = 0;
        for chunk in ids.chunks(1000) {
            let mut p = redis::pipe();
            for id in chunk {
                p.cmd("EXISTS").arg(keys.purchase(*id));
            }
            let v: Vec<i64> = p.query_async(&mut conn).await?;
            present += v.iter().sum::<i64>();
        }
        if present as usize == ids.len() {
            break;
        }
        if start.elapsed() > Duration::from_secs(300) {
            bail!(
                "only {present} of {} purchases reached Redis; see {} and {}",
                ids.len(),
                pipeline.producer.log.display(),
                pipeline.consumer.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "freshness: {} purchases in the read model after {:.1}s",
        ids.len(),
        start.elapsed().as_secs_f64()
    );
    wait_for(
        "the API to trust the read model",
        Duration::from_secs(120),
        || async {
            (pipeline
                .api
                .metric("paystream_api_read_model_complete")
                .await
                == Some(1.0))
            .then_some(())
        },
    )
    .await?;
    // One read of every purchase, so the API's "purchase -> package" guesses
    // are as warm as in a long-running server.
    let mut tasks = tokio::task::JoinSet::new();
    let ids = Arc::new(ids.to_vec());
    for t in 0..16 {
        let (reader, ids) = (Arc::clone(reader), Arc::clone(&ids));
        tasks.spawn(async move {
            for id in ids.iter().skip(t).step_by(16) {
                let (status, _, _) = reader.get(&format!("/v1/purchases/{id}")).await?;
                if status != 200 {
                    bail!("GET /v1/purchases/{id}: {status}");
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

async fn mysql_reads(api: &Service) -> Option<f64> {
    api.metric("paystream_api_mysql_reads_total").await
}

/// The producer's Kafka transactions so far: (commits, seconds spent
/// committing, records).
async fn producer_commits(producer: &Service) -> Option<(f64, f64, f64)> {
    Some((
        producer
            .metric("paystream_producer_kafka_commits_total")
            .await?,
        producer
            .metric("paystream_producer_kafka_commit_seconds_sum")
            .await?,
        producer.metric("paystream_producer_records_total").await?,
    ))
}

/// Kafka transactions per second, mean commit time (ms) and records per
/// transaction between two readings of [`producer_commits`].
fn commit_rates(
    before: Option<(f64, f64, f64)>,
    after: Option<(f64, f64, f64)>,
    seconds: f64,
) -> Json {
    let (Some(b), Some(a)) = (before, after) else {
        return Json::Null;
    };
    let commits = a.0 - b.0;
    if commits <= 0.0 || seconds <= 0.0 {
        return Json::Null;
    }
    json!({
        "transactions_per_second": round3(commits / seconds),
        "mean_commit_ms": round3((a.1 - b.1) / commits * 1000.0),
        "records_per_transaction": round3((a.2 - b.2) / commits),
    })
}

fn by_kind(samples: &[Sample], kind: Option<Kind>, f: impl Fn(&Sample) -> Option<f64>) -> Json {
    let v: Vec<f64> = samples
        .iter()
        .filter(|s| kind.is_none_or(|k| s.kind == k))
        .filter_map(f)
        .collect();
    summary(&v)
}

/// One rate for `seconds`: returns the phase's JSON.
#[allow(clippy::too_many_arguments)]
async fn phase(
    args: &Args,
    writers: Vec<Writer>,
    (rate, seconds, repetition): (u64, u64, u32),
    keys: &Keys,
    reader: &Arc<Reader>,
    pipeline: &Pipeline,
) -> anyhow::Result<(Vec<Writer>, Json)> {
    let api = &pipeline.api;
    let total = rate * seconds;
    let every = sample_every(rate, args.samples_per_sec);
    let what = if repetition == 0 {
        "warm-up, not reported".to_string()
    } else {
        format!("repetition {repetition}")
    };
    eprintln!("freshness: {rate} rows/s for {seconds}s ({what}), following 1 write in {every}");
    let reads_before = mysql_reads(api).await;
    let commits_before = producer_commits(&pipeline.producer).await;
    let started = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let p = Arc::new(Phase {
        rate,
        total,
        writers: writers.len() as u64,
        insert_percent: args.insert_percent,
        every,
        // Let every writer reach its first sleep before the clock starts.
        t0: Instant::now() + Duration::from_millis(200),
        keys: keys.clone(),
        reader: Arc::clone(reader),
        run: format!("r{repetition}-{rate}"),
    });
    let handles: Vec<_> = writers
        .into_iter()
        .map(|w| tokio::spawn(w.run(Arc::clone(&p), tx.clone())))
        .collect();
    drop(tx);
    let mut writers = Vec::new();
    let mut written = Vec::new();
    for h in handles {
        let (w, d) = h.await?;
        writers.push(w);
        written.push(d);
    }
    let ok: u64 = written.iter().map(|d| d.ok).sum();
    let errors: u64 = written.iter().map(|d| d.errors).sum();
    let followed: u64 = written.iter().map(|d| d.followed).sum();
    let last = written.iter().filter_map(|d| d.last_ack).max();
    let elapsed = last.map_or(0.0, |l| l.saturating_duration_since(p.t0).as_secs_f64());
    let achieved = if elapsed > 0.0 {
        ok as f64 / elapsed
    } else {
        0.0
    };
    let lag: Vec<f64> = written.iter().flat_map(|d| d.lag_ms.clone()).collect();
    let first_error = written.iter().find_map(|d| d.first_error.clone());
    let mut samples = Vec::new();
    let mut missing = (0, 0);
    while let Some(o) = rx.recv().await {
        match o {
            Outcome::Seen(s) => samples.push(s),
            Outcome::Missing(Kind::Update) => missing.0 += 1,
            Outcome::Missing(Kind::Insert) => missing.1 += 1,
        }
    }
    let reads_after = mysql_reads(api).await;
    let commits_after = producer_commits(&pipeline.producer).await;
    let producer_txns = commit_rates(
        commits_before,
        commits_after,
        started.elapsed().as_secs_f64(),
    );
    let by_push = samples.iter().filter(|s| s.by_push).count();
    let polls: u64 = samples.iter().map(|s| u64::from(s.polls)).sum();
    let visible = by_kind(&samples, None, |s| Some(s.visible_ms));
    eprintln!(
        "  achieved {achieved:.0} rows/s, {errors} errors, {} followed; visible p50 {} ms, p99 {} ms",
        samples.len(),
        visible["p50_ms"],
        visible["p99_ms"]
    );
    Ok((
        writers,
        json!({
            "rate": rate,
            "repetition": repetition,
            "seconds": seconds,
            "offered_writes": total,
            "writes_ok": ok,
            "write_errors": errors,
            "first_write_error": first_error,
            "achieved_rate": round3(achieved),
            "send_lag": summary(&lag),
            "follow_one_in": every,
            "followed": followed,
            "seen": samples.len(),
            "missing": {"update": missing.0, "insert": missing.1},
            "visible": visible,
            "visible_update": by_kind(&samples, Some(Kind::Update), |s| Some(s.visible_ms)),
            "visible_insert": by_kind(&samples, Some(Kind::Insert), |s| Some(s.visible_ms)),
            "redis": by_kind(&samples, None, |s| s.redis_ms),
            "kafka": by_kind(&samples, None, |s| s.kafka_ms),
            "event_built": by_kind(&samples, None, |s| s.built_ms),
            "stages": {
                "commit_to_event_built": by_kind(&samples, None, |s| s.built_ms),
                "event_built_to_kafka": by_kind(&samples, None, |s| Some(s.kafka_ms? - s.built_ms?)),
                "kafka_to_redis": by_kind(&samples, None, |s| Some(s.redis_ms? - s.kafka_ms?)),
                "redis_to_api": by_kind(&samples, None, |s| Some(s.visible_ms - s.redis_ms?)),
            },
            "from_statement": by_kind(&samples, None, |s| s.statement_ms),
            "detecting_rtt": by_kind(&samples, None, |s| Some(s.rtt_ms)),
            "detected_by_push": by_push,
            "polls_per_sample": if samples.is_empty() { 0.0 } else { round3(polls as f64 / samples.len() as f64) },
            "producer_transactions": producer_txns,
            "api_mysql_reads": match (reads_before, reads_after) { (Some(a), Some(b)) => Some(b - a), _ => None },
        }),
    ))
}

/// The stages of a change's way, in order.
const STAGES: [&str; 4] = [
    "commit_to_event_built",
    "event_built_to_kafka",
    "kafka_to_redis",
    "redis_to_api",
];

/// Median and spread over repetitions, per rate.
fn per_rate(rates: &[u64], runs: &[Json]) -> Vec<Json> {
    rates
        .iter()
        .map(|&rate| {
            let of: Vec<&Json> = runs.iter().filter(|r| r["rate"] == rate).collect();
            let agg = |f: &dyn Fn(&Json) -> Option<f64>| {
                let (m, lo, hi) = median_spread(&of.iter().map(|r| f(r)).collect::<Vec<_>>());
                json!({"median": m.map(round3), "min": lo.map(round3), "max": hi.map(round3)})
            };
            json!({
                "rate": rate,
                "repetitions": of.len(),
                "achieved_rate": agg(&|r| r["achieved_rate"].as_f64()),
                "p50_ms": agg(&|r| r["visible"]["p50_ms"].as_f64()),
                "p99_ms": agg(&|r| r["visible"]["p99_ms"].as_f64()),
                "update_p50_ms": agg(&|r| r["visible_update"]["p50_ms"].as_f64()),
                "update_p99_ms": agg(&|r| r["visible_update"]["p99_ms"].as_f64()),
                "insert_p50_ms": agg(&|r| r["visible_insert"]["p50_ms"].as_f64()),
                "insert_p99_ms": agg(&|r| r["visible_insert"]["p99_ms"].as_f64()),
                "redis_p50_ms": agg(&|r| r["redis"]["p50_ms"].as_f64()),
                "redis_p99_ms": agg(&|r| r["redis"]["p99_ms"].as_f64()),
                "kafka_p50_ms": agg(&|r| r["kafka"]["p50_ms"].as_f64()),
                "kafka_p99_ms": agg(&|r| r["kafka"]["p99_ms"].as_f64()),
                "stages_p50_ms": STAGES.iter().map(|&s| {
                    (s.to_string(), agg(&|r| r["stages"][s]["p50_ms"].as_f64()))
                }).collect::<serde_json::Map<_, _>>(),
                "producer_mean_commit_ms": agg(&|r| r["producer_transactions"]["mean_commit_ms"].as_f64()),
                "samples": of.iter().filter_map(|r| r["seen"].as_u64()).sum::<u64>(),
                "missing": of.iter().map(|r| r["missing"]["update"].as_u64().unwrap_or(0) + r["missing"]["insert"].as_u64().unwrap_or(0)).sum::<u64>(),
                "write_errors": of.iter().filter_map(|r| r["write_errors"].as_u64()).sum::<u64>(),
                "api_mysql_reads": of.iter().filter_map(|r| r["api_mysql_reads"].as_f64()).sum::<f64>(),
            })
        })
        .collect()
}

fn cell(v: &Json) -> String {
    v.as_f64()
        .map_or_else(|| "n/a".to_string(), |x| format!("{x:.1}"))
}

fn spread(v: &Json) -> String {
    format!(
        "{} ({}–{})",
        cell(&v["median"]),
        cell(&v["min"]),
        cell(&v["max"])
    )
}

fn markdown(args: &Args, result: &Json) -> String {
    let mut md = format!(
        "# Freshness benchmark, {}\n\n\
         Commit-to-visible-through-the-API latency at sustained write rates: release producer, \
         consumer and API on the local stack ({} cores, loopback). {} s per rate, {} repetitions \
         (interleaved), {} writing connections, {} % INSERTs (seen in the owner's list) and the rest \
         UPDATEs (seen by id), {} seeded purchases of {} users.\n\n\
         Figures are the median over repetitions, with the spread (min–max) in brackets.\n\n\
         | offered rows/s | achieved rows/s | samples | visible p50 ms | visible p99 ms | UPDATE p99 ms | INSERT p99 ms | commit→Redis p50 ms | missing | write errors |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        result["date"].as_str().unwrap_or(""),
        result["machine"]["cores"],
        args.seconds,
        args.repeat,
        args.writers,
        args.insert_percent,
        args.rows,
        args.users,
    );
    for r in result["rates"].as_array().into_iter().flatten() {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r["rate"],
            spread(&r["achieved_rate"]),
            r["samples"],
            spread(&r["p50_ms"]),
            spread(&r["p99_ms"]),
            cell(&r["update_p99_ms"]["median"]),
            cell(&r["insert_p99_ms"]["median"]),
            cell(&r["redis_p50_ms"]["median"]),
            r["missing"],
            r["write_errors"],
        ));
    }
    md.push_str(
        "\nWhere the time goes (p50 of each stage per sample, median over repetitions, ms):\n\n\
         | offered rows/s | commit → event built | event built → readable in Kafka | Kafka → Redis | Redis → API answer | producer Kafka commit, mean ms |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in result["rates"].as_array().into_iter().flatten() {
        let st = &r["stages_p50_ms"];
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r["rate"],
            cell(&st["commit_to_event_built"]["median"]),
            cell(&st["event_built_to_kafka"]["median"]),
            cell(&st["kafka_to_redis"]["median"]),
            cell(&st["redis_to_api"]["median"]),
            cell(&r["producer_mean_commit_ms"]["median"]),
        ));
    }
    md.push_str(
        "\n| run | offered | achieved | followed | p50 ms | p90 ms | p99 ms | max ms | from statement p50 ms | detecting RTT p50 ms | woken by Redis | API MySQL reads |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in result["runs"].as_array().into_iter().flatten() {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r["repetition"],
            r["rate"],
            cell(&r["achieved_rate"]),
            r["followed"],
            cell(&r["visible"]["p50_ms"]),
            cell(&r["visible"]["p90_ms"]),
            cell(&r["visible"]["p99_ms"]),
            cell(&r["visible"]["max_ms"]),
            cell(&r["from_statement"]["p50_ms"]),
            cell(&r["detecting_rtt"]["p50_ms"]),
            r["detected_by_push"],
            r["api_mysql_reads"],
        ));
    }
    md.push_str(&format!(
        "\nHow to read it: a sample is one followed write. Its latency runs from MariaDB \
         acknowledging the commit to the benchmark (autocommit, `sync_binlog=1`) to the first API \
         response that carries the change: `GET /v1/purchases/{{id}}` with the new version in its \
         `ETag` for an UPDATE, the owner's `GET /v1/users/{{uid}}/purchases` listing the new id for \
         an INSERT. About {} writes per second are followed (one write in `rate / {}`); each is read \
         right after its commit, again as soon as Redis reports (client tracking, BCAST) that the \
         consumer wrote its key, and every {} ms in any case, so the figure is an upper bound whose \
         error is about one API round trip (the \"detecting RTT\" column). \"commit→Redis\" is when \
         the invalidation arrived. The stages split each sample: \"event built\" is the event's \
         `ts_ms` (the producer's clock, millisecond resolution), \"readable in Kafka\" is when a \
         `read_committed` reader of the purchases topic received it (so it includes the producer's \
         Kafka transaction commit), \"Redis\" is the invalidation, \"API answer\" the detecting \
         response. \"from statement\" measures from the row's own `updated_at` / \
         `created_at` (`NOW(6)` at statement start, same host clock) instead of the acknowledgement. \
         \"API MySQL reads\" should be 0: every answer came from the Redis read model, none from the \
         MySQL fallback. The achieved rate is acknowledged writes over the time from the first \
         scheduled write to the last acknowledgement; writes are scheduled by the clock (open loop) \
         over {} connections, so a slow commit delays that connection's next writes (see \
         `send_lag` in the JSON) but not the schedule. The machine is a shared 2-core box running \
         MariaDB, Kafka, Redis, the three paystream processes and the load generator at once.\n",
        args.samples_per_sec, args.samples_per_sec, args.poll_ms, args.writers,
    ));
    md
}

/// Runs the freshness benchmark and writes its report.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.rates.is_empty() || args.seconds == 0 || args.writers == 0 || args.rows == 0 {
        bail!("--rates, --seconds, --writers and --rows must be positive");
    }
    let stack = Stack::from_env();
    let db = unique_name("bench_fresh");
    let scratch = Scratch {
        stack: stack.clone(),
        prefix: db.replace('_', "-"),
        db,
    };
    let keys = Keys::new(&scratch.prefix).map_err(|e| anyhow::anyhow!("key prefix {e:?}"))?;
    // On Ctrl-C the measurement is dropped (its child processes are killed
    // with it) and the cleanup still runs.
    let result = tokio::select! {
        r = measure(&args, &scratch, &keys) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    cleanup(&scratch, &keys).await;
    let json = result?;
    let md = markdown(&args, &json);
    let (j, m) = write("freshness", &json, &md)?;
    println!("{md}\nwritten: {} and {}", j.display(), m.display());
    Ok(())
}

async fn measure(args: &Args, scratch: &Scratch, keys: &Keys) -> anyhow::Result<Json> {
    eprintln!(
        "freshness: database {}, topic and key prefix {}; logs in {}",
        scratch.db,
        scratch.prefix,
        repo_root().join("var/test-logs").display()
    );
    let ids = seed(scratch, args.rows, args.users).await?;
    let pipeline = start_pipeline(args, scratch).await?;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "1", "exp": Utc::now().timestamp() + 4 * 3600, "scope": "admin"}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )?;
    let http: Http = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(512)
        .build_http();
    let reader = Arc::new(Reader {
        http,
        base: pipeline.api_base.clone(),
        auth: format!("Bearer {token}"),
        poll: Duration::from_millis(args.poll_ms.max(1)),
        give_up: Duration::from_secs(args.give_up_secs.max(1)),
        watches: Arc::default(),
        by_id: Arc::default(),
    });
    let _tracking = if args.tracking {
        Some(track(&scratch.stack, keys, &reader.watches).await?)
    } else {
        None
    };
    warm(&scratch.stack, keys, &ids, &pipeline, &reader).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let kafka = follow_kafka(
        &scratch.stack,
        &scratch.topic("purchases"),
        Arc::clone(&reader.by_id),
        Arc::clone(&stop),
    )?;

    let n = args.writers;
    let sql = Arc::new(Sql::new(&scratch.db));
    let mut writers = Vec::new();
    for w in 0..n {
        let mut writer = Writer {
            w,
            conn: admin(&scratch.stack).await?,
            sql: Arc::clone(&sql),
            rows: ids
                .iter()
                .copied()
                .skip(w as usize)
                .step_by(n as usize)
                .collect(),
            users: (1..=args.users)
                .skip(w as usize)
                .step_by(n as usize)
                .collect(),
            updates: 0,
            inserts: 0,
        };
        writer.prepare().await?;
        writers.push(writer);
    }
    let mut runs = Vec::new();
    if args.warmup_secs > 0
        && let Some(&rate) = args.rates.first()
    {
        let (back, _) = phase(
            args,
            writers,
            (rate, args.warmup_secs, 0),
            keys,
            &reader,
            &pipeline,
        )
        .await?;
        writers = back;
    }
    for repetition in 1..=args.repeat {
        for &rate in &args.rates {
            let (back, run) = phase(
                args,
                writers,
                (rate, args.seconds, repetition),
                keys,
                &reader,
                &pipeline,
            )
            .await?;
            writers = back;
            runs.push(run);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = kafka.join();
    let producer_rss = rss_kib(&pipeline.producer);
    let consumer_rss = rss_kib(&pipeline.consumer);
    let api_rss = rss_kib(&pipeline.api);
    Ok(json!({
        "benchmark": "freshness",
        "date": Utc::now().to_rfc3339(),
        "machine": {"cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
        "config": {
            "rates": args.rates, "seconds": args.seconds, "repeat": args.repeat, "rows": args.rows,
            "users": args.users, "writers": args.writers, "insert_percent": args.insert_percent,
            "samples_per_sec": args.samples_per_sec, "poll_ms": args.poll_ms, "tracking": args.tracking,
            "warmup_secs": args.warmup_secs,
        },
        "method": "latency = MariaDB commit acknowledged to the benchmark -> first API response carrying the change \
                   (UPDATE: GET /v1/purchases/{id} ETag >= new version; INSERT: the owner's list contains it); \
                   sampled writes are read right after the commit, on each Redis invalidation of their key and every poll_ms; \
                   open-loop writes scheduled by the clock; medians and min-max over repetitions",
        "rates": per_rate(&args.rates, &runs),
        "runs": runs,
        "peak_rss_kib": {"producer": producer_rss, "consumer": consumer_rss, "api": api_rss},
    }))
}

fn rss_kib(s: &Service) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.child.id())).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Removes what the run created: Redis keys, Kafka topics and group, the
/// database. Best effort; failures are reported, not fatal.
async fn cleanup(scratch: &Scratch, keys: &Keys) {
    if let Err(e) = clear_redis(&scratch.stack, keys).await {
        eprintln!("freshness: could not remove the Redis keys: {e}");
    }
    if let Err(e) = clear_kafka(scratch).await {
        eprintln!("freshness: could not remove the Kafka topics: {e}");
    }
    match admin(&scratch.stack).await {
        Ok(mut c) => {
            if let Err(e) = c
                .query_drop(format!("DROP DATABASE IF EXISTS {}", scratch.db))
                .await
            {
                eprintln!("freshness: could not drop {}: {e}", scratch.db);
            }
        }
        Err(e) => eprintln!("freshness: could not drop {}: {e}", scratch.db),
    }
}

async fn clear_redis(stack: &Stack, keys: &Keys) -> anyhow::Result<()> {
    let client = redis::Client::open(stack.redis_url())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut cursor: u64 = 0;
    loop {
        let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}:*", keys.prefix()))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !found.is_empty() {
            redis::cmd("UNLINK")
                .arg(&found)
                .query_async::<()>(&mut conn)
                .await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

pub(crate) async fn clear_kafka(scratch: &Scratch) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &scratch.stack.kafka_bootstrap)
        .create()?;
    let md = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))?;
    let ours = format!("{}.", scratch.prefix);
    let topics: Vec<String> = md
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .filter(|n| n.starts_with(&ours))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let group = format!("{}-consumer", scratch.prefix);
    let _ = admin.delete_groups(&[group.as_str()], &opts).await;
    if !topics.is_empty() {
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        admin.delete_topics(&names, &opts).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_are_spread_evenly() {
        let n = (0..1000).filter(|&g| is_insert(g, 10)).count();
        assert_eq!(n, 100);
        // Never two inserts in a row at 10 %.
        assert!((0..1000).all(|g| !(is_insert(g, 10) && is_insert(g + 1, 10))));
        assert_eq!((0..100).filter(|&g| is_insert(g, 0)).count(), 0);
        assert_eq!((0..100).filter(|&g| is_insert(g, 100)).count(), 100);
        assert_eq!((0..100).filter(|&g| is_insert(g, 250)).count(), 100);
    }

    #[test]
    fn sampling_follows_the_requested_rate() {
        assert_eq!(sample_every(1000, 200), 5);
        assert_eq!(sample_every(5000, 200), 25);
        assert_eq!(sample_every(100, 200), 1);
        assert_eq!(sample_every(1000, 0), u64::MAX);
    }

    #[test]
    fn writes_are_shared_among_writers() {
        let total = 1003;
        let sum: u64 = (0..32).map(|w| writes_of(w, 32, total)).sum();
        assert_eq!(sum, total);
        assert_eq!(writes_of(0, 32, 1003), 32);
        assert_eq!(writes_of(11, 32, 1003), 31);
        assert_eq!(writes_of(5, 32, 3), 0);
        assert_eq!(due(500, 1000), Duration::from_millis(500));
        assert_eq!(due(5000, 5000), Duration::from_secs(1));
    }

    #[test]
    fn etags_and_lists_are_read() {
        assert_eq!(etag_version("\"7\""), Some(7));
        assert_eq!(etag_version("W/\"12\""), Some(12));
        assert_eq!(etag_version("abc"), None);
        let page = json!({"items": [{"id": 3, "created_at": "2026-11-27T05:00:00.123456Z"}, {"id": 9}], "next_cursor": null});
        assert!(list_item(&page, 9).is_some());
        assert!(list_item(&page, 4).is_none());
        assert!(list_item(&json!({}), 4).is_none());
        let t = doc_time(&page["items"][0], "created_at").unwrap();
        assert_eq!(t.timestamp_subsec_micros(), 123_456);
        assert!(doc_time(&page["items"][1], "created_at").is_none());
    }

    #[test]
    fn producer_transactions_between_two_readings() {
        let r = commit_rates(Some((10.0, 1.0, 100.0)), Some((60.0, 3.5, 1100.0)), 10.0);
        assert_eq!(r["transactions_per_second"], 5.0);
        assert_eq!(r["mean_commit_ms"], 50.0);
        assert_eq!(r["records_per_transaction"], 20.0);
        assert!(commit_rates(None, Some((1.0, 1.0, 1.0)), 1.0).is_null());
        assert!(commit_rates(Some((1.0, 1.0, 1.0)), Some((1.0, 1.0, 1.0)), 1.0).is_null());
    }

    #[test]
    fn change_events_are_read() {
        assert_eq!(event_id(br#"{"id":1042}"#), Some(1042));
        assert_eq!(event_id(b"null"), None);
        assert_eq!(event_id(b"not json"), None);
        let v = br#"{"before":null,"after":{"id":1,"version":3},"op":"u","ts_ms":1795774530412}"#;
        assert_eq!(event_version(v), Some((3, Some(1_795_774_530_412))));
        assert_eq!(
            event_version(br#"{"before":{"version":3},"after":null}"#),
            None
        );
    }

    #[test]
    fn summaries_and_spreads() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = summary(&v);
        assert_eq!(s["n"], 100);
        assert_eq!(s["p50_ms"], 50.0);
        assert_eq!(s["p99_ms"], 99.0);
        assert_eq!(s["max_ms"], 100.0);
        assert!(summary(&[])["p50_ms"].is_null());
        assert_eq!(
            median_spread(&[Some(3.0), None, Some(1.0), Some(2.0)]),
            (Some(2.0), Some(1.0), Some(3.0))
        );
        assert_eq!(
            median_spread(&[Some(4.0), Some(1.0)]),
            (Some(2.5), Some(1.0), Some(4.0))
        );
        assert_eq!(median_spread(&[None]), (None, None, None));
    }

    #[test]
    fn per_rate_takes_the_median_over_repetitions() {
        let runs = vec![
            json!({"rate": 1000, "achieved_rate": 990.0, "visible": {"p50_ms": 10.0, "p99_ms": 30.0}, "seen": 5, "missing": {"update": 1, "insert": 0}}),
            json!({"rate": 1000, "achieved_rate": 1000.0, "visible": {"p50_ms": 20.0, "p99_ms": 50.0}, "seen": 7, "missing": {"update": 0, "insert": 0}}),
            json!({"rate": 5000, "achieved_rate": 4000.0, "visible": {"p50_ms": 40.0, "p99_ms": 90.0}, "seen": 9}),
        ];
        let r = per_rate(&[1000, 5000], &runs);
        assert_eq!(r[0]["p50_ms"]["median"], 15.0);
        assert_eq!(r[0]["p99_ms"]["min"], 30.0);
        assert_eq!(r[0]["p99_ms"]["max"], 50.0);
        assert_eq!(r[0]["samples"], 12);
        assert_eq!(r[0]["missing"], 1);
        assert_eq!(r[1]["repetitions"], 1);
        assert!(r[1]["update_p50_ms"]["median"].is_null());
    }
}
