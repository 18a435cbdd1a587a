//! The `paystream-api` binary as a real process: `--help` documents every
//! flag, many keep-alive connections are served side by side, and SIGTERM
//! drains a request that is in flight (its response arrives whole) before the
//! process exits 0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{SECRET, admin_pool, package, token, user};
use paystream_testkit::process::{Service, free_port};
use paystream_testkit::{Stack, unique_name, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_paystream-api");

#[test]
fn help_documents_every_flag() {
    let out = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen-addr",
        "--mysql-host",
        "--mysql-port",
        "--mysql-user",
        "--mysql-password",
        "--mysql-database",
        "--mysql-tls",
        "--mysql-max-connections",
        "--mysql-acquire-timeout-ms",
        "--mysql-read-concurrency",
        "--mysql-read-wait-ms",
        "--mysql-query-timeout-ms",
        "--redis-url",
        "--redis-password",
        "--redis-connections",
        "--redis-timeout-ms",
        "--redis-key-prefix",
        "--topic-prefix",
        "--near-cache-capacity",
        "--near-cache-ttl-secs",
        "--jwt-algorithm",
        "--jwt-secret",
        "--jwt-public-key-file",
        "--admin-scope",
        "--max-body-bytes",
        "--request-timeout-ms",
        "--page-size",
        "--max-page-size",
        "--bench-routes",
        "--ops-addr",
        "--shutdown-grace-secs",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    for env in [
        "PAYSTREAM_MYSQL_PASSWORD",
        "PAYSTREAM_JWT_SECRET",
        "PAYSTREAM_REDIS_URL",
    ] {
        assert!(help.contains(env), "{env} missing from --help");
    }
}

fn start(port: u16) -> Service {
    let stack = Stack::from_env();
    let args: Vec<String> = [
        "--listen-addr",
        &format!("127.0.0.1:{port}"),
        "--mysql-port",
        &stack.mysql_port.to_string(),
        "--mysql-user",
        &stack.app.user,
        "--mysql-password",
        &stack.app.password,
        "--redis-url",
        &stack.redis_url(),
        "--redis-key-prefix",
        &unique_name("apisrv").replace('_', "-"),
        "--jwt-secret",
        SECRET,
        "--shutdown-grace-secs",
        "20",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Service::spawn("api", Path::new(BIN), &args, &[("PAYSTREAM_LOG", "info")])
}

async fn read_response(s: &mut TcpStream) -> String {
    // Reads one response: headers, then Content-Length bytes.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return text;
            }
        }
        let n = s.read(&mut chunk).await.unwrap();
        if n == 0 {
            return String::from_utf8_lossy(&buf).to_string();
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn keep_alive_connections_and_graceful_drain() {
    let port = free_port();
    let mut api = start(port);
    api.wait_ready(Duration::from_secs(60)).await;
    let addr = format!("127.0.0.1:{port}");

    // 500 keep-alive connections, two requests each.
    let mut conns = Vec::new();
    for _ in 0..500 {
        conns.push(TcpStream::connect(&addr).await.unwrap());
    }
    for round in 0..2 {
        for c in conns.iter_mut() {
            c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
        }
        for c in conns.iter_mut() {
            let r = read_response(c).await;
            assert!(r.starts_with("HTTP/1.1 200"), "round {round}: {r}");
        }
    }

    // A request in flight when SIGTERM arrives: headers and half the body.
    let admin = admin_pool("payments").await;
    let u = user(&admin).await;
    let p = package(&admin, "2.50", true).await;
    let body = format!(r#"{{"package_id":{p},"quantity":1}}"#);
    let (first, rest) = body.split_at(body.len() / 2);
    let mut inflight = TcpStream::connect(&addr).await.unwrap();
    inflight
        .write_all(
            format!(
                "POST /v1/purchases HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
                 Content-Type: application/json\r\nIdempotency-Key: drain\r\n\
                 Content-Length: {}\r\n\r\n{first}",
                token(u),
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = api.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // New connections are refused once the listener is closed ...
    wait_for("listener closed", Duration::from_secs(10), || {
        let addr = addr.clone();
        async move { TcpStream::connect(&addr).await.is_err().then_some(()) }
    })
    .await
    .unwrap();
    // ... and the process is still there, waiting for the open request.
    assert!(!api.exited(), "exited before draining:\n{}", api.log_text());
    inflight.write_all(rest.as_bytes()).await.unwrap();
    let r = read_response(&mut inflight).await;
    assert!(r.starts_with("HTTP/1.1 201"), "{r}\n{}", api.log_text());
    let status = wait_for("exit", Duration::from_secs(20), || {
        let done = api.child.try_wait().ok().flatten();
        async move { done }
    })
    .await
    .unwrap();
    assert!(status.success(), "{status:?}\n{}", api.log_text());
}
