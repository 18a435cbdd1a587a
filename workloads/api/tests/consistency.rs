//! The read path's promises, against real servers: read-your-writes, fills
//! that never overwrite a newer version, correct reads after Redis loses
//! everything, the MySQL fallback while Redis is down (and its metric),
//! cached reads while MySQL is down, request deadlines, coalescing of a
//! thousand misses into one query, the database read limit, and the near
//! cache's invalidation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::StatusCode;
use common::{Api, Opts, package, token, user};
use paystream_core::readmodel::{SCRIPT, ScriptCall, Version};
use paystream_testkit::proxy::Proxy;
use paystream_testkit::redis_server::RedisServer;
use paystream_testkit::{Stack, unique_name, wait_for};

/// Writes a purchase document the way the consumer does.
async fn write_doc(api: &Api, id: u64, version: u64, json: &serde_json::Value) -> i64 {
    let call = ScriptCall::Doc {
        key: api.keys.purchase(id),
        version: Version::live(version),
        json: json.to_string(),
        tombstone_ttl_ms: 60_000,
    };
    let mut c = api.redis().await;
    let script = redis::Script::new(SCRIPT);
    let mut inv = script.prepare_invoke();
    for k in call.keys(&api.keys) {
        inv.key(k);
    }
    for a in call.args() {
        inv.arg(a);
    }
    inv.invoke_async(&mut c).await.unwrap()
}

fn purchase_only(body: &serde_json::Value) -> serde_json::Value {
    let mut v = body.clone();
    v.as_object_mut().unwrap().remove("package");
    v
}

#[tokio::test]
async fn the_writer_reads_its_own_writes() {
    let api = Api::start().await;
    let u = user(&api.admin).await;
    let t = token(u);
    let p = package(&api.admin, "8.00", true).await;
    let id = api.buy(u, p, 1).await["id"].as_u64().unwrap();
    let path = format!("/v1/purchases/{id}");
    // The read fills the cache at version 1.
    assert_eq!(api.get(&path, Some(&t)).await.header("etag"), Some("\"1\""));
    assert_eq!(api.stored_version(id).await, Some(1));
    // Pay: MySQL is at version 2; no consumer runs here, so Redis stays at 1.
    let paid = api
        .post(
            &format!("{path}/payments"),
            &t,
            Some("ryw"),
            r#"{"method":"card"}"#,
        )
        .await;
    let token_hdr = paid.header("x-consistency-token").unwrap().to_string();
    assert_eq!(token_hdr, format!("{id}:2"));
    let stale = api.get(&path, Some(&t)).await;
    assert_eq!(stale.json()["status"], "pending", "a plain read may lag");
    // With the minimum version the writer sees its write, by query or header,
    // and the cache is refreshed under the version rule.
    let stale_before = api.metrics.cache.stale.get();
    let r = api.get(&format!("{path}?min_version=2"), Some(&t)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["status"], "paid");
    assert_eq!(r.header("etag"), Some("\"2\""));
    assert!(api.metrics.cache.stale.get() > stale_before);
    assert_eq!(api.stored_version(id).await, Some(2));
    let r = api
        .send(
            axum::http::Request::get(&path)
                .header("authorization", format!("Bearer {t}"))
                .header("x-min-version", &token_hdr)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.json()["status"], "paid");
    assert_eq!(api.get(&path, Some(&t)).await.json()["status"], "paid");
}

#[tokio::test]
async fn the_writer_sees_its_purchase_in_its_list() {
    let api = Api::start().await;
    let u = user(&api.admin).await;
    let t = token(u);
    let p = package(&api.admin, "1.25", true).await;
    let first = api.buy(u, p, 1).await["id"].as_u64().unwrap();
    let list = format!("/v1/users/{u}/purchases");
    assert_eq!(
        api.get(&list, Some(&t)).await.json()["items"][0]["id"],
        first
    );
    api.mark_model_complete().await;
    // The cached list does not have the new purchase (no consumer here) ...
    let r = api
        .post(
            "/v1/purchases",
            &t,
            Some("list-ryw"),
            &format!(r#"{{"package_id":{p},"quantity":2}}"#),
        )
        .await;
    let second = r.json()["id"].as_u64().unwrap();
    let tok = r.header("x-consistency-token").unwrap().to_string();
    let cached = api.get(&list, Some(&t)).await.json();
    assert_eq!(cached["items"].as_array().unwrap().len(), 1);
    // ... but the writer's token makes the list include it.
    let r = api
        .get(&format!("{list}?min_version={tok}"), Some(&t))
        .await;
    let items: Vec<u64> = r.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_u64().unwrap())
        .collect();
    assert_eq!(items, vec![second, first]);
    // The MySQL read filled the list and documents under the version rule, so
    // the token is now satisfied from Redis.
    let hits = api.metrics.cache.hit.get();
    let r = api
        .get(&format!("{list}?min_version={tok}"), Some(&t))
        .await;
    assert_eq!(r.json()["items"][0]["id"], second);
    assert!(api.metrics.cache.hit.get() > hits);
}

#[tokio::test]
async fn a_fill_never_overwrites_a_newer_version() {
    let api = Api::start().await;
    let u = user(&api.admin).await;
    let t = token(u);
    let p = package(&api.admin, "2.00", true).await;
    let bought = api.buy(u, p, 1).await;
    let id = bought["id"].as_u64().unwrap();
    // The consumer is ahead: version 99 is in Redis.
    let mut newer = purchase_only(&bought);
    newer["version"] = 99.into();
    newer["status"] = "paid".into();
    assert_eq!(write_doc(&api, id, 99, &newer).await, 1);
    // A reader demanding more than Redis has reads MySQL (version 1) and
    // tries to fill: the script keeps version 99.
    let ignored = api.metrics.fills_ignored.get();
    let r = api
        .get(&format!("/v1/purchases/{id}?min_version=100"), Some(&t))
        .await;
    assert_eq!(r.json()["version"], 1);
    assert!(api.metrics.fills_ignored.get() > ignored);
    assert_eq!(api.stored_version(id).await, Some(99));
    let r = api.get(&format!("/v1/purchases/{id}"), Some(&t)).await;
    assert_eq!(r.json()["version"], 99);
}

#[tokio::test]
async fn a_stale_package_hint_is_corrected() {
    let api = Api::start().await;
    let u = user(&api.admin).await;
    let t = token(u);
    let first = package(&api.admin, "1.00", true).await;
    let second = package(&api.admin, "2.00", true).await;
    let bought = api.buy(u, first, 1).await;
    let id = bought["id"].as_u64().unwrap();
    let path = format!("/v1/purchases/{id}");
    for _ in 0..3 {
        assert_eq!(
            api.get(&path, Some(&t)).await.json()["package"]["id"],
            first
        );
    }
    // The purchase moves to another package (an operator's fix); the
    // consumer writes the new document. The remembered package is wrong now.
    let mut moved = purchase_only(&bought);
    moved["package_id"] = second.into();
    moved["version"] = 2.into();
    assert_eq!(write_doc(&api, id, 2, &moved).await, 1);
    let r = api.get(&path, Some(&t)).await.json();
    assert_eq!(r["package_id"], second);
    assert_eq!(
        r["package"]["id"], second,
        "the package follows the purchase"
    );
    assert_eq!(r["package"]["price"], "2.00");
    assert_eq!(
        api.get(&path, Some(&t)).await.json()["package"]["id"],
        second
    );
}

#[tokio::test]
async fn reads_stay_correct_after_redis_is_flushed() {
    let redis = RedisServer::start().await;
    let api = Api::with(Opts {
        redis_url: redis.url(3),
        ..Opts::default()
    })
    .await;
    let u = user(&api.admin).await;
    let t = token(u);
    let p = package(&api.admin, "3.30", true).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(api.buy(u, p, 1).await["id"].as_u64().unwrap());
    }
    ids.reverse();
    let list = format!("/v1/users/{u}/purchases");
    let before_list = api.get(&list, Some(&t)).await.json();
    let before_one = api
        .get(&format!("/v1/purchases/{}", ids[0]), Some(&t))
        .await
        .json();
    api.mark_model_complete().await;
    assert_eq!(api.get(&list, Some(&t)).await.json(), before_list);
    // Redis loses everything (its own private server: FLUSHALL is safe).
    let mut c = api.redis().await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
    let size: i64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
    assert_eq!(size, 0);
    wait_for("model judged lost", Duration::from_secs(10), || {
        let s = api.app.reads.cache().model_status();
        async move { (s != paystream_core::readmodel::ModelStatus::Complete).then_some(()) }
    })
    .await
    .unwrap();
    let incomplete = api.metrics.mysql_reads.model_incomplete.get();
    let misses = api.metrics.mysql_reads.miss.get();
    assert_eq!(
        api.get(&format!("/v1/purchases/{}", ids[0]), Some(&t))
            .await
            .json(),
        before_one
    );
    assert_eq!(api.get(&list, Some(&t)).await.json(), before_list);
    assert!(api.metrics.mysql_reads.model_incomplete.get() > incomplete);
    assert!(
        api.metrics.mysql_reads.miss.get() > misses,
        "hit {} miss {} bypass {} redis_down {}",
        api.metrics.cache.hit.get(),
        api.metrics.cache.miss.get(),
        api.metrics.cache.bypass.get(),
        api.metrics.mysql_reads.redis_down.get()
    );
    drop(redis);
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test]
async fn redis_down_falls_back_to_mysql_and_says_so() {
    let stack = Stack::from_env();
    let proxy = Proxy::start(addr(stack.redis_port)).await.unwrap();
    let api = Api::with(Opts {
        redis_url: format!(
            "redis://:{}@127.0.0.1:{}/0",
            stack.redis_password,
            proxy.addr.port()
        ),
        ..Opts::default()
    })
    .await;
    let u = user(&api.admin).await;
    let t = token(u);
    let p = package(&api.admin, "6.00", true).await;
    let id = api.buy(u, p, 1).await["id"].as_u64().unwrap();
    let path = format!("/v1/purchases/{id}");
    let cached = api.get(&path, Some(&t)).await;
    assert_eq!(cached.status, StatusCode::OK);

    proxy.cut();
    let fallback = api.metrics.fallback.get();
    for _ in 0..5 {
        let r = api.get(&path, Some(&t)).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert_eq!(r.body, cached.body, "the same answer from MySQL");
        let l = api.get(&format!("/v1/users/{u}/purchases"), Some(&t)).await;
        assert_eq!(l.status, StatusCode::OK);
    }
    assert!(
        api.metrics.fallback.get() >= fallback + 5,
        "the fallback is counted"
    );
    assert_eq!(api.metrics.redis_up.get(), 0);
    assert_eq!(api.get("/readyz", None).await.status, StatusCode::OK);
    let m = String::from_utf8_lossy(&api.get("/metrics", None).await.body).to_string();
    assert!(m.contains("paystream_api_redis_up 0"), "{m}");
    assert!(
        m.contains("paystream_api_mysql_reads_total{kind=\"redis_down\"}"),
        "{m}"
    );

    proxy.heal();
    wait_for("redis back", Duration::from_secs(20), || {
        let up = api.app.reads.cache().is_up();
        async move { up.then_some(()) }
    })
    .await
    .unwrap();
    let hits = api.metrics.cache.hit.get();
    wait_for(
        "served from redis again",
        Duration::from_secs(20),
        || async {
            let r = api.get(&path, Some(&t)).await;
            (r.status == StatusCode::OK && api.metrics.cache.hit.get() > hits).then_some(())
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn mysql_down_still_serves_cached_reads_and_deadlines_hold() {
    let stack = Stack::from_env();
    let proxy = Proxy::start(addr(stack.mysql_port)).await.unwrap();
    let api = Api::with(Opts {
        mysql_port: proxy.addr.port(),
        request_timeout_ms: 700,
        query_timeout_ms: 5000,
        ..Opts::default()
    })
    .await;
    let admin = &api.admin;
    let u = user(admin).await;
    let t = token(u);
    let p = package(admin, "7.00", true).await;
    let id = api.buy(u, p, 1).await["id"].as_u64().unwrap();
    let other = api.buy(u, p, 1).await["id"].as_u64().unwrap();
    let path = format!("/v1/purchases/{id}");
    assert_eq!(api.get(&path, Some(&t)).await.status, StatusCode::OK);

    // A stalled database: cached reads answer, uncached ones hit the deadline.
    proxy.freeze();
    assert_eq!(api.get(&path, Some(&t)).await.status, StatusCode::OK);
    let started = std::time::Instant::now();
    let r = api.get(&format!("/v1/purchases/{other}"), Some(&t)).await;
    let prob = r.problem(503);
    assert_eq!(prob["type"], "/problems/timeout");
    assert!(r.header("retry-after").is_some());
    assert!(started.elapsed() < Duration::from_secs(3));

    // A dead one: still ready, because Redis answers.
    proxy.cut();
    wait_for("mysql judged down", Duration::from_secs(20), || {
        let down = api.metrics.mysql_up.get() == 0;
        async move { down.then_some(()) }
    })
    .await
    .unwrap();
    assert_eq!(api.get(&path, Some(&t)).await.status, StatusCode::OK);
    assert_eq!(api.get("/readyz", None).await.status, StatusCode::OK);
    proxy.heal();
}

#[tokio::test]
async fn writes_get_503_with_retry_after_while_mysql_is_away_and_succeed_after() {
    let stack = Stack::from_env();
    let proxy = Proxy::start(addr(stack.mysql_port)).await.unwrap();
    let api = Api::with(Opts {
        mysql_port: proxy.addr.port(),
        request_timeout_ms: 1500,
        query_timeout_ms: 1000,
        ..Opts::default()
    })
    .await;
    let u = user(&api.admin).await;
    let t = token(u);
    let p = package(&api.admin, "3.00", true).await;
    let body = format!(r#"{{"package_id":{p},"quantity":1}}"#);
    api.buy(u, p, 1).await;

    // The database restarts: connections are cut and new ones refused.
    proxy.cut();
    let key = unique_name("k");
    let r = api.post("/v1/purchases", &t, Some(&key), &body).await;
    let prob = r.problem(503);
    assert!(
        r.header("retry-after")
            .is_some_and(|s| s.parse::<u64>().is_ok()),
        "{r:?}"
    );
    assert!(
        prob["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{prob}"
    );

    // Back: the same request (same idempotency key) succeeds, once.
    proxy.heal();
    let r = wait_for("a write after the outage", Duration::from_secs(20), || {
        let (api, t, key, body) = (&api, &t, &key, &body);
        async move {
            let r = api.post("/v1/purchases", t, Some(key), body).await;
            (r.status == StatusCode::CREATED).then_some(r)
        }
    })
    .await
    .unwrap();
    let id = r.json()["id"].as_u64().unwrap();
    let again = api.post("/v1/purchases", &t, Some(&key), &body).await;
    assert!(again.status.is_success(), "{again:?}");
    assert_eq!(again.json()["id"].as_u64(), Some(id));
}

#[tokio::test]
async fn not_ready_when_neither_store_answers() {
    let stack = Stack::from_env();
    let redis = Proxy::start(addr(stack.redis_port)).await.unwrap();
    let mysql = Proxy::start(addr(stack.mysql_port)).await.unwrap();
    let api = Api::with(Opts {
        redis_url: format!(
            "redis://:{}@127.0.0.1:{}/0",
            stack.redis_password,
            redis.addr.port()
        ),
        mysql_port: mysql.addr.port(),
        query_timeout_ms: 500,
        ..Opts::default()
    })
    .await;
    let u = user(&api.admin).await;
    redis.cut();
    mysql.cut();
    wait_for("not ready", Duration::from_secs(20), || async {
        (api.get("/readyz", None).await.status == StatusCode::SERVICE_UNAVAILABLE).then_some(())
    })
    .await
    .unwrap();
    api.get("/readyz", None).await.problem(503);
    api.get("/v1/purchases/1", Some(&token(u)))
        .await
        .problem(503);
    mysql.heal();
    wait_for("ready again", Duration::from_secs(20), || async {
        (api.get("/readyz", None).await.status == StatusCode::OK).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_thousand_concurrent_misses_make_one_query() {
    let api = Api::start().await;
    let u = user(&api.admin).await;
    let t = token(u);
    let p = package(&api.admin, "9.99", true).await;
    let id = api.buy(u, p, 1).await["id"].as_u64().unwrap();
    // Warm the package so only the purchase misses.
    let warm = api.buy(u, p, 1).await["id"].as_u64().unwrap();
    assert_eq!(
        api.get(&format!("/v1/purchases/{warm}"), Some(&t))
            .await
            .status,
        StatusCode::OK
    );
    let queries = api.metrics.db_queries.get();
    let path = format!("/v1/purchases/{id}");
    let runs = (0..1000).map(|_| {
        let (router, t, path) = (api.router.clone(), t.clone(), path.clone());
        tokio::spawn(async move {
            use tower::ServiceExt;
            let req = axum::http::Request::get(path)
                .header("authorization", format!("Bearer {t}"))
                .body(axum::body::Body::empty())
                .unwrap();
            router.oneshot(req).await.unwrap().status()
        })
    });
    for s in futures::future::join_all(runs).await {
        assert_eq!(s.unwrap(), StatusCode::OK);
    }
    assert_eq!(api.metrics.db_queries.get() - queries, 1, "one MySQL query");
    assert!(api.metrics.coalesced.get() > 0);
}

#[tokio::test]
async fn the_database_read_limit_refuses_instead_of_queueing() {
    // A private copy of the tables, so a table lock stalls only this test.
    let scratch = paystream_testkit::cdc::Scratch::new("apilimit").await;
    let stack = Stack::from_env();
    let api = Api::with(Opts {
        database: scratch.db.clone(),
        mysql_user: stack.admin.user.clone(),
        mysql_password: stack.admin.password.clone(),
        read_concurrency: 1,
        read_wait_ms: 100,
        query_timeout_ms: 1500,
        ..Opts::default()
    })
    .await;
    let u = user(&api.admin).await;
    let t = token(u);
    let p = package(&api.admin, "1.00", true).await;
    let a = api.buy(u, p, 1).await["id"].as_u64().unwrap();
    let b = api.buy(u, p, 1).await["id"].as_u64().unwrap();
    let mut lock = api.admin.acquire().await.unwrap();
    sqlx::raw_sql("LOCK TABLES purchases WRITE")
        .execute(&mut *lock)
        .await
        .unwrap();
    // A stalled query holds the only read slot ...
    let pa = format!("/v1/purchases/{a}");
    let (ra, rb) = tokio::join!(api.get(&pa, Some(&t)), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        api.get(&format!("/v1/purchases/{b}"), Some(&t)).await
    });
    sqlx::raw_sql("UNLOCK TABLES")
        .execute(&mut *lock)
        .await
        .unwrap();
    drop(lock);
    // ... so the other read is refused quickly rather than queued.
    let prob = rb.problem(503);
    assert_eq!(prob["type"], "/problems/database-busy", "{ra:?} {rb:?}");
    assert!(api.metrics.db_read_rejected.get() > 0);
    ra.problem(503);
    // Once the database answers again, so does the API.
    assert_eq!(api.get(&pa, Some(&t)).await.status, StatusCode::OK);
    drop(api);
    scratch.drop().await;
}

#[tokio::test]
async fn the_near_cache_is_invalidated_by_redis() {
    let api = Api::with(Opts {
        near_capacity: 1000,
        ..Opts::default()
    })
    .await;
    let u = user(&api.admin).await;
    let t = token(u);
    let p = package(&api.admin, "5.55", true).await;
    let bought = api.buy(u, p, 1).await;
    let id = bought["id"].as_u64().unwrap();
    let path = format!("/v1/purchases/{id}");
    // Wait until the tracking connection is up and the near cache serves.
    wait_for("near-cache hit", Duration::from_secs(20), || async {
        let before = api.metrics.near_hit.get();
        let r = api.get(&path, Some(&t)).await;
        (r.status == StatusCode::OK && api.metrics.near_hit.get() > before).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(api.get(&path, Some(&t)).await.json()["version"], 1);
    // The consumer writes version 2: the invalidation reaches the near cache
    // and the next reads show version 2.
    let mut v2 = purchase_only(&bought);
    v2["version"] = 2.into();
    v2["status"] = "paid".into();
    assert_eq!(write_doc(&api, id, 2, &v2).await, 1);
    wait_for("invalidation", Duration::from_secs(5), || async {
        (api.get(&path, Some(&t)).await.json()["version"] == 2).then_some(())
    })
    .await
    .unwrap();
    assert!(api.metrics.near_invalidations.get() > 0);
    // Many rapid updates interleaved with reads never leave a stale entry.
    for v in 3..30u64 {
        let mut d = v2.clone();
        d["version"] = v.into();
        let (w, _) = tokio::join!(write_doc(&api, id, v, &d), api.get(&path, Some(&t)));
        assert_eq!(w, 1);
        wait_for("fresh", Duration::from_secs(5), || async {
            (api.get(&path, Some(&t)).await.json()["version"] == v).then_some(())
        })
        .await
        .unwrap();
    }
}
