//! The consumer's configuration: command-line flags with environment
//! fallbacks. `paystream-consumer --help` is the reference for every flag.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Parser;
use paystream_core::envelope::change_topic;
use paystream_runtime::OpsArgs;
use paystream_runtime::kafka::KafkaArgs;

use crate::decode::Table;
use crate::redis_client::RedisArgs;

/// paystream cache consumer: applies the change topics to the Redis read model.
#[derive(Debug, Clone, Parser)]
#[command(name = "paystream-consumer", version, about, long_about = None, args_override_self = true)]
pub struct Config {
    /// Topic prefix of the change topics (the producer's `--topic-prefix`).
    #[arg(long, env = "PAYSTREAM_TOPIC_PREFIX", default_value = "paystream")]
    pub topic_prefix: String,
    /// Source database whose tables feed the model.
    #[arg(long, env = "PAYSTREAM_SOURCE_DATABASE", default_value = "payments")]
    pub database: String,
    /// Consumer group; defaults to `paystream-consumer-<topic prefix>`.
    #[arg(long, env = "PAYSTREAM_CONSUMER_GROUP")]
    pub group_id: Option<String>,
    /// Static group membership id (e.g. the pod name): a restarted instance
    /// takes its partitions back without waiting for the session timeout.
    #[arg(long, env = "PAYSTREAM_GROUP_INSTANCE_ID")]
    pub group_instance_id: Option<String>,
    /// Prefix of every read-model key; defaults to the topic prefix.
    #[arg(long, env = "PAYSTREAM_REDIS_KEY_PREFIX")]
    pub key_prefix: Option<String>,
    /// How long a deleted row's tombstone keeps late upserts out.
    #[arg(long, env = "PAYSTREAM_TOMBSTONE_TTL_SECS", default_value_t = 86_400)]
    pub tombstone_ttl_secs: u64,
    /// Apply a batch at this many records.
    #[arg(long, env = "PAYSTREAM_BATCH_MAX_RECORDS", default_value_t = 2000)]
    pub batch_max_records: usize,
    /// Apply a batch after waiting this long for more records.
    #[arg(long, env = "PAYSTREAM_BATCH_LINGER_MS", default_value_t = 5)]
    pub batch_linger_ms: u64,
    /// Writes per Redis pipeline.
    #[arg(long, env = "PAYSTREAM_PIPELINE_LEN", default_value_t = 500)]
    pub pipeline_len: usize,
    /// How often to check, while idle, that Redis still holds the model.
    #[arg(long, env = "PAYSTREAM_CHECK_INTERVAL_MS", default_value_t = 1000)]
    pub check_interval_ms: u64,
    /// Longest pause between retries of Redis or Kafka (exponential backoff).
    #[arg(long, env = "PAYSTREAM_MAX_BACKOFF_SECS", default_value_t = 2)]
    pub max_backoff_secs: u64,
    /// Dead-letter topic; defaults to `<topic prefix>.consumer.dlq`.
    #[arg(long, env = "PAYSTREAM_DLQ_TOPIC")]
    pub dlq_topic: Option<String>,
    /// Partitions of the dead-letter topic when the consumer creates it.
    #[arg(long, env = "PAYSTREAM_DLQ_PARTITIONS", default_value_t = 3)]
    pub dlq_partitions: i32,
    /// Replication factor of the dead-letter topic when the consumer creates it.
    #[arg(long, env = "PAYSTREAM_REPLICATION_FACTOR", default_value_t = 1)]
    pub replication_factor: i32,

    /// Redis connection.
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Kafka connection.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Operations server and logging.
    #[command(flatten)]
    pub ops: OpsArgs,
}

impl Config {
    /// The consumer group in force.
    pub fn group_id(&self) -> String {
        self.group_id
            .clone()
            .unwrap_or_else(|| format!("paystream-consumer-{}", self.topic_prefix))
    }

    /// The read-model key prefix in force.
    pub fn key_prefix(&self) -> String {
        self.key_prefix
            .clone()
            .unwrap_or_else(|| self.topic_prefix.clone())
    }

    /// The dead-letter topic in force.
    pub fn dlq_topic(&self) -> String {
        self.dlq_topic
            .clone()
            .unwrap_or_else(|| format!("{}.consumer.dlq", self.topic_prefix))
    }

    /// The change topics the model is built from.
    pub fn topics(&self) -> BTreeMap<String, Table> {
        [Table::Purchases, Table::Packages]
            .into_iter()
            .map(|t| {
                (
                    change_topic(&self.topic_prefix, &self.database, t.name()),
                    t,
                )
            })
            .collect()
    }

    /// The tombstone lifetime in milliseconds.
    pub fn tombstone_ttl_ms(&self) -> u64 {
        self.tombstone_ttl_secs.max(1).saturating_mul(1000)
    }

    /// The idle check period.
    pub fn check_interval(&self) -> Duration {
        Duration::from_millis(self.check_interval_ms.max(50))
    }

    /// Checks what clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        let ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        };
        if !ok(&self.topic_prefix) || !ok(&self.database) {
            return Err(format!(
                "--topic-prefix {:?} and --database {:?} must be non-empty and use only [A-Za-z0-9._-]",
                self.topic_prefix, self.database
            ));
        }
        paystream_core::readmodel::Keys::new(&self.key_prefix()).map_err(|e| e.to_string())?;
        if self.batch_max_records == 0 || self.pipeline_len == 0 {
            return Err("--batch-max-records and --pipeline-len must be at least 1".into());
        }
        if self.dlq_partitions < 1 || self.replication_factor < 1 {
            return Err("--dlq-partitions and --replication-factor must be at least 1".into());
        }
        self.redis.validate().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_topic_prefix() {
        let c = Config::try_parse_from(["c", "--topic-prefix", "ps"]).unwrap();
        c.validate().unwrap();
        assert_eq!(c.group_id(), "paystream-consumer-ps");
        assert_eq!(c.key_prefix(), "ps");
        assert_eq!(c.dlq_topic(), "ps.consumer.dlq");
        let topics: Vec<String> = c.topics().into_keys().collect();
        assert_eq!(
            topics,
            vec!["ps.payments.packages", "ps.payments.purchases"]
        );
        assert_eq!(c.tombstone_ttl_ms(), 86_400_000);
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let c = Config::try_parse_from(["c", "--key-prefix", "a{b}"]).unwrap();
        assert!(c.validate().unwrap_err().contains("a{b}"));
        let c = Config::try_parse_from(["c", "--batch-max-records", "0"]).unwrap();
        assert!(c.validate().is_err());
        let e = Config::try_parse_from(["c", "--redis-mode", "ring"]).unwrap_err();
        assert!(e.to_string().contains("ring"));
    }
}
