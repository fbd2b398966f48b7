//! SCIM error responses (RFC 7644 §3.12) and the ONE place where an adapter error becomes the HTTP status,
//! `scimType` and `Retry-After` that Entra sees.

use std::time::Duration;

use adapter_api::{Error as AdapterError, ErrorKind};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
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

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut resp = (self.status, body).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_CONTENT_TYPE));
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                headers.insert(header::RETRY_AFTER, v);
            }
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"scim-bridge\""));
        }
        resp
    }
}

/// Default wait suggested to Entra when the vendor said nothing.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(30);
/// A revoked vendor credential will not fix itself quickly; ask Entra to come back much later.
const CREDENTIAL_RETRY_AFTER: Duration = Duration::from_secs(300);

fn seconds(d: Option<Duration>, default: Duration) -> u64 {
    let d = d.unwrap_or(default);
    // Round up: Retry-After 0 would invite an immediate hammering.
    (d.as_millis().div_ceil(1000) as u64).max(1)
}

/// The one mapping from an adapter error to what Entra sees.
///
/// A vendor 401/403 is the gateway's credential problem, not Entra's: answering 401 would make the admin
/// chase the wrong secret, so it becomes 503 with a detail naming the vendor credential.
pub fn from_adapter(app: &str, err: &AdapterError) -> ScimError {
    let detail = format!("{app}: {}", err.detail());
    match err.kind() {
        ErrorKind::NotFound => ScimError::not_found(detail),
        ErrorKind::Conflict => ScimError::uniqueness(detail),
        ErrorKind::Invalid => ScimError::invalid_value(detail),
        ErrorKind::Unsupported => ScimError::not_implemented(detail),
        ErrorKind::NeedsManualAction => ScimError::new(StatusCode::CONFLICT, None, detail),
        ErrorKind::RateLimited { retry_after } => ScimError {
            retry_after: Some(seconds(*retry_after, DEFAULT_RETRY_AFTER)),
            ..ScimError::new(StatusCode::TOO_MANY_REQUESTS, None, detail)
        },
        ErrorKind::Unavailable { retry_after } => {
            ScimError::unavailable(seconds(*retry_after, DEFAULT_RETRY_AFTER), detail)
        }
        ErrorKind::Unauthorized => ScimError::unavailable(
            seconds(None, CREDENTIAL_RETRY_AFTER),
            format!(
                "{detail} (the vendor refused the gateway's credential for app '{app}'; fix it in the gateway config)"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapter_errors_map_to_entra_statuses() {
        let table = [
            (AdapterError::not_found("x"), 404, None, None),
            (AdapterError::conflict("x"), 409, Some("uniqueness"), None),
            (AdapterError::invalid("x"), 400, Some("invalidValue"), None),
            (AdapterError::unsupported("x"), 501, None, None),
            (AdapterError::needs_manual_action("x"), 409, None, None),
            (AdapterError::rate_limited(Some(Duration::from_millis(1500)), "x"), 429, None, Some(2)),
            (AdapterError::rate_limited(None, "x"), 429, None, Some(30)),
            (AdapterError::unavailable(Some(Duration::from_secs(7)), "x"), 503, None, Some(7)),
            (AdapterError::unavailable(Some(Duration::ZERO), "x"), 503, None, Some(1)),
            (AdapterError::unauthorized("x"), 503, None, Some(300)),
        ];
        for (err, status, scim_type, retry_after) in table {
            let mapped = from_adapter("app", &err);
            assert_eq!(mapped.status.as_u16(), status, "{err}");
            assert_eq!(mapped.scim_type, scim_type, "{err}");
            assert_eq!(mapped.retry_after, retry_after, "{err}");
            assert_eq!(mapped.is_retryable(), err.is_retryable() || status == 503, "{err}");
        }
    }

    #[test]
    fn error_body_follows_rfc7644() {
        let body = ScimError::invalid_filter("bad").body();
        assert_eq!(body["schemas"][0], ERROR_SCHEMA);
        assert_eq!(body["status"], "400");
        assert_eq!(body["scimType"], "invalidFilter");
        assert!(ScimError::not_found("gone").body().get("scimType").is_none());
    }
}
