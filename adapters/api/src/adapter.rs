//! The `Adapter` trait: the operations the gateway asks of a vendor, over canonical users and groups.
//! Object-safe (`Arc<dyn Adapter>`), so the gateway holds one per configured app whatever its vendor.

use async_trait::async_trait;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::{Group, User};

/// Why an adapter cannot give a role `group_roles` names (checked once, at start-up).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    #[error("an empty role name")]
    Empty,
    /// The vendor has no such role, or keeps none a group could give (`reason` says which and why).
    #[error("'{role}' {reason}")]
    Refused { role: String, reason: &'static str },
    /// The adapter cannot change a user's role at all, as configured (`0` says why and what to change).
    #[error("{0}")]
    Unsupported(&'static str),
}

/// What a vendor can do; the gateway advertises and enforces it towards Entra.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// The vendor keeps groups and memberships.
    pub groups: bool,
    /// DELETE removes the vendor record; false means the vendor only disables it.
    pub hard_delete: bool,
    /// The vendor can be asked for a user by userName (used to match and to adopt existing records).
    pub find_by_user_name: bool,
    /// The vendor can be asked for a user by email (a create refused for an email in use is matched).
    pub find_by_email: bool,
    /// The vendor can update users after creation.
    pub update_users: bool,
    /// The vendor can list all its users, page by page (`Adapter::list_users`): reconcile needs it.
    pub list_users: bool,
    /// A create of a userName the vendor already holds is refused as a conflict (never a second user), so a
    /// fresh listing may answer Entra's matching query for a userName it lacks without asking the vendor:
    /// a user created at the vendor since the listing still meets the conflict path (match and adopt).
    pub create_reports_conflict: bool,
    /// The adapter keeps its users inside the gateway's process (the `sandbox` type): a change reaches no
    /// one outside it, so it needs no `intent` audit entry before it is made (invariant 9 guards changes
    /// a vendor may hold while the gateway could not record them; here there are none).
    pub in_process: bool,
}

/// A user as the vendor holds it, with the vendor's own id.
#[derive(Clone, Debug, PartialEq)]
pub struct VendorUser {
    pub vendor_id: String,
    pub user: User,
}

/// Refuses a vendor id the gateway could not safely put back into a vendor URL: empty, `.` or `..` (URL
/// dot-segments would address another resource), or holding a `/`, `?`, `#`, `%` or control character.
/// Checked wherever an id arrives from a vendor, before it is stored. The refusal is `needs_manual_action`
/// (409, audited): the vendor may already hold the user, so a retry cannot help and a 503 would have Entra
/// retry forever; an admin fixes or removes the record at the vendor.
pub fn check_vendor_id(id: &str) -> crate::Result<()> {
    let bad = id.is_empty()
        || id == "."
        || id == ".."
        || id.len() > 256
        || id.chars().any(|c| c.is_control() || matches!(c, '/' | '\\' | '?' | '#' | '%'));
    if bad {
        let shown: String = id.chars().take(40).filter(|c| !c.is_control()).collect();
        return Err(Error::needs_manual_action(format!(
            "the vendor returned an unusable id {shown:?}; not stored. The vendor may hold the user: fix or \
             remove that record at the vendor, then retry"
        )));
    }
    Ok(())
}

/// How much a probe note matters: a warning is shown on `/readyz`, counted in
/// `scim_bridge_vendor_warnings` and logged at warn level; information is only logged and listed by `check`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NoteLevel {
    Info,
    Warning,
}

/// Something an operator should know about a vendor (a token expiring soon, a mode that cannot
/// deprovision, where created users land).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Note {
    pub level: NoteLevel,
    pub text: String,
}

impl Note {
    pub fn info(text: impl Into<String>) -> Self {
        Note { level: NoteLevel::Info, text: text.into() }
    }
    pub fn warning(text: impl Into<String>) -> Self {
        Note { level: NoteLevel::Warning, text: text.into() }
    }
    pub fn is_warning(&self) -> bool {
        self.level == NoteLevel::Warning
    }
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// What a harmless read against the vendor showed (used by `scim-bridge check` and `/readyz`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ProbeReport {
    /// The vendor answered at all.
    pub reachable: bool,
    /// The vendor accepted the credential.
    pub credential_accepted: bool,
    /// Rate-limit headers the vendor sent, as seen (name: value).
    pub rate_limit_headers: Vec<(String, String)>,
    /// Anything an operator should know (token expiry soon, REST mode cannot deprovision, ...).
    pub notes: Vec<Note>,
    /// Which credential the app holds, as `adapter_api::secret::fingerprint`: shown by `check` for the admin
    /// who runs it, never logged (a short code's hash prefix could be guessed offline).
    #[serde(skip)]
    pub credential_fingerprint: Option<String>,
}

#[async_trait]
pub trait Adapter: Send + Sync + 'static {
    /// The vendor type as written in config (`sandbox`, `prodpad`, ...).
    fn vendor(&self) -> &'static str;

    fn capabilities(&self) -> Capabilities;

    /// Creates the user at the vendor and returns the vendor's id for it.
    async fn create_user(&self, user: &User) -> Result<String>;

    /// Creates a user of an app that maps groups to roles (`group_roles`; the gateway calls this instead of
    /// `create_user` there). Such a user joins its groups only after it exists, so a vendor that refuses a
    /// user without a real role (Promapp: only Default Access) creates it held disabled instead (see
    /// `held_disabled_reason`), to be enabled when a mapped group gives it a role. Default: `create_user`.
    async fn create_user_awaiting_group_role(&self, user: &User) -> Result<String> {
        self.create_user(user).await
    }

    /// Reads one user by the vendor's id.
    async fn get_user(&self, vendor_id: &str) -> Result<VendorUser>;

    /// Looks a user up by userName (case-insensitive). `Ok(None)` when the vendor has no such user.
    async fn find_user(&self, user_name: &str) -> Result<Option<VendorUser>>;

    /// Looks a user up by email (case-insensitive), for vendors whose `capabilities().find_by_email` is set.
    async fn find_user_by_email(&self, _email: &str) -> Result<Option<VendorUser>> {
        Ok(None)
    }

    /// Every user the vendor holds, page by page (each page one call through the app's outbound client, so
    /// paced by its limits). For vendors whose `capabilities().list_users` is set.
    async fn list_users(&self) -> Result<Vec<VendorUser>> {
        Err(Error::unsupported(format!("{} cannot list its users", self.vendor())))
    }

    /// The managed attributes on which the vendor's record `held` differs from Entra's desired `desired`
    /// (names such as `active`, `name.givenName`, `emails`), compared as the vendor keeps them: attributes the
    /// vendor does not keep never count. Empty when they agree. Reconcile repairs what this names.
    fn drift(&self, desired: &User, held: &User) -> Vec<String> {
        crate::model::managed_differences(desired, held)
    }

    /// Brings the vendor record from `before` (last state the vendor confirmed) to `after`.
    async fn update_user(&self, vendor_id: &str, before: &User, after: &User) -> Result<()>;

    /// Deprovisions the user: removes it, or disables it where the vendor only disables
    /// (`capabilities().hard_delete == false`).
    async fn delete_user(&self, vendor_id: &str, last_known: &User) -> Result<()>;

    async fn create_group(&self, _group: &Group) -> Result<String> {
        Err(self.no_groups())
    }

    async fn update_group(&self, _vendor_id: &str, _before: &Group, _after: &Group) -> Result<()> {
        Err(self.no_groups())
    }

    async fn delete_group(&self, _vendor_id: &str) -> Result<()> {
        Err(self.no_groups())
    }

    /// Whether `role` is a role this vendor can give, for `group_roles` (checked once, at start-up; the
    /// error says why not). The default takes any non-empty name: the vendor's catalogue is unknown.
    fn check_role(&self, role: &str) -> std::result::Result<(), RoleError> {
        if role.trim().is_empty() {
            return Err(RoleError::Empty);
        }
        Ok(())
    }

    /// Why the vendor holds `user` disabled although Entra has it active (Promapp keeps no user whose only
    /// role is Default Access), so the gateway can audit it as such. `None`: the vendor holds what Entra says.
    fn held_disabled_reason(&self, _user: &User) -> Option<String> {
        None
    }

    /// A harmless read that shows whether the vendor is reachable and accepts the credential.
    async fn probe(&self) -> Result<ProbeReport>;

    /// Counters of the app's outbound client (calls, retries, 429s, breaker), for metrics and health.
    /// `None` for adapters without a vendor behind them.
    fn outbound_stats(&self) -> Option<crate::outbound::OutboundStats> {
        None
    }

    /// The error every group call of a vendor without groups returns.
    fn no_groups(&self) -> Error {
        Error::unsupported(format!(
            "{} does not support groups; in the Entra app set 'Provision Microsoft Entra ID Groups' to No",
            self.vendor()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unusable_vendor_id_needs_manual_action() {
        for id in ["", ".", "..", "a/b", "a?b", "a#b", "a%2f", "a\\b", "a\nb", &"x".repeat(257)] {
            let err = check_vendor_id(id).unwrap_err();
            assert!(matches!(err.kind(), crate::ErrorKind::NeedsManualAction), "{id:?}: {err:?}");
            assert!(err.detail().contains("unusable id"), "{}", err.detail());
        }
        for id in ["42", "a-b_c.d", "usr_01H8", "x@example.com", &"x".repeat(256)] {
            assert!(check_vendor_id(id).is_ok(), "{id:?}");
        }
    }
}
