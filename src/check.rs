//! `scim-bridge check`: validates a config, opens the store, and probes each app's vendor with a harmless
//! read, so a platform team sees that every credential works before Entra does.

use std::path::Path;

use serde::Serialize;

use adapter_api::Note;

use crate::config::{Config, ConfigError};
use crate::probe::PROBE_TIMEOUT;

/// What `check` found for one app.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AppCheck {
    pub app: String,
    pub vendor: String,
    pub reachable: bool,
    pub credential_accepted: bool,
    pub rate_limit_headers: Vec<(String, String)>,
    pub notes: Vec<Note>,
    pub error: Option<String>,
    /// Checked with `--offline`: the config only, no vendor contacted.
    pub offline: bool,
}

impl AppCheck {
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.reachable && self.credential_accepted
    }
}

/// Validates `path` and, unless `offline`, probes every app. Config errors come back as `Err`.
pub async fn run(path: &Path, offline: bool) -> Result<Vec<AppCheck>, ConfigError> {
    let origin = path.display().to_string();
    let config = Config::load(path)?;
    let gateway = crate::server::open_gateway(&config, &origin).await?;
    let mut out = Vec::new();
    for app in gateway.apps.values() {
        let mut check = AppCheck {
            app: app.name.clone(),
            vendor: app.adapter.vendor().to_string(),
            reachable: false,
            credential_accepted: false,
            rate_limit_headers: Vec::new(),
            notes: Vec::new(),
            error: None,
            offline,
        };
        if offline {
            check.notes.push(Note::info("offline: config valid, vendor not contacted"));
            check.reachable = true;
            check.credential_accepted = true;
        } else {
            match tokio::time::timeout(PROBE_TIMEOUT, app.adapter.probe()).await {
                Ok(Ok(report)) => {
                    check.reachable = report.reachable;
                    check.credential_accepted = report.credential_accepted;
                    check.rate_limit_headers = report.rate_limit_headers;
                    check.notes = report.notes;
                    if let Some(fp) = report.credential_fingerprint {
                        check.notes.insert(
                            0,
                            Note::info(format!("credential {fp} (compare: printf %s \"$CREDENTIAL\" | sha256sum)")),
                        );
                    }
                    if !report.credential_accepted {
                        check.error = Some("the vendor refused the credential".into());
                    }
                }
                Ok(Err(e)) => check.error = Some(e.to_string()),
                Err(_) => check.error = Some(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
            }
        }
        out.push(check);
    }
    Ok(out)
}

/// A table for people.
pub fn render(checks: &[AppCheck]) -> String {
    let mut out = String::new();
    for c in checks {
        let verdict = if c.ok() { "ok" } else { "FAIL" };
        out.push_str(&format!(
            "{verdict:4} {:12} {:8} reachable={} credential={}",
            c.app,
            c.vendor,
            if c.reachable { "yes" } else { "no" },
            if c.credential_accepted { "accepted" } else { "refused" }
        ));
        if !c.rate_limit_headers.is_empty() {
            let hs: Vec<String> = c.rate_limit_headers.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!(" rate-limit-headers=[{}]", hs.join(", ")));
        } else if !c.offline {
            out.push_str(" rate-limit-headers=none");
        }
        out.push('\n');
        if let Some(e) = &c.error {
            out.push_str(&format!("     error: {e}\n"));
        }
        for n in &c.notes {
            let label = if n.is_warning() { "warning" } else { "note" };
            out.push_str(&format!("     {label}: {n}\n"));
        }
    }
    let failed = checks.iter().filter(|c| !c.ok()).count();
    out.push_str(&format!("{} passed, {} failed\n", checks.len() - failed, failed));
    out
}
