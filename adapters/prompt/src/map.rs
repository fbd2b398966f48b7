//! Canonical user -> what PROMPT gets: when `department_from`/`section_from` are configured, the values at
//! those Entra attribute paths go into the assumed PROMPT extension; everything else is left to the shared
//! SCIM client, which strips attributes PROMPT does not accept.

use adapter_api::scim::document::attribute;
use adapter_api::User;
use serde_json::{Map, Value};

use crate::model::PROMPT_EXT;

/// Where department and section come from, per user.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlacementSource {
    pub department_from: Option<String>,
    pub section_from: Option<String>,
}

impl PlacementSource {
    pub fn is_configured(&self) -> bool {
        self.department_from.is_some() || self.section_from.is_some()
    }
}

/// The user with the PROMPT extension filled from the configured paths (nothing added when the user has
/// no value there: PROMPT then keeps, or on create applies, the organisation's defaults).
pub fn to_vendor(user: &User, source: &PlacementSource) -> User {
    let mut out = user.clone();
    out.extra.remove(PROMPT_EXT);
    if !source.is_configured() {
        return out;
    }
    let doc = user.to_scim();
    let read = |path: &Option<String>| {
        path.as_deref().and_then(|p| attribute(&doc, p)).and_then(|v| match v {
            Value::String(s) if !s.trim().is_empty() => Some(s),
            _ => None,
        })
    };
    let mut ext = Map::new();
    if let Some(d) = read(&source.department_from) {
        ext.insert("department".into(), Value::String(d));
    }
    if let Some(s) = read(&source.section_from) {
        ext.insert("section".into(), Value::String(s));
    }
    if !ext.is_empty() {
        out.extra.insert(PROMPT_EXT.into(), Value::Object(ext));
    }
    out
}

/// A vendor user read back: the extension is PROMPT's business, not Entra's.
pub fn from_vendor(mut user: User) -> User {
    user.extra.remove(PROMPT_EXT);
    user
}

#[cfg(test)]
mod tests {
    use super::*;
    use adapter_api::Enterprise;

    #[test]
    fn placement_comes_from_configured_paths_only() {
        let mut u = User::new("a@x.com");
        u.enterprise = Some(Enterprise { department: Some("Finance".into()), ..Default::default() });
        u.extra.insert("urn:example:ext:User".into(), serde_json::json!({"team": "Payroll"}));
        let none = to_vendor(&u, &PlacementSource::default());
        assert!(!none.extra.contains_key(PROMPT_EXT));
        let source = PlacementSource {
            department_from: Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department".into()),
            section_from: Some("urn:example:ext:User:team".into()),
        };
        let v = to_vendor(&u, &source);
        assert_eq!(v.extra[PROMPT_EXT], serde_json::json!({"department": "Finance", "section": "Payroll"}));
        let missing = PlacementSource { department_from: Some("title".into()), section_from: None };
        assert!(!to_vendor(&u, &missing).extra.contains_key(PROMPT_EXT));
    }
}
