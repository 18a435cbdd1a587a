//! The consumer end to end with the real producer, Kafka, MariaDB and Redis:
//! duplicate and replayed delivery leave the model unchanged; an older
//! version delivered out of order is ignored; a delete followed by a late
//! upsert stays deleted; a poison message lands in the dead-letter topic
//! while good messages flow; SIGTERM commits what was applied.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Pipeline, Target, send_raw};
use mysql_async::prelude::*;
use paystream_consumer::redis_client::RedisConn;
use paystream_testkit::cdc::{Rec, read_until};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(120);

/// Every key of the model except the consumer's marks, with its content.
async fn dump(c: &mut RedisConn, prefix: &str) -> BTreeMap<String, String> {
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(c)
            .await
            .unwrap();
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    let mut out = BTreeMap::new();
    for k in keys.into_iter().filter(|k| !k.contains(":meta:")) {
        let t: String = redis::cmd("TYPE").arg(&k).query_async(c).await.unwrap();
        let v = match t.as_str() {
            "hash" => {
                let h: BTreeMap<String, String> =
                    redis::cmd("HGETALL").arg(&k).query_async(c).await.unwrap();
                format!("{h:?}")
            }
            "zset" => {
                let z: Vec<(String, f64)> = redis::cmd("ZRANGE")
                    .arg(&k)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query_async(c)
                    .await
                    .unwrap();
                format!("{z:?}")
            }
            other => format!("type {other}"),
        };
        out.insert(k, v);
    }
    out
}

async fn some_rows(p: &Pipeline) {
    let mut c = p.s.conn().await;
    c.query_drop(
        "INSERT INTO purchases (id, user_id, package_id, quantity, amount, currency, status, idempotency_key, created_at)
         VALUES (1, 1, 1, 1, 10.00, 'EUR', 'pending', 'k1', '2024-05-01 12:00:00.000001'),
                (2, 1, 2, 2, 20.00, 'EUR', 'pending', 'k2', '2024-05-02 12:00:00'),
                (3, 2, 1, 3, 30.00, 'EUR', 'paid', 'k3', '2024-05-03 12:00:00'),
                (4, 2, 2, 1, 40.00, 'USD', 'pending', 'k4', '2024-05-03 12:00:00')",
    )
    .await
    .unwrap();
    c.query_drop("UPDATE purchases SET status = 'paid' WHERE id IN (1, 4)")
        .await
        .unwrap();
    c.query_drop("UPDATE purchases SET status = 'refunded' WHERE id = 1")
        .await
        .unwrap();
    c.query_drop("UPDATE purchases SET user_id = 3 WHERE id = 2")
        .await
        .unwrap();
    c.query_drop("DELETE FROM purchases WHERE id = 3")
        .await
        .unwrap();
    c.query_drop("UPDATE packages SET name = 'Gold', price = 99.50 WHERE id = 1")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_and_replayed_delivery_leaves_the_model_unchanged() {
    let p = Pipeline::start("replay", Target::shared(), 3, 2).await;
    some_rows(&p).await;
    let mut consumer = p.consumer(None, &[]);
    p.converge(LONG, &[&consumer]).await;
    p.wait_applied(LONG).await;
    let mut redis = p.target.conn().await;
    let before = dump(&mut redis, &p.s.prefix).await;
    assert!(before.len() > 5, "{before:#?}");

    // Duplicates: every record of both topics sent again, to its partition.
    let bootstrap = p.s.stack.kafka_bootstrap.clone();
    for table in ["purchases", "packages"] {
        let topic = p.s.topic(table);
        let recs = read_until(&bootstrap, &topic, LONG, |r| !r.is_empty()).await;
        let recs = read_until(&bootstrap, &topic, LONG, |r| r.len() >= recs.len()).await;
        for r in &recs {
            let key = r.key.as_ref().map(|k| k.to_string().into_bytes());
            send_raw(
                &bootstrap,
                &topic,
                r.partition,
                key.as_deref(),
                r.raw.as_deref(),
            )
            .await;
        }
    }
    p.wait_applied(LONG).await;
    assert_eq!(
        dump(&mut redis, &p.s.prefix).await,
        before,
        "duplicates changed the model"
    );

    // Replay: stop the consumer, rewind the group to the beginning, restart.
    assert!(consumer.terminate().success(), "{}", consumer.log_text());
    let rewind: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", &p.group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for table in ["purchases", "packages"] {
        for part in 0..3 {
            tpl.add_partition_offset(&p.s.topic(table), part, Offset::Offset(0))
                .unwrap();
        }
    }
    paystream_testkit::wait_for("the group to accept the rewind", LONG, || {
        let ok = rewind.commit(&tpl, CommitMode::Sync).is_ok();
        async move { ok.then_some(()) }
    })
    .await
    .unwrap();
    let consumer = p.consumer(None, &[]);
    p.wait_applied(LONG).await;
    assert_eq!(
        dump(&mut redis, &p.s.prefix).await,
        before,
        "the replay changed the model"
    );
    let ignored = consumer
        .metric("paystream_consumer_writes_total{kind=\"ignored\"}")
        .await
        .unwrap_or(0.0);
    assert!(ignored > 0.0, "the replay was refused by the guard");
    assert!(p.check().await.is_equal());
    drop(consumer);
    p.drop().await;
}

/// The newest event of `id` in `recs`.
fn last_event(recs: &[Rec], id: u64) -> (i32, Value) {
    let mut sorted = recs.to_vec();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    sorted
        .iter()
        .rev()
        .find(|r| r.key == Some(json!({ "id": id })) && r.value.is_some())
        .map(|r| (r.partition, r.value.clone().unwrap()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn older_versions_and_late_upserts_are_ignored() {
    let p = Pipeline::start("stale", Target::shared(), 3, 2).await;
    some_rows(&p).await;
    let consumer = p.consumer(Some("a"), &[]);
    p.converge(LONG, &[&consumer]).await;
    let bootstrap = p.s.stack.kafka_bootstrap.clone();
    let topic = p.s.topic("purchases");
    let recs = read_until(&bootstrap, &topic, LONG, |r| {
        r.iter().filter(|x| x.value.is_some()).count() >= 9
    })
    .await;

    // Purchase 1 is at version 3; send version 2 with other data, as an update.
    let (part, latest) = last_event(&recs, 1);
    assert_eq!(latest["after"]["version"], 3);
    let mut stale = latest.clone();
    stale["op"] = json!("u");
    stale["after"]["version"] = json!(2);
    stale["after"]["amount"] = json!("999.00");
    stale["after"]["status"] = json!("pending");
    stale["before"]["version"] = json!(1);
    let key = br#"{"id":1}"#;
    send_raw(
        &bootstrap,
        &topic,
        part,
        Some(key),
        Some(&serde_json::to_vec(&stale).unwrap()),
    )
    .await;

    // Purchase 3 was deleted at version 1; an upsert of that version, and a
    // snapshot read of it, arrive late.
    let (part3, delete) = last_event(&recs, 3);
    assert_eq!(delete["op"], "d");
    let mut late = delete.clone();
    late["op"] = json!("c");
    late["after"] = delete["before"].clone();
    late["before"] = Value::Null;
    let key3 = br#"{"id":3}"#;
    send_raw(
        &bootstrap,
        &topic,
        part3,
        Some(key3),
        Some(&serde_json::to_vec(&late).unwrap()),
    )
    .await;
    late["op"] = json!("r");
    late["source"]["snapshot"] = json!("true");
    send_raw(
        &bootstrap,
        &topic,
        part3,
        Some(key3),
        Some(&serde_json::to_vec(&late).unwrap()),
    )
    .await;

    p.wait_applied(LONG).await;
    let mut redis = p.target.conn().await;
    let doc1: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(p.keys.purchase(1))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(doc1["v"], "3", "{doc1:?}");
    assert!(doc1["d"].contains("\"refunded\""), "{doc1:?}");
    let doc3: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(p.keys.purchase(3))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(doc3.get("del").map(String::as_str), Some("1"), "{doc3:?}");
    let list2: Vec<String> = redis::cmd("ZRANGE")
        .arg(p.keys.user_purchases(2))
        .arg(0)
        .arg(-1)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(
        list2,
        vec![paystream_core::readmodel::member(4)],
        "3 stays out of the list"
    );
    let r = p.check().await;
    assert!(r.is_equal(), "{r}");
    drop(consumer);
    p.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poison_message_goes_to_the_dead_letter_topic_while_good_ones_flow() {
    let p = Pipeline::start("poison", Target::shared(), 3, 2).await;
    let mut consumer = p.consumer(Some("a"), &[]);
    consumer.wait_ready(LONG).await;
    let bootstrap = p.s.stack.kafka_bootstrap.clone();
    let topic = p.s.topic("purchases");
    let mut good = serde_json::from_slice::<Value>(
        br#"{"before":null,"after":{"id":50,"user_id":1,"package_id":1,"quantity":1,"amount":1.5,
        "currency":"EUR","status":"pending","idempotency_key":"x","created_at":"2024-01-01T00:00:00.000000Z",
        "updated_at":"2024-01-01T00:00:00.000000Z","version":1},"op":"c","ts_ms":1,
        "source":{"version":"x","connector":"mariadb","name":"x","server_id":1,"gtid":null,"file":"f",
        "pos":4,"row":0,"ts_ms":1,"snapshot":"false","db":"x","table":"purchases"}}"#,
    )
    .unwrap();
    good["source"]["db"] = json!(p.s.db);
    let poison: Vec<(Vec<u8>, Vec<u8>, &str)> = vec![
        (
            br#"{"id":50}"#.to_vec(),
            vec![0xff, 0xfe, 0x00],
            "not a change event",
        ),
        (b"not-json".to_vec(), br#"{"op":"c"}"#.to_vec(), "bad key"),
        (
            br#"{"id":50}"#.to_vec(),
            serde_json::to_vec(&good).unwrap(),
            "column `amount`",
        ),
    ];
    for (k, v, _) in &poison {
        send_raw(&bootstrap, &topic, 1, Some(k), Some(v)).await;
    }
    // Good rows keep flowing, before and after the poison.
    some_rows(&p).await;
    p.converge(LONG, &[&consumer]).await;

    let dlq = format!("{}.consumer.dlq", p.s.prefix);
    let letters = read_until(&bootstrap, &dlq, LONG, |r| r.len() >= poison.len()).await;
    assert_eq!(letters.len(), poison.len());
    let mut seen: Vec<Value> = letters.iter().map(|r| r.value.clone().unwrap()).collect();
    seen.sort_by_key(|v| v["offset"].as_i64());
    for (letter, (_, _, reason)) in seen.iter().zip(&poison) {
        assert_eq!(letter["topic"], topic.as_str());
        assert_eq!(letter["partition"], 1);
        assert!(letter["offset"].as_i64().unwrap() >= 0);
        assert!(
            letter["reason"].as_str().unwrap().contains(reason),
            "{letter}"
        );
        assert_eq!(letter["group"], p.group.as_str());
    }
    assert_eq!(seen[0]["payload_base64"], "//4A");
    assert_eq!(seen[1]["key"], "not-json");
    let counted = consumer
        .metric("paystream_consumer_dead_letters_total")
        .await
        .unwrap();
    assert_eq!(counted, poison.len() as f64);

    // SIGTERM: a clean exit that commits what was applied.
    let status = consumer.terminate();
    assert!(status.success(), "exit {status:?}\n{}", consumer.log_text());
    assert!(
        consumer
            .log_text()
            .contains("committed the applied offsets")
    );
    p.drop().await;
}
