//! The `resourceVersion` of the Secrets pipelines name, read with GETs of
//! their metadata (watching Secrets would need `list` and `watch` on every
//! Secret) and kept for a short while, so the pipelines of a namespace that
//! share credentials cost one read per Secret per period instead of one per
//! pipeline per reconcile. A rotated or newly created Secret is seen within
//! that period, which is shorter than the status interval.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

/// `(namespace, name)` -> when it was read, and its version then.
type Seen = HashMap<(String, String), (Instant, Option<String>)>;

/// The cache.
pub struct SecretVersions {
    ttl: Duration,
    seen: Mutex<Seen>,
}

impl SecretVersions {
    /// Versions are read again after `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, key: &(String, String), now: Instant) -> Option<Option<String>> {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.get(key)
            .filter(|(at, _)| now.duration_since(*at) < self.ttl)
            .map(|(_, v)| v.clone())
    }

    /// The version of Secret `ns/name`, `None` when it does not exist.
    pub async fn get(
        &self,
        api: &Api<Secret>,
        ns: &str,
        name: &str,
    ) -> Result<Option<String>, kube::Error> {
        let key = (ns.to_string(), name.to_string());
        let now = Instant::now();
        if let Some(v) = self.cached(&key, now) {
            return Ok(v);
        }
        let version = api
            .get_metadata_opt(name)
            .await?
            .map(|m| m.metadata.resource_version.unwrap_or_default());
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
        seen.insert(key, (now, version.clone()));
        Ok(version)
    }
}
