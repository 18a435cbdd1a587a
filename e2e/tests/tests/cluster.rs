//! The cluster itself, before any paystream code runs on it: the apiserver
//! reports the pinned version, the fake nodes are Ready, a Deployment becomes
//! Available, the apiserver enforces a CRD's schema, CEL rules and status
//! subresource, service-account tokens authenticate and RBAC authorizes them,
//! and an HPA reads emulated CPU usage through metrics-server and scales a
//! Deployment when that usage changes. Runs against whatever `KUBECONFIG`
//! points at: `make cluster-up` (local control plane) or `make kind-up`.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenRequest};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::runtime::conditions;
use paystream_e2e::{
    Cluster, ClusterScoped, KWOK_NODE_LABEL, TestNamespace, kwok_pod_placement, pinned_major_minor,
    poll_until, unique_name, wait_for,
};
use serde_json::{Value, json};

const MANAGER: &str = "paystream-e2e";
/// The KWOK annotation that sets a fake pod's CPU usage.
const USAGE_CPU: &str = "kwok.x-k8s.io/usage-cpu";

fn ssa() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

fn deployment(name: &str, replicas: i32, annotations: Value) -> Result<Deployment> {
    let placement = kwok_pod_placement();
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name }, "annotations": annotations },
                "spec": {
                    "nodeSelector": placement["nodeSelector"],
                    "tolerations": placement["tolerations"],
                    "containers": [{
                        "name": "main",
                        "image": "registry.k8s.io/pause:3.10",
                        "resources": { "requests": { "cpu": "100m", "memory": "16Mi" } }
                    }]
                }
            }
        }
    }))?)
}

fn condition_true(conditions: Option<&Vec<impl HasCondition>>, kind: &str) -> bool {
    conditions
        .map(|all| {
            all.iter()
                .any(|c| c.type_() == kind && c.status() == "True")
        })
        .unwrap_or(false)
}

/// The two fields every Kubernetes condition type has.
trait HasCondition {
    fn type_(&self) -> &str;
    fn status(&self) -> &str;
}

impl HasCondition for k8s_openapi::api::apps::v1::DeploymentCondition {
    fn type_(&self) -> &str {
        &self.type_
    }
    fn status(&self) -> &str {
        &self.status
    }
}

impl HasCondition for k8s_openapi::api::core::v1::NodeCondition {
    fn type_(&self) -> &str {
        &self.type_
    }
    fn status(&self) -> &str {
        &self.status
    }
}

/// Deployment fully rolled out: the latest generation observed, every
/// replica updated and available, and the Available condition True.
fn deployment_available(replicas: i32) -> impl Fn(Option<&Deployment>) -> bool {
    move |d: Option<&Deployment>| {
        let Some(d) = d else { return false };
        let Some(status) = d.status.as_ref() else {
            return false;
        };
        status.observed_generation >= d.metadata.generation
            && status.available_replicas == Some(replicas)
            && status.updated_replicas == Some(replicas)
            && condition_true(status.conditions.as_ref(), "Available")
    }
}

#[tokio::test]
async fn apiserver_reports_the_pinned_version() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let info = cluster.client().apiserver_version().await?;
    let (major, minor) = pinned_major_minor()?;
    println!("server version: {}", info.git_version);
    ensure!(
        info.major == major && info.minor.trim_end_matches('+') == minor,
        "server is {}.{} ({}), the suite is pinned to {major}.{minor}",
        info.major,
        info.minor,
        info.git_version
    );
    ensure!(
        info.git_version.starts_with(&format!("v{major}.{minor}.")),
        "unexpected gitVersion {}",
        info.git_version
    );
    Ok(())
}

#[tokio::test]
async fn fake_nodes_are_ready() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let nodes = Api::<Node>::all(cluster.client());
    let selector = format!("{}={}", KWOK_NODE_LABEL.0, KWOK_NODE_LABEL.1);
    let ready = poll_until("kwok nodes Ready", Duration::from_secs(60), || async {
        let list = nodes.list(&ListParams::default().labels(&selector)).await?;
        let all_ready = !list.items.is_empty()
            && list.items.iter().all(|n| {
                condition_true(
                    n.status.as_ref().and_then(|s| s.conditions.as_ref()),
                    "Ready",
                )
            });
        Ok(all_ready.then_some(list.items))
    })
    .await?;
    for node in &ready {
        println!(
            "node {} Ready",
            node.metadata.name.as_deref().unwrap_or("?")
        );
    }
    Ok(())
}

#[tokio::test]
async fn deployment_becomes_available() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let ns = TestNamespace::create(&cluster, "e2e-deploy").await?;
    let deployments = Api::<Deployment>::namespaced(cluster.client(), ns.name());
    let pods = Api::<Pod>::namespaced(cluster.client(), ns.name());

    let name = "web";
    deployments
        .patch(name, &ssa(), &Patch::Apply(deployment(name, 2, json!({}))?))
        .await
        .context("applying the Deployment")?;
    wait_for(
        &deployments,
        name,
        "Deployment Available with 2/2 replicas",
        Duration::from_secs(120),
        deployment_available(2),
    )
    .await?;

    // The scheduler bound each pod to a fake node, whose kubelet (KWOK)
    // reported it Running with an IP; the ReplicaSet owns the pods.
    let list = pods
        .list(&ListParams::default().labels(&format!("app={name}")))
        .await?;
    ensure!(
        list.items.len() == 2,
        "expected 2 pods, found {}",
        list.items.len()
    );
    for pod in &list.items {
        let spec = pod.spec.as_ref().context("pod without spec")?;
        let status = pod.status.as_ref().context("pod without status")?;
        ensure!(spec.node_name.is_some(), "pod not scheduled: {pod:?}");
        ensure!(
            status.phase.as_deref() == Some("Running") && status.pod_ip.is_some(),
            "pod not running: {status:?}"
        );
        let owner = pod
            .metadata
            .owner_references
            .as_ref()
            .and_then(|o| o.first())
            .context("pod without owner")?;
        ensure!(owner.kind == "ReplicaSet" && owner.controller == Some(true));
    }
    Ok(())
}

/// A CRD with a status subresource and CEL rules, under a group of its own so
/// runs never collide.
fn test_crd(group: &str) -> Result<CustomResourceDefinition> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": format!("ledgers.{group}") },
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": { "plural": "ledgers", "singular": "ledger", "kind": "Ledger" },
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "subresources": { "status": {} },
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["currency", "minReplicas", "maxReplicas"],
                            "x-kubernetes-validations": [{
                                "rule": "self.minReplicas <= self.maxReplicas",
                                "message": "minReplicas must not exceed maxReplicas"
                            }],
                            "properties": {
                                "currency": {
                                    "type": "string",
                                    "pattern": "^[A-Z]{3}$",
                                    "x-kubernetes-validations": [{
                                        "rule": "self == oldSelf",
                                        "message": "currency is immutable"
                                    }]
                                },
                                "minReplicas": { "type": "integer", "minimum": 0 },
                                "maxReplicas": { "type": "integer", "minimum": 1 }
                            }
                        },
                        "status": {
                            "type": "object",
                            "properties": {
                                "phase": { "type": "string" },
                                "observedGeneration": { "type": "integer" }
                            }
                        }
                    }
                }}
            }]
        }
    }))?)
}

/// The apiserver's rejection of a write, as `(HTTP code, message)`.
fn rejection<T: std::fmt::Debug>(result: kube::Result<T>) -> Result<(u16, String)> {
    match result {
        Ok(accepted) => bail!("the apiserver accepted an invalid object: {accepted:?}"),
        Err(kube::Error::Api(status)) => Ok((status.code, status.message)),
        Err(other) => Err(other).context("unexpected client error"),
    }
}

#[tokio::test]
async fn crd_schema_cel_rules_and_status_subresource_are_enforced() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let group = format!("{}.e2e.paystream.dev", unique_name("t"));
    let crd = test_crd(&group)?;
    let crd_name = crd.metadata.name.clone().context("crd name")?;

    let crds = Api::<CustomResourceDefinition>::all(cluster.client());
    let _crd_guard = ClusterScoped::<CustomResourceDefinition>::new(&cluster, &crd_name);
    crds.patch(&crd_name, &ssa(), &Patch::Apply(&crd))
        .await
        .context("the apiserver refused the CRD")?;
    wait_for(
        &crds,
        &crd_name,
        "CRD Established",
        Duration::from_secs(60),
        conditions::is_crd_established(),
    )
    .await?;

    let ns = TestNamespace::create(&cluster, "e2e-crd").await?;
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(&group, "v1", "Ledger"),
        "ledgers",
    );
    let ledgers = Api::<DynamicObject>::namespaced_with(cluster.client(), ns.name(), &resource);
    let ledger = |name: &str, currency: &str, min: i64, max: i64| {
        json!({
            "apiVersion": format!("{group}/v1"),
            "kind": "Ledger",
            "metadata": { "name": name },
            "spec": { "currency": currency, "minReplicas": min, "maxReplicas": max },
            // Ignored on the main resource: status has its own subresource.
            "status": { "phase": "Forged" }
        })
    };

    // A valid object is accepted (server-side apply), without its status.
    let created = ledgers
        .patch("eur", &ssa(), &Patch::Apply(ledger("eur", "EUR", 1, 3)))
        .await
        .context("a valid Ledger was rejected")?;
    ensure!(
        created
            .data
            .get("status")
            .is_none_or(|s| s.get("phase").is_none()),
        "status was written through the main resource: {:?}",
        created.data
    );

    // The CEL rule on spec rejects min > max, with the rule's message.
    let (code, message) = rejection(
        ledgers
            .create(
                &PostParams::default(),
                &serde_json::from_value(ledger("bad", "USD", 5, 2))?,
            )
            .await,
    )?;
    ensure!(code == 422, "expected 422 Invalid, got {code}: {message}");
    ensure!(
        message.contains("minReplicas must not exceed maxReplicas"),
        "unexpected message: {message}"
    );

    // The transition rule (oldSelf) rejects changing the currency.
    let (code, message) = rejection(
        ledgers
            .patch("eur", &ssa(), &Patch::Apply(ledger("eur", "GBP", 1, 3)))
            .await,
    )?;
    ensure!(code == 422, "expected 422 Invalid, got {code}: {message}");
    ensure!(
        message.contains("currency is immutable"),
        "unexpected message: {message}"
    );

    // The OpenAPI schema still applies next to CEL: pattern violated.
    let (code, message) = rejection(
        ledgers
            .create(
                &PostParams::default(),
                &serde_json::from_value(ledger("lower", "eur", 1, 1))?,
            )
            .await,
    )?;
    ensure!(code == 422, "expected 422 Invalid, got {code}: {message}");

    // The status subresource takes status, and only status.
    let status_patch = json!({
        "apiVersion": format!("{group}/v1"),
        "kind": "Ledger",
        "status": { "phase": "Ready", "observedGeneration": 1 }
    });
    let updated = ledgers
        .patch_status("eur", &ssa(), &Patch::Apply(status_patch))
        .await
        .context("status subresource update")?;
    ensure!(
        updated.data["status"]["phase"] == "Ready",
        "status not stored: {:?}",
        updated.data
    );
    ensure!(
        updated.data["spec"]["maxReplicas"] == 3,
        "spec changed through /status"
    );
    Ok(())
}

#[tokio::test]
async fn service_account_tokens_authenticate_and_rbac_authorizes() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let ns = TestNamespace::create(&cluster, "e2e-sa").await?;
    let accounts = Api::<ServiceAccount>::namespaced(cluster.client(), ns.name());
    let account: ServiceAccount =
        serde_json::from_value(json!({ "metadata": { "name": "reader" } }))?;
    accounts.create(&PostParams::default(), &account).await?;

    // A bound token from the TokenRequest API, signed by the apiserver.
    let request: TokenRequest = serde_json::from_value(json!({
        "spec": { "audiences": [], "expirationSeconds": 600 }
    }))?;
    let token = accounts
        .create_token_request("reader", &PostParams::default(), &request)
        .await
        .context("TokenRequest")?
        .status
        .context("TokenRequest without status")?
        .token;
    let as_reader = cluster.client_with_token(&token)?;

    // The apiserver authenticates the token as the service account.
    let review: SelfSubjectReview = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"
    }))?;
    let review = Api::<SelfSubjectReview>::all(as_reader.clone())
        .create(&PostParams::default(), &review)
        .await
        .context("SelfSubjectReview with the token")?;
    let username = review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .unwrap_or_default();
    let expected = format!("system:serviceaccount:{}:reader", ns.name());
    ensure!(
        username == expected,
        "token authenticated as {username:?}, not {expected:?}"
    );

    // RBAC: forbidden until a RoleBinding grants the built-in view role.
    let pods = Api::<Pod>::namespaced(as_reader, ns.name());
    match pods.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => bail!("expected 403 Forbidden before the RoleBinding, got {other:?}"),
    }
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "reader-view" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view" },
        "subjects": [{ "kind": "ServiceAccount", "name": "reader", "namespace": ns.name() }]
    }))?;
    Api::<RoleBinding>::namespaced(cluster.client(), ns.name())
        .create(&PostParams::default(), &binding)
        .await?;
    poll_until(
        "pods listable after the RoleBinding",
        Duration::from_secs(30),
        || async {
            match pods.list(&ListParams::default()).await {
                Ok(_) => Ok(Some(())),
                Err(kube::Error::Api(status)) if status.code == 403 => Ok(None),
                Err(err) => Err(err.into()),
            }
        },
    )
    .await
}

/// The HPA's observed CPU utilization, once it has one.
fn hpa_cpu_utilization(hpa: &HorizontalPodAutoscaler) -> Option<i32> {
    hpa.status
        .as_ref()?
        .current_metrics
        .as_ref()?
        .iter()
        .find_map(|m| m.resource.as_ref()?.current.average_utilization)
}

#[tokio::test]
async fn hpa_scales_a_deployment_on_emulated_cpu_usage() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let ns = TestNamespace::create(&cluster, "e2e-hpa").await?;
    let deployments = Api::<Deployment>::namespaced(cluster.client(), ns.name());
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(cluster.client(), ns.name());
    let pods = Api::<Pod>::namespaced(cluster.client(), ns.name());

    // One replica using 20m of its 100m request: 20% against a 50% target.
    let name = "worker";
    deployments
        .patch(
            name,
            &ssa(),
            &Patch::Apply(deployment(name, 1, json!({ USAGE_CPU: "20m" }))?),
        )
        .await?;
    wait_for(
        &deployments,
        name,
        "Deployment Available with 1 replica",
        Duration::from_secs(120),
        deployment_available(1),
    )
    .await?;

    let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": { "name": name },
        "spec": {
            "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": name },
            "minReplicas": 1,
            "maxReplicas": 3,
            "metrics": [{
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": { "type": "Utilization", "averageUtilization": 50 }
                }
            }]
        }
    }))?;
    hpas.patch(name, &ssa(), &Patch::Apply(&hpa)).await?;

    // metrics-server scrapes the emulated usage and the HPA reads it.
    let before = wait_for(
        &hpas,
        name,
        "HPA reporting the CPU utilization",
        Duration::from_secs(180),
        |h: Option<&HorizontalPodAutoscaler>| h.and_then(hpa_cpu_utilization).is_some(),
    )
    .await?;
    let utilization = hpa_cpu_utilization(&before).unwrap_or_default();
    println!("HPA sees {utilization}% CPU before the change");
    ensure!(
        (10..=40).contains(&utilization),
        "expected about 20% CPU, the HPA reports {utilization}%"
    );
    let replicas = before.status.as_ref().map(|s| s.desired_replicas);
    ensure!(
        replicas == Some(1),
        "HPA wants {replicas:?} replicas at low load"
    );

    // Raise the emulated usage of the running pod to 200m (200% of its
    // request); KWOK's metrics follow at the next scrape.
    let running = pods
        .list(&ListParams::default().labels(&format!("app={name}")))
        .await?;
    ensure!(!running.items.is_empty(), "no pods of {name}");
    let hot = json!({ "metadata": { "annotations": { USAGE_CPU: "200m" } } });
    for pod in &running.items {
        let pod_name = pod.metadata.name.as_deref().context("pod without name")?;
        pods.patch(pod_name, &PatchParams::default(), &Patch::Merge(&hot))
            .await?;
    }

    // The HPA sees the load and scales the Deployment to its maximum.
    let after = wait_for(
        &hpas,
        name,
        "HPA scaling up to 3 replicas",
        Duration::from_secs(240),
        |h: Option<&HorizontalPodAutoscaler>| {
            h.and_then(|h| h.status.as_ref())
                .is_some_and(|s| s.desired_replicas == 3)
        },
    )
    .await?;
    println!(
        "HPA sees {}% CPU after the change and wants 3 replicas",
        hpa_cpu_utilization(&after).unwrap_or_default()
    );
    wait_for(
        &deployments,
        name,
        "Deployment scaled to 3 available replicas",
        Duration::from_secs(120),
        deployment_available(3),
    )
    .await?;
    Ok(())
}
