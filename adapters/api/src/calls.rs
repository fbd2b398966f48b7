//! Per-request accounting of vendor traffic: the gateway opens a scope around one Entra request, and the
//! outbound client records into it every vendor call and every attempt (retries included, each with its
//! method, path, outcome and duration), so the audit log and the request's log line say what one Entra
//! request did at the vendor. Outside a scope nothing is recorded. The scope also carries the request's
//! fences: the replica locks it holds, which the outbound client checks before each vendor attempt and the
//! store before each write, so a replica whose lock was lost stops instead of acting unlocked.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

use serde::{Deserialize, Serialize};

/// Attempts kept per Entra request. A request makes a handful of calls of at most `max_attempts` each;
/// the cap only bounds the audit row if a misconfiguration allowed far more. The count stays exact.
pub const MAX_ATTEMPTS_KEPT: usize = 32;

/// One HTTP attempt at the vendor, as the audit log keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub method: String,
    /// The URL path only: no host, and no query (it may carry a filter value).
    pub path: String,
    /// The vendor's HTTP status, or what happened instead of one: `timeout`, `connect_failed`,
    /// `connection_lost`.
    pub outcome: String,
    /// From sending the request to the whole answer (or the failure).
    pub ms: u64,
}

/// Vendor traffic of one Entra request.
#[derive(Debug, Default)]
pub struct CallLog {
    calls: AtomicU32,
    attempts: AtomicU32,
    kept: Mutex<Vec<Attempt>>,
    /// The Entra request's id, sent to the vendor as `X-Request-ID` so both sides' logs meet.
    request_id: Option<String>,
    /// When the Entra request's vendor time runs out: no call, attempt or wait goes past it.
    deadline: Option<tokio::time::Instant>,
    /// The gateway's own work (reconcile), not an Entra request: its calls take the app's rate only when no
    /// Entra call is waiting for it.
    background: bool,
    /// Told of every attempt as it is recorded, the ones past [`MAX_ATTEMPTS_KEPT`] included.
    observer: Option<AttemptObserver>,
    /// The replica locks the request holds, weakly: a lock released (its hold dropped) is no longer checked.
    fences: Mutex<Vec<Weak<dyn Fence>>>,
}

/// Told of each attempt of a scope as it is made: work whose attempts are not read back one request at a
/// time (a reconcile pass lists the vendor page by page, far more than `MAX_ATTEMPTS_KEPT` attempts) still
/// reaches the gateway's latency histogram, every attempt of it.
#[derive(Clone)]
pub struct AttemptObserver(Arc<dyn Fn(&Attempt) + Send + Sync>);

impl AttemptObserver {
    pub fn new(observe: impl Fn(&Attempt) + Send + Sync + 'static) -> Self {
        AttemptObserver(Arc::new(observe))
    }
}

impl std::fmt::Debug for AttemptObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttemptObserver")
    }
}

/// A lock the request holds that another process could take from it behind its back (a replica lock
/// whose database session ended). `check` answers whether it is still held, now.
pub trait Fence: Send + Sync + std::any::Any {
    /// `Err` (a short reason, no secret) when the lock is no longer held, or that cannot be known.
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), crate::budget::SharedError>> + Send + '_>>;
    /// The concrete lock, for the store that checks its own locks inside its write transaction.
    fn as_any(&self) -> &dyn std::any::Any;
}

impl CallLog {
    /// The call log of the Entra request with this id.
    pub fn for_request(request_id: &str) -> Self {
        CallLog { request_id: Some(request_id.to_string()), ..CallLog::default() }
    }

    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    /// The call log of the gateway's own background work (`label` is sent as its request id).
    pub fn background(label: &str) -> Self {
        CallLog { request_id: Some(label.to_string()), background: true, ..CallLog::default() }
    }

    /// The same log, telling `observer` of each attempt as it is made.
    pub fn observed_by(mut self, observer: AttemptObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    pub fn is_background(&self) -> bool {
        self.background
    }

    /// The same log with a time budget for all the request's vendor calls together.
    pub fn with_deadline(mut self, deadline: tokio::time::Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    pub fn deadline(&self) -> Option<tokio::time::Instant> {
        self.deadline
    }

    /// Vendor calls made (each may take several attempts).
    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::Relaxed)
    }
    /// HTTP attempts sent to the vendor, retries included.
    pub fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::Relaxed)
    }
    /// The attempts themselves, in the order they were made (the first [`MAX_ATTEMPTS_KEPT`]).
    pub fn attempt_log(&self) -> Vec<Attempt> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

tokio::task_local! {
    static CURRENT: Arc<CallLog>;
}

/// Runs `fut` with `log` as the current request's call log.
pub async fn scope<F: Future>(log: Arc<CallLog>, fut: F) -> F::Output {
    CURRENT.scope(log, fut).await
}

/// The current request's call log, when inside a scope.
pub fn current() -> Option<Arc<CallLog>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// Adds a lock the current request now holds to its fences (nothing outside a scope).
pub fn add_fence(fence: Weak<dyn Fence>) {
    let _ = CURRENT.try_with(|l| {
        let mut fences = l.fences.lock().unwrap_or_else(|p| p.into_inner());
        fences.retain(|f| f.strong_count() > 0);
        fences.push(fence);
    });
}

/// The locks the current request still holds.
pub fn fences() -> Vec<Arc<dyn Fence>> {
    CURRENT
        .try_with(|l| l.fences.lock().unwrap_or_else(|p| p.into_inner()).iter().filter_map(Weak::upgrade).collect())
        .unwrap_or_default()
}

/// `Err` when any lock the current request holds has been lost: it must not call the vendor or write.
pub async fn check_fences() -> Result<(), crate::budget::SharedError> {
    for fence in fences() {
        fence.check().await?;
    }
    Ok(())
}

/// Whether the current scope is background work (see `CallLog::background`).
pub fn in_background() -> bool {
    CURRENT.try_with(|l| l.background).unwrap_or(false)
}

pub(crate) fn count_call() {
    let _ = CURRENT.try_with(|l| l.calls.fetch_add(1, Ordering::Relaxed));
}

pub(crate) fn record_attempt(attempt: Attempt) {
    let _ = CURRENT.try_with(|l| {
        l.attempts.fetch_add(1, Ordering::Relaxed);
        if let Some(observer) = &l.observer {
            (observer.0)(&attempt);
        }
        let mut kept = l.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() < MAX_ATTEMPTS_KEPT {
            kept.push(attempt);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(outcome: &str) -> Attempt {
        Attempt { method: "POST".into(), path: "/scim/v2/Users".into(), outcome: outcome.into(), ms: 3 }
    }

    #[tokio::test]
    async fn an_observer_is_told_of_every_attempt_past_the_kept_ones() {
        let seen = Arc::new(AtomicU32::new(0));
        let counted = seen.clone();
        let observer = AttemptObserver::new(move |_| {
            counted.fetch_add(1, Ordering::Relaxed);
        });
        let log = Arc::new(CallLog::background("reconcile-a").observed_by(observer));
        scope(log.clone(), async {
            for _ in 0..MAX_ATTEMPTS_KEPT + 3 {
                record_attempt(attempt("200"));
            }
        })
        .await;
        assert_eq!(seen.load(Ordering::Relaxed) as usize, MAX_ATTEMPTS_KEPT + 3);
        assert_eq!(log.attempt_log().len(), MAX_ATTEMPTS_KEPT);
    }

    #[tokio::test]
    async fn records_only_inside_a_scope() {
        count_call();
        let log = Arc::new(CallLog::default());
        scope(log.clone(), async {
            count_call();
            record_attempt(attempt("503"));
            record_attempt(attempt("201"));
        })
        .await;
        record_attempt(attempt("200"));
        assert_eq!((log.calls(), log.attempts()), (1, 2));
        let outcomes: Vec<_> = log.attempt_log().into_iter().map(|a| a.outcome).collect();
        assert_eq!(outcomes, ["503", "201"]);
    }

    #[tokio::test]
    async fn keeps_a_bounded_log_but_an_exact_count() {
        let log = Arc::new(CallLog::default());
        scope(log.clone(), async {
            for _ in 0..MAX_ATTEMPTS_KEPT + 5 {
                record_attempt(attempt("503"));
            }
        })
        .await;
        assert_eq!(log.attempts() as usize, MAX_ATTEMPTS_KEPT + 5);
        assert_eq!(log.attempt_log().len(), MAX_ATTEMPTS_KEPT);
    }
}
