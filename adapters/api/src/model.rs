//! Canonical users and groups: what a vendor needs to know about a resource, independent of SCIM syntax.
//! The gateway turns every Entra request (quirks included) into these; adapters never parse PATCH. Anything
//! Entra sends that has no field here lands in `extra`, so nothing is dropped on the way through.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The `type` of a role entry the gateway set from `group_roles`: its value is already the vendor's role
/// name, so an adapter takes it as it is instead of reading it as an Entra app-role value (`role_map`).
pub const VENDOR_ROLE_TYPE: &str = "scim-bridge:vendor-role";

/// One entry of a multi-valued attribute (emails, phoneNumbers, roles).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MultiValue {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Name {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formatted: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub middle_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub honorific_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub honorific_suffix: Option<String>,
}

impl MultiValue {
    /// A role entry naming the vendor's own role (see `VENDOR_ROLE_TYPE`).
    pub fn vendor_role(name: &str) -> Self {
        MultiValue { value: Some(name.to_string()), kind: Some(VENDOR_ROLE_TYPE.into()), primary: None, display: None }
    }

    /// Whether this role entry is a vendor role name set by the gateway (see `VENDOR_ROLE_TYPE`).
    pub fn is_vendor_role(&self) -> bool {
        self.kind.as_deref() == Some(VENDOR_ROLE_TYPE)
    }
}

/// A manager reference: the gateway's id of the manager user.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manager {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// The enterprise extension (urn:ietf:params:scim:schemas:extension:enterprise:2.0:User).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Enterprise {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employee_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_center: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub division: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<Manager>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn default_true() -> bool {
    true
}

/// A user as the gateway hands it to an adapter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub user_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(default = "default_true")]
    pub active: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Name>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nick_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<MultiValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phone_numbers: Vec<MultiValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<MultiValue>,
    // `scim::schema::ENTERPRISE_USER_SCHEMA` (serde takes only a literal here).
    #[serde(rename = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User", default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enterprise: Option<Enterprise>,
    /// Every other attribute Entra sent (addresses, custom extensions, ...), kept as JSON.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Keys of a SCIM document that belong to the gateway, not to the resource's values.
const ENVELOPE_KEYS: [&str; 3] = ["schemas", "id", "meta"];

fn strip_envelope(doc: &Value) -> Value {
    let mut doc = doc.clone();
    if let Some(obj) = doc.as_object_mut() {
        for key in ENVELOPE_KEYS {
            obj.remove(key);
        }
    }
    doc
}

/// A document that does not fit the canonical model; the message is serde's, which names the field.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// From Entra, after normalisation (a SCIM 400 `invalidValue`).
    #[error("user does not fit the User schema: {0}")]
    User(#[source] serde_json::Error),
    /// From a vendor's reply (the vendor answered something the gateway cannot read).
    #[error("the vendor's user does not fit the User schema: {0}")]
    VendorUser(#[source] serde_json::Error),
    #[error("group does not fit the Group schema: {0}")]
    Group(#[source] serde_json::Error),
}

impl User {
    /// A user with only a userName, active.
    pub fn new(user_name: impl Into<String>) -> Self {
        User {
            user_name: user_name.into(),
            external_id: None,
            active: true,
            name: None,
            display_name: None,
            nick_name: None,
            title: None,
            user_type: None,
            preferred_language: None,
            locale: None,
            timezone: None,
            emails: Vec::new(),
            phone_numbers: Vec::new(),
            roles: Vec::new(),
            enterprise: None,
            extra: Map::new(),
        }
    }

    /// Builds the canonical user from a normalised SCIM document (attribute names in schema spelling,
    /// no nulls). `schemas`, `id` and `meta` are the gateway's and are not part of the user.
    pub fn from_scim(doc: &Value) -> Result<User, ModelError> {
        serde_json::from_value(strip_envelope(doc)).map_err(ModelError::User)
    }

    /// Builds the user from a vendor's reply, which may not be normalised: nulls are dropped, `active` may be
    /// a string or a number, and ids and values may be numbers.
    pub fn from_vendor_json(doc: &Value) -> Result<User, ModelError> {
        let mut doc = strip_envelope(doc);
        tidy_vendor_value(&mut doc);
        if let Some(obj) = doc.as_object_mut() {
            if let Some(active) = obj.get("active").cloned() {
                let flag = match &active {
                    Value::String(s) => !matches!(s.trim().to_ascii_lowercase().as_str(), "false" | "0" | "no"),
                    Value::Number(n) => n.as_f64() != Some(0.0),
                    Value::Bool(b) => *b,
                    _ => true,
                };
                obj.insert("active".into(), Value::Bool(flag));
            }
            for key in ["emails", "phoneNumbers", "roles"] {
                if let Some(Value::Array(items)) = obj.get_mut(key) {
                    for item in items.iter_mut().filter_map(Value::as_object_mut) {
                        for field in ["value", "type", "display"] {
                            if let Some(Value::Number(n)) = item.get(field) {
                                let text = n.to_string();
                                item.insert(field.into(), Value::String(text));
                            }
                        }
                    }
                }
            }
        }
        serde_json::from_value(doc).map_err(ModelError::VendorUser)
    }

    /// The SCIM attributes of this user (no `schemas`, `id` or `meta`).
    pub fn to_scim(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The work email, else the primary one, else the first.
    pub fn work_email(&self) -> Option<&str> {
        pick(&self.emails, "work")
    }

    pub fn given_name(&self) -> Option<&str> {
        self.name.as_ref().and_then(|n| n.given_name.as_deref())
    }

    pub fn family_name(&self) -> Option<&str> {
        self.name.as_ref().and_then(|n| n.family_name.as_deref())
    }

    /// Role values (falling back to display) in the order Entra sent them.
    pub fn role_values(&self) -> Vec<&str> {
        self.roles.iter().filter_map(|r| r.value.as_deref().or(r.display.as_deref())).collect()
    }
}

/// The managed attributes on which a vendor's record `held` differs from Entra's `desired` (see
/// `Adapter::drift`): userName and the work email (ignoring case), `active`, given and family name, and the
/// set of role values (ignoring case and order). An attribute Entra leaves empty is not compared, so a value
/// set only in the vendor's own UI for an attribute Entra does not manage is never "repaired" away.
pub fn managed_differences(desired: &User, held: &User) -> Vec<String> {
    let mut out = Vec::new();
    let lower = |s: Option<&str>| s.map(str::to_lowercase);
    if !desired.user_name.eq_ignore_ascii_case(&held.user_name) {
        out.push("userName".to_string());
    }
    if desired.active != held.active {
        out.push("active".to_string());
    }
    if desired.given_name().is_some() && desired.given_name() != held.given_name() {
        out.push("name.givenName".to_string());
    }
    if desired.family_name().is_some() && desired.family_name() != held.family_name() {
        out.push("name.familyName".to_string());
    }
    if desired.work_email().is_some() && lower(desired.work_email()) != lower(held.work_email()) {
        out.push("emails".to_string());
    }
    let roles = |u: &User| {
        let mut r: Vec<String> = u.role_values().into_iter().map(str::to_lowercase).collect();
        r.sort();
        r.dedup();
        r
    };
    if !desired.roles.is_empty() && roles(desired) != roles(held) {
        out.push("roles".to_string());
    }
    out
}

/// Drops JSON nulls everywhere (a vendor's "no value").
fn tidy_vendor_value(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|_, x| !x.is_null());
            map.values_mut().for_each(tidy_vendor_value);
        }
        Value::Array(items) => {
            items.retain(|x| !x.is_null());
            items.iter_mut().for_each(tidy_vendor_value);
        }
        _ => {}
    }
}

/// The entry of `kind`, else the primary one, else the first.
pub fn pick<'a>(values: &'a [MultiValue], kind: &str) -> Option<&'a str> {
    values
        .iter()
        .find(|v| v.kind.as_deref().is_some_and(|k| k.eq_ignore_ascii_case(kind)))
        .or_else(|| values.iter().find(|v| v.primary == Some(true)))
        .or_else(|| values.first())
        .and_then(|v| v.value.as_deref())
}

/// A group member: `value` is the id of the member as the receiver of the struct knows it (the gateway's id
/// inside the gateway, the vendor's id once the gateway has mapped it for an adapter).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<Member>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Group {
    pub fn from_scim(doc: &Value) -> Result<Group, ModelError> {
        serde_json::from_value(strip_envelope(doc)).map_err(ModelError::Group)
    }

    pub fn to_scim(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scim::schema::{ENTERPRISE_USER_SCHEMA, USER_SCHEMA};
    use serde_json::json;

    #[test]
    fn managed_differences_name_what_the_vendor_changed() {
        let mut desired = User::new("Ann@X.com");
        desired.name =
            Some(Name { given_name: Some("Ann".into()), family_name: Some("Lee".into()), ..Name::default() });
        desired.emails =
            vec![MultiValue { value: Some("ann@x.com".into()), kind: Some("work".into()), ..MultiValue::default() }];
        desired.active = false;
        desired.title = Some("only in the shadow".into());
        let mut held = desired.clone();
        held.user_name = "ann@x.com".into();
        held.title = None;
        held.emails[0].value = Some("ANN@x.com".into());
        assert!(managed_differences(&desired, &held).is_empty(), "case and unmanaged attributes do not count");
        held.active = true;
        held.name.as_mut().unwrap().family_name = Some("Smith".into());
        held.roles = vec![MultiValue { value: Some("Admin".into()), ..MultiValue::default() }];
        assert_eq!(managed_differences(&desired, &held), ["active", "name.familyName"]);
        desired.roles = vec![MultiValue { value: Some("Reviewer".into()), ..MultiValue::default() }];
        assert_eq!(managed_differences(&desired, &held), ["active", "name.familyName", "roles"]);
    }

    #[test]
    fn entra_create_body_round_trips_without_loss() {
        let doc = json!({
            "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
            "externalId": "ext-1", "userName": "Test_User_1", "active": true,
            "emails": [{"primary": true, "type": "work", "value": "a@example.com"}],
            "meta": {"resourceType": "User"},
            "name": {"formatted": "g f", "familyName": "f", "givenName": "g"},
            "addresses": [{"type": "work", "postalCode": "1234"}],
            ENTERPRISE_USER_SCHEMA: {"department": "Sales", "manager": {"value": "m-1"}, "customThing": "x"},
            "urn:example:custom:2.0:User": {"badge": "42"}
        });
        let user = User::from_scim(&doc).unwrap();
        assert_eq!(user.user_name, "Test_User_1");
        assert_eq!(user.work_email(), Some("a@example.com"));
        assert_eq!(user.given_name(), Some("g"));
        let ent = user.enterprise.as_ref().unwrap();
        assert_eq!(ent.department.as_deref(), Some("Sales"));
        assert_eq!(ent.manager.as_ref().unwrap().value.as_deref(), Some("m-1"));
        assert_eq!(ent.extra["customThing"], "x");
        assert!(user.extra.contains_key("addresses"));
        assert!(user.extra.contains_key("urn:example:custom:2.0:User"));
        assert!(!user.extra.contains_key("meta"));

        let back = user.to_scim();
        let mut expected = doc.clone();
        for k in ["schemas", "meta"] {
            expected.as_object_mut().unwrap().remove(k);
        }
        assert_eq!(back, expected);
    }

    #[test]
    fn pick_prefers_type_then_primary_then_first() {
        let mv = |v: &str, t: Option<&str>, p: Option<bool>| MultiValue {
            value: Some(v.into()),
            kind: t.map(Into::into),
            primary: p,
            display: None,
        };
        let list = vec![mv("a", Some("home"), None), mv("b", None, Some(true)), mv("c", Some("WORK"), None)];
        assert_eq!(pick(&list, "work"), Some("c"));
        assert_eq!(pick(&list[..2], "work"), Some("b"));
        assert_eq!(pick(&list[..1], "work"), Some("a"));
        assert_eq!(pick(&[], "work"), None);
    }

    #[test]
    fn vendor_replies_are_read_leniently() {
        let doc = json!({"id": 7, "userName": "a@x", "active": "False", "emails": null,
            "roles": [{"value": 3, "display": "Editor"}, null], "name": {"givenName": null, "familyName": "F"}});
        let u = User::from_vendor_json(&doc).unwrap();
        assert!(!u.active);
        assert!(u.emails.is_empty());
        assert_eq!(u.role_values(), ["3"]);
        assert_eq!(u.family_name(), Some("F"));
        assert!(User::from_vendor_json(&json!({"active": 1, "userName": "b"})).unwrap().active);
        assert!(User::from_vendor_json(&json!({"userName": 5})).is_err());
    }

    #[test]
    fn wrong_shapes_are_reported_not_panicked() {
        assert!(User::from_scim(&json!({"userName": 5})).is_err());
        assert!(User::from_scim(&json!({"displayName": "no user name"})).is_err());
        assert!(Group::from_scim(&json!({"displayName": "g", "members": [{"value": "1"}]})).is_ok());
    }
}
