//! The consumer's Prometheus metrics, under the `paystream_consumer` prefix:
//! records read, lag per partition (from librdkafka's statistics), batch
//! size, apply latency, guarded writes applied or ignored, dead letters,
//! rebuilds and errors.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a per-partition metric.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: String,
}

/// Label of a counter split by kind.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// The kind.
    pub kind: String,
}

/// Handles to every consumer metric; cheap to clone.
#[derive(Clone)]
pub struct ConsumerMetrics {
    /// Records read, by kind (`event`, `tombstone`, `ignored`, `dead_letter`).
    pub records: Family<KindLabels, Counter>,
    /// Records behind the partition's end (last stable offset minus committed).
    pub lag: Family<PartitionLabels, Gauge>,
    /// Records per applied batch.
    pub batch_records: Histogram,
    /// Time to apply one batch to Redis (all pipelines).
    pub apply_seconds: Histogram,
    /// Guarded writes, by result (`applied`, `ignored`).
    pub writes: Family<KindLabels, Counter>,
    /// Records sent to the dead-letter topic.
    pub dead_letters: Counter,
    /// Partitions replayed from the beginning.
    pub rebuilds: Counter,
    /// Offset commits.
    pub commits: Counter,
    /// Errors by kind (`redis`, `kafka`, `dead_letter`, `commit`).
    pub errors: Family<KindLabels, Counter>,
}

fn kind(k: &str) -> KindLabels {
    KindLabels {
        kind: k.to_string(),
    }
}

impl ConsumerMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            records: Family::default(),
            lag: Family::default(),
            batch_records: Histogram::new(exponential_buckets(1.0, 2.0, 16)),
            apply_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            writes: Family::default(),
            dead_letters: Counter::default(),
            rebuilds: Counter::default(),
            commits: Counter::default(),
            errors: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("consumer");
        r.register("records", "Records read by kind", m.records.clone());
        r.register(
            "partition_lag",
            "Records behind the end of the partition",
            m.lag.clone(),
        );
        r.register(
            "batch_records",
            "Records per applied batch",
            m.batch_records.clone(),
        );
        r.register(
            "apply_seconds",
            "Time to apply one batch to Redis",
            m.apply_seconds.clone(),
        );
        r.register("writes", "Guarded Redis writes by result", m.writes.clone());
        r.register(
            "dead_letters",
            "Records sent to the dead-letter topic",
            m.dead_letters.clone(),
        );
        r.register(
            "rebuilds",
            "Partitions replayed from the beginning",
            m.rebuilds.clone(),
        );
        r.register("commits", "Offset commits", m.commits.clone());
        r.register("errors", "Errors by kind", m.errors.clone());
        m
    }

    /// Counts `n` records of `k`.
    pub fn count(&self, k: &str, n: u64) {
        if n > 0 {
            self.records.get_or_create(&kind(k)).inc_by(n);
        }
    }

    /// Counts guarded writes.
    pub fn written(&self, applied: u64, ignored: u64) {
        self.writes.get_or_create(&kind("applied")).inc_by(applied);
        self.writes.get_or_create(&kind("ignored")).inc_by(ignored);
    }

    /// Counts an error of `k`.
    pub fn error(&self, k: &str) {
        self.errors.get_or_create(&kind(k)).inc();
    }

    /// Sets a partition's lag.
    pub fn set_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.lag
            .get_or_create(&PartitionLabels {
                topic: topic.to_string(),
                partition: partition.to_string(),
            })
            .set(lag.max(0));
    }
}
