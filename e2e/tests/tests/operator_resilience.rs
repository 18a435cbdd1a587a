//! The operator under adverse conditions, as local processes against the
//! local control plane and the real local Kafka: an unreachable Kafka
//! (Degraded, backoff, recovery, other pipelines unaffected), two operators
//! sharing one Lease (one leads, the standby takes over after a `kill -9`),
//! `spec.paused` (changes held back until unpaused), the hand-over of the
//! API's `spec.replicas` from the operator to an HPA (never reset to 1),
//! deletion (children and topics removed, once per pipeline, also when the
//! delete orphans the children), and the children that depend on the
//! spec: PodDisruptionBudgets only for workloads of two or more pods, and
//! headless metrics Services (one made with a cluster IP is replaced).
//!
//! Each test has its own namespace, Lease and topic prefix; run them with
//! `--test-threads=1` on a small machine (each starts its own operator).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use paystream_e2e::pipeline::{install_crd, resource, ssa};
use paystream_e2e::{
    Cluster, LocalProcess, TestNamespace, build_binaries, free_port, http_get, http_status,
    kafka_partitions, metric_sum, poll_until, repo_root, unique_name, wait_for,
};
use serde_json::{Value, json};

const OPERATOR_MANAGER: &str = "paystream-operator";

/// One test's world: its namespace, its operator binary, its clients.
struct World {
    cluster: Cluster,
    ns: TestNamespace,
    bin: std::path::PathBuf,
    pipelines: Api<DynamicObject>,
    deployments: Api<Deployment>,
}

impl World {
    async fn new(prefix: &str) -> Result<Self> {
        let cluster = Cluster::connect().await?;
        install_crd(&cluster).await?;
        let bin = build_binaries(&["paystream-operator"])?;
        let ns = TestNamespace::create(&cluster, prefix).await?;
        let client = cluster.client();
        let pipelines =
            Api::<DynamicObject>::namespaced_with(client.clone(), ns.name(), &resource());
        let deployments = Api::<Deployment>::namespaced(client, ns.name());
        let w = Self {
            cluster,
            ns,
            bin,
            pipelines,
            deployments,
        };
        w.create_example_secrets().await?;
        Ok(w)
    }

    /// The Secrets of `examples/paymentpipeline.yaml`.
    async fn create_example_secrets(&self) -> Result<()> {
        let secrets = Api::<Secret>::namespaced(self.cluster.client(), self.ns.name());
        for d in example_docs()? {
            if d["kind"] == "Secret" {
                let s: Secret = serde_json::from_value(d)?;
                secrets.create(&PostParams::default(), &s).await?;
            }
        }
        Ok(())
    }

    /// Starts an operator watching this namespace; returns it and its ops port.
    fn operator(&self, label: &str, extra: &[&str]) -> Result<(LocalProcess, u16)> {
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let mut args = vec![
            "--namespace",
            self.ns.name(),
            "--lease-namespace",
            self.ns.name(),
            "--status-interval-secs",
            "1",
            "--ops-addr",
            &addr,
        ];
        args.extend_from_slice(extra);
        let process = LocalProcess::start(
            &format!("operator-{}-{label}", self.ns.name()),
            &self.bin.join("paystream-operator"),
            &args,
            &[
                (
                    "KUBECONFIG",
                    std::env::var("KUBECONFIG").unwrap_or_default(),
                ),
                ("PAYSTREAM_LOG", "info,paystream_operator=debug".into()),
            ],
        )?;
        Ok((process, port))
    }

    /// Applies the example pipeline as `name`, with its own topic prefix,
    /// after `edit` changed its spec.
    async fn apply_pipeline(&self, name: &str, edit: impl FnOnce(&mut Value)) -> Result<()> {
        let mut p = example_docs()?
            .into_iter()
            .find(|d| d["kind"] == "PaymentPipeline")
            .context("no pipeline in the example")?;
        p["metadata"] = json!({ "name": name });
        p["spec"]["kafka"]["topicPrefix"] = json!(unique_name("e2e-res"));
        edit(&mut p["spec"]);
        self.pipelines
            .patch(name, &ssa(), &Patch::Apply(&p))
            .await
            .with_context(|| format!("applying pipeline {name}"))?;
        Ok(())
    }

    /// Merge-patches the spec of `name`; returns the new generation.
    async fn patch_spec(&self, name: &str, spec: Value) -> Result<i64> {
        let obj = self
            .pipelines
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": spec })),
            )
            .await?;
        obj.metadata.generation.context("no generation")
    }

    async fn wait_condition(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&DynamicObject) -> bool + Send + 'static,
    ) -> Result<DynamicObject> {
        wait_for(
            &self.pipelines,
            name,
            what,
            timeout,
            move |o: Option<&DynamicObject>| o.is_some_and(&ok),
        )
        .await
    }

    async fn replicas(&self, deployment: &str) -> Result<Option<i32>> {
        Ok(self
            .deployments
            .get(deployment)
            .await?
            .spec
            .and_then(|s| s.replicas))
    }
}

fn example_docs() -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(repo_root().join("examples/paymentpipeline.yaml"))?;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc)?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

fn condition<'a>(obj: &'a DynamicObject, type_: &str) -> Option<&'a Value> {
    obj.data.get("status")?["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn condition_is(obj: &DynamicObject, type_: &str, status: &str) -> bool {
    condition(obj, type_).is_some_and(|c| c["status"] == status)
}

fn phase(obj: &DynamicObject) -> Option<&str> {
    obj.data.get("status")?["phase"].as_str()
}

fn observed_generation(obj: &DynamicObject) -> Option<i64> {
    obj.data.get("status")?["observedGeneration"].as_i64()
}

async fn metric(port: u16, name: &str) -> Result<f64> {
    Ok(metric_sum(&http_get(port, "/metrics").await?, name, |_| {
        true
    }))
}

/// Whether `manager`'s managedFields entry of `d` owns `spec.replicas`.
fn owns_replicas(d: &Deployment, manager: &str) -> bool {
    d.metadata.managed_fields.iter().flatten().any(|f| {
        f.manager.as_deref() == Some(manager)
            && f.fields_v1
                .as_ref()
                .is_some_and(|v| v.0["f:spec"].get("f:replicas").is_some())
    })
}

fn fixed_consumer(spec: &mut Value, replicas: i32) {
    spec["consumer"] = json!({ "replicas": replicas });
}

/// Fixed API replicas, keeping the API's Secret references.
fn fixed_api(spec: &mut Value, replicas: i32) {
    if let Some(api) = spec["api"].as_object_mut() {
        api.remove("autoscaling");
        api.insert("replicas".into(), json!(replicas));
    }
}

#[tokio::test]
async fn kafka_unreachable_degrades_backs_off_and_recovers() -> Result<()> {
    let w = World::new("e2e-opkafka").await?;
    let (mut operator, port) = w.operator("a", &["--kafka-timeout-secs", "1"])?;
    // Fixed replicas everywhere: no HPA whose status updates would trigger
    // reconciles during the backoff window.
    w.apply_pipeline("bad", |s| {
        s["kafka"]["bootstrapServers"] = json!("127.0.0.1:1");
        fixed_consumer(s, 1);
        fixed_api(s, 1);
    })
    .await?;
    let degraded = w
        .wait_condition(
            "bad",
            "Degraded KafkaUnreachable",
            Duration::from_secs(90),
            |o| {
                condition(o, "Degraded")
                    .is_some_and(|c| c["status"] == "True" && c["reason"] == "KafkaUnreachable")
            },
        )
        .await?;
    let message = condition(&degraded, "Degraded")
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_string();
    println!("Degraded: {message}");
    ensure!(
        message.contains("127.0.0.1:1") && message.contains("kafka.bootstrapServers"),
        "the message does not say what to fix: {message}"
    );
    ensure!(
        phase(&degraded) == Some("Degraded"),
        "phase {:?}",
        phase(&degraded)
    );
    // The children are still applied, and the Deployments settle (their
    // status updates trigger reconciles too).
    for d in ["bad-producer", "bad-consumer", "bad-api"] {
        wait_for(
            &w.deployments,
            d,
            "Deployment Available",
            Duration::from_secs(90),
            |d: Option<&Deployment>| {
                d.and_then(|d| d.status.as_ref())
                    .is_some_and(|s| s.available_replicas == Some(1))
            },
        )
        .await?;
    }

    // Backoff: with a 1 s status interval and a 1 s Kafka timeout a hot
    // loop would reconcile ~10 times in 20 s; the exponential backoff
    // (10 s, 20 s, 40 s ...) allows a few. A rate needs a window: sleep.
    let reconciles = "paystream_operator_reconciles_total";
    let errors = "paystream_operator_reconcile_errors_total";
    let (r0, e0) = (metric(port, reconciles).await?, metric(port, errors).await?);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (r1, e1) = (metric(port, reconciles).await?, metric(port, errors).await?);
    println!(
        "unreachable Kafka, 20 s window: {} reconciles, {} reconcile errors",
        r1 - r0,
        e1 - e0
    );
    ensure!(r1 - r0 <= 4.0, "hot loop: {} reconciles in 20 s", r1 - r0);
    ensure!(e1 - e0 <= 1.0, "{} reconcile errors in 20 s", e1 - e0);
    ensure!(operator.running(), "the operator exited");

    // Another pipeline, with a reachable Kafka, still reconciles.
    w.apply_pipeline("good", |s| fixed_consumer(s, 1)).await?;
    w.wait_condition(
        "good",
        "good pipeline reconciled, not Degraded",
        Duration::from_secs(90),
        |o| observed_generation(o).is_some() && condition_is(o, "Degraded", "False"),
    )
    .await?;
    w.deployments
        .get("good-producer")
        .await
        .context("the good pipeline's producer")?;

    // The real bootstrap clears the condition.
    let bootstrap = paystream_testkit::Stack::from_env().kafka_bootstrap;
    let started = Instant::now();
    let generation = w
        .patch_spec("bad", json!({ "kafka": { "bootstrapServers": bootstrap } }))
        .await?;
    let fixed = w
        .wait_condition(
            "bad",
            "Degraded cleared after fixing the bootstrap",
            Duration::from_secs(60),
            move |o| {
                observed_generation(o) == Some(generation) && condition_is(o, "Degraded", "False")
            },
        )
        .await?;
    println!(
        "Degraded cleared {:?} after the fix; phase {:?}",
        started.elapsed(),
        phase(&fixed)
    );
    ensure!(operator.running(), "the operator exited");
    Ok(())
}

#[tokio::test]
async fn a_standby_operator_takes_over_after_kill_9() -> Result<()> {
    let w = World::new("e2e-oplease").await?;
    let lease_name = unique_name("paystream-operator");
    let lease_args = |id: &'static str| -> Vec<String> {
        vec![
            "--lease-name".into(),
            lease_name.clone(),
            "--lease-duration-secs".into(),
            "4".into(),
            "--identity".into(),
            id.into(),
        ]
    };
    let a_args = lease_args("op-a");
    let a_refs: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let (a, a_port) = w.operator("a", &a_refs)?;
    poll_until("op-a leads", Duration::from_secs(60), || async {
        Ok((metric(a_port, "paystream_operator_leader").await.ok() == Some(1.0)).then_some(()))
    })
    .await?;
    let b_args = lease_args("op-b");
    let b_refs: Vec<&str> = b_args.iter().map(String::as_str).collect();
    let (mut b, b_port) = w.operator("b", &b_refs)?;
    poll_until("op-b serves metrics", Duration::from_secs(60), || async {
        Ok(http_get(b_port, "/metrics").await.ok())
    })
    .await?;

    // Only the leader reconciles: the pipeline gets its children from op-a;
    // op-b is not ready, not leader and wrote nothing at all.
    w.apply_pipeline("first", |s| fixed_consumer(s, 1)).await?;
    wait_for(
        &w.deployments,
        "first-producer",
        "first-producer created",
        Duration::from_secs(90),
        |d: Option<&Deployment>| d.is_some(),
    )
    .await?;
    // The reconcile that created it is counted when it ends.
    poll_until(
        "op-a counts its reconcile",
        Duration::from_secs(30),
        || async {
            Ok((metric(a_port, "paystream_operator_reconciles_total").await? >= 1.0).then_some(()))
        },
    )
    .await?;
    ensure!(
        http_status(a_port, "/readyz").await? == 200,
        "op-a not ready"
    );
    let b_body = http_get(b_port, "/metrics").await?;
    let b_leader = metric_sum(&b_body, "paystream_operator_leader", |_| true);
    let b_reconciles = metric_sum(&b_body, "paystream_operator_reconciles_total", |_| true);
    let b_writes = metric_sum(&b_body, "paystream_operator_api_writes_total", |_| true);
    println!("standby: leader={b_leader} reconciles={b_reconciles} writes={b_writes}");
    ensure!(
        b_leader == 0.0 && b_reconciles == 0.0 && b_writes == 0.0,
        "the standby acted: leader={b_leader} reconciles={b_reconciles} writes={b_writes}"
    );
    ensure!(
        http_status(b_port, "/readyz").await? != 200,
        "the standby reports ready"
    );
    let leases = Api::<Lease>::namespaced(w.cluster.client(), w.ns.name());
    let holder = |l: &Lease| l.spec.as_ref().and_then(|s| s.holder_identity.clone());
    ensure!(holder(&leases.get(&lease_name).await?).as_deref() == Some("op-a"));

    // kill -9 the leader (Child::kill sends SIGKILL); op-b takes over
    // within the lease duration plus one retry period.
    let killed = Instant::now();
    drop(a);
    poll_until("op-b leads", Duration::from_secs(30), || async {
        Ok((metric(b_port, "paystream_operator_leader").await.ok() == Some(1.0)).then_some(()))
    })
    .await?;
    let took = killed.elapsed();
    println!("op-b took over {took:?} after kill -9 of op-a (lease 4 s)");
    ensure!(
        took <= Duration::from_secs(10),
        "takeover took {took:?} with a 4 s lease"
    );
    ensure!(holder(&leases.get(&lease_name).await?).as_deref() == Some("op-b"));

    // The new leader reconciles a change: a new pipeline gets its children.
    w.apply_pipeline("second", |s| fixed_consumer(s, 1)).await?;
    for d in ["second-producer", "second-consumer", "second-api"] {
        wait_for(
            &w.deployments,
            d,
            "created by the new leader",
            Duration::from_secs(90),
            |d: Option<&Deployment>| d.is_some(),
        )
        .await?;
    }
    ensure!(b.running(), "op-b exited");
    Ok(())
}

#[tokio::test]
async fn paused_holds_changes_back_until_unpaused() -> Result<()> {
    let w = World::new("e2e-oppause").await?;
    let (_operator, _port) = w.operator("a", &[])?;
    w.apply_pipeline("p", |s| fixed_consumer(s, 1)).await?;
    wait_for(
        &w.deployments,
        "p-consumer",
        "consumer with 1 replica",
        Duration::from_secs(90),
        |d: Option<&Deployment>| d.and_then(|d| d.spec.as_ref()?.replicas) == Some(1),
    )
    .await?;

    let generation = w.patch_spec("p", json!({ "paused": true })).await?;
    let paused = w
        .wait_condition("p", "Paused", Duration::from_secs(60), move |o| {
            observed_generation(o) == Some(generation)
                && condition_is(o, "Paused", "True")
                && phase(o) == Some("Paused")
        })
        .await?;
    println!("paused: phase {:?}", phase(&paused));

    // A change while paused is observed (observedGeneration) but not applied.
    let generation = w
        .patch_spec("p", json!({ "consumer": { "replicas": 2 } }))
        .await?;
    w.wait_condition(
        "p",
        "change observed while paused",
        Duration::from_secs(60),
        move |o| observed_generation(o) == Some(generation) && condition_is(o, "Paused", "True"),
    )
    .await?;
    ensure!(
        w.replicas("p-consumer").await? == Some(1),
        "a paused pipeline's change was applied"
    );

    // Unpaused, the change is applied.
    let generation = w.patch_spec("p", json!({ "paused": false })).await?;
    wait_for(
        &w.deployments,
        "p-consumer",
        "consumer scaled to 2 after unpausing",
        Duration::from_secs(60),
        |d: Option<&Deployment>| d.and_then(|d| d.spec.as_ref()?.replicas) == Some(2),
    )
    .await?;
    w.wait_condition("p", "Paused cleared", Duration::from_secs(60), move |o| {
        observed_generation(o) == Some(generation)
            && condition_is(o, "Paused", "False")
            && phase(o) != Some("Paused")
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn api_replicas_are_handed_over_to_the_hpa_without_a_reset() -> Result<()> {
    let w = World::new("e2e-ophpa").await?;
    let (_operator, port) = w.operator("a", &[])?;
    w.apply_pipeline("h", |s| {
        fixed_consumer(s, 1);
        fixed_api(s, 3);
    })
    .await?;
    let fixed = wait_for(
        &w.deployments,
        "h-api",
        "API with 3 replicas owned by the operator",
        Duration::from_secs(90),
        |d: Option<&Deployment>| {
            d.is_some_and(|d| {
                d.spec.as_ref().and_then(|s| s.replicas) == Some(3)
                    && owns_replicas(d, OPERATOR_MANAGER)
            })
        },
    )
    .await?;
    ensure!(owns_replicas(&fixed, OPERATOR_MANAGER));

    // Record every spec.replicas the Deployment goes through from now on.
    let seen: Arc<Mutex<Vec<Option<i32>>>> = Arc::default();
    let recorder = {
        let seen = seen.clone();
        let deployments = w.deployments.clone();
        tokio::spawn(async move {
            let _ = wait_for(
                &deployments,
                "h-api",
                "recording replicas",
                Duration::from_secs(300),
                move |d: Option<&Deployment>| {
                    if let Ok(mut s) = seen.lock() {
                        s.push(d.and_then(|d| d.spec.as_ref()?.replicas));
                    }
                    false
                },
            )
            .await;
        })
    };

    w.patch_spec(
        "h",
        json!({ "api": { "replicas": null, "autoscaling": {
            "minReplicas": 2, "maxReplicas": 5, "targetCpuUtilization": 70
        } } }),
    )
    .await?;
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(w.cluster.client(), w.ns.name());
    wait_for(
        &hpas,
        "h-api",
        "the API's HPA",
        Duration::from_secs(60),
        |h: Option<&HorizontalPodAutoscaler>| h.is_some(),
    )
    .await?;
    let handed = wait_for(
        &w.deployments,
        "h-api",
        "spec.replicas no longer owned by the operator",
        Duration::from_secs(60),
        |d: Option<&Deployment>| d.is_some_and(|d| !owns_replicas(d, OPERATOR_MANAGER)),
    )
    .await?;
    // A few more reconciles must not take the field back or reset it.
    let reconciles = "paystream_operator_reconciles_total";
    let start = metric(port, reconciles).await?;
    poll_until("5 more reconciles", Duration::from_secs(60), || async {
        Ok((metric(port, reconciles).await? >= start + 5.0).then_some(()))
    })
    .await?;
    let last = w.deployments.get("h-api").await?;
    recorder.abort();
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    println!("API replicas seen during the hand-over: {seen:?}");
    ensure!(!seen.is_empty(), "nothing recorded");
    ensure!(
        seen.iter().all(|r| *r == Some(3)),
        "replicas changed during the hand-over: {seen:?}"
    );
    ensure!(
        last.spec.as_ref().and_then(|s| s.replicas) == Some(3),
        "replicas after the hand-over: {:?}",
        last.spec.map(|s| s.replicas)
    );
    ensure!(
        !owns_replicas(&last, OPERATOR_MANAGER),
        "the operator took spec.replicas back"
    );
    ensure!(!owns_replicas(&handed, OPERATOR_MANAGER));
    Ok(())
}

/// The children of pipeline `name` that exist and are not being deleted,
/// as `Kind/name`.
async fn live_children(w: &World, name: &str) -> Result<Vec<String>> {
    use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use kube::api::ListParams;
    let client = w.cluster.client();
    let ns = w.ns.name();
    let lp = ListParams::default().labels(&format!("paystream.io/pipeline={name}"));
    let mut out = Vec::new();
    macro_rules! live {
        ($kind:ty, $label:expr) => {
            for o in Api::<$kind>::namespaced(client.clone(), ns)
                .list_metadata(&lp)
                .await?
                .items
            {
                if o.metadata.deletion_timestamp.is_none() {
                    out.push(format!(
                        "{}/{}",
                        $label,
                        o.metadata.name.unwrap_or_default()
                    ));
                }
            }
        };
    }
    live!(Deployment, "Deployment");
    live!(Service, "Service");
    live!(ConfigMap, "ConfigMap");
    live!(ServiceAccount, "ServiceAccount");
    live!(PodDisruptionBudget, "PodDisruptionBudget");
    live!(HorizontalPodAutoscaler, "HorizontalPodAutoscaler");
    Ok(out)
}

#[tokio::test]
async fn deletion_cleans_up_once_also_when_orphaning() -> Result<()> {
    use kube::api::{DeleteParams, PropagationPolicy};
    let w = World::new("e2e-opdel").await?;
    let (mut operator, port) = w.operator("a", &[])?;
    let bootstrap = paystream_testkit::Stack::from_env().kafka_bootstrap;
    // Two pipelines whose topics go with them: one deleted as kubectl does
    // (background), one with propagationPolicy Orphan, which strips the
    // children's owner references before the garbage collector could take
    // them: only the operator's finalizer removes those.
    let mut topics = Vec::new();
    for name in ["bg", "orphan"] {
        let prefix = unique_name("e2e-del");
        w.apply_pipeline(name, |s| {
            s["kafka"]["topicPrefix"] = json!(prefix);
            s["kafka"]["deleteTopicsOnDelete"] = json!(true);
        })
        .await?;
        topics.push((name, format!("{prefix}.checkpoints")));
    }
    for name in ["bg", "orphan"] {
        poll_until(
            &format!("{name}'s children and topics"),
            Duration::from_secs(90),
            || async {
                let children = live_children(&w, name).await?;
                let deployments = children
                    .iter()
                    .filter(|c| c.starts_with("Deployment/"))
                    .count();
                Ok((deployments == 3).then_some(()))
            },
        )
        .await?;
    }
    for (_, topic) in &topics {
        let b = bootstrap.clone();
        let t = topic.clone();
        poll_until(&format!("topic {topic}"), Duration::from_secs(60), || {
            let (b, t) = (b.clone(), t.clone());
            async move { Ok(kafka_partitions(&b, &t)?.map(|_| ())) }
        })
        .await?;
    }
    ensure!(
        metric(port, "paystream_operator_cleanups_total").await? == 0.0,
        "cleanups before any deletion"
    );

    w.pipelines
        .delete("bg", &DeleteParams::background())
        .await?;
    w.pipelines
        .delete(
            "orphan",
            &DeleteParams {
                propagation_policy: Some(PropagationPolicy::Orphan),
                ..Default::default()
            },
        )
        .await?;
    for name in ["bg", "orphan"] {
        poll_until(
            &format!("pipeline {name} gone"),
            Duration::from_secs(60),
            || async { Ok(w.pipelines.get_opt(name).await?.is_none().then_some(())) },
        )
        .await?;
        // The finalizer came off only once every child was deleted.
        let left = live_children(&w, name).await?;
        ensure!(left.is_empty(), "{name}: children left: {left:?}");
    }
    for (name, topic) in &topics {
        let b = bootstrap.clone();
        let t = topic.clone();
        poll_until(
            &format!("{name}'s topic {topic} deleted"),
            Duration::from_secs(60),
            || {
                let (b, t) = (b.clone(), t.clone());
                async move { Ok(kafka_partitions(&b, &t)?.is_none().then_some(())) }
            },
        )
        .await?;
    }
    // The children's deletions queued reconciles of the deleted pipelines;
    // none of them cleaned up again. Wait until the queue is quiet (no
    // reconcile for 3 s) before counting.
    let reconciles = "paystream_operator_reconciles_total";
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = metric(port, reconciles).await?;
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(3) {
        ensure!(Instant::now() < deadline, "the reconciles did not stop");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = metric(port, reconciles).await?;
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
    }
    let cleanups = metric(port, "paystream_operator_cleanups_total").await?;
    ensure!(
        cleanups == 2.0,
        "{cleanups} cleanups for 2 deleted pipelines"
    );
    ensure!(operator.running(), "the operator exited");
    Ok(())
}

/// The Service `name` as it is now.
async fn service(w: &World, name: &str) -> Result<Option<k8s_openapi::api::core::v1::Service>> {
    let api =
        Api::<k8s_openapi::api::core::v1::Service>::namespaced(w.cluster.client(), w.ns.name());
    Ok(api.get_opt(name).await?)
}

fn cluster_ip(s: &k8s_openapi::api::core::v1::Service) -> Option<&str> {
    s.spec.as_ref()?.cluster_ip.as_deref()
}

#[tokio::test]
async fn budgets_follow_the_replicas_and_metrics_services_become_headless() -> Result<()> {
    use k8s_openapi::api::core::v1::Service;
    let w = World::new("e2e-opsvc").await?;
    // A producer metrics Service with a cluster IP, as an earlier operator
    // version made it: the cluster IP cannot be taken away by an apply.
    let services = Api::<Service>::namespaced(w.cluster.client(), w.ns.name());
    let old: Service = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": "s-producer" },
        "spec": { "selector": { "app": "s-producer" }, "ports": [{ "name": "metrics", "port": 9090 }] }
    }))?;
    let old = services.create(&PostParams::default(), &old).await?;
    let old_uid = old.metadata.uid.clone().context("no uid")?;
    ensure!(
        cluster_ip(&old).is_some_and(|ip| ip != "None"),
        "the old Service got no cluster IP: {:?}",
        cluster_ip(&old)
    );

    let (_operator, _port) = w.operator("a", &[])?;
    w.apply_pipeline("s", |s| {
        fixed_consumer(s, 1);
        fixed_api(s, 2);
    })
    .await?;
    poll_until(
        "headless metrics Services, the API's with a cluster IP",
        Duration::from_secs(90),
        || async {
            let producer = service(&w, "s-producer").await?;
            let consumer = service(&w, "s-consumer").await?;
            let api = service(&w, "s-api").await?;
            Ok(match (producer, consumer, api) {
                (Some(p), Some(c), Some(a))
                    if p.metadata.uid.as_deref() != Some(old_uid.as_str())
                        && cluster_ip(&p) == Some("None")
                        && cluster_ip(&c) == Some("None")
                        && cluster_ip(&a).is_some_and(|ip| ip != "None") =>
                {
                    Some(())
                }
                _ => None,
            })
        },
    )
    .await?;

    // One consumer pod: no budget; two API pods: a budget.
    let budgets = || async {
        let mut b: Vec<String> = live_children(&w, "s")
            .await?
            .into_iter()
            .filter(|c| c.starts_with("PodDisruptionBudget/"))
            .collect();
        b.sort();
        anyhow::Ok(b)
    };
    poll_until(
        "the API's budget alone",
        Duration::from_secs(60),
        || async { Ok((budgets().await? == ["PodDisruptionBudget/s-api"]).then_some(())) },
    )
    .await?;
    // The other way round: the API down to one pod loses its budget, the
    // consumer up to two gets one.
    w.patch_spec(
        "s",
        json!({ "consumer": { "replicas": 2 }, "api": { "replicas": 1 } }),
    )
    .await?;
    poll_until(
        "the consumer's budget alone",
        Duration::from_secs(60),
        || async { Ok((budgets().await? == ["PodDisruptionBudget/s-consumer"]).then_some(())) },
    )
    .await?;
    w.wait_condition("s", "Ready", Duration::from_secs(90), |o| {
        condition(o, "Ready").is_some_and(|c| c["status"] == "True")
    })
    .await?;
    Ok(())
}
