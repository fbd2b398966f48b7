//! When a failed attempt may be sent again, how long to wait first (jittered exponential backoff, or the
//! vendor's `Retry-After` when longer), and whether the vendor may have applied it: the table in
//! `outbound`'s module comment, as functions of the attempt's [`Failure`].

use std::time::Duration;

use backon::BackoffBuilder;
use reqwest::header::HeaderMap;

use super::OutboundConfig;
use crate::error::Origin;

/// Longest pause one vendor `Retry-After` may impose on the whole app. A larger value (or a far-future
/// date from a confused vendor) is cut to this; calls meanwhile fail fast with the remaining time.
pub(super) const MAX_PAUSE: Duration = Duration::from_secs(15 * 60);

/// Why one attempt failed; decides retry and `maybe_applied`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failure {
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
    /// Whether the vendor answered (a status, an oversized reply) or the network gave no answer.
    pub(super) fn origin(self) -> Origin {
        match self {
            Failure::TooManyRequests | Failure::ServerError(_) | Failure::TooLarge => Origin::Vendor,
            Failure::Connect | Failure::Timeout | Failure::Lost => Origin::Network,
        }
    }

    /// How the audit log names this outcome: the vendor's status where there was one.
    pub(super) fn audit_label(self) -> String {
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
pub(super) fn may_retry(failure: Failure, idempotent: bool) -> bool {
    match failure {
        Failure::TooManyRequests | Failure::Connect => true,
        Failure::ServerError(_) | Failure::Timeout | Failure::Lost | Failure::TooLarge => idempotent,
    }
}

/// Whether the vendor may have applied a request whose attempt failed this way.
pub(super) fn maybe_applied(failure: Failure) -> bool {
    matches!(failure, Failure::ServerError(_) | Failure::Timeout | Failure::Lost | Failure::TooLarge)
}

/// The exponential schedule before jitter: `backoff_min`, doubling, capped at `backoff_max`.
pub(super) fn backoff_schedule(config: &OutboundConfig) -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(config.backoff_min)
        .with_max_delay(config.backoff_max)
        .with_factor(2.0)
        .without_max_times()
        .build()
}

/// "Equal jitter": between half and all of the delay. backon's own jitter adds up to another full delay
/// on top, which would overshoot `backoff_max`; this spreads retries without ever exceeding it.
pub(super) fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(rand::random_range(0.5..=1.0))
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

/// Rounds up to whole seconds (Entra reads `Retry-After` in seconds), at least one.
pub(super) fn whole_seconds(d: Duration) -> Duration {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    Duration::from_secs(secs.max(1))
}
