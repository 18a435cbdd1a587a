//! Runs the producer: one session after another until shutdown.
//!
//! A session connects to Kafka (fencing older instances), reads the last
//! committed checkpoint, decides whether to snapshot, and then runs the
//! binlog reader and the publisher side by side over a bounded channel. When
//! either side fails, the other is stopped and a new session starts from the
//! last committed checkpoint, after a backoff: Kafka or database outages are
//! retried forever with readiness false, never a crash loop. A permanent
//! error (a purged binlog without `when_needed`, an undecodable row) halts
//! the pipeline with a message that says how to fix it; the process stays up
//! and not ready, so the message stays visible instead of a restart loop.

use std::time::Duration;

use paystream_core::checkpoint::{Checkpoint, Flavor, SnapshotState, checkpoint_topic};
use paystream_runtime::readiness::Check;
use rdkafka::config::ClientConfig;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::checkpoint_store;
use crate::config::{Config, SnapshotMode};
use crate::filter::TableFilter;
use crate::metrics::ProducerMetrics;
use crate::publisher::{Publisher, PublisherSettings};
use crate::reader::{Reader, ReaderError, ReaderSettings, StartPosition};
use crate::records::RecordSettings;
use crate::snapshot::{self, SnapshotSettings};
use crate::source::{self, SourceOpts};
use crate::topics::{TopicEnsurer, TopicKind, TopicSettings};

/// Readiness checks the pipeline drives.
#[derive(Clone)]
pub struct Checks {
    /// The binlog stream is connected.
    pub mysql: Check,
    /// Kafka accepts transactions.
    pub kafka: Check,
    /// The pipeline is not halted.
    pub running: Check,
}

/// How a session ended.
enum Outcome {
    Shutdown,
    Retry(String),
    Resnapshot(String),
    Halt(String),
}

/// Runs sessions until `shutdown`. Returns the permanent error, if the
/// pipeline halted, once shutdown is requested.
pub async fn run(
    config: Config,
    metrics: ProducerMetrics,
    checks: Checks,
    shutdown: CancellationToken,
) -> Option<String> {
    checks.running.set(true);
    let mut backoff = Duration::from_millis(200);
    let max_backoff = Duration::from_secs(config.max_backoff_secs.max(1));
    let mut force_snapshot = false;
    loop {
        if shutdown.is_cancelled() {
            return None;
        }
        let outcome = session(&config, &metrics, &checks, &shutdown, force_snapshot).await;
        checks.mysql.set(false);
        match outcome {
            Outcome::Shutdown => return None,
            Outcome::Resnapshot(why) => {
                tracing::warn!(reason = %why, "the checkpoint's binlog is gone; taking a new snapshot (snapshot mode when_needed)");
                force_snapshot = true;
            }
            Outcome::Retry(why) => {
                metrics.error("session");
                tracing::warn!(error = %why, retry_in = ?backoff, "producer session failed; resuming from the last committed checkpoint");
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(max_backoff);
            }
            Outcome::Halt(why) => {
                checks.running.set(false);
                metrics.error("halted");
                tracing::error!(error = %why, "producer halted; fix the cause and restart it");
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return Some(why),
                        _ = tokio::time::sleep(Duration::from_secs(60)) => {
                            tracing::error!(error = %why, "producer is halted");
                        }
                    }
                }
            }
        }
    }
}

/// The librdkafka configuration shared by the producer's Kafka clients.
pub fn kafka_config(config: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in config.kafka.client_properties() {
        c.set(k, v);
    }
    c
}

async fn session(
    config: &Config,
    metrics: &ProducerMetrics,
    checks: &Checks,
    shutdown: &CancellationToken,
    force_snapshot: bool,
) -> Outcome {
    let base = kafka_config(config);
    let prefix = config.topic_prefix.clone();
    let cp_topic = checkpoint_topic(&prefix);
    let dlq_topic = format!("{prefix}.dlq");

    // Kafka first: fence older instances, then read what they committed.
    let mut topics = match TopicEnsurer::new(
        &base,
        TopicSettings {
            partitions: config.partitions,
            replication_factor: config.replication_factor,
        },
    ) {
        Ok(t) => t,
        Err(e) => return Outcome::Halt(format!("bad Kafka configuration: {e}")),
    };
    for (topic, kind) in [
        (&cp_topic, TopicKind::Checkpoint),
        (&dlq_topic, TopicKind::DeadLetter),
    ] {
        if let Err(e) = topics.ensure(topic, kind).await {
            checks.kafka.set(false);
            return Outcome::Retry(e.to_string());
        }
    }
    let settings = PublisherSettings {
        transactional_id: config.transactional_id(),
        checkpoint_topic: cp_topic.clone(),
        batch_max_records: config.batch_max_records,
        batch_linger: Duration::from_millis(config.batch_linger_ms),
        txn_timeout: Duration::from_secs(60),
        stall_timeout: Duration::from_secs(config.kafka_stall_timeout_secs.max(1)),
        idle_checkpoint_interval: Duration::from_secs(1),
    };
    let publisher = match Publisher::connect(&base, settings, metrics.clone()).await {
        Ok(p) => p,
        Err(e) => {
            checks.kafka.set(false);
            return Outcome::Retry(e.to_string());
        }
    };
    let read = {
        let base = base.clone();
        let (topic, source) = (cp_topic.clone(), prefix.clone());
        tokio::task::spawn_blocking(move || {
            checkpoint_store::read_latest(&base, &topic, &source, Duration::from_secs(30))
        })
        .await
    };
    let stored = match read {
        Ok(Ok(cp)) => cp,
        Ok(Err(e @ checkpoint_store::CheckpointReadError::Malformed { .. })) => {
            return Outcome::Halt(e.to_string());
        }
        Ok(Err(e)) => {
            checks.kafka.set(false);
            return Outcome::Retry(e.to_string());
        }
        Err(e) => return Outcome::Retry(e.to_string()),
    };
    checks.kafka.set(true);

    // The source: flavour and current position.
    let source_opts = SourceOpts::from_config(config);
    let current = match source_opts.connect().await {
        Ok(mut conn) => {
            let r = source::current_position(&mut conn).await;
            let _ = conn.disconnect().await;
            match r {
                Ok(p) => p,
                Err(e) => return db_outcome(e),
            }
        }
        Err(e) => return db_outcome(e),
    };

    let filter = TableFilter::new(config.include_tables.clone(), config.exclude_tables.clone());
    let records = RecordSettings {
        prefix: prefix.clone(),
        connector: match current.flavor {
            Flavor::Mariadb => "mariadb".into(),
            Flavor::Mysql => "mysql".into(),
        },
        tombstones: config.tombstones,
    };

    let (needs_snapshot, start_cp) = plan(
        config.snapshot_mode,
        stored,
        &current,
        &prefix,
        force_snapshot,
    );
    if let Some(cp) = &start_cp
        && cp.flavor != current.flavor
    {
        return Outcome::Halt(format!(
            "the checkpoint is for {:?} but the server is {:?}; use a new --topic-prefix for a new source",
            cp.flavor, current.flavor
        ));
    }
    let initial = start_cp.clone().unwrap_or_else(|| Checkpoint {
        source: prefix.clone(),
        flavor: current.flavor,
        gtid: String::new(),
        file: String::new(),
        pos: 4,
        last_event_ts_ms: 0,
        partial: None,
        snapshot: SnapshotState::Running,
    });
    if !needs_snapshot && stored_is_new(&start_cp) {
        // Starting from "now" without a snapshot: persist that position first,
        // so a crash before the first event cannot move the start later.
        if let Err(e) = publisher.commit_checkpoint(&initial).await {
            return Outcome::Retry(e.to_string());
        }
    }

    let (tx, mut rx) = mpsc::channel(config.buffer_chunks);
    // The snapshot state of the last committed checkpoint.
    let (committed, mut committed_rx) = tokio::sync::watch::channel(initial.snapshot.clone());
    let stop = shutdown.child_token();
    let reader_settings = ReaderSettings {
        server_id: config.server_id,
        heartbeat: config.heartbeat(),
        read_timeout: config.read_timeout(),
        max_backoff: Duration::from_secs(config.max_backoff_secs.max(1)),
        filter: filter.clone(),
        records: records.clone(),
        max_chunk_records: config.max_chunk_records,
        on_decode_error: config.on_decode_error,
        dead_letter_topic: dlq_topic.clone(),
    };

    let produce = async {
        let start = if needs_snapshot {
            let snap_settings = SnapshotSettings {
                filter: filter.clone(),
                chunk_rows: config.snapshot_chunk,
                records: records.clone(),
            };
            // Not ready during the snapshot: readiness means streaming.
            match snapshot::run(
                &source_opts,
                &snap_settings,
                &mut topics,
                metrics,
                &tx,
                &stop,
            )
            .await
            {
                Ok(at) => {
                    // Stream only once the snapshot's end is committed: a
                    // crash before that point takes the snapshot again, and
                    // changes streamed meanwhile would come out as reads.
                    tokio::select! {
                        r = committed_rx.wait_for(|s| *s == SnapshotState::Done) => {
                            if r.is_err() {
                                stop.cancel();
                                return Outcome::Shutdown;
                            }
                        }
                        _ = stop.cancelled() => return Outcome::Shutdown,
                    }
                    StartPosition {
                        flavor: current.flavor,
                        gtid: at.gtid,
                        file: at.file,
                        pos: at.pos,
                        partial: None,
                    }
                }
                Err(snapshot::SnapshotError::Cancelled)
                | Err(snapshot::SnapshotError::PublisherGone) => {
                    stop.cancel();
                    return Outcome::Shutdown;
                }
                Err(snapshot::SnapshotError::UnsupportedFlavor) => {
                    stop.cancel();
                    return Outcome::Halt(snapshot::SnapshotError::UnsupportedFlavor.to_string());
                }
                Err(e) => {
                    stop.cancel();
                    return Outcome::Retry(format!("snapshot: {e}"));
                }
            }
        } else {
            StartPosition {
                flavor: initial.flavor,
                gtid: initial.gtid.clone(),
                file: initial.file.clone(),
                pos: initial.pos,
                partial: initial
                    .partial
                    .as_ref()
                    .map(|p| (p.gtid.clone(), p.records)),
            }
        };
        let mut reader = Reader::new(
            reader_settings,
            source_opts.clone(),
            metrics.clone(),
            checks.mysql.clone(),
            topics,
        );
        let result = reader.run(start, &tx, &stop).await;
        stop.cancel();
        match result {
            Ok(()) | Err(ReaderError::PublisherGone) => Outcome::Shutdown,
            Err(e @ ReaderError::Purged { .. }) => {
                if config.snapshot_mode == SnapshotMode::WhenNeeded && !force_snapshot {
                    Outcome::Resnapshot(e.to_string())
                } else {
                    Outcome::Halt(e.to_string())
                }
            }
            Err(e) => Outcome::Halt(e.to_string()),
        }
    };
    let publish = async {
        let r = publisher
            .run(initial.clone(), &mut rx, &stop, &committed)
            .await;
        stop.cancel();
        r
    };
    let (produced, published) = tokio::join!(produce, publish);
    if let Err(e) = published {
        checks.kafka.set(false);
        metrics.error("kafka");
        return Outcome::Retry(e.to_string());
    }
    match produced {
        Outcome::Shutdown if !shutdown.is_cancelled() => Outcome::Retry("session stopped".into()),
        other => other,
    }
}

fn stored_is_new(start_cp: &Option<Checkpoint>) -> bool {
    start_cp
        .as_ref()
        .is_some_and(|cp| cp.snapshot == SnapshotState::Skipped && cp.file.is_empty())
}

fn db_outcome(e: mysql_async::Error) -> Outcome {
    if source::is_transient(&e) {
        Outcome::Retry(format!("database: {e}"))
    } else {
        Outcome::Halt(format!("database refused the producer: {e}"))
    }
}

/// Decides whether to snapshot and which checkpoint to start from. Pure.
fn plan(
    mode: SnapshotMode,
    stored: Option<Checkpoint>,
    current: &source::CurrentPosition,
    prefix: &str,
    force_snapshot: bool,
) -> (bool, Option<Checkpoint>) {
    if force_snapshot {
        return (true, None);
    }
    match stored {
        Some(cp) if cp.snapshot == SnapshotState::Running => {
            (mode != SnapshotMode::Never, Some(cp))
        }
        Some(cp) => (false, Some(cp)),
        None if mode == SnapshotMode::Never => (
            false,
            Some(Checkpoint {
                source: prefix.to_string(),
                flavor: current.flavor,
                gtid: current.gtid.clone(),
                file: String::new(),
                pos: current.pos,
                last_event_ts_ms: 0,
                partial: None,
                snapshot: SnapshotState::Skipped,
            }),
        ),
        None => (true, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current() -> source::CurrentPosition {
        source::CurrentPosition {
            flavor: Flavor::Mariadb,
            gtid: "0-1-50".into(),
            file: "bin.000002".into(),
            pos: 900,
        }
    }

    fn stored(state: SnapshotState) -> Checkpoint {
        Checkpoint {
            source: "ps".into(),
            flavor: Flavor::Mariadb,
            gtid: "0-1-10".into(),
            file: "bin.000001".into(),
            pos: 100,
            last_event_ts_ms: 0,
            partial: None,
            snapshot: state,
        }
    }

    #[test]
    fn first_start_snapshots_unless_never() {
        assert_eq!(
            plan(SnapshotMode::Initial, None, &current(), "ps", false),
            (true, None)
        );
        assert_eq!(
            plan(SnapshotMode::WhenNeeded, None, &current(), "ps", false),
            (true, None)
        );
        let (snap, cp) = plan(SnapshotMode::Never, None, &current(), "ps", false);
        assert!(!snap);
        let cp = cp.unwrap();
        assert_eq!(cp.gtid, "0-1-50");
        assert_eq!(cp.snapshot, SnapshotState::Skipped);
        assert!(stored_is_new(&Some(cp)));
    }

    #[test]
    fn a_checkpoint_resumes_and_an_interrupted_snapshot_restarts() {
        let (snap, cp) = plan(
            SnapshotMode::Initial,
            Some(stored(SnapshotState::Done)),
            &current(),
            "ps",
            false,
        );
        assert!(!snap);
        assert_eq!(cp.as_ref().unwrap().gtid, "0-1-10");
        assert!(!stored_is_new(&cp));
        let (snap, _) = plan(
            SnapshotMode::Initial,
            Some(stored(SnapshotState::Running)),
            &current(),
            "ps",
            false,
        );
        assert!(snap);
        let (snap, _) = plan(
            SnapshotMode::WhenNeeded,
            Some(stored(SnapshotState::Done)),
            &current(),
            "ps",
            true,
        );
        assert!(snap, "a purged binlog forces a new snapshot");
    }
}
