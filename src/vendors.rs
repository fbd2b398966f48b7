//! The registry of adapter types: turns an app's `type` and options into an `Arc<dyn Adapter>`.

use std::sync::Arc;

use adapter_api::sandbox::Sandbox;
use adapter_api::{Adapter, OutboundConfig};

use crate::config::{AppConfig, LimitsConfig};

/// The adapter types this build knows.
pub const TYPES: &[&str] = &["sandbox", "prodpad", "promapp", "prompt"];

fn apply_limits(mut base: OutboundConfig, l: &LimitsConfig) -> OutboundConfig {
    use std::time::Duration;
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

/// The vendor's defaults with the app's `limits:` on top, validated.
fn limits_for(defaults: OutboundConfig, l: &LimitsConfig) -> Result<OutboundConfig, String> {
    let merged = apply_limits(defaults, l);
    merged.validate().map_err(|e| format!("limits.{}", e.detail()))?;
    Ok(merged)
}

/// Builds the adapter of one app. Errors name the offending key relative to `apps.<name>`.
pub fn build(name: &str, app: &AppConfig) -> Result<Arc<dyn Adapter>, String> {
    let options = serde_json::Value::Object(app.options.clone());
    match app.vendor.as_str() {
        "sandbox" => {
            if let Some(key) = app.options.keys().next() {
                return Err(format!("unknown key `{key}` (the sandbox type takes no options)"));
            }
            Ok(Arc::new(Sandbox::new()))
        }
        "prodpad" => adapter_prodpad::build(name, options, limits_for(adapter_prodpad::default_limits(), &app.limits)?),
        "promapp" => adapter_promapp::build(name, options, limits_for(adapter_promapp::default_limits(), &app.limits)?),
        "prompt" => adapter_prompt::build(name, options, limits_for(adapter_prompt::default_limits(), &app.limits)?),
        other => Err(format!("type: unknown adapter type '{other}' (known: {})", TYPES.join(", "))),
    }
}
