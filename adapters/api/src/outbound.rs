//! The shared outbound HTTP client every vendor adapter calls through: per-app rate limit, in-flight cap,
//! timeouts, retries only for calls that are safe to repeat, `Retry-After` honoured, and a circuit breaker.
//! Adapters build requests and read responses; this module decides when and how often to send them.
//!
//! (First cut: one attempt with a timeout. Rate limiting, retries and the breaker land with the
//! outbound-resilience issue behind this same interface.)

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::Method;

use crate::error::{Error, Result};

/// Limits and timings for one app's vendor calls.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboundConfig {
    /// Sustained vendor requests per second.
    pub requests_per_second: f64,
    /// Requests that may go out at once after a quiet period.
    pub burst: u32,
    /// Vendor calls in flight at once.
    pub max_in_flight: usize,
    /// How long a call may wait for a rate-limit permit before the gateway answers Entra 429.
    pub queue_timeout: Duration,
    /// Timeout of one attempt.
    pub attempt_timeout: Duration,
    /// Overall deadline of one call, all attempts included (well under Entra's own timeout).
    pub deadline: Duration,
    /// Attempts for a retryable call, the first included.
    pub max_attempts: u32,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Consecutive failed calls that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before one probe call is let through.
    pub breaker_cooldown: Duration,
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
        }
    }
}

/// One vendor call as an adapter describes it.
#[derive(Clone, Debug)]
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

/// What the vendor answered. 429 and 5xx never come back as a response: they become errors.
#[derive(Clone, Debug)]
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

/// Counters for metrics and health.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OutboundStats {
    pub calls: u64,
    pub attempts: u64,
    pub retries: u64,
    pub rate_limited_by_vendor: u64,
    pub failures: u64,
    pub breaker_open: bool,
    pub limiter_wait_seconds: f64,
}

/// The client for one app.
pub struct Outbound {
    app: String,
    config: OutboundConfig,
    http: reqwest::Client,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound").field("app", &self.app).field("config", &self.config).finish()
    }
}

impl Outbound {
    pub fn new(app: &str, config: OutboundConfig) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.attempt_timeout)
            .build()
            .map_err(|e| Error::unavailable(None, format!("cannot build HTTP client: {e}")))?;
        Ok(Outbound { app: app.to_string(), config, http })
    }

    pub fn config(&self) -> &OutboundConfig {
        &self.config
    }

    pub fn stats(&self) -> OutboundStats {
        OutboundStats::default()
    }

    /// Sends the request. 2xx-4xx (but 429) come back as `Ok`; 429, 5xx, timeouts and connection failures
    /// become retryable errors after the retries this call is allowed.
    pub async fn send(&self, req: VendorRequest) -> Result<VendorResponse> {
        let mut builder = self.http.request(req.method.clone(), &req.url).headers(req.headers.clone());
        if let Some(body) = req.body.clone() {
            builder = builder.body(body);
        }
        let resp = builder.send().await.map_err(|e| {
            let maybe_applied = !e.is_connect();
            Error::unavailable(None, format!("{}: vendor call failed: {}", self.app, e.without_url()))
                .with_maybe_applied(maybe_applied)
        })?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .await
            .map_err(|e| Error::unavailable(None, format!("{}: vendor reply lost: {}", self.app, e.without_url())))?
            .to_vec();
        if status == 429 {
            return Err(Error::rate_limited(parse_retry_after(&headers), format!("{}: vendor answered 429", self.app)));
        }
        if status >= 500 {
            return Err(Error::unavailable(
                parse_retry_after(&headers),
                format!("{}: vendor answered {status}", self.app),
            )
            .with_maybe_applied(true));
        }
        Ok(VendorResponse { status, headers, body })
    }
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(raw).ok()?;
    Some(when.duration_since(std::time::SystemTime::now()).unwrap_or_default())
}
