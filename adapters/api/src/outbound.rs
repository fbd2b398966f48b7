//! The shared outbound HTTP client every vendor adapter calls through: per-app rate limit, in-flight cap,
//! timeouts, retries only for calls that are safe to repeat, `Retry-After` honoured, and a circuit breaker.
//! Adapters build requests and read responses; this module decides when and how often to send them.
//!
//! Every timing here runs on `tokio::time` (the `governor` limiter too, through [`TokioClock`]), so tests
//! drive the whole client on tokio's paused clock instead of sleeping.
//!
//! What happens to one failed attempt ([`may_retry`]); every attempt takes a rate-limit permit:
//!
//! | attempt outcome                          | idempotent | not idempotent (POST) | `maybe_applied` |
//! |------------------------------------------|------------|-----------------------|-----------------|
//! | 2xx-4xx but 429 (401/403 included), 501 | `Ok`, done | `Ok`, done            | -               |
//! | 429                                      | retry      | retry                 | false           |
//! | connect failed (request never sent)      | retry      | retry                 | false           |
//! | 5xx but 501                              | retry      | error                 | true            |
//! | attempt timed out                        | retry      | error                 | true            |
//! | connection lost after sending            | retry      | error                 | true            |
//!
//! A retry waits the jittered exponential backoff or the vendor's `Retry-After`, whichever is longer, and
//! never past the call's deadline: when the next wait would cross it, the last error is returned as is.
//! A `Retry-After` (and any 429) also pauses the whole app, so every other call waits too.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use backon::BackoffBuilder;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Method;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::error::{Error, Result};

/// Longest pause one vendor `Retry-After` may impose on the whole app. A larger value (or a far-future
/// date from a confused vendor) is cut to this; calls meanwhile fail fast with the remaining time.
const MAX_PAUSE: Duration = Duration::from_secs(15 * 60);

/// A refused credential (401/403) is logged at most this often per app.
const AUTH_WARNING_EVERY: Duration = Duration::from_secs(60);

/// Limits and timings for one app's vendor calls.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboundConfig {
    /// Sustained vendor requests per second (may be fractional: 0.5 is one request every two seconds).
    pub requests_per_second: f64,
    /// Requests that may go out at once after a quiet period.
    pub burst: u32,
    /// Vendor calls in flight at once.
    pub max_in_flight: usize,
    /// How long a call may wait for a rate-limit permit before the gateway answers Entra 429 (never past
    /// the call's `deadline`).
    pub queue_timeout: Duration,
    /// Timeout of one attempt.
    pub attempt_timeout: Duration,
    /// Overall deadline of one call, all attempts included (well under Entra's own timeout).
    pub deadline: Duration,
    /// Attempts for a retryable call, the first included.
    pub max_attempts: u32,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Consecutive failed calls that open the circuit breaker (0 disables the breaker).
    pub breaker_failures: u32,
    /// How long the breaker stays open before one probe call is let through.
    pub breaker_cooldown: Duration,
    /// The schedule, pauses and breaker shared with other replicas (`crate::budget`); none: this
    /// process paces alone.
    pub shared: crate::budget::SharedBudget,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            requests_per_second: 5.0,
            burst: 5,
            max_in_flight: 8,
            queue_timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(10),
            deadline: Duration::from_secs(25),
            max_attempts: 4,
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
            breaker_failures: 10,
            breaker_cooldown: Duration::from_secs(30),
            shared: crate::budget::SharedBudget::none(),
        }
    }
}

impl OutboundConfig {
    /// Checks the values a limiter and a retry loop can work with; the message starts with the field name.
    /// `Outbound::new` runs it too; the gateway may call it at config load to name the file and key.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: &str| Err(Error::invalid(format!("{key} {why}")));
        if !(self.requests_per_second.is_finite() && self.requests_per_second > 0.0) {
            return bad("requests_per_second", "must be a number above 0");
        }
        // One request per day is the slowest period governor's nanosecond arithmetic is asked to hold.
        if self.requests_per_second < 1.0 / 86_400.0 {
            return bad("requests_per_second", "must allow at least one request a day");
        }
        if self.burst == 0 {
            return bad("burst", "must be at least 1");
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight", "must be at least 1");
        }
        if self.max_attempts == 0 {
            return bad("max_attempts", "must be at least 1");
        }
        // Durations are named as the config spells them (`limits.<key>_ms`).
        if self.deadline.is_zero() {
            return bad("deadline_ms", "must be above 0");
        }
        if self.attempt_timeout.is_zero() {
            return bad("attempt_timeout_ms", "must be above 0");
        }
        if self.queue_timeout.is_zero() {
            return bad("queue_timeout_ms", "must be above 0 (every call would be refused unless a permit is free)");
        }
        let ms = |d: Duration| d.as_millis();
        if self.attempt_timeout > self.deadline {
            let why = format!("({} ms) cannot fit in deadline_ms ({} ms)", ms(self.attempt_timeout), ms(self.deadline));
            return bad("attempt_timeout_ms", &why);
        }
        if self.backoff_min > self.backoff_max {
            return bad("backoff_min", "must not exceed backoff_max");
        }
        Ok(())
    }
}

/// One vendor call as an adapter describes it.
#[derive(Clone)]
pub struct VendorRequest {
    pub method: Method,
    pub url: String,
    /// Headers to send. Values may hold secrets: they are never logged or formatted.
    pub headers: HeaderMap,
    pub body: Option<Vec<u8>>,
    /// Whether sending the request twice has the same effect as once (GET, PUT, DELETE, idempotent PATCH).
    /// Non-idempotent calls are retried only when the vendor surely did not process them.
    pub idempotent: bool,
}

impl VendorRequest {
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        let idempotent = method != Method::POST && method != Method::PATCH;
        VendorRequest { method, url: url.into(), headers: HeaderMap::new(), body: None, idempotent }
    }

    pub fn json(mut self, body: &serde_json::Value) -> Self {
        self.body = Some(serde_json::to_vec(body).unwrap_or_default());
        self
    }

    pub fn header(mut self, name: reqwest::header::HeaderName, value: reqwest::header::HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }
}

/// Header names only, query and user info cut from the URL, body by length: secrets and personal data
/// (keys in headers or query strings, user attributes in bodies) never reach a log line.
impl fmt::Debug for VendorRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VendorRequest")
            .field("method", &self.method)
            .field("url", &redact_url(&self.url))
            .field("headers", &RedactedHeaders(&self.headers))
            .field("body_len", &self.body.as_ref().map(Vec::len))
            .field("idempotent", &self.idempotent)
            .finish()
    }
}

/// What the vendor answered. 429 and 5xx never come back as a response: they become errors. The exception is
/// 501 Not Implemented: an answer about what the vendor supports, not an outage, so the adapter maps it
/// (to `unsupported`) like a 405, and it is never retried.
#[derive(Clone)]
pub struct VendorResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl VendorResponse {
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Response headers can carry tokens and cookies too: names only.
impl fmt::Debug for VendorResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VendorResponse")
            .field("status", &self.status)
            .field("headers", &RedactedHeaders(&self.headers))
            .field("body_len", &self.body.len())
            .finish()
    }
}

struct RedactedHeaders<'a>(&'a HeaderMap);

impl fmt::Debug for RedactedHeaders<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.keys().map(|name| (name.as_str(), "<redacted>"))).finish()
    }
}

/// The URL without user info, query or fragment (vendors put keys in query strings).
fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            if url.query().is_some() {
                url.set_query(Some("<redacted>"));
            }
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => "<unparsable url>".to_string(),
    }
}

/// The URL path only, for error details an admin reads.
fn url_path(url: &str) -> String {
    reqwest::Url::parse(url).map(|u| u.path().to_string()).unwrap_or_default()
}

/// The circuit breaker's state as callers see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    #[default]
    Closed,
    /// Calls fail fast without touching the vendor until the cooldown has passed.
    Open,
    /// The cooldown has passed: the next call (only one at a time) probes the vendor.
    HalfOpen,
}

/// Counters for metrics and health.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OutboundStats {
    /// `send` calls.
    pub calls: u64,
    /// `send` calls by how they ended: the vendor's final status class (`2xx`, `3xx`, `4xx`, `5xx`: answers
    /// the adapter reads), or the error they became (`rate_limited`, `unavailable`).
    pub calls_by_outcome: BTreeMap<String, u64>,
    /// Requests sent to the vendor, retries included.
    pub attempts: u64,
    pub retries: u64,
    /// 429 answers from the vendor.
    pub rate_limited_by_vendor: u64,
    /// Calls that returned an error (rejections included).
    pub failures: u64,
    pub breaker_open: bool,
    /// Time calls spent waiting for a vendor pause, an in-flight slot or a rate-limit permit, summed.
    pub limiter_wait_seconds: f64,
    pub breaker_state: BreakerState,
    /// Times the breaker opened.
    pub breaker_opens: u64,
    /// Calls rejected without a vendor call because no permit came within `queue_timeout`.
    pub rejected_queue_full: u64,
    /// Calls rejected without a vendor call because the breaker was open.
    pub rejected_breaker_open: u64,
    /// Vendor calls in flight now.
    pub in_flight: u64,
    /// The configured cap on `in_flight` (`limits.max_in_flight`).
    pub max_in_flight: u64,
    /// The configured pace (`limits.requests_per_second`).
    pub requests_per_second: f64,
}

/// `governor` clock over `tokio::time::Instant`, so the limiter follows tokio's (pausable) clock.
#[derive(Clone, Debug)]
pub struct TokioClock {
    origin: Instant,
}

impl TokioClock {
    pub fn new() -> Self {
        TokioClock { origin: Instant::now() }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.origin.elapsed())
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Nanos>>;

/// Why one attempt failed; decides retry and `maybe_applied`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// The vendor answered 429: it did not process the request.
    TooManyRequests,
    /// The connection (or TLS handshake) failed: the request was never sent.
    Connect,
    /// The vendor answered this 5xx status.
    ServerError(u16),
    /// No complete answer within the attempt's time.
    Timeout,
    /// The connection broke after the request went out.
    Lost,
    /// The reply was larger than `MAX_RESPONSE_BYTES`: the request may have been applied.
    TooLarge,
}

impl Failure {
    /// How the audit log names this outcome: the vendor's status where there was one.
    fn audit_label(self) -> String {
        match self {
            Failure::TooManyRequests => "429".to_string(),
            Failure::ServerError(status) => status.to_string(),
            Failure::Connect => "connect_failed".to_string(),
            Failure::Timeout => "timeout".to_string(),
            Failure::Lost => "connection_lost".to_string(),
            Failure::TooLarge => "reply_too_large".to_string(),
        }
    }
}

/// Whether an attempt that failed this way may be sent again (the table in the module comment).
fn may_retry(failure: Failure, idempotent: bool) -> bool {
    match failure {
        Failure::TooManyRequests | Failure::Connect => true,
        Failure::ServerError(_) | Failure::Timeout | Failure::Lost | Failure::TooLarge => idempotent,
    }
}

/// Whether the vendor may have applied a request whose attempt failed this way.
fn maybe_applied(failure: Failure) -> bool {
    matches!(failure, Failure::ServerError(_) | Failure::Timeout | Failure::Lost | Failure::TooLarge)
}

/// What a finished call means for the breaker. 4xx answers (429 included: the vendor is up and pacing us)
/// are successes; rejections before any vendor call are neutral.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Success,
    Failure,
    Neutral,
}

#[derive(Debug)]
enum Breaker {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// A call let through by the breaker; reports the call's verdict when dropped (also when the call's future
/// is dropped half-way, so a cancelled probe frees the half-open slot).
struct Admission<'a> {
    outbound: &'a Outbound,
    probe: bool,
    verdict: Verdict,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.outbound.settle(self.probe, self.verdict);
    }
}

/// Counts a caller in the queue and its waiting time, also when the caller gives up half-way.
struct Waiting<'a> {
    outbound: &'a Outbound,
    since: Instant,
    /// An Entra call (not background work): background calls wait while any is queued.
    foreground: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let stats = &self.outbound.counters;
        stats.queued.fetch_sub(1, Ordering::Relaxed);
        if self.foreground {
            stats.foreground_queued.fetch_sub(1, Ordering::Relaxed);
        }
        let waited = u64::try_from(self.since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        stats.limiter_wait_nanos.fetch_add(waited, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    attempts: AtomicU64,
    retries: AtomicU64,
    rate_limited_by_vendor: AtomicU64,
    failures: AtomicU64,
    limiter_wait_nanos: AtomicU64,
    breaker_opens: AtomicU64,
    rejected_queue_full: AtomicU64,
    rejected_breaker_open: AtomicU64,
    queued: AtomicU64,
    foreground_queued: AtomicU64,
    by_outcome: Mutex<BTreeMap<String, u64>>,
}

/// How much slower than the configured rate the pacer schedules: 2 %, i.e. 20 ms per second. Calls leave
/// up to a millisecond late (timer) and reach the vendor a few more late (scheduling, connection reuse);
/// the margin absorbs that jitter so a vendor's fixed one-second window never sees one request too many.
/// (0.2 % and 1 % still drew the odd 429 from a fixed-window simulator on a loaded 2-core machine.)
const PACING_MARGIN: f64 = 0.02;

/// Virtual scheduling (the GCRA's theoretical arrival time), evaluated when a call reserves its slot rather
/// than when it wakes: up to `burst` calls may go at once after a quiet spell, then one per `period`.
#[derive(Debug)]
struct Pacer {
    period: Duration,
    /// How far ahead of the theoretical arrival time a call may go: (burst - 1) periods.
    tolerance: Duration,
    /// The theoretical arrival time of the next call.
    next: Option<Instant>,
}

impl Pacer {
    fn new(period: Duration, burst: u32) -> Self {
        Pacer { period, tolerance: period * burst.saturating_sub(1), next: None }
    }

    /// The earliest instant a call reserving at `now` may be sent.
    fn next_slot(&self, now: Instant) -> Instant {
        match self.next {
            Some(tat) => now.max(tat.checked_sub(self.tolerance).unwrap_or(now)),
            None => now,
        }
    }

    /// Takes `slot` (from `next_slot`).
    fn commit(&mut self, slot: Instant) {
        let tat = self.next.map_or(slot, |t| t.max(slot));
        self.next = Some(tat + self.period);
    }
}

/// A message to the shared budget, sent in the background.
type SharedCall = std::pin::Pin<Box<dyn std::future::Future<Output = std::result::Result<(), String>> + Send>>;

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The client for one app. Share it (`Arc`) between all of the app's calls: limits are per `Outbound`.
pub struct Outbound {
    app: String,
    config: OutboundConfig,
    http: reqwest::Client,
    clock: TokioClock,
    limiter: Limiter,
    /// Callers take limiter permits one at a time, in arrival order (tokio's mutex is fair), so a waiter
    /// is never overtaken and the limiter is never asked more often than it can answer.
    limiter_turn: tokio::sync::Mutex<()>,
    schedule: Mutex<Pacer>,
    in_flight: Semaphore,
    /// Set from a vendor `Retry-After` (or a bare 429): no call of this app starts before it.
    paused_until: Mutex<Option<Instant>>,
    breaker: Mutex<Breaker>,
    last_auth_warning: Mutex<Option<Instant>>,
    counters: Counters,
}

impl fmt::Debug for Outbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbound").field("app", &self.app).field("config", &self.config).finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Rounds up to whole seconds (Entra reads `Retry-After` in seconds), at least one.
fn whole_seconds(d: Duration) -> Duration {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    Duration::from_secs(secs.max(1))
}

impl Outbound {
    pub fn new(app: &str, config: OutboundConfig) -> Result<Self> {
        config.validate().map_err(|e| Error::invalid(format!("{app}: {}", e.detail())))?;
        // The attempt timeout is ours (tokio::time); the connect timeout below is shorter so a vendor that
        // never accepts the connection shows as a connect failure (safe to retry even for a POST) rather
        // than as a timeout after the request may have been sent.
        // Redirects are not followed: reqwest would turn a redirected PUT, PATCH or DELETE into a GET whose 200
        // looks like success although the vendor changed nothing.
        let http = reqwest::Client::builder()
            .connect_timeout(config.attempt_timeout / 2)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::unavailable(None, format!("{app}: cannot build HTTP client: {e}")))?;
        Self::with_client(app, config, http)
    }

    /// Like [`Outbound::new`] with a caller-built `reqwest` client (custom TLS roots, proxy). Do not set a
    /// total timeout on it: attempts are timed here, on tokio's clock.
    pub fn with_client(app: &str, config: OutboundConfig, http: reqwest::Client) -> Result<Self> {
        config.validate().map_err(|e| Error::invalid(format!("{app}: {}", e.detail())))?;
        let period = Duration::from_secs_f64(1.0 / config.requests_per_second);
        // One extra period of burst for timer lateness: see `queue`.
        let burst = NonZeroU32::new(config.burst.saturating_add(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .ok_or_else(|| Error::invalid(format!("{app}: outbound.requests_per_second is too high")))?
            .allow_burst(burst);
        let pacer = Pacer::new(period.mul_f64(1.0 + PACING_MARGIN), config.burst);
        let clock = TokioClock::new();
        Ok(Outbound {
            app: app.to_string(),
            limiter: RateLimiter::direct_with_clock(quota, clock.clone()),
            clock,
            limiter_turn: tokio::sync::Mutex::new(()),
            schedule: Mutex::new(pacer),
            in_flight: Semaphore::new(config.max_in_flight),
            paused_until: Mutex::new(None),
            breaker: Mutex::new(Breaker::Closed { failures: 0 }),
            last_auth_warning: Mutex::new(None),
            counters: Counters::default(),
            config,
            http,
        })
    }

    pub fn app(&self) -> &str {
        &self.app
    }

    pub fn config(&self) -> &OutboundConfig {
        &self.config
    }

    /// The breaker's state now (an open breaker whose cooldown has passed reports `HalfOpen`).
    pub fn breaker_state(&self) -> BreakerState {
        match *lock(&self.breaker) {
            Breaker::Closed { .. } => BreakerState::Closed,
            Breaker::Open { until } if Instant::now() < until => BreakerState::Open,
            Breaker::Open { .. } | Breaker::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// How long every call of this app still waits because the vendor asked us to pause.
    pub fn paused_for(&self) -> Option<Duration> {
        let until = (*lock(&self.paused_until))?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    pub fn stats(&self) -> OutboundStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let breaker_state = self.breaker_state();
        let free = self.in_flight.available_permits();
        OutboundStats {
            calls: get(&c.calls),
            calls_by_outcome: lock(&c.by_outcome).clone(),
            attempts: get(&c.attempts),
            retries: get(&c.retries),
            rate_limited_by_vendor: get(&c.rate_limited_by_vendor),
            failures: get(&c.failures),
            breaker_open: breaker_state == BreakerState::Open,
            limiter_wait_seconds: Duration::from_nanos(get(&c.limiter_wait_nanos)).as_secs_f64(),
            breaker_state,
            breaker_opens: get(&c.breaker_opens),
            rejected_queue_full: get(&c.rejected_queue_full),
            rejected_breaker_open: get(&c.rejected_breaker_open),
            in_flight: self.config.max_in_flight.saturating_sub(free) as u64,
            max_in_flight: self.config.max_in_flight as u64,
            requests_per_second: self.config.requests_per_second,
        }
    }

    /// Sends the request. 2xx-4xx (but 429) and 501 come back as `Ok`; 429, other 5xx, timeouts and connection
    /// failures become retryable errors after the retries this call is allowed. A call that found no permit within
    /// `queue_timeout` fails with `rate_limited`, one refused by the open breaker with `unavailable`, both
    /// without touching the vendor.
    pub async fn send(&self, req: VendorRequest) -> Result<VendorResponse> {
        // The Entra request's budget is the gateway's own limit, not the vendor's doing: refused here, the
        // call is not counted as a vendor call or failure and the breaker never hears of it.
        let scope = crate::calls::current();
        if scope.as_ref().is_some_and(|log| log.is_background()) {
            self.yield_to_entra().await;
        }
        let budget = scope.as_ref().and_then(|log| log.deadline());
        if budget.is_some_and(|b| b.saturating_duration_since(Instant::now()) < self.min_attempt_time()) {
            return Err(self.budget_spent());
        }
        // Entra's request id goes to the vendor on every attempt, so both sides' logs meet.
        let request_id = scope.as_ref().and_then(|log| log.request_id()).and_then(|id| HeaderValue::from_str(id).ok());
        bump(&self.counters.calls);
        crate::calls::count_call();
        let result = self.call(&req, budget, request_id.as_ref()).await;
        if result.is_err() {
            bump(&self.counters.failures);
        }
        let outcome = match &result {
            Ok(resp) => format!("{}xx", resp.status / 100),
            Err(e) => e.kind_name().to_string(),
        };
        *lock(&self.counters.by_outcome).entry(outcome).or_default() += 1;
        result
    }

    /// Background work (reconcile) shares the app's rate with Entra, Entra first: it waits until no Entra
    /// call is queued and the schedule has a free slot now, checking once per period. Its own call then
    /// reserves a slot like any other, so the vendor never sees more than the rate.
    async fn yield_to_entra(&self) {
        loop {
            let now = Instant::now();
            let (free_now, period) = {
                let schedule = lock(&self.schedule);
                (schedule.next_slot(now) <= now, schedule.period)
            };
            let paused = lock(&self.paused_until).is_some_and(|until| until > now);
            if free_now && !paused && self.counters.foreground_queued.load(Ordering::Relaxed) == 0 {
                return;
            }
            tokio::time::sleep(period.max(Duration::from_millis(1))).await;
        }
    }

    /// Shortest time worth giving an attempt: starting one with a few milliseconds left would only
    /// manufacture a timeout (and count it against the vendor).
    fn min_attempt_time(&self) -> Duration {
        self.config.attempt_timeout.min(Duration::from_secs(1))
    }

    /// What a call gets when the Entra request's vendor time is used up: 429 (the gateway's own backlog),
    /// so Entra retries the request later.
    fn budget_spent(&self) -> Error {
        Error::rate_limited(
            Some(Duration::from_secs(5)),
            format!("{}: the Entra request's time for vendor calls is spent; not starting another", self.app),
        )
    }

    /// One call with its retries. `budget`: when the Entra request's vendor time ends, if in a request.
    async fn call(
        &self,
        req: &VendorRequest,
        budget: Option<Instant>,
        request_id: Option<&HeaderValue>,
    ) -> Result<VendorResponse> {
        let now = Instant::now();
        // The call's own deadline, or the Entra request's budget if that ends first.
        let budget = budget.filter(|b| *b < now + self.config.deadline);
        let deadline = budget.unwrap_or(now + self.config.deadline);
        let mut admission = self.admit()?;
        // The retry loop is written out rather than run by `backon::Retryable`: each attempt must take a
        // rate-limit permit, a wait must stretch to the vendor's Retry-After and stop short of the call's
        // deadline, and the decision depends on the request as well as the error. backon still supplies
        // the exponential schedule; the jitter is ours (see `jittered`).
        let mut delays = backoff_schedule(&self.config);
        let mut last_error: Option<Error> = None;
        for attempt in 1..=self.config.max_attempts {
            let queue_until = (Instant::now() + self.config.queue_timeout).min(deadline);
            let permit = match self.acquire(queue_until).await {
                Ok(permit) => permit,
                // A retry that cannot get a permit in time reports what the vendor said last.
                Err(e) => {
                    return Err(last_error.unwrap_or_else(|| {
                        bump(&self.counters.rejected_queue_full);
                        e
                    }))
                }
            };
            let time_left = deadline.saturating_duration_since(Instant::now());
            if budget.is_some() && time_left < self.min_attempt_time() {
                // The request's budget ran out while this call queued: no attempt, and no verdict on the vendor.
                return Err(last_error.unwrap_or_else(|| self.budget_spent()));
            }
            bump(&self.counters.attempts);
            if attempt > 1 {
                bump(&self.counters.retries);
            }
            // An attempt cut short by the request's budget says nothing about the vendor's health.
            let cut_by_budget = budget.is_some() && time_left < self.config.attempt_timeout;
            let sent = Instant::now();
            let outcome = self.attempt(req, self.config.attempt_timeout.min(time_left), request_id).await;
            drop(permit);
            crate::calls::record_attempt(crate::calls::Attempt {
                method: req.method.to_string(),
                path: url_path(&req.url),
                outcome: match &outcome {
                    Ok(resp) => resp.status.to_string(),
                    Err((failure, _)) => failure.audit_label(),
                },
                ms: sent.elapsed().as_millis() as u64,
            });

            let (failure, error) = match outcome {
                Ok(resp) => {
                    admission.verdict = Verdict::Success;
                    if resp.status == 401 || resp.status == 403 {
                        self.warn_refused_credential(resp.status);
                    }
                    return Ok(resp);
                }
                Err(failed) => failed,
            };
            admission.verdict = match failure {
                Failure::TooManyRequests => Verdict::Success,
                Failure::Timeout if cut_by_budget => Verdict::Neutral,
                _ => Verdict::Failure,
            };
            let backoff = jittered(delays.next().unwrap_or(self.config.backoff_max));
            let wait = error.retry_after().map_or(backoff, |asked| asked.max(backoff));
            if failure == Failure::TooManyRequests {
                bump(&self.counters.rate_limited_by_vendor);
                self.pause(wait);
            } else if let Some(asked) = error.retry_after() {
                self.pause(asked);
            }

            if !may_retry(failure, req.idempotent) || attempt == self.config.max_attempts {
                return Err(error);
            }
            if Instant::now() + wait >= deadline {
                tracing::debug!(app = %self.app, attempt, ?failure, "not retrying: the wait would pass the deadline");
                return Err(error);
            }
            if !admission.probe && self.breaker_state() == BreakerState::Open {
                return Err(error);
            }
            let wait_ms = wait.as_millis() as u64;
            tracing::debug!(app = %self.app, attempt, ?failure, wait_ms, "retrying vendor call");
            tokio::time::sleep(wait).await;
            last_error = Some(error);
        }
        // max_attempts >= 1 and the last iteration always returns.
        Err(last_error.unwrap_or_else(|| Error::unavailable(None, format!("{}: no attempt made", self.app))))
    }

    /// One request and its whole answer within `timeout`.
    async fn attempt(
        &self,
        req: &VendorRequest,
        timeout: Duration,
        request_id: Option<&HeaderValue>,
    ) -> std::result::Result<VendorResponse, (Failure, Error)> {
        let what = format!("{}: {} {}", self.app, req.method, url_path(&req.url));
        let mut builder = self.http.request(req.method.clone(), req.url.as_str()).headers(req.headers.clone());
        if let Some(id) = request_id {
            builder = builder.header(HeaderName::from_static("x-request-id"), id.clone());
        }
        if let Some(body) = &req.body {
            builder = builder.body(body.clone());
        }
        let exchange = async {
            let resp = builder.send().await.map_err(|e| {
                let failure = if e.is_connect() { Failure::Connect } else { Failure::Lost };
                (failure, Some(e.without_url()))
            })?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = read_capped(resp).await?;
            Ok((status, headers, body))
        };
        let fail = |failure: Failure, detail: String| {
            (failure, Error::unavailable(None, detail).with_maybe_applied(maybe_applied(failure)))
        };
        let (status, headers, body) = match tokio::time::timeout(timeout, exchange).await {
            Err(_) => {
                return Err(fail(Failure::Timeout, format!("{what}: no answer within {}s", timeout.as_secs_f64())))
            }
            // The error chain (addresses, TLS and OS details) goes to the log; Entra and the audit get a
            // short reason an admin can act on.
            Ok(Err((Failure::TooLarge, _))) => {
                let detail = format!("{what}: the vendor's reply is larger than {MAX_RESPONSE_BYTES} bytes");
                return Err(fail(Failure::TooLarge, detail));
            }
            Ok(Err((Failure::Connect, e))) => {
                let chain = e.as_ref().map(describe).unwrap_or_default();
                tracing::warn!(app = %self.app, error = %chain, "cannot connect to the vendor");
                return Err(fail(Failure::Connect, format!("{what}: cannot connect to the vendor")));
            }
            Ok(Err((failure, e))) => {
                let chain = e.as_ref().map(describe).unwrap_or_default();
                tracing::warn!(app = %self.app, error = %chain, "vendor reply lost");
                return Err(fail(failure, format!("{what}: vendor reply lost ({})", short_reason(&e))));
            }
            Ok(Ok(answer)) => answer,
        };
        if status == 429 {
            let error = Error::rate_limited(parse_retry_after(&headers), format!("{what}: vendor answered 429"));
            return Err((Failure::TooManyRequests, error));
        }
        if status >= 500 && status != 501 {
            let error = Error::unavailable(parse_retry_after(&headers), format!("{what}: vendor answered {status}"))
                .with_maybe_applied(true);
            return Err((Failure::ServerError(status), error));
        }
        Ok(VendorResponse { status, headers, body })
    }

    /// Waits for the vendor pause, an in-flight slot and a rate-limit permit, in that order, until `until`.
    async fn acquire(&self, until: Instant) -> Result<SemaphorePermit<'_>> {
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        let foreground = !crate::calls::in_background();
        if foreground {
            self.counters.foreground_queued.fetch_add(1, Ordering::Relaxed);
        }
        let _waiting = Waiting { outbound: self, since: Instant::now(), foreground };
        match tokio::time::timeout_at(until, self.queue(until)).await {
            Ok(result) => result,
            Err(_) => Err(self.queue_full(None)),
        }
    }

    async fn queue(&self, until: Instant) -> Result<SemaphorePermit<'_>> {
        self.wait_out_pause(until).await?;
        let permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| Error::unavailable(None, format!("{}: outbound client closed", self.app)))?;
        // Reserve the next send slot in arrival order, then sleep until it without holding the turn, so the
        // callers behind reserve theirs at once. The schedule advances by the period from the slot, not from
        // when a sleeper wakes: tokio's timer wakes up to a millisecond late, and asking the limiter again
        // after each late wake-up would lose that time on every call (at 1000 rps, half the throughput).
        // `PACING_MARGIN` keeps the slots just under the rate so that jitter does not put one request too
        // many into a vendor's fixed window.
        let slot = {
            let _turn = self.limiter_turn.lock().await;
            // A pause may have come in while this call queued.
            self.wait_out_pause(until).await?;
            if let Some(shared) = self.config.shared.get() {
                self.reserve_shared(shared.as_ref(), until).await?
            } else {
                let mut schedule = lock(&self.schedule);
                let now = Instant::now();
                let slot = schedule.next_slot(now);
                if slot > until {
                    return Err(self.queue_full(Some(slot - now)));
                }
                schedule.commit(slot);
                slot
            }
        };
        // A slot that is already due goes now: even a zero-length sleep costs a timer tick (~1 ms).
        if slot > Instant::now() {
            tokio::time::sleep_until(slot).await;
        }
        // The vendor may have asked for a pause while this call slept.
        self.wait_out_pause(until).await?;
        // governor enforces the ceiling: a scheduled call always conforms (its quota allows one period of
        // timer lateness on top of the burst), so this only ever waits if the schedule itself went wrong.
        loop {
            match self.limiter.check() {
                Ok(()) => return Ok(permit),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.clock.now());
                    if Instant::now() + wait > until {
                        return Err(self.queue_full(Some(wait)));
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// The send slot from the replicas' shared schedule (same period and burst as the local one): the rate
    /// is the vendor's across all replicas, and a pause or an open breaker of any replica holds this one.
    async fn reserve_shared(&self, shared: &dyn crate::budget::RateBudget, until: Instant) -> Result<Instant> {
        use crate::budget::Reserved;
        let (period, tolerance) = {
            let schedule = lock(&self.schedule);
            (schedule.period, schedule.tolerance)
        };
        let max_wait = until.saturating_duration_since(Instant::now());
        match shared.reserve(&self.app, period, tolerance, max_wait).await {
            Ok(Reserved::After(wait)) => Ok(Instant::now() + wait),
            Ok(Reserved::Full(wait)) => Err(self.queue_full(Some(wait))),
            Ok(Reserved::BreakerOpen(left)) => {
                bump(&self.counters.rejected_breaker_open);
                Err(Error::unavailable(
                    Some(whole_seconds(left)),
                    format!("{}: circuit open (another replica saw repeated vendor failures)", self.app),
                ))
            }
            Err(why) => {
                tracing::error!(app = %self.app, error = %why, "the replicas' shared rate budget is unreachable");
                Err(Error::unavailable(
                    Some(Duration::from_secs(5)),
                    format!(
                        "{}: the replicas' shared rate budget is unreachable; not calling the vendor unpaced",
                        self.app
                    ),
                ))
            }
        }
    }

    /// Tells the other replicas, without waiting for it (a lost message costs at most one 429 there).
    fn share(&self, what: impl FnOnce(std::sync::Arc<dyn crate::budget::RateBudget>, String) -> SharedCall) {
        let (Some(shared), Ok(rt)) = (self.config.shared.get(), tokio::runtime::Handle::try_current()) else { return };
        let call = what(shared.clone(), self.app.clone());
        rt.spawn(async move {
            if let Err(e) = call.await {
                tracing::warn!(error = %e, "could not share a vendor pause or breaker with the other replicas");
            }
        });
    }

    /// Sleeps until the vendor's pause is over, or fails at once when it lasts past `until`.
    async fn wait_out_pause(&self, until: Instant) -> Result<()> {
        let Some(paused_until) = *lock(&self.paused_until) else { return Ok(()) };
        let now = Instant::now();
        if paused_until <= now {
            return Ok(());
        }
        if paused_until > until {
            return Err(Error::rate_limited(
                Some(whole_seconds(paused_until - now)),
                format!("{}: vendor asked to pause; outbound queue full", self.app),
            ));
        }
        tokio::time::sleep_until(paused_until).await;
        Ok(())
    }

    fn queue_full(&self, limiter_wait: Option<Duration>) -> Error {
        // The queue ahead drains at the sustained rate; that is when a retry can expect a permit.
        let queued = self.counters.queued.load(Ordering::Relaxed) as f64;
        let drain = Duration::from_secs_f64(queued / self.config.requests_per_second);
        let retry_after = drain.max(limiter_wait.unwrap_or_default()).max(self.paused_for().unwrap_or_default());
        Error::rate_limited(
            Some(whole_seconds(retry_after)),
            format!(
                "{}: outbound queue full: no vendor call slot within {}s",
                self.app,
                self.config.queue_timeout.as_secs_f64()
            ),
        )
    }

    /// Holds every call of the app back for `d` (never shortens a pause already set).
    fn pause(&self, d: Duration) {
        let shared = d.min(MAX_PAUSE);
        self.share(move |budget, app| Box::pin(async move { budget.pause(&app, shared).await }));
        let until = Instant::now() + d.min(MAX_PAUSE);
        let mut paused = lock(&self.paused_until);
        if !matches!(*paused, Some(current) if current >= until) {
            *paused = Some(until);
        }
    }

    fn admit(&self) -> Result<Admission<'_>> {
        let mut breaker = lock(&self.breaker);
        let now = Instant::now();
        let probe = match *breaker {
            Breaker::Closed { .. } => false,
            Breaker::Open { until } if now >= until => true,
            Breaker::HalfOpen { probing: false } => true,
            Breaker::Open { until } => {
                bump(&self.counters.rejected_breaker_open);
                return Err(Error::unavailable(
                    Some(whole_seconds(until - now)),
                    format!("{}: circuit open after repeated vendor failures", self.app),
                ));
            }
            Breaker::HalfOpen { probing: true } => {
                bump(&self.counters.rejected_breaker_open);
                // The probe's answer is due within one call deadline.
                return Err(Error::unavailable(
                    Some(whole_seconds(self.config.deadline)),
                    format!("{}: circuit open, probing the vendor", self.app),
                ));
            }
        };
        if probe {
            *breaker = Breaker::HalfOpen { probing: true };
        }
        Ok(Admission { outbound: self, probe, verdict: Verdict::Neutral })
    }

    fn settle(&self, probe: bool, verdict: Verdict) {
        let mut breaker = lock(&self.breaker);
        let open = |breaker: &mut Breaker| {
            *breaker = Breaker::Open { until: Instant::now() + self.config.breaker_cooldown };
            bump(&self.counters.breaker_opens);
            let cooldown = self.config.breaker_cooldown;
            self.share(move |budget, app| Box::pin(async move { budget.open_breaker(&app, cooldown).await }));
        };
        if probe {
            match verdict {
                Verdict::Success => {
                    *breaker = Breaker::Closed { failures: 0 };
                    tracing::info!(app = %self.app, "vendor answered the probe: circuit closed");
                }
                Verdict::Failure => {
                    open(&mut breaker);
                    tracing::warn!(app = %self.app, "probe call failed: circuit open again");
                }
                Verdict::Neutral => *breaker = Breaker::HalfOpen { probing: false },
            }
            return;
        }
        // Calls that started before the breaker opened do not move it any more.
        let Breaker::Closed { failures } = *breaker else { return };
        match verdict {
            Verdict::Success => *breaker = Breaker::Closed { failures: 0 },
            Verdict::Neutral => {}
            Verdict::Failure => {
                let failures = failures.saturating_add(1);
                if self.config.breaker_failures > 0 && failures >= self.config.breaker_failures {
                    open(&mut breaker);
                    tracing::warn!(
                        app = %self.app,
                        failures,
                        cooldown_s = self.config.breaker_cooldown.as_secs_f64(),
                        "vendor calls keep failing: circuit open"
                    );
                } else {
                    *breaker = Breaker::Closed { failures };
                }
            }
        }
    }

    /// 401/403: logged once a minute per app at most (a revoked key fails every call); never the headers.
    fn warn_refused_credential(&self, status: u16) {
        let now = Instant::now();
        let mut last = lock(&self.last_auth_warning);
        if !matches!(*last, Some(at) if now.duration_since(at) < AUTH_WARNING_EVERY) {
            *last = Some(now);
            tracing::warn!(app = %self.app, status, "vendor refused the gateway's credential; check the app's API key");
        }
    }
}

/// The exponential schedule before jitter: `backoff_min`, doubling, capped at `backoff_max`.
fn backoff_schedule(config: &OutboundConfig) -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(config.backoff_min)
        .with_max_delay(config.backoff_max)
        .with_factor(2.0)
        .without_max_times()
        .build()
}

/// "Equal jitter": between half and all of the delay. backon's own jitter adds up to another full delay
/// on top, which would overshoot `backoff_max`; this spreads retries without ever exceeding it.
fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(rand::random_range(0.5..=1.0))
}

/// A reqwest error (its URL already stripped: query strings may hold keys) with its causes.
/// The most a vendor reply may weigh: a page of users is well under 1 MiB; a vendor (or something in
/// its place) sending more is cut off rather than held in memory.
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// Reads a reply's body, refusing one over `MAX_RESPONSE_BYTES` (declared or streamed).
async fn read_capped(mut resp: reqwest::Response) -> std::result::Result<Vec<u8>, (Failure, Option<reqwest::Error>)> {
    if resp.content_length().is_some_and(|n| n > MAX_RESPONSE_BYTES as u64) {
        return Err((Failure::TooLarge, None));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| (Failure::Lost, Some(e.without_url())))? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err((Failure::TooLarge, None));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A few words on a transport failure, without addresses or OS detail.
fn short_reason(e: &Option<reqwest::Error>) -> &'static str {
    match e {
        None => "no detail",
        Some(e) if e.is_timeout() => "timed out",
        Some(e) if e.is_body() || e.is_decode() => "the body broke off",
        Some(_) => "the connection broke",
    }
}

fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    parse_retry_after_at(headers, std::time::SystemTime::now())
}

/// `Retry-After` as seconds or an HTTP date, a date read against `now` (a date in the past is zero).
pub fn parse_retry_after_at(headers: &HeaderMap, now: std::time::SystemTime) -> Option<Duration> {
    let raw = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    // Clamped: an absurd value must neither overflow `Instant` arithmetic nor stall the app for days.
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_PAUSE));
    }
    let when = httpdate::parse_http_date(raw).ok()?;
    Some(when.duration_since(now).unwrap_or_default().min(MAX_PAUSE))
}

#[cfg(test)]
mod tests {
    //! Every test runs on tokio's paused clock: the scripted vendor below listens on a real 127.0.0.1
    //! socket, and tokio advances virtual time only when every task is idle, so the timings asserted are
    //! exact (to the millisecond the timer wheel rounds to) and no test sleeps on the wall clock.

    use std::collections::VecDeque;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    use axum::extract::State;
    use axum::http::{header, StatusCode};
    use axum::response::{IntoResponse, Response};
    use reqwest::header::{HeaderValue, AUTHORIZATION};

    use super::*;
    use crate::error::ErrorKind;

    /// What the scripted vendor does with one request.
    #[derive(Clone, Debug)]
    enum Reply {
        Status(u16),
        RetryAfter(u16, String),
        Slow(Duration, u16),
        Hang,
    }

    struct Vendor {
        script: Mutex<VecDeque<Reply>>,
        then: Reply,
        origin: Instant,
        arrivals: Mutex<Vec<Duration>>,
        request_ids: Mutex<Vec<Option<String>>>,
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
    }

    impl Vendor {
        fn hits(&self) -> usize {
            lock(&self.arrivals).len()
        }
        fn arrivals(&self) -> Vec<Duration> {
            lock(&self.arrivals).clone()
        }
    }

    struct InFlight<'a>(&'a AtomicUsize);
    impl Drop for InFlight<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    async fn answer(State(vendor): State<Arc<Vendor>>, headers: axum::http::HeaderMap) -> Response {
        lock(&vendor.arrivals).push(vendor.origin.elapsed());
        let request_id = headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(String::from);
        lock(&vendor.request_ids).push(request_id);
        let now = vendor.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        vendor.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let _in_flight = InFlight(&vendor.in_flight);
        let reply = lock(&vendor.script).pop_front().unwrap_or_else(|| vendor.then.clone());
        let status = |code: u16| StatusCode::from_u16(code).unwrap();
        match reply {
            Reply::Status(code) => (status(code), "{}").into_response(),
            Reply::RetryAfter(code, value) => (status(code), [(header::RETRY_AFTER, value)], "{}").into_response(),
            Reply::Slow(delay, code) => {
                tokio::time::sleep(delay).await;
                (status(code), "{}").into_response()
            }
            Reply::Hang => std::future::pending().await,
        }
    }

    /// A vendor on 127.0.0.1:0 answering `script` in order, then `then` forever; returns its URL.
    async fn vendor(script: Vec<Reply>, then: Reply) -> (String, Arc<Vendor>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let vendor = Arc::new(Vendor {
            script: Mutex::new(script.into()),
            then,
            origin: Instant::now(),
            arrivals: Mutex::default(),
            request_ids: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let app = axum::Router::new().fallback(answer).with_state(vendor.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/users?key=secret"), vendor)
    }

    /// Generous limits, short backoff: each test tightens what it is about.
    fn config() -> OutboundConfig {
        OutboundConfig {
            requests_per_second: 1000.0,
            burst: 1000,
            max_in_flight: 100,
            queue_timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(5),
            deadline: Duration::from_secs(60),
            max_attempts: 4,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            breaker_failures: 100,
            breaker_cooldown: Duration::from_secs(30),
            shared: Default::default(),
        }
    }

    fn get(url: &str) -> VendorRequest {
        VendorRequest::new(Method::GET, url)
    }

    fn post(url: &str) -> VendorRequest {
        VendorRequest::new(Method::POST, url).json(&serde_json::json!({"userName": "a@example.com"}))
    }

    /// Runs `n` copies of a request at once; results in completion order do not matter to callers.
    async fn concurrently(out: &Arc<Outbound>, n: usize, req: VendorRequest) -> Vec<Result<VendorResponse>> {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let (out, req) = (out.clone(), req.clone());
                tokio::spawn(async move { out.send(req).await })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        results
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    /// A due time at the pacer's rate (just under the configured one).
    fn paced(d: Duration) -> Duration {
        d.mul_f64(1.0 + PACING_MARGIN)
    }

    fn close_to(actual: Duration, expected: Duration) -> bool {
        actual >= expected && actual <= expected + ms(5)
    }

    // --- pure policy -------------------------------------------------------------------------------------

    #[test]
    fn retry_decision_table() {
        use Failure::*;
        let table = [
            // failure, idempotent retried, POST retried, maybe applied
            (TooManyRequests, true, true, false),
            (Connect, true, true, false),
            (ServerError(502), true, false, true),
            (Timeout, true, false, true),
            (Lost, true, false, true),
        ];
        for (failure, idempotent, post, applied) in table {
            assert_eq!(may_retry(failure, true), idempotent, "{failure:?} idempotent");
            assert_eq!(may_retry(failure, false), post, "{failure:?} POST");
            assert_eq!(maybe_applied(failure), applied, "{failure:?} maybe_applied");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_stays_within_it() {
        let config = OutboundConfig::default();
        let schedule: Vec<_> = backoff_schedule(&config).take(7).collect();
        let expected = [ms(200), ms(400), ms(800), ms(1600), ms(3200), ms(5000), ms(5000)];
        // backon multiplies in f32: a few nanoseconds off.
        for (got, want) in schedule.iter().zip(expected) {
            assert!(got.abs_diff(want) < Duration::from_micros(1), "{schedule:?}");
        }
        for _ in 0..1000 {
            let d = jittered(ms(5000));
            assert!(d >= ms(2500) && d <= ms(5000), "{d:?}");
        }
    }

    #[test]
    fn retry_after_parses_seconds_and_http_dates() {
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let headers = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_str(v).unwrap());
            h
        };
        let in_90s = httpdate::fmt_http_date(now + Duration::from_secs(90));
        let ago = httpdate::fmt_http_date(now - Duration::from_secs(90));
        let table = [
            ("120", Some(Duration::from_secs(120))),
            (" 3 ", Some(Duration::from_secs(3))),
            ("0", Some(Duration::ZERO)),
            (in_90s.as_str(), Some(Duration::from_secs(90))),
            (ago.as_str(), Some(Duration::ZERO)),
            ("soon", None),
            ("-5", None),
        ];
        for (raw, expected) in table {
            assert_eq!(parse_retry_after_at(&headers(raw), now), expected, "{raw}");
        }
        assert_eq!(parse_retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn invalid_configs_are_refused_with_the_key_named() {
        let cases = [
            OutboundConfig { requests_per_second: 0.0, ..config() },
            OutboundConfig { requests_per_second: f64::NAN, ..config() },
            OutboundConfig { burst: 0, ..config() },
            OutboundConfig { max_in_flight: 0, ..config() },
            OutboundConfig { max_attempts: 0, ..config() },
            OutboundConfig { backoff_min: Duration::from_secs(9), ..config() },
            OutboundConfig { deadline: Duration::ZERO, ..config() },
            OutboundConfig { attempt_timeout: Duration::ZERO, ..config() },
            OutboundConfig { queue_timeout: Duration::ZERO, ..config() },
            OutboundConfig { attempt_timeout: Duration::from_secs(61), ..config() },
        ];
        let keys = [
            "requests_per_second",
            "requests_per_second",
            "burst",
            "max_in_flight",
            "max_attempts",
            "backoff_min",
            "deadline_ms",
            "attempt_timeout_ms",
            "queue_timeout_ms",
            "attempt_timeout_ms",
        ];
        for (bad, key) in cases.into_iter().zip(keys) {
            let err = Outbound::new("acme", bad.clone()).unwrap_err();
            assert_eq!(err.kind(), &ErrorKind::Invalid, "{bad:?}");
            assert!(err.detail().starts_with(&format!("acme: {key} ")), "{err}");
        }
        assert!(Outbound::new("acme", OutboundConfig::default()).is_ok());
    }

    #[test]
    fn debug_never_shows_header_values_query_or_body() {
        let req = get("https://user:pw@vendor.example/api/users?api_key=k3y")
            .header(AUTHORIZATION, HeaderValue::from_static("Bearer sk_live_123"))
            .json(&serde_json::json!({"password": "hunter2"}));
        let shown = format!("{req:?} {req:#?}");
        for secret in ["sk_live_123", "Bearer", "k3y", "pw@", "hunter2"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("authorization") && shown.contains("/api/users"), "{shown}");
        let resp = VendorResponse { status: 200, headers: req.headers.clone(), body: b"{}".to_vec() };
        assert!(!format!("{resp:?}").contains("sk_live_123"));
    }

    #[tokio::test(start_paused = true)]
    async fn late_wake_ups_do_not_slow_the_schedule() {
        // Reservations follow the schedule, not the wake-up time: a sleeper that wakes late (as tokio's
        // millisecond timer does) does not push every later slot back.
        let mut pacer = Pacer::new(ms(10), 1);
        let t0 = Instant::now();
        let mut slots = Vec::new();
        for i in 0..100u32 {
            let now = t0 + ms(10) * i + Duration::from_micros(900); // every caller shows up 0.9 ms late
            let slot = pacer.next_slot(now.max(slots.last().copied().unwrap_or(t0)));
            pacer.commit(slot);
            slots.push(slot);
        }
        let span = *slots.last().unwrap() - slots[0];
        assert!(span <= ms(10) * 99 + ms(1), "100 slots at 100/s take 990 ms, not more: {span:?}");
        let mut burst = Pacer::new(ms(10), 3);
        let at = Instant::now();
        let first: Vec<Instant> = (0..4)
            .map(|_| {
                let s = burst.next_slot(at);
                burst.commit(s);
                s
            })
            .collect();
        assert_eq!(&first[..3], &[at, at, at], "a burst of 3 goes at once");
        assert_eq!(first[3], at + ms(10), "then one per period");
    }

    #[tokio::test(start_paused = true)]
    async fn the_limiter_runs_on_tokios_clock() {
        let out = Outbound::new("acme", OutboundConfig { requests_per_second: 0.5, burst: 1, ..config() }).unwrap();
        // The backstop's quota is the burst plus one period of timer lateness.
        assert!(out.limiter.check().is_ok());
        assert!(out.limiter.check().is_ok());
        assert!(out.limiter.check().is_err());
        tokio::time::advance(ms(1999)).await;
        assert!(out.limiter.check().is_err());
        tokio::time::advance(ms(1)).await;
        assert!(out.limiter.check().is_ok());
    }

    // --- rate limit, queue, in-flight cap --------------------------------------------------------------------

    #[tokio::test(start_paused = true)]
    async fn background_work_yields_the_rate_to_entra_calls() {
        let (url, vendor) = vendor(vec![], Reply::Status(200)).await;
        let out =
            Arc::new(Outbound::new("acme", OutboundConfig { requests_per_second: 2.0, burst: 1, ..config() }).unwrap());
        let entra_call = |out: &Arc<Outbound>| {
            let (out, req) = (out.clone(), get(&url));
            tokio::spawn(async move { out.send(req).await.map(|_| Instant::now()) })
        };
        let mut entra: Vec<_> = (0..2).map(|_| entra_call(&out)).collect();
        tokio::task::yield_now().await;
        // Reconcile asks between Entra's calls: first in, but it goes after every Entra call queued meanwhile.
        let background = {
            let (out, req) = (out.clone(), get(&url));
            let log = Arc::new(crate::calls::CallLog::background("reconcile"));
            tokio::spawn(crate::calls::scope(log, async move { out.send(req).await.map(|_| Instant::now()) }))
        };
        tokio::task::yield_now().await;
        entra.extend((0..2).map(|_| entra_call(&out)));
        let mut last_entra = None;
        for call in entra {
            let done = call.await.unwrap().unwrap();
            last_entra = last_entra.max(Some(done));
        }
        let background_done = background.await.unwrap().unwrap();
        assert!(Some(background_done) > last_entra, "the background call went before an Entra call");
        assert_eq!(vendor.arrivals().len(), 5, "every call reached the vendor");
    }

    #[tokio::test(start_paused = true)]
    async fn calls_are_spaced_at_the_rate_after_the_burst_and_none_early() {
        let (url, vendor) = vendor(vec![], Reply::Status(200)).await;
        let out =
            Arc::new(Outbound::new("acme", OutboundConfig { requests_per_second: 2.0, burst: 3, ..config() }).unwrap());
        let started = Instant::now();
        let results = concurrently(&out, 10, get(&url)).await;
        assert!(results.iter().all(Result::is_ok));
        // 10 calls, burst 3, 2 per second (paced 2 % under): the last goes out (10 - 3) / 2 = 3.5 s in.
        let mut arrivals = vendor.arrivals();
        arrivals.sort();
        for (i, at) in arrivals.iter().enumerate() {
            let due = paced(ms(500 * (i.saturating_sub(2)) as u64));
            assert!(close_to(*at, due), "call {i} at {at:?}, due {due:?}");
        }
        assert!(close_to(started.elapsed(), paced(ms(3500))), "{:?}", started.elapsed());
        let stats = out.stats();
        assert_eq!((stats.calls, stats.attempts, stats.failures), (10, 10, 0));
        assert!(stats.limiter_wait_seconds > 10.0, "{stats:?}"); // 0.5 + 1 + ... + 3.5 = 14 s in all
    }

    #[tokio::test(start_paused = true)]
    async fn a_fractional_rate_spaces_calls_seconds_apart() {
        let (url, vendor) = vendor(vec![], Reply::Status(200)).await;
        let out = Outbound::new("acme", OutboundConfig { requests_per_second: 0.5, burst: 1, ..config() }).unwrap();
        for _ in 0..3 {
            out.send(get(&url)).await.unwrap();
        }
        let arrivals = vendor.arrivals();
        assert!(close_to(arrivals[1], paced(ms(2000))) && close_to(arrivals[2], paced(ms(4000))), "{arrivals:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_queue_timeout_a_call_is_rate_limited_without_a_vendor_call() {
        let (url, vendor) = vendor(vec![], Reply::Status(200)).await;
        let out = Arc::new(
            Outbound::new(
                "acme",
                OutboundConfig { requests_per_second: 1.0, burst: 1, queue_timeout: ms(2500), ..config() },
            )
            .unwrap(),
        );
        let started = Instant::now();
        let results = concurrently(&out, 5, get(&url)).await;
        // Permits at 0, 1 and 2 s; the next would be at 3 s, past the 2.5 s queue timeout.
        assert_eq!(vendor.hits(), 3);
        let refused: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(refused.len(), 2);
        for err in refused {
            assert!(
                matches!(err.kind(), ErrorKind::RateLimited { retry_after: Some(d) } if *d >= Duration::from_secs(1))
            );
            assert!(err.detail().contains("queue full"), "{err}");
            assert!(!err.maybe_applied());
        }
        assert!(started.elapsed() <= ms(2500), "{:?}", started.elapsed());
        let stats = out.stats();
        assert_eq!((stats.rejected_queue_full, stats.attempts, stats.failures), (2, 3, 2));
        // Rejections are not vendor failures.
        assert_eq!(out.breaker_state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_max_in_flight_calls_reach_the_vendor_at_once() {
        let (url, vendor) = vendor(vec![], Reply::Slow(Duration::from_secs(1), 200)).await;
        let out = Arc::new(Outbound::new("acme", OutboundConfig { max_in_flight: 2, ..config() }).unwrap());
        let started = Instant::now();
        let results = concurrently(&out, 6, get(&url)).await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(vendor.max_in_flight.load(Ordering::SeqCst), 2);
        assert!(close_to(started.elapsed(), Duration::from_secs(3)), "{:?}", started.elapsed());
        assert_eq!(out.stats().in_flight, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_in_flight_cap_also_times_out_into_rate_limited() {
        let (url, vendor) = vendor(vec![], Reply::Slow(Duration::from_secs(5), 200)).await;
        let out = Arc::new(
            Outbound::new(
                "acme",
                OutboundConfig {
                    max_in_flight: 1,
                    queue_timeout: Duration::from_secs(2),
                    attempt_timeout: Duration::from_secs(10),
                    ..config()
                },
            )
            .unwrap(),
        );
        let results = concurrently(&out, 2, get(&url)).await;
        assert_eq!(vendor.hits(), 1);
        assert!(results.iter().any(|r| matches!(r.as_ref().map_err(Error::kind), Err(ErrorKind::RateLimited { .. }))));
    }

    #[tokio::test(start_paused = true)]
    async fn every_retry_takes_a_rate_limit_permit() {
        let (url, vendor) = vendor(vec![Reply::Status(503)], Reply::Status(200)).await;
        let config = OutboundConfig { requests_per_second: 1.0, burst: 1, backoff_min: ms(10), ..config() };
        let out = Outbound::new("acme", config).unwrap();
        out.send(get(&url)).await.unwrap();
        // The backoff alone would allow the retry after 10 ms; the limiter holds it to 1 s.
        let arrivals = vendor.arrivals();
        assert!(close_to(arrivals[1], paced(Duration::from_secs(1))), "{arrivals:?}");
    }

    // --- Retry-After -----------------------------------------------------------------------------------------

    #[tokio::test(start_paused = true)]
    async fn retry_after_seconds_delays_the_retry_and_every_other_call_of_the_app() {
        let (url, vendor) = vendor(vec![Reply::RetryAfter(429, "2".into())], Reply::Status(200)).await;
        let out = Arc::new(Outbound::new("acme", config()).unwrap());
        let first = tokio::spawn({
            let (out, url) = (out.clone(), url.clone());
            async move { out.send(get(&url)).await }
        });
        // Another call of the same app starts after the 429 came back.
        tokio::time::sleep(ms(500)).await;
        assert!(out.paused_for().is_some());
        out.send(get(&url)).await.unwrap();
        first.await.unwrap().unwrap();
        let mut arrivals = vendor.arrivals();
        arrivals.sort();
        assert_eq!(arrivals.len(), 3);
        assert_eq!(arrivals[0], Duration::ZERO);
        for later in &arrivals[1..] {
            assert!(*later >= Duration::from_secs(2) && *later <= ms(2005), "{arrivals:?}");
        }
        let stats = out.stats();
        assert_eq!((stats.rate_limited_by_vendor, stats.retries, stats.failures), (1, 1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_as_an_http_date_is_honoured() {
        // The date is read against the wall clock, which paused tokio time does not move: 3 s ahead reads
        // as 2 to 3 s depending on where in the second "now" falls.
        let date = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3));
        let (url, vendor) = vendor(vec![Reply::RetryAfter(503, date)], Reply::Status(200)).await;
        let out = Outbound::new("acme", config()).unwrap();
        out.send(get(&url)).await.unwrap();
        let arrivals = vendor.arrivals();
        assert!(arrivals[1] >= Duration::from_secs(2) && arrivals[1] <= ms(3005), "{arrivals:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_longer_than_the_queue_timeout_fails_fast_with_the_time_left() {
        let (url, vendor) = vendor(vec![Reply::RetryAfter(429, "60".into())], Reply::Status(200)).await;
        let out = Outbound::new("acme", OutboundConfig { deadline: Duration::from_secs(25), ..config() }).unwrap();
        let started = Instant::now();
        // The vendor's 60 s is past the deadline: no retry, the 429 goes back with the vendor's wait.
        let err = out.send(get(&url)).await.unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::RateLimited { retry_after: Some(Duration::from_secs(60)) });
        assert!(!err.maybe_applied());
        assert_eq!(started.elapsed(), Duration::ZERO);
        // Meanwhile every call of the app is refused at once, without a vendor call.
        tokio::time::advance(Duration::from_secs(10)).await;
        let err = out.send(get(&url)).await.unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::RateLimited { retry_after: Some(Duration::from_secs(50)) });
        assert_eq!(vendor.hits(), 1);
    }

    // --- retries -------------------------------------------------------------------------------------------------

    #[tokio::test(start_paused = true)]
    async fn an_idempotent_call_is_retried_through_5xx() {
        let (url, vendor) = vendor(vec![Reply::Status(503); 3], Reply::Status(200)).await;
        let out = Outbound::new("acme", config()).unwrap();
        let resp = out.send(get(&url)).await.unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(vendor.hits(), 4);
        let stats = out.stats();
        assert_eq!((stats.calls, stats.attempts, stats.retries, stats.failures), (1, 4, 3, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn every_attempt_is_recorded_for_the_audit_log_with_its_outcome() {
        let script = vec![Reply::Status(503), Reply::Slow(Duration::from_secs(60), 200), Reply::Status(429)];
        let (url, _vendor) = vendor(script, Reply::Status(200)).await;
        let out = Outbound::new("acme", config()).unwrap();
        let log = Arc::new(crate::calls::CallLog::default());
        let resp = crate::calls::scope(log.clone(), out.send(get(&format!("{url}?filter=secret")))).await.unwrap();
        assert_eq!(resp.status, 200);
        let attempts = log.attempt_log();
        let outcomes: Vec<&str> = attempts.iter().map(|a| a.outcome.as_str()).collect();
        assert_eq!(outcomes, ["503", "timeout", "429", "200"]);
        assert!(attempts.iter().all(|a| a.method == "GET" && !a.path.contains("secret")), "{attempts:?}");
        let timed_out = &attempts[1];
        assert_eq!(timed_out.ms, config().attempt_timeout.as_millis() as u64, "{timed_out:?}");
        assert_eq!((log.calls(), log.attempts()), (1, 4));
    }

    #[tokio::test(start_paused = true)]
    async fn the_entra_requests_budget_bounds_every_call_in_it() {
        let (url, vendor) = vendor(vec![], Reply::Hang).await;
        let out = Outbound::new("acme", OutboundConfig { deadline: Duration::from_secs(60), ..config() }).unwrap();
        let started = Instant::now();
        let log = Arc::new(crate::calls::CallLog::for_request("r").with_deadline(started + Duration::from_secs(2)));
        let err = crate::calls::scope(log.clone(), out.send(get(&url))).await.unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Unavailable { .. }), "{err}");
        assert_eq!(started.elapsed(), Duration::from_secs(2), "cut at the budget, not the call's 60 s deadline");
        // The budget is spent: the request's next call does not reach the vendor at all, and is a 429 (the
        // gateway's own backlog), not a vendor outage.
        let hits = vendor.hits();
        let calls = out.stats().calls;
        let err = crate::calls::scope(log, out.send(get(&url))).await.unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::RateLimited { .. }), "{err}");
        assert_eq!((vendor.hits(), out.stats().calls), (hits, calls));
    }

    /// Timeouts the request's budget caused are not the vendor's: they never open the breaker.
    #[tokio::test(start_paused = true)]
    async fn attempts_cut_by_the_budget_do_not_count_against_the_vendor() {
        let (url, _vendor) = vendor(vec![], Reply::Hang).await;
        let config = OutboundConfig { breaker_failures: 2, max_attempts: 1, ..config() };
        let out = Outbound::new("acme", config).unwrap();
        for _ in 0..3 {
            let log = Arc::new(
                crate::calls::CallLog::for_request("r").with_deadline(Instant::now() + Duration::from_secs(2)),
            );
            assert!(crate::calls::scope(log, out.send(get(&url))).await.is_err());
        }
        assert_eq!(out.breaker_state(), BreakerState::Closed);
        // The same timeouts at the vendor's own pace (no budget) do open it.
        for _ in 0..2 {
            assert!(out.send(get(&url)).await.is_err());
        }
        assert_eq!(out.breaker_state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn every_attempt_carries_the_entra_request_id() {
        let (url, vendor) = vendor(vec![Reply::Status(503)], Reply::Status(200)).await;
        let out = Outbound::new("acme", config()).unwrap();
        let log = Arc::new(crate::calls::CallLog::for_request("entra-req-42"));
        crate::calls::scope(log, out.send(get(&url))).await.unwrap();
        out.send(get(&url)).await.unwrap();
        let seen = lock(&vendor.request_ids).clone();
        assert_eq!(seen, [Some("entra-req-42".to_string()), Some("entra-req-42".to_string()), None]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idempotent_call_stops_after_max_attempts() {
        let (url, vendor) = vendor(vec![], Reply::Status(502)).await;
        let out = Outbound::new("acme", config()).unwrap();
        let err = out.send(VendorRequest::new(Method::PUT, url.as_str())).await.unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Unavailable { .. }), "{err}");
        assert!(err.detail().contains("502") && !err.detail().contains("secret"), "{err}");
        assert_eq!(vendor.hits(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idempotent_call_is_retried_after_a_timeout() {
        let (url, vendor) = vendor(vec![Reply::Hang], Reply::Status(200)).await;
        let out = Outbound::new("acme", config()).unwrap();
        let started = Instant::now();
        out.send(get(&url)).await.unwrap();
        assert_eq!(vendor.hits(), 2);
        assert!(started.elapsed() >= Duration::from_secs(5), "{:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_post_is_not_retried_after_a_5xx() {
        let (url, vendor) = vendor(vec![Reply::Status(500)], Reply::Status(201)).await;
        let out = Outbound::new("acme", config()).unwrap();
        let err = out.send(post(&url)).await.unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Unavailable { .. }), "{err}");
        assert!(err.maybe_applied());
        assert_eq!(vendor.hits(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_post_is_not_retried_after_a_timeout() {
        let (url, vendor) = vendor(vec![Reply::Hang], Reply::Status(201)).await;
        let out = Outbound::new("acme", config()).unwrap();
        let started = Instant::now();
        let err = out.send(post(&url)).await.unwrap_err();
        assert!(err.is_retryable() && err.maybe_applied(), "{err:?}");
        assert!(err.detail().contains("no answer"), "{err}");
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(vendor.hits(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_post_is_retried_after_a_429() {
        let (url, vendor) = vendor(vec![Reply::Status(429)], Reply::Status(201)).await;
        let out = Outbound::new("acme", config()).unwrap();
        assert_eq!(out.send(post(&url)).await.unwrap().status, 201);
        assert_eq!(vendor.hits(), 2);
        // Without a Retry-After the backoff (100 ms jittered) paced the retry.
        let arrivals = vendor.arrivals();
        assert!(arrivals[1] >= ms(50), "{arrivals:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_post_is_retried_after_a_connect_failure_and_reported_not_applied() {
        // A port nobody listens on: connection refused, so the request was never sent.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/users", listener.local_addr().unwrap());
        drop(listener);
        let out = Outbound::new("acme", config()).unwrap();
        let err = out.send(post(&url)).await.unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Unavailable { .. }), "{err}");
        assert!(!err.maybe_applied(), "{err:?}");
        assert!(err.detail().contains("cannot connect"), "{err}");
        assert_eq!(out.stats().attempts, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn unauthorized_forbidden_and_not_implemented_come_back_once_unretried() {
        for code in [401, 403, 404, 409, 501] {
            let (url, vendor) = vendor(vec![], Reply::Status(code)).await;
            let out = Outbound::new("acme", OutboundConfig { breaker_failures: 1, ..config() }).unwrap();
            for _ in 0..3 {
                assert_eq!(out.send(get(&url)).await.unwrap().status, code);
            }
            assert_eq!(vendor.hits(), 3, "{code}");
            assert_eq!(out.stats().retries, 0);
            // 4xx (and 501) answers are the vendor working: they never open the breaker.
            assert_eq!(out.breaker_state(), BreakerState::Closed);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_bounds_all_attempts_and_waits() {
        let (url, vendor) = vendor(vec![], Reply::Slow(Duration::from_secs(2), 503)).await;
        let config = OutboundConfig {
            deadline: Duration::from_secs(7),
            queue_timeout: Duration::from_secs(7),
            max_attempts: 10,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(1),
            ..config()
        };
        let out = Outbound::new("acme", config).unwrap();
        let started = Instant::now();
        let err = out.send(get(&url)).await.unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Unavailable { .. }), "{err}");
        // 2 s per attempt and 0.5-1 s between: three attempts fit in 7 s, a fourth wait would not.
        assert!(started.elapsed() <= Duration::from_secs(7), "{:?}", started.elapsed());
        assert!((2..=3).contains(&vendor.hits()), "{}", vendor.hits());
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_is_cut_at_the_deadline() {
        let (url, vendor) = vendor(vec![], Reply::Hang).await;
        // The first attempt times out at 3 s; the retry has under 2 s left and is cut at the deadline.
        let config = OutboundConfig {
            attempt_timeout: Duration::from_secs(3),
            deadline: Duration::from_secs(5),
            queue_timeout: Duration::from_secs(5),
            ..config()
        };
        let out = Outbound::new("acme", config).unwrap();
        let started = Instant::now();
        assert!(out.send(get(&url)).await.is_err());
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(vendor.hits(), 2);
    }

    // --- circuit breaker -----------------------------------------------------------------------------------------

    fn breaker_config() -> OutboundConfig {
        OutboundConfig { max_attempts: 1, breaker_failures: 3, breaker_cooldown: Duration::from_secs(30), ..config() }
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_after_consecutive_failures_and_fails_fast() {
        let (url, vendor) = vendor(vec![], Reply::Status(503)).await;
        let out = Outbound::new("acme", breaker_config()).unwrap();
        for _ in 0..2 {
            assert!(out.send(get(&url)).await.is_err());
            assert_eq!(out.breaker_state(), BreakerState::Closed);
        }
        assert!(out.send(get(&url)).await.is_err());
        assert_eq!(out.breaker_state(), BreakerState::Open);
        assert_eq!(vendor.hits(), 3);

        tokio::time::advance(Duration::from_secs(10)).await;
        let err = out.send(get(&url)).await.unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::Unavailable { retry_after: Some(Duration::from_secs(20)) });
        assert!(err.detail().contains("circuit open"), "{err}");
        assert_eq!(vendor.hits(), 3);
        let stats = out.stats();
        assert!(stats.breaker_open);
        assert_eq!((stats.breaker_state, stats.breaker_opens, stats.rejected_breaker_open), (BreakerState::Open, 1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_failure_count() {
        let script =
            vec![Reply::Status(503), Reply::Status(503), Reply::Status(200), Reply::Status(503), Reply::Status(503)];
        let (url, _vendor) = vendor(script, Reply::Status(200)).await;
        let out = Outbound::new("acme", breaker_config()).unwrap();
        for _ in 0..5 {
            let _ = out.send(get(&url)).await;
        }
        assert_eq!(out.breaker_state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_successful_half_open_probe_closes_the_breaker() {
        let (url, vendor) = vendor(vec![Reply::Status(503); 3], Reply::Slow(Duration::from_secs(1), 200)).await;
        let out = Arc::new(Outbound::new("acme", breaker_config()).unwrap());
        for _ in 0..3 {
            let _ = out.send(get(&url)).await;
        }
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(out.breaker_state(), BreakerState::HalfOpen);

        // One probe goes through; a call while it is out fails fast.
        let probe = tokio::spawn({
            let (out, url) = (out.clone(), url.clone());
            async move { out.send(get(&url)).await }
        });
        tokio::time::sleep(ms(100)).await;
        let err = out.send(get(&url)).await.unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Unavailable { retry_after: Some(_) }), "{err}");
        assert_eq!(probe.await.unwrap().unwrap().status, 200);
        assert_eq!(vendor.hits(), 4);
        assert_eq!(out.breaker_state(), BreakerState::Closed);
        out.send(get(&url)).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_half_open_probe_reopens_the_breaker() {
        let (url, vendor) = vendor(vec![], Reply::Status(503)).await;
        let out = Outbound::new("acme", breaker_config()).unwrap();
        for _ in 0..3 {
            let _ = out.send(get(&url)).await;
        }
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(out.send(get(&url)).await.is_err());
        assert_eq!(vendor.hits(), 4);
        assert_eq!(out.breaker_state(), BreakerState::Open);
        assert_eq!(out.stats().breaker_opens, 2);
        let err = out.send(get(&url)).await.unwrap_err();
        assert_eq!(err.retry_after(), Some(Duration::from_secs(30)));
        assert_eq!(vendor.hits(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_probe_lets_the_next_call_probe() {
        let (url, vendor) =
            vendor(vec![Reply::Status(503), Reply::Status(503), Reply::Status(503), Reply::Hang], Reply::Status(200))
                .await;
        let out = Outbound::new("acme", breaker_config()).unwrap();
        for _ in 0..3 {
            let _ = out.send(get(&url)).await;
        }
        tokio::time::advance(Duration::from_secs(30)).await;
        // The caller (Entra's request) goes away while the probe hangs.
        assert!(tokio::time::timeout(Duration::from_secs(1), out.send(get(&url))).await.is_err());
        assert_eq!(out.breaker_state(), BreakerState::HalfOpen);
        out.send(get(&url)).await.unwrap();
        assert_eq!(vendor.hits(), 5);
        assert_eq!(out.breaker_state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn vendor_429s_do_not_open_the_breaker() {
        let (url, _vendor) = vendor(vec![], Reply::Status(429)).await;
        let out = Outbound::new("acme", breaker_config()).unwrap();
        for _ in 0..5 {
            let err = out.send(get(&url)).await.unwrap_err();
            assert!(matches!(err.kind(), ErrorKind::RateLimited { .. }), "{err}");
        }
        assert_eq!(out.breaker_state(), BreakerState::Closed);
        assert_eq!(out.stats().rate_limited_by_vendor, 5);
    }

    /// A budget shared with other replicas, in memory: answers from a script, remembers what it was told.
    #[derive(Debug, Default)]
    struct FakeBudget {
        answers: Mutex<std::collections::VecDeque<crate::budget::Reserved>>,
        pauses: Mutex<Vec<Duration>>,
        breakers: Mutex<Vec<Duration>>,
    }

    #[async_trait::async_trait]
    impl crate::budget::RateBudget for FakeBudget {
        async fn reserve(
            &self,
            _app: &str,
            _period: Duration,
            _tolerance: Duration,
            _max_wait: Duration,
        ) -> std::result::Result<crate::budget::Reserved, String> {
            lock(&self.answers).pop_front().ok_or_else(|| "unreachable".to_string())
        }
        async fn pause(&self, _app: &str, d: Duration) -> std::result::Result<(), String> {
            lock(&self.pauses).push(d);
            Ok(())
        }
        async fn open_breaker(&self, _app: &str, cooldown: Duration) -> std::result::Result<(), String> {
            lock(&self.breakers).push(cooldown);
            Ok(())
        }
    }

    /// With a shared budget, the slot comes from it: a full schedule, another replica's open breaker or
    /// an unreachable budget refuse the call without touching the vendor; a vendor's Retry-After and an
    /// opened breaker are passed on to the other replicas.
    #[tokio::test(start_paused = true)]
    async fn a_shared_budget_paces_and_hears_pauses_and_breakers() {
        use crate::budget::{Reserved, SharedBudget};
        let (url, vendor) = vendor(vec![Reply::RetryAfter(429, "3".into())], Reply::Status(503)).await;
        let budget = Arc::new(FakeBudget::default());
        lock(&budget.answers)
            .extend([Reserved::Full(Duration::from_secs(7)), Reserved::BreakerOpen(Duration::from_secs(20))]);
        let config = OutboundConfig { shared: SharedBudget::new(budget.clone()), breaker_failures: 1, ..config() };
        let out = Outbound::new("acme", config).unwrap();
        let full = out.send(get(&url)).await.unwrap_err();
        assert!(matches!(full.kind(), ErrorKind::RateLimited { .. }), "{full}");
        assert_eq!(full.retry_after(), Some(Duration::from_secs(7)));
        let open = out.send(get(&url)).await.unwrap_err();
        assert!(matches!(open.kind(), ErrorKind::Unavailable { .. }), "{open}");
        assert_eq!(open.retry_after(), Some(Duration::from_secs(20)));
        // The budget has no answer left: unreachable, so no unpaced call either.
        let unreachable = out.send(get(&url)).await.unwrap_err();
        assert!(unreachable.detail().contains("shared rate budget"), "{unreachable}");
        assert_eq!(vendor.hits(), 0);
        // Slots granted: the vendor's 429 + Retry-After 3 and then a 503 (which opens the breaker at one
        // failure) are shared.
        lock(&budget.answers).extend([Reserved::After(Duration::ZERO), Reserved::After(Duration::ZERO)]);
        let _ = out.send(get(&url)).await;
        tokio::task::yield_now().await;
        assert_eq!(vendor.hits(), 2);
        assert!(lock(&budget.pauses).iter().any(|d| *d >= Duration::from_secs(3)), "{:?}", lock(&budget.pauses));
        assert_eq!(*lock(&budget.breakers), [Duration::from_secs(30)]);
    }
}
