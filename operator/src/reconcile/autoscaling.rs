//! Who sets each workload's replicas. Fixed replicas are written by the
//! operator; CPU autoscaling is an HPA (autoscaling/v2) that owns
//! `spec.replicas`; the consumer's lag mode is computed here from the
//! measured lag, so no external autoscaler (KEDA) is needed. The consumer
//! never gets more replicas than the change topics have partitions.

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::json;

use super::names::{self, Workload};
use super::validate::Validated;
use super::{BuildError, typed};
use crate::crd::ScalableWorkloadSpec;

/// How a workload's replica count is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaPolicy {
    /// The operator writes this count.
    Fixed(i32),
    /// An HPA scales on CPU between these bounds.
    Hpa {
        /// Fewest replicas.
        min: i32,
        /// Most replicas.
        max: i32,
        /// Target CPU utilization, percent.
        cpu: i32,
        /// `behavior.scaleDown.stabilizationWindowSeconds`; the HPA's
        /// default (300) when `None`.
        scale_down_stabilization: Option<i32>,
    },
}

/// Replicas for a lag target: `ceil(lag / per_replica)` within
/// `[min, max]`; `min` while the lag is unknown. Pure.
pub fn lag_replicas(lag: Option<i64>, per_replica: i64, min: i32, max: i32) -> i32 {
    let max = max.max(1);
    let min = min.clamp(1, max);
    let Some(lag) = lag else { return min };
    let per = per_replica.max(1);
    let wanted = lag.max(0).saturating_add(per - 1) / per;
    i32::try_from(wanted).unwrap_or(i32::MAX).clamp(min, max)
}

fn workload_spec(p: &Validated, workload: Workload) -> Option<ScalableWorkloadSpec> {
    match workload {
        Workload::Producer => None,
        Workload::Consumer => Some(p.spec.consumer.clone()),
        Workload::Api => Some(p.spec.api.scaling()),
    }
}

/// The most replicas any policy may give a workload: the consumer never
/// gets more than the change topics have partitions. Pure.
fn replica_cap(p: &Validated, workload: Workload) -> i32 {
    if workload == Workload::Consumer {
        p.consumer_cap.max(1)
    } else {
        i32::MAX
    }
}

/// The replica policy of a workload. Pure.
pub fn replica_policy(p: &Validated, workload: Workload, lag: Option<i64>) -> ReplicaPolicy {
    let Some(w) = workload_spec(p, workload) else {
        return ReplicaPolicy::Fixed(1);
    };
    let cap = replica_cap(p, workload);
    match &w.autoscaling {
        None => ReplicaPolicy::Fixed(w.replicas.unwrap_or(1).min(cap)),
        Some(a) => {
            let max = a.max_replicas.min(cap).max(1);
            let min = a.min_replicas.clamp(1, max);
            match (a.target_lag_per_replica, a.target_cpu_utilization) {
                (Some(per), _) if workload == Workload::Consumer => {
                    ReplicaPolicy::Fixed(lag_replicas(lag, per, min, max))
                }
                (_, cpu) => ReplicaPolicy::Hpa {
                    min,
                    max,
                    cpu: cpu.unwrap_or(80),
                    scale_down_stabilization: a.scale_down_stabilization_seconds,
                },
            }
        }
    }
}

/// The most replicas a workload can run under its policy: the fixed
/// count, or the autoscaling maximum (lag or CPU), after the consumer's cap
/// at the partitions. Pure.
pub fn max_replicas(p: &Validated, workload: Workload) -> i32 {
    match replica_policy(p, workload, None) {
        ReplicaPolicy::Hpa { max, .. } => max,
        ReplicaPolicy::Fixed(n) => match workload_spec(p, workload)
            .as_ref()
            .and_then(|w| w.autoscaling.as_ref())
        {
            // Lag mode: the count moves with the lag up to the maximum.
            Some(a) => a.max_replicas.min(replica_cap(p, workload)).max(n),
            None => n,
        },
    }
}

/// `hpa` with `behavior.scaleDown.stabilizationWindowSeconds` when
/// `seconds` is set; without `behavior` (the HPA's defaults) otherwise.
fn with_behavior(mut hpa: serde_json::Value, seconds: Option<i32>) -> serde_json::Value {
    if let Some(s) = seconds {
        hpa["spec"]["behavior"] = json!({ "scaleDown": { "stabilizationWindowSeconds": s } });
    }
    hpa
}

/// The HPAs to apply, and the names of HPAs that must not exist. Pure.
pub fn hpas(
    p: &Validated,
    owner: &OwnerReference,
) -> Result<(Vec<HorizontalPodAutoscaler>, Vec<String>), BuildError> {
    let mut keep = Vec::new();
    let mut stale = Vec::new();
    for workload in [Workload::Consumer, Workload::Api] {
        let name = names::workload_name(&p.name, workload);
        match replica_policy(p, workload, None) {
            ReplicaPolicy::Hpa {
                min,
                max,
                cpu,
                scale_down_stabilization,
            } => keep.push(typed(
                "HorizontalPodAutoscaler",
                with_behavior(json!({
                    "apiVersion": "autoscaling/v2",
                    "kind": "HorizontalPodAutoscaler",
                    "metadata": {
                        "name": name,
                        "namespace": p.namespace,
                        "labels": names::workload_labels(&p.name, workload),
                        "ownerReferences": [owner],
                    },
                    "spec": {
                        "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": name },
                        "minReplicas": min,
                        "maxReplicas": max,
                        "metrics": [{
                            "type": "Resource",
                            "resource": {
                                "name": "cpu",
                                "target": { "type": "Utilization", "averageUtilization": cpu }
                            }
                        }]
                    }
                }), scale_down_stabilization),
            )?),
            ReplicaPolicy::Fixed(_) => stale.push(name),
        }
    }
    Ok((keep, stale))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::AutoscalingSpec;
    use crate::reconcile::validate::{tests::sample, validate};

    #[test]
    fn lag_replicas_round_up_and_stay_in_bounds() {
        assert_eq!(lag_replicas(None, 100, 2, 5), 2);
        assert_eq!(lag_replicas(Some(0), 100, 1, 5), 1);
        assert_eq!(lag_replicas(Some(101), 100, 1, 5), 2);
        assert_eq!(lag_replicas(Some(1_000_000), 100, 1, 5), 5);
        assert_eq!(lag_replicas(Some(-3), 100, 1, 5), 1);
        assert_eq!(lag_replicas(Some(i64::MAX), 1, 1, 4), 4);
    }

    #[test]
    fn consumer_is_capped_at_the_partitions() {
        let v = validate(&sample()).unwrap();
        // maxReplicas 10, 4 partitions.
        assert_eq!(
            replica_policy(&v, Workload::Consumer, None),
            ReplicaPolicy::Hpa {
                min: 1,
                max: 4,
                cpu: 70,
                scale_down_stabilization: None,
            }
        );
        let mut p = sample();
        p.spec.consumer.autoscaling = Some(AutoscalingSpec {
            min_replicas: 1,
            max_replicas: 8,
            target_cpu_utilization: None,
            target_lag_per_replica: Some(1000),
            scale_down_stabilization_seconds: None,
        });
        let v = validate(&p).unwrap();
        assert_eq!(
            replica_policy(&v, Workload::Consumer, Some(1_000_000)),
            ReplicaPolicy::Fixed(4)
        );
        assert_eq!(
            replica_policy(&v, Workload::Consumer, Some(2500)),
            ReplicaPolicy::Fixed(3)
        );
        p.spec.consumer.autoscaling = None;
        p.spec.consumer.replicas = Some(9);
        let v = validate(&p).unwrap();
        assert_eq!(
            replica_policy(&v, Workload::Consumer, None),
            ReplicaPolicy::Fixed(4)
        );
    }

    #[test]
    fn max_replicas_follow_the_policy_and_the_cap() {
        let mut p = sample();
        // CPU autoscaling up to 10, capped at the 4 partitions.
        let v = validate(&p).unwrap();
        assert_eq!(max_replicas(&v, Workload::Consumer), 4);
        assert_eq!(max_replicas(&v, Workload::Producer), 1);
        p.spec.consumer.autoscaling = Some(AutoscalingSpec {
            min_replicas: 1,
            max_replicas: 3,
            target_cpu_utilization: None,
            target_lag_per_replica: Some(1000),
            scale_down_stabilization_seconds: None,
        });
        let v = validate(&p).unwrap();
        assert_eq!(max_replicas(&v, Workload::Consumer), 3);
        p.spec.consumer.autoscaling = None;
        p.spec.consumer.replicas = Some(1);
        let v = validate(&p).unwrap();
        assert_eq!(max_replicas(&v, Workload::Consumer), 1);
        p.spec.consumer.replicas = Some(2);
        let v = validate(&p).unwrap();
        assert_eq!(max_replicas(&v, Workload::Consumer), 2);
    }

    #[test]
    fn hpas_exist_only_for_cpu_autoscaling() {
        let v = validate(&sample()).unwrap();
        let owner = OwnerReference::default();
        let (keep, stale) = hpas(&v, &owner).unwrap();
        assert_eq!(keep.len(), 1);
        let spec = keep[0].spec.clone().unwrap();
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(1), 4));
        assert_eq!(spec.behavior, None, "unset: the HPA's own default (300 s)");
        assert_eq!(stale, vec!["demo-api"]);
    }

    #[test]
    fn scale_down_stabilization_sets_the_hpas_behavior() {
        let mut p = sample();
        if let Some(a) = p.spec.consumer.autoscaling.as_mut() {
            a.scale_down_stabilization_seconds = Some(60);
        }
        p.spec.api.replicas = None;
        p.spec.api.autoscaling = Some(AutoscalingSpec {
            min_replicas: 2,
            max_replicas: 4,
            target_cpu_utilization: Some(70),
            target_lag_per_replica: None,
            scale_down_stabilization_seconds: Some(0),
        });
        let v = validate(&p).unwrap();
        let (keep, _) = hpas(&v, &OwnerReference::default()).unwrap();
        let windows: Vec<(String, Option<i32>)> = keep
            .iter()
            .map(|h| {
                let window = h
                    .spec
                    .as_ref()
                    .and_then(|s| s.behavior.as_ref())
                    .and_then(|b| b.scale_down.as_ref())
                    .and_then(|d| d.stabilization_window_seconds);
                (h.metadata.name.clone().unwrap_or_default(), window)
            })
            .collect();
        assert_eq!(
            windows,
            vec![
                ("demo-consumer".to_string(), Some(60)),
                ("demo-api".to_string(), Some(0))
            ]
        );
        let scale_up = keep[0]
            .spec
            .as_ref()
            .and_then(|s| s.behavior.as_ref())
            .and_then(|b| b.scale_up.as_ref());
        assert_eq!(scale_up, None, "scale-up keeps its defaults");
    }
}
