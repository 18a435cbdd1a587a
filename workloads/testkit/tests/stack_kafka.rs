//! Proves the local Kafka is a real KRaft broker that supports what the
//! pipeline relies on: a topic created through the admin API, a transactional
//! producer with `acks=all`, and a `read_committed` consumer that sees
//! committed records and never aborted ones.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly

use std::time::Duration;

use paystream_testkit::{Stack, unique_name};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

async fn create_topic(stack: &Stack, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &stack.kafka_bootstrap)
        .create()
        .unwrap();
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .unwrap();
    for r in results {
        r.unwrap();
    }
}

#[tokio::test]
async fn transactional_round_trip_read_committed() {
    let stack = Stack::from_env();
    let topic = unique_name("stack-probe");
    create_topic(&stack, &topic).await;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.kafka_bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("transactional.id", unique_name("stack-probe-tx"))
        .create()
        .unwrap();
    let t = Timeout::After(Duration::from_secs(30));
    producer.init_transactions(t).unwrap();

    // An aborted transaction: a read_committed consumer must never see it.
    producer.begin_transaction().unwrap();
    producer
        .send(FutureRecord::to(&topic).key("k").payload("aborted"), t)
        .await
        .unwrap();
    producer.abort_transaction(t).unwrap();

    // A committed one.
    producer.begin_transaction().unwrap();
    for i in 0..3 {
        producer
            .send(
                FutureRecord::to(&topic)
                    .key("k")
                    .payload(&format!("committed-{i}")),
                t,
            )
            .await
            .unwrap();
    }
    producer.commit_transaction(t).unwrap();

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &stack.kafka_bootstrap)
        .set("group.id", unique_name("stack-probe-group"))
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let msg = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("a record before the deadline")
            .unwrap();
        seen.push(String::from_utf8(msg.payload().unwrap().to_vec()).unwrap());
    }
    assert_eq!(seen, vec!["committed-0", "committed-1", "committed-2"]);
}
