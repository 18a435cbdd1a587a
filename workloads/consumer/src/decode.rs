//! Turns one change-topic record into the change it makes to the read model,
//! or into the reason it cannot be applied.
//!
//! The record must be a well-formed envelope (`paystream_core::envelope`) for
//! the table its topic names, keyed by `{"id": n}`, whose row image carries
//! every column the read model shows in the types the producer writes them
//! (DECIMAL as a string, DATETIME as ISO-8601 UTC, BOOLEAN as 0/1). Anything
//! else is rejected with a reason that goes to the dead-letter topic. A null
//! value is the tombstone that follows a delete: it changes nothing. Pure.

use chrono::{DateTime, Utc};
use paystream_core::envelope::{ChangeEvent, Op, Row};
use paystream_core::model::PurchaseStatus;
use paystream_core::readmodel::{PackageView, PurchaseView};
use rust_decimal::Decimal;
use serde_json::Value;

/// The tables the read model is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// `purchases`: documents and users' lists.
    Purchases,
    /// `packages`: the catalogue shown with each purchase.
    Packages,
}

impl Table {
    /// The table name in the source database.
    pub fn name(self) -> &'static str {
        match self {
            Self::Purchases => "purchases",
            Self::Packages => "packages",
        }
    }
}

/// One change to the read model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A purchase was created, updated or read by a snapshot.
    PurchaseUpsert {
        /// The new image.
        view: PurchaseView,
        /// The owner before the change, when an update moved it to another user.
        moved_from: Option<u64>,
    },
    /// A purchase was deleted.
    PurchaseDelete {
        /// Purchase id.
        id: u64,
        /// Its owner.
        user_id: u64,
        /// Its last version.
        version: u64,
    },
    /// A package was created, updated or read by a snapshot.
    PackageUpsert {
        /// The new image.
        view: PackageView,
    },
    /// A package was deleted.
    PackageDelete {
        /// Package id.
        id: u64,
        /// Its last version.
        version: u64,
    },
}

/// What a record means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A change to apply.
    Change(Change),
    /// The tombstone after a delete: nothing to do.
    Tombstone,
}

/// Why a record cannot be applied; the text goes to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// The key is missing or not `{"id": <unsigned integer>}`.
    #[error("bad key: {0}")]
    Key(String),
    /// The value is not a change-event envelope.
    #[error("value is not a change event: {0}")]
    Envelope(String),
    /// The envelope breaks its own rules.
    #[error("invalid change event: {0}")]
    Invalid(String),
    /// A column the read model needs is missing or has the wrong type.
    #[error("column `{column}`: {problem}")]
    Column {
        /// The column.
        column: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// Decodes one record of `table`'s change topic.
pub fn decode(table: Table, key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Decoded, Reject> {
    let id = key_id(key)?;
    let Some(value) = value else {
        return Ok(Decoded::Tombstone);
    };
    let event: ChangeEvent =
        serde_json::from_slice(value).map_err(|e| Reject::Envelope(e.to_string()))?;
    event
        .validate()
        .map_err(|e| Reject::Invalid(e.to_string()))?;
    if event.source.table != table.name() {
        return Err(Reject::Invalid(format!(
            "event of table `{}` on the `{}` topic",
            event.source.table,
            table.name()
        )));
    }
    let image = event
        .current_image()
        .ok_or_else(|| Reject::Invalid("no row image".into()))?;
    let image_id = u64_col(image, "id")?;
    if image_id != id {
        return Err(Reject::Invalid(format!(
            "key id {id} differs from row id {image_id}"
        )));
    }
    let change = match (table, event.op) {
        (Table::Purchases, Op::Delete) => Change::PurchaseDelete {
            id,
            user_id: u64_col(image, "user_id")?,
            version: version_col(image)?,
        },
        (Table::Purchases, _) => {
            let view = purchase_view(image)?;
            let moved_from = match &event.before {
                Some(before) if event.op == Op::Update => {
                    let old = u64_col(before, "user_id")?;
                    (old != view.user_id).then_some(old)
                }
                _ => None,
            };
            Change::PurchaseUpsert { view, moved_from }
        }
        (Table::Packages, Op::Delete) => Change::PackageDelete {
            id,
            version: version_col(image)?,
        },
        (Table::Packages, _) => Change::PackageUpsert {
            view: package_view(image)?,
        },
    };
    Ok(Decoded::Change(change))
}

fn key_id(key: Option<&[u8]>) -> Result<u64, Reject> {
    let key = key.ok_or_else(|| Reject::Key("missing".into()))?;
    let v: Value = serde_json::from_slice(key).map_err(|e| Reject::Key(e.to_string()))?;
    match v.as_object() {
        Some(map) if map.len() == 1 => map
            .get("id")
            .and_then(Value::as_u64)
            .ok_or_else(|| Reject::Key(format!("expected {{\"id\": n}}, got {v}"))),
        _ => Err(Reject::Key(format!("expected {{\"id\": n}}, got {v}"))),
    }
}

fn column<'a>(row: &'a Row, name: &str) -> Result<&'a Value, Reject> {
    row.get(name).ok_or_else(|| Reject::Column {
        column: name.into(),
        problem: "missing".into(),
    })
}

fn bad(name: &str, problem: impl Into<String>) -> Reject {
    Reject::Column {
        column: name.into(),
        problem: problem.into(),
    }
}

fn u64_col(row: &Row, name: &str) -> Result<u64, Reject> {
    column(row, name)?
        .as_u64()
        .ok_or_else(|| bad(name, "expected an unsigned integer"))
}

fn version_col(row: &Row) -> Result<u64, Reject> {
    let v = u64_col(row, "version")?;
    // The script compares 2 * version + 1 as a Lua double.
    if v == 0 || v >= 1 << 52 {
        return Err(bad("version", format!("{v} is out of range")));
    }
    Ok(v)
}

fn str_col<'a>(row: &'a Row, name: &str) -> Result<&'a str, Reject> {
    column(row, name)?
        .as_str()
        .ok_or_else(|| bad(name, "expected a string"))
}

fn decimal_col(row: &Row, name: &str) -> Result<Decimal, Reject> {
    str_col(row, name)?
        .parse()
        .map_err(|e| bad(name, format!("not a decimal: {e}")))
}

fn time_col(row: &Row, name: &str) -> Result<DateTime<Utc>, Reject> {
    DateTime::parse_from_rfc3339(str_col(row, name)?)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| bad(name, format!("not an ISO-8601 timestamp: {e}")))
}

fn bool_col(row: &Row, name: &str) -> Result<bool, Reject> {
    match column(row, name)? {
        Value::Bool(b) => Ok(*b),
        Value::Number(n) => match n.as_u64() {
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            _ => Err(bad(name, format!("expected 0 or 1, got {n}"))),
        },
        other => Err(bad(name, format!("expected a boolean, got {other}"))),
    }
}

fn purchase_view(row: &Row) -> Result<PurchaseView, Reject> {
    let status = str_col(row, "status")?;
    let quantity = u64_col(row, "quantity")?;
    Ok(PurchaseView {
        id: u64_col(row, "id")?,
        user_id: u64_col(row, "user_id")?,
        package_id: u64_col(row, "package_id")?,
        quantity: u32::try_from(quantity).map_err(|_| bad("quantity", "out of range"))?,
        amount: decimal_col(row, "amount")?,
        currency: str_col(row, "currency")?.to_string(),
        status: PurchaseStatus::parse(status)
            .ok_or_else(|| bad("status", format!("unknown status {status:?}")))?,
        created_at: time_col(row, "created_at")?,
        updated_at: time_col(row, "updated_at")?,
        version: version_col(row)?,
    })
}

fn package_view(row: &Row) -> Result<PackageView, Reject> {
    Ok(PackageView {
        id: u64_col(row, "id")?,
        code: str_col(row, "code")?.to_string(),
        name: str_col(row, "name")?.to_string(),
        price: decimal_col(row, "price")?,
        currency: str_col(row, "currency")?.to_string(),
        active: bool_col(row, "active")?,
        version: version_col(row)?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A purchase row image as the producer writes it.
    pub fn purchase_row(id: u64, user: u64, version: u64) -> Value {
        json!({
            "id": id, "user_id": user, "package_id": 3, "quantity": 2,
            "amount": "39.98", "currency": "EUR", "status": "pending",
            "idempotency_key": format!("k{id}"),
            "created_at": "2024-05-01T12:34:56.123456Z",
            "updated_at": "2024-05-01T12:34:56.123456Z",
            "version": version
        })
    }

    /// A full envelope.
    pub fn envelope(table: &str, op: &str, before: Value, after: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "before": before, "after": after, "op": op, "ts_ms": 1,
            "source": {
                "version": "paystream-0.1.0", "connector": "mariadb", "name": "ps",
                "server_id": 1, "gtid": "0-1-1", "file": "f", "pos": 4, "row": 0,
                "ts_ms": 1, "snapshot": "false", "db": "payments", "table": table
            }
        }))
        .unwrap()
    }

    fn key(id: u64) -> Vec<u8> {
        format!("{{\"id\":{id}}}").into_bytes()
    }

    #[test]
    fn decodes_purchase_creates_updates_and_deletes() {
        let v = envelope("purchases", "c", Value::Null, purchase_row(7, 1, 1));
        let Decoded::Change(Change::PurchaseUpsert { view, moved_from }) =
            decode(Table::Purchases, Some(&key(7)), Some(&v)).unwrap()
        else {
            panic!()
        };
        assert_eq!(view.amount.to_string(), "39.98");
        assert_eq!(view.quantity, 2);
        assert_eq!(view.status, PurchaseStatus::Pending);
        assert_eq!(view.created_at.timestamp_subsec_micros(), 123_456);
        assert_eq!(moved_from, None);

        let v = envelope(
            "purchases",
            "u",
            purchase_row(7, 1, 1),
            purchase_row(7, 2, 2),
        );
        let Decoded::Change(Change::PurchaseUpsert { view, moved_from }) =
            decode(Table::Purchases, Some(&key(7)), Some(&v)).unwrap()
        else {
            panic!()
        };
        assert_eq!((view.user_id, view.version, moved_from), (2, 2, Some(1)));

        let v = envelope("purchases", "d", purchase_row(7, 2, 2), Value::Null);
        assert_eq!(
            decode(Table::Purchases, Some(&key(7)), Some(&v)).unwrap(),
            Decoded::Change(Change::PurchaseDelete {
                id: 7,
                user_id: 2,
                version: 2
            })
        );
        assert_eq!(
            decode(Table::Purchases, Some(&key(7)), None).unwrap(),
            Decoded::Tombstone
        );
    }

    #[test]
    fn decodes_packages_with_integer_booleans() {
        let row = json!({"id": 1, "code": "gold", "name": "Gold ✨", "description": null,
            "price": "19.99", "currency": "EUR", "active": 1, "attributes": {"a": 1},
            "version": 4, "created_at": "2024-01-01T00:00:00.000000Z",
            "updated_at": "2024-01-01T00:00:00.000000Z"});
        let v = envelope("packages", "r", Value::Null, row);
        let Decoded::Change(Change::PackageUpsert { view }) =
            decode(Table::Packages, Some(&key(1)), Some(&v)).unwrap()
        else {
            panic!()
        };
        assert!(view.active);
        assert_eq!(view.name, "Gold ✨");
        assert_eq!(view.version, 4);
    }

    #[test]
    fn rejects_what_cannot_be_applied() {
        let good = envelope("purchases", "c", Value::Null, purchase_row(7, 1, 1));
        type Case = (Option<Vec<u8>>, Option<Vec<u8>>, &'static str);
        let cases: Vec<Case> = vec![
            (None, Some(good.clone()), "bad key"),
            (Some(b"7".to_vec()), Some(good.clone()), "bad key"),
            (Some(key(8)), Some(good.clone()), "differs"),
            (
                Some(key(7)),
                Some(b"not json".to_vec()),
                "not a change event",
            ),
            (
                Some(key(7)),
                Some(envelope("users", "c", Value::Null, purchase_row(7, 1, 1))),
                "table `users`",
            ),
            (
                Some(key(7)),
                Some(envelope(
                    "purchases",
                    "u",
                    Value::Null,
                    purchase_row(7, 1, 1),
                )),
                "invalid change event",
            ),
        ];
        for (k, v, want) in cases {
            let err = decode(Table::Purchases, k.as_deref(), v.as_deref()).unwrap_err();
            assert!(err.to_string().contains(want), "{err} !~ {want}");
        }
        let mut row = purchase_row(7, 1, 1);
        row["amount"] = json!(39.98);
        let v = envelope("purchases", "c", Value::Null, row);
        let err = decode(Table::Purchases, Some(&key(7)), Some(&v)).unwrap_err();
        assert_eq!(err.to_string(), "column `amount`: expected a string");
        let mut row = purchase_row(7, 1, 1);
        row["status"] = json!("lost");
        let v = envelope("purchases", "c", Value::Null, row);
        assert!(
            decode(Table::Purchases, Some(&key(7)), Some(&v))
                .unwrap_err()
                .to_string()
                .contains("unknown status")
        );
        let mut row = purchase_row(7, 1, 1);
        row["version"] = json!(0);
        let v = envelope("purchases", "c", Value::Null, row);
        assert!(decode(Table::Purchases, Some(&key(7)), Some(&v)).is_err());
    }
}
