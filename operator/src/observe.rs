//! Reads what the status reports from Kafka through the cluster's shared
//! clients: the producer's last committed checkpoint (the producer's own
//! record reader, from where the last read ended: an idle pipeline costs
//! one watermark request) and the consumer group's lag, the sum over the
//! change topics' partitions of the high watermark minus the committed
//! offset (the low watermark when nothing is committed, as the consumer
//! starts from the earliest record). Blocking librdkafka calls run on the
//! blocking pool.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError};

use paystream_core::checkpoint::{Checkpoint, checkpoint_topic};
use paystream_producer::checkpoint_store::{self, Range};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::group_offsets::{self, GroupOffsetsError};
use crate::kafka::{Cluster, SeenCheckpoint};

/// Reading from Kafka failed.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// The checkpoint could not be read.
    #[error(transparent)]
    Checkpoint(#[from] checkpoint_store::CheckpointReadError),
    /// Metadata or watermarks could not be read.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The group's committed offsets could not be read.
    #[error(transparent)]
    Offsets(#[from] GroupOffsetsError),
    /// The blocking task died.
    #[error("observer task failed: {0}")]
    Join(String),
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ObserveError> + Send + 'static,
) -> Result<T, ObserveError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ObserveError::Join(e.to_string()))?
}

/// The last committed checkpoint of the source `prefix`.
pub async fn checkpoint(
    cluster: &Arc<Cluster>,
    prefix: &str,
) -> Result<Option<Checkpoint>, ObserveError> {
    let cluster = cluster.clone();
    let prefix = prefix.to_string();
    blocking(move || checkpoint_blocking(&cluster, &prefix)).await
}

fn checkpoint_blocking(
    cluster: &Cluster,
    prefix: &str,
) -> Result<Option<Checkpoint>, ObserveError> {
    let topic = checkpoint_topic(prefix);
    let timeout = cluster.timeout;
    let partitions = cluster.partition_ids(&topic)?;
    let mut seen = cluster.seen(&topic).unwrap_or_default();
    let mut ranges = Vec::new();
    for partition in partitions {
        // read_committed: the high end is the last stable offset.
        let (low, high) = cluster
            .reader
            .fetch_watermarks(&topic, partition, timeout)?;
        ranges.push((partition, low, high));
    }
    let ends: BTreeMap<i32, i64> = ranges.iter().map(|&(p, _, high)| (p, high)).collect();
    if ends == seen.ends {
        return Ok(seen.checkpoint);
    }
    if ranges
        .iter()
        .any(|(p, _, high)| seen.ends.get(p).is_some_and(|end| high < end))
    {
        // The topic was recreated: what was read no longer exists.
        seen = SeenCheckpoint::default();
    }
    let mut latest = seen.checkpoint;
    {
        let _one_scan = cluster.scan.lock().unwrap_or_else(PoisonError::into_inner);
        for (partition, low, to) in ranges {
            let range = Range {
                topic: &topic,
                partition,
                from: seen.ends.get(&partition).map_or(low, |&end| end.max(low)),
                to,
            };
            if let Some(cp) = checkpoint_store::scan(&cluster.reader, &range, prefix, timeout)? {
                latest = Some(cp);
            }
        }
    }
    cluster.remember(
        &topic,
        SeenCheckpoint {
            ends,
            checkpoint: latest.clone(),
        },
    );
    Ok(latest)
}

/// Total lag of `group` on `topics` (missing topics count 0).
pub async fn consumer_lag(
    cluster: &Arc<Cluster>,
    group: &str,
    topics: &[String],
) -> Result<i64, ObserveError> {
    let cluster = cluster.clone();
    let group = group.to_string();
    let topics = topics.to_vec();
    blocking(move || lag_blocking(&cluster, &group, &topics)).await
}

fn lag_blocking(cluster: &Cluster, group: &str, topics: &[String]) -> Result<i64, ObserveError> {
    let timeout = cluster.timeout;
    let mut partitions = TopicPartitionList::new();
    for topic in topics {
        for p in cluster.partition_ids(topic)? {
            partitions.add_partition(topic, p);
        }
    }
    if partitions.count() == 0 {
        return Ok(0);
    }
    let committed = group_offsets::committed(cluster.reader.client(), group, timeout)?;
    let low = ends(cluster, &partitions, Offset::Beginning)?;
    let high = ends(cluster, &partitions, Offset::End)?;
    let mut total = 0i64;
    for e in partitions.elements() {
        let key = (e.topic().to_string(), e.partition());
        let (Some(&low), Some(&high)) = (low.get(&key), high.get(&key)) else {
            continue;
        };
        let from = committed.get(&key).copied().unwrap_or(low);
        total += partition_lag(from, low, high);
    }
    Ok(total)
}

/// The first (`Offset::Beginning`) or next (`Offset::End`) offset of each
/// of `partitions`, in one request per broker instead of one per partition.
fn ends(
    cluster: &Cluster,
    partitions: &TopicPartitionList,
    which: Offset,
) -> Result<HashMap<(String, i32), i64>, ObserveError> {
    let mut query = TopicPartitionList::new();
    for e in partitions.elements() {
        query.add_partition_offset(e.topic(), e.partition(), which)?;
    }
    let answer = cluster.reader.offsets_for_times(query, cluster.timeout)?;
    let mut out = HashMap::new();
    for e in answer.elements() {
        e.error()?;
        if let Offset::Offset(o) = e.offset() {
            out.insert((e.topic().to_string(), e.partition()), o);
        }
    }
    Ok(out)
}

/// Lag of one partition: records from the consumer's position (never below
/// the low watermark) to the high watermark. Pure.
pub fn partition_lag(committed: i64, low: i64, high: i64) -> i64 {
    (high - committed.max(low)).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_lag_counts_from_the_committed_offset() {
        assert_eq!(partition_lag(5, 0, 10), 5);
        assert_eq!(
            partition_lag(0, 4, 10),
            6,
            "compacted away records are not lag"
        );
        assert_eq!(partition_lag(12, 0, 10), 0);
    }
}
