//! Proves the local MariaDB is the real server configured for change data
//! capture: it accepts TLS with the locally generated CA, and it writes GTID
//! events and full-metadata row events to its binlog, readable by the CDC user.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly

use std::time::Duration;

use futures::StreamExt;
use mysql_async::binlog::events::{EventData, OptionalMetadataField};
use mysql_async::prelude::*;
use mysql_async::{BinlogStreamRequest, Conn, OptsBuilder, SslOpts};
use paystream_testkit::{Stack, unique_name};

const MARIADB_GTID_EVENT: u8 = 0xA2;

fn opts(stack: &Stack, creds: &paystream_testkit::Credentials) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(stack.mysql_port)
        .user(Some(creds.user.clone()))
        .pass(Some(creds.password.clone()))
        .prefer_socket(false)
}

#[tokio::test]
async fn accepts_tls_verified_by_the_local_ca() {
    let stack = Stack::from_env();
    let ssl = SslOpts::default()
        .with_root_certs(vec![stack.tls_ca.clone().into()])
        .with_disable_built_in_roots(true);
    let mut conn = Conn::new(opts(&stack, &stack.app).ssl_opts(ssl))
        .await
        .expect("TLS connection verified against var/stack/tls/ca.pem");
    let row: Option<(String, String)> = conn
        .query_first("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        .await
        .unwrap();
    let (_, cipher) = row.expect("Ssl_cipher status row");
    assert!(!cipher.is_empty(), "the session is not encrypted");
    let version: String = conn.query_first("SELECT VERSION()").await.unwrap().unwrap();
    assert!(version.contains("MariaDB"), "not MariaDB: {version}");
}

#[tokio::test]
async fn rejects_a_wrong_password() {
    let stack = Stack::from_env();
    let mut bad = stack.app.clone();
    bad.password.push_str("-wrong");
    let err = Conn::new(opts(&stack, &bad)).await.unwrap_err();
    assert!(
        err.to_string().contains("1045") || err.to_string().contains("denied"),
        "{err}"
    );
}

#[tokio::test]
async fn binlog_carries_gtid_and_full_row_metadata() {
    let stack = Stack::from_env();
    let mut admin = Conn::new(opts(&stack, &stack.admin)).await.unwrap();
    for (var, want) in [
        ("binlog_format", "ROW"),
        ("binlog_row_image", "FULL"),
        ("binlog_row_metadata", "FULL"),
    ] {
        let got: String = admin
            .query_first(format!("SELECT @@GLOBAL.{var}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.to_uppercase(), want, "{var}");
    }
    let log_bin: u8 = admin
        .query_first("SELECT @@GLOBAL.log_bin")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(log_bin, 1, "log_bin is on");

    // Start streaming from the current end of the binlog as the CDC user.
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
    let mut stream = cdc
        .get_binlog_stream(
            BinlogStreamRequest::new(4_000_000 + std::process::id() % 1000)
                .with_filename(file.as_bytes())
                .with_pos(pos),
        )
        .await
        .unwrap();

    let table = unique_name("binlog_probe");
    admin
        .query_drop(format!(
            "CREATE TABLE payments.{table} (id BIGINT PRIMARY KEY, label VARCHAR(32), amount DECIMAL(10,2))"
        ))
        .await
        .unwrap();
    admin
        .query_drop(format!(
            "INSERT INTO payments.{table} VALUES (1, 'one', 12.34)"
        ))
        .await
        .unwrap();

    let mut saw_gtid = false;
    let mut column_names: Option<Vec<String>> = None;
    let mut saw_write_rows = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !(saw_gtid && column_names.is_some() && saw_write_rows) {
        let ev = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("binlog events before the deadline")
            .expect("stream open")
            .expect("event decodes");
        if ev.header().event_type_raw() == MARIADB_GTID_EVENT {
            saw_gtid = true;
        }
        match ev.read_data().unwrap() {
            Some(EventData::TableMapEvent(tme)) if tme.table_name() == table.as_str() => {
                for field in tme.iter_optional_meta() {
                    if let OptionalMetadataField::ColumnName(names) = field.unwrap() {
                        column_names = Some(
                            names
                                .iter_names()
                                .map(|n| n.unwrap().name().into_owned())
                                .collect(),
                        );
                    }
                }
            }
            Some(EventData::RowsEvent(rows))
                if stream
                    .get_tme(rows.table_id())
                    .is_some_and(|tme| tme.table_name() == table.as_str()) =>
            {
                saw_write_rows = true;
            }
            _ => {}
        }
    }
    assert_eq!(
        column_names.unwrap(),
        vec!["id".to_string(), "label".into(), "amount".into()],
        "TABLE_MAP carries the column names (binlog_row_metadata=FULL)"
    );
    admin
        .query_drop(format!("DROP TABLE payments.{table}"))
        .await
        .unwrap();
}
