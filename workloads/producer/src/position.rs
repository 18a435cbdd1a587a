//! Advances a checkpoint by the progress of a published chunk: the one place
//! that turns "this transaction is in Kafka" into a new resumable position.
//! A complete transaction adds its GTID to the position and moves file/pos; a
//! partial chunk only records how many records of the open transaction are
//! already published.

use paystream_core::checkpoint::{Checkpoint, Flavor, PartialTransaction, SnapshotState};

use crate::gtid::{GtidError, MariaGtid, MariaGtidList, MySqlGtidSet, ServerUuid};
use crate::txn::Progress;

/// The checkpoint or a transaction's GTID could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum PositionError {
    /// A GTID string is malformed.
    #[error("bad GTID {gtid:?}: {source}")]
    Gtid {
        /// The string.
        gtid: String,
        /// The cause.
        #[source]
        source: GtidError,
    },
    /// A MySQL transaction GTID is not `uuid:number`.
    #[error("expected one MySQL transaction GTID uuid:number, got {0:?}")]
    NotOneTransaction(String),
}

fn bad(gtid: &str) -> impl FnOnce(GtidError) -> PositionError + '_ {
    move |source| PositionError::Gtid {
        gtid: gtid.to_string(),
        source,
    }
}

/// Adds one transaction's GTID to a position string of `flavor`.
pub fn add_gtid(flavor: Flavor, position: &str, gtid: &str) -> Result<String, PositionError> {
    match flavor {
        Flavor::Mariadb => {
            let mut list: MariaGtidList = position.parse().map_err(bad(position))?;
            let g: MariaGtid = gtid.parse().map_err(bad(gtid))?;
            list.apply(g);
            Ok(list.to_string())
        }
        Flavor::Mysql => {
            let mut set: MySqlGtidSet = position.parse().map_err(bad(position))?;
            let not_one = || PositionError::NotOneTransaction(gtid.to_string());
            let (uuid, n) = gtid.rsplit_once(':').ok_or_else(not_one)?;
            let uuid: ServerUuid = uuid.parse().map_err(bad(gtid))?;
            let n: u64 = n.parse().map_err(|_| not_one())?;
            set.add(uuid, n);
            Ok(set.to_string())
        }
    }
}

/// Applies `progress` to `cp`.
pub fn advance(cp: &mut Checkpoint, progress: &Progress) -> Result<(), PositionError> {
    match progress {
        Progress::Complete {
            gtid,
            file,
            pos,
            ts_ms,
        } => {
            if let Some(g) = gtid {
                cp.gtid = add_gtid(cp.flavor, &cp.gtid, g)?;
            }
            cp.file.clone_from(file);
            cp.pos = *pos;
            cp.last_event_ts_ms = (*ts_ms).max(cp.last_event_ts_ms);
            cp.partial = None;
        }
        Progress::Snapshot {
            gtid,
            file,
            pos,
            done,
        } => {
            cp.gtid.clone_from(gtid);
            cp.file.clone_from(file);
            cp.pos = *pos;
            cp.partial = None;
            cp.snapshot = if *done {
                SnapshotState::Done
            } else {
                SnapshotState::Running
            };
        }
        Progress::Partial { gtid, records } => {
            cp.partial = Some(PartialTransaction {
                gtid: gtid.clone(),
                records: *records,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(flavor: Flavor, gtid: &str) -> Checkpoint {
        Checkpoint {
            source: "ps".into(),
            flavor,
            gtid: gtid.into(),
            file: "f.1".into(),
            pos: 4,
            last_event_ts_ms: 0,
            partial: None,
            snapshot: SnapshotState::Done,
        }
    }

    #[test]
    fn mariadb_positions_advance_per_domain() {
        let mut c = cp(Flavor::Mariadb, "0-1-41,1-2-7");
        advance(
            &mut c,
            &Progress::Partial {
                gtid: "0-1-42".into(),
                records: 10,
            },
        )
        .unwrap();
        assert_eq!(c.partial.as_ref().unwrap().records, 10);
        assert_eq!(
            c.gtid, "0-1-41,1-2-7",
            "a partial chunk does not move the GTID"
        );
        advance(
            &mut c,
            &Progress::Complete {
                gtid: Some("0-1-42".into()),
                file: "f.2".into(),
                pos: 900,
                ts_ms: 5,
            },
        )
        .unwrap();
        assert_eq!(c.gtid, "0-1-42,1-2-7");
        assert_eq!(
            (c.file.as_str(), c.pos, c.last_event_ts_ms),
            ("f.2", 900, 5)
        );
        assert_eq!(c.partial, None);
    }

    #[test]
    fn snapshot_progress_sets_the_position_and_state() {
        let mut c = cp(Flavor::Mariadb, "");
        let snap = |done| Progress::Snapshot {
            gtid: "0-1-99".into(),
            file: "f.3".into(),
            pos: 77,
            done,
        };
        advance(&mut c, &snap(false)).unwrap();
        assert_eq!(c.snapshot, SnapshotState::Running);
        assert_eq!((c.gtid.as_str(), c.pos), ("0-1-99", 77));
        advance(&mut c, &snap(true)).unwrap();
        assert_eq!(c.snapshot, SnapshotState::Done);
    }

    #[test]
    fn empty_positions_and_mysql_sets() {
        assert_eq!(add_gtid(Flavor::Mariadb, "", "0-1-1").unwrap(), "0-1-1");
        let u = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let s = add_gtid(Flavor::Mysql, &format!("{u}:1-4"), &format!("{u}:5")).unwrap();
        assert_eq!(s, format!("{u}:1-5"));
        assert!(add_gtid(Flavor::Mysql, "", "nonsense").is_err());
        assert!(add_gtid(Flavor::Mariadb, "", "0-x-1").is_err());
    }
}
