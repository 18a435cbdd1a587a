//! The environment variable names the workloads read, in one place, so the
//! builders and the workloads' `clap` flags are easy to keep aligned. Values
//! that are not secret go into the pipeline's ConfigMap; credentials come from
//! the user's Secrets through `secretKeyRef`. The names match the workloads'
//! `clap` `env =` attributes (`workloads/*/src/config.rs` and the shared
//! `paystream_runtime::redis_client`); the API spells the database
//! `PAYSTREAM_MYSQL_DATABASE`.

/// Database host.
pub const MYSQL_HOST: &str = "PAYSTREAM_MYSQL_HOST";
/// Database port.
pub const MYSQL_PORT: &str = "PAYSTREAM_MYSQL_PORT";
/// Database user (from the Secret).
pub const MYSQL_USER: &str = "PAYSTREAM_MYSQL_USER";
/// Database password (from the Secret).
pub const MYSQL_PASSWORD: &str = "PAYSTREAM_MYSQL_PASSWORD";
/// TLS mode: `disabled`, `verify-ca` or `verify-identity`.
pub const MYSQL_TLS: &str = "PAYSTREAM_MYSQL_TLS";
/// Path of the database CA certificate.
pub const MYSQL_TLS_CA: &str = "PAYSTREAM_MYSQL_TLS_CA";
/// Source database (schema) name, as the producer and consumer read it.
pub const SOURCE_DATABASE: &str = "PAYSTREAM_SOURCE_DATABASE";
/// The same database, as the API reads it (`--mysql-database`).
pub const MYSQL_DATABASE: &str = "PAYSTREAM_MYSQL_DATABASE";
/// Tables the producer captures, `db.table`, comma-separated.
pub const INCLUDE_TABLES: &str = "PAYSTREAM_INCLUDE_TABLES";
/// The producer's replica server id.
pub const SERVER_ID: &str = "PAYSTREAM_SERVER_ID";
/// Topic prefix (source name).
pub const TOPIC_PREFIX: &str = "PAYSTREAM_TOPIC_PREFIX";
/// Partitions of topics a workload creates itself.
pub const PARTITIONS: &str = "PAYSTREAM_PARTITIONS";
/// Replication factor of topics a workload creates itself.
pub const REPLICATION_FACTOR: &str = "PAYSTREAM_REPLICATION_FACTOR";
/// Kafka bootstrap servers.
pub const KAFKA_BOOTSTRAP: &str = "PAYSTREAM_KAFKA_BOOTSTRAP";
/// Kafka security protocol (librdkafka spelling).
pub const KAFKA_SECURITY_PROTOCOL: &str = "PAYSTREAM_KAFKA_SECURITY_PROTOCOL";
/// Kafka SASL mechanism.
pub const KAFKA_SASL_MECHANISM: &str = "PAYSTREAM_KAFKA_SASL_MECHANISM";
/// Kafka SASL user (from the Secret).
pub const KAFKA_SASL_USERNAME: &str = "PAYSTREAM_KAFKA_SASL_USERNAME";
/// Kafka SASL password (from the Secret).
pub const KAFKA_SASL_PASSWORD: &str = "PAYSTREAM_KAFKA_SASL_PASSWORD";
/// Redis mode: `standalone`, `sentinel` or `cluster`.
pub const REDIS_MODE: &str = "PAYSTREAM_REDIS_MODE";
/// Standalone Redis URL, `redis://host:port/0` (`rediss://` with TLS).
pub const REDIS_URL: &str = "PAYSTREAM_REDIS_URL";
/// Redis addresses, comma-separated `host:port`.
pub const REDIS_NODES: &str = "PAYSTREAM_REDIS_NODES";
/// Sentinel master name.
pub const REDIS_SENTINEL_MASTER: &str = "PAYSTREAM_REDIS_SENTINEL_MASTER";
/// Redis TLS on or off.
pub const REDIS_TLS: &str = "PAYSTREAM_REDIS_TLS";
/// Path of the CA certificate that signed the Redis servers' certificates.
pub const REDIS_TLS_CA: &str = "PAYSTREAM_REDIS_TLS_CA";
/// Redis user (from the Secret, optional key).
pub const REDIS_USERNAME: &str = "PAYSTREAM_REDIS_USERNAME";
/// Redis password (from the Secret).
pub const REDIS_PASSWORD: &str = "PAYSTREAM_REDIS_PASSWORD";
/// The consumer's group id.
pub const CONSUMER_GROUP: &str = "PAYSTREAM_CONSUMER_GROUP";
/// Address of the operations server.
pub const OPS_ADDR: &str = "PAYSTREAM_OPS_ADDR";
/// Log format.
pub const LOG_FORMAT: &str = "PAYSTREAM_LOG_FORMAT";
/// Address the API listens on.
pub const API_ADDR: &str = "PAYSTREAM_API_ADDR";
/// The API's HS256 token secret (from the Secret).
pub const JWT_SECRET: &str = "PAYSTREAM_JWT_SECRET";
/// The API's token algorithm, `hs256` or `rs256`.
pub const JWT_ALGORITHM: &str = "PAYSTREAM_JWT_ALGORITHM";
/// Path of the API's RS256 public key (PEM).
pub const JWT_PUBLIC_KEY_FILE: &str = "PAYSTREAM_JWT_PUBLIC_KEY_FILE";

/// The Standalone Redis URL of `endpoint` (`host:port`). Pure.
pub fn redis_url(endpoint: &str, tls: bool) -> String {
    let scheme = if tls { "rediss" } else { "redis" };
    format!("{scheme}://{endpoint}/0")
}

/// The consumer group the consumer uses and the operator measures lag for.
pub fn consumer_group(topic_prefix: &str) -> String {
    format!("paystream-consumer-{topic_prefix}")
}
