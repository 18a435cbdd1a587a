//! Builds Kafka records from decoded row changes: the pure step between a
//! decoded binlog row and the bytes the publisher sends.
//!
//! One row change becomes one record in the table's change topic, keyed by the
//! primary key as JSON. A delete is followed by a tombstone (same key, null
//! value) unless tombstones are turned off. An update that changes the primary
//! key becomes a delete of the old key (plus its tombstone) and a create of the
//! new one, so a compacted topic never keeps a row under a key it no longer
//! has. Tables without a primary key get a null key, as in Debezium.

use paystream_core::envelope::{
    ChangeEvent, EnvelopeError, Op, Row, SnapshotMarker, Source, change_topic, record_key,
};

/// One record for the publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Destination topic.
    pub topic: String,
    /// Key bytes (JSON), or `None` for a table without a primary key.
    pub key: Option<Vec<u8>>,
    /// Value bytes (JSON envelope), or `None` for a tombstone.
    pub value: Option<Vec<u8>>,
}

/// Fixed settings of the record builder.
#[derive(Debug, Clone)]
pub struct RecordSettings {
    /// Topic prefix and logical source name.
    pub prefix: String,
    /// `mariadb` or `mysql`.
    pub connector: String,
    /// Whether a tombstone follows each delete.
    pub tombstones: bool,
}

/// Where one row change came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinates {
    /// Server id of the writer.
    pub server_id: u32,
    /// GTID of the source transaction, if any.
    pub gtid: Option<String>,
    /// Binlog file.
    pub file: String,
    /// Binlog position of the row event.
    pub pos: u64,
    /// Row index within the row event.
    pub row: u32,
    /// Commit time, ms since the epoch.
    pub ts_ms: i64,
    /// Snapshot marker.
    pub snapshot: SnapshotMarker,
}

/// The kind of row event a change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// WRITE_ROWS.
    Insert,
    /// UPDATE_ROWS.
    Update,
    /// DELETE_ROWS.
    Delete,
    /// A snapshot read.
    SnapshotRead,
}

/// A decoded row change of one table.
#[derive(Debug, Clone)]
pub struct RowChange<'a> {
    /// Database name.
    pub db: &'a str,
    /// Table name.
    pub table: &'a str,
    /// Primary-key columns in key order; empty when the table has none.
    pub key_columns: &'a [String],
    /// What happened.
    pub kind: ChangeKind,
    /// Row image before the change.
    pub before: Option<Row>,
    /// Row image after the change.
    pub after: Option<Row>,
    /// Source coordinates.
    pub coords: Coordinates,
}

/// The change does not fit its kind, or a key column is missing.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A row image required by the change kind is absent.
    #[error("{kind:?} row change on {db}.{table} lacks its {image} image")]
    MissingImage {
        /// Change kind.
        kind: ChangeKind,
        /// Database.
        db: String,
        /// Table.
        table: String,
        /// `before` or `after`.
        image: &'static str,
    },
    /// The envelope rules were broken.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// JSON serialisation failed (cannot happen for maps of JSON values).
    #[error("cannot serialise event: {0}")]
    Json(#[from] serde_json::Error),
}

impl RecordSettings {
    /// Appends the records of `change` to `out`; `now_ms` stamps the envelope.
    pub fn build(
        &self,
        change: RowChange<'_>,
        now_ms: i64,
        out: &mut Vec<Record>,
    ) -> Result<(), RecordError> {
        let missing = |image| RecordError::MissingImage {
            kind: change.kind,
            db: change.db.to_string(),
            table: change.table.to_string(),
            image,
        };
        let topic = change_topic(&self.prefix, change.db, change.table);
        let source = Source {
            version: concat!("paystream-", env!("CARGO_PKG_VERSION")).to_string(),
            connector: self.connector.clone(),
            name: self.prefix.clone(),
            server_id: change.coords.server_id,
            gtid: change.coords.gtid.clone(),
            file: change.coords.file.clone(),
            pos: change.coords.pos,
            row: change.coords.row,
            ts_ms: change.coords.ts_ms,
            snapshot: change.coords.snapshot,
            db: change.db.to_string(),
            table: change.table.to_string(),
        };
        let key_of = |row: &Row| -> Result<Option<Vec<u8>>, RecordError> {
            if change.key_columns.is_empty() {
                return Ok(None);
            }
            Ok(Some(serde_json::to_vec(&record_key(
                row,
                change.key_columns,
            )?)?))
        };
        let mut emit = |op: Op, before: Option<Row>, after: Option<Row>, key: Option<Vec<u8>>| {
            let event = ChangeEvent {
                before,
                after,
                source: source.clone(),
                op,
                ts_ms: now_ms,
            };
            event.validate()?;
            let value = serde_json::to_vec(&event)?;
            out.push(Record {
                topic: topic.clone(),
                key: key.clone(),
                value: Some(value),
            });
            if op == Op::Delete && self.tombstones && key.is_some() {
                out.push(Record {
                    topic: topic.clone(),
                    key,
                    value: None,
                });
            }
            Ok::<(), RecordError>(())
        };
        match change.kind {
            ChangeKind::Insert | ChangeKind::SnapshotRead => {
                let after = change.after.ok_or_else(|| missing("after"))?;
                let key = key_of(&after)?;
                let op = if change.kind == ChangeKind::Insert {
                    Op::Create
                } else {
                    Op::Read
                };
                emit(op, None, Some(after), key)
            }
            ChangeKind::Delete => {
                let before = change.before.ok_or_else(|| missing("before"))?;
                let key = key_of(&before)?;
                emit(Op::Delete, Some(before), None, key)
            }
            ChangeKind::Update => {
                let before = change.before.ok_or_else(|| missing("before"))?;
                let after = change.after.ok_or_else(|| missing("after"))?;
                let old_key = key_of(&before)?;
                let new_key = key_of(&after)?;
                if old_key == new_key {
                    emit(Op::Update, Some(before), Some(after), new_key)
                } else {
                    emit(Op::Delete, Some(before), None, old_key)?;
                    emit(Op::Create, None, Some(after), new_key)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn settings(tombstones: bool) -> RecordSettings {
        RecordSettings {
            prefix: "ps".into(),
            connector: "mariadb".into(),
            tombstones,
        }
    }

    fn coords() -> Coordinates {
        Coordinates {
            server_id: 1,
            gtid: Some("0-1-9".into()),
            file: "mariadb-bin.000001".into(),
            pos: 400,
            row: 2,
            ts_ms: 1_000,
            snapshot: SnapshotMarker::False,
        }
    }

    fn row(v: Value) -> Option<Row> {
        v.as_object().cloned()
    }

    fn change<'a>(
        kind: ChangeKind,
        before: Value,
        after: Value,
        key: &'a [String],
    ) -> RowChange<'a> {
        RowChange {
            db: "payments",
            table: "purchases",
            key_columns: key,
            kind,
            before: row(before),
            after: row(after),
            coords: coords(),
        }
    }

    fn value(r: &Record) -> Value {
        serde_json::from_slice(r.value.as_ref().unwrap()).unwrap()
    }

    #[test]
    fn insert_is_a_create_keyed_by_primary_key() {
        let key = vec!["id".to_string()];
        let mut out = vec![];
        settings(true)
            .build(
                change(
                    ChangeKind::Insert,
                    Value::Null,
                    json!({"id": 5, "amount": "1.00"}),
                    &key,
                ),
                77,
                &mut out,
            )
            .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].topic, "ps.payments.purchases");
        assert_eq!(out[0].key.as_deref(), Some(br#"{"id":5}"#.as_slice()));
        let v = value(&out[0]);
        assert_eq!(v["op"], "c");
        assert_eq!(v["ts_ms"], 77);
        assert_eq!(v["before"], Value::Null);
        assert_eq!(v["after"]["amount"], "1.00");
        assert_eq!(v["source"]["gtid"], "0-1-9");
        assert_eq!(v["source"]["row"], 2);
        assert_eq!(v["source"]["snapshot"], "false");
    }

    #[test]
    fn delete_is_followed_by_a_tombstone_unless_disabled() {
        let key = vec!["id".to_string()];
        let mut out = vec![];
        settings(true)
            .build(
                change(ChangeKind::Delete, json!({"id": 5}), Value::Null, &key),
                0,
                &mut out,
            )
            .unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(value(&out[0])["op"], "d");
        assert_eq!(out[1].key, out[0].key);
        assert_eq!(out[1].value, None);

        let mut out = vec![];
        settings(false)
            .build(
                change(ChangeKind::Delete, json!({"id": 5}), Value::Null, &key),
                0,
                &mut out,
            )
            .unwrap();
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn key_change_becomes_delete_tombstone_and_create() {
        let key = vec!["id".to_string()];
        let mut out = vec![];
        settings(true)
            .build(
                change(
                    ChangeKind::Update,
                    json!({"id": 5, "x": 1}),
                    json!({"id": 6, "x": 1}),
                    &key,
                ),
                0,
                &mut out,
            )
            .unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(value(&out[0])["op"], "d");
        assert_eq!(out[0].key.as_deref(), Some(br#"{"id":5}"#.as_slice()));
        assert_eq!(out[1].value, None);
        assert_eq!(value(&out[2])["op"], "c");
        assert_eq!(out[2].key.as_deref(), Some(br#"{"id":6}"#.as_slice()));
    }

    #[test]
    fn plain_update_carries_both_images() {
        let key = vec!["id".to_string()];
        let mut out = vec![];
        settings(true)
            .build(
                change(
                    ChangeKind::Update,
                    json!({"id": 5, "x": 1}),
                    json!({"id": 5, "x": 2}),
                    &key,
                ),
                0,
                &mut out,
            )
            .unwrap();
        assert_eq!(out.len(), 1);
        let v = value(&out[0]);
        assert_eq!(v["op"], "u");
        assert_eq!(v["before"]["x"], 1);
        assert_eq!(v["after"]["x"], 2);
    }

    #[test]
    fn snapshot_read_and_keyless_tables() {
        let mut out = vec![];
        let mut c = change(ChangeKind::SnapshotRead, Value::Null, json!({"a": 1}), &[]);
        c.coords.snapshot = SnapshotMarker::True;
        settings(true).build(c, 0, &mut out).unwrap();
        assert_eq!(out[0].key, None);
        let v = value(&out[0]);
        assert_eq!(v["op"], "r");
        assert_eq!(v["source"]["snapshot"], "true");
        // A keyless delete gets no tombstone: there is no key to compact.
        let mut out = vec![];
        settings(true)
            .build(
                change(ChangeKind::Delete, json!({"a": 1}), Value::Null, &[]),
                0,
                &mut out,
            )
            .unwrap();
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn missing_images_and_key_columns_are_errors() {
        let key = vec!["id".to_string()];
        let mut out = vec![];
        let err = settings(true)
            .build(
                change(ChangeKind::Update, Value::Null, json!({"id": 1}), &key),
                0,
                &mut out,
            )
            .unwrap_err();
        assert!(err.to_string().contains("before"), "{err}");
        let err = settings(true)
            .build(
                change(ChangeKind::Insert, Value::Null, json!({"x": 1}), &key),
                0,
                &mut out,
            )
            .unwrap_err();
        assert!(err.to_string().contains("`id`"), "{err}");
        assert!(out.is_empty());
    }
}
