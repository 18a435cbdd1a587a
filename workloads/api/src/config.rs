//! The API's configuration: command-line flags with environment fallbacks.
//! `paystream-api --help` is the reference for every flag.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use paystream_core::envelope::change_topic;
use paystream_runtime::OpsArgs;
use paystream_runtime::redis_client::{RedisMode, RedisTarget};

use crate::auth::JwtAlgorithm;
use crate::cache::RedisConfig;
use crate::store::StoreConfig;

/// TLS to MySQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MysqlTls {
    /// No TLS.
    Disabled,
    /// TLS when the server offers it.
    Preferred,
    /// TLS, certificate not verified.
    Required,
    /// TLS, chain verified against `--mysql-tls-ca`.
    VerifyCa,
    /// TLS, chain and host name verified.
    VerifyIdentity,
}

/// paystream payment API: purchases and payments over HTTP.
#[derive(Debug, Clone, Parser)]
#[command(name = "paystream-api", version, about, long_about = None, args_override_self = true)]
pub struct Config {
    /// Address the API listens on.
    #[arg(long, env = "PAYSTREAM_API_ADDR", default_value = "0.0.0.0:8080")]
    pub listen_addr: SocketAddr,
    /// Accept backlog of the listening socket (capped by the kernel's
    /// `net.core.somaxconn`); large enough for bursts of new connections.
    #[arg(long, env = "PAYSTREAM_API_LISTEN_BACKLOG", default_value_t = 4096)]
    pub listen_backlog: u32,

    /// MySQL host.
    #[arg(long, env = "PAYSTREAM_MYSQL_HOST", default_value = "127.0.0.1")]
    pub mysql_host: String,
    /// MySQL port.
    #[arg(long, env = "PAYSTREAM_MYSQL_PORT", default_value_t = 3306)]
    pub mysql_port: u16,
    /// MySQL user; DML on the payments schema is all it needs.
    #[arg(long, env = "PAYSTREAM_MYSQL_USER", default_value = "paystream_app")]
    pub mysql_user: String,
    /// MySQL password.
    #[arg(
        long,
        env = "PAYSTREAM_MYSQL_PASSWORD",
        hide_env_values = true,
        default_value = ""
    )]
    pub mysql_password: String,
    /// Database holding the payments tables; also the source database in the
    /// change topic names.
    #[arg(long, env = "PAYSTREAM_MYSQL_DATABASE", default_value = "payments")]
    pub mysql_database: String,
    /// TLS to MySQL.
    #[arg(long, env = "PAYSTREAM_MYSQL_TLS", value_enum, default_value_t = MysqlTls::Disabled)]
    pub mysql_tls: MysqlTls,
    /// CA (PEM) that signed the MySQL server certificate.
    #[arg(long, env = "PAYSTREAM_MYSQL_TLS_CA")]
    pub mysql_tls_ca: Option<String>,
    /// MySQL connection pool size.
    #[arg(long, env = "PAYSTREAM_MYSQL_MAX_CONNECTIONS", default_value_t = 32)]
    pub mysql_max_connections: u32,
    /// Pooled connections kept open while idle.
    #[arg(long, env = "PAYSTREAM_MYSQL_MIN_CONNECTIONS", default_value_t = 2)]
    pub mysql_min_connections: u32,
    /// Longest wait for a pooled MySQL connection, milliseconds.
    #[arg(
        long,
        env = "PAYSTREAM_MYSQL_ACQUIRE_TIMEOUT_MS",
        default_value_t = 2000
    )]
    pub mysql_acquire_timeout_ms: u64,
    /// Read queries MySQL may run at once (cache misses and the Redis-down
    /// fallback); protects the database.
    #[arg(long, env = "PAYSTREAM_MYSQL_READ_CONCURRENCY", default_value_t = 16)]
    pub mysql_read_concurrency: usize,
    /// Longest wait for a read slot before answering 503, milliseconds.
    #[arg(long, env = "PAYSTREAM_MYSQL_READ_WAIT_MS", default_value_t = 500)]
    pub mysql_read_wait_ms: u64,

    /// Longest a MySQL read query may take, milliseconds.
    #[arg(long, env = "PAYSTREAM_MYSQL_QUERY_TIMEOUT_MS", default_value_t = 3000)]
    pub mysql_query_timeout_ms: u64,

    /// Where Redis is: Standalone (`--redis-url`), Sentinel or Cluster
    /// (`--redis-mode`, `--redis-nodes`), credentials and TLS; the same
    /// flags as the consumer's.
    #[command(flatten)]
    pub redis_target: RedisTarget,
    /// Multiplexed Redis connections requests are spread over (Standalone;
    /// Sentinel and Cluster use one). One pipelines best on a small
    /// machine; raise it with many cores.
    #[arg(long, env = "PAYSTREAM_REDIS_CONNECTIONS", default_value_t = 1)]
    pub redis_connections: usize,
    /// Timeout of one Redis command, milliseconds; past it Redis counts as down.
    #[arg(long, env = "PAYSTREAM_REDIS_TIMEOUT_MS", default_value_t = 250)]
    pub redis_timeout_ms: u64,
    /// Redis connect timeout, milliseconds.
    #[arg(
        long,
        env = "PAYSTREAM_REDIS_CONNECT_TIMEOUT_MS",
        default_value_t = 1000
    )]
    pub redis_connect_timeout_ms: u64,
    /// Prefix of every read-model key; defaults to the topic prefix.
    #[arg(long = "redis-key-prefix", env = "PAYSTREAM_REDIS_KEY_PREFIX")]
    pub key_prefix: Option<String>,
    /// Topic prefix of the change topics (the producer's `--topic-prefix`);
    /// names the consumer's offset marks that say whether lists are complete.
    #[arg(long, env = "PAYSTREAM_TOPIC_PREFIX", default_value = "paystream")]
    pub topic_prefix: String,
    /// Tombstone lifetime for the read-model script, seconds (the consumer's
    /// `--tombstone-ttl-secs`).
    #[arg(long, env = "PAYSTREAM_TOMBSTONE_TTL_SECS", default_value_t = 86_400)]
    pub tombstone_ttl_secs: u64,
    /// How often to re-check Redis, MySQL and the model's completeness, milliseconds.
    #[arg(long, env = "PAYSTREAM_HEALTH_INTERVAL_MS", default_value_t = 500)]
    pub health_interval_ms: u64,

    /// Near-cache capacity in documents; 0 turns the near cache off.
    #[arg(long, env = "PAYSTREAM_NEAR_CACHE_CAPACITY", default_value_t = 0)]
    pub near_cache_capacity: u64,
    /// Longest life of a near-cache entry, seconds (invalidation is the
    /// normal way out; this bounds the damage of a missed one).
    #[arg(long, env = "PAYSTREAM_NEAR_CACHE_TTL_SECS", default_value_t = 60)]
    pub near_cache_ttl_secs: u64,

    /// Token signature algorithm.
    #[arg(long, env = "PAYSTREAM_JWT_ALGORITHM", value_enum, default_value_t = JwtAlgorithm::Hs256)]
    pub jwt_algorithm: JwtAlgorithm,
    /// HS256 shared secret (at least 32 bytes).
    #[arg(long, env = "PAYSTREAM_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// RS256 public key, a PEM file.
    #[arg(long, env = "PAYSTREAM_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// Required `iss` claim, if set.
    #[arg(long, env = "PAYSTREAM_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim, if set.
    #[arg(long, env = "PAYSTREAM_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, seconds.
    #[arg(long, env = "PAYSTREAM_JWT_LEEWAY_SECS", default_value_t = 30)]
    pub jwt_leeway_secs: u64,
    /// The scope that lets a token read anyone's purchases.
    #[arg(long, env = "PAYSTREAM_ADMIN_SCOPE", default_value = "admin")]
    pub admin_scope: String,

    /// Largest request body, bytes (413 past it).
    #[arg(long, env = "PAYSTREAM_MAX_BODY_BYTES", default_value_t = 16 * 1024)]
    pub max_body_bytes: usize,
    /// Deadline of one request, milliseconds (503 past it).
    #[arg(long, env = "PAYSTREAM_REQUEST_TIMEOUT_MS", default_value_t = 5000)]
    pub request_timeout_ms: u64,
    /// Page size when `limit` is absent.
    #[arg(long, env = "PAYSTREAM_PAGE_SIZE", default_value_t = 20)]
    pub page_size: u32,
    /// Largest `limit`.
    #[arg(long, env = "PAYSTREAM_MAX_PAGE_SIZE", default_value_t = 100)]
    pub max_page_size: u32,
    /// Largest quantity of one purchase.
    #[arg(long, env = "PAYSTREAM_MAX_QUANTITY", default_value_t = 1000)]
    pub max_quantity: u32,
    /// Serve `/bench/constant` and `/bench/mysql/purchases/{id}` (for `make
    /// bench-api` only; never in production).
    #[arg(long, env = "PAYSTREAM_BENCH_ROUTES", default_value_t = false, action = clap::ArgAction::Set)]
    pub bench_routes: bool,
    /// Size of the `/bench/constant` body, bytes.
    #[arg(long, env = "PAYSTREAM_BENCH_BODY_BYTES", default_value_t = 512)]
    pub bench_body_bytes: usize,

    /// Operations server and logging.
    #[command(flatten)]
    pub ops: OpsArgs,
}

impl Config {
    /// The read-model key prefix in force.
    pub fn key_prefix(&self) -> String {
        self.key_prefix
            .clone()
            .unwrap_or_else(|| self.topic_prefix.clone())
    }

    /// Checks what clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        paystream_core::readmodel::Keys::new(&self.key_prefix()).map_err(|e| e.to_string())?;
        if self.mysql_read_concurrency == 0 || self.redis_connections == 0 {
            return Err(
                "--mysql-read-concurrency and --redis-connections must be at least 1".into(),
            );
        }
        if self.page_size == 0 || self.max_page_size == 0 || self.max_quantity == 0 {
            return Err(
                "--page-size, --max-page-size and --max-quantity must be at least 1".into(),
            );
        }
        if self.request_timeout_ms == 0 || self.max_body_bytes == 0 {
            return Err("--request-timeout-ms and --max-body-bytes must be at least 1".into());
        }
        self.redis_target.validate().map_err(|e| e.to_string())?;
        if self.near_cache_capacity > 0 && self.redis_target.redis_mode != RedisMode::Standalone {
            return Err(
                "the near cache needs --redis-mode standalone (its invalidations come from one server); set --near-cache-capacity 0".into(),
            );
        }
        Ok(())
    }

    /// MySQL settings.
    pub fn store(&self) -> StoreConfig {
        use sqlx::mysql::MySqlSslMode as M;
        StoreConfig {
            host: self.mysql_host.clone(),
            port: self.mysql_port,
            user: self.mysql_user.clone(),
            password: self.mysql_password.clone(),
            database: self.mysql_database.clone(),
            ssl_mode: match self.mysql_tls {
                MysqlTls::Disabled => M::Disabled,
                MysqlTls::Preferred => M::Preferred,
                MysqlTls::Required => M::Required,
                MysqlTls::VerifyCa => M::VerifyCa,
                MysqlTls::VerifyIdentity => M::VerifyIdentity,
            },
            ssl_ca: self.mysql_tls_ca.clone(),
            max_connections: self.mysql_max_connections,
            min_connections: self.mysql_min_connections,
            acquire_timeout: Duration::from_millis(self.mysql_acquire_timeout_ms),
            read_concurrency: self.mysql_read_concurrency,
            read_wait: Duration::from_millis(self.mysql_read_wait_ms),
            query_timeout: Duration::from_millis(self.mysql_query_timeout_ms.max(1)),
        }
    }

    /// Redis settings.
    pub fn redis(&self) -> RedisConfig {
        RedisConfig {
            target: self.redis_target.clone(),
            connections: self.redis_connections,
            timeout: Duration::from_millis(self.redis_timeout_ms.max(1)),
            connect_timeout: Duration::from_millis(self.redis_connect_timeout_ms.max(1)),
            prefix: self.key_prefix(),
            topics: ["purchases", "packages"]
                .iter()
                .map(|t| change_topic(&self.topic_prefix, &self.mysql_database, t))
                .collect(),
            tombstone_ttl_ms: self.tombstone_ttl_secs.saturating_mul(1000),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_validate() {
        let c = Config::try_parse_from(["api"]).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.validate().is_ok());
        assert_eq!(c.near_cache_capacity, 0, "the near cache is off by default");
        assert_eq!(c.key_prefix(), "paystream");
        assert_eq!(
            c.redis().topics,
            vec![
                "paystream.payments.purchases",
                "paystream.payments.packages"
            ]
        );
        let c = Config::try_parse_from(["api", "--redis-key-prefix", "bad{x}"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(c.validate().is_err());
        assert!(Config::try_parse_from(["api", "--jwt-algorithm", "none"]).is_err());
    }
}
