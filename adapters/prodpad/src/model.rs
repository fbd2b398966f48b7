//! ProdPad's REST JSON, as documented (old `POST /users` page, community R client) and as the simulator
//! serves it. Everything read from the vendor is lenient: ids may be numbers or strings, unknown fields are
//! ignored, missing fields are `None` — vendor input never panics the adapter.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// ProdPad's account roles. Product Manager and Owner are per-item assignments, not account roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Role {
    Admin,
    Editor,
    Reviewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "Admin",
            Role::Editor => "Editor",
            Role::Reviewer => "Reviewer",
        }
    }

    /// Parses a role name case-insensitively.
    pub fn parse(raw: &str) -> Option<Role> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "admin" => Some(Role::Admin),
            "editor" => Some(Role::Editor),
            "reviewer" => Some(Role::Reviewer),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Role::parse(&raw).ok_or_else(|| {
            serde::de::Error::custom(format!("unknown ProdPad role `{raw}`: use Admin, Editor or Reviewer"))
        })
    }
}

/// `POST /v1/users` body.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CreateUser {
    pub email: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub role_type: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// A user as ProdPad returns it (201 reply, `GET /users/{id}`, entries of `GET /users`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct PpUser {
    #[serde(default, deserialize_with = "lenient_id")]
    pub id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default, deserialize_with = "lenient_id")]
    pub role_id: Option<String>,
    #[serde(default)]
    pub role_type: Option<String>,
    #[serde(default)]
    pub timezone: Option<String>,
    /// Not documented; when absent the user is taken as active (ProdPad lists only current users).
    #[serde(default)]
    pub active: Option<bool>,
}

impl PpUser {
    /// Reads a user from a reply body that is either the user itself or wraps it (`{"user": {...}}`).
    pub fn from_reply(body: &Value) -> Option<PpUser> {
        let inner = body.get("user").filter(|u| u.is_object()).unwrap_or(body);
        serde_json::from_value(inner.clone()).ok()
    }
}

/// One page of `GET /v1/users`: `{count|total, page, size, users: [...]}`, or a bare array.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UserPage {
    pub users: Vec<PpUser>,
    pub total: Option<u64>,
    /// Entries the reply carried, readable or not (paging decisions use this, not `users.len()`).
    pub entries: usize,
}

impl UserPage {
    /// Reads a page; entries that do not look like users are skipped, never fatal.
    pub fn from_reply(body: &Value) -> Option<UserPage> {
        let (list, total) = match body {
            Value::Array(list) => (list, None),
            Value::Object(obj) => {
                let list = obj.get("users").or_else(|| obj.get("data")).and_then(Value::as_array)?;
                let total = obj.get("total").or_else(|| obj.get("count")).and_then(Value::as_u64);
                (list, total)
            }
            _ => return None,
        };
        let users = list.iter().filter_map(|u| serde_json::from_value::<PpUser>(u.clone()).ok()).collect();
        Some(UserPage { users, total, entries: list.len() })
    }
}

/// ProdPad's error body: `{success: false, developer_message, user_message}`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct PpError {
    #[serde(default)]
    pub success: bool,
    #[serde(default)]
    pub developer_message: Option<String>,
    #[serde(default)]
    pub user_message: Option<String>,
}

impl PpError {
    /// The most useful message in a reply body, if any (developer message first).
    pub fn message(body: &[u8]) -> Option<String> {
        let err: PpError = serde_json::from_slice(body).ok()?;
        err.developer_message.or(err.user_message).filter(|m| !m.trim().is_empty())
    }
}

fn lenient_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) if !s.is_empty() => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn users_parse_with_numeric_or_string_ids_and_odd_fields() {
        let u = PpUser::from_reply(&json!({"id": 42, "email": "a@x.io", "role_id": "3", "extra": [1]})).unwrap();
        assert_eq!(u.id.as_deref(), Some("42"));
        assert_eq!(u.role_id.as_deref(), Some("3"));
        let wrapped = PpUser::from_reply(&json!({"user": {"id": "abc"}})).unwrap();
        assert_eq!(wrapped.id.as_deref(), Some("abc"));
        assert!(PpUser::from_reply(&json!({"id": 1, "email": 5})).is_none());
    }

    #[test]
    fn pages_accept_wrapped_or_bare_lists_and_skip_junk() {
        let page = UserPage::from_reply(&json!({"total": 3, "page": 1, "size": 2, "users": [{"id": 1}, "junk"]}));
        let page = page.unwrap();
        assert_eq!(page.users.len(), 1);
        assert_eq!(page.total, Some(3));
        assert_eq!(UserPage::from_reply(&json!([{"id": 1}, {"id": 2}])).unwrap().users.len(), 2);
        assert!(UserPage::from_reply(&json!("nope")).is_none());
    }

    #[test]
    fn error_messages_prefer_the_developer_message() {
        let body = br#"{"success":false,"developer_message":"dev","user_message":"user"}"#;
        assert_eq!(PpError::message(body).as_deref(), Some("dev"));
        assert_eq!(PpError::message(br#"{"user_message":"u"}"#).as_deref(), Some("u"));
        assert_eq!(PpError::message(b"<html>"), None);
    }

    #[test]
    fn roles_parse_case_insensitively() {
        assert_eq!(Role::parse(" editor "), Some(Role::Editor));
        assert_eq!(Role::parse("Owner"), None);
        assert!(serde_json::from_value::<Role>(json!("Product Manager")).is_err());
    }
}
