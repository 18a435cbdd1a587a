//! The operator's Kafka reads on clients shared per cluster, against the
//! local Kafka: a group's lag from its committed offsets (read through the
//! admin API, not a consumer of that group), the newest checkpoint read
//! incrementally (a newer record is found, an aborted one is not, a topic
//! that did not move is not read again), and topics created and described
//! in one request.
//!
//! Needs the local stack (`make stack-up`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use paystream_core::checkpoint::{Checkpoint, Flavor, SnapshotState, checkpoint_topic};
use paystream_operator::crd::KafkaSpec;
use paystream_operator::kafka::KafkaClients;
use paystream_operator::observe;
use paystream_operator::topics;
use paystream_testkit::{Stack, unique_name};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(10);

fn spec(stack: &Stack, prefix: &str, partitions: i32) -> KafkaSpec {
    serde_json::from_value(serde_json::json!({
        "bootstrapServers": stack.kafka_bootstrap,
        "topicPrefix": prefix,
        "partitions": partitions,
        "replicationFactor": 1,
    }))
    .unwrap()
}

fn checkpoint(prefix: &str, pos: u64) -> Checkpoint {
    Checkpoint {
        source: prefix.into(),
        flavor: Flavor::Mariadb,
        gtid: format!("0-1-{pos}"),
        file: "bin.000001".into(),
        pos,
        last_event_ts_ms: 0,
        partial: None,
        snapshot: SnapshotState::Done,
    }
}

async fn send(producer: &FutureProducer, topic: &str, partition: i32, key: &str, payload: &[u8]) {
    producer
        .send(
            FutureRecord::to(topic)
                .partition(partition)
                .key(key)
                .payload(payload),
            TIMEOUT,
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

#[tokio::test]
async fn lag_checkpoint_and_topics_through_shared_clients() {
    let stack = Stack::from_env();
    let prefix = unique_name("obs");
    let kafka = spec(&stack, &prefix, 2);
    let change = format!("{prefix}.payments.users");
    let clients = KafkaClients::new(TIMEOUT);
    let config = topics::client_config(&kafka, None);
    let cluster = clients.get(&config).unwrap();

    // Topics: all created in one request, then described as asked.
    let desired = topics::desired(&kafka, std::slice::from_ref(&change));
    let names: Vec<String> = desired.iter().map(|d| d.name.clone()).collect();
    let existing = cluster.describe(&names, &["cleanup.policy"]).await.unwrap();
    assert!(existing.is_empty(), "fresh prefix: {existing:?}");
    let plan = topics::plan(&desired, &existing);
    let done = cluster.execute(&plan).await.unwrap();
    assert_eq!(done.len(), 2, "{done:?}");
    // The broker answers the creation before every metadata request sees
    // the new topics: describe until both are there.
    let deadline = std::time::Instant::now() + TIMEOUT;
    let existing = loop {
        let existing = cluster.describe(&names, &["cleanup.policy"]).await.unwrap();
        if names.iter().all(|n| existing.contains_key(n)) {
            break existing;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the created topics are not described: {existing:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(existing[&change].partitions, 2);
    assert_eq!(existing[&change].config["cleanup.policy"], "compact,delete");
    assert_eq!(
        existing[&checkpoint_topic(&prefix)].config["cleanup.policy"],
        "compact"
    );
    assert!(topics::plan(&desired, &existing).is_noop());

    // Lag: 5 + 3 records, the group committed 2 on partition 0 and none on 1.
    let producer: FutureProducer = config.clone().create().unwrap();
    for i in 0..5 {
        send(&producer, &change, 0, &format!("k{i}"), b"{}").await;
    }
    for i in 0..3 {
        send(&producer, &change, 1, &format!("k{i}"), b"{}").await;
    }
    let group = format!("{prefix}-consumer");
    let lag = observe::consumer_lag(&cluster, &group, std::slice::from_ref(&change))
        .await
        .unwrap();
    assert_eq!(lag, 8, "nothing committed: everything is lag");
    let committer: BaseConsumer = config
        .clone()
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&change, 0, Offset::Offset(2))
        .unwrap();
    committer.commit(&tpl, CommitMode::Sync).unwrap();
    let lag = observe::consumer_lag(&cluster, &group, std::slice::from_ref(&change))
        .await
        .unwrap();
    assert_eq!(lag, 3 + 3, "partition 0 from offset 2, partition 1 from 0");
    let lag = observe::consumer_lag(&cluster, "no-such-group", &[format!("{prefix}.missing")])
        .await
        .unwrap();
    assert_eq!(lag, 0, "a missing topic has no lag");

    // Checkpoints: none, then the newest of this source's records.
    let cp_topic = checkpoint_topic(&prefix);
    assert_eq!(observe::checkpoint(&cluster, &prefix).await.unwrap(), None);
    let first = checkpoint(&prefix, 100);
    send(
        &producer,
        &cp_topic,
        0,
        &prefix,
        &serde_json::to_vec(&first).unwrap(),
    )
    .await;
    send(&producer, &cp_topic, 0, "another-source", b"not even json").await;
    assert_eq!(
        observe::checkpoint(&cluster, &prefix).await.unwrap(),
        Some(first.clone())
    );
    // Read from where the last read ended: still found, not read again.
    assert_eq!(
        observe::checkpoint(&cluster, &prefix).await.unwrap(),
        Some(first.clone())
    );
    let second = checkpoint(&prefix, 200);
    send(
        &producer,
        &cp_topic,
        0,
        &prefix,
        &serde_json::to_vec(&second).unwrap(),
    )
    .await;
    assert_eq!(
        observe::checkpoint(&cluster, &prefix).await.unwrap(),
        Some(second.clone())
    );

    // An aborted transaction's checkpoint is never reported.
    let tx: FutureProducer = config
        .clone()
        .set("transactional.id", format!("{prefix}-tx"))
        .create()
        .unwrap();
    tx.init_transactions(TIMEOUT).unwrap();
    tx.begin_transaction().unwrap();
    let aborted = checkpoint(&prefix, 300);
    send(
        &tx,
        &cp_topic,
        0,
        &prefix,
        &serde_json::to_vec(&aborted).unwrap(),
    )
    .await;
    tx.abort_transaction(TIMEOUT).unwrap();
    assert_eq!(
        observe::checkpoint(&cluster, &prefix).await.unwrap(),
        Some(second.clone())
    );
    tx.begin_transaction().unwrap();
    let committed = checkpoint(&prefix, 400);
    send(
        &tx,
        &cp_topic,
        0,
        &prefix,
        &serde_json::to_vec(&committed).unwrap(),
    )
    .await;
    tx.commit_transaction(TIMEOUT).unwrap();
    assert_eq!(
        observe::checkpoint(&cluster, &prefix).await.unwrap(),
        Some(committed)
    );

    // The same settings share the clients; other settings get their own.
    assert!(std::sync::Arc::ptr_eq(
        &cluster,
        &clients.get(&config).unwrap()
    ));
    let mut other = config.clone();
    other.set("client.id", "another");
    assert!(!std::sync::Arc::ptr_eq(
        &cluster,
        &clients.get(&other).unwrap()
    ));
    assert_eq!(clients.len(), 2);

    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    cluster.delete(&all).await.unwrap();
}
