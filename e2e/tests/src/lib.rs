//! Shared helpers for the end-to-end suite: they talk to whatever cluster
//! `KUBECONFIG` points at, so the local control plane (`make cluster-up`) and
//! kind (`make kind-up`) run the same assertions. [`Cluster`] connects,
//! [`TestNamespace`] gives each test a fresh namespace that is deleted again
//! even when the test panics, [`ClusterScoped`] does the same for cluster-wide
//! objects such as CRDs, [`wait_for`] / [`poll_until`] await a condition
//! with a deadline instead of sleeping, and [`kwok_pod_placement`] puts test
//! pods on the fake nodes.

pub mod http;
pub mod pipeline;
pub mod realpods;
pub mod tools;

use std::fmt::Debug;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::wait::{Condition, await_condition};
use kube::{Client, Config, Resource};
use serde::de::DeserializeOwned;

/// Labels every object the suite creates, so leftovers are easy to find:
/// `kubectl get ns -l paystream.dev/e2e=true`.
pub const E2E_LABEL: &str = "paystream.dev/e2e";

/// Label of the fake (KWOK) nodes on both clusters; test pods select them.
pub const KWOK_NODE_LABEL: (&str, &str) = ("type", "kwok");

/// Pod spec fields that land a pod on a fake node, to merge into a pod
/// template's `spec`: `nodeSelector` for [`KWOK_NODE_LABEL`] and the
/// toleration of kwok's `NoSchedule` taint (which the fake nodes carry on kind,
/// where real nodes run too; harmless on the local control plane).
pub fn kwok_pod_placement() -> serde_json::Value {
    serde_json::json!({
        "nodeSelector": { KWOK_NODE_LABEL.0: KWOK_NODE_LABEL.1 },
        "tolerations": [{
            "key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"
        }]
    })
}

/// The pinned versions of the local control plane, shared with its scripts.
const VERSIONS_ENV: &str = include_str!("../../controlplane/versions.env");

/// The Kubernetes version the suite is pinned to (`KUBE_VERSION` in
/// `e2e/controlplane/versions.env`), e.g. `v1.33.13`.
pub fn pinned_kube_version() -> Result<&'static str> {
    VERSIONS_ENV
        .lines()
        .find_map(|line| line.trim().strip_prefix("KUBE_VERSION="))
        .map(str::trim)
        .context("KUBE_VERSION missing from e2e/controlplane/versions.env")
}

/// Major and minor of [`pinned_kube_version`]: `("1", "33")`.
pub fn pinned_major_minor() -> Result<(&'static str, &'static str)> {
    let version = pinned_kube_version()?;
    let mut parts = version.trim_start_matches('v').split('.');
    match (parts.next(), parts.next()) {
        (Some(major), Some(minor)) => Ok((major, minor)),
        _ => Err(anyhow!("malformed KUBE_VERSION {version:?}")),
    }
}

/// A connection to the cluster under test, from `KUBECONFIG` (or the usual
/// kubeconfig inference).
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    config: Config,
}

impl Cluster {
    /// Connects with the inferred configuration.
    pub async fn connect() -> Result<Self> {
        let config = Config::infer()
            .await
            .context("no cluster configuration: set KUBECONFIG (make cluster-up prints it)")?;
        let client = Client::try_from(config.clone()).context("building the Kubernetes client")?;
        Ok(Self { client, config })
    }

    /// The client, authenticated as the kubeconfig's user (cluster admin).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The configuration the client was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A client that authenticates with the given bearer token instead of the
    /// kubeconfig's credentials (same server, same CA).
    pub fn client_with_token(&self, token: &str) -> Result<Client> {
        let mut config = self.config.clone();
        config.auth_info = serde_json::from_value(serde_json::json!({ "token": token }))
            .context("building token credentials")?;
        Client::try_from(config).context("building the token client")
    }
}

/// A DNS-label-safe name that is unique per call: `prefix-<time><counter>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{:06x}{n:x}", (nanos >> 10) & 0xff_ffff)
}

/// Deletes a cluster-scoped object (a namespace, a CRD) when dropped, also
/// when the test panics. The deletion runs on its own thread and runtime,
/// because the test's runtime may be gone or blocked by then; it does not wait
/// for finalizers.
pub struct ClusterScoped<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
{
    config: Config,
    name: String,
    armed: bool,
    kind: PhantomData<fn() -> K>,
}

impl<K> ClusterScoped<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
{
    /// Guards the object `name`, which must exist or be about to.
    pub fn new(cluster: &Cluster, name: impl Into<String>) -> Self {
        Self {
            config: cluster.config.clone(),
            name: name.into(),
            armed: true,
            kind: PhantomData,
        }
    }

    /// The guarded object's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Leaves the object in place (for debugging a failure by hand).
    pub fn keep(mut self) {
        self.armed = false;
    }
}

impl<K> Drop for ClusterScoped<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
{
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let name = self.name.clone();
        clean_up(
            &self.config,
            &format!("cleanup of {} {}", K::kind(&()), self.name),
            move |client| async move { delete_ignoring_missing(&Api::<K>::all(client), &name).await },
        );
    }
}

/// Runs `cleanup` with a client of `config` to the end, on a thread and
/// runtime of its own (a guard is dropped inside the test's runtime, which
/// cannot be blocked on), and reports a failure as `what` instead of
/// panicking in a drop.
fn clean_up<F, Fut>(config: &Config, what: &str, cleanup: F)
where
    F: FnOnce(Client) -> Fut + Send + 'static,
    Fut: Future<Output = Result<()>>,
{
    let config = config.clone();
    let outcome = std::thread::spawn(move || -> Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move { cleanup(Client::try_from(config)?).await })
    })
    .join();
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(err)) => eprintln!("{what} failed: {err:#}"),
        Err(_) => eprintln!("{what} panicked"),
    }
}

/// A namespace of its own for one test, labelled [`E2E_LABEL`], deleted on
/// drop. The PaymentPipelines left in it lose their finalizers first: the
/// test's operator is gone by then, and a finalizer nobody removes would
/// keep the namespace Terminating for good.
pub struct TestNamespace {
    guard: ClusterScoped<Namespace>,
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if !self.guard.armed {
            return;
        }
        let ns = self.guard.name.clone();
        clean_up(
            &self.guard.config,
            &format!("dropping the finalizers in {ns}"),
            move |client| async move {
                let api = Api::<kube::api::DynamicObject>::namespaced_with(
                    client,
                    &ns,
                    &pipeline::resource(),
                );
                // No CRD, no pipelines: nothing to do.
                let Ok(left) = api.list_metadata(&Default::default()).await else {
                    return Ok(());
                };
                for p in left.items {
                    if p.metadata
                        .finalizers
                        .as_ref()
                        .is_some_and(|f| !f.is_empty())
                    {
                        let name = p.metadata.name.unwrap_or_default();
                        api.patch(
                            &name,
                            &kube::api::PatchParams::default(),
                            &kube::api::Patch::Merge(
                                serde_json::json!({ "metadata": { "finalizers": null } }),
                            ),
                        )
                        .await?;
                    }
                }
                Ok(())
            },
        );
    }
}

impl TestNamespace {
    /// Creates `prefix-<unique>` and returns its guard.
    pub async fn create(cluster: &Cluster, prefix: &str) -> Result<Self> {
        let name = unique_name(prefix);
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": { E2E_LABEL: "true" } }
        }))?;
        Api::<Namespace>::all(cluster.client())
            .create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        Ok(Self {
            guard: ClusterScoped::new(cluster, name),
        })
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        self.guard.name()
    }
}

/// Awaits `condition` on the object `name`, for at most `timeout`. On timeout
/// the error carries the object as last seen, to show why it never got there.
pub async fn wait_for<K, C>(
    api: &Api<K>,
    name: &str,
    what: &str,
    timeout: Duration,
    condition: C,
) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    C: Condition<K>,
{
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, condition)).await {
        Ok(Ok(Some(object))) => Ok(object),
        Ok(Ok(None)) => Err(anyhow!("{what}: {name} was deleted while waiting")),
        Ok(Err(err)) => Err(anyhow!("{what}: watching {name} failed: {err}")),
        Err(_) => {
            let last = api.get_opt(name).await.ok().flatten();
            Err(anyhow!(
                "{what}: not reached within {timeout:?}; last seen: {last:#?}"
            ))
        }
    }
}

/// Calls `probe` until it returns `Some`, at most until `timeout`, with a
/// short pause between probes; for conditions that cannot be watched (an
/// aggregated API, a list). The error names the last probe failure.
pub async fn poll_until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => String::from("condition not met yet"),
            Err(err) => format!("{err:#}"),
        };
        if Instant::now() >= deadline {
            return Err(anyhow!("{what}: not reached within {timeout:?} ({last})"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Deletes a namespaced or cluster-scoped object now, ignoring "not found".
pub async fn delete_ignoring_missing<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(err) => Err(err).with_context(|| format!("deleting {name}")),
    }
}

/// A local process the test started (the operator, the producer), killed
/// when dropped, also when the test panics.
pub struct LocalProcess {
    name: String,
    child: std::process::Child,
}

impl LocalProcess {
    /// Starts `program` with `args` and extra `env`, logging to
    /// `var/e2e/<name>.log`.
    pub fn start(
        name: &str,
        program: &std::path::Path,
        args: &[&str],
        env: &[(&str, String)],
    ) -> Result<Self> {
        let dir = repo_root().join("var/e2e");
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let mut cmd = std::process::Command::new(program);
        cmd.args(args).stdout(log.try_clone()?).stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Self {
            name: name.to_string(),
            child,
        })
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for LocalProcess {
    fn drop(&mut self) {
        if let Err(e) = self.child.kill() {
            eprintln!("stopping {}: {e}", self.name);
        }
        let _ = self.child.wait();
    }
}

/// The repository root.
pub fn repo_root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds the workspace binaries `bins` of `packages` (debug) and returns
/// the directory holding them.
pub fn build_binaries(packages: &[&str]) -> Result<std::path::PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.arg("build").current_dir(repo_root());
    for p in packages {
        cmd.args(["-p", p]);
    }
    let status = cmd.status().context("running cargo build")?;
    anyhow::ensure!(status.success(), "cargo build of {packages:?} failed");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target"));
    Ok(target.join("debug"))
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// GETs `http://127.0.0.1:<port><path>` and returns the body.
pub async fn http_get(port: u16, path: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await?;
    Ok(buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

/// GETs `http://127.0.0.1:<port><path>` and returns the status code.
pub async fn http_status(port: u16, path: &str) -> Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await?;
    buf.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no HTTP status line in {buf:?}"))
}

/// Sums the samples of metric `name` in a Prometheus text body whose labels
/// pass `keep`.
pub fn metric_sum(body: &str, name: &str, keep: impl Fn(&str) -> bool) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, labels) = match series.split_once('{') {
                Some((m, rest)) => (m, rest),
                None => (series, ""),
            };
            (metric == name && keep(labels)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// The partition count of `topic` in the Kafka at `bootstrap`, or `None`
/// when the topic does not exist.
pub fn kafka_partitions(bootstrap: &str, topic: &str) -> Result<Option<usize>> {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_distinct_dns_labels() {
        let a = unique_name("e2e-x");
        let b = unique_name("e2e-x");
        assert_ne!(a, b);
        for name in [&a, &b] {
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
        }
    }

    #[test]
    fn pinned_version_is_read_from_versions_env() -> Result<()> {
        let version = pinned_kube_version()?;
        let (major, minor) = pinned_major_minor()?;
        assert!(
            version.starts_with(&format!("v{major}.{minor}.")),
            "{version}"
        );
        assert_eq!(major, "1");
        Ok(())
    }
}
