//! Prometheus metrics: requests by app/operation/status with latency, vendor state per app, audit-log size.
//! Kept in plain maps behind a mutex: the counts are tiny next to a vendor call.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use crate::gateway::Gateway;

/// (app, operation, status)
type RequestKey = (String, String, u16);
/// (count, seconds)
type RequestTally = (u64, f64);

#[derive(Default, Debug)]
pub struct Metrics {
    requests: Mutex<BTreeMap<RequestKey, RequestTally>>,
    vendor_state: Mutex<BTreeMap<String, String>>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    pub fn observe_request(&self, app: &str, operation: &str, status: u16, elapsed: Duration) {
        let mut map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry((app.to_string(), operation.to_string(), status)).or_default();
        entry.0 += 1;
        entry.1 += elapsed.as_secs_f64();
    }

    pub fn set_vendor_state(&self, app: &str, state: &str) {
        self.vendor_state.lock().unwrap_or_else(|p| p.into_inner()).insert(app.to_string(), state.to_string());
    }

    pub fn vendor_state(&self, app: &str) -> String {
        self.vendor_state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(app)
            .cloned()
            .unwrap_or_else(|| "unknown".into())
    }

    /// The Prometheus text exposition.
    pub fn render(&self, gw: &Gateway) -> String {
        let mut out = String::new();
        out.push_str("# HELP scim_bridge_requests_total SCIM requests answered, by app, operation and status.\n");
        out.push_str("# TYPE scim_bridge_requests_total counter\n");
        let requests = self.requests.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for ((app, op, status), (n, _)) in &requests {
            let _ = writeln!(
                out,
                "scim_bridge_requests_total{{app=\"{}\",operation=\"{}\",status=\"{status}\"}} {n}",
                escape(app),
                escape(op)
            );
        }
        out.push_str("# HELP scim_bridge_request_seconds_total Time spent answering SCIM requests.\n");
        out.push_str("# TYPE scim_bridge_request_seconds_total counter\n");
        for ((app, op, status), (_, secs)) in &requests {
            let _ = writeln!(
                out,
                "scim_bridge_request_seconds_total{{app=\"{}\",operation=\"{}\",status=\"{status}\"}} {secs}",
                escape(app),
                escape(op)
            );
        }
        out.push_str("# HELP scim_bridge_shadow_resources Resources in the shadow store, by app and type.\n");
        out.push_str("# TYPE scim_bridge_shadow_resources gauge\n");
        for app in gw.apps.keys() {
            for kind in [crate::store::Kind::User, crate::store::Kind::Group] {
                let n = gw.store.count(app, kind).unwrap_or(0);
                let _ = writeln!(
                    out,
                    "scim_bridge_shadow_resources{{app=\"{}\",type=\"{}\"}} {n}",
                    escape(app),
                    kind.as_str()
                );
            }
        }
        out.push_str("# HELP scim_bridge_audit_entries Entries in the audit log.\n");
        out.push_str("# TYPE scim_bridge_audit_entries gauge\n");
        let _ = writeln!(out, "scim_bridge_audit_entries {}", gw.store.audit_len().unwrap_or(0));
        out
    }
}
