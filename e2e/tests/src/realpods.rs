//! The real-pod suite's view of the kind cluster `e2e/kind/e2e.sh` made
//! (`tests/realpods.rs`): where the pipeline and the operator run, how to
//! reach the API from this machine (a NodePort at the node's address), how
//! to run a command in the node, and the MySQL rows the tests write and
//! compare with what the API serves.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::{Api, DynamicObject, ListParams, Patch};
use mysql_async::prelude::*;
use paystream_testkit::Stack;

use crate::http::{self, Response};
use crate::tools::run_ok;
use crate::{Cluster, pipeline, poll_until};

pub const PIPELINE: &str = "demo";
pub const WORKLOADS: [&str; 3] = ["producer", "consumer", "api"];

/// What `e2e/kind/e2e.sh` tells the tests.
pub struct Kind {
    /// The cluster.
    pub cluster: Cluster,
    /// The pipeline's namespace.
    pub ns: String,
    /// The operator's namespace.
    pub operator_ns: String,
    /// The node's container, also the Kubernetes node's name.
    pub node: String,
    /// The docker CLI that reaches the node's engine.
    pub docker: String,
    /// The API's HS256 secret.
    pub secret: String,
    /// The tag of the images built and loaded for this run.
    pub image_tag: String,
}

impl Kind {
    pub async fn from_env() -> Result<Self> {
        let var = |name: &str| {
            std::env::var(name).with_context(|| {
                format!(
                    "{name} is not set: these tests need real pods, run them with `make kind-e2e`"
                )
            })
        };
        Ok(Self {
            ns: var("PAYSTREAM_E2E_REAL_PODS")?,
            secret: var("PAYSTREAM_E2E_JWT_SECRET")?,
            operator_ns: var("PAYSTREAM_E2E_OPERATOR_NS")?,
            node: var("PAYSTREAM_E2E_NODE")?,
            docker: var("PAYSTREAM_E2E_DOCKER")?,
            image_tag: var("PAYSTREAM_E2E_IMAGE_TAG")?,
            cluster: Cluster::connect().await?,
        })
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.cluster.client(), &self.ns)
    }

    pub fn pipelines(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.cluster.client(), &self.ns, &pipeline::resource())
    }

    /// Pods of one workload of the pipeline, by the operator's labels.
    pub async fn workload_pods(&self, workload: &str) -> Result<Vec<Pod>> {
        let selector =
            format!("app.kubernetes.io/instance={PIPELINE},app.kubernetes.io/component={workload}");
        Ok(self
            .pods()
            .list(&ListParams::default().labels(&selector))
            .await?
            .items)
    }

    /// Waits for the pipeline's Ready condition at its current generation.
    pub async fn ready(&self, within: Duration) -> Result<DynamicObject> {
        poll_until("the pipeline Ready", within, || async {
            let p = self.pipelines().get(PIPELINE).await?;
            let generation = p.metadata.generation;
            let status = &p.data["status"];
            let ready = condition(&p, "Ready").is_some_and(|c| c["status"] == "True");
            let current = status["observedGeneration"].as_i64() == generation;
            Ok((ready && current).then_some(p))
        })
        .await
    }

    /// The API's address from this machine: a NodePort Service made by the
    /// test in front of the API pods, at the node's address on the kind
    /// network (kube-proxy spreads the connections over the pods).
    pub async fn api_addr(&self) -> Result<SocketAddr> {
        let services: Api<Service> = Api::namespaced(self.cluster.client(), &self.ns);
        let api = services.get(&format!("{PIPELINE}-api")).await?;
        let selector = api
            .spec
            .and_then(|s| s.selector)
            .context("the API Service has no selector")?;
        let node_port: Service = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "e2e-api-nodeport", "labels": { crate::E2E_LABEL: "true" } },
            "spec": {
                "type": "NodePort",
                "selector": selector,
                "ports": [{ "name": "http", "port": 8080, "targetPort": 8080 }]
            }
        }))?;
        let made = services
            .patch(
                "e2e-api-nodeport",
                &pipeline::ssa(),
                &Patch::Apply(&node_port),
            )
            .await?;
        let port = made
            .spec
            .and_then(|s| s.ports)
            .and_then(|p| p.first().and_then(|p| p.node_port))
            .context("no node port assigned")?;
        let nodes: Api<Node> = Api::all(self.cluster.client());
        let node = nodes.get(&self.node).await?;
        let ip = node
            .status
            .and_then(|s| s.addresses)
            .unwrap_or_default()
            .into_iter()
            .find(|a| a.type_ == "InternalIP")
            .context("the node has no InternalIP")?
            .address;
        Ok(SocketAddr::new(ip.parse()?, u16::try_from(port)?))
    }

    pub fn admin_token(&self) -> Result<String> {
        http::token(&self.secret, "1", Some("admin"))
    }

    /// The node's pid of the main process of `pod`'s first container.
    pub fn container_pid(&self, pod: &Pod) -> Result<String> {
        let id = container_id(pod)?;
        let template = "{{.info.pid}}";
        let pid = self.in_node(&[
            "crictl",
            "inspect",
            "-o",
            "go-template",
            "--template",
            template,
            &id,
        ])?;
        Ok(pid.trim().to_string())
    }

    /// Runs a command in the kind node's container.
    pub fn in_node(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["exec", self.node.as_str()];
        full.extend_from_slice(args);
        run_ok(std::path::Path::new(&self.docker), &full, None)
    }
}

pub fn condition<'a>(p: &'a DynamicObject, type_: &str) -> Option<&'a serde_json::Value> {
    p.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

pub fn container_running_ready(pod: &Pod) -> bool {
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref());
    statuses.is_some_and(|cs| {
        !cs.is_empty()
            && cs
                .iter()
                .all(|c| c.ready && c.state.as_ref().is_some_and(|s| s.running.is_some()))
    })
}

pub async fn mysql(stack: &Stack) -> Result<mysql_async::Conn> {
    Ok(mysql_async::Conn::from_url(stack.mysql_url(&stack.app, "payments")).await?)
}

/// A user and a package of the test's own, for purchases to refer to.
pub async fn user_and_package(conn: &mut mysql_async::Conn, key: &str) -> Result<(u64, u64)> {
    conn.exec_drop(
        "INSERT INTO users (email, display_name) VALUES (?, 'e2e')",
        (format!("{key}@e2e.invalid"),),
    )
    .await?;
    let user = conn.last_insert_id().context("no user id")?;
    conn.exec_drop(
        "INSERT INTO packages (code, name, price, currency) VALUES (?, 'e2e', 9.99, 'EUR')",
        (key,),
    )
    .await?;
    let package = conn.last_insert_id().context("no package id")?;
    Ok((user, package))
}

pub async fn insert_purchase(
    conn: &mut mysql_async::Conn,
    user: u64,
    package: u64,
    key: &str,
) -> Result<u64> {
    conn.exec_drop(
        "INSERT INTO purchases (user_id, package_id, quantity, amount, currency, idempotency_key) \
         VALUES (?, ?, 1, 9.99, 'EUR', ?)",
        (user, package, key),
    )
    .await?;
    conn.last_insert_id().context("no purchase id")
}

/// The purchase as MySQL holds it: (status, version, amount).
pub async fn mysql_purchase(
    conn: &mut mysql_async::Conn,
    id: u64,
) -> Result<Option<(String, u64, String)>> {
    Ok(conn
        .exec_first(
            "SELECT CAST(status AS CHAR), version, CAST(amount AS CHAR) FROM purchases WHERE id = ?",
            (id,),
        )
        .await?)
}

/// Whether the API's answer for a purchase is MySQL's row.
pub fn same_purchase(resp: &Response, want: &(String, u64, String)) -> bool {
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(&resp.body) else {
        return false;
    };
    resp.status == 200
        && doc["status"] == want.0.as_str()
        && doc["version"].as_u64() == Some(want.1)
        && doc["amount"] == want.2.as_str()
}

fn container_id(pod: &Pod) -> Result<String> {
    let id = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.container_id.clone())
        .context("the pod has no container id yet")?;
    Ok(id.rsplit("://").next().unwrap_or(&id).to_string())
}

pub fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |c| c.iter().map(|c| c.restart_count).sum())
}
