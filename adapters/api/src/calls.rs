//! Per-request accounting of vendor traffic: the gateway opens a scope around one Entra request, and the
//! outbound client counts into it every vendor call and every attempt (retries included), so the audit
//! log and the request's log line say what one Entra request cost at the vendor. Outside a scope nothing
//! is counted.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Vendor traffic of one Entra request.
#[derive(Debug, Default)]
pub struct CallLog {
    calls: AtomicU32,
    attempts: AtomicU32,
}

impl CallLog {
    /// Vendor calls made (each may take several attempts).
    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::Relaxed)
    }
    /// HTTP attempts sent to the vendor, retries included.
    pub fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::Relaxed)
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

pub(crate) fn count_call() {
    let _ = CURRENT.try_with(|l| l.calls.fetch_add(1, Ordering::Relaxed));
}

pub(crate) fn count_attempt() {
    let _ = CURRENT.try_with(|l| l.attempts.fetch_add(1, Ordering::Relaxed));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_only_inside_a_scope() {
        count_call();
        let log = Arc::new(CallLog::default());
        scope(log.clone(), async {
            count_call();
            count_attempt();
            count_attempt();
        })
        .await;
        count_attempt();
        assert_eq!((log.calls(), log.attempts()), (1, 2));
    }
}
