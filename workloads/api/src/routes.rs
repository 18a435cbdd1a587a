//! The HTTP handlers, each annotated for the OpenAPI document: reads
//! (`GET /v1/purchases/{id}`, `GET /v1/users/{user_id}/purchases`), writes
//! (`POST /v1/purchases`, `POST /v1/purchases/{id}/payments`), and the
//! operational routes. Handlers only translate: HTTP in, a call into
//! [`crate::reads`] or [`crate::store`], HTTP out.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use crate::app::App;
use crate::auth::Caller;
use crate::document;
use crate::extract::{JsonBody, PathId, QueryParams, ReadParams};
use crate::params::{self, MinVersion};
use crate::problem::Problem;
use crate::reads::ReadError;
use crate::store::{Joined, PaymentView, StoreError, WriteError};
use crate::writes::{NewPayment, NewPurchase};

/// `X-Min-Version`: read-your-writes on reads.
pub const X_MIN_VERSION: HeaderName = HeaderName::from_static("x-min-version");
/// `X-Consistency-Token`: returned by writes, `<purchase_id>:<version>`.
pub const X_CONSISTENCY_TOKEN: HeaderName = HeaderName::from_static("x-consistency-token");
/// `Idempotency-Key`: required on writes.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// `Idempotent-Replayed`: `true` when a write answers a retry.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// A package as shown with a purchase.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PackageOut {
    /// Package id.
    pub id: u64,
    /// Business code.
    pub code: String,
    /// Display name.
    pub name: String,
    /// Unit price, exact decimal string.
    #[schema(example = "19.99")]
    pub price: String,
    /// ISO-4217 currency.
    pub currency: String,
    /// Whether it can still be bought.
    pub active: bool,
    /// Row version.
    pub version: u64,
}

/// A purchase with its package.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PurchaseOut {
    /// Purchase id.
    pub id: u64,
    /// The buyer.
    pub user_id: u64,
    /// The package bought.
    pub package_id: u64,
    /// Units bought.
    pub quantity: u32,
    /// Total, exact decimal string (price × quantity when bought).
    #[schema(example = "59.97")]
    pub amount: String,
    /// ISO-4217 currency.
    pub currency: String,
    /// `pending`, `paid`, `cancelled` or `refunded`.
    #[schema(example = "pending")]
    pub status: String,
    /// Creation time, UTC with microseconds.
    #[schema(example = "2026-01-01T00:00:00.000000Z")]
    pub created_at: String,
    /// Last change, UTC with microseconds.
    #[schema(example = "2026-01-01T00:00:00.000000Z")]
    pub updated_at: String,
    /// Row version; also the `ETag`.
    pub version: u64,
    /// The package.
    pub package: PackageOut,
}

/// One page of a user's purchases, newest first.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PageOut {
    /// The purchases.
    pub items: Vec<PurchaseOut>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A payment and the purchase it paid.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PaidOut {
    /// The payment.
    pub payment: PaymentView,
    /// The purchase after the payment.
    pub purchase: PurchaseOut,
}

fn read_problem(e: ReadError, what: &str) -> Problem {
    match e {
        ReadError::NotFound => Problem::not_found(format!("{what} was not found")),
        ReadError::Forbidden => {
            Problem::forbidden("a user may only read their own purchases (or hold the admin scope)")
        }
        ReadError::Busy => Problem::unavailable(
            "database-busy",
            "the read model cannot answer and the database read limit is saturated; retry shortly",
        ),
        ReadError::Unavailable(_) => Problem::unavailable(
            "unavailable",
            "neither the read model nor the database can answer right now",
        ),
    }
}

fn write_problem(e: WriteError) -> Problem {
    match e {
        WriteError::NotFound => Problem::not_found("the purchase was not found"),
        WriteError::UnknownPackage(id) => {
            Problem::unprocessable("unknown-package", format!("package {id} does not exist"))
        }
        WriteError::InactivePackage(id) => Problem::unprocessable(
            "package-inactive",
            format!("package {id} can no longer be bought"),
        ),
        WriteError::AmountTooLarge => Problem::unprocessable(
            "amount-too-large",
            "price times quantity exceeds the largest amount a purchase can hold",
        ),
        WriteError::UnknownUser(id) => {
            Problem::forbidden(format!("the token's user {id} does not exist"))
        }
        WriteError::KeyReused(why) => Problem::unprocessable("idempotency-key-reused", why),
        WriteError::Refused(r) => r.problem(),
        WriteError::VersionConflict => Problem::conflict(
            "version-conflict",
            "the purchase changed while it was being paid; read it again and retry",
        ),
        WriteError::Store(StoreError::Row(why)) => {
            tracing::error!(%why, "unexpected database row");
            Problem::internal()
        }
        WriteError::Store(e) => {
            tracing::warn!(error = %e, "write failed");
            Problem::unavailable(
                "database-unavailable",
                "the database cannot take writes right now",
            )
        }
    }
}

fn json(status: StatusCode, body: Bytes) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn min_version(q: &ReadParams, headers: &HeaderMap) -> Result<Option<MinVersion>, Problem> {
    let raw = match (&q.min_version, headers.get(X_MIN_VERSION)) {
        (Some(q), _) => Some(q.as_str()),
        (None, Some(h)) => Some(h.to_str().map_err(|_| {
            Problem::bad_request("invalid-min-version", "X-Min-Version must be ASCII")
        })?),
        (None, None) => None,
    };
    raw.map(params::min_version).transpose()
}

/// Read one purchase.
#[utoipa::path(
    get,
    path = "/v1/purchases/{id}",
    tag = "purchases",
    params(
        ("id" = u64, Path, description = "Purchase id", minimum = 1),
        ReadParams,
        ("X-Min-Version" = Option<String>, Header, description = "Same as `min_version`"),
    ),
    responses(
        (status = 200, description = "The purchase", body = PurchaseOut,
            headers(("ETag" = String, description = "The version, quoted"))),
        (status = 400, description = "Malformed id or min_version", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such purchase, or not the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "No store can answer", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_purchase(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathId(id): PathId,
    QueryParams(q): QueryParams,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let min = min_version(&q, &headers)?;
    if let Some(MinVersion {
        purchase_id: Some(pid),
        ..
    }) = min
        && pid != id
    {
        return Err(Problem::bad_request(
            "invalid-min-version",
            format!("the consistency token names purchase {pid}, not {id}"),
        ));
    }
    let served = app
        .reads
        .purchase(caller, id, min.map(|m| m.version))
        .await
        .map_err(|e| read_problem(e, &format!("purchase {id}")))?;
    let mut r = json(StatusCode::OK, served.body);
    r.headers_mut()
        .insert(header::ETAG, header_value(&params::etag(served.version)));
    Ok(r)
}

/// List a user's purchases, newest first.
#[utoipa::path(
    get,
    path = "/v1/users/{user_id}/purchases",
    tag = "purchases",
    params(
        ("user_id" = u64, Path, description = "User id", minimum = 1),
        ReadParams,
        ("X-Min-Version" = Option<String>, Header, description = "Same as `min_version`: a consistency token `<purchase_id>:<version>`"),
    ),
    responses(
        (status = 200, description = "One page", body = PageOut),
        (status = 400, description = "Malformed id, limit, cursor or min_version", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Another user's list", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "No store can answer", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_purchases(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathId(user_id): PathId,
    QueryParams(q): QueryParams,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let limit = params::limit(
        q.limit.as_deref(),
        app.limits.page_size,
        app.limits.max_page_size,
    )?;
    let cursor = params::cursor(q.cursor.as_deref())?;
    let token = min_version(&q, &headers)?;
    if let Some(MinVersion {
        purchase_id: None, ..
    }) = token
    {
        return Err(Problem::bad_request(
            "invalid-min-version",
            "on a list, min_version must be the consistency token <purchase_id>:<version>",
        ));
    }
    let body = app
        .reads
        .user_purchases(caller, user_id, cursor, limit, token)
        .await
        .map_err(|e| read_problem(e, &format!("user {user_id}")))?;
    Ok(json(StatusCode::OK, body))
}

fn purchase_doc(j: &Joined) -> Result<Bytes, Problem> {
    document::purchase(
        &document::purchase_bytes(&j.0),
        &document::package_bytes(&j.1),
    )
    .ok_or_else(Problem::internal)
}

fn written(status: StatusCode, body: Bytes, j: &Joined, replayed: bool) -> Response {
    let mut r = json(status, body);
    let h = r.headers_mut();
    h.insert(header::ETAG, header_value(&params::etag(j.0.version)));
    h.insert(
        X_CONSISTENCY_TOKEN,
        header_value(&params::consistency_token(j.0.id, j.0.version)),
    );
    h.insert(
        IDEMPOTENT_REPLAYED,
        HeaderValue::from_static(if replayed { "true" } else { "false" }),
    );
    r
}

/// Buy a package.
#[utoipa::path(
    post,
    path = "/v1/purchases",
    tag = "purchases",
    params(("Idempotency-Key" = String, Header, description = "Required; a retry with the same key returns the first result")),
    request_body(content = NewPurchase, content_type = "application/json"),
    responses(
        (status = 201, description = "Created (or the first result of a retry)", body = PurchaseOut,
            headers(
                ("Location" = String, description = "The purchase"),
                ("ETag" = String, description = "The version, quoted"),
                ("X-Consistency-Token" = String, description = "`<purchase_id>:<version>`, for min_version"),
                ("Idempotent-Replayed" = bool, description = "true when this answers a retry"),
            )),
        (status = 400, description = "Malformed body or missing Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown or inactive package, or key reused with another body", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_purchase(
    State(app): State<Arc<App>>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(req): JsonBody<NewPurchase>,
) -> Result<Response, Problem> {
    let key = params::idempotency_key(headers.get(IDEMPOTENCY_KEY).map(|v| v.as_bytes()))?;
    req.validate(app.limits.max_quantity)?;
    let created = app
        .store
        .create_purchase(caller.user_id, &req, key)
        .await
        .map_err(write_problem)?;
    let body = purchase_doc(&created.joined)?;
    let mut r = written(StatusCode::CREATED, body, &created.joined, created.replayed);
    r.headers_mut().insert(
        header::LOCATION,
        header_value(&format!("/v1/purchases/{}", created.joined.0.id)),
    );
    Ok(r)
}

/// Pay for a purchase.
#[utoipa::path(
    post,
    path = "/v1/purchases/{id}/payments",
    tag = "purchases",
    params(
        ("id" = u64, Path, description = "Purchase id", minimum = 1),
        ("Idempotency-Key" = String, Header, description = "Required; a retry with the same key returns the first result"),
        ("If-Match" = Option<String>, Header, description = "The purchase's ETag; 412 if it changed"),
    ),
    request_body(content = NewPayment, content_type = "application/json"),
    responses(
        (status = 201, description = "Paid (or the first result of a retry)", body = PaidOut,
            headers(
                ("ETag" = String, description = "The purchase's new version, quoted"),
                ("X-Consistency-Token" = String, description = "`<purchase_id>:<version>`, for min_version"),
                ("Idempotent-Replayed" = bool, description = "true when this answers a retry"),
            )),
        (status = 400, description = "Malformed id, body, If-Match or missing Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such purchase, or not the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already paid, cancelled, or changed concurrently", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match does not match", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Key reused for another purchase", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn pay_purchase(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathId(id): PathId,
    headers: HeaderMap,
    JsonBody(req): JsonBody<NewPayment>,
) -> Result<Response, Problem> {
    let key = params::idempotency_key(headers.get(IDEMPOTENCY_KEY).map(|v| v.as_bytes()))?;
    let if_match = params::if_match(headers.get(header::IF_MATCH).map(|v| v.as_bytes()))?;
    let paid = app
        .store
        .pay(caller.user_id, id, &req, key, if_match)
        .await
        .map_err(write_problem)?;
    let purchase = purchase_doc(&paid.joined)?;
    let payment = document::to_bytes(&paid.payment);
    let mut out = BytesMut::with_capacity(payment.len() + purchase.len() + 32);
    out.put_slice(b"{\"payment\":");
    out.put_slice(&payment);
    out.put_slice(b",\"purchase\":");
    out.put_slice(&purchase);
    out.put_u8(b'}');
    Ok(written(
        StatusCode::CREATED,
        out.freeze(),
        &paid.joined,
        paid.replayed,
    ))
}

/// The OpenAPI document of this API.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json")))]
pub async fn openapi_json(State(app): State<Arc<App>>) -> Response {
    json(
        StatusCode::OK,
        app.openapi
            .get()
            .cloned()
            .unwrap_or_else(|| Bytes::from_static(b"{}")),
    )
}

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", content_type = "text/plain")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: reads can be served from Redis or MySQL.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", content_type = "text/plain"),
        (status = 503, description = "Neither Redis nor MySQL answers", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.is_ready() {
        "ready\n".into_response()
    } else {
        Problem::unavailable("not-ready", "neither Redis nor MySQL answers").into_response()
    }
}

/// Prometheus metrics (also on the operations port).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text")))]
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &app.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => Problem::internal().into_response(),
    }
}

/// Benchmark only: a constant body of the cached payload's size.
pub async fn bench_constant(State(app): State<Arc<App>>) -> Response {
    json(StatusCode::OK, app.bench_body.clone())
}

/// Benchmark only: one purchase straight from MySQL, no cache, no coalescing.
pub async fn bench_mysql(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathId(id): PathId,
) -> Result<Response, Problem> {
    let j = app
        .store
        .purchase(id)
        .await
        .map_err(|e| match e {
            StoreError::Busy => read_problem(ReadError::Busy, ""),
            other => read_problem(ReadError::Unavailable(other.to_string()), ""),
        })?
        .filter(|j| caller.may_read(j.0.user_id))
        .ok_or_else(|| Problem::not_found(format!("purchase {id} was not found")))?;
    let mut r = json(StatusCode::OK, purchase_doc(&j)?);
    r.headers_mut()
        .insert(header::ETAG, header_value(&params::etag(j.0.version)));
    Ok(r)
}
