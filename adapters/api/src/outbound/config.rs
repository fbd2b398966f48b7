//! What an app's outbound client is configured with (`limits:` in the config, merged over the vendor's
//! defaults), and the checks a limiter and a retry loop need those values to pass.

use std::time::Duration;

use crate::error::{Error, Result};

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
