//! SCIM error responses (RFC 7644 §3.12): the error a SCIM service answers, its body and headers. The one
//! mapping from a vendor adapter's error to this type lives in the gateway (`scim_bridge::vendor_errors`).

use std::time::Duration;

pub use http::StatusCode;
use serde_json::json;

pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
pub const SCIM_CONTENT_TYPE: &str = "application/scim+json";

/// What the gateway tells Entra when a request does not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScimError {
    pub status: StatusCode,
    pub scim_type: Option<&'static str>,
    pub detail: String,
    /// Seconds Entra should wait before trying again (429/503 only).
    pub retry_after: Option<u64>,
}

impl ScimError {
    pub fn new(status: StatusCode, scim_type: Option<&'static str>, detail: impl Into<String>) -> Self {
        ScimError { status, scim_type, detail: detail.into(), retry_after: None }
    }
    pub fn bad_request(scim_type: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some(scim_type), detail)
    }
    pub fn invalid_syntax(detail: impl Into<String>) -> Self {
        Self::bad_request("invalidSyntax", detail)
    }
    pub fn invalid_value(detail: impl Into<String>) -> Self {
        Self::bad_request("invalidValue", detail)
    }
    pub fn invalid_filter(detail: impl Into<String>) -> Self {
        Self::bad_request("invalidFilter", detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, None, detail)
    }
    pub fn uniqueness(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, Some("uniqueness"), detail)
    }
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, None, detail)
    }
    pub fn not_implemented(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, None, detail)
    }
    pub fn unavailable(retry_after: u64, detail: impl Into<String>) -> Self {
        ScimError { retry_after: Some(retry_after.max(1)), ..Self::new(StatusCode::SERVICE_UNAVAILABLE, None, detail) }
    }
    /// The gateway's own store cannot read or write: transient from Entra's point of view, so 503 makes it
    /// retry instead of giving up. The detail is fixed: the database's own error text stays in the log.
    /// 503 for a store failure before any vendor call (or a read): nothing was changed at the vendor.
    pub fn store_unavailable() -> Self {
        Self::unavailable(30, "the gateway's store is unavailable; nothing was changed at the vendor or the change is recorded; try again")
    }
    /// 503 for a store failure after the vendor made the change: the vendor has it, the gateway's shadow
    /// and audit log do not (the audit entry stays an open intent); Entra's retry finds the vendor's record.
    pub fn store_unavailable_after_vendor() -> Self {
        Self::unavailable(
            30,
            "the vendor made the change but the gateway's store is unavailable and could not record it; \
             try again (the retry finds the vendor's record)",
        )
    }
    /// 429 for a source that failed the bearer-token check too often.
    pub fn too_many_auth_failures(wait: Duration) -> Self {
        let secs = wait.as_secs_f64().ceil() as u64;
        ScimError {
            retry_after: Some(secs.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                None,
                "too many failed authentication attempts from this address",
            )
        }
    }

    pub fn body(&self) -> serde_json::Value {
        let mut body = json!({
            "schemas": [ERROR_SCHEMA],
            "status": self.status.as_u16().to_string(),
            "detail": self.detail,
        });
        if let Some(t) = self.scim_type {
            body["scimType"] = json!(t);
        }
        body
    }

    /// Whether Entra may retry this request later and succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        self.status == StatusCode::TOO_MANY_REQUESTS || self.status == StatusCode::SERVICE_UNAVAILABLE
    }
}

impl std::fmt::Display for ScimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.scim_type.unwrap_or("-"), self.detail)
    }
}

impl ScimError {
    /// The response headers beside the body: content type, `Retry-After` (429/503), `WWW-Authenticate`
    /// (401).
    pub fn headers(&self) -> http::HeaderMap {
        use http::header::{self, HeaderValue};
        let mut headers = http::HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_CONTENT_TYPE));
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"scim-bridge\""));
        }
        headers
    }
}

#[cfg(feature = "axum")]
impl axum_core::response::IntoResponse for ScimError {
    fn into_response(self) -> axum_core::response::Response {
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut resp = axum_core::response::Response::new(axum_core::body::Body::from(body));
        *resp.status_mut() = self.status;
        *resp.headers_mut() = self.headers();
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_follows_rfc7644() {
        let body = ScimError::invalid_filter("bad").body();
        assert_eq!(body["schemas"][0], ERROR_SCHEMA);
        assert_eq!(body["status"], "400");
        assert_eq!(body["scimType"], "invalidFilter");
        assert!(ScimError::not_found("gone").body().get("scimType").is_none());
    }
}
