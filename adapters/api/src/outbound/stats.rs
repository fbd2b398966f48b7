//! What one app's outbound client counts, for metrics, health and the status page: calls, attempts,
//! retries, outcomes, waits, and the queue that background work yields to.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::time::Instant;

use super::breaker::BreakerState;

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
    pub(super) by_outcome: Mutex<BTreeMap<String, u64>>,
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
