//! The change-event envelope: the one format the producer writes and every
//! consumer of the change topics reads.
//!
//! It follows Debezium's JSON envelope so existing tooling can read it without
//! knowing paystream: a record's key is the row's primary key as a JSON object,
//! and its value holds `before`, `after`, `source`, `op` and `ts_ms`. A delete is
//! followed by a tombstone (same key, null value) so log compaction can drop
//! the key. Row values are JSON objects keyed by column name; DECIMAL travels as
//! a string, temporal values as ISO-8601 UTC strings and JSON columns as JSON.
//! `docs/event-format.md` documents the format with examples.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A row image: column name to JSON value.
pub type Row = Map<String, Value>;

/// What happened to the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    /// A row was inserted.
    #[serde(rename = "c")]
    Create,
    /// A row was updated in place (same primary key).
    #[serde(rename = "u")]
    Update,
    /// A row was deleted.
    #[serde(rename = "d")]
    Delete,
    /// A row was read by a snapshot.
    #[serde(rename = "r")]
    Read,
}

/// Whether an event came from a snapshot, as Debezium spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotMarker {
    /// Read from the binlog.
    False,
    /// Read by a snapshot.
    True,
    /// The last row of a snapshot.
    Last,
}

/// Where in the source an event came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Producer name and version, e.g. `paystream-0.1.0`.
    pub version: String,
    /// The source flavour: `mariadb` or `mysql`.
    pub connector: String,
    /// Logical name of the source (the topic prefix).
    pub name: String,
    /// The `server_id` of the database that wrote the event.
    pub server_id: u32,
    /// GTID of the source transaction (`domain-server-seq` on MariaDB,
    /// `uuid:n` on MySQL); `None` for snapshot reads.
    pub gtid: Option<String>,
    /// Binlog file of the transaction.
    pub file: String,
    /// Binlog position of the row event within `file`.
    pub pos: u64,
    /// Index of the row within its row event.
    pub row: u32,
    /// Commit time of the source transaction, milliseconds since the epoch.
    pub ts_ms: i64,
    /// Whether this is a snapshot read.
    pub snapshot: SnapshotMarker,
    /// Database (schema) name.
    pub db: String,
    /// Table name.
    pub table: String,
}

/// One change to one row: the value of a change-topic record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// Row image before the change; `None` for creates and snapshot reads.
    pub before: Option<Row>,
    /// Row image after the change; `None` for deletes.
    pub after: Option<Row>,
    /// Source coordinates.
    pub source: Source,
    /// What happened.
    pub op: Op,
    /// When the producer built the event, milliseconds since the epoch.
    pub ts_ms: i64,
}

/// An envelope that breaks the rules for its `op`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// `before`/`after` presence does not match the operation.
    #[error("op {op:?} requires before={before_required} after={after_required}")]
    ImageMismatch {
        /// The operation.
        op: Op,
        /// Whether `before` must be present.
        before_required: bool,
        /// Whether `after` must be present.
        after_required: bool,
    },
    /// A required primary-key column is missing from the row image.
    #[error("primary-key column `{0}` is missing from the row image")]
    MissingKeyColumn(String),
}

impl ChangeEvent {
    /// Checks that `before` and `after` are present exactly when `op` says so:
    /// create and read carry only `after`, update carries both, delete only
    /// `before`.
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        let (before_required, after_required) = match self.op {
            Op::Create | Op::Read => (false, true),
            Op::Update => (true, true),
            Op::Delete => (true, false),
        };
        if self.before.is_some() != before_required || self.after.is_some() != after_required {
            return Err(EnvelopeError::ImageMismatch {
                op: self.op,
                before_required,
                after_required,
            });
        }
        Ok(())
    }

    /// The row image that identifies the row: `after`, or `before` for a delete.
    pub fn current_image(&self) -> Option<&Row> {
        self.after.as_ref().or(self.before.as_ref())
    }
}

/// Builds the record key: the primary-key columns of `row`, in key order.
pub fn record_key(row: &Row, key_columns: &[String]) -> Result<Row, EnvelopeError> {
    let mut key = Map::with_capacity(key_columns.len());
    for col in key_columns {
        let value = row
            .get(col)
            .ok_or_else(|| EnvelopeError::MissingKeyColumn(col.clone()))?;
        key.insert(col.clone(), value.clone());
    }
    Ok(key)
}

/// The change topic of a table: `<prefix>.<db>.<table>`.
pub fn change_topic(prefix: &str, db: &str, table: &str) -> String {
    format!("{prefix}.{db}.{table}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn source() -> Source {
        Source {
            version: "paystream-0.1.0".into(),
            connector: "mariadb".into(),
            name: "paystream".into(),
            server_id: 1,
            gtid: Some("0-1-42".into()),
            file: "mariadb-bin.000001".into(),
            pos: 1234,
            row: 0,
            ts_ms: 1_700_000_000_000,
            snapshot: SnapshotMarker::False,
            db: "payments".into(),
            table: "purchases".into(),
        }
    }

    fn row(v: Value) -> Row {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn serialises_in_the_debezium_shape() {
        let ev = ChangeEvent {
            before: None,
            after: Some(row(json!({"id": 7, "amount": "10.50"}))),
            source: source(),
            op: Op::Create,
            ts_ms: 1_700_000_000_123,
        };
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["op"], json!("c"));
        assert_eq!(v["before"], Value::Null);
        assert_eq!(v["after"]["amount"], json!("10.50"));
        assert_eq!(v["source"]["gtid"], json!("0-1-42"));
        assert_eq!(v["source"]["snapshot"], json!("false"));
        assert_eq!(v["source"]["table"], json!("purchases"));
        let back: ChangeEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, ev);
    }

    #[test]
    fn validate_enforces_images_per_op() {
        let mut ev = ChangeEvent {
            before: None,
            after: Some(row(json!({"id": 1}))),
            source: source(),
            op: Op::Create,
            ts_ms: 0,
        };
        assert!(ev.validate().is_ok());
        ev.op = Op::Update;
        assert!(ev.validate().is_err(), "update without before");
        ev.before = Some(row(json!({"id": 1})));
        assert!(ev.validate().is_ok());
        ev.op = Op::Delete;
        assert!(ev.validate().is_err(), "delete with after");
        ev.after = None;
        assert!(ev.validate().is_ok());
        assert_eq!(ev.current_image(), ev.before.as_ref());
    }

    #[test]
    fn record_key_takes_key_columns_in_order() {
        let r = row(json!({"b": 2, "a": 1, "c": 3}));
        let key = record_key(&r, &["c".into(), "a".into()]).unwrap();
        assert_eq!(serde_json::to_string(&key).unwrap(), r#"{"c":3,"a":1}"#);
        assert_eq!(
            record_key(&r, &["zz".into()]),
            Err(EnvelopeError::MissingKeyColumn("zz".into()))
        );
    }

    #[test]
    fn change_topic_joins_prefix_db_and_table() {
        assert_eq!(
            change_topic("ps", "payments", "purchases"),
            "ps.payments.purchases"
        );
    }
}
