//! Binlog row values to the JSON of the change-event envelope.
//!
//! `mysql_common` parses a row event into `BinlogValue`s whose shape depends
//! on the binlog type (integers, `Bytes` for strings and decimals, packed
//! dates, JSONB); [`decode_row`] turns them into a [`Row`] keyed by column
//! name, driven by the [`TableSchema`] built from the TABLE_MAP. The rules
//! (all deliberate, all tested):
//!
//! * Integers are JSON numbers; the schema's UNSIGNED flag wins, so a
//!   BIGINT UNSIGNED above `i64::MAX` comes out exact even if the binlog
//!   lacked signedness metadata. BOOLEAN is TINYINT(1) in the binlog and
//!   stays a number (0/1, or whatever else was stored), as Debezium does
//!   without its tinyint-to-boolean converter: the binlog cannot tell
//!   BOOLEAN from TINYINT(1), and a number is lossless.
//! * FLOAT/DOUBLE are JSON numbers (FLOAT through its shortest decimal
//!   form, so 1.1 stays 1.1). DECIMAL is an exact string keeping its scale
//!   (`"12.30"`).
//! * Text is decoded with the column charset (UTF-8, latin1 as cp1252,
//!   ASCII); binary strings, BLOBs and GEOMETRY are standard base64.
//!   BINARY(n) gets back the trailing 0x00 padding the binlog drops, so it
//!   matches what `SELECT` (and a snapshot) returns. CHAR's trailing spaces
//!   are not restored: `SELECT` strips them too.
//! * ENUM is its string (index 0, MySQL's "invalid value", is `""`); values
//!   come from the TABLE_MAP or `information_schema`. Without either the
//!   value is an error, never a bare index: a number where consumers expect
//!   the label would be silently wrong. SET is its members joined by `,`.
//! * DATE is `YYYY-MM-DD`; DATETIME and TIMESTAMP are ISO-8601 UTC with as
//!   many fractional digits as the column's precision
//!   (`2024-05-01T12:34:56.123456Z`). TIMESTAMP is stored in UTC; DATETIME
//!   has no zone and is labelled UTC as written (the application must store
//!   UTC, as paystream's does). TIME is `[-]HH:MM:SS[.fff]` (hours may
//!   exceed 24). Zero dates (`0000-00-00`, a zero month or day, TIMESTAMP 0)
//!   are `null`: they are not dates, and Debezium does the same.
//! * YEAR is a number; YEAR `0000` is 0. BIT(n) is a number (n <= 64 always
//!   fits a u64).
//! * JSON is a JSON value: MariaDB's text is parsed (the column is CHECKed
//!   valid, so unparsable text is an error, not a string), MySQL's binary
//!   JSONB is converted (its DECIMAL and temporal scalars become strings).
//!   MySQL partial JSON updates are refused with [`DecodeError::Unsupported`].
//! * NULL is `null`. An unknown binlog type is an error naming the column.
//!
//! Two `mysql_common` 0.37 bugs are worked around here. A signed MEDIUMINT
//! is not sign-extended (-1 arrives as 16777215): integers are always
//! reinterpreted at the column's width. A negative TIME(1) or TIME(2) with a
//! fraction panics in debug builds (u32 underflow in
//! `my_time_packed_from_binary`) and decodes garbage in release builds:
//! [`decode_rows_event`] has such columns parsed as raw bytes and decodes
//! them here instead.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use mysql_async::Value as MyValue;
use mysql_async::binlog::events::{Event, FormatDescriptionEvent, RowsEventData, TableMapEvent};
use mysql_async::binlog::row::BinlogRow;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::binlog::{BinlogVersion, EventType};
use mysql_async::consts::ColumnType;
use paystream_core::envelope::Row;
use serde_json::{Number, Value};

use crate::schema::{ColumnKind, ColumnSchema, TableSchema, TextEncoding};

/// A row could not be decoded. The producer stops the stream on these;
/// every variant names the column (or table) at fault.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The column's binlog type is not handled.
    #[error("column {column}: unsupported column type {type_name}")]
    UnsupportedType {
        /// Column name.
        column: String,
        /// Binlog type.
        type_name: String,
    },
    /// The value uses a feature this decoder refuses (e.g. partial JSON).
    #[error("column {column}: unsupported {what}")]
    Unsupported {
        /// Column name.
        column: String,
        /// What is not supported.
        what: &'static str,
    },
    /// A JSON column holds text that is not JSON.
    #[error("column {column}: invalid JSON: {message}")]
    InvalidJson {
        /// Column name.
        column: String,
        /// Parser message.
        message: String,
    },
    /// Text bytes are not valid in the column's charset.
    #[error("column {column}: bytes are not valid {encoding}")]
    InvalidText {
        /// Column name.
        column: String,
        /// Charset expected.
        encoding: &'static str,
    },
    /// The column's charset is not one this decoder converts.
    #[error("column {column}: unsupported charset {charset}")]
    UnsupportedCharset {
        /// Column name.
        column: String,
        /// Charset name or collation id.
        charset: String,
    },
    /// An ENUM index has no value: unknown values, or an index past them.
    #[error(
        "column {column}: ENUM index {index} but {known} values are known \
         (binlog_row_metadata=FULL or an information_schema layout supplies them)"
    )]
    EnumIndex {
        /// Column name.
        column: String,
        /// The index in the binlog.
        index: i64,
        /// Number of values known.
        known: usize,
    },
    /// A SET bitmap has a bit with no value.
    #[error("column {column}: SET bit {bit} but {known} values are known")]
    SetBit {
        /// Column name.
        column: String,
        /// The first bit without a value.
        bit: usize,
        /// Number of values known.
        known: usize,
    },
    /// The binlog value does not have the shape the column type implies.
    #[error("column {column}: unexpected binlog value {value} for {kind}")]
    UnexpectedValue {
        /// Column name.
        column: String,
        /// What the schema expects.
        kind: String,
        /// What arrived (debug form, truncated).
        value: String,
    },
    /// A row column could not be matched to the schema.
    #[error("{table}: row column {column} is not in the table layout")]
    UnknownColumn {
        /// `db.table`.
        table: String,
        /// Row column name.
        column: String,
    },
    /// The row event, TABLE_MAP and schema are not about the same table.
    #[error("{table}: {message}")]
    TableMismatch {
        /// `db.table` of the schema.
        table: String,
        /// What disagrees.
        message: String,
    },
    /// `mysql_common` could not parse the row event.
    #[error("{table}: cannot parse rows: {source}")]
    Rows {
        /// `db.table`.
        table: String,
        /// The parse error.
        source: std::io::Error,
    },
}

fn unexpected(column: &ColumnSchema, value: &impl std::fmt::Debug) -> DecodeError {
    let mut value = format!("{value:?}");
    if value.len() > 80 {
        let mut cut = 80;
        while !value.is_char_boundary(cut) {
            cut -= 1;
        }
        value.truncate(cut);
        value.push('…');
    }
    DecodeError::UnexpectedValue {
        column: column.name.clone(),
        kind: format!("{:?}", column.kind),
        value,
    }
}

/// Decodes one row image into a JSON object keyed by column name, in table
/// column order.
///
/// With `binlog_row_image=FULL` (paystream's setting) every column is
/// present. A partial image (MINIMAL/NOBLOB) holds only some columns; they
/// are matched by name and the absent ones are left out of the object, not
/// set to `null`.
pub fn decode_row(schema: &TableSchema, row: &BinlogRow) -> Result<Row, DecodeError> {
    let table = || format!("{}.{}", schema.db, schema.table);
    let row_columns = row.columns_ref();
    let mut indexes = Vec::with_capacity(row.len());
    for (j, column) in row_columns.iter().enumerate() {
        let name = column.name_str();
        let index = if row.len() == schema.columns.len()
            && (name.starts_with('@') || schema.columns.get(j).is_some_and(|c| c.name == name))
        {
            Some(j)
        } else {
            schema
                .columns
                .iter()
                .position(|c| c.name == name)
                .or_else(|| name.strip_prefix('@').and_then(|n| n.parse().ok()))
                .filter(|&i| i < schema.columns.len())
        };
        indexes.push(index.ok_or_else(|| DecodeError::UnknownColumn {
            table: table(),
            column: name.into_owned(),
        })?);
    }
    let mut order: Vec<(usize, usize)> = indexes
        .into_iter()
        .enumerate()
        .map(|(j, i)| (i, j))
        .collect();
    order.sort_unstable();
    let mut out = Row::new();
    for (index, j) in order {
        let column = &schema.columns[index];
        let value = match row.as_ref(j) {
            Some(value) => decode_value(column, value)?,
            None => Value::Null,
        };
        out.insert(column.name.clone(), value);
    }
    Ok(out)
}

/// The `(before, after)` images of one row of a row event.
pub type RowImages = (Option<Row>, Option<Row>);

/// Decodes every row of a row event: `(before, after)` per row, `before`
/// for updates and deletes, `after` for inserts and updates.
///
/// `tme` is the TABLE_MAP the event refers to (`BinlogStream::get_tme`) and
/// `schema` the layout built from it. Use this rather than calling
/// `RowsEventData::rows` directly: it also avoids the `mysql_common` TIME(1)
/// and TIME(2) panic (see the module docs).
pub fn decode_rows_event(
    schema: &TableSchema,
    rows: &RowsEventData<'_>,
    tme: &TableMapEvent<'_>,
) -> Result<Vec<RowImages>, DecodeError> {
    let table = || format!("{}.{}", schema.db, schema.table);
    let mismatch = |message: String| DecodeError::TableMismatch {
        table: table(),
        message,
    };
    if rows.table_id() != tme.table_id() {
        return Err(mismatch(format!(
            "row event is for table id {}, TABLE_MAP is for {}",
            rows.table_id(),
            tme.table_id()
        )));
    }
    if tme.database_name() != schema.db.as_str() || tme.table_name() != schema.table.as_str() {
        return Err(mismatch(format!(
            "TABLE_MAP is for {}.{}",
            tme.database_name(),
            tme.table_name()
        )));
    }
    if usize::try_from(tme.columns_count()).ok() != Some(schema.columns.len()) {
        return Err(mismatch(format!(
            "TABLE_MAP has {} columns, the layout {}",
            tme.columns_count(),
            schema.columns.len()
        )));
    }
    // mysql_common cannot parse rows of unknown types either, and would say
    // so without naming the column.
    if let Some(err) = schema.columns.iter().find_map(|c| match &c.kind {
        ColumnKind::Unsupported { type_name } => Some(DecodeError::UnsupportedType {
            column: c.name.clone(),
            type_name: type_name.clone(),
        }),
        _ => None,
    }) {
        return Err(err);
    }
    let patched = table_map_for_rows(tme)?;
    let tme = patched.as_ref().unwrap_or(tme);
    let mut out = Vec::new();
    for row in rows.rows(tme) {
        let (before, after) = row.map_err(|source| DecodeError::Rows {
            table: table(),
            source,
        })?;
        let before = before.map(|r| decode_row(schema, &r)).transpose()?;
        let after = after.map(|r| decode_row(schema, &r)).transpose()?;
        out.push((before, after));
    }
    Ok(out)
}

/// Offset just past a length-encoded integer, and its value.
fn lenenc(buf: &[u8], at: usize) -> Option<(u64, usize)> {
    let first = *buf.get(at)?;
    let width = match first {
        0..=0xfa => return Some((u64::from(first), at + 1)),
        0xfc => 2,
        0xfd => 3,
        0xfe => 8,
        _ => return None,
    };
    let bytes = buf.get(at + 1..at + 1 + width)?;
    let mut value = [0u8; 8];
    value[..width].copy_from_slice(bytes);
    Some((u64::from_le_bytes(value), at + 1 + width))
}

/// The TABLE_MAP to parse `tme`'s row events with, when it is not `tme`
/// itself: call `RowsEventData::rows` with the returned event if `Some`.
///
/// `mysql_common` 0.37 panics (debug) or decodes garbage (release) on a
/// negative TIME(1)/TIME(2) with a fraction. The returned copy declares
/// those columns TIMESTAMP(0), which has the same 4-byte size and 1-byte
/// metadata and hands the bytes back intact; [`decode_row`] recognises them
/// and decodes the TIME itself. `None` (the common case) means `tme` is
/// safe as it is. Compute it once per TABLE_MAP; [`decode_rows_event`]
/// does this internally.
pub fn table_map_for_rows(
    tme: &TableMapEvent<'_>,
) -> Result<Option<TableMapEvent<'static>>, DecodeError> {
    patch_short_time_columns(tme).map_err(|source| DecodeError::Rows {
        table: format!("{}.{}", tme.database_name(), tme.table_name()),
        source,
    })
}

/// If `tme` has TIME(1)/TIME(2) columns, a copy in which they are declared
/// TIMESTAMP(0): both are 4 bytes with 1 byte of metadata, and TIMESTAMP(0)
/// hands the 4 bytes back intact (as a decimal string of a big-endian i32),
/// which [`time2_from_raw`] then decodes correctly.
fn patch_short_time_columns(
    tme: &TableMapEvent<'_>,
) -> std::io::Result<Option<TableMapEvent<'static>>> {
    use mysql_common::proto::MySerialize;
    let count = usize::try_from(tme.columns_count()).unwrap_or(0);
    let short_time: Vec<usize> = (0..count)
        .filter(|&i| {
            matches!(
                tme.get_raw_column_type(i),
                Ok(Some(ColumnType::MYSQL_TYPE_TIME2))
            ) && matches!(tme.get_column_metadata(i), Some([1 | 2]))
        })
        .collect();
    if short_time.is_empty() {
        return Ok(None);
    }
    let malformed = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "unexpected TABLE_MAP layout",
        )
    };
    let mut body = Vec::new();
    tme.serialize(&mut body);
    // table_id (6) + flags (2), then length-prefixed, NUL-terminated names.
    let mut at = 8;
    for _ in 0..2 {
        let len = usize::from(*body.get(at).ok_or_else(malformed)?);
        at += 1 + len + 1;
    }
    let (n, types_at) = lenenc(&body, at).ok_or_else(malformed)?;
    if usize::try_from(n).ok() != Some(count) {
        return Err(malformed());
    }
    let (_, meta_at) = lenenc(&body, types_at + count).ok_or_else(malformed)?;
    for &i in &short_time {
        let meta_offset: usize = (0..i)
            .map(|j| tme.get_column_metadata(j).map_or(0, <[u8]>::len))
            .sum();
        let type_byte = body.get_mut(types_at + i).ok_or_else(malformed)?;
        if *type_byte != ColumnType::MYSQL_TYPE_TIME2 as u8 {
            return Err(malformed());
        }
        *type_byte = ColumnType::MYSQL_TYPE_TIMESTAMP2 as u8;
        *body.get_mut(meta_at + meta_offset).ok_or_else(malformed)? = 0;
    }
    let size = u32::try_from(19 + body.len()).map_err(|_| malformed())?;
    let mut bytes = Vec::with_capacity(19 + body.len());
    bytes.extend_from_slice(&0u32.to_le_bytes()); // timestamp
    bytes.push(EventType::TABLE_MAP_EVENT as u8);
    bytes.extend_from_slice(&0u32.to_le_bytes()); // server id
    bytes.extend_from_slice(&size.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes()); // log pos
    bytes.extend_from_slice(&0u16.to_le_bytes()); // flags
    bytes.extend_from_slice(&body);
    let fde = FormatDescriptionEvent::new(BinlogVersion::Version4);
    let event = Event::read(&fde, &bytes[..])?;
    let patched = event.read_event::<TableMapEvent<'_>>()?.into_owned();
    Ok(Some(patched))
}

/// Decodes TIME(1)/TIME(2) from its 4 stored bytes (big-endian), following
/// MySQL's `my_time_packed_from_binary` with signed arithmetic.
fn time2_from_raw(raw: u32, fsp: u8) -> String {
    let mut int_part = i64::from(raw >> 8) - 0x80_0000;
    let mut frac = i64::from(raw & 0xff);
    if int_part < 0 && frac > 0 {
        int_part += 1;
        frac -= 0x100;
    }
    let packed = (int_part << 24) + frac * 10_000;
    let negative = packed < 0;
    let packed = packed.unsigned_abs();
    let hms = packed >> 24;
    let micros = u32::try_from(packed % (1 << 24)).unwrap_or(0);
    let hours = (hms >> 12) % (1 << 10);
    let minutes = (hms >> 6) % (1 << 6);
    let seconds = hms % (1 << 6);
    format_time(negative, hours, minutes, seconds, micros, fsp)
}

fn fraction(micros: u32, fsp: u8) -> String {
    let fsp = usize::from(fsp.min(6));
    if fsp == 0 {
        return String::new();
    }
    let digits = format!("{:06}", micros.min(999_999));
    format!(".{}", &digits[..fsp])
}

/// Formats a TIME as `[-]HH:MM:SS[.f]` with `fsp` fractional digits (hours
/// may exceed 24).
pub fn format_time(
    negative: bool,
    hours: u64,
    minutes: u64,
    seconds: u64,
    micros: u32,
    fsp: u8,
) -> String {
    let sign = if negative { "-" } else { "" };
    format!(
        "{sign}{hours:02}:{minutes:02}:{seconds:02}{}",
        fraction(micros, fsp)
    )
}

/// Formats a DATETIME/TIMESTAMP as ISO-8601 UTC,
/// `YYYY-MM-DDTHH:MM:SS[.f]Z`, with `fsp` fractional digits.
pub fn format_datetime(date: (u16, u8, u8), time: (u8, u8, u8), micros: u32, fsp: u8) -> String {
    let (y, mo, d) = date;
    let (h, mi, s) = time;
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{}Z",
        fraction(micros, fsp)
    )
}

/// Windows-1252 for 0x80..=0x9F (MySQL's latin1); the rest is ISO-8859-1.
const CP1252_HIGH: [char; 32] = [
    '\u{20AC}', '\u{0081}', '\u{201A}', '\u{0192}', '\u{201E}', '\u{2026}', '\u{2020}', '\u{2021}',
    '\u{02C6}', '\u{2030}', '\u{0160}', '\u{2039}', '\u{0152}', '\u{008D}', '\u{017D}', '\u{008F}',
    '\u{0090}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}', '\u{2014}',
    '\u{02DC}', '\u{2122}', '\u{0161}', '\u{203A}', '\u{0153}', '\u{009D}', '\u{017E}', '\u{0178}',
];

fn decode_text(
    column: &ColumnSchema,
    bytes: &[u8],
    encoding: &TextEncoding,
) -> Result<String, DecodeError> {
    let invalid = |encoding| DecodeError::InvalidText {
        column: column.name.clone(),
        encoding,
    };
    match encoding {
        TextEncoding::Utf8 => String::from_utf8(bytes.to_vec()).map_err(|_| invalid("UTF-8")),
        TextEncoding::Ascii => {
            if bytes.is_ascii() {
                Ok(bytes.iter().map(|&b| char::from(b)).collect())
            } else {
                Err(invalid("ASCII"))
            }
        }
        TextEncoding::Latin1 => Ok(bytes
            .iter()
            .map(|&b| match b {
                0x80..=0x9f => CP1252_HIGH[usize::from(b - 0x80)],
                _ => char::from(b),
            })
            .collect()),
        TextEncoding::Unsupported(charset) => Err(DecodeError::UnsupportedCharset {
            column: column.name.clone(),
            charset: charset.clone(),
        }),
    }
}

fn integer_of(value: &MyValue) -> Option<i128> {
    match *value {
        MyValue::Int(i) => Some(i128::from(i)),
        MyValue::UInt(u) => Some(i128::from(u)),
        _ => None,
    }
}

fn number_from_i128(n: i128) -> Option<Value> {
    if let Ok(i) = i64::try_from(n) {
        Some(Value::from(i))
    } else {
        u64::try_from(n).ok().map(Value::from)
    }
}

fn float_value(column: &ColumnSchema, f: f64) -> Result<Value, DecodeError> {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| unexpected(column, &f))
}

fn ascii_of(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok().filter(|s| s.is_ascii())
}

/// Decodes one binlog value of `column`.
pub fn decode_value(column: &ColumnSchema, value: &BinlogValue<'_>) -> Result<Value, DecodeError> {
    let value = match value {
        BinlogValue::Value(MyValue::NULL) => return Ok(Value::Null),
        BinlogValue::JsonDiff(_) => {
            return Err(DecodeError::Unsupported {
                column: column.name.clone(),
                what: "partial JSON update (binlog_row_value_options=PARTIAL_JSON)",
            });
        }
        BinlogValue::Jsonb(jsonb) => {
            if column.kind != ColumnKind::JsonBinary {
                return Err(unexpected(column, jsonb));
            }
            let dom = jsonb
                .clone()
                .parse()
                .map_err(|e| DecodeError::InvalidJson {
                    column: column.name.clone(),
                    message: e.to_string(),
                })?;
            return Ok(Value::from(dom));
        }
        BinlogValue::Value(value) => value,
    };
    let bad = || unexpected(column, value);
    match (&column.kind, value) {
        (ColumnKind::Integer { bytes }, v) => {
            // Reinterpret the stored bits at the column's width. This makes
            // the schema's signedness win, and repairs mysql_common 0.37's
            // signed MEDIUMINT, which it does not sign-extend (-1 arrives
            // as 16777215).
            let width = 8 * u32::from((*bytes).clamp(1, 8));
            let bits = integer_of(v).ok_or_else(bad)? & ((1i128 << width) - 1);
            let n = if !column.unsigned && bits >= 1i128 << (width - 1) {
                bits - (1i128 << width)
            } else {
                bits
            };
            number_from_i128(n).ok_or_else(bad)
        }
        (ColumnKind::Float, MyValue::Float(f)) => {
            // The shortest decimal that round-trips the f32 (1.1, not
            // 1.100000023841858).
            let shortest: f64 = f.to_string().parse().map_err(|_| bad())?;
            float_value(column, shortest)
        }
        (ColumnKind::Float | ColumnKind::Double, MyValue::Double(d)) => float_value(column, *d),
        (ColumnKind::Decimal { .. }, MyValue::Bytes(b)) => {
            let text = ascii_of(b)
                .filter(|s| {
                    !s.is_empty()
                        && s.bytes()
                            .all(|c| c.is_ascii_digit() || c == b'-' || c == b'.')
                })
                .ok_or_else(bad)?;
            Ok(Value::String(text.to_string()))
        }
        (ColumnKind::Year, MyValue::Bytes(b)) => {
            let year: u16 = ascii_of(b).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
            // mysql_common adds 1900 to the stored byte; 0 is YEAR 0000.
            Ok(Value::from(if year == 1900 { 0 } else { year }))
        }
        (ColumnKind::Year, v) => integer_of(v).and_then(number_from_i128).ok_or_else(bad),
        (ColumnKind::Date, MyValue::Date(y, m, d, ..)) => {
            if *m == 0 || *d == 0 {
                return Ok(Value::Null);
            }
            Ok(Value::String(format!("{y:04}-{m:02}-{d:02}")))
        }
        (ColumnKind::DateTime { fsp }, MyValue::Date(y, mo, d, h, mi, s, us)) => {
            if *mo == 0 || *d == 0 {
                return Ok(Value::Null);
            }
            Ok(Value::String(format_datetime(
                (*y, *mo, *d),
                (*h, *mi, *s),
                *us,
                *fsp,
            )))
        }
        (ColumnKind::Timestamp { fsp }, v) => {
            let (secs, micros): (i64, u32) = match v {
                MyValue::Int(secs) => (*secs, 0),
                MyValue::Bytes(b) => {
                    let text = ascii_of(b).ok_or_else(bad)?;
                    let (secs, frac) = text.split_once('.').unwrap_or((text, "0"));
                    (
                        secs.parse().map_err(|_| bad())?,
                        frac.parse().map_err(|_| bad())?,
                    )
                }
                _ => return Err(bad()),
            };
            // mysql_common reads the stored u32 as i32: a TIMESTAMP after
            // 2038-01-19 (MariaDB 11.5+) comes back negative.
            let secs = if secs < 0 { secs + (1i64 << 32) } else { secs };
            if secs == 0 && micros == 0 {
                return Ok(Value::Null); // 0000-00-00 00:00:00
            }
            let at = chrono::DateTime::from_timestamp(secs, micros.saturating_mul(1000))
                .ok_or_else(bad)?;
            let naive = at.naive_utc();
            use chrono::{Datelike, Timelike};
            let year = u16::try_from(naive.year()).map_err(|_| bad())?;
            let date = (year, naive.month() as u8, naive.day() as u8);
            let time = (
                naive.hour() as u8,
                naive.minute() as u8,
                naive.second() as u8,
            );
            Ok(Value::String(format_datetime(date, time, micros, *fsp)))
        }
        (ColumnKind::Time { fsp }, MyValue::Time(negative, days, h, m, s, us)) => {
            let hours = u64::from(*days) * 24 + u64::from(*h);
            Ok(Value::String(format_time(
                *negative,
                hours,
                u64::from(*m),
                u64::from(*s),
                *us,
                *fsp,
            )))
        }
        (ColumnKind::Time { fsp }, MyValue::Bytes(b)) => {
            // A TIME(1)/TIME(2) parsed as TIMESTAMP(0) by decode_rows_event.
            let raw: i64 = ascii_of(b).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
            let raw = u32::try_from(raw.rem_euclid(1 << 32)).map_err(|_| bad())?;
            Ok(Value::String(time2_from_raw(raw, *fsp)))
        }
        (ColumnKind::Bit { .. }, MyValue::Bytes(b)) => {
            if b.len() > 8 {
                return Err(bad());
            }
            Ok(Value::from(
                b.iter()
                    .fold(0u64, |acc, &byte| (acc << 8) | u64::from(byte)),
            ))
        }
        (ColumnKind::Text(encoding), MyValue::Bytes(b)) => {
            Ok(Value::String(decode_text(column, b, encoding)?))
        }
        (ColumnKind::Binary | ColumnKind::Geometry, MyValue::Bytes(b)) => {
            Ok(Value::String(BASE64.encode(b)))
        }
        (ColumnKind::FixedBinary { length }, MyValue::Bytes(b)) => {
            let mut padded = b.clone();
            if padded.len() < usize::from(*length) {
                padded.resize(usize::from(*length), 0);
            }
            Ok(Value::String(BASE64.encode(padded)))
        }
        (ColumnKind::JsonText, MyValue::Bytes(b)) => {
            let text = decode_text(column, b, &TextEncoding::Utf8)?;
            serde_json::from_str(&text).map_err(|e| DecodeError::InvalidJson {
                column: column.name.clone(),
                message: e.to_string(),
            })
        }
        (ColumnKind::JsonBinary, MyValue::Bytes(b)) if b.is_empty() => Ok(Value::Null),
        (ColumnKind::Enum { values }, v) => {
            let index = integer_of(v).ok_or_else(bad)?;
            if index == 0 {
                return Ok(Value::String(String::new()));
            }
            usize::try_from(index)
                .ok()
                .and_then(|i| values.get(i - 1))
                .map(|s| Value::String(s.clone()))
                .ok_or_else(|| DecodeError::EnumIndex {
                    column: column.name.clone(),
                    index: i64::try_from(index).unwrap_or(i64::MAX),
                    known: values.len(),
                })
        }
        (ColumnKind::Set { values }, MyValue::Bytes(b)) => {
            let mut members = Vec::new();
            for (byte_index, byte) in b.iter().enumerate() {
                for bit in 0..8 {
                    if byte & (1 << bit) == 0 {
                        continue;
                    }
                    let index = byte_index * 8 + bit;
                    let value = values.get(index).ok_or_else(|| DecodeError::SetBit {
                        column: column.name.clone(),
                        bit: index,
                        known: values.len(),
                    })?;
                    members.push(value.as_str());
                }
            }
            Ok(Value::String(members.join(",")))
        }
        (ColumnKind::Unsupported { type_name }, _) => Err(DecodeError::UnsupportedType {
            column: column.name.clone(),
            type_name: type_name.clone(),
        }),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use mysql_async::binlog::jsonb;
    use mysql_async::consts::ColumnType;
    use serde_json::json;

    fn col(name: &str, kind: ColumnKind) -> ColumnSchema {
        ColumnSchema {
            name: name.into(),
            column_type: None,
            raw_type: 0,
            type_meta: vec![],
            unsigned: false,
            nullable: true,
            collation: None,
            kind,
        }
    }

    fn unsigned(mut c: ColumnSchema) -> ColumnSchema {
        c.unsigned = true;
        c
    }

    fn v(value: MyValue) -> BinlogValue<'static> {
        BinlogValue::Value(value)
    }

    fn bytes(b: &[u8]) -> BinlogValue<'static> {
        v(MyValue::Bytes(b.to_vec()))
    }

    fn dec(c: &ColumnSchema, value: BinlogValue<'_>) -> Value {
        decode_value(c, &value).unwrap()
    }

    #[test]
    fn integers_respect_the_schema_signedness() {
        let int = |bytes| col("n", ColumnKind::Integer { bytes });
        assert_eq!(dec(&int(1), v(MyValue::Int(-128))), json!(-128));
        assert_eq!(dec(&unsigned(int(1)), v(MyValue::Int(-1))), json!(255));
        assert_eq!(dec(&unsigned(int(2)), v(MyValue::Int(-1))), json!(65535));
        assert_eq!(
            dec(&unsigned(int(3)), v(MyValue::Int(-1))),
            json!(16_777_215)
        );
        // mysql_common hands signed MEDIUMINT back without sign extension.
        assert_eq!(dec(&int(3), v(MyValue::Int(0x80_0000))), json!(-8_388_608));
        assert_eq!(dec(&int(3), v(MyValue::Int(0xff_ffff))), json!(-1));
        assert_eq!(dec(&int(3), v(MyValue::Int(-1))), json!(-1));
        assert_eq!(dec(&int(3), v(MyValue::Int(8_388_607))), json!(8_388_607));
        assert_eq!(
            dec(&unsigned(int(4)), v(MyValue::Int(-1))),
            json!(4_294_967_295u32)
        );
        assert_eq!(dec(&unsigned(int(8)), v(MyValue::Int(-1))), json!(u64::MAX));
        assert_eq!(
            dec(&unsigned(int(8)), v(MyValue::UInt(u64::MAX))),
            json!(u64::MAX)
        );
        assert_eq!(dec(&int(8), v(MyValue::Int(i64::MIN))), json!(i64::MIN));
        assert_eq!(dec(&int(8), v(MyValue::NULL)), Value::Null);
        assert!(decode_value(&int(8), &bytes(b"1")).is_err());
    }

    #[test]
    fn floats_keep_their_shortest_form() {
        assert_eq!(
            dec(&col("f", ColumnKind::Float), v(MyValue::Float(1.1))),
            json!(1.1)
        );
        assert_eq!(
            dec(&col("f", ColumnKind::Float), v(MyValue::Float(-3.5e-7))),
            json!(-3.5e-7)
        );
        assert_eq!(
            dec(&col("d", ColumnKind::Double), v(MyValue::Double(2.5e300))),
            json!(2.5e300)
        );
        assert!(
            decode_value(&col("d", ColumnKind::Double), &v(MyValue::Double(f64::NAN))).is_err()
        );
    }

    #[test]
    fn decimals_are_exact_strings() {
        let c = col(
            "d",
            ColumnKind::Decimal {
                precision: 14,
                scale: 2,
            },
        );
        assert_eq!(dec(&c, bytes(b"12.30")), json!("12.30"));
        assert_eq!(dec(&c, bytes(b"-0.05")), json!("-0.05"));
        assert!(decode_value(&c, &bytes(b"1e5")).is_err());
        assert!(decode_value(&c, &bytes(b"")).is_err());
    }

    #[test]
    fn dates_times_and_zero_dates() {
        let date = col("d", ColumnKind::Date);
        assert_eq!(
            dec(&date, v(MyValue::Date(2024, 5, 1, 0, 0, 0, 0))),
            json!("2024-05-01")
        );
        assert_eq!(
            dec(&date, v(MyValue::Date(0, 0, 0, 0, 0, 0, 0))),
            Value::Null
        );
        assert_eq!(
            dec(&date, v(MyValue::Date(2024, 0, 1, 0, 0, 0, 0))),
            Value::Null
        );
        let dt6 = col("t", ColumnKind::DateTime { fsp: 6 });
        assert_eq!(
            dec(&dt6, v(MyValue::Date(2024, 5, 1, 12, 34, 56, 123_456))),
            json!("2024-05-01T12:34:56.123456Z")
        );
        let dt3 = col("t", ColumnKind::DateTime { fsp: 3 });
        assert_eq!(
            dec(&dt3, v(MyValue::Date(999, 12, 31, 23, 59, 59, 120_000))),
            json!("0999-12-31T23:59:59.120Z")
        );
        let dt0 = col("t", ColumnKind::DateTime { fsp: 0 });
        assert_eq!(
            dec(&dt0, v(MyValue::Date(2024, 5, 1, 1, 2, 3, 0))),
            json!("2024-05-01T01:02:03Z")
        );
        assert_eq!(
            dec(&dt0, v(MyValue::Date(0, 0, 0, 0, 0, 0, 0))),
            Value::Null
        );
    }

    #[test]
    fn timestamps_are_utc() {
        let ts6 = col("t", ColumnKind::Timestamp { fsp: 6 });
        assert_eq!(
            dec(&ts6, bytes(b"1714566896.000042")),
            json!("2024-05-01T12:34:56.000042Z")
        );
        assert_eq!(
            dec(&ts6, bytes(b"1714566896")),
            json!("2024-05-01T12:34:56.000000Z")
        );
        assert_eq!(dec(&ts6, bytes(b"0")), Value::Null);
        let ts0 = col("t", ColumnKind::Timestamp { fsp: 0 });
        assert_eq!(dec(&ts0, v(MyValue::Int(1))), json!("1970-01-01T00:00:01Z"));
        // 2106-02-07T06:28:15Z, stored as u32::MAX, read by mysql_common as -1.
        assert_eq!(dec(&ts0, bytes(b"-1")), json!("2106-02-07T06:28:15Z"));
        assert!(decode_value(&ts0, &bytes(b"x")).is_err());
    }

    #[test]
    fn times_span_more_than_a_day_and_can_be_negative() {
        let t0 = col("t", ColumnKind::Time { fsp: 0 });
        assert_eq!(
            dec(&t0, v(MyValue::Time(false, 34, 22, 59, 59, 0))),
            json!("838:59:59")
        );
        assert_eq!(
            dec(&t0, v(MyValue::Time(true, 0, 0, 0, 1, 0))),
            json!("-00:00:01")
        );
        let t6 = col("t", ColumnKind::Time { fsp: 6 });
        assert_eq!(
            dec(&t6, v(MyValue::Time(false, 0, 1, 2, 3, 4))),
            json!("01:02:03.000004")
        );
    }

    #[test]
    fn short_fraction_times_decode_from_raw_bytes() {
        // MySQL's encoding of TIME(2): 3 bytes (int part + 0x800000) and a
        // signed fraction byte, big-endian.
        let enc = |negative: bool, h: u32, m: u32, s: u32, hundredths: i64| -> u32 {
            let hms = i64::from((h << 12) | (m << 6) | s);
            let mut packed = (hms << 24) + hundredths * 10_000;
            if negative {
                packed = -packed;
            }
            let int_part = packed >> 24;
            let frac = (packed % (1 << 24)) / 10_000;
            let int_bytes = u32::try_from(int_part + 0x80_0000).unwrap();
            (int_bytes << 8) | u32::from(frac as i8 as u8)
        };
        for (negative, h, m, s, f, want) in [
            (true, 0, 0, 1, 50, "-00:00:01.50"),
            (false, 0, 0, 1, 50, "00:00:01.50"),
            (true, 838, 59, 59, 99, "-838:59:59.99"),
            (true, 0, 0, 0, 1, "-00:00:00.01"),
            (true, 12, 0, 0, 0, "-12:00:00.00"),
            (false, 0, 0, 0, 0, "00:00:00.00"),
        ] {
            let raw = enc(negative, h, m, s, f);
            assert_eq!(time2_from_raw(raw, 2), want, "{raw:#x}");
            // What decode_value receives after the TABLE_MAP patch.
            let as_i32 = raw as i32;
            let c = col("t", ColumnKind::Time { fsp: 2 });
            assert_eq!(dec(&c, bytes(as_i32.to_string().as_bytes())), json!(want));
        }
        assert_eq!(time2_from_raw(enc(true, 0, 0, 1, 50), 1), "-00:00:01.5");
    }

    #[test]
    fn year_and_bit_are_numbers() {
        let y = col("y", ColumnKind::Year);
        assert_eq!(dec(&y, bytes(b"2024")), json!(2024));
        assert_eq!(dec(&y, bytes(b"1900")), json!(0));
        let b = col("b", ColumnKind::Bit { bits: 10 });
        assert_eq!(dec(&b, bytes(&[0x02, 0x01])), json!(513));
        assert_eq!(dec(&b, bytes(&[0xff; 8])), json!(u64::MAX));
        assert!(decode_value(&b, &bytes(&[0; 9])).is_err());
    }

    #[test]
    fn text_respects_the_charset() {
        let utf8 = col("s", ColumnKind::Text(TextEncoding::Utf8));
        assert_eq!(dec(&utf8, bytes("zł€😀".as_bytes())), json!("zł€😀"));
        assert_eq!(dec(&utf8, bytes(b"")), json!(""));
        assert!(matches!(
            decode_value(&utf8, &bytes(&[0xff])),
            Err(DecodeError::InvalidText { .. })
        ));
        let latin1 = col("s", ColumnKind::Text(TextEncoding::Latin1));
        assert_eq!(dec(&latin1, bytes(&[b'c', 0xe9, 0x80])), json!("cé€"));
        let ascii = col("s", ColumnKind::Text(TextEncoding::Ascii));
        assert!(decode_value(&ascii, &bytes(&[0xe9])).is_err());
        let other = col(
            "s",
            ColumnKind::Text(TextEncoding::Unsupported("sjis".into())),
        );
        let err = decode_value(&other, &bytes(b"a")).unwrap_err();
        assert!(
            err.to_string().contains("sjis") && err.to_string().contains("column s"),
            "{err}"
        );
        let bin = col("b", ColumnKind::Binary);
        assert_eq!(dec(&bin, bytes(&[0, 1, 0xff])), json!("AAH/"));
        assert_eq!(
            dec(&col("g", ColumnKind::Geometry), bytes(&[1])),
            json!("AQ==")
        );
        let fixed = col("f", ColumnKind::FixedBinary { length: 4 });
        assert_eq!(dec(&fixed, bytes(b"A")), json!("QQAAAA=="));
        assert_eq!(dec(&fixed, bytes(b"ABCD")), json!("QUJDRA=="));
    }

    #[test]
    fn enums_and_sets_are_strings() {
        let e = col(
            "e",
            ColumnKind::Enum {
                values: vec!["pending".into(), "paid".into()],
            },
        );
        assert_eq!(dec(&e, v(MyValue::Int(2))), json!("paid"));
        assert_eq!(dec(&e, v(MyValue::Int(0))), json!(""));
        assert!(matches!(
            decode_value(&e, &v(MyValue::Int(3))),
            Err(DecodeError::EnumIndex {
                index: 3,
                known: 2,
                ..
            })
        ));
        let unknown = col("e", ColumnKind::Enum { values: vec![] });
        assert!(decode_value(&unknown, &v(MyValue::Int(1))).is_err());
        let s = col(
            "s",
            ColumnKind::Set {
                values: (0..10).map(|i| format!("v{i}")).collect(),
            },
        );
        assert_eq!(dec(&s, bytes(&[0b101, 0b10])), json!("v0,v2,v9"));
        assert_eq!(dec(&s, bytes(&[0, 0])), json!(""));
        assert!(matches!(
            decode_value(&s, &bytes(&[0, 0b100])),
            Err(DecodeError::SetBit { bit: 10, .. })
        ));
    }

    #[test]
    fn json_text_is_parsed_and_must_be_valid() {
        let j = col("j", ColumnKind::JsonText);
        assert_eq!(
            dec(&j, bytes(br#"{"b":1,"a":[true,null,"x"]}"#)),
            json!({"b":1,"a":[true,null,"x"]})
        );
        assert_eq!(dec(&j, bytes(b"\"str\"")), json!("str"));
        let err = decode_value(&j, &bytes(b"{oops")).unwrap_err();
        assert!(matches!(err, DecodeError::InvalidJson { .. }), "{err}");
    }

    #[test]
    fn jsonb_is_converted() {
        let j = col("j", ColumnKind::JsonBinary);
        // A JSONB small object {"a": 1}: type 0x00, count 1, size 12,
        // key entry (offset 11, len 1), value entry (int16 inline 1), key.
        let raw: &[u8] = &[0x00, 1, 0, 12, 0, 11, 0, 1, 0, 0x05, 1, 0, b'a'];
        let value: jsonb::Value<'_> = {
            use mysql_common::io::ParseBuf;
            ParseBuf(raw).parse(()).unwrap()
        };
        assert_eq!(dec(&j, BinlogValue::Jsonb(value.clone())), json!({"a": 1}));
        let text = col("t", ColumnKind::Text(TextEncoding::Utf8));
        assert!(decode_value(&text, &BinlogValue::Jsonb(value)).is_err());
        assert_eq!(dec(&j, bytes(b"")), Value::Null);
    }

    #[test]
    fn partial_json_and_unknown_types_are_refused_by_name() {
        let j = col("doc", ColumnKind::JsonBinary);
        let err = decode_value(&j, &BinlogValue::JsonDiff(vec![])).unwrap_err();
        assert!(
            matches!(err, DecodeError::Unsupported { ref column, .. } if column == "doc"),
            "{err}"
        );
        let u = col(
            "vec",
            ColumnKind::Unsupported {
                type_name: "MYSQL_TYPE_VECTOR".into(),
            },
        );
        let err = decode_value(&u, &bytes(b"x")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "column vec: unsupported column type MYSQL_TYPE_VECTOR"
        );
    }

    fn schema(columns: Vec<ColumnSchema>) -> TableSchema {
        TableSchema {
            db: "d".into(),
            table: "t".into(),
            table_id: 1,
            columns,
            primary_key: vec!["id".into()],
        }
    }

    fn binlog_row(names: &[&str], values: Vec<BinlogValue<'static>>) -> BinlogRow {
        let columns: Vec<mysql_common::packets::Column> = names
            .iter()
            .map(|n| {
                mysql_common::packets::Column::new(ColumnType::MYSQL_TYPE_LONG)
                    .with_name(n.as_bytes())
            })
            .collect();
        BinlogRow::new(values.into_iter().map(Some).collect(), Arc::from(columns))
    }

    #[test]
    fn rows_map_by_position_or_name() {
        let s = schema(vec![
            col("id", ColumnKind::Integer { bytes: 8 }),
            col("name", ColumnKind::Text(TextEncoding::Utf8)),
            col("note", ColumnKind::Text(TextEncoding::Utf8)),
        ]);
        let full = binlog_row(
            &["id", "name", "note"],
            vec![v(MyValue::Int(1)), bytes(b"a"), v(MyValue::NULL)],
        );
        let row = decode_row(&s, &full).unwrap();
        assert_eq!(
            Value::Object(row.clone()),
            json!({"id": 1, "name": "a", "note": null})
        );
        assert_eq!(row.keys().collect::<Vec<_>>(), ["id", "name", "note"]);
        // No names in the binlog: mysql_common calls them @0, @1, ...
        let anonymous = binlog_row(
            &["@0", "@1", "@2"],
            vec![v(MyValue::Int(2)), bytes(b"b"), bytes(b"c")],
        );
        assert_eq!(
            Value::Object(decode_row(&s, &anonymous).unwrap()),
            json!({"id": 2, "name": "b", "note": "c"})
        );
        // A partial image keeps only its columns, in table order.
        let partial = binlog_row(&["note", "id"], vec![bytes(b"z"), v(MyValue::Int(3))]);
        let row = decode_row(&s, &partial).unwrap();
        assert_eq!(row.keys().collect::<Vec<_>>(), ["id", "note"]);
        let partial_anon = binlog_row(&["@2"], vec![bytes(b"z")]);
        assert_eq!(
            Value::Object(decode_row(&s, &partial_anon).unwrap()),
            json!({"note": "z"})
        );
        // Unknown names are an error, not a guess.
        let wrong = binlog_row(
            &["id", "other", "note"],
            vec![v(MyValue::Int(1)), bytes(b"a"), bytes(b"b")],
        );
        assert!(matches!(
            decode_row(&s, &wrong),
            Err(DecodeError::UnknownColumn { .. })
        ));
        let out_of_range = binlog_row(&["@7"], vec![bytes(b"z")]);
        assert!(decode_row(&s, &out_of_range).is_err());
    }

    #[test]
    fn short_time_columns_are_redeclared_for_parsing() {
        use crate::schema::fixture::{Col, strings, table_map};
        let names = ["id", "t2", "t6", "t1", "s"];
        let cols = [
            Col(8, &[], false),
            Col(19, &[2], true),
            Col(19, &[6], true),
            Col(19, &[1], true),
            Col(15, &[10, 0], true),
        ];
        let tme = table_map("d", "t", &cols, &[(4, strings(&names))]);
        let patched = table_map_for_rows(&tme).unwrap().unwrap();
        let types: Vec<u8> = (0..5)
            .map(|i| patched.get_raw_column_type(i).unwrap().unwrap() as u8)
            .collect();
        assert_eq!(types, [8, 17, 19, 17, 15]);
        let meta: Vec<&[u8]> = (0..5)
            .map(|i| patched.get_column_metadata(i).unwrap())
            .collect();
        assert_eq!(meta, [&[][..], &[0], &[6], &[0], &[10, 0]]);
        assert_eq!(patched.table_id(), tme.table_id());
        assert_eq!(patched.table_name(), "t");
        assert_eq!(patched.null_bitmask(), tme.null_bitmask());
        assert_eq!(
            patched.iter_optional_meta().collect::<Vec<_>>().len(),
            1,
            "optional metadata kept"
        );
        let plain = table_map("d", "t", &[Col(8, &[], false)], &[]);
        assert!(table_map_for_rows(&plain).unwrap().is_none());
    }

    #[test]
    fn negative_short_time_decodes_through_a_rows_event() {
        use crate::schema::fixture::{Col, strings, table_map};
        let tme = table_map(
            "d",
            "t",
            &[Col(8, &[], false), Col(19, &[2], true)],
            &[(4, strings(&["id", "t2"]))],
        );
        let schema = TableSchema::from_table_map(&tme, None).unwrap();
        // WRITE_ROWS_EVENT (v2): table id, flags, extra-data length, column
        // count, columns-present bitmap, then the row: null bitmap, BIGINT 7,
        // TIME(2) -00:00:01.50 as stored.
        let mut body = vec![42, 0, 0, 0, 0, 0, 1, 0, 2, 0, 2, 0b11, 0b00];
        body.extend_from_slice(&7u64.to_le_bytes());
        body.extend_from_slice(&[0x7f, 0xff, 0xfe, 0xce]);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.push(EventType::WRITE_ROWS_EVENT as u8);
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&(19 + body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&0u16.to_le_bytes());
        bytes.extend_from_slice(&body);
        let fde = FormatDescriptionEvent::new(BinlogVersion::Version4);
        let event = Event::read(&fde, &bytes[..]).unwrap();
        let Some(mysql_async::binlog::events::EventData::RowsEvent(rows)) =
            event.read_data().unwrap()
        else {
            panic!("not a rows event");
        };
        let decoded = decode_rows_event(&schema, &rows, &tme).unwrap();
        assert_eq!(decoded.len(), 1);
        assert!(decoded[0].0.is_none());
        assert_eq!(
            Value::Object(decoded[0].1.clone().unwrap()),
            json!({"id": 7, "t2": "-00:00:01.50"})
        );
        // The wrong TABLE_MAP is refused before parsing.
        let other = table_map(
            "d",
            "other",
            &[Col(8, &[], false), Col(19, &[2], true)],
            &[],
        );
        assert!(matches!(
            decode_rows_event(&schema, &rows, &other),
            Err(DecodeError::TableMismatch { .. })
        ));
    }

    #[test]
    fn lenenc_reads_all_widths() {
        assert_eq!(lenenc(&[5], 0), Some((5, 1)));
        assert_eq!(lenenc(&[0xfc, 0x01, 0x02], 0), Some((0x0201, 3)));
        assert_eq!(lenenc(&[0, 0xfd, 1, 0, 0], 1), Some((1, 5)));
        assert_eq!(lenenc(&[0xfe, 1, 0, 0, 0, 0, 0, 0, 0], 0), Some((1, 9)));
        assert_eq!(lenenc(&[0xfb], 0), None);
        assert_eq!(lenenc(&[0xfc, 1], 0), None);
    }
}
