//! Bad input is never dropped silently: a row the producer cannot decode
//! (here, text in a character set it does not convert) stops the stream with
//! an error naming the table and binlog position; with
//! `--on-decode-error skip` the row goes to the dead-letter topic with its
//! coordinates and the stream goes on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Scratch, SpawnProducer, read_until};
use mysql_async::prelude::*;
use paystream_testkit::wait_for;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn undecodable_rows_halt_or_go_to_the_dead_letter_topic() {
    let s = Scratch::new("bad").await;
    let mut c = s.conn().await;
    c.query_drop("CREATE TABLE legacy (id INT PRIMARY KEY, name VARCHAR(20) CHARACTER SET sjis)")
        .await
        .unwrap();
    c.query_drop(format!(
        "GRANT SELECT ON {}.legacy TO 'paystream_cdc'@'%'",
        s.db
    ))
    .await
    .unwrap();

    // Default: stop with a clear error naming table and position.
    let halted = s.producer(&["--snapshot-mode", "never"]);
    halted.wait_ready(common::READY).await;
    c.query_drop("INSERT INTO legacy VALUES (1, 'abc')")
        .await
        .unwrap();
    let log = wait_for("the decode error", Duration::from_secs(60), || async {
        let log = halted.log_text();
        log.contains("cannot decode a row").then_some(log)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", halted.log_text()));
    assert!(log.contains(&format!("{}.legacy", s.db)), "{log}");
    assert!(
        log.contains("mariadb-bin."),
        "names the binlog position: {log}"
    );
    assert!(
        log.contains("--on-decode-error skip"),
        "says how to go on: {log}"
    );
    let (code, body) = halted.readyz().await;
    assert_eq!(code, 503, "{body}");
    drop(halted);

    // Skip: the bad row goes to the dead-letter topic, good rows flow.
    let producer = s.producer(&["--on-decode-error", "skip"]);
    producer.wait_ready(common::READY).await;
    c.query_drop("INSERT INTO users (id, email, display_name) VALUES (7, 'g@x.io', 'good')")
        .await
        .unwrap();
    let dlq = read_until(
        &s.stack.kafka_bootstrap,
        &format!("{}.dlq", s.prefix),
        Duration::from_secs(60),
        |r| !r.is_empty(),
    )
    .await;
    let dead = dlq[0].value.clone().unwrap();
    assert!(dead["reason"].as_str().unwrap().contains("sjis"), "{dead}");
    assert_eq!(dead["source"]["table"], format!("{}.legacy", s.db));
    assert!(dead["source"]["pos"].as_u64().unwrap() > 4, "{dead}");
    read_until(
        &s.stack.kafka_bootstrap,
        &s.topic("users"),
        Duration::from_secs(60),
        |r| r.iter().any(|x| x.key == Some(json!({"id": 7}))),
    )
    .await;
    drop(producer);
    s.drop().await;
}
