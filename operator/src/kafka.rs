//! One pair of Kafka clients per Kafka cluster, shared by every pipeline
//! on it: an admin client (topics) and a reader (metadata, watermarks,
//! group offsets, checkpoint records). A librdkafka client costs threads,
//! connections and ~170 ms to create and destroy, so making them per
//! reconcile capped the operator at about a dozen pipelines a second; shared,
//! a status refresh is a few round trips. Clusters are keyed by their
//! client settings (credentials included, so a rotated password makes new
//! clients), and clients unused for [`IDLE`] are dropped. Blocking
//! librdkafka calls run on the blocking pool.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use paystream_core::checkpoint::Checkpoint;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;

/// How long an unused cluster's clients are kept.
pub const IDLE: Duration = Duration::from_secs(600);

/// The clients of one Kafka cluster.
pub struct Cluster {
    /// Topic administration.
    pub(crate) admin: AdminClient<DefaultClientContext>,
    /// Metadata, watermarks and group offsets (all thread-safe), and
    /// checkpoint scans (which assign: one at a time, under `scan`).
    pub(crate) reader: BaseConsumer,
    /// Serialises the reader's assign-and-poll checkpoint scans.
    pub(crate) scan: Mutex<()>,
    /// The last checkpoint seen per checkpoint topic, with the partition
    /// ends it was read up to: an unchanged end means an unchanged
    /// checkpoint, and a moved one is read from the old end on.
    pub(crate) checkpoints: Mutex<HashMap<String, SeenCheckpoint>>,
    /// Timeout of each Kafka request.
    pub(crate) timeout: Duration,
}

/// A checkpoint topic as last read.
#[derive(Debug, Clone, Default)]
pub struct SeenCheckpoint {
    /// Partition -> the offset read up to (the last stable offset then).
    pub ends: BTreeMap<i32, i64>,
    /// The newest checkpoint found.
    pub checkpoint: Option<Checkpoint>,
}

impl Cluster {
    fn connect(config: &ClientConfig, timeout: Duration) -> Result<Self, KafkaError> {
        let admin = config.create()?;
        let reader = config
            .clone()
            .set("group.id", "paystream-operator")
            .set("enable.auto.commit", "false")
            .set("allow.auto.create.topics", "false")
            .set("isolation.level", "read_committed")
            // Checkpoint scans end at the end-of-partition event.
            .set("enable.partition.eof", "true")
            // Checkpoint scans read what is there: no broker-side wait.
            .set("fetch.wait.max.ms", "10")
            .create()?;
        Ok(Self {
            admin,
            reader,
            scan: Mutex::new(()),
            checkpoints: Mutex::new(HashMap::new()),
            timeout,
        })
    }

    /// The partition ids of `topic`, from the reader's metadata; none when
    /// the topic does not exist. Blocking.
    pub(crate) fn partition_ids(&self, topic: &str) -> Result<Vec<i32>, KafkaError> {
        let metadata = self.reader.fetch_metadata(Some(topic), self.timeout)?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect())
    }

    pub(crate) fn seen(&self, topic: &str) -> Option<SeenCheckpoint> {
        self.checkpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(topic)
            .cloned()
    }

    pub(crate) fn remember(&self, topic: &str, seen: SeenCheckpoint) {
        self.checkpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(topic.to_string(), seen);
    }
}

struct Entry {
    cluster: Arc<Cluster>,
    used: Instant,
}

/// The shared clients, per cluster.
pub struct KafkaClients {
    clusters: Mutex<HashMap<String, Entry>>,
    timeout: Duration,
}

/// The key of a cluster: every client setting, in order.
fn key(config: &ClientConfig) -> String {
    config
        .config_map()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl KafkaClients {
    /// No clients yet; each Kafka request times out after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            clusters: Mutex::new(HashMap::new()),
            timeout,
        }
    }

    /// The clients for `config`, made on first use. Clusters unused for
    /// [`IDLE`] are dropped (on the blocking pool: destroying a client
    /// waits for its threads).
    pub fn get(&self, config: &ClientConfig) -> Result<Arc<Cluster>, KafkaError> {
        let now = Instant::now();
        let mut clusters = self.clusters.lock().unwrap_or_else(PoisonError::into_inner);
        let idle: Vec<String> = clusters
            .iter()
            .filter(|(_, e)| now.duration_since(e.used) > IDLE)
            .map(|(k, _)| k.clone())
            .collect();
        for k in idle {
            if let Some(e) = clusters.remove(&k) {
                drop_off_thread(e.cluster);
            }
        }
        let k = key(config);
        if let Some(e) = clusters.get_mut(&k) {
            e.used = now;
            return Ok(e.cluster.clone());
        }
        let cluster = Arc::new(Cluster::connect(config, self.timeout)?);
        clusters.insert(
            k,
            Entry {
                cluster: cluster.clone(),
                used: now,
            },
        );
        Ok(cluster)
    }

    /// How many clusters have clients.
    pub fn len(&self) -> usize {
        self.clusters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// True when no cluster has clients.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn drop_off_thread(cluster: Arc<Cluster>) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn_blocking(move || drop(cluster));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clusters_are_told_apart_by_every_setting() {
        let mut a = ClientConfig::new();
        a.set("bootstrap.servers", "k:9092");
        let mut b = a.clone();
        assert_eq!(key(&a), key(&b));
        b.set("sasl.password", "rotated");
        assert_ne!(key(&a), key(&b));
    }
}
