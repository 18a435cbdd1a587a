//! Request extractors whose every rejection is a problem document: the
//! authenticated [`Caller`], a numeric id from the path ([`PathId`]), the
//! query string ([`QueryParams`]) and a JSON body ([`JsonBody`]) that checks
//! the content type (415), the size limit (413) and the syntax and shape
//! (400) in that order.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::app::App;
use crate::auth::Caller;
use crate::problem::Problem;

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Problem> {
        app.verifier
            .verify(
                parts
                    .headers
                    .get(header::AUTHORIZATION)
                    .map(|v| v.as_bytes()),
            )
            .map_err(|e| Problem::unauthorized(e.to_string()))
    }
}

/// The route's single `{id}` or `{user_id}` segment as a positive `u64`.
#[derive(Debug, Clone, Copy)]
pub struct PathId(pub u64);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| Problem::bad_request("invalid-id", e.body_text()))?;
        let what = if parts.uri.path().starts_with("/v1/users/") {
            "user id"
        } else {
            "purchase id"
        };
        crate::params::id(what, &raw).map(PathId)
    }
}

/// The query parameters the read endpoints know; others are ignored.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadParams {
    /// Page size, 1 to the configured maximum (lists only).
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page (lists only).
    pub cursor: Option<String>,
    /// Read-your-writes: the smallest acceptable version (`<version>`), or
    /// the consistency token `<purchase_id>:<version>` a write returned.
    /// Same as the `X-Min-Version` header.
    pub min_version: Option<String>,
}

/// Parsed query string.
#[derive(Debug, Clone, Default)]
pub struct QueryParams(pub ReadParams);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        Query::<ReadParams>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| Self(q))
            .map_err(|e| Problem::bad_request("invalid-query", e.body_text()))
    }
}

/// A JSON request body.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

fn is_json(ct: &str) -> bool {
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !is_json(ct) {
            return Err(Problem::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                if ct.is_empty() {
                    "the body must be JSON: send Content-Type: application/json".to_string()
                } else {
                    format!("the body must be JSON (application/json), not {ct:?}")
                },
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                Problem::new(
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                    "body-too-large",
                    "Body too large",
                    "the request body is larger than the configured limit",
                )
            } else {
                Problem::bad_request("invalid-body", e.body_text())
            }
        })?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            Problem::bad_request("invalid-body", format!("the JSON body is not valid: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_media_types() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("Application/JSON"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json(""));
        assert!(!is_json("application/x-www-form-urlencoded"));
    }
}
