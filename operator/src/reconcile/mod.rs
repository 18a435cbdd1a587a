//! From a `PaymentPipeline` to the objects that run it, in the shape
//! dereference → validate → build → apply. [`validate`] checks what CEL cannot
//! and turns the spec into a [`validate::Validated`] pipeline; the builders
//! ([`configmap`], [`workloads`], [`services`], [`autoscaling`],
//! [`disruption`]) are pure functions from it to Kubernetes objects, gathered
//! by [`build`]; [`apply`] is the only part here that talks to the apiserver.
//! [`names`] holds the object names and labels every builder shares, and
//! [`env`] the environment variable names the workloads read.

pub mod apply;
pub mod autoscaling;
pub mod configmap;
pub mod disruption;
pub mod env;
pub mod names;
pub mod services;
pub mod validate;
pub mod workloads;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use self::validate::Validated;

/// A builder produced an object the Kubernetes types do not accept: a bug
/// in the builder, reported rather than panicking.
#[derive(Debug, thiserror::Error)]
#[error("building {what}: {source}")]
pub struct BuildError {
    what: String,
    #[source]
    source: serde_json::Error,
}

/// Turns a JSON object into a typed one, naming it on failure.
pub(crate) fn typed<T: serde::de::DeserializeOwned>(
    what: &str,
    value: serde_json::Value,
) -> Result<T, BuildError> {
    serde_json::from_value(value).map_err(|source| BuildError {
        what: what.to_string(),
        source,
    })
}

/// A Deployment and whether the operator owns its `spec.replicas`.
#[derive(Debug, Clone)]
pub struct DesiredDeployment {
    /// The object to apply (without `spec.replicas` when an HPA owns it).
    pub deployment: Deployment,
    /// True when an HPA scales it: replicas must be handed over, never set.
    pub hpa_scaled: bool,
}

/// Everything one pipeline needs in Kubernetes.
#[derive(Debug, Clone)]
pub struct Desired {
    /// The shared configuration.
    pub config_map: ConfigMap,
    /// The workloads' identity.
    pub service_account: ServiceAccount,
    /// Producer, consumer and API.
    pub deployments: Vec<DesiredDeployment>,
    /// API and metrics Services.
    pub services: Vec<Service>,
    /// HPAs of the workloads that scale on CPU.
    pub hpas: Vec<HorizontalPodAutoscaler>,
    /// HPAs that must not exist (autoscaling is off for that workload).
    pub stale_hpas: Vec<String>,
    /// Disruption budgets of the workloads that can run two or more pods.
    pub pdbs: Vec<PodDisruptionBudget>,
    /// Disruption budgets that must not exist (the workload runs one pod).
    pub stale_pdbs: Vec<String>,
}

/// What the builders need beyond the spec: the owner and observations.
#[derive(Debug, Clone)]
pub struct BuildInputs {
    /// Owner reference to the PaymentPipeline (controller=true).
    pub owner: OwnerReference,
    /// Total consumer lag, when known (lag-based scaling).
    pub consumer_lag: Option<i64>,
    /// Image tag of the default images.
    pub image_tag: String,
    /// `resourceVersion` of each Secret the spec names, by Secret name. A
    /// pod template carries a hash of the versions of the Secrets it reads,
    /// so rotating a Secret rolls exactly the pods that use it.
    pub secret_versions: std::collections::BTreeMap<String, String>,
}

/// Builds every object of a validated pipeline. Pure.
pub fn build(pipeline: &Validated, inputs: &BuildInputs) -> Result<Desired, BuildError> {
    let config_map = configmap::build(pipeline, &inputs.owner)?;
    let hash = configmap::config_hash(&config_map);
    let mut deployments = Vec::new();
    for workload in names::Workload::ALL {
        deployments.push(workloads::deployment(pipeline, workload, inputs, &hash)?);
    }
    let (hpas, stale_hpas) = autoscaling::hpas(pipeline, &inputs.owner)?;
    let (pdbs, stale_pdbs) = disruption::build(pipeline, &inputs.owner)?;
    Ok(Desired {
        service_account: workloads::service_account(pipeline, &inputs.owner)?,
        services: services::build(pipeline, &inputs.owner)?,
        pdbs,
        stale_pdbs,
        config_map,
        deployments,
        hpas,
        stale_hpas,
    })
}
