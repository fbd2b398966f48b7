//! The PROMPT (prompt.org.au) adapter: its `Config`, `build`, default outbound limits and the `Adapter`
//! impl. PROMPT takes a small attribute set over SCIM, disables rather than deletes, keeps no groups,
//! places new users in the organisation's default department/section, and refuses to disable users who
//! still hold permissions (surfaced as `NeedsManualAction`).

pub mod client;
pub mod map;
pub mod model;
#[cfg(feature = "sim")]
pub mod sim;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use adapter_api::scim_client::{self, DeleteMode, PatchStrategy, ScimClient};
use adapter_api::{Adapter, Capabilities, Outbound, OutboundConfig, ProbeReport, Result, User, VendorUser};
use async_trait::async_trait;
use secrecy::SecretString;
use serde::Deserialize;

use crate::map::PlacementSource;
use crate::model::PROMPT_EXT;

pub const DEFAULT_BASE_URL: &str = "https://alb-app.prompt.org.au/api/authentication/scim";
pub const DEFAULT_ALLOWED_ATTRIBUTES: [&str; 5] =
    ["userName", "active", "emails[type eq \"work\"].value", "name.givenName", "name.familyName"];

/// What an Entra DELETE becomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptDeleteMode {
    /// `active=false` (PATCH or PUT by `patch_strategy`).
    #[default]
    Disable,
    /// Forward `DELETE` (PROMPT's semantics unknown; may answer 405).
    Passthrough,
}

fn default_base_url() -> String {
    DEFAULT_BASE_URL.into()
}
fn default_users_path() -> String {
    "/Users".into()
}
fn default_allowed() -> Vec<String> {
    DEFAULT_ALLOWED_ATTRIBUTES.iter().map(|s| s.to_string()).collect()
}
fn default_patch_strategy() -> PatchStrategy {
    PatchStrategy::Passthrough
}

/// The `prompt` app config (the keys of the app's `config:` block).
/// `Debug` is derived: the credential is a `SecretString`, which prints as `[REDACTED]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The Provisioning Authentication Code (give exactly one of the three).
    #[serde(default, deserialize_with = "adapter_api::secret::deserialize_opt")]
    pub auth_code: Option<SecretString>,
    #[serde(default)]
    pub auth_code_env: Option<String>,
    #[serde(default)]
    pub auth_code_file: Option<PathBuf>,
    #[serde(default = "default_users_path")]
    pub users_path: String,
    #[serde(default = "default_allowed")]
    pub allowed_attributes: Vec<String>,
    #[serde(default)]
    pub send_external_id: bool,
    #[serde(default = "default_patch_strategy")]
    pub patch_strategy: PatchStrategy,
    #[serde(default)]
    pub delete_mode: PromptDeleteMode,
    /// Must match PROMPT's Edit Organisation > Azure AD > Default Department (echoed in probe notes).
    pub default_department: String,
    /// Must match PROMPT's Default Section (echoed in probe notes).
    pub default_section: String,
    /// Entra attribute path choosing each user's department (sent in the assumed PROMPT extension).
    #[serde(default)]
    pub department_from: Option<String>,
    #[serde(default)]
    pub section_from: Option<String>,
    /// PROMPT answers `emails.value eq "x"` filters (undocumented, so off by default). With it on, a create
    /// refused because the email is already in use is matched to PROMPT's existing user (then updated to
    /// Entra's values) instead of failing every cycle.
    #[serde(default)]
    pub email_lookup: bool,
}

/// Prompt in the vendor registry (`scim_bridge::vendors::VENDORS`).
pub struct PromptVendor;

/// The registry entry.
pub static VENDOR: PromptVendor = PromptVendor;

impl adapter_api::Vendor for PromptVendor {
    fn type_name(&self) -> &'static str {
        "prompt"
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
    #[cfg(feature = "sim")]
    fn simulator(&self) -> Option<&'static simkit::SimSpec> {
        Some(&sim::SPEC)
    }
}

/// Outbound limits for PROMPT: one organisation's small document-control service behind a single
/// load-balancer alias, with no published limits. 1 request/s (the vendor notes' `max_rps`), burst 1 and
/// one call in flight keep the gateway no busier than Entra's own connector would be, and serialise
/// changes to a user so a disable cannot overtake the update before it.
pub fn default_limits() -> OutboundConfig {
    OutboundConfig { requests_per_second: 1.0, burst: 1, max_in_flight: 1, ..OutboundConfig::default() }
}

/// Builds the adapter for app `app` from its config block. Errors name the offending key.
pub fn build(
    app: &str,
    config: serde_json::Value,
    outbound: OutboundConfig,
) -> Result<Arc<dyn Adapter>, adapter_api::BuildError> {
    let config: Config =
        scim_client::parse_config(config).map_err(|e| adapter_api::BuildError::options(app, "prompt", e))?;
    let adapter = Prompt::new(app, config, outbound).map_err(|e| adapter_api::BuildError::setting(app, "prompt", e))?;
    Ok(Arc::new(adapter))
}

/// The PROMPT adapter.
pub struct Prompt {
    app: String,
    client: ScimClient,
    placement: PlacementSource,
    default_department: String,
    default_section: String,
}

impl fmt::Debug for Prompt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prompt").field("app", &self.app).field("client", &self.client).finish()
    }
}

/// Why a PROMPT app's options cannot be used; each names its key.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    AuthCode(#[from] adapter_api::secret::CredentialError),
    #[error(transparent)]
    Url(#[from] scim_client::UrlError),
    #[error("`{0}`: must not be empty")]
    Empty(&'static str),
    /// `limits:` cannot be used by the outbound client.
    #[error("{0}")]
    Limits(#[source] adapter_api::Error),
}

fn non_empty(key: &'static str, value: &str) -> std::result::Result<String, SettingsError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(SettingsError::Empty(key));
    }
    Ok(v.to_string())
}

impl Prompt {
    pub fn new(app: &str, config: Config, outbound: OutboundConfig) -> std::result::Result<Self, SettingsError> {
        let auth_code = adapter_api::secret::resolve(
            "auth_code",
            config.auth_code,
            config.auth_code_env.as_deref(),
            config.auth_code_file.as_deref(),
        )?;
        let base_url = scim_client::check_base_url("base_url", &config.base_url)?;
        let users_path = scim_client::check_users_path("users_path", &config.users_path)?;
        let default_department = non_empty("default_department", &config.default_department)?;
        let default_section = non_empty("default_section", &config.default_section)?;
        let mut allowed = Vec::new();
        for a in &config.allowed_attributes {
            allowed.push(non_empty("allowed_attributes", a)?);
        }
        if config.send_external_id && !allowed.iter().any(|a| a == "externalId") {
            allowed.push("externalId".into());
        }
        if !config.send_external_id {
            allowed.retain(|a| a != "externalId");
        }
        for (key, path) in [("department_from", &config.department_from), ("section_from", &config.section_from)] {
            if let Some(p) = path {
                non_empty(key, p)?;
            }
        }
        let placement = PlacementSource { department_from: config.department_from, section_from: config.section_from };
        if placement.is_configured() {
            allowed.push(PROMPT_EXT.into());
        }
        let delete_mode = match config.delete_mode {
            PromptDeleteMode::Disable => DeleteMode::Disable,
            PromptDeleteMode::Passthrough => DeleteMode::Delete,
        };
        let outbound = Outbound::new(app, outbound).map_err(SettingsError::Limits)?;
        let settings = client::ClientSettings {
            base_url,
            users_path,
            auth_code,
            allowed_attributes: allowed,
            patch_strategy: config.patch_strategy,
            delete_mode,
            email_lookup: config.email_lookup,
        };
        Ok(Prompt {
            app: app.to_string(),
            client: client::scim_client(settings, Arc::new(outbound)),
            placement,
            default_department,
            default_section,
        })
    }

    fn to_vendor(&self, user: &User) -> User {
        map::to_vendor(user, &self.placement)
    }

    fn from_vendor(vu: VendorUser) -> VendorUser {
        VendorUser { vendor_id: vu.vendor_id, user: map::from_vendor(vu.user) }
    }
}

#[async_trait]
impl Adapter for Prompt {
    fn outbound_stats(&self) -> Option<adapter_api::OutboundStats> {
        Some(self.client.outbound().stats())
    }

    fn vendor(&self) -> &'static str {
        "prompt"
    }

    /// PROMPT takes no roles through SCIM (user types are set in PROMPT itself): `group_roles` has nothing
    /// to set there.
    fn check_role(&self, _role: &str) -> std::result::Result<(), adapter_api::RoleError> {
        Err(adapter_api::RoleError::Unsupported(
            "PROMPT takes no roles through SCIM (user types are set in PROMPT itself); remove group_roles",
        ))
    }

    fn capabilities(&self) -> Capabilities {
        let hard_delete = self.client.rules().delete_mode == DeleteMode::Delete;
        let find_by_email = self.client.rules().email_lookup;
        Capabilities {
            groups: false,
            hard_delete,
            find_by_user_name: true,
            find_by_email,
            update_users: true,
            list_users: true,
            create_reports_conflict: true,
            in_process: false,
        }
    }

    async fn create_user(&self, user: &User) -> Result<String> {
        self.client.create(&self.to_vendor(user)).await
    }

    async fn get_user(&self, vendor_id: &str) -> Result<VendorUser> {
        Ok(Self::from_vendor(self.client.get(vendor_id).await?))
    }

    async fn find_user(&self, user_name: &str) -> Result<Option<VendorUser>> {
        Ok(self.client.find(user_name).await?.map(Self::from_vendor))
    }

    async fn find_user_by_email(&self, email: &str) -> Result<Option<VendorUser>> {
        Ok(self.client.find_by_email(email).await?.map(Self::from_vendor))
    }

    async fn list_users(&self) -> Result<Vec<VendorUser>> {
        Ok(self.client.list_all().await?.into_iter().map(Self::from_vendor).collect())
    }

    /// Compared as PROMPT keeps it (its own placement fields are not Entra's to repair).
    fn drift(&self, desired: &User, held: &User) -> Vec<String> {
        let kept = Self::from_vendor(VendorUser { vendor_id: String::new(), user: self.to_vendor(desired) }).user;
        self.client.drift(&kept, held)
    }

    async fn update_user(&self, vendor_id: &str, before: &User, after: &User) -> Result<()> {
        self.client.update(vendor_id, &self.to_vendor(before), &self.to_vendor(after)).await
    }

    /// Disables (default) or forwards DELETE (`delete_mode: passthrough`). A refusal because the user still
    /// holds permissions is `NeedsManualAction`.
    async fn delete_user(&self, vendor_id: &str, last_known: &User) -> Result<()> {
        self.client.delete(vendor_id, &self.to_vendor(last_known)).await
    }

    async fn probe(&self) -> Result<ProbeReport> {
        let mut report = self.client.probe().await?;
        report.notes.push(adapter_api::Note::info(format!(
            "new users get PROMPT's default department '{}' and section '{}' (check they match Edit Organisation > \
             Azure AD){}",
            self.default_department,
            self.default_section,
            if self.placement.is_configured() { "; department_from/section_from override them per user" } else { "" }
        )));
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> serde_json::Value {
        json!({"auth_code": "c", "default_department": "Corporate", "default_section": "All Staff"})
    }

    #[test]
    fn config_debug_never_shows_the_code() {
        let mut raw = base();
        raw["auth_code"] = json!("pr-secret-4410");
        let c: Config = scim_client::parse_config(raw).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("pr-secret-4410") && shown.contains("REDACTED"), "{shown}");
    }

    #[test]
    fn config_defaults() {
        let c: Config = scim_client::parse_config(base()).unwrap();
        assert_eq!(c.base_url, DEFAULT_BASE_URL);
        assert_eq!(c.allowed_attributes.len(), 5);
        assert!(!c.send_external_id);
        assert_eq!(c.patch_strategy, PatchStrategy::Passthrough);
        assert_eq!(c.delete_mode, PromptDeleteMode::Disable);
        assert!(!format!("{c:?}").contains("\"c\""));
    }

    #[test]
    fn build_errors_say_whether_the_options_did_not_parse_or_a_value_cannot_be_used() {
        let mut options = base();
        options["send_external_id"] = json!("yes");
        let err = build("p", options, default_limits()).err().unwrap();
        assert!(
            matches!(&err, adapter_api::BuildError::Options { source, .. } if source.path() == Some("send_external_id")),
            "{err:?}"
        );
        assert!(err.to_string().starts_with("app p (prompt): `send_external_id`: "), "{err}");
        let mut options = base();
        options["default_section"] = json!(" ");
        let err = build("p", options, default_limits());
        assert!(matches!(err, Err(adapter_api::BuildError::Setting { .. })), "{:?}", err.err());
    }

    #[test]
    fn config_errors_name_the_key() {
        let with = |k: &str, v: serde_json::Value| {
            let mut b = base();
            b[k] = v;
            b
        };
        let without = |k: &str| {
            let mut b = base();
            b.as_object_mut().unwrap().remove(k);
            b
        };
        let cases = [
            (without("default_department"), "default_department"),
            (without("default_section"), "default_section"),
            (with("default_section", json!(" ")), "default_section"),
            (with("delete_mode", json!("purge")), "delete_mode"),
            (with("send_external_id", json!("yes")), "send_external_id"),
            (with("max_rps", json!(3)), "max_rps"),
            (without("auth_code"), "auth_code"),
            (with("users_path", json!("Users")), "users_path"),
        ];
        for (cfg, key) in cases {
            let err = build("p", cfg.clone(), default_limits()).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(key), "{cfg}: {err}");
        }
    }

    #[test]
    fn limits_are_one_per_second() {
        let l = default_limits();
        assert_eq!((l.requests_per_second, l.burst, l.max_in_flight), (1.0, 1, 1));
    }
}
