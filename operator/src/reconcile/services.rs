//! The pipeline's Services: the API (HTTP on 8080, metrics on 9090) and a
//! metrics Service for the producer and the consumer, for Prometheus to
//! scrape.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::json;

use super::names::{self, Workload};
use super::validate::Validated;
use super::{BuildError, typed};

/// One Service per workload, named like its Deployment. Pure.
pub fn build(p: &Validated, owner: &OwnerReference) -> Result<Vec<Service>, BuildError> {
    Workload::ALL
        .iter()
        .map(|&w| {
            let mut ports =
                vec![json!({ "name": "metrics", "port": names::OPS_PORT, "targetPort": "ops" })];
            if w == Workload::Api {
                ports.insert(
                    0,
                    json!({ "name": "http", "port": names::API_PORT, "targetPort": "http" }),
                );
            }
            typed(
                "Service",
                json!({
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {
                        "name": names::workload_name(&p.name, w),
                        "namespace": p.namespace,
                        "labels": names::workload_labels(&p.name, w),
                        "ownerReferences": [owner],
                    },
                    "spec": {
                        "selector": names::selector_labels(&p.name, w),
                        "ports": ports,
                    }
                }),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::validate::{tests::sample, validate};

    #[test]
    fn api_service_exposes_http_and_metrics() {
        let v = validate(&sample()).unwrap();
        let services = build(&v, &OwnerReference::default()).unwrap();
        assert_eq!(services.len(), 3);
        let api = services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some("demo-api"))
            .unwrap();
        let ports: Vec<i32> = api
            .spec
            .clone()
            .unwrap()
            .ports
            .unwrap()
            .iter()
            .map(|p| p.port)
            .collect();
        assert_eq!(ports, vec![8080, 9090]);
    }
}
