//! What the operator knows of its children, kept current by watches
//! instead of asked for with GETs: the Deployments whole (replicas, status,
//! managedFields) and the metadata of the ServiceAccounts, ConfigMaps,
//! Services, HPAs and PodDisruptionBudgets it owns (label
//! `app.kubernetes.io/managed-by=paystream-operator`). The same watches
//! trigger a reconcile when a child changes or is deleted. A reconcile
//! reads the caches only once they hold a first full list; a cache a moment
//! behind the operator's own write costs at most one repeated apply, never
//! a wrong one (server-side apply is idempotent).

use std::sync::Arc;

use futures::Stream;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use crate::reconcile::names::MANAGER;

/// The caches.
#[derive(Clone)]
pub struct Children {
    deployments: Store<Deployment>,
    service_accounts: Store<PartialObjectMeta<ServiceAccount>>,
    config_maps: Store<PartialObjectMeta<ConfigMap>>,
    services: Store<PartialObjectMeta<Service>>,
    hpas: Store<PartialObjectMeta<HorizontalPodAutoscaler>>,
    pdbs: Store<PartialObjectMeta<PodDisruptionBudget>>,
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
        .reflect(writer)
        .touched_objects();
    (reader, Box::pin(stream))
}

/// Starts nothing yet: returns the caches and the streams that fill them
/// once polled, watching `namespace` or every namespace.
pub fn watch(client: &Client, namespace: Option<&str>) -> (Children, Watches) {
    let (deployments, writer) = reflector::store();
    let deployment_stream = watcher(api::<Deployment>(client, namespace), owned())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    let (service_accounts, sa) = metadata::<ServiceAccount>(client, namespace);
    let (config_maps, cm) = metadata::<ConfigMap>(client, namespace);
    let (services, svc) = metadata::<Service>(client, namespace);
    let (hpas, hpa) = metadata::<HorizontalPodAutoscaler>(client, namespace);
    let (pdbs, pdb) = metadata::<PodDisruptionBudget>(client, namespace);
    (
        Children {
            deployments,
            service_accounts,
            config_maps,
            services,
            hpas,
            pdbs,
        },
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

fn key<K: Resource<DynamicType = ()>>(ns: &str, name: &str) -> ObjectRef<K> {
    ObjectRef::new(name).within(ns)
}

impl Children {
    /// Waits until every cache holds its first full list.
    pub async fn ready(&self) -> Result<(), CachesStopped> {
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
    }

    /// The Deployment `ns/name`, if it exists.
    pub fn deployment(&self, ns: &str, name: &str) -> Option<Arc<Deployment>> {
        self.deployments.get(&key(ns, name))
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
