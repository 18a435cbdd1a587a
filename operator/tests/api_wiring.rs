//! The operator's wiring of the API, checked against the real API binary: a
//! pod gets the pipeline's ConfigMap as environment, its own `env` (plain
//! values and `secretKeyRef`s) and Secret keys mounted as files. This test
//! plays the kubelet: it resolves those from stand-in Secrets, writes the
//! mounted files under a scratch directory, starts `paystream-api` with the
//! result against the local stack, and checks the API is ready and serves a
//! purchase. Two pipelines cover what unit tests of the builders cannot:
//! RS256 tokens with MariaDB TLS through a Redis Cluster, and a Standalone
//! Redis over TLS with the CA from a Secret.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use mysql_async::prelude::Queryable;
use paystream_operator::crd::PaymentPipeline;
use paystream_operator::reconcile::names::Workload;
use paystream_operator::reconcile::validate::validate;
use paystream_operator::reconcile::workloads::deployment;
use paystream_operator::reconcile::{BuildInputs, configmap};
use paystream_testkit::process::{Service, free_port, workspace_binary};
use paystream_testkit::{Stack, repo_root, unique_name};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Stand-in Secrets: `(secret, key) -> value`.
type Secrets = BTreeMap<(String, String), Vec<u8>>;

fn secrets(stack: &Stack, public_pem: &[u8]) -> Secrets {
    let ca = std::fs::read(&stack.tls_ca).unwrap();
    let s = |a: &str, b: &str| (a.to_string(), b.to_string());
    BTreeMap::from([
        (s("db-cdc", "username"), stack.cdc.user.clone().into_bytes()),
        (
            s("db-cdc", "password"),
            stack.cdc.password.clone().into_bytes(),
        ),
        (s("db-app", "username"), stack.app.user.clone().into_bytes()),
        (
            s("db-app", "password"),
            stack.app.password.clone().into_bytes(),
        ),
        (
            s("redis", "password"),
            stack.redis_password.clone().into_bytes(),
        ),
        (s("db-ca", "ca.pem"), ca.clone()),
        (s("redis-ca", "ca.crt"), ca),
        (s("idp", "public.pem"), public_pem.to_vec()),
        (
            s("api-jwt", "secret"),
            b"wiring-test-secret-0123456789abcdef".to_vec(),
        ),
    ])
}

fn pipeline(name: &str, redis: serde_json::Value, api: serde_json::Value) -> PaymentPipeline {
    let stack = Stack::from_env();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "paystream.io/v1alpha1",
        "kind": "PaymentPipeline",
        "metadata": { "name": name, "namespace": "pay", "uid": "u-1", "generation": 1 },
        "spec": {
            "source": {
                "host": "127.0.0.1", "port": stack.mysql_port, "database": "payments",
                "tables": ["purchases", "packages"],
                "credentialsSecretRef": { "name": "db-cdc" },
                "tls": { "mode": "VerifyCa", "caSecretRef": { "name": "db-ca", "key": "ca.pem" } }
            },
            "kafka": { "bootstrapServers": stack.kafka_bootstrap, "topicPrefix": name, "partitions": 1 },
            "redis": redis,
            "api": api,
        }
    }))
    .unwrap()
}

/// The API pod's environment and files, as the kubelet would give them,
/// with mounted files under `root` (paths in values rewritten to match).
fn api_environment(p: &PaymentPipeline, secrets: &Secrets, root: &Path) -> Vec<(String, String)> {
    let v = validate(p).unwrap();
    let inputs = BuildInputs {
        owner: OwnerReference {
            api_version: "paystream.io/v1alpha1".into(),
            kind: "PaymentPipeline".into(),
            name: v.name.clone(),
            uid: "u-1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        },
        consumer_lag: None,
        image_tag: "test".into(),
        secret_versions: BTreeMap::new(),
    };
    let d = deployment(&v, Workload::Api, &inputs, "h").unwrap();
    let pod = d.deployment.spec.unwrap().template.spec.unwrap();
    let container = &pod.containers[0];
    let secret = |name: &str, key: &str| secrets.get(&(name.to_string(), key.to_string()));

    // Mounted Secret keys become files.
    let mounts = container.volume_mounts.clone().unwrap_or_default();
    for vol in pod.volumes.clone().unwrap_or_default() {
        let s = vol.secret.expect("only Secret volumes");
        let m = mounts.iter().find(|m| m.name == vol.name).unwrap();
        for item in s.items.unwrap_or_default() {
            let value = secret(s.secret_name.as_deref().unwrap(), &item.key)
                .unwrap_or_else(|| panic!("no stand-in for {:?}/{}", s.secret_name, item.key));
            let path = root
                .join(m.mount_path.trim_start_matches('/'))
                .join(&item.path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, value).unwrap();
        }
    }
    let relocate = |v: String| match v.strip_prefix('/') {
        Some(rest) if v.starts_with("/etc/paystream/") => root.join(rest).display().to_string(),
        _ => v,
    };

    let mut env: Vec<(String, String)> = configmap::data(&v)
        .into_iter()
        .map(|(k, v)| (k, relocate(v)))
        .collect();
    for e in container.env.clone().unwrap_or_default() {
        if let Some(value) = e.value {
            env.push((e.name, relocate(value)));
        } else if let Some(r) = e.value_from.and_then(|f| f.secret_key_ref) {
            match secret(&r.name, &r.key) {
                Some(value) => env.push((e.name, String::from_utf8(value.clone()).unwrap())),
                None => assert_eq!(
                    r.optional,
                    Some(true),
                    "Secret key {}/{} missing",
                    r.name,
                    r.key
                ),
            }
        }
    }
    env
}

async fn http(port: u16, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\
         Idempotency-Key: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        unique_name("k"),
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let status = buf
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Starts the API with `env`, buys a package as a fresh user and reads the
/// purchase back twice (the second read from Redis).
async fn serves_a_purchase(env: &[(String, String)], token_for: impl Fn(u64) -> String) {
    let stack = Stack::from_env();
    let mut admin = paystream_testkit::cdc::admin(&stack).await;
    let email = format!("{}@wiring.test", unique_name("u"));
    admin
        .query_drop(format!(
            "INSERT INTO payments.users (email, display_name) VALUES ('{email}', 'wiring')"
        ))
        .await
        .unwrap();
    let user: u64 = admin
        .query_first(format!(
            "SELECT id FROM payments.users WHERE email = '{email}'"
        ))
        .await
        .unwrap()
        .unwrap();
    admin
        .query_drop(format!(
            "INSERT INTO payments.packages (code, name, price, currency, active) VALUES ('{}', 'wiring', 2.50, 'EUR', 1)",
            unique_name("pkg")
        ))
        .await
        .unwrap();
    let package: u64 = admin
        .query_first("SELECT LAST_INSERT_ID()")
        .await
        .unwrap()
        .unwrap();

    let port = free_port();
    let mut vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let addr = format!("127.0.0.1:{port}");
    vars.retain(|(k, _)| *k != "PAYSTREAM_API_ADDR" && *k != "PAYSTREAM_LOG_FORMAT");
    vars.push(("PAYSTREAM_API_ADDR", &addr));
    let api = Service::spawn("api-wiring", &workspace_binary("paystream-api"), &[], &vars);
    api.wait_ready(Duration::from_secs(60)).await;

    let token = token_for(user);
    let (status, body) = http(
        port,
        "POST",
        "/v1/purchases",
        &token,
        &format!(r#"{{"package_id":{package},"quantity":1}}"#),
    )
    .await;
    assert_eq!(status, 201, "{body}\n{}", api.log_text());
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_u64()
        .unwrap();
    for _ in 0..2 {
        let (status, body) = http(port, "GET", &format!("/v1/purchases/{id}"), &token, "").await;
        assert_eq!(status, 200, "{body}");
    }
    // The first read missed and filled Redis; the second was a hit.
    let (_, metrics) = api.get("/metrics").await;
    let hits = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"paystream_api_cache_lookups_total{kind="hit"} "#))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(hits.unwrap_or(0.0) >= 1.0, "no read from Redis: {metrics}");
}

fn scratch() -> PathBuf {
    let dir = repo_root()
        .join("var/test-logs")
        .join(unique_name("wiring"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn rs256_mariadb_tls_and_a_redis_cluster_reach_a_working_api() {
    let stack = Stack::from_env();
    let dir = scratch();
    let (private, public) = paystream_testkit::keys::rsa_pair(&dir);
    let p = pipeline(
        "wiring-cluster",
        serde_json::json!({
            "mode": "Cluster",
            "endpoints": paystream_testkit::redis_cluster(),
            "credentialsSecretRef": { "name": "redis" }
        }),
        serde_json::json!({
            "jwtPublicKeyRef": { "name": "idp", "key": "public.pem" },
            "databaseCredentialsSecretRef": { "name": "db-app" }
        }),
    );
    let env = api_environment(&p, &secrets(&stack, &public), &dir.join("root"));
    let key = EncodingKey::from_rsa_pem(&private).unwrap();
    serves_a_purchase(&env, |user| {
        let exp = chrono_exp();
        jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &serde_json::json!({ "sub": user.to_string(), "exp": exp }),
            &key,
        )
        .unwrap()
    })
    .await;
}

#[tokio::test]
async fn redis_tls_with_the_ca_from_a_secret_reaches_a_working_api() {
    let stack = Stack::from_env();
    let dir = scratch();
    let p = pipeline(
        "wiring-tls",
        serde_json::json!({
            "endpoints": [format!("127.0.0.1:{}", stack.redis_tls_port)],
            "tls": true,
            "caSecretRef": { "name": "redis-ca", "key": "ca.crt" },
            "credentialsSecretRef": { "name": "redis" }
        }),
        serde_json::json!({
            "jwtSecretRef": { "name": "api-jwt", "key": "secret" },
            "databaseCredentialsSecretRef": { "name": "db-app" }
        }),
    );
    let env = api_environment(&p, &secrets(&stack, b""), &dir.join("root"));
    let key = EncodingKey::from_secret(b"wiring-test-secret-0123456789abcdef");
    serves_a_purchase(&env, |user| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({ "sub": user.to_string(), "exp": chrono_exp() }),
            &key,
        )
        .unwrap()
    })
    .await;
}

/// An expiry an hour from now.
fn chrono_exp() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600
}
