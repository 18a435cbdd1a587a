//! The Debezium engine of the CDC benchmark: Debezium's MariaDB connector
//! (3.5.0.Final, the newest on Maven Central) in a Kafka Connect 4.1.1
//! standalone worker (Debezium 3.5's own Kafka), installed by
//! `bench/cdc/debezium/install.sh` and run by `connect.sh` as the JVM whose
//! `VmHWM` is the peak RSS. The benchmark creates a dedicated MariaDB user with
//! the privileges Debezium documents (`SELECT, RELOAD, SHOW DATABASES,
//! REPLICATION SLAVE, BINLOG MONITOR`: `paystream_cdc` lacks `RELOAD`, which
//! the schema snapshot's `FLUSH TABLES WITH READ LOCK` needs, and
//! `SHOW DATABASES`), creates the table topic (6 partitions, like paystream's)
//! and the schema-history topic explicitly (the broker does not auto-create),
//! and writes the worker and connector properties: JSON without schemas,
//! offsets in a file, `snapshot.mode=no_data` (start at the current binlog
//! end, as paystream's empty snapshot does), producer `linger.ms=5` and lz4
//! like paystream's, larger batches and queue than Debezium's defaults.
//! A drain is complete when the table topic's high watermarks add up to its
//! records before the drain plus the backlog rows (the producer is not
//! transactional, so every record below the watermark is visible). Events
//! carry DATETIME(6) as a MicroTimestamp (microseconds since the epoch, the
//! value read as UTC).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mysql_async::prelude::*;
use paystream_testkit::Stack;
use rdkafka::admin::{NewTopic, TopicReplication};
use serde_json::{Value, json};

use super::{
    Decoder, DrainTarget, Engine, Proc, create_topics, delete_topics_with_prefix, high_watermarks,
    partitions, plain_consumer,
};
use crate::mysql::admin;

/// What runs, for reports.
pub(super) const DESCRIPTION: &str =
    "Debezium MariaDB connector 3.5.0.Final on Kafka Connect 4.1.1 standalone (JDK 17)";
/// The dedicated MariaDB user.
const USER: &str = "paystream_bench_dbz";
const PASSWORD: &str = "paystream-bench-dbz";
/// Debezium's replica server id (paystream's is 9001).
const SERVER_ID: &str = "9002";
/// Partitions of the table topic, as paystream's `--partitions`.
const PARTITIONS: i32 = 6;

pub(super) struct Debezium {
    stack: Stack,
    db: String,
    prefix: String,
    run_dir: PathBuf,
    worker: BTreeMap<String, String>,
    connector: BTreeMap<String, String>,
    proc: Option<Proc>,
}

/// `key=value` overrides from the command line.
fn parse_overrides(items: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|i| {
            let (k, v) = i
                .split_once('=')
                .with_context(|| format!("`{i}` is not key=value"))?;
            Ok((k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

/// A Java properties file (values here never need escaping beyond `\`).
fn properties(map: &BTreeMap<String, String>) -> String {
    let mut s = String::from("# Written by paystream-bench cdc; see docs/benchmarks.md.\n");
    for (k, v) in map {
        s.push_str(&format!("{k}={}\n", v.replace('\\', "\\\\")));
    }
    s
}

/// The worker's configuration: standalone, offsets in a file, JSON without
/// schemas, the producer tuned like paystream's.
fn worker_config(
    stack: &Stack,
    run_dir: &std::path::Path,
    plugins: &std::path::Path,
    rest_port: u16,
) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        m.insert(k.to_owned(), v);
    };
    set("bootstrap.servers", stack.kafka_bootstrap.clone());
    for side in ["key", "value"] {
        set(
            &format!("{side}.converter"),
            "org.apache.kafka.connect.json.JsonConverter".into(),
        );
        set(&format!("{side}.converter.schemas.enable"), "false".into());
    }
    set(
        "offset.storage.file.filename",
        run_dir.join("offsets.dat").display().to_string(),
    );
    set("offset.flush.interval.ms", "1000".into());
    set("plugin.path", plugins.display().to_string());
    // Debezium's jars carry service manifests: no class-path scan.
    set("plugin.discovery", "service_load".into());
    set("listeners", format!("http://127.0.0.1:{rest_port}"));
    // Like paystream's librdkafka producer: 5 ms linger, lz4, ~1 MB batches,
    // a 64 MiB buffer; idempotent with 5 requests in flight (ordered, and
    // not Connect's default of one).
    set("producer.linger.ms", "5".into());
    set("producer.compression.type", "lz4".into());
    set("producer.batch.size", "1000000".into());
    set("producer.buffer.memory", "67108864".into());
    set("producer.acks", "all".into());
    set("producer.enable.idempotence", "true".into());
    set("producer.max.in.flight.requests.per.connection", "5".into());
    m
}

/// The connector's configuration.
fn connector_config(stack: &Stack, db: &str, prefix: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        m.insert(k.to_owned(), v);
    };
    set("name", prefix.to_owned());
    set(
        "connector.class",
        "io.debezium.connector.mariadb.MariaDbConnector".into(),
    );
    set("tasks.max", "1".into());
    set("database.hostname", "127.0.0.1".into());
    set("database.port", stack.mysql_port.to_string());
    set("database.user", USER.into());
    set("database.password", PASSWORD.into());
    set("database.server.id", SERVER_ID.into());
    // paystream reads without TLS in this benchmark too.
    set("database.ssl.mode", "disable".into());
    set("topic.prefix", prefix.to_owned());
    set("database.include.list", db.to_owned());
    set("table.include.list", format!("{db}.purchases"));
    // Schema only, then stream from the current binlog end.
    set("snapshot.mode", "no_data".into());
    // No DDL during the run; the schema-change topic is not needed.
    set("include.schema.changes", "false".into());
    // DECIMAL as a string, as paystream's events carry it.
    set("decimal.handling.mode", "string".into());
    set(
        "schema.history.internal.kafka.bootstrap.servers",
        stack.kafka_bootstrap.clone(),
    );
    set(
        "schema.history.internal.kafka.topic",
        format!("{prefix}.schema-history"),
    );
    // Keep the history to the captured table (the server has other databases).
    set(
        "schema.history.internal.store.only.captured.tables.ddl",
        "true".into(),
    );
    set(
        "schema.history.internal.store.only.captured.databases.ddl",
        "true".into(),
    );
    // Debezium's defaults are 2048/8192/500 ms; batches of 1,000-row
    // transactions want more, and a 500 ms poll wait would dominate latency.
    set("max.batch.size", "8192".into());
    set("max.queue.size", "32768".into());
    set("poll.interval.ms", "5".into());
    m
}

impl Debezium {
    /// Installs Debezium if needed, creates the user, the topics and the
    /// configuration files.
    pub(super) async fn setup(
        stack: &Stack,
        db: &str,
        connector_overrides: &[String],
        worker_overrides: &[String],
    ) -> anyhow::Result<Self> {
        let root = paystream_testkit::repo_root();
        // Before any clock starts: a first install downloads jars.
        let status = Command::new("bash")
            .arg(root.join("bench/cdc/debezium/install.sh"))
            .status()
            .context("running bench/cdc/debezium/install.sh")?;
        if !status.success() {
            bail!("bench/cdc/debezium/install.sh failed ({status})");
        }
        let plugins = debezium_home()?.join("plugins");

        let mut c = admin(stack).await?;
        c.query_drop(format!(
            "CREATE USER IF NOT EXISTS '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'"
        ))
        .await?;
        c.query_drop(format!(
            "GRANT SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '{USER}'@'%'"
        ))
        .await?;

        let prefix = db.replace('_', "-");
        let table_topic = format!("{prefix}.{db}.purchases");
        let history = format!("{prefix}.schema-history");
        create_topics(
            stack,
            &[
                NewTopic::new(&table_topic, PARTITIONS, TopicReplication::Fixed(1)),
                // Debezium wants the history kept forever.
                NewTopic::new(&history, 1, TopicReplication::Fixed(1))
                    .set("retention.ms", "-1")
                    .set("retention.bytes", "-1")
                    .set("cleanup.policy", "delete"),
            ],
        )
        .await?;

        let run_dir = root.join(format!("var/test-logs/bench-{prefix}"));
        std::fs::create_dir_all(&run_dir)?;
        let rest_port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut worker = worker_config(stack, &run_dir, &plugins, rest_port);
        for (k, v) in parse_overrides(worker_overrides)? {
            worker.insert(k, v);
        }
        let mut connector = connector_config(stack, db, &prefix);
        for (k, v) in parse_overrides(connector_overrides)? {
            connector.insert(k, v);
        }
        std::fs::write(run_dir.join("worker.properties"), properties(&worker))?;
        std::fs::write(run_dir.join("connector.properties"), properties(&connector))?;
        Ok(Self {
            stack: stack.clone(),
            db: db.to_owned(),
            prefix,
            run_dir,
            worker,
            connector,
            proc: None,
        })
    }

    /// Fails when the worker logged that the connector or its task died:
    /// Connect keeps running without them.
    fn task_failed(&self) -> anyhow::Result<()> {
        let log = self.run_dir.join("connect.log");
        let Ok(text) = std::fs::read_to_string(&log) else {
            return Ok(());
        };
        for marker in [
            "Task threw an uncaught and unrecoverable exception",
            "Failed to create connector",
            "Stopping due to error",
        ] {
            if text.contains(marker) {
                bail!("Debezium failed ({marker}); see {}", log.display());
            }
        }
        Ok(())
    }
}

/// `$PAYSTREAM_CACHE/debezium/<version>/home`, as install.sh lays it out.
fn debezium_home() -> anyhow::Result<PathBuf> {
    let cache = std::env::var("PAYSTREAM_CACHE").unwrap_or_else(|_| {
        format!(
            "{}/.cache/paystream",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let pom =
        std::fs::read_to_string(paystream_testkit::repo_root().join("bench/cdc/debezium/pom.xml"))?;
    let version =
        pom_version(&pom).context("no <debezium.version> in bench/cdc/debezium/pom.xml")?;
    Ok(PathBuf::from(cache)
        .join("debezium")
        .join(version)
        .join("home"))
}

/// The `<debezium.version>` property of the pom (its comments mention the tag too).
fn pom_version(pom: &str) -> Option<&str> {
    pom.lines().find_map(|l| {
        let v = l.trim().strip_prefix("<debezium.version>")?;
        v.strip_suffix("</debezium.version>")
    })
}

/// `after.created_at` of a Debezium event (JSON converter, schemas off):
/// DATETIME(6) is a MicroTimestamp, microseconds since the epoch.
pub(super) fn created_at_micros(payload: &[u8]) -> Option<i64> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    // With schemas on, the envelope sits under "payload".
    let envelope = v.get("payload").filter(|p| p.is_object()).unwrap_or(&v);
    envelope.get("after")?.get("created_at")?.as_i64()
}

impl Engine for Debezium {
    fn table_topic(&self) -> String {
        format!("{}.{}.purchases", self.prefix, self.db)
    }

    fn start(&mut self) -> anyhow::Result<()> {
        // A fresh log per start, so failure markers are this start's.
        let log = self.run_dir.join("connect.log");
        if log.exists() {
            let n = std::fs::read_dir(&self.run_dir)?.count();
            std::fs::rename(&log, self.run_dir.join(format!("connect.{n}.log")))?;
        }
        let mut cmd = Command::new("bash");
        cmd.arg(paystream_testkit::repo_root().join("bench/cdc/debezium/connect.sh"))
            .arg(&self.run_dir);
        self.proc = Some(Proc::spawn(
            &mut cmd,
            "Kafka Connect (Debezium)",
            &self.run_dir.join("stdout.log"),
        )?);
        Ok(())
    }

    fn check(&mut self) -> anyhow::Result<()> {
        match &mut self.proc {
            Some(p) => p.check()?,
            None => bail!("Kafka Connect is not running"),
        }
        self.task_failed()
    }

    fn wait_drained(&mut self, target: &DrainTarget, deadline: Duration) -> anyhow::Result<()> {
        let topic = self.table_topic();
        let consumer = plain_consumer(&self.stack)?;
        let ps = partitions(&consumer, &topic, Duration::from_secs(60))?;
        let start = Instant::now();
        let mut checked = Instant::now();
        let mut last = (0, Instant::now());
        while start.elapsed() < deadline {
            let n = high_watermarks(&consumer, &topic, &ps)?;
            if n >= target.table_records {
                return Ok(());
            }
            if n != last.0 {
                last = (n, Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(300) {
                bail!(
                    "Debezium made no progress for 5 minutes at {n} of {} records; see {}",
                    target.table_records,
                    self.run_dir.display()
                );
            }
            if checked.elapsed() > Duration::from_secs(1) {
                self.check()?;
                checked = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "the table topic did not reach {} records within {deadline:?}",
            target.table_records
        )
    }

    fn decoder(&self) -> Decoder {
        created_at_micros
    }

    fn peak_rss_kib(&self) -> Option<u64> {
        self.proc.as_ref()?.peak_rss_kib()
    }

    fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut p) = self.proc.take() {
            // Connect commits the task's offsets on a graceful stop, which
            // takes well under a second. Once in a make bench run of
            // 2026-11-27 it logged the commit and then hung (stopped just as
            // its task began streaming) until killed: 30 s of grace, not 90.
            p.stop(Duration::from_secs(30))?;
        }
        Ok(())
    }

    async fn cleanup(&mut self) -> anyhow::Result<()> {
        delete_topics_with_prefix(&self.stack, &format!("{}.", self.prefix)).await
    }

    fn describe(&self) -> Value {
        let mut connector = self.connector.clone();
        connector.insert("database.password".into(), "***".into());
        json!({
            "what": DESCRIPTION,
            "jvm": "-Xms256M -Xmx2G, G1 (Kafka's stock Connect settings; DEBEZIUM_HEAP_OPTS overrides)",
            "worker": self.worker,
            "connector": connector,
            "run_dir": self.run_dir.display().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_micro_timestamp_created_at() {
        let event = br#"{"before":null,"after":{"id":1,"created_at":1795760788268712,"amount":"1.00"},"source":{"ts_ms":1795760788000},"op":"c"}"#;
        assert_eq!(created_at_micros(event), Some(1_795_760_788_268_712));
        let with_schema = br#"{"schema":{},"payload":{"after":{"created_at":42}}}"#;
        assert_eq!(created_at_micros(with_schema), Some(42));
        assert_eq!(
            created_at_micros(br#"{"after":{"created_at":"2026-01-01"}}"#),
            None
        );
        assert_eq!(created_at_micros(br#"{"after":null}"#), None);
    }

    #[test]
    fn version_comes_from_the_property_not_the_comments() {
        let pom = "<!-- into $CACHE/debezium/<debezium.version>/: -->\n  <properties>\n    <debezium.version>3.5.0.Final</debezium.version>\n";
        assert_eq!(pom_version(pom), Some("3.5.0.Final"));
        let real = std::fs::read_to_string(
            paystream_testkit::repo_root().join("bench/cdc/debezium/pom.xml"),
        )
        .unwrap();
        assert!(pom_version(&real).is_some_and(|v| v.starts_with('3')));
    }

    #[test]
    fn overrides_are_key_value() {
        let o = parse_overrides(&["max.batch.size = 2048".into(), "a=b=c".into()]).unwrap();
        assert_eq!(
            o,
            vec![
                ("max.batch.size".into(), "2048".into()),
                ("a".into(), "b=c".into())
            ]
        );
        assert!(parse_overrides(&["novalue".into()]).is_err());
    }

    #[test]
    fn properties_file_lists_sorted_keys() {
        let mut m = BTreeMap::new();
        m.insert("b".to_owned(), "2".to_owned());
        m.insert("a".to_owned(), "C:\\x".to_owned());
        let text = properties(&m);
        assert!(text.ends_with("a=C:\\\\x\nb=2\n"), "{text}");
    }

    #[test]
    fn connector_starts_from_the_binlog_end_with_a_dedicated_user() {
        let stack = Stack::from_env();
        let c = connector_config(&stack, "bench_dbz_1", "bench-dbz-1");
        assert_eq!(c["snapshot.mode"], "no_data");
        assert_eq!(c["database.user"], USER);
        assert_eq!(c["table.include.list"], "bench_dbz_1.purchases");
        assert_eq!(
            c["schema.history.internal.kafka.topic"],
            "bench-dbz-1.schema-history"
        );
    }
}
