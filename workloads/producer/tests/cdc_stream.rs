//! The producer end to end against the real MariaDB and Kafka: an initial
//! snapshot, then streamed inserts, updates, deletes and a primary-key change,
//! checked field by field; rolled-back work and temporary tables produce
//! nothing; a stock client (kcat) reads well-formed JSON.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Rec, Scratch, SpawnProducer, by_key, read_until};
use mysql_async::prelude::*;
use serde_json::{Value, json};

fn ops(recs: &[Rec]) -> Vec<String> {
    let mut sorted = recs.to_vec();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    sorted
        .iter()
        .map(|r| match &r.value {
            Some(v) => v["op"].as_str().unwrap().to_string(),
            None => "tombstone".into(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_then_stream_with_exact_envelopes() {
    let s = Scratch::new("stream").await;
    let mut c = s.conn().await;
    c.query_drop(
        "INSERT INTO users (id, email, display_name) VALUES (1, 'a@x.io', 'Ann'), (2, 'b@x.io', 'Bob')",
    )
    .await
    .unwrap();
    c.query_drop(
        r#"INSERT INTO packages (id, code, name, description, price, currency, active, attributes)
           VALUES (1, 'gold', 'Gold ✨', NULL, 19.99, 'EUR', TRUE, '{"credits": 100, "tags": ["a", "b"]}'),
                  (2, 'free', 'Free', 'nothing', 0.00, 'USD', FALSE, NULL)"#,
    )
    .await
    .unwrap();
    c.query_drop(
        "INSERT INTO purchases (id, user_id, package_id, quantity, amount, currency, status, idempotency_key, created_at)
         VALUES (1, 1, 1, 1, 19.99, 'EUR', 'pending', 'k1', '2024-05-01 12:34:56.123456'),
                (2, 1, 2, 2, 0.00, 'USD', 'paid', 'k2', '2024-05-02 00:00:00'),
                (3, 2, 1, 3, 59.97, 'EUR', 'cancelled', 'k3', '2024-05-03 23:59:59.999999')",
    )
    .await
    .unwrap();

    let mut producer = s.producer(&[]);
    producer.wait_ready(common::READY).await;

    // Streamed changes.
    c.query_drop(
        "INSERT INTO purchases (id, user_id, package_id, quantity, amount, currency, status, idempotency_key, created_at)
         VALUES (100, 2, 1, 1, 12.50, 'EUR', 'pending', 'k100', '2025-01-01 00:00:00.5')",
    )
    .await
    .unwrap();
    c.query_drop("UPDATE purchases SET status = 'paid' WHERE id = 100")
        .await
        .unwrap();
    c.query_drop("DELETE FROM purchases WHERE id = 1")
        .await
        .unwrap();
    c.query_drop("UPDATE purchases SET id = 200 WHERE id = 2")
        .await
        .unwrap();
    // Rolled back: must never appear.
    c.query_drop("START TRANSACTION").await.unwrap();
    c.query_drop(
        "INSERT INTO purchases (id, user_id, package_id, quantity, amount, currency, idempotency_key)
         VALUES (300, 1, 1, 1, 1.00, 'EUR', 'k300')",
    )
    .await
    .unwrap();
    c.query_drop("ROLLBACK").await.unwrap();
    // Temporary tables: never.
    c.query_drop("CREATE TEMPORARY TABLE tmp_purchases LIKE purchases")
        .await
        .unwrap();
    c.query_drop(
        "INSERT INTO tmp_purchases (id, user_id, package_id, quantity, amount, currency, idempotency_key)
         VALUES (400, 1, 1, 1, 1.00, 'EUR', 'k400')",
    )
    .await
    .unwrap();
    // A marker written last: once it is read, everything before it is too.
    c.query_drop(
        "INSERT INTO users (id, email, display_name) VALUES (99, 'marker@x.io', 'marker')",
    )
    .await
    .unwrap();

    let bootstrap = s.stack.kafka_bootstrap.clone();
    let users = read_until(
        &bootstrap,
        &s.topic("users"),
        Duration::from_secs(60),
        |r| r.iter().any(|x| x.key == Some(json!({"id": 99}))),
    )
    .await;
    // 3 snapshot reads + 1 (c) + 1 (u) + 1 (d) + tombstone + 1 (d) + tombstone + 1 (c)
    let purchases = read_until(
        &bootstrap,
        &s.topic("purchases"),
        Duration::from_secs(30),
        |r| r.len() >= 10,
    )
    .await;
    let packages = read_until(
        &bootstrap,
        &s.topic("packages"),
        Duration::from_secs(30),
        |r| r.len() >= 2,
    )
    .await;

    // --- snapshot ------------------------------------------------------
    let keyed = by_key(&purchases);
    assert_eq!(keyed.len(), 5, "keys 1, 2, 3, 100 and 200: {keyed:#?}");
    let snap3 = &keyed[r#"{"id":3}"#][0];
    assert_eq!(snap3["op"], "r");
    assert_eq!(snap3["before"], Value::Null);
    assert_eq!(snap3["source"]["snapshot"], "true");
    assert_eq!(snap3["source"]["gtid"], Value::Null);
    let after = &snap3["after"];
    assert_eq!(after["id"], 3);
    assert_eq!(after["user_id"], 2);
    assert_eq!(after["quantity"], 3);
    assert_eq!(after["amount"], "59.97");
    assert_eq!(after["currency"], "EUR");
    assert_eq!(after["status"], "cancelled");
    assert_eq!(after["idempotency_key"], "k3");
    assert_eq!(after["created_at"], "2024-05-03T23:59:59.999999Z");
    assert_eq!(after["version"], 1);
    let gold = packages
        .iter()
        .find(|r| r.key == Some(json!({"id": 1})))
        .and_then(|r| r.value.clone())
        .unwrap();
    assert_eq!(
        gold["after"]["attributes"],
        json!({"credits": 100, "tags": ["a", "b"]})
    );
    assert_eq!(gold["after"]["name"], "Gold ✨");
    assert_eq!(gold["after"]["price"], "19.99");
    assert_eq!(gold["after"]["active"], 1);
    assert_eq!(gold["after"]["description"], Value::Null);

    // Exactly one snapshot record is marked last.
    let lasts: usize = [&users, &purchases, &packages]
        .iter()
        .flat_map(|t| t.iter())
        .filter(|r| {
            r.value
                .as_ref()
                .is_some_and(|v| v["source"]["snapshot"] == "last")
        })
        .count();
    assert_eq!(lasts, 1);

    // --- stream --------------------------------------------------------
    let k100 = &keyed[r#"{"id":100}"#];
    assert_eq!(k100.len(), 2);
    let (create, update) = (&k100[0], &k100[1]);
    assert_eq!(create["op"], "c");
    assert_eq!(create["before"], Value::Null);
    assert_eq!(create["after"]["amount"], "12.50");
    assert_eq!(create["after"]["created_at"], "2025-01-01T00:00:00.500000Z");
    let src = &create["source"];
    assert_eq!(src["db"], s.db.as_str());
    assert_eq!(src["table"], "purchases");
    assert_eq!(src["connector"], "mariadb");
    assert_eq!(src["name"], s.prefix.as_str());
    assert_eq!(src["server_id"], 1);
    assert_eq!(src["snapshot"], "false");
    assert_eq!(src["row"], 0);
    assert!(
        regex_lite::Regex::new(r"^0-1-\d+$")
            .unwrap()
            .is_match(src["gtid"].as_str().unwrap()),
        "{src}"
    );
    assert!(
        src["file"].as_str().unwrap().starts_with("mariadb-bin."),
        "{src}"
    );
    assert!(src["pos"].as_u64().unwrap() > 4);
    assert!(src["ts_ms"].as_i64().unwrap() > 1_600_000_000_000);
    assert!(create["ts_ms"].as_i64().unwrap() >= src["ts_ms"].as_i64().unwrap());
    assert_eq!(update["op"], "u");
    assert_eq!(update["before"]["status"], "pending");
    assert_eq!(update["after"]["status"], "paid");
    assert_eq!(update["before"]["version"], 1);
    assert_eq!(update["after"]["version"], 2);
    assert_ne!(update["source"]["gtid"], create["source"]["gtid"]);

    // Delete of id 1: r, then d followed by a tombstone.
    let ops1: Vec<String> = ops(&purchases
        .iter()
        .filter(|r| r.key == Some(json!({"id": 1})))
        .cloned()
        .collect::<Vec<_>>());
    assert_eq!(ops1, vec!["r", "d", "tombstone"]);
    // Key change 2 -> 200: delete (+ tombstone) of the old key, create of the new.
    let ops2: Vec<String> = ops(&purchases
        .iter()
        .filter(|r| r.key == Some(json!({"id": 2})))
        .cloned()
        .collect::<Vec<_>>());
    assert_eq!(ops2, vec!["r", "d", "tombstone"]);
    let k200 = &keyed[r#"{"id":200}"#];
    assert_eq!(k200.len(), 1);
    assert_eq!(k200[0]["op"], "c");
    assert_eq!(k200[0]["after"]["idempotency_key"], "k2");

    // Nothing from the rolled-back transaction or the temporary table.
    assert!(!keyed.contains_key(r#"{"id":300}"#));
    assert!(!keyed.contains_key(r#"{"id":400}"#));

    // A stock client reads well-formed JSON with the documented fields.
    let out = tokio::process::Command::new("kcat")
        .args([
            "-C",
            "-b",
            &bootstrap,
            "-t",
            &s.topic("purchases"),
            "-o",
            "beginning",
            "-e",
            "-q",
            "-X",
            "isolation.level=read_committed",
            "-f",
            "%k\t%s\n",
        ])
        .output()
        .await
        .expect("kcat is installed by the stack scripts");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut events = 0;
    for line in text.lines().filter(|l| !l.is_empty()) {
        let (k, v) = line.split_once('\t').unwrap();
        let key: Value = serde_json::from_str(k).unwrap();
        assert!(key["id"].is_u64(), "{line}");
        if v.is_empty() {
            continue; // tombstone
        }
        let v: Value = serde_json::from_str(v).unwrap();
        for field in ["before", "after", "source", "op", "ts_ms"] {
            assert!(v.get(field).is_some(), "{field} missing in {v}");
        }
        events += 1;
    }
    assert_eq!(events, 8, "{text}");

    // SIGTERM drains and exits cleanly.
    let status = producer.terminate();
    assert!(status.success(), "exit {status:?}\n{}", producer.log_text());
    s.drop().await;
}
