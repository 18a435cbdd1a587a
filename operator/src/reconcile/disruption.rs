//! PodDisruptionBudgets of the consumer and the API: a voluntary disruption
//! (a node drain) takes at most one pod of each at a time. The producer has
//! one replica and the Recreate strategy, so it has none.

use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::json;

use super::names::{self, Workload};
use super::validate::Validated;
use super::{BuildError, typed};

/// The PDBs. Pure.
pub fn build(
    p: &Validated,
    owner: &OwnerReference,
) -> Result<Vec<PodDisruptionBudget>, BuildError> {
    [Workload::Consumer, Workload::Api]
        .iter()
        .map(|&w| {
            typed(
                "PodDisruptionBudget",
                json!({
                    "apiVersion": "policy/v1",
                    "kind": "PodDisruptionBudget",
                    "metadata": {
                        "name": names::workload_name(&p.name, w),
                        "namespace": p.namespace,
                        "labels": names::workload_labels(&p.name, w),
                        "ownerReferences": [owner],
                    },
                    "spec": {
                        "maxUnavailable": 1,
                        "selector": { "matchLabels": names::selector_labels(&p.name, w) },
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
    fn one_budget_per_scalable_workload() {
        let v = validate(&sample()).unwrap();
        let pdbs = build(&v, &OwnerReference::default()).unwrap();
        let names: Vec<_> = pdbs
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        assert_eq!(names, vec!["demo-consumer", "demo-api"]);
    }
}
