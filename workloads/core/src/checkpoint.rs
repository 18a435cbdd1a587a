//! The producer's checkpoint: how far into the binlog the change topics are
//! complete.
//!
//! The producer writes one checkpoint record per Kafka transaction to the
//! compacted topic [`checkpoint_topic`], keyed by the source name, in the same
//! transaction as the events it covers. A `read_committed` reader therefore
//! sees a checkpoint if and only if it sees every event up to it. The producer
//! resumes from it; the operator shows it in the PaymentPipeline status.

use serde::{Deserialize, Serialize};

/// Which server dialect the position belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    /// MariaDB: GTIDs are `domain-server-seq`, positions are lists per domain.
    Mariadb,
    /// MySQL: GTIDs are `uuid:n`, positions are GTID sets.
    Mysql,
}

/// The events of one source transaction that are already in Kafka, when a very
/// large transaction was split across Kafka transactions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialTransaction {
    /// GTID of the split source transaction.
    pub gtid: String,
    /// How many of its records are already published; a resumed reader skips
    /// exactly these.
    pub records: u64,
}

/// Progress of the initial snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotState {
    /// No snapshot was taken (mode `never`).
    Skipped,
    /// A snapshot is being published; streaming starts at the checkpoint's
    /// position once it completes. A restart begins the snapshot again.
    Running,
    /// The snapshot is complete.
    Done,
}

/// A resumable position of the producer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Logical source name (the topic prefix).
    pub source: String,
    /// Server dialect of `gtid`.
    pub flavor: Flavor,
    /// GTID position after the last complete source transaction
    /// (MariaDB `0-1-42,1-2-7` or a MySQL GTID set); may be empty.
    pub gtid: String,
    /// Binlog file of that position.
    pub file: String,
    /// Binlog offset of that position within `file`.
    pub pos: u64,
    /// Commit time of the last complete source transaction, ms since the epoch.
    pub last_event_ts_ms: i64,
    /// A split transaction whose first records are already published.
    pub partial: Option<PartialTransaction>,
    /// Snapshot progress.
    pub snapshot: SnapshotState,
}

/// The compacted topic holding the checkpoints of the sources under `prefix`.
pub fn checkpoint_topic(prefix: &str) -> String {
    format!("{prefix}.checkpoints")
}

impl Checkpoint {
    /// Short human form for status columns: the GTID position if any, else
    /// `file:pos`.
    pub fn display_position(&self) -> String {
        if self.gtid.is_empty() {
            format!("{}:{}", self.file, self.pos)
        } else {
            self.gtid.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_displays() {
        let cp = Checkpoint {
            source: "ps".into(),
            flavor: Flavor::Mariadb,
            gtid: "0-1-42".into(),
            file: "mariadb-bin.000002".into(),
            pos: 1234,
            last_event_ts_ms: 5,
            partial: Some(PartialTransaction {
                gtid: "0-1-43".into(),
                records: 1000,
            }),
            snapshot: SnapshotState::Done,
        };
        let json = serde_json::to_value(&cp).unwrap();
        assert_eq!(json["flavor"], "mariadb");
        assert_eq!(json["snapshot"], "done");
        assert_eq!(serde_json::from_value::<Checkpoint>(json).unwrap(), cp);
        assert_eq!(cp.display_position(), "0-1-42");
        let no_gtid = Checkpoint {
            gtid: String::new(),
            ..cp
        };
        assert_eq!(no_gtid.display_position(), "mariadb-bin.000002:1234");
        assert_eq!(checkpoint_topic("ps"), "ps.checkpoints");
    }
}
