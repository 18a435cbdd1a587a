//! RFC 9457 problem details: every error the API answers is an
//! `application/problem+json` document with a `type`, a `title`, the `status`
//! and a `detail` that says what was wrong with this request. The `type` is a
//! relative URI, `/problems/<slug>`, listed in `docs/api.md`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The media type of a problem document.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One problem, ready to be answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// `/problems/<slug>`: what kind of problem this is.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind, the same for every occurrence.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What was wrong with this request.
    pub detail: String,
    /// Seconds after which a retry may succeed (503 only).
    #[serde(skip)]
    pub retry_after: Option<u32>,
    /// Extra response headers (e.g. `WWW-Authenticate`).
    #[serde(skip)]
    pub challenge: Option<&'static str>,
}

impl Problem {
    /// A problem of `status`, kind `slug`, with a `title` and a `detail`.
    pub fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("/problems/{slug}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            retry_after: None,
            challenge: None,
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(slug: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, slug, "Bad request", detail)
    }

    /// 401: no usable credentials.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        let mut p = Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Missing or invalid bearer token",
            detail,
        );
        p.challenge = Some("Bearer error=\"invalid_token\"");
        p
    }

    /// 403: authenticated, but not allowed.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }

    /// 404: no such resource (or one the caller may not know exists).
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    /// 409: the request conflicts with the resource's state.
    pub fn conflict(slug: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, slug, "Conflict", detail)
    }

    /// 412: `If-Match` did not match the current version.
    pub fn precondition_failed(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "version-mismatch",
            "Precondition failed",
            detail,
        )
    }

    /// 422: well-formed, but not acceptable.
    pub fn unprocessable(slug: &str, detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            slug,
            "Unprocessable request",
            detail,
        )
    }

    /// 503: try again shortly.
    pub fn unavailable(slug: &str, detail: impl Into<String>) -> Self {
        let mut p = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            slug,
            "Service unavailable",
            detail,
        );
        p.retry_after = Some(1);
        p
    }

    /// 500: a fault of ours, never of the input; the detail stays generic.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the request failed; it is safe to retry",
        )
    }

    /// The status code.
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| b"{}".to_vec());
        let mut resp = (status, body).into_response();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(c) = self.challenge {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_the_rfc_9457_members() {
        let p = Problem::bad_request("invalid-id", "purchase id \"x\" is not a number");
        let v = serde_json::to_value(&p).unwrap_or_default();
        assert_eq!(v["type"], "/problems/invalid-id");
        assert_eq!(v["status"], 400);
        assert_eq!(v["title"], "Bad request");
        assert!(
            v["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("not a number")
        );
        assert!(v.get("retry_after").is_none());
        let r = Problem::unavailable("busy", "x").into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let r = Problem::unauthorized("x").into_response();
        assert!(r.headers().contains_key(header::WWW_AUTHENTICATE));
    }
}
