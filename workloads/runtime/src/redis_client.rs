//! How to reach Redis: a standalone server, a Sentinel-managed primary or a
//! Cluster, with a password (or ACL user) and TLS with a private CA, chosen by
//! the same flags (and `PAYSTREAM_REDIS_*` variables) in the consumer and the
//! API. The result is one connection type, [`RedisConn`], that multiplexes
//! requests and implements `redis::aio::ConnectionLike`, so every workload and
//! test uses the same code for every deployment. Timeouts are the caller's:
//! the consumer waits seconds for a write, the API a few hundred milliseconds
//! before it reads MySQL instead.

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, IntoConnectionInfo, Pipeline,
    ProtocolVersion, RedisFuture, TlsCertificates, TlsMode, Value,
};

/// Which kind of Redis deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RedisMode {
    /// One server (`--redis-url`).
    Standalone,
    /// A primary found through Sentinels (`--redis-nodes` are the Sentinels).
    Sentinel,
    /// A Redis Cluster (`--redis-nodes` are seed nodes).
    Cluster,
}

/// Where Redis is and how to log in.
#[derive(Debug, Clone, clap::Args)]
pub struct RedisTarget {
    /// Deployment kind.
    #[arg(long, env = "PAYSTREAM_REDIS_MODE", value_enum, default_value_t = RedisMode::Standalone)]
    pub redis_mode: RedisMode,
    /// Standalone server URL, `redis://host:port/db` (`rediss://` for TLS).
    #[arg(
        long,
        env = "PAYSTREAM_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/0"
    )]
    pub redis_url: String,
    /// Cluster seed nodes or Sentinel addresses, comma-separated `host:port`.
    #[arg(long, env = "PAYSTREAM_REDIS_NODES", value_delimiter = ',')]
    pub redis_nodes: Vec<String>,
    /// Sentinel: the monitored primary's name.
    #[arg(
        long,
        env = "PAYSTREAM_REDIS_SENTINEL_MASTER",
        default_value = "mymaster"
    )]
    pub redis_sentinel_master: String,
    /// ACL user name (Redis 6+); empty for the default user.
    #[arg(long, env = "PAYSTREAM_REDIS_USERNAME")]
    pub redis_username: Option<String>,
    /// Password (`requirepass` or the ACL user's).
    #[arg(long, env = "PAYSTREAM_REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,
    /// Use TLS to the data nodes.
    #[arg(long, env = "PAYSTREAM_REDIS_TLS", default_value_t = false, action = clap::ArgAction::Set)]
    pub redis_tls: bool,
    /// CA bundle (PEM) that signed the servers' certificates; system roots otherwise.
    #[arg(long, env = "PAYSTREAM_REDIS_TLS_CA")]
    pub redis_tls_ca: Option<PathBuf>,
    /// Logical database (standalone and Sentinel; a Cluster only has 0).
    #[arg(long, env = "PAYSTREAM_REDIS_DB")]
    pub redis_db: Option<i64>,
}

/// Redis could not be reached or refused the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A flag combination makes no sense.
    #[error("redis configuration: {0}")]
    Config(String),
    /// The CA file could not be read.
    #[error("reading {path}: {source}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The client failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// One multiplexed connection to any kind of deployment. Cheap to clone;
/// clones share the underlying sockets.
#[derive(Clone)]
pub enum RedisConn {
    /// Standalone or Sentinel primary.
    Single(MultiplexedConnection),
    /// A Standalone server through a manager that reconnects by itself
    /// (made lazily, so a service can start while Redis is down).
    Managed(ConnectionManager),
    /// Cluster: requests are routed by key slot.
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// Whether requests must stay within one hash slot per pipeline.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Managed(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Managed(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Managed(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

impl RedisTarget {
    /// Flags for a standalone server at `url` (tests and tools).
    pub fn standalone(url: &str) -> Self {
        Self {
            redis_mode: RedisMode::Standalone,
            redis_url: url.to_string(),
            redis_nodes: Vec::new(),
            redis_sentinel_master: "mymaster".into(),
            redis_username: None,
            redis_password: None,
            redis_tls: false,
            redis_tls_ca: None,
            redis_db: None,
        }
    }

    fn certificates(&self) -> Result<Option<TlsCertificates>, ConnectError> {
        match &self.redis_tls_ca {
            None => Ok(None),
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| ConnectError::Ca {
                    path: path.clone(),
                    source,
                })?;
                Ok(Some(TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                }))
            }
        }
    }

    /// `host:port` (or a URL) as a URL of the right scheme.
    fn node_url(&self, node: &str) -> String {
        if node.contains("://") {
            node.to_string()
        } else if self.redis_tls {
            format!("rediss://{node}")
        } else {
            format!("redis://{node}")
        }
    }

    /// Checks what clap cannot.
    pub fn validate(&self) -> Result<(), ConnectError> {
        match self.redis_mode {
            RedisMode::Standalone => Ok(()),
            RedisMode::Sentinel | RedisMode::Cluster if self.redis_nodes.is_empty() => {
                Err(ConnectError::Config(format!(
                    "--redis-mode {:?} needs --redis-nodes",
                    self.redis_mode
                )))
            }
            RedisMode::Cluster if self.redis_db.is_some_and(|db| db != 0) => Err(
                ConnectError::Config("a Redis Cluster has only database 0".into()),
            ),
            _ => Ok(()),
        }
    }

    /// A client for the Standalone server: the URL with the password, user,
    /// database and TLS settings of the flags applied.
    pub fn standalone_client(&self) -> Result<Client, ConnectError> {
        self.standalone_client_speaking(None)
    }

    /// [`Self::standalone_client`], speaking `protocol` (RESP3 for push
    /// messages) when given.
    pub fn standalone_client_speaking(
        &self,
        protocol: Option<ProtocolVersion>,
    ) -> Result<Client, ConnectError> {
        let mut url = self.redis_url.clone();
        if self.redis_tls && url.starts_with("redis://") {
            url = format!("rediss://{}", &url["redis://".len()..]);
        }
        let info = url.as_str().into_connection_info()?;
        let mut settings = info.redis_settings().clone();
        if let Some(p) = &self.redis_password {
            settings = settings.set_password(p);
        }
        if let Some(u) = &self.redis_username {
            settings = settings.set_username(u);
        }
        if let Some(db) = self.redis_db {
            settings = settings.set_db(db);
        }
        if let Some(p) = protocol {
            settings = settings.set_protocol(p);
        }
        let info = info.set_redis_settings(settings);
        Ok(match self.certificates()? {
            Some(c) => Client::build_with_tls(info, c)?,
            None => Client::open(info)?,
        })
    }

    /// Opens a connection; `timeout` bounds connecting and each response.
    pub async fn connect(&self, timeout: Duration) -> Result<RedisConn, ConnectError> {
        self.validate()?;
        let certs = self.certificates()?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        match self.redis_mode {
            RedisMode::Standalone => Ok(RedisConn::Single(
                self.standalone_client()?
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?,
            )),
            RedisMode::Sentinel => {
                let mut addrs = Vec::new();
                for node in &self.redis_nodes {
                    let (host, port) = node.rsplit_once(':').ok_or_else(|| {
                        ConnectError::Config(format!("sentinel {node:?} is not host:port"))
                    })?;
                    let port = port.parse().map_err(|_| {
                        ConnectError::Config(format!("sentinel {node:?} has a bad port"))
                    })?;
                    addrs.push(ConnectionAddr::Tcp(host.to_string(), port));
                }
                let mut b = SentinelClientBuilder::new(
                    addrs,
                    &self.redis_sentinel_master,
                    SentinelServerType::Master,
                )?;
                if let Some(p) = &self.redis_password {
                    b = b.set_client_to_redis_password(p);
                }
                if let Some(u) = &self.redis_username {
                    b = b.set_client_to_redis_username(u);
                }
                if let Some(db) = self.redis_db {
                    b = b.set_client_to_redis_db(db);
                }
                if self.redis_tls {
                    b = b.set_client_to_redis_tls_mode(TlsMode::Secure);
                    if let Some(c) = certs {
                        b = b.set_client_to_redis_certificates(c);
                    }
                }
                let mut sentinel = b.build()?;
                let conn = tokio::time::timeout(
                    timeout,
                    sentinel.get_async_connection_with_config(&config),
                )
                .await
                .map_err(|_| {
                    ConnectError::Config(format!("no answer from the Sentinels within {timeout:?}"))
                })??;
                Ok(RedisConn::Single(conn))
            }
            RedisMode::Cluster => {
                let nodes: Vec<String> =
                    self.redis_nodes.iter().map(|n| self.node_url(n)).collect();
                let mut b = ClusterClientBuilder::new(nodes)
                    .connection_timeout(timeout)
                    .response_timeout(timeout);
                if let Some(p) = &self.redis_password {
                    b = b.password(p.clone());
                }
                if let Some(u) = &self.redis_username {
                    b = b.username(u.clone());
                }
                if self.redis_tls {
                    b = b.tls(TlsMode::Secure);
                    if let Some(c) = certs {
                        b = b.certs(c);
                    }
                }
                let client = b.build()?;
                Ok(RedisConn::Cluster(client.get_async_connection().await?))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        redis: RedisTarget,
    }

    #[test]
    fn modes_need_their_flags() {
        let c = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(c.redis.redis_mode, RedisMode::Standalone);
        c.redis.validate().unwrap();
        let c = Cli::try_parse_from(["x", "--redis-mode", "cluster"]).unwrap();
        assert!(
            c.redis
                .validate()
                .unwrap_err()
                .to_string()
                .contains("--redis-nodes")
        );
        let c = Cli::try_parse_from([
            "x",
            "--redis-mode",
            "cluster",
            "--redis-nodes",
            "a:1,b:2",
            "--redis-tls",
            "true",
        ])
        .unwrap();
        c.redis.validate().unwrap();
        assert_eq!(c.redis.redis_nodes, vec!["a:1", "b:2"]);
        assert_eq!(c.redis.node_url("a:1"), "rediss://a:1");
        assert_eq!(c.redis.node_url("redis://a:1"), "redis://a:1");
        let c = Cli::try_parse_from([
            "x",
            "--redis-mode",
            "cluster",
            "--redis-nodes",
            "a:1",
            "--redis-db",
            "3",
        ])
        .unwrap();
        assert!(c.redis.validate().is_err());
    }
}
