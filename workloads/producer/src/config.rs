//! The producer's configuration: command-line flags with environment
//! fallbacks. `paystream-producer --help` is the reference for every flag.

use std::time::Duration;

use clap::{Parser, ValueEnum};
use paystream_runtime::OpsArgs;
use paystream_runtime::kafka::KafkaArgs;

/// When to take a snapshot of the captured tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SnapshotMode {
    /// Snapshot when there is no checkpoint, then stream (the default).
    Initial,
    /// Never snapshot: without a checkpoint, stream from the current binlog end.
    Never,
    /// Like `initial`, and snapshot again when the checkpoint's binlog has
    /// been purged from the server.
    #[value(name = "when_needed", alias = "when-needed")]
    WhenNeeded,
}

/// What to do with a row that cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnDecodeError {
    /// Stop the stream with an error naming the position (the default).
    Stop,
    /// Write the raw event's coordinates and the reason to the dead-letter
    /// topic and go on.
    Skip,
}

/// How to secure the database connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsMode {
    /// No TLS.
    Disabled,
    /// TLS, verifying the server certificate against `--mysql-tls-ca` (or the
    /// system roots) and its host name.
    VerifyIdentity,
    /// TLS, verifying the certificate chain but not the host name.
    VerifyCa,
}

/// paystream CDC producer: MariaDB/MySQL binlog to Kafka, exactly once.
#[derive(Debug, Clone, Parser)]
#[command(name = "paystream-producer", version, about, long_about = None, args_override_self = true)]
pub struct Config {
    /// Database host.
    #[arg(long, env = "PAYSTREAM_MYSQL_HOST", default_value = "127.0.0.1")]
    pub mysql_host: String,
    /// Database port.
    #[arg(long, env = "PAYSTREAM_MYSQL_PORT", default_value_t = 3306)]
    pub mysql_port: u16,
    /// Replication user (needs REPLICATION SLAVE, BINLOG MONITOR and SELECT on the captured tables).
    #[arg(long, env = "PAYSTREAM_MYSQL_USER", default_value = "paystream_cdc")]
    pub mysql_user: String,
    /// Password of the replication user.
    #[arg(
        long,
        env = "PAYSTREAM_MYSQL_PASSWORD",
        hide_env_values = true,
        default_value = ""
    )]
    pub mysql_password: String,
    /// TLS to the database.
    #[arg(long, env = "PAYSTREAM_MYSQL_TLS", value_enum, default_value_t = TlsMode::Disabled)]
    pub mysql_tls: TlsMode,
    /// CA certificate (PEM) for verifying the database server.
    #[arg(long, env = "PAYSTREAM_MYSQL_TLS_CA")]
    pub mysql_tls_ca: Option<String>,
    /// Server id this replica announces; unique among the source's replicas.
    #[arg(long, env = "PAYSTREAM_SERVER_ID", default_value_t = 5701)]
    pub server_id: u32,

    /// Logical source name: the topic prefix and the checkpoint key.
    #[arg(long, env = "PAYSTREAM_TOPIC_PREFIX", default_value = "paystream")]
    pub topic_prefix: String,
    /// Tables to capture, `db.table` with `*` wildcards; repeatable.
    #[arg(
        long = "include-table",
        env = "PAYSTREAM_INCLUDE_TABLES",
        value_delimiter = ',',
        default_value = "payments.*"
    )]
    pub include_tables: Vec<String>,
    /// Tables to leave out, `db.table` with `*` wildcards; repeatable.
    #[arg(
        long = "exclude-table",
        env = "PAYSTREAM_EXCLUDE_TABLES",
        value_delimiter = ','
    )]
    pub exclude_tables: Vec<String>,
    /// Snapshot mode.
    #[arg(long, env = "PAYSTREAM_SNAPSHOT_MODE", value_enum, default_value_t = SnapshotMode::Initial)]
    pub snapshot_mode: SnapshotMode,
    /// Rows per snapshot chunk (keyset pagination by primary key).
    #[arg(long, env = "PAYSTREAM_SNAPSHOT_CHUNK", default_value_t = 1024)]
    pub snapshot_chunk: usize,
    /// Follow each delete with a tombstone (null value) for log compaction.
    #[arg(long, env = "PAYSTREAM_TOMBSTONES", default_value_t = true, action = clap::ArgAction::Set)]
    pub tombstones: bool,
    /// What to do with a row that cannot be decoded.
    #[arg(long, env = "PAYSTREAM_ON_DECODE_ERROR", value_enum, default_value_t = OnDecodeError::Stop)]
    pub on_decode_error: OnDecodeError,

    /// Partitions of change topics the producer creates (existing topics are left alone).
    #[arg(long, env = "PAYSTREAM_PARTITIONS", default_value_t = 6)]
    pub partitions: i32,
    /// Replication factor of topics the producer creates.
    #[arg(long, env = "PAYSTREAM_REPLICATION_FACTOR", default_value_t = 1)]
    pub replication_factor: i32,
    /// Transactional id; fixed per source so a second instance is fenced.
    /// Defaults to `paystream-producer-<topic prefix>`.
    #[arg(long, env = "PAYSTREAM_TRANSACTIONAL_ID")]
    pub transactional_id: Option<String>,
    /// Close a Kafka transaction at this many records.
    #[arg(long, env = "PAYSTREAM_BATCH_MAX_RECORDS", default_value_t = 5000)]
    pub batch_max_records: usize,
    /// Close a Kafka transaction after this many milliseconds.
    #[arg(long, env = "PAYSTREAM_BATCH_LINGER_MS", default_value_t = 5)]
    pub batch_linger_ms: u64,
    /// Split a source transaction into chunks of at most this many records.
    #[arg(long, env = "PAYSTREAM_MAX_CHUNK_RECORDS", default_value_t = 2000)]
    pub max_chunk_records: usize,
    /// Chunks buffered between reader and publisher. Memory is bounded by
    /// this times the chunk size; a full buffer slows the binlog reader.
    #[arg(long, env = "PAYSTREAM_BUFFER_CHUNKS", default_value_t = 32)]
    pub buffer_chunks: usize,

    /// Heartbeat period asked of the server while the binlog is idle.
    #[arg(long, env = "PAYSTREAM_HEARTBEAT_SECS", default_value_t = 5)]
    pub heartbeat_secs: u64,
    /// Reconnect when nothing (not even a heartbeat) arrives for this long.
    #[arg(long, env = "PAYSTREAM_READ_TIMEOUT_SECS", default_value_t = 30)]
    pub read_timeout_secs: u64,
    /// Longest pause between reconnect attempts (exponential backoff). Kept
    /// short so a server that comes back is used again within seconds.
    #[arg(long, env = "PAYSTREAM_MAX_BACKOFF_SECS", default_value_t = 2)]
    pub max_backoff_secs: u64,
    /// Abandon a Kafka transaction when the broker acknowledges nothing (or
    /// does not answer a commit) for this long, and start over from the last
    /// checkpoint once it is back.
    #[arg(long, env = "PAYSTREAM_KAFKA_STALL_TIMEOUT_SECS", default_value_t = 5)]
    pub kafka_stall_timeout_secs: u64,

    /// Kafka connection.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Operations server and logging.
    #[command(flatten)]
    pub ops: OpsArgs,
}

impl Config {
    /// The transactional id in force.
    pub fn transactional_id(&self) -> String {
        self.transactional_id
            .clone()
            .unwrap_or_else(|| format!("paystream-producer-{}", self.topic_prefix))
    }

    /// Heartbeat period.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs.max(1))
    }

    /// Read timeout; always longer than the heartbeat.
    pub fn read_timeout(&self) -> Duration {
        Duration::from_secs(self.read_timeout_secs.max(self.heartbeat_secs * 2 + 1))
    }

    /// Checks what clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.topic_prefix.is_empty()
            || !self
                .topic_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(format!(
                "--topic-prefix {:?} must be non-empty and use only [A-Za-z0-9._-]",
                self.topic_prefix
            ));
        }
        if self.partitions < 1 || self.replication_factor < 1 {
            return Err("--partitions and --replication-factor must be at least 1".into());
        }
        if self.snapshot_chunk == 0 || self.max_chunk_records == 0 || self.buffer_chunks == 0 {
            return Err(
                "--snapshot-chunk, --max-chunk-records and --buffer-chunks must be at least 1"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_validate() {
        let c = Config::try_parse_from(["p"]).unwrap();
        assert_eq!(c.snapshot_mode, SnapshotMode::Initial);
        assert!(c.tombstones);
        assert_eq!(c.include_tables, vec!["payments.*"]);
        assert_eq!(c.transactional_id(), "paystream-producer-paystream");
        assert!(c.read_timeout() > c.heartbeat());
        c.validate().unwrap();
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let c = Config::try_parse_from(["p", "--topic-prefix", "bad prefix"]).unwrap();
        assert!(c.validate().unwrap_err().contains("--topic-prefix"));
        let e = Config::try_parse_from(["p", "--snapshot-mode", "sometimes"]).unwrap_err();
        assert!(e.to_string().contains("sometimes"), "{e}");
        let c = Config::try_parse_from(["p", "--snapshot-mode", "when_needed"]).unwrap();
        assert_eq!(c.snapshot_mode, SnapshotMode::WhenNeeded);
        let c =
            Config::try_parse_from(["p", "--tombstones", "false", "--include-table", "a.b,c.*"])
                .unwrap();
        assert!(!c.tombstones);
        assert_eq!(c.include_tables, vec!["a.b", "c.*"]);
    }
}
