//! The PaymentPipeline resource as the e2e suites use it: its dynamic API
//! resource, server-side apply under the tests' field manager, and installing
//! the checked-in CRD.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, GroupVersionKind, Patch, PatchParams};
use kube::runtime::conditions;

use crate::{Cluster, repo_root, wait_for};

/// The field manager the tests apply with.
pub const MANAGER: &str = "paystream-e2e";

/// Forced server-side apply as the tests' field manager.
pub fn ssa() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

/// The PaymentPipeline kind, for `DynamicObject` APIs.
pub fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("paystream.io", "v1alpha1", "PaymentPipeline"),
        "paymentpipelines",
    )
}

/// Installs the checked-in CRD and waits until it is Established.
pub async fn install_crd(cluster: &Cluster) -> Result<()> {
    let text = std::fs::read_to_string(repo_root().join("crds/paymentpipeline.yaml"))?;
    let crd: CustomResourceDefinition = serde_yaml::from_str(&text)?;
    let crds = Api::<CustomResourceDefinition>::all(cluster.client());
    crds.patch("paymentpipelines.paystream.io", &ssa(), &Patch::Apply(&crd))
        .await
        .context("the apiserver refused crds/paymentpipeline.yaml")?;
    wait_for(
        &crds,
        "paymentpipelines.paystream.io",
        "CRD Established",
        Duration::from_secs(60),
        conditions::is_crd_established(),
    )
    .await?;
    Ok(())
}
