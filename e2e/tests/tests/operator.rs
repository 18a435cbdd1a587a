//! The operator end to end: the CRD from `crds/` is accepted, invalid specs
//! are rejected at admission, and one PaymentPipeline goes through its life
//! with the operator and the producer running as local processes against the
//! real local stack (MariaDB, Kafka, Redis): children created and Available,
//! topics in Kafka, every printer column filled, the binlog position
//! advancing, partitions grown and a decrease refused, the HPA not fought,
//! no API writes while idle, and cleanup on deletion.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use paystream_e2e::pipeline::{install_crd, resource, ssa};
use paystream_e2e::{
    Cluster, LocalProcess, TestNamespace, build_binaries, free_port, http_get, kafka_partitions,
    metric_sum, poll_until, repo_root, unique_name, wait_for,
};
use serde_json::{Value, json};

/// The documents of a YAML file.
fn yaml_docs(path: &str) -> Result<Vec<Value>> {
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

#[tokio::test]
async fn invalid_specs_are_rejected_at_admission() -> Result<()> {
    let cluster = Cluster::connect().await?;
    install_crd(&cluster).await?;
    let ns = TestNamespace::create(&cluster, "e2e-opinv").await?;
    let api = Api::<DynamicObject>::namespaced_with(cluster.client(), ns.name(), &resource());
    for (file, expected) in [
        (
            "examples/invalid-partitions.yaml",
            "kafka.partitions must be at least 1",
        ),
        (
            "examples/invalid-replicas.yaml",
            "autoscaling.minReplicas must not exceed maxReplicas",
        ),
        ("examples/invalid-no-secret.yaml", "credentialsSecretRef"),
        (
            "examples/invalid-two-jwt-keys.yaml",
            "set exactly one of api.jwtSecretRef",
        ),
        (
            "examples/invalid-redis-ca-without-tls.yaml",
            "redis.caSecretRef needs redis.tls",
        ),
    ] {
        let doc = yaml_docs(file)?.pop().context("empty example")?;
        let obj: DynamicObject = serde_json::from_value(doc)?;
        match api.create(&PostParams::default(), &obj).await {
            Err(kube::Error::Api(s)) => {
                ensure!(
                    s.code == 422,
                    "{file}: expected 422, got {}: {}",
                    s.code,
                    s.message
                );
                ensure!(
                    s.message.contains(expected),
                    "{file}: message lacks {expected:?}: {}",
                    s.message
                );
                println!("{file}: rejected: {}", s.message);
            }
            other => bail!("{file} was not rejected: {other:?}"),
        }
    }
    Ok(())
}

fn status(obj: &DynamicObject) -> &Value {
    obj.data.get("status").unwrap_or(&Value::Null)
}

fn condition<'a>(obj: &'a DynamicObject, type_: &str) -> Option<&'a Value> {
    status(obj)["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn available(replicas: i32) -> impl Fn(Option<&Deployment>) -> bool {
    move |d: Option<&Deployment>| {
        d.and_then(|d| d.status.as_ref())
            .is_some_and(|s| s.available_replicas == Some(replicas) && s.replicas == Some(replicas))
    }
}

fn mysql(sql: &str) -> Result<()> {
    let stack = paystream_testkit::Stack::from_env();
    let out = std::process::Command::new("mysql")
        .args([
            "-h127.0.0.1",
            &format!("-P{}", stack.mysql_port),
            &format!("-u{}", stack.admin.user),
            &format!("-p{}", stack.admin.password),
            "payments",
            "-e",
            sql,
        ])
        .output()?;
    ensure!(
        out.status.success(),
        "mysql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

async fn metrics(port: u16) -> Result<String> {
    http_get(port, "/metrics").await
}

#[tokio::test]
async fn operator_runs_a_pipeline_through_its_life() -> Result<()> {
    let cluster = Cluster::connect().await?;
    install_crd(&cluster).await?;
    let bin = build_binaries(&["paystream-operator", "paystream-producer"])?;
    let stack = paystream_testkit::Stack::from_env();
    let ns = TestNamespace::create(&cluster, "e2e-op").await?;
    let client = cluster.client();
    let kubeconfig = std::env::var("KUBECONFIG").unwrap_or_default();

    // The operator, a local process watching this namespace.
    let ops_port = free_port()?;
    let _operator = LocalProcess::start(
        "operator",
        &bin.join("paystream-operator"),
        &[
            "--namespace",
            ns.name(),
            "--lease-namespace",
            ns.name(),
            "--status-interval-secs",
            "2",
            "--ops-addr",
            &format!("127.0.0.1:{ops_port}"),
        ],
        &[
            ("KUBECONFIG", kubeconfig.clone()),
            ("PAYSTREAM_LOG", "info,paystream_operator=debug".into()),
        ],
    )?;

    // Apply examples/paymentpipeline.yaml, with a topic prefix of its own.
    let prefix = unique_name("e2e");
    let mut docs = yaml_docs("examples/paymentpipeline.yaml")?;
    let pipelines = Api::<DynamicObject>::namespaced_with(client.clone(), ns.name(), &resource());
    let secrets = Api::<Secret>::namespaced(client.clone(), ns.name());
    let mut pipeline = docs.pop().context("no pipeline in the example")?;
    pipeline["spec"]["kafka"]["topicPrefix"] = json!(prefix);
    for d in docs {
        let s: Secret = serde_json::from_value(d)?;
        secrets.create(&PostParams::default(), &s).await?;
    }
    let name = "demo";
    let started = Instant::now();
    pipelines
        .patch(name, &ssa(), &Patch::Apply(&pipeline))
        .await
        .context("applying the pipeline")?;

    // Children exist and the Deployments become Available.
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns.name());
    for (d, n) in [("demo-producer", 1), ("demo-consumer", 1), ("demo-api", 2)] {
        wait_for(
            &deployments,
            d,
            "Deployment Available",
            Duration::from_secs(120),
            available(n),
        )
        .await?;
    }
    println!("children Available {:?} after apply", started.elapsed());
    let producer = deployments.get("demo-producer").await?;
    let pspec = producer.spec.clone().context("spec")?;
    ensure!(
        pspec.replicas == Some(1)
            && pspec.strategy.and_then(|s| s.type_).as_deref() == Some("Recreate")
    );
    ensure!(
        producer
            .metadata
            .owner_references
            .as_ref()
            .is_some_and(|o| o[0].kind == "PaymentPipeline")
    );
    Api::<ConfigMap>::namespaced(client.clone(), ns.name())
        .get("demo-config")
        .await?;
    Api::<Service>::namespaced(client.clone(), ns.name())
        .get("demo-api")
        .await?;
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), ns.name());
    hpas.get("demo-api").await.context("the API's HPA")?;

    // The topics exist in Kafka with the spec's partitions.
    let topic = format!("{prefix}.payments.users");
    let bootstrap = stack.kafka_bootstrap.clone();
    poll_until(
        "change topic with 3 partitions",
        Duration::from_secs(60),
        || {
            let b = bootstrap.clone();
            let t = topic.clone();
            async move { Ok(kafka_partitions(&b, &t)?.filter(|&n| n == 3)) }
        },
    )
    .await?;

    // The producer, a local process reading the real MariaDB.
    let producer = LocalProcess::start(
        "producer",
        &bin.join("paystream-producer"),
        &["--ops-addr", &format!("127.0.0.1:{}", free_port()?)],
        &[
            ("PAYSTREAM_MYSQL_HOST", "127.0.0.1".into()),
            ("PAYSTREAM_MYSQL_PORT", stack.mysql_port.to_string()),
            ("PAYSTREAM_MYSQL_USER", stack.cdc.user.clone()),
            ("PAYSTREAM_MYSQL_PASSWORD", stack.cdc.password.clone()),
            ("PAYSTREAM_TOPIC_PREFIX", prefix.clone()),
            (
                "PAYSTREAM_INCLUDE_TABLES",
                "payments.users,payments.packages,payments.purchases,payments.payments".into(),
            ),
            ("PAYSTREAM_SNAPSHOT_MODE", "never".into()),
            ("PAYSTREAM_KAFKA_BOOTSTRAP", bootstrap.clone()),
            (
                "PAYSTREAM_SERVER_ID",
                (6000 + std::process::id() % 1000).to_string(),
            ),
        ],
    )?;

    // Writing rows moves the binlog position in the status.
    let touch =
        // An upsert: it writes a row event whether or not the row exists
        // (a fresh database has no demo data).
        |n: u32| {
            format!(
                "INSERT INTO users (id, email, display_name) VALUES (1, 'e2e-operator@paystream.test', 'e2e') \
                 ON DUPLICATE KEY UPDATE display_name = CONCAT('e2e-{n}-', NOW(6))"
            )
        };
    let mut seen = Vec::new();
    for n in 0..2 {
        mysql(&touch(n))?;
        let before = seen.last().cloned().unwrap_or_default();
        let obj = wait_for(
            &pipelines,
            name,
            "binlog position advanced",
            Duration::from_secs(90),
            move |o: Option<&DynamicObject>| {
                o.and_then(|o| status(o)["binlog"]["summary"].as_str().map(str::to_string))
                    .is_some_and(|s| !s.is_empty() && s != before)
            },
        )
        .await?;
        seen.push(
            status(&obj)["binlog"]["summary"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    println!("binlog positions seen: {seen:?}");

    // kubectl get paymentpipelines: every column filled.
    let kubectl = repo_root().join("var/cluster/bin/kubectl");
    let kubectl = if kubectl.exists() {
        kubectl
    } else {
        "kubectl".into()
    };
    let ready = wait_for(
        &pipelines,
        name,
        "Ready=True",
        Duration::from_secs(60),
        |o: Option<&DynamicObject>| {
            o.and_then(|o| condition(o, "Ready"))
                .is_some_and(|c| c["status"] == "True")
        },
    )
    .await;
    if let Err(e) = &ready {
        println!("not Ready: {e:#}");
    }
    let out = std::process::Command::new(&kubectl)
        .args(["get", "paymentpipelines", "-n", ns.name()])
        .output()?;
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{table}");
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    ensure!(
        header
            == [
                "NAME",
                "READY",
                "PHASE",
                "PARTITIONS",
                "BINLOG",
                "LAG",
                "PRODUCER",
                "CONSUMER",
                "API",
                "AGE"
            ],
        "columns: {header:?}"
    );
    let row = table.lines().nth(1).unwrap_or_default();
    ensure!(
        !row.contains("<none>") && row.split_whitespace().count() == header.len(),
        "a column is empty: {row}"
    );
    ready?;

    // A partition increase is applied to the topics.
    let patch_partitions = |n: i32| json!({ "apiVersion": "paystream.io/v1alpha1", "kind": "PaymentPipeline", "spec": { "kafka": { "partitions": n } } });
    pipelines
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(patch_partitions(4)),
        )
        .await?;
    poll_until(
        "change topic grown to 4 partitions",
        Duration::from_secs(60),
        || {
            let b = bootstrap.clone();
            let t = topic.clone();
            async move { Ok(kafka_partitions(&b, &t)?.filter(|&n| n == 4)) }
        },
    )
    .await?;
    // A decrease is refused with Degraded, and the topic is untouched.
    pipelines
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(patch_partitions(2)),
        )
        .await?;
    let degraded = wait_for(
        &pipelines,
        name,
        "Degraded PartitionDecreaseRefused",
        Duration::from_secs(60),
        |o: Option<&DynamicObject>| {
            o.and_then(|o| condition(o, "Degraded"))
                .is_some_and(|c| c["status"] == "True" && c["reason"] == "PartitionDecreaseRefused")
        },
    )
    .await?;
    println!(
        "decrease refused: {}",
        condition(&degraded, "Degraded")
            .map(|c| c["message"].to_string())
            .unwrap_or_default()
    );
    ensure!(
        kafka_partitions(&bootstrap, &topic)? == Some(4),
        "the topic was touched"
    );
    pipelines
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(patch_partitions(4)),
        )
        .await?;
    wait_for(
        &pipelines,
        name,
        "Degraded cleared",
        Duration::from_secs(60),
        |o: Option<&DynamicObject>| {
            o.and_then(|o| condition(o, "Degraded"))
                .is_some_and(|c| c["status"] == "False")
        },
    )
    .await?;

    // The HPA owns the API's replicas (minReplicas 2; the Deployment default
    // would be 1): they survive 10 reconciles.
    let reconciles = |body: &str| metric_sum(body, "paystream_operator_reconciles_total", |_| true);
    let start = reconciles(&metrics(ops_port).await?);
    poll_until("10 more reconciles", Duration::from_secs(120), || async {
        let now = reconciles(&metrics(ops_port).await?);
        Ok((now >= start + 10.0).then_some(()))
    })
    .await?;
    let api_dep = deployments.get("demo-api").await?;
    ensure!(
        api_dep.spec.as_ref().and_then(|s| s.replicas) == Some(2),
        "the HPA's replicas were overwritten: {:?}",
        api_dep.spec.map(|s| s.replicas)
    );
    let ours_own_replicas = api_dep.metadata.managed_fields.iter().flatten().any(|f| {
        f.manager.as_deref() == Some("paystream-operator")
            && f.fields_v1
                .as_ref()
                .is_some_and(|v| v.0["f:spec"].get("f:replicas").is_some())
    });
    ensure!(
        !ours_own_replicas,
        "the operator owns spec.replicas of an HPA-scaled Deployment"
    );

    // Idle: with the producer stopped (the shared database may be written by
    // others, which moves the binlog position), no writes to the API
    // (besides the leader Lease) over 20 s of reconciles every 2 s. The
    // first reconcile after the stop may still record the last position.
    drop(producer);
    let settle = reconciles(&metrics(ops_port).await?);
    poll_until(
        "2 reconciles after stopping the producer",
        Duration::from_secs(60),
        || async { Ok((reconciles(&metrics(ops_port).await?) >= settle + 2.0).then_some(())) },
    )
    .await?;
    let writes = |body: &str| {
        metric_sum(body, "paystream_operator_api_writes_total", |l| {
            !l.contains("Lease")
        })
    };
    let lease_writes = |body: &str| {
        metric_sum(body, "paystream_operator_api_writes_total", |l| {
            l.contains("Lease")
        })
    };
    let rv = |o: &DynamicObject| o.metadata.resource_version.clone();
    let before_obj = pipelines.get(name).await?;
    let body = metrics(ops_port).await?;
    let (w0, l0, r0) = (writes(&body), lease_writes(&body), reconciles(&body));
    let before_lines: Vec<String> = body
        .lines()
        .filter(|l| l.starts_with("paystream_operator_api_writes_total"))
        .map(str::to_string)
        .collect();
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let body = metrics(ops_port).await?;
    let (w1, l1, r1) = (writes(&body), lease_writes(&body), reconciles(&body));
    let after_obj = pipelines.get(name).await?;
    println!(
        "idle window {:?}: {} reconciles, {} API writes (excluding Lease), {} Lease renewals; resourceVersion {:?} -> {:?}",
        window.elapsed(),
        r1 - r0,
        w1 - w0,
        l1 - l0,
        rv(&before_obj),
        rv(&after_obj)
    );
    if w1 != w0 {
        let lines: Vec<&str> = body
            .lines()
            .filter(|l| l.starts_with("paystream_operator_api_writes_total"))
            .collect();
        bail!(
            "the operator wrote {} times while idle: before {before_lines:#?}, after {lines:#?}",
            w1 - w0
        );
    }

    // Rotating a Secret rolls the pods that read it, and only those.
    let secrets_hash = |d: &Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get("paystream.io/secrets-hash").cloned())
            .unwrap_or_default()
    };
    let api_before = secrets_hash(&deployments.get("demo-api").await?);
    let producer_before = secrets_hash(&deployments.get("demo-producer").await?);
    ensure!(!api_before.is_empty(), "no secrets-hash on the API's pods");
    secrets
        .patch(
            "api-jwt",
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "stringData": { "secret": "rotated-e2e-jwt-secret-0123456789abcdef" } }),
            ),
        )
        .await?;
    let rolled = std::time::Instant::now();
    poll_until(
        "the API rolled for the new Secret",
        Duration::from_secs(60),
        || async {
            let now = secrets_hash(&deployments.get("demo-api").await?);
            Ok((now != api_before).then_some(()))
        },
    )
    .await?;
    println!(
        "API pods rolled {:?} after the Secret changed",
        rolled.elapsed()
    );
    ensure!(
        secrets_hash(&deployments.get("demo-producer").await?) == producer_before,
        "the producer rolled for a Secret it does not read"
    );

    // Deletion cleans up the children; the topics are kept.
    pipelines.delete(name, &Default::default()).await?;
    poll_until("pipeline gone", Duration::from_secs(60), || async {
        Ok(pipelines.get_opt(name).await?.is_none().then_some(()))
    })
    .await?;
    let left = deployments
        .list(&ListParams::default().labels("paystream.io/pipeline=demo"))
        .await?;
    ensure!(
        left.items
            .iter()
            .all(|d| d.metadata.deletion_timestamp.is_some()),
        "Deployments left: {}",
        left.items.len()
    );
    ensure!(hpas.get_opt("demo-api").await?.is_none(), "HPA left");
    ensure!(
        kafka_partitions(&bootstrap, &topic)?.is_some(),
        "topics are kept unless deleteTopicsOnDelete"
    );
    Ok(())
}
