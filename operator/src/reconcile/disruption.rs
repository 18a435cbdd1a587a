//! PodDisruptionBudgets of the consumer and the API: a voluntary disruption
//! (a node drain) takes at most one pod of each at a time. A budget exists
//! only while its workload can run two or more pods: with one, a budget of
//! one unavailable pod allows exactly what no budget allows, so it would be
//! an object (and work for the disruption controller) with no effect. The
//! producer has one replica and the Recreate strategy, so it never has one.

use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::json;

use super::autoscaling::max_replicas;
use super::names::{self, Workload};
use super::validate::Validated;
use super::{BuildError, typed};

/// The PDBs to apply, and the names of PDBs that must not exist. Pure.
pub fn build(
    p: &Validated,
    owner: &OwnerReference,
) -> Result<(Vec<PodDisruptionBudget>, Vec<String>), BuildError> {
    let mut keep = Vec::new();
    let mut stale = Vec::new();
    for w in [Workload::Consumer, Workload::Api] {
        let name = names::workload_name(&p.name, w);
        if max_replicas(p, w) < 2 {
            stale.push(name);
            continue;
        }
        keep.push(typed(
            "PodDisruptionBudget",
            json!({
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {
                    "name": name,
                    "namespace": p.namespace,
                    "labels": names::workload_labels(&p.name, w),
                    "ownerReferences": [owner],
                },
                "spec": {
                    "maxUnavailable": 1,
                    "selector": { "matchLabels": names::selector_labels(&p.name, w) },
                }
            }),
        )?);
    }
    Ok((keep, stale))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::validate::{tests::sample, validate};

    fn names_of(pdbs: &[PodDisruptionBudget]) -> Vec<String> {
        pdbs.iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect()
    }

    #[test]
    fn one_budget_per_workload_that_can_run_two_pods() {
        // The consumer autoscales up to 4, the API runs 2.
        let v = validate(&sample()).unwrap();
        let (keep, stale) = build(&v, &OwnerReference::default()).unwrap();
        assert_eq!(names_of(&keep), vec!["demo-consumer", "demo-api"]);
        assert!(stale.is_empty());
    }

    #[test]
    fn a_single_pod_workload_has_no_budget() {
        let mut p = sample();
        p.spec.consumer.autoscaling = None;
        p.spec.consumer.replicas = Some(1);
        p.spec.api.replicas = Some(1);
        let v = validate(&p).unwrap();
        let (keep, stale) = build(&v, &OwnerReference::default()).unwrap();
        assert!(keep.is_empty());
        assert_eq!(stale, vec!["demo-consumer", "demo-api"]);
    }
}
