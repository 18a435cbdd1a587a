//! Reads what the status reports from Kafka: the producer's last committed
//! checkpoint (through the producer's own reader) and the consumer group's
//! lag, the sum over the change topics' partitions of the high watermark
//! minus the committed offset (the low watermark when nothing is committed,
//! as the consumer starts from the earliest record). Blocking librdkafka
//! calls run on the blocking pool.

use std::time::Duration;

use paystream_core::checkpoint::{Checkpoint, checkpoint_topic};
use paystream_producer::checkpoint_store;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// Reading from Kafka failed.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// The checkpoint could not be read.
    #[error(transparent)]
    Checkpoint(#[from] checkpoint_store::CheckpointReadError),
    /// Offsets or watermarks could not be read.
    #[error("reading consumer lag: {0}")]
    Lag(#[from] KafkaError),
    /// The blocking task died.
    #[error("observer task failed: {0}")]
    Join(String),
}

/// The last committed checkpoint of the source `prefix`.
pub async fn checkpoint(
    base: &ClientConfig,
    prefix: &str,
    timeout: Duration,
) -> Result<Option<Checkpoint>, ObserveError> {
    let base = base.clone();
    let prefix = prefix.to_string();
    tokio::task::spawn_blocking(move || {
        checkpoint_store::read_latest(&base, &checkpoint_topic(&prefix), &prefix, timeout)
    })
    .await
    .map_err(|e| ObserveError::Join(e.to_string()))?
    .map_err(ObserveError::from)
}

/// Total lag of `group` on `topics` (missing topics count 0).
pub async fn consumer_lag(
    base: &ClientConfig,
    group: &str,
    topics: &[String],
    timeout: Duration,
) -> Result<i64, ObserveError> {
    let base = base.clone();
    let group = group.to_string();
    let topics = topics.to_vec();
    tokio::task::spawn_blocking(move || lag_blocking(&base, &group, &topics, timeout))
        .await
        .map_err(|e| ObserveError::Join(e.to_string()))?
}

fn lag_blocking(
    base: &ClientConfig,
    group: &str,
    topics: &[String],
    timeout: Duration,
) -> Result<i64, ObserveError> {
    let consumer: BaseConsumer = base
        .clone()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(None, timeout)?;
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        if topics.iter().any(|n| n == t.name()) && t.error().is_none() {
            for p in t.partitions() {
                tpl.add_partition(t.name(), p.id());
            }
        }
    }
    if tpl.count() == 0 {
        return Ok(0);
    }
    let committed = consumer.committed_offsets(tpl, timeout)?;
    let mut total = 0i64;
    for e in committed.elements() {
        let (low, high) = consumer.fetch_watermarks(e.topic(), e.partition(), timeout)?;
        let from = match e.offset() {
            Offset::Offset(o) => o,
            _ => low,
        };
        total += partition_lag(from, low, high);
    }
    Ok(total)
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
