//! The faults: what kinds there are, the seeded schedule that spreads them
//! over the run (a pure function), and their injection. Children (producer,
//! consumer, API) are killed with SIGKILL and started again; the shared
//! MariaDB and Kafka are restarted with the stack's own `stop.sh`/`start.sh`
//! or killed with SIGKILL (pid from the stack's pidfile) and started with
//! `start.sh`; the private Redis is shut down, killed, flushed; stalls freeze
//! a testkit proxy (MariaDB, Redis) or SIGSTOP the Kafka broker, which cannot
//! be proxied because it advertises its own listener. A paused broker is
//! resumed by a guard on every exit path ([`Paused`], [`resume_kafka`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::pipeline::{Child, Pipeline, restart_redis};
use super::rng::Rng;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// SIGKILL the producer, start it again.
    ProducerKill,
    /// SIGKILL the consumer, start it again with the same group instance id.
    ConsumerKill,
    /// SIGKILL the API, start it again on the same port.
    ApiKill,
    /// Kafka: `stop.sh` (controlled shutdown), then `start.sh`.
    KafkaRestart,
    /// Kafka: SIGKILL the broker, then `start.sh`.
    KafkaKill,
    /// Kafka: SIGSTOP the broker for a few seconds, then SIGCONT.
    KafkaStall,
    /// Private Redis: `SHUTDOWN NOSAVE`, then start it again (empty).
    RedisRestart,
    /// Private Redis: SIGKILL and start again (empty: no persistence).
    RedisKill,
    /// Private Redis: freeze its proxy for a few seconds.
    RedisStall,
    /// Private Redis: `FLUSHALL`.
    RedisFlush,
    /// MariaDB: `stop.sh`, then `start.sh`.
    MariadbRestart,
    /// MariaDB: SIGKILL mariadbd, then `start.sh` (crash recovery).
    MariadbKill,
    /// MariaDB: freeze the producer's proxy for a few seconds.
    MariadbStall,
}

/// What a fault does to the system, for spreading kinds over a short run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// A paystream process dies.
    Kill,
    /// A server goes away and comes back.
    Restart,
    /// A connection stops moving bytes.
    Stall,
    /// Data is lost.
    Loss,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 13] = [
        Kind::ProducerKill,
        Kind::ConsumerKill,
        Kind::ApiKill,
        Kind::KafkaRestart,
        Kind::KafkaKill,
        Kind::KafkaStall,
        Kind::RedisRestart,
        Kind::RedisKill,
        Kind::RedisStall,
        Kind::RedisFlush,
        Kind::MariadbRestart,
        Kind::MariadbKill,
        Kind::MariadbStall,
    ];

    /// Its class.
    pub fn class(self) -> Class {
        match self {
            Kind::ProducerKill | Kind::ConsumerKill | Kind::ApiKill => Class::Kill,
            Kind::KafkaStall | Kind::RedisStall | Kind::MariadbStall => Class::Stall,
            Kind::RedisFlush | Kind::RedisKill => Class::Loss,
            Kind::KafkaRestart
            | Kind::KafkaKill
            | Kind::RedisRestart
            | Kind::MariadbRestart
            | Kind::MariadbKill => Class::Restart,
        }
    }

    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::ProducerKill => "producer-kill",
            Kind::ConsumerKill => "consumer-kill",
            Kind::ApiKill => "api-kill",
            Kind::KafkaRestart => "kafka-restart",
            Kind::KafkaKill => "kafka-kill",
            Kind::KafkaStall => "kafka-stall",
            Kind::RedisRestart => "redis-restart",
            Kind::RedisKill => "redis-kill",
            Kind::RedisStall => "redis-stall",
            Kind::RedisFlush => "redis-flush",
            Kind::MariadbRestart => "mariadb-restart",
            Kind::MariadbKill => "mariadb-kill",
            Kind::MariadbStall => "mariadb-stall",
        }
    }

    /// Seconds the fault is held before it heals: a stall's length, or the
    /// pause between stopping something and starting it again.
    fn hold(self, rng: &mut Rng) -> f64 {
        let tenths = match self.class() {
            Class::Stall => rng.between(50, 100),
            Class::Kill | Class::Restart => rng.between(10, 30),
            Class::Loss => 0,
        };
        match self {
            Kind::RedisKill | Kind::RedisFlush => 0.0,
            _ => tenths as f64 / 10.0,
        }
    }
}

/// One fault of the schedule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Planned {
    /// Seconds after the run's start, at the earliest (a fault waits for the
    /// previous one to recover).
    pub at: f64,
    /// What.
    pub kind: Kind,
    /// Seconds it is held (see [`Kind::hold`]).
    pub hold: f64,
}

/// Orders `kinds` so that every class comes early: the classes in a seeded
/// order, each class's kinds shuffled, then taken round-robin.
fn interleave(rng: &mut Rng, kinds: &[Kind]) -> Vec<Kind> {
    let mut unique: Vec<Kind> = kinds.to_vec();
    unique.sort_unstable();
    unique.dedup();
    let mut classes: Vec<Class> = unique.iter().map(|k| k.class()).collect();
    classes.sort_unstable();
    classes.dedup();
    rng.shuffle(&mut classes);
    let mut groups: Vec<Vec<Kind>> = classes
        .iter()
        .map(|c| {
            let mut g: Vec<Kind> = unique.iter().copied().filter(|k| k.class() == *c).collect();
            rng.shuffle(&mut g);
            g.reverse();
            g
        })
        .collect();
    let mut out = Vec::with_capacity(unique.len());
    while out.len() < unique.len() {
        for g in &mut groups {
            if let Some(k) = g.pop() {
                out.push(k);
            }
        }
    }
    out
}

/// The fault schedule of a run of `seconds`: as many of `kinds` as fit with
/// `min_gap` seconds between starts (every class first), spread evenly after
/// a lead-in and before a tail, each slot jittered by up to a quarter.
pub fn schedule(seed: u64, seconds: u64, kinds: &[Kind], min_gap: u64) -> Vec<Planned> {
    let mut rng = Rng::fork(seed, 1);
    let order = interleave(&mut rng, kinds);
    if order.is_empty() {
        return Vec::new();
    }
    let lead = (seconds / 10).clamp(5, 20) as f64;
    let usable = (seconds as f64 - lead - 15.0).max(1.0);
    let fit = (usable / min_gap.max(1) as f64).floor().max(1.0) as usize;
    let n = order.len().min(fit);
    let gap = usable / n as f64;
    order
        .into_iter()
        .take(n)
        .enumerate()
        .map(|(i, kind)| {
            let at = lead + i as f64 * gap + rng.unit() * gap / 4.0;
            Planned {
                at: (at * 10.0).round() / 10.0,
                kind,
                hold: kind.hold(&mut rng),
            }
        })
        .collect()
}

// ---- Injection ------------------------------------------------------------------

/// How an injection went.
#[derive(Debug, Clone)]
pub struct Injected {
    /// When the fault began.
    pub start: Instant,
    /// When it healed (process started again, server answering, proxy or
    /// broker resumed); `None` if it could not be healed.
    pub heal: Option<Instant>,
    /// Why it was not injected at all.
    pub skipped: Option<String>,
    /// What went wrong while healing.
    pub error: Option<String>,
}

impl Injected {
    fn skipped(reason: String) -> Self {
        Self {
            start: Instant::now(),
            heal: None,
            skipped: Some(reason),
            error: None,
        }
    }
}

/// The broker pid last paused, so a final [`resume_kafka`] can SIGCONT it.
static PAUSED: AtomicU32 = AtomicU32::new(0);

/// A SIGSTOPped process; SIGCONT when dropped (also on unwinding).
pub struct Paused(u32);

fn signal(sig: &str, pid: u32) -> Result<(), String> {
    let out = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .output()
        .map_err(|e| format!("kill {sig} {pid}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "kill {sig} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Paused {
    fn pause(pid: u32) -> Result<Self, String> {
        PAUSED.store(pid, Ordering::SeqCst);
        signal("-STOP", pid).map(|()| Self(pid))
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if signal("-CONT", self.0).is_ok() {
            PAUSED.store(0, Ordering::SeqCst);
        }
    }
}

/// SIGCONT to the broker if a stall may have left it stopped.
pub fn resume_kafka() {
    let pid = PAUSED.swap(0, Ordering::SeqCst);
    if pid != 0 {
        let _ = signal("-CONT", pid);
    }
}

fn var_dir() -> PathBuf {
    std::env::var("PAYSTREAM_VAR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| paystream_testkit::repo_root().join("var"))
}

/// A shared server of the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// MariaDB.
    Mariadb,
    /// Kafka.
    Kafka,
}

impl Server {
    fn dir(self) -> &'static str {
        match self {
            Server::Mariadb => "mariadb",
            Server::Kafka => "kafka",
        }
    }

    fn pidfile(self) -> PathBuf {
        let file = match self {
            Server::Mariadb => "mysqld.pid",
            Server::Kafka => "kafka.pid",
        };
        var_dir().join("stack").join(self.dir()).join(file)
    }

    /// The server's pid from the stack's pidfile, if it names a live process.
    fn pid(self) -> Result<u32, String> {
        let f = self.pidfile();
        let text =
            std::fs::read_to_string(&f).map_err(|e| format!("no pidfile {}: {e}", f.display()))?;
        let pid: u32 = text
            .trim()
            .parse()
            .map_err(|_| format!("{} does not hold a pid", f.display()))?;
        if !alive(pid) {
            return Err(format!("pid {pid} from {} is not running", f.display()));
        }
        Ok(pid)
    }

    /// Runs `stack/<server>/<script>.sh`, its output appended to a log.
    pub async fn script(self, script: &str) -> Result<(), String> {
        let path = paystream_testkit::repo_root()
            .join("stack")
            .join(self.dir())
            .join(format!("{script}.sh"));
        let _ = std::fs::create_dir_all(var_dir().join("test-logs"));
        let log_path = var_dir().join("test-logs/chaos-stack.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let run = tokio::process::Command::new("bash")
            .arg(&path)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err)
            .status();
        match tokio::time::timeout(Duration::from_secs(300), run).await {
            Ok(Ok(s)) if s.success() => Ok(()),
            Ok(Ok(s)) => Err(format!(
                "{} exited with {s}; see {}",
                path.display(),
                log_path.display()
            )),
            Ok(Err(e)) => Err(format!("{}: {e}", path.display())),
            Err(_) => Err(format!("{} took more than 300 s", path.display())),
        }
    }

    /// `start.sh` if nothing accepts connections on the server's port.
    pub async fn ensure_up(self, port: u16) {
        if self == Server::Kafka {
            resume_kafka();
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        eprintln!("chaos: {} is down; starting it again", self.dir());
        if let Err(e) = self.script("start").await {
            eprintln!("chaos: could not start {}: {e}", self.dir());
        }
    }
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

async fn wait_gone(pid: u32) -> Result<(), String> {
    for _ in 0..200 {
        if !alive(pid) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("pid {pid} survived SIGKILL for 10 s"))
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// Injects `p` and heals it; returns when it healed (or could not be).
pub async fn inject(p: &Planned, pipe: &mut Pipeline) -> Injected {
    match p.kind {
        Kind::ProducerKill => kill_child(pipe, Child::Producer, p.hold).await,
        Kind::ConsumerKill => kill_child(pipe, Child::Consumer, p.hold).await,
        Kind::ApiKill => kill_child(pipe, Child::Api, p.hold).await,
        Kind::KafkaRestart => restart_server(Server::Kafka, p.hold).await,
        Kind::MariadbRestart => restart_server(Server::Mariadb, p.hold).await,
        Kind::KafkaKill => kill_server(Server::Kafka, p.hold).await,
        Kind::MariadbKill => kill_server(Server::Mariadb, p.hold).await,
        Kind::KafkaStall => stall_kafka(p.hold).await,
        Kind::MariadbStall => {
            let start = Instant::now();
            pipe.mysql_proxy.freeze();
            tokio::time::sleep(secs(p.hold)).await;
            pipe.mysql_proxy.heal();
            healed(start, Ok(()))
        }
        Kind::RedisStall => {
            let start = Instant::now();
            pipe.redis_proxy.freeze();
            tokio::time::sleep(secs(p.hold)).await;
            pipe.redis_proxy.heal();
            healed(start, Ok(()))
        }
        Kind::RedisFlush => {
            let start = Instant::now();
            let r = redis_cmd(&pipe.redis_url(), &["FLUSHALL"]).await;
            healed(start, r)
        }
        Kind::RedisRestart => restart_private_redis(pipe, true, p.hold).await,
        Kind::RedisKill => restart_private_redis(pipe, false, p.hold).await,
    }
}

fn healed(start: Instant, r: Result<(), String>) -> Injected {
    let (heal, error) = match r {
        Ok(()) => (Some(Instant::now()), None),
        Err(e) => (None, Some(e)),
    };
    Injected {
        start,
        heal,
        skipped: None,
        error,
    }
}

async fn kill_child(pipe: &mut Pipeline, c: Child, hold: f64) -> Injected {
    let start = Instant::now();
    pipe.kill9(c);
    tokio::time::sleep(secs(hold)).await;
    healed(start, pipe.respawn(c).map_err(|e| e.to_string()))
}

async fn restart_server(s: Server, hold: f64) -> Injected {
    let start = Instant::now();
    if let Err(e) = s.script("stop").await {
        // Whatever state it is in, try to bring it back.
        let r = s.script("start").await;
        return healed(start, r.and(Err(format!("stop: {e}"))));
    }
    tokio::time::sleep(secs(hold)).await;
    healed(start, start_with_retry(s).await)
}

async fn start_with_retry(s: Server) -> Result<(), String> {
    match s.script("start").await {
        Ok(()) => Ok(()),
        Err(first) => s
            .script("start")
            .await
            .map_err(|again| format!("start: {first}; again: {again}")),
    }
}

async fn kill_server(s: Server, hold: f64) -> Injected {
    let pid = match s.pid() {
        Ok(p) => p,
        Err(e) => return Injected::skipped(e),
    };
    let start = Instant::now();
    if let Err(e) = signal("-KILL", pid) {
        return Injected::skipped(e);
    }
    if let Err(e) = wait_gone(pid).await {
        return healed(start, Err(e));
    }
    tokio::time::sleep(secs(hold)).await;
    healed(start, start_with_retry(s).await)
}

async fn stall_kafka(hold: f64) -> Injected {
    let pid = match Server::Kafka.pid() {
        Ok(p) => p,
        Err(e) => return Injected::skipped(e),
    };
    let start = Instant::now();
    let paused = match Paused::pause(pid) {
        Ok(p) => p,
        Err(e) => return Injected::skipped(e),
    };
    tokio::time::sleep(secs(hold)).await;
    drop(paused);
    let r = if PAUSED.load(Ordering::SeqCst) == 0 {
        Ok(())
    } else {
        Err(format!("SIGCONT to Kafka pid {pid} failed"))
    };
    healed(start, r)
}

async fn redis_cmd(url: &str, words: &[&str]) -> Result<(), String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let mut cmd = redis::Cmd::new();
    for w in words {
        cmd.arg(*w);
    }
    cmd.query_async::<()>(&mut c)
        .await
        .map_err(|e| format!("{}: {e}", words.join(" ")))
}

async fn restart_private_redis(pipe: &mut Pipeline, graceful: bool, hold: f64) -> Injected {
    let start = Instant::now();
    if graceful {
        // The server closes the connection as it exits: no reply is expected.
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            redis_cmd(&pipe.redis_url(), &["SHUTDOWN", "NOSAVE"]),
        )
        .await;
        tokio::time::sleep(secs(hold)).await;
    }
    let Some(server) = pipe.redis.take() else {
        return healed(start, Err("the private Redis is gone".into()));
    };
    match restart_redis(server).await {
        Ok(s) => {
            pipe.redis = Some(s);
            healed(start, Ok(()))
        }
        Err(e) => healed(start, Err(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_run_gets_every_kind_once_in_order() {
        let s = schedule(19, 600, &Kind::ALL, 25);
        assert_eq!(s.len(), Kind::ALL.len());
        let mut kinds: Vec<Kind> = s.iter().map(|p| p.kind).collect();
        kinds.sort_unstable();
        assert_eq!(kinds, Kind::ALL.to_vec());
        assert!(s.windows(2).all(|w| w[0].at < w[1].at));
        assert!(s.first().is_some_and(|p| p.at >= 20.0));
        assert!(s.last().is_some_and(|p| p.at < 600.0 - 15.0));
    }

    #[test]
    fn the_seed_decides_and_replays() {
        let a = schedule(1, 600, &Kind::ALL, 25);
        assert_eq!(a, schedule(1, 600, &Kind::ALL, 25));
        assert_ne!(a, schedule(2, 600, &Kind::ALL, 25));
    }

    #[test]
    fn a_short_run_covers_every_class_first() {
        let s = schedule(5, 150, &Kind::ALL, 25);
        assert_eq!(s.len(), 4);
        let mut classes: Vec<Class> = s.iter().map(|p| p.kind.class()).collect();
        classes.sort_unstable();
        classes.dedup();
        assert_eq!(classes.len(), 4);
    }

    #[test]
    fn holds_fit_the_kind() {
        for p in schedule(3, 600, &Kind::ALL, 25) {
            match p.kind.class() {
                Class::Stall => assert!((5.0..=10.0).contains(&p.hold)),
                _ if matches!(p.kind, Kind::RedisKill | Kind::RedisFlush) => {
                    assert_eq!(p.hold, 0.0)
                }
                _ => assert!((1.0..=3.0).contains(&p.hold)),
            }
        }
    }

    #[test]
    fn chosen_kinds_only_and_none_gives_nothing() {
        let s = schedule(
            9,
            600,
            &[Kind::ApiKill, Kind::ApiKill, Kind::RedisStall],
            25,
        );
        assert_eq!(s.len(), 2);
        assert!(schedule(9, 600, &[], 25).is_empty());
        assert_eq!(schedule(9, 10, &Kind::ALL, 25).len(), 1);
    }
}
