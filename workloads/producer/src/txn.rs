//! Groups binlog events into source transactions: the pure state machine
//! between the binlog reader and the publisher.
//!
//! A transaction opens at its GTID event (or a `BEGIN` query without GTIDs),
//! collects the records built from its row events, and closes at its XID event
//! or `COMMIT` query, yielding a [`Chunk`] whose progress is the position
//! after the transaction. A `ROLLBACK` discards the buffer: rolled-back work
//! never produces events. A standalone GTID (DDL) closes at its statement.
//! A transaction larger than the chunk limit is yielded in pieces marked
//! [`Progress::Partial`], so memory stays bounded; when the reader resumes a
//! transaction that was split, [`Assembler::resume_skipping`] drops exactly the
//! records already published.

use crate::records::Record;

/// What publishing a chunk achieves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The chunk ends a source transaction; after it, the stream is complete
    /// up to and including `gtid` (if any), at `file:pos`.
    Complete {
        /// GTID of the transaction, when the server uses GTIDs.
        gtid: Option<String>,
        /// Binlog file after the transaction.
        file: String,
        /// Binlog position after the transaction.
        pos: u64,
        /// Commit time, ms since the epoch.
        ts_ms: i64,
    },
    /// The chunk belongs to the snapshot taken at `gtid`/`file:pos`; `done`
    /// marks its last chunk, after which streaming starts at that position.
    Snapshot {
        /// GTID position of the snapshot.
        gtid: String,
        /// Binlog file of the snapshot.
        file: String,
        /// Binlog offset of the snapshot.
        pos: u64,
        /// Whether this is the snapshot's last chunk.
        done: bool,
    },
    /// The chunk is a piece of a larger transaction: after it, the first
    /// `records` records of transaction `gtid` are published.
    Partial {
        /// GTID of the open transaction.
        gtid: String,
        /// Records of this transaction published so far, including this chunk.
        records: u64,
    },
}

/// Records to publish together with the progress they make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Records in commit order.
    pub records: Vec<Record>,
    /// What the stream position becomes once these are published.
    pub progress: Progress,
}

#[derive(Debug, Default)]
struct OpenTxn {
    gtid: Option<String>,
    standalone: bool,
    records: Vec<Record>,
    /// Records of this transaction already yielded in earlier chunks.
    yielded: u64,
    /// Records still to drop because an earlier run published them.
    skip: u64,
}

/// The transaction assembler.
#[derive(Debug)]
pub struct Assembler {
    max_chunk_records: usize,
    file: String,
    open: Option<OpenTxn>,
    resume: Option<(String, u64)>,
    discarded_partial: u64,
}

/// The binlog broke the expected transaction framing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TxnError {
    /// Row events arrived outside any transaction.
    #[error("row event outside a transaction at {file}:{pos}")]
    RowsOutsideTransaction {
        /// Binlog file.
        file: String,
        /// Event position.
        pos: u64,
    },
}

impl Assembler {
    /// An assembler that yields at most `max_chunk_records` records per chunk.
    pub fn new(max_chunk_records: usize) -> Self {
        Self {
            max_chunk_records: max_chunk_records.max(1),
            file: String::new(),
            open: None,
            resume: None,
            discarded_partial: 0,
        }
    }

    /// The transaction `gtid` was split and its first `records` records are
    /// already published: drop them when it is read again.
    pub fn resume_skipping(&mut self, gtid: String, records: u64) {
        self.resume = Some((gtid, records));
    }

    /// The binlog file currently read (from ROTATE events).
    pub fn file(&self) -> &str {
        &self.file
    }

    /// A ROTATE event: later positions are in `file`.
    pub fn rotate(&mut self, file: String) {
        self.file = file;
    }

    /// Whether a transaction is open.
    pub fn in_transaction(&self) -> bool {
        self.open.is_some()
    }

    /// How many records of rolled-back transactions had already been yielded
    /// (only possible for non-transactional tables mixed into a transaction
    /// larger than a chunk). Exposed as a metric; normally zero.
    pub fn discarded_partial(&self) -> u64 {
        self.discarded_partial
    }

    /// A GTID event opens a transaction. `standalone` marks a statement that
    /// commits by itself (DDL).
    pub fn begin(&mut self, gtid: Option<String>, standalone: bool) {
        let skip = match (&self.resume, &gtid) {
            (Some((g, n)), Some(this)) if g == this => *n,
            _ => 0,
        };
        if skip > 0 {
            self.resume = None;
        }
        self.open = Some(OpenTxn {
            gtid,
            standalone,
            records: Vec::new(),
            yielded: skip,
            skip,
        });
    }

    /// A `BEGIN` query: opens a transaction unless a GTID event already did.
    pub fn begin_query(&mut self) {
        if self.open.is_none() {
            self.begin(None, false);
        }
    }

    /// Whether the open transaction is a standalone statement.
    pub fn open_is_standalone(&self) -> bool {
        self.open.as_ref().is_some_and(|t| t.standalone)
    }

    /// GTID of the open transaction.
    pub fn open_gtid(&self) -> Option<&str> {
        self.open.as_ref().and_then(|t| t.gtid.as_deref())
    }

    /// Adds the records of one row event; yields a partial chunk when the
    /// transaction outgrows the chunk limit.
    pub fn push(&mut self, records: Vec<Record>, pos: u64) -> Result<Option<Chunk>, TxnError> {
        let max = self.max_chunk_records;
        let Some(txn) = self.open.as_mut() else {
            return Err(TxnError::RowsOutsideTransaction {
                file: self.file.clone(),
                pos,
            });
        };
        for r in records {
            if txn.skip > 0 {
                txn.skip -= 1;
                continue;
            }
            txn.records.push(r);
        }
        if txn.records.len() >= max {
            let gtid = txn.gtid.clone().unwrap_or_default();
            let records = std::mem::take(&mut txn.records);
            txn.yielded += records.len() as u64;
            return Ok(Some(Chunk {
                records,
                progress: Progress::Partial {
                    gtid,
                    records: txn.yielded,
                },
            }));
        }
        Ok(None)
    }

    /// An XID event or `COMMIT` query closes the open transaction at `pos`.
    /// Without an open transaction (a stray COMMIT), only the position moves.
    pub fn commit(&mut self, pos: u64, ts_ms: i64) -> Chunk {
        let txn = self.open.take().unwrap_or_default();
        Chunk {
            records: txn.records,
            progress: Progress::Complete {
                gtid: txn.gtid,
                file: self.file.clone(),
                pos,
                ts_ms,
            },
        }
    }

    /// A `ROLLBACK` query: the open transaction's buffered records are dropped.
    /// The position still moves past it (its GTID was consumed).
    pub fn rollback(&mut self, pos: u64, ts_ms: i64) -> Chunk {
        if let Some(txn) = self.open.as_mut() {
            if txn.yielded > txn.skip {
                self.discarded_partial += txn.yielded;
            }
            txn.records.clear();
        }
        self.commit(pos, ts_ms)
    }

    /// The connection dropped: forget the open transaction. Returns how to
    /// resume it (its GTID and the records already yielded), if it was split.
    pub fn abandon(&mut self) -> Option<(String, u64)> {
        let txn = self.open.take()?;
        match txn.gtid {
            Some(g) if txn.yielded > 0 => Some((g, txn.yielded)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u8) -> Record {
        Record {
            topic: "t".into(),
            key: Some(vec![n]),
            value: Some(vec![n]),
        }
    }

    #[test]
    fn a_transaction_yields_one_chunk_at_commit() {
        let mut a = Assembler::new(100);
        a.rotate("bin.000001".into());
        a.begin(Some("0-1-5".into()), false);
        assert_eq!(a.push(vec![rec(1), rec(2)], 10).unwrap(), None);
        assert_eq!(a.push(vec![rec(3)], 20).unwrap(), None);
        let c = a.commit(30, 1000);
        assert_eq!(c.records, vec![rec(1), rec(2), rec(3)]);
        assert_eq!(
            c.progress,
            Progress::Complete {
                gtid: Some("0-1-5".into()),
                file: "bin.000001".into(),
                pos: 30,
                ts_ms: 1000
            }
        );
        assert!(!a.in_transaction());
    }

    #[test]
    fn rollback_publishes_nothing_but_moves_the_position() {
        let mut a = Assembler::new(100);
        a.begin(Some("0-1-6".into()), false);
        a.push(vec![rec(1)], 10).unwrap();
        let c = a.rollback(40, 0);
        assert!(c.records.is_empty());
        assert!(matches!(c.progress, Progress::Complete { pos: 40, .. }));
        assert_eq!(a.discarded_partial(), 0);
    }

    #[test]
    fn rows_outside_a_transaction_are_an_error() {
        let mut a = Assembler::new(10);
        a.rotate("f".into());
        assert_eq!(
            a.push(vec![rec(1)], 7).unwrap_err(),
            TxnError::RowsOutsideTransaction {
                file: "f".into(),
                pos: 7
            }
        );
    }

    #[test]
    fn large_transactions_split_and_resume_without_duplicates() {
        let mut a = Assembler::new(2);
        a.begin(Some("0-1-7".into()), false);
        let c1 = a.push(vec![rec(1), rec(2), rec(3)], 10).unwrap().unwrap();
        assert_eq!(c1.records.len(), 3);
        assert_eq!(
            c1.progress,
            Progress::Partial {
                gtid: "0-1-7".into(),
                records: 3
            }
        );
        // The connection drops mid-transaction.
        let resume = a.abandon().unwrap();
        assert_eq!(resume, ("0-1-7".into(), 3));

        // The reader reconnects and re-reads the same transaction.
        a.resume_skipping(resume.0, resume.1);
        a.begin(Some("0-1-7".into()), false);
        assert_eq!(a.push(vec![rec(1), rec(2)], 10).unwrap(), None);
        let c2 = a.push(vec![rec(3), rec(4), rec(5)], 20).unwrap().unwrap();
        assert_eq!(c2.records, vec![rec(4), rec(5)]);
        assert_eq!(
            c2.progress,
            Progress::Partial {
                gtid: "0-1-7".into(),
                records: 5
            }
        );
        let c3 = a.commit(30, 0);
        assert!(c3.records.is_empty());
        assert!(matches!(c3.progress, Progress::Complete { .. }));
    }

    #[test]
    fn skipping_applies_only_to_the_named_transaction() {
        let mut a = Assembler::new(100);
        a.resume_skipping("0-1-9".into(), 2);
        a.begin(Some("0-1-8".into()), false);
        a.push(vec![rec(1), rec(2)], 1).unwrap();
        assert_eq!(a.commit(2, 0).records.len(), 2);
        a.begin(Some("0-1-9".into()), false);
        a.push(vec![rec(1), rec(2), rec(3)], 3).unwrap();
        assert_eq!(a.commit(4, 0).records, vec![rec(3)]);
    }

    #[test]
    fn standalone_statements_and_begin_queries() {
        let mut a = Assembler::new(10);
        a.begin(Some("0-1-10".into()), true);
        assert!(a.open_is_standalone());
        assert_eq!(a.open_gtid(), Some("0-1-10"));
        let c = a.commit(50, 0);
        assert!(c.records.is_empty());
        // Without GTIDs, BEGIN opens; a second BEGIN inside is ignored.
        a.begin_query();
        a.push(vec![rec(1)], 60).unwrap();
        a.begin_query();
        assert_eq!(a.commit(70, 0).records.len(), 1);
    }
}
