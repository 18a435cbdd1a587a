//! What a reconcile learns of the workloads: each Deployment's ready and
//! desired replicas, from the watch cache, and, only for a workload that is
//! not fully rolled out and ready, why: its pods are listed (one `list` by
//! the Deployment's label selector in the pipeline's namespace) and turned
//! into problems by [`crate::pod_problems`]. A healthy pipeline costs no
//! request here, and there is no Pod watch: at a thousand pipelines a
//! cluster-wide cache of pods would dwarf the rest. A pod list that fails
//! (e.g. RBAC without `list` on pods) is logged and shows nothing.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams};

use crate::children::Children;
use crate::pod_problems;
use crate::reconcile::names::{self, Workload};
use crate::status::{Problem, Replicas};

/// One workload as the cache shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Which workload.
    pub workload: Workload,
    /// Ready (available) and desired replicas.
    pub replicas: Replicas,
    /// The label selector of its pods, when they need a look: the rollout
    /// is not complete, by `kubectl rollout status`'s rule (fewer replicas
    /// available or up to date than desired, or old pods still there).
    pub unsettled: Option<String>,
}

/// What the cached Deployment `d` of `workload` says. Pure.
pub fn observed(pipeline: &str, workload: Workload, d: Option<&Deployment>) -> Observed {
    let Some(d) = d else {
        return Observed {
            workload,
            replicas: Replicas::default(),
            unsettled: None,
        };
    };
    let status = d.status.as_ref();
    let replicas = Replicas {
        ready: status.and_then(|s| s.available_replicas).unwrap_or(0),
        desired: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
    };
    let updated = status.and_then(|s| s.updated_replicas).unwrap_or(0);
    let total = status.and_then(|s| s.replicas).unwrap_or(0);
    let rolling =
        replicas.ready < replicas.desired || updated < replicas.desired || total > updated;
    let unsettled = rolling.then(|| {
        let labels = d
            .spec
            .as_ref()
            .and_then(|s| s.selector.match_labels.clone())
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| names::selector_labels(pipeline, workload));
        selector(&labels)
    });
    Observed {
        workload,
        replicas,
        unsettled,
    }
}

/// `k=v,k2=v2`. Pure.
fn selector(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The three workloads of `pipeline`, from the cache.
pub fn observe(children: &Children, ns: &str, pipeline: &str) -> [Observed; 3] {
    Workload::ALL.map(|w| {
        let d = children.deployment(ns, &names::workload_name(pipeline, w));
        observed(pipeline, w, d.as_deref())
    })
}

/// The problems the pods of the unsettled workloads show; one `list` per
/// such workload, all at once.
pub async fn problems(client: &Client, ns: &str, workloads: &[Observed]) -> Vec<Problem> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let lists = workloads.iter().filter_map(|o| {
        let selector = o.unsettled.as_deref()?;
        let api = api.clone();
        // From the apiserver's watch cache: a moment's staleness is fine.
        let params = ListParams::default().labels(selector).match_any();
        Some(async move { (o.workload, api.list(&params).await) })
    });
    let mut out = Vec::new();
    for (workload, listed) in futures::future::join_all(lists).await {
        match listed {
            Ok(pods) => out.extend(pod_problems::classify(workload, &pods.items)),
            Err(e) => tracing::warn!(
                error = %e,
                namespace = ns,
                workload = workload.as_str(),
                "cannot list the pods of a workload that is not ready"
            ),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(yaml: &str) -> Deployment {
        serde_yaml::from_str(yaml).unwrap()
    }

    const SPEC: &str = r#"
metadata: { name: demo-api, namespace: pay }
spec:
  replicas: 2
  selector: { matchLabels: { app.kubernetes.io/component: api, app.kubernetes.io/instance: demo } }
  template: {}
"#;

    #[test]
    fn a_ready_workload_needs_no_look() {
        let d = deployment(&format!(
            "{SPEC}status: {{ availableReplicas: 2, updatedReplicas: 2, replicas: 2 }}"
        ));
        let o = observed("demo", Workload::Api, Some(&d));
        assert_eq!(
            o.replicas,
            Replicas {
                ready: 2,
                desired: 2
            }
        );
        assert_eq!(o.unsettled, None);
        let missing = observed("demo", Workload::Api, None);
        assert_eq!(
            (missing.replicas, missing.unsettled),
            (Replicas::default(), None)
        );
    }

    #[test]
    fn a_workload_short_of_ready_or_updated_pods_is_looked_at_by_its_selector() {
        let want =
            Some("app.kubernetes.io/component=api,app.kubernetes.io/instance=demo".to_string());
        let not_ready = deployment(&format!(
            "{SPEC}status: {{ availableReplicas: 1, updatedReplicas: 2 }}"
        ));
        assert_eq!(
            observed("demo", Workload::Api, Some(&not_ready)).unsettled,
            want
        );
        // A stuck rollout: the old pods are available, the new one fails.
        let stuck = deployment(&format!(
            "{SPEC}status: {{ availableReplicas: 2, updatedReplicas: 1 }}"
        ));
        assert_eq!(
            observed("demo", Workload::Api, Some(&stuck)).unsettled,
            want
        );
        // The one seen on kind: every desired pod is new and "available"
        // counts the old one still serving, while the new one crash-loops.
        let old_pod_left = deployment(&format!(
            "{SPEC}status: {{ availableReplicas: 2, updatedReplicas: 2, replicas: 3 }}"
        ));
        assert_eq!(
            observed("demo", Workload::Api, Some(&old_pod_left)).unsettled,
            want
        );
        let no_status = deployment(SPEC);
        assert_eq!(
            observed("demo", Workload::Api, Some(&no_status)).unsettled,
            want
        );
    }

    #[test]
    fn without_a_cached_selector_the_operators_own_labels_select() {
        let d = deployment(
            "metadata: { name: demo-consumer }\nspec: { replicas: 1, selector: {}, template: {} }",
        );
        assert_eq!(
            observed("demo", Workload::Consumer, Some(&d)).unsettled,
            Some(selector(&names::selector_labels(
                "demo",
                Workload::Consumer
            )))
        );
    }
}
