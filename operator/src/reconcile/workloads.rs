//! The Deployments of the producer (one replica, Recreate), the consumer and
//! the API, and their ServiceAccount. Each pod template carries the config
//! hash, so a configuration change rolls the pods. `spec.replicas` is left out
//! when an HPA owns it. A container that exits with an error leaves its last
//! log lines as its termination message (`FallbackToLogsOnError`), which the
//! status quotes; one an HPA scales on CPU always has a CPU request, which
//! its utilization is measured against.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ResourceRequirements, ServiceAccount};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::autoscaling::{ReplicaPolicy, replica_policy};
use super::names::{self, Workload};
use super::validate::Validated;
use super::{BuildError, BuildInputs, DesiredDeployment, configmap, env, typed};
use crate::crd::{CredentialsSecretRef, SecretKeyRef};

/// The CPU request of a container an HPA scales on CPU when the spec gives
/// none: without one the HPA cannot compute a utilization and never scales.
pub const DEFAULT_HPA_CPU_REQUEST: &str = "100m";

/// The container's `resources`: the spec's, plus [`DEFAULT_HPA_CPU_REQUEST`]
/// when an HPA scales it on CPU and the spec requests no CPU. Pure.
fn container_resources(
    resources: Option<&ResourceRequirements>,
    hpa_scaled: bool,
) -> Option<Value> {
    let mut r = resources.cloned().unwrap_or_default();
    if hpa_scaled {
        let requests = r.requests.get_or_insert_with(Default::default);
        requests
            .entry("cpu".to_string())
            .or_insert_with(|| Quantity(DEFAULT_HPA_CPU_REQUEST.into()));
    }
    (resources.is_some() || hpa_scaled).then(|| json!(r))
}

/// The workloads' ServiceAccount. Pure.
pub fn service_account(
    p: &Validated,
    owner: &OwnerReference,
) -> Result<ServiceAccount, BuildError> {
    typed(
        "ServiceAccount",
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {
                "name": names::service_account_name(&p.name),
                "namespace": p.namespace,
                "labels": names::common_labels(&p.name),
                "ownerReferences": [owner],
            },
            "automountServiceAccountToken": false,
        }),
    )
}

fn secret_env(name: &str, secret: &str, key: &str, optional: bool) -> Value {
    json!({
        "name": name,
        "valueFrom": { "secretKeyRef": { "name": secret, "key": key, "optional": optional } }
    })
}

fn credentials_env(
    r: &CredentialsSecretRef,
    user: &str,
    password: &str,
    user_optional: bool,
) -> Vec<Value> {
    vec![
        secret_env(user, &r.name, &r.username_key, user_optional),
        secret_env(password, &r.name, &r.password_key, false),
    ]
}

/// A workload's own environment: Secret-backed credentials and the API's
/// token settings (the rest comes from the ConfigMap).
fn secrets_for(p: &Validated, workload: Workload) -> Vec<Value> {
    let s = &p.spec;
    let mut out = Vec::new();
    // The producer reads the binlog as the CDC user; the API reads and
    // writes as the application user (the CDC one until it is set).
    let database = match workload {
        Workload::Producer => Some(&s.source.credentials_secret_ref),
        Workload::Api => Some(
            s.api
                .database_credentials_secret_ref
                .as_ref()
                .unwrap_or(&s.source.credentials_secret_ref),
        ),
        Workload::Consumer => None,
    };
    if let Some(r) = database {
        out.extend(credentials_env(
            r,
            env::MYSQL_USER,
            env::MYSQL_PASSWORD,
            false,
        ));
    }
    if workload == Workload::Api {
        if let Some(r) = &s.api.jwt_secret_ref {
            out.push(secret_env(env::JWT_SECRET, &r.name, &r.key, false));
        }
        if s.api.jwt_public_key_ref.is_some() {
            out.push(json!({ "name": env::JWT_ALGORITHM, "value": "rs256" }));
            out.push(json!({
                "name": env::JWT_PUBLIC_KEY_FILE,
                "value": configmap::JWT_PUBLIC_KEY_PATH,
            }));
        }
    }
    if let Some(r) = &s.kafka.credentials_secret_ref {
        out.extend(credentials_env(
            r,
            env::KAFKA_SASL_USERNAME,
            env::KAFKA_SASL_PASSWORD,
            false,
        ));
    }
    if matches!(workload, Workload::Consumer | Workload::Api)
        && let Some(r) = &s.redis.credentials_secret_ref
    {
        out.extend(credentials_env(
            r,
            env::REDIS_USERNAME,
            env::REDIS_PASSWORD,
            true,
        ));
    }
    // No static group membership for consumer pods: a replaced pod has a
    // new name, so its partitions would wait out the old member's session;
    // a plain member leaves the group when it stops and a dead one is gone
    // after the consumer's 6 s session (docs/adr/0011-consumer-takeover.md).
    out
}

/// The Secret keys a workload reads as files (CA certificates, the RS256
/// public key): its pod volumes and the container's mounts. Each lands at
/// the path its `*_PATH` constant names. Pure.
fn mounted_secrets(p: &Validated, workload: Workload) -> (Vec<Value>, Vec<Value>) {
    let s = &p.spec;
    let mut files: Vec<(&str, &SecretKeyRef, &str)> = Vec::new();
    if matches!(workload, Workload::Producer | Workload::Api)
        && let Some(ca) = &s.source.tls.ca_secret_ref
    {
        files.push(("mysql-ca", ca, configmap::MYSQL_CA_PATH));
    }
    if matches!(workload, Workload::Consumer | Workload::Api)
        && let Some(ca) = &s.redis.ca_secret_ref
    {
        files.push(("redis-ca", ca, configmap::REDIS_CA_PATH));
    }
    if workload == Workload::Api
        && let Some(key) = &s.api.jwt_public_key_ref
    {
        files.push(("jwt-public-key", key, configmap::JWT_PUBLIC_KEY_PATH));
    }
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    for (name, r, path) in files {
        let (dir, file) = path.rsplit_once('/').unwrap_or(("/", path));
        volumes.push(json!({
            "name": name,
            "secret": { "secretName": r.name, "items": [{ "key": r.key, "path": file }] }
        }));
        mounts.push(json!({ "name": name, "mountPath": dir, "readOnly": true }));
    }
    (volumes, mounts)
}

/// The names of the Secrets a pod spec reads, through `secretKeyRef`s or
/// Secret volumes. Pure.
pub fn secrets_read(pod_spec: &Value) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for c in pod_spec["containers"].as_array().into_iter().flatten() {
        for e in c["env"].as_array().into_iter().flatten() {
            if let Some(n) = e["valueFrom"]["secretKeyRef"]["name"].as_str() {
                names.insert(n.to_string());
            }
        }
    }
    for v in pod_spec["volumes"].as_array().into_iter().flatten() {
        if let Some(n) = v["secret"]["secretName"].as_str() {
            names.insert(n.to_string());
        }
    }
    names
}

/// SHA-256 (hex, 16 characters) of `name=version` for each Secret the pod
/// reads; an unknown version counts as empty. Pure.
fn secrets_hash(pod_spec: &Value, versions: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for name in secrets_read(pod_spec) {
        let version = versions.get(&name).map(String::as_str).unwrap_or("");
        h.update(format!("{name}={version}\n").as_bytes());
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    hex[..16].to_string()
}

/// One workload's Deployment. Pure.
pub fn deployment(
    p: &Validated,
    workload: Workload,
    inputs: &BuildInputs,
    config_hash: &str,
) -> Result<DesiredDeployment, BuildError> {
    let s = &p.spec;
    let (image, resources) = match workload {
        Workload::Producer => (&s.producer.image, &s.producer.resources),
        Workload::Consumer => (&s.consumer.image, &s.consumer.resources),
        Workload::Api => (&s.api.image, &s.api.resources),
    };
    let image = image
        .clone()
        .unwrap_or_else(|| names::default_image(workload, &inputs.image_tag));
    let name = names::workload_name(&p.name, workload);
    let mut ports = vec![json!({ "name": "ops", "containerPort": names::OPS_PORT })];
    if workload == Workload::Api {
        ports.push(json!({ "name": "http", "containerPort": names::API_PORT }));
    }
    let mut container = json!({
        "name": workload.as_str(),
        "image": image,
        "envFrom": [{ "configMapRef": { "name": names::config_map_name(&p.name) } }],
        "env": secrets_for(p, workload),
        "ports": ports,
        "livenessProbe": { "httpGet": { "path": "/healthz", "port": "ops" }, "periodSeconds": 10 },
        "readinessProbe": { "httpGet": { "path": "/readyz", "port": "ops" }, "periodSeconds": 5 },
        // A binary that exits with an error leaves its last log lines (its
        // error) where the status finds them.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "capabilities": { "drop": ["ALL"] }
        },
    });
    let policy = replica_policy(p, workload, inputs.consumer_lag);
    let hpa_scaled = matches!(policy, ReplicaPolicy::Hpa { .. });
    if let Some(r) = container_resources(resources.as_ref(), hpa_scaled) {
        container["resources"] = r;
    }
    let mut pod_spec = json!({
        "serviceAccountName": names::service_account_name(&p.name),
        "containers": [container],
    });
    if !s.placement.node_selector.is_empty() {
        pod_spec["nodeSelector"] = json!(s.placement.node_selector);
    }
    if !s.placement.tolerations.is_empty() {
        pod_spec["tolerations"] = json!(s.placement.tolerations);
    }
    let (volumes, mounts) = mounted_secrets(p, workload);
    if !volumes.is_empty() {
        pod_spec["volumes"] = json!(volumes);
        pod_spec["containers"][0]["volumeMounts"] = json!(mounts);
    }
    let secrets_hash = secrets_hash(&pod_spec, &inputs.secret_versions);
    let mut spec = json!({
        "selector": { "matchLabels": names::selector_labels(&p.name, workload) },
        "template": {
            "metadata": {
                "labels": names::workload_labels(&p.name, workload),
                "annotations": {
                    names::CONFIG_HASH_ANNOTATION: config_hash,
                    names::SECRETS_HASH_ANNOTATION: secrets_hash,
                },
            },
            "spec": pod_spec,
        },
    });
    if workload == Workload::Producer {
        spec["strategy"] = json!({ "type": "Recreate" });
    }
    if let ReplicaPolicy::Fixed(n) = policy {
        spec["replicas"] = json!(n);
    }
    let deployment = typed(
        "Deployment",
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": name,
                "namespace": p.namespace,
                "labels": names::workload_labels(&p.name, workload),
                "ownerReferences": [inputs.owner],
            },
            "spec": spec,
        }),
    )?;
    Ok(DesiredDeployment {
        deployment,
        hpa_scaled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::validate::{tests::sample, validate};
    use crate::reconcile::{build, configmap};

    pub(crate) fn inputs() -> BuildInputs {
        BuildInputs {
            owner: OwnerReference {
                api_version: "paystream.io/v1alpha1".into(),
                kind: "PaymentPipeline".into(),
                name: "demo".into(),
                uid: "u-1".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
            consumer_lag: None,
            image_tag: "0.1.0".into(),
            secret_versions: BTreeMap::from([
                ("db-cdc".to_string(), "1".to_string()),
                ("db-app".to_string(), "2".to_string()),
                ("api-jwt".to_string(), "3".to_string()),
                ("redis".to_string(), "4".to_string()),
            ]),
        }
    }

    #[test]
    fn producer_is_one_replica_recreate_with_probes_and_secrets() {
        let v = validate(&sample()).unwrap();
        let d = deployment(&v, Workload::Producer, &inputs(), "abc").unwrap();
        let spec = d.deployment.spec.unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.strategy.unwrap().type_.as_deref(), Some("Recreate"));
        let template = spec.template;
        let ann = template.metadata.unwrap().annotations.unwrap();
        assert_eq!(ann[names::CONFIG_HASH_ANNOTATION], "abc");
        let c = &template.spec.unwrap().containers[0];
        assert_eq!(
            c.image.as_deref(),
            Some("ghcr.io/paystream/paystream-producer:0.1.0")
        );
        let env = c.env.clone().unwrap();
        let pw = env.iter().find(|e| e.name == env::MYSQL_PASSWORD).unwrap();
        let r = pw
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!((r.name.as_str(), r.key.as_str()), ("db-cdc", "password"));
        assert!(c.readiness_probe.is_some() && c.liveness_probe.is_some());
        assert_eq!(
            d.deployment.metadata.owner_references.unwrap()[0].controller,
            Some(true)
        );
    }

    fn secret_of(
        c: &k8s_openapi::api::core::v1::Container,
        name: &str,
    ) -> Option<(String, String)> {
        let e = c.env.as_ref()?.iter().find(|e| e.name == name)?;
        let r = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
        Some((r.name.clone(), r.key.clone()))
    }

    #[test]
    fn the_api_gets_the_app_user_and_the_jwt_secret_not_the_cdc_user() {
        let v = validate(&sample()).unwrap();
        let api = deployment(&v, Workload::Api, &inputs(), "h").unwrap();
        let api_pod = pod(&api);
        let c = &api_pod.containers[0];
        assert_eq!(
            secret_of(c, env::MYSQL_USER),
            Some(("db-app".into(), "username".into()))
        );
        assert_eq!(
            secret_of(c, env::MYSQL_PASSWORD),
            Some(("db-app".into(), "password".into()))
        );
        assert_eq!(
            secret_of(c, env::JWT_SECRET),
            Some(("api-jwt".into(), "secret".into()))
        );
        let producer = deployment(&v, Workload::Producer, &inputs(), "h").unwrap();
        let producer_pod = pod(&producer);
        let c = &producer_pod.containers[0];
        assert_eq!(
            secret_of(c, env::MYSQL_USER),
            Some(("db-cdc".into(), "username".into()))
        );
        assert_eq!(secret_of(c, env::JWT_SECRET), None);
    }

    fn pod(d: &DesiredDeployment) -> k8s_openapi::api::core::v1::PodSpec {
        d.deployment.spec.clone().unwrap().template.spec.unwrap()
    }

    fn plain_env(c: &k8s_openapi::api::core::v1::Container, name: &str) -> Option<String> {
        c.env
            .as_ref()?
            .iter()
            .find(|e| e.name == name)?
            .value
            .clone()
    }

    fn mounted(p: &k8s_openapi::api::core::v1::PodSpec) -> Vec<(String, String, String)> {
        let mounts = p.containers[0].volume_mounts.clone().unwrap_or_default();
        p.volumes
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|v| {
                let secret = v.secret.unwrap();
                let item = secret.items.unwrap().remove(0);
                let dir = mounts.iter().find(|m| m.name == v.name).unwrap();
                (
                    secret.secret_name.unwrap(),
                    item.key,
                    format!("{}/{}", dir.mount_path, item.path),
                )
            })
            .collect()
    }

    fn secret_key(name: &str, key: &str) -> Option<SecretKeyRef> {
        Some(SecretKeyRef {
            name: name.into(),
            key: key.into(),
        })
    }

    #[test]
    fn rs256_mounts_the_public_key_for_the_api_only() {
        let mut p = sample();
        p.spec.api.jwt_secret_ref = None;
        p.spec.api.jwt_public_key_ref = secret_key("idp", "public.pem");
        let v = validate(&p).unwrap();
        let api = deployment(&v, Workload::Api, &inputs(), "h").unwrap();
        let spec = pod(&api);
        let c = &spec.containers[0];
        assert_eq!(plain_env(c, env::JWT_ALGORITHM).as_deref(), Some("rs256"));
        assert_eq!(
            plain_env(c, env::JWT_PUBLIC_KEY_FILE).as_deref(),
            Some(configmap::JWT_PUBLIC_KEY_PATH)
        );
        assert_eq!(secret_of(c, env::JWT_SECRET), None);
        assert!(mounted(&spec).contains(&(
            "idp".into(),
            "public.pem".into(),
            configmap::JWT_PUBLIC_KEY_PATH.into()
        )));
        let consumer = deployment(&v, Workload::Consumer, &inputs(), "h").unwrap();
        assert!(mounted(&pod(&consumer)).is_empty());
        assert_eq!(
            plain_env(&pod(&consumer).containers[0], env::JWT_ALGORITHM),
            None
        );
    }

    #[test]
    fn the_redis_ca_reaches_the_consumer_and_the_api() {
        let mut p = sample();
        p.spec.redis.tls = true;
        p.spec.redis.ca_secret_ref = secret_key("redis-ca", "ca.crt");
        let v = validate(&p).unwrap();
        let want = (
            "redis-ca".to_string(),
            "ca.crt".to_string(),
            configmap::REDIS_CA_PATH.to_string(),
        );
        for w in [Workload::Consumer, Workload::Api] {
            let d = deployment(&v, w, &inputs(), "h").unwrap();
            assert!(mounted(&pod(&d)).contains(&want), "{w:?}");
        }
        let producer = deployment(&v, Workload::Producer, &inputs(), "h").unwrap();
        assert!(!mounted(&pod(&producer)).contains(&want));
        let data = configmap::data(&v);
        assert_eq!(data[env::REDIS_TLS_CA], configmap::REDIS_CA_PATH);
        assert_eq!(data[env::REDIS_TLS], "true");
    }

    fn secrets_annotation(d: &DesiredDeployment) -> String {
        d.deployment
            .spec
            .clone()
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()[names::SECRETS_HASH_ANNOTATION]
            .clone()
    }

    #[test]
    fn a_rotated_secret_rolls_only_the_pods_that_read_it() {
        let v = validate(&sample()).unwrap();
        let before = inputs();
        let mut after = inputs();
        after.secret_versions.insert("api-jwt".into(), "30".into());
        let hashes = |i: &BuildInputs| {
            Workload::ALL.map(|w| secrets_annotation(&deployment(&v, w, i, "h").unwrap()))
        };
        let (b, a) = (hashes(&before), hashes(&after));
        for (i, w) in Workload::ALL.iter().enumerate() {
            assert_eq!(b[i] != a[i], *w == Workload::Api, "{w:?}");
        }
        // The same versions give the same hash: no rollout, no write.
        assert_eq!(hashes(&inputs()), b);
        // The CDC user's password rolls the producer, not the consumer.
        let mut cdc = inputs();
        cdc.secret_versions.insert("db-cdc".into(), "10".into());
        let c = hashes(&cdc);
        assert_ne!(c[0], b[0]);
        assert_eq!(c[1], b[1]);
    }

    #[test]
    fn hpa_scaled_workloads_leave_replicas_out() {
        let v = validate(&sample()).unwrap();
        let consumer = deployment(&v, Workload::Consumer, &inputs(), "h").unwrap();
        assert!(consumer.hpa_scaled);
        assert_eq!(consumer.deployment.spec.unwrap().replicas, None);
        let api = deployment(&v, Workload::Api, &inputs(), "h").unwrap();
        assert!(!api.hpa_scaled);
        assert_eq!(api.deployment.spec.unwrap().replicas, Some(2));
    }

    #[test]
    fn containers_leave_their_last_logs_on_error() {
        let v = validate(&sample()).unwrap();
        for w in Workload::ALL {
            let d = deployment(&v, w, &inputs(), "h").unwrap();
            assert_eq!(
                pod(&d).containers[0].termination_message_policy.as_deref(),
                Some("FallbackToLogsOnError"),
                "{w:?}"
            );
        }
    }

    fn requests(d: &DesiredDeployment) -> Option<BTreeMap<String, String>> {
        let r = pod(d).containers[0].resources.clone()?;
        Some(
            r.requests
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect(),
        )
    }

    #[test]
    fn a_cpu_scaled_workload_always_requests_cpu() {
        let mut p = sample();
        // The consumer scales on CPU; the API runs fixed replicas.
        let v = validate(&p).unwrap();
        let consumer = deployment(&v, Workload::Consumer, &inputs(), "h").unwrap();
        assert_eq!(
            requests(&consumer),
            Some(BTreeMap::from([(
                "cpu".to_string(),
                DEFAULT_HPA_CPU_REQUEST.to_string()
            )]))
        );
        for w in [Workload::Producer, Workload::Api] {
            let d = deployment(&v, w, &inputs(), "h").unwrap();
            assert_eq!(requests(&d), None, "{w:?}: nothing invented");
        }
        // The spec's own request and the rest of its resources are kept.
        p.spec.consumer.resources = Some(
            serde_json::from_value(json!({
                "requests": { "cpu": "250m", "memory": "128Mi" },
                "limits": { "memory": "256Mi" }
            }))
            .unwrap(),
        );
        p.spec.api.replicas = None;
        p.spec.api.autoscaling = serde_json::from_value(json!({
            "minReplicas": 2, "maxReplicas": 4, "targetCpuUtilization": 70
        }))
        .unwrap();
        p.spec.api.resources =
            serde_json::from_value(json!({ "requests": { "memory": "64Mi" } })).unwrap();
        let v = validate(&p).unwrap();
        let consumer = deployment(&v, Workload::Consumer, &inputs(), "h").unwrap();
        assert_eq!(
            pod(&consumer).containers[0].resources,
            p.spec.consumer.resources
        );
        let api = deployment(&v, Workload::Api, &inputs(), "h").unwrap();
        assert_eq!(
            requests(&api),
            Some(BTreeMap::from([
                ("cpu".to_string(), DEFAULT_HPA_CPU_REQUEST.to_string()),
                ("memory".to_string(), "64Mi".to_string())
            ]))
        );
    }

    #[test]
    fn a_config_change_changes_every_pod_template() {
        let before = build(&validate(&sample()).unwrap(), &inputs()).unwrap();
        let mut p = sample();
        p.spec.redis.endpoints = vec!["r2:6379".into()];
        let after = build(&validate(&p).unwrap(), &inputs()).unwrap();
        assert_ne!(
            configmap::config_hash(&before.config_map),
            configmap::config_hash(&after.config_map)
        );
        for (b, a) in before.deployments.iter().zip(&after.deployments) {
            let ann = |d: &DesiredDeployment| {
                d.deployment
                    .spec
                    .clone()
                    .unwrap()
                    .template
                    .metadata
                    .unwrap()
                    .annotations
                    .unwrap()[names::CONFIG_HASH_ANNOTATION]
                    .clone()
            };
            assert_ne!(ann(b), ann(a));
        }
    }
}
