//! The part of a SCIM user document that one side manages, named by a list of attribute paths (a vendor's
//! `allowed_attributes`): reading one path, projecting a document onto the list, merging the managed part
//! onto a record that also holds attributes the other side keeps (a merging PUT), and the PATCH operations
//! between two projections. The vendor-side SCIM client is built on these.

use serde_json::{json, Map, Value};

use crate::filter;
use crate::patch::PatchOp;
use crate::schema::{eq_ci, find_key_ci, split_urn};

/// One managed attribute path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManagedPath {
    /// A top-level key (`active`, `emails`, an extension URN).
    Top(String),
    /// A sub-attribute of a complex or extension attribute (`name.givenName`, `urn:...:User:department`).
    Sub(String, String),
    /// The entry of one `type` of a multi-valued attribute (`emails[type eq "work"].value`).
    Typed(String, String),
}

impl ManagedPath {
    /// Reads a path with the filter grammar. Paths come from config unchecked, so nothing fails: what the
    /// grammar cannot read is taken as one top-level key.
    pub fn parse(path: &str) -> ManagedPath {
        let Ok(parsed) = filter::parse_path(path) else {
            return ManagedPath::Top(path.to_string());
        };
        let p = parsed.path;
        if let Some(f) = parsed.filter {
            let kind = filter::eq_conjunction(&f)
                .and_then(|pairs| pairs.into_iter().next())
                .and_then(|(_, v)| v.as_str().map(str::to_string))
                .unwrap_or_default();
            return ManagedPath::Typed(p.attr, kind);
        }
        match p.urn {
            // `urn:...:User` is a whole extension; `urn:...:User:department` one of its attributes
            // (attribute names start in lower case, schema names end in the resource type).
            Some(_) => match split_urn(path.trim()) {
                (Some(urn), attr) if attr.starts_with(|c: char| c.is_ascii_lowercase()) => {
                    ManagedPath::Sub(urn.to_string(), attr.to_string())
                }
                _ => ManagedPath::Top(path.trim().to_string()),
            },
            None => match p.sub {
                Some(sub) => ManagedPath::Sub(p.attr, sub),
                None => ManagedPath::Top(p.attr),
            },
        }
    }
}

/// The entry of `obj` under `key` compared case-insensitively, with the key as spelled there.
fn entry_ci<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<(&'a String, &'a Value)> {
    obj.iter().find(|(k, _)| eq_ci(k, key))
}

/// The key `map` spells `key` with, or `key` itself when absent.
fn key_ci(map: &Map<String, Value>, key: &str) -> String {
    find_key_ci(map, key).unwrap_or_else(|| key.to_string())
}

/// The value at a managed path of a user document (e.g. to read a vendor's `department_from`). For a
/// typed path the entry of that type, else the primary, else the first, is used.
pub fn attribute(doc: &Value, path: &str) -> Option<Value> {
    let obj = doc.as_object()?;
    match ManagedPath::parse(path) {
        ManagedPath::Top(key) => entry_ci(obj, &key).map(|(_, v)| v.clone()),
        ManagedPath::Sub(top, sub) => {
            entry_ci(obj, &top)?.1.as_object().and_then(|o| entry_ci(o, &sub)).map(|(_, v)| v.clone())
        }
        ManagedPath::Typed(attr, kind) => {
            pick_typed(entry_ci(obj, &attr)?.1, &kind).and_then(|e| e.get("value").cloned())
        }
    }
}

fn pick_typed<'a>(list: &'a Value, kind: &str) -> Option<&'a Value> {
    let items = list.as_array()?;
    let is_kind = |e: &&Value| e.get("type").and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case(kind));
    let is_primary = |e: &&Value| e.get("primary").and_then(Value::as_bool) == Some(true);
    items.iter().find(is_kind).or_else(|| items.iter().find(is_primary)).or_else(|| items.first())
}

/// The managed part of a user document. `userName` is always kept.
pub fn project(doc: &Value, managed: &[String]) -> Map<String, Value> {
    let mut out = Map::new();
    let Some(obj) = doc.as_object() else { return out };
    if let Some((_, v)) = entry_ci(obj, "userName") {
        out.insert("userName".into(), v.clone());
    }
    for path in managed {
        match ManagedPath::parse(path) {
            ManagedPath::Top(key) => {
                if let Some((k, v)) = entry_ci(obj, &key) {
                    out.insert(k.clone(), v.clone());
                }
            }
            ManagedPath::Sub(top, sub) => {
                let Some((top_key, inner)) = entry_ci(obj, &top) else { continue };
                let Some((sub_key, v)) = inner.as_object().and_then(|o| entry_ci(o, &sub)) else { continue };
                let slot = out.entry(top_key.clone()).or_insert_with(|| Value::Object(Map::new()));
                if let Some(o) = slot.as_object_mut() {
                    o.insert(sub_key.clone(), v.clone());
                }
            }
            ManagedPath::Typed(attr, kind) => {
                let Some((key, list)) = entry_ci(obj, &attr) else { continue };
                let Some(value) = pick_typed(list, &kind).and_then(|e| e.get("value")) else { continue };
                out.insert(key.clone(), json!([{"type": kind, "value": value, "primary": true}]));
            }
        }
    }
    out
}

/// The PATCH operations (replace/remove only, so applying them twice has the effect of once) taking
/// `before` to `after`, both projections. Complex attributes are diffed per sub-attribute (`name.givenName`,
/// `urn:...:User:department`); multi-valued ones are replaced whole.
pub fn diff(before: &Map<String, Value>, after: &Map<String, Value>) -> Vec<PatchOp> {
    let mut ops = Vec::new();
    let sub_path = |key: &str, sub: &str| {
        let sep = if key.starts_with("urn:") { ':' } else { '.' };
        format!("{key}{sep}{sub}")
    };
    for (key, new) in after {
        let old = before.get(key);
        if old == Some(new) {
            continue;
        }
        match (old.and_then(Value::as_object), new.as_object()) {
            (old_obj, Some(new_obj)) => {
                for (sub, v) in new_obj {
                    if old_obj.and_then(|o| o.get(sub)) != Some(v) {
                        ops.push(PatchOp::replace(sub_path(key, sub), v.clone()));
                    }
                }
                for sub in old_obj.into_iter().flat_map(|o| o.keys()) {
                    if !new_obj.contains_key(sub) {
                        ops.push(PatchOp::remove(sub_path(key, sub)));
                    }
                }
            }
            _ => ops.push(PatchOp::replace(key.clone(), new.clone())),
        }
    }
    for key in before.keys() {
        if !after.contains_key(key) {
            ops.push(PatchOp::remove(key.clone()));
        }
    }
    ops
}

/// Puts the managed attributes of `wanted` onto the other side's full record `held` (the body of a
/// merging PUT), keeping everything else it holds; `before` is the managed part as it was:
/// - a complex attribute (`name`) is merged one level deep: managed sub-attributes set or removed, the
///   others kept;
/// - a multi-valued attribute whose entries are typed (`emails: [{type: work, ...}]`) has only the entries
///   of the managed types set or removed; the other entries stay (and lose `primary` when a set entry
///   claims it);
/// - anything else is replaced; what `before` had and `wanted` no longer has is removed the same way;
/// - `schemas` is the union, the read-only `meta` goes. Keys match case-insensitively and keep `held`'s
///   spelling.
pub fn merge_onto(held: &mut Map<String, Value>, before: &Map<String, Value>, wanted: &Map<String, Value>) {
    held.retain(|k, _| !k.eq_ignore_ascii_case("meta"));
    let absent = Value::Null;
    for (key, value) in wanted {
        let slot_key = key_ci(held, key);
        if key == "schemas" {
            let mut schemas: Vec<Value> = held.get(&slot_key).and_then(Value::as_array).cloned().unwrap_or_default();
            for s in value.as_array().into_iter().flatten() {
                if !schemas.contains(s) {
                    schemas.push(s.clone());
                }
            }
            held.insert(slot_key, Value::Array(schemas));
            continue;
        }
        let had = before.get(key).unwrap_or(&absent);
        match held.get_mut(&slot_key) {
            Some(slot) => merge_value(slot, had, value),
            None => {
                held.insert(slot_key, value.clone());
            }
        }
    }
    for (key, had) in before.iter().filter(|(k, _)| !wanted.contains_key(*k)) {
        let slot_key = key_ci(held, key);
        let Some(slot) = held.get_mut(&slot_key) else { continue };
        merge_value(slot, had, &absent);
        let emptied = match slot {
            Value::Object(o) => o.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Null => true,
            _ => false,
        };
        if emptied {
            held.remove(&slot_key);
        }
    }
}

/// The `type` of a multi-valued entry, lowercased.
fn entry_type(entry: &Value) -> Option<String> {
    entry.get("type").and_then(Value::as_str).map(str::to_lowercase)
}

/// Sets `held` to `wanted` for what is managed, where `had` is what was managed before; `wanted` null
/// means "no longer set".
fn merge_value(held: &mut Value, had: &Value, wanted: &Value) {
    match held {
        Value::Object(held_obj) if wanted.is_object() || (wanted.is_null() && had.is_object()) => {
            let empty = Map::new();
            let new = wanted.as_object().unwrap_or(&empty);
            for (sub, v) in new {
                let sub_key = key_ci(held_obj, sub);
                held_obj.insert(sub_key, v.clone());
            }
            for sub in had.as_object().into_iter().flat_map(|o| o.keys()).filter(|sub| !new.contains_key(*sub)) {
                let sub_key = key_ci(held_obj, sub);
                held_obj.remove(&sub_key);
            }
        }
        Value::Array(entries) if typed_entries(wanted) || (wanted.is_null() && typed_entries(had)) => {
            let new: &[Value] = wanted.as_array().map(Vec::as_slice).unwrap_or_default();
            let new_types: Vec<String> = new.iter().filter_map(entry_type).collect();
            // Types managed before and no longer set go; so do the old entries of the types set now.
            let managed: Vec<String> =
                had.as_array().into_iter().flatten().filter_map(entry_type).chain(new_types.iter().cloned()).collect();
            entries.retain(|e| entry_type(e).is_none_or(|t| !managed.contains(&t)));
            if new.iter().any(|e| e.get("primary") == Some(&Value::Bool(true))) {
                for e in entries.iter_mut() {
                    if let Some(o) = e.as_object_mut() {
                        o.remove("primary");
                    }
                }
            }
            entries.extend(new.iter().cloned());
        }
        _ if wanted.is_null() => *held = Value::Null,
        _ => *held = wanted.clone(),
    }
}

/// A non-empty list whose entries all carry a `type` (`emails[type eq "work"]`-style values).
fn typed_entries(v: &Value) -> bool {
    v.as_array().is_some_and(|a| !a.is_empty() && a.iter().all(|e| entry_type(e).is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ENTERPRISE_USER_SCHEMA, USER_SCHEMA};

    fn paths(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn ann() -> Value {
        json!({
            "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA], "userName": "a@x.com", "externalId": "ext",
            "active": true, "name": {"givenName": "Ann", "familyName": "Lee"},
            "emails": [{"value": "home@x.com", "type": "home"}, {"value": "a@x.com", "type": "work"}],
            "phoneNumbers": [{"value": "123"}],
            ENTERPRISE_USER_SCHEMA: {"department": "Sales"},
        })
    }

    #[test]
    fn paths_read_as_top_sub_or_typed() {
        let dept = format!("{ENTERPRISE_USER_SCHEMA}:department");
        let table = [
            ("active", ManagedPath::Top("active".into())),
            ("name.givenName", ManagedPath::Sub("name".into(), "givenName".into())),
            (r#"emails[type eq "work"].value"#, ManagedPath::Typed("emails".into(), "work".into())),
            (dept.as_str(), ManagedPath::Sub(ENTERPRISE_USER_SCHEMA.into(), "department".into())),
            (ENTERPRISE_USER_SCHEMA, ManagedPath::Top(ENTERPRISE_USER_SCHEMA.into())),
            ("not a path", ManagedPath::Top("not a path".into())),
        ];
        for (raw, want) in table {
            assert_eq!(ManagedPath::parse(raw), want, "{raw}");
        }
    }

    #[test]
    fn projection_keeps_only_managed_attributes() {
        let p = project(&ann(), &paths(&["active", "name.givenName", r#"emails[type eq "work"].value"#]));
        assert_eq!(
            Value::Object(p),
            json!({"userName": "a@x.com", "active": true, "name": {"givenName": "Ann"},
                   "emails": [{"type": "work", "value": "a@x.com", "primary": true}]})
        );
        let p = project(&ann(), &paths(&[&format!("{ENTERPRISE_USER_SCHEMA}:department")]));
        assert_eq!(p[ENTERPRISE_USER_SCHEMA], json!({"department": "Sales"}));
        assert!(project(&json!("not a user"), &paths(&["active"])).is_empty());
    }

    #[test]
    fn attribute_reads_paths() {
        let doc = ann();
        assert_eq!(attribute(&doc, &format!("{ENTERPRISE_USER_SCHEMA}:department")), Some(json!("Sales")));
        assert_eq!(attribute(&doc, "NAME.familyName"), Some(json!("Lee")));
        assert_eq!(attribute(&doc, r#"emails[type eq "work"].value"#), Some(json!("a@x.com")));
        assert_eq!(attribute(&doc, r#"phoneNumbers[type eq "fax"].value"#), Some(json!("123")), "the first");
        assert_eq!(attribute(&doc, "title"), None);
    }

    #[test]
    fn diff_replaces_sub_attributes_and_removes_what_went() {
        let managed = paths(&["active", "name.givenName", "name.familyName", "emails"]);
        let before = project(&ann(), &managed);
        let mut after_doc = ann();
        after_doc["active"] = json!(false);
        after_doc["name"] = json!({"givenName": "Anne"});
        after_doc.as_object_mut().unwrap().remove("emails");
        let ops: Vec<Value> = diff(&before, &project(&after_doc, &managed)).iter().map(PatchOp::to_json).collect();
        assert_eq!(
            ops,
            vec![
                json!({"op": "replace", "path": "active", "value": false}),
                json!({"op": "replace", "path": "name.givenName", "value": "Anne"}),
                json!({"op": "remove", "path": "name.familyName"}),
                json!({"op": "remove", "path": "emails"}),
            ]
        );
        assert!(diff(&before, &before).is_empty());
        let ext = |d: &str| Map::from_iter([(ENTERPRISE_USER_SCHEMA.to_string(), json!({"department": d}))]);
        assert_eq!(
            diff(&ext("Sales"), &ext("Ops")),
            vec![PatchOp::replace(format!("{ENTERPRISE_USER_SCHEMA}:department"), json!("Ops"))]
        );
    }

    #[test]
    fn merge_onto_sets_managed_attributes_and_keeps_the_others() {
        let mut held = json!({"id": "7", "userName": "a@x.com", "timezone": "Australia/Perth", "active": true,
            "name": {"givenName": "Ann", "familyName": "Lee", "honorificPrefix": "Dr"},
            "roles": [{"display": "Modeller"}], "Title": "Boss",
            "meta": {"resourceType": "User"}, "schemas": [USER_SCHEMA, "urn:x"]})
        .as_object()
        .unwrap()
        .clone();
        let before = json!({"userName": "a@x.com", "active": true, "name": {"givenName": "Ann", "familyName": "Lee"},
            "title": "Boss"});
        let wanted =
            json!({"userName": "b@x.com", "active": false, "name": {"givenName": "Anne"}, "schemas": [USER_SCHEMA]});
        merge_onto(&mut held, before.as_object().unwrap(), wanted.as_object().unwrap());
        assert_eq!(
            Value::Object(held),
            json!({"id": "7", "userName": "b@x.com", "timezone": "Australia/Perth", "active": false,
                "name": {"givenName": "Anne", "honorificPrefix": "Dr"}, "roles": [{"display": "Modeller"}],
                "schemas": [USER_SCHEMA, "urn:x"]})
        );
    }

    #[test]
    fn merge_onto_touches_only_the_managed_entries_of_typed_lists() {
        let mut held = json!({"id": "7", "userName": "a@x.com",
            "emails": [{"type": "work", "value": "old@x.com", "primary": true}, {"type": "home", "value": "me@home.net", "primary": false}],
            "phoneNumbers": [{"type": "mobile", "value": "1"}, {"type": "fax", "value": "2"}],
            "name": {"givenName": "Ann", "honorificPrefix": "Dr"}})
        .as_object()
        .unwrap()
        .clone();
        let before = json!({"userName": "a@x.com", "emails": [{"type": "work", "value": "old@x.com", "primary": true}],
            "phoneNumbers": [{"type": "mobile", "value": "1"}], "name": {"givenName": "Ann"}});
        // The work email changed; the mobile number and every managed part of the name went.
        let wanted =
            json!({"userName": "a@x.com", "emails": [{"type": "work", "value": "new@x.com", "primary": true}]});
        merge_onto(&mut held, before.as_object().unwrap(), wanted.as_object().unwrap());
        assert_eq!(
            Value::Object(held),
            json!({"id": "7", "userName": "a@x.com",
                "emails": [{"type": "home", "value": "me@home.net"}, {"type": "work", "value": "new@x.com", "primary": true}],
                "phoneNumbers": [{"type": "fax", "value": "2"}],
                "name": {"honorificPrefix": "Dr"}})
        );
    }
}
