//! What the gateway remembers of a vendor's users between reconcile passes: the vendor index (the userNames
//! a recent listing held, which answers Entra's `userName eq` misses without a vendor call) and the
//! unmanaged users already reported. The engine holds them per app and reads them; reconcile fills them.
//! Their own module so that neither the engine nor reconcile imports the other for them.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use adapter_api::{Adapter, VendorUser};

/// The userNames a recent listing of the vendor held: while fresh, a `userName eq` query for a name it
/// lacks is answered "no such user" without a vendor call (see `Capabilities::create_reports_conflict`).
#[derive(Debug, Default)]
pub struct VendorIndex {
    listing: RwLock<Option<Listing>>,
    building: AtomicBool,
}

#[derive(Debug)]
struct Listing {
    /// When the listing started: a user created at the vendor after it may be missing from it.
    taken: Instant,
    user_names: HashSet<String>,
}

impl VendorIndex {
    /// `Some(true)` when a listing younger than `ttl` lacks `user_name`; `Some(false)` when it holds it;
    /// `None` when there is no fresh listing.
    pub fn lacks(&self, user_name: &str, ttl: Duration) -> Option<bool> {
        let guard = self.listing.read().unwrap_or_else(|p| p.into_inner());
        let listing = guard.as_ref().filter(|l| l.taken.elapsed() < ttl)?;
        Some(!listing.user_names.contains(&user_name.to_lowercase()))
    }

    pub(crate) fn store(&self, taken: Instant, users: &[VendorUser]) {
        let user_names = users.iter().map(|u| u.user.user_name.to_lowercase()).collect();
        *self.listing.write().unwrap_or_else(|p| p.into_inner()) = Some(Listing { taken, user_names });
    }

    /// Lists the vendor in the background unless a listing is already under way. The listing is Entra's
    /// own work (it stands in for Entra's lookups), so it is not background priority.
    pub fn refresh(self: &Arc<Self>, app_name: &str, adapter: Arc<dyn Adapter>) {
        if self.building.swap(true, Ordering::AcqRel) {
            return;
        }
        /// Lets the next miss start a listing again however this one ends (a panicking adapter included).
        struct Built(Arc<VendorIndex>);
        impl Drop for Built {
            fn drop(&mut self) {
                self.0.building.store(false, Ordering::Release);
            }
        }
        let index = Built(self.clone());
        let app_name = app_name.to_string();
        tokio::spawn(async move {
            let taken = Instant::now();
            match adapter.list_users().await {
                Ok(users) => {
                    tracing::debug!(app = %app_name, users = users.len(), "vendor index refreshed");
                    index.0.store(taken, &users);
                }
                Err(e) => tracing::warn!(app = %app_name, error = %e, "listing the vendor for the index failed"),
            }
        });
    }
}

/// Unmanaged vendor users already reported by this process's periodic passes: each is audited once, not
/// every hour.
#[derive(Debug, Default)]
pub struct UnmanagedSeen(Mutex<HashSet<(String, String)>>);

impl UnmanagedSeen {
    pub(crate) fn first_sighting(&self, app: &str, vendor_id: &str) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert((app.to_string(), vendor_id.to_string()))
    }
}
