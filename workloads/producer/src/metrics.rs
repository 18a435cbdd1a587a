//! The producer's Prometheus metrics: throughput (records, transactions,
//! commits), source lag (now minus the commit time of the last published
//! transaction), the checkpoint position, errors, reconnects and
//! backpressure. They are registered under the `paystream_producer` prefix.

use std::time::Duration;

use paystream_core::checkpoint::Checkpoint;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Label of an error counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Error kind: `mysql`, `kafka`, `decode`, `purged`, ...
    pub kind: String,
}

/// Handles to every producer metric; cheap to clone.
#[derive(Clone)]
pub struct ProducerMetrics {
    /// Records published (events and tombstones).
    pub records: Counter,
    /// Kafka transactions committed.
    pub commits: Counter,
    /// Kafka commit duration.
    pub commit_seconds: Histogram,
    /// Seconds between the source commit of the last published transaction and its publication.
    pub source_lag_seconds: Gauge<f64, AtomicU64>,
    /// Binlog offset of the checkpoint.
    pub checkpoint_pos: Gauge,
    /// Commit time of the checkpoint's last transaction, seconds since the epoch.
    pub checkpoint_ts_seconds: Gauge<f64, AtomicU64>,
    /// Rows read by snapshots.
    pub snapshot_rows: Counter,
    /// Errors by kind.
    pub errors: Family<ErrorLabels, Counter>,
    /// Reconnects to the database.
    pub reconnects: Counter,
    /// Times sending waited for librdkafka's queue to drain.
    pub backpressure_waits: Counter,
    /// Records written to the dead-letter topic (skip mode).
    pub dead_letters: Counter,
}

impl ProducerMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            records: Counter::default(),
            commits: Counter::default(),
            commit_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            source_lag_seconds: Gauge::default(),
            checkpoint_pos: Gauge::default(),
            checkpoint_ts_seconds: Gauge::default(),
            snapshot_rows: Counter::default(),
            errors: Family::default(),
            reconnects: Counter::default(),
            backpressure_waits: Counter::default(),
            dead_letters: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("producer");
        r.register(
            "records",
            "Records published to change topics",
            m.records.clone(),
        );
        r.register(
            "kafka_commits",
            "Kafka transactions committed",
            m.commits.clone(),
        );
        r.register(
            "kafka_commit_seconds",
            "Duration of a Kafka transaction commit",
            m.commit_seconds.clone(),
        );
        r.register(
            "source_lag_seconds",
            "Now minus the source commit time of the last published transaction",
            m.source_lag_seconds.clone(),
        );
        r.register(
            "checkpoint_position",
            "Binlog offset of the checkpoint",
            m.checkpoint_pos.clone(),
        );
        r.register(
            "checkpoint_timestamp_seconds",
            "Source commit time of the checkpoint's last transaction",
            m.checkpoint_ts_seconds.clone(),
        );
        r.register(
            "snapshot_rows",
            "Rows read by snapshots",
            m.snapshot_rows.clone(),
        );
        r.register("errors", "Errors by kind", m.errors.clone());
        r.register(
            "reconnects",
            "Reconnects to the source database",
            m.reconnects.clone(),
        );
        r.register(
            "backpressure_waits",
            "Times publishing waited for the Kafka queue to drain",
            m.backpressure_waits.clone(),
        );
        r.register(
            "dead_letters",
            "Records sent to the dead-letter topic",
            m.dead_letters.clone(),
        );
        m
    }

    /// Counts an error of `kind`.
    pub fn error(&self, kind: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// Records a committed Kafka transaction of `records` records.
    pub fn record_commit(&self, records: u64, cp: &Checkpoint, took: Duration) {
        self.records.inc_by(records);
        self.commits.inc();
        self.commit_seconds.observe(took.as_secs_f64());
        self.checkpoint_pos
            .set(i64::try_from(cp.pos).unwrap_or(i64::MAX));
        self.checkpoint_ts_seconds
            .set(cp.last_event_ts_ms as f64 / 1000.0);
        if records > 0 && cp.last_event_ts_ms > 0 {
            let now_ms = chrono::Utc::now().timestamp_millis();
            self.source_lag_seconds
                .set((now_ms - cp.last_event_ts_ms).max(0) as f64 / 1000.0);
        }
    }
}
