//! Connecting to the source database: connection options (TLS included),
//! flavour detection, the current binlog position, and classifying errors as
//! transient (retry with backoff) or permanent (stop with a clear message).

use std::time::Duration;

use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder, SslOpts};
use paystream_core::checkpoint::Flavor;

use crate::config::{Config, TlsMode};

/// MySQL/MariaDB error: the replica asked for binlog the server no longer has
/// (ER_MASTER_FATAL_ERROR_READING_BINLOG).
pub const ER_BINLOG_FATAL: u16 = 1236;

/// How to reach the source database.
#[derive(Debug, Clone)]
pub struct SourceOpts {
    opts: OptsBuilder,
}

impl SourceOpts {
    /// Options from the producer configuration.
    pub fn from_config(c: &Config) -> Self {
        let mut opts = OptsBuilder::default()
            .ip_or_hostname(c.mysql_host.clone())
            .tcp_port(c.mysql_port)
            .user(Some(c.mysql_user.clone()))
            .pass(Some(c.mysql_password.clone()))
            .prefer_socket(false)
            .conn_ttl(None::<Duration>)
            .tcp_keepalive(Some(Duration::from_secs(10)));
        if c.mysql_tls != TlsMode::Disabled {
            let mut ssl = SslOpts::default();
            if let Some(ca) = &c.mysql_tls_ca {
                ssl = ssl
                    .with_root_certs(vec![std::path::PathBuf::from(ca).into()])
                    .with_disable_built_in_roots(true);
            }
            if c.mysql_tls == TlsMode::VerifyCa {
                ssl = ssl.with_danger_skip_domain_validation(true);
            }
            opts = opts.ssl_opts(ssl);
        }
        Self { opts }
    }

    /// Opens a connection.
    pub async fn connect(&self) -> Result<Conn, mysql_async::Error> {
        Conn::new(self.opts.clone()).await
    }
}

/// Where the binlog ends right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentPosition {
    /// Server flavour.
    pub flavor: Flavor,
    /// GTID position (`@@gtid_binlog_pos` or `@@gtid_executed`).
    pub gtid: String,
    /// Binlog file.
    pub file: String,
    /// Binlog offset.
    pub pos: u64,
}

/// Detects MariaDB or MySQL from `VERSION()`.
pub async fn flavor(conn: &mut Conn) -> Result<Flavor, mysql_async::Error> {
    let version: Option<String> = conn.query_first("SELECT VERSION()").await?;
    Ok(if version.unwrap_or_default().contains("MariaDB") {
        Flavor::Mariadb
    } else {
        Flavor::Mysql
    })
}

/// Reads the current end of the binlog.
pub async fn current_position(conn: &mut Conn) -> Result<CurrentPosition, mysql_async::Error> {
    let flavor = flavor(conn).await?;
    let gtid: Option<String> = match flavor {
        Flavor::Mariadb => conn.query_first("SELECT @@GLOBAL.gtid_binlog_pos").await?,
        Flavor::Mysql => conn.query_first("SELECT @@GLOBAL.gtid_executed").await?,
    };
    let status: Option<mysql_async::Row> = conn.query_first("SHOW MASTER STATUS").await?;
    let (file, pos) = match status {
        Some(row) => (
            row.get::<String, _>(0).unwrap_or_default(),
            row.get::<u64, _>(1).unwrap_or(4),
        ),
        None => (String::new(), 4),
    };
    Ok(CurrentPosition {
        flavor,
        gtid: gtid.unwrap_or_default().replace('\n', ""),
        file,
        pos,
    })
}

/// Whether the server says the requested binlog is gone (purged).
pub fn is_purged(err: &mysql_async::Error) -> bool {
    matches!(err, mysql_async::Error::Server(e) if e.code == ER_BINLOG_FATAL)
}

/// Whether an error is worth retrying: network trouble, a server restarting,
/// too many connections, lock waits. Authentication and syntax errors are not.
pub fn is_transient(err: &mysql_async::Error) -> bool {
    match err {
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => true,
        mysql_async::Error::Server(e) => matches!(
            e.code,
            // too many connections, server shutdown, lock wait, deadlock,
            // connection killed, query interrupted, read-only during failover,
            // and "a replica with the same server id is connected" (the
            // previous instance's dump thread, not yet reaped by the server)
            1040 | 1053 | 1205 | 1213 | 1927 | 1317 | 1290 | 2006 | 2013 | 4052
        ),
        _ => false,
    }
}
