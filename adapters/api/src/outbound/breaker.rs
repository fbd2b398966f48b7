//! The circuit breaker of one app's vendor calls: after `breaker_failures` failed calls in a row it opens,
//! refusing calls without touching the vendor for `breaker_cooldown`, then lets one probe call through
//! (half open) whose verdict closes or reopens it. 4xx answers (429 included: the vendor is up and pacing
//! us) count as successes; calls refused before any vendor call are neutral.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::retry::whole_seconds;
use super::stats::bump;
use super::{lock, OutboundConfig};
use crate::error::{Error, Origin, Result};

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

impl BreakerState {
    /// The state's name in metrics and on the status page.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// What a finished call means for the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Success,
    Failure,
    Neutral,
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

pub(super) struct CircuitBreaker {
    state: Mutex<State>,
    /// Consecutive failed calls that open it (0: never opens).
    failures_to_open: u32,
    cooldown: Duration,
    /// When a probe's answer is due (one call deadline): the Retry-After of calls refused meanwhile.
    probe_due: Duration,
    pub(super) opens: AtomicU64,
    pub(super) rejected: AtomicU64,
    /// Told the cooldown whenever the breaker opens (the replicas' shared budget holds the others too).
    on_open: Option<Box<dyn Fn(Duration) + Send + Sync>>,
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker").field("state", &self.state).field("cooldown", &self.cooldown).finish()
    }
}

/// A call let through by the breaker; reports the call's verdict when dropped (also when the call's future
/// is dropped half-way, so a cancelled probe frees the half-open slot).
pub(super) struct Admission<'a> {
    breaker: &'a CircuitBreaker,
    app: &'a str,
    pub(super) probe: bool,
    pub(super) verdict: Verdict,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.breaker.settle(self.app, self.probe, self.verdict);
    }
}

impl CircuitBreaker {
    /// `on_open` is told the cooldown each time the breaker opens.
    pub(super) fn new(config: &OutboundConfig, on_open: Option<Box<dyn Fn(Duration) + Send + Sync>>) -> Self {
        CircuitBreaker {
            on_open,
            state: Mutex::new(State::Closed { failures: 0 }),
            failures_to_open: config.breaker_failures,
            cooldown: config.breaker_cooldown,
            probe_due: config.deadline,
            opens: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    /// The state now (an open breaker whose cooldown has passed reports `HalfOpen`).
    pub(super) fn state(&self) -> BreakerState {
        match *lock(&self.state) {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if Instant::now() < until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Lets a call through, as the probe when the cooldown has passed, or refuses it with `unavailable`
    /// and the time until the breaker may let one through.
    pub(super) fn admit<'a>(&'a self, app: &'a str) -> Result<Admission<'a>> {
        let mut state = lock(&self.state);
        let now = Instant::now();
        let probe = match *state {
            State::Closed { .. } => false,
            State::Open { until } if now >= until => true,
            State::HalfOpen { probing: false } => true,
            State::Open { until } => {
                bump(&self.rejected);
                return Err(Error::unavailable(
                    Some(whole_seconds(until - now)),
                    format!("{app}: circuit open after repeated vendor failures"),
                )
                .with_origin(Origin::Gateway));
            }
            State::HalfOpen { probing: true } => {
                bump(&self.rejected);
                return Err(Error::unavailable(
                    Some(whole_seconds(self.probe_due)),
                    format!("{app}: circuit open, probing the vendor"),
                )
                .with_origin(Origin::Gateway));
            }
        };
        if probe {
            *state = State::HalfOpen { probing: true };
        }
        Ok(Admission { breaker: self, app, probe, verdict: Verdict::Neutral })
    }

    fn settle(&self, app: &str, probe: bool, verdict: Verdict) {
        let mut state = lock(&self.state);
        let open = |state: &mut State| {
            *state = State::Open { until: Instant::now() + self.cooldown };
            bump(&self.opens);
            if let Some(on_open) = &self.on_open {
                on_open(self.cooldown);
            }
        };
        if probe {
            match verdict {
                Verdict::Success => {
                    *state = State::Closed { failures: 0 };
                    tracing::info!(app, "vendor answered the probe: circuit closed");
                }
                Verdict::Failure => {
                    open(&mut state);
                    tracing::warn!(app, "probe call failed: circuit open again");
                }
                Verdict::Neutral => *state = State::HalfOpen { probing: false },
            }
            return;
        }
        // Calls that started before the breaker opened do not move it any more.
        let State::Closed { failures } = *state else { return };
        match verdict {
            Verdict::Success => *state = State::Closed { failures: 0 },
            Verdict::Neutral => {}
            Verdict::Failure => {
                let failures = failures.saturating_add(1);
                if self.failures_to_open > 0 && failures >= self.failures_to_open {
                    open(&mut state);
                    tracing::warn!(
                        app,
                        failures,
                        cooldown_s = self.cooldown.as_secs_f64(),
                        "vendor calls keep failing: circuit open"
                    );
                } else {
                    *state = State::Closed { failures };
                }
            }
        }
    }
}
