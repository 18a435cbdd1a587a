//! Snapshot values to envelope JSON: the same rules as [`crate::decode`], for
//! values read with a `SELECT` (binary protocol) instead of from the binlog.
//!
//! The snapshot connection runs with `time_zone = '+00:00'`, so TIMESTAMP
//! values arrive in UTC like the binlog's. A test reads the same rows both
//! ways and requires identical JSON, so a consumer cannot tell a snapshot
//! read from a streamed insert by its values.

use base64::Engine;
use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::{Column, Value as MyValue};
use paystream_core::envelope::Row;
use serde_json::{Number, Value};

use crate::decode::{format_datetime, format_time};
use crate::schema::TableInfo;

/// The binary character set id: columns in it hold bytes, not text.
const BINARY_CHARSET: u16 = 63;

/// A snapshot value could not be converted.
#[derive(Debug, thiserror::Error)]
#[error("column `{column}` ({column_type:?}): {reason}")]
pub struct SnapshotValueError {
    column: String,
    column_type: ColumnType,
    reason: String,
}

/// Converts one snapshot row; `info` says which columns hold JSON.
pub fn row_to_json(
    columns: &[Column],
    values: Vec<MyValue>,
    info: &TableInfo,
) -> Result<Row, SnapshotValueError> {
    let mut row = Row::with_capacity(columns.len());
    for (col, value) in columns.iter().zip(values) {
        let name = col.name_str().into_owned();
        let is_json = info.column(&name).is_some_and(|c| c.is_json);
        let json = value_to_json(col, value, is_json)?;
        row.insert(name, json);
    }
    Ok(row)
}

fn value_to_json(col: &Column, value: MyValue, is_json: bool) -> Result<Value, SnapshotValueError> {
    let fail = |reason: String| SnapshotValueError {
        column: col.name_str().into_owned(),
        column_type: col.column_type(),
        reason,
    };
    let fsp = col.decimals().min(6);
    Ok(match value {
        MyValue::NULL => Value::Null,
        MyValue::Int(i) => Value::from(i),
        MyValue::UInt(u) => Value::from(u),
        MyValue::Float(f) => {
            // Shortest decimal form of the f32, so 1.1 stays 1.1.
            let shortest: f64 = f
                .to_string()
                .parse()
                .map_err(|_| fail(format!("float {f}")))?;
            Number::from_f64(shortest)
                .map(Value::Number)
                .ok_or_else(|| fail(format!("non-finite float {f}")))?
        }
        MyValue::Double(d) => Number::from_f64(d)
            .map(Value::Number)
            .ok_or_else(|| fail(format!("non-finite double {d}")))?,
        MyValue::Date(y, mo, d, h, mi, s, us) => {
            if mo == 0 || d == 0 {
                Value::Null
            } else if col.column_type() == ColumnType::MYSQL_TYPE_DATE {
                Value::String(format!("{y:04}-{mo:02}-{d:02}"))
            } else {
                Value::String(format_datetime((y, mo, d), (h, mi, s), us, fsp))
            }
        }
        MyValue::Time(neg, days, h, mi, s, us) => {
            let hours = u64::from(days) * 24 + u64::from(h);
            Value::String(format_time(
                neg,
                hours,
                u64::from(mi),
                u64::from(s),
                us,
                fsp,
            ))
        }
        MyValue::Bytes(bytes) => bytes_to_json(col, bytes, is_json).map_err(fail)?,
    })
}

fn bytes_to_json(col: &Column, bytes: Vec<u8>, is_json: bool) -> Result<Value, String> {
    let ty = col.column_type();
    match ty {
        ColumnType::MYSQL_TYPE_BIT => {
            if bytes.len() > 8 {
                return Err(format!("BIT value of {} bytes", bytes.len()));
            }
            Ok(Value::from(
                bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
            ))
        }
        ColumnType::MYSQL_TYPE_DECIMAL | ColumnType::MYSQL_TYPE_NEWDECIMAL => {
            String::from_utf8(bytes)
                .map(Value::String)
                .map_err(|e| format!("decimal is not ASCII: {e}"))
        }
        ColumnType::MYSQL_TYPE_YEAR => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map(Value::from)
            .ok_or_else(|| "bad YEAR".to_string()),
        ColumnType::MYSQL_TYPE_JSON => {
            serde_json::from_slice(&bytes).map_err(|e| format!("invalid JSON: {e}"))
        }
        _ if is_json => serde_json::from_slice(&bytes).map_err(|e| format!("invalid JSON: {e}")),
        _ => {
            let binary = col.character_set() == BINARY_CHARSET
                && !col
                    .flags()
                    .intersects(ColumnFlags::ENUM_FLAG | ColumnFlags::SET_FLAG);
            if binary || ty == ColumnType::MYSQL_TYPE_GEOMETRY {
                Ok(Value::String(
                    base64::engine::general_purpose::STANDARD.encode(bytes),
                ))
            } else {
                String::from_utf8(bytes)
                    .map(Value::String)
                    .map_err(|e| format!("text is not UTF-8: {e}"))
            }
        }
    }
}
