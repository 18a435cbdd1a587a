//! Real data flow through real pods, on kind only (`make kind-e2e`): a row
//! written to MariaDB is served by the pipeline's API. The pods must really
//! run, which KWOK cannot do, so the test is skipped unless
//! `PAYSTREAM_E2E_REAL_PODS` names the namespace of a running pipeline `demo`
//! (e2e/kind/e2e.sh sets it, with `PAYSTREAM_E2E_JWT_SECRET`, the API's HS256
//! secret).

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use paystream_e2e::tools::{kubectl, run_ok};
use paystream_e2e::{LocalProcess, free_port, poll_until, unique_name};

/// Runs SQL in the MariaDB pod as the application user; tab-separated rows.
fn sql(ns: &str, statements: &str) -> Result<String> {
    run_ok(
        &kubectl(),
        &[
            "-n",
            ns,
            "exec",
            "statefulset/mariadb",
            "--",
            "mariadb",
            "-upaystream_app",
            "-ppaystream-app",
            "payments",
            "-N",
            "-B",
            "-e",
            statements,
        ],
        None,
    )
}

fn base64url(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// An HS256 JWT for user `sub`, signed with `openssl` (no JWT crate needed).
fn token(secret: &str, sub: &str) -> Result<String> {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 600;
    let header = base64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = base64url(
        serde_json::json!({ "sub": sub, "exp": exp })
            .to_string()
            .as_bytes(),
    );
    let input = format!("{header}.{claims}");
    let hex = run_ok(
        std::path::Path::new("openssl"),
        &[
            "dgst",
            "-sha256",
            "-mac",
            "HMAC",
            "-macopt",
            &format!("key:{secret}"),
            "-hex",
            "-r",
        ],
        Some(&input),
    )?;
    let hex = hex
        .split_whitespace()
        .next()
        .context("openssl printed nothing")?;
    let mac = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()?;
    Ok(format!("{input}.{}", base64url(&mac)))
}

/// GET with a bearer token; status and body.
async fn get(port: u16, path: &str, token: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await?;
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status line")?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[tokio::test]
async fn a_row_written_to_mariadb_is_served_by_the_api() -> Result<()> {
    let Ok(ns) = std::env::var("PAYSTREAM_E2E_REAL_PODS") else {
        eprintln!("skipped: PAYSTREAM_E2E_REAL_PODS is not set (kind only: make kind-e2e)");
        return Ok(());
    };
    let secret = std::env::var("PAYSTREAM_E2E_JWT_SECRET")
        .context("PAYSTREAM_E2E_JWT_SECRET (the API's HS256 secret) is not set")?;
    let key = unique_name("e2e");
    let ids = sql(
        &ns,
        &format!(
            "INSERT INTO users (email, display_name) VALUES ('{key}@e2e.invalid', 'e2e'); SET @u = LAST_INSERT_ID(); \
             INSERT INTO packages (code, name, price, currency) VALUES ('{key}', 'e2e', 9.99, 'EUR'); SET @p = LAST_INSERT_ID(); \
             INSERT INTO purchases (user_id, package_id, quantity, amount, currency, idempotency_key) VALUES (@u, @p, 1, 9.99, 'EUR', '{key}'); \
             SELECT @u, LAST_INSERT_ID();"
        ),
    )?;
    let mut it = ids.split_whitespace();
    let (user, purchase) = match (it.next(), it.next()) {
        (Some(u), Some(p)) => (u.to_string(), p.to_string()),
        _ => bail!("unexpected output from MariaDB: {ids:?}"),
    };
    let token = token(&secret, &user)?;
    let port = free_port()?;
    let _forward = LocalProcess::start(
        "kind-api-port-forward",
        &kubectl(),
        &[
            "-n",
            &ns,
            "port-forward",
            "service/demo-api",
            &format!("{port}:8080"),
        ],
        &[],
    )?;
    let body = poll_until(
        "the purchase served by the API",
        Duration::from_secs(120),
        || async {
            match get(port, &format!("/v1/users/{user}/purchases"), &token).await {
                Ok((200, body)) if body.contains(&format!("\"id\":{purchase}")) => Ok(Some(body)),
                Ok((status, body)) => Err(anyhow::anyhow!("HTTP {status}: {body}")),
                Err(e) => Err(e),
            }
        },
    )
    .await?;
    ensure!(
        body.contains("\"amount\":\"9.99\""),
        "the amount is missing: {body}"
    );
    let (status, one) = get(port, &format!("/v1/purchases/{purchase}"), &token).await?;
    ensure!(
        status == 200,
        "GET /v1/purchases/{purchase}: HTTP {status}: {one}"
    );
    Ok(())
}
