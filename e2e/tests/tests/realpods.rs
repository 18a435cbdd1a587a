//! Real pods on kind (`make kind-e2e` only): the operator, installed by the
//! chart from its image, runs a PaymentPipeline whose producer, consumer and
//! API are real containers from the images built on this machine, against
//! the host's MariaDB, Kafka and Redis (reached at the kind network's
//! gateway). The tests prove what a fake pod cannot: the containers run, a
//! row travels to the API, the HPA scales on measured CPU, kills and pod
//! deletions lose nothing, a replaced operator pod takes the Lease, and a
//! pod that cannot run is named in the pipeline's status.
//!
//! `e2e/kind/e2e.sh` sets the environment: `PAYSTREAM_E2E_REAL_PODS` (the
//! pipeline's namespace), `PAYSTREAM_E2E_JWT_SECRET` (the API's HS256
//! secret), `PAYSTREAM_E2E_OPERATOR_NS`, `PAYSTREAM_E2E_NODE` (the node's
//! container) and `PAYSTREAM_E2E_DOCKER` (the docker CLI, with `DOCKER_HOST`).
//! Run elsewhere, every test fails and says so: none passes by skipping.
//! Each test starts and ends with the pipeline Ready, so they run in any
//! order (one at a time: `--test-threads=1`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use mysql_async::prelude::*;
use paystream_e2e::http;
use paystream_e2e::poll_until;
use paystream_e2e::realpods::{
    Kind, PIPELINE, WORKLOADS, condition, container_running_ready, insert_purchase, mysql,
    mysql_purchase, restarts, same_purchase, user_and_package,
};
use paystream_testkit::{Stack, cdc};

#[tokio::test]
async fn workloads_run_as_real_containers_from_the_built_images() -> Result<()> {
    let kind = Kind::from_env().await?;
    kind.ready(Duration::from_secs(300)).await?;
    let mut pods: Vec<(String, Pod)> = Vec::new();
    for w in WORKLOADS {
        for p in kind.workload_pods(w).await? {
            pods.push((w.to_string(), p));
        }
    }
    let operator_pods: Api<Pod> = Api::namespaced(kind.cluster.client(), &kind.operator_ns);
    for p in operator_pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=paystream-operator"))
        .await?
        .items
    {
        pods.push(("operator".to_string(), p));
    }
    for w in ["producer", "consumer", "api", "operator"] {
        ensure!(pods.iter().any(|(n, _)| n == w), "no {w} pod found");
    }
    for (w, pod) in &pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        ensure!(
            container_running_ready(pod),
            "{w} pod {name} is not running and ready: {:?}",
            pod.status
        );
        let spec = pod.spec.as_ref().context("pod without spec")?;
        ensure!(
            spec.node_name.as_deref() == Some(kind.node.as_str()),
            "{w} pod {name} runs on {:?}, not on the real node {}",
            spec.node_name,
            kind.node
        );
        for c in &spec.containers {
            let image = c.image.clone().unwrap_or_default();
            ensure!(
                image == format!("ghcr.io/paystream/paystream-{w}:{}", kind.image_tag),
                "{w} pod {name} runs image {image}, not the one built for this run ({})",
                kind.image_tag
            );
            let sc = c.security_context.clone().unwrap_or_default();
            ensure!(
                sc.read_only_root_filesystem == Some(true),
                "{w}: root file system is writable"
            );
        }
        let non_root = spec
            .security_context
            .as_ref()
            .and_then(|s| s.run_as_non_root)
            .or_else(|| {
                spec.containers[0]
                    .security_context
                    .as_ref()
                    .and_then(|s| s.run_as_non_root)
            });
        ensure!(non_root == Some(true), "{w} pod {name} may run as root");
        println!("{w:<9} {name:<45} running, ready, read-only root, non-root");
    }
    // What the kubelet really runs: uid 65532 and a read-only root.
    for w in WORKLOADS {
        let pod = kind
            .workload_pods(w)
            .await?
            .into_iter()
            .next()
            .context("no pod")?;
        let pid = kind.container_pid(&pod)?;
        let status = kind.in_node(&["cat", &format!("/proc/{pid}/status")])?;
        let uid = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .unwrap_or_default()
            .to_string();
        ensure!(
            uid.split_whitespace().nth(1) == Some("65532"),
            "{w} runs as {uid}"
        );
        let mounts = kind.in_node(&["cat", &format!("/proc/{pid}/mounts")])?;
        let root = mounts
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some("/"))
            .unwrap_or_default();
        ensure!(
            root.split_whitespace()
                .nth(3)
                .is_some_and(|o| o.split(',').any(|o| o == "ro")),
            "{w}: root mounted {root}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_row_written_to_mariadb_is_served_by_the_api_service() -> Result<()> {
    let kind = Kind::from_env().await?;
    kind.ready(Duration::from_secs(300)).await?;
    let stack = Stack::from_env();
    let mut conn = mysql(&stack).await?;
    let key = paystream_e2e::unique_name("e2e");
    let (user, package) = user_and_package(&mut conn, &key).await?;
    let purchase = insert_purchase(&mut conn, user, package, &key).await?;
    let addr = kind.api_addr().await?;
    let token = http::token(&kind.secret, &user.to_string(), None)?;
    let want = mysql_purchase(&mut conn, purchase)
        .await?
        .context("the row is gone")?;
    let started = Instant::now();
    poll_until(
        "the purchase served by the API",
        Duration::from_secs(120),
        || async {
            let r = http::get(
                addr,
                &format!("/v1/purchases/{purchase}"),
                &token,
                Duration::from_secs(5),
            )
            .await?;
            Ok(same_purchase(&r, &want).then_some(()))
        },
    )
    .await?;
    println!(
        "purchase {purchase} served through {addr} {:?} after the commit",
        started.elapsed()
    );
    let list = http::get(
        addr,
        &format!("/v1/users/{user}/purchases"),
        &token,
        Duration::from_secs(5),
    )
    .await?;
    ensure!(
        list.status == 200 && list.body.contains(&format!("\"id\":{purchase}")),
        "the user's list lacks purchase {purchase}: {list:?}"
    );
    // Another user's token reads nothing of it.
    let stranger = http::token(&kind.secret, &(user + 1_000_000).to_string(), None)?;
    let r = http::get(
        addr,
        &format!("/v1/purchases/{purchase}"),
        &stranger,
        Duration::from_secs(5),
    )
    .await?;
    ensure!(
        r.status == 404,
        "a stranger read purchase {purchase}: {r:?}"
    );
    Ok(())
}

/// One line of the HPA's timeline.
fn hpa_line(t0: Instant, hpa: &HorizontalPodAutoscaler) -> (i32, i32, Option<i32>, String) {
    let status = hpa.status.clone().unwrap_or_default();
    let cpu = status
        .current_metrics
        .unwrap_or_default()
        .into_iter()
        .find_map(|m| m.resource.and_then(|r| r.current.average_utilization));
    let line = format!(
        "{:>6.1}s  replicas {} -> desired {}  cpu {}",
        t0.elapsed().as_secs_f64(),
        status.current_replicas.unwrap_or(0),
        status.desired_replicas,
        cpu.map_or("-".to_string(), |c| format!("{c}%"))
    );
    (
        status.current_replicas.unwrap_or(0),
        status.desired_replicas,
        cpu,
        line,
    )
}

#[tokio::test]
async fn the_api_scales_on_real_cpu_and_back() -> Result<()> {
    let kind = Kind::from_env().await?;
    kind.ready(Duration::from_secs(300)).await?;
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(kind.cluster.client(), &kind.ns);
    let name = format!("{PIPELINE}-api");
    let min = hpas
        .get(&name)
        .await?
        .spec
        .and_then(|s| s.min_replicas)
        .unwrap_or(1);
    let addr = kind.api_addr().await?;
    let stack = Stack::from_env();
    let mut conn = mysql(&stack).await?;
    let key = paystream_e2e::unique_name("hpa");
    let (user, package) = user_and_package(&mut conn, &key).await?;
    let purchase = insert_purchase(&mut conn, user, package, &key).await?;
    let token = http::token(&kind.secret, &user.to_string(), None)?;
    // A bounded load: 16 clients, each one request at a time, for at most
    // four minutes, until the HPA wants more pods.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..16 {
        let (stop, served, token) = (stop.clone(), served.clone(), token.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let path = format!("/v1/purchases/{purchase}");
                if let Ok(r) = http::get(addr, &path, &token, Duration::from_secs(5)).await
                    && r.status == 200
                {
                    served.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let t0 = Instant::now();
    let mut peak = min;
    let mut measured = false;
    println!("HPA {name}: load of 16 clients on {addr} (minimum {min} replicas)");
    while t0.elapsed() < Duration::from_secs(240) {
        let (current, desired, cpu, line) = hpa_line(t0, &hpas.get(&name).await?);
        println!("{line}  served {}", served.load(Ordering::Relaxed));
        measured |= cpu.is_some();
        peak = peak.max(current).max(desired);
        if current > min && cpu.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await?;
    }
    ensure!(measured, "metrics-server never gave the HPA a CPU figure");
    ensure!(peak > min, "the HPA never scaled above {min} under load");
    println!(
        "load stopped at {:.1}s after {} requests",
        t0.elapsed().as_secs_f64(),
        served.load(Ordering::Relaxed)
    );
    let back = poll_until(
        "the API back at its minimum",
        Duration::from_secs(400),
        || async {
            let (current, desired, _, line) = hpa_line(t0, &hpas.get(&name).await?);
            println!("{line}");
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok((current == min && desired == min).then_some(current))
        },
    )
    .await?;
    println!("scaled {min} -> {peak} -> {back} on measured CPU");
    kind.ready(Duration::from_secs(300)).await?;
    Ok(())
}

/// Writes purchases and updates them until stopped; returns the ids touched.
async fn writer(stack: Stack, stop: Arc<AtomicBool>) -> Result<Vec<u64>> {
    let mut conn = mysql(&stack).await?;
    let key = paystream_e2e::unique_name("kill");
    let (user, package) = user_and_package(&mut conn, &key).await?;
    let mut ids: Vec<u64> = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        if n.is_multiple_of(3) && !ids.is_empty() {
            let id = ids[usize::try_from(n).unwrap_or(0) % ids.len()];
            conn.exec_drop(
                "UPDATE purchases SET status = IF(status = 'pending', 'paid', 'refunded') WHERE id = ?",
                (id,),
            )
            .await?;
        } else {
            ids.push(insert_purchase(&mut conn, user, package, &format!("{key}-{n}")).await?);
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    Ok(ids)
}

/// SIGKILL to the main process of a workload's first container, inside the
/// node; waits until the kubelet has restarted it.
async fn kill_container(kind: &Kind, workload: &str) -> Result<()> {
    let pod = kind
        .workload_pods(workload)
        .await?
        .into_iter()
        .find(container_running_ready)
        .with_context(|| format!("no running {workload} pod"))?;
    let name = pod.metadata.name.clone().unwrap_or_default();
    let before = restarts(&pod);
    let pid = kind.container_pid(&pod)?;
    kind.in_node(&["kill", "-9", &pid])?;
    println!(
        "killed {workload} container of {name} (pid {} in the node)",
        pid
    );
    poll_until(
        &format!("{name} restarted and ready"),
        Duration::from_secs(180),
        || async {
            let p = kind.pods().get(&name).await?;
            Ok((restarts(&p) > before && container_running_ready(&p)).then_some(()))
        },
    )
    .await
}

async fn delete_pod(kind: &Kind, workload: &str) -> Result<()> {
    let pod = kind
        .workload_pods(workload)
        .await?
        .into_iter()
        .next()
        .with_context(|| format!("no {workload} pod"))?;
    let name = pod.metadata.name.clone().unwrap_or_default();
    kind.pods().delete(&name, &DeleteParams::default()).await?;
    println!("deleted {workload} pod {name}");
    Ok(())
}

#[tokio::test]
async fn kills_and_pod_deletions_while_rows_flow_lose_nothing() -> Result<()> {
    let kind = Kind::from_env().await?;
    kind.ready(Duration::from_secs(300)).await?;
    let stack = Stack::from_env();
    let stop = Arc::new(AtomicBool::new(false));
    let writing = tokio::spawn(writer(stack.clone(), stop.clone()));
    let faults = async {
        for w in WORKLOADS {
            kill_container(&kind, w).await?;
        }
        for w in WORKLOADS {
            delete_pod(&kind, w).await?;
        }
        kind.ready(Duration::from_secs(300)).await?;
        anyhow::Ok(())
    }
    .await;
    stop.store(true, Ordering::Relaxed);
    let ids = writing.await??;
    faults?;
    ensure!(
        ids.len() > 20,
        "the writer wrote only {} purchases",
        ids.len()
    );
    println!(
        "{} purchases written and updated during the faults",
        ids.len()
    );

    // MySQL equals what the API serves, for every touched row.
    let mut conn = mysql(&stack).await?;
    let mut want: BTreeMap<u64, (String, u64, String)> = BTreeMap::new();
    for id in &ids {
        want.insert(
            *id,
            mysql_purchase(&mut conn, *id)
                .await?
                .context("a row vanished")?,
        );
    }
    let addr = kind.api_addr().await?;
    let token = kind.admin_token()?;
    let want = Arc::new(want);
    poll_until(
        "the API serving MySQL's rows",
        Duration::from_secs(120),
        || {
            let want = want.clone();
            let token = token.clone();
            async move {
                for (id, row) in want.iter() {
                    let r = http::get(
                        addr,
                        &format!("/v1/purchases/{id}"),
                        &token,
                        Duration::from_secs(5),
                    )
                    .await?;
                    if !same_purchase(&r, row) {
                        return Err(anyhow!("purchase {id}: MySQL {row:?}, API {r:?}"));
                    }
                }
                Ok(Some(()))
            }
        },
    )
    .await?;

    // Kafka holds each change once: per row, versions 1, 2, ... without a
    // gap or a repeat, up to MySQL's.
    let topic = format!("{PIPELINE}.payments.purchases");
    let last: BTreeMap<String, u64> = want
        .iter()
        .map(|(id, row)| (serde_json::json!({ "id": id }).to_string(), row.1))
        .collect();
    let (recs, complete) = cdc::read_for(
        &stack.kafka_bootstrap,
        &topic,
        Duration::from_secs(120),
        &|recs: &[cdc::Rec]| {
            let seen: BTreeSet<(String, u64)> = recs
                .iter()
                .filter_map(|r| {
                    Some((
                        r.key.as_ref()?.to_string(),
                        r.value.as_ref()?["after"]["version"].as_u64()?,
                    ))
                })
                .collect();
            last.iter().all(|(k, v)| seen.contains(&(k.clone(), *v)))
        },
    )
    .await;
    ensure!(
        complete,
        "Kafka lacks the last version of some rows ({} records read)",
        recs.len()
    );
    let chains = cdc::by_key(&recs);
    for (key, v) in &last {
        let versions: Vec<u64> = chains
            .get(key)
            .map(|evs| {
                evs.iter()
                    .filter_map(|e| e["after"]["version"].as_u64())
                    .collect()
            })
            .unwrap_or_default();
        let expected: Vec<u64> = (1..=*v).collect();
        if versions != expected {
            bail!("row {key}: Kafka holds versions {versions:?}, expected {expected:?}");
        }
    }
    println!(
        "Kafka holds every change of the {} rows exactly once",
        last.len()
    );
    Ok(())
}

#[tokio::test]
async fn a_replaced_operator_pod_takes_the_lease_and_keeps_reconciling() -> Result<()> {
    let kind = Kind::from_env().await?;
    kind.ready(Duration::from_secs(300)).await?;
    let leases: Api<Lease> = Api::namespaced(kind.cluster.client(), &kind.operator_ns);
    let lease_name = "paystream-operator";
    let holder = |l: Lease| l.spec.and_then(|s| s.holder_identity).unwrap_or_default();
    let old = holder(leases.get(lease_name).await?);
    ensure!(!old.is_empty(), "nobody holds the Lease");
    let pods: Api<Pod> = Api::namespaced(kind.cluster.client(), &kind.operator_ns);
    pods.delete(&old, &DeleteParams::default())
        .await
        .with_context(|| format!("deleting the leader pod {old}"))?;
    println!("deleted the operator pod {old}, which held the Lease");
    let t0 = Instant::now();
    let new = poll_until(
        "a new operator pod holding the Lease",
        Duration::from_secs(180),
        || async {
            let h = holder(leases.get(lease_name).await?);
            if h.is_empty() || h == old {
                return Ok(None);
            }
            let pod = pods.get(&h).await?;
            Ok(container_running_ready(&pod).then_some(h))
        },
    )
    .await?;
    println!(
        "{new} holds the Lease {:.1}s later",
        t0.elapsed().as_secs_f64()
    );
    // A spec change is reconciled by the new leader.
    let generation = kind
        .pipelines()
        .patch(
            PIPELINE,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "kafka": { "topicConfig": {
                "retention.ms": format!("{}", 604_800_000 + (t0.elapsed().as_millis() % 1000)) } } } })),
        )
        .await?
        .metadata
        .generation;
    let p = kind.ready(Duration::from_secs(180)).await?;
    ensure!(p.data["status"]["observedGeneration"].as_i64() == generation);
    println!("the new leader reconciled generation {generation:?}");
    Ok(())
}

/// Waits for Degraded=True with `reason`, its message naming `workload`.
async fn degraded_with(kind: &Kind, reason: &str, workload: &str) -> Result<String> {
    poll_until(
        &format!("Degraded {reason} naming {workload}"),
        Duration::from_secs(240),
        || async {
            let p = kind.pipelines().get(PIPELINE).await?;
            Ok(condition(&p, "Degraded")
                .filter(|c| c["status"] == "True" && c["reason"] == reason)
                .and_then(|c| c["message"].as_str())
                .filter(|m| m.contains(workload))
                .map(str::to_string))
        },
    )
    .await
}

#[tokio::test]
async fn a_jwt_secret_the_api_cannot_use_shows_in_the_status() -> Result<()> {
    let kind = Kind::from_env().await?;
    kind.ready(Duration::from_secs(300)).await?;
    let secrets: Api<Secret> = Api::namespaced(kind.cluster.client(), &kind.ns);
    let set = |value: &str| serde_json::json!({ "stringData": { "secret": value } });
    secrets
        .patch(
            "api-jwt",
            &PatchParams::default(),
            &Patch::Merge(set("too-short")),
        )
        .await?;
    let outcome = degraded_with(&kind, "CrashLooping", "api").await;
    secrets
        .patch(
            "api-jwt",
            &PatchParams::default(),
            &Patch::Merge(set(&kind.secret)),
        )
        .await?;
    let message = outcome?;
    println!("status said: {message}");
    ensure!(
        message.contains("32"),
        "the message does not say what the API wants: {message}"
    );
    kind.ready(Duration::from_secs(300)).await?;
    Ok(())
}

#[tokio::test]
async fn an_image_missing_in_the_node_shows_in_the_status() -> Result<()> {
    let kind = Kind::from_env().await?;
    kind.ready(Duration::from_secs(300)).await?;
    let image = "ghcr.io/paystream/paystream-consumer:0.0.0-missing";
    let patch =
        |image: Option<&str>| serde_json::json!({ "spec": { "consumer": { "image": image } } });
    kind.pipelines()
        .patch(
            PIPELINE,
            &PatchParams::default(),
            &Patch::Merge(patch(Some(image))),
        )
        .await?;
    let outcome = degraded_with(&kind, "ImageUnavailable", "consumer").await;
    kind.pipelines()
        .patch(
            PIPELINE,
            &PatchParams::default(),
            &Patch::Merge(patch(None)),
        )
        .await?;
    let message = outcome?;
    println!("status said: {message}");
    ensure!(
        message.contains(image),
        "the message does not name the image: {message}"
    );
    kind.ready(Duration::from_secs(300)).await?;
    Ok(())
}
