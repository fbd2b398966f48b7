//! scim-bridge adapter for ProdPad: the per-app `Config` (validated once, errors name the key, the API key
//! never formatted), `build` and `default_limits`, and the `Adapter` impl in its two modes — `scim` (proxy to
//! ProdPad's own SCIM service through the shared SCIM client) and `rest` (create and read through
//! `/v1/users`; ProdPad's REST API cannot update or deprovision users, so those are refused, never faked).

pub mod client;
pub mod map;
pub mod model;
#[cfg(feature = "sim")]
pub mod sim;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use adapter_api::scim_client::{DeleteMode, PatchStrategy};
use adapter_api::scim_client::{ErrorMapper, ScimClient, ScimRules, VendorFailure};
use adapter_api::{
    Adapter, Capabilities, Error, ErrorKind, Outbound, OutboundConfig, ProbeReport, Result, RoleError, User, VendorUser,
};
use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::client::RestClient;
use crate::map::RolePolicy;
use crate::model::Role;

/// ProdPad's documented REST base.
pub const DEFAULT_REST_BASE: &str = "https://api.prodpad.com/v1";

/// Which ProdPad API the app talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// ProdPad's own SCIM service (higher plans): create, update, deprovision.
    Scim,
    /// ProdPad's REST API: create and read only.
    Rest,
}

/// What rest mode answers when asked to update, disable or delete a user (it cannot do any of them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestUnsupported {
    /// `Error::unsupported` with a detail telling the admin what to do by hand.
    #[default]
    Error,
    /// `Error::needs_manual_action` with the same detail: the gateway's audit log then lists the request as
    /// a manual follow-up. Nothing is recorded by the adapter and success is never reported.
    ManualQueue,
}

/// One app's ProdPad settings, as written under the app in the gateway config (the gateway's own keys,
/// `type`, `token_sha256`, `limits` and `ip_allow`, are not part of it). `Debug` is derived: the key is a
/// `SecretString`, which prints as `[REDACTED]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `scim` or `rest`. Required unless `base_url` names a SCIM base (then `scim`): the two modes differ in
    /// whether users can be deprovisioned at all, so the gateway never picks one silently.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// scim mode: ProdPad's SCIM Tenant URL (required). rest mode: default `https://api.prodpad.com/v1`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The API key of a ProdPad Admin (one of `api_key`, `api_key_env`, `api_key_file`).
    #[serde(default, deserialize_with = "adapter_api::secret::deserialize_opt")]
    pub api_key: Option<SecretString>,
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// Role of users whose first app-role value is not in `role_map` (default `Reviewer`).
    #[serde(default)]
    pub role_default: Option<String>,
    /// Entra app-role value -> `Admin` | `Editor` | `Reviewer`.
    #[serde(default)]
    pub role_map: BTreeMap<String, String>,
    /// IANA time zone sent on create when the user carries none.
    #[serde(default)]
    pub timezone_default: Option<String>,
    /// rest mode: `error` (default) or `manual_queue`.
    #[serde(default)]
    pub rest_unsupported: RestUnsupported,
    /// scim mode: forward `externalId` (default false: ProdPad's acceptance of it is undocumented).
    #[serde(default)]
    pub send_external_id: bool,
    /// scim mode: `delete` (default: `DELETE /Users/{id}`) or `disable` (`active=false`).
    #[serde(default = "default_delete_mode")]
    pub delete_mode: DeleteMode,
    /// scim mode: `passthrough` (default: PATCH with only the changed attributes) or `put_merge` (PUT of the
    /// full allowed representation).
    #[serde(default = "default_patch_strategy")]
    pub patch_strategy: PatchStrategy,
    /// scim mode: send the role (`roles: [{value: Admin|Editor|Reviewer}]`, mapped like rest mode's
    /// `role_type`). Default false: an existing deployment keeps the roles its admins set in ProdPad
    /// (turning it on lets the gateway change the roles it manages: see `scim_form`).
    #[serde(default)]
    pub scim_roles: bool,
}

fn default_delete_mode() -> DeleteMode {
    DeleteMode::Delete
}

fn default_patch_strategy() -> PatchStrategy {
    PatchStrategy::Passthrough
}

/// The validated settings an adapter runs with.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub mode: Mode,
    pub base_url: String,
    pub roles: RolePolicy,
    pub timezone_default: Option<String>,
    pub rest_unsupported: RestUnsupported,
    pub send_external_id: bool,
    pub delete_mode: DeleteMode,
    pub patch_strategy: PatchStrategy,
    pub scim_roles: bool,
}

impl Config {
    /// Parses the app's config; errors name the offending key.
    pub fn from_json(config: serde_json::Value) -> std::result::Result<Config, adapter_api::BuildError> {
        adapter_api::options::parse(config)
            .map_err(|source| adapter_api::BuildError::Options { context: "prodpad".into(), source })
    }

    /// Validates everything but the secret. Errors name the key.
    pub fn settings(&self) -> std::result::Result<Settings, SettingsError> {
        let mode = match (self.mode, self.base_url.as_deref()) {
            (Some(mode), _) => mode,
            (None, Some(url)) if url.to_ascii_lowercase().contains("api.prodpad.com/v1") => {
                return Err(SettingsError::ModeMissingForRestUrl)
            }
            (None, Some(_)) => Mode::Scim,
            (None, None) => return Err(SettingsError::ModeMissing),
        };
        let base_url = match (mode, self.base_url.as_deref()) {
            (_, Some(url)) => check_base_url(url)?,
            (Mode::Rest, None) => DEFAULT_REST_BASE.to_string(),
            (Mode::Scim, None) => return Err(SettingsError::BaseUrlRequired),
        };
        let default = match self.role_default.as_deref() {
            None => Role::Reviewer,
            Some(raw) => Role::parse(raw).ok_or_else(|| SettingsError::RoleDefault { given: raw.to_string() })?,
        };
        let mut map = BTreeMap::new();
        for (entra, target) in &self.role_map {
            let role = Role::parse(target)
                .ok_or_else(|| SettingsError::RoleMap { entra: entra.clone(), given: target.clone() })?;
            map.insert(entra.clone(), role);
        }
        if let Some(tz) = &self.timezone_default {
            if !looks_like_iana_zone(tz) {
                return Err(SettingsError::TimeZone { given: tz.clone() });
            }
        }
        Ok(Settings {
            mode,
            base_url,
            roles: RolePolicy { map, default },
            timezone_default: self.timezone_default.clone(),
            rest_unsupported: self.rest_unsupported,
            send_external_id: self.send_external_id,
            delete_mode: self.delete_mode,
            patch_strategy: self.patch_strategy,
            scim_roles: self.scim_roles,
        })
    }

    /// The API key from exactly one of its sources.
    pub fn api_key(&self) -> std::result::Result<SecretString, SettingsError> {
        Ok(adapter_api::secret::resolve(
            "api_key",
            self.api_key.clone(),
            self.api_key_env.as_deref(),
            self.api_key_file.as_deref(),
        )?)
    }
}

/// Why a ProdPad app's options cannot be used. Each names its key; `build` starts the message with
/// `prodpad: `.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "`mode` is missing and `base_url` looks like ProdPad's REST API: set `mode: rest` (create and read \
         only, cannot deprovision) or give ProdPad's SCIM Tenant URL with `mode: scim`"
    )]
    ModeMissingForRestUrl,
    #[error(
        "`mode` is missing: set `mode: scim` with `base_url` = ProdPad's SCIM Tenant URL (higher plans; can \
         deprovision), or `mode: rest` (create and read only; users must then be deprovisioned by hand in ProdPad)"
    )]
    ModeMissing,
    #[error(
        "`base_url` is required in scim mode: ProdPad's SCIM Tenant URL is not public; ask ProdPad support for \
         your account's SCIM base"
    )]
    BaseUrlRequired,
    #[error("`base_url`: `{given}` is not a URL: {reason}")]
    BaseUrlNotAUrl { given: String, reason: String },
    #[error(
        "`base_url` must use https (ProdPad refuses plain HTTP with 403; http is allowed only for \
         127.0.0.1/localhost simulators), got `{scheme}://{host}`"
    )]
    BaseUrlNotHttps { scheme: String, host: String },
    #[error("`base_url` has no host")]
    BaseUrlNoHost,
    #[error("`base_url` must not carry credentials; use `api_key`")]
    BaseUrlCredentials,
    #[error("`base_url` must not have a query or fragment")]
    BaseUrlQueryOrFragment,
    #[error("`role_default`: `{given}` is not Admin, Editor or Reviewer")]
    RoleDefault { given: String },
    #[error("`role_map.{entra}`: `{given}` is not a ProdPad role (Admin, Editor or Reviewer)")]
    RoleMap { entra: String, given: String },
    #[error("`timezone_default`: `{given}` is not an IANA time zone name (e.g. Europe/London, UTC)")]
    TimeZone { given: String },
    #[error(transparent)]
    ApiKey(#[from] adapter_api::secret::CredentialError),
    /// The key reads but cannot travel in an HTTP header; the message never repeats it.
    #[error("`api_key` holds characters that cannot be sent in an HTTP header")]
    ApiKeyHeader,
    /// `limits:` cannot be used by the outbound client.
    #[error("{}", .0.detail())]
    Limits(#[source] adapter_api::Error),
}

/// HTTPS only (ProdPad answers plain HTTP with 403), except 127.0.0.1/localhost for simulators. No
/// credentials, query or fragment in the URL. Returns the URL without a trailing slash.
fn check_base_url(raw: &str) -> std::result::Result<String, SettingsError> {
    let url = reqwest::Url::parse(raw.trim())
        .map_err(|e| SettingsError::BaseUrlNotAUrl { given: raw.to_string(), reason: e.to_string() })?;
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let local = matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]" | "::1");
    match url.scheme() {
        "https" => {}
        "http" if local => {}
        other => return Err(SettingsError::BaseUrlNotHttps { scheme: other.to_string(), host }),
    }
    if host.is_empty() {
        return Err(SettingsError::BaseUrlNoHost);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(SettingsError::BaseUrlCredentials);
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(SettingsError::BaseUrlQueryOrFragment);
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// `UTC`/`GMT`, or `Area/Location` made of letters, digits, `_`, `-`, `+`.
fn looks_like_iana_zone(tz: &str) -> bool {
    let ok_chars = tz.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'));
    ok_chars
        && (matches!(tz, "UTC" | "GMT" | "Etc/UTC")
            || (tz.contains('/') && !tz.starts_with('/') && !tz.ends_with('/') && !tz.contains("//")))
}

/// ProdPad in the vendor registry (`scim_bridge::vendors::VENDORS`).
pub struct ProdPadVendor;

/// The registry entry.
pub static VENDOR: ProdPadVendor = ProdPadVendor;

impl adapter_api::Vendor for ProdPadVendor {
    fn type_name(&self) -> &'static str {
        "prodpad"
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

/// Outbound limits for ProdPad. ProdPad publishes no rate limit but blocks "abusive" keys and IPs, and a
/// block costs the whole tenant its provisioning, so the notes' `max_rps` default of 2 is used with a burst of
/// 2 and at most 2 calls in flight. Entra's provisioning cycles are not latency-sensitive.
pub fn default_limits() -> OutboundConfig {
    OutboundConfig {
        requests_per_second: 2.0,
        burst: 2,
        max_in_flight: 2,
        queue_timeout: Duration::from_secs(10),
        ..OutboundConfig::default()
    }
}

/// The attributes scim mode forwards (the Entra gallery app's mapping); everything else is stripped.
pub const SCIM_ATTRIBUTES: [&str; 4] =
    ["emails[type eq \"work\"].value", "active", "name.givenName", "name.familyName"];

enum Backend {
    Rest(RestClient),
    Scim(ScimClient),
}

/// ProdPad-specific readings of SCIM failures: ProdPad's own words for a missing seat or a taken email,
/// and where to get a new key, over the shared client's generic mapping.
fn prodpad_scim_errors() -> ErrorMapper {
    Arc::new(|failure: &VendorFailure<'_>, base: Error| match failure.status {
        401 | 403 => {
            let body = serde_json::json!({"developer_message": failure.detail.clone().unwrap_or_default()});
            let mapped = client::map_error(failure.status, body.to_string().as_bytes());
            if mapped.kind() == &ErrorKind::Unauthorized {
                Error::unauthorized(format!("{} ({})", mapped.detail(), failure.op.name()))
            } else {
                mapped
            }
        }
        _ => base,
    })
}

/// The ProdPad adapter of one app.
pub struct ProdPad {
    app: String,
    settings: Settings,
    backend: Backend,
    outbound: Arc<Outbound>,
}

impl fmt::Debug for ProdPad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProdPad").field("app", &self.app).field("settings", &self.settings).finish()
    }
}

/// Builds the ProdPad adapter of app `app` from its config. Errors name the offending key.
pub fn build(
    app: &str,
    config: serde_json::Value,
    outbound: OutboundConfig,
) -> std::result::Result<Arc<dyn Adapter>, adapter_api::BuildError> {
    let adapter = ProdPad::new(app, Config::from_json(config)?, outbound)
        .map_err(|source| adapter_api::BuildError::Setting { context: "prodpad".into(), source: Box::new(source) })?;
    Ok(Arc::new(adapter))
}

impl ProdPad {
    pub fn new(app: &str, config: Config, outbound: OutboundConfig) -> std::result::Result<Self, SettingsError> {
        let settings = config.settings()?;
        let key = config.api_key()?;
        let auth = client::bearer(&key)?;
        let outbound = Arc::new(Outbound::new(app, outbound).map_err(SettingsError::Limits)?);
        let backend = match settings.mode {
            Mode::Rest => Backend::Rest(RestClient::new(outbound.clone(), &settings.base_url, auth)),
            Mode::Scim => {
                let mut allowed: Vec<&str> = SCIM_ATTRIBUTES.to_vec();
                if settings.send_external_id {
                    allowed.push("externalId");
                }
                if settings.scim_roles {
                    allowed.push("roles");
                }
                let header = SecretString::from(format!("Bearer {}", key.expose_secret().trim()));
                let mut rules = ScimRules::new("prodpad", settings.base_url.clone(), header, &allowed);
                rules.patch_strategy = settings.patch_strategy;
                rules.delete_mode = settings.delete_mode;
                rules.error_mapper = Some(prodpad_scim_errors());
                Backend::Scim(ScimClient::new(rules, outbound.clone()))
            }
        };
        Ok(ProdPad { app: app.to_string(), settings, backend, outbound })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The user as a SCIM create sends it: with `scim_roles`, the one ProdPad role the policy gives, the
    /// default when nothing maps (without, the shared client strips roles).
    fn scim_create_form(&self, user: &User) -> User {
        match self.settings.scim_roles {
            true => map::with_scim_role(user, &self.settings.roles),
            false => user.clone(),
        }
    }

    /// The user as an update, a comparison (reconcile) or a disable sees it: the ProdPad role only where the
    /// gateway manages it (`RolePolicy::managed_role`: a mapped app-role value or a `group_roles` role),
    /// else no role at all, so a role an admin set in ProdPad itself is neither changed nor reported.
    fn scim_form(&self, user: &User) -> User {
        match (self.settings.scim_roles, self.settings.roles.managed_role(user)) {
            (true, Some(_)) => map::with_scim_role(user, &self.settings.roles),
            _ => User { roles: Vec::new(), ..user.clone() },
        }
    }

    /// What rest mode answers to an update, disable or delete it cannot perform. Never a success.
    fn rest_refusal(&self, what: &str, hand_action: &str, vendor_id: &str, user: &User) -> Error {
        let detail = format!(
            "ProdPad's REST API cannot {what} users, so {} (ProdPad user {vendor_id}) was left unchanged: {hand_action} \
             by hand in ProdPad (Settings > Users), or switch app `{}` to `mode: scim` (ProdPad SCIM, higher plans)",
            user.user_name, self.app
        );
        match self.settings.rest_unsupported {
            RestUnsupported::Error => Error::unsupported(detail),
            RestUnsupported::ManualQueue => {
                Error::needs_manual_action(format!("manual follow-up (recorded in the gateway's audit log): {detail}"))
            }
        }
    }
}

#[async_trait]
impl Adapter for ProdPad {
    fn outbound_stats(&self) -> Option<adapter_api::OutboundStats> {
        Some(self.outbound.stats())
    }

    fn vendor(&self) -> &'static str {
        "prodpad"
    }

    fn capabilities(&self) -> Capabilities {
        match self.backend {
            Backend::Rest(_) => Capabilities {
                groups: false,
                hard_delete: false,
                find_by_user_name: true,
                find_by_email: false,
                update_users: false,
                list_users: true,
                create_reports_conflict: true,
                in_process: false,
            },
            Backend::Scim(_) => Capabilities {
                groups: false,
                hard_delete: self.settings.delete_mode == DeleteMode::Delete,
                find_by_user_name: true,
                find_by_email: false,
                update_users: true,
                list_users: true,
                create_reports_conflict: true,
                in_process: false,
            },
        }
    }

    async fn create_user(&self, user: &User) -> Result<String> {
        match &self.backend {
            Backend::Rest(rest) => {
                let body = map::to_create(user, &self.settings.roles, self.settings.timezone_default.as_deref())?;
                let created = rest.create(&body).await?;
                created.id.ok_or_else(|| Error::unavailable(None, "ProdPad's create reply carries no user id"))
            }
            Backend::Scim(scim) => scim.create(&self.scim_create_form(user)).await,
        }
    }

    /// Admin, Editor or Reviewer; scim mode only (with `scim_roles`): ProdPad's REST API sets a role at
    /// create and cannot change it, and a user joins its groups after it was created.
    fn check_role(&self, role: &str) -> std::result::Result<(), RoleError> {
        Role::parse(role).ok_or_else(|| RoleError::Refused {
            role: role.to_string(),
            reason: "is not a ProdPad role (Admin, Editor or Reviewer)",
        })?;
        match (&self.backend, self.settings.scim_roles) {
            (Backend::Scim(_), true) => Ok(()),
            (Backend::Scim(_), false) => Err(RoleError::Unsupported(
                "scim_roles is off (the default): the gateway sends ProdPad no roles; set scim_roles: true in the \
                 app's config to use group_roles",
            )),
            (Backend::Rest(_), _) => Err(RoleError::Unsupported(
                "rest mode cannot change a user's role after its creation (ProdPad's REST API has no such call); \
                 group_roles needs mode: scim",
            )),
        }
    }

    async fn get_user(&self, vendor_id: &str) -> Result<VendorUser> {
        match &self.backend {
            Backend::Rest(rest) => {
                let pp = rest.get(vendor_id).await?;
                map::from_vendor(&pp).ok_or_else(|| {
                    Error::unavailable(None, format!("ProdPad's reply for user {vendor_id} has no email"))
                })
            }
            Backend::Scim(scim) => scim.get(vendor_id).await.map(map::held),
        }
    }

    async fn find_user(&self, user_name: &str) -> Result<Option<VendorUser>> {
        match &self.backend {
            Backend::Rest(rest) => {
                if !map::looks_like_email(user_name) {
                    // ProdPad REST knows users only by email; no user can have this userName.
                    return Ok(None);
                }
                Ok(rest.find_by_email(user_name).await?.as_ref().and_then(map::from_vendor))
            }
            Backend::Scim(scim) => Ok(scim.find(user_name).await?.map(map::held)),
        }
    }

    async fn list_users(&self) -> Result<Vec<VendorUser>> {
        match &self.backend {
            // Entries without an id or email cannot be linked or compared; they are not users to manage.
            Backend::Rest(rest) => Ok(rest.list_all().await?.iter().filter_map(map::from_vendor).collect()),
            Backend::Scim(scim) => Ok(scim.list_all().await?.into_iter().map(map::held).collect()),
        }
    }

    fn drift(&self, desired: &User, held: &User) -> Vec<String> {
        match &self.backend {
            // What rest mode would change is what differs (ProdPad keeps one name string and one role).
            Backend::Rest(_) => {
                map::rest_changes(held, desired, &self.settings.roles).into_iter().map(String::from).collect()
            }
            Backend::Scim(scim) => scim.drift(&self.scim_form(desired), held),
        }
    }

    async fn update_user(&self, vendor_id: &str, before: &User, after: &User) -> Result<()> {
        match &self.backend {
            Backend::Rest(_) => {
                let changed = map::rest_changes(before, after, &self.settings.roles);
                if changed.is_empty() {
                    // Nothing ProdPad keeps differs (only attributes the gateway keeps in its shadow store).
                    return Ok(());
                }
                if before.active && !after.active {
                    return Err(self.rest_refusal("disable", "deactivate or remove the user", vendor_id, after));
                }
                let what = format!("apply the change to {}", changed.join(", "));
                Err(self.rest_refusal("update", &what, vendor_id, after))
            }
            Backend::Scim(scim) => {
                let vb = self.scim_form(before);
                let mut va = self.scim_form(after);
                // A role the gateway gave and Entra no longer maps goes back to the default, never stays.
                if va.roles.is_empty() && !vb.roles.is_empty() {
                    va = map::with_scim_role(after, &self.settings.roles);
                }
                scim.update(vendor_id, &vb, &va).await
            }
        }
    }

    async fn delete_user(&self, vendor_id: &str, last_known: &User) -> Result<()> {
        match &self.backend {
            Backend::Rest(_) => Err(self.rest_refusal("delete", "remove the user", vendor_id, last_known)),
            // Deprovisioning only deletes or disables: the role stays as ProdPad holds it.
            Backend::Scim(scim) => scim.delete(vendor_id, &User { roles: Vec::new(), ..last_known.clone() }).await,
        }
    }

    async fn probe(&self) -> Result<ProbeReport> {
        match &self.backend {
            Backend::Rest(rest) => {
                let mut report = ProbeReport {
                    notes: vec![adapter_api::Note::info(format!(
                        "rest mode: ProdPad users are created and read only; updates and deprovisioning are \
                         refused ({:?}) and must be done by hand in ProdPad",
                        self.settings.rest_unsupported
                    ))],
                    credential_fingerprint: Some(rest.key_fingerprint()),
                    ..ProbeReport::default()
                };
                match rest.list_raw(1, 1).await {
                    Ok(resp) => {
                        report.reachable = true;
                        report.credential_accepted = resp.status == 200;
                        report.rate_limit_headers = rate_limit_headers(&resp.headers);
                        if resp.status != 200 {
                            report
                                .notes
                                .push(adapter_api::Note::info(client::map_error(resp.status, &resp.body).detail()));
                        }
                    }
                    Err(e) => report.notes.push(adapter_api::Note::info(e.detail())),
                }
                Ok(report)
            }
            Backend::Scim(scim) => {
                let mut report = scim.probe().await?;
                if !self.settings.scim_roles && !self.settings.roles.map.is_empty() {
                    // An upgrade from when roles were sent by default must not go unnoticed.
                    report.notes.push(adapter_api::Note::warning(
                        "role_map is set but scim_roles is off (the default): scim mode sends ProdPad no roles and \
                         leaves them as set in ProdPad; set scim_roles: true to send the mapped ones",
                    ));
                }
                Ok(report)
            }
        }
    }
}

fn rate_limit_headers(headers: &reqwest::header::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| {
            let n = name.as_str();
            n.contains("ratelimit") || n.contains("rate-limit") || n == "retry-after"
        })
        .map(|(name, value)| (name.as_str().to_string(), value.to_str().unwrap_or("<binary>").to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(v: serde_json::Value) -> std::result::Result<Settings, String> {
        Config::from_json(v).map_err(|e| e.to_string())?.settings().map_err(|e| e.to_string())
    }

    #[test]
    fn mode_is_never_guessed_between_rest_and_scim() {
        let err = settings(json!({})).unwrap_err();
        assert!(err.contains("`mode`"), "{err}");
        let err = settings(json!({"base_url": "https://api.prodpad.com/v1"})).unwrap_err();
        assert!(err.contains("`mode`"), "{err}");
        assert_eq!(settings(json!({"base_url": "https://api.prodpad.com/api/v2/scim"})).unwrap().mode, Mode::Scim);
        let rest = settings(json!({"mode": "rest"})).unwrap();
        assert_eq!(rest.base_url, DEFAULT_REST_BASE);
        assert_eq!(rest.roles.default, Role::Reviewer);
        assert_eq!(rest.rest_unsupported, RestUnsupported::Error);
        let err = settings(json!({"mode": "scim"})).unwrap_err();
        assert!(err.contains("`base_url`"), "{err}");
    }

    #[test]
    fn base_url_must_be_https_unless_local() {
        for ok in ["https://x.example/scim/", "http://127.0.0.1:8080/v1", "http://localhost:1/v1"] {
            let s = settings(json!({"mode": "rest", "base_url": ok})).unwrap();
            assert!(!s.base_url.ends_with('/'), "{}", s.base_url);
        }
        for bad in [
            "http://api.prodpad.com/v1",
            "ftp://x.example",
            "not a url",
            "https://u:p@x.example",
            "https://x.example/?a=1",
        ] {
            let err = settings(json!({"mode": "rest", "base_url": bad})).unwrap_err();
            assert!(err.contains("`base_url`"), "{bad}: {err}");
        }
    }

    #[test]
    fn errors_name_the_key() {
        let table = [
            (json!({"mode": "soap"}), "`mode`"),
            (json!({"mode": "rest", "role_default": "Owner"}), "`role_default`"),
            (json!({"mode": "rest", "role_map": {"PM": "Boss"}}), "`role_map.PM`"),
            (json!({"mode": "rest", "timezone_default": "London time"}), "`timezone_default`"),
            (json!({"mode": "rest", "rest_unsupported": "ignore"}), "`rest_unsupported`"),
            (json!({"mode": "rest", "delete_mode": "purge"}), "`delete_mode`"),
            (json!({"mode": "rest", "send_external_id": "yes"}), "`send_external_id`"),
            (json!({"mode": "rest", "max_rps": 3}), "`max_rps`"),
        ];
        for (cfg, key) in table {
            let err = settings(cfg.clone()).unwrap_err();
            assert!(err.contains(key), "{cfg}: {err}");
        }
        let ok = settings(json!({"mode": "rest", "role_map": {"PM": "admin"}, "timezone_default": "Europe/London"}));
        assert_eq!(ok.unwrap().roles.map["PM"], Role::Admin);
    }

    #[test]
    fn the_key_is_never_formatted() {
        let cfg = Config::from_json(json!({"mode": "rest", "api_key": "pp-secret-123"})).unwrap();
        assert!(!format!("{cfg:?}").contains("pp-secret-123"));
        let adapter = ProdPad::new("pp", cfg, default_limits()).unwrap();
        assert!(!format!("{adapter:?}").contains("pp-secret-123"));
        let both = Config::from_json(json!({"mode": "rest", "api_key": "pp-secret-123", "api_key_env": "X"}));
        let err = ProdPad::new("pp", both.unwrap(), default_limits()).unwrap_err().to_string();
        assert!(err.contains("api_key") && !err.contains("pp-secret-123"), "{err}");
        let err = build("pp", json!({"mode": "rest"}), default_limits()).err().unwrap().to_string();
        assert!(err.contains("api_key"), "{err}");
    }

    #[test]
    fn default_limits_are_gentle() {
        let l = default_limits();
        assert_eq!(l.requests_per_second, 2.0);
        assert!(l.max_in_flight <= 2);
    }
}
