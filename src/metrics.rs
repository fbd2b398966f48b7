//! Prometheus metrics: requests by app/operation/status with latency, vendor state per app, audit-log size.
//! Kept in plain maps behind a mutex: the counts are tiny next to a vendor call.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use crate::gateway::Gateway;

/// (metric name, type, help, how to read it from an app's outbound counters)
type OutboundSeries = (&'static str, &'static str, &'static str, fn(&adapter_api::OutboundStats) -> f64);

/// (app, operation, status)
type RequestKey = (String, String, u16);
/// (count, seconds)
type RequestTally = (u64, f64);

#[derive(Default, Debug)]
pub struct Metrics {
    requests: Mutex<BTreeMap<RequestKey, RequestTally>>,
    vendor_state: Mutex<BTreeMap<String, String>>,
    /// Warnings from each app's last vendor probe (a credential about to expire).
    vendor_warnings: Mutex<BTreeMap<String, Vec<String>>>,
    /// (app, error kind) -> count
    vendor_errors: Mutex<BTreeMap<(String, String), u64>>,
    /// (app, drift kind) -> findings of reconcile passes
    drift: Mutex<BTreeMap<(String, String), u64>>,
    /// app -> (unix time of the last pass, findings it left unrepaired, what it could not check)
    last_reconcile: Mutex<BTreeMap<String, (f64, u64, u64)>>,
    /// app -> what its last reconcile pass found and did (the status page's card).
    last_pass: Mutex<BTreeMap<String, LastPass>>,
    /// app -> requests and errors per hour, the last `HOURS_KEPT` hours (the status page's chart). In
    /// memory: a restart starts the chart afresh.
    hourly: Mutex<BTreeMap<String, std::collections::VecDeque<HourCount>>>,
}

/// One finished reconcile pass, in numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LastPass {
    /// Unix time the pass ended.
    pub at: f64,
    pub found: u64,
    pub repaired: u64,
    pub unrepaired: u64,
    pub unchecked: u64,
}

/// Requests answered in one clock hour (`hour` is unix time / 3600) and how many of them were not 2xx/3xx.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HourCount {
    pub hour: u64,
    pub requests: u64,
    pub errors: u64,
}

/// Hours of per-hour counts kept per app.
pub const HOURS_KEPT: u64 = 24;

/// The current clock hour, as unix time / 3600.
pub fn current_hour() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs() / 3600
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
        drop(map);
        self.count_in_hour(app, current_hour(), status >= 400);
    }

    /// Counts one request into `hour`'s bucket and forgets buckets older than `HOURS_KEPT` hours.
    fn count_in_hour(&self, app: &str, hour: u64, error: bool) {
        let mut map = self.hourly.lock().unwrap_or_else(|p| p.into_inner());
        let ring = map.entry(app.to_string()).or_default();
        match ring.back_mut() {
            Some(last) if last.hour == hour => {}
            _ => ring.push_back(HourCount { hour, ..HourCount::default() }),
        }
        if let Some(last) = ring.back_mut() {
            last.requests += 1;
            last.errors += u64::from(error);
        }
        while ring.front().is_some_and(|h| h.hour + HOURS_KEPT <= hour) {
            ring.pop_front();
        }
    }

    /// The app's last `HOURS_KEPT` hours up to `now_hour`, oldest first, hours without requests as zeros.
    pub fn hourly(&self, app: &str, now_hour: u64) -> Vec<HourCount> {
        let map = self.hourly.lock().unwrap_or_else(|p| p.into_inner());
        let ring = map.get(app);
        (now_hour + 1 - HOURS_KEPT.min(now_hour + 1)..=now_hour)
            .map(|hour| {
                ring.and_then(|r| r.iter().find(|h| h.hour == hour).copied())
                    .unwrap_or(HourCount { hour, ..HourCount::default() })
            })
            .collect()
    }

    /// What the app's last reconcile pass found and did, if one ran.
    pub fn last_pass(&self, app: &str) -> Option<LastPass> {
        self.last_pass.lock().unwrap_or_else(|p| p.into_inner()).get(app).copied()
    }

    /// Breaker, limiter and vendor counters of the app's outbound client (none for the sandbox).
    pub fn outbound(&self, gw: &Gateway, app: &str) -> Option<adapter_api::OutboundStats> {
        gw.apps.get(app).and_then(|a| a.adapter.outbound_stats())
    }

    /// A vendor error seen by the engine: counted by kind, and it sets the app's vendor state.
    pub fn vendor_error(&self, app: &str, err: &adapter_api::Error) {
        let mut map = self.vendor_errors.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((app.to_string(), err.kind_name().to_string())).or_default() += 1;
        drop(map);
        let state = match err.kind() {
            adapter_api::ErrorKind::Unauthorized => "credential_refused",
            adapter_api::ErrorKind::RateLimited { .. } => "rate_limited",
            adapter_api::ErrorKind::Unavailable { .. } => "unavailable",
            // The vendor answered and refused this one request: the vendor itself is fine.
            _ => "ok",
        };
        self.set_vendor_state(app, state);
    }

    /// A reconcile finding (see `reconcile::DriftKind`).
    pub fn drift_found(&self, app: &str, kind: &str) {
        let mut map = self.drift.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((app.to_string(), kind.to_string())).or_default() += 1;
    }

    /// A finished reconcile pass: `found` findings, `repaired` of them repaired.
    pub fn reconciled(&self, app: &str, found: u64, repaired: u64, unrepaired: u64, unchecked: u64) {
        let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        self.last_reconcile
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(app.to_string(), (at, unrepaired, unchecked));
        self.last_pass
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(app.to_string(), LastPass { at, found, repaired, unrepaired, unchecked });
    }

    pub fn set_vendor_state(&self, app: &str, state: &str) {
        self.vendor_state.lock().unwrap_or_else(|p| p.into_inner()).insert(app.to_string(), state.to_string());
    }

    pub fn set_vendor_warnings(&self, app: &str, warnings: Vec<String>) {
        self.vendor_warnings.lock().unwrap_or_else(|p| p.into_inner()).insert(app.to_string(), warnings);
    }

    pub fn vendor_warnings(&self, app: &str) -> Vec<String> {
        self.vendor_warnings.lock().unwrap_or_else(|p| p.into_inner()).get(app).cloned().unwrap_or_default()
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
    pub async fn render(&self, gw: &Gateway) -> String {
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
        out.push_str("# HELP scim_bridge_vendor_errors_total Vendor errors seen by the engine, by app and kind.\n");
        out.push_str("# TYPE scim_bridge_vendor_errors_total counter\n");
        let errors = self.vendor_errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for ((app, kind), n) in &errors {
            let _ = writeln!(out, "scim_bridge_vendor_errors_total{{app=\"{}\",kind=\"{kind}\"}} {n}", escape(app));
        }
        out.push_str(
            "# HELP scim_bridge_drift_total Differences reconcile found between the vendor and Entra's state.\n",
        );
        out.push_str("# TYPE scim_bridge_drift_total counter\n");
        let drift = self.drift.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for ((app, kind), n) in &drift {
            let _ = writeln!(out, "scim_bridge_drift_total{{app=\"{}\",kind=\"{kind}\"}} {n}", escape(app));
        }
        let passes = self.last_reconcile.lock().unwrap_or_else(|p| p.into_inner()).clone();
        out.push_str(
            "# HELP scim_bridge_reconcile_last_pass_timestamp_seconds When the app's last reconcile pass ended.\n",
        );
        out.push_str("# TYPE scim_bridge_reconcile_last_pass_timestamp_seconds gauge\n");
        for (app, (at, _, _)) in &passes {
            let _ = writeln!(out, "scim_bridge_reconcile_last_pass_timestamp_seconds{{app=\"{}\"}} {at}", escape(app));
        }
        out.push_str("# HELP scim_bridge_reconcile_unrepaired Findings the app's last pass left for a person or the next pass.\n");
        out.push_str("# TYPE scim_bridge_reconcile_unrepaired gauge\n");
        for (app, (_, unrepaired, _)) in &passes {
            let _ = writeln!(out, "scim_bridge_reconcile_unrepaired{{app=\"{}\"}} {unrepaired}", escape(app));
        }
        out.push_str(
            "# HELP scim_bridge_reconcile_unchecked What the app's last pass could not check (0: all of it).\n",
        );
        out.push_str("# TYPE scim_bridge_reconcile_unchecked gauge\n");
        for (app, (_, _, unchecked)) in &passes {
            let _ = writeln!(out, "scim_bridge_reconcile_unchecked{{app=\"{}\"}} {unchecked}", escape(app));
        }
        let stats: Vec<(String, adapter_api::OutboundStats)> =
            gw.apps.values().filter_map(|a| a.adapter.outbound_stats().map(|s| (a.name.clone(), s))).collect();
        out.push_str("# HELP scim_bridge_vendor_calls_total Vendor calls, by app and how they ended.\n");
        out.push_str("# TYPE scim_bridge_vendor_calls_total counter\n");
        for (app, st) in &stats {
            for (outcome, n) in &st.calls_by_outcome {
                let _ = writeln!(
                    out,
                    "scim_bridge_vendor_calls_total{{app=\"{}\",outcome=\"{}\"}} {n}",
                    escape(app),
                    escape(outcome)
                );
            }
        }
        out.push_str(
            "# HELP scim_bridge_breaker_state The app's circuit breaker state: 1 for the current one, 0 else.\n",
        );
        out.push_str("# TYPE scim_bridge_breaker_state gauge\n");
        for (app, st) in &stats {
            for (state, name) in [
                (adapter_api::BreakerState::Closed, "closed"),
                (adapter_api::BreakerState::Open, "open"),
                (adapter_api::BreakerState::HalfOpen, "half_open"),
            ] {
                let on = u8::from(st.breaker_state == state);
                let _ = writeln!(out, "scim_bridge_breaker_state{{app=\"{}\",state=\"{name}\"}} {on}", escape(app));
            }
        }
        let series: [OutboundSeries; 9] = [
            (
                "scim_bridge_vendor_attempts_total",
                "counter",
                "HTTP attempts sent to the vendor, retries included.",
                |s| s.attempts as f64,
            ),
            ("scim_bridge_vendor_retries_total", "counter", "Retried vendor attempts.", |s| s.retries as f64),
            ("scim_bridge_vendor_rate_limited_total", "counter", "429 answers from the vendor.", |s| {
                s.rate_limited_by_vendor as f64
            }),
            ("scim_bridge_vendor_failures_total", "counter", "Vendor calls that ended in an error.", |s| {
                s.failures as f64
            }),
            (
                "scim_bridge_limiter_wait_seconds_total",
                "counter",
                "Time vendor calls waited for the rate limiter, a slot or a vendor pause.",
                |s| s.limiter_wait_seconds,
            ),
            ("scim_bridge_breaker_open", "gauge", "1 while the app's circuit breaker is open.", |s| {
                if s.breaker_open {
                    1.0
                } else {
                    0.0
                }
            }),
            ("scim_bridge_breaker_opens_total", "counter", "Times the circuit breaker opened.", |s| {
                s.breaker_opens as f64
            }),
            (
                "scim_bridge_rejected_queue_full_total",
                "counter",
                "Calls answered 429 because no rate-limit permit came in time.",
                |s| s.rejected_queue_full as f64,
            ),
            ("scim_bridge_vendor_in_flight", "gauge", "Vendor calls in flight now.", |s| s.in_flight as f64),
        ];
        for (name, kind, help, get) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (app, st) in &stats {
                let _ = writeln!(out, "{name}{{app=\"{}\"}} {}", escape(app), get(st));
            }
        }
        out.push_str("# HELP scim_bridge_vendor_state Last known vendor state per app (1 for the current state).\n");
        out.push_str("# TYPE scim_bridge_vendor_state gauge\n");
        for app in gw.apps.keys() {
            let _ = writeln!(
                out,
                "scim_bridge_vendor_state{{app=\"{}\",state=\"{}\"}} 1",
                escape(app),
                self.vendor_state(app)
            );
        }
        out.push_str("# HELP scim_bridge_vendor_warnings Warnings from the app's last vendor probe (see /readyz).\n");
        out.push_str("# TYPE scim_bridge_vendor_warnings gauge\n");
        for app in gw.apps.keys() {
            let _ = writeln!(
                out,
                "scim_bridge_vendor_warnings{{app=\"{}\"}} {}",
                escape(app),
                self.vendor_warnings(app).len()
            );
        }
        out.push_str("# HELP scim_bridge_shadow_resources Resources in the shadow store, by app and type.\n");
        out.push_str("# TYPE scim_bridge_shadow_resources gauge\n");
        for app in gw.apps.keys() {
            for kind in [crate::store::Kind::User, crate::store::Kind::Group] {
                let n = gw.store.count(app, kind).await.unwrap_or(0);
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
        let _ = writeln!(out, "scim_bridge_audit_entries {}", gw.store.audit_len().await.unwrap_or(0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hourly_ring_keeps_the_last_day_oldest_first() {
        let m = Metrics::default();
        m.count_in_hour("a", 1000, false);
        m.count_in_hour("a", 1000, true);
        m.count_in_hour("a", 1010, true);
        let day = m.hourly("a", 1010);
        assert_eq!(day.len(), HOURS_KEPT as usize);
        assert_eq!((day[0].hour, day[23].hour), (987, 1010));
        assert_eq!((day[13].requests, day[13].errors), (2, 1), "hour 1000");
        assert_eq!((day[23].requests, day[23].errors), (1, 1));
        assert_eq!(day.iter().map(|h| h.requests).sum::<u64>(), 3);
        // A day later hour 1000 has gone, from the view and from memory.
        m.count_in_hour("a", 1024, false);
        assert_eq!(m.hourly("a", 1024).iter().map(|h| h.requests).sum::<u64>(), 2);
        assert_eq!(m.hourly.lock().unwrap()["a"].len(), 2);
        assert!(m.hourly("other", 5).iter().all(|h| h.requests == 0));
        assert_eq!(m.hourly("other", 5).len(), 6, "no hours before the epoch");
    }
}
