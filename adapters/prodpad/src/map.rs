//! Canonical user <-> ProdPad REST user: which email identifies the user, the `name` string, the role from
//! Entra's app-role value, and reading a ProdPad user back as a canonical one (userName = email).

use std::collections::BTreeMap;

use adapter_api::{Error, MultiValue, Name, User, VendorUser};

use crate::model::{CreateUser, PpUser, Role};

/// The `type` of the roles of a user read from ProdPad's SCIM face: ProdPad's own role names as it holds
/// them. `RolePolicy::managed_role` reads them as unmanaged, so an update that starts from ProdPad's record
/// (a reconcile repair, the adoption of an existing account) never takes back a role the gateway did not
/// give, even one whose name is also a `role_map` value. Comparisons read the values only.
pub const HELD_ROLE_TYPE: &str = "scim-bridge:prodpad-held";

/// A user read from ProdPad's SCIM face, its roles marked as ProdPad holds them (`HELD_ROLE_TYPE`).
pub fn held(mut vu: VendorUser) -> VendorUser {
    for role in &mut vu.user.roles {
        role.kind = Some(HELD_ROLE_TYPE.into());
    }
    vu
}

/// How Entra app-role values become ProdPad roles.
#[derive(Clone, Debug, PartialEq)]
pub struct RolePolicy {
    pub map: BTreeMap<String, Role>,
    pub default: Role,
}

impl RolePolicy {
    /// The role of the user's first role value through the map (exact match first, then ignoring case),
    /// else the default. A role value missing from the map never grants more than the default.
    /// A role the gateway set from `group_roles` is a ProdPad role name already and is taken as it is.
    pub fn role_for(&self, user: &User) -> Role {
        self.managed_role(user).unwrap_or(self.default)
    }

    /// The role the gateway manages for the user: its `group_roles` role, else its first role value through
    /// the map. `None` when nothing Entra sends maps to a role: then the user's role is ProdPad's business
    /// (a create sends the default; an update, a reconcile or a disable leaves ProdPad's role alone).
    pub fn managed_role(&self, user: &User) -> Option<Role> {
        if user.roles.first().is_some_and(|r| r.kind.as_deref() == Some(HELD_ROLE_TYPE)) {
            return None;
        }
        if let Some(role) = user.roles.first().filter(|r| r.is_vendor_role()) {
            return role.value.as_deref().and_then(Role::parse);
        }
        let first = user.role_values().into_iter().next()?;
        self.map
            .get(first)
            .or_else(|| self.map.iter().find(|(k, _)| k.eq_ignore_ascii_case(first)).map(|(_, r)| r))
            .copied()
    }
}

/// The user as ProdPad's SCIM face gets it: one role entry, the ProdPad role the policy gives.
pub fn with_scim_role(user: &User, roles: &RolePolicy) -> User {
    let mut out = user.clone();
    let role = roles.role_for(user).as_str();
    out.roles = vec![MultiValue { value: Some(role.into()), primary: Some(true), ..MultiValue::default() }];
    out
}

/// Whether a string is shaped like an email address (one `@`, something on both sides, a dot after it).
pub fn looks_like_email(s: &str) -> bool {
    let s = s.trim();
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !s.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

/// The email ProdPad will know the user by. ProdPad REST has no userName of its own, so the adapter keeps
/// the invariant userName = email (what `find_user` matches on); a userName that is not an email is refused.
pub fn email_of(user: &User) -> Result<String, Error> {
    let user_name = user.user_name.trim();
    if looks_like_email(user_name) {
        return Ok(user_name.to_string());
    }
    Err(Error::invalid(format!(
        "ProdPad identifies users by email, but userName `{user_name}` is not an email address; in the Entra \
         app map userName to an email attribute (userPrincipalName when it is the mail address, or mail)"
    )))
}

/// `"<given> <family>"`, else the displayName, else nothing.
pub fn full_name(user: &User) -> Option<String> {
    let parts: Vec<&str> = [user.given_name(), user.family_name()]
        .into_iter()
        .flatten()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if !parts.is_empty() {
        return Some(parts.join(" "));
    }
    user.display_name.as_deref().map(str::trim).filter(|d| !d.is_empty()).map(str::to_string)
}

/// The `POST /v1/users` body for a canonical user.
pub fn to_create(user: &User, roles: &RolePolicy, timezone_default: Option<&str>) -> Result<CreateUser, Error> {
    Ok(CreateUser {
        email: email_of(user)?,
        name: full_name(user),
        role_type: roles.role_for(user),
        timezone: user.timezone.clone().or_else(|| timezone_default.map(str::to_string)),
    })
}

/// The attributes ProdPad keeps that differ between `before` and `after` (empty: nothing to do at ProdPad).
/// `before` may be the vendor's own record (when the gateway adopts an existing user), which carries no
/// role and whatever time zone ProdPad holds, so the role counts only when `before` has roles and the time
/// zone only when `after` names one.
pub fn rest_changes(before: &User, after: &User, roles: &RolePolicy) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let email = |u: &User| email_of(u).unwrap_or_else(|_| u.user_name.clone()).to_lowercase();
    if email(before) != email(after) {
        changed.push("email");
    }
    if full_name(before) != full_name(after) {
        changed.push("name");
    }
    if !before.roles.is_empty() && roles.role_for(before) != roles.role_for(after) {
        changed.push("role");
    }
    if after.timezone.is_some() && after.timezone != before.timezone {
        changed.push("time zone");
    }
    if before.active != after.active {
        changed.push("active");
    }
    changed
}

/// A ProdPad user as the canonical user the gateway compares with. `None` when it has no id or no email.
/// ProdPad keeps one name string; it is split at the first space into given and family name.
pub fn from_vendor(pp: &PpUser) -> Option<VendorUser> {
    let vendor_id = pp.id.clone()?;
    let email = pp.email.clone().filter(|e| !e.trim().is_empty())?;
    let mut user = User::new(email.clone());
    user.active = pp.active.unwrap_or(true);
    user.emails =
        vec![MultiValue { value: Some(email), kind: Some("work".into()), primary: Some(true), display: None }];
    let display = pp.display_name.clone().or_else(|| pp.name.clone()).filter(|d| !d.trim().is_empty());
    if let Some(display) = &display {
        let display = display.trim();
        let (given, family) = match display.split_once(' ') {
            Some((g, f)) => (g.trim(), Some(f.trim()).filter(|f| !f.is_empty())),
            None => (display, None),
        };
        user.name = Some(Name {
            given_name: Some(given.to_string()),
            family_name: family.map(str::to_string),
            ..Name::default()
        });
        user.display_name = Some(display.to_string());
    }
    user.timezone = pp.timezone.clone();
    Some(VendorUser { vendor_id, user })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, roles: &[&str]) -> User {
        let mut u = User::new(name);
        u.roles = roles.iter().map(|r| MultiValue { value: Some(r.to_string()), ..MultiValue::default() }).collect();
        u
    }

    #[test]
    fn a_vendor_role_from_group_roles_is_taken_as_it_is() {
        let policy = RolePolicy { map: BTreeMap::from([("Editor".to_string(), Role::Admin)]), default: Role::Reviewer };
        let mut u = user("a@x.com", &[]);
        u.roles = vec![MultiValue::vendor_role("Editor")];
        assert_eq!(policy.role_for(&u), Role::Editor, "not read through role_map");
        assert_eq!(policy.role_for(&user("a@x.com", &["Editor"])), Role::Admin, "an Entra value is");
        let sent = with_scim_role(&user("a@x.com", &["nobody"]), &policy);
        assert_eq!(sent.role_values(), ["Reviewer"]);
    }

    #[test]
    fn only_a_mapped_value_or_a_group_role_is_managed() {
        let policy =
            RolePolicy { map: BTreeMap::from([("Editor".to_string(), Role::Editor)]), default: Role::Reviewer };
        let mut group = user("a@x.com", &[]);
        group.roles = vec![MultiValue::vendor_role("Admin")];
        let read = held(VendorUser { vendor_id: "1".into(), user: user("a@x.com", &["Editor"]) }).user;
        let table = [
            (user("a@x.com", &["Editor"]), Some(Role::Editor)),
            (group, Some(Role::Admin)),
            (user("a@x.com", &["Nobody"]), None),
            (user("a@x.com", &[]), None),
            // ProdPad's own record: its role is ProdPad's, even when its name is a role_map value.
            (read, None),
        ];
        for (u, want) in table {
            assert_eq!(policy.managed_role(&u), want, "{:?}", u.roles);
        }
    }

    #[test]
    fn roles_follow_the_map_then_the_default() {
        let policy = RolePolicy {
            map: BTreeMap::from([("PM.Admin".to_string(), Role::Admin), ("Writer".to_string(), Role::Editor)]),
            default: Role::Reviewer,
        };
        let table = [
            (vec!["PM.Admin"], Role::Admin),
            (vec!["pm.admin"], Role::Admin),
            (vec!["Writer", "PM.Admin"], Role::Editor),
            (vec!["Admin"], Role::Reviewer),
            (vec![], Role::Reviewer),
        ];
        for (roles, want) in table {
            assert_eq!(policy.role_for(&user("a@x.io", &roles)), want, "{roles:?}");
        }
    }

    #[test]
    fn email_shapes() {
        for ok in ["a@x.io", "first.last+tag@sub.example.com"] {
            assert!(looks_like_email(ok), "{ok}");
        }
        for bad in ["", "a", "a@", "@x.io", "a@b@c.io", "a@localhost", "a b@x.io"] {
            assert!(!looks_like_email(bad), "{bad}");
        }
        let err = email_of(&User::new("jdoe")).unwrap_err();
        assert!(err.detail().contains("userName"), "{err}");
    }

    #[test]
    fn create_body_joins_names_and_falls_back_to_defaults() {
        let policy = RolePolicy { map: BTreeMap::new(), default: Role::Reviewer };
        let mut u = User::new("Ann@X.io");
        u.name = Some(Name { given_name: Some("Ann".into()), family_name: Some("Lee".into()), ..Name::default() });
        let body = to_create(&u, &policy, Some("Europe/London")).unwrap();
        assert_eq!(body.email, "Ann@X.io");
        assert_eq!(body.name.as_deref(), Some("Ann Lee"));
        assert_eq!(body.timezone.as_deref(), Some("Europe/London"));
        assert_eq!(body.role_type, Role::Reviewer);

        let mut only_display = User::new("b@x.io");
        only_display.display_name = Some(" Bo ".into());
        only_display.timezone = Some("America/New_York".into());
        let body = to_create(&only_display, &policy, Some("Europe/London")).unwrap();
        assert_eq!(body.name.as_deref(), Some("Bo"));
        assert_eq!(body.timezone.as_deref(), Some("America/New_York"));
        assert_eq!(to_create(&User::new("c@x.io"), &policy, None).unwrap().name, None);
    }

    #[test]
    fn rest_changes_ignore_what_prodpad_does_not_keep() {
        let policy = RolePolicy { map: BTreeMap::from([("PM".to_string(), Role::Admin)]), default: Role::Reviewer };
        let mut before = user("a@x.io", &["PM"]);
        before.name =
            Some(Name { given_name: Some("Ann".into()), family_name: Some("van Lee".into()), ..Name::default() });
        let mut after = before.clone();
        after.phone_numbers = vec![MultiValue { value: Some("1".into()), ..MultiValue::default() }];
        after.title = Some("CTO".into());
        after.user_name = "A@X.io".into();
        assert!(rest_changes(&before, &after, &policy).is_empty());
        after.roles.clear();
        after.active = false;
        assert_eq!(rest_changes(&before, &after, &policy), vec!["role", "active"]);

        // Adopting: the vendor's record has no roles and a display name split in two.
        let vendor = from_vendor(&PpUser {
            id: Some("1".into()),
            email: Some("a@x.io".into()),
            display_name: Some("Ann van Lee".into()),
            timezone: Some("Europe/London".into()),
            ..PpUser::default()
        })
        .unwrap();
        assert!(rest_changes(&vendor.user, &before, &policy).is_empty());
    }

    #[test]
    fn vendor_users_read_back_with_email_as_user_name() {
        let pp = PpUser {
            id: Some("7".into()),
            email: Some("a@x.io".into()),
            display_name: Some("Ann van Lee".into()),
            ..PpUser::default()
        };
        let vu = from_vendor(&pp).unwrap();
        assert_eq!(vu.vendor_id, "7");
        assert_eq!(vu.user.user_name, "a@x.io");
        assert_eq!(vu.user.work_email(), Some("a@x.io"));
        assert_eq!(vu.user.given_name(), Some("Ann"));
        assert_eq!(vu.user.family_name(), Some("van Lee"));
        assert!(vu.user.active);
        assert!(from_vendor(&PpUser { id: Some("1".into()), ..PpUser::default() }).is_none());
        assert!(from_vendor(&PpUser { email: Some("a@x.io".into()), ..PpUser::default() }).is_none());
    }
}
