//! The operator's Prometheus metrics, served by the shared ops server:
//! reconciles, their failures and duration, Kafka topic changes, cleanups
//! run by the finalizer, whether this
//! process leads (`paystream_operator_leader`), and every write the operator
//! makes to the apiserver, by kind and verb (the idle check reads
//! `paystream_operator_api_writes_total`), and every request it sends, reads
//! included, by verb and resource (`paystream_operator_api_requests_total`,
//! counted by the client itself: see [`crate::apiclient`]).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of an API write.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// Object kind.
    pub kind: String,
    /// apply, delete, handover, status, lease, event.
    pub verb: String,
}

/// Labels of an API request (read or write).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    /// Resource, with its subresource (`paymentpipelines/status`).
    pub resource: String,
}

/// Labels of a timed Kafka step.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    /// topics, checkpoint, lag.
    pub step: String,
}

/// Labels of a reconcile outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Error class.
    pub error: String,
}

/// Handles to the metrics; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    reconciles: Counter,
    errors: Family<ErrorLabels, Counter>,
    duration: Histogram,
    kafka: Family<StepLabels, Histogram>,
    writes: Family<WriteLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    topic_changes: Counter,
    cleanups: Counter,
    leader: Gauge,
}

impl Metrics {
    /// Registers the metrics under `operator_`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            reconciles: Counter::default(),
            errors: Family::default(),
            duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            kafka: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 15))
            }),
            writes: Family::default(),
            requests: Family::default(),
            topic_changes: Counter::default(),
            cleanups: Counter::default(),
            leader: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("operator");
        r.register("reconciles", "Reconciles run", m.reconciles.clone());
        r.register(
            "reconcile_errors",
            "Reconciles that failed, by error",
            m.errors.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            m.duration.clone(),
        );
        r.register(
            "kafka_step_duration_seconds",
            "Time a reconcile spent in each Kafka step (topics, checkpoint, lag)",
            m.kafka.clone(),
        );
        r.register(
            "api_writes",
            "Writes to the Kubernetes API, by kind and verb",
            m.writes.clone(),
        );
        r.register(
            "api_requests",
            "Requests sent to the Kubernetes API, reads and writes, by verb and resource",
            m.requests.clone(),
        );
        r.register(
            "topic_changes",
            "Kafka topics created, grown or reconfigured",
            m.topic_changes.clone(),
        );
        r.register(
            "cleanups",
            "Cleanups run by the finalizer (children and topics deleted), one per deleted pipeline",
            m.cleanups.clone(),
        );
        r.register(
            "leader",
            "1 while this process holds the leader Lease and runs the controller",
            m.leader.clone(),
        );
        m
    }

    /// Metrics registered nowhere (tests).
    pub fn unregistered() -> Self {
        Self::register(&mut Registry::default())
    }

    /// A reconcile finished after `took`.
    pub fn reconciled(&self, took: Duration) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
    }

    /// A reconcile's Kafka `step` took `took`.
    pub fn kafka_step(&self, step: &str, took: Duration) {
        self.kafka
            .get_or_create(&StepLabels { step: step.into() })
            .observe(took.as_secs_f64());
    }

    /// A reconcile failed with an error of class `error`.
    pub fn failed(&self, error: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                error: error.into(),
            })
            .inc();
    }

    /// One write to the apiserver.
    pub fn api_write(&self, kind: &str, verb: &str) {
        self.writes
            .get_or_create(&WriteLabels {
                kind: kind.into(),
                verb: verb.into(),
            })
            .inc();
    }

    /// One request sent to the apiserver.
    pub fn api_request(&self, verb: &str, resource: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                verb: verb.into(),
                resource: resource.into(),
            })
            .inc();
    }

    /// One topic change in Kafka.
    pub fn topic_changed(&self) {
        self.topic_changes.inc();
    }

    /// The finalizer cleaned up a pipeline.
    pub fn cleaned_up(&self) {
        self.cleanups.inc();
    }

    /// Whether this process leads (runs the controller).
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Total reconciles so far.
    pub fn reconcile_count(&self) -> u64 {
        self.reconciles.get()
    }
}
