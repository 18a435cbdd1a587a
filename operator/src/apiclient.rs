//! The operator's Kubernetes client, with every request it sends counted in
//! `paystream_operator_api_requests_total{verb,resource}`: reads (`get`,
//! `list`, `watch`) as well as writes, including the watchers' LISTs and
//! watch (re)connections and the Lease, so "quiet when idle" can be checked
//! from the client side. [`classify`] turns a request's method and path into
//! the Kubernetes verb and resource (pure); [`CountRequests`] is the tower
//! layer that counts as the request is sent, whatever its outcome.

use std::task::{Context, Poll};

use http::{Method, Request};
use kube::client::ClientBuilder;
use kube::{Client, Config};
use tower::{Layer, Service};

use crate::metrics::Metrics;

/// The Kubernetes verb and resource of a request to the apiserver, as the
/// apiserver's own `apiserver_request_total` names them: `get`, `list` and
/// `watch` for reads (a GET with `watch=true` or `watch=1` is a watch; a GET
/// on a collection is a list), `create`, `update`, `patch`, `delete` and
/// `deletecollection` for writes. The resource carries its subresource
/// (`paymentpipelines/status`); paths outside the resource API (`/version`,
/// discovery) give `discovery`. Pure.
pub fn classify(method: &Method, path: &str, query: Option<&str>) -> (&'static str, String) {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest: &[&str] = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => &[],
    };
    // (resource, whether a single object is named, subresource)
    let target: Option<(&str, bool, Option<&str>)> = match rest {
        [] => None,
        ["namespaces"] => Some(("namespaces", false, None)),
        ["namespaces", _ns] => Some(("namespaces", true, None)),
        ["namespaces", _ns, resource] => Some((resource, false, None)),
        ["namespaces", _ns, resource, _name] => Some((resource, true, None)),
        ["namespaces", _ns, resource, _name, sub, ..] => Some((resource, true, Some(sub))),
        [resource] => Some((resource, false, None)),
        [resource, _name] => Some((resource, true, None)),
        [resource, _name, sub, ..] => Some((resource, true, Some(sub))),
    };
    let Some((resource, named, sub)) = target else {
        return (verb_of(method, false, false), "discovery".into());
    };
    let watching = query.is_some_and(|q| {
        q.split('&')
            .any(|kv| matches!(kv, "watch=true" | "watch=1" | "watch=True"))
    });
    let resource = match sub {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource.to_string(),
    };
    (verb_of(method, named, watching), resource)
}

fn verb_of(method: &Method, named: bool, watching: bool) -> &'static str {
    match *method {
        Method::GET if watching => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    }
}

/// A tower layer that counts every request passing through it.
#[derive(Clone)]
pub struct CountRequests {
    metrics: Metrics,
}

impl CountRequests {
    /// Counts into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for CountRequests {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`CountRequests`] wraps.
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, B> Service<Request<B>> for Counted<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (verb, resource) = classify(
            request.method(),
            request.uri().path(),
            request.uri().query(),
        );
        self.metrics.api_request(verb, &resource);
        self.inner.call(request)
    }
}

/// A client for `config` whose requests are counted in `metrics`.
pub fn counted_client(config: Config, metrics: &Metrics) -> Result<Client, kube::Error> {
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&CountRequests::new(metrics.clone()))
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(method: Method, uri: &str) -> (&'static str, String) {
        let (path, query) = match uri.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (uri, None),
        };
        classify(&method, path, query)
    }

    #[test]
    fn reads_are_get_list_or_watch() {
        assert_eq!(
            c(Method::GET, "/api/v1/namespaces/ns/secrets/redis"),
            ("get", "secrets".into())
        );
        assert_eq!(
            c(
                Method::GET,
                "/apis/paystream.io/v1alpha1/paymentpipelines?limit=1"
            ),
            ("list", "paymentpipelines".into())
        );
        assert_eq!(
            c(
                Method::GET,
                "/apis/apps/v1/namespaces/ns/deployments?labelSelector=x&watch=true&timeoutSeconds=290&allowWatchBookmarks=true"
            ),
            ("watch", "deployments".into())
        );
        assert_eq!(
            c(Method::GET, "/api/v1/configmaps?watch=1"),
            ("watch", "configmaps".into())
        );
        assert_eq!(
            c(Method::GET, "/api/v1/namespaces/ns"),
            ("get", "namespaces".into())
        );
        assert_eq!(
            c(Method::GET, "/api/v1/namespaces"),
            ("list", "namespaces".into())
        );
    }

    #[test]
    fn writes_name_their_verb_and_subresource() {
        assert_eq!(
            c(
                Method::PATCH,
                "/apis/paystream.io/v1alpha1/namespaces/ns/paymentpipelines/p/status?fieldManager=x&force=true"
            ),
            ("patch", "paymentpipelines/status".into())
        );
        assert_eq!(
            c(
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/ns/leases/paystream-operator"
            ),
            ("update", "leases".into())
        );
        assert_eq!(
            c(Method::POST, "/apis/events.k8s.io/v1/namespaces/ns/events"),
            ("create", "events".into())
        );
        assert_eq!(
            c(Method::DELETE, "/apis/apps/v1/namespaces/ns/deployments/d"),
            ("delete", "deployments".into())
        );
        assert_eq!(
            c(Method::DELETE, "/api/v1/namespaces/ns/pods"),
            ("deletecollection", "pods".into())
        );
        assert_eq!(
            c(Method::PATCH, "/api/v1/nodes/n/status"),
            ("patch", "nodes/status".into())
        );
    }

    #[test]
    fn other_paths_are_discovery() {
        assert_eq!(c(Method::GET, "/version"), ("list", "discovery".into()));
        assert_eq!(c(Method::GET, "/apis"), ("list", "discovery".into()));
        assert_eq!(c(Method::GET, "/api/v1"), ("list", "discovery".into()));
    }
}
