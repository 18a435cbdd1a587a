//! Exactly once under crashes: a 100,000-row mixed insert/update/delete load
//! runs while the producer is killed with SIGKILL at random points and
//! restarted, at least five times. A `read_committed` reader must then find
//! every change exactly once, in per-key order, with nothing extra. And a
//! producer killed right after a snapshot that read no rows resumes
//! streaming instead of taking the snapshot again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Scratch, SpawnProducer, read_until};
use mysql_async::prelude::*;
use serde_json::{Value, json};

/// A tiny deterministic PRNG (xorshift64*): the seed is printed so a failing
/// run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What the writer did to each key, in commit order: (op, version).
type Expected = BTreeMap<u64, Vec<(String, u64)>>;

async fn write_load(s: &Scratch, rows: usize, seed: u64, progress: Arc<AtomicUsize>) -> Expected {
    let mut c = s.conn().await;
    c.query_drop("INSERT INTO users (id, email, display_name) VALUES (1, 'load@x.io', 'load')")
        .await
        .unwrap();
    c.query_drop(
        "INSERT INTO packages (id, code, name, price, currency) VALUES (1, 'p', 'P', 1.00, 'EUR')",
    )
    .await
    .unwrap();
    let mut rng = Rng(seed | 1);
    let mut expected: Expected = BTreeMap::new();
    let mut live: Vec<(u64, u64)> = Vec::new(); // (id, version)
    let mut next_id = 1u64;
    let mut done = 0usize;
    while done < rows {
        // One source transaction of 1..=200 row changes; now and then a big one.
        let size = if rng.below(50) == 0 {
            3000
        } else {
            1 + rng.below(200) as usize
        };
        let mut tx = c.start_transaction(Default::default()).await.unwrap();
        let mut txn_ops: Vec<(u64, String, u64)> = Vec::new();
        let mut inserts = Vec::new();
        for _ in 0..size.min(rows - done) {
            let roll = rng.below(10);
            if roll < 6 || live.len() < 10 {
                inserts.push(next_id);
                txn_ops.push((next_id, "c".into(), 1));
                live.push((next_id, 1));
                next_id += 1;
            } else {
                let i = rng.below(live.len() as u64) as usize;
                let (id, version) = live[i];
                if inserts.contains(&id) {
                    // Keep it simple: touch rows of earlier transactions only.
                    inserts.push(next_id);
                    txn_ops.push((next_id, "c".into(), 1));
                    live.push((next_id, 1));
                    next_id += 1;
                } else if roll < 9 {
                    tx.exec_drop(
                        "UPDATE purchases SET quantity = quantity + 1 WHERE id = ?",
                        (id,),
                    )
                    .await
                    .unwrap();
                    live[i].1 = version + 1;
                    txn_ops.push((id, "u".into(), version + 1));
                } else {
                    tx.exec_drop("DELETE FROM purchases WHERE id = ?", (id,))
                        .await
                        .unwrap();
                    live.swap_remove(i);
                    txn_ops.push((id, "d".into(), version));
                }
            }
            done += 1;
        }
        // The transaction's inserts go in one multi-row statement; its updates
        // and deletes only touch rows of earlier transactions, so per-key
        // order is the order of `txn_ops`.
        if !inserts.is_empty() {
            let values: Vec<String> = inserts
                .iter()
                .map(|id| format!("({id}, 1, 1, 1, 1.00, 'EUR', 'pending', 'k{id}')"))
                .collect();
            tx.query_drop(format!(
                "INSERT INTO purchases (id, user_id, package_id, quantity, amount, currency, status, idempotency_key) VALUES {}",
                values.join(",")
            ))
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        progress.store(done, Ordering::Relaxed);
        for (id, op, v) in txn_ops {
            expected.entry(id).or_default().push((op, v));
        }
    }
    c.query_drop("INSERT INTO users (id, email, display_name) VALUES (2, 'done@x.io', 'done')")
        .await
        .unwrap();
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_during_load_keeps_exactly_once_in_key_order() {
    let rows: usize = std::env::var("PAYSTREAM_CRASH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rounds: usize = std::env::var("PAYSTREAM_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("seed {seed}, {rows} rows, {rounds} kills");
    let s = Scratch::new("crash").await;
    let flags = ["--max-chunk-records", "500", "--batch-max-records", "2000"];
    let mut producer = s.producer(&flags);
    producer.wait_ready(common::READY).await;

    let progress = Arc::new(AtomicUsize::new(0));
    let writer = {
        let s2 = Scratch {
            stack: s.stack.clone(),
            db: s.db.clone(),
            prefix: s.prefix.clone(),
        };
        let p = progress.clone();
        tokio::spawn(async move { write_load(&s2, rows, seed, p).await })
    };

    // Kill at random points of the load: when the writer passes randomly
    // chosen row counts.
    let mut rng = Rng(seed.rotate_left(17) | 1);
    let mut points: Vec<usize> = (0..rounds)
        .map(|_| 1 + rng.below(rows as u64 - 1) as usize)
        .collect();
    points.sort_unstable();
    let mut kills = 0;
    for point in points {
        paystream_testkit::wait_for(
            "the load to reach a kill point",
            Duration::from_secs(600),
            || {
                let reached = progress.load(Ordering::Relaxed) >= point;
                async move { reached.then_some(()) }
            },
        )
        .await
        .unwrap();
        producer.kill9();
        kills += 1;
        producer = s.producer(&flags);
    }
    let expected = writer.await.unwrap();
    eprintln!("load written; {kills} kills; waiting for the producer to catch up");

    let started = Instant::now();
    read_until(
        &s.stack.kafka_bootstrap,
        &s.topic("users"),
        Duration::from_secs(300),
        |r| r.iter().any(|x| x.key == Some(json!({"id": 2}))),
    )
    .await;
    let total_expected: usize = expected.values().map(Vec::len).sum();
    let deletes = expected
        .values()
        .flatten()
        .filter(|(op, _)| op == "d")
        .count();
    let recs = read_until(
        &s.stack.kafka_bootstrap,
        &s.topic("purchases"),
        Duration::from_secs(120),
        |r| r.len() >= total_expected + deletes,
    )
    .await;
    eprintln!("caught up in {:?}", started.elapsed());

    // Nothing extra may follow: read a moment past the expected count.
    let more = read_until(
        &s.stack.kafka_bootstrap,
        &s.topic("purchases"),
        Duration::from_secs(30),
        |r| r.len() >= recs.len(),
    )
    .await;
    assert_eq!(
        more.len(),
        total_expected + deletes,
        "records beyond what the load wrote"
    );

    let mut sorted = recs.clone();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    let mut got: Expected = BTreeMap::new();
    let mut tombstones = 0;
    for r in &sorted {
        let id = r.key.as_ref().unwrap()["id"].as_u64().unwrap();
        match &r.value {
            None => tombstones += 1,
            Some(v) => {
                let op = v["op"].as_str().unwrap().to_string();
                let image = if op == "d" { &v["before"] } else { &v["after"] };
                let version = image["version"].as_u64().unwrap();
                assert_ne!(v["source"]["gtid"], Value::Null);
                got.entry(id).or_default().push((op, version));
            }
        }
    }
    assert_eq!(tombstones, deletes, "one tombstone per delete");
    assert_eq!(got.len(), expected.len(), "keys");
    for (id, want) in &expected {
        assert_eq!(got.get(id), Some(want), "events of key {id} (seed {seed})");
    }
    producer.terminate();
    s.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_instance_is_fenced_and_nothing_is_published_twice() {
    let rows = 5_000;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("seed {seed}");
    let s = Scratch::new("fence").await;
    let flags = [
        "--max-chunk-records",
        "500",
        "--batch-max-records",
        "1000",
        "--max-backoff-secs",
        "2",
    ];
    let first = s.producer(&flags);
    first.wait_ready(common::READY).await;
    // The initial snapshot is committed before the second instance appears:
    // a snapshot interrupted by fencing would restart, by design.
    read_until(
        &s.stack.kafka_bootstrap,
        &format!("{}.checkpoints", s.prefix),
        Duration::from_secs(60),
        |r| {
            r.iter()
                .any(|x| x.value.as_ref().is_some_and(|v| v["snapshot"] == "done"))
        },
    )
    .await;
    // A second instance of the same source: same transactional id.
    let second = s.producer(&flags);
    let progress = Arc::new(AtomicUsize::new(0));
    let expected = write_load(
        &Scratch {
            stack: s.stack.clone(),
            db: s.db.clone(),
            prefix: s.prefix.clone(),
        },
        rows,
        seed,
        progress,
    )
    .await;
    read_until(
        &s.stack.kafka_bootstrap,
        &s.topic("users"),
        Duration::from_secs(300),
        |r| r.iter().any(|x| x.key == Some(json!({"id": 2}))),
    )
    .await;
    let total_expected: usize = expected.values().map(Vec::len).sum();
    let deletes = expected
        .values()
        .flatten()
        .filter(|(op, _)| op == "d")
        .count();
    let (recs, _) = common::read_for(
        &s.stack.kafka_bootstrap,
        &s.topic("purchases"),
        Duration::from_secs(120),
        &|r: &[common::Rec]| r.len() >= total_expected + deletes,
    )
    .await;
    let fenced = [&first, &second]
        .iter()
        .any(|p| p.log_text().contains("fenced") || p.log_text().contains("Fenced"));
    assert!(fenced, "one instance must have been fenced by the other");
    let mut sorted = recs.clone();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    let mut got: Expected = BTreeMap::new();
    for r in &sorted {
        if let Some(v) = &r.value {
            let id = r.key.as_ref().unwrap()["id"].as_u64().unwrap();
            let op = v["op"].as_str().unwrap().to_string();
            let image = if op == "d" { &v["before"] } else { &v["after"] };
            got.entry(id)
                .or_default()
                .push((op, image["version"].as_u64().unwrap()));
        }
    }
    let diffs: Vec<String> = expected
        .iter()
        .filter(|(id, want)| got.get(id) != Some(*want))
        .take(10)
        .map(|(id, want)| format!("key {id}: want {want:?} got {:?}", got.get(id)))
        .collect();
    let warnings = |p: &common::Producer| {
        p.log_text()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        diffs.is_empty() && recs.len() == total_expected + deletes,
        "seed {seed}: {} of {} records; first differences:\n{}\n--- first ---\n{}\n--- second ---\n{}",
        recs.len(),
        total_expected + deletes,
        diffs.join("\n"),
        warnings(&first),
        warnings(&second)
    );
    drop((first, second));
    s.drop().await;
}

/// The end of a snapshot that read no rows is committed before streaming
/// starts: a producer killed right after it became ready streams on from
/// the snapshot's position when restarted. It used to take the snapshot
/// again, so the changes made meanwhile came out as snapshot reads and a
/// row inserted and deleted in between never came out at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_right_after_an_empty_snapshot_takes_no_second_snapshot() {
    let s = Scratch::new("snapkill").await;
    let mut producer = s.producer(&[]);
    producer.wait_ready(common::READY).await;
    producer.kill9();

    let mut c = s.conn().await;
    c.query_drop("INSERT INTO users (id, email, display_name) VALUES (1, 'a@x.io', 'a')")
        .await
        .unwrap();
    c.query_drop(
        "INSERT INTO purchases (id, user_id, package_id, quantity, amount, currency, status, idempotency_key) VALUES \
         (1, 1, 1, 1, 1.00, 'EUR', 'pending', 'k1'), (2, 1, 1, 1, 1.00, 'EUR', 'pending', 'k2')",
    )
    .await
    .unwrap();
    c.query_drop("UPDATE purchases SET quantity = 2 WHERE id = 1")
        .await
        .unwrap();
    c.query_drop("DELETE FROM purchases WHERE id = 2")
        .await
        .unwrap();
    c.query_drop("INSERT INTO users (id, email, display_name) VALUES (2, 'done@x.io', 'done')")
        .await
        .unwrap();

    let _producer = s.producer(&[]);
    read_until(
        &s.stack.kafka_bootstrap,
        &s.topic("users"),
        Duration::from_secs(120),
        |r| r.iter().any(|x| x.key == Some(json!({"id": 2}))),
    )
    .await;
    // c, c, u, d and the delete's tombstone; the marker above was committed
    // after all of them.
    let recs = read_until(
        &s.stack.kafka_bootstrap,
        &s.topic("purchases"),
        Duration::from_secs(30),
        |r| r.len() >= 5,
    )
    .await;
    let mut sorted = recs.clone();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    let mut ops: BTreeMap<u64, Vec<Option<String>>> = BTreeMap::new();
    for r in &sorted {
        ops.entry(r.key.as_ref().unwrap()["id"].as_u64().unwrap())
            .or_default()
            .push(
                r.value
                    .as_ref()
                    .map(|v| v["op"].as_str().unwrap().to_string()),
            );
    }
    let some = |o: &str| Some(o.to_string());
    assert_eq!(
        ops,
        BTreeMap::from([
            (1, vec![some("c"), some("u")]),
            (2, vec![some("c"), some("d"), None]),
        ]),
        "the purchases' changes, each once, none as a snapshot read"
    );
    s.drop().await;
}
