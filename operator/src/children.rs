//! What the operator knows of its children, kept current by watches
//! instead of asked for with GETs: the Deployments (replicas, available
//! replicas, managedFields) and the metadata of the ServiceAccounts, ConfigMaps,
//! Services, HPAs and PodDisruptionBudgets it owns (label
//! `app.kubernetes.io/managed-by=paystream-operator`). The same watches
//! trigger the owner's reconcile, but only on what needs one: a deleted
//! child (to recreate it), and a Deployment whose replicas, available
//! replicas or operator-owned fields changed (the status, and drift). The
//! operator's own creations and the controller manager's other status
//! updates trigger nothing: at 1,000 pipelines they were most reconciles.
//! Other drift is corrected at the next status refresh. The caches keep
//! only what reconciles read (the operator's managedFields entries,
//! replicas, available and updated replicas), not the pod templates. A reconcile
//! reads the caches only once they hold a first full list; a cache a moment
//! behind the operator's own write costs at most one repeated apply, never
//! a wrong one (server-side apply is idempotent). Only one task waits for
//! that first list and the others wait for it: kube-runtime's
//! `Store::wait_until_ready` wakes just the last of several tasks waiting at
//! once, so a pipeline whose first reconcile waited alongside another's
//! (two created as the operator started) was never reconciled.

use std::collections::HashMap;
use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;

use crate::reconcile::apply::{compact_fields, content_hash};
use crate::reconcile::names::{MANAGER, PIPELINE_LABEL};

/// The caches.
#[derive(Clone)]
pub struct Children {
    deployments: Store<Deployment>,
    service_accounts: Store<PartialObjectMeta<ServiceAccount>>,
    config_maps: Store<PartialObjectMeta<ConfigMap>>,
    services: Store<PartialObjectMeta<Service>>,
    hpas: Store<PartialObjectMeta<HorizontalPodAutoscaler>>,
    pdbs: Store<PartialObjectMeta<PodDisruptionBudget>>,
    /// Set once every cache held its first full list; the one task that
    /// waits for the stores sets it, the others wait for it.
    ready: Arc<OnceCell<()>>,
}

/// The watch streams feeding the caches; the controller polls them (each
/// item is a changed child, which triggers its owner's reconcile).
pub struct Watches {
    /// Deployments.
    pub deployments: WatchStream<Deployment>,
    /// ServiceAccounts.
    pub service_accounts: WatchStream<PartialObjectMeta<ServiceAccount>>,
    /// ConfigMaps.
    pub config_maps: WatchStream<PartialObjectMeta<ConfigMap>>,
    /// Services.
    pub services: WatchStream<PartialObjectMeta<Service>>,
    /// HorizontalPodAutoscalers.
    pub hpas: WatchStream<PartialObjectMeta<HorizontalPodAutoscaler>>,
    /// PodDisruptionBudgets.
    pub pdbs: WatchStream<PartialObjectMeta<PodDisruptionBudget>>,
}

/// A reflected watch: every child that changed.
pub type WatchStream<K> =
    std::pin::Pin<Box<dyn Stream<Item = Result<K, watcher::Error>> + Send + 'static>>;

/// The caches are gone (the controller stopped).
#[derive(Debug, thiserror::Error)]
#[error("the watch caches of the operator's children stopped")]
pub struct CachesStopped;

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn owned() -> watcher::Config {
    watcher::Config::default()
        .labels(&format!("app.kubernetes.io/managed-by={MANAGER}"))
        .any_semantic()
}

fn metadata<K>(
    client: &Client,
    namespace: Option<&str>,
) -> (
    Store<PartialObjectMeta<K>>,
    WatchStream<PartialObjectMeta<K>>,
)
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    // An Api of PartialObjectMeta asks for metadata only.
    let stream = watcher(api::<PartialObjectMeta<K>>(client, namespace), owned())
        .default_backoff()
        .modify(|o| prune_meta(&mut o.metadata))
        .reflect(writer)
        .try_filter_map(|event| async move {
            Ok(match event {
                watcher::Event::Delete(o) => Some(o),
                _ => None,
            })
        });
    (reader, Box::pin(stream))
}

/// Starts nothing yet: returns the caches and the streams that fill them
/// once polled, watching `namespace` or every namespace.
pub fn watch(client: &Client, namespace: Option<&str>) -> (Children, Watches) {
    let (deployments, writer) = reflector::store();
    let mut last: HashMap<ObjectRef<Deployment>, Signature> = HashMap::new();
    let deployment_stream = watcher(api::<Deployment>(client, namespace), owned())
        .default_backoff()
        .modify(prune_deployment)
        .reflect(writer)
        .try_filter_map(move |event| {
            let trigger = match event {
                watcher::Event::Apply(d) => {
                    let key = ObjectRef::from_obj(&d);
                    let now = signature(&d);
                    // The first sight is the operator's own creation.
                    match last.insert(key, now) {
                        Some(before) if before != now => Some(d),
                        _ => None,
                    }
                }
                watcher::Event::InitApply(d) => {
                    last.insert(ObjectRef::from_obj(&d), signature(&d));
                    None
                }
                watcher::Event::Delete(d) => {
                    last.remove(&ObjectRef::from_obj(&d));
                    Some(d)
                }
                watcher::Event::Init | watcher::Event::InitDone => None,
            };
            async move { Ok(trigger) }
        });
    let (service_accounts, sa) = metadata::<ServiceAccount>(client, namespace);
    let (config_maps, cm) = metadata::<ConfigMap>(client, namespace);
    let (services, svc) = metadata::<Service>(client, namespace);
    let (hpas, hpa) = metadata::<HorizontalPodAutoscaler>(client, namespace);
    let (pdbs, pdb) = metadata::<PodDisruptionBudget>(client, namespace);
    (
        Children::new(
            deployments,
            service_accounts,
            config_maps,
            services,
            hpas,
            pdbs,
        ),
        Watches {
            deployments: Box::pin(deployment_stream),
            service_accounts: sa,
            config_maps: cm,
            services: svc,
            hpas: hpa,
            pdbs: pdb,
        },
    )
}

/// What of a Deployment a reconcile reacts to: the replicas it should have,
/// has available, has up to date and has in all (old pods of a rollout),
/// and the operator's own fields.
type Signature = (Option<i32>, [Option<i32>; 3], u64);

fn signature(d: &Deployment) -> Signature {
    let status = d.status.as_ref();
    (
        d.spec.as_ref().and_then(|s| s.replicas),
        [
            status.and_then(|s| s.available_replicas),
            status.and_then(|s| s.updated_replicas),
            status.and_then(|s| s.replicas),
        ],
        content_hash(&d.metadata.managed_fields),
    )
}

/// Keeps of a child's metadata only what reconciles read: the operator's
/// own managedFields entries (the rest can be many times their size), with
/// their field sets compacted ([`compact_fields`]).
fn prune_meta(meta: &mut ObjectMeta) {
    if let Some(fields) = meta.managed_fields.as_mut() {
        fields.retain(|f| f.manager.as_deref() == Some(MANAGER));
        for f in fields.iter_mut() {
            if let Some(v) = f.fields_v1.as_mut() {
                v.0 = compact_fields(&v.0);
            }
        }
    }
    meta.annotations = None;
}

/// Keeps of a Deployment only what reconciles read: its metadata (pruned),
/// `spec.replicas`, the selector, and `status.availableReplicas`,
/// `updatedReplicas` and `replicas` (a rollout stuck on failing pods while
/// the old ones still serve); the pod template is most of a Deployment's
/// size.
fn prune_deployment(d: &mut Deployment) {
    prune_meta(&mut d.metadata);
    if let Some(spec) = d.spec.as_mut() {
        spec.template = Default::default();
    }
    if let Some(status) = d.status.as_mut() {
        *status = DeploymentStatus {
            available_replicas: status.available_replicas,
            updated_replicas: status.updated_replicas,
            replicas: status.replicas,
            ..Default::default()
        };
    }
}

fn key<K: Resource<DynamicType = ()>>(ns: &str, name: &str) -> ObjectRef<K> {
    ObjectRef::new(name).within(ns)
}

impl Children {
    /// The caches over these stores, not known to be filled yet.
    fn new(
        deployments: Store<Deployment>,
        service_accounts: Store<PartialObjectMeta<ServiceAccount>>,
        config_maps: Store<PartialObjectMeta<ConfigMap>>,
        services: Store<PartialObjectMeta<Service>>,
        hpas: Store<PartialObjectMeta<HorizontalPodAutoscaler>>,
        pdbs: Store<PartialObjectMeta<PodDisruptionBudget>>,
    ) -> Self {
        Self {
            deployments,
            service_accounts,
            config_maps,
            services,
            hpas,
            pdbs,
            ready: Arc::new(OnceCell::new()),
        }
    }

    /// Waits until every cache holds its first full list. Any number of
    /// tasks may wait at once: one of them waits for the stores (whose own
    /// wait wakes only one task), the others for it.
    pub async fn ready(&self) -> Result<(), CachesStopped> {
        self.ready
            .get_or_try_init(|| async {
                let stopped = |_| CachesStopped;
                self.deployments.wait_until_ready().await.map_err(stopped)?;
                self.service_accounts
                    .wait_until_ready()
                    .await
                    .map_err(stopped)?;
                self.config_maps.wait_until_ready().await.map_err(stopped)?;
                self.services.wait_until_ready().await.map_err(stopped)?;
                self.hpas.wait_until_ready().await.map_err(stopped)?;
                self.pdbs.wait_until_ready().await.map_err(stopped)?;
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// The Deployment `ns/name`, if it exists.
    pub fn deployment(&self, ns: &str, name: &str) -> Option<Arc<Deployment>> {
        self.deployments.get(&key(ns, name))
    }

    /// The names of the cached children of kind `kind` in `ns` labelled as
    /// `pipeline`'s, or `None` for a kind that is not cached. A child
    /// created a moment ago may not be cached yet; its owner reference lets
    /// the garbage collector remove it all the same.
    pub fn names_of_pipeline(&self, kind: &str, ns: &str, pipeline: &str) -> Option<Vec<String>> {
        fn of<K>(store: &Store<PartialObjectMeta<K>>, ns: &str, pipeline: &str) -> Vec<String>
        where
            K: Resource<DynamicType = ()> + Clone,
        {
            let state = store.state();
            of_pipeline(state.iter().map(|o| &o.metadata), ns, pipeline)
        }
        Some(match kind {
            "Deployment" => {
                let state = self.deployments.state();
                of_pipeline(state.iter().map(|d| &d.metadata), ns, pipeline)
            }
            "ServiceAccount" => of(&self.service_accounts, ns, pipeline),
            "ConfigMap" => of(&self.config_maps, ns, pipeline),
            "Service" => of(&self.services, ns, pipeline),
            "HorizontalPodAutoscaler" => of(&self.hpas, ns, pipeline),
            "PodDisruptionBudget" => of(&self.pdbs, ns, pipeline),
            _ => return None,
        })
    }

    /// The metadata of the child of kind `kind` named `ns/name`:
    /// `Some(None)` when it does not exist, and `None` for a kind that is
    /// not cached.
    pub fn meta(&self, kind: &str, ns: &str, name: &str) -> Option<Option<ObjectMeta>> {
        fn of<K>(store: &Store<PartialObjectMeta<K>>, ns: &str, name: &str) -> Option<ObjectMeta>
        where
            K: Resource<DynamicType = ()> + Clone,
        {
            store
                .get(&ObjectRef::new(name).within(ns))
                .map(|o| o.metadata.clone())
        }
        Some(match kind {
            "Deployment" => self.deployment(ns, name).map(|d| d.metadata.clone()),
            "ServiceAccount" => of(&self.service_accounts, ns, name),
            "ConfigMap" => of(&self.config_maps, ns, name),
            "Service" => of(&self.services, ns, name),
            "HorizontalPodAutoscaler" => of(&self.hpas, ns, name),
            "PodDisruptionBudget" => of(&self.pdbs, ns, name),
            _ => return None,
        })
    }
}

/// The names of the objects among `metas` that are in `ns` and labelled as
/// `pipeline`'s (`paystream.io/pipeline=<pipeline>`), sorted. Pure.
pub fn of_pipeline<'a>(
    metas: impl IntoIterator<Item = &'a ObjectMeta>,
    ns: &str,
    pipeline: &str,
) -> Vec<String> {
    let mut names: Vec<String> = metas
        .into_iter()
        .filter(|m| m.namespace.as_deref() == Some(ns))
        .filter(|m| {
            m.labels
                .as_ref()
                .and_then(|l| l.get(PIPELINE_LABEL))
                .is_some_and(|p| p == pipeline)
        })
        .filter_map(|m| m.name.clone())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    /// Children over fresh stores, and the writers that fill them.
    fn unfilled() -> (Children, impl FnOnce()) {
        let (deployments, mut w1) = reflector::store::<Deployment>();
        let (service_accounts, mut w2) = reflector::store();
        let (config_maps, mut w3) = reflector::store();
        let (services, mut w4) = reflector::store();
        let (hpas, mut w5) = reflector::store();
        let (pdbs, mut w6) = reflector::store();
        let children = Children::new(
            deployments,
            service_accounts,
            config_maps,
            services,
            hpas,
            pdbs,
        );
        let fill = move || {
            w1.apply_watcher_event(&watcher::Event::InitDone);
            w2.apply_watcher_event(&watcher::Event::InitDone);
            w3.apply_watcher_event(&watcher::Event::InitDone);
            w4.apply_watcher_event(&watcher::Event::InitDone);
            w5.apply_watcher_event(&watcher::Event::InitDone);
            w6.apply_watcher_event(&watcher::Event::InitDone);
        };
        (children, fill)
    }

    #[tokio::test]
    async fn every_task_waiting_for_the_first_lists_wakes() {
        let (children, fill) = unfilled();
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let c = children.clone();
                tokio::spawn(async move { c.ready().await })
            })
            .collect();
        // Every waiter is parked before the lists arrive.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(waiters.iter().all(|w| !w.is_finished()));
        fill();
        for w in waiters {
            let done = tokio::time::timeout(std::time::Duration::from_secs(5), w).await;
            assert!(
                matches!(done, Ok(Ok(Ok(())))),
                "a waiter was not woken: {done:?}"
            );
        }
        // Later callers return at once.
        assert!(children.ready().await.is_ok());
    }

    #[test]
    fn a_pipelines_children_are_those_of_its_namespace_and_label() {
        let meta = |ns: &str, name: &str, pipeline: Option<&str>| ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            labels: pipeline.map(|p| [(PIPELINE_LABEL.to_string(), p.to_string())].into()),
            ..Default::default()
        };
        let metas = [
            meta("a", "demo-producer", Some("demo")),
            meta("a", "demo-api", Some("demo")),
            meta("b", "demo-api", Some("demo")),
            meta("a", "demo2-api", Some("demo2")),
            meta("a", "unlabelled", None),
        ];
        assert_eq!(
            of_pipeline(&metas, "a", "demo"),
            vec!["demo-api".to_string(), "demo-producer".to_string()]
        );
        assert_eq!(
            of_pipeline(&metas, "b", "demo"),
            vec!["demo-api".to_string()]
        );
        assert!(of_pipeline(&metas, "c", "demo").is_empty());
        assert!(of_pipeline(&metas, "a", "dem").is_empty());
    }

    #[test]
    fn caches_keep_only_what_reconciles_read() {
        let entry = |manager: &str| ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some("Apply".into()),
            ..Default::default()
        };
        let mut d = Deployment {
            metadata: ObjectMeta {
                name: Some("p-api".into()),
                resource_version: Some("7".into()),
                managed_fields: Some(vec![entry(MANAGER), entry("kube-controller-manager")]),
                annotations: Some([("a".to_string(), "b".to_string())].into()),
                labels: Some([(PIPELINE_LABEL.to_string(), "p".to_string())].into()),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(3),
                template: k8s_openapi::api::core::v1::PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        name: Some("template".into()),
                        ..Default::default()
                    }),
                    spec: None,
                },
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                available_replicas: Some(2),
                updated_replicas: Some(1),
                replicas: Some(3),
                ready_replicas: Some(2),
                ..Default::default()
            }),
        };
        prune_deployment(&mut d);
        let fields = d.metadata.managed_fields.as_deref().unwrap_or_default();
        assert_eq!(fields.len(), 1);
        assert_eq!(fields[0].manager.as_deref(), Some(MANAGER));
        assert_eq!(d.metadata.resource_version.as_deref(), Some("7"));
        assert!(d.metadata.annotations.is_none());
        assert_eq!(
            d.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(PIPELINE_LABEL)),
            Some(&"p".to_string()),
            "cleanups find a pipeline's children by this label"
        );
        let spec = d.spec.as_ref().expect("spec");
        assert_eq!(spec.replicas, Some(3));
        assert!(spec.template.metadata.is_none());
        let status = d.status.as_ref().expect("status");
        assert_eq!(status.available_replicas, Some(2));
        assert_eq!(status.updated_replicas, Some(1));
        assert_eq!(
            status.replicas,
            Some(3),
            "old pods of a stuck rollout count"
        );
        assert_eq!(status.ready_replicas, None);
    }
}
