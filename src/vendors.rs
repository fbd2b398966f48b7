//! The vendor registry: the one list of vendor types this build knows (`VENDORS`), and the build of an
//! app's adapter from its `type`, options and limits. Adding a vendor is its crate under `adapters/` and
//! one line in `VENDORS` (with its Cargo dependency).

use std::sync::Arc;
use std::time::Duration;

use adapter_api::{Adapter, OutboundConfig, Vendor};

use crate::config::{AppConfig, LimitsConfig};

/// Every vendor type this build knows, in the order `type:` errors list them.
pub static VENDORS: &[&dyn Vendor] =
    &[&adapter_api::sandbox::VENDOR, &adapter_prodpad::VENDOR, &adapter_promapp::VENDOR, &adapter_prompt::VENDOR];

/// The registry entry of `type:`.
pub fn find(type_name: &str) -> Option<&'static dyn Vendor> {
    VENDORS.iter().copied().find(|v| v.type_name() == type_name)
}

/// The `type:` names, for errors and docs.
pub fn type_names() -> Vec<&'static str> {
    VENDORS.iter().map(|v| v.type_name()).collect()
}

fn apply_limits(mut base: OutboundConfig, l: &LimitsConfig) -> OutboundConfig {
    let ms = Duration::from_millis;
    if let Some(v) = l.requests_per_second {
        base.requests_per_second = v;
    }
    if let Some(v) = l.burst {
        base.burst = v;
    }
    if let Some(v) = l.max_in_flight {
        base.max_in_flight = v;
    }
    if let Some(v) = l.queue_timeout_ms {
        base.queue_timeout = ms(v);
    }
    if let Some(v) = l.attempt_timeout_ms {
        base.attempt_timeout = ms(v);
    }
    if let Some(v) = l.deadline_ms {
        base.deadline = ms(v);
    }
    if let Some(v) = l.max_attempts {
        base.max_attempts = v;
    }
    if let Some(v) = l.breaker_failures {
        base.breaker_failures = v;
    }
    if let Some(v) = l.breaker_cooldown_ms {
        base.breaker_cooldown = ms(v);
    }
    base
}

/// Why an app's `limits:` (or the vendor notes' spellings `max_rps`, `retry_budget`) cannot be used. Each
/// names its key relative to `apps.<name>`.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    /// The merged limits contradict each other (the outbound client says which key).
    #[error("limits.{}", .0.detail())]
    Outbound(#[source] adapter_api::Error),
    #[error(
        "limits.attempt_timeout_ms ({attempt_ms} ms) is longer than request_budget_ms ({budget_ms} ms): every slow \
         attempt would be cut short; lower it or raise request_budget_ms"
    )]
    LongerThanBudget { attempt_ms: u128, budget_ms: u128 },
    #[error("`max_rps`: must be a number above 0")]
    MaxRps,
    #[error("`retry_budget`: must be a whole number")]
    RetryBudget,
    /// A vendor-note spelling given beside the `limits:` key it stands for.
    #[error("`{alias}` and `limits.{key}` are the same setting: give one")]
    GivenTwice { alias: &'static str, key: &'static str },
}

/// The vendor's defaults with the app's `limits:` on top, validated, also against the Entra request's
/// time budget (an attempt longer than the whole budget would always be cut short).
fn limits_for(defaults: OutboundConfig, l: &LimitsConfig, budget: Duration) -> Result<OutboundConfig, LimitsError> {
    let merged = apply_limits(defaults, l);
    merged.validate().map_err(LimitsError::Outbound)?;
    if merged.attempt_timeout > budget {
        return Err(LimitsError::LongerThanBudget {
            attempt_ms: merged.attempt_timeout.as_millis(),
            budget_ms: budget.as_millis(),
        });
    }
    Ok(merged)
}

/// The vendor notes spell two limits beside the vendor keys: `max_rps` (= `limits.requests_per_second`)
/// and `retry_budget` (retries after the first attempt, = `limits.max_attempts - 1`). Both are accepted
/// there and moved into the limits; giving a value both ways is refused rather than guessed.
fn take_limit_aliases(
    app: &AppConfig,
) -> Result<(serde_json::Map<String, serde_json::Value>, LimitsConfig), LimitsError> {
    let mut options = app.options.clone();
    let mut limits = app.limits.clone();
    if let Some(v) = options.remove("max_rps") {
        let rps = v.as_f64().filter(|r| r.is_finite() && *r > 0.0).ok_or(LimitsError::MaxRps)?;
        if limits.requests_per_second.is_some() {
            return Err(LimitsError::GivenTwice { alias: "max_rps", key: "requests_per_second" });
        }
        limits.requests_per_second = Some(rps);
    }
    if let Some(v) = options.remove("retry_budget") {
        let retries = v.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or(LimitsError::RetryBudget)?;
        if limits.max_attempts.is_some() {
            return Err(LimitsError::GivenTwice { alias: "retry_budget", key: "max_attempts" });
        }
        limits.max_attempts = Some(retries.saturating_add(1));
    }
    Ok((options, limits))
}

/// Why an app's adapter could not be built. Each names the offending key relative to `apps.<name>`.
#[derive(Debug, thiserror::Error)]
pub enum AppBuildError {
    #[error("type: unknown adapter type '{given}' (known: {known})")]
    UnknownType { given: String, known: String },
    /// `limits:` (or its aliases `max_rps`, `retry_budget`) cannot be used.
    #[error(transparent)]
    Limits(#[from] LimitsError),
    /// The vendor refused its options.
    #[error(transparent)]
    Vendor(#[from] adapter_api::BuildError),
}

/// Builds the adapter of one app. Errors name the offending key relative to `apps.<name>`.
/// `shared`: the replicas' common vendor schedule, if the store has one.
pub fn build(
    name: &str,
    app: &AppConfig,
    request_budget: Duration,
    shared: &adapter_api::budget::SharedBudget,
) -> Result<Arc<dyn Adapter>, AppBuildError> {
    let Some(vendor) = find(&app.vendor) else {
        return Err(AppBuildError::UnknownType { given: app.vendor.clone(), known: type_names().join(", ") });
    };
    let build = |options, limits| match app.group_roles.is_empty() {
        true => vendor.build(name, serde_json::Value::Object(options), limits),
        false => vendor.build_for_group_roles(name, serde_json::Value::Object(options), limits),
    };
    if !vendor.has_limits() {
        return Ok(build(app.options.clone(), vendor.default_limits())?);
    }
    let (options, limits) = take_limit_aliases(app)?;
    let mut limits = limits_for(vendor.default_limits(), &limits, request_budget)?;
    limits.shared = shared.clone();
    Ok(build(options, limits)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app(options: serde_json::Value, limits: LimitsConfig) -> AppConfig {
        AppConfig {
            vendor: "prompt".into(),
            token_sha256: "0".repeat(64),
            limits,
            ip_allow: Vec::new(),
            reconcile: Default::default(),
            group_roles: Vec::new(),
            options: options.as_object().unwrap().clone(),
        }
    }

    #[test]
    fn vendor_note_limit_spellings_become_limits() {
        let (options, limits) = take_limit_aliases(&app(
            json!({"auth_code": "c", "max_rps": 0.5, "retry_budget": 2}),
            LimitsConfig::default(),
        ))
        .unwrap();
        assert_eq!(options.keys().collect::<Vec<_>>(), ["auth_code"], "the adapter never sees them");
        assert_eq!((limits.requests_per_second, limits.max_attempts), (Some(0.5), Some(3)));
        let merged = limits_for(adapter_prompt::default_limits(), &limits, Duration::from_secs(30)).unwrap();
        assert_eq!((merged.requests_per_second, merged.max_attempts), (0.5, 3));
    }

    #[test]
    fn an_attempt_longer_than_the_request_budget_is_refused() {
        let slow = LimitsConfig { attempt_timeout_ms: Some(20_000), deadline_ms: Some(25_000), ..Default::default() };
        let err = limits_for(adapter_prompt::default_limits(), &slow, Duration::from_secs(15)).unwrap_err().to_string();
        assert!(err.contains("limits.attempt_timeout_ms (20000 ms)") && err.contains("request_budget_ms"), "{err}");
        assert!(limits_for(adapter_prompt::default_limits(), &slow, Duration::from_secs(30)).is_ok());
    }

    #[test]
    fn a_limit_given_both_ways_or_badly_is_refused_with_the_key() {
        let both = LimitsConfig { requests_per_second: Some(2.0), ..Default::default() };
        let err = take_limit_aliases(&app(json!({"max_rps": 1}), both)).unwrap_err().to_string();
        assert!(err.contains("`max_rps`") && err.contains("limits.requests_per_second"), "{err}");
        let both = LimitsConfig { max_attempts: Some(2), ..Default::default() };
        let err = take_limit_aliases(&app(json!({"retry_budget": 1}), both)).unwrap_err().to_string();
        assert!(err.contains("`retry_budget`") && err.contains("limits.max_attempts"), "{err}");
        for (bad, key) in [(json!({"max_rps": 0}), "`max_rps`"), (json!({"retry_budget": -1}), "`retry_budget`")] {
            let err = take_limit_aliases(&app(bad, LimitsConfig::default())).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
    }
}
