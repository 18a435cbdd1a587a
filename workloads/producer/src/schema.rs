//! Table layouts: what each column of a binlog row is, and when that changes.
//!
//! A row event carries values only; its TABLE_MAP event says which table and
//! which binlog types. With `binlog_row_metadata=FULL` the TABLE_MAP also
//! carries column names, signedness, charsets, ENUM/SET strings and the
//! primary key, so [`TableSchema::from_table_map`] builds the layout from the
//! event alone, as it was at that binlog position. What the binlog never says
//! is which MariaDB column is JSON (MariaDB's JSON is LONGTEXT plus an
//! automatic `CHECK (json_valid(col))`), so the layout is completed with a
//! [`TableInfo`] read from `information_schema` ([`load_table_info`], the one
//! I/O function here) and cached per table in a [`SchemaCache`]. When the
//! TABLE_MAP lacks names (`binlog_row_metadata` MINIMAL or NO_LOG) the
//! `TableInfo` supplies them, and a column count or type that disagrees with
//! the binlog is reported as a DDL race rather than guessed around.
//! [`ddl_touched_tables`] reads the SQL of a QUERY event just well enough to
//! tell the cache which tables a DDL statement changed.

use std::collections::HashMap;
use std::io;

use mysql_async::binlog::events::{OptionalMetaExtractor, OptionalMetadataField, TableMapEvent};
use mysql_async::consts::ColumnType;
use mysql_async::prelude::Queryable;

use crate::ddl::DdlEffect;

/// A table layout could not be built or loaded.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The TABLE_MAP optional metadata is malformed.
    #[error("malformed TABLE_MAP metadata for {table}: {source}")]
    Metadata {
        /// `db.table`.
        table: String,
        /// The parse error.
        source: io::Error,
    },
    /// Neither the TABLE_MAP nor `information_schema` named the columns.
    #[error(
        "no column names for {table}: the TABLE_MAP has none \
         (binlog_row_metadata is not FULL) and no information_schema layout was given"
    )]
    NoColumnNames {
        /// `db.table`.
        table: String,
    },
    /// `information_schema` and the binlog disagree on the number of columns:
    /// the table changed between the binlog position and the schema query.
    #[error(
        "column count mismatch for {table}: the binlog has {binlog} columns, \
         information_schema has {info} (a DDL ran between the event and the schema query)"
    )]
    ColumnCountMismatch {
        /// `db.table`.
        table: String,
        /// Columns in the TABLE_MAP.
        binlog: usize,
        /// Columns in `information_schema`.
        info: usize,
    },
    /// `information_schema` and the binlog disagree on a column's type.
    #[error(
        "type mismatch for {table} column {index} ({column}): the binlog has {binlog}, \
         information_schema has {info} (a DDL ran between the event and the schema query)"
    )]
    TypeMismatch {
        /// `db.table`.
        table: String,
        /// Column position (0-based).
        index: usize,
        /// Column name per `information_schema`.
        column: String,
        /// Binlog type.
        binlog: String,
        /// `information_schema` DATA_TYPE.
        info: String,
    },
    /// The primary-key metadata points past the last column.
    #[error("primary key of {table} names column {index}, but the table has {count} columns")]
    BadPrimaryKey {
        /// `db.table`.
        table: String,
        /// The column index named.
        index: u64,
        /// Number of columns.
        count: usize,
    },
    /// `information_schema` has no such table.
    #[error("table {table} not found in information_schema (dropped, or no privilege)")]
    TableNotFound {
        /// `db.table`.
        table: String,
    },
    /// A query against `information_schema` failed.
    #[error("loading the layout of {table} from information_schema failed: {source}")]
    Query {
        /// `db.table`.
        table: String,
        /// The driver error.
        source: mysql_async::Error,
    },
}

/// How a text column's bytes are encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextEncoding {
    /// utf8mb4 / utf8mb3 (any collation): decoded as strict UTF-8.
    Utf8,
    /// MySQL's latin1, which is Windows-1252.
    Latin1,
    /// 7-bit ASCII.
    Ascii,
    /// A charset this decoder does not convert (ucs2, utf16, sjis, ...):
    /// decoding a value fails with an error naming the column and charset.
    Unsupported(String),
}

/// What a column holds, resolved from the binlog type, its metadata and
/// `information_schema`: everything the decoder needs and nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnKind {
    /// TINYINT (1), SMALLINT (2), MEDIUMINT (3), INT (4) or BIGINT (8) bytes;
    /// signedness is [`ColumnSchema::unsigned`].
    Integer {
        /// Storage width in bytes.
        bytes: u8,
    },
    /// FLOAT.
    Float,
    /// DOUBLE.
    Double,
    /// DECIMAL(precision, scale).
    Decimal {
        /// Total digits.
        precision: u8,
        /// Digits after the point.
        scale: u8,
    },
    /// YEAR.
    Year,
    /// DATE.
    Date,
    /// DATETIME(fsp).
    DateTime {
        /// Fractional-second digits (0-6).
        fsp: u8,
    },
    /// TIMESTAMP(fsp).
    Timestamp {
        /// Fractional-second digits (0-6).
        fsp: u8,
    },
    /// TIME(fsp).
    Time {
        /// Fractional-second digits (0-6).
        fsp: u8,
    },
    /// BIT(bits).
    Bit {
        /// Declared width, 1-64.
        bits: u16,
    },
    /// CHAR, VARCHAR, TEXT: text in the given encoding.
    Text(TextEncoding),
    /// VARBINARY, BLOB (binary charset): raw bytes.
    Binary,
    /// BINARY(length): raw bytes, right-padded with 0x00 to `length` as
    /// stored. The binlog drops the trailing 0x00 bytes (checked on MariaDB
    /// 10.11: `BINARY(4)` 'A' is logged as one byte, `SELECT` returns four);
    /// the decoder restores them so the binlog and a snapshot agree.
    FixedBinary {
        /// Declared length in bytes.
        length: u16,
    },
    /// A MariaDB JSON column: LONGTEXT holding JSON text.
    JsonText,
    /// A MySQL JSON column: binary JSONB.
    JsonBinary,
    /// ENUM with its values in definition order (index 1 is the first);
    /// empty when neither the binlog nor `information_schema` gave them.
    Enum {
        /// Values in definition order.
        values: Vec<String>,
    },
    /// SET with its values in definition order (bit 0 is the first); empty
    /// when unknown.
    Set {
        /// Values in definition order.
        values: Vec<String>,
    },
    /// GEOMETRY and its subtypes: MySQL's internal SRID + WKB bytes.
    Geometry,
    /// A binlog type this decoder does not handle; decoding fails.
    Unsupported {
        /// The binlog type, for the error message.
        type_name: String,
    },
}

/// One column of a [`TableSchema`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSchema {
    /// Column name.
    pub name: String,
    /// Binlog type from the TABLE_MAP (ENUM/SET resolved from STRING);
    /// `None` for a type code `mysql_common` does not know.
    pub column_type: Option<ColumnType>,
    /// The raw binlog type code.
    pub raw_type: u8,
    /// The column's type-specific TABLE_MAP metadata bytes.
    pub type_meta: Vec<u8>,
    /// UNSIGNED (numeric columns only).
    pub unsigned: bool,
    /// The TABLE_MAP null bit: whether the column accepts NULL.
    pub nullable: bool,
    /// Collation id from the TABLE_MAP, for character and ENUM/SET columns.
    pub collation: Option<u16>,
    /// How to decode the column.
    pub kind: ColumnKind,
}

impl ColumnSchema {
    /// Whether the column holds JSON (MariaDB LONGTEXT-JSON or MySQL JSON).
    pub fn is_json(&self) -> bool {
        matches!(self.kind, ColumnKind::JsonText | ColumnKind::JsonBinary)
    }
}

/// A table's layout at one binlog position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    /// Database (schema) name.
    pub db: String,
    /// Table name.
    pub table: String,
    /// The TABLE_MAP table id the layout was built from.
    pub table_id: u64,
    /// Columns in table order.
    pub columns: Vec<ColumnSchema>,
    /// Primary-key column names in key order; empty for a table without one.
    pub primary_key: Vec<String>,
}

/// What `information_schema` says about one column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    /// Column name.
    pub name: String,
    /// `DATA_TYPE`, lowercase (`bigint`, `longtext`, `json`, ...).
    pub data_type: String,
    /// `COLUMN_TYPE`, lowercase (`bigint(20) unsigned`, `enum('a','b')`).
    pub column_type: String,
    /// `CHARACTER_SET_NAME`, for character columns.
    pub charset: Option<String>,
    /// `IS_NULLABLE`.
    pub nullable: bool,
    /// The column holds JSON: MySQL's `json` type, or on MariaDB a text
    /// column with a CHECK constraint containing `json_valid(col)`.
    pub is_json: bool,
}

impl ColumnInfo {
    /// Whether `COLUMN_TYPE` says UNSIGNED.
    pub fn unsigned(&self) -> bool {
        self.column_type.split_whitespace().any(|w| w == "unsigned")
    }

    /// The values of an ENUM or SET column, parsed from `COLUMN_TYPE`
    /// (`enum('a','it''s')`); `None` for other columns.
    pub fn enum_or_set_values(&self) -> Option<Vec<String>> {
        let rest = self
            .column_type
            .strip_prefix("enum(")
            .or_else(|| self.column_type.strip_prefix("set("))?;
        parse_quoted_list(rest)
    }
}

/// Parses `'a','it''s')` (the tail of an ENUM/SET `COLUMN_TYPE`).
fn parse_quoted_list(s: &str) -> Option<Vec<String>> {
    let mut values = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        if chars.next()? != '\'' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    value.push('\'');
                }
                '\'' => break,
                '\\' => value.push(chars.next()?),
                c => value.push(c),
            }
        }
        values.push(value);
        match chars.next()? {
            ',' => continue,
            ')' => return Some(values),
            _ => return None,
        }
    }
}

/// What `information_schema` says about a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// Database.
    pub db: String,
    /// Table.
    pub table: String,
    /// Columns in `ORDINAL_POSITION` order.
    pub columns: Vec<ColumnInfo>,
    /// Primary-key columns in key order.
    pub primary_key: Vec<String>,
}

impl TableInfo {
    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&ColumnInfo> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Loads a table's layout from `information_schema` with parameterised
/// queries: columns, primary key and, on MariaDB, which text columns are
/// JSON. Needs SELECT on the table (the CDC user has it on `payments`).
///
/// MariaDB detail (checked on 10.11): a `JSON` column is reported as
/// `DATA_TYPE = 'longtext'`, and its automatic `json_valid` check appears in
/// `information_schema.CHECK_CONSTRAINTS` as a column-level constraint named
/// after the column (`LEVEL = 'Column'`). An explicit column CHECK replaces
/// the automatic one, so any check clause containing `json_valid(`col`)`
/// marks the column as JSON; a plain `LONGTEXT CHECK (json_valid(c))` is
/// indistinguishable from `JSON` on MariaDB and is treated the same.
pub async fn load_table_info(
    conn: &mut mysql_async::Conn,
    db: &str,
    table: &str,
) -> Result<TableInfo, SchemaError> {
    let qualified = || format!("{db}.{table}");
    let query_err = |source| SchemaError::Query {
        table: qualified(),
        source,
    };
    let rows: Vec<(String, String, String, Option<String>, String)> = conn
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_SET_NAME, IS_NULLABLE \
             FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (db, table),
        )
        .await
        .map_err(query_err)?;
    if rows.is_empty() {
        return Err(SchemaError::TableNotFound { table: qualified() });
    }
    let primary_key: Vec<String> = conn
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' \
             ORDER BY ORDINAL_POSITION",
            (db, table),
        )
        .await
        .map_err(query_err)?;
    let version: Option<String> = conn
        .query_first("SELECT VERSION()")
        .await
        .map_err(query_err)?;
    // MySQL has a native JSON type; its CHECK_CONSTRAINTS view has no
    // TABLE_NAME column, so the check query is MariaDB-only.
    let checks: Vec<String> = if version.is_some_and(|v| v.contains("MariaDB")) {
        conn.exec(
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
             WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?",
            (db, table),
        )
        .await
        .map_err(query_err)?
    } else {
        Vec::new()
    };
    let columns = rows
        .into_iter()
        .map(|(name, data_type, column_type, charset, nullable)| {
            let data_type = data_type.to_ascii_lowercase();
            let is_json = data_type == "json"
                || (is_text_data_type(&data_type) && json_checked(&checks, &name));
            ColumnInfo {
                name,
                data_type,
                column_type: column_type.to_ascii_lowercase(),
                charset,
                nullable: nullable.eq_ignore_ascii_case("YES"),
                is_json,
            }
        })
        .collect();
    Ok(TableInfo {
        db: db.to_string(),
        table: table.to_string(),
        columns,
        primary_key,
    })
}

fn is_text_data_type(data_type: &str) -> bool {
    matches!(
        data_type,
        "longtext" | "mediumtext" | "text" | "tinytext" | "varchar" | "char"
    )
}

/// Whether any check clause validates `column` with `json_valid`.
fn json_checked(checks: &[String], column: &str) -> bool {
    let needle = format!("json_valid(`{}`)", column.replace('`', "``")).to_lowercase();
    checks
        .iter()
        .any(|clause| clause.to_lowercase().replace(' ', "").contains(&needle))
}

/// Classifies a collation id by charset. The ids are the union of MySQL 8
/// and MariaDB 10.11 (read from `information_schema.COLLATIONS`, including
/// MariaDB's UCA-14.0 blocks from id 2048: 256 ids per charset, utf8mb3,
/// utf8mb4, ucs2, utf16, utf32 in that order).
fn encoding_of_collation(id: u16) -> Option<TextEncoding> {
    match id {
        63 => None, // binary: not text
        5 | 8 | 15 | 31 | 47 | 48 | 49 | 94 | 1032 | 1071 => Some(TextEncoding::Latin1),
        11 | 65 | 1035 | 1089 => Some(TextEncoding::Ascii),
        33 | 76 | 83 | 192..=215 | 223 | 576..=578 | 1057 | 1107 | 1216 | 1238 => {
            Some(TextEncoding::Utf8)
        }
        45 | 46 | 224..=247 | 255..=323 | 608..=610 | 1069 | 1070 | 1248 | 1270 => {
            Some(TextEncoding::Utf8)
        }
        2048..=2559 => Some(TextEncoding::Utf8),
        2560..=2815 => Some(TextEncoding::Unsupported("ucs2".into())),
        2816..=3071 => Some(TextEncoding::Unsupported("utf16".into())),
        3072..=3327 => Some(TextEncoding::Unsupported("utf32".into())),
        other => Some(TextEncoding::Unsupported(format!("collation id {other}"))),
    }
}

/// The encoding `information_schema` names; `None` for binary.
fn encoding_of_charset_name(name: &str) -> Option<TextEncoding> {
    match name.to_ascii_lowercase().as_str() {
        "binary" => None,
        "utf8mb4" | "utf8mb3" | "utf8" => Some(TextEncoding::Utf8),
        "latin1" => Some(TextEncoding::Latin1),
        "ascii" => Some(TextEncoding::Ascii),
        other => Some(TextEncoding::Unsupported(other.to_string())),
    }
}

/// Whether `data_type` (from `information_schema`) can be stored with
/// binlog type `ty`. Unknown data types (plugins such as MariaDB's UUID or
/// INET6) are accepted: the check exists to catch DDL races, not to police.
fn info_type_compatible(ty: ColumnType, data_type: &str) -> bool {
    use ColumnType::*;
    let expected: &[&str] = match ty {
        MYSQL_TYPE_TINY => &["tinyint", "bool", "boolean"],
        MYSQL_TYPE_SHORT => &["smallint"],
        MYSQL_TYPE_INT24 => &["mediumint"],
        MYSQL_TYPE_LONG => &["int", "integer"],
        MYSQL_TYPE_LONGLONG => &["bigint"],
        MYSQL_TYPE_FLOAT => &["float"],
        MYSQL_TYPE_DOUBLE => &["double", "real", "double precision"],
        MYSQL_TYPE_DECIMAL | MYSQL_TYPE_NEWDECIMAL => &["decimal", "numeric", "fixed"],
        MYSQL_TYPE_YEAR => &["year"],
        MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => &["date"],
        MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => &["time"],
        MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2 => &["datetime"],
        MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => &["timestamp"],
        MYSQL_TYPE_BIT => &["bit"],
        MYSQL_TYPE_ENUM => &["enum"],
        MYSQL_TYPE_SET => &["set"],
        MYSQL_TYPE_STRING => &["char", "binary"],
        MYSQL_TYPE_VARCHAR | MYSQL_TYPE_VAR_STRING => &["varchar", "varbinary"],
        MYSQL_TYPE_TINY_BLOB | MYSQL_TYPE_MEDIUM_BLOB | MYSQL_TYPE_LONG_BLOB | MYSQL_TYPE_BLOB => {
            &[
                "tinyblob",
                "blob",
                "mediumblob",
                "longblob",
                "tinytext",
                "text",
                "mediumtext",
                "longtext",
                "json",
            ]
        }
        MYSQL_TYPE_JSON => &["json"],
        MYSQL_TYPE_GEOMETRY => &[
            "geometry",
            "point",
            "linestring",
            "polygon",
            "multipoint",
            "multilinestring",
            "multipolygon",
            "geometrycollection",
            "geomcollection",
        ],
        _ => return true,
    };
    const KNOWN: &[&str] = &[
        "tinyint",
        "bool",
        "boolean",
        "smallint",
        "mediumint",
        "int",
        "integer",
        "bigint",
        "float",
        "double",
        "real",
        "decimal",
        "numeric",
        "fixed",
        "year",
        "date",
        "time",
        "datetime",
        "timestamp",
        "bit",
        "enum",
        "set",
        "char",
        "binary",
        "varchar",
        "varbinary",
        "tinyblob",
        "blob",
        "mediumblob",
        "longblob",
        "tinytext",
        "text",
        "mediumtext",
        "longtext",
        "json",
        "geometry",
        "point",
        "linestring",
        "polygon",
        "multipoint",
        "multilinestring",
        "multipolygon",
        "geometrycollection",
        "geomcollection",
    ];
    expected.contains(&data_type) || !KNOWN.contains(&data_type)
}

/// The optional metadata of a TABLE_MAP, per column.
struct Metadata {
    names: Vec<String>,
    /// One flag per numeric column, in order.
    unsigned: Vec<bool>,
    /// One collation per character column, in order (possibly fewer).
    charsets: Vec<u16>,
    /// One collation per ENUM/SET column, in order (possibly fewer).
    enum_set_charsets: Vec<u16>,
    enum_values: Vec<Vec<String>>,
    set_values: Vec<Vec<String>>,
    primary_key: Vec<u64>,
}

fn read_metadata(
    tme: &TableMapEvent<'_>,
    character_columns: usize,
    enum_set_columns: usize,
) -> io::Result<Metadata> {
    let extractor = OptionalMetaExtractor::new(tme.iter_optional_meta())?;
    let names = extractor
        .iter_column_name()
        .map(|n| n.map(|n| n.name().into_owned()))
        .collect::<io::Result<Vec<_>>>()?;
    let unsigned = extractor.iter_signedness().collect();
    // Both charset iterators repeat the default charset forever.
    let charsets = extractor
        .iter_charset()
        .take(character_columns)
        .collect::<io::Result<Vec<_>>>()?;
    let enum_set_charsets = extractor
        .iter_enum_and_set_charset()
        .take(enum_set_columns)
        .collect::<io::Result<Vec<_>>>()?;
    let primary_key = extractor
        .iter_primary_key()
        .collect::<io::Result<Vec<_>>>()?;
    let mut enum_values = Vec::new();
    let mut set_values = Vec::new();
    for field in tme.iter_optional_meta() {
        match field? {
            OptionalMetadataField::EnumStrValue(values) => {
                for column in values.iter_values() {
                    let column = column?;
                    enum_values.push(
                        column
                            .values()
                            .iter()
                            .map(|v| v.value().into_owned())
                            .collect(),
                    );
                }
            }
            OptionalMetadataField::SetStrValue(values) => {
                for column in values.iter_values() {
                    let column = column?;
                    set_values.push(
                        column
                            .values()
                            .iter()
                            .map(|v| v.value().into_owned())
                            .collect(),
                    );
                }
            }
            _ => {}
        }
    }
    Ok(Metadata {
        names,
        unsigned,
        charsets,
        enum_set_charsets,
        enum_values,
        set_values,
        primary_key,
    })
}

/// The declared byte length of a CHAR/BINARY column from its two metadata
/// bytes (real type and length, with the length's high bits folded into the
/// first byte for lengths over 255).
fn fixed_string_length(meta: &[u8]) -> u16 {
    match *meta {
        [byte0, byte1, ..] => {
            let high = if byte0 & 0x30 != 0x30 {
                (u16::from(byte0 & 0x30) ^ 0x30) << 4
            } else {
                0
            };
            high | u16::from(byte1)
        }
        _ => 0,
    }
}

/// Everything known about one column, for [`column_kind`].
struct ColumnFacts<'a> {
    column_type: Option<ColumnType>,
    raw_type: u8,
    type_meta: &'a [u8],
    /// Collation from the TABLE_MAP.
    collation: Option<u16>,
    /// The `information_schema` view of the column, if any.
    info: Option<&'a ColumnInfo>,
    /// ENUM/SET values from the TABLE_MAP.
    listed_values: Option<Vec<String>>,
}

/// The text encoding of a character column, or `None` for binary: the
/// TABLE_MAP collation first (it is as of the event), `information_schema`
/// when the collation is absent or unknown. With neither, UTF-8: decoding
/// is strict, so a wrong guess fails loudly instead of garbling.
fn text_encoding(collation: Option<u16>, info: Option<&ColumnInfo>) -> Option<TextEncoding> {
    let charset_name = info.and_then(|c| c.charset.as_deref());
    match (collation, charset_name) {
        (Some(id), Some(name)) => match encoding_of_collation(id) {
            Some(TextEncoding::Unsupported(_)) => encoding_of_charset_name(name),
            known => known,
        },
        (Some(id), None) => encoding_of_collation(id),
        (None, Some(name)) => encoding_of_charset_name(name),
        (None, None) => {
            // information_schema has no charset for binary columns.
            let binary = info.is_some_and(|c| {
                matches!(
                    c.data_type.as_str(),
                    "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob"
                )
            });
            (!binary).then_some(TextEncoding::Utf8)
        }
    }
}

/// Classifies a column for the decoder.
fn column_kind(facts: &ColumnFacts<'_>) -> ColumnKind {
    use ColumnType::*;
    let meta = |i: usize| facts.type_meta.get(i).copied().unwrap_or(0);
    let Some(ty) = facts.column_type else {
        return ColumnKind::Unsupported {
            type_name: format!("binlog type {}", facts.raw_type),
        };
    };
    match ty {
        MYSQL_TYPE_TINY => ColumnKind::Integer { bytes: 1 },
        MYSQL_TYPE_SHORT => ColumnKind::Integer { bytes: 2 },
        MYSQL_TYPE_INT24 => ColumnKind::Integer { bytes: 3 },
        MYSQL_TYPE_LONG => ColumnKind::Integer { bytes: 4 },
        MYSQL_TYPE_LONGLONG => ColumnKind::Integer { bytes: 8 },
        MYSQL_TYPE_FLOAT => ColumnKind::Float,
        MYSQL_TYPE_DOUBLE => ColumnKind::Double,
        MYSQL_TYPE_NEWDECIMAL => ColumnKind::Decimal {
            precision: meta(0),
            scale: meta(1),
        },
        MYSQL_TYPE_YEAR => ColumnKind::Year,
        MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => ColumnKind::Date,
        MYSQL_TYPE_DATETIME => ColumnKind::DateTime { fsp: 0 },
        MYSQL_TYPE_DATETIME2 => ColumnKind::DateTime { fsp: meta(0) },
        MYSQL_TYPE_TIMESTAMP => ColumnKind::Timestamp { fsp: 0 },
        MYSQL_TYPE_TIMESTAMP2 => ColumnKind::Timestamp { fsp: meta(0) },
        MYSQL_TYPE_TIME => ColumnKind::Time { fsp: 0 },
        MYSQL_TYPE_TIME2 => ColumnKind::Time { fsp: meta(0) },
        // Metadata: bits in the last byte, then whole bytes.
        MYSQL_TYPE_BIT => ColumnKind::Bit {
            bits: u16::from(meta(1)) * 8 + u16::from(meta(0)),
        },
        MYSQL_TYPE_JSON => ColumnKind::JsonBinary,
        MYSQL_TYPE_ENUM | MYSQL_TYPE_SET => {
            let values = facts
                .listed_values
                .clone()
                .or_else(|| facts.info.and_then(ColumnInfo::enum_or_set_values))
                .unwrap_or_default();
            if ty == MYSQL_TYPE_ENUM {
                ColumnKind::Enum { values }
            } else {
                ColumnKind::Set { values }
            }
        }
        MYSQL_TYPE_GEOMETRY => ColumnKind::Geometry,
        MYSQL_TYPE_STRING
        | MYSQL_TYPE_VARCHAR
        | MYSQL_TYPE_VAR_STRING
        | MYSQL_TYPE_BLOB
        | MYSQL_TYPE_TINY_BLOB
        | MYSQL_TYPE_MEDIUM_BLOB
        | MYSQL_TYPE_LONG_BLOB => match text_encoding(facts.collation, facts.info) {
            None if ty == MYSQL_TYPE_STRING => ColumnKind::FixedBinary {
                length: fixed_string_length(facts.type_meta),
            },
            None => ColumnKind::Binary,
            Some(_) if facts.info.is_some_and(|c| c.is_json) => ColumnKind::JsonText,
            Some(encoding) => ColumnKind::Text(encoding),
        },
        other => ColumnKind::Unsupported {
            type_name: format!("{other:?}"),
        },
    }
}

impl TableSchema {
    /// Builds the layout of the table a TABLE_MAP describes.
    ///
    /// Names, signedness, charsets, ENUM/SET values and the primary key come
    /// from the TABLE_MAP's optional metadata when present (it describes the
    /// table at this binlog position). `info` is consulted by column name
    /// for what the binlog cannot say (MariaDB JSON columns) and fills in
    /// whatever the metadata lacks. When the TABLE_MAP has no names, `info`
    /// supplies them by position; then its column count and types must
    /// agree with the binlog, or the result is a clear DDL-race error.
    ///
    /// On MariaDB pass `info` for any table with JSON columns: without it a
    /// JSON column decodes as its text.
    pub fn from_table_map(
        tme: &TableMapEvent<'_>,
        info: Option<&TableInfo>,
    ) -> Result<TableSchema, SchemaError> {
        let db = tme.database_name().into_owned();
        let table = tme.table_name().into_owned();
        let count = usize::try_from(tme.columns_count()).unwrap_or(usize::MAX);
        let types: Vec<(u8, Option<ColumnType>)> = (0..count)
            .map(|i| {
                let raw = tme
                    .get_raw_column_type(i)
                    .ok()
                    .flatten()
                    .map(|t| t as u8)
                    .unwrap_or(ColumnType::MYSQL_TYPE_UNKNOWN as u8);
                (raw, tme.get_column_type(i).ok().flatten())
            })
            .collect();
        let character_columns = types
            .iter()
            .filter(|(_, t)| t.is_some_and(|t| t.is_character_type()))
            .count();
        let enum_set_columns = types
            .iter()
            .filter(|(_, t)| t.is_some_and(|t| t.is_enum_or_set_type()))
            .count();
        let qualified = format!("{db}.{table}");
        let meta = read_metadata(tme, character_columns, enum_set_columns).map_err(|source| {
            SchemaError::Metadata {
                table: qualified.clone(),
                source,
            }
        })?;

        let from_metadata = !meta.names.is_empty();
        let names: Vec<String> = if from_metadata {
            meta.names.clone()
        } else if let Some(info) = info {
            if info.columns.len() != count {
                return Err(SchemaError::ColumnCountMismatch {
                    table: qualified,
                    binlog: count,
                    info: info.columns.len(),
                });
            }
            info.columns.iter().map(|c| c.name.clone()).collect()
        } else {
            return Err(SchemaError::NoColumnNames { table: qualified });
        };
        if names.len() != count {
            // The TABLE_MAP contradicts itself; treat it as malformed.
            return Err(SchemaError::Metadata {
                table: qualified,
                source: io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} column names for {count} columns", names.len()),
                ),
            });
        }

        let nulls = tme.null_bitmask();
        let mut numeric = 0;
        let mut character = 0;
        let mut enum_set = 0;
        let mut enums = 0;
        let mut sets = 0;
        let mut columns = Vec::with_capacity(count);
        for (i, (name, &(raw_type, column_type))) in names.iter().zip(&types).enumerate() {
            let col_info = info.and_then(|info| {
                if from_metadata {
                    info.column(name)
                } else {
                    info.columns.get(i)
                }
            });
            if let (false, Some(ty), Some(ci)) = (from_metadata, column_type, col_info)
                && !info_type_compatible(ty, &ci.data_type)
            {
                return Err(SchemaError::TypeMismatch {
                    table: qualified,
                    index: i,
                    column: name.clone(),
                    binlog: format!("{ty:?}"),
                    info: ci.data_type.clone(),
                });
            }
            let type_meta = tme.get_column_metadata(i).unwrap_or_default().to_vec();

            let mut unsigned = col_info.is_some_and(ColumnInfo::unsigned);
            if column_type.is_some_and(|t| t.is_numeric_type()) {
                if let Some(&flag) = meta.unsigned.get(numeric) {
                    unsigned = flag;
                }
                numeric += 1;
            }
            let mut collation = None;
            if column_type.is_some_and(|t| t.is_character_type()) {
                collation = meta.charsets.get(character).copied();
                character += 1;
            } else if column_type.is_some_and(|t| t.is_enum_or_set_type()) {
                collation = meta.enum_set_charsets.get(enum_set).copied();
                enum_set += 1;
            }

            let listed_values = match column_type {
                Some(ColumnType::MYSQL_TYPE_ENUM) => {
                    enums += 1;
                    meta.enum_values.get(enums - 1).cloned()
                }
                Some(ColumnType::MYSQL_TYPE_SET) => {
                    sets += 1;
                    meta.set_values.get(sets - 1).cloned()
                }
                _ => None,
            };
            let kind = column_kind(&ColumnFacts {
                column_type,
                raw_type,
                type_meta: &type_meta,
                collation,
                info: col_info,
                listed_values,
            });
            columns.push(ColumnSchema {
                name: name.clone(),
                column_type,
                raw_type,
                type_meta,
                unsigned,
                nullable: nulls.get(i).is_some_and(|b| *b),
                collation,
                kind,
            });
        }

        let primary_key = if from_metadata {
            meta.primary_key
                .iter()
                .map(|&index| {
                    usize::try_from(index)
                        .ok()
                        .and_then(|i| names.get(i))
                        .cloned()
                        .ok_or_else(|| SchemaError::BadPrimaryKey {
                            table: qualified.clone(),
                            index,
                            count,
                        })
                })
                .collect::<Result<Vec<_>, _>>()?
        } else {
            info.map(|i| i.primary_key.clone()).unwrap_or_default()
        };

        Ok(TableSchema {
            db,
            table,
            table_id: tme.table_id(),
            columns,
            primary_key,
        })
    }

    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&ColumnSchema> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// `information_schema` layouts by (db, table), so each table is queried
/// once until a DDL statement touches it.
#[derive(Debug, Default)]
pub struct SchemaCache {
    tables: HashMap<(String, String), TableInfo>,
}

impl SchemaCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The cached layout of `db.table`.
    pub fn get(&self, db: &str, table: &str) -> Option<&TableInfo> {
        self.tables.get(&(db.to_string(), table.to_string()))
    }

    /// Caches a layout, replacing any previous one for the same table.
    pub fn insert(&mut self, info: TableInfo) {
        self.tables
            .insert((info.db.clone(), info.table.clone()), info);
    }

    /// The cached layout of `db.table`, loading it on a miss.
    pub async fn get_or_load(
        &mut self,
        conn: &mut mysql_async::Conn,
        db: &str,
        table: &str,
    ) -> Result<&TableInfo, SchemaError> {
        let key = (db.to_string(), table.to_string());
        if !self.tables.contains_key(&key) {
            let info = load_table_info(conn, db, table).await?;
            self.tables.insert(key.clone(), info);
        }
        self.tables
            .get(&key)
            .ok_or_else(|| SchemaError::TableNotFound {
                table: format!("{db}.{table}"),
            })
    }

    /// Forgets `db.table`; returns whether it was cached.
    pub fn invalidate(&mut self, db: &str, table: &str) -> bool {
        self.tables
            .remove(&(db.to_string(), table.to_string()))
            .is_some()
    }

    /// Forgets every table of `db`.
    pub fn invalidate_database(&mut self, db: &str) {
        self.tables.retain(|(d, _), _| d != db);
    }

    /// Forgets everything.
    pub fn invalidate_all(&mut self) {
        self.tables.clear();
    }

    /// Forgets what a DDL statement may have changed.
    pub fn apply(&mut self, effect: &DdlEffect) {
        match effect {
            DdlEffect::None | DdlEffect::Temporary => {}
            DdlEffect::Tables { tables, .. } => {
                for t in tables {
                    self.invalidate(&t.db, &t.table);
                }
            }
            DdlEffect::Database(db) => self.invalidate_database(db),
            DdlEffect::All => self.invalidate_all(),
        }
    }

    /// Number of cached tables.
    pub fn len(&self) -> usize {
        self.tables.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ddl::ddl_touched_tables;

    #[test]
    fn cache_invalidates_by_effect() {
        let info = |db: &str, table: &str| TableInfo {
            db: db.into(),
            table: table.into(),
            columns: vec![],
            primary_key: vec![],
        };
        let mut cache = SchemaCache::new();
        for (d, n) in [("a", "x"), ("a", "y"), ("b", "x")] {
            cache.insert(info(d, n));
        }
        assert_eq!(cache.len(), 3);
        cache.apply(&ddl_touched_tables("a", "ALTER TABLE x ADD c INT"));
        assert!(cache.get("a", "x").is_none());
        assert!(cache.get("a", "y").is_some());
        cache.apply(&DdlEffect::Temporary);
        cache.apply(&DdlEffect::None);
        assert_eq!(cache.len(), 2);
        cache.apply(&DdlEffect::Database("a".into()));
        assert_eq!(cache.len(), 1);
        assert!(cache.invalidate("b", "x"));
        assert!(!cache.invalidate("b", "x"));
        cache.insert(info("c", "z"));
        cache.apply(&DdlEffect::All);
        assert!(cache.is_empty());
    }

    #[test]
    fn column_info_reads_unsigned_and_enum_values() {
        let col = |column_type: &str| ColumnInfo {
            name: "c".into(),
            data_type: "x".into(),
            column_type: column_type.into(),
            charset: None,
            nullable: true,
            is_json: false,
        };
        assert!(col("bigint(20) unsigned").unsigned());
        assert!(col("int(10) unsigned zerofill").unsigned());
        assert!(!col("int(11)").unsigned());
        assert_eq!(
            col("enum('pending','it''s','a,b','x\\\\y')").enum_or_set_values(),
            Some(vec![
                "pending".into(),
                "it's".into(),
                "a,b".into(),
                "x\\y".into()
            ])
        );
        assert_eq!(
            col("set('a','b')").enum_or_set_values(),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(col("set('a'").enum_or_set_values(), None);
        assert_eq!(col("varchar(3)").enum_or_set_values(), None);
    }

    #[test]
    fn json_checks_are_matched_by_column() {
        let checks = vec![
            "`attributes` is null or json_valid(`attributes`)".to_string(),
            "JSON_VALID(`Doc`)".to_string(),
            "`price` >= 0".to_string(),
        ];
        assert!(json_checked(&checks, "attributes"));
        assert!(json_checked(&checks, "Doc"));
        assert!(!json_checked(&checks, "price"));
        assert!(!json_checked(&checks, "attr"));
    }

    #[test]
    fn collations_map_to_encodings() {
        assert_eq!(encoding_of_collation(63), None);
        assert_eq!(encoding_of_collation(45), Some(TextEncoding::Utf8));
        assert_eq!(encoding_of_collation(224), Some(TextEncoding::Utf8));
        assert_eq!(encoding_of_collation(255), Some(TextEncoding::Utf8));
        assert_eq!(encoding_of_collation(2304), Some(TextEncoding::Utf8));
        assert_eq!(encoding_of_collation(33), Some(TextEncoding::Utf8));
        assert_eq!(encoding_of_collation(8), Some(TextEncoding::Latin1));
        assert_eq!(encoding_of_collation(11), Some(TextEncoding::Ascii));
        assert!(matches!(
            encoding_of_collation(35),
            Some(TextEncoding::Unsupported(_))
        ));
        assert!(
            matches!(encoding_of_collation(2600), Some(TextEncoding::Unsupported(s)) if s == "ucs2")
        );
        assert_eq!(
            encoding_of_charset_name("UTF8MB4"),
            Some(TextEncoding::Utf8)
        );
        assert_eq!(encoding_of_charset_name("binary"), None);
    }

    #[test]
    fn fixed_string_lengths_fold_high_bits() {
        assert_eq!(fixed_string_length(&[0xfe, 4]), 4);
        // CHAR(255) in utf8mb4 is 1020 bytes: 0x3fc, high bits 0x300.
        assert_eq!(fixed_string_length(&[0xce, 0xfc]), 1020);
        assert_eq!(fixed_string_length(&[]), 0);
    }

    #[test]
    fn info_types_are_checked_against_binlog_types() {
        assert!(info_type_compatible(
            ColumnType::MYSQL_TYPE_LONGLONG,
            "bigint"
        ));
        assert!(!info_type_compatible(
            ColumnType::MYSQL_TYPE_LONGLONG,
            "varchar"
        ));
        assert!(info_type_compatible(
            ColumnType::MYSQL_TYPE_BLOB,
            "longtext"
        ));
        assert!(info_type_compatible(ColumnType::MYSQL_TYPE_STRING, "uuid"));
        assert!(!info_type_compatible(ColumnType::MYSQL_TYPE_STRING, "int"));
    }
}

/// TABLE_MAP events built from bytes, for unit tests here and in `decode`.
#[cfg(test)]
pub(crate) mod fixture {
    use mysql_async::binlog::BinlogVersion;
    use mysql_async::binlog::events::{Event, FormatDescriptionEvent, TableMapEvent};

    /// One column: binlog type, type metadata, nullable.
    pub(crate) struct Col(pub u8, pub &'static [u8], pub bool);

    fn lenenc(out: &mut Vec<u8>, n: usize) {
        assert!(n < 251, "fixture lengths stay small");
        out.push(n as u8);
    }

    /// A length-prefixed string list, as COLUMN_NAME and friends use.
    pub(crate) fn strings(values: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for v in values {
            lenenc(&mut out, v.len());
            out.extend_from_slice(v.as_bytes());
        }
        out
    }

    /// ENUM_STR_VALUE / SET_STR_VALUE: per column, a count then strings.
    pub(crate) fn value_lists(columns: &[&[&str]]) -> Vec<u8> {
        let mut out = Vec::new();
        for values in columns {
            lenenc(&mut out, values.len());
            out.extend(strings(values));
        }
        out
    }

    /// Builds a TABLE_MAP for `db.table` with optional-metadata TLVs.
    pub(crate) fn table_map(
        db: &str,
        table: &str,
        cols: &[Col],
        tlvs: &[(u8, Vec<u8>)],
    ) -> TableMapEvent<'static> {
        let mut body = Vec::new();
        body.extend_from_slice(&[42, 0, 0, 0, 0, 0]); // table id
        body.extend_from_slice(&[1, 0]); // flags
        for name in [db, table] {
            body.push(name.len() as u8);
            body.extend_from_slice(name.as_bytes());
            body.push(0);
        }
        lenenc(&mut body, cols.len());
        body.extend(cols.iter().map(|c| c.0));
        let meta: Vec<u8> = cols.iter().flat_map(|c| c.1.iter().copied()).collect();
        lenenc(&mut body, meta.len());
        body.extend_from_slice(&meta);
        let mut nulls = vec![0u8; cols.len().div_ceil(8)];
        for (i, c) in cols.iter().enumerate() {
            if c.2 {
                nulls[i / 8] |= 1 << (i % 8);
            }
        }
        body.extend_from_slice(&nulls);
        for (ty, value) in tlvs {
            body.push(*ty);
            lenenc(&mut body, value.len());
            body.extend_from_slice(value);
        }
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.push(19); // TABLE_MAP_EVENT
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&(19 + body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&0u16.to_le_bytes());
        bytes.extend_from_slice(&body);
        let fde = FormatDescriptionEvent::new(BinlogVersion::Version4);
        let event = Event::read(&fde, &bytes[..]).unwrap();
        event
            .read_event::<TableMapEvent<'_>>()
            .unwrap()
            .into_owned()
    }
}

#[cfg(test)]
mod table_map_tests {
    use super::fixture::{Col, strings, table_map, value_lists};
    use super::*;

    // Binlog type codes.
    const LONGLONG: u8 = 8;
    const NEWDECIMAL: u8 = 246;
    const VARCHAR: u8 = 15;
    const STRING: u8 = 254;
    const BLOB: u8 = 252;
    const TIME2: u8 = 19;
    const YEAR: u8 = 13;
    const LONG: u8 = 3;

    // Optional metadata field types.
    const SIGNEDNESS: u8 = 1;
    const DEFAULT_CHARSET: u8 = 2;
    const COLUMN_NAME: u8 = 4;
    const ENUM_STR_VALUE: u8 = 6;
    const SIMPLE_PRIMARY_KEY: u8 = 8;
    const ENUM_AND_SET_DEFAULT_CHARSET: u8 = 10;

    /// id BIGINT UNSIGNED, amount DECIMAL(14,2), name VARCHAR(64),
    /// status ENUM, attrs LONGTEXT, tm TIME(2), bin BINARY(4), y YEAR,
    /// n INT UNSIGNED.
    fn columns() -> Vec<Col> {
        vec![
            Col(LONGLONG, &[], false),
            Col(NEWDECIMAL, &[14, 2], false),
            Col(VARCHAR, &[0x00, 0x01], true),
            Col(STRING, &[247, 1], false),
            Col(BLOB, &[4], true),
            Col(TIME2, &[2], true),
            Col(STRING, &[0xfe, 4], true),
            Col(YEAR, &[], true),
            Col(LONG, &[], true),
        ]
    }

    const NAMES: [&str; 9] = [
        "id", "amount", "name", "status", "attrs", "tm", "bin", "y", "n",
    ];

    fn full_metadata() -> Vec<(u8, Vec<u8>)> {
        vec![
            // Numeric columns: id, amount, y, n -> unsigned, signed, unsigned, unsigned.
            (SIGNEDNESS, vec![0b1011_0000]),
            // Character columns name, attrs, bin: default 224, bin (2nd index) binary.
            (DEFAULT_CHARSET, vec![224, 2, 63]),
            (COLUMN_NAME, strings(&NAMES)),
            (ENUM_STR_VALUE, value_lists(&[&["pending", "paid"]])),
            (SIMPLE_PRIMARY_KEY, vec![0]),
            (ENUM_AND_SET_DEFAULT_CHARSET, vec![224]),
        ]
    }

    fn column_info(
        name: &str,
        data_type: &str,
        column_type: &str,
        charset: Option<&str>,
    ) -> ColumnInfo {
        ColumnInfo {
            name: name.into(),
            data_type: data_type.into(),
            column_type: column_type.into(),
            charset: charset.map(str::to_string),
            nullable: true,
            is_json: false,
        }
    }

    fn info() -> TableInfo {
        let mut attrs = column_info("attrs", "longtext", "longtext", Some("utf8mb4"));
        attrs.is_json = true;
        TableInfo {
            db: "shop".into(),
            table: "orders".into(),
            columns: vec![
                column_info("id", "bigint", "bigint(20) unsigned", None),
                column_info("amount", "decimal", "decimal(14,2)", None),
                column_info("name", "varchar", "varchar(64)", Some("utf8mb4")),
                column_info("status", "enum", "enum('pending','paid')", Some("utf8mb4")),
                attrs,
                column_info("tm", "time", "time(2)", None),
                column_info("bin", "binary", "binary(4)", None),
                column_info("y", "year", "year(4)", None),
                column_info("n", "int", "int(10) unsigned", None),
            ],
            primary_key: vec!["id".into()],
        }
    }

    fn expected_kinds(json: bool) -> Vec<ColumnKind> {
        vec![
            ColumnKind::Integer { bytes: 8 },
            ColumnKind::Decimal {
                precision: 14,
                scale: 2,
            },
            ColumnKind::Text(TextEncoding::Utf8),
            ColumnKind::Enum {
                values: vec!["pending".into(), "paid".into()],
            },
            if json {
                ColumnKind::JsonText
            } else {
                ColumnKind::Text(TextEncoding::Utf8)
            },
            ColumnKind::Time { fsp: 2 },
            ColumnKind::FixedBinary { length: 4 },
            ColumnKind::Year,
            ColumnKind::Integer { bytes: 4 },
        ]
    }

    fn check(schema: &TableSchema, json: bool) {
        assert_eq!(
            (schema.db.as_str(), schema.table.as_str()),
            ("shop", "orders")
        );
        assert_eq!(schema.table_id, 42);
        let names: Vec<&str> = schema.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, NAMES);
        let kinds: Vec<ColumnKind> = schema.columns.iter().map(|c| c.kind.clone()).collect();
        assert_eq!(kinds, expected_kinds(json));
        // Signedness matters for integers only (MariaDB also flags YEAR).
        let unsigned: Vec<bool> = schema
            .columns
            .iter()
            .map(|c| c.unsigned && matches!(c.kind, ColumnKind::Integer { .. }))
            .collect();
        assert_eq!(
            unsigned,
            [true, false, false, false, false, false, false, false, true]
        );
        let nullable: Vec<bool> = schema.columns.iter().map(|c| c.nullable).collect();
        assert_eq!(
            nullable,
            [false, false, true, false, true, true, true, true, true]
        );
        assert_eq!(schema.primary_key, ["id"]);
        assert_eq!(schema.column("attrs").unwrap().is_json(), json);
    }

    #[test]
    fn full_metadata_alone_describes_the_table() {
        let tme = table_map("shop", "orders", &columns(), &full_metadata());
        let schema = TableSchema::from_table_map(&tme, None).unwrap();
        check(&schema, false);
        assert_eq!(schema.column("name").unwrap().collation, Some(224));
        assert_eq!(schema.column("bin").unwrap().collation, Some(63));
        assert_eq!(schema.column("status").unwrap().collation, Some(224));
    }

    #[test]
    fn full_metadata_plus_info_adds_json() {
        let tme = table_map("shop", "orders", &columns(), &full_metadata());
        check(
            &TableSchema::from_table_map(&tme, Some(&info())).unwrap(),
            true,
        );
        // A stale layout (the table changed since) is used by name only.
        let mut stale = info();
        stale.columns.remove(1);
        stale
            .columns
            .push(column_info("later", "int", "int(11)", None));
        check(
            &TableSchema::from_table_map(&tme, Some(&stale)).unwrap(),
            true,
        );
    }

    #[test]
    fn without_metadata_info_supplies_everything() {
        let tme = table_map("shop", "orders", &columns(), &[]);
        check(
            &TableSchema::from_table_map(&tme, Some(&info())).unwrap(),
            true,
        );
    }

    #[test]
    fn without_names_anywhere_it_is_an_error() {
        let tme = table_map("shop", "orders", &columns(), &[]);
        let err = TableSchema::from_table_map(&tme, None).unwrap_err();
        assert!(matches!(err, SchemaError::NoColumnNames { .. }), "{err}");
        assert!(err.to_string().contains("shop.orders"), "{err}");
    }

    #[test]
    fn a_ddl_race_is_reported_not_guessed() {
        let tme = table_map("shop", "orders", &columns(), &[]);
        let mut fewer = info();
        fewer.columns.pop();
        let err = TableSchema::from_table_map(&tme, Some(&fewer)).unwrap_err();
        assert!(
            matches!(
                err,
                SchemaError::ColumnCountMismatch {
                    binlog: 9,
                    info: 8,
                    ..
                }
            ),
            "{err}"
        );
        let mut retyped = info();
        retyped.columns[1] = column_info("amount", "varchar", "varchar(10)", Some("utf8mb4"));
        let err = TableSchema::from_table_map(&tme, Some(&retyped)).unwrap_err();
        assert!(
            matches!(err, SchemaError::TypeMismatch { index: 1, ref column, .. } if column == "amount"),
            "{err}"
        );
    }

    #[test]
    fn a_primary_key_past_the_columns_is_malformed() {
        let mut tlvs = full_metadata();
        tlvs.retain(|(t, _)| *t != SIMPLE_PRIMARY_KEY);
        tlvs.push((SIMPLE_PRIMARY_KEY, vec![9]));
        let tme = table_map("shop", "orders", &columns(), &tlvs);
        let err = TableSchema::from_table_map(&tme, None).unwrap_err();
        assert!(
            matches!(err, SchemaError::BadPrimaryKey { index: 9, .. }),
            "{err}"
        );
    }

    #[test]
    fn unknown_binlog_types_become_unsupported_columns() {
        let tme = table_map(
            "shop",
            "t",
            &[Col(LONGLONG, &[], false), Col(242, &[4], true)],
            &[(COLUMN_NAME, strings(&["id", "embedding"]))],
        );
        let schema = TableSchema::from_table_map(&tme, None).unwrap();
        assert!(matches!(
            &schema.columns[1].kind,
            ColumnKind::Unsupported { type_name } if type_name.contains("VECTOR")
        ));
    }
}
