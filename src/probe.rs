//! Vendor probes: a harmless read against each app's vendor (at start and every six hours in `serve`, and
//! on demand by `check`) that keeps each app's vendor state and warnings current for `/readyz`, the
//! status page and `scim_bridge_vendor_state`, and logs what an operator must act on.

use std::sync::Arc;
use std::time::Duration;

use crate::gateway::Gateway;
use crate::metrics::VendorState;

/// How long one vendor probe may take (`check`, and the background probes of `serve`).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often each app's vendor is probed in the background (credential expiry, revoked keys).
pub const PROBE_INTERVAL: Duration = Duration::from_secs(6 * 60 * 60);

/// Probes every app's vendor now and then every `interval`: logs what an operator must act on (a refused
/// credential, a token about to expire) and keeps `/readyz` and `scim_bridge_vendor_state` current
/// before Entra's first request.
pub fn spawn_health_probes(gateway: Arc<Gateway>, interval: Duration) {
    tokio::spawn(async move {
        loop {
            probe_apps(&gateway).await;
            tokio::time::sleep(interval).await;
        }
    });
}

/// Probes every app's vendor once: sets its vendor state and its warnings (shown in `/readyz` and
/// `scim_bridge_vendor_warnings`), and logs what it found.
pub async fn probe_apps(gateway: &Gateway) {
    for app in gateway.apps.values() {
        let result = tokio::time::timeout(PROBE_TIMEOUT, app.adapter.probe()).await;
        match result {
            Ok(Ok(report)) => {
                let state = if report.credential_accepted { VendorState::Ok } else { VendorState::CredentialRefused };
                gateway.metrics.set_vendor_state(&app.name, state);
                if !report.credential_accepted {
                    tracing::error!(app = %app.name, "the vendor refused the app's credential");
                }
                let mut warnings = Vec::new();
                for note in &report.notes {
                    if note.is_warning() {
                        tracing::warn!(app = %app.name, "{note}");
                        warnings.push(note.text.clone());
                    } else {
                        tracing::info!(app = %app.name, "{note}");
                    }
                }
                gateway.metrics.set_vendor_warnings(&app.name, warnings);
            }
            Ok(Err(e)) => {
                gateway.metrics.vendor_error(&app.name, &e);
                gateway.metrics.set_vendor_warnings(&app.name, Vec::new());
                tracing::error!(app = %app.name, error = %e, "vendor probe failed");
            }
            Err(_) => {
                gateway.metrics.set_vendor_state(&app.name, VendorState::Unavailable);
                gateway.metrics.set_vendor_warnings(&app.name, Vec::new());
                let secs = PROBE_TIMEOUT.as_secs();
                tracing::error!(app = %app.name, "vendor probe got no answer within {secs} s");
            }
        }
    }
}
