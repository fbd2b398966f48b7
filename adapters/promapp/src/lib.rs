//! The Nintex Promapp (Process Manager) adapter: its `Config`, `build`, default outbound limits and the
//! `Adapter` impl. Promapp speaks SCIM 2.0 at one global host; it only disables users (no hard delete),
//! keeps no groups, and must not get users whose only Entra role is "Default Access" (refused at create,
//! or created disabled where `group_roles` may give a role later; disabled at Promapp, roles untouched,
//! when an update leaves only that role). With `group_roles` (`Vendor::build_for_group_roles`), a user
//! with no Process Manager role at all is held disabled the same way: Promapp requires a valid role.

pub mod client;
pub mod map;
pub mod model;
#[cfg(feature = "sim")]
pub mod sim;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use adapter_api::scim_client::{self, PatchStrategy, ScimClient};
use adapter_api::{
    Adapter, Capabilities, Error, Outbound, OutboundConfig, ProbeReport, Result, RoleError, User, VendorUser,
};
use async_trait::async_trait;
use secrecy::SecretString;
use serde::Deserialize;
use time::Date;

pub const DEFAULT_BASE_URL: &str = "https://api.promapp.com/api/scim";
pub const MAX_PAGE_SIZE: u32 = 200;
/// `probe()` warns this many days before the token expires.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// How Entra-managed roles combine with roles given in Promapp itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleMode {
    /// The user's Promapp roles are exactly the mapped Entra roles.
    #[default]
    Replace,
    /// Roles given in Promapp are kept; only roles the gateway set are added or removed (costs a GET).
    Preserve,
}

fn default_base_url() -> String {
    DEFAULT_BASE_URL.into()
}
fn default_users_path() -> String {
    "/Users".into()
}
fn default_skip_roles() -> Vec<String> {
    vec!["msiam_access".into(), "Default Access".into()]
}
fn default_page_size() -> u32 {
    100
}

/// The `promapp` app config (the keys of the app's `config:` block).
/// `Debug` is derived: the credential is a `SecretString`, which prints as `[REDACTED]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The SCIM access token (give exactly one of the three).
    #[serde(default, deserialize_with = "adapter_api::secret::deserialize_opt")]
    pub access_token: Option<SecretString>,
    #[serde(default)]
    pub access_token_env: Option<String>,
    #[serde(default)]
    pub access_token_file: Option<PathBuf>,
    /// `YYYY-MM-DD` (or RFC 3339): when the one-year token expires.
    #[serde(default)]
    pub token_expires_at: Option<String>,
    #[serde(default = "default_users_path")]
    pub users_path: String,
    #[serde(default)]
    pub patch_strategy: PatchStrategy,
    /// Entra app-role value -> exact Process Manager role name.
    #[serde(default)]
    pub role_map: BTreeMap<String, String>,
    #[serde(default)]
    pub role_mode: RoleMode,
    #[serde(default = "default_skip_roles")]
    pub skip_roles: Vec<String>,
    #[serde(default = "default_page_size")]
    pub page_size: u32,
}

/// Promapp in the vendor registry (`scim_bridge::vendors::VENDORS`).
pub struct PromappVendor;

/// The registry entry.
pub static VENDOR: PromappVendor = PromappVendor;

impl adapter_api::Vendor for PromappVendor {
    fn type_name(&self) -> &'static str {
        "promapp"
    }
    fn default_limits(&self) -> OutboundConfig {
        default_limits()
    }
    fn build(
        &self,
        app: &str,
        options: serde_json::Value,
        limits: OutboundConfig,
    ) -> Result<Arc<dyn Adapter>, adapter_api::BuildError> {
        build(app, options, limits)
    }
    fn build_for_group_roles(
        &self,
        app: &str,
        options: serde_json::Value,
        limits: OutboundConfig,
    ) -> Result<Arc<dyn Adapter>, adapter_api::BuildError> {
        build_with(app, options, limits, true)
    }
    #[cfg(feature = "sim")]
    fn simulator(&self) -> Option<&'static simkit::SimSpec> {
        Some(&sim::SPEC)
    }
}

/// Outbound limits for Promapp. No limits are published; 2 requests/s (the vendor notes' `max_rps`) with a
/// burst of 2 and 2 in flight keeps a full Entra cycle well under any plausible per-site limit of a shared
/// global host, while Entra's own pace (a few requests per second per app) is still met.
pub fn default_limits() -> OutboundConfig {
    OutboundConfig { requests_per_second: 2.0, burst: 2, max_in_flight: 2, ..OutboundConfig::default() }
}

/// Why a Promapp app's options cannot be used; each names its key.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    AccessToken(#[from] adapter_api::secret::CredentialError),
    #[error(transparent)]
    Url(#[from] scim_client::UrlError),
    #[error("`page_size`: must be 1..={MAX_PAGE_SIZE}, got {0}")]
    PageSize(u32),
    #[error("`role_map`: '{0}' maps to an empty role name")]
    EmptyRole(String),
    #[error("`token_expires_at`: '{0}' is not a date (YYYY-MM-DD)")]
    TokenExpiresAt(String),
    /// Refused with `group_roles`: the role a group gives and one kept from Promapp would both count.
    #[error(
        "`role_mode`: preserve cannot be combined with `group_roles` (a user whose only Process Manager role was \
         given in Promapp would be disabled); use `role_mode: replace` (the default) and give that role through a \
         group"
    )]
    PreserveWithGroupRoles,
    /// `limits:` cannot be used by the outbound client.
    #[error("{0}")]
    Limits(#[source] Error),
}

/// Parses `YYYY-MM-DD` or an RFC 3339 timestamp.
pub fn parse_date(raw: &str) -> std::result::Result<Date, SettingsError> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(raw.trim(), &fmt)
        .or_else(|_| {
            time::OffsetDateTime::parse(raw.trim(), &time::format_description::well_known::Rfc3339).map(|t| t.date())
        })
        .map_err(|_| SettingsError::TokenExpiresAt(raw.to_string()))
}

/// What `probe()` says about the token's expiry on `today`: an error once past, a note within 30 days.
pub fn expiry_check(expires: Date, today: Date) -> Result<Option<adapter_api::Note>> {
    let days = (expires - today).whole_days();
    if days < 0 {
        return Err(Error::unauthorized(format!(
            "the Promapp SCIM token expired on {expires}: a Promaster creates a new one under My Profile > Access \
             Tokens (scope SCIM); then update access_token and token_expires_at"
        )));
    }
    if days <= EXPIRY_WARNING_DAYS {
        return Ok(Some(adapter_api::Note::warning(format!(
            "the Promapp SCIM token expires on {expires} (in {days} days); create a new one before then"
        ))));
    }
    Ok(None)
}

/// Builds the adapter for app `app` from its config block. Errors name the offending key.
pub fn build(
    app: &str,
    config: serde_json::Value,
    outbound: OutboundConfig,
) -> Result<Arc<dyn Adapter>, adapter_api::BuildError> {
    build_with(app, config, outbound, false)
}

/// `build`, for an app with `group_roles` when `group_roles` is set: users without a Process Manager role
/// are then held disabled until a mapped group gives them one.
pub fn build_with(
    app: &str,
    config: serde_json::Value,
    outbound: OutboundConfig,
    group_roles: bool,
) -> Result<Arc<dyn Adapter>, adapter_api::BuildError> {
    let config: Config =
        scim_client::parse_config(config).map_err(|e| adapter_api::BuildError::options(app, "promapp", e))?;
    if group_roles && config.role_mode == RoleMode::Preserve {
        // The role a group gives and a role kept from Promapp would both have to count: a user whose only
        // role was given in Promapp would be held disabled as having none.
        return Err(adapter_api::BuildError::setting(app, "promapp", SettingsError::PreserveWithGroupRoles));
    }
    let mut adapter =
        Promapp::new(app, config, outbound).map_err(|e| adapter_api::BuildError::setting(app, "promapp", e))?;
    adapter.hold_without_role = group_roles;
    Ok(Arc::new(adapter))
}

/// The Promapp adapter.
pub struct Promapp {
    app: String,
    client: ScimClient,
    role_map: BTreeMap<String, String>,
    role_mode: RoleMode,
    skip_roles: Vec<String>,
    token_expires_at: Option<Date>,
    /// The app maps groups to roles: a user with no Process Manager role is held disabled (`map::held`).
    hold_without_role: bool,
}

impl fmt::Debug for Promapp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Promapp").field("app", &self.app).field("client", &self.client).finish()
    }
}

impl Promapp {
    pub fn new(app: &str, config: Config, outbound: OutboundConfig) -> std::result::Result<Self, SettingsError> {
        let token = adapter_api::secret::resolve(
            "access_token",
            config.access_token,
            config.access_token_env.as_deref(),
            config.access_token_file.as_deref(),
        )?;
        let base_url = scim_client::check_base_url("base_url", &config.base_url)?;
        let users_path = scim_client::check_users_path("users_path", &config.users_path)?;
        if config.page_size == 0 || config.page_size > MAX_PAGE_SIZE {
            return Err(SettingsError::PageSize(config.page_size));
        }
        if let Some((value, _)) = config.role_map.iter().find(|(_, name)| name.trim().is_empty()) {
            return Err(SettingsError::EmptyRole(value.clone()));
        }
        let token_expires_at = config.token_expires_at.as_deref().map(parse_date).transpose()?;
        let outbound = Outbound::new(app, outbound).map_err(SettingsError::Limits)?;
        let settings = client::ClientSettings {
            base_url,
            users_path,
            token,
            patch_strategy: config.patch_strategy,
            page_size: config.page_size,
        };
        Ok(Promapp {
            app: app.to_string(),
            client: client::scim_client(settings, Arc::new(outbound)),
            role_map: config.role_map,
            role_mode: config.role_mode,
            skip_roles: config.skip_roles,
            token_expires_at,
            hold_without_role: false,
        })
    }

    fn to_vendor(&self, user: &User) -> User {
        map::to_vendor(user, &self.role_map, &self.skip_roles, self.hold_without_role)
    }

    /// Whether Promapp is to hold `user` disabled whatever Entra says.
    fn held(&self, user: &User) -> bool {
        map::held(user, &self.role_map, &self.skip_roles, self.hold_without_role)
    }

    fn canonical(&self, vu: VendorUser) -> VendorUser {
        VendorUser { vendor_id: vu.vendor_id, user: map::from_vendor(vu.user, &self.role_map) }
    }

    /// The vendor forms of `before` and `after`; with `role_mode: preserve`, roles merged with the vendor's
    /// current ones (one GET).
    async fn vendor_pair(&self, vendor_id: &str, before: &User, after: &User) -> Result<(User, User)> {
        let mut vb = self.to_vendor(before);
        let mut va = self.to_vendor(after);
        if self.role_mode == RoleMode::Preserve {
            let current = self.client.get(vendor_id).await?;
            let names = |u: &User| u.role_values().into_iter().map(str::to_string).collect::<Vec<_>>();
            let merged = map::preserve_roles(&names(&current.user), &names(&vb), &names(&va));
            vb.roles = current.user.roles.clone();
            va.roles = map::role_entries(&merged);
        }
        Ok((vb, va))
    }
}

#[async_trait]
impl Adapter for Promapp {
    fn outbound_stats(&self) -> Option<adapter_api::OutboundStats> {
        Some(self.client.outbound().stats())
    }

    fn vendor(&self) -> &'static str {
        "promapp"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            groups: false,
            hard_delete: false,
            find_by_user_name: true,
            find_by_email: false,
            update_users: true,
            list_users: true,
            create_reports_conflict: true,
            in_process: false,
        }
    }

    async fn create_user(&self, user: &User) -> Result<String> {
        if map::only_skip_roles(user, &self.skip_roles) {
            return Err(Error::invalid(format!(
                "Promapp does not provision users whose only role is {}: in the Entra enterprise app, assign {} \
                 (or their group) an app-specific role instead of Default Access",
                user.role_values().join(", "),
                user.user_name
            )));
        }
        self.client.create(&self.to_vendor(user)).await
    }

    /// With `group_roles`, a user's Process Manager role comes from its groups, which it joins only after it
    /// exists: one with only Default Access of its own, or no role at all, is created disabled (`to_vendor`)
    /// instead of refused.
    async fn create_user_awaiting_group_role(&self, user: &User) -> Result<String> {
        self.client.create(&self.to_vendor(user)).await
    }

    /// Any non-empty name but a skip role: mapping a group to Default Access would only disable its members.
    fn check_role(&self, role: &str) -> std::result::Result<(), RoleError> {
        if role.trim().is_empty() {
            return Err(RoleError::Empty);
        }
        if self.skip_roles.iter().any(|s| s.eq_ignore_ascii_case(role)) {
            return Err(RoleError::Refused {
                role: role.to_string(),
                reason:
                    "is one of skip_roles: Promapp keeps no user whose only role it is; name a Process Manager role",
            });
        }
        Ok(())
    }

    fn held_disabled_reason(&self, user: &User) -> Option<String> {
        (user.active && self.held(user)).then(|| match map::only_skip_roles(user, &self.skip_roles) {
            true => format!(
                "disabled at Promapp: its only role is {} (Promapp keeps no such user); it is enabled again when \
                 it gets an app-specific role (from Entra, or from a mapped group with group_roles)",
                user.role_values().join(", ")
            ),
            false => "disabled at Promapp: it has no Process Manager role (no mapped group gives it one and it has \
                      none of its own; Promapp requires one); it is enabled again when a mapped group gives it one"
                .to_string(),
        })
    }

    async fn get_user(&self, vendor_id: &str) -> Result<VendorUser> {
        Ok(self.canonical(self.client.get(vendor_id).await?))
    }

    async fn find_user(&self, user_name: &str) -> Result<Option<VendorUser>> {
        Ok(self.client.find(user_name).await?.map(|vu| self.canonical(vu)))
    }

    async fn list_users(&self) -> Result<Vec<VendorUser>> {
        Ok(self.client.list_all().await?.into_iter().map(|vu| self.canonical(vu)).collect())
    }

    /// Compared as Promapp keeps it: roles through `role_map`, without the skipped ones. With `role_mode:
    /// preserve`, roles given in Promapp itself are the admin's: only a managed role gone missing counts.
    fn drift(&self, desired: &User, held: &User) -> Vec<String> {
        let kept = self.canonical(VendorUser { vendor_id: String::new(), user: self.to_vendor(desired) }).user;
        let mut drift = self.client.drift(&kept, held);
        if self.role_mode == RoleMode::Preserve {
            let has = |u: &User, role: &str| u.role_values().iter().any(|r| r.eq_ignore_ascii_case(role));
            if kept.role_values().iter().all(|r| has(held, r)) {
                drift.retain(|d| d != "roles");
            }
        }
        drift
    }

    /// A user left with only Default Access (or, with `group_roles`, no role at all) is disabled and
    /// nothing else: its Process Manager roles stay as
    /// Promapp holds them, so a real role coming back enables it as it was (none are wiped meanwhile).
    async fn update_user(&self, vendor_id: &str, before: &User, after: &User) -> Result<()> {
        let (vb, mut va) = self.vendor_pair(vendor_id, before, after).await?;
        if self.held(after) {
            va.roles = vb.roles.clone();
        }
        self.client.update(vendor_id, &vb, &va).await
    }

    /// Promapp cannot delete: the user is disabled (PUT or PATCH `active=false`), always sent: a user the
    /// gateway holds disabled already (only Default Access) may have been enabled in Promapp since. Only the
    /// disable: its roles stay as Promapp holds them.
    async fn delete_user(&self, vendor_id: &str, last_known: &User) -> Result<()> {
        let mut user = self.to_vendor(last_known);
        user.roles.clear();
        self.client.disable(vendor_id, &user).await
    }

    async fn probe(&self) -> Result<ProbeReport> {
        let expiry_note = match self.token_expires_at {
            Some(date) => expiry_check(date, time::OffsetDateTime::now_utc().date())?,
            None => None,
        };
        let mut report = self.client.probe().await?;
        report.notes.extend(expiry_note);
        if self.token_expires_at.is_none() {
            report.notes.push(adapter_api::Note::info(
                "token_expires_at is not set: Promapp SCIM tokens expire one year after creation; set it to be warned",
            ));
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_debug_never_shows_the_token() {
        let c: Config = scim_client::parse_config(json!({"access_token": "pm-secret-7731"})).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("pm-secret-7731") && shown.contains("REDACTED"), "{shown}");
    }

    #[test]
    fn config_defaults_and_errors_name_keys() {
        let c: Config = scim_client::parse_config(json!({"access_token": "t"})).unwrap();
        assert_eq!(c.base_url, DEFAULT_BASE_URL);
        assert_eq!(c.users_path, "/Users");
        assert_eq!(c.patch_strategy, PatchStrategy::PutMerge);
        assert_eq!(c.role_mode, RoleMode::Replace);
        assert_eq!(c.skip_roles, vec!["msiam_access", "Default Access"]);
        assert_eq!(c.page_size, 100);
        assert!(!format!("{c:?}").contains("\"t\""));

        let cases = [
            (json!({"access_token": "t", "bogus": 1}), "bogus"),
            (json!({"access_token": "t", "page_size": "many"}), "page_size"),
            (json!({"access_token": "t", "page_size": 500}), "page_size"),
            (json!({"access_token": "t", "patch_strategy": "merge"}), "patch_strategy"),
            (json!({"access_token": "t", "token_expires_at": "soon"}), "token_expires_at"),
            (json!({"access_token": "t", "base_url": "not a url"}), "base_url"),
            (json!({}), "access_token"),
        ];
        for (cfg, key) in cases {
            let err = build("app1", cfg.clone(), default_limits()).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(key), "{cfg}: {err}");
        }
    }

    #[test]
    fn expiry_is_warned_within_30_days_and_refused_after() {
        let d = |s: &str| parse_date(s).unwrap();
        assert!(expiry_check(d("2030-01-31"), d("2030-01-01")).unwrap().is_some());
        assert_eq!(expiry_check(d("2030-06-01"), d("2030-01-01")).unwrap(), None);
        let err = expiry_check(d("2029-12-31"), d("2030-01-01")).unwrap_err();
        assert_eq!(err.kind_name(), "unauthorized");
        assert_eq!(parse_date("2030-01-31T10:00:00Z").unwrap(), d("2030-01-31"));
    }

    #[test]
    fn limits_are_gentle() {
        let l = default_limits();
        assert_eq!(l.requests_per_second, 2.0);
        assert!(l.max_in_flight <= 2);
    }
}
