//! The operator at scale: for each count (100, then 1,000) it starts the
//! release operator as a child process against the local control plane
//! (leader election on, its Lease in the run's namespace, as the e2e suite
//! runs it), applies that many PaymentPipelines (one table, one partition, the
//! shared `payments` database, fixed replicas of one, `deleteTopicsOnDelete`)
//! and watches the pipelines, their Deployments and pods to time every step
//! from the first apply to the last `Ready=True`: the operator's children, the
//! controller manager's ReplicaSets and pods, the scheduler's bindings, KWOK's
//! Running pods, Available Deployments, and the operator's Ready status. It
//! samples the operator's RSS and CPU from `/proc` throughout, then, once all
//! are Ready and a settle period has passed, counts over an idle window the
//! requests the operator sent (its own `paystream_operator_api_requests_total`
//! and `_api_writes_total`) next to the apiserver's `apiserver_request_total`
//! for the same resources (all clients). Ready needs no producer: it is "no
//! problem, every Deployment has its replicas available", which KWOK's fake
//! pods satisfy; the binlog position stays empty. In the last round at the
//! counts of `--time-deletion-at` (100 by default) it then deletes the
//! pipelines and times the operator's finalizers (they delete the children
//! and the topics). Any topic left under the run's prefix is swept, and the
//! round ends with the cluster emptied ([`reset`]: the local control plane
//! is restarted with an empty etcd, elsewhere the namespaces are deleted).
//! Extra fake nodes are added for the pods (the three default KWOK nodes
//! hold 330; a pipeline has three). Every count is measured `--repeat`
//! times, in rounds (100, 1,000, then again), so a slow spell of the shared
//! machine falls on both counts alike; the report gives each run and, per
//! count, the median and the spread of the headline figures.

mod reset;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Client, Config};
use paystream_testkit::{Stack, repo_root};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::{Value, json};

use crate::report::{median, percentile, write};
use reset::Cleanup;

/// Operator benchmark parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// PaymentPipeline counts, run one after the other.
    #[arg(long, value_delimiter = ',', default_values_t = [100usize, 1000])]
    counts: Vec<usize>,
    /// Measurements of every count, in rounds (each round runs every count
    /// once); the report gives each run and the median.
    #[arg(long, env = "BENCH_OPERATOR_REPEAT", default_value_t = 2)]
    repeat: usize,
    /// Seconds of the idle window (after all are Ready and the settle period).
    #[arg(long, default_value_t = 30)]
    idle_secs: u64,
    /// Seconds to wait after the last Ready before the idle window opens.
    #[arg(long, default_value_t = 10)]
    settle_secs: u64,
    /// Give up waiting for Ready after this many seconds (per count): room
    /// for 1,000 pipelines on a busy 2-core machine, so the figure is
    /// measured rather than cut off.
    #[arg(long, default_value_t = 480)]
    ready_timeout_secs: u64,
    /// Give up waiting for the operator to delete the pipelines this many
    /// seconds after the last delete request returned (then their
    /// finalizers are dropped and the topics swept). The operator needs
    /// about two minutes for 1,000 on the 2-core machine.
    #[arg(long, default_value_t = 240)]
    delete_timeout_secs: u64,
    /// The operator's `--status-interval-secs` (its default is 15).
    #[arg(long, default_value_t = 15)]
    status_interval_secs: u64,
    /// PaymentPipelines per namespace: a count above it is spread over
    /// several namespaces, as teams sharing a cluster would split them. In
    /// one namespace of 1,000, the controller manager's scans of the whole
    /// namespace on every pod change (which PodDisruptionBudgets and which
    /// Services select it) took three quarters of its CPU and paced the
    /// ramp (docs/benchmarks.md).
    #[arg(long, default_value_t = 100)]
    pipelines_per_namespace: usize,
    /// PaymentPipeline applies in flight at once.
    #[arg(long, default_value_t = 16)]
    apply_concurrency: usize,
    /// Pod capacity of each extra fake node the benchmark adds.
    #[arg(long, default_value_t = 500)]
    pods_per_node: usize,
    /// The operator binary (release build).
    #[arg(long, default_value_t = default_operator())]
    operator: String,
    /// How a round empties the cluster: `reset` restarts the local control
    /// plane with an empty etcd, `delete` deletes the round's namespaces and
    /// waits for them; `auto` resets the local control plane unless it holds
    /// PaymentPipelines that are not the benchmark's.
    #[arg(long, value_enum, default_value_t = Cleanup::Auto)]
    cleanup: Cleanup,
    /// The counts whose last round times the operator's deletion of every
    /// pipeline (rounds that delete their namespaces always do). At 1,000
    /// it adds about a minute to the run.
    #[arg(long, value_delimiter = ',', default_values_t = [100usize])]
    time_deletion_at: Vec<usize>,
}

fn default_operator() -> String {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| {
        format!(
            "{}/.cache/paystream/target",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    format!("{target}/release/paystream-operator")
}

/// The label of everything the operator creates (its Deployments' pods
/// carry it too).
const OPERATOR_CHILDREN: &str = "app.kubernetes.io/managed-by=paystream-operator";
/// The labels on everything the benchmark creates.
const BENCH_LABEL: &str = "paystream.dev/bench";
/// Field manager of the benchmark's applies.
const MANAGER: &str = "paystream-bench";
/// Pods per pipeline: producer, consumer and API, one replica each.
const PODS_PER_PIPELINE: usize = 3;
/// Topics per pipeline: one change topic (one table) and the checkpoints.
const TOPICS_PER_PIPELINE: usize = 2;
/// The resources the operator reads or writes.
const OPERATOR_RESOURCES: &[&str] = &[
    "paymentpipelines",
    "paymentpipelines/status",
    "secrets",
    "deployments",
    "configmaps",
    "services",
    "serviceaccounts",
    "poddisruptionbudgets",
    "horizontalpodautoscalers",
    "events",
    "leases",
];

// ---------------------------------------------------------------- pure helpers

/// One sample of a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct PromSample {
    /// Metric name.
    pub name: String,
    /// Labels, in the order written.
    pub labels: Vec<(String, String)>,
    /// Value.
    pub value: f64,
}

impl PromSample {
    fn label(&self, key: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// Parses the samples of a Prometheus text exposition (comments and
/// malformed lines skipped; escaped quotes in label values understood). Pure.
pub fn parse_prometheus(body: &str) -> Vec<PromSample> {
    body.lines().filter_map(parse_sample).collect()
}

fn parse_sample(line: &str) -> Option<PromSample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let end = loop {
            while chars.next_if(|(_, c)| *c == ',' || *c == ' ').is_some() {}
            let (start, c) = chars.next()?;
            if c == '}' {
                break start + 1;
            }
            let mut key = String::from(c);
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '"' => break,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    other => value.push(other),
                }
            }
            labels.push((key.trim().to_string(), value));
        };
        rest = &inner[end..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(PromSample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// utime + stime, in clock ticks, from the text of `/proc/<pid>/stat`
/// (fields 14 and 15; the command name in field 2 may hold spaces and
/// parentheses, so fields are counted after its last `)`). Pure.
pub fn proc_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `kB` (or plain number) field of `/proc/<pid>/status`, e.g. `VmHWM`. Pure.
pub fn proc_status_field(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == key).then(|| v.split_whitespace().next()?.parse().ok())?
    })
}

/// Requests the operator counted itself, from its `/metrics`:
/// `(verb, resource) -> count`. Pure.
fn operator_requests(samples: &[PromSample]) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.name == "paystream_operator_api_requests_total")
    {
        *out.entry((s.label("verb").to_string(), s.label("resource").to_string()))
            .or_insert(0.0) += s.value;
    }
    out
}

/// The apiserver's `apiserver_request_total` by `(verb, resource)`, with
/// the operator counter's verb names (`APPLY`, server-side apply, and `PATCH`
/// are `patch`, `PUT` is `update`, `POST` is `create`, the rest lower-cased)
/// and the subresource joined to the resource. Pure.
fn apiserver_requests(samples: &[PromSample]) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.name == "apiserver_request_total")
    {
        let verb = match s.label("verb") {
            "APPLY" | "PATCH" => "patch".to_string(),
            "PUT" => "update".to_string(),
            "POST" => "create".to_string(),
            v => v.to_ascii_lowercase(),
        };
        let resource = match s.label("subresource") {
            "" => s.label("resource").to_string(),
            sub => format!("{}/{sub}", s.label("resource")),
        };
        *out.entry((verb, resource)).or_insert(0.0) += s.value;
    }
    out
}

/// `after - before` per key (keys only in `after` count from zero). Pure.
fn diff(
    before: &BTreeMap<(String, String), f64>,
    after: &BTreeMap<(String, String), f64>,
) -> BTreeMap<(String, String), f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// Whether a Kubernetes verb reads.
fn is_read(verb: &str) -> bool {
    matches!(verb, "get" | "list" | "watch")
}

/// Sums of a `(verb, resource)` map by verb. Pure.
fn by_verb(m: &BTreeMap<(String, String), f64>) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for ((verb, _), v) in m {
        *out.entry(verb.clone()).or_insert(0.0) += v;
    }
    out
}

/// The value of a metric without labels (or summed over them). Pure.
fn metric_total(samples: &[PromSample], name: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .map(|s| s.value)
        .sum()
}

/// Reconciles and their mean duration (seconds) between two scrapes of the
/// operator's metrics. Pure.
fn reconcile_stats(before: &[PromSample], after: &[PromSample]) -> (f64, Option<f64>) {
    let d = |name: &str| metric_total(after, name) - metric_total(before, name);
    let n = d("paystream_operator_reconcile_duration_seconds_count");
    let sum = d("paystream_operator_reconcile_duration_seconds_sum");
    (n, (n > 0.0).then(|| sum / n))
}

/// The value of `--flag` in a command line (`--flag=v` or `--flag v`). Pure.
fn flag_value(args: &[String], flag: &str) -> Option<String> {
    let prefix = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix(&prefix)
            .map(str::to_string)
            .or_else(|| (a == flag).then(|| args.get(i + 1).cloned())?)
    })
}

/// The 1-minute load average (`/proc/loadavg`), to show how busy the
/// machine was.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 100.0).round() / 100.0
}

/// A percentile of seconds, rounded like `secs`; `None` without samples
/// (rather than a 0 that would pass for a figure).
fn pct_secs(sorted: &[f64], p: f64) -> Option<f64> {
    (!sorted.is_empty()).then(|| round2(percentile(sorted, p)))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

// ---------------------------------------------------------------- the operator process

/// Resource usage of one process, sampled from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
struct ProcSample {
    cpu_ticks: u64,
    rss_kib: u64,
    hwm_kib: u64,
    threads: u64,
}

fn read_proc(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(ProcSample {
        cpu_ticks: proc_stat_cpu_ticks(&stat)?,
        rss_kib: proc_status_field(&status, "VmRSS")?,
        hwm_kib: proc_status_field(&status, "VmHWM")?,
        threads: proc_status_field(&status, "Threads").unwrap_or(0),
    })
}

/// The group a process's CPU is counted under in the ramp's breakdown,
/// from its command line (NUL-separated `/proc/<pid>/cmdline`): the
/// program's file name, with the JVMs told apart by their main class. Pure.
pub fn process_group(cmdline: &str) -> Option<String> {
    let mut args = cmdline.split('\0').filter(|a| !a.is_empty());
    let program = args.next()?;
    let name = program.rsplit('/').next().unwrap_or(program);
    if name == "java" {
        let rest: Vec<&str> = args.collect();
        let class = if rest.contains(&"kafka.Kafka") {
            "kafka"
        } else if rest.iter().any(|a| a.contains("debezium")) {
            "debezium"
        } else {
            "java (other)"
        };
        return Some(class.to_string());
    }
    Some(name.to_string())
}

/// CPU clock ticks used so far by every process on the machine, summed by
/// [`process_group`], plus the machine's busy ticks (all CPUs, from
/// `/proc/stat`) under `"(machine busy)"`.
fn cpu_by_group() -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let (Ok(cmdline), Ok(stat)) = (
            std::fs::read_to_string(format!("/proc/{pid}/cmdline")),
            std::fs::read_to_string(format!("/proc/{pid}/stat")),
        ) else {
            continue;
        };
        if let (Some(group), Some(ticks)) = (process_group(&cmdline), proc_stat_cpu_ticks(&stat)) {
            *out.entry(group).or_default() += ticks;
        }
    }
    if let Some(busy) = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| machine_busy_ticks(&s))
    {
        out.insert(MACHINE_BUSY.to_string(), busy);
    }
    out
}

const MACHINE_BUSY: &str = "(machine busy)";

/// Busy clock ticks of all CPUs (user, nice, system, irq, softirq, steal)
/// from the `cpu` line of `/proc/stat`. Pure.
pub fn machine_busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal ...
    Some(
        f.iter()
            .take(8)
            .enumerate()
            .filter(|(i, _)| *i != 3 && *i != 4)
            .map(|(_, v)| v)
            .sum(),
    )
}

/// Mean cores each group used between two [`cpu_by_group`] readings, the
/// busiest first; groups under 0.01 cores are left out. A process that
/// started in between counts all its ticks, and one that ended in between takes its ticks with it. Pure.
pub fn cores_by_group(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    ticks_per_sec: f64,
    secs: f64,
) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = after
        .iter()
        .filter_map(|(k, a)| {
            let b = before.get(k).copied().unwrap_or(0);
            let cores = a.saturating_sub(b) as f64 / ticks_per_sec / secs;
            (cores >= 0.01).then(|| (k.clone(), (cores * 100.0).round() / 100.0))
        })
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux when unknown).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Samples a process every 500 ms until dropped.
struct Sampler {
    samples: Arc<Mutex<Vec<(Instant, ProcSample)>>>,
    stop: Arc<AtomicBool>,
}

impl Sampler {
    fn start(pid: u32) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (samples.clone(), stop.clone());
        tokio::spawn(async move {
            while !st.load(Ordering::Relaxed) {
                if let Some(p) = read_proc(pid) {
                    s.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((Instant::now(), p));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Self { samples, stop }
    }

    /// Samples taken between `from` and `to`.
    fn between(&self, from: Instant, to: Instant) -> Vec<ProcSample> {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .map(|(_, p)| *p)
            .collect()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The operator as a child process, killed when dropped.
struct OperatorProcess {
    child: std::process::Child,
    ops_port: u16,
    log: PathBuf,
}

impl OperatorProcess {
    fn start(
        binary: &str,
        lease_namespace: &str,
        kubeconfig: &std::path::Path,
        status_interval_secs: u64,
        label: &str,
    ) -> anyhow::Result<Self> {
        let ops_port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = repo_root().join(format!("var/test-logs/bench-operator-{label}.log"));
        std::fs::create_dir_all(log.parent().context("log dir")?)?;
        let out = std::fs::File::create(&log)?;
        let child = std::process::Command::new(binary)
            .args([
                "--lease-namespace",
                lease_namespace,
                "--status-interval-secs",
                &status_interval_secs.to_string(),
                "--ops-addr",
                &format!("127.0.0.1:{ops_port}"),
            ])
            .env("KUBECONFIG", kubeconfig)
            .env("PAYSTREAM_LOG", "info")
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| {
                format!("starting {binary} (run `make bench-operator`, which builds it)")
            })?;
        Ok(Self {
            child,
            ops_port,
            log,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.ops_port)).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).await?;
        let code = buf.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = buf
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((code, body))
    }

    async fn metrics(&self) -> anyhow::Result<Vec<PromSample>> {
        let (code, body) = self.get("/metrics").await?;
        if code != 200 {
            bail!("operator /metrics answered {code}");
        }
        Ok(parse_prometheus(&body))
    }

    async fn wait_leading(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if !self.running() {
                bail!("the operator exited; see {}", self.log.display());
            }
            if matches!(self.get("/readyz").await, Ok((200, _))) {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!(
                    "the operator is not ready after {timeout:?}; see {}",
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- watching the cluster

/// When the benchmark first saw each object reach each step.
#[derive(Default)]
struct Seen {
    /// Pipeline name -> (first Ready=True, Ready now, exists).
    pipelines: HashMap<String, (Option<Instant>, bool, bool)>,
    /// Deployment name -> (first seen, first Available).
    deployments: HashMap<String, (Instant, Option<Instant>)>,
    /// Pod name -> (first seen, first bound, first Running).
    pods: HashMap<String, (Instant, Option<Instant>, Option<Instant>)>,
    /// Watchers that finished their initial list.
    initialised: usize,
    /// When the Kafka poll first counted all the run's topics.
    topics_complete: Option<Instant>,
}

type Shared = Arc<Mutex<Seen>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Seen> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

fn pipeline_ready(o: &DynamicObject) -> bool {
    o.data["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn deployment_available(d: &Deployment) -> bool {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    d.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .is_some_and(|a| a >= want)
}

/// Runs a watcher on `api`, feeding each object to `on_object` and
/// deletions to `on_delete`, until the task is aborted.
fn spawn_watch<K, F, D>(
    api: Api<K>,
    config: watcher::Config,
    seen: Shared,
    on_object: F,
    on_delete: D,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    F: Fn(&mut Seen, &K, Instant) + Send + 'static,
    D: Fn(&mut Seen, &K) + Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = watcher(api, config).boxed();
        loop {
            match stream.try_next().await {
                Ok(Some(event)) => {
                    let now = Instant::now();
                    let mut s = lock(&seen);
                    match event {
                        watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                            on_object(&mut s, &o, now)
                        }
                        watcher::Event::Delete(o) => on_delete(&mut s, &o),
                        watcher::Event::InitDone => s.initialised += 1,
                        watcher::Event::Init => {}
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    eprintln!("watch error (retrying): {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    })
}

/// Aborts the watch tasks when dropped.
struct Watches(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Watches {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

/// Watches the run's pipelines, and the operator's Deployments and their
/// pods, in every namespace whose name starts with `ns_prefix`.
fn watch_run(client: &Client, ns_prefix: &str, seen: &Shared) -> Watches {
    let pipelines = Api::<DynamicObject>::all_with(client.clone(), &pipeline_resource());
    let deployments = Api::<Deployment>::all(client.clone());
    let pods = Api::<Pod>::all(client.clone());
    let owned = watcher::Config::default().labels(OPERATOR_CHILDREN);
    let ours = {
        let prefix = ns_prefix.to_string();
        move |meta: &kube::api::ObjectMeta| {
            meta.namespace
                .as_deref()
                .is_some_and(|ns| ns.starts_with(&prefix))
        }
    };
    let (in_run_p, in_run_d, in_run_pod, in_run_del) =
        (ours.clone(), ours.clone(), ours.clone(), ours);
    Watches(vec![
        spawn_watch(
            pipelines,
            watcher::Config::default(),
            seen.clone(),
            move |s, o: &DynamicObject, now| {
                if !in_run_p(&o.metadata) {
                    return;
                }
                let name = o.metadata.name.clone().unwrap_or_default();
                let ready = pipeline_ready(o);
                let e = s.pipelines.entry(name).or_insert((None, false, true));
                if ready && e.0.is_none() {
                    e.0 = Some(now);
                }
                e.1 = ready;
                e.2 = true;
            },
            move |s, o: &DynamicObject| {
                if !in_run_del(&o.metadata) {
                    return;
                }
                if let Some(e) = s
                    .pipelines
                    .get_mut(o.metadata.name.as_deref().unwrap_or_default())
                {
                    e.1 = false;
                    e.2 = false;
                }
            },
        ),
        spawn_watch(
            deployments,
            owned.clone(),
            seen.clone(),
            move |s, d: &Deployment, now| {
                if !in_run_d(&d.metadata) {
                    return;
                }
                let name = d.metadata.name.clone().unwrap_or_default();
                let available = deployment_available(d);
                let e = s.deployments.entry(name).or_insert((now, None));
                if available && e.1.is_none() {
                    e.1 = Some(now);
                }
            },
            |_, _| {},
        ),
        spawn_watch(
            pods,
            owned,
            seen.clone(),
            move |s, p: &Pod, now| {
                if !in_run_pod(&p.metadata) {
                    return;
                }
                let name = p.metadata.name.clone().unwrap_or_default();
                let bound = p.spec.as_ref().is_some_and(|s| s.node_name.is_some());
                let running = p
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .is_some_and(|ph| ph == "Running");
                let e = s.pods.entry(name).or_insert((now, None, None));
                if bound && e.1.is_none() {
                    e.1 = Some(now);
                }
                if running && e.2.is_none() {
                    e.2 = Some(now);
                }
            },
            |_, _| {},
        ),
    ])
}

/// The time the last of `expected` items reached a step, relative to `t0`;
/// `None` unless all did.
fn last_of(
    times: impl Iterator<Item = Option<Instant>>,
    expected: usize,
    t0: Instant,
) -> Option<f64> {
    let times: Vec<Instant> = times.flatten().collect();
    (times.len() >= expected && expected > 0).then(|| {
        times
            .iter()
            .max()
            .map(|t| secs(t.saturating_duration_since(t0)))
    })?
}

// ---------------------------------------------------------------- cluster setup

fn pipeline_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("paystream.io", "v1alpha1", "PaymentPipeline"),
        "paymentpipelines",
    )
}

/// The kubeconfig: `$KUBECONFIG`, else the local control plane's.
fn kubeconfig_path() -> PathBuf {
    std::env::var_os("KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("PAYSTREAM_VAR")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo_root().join("var"))
                .join("cluster/kubeconfig")
        })
}

async fn connect(path: &std::path::Path) -> anyhow::Result<Client> {
    let kubeconfig = Kubeconfig::read_from(path).with_context(|| {
        format!(
            "reading {} (start the local control plane: make cluster-up)",
            path.display()
        )
    })?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// The YAML documents of an example file.
fn yaml_docs(path: &str) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(repo_root().join(path))?;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc)?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

async fn install_crd(client: &Client) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(repo_root().join("crds/paymentpipeline.yaml"))?;
    let crd: CustomResourceDefinition = serde_yaml::from_str(&text)?;
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    crds.patch(
        "paymentpipelines.paystream.io",
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await
    .context("installing crds/paymentpipeline.yaml")?;
    let start = Instant::now();
    loop {
        let crd = crds.get("paymentpipelines.paystream.io").await?;
        let established = crd.status.and_then(|s| s.conditions).is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        });
        if established {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("the PaymentPipeline CRD is not Established after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The settings of the test cluster that shape the numbers.
fn cluster_settings() -> Value {
    let var = std::env::var_os("PAYSTREAM_VAR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("var"));
    let cmdline = |component: &str| -> Vec<String> {
        std::fs::read_to_string(var.join(format!("cluster/pids/{component}.pid")))
            .ok()
            .and_then(|pid| std::fs::read(format!("/proc/{}/cmdline", pid.trim())).ok())
            .map(|raw| {
                raw.split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let kcm = cmdline("kube-controller-manager");
    let scheduler = cmdline("kube-scheduler");
    json!({
        "controller_manager_kube_api_qps": flag_value(&kcm, "--kube-api-qps").unwrap_or_else(|| "20 (default)".into()),
        "controller_manager_kube_api_burst": flag_value(&kcm, "--kube-api-burst").unwrap_or_else(|| "30 (default)".into()),
        "scheduler_kube_api_qps": flag_value(&scheduler, "--kube-api-qps").unwrap_or_else(|| "50 (default)".into()),
        "controller_manager_found": !kcm.is_empty(),
        "profiling": flag_value(&kcm, "--profiling").unwrap_or_else(|| "true (default)".into()),
    })
}

fn bench_node(name: &str, pods: usize) -> anyhow::Result<Node> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {
                "kwok.x-k8s.io/node": "fake",
                "node.alpha.kubernetes.io/ttl": "0",
            },
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                BENCH_LABEL: "true",
            },
        },
        "status": {
            "allocatable": {"cpu": "256", "memory": "1Ti", "pods": pods.to_string()},
            "capacity": {"cpu": "256", "memory": "1Ti", "pods": pods.to_string()},
        },
    }))?)
}

/// Adds `n` fake nodes (KWOK manages them: they carry its annotation) and
/// waits until they are Ready.
async fn add_nodes(client: &Client, n: usize, pods: usize) -> anyhow::Result<()> {
    let nodes = Api::<Node>::all(client.clone());
    for i in 0..n {
        let name = format!("paystream-bench-{i}");
        let node = bench_node(&name, pods)?;
        nodes
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&node),
            )
            .await
            .with_context(|| format!("creating node {name}"))?;
    }
    let start = Instant::now();
    loop {
        let list = nodes
            .list(&ListParams::default().labels(&format!("{BENCH_LABEL}=true")))
            .await?;
        let ready = list
            .items
            .iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        if ready >= n {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("only {ready} of {n} benchmark nodes are Ready after 60 s (is kwok running?)");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn remove_nodes(client: &Client) -> anyhow::Result<()> {
    let nodes = Api::<Node>::all(client.clone());
    nodes
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&format!("{BENCH_LABEL}=true")),
        )
        .await?;
    Ok(())
}

// ---------------------------------------------------------------- Kafka

fn kafka_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

/// Topics whose name starts with `prefix`.
fn topics_with_prefix(bootstrap: &str, prefix: &str) -> anyhow::Result<Vec<String>> {
    let consumer: BaseConsumer = kafka_config(bootstrap).create()?;
    let md = consumer.fetch_metadata(None, Duration::from_secs(30))?;
    Ok(md
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .filter(|n| n.starts_with(prefix))
        .collect())
}

/// Counts the topics under `prefix` every 2 s (one metadata request) and
/// records in `seen` when there are `expected`; stops when `stop` is set.
fn poll_topics(
    bootstrap: String,
    prefix: String,
    expected: usize,
    seen: Shared,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let consumer: BaseConsumer = match kafka_config(&bootstrap).create() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("cannot poll Kafka topics: {e}");
                return;
            }
        };
        while !stop.load(Ordering::Relaxed) {
            if let Ok(md) = consumer.fetch_metadata(None, Duration::from_secs(10)) {
                let n = md
                    .topics()
                    .iter()
                    .filter(|t| t.name().starts_with(&prefix) && t.error().is_none())
                    .count();
                if n >= expected {
                    lock(&seen).topics_complete.get_or_insert_with(Instant::now);
                    return;
                }
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    })
}

/// Deletes every topic under `prefix`, checking the broker afterwards and
/// trying again (up to five rounds) for any that a timed-out request left;
/// returns how many there were at first.
async fn sweep_topics(bootstrap: &str, prefix: &str) -> anyhow::Result<usize> {
    let list = || {
        let (b, p) = (bootstrap.to_string(), prefix.to_string());
        tokio::task::spawn_blocking(move || topics_with_prefix(&b, &p))
    };
    let first = list().await??.len();
    let admin: AdminClient<DefaultClientContext> = kafka_config(bootstrap).create()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(60)));
    for _ in 0..5 {
        let names = list().await??;
        if names.is_empty() {
            return Ok(first);
        }
        for chunk in names.chunks(100) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            if let Err(e) = admin.delete_topics(&refs, &opts).await {
                eprintln!("deleting topics under {prefix}: {e} (trying again)");
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let left = list().await??.len();
    if left > 0 {
        bail!("{left} topics under {prefix} are still in Kafka after five rounds of deletion");
    }
    Ok(first)
}

// ---------------------------------------------------------------- one count

struct Env {
    client: Client,
    kubeconfig: PathBuf,
    bootstrap: String,
    secrets: Vec<Secret>,
    template: Value,
    run_id: String,
    ticks: f64,
}

/// The pipeline `i` of a run: the example's, cut down to what 1,000 of them
/// on one broker and one control plane can carry.
fn pipeline(template: &Value, name: &str, prefix: &str) -> Value {
    let mut p = template.clone();
    p["metadata"] = json!({ "name": name, "labels": { BENCH_LABEL: "true" } });
    let spec = &mut p["spec"];
    spec["source"]["database"] = json!("payments");
    spec["source"]["tables"] = json!(["users"]);
    spec["kafka"]["topicPrefix"] = json!(prefix);
    spec["kafka"]["partitions"] = json!(1);
    spec["kafka"]["replicationFactor"] = json!(1);
    spec["kafka"]["deleteTopicsOnDelete"] = json!(true);
    for workload in ["consumer", "api"] {
        if let Some(w) = spec[workload].as_object_mut() {
            w.remove("autoscaling");
            w.insert("replicas".into(), json!(1));
        }
    }
    p
}

/// Waits until `done` holds on what was seen, at most `timeout`; polls
/// every 250 ms. Returns whether it held.
async fn wait_seen(seen: &Shared, timeout: Duration, done: impl Fn(&Seen) -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done(&lock(seen)) {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn cpu_secs(env: &Env, a: &ProcSample, b: &ProcSample) -> f64 {
    b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / env.ticks
}

fn requests_json(m: &BTreeMap<(String, String), f64>, per: f64) -> Value {
    let verbs = by_verb(m);
    let reads: f64 = verbs
        .iter()
        .filter(|(v, _)| is_read(v))
        .map(|(_, n)| n)
        .sum();
    let writes: f64 = verbs
        .iter()
        .filter(|(v, _)| !is_read(v))
        .map(|(_, n)| n)
        .sum();
    json!({
        "total": reads + writes,
        "reads": reads,
        "writes": writes,
        "per_minute": { "reads": round1(reads * per), "writes": round1(writes * per) },
        "by_verb": verbs,
        "by_verb_and_resource": m.iter().map(|((v, r), n)| json!({"verb": v, "resource": r, "count": n})).collect::<Vec<_>>(),
    })
}

async fn apiserver_metrics(client: &Client) -> anyhow::Result<Vec<PromSample>> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    Ok(parse_prometheus(&client.request_text(req).await?))
}

/// Only the resources the operator uses.
fn operator_resources_only(m: BTreeMap<(String, String), f64>) -> BTreeMap<(String, String), f64> {
    m.into_iter()
        .filter(|((_, r), _)| OPERATOR_RESOURCES.contains(&r.as_str()))
        .collect()
}

/// The namespaces of a run of `count` pipelines, at most `per_namespace` in
/// each: `<base>-00`, `<base>-01`, … Pure.
fn run_namespaces(base: &str, count: usize, per_namespace: usize) -> Vec<String> {
    (0..count.div_ceil(per_namespace.max(1)).max(1))
        .map(|k| format!("{base}-{k:02}"))
        .collect()
}

/// How one round ends: whether it times the deletion of its pipelines, and
/// whether it deletes its namespaces (otherwise the cluster is reset after
/// it).
#[derive(Debug, Clone, Copy)]
struct RoundEnd {
    time_deletion: bool,
    delete_namespaces: bool,
}

async fn run_count(
    env: &Env,
    args: &Args,
    count: usize,
    run: usize,
    end: RoundEnd,
) -> anyhow::Result<Value> {
    let client = &env.client;
    let base = round_base(env, count, run);
    let namespaces = run_namespaces(&base, count, args.pipelines_per_namespace);
    let prefix = round_topic_prefix(env, count, run);
    println!(
        "== {count} PaymentPipelines in {} namespace(s) {base}-* (run {run})",
        namespaces.len()
    );
    let ns_api = Api::<Namespace>::all(client.clone());
    for (k, ns) in namespaces.iter().enumerate() {
        let namespace: Namespace = serde_json::from_value(json!({
            "metadata": { "name": ns, "labels": { BENCH_LABEL: "true" } }
        }))?;
        if let Err(e) = ns_api.create(&PostParams::default(), &namespace).await {
            // Leave nothing behind: the ones already created go.
            for created in &namespaces[..k] {
                let _ = ns_api.delete(created, &DeleteParams::background()).await;
            }
            return Err(e).with_context(|| format!("creating namespace {ns}"));
        }
    }
    let result = measure(
        env,
        args,
        Round {
            count,
            run,
            namespaces: &namespaces,
            ns_prefix: &format!("{base}-"),
            prefix: &prefix,
            time_deletion: end.time_deletion,
        },
    )
    .await;
    if !end.delete_namespaces {
        // The cluster is reset next; the topics are the broker's.
        let swept = sweep_topics(&env.bootstrap, &prefix)
            .await
            .unwrap_or_else(|e| {
                eprintln!("sweeping the run's topics: {e:#}");
                0
            });
        println!("   {swept} topics swept; the control plane is reset next");
        let mut out = result?;
        out["namespaces"] = json!(namespaces.len());
        out["cleanup"]["topics_swept_after"] = json!(swept);
        return Ok(out);
    }
    // Cleanup, whatever happened: the pipelines went first (inside
    // `measure`); the namespaces take the rest.
    let t = Instant::now();
    let gone = empty_namespaces(client, &namespaces, false).await;
    let swept = sweep_topics(&env.bootstrap, &prefix)
        .await
        .unwrap_or_else(|e| {
            eprintln!("sweeping the run's topics: {e:#}");
            0
        });
    println!(
        "   namespaces deleted in {:.1} s{}; {swept} leftover topics swept",
        t.elapsed().as_secs_f64(),
        if gone {
            ""
        } else {
            " (some still terminating)"
        }
    );
    let mut out = result?;
    out["namespaces"] = json!(namespaces.len());
    out["cleanup"]["namespace_delete_s"] = json!(secs(t.elapsed()));
    out["cleanup"]["namespace_gone"] = json!(gone);
    out["cleanup"]["topics_swept_after"] = json!(swept);
    Ok(out)
}

/// The name every namespace of a round starts with.
fn round_base(env: &Env, count: usize, run: usize) -> String {
    format!("bench-op-{count}-{}-{run}", env.run_id)
}

/// The prefix of a round's topics.
fn round_topic_prefix(env: &Env, count: usize, run: usize) -> String {
    format!("bop{}-{count}-{run}-", env.run_id)
}

/// Deletes `namespaces` and waits until they are gone. The operator is
/// stopped by then, so pipelines still holding its finalizer would keep a
/// namespace Terminating for good: their finalizers are dropped first when
/// `drop_first` (nobody deleted the pipelines), else after 180 s.
async fn empty_namespaces(client: &Client, namespaces: &[String], drop_first: bool) -> bool {
    if drop_first {
        drop_all_finalizers(client, namespaces).await;
    }
    let ns_api = Api::<Namespace>::all(client.clone());
    for ns in namespaces {
        let _ = ns_api.delete(ns, &DeleteParams::background()).await;
    }
    let gone = wait_all_gone(&ns_api, namespaces, Duration::from_secs(180)).await;
    if gone || drop_first {
        return gone;
    }
    drop_all_finalizers(client, namespaces).await;
    wait_all_gone(&ns_api, namespaces, Duration::from_secs(60)).await
}

/// Deletes the named pipelines one request each, `concurrency` in flight,
/// as `kubectl delete` does. One DELETE of the whole collection would make
/// the apiserver mark every pipeline inside a single request, which outlives
/// its 60 s request timeout at 1,000 on a busy machine (the connection is
/// then cut and the deletion stops half way). A request that fails in
/// transit, or with 429 or a 5xx, is retried with backoff; 404 is done.
async fn delete_pipelines(
    client: &Client,
    pipelines: &[(String, String)],
    concurrency: usize,
) -> anyhow::Result<()> {
    futures::stream::iter(pipelines)
        .map(|(ns, name)| async move {
            let api =
                Api::<DynamicObject>::namespaced_with(client.clone(), ns, &pipeline_resource());
            let mut attempt = 0u32;
            loop {
                match api.delete(name, &DeleteParams::background()).await {
                    Ok(_) => return anyhow::Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
                    Err(e) if attempt < 5 && retriable(&e) => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
                    }
                    Err(e) => {
                        return Err(e)
                            .with_context(|| format!("deleting PaymentPipeline {ns}/{name}"));
                    }
                }
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Whether a request may succeed when sent again: no answer at all, or the
/// apiserver asking to slow down or failing on its side.
fn retriable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 429 || s.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// [`drop_finalizers`] in each of `namespaces`.
async fn drop_all_finalizers(client: &Client, namespaces: &[String]) {
    for ns in namespaces {
        drop_finalizers(&Api::namespaced_with(
            client.clone(),
            ns,
            &pipeline_resource(),
        ))
        .await;
    }
}

/// Removes the finalizer of every pipeline left in the namespace, so the
/// namespace can go when the operator did not (or could not) clean up.
async fn drop_finalizers(pipelines: &Api<DynamicObject>) {
    let left = match pipelines.list_metadata(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(e) => {
            eprintln!("   listing the pipelines left: {e:#}");
            return;
        }
    };
    for p in left {
        let name = p.metadata.name.unwrap_or_default();
        let _ = pipelines
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": { "finalizers": null } })),
            )
            .await;
    }
}

/// The PaymentPipelines of the cluster outside `namespaces`, as
/// `namespace/name`.
async fn other_pipelines(client: &Client, namespaces: &[String]) -> anyhow::Result<Vec<String>> {
    let all = Api::<DynamicObject>::all_with(client.clone(), &pipeline_resource())
        .list_metadata(&ListParams::default())
        .await
        .context("listing the cluster's PaymentPipelines")?;
    Ok(all
        .items
        .into_iter()
        .filter_map(|p| {
            let ns = p.metadata.namespace.unwrap_or_default();
            (!namespaces.contains(&ns))
                .then(|| format!("{ns}/{}", p.metadata.name.unwrap_or_default()))
        })
        .collect())
}

/// Waits until every namespace of `names` is gone, at most `timeout`.
async fn wait_all_gone(api: &Api<Namespace>, names: &[String], timeout: Duration) -> bool {
    let start = Instant::now();
    let mut left: Vec<&String> = names.iter().collect();
    while start.elapsed() < timeout {
        let mut still = Vec::new();
        for name in left {
            if !matches!(api.get_opt(name).await, Ok(None)) {
                still.push(name);
            }
        }
        left = still;
        if left.is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

/// One round of one count: where its pipelines go and how it ends.
struct Round<'a> {
    count: usize,
    run: usize,
    namespaces: &'a [String],
    /// The prefix of the round's namespaces.
    ns_prefix: &'a str,
    /// The prefix of the round's topics.
    prefix: &'a str,
    time_deletion: bool,
}

async fn measure(env: &Env, args: &Args, round: Round<'_>) -> anyhow::Result<Value> {
    let Round {
        count,
        run,
        namespaces,
        ns_prefix,
        prefix,
        time_deletion,
    } = round;
    let client = &env.client;
    for ns in namespaces {
        let secrets = Api::<Secret>::namespaced(client.clone(), ns);
        for s in &env.secrets {
            secrets.create(&PostParams::default(), s).await?;
        }
    }
    // The operator watches every namespace, as the chart installs it; its
    // Lease is in the run's first namespace. Pipelines of anyone else (a
    // test's leftovers, a namespace of an earlier run still terminating)
    // would add to what it measures: they are counted and reported.
    let lease_ns = namespaces.first().context("a run has a namespace")?;
    let others = other_pipelines(client, namespaces).await?;
    if !others.is_empty() {
        eprintln!(
            "   warning: {} PaymentPipelines outside this run (e.g. {}): the operator reconciles \
             them too, so its figures include them",
            others.len(),
            others[0]
        );
    }
    let mut operator = OperatorProcess::start(
        &args.operator,
        lease_ns,
        &env.kubeconfig,
        args.status_interval_secs,
        &format!("{count}-run{run}"),
    )?;
    operator.wait_leading(Duration::from_secs(60)).await?;
    let sampler = Sampler::start(operator.pid());
    let seen: Shared = Arc::new(Mutex::new(Seen::default()));
    let _watches = watch_run(client, ns_prefix, &seen);
    if !wait_seen(&seen, Duration::from_secs(30), |s| s.initialised >= 3).await {
        bail!("the benchmark's watches did not start");
    }

    // Ramp: apply every pipeline, wait for every Ready.
    let m0 = operator.metrics().await?;
    let p0 = read_proc(operator.pid()).context("reading the operator's /proc")?;
    let stop_topics = Arc::new(AtomicBool::new(false));
    let topics_poll = poll_topics(
        env.bootstrap.clone(),
        prefix.to_string(),
        count * TOPICS_PER_PIPELINE,
        seen.clone(),
        stop_topics.clone(),
    );
    let load_start = load_average();
    let cpu0 = cpu_by_group();
    let t0 = Instant::now();
    let per_ns = args.pipelines_per_namespace.max(1);
    let applied: Vec<(String, String, Instant)> = futures::stream::iter(0..count)
        .map(|i| {
            let name = format!("p{i:04}");
            let body = pipeline(&env.template, &name, &format!("{prefix}{i:04}"));
            let ns = &namespaces[(i / per_ns).min(namespaces.len() - 1)];
            let api =
                Api::<DynamicObject>::namespaced_with(client.clone(), ns, &pipeline_resource());
            async move {
                let at = Instant::now();
                api.patch(
                    &name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&body),
                )
                .await
                .with_context(|| format!("applying PaymentPipeline {ns}/{name}"))?;
                anyhow::Ok((ns.clone(), name, at))
            }
        })
        .buffer_unordered(args.apply_concurrency.max(1))
        .try_collect()
        .await?;
    let all_applied = t0.elapsed();
    println!("   applied {count} in {:.1} s", all_applied.as_secs_f64());
    let all_ready = wait_seen(&seen, Duration::from_secs(args.ready_timeout_secs), |s| {
        s.pipelines.values().filter(|p| p.1).count() >= count
    })
    .await;
    let t_ready = Instant::now();
    let ramp = t_ready - t0;
    stop_topics.store(true, Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || topics_poll.join()).await;
    let p_ready = read_proc(operator.pid()).context("the operator died during the ramp")?;
    let load_ready = load_average();
    let cpu_ready = cpu_by_group();
    let m_ready = operator.metrics().await?;

    // Where the time went.
    let expected_pods = count * PODS_PER_PIPELINE;
    let (milestones, per_pipeline, children, ready_count) = {
        let s = lock(&seen);
        let milestones = json!({
            "all_applied": secs(all_applied),
            "all_topics_exist": s.topics_complete.map(|t| secs(t.saturating_duration_since(t0))),
            "all_deployments_exist": last_of(s.deployments.values().map(|d| Some(d.0)), expected_pods, t0),
            "all_pods_exist": last_of(s.pods.values().map(|p| Some(p.0)), expected_pods, t0),
            "all_pods_bound": last_of(s.pods.values().map(|p| p.1), expected_pods, t0),
            "all_pods_running": last_of(s.pods.values().map(|p| p.2), expected_pods, t0),
            "all_deployments_available": last_of(s.deployments.values().map(|d| d.1), expected_pods, t0),
            "all_ready": last_of(s.pipelines.values().map(|p| p.0), count, t0),
        });
        let mut per_pipeline: Vec<f64> = Vec::new();
        let mut children: Vec<f64> = Vec::new();
        for (_, name, at) in &applied {
            if let Some((Some(ready), _, _)) = s.pipelines.get(name) {
                per_pipeline.push(ready.saturating_duration_since(*at).as_secs_f64());
            }
            let deps: Vec<Instant> = ["producer", "consumer", "api"]
                .iter()
                .filter_map(|w| s.deployments.get(&format!("{name}-{w}")).map(|d| d.0))
                .collect();
            if deps.len() == 3
                && let Some(last) = deps.iter().max()
            {
                children.push(last.saturating_duration_since(*at).as_secs_f64());
            }
        }
        per_pipeline.sort_by(f64::total_cmp);
        children.sort_by(f64::total_cmp);
        let ready_count = s.pipelines.values().filter(|p| p.1).count();
        (milestones, per_pipeline, children, ready_count)
    };
    println!(
        "   {} of {count} Ready after {:.1} s; milestones {milestones}",
        ready_count,
        ramp.as_secs_f64()
    );
    let ramp_requests = diff(&operator_requests(&m0), &operator_requests(&m_ready));

    // Idle: settle, then count over the window.
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let mi0 = operator.metrics().await?;
    let ai0 = apiserver_metrics(client).await?;
    let pi0 = read_proc(operator.pid()).context("the operator died while settling")?;
    let ti0 = Instant::now();
    let ready_before = lock(&seen).pipelines.values().filter(|p| p.1).count();
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let mi1 = operator.metrics().await?;
    let ai1 = apiserver_metrics(client).await?;
    let pi1 = read_proc(operator.pid()).context("the operator died while idle")?;
    let window = ti0.elapsed();
    let ready_after = lock(&seen).pipelines.values().filter(|p| p.1).count();
    let per_min = 60.0 / window.as_secs_f64();
    let idle_ops = diff(&operator_requests(&mi0), &operator_requests(&mi1));
    let idle_api =
        operator_resources_only(diff(&apiserver_requests(&ai0), &apiserver_requests(&ai1)));
    let writes_of = |m: &[PromSample], lease: bool| -> f64 {
        m.iter()
            .filter(|s| s.name == "paystream_operator_api_writes_total")
            .filter(|s| (s.label("kind") == "Lease") == lease)
            .map(|s| s.value)
            .sum()
    };
    let idle_reconciles = metric_total(&mi1, "paystream_operator_reconciles_total")
        - metric_total(&mi0, "paystream_operator_reconciles_total");
    let (_, idle_mean_reconcile) = reconcile_stats(&mi0, &mi1);
    let (_, ramp_mean_reconcile) = reconcile_stats(&m0, &m_ready);
    // How often each pipeline's status really was refreshed while idle.
    let refresh_period = (idle_reconciles > 0.0)
        .then(|| round1(count as f64 * window.as_secs_f64() / idle_reconciles));
    let idle_samples = sampler.between(ti0, Instant::now());
    let steady_rss_kib = if idle_samples.is_empty() {
        pi1.rss_kib as f64
    } else {
        idle_samples.iter().map(|s| s.rss_kib as f64).sum::<f64>() / idle_samples.len() as f64
    };
    let idle_cpu_percent = 100.0 * cpu_secs(env, &pi0, &pi1) / window.as_secs_f64();
    println!(
        "   idle {:.0} s: CPU {idle_cpu_percent:.1} %, {idle_reconciles} reconciles, operator requests {:?}",
        window.as_secs_f64(),
        by_verb(&idle_ops)
    );

    // Deletion: the operator's finalizer removes children and topics.
    let td = Instant::now();
    let pd0 = read_proc(operator.pid()).unwrap_or(pi1);
    let cleanup = if time_deletion {
        // A failed deletion is a finding of this run, not the loss of what
        // was measured above: it is reported in `cleanup.error`.
        let targets: Vec<(String, String)> = applied
            .iter()
            .map(|(ns, name, _)| (ns.clone(), name.clone()))
            .collect();
        let delete_error = delete_pipelines(client, &targets, args.apply_concurrency)
            .await
            .err()
            .map(|e| {
                eprintln!("   deleting the pipelines: {e:#}");
                format!("{e:#}")
            });
        let deleted = delete_error.is_none()
            && wait_seen(&seen, Duration::from_secs(args.delete_timeout_secs), |s| {
                s.pipelines.values().all(|p| !p.2)
            })
            .await;
        let deleted_by_operator = lock(&seen).pipelines.values().filter(|p| !p.2).count();
        let delete_time = td.elapsed();
        let pd1 = read_proc(operator.pid()).unwrap_or(pd0);
        if !deleted {
            // Let the namespaces go anyway: drop the finalizers.
            drop_all_finalizers(client, namespaces).await;
        }
        let b = env.bootstrap.clone();
        let p = prefix.to_string();
        let topics_left =
            match tokio::task::spawn_blocking(move || topics_with_prefix(&b, &p)).await {
                Ok(Ok(t)) => Some(t.len()),
                Ok(Err(e)) => {
                    eprintln!("   listing the run's topics: {e:#}");
                    None
                }
                Err(e) => {
                    eprintln!("   listing the run's topics: {e}");
                    None
                }
            };
        println!(
            "   deleted in {:.1} s ({}), {} topics left before the sweep",
            delete_time.as_secs_f64(),
            if deleted {
                "finalizers ran"
            } else if delete_error.is_some() {
                "the deletes failed; finalizers dropped"
            } else {
                "timed out; finalizers dropped"
            },
            topics_left.map_or_else(|| "?".to_string(), |n| n.to_string())
        );
        let cleanup = json!({
            "timed": true,
            "pipelines_deleted_s": deleted.then(|| secs(delete_time)),
            "gave_up_after_s": (!deleted).then(|| secs(delete_time)),
            "finalizers_ran": deleted,
            "deleted_by_operator": deleted_by_operator,
            "topics_left_by_operator": topics_left,
            "error": delete_error,
            "operator_cpu_seconds": round1(cpu_secs(env, &pd0, &pd1)),
            "operator_peak_rss_mib_vmhwm": round1(pd1.hwm_kib as f64 / 1024.0),
        });
        cleanup
    } else {
        println!("   deletion not timed in this round");
        json!({ "timed": false })
    };
    // The headline peaks run through the idle window in every round; the
    // deletion's own, when timed, is in `cleanup`.
    let all = sampler.between(t0, td);
    let peak_threads = all.iter().map(|s| s.threads).max().unwrap_or(0);
    let hwm_ramp = p_ready.hwm_kib;
    let hwm_final = pd0.hwm_kib;
    drop(sampler);
    drop(operator);

    let mib = |kib: f64| round1(kib / 1024.0);
    Ok(json!({
        "pipelines": count,
        "other_pipelines_in_cluster": others.len(),
        "pods_expected": expected_pods,
        "all_ready": all_ready,
        "ready": ready_count,
        "time_to_all_ready_s": all_ready.then(|| secs(ramp)),
        "ramp_s": secs(ramp),
        "per_pipeline_time_to_ready_s": {
            "samples": per_pipeline.len(),
            "p50": pct_secs(&per_pipeline, 50.0),
            "p99": pct_secs(&per_pipeline, 99.0),
            "max": pct_secs(&per_pipeline, 100.0),
        },
        "per_pipeline_children_created_s": {
            "samples": children.len(),
            "p50": secs(Duration::from_secs_f64(percentile(&children, 50.0).max(0.0))),
            "p99": secs(Duration::from_secs_f64(percentile(&children, 99.0).max(0.0))),
        },
        "milestones_s": milestones,
        "machine_load_1m": { "at_first_apply": load_start, "at_end_of_ramp": load_ready },
        "ramp_cpu_cores_by_process": cores_by_group(&cpu0, &cpu_ready, env.ticks, ramp.as_secs_f64())
            .into_iter()
            .map(|(k, v)| json!({ "process": k, "cores": v }))
            .collect::<Vec<_>>(),
        "operator": {
            "peak_rss_mib_vmhwm_ramp": mib(hwm_ramp as f64),
            "peak_rss_mib_vmhwm": mib(hwm_final as f64),
            "steady_rss_mib_idle_mean": mib(steady_rss_kib),
            "peak_threads": peak_threads,
            "cpu_seconds_ramp": round1(cpu_secs(env, &p0, &p_ready)),
            "cpu_cores_ramp_mean": (cpu_secs(env, &p0, &p_ready) / ramp.as_secs_f64() * 100.0).round() / 100.0,
            "cpu_percent_idle": round1(idle_cpu_percent),
            "cpu_seconds_delete": cleanup["operator_cpu_seconds"].clone(),
            "reconcile_mean_s_ramp": ramp_mean_reconcile.map(|x| (x * 1000.0).round() / 1000.0),
            "reconcile_mean_s_idle": idle_mean_reconcile.map(|x| (x * 1000.0).round() / 1000.0),
            "reconciles_ramp": metric_total(&m_ready, "paystream_operator_reconciles_total") - metric_total(&m0, "paystream_operator_reconciles_total"),
            "topic_changes_ramp": metric_total(&m_ready, "paystream_operator_topic_changes_total") - metric_total(&m0, "paystream_operator_topic_changes_total"),
        },
        "ramp_requests_operator": requests_json(&ramp_requests, 1.0),
        "idle": {
            "window_s": secs(window),
            "settle_s": args.settle_secs,
            "ready_at_start": ready_before,
            "ready_at_end": ready_after,
            "reconciles": idle_reconciles,
            "reconciles_per_minute": round1(idle_reconciles * per_min),
            "status_refresh_period_s": refresh_period,
            "writes_excluding_lease": writes_of(&mi1, false) - writes_of(&mi0, false),
            "lease_writes": writes_of(&mi1, true) - writes_of(&mi0, true),
            "operator_requests": requests_json(&idle_ops, per_min),
            "apiserver_requests_all_clients": requests_json(&idle_api, per_min),
        },
        "cleanup": cleanup,
    }))
}

// ---------------------------------------------------------------- the run

/// Restarts the local control plane with an empty etcd and connects to it
/// again (its certificates are new); with `prepare` (extra nodes, pods per
/// node) it installs what a round needs: the CRD and the fake nodes.
/// Returns how long all of it took. Warns when the restarted cluster's
/// settings differ from what it ran with.
async fn reset_cluster(
    env: &mut Env,
    settings: &Value,
    log: &std::path::Path,
    prepare: Option<(usize, usize)>,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    reset::restart(settings, log)
        .await
        .context("the local control plane may be down: `make cluster-up` starts it")?;
    env.client = connect(&env.kubeconfig).await?;
    let now = cluster_settings();
    if &now != settings {
        eprintln!("   warning: the control plane restarted with {now}, not {settings}");
    }
    if let Some((extra_nodes, pods_per_node)) = prepare {
        install_crd(&env.client).await?;
        add_nodes(&env.client, extra_nodes, pods_per_node).await?;
    }
    Ok(start.elapsed())
}

/// Runs the benchmark and writes the report.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.counts.is_empty() || args.repeat == 0 {
        bail!("nothing to measure: give --counts and --repeat >= 1");
    }
    let kubeconfig = kubeconfig_path();
    let client = connect(&kubeconfig).await?;
    let version = client.apiserver_version().await?;
    install_crd(&client).await?;
    let stack = Stack::from_env();
    let mut docs = yaml_docs("examples/paymentpipeline.yaml")?;
    let template = docs.pop().context("no PaymentPipeline in the example")?;
    let secrets = docs
        .into_iter()
        .map(serde_json::from_value::<Secret>)
        .collect::<Result<Vec<_>, _>>()?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut env = Env {
        client: client.clone(),
        kubeconfig,
        bootstrap: stack.kafka_bootstrap.clone(),
        secrets,
        template,
        run_id: format!("{:06x}", (nanos >> 20) & 0xff_ffff),
        ticks: clock_ticks(),
    };
    let max = args.counts.iter().copied().max().unwrap_or(0);
    let extra_nodes = (max * PODS_PER_PIPELINE).div_ceil(args.pods_per_node.max(1));
    let nodes = Some((extra_nodes, args.pods_per_node));
    let settings = cluster_settings();
    if max >= 1000 && settings["controller_manager_kube_api_qps"] == "20 (default)" {
        eprintln!(
            "note: the controller manager runs with its default 20 QPS per controller; with {max} \
             pipelines its deployment and replicaset controllers alone need minutes. \
             `make cluster-down bench-operator` restarts it with the benchmark's setting."
        );
    }
    println!(
        "cluster {}, {extra_nodes} extra fake nodes of {} pods, settings {settings}",
        version.git_version, args.pods_per_node
    );
    let others = other_pipelines(&client, &[]).await?;
    let chosen = reset::choose(args.cleanup, reset::is_local(&env.kubeconfig), others.len())?;
    let mut cleanup = chosen;
    let reset_log = repo_root().join(format!(
        "var/test-logs/bench-operator-reset-{}.log",
        env.run_id
    ));
    let mut resets = Vec::new();
    if cleanup == Cleanup::Reset {
        // The first round starts on a fresh cluster too, like every later
        // one.
        println!("rounds start on the local control plane restarted with an empty etcd");
        let took = reset_cluster(&mut env, &settings, &reset_log, nodes).await?;
        resets.push(secs(took));
    } else {
        println!("rounds end by deleting their namespaces");
        add_nodes(&client, extra_nodes, args.pods_per_node).await?;
    }
    let started = Instant::now();
    let mut results = Vec::new();
    let mut reset_error = None;
    let rounds: Vec<(usize, usize)> = (1..=args.repeat)
        .flat_map(|run| args.counts.iter().map(move |&count| (run, count)))
        .collect();
    for (i, &(run, count)) in rounds.iter().enumerate() {
        let end = RoundEnd {
            time_deletion: reset::times_deletion(
                cleanup,
                &args.time_deletion_at,
                count,
                run == args.repeat,
            ),
            delete_namespaces: cleanup != Cleanup::Reset,
        };
        let mut r = match run_count(&env, &args, count, run, end).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{count} pipelines, run {run}: {e:#}");
                json!({ "pipelines": count, "error": format!("{e:#}") })
            }
        };
        r["run"] = json!(run);
        results.push(r);
        if cleanup != Cleanup::Reset {
            continue;
        }
        // A reset wipes the cluster: only if nobody else's pipelines
        // appeared meanwhile. Else this round's namespaces are deleted, and
        // so are those of every later round.
        let mine = run_namespaces(
            &round_base(&env, count, run),
            count,
            args.pipelines_per_namespace,
        );
        match other_pipelines(&env.client, &mine).await {
            Ok(o) if o.is_empty() => {}
            found => {
                let why = match found {
                    Ok(o) => format!(
                        "{} PaymentPipelines outside the benchmark appeared (e.g. {})",
                        o.len(),
                        o[0]
                    ),
                    Err(e) => format!("the cluster's PaymentPipelines could not be listed ({e:#})"),
                };
                eprintln!(
                    "   {why}: no reset; this round's namespaces are deleted, and every later round deletes its own"
                );
                let gone = empty_namespaces(&env.client, &mine, !end.time_deletion).await;
                if let Some(last) = results.last_mut() {
                    last["cleanup"]["namespace_gone"] = json!(gone);
                    last["cleanup"]["no_reset"] = json!(why);
                }
                cleanup = Cleanup::Delete;
                continue;
            }
        }
        // After the last round the cluster is left empty: no nodes, no CRD.
        let prepare = if i + 1 < rounds.len() { nodes } else { None };
        match reset_cluster(&mut env, &settings, &reset_log, prepare).await {
            Ok(took) => {
                println!("   control plane reset in {:.1} s", took.as_secs_f64());
                resets.push(secs(took));
            }
            Err(e) => {
                // No cluster to measure on: the runs so far are reported,
                // and the run fails after writing them.
                eprintln!("resetting the control plane: {e:#}");
                reset_error = Some(format!("{e:#}"));
                break;
            }
        }
    }
    let summary = summarize(&results);
    if cleanup != Cleanup::Reset
        && let Err(e) = remove_nodes(&env.client).await
    {
        eprintln!("removing the benchmark nodes: {e:#}");
    }
    let swept = sweep_topics(&env.bootstrap, &format!("bop{}-", env.run_id))
        .await
        .unwrap_or_else(|e| {
            eprintln!("sweeping the run's topics: {e:#}");
            0
        });

    let json = json!({
        "benchmark": "operator",
        "date": chrono::Utc::now().to_rfc3339(),
        "wall_s": secs(started.elapsed()),
        "machine": {
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        },
        "cluster": {
            "kubernetes": version.git_version,
            "kwok_default_nodes": "3 x 110 pods (make cluster-up)",
            "extra_fake_nodes": extra_nodes,
            "extra_node_pods": args.pods_per_node,
            "settings": settings,
        },
        "operator": {
            "binary": args.operator,
            "leader_election": true,
            "status_interval_s": args.status_interval_secs,
            "kubeconfig_user": "cluster admin (as the e2e suite runs it)",
        },
        "pipeline_shape": "examples/paymentpipeline.yaml with tables [users] of database payments (shared), partitions 1, replicationFactor 1, deleteTopicsOnDelete, consumer and API replicas 1 (no HPA): 3 Deployments, 3 Services (the producer's and consumer's headless), a ConfigMap and a ServiceAccount per pipeline (no PodDisruptionBudget: one pod per workload); topics <prefix>.payments.users and <prefix>.checkpoints",
        "pipelines_per_namespace": args.pipelines_per_namespace,
        "operator_scope": "every namespace (no --namespace), Lease in the run's first namespace",
        "apply_concurrency": args.apply_concurrency,
        "between_rounds": chosen.name(),
        "control_plane_resets_s": resets,
        "reset_error": reset_error.clone(),
        "deletion_timed": deletion_timed(&results),
        "topics_swept_at_end": swept,
        "repeat": args.repeat,
        "summary": summary,
        "results": results,
    });
    let md = markdown(&json);
    let (j, m) = write("operator", &json, &md)?;
    println!("{md}\nwritten: {} and {}", j.display(), m.display());
    if let Some(e) = reset_error {
        bail!("the control plane could not be reset, so the rounds after it were not run: {e}");
    }
    Ok(())
}

/// Which rounds timed the deletion of their pipelines, as the report says
/// it. Pure.
fn deletion_timed(results: &[Value]) -> String {
    let timed: Vec<String> = results
        .iter()
        .filter(|r| r["cleanup"]["timed"] == json!(true))
        .map(|r| {
            format!(
                "{} pipelines (run {})",
                fmt(&r["pipelines"]),
                fmt(&r["run"])
            )
        })
        .collect();
    match timed.len() {
        0 => "in no round".to_string(),
        n if n == results.len() => "in every round".to_string(),
        _ => format!("at {}", timed.join(", ")),
    }
}

/// The headline figures summarized over the repetitions of a count: the
/// JSON path in a run's result, how the report labels it, and whether only
/// runs that got every pipeline Ready count (a per-pipeline p99 of a partial
/// run covers only the pipelines that did, and would flatter the median).
const SUMMARY_FIGURES: &[(&[&str], &str, bool)] = &[
    (&["time_to_all_ready_s"], "time to all Ready, s", false),
    (
        &["per_pipeline_time_to_ready_s", "p99"],
        "per-pipeline time to Ready p99, s",
        true,
    ),
    (
        &["milestones_s", "all_deployments_exist"],
        "all Deployments created by the operator, s",
        false,
    ),
    (
        &["operator", "peak_rss_mib_vmhwm"],
        "operator peak RSS, MiB",
        false,
    ),
    (
        &["operator", "steady_rss_mib_idle_mean"],
        "operator steady RSS, MiB",
        false,
    ),
    (
        &["operator", "cpu_seconds_ramp"],
        "operator CPU during the ramp, CPU-s",
        false,
    ),
    (
        &["operator", "cpu_percent_idle"],
        "operator CPU while idle, % of a core",
        false,
    ),
    (
        &["idle", "operator_requests", "per_minute", "reads"],
        "idle API reads / min",
        false,
    ),
    (
        &["idle", "operator_requests", "per_minute", "writes"],
        "idle API writes / min (Lease included)",
        false,
    ),
    (
        &["idle", "writes_excluding_lease"],
        "idle writes besides the Lease",
        false,
    ),
    (
        &["cleanup", "pipelines_deleted_s"],
        "delete all pipelines, s",
        false,
    ),
];

/// Per pipeline count, in the order first run: how many runs there were,
/// how many ended with every pipeline Ready, and for each headline figure
/// its values in run order with their median, min and max (a run that did
/// not reach a figure, e.g. not all Ready, adds no value to it).
fn summarize(results: &[Value]) -> Vec<Value> {
    let mut counts: Vec<u64> = Vec::new();
    for r in results {
        if let Some(n) = r["pipelines"].as_u64()
            && !counts.contains(&n)
        {
            counts.push(n);
        }
    }
    counts
        .into_iter()
        .map(|n| {
            let runs: Vec<&Value> = results
                .iter()
                .filter(|r| r["pipelines"].as_u64() == Some(n))
                .collect();
            let mut figures = serde_json::Map::new();
            for (path, label, all_ready_only) in SUMMARY_FIGURES {
                let values: Vec<f64> = runs
                    .iter()
                    .filter(|r| !all_ready_only || r["all_ready"] == json!(true))
                    .filter_map(|r| path.iter().try_fold(*r, |v, k| v.get(*k))?.as_f64())
                    .collect();
                let stat = |f: fn(f64, f64) -> f64| values.iter().copied().reduce(f);
                figures.insert(
                    path.join("."),
                    json!({
                        "label": label,
                        "values": values,
                        "median": (!values.is_empty()).then(|| round2(median(&values))),
                        "min": stat(f64::min),
                        "max": stat(f64::max),
                    }),
                );
            }
            json!({
                "pipelines": n,
                "runs": runs.len(),
                "runs_all_ready": runs.iter().filter(|r| r["all_ready"] == json!(true)).count(),
                "figures": figures,
            })
        })
        .collect()
}

fn fmt(v: &Value) -> String {
    match v {
        Value::Null => "n/a".into(),
        Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), |f| format!("{f}")),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A value with its unit, or `n/a` (not reached, not measured).
fn with_unit(v: &Value, unit: &str) -> String {
    match v {
        Value::Null => "n/a".into(),
        v => format!("{}{unit}", fmt(v)),
    }
}

/// The headline figures per count over its runs: `median (min–max)`, or
/// the one value; empty when there is no summary (an older result).
fn summary_table(summary: &[Value]) -> String {
    if summary.is_empty() {
        return String::new();
    }
    let runs = match summary
        .iter()
        .map(|c| c["runs"].as_u64().unwrap_or(0))
        .max()
    {
        Some(1) => "once".to_string(),
        Some(2) => "twice".to_string(),
        n => format!("{} times", n.unwrap_or(0)),
    };
    let mut md = format!(
        "## Median over the runs\n\nEach count was measured {}, in rounds; a cell is the \
         median and, in brackets, the spread (min–max). Every run is in the next table.\n\n\
         | figure | {} |\n| --- |{}\n",
        runs,
        summary
            .iter()
            .map(|c| format!("{} pipelines", fmt(&c["pipelines"])))
            .collect::<Vec<_>>()
            .join(" | "),
        " ---: |".repeat(summary.len())
    );
    md.push_str("| runs with every pipeline Ready |");
    for c in summary {
        md.push_str(&format!(
            " {} of {} |",
            fmt(&c["runs_all_ready"]),
            fmt(&c["runs"])
        ));
    }
    md.push('\n');
    for (path, label, _) in SUMMARY_FIGURES {
        md.push_str(&format!("| {label} |"));
        for c in summary {
            let f = &c["figures"][path.join(".")];
            let cell = match (&f["median"], f["min"].as_f64(), f["max"].as_f64()) {
                (Value::Null, _, _) => "n/a".to_string(),
                (m, Some(lo), Some(hi)) if lo < hi => {
                    format!("{} ({}–{})", fmt(m), fmt(&json!(lo)), fmt(&json!(hi)))
                }
                (m, _, _) => fmt(m),
            };
            md.push_str(&format!(" {cell} |"));
        }
        md.push('\n');
    }
    md.push('\n');
    md
}

/// How the report says the rounds ended. Pure.
fn round_end(j: &Value) -> String {
    let deletion = fmt(&j["deletion_timed"]);
    match j["between_rounds"].as_str() {
        Some("reset") => {
            let took: Vec<f64> = j["control_plane_resets_s"]
                .as_array()
                .map_or_else(Vec::new, |a| a.iter().filter_map(Value::as_f64).collect());
            let took = if took.is_empty() {
                String::new()
            } else {
                format!(", {:.1} s each (median)", median(&took))
            };
            let mut text = format!(
                "Every round starts on the local control plane restarted with an empty \
                 etcd{took} (see docs/benchmarks.md); the operator's deletion of every pipeline \
                 is timed {deletion}."
            );
            let results = j["results"].as_array().map_or(&[][..], |a| a);
            if let Some(r) = results
                .iter()
                .find(|r| r["cleanup"]["no_reset"].is_string())
            {
                text.push_str(&format!(
                    " From {} pipelines (run {}) on, the rounds deleted their namespaces instead: \
                     {}.",
                    fmt(&r["pipelines"]),
                    fmt(&r["run"]),
                    fmt(&r["cleanup"]["no_reset"])
                ));
            }
            if let Some(e) = j["reset_error"].as_str() {
                text.push_str(&format!(
                    " **A reset failed, so the rounds after it were not run:** {e}."
                ));
            }
            text
        }
        Some("delete") => format!(
            "Every round ends by deleting its pipelines (timed {deletion}) and then its \
             namespaces."
        ),
        _ => String::new(),
    }
}

fn markdown(j: &Value) -> String {
    let results = j["results"].as_array().cloned().unwrap_or_default();
    let cols: Vec<String> = results
        .iter()
        .map(|r| match r.get("run") {
            Some(run) => format!("{} · run {}", fmt(&r["pipelines"]), fmt(run)),
            None => fmt(&r["pipelines"]),
        })
        .collect();
    let mut md = format!(
        "# Operator benchmark\n\n\
         Machine: {} cores. Cluster: the local control plane ({}), KWOK fake nodes (the 3 default \
         plus {} of {} pods added for the run), controller-manager `--kube-api-qps` {} / burst {}, \
         scheduler `--kube-api-qps` {}. The release operator runs as a local process watching every \
         namespace, with leader election on and a status refresh every {} s, against the real \
         local Kafka. Pipelines: at most {} per namespace. Pipeline \
         shape: {}. {}\n\n",
        fmt(&j["machine"]["cores"]),
        fmt(&j["cluster"]["kubernetes"]),
        fmt(&j["cluster"]["extra_fake_nodes"]),
        fmt(&j["cluster"]["extra_node_pods"]),
        fmt(&j["cluster"]["settings"]["controller_manager_kube_api_qps"]),
        fmt(&j["cluster"]["settings"]["controller_manager_kube_api_burst"]),
        fmt(&j["cluster"]["settings"]["scheduler_kube_api_qps"]),
        fmt(&j["operator"]["status_interval_s"]),
        fmt(&j["pipelines_per_namespace"]),
        fmt(&j["pipeline_shape"]),
        round_end(j),
    );
    md.push_str(&summary_table(j["summary"].as_array().map_or(&[], |a| a)));
    md.push_str("## Every run\n\n");
    md.push_str(&format!("| measure | {} |\n| --- |", cols.join(" | ")));
    md.push_str(&" --- |".repeat(cols.len()));
    md.push('\n');
    let row = |md: &mut String, label: &str, f: &dyn Fn(&Value) -> String| {
        md.push_str(&format!("| {label} |"));
        for r in &results {
            if r.get("error").is_some() {
                md.push_str(" error |");
            } else {
                md.push_str(&format!(" {} |", f(r)));
            }
        }
        md.push('\n');
    };
    row(
        &mut md,
        "**time to all Ready** (first apply to last Ready=True)",
        &|r| {
            format!(
                "**{}** ({} of {} Ready at {} s)",
                with_unit(&r["time_to_all_ready_s"], " s"),
                fmt(&r["ready"]),
                fmt(&r["pipelines"]),
                fmt(&r["ramp_s"])
            )
        },
    );
    row(&mut md, "per-pipeline time to Ready p50 / p99", &|r| {
        let p = &r["per_pipeline_time_to_ready_s"];
        format!("{} / {} s", fmt(&p["p50"]), fmt(&p["p99"]))
    });
    for (key, label) in [
        ("all_applied", "… all applies returned"),
        (
            "all_topics_exist",
            "… all topics exist in Kafka (created by the operator)",
        ),
        (
            "all_deployments_exist",
            "… all Deployments created by the operator",
        ),
        (
            "all_pods_exist",
            "… all pods created (deployment + replicaset controllers)",
        ),
        ("all_pods_bound", "… all pods bound (scheduler)"),
        ("all_pods_running", "… all pods Running (KWOK)"),
        (
            "all_deployments_available",
            "… all Deployments Available (deployment controller)",
        ),
        ("all_ready", "… all pipelines Ready (operator status)"),
    ] {
        row(&mut md, label, &|r| {
            with_unit(&r["milestones_s"][key], " s")
        });
    }
    row(
        &mut md,
        "per-pipeline apply to its 3 Deployments p50 / p99",
        &|r| {
            let p = &r["per_pipeline_children_created_s"];
            format!("{} / {} s", fmt(&p["p50"]), fmt(&p["p99"]))
        },
    );
    row(&mut md, "**operator peak RSS** (VmHWM)", &|r| {
        format!("**{} MiB**", fmt(&r["operator"]["peak_rss_mib_vmhwm"]))
    });
    row(&mut md, "operator steady RSS (mean while idle)", &|r| {
        format!("{} MiB", fmt(&r["operator"]["steady_rss_mib_idle_mean"]))
    });
    row(&mut md, "operator CPU during the ramp", &|r| {
        format!(
            "{} CPU-s ({} cores mean)",
            fmt(&r["operator"]["cpu_seconds_ramp"]),
            fmt(&r["operator"]["cpu_cores_ramp_mean"])
        )
    });
    row(&mut md, "**operator CPU while idle**", &|r| {
        format!(
            "**{} %** of one core",
            fmt(&r["operator"]["cpu_percent_idle"])
        )
    });
    row(&mut md, "operator threads (peak)", &|r| {
        fmt(&r["operator"]["peak_threads"])
    });
    row(&mut md, "mean reconcile duration ramp / idle", &|r| {
        format!(
            "{} / {}",
            with_unit(&r["operator"]["reconcile_mean_s_ramp"], " s"),
            with_unit(&r["operator"]["reconcile_mean_s_idle"], " s")
        )
    });
    row(
        &mut md,
        "status refresh period per pipeline while idle (interval asked)",
        &|r| {
            format!(
                "{} ({} s)",
                with_unit(&r["idle"]["status_refresh_period_s"], " s"),
                fmt(&j["operator"]["status_interval_s"])
            )
        },
    );
    row(
        &mut md,
        "machine load average (1 min) at first apply / end of ramp",
        &|r| {
            format!(
                "{} / {}",
                fmt(&r["machine_load_1m"]["at_first_apply"]),
                fmt(&r["machine_load_1m"]["at_end_of_ramp"])
            )
        },
    );
    row(
        &mut md,
        "CPU during the ramp by process, mean cores (top 6)",
        &|r| {
            let parts: Vec<String> = r["ramp_cpu_cores_by_process"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .take(7)
                        .map(|p| {
                            format!(
                                "{} {}",
                                p["process"].as_str().unwrap_or("?"),
                                fmt(&p["cores"])
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            if parts.is_empty() {
                "n/a".into()
            } else {
                parts.join(", ")
            }
        },
    );
    row(
        &mut md,
        "reconciles during the ramp / per minute idle",
        &|r| {
            format!(
                "{} / {}",
                fmt(&r["operator"]["reconciles_ramp"]),
                fmt(&r["idle"]["reconciles_per_minute"])
            )
        },
    );
    row(
        &mut md,
        "**idle API reads / min** (operator's counter)",
        &|r| {
            format!(
                "**{}**",
                fmt(&r["idle"]["operator_requests"]["per_minute"]["reads"])
            )
        },
    );
    row(&mut md, "idle reads by verb (count in window)", &|r| {
        let v = &r["idle"]["operator_requests"]["by_verb"];
        format!(
            "get {}, list {}, watch {}",
            fmt(v.get("get").unwrap_or(&json!(0))),
            fmt(v.get("list").unwrap_or(&json!(0))),
            fmt(v.get("watch").unwrap_or(&json!(0)))
        )
    });
    row(
        &mut md,
        "**idle API writes / min** (operator's counter, all verbs)",
        &|r| {
            format!(
                "**{}**",
                fmt(&r["idle"]["operator_requests"]["per_minute"]["writes"])
            )
        },
    );
    row(
        &mut md,
        "idle writes besides the Lease / Lease renewals (count)",
        &|r| {
            format!(
                "{} / {}",
                fmt(&r["idle"]["writes_excluding_lease"]),
                fmt(&r["idle"]["lease_writes"])
            )
        },
    );
    row(
        &mut md,
        "apiserver requests / min for those resources (all clients) reads / writes",
        &|r| {
            let p = &r["idle"]["apiserver_requests_all_clients"]["per_minute"];
            format!("{} / {}", fmt(&p["reads"]), fmt(&p["writes"]))
        },
    );
    row(
        &mut md,
        "delete all pipelines (finalizers: children, topics)",
        &|r| {
            let c = &r["cleanup"];
            if c["timed"] == json!(false) {
                return "not timed in this round".to_string();
            }
            let time = match (&c["pipelines_deleted_s"], &c["error"]) {
                (Value::Null, Value::Null) => {
                    format!("not done after {} s", fmt(&c["gave_up_after_s"]))
                }
                (Value::Null, e) => {
                    format!("failed after {} s ({})", fmt(&c["gave_up_after_s"]), fmt(e))
                }
                (t, _) => format!("{} s", fmt(t)),
            };
            format!(
                "{time}, {} of {} deleted by the operator, {} topics left, operator peak RSS {} MiB",
                fmt(&c["deleted_by_operator"]),
                fmt(&r["pipelines"]),
                fmt(&c["topics_left_by_operator"]),
                fmt(&c["operator_peak_rss_mib_vmhwm"])
            )
        },
    );
    md.push_str(
        "\n## How to read it\n\n\
         - **Time to all Ready** runs from the first apply to the moment the benchmark's watch \
         saw the last `Ready=True`. The milestone rows split it: each is when the *last* object \
         reached that step, from the same start; `n/a` means not every object got there before \
         the benchmark's timeout. The operator owns the first steps (topics in Kafka, then its \
         children) and the last (writing Ready once the Deployments are Available); between \
         them the controller manager (ReplicaSets, pods, Deployment status), the scheduler and \
         KWOK work, all on the same two cores as the operator, Kafka, etcd and the apiserver \
         (and whatever else runs on the machine: see the load average). The per-pipeline \
         p50/p99 is from that pipeline's own apply; the apply-to-Deployments row is the \
         operator's share of it.\n\
         - **RSS**: peak is the kernel's high-water mark `VmHWM` of the operator process at the \
         end of the idle window (the deletion's, where timed, is in its row); steady is \
         the mean `VmRSS` sampled every 0.5 s over the idle window. **CPU** is utime+stime from \
         `/proc/<pid>/stat`: CPU-seconds over the ramp, and percent of one core over the idle \
         window. Threads include librdkafka's (each Kafka client the operator creates has its own).\n\
         - **Reconciles**: the mean duration comes from \
         `paystream_operator_reconcile_duration_seconds`; the status refresh period is how often \
         each pipeline was really reconciled while idle (pipelines x window / reconciles): when \
         it is longer than the interval asked, the operator cannot keep up with its own requeues.\n\
         - **Idle requests** are counted over the idle window, which opens after every pipeline \
         is Ready (or the timeout) and a settle period. The operator's figures come from its own \
         client: every request it sends is counted by verb and resource \
         (`paystream_operator_api_requests_total`), reads (get, list, watch) and writes (apply = \
         patch, create, update, delete). Lease renewals (leader election, every 5 s) are writes \
         by design and shown apart. A `list` in the idle window would mean a watch fell back to \
         re-listing; `watch` counts watch (re)connections (kube-rs reopens each watch every few \
         minutes). The reads are the status refresh: every pipeline is reconciled every status \
         interval, and each reconcile reads its Secrets, the metadata of its children (to skip \
         unchanged applies) and its Deployments' replicas with GETs; Kafka is asked for topics, \
         the checkpoint and the lag. The apiserver row is `apiserver_request_total` diffed over \
         the same window for the same resources, from all clients (the controller manager and \
         KWOK also touch some, e.g. node Leases; watches are counted when they end), as a \
         cross-check.\n\
         - A shared 2-core machine: the control plane, Kafka and the operator compete for the \
         cores, and the time to Ready at 1,000 moves by about a fifth between runs. Each count is \
         measured several times, in rounds, so a slow spell falls on both counts; read the \
         medians, and the spread for how much to trust them.\n",
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_samples_with_labels_and_escapes() {
        let body = "# HELP x y\n# TYPE x counter\n\
            apiserver_request_total{code=\"200\",component=\"apiserver\",resource=\"pods\",subresource=\"\",verb=\"LIST\"} 12\n\
            paystream_operator_api_requests_total{verb=\"get\",resource=\"secrets\"} 3.0\n\
            weird{a=\"x\\\"y,z\",b=\"}\"} 1e3 1700000000\n\
            plain 7\n\
            inf_bucket{le=\"+Inf\"} +Inf\n\
            broken{a=\"x} 3\n";
        let s = parse_prometheus(body);
        assert_eq!(s.len(), 5, "{s:?}");
        assert_eq!(s[0].name, "apiserver_request_total");
        assert_eq!(s[0].label("verb"), "LIST");
        assert_eq!(s[0].value, 12.0);
        assert_eq!(s[2].label("a"), "x\"y,z");
        assert_eq!(s[2].label("b"), "}");
        assert_eq!(s[2].value, 1000.0);
        assert_eq!(s[3].labels, Vec::new());
        assert_eq!(s[3].value, 7.0);
        assert!(s[4].value.is_infinite());
    }

    #[test]
    fn apiserver_and_operator_counts_line_up() {
        let body = "apiserver_request_total{resource=\"paymentpipelines\",subresource=\"status\",verb=\"APPLY\",code=\"200\"} 2\n\
            apiserver_request_total{resource=\"paymentpipelines\",subresource=\"status\",verb=\"PATCH\",code=\"200\"} 1\n\
            apiserver_request_total{resource=\"secrets\",subresource=\"\",verb=\"GET\",code=\"200\"} 5\n\
            apiserver_request_total{resource=\"secrets\",subresource=\"\",verb=\"GET\",code=\"404\"} 1\n\
            paystream_operator_api_requests_total{verb=\"get\",resource=\"secrets\"} 6\n";
        let s = parse_prometheus(body);
        let a = apiserver_requests(&s);
        assert_eq!(
            a.get(&("patch".into(), "paymentpipelines/status".into())),
            Some(&3.0)
        );
        assert_eq!(a.get(&("get".into(), "secrets".into())), Some(&6.0));
        let put = parse_prometheus("apiserver_request_total{resource=\"leases\",verb=\"PUT\"} 4\n");
        assert_eq!(
            apiserver_requests(&put).get(&("update".into(), "leases".into())),
            Some(&4.0)
        );
        let o = operator_requests(&s);
        assert_eq!(o.get(&("get".into(), "secrets".into())), Some(&6.0));
        let later = BTreeMap::from([
            (("get".to_string(), "secrets".to_string()), 10.0),
            (("watch".to_string(), "deployments".to_string()), 1.0),
        ]);
        let d = diff(&o, &later);
        assert_eq!(d.get(&("get".into(), "secrets".into())), Some(&4.0));
        assert_eq!(d.get(&("watch".into(), "deployments".into())), Some(&1.0));
        let v = by_verb(&d);
        assert_eq!(v.get("get"), Some(&4.0));
        assert!(is_read("watch") && !is_read("patch"));
    }

    #[test]
    fn proc_stat_and_status_fields() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 2000 0 0 0 150 37 0 0 20 0 9 0 123 456 789";
        assert_eq!(proc_stat_cpu_ticks(stat), Some(187));
        assert_eq!(proc_stat_cpu_ticks("garbage"), None);
        let status = "Name:\tparo\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\nThreads:\t17\n";
        assert_eq!(proc_status_field(status, "VmHWM"), Some(51200));
        assert_eq!(proc_status_field(status, "VmRSS"), Some(40960));
        assert_eq!(proc_status_field(status, "Threads"), Some(17));
        assert_eq!(proc_status_field(status, "VmSwap"), None);
    }

    #[test]
    fn processes_are_grouped_by_program_and_main_class() {
        assert_eq!(
            process_group("/opt/k8s/bin/kube-apiserver\0--etcd-servers=x\0").as_deref(),
            Some("kube-apiserver")
        );
        assert_eq!(
            process_group("/usr/bin/java\0-Xmx1G\0kafka.Kafka\0server.properties\0").as_deref(),
            Some("kafka")
        );
        assert_eq!(
            process_group("java\0-cp\0/x/debezium-server.jar\0Main\0").as_deref(),
            Some("debezium")
        );
        assert_eq!(process_group("").as_deref(), None);
    }

    #[test]
    fn machine_busy_leaves_out_idle_and_iowait() {
        let stat = "cpu  100 5 50 1000 30 2 3 1 0 0\ncpu0 50 2 25 500 15 1 1 0 0 0\n";
        assert_eq!(machine_busy_ticks(stat), Some(161));
        assert_eq!(machine_busy_ticks("intr 1 2 3"), None);
    }

    #[test]
    fn cores_by_group_ranks_the_busiest_first() {
        let before = BTreeMap::from([("etcd".to_string(), 100u64), ("kwok".to_string(), 50)]);
        let after = BTreeMap::from([
            ("etcd".to_string(), 300u64),
            ("kwok".to_string(), 450),
            ("new".to_string(), 100),
            ("quiet".to_string(), 0),
        ]);
        let got = cores_by_group(&before, &after, 100.0, 10.0);
        assert_eq!(
            got,
            vec![
                ("kwok".to_string(), 0.4),
                ("etcd".to_string(), 0.2),
                ("new".to_string(), 0.1)
            ]
        );
    }

    #[test]
    fn flags_in_either_form() {
        let args: Vec<String> = ["kcm", "--kube-api-qps=100", "--kube-api-burst", "200"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(flag_value(&args, "--kube-api-qps").as_deref(), Some("100"));
        assert_eq!(
            flag_value(&args, "--kube-api-burst").as_deref(),
            Some("200")
        );
        assert_eq!(flag_value(&args, "--profiling"), None);
    }

    #[test]
    fn last_of_needs_every_item() {
        let t0 = Instant::now();
        let t = t0 + Duration::from_millis(1500);
        assert_eq!(last_of([Some(t0), Some(t)].into_iter(), 2, t0), Some(1.5));
        assert_eq!(last_of([Some(t0), None].into_iter(), 2, t0), None);
        assert_eq!(last_of(std::iter::empty(), 0, t0), None);
    }

    #[test]
    fn repeated_counts_are_summarized_by_median() {
        let results = vec![
            json!({"pipelines": 100, "run": 1, "all_ready": true, "time_to_all_ready_s": 18.0,
                   "operator": {"peak_rss_mib_vmhwm": 36.0}}),
            json!({"pipelines": 1000, "run": 1, "all_ready": false, "time_to_all_ready_s": null,
                   "per_pipeline_time_to_ready_s": {"p99": 5.0},
                   "operator": {"peak_rss_mib_vmhwm": 100.0}}),
            json!({"pipelines": 100, "run": 2, "all_ready": true, "time_to_all_ready_s": 20.5,
                   "operator": {"peak_rss_mib_vmhwm": 38.5}}),
            json!({"pipelines": 1000, "run": 2, "all_ready": true, "time_to_all_ready_s": 300.0,
                   "per_pipeline_time_to_ready_s": {"p99": 290.0},
                   "operator": {"peak_rss_mib_vmhwm": 104.0}}),
            json!({"pipelines": 100, "run": 3, "error": "the operator exited"}),
        ];
        let s = summarize(&results);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0]["pipelines"], 100);
        assert_eq!(s[0]["runs"], 3);
        assert_eq!(s[0]["runs_all_ready"], 2);
        let ready = &s[0]["figures"]["time_to_all_ready_s"];
        assert_eq!(ready["values"], json!([18.0, 20.5]));
        assert_eq!(ready["median"], json!(19.25));
        assert_eq!(
            (ready["min"].as_f64(), ready["max"].as_f64()),
            (Some(18.0), Some(20.5))
        );
        assert_eq!(s[1]["runs_all_ready"], 1);
        assert_eq!(
            s[1]["figures"]["time_to_all_ready_s"]["values"],
            json!([300.0])
        );
        assert_eq!(
            s[1]["figures"]["operator.peak_rss_mib_vmhwm"]["median"],
            json!(102.0)
        );
        assert_eq!(
            s[1]["figures"]["per_pipeline_time_to_ready_s.p99"]["values"],
            json!([290.0]),
            "the p99 of a run that did not get all Ready is left out"
        );
        assert_eq!(pct_secs(&[], 99.0), None);
        assert_eq!(pct_secs(&[1.234, 2.0], 50.0), Some(1.23));
        assert_eq!(
            s[1]["figures"]["cleanup.pipelines_deleted_s"]["median"],
            Value::Null
        );

        let md = summary_table(&s);
        assert!(md.contains("measured 3 times"), "{md}");
        assert!(
            md.contains("| figure | 100 pipelines | 1000 pipelines |"),
            "{md}"
        );
        assert!(
            md.contains("| runs with every pipeline Ready | 2 of 3 | 1 of 2 |"),
            "{md}"
        );
        assert!(
            md.contains("| time to all Ready, s | 19.25 (18–20.5) | 300 |"),
            "{md}"
        );
        assert!(
            md.contains("| delete all pipelines, s | n/a | n/a |"),
            "{md}"
        );
        assert_eq!(summary_table(&[]), "");
    }

    #[test]
    fn a_round_that_did_not_time_the_deletion_says_so() {
        let results = json!([
            {"pipelines": 100, "run": 1, "cleanup": {"timed": false}},
            {"pipelines": 100, "run": 2, "cleanup": {
                "timed": true, "pipelines_deleted_s": 7.5, "error": null,
                "deleted_by_operator": 100, "topics_left_by_operator": 0,
                "operator_peak_rss_mib_vmhwm": 34.5}},
        ]);
        let timed = deletion_timed(results.as_array().map_or(&[][..], |a| a));
        assert_eq!(timed, "at 100 pipelines (run 2)");
        let j = json!({
            "between_rounds": "reset",
            "control_plane_resets_s": [9.5, 8.25, 11.0],
            "deletion_timed": timed,
            "results": results,
        });
        let md = markdown(&j);
        assert!(
            md.contains(
                "| delete all pipelines (finalizers: children, topics) | not timed in this round \
                 | 7.5 s, 100 of 100 deleted by the operator, 0 topics left, operator peak RSS \
                 34.5 MiB |"
            ),
            "{md}"
        );
        assert!(
            md.contains("restarted with an empty etcd, 9.5 s each (median)")
                && md.contains("timed at 100 pipelines (run 2)")
                && !md.contains("A reset failed"),
            "{md}"
        );
        let deleting = json!({"between_rounds": "delete", "deletion_timed": "in every round"});
        assert!(round_end(&deleting).contains("then its namespaces"));
        assert_eq!(round_end(&json!({})), "");
    }

    #[test]
    fn a_failed_reset_and_a_fallback_to_deletion_are_reported() {
        let j = json!({
            "between_rounds": "reset",
            "reset_error": "e2e/controlplane/up.sh failed",
            "results": [
                {"pipelines": 100, "run": 1, "cleanup": {"timed": false,
                    "no_reset": "2 PaymentPipelines outside the benchmark appeared (e.g. a/b)"}},
            ],
        });
        let text = round_end(&j);
        assert!(
            text.contains("From 100 pipelines (run 1) on, the rounds deleted their namespaces")
                && text.contains("(e.g. a/b)")
                && text.contains("A reset failed, so the rounds after it were not run:** e2e/controlplane/up.sh failed"),
            "{text}"
        );
        let all = [
            json!({"pipelines": 100, "run": 1, "cleanup": {"timed": true}}),
            json!({"pipelines": 1000, "run": 1, "cleanup": {"timed": true}}),
        ];
        assert_eq!(deletion_timed(&all), "in every round");
        assert_eq!(deletion_timed(&[json!({"pipelines": 1})]), "in no round");
    }

    #[test]
    fn pipelines_are_spread_over_namespaces_of_at_most_the_limit() {
        assert_eq!(run_namespaces("b", 100, 100), vec!["b-00"]);
        assert_eq!(run_namespaces("b", 101, 100), vec!["b-00", "b-01"]);
        assert_eq!(run_namespaces("b", 1000, 100).len(), 10);
        assert_eq!(run_namespaces("b", 1000, 100)[9], "b-09");
        assert_eq!(
            run_namespaces("b", 5, 0),
            vec!["b-00", "b-01", "b-02", "b-03", "b-04"]
        );
        assert_eq!(run_namespaces("b", 0, 100), vec!["b-00"], "always one");
    }

    #[test]
    fn only_transient_failures_are_retried() {
        let api = |code: u16| {
            kube::Error::Api(
                kube::core::Status {
                    code,
                    ..Default::default()
                }
                .boxed(),
            )
        };
        assert!(retriable(&api(429)));
        assert!(retriable(&api(503)));
        assert!(retriable(&api(504)));
        assert!(!retriable(&api(409)));
        assert!(!retriable(&api(403)));
        assert!(retriable(&kube::Error::Service("connection closed".into())));
        assert!(!retriable(&kube::Error::LinesCodecMaxLineLengthExceeded));
    }

    #[test]
    fn pipelines_are_cut_down_from_the_example() {
        let template = json!({
            "apiVersion": "paystream.io/v1alpha1", "kind": "PaymentPipeline",
            "metadata": {"name": "demo"},
            "spec": {
                "source": {"database": "payments", "tables": ["users", "packages"]},
                "kafka": {"topicPrefix": "demo", "partitions": 3},
                "consumer": {"autoscaling": {"minReplicas": 1}},
                "api": {"jwtSecretRef": {"name": "api-jwt"}, "autoscaling": {"minReplicas": 2}},
            }
        });
        let p = pipeline(&template, "p0001", "bop-1");
        assert_eq!(p["metadata"]["name"], "p0001");
        assert_eq!(p["spec"]["source"]["tables"], json!(["users"]));
        assert_eq!(p["spec"]["kafka"]["topicPrefix"], "bop-1");
        assert_eq!(p["spec"]["kafka"]["partitions"], 1);
        assert_eq!(p["spec"]["kafka"]["deleteTopicsOnDelete"], true);
        assert_eq!(p["spec"]["consumer"], json!({"replicas": 1}));
        assert_eq!(
            p["spec"]["api"],
            json!({"jwtSecretRef": {"name": "api-jwt"}, "replicas": 1})
        );
    }
}
