//! The API on every Redis deployment the consumer writes: the local Redis
//! Cluster (documents and lists on different slots, so no pipeline may cross
//! them) and a primary found through a Sentinel (found again after it
//! restarts). The same read-path scenario runs on each: a miss fills the
//! model through the guarded script, the next read is a hit, the writer
//! reads its own write, a user's list is served, and no fill fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::{Api, Opts, package, token, user};
use paystream_runtime::redis_client::{RedisMode, RedisTarget};
use paystream_testkit::redis_server::{RedisServer, Sentinel};
use paystream_testkit::{Stack, wait_for};

async fn read_path_works(api: &Api) {
    let u = user(&api.admin).await;
    let t = token(u);
    let p = package(&api.admin, "4.50", true).await;
    let id = api.buy(u, p, 2).await["id"].as_u64().unwrap();
    let path = format!("/v1/purchases/{id}");

    // A miss reads MySQL and fills the model; the next read is a hit that
    // joins the purchase and its package (two slots).
    let first = api.get(&path, Some(&t)).await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    assert_eq!(api.stored_version(id).await, Some(1));
    let hits = api.metrics.cache.hit.get();
    let second = api.get(&path, Some(&t)).await;
    assert_eq!(second.json(), first.json());
    assert_eq!(second.json()["package"]["id"], p);
    assert!(api.metrics.cache.hit.get() > hits, "served from Redis");

    // Read-your-writes checks the list's version and the document (two
    // slots again).
    let paid = api
        .post(
            &format!("{path}/payments"),
            &t,
            Some("pay"),
            r#"{"method":"card"}"#,
        )
        .await;
    assert_eq!(paid.status, StatusCode::CREATED, "{paid:?}");
    let r = api.get(&format!("{path}?min_version=2"), Some(&t)).await;
    assert_eq!(r.json()["status"], "paid");
    assert_eq!(api.stored_version(id).await, Some(2));

    // A user's list, from MySQL and then from the complete model.
    let list = format!("/v1/users/{u}/purchases");
    assert_eq!(api.get(&list, Some(&t)).await.json()["items"][0]["id"], id);
    api.mark_model_complete().await;
    let r = api.get(&list, Some(&t)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["items"][0]["id"], id);
    assert_eq!(api.metrics.fills_failed.get(), 0);
    assert!(api.metrics.fills_applied.get() >= 2);
}

#[tokio::test]
async fn the_read_path_works_on_a_redis_cluster() {
    let mut target = RedisTarget::standalone("redis://unused");
    target.redis_mode = RedisMode::Cluster;
    target.redis_nodes = paystream_testkit::redis_cluster();
    target.redis_password = Some(Stack::from_env().redis_password);
    let api = Api::with(Opts {
        redis_target: Some(target),
        ..Opts::default()
    })
    .await;
    read_path_works(&api).await;
}

#[tokio::test]
async fn the_read_path_works_through_a_sentinel_and_finds_the_primary_again() {
    let mut server = RedisServer::start().await;
    let sentinel = Sentinel::start(&server, "paystream-api").await;
    let mut target = RedisTarget::standalone("redis://unused");
    target.redis_mode = RedisMode::Sentinel;
    target.redis_nodes = vec![format!("127.0.0.1:{}", sentinel.port)];
    target.redis_sentinel_master = sentinel.name.clone();
    target.redis_password = Some(server.password.clone());
    let api = Api::with(Opts {
        redis_target: Some(target),
        ..Opts::default()
    })
    .await;
    read_path_works(&api).await;

    // The primary restarts empty: the broken connection marks Redis down,
    // reads fall back to MySQL, and the health loop reconnects through the
    // Sentinel and serves from Redis again.
    let u = user(&api.admin).await;
    let t = token(u);
    let p = package(&api.admin, "3.00", true).await;
    let id = api.buy(u, p, 1).await["id"].as_u64().unwrap();
    let path = format!("/v1/purchases/{id}");
    server.restart().await;
    let r = api.get(&path, Some(&t)).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "answered during the restart: {r:?}"
    );
    wait_for("redis up again", Duration::from_secs(20), || {
        let up = api.metrics.redis_up.get() == 1;
        async move { up.then_some(()) }
    })
    .await
    .unwrap();
    wait_for("filled again", Duration::from_secs(20), || async {
        let r = api.get(&path, Some(&t)).await;
        (r.status == StatusCode::OK && api.stored_version(id).await == Some(1)).then_some(())
    })
    .await
    .unwrap();
}
