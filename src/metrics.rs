//! Metrics: what `/metrics` exposes (through `prometheus-client`: request counts and latency histograms,
//! vendor attempt latency, vendor errors by kind and origin, reconcile drift, and at each scrape the
//! apps' outbound counters, vendor state and store sizes), and the in-memory views the status page and
//! `/readyz` read (vendor state and warnings, the last reconcile pass, the 24-hour chart).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use adapter_api::BreakerState;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Histograms of one shape for every label set.
#[derive(Clone, Copy, Debug, Default)]
struct Buckets;

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        request_buckets()
    }
}

#[derive(Debug)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<RequestLabels, Counter<f64, AtomicU64>>,
    request_duration: Family<OperationLabels, Histogram, Buckets>,
    vendor_attempt_duration: Family<AppLabels, Histogram, Buckets>,
    vendor_errors: Family<ErrorLabels, Counter>,
    drift: Family<KindLabels, Counter>,
    vendor_state: Mutex<BTreeMap<String, VendorState>>,
    /// Warnings from each app's last vendor probe (a credential about to expire).
    vendor_warnings: Mutex<BTreeMap<String, Vec<String>>>,
    /// app -> what its last reconcile pass found and did (the status page's card).
    last_pass: Mutex<BTreeMap<String, LastPass>>,
    /// app -> requests and errors per hour, the last `HOURS_KEPT` hours (the status page's chart). In
    /// memory: a restart starts the chart afresh.
    hourly: Mutex<BTreeMap<String, std::collections::VecDeque<HourCount>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            request_seconds: Family::default(),
            request_duration: Family::new_with_constructor(Buckets),
            vendor_attempt_duration: Family::new_with_constructor(Buckets),
            vendor_errors: Family::default(),
            drift: Family::default(),
            vendor_state: Mutex::default(),
            vendor_warnings: Mutex::default(),
            last_pass: Mutex::default(),
            hourly: Mutex::default(),
        }
    }
}

/// What the gateway last heard from an app's vendor (its probe, or the last request that reached it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VendorState {
    /// Not heard from yet.
    #[default]
    Unknown,
    /// The vendor answers and accepts the credential.
    Ok,
    CredentialRefused,
    RateLimited,
    Unavailable,
}

impl VendorState {
    /// The state's name in `/readyz`, metrics and the status page.
    pub fn as_str(self) -> &'static str {
        match self {
            VendorState::Unknown => "unknown",
            VendorState::Ok => "ok",
            VendorState::CredentialRefused => "credential_refused",
            VendorState::RateLimited => "rate_limited",
            VendorState::Unavailable => "unavailable",
        }
    }
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

impl Metrics {
    pub fn observe_request(&self, app: &str, operation: &str, status: u16, elapsed: Duration) {
        let labels = RequestLabels { app: app.to_string(), operation: operation.to_string(), status };
        self.requests.get_or_create(&labels).inc();
        self.request_seconds.get_or_create(&labels).inc_by(elapsed.as_secs_f64());
        let labels = OperationLabels { app: labels.app, operation: labels.operation };
        self.request_duration.get_or_create(&labels).observe(elapsed.as_secs_f64());
        self.count_in_hour(app, current_hour(), status >= 400);
    }

    /// Vendor HTTP attempts into the latency histogram: those one Entra request made (from its call log, when
    /// it ends), and each of a reconcile pass's as it is made.
    pub fn observe_vendor_attempts(&self, app: &str, attempts: &[adapter_api::calls::Attempt]) {
        if attempts.is_empty() {
            return;
        }
        let histogram = self.vendor_attempt_duration.get_or_create(&AppLabels { app: app.to_string() });
        for attempt in attempts {
            histogram.observe(Duration::from_millis(attempt.ms).as_secs_f64());
        }
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

    /// A vendor error seen by the engine: counted by kind, and it sets the app's vendor state.
    pub fn vendor_error(&self, app: &str, err: &adapter_api::Error) {
        let labels = ErrorLabels {
            app: app.to_string(),
            kind: err.kind_name().to_string(),
            origin: err.origin().as_str().to_string(),
        };
        self.vendor_errors.get_or_create(&labels).inc();
        let state = match err.kind() {
            adapter_api::ErrorKind::Unauthorized => VendorState::CredentialRefused,
            adapter_api::ErrorKind::RateLimited { .. } => VendorState::RateLimited,
            adapter_api::ErrorKind::Unavailable { .. } => VendorState::Unavailable,
            // The vendor answered and refused this one request: the vendor itself is fine.
            _ => VendorState::Ok,
        };
        self.set_vendor_state(app, state);
    }

    /// A reconcile finding (see `reconcile::DriftKind`).
    pub fn drift_found(&self, app: &str, kind: &str) {
        self.drift.get_or_create(&KindLabels { app: app.to_string(), kind: kind.to_string() }).inc();
    }

    /// A finished reconcile pass: `found` findings, `repaired` of them repaired.
    pub fn reconciled(&self, app: &str, found: u64, repaired: u64, unrepaired: u64, unchecked: u64) {
        let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        self.last_pass
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(app.to_string(), LastPass { at, found, repaired, unrepaired, unchecked });
    }

    pub fn set_vendor_state(&self, app: &str, state: VendorState) {
        self.vendor_state.lock().unwrap_or_else(|p| p.into_inner()).insert(app.to_string(), state);
    }

    pub fn set_vendor_warnings(&self, app: &str, warnings: Vec<String>) {
        self.vendor_warnings.lock().unwrap_or_else(|p| p.into_inner()).insert(app.to_string(), warnings);
    }

    pub fn vendor_warnings(&self, app: &str) -> Vec<String> {
        self.vendor_warnings.lock().unwrap_or_else(|p| p.into_inner()).get(app).cloned().unwrap_or_default()
    }

    pub fn vendor_state(&self, app: &str) -> VendorState {
        self.vendor_state.lock().unwrap_or_else(|p| p.into_inner()).get(app).copied().unwrap_or_default()
    }

    /// The Prometheus exposition (OpenMetrics text, which Prometheus scrapes as is): the request and
    /// drift counters and the latency histograms kept since start, and the app's outbound counters,
    /// vendor state and store sizes read at the moment of the scrape.
    pub fn render(&self, scrape: Scrape) -> String {
        let snapshot = Snapshot {
            vendor: scrape
                .apps
                .iter()
                .map(|app| (app.clone(), self.vendor_state(app), self.vendor_warnings(app).len()))
                .collect(),
            passes: lock(&self.last_pass).iter().map(|(app, p)| (app.clone(), *p)).collect(),
            scrape,
        };
        let mut registry = Registry::default();
        registry.register(
            "scim_bridge_requests",
            "SCIM requests answered, by app, operation and status.",
            self.requests.clone(),
        );
        registry.register(
            "scim_bridge_request_seconds",
            "Time spent answering SCIM requests, by app, operation and status.",
            self.request_seconds.clone(),
        );
        registry.register(
            "scim_bridge_request_duration_seconds",
            "How long SCIM requests took to answer, by app and operation.",
            self.request_duration.clone(),
        );
        registry.register(
            "scim_bridge_vendor_attempt_duration_seconds",
            "How long HTTP attempts at the vendor took (Entra requests' attempts), by app.",
            self.vendor_attempt_duration.clone(),
        );
        registry.register(
            "scim_bridge_vendor_errors",
            "Vendor errors seen by the engine, by app, kind and origin (vendor, network or gateway).",
            self.vendor_errors.clone(),
        );
        registry.register(
            "scim_bridge_drift",
            "Differences reconcile found between the vendor and Entra's state.",
            self.drift.clone(),
        );
        registry.register_collector(Box::new(snapshot));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// Label sets, in the order they are written.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    app: String,
    operation: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    app: String,
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppLabels {
    app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    app: String,
    kind: String,
    origin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    app: String,
    kind: String,
}

/// Buckets for SCIM request latency: 1 ms to about 33 s (Entra's own timeout is near there).
fn request_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// What the caller of [`Metrics::render`] reads from the gateway at the moment of a scrape.
#[derive(Debug, Default)]
pub struct Scrape {
    /// Every configured app.
    pub apps: Vec<String>,
    /// The outbound client's counters of every app that has one.
    pub outbound: Vec<(String, adapter_api::OutboundStats)>,
    /// (app, resource type) -> resources in the shadow store
    pub shadow: Vec<(String, &'static str, u64)>,
    pub audit_entries: u64,
}

/// A scrape with this process's own views, encoded by [`Collector::encode`].
#[derive(Debug)]
struct Snapshot {
    scrape: Scrape,
    /// app -> (vendor state, probe warnings)
    vendor: Vec<(String, VendorState, usize)>,
    /// app -> (unix time of the last pass, unrepaired, unchecked)
    passes: Vec<(String, LastPass)>,
}

/// Whole numbers as integers (`1`, not `1.0`): the gauges that count things or say 0/1.
fn encode_count(encoder: MetricEncoder<'_>, metric_type: MetricType, value: u64) -> Result<(), std::fmt::Error> {
    match metric_type {
        MetricType::Counter => ConstCounter::new(value).encode(encoder),
        _ => ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(encoder),
    }
}

/// (name, help, how to read it from an app's last reconcile pass)
type PassCount = (&'static str, &'static str, fn(&LastPass) -> u64);

/// (name, help, type, how to read it from an app's outbound counters)
type OutboundSeries = (&'static str, &'static str, MetricType, fn(&adapter_api::OutboundStats) -> u64);

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let app = |name: &str| AppLabels { app: name.to_string() };
        let mut family = encoder.encode_descriptor(
            "scim_bridge_vendor_calls",
            "Vendor calls, by app and how they ended.",
            None,
            MetricType::Counter,
        )?;
        for (name, st) in &self.scrape.outbound {
            for (outcome, n) in &st.calls_by_outcome {
                let labels = [("app", name.as_str()), ("outcome", outcome.as_str())];
                ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "scim_bridge_breaker_state",
            "The app's circuit breaker state: 1 for the current one, 0 else.",
            None,
            MetricType::Gauge,
        )?;
        for (name, st) in &self.scrape.outbound {
            for state in [BreakerState::Closed, BreakerState::Open, BreakerState::HalfOpen] {
                let labels = [("app", name.as_str()), ("state", state.as_str())];
                let on = i64::from(st.breaker_state == state);
                ConstGauge::new(on).encode(family.encode_family(&labels)?)?;
            }
        }
        let counts: [OutboundSeries; 8] = [
            (
                "scim_bridge_vendor_attempts",
                "HTTP attempts sent to the vendor, retries included.",
                MetricType::Counter,
                |s| s.attempts,
            ),
            ("scim_bridge_vendor_retries", "Retried vendor attempts.", MetricType::Counter, |s| s.retries),
            ("scim_bridge_vendor_rate_limited", "429 answers from the vendor.", MetricType::Counter, |s| {
                s.rate_limited_by_vendor
            }),
            ("scim_bridge_vendor_failures", "Vendor calls that ended in an error.", MetricType::Counter, |s| {
                s.failures
            }),
            ("scim_bridge_breaker_open", "1 while the app's circuit breaker is open.", MetricType::Gauge, |s| {
                u64::from(s.breaker_open)
            }),
            ("scim_bridge_breaker_opens", "Times the circuit breaker opened.", MetricType::Counter, |s| {
                s.breaker_opens
            }),
            (
                "scim_bridge_rejected_queue_full",
                "Calls answered 429 because no rate-limit permit came in time.",
                MetricType::Counter,
                |s| s.rejected_queue_full,
            ),
            ("scim_bridge_vendor_in_flight", "Vendor calls in flight now.", MetricType::Gauge, |s| s.in_flight),
        ];
        for (name, help, metric_type, get) in counts {
            let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
            for (app_name, st) in &self.scrape.outbound {
                encode_count(family.encode_family(&app(app_name))?, metric_type, get(st))?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "scim_bridge_limiter_wait_seconds",
            "Time vendor calls waited for the rate limiter, a slot or a vendor pause.",
            None,
            MetricType::Counter,
        )?;
        for (app_name, st) in &self.scrape.outbound {
            ConstCounter::new(st.limiter_wait_seconds).encode(family.encode_family(&app(app_name))?)?;
        }
        let mut family = encoder.encode_descriptor(
            "scim_bridge_vendor_state",
            "Last known vendor state per app (1 for the current state).",
            None,
            MetricType::Gauge,
        )?;
        for (name, state, _) in &self.vendor {
            let labels = [("app", name.as_str()), ("state", state.as_str())];
            ConstGauge::new(1i64).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "scim_bridge_vendor_warnings",
            "Warnings from the app's last vendor probe (see /readyz).",
            None,
            MetricType::Gauge,
        )?;
        for (name, _, warnings) in &self.vendor {
            encode_count(family.encode_family(&app(name))?, MetricType::Gauge, *warnings as u64)?;
        }
        let mut family = encoder.encode_descriptor(
            "scim_bridge_reconcile_last_pass_timestamp_seconds",
            "When the app's last reconcile pass ended.",
            None,
            MetricType::Gauge,
        )?;
        for (app_name, pass) in &self.passes {
            ConstGauge::new(pass.at).encode(family.encode_family(&app(app_name))?)?;
        }
        let counts: [PassCount; 2] = [
            (
                "scim_bridge_reconcile_unrepaired",
                "Findings the app's last pass left for a person or the next pass.",
                |p| p.unrepaired,
            ),
            ("scim_bridge_reconcile_unchecked", "What the app's last pass could not check (0: all of it).", |p| {
                p.unchecked
            }),
        ];
        for (name, help, get) in counts {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (app_name, pass) in &self.passes {
                encode_count(family.encode_family(&app(app_name))?, MetricType::Gauge, get(pass))?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "scim_bridge_shadow_resources",
            "Resources in the shadow store, by app and type.",
            None,
            MetricType::Gauge,
        )?;
        for (app_name, kind, n) in &self.scrape.shadow {
            let labels = [("app", app_name.as_str()), ("type", *kind)];
            encode_count(family.encode_family(&labels)?, MetricType::Gauge, *n)?;
        }
        let family = encoder.encode_descriptor(
            "scim_bridge_audit_entries",
            "Entries in the audit log.",
            None,
            MetricType::Gauge,
        )?;
        encode_count(family, MetricType::Gauge, self.scrape.audit_entries)?;
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
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

    #[test]
    fn a_reconcile_pass_is_exposed_once_with_whole_counts() {
        let m = Metrics::default();
        m.drift_found("a", "missing_at_vendor");
        m.reconciled("a", 3, 2, 1, 0);
        let text = m.render(Scrape { apps: vec!["a".into()], ..Scrape::default() });
        for needle in [
            "scim_bridge_drift_total{app=\"a\",kind=\"missing_at_vendor\"} 1",
            "scim_bridge_reconcile_unrepaired{app=\"a\"} 1\n",
            "scim_bridge_reconcile_unchecked{app=\"a\"} 0\n",
            "scim_bridge_reconcile_last_pass_timestamp_seconds{app=\"a\"} ",
            "scim_bridge_vendor_state{app=\"a\",state=\"unknown\"} 1",
        ] {
            assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
        }
        assert_eq!(m.last_pass("a").map(|p| (p.found, p.repaired)), Some((3, 2)));
    }
}
