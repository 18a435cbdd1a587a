//! The chaos run's own pipeline and the I/O that sets it up and takes it
//! down: a scratch database (users, packages, purchases and payments with
//! their version triggers, seeded) plus a marker database for transaction
//! outcomes, a private Redis (testkit `RedisServer`) for the read model, two
//! testkit proxies (producer -> MariaDB, consumer and API -> Redis) through
//! which connection stalls are injected, and the producer, consumer (a static
//! group member) and API as child processes from `--bin-dir`. Faults restart
//! the children through [`Pipeline::respawn`]; everything is removed by
//! [`cleanup`] and by dropping the [`Pipeline`].

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use mysql_async::prelude::*;
use paystream_core::readmodel::Keys;
use paystream_testkit::cdc::Scratch;
use paystream_testkit::process::{Service, free_port};
use paystream_testkit::proxy::Proxy;
use paystream_testkit::redis_server::RedisServer;
use paystream_testkit::{Stack, unique_name};

use crate::freshness::{clear_kafka, ready};
use crate::mysql::admin;

/// HS256 secret shared by the run's API and its tokens.
pub const SECRET: &str = "bench-chaos-secret-0123456789abcdef-000";

/// Packages in the catalogue (ids `1..=PACKAGES`).
pub const PACKAGES: u64 = 20;

/// The names of everything the run creates.
#[derive(Debug, Clone)]
pub struct Names {
    /// The scratch database (captured by the producer).
    pub db: String,
    /// The marker database: one row per writer transaction, never captured.
    pub txn_db: String,
    /// Topic and Redis key prefix.
    pub prefix: String,
    /// Consumer group.
    pub group: String,
    /// The consumer's static group instance id.
    pub instance: String,
}

impl Names {
    /// Fresh names for one run.
    pub fn new() -> Self {
        let db = unique_name("chaos");
        let prefix = db.replace('_', "-");
        Self {
            txn_db: format!("{db}_txn"),
            group: format!("{prefix}-consumer"),
            instance: format!("{prefix}-c0"),
            prefix,
            db,
        }
    }

    /// The same names as a testkit scratch database.
    pub fn scratch(&self, stack: &Stack) -> Scratch {
        Scratch {
            stack: stack.clone(),
            db: self.db.clone(),
            prefix: self.prefix.clone(),
        }
    }

    /// The read model's keys.
    pub fn keys(&self) -> anyhow::Result<Keys> {
        Keys::new(&self.prefix).map_err(|e| anyhow!("key prefix: {e}"))
    }
}

/// The three binaries the run starts.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `paystream-producer`.
    pub producer: PathBuf,
    /// `paystream-consumer`.
    pub consumer: PathBuf,
    /// `paystream-api`.
    pub api: PathBuf,
}

fn bins_in(dir: &Path) -> Bins {
    Bins {
        producer: dir.join("paystream-producer"),
        consumer: dir.join("paystream-consumer"),
        api: dir.join("paystream-api"),
    }
}

fn all_exist(b: &Bins) -> bool {
    [&b.producer, &b.consumer, &b.api]
        .iter()
        .all(|p| p.is_file())
}

/// The binaries in `dir`, or by default in `$CARGO_TARGET_DIR/release` when
/// all three are there, else in `$CARGO_TARGET_DIR/debug`.
pub fn find_bins(dir: Option<&Path>) -> anyhow::Result<Bins> {
    let bins = match dir {
        Some(d) => bins_in(d),
        None => {
            let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| {
                format!(
                    "{}/.cache/paystream/target",
                    std::env::var("HOME").unwrap_or_default()
                )
            });
            let release = bins_in(&Path::new(&target).join("release"));
            if all_exist(&release) {
                release
            } else {
                bins_in(&Path::new(&target).join("debug"))
            }
        }
    };
    if !all_exist(&bins) {
        bail!(
            "the producer, consumer or API binary is missing next to {}: run `make chaos` or `make chaos-short`, which build them",
            bins.producer.display()
        );
    }
    Ok(bins)
}

/// Creates the scratch and marker databases and seeds `users` users (plus
/// the probe user `users + 1`), the catalogue and `rows` purchases. Writer
/// `w` of `writers` owns the seeded purchases whose id is `w` modulo
/// `writers`: their idempotency keys start with `c<w>-`.
pub async fn create_db(
    stack: &Stack,
    n: &Names,
    rows: u64,
    users: u64,
    writers: u64,
) -> anyhow::Result<()> {
    let (db, txn) = (&n.db, &n.txn_db);
    let mut c = admin(stack).await?;
    let mut sql = vec![
        format!("CREATE DATABASE {db}"),
        format!("CREATE DATABASE {txn}"),
    ];
    for t in ["users", "packages", "purchases", "payments"] {
        sql.push(format!("CREATE TABLE {db}.{t} LIKE payments.{t}"));
    }
    for t in ["packages", "purchases", "payments"] {
        sql.push(format!(
            "CREATE TRIGGER {db}.tr_{t}_version BEFORE UPDATE ON {db}.{t} FOR EACH ROW SET NEW.version = OLD.version + 1"
        ));
    }
    sql.push(format!(
        "CREATE TABLE {txn}.txns (id BIGINT UNSIGNED NOT NULL PRIMARY KEY)"
    ));
    sql.push(format!("GRANT SELECT ON {db}.* TO 'paystream_cdc'@'%'"));
    let all_users = users + 1;
    sql.push(format!(
        "INSERT INTO {db}.users (id, email, display_name) \
         SELECT seq, CONCAT('u', seq, '@chaos.paystream'), 'chaos' FROM {db}.seq_1_to_{all_users}"
    ));
    sql.push(format!(
        "INSERT INTO {db}.packages (id, code, name, price, currency) \
         SELECT seq, CONCAT('chaos-', seq), CONCAT('Pack ', seq), seq + 0.99, 'EUR' FROM {db}.seq_1_to_{PACKAGES}"
    ));
    for s in sql {
        c.query_drop(&s).await.with_context(|| s.clone())?;
    }
    let mut done = 0;
    while done < rows {
        let k = (rows - done).min(10_000);
        c.query_drop(format!(
            "INSERT INTO {db}.purchases (id, user_id, package_id, quantity, amount, currency, status, idempotency_key, created_at) \
             SELECT seq + {done}, 1 + (seq + {done}) * 7919 % {users}, 1 + (seq + {done}) % {PACKAGES}, 1, 9.99, 'EUR', 'pending', \
             CONCAT('c', (seq + {done}) % {writers}, '-s', seq + {done}), NOW(6) - INTERVAL ((seq + {done}) * 104729 % 86400000000) MICROSECOND \
             FROM {db}.seq_1_to_{k}"
        ))
        .await?;
        done += k;
    }
    Ok(())
}

/// Removes what the run created outside its own processes: the databases,
/// the topics and the consumer group. Best effort: each step is bounded and
/// the topics are tried twice (a broker that was just stalled or restarted
/// may time the first request out); failures are reported.
pub async fn cleanup(stack: &Stack, n: &Names) {
    eprintln!("chaos: removing the topics, the consumer group and the databases");
    let scratch = n.scratch(stack);
    for attempt in 1..=2 {
        match tokio::time::timeout(Duration::from_secs(90), clear_kafka(&scratch)).await {
            Ok(Ok(())) => break,
            Ok(Err(e)) => {
                eprintln!("chaos: removing the Kafka topics and group (attempt {attempt}): {e}")
            }
            Err(_) => eprintln!(
                "chaos: removing the Kafka topics and group (attempt {attempt}) took over 90 s"
            ),
        }
    }
    let drop = async {
        let mut c = admin(stack).await?;
        for db in [&n.db, &n.txn_db] {
            c.query_drop(format!("DROP DATABASE IF EXISTS {db}"))
                .await?;
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout(Duration::from_secs(120), drop).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("chaos: could not drop {} and {}: {e}", n.db, n.txn_db),
        Err(_) => eprintln!("chaos: dropping {} and {} took over 120 s", n.db, n.txn_db),
    }
}

/// Which child process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Child {
    /// The producer.
    Producer,
    /// The consumer.
    Consumer,
    /// The API.
    Api,
}

/// Starts a private Redis; the testkit panics on failure, so it runs on a
/// task of its own and a panic becomes an error.
pub async fn start_redis() -> anyhow::Result<RedisServer> {
    tokio::spawn(RedisServer::start())
        .await
        .map_err(|e| anyhow!("the private redis-server did not start: {e}"))
}

/// Kills the private Redis and starts it again, empty, on the same port.
pub async fn restart_redis(mut r: RedisServer) -> anyhow::Result<RedisServer> {
    tokio::spawn(async move {
        r.restart().await;
        r
    })
    .await
    .map_err(|e| anyhow!("the private redis-server did not restart: {e}"))
}

fn spawn(name: &str, bin: &Path, args: &[String]) -> anyhow::Result<Service> {
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        Service::spawn(name, bin, args, &[("PAYSTREAM_LOG", "info")])
    }))
    .map_err(|_| anyhow!("could not start {}", bin.display()))
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Everything the three processes' flags are made of.
struct Flags {
    stack: Stack,
    names: Names,
    bins: Bins,
    mysql_proxy_port: u16,
    redis_proxy_port: u16,
    api_port: u16,
}

impl Flags {
    fn proxied_redis_url(&self) -> String {
        format!(
            "redis://:{}@127.0.0.1:{}/0",
            self.stack.redis_password, self.redis_proxy_port
        )
    }

    fn producer(&self) -> Vec<String> {
        let port = self.mysql_proxy_port.to_string();
        self.names
            .scratch(&self.stack)
            .producer_args(&["--mysql-port", &port])
    }

    fn consumer(&self) -> Vec<String> {
        let n = &self.names;
        strings(&[
            "--topic-prefix",
            &n.prefix,
            "--database",
            &n.db,
            "--group-id",
            &n.group,
            "--group-instance-id",
            &n.instance,
            "--kafka-bootstrap",
            &self.stack.kafka_bootstrap,
            "--redis-url",
            &self.proxied_redis_url(),
        ])
    }

    fn api(&self) -> Vec<String> {
        let (n, s) = (&self.names, &self.stack);
        strings(&[
            "--listen-addr",
            &format!("127.0.0.1:{}", self.api_port),
            "--mysql-host",
            "127.0.0.1",
            "--mysql-port",
            &s.mysql_port.to_string(),
            "--mysql-user",
            &s.admin.user,
            "--mysql-password",
            &s.admin.password,
            "--mysql-database",
            &n.db,
            "--redis-url",
            &self.proxied_redis_url(),
            "--redis-key-prefix",
            &n.prefix,
            "--topic-prefix",
            &n.prefix,
            "--jwt-secret",
            SECRET,
        ])
    }

    fn start(&self, c: Child) -> anyhow::Result<Service> {
        match c {
            Child::Producer => spawn("chaos-producer", &self.bins.producer, &self.producer()),
            Child::Consumer => spawn("chaos-consumer", &self.bins.consumer, &self.consumer()),
            Child::Api => spawn("chaos-api", &self.bins.api, &self.api()),
        }
    }
}

/// The run's servers and processes. Dropping it kills the children, the
/// private Redis and the proxies.
pub struct Pipeline {
    flags: Flags,
    /// The private Redis (`None` only if a restart of it failed).
    pub redis: Option<RedisServer>,
    /// Its port.
    pub redis_port: u16,
    /// Producer -> MariaDB.
    pub mysql_proxy: Proxy,
    /// Consumer and API -> Redis.
    pub redis_proxy: Proxy,
    /// The producer.
    pub producer: Service,
    /// The consumer.
    pub consumer: Service,
    /// The API.
    pub api: Service,
}

impl Pipeline {
    /// Starts the private Redis, the proxies and the three processes, one
    /// after the other, each waited for until ready.
    pub async fn start(stack: &Stack, names: &Names, bins: Bins) -> anyhow::Result<Self> {
        let redis = start_redis().await?;
        let redis_port = redis.port;
        let mysql_proxy = Proxy::start(loopback(stack.mysql_port)).await?;
        let redis_proxy = Proxy::start(loopback(redis_port)).await?;
        let flags = Flags {
            stack: stack.clone(),
            names: names.clone(),
            bins,
            mysql_proxy_port: mysql_proxy.addr.port(),
            redis_proxy_port: redis_proxy.addr.port(),
            api_port: free_port(),
        };
        let mut producer = flags.start(Child::Producer)?;
        ready("producer", &mut producer).await?;
        let mut consumer = flags.start(Child::Consumer)?;
        ready("consumer", &mut consumer).await?;
        let mut api = flags.start(Child::Api)?;
        ready("API", &mut api).await?;
        Ok(Self {
            flags,
            redis: Some(redis),
            redis_port,
            mysql_proxy,
            redis_proxy,
            producer,
            consumer,
            api,
        })
    }

    /// The handle of `c`.
    pub fn service(&mut self, c: Child) -> &mut Service {
        match c {
            Child::Producer => &mut self.producer,
            Child::Consumer => &mut self.consumer,
            Child::Api => &mut self.api,
        }
    }

    /// Starts `c` again with the same flags (the old process is killed if it
    /// still runs).
    pub fn respawn(&mut self, c: Child) -> anyhow::Result<()> {
        let s = self.flags.start(c)?;
        *self.service(c) = s;
        Ok(())
    }

    /// SIGKILL to `c` (no restart).
    pub fn kill9(&mut self, c: Child) {
        self.service(c).kill9();
    }

    /// The private Redis, directly (the harness's own reads, flushes).
    pub fn redis_url(&self) -> String {
        format!(
            "redis://:{}@127.0.0.1:{}/0",
            self.flags.stack.redis_password, self.redis_port
        )
    }

    /// The API's base URL.
    pub fn api_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.flags.api_port)
    }

    /// The logs of the three processes (for reports).
    pub fn logs(&self) -> Vec<String> {
        [&self.producer, &self.consumer, &self.api]
            .iter()
            .map(|s| s.log.display().to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_consistent() {
        let n = Names::new();
        assert!(n.db.starts_with("chaos_"));
        assert_eq!(n.prefix, n.db.replace('_', "-"));
        assert!(n.txn_db.starts_with(&n.db));
        // The producer's `<db>.*` filter must not capture the marker database.
        assert!(!n.txn_db.starts_with(&format!("{}.", n.db)));
        assert!(n.keys().is_ok());
    }

    #[test]
    fn missing_binaries_are_refused() {
        let e = find_bins(Some(Path::new("/nonexistent"))).unwrap_err();
        assert!(e.to_string().contains("make chaos"));
    }
}
