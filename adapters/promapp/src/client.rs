//! Promapp wire calls: the shared SCIM client (`adapter_api::scim_client`) with Promapp's rules — bearer
//! SCIM token, the attributes Promapp keeps, disable-only deprovisioning — and Promapp's error wording
//! (expired or revoked one-year tokens, unknown role names).

use std::sync::Arc;

use adapter_api::scim_client::{DeleteMode, ErrorMapper, PatchStrategy, ScimClient, ScimRules, VendorFailure};
use adapter_api::{Error, ErrorKind, Outbound};
use secrecy::{ExposeSecret, SecretString};

/// The attributes Promapp is known to keep (Okta/community mappings); everything else is stripped.
pub const ALLOWED_ATTRIBUTES: [&str; 6] =
    ["active", "name.givenName", "name.familyName", "emails[type eq \"work\"].value", "roles", "timezone"];

pub struct ClientSettings {
    pub base_url: String,
    pub users_path: String,
    pub token: SecretString,
    pub patch_strategy: PatchStrategy,
    pub page_size: u32,
}

pub fn scim_client(settings: ClientSettings, outbound: Arc<Outbound>) -> ScimClient {
    let auth = SecretString::from(format!("Bearer {}", settings.token.expose_secret()));
    let mut rules = ScimRules::new("promapp", settings.base_url, auth, &ALLOWED_ATTRIBUTES);
    rules.users_path = settings.users_path;
    rules.patch_strategy = settings.patch_strategy;
    rules.delete_mode = DeleteMode::Disable;
    rules.page_size = settings.page_size;
    rules.error_mapper = Some(error_mapper());
    ScimClient::new(rules, outbound)
}

fn error_mapper() -> ErrorMapper {
    Arc::new(|failure: &VendorFailure<'_>, base: Error| match (failure.status, base.kind()) {
        (401, _) => Error::unauthorized(format!(
            "{}. Promapp SCIM tokens are valid one year and any Promaster can revoke them: a Promaster creates a \
             new one under My Profile > Access Tokens (scope SCIM), then update access_token and token_expires_at",
            base.detail()
        )),
        (400, ErrorKind::Invalid) if failure.detail.as_deref().is_some_and(|d| d.to_lowercase().contains("role")) => {
            Error::invalid(format!(
                "{}. Role names must match a Process Manager role exactly: fix role_map or create the role in Promapp",
                base.detail()
            ))
        }
        _ => base,
    })
}
