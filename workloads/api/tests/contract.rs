//! Contract tests: every endpoint, its success shape and headers, and every
//! error case the API promises (problem+json with the right status), through
//! the real router against the local stack.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{Api, admin_token, package, token, user};
use paystream_testkit::unique_name;

#[tokio::test]
async fn openapi_lists_every_route() {
    let api = Api::start().await;
    let r = api.get("/openapi.json", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let expected = [
        ("/v1/users/{user_id}/purchases", "get"),
        ("/v1/purchases/{id}", "get"),
        ("/v1/purchases", "post"),
        ("/v1/purchases/{id}/payments", "post"),
        ("/openapi.json", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ];
    for (path, method) in expected {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing from {}",
            doc["paths"]
        );
    }
    assert_eq!(doc["paths"].as_object().unwrap().len(), expected.len());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for schema in [
        "Problem",
        "PurchaseOut",
        "PageOut",
        "PaidOut",
        "NewPurchase",
        "NewPayment",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "schema {schema}"
        );
    }
    // Every documented operation documents its problem responses.
    let get = &doc["paths"]["/v1/purchases/{id}"]["get"]["responses"];
    for code in ["200", "400", "401", "404", "503"] {
        assert!(get[code].is_object(), "GET purchase documents {code}");
    }
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let api = Api::start().await;
    assert_eq!(api.get("/healthz", None).await.status, StatusCode::OK);
    assert_eq!(api.get("/readyz", None).await.status, StatusCode::OK);
    let _ = api.get("/v1/purchases/1", None).await;
    let r = api.get("/metrics", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let text = String::from_utf8_lossy(&r.body);
    for m in [
        "paystream_api_request_duration_seconds_bucket",
        "route=\"/v1/purchases/{id}\",method=\"GET\",status=\"401\"",
        "paystream_api_cache_lookups_total",
        "paystream_api_fallback_total",
        "paystream_api_redis_up 1",
        "paystream_api_mysql_up 1",
    ] {
        assert!(text.contains(m), "{m} missing from\n{text}");
    }
}

#[tokio::test]
async fn buy_then_read_one_purchase() {
    let api = Api::start().await;
    let u = user(&api.admin).await;
    let p = package(&api.admin, "19.99", true).await;
    let r = api
        .post(
            "/v1/purchases",
            &token(u),
            Some("buy-1"),
            &format!(r#"{{"package_id":{p},"quantity":3}}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let body = r.json();
    let id = body["id"].as_u64().unwrap();
    assert_eq!(
        r.header("location"),
        Some(format!("/v1/purchases/{id}").as_str())
    );
    assert_eq!(r.header("etag"), Some("\"1\""));
    assert_eq!(
        r.header("x-consistency-token"),
        Some(format!("{id}:1").as_str())
    );
    assert_eq!(r.header("idempotent-replayed"), Some("false"));
    assert_eq!(body["user_id"], u);
    assert_eq!(body["amount"], "59.97");
    assert_eq!(body["currency"], "EUR");
    assert_eq!(body["status"], "pending");
    assert_eq!(body["version"], 1);
    assert_eq!(body["package"]["id"], p);
    assert_eq!(body["package"]["price"], "19.99");

    let hits = api.metrics.cache.hit.get();
    let first = api
        .get(&format!("/v1/purchases/{id}"), Some(&token(u)))
        .await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    assert_eq!(first.header("content-type"), Some("application/json"));
    assert_eq!(first.header("etag"), Some("\"1\""));
    assert_eq!(first.json(), body, "the read shows what the write returned");
    let second = api
        .get(&format!("/v1/purchases/{id}"), Some(&token(u)))
        .await;
    assert_eq!(second.body, first.body);
    assert!(
        api.metrics.cache.hit.get() > hits,
        "the second read is a cache hit"
    );

    let missing = api
        .get("/v1/purchases/18446744073709551615", Some(&token(u)))
        .await;
    missing.problem(404);
}

#[tokio::test]
async fn idempotent_purchase_retries() {
    let api = Api::start().await;
    let u = user(&api.admin).await;
    let p = package(&api.admin, "5.00", true).await;
    let body = format!(r#"{{"package_id":{p},"quantity":2}}"#);
    let key = unique_name("idem");
    let first = api
        .post("/v1/purchases", &token(u), Some(&key), &body)
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = api
        .post("/v1/purchases", &token(u), Some(&key), &body)
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json()["id"], first.json()["id"]);

    // Concurrent retries of a new key make one purchase.
    let key2 = unique_name("idem");
    let tu = token(u);
    let runs = (0..10).map(|_| api.post("/v1/purchases", &tu, Some(&key2), &body));
    let out = futures::future::join_all(runs).await;
    let ids: std::collections::BTreeSet<u64> = out
        .iter()
        .map(|r| {
            assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
            r.json()["id"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one purchase for one key: {ids:?}");

    // The same key with another body is refused.
    let other = format!(r#"{{"package_id":{p},"quantity":3}}"#);
    let p422 = api
        .post("/v1/purchases", &token(u), Some(&key), &other)
        .await
        .problem(422);
    assert_eq!(p422["type"], "/problems/idempotency-key-reused");

    // Another user may use the same key.
    let v = user(&api.admin).await;
    let theirs = api
        .post("/v1/purchases", &token(v), Some(&key), &body)
        .await;
    assert_eq!(theirs.status, StatusCode::CREATED);
    assert_ne!(theirs.json()["id"], first.json()["id"]);

    // The key is required and bounded.
    let p = api
        .post("/v1/purchases", &token(u), None, &body)
        .await
        .problem(400);
    assert_eq!(p["type"], "/problems/missing-idempotency-key");
    let long = "k".repeat(101);
    api.post("/v1/purchases", &token(u), Some(&long), &body)
        .await
        .problem(400);
}

#[tokio::test]
async fn purchase_body_errors() {
    let api = Api::start().await;
    let u = user(&api.admin).await;
    let t = token(u);
    let p = package(&api.admin, "1.00", true).await;
    for bad in [
        "",
        "{",
        "[]",
        "null",
        r#"{"package_id":1}"#,
        r#"{"package_id":"1","quantity":1}"#,
        r#"{"package_id":-1,"quantity":1}"#,
        r#"{"package_id":1,"quantity":1,"extra":true}"#,
        r#"{"package_id":18446744073709551616,"quantity":1}"#,
        r#"{"package_id":0,"quantity":1}"#,
        &format!(r#"{{"package_id":{p},"quantity":0}}"#),
        &format!(r#"{{"package_id":{p},"quantity":1001}}"#),
    ] {
        let r = api
            .post("/v1/purchases", &t, Some(&unique_name("k")), bad)
            .await;
        let prob = r.problem(400);
        assert_eq!(prob["type"], "/problems/invalid-body", "{bad}: {prob}");
    }
    // Wrong or missing content type: 415.
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut b = Request::post("/v1/purchases")
            .header("authorization", format!("Bearer {t}"))
            .header("idempotency-key", "ct");
        if let Some(ct) = ct {
            b = b.header("content-type", ct);
        }
        let r = api
            .send(
                b.body(Body::from(format!(r#"{{"package_id":{p},"quantity":1}}"#)))
                    .unwrap(),
            )
            .await;
        r.problem(415);
    }
    // Too large: 413.
    let big = format!(
        r#"{{"package_id":{p},"quantity":1,"pad":"{}"}}"#,
        "x".repeat(8000)
    );
    let prob = api
        .post("/v1/purchases", &t, Some("big"), &big)
        .await
        .problem(413);
    assert_eq!(prob["type"], "/problems/body-too-large");
    // Unknown, inactive, and too expensive packages: 422.
    let prob = api
        .post(
            "/v1/purchases",
            &t,
            Some("u1"),
            r#"{"package_id":18446744073709551615,"quantity":1}"#,
        )
        .await
        .problem(422);
    assert_eq!(prob["type"], "/problems/unknown-package");
    let inactive = package(&api.admin, "1.00", false).await;
    let prob = api
        .post(
            "/v1/purchases",
            &t,
            Some("u2"),
            &format!(r#"{{"package_id":{inactive},"quantity":1}}"#),
        )
        .await
        .problem(422);
    assert_eq!(prob["type"], "/problems/package-inactive");
    let dear = package(&api.admin, "9999999999.99", true).await;
    let prob = api
        .post(
            "/v1/purchases",
            &t,
            Some("u3"),
            &format!(r#"{{"package_id":{dear},"quantity":1000}}"#),
        )
        .await
        .problem(422);
    assert_eq!(prob["type"], "/problems/amount-too-large");
}

#[tokio::test]
async fn paying_follows_the_state_rules() {
    let api = Api::start().await;
    let u = user(&api.admin).await;
    let t = token(u);
    let p = package(&api.admin, "10.50", true).await;
    let bought = api.buy(u, p, 2).await;
    let id = bought["id"].as_u64().unwrap();
    let path = format!("/v1/purchases/{id}/payments");

    let paid = api
        .post(&path, &t, Some("pay-1"), r#"{"method":"card"}"#)
        .await;
    assert_eq!(paid.status, StatusCode::CREATED, "{paid:?}");
    let body = paid.json();
    assert_eq!(body["payment"]["purchase_id"], id);
    assert_eq!(body["payment"]["amount"], "21.00");
    assert_eq!(body["payment"]["status"], "succeeded");
    assert_eq!(body["payment"]["method"], "card");
    assert!(
        body["payment"]["provider_ref"]
            .as_str()
            .unwrap()
            .starts_with("stub_")
    );
    assert_eq!(body["purchase"]["status"], "paid");
    assert_eq!(body["purchase"]["version"], 2);
    assert_eq!(paid.header("etag"), Some("\"2\""));
    assert_eq!(
        paid.header("x-consistency-token"),
        Some(format!("{id}:2").as_str())
    );

    // A retry returns the first result.
    let again = api
        .post(&path, &t, Some("pay-1"), r#"{"method":"card"}"#)
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json()["payment"]["id"], body["payment"]["id"]);

    // No paying twice.
    let prob = api
        .post(&path, &t, Some("pay-2"), r#"{"method":"wallet"}"#)
        .await
        .problem(409);
    assert_eq!(prob["type"], "/problems/already-paid");
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM payments WHERE purchase_id = ?")
        .bind(id)
        .fetch_one(&api.admin)
        .await
        .unwrap();
    assert_eq!(n, 1, "exactly one payment");

    // The key of that payment cannot pay another purchase.
    let other = api.buy(u, p, 1).await["id"].as_u64().unwrap();
    let prob = api
        .post(
            &format!("/v1/purchases/{other}/payments"),
            &t,
            Some("pay-1"),
            r#"{"method":"card"}"#,
        )
        .await
        .problem(422);
    assert_eq!(prob["type"], "/problems/idempotency-key-reused");

    // No paying a cancelled purchase.
    let cancelled = api.buy(u, p, 1).await["id"].as_u64().unwrap();
    sqlx::query("UPDATE purchases SET status = 'cancelled' WHERE id = ?")
        .bind(cancelled)
        .execute(&api.admin)
        .await
        .unwrap();
    let prob = api
        .post(
            &format!("/v1/purchases/{cancelled}/payments"),
            &t,
            Some("pay-3"),
            r#"{"method":"card"}"#,
        )
        .await
        .problem(409);
    assert_eq!(prob["type"], "/problems/purchase-cancelled");

    // Unknown purchase, bad method, missing key.
    api.post(
        "/v1/purchases/18446744073709551615/payments",
        &t,
        Some("x"),
        r#"{"method":"card"}"#,
    )
    .await
    .problem(404);
    api.post(
        &format!("/v1/purchases/{other}/payments"),
        &t,
        Some("x2"),
        r#"{"method":"cash"}"#,
    )
    .await
    .problem(400);
    api.post(
        &format!("/v1/purchases/{other}/payments"),
        &t,
        None,
        r#"{"method":"card"}"#,
    )
    .await
    .problem(400);
}

#[tokio::test]
async fn if_match_guards_payments() {
    let api = Api::start().await;
    let u = user(&api.admin).await;
    let t = token(u);
    let p = package(&api.admin, "3.00", true).await;
    let id = api.buy(u, p, 1).await["id"].as_u64().unwrap();
    let pay = |if_match: &'static str, key: &'static str| {
        Request::post(format!("/v1/purchases/{id}/payments"))
            .header("authorization", format!("Bearer {t}"))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .header("if-match", if_match)
            .body(Body::from(r#"{"method":"bank_transfer"}"#))
            .unwrap()
    };
    let prob = api.send(pay("\"7\"", "im-1")).await.problem(412);
    assert_eq!(prob["type"], "/problems/version-mismatch");
    api.send(pay("\"seven\"", "im-2")).await.problem(400);
    let ok = api.send(pay("\"1\"", "im-3")).await;
    assert_eq!(ok.status, StatusCode::CREATED, "{ok:?}");
    assert_eq!(ok.json()["purchase"]["status"], "paid");
}

#[tokio::test]
async fn lists_are_newest_first_and_paginated() {
    let api = Api::start().await;
    let u = user(&api.admin).await;
    let t = token(u);
    let p = package(&api.admin, "2.00", true).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(api.buy(u, p, 1).await["id"].as_u64().unwrap());
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0..3 {
        let path = match &cursor {
            Some(c) => format!("/v1/users/{u}/purchases?limit=2&cursor={c}"),
            None => format!("/v1/users/{u}/purchases?limit=2"),
        };
        let r = api.get(&path, Some(&t)).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        let body = r.json();
        let items = body["items"].as_array().unwrap();
        assert_eq!(items.len(), if page < 2 { 2 } else { 1 });
        for it in items {
            assert_eq!(it["user_id"], u);
            assert_eq!(it["package"]["id"], p);
            seen.push(it["id"].as_u64().unwrap());
        }
        cursor = body["next_cursor"].as_str().map(str::to_string);
        assert_eq!(cursor.is_some(), page < 2, "{body}");
    }
    assert_eq!(seen, ids, "newest first, each once");

    // Served from Redis once the model is complete, with the same answer.
    api.mark_model_complete().await;
    let hits = api.metrics.cache.hit.get();
    let from_redis = api
        .get(&format!("/v1/users/{u}/purchases?limit=10"), Some(&t))
        .await;
    assert_eq!(from_redis.status, StatusCode::OK);
    assert!(api.metrics.cache.hit.get() > hits, "list served from Redis");
    let ids_redis: Vec<u64> = from_redis.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids_redis, ids);
    let r = api
        .get(&format!("/v1/users/{u}/purchases?limit=2"), Some(&t))
        .await;
    let c = r.json()["next_cursor"].as_str().unwrap().to_string();
    let r2 = api
        .get(
            &format!("/v1/users/{u}/purchases?limit=10&cursor={c}"),
            Some(&t),
        )
        .await;
    let rest: Vec<u64> = r2.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_u64().unwrap())
        .collect();
    assert_eq!(rest, ids[2..].to_vec(), "cursor pages from Redis");

    // An empty list is a page with no items.
    let nobody = user(&api.admin).await;
    let r = api
        .get(
            &format!("/v1/users/{nobody}/purchases"),
            Some(&token(nobody)),
        )
        .await;
    assert_eq!(
        r.json(),
        serde_json::json!({"items": [], "next_cursor": null})
    );

    // Malformed parameters.
    for q in [
        "limit=0",
        "limit=101",
        "limit=abc",
        "limit=-1",
        "cursor=%%%",
        "cursor=bm90LWEtY3Vyc29y",
        "min_version=5",
        "min_version=x:1",
    ] {
        let r = api
            .get(&format!("/v1/users/{u}/purchases?{q}"), Some(&t))
            .await;
        r.problem(400);
    }
}

#[tokio::test]
async fn malformed_ids_and_parameters_are_400() {
    let api = Api::start().await;
    let u = user(&api.admin).await;
    let t = token(u);
    for id in [
        "abc",
        "0",
        "-1",
        "1.5",
        "99999999999999999999999",
        "%20",
        "1e3",
    ] {
        let prob = api
            .get(&format!("/v1/purchases/{id}"), Some(&t))
            .await
            .problem(400);
        assert_eq!(prob["type"], "/problems/invalid-id", "{id}");
        let prob = api
            .get(&format!("/v1/users/{id}/purchases"), Some(&t))
            .await
            .problem(400);
        assert_eq!(prob["type"], "/problems/invalid-id", "{id}");
        api.post(
            &format!("/v1/purchases/{id}/payments"),
            &t,
            Some("k"),
            r#"{"method":"card"}"#,
        )
        .await
        .problem(400);
    }
    for q in [
        "min_version=0",
        "min_version=abc",
        "min_version=1:2:3",
        "min_version=99:1",
    ] {
        api.get(&format!("/v1/purchases/1?{q}"), Some(&t))
            .await
            .problem(400);
    }
    let r = api
        .send(
            Request::get("/v1/purchases/1")
                .header("authorization", format!("Bearer {t}"))
                .header("x-min-version", "nope")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    r.problem(400);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let api = Api::start().await;
    let p = api.get("/nope", None).await.problem(404);
    assert!(p["detail"].as_str().unwrap().contains("/nope"));
    api.get("/v1/purchases", None).await.problem(405);
    let r = api
        .send(
            Request::delete("/v1/purchases/1")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    r.problem(405);
    api.get("/v1/users/1/purchases/extra", None)
        .await
        .problem(404);
}

#[tokio::test]
async fn no_input_causes_a_500() {
    let api = Api::start().await;
    let u = user(&api.admin).await;
    let t = token(u);
    let long = "9".repeat(5000);
    let paths = [
        "/v1/purchases/%FF".to_string(),
        "/v1/purchases/%00".to_string(),
        format!("/v1/purchases/{long}"),
        "/v1/users/1/purchases?limit=1&limit=2".to_string(),
        "/v1/users/1/purchases?cursor=".to_string(),
        "/v1/users/%F0%9F%92%A9/purchases".to_string(),
        "/v1//purchases".to_string(),
        "/v1/purchases/1?min_version=%FF".to_string(),
    ];
    for p in &paths {
        for tok in [Some(t.as_str()), None, Some("x.y.z")] {
            let r = api.get(p, tok).await;
            assert!(r.status.is_client_error(), "{p}: {r:?}");
            assert_eq!(
                r.header("content-type"),
                Some("application/problem+json"),
                "{p}"
            );
        }
    }
    let r = api
        .send(
            Request::get("/v1/purchases/1")
                .header("authorization", &b"Bearer \xff\xfe"[..])
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    r.problem(401);
    // An admin reading a list with every parameter wrong still gets a 4xx.
    let r = api
        .get(
            "/v1/users/1/purchases?limit=x&cursor=y&min_version=z",
            Some(&admin_token(u)),
        )
        .await;
    r.problem(400);
}
