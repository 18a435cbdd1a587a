//! The kube-rs controller: watches PaymentPipelines (filtered on generation
//! and finalizers, so status writes never trigger it) and the Deployments,
//! ConfigMaps and HPAs it owns, and runs one reconcile per pipeline:
//! dereference (Secrets) → validate → topics → build → apply → status. A
//! periodic requeue refreshes the binlog position and the lag; the status is
//! written only when it changed. Children are read from the watch caches
//! ([`crate::children`]) and Kafka through clients shared per cluster
//! ([`crate::kafka`]), so a refresh costs a few Kafka round trips and, when
//! nothing changed, no apiserver request beyond the Secrets' metadata. A
//! workload short of ready pods has its pods listed ([`crate::pods`]) and
//! its pipeline refreshed sooner. Problems become a Degraded condition and
//! an Event each, never a crash; Kafka outages back off.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher;
use kube::runtime::{Controller, WatchStreamExt, predicates};
use kube::{Client, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::children::{CachesStopped, Children, Watches};
use crate::cleaned::Cleaned;
use crate::crd::{FINALIZER, PaymentPipeline, PaymentPipelineStatus};
use crate::dereference::dereference;
use crate::kafka::KafkaClients;
use crate::metrics::Metrics;
use crate::observe;
use crate::pods;
use crate::reconcile::apply::{Applier, Listing};
use crate::reconcile::names::MANAGER;
use crate::reconcile::validate::{Validated, validate};
use crate::reconcile::{self, BuildError, BuildInputs, env};
use crate::refresh::{self, next_refresh};
use crate::secret_versions::SecretVersions;
use crate::status::{self, Observation, Problem};
use crate::topics;

/// A reconcile failed; the controller retries with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The apiserver refused or failed.
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// A builder failed (a bug).
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Deleting the topics failed.
    #[error(transparent)]
    Topics(#[from] topics::TopicError),
    /// The object has no name or uid to own children with.
    #[error("the PaymentPipeline has no uid yet")]
    NoOwner,
    /// The watch caches stopped (the controller is shutting down).
    #[error(transparent)]
    Caches(#[from] CachesStopped),
    /// The finalizer helper failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    fn class(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Build(_) => "build",
            Self::Topics(_) => "kafka",
            Self::NoOwner => "owner",
            Self::Caches(_) => "caches",
            Self::Finalizer(_) => "finalizer",
        }
    }
}

/// Settings of the reconciler.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Status refresh period.
    pub status_interval: Duration,
    /// Kafka request timeout.
    pub kafka_timeout: Duration,
    /// Tag of the default images.
    pub image_tag: String,
    /// Most reconciles running at once (each holds Kafka clients and
    /// apiserver requests; unbounded, a thousand pipelines exhaust the
    /// machine).
    pub max_concurrent_reconciles: u16,
    /// Most status refreshes a second over all pipelines (0: no bound).
    pub max_status_refreshes_per_sec: f64,
}

/// What every reconcile shares.
pub struct Context {
    client: Client,
    children: Children,
    kafka: KafkaClients,
    secret_versions: SecretVersions,
    /// The controller's cache of PaymentPipelines, set when it starts.
    pipelines: OnceLock<reflector::Store<PaymentPipeline>>,
    applier: Applier,
    metrics: Metrics,
    recorder: Recorder,
    settings: Settings,
    /// Consecutive Kafka failures per pipeline, for the backoff.
    kafka_failures: Mutex<HashMap<String, u32>>,
    /// The pipelines whose cleanup finished, so a late reconcile of one
    /// does not clean up again.
    cleaned: Mutex<Cleaned>,
}

impl Context {
    /// A context writing through `client`, reading children from
    /// `children`.
    pub fn new(
        client: Client,
        children: Children,
        metrics: Metrics,
        settings: Settings,
        instance: String,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.into(),
                instance: Some(instance),
            },
        );
        Self {
            applier: Applier::new(client.clone(), children.clone(), metrics.clone()),
            kafka: KafkaClients::new(settings.kafka_timeout),
            // Well within a status interval: a rotation rolls the pods
            // within one.
            secret_versions: SecretVersions::new(
                (settings.status_interval / 3).min(Duration::from_secs(5)),
            ),
            children,
            pipelines: OnceLock::new(),
            client,
            metrics,
            recorder,
            settings,
            kafka_failures: Mutex::new(HashMap::new()),
            cleaned: Mutex::new(Cleaned::new(CLEANED_TTL)),
        }
    }

    async fn event(&self, p: &PaymentPipeline, type_: EventType, reason: &str, note: String) {
        self.metrics.api_write("Event", "create");
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &p.object_ref(&())).await {
            tracing::warn!(error = %e, "cannot publish an Event");
        }
    }

    /// Records that the pipeline with `uid` is cleaned up.
    fn mark_cleaned(&self, uid: Option<&str>) {
        if let (Some(uid), Ok(mut c)) = (uid, self.cleaned.lock()) {
            c.mark(uid, Instant::now());
        }
    }

    /// The delay until `key`'s next status refresh; shorter while a
    /// workload is `settling` (not fully rolled out and ready).
    fn refresh_in(&self, key: &str, settling: bool) -> Duration {
        let count = self.pipelines.get().map_or(1, |s| s.len());
        next_refresh(
            refresh::interval(self.settings.status_interval, settling),
            count,
            self.settings.max_status_refreshes_per_sec,
            key,
        )
    }

    fn kafka_backoff(&self, key: &str, failed: bool) -> Option<Duration> {
        let mut m = self.kafka_failures.lock().ok()?;
        if !failed {
            m.remove(key);
            return None;
        }
        let n = m.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        let secs = 5u64.saturating_mul(1 << (*n).min(6)).min(300);
        Some(Duration::from_secs(secs))
    }
}

/// What the Kafka step learnt.
#[derive(Default)]
struct KafkaOutcome {
    partitions: Option<i32>,
    checkpoint: Option<Option<paystream_core::checkpoint::Checkpoint>>,
    lag: Option<i64>,
    changes: Vec<String>,
    unreachable: bool,
}

/// Topics (unless paused), then the checkpoint and the lag.
async fn kafka_step(
    ctx: &Context,
    v: &Validated,
    sasl: Option<(String, String)>,
    paused: bool,
    problems: &mut Vec<Problem>,
) -> KafkaOutcome {
    let mut out = KafkaOutcome::default();
    let kafka = &v.spec.kafka;
    let config = topics::client_config(kafka, sasl);
    let unreachable = |e: &dyn std::fmt::Display| {
        Problem::new(
            "KafkaUnreachable",
            format!(
                "cannot reach Kafka at {}: {e}; check kafka.bootstrapServers and the brokers",
                kafka.bootstrap_servers
            ),
        )
    };
    let cluster = match ctx.kafka.get(&config) {
        Ok(c) => c,
        Err(e) => {
            problems.push(unreachable(&e));
            out.unreachable = true;
            return out;
        }
    };
    let desired = topics::desired(kafka, &v.change_topics);
    let names: Vec<String> = desired.iter().map(|d| d.name.clone()).collect();
    let mut keys: Vec<&str> = vec!["cleanup.policy"];
    keys.extend(kafka.topic_config.keys().map(String::as_str));
    let started = Instant::now();
    let existing = match cluster.describe(&names, &keys).await {
        Ok(e) => e,
        Err(e) => {
            problems.push(unreachable(&e));
            out.unreachable = true;
            return out;
        }
    };
    let plan = topics::plan(&desired, &existing);
    if let Some((_, have, want)) = plan.refused.first() {
        let topics: Vec<&str> = plan.refused.iter().map(|(t, _, _)| t.as_str()).collect();
        problems.push(Problem::new(
            "PartitionDecreaseRefused",
            format!(
                "kafka.partitions is {want} but the topics have {have}; Kafka cannot remove partitions, so {} left as they are: set kafka.partitions to {have} or more",
                topics.join(", ")
            ),
        ));
    }
    let mut partitions: HashMap<String, i32> = existing
        .iter()
        .map(|(k, e)| (k.clone(), e.partitions))
        .collect();
    if !paused && !plan.is_noop() {
        match cluster.execute(&plan).await {
            Ok(changes) => {
                for d in &plan.create {
                    partitions.insert(d.name.clone(), d.partitions);
                }
                for (t, _, to) in &plan.grow {
                    partitions.insert(t.clone(), *to);
                }
                out.changes = changes;
            }
            Err(e) => {
                problems.push(Problem::new("TopicUpdateFailed", format!("{e}")));
            }
        }
    }
    ctx.metrics.kafka_step("topics", started.elapsed());
    out.partitions = v
        .change_topics
        .iter()
        .filter_map(|t| partitions.get(t).copied())
        .min();
    let started = Instant::now();
    match observe::checkpoint(&cluster, &kafka.topic_prefix).await {
        Ok(cp) => out.checkpoint = Some(cp),
        Err(e) => tracing::warn!(error = %e, "cannot read the producer checkpoint"),
    }
    ctx.metrics.kafka_step("checkpoint", started.elapsed());
    let started = Instant::now();
    let group = env::consumer_group(&kafka.topic_prefix);
    match observe::consumer_lag(&cluster, &group, &v.change_topics).await {
        Ok(lag) => out.lag = Some(lag),
        Err(e) => tracing::warn!(error = %e, "cannot read the consumer lag"),
    }
    ctx.metrics.kafka_step("lag", started.elapsed());
    out
}

/// Applies every child in two rounds of concurrent requests: first what the
/// workloads refer to (ServiceAccount, ConfigMap, Services, PDBs), then the
/// Deployments and their HPAs, so no pod is created before its identity
/// and configuration exist. Returns how many objects it wrote.
async fn apply_all(
    ctx: &Context,
    ns: &str,
    desired: &reconcile::Desired,
) -> Result<usize, kube::Error> {
    let a = &ctx.applier;
    let mut first: Vec<BoxFuture<'_, Result<bool, kube::Error>>> = vec![
        a.apply(ns, &desired.service_account).boxed(),
        a.apply(ns, &desired.config_map).boxed(),
    ];
    first.extend(
        desired
            .services
            .iter()
            .map(|s| a.apply_service(ns, s).boxed()),
    );
    first.extend(desired.pdbs.iter().map(|p| a.apply(ns, p).boxed()));
    first.extend(
        desired
            .stale_pdbs
            .iter()
            .map(|name| a.delete::<PodDisruptionBudget>(ns, name).boxed()),
    );
    let mut second: Vec<BoxFuture<'_, Result<bool, kube::Error>>> = desired
        .deployments
        .iter()
        .map(|d| a.apply_deployment(ns, d).boxed())
        .collect();
    second.extend(desired.hpas.iter().map(|h| a.apply(ns, h).boxed()));
    second.extend(
        desired
            .stale_hpas
            .iter()
            .map(|name| a.delete::<HorizontalPodAutoscaler>(ns, name).boxed()),
    );
    let mut writes = 0usize;
    for round in [first, second] {
        let wrote = futures::future::try_join_all(round).await?;
        writes += wrote.into_iter().filter(|w| *w).count();
    }
    Ok(writes)
}

/// Writes `status` if it differs from what the object has.
async fn write_status(
    ctx: &Context,
    p: &PaymentPipeline,
    status: PaymentPipelineStatus,
) -> Result<(), kube::Error> {
    if p.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<PaymentPipeline> =
        Api::namespaced(ctx.client.clone(), &p.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": "paystream.io/v1alpha1",
        "kind": "PaymentPipeline",
        "status": status,
    });
    ctx.metrics.api_write("PaymentPipeline", "status");
    api.patch_status(
        &p.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    Ok(())
}

/// Publishes a Warning Event for each problem that is new: not in the
/// Degraded message the pipeline had.
async fn announce(ctx: &Context, p: &PaymentPipeline, problems: &[Problem]) {
    for problem in status::new_problems(p.status.as_ref(), problems) {
        ctx.event(
            p,
            EventType::Warning,
            &problem.reason,
            problem.message.clone(),
        )
        .await;
    }
}

async fn reconcile_apply(p: Arc<PaymentPipeline>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = p.namespace().unwrap_or_default();
    let key = format!("{ns}/{}", p.name_any());
    let mut obs = Observation {
        generation: p.metadata.generation,
        paused: p.spec.paused,
        ..Default::default()
    };
    let validated = match validate(&p) {
        Ok(v) => v,
        Err(problems) => {
            obs.problems = problems
                .into_iter()
                .map(|m| Problem::new("InvalidSpec", m))
                .collect();
            let status = status::compute(p.status.as_ref(), &obs, Time(Timestamp::now()));
            announce(&ctx, &p, &obs.problems).await;
            write_status(&ctx, &p, status).await?;
            // Nothing changes until the spec does; the watch brings that.
            return Ok(Action::requeue(Duration::from_secs(300)));
        }
    };
    ctx.children.ready().await?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let deref = dereference(
        &secrets,
        &ctx.secret_versions,
        &validated,
        &mut obs.problems,
    )
    .await?;
    let kafka = kafka_step(
        &ctx,
        &validated,
        deref.sasl,
        p.spec.paused,
        &mut obs.problems,
    )
    .await;
    let backoff = ctx.kafka_backoff(&key, kafka.unreachable);
    for _ in &kafka.changes {
        ctx.metrics.topic_changed();
    }
    if !kafka.changes.is_empty() {
        // One Event for all of a reconcile's topic changes: a new pipeline
        // costs one write, not one per topic.
        ctx.event(
            &p,
            EventType::Normal,
            "TopicChanged",
            kafka.changes.join("; "),
        )
        .await;
    }
    obs.partitions = kafka.partitions;
    obs.checkpoint = kafka.checkpoint;
    obs.lag = kafka.lag;

    if !p.spec.paused {
        let owner = p.controller_owner_ref(&()).ok_or(Error::NoOwner)?;
        let inputs = BuildInputs {
            owner,
            consumer_lag: obs.lag.or(p.status.as_ref().and_then(|s| s.consumer_lag)),
            image_tag: ctx.settings.image_tag.clone(),
            secret_versions: deref.versions,
        };
        let desired = reconcile::build(&validated, &inputs)?;
        match apply_all(&ctx, &ns, &desired).await {
            Ok(n) if n > 0 => tracing::info!(pipeline = %key, writes = n, "applied"),
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 422 || s.code == 403 => {
                obs.problems.push(Problem::new(
                    "ApplyFailed",
                    format!("the apiserver refused an object: {}", s.message),
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let workloads = pods::observe(&ctx.children, &ns, &validated.name);
    obs.replicas = Some(workloads.clone().map(|w| w.replicas));
    // Only the workloads short of ready pods cost a request: their pods
    // say why (image, crash, scheduling, configuration).
    obs.problems
        .extend(pods::problems(&ctx.client, &ns, &workloads).await);
    let status = status::compute(p.status.as_ref(), &obs, Time(Timestamp::now()));
    announce(&ctx, &p, &obs.problems).await;
    write_status(&ctx, &p, status).await?;
    let settling = workloads.iter().any(|w| w.unsettled.is_some());
    Ok(Action::requeue(
        backoff.unwrap_or_else(|| ctx.refresh_in(&key, settling)),
    ))
}

async fn reconcile_cleanup(p: Arc<PaymentPipeline>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = p.namespace().unwrap_or_default();
    let name = p.name_any();
    // The children's names come from the caches, so they must hold their
    // first full list (a leader that just started cleans up a pipeline
    // deleted while it was away). An orphaning delete strips the children's
    // owner references: a child the caches missed would stay for good, so
    // they are listed.
    ctx.children.ready().await?;
    let from = if p.finalizers().iter().any(|f| f == ORPHAN_FINALIZER) {
        Listing::Label
    } else {
        Listing::Caches
    };
    let a = &ctx.applier;
    // The kinds are independent of each other and of the topics: one round
    // of requests.
    let children = futures::future::try_join_all([
        a.delete_children::<HorizontalPodAutoscaler>(&ns, &name, from)
            .boxed(),
        a.delete_children::<PodDisruptionBudget>(&ns, &name, from)
            .boxed(),
        a.delete_children::<Deployment>(&ns, &name, from).boxed(),
        a.delete_children::<Service>(&ns, &name, from).boxed(),
        a.delete_children::<ConfigMap>(&ns, &name, from).boxed(),
        a.delete_children::<ServiceAccount>(&ns, &name, from)
            .boxed(),
    ]);
    let (removed, deleted_topics) = tokio::try_join!(
        async { children.await.map_err(Error::from) },
        delete_topics(&ctx, &p, &ns),
    )?;
    if let Some(names) = deleted_topics {
        ctx.event(
            &p,
            EventType::Normal,
            "TopicsDeleted",
            format!("deleted topics {}", names.join(", ")),
        )
        .await;
    }
    let removed: usize = removed.into_iter().sum();
    ctx.metrics.cleaned_up();
    tracing::info!(pipeline = %p.name_any(), removed, "cleaned up");
    Ok(Action::await_change())
}

/// Deletes the pipeline's topics when its spec asks for it; returns their
/// names, or `None` when they are kept.
async fn delete_topics(
    ctx: &Context,
    p: &PaymentPipeline,
    ns: &str,
) -> Result<Option<Vec<String>>, Error> {
    if !p.spec.kafka.delete_topics_on_delete {
        return Ok(None);
    }
    let Ok(v) = validate(p) else {
        return Ok(None);
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let mut ignored = Vec::new();
    let sasl = dereference(&secrets, &ctx.secret_versions, &v, &mut ignored)
        .await?
        .sasl;
    let cluster = ctx
        .kafka
        .get(&topics::client_config(&v.spec.kafka, sasl))
        .map_err(topics::TopicError::connecting)?;
    let names: Vec<String> = topics::desired(&v.spec.kafka, &v.change_topics)
        .into_iter()
        .map(|d| d.name)
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    cluster.delete(&refs).await?;
    Ok(Some(names))
}

/// The finalizer the apiserver adds for `propagationPolicy: Orphan`.
const ORPHAN_FINALIZER: &str = "orphan";

/// How long a finished cleanup is remembered: far longer than a deleted
/// pipeline's cached object and queued reconciles outlive its finalizer.
const CLEANED_TTL: Duration = Duration::from_secs(600);

/// One reconcile of one PaymentPipeline.
pub async fn reconcile(p: Arc<PaymentPipeline>, ctx: Arc<Context>) -> Result<Action, Error> {
    let start = Instant::now();
    let ns = p.namespace().unwrap_or_default();
    let api: Api<PaymentPipeline> = Api::namespaced(ctx.client.clone(), &ns);
    // The apiserver gives every object a uid; without one nothing is
    // remembered or skipped.
    let uid = p.metadata.uid.clone().filter(|u| !u.is_empty());
    let deleting = p.metadata.deletion_timestamp.is_some();
    if deleting
        && let Some(uid) = &uid
        && ctx
            .cleaned
            .lock()
            .is_ok_and(|c| c.contains(uid, Instant::now()))
    {
        tracing::debug!(pipeline = %p.name_any(), "already cleaned up");
        ctx.metrics.reconciled(start.elapsed());
        return Ok(Action::await_change());
    }
    let cleans_up = deleting && p.finalizers().iter().any(|f| f == FINALIZER);
    if p.metadata.deletion_timestamp.is_none() && !p.finalizers().iter().any(|f| f == FINALIZER) {
        ctx.metrics.api_write("PaymentPipeline", "finalizer");
    }
    // The finalizer helper only adds the finalizer on a first reconcile;
    // the children are applied in the same pass, not after another trip
    // through the queue.
    let first =
        p.metadata.deletion_timestamp.is_none() && !p.finalizers().iter().any(|f| f == FINALIZER);
    let object = p.clone();
    let c = ctx.clone();
    let result = finalizer(&api, FINALIZER, p, |event| async move {
        match event {
            Finalizer::Apply(p) => reconcile_apply(p, c).await,
            Finalizer::Cleanup(p) => reconcile_cleanup(p, c).await,
        }
    })
    .await;
    let result = match result {
        // A reconcile queued before the finalizer came off, run on the
        // cached object after it was deleted: the cleanup is done.
        Err(kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(s)))
            if s.code == 404 =>
        {
            ctx.mark_cleaned(uid.as_deref());
            Ok(Action::await_change())
        }
        Ok(action) if cleans_up => {
            ctx.mark_cleaned(uid.as_deref());
            Ok(action)
        }
        Ok(_) if first => reconcile_apply(object, ctx.clone()).await,
        other => other.map_err(|e| Error::Finalizer(Box::new(e))),
    };
    ctx.metrics.reconciled(start.elapsed());
    result
}

/// Retry policy on errors: log, count, retry in 30 s.
pub fn error_policy(p: Arc<PaymentPipeline>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(pipeline = %p.name_any(), error = %error, "reconcile failed");
    ctx.metrics.failed(error.class());
    Action::requeue(Duration::from_secs(30))
}

/// Runs the controller until `stop` is cancelled; `watches` are the
/// streams behind the context's [`Children`] caches.
pub async fn run(
    client: Client,
    namespace: Option<&str>,
    ctx: Arc<Context>,
    watches: Watches,
    stop: CancellationToken,
) -> Result<(), kube::Error> {
    let pipelines: Api<PaymentPipeline> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    // Fails early, with a clear error, when the CRD is not installed.
    pipelines
        .list_metadata(&ListParams::default().limit(1))
        .await?;
    let (reader, writer) = reflector::store();
    // The only place the store is set; a second run keeps the first's.
    let _ = ctx.pipelines.set(reader.clone());
    let trigger = watcher(pipelines, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(prune_pipeline)
        .reflect(writer)
        .applied_objects()
        .predicate_filter(
            kube::runtime::utils::Predicate::combine(
                predicates::generation,
                predicates::finalizers,
            ),
            Default::default(),
        );
    let concurrency = ctx.settings.max_concurrent_reconciles.max(1);
    Controller::for_stream(trigger, reader)
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .owns_stream(watches.deployments)
        .owns_stream(watches.service_accounts)
        .owns_stream(watches.config_maps)
        .owns_stream(watches.services)
        .owns_stream(watches.hpas)
        .owns_stream(watches.pdbs)
        .graceful_shutdown_on(async move { stop.cancelled().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(pipeline = %obj_name(&obj), "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile error"),
            }
        })
        .await;
    Ok(())
}

/// Keeps of a cached PaymentPipeline what reconciles read: its
/// managedFields and kubectl's copy of the last applied spec are dropped (at
/// a thousand pipelines they were most of the cache).
fn prune_pipeline(p: &mut PaymentPipeline) {
    p.metadata.managed_fields = None;
    if let Some(a) = p.metadata.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

fn obj_name(o: &ObjectRef<PaymentPipeline>) -> String {
    format!("{}/{}", o.namespace.as_deref().unwrap_or_default(), o.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    #[test]
    fn cached_pipelines_lose_managed_fields_and_kubectls_copy_only() {
        let mut p = crate::reconcile::validate::tests::sample();
        p.metadata.finalizers = Some(vec![FINALIZER.into()]);
        p.metadata.annotations = Some(
            [(LAST_APPLIED, "{}"), ("team", "payments")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
        );
        p.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        prune_pipeline(&mut p);
        assert!(p.metadata.managed_fields.is_none());
        let a = p.metadata.annotations.as_ref().expect("annotations");
        assert!(!a.contains_key(LAST_APPLIED));
        assert_eq!(a.get("team").map(String::as_str), Some("payments"));
        assert_eq!(p.finalizers(), [FINALIZER.to_string()]);
    }
}
