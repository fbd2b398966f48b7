//! The hook through which several gateway replicas share one vendor's limits: the rate (one schedule for
//! all of them, not R per replica), the vendor's `Retry-After` pauses and an open circuit breaker. The
//! outbound client asks it for each call's send slot when one is configured (`OutboundConfig::shared`);
//! without one, each process paces alone, as a single replica always did. The gateway implements it on
//! its PostgreSQL store; this crate only defines what it must answer.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What the shared schedule answered to a call asking for a send slot.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reserved {
    /// The slot is taken: send after waiting this long.
    After(Duration),
    /// No slot within the wait allowed (the schedule is full, or a pause runs past it): the earliest
    /// slot is this far away. Nothing was taken.
    Full(Duration),
    /// Another replica opened the circuit breaker for this long. Nothing was taken.
    BreakerOpen(Duration),
}

/// Why a replica could not use what it shares with the others (the vendor's schedule, a lock): the call
/// it was for is refused (503 to Entra), never made unpaced or unlocked. The text is short and carries no
/// secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SharedError {
    /// The shared database could not be reached, or refused the statement.
    #[error("{0}")]
    Unreachable(String),
    /// A lock the request held is no longer held: its database session ended, or it cannot be told.
    #[error("{0}")]
    LockLost(String),
}

/// A vendor's limits shared by every process that calls it for one app.
#[async_trait::async_trait]
pub trait RateBudget: Send + Sync + fmt::Debug {
    /// Takes the next send slot of `app`'s schedule, one per `period` after a burst of `tolerance /
    /// period + 1`, after any pause, unless it lies more than `max_wait` ahead. `Err` (a short reason)
    /// when the shared state cannot be reached: the call is then refused, never sent unpaced.
    async fn reserve(
        &self,
        app: &str,
        period: Duration,
        tolerance: Duration,
        max_wait: Duration,
    ) -> Result<Reserved, SharedError>;
    /// How long until `app`'s schedule has a slot free (zero: one is free now), a pause and an open
    /// breaker included, without taking it: how background work on one replica finds a gap that no
    /// replica's Entra call is waiting for.
    async fn next_free(&self, app: &str, tolerance: Duration) -> Result<Duration, SharedError>;
    /// No call of `app` starts within `d` on any replica (a vendor's `Retry-After`).
    async fn pause(&self, app: &str, d: Duration) -> Result<(), SharedError>;
    /// `app`'s breaker opened here: the other replicas hold their calls for `cooldown` too.
    async fn open_breaker(&self, app: &str, cooldown: Duration) -> Result<(), SharedError>;
}

/// An optional shared budget in `OutboundConfig`: compared by identity, printed without its insides.
#[derive(Clone, Default)]
pub struct SharedBudget(Option<Arc<dyn RateBudget>>);

impl SharedBudget {
    pub fn new(budget: Arc<dyn RateBudget>) -> Self {
        SharedBudget(Some(budget))
    }
    pub fn none() -> Self {
        SharedBudget(None)
    }
    pub fn get(&self) -> Option<&Arc<dyn RateBudget>> {
        self.0.as_ref()
    }
}

impl fmt::Debug for SharedBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "SharedBudget(shared)" } else { "SharedBudget(none)" })
    }
}

impl PartialEq for SharedBudget {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}
