//! A purged binlog: the producer's checkpoint points at binlog the server no
//! longer has. By default it halts with the documented error (and stays up,
//! not ready, instead of crash-looping); with `--snapshot-mode when_needed`
//! it takes a new snapshot and streams on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Scratch, SpawnProducer, read_until};
use mysql_async::prelude::*;
use paystream_testkit::wait_for;
use serde_json::json;

async fn insert_user(c: &mut mysql_async::Conn, id: u64) {
    c.exec_drop(
        "INSERT INTO users (id, email, display_name) VALUES (?, ?, 'u')",
        (id, format!("u{id}@x.io")),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn purged_binlog_halts_clearly_or_resnapshots_when_needed() {
    let s = Scratch::new("purge").await;
    let mut c = s.conn().await;
    let bootstrap = s.stack.kafka_bootstrap.clone();
    let has =
        |id: u64| move |r: &[common::Rec]| r.iter().any(|x| x.key == Some(json!({ "id": id })));

    let mut producer = s.producer(&[]);
    producer.wait_ready(common::READY).await;
    insert_user(&mut c, 1).await;
    read_until(
        &bootstrap,
        &s.topic("users"),
        Duration::from_secs(60),
        has(1),
    )
    .await;
    assert!(producer.terminate().success());

    // While the producer is down: more changes, then the binlog holding them
    // is purged.
    insert_user(&mut c, 2).await;
    c.query_drop("FLUSH BINARY LOGS").await.unwrap();
    let row: mysql_async::Row = c.query_first("SHOW MASTER STATUS").await.unwrap().unwrap();
    let current: String = row.get(0).unwrap();
    // The server refuses to purge a file another replica is still reading,
    // with only a warning: retry until the older files are really gone.
    let admin = s.stack.clone();
    wait_for(
        "the old binlog files to be purged",
        Duration::from_secs(120),
        || {
            let current = current.clone();
            let stack = admin.clone();
            async move {
                let mut c = common::admin(&stack).await;
                c.query_drop(format!("PURGE BINARY LOGS TO '{current}'"))
                    .await
                    .ok()?;
                let logs: Vec<mysql_async::Row> = c.query("SHOW BINARY LOGS").await.ok()?;
                let first: String = logs.first()?.get(0)?;
                (first == current).then_some(())
            }
        },
    )
    .await
    .unwrap();

    // Default mode: a clear, documented error; the process stays up, not ready.
    let halted = s.producer(&[]);
    let log = wait_for(
        "the purge error in the log",
        Duration::from_secs(60),
        || async {
            let log = halted.log_text();
            log.contains("no longer on the server").then_some(log)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", halted.log_text()));
    assert!(
        log.contains("--snapshot-mode when_needed"),
        "the error says how to fix it:\n{log}"
    );
    let (code, body) = halted.readyz().await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("pipeline"), "{body}");
    drop(halted);

    // when_needed: a new snapshot brings user 2, then streaming goes on.
    let producer = s.producer(&["--snapshot-mode", "when_needed"]);
    producer.wait_ready(common::READY).await;
    let recs = read_until(
        &bootstrap,
        &s.topic("users"),
        Duration::from_secs(60),
        has(2),
    )
    .await;
    let two = recs
        .iter()
        .find(|r| r.key == Some(json!({"id": 2})))
        .unwrap();
    assert_eq!(
        two.value.as_ref().unwrap()["op"],
        "r",
        "user 2 came from the new snapshot"
    );
    insert_user(&mut c, 3).await;
    let recs = read_until(
        &bootstrap,
        &s.topic("users"),
        Duration::from_secs(60),
        has(3),
    )
    .await;
    let three = recs
        .iter()
        .find(|r| r.key == Some(json!({"id": 3})))
        .unwrap();
    assert_eq!(three.value.as_ref().unwrap()["op"], "c");
    drop(producer);
    s.drop().await;
}
