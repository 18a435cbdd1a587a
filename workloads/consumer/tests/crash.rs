//! Exactly-once in effect under crashes: a mixed insert/update/delete load
//! (100,000 row changes against a standalone Redis, a smaller one against the
//! Redis Cluster) runs while consumers are killed with SIGKILL at random
//! points and restarted, at least five times. Afterwards the checker must
//! find Redis equal to MySQL row by row. The standalone run uses two consumer
//! instances of one group, one of them a dynamic member, so kills also cause
//! rebalances.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Pipeline, Rng, Target, mixed_load};
use paystream_testkit::process::Service;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn kill9_during_load(
    tag: &str,
    target: Target,
    rows: usize,
    rounds: usize,
    instances: usize,
) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let (users, packages) = (500, 20);
    eprintln!("{tag}: seed {seed}, {rows} rows, {rounds} kills, {instances} consumers");
    let p = Pipeline::start(tag, target, users, packages).await;
    // Instance 0 is a static member, the others dynamic: their restarts rebalance.
    let ids = ["a"];
    let spawn = |i: usize| p.consumer(ids.get(i).copied(), &["--batch-max-records", "1000"]);
    let mut consumers: Vec<Service> = (0..instances).map(spawn).collect();

    let progress = Arc::new(AtomicUsize::new(0));
    let writer = {
        let s = p.s.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut c = s.conn().await;
            mixed_load(&mut c, rows, seed, users, packages, &progress).await;
        })
    };
    let mut rng = Rng(seed.rotate_left(17) | 1);
    let mut points: Vec<usize> = (0..rounds)
        .map(|_| 1 + rng.below(rows as u64 - 1) as usize)
        .collect();
    points.sort_unstable();
    for (round, point) in points.into_iter().enumerate() {
        paystream_testkit::wait_for(
            "the load to reach a kill point",
            Duration::from_secs(900),
            || {
                let reached = progress.load(Ordering::Relaxed) >= point;
                async move { reached.then_some(()) }
            },
        )
        .await
        .unwrap();
        let victim = round % instances;
        consumers[victim].kill9();
        consumers[victim] = spawn(victim);
        eprintln!(
            "{tag}: kill {} of consumer {victim} at row {point}",
            round + 1
        );
    }
    writer.await.unwrap();
    let started = Instant::now();
    let refs: Vec<&Service> = consumers.iter().collect();
    let report = p.converge(Duration::from_secs(600), &refs).await;
    eprintln!(
        "{tag}: converged {:?} after the load: {report}",
        started.elapsed()
    );
    assert!(report.purchases > rows / 10, "{report}");
    for c in &mut consumers {
        let status = c.terminate();
        assert!(status.success(), "exit {status:?}\n{}", c.log_text());
    }
    p.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_during_a_100k_load_leaves_redis_equal_to_mysql() {
    kill9_during_load(
        "crash",
        Target::shared(),
        env_or("PAYSTREAM_CRASH_ROWS", 100_000),
        env_or("PAYSTREAM_CRASH_ROUNDS", 6),
        2,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_correctness_test_against_a_redis_cluster() {
    kill9_during_load(
        "cluster",
        Target::cluster(),
        env_or("PAYSTREAM_CLUSTER_CRASH_ROWS", 20_000),
        env_or("PAYSTREAM_CRASH_ROUNDS", 6),
        1,
    )
    .await;
}
