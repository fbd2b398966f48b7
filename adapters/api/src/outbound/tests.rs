//! Every test runs on tokio's paused clock: the scripted vendor below listens on a real 127.0.0.1
//! socket, and tokio advances virtual time only when every task is idle, so the timings asserted are
//! exact (to the millisecond the timer wheel rounds to) and no test sleeps on the wall clock.

use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::Method;

use super::pacer::{Schedule, PACING_MARGIN};
use super::*;
use crate::error::{ErrorKind, Origin};

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
    let mut pacer = Schedule::new(ms(10), 1);
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
    let mut burst = Schedule::new(ms(10), 3);
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
    assert!(out.pacer.limiter.check().is_ok());
    assert!(out.pacer.limiter.check().is_ok());
    assert!(out.pacer.limiter.check().is_err());
    tokio::time::advance(ms(1999)).await;
    assert!(out.pacer.limiter.check().is_err());
    tokio::time::advance(ms(1)).await;
    assert!(out.pacer.limiter.check().is_ok());
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
        assert!(matches!(err.kind(), ErrorKind::RateLimited { retry_after: Some(d) } if *d >= Duration::from_secs(1)));
        assert!(err.detail().contains("queue full"), "{err}");
        assert!(!err.maybe_applied());
        assert_eq!(err.origin(), Origin::Gateway, "{err:?}");
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
        let log =
            Arc::new(crate::calls::CallLog::for_request("r").with_deadline(Instant::now() + Duration::from_secs(2)));
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
    assert_eq!(err.origin(), Origin::Vendor, "{err:?}");
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
    assert_eq!(err.origin(), Origin::Network, "{err:?}");
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
    assert_eq!(err.origin(), Origin::Network, "{err:?}");
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
    assert_eq!(err.origin(), Origin::Gateway, "{err:?}");
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
        vendor(vec![Reply::Status(503), Reply::Status(503), Reply::Status(503), Reply::Hang], Reply::Status(200)).await;
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
    /// What `next_free` answers, in turn (then: unreachable).
    busy: Mutex<std::collections::VecDeque<Duration>>,
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
    ) -> std::result::Result<crate::budget::Reserved, crate::budget::SharedError> {
        lock(&self.answers).pop_front().ok_or_else(|| crate::budget::SharedError::Unreachable("unreachable".into()))
    }
    async fn next_free(
        &self,
        _app: &str,
        _tolerance: Duration,
    ) -> std::result::Result<Duration, crate::budget::SharedError> {
        lock(&self.busy).pop_front().ok_or_else(|| crate::budget::SharedError::Unreachable("unreachable".into()))
    }
    async fn pause(&self, _app: &str, d: Duration) -> std::result::Result<(), crate::budget::SharedError> {
        lock(&self.pauses).push(d);
        Ok(())
    }
    async fn open_breaker(
        &self,
        _app: &str,
        cooldown: Duration,
    ) -> std::result::Result<(), crate::budget::SharedError> {
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

/// An Entra request's call log holding `fence` (as a request that took a replica lock does).
async fn request_holding<F: crate::calls::Fence>(fence: &Arc<F>) -> Arc<crate::calls::CallLog> {
    let log = Arc::new(crate::calls::CallLog::for_request("r"));
    let as_fence: Arc<dyn crate::calls::Fence> = fence.clone();
    let weak = Arc::downgrade(&as_fence);
    crate::calls::scope(log.clone(), async { crate::calls::add_fence(weak) }).await;
    log
}

/// A replica lock the test can take away.
struct TestFence(std::sync::atomic::AtomicBool);

impl crate::calls::Fence for TestFence {
    fn check(
        &self,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = std::result::Result<(), crate::budget::SharedError>> + Send + '_>,
    > {
        let held = self.0.load(Ordering::SeqCst);
        Box::pin(async move {
            if held {
                Ok(())
            } else {
                Err(crate::budget::SharedError::LockLost("lost".into()))
            }
        })
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// A request whose replica lock was lost never reaches the vendor (another replica may hold the lock
/// now): 503 with Retry-After, the gateway's doing; one whose lock is held, or was released, calls as before.
#[tokio::test(start_paused = true)]
async fn a_request_whose_replica_lock_was_lost_does_not_call_the_vendor() {
    let (url, vendor) = vendor(vec![], Reply::Status(200)).await;
    let out = Outbound::new("acme", config()).unwrap();
    let fence = Arc::new(TestFence(std::sync::atomic::AtomicBool::new(true)));
    let log = request_holding(&fence).await;
    crate::calls::scope(log.clone(), out.send(get(&url))).await.unwrap();
    assert_eq!(vendor.hits(), 1);
    fence.0.store(false, Ordering::SeqCst);
    let err = crate::calls::scope(log.clone(), out.send(get(&url))).await.unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Unavailable { retry_after: Some(_) }), "{err}");
    assert_eq!(err.origin(), Origin::Gateway);
    assert_eq!(vendor.hits(), 1, "the vendor never heard of the unlocked call");
    // Nor is it counted as a vendor call or failure (metrics, the audit's vendor_calls).
    assert_eq!((out.stats().calls, out.stats().failures), (1, 0));
    assert_eq!(log.calls(), 1);
    // Released (the hold dropped): no longer this request's fence.
    drop(fence);
    crate::calls::scope(log, out.send(get(&url))).await.unwrap();
    assert_eq!(vendor.hits(), 2);
}

/// A lock check that stalls the first time it is asked (a busy host, a slow database): its first check past `MAX_LATE` (`true`), or every check (`AlwaysStalling`).
struct StallingFence(std::sync::atomic::AtomicBool);

struct AlwaysStalling;

impl crate::calls::Fence for AlwaysStalling {
    fn check(
        &self,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = std::result::Result<(), crate::budget::SharedError>> + Send + '_>,
    > {
        Box::pin(async move {
            tokio::time::sleep(pacer::MAX_LATE * 3).await;
            Ok(())
        })
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl crate::calls::Fence for StallingFence {
    fn check(
        &self,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = std::result::Result<(), crate::budget::SharedError>> + Send + '_>,
    > {
        let stall = self.0.swap(false, Ordering::SeqCst);
        Box::pin(async move {
            if stall {
                tokio::time::sleep(pacer::MAX_LATE * 3).await;
            }
            Ok(())
        })
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// With replicas, a call that would leave well after its shared slot (it stalled) gives the slot up and
/// takes another instead of bunching with the other replicas' punctual calls; one on time goes at once.
#[tokio::test(start_paused = true)]
async fn a_call_that_missed_its_shared_slot_takes_another() {
    use crate::budget::{Reserved, SharedBudget};
    let (url, vendor) = vendor(vec![], Reply::Status(200)).await;
    let budget = Arc::new(FakeBudget::default());
    lock(&budget.answers).extend([Reserved::After(Duration::ZERO), Reserved::After(Duration::ZERO)]);
    let config = OutboundConfig { shared: SharedBudget::new(budget.clone()), ..config() };
    let out = Outbound::new("acme", config).unwrap();
    let fence = Arc::new(StallingFence(std::sync::atomic::AtomicBool::new(true)));
    let log = request_holding(&fence).await;
    crate::calls::scope(log, out.send(get(&url))).await.unwrap();
    assert_eq!(vendor.hits(), 1);
    assert!(lock(&budget.answers).is_empty(), "two slots taken: the missed one and the one used");
    assert_eq!(out.stats().late_slots, 1);
}

/// A lock check slow every time (a loaded database) costs a call a bounded number of slots of the shared
/// schedule, then it goes: it never gives up slot after slot until its queue time runs out.
#[tokio::test(start_paused = true)]
async fn a_lock_check_slow_every_time_gives_up_a_bounded_number_of_slots() {
    use crate::budget::{Reserved, SharedBudget};
    let (url, vendor) = vendor(vec![], Reply::Status(200)).await;
    let budget = Arc::new(FakeBudget::default());
    lock(&budget.answers).extend([Reserved::After(Duration::ZERO); 5]);
    let out = Outbound::new("acme", OutboundConfig { shared: SharedBudget::new(budget.clone()), ..config() }).unwrap();
    let fence = Arc::new(AlwaysStalling);
    let log = request_holding(&fence).await;
    crate::calls::scope(log, out.send(get(&url))).await.unwrap();
    assert_eq!(vendor.hits(), 1);
    assert_eq!(out.stats().late_slots, u64::from(pacer::MAX_RETAKES));
    assert_eq!(
        lock(&budget.answers).len(),
        5 - 1 - pacer::MAX_RETAKES as usize,
        "slots taken: the retaken ones and the one used"
    );
}

/// One process alike: a call that stalled past its slot takes the next one rather than leave late.
#[tokio::test(start_paused = true)]
async fn a_call_that_missed_its_own_slot_takes_another() {
    let (url, vendor) = vendor(vec![], Reply::Status(200)).await;
    let out = Outbound::new("acme", config()).unwrap();
    let fence = Arc::new(StallingFence(std::sync::atomic::AtomicBool::new(true)));
    let log = request_holding(&fence).await;
    crate::calls::scope(log, out.send(get(&url))).await.unwrap();
    assert_eq!((vendor.hits(), out.stats().late_slots), (1, 1));
}

/// With replicas, background work yields to the shared schedule, not the local one (which the replica
/// does not use): while another replica's Entra calls keep it busy, the background call waits.
#[tokio::test(start_paused = true)]
async fn background_work_yields_to_the_other_replicas_entra_calls() {
    use crate::budget::{Reserved, SharedBudget};
    let (url, vendor) = vendor(vec![], Reply::Status(200)).await;
    let budget = Arc::new(FakeBudget::default());
    lock(&budget.busy).extend([Duration::from_millis(30), Duration::from_millis(20), Duration::ZERO]);
    lock(&budget.answers).push_back(Reserved::After(Duration::ZERO));
    let out = Outbound::new("acme", OutboundConfig { shared: SharedBudget::new(budget.clone()), ..config() }).unwrap();
    let log = Arc::new(crate::calls::CallLog::background("reconcile"));
    crate::calls::scope(log, out.send(get(&url))).await.unwrap();
    assert_eq!(vendor.hits(), 1);
    assert!(lock(&budget.busy).is_empty(), "asked the shared schedule until it had a free slot");
}
