//! A user's roles as its vendor gets them: Entra's own app-role values, or the one role a mapped group
//! gives (`group_roles`). The engine, group_roles and reconcile all compute it through these two
//! functions, so a user's vendor role is the same whoever changes it.

use adapter_api::{MultiValue, User};

/// Roles as Entra sent them are app-role values, whatever `type` they carry: only the gateway marks a role
/// as the vendor's own name (`VENDOR_ROLE_TYPE`), so a mapping that sent that type could not skip
/// `role_map` (and its "never more than the default").
pub(crate) fn entra_roles_only(mut user: User) -> User {
    for role in user.roles.iter_mut().filter(|r| r.is_vendor_role()) {
        role.kind = None;
    }
    user
}

/// `user` as the vendor gets it: with a group role, that role alone (marked as a vendor role name).
pub(crate) fn with_group_role(user: User, role: Option<&str>) -> User {
    let mut user = entra_roles_only(user);
    if let Some(role) = role {
        user.roles = vec![MultiValue::vendor_role(role)];
    }
    user
}
