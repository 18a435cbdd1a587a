//! The producer keeps going when the world misbehaves: a frozen connection
//! (bytes stop, sockets stay open) is caught by the read timeout, a cut
//! connection is re-established with backoff, readiness reports both, and
//! the stream resumes with nothing lost. Over TLS. Schema changes mid-stream
//! (add, drop and rename a column, a new table) decode correctly. An
//! unreachable Kafka means not ready and retrying, never an exit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Scratch, SpawnProducer, read_until};
use mysql_async::prelude::*;
use paystream_testkit::proxy::Proxy;
use paystream_testkit::wait_for;
use serde_json::{Value, json};

async fn wait_readiness(p: &common::Producer, code: u16, needle: &str) {
    wait_for(
        &format!("/readyz {code} {needle}"),
        Duration::from_secs(60),
        || async {
            let (c, body) = p.readyz().await;
            (c == code && body.contains(needle)).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", p.log_text()));
}

fn event(recs: &[common::Rec], table_key: Value, op: &str) -> Value {
    recs.iter()
        .filter(|r| r.key.as_ref() == Some(&table_key))
        .filter_map(|r| r.value.clone())
        .rfind(|v| v["op"] == op)
        .unwrap_or_else(|| panic!("no {op} for {table_key}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn survives_stalls_and_cuts_over_tls_and_decodes_ddl() {
    let s = Scratch::new("resil").await;
    let mut c = s.conn().await;
    let bootstrap = s.stack.kafka_bootstrap.clone();
    let proxy = Proxy::start(format!("127.0.0.1:{}", s.stack.mysql_port).parse().unwrap())
        .await
        .unwrap();
    let port = proxy.addr.port().to_string();
    let ca = s.stack.tls_ca.to_string_lossy().to_string();
    let producer = s.producer(&[
        "--mysql-port",
        &port,
        "--mysql-tls",
        "verify-identity",
        "--mysql-tls-ca",
        &ca,
        "--read-timeout-secs",
        "3",
        "--max-backoff-secs",
        "1",
    ]);
    producer.wait_ready(common::READY).await;
    let users = s.topic("users");
    let has =
        |id: u64| move |r: &[common::Rec]| r.iter().any(|x| x.key == Some(json!({ "id": id })));

    c.query_drop("INSERT INTO users (id, email, display_name) VALUES (1, 'a@x.io', 'A')")
        .await
        .unwrap();
    read_until(&bootstrap, &users, Duration::from_secs(30), has(1)).await;

    // A silent stall: the read timeout notices, readiness drops.
    proxy.freeze();
    c.query_drop("INSERT INTO users (id, email, display_name) VALUES (2, 'b@x.io', 'B')")
        .await
        .unwrap();
    wait_readiness(&producer, 503, "mysql").await;
    proxy.heal();
    read_until(&bootstrap, &users, Duration::from_secs(60), has(2)).await;
    wait_readiness(&producer, 200, "ready").await;

    // A cut: reconnect with backoff.
    proxy.cut();
    wait_readiness(&producer, 503, "mysql").await;
    c.query_drop("INSERT INTO users (id, email, display_name) VALUES (3, 'c@x.io', 'C')")
        .await
        .unwrap();
    proxy.heal();
    read_until(&bootstrap, &users, Duration::from_secs(60), has(3)).await;
    assert!(producer.log_text().contains("reconnecting"));

    // DDL mid-stream.
    c.query_drop("ALTER TABLE users ADD COLUMN nickname VARCHAR(32) NULL AFTER email")
        .await
        .unwrap();
    c.query_drop(
        "INSERT INTO users (id, email, nickname, display_name) VALUES (4, 'd@x.io', 'dee', 'D')",
    )
    .await
    .unwrap();
    c.query_drop("ALTER TABLE users DROP COLUMN display_name")
        .await
        .unwrap();
    c.query_drop("INSERT INTO users (id, email, nickname) VALUES (5, 'e@x.io', 'eee')")
        .await
        .unwrap();
    c.query_drop("ALTER TABLE users RENAME COLUMN nickname TO alias")
        .await
        .unwrap();
    c.query_drop("UPDATE users SET alias = 'dd' WHERE id = 4")
        .await
        .unwrap();
    c.query_drop("CREATE TABLE refunds (id BIGINT UNSIGNED PRIMARY KEY, purchase_id BIGINT UNSIGNED NOT NULL, amount DECIMAL(14,2) NOT NULL)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO refunds VALUES (1, 42, 3.50)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO users (id, email, alias) VALUES (6, 'f@x.io', 'fff')")
        .await
        .unwrap();

    // Keys spread over partitions: wait for every expected event, not just the last.
    let all_there = |r: &[common::Rec]| {
        let seen = |id: u64, op: &str| {
            r.iter().any(|x| {
                x.key == Some(json!({ "id": id }))
                    && x.value.as_ref().is_some_and(|v| v["op"] == op)
            })
        };
        seen(4, "c") && seen(5, "c") && seen(4, "u") && seen(6, "c")
    };
    let recs = read_until(&bootstrap, &users, Duration::from_secs(60), all_there).await;
    let four = event(&recs, json!({"id": 4}), "c");
    assert_eq!(four["after"]["nickname"], "dee");
    assert_eq!(four["after"]["display_name"], "D");
    let five = event(&recs, json!({"id": 5}), "c");
    assert_eq!(five["after"]["nickname"], "eee");
    assert!(five["after"].get("display_name").is_none(), "{five}");
    let upd = event(&recs, json!({"id": 4}), "u");
    assert_eq!(upd["before"]["alias"], "dee");
    assert_eq!(upd["after"]["alias"], "dd");
    assert!(upd["after"].get("nickname").is_none());
    let six = event(&recs, json!({"id": 6}), "c");
    assert_eq!(six["after"]["alias"], "fff");
    let refunds = read_until(
        &bootstrap,
        &s.topic("refunds"),
        Duration::from_secs(30),
        |r| !r.is_empty(),
    )
    .await;
    let refund = refunds[0].value.clone().unwrap();
    assert_eq!(
        refund["after"],
        json!({"id": 1, "purchase_id": 42, "amount": "3.50"})
    );
    drop(producer);
    s.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_kafka_means_not_ready_and_retrying() {
    let s = Scratch::new("nokafka").await;
    let mut producer = s.producer(&[
        "--kafka-bootstrap",
        "127.0.0.1:1",
        "--max-backoff-secs",
        "1",
    ]);
    wait_readiness(&producer, 503, "kafka").await;
    // Still running after several retries: no crash loop.
    wait_for("a few retries", Duration::from_secs(60), || async {
        (producer
            .log_text()
            .matches("producer session failed")
            .count()
            >= 2)
            .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", producer.log_text()));
    assert!(
        producer.child.try_wait().unwrap().is_none(),
        "the producer exited"
    );
    assert!(producer.terminate().success());
    s.drop().await;
}
