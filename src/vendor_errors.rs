//! The ONE place where a vendor adapter's error becomes the HTTP status, `scimType` and `Retry-After`
//! that Entra sees (ARCHITECTURE invariant 5).

use std::time::Duration;

use adapter_api::{Error as AdapterError, ErrorKind};

use crate::scim::error::{ScimError, StatusCode};

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
    // The outbound client already names the app in its own errors ("acme: circuit open ..."): once is
    // enough for the admin reading Entra's provisioning log.
    let detail = match err.detail().strip_prefix(app).and_then(|rest| rest.strip_prefix(": ")) {
        Some(_) => err.detail().to_string(),
        None => format!("{app}: {}", err.detail()),
    };
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
    fn the_app_is_named_once() {
        let own = from_adapter("pm", &AdapterError::unavailable(None, "pm: circuit open"));
        assert_eq!(own.detail, "pm: circuit open");
        let vendor = from_adapter("pm", &AdapterError::invalid("email taken"));
        assert_eq!(vendor.detail, "pm: email taken");
        // A detail that merely starts with the app's letters is still prefixed.
        let other = from_adapter("pm", &AdapterError::invalid("pmx: odd"));
        assert_eq!(other.detail, "pm: pmx: odd");
    }
}
