//! Writes dead letters to the dead-letter topic, creating the topic first if
//! it is missing (the brokers do not auto-create topics). A batch's dead
//! letters are acknowledged by the brokers before its offsets are committed,
//! so a crash can repeat a dead letter but never lose one.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use crate::deadletter::DeadLetter;

/// The dead-letter topic writer.
pub struct DeadLetterWriter {
    producer: FutureProducer,
    topic: String,
}

/// Creates `topic` (retention by time) unless it exists.
pub async fn ensure_topic(
    base: &ClientConfig,
    topic: &str,
    partitions: i32,
    replication_factor: i32,
) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = base.create()?;
    let new = NewTopic::new(
        topic,
        partitions,
        TopicReplication::Fixed(replication_factor),
    )
    .set("cleanup.policy", "delete");
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(30)))
        .request_timeout(Some(Duration::from_secs(10)));
    for r in admin.create_topics(&[new], &opts).await? {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(KafkaError::AdminOp(code)),
        }
    }
    Ok(())
}

impl DeadLetterWriter {
    /// A writer to `topic` (which must exist, see [`ensure_topic`]).
    pub fn new(base: &ClientConfig, topic: &str) -> Result<Self, KafkaError> {
        let producer: FutureProducer = base
            .clone()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "30000")
            .create()?;
        Ok(Self {
            producer,
            topic: topic.to_string(),
        })
    }

    /// Writes `letters` and waits until the brokers have them all.
    pub async fn write(&self, letters: &[DeadLetter]) -> Result<(), KafkaError> {
        let mut pending = Vec::with_capacity(letters.len());
        for d in letters {
            let value = serde_json::to_vec(d).unwrap_or_default();
            let key = d.raw_key();
            let mut rec: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.topic).payload(value.as_slice());
            if let Some(k) = &key {
                rec = rec.key(k.as_slice());
            }
            loop {
                match self.producer.send_result(rec) {
                    Ok(delivery) => {
                        pending.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        rec = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => return Err(e),
                }
            }
        }
        for delivery in pending {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(e),
                Err(_) => return Err(KafkaError::Canceled),
            }
        }
        Ok(())
    }
}
