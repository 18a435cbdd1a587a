//! A private Redis server for tests that must destroy data (FLUSHALL, a
//! restart without persistence) without touching the shared stack Redis: the
//! Debian `redis-server` on a free loopback port, with the stack's password
//! and no persistence, and a Sentinel that watches it. Both are killed when
//! dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::process::free_port;
use crate::{Stack, repo_root, unique_name, wait_for};

/// A private `redis-server`.
pub struct RedisServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its password.
    pub password: String,
    child: Option<Child>,
    log: PathBuf,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers.
    pub async fn start() -> Self {
        let stack = Stack::from_env();
        let dir = repo_root().join("var/test-logs");
        let _ = std::fs::create_dir_all(&dir);
        let mut s = Self {
            port: free_port(),
            password: stack.redis_password,
            child: None,
            log: dir.join(format!("{}.log", unique_name("redis-server"))),
        };
        s.restart().await;
        s
    }

    /// A `redis://` URL with the password, for database `db`.
    pub fn url(&self, db: u32) -> String {
        format!("redis://:{}@127.0.0.1:{}/{db}", self.password, self.port)
    }

    /// Kills the server (all data is gone) and starts it again, empty, on
    /// the same port.
    pub async fn restart(&mut self) {
        self.kill();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log.display()));
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--requirepass",
                &self.password,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &std::env::temp_dir().to_string_lossy(),
            ])
            .stdout(Stdio::from(log))
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server: {e}"));
        self.child = Some(child);
        let url = self.url(0);
        wait_for("private redis-server", Duration::from_secs(30), || {
            let url = url.clone();
            async move {
                let client = redis::Client::open(url).ok()?;
                let mut c = client.get_multiplexed_async_connection().await.ok()?;
                redis::cmd("PING").query_async::<String>(&mut c).await.ok()
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}; log {}", self.log.display()));
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Sentinel (the `redis-server --sentinel` mode) watching a
/// [`RedisServer`] as primary `name`. It is killed when dropped.
pub struct Sentinel {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The monitored primary's name.
    pub name: String,
    child: Child,
}

impl Sentinel {
    /// Starts a Sentinel for `primary` and waits until it reports the primary.
    pub async fn start(primary: &RedisServer, name: &str) -> Self {
        let dir = repo_root().join("var/test-logs");
        let _ = std::fs::create_dir_all(&dir);
        let port = free_port();
        let conf = dir.join(format!("{}.conf", unique_name("sentinel")));
        let text = format!(
            "bind 127.0.0.1\nport {port}\ndir {}\nsentinel monitor {name} 127.0.0.1 {} 1\n\
             sentinel auth-pass {name} {}\nsentinel down-after-milliseconds {name} 5000\n",
            std::env::temp_dir().display(),
            primary.port,
            primary.password
        );
        std::fs::write(&conf, text).unwrap_or_else(|e| panic!("writing {}: {e}", conf.display()));
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server --sentinel: {e}"));
        let url = format!("redis://127.0.0.1:{port}/");
        let name = name.to_string();
        let n = name.clone();
        wait_for(
            "sentinel to know the primary",
            Duration::from_secs(30),
            || {
                let (url, n) = (url.clone(), n.clone());
                async move {
                    let client = redis::Client::open(url).ok()?;
                    let mut c = client.get_multiplexed_async_connection().await.ok()?;
                    redis::cmd("SENTINEL")
                        .arg("get-master-addr-by-name")
                        .arg(&n)
                        .query_async::<Vec<String>>(&mut c)
                        .await
                        .ok()
                        .filter(|a| a.len() == 2)
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        Self { port, name, child }
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
