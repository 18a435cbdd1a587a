//! The paystream engine of the CDC benchmark: the release `paystream-producer`
//! as its own process, capturing the benchmark database as the
//! `paystream_cdc` user (replication and `SELECT`, the documented minimum)
//! into `<prefix>.<db>.purchases` with 6 partitions, without TLS to MariaDB,
//! with its default buffers and Kafka settings (transactions, `linger.ms=5`,
//! lz4). A drain is complete when a checkpoint in `<prefix>.checkpoints`, the
//! record committed in the same Kafka transaction as the events, covers the
//! backlog's last GTID; events carry DATETIME values as ISO-8601 UTC strings.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mysql_async::prelude::*;
use paystream_core::checkpoint::Checkpoint;
use paystream_testkit::Stack;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::Offset;
use serde_json::{Value, json};

use super::{Decoder, DrainTarget, Engine, Proc, delete_topics_with_prefix, reader, seq_of};
use crate::mysql::admin;

/// The producer's replica server id in the benchmark.
const SERVER_ID: &str = "9001";
/// Partitions of the change topics.
const PARTITIONS: &str = "6";

pub(super) struct Paystream {
    stack: Stack,
    db: String,
    prefix: String,
    binary: String,
    proc: Option<Proc>,
}

impl Paystream {
    /// Lets `paystream_cdc` read the benchmark database.
    pub(super) async fn setup(stack: &Stack, db: &str, binary: &str) -> anyhow::Result<Self> {
        if !std::path::Path::new(binary).exists() {
            bail!("no producer binary at {binary} (run `make bench-cdc`, which builds it)");
        }
        let mut c = admin(stack).await?;
        c.query_drop(format!(
            "GRANT SELECT ON {db}.* TO '{}'@'%'",
            stack.cdc.user
        ))
        .await?;
        Ok(Self {
            stack: stack.clone(),
            db: db.to_owned(),
            prefix: db.replace('_', "-"),
            binary: binary.to_owned(),
            proc: None,
        })
    }

    fn args(&self) -> Vec<String> {
        [
            "--mysql-port",
            &self.stack.mysql_port.to_string(),
            "--mysql-user",
            &self.stack.cdc.user,
            "--mysql-password",
            &self.stack.cdc.password,
            "--server-id",
            SERVER_ID,
            "--topic-prefix",
            &self.prefix,
            "--include-table",
            &format!("{}.*", self.db),
            "--kafka-bootstrap",
            &self.stack.kafka_bootstrap,
            "--partitions",
            PARTITIONS,
            "--ops-addr",
            "127.0.0.1:0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

/// `after.created_at` of a paystream event: ISO-8601 UTC.
pub(super) fn created_at_micros(payload: &[u8]) -> Option<i64> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    let s = v.get("after")?.get("created_at")?.as_str()?;
    Some(
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()?
            .timestamp_micros(),
    )
}

impl Engine for Paystream {
    fn table_topic(&self) -> String {
        format!("{}.{}.purchases", self.prefix, self.db)
    }

    fn start(&mut self) -> anyhow::Result<()> {
        let log =
            paystream_testkit::repo_root().join(format!("var/test-logs/bench-{}.log", self.prefix));
        let mut cmd = Command::new(&self.binary);
        cmd.args(self.args()).env("PAYSTREAM_LOG", "warn");
        self.proc = Some(Proc::spawn(&mut cmd, "paystream-producer", &log)?);
        Ok(())
    }

    fn check(&mut self) -> anyhow::Result<()> {
        match &mut self.proc {
            Some(p) => p.check(),
            None => bail!("the producer is not running"),
        }
    }

    fn wait_drained(&mut self, target: &DrainTarget, deadline: Duration) -> anyhow::Result<()> {
        let checkpoints = reader(
            &self.stack,
            &format!("{}.checkpoints", self.prefix),
            Some(Offset::Beginning),
        )?;
        let start = Instant::now();
        let mut checked = Instant::now();
        while start.elapsed() < deadline {
            if checked.elapsed() > Duration::from_secs(1) {
                self.check()?;
                checked = Instant::now();
            }
            if let Some(m) = checkpoints.poll(Duration::from_millis(20)) {
                let m = m?;
                if let Some(p) = m.payload() {
                    let cp: Checkpoint =
                        serde_json::from_slice(p).context("decoding a checkpoint")?;
                    if seq_of(&cp.gtid) >= target.last_seq {
                        return Ok(());
                    }
                }
            }
        }
        bail!(
            "no checkpoint covered GTID sequence {} within {deadline:?}",
            target.last_seq
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
            p.stop(Duration::from_secs(60))?;
        }
        Ok(())
    }

    async fn cleanup(&mut self) -> anyhow::Result<()> {
        delete_topics_with_prefix(&self.stack, &format!("{}.", self.prefix)).await
    }

    fn describe(&self) -> Value {
        json!({
            "binary": self.binary,
            "args": self.args().iter().map(|a| if a == &self.stack.cdc.password { "***".to_owned() } else { a.clone() }).collect::<Vec<_>>(),
            "user": self.stack.cdc.user,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_iso_8601_created_at() {
        let event = br#"{"op":"c","after":{"id":1,"created_at":"2026-11-27T06:26:28.268712Z"}}"#;
        assert_eq!(created_at_micros(event), Some(1_795_760_788_268_712));
        assert_eq!(created_at_micros(br#"{"after":{"created_at":5}}"#), None);
        assert_eq!(created_at_micros(b"not json"), None);
    }
}
