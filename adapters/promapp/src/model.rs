//! Promapp's SCIM user as it travels on the wire (and as the simulator stores it): numeric-string `id`,
//! `userName`, `name`, `emails`, `active`, `roles` (`display`/`value` = a Process Manager role name),
//! optional `timezone` and `externalId`. Unknown attributes are ignored when read.

use adapter_api::scim::schema::USER_SCHEMA;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromappName {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PromappEmail {
    pub value: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PromappRole {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

impl PromappRole {
    /// The role name: `display`, else `value`.
    pub fn name(&self) -> Option<&str> {
        self.display.as_deref().or(self.value.as_deref())
    }
}

fn default_true() -> bool {
    true
}

/// A Promapp SCIM user (the `id` is absent in create bodies).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromappUser {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub user_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<PromappName>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<PromappEmail>,
    #[serde(default = "default_true")]
    pub active: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<PromappRole>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

impl PromappUser {
    /// The resource as Promapp answers it: with `schemas` and `meta`.
    pub fn to_resource(&self) -> Value {
        let mut doc = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(obj) = doc.as_object_mut() {
            obj.insert("schemas".into(), serde_json::json!([USER_SCHEMA]));
            obj.insert("meta".into(), serde_json::json!({"resourceType": "User"}));
        }
        doc
    }
}
