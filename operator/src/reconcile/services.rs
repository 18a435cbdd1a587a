//! The pipeline's Services: the API (HTTP on 8080, metrics on 9090) and a
//! metrics Service for the producer and the consumer, for Prometheus to
//! scrape. The metrics Services are headless: Prometheus scrapes every pod
//! through the endpoints and nothing load-balances over them, so they take
//! no cluster IP from the cluster's range and no rule in kube-proxy on
//! every node (at 1,000 pipelines, 2,000 of each).

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
            let mut spec = json!({
                "selector": names::selector_labels(&p.name, w),
                "ports": ports,
            });
            if w != Workload::Api {
                spec["clusterIP"] = json!("None");
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
                    "spec": spec,
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
        assert!(!crate::reconcile::apply::headless(api));
    }

    #[test]
    fn metrics_services_are_headless() {
        let v = validate(&sample()).unwrap();
        let services = build(&v, &OwnerReference::default()).unwrap();
        let headless: Vec<_> = services
            .iter()
            .filter(|s| crate::reconcile::apply::headless(s))
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        assert_eq!(headless, vec!["demo-producer", "demo-consumer"]);
    }
}
