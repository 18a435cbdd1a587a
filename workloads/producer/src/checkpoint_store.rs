//! Reads the last committed checkpoint of a source from the compacted
//! checkpoint topic. It reads with `read_committed` from the beginning of the
//! topic up to the high watermark and keeps the last record for the source's
//! key, so it sees exactly what a committed Kafka transaction wrote.

use std::time::Duration;

use paystream_core::checkpoint::Checkpoint;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// The checkpoint could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointReadError {
    /// Kafka failed.
    #[error("reading checkpoint topic {topic}: {source}")]
    Kafka {
        /// The topic.
        topic: String,
        /// The cause.
        #[source]
        source: KafkaError,
    },
    /// A checkpoint record is not valid JSON of the expected shape.
    #[error("checkpoint record at {topic} offset {offset} is malformed: {source}")]
    Malformed {
        /// The topic.
        topic: String,
        /// Its offset.
        offset: i64,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// Returns the last committed checkpoint of `source` in `topic`, if any.
///
/// Blocking: call it from `spawn_blocking`.
pub fn read_latest(
    base: &ClientConfig,
    topic: &str,
    source: &str,
    timeout: Duration,
) -> Result<Option<Checkpoint>, CheckpointReadError> {
    let kafka = |source| CheckpointReadError::Kafka {
        topic: topic.to_string(),
        source,
    };
    let consumer: BaseConsumer = base
        .clone()
        .set("group.id", format!("{source}-checkpoint-reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(kafka)?;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(kafka)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut latest: Option<Checkpoint> = None;
    for partition in partitions {
        // For read_committed, the watermark's high end is the last stable offset.
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, timeout)
            .map_err(kafka)?;
        if high <= low {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Beginning)
            .map_err(kafka)?;
        consumer.assign(&tpl).map_err(kafka)?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
                if std::time::Instant::now() > deadline {
                    break;
                }
                // No more committed records before the watermark: the rest are
                // transaction markers or aborted.
                let pos = consumer.position().ok().and_then(|p| {
                    p.find_partition(topic, partition)
                        .and_then(|e| e.offset().to_raw())
                });
                if pos.is_some_and(|o| o >= high) {
                    break;
                }
                continue;
            };
            let msg = msg.map_err(kafka)?;
            if let (Some(key), Some(payload)) = (msg.key(), msg.payload())
                && key == source.as_bytes()
            {
                let cp: Checkpoint = serde_json::from_slice(payload).map_err(|e| {
                    CheckpointReadError::Malformed {
                        topic: topic.to_string(),
                        offset: msg.offset(),
                        source: e,
                    }
                })?;
                latest = Some(cp);
            }
            if msg.offset() + 1 >= high {
                break;
            }
        }
    }
    Ok(latest)
}
