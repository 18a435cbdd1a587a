//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator
//! replicas are safe: only the holder reconciles. [`decide`] is the pure
//! rule (hold, take over an expired or free lease, or follow); [`Elector`]
//! reads and writes the Lease with optimistic concurrency (a replace carries
//! the resourceVersion it read, so two candidates never both win).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// What a candidate should do with the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// We hold it: renew.
    Renew,
    /// It is free or expired: take it.
    Acquire,
    /// Someone else holds it and renewed in time.
    Follow(String),
}

/// Decides, from the Lease's holder and last renewal. Pure.
pub fn decide(
    now: Timestamp,
    me: &str,
    holder: Option<&str>,
    renewed: Option<Timestamp>,
    duration: Duration,
) -> Decision {
    match holder {
        Some(h) if h == me => Decision::Renew,
        None | Some("") => Decision::Acquire,
        Some(h) => {
            let expired = renewed.is_none_or(|r| {
                let age = now.duration_since(r);
                age >= SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX)
            });
            if expired {
                Decision::Acquire
            } else {
                Decision::Follow(h.to_string())
            }
        }
    }
}

/// Leader election failed against the apiserver.
#[derive(Debug, thiserror::Error)]
#[error("leader election on Lease {lease}: {source}")]
pub struct LeaderError {
    lease: String,
    #[source]
    source: kube::Error,
}

/// A candidate for the Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    metrics: Metrics,
}

impl Elector {
    /// A candidate `identity` for Lease `namespace/name`.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: String,
        duration: Duration,
        metrics: Metrics,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity,
            duration,
            metrics,
        }
    }

    fn err(&self) -> impl FnOnce(kube::Error) -> LeaderError + '_ {
        |source| LeaderError {
            lease: self.name.clone(),
            source,
        }
    }

    /// One round: returns whether we hold the Lease afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, LeaderError> {
        let now = Timestamp::now();
        let secs = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.name).await.map_err(self.err())? else {
            let lease: Lease = serde_json::from_value(serde_json::json!({
                "metadata": { "name": self.name },
                "spec": {
                    "holderIdentity": self.identity,
                    "leaseDurationSeconds": secs,
                    "acquireTime": MicroTime(now),
                    "renewTime": MicroTime(now),
                    "leaseTransitions": 0
                }
            }))
            .map_err(|e| LeaderError {
                lease: self.name.clone(),
                source: kube::Error::SerdeError(e),
            })?;
            self.metrics.api_write("Lease", "create");
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(self.err()(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let decision = decide(
            now,
            &self.identity,
            spec.holder_identity.as_deref(),
            spec.renew_time.as_ref().map(|t| t.0),
            spec.lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(self.duration, Duration::from_secs),
        );
        let mut new_spec = spec.clone();
        match decision {
            Decision::Follow(holder) => {
                tracing::debug!(%holder, "another operator leads");
                return Ok(false);
            }
            Decision::Renew => {
                new_spec.renew_time = Some(MicroTime(now));
            }
            Decision::Acquire => {
                new_spec.holder_identity = Some(self.identity.clone());
                new_spec.acquire_time = Some(MicroTime(now));
                new_spec.renew_time = Some(MicroTime(now));
                new_spec.lease_duration_seconds = Some(secs);
                new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
        }
        lease.spec = Some(new_spec);
        self.metrics.api_write("Lease", "renew");
        match self
            .api
            .replace(&lease.name_any(), &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(self.err()(e)),
        }
    }

    /// Waits until this candidate leads, or `stop` is cancelled (false).
    pub async fn acquire(&self, stop: &CancellationToken) -> bool {
        let retry = self.duration / 3;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(identity = %self.identity, lease = %self.name, "became the leader");
                    return true;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election round failed"),
            }
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = tokio::time::sleep(retry) => {}
            }
        }
    }

    /// Renews every third of the lease duration until `stop`; returns when
    /// leadership is lost (a renewal failed for longer than the lease).
    pub async fn hold(&self, stop: &CancellationToken) {
        let period = self.duration / 3;
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            match self.try_acquire_or_renew().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!("lost the leader Lease to another operator");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the leader Lease failed");
                    if last_ok.elapsed() >= self.duration {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_of_the_lease() {
        let now = Timestamp::from_second(1000).unwrap();
        let d = Duration::from_secs(15);
        let recent = Some(Timestamp::from_second(990).unwrap());
        let old = Some(Timestamp::from_second(980).unwrap());
        assert_eq!(decide(now, "a", Some("a"), recent, d), Decision::Renew);
        assert_eq!(decide(now, "a", None, None, d), Decision::Acquire);
        assert_eq!(decide(now, "a", Some(""), recent, d), Decision::Acquire);
        assert_eq!(
            decide(now, "a", Some("b"), recent, d),
            Decision::Follow("b".into())
        );
        assert_eq!(
            decide(now, "a", Some("b"), old, d),
            Decision::Acquire,
            "expired after 15 s"
        );
        assert_eq!(decide(now, "a", Some("b"), None, d), Decision::Acquire);
    }
}
