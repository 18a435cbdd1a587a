//! A paystream binary running as a real child process: its log in
//! `var/test-logs/`, its operations server on a free loopback port, and the
//! ways a test stops it (SIGKILL: no chance to clean up; SIGTERM: graceful).
//! The process is killed when the handle is dropped, so a failing test
//! leaves nothing behind. [`workspace_binary`] builds the binary to run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::{repo_root, unique_name, wait_for};

/// A free TCP port on 127.0.0.1 (free when asked; the OS may reuse it later).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A child process with an operations server.
pub struct Service {
    /// The process.
    pub child: Child,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    /// Its operations server, `host:port`.
    pub ops: String,
}

impl Service {
    /// Starts `program` with `args` plus `--ops-addr <free port>`, logging to
    /// `var/test-logs/<name>-<unique>.log`.
    pub fn spawn(name: &str, program: &Path, args: &[String], env: &[(&str, &str)]) -> Self {
        let log_dir = repo_root().join("var/test-logs");
        let _ = std::fs::create_dir_all(&log_dir);
        let log = log_dir.join(format!("{}.log", unique_name(name)));
        let ops = format!("127.0.0.1:{}", free_port());
        let out = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot clone log handle: {e}"));
        let mut cmd = Command::new(program);
        cmd.args(args)
            .args(["--ops-addr", &ops])
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Self { child, log, ops }
    }

    /// SIGKILL: no chance to commit anything.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child
            .wait()
            .unwrap_or_else(|e| panic!("waiting for pid {pid}: {e}"))
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `path` on the operations server: status code and whole response,
    /// or `(0, reason)` when nothing listens.
    pub async fn get(&self, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut s) = tokio::net::TcpStream::connect(&self.ops).await else {
            return (0, "not listening".into());
        };
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let _ = s.write_all(req.as_bytes()).await;
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf).await;
        let code = buf.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        (code, buf)
    }

    /// `/readyz`.
    pub async fn readyz(&self) -> (u16, String) {
        self.get("/readyz").await
    }

    /// The value of one Prometheus sample line, e.g.
    /// `paystream_consumer_dead_letters_total`; summed over label sets when
    /// `name` is followed by labels in the output.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (code, body) = self.get("/metrics").await;
        if code != 200 {
            return None;
        }
        let mut found = None;
        for line in body.lines() {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            if !(rest.starts_with(' ') || rest.starts_with('{')) {
                continue;
            }
            let value = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
            if let Some(v) = value {
                found = Some(found.unwrap_or(0.0) + v);
            }
        }
        found
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self, deadline: Duration) {
        wait_for("service ready", deadline, || async {
            (self.readyz().await.0 == 200).then_some(())
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}\n--- log {} ---\n{}",
                self.log.display(),
                self.log_text()
            )
        });
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The executable `cargo build -p <package> --bin <package>` produces, built
/// once per test process and package (cargo's own cache makes it cheap when
/// nothing changed).
pub fn workspace_binary(package: &str) -> PathBuf {
    static BINS: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut bins = BINS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(p) = bins.get(package) {
        return p.clone();
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo)
        .current_dir(repo_root())
        .args([
            "build",
            "-p",
            package,
            "--bin",
            package,
            "--message-format=json-render-diagnostics",
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"));
    assert!(
        out.status.success(),
        "cargo build -p {package} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
        .next_back()
        .unwrap_or_else(|| panic!("cargo named no {package} executable"));
    bins.insert(package.to_string(), path.clone());
    path
}
