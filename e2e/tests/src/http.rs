//! Just enough HTTP and JWT for the real-pod tests to talk to the API as a
//! client would: an HS256 token signed with `openssl` (no JWT crate in the
//! test's dependencies), and HTTP/1.1 requests over a plain TCP stream, one
//! connection each, so a request through a NodePort lands on whichever pod
//! kube-proxy picks.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::tools::run_ok;

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

/// An HS256 JWT for user `sub`, valid for ten minutes, with `scope` when
/// given (the API's admin scope is `admin`).
pub fn token(secret: &str, sub: &str, scope: Option<&str>) -> Result<String> {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 600;
    let header = base64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let mut claims = serde_json::json!({ "sub": sub, "exp": exp });
    if let Some(scope) = scope {
        claims["scope"] = scope.into();
    }
    let input = format!("{header}.{}", base64url(claims.to_string().as_bytes()));
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

/// A response: status and body.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Body (the API never uses chunked encoding with `Connection: close`
    /// clients that send no `TE`, and the tests only read small bodies).
    pub body: String,
}

/// `GET path` with a bearer token, on a connection of its own, within
/// `timeout`.
pub async fn get(addr: SocketAddr, path: &str, token: &str, timeout: Duration) -> Result<Response> {
    tokio::time::timeout(timeout, async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("no HTTP status line")?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok(Response { status, body })
    })
    .await
    .with_context(|| format!("GET {path} on {addr}: no answer within {timeout:?}"))?
}
