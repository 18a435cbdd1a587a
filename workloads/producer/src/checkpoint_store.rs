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
    /// The records up to the end could not all be read in time: what was
    /// read may not hold the newest checkpoint, so none is returned.
    #[error(
        "reading checkpoint topic {topic} partition {partition}: reached offset {reached:?} of {to} within {timeout:?}"
    )]
    Incomplete {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The consumer's position when time ran out.
        reached: Option<i64>,
        /// The end it had to reach.
        to: i64,
        /// The time allowed.
        timeout: Duration,
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
        // The end of the range is known by the end-of-partition event.
        .set("enable.partition.eof", "true")
        // Records are there to read: do not let the broker wait for more.
        .set("fetch.wait.max.ms", "10")
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
        let range = Range {
            topic,
            partition,
            from: low,
            to: high,
        };
        if let Some(cp) = scan(&consumer, &range, source, timeout)? {
            latest = Some(cp);
        }
    }
    Ok(latest)
}

/// Offsets `[from, to)` of one partition of a checkpoint topic.
#[derive(Debug, Clone, Copy)]
pub struct Range<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: i32,
    /// First offset to read (the low watermark for the whole partition).
    pub from: i64,
    /// Where to stop: the last stable offset, read beforehand.
    pub to: i64,
}

/// The last checkpoint of `source` among the committed records of `range`,
/// read through `consumer`, which must use `read_committed` and
/// `enable.partition.eof` (the end-of-partition event ends the read); the
/// consumer's assignment is replaced. Reading from the previous end of a partition
/// finds the newest checkpoint without reading the partition again.
///
/// Blocking: call it from `spawn_blocking`.
pub fn scan(
    consumer: &BaseConsumer,
    range: &Range<'_>,
    source: &str,
    timeout: Duration,
) -> Result<Option<Checkpoint>, CheckpointReadError> {
    let topic = range.topic;
    let kafka = |source| CheckpointReadError::Kafka {
        topic: topic.to_string(),
        source,
    };
    if range.to <= range.from {
        return Ok(None);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, range.partition, Offset::Offset(range.from))
        .map_err(kafka)?;
    consumer.assign(&tpl).map_err(kafka)?;
    let mut latest = None;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let Some(msg) = consumer.poll(Duration::from_millis(50)) else {
            // No record: done when the position is at the end (the rest were
            // transaction markers or aborted records).
            let pos = consumer.position().ok().and_then(|p| {
                p.find_partition(topic, range.partition)
                    .and_then(|e| e.offset().to_raw())
            });
            if pos.is_some_and(|o| o >= range.to) {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(CheckpointReadError::Incomplete {
                    topic: topic.to_string(),
                    partition: range.partition,
                    reached: pos,
                    to: range.to,
                    timeout,
                });
            }
            continue;
        };
        let msg = match msg {
            Ok(m) => m,
            // The fetcher reached the partition's end, which is at or past
            // `to` (the end read before): everything in range was delivered,
            // including when the last records are transaction markers,
            // which move no position.
            Err(KafkaError::PartitionEOF(p)) if p == range.partition => break,
            Err(KafkaError::PartitionEOF(_)) => continue,
            Err(e) => return Err(kafka(e)),
        };
        if msg.partition() != range.partition {
            continue;
        }
        if let (Some(key), Some(payload)) = (msg.key(), msg.payload())
            && key == source.as_bytes()
        {
            let cp: Checkpoint =
                serde_json::from_slice(payload).map_err(|e| CheckpointReadError::Malformed {
                    topic: topic.to_string(),
                    offset: msg.offset(),
                    source: e,
                })?;
            latest = Some(cp);
        }
        if msg.offset() + 1 >= range.to {
            break;
        }
    }
    Ok(latest)
}
