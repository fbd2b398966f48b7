//! Admin sessions of the status page: a browser cannot send a bearer header by itself, so a correct admin
//! token posted to `/login` opens a session whose random id travels in an HttpOnly, SameSite=Strict cookie.
//! Only the SHA-256 of each id is kept, in memory (a restart logs everyone out), bounded in number and age.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a session lasts from login: a working day, then the token is asked again.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 60 * 60);

/// Sessions kept at most; past it the one closest to expiry is dropped (a flood of logins cannot grow
/// memory, and needs the admin token anyway).
const MAX_SESSIONS: usize = 256;

#[derive(Default)]
pub struct Sessions {
    /// SHA-256 of the session id -> when it expires.
    open: Mutex<HashMap<[u8; 32], Instant>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("open", &self.lock().len()).finish()
    }
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Instant>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session and returns its id (64 hex digits from the OS's random source), for the cookie.
    pub fn open(&self) -> String {
        let id = hex::encode(rand::random::<[u8; 32]>());
        let now = Instant::now();
        let mut open = self.lock();
        open.retain(|_, expires| *expires > now);
        if open.len() >= MAX_SESSIONS {
            if let Some(oldest) = open.iter().min_by_key(|(_, e)| **e).map(|(k, _)| *k) {
                open.remove(&oldest);
            }
        }
        open.insert(crate::auth::token_hash(&id), now + SESSION_TTL);
        id
    }

    /// Whether `id` is an open, unexpired session.
    pub fn valid(&self, id: &str) -> bool {
        let key = crate::auth::token_hash(id);
        let mut open = self.lock();
        match open.get(&key) {
            Some(expires) if *expires > Instant::now() => true,
            Some(_) => {
                open.remove(&key);
                false
            }
            None => false,
        }
    }

    pub fn close(&self, id: &str) {
        self.lock().remove(&crate::auth::token_hash(id));
    }

    #[cfg(test)]
    fn expire_all(&self) {
        let past = Instant::now() - Duration::from_secs(1);
        self.lock().values_mut().for_each(|e| *e = past);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_open_expire_close_and_stay_bounded() {
        let s = Sessions::default();
        let id = s.open();
        assert_eq!(id.len(), 64);
        assert!(s.valid(&id));
        assert!(!s.valid("0000"), "an id never opened");
        s.close(&id);
        assert!(!s.valid(&id));
        let again = s.open();
        s.expire_all();
        assert!(!s.valid(&again), "expired");
        for _ in 0..MAX_SESSIONS + 10 {
            s.open();
        }
        assert_eq!(s.lock().len(), MAX_SESSIONS);
        let newest = s.open();
        assert!(s.valid(&newest));
        // The id itself is never kept, only its hash.
        assert!(!s.lock().keys().any(|k| hex::encode(k) == newest));
    }
}
