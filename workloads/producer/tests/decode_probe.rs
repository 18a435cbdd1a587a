#![allow(clippy::unwrap_used, clippy::expect_used)]
use futures::StreamExt;
use mysql_async::binlog::BinlogChecksumAlg;
use mysql_async::binlog::events::EventData;
use mysql_async::prelude::*;
use mysql_async::{BinlogStreamRequest, Conn, OptsBuilder};
use paystream_testkit::{Stack, unique_name};
use std::time::Duration;

fn opts(stack: &Stack, creds: &paystream_testkit::Credentials) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(stack.mysql_port)
        .user(Some(creds.user.clone()))
        .pass(Some(creds.password.clone()))
        .prefer_socket(false)
}

#[tokio::test]
async fn probe() {
    let stack = Stack::from_env();
    let mut admin = Conn::new(opts(&stack, &stack.admin)).await.unwrap();
    let row: mysql_async::Row = admin
        .query_first("SHOW MASTER STATUS")
        .await
        .unwrap()
        .unwrap();
    let (file, pos): (String, u64) = (row.get(0).unwrap(), row.get(1).unwrap());
    let mut cdc = Conn::new(opts(&stack, &stack.cdc)).await.unwrap();
    cdc.query_drop("SET @mariadb_slave_capability=4")
        .await
        .unwrap();
    let mut stream = cdc
        .get_binlog_stream(
            BinlogStreamRequest::new(4_100_000 + std::process::id() % 1000)
                .with_filename(file.as_bytes())
                .with_pos(pos),
        )
        .await
        .unwrap();
    let t = unique_name("probe");
    admin.query_drop(format!("CREATE TABLE payments.{t} (id INT PRIMARY KEY, y YEAR, u BIGINT UNSIGNED, t2 TIME(2), e ENUM('a','b'), s SET('x','y','z'), b BIT(10), j JSON)")).await.unwrap();
    admin.query_drop(format!("INSERT INTO payments.{t} VALUES (1, 2024, 18446744073709551615, '-00:00:01', 'b', 'x,z', b'1000000001', '{{\"a\":1}}')")).await.unwrap();
    admin
        .query_drop(format!(
            "INSERT INTO payments.{t} VALUES (2, 0, 5, '10:00:00', 'a', '', 3, '[1]')"
        ))
        .await
        .unwrap();
    admin
        .query_drop(format!("CREATE TEMPORARY TABLE payments.tmp_{t} (id INT)"))
        .await
        .unwrap();
    admin
        .query_drop(format!("INSERT INTO payments.tmp_{t} VALUES (1)"))
        .await
        .unwrap();
    admin
        .query_drop(format!("DROP TABLE payments.{t}"))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let Ok(ev) = tokio::time::timeout_at(deadline, stream.next()).await else {
            break;
        };
        let ev = ev.unwrap().unwrap();
        let h = ev.header();
        let alg = ev.footer().get_checksum_alg();
        let calc = ev.calc_checksum(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32);
        println!(
            "type={} server={} size={} log_pos={} flags={:#x} data_len={} checksum={:?} calc={:08x} alg={:?} enabled={}",
            h.event_type_raw(),
            h.server_id(),
            h.event_size(),
            h.log_pos(),
            h.flags_raw(),
            ev.data().len(),
            ev.checksum()
                .map(u32::from_le_bytes)
                .map(|x| format!("{x:08x}")),
            calc,
            alg,
            ev.footer().get_checksum_enabled()
        );
        if h.event_type_raw() >= 160 {
            println!("   raw: {:02x?}", ev.data());
        }
        match ev.read_data() {
            Ok(Some(EventData::QueryEvent(q))) => {
                println!("   query: {} / db={}", q.query(), q.schema())
            }
            Ok(Some(EventData::TableMapEvent(tme))) => {
                for f in tme.iter_optional_meta() {
                    println!("   meta: {:?}", f);
                }
                for i in 0..tme.columns_count() as usize {
                    println!(
                        "   col {i}: {:?} {:?} meta={:?}",
                        tme.get_raw_column_type(i),
                        tme.get_column_type(i),
                        tme.get_column_metadata(i)
                    );
                }
            }
            Ok(Some(EventData::RowsEvent(r))) => {
                if let Some(tme) = stream.get_tme(r.table_id()) {
                    for row in r.rows(tme) {
                        println!("   row: {:?}", row);
                    }
                }
            }
            Ok(Some(EventData::RotateEvent(r))) => {
                println!("   rotate: {:?} {}", r.name(), r.position())
            }
            Ok(Some(other)) => println!("   {:?}", std::mem::discriminant(&other)),
            Ok(None) => println!("   (unknown type)"),
            Err(e) => println!("   ERR {e}"),
        }
    }
}
