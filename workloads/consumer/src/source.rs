//! Reads the change topics: a Kafka consumer group with `read_committed`
//! isolation, manual offset commits and cooperative rebalancing. Records come
//! out in batches (up to a count, or until a linger time passes). Partition
//! assignments and revocations are queued for the pipeline, which decides
//! where each new partition starts; librdkafka's statistics feed the lag
//! gauges. This module moves data only: it decides nothing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::{ClientConfig, ClientContext};
use tokio_util::sync::CancellationToken;

use crate::metrics::ConsumerMetrics;
use crate::plan::{Record, TopicPartition};

/// Group session settings applied unless the operator set them
/// (docs/adr/0011-consumer-takeover.md).
pub const SESSION_DEFAULTS: [(&str, &str); 2] = [
    ("session.timeout.ms", "6000"),
    ("heartbeat.interval.ms", "1000"),
];

/// A change of assignment, as librdkafka reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    /// These partitions are now ours.
    Assigned(Vec<TopicPartition>),
    /// These partitions are no longer ours.
    Revoked(Vec<TopicPartition>),
}

/// The consumer's context: queues rebalances and turns statistics into lag.
pub struct SourceContext {
    events: Mutex<Vec<Assignment>>,
    metrics: ConsumerMetrics,
}

fn partitions(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl ClientContext for SourceContext {
    fn stats(&self, statistics: Statistics) {
        for (name, topic) in &statistics.topics {
            for (p, s) in &topic.partitions {
                if *p < 0 || s.fetch_state == "none" || s.fetch_state == "stopped" {
                    continue;
                }
                let lag = if s.consumer_lag >= 0 {
                    s.consumer_lag
                } else if s.app_offset >= 0 && s.ls_offset >= 0 {
                    s.ls_offset - s.app_offset
                } else {
                    continue;
                };
                self.metrics.set_lag(name, *p, lag);
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let event = match rebalance {
            Rebalance::Assign(tpl) => Assignment::Assigned(partitions(tpl)),
            Rebalance::Revoke(tpl) => Assignment::Revoked(partitions(tpl)),
            Rebalance::Error(e) => {
                tracing::warn!(error = %e, "rebalance error");
                return;
            }
        };
        tracing::info!(?event, "partition assignment changed");
        if let Ok(mut q) = self.events.lock() {
            q.push(event);
        }
    }
}

/// Source settings.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// Consumer group.
    pub group_id: String,
    /// Static membership id.
    pub group_instance_id: Option<String>,
    /// Topics to subscribe to.
    pub topics: Vec<String>,
}

/// The change-topic reader.
pub struct Source {
    consumer: Arc<StreamConsumer<SourceContext>>,
}

impl Source {
    /// Creates the consumer (it joins the group on [`Source::subscribe`]).
    pub fn new(
        base: &ClientConfig,
        settings: &SourceSettings,
        metrics: ConsumerMetrics,
    ) -> Result<Self, KafkaError> {
        let mut c = base.clone();
        c.set("group.id", &settings.group_id)
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("statistics.interval.ms", "5000")
            .set("topic.metadata.refresh.interval.ms", "10000");
        // A dead member holds its partitions until its session times out:
        // 6 s (the broker's default minimum) instead of librdkafka's 45 s.
        // Heartbeats come from librdkafka's own thread, so a busy batch does
        // not miss them. Flags given with --kafka-property win.
        for (k, v) in SESSION_DEFAULTS {
            if base.get(k).is_none() {
                c.set(k, v);
            }
        }
        if let Some(id) = &settings.group_instance_id {
            c.set("group.instance.id", id);
        }
        let context = SourceContext {
            events: Mutex::new(Vec::new()),
            metrics,
        };
        let consumer: StreamConsumer<SourceContext> = c.create_with_context(context)?;
        Ok(Self {
            consumer: Arc::new(consumer),
        })
    }

    /// Partition counts of `topics`; an error until every topic exists.
    pub async fn partition_counts(&self, topics: &[String]) -> Result<Vec<(String, i32)>, String> {
        let consumer = self.consumer.clone();
        let topics = topics.to_vec();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for t in &topics {
                let md = consumer
                    .fetch_metadata(Some(t), Duration::from_secs(5))
                    .map_err(|e| format!("metadata of {t}: {e}"))?;
                let n = md
                    .topics()
                    .iter()
                    .filter(|m| m.name() == t && m.error().is_none())
                    .map(|m| m.partitions().len())
                    .next()
                    .unwrap_or(0);
                if n == 0 {
                    return Err(format!("topic {t} does not exist yet"));
                }
                out.push((t.clone(), i32::try_from(n).unwrap_or(i32::MAX)));
            }
            Ok(out)
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Joins the group.
    pub fn subscribe(&self, topics: &[String]) -> Result<(), KafkaError> {
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        self.consumer.subscribe(&names)
    }

    /// Assignment changes since the last call.
    pub fn take_assignments(&self) -> Vec<Assignment> {
        match self.consumer.context().events.lock() {
            Ok(mut q) => std::mem::take(&mut *q),
            Err(_) => Vec::new(),
        }
    }

    /// Waits up to `idle` for a first record, then collects more until `max`
    /// records or `linger` has passed. Returns early, with what it has, on
    /// shutdown or a Kafka error (which it returns alongside).
    pub async fn batch(
        &self,
        max: usize,
        idle: Duration,
        linger: Duration,
        shutdown: &CancellationToken,
    ) -> (Vec<Record>, Option<KafkaError>) {
        let mut out = Vec::new();
        let first = tokio::select! {
            _ = shutdown.cancelled() => return (out, None),
            r = tokio::time::timeout(idle, self.consumer.recv()) => r,
        };
        match first {
            Err(_) => return (out, None),
            Ok(Err(e)) => return (out, Some(e)),
            Ok(Ok(m)) => out.push(record(&m)),
        }
        let deadline = Instant::now() + linger;
        while out.len() < max {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(left, self.consumer.recv()).await {
                Err(_) => break,
                Ok(Ok(m)) => out.push(record(&m)),
                Ok(Err(e)) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    /// Low and high watermarks of a partition.
    pub async fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64), KafkaError> {
        let consumer = self.consumer.clone();
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || {
            consumer.fetch_watermarks(&topic, partition, Duration::from_secs(10))
        })
        .await
        .unwrap_or(Err(KafkaError::Canceled))
    }

    /// Moves a partition's position (it must be assigned and fetching).
    pub fn seek(&self, topic: &str, partition: i32, to: Offset) -> Result<(), KafkaError> {
        self.consumer
            .seek(topic, partition, to, Duration::from_secs(2))
    }

    /// Current positions (next offset to read, past control records).
    pub fn positions(&self) -> Vec<(TopicPartition, i64)> {
        match self.consumer.position() {
            Ok(tpl) => tpl
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
                    _ => None,
                })
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Commits `offsets` (the next offset to read per partition). `sync`
    /// waits for the broker's answer.
    pub async fn commit(
        &self,
        offsets: &[(TopicPartition, i64)],
        sync: bool,
    ) -> Result<(), KafkaError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in offsets {
            tpl.add_partition_offset(t, *p, Offset::Offset(*o))?;
        }
        if sync {
            let consumer = self.consumer.clone();
            tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync))
                .await
                .unwrap_or(Err(KafkaError::Canceled))
        } else {
            self.consumer.commit(&tpl, CommitMode::Async)
        }
    }
}

fn record<M: Message>(m: &M) -> Record {
    Record {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().map(<[u8]>::to_vec),
    }
}
