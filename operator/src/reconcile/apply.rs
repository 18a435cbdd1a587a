//! The apiserver side of reconciling: server-side apply of the built objects
//! under one field manager, the hand-over of `spec.replicas` to an HPA, and
//! deletion. It skips an apply when the object is exactly as this process
//! last applied it (same desired content, and its own managedFields entry
//! unchanged since), so an idle
//! operator makes no writes; every write it does make is counted. What the
//! objects look like now comes from the watch caches ([`Children`]), so an
//! idle operator makes no reads for them either.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::DesiredDeployment;
use super::names::{HANDOVER_MANAGER, MANAGER, pipeline_selector};
use crate::children::Children;
use crate::metrics::Metrics;

/// Where a cleanup finds a pipeline's children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// The watch caches: no request.
    Caches,
    /// A LIST by the pipeline's label: also finds a child created a moment
    /// ago that the caches have not seen yet.
    Label,
}

/// What this process last applied to an object: the hash of the desired
/// content and the resourceVersion the apply returned.
type Applied = HashMap<String, (u64, String)>;

/// Applies objects and remembers what it applied.
pub struct Applier {
    client: Client,
    children: Children,
    metrics: Metrics,
    applied: Mutex<Applied>,
}

/// True when `manager` owns `spec.replicas` through an Apply operation.
/// Pure.
pub fn owns_replicas(fields: &[ManagedFieldsEntry], manager: &str) -> bool {
    fields.iter().any(|f| {
        f.manager.as_deref() == Some(manager)
            && f.operation.as_deref() == Some("Apply")
            && f.fields_v1
                .as_ref()
                .and_then(|v| v.0.get("f:spec"))
                .and_then(|spec| spec.get("f:replicas"))
                .is_some()
    })
}

/// The key under which [`compact_fields`] keeps its digest.
const DIGEST: &str = "paystream:digest";

/// The compact form of a managedFields entry's field set, as the watch
/// caches keep the operator's own entries: a digest of the whole set, plus
/// `f:spec.f:replicas` when the set has it ([`owns_replicas`] reads it). A
/// Deployment's full set is kilobytes as a JSON tree, and a thousand
/// pipelines have ten thousand children. Idempotent, so a cached (compact)
/// entry and the apiserver's (full) one compare equal. Pure.
pub fn compact_fields(fields: &serde_json::Value) -> serde_json::Value {
    if fields.get(DIGEST).is_some() {
        return fields.clone();
    }
    let mut out = serde_json::Map::new();
    out.insert(
        DIGEST.into(),
        json!(format!("{:016x}", content_hash(fields))),
    );
    if fields
        .get("f:spec")
        .and_then(|s| s.get("f:replicas"))
        .is_some()
    {
        out.insert("f:spec".into(), json!({ "f:replicas": {} }));
    }
    serde_json::Value::Object(out)
}

/// What identifies the state of the fields this operator owns in an object:
/// its own managedFields entry (the set of fields, compacted, and when they
/// last changed). Another writer's changes to fields the operator does not
/// own (an HPA's replicas, any status) leave it alone; a change to one of
/// the operator's fields takes the field away and changes it. Falls back to
/// the resourceVersion.
fn version_of(meta: &ObjectMeta) -> Option<String> {
    let ours = meta.managed_fields.iter().flatten().find(|f| {
        f.manager.as_deref() == Some(MANAGER)
            && f.operation.as_deref() == Some("Apply")
            && f.subresource.is_none()
    });
    match ours {
        Some(f) => {
            let fields = f.fields_v1.as_ref().map(|v| compact_fields(&v.0));
            serde_json::to_string(&(&f.time, &fields)).ok()
        }
        None => meta.resource_version.clone(),
    }
}

/// True when `svc` asks for no cluster IP (a headless Service). Pure.
pub fn headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// A hash of `obj`'s JSON text (stable within one process). Pure.
pub(crate) fn content_hash<T: Serialize>(obj: &T) -> u64 {
    let mut h = DefaultHasher::new();
    serde_json::to_string(obj).unwrap_or_default().hash(&mut h);
    h.finish()
}

impl Applier {
    /// An applier writing through `client`.
    pub fn new(client: Client, children: Children, metrics: Metrics) -> Self {
        Self {
            client,
            children,
            metrics,
            applied: Mutex::new(HashMap::new()),
        }
    }

    fn key<K: Resource<DynamicType = ()>>(ns: &str, name: &str) -> String {
        format!("{}/{ns}/{name}", K::kind(&()))
    }

    fn remembered(&self, key: &str) -> Option<(u64, String)> {
        self.applied.lock().ok().and_then(|m| m.get(key).cloned())
    }

    fn remember(&self, key: String, hash: u64, rv: Option<String>) {
        if let (Ok(mut m), Some(rv)) = (self.applied.lock(), rv) {
            m.insert(key, (hash, rv));
        }
    }

    /// The metadata of `name` as it is now: from the cache when the kind
    /// is cached, else from the apiserver.
    async fn current<K>(
        &self,
        api: &Api<K>,
        ns: &str,
        name: &str,
    ) -> Result<Option<ObjectMeta>, kube::Error>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    {
        match self.children.meta(K::kind(&()).as_ref(), ns, name) {
            Some(cached) => Ok(cached),
            None => Ok(api.get_metadata_opt(name).await?.map(|m| m.metadata)),
        }
    }

    fn forget(&self, key: &str) {
        if let Ok(mut m) = self.applied.lock() {
            m.remove(key);
        }
    }

    /// Server-side applies `obj` (force, field manager `paystream-operator`)
    /// unless it is unchanged since this process last applied it. Returns
    /// whether it wrote.
    pub async fn apply<K>(&self, ns: &str, obj: &K) -> Result<bool, kube::Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Serialize
            + Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        let name = obj.name_any();
        let key = Self::key::<K>(ns, &name);
        let hash = content_hash(obj);
        if let Some((last_hash, last_rv)) = self.remembered(&key)
            && last_hash == hash
        {
            let current = self.current(&api, ns, &name).await?;
            if current.as_ref().and_then(version_of) == Some(last_rv) {
                return Ok(false);
            }
        }
        self.metrics.api_write(K::kind(&()).as_ref(), "apply");
        let applied = api
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(obj),
            )
            .await?;
        self.remember(key, hash, version_of(applied.meta()));
        Ok(true)
    }

    /// Applies a Deployment. When an HPA is to own `spec.replicas` and this
    /// operator still owns it, the field is first handed over: a temporary
    /// field manager applies the current count, then the operator applies
    /// without it, so the count never falls back to the default of 1.
    pub async fn apply_deployment(
        &self,
        ns: &str,
        d: &DesiredDeployment,
    ) -> Result<bool, kube::Error> {
        if d.hpa_scaled {
            let api: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
            let name = d.deployment.name_any();
            if let Some(current) = self.children.deployment(ns, &name)
                && owns_replicas(current.managed_fields(), MANAGER)
            {
                let replicas = current.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let handover = json!({
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": { "name": name },
                    "spec": { "replicas": replicas }
                });
                self.metrics.api_write("Deployment", "handover");
                api.patch(
                    &name,
                    &PatchParams::apply(HANDOVER_MANAGER).force(),
                    &Patch::Apply(handover),
                )
                .await?;
                self.forget(&Self::key::<Deployment>(ns, &name));
                tracing::info!(deployment = %name, replicas, "handed spec.replicas over to the HPA");
            }
        }
        self.apply(ns, &d.deployment).await
    }

    /// Applies a Service. A Service's cluster IP cannot change once set:
    /// when the apiserver refuses (422, naming `spec.clusterIPs`) to make a
    /// Service with a cluster IP headless, as for a metrics Service made by an earlier operator
    /// version, the Service is deleted and made again. Prometheus loses its
    /// targets for the moment between the two requests; nothing else uses
    /// a metrics Service.
    pub async fn apply_service(&self, ns: &str, svc: &Service) -> Result<bool, kube::Error> {
        match self.apply(ns, svc).await {
            Err(kube::Error::Api(s))
                if s.code == 422 && headless(svc) && s.message.contains("clusterIP") =>
            {
                let name = svc.name_any();
                tracing::info!(service = %name, reason = %s.message, "recreating the Service headless");
                let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
                self.remove(&api, ns, &name).await?;
                self.apply(ns, svc).await
            }
            other => other,
        }
    }

    /// Deletes `name` if it exists. Returns whether it deleted.
    pub async fn delete<K>(&self, ns: &str, name: &str) -> Result<bool, kube::Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        if self.current(&api, ns, name).await?.is_none() {
            return Ok(false);
        }
        self.remove(&api, ns, name).await
    }

    /// Deletes `name`, known to exist. Returns whether it deleted.
    async fn remove<K>(&self, api: &Api<K>, ns: &str, name: &str) -> Result<bool, kube::Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        self.metrics.api_write(K::kind(&()).as_ref(), "delete");
        self.forget(&Self::key::<K>(ns, name));
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes every child of kind `K` of the pipeline `pipeline` in `ns`.
    /// Returns how many. With [`Listing::Caches`] the names come from the
    /// watch caches, so a cleanup sends deletes only (a thousand pipelines
    /// deleted at once meant six label LISTs each over the whole namespace);
    /// with [`Listing::Label`], or for a kind without a cache, they are
    /// listed by label.
    pub async fn delete_children<K>(
        &self,
        ns: &str,
        pipeline: &str,
        from: Listing,
    ) -> Result<usize, kube::Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        let cached = match from {
            Listing::Caches => self
                .children
                .names_of_pipeline(K::kind(&()).as_ref(), ns, pipeline),
            Listing::Label => None,
        };
        let names = match cached {
            Some(names) => names,
            None => api
                .list_metadata(&ListParams::default().labels(&pipeline_selector(pipeline)))
                .await?
                .items
                .iter()
                .map(ResourceExt::name_any)
                .collect(),
        };
        let removed =
            futures::future::try_join_all(names.iter().map(|n| self.remove(&api, ns, n))).await?;
        Ok(removed.into_iter().filter(|r| *r).count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;

    fn entry(manager: &str, op: &str, fields: serde_json::Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(op.into()),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        }
    }

    #[test]
    fn compact_fields_keep_identity_and_replicas_ownership() {
        let full = json!({ "f:spec": { "f:replicas": {}, "f:template": { "f:spec": {} } } });
        let compact = compact_fields(&full);
        assert_eq!(compact_fields(&compact), compact, "idempotent");
        assert_ne!(
            compact_fields(&json!({ "f:spec": { "f:replicas": {} } })),
            compact,
            "another field set, another digest"
        );
        let fields = vec![entry(MANAGER, "Apply", compact.clone())];
        assert!(owns_replicas(&fields, MANAGER));
        let without = compact_fields(&json!({ "f:spec": { "f:template": {} } }));
        assert!(!owns_replicas(&[entry(MANAGER, "Apply", without)], MANAGER));

        // The cache's compact entry and the apiserver's full one: same version.
        let meta = |fields: serde_json::Value| ObjectMeta {
            managed_fields: Some(vec![entry(MANAGER, "Apply", fields)]),
            resource_version: Some("1".into()),
            ..Default::default()
        };
        assert_eq!(version_of(&meta(full.clone())), version_of(&meta(compact)));
        assert_ne!(
            version_of(&meta(full)),
            version_of(&meta(json!({ "f:metadata": {} })))
        );
    }

    #[test]
    fn finds_who_owns_replicas() {
        let fields = vec![
            entry(MANAGER, "Apply", json!({ "f:spec": { "f:template": {} } })),
            entry(
                "kube-controller-manager",
                "Update",
                json!({ "f:spec": { "f:replicas": {} } }),
            ),
        ];
        assert!(!owns_replicas(&fields, MANAGER));
        let fields = vec![entry(
            MANAGER,
            "Apply",
            json!({ "f:spec": { "f:replicas": {} } }),
        )];
        assert!(owns_replicas(&fields, MANAGER));
        assert!(!owns_replicas(&fields, HANDOVER_MANAGER));
    }
}
