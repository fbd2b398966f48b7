//! PROMPT wire calls: the shared SCIM client (`adapter_api::scim_client`) with PROMPT's rules — the
//! organisation's Provisioning Authentication Code as bearer token, only the allowed attributes — and
//! PROMPT's error wording: a disable refused because the user still holds permissions or checked-out
//! documents needs an admin (`NeedsManualAction`); 401/403 point at the code and the org's switches.

use std::sync::Arc;

use adapter_api::scim_client::{DeleteMode, ErrorMapper, PatchStrategy, ScimClient, ScimOp, ScimRules, VendorFailure};
use adapter_api::{Error, Outbound};
use secrecy::{ExposeSecret, SecretString};

pub struct ClientSettings {
    pub base_url: String,
    pub users_path: String,
    pub auth_code: SecretString,
    pub allowed_attributes: Vec<String>,
    pub patch_strategy: PatchStrategy,
    pub delete_mode: DeleteMode,
    pub email_lookup: bool,
}

pub fn scim_client(settings: ClientSettings, outbound: Arc<Outbound>) -> ScimClient {
    let auth = SecretString::from(format!("Bearer {}", settings.auth_code.expose_secret()));
    let mut rules = ScimRules::new("prompt", settings.base_url, auth, &[]);
    rules.allowed_attributes = settings.allowed_attributes;
    rules.users_path = settings.users_path;
    rules.patch_strategy = settings.patch_strategy;
    rules.delete_mode = settings.delete_mode;
    rules.error_mapper = Some(error_mapper());
    rules.email_lookup = settings.email_lookup;
    ScimClient::new(rules, outbound)
}

fn error_mapper() -> ErrorMapper {
    Arc::new(|failure: &VendorFailure<'_>, base: Error| {
        let user = failure.user_name.unwrap_or("the user");
        let said = failure.detail.as_deref().unwrap_or("no reason given");
        let lower = said.to_lowercase();
        let holds = lower.contains("permission") || lower.contains("checked");
        let clash = lower.contains("already");
        let disabling = matches!(failure.op, ScimOp::Disable | ScimOp::Delete);
        match failure.status {
            409 | 400 if disabling && (holds || (failure.status == 409 && !clash)) => {
                Error::needs_manual_action(format!(
                    "PROMPT refused to disable {user}: {said}. PROMPT does not disable users who still hold \
                 permissions or checked-out documents: a PROMPT admin must reassign them (or check the documents \
                 in), then the disable can be retried"
                ))
            }
            401 => Error::unauthorized(format!(
                "{}. The Provisioning Authentication Code may have been regenerated: reveal it in PROMPT under Edit \
                 Organisation > Azure AD and update auth_code",
                base.detail()
            )),
            403 => Error::unauthorized(format!(
                "{}. Check in PROMPT under Edit Organisation > Azure AD that Azure SSO and Automated User \
                 Provisioning are both on",
                base.detail()
            )),
            _ => base,
        }
    })
}
