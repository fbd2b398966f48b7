//! Canonical user <-> what Promapp gets: Entra app-role values mapped to Process Manager role names
//! (`role_map`, unmapped values passed through), skip roles (`Default Access`, `msiam_access`) dropped,
//! the "only skip roles" rule (refused at create, held disabled after an update; on a `group_roles` app,
//! a user left with no Process Manager role at all is held disabled the same way), and role merging for
//! `role_mode: preserve`. Roles the gateway set from `group_roles` are Process Manager names already.

use std::collections::BTreeMap;

use adapter_api::{MultiValue, User};

/// True when the user holds at least one role and every one of them is a skip role (a vendor role set from
/// `group_roles` is never one: `check_role` refuses skip roles there).
pub fn only_skip_roles(user: &User, skip_roles: &[String]) -> bool {
    !user.roles.is_empty()
        && user.roles.iter().all(|r| {
            !r.is_vendor_role() && r.value.as_deref().or(r.display.as_deref()).is_none_or(|v| is_skip(v, skip_roles))
        })
}

fn is_skip(role: &str, skip_roles: &[String]) -> bool {
    skip_roles.iter().any(|s| s.eq_ignore_ascii_case(role))
}

/// Promapp role names for the user's Entra roles, skip roles dropped, duplicates removed, order kept.
pub fn vendor_role_names(user: &User, role_map: &BTreeMap<String, String>, skip_roles: &[String]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for role in &user.roles {
        let Some(value) = role.value.as_deref().or(role.display.as_deref()) else { continue };
        let name = match role.is_vendor_role() {
            true => value.to_string(),
            false if is_skip(value, skip_roles) => continue,
            false => role_map.get(value).cloned().unwrap_or_else(|| value.to_string()),
        };
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

pub fn role_entries(names: &[String]) -> Vec<MultiValue> {
    names
        .iter()
        .map(|n| MultiValue { value: Some(n.clone()), display: Some(n.clone()), ..Default::default() })
        .collect()
}

/// The user as Promapp should hold it: roles mapped to Process Manager role names, and disabled while its
/// only roles are skip roles (Promapp excludes such users; a real role coming back enables it again, but
/// never a user Entra itself disabled). Such a user's roles come out empty: the adapter sends none then.
///
/// `hold_without_role` (an app with `group_roles`, whose users get their role from groups they join after
/// they exist): a user with no Process Manager role at all is held disabled too, as Promapp requires one.
pub fn to_vendor(
    user: &User,
    role_map: &BTreeMap<String, String>,
    skip_roles: &[String],
    hold_without_role: bool,
) -> User {
    let mut out = user.clone();
    out.roles = role_entries(&vendor_role_names(user, role_map, skip_roles));
    out.active = user.active && !held(user, role_map, skip_roles, hold_without_role);
    out
}

/// Whether Promapp is to hold the user disabled whatever Entra says (see `to_vendor`).
pub fn held(user: &User, role_map: &BTreeMap<String, String>, skip_roles: &[String], hold_without_role: bool) -> bool {
    only_skip_roles(user, skip_roles) || (hold_without_role && vendor_role_names(user, role_map, skip_roles).is_empty())
}

/// `role_mode: preserve`: the vendor's current roles, minus those the gateway set before, plus those it
/// sets now. Roles given to the user in Promapp itself survive.
pub fn preserve_roles(current: &[String], before: &[String], after: &[String]) -> Vec<String> {
    let mut out: Vec<String> = current.iter().filter(|r| !before.contains(r)).cloned().collect();
    for r in after {
        if !out.contains(r) {
            out.push(r.clone());
        }
    }
    out
}

/// A vendor user read back into canonical form: Promapp role names mapped back to the Entra value that
/// maps to them (first match), else kept.
pub fn from_vendor(mut user: User, role_map: &BTreeMap<String, String>) -> User {
    for role in &mut user.roles {
        let name = role.display.clone().or_else(|| role.value.clone());
        if let Some(name) = name {
            let entra = role_map.iter().find(|(_, v)| **v == name).map(|(k, _)| k.clone());
            role.value = Some(entra.unwrap_or(name));
        }
    }
    user
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_roles(roles: &[&str]) -> User {
        let mut u = User::new("a@x.com");
        u.roles = roles.iter().map(|r| MultiValue { value: Some(r.to_string()), ..Default::default() }).collect();
        u
    }

    fn skip() -> Vec<String> {
        vec!["msiam_access".into(), "Default Access".into()]
    }

    #[test]
    fn only_skip_roles_table() {
        let table: [(&[&str], bool); 5] = [
            (&[], false),
            (&["Default Access"], true),
            (&["default access", "msiam_access"], true),
            (&["Default Access", "Editor"], false),
            (&["Editor"], false),
        ];
        for (roles, expected) in table {
            assert_eq!(only_skip_roles(&with_roles(roles), &skip()), expected, "{roles:?}");
        }
    }

    #[test]
    fn roles_are_mapped_and_skips_dropped() {
        let map = BTreeMap::from([("process.owner".to_string(), "Process Owner".to_string())]);
        let u = with_roles(&["process.owner", "Default Access", "Viewer", "process.owner"]);
        assert_eq!(vendor_role_names(&u, &map, &skip()), vec!["Process Owner", "Viewer"]);
        let back = from_vendor(to_vendor(&u, &map, &skip(), false), &map);
        assert_eq!(back.role_values(), vec!["process.owner", "Viewer"]);
    }

    #[test]
    fn only_default_access_is_held_disabled_and_never_overrides_entra() {
        let map = BTreeMap::new();
        // (Entra's active, roles) -> what Promapp holds
        let table: [(bool, &[&str], bool); 5] = [
            (true, &["Default Access"], false),
            (true, &["Editor"], true),
            (false, &["Editor"], false),
            (false, &["Default Access"], false),
            (true, &[], true),
        ];
        for (active, roles, held) in table {
            let mut u = with_roles(roles);
            u.active = active;
            assert_eq!(to_vendor(&u, &map, &skip(), false).active, held, "{active} {roles:?}");
        }
    }

    #[test]
    fn with_group_roles_no_role_at_all_is_held_disabled_too() {
        let map = BTreeMap::new();
        // (Entra's active, roles) -> what Promapp holds on a group_roles app
        let table: [(bool, &[&str], bool); 5] = [
            (true, &[], false),
            (true, &["msiam_access"], false),
            (true, &["Editor"], true),
            (false, &[], false),
            (false, &["Editor"], false),
        ];
        for (active, roles, want) in table {
            let mut u = with_roles(roles);
            u.active = active;
            assert_eq!(to_vendor(&u, &map, &skip(), true).active, want, "{active} {roles:?}");
        }
        let mut from_group = with_roles(&[]);
        from_group.roles = vec![MultiValue::vendor_role("Viewer")];
        assert!(to_vendor(&from_group, &map, &skip(), true).active, "a group's role enables it");
    }

    #[test]
    fn vendor_roles_from_group_roles_skip_the_map() {
        let map = BTreeMap::from([("Viewer".to_string(), "Process Owner".to_string())]);
        let mut u = with_roles(&["Default Access"]);
        u.roles = vec![MultiValue::vendor_role("Viewer")];
        assert!(!only_skip_roles(&u, &skip()));
        assert_eq!(vendor_role_names(&u, &map, &skip()), vec!["Viewer"]);
    }

    #[test]
    fn preserve_keeps_vendor_only_roles() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(preserve_roles(&s(&["Local", "Old"]), &s(&["Old"]), &s(&["New"])), s(&["Local", "New"]));
    }
}
