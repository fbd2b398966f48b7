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
//!
//! Each mechanism is a module of its own: [`config`] (the limits), [`pacer`] (when a call may leave),
//! [`breaker`] (when calls stop for a while), [`retry`] (whether and when an attempt is repeated),
//! [`stats`] (what is counted) and [`request`] (the call and its answer, formatted without secrets).

mod breaker;
mod config;
mod pacer;
mod request;
mod retry;
mod stats;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

pub use self::breaker::BreakerState;
pub use self::config::OutboundConfig;
pub use self::pacer::TokioClock;
pub use self::request::{VendorRequest, VendorResponse, MAX_RESPONSE_BYTES};
pub use self::retry::{parse_retry_after, parse_retry_after_at};
pub use self::stats::{CallOutcome, OutboundStats, StatusClass};

use self::breaker::{CircuitBreaker, Verdict};
use self::pacer::{NoSlot, Pacer};
use self::request::{describe, read_capped, short_reason, url_path};
use self::retry::{backoff_schedule, jittered, may_retry, maybe_applied, whole_seconds, Failure};
use self::stats::{bump, Counters, Waiting};
use crate::error::{Error, Origin, Result};

/// A message to the replicas' shared budget, sent in the background.
type SharedCall =
    std::pin::Pin<Box<dyn std::future::Future<Output = std::result::Result<(), crate::budget::SharedError>> + Send>>;

/// Tells the other replicas, without waiting for it (a lost message costs at most one 429 there).
fn share(
    shared: &crate::budget::SharedBudget,
    app: &str,
    what: impl FnOnce(std::sync::Arc<dyn crate::budget::RateBudget>, String) -> SharedCall,
) {
    let (Some(budget), Ok(rt)) = (shared.get(), tokio::runtime::Handle::try_current()) else { return };
    let call = what(budget.clone(), app.to_string());
    rt.spawn(async move {
        if let Err(e) = call.await {
            tracing::warn!(error = %e, "could not share a vendor pause or breaker with the other replicas");
        }
    });
}

/// A refused credential (401/403) is logged at most this often per app.
const AUTH_WARNING_EVERY: Duration = Duration::from_secs(60);

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The client for one app. Share it (`Arc`) between all of the app's calls: limits are per `Outbound`.
pub struct Outbound {
    app: String,
    config: OutboundConfig,
    http: reqwest::Client,
    pacer: Pacer,
    in_flight: Semaphore,
    breaker: CircuitBreaker,
    last_auth_warning: Mutex<Option<Instant>>,
    counters: Counters,
}

impl fmt::Debug for Outbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbound").field("app", &self.app).field("config", &self.config).finish()
    }
}

impl Outbound {
    pub fn new(app: &str, config: OutboundConfig) -> Result<Self> {
        config.validate().map_err(|e| Error::invalid(format!("{app}: {}", e.detail())).with_origin(Origin::Gateway))?;
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
        config.validate().map_err(|e| Error::invalid(format!("{app}: {}", e.detail())).with_origin(Origin::Gateway))?;
        let pacer = Pacer::new(&config)
            .ok_or_else(|| Error::invalid(format!("{app}: outbound.requests_per_second is too high")))?;
        let on_open: Option<Box<dyn Fn(Duration) + Send + Sync>> = config.shared.get().map(|_| {
            let (shared, app) = (config.shared.clone(), app.to_string());
            Box::new(move |cooldown: Duration| {
                share(&shared, &app, move |budget, app| {
                    Box::pin(async move { budget.open_breaker(&app, cooldown).await })
                })
            }) as Box<dyn Fn(Duration) + Send + Sync>
        });
        Ok(Outbound {
            app: app.to_string(),
            pacer,
            in_flight: Semaphore::new(config.max_in_flight),
            breaker: CircuitBreaker::new(&config, on_open),
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
        self.breaker.state()
    }

    /// How long every call of this app still waits because the vendor asked us to pause.
    pub fn paused_for(&self) -> Option<Duration> {
        self.pacer.paused_for()
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
            breaker_opens: get(&self.breaker.opens),
            rejected_queue_full: get(&c.rejected_queue_full),
            rejected_breaker_open: get(&self.breaker.rejected),
            in_flight: self.config.max_in_flight.saturating_sub(free) as u64,
            max_in_flight: self.config.max_in_flight as u64,
            requests_per_second: self.config.requests_per_second,
            late_slots: get(&c.late_slots),
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
        let mut fenced_unsent = false;
        let result = self.call(&req, budget, request_id.as_ref(), &mut fenced_unsent).await;
        if fenced_unsent {
            // Refused for a lost replica lock before its first attempt: the vendor never heard of it, so
            // it is neither a vendor call nor a vendor failure (in /metrics or the audit's count).
            return result;
        }
        bump(&self.counters.calls);
        crate::calls::count_call();
        if result.is_err() {
            bump(&self.counters.failures);
        }
        let outcome = match &result {
            Ok(resp) => CallOutcome::Answered(StatusClass::of(resp.status)),
            Err(e) => CallOutcome::Failed(e.kind_tag()),
        };
        *lock(&self.counters.by_outcome).entry(outcome).or_default() += 1;
        result
    }

    /// Background work (reconcile) shares the app's rate with Entra, Entra first: it waits until no Entra
    /// call is queued and the schedule has a free slot now, checking once per period. Its own call then
    /// reserves a slot like any other, so the vendor never sees more than the rate.
    async fn yield_to_entra(&self) {
        loop {
            let (free_now, period) = self.pacer.free_now(&self.app).await;
            if free_now && self.counters.foreground_queued.load(Ordering::Relaxed) == 0 {
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
        .with_origin(Origin::Gateway)
    }

    /// One call with its retries. `budget`: when the Entra request's vendor time ends, if in a request.
    async fn call(
        &self,
        req: &VendorRequest,
        budget: Option<Instant>,
        request_id: Option<&HeaderValue>,
        fenced_unsent: &mut bool,
    ) -> Result<VendorResponse> {
        let now = Instant::now();
        // The call's own deadline, or the Entra request's budget if that ends first.
        let budget = budget.filter(|b| *b < now + self.config.deadline);
        let deadline = budget.unwrap_or(now + self.config.deadline);
        let mut admission = self.breaker.admit(&self.app)?;
        // The retry loop is written out rather than run by `backon::Retryable`: each attempt must take a
        // rate-limit permit, a wait must stretch to the vendor's Retry-After and stop short of the call's
        // deadline, and the decision depends on the request as well as the error. backon still supplies
        // the exponential schedule; the jitter is ours (see `jittered`).
        let mut delays = backoff_schedule(&self.config);
        let mut last_error: Option<Error> = None;
        for attempt in 1..=self.config.max_attempts {
            let queue_until = (Instant::now() + self.config.queue_timeout).min(deadline);
            let permit = match self.acquire(queue_until).await {
                Ok(Ok(permit)) => permit,
                // The request lost its replica lock: that, not the vendor's last word, is why it stops.
                Ok(Err(fenced)) => {
                    *fenced_unsent = attempt == 1;
                    return Err(fenced);
                }
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
            let error = Error::unavailable(None, detail).with_maybe_applied(maybe_applied(failure));
            (failure, error.with_origin(failure.origin()))
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

    /// Waits for the vendor pause, an in-flight slot and a send slot, in that order, until `until`, then
    /// checks the request's replica locks (`Ok(Err)` when one was lost).
    async fn acquire(&self, until: Instant) -> Result<Result<SemaphorePermit<'_>>> {
        let _waiting = Waiting::enter(&self.counters, !crate::calls::in_background());
        match tokio::time::timeout_at(until, self.queue(until)).await {
            Ok(result) => result,
            Err(_) => Err(self.queue_full(None)),
        }
    }

    async fn queue(&self, until: Instant) -> Result<Result<SemaphorePermit<'_>>> {
        self.pacer.wait_out_pause(until).await.map_err(|no| self.no_slot(no))?;
        let permit = self.in_flight.acquire().await.map_err(|_| {
            Error::unavailable(None, format!("{}: outbound client closed", self.app)).with_origin(Origin::Gateway)
        })?;
        let mut retaken = 0;
        loop {
            let slot = self.pacer.reserve(&self.app, until).await.map_err(|no| self.no_slot(no))?;
            // Right before the vendor hears of it: a replica whose lock on this resource was lost (its
            // database session ended) must not act on it, another replica may hold that lock now.
            if let Err(fenced) = self.check_fences().await {
                return Ok(Err(fenced));
            }
            // A call that stalled past its slot (a busy host, a slow lock check) would bunch with the
            // punctual calls after it (another replica's too), so it takes a new slot (`MAX_LATE`). Only a
            // few times: a database slow for every lock check would otherwise make each call give up slot
            // after slot of the schedule all replicas share; then it goes late, and a 429 that may draw
            // is honoured like any other.
            if Instant::now() <= slot + pacer::MAX_LATE || retaken == pacer::MAX_RETAKES {
                return Ok(Ok(permit));
            }
            retaken += 1;
            bump(&self.counters.late_slots);
        }
    }

    /// `Err` (503, the gateway's doing) when a replica lock the current request holds was lost.
    async fn check_fences(&self) -> Result<()> {
        if let Err(why) = crate::calls::check_fences().await {
            tracing::warn!(app = %self.app, reason = %why, "a replica lock was lost; not calling the vendor");
            return Err(Error::unavailable(
                Some(Duration::from_secs(5)),
                format!("{}: this replica lost its lock on the resource; not calling the vendor", self.app),
            )
            .with_origin(Origin::Gateway));
        }
        Ok(())
    }

    /// Holds every call of the app back for `d` (never shortens a pause already set), on every replica
    /// when the budget is shared.
    fn pause(&self, d: Duration) {
        let shared = d.min(retry::MAX_PAUSE);
        share(&self.config.shared, &self.app, move |budget, app| {
            Box::pin(async move { budget.pause(&app, shared).await })
        });
        self.pacer.pause(d);
    }

    fn no_slot(&self, why: NoSlot) -> Error {
        match why {
            NoSlot::Paused(left) => Error::rate_limited(
                Some(whole_seconds(left)),
                format!("{}: vendor asked to pause; outbound queue full", self.app),
            )
            .with_origin(Origin::Gateway),
            NoSlot::TooFar(wait) => self.queue_full(Some(wait)),
            NoSlot::BreakerOpenElsewhere(left) => {
                bump(&self.breaker.rejected);
                Error::unavailable(
                    Some(whole_seconds(left)),
                    format!("{}: circuit open (another replica saw repeated vendor failures)", self.app),
                )
                .with_origin(Origin::Gateway)
            }
            NoSlot::SharedUnreachable(why) => {
                tracing::error!(app = %self.app, error = %why, "the replicas' shared rate budget is unreachable");
                Error::unavailable(
                    Some(Duration::from_secs(5)),
                    format!(
                        "{}: the replicas' shared rate budget is unreachable; not calling the vendor unpaced",
                        self.app
                    ),
                )
                .with_origin(Origin::Gateway)
            }
        }
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
        .with_origin(Origin::Gateway)
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
