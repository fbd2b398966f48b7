//! Inbound credentials shared by both listeners: the SHA-256 by which tokens are configured and compared
//! (the SCIM listener's per-app tokens, the status page's admin token and its session ids), and the
//! per-source throttle of failed checks that the two listeners count into together.

use std::net::IpAddr;
use std::time::Instant;

use sha2::{Digest, Sha256};

/// SHA-256 of a token, as stored in config.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Failed bearer-token checks per source address (governor's keyed GCRA): a source past its quota gets
/// 429 + `Retry-After` for each further failure instead of another guess. Only failures are counted and
/// only failures are refused, so a tenant guessing from Entra's shared addresses cannot lock out another
/// tenant's correct token. An IPv6 source is counted by its /64 (`listener::source_key`): one host usually
/// holds a whole /64 and could otherwise change address for every guess.
pub(crate) struct AuthFailures {
    limiter: governor::DefaultKeyedRateLimiter<IpAddr>,
    /// Past this many remembered sources, idle ones are forgotten, at most once per `PRUNE_EVERY`.
    prune_above: usize,
    last_prune: std::sync::Mutex<Option<Instant>>,
    prunes: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for AuthFailures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthFailures").field("sources", &self.limiter.len()).finish()
    }
}

/// Sources remembered before idle ones are forgotten (bounded memory under a spray of addresses).
const AUTH_FAILURE_SOURCES: usize = 100_000;

/// How often, at most, the remembered sources are pruned: a prune walks the whole map, so doing it on
/// every failed check past `AUTH_FAILURE_SOURCES` would make each guess of a spray cost a full scan.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl AuthFailures {
    pub(crate) fn new(per_minute: u32) -> Self {
        Self::with_prune_above(per_minute, AUTH_FAILURE_SOURCES)
    }

    fn with_prune_above(per_minute: u32, prune_above: usize) -> Self {
        let n = std::num::NonZeroU32::new(per_minute.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
        AuthFailures {
            limiter: governor::RateLimiter::keyed(governor::Quota::per_minute(n)),
            prune_above,
            last_prune: std::sync::Mutex::new(None),
            prunes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Counts one failure from `ip`; `Some(wait)` when the source is over its quota.
    pub(crate) fn record(&self, ip: IpAddr) -> Option<std::time::Duration> {
        if self.limiter.len() > self.prune_above {
            self.prune();
        }
        use governor::clock::Clock;
        let now = governor::clock::DefaultClock::default().now();
        let key = crate::listener::source_key(ip);
        self.limiter.check_key(&key).err().map(|not_until| not_until.wait_time_from(now))
    }

    /// Forgets idle sources, unless that was done less than `PRUNE_EVERY` ago (or is being done now).
    fn prune(&self) {
        let Ok(mut last) = self.last_prune.try_lock() else { return };
        if last.is_some_and(|at| at.elapsed() < PRUNE_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        self.limiter.retain_recent();
        self.prunes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_auth_counts_an_ipv6_source_by_its_64() {
        let failures = AuthFailures::new(2);
        assert!(failures.record("2001:db8:0:1::a".parse().unwrap()).is_none());
        assert!(failures.record("2001:db8:0:1::b".parse().unwrap()).is_none());
        assert!(failures.record("2001:db8:0:1:ffff::c".parse().unwrap()).is_some(), "same /64, third failure");
        assert!(failures.record("2001:db8:0:2::a".parse().unwrap()).is_none(), "another /64");
        assert!(failures.record("192.0.2.1".parse().unwrap()).is_none());
    }

    #[test]
    fn failed_auth_sources_are_pruned_at_most_once_a_second() {
        let failures = AuthFailures::with_prune_above(5, 10);
        for i in 0..1000u32 {
            failures.record(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
        }
        // Far past the threshold on every check, yet pruned once within the second.
        assert_eq!(failures.prunes.load(std::sync::atomic::Ordering::Relaxed), 1);
        *failures.last_prune.lock().unwrap() = Some(Instant::now() - PRUNE_EVERY);
        failures.record("10.200.0.1".parse().unwrap());
        assert_eq!(failures.prunes.load(std::sync::atomic::Ordering::Relaxed), 2);
    }
}
