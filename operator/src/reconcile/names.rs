//! Names and labels shared by every object of a pipeline: one place decides
//! that the consumer's Deployment is `<pipeline>-consumer` and which labels
//! select its pods, and the default image of each workload.

use std::collections::BTreeMap;

/// The three workloads of a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Workload {
    /// Binlog to Kafka.
    Producer,
    /// Kafka to Redis.
    Consumer,
    /// The payment API.
    Api,
}

impl Workload {
    /// Every workload, in a fixed order.
    pub const ALL: [Workload; 3] = [Workload::Producer, Workload::Consumer, Workload::Api];

    /// `producer`, `consumer` or `api`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Producer => "producer",
            Self::Consumer => "consumer",
            Self::Api => "api",
        }
    }
}

/// The field manager of every write the operator makes.
pub const MANAGER: &str = "paystream-operator";
/// Field manager used once to hand `spec.replicas` over to an HPA.
pub const HANDOVER_MANAGER: &str = "paystream-operator-handover";
/// Pod template annotation that changes with the configuration, rolling pods.
pub const CONFIG_HASH_ANNOTATION: &str = "paystream.io/config-hash";
/// Pod-template annotation: hash of the versions of the Secrets the pod
/// reads (environment and files); a rotated Secret changes it.
pub const SECRETS_HASH_ANNOTATION: &str = "paystream.io/secrets-hash";
/// Label naming the pipeline an object belongs to.
pub const PIPELINE_LABEL: &str = "paystream.io/pipeline";
/// Registry and repository prefix of the default images.
pub const IMAGE_REPOSITORY: &str = "ghcr.io/paystream/paystream";
/// Port of the operations server (`/metrics`, `/healthz`, `/readyz`).
pub const OPS_PORT: i32 = 9090;
/// Port of the payment API.
pub const API_PORT: i32 = 8080;

/// The default image of a workload: `ghcr.io/paystream/paystream-<w>:<tag>`.
pub fn default_image(workload: Workload, tag: &str) -> String {
    format!("{IMAGE_REPOSITORY}-{}:{tag}", workload.as_str())
}

/// The image tag matching this operator build.
pub fn own_tag() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// `<pipeline>-<workload>`: the Deployment, Service, HPA and PDB name.
pub fn workload_name(pipeline: &str, workload: Workload) -> String {
    format!("{pipeline}-{}", workload.as_str())
}

/// `<pipeline>-config`.
pub fn config_map_name(pipeline: &str) -> String {
    format!("{pipeline}-config")
}

/// `<pipeline>`: the workloads' ServiceAccount.
pub fn service_account_name(pipeline: &str) -> String {
    pipeline.to_string()
}

/// Labels on every object of the pipeline (selects them for cleanup).
pub fn common_labels(pipeline: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "paystream".into()),
        ("app.kubernetes.io/instance".into(), pipeline.into()),
        ("app.kubernetes.io/managed-by".into(), MANAGER.into()),
        (PIPELINE_LABEL.into(), pipeline.into()),
    ])
}

/// The label selector of a workload's pods (immutable once created).
pub fn selector_labels(pipeline: &str, workload: Workload) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/instance".into(), pipeline.into()),
        (
            "app.kubernetes.io/component".into(),
            workload.as_str().into(),
        ),
    ])
}

/// Common labels plus the component.
pub fn workload_labels(pipeline: &str, workload: Workload) -> BTreeMap<String, String> {
    let mut labels = common_labels(pipeline);
    labels.extend(selector_labels(pipeline, workload));
    labels
}

/// `paystream.io/pipeline=<name>`, to list a pipeline's objects.
pub fn pipeline_selector(pipeline: &str) -> String {
    format!("{PIPELINE_LABEL}={pipeline}")
}
