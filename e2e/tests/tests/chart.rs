//! The Helm chart `charts/paystream-operator`: `helm lint` is clean, its CRD
//! is the generated one and its RBAC the operator's, the rendered manifests
//! pass a server-side dry run, and `helm install` brings the operator up (on
//! KWOK nodes the pods are Running without pulling an image: the test checks
//! the objects and the Deployment's availability). Needs Helm
//! (`charts/install-helm.sh`) and a cluster in `KUBECONFIG`; the same tests
//! run on kind (`make kind-e2e`).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::conditions;
use paystream_e2e::tools::{CHART_DIR, HelmRelease, helm, kubectl, run, run_ok};
use paystream_e2e::{
    Cluster, TestNamespace, kwok_pod_placement, pinned_kube_version, repo_root, unique_name,
    wait_for,
};
use serde_json::Value;

/// The YAML documents of a text, nulls dropped.
fn docs(text: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(doc)?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// A values file that puts the operator pods on the fake (KWOK) nodes, with
/// two replicas (leader election on) and the sample pipeline.
fn kwok_values(dir: &std::path::Path) -> Result<std::path::PathBuf> {
    let placement = kwok_pod_placement();
    let values = serde_json::json!({
        "replicaCount": 2,
        "nodeSelector": placement["nodeSelector"],
        "tolerations": placement["tolerations"],
        "samplePipeline": { "enabled": true, "placement": placement },
    });
    let path = dir.join(format!("{}.yaml", unique_name("chart-values")));
    std::fs::write(&path, serde_yaml::to_string(&values)?)?;
    Ok(path)
}

fn values_dir() -> Result<std::path::PathBuf> {
    let dir = repo_root().join("var/e2e");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[test]
fn helm_lint_is_clean() -> Result<()> {
    let values = kwok_values(&values_dir()?)?;
    let values = values.to_str().context("path")?;
    for extra in [&[][..], &["--values", values][..]] {
        let mut args = vec!["lint", "--strict", CHART_DIR];
        args.extend_from_slice(extra);
        let out = run(&helm(), &args, None)?;
        let all = format!("{}{}", out.stdout, out.stderr);
        ensure!(out.success, "helm lint {extra:?} failed:\n{all}");
        ensure!(
            all.contains("0 chart(s) failed")
                && !all.contains("[WARNING]")
                && !all.contains("[ERROR]"),
            "helm lint {extra:?} is not clean:\n{all}"
        );
    }
    // The schema and the template both refuse 2 replicas without election.
    let out = run(
        &helm(),
        &[
            "template",
            "x",
            CHART_DIR,
            "--kube-version",
            pinned_kube_version()?,
            "--set",
            "replicaCount=2",
            "--set",
            "leaderElection.enabled=false",
        ],
        None,
    )?;
    ensure!(
        !out.success && out.stderr.contains("leaderElection"),
        "2 replicas without leader election: {out:?}"
    );
    Ok(())
}

#[test]
fn chart_crd_is_the_generated_one() -> Result<()> {
    let chart = std::fs::read_to_string(
        repo_root()
            .join(CHART_DIR)
            .join("crds/paymentpipeline.yaml"),
    )?;
    let generated = std::fs::read_to_string(repo_root().join("crds/paymentpipeline.yaml"))?;
    ensure!(
        chart == generated,
        "{CHART_DIR}/crds/paymentpipeline.yaml differs from crds/paymentpipeline.yaml: it must be the symlink ../../../crds/paymentpipeline.yaml"
    );
    // And Helm really packages it (it follows the symlink).
    let rendered = run_ok(
        &helm(),
        &[
            "template",
            "x",
            CHART_DIR,
            "--include-crds",
            "--kube-version",
            pinned_kube_version()?,
        ],
        None,
    )?;
    ensure!(
        docs(&rendered)?
            .iter()
            .any(|d| d["kind"] == "CustomResourceDefinition"
                && d["metadata"]["name"] == "paymentpipelines.paystream.io"),
        "helm template --include-crds has no PaymentPipeline CRD"
    );
    Ok(())
}

#[test]
fn chart_rbac_is_the_operators() -> Result<()> {
    let rendered = docs(&run_ok(
        &helm(),
        &[
            "template",
            "x",
            CHART_DIR,
            "--kube-version",
            pinned_kube_version()?,
        ],
        None,
    )?)?;
    let reference = docs(&std::fs::read_to_string(
        repo_root().join("operator/rbac.yaml"),
    )?)?;
    for kind in ["ClusterRole", "Role"] {
        let want = reference
            .iter()
            .find(|d| d["kind"] == kind)
            .with_context(|| format!("operator/rbac.yaml has no {kind}"))?;
        let got = rendered
            .iter()
            .find(|d| d["kind"] == kind)
            .with_context(|| format!("the chart renders no {kind}"))?;
        ensure!(
            got["rules"] == want["rules"],
            "the chart's {kind} rules differ from operator/rbac.yaml:\nchart: {}\nrbac.yaml: {}",
            got["rules"],
            want["rules"]
        );
    }
    Ok(())
}

#[tokio::test]
async fn rendered_chart_passes_a_server_side_dry_run() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let ns = TestNamespace::create(&cluster, "e2e-chartdry").await?;
    let values = kwok_values(&values_dir()?)?;
    let rendered = run_ok(
        &helm(),
        &[
            "template",
            "paystream",
            CHART_DIR,
            "--namespace",
            ns.name(),
            "--kube-version",
            pinned_kube_version()?,
            "--include-crds",
            "--values",
            values.to_str().context("path")?,
            // The sample pipeline needs the CRD to exist, which a dry run
            // does not create; the install test covers it.
            "--set",
            "samplePipeline.enabled=false",
        ],
        None,
    )?;
    ensure!(
        docs(&rendered)?.len() >= 8,
        "fewer objects than expected:\n{rendered}"
    );
    let out = run_ok(
        &kubectl(),
        &[
            "apply",
            "--dry-run=server",
            "--server-side",
            "--field-manager",
            "paystream-e2e",
            "--namespace",
            ns.name(),
            "-f",
            "-",
        ],
        Some(&rendered),
    )?;
    for kind in [
        "customresourcedefinition",
        "serviceaccount",
        "clusterrole",
        "clusterrolebinding",
        "role",
        "rolebinding",
        "service",
        "deployment",
    ] {
        ensure!(
            out.lines()
                .any(|l| l.starts_with(&format!("{kind}.")) || l.starts_with(&format!("{kind}/"))),
            "the dry run did not report a {kind}:\n{out}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn helm_install_brings_the_operator_up() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let ns = TestNamespace::create(&cluster, "e2e-chart").await?;
    let values = kwok_values(&values_dir()?)?;
    let release = unique_name("pso");
    let installed = HelmRelease::install(
        &release,
        ns.name(),
        &["--values", values.to_str().context("path")?],
    )?;
    let full = format!("{release}-paystream-operator");
    let client = cluster.client();

    let deployments = Api::<Deployment>::namespaced(client.clone(), ns.name());
    let deployment = wait_for(
        &deployments,
        &full,
        "operator Deployment Available with 2 ready replicas",
        Duration::from_secs(120),
        |d: Option<&Deployment>| {
            let available = d
                .and_then(|d| d.status.as_ref())
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c.type_ == "Available" && c.status == "True")
                });
            let ready = d
                .and_then(|d| d.status.as_ref())
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            available && ready == 2
        },
    )
    .await?;
    let pod = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .context("pod spec")?;
    ensure!(pod.service_account_name.as_deref() == Some(full.as_str()));
    let container = &pod.containers[0];
    ensure!(
        container.image.as_deref()
            == Some(&*format!(
                "ghcr.io/paystream/paystream-operator:{}",
                env!("CARGO_PKG_VERSION")
            )),
        "image {:?} does not follow the crate version",
        container.image
    );
    let sc = container
        .security_context
        .as_ref()
        .context("securityContext")?;
    ensure!(sc.read_only_root_filesystem == Some(true));
    ensure!(sc.allow_privilege_escalation == Some(false));
    let args = container.args.clone().unwrap_or_default();
    for want in [
        "--leader-election=true".to_string(),
        format!("--lease-namespace={}", ns.name()),
        format!("--lease-name={full}"),
    ] {
        ensure!(args.contains(&want), "missing {want} in {args:?}");
    }

    Api::<ServiceAccount>::namespaced(client.clone(), ns.name())
        .get(&full)
        .await
        .context("ServiceAccount")?;
    Api::<Service>::namespaced(client.clone(), ns.name())
        .get(&format!("{full}-metrics"))
        .await
        .context("metrics Service")?;
    let role = Api::<ClusterRole>::all(client.clone())
        .get(&full)
        .await
        .context("ClusterRole")?;
    ensure!(!role.rules.unwrap_or_default().is_empty());
    let binding = Api::<ClusterRoleBinding>::all(client.clone())
        .get(&full)
        .await
        .context("ClusterRoleBinding")?;
    ensure!(
        binding
            .subjects
            .unwrap_or_default()
            .iter()
            .any(|s| s.kind == "ServiceAccount"
                && s.name == full
                && s.namespace.as_deref() == Some(ns.name())),
        "the ClusterRoleBinding does not bind the operator's ServiceAccount"
    );
    Api::<Role>::namespaced(client.clone(), ns.name())
        .get(&format!("{full}-leader"))
        .await
        .context("leader Role")?;
    Api::<RoleBinding>::namespaced(client.clone(), ns.name())
        .get(&format!("{full}-leader"))
        .await
        .context("leader RoleBinding")?;
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    wait_for(
        &crds,
        "paymentpipelines.paystream.io",
        "CRD Established",
        Duration::from_secs(60),
        conditions::is_crd_established(),
    )
    .await?;
    let pipelines = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        ns.name(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("paystream.io", "v1alpha1", "PaymentPipeline"),
            "paymentpipelines",
        ),
    );
    pipelines
        .get("demo")
        .await
        .context("the sample PaymentPipeline")?;

    // Least privilege, as the operator's ServiceAccount sees it.
    let sa = format!("system:serviceaccount:{}:{full}", ns.name());
    for (verb, resource, allowed) in [
        ("patch", "paymentpipelines.paystream.io", true),
        ("create", "deployments.apps", true),
        ("get", "secrets", true),
        ("list", "secrets", false),
        ("delete", "paymentpipelines.paystream.io", false),
        ("create", "clusterroles.rbac.authorization.k8s.io", false),
        ("create", "pods", false),
    ] {
        let out = run(
            &kubectl(),
            &[
                "auth",
                "can-i",
                verb,
                resource,
                "--as",
                &sa,
                "-n",
                ns.name(),
            ],
            None,
        )?;
        let answer = out.stdout.trim() == "yes";
        ensure!(
            answer == allowed,
            "{sa} can-i {verb} {resource}: {} (want {allowed}) {}",
            out.stdout.trim(),
            out.stderr
        );
    }
    let leases = run(
        &kubectl(),
        &[
            "auth",
            "can-i",
            "update",
            "leases.coordination.k8s.io",
            "--as",
            &sa,
            "-n",
            ns.name(),
        ],
        None,
    )?;
    ensure!(leases.stdout.trim() == "yes", "cannot update its Lease");
    let elsewhere = run(
        &kubectl(),
        &[
            "auth",
            "can-i",
            "update",
            "leases.coordination.k8s.io",
            "--as",
            &sa,
            "-n",
            "kube-system",
        ],
        None,
    )?;
    ensure!(
        elsewhere.stdout.trim() == "no",
        "may update Leases outside its namespace"
    );

    // No operator process runs here (KWOK), so the sample pipeline carries
    // no finalizer and goes with the release.
    installed.uninstall()?;
    ensure!(
        deployments.get_opt(&full).await?.is_none(),
        "the Deployment survived helm uninstall"
    );
    ensure!(
        Api::<ClusterRole>::all(client.clone())
            .get_opt(&full)
            .await?
            .is_none(),
        "the ClusterRole survived helm uninstall"
    );
    // Helm never deletes CRDs from crds/; they stay for other releases.
    ensure!(
        crds.get_opt("paymentpipelines.paystream.io")
            .await?
            .is_some()
    );
    Ok(())
}
