//! When one app's next vendor call may leave: a virtual schedule just under the configured rate, the
//! vendor's pause (`Retry-After`, any 429) that holds every call back, and `governor` as the ceiling that
//! refuses anything the schedule should not have let through.
//!
//! Pacing is a schedule rather than polling the limiter: each call reserves the next slot (the GCRA's
//! theoretical arrival time) in arrival order and sleeps until it. Polling governor after each late timer
//! wake-up lost up to a millisecond per call (half the throughput at 1000 rps).

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

use super::lock;
use super::retry::MAX_PAUSE;
use super::OutboundConfig;

/// How much slower than the configured rate the pacer schedules: 2 %, i.e. 20 ms per second. Calls leave
/// up to a millisecond late (timer) and reach the vendor a few more late (scheduling, connection reuse);
/// the margin absorbs that jitter so a vendor's fixed one-second window never sees one request too many.
/// (0.2 % and 1 % still drew the odd 429 from a fixed-window simulator on a loaded 2-core machine.)
pub(super) const PACING_MARGIN: f64 = 0.02;

/// How late after its slot a call may still leave; later (the host stalled), its slot is given up and
/// it takes another. Half the margin: calls never leave early, so a vendor's one-second window can only
/// hold the slots of 1 s + `MAX_LATE`, and at 2 % under the rate (≥ 20 ms of slots a second) that is
/// never one call too many, whatever the rate, leaving the other half for the network. Without it, the
/// calls whose slots passed during a stall all left together when it ended, on top of the next window's
/// punctual ones: with replicas sharing a schedule, on top of the other replica's.
pub(super) const MAX_LATE: Duration = Duration::from_millis(10);
/// How many slots one call gives up for being late before it goes late anyway.
pub(super) const MAX_RETAKES: u32 = 2;

/// `governor` clock over `tokio::time::Instant`, so the limiter follows tokio's (pausable) clock.
#[derive(Clone, Debug)]
pub struct TokioClock {
    origin: Instant,
}

impl TokioClock {
    pub fn new() -> Self {
        TokioClock { origin: Instant::now() }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.origin.elapsed())
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Nanos>>;

/// Virtual scheduling (the GCRA's theoretical arrival time), evaluated when a call reserves its slot rather
/// than when it wakes: up to `burst` calls may go at once after a quiet spell, then one per `period`.
#[derive(Debug)]
pub(super) struct Schedule {
    pub(super) period: Duration,
    /// How far ahead of the theoretical arrival time a call may go: (burst - 1) periods.
    pub(super) tolerance: Duration,
    /// The theoretical arrival time of the next call.
    next: Option<Instant>,
}

impl Schedule {
    pub(super) fn new(period: Duration, burst: u32) -> Self {
        Schedule { period, tolerance: period * burst.saturating_sub(1), next: None }
    }

    /// The earliest instant a call reserving at `now` may be sent.
    pub(super) fn next_slot(&self, now: Instant) -> Instant {
        match self.next {
            Some(tat) => now.max(tat.checked_sub(self.tolerance).unwrap_or(now)),
            None => now,
        }
    }

    /// Takes `slot` (from `next_slot`).
    pub(super) fn commit(&mut self, slot: Instant) {
        let tat = self.next.map_or(slot, |t| t.max(slot));
        self.next = Some(tat + self.period);
    }
}

/// Why a call gets no send slot in time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum NoSlot {
    /// The vendor's pause lasts this much longer, past the caller's limit.
    Paused(Duration),
    /// The next slot is this far away, past the caller's limit.
    TooFar(Duration),
    /// Another replica opened the circuit breaker for this long (the shared budget said so).
    BreakerOpenElsewhere(Duration),
    /// The replicas' shared budget cannot be reached: the call is refused, never sent unpaced.
    SharedUnreachable(crate::budget::SharedError),
}

#[derive(Debug)]
pub(super) struct Pacer {
    clock: TokioClock,
    pub(super) limiter: Limiter,
    /// Callers take slots one at a time, in arrival order (tokio's mutex is fair), so a waiter is never
    /// overtaken and the limiter is never asked more often than it can answer.
    turn: tokio::sync::Mutex<()>,
    schedule: Mutex<Schedule>,
    /// Set from a vendor `Retry-After` (or a bare 429): no call of this app starts before it.
    paused_until: Mutex<Option<Instant>>,
    /// The schedule shared with other replicas, if any: it then gives the slots instead of `schedule`.
    shared: crate::budget::SharedBudget,
}

impl Pacer {
    /// `None` when the rate is too high for governor's arithmetic.
    pub(super) fn new(config: &OutboundConfig) -> Option<Self> {
        let period = Duration::from_secs_f64(1.0 / config.requests_per_second);
        // One extra period of burst for timer lateness: see `reserve`.
        let burst = NonZeroU32::new(config.burst.saturating_add(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)?.allow_burst(burst);
        let clock = TokioClock::new();
        Some(Pacer {
            limiter: RateLimiter::direct_with_clock(quota, clock.clone()),
            clock,
            turn: tokio::sync::Mutex::new(()),
            schedule: Mutex::new(Schedule::new(period.mul_f64(1.0 + PACING_MARGIN), config.burst)),
            paused_until: Mutex::new(None),
            shared: config.shared.clone(),
        })
    }

    /// How long every call still waits because the vendor asked us to pause.
    pub(super) fn paused_for(&self) -> Option<Duration> {
        let until = (*lock(&self.paused_until))?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Holds every call back for `d` (never shortens a pause already set).
    pub(super) fn pause(&self, d: Duration) {
        let until = Instant::now() + d.min(MAX_PAUSE);
        let mut paused = lock(&self.paused_until);
        if !matches!(*paused, Some(current) if current >= until) {
            *paused = Some(until);
        }
    }

    /// Whether a call reserving now would go at once (no pause, a free slot), and the schedule's period:
    /// how background work finds a gap without taking a slot Entra is waiting for. With replicas, the
    /// shared schedule says (the local one is not used): another replica's Entra calls fill it too. An
    /// unreachable budget counts as free: the call's own reservation then refuses it.
    pub(super) async fn free_now(&self, app: &str) -> (bool, Duration) {
        let now = Instant::now();
        let (free, period, tolerance) = {
            let schedule = lock(&self.schedule);
            (schedule.next_slot(now) <= now, schedule.period, schedule.tolerance)
        };
        let paused = lock(&self.paused_until).is_some_and(|until| until > now);
        let free = match self.shared.get() {
            Some(shared) => shared.next_free(app, tolerance).await.map_or(true, |wait| wait.is_zero()),
            None => free,
        };
        (free && !paused, period)
    }

    /// Sleeps until the vendor's pause is over, or fails at once when it lasts past `until`.
    pub(super) async fn wait_out_pause(&self, until: Instant) -> Result<(), NoSlot> {
        let Some(paused_until) = *lock(&self.paused_until) else { return Ok(()) };
        let now = Instant::now();
        if paused_until <= now {
            return Ok(());
        }
        if paused_until > until {
            return Err(NoSlot::Paused(paused_until - now));
        }
        tokio::time::sleep_until(paused_until).await;
        Ok(())
    }

    /// The send slot from the replicas' shared schedule (same period and burst as the local one): the rate
    /// is the vendor's across all replicas, and a pause or an open breaker of any replica holds this one.
    async fn reserve_shared(
        &self,
        shared: &dyn crate::budget::RateBudget,
        app: &str,
        until: Instant,
    ) -> Result<Instant, NoSlot> {
        use crate::budget::Reserved;
        let (period, tolerance) = {
            let schedule = lock(&self.schedule);
            (schedule.period, schedule.tolerance)
        };
        let max_wait = until.saturating_duration_since(Instant::now());
        match shared.reserve(app, period, tolerance, max_wait).await {
            Ok(Reserved::After(wait)) => Ok(Instant::now() + wait),
            Ok(Reserved::Full(wait)) => Err(NoSlot::TooFar(wait)),
            Ok(Reserved::BreakerOpen(left)) => Err(NoSlot::BreakerOpenElsewhere(left)),
            Err(why) => Err(NoSlot::SharedUnreachable(why)),
        }
    }

    /// Waits for this call's send slot, or fails at once when it falls past `until`; returns the slot.
    pub(super) async fn reserve(&self, app: &str, until: Instant) -> Result<Instant, NoSlot> {
        // Reserve the next send slot in arrival order, then sleep until it without holding the turn, so the
        // callers behind reserve theirs at once. The schedule advances by the period from the slot, not from
        // when a sleeper wakes: tokio's timer wakes up to a millisecond late, and asking the limiter again
        // after each late wake-up would lose that time on every call.
        let slot = {
            let _turn = self.turn.lock().await;
            // A pause may have come in while this call queued.
            self.wait_out_pause(until).await?;
            if let Some(shared) = self.shared.get() {
                self.reserve_shared(shared.as_ref(), app, until).await?
            } else {
                let mut schedule = lock(&self.schedule);
                let now = Instant::now();
                let slot = schedule.next_slot(now);
                if slot > until {
                    return Err(NoSlot::TooFar(slot - now));
                }
                schedule.commit(slot);
                slot
            }
        };
        // A slot that is already due goes now: even a zero-length sleep costs a timer tick (~1 ms).
        if slot > Instant::now() {
            tokio::time::sleep_until(slot).await;
        }
        // The vendor may have asked for a pause while this call slept.
        self.wait_out_pause(until).await?;
        // governor enforces the ceiling: a scheduled call always conforms (its quota allows one period of
        // timer lateness on top of the burst), so this only ever waits if the schedule itself went wrong.
        loop {
            match self.limiter.check() {
                Ok(()) => return Ok(slot),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.clock.now());
                    if Instant::now() + wait > until {
                        return Err(NoSlot::TooFar(wait));
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}
