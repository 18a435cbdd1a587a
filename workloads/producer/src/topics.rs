//! Makes sure the producer's topics exist before it writes to them: one change
//! topic per captured table, the compacted checkpoint topic and the
//! dead-letter topic. Creation is idempotent (an existing topic is left as it
//! is: partition changes belong to the operator), and each topic is checked
//! once per process.

use std::collections::HashSet;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// Topic layout settings.
#[derive(Debug, Clone)]
pub struct TopicSettings {
    /// Partitions of a new change topic.
    pub partitions: i32,
    /// Replication factor of new topics.
    pub replication_factor: i32,
}

/// A topic could not be created.
#[derive(Debug, thiserror::Error)]
#[error("cannot create topic {topic}: {source}")]
pub struct TopicError {
    topic: String,
    #[source]
    source: KafkaError,
}

/// Creates topics on demand and remembers which exist.
pub struct TopicEnsurer {
    admin: AdminClient<DefaultClientContext>,
    settings: TopicSettings,
    known: HashSet<String>,
}

/// What a topic is for, which decides its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// A change topic: compacted and deleted by time, so the latest image of
    /// every key survives for rebuilds while old history ages out.
    Change,
    /// The checkpoint topic: compacted, one partition.
    Checkpoint,
    /// The dead-letter topic: kept by time.
    DeadLetter,
}

impl TopicEnsurer {
    /// An ensurer using `config` for its admin client.
    pub fn new(config: &ClientConfig, settings: TopicSettings) -> Result<Self, KafkaError> {
        Ok(Self {
            admin: config.create()?,
            settings,
            known: HashSet::new(),
        })
    }

    /// Creates `topic` if it does not exist yet.
    pub async fn ensure(&mut self, topic: &str, kind: TopicKind) -> Result<(), TopicError> {
        if self.known.contains(topic) {
            return Ok(());
        }
        let (partitions, cleanup) = match kind {
            TopicKind::Change => (self.settings.partitions, "compact,delete"),
            TopicKind::Checkpoint => (1, "compact"),
            TopicKind::DeadLetter => (self.settings.partitions.min(3), "delete"),
        };
        let mut new = NewTopic::new(
            topic,
            partitions,
            TopicReplication::Fixed(self.settings.replication_factor),
        )
        .set("cleanup.policy", cleanup);
        if kind == TopicKind::Change {
            // Keep a week of history; compaction keeps the latest per key.
            new = new.set("retention.ms", "604800000");
        }
        let opts = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(30)))
            .request_timeout(Some(Duration::from_secs(10)));
        let results = self
            .admin
            .create_topics(&[new], &opts)
            .await
            .map_err(|source| TopicError {
                topic: topic.to_string(),
                source,
            })?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(TopicError {
                        topic: topic.to_string(),
                        source: KafkaError::AdminOp(code),
                    });
                }
            }
        }
        tracing::debug!(topic, "topic ready");
        self.known.insert(topic.to_string());
        Ok(())
    }
}
