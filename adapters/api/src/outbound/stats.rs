//! What one app's outbound client counts, for metrics, health and the status page: calls, attempts,
//! retries, outcomes, waits, and the queue that background work yields to.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::time::Instant;

use super::breaker::BreakerState;

/// How one vendor call ended, as `scim_bridge_vendor_calls_total{outcome}` says it: the vendor's final
/// status class (an answer the adapter reads) or the error the call became.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    /// The status class of the vendor's answer, 1 to 5 (`1xx` .. `5xx`).
    Answered(StatusClass),
    Failed(crate::error::KindName),
}

/// An HTTP status class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StatusClass {
    Informational,
    Success,
    Redirection,
    ClientError,
    ServerError,
}

impl StatusClass {
    /// The class of `status` (anything outside 100..=599 counts as a server error: not an answer to read).
    pub fn of(status: u16) -> Self {
        match status {
            100..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirection,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }
}

impl CallOutcome {
    /// The label value (`2xx`, `rate_limited`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Answered(StatusClass::Informational) => "1xx",
            CallOutcome::Answered(StatusClass::Success) => "2xx",
            CallOutcome::Answered(StatusClass::Redirection) => "3xx",
            CallOutcome::Answered(StatusClass::ClientError) => "4xx",
            CallOutcome::Answered(StatusClass::ServerError) => "5xx",
            CallOutcome::Failed(kind) => kind.as_str(),
        }
    }
}

/// Ordered by the label's text, so metrics list the series in the order they always had.
impl Ord for CallOutcome {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for CallOutcome {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for CallOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counters for metrics and health.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OutboundStats {
    /// `send` calls.
    pub calls: u64,
    /// `send` calls by how they ended: the vendor's final status class (`2xx`, `3xx`, `4xx`, `5xx`: answers
    /// the adapter reads), or the error they became (`rate_limited`, `unavailable`).
    pub calls_by_outcome: BTreeMap<CallOutcome, u64>,
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
    /// Send slots given up because the call woke too late for them (and took another).
    pub late_slots: u64,
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) calls: AtomicU64,
    pub(super) attempts: AtomicU64,
    pub(super) retries: AtomicU64,
    pub(super) rate_limited_by_vendor: AtomicU64,
    pub(super) failures: AtomicU64,
    pub(super) limiter_wait_nanos: AtomicU64,
    pub(super) rejected_queue_full: AtomicU64,
    pub(super) queued: AtomicU64,
    pub(super) foreground_queued: AtomicU64,
    /// Send slots given up because the call woke too late for them (`pacer::MAX_LATE`).
    pub(super) late_slots: AtomicU64,
    pub(super) by_outcome: Mutex<BTreeMap<CallOutcome, u64>>,
}

/// Counts a caller in the queue and its waiting time, also when the caller gives up half-way.
pub(super) struct Waiting<'a> {
    counters: &'a Counters,
    since: Instant,
    /// An Entra call (not background work): background calls wait while any is queued.
    foreground: bool,
}

impl<'a> Waiting<'a> {
    pub(super) fn enter(counters: &'a Counters, foreground: bool) -> Self {
        counters.queued.fetch_add(1, Ordering::Relaxed);
        if foreground {
            counters.foreground_queued.fetch_add(1, Ordering::Relaxed);
        }
        Waiting { counters, since: Instant::now(), foreground }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let stats = self.counters;
        stats.queued.fetch_sub(1, Ordering::Relaxed);
        if self.foreground {
            stats.foreground_queued.fetch_sub(1, Ordering::Relaxed);
        }
        let waited = u64::try_from(self.since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        stats.limiter_wait_nanos.fetch_add(waited, Ordering::Relaxed);
    }
}

pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::KindName;

    /// The labels, and the order metrics list them in, are those of the strings they replaced.
    #[test]
    fn call_outcomes_keep_their_labels_and_order() {
        let mut outcomes: Vec<CallOutcome> = KindName::ALL.into_iter().map(CallOutcome::Failed).collect();
        outcomes.extend([599, 404, 302, 201, 100].map(|s| CallOutcome::Answered(StatusClass::of(s))));
        outcomes.sort();
        let labels: Vec<&str> = outcomes.iter().map(|o| o.as_str()).collect();
        let mut sorted = labels.clone();
        sorted.sort();
        assert_eq!(labels, sorted);
        assert_eq!(&labels[..5], ["1xx", "2xx", "3xx", "4xx", "5xx"]);
        assert!(labels.contains(&"rate_limited") && labels.contains(&"needs_manual_action"));
    }
}
