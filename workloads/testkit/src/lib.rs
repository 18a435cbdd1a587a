//! Test support for integration tests that talk to the real local stack.
//!
//! The stack scripts (`stack/`) start MariaDB, Kafka and Redis on loopback
//! ports that can be moved through `PAYSTREAM_*` environment variables; this
//! crate reads the same variables with the same defaults, so a test finds the
//! servers wherever `make stack-up` put them. It also holds the small waiting
//! and naming helpers every integration test needs, so no test sleeps where it
//! can poll a condition instead. [`cdc`] runs the producer against a scratch
//! database, [`process`] runs any paystream binary as a child process,
//! [`checker`] compares the Redis read model with MySQL row by row, and
//! [`redis_cluster`] starts the local Redis Cluster and [`redis_server`] a
//! private Redis a test may destroy.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where the local stack's servers listen and how to log in to them.
#[derive(Debug, Clone)]
pub struct Stack {
    /// MariaDB TCP port on 127.0.0.1.
    pub mysql_port: u16,
    /// Least-privilege application user: DML on the `payments` schema.
    pub app: Credentials,
    /// Least-privilege change-data-capture user: replication and SELECT.
    pub cdc: Credentials,
    /// Administrative user for tests that change schema or purge binlogs.
    pub admin: Credentials,
    /// Kafka bootstrap servers.
    pub kafka_bootstrap: String,
    /// Redis TCP port on 127.0.0.1.
    pub redis_port: u16,
    /// Redis TLS port on 127.0.0.1.
    pub redis_tls_port: u16,
    /// Redis password (`requirepass`).
    pub redis_password: String,
    /// The locally generated CA that signed the servers' TLS certificates.
    pub tls_ca: PathBuf,
}

/// A user name and password.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn port_or(name: &str, default: u16) -> u16 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The repository root, found from this crate's manifest directory.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

impl Stack {
    /// Reads the stack's coordinates from the environment, falling back to the
    /// defaults of `stack/lib.sh`.
    pub fn from_env() -> Self {
        let var = std::env::var("PAYSTREAM_VAR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| repo_root().join("var"));
        Self {
            mysql_port: port_or("PAYSTREAM_MYSQL_PORT", 13306),
            app: Credentials {
                user: env_or("PAYSTREAM_MYSQL_APP_USER", "paystream_app"),
                password: env_or("PAYSTREAM_MYSQL_APP_PASSWORD", "paystream-app"),
            },
            cdc: Credentials {
                user: env_or("PAYSTREAM_MYSQL_CDC_USER", "paystream_cdc"),
                password: env_or("PAYSTREAM_MYSQL_CDC_PASSWORD", "paystream-cdc"),
            },
            admin: Credentials {
                user: env_or("PAYSTREAM_MYSQL_ADMIN_USER", "paystream_admin"),
                password: env_or("PAYSTREAM_MYSQL_ADMIN_PASSWORD", "paystream-admin"),
            },
            kafka_bootstrap: format!("127.0.0.1:{}", port_or("PAYSTREAM_KAFKA_PORT", 19092)),
            redis_port: port_or("PAYSTREAM_REDIS_PORT", 16379),
            redis_tls_port: port_or("PAYSTREAM_REDIS_TLS_PORT", 16380),
            redis_password: env_or("PAYSTREAM_REDIS_PASSWORD", "paystream-redis"),
            tls_ca: var.join("stack/tls/ca.pem"),
        }
    }

    /// A `mysql://` URL for `creds` against `database` on the local MariaDB.
    pub fn mysql_url(&self, creds: &Credentials, database: &str) -> String {
        format!(
            "mysql://{}:{}@127.0.0.1:{}/{}",
            creds.user, creds.password, self.mysql_port, database
        )
    }

    /// A `redis://` URL with the password.
    pub fn redis_url(&self) -> String {
        format!(
            "redis://:{}@127.0.0.1:{}/",
            self.redis_password, self.redis_port
        )
    }
}

/// A name no other test run uses: `prefix` plus process id and time. The
/// number grows with every call in a process, so tests running at once in
/// one process never get the same one: two did, in the same nanosecond
/// reading, and their packages' unique codes collided.
pub fn unique_name(prefix: &str) -> String {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| (d.as_nanos() % 1_000_000_000_000) as u64)
        .unwrap_or_default();
    let previous = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(nanos.max(last + 1))
        })
        .unwrap_or(nanos);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        nanos.max(previous + 1)
    )
}

/// A condition was not met before its deadline.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {waited:?} waiting for {what}")]
pub struct Timeout {
    /// What was awaited.
    pub what: String,
    /// How long it was awaited.
    pub waited: Duration,
}

/// Polls `probe` until it returns `Some`, or fails after `deadline`.
///
/// The pause between probes is a poll interval, not a guess at how long
/// something takes: the result comes as soon as the condition holds.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut probe: F) -> Result<T, Timeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if start.elapsed() >= deadline {
            return Err(Timeout {
                what: what.to_string(),
                waited: start.elapsed(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ_across_threads_calling_at_once() {
        let names: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| (0..1000).map(|_| unique_name("t")).collect::<Vec<_>>()))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        let distinct: std::collections::HashSet<&String> = names.iter().collect();
        assert_eq!(names.len(), 8000);
        assert_eq!(distinct.len(), names.len());
    }

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique_name("t"), unique_name("t"));
    }

    #[tokio::test]
    async fn wait_for_returns_the_value_and_times_out() {
        let mut n = 0;
        let v = wait_for("n to reach 3", Duration::from_secs(5), || {
            n += 1;
            let done = n >= 3;
            async move { done.then_some(n) }
        })
        .await
        .unwrap();
        assert_eq!(v, 3);
        let err = wait_for("never", Duration::from_millis(120), || async { None::<()> })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("never"));
    }
}

pub mod cdc;
pub mod checker;
pub mod keys;
pub mod process;
pub mod proxy;
pub mod redis_server;

/// The local Redis Cluster (`stack/redis/cluster-up.sh`): started if it is not
/// running; returns its nodes as `host:port`.
pub fn redis_cluster() -> Vec<String> {
    let out = std::process::Command::new("bash")
        .arg(repo_root().join("stack/redis/cluster-up.sh"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run stack/redis/cluster-up.sh: {e}"));
    assert!(
        out.status.success(),
        "stack/redis/cluster-up.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let base = port_or("PAYSTREAM_REDIS_CLUSTER_PORT", 17001);
    let count = port_or("PAYSTREAM_REDIS_CLUSTER_NODES", 3);
    (0..count)
        .map(|i| format!("127.0.0.1:{}", base + i))
        .collect()
}
