//! Runs the consumer: read a batch, plan it, apply it to Redis, write its dead
//! letters, advance the marks, commit the offsets; repeat until shutdown.
//!
//! Offsets are committed only after Redis has applied the batch and the
//! brokers hold its dead letters, so delivery is at-least-once; the version
//! guard makes the effect exactly-once. A newly assigned partition starts
//! only after its mark was read: live partitions continue from the committed
//! offset, others are replayed from the beginning (see [`crate::progress`]).
//! A mark that disappears (Redis flushed or restarted empty) turns its
//! partition back into a replay. Redis or Kafka outages are retried forever
//! with backoff and readiness false; nothing is committed for records that
//! were not applied. On shutdown the batch in hand is applied (if Redis
//! answers) and the applied offsets are committed synchronously.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use paystream_core::readmodel::{Keys, Mark, mark_field, partition_count_field};
use paystream_runtime::readiness::Check;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::Offset;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::dlq::{self, DeadLetterWriter};
use crate::metrics::ConsumerMetrics;
use crate::plan::{self, PlanSettings, Record, TopicPartition};
use crate::progress::{self, SeekTo, State};
use crate::sink::Sink;
use crate::source::{Assignment, Source, SourceSettings};

/// Readiness checks the pipeline drives.
#[derive(Clone)]
pub struct Checks {
    /// Kafka answers.
    pub kafka: Check,
    /// Redis answers.
    pub redis: Check,
}

/// The pipeline cannot run at all.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A setting is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The Kafka client could not be created.
    #[error("kafka client: {0}")]
    Kafka(#[from] KafkaError),
}

/// The librdkafka configuration shared by the consumer's Kafka clients.
pub fn kafka_config(config: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in config.kafka.client_properties() {
        c.set(k, v);
    }
    c
}

/// Exponential backoff that gives up when shutdown is requested.
struct Backoff {
    delay: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Self {
        Self {
            delay: Duration::from_millis(100),
            max,
        }
    }

    /// Sleeps; false if shutdown came first.
    async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let d = self.delay;
        self.delay = (self.delay * 2).min(self.max);
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}

/// Retries a Redis call until it succeeds (`Some`) or shutdown (`None`).
macro_rules! with_redis {
    ($run:ident, $what:expr, |$sink:ident| $call:expr) => {{
        let mut backoff = Backoff::new($run.max_backoff);
        loop {
            let $sink = &mut $run.sink;
            match $call.await {
                Ok(v) => {
                    $run.checks.redis.set(true);
                    break Some(v);
                }
                Err(e) => {
                    $run.checks.redis.set(false);
                    $run.metrics.error("redis");
                    tracing::warn!(error = %e, what = $what, "redis unavailable; retrying");
                    if !backoff.wait(&$run.shutdown).await {
                        break None;
                    }
                }
            }
        }
    }};
}

struct Run {
    source: Source,
    sink: Sink,
    dlq: DeadLetterWriter,
    metrics: ConsumerMetrics,
    checks: Checks,
    settings: PlanSettings,
    counts: Vec<(String, i32)>,
    states: HashMap<TopicPartition, State>,
    applied: BTreeMap<TopicPartition, i64>,
    max_backoff: Duration,
    shutdown: CancellationToken,
    batch_max: usize,
    linger: Duration,
    check_interval: Duration,
}

/// Runs until `shutdown`. Returns an error only when the configuration
/// cannot work at all.
pub async fn run(
    config: Config,
    metrics: ConsumerMetrics,
    checks: Checks,
    shutdown: CancellationToken,
) -> Result<(), PipelineError> {
    let keys = Keys::new(&config.key_prefix()).map_err(|e| PipelineError::Config(e.to_string()))?;
    let topics = config.topics();
    let names: Vec<String> = topics.keys().cloned().collect();
    let base = kafka_config(&config);
    let max_backoff = Duration::from_secs(config.max_backoff_secs.max(1));
    let dlq_topic = config.dlq_topic();

    let mut backoff = Backoff::new(max_backoff);
    loop {
        match dlq::ensure_topic(
            &base,
            &dlq_topic,
            config.dlq_partitions,
            config.replication_factor,
        )
        .await
        {
            Ok(()) => break,
            Err(e) => {
                checks.kafka.set(false);
                metrics.error("kafka");
                tracing::warn!(error = %e, topic = %dlq_topic, "cannot create the dead-letter topic; retrying");
                if !backoff.wait(&shutdown).await {
                    return Ok(());
                }
            }
        }
    }
    let dlq = DeadLetterWriter::new(&base, &dlq_topic)?;
    let source = Source::new(
        &base,
        &SourceSettings {
            group_id: config.group_id(),
            group_instance_id: config.group_instance_id.clone(),
            topics: names.clone(),
        },
        metrics.clone(),
    )?;
    let counts = loop {
        match source.partition_counts(&names).await {
            Ok(c) => break c,
            Err(e) => {
                checks.kafka.set(false);
                tracing::warn!(error = %e, "waiting for the change topics");
                if !backoff.wait(&shutdown).await {
                    return Ok(());
                }
            }
        }
    };
    source.subscribe(&names)?;
    checks.kafka.set(true);
    tracing::info!(group = %config.group_id(), topics = ?names, prefix = %keys.prefix(), "consumer subscribed");

    let mut run = Run {
        source,
        sink: Sink::new(config.redis.clone(), keys.clone(), config.pipeline_len),
        dlq,
        metrics,
        checks,
        settings: PlanSettings {
            keys,
            topics,
            tombstone_ttl_ms: config.tombstone_ttl_ms(),
            group: config.group_id(),
        },
        counts,
        states: HashMap::new(),
        applied: BTreeMap::new(),
        max_backoff,
        shutdown,
        batch_max: config.batch_max_records,
        linger: Duration::from_millis(config.batch_linger_ms),
        check_interval: config.check_interval(),
    };
    if with_redis!(run, "connect", |sink| sink.ping()).is_none() {
        return Ok(());
    }
    run.main_loop().await;
    Ok(())
}

fn field(tp: &TopicPartition) -> String {
    mark_field(&tp.0, tp.1)
}

impl Run {
    async fn main_loop(&mut self) {
        let mut last_check = Instant::now();
        let mut kafka_backoff = Backoff::new(self.max_backoff);
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            let (records, err) = self
                .source
                .batch(
                    self.batch_max,
                    self.check_interval,
                    self.linger,
                    &self.shutdown,
                )
                .await;
            match err {
                Some(e) => {
                    self.checks.kafka.set(false);
                    self.metrics.error("kafka");
                    tracing::warn!(error = %e, "kafka error");
                    if records.is_empty() && !kafka_backoff.wait(&self.shutdown).await {
                        break;
                    }
                }
                None => {
                    self.checks.kafka.set(true);
                    kafka_backoff = Backoff::new(self.max_backoff);
                }
            }
            self.take_assignments();
            let Some(moved) = self.resolve().await else {
                break;
            };
            // Records fetched before a seek are not where the partition now
            // reads from: they come again in order.
            let records: Vec<Record> = records
                .into_iter()
                .filter(|r| !moved.contains(&(r.topic.clone(), r.partition)))
                .collect();
            if !records.is_empty() && !self.apply(records).await {
                break;
            }
            if last_check.elapsed() >= self.check_interval {
                if !self.check().await {
                    break;
                }
                last_check = Instant::now();
            }
        }
        let offsets: Vec<(TopicPartition, i64)> = self
            .applied
            .iter()
            .filter(|(tp, _)| self.states.contains_key(*tp))
            .map(|(tp, o)| (tp.clone(), *o))
            .collect();
        match self.source.commit(&offsets, true).await {
            Ok(()) => tracing::info!(partitions = offsets.len(), "committed the applied offsets"),
            Err(e) => {
                tracing::warn!(error = %e, "final commit failed; the next owner replays from the previous commit")
            }
        }
    }

    fn take_assignments(&mut self) {
        for event in self.source.take_assignments() {
            match event {
                Assignment::Assigned(tps) => {
                    for tp in tps {
                        self.states.insert(tp, State::Unchecked);
                    }
                }
                Assignment::Revoked(tps) => {
                    for tp in tps {
                        self.states.remove(&tp);
                        self.applied.remove(&tp);
                    }
                }
            }
        }
    }

    /// Reads the marks of new partitions and moves the ones that must be
    /// replayed; returns the partitions it moved (`None` on shutdown).
    async fn resolve(&mut self) -> Option<HashSet<TopicPartition>> {
        let unchecked: Vec<TopicPartition> = self
            .states
            .iter()
            .filter(|(_, s)| **s == State::Unchecked)
            .map(|(tp, _)| tp.clone())
            .collect();
        if !unchecked.is_empty() {
            let fields: Vec<String> = unchecked.iter().map(field).collect();
            let marks = with_redis!(self, "read marks", |sink| sink.read_marks(&fields))?;
            let mut backoff = Backoff::new(self.max_backoff);
            let watermarks = loop {
                let all = futures::future::join_all(
                    unchecked
                        .iter()
                        .map(|tp| self.source.watermarks(&tp.0, tp.1)),
                )
                .await;
                match all.into_iter().collect::<Result<Vec<_>, _>>() {
                    Ok(w) => break w,
                    Err(e) => {
                        self.checks.kafka.set(false);
                        tracing::warn!(error = %e, "cannot read watermarks; retrying");
                        if !backoff.wait(&self.shutdown).await {
                            return None;
                        }
                    }
                }
            };
            let mut writes = Vec::new();
            let mut next = Vec::new();
            for ((tp, mark), (low, high)) in unchecked.into_iter().zip(marks).zip(watermarks) {
                let start = progress::start(mark, low, high);
                tracing::info!(topic = %tp.0, partition = tp.1, ?mark, low, high, state = ?start.state, "partition assigned");
                if let Some(m) = start.write_mark {
                    writes.push((field(&tp), m.encode()));
                }
                next.push((tp, start.state));
            }
            if !writes.is_empty() {
                for (t, n) in &self.counts {
                    writes.push((partition_count_field(t), n.to_string()));
                }
                with_redis!(self, "write marks", |sink| sink.write_meta(&writes))?;
            }
            self.states.extend(next);
        }
        let seeks: Vec<(TopicPartition, SeekTo, i64)> = self
            .states
            .iter()
            .filter_map(|(tp, s)| match s {
                State::Seek { to, target } => Some((tp.clone(), *to, *target)),
                _ => None,
            })
            .collect();
        let mut moved = HashSet::new();
        for (tp, to, target) in seeks {
            let offset = match to {
                SeekTo::Beginning => Offset::Beginning,
                SeekTo::Offset(o) => Offset::Offset(o),
            };
            match self.source.seek(&tp.0, tp.1, offset) {
                Ok(()) => {
                    tracing::info!(topic = %tp.0, partition = tp.1, ?to, target, "replaying partition into the read model");
                    self.metrics.rebuilds.inc();
                    self.applied.remove(&tp);
                    self.states.insert(tp.clone(), State::Rebuilding { target });
                    moved.insert(tp);
                }
                Err(e) => {
                    tracing::debug!(error = %e, topic = %tp.0, partition = tp.1, "cannot seek yet; retrying")
                }
            }
        }
        Some(moved)
    }

    /// Applies one batch and commits it. False on shutdown before the batch
    /// was applied (nothing is committed then).
    async fn apply(&mut self, records: Vec<Record>) -> bool {
        let records: Vec<Record> = records
            .into_iter()
            .filter(|r| {
                self.states
                    .get(&(r.topic.clone(), r.partition))
                    .is_some_and(|s| progress::accepts_records(*s))
            })
            .collect();
        if records.is_empty() {
            return true;
        }
        let started = Instant::now();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let plan = plan::plan(&records, &self.settings, now_ms);
        let Some(applied) = with_redis!(self, "apply", |sink| sink.apply(&plan.calls)) else {
            return false;
        };
        self.metrics
            .apply_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.batch_records.observe(records.len() as f64);
        self.metrics.written(applied.applied, applied.ignored);
        self.metrics.count("event", plan.events as u64);
        self.metrics.count("tombstone", plan.tombstones as u64);
        self.metrics.count("ignored", plan.ignored as u64);
        if !plan.dead_letters.is_empty() {
            let mut backoff = Backoff::new(self.max_backoff);
            loop {
                match self.dlq.write(&plan.dead_letters).await {
                    Ok(()) => break,
                    Err(e) => {
                        self.metrics.error("dead_letter");
                        tracing::warn!(error = %e, "cannot write dead letters; retrying");
                        if !backoff.wait(&self.shutdown).await {
                            return false;
                        }
                    }
                }
            }
            for d in &plan.dead_letters {
                tracing::warn!(topic = %d.topic, partition = d.partition, offset = d.offset, reason = %d.reason, "record sent to the dead-letter topic");
            }
            let n = plan.dead_letters.len() as u64;
            self.metrics.dead_letters.inc_by(n);
            self.metrics.count("dead_letter", n);
        }

        let mut marks = Vec::new();
        let mut after = Vec::new();
        for (tp, next) in &plan.next_offsets {
            if let Some(state) = self.states.get(tp) {
                let (mark, st) = progress::after_apply(*state, *next);
                marks.push((field(tp), mark));
                after.push((tp.clone(), *state, st, *next));
            }
        }
        let Some(missing) = with_redis!(self, "advance marks", |sink| sink.advance_marks(&marks))
        else {
            return false;
        };
        let mut commits = Vec::new();
        for (tp, before, st, next) in after {
            if missing.contains(&field(&tp)) {
                tracing::warn!(topic = %tp.0, partition = tp.1, "redis lost the read model; replaying the partition");
                self.states.insert(tp, State::Unchecked);
                continue;
            }
            if matches!(before, State::Rebuilding { .. }) && st == State::Live {
                tracing::info!(topic = %tp.0, partition = tp.1, offset = next, "partition replay complete");
            }
            self.states.insert(tp.clone(), st);
            self.applied.insert(tp.clone(), next);
            commits.push((tp, next));
        }
        match self.source.commit(&commits, false).await {
            Ok(()) => {
                self.metrics.commits.inc();
            }
            Err(e) => {
                self.metrics.error("commit");
                tracing::warn!(error = %e, "offset commit failed; a restart replays (harmlessly)");
            }
        }
        true
    }

    /// Checks that Redis still holds every mark, and finishes replays that
    /// reached their end without a record to say so. False on shutdown.
    async fn check(&mut self) -> bool {
        let tps: Vec<TopicPartition> = self
            .states
            .iter()
            .filter(|(_, s)| progress::accepts_records(**s))
            .map(|(tp, _)| tp.clone())
            .collect();
        if tps.is_empty() {
            return true;
        }
        let fields: Vec<String> = tps.iter().map(field).collect();
        let Some(marks) = with_redis!(self, "check marks", |sink| sink.read_marks(&fields)) else {
            return false;
        };
        for (tp, mark) in tps.iter().zip(marks) {
            if mark.is_none() {
                tracing::warn!(topic = %tp.0, partition = tp.1, "redis lost the read model; replaying the partition");
                self.states.insert(tp.clone(), State::Unchecked);
            }
        }
        let mut done = Vec::new();
        let mut idle = Vec::new();
        for (tp, pos) in self.source.positions() {
            match self.states.get(&tp) {
                Some(State::Rebuilding { target }) if pos >= *target => done.push((tp, pos)),
                Some(state) => {
                    let applied = self.applied.get(&tp).copied();
                    if let Some(o) = progress::idle_commit(*state, applied, pos) {
                        idle.push((tp, o));
                    }
                }
                None => {}
            }
        }
        self.commit_idle(idle).await;
        if done.is_empty() {
            return true;
        }
        let marks: Vec<(String, Mark)> = done
            .iter()
            .map(|(tp, pos)| (field(tp), Mark::Live(*pos)))
            .collect();
        let Some(missing) = with_redis!(self, "finish replay", |sink| sink.advance_marks(&marks))
        else {
            return false;
        };
        for (tp, pos) in done {
            if missing.contains(&field(&tp)) {
                self.states.insert(tp, State::Unchecked);
            } else {
                tracing::info!(topic = %tp.0, partition = tp.1, offset = pos, "partition replay complete");
                self.states.insert(tp, State::Live);
            }
        }
        true
    }

    /// Commits the positions of live partitions that stepped over commit
    /// markers with nothing to apply (the lag reads 0 at rest).
    async fn commit_idle(&mut self, idle: Vec<(TopicPartition, i64)>) {
        if idle.is_empty() {
            return;
        }
        match self.source.commit(&idle, false).await {
            Ok(()) => {
                self.metrics.commits.inc();
                self.applied.extend(idle);
            }
            Err(e) => {
                self.metrics.error("commit");
                tracing::warn!(error = %e, "offset commit failed; retried at the next check");
            }
        }
    }
}
