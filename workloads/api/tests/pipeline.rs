//! End to end through the real pipeline: a scratch database, the
//! `paystream-producer` and `paystream-consumer` binaries as child processes,
//! and the API in process. A purchase created through the API reaches the
//! Redis read model through CDC within a bounded time and is then served
//! from Redis, without MySQL; so are its payment and the user's list.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{Api, Opts, package, token, user};
use paystream_core::readmodel::ModelStatus;
use paystream_testkit::cdc::Scratch;
use paystream_testkit::process::Service;
use paystream_testkit::{Stack, wait_for};

/// How long CDC may take from the API's commit to the read model, including
/// the consumer's first assignment; generous because the machine is shared.
const CDC_DEADLINE: Duration = Duration::from_secs(90);

/// `PAYSTREAM_CONSUMER_BIN`, or the executable `cargo build -p
/// paystream-consumer` names.
fn consumer_binary() -> PathBuf {
    match std::env::var("PAYSTREAM_CONSUMER_BIN") {
        Ok(p) => PathBuf::from(p),
        Err(_) => paystream_testkit::process::workspace_binary("paystream-consumer"),
    }
}

#[tokio::test]
async fn purchases_reach_the_read_model_and_are_served_from_redis() {
    let consumer_bin = tokio::task::spawn_blocking(consumer_binary).await.unwrap();
    let scratch = Scratch::new("api").await;
    let stack = Stack::from_env();
    let api = Api::with(Opts {
        database: scratch.db.clone(),
        mysql_user: stack.admin.user.clone(),
        mysql_password: stack.admin.password.clone(),
        prefix: scratch.prefix.clone(),
        topic_prefix: scratch.prefix.clone(),
        ..Opts::default()
    })
    .await;
    let u = user(&api.admin).await;
    let t = token(u);
    let p = package(&api.admin, "12.34", true).await;

    let producer = scratch.spawn_producer(&[]);
    producer.wait_ready(Duration::from_secs(120)).await;
    let args: Vec<String> = [
        "--topic-prefix",
        &scratch.prefix,
        "--database",
        &scratch.db,
        "--kafka-bootstrap",
        &stack.kafka_bootstrap,
        "--group-id",
        &format!("{}-consumer", scratch.prefix),
        "--redis-url",
        &stack.redis_url(),
        "--batch-linger-ms",
        "10",
        "--check-interval-ms",
        "200",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let consumer = Service::spawn(
        &format!("{}-consumer", scratch.prefix),
        &consumer_bin,
        &args,
        &[("PAYSTREAM_LOG", "info")],
    );
    consumer.wait_ready(Duration::from_secs(120)).await;

    // Buy through the API; the write goes to MySQL only.
    let bought = api.buy(u, p, 2).await;
    let id = bought["id"].as_u64().unwrap();
    let committed = Instant::now();
    wait_for("the purchase in the read model", CDC_DEADLINE, || async {
        (api.stored_version(id).await >= Some(1)).then_some(())
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n--- producer ---\n{}\n--- consumer ---\n{}",
            producer.log_text(),
            consumer.log_text()
        )
    });
    eprintln!(
        "purchase {id} reached Redis {:?} after the commit",
        committed.elapsed()
    );

    // Served from Redis: a hit, and no MySQL query.
    let queries = api.metrics.db_queries.get();
    let hits = api.metrics.cache.hit.get();
    let r = api.get(&format!("/v1/purchases/{id}"), Some(&t)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json(),
        bought,
        "the read model serves what the write returned"
    );
    assert!(api.metrics.cache.hit.get() > hits);
    assert_eq!(api.metrics.db_queries.get(), queries, "no MySQL read");

    // The payment follows through CDC too.
    let paid = api
        .post(
            &format!("/v1/purchases/{id}/payments"),
            &t,
            Some("e2e"),
            r#"{"method":"wallet"}"#,
        )
        .await;
    assert_eq!(paid.status, StatusCode::CREATED);
    wait_for("the payment in the read model", CDC_DEADLINE, || async {
        (api.stored_version(id).await >= Some(2)).then_some(())
    })
    .await
    .unwrap();
    let r = api.get(&format!("/v1/purchases/{id}"), Some(&t)).await;
    assert_eq!(r.json()["status"], "paid");
    assert_eq!(api.metrics.db_queries.get(), queries, "still no MySQL read");

    // The consumer's marks make the model complete: the list comes from Redis.
    wait_for("model complete", CDC_DEADLINE, || {
        let s = api.app.reads.cache().model_status();
        async move { (s == ModelStatus::Complete).then_some(()) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n--- consumer ---\n{}", consumer.log_text()));
    let hits = api.metrics.cache.hit.get();
    let r = api.get(&format!("/v1/users/{u}/purchases"), Some(&t)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["items"][0]["id"], id);
    assert_eq!(r.json()["items"][0]["status"], "paid");
    assert!(api.metrics.cache.hit.get() > hits, "list served from Redis");
    assert_eq!(
        api.metrics.db_queries.get(),
        queries,
        "no MySQL read at all"
    );

    drop(consumer);
    drop(producer);
    api.clear_prefix().await;
    drop(api);
    scratch.drop().await;
}
