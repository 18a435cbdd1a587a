//! Healing: when Redis loses its data (FLUSHALL, or a restart without
//! persistence) the consumer notices the missing marks, replays the compacted
//! change topics and converges to MySQL again, reporting the model as
//! rebuilding meanwhile; when Redis is unreachable, readiness turns false,
//! nothing is lost, and the model catches up once Redis is back. The
//! Sentinel mode finds its primary through a real Sentinel.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use common::{Pipeline, Target, mixed_load};
use paystream_core::readmodel::{ModelStatus, model_status};
use paystream_testkit::proxy::Proxy;
use paystream_testkit::redis_server::{RedisServer, Sentinel};
use paystream_testkit::{Stack, wait_for};

const LONG: Duration = Duration::from_secs(180);

async fn status(p: &Pipeline) -> ModelStatus {
    let mut c = p.target.conn().await;
    let fields: std::collections::BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(p.keys.meta_offsets())
        .query_async(&mut c)
        .await
        .unwrap();
    let topics = [p.s.topic("purchases"), p.s.topic("packages")];
    model_status(&fields, &[topics[0].as_str(), topics[1].as_str()])
}

async fn wait_status(p: &Pipeline, want: ModelStatus) {
    wait_for(&format!("model status {want:?}"), LONG, || async {
        (status(p).await == want).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flushed_or_restarted_redis_is_rebuilt_from_the_topics() {
    let mut server = RedisServer::start().await;
    let target = Target::Standalone { url: server.url(0) };
    let p = Pipeline::start("rebuild", target, 50, 5).await;
    let mut c = p.s.conn().await;
    let progress = AtomicUsize::new(0);
    mixed_load(&mut c, 3000, 7, 50, 5, &progress).await;
    let consumer = p.consumer(Some("a"), &[]);
    let r = p.converge(LONG, &[&consumer]).await;
    assert!(r.purchases > 1000, "{r}");
    wait_status(&p, ModelStatus::Complete).await;

    // FLUSHALL: everything is gone, the marks too.
    let mut redis = p.target.conn().await;
    let _: String = redis::cmd("FLUSHALL")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(status(&p).await, ModelStatus::Unknown);
    // More changes while the model rebuilds.
    mixed_load(&mut c, 1000, 8, 50, 5, &progress).await;
    let r = p.converge(LONG, &[&consumer]).await;
    assert!(r.purchases > 1000, "{r}");
    wait_status(&p, ModelStatus::Complete).await;
    let rebuilds = consumer
        .metric("paystream_consumer_rebuilds_total")
        .await
        .unwrap();
    assert!(
        rebuilds >= 12.0,
        "6 partitions at start, 6 after the flush: {rebuilds}"
    );

    // A restart without persistence: the server comes back empty.
    server.restart().await;
    mixed_load(&mut c, 500, 9, 50, 5, &progress).await;
    p.converge(LONG, &[&consumer]).await;
    wait_status(&p, ModelStatus::Complete).await;
    consumer.wait_ready(LONG).await;
    drop(consumer);
    p.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_outage_turns_readiness_off_and_loses_nothing() {
    let stack = Stack::from_env();
    let proxy = Proxy::start(format!("127.0.0.1:{}", stack.redis_port).parse().unwrap())
        .await
        .unwrap();
    let target = Target::Standalone {
        url: format!("redis://:{}@{}/0", stack.redis_password, proxy.addr),
    };
    let p = Pipeline::start("outage", target, 20, 3).await;
    let mut c = p.s.conn().await;
    let progress = AtomicUsize::new(0);
    mixed_load(&mut c, 500, 11, 20, 3, &progress).await;
    let consumer = p.consumer(Some("a"), &["--redis-timeout-ms", "1000"]);
    p.converge(LONG, &[&consumer]).await;
    consumer.wait_ready(LONG).await;

    proxy.cut();
    mixed_load(&mut c, 1000, 12, 20, 3, &progress).await;
    wait_for("readiness to turn false", LONG, || async {
        let (code, body) = consumer.readyz().await;
        (code == 503 && body.contains("redis")).then_some(())
    })
    .await
    .unwrap();
    assert!(!consumer.log_text().contains("panicked"));

    proxy.heal();
    consumer.wait_ready(LONG).await;
    let r = p.converge(LONG, &[&consumer]).await;
    assert!(r.purchases > 500, "{r}");
    let errors = consumer
        .metric("paystream_consumer_errors_total{kind=\"redis\"}")
        .await
        .unwrap_or(0.0);
    assert!(errors > 0.0);
    drop(consumer);
    p.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_consumer_finds_its_primary_through_a_sentinel() {
    let server = RedisServer::start().await;
    let sentinel = Sentinel::start(&server, "paystream").await;
    let target = Target::Sentinel {
        sentinel: format!("127.0.0.1:{}", sentinel.port),
        master: sentinel.name.clone(),
        password: server.password.clone(),
    };
    let p = Pipeline::start("sentinel", target, 20, 3).await;
    let mut c = p.s.conn().await;
    let progress = AtomicUsize::new(0);
    mixed_load(&mut c, 1000, 13, 20, 3, &progress).await;
    let consumer = p.consumer(Some("a"), &[]);
    let r = p.converge(LONG, &[&consumer]).await;
    assert!(r.purchases > 300, "{r}");
    // The data is really on the primary the Sentinel named.
    let mut direct = common::Target::Standalone { url: server.url(0) }
        .conn()
        .await;
    let n: i64 = redis::cmd("DBSIZE").query_async(&mut direct).await.unwrap();
    assert!(n > 300, "{n} keys on the primary");
    drop(consumer);
    p.drop().await;
}
