//! Lag at rest. The producer writes in Kafka transactions, and each commit
//! marker takes an offset after the transaction's last record. A consumer
//! that commits "last record + 1" stops one short of the partition's end, so
//! an idle pipeline would read a lag of 1 per partition (in the LAG column and
//! in lag-based scaling). Once everything is applied the group's committed
//! position must be the end itself, and the lag gauges must read 0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use common::{Pipeline, Target, data_ends, mixed_load};
use paystream_testkit::wait_for;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

const LONG: Duration = Duration::from_secs(180);

/// Per partition: (committed offset of `group`, high watermark).
fn committed_and_ends(
    bootstrap: &str,
    group: &str,
    partitions: &[(String, i32)],
) -> Vec<((String, i32), i64, i64)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for (t, p) in partitions {
        tpl.add_partition(t, *p);
    }
    let committed = c.committed_offsets(tpl, Duration::from_secs(5)).unwrap();
    partitions
        .iter()
        .map(|(t, p)| {
            let (_, high) = c.fetch_watermarks(t, *p, Duration::from_secs(5)).unwrap();
            let done = committed
                .find_partition(t, *p)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .unwrap_or(-1);
            ((t.clone(), *p), done, high)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_consumer_commits_past_the_transaction_markers() {
    let p = Pipeline::start("lag", Target::shared(), 20, 3).await;
    let mut c = p.s.conn().await;
    let progress = AtomicUsize::new(0);
    mixed_load(&mut c, 400, 21, 20, 3, &progress).await;
    let consumer = p.consumer(None, &[]);
    p.converge(LONG, &[&consumer]).await;

    let topics = [p.s.topic("purchases"), p.s.topic("packages")];
    let data = data_ends(&p.s.stack.kafka_bootstrap, &topics).await;
    let partitions: Vec<(String, i32)> = data.iter().map(|(tp, _)| tp.clone()).collect();
    // The premise: the producer's markers put the ends past the last records.
    let first = committed_and_ends(&p.s.stack.kafka_bootstrap, &p.group, &partitions);
    let with_marker = data
        .iter()
        .zip(&first)
        .filter(|((_, last), (_, _, high))| high > last)
        .count();
    assert!(
        with_marker > 0,
        "no partition ends in a marker: {data:?} {first:?}"
    );

    let bootstrap = p.s.stack.kafka_bootstrap.clone();
    let group = p.group.clone();
    let behind = wait_for(
        "the committed offsets at the partitions' ends",
        LONG,
        || {
            let (bootstrap, group, partitions) = (&bootstrap, &group, &partitions);
            async move {
                let now = committed_and_ends(bootstrap, group, partitions);
                // A partition that never held a record has nothing to commit.
                now.iter()
                    .all(|(_, done, high)| done == high || (*high == 0 && *done < 0))
                    .then_some(now)
            }
        },
    )
    .await;
    let now = match behind {
        Ok(now) => now,
        Err(e) => panic!(
            "{e}: {:?}",
            committed_and_ends(&bootstrap, &group, &partitions)
        ),
    };
    assert!(
        now.iter().filter(|(_, done, _)| *done > 0).count() >= with_marker,
        "{now:?}"
    );

    // The consumer's own lag gauges agree (an empty partition has none) (librdkafka's statistics every 5 s).
    let with_data = now.iter().filter(|(_, _, high)| *high > 0).count();
    let lag = wait_for("the lag gauges at 0", Duration::from_secs(30), || async {
        let (code, text) = consumer.get("/metrics").await;
        if code != 200 {
            return None;
        }
        let values: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with("paystream_consumer_partition_lag{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        (values.len() >= with_data && values.iter().all(|v| *v == 0.0)).then_some(values)
    })
    .await;
    if lag.is_err() {
        let (_, text) = consumer.get("/metrics").await;
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("paystream_consumer_partition_lag{"))
            .collect();
        panic!("{lag:?}: {lines:#?}");
    }
    drop(consumer);
    p.drop().await;
}
