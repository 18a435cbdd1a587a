//! The application: its shared state ([`App`]), the router with every route,
//! the OpenAPI document generated from the handlers, and the middleware that
//! every request passes (latency metrics, the request deadline, a panic
//! guard and the body limit; unknown routes and methods answer problems).
//! [`health_loop`] keeps the view of Redis, MySQL and the model current, and
//! [`serve`] runs the server until the shutdown token, then drains.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Verifier;
use crate::metrics::ApiMetrics;
use crate::problem::Problem;
use crate::reads::Reads;
use crate::routes;
use crate::store::Store;

/// Request limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Default page size.
    pub page_size: u32,
    /// Largest page size.
    pub max_page_size: u32,
    /// Largest purchase quantity.
    pub max_quantity: u32,
    /// Largest body, bytes.
    pub max_body_bytes: usize,
    /// Request deadline.
    pub request_timeout: Duration,
}

/// Everything a handler needs.
pub struct App {
    /// Token verification.
    pub verifier: Verifier,
    /// The read path.
    pub reads: Reads,
    /// MySQL (writes).
    pub store: Arc<Store>,
    /// Metrics handles.
    pub metrics: ApiMetrics,
    /// The registry behind `/metrics`.
    pub registry: Arc<Registry>,
    /// Limits.
    pub limits: Limits,
    /// The OpenAPI document, serialised once.
    pub openapi: OnceLock<Bytes>,
    /// `/bench/constant`'s body.
    pub bench_body: Bytes,
    /// Whether MySQL answered the last health check.
    pub mysql_up: AtomicBool,
}

impl App {
    /// Ready when reads can be served from Redis or MySQL.
    pub fn is_ready(&self) -> bool {
        self.reads.cache().is_up() || self.mysql_up.load(Ordering::Relaxed)
    }
}

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "HS256 or RS256 JWT: `sub` is the user id, `exp` is required, \
                         `scope` containing `admin` reads anyone's purchases",
                    ))
                    .build(),
            ),
        );
    }
}

/// The OpenAPI document's fixed parts; the paths come from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "paystream payment API",
        description = "Purchases and payments. Reads come from the Redis read model (MySQL on a miss); writes go to MySQL. Errors are application/problem+json (RFC 9457). See docs/api.md.",
    ),
    modifiers(&BearerScheme),
    components(schemas(crate::problem::Problem)),
    tags(
        (name = "purchases", description = "Buying packages and paying for them"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    )
)]
struct ApiDoc;

/// The OpenAPI document of every documented route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented().split_for_parts().1
}

fn documented() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(routes::list_purchases))
        .routes(routes!(routes::get_purchase))
        .routes(routes!(routes::create_purchase))
        .routes(routes!(routes::pay_purchase))
        .routes(routes!(routes::openapi_json))
        .routes(routes!(routes::healthz))
        .routes(routes!(routes::readyz))
        .routes(routes!(routes::metrics))
}

/// The complete router for `app`; `bench` adds the benchmark routes.
pub fn router(app: Arc<App>, bench: bool) -> Router {
    let (mut router, api) = documented().split_for_parts();
    let spec = api
        .to_json()
        .map(Bytes::from)
        .unwrap_or_else(|_| Bytes::from_static(b"{}"));
    let _ = app.openapi.set(spec);
    if bench {
        router = router
            .route("/bench/constant", get(routes::bench_constant))
            .route("/bench/mysql/purchases/{id}", get(routes::bench_mysql));
    }
    let limit = app.limits.max_body_bytes;
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(on_panic))
        .layer(middleware::from_fn_with_state(app.clone(), deadline))
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(app)
}

async fn not_found(req: Request) -> Problem {
    Problem::not_found(format!("no route {} {}", req.method(), req.uri().path()))
}

async fn method_not_allowed(req: Request) -> Problem {
    Problem::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

fn on_panic(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    Problem::internal().into_response()
}

async fn deadline(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let limit = app.limits.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => Problem::unavailable(
            "timeout",
            format!(
                "the request did not finish within {} ms; retry shortly",
                limit.as_millis()
            ),
        )
        .into_response(),
    }
}

async fn observe(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    app.metrics.in_flight.inc();
    let resp = next.run(req).await;
    app.metrics.in_flight.dec();
    app.metrics.requests.observe(
        method.as_str(),
        route.as_ref().map(MatchedPath::as_str),
        resp.status().as_u16(),
        start.elapsed(),
    );
    resp
}

/// Re-checks Redis, MySQL and the model every `interval` until `stop`, and
/// keeps `ready` (the runtime's readiness check) equal to [`App::is_ready`].
pub async fn health_loop(
    app: Arc<App>,
    ready: paystream_runtime::readiness::Check,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        let cache = app.reads.cache();
        let (redis, mysql) = tokio::join!(cache.ping(), async {
            tokio::time::timeout(Duration::from_secs(2), app.store.ping())
                .await
                .unwrap_or(false)
        });
        if redis {
            cache.refresh_status().await;
        }
        if app.mysql_up.swap(mysql, Ordering::Relaxed) != mysql {
            if mysql {
                tracing::info!("mysql answers");
            } else {
                tracing::warn!("mysql is down: only cached reads are served");
            }
        }
        app.metrics.mysql_up.set(i64::from(mysql));
        ready.set(app.is_ready());
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Binds `addr` with an accept backlog of `backlog`.
pub fn bind(addr: std::net::SocketAddr, backlog: u32) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog.max(1))
}

/// Serves `router` on `listener` until `stop`, then stops accepting, lets
/// in-flight requests finish and closes idle keep-alive connections.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}
