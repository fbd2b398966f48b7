//! PROMPT's SCIM user on the wire (and in the simulator): `userName`, `externalId`, `active`, `name`,
//! `emails`, plus the assumed PROMPT extension (`PROMPT_EXT`) carrying `department`/`section` when the
//! adapter is configured to choose them per user. Department and section otherwise come from the
//! organisation's settings, server-side.

use adapter_api::scim::schema::USER_SCHEMA;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// ASSUMPTION (not documented by PROMPT): an extension through which department and section can be set
/// per user. Sent only when `department_from`/`section_from` are configured.
pub const PROMPT_EXT: &str = "urn:ietf:params:scim:schemas:extension:prompt:2.0:User";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptName {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formatted: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PromptEmail {
    pub value: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<bool>,
}

/// Department and section chosen per user (the assumed PROMPT extension).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section: Option<String>,
}

fn default_true() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptUser {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub user_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(default = "default_true")]
    pub active: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<PromptName>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<PromptEmail>,
    // `PROMPT_EXT` (serde takes only a literal here).
    #[serde(rename = "urn:ietf:params:scim:schemas:extension:prompt:2.0:User", default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
}

impl PromptUser {
    /// The attributes PROMPT knows (top-level keys); others are ignored or refused by the simulator.
    pub const KNOWN: [&'static str; 8] =
        ["schemas", "id", "meta", "userName", "externalId", "active", "name", "emails"];

    pub fn to_resource(&self) -> Value {
        let mut doc = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(obj) = doc.as_object_mut() {
            obj.remove(PROMPT_EXT);
            obj.insert("schemas".into(), serde_json::json!([USER_SCHEMA]));
            obj.insert("meta".into(), serde_json::json!({"resourceType": "User"}));
        }
        doc
    }
}
