//! The status of a PaymentPipeline, computed purely from what one reconcile
//! observed: conditions (Ready, Progressing, Degraded, Paused), the phase,
//! the binlog position, the lag and the replicas. The result is
//! deterministic: the same observations give the same status, and a
//! condition keeps its `lastTransitionTime` until its status changes, so the
//! operator writes the status only when something really changed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use paystream_core::checkpoint::Checkpoint;

use crate::crd::{BinlogStatus, PaymentPipelineStatus, ReplicasStatus};

/// Something the user (or the environment) must fix; shown in Degraded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// CamelCase reason: InvalidSpec, PartitionDecreaseRefused,
    /// KafkaUnreachable, SecretMissing, ApplyFailed, and from the pods
    /// ([`crate::pod_problems`]) Unschedulable, ImageUnavailable,
    /// CreateContainerConfigError, CrashLooping.
    pub reason: String,
    /// What to fix.
    pub message: String,
}

impl Problem {
    /// A problem with `reason` and `message`.
    pub fn new(reason: &str, message: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Ready and desired replicas of one workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Replicas {
    /// Ready (available) replicas.
    pub ready: i32,
    /// Desired replicas (the Deployment's spec).
    pub desired: i32,
}

impl Replicas {
    fn show(self) -> String {
        format!("{}/{}", self.ready, self.desired)
    }
}

/// What one reconcile saw. `None` means "not observed this time": the
/// previous value is kept.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// The spec's generation.
    pub generation: Option<i64>,
    /// `spec.paused`.
    pub paused: bool,
    /// The resource is being deleted.
    pub deleting: bool,
    /// Problems found, in order.
    pub problems: Vec<Problem>,
    /// Partitions of the change topics (the smallest).
    pub partitions: Option<i32>,
    /// The producer's checkpoint; `Some(None)` when there is none yet.
    pub checkpoint: Option<Option<Checkpoint>>,
    /// Total consumer lag.
    pub lag: Option<i64>,
    /// Producer, consumer and API replicas, when the Deployments were read.
    pub replicas: Option<[Replicas; 3]>,
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: now.clone(),
    }
}

/// Keeps the previous `lastTransitionTime` of conditions whose status did not
/// change.
fn stabilise(mut new: Vec<Condition>, prev: &[Condition]) -> Vec<Condition> {
    for c in &mut new {
        if let Some(p) = prev.iter().find(|p| p.type_ == c.type_)
            && p.status == c.status
        {
            c.last_transition_time = p.last_transition_time.clone();
        }
    }
    new
}

/// The binlog part of the status from a checkpoint. Pure.
pub fn binlog(cp: &Checkpoint) -> BinlogStatus {
    BinlogStatus {
        gtid: cp.gtid.clone(),
        file: cp.file.clone(),
        position: i64::try_from(cp.pos).unwrap_or(i64::MAX),
        last_event_time: Timestamp::from_millisecond(cp.last_event_ts_ms)
            .ok()
            .map(|t| t.to_string()),
        summary: cp.display_position(),
    }
}

/// The problems that are new: not part of the Degraded message of `prev`
/// (each deserves an Event; one that stays does not). Pure.
pub fn new_problems<'a>(
    prev: Option<&PaymentPipelineStatus>,
    problems: &'a [Problem],
) -> Vec<&'a Problem> {
    let shown = prev
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Degraded"))
        .filter(|c| c.status == "True")
        .map_or("", |c| c.message.as_str());
    problems
        .iter()
        .filter(|p| !shown.contains(p.message.as_str()))
        .collect()
}

/// Computes the status. Pure; `now` stamps conditions that changed.
pub fn compute(
    prev: Option<&PaymentPipelineStatus>,
    obs: &Observation,
    now: Time,
) -> PaymentPipelineStatus {
    let empty = PaymentPipelineStatus::default();
    let prev = prev.unwrap_or(&empty);
    let g = obs.generation;
    let replicas = obs.replicas;
    let rolling: Vec<String> = replicas
        .iter()
        .flat_map(|r| {
            ["producer", "consumer", "api"]
                .iter()
                .zip(r.iter())
                .filter(|(_, r)| r.ready < r.desired)
                .map(|(n, r)| format!("{n} {}", r.show()))
                .collect::<Vec<_>>()
        })
        .collect();
    let progressing = replicas.is_none() || !rolling.is_empty();
    let degraded = !obs.problems.is_empty();
    let degraded_message = obs
        .problems
        .iter()
        .map(|p| p.message.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    let ready = !degraded && !obs.paused && !progressing && !obs.deleting;

    let (ready_reason, ready_message) = if obs.deleting {
        ("Deleting", "the pipeline is being deleted".to_string())
    } else if degraded {
        ("Degraded", degraded_message.clone())
    } else if obs.paused {
        ("Paused", "reconciliation is paused".to_string())
    } else if progressing {
        (
            "RollingOut",
            format!(
                "waiting for {}",
                if rolling.is_empty() {
                    "the workloads".to_string()
                } else {
                    rolling.join(", ")
                }
            ),
        )
    } else {
        (
            "Available",
            "every workload is available and the topics are in place".to_string(),
        )
    };
    let conditions = vec![
        condition("Ready", ready, ready_reason, &ready_message, g, &now),
        condition(
            "Progressing",
            progressing,
            if progressing { "RollingOut" } else { "Stable" },
            &if progressing {
                format!(
                    "waiting for {}",
                    if rolling.is_empty() {
                        "the workloads".to_string()
                    } else {
                        rolling.join(", ")
                    }
                )
            } else {
                "every workload has its desired replicas ready".to_string()
            },
            g,
            &now,
        ),
        condition(
            "Degraded",
            degraded,
            obs.problems
                .first()
                .map_or("AsExpected", |p| p.reason.as_str()),
            if degraded {
                &degraded_message
            } else {
                "no problem found"
            },
            g,
            &now,
        ),
        condition(
            "Paused",
            obs.paused,
            if obs.paused { "Paused" } else { "NotPaused" },
            if obs.paused {
                "spec.paused is true: the operator changes nothing"
            } else {
                "reconciling"
            },
            g,
            &now,
        ),
    ];
    let phase = if obs.deleting {
        "Deleting"
    } else if obs.paused {
        "Paused"
    } else if degraded {
        "Degraded"
    } else if ready {
        "Running"
    } else {
        "Pending"
    };
    PaymentPipelineStatus {
        observed_generation: g,
        phase: Some(phase.into()),
        conditions: stabilise(conditions, &prev.conditions),
        partitions: obs.partitions.or(prev.partitions),
        binlog: match &obs.checkpoint {
            Some(Some(cp)) => Some(binlog(cp)),
            Some(None) => None,
            None => prev.binlog.clone(),
        },
        consumer_lag: obs.lag.or(prev.consumer_lag),
        replicas: match replicas {
            Some([p, c, a]) => Some(ReplicasStatus {
                producer: p.show(),
                consumer: c.show(),
                api: a.show(),
            }),
            None => prev.replicas.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paystream_core::checkpoint::{Flavor, SnapshotState};

    fn t(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    fn healthy() -> Observation {
        Observation {
            generation: Some(2),
            partitions: Some(3),
            checkpoint: Some(Some(Checkpoint {
                source: "ps".into(),
                flavor: Flavor::Mariadb,
                gtid: "0-1-42".into(),
                file: "bin.000002".into(),
                pos: 1234,
                last_event_ts_ms: 1_700_000_000_000,
                partial: None,
                snapshot: SnapshotState::Done,
            })),
            lag: Some(7),
            replicas: Some(
                [Replicas {
                    ready: 1,
                    desired: 1,
                }; 3],
            ),
            ..Default::default()
        }
    }

    /// Producer, consumer and API replicas as (ready, desired).
    fn replicas(rd: [(i32, i32); 3]) -> [Replicas; 3] {
        rd.map(|(ready, desired)| Replicas { ready, desired })
    }

    fn cond<'a>(s: &'a PaymentPipelineStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn healthy_pipeline_is_ready_and_running() {
        let s = compute(None, &healthy(), t(100));
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(cond(&s, "Degraded").status, "False");
        assert_eq!(s.binlog.as_ref().unwrap().summary, "0-1-42");
        assert_eq!(
            s.binlog.as_ref().unwrap().last_event_time.as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        assert_eq!(s.replicas.as_ref().unwrap().consumer, "1/1");
        assert_eq!(
            (s.consumer_lag, s.partitions, s.observed_generation),
            (Some(7), Some(3), Some(2))
        );
    }

    #[test]
    fn status_is_deterministic_and_transition_times_are_stable() {
        let first = compute(None, &healthy(), t(100));
        let again = compute(Some(&first), &healthy(), t(200));
        assert_eq!(first, again, "same observations, same status: no write");
        let mut obs = healthy();
        obs.problems.push(Problem::new(
            "KafkaUnreachable",
            "cannot reach Kafka at k:9092",
        ));
        let degraded = compute(Some(&again), &obs, t(300));
        assert_eq!(cond(&degraded, "Degraded").last_transition_time, t(300));
        assert_eq!(cond(&degraded, "Degraded").reason, "KafkaUnreachable");
        assert_eq!(cond(&degraded, "Ready").status, "False");
        assert_eq!(
            cond(&degraded, "Paused").last_transition_time,
            t(100),
            "unchanged condition keeps its time"
        );
        assert_eq!(degraded.phase.as_deref(), Some("Degraded"));
    }

    #[test]
    fn unobserved_values_are_kept() {
        let first = compute(None, &healthy(), t(100));
        let blind = Observation {
            generation: Some(2),
            replicas: Some(
                [Replicas {
                    ready: 1,
                    desired: 1,
                }; 3],
            ),
            ..Default::default()
        };
        let s = compute(Some(&first), &blind, t(200));
        assert_eq!(s.binlog, first.binlog);
        assert_eq!(s.consumer_lag, Some(7));
        assert_eq!(s.partitions, Some(3));
    }

    #[test]
    fn only_new_problems_are_announced() {
        let crash = Problem::new(
            "CrashLooping",
            "api: container api keeps exiting with code 1: x",
        );
        let kafka = Problem::new("KafkaUnreachable", "cannot reach Kafka at k:9092");
        let mut obs = healthy();
        obs.problems = vec![crash.clone()];
        assert_eq!(new_problems(None, &obs.problems), vec![&crash]);
        let degraded = compute(None, &obs, t(100));
        assert!(new_problems(Some(&degraded), &obs.problems).is_empty());
        // A second problem: only it is new.
        obs.problems = vec![kafka.clone(), crash.clone()];
        assert_eq!(new_problems(Some(&degraded), &obs.problems), vec![&kafka]);
        // Gone and back: new again.
        let recovered = compute(Some(&degraded), &healthy(), t(200));
        assert_eq!(
            new_problems(Some(&recovered), std::slice::from_ref(&crash)),
            vec![&crash]
        );
    }

    #[test]
    fn pod_problems_degrade_and_clear_when_the_pods_recover() {
        let mut obs = healthy();
        obs.replicas = Some(replicas([(1, 1), (1, 1), (0, 2)]));
        obs.problems = vec![Problem::new(
            "ImageUnavailable",
            "api: cannot pull image \"x:1\": not found (check api.image)",
        )];
        let s = compute(None, &obs, t(1));
        assert_eq!(s.phase.as_deref(), Some("Degraded"));
        assert_eq!(cond(&s, "Ready").reason, "Degraded");
        assert_eq!(cond(&s, "Degraded").reason, "ImageUnavailable");
        assert!(cond(&s, "Ready").message.contains("cannot pull image"));
        assert_eq!(s.replicas.as_ref().unwrap().api, "0/2");
        let again = compute(Some(&s), &obs, t(20));
        assert_eq!(again, s, "the same pods, the same status: no write");
        let fixed = compute(Some(&s), &healthy(), t(40));
        assert_eq!(fixed.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&fixed, "Degraded").status, "False");
    }

    #[test]
    fn rolling_out_and_paused() {
        let mut obs = healthy();
        obs.replicas = Some(replicas([(1, 1), (0, 2), (1, 1)]));
        let s = compute(None, &obs, t(1));
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(cond(&s, "Progressing").status, "True");
        assert!(cond(&s, "Ready").message.contains("consumer 0/2"));
        obs.paused = true;
        let s = compute(None, &obs, t(1));
        assert_eq!(s.phase.as_deref(), Some("Paused"));
        assert_eq!(cond(&s, "Paused").status, "True");
    }
}
