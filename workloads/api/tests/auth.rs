//! Authentication and authorisation: missing and bad tokens are 401 on every
//! endpoint, user A can neither read nor pay for user B's purchases (404, so
//! existence does not leak) nor list them (403), an admin reads anyone's, and
//! both HS256 and RS256 configurations verify what they should and nothing
//! else.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::StatusCode;
use common::{Api, Opts, admin_token, claims_token, exp, package, token, user};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

#[tokio::test]
async fn missing_or_bad_tokens_are_401_everywhere() {
    let api = Api::start().await;
    let u = user(&api.admin).await;
    let bad = [
        None,
        Some("not-a-jwt".to_string()),
        Some(claims_token(
            serde_json::json!({"sub": u.to_string(), "exp": 1000}),
        )),
        Some(claims_token(serde_json::json!({"sub": u.to_string()}))),
        Some(claims_token(
            serde_json::json!({"sub": "alice", "exp": exp()}),
        )),
        Some(
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &serde_json::json!({"sub": u.to_string(), "exp": exp()}),
                &EncodingKey::from_secret(b"some-other-secret-some-other-secret"),
            )
            .unwrap(),
        ),
        // alg "none": header {"alg":"none"} and no signature.
        Some(format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            base64_url(&format!(r#"{{"sub":"{u}","exp":{}}}"#, exp()))
        )),
    ];
    for t in &bad {
        for path in ["/v1/purchases/1", &format!("/v1/users/{u}/purchases")] {
            let r = api.get(path, t.as_deref()).await;
            let p = r.problem(401);
            assert_eq!(p["type"], "/problems/unauthorized");
            assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
        }
        let tok = t.clone().unwrap_or_default();
        api.post(
            "/v1/purchases",
            &tok,
            Some("k"),
            r#"{"package_id":1,"quantity":1}"#,
        )
        .await
        .problem(401);
        api.post(
            "/v1/purchases/1/payments",
            &tok,
            Some("k"),
            r#"{"method":"card"}"#,
        )
        .await
        .problem(401);
    }
    // A token for a user that does not exist cannot buy.
    let p = package(&api.admin, "1.00", true).await;
    api.post(
        "/v1/purchases",
        &token(u64::MAX - 7),
        Some("ghost"),
        &format!(r#"{{"package_id":{p},"quantity":1}}"#),
    )
    .await
    .problem(403);
}

fn base64_url(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, x)| acc | (u32::from(*x) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn a_user_cannot_read_or_pay_for_anothers_purchase() {
    let api = Api::start().await;
    let a = user(&api.admin).await;
    let b = user(&api.admin).await;
    let p = package(&api.admin, "4.00", true).await;
    let bs = api.buy(b, p, 1).await["id"].as_u64().unwrap();

    // Read by id: 404, exactly like a purchase that does not exist, from the
    // database and from the cache alike.
    for _ in 0..2 {
        let r = api
            .get(&format!("/v1/purchases/{bs}"), Some(&token(a)))
            .await;
        let p404 = r.problem(404);
        let none = api
            .get("/v1/purchases/18446744073709551615", Some(&token(a)))
            .await
            .problem(404);
        assert_eq!(p404["type"], none["type"]);
        // The owner warms the cache for the second round.
        assert_eq!(
            api.get(&format!("/v1/purchases/{bs}"), Some(&token(b)))
                .await
                .status,
            StatusCode::OK
        );
    }
    // List: 403.
    let p403 = api
        .get(&format!("/v1/users/{b}/purchases"), Some(&token(a)))
        .await
        .problem(403);
    assert_eq!(p403["type"], "/problems/forbidden");
    // Pay: 404, and nothing changes.
    api.post(
        &format!("/v1/purchases/{bs}/payments"),
        &token(a),
        Some("steal"),
        r#"{"method":"card"}"#,
    )
    .await
    .problem(404);
    let (status, n): (String, i64) = sqlx::query_as(
        "SELECT p.status, (SELECT COUNT(*) FROM payments WHERE purchase_id = p.id) FROM purchases p WHERE p.id = ?",
    )
    .bind(bs)
    .fetch_one(&api.admin)
    .await
    .unwrap();
    assert_eq!((status.as_str(), n), ("pending", 0));

    // An admin reads anyone's purchases, but pays only their own.
    let admin = user(&api.admin).await;
    let r = api
        .get(&format!("/v1/purchases/{bs}"), Some(&admin_token(admin)))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["user_id"], b);
    let r = api
        .get(
            &format!("/v1/users/{b}/purchases"),
            Some(&admin_token(admin)),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["items"][0]["id"], bs);
    api.post(
        &format!("/v1/purchases/{bs}/payments"),
        &admin_token(admin),
        Some("admin-pay"),
        r#"{"method":"card"}"#,
    )
    .await
    .problem(404);
    // The owner can.
    let r = api
        .post(
            &format!("/v1/purchases/{bs}/payments"),
            &token(b),
            Some("own"),
            r#"{"method":"card"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
}

#[tokio::test]
async fn rs256_tokens_verify_with_the_public_key() {
    let dir = paystream_testkit::repo_root()
        .join("var/test-logs")
        .join(paystream_testkit::unique_name("rsa"));
    let (private, public) = paystream_testkit::keys::rsa_pair(&dir);
    let api = Api::with(Opts {
        rs256_public_pem: Some(public),
        ..Opts::default()
    })
    .await;
    let u = user(&api.admin).await;
    let p = package(&api.admin, "1.00", true).await;
    let rs = |claims: serde_json::Value| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &claims,
            &EncodingKey::from_rsa_pem(&private).unwrap(),
        )
        .unwrap()
    };
    let good = rs(serde_json::json!({"sub": u.to_string(), "exp": exp()}));
    let r = api
        .post(
            "/v1/purchases",
            &good,
            Some("rs"),
            &format!(r#"{{"package_id":{p},"quantity":1}}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let id = r.json()["id"].as_u64().unwrap();
    let r = api.get(&format!("/v1/purchases/{id}"), Some(&good)).await;
    assert_eq!(r.status, StatusCode::OK);
    // An HS256 token (even with the right claims) is refused: no algorithm
    // confusion.
    api.get(&format!("/v1/purchases/{id}"), Some(&token(u)))
        .await
        .problem(401);
    let expired = rs(serde_json::json!({"sub": u.to_string(), "exp": 1000}));
    api.get(&format!("/v1/purchases/{id}"), Some(&expired))
        .await
        .problem(401);
    let admin = rs(serde_json::json!({"sub": "1", "exp": exp(), "scope": ["admin"]}));
    let r = api
        .get(&format!("/v1/users/{u}/purchases"), Some(&admin))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let _ = std::fs::remove_dir_all(&dir);
}
