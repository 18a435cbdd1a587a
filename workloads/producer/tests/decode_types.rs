//! Decodes every column type paystream cares about from the real local
//! MariaDB binlog, field by field: a fresh table with one column per type,
//! rows with edge values (NULLs, extremes, fractions, unicode, JSON, zero
//! dates), an update, a delete, and a DDL (ADD, DROP and RENAME COLUMN) in
//! the middle of the stream followed by another insert. Along the way every
//! event's CRC32 is verified and every MariaDB GTID event decoded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::StreamExt;
use mysql_async::binlog::events::{EventData, RowsEventData};
use mysql_async::prelude::*;
use mysql_async::{BinlogStreamRequest, Conn, OptsBuilder};
use paystream_core::envelope::Row;
use paystream_producer::ddl::{DdlEffect, DdlOp, ddl_touched_tables};
use paystream_producer::decode::decode_rows_event;
use paystream_producer::mariadb_events::{
    ChecksumStatus, GTID_EVENT, GTID_LIST_EVENT, gtid_event_of, gtid_list_of, rotate_file_name,
    verify_checksum,
};
use paystream_producer::schema::{
    ColumnKind, SchemaCache, TableSchema, TextEncoding, load_table_info,
};
use paystream_testkit::{Credentials, Stack, unique_name, wait_for};
use serde_json::{Value, json};

fn opts(stack: &Stack, creds: &Credentials) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(stack.mysql_port)
        .user(Some(creds.user.clone()))
        .pass(Some(creds.password.clone()))
        .prefer_socket(false)
}

/// One decoded row change of the test table.
#[derive(Debug)]
struct Change {
    op: &'static str,
    before: Option<Row>,
    after: Option<Row>,
}

const COLUMNS: &str = "
    id     BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    ti     TINYINT NULL, ti_u TINYINT UNSIGNED NULL,
    si     SMALLINT NULL, si_u SMALLINT UNSIGNED NULL, mi MEDIUMINT NULL, miu MEDIUMINT UNSIGNED NULL,
    i      INT NULL, y YEAR NULL, iu INT UNSIGNED NULL, bi BIGINT NULL,
    qty    INT UNSIGNED NULL,
    f      FLOAT NULL, d DOUBLE NULL,
    amount DECIMAL(14,2) NULL, small DECIMAL(5,4) NULL, big DECIMAL(30,10) NULL,
    flag   BOOLEAN NULL,
    currency CHAR(3) NULL, name VARCHAR(64) NULL, descr TEXT NULL,
    latin  VARCHAR(16) CHARACTER SET latin1 NULL,
    bin    BINARY(4) NULL, vbin VARBINARY(16) NULL, blb BLOB NULL,
    status ENUM('pending','paid','cancelled','refunded') NULL, tags SET('a','b','c') NULL,
    dt     DATE NULL, dtm DATETIME(6) NULL, dtm0 DATETIME NULL, ts TIMESTAMP(3) NULL,
    tm     TIME NULL, tm6 TIME(6) NULL, tm2 TIME(2) NULL,
    bits   BIT(10) NULL, b1 BIT(1) NULL,
    attrs  JSON NULL";

const INSERT_COLUMNS: &str = "id, ti, ti_u, si, si_u, mi, miu, i, y, iu, bi, qty, f, d, amount, \
    small, big, flag, currency, name, descr, latin, bin, vbin, blb, status, tags, dt, dtm, dtm0, \
    ts, tm, tm6, tm2, bits, b1, attrs";

fn row_max() -> Value {
    json!({
        "id": u64::MAX, "ti": -128, "ti_u": 255,
        "si": -32768, "si_u": 65535, "mi": -8_388_608, "miu": 16_777_215,
        "i": -2_147_483_648i64, "y": 2155, "iu": 4_294_967_295u32, "bi": i64::MIN,
        "qty": 3,
        "f": 0.1, "d": -2.25e-300,
        "amount": "12.30", "small": "-0.0500", "big": "12345678901234567890.0123456789",
        "flag": 1,
        "currency": "EUR", "name": "zażółć 😀 \"q\"", "descr": "", "latin": "café",
        "bin": "AAECAw==", "vbin": "3q2+7w==", "blb": "AP8=",
        "status": "paid", "tags": "a,c",
        "dt": "2024-05-01", "dtm": "2024-05-01T12:34:56.123456Z", "dtm0": "1000-01-01T00:00:00Z",
        "ts": "2024-05-01T12:34:56.789Z",
        "tm": "-838:59:59", "tm6": "12:34:56.000001", "tm2": "-00:00:01.50",
        "bits": 513, "b1": 1,
        "attrs": {"k": [1, 2, {"n": null}], "s": "ü", "big": 12345678901234567890u64}
    })
}

fn row_nulls() -> Value {
    let mut row = serde_json::Map::new();
    for name in INSERT_COLUMNS.split(", ") {
        row.insert(name.to_string(), Value::Null);
    }
    row.insert("id".into(), json!(1));
    Value::Object(row)
}

fn row_edge() -> Value {
    json!({
        "id": 2, "ti": 0, "ti_u": 0, "si": 0, "si_u": 1, "mi": -1, "miu": 0,
        "i": 0, "y": 0, "iu": 0, "bi": -1, "qty": 1,
        "f": -0.0, "d": 1.0e300,
        "amount": "-0.01", "small": "0.0000", "big": "-0.0000000001",
        "flag": 0,
        "currency": "US", "name": "", "descr": "ten\nlines\t\u{0}", "latin": "",
        "bin": "QQAAAA==", "vbin": "", "blb": "",
        "status": "", "tags": "",
        "dt": null, "dtm": null, "dtm0": null, "ts": null,
        "tm": "00:00:00", "tm6": "-00:00:00.000001", "tm2": "00:00:00.01",
        "bits": 0, "b1": 0,
        "attrs": []
    })
}

/// Reads and decodes the binlog until `want` changes of `table` arrived.
struct Reader {
    stream: mysql_async::BinlogStream,
    lookup: Conn,
    cache: SchemaCache,
    table: String,
    file: String,
    start_pos: u64,
    verified: usize,
    gtids: Vec<String>,
    ddl: Vec<DdlEffect>,
    schemas: Vec<TableSchema>,
}

impl Reader {
    async fn read_changes(&mut self, want: usize) -> Vec<Change> {
        let mut changes = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while changes.len() < want {
            let event = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("binlog events before the deadline")
                .expect("stream open")
                .expect("event reads");
            match verify_checksum(&event).expect("checksum matches") {
                ChecksumStatus::Verified => self.verified += 1,
                ChecksumStatus::NotChecksummed => {
                    // Only the artificial ROTATE precedes the FDE.
                    let (name, pos) = rotate_file_name(&event).expect("a ROTATE");
                    assert_eq!(name, self.file, "CRC stripped from the file name");
                    assert_eq!(pos, self.start_pos, "the requested position");
                }
            }
            if event.header().event_type_raw() == GTID_EVENT {
                let gtid = gtid_event_of(&event).unwrap().unwrap();
                assert_eq!(gtid.gtid.server_id, event.header().server_id());
                self.gtids.push(gtid.gtid.to_string());
            }
            match event.read_data().unwrap() {
                Some(EventData::QueryEvent(q)) if q.query().contains(self.table.as_str()) => {
                    let effect = ddl_touched_tables(&q.schema(), &q.query());
                    self.cache.apply(&effect);
                    self.ddl.push(effect);
                }
                Some(EventData::RowsEvent(rows)) => {
                    let tme = self
                        .stream
                        .get_tme(rows.table_id())
                        .expect("TABLE_MAP seen");
                    if tme.table_name() != self.table.as_str() {
                        continue;
                    }
                    let (db, table) = (tme.database_name().into_owned(), self.table.clone());
                    let info = self
                        .cache
                        .get_or_load(&mut self.lookup, &db, &table)
                        .await
                        .unwrap();
                    let schema = TableSchema::from_table_map(tme, Some(info)).unwrap();
                    let op =
                        match rows {
                            RowsEventData::WriteRowsEvent(_)
                            | RowsEventData::WriteRowsEventV1(_) => "c",
                            RowsEventData::UpdateRowsEvent(_)
                            | RowsEventData::UpdateRowsEventV1(_) => "u",
                            _ => "d",
                        };
                    for (before, after) in decode_rows_event(&schema, &rows, tme).unwrap() {
                        changes.push(Change { op, before, after });
                    }
                    self.schemas.push(schema);
                }
                _ => {}
            }
        }
        changes
    }
}

fn assert_row(got: &Option<Row>, want: &Value) {
    let got = got.as_ref().expect("row image present");
    let want = want.as_object().unwrap();
    let got_names: Vec<&String> = got.keys().collect();
    let want_names: Vec<&String> = want.keys().collect();
    let mut sorted_got = got_names.clone();
    sorted_got.sort();
    let mut sorted_want = want_names.clone();
    sorted_want.sort();
    assert_eq!(sorted_got, sorted_want, "column names");
    for (name, want_value) in want {
        let got_value = &got[name];
        // -0.0 == 0.0 for serde_json numbers only through f64 comparison.
        if let (Some(g), Some(w)) = (got_value.as_f64(), want_value.as_f64())
            && want_value.is_f64()
        {
            assert_eq!(g, w, "column {name}");
        } else {
            assert_eq!(got_value, want_value, "column {name}");
        }
    }
}

#[tokio::test]
async fn decodes_every_column_type_from_the_mariadb_binlog() {
    let stack = Stack::from_env();
    let mut admin = Conn::new(opts(&stack, &stack.admin)).await.unwrap();
    // Zero dates and the invalid-ENUM index need a permissive sql_mode;
    // TIMESTAMP literals are read in the session zone, so make it UTC.
    admin
        .query_drop("SET SESSION sql_mode = '', time_zone = '+00:00'")
        .await
        .unwrap();
    let (file, pos): (String, u64) = {
        let row: mysql_async::Row = admin
            .query_first("SHOW MASTER STATUS")
            .await
            .unwrap()
            .unwrap();
        (row.get(0).unwrap(), row.get(1).unwrap())
    };

    let mut cdc = Conn::new(opts(&stack, &stack.cdc)).await.unwrap();
    cdc.query_drop("SET @mariadb_slave_capability=4")
        .await
        .unwrap();
    let stream = cdc
        .get_binlog_stream(
            BinlogStreamRequest::new(4_200_000 + std::process::id() % 1000)
                .with_filename(file.as_bytes())
                .with_pos(pos),
        )
        .await
        .unwrap();
    let table = unique_name("decode_types");
    let mut reader = Reader {
        stream,
        lookup: Conn::new(opts(&stack, &stack.cdc)).await.unwrap(),
        cache: SchemaCache::new(),
        table: table.clone(),
        file,
        start_pos: pos,
        verified: 0,
        gtids: Vec::new(),
        ddl: Vec::new(),
        schemas: Vec::new(),
    };

    admin
        .query_drop(format!(
            "CREATE TABLE payments.{table} ({COLUMNS}) DEFAULT CHARSET=utf8mb4"
        ))
        .await
        .unwrap();
    let insert = format!("INSERT INTO payments.{table} ({INSERT_COLUMNS}) VALUES ");
    admin
        .query_drop(format!(
            "{insert} (18446744073709551615, -128, 255, -32768, 65535, -8388608, 16777215, \
             -2147483648, 2155, 4294967295, -9223372036854775808, 3, 0.1, -2.25e-300, \
             12.30, -0.05, 12345678901234567890.0123456789, TRUE, 'EUR', 'zażółć 😀 \"q\"', '', \
             'café', 0x00010203, 0xDEADBEEF, 0x00FF, 'paid', 'c,a', '2024-05-01', \
             '2024-05-01 12:34:56.123456', '1000-01-01 00:00:00', '2024-05-01 12:34:56.789', \
             '-838:59:59', '12:34:56.000001', '-00:00:01.50', b'1000000001', b'1', \
             '{{\"k\": [1, 2, {{\"n\": null}}], \"s\": \"ü\", \"big\": 12345678901234567890}}')"
        ))
        .await
        .unwrap();
    admin
        .query_drop(format!("INSERT INTO payments.{table} (id) VALUES (1)"))
        .await
        .unwrap();
    admin
        .query_drop(format!(
            "{insert} (2, 0, 0, 0, 1, -1, 0, 0, 0, 0, -1, 1, -0.0, 1e300, -0.01, 0, \
             -0.0000000001, FALSE, 'US ', '', 'ten\\nlines\\t\\0', '', 'A', '', '', 'bogus', '', \
             '0000-00-00', '0000-00-00 00:00:00', '0000-00-00 00:00:00', '0000-00-00 00:00:00', \
             '00:00:00', '-00:00:00.000001', '00:00:00.01', 0, b'0', '[]')"
        ))
        .await
        .unwrap();
    admin
        .query_drop(format!(
            "UPDATE payments.{table} SET name = 'updated', amount = 99.99, \
             attrs = '[1, \"two\"]' WHERE id = 2"
        ))
        .await
        .unwrap();
    admin
        .query_drop(format!("DELETE FROM payments.{table} WHERE id = 1"))
        .await
        .unwrap();

    let changes = reader.read_changes(5).await;
    assert_eq!(
        changes.iter().map(|c| c.op).collect::<Vec<_>>(),
        ["c", "c", "c", "u", "d"]
    );
    assert_row(&changes[0].after, &row_max());
    assert_row(&changes[1].after, &row_nulls());
    assert_row(&changes[2].after, &row_edge());
    assert!(changes[0].before.is_none());
    let mut updated = row_edge();
    updated["name"] = json!("updated");
    updated["amount"] = json!("99.99");
    updated["attrs"] = json!([1, "two"]);
    assert_row(&changes[3].before, &row_edge());
    assert_row(&changes[3].after, &updated);
    assert_row(&changes[4].before, &row_nulls());
    assert!(changes[4].after.is_none());

    // The layout came from the TABLE_MAP (names, PK, signedness, ENUM/SET)
    // plus information_schema (JSON).
    let schema = reader.schemas.first().unwrap();
    assert_eq!(schema.primary_key, ["id"]);
    let kind = |name: &str| schema.column(name).unwrap().kind.clone();
    assert_eq!(kind("attrs"), ColumnKind::JsonText);
    assert_eq!(kind("flag"), ColumnKind::Integer { bytes: 1 });
    assert_eq!(kind("latin"), ColumnKind::Text(TextEncoding::Latin1));
    assert_eq!(kind("blb"), ColumnKind::Binary);
    assert_eq!(kind("tm2"), ColumnKind::Time { fsp: 2 });
    assert!(schema.column("iu").unwrap().unsigned && !schema.column("i").unwrap().unsigned);
    assert!(!schema.column("id").unwrap().nullable && schema.column("ti").unwrap().nullable);
    // Without information_schema, MariaDB's JSON is only text.
    let tme_schema =
        TableSchema::from_table_map(reader.stream.get_tme(schema.table_id).unwrap(), None).unwrap();
    assert_eq!(
        tme_schema.column("attrs").unwrap().kind,
        ColumnKind::Text(TextEncoding::Utf8)
    );

    // DDL mid-stream: the cache forgets the table and the next TABLE_MAP
    // carries the new layout.
    admin
        .query_drop(format!(
            "ALTER TABLE payments.{table} ADD COLUMN extra VARCHAR(8) NOT NULL DEFAULT 'x', \
             DROP COLUMN descr, RENAME COLUMN name TO title"
        ))
        .await
        .unwrap();
    admin
        .query_drop(format!(
            "INSERT INTO payments.{table} (id, title, extra, attrs) VALUES (3, 'after ddl', 'new', '{{}}')"
        ))
        .await
        .unwrap();
    let after_ddl = reader.read_changes(1).await;
    let mut expected = row_nulls();
    let object = expected.as_object_mut().unwrap();
    object.remove("descr");
    object.remove("name");
    object.insert("id".into(), json!(3));
    object.insert("title".into(), json!("after ddl"));
    object.insert("extra".into(), json!("new"));
    object.insert("attrs".into(), json!({}));
    assert_eq!(after_ddl[0].op, "c");
    assert_row(&after_ddl[0].after, &expected);
    let new_schema = reader.schemas.last().unwrap();
    let names: Vec<&str> = new_schema.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.last(), Some(&"extra"));
    assert!(names.contains(&"title") && !names.contains(&"name") && !names.contains(&"descr"));
    assert_eq!(
        new_schema.column("attrs").unwrap().kind,
        ColumnKind::JsonText
    );

    assert!(matches!(
        reader.ddl.first(),
        Some(DdlEffect::Tables {
            op: DdlOp::Create,
            ..
        })
    ));
    assert!(
        reader
            .ddl
            .iter()
            .any(|e| matches!(e, DdlEffect::Tables { op: DdlOp::Alter, tables } if tables[0].table == table)),
        "{:?}",
        reader.ddl
    );
    // CREATE, 3 inserts, update, delete, ALTER, insert: one GTID each.
    // (Other tests may write to the binlog concurrently: at least.)
    assert!(reader.gtids.len() >= 8, "{:?}", reader.gtids);
    assert!(
        reader.verified >= 8 * 3,
        "checksums verified: {}",
        reader.verified
    );

    // The information_schema layout sees the JSON column through its CHECK.
    let info = load_table_info(&mut reader.lookup, "payments", &table)
        .await
        .unwrap();
    assert!(info.column("attrs").unwrap().is_json);
    assert!(!info.column("title").unwrap().is_json);
    assert_eq!(info.primary_key, ["id"]);

    admin
        .query_drop(format!("DROP TABLE payments.{table}"))
        .await
        .unwrap();
    wait_for("the test table to be gone", Duration::from_secs(10), || {
        let opts = opts(&stack, &stack.cdc);
        let table = table.clone();
        async move {
            let mut conn = Conn::new(opts).await.ok()?;
            load_table_info(&mut conn, "payments", &table)
                .await
                .is_err()
                .then_some(())
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn real_packages_table_layout_marks_its_json_column() {
    let stack = Stack::from_env();
    let mut cdc = Conn::new(opts(&stack, &stack.cdc)).await.unwrap();
    let info = load_table_info(&mut cdc, "payments", "packages")
        .await
        .unwrap();
    assert_eq!(info.primary_key, ["id"]);
    let attributes = info.column("attributes").unwrap();
    assert!(
        attributes.is_json,
        "CHECK (attributes IS NULL OR JSON_VALID(attributes))"
    );
    assert_eq!(attributes.data_type, "longtext");
    assert!(info.column("id").unwrap().unsigned());
    assert!(!info.column("description").unwrap().is_json);
    let purchases = load_table_info(&mut cdc, "payments", "purchases")
        .await
        .unwrap();
    assert_eq!(
        purchases
            .column("status")
            .unwrap()
            .enum_or_set_values()
            .unwrap(),
        ["pending", "paid", "cancelled", "refunded"]
    );
    let missing = load_table_info(&mut cdc, "payments", "no_such_table").await;
    assert!(missing.is_err());
}

#[tokio::test]
async fn gtid_list_event_heads_a_binlog_file() {
    let stack = Stack::from_env();
    let mut admin = Conn::new(opts(&stack, &stack.admin)).await.unwrap();
    let row: mysql_async::Row = admin
        .query_first("SHOW MASTER STATUS")
        .await
        .unwrap()
        .unwrap();
    let file: String = row.get(0).unwrap();
    let mut cdc = Conn::new(opts(&stack, &stack.cdc)).await.unwrap();
    cdc.query_drop("SET @mariadb_slave_capability=4")
        .await
        .unwrap();
    let mut stream = cdc
        .get_binlog_stream(
            BinlogStreamRequest::new(4_300_000 + std::process::id() % 1000)
                .with_filename(file.as_bytes())
                .with_pos(4u64),
        )
        .await
        .unwrap();
    // The file starts with FORMAT_DESCRIPTION, then GTID_LIST.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let list = loop {
        let event = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("GTID_LIST before the deadline")
            .unwrap()
            .unwrap();
        verify_checksum(&event).unwrap();
        if event.header().event_type_raw() == GTID_LIST_EVENT {
            break gtid_list_of(&event).unwrap().unwrap();
        }
    };
    // The state before this file: empty for the first file, else one GTID
    // per (domain, server) written before it.
    for gtid in &list {
        assert!(gtid.seq > 0, "{gtid}");
    }
    let mut seen = std::collections::HashSet::new();
    assert!(
        list.iter().all(|g| seen.insert((g.domain, g.server_id))),
        "{list:?}"
    );
}
