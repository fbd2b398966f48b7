//! Group → role mapping (`apps.<name>.group_roles`) for vendors that keep no groups. The gateway keeps
//! Entra's groups and memberships in its own store (group records whose doc holds `members`) and gives
//! each member the vendor role of the first `group_roles` entry naming a group it is in: the list's order
//! is the precedence. An entry names a group by its Entra objectId (`group_id`, which Entra sends as the
//! group's `externalId`) or by its displayName, exactly (`group`): only the first is safe from a group owner
//! who renames a group. So a group's externalId, once set, never changes, and no two groups share one
//! (409, audited). A user in no mapped group keeps its own `roles` (the adapter's `role_map`, or its
//! default). Groups nobody mapped are kept too (Entra provisions every assigned group) and change nothing.
//!
//! A group change that changes members' roles is sent to the vendor member by member, each audited
//! (`group-role`, intent first) and confirmed before the change is recorded. When one fails for a while
//! (429, 503, an outage, the vendor refusing the gateway's credential), the members confirmed so far keep
//! their new membership in the store, the failed one and those after it do not, and Entra gets the
//! vendor's 429/503 with `Retry-After`: its retry of the same request finds the confirmed members already
//! done and goes on with the rest. A member the vendor refuses for good (400, 409: its values, a role the
//! vendor no longer has) would stop every retry at the same place. A refused grant (the member held no
//! group role, so it keeps less than its groups give): its membership is recorded as Entra sent it, its
//! `group-role` entry is `needs_manual_action` (a person fixes it at the vendor; reconcile and the user's
//! next change set the role again), and the rest of the members go on. A group role the vendor refuses to
//! take back (any refused change away from a group role, to a lower, higher or no role) would leave the
//! member a role Entra took away: the member is disabled at the vendor instead, audited; if the vendor
//! refuses that too, the change stops like an outage (503 with `Retry-After`). When every member the vendor was asked about refused, the change stops with the
//! vendor's refusal and records none of them. A create is all or
//! nothing (a half-recorded group would answer Entra's retried POST with a uniqueness error). Locks: the
//! app's group lock (one group change per app at a time, so every group stays as it is meanwhile), then
//! the id locks of the group and of every user whose role the change alters, in stripe order, then names:
//! a group change cannot deadlock with another or with a user change (which holds one id lock only), and an
//! unmapped group's changes lock no user at all.

use std::collections::BTreeSet;

use adapter_api::{Adapter, ErrorKind, User};
use axum::http::StatusCode;
use serde_json::{json, Map, Value};

use crate::config::AppConfig;
use crate::gateway::{now, stamp, stamp_since, store_err, App, Ctx, Gateway, GroupEdit, Reply, ScimResult};
use crate::outcome::Outcome;
use crate::roles::{entra_roles_only, with_group_role};
use crate::scim::error::ScimError;
use crate::scim::patch;
use crate::scim::schema::ResourceKind;
use crate::store::{AuditEntry, Kind, Record, StoreError};

/// Why an app's `group_roles` cannot work with its adapter. The message says what; `key` says where,
/// relative to `apps.<name>` (the caller adds the file and the app).
#[derive(Debug, thiserror::Error)]
pub enum GroupRolesError {
    #[error("the {vendor} vendor keeps groups itself; group_roles is for vendors without groups")]
    VendorKeepsGroups { vendor: &'static str },
    /// Entry `index` names a role the adapter cannot give.
    #[error("{source}")]
    Role {
        index: usize,
        #[source]
        source: adapter_api::RoleError,
    },
}

impl GroupRolesError {
    /// The key the error is about, relative to `apps.<name>`.
    pub fn key(&self) -> String {
        match self {
            GroupRolesError::VendorKeepsGroups { .. } => "group_roles".into(),
            GroupRolesError::Role { index, .. } => format!("group_roles[{index}].role"),
        }
    }
}

/// Checks an app's `group_roles` against its adapter at start-up.
pub(crate) fn check_config(app: &AppConfig, adapter: &dyn Adapter) -> Result<(), GroupRolesError> {
    if app.group_roles.is_empty() {
        return Ok(());
    }
    if adapter.capabilities().groups {
        return Err(GroupRolesError::VendorKeepsGroups { vendor: adapter.vendor() });
    }
    for (index, entry) in app.group_roles.iter().enumerate() {
        adapter.check_role(entry.role.trim()).map_err(|source| GroupRolesError::Role { index, source })?;
    }
    Ok(())
}

/// The member ids of a group document, in order, each once.
fn member_ids(doc: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in doc.get("members").and_then(Value::as_array).into_iter().flatten() {
        if let Some(id) = m.get("value").and_then(Value::as_str) {
            if !out.iter().any(|x| x == id) {
                out.push(id.to_string());
            }
        }
    }
    out
}

fn is_member(doc: &Value, user_id: &str) -> bool {
    doc.get("members")
        .and_then(Value::as_array)
        .is_some_and(|list| list.iter().any(|m| m.get("value").and_then(Value::as_str) == Some(user_id)))
}

fn external_id(doc: &Value) -> Option<&str> {
    doc.get("externalId").and_then(Value::as_str)
}

/// A group's externalId when it has one (blank counts as none).
fn set_external_id(doc: &Value) -> Option<&str> {
    external_id(doc).filter(|e| !e.trim().is_empty())
}

/// Whether two externalIds are the same Entra objectId (the case of its hex digits aside).
fn same_external_id(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// A group's externalId is its Entra objectId, which `group_id` entries trust: it never changes once set,
/// and no two groups share it. Otherwise anyone who may edit a group (or create one) could give its
/// members a role mapped by id. `old` is the group's stored document (`None` for a create), `groups` the
/// app's stored groups.
fn check_external_id(old: Option<&Record>, doc: &Value, groups: &[Record]) -> ScimResult<()> {
    let new = set_external_id(doc);
    if let Some(was) = old.and_then(|r| set_external_id(&r.doc)) {
        if new.is_none_or(|n| !same_external_id(was, n)) {
            return Err(ScimError::new(
                StatusCode::CONFLICT,
                None,
                format!(
                    "group '{}' has externalId '{was}' (its Entra objectId, which group_roles group_id entries trust); \
                     a change to {} is refused: an objectId never changes. A person must check the group: delete it \
                     in the app (or unassign it) and let Entra provision it again",
                    old.map(Record::name).unwrap_or_default(),
                    new.map(|n| format!("'{n}'")).unwrap_or_else(|| "none".into())
                ),
            ));
        }
        return Ok(());
    }
    let Some(new) = new else { return Ok(()) };
    let own_id = old.map(|r| r.id.as_str());
    match groups
        .iter()
        .find(|g| Some(g.id.as_str()) != own_id && set_external_id(&g.doc).is_some_and(|e| same_external_id(e, new)))
    {
        Some(other) => Err(ScimError::uniqueness(format!(
            "externalId '{new}' is already group '{}''s (an Entra objectId names one group)",
            other.name()
        ))),
        None => Ok(()),
    }
}

/// The role `group_roles` gives `user_id` when the app's groups are `groups`: the first entry naming a
/// group the user is in.
pub(crate) fn role_from_groups<'a>(app: &'a App, groups: &[Record], user_id: &str) -> Option<&'a str> {
    app.group_roles
        .iter()
        .find(|entry| groups.iter().any(|g| entry.names(g.name(), external_id(&g.doc)) && is_member(&g.doc, user_id)))
        .map(|entry| entry.role.trim())
}

/// The members among `candidates` whose role differs between the groups `before` and `after`: the only
/// users a group change must lock (the app's group lock keeps every group as it is meanwhile).
fn role_changes<'a>(app: &App, candidates: &'a [String], before: &[Record], after: &[Record]) -> Vec<(Kind, &'a str)> {
    candidates
        .iter()
        .filter(|u| role_from_groups(app, before, u) != role_from_groups(app, after, u))
        .map(|u| (Kind::User, u.as_str()))
        .collect()
}

/// The position of the first `group_roles` entry naming the group `doc` (its precedence), if any.
fn entry_of(app: &App, doc: &Value) -> Option<usize> {
    let name = doc.get("displayName").and_then(Value::as_str).unwrap_or_default();
    app.group_roles.iter().position(|e| e.names(name, external_id(doc)))
}

/// The members' role updates of one group change.
#[derive(Default)]
struct RoleUpdates {
    /// Users whose part of the change stands: confirmed by the vendor, or needing no vendor call.
    confirmed: BTreeSet<String>,
    /// Vendor updates confirmed.
    updated: usize,
    /// Members whose grant the vendor refused for good (recorded, left to a person).
    refused: usize,
    /// Members disabled at the vendor because it refused to take their group role back.
    disabled: usize,
    /// Every member the vendor was asked about refused: the change stopped with that refusal.
    everyone_refused: bool,
    /// The first failure (the members after it were not tried).
    failure: Option<ScimError>,
}

impl RoleUpdates {
    /// The group entry's outcome when the change stopped: a person's when every member was refused.
    fn outcome(&self) -> Outcome {
        match self.everyone_refused {
            true => Outcome::NEEDS_MANUAL_ACTION,
            false => Outcome::Partial,
        }
    }

    fn summary(&self, affected: usize) -> String {
        let mut out =
            format!("{} member role update(s) confirmed by the vendor, {affected} member(s) affected", self.updated);
        if self.refused > 0 {
            out.push_str(&format!(
                "; {} member(s) refused by the vendor: recorded, a person must fix them (see their group-role \
                 entries)",
                self.refused
            ));
        }
        if self.disabled > 0 {
            out.push_str(&format!(
                "; {} member(s) disabled at the vendor: their group role could not be taken back (see their \
                 group-role entries)",
                self.disabled
            ));
        }
        out
    }
}

/// A vendor refusal that a retry of the same request meets again (the member's values, a role the vendor
/// lacks, a clash at the vendor): the member is left to a person instead of stopping the group change.
/// Throttling, outages and a refused credential stop it (they pass, or the whole app waits for them).
/// Only the member's own refusals: `Unsupported` and the rest say something of every member, so they stop.
fn refused_for_good(kind: &ErrorKind) -> bool {
    matches!(kind, ErrorKind::Invalid | ErrorKind::Conflict)
}

/// `Retry-After` when the vendor refused both a member's role change and its disable: a person must act,
/// so Entra need not come back soon.
const DISABLE_REFUSED_RETRY_AFTER: u64 = 300;

/// The group document to record when only the `confirmed` members' part of the change stands: the old
/// document with the confirmed additions and removals applied (never the rename or other values).
fn partial_doc(before: &Value, after: &Value, confirmed: &BTreeSet<String>) -> Value {
    let old = member_ids(before);
    let entry_of = |doc: &Value, id: &str| {
        doc.get("members")
            .and_then(Value::as_array)
            .and_then(|l| l.iter().find(|m| m.get("value").and_then(Value::as_str) == Some(id)).cloned())
    };
    let mut members: Vec<Value> = Vec::new();
    for id in member_ids(after) {
        if old.contains(&id) || confirmed.contains(&id) {
            members.extend(entry_of(after, &id));
        }
    }
    for id in old.iter().filter(|id| !is_member(after, id) && !confirmed.contains(*id)) {
        members.extend(entry_of(before, id));
    }
    let mut doc = before.clone();
    if let Some(obj) = doc.as_object_mut() {
        match members.is_empty() {
            true => obj.remove("members"),
            false => obj.insert("members".into(), Value::Array(members)),
        };
    }
    doc
}

impl Gateway {
    // ---- every store call of this module (one place to make async when the store becomes async)

    /// The app's stored groups (one store read).
    async fn stored_groups(&self, app: &App) -> ScimResult<Vec<Record>> {
        self.store.list(&app.name, Kind::Group).await.map_err(store_err)
    }

    async fn stored_user(&self, app: &App, id: &str) -> ScimResult<Option<Record>> {
        self.store.get(&app.name, Kind::User, id).await.map_err(store_err)
    }

    async fn group_named(&self, app: &App, name: &str) -> ScimResult<Option<Record>> {
        self.store.find_by_name(&app.name, Kind::Group, name).await.map_err(store_err)
    }

    /// Completes an audit entry on its own; a failure is logged (the change it records already happened).
    async fn write_audit(&self, audit: &AuditEntry) {
        if let Err(e) = self.store.audit(audit).await {
            tracing::error!(error = %e, "cannot write a group_roles audit entry");
        }
    }

    /// Writes (`Some`) or removes (`None`) the group record with its audit entry, atomically.
    async fn record_group(
        &self,
        group: Option<&Record>,
        removed: &Record,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        match group {
            Some(rec) => self.store.put(rec, audit).await,
            None => self.store.remove(removed, false, audit).await,
        }
    }

    // ---- the rest reads and writes through the functions above

    /// The app's groups when it maps groups to roles, else none (for passes over many users).
    pub(crate) async fn role_groups(&self, app: &App) -> ScimResult<Vec<Record>> {
        match Self::maps_groups(app) {
            true => self.stored_groups(app).await,
            false => Ok(Vec::new()),
        }
    }

    /// The user of record `user_id` as the vendor should hold it: Entra's values with its group role.
    pub(crate) async fn vendor_user(&self, app: &App, user_id: &str, user: User) -> ScimResult<User> {
        if !Self::maps_groups(app) {
            return Ok(entra_roles_only(user));
        }
        let groups = self.stored_groups(app).await?;
        Ok(with_group_role(user, role_from_groups(app, &groups, user_id)))
    }

    /// Each affected member whose role differs between the groups `before` and `after` gets it from the
    /// vendor, in order, each audited; stops at the first failure. A role the vendor refuses for good is
    /// left to a person when it was a grant (the member held no group role: it keeps less than its groups
    /// give); when it would take a group role back (the member held one), the member is disabled at the
    /// vendor instead, since keeping the higher role would let it hold more than Entra says, and if even
    /// the disable fails the change stops like an outage. When every member the vendor was asked about
    /// refused, the change stops with the vendor's refusal (nothing of it was done).
    async fn set_member_roles(
        &self,
        app: &App,
        ctx: &Ctx,
        affected: &[String],
        before: &[Record],
        after: &[Record],
    ) -> RoleUpdates {
        let mut out = RoleUpdates::default();
        // Members the vendor was asked about, and the grants it refused (their entries are written once the
        // change's fate is known: recorded for a person, or stopped with everyone refused).
        let mut tried = 0usize;
        let mut refusals: Vec<(String, AuditEntry, ScimError)> = Vec::new();
        for uid in affected {
            let (was, will) = (role_from_groups(app, before, uid), role_from_groups(app, after, uid));
            if was == will {
                out.confirmed.insert(uid.clone());
                continue;
            }
            let rec = match self.stored_user(app, uid).await {
                Ok(Some(rec)) => rec,
                // Deleted meanwhile: no vendor role to set.
                Ok(None) => {
                    out.confirmed.insert(uid.clone());
                    continue;
                }
                Err(err) => {
                    out.failure = Some(err);
                    break;
                }
            };
            let Ok(user) = User::from_scim(&rec.doc) else {
                out.failure = Some(ScimError::invalid_value(format!("stored user {uid} does not fit the User schema")));
                break;
            };
            let (vb, va) = (with_group_role(user.clone(), was), with_group_role(user, will));
            let mut audit = self.audit_of(app, ctx, &rec, "group-role");
            audit.before = Some(json!({"roles": vb.roles}));
            audit.after = Some(json!({"roles": va.roles}));
            if let Err(err) = self.begin_change(app, &mut audit).await {
                out.failure = Some(err);
                break;
            }
            tried += 1;
            let mark = crate::gateway::call_mark();
            let result = app.adapter.update_user(&rec.vendor_id, &vb, &va).await;
            stamp_since(&mut audit, mark);
            match result {
                Ok(()) => {
                    let mut detail = match will {
                        Some(role) => format!("role {role} from its groups (group_roles)"),
                        None => "in no mapped group: its own roles".to_string(),
                    };
                    match (app.adapter.held_disabled_reason(&vb), app.adapter.held_disabled_reason(&va)) {
                        (None, Some(reason)) => detail.push_str(&format!("; {reason}")),
                        (Some(_), None) if va.active => detail.push_str("; enabled again at the vendor"),
                        _ => {}
                    }
                    audit.detail = Some(detail);
                    audit.status = 200;
                    self.write_audit(&audit).await;
                    out.confirmed.insert(uid.clone());
                    out.updated += 1;
                }
                Err(e) if matches!(e.kind(), ErrorKind::NotFound) => {
                    audit.outcome = Outcome::from(&e);
                    audit.status = 200;
                    audit.detail = Some("the vendor no longer has this user; its membership is recorded".into());
                    self.write_audit(&audit).await;
                    out.confirmed.insert(uid.clone());
                }
                // A grant refused for good: the member holds less than its groups give; a person fixes it.
                Err(e) if refused_for_good(e.kind()) && was.is_none() => {
                    let err = self.vendor_error(app, &e);
                    audit.outcome = Outcome::NEEDS_MANUAL_ACTION;
                    audit.status = err.status.as_u16();
                    audit.detail = Some(format!("{} ({})", err.detail, e.kind_name()));
                    refusals.push((uid.clone(), audit, err));
                }
                // Any refused change away from a group role: the member would keep a role Entra took away.
                Err(e) if refused_for_good(e.kind()) => {
                    let err = self.vendor_error(app, &e);
                    audit.outcome = Outcome::NEEDS_MANUAL_ACTION;
                    audit.status = err.status.as_u16();
                    audit.detail = Some(format!(
                        "{} ({}); the vendor would keep its group role {}: disabling it at the vendor instead",
                        err.detail,
                        e.kind_name(),
                        was.unwrap_or_default()
                    ));
                    self.write_audit(&audit).await;
                    match self.disable_member(app, ctx, &rec, &vb, &err).await {
                        Ok(()) => {
                            out.confirmed.insert(uid.clone());
                            out.disabled += 1;
                        }
                        Err(stop) => {
                            out.failure = Some(stop);
                            break;
                        }
                    }
                }
                Err(e) => {
                    let err = self.vendor_error(app, &e);
                    self.audit_failure(audit, &err, Some(&e)).await;
                    out.failure = Some(err);
                    break;
                }
            }
        }
        let everyone_refused = out.failure.is_none() && !refusals.is_empty() && refusals.len() == tried;
        for (uid, mut audit, err) in refusals {
            let detail = audit.detail.take().unwrap_or_default();
            audit.detail = Some(match everyone_refused {
                true => format!(
                    "{detail}; every member the vendor was asked about was refused, so the group change stopped and \
                     was not recorded: fix this user (or the role) at the vendor, then Entra's retry goes through"
                ),
                false => {
                    out.confirmed.insert(uid);
                    out.refused += 1;
                    format!(
                        "{detail}; the group membership is recorded as Entra sent it and the group's other members \
                         went on: fix this user at the vendor, then reconcile (or the user's next change) sets its role"
                    )
                }
            });
            self.write_audit(&audit).await;
            if everyone_refused && out.failure.is_none() {
                let mut err = err;
                err.detail = format!("{}; the vendor refused every member it was asked about", err.detail);
                out.failure = Some(err);
                out.everyone_refused = true;
            }
        }
        out
    }

    /// Disables at the vendor a member whose group role the vendor refused to take back (`refusal`: any
    /// refused change away from a group role, lower, higher or none), audited as its own change; the roles
    /// stay as the vendor holds them. If the vendor refuses that too, the group change stops like an outage
    /// (503 with `Retry-After`, or the vendor's own 429/503): answering 2xx would leave the member with a
    /// role Entra took away.
    async fn disable_member(
        &self,
        app: &App,
        ctx: &Ctx,
        rec: &Record,
        held: &User,
        refusal: &ScimError,
    ) -> ScimResult<()> {
        let disabled = User { active: false, ..held.clone() };
        let mut audit = self.audit_of(app, ctx, rec, "group-role");
        audit.before = Some(json!({"active": held.active, "roles": held.roles}));
        audit.after = Some(json!({"active": false, "roles": held.roles}));
        self.begin_change(app, &mut audit).await?;
        let mark = crate::gateway::call_mark();
        let result = app.adapter.update_user(&rec.vendor_id, held, &disabled).await;
        stamp_since(&mut audit, mark);
        match result {
            Ok(()) => {
                // Still a person's: the needs-a-person list keeps the user until a later change of it succeeds.
                audit.outcome = Outcome::NEEDS_MANUAL_ACTION;
                audit.status = 200;
                audit.detail = Some(format!(
                    "disabled: its group role could not be taken back ({}); fix its role at the vendor, then \
                     reconcile (or the user's next change) enables it with the role its groups give",
                    refusal.detail
                ));
                self.write_audit(&audit).await;
                Ok(())
            }
            Err(e) => {
                let err = self.vendor_error(app, &e);
                let stop = match err.is_retryable() {
                    true => err.clone(),
                    false => ScimError::unavailable(
                        DISABLE_REFUSED_RETRY_AFTER,
                        format!(
                            "{}: the vendor refused to take back a group role ({}) and to disable the user ({}); a \
                             person must fix this user at the vendor",
                            app.name, refusal.detail, err.detail
                        ),
                    ),
                };
                self.audit_failure(audit, &stop, Some(&e)).await;
                Err(stop)
            }
        }
    }

    /// Refuses members that are not users of this app (nested groups included: Entra does not provision
    /// them, and a group cannot hold a vendor role).
    async fn check_members(&self, app: &App, ids: &[String]) -> ScimResult<()> {
        for id in ids {
            if self.stored_user(app, id).await?.is_none() {
                return Err(ScimError::invalid_value(format!(
                    "member {id} is not a user provisioned through this app (groups map to roles; nested groups \
                     are not kept)"
                )));
            }
        }
        Ok(())
    }

    /// The failed part of a group change, said to Entra and in the group's audit entry.
    fn partial_failure(err: ScimError, updates: &RoleUpdates, affected: usize) -> ScimError {
        let mut err = err;
        err.detail = match updates.everyone_refused {
            true => format!(
                "{}; {} of {affected} affected member(s) needed no vendor call and are recorded, the rest not: a \
                 person must fix them at the vendor (see their group-role entries)",
                err.detail,
                updates.confirmed.len()
            ),
            false => format!(
                "{}; {} of {affected} affected member(s) done and recorded, the rest not: retry the request",
                err.detail,
                updates.confirmed.len()
            ),
        };
        err
    }

    pub(crate) async fn mapped_group_create(&self, app: &App, ctx: &Ctx, body: Value) -> ScimResult<Reply> {
        let values = Self::incoming_doc(Kind::Group, body)?;
        let name = values.get("displayName").and_then(Value::as_str).unwrap_or_default().to_string();
        let doc_values = Value::Object(values.clone());
        let members = member_ids(&doc_values);
        let _serial = self.locks.app_groups(&app.name).await.map_err(store_err)?;
        // Only a mapped group's members change role (the app's group lock keeps the others as they are).
        let keys: Vec<(Kind, &str)> = match entry_of(app, &doc_values) {
            Some(_) => members.iter().map(|m| (Kind::User, m.as_str())).collect(),
            None => Vec::new(),
        };
        let _ids = self.locks.ids_in_order(&app.name, &keys).await.map_err(store_err)?;
        let _name = self.locks.name(&app.name, Kind::Group, &name).await.map_err(store_err)?;
        let mut audit = self.audit(app, ctx, Kind::Group, "create");
        audit.name = Some(name.clone());
        audit.after = Some(doc_values.clone());
        if self.group_named(app, &name).await?.is_some() {
            let err = ScimError::uniqueness(format!("displayName '{name}' already exists"));
            self.audit_failure(audit, &err, None).await;
            return Err(err);
        }
        let before = self.stored_groups(app).await?;
        self.audited(check_external_id(None, &doc_values, &before), &audit).await?;
        self.audited(self.check_members(app, &members).await, &audit).await?;
        let id = uuid::Uuid::new_v4().to_string();
        let at = now();
        let mut doc = Map::new();
        doc.insert("schemas".into(), json!([ResourceKind::Group.core_schema_urn()]));
        doc.insert("id".into(), json!(id));
        doc.extend(values);
        doc.insert(
            "meta".into(),
            json!({"resourceType": "Group", "created": at, "lastModified": at, "version": "W/\"1\""}),
        );
        let record = Record {
            app: app.name.clone(),
            kind: Kind::Group,
            id: id.clone(),
            vendor_id: format!("gateway-group:{id}"),
            doc: Value::Object(doc),
            created: at.clone(),
            modified: at,
            version: 1,
        };
        let mut after = before.clone();
        after.push(record.clone());
        let updates = self.set_member_roles(app, ctx, &members, &before, &after).await;
        if let Some(err) = updates.failure.clone() {
            // All or nothing: the group is not recorded; the members' confirmed updates are in the audit log
            // and Entra's retry (or reconcile) brings the rest.
            let mut err = err;
            err.detail = match updates.everyone_refused {
                true => {
                    format!("{}; the group was not recorded: a person must fix the members at the vendor", err.detail)
                }
                false => format!("{}; the group was not recorded: retry the request", err.detail),
            };
            audit.outcome = updates.outcome();
            audit.status = err.status.as_u16();
            audit.detail = Some(format!("{} ({})", err.detail, updates.summary(members.len())));
            stamp(&mut audit);
            self.write_audit(&audit).await;
            return Err(err);
        }
        audit.resource_id = Some(id);
        audit.after = Some(record.doc.clone());
        audit.status = 201;
        stamp(&mut audit);
        audit.detail = Some(updates.summary(members.len()));
        if let Err(e) = self.record_group(Some(&record), &record, &audit).await {
            return Err(self.store_err_after_vendor(audit, e).await);
        }
        let body = self.with_location(ctx, Kind::Group, &record.doc);
        let location = body.pointer("/meta/location").and_then(Value::as_str).map(String::from);
        Ok(Reply { status: StatusCode::CREATED, body: Some(body), location })
    }

    pub(crate) async fn mapped_group_update(
        &self,
        app: &App,
        ctx: &Ctx,
        id: &str,
        edit: GroupEdit,
    ) -> ScimResult<Reply> {
        let op = match edit {
            GroupEdit::Patch(_) => "update",
            GroupEdit::Replace(_) => "replace",
        };
        let _serial = self.locks.app_groups(&app.name).await.map_err(store_err)?;
        // The group cannot change while the app's group lock is held: its members decide which users to lock.
        let rec = self.load(app, Kind::Group, id).await?;
        let refusal = self.audit_of(app, ctx, &rec, op);
        let mut doc = rec.doc.clone();
        match edit {
            GroupEdit::Patch(body) => {
                let ops = self
                    .audited(
                        patch::parse_patch(&body).map_err(|e| ScimError::bad_request(e.scim_type, e.detail)),
                        &refusal,
                    )
                    .await?;
                let applied = patch::apply(ResourceKind::Group, &mut doc, &ops)
                    .map_err(|e| ScimError::bad_request(e.scim_type, e.detail));
                self.audited(applied, &refusal).await?;
            }
            GroupEdit::Replace(body) => {
                let values = self.audited(Self::incoming_doc(Kind::Group, body), &refusal).await?;
                let mut fresh = Map::new();
                fresh.insert("schemas".into(), json!([ResourceKind::Group.core_schema_urn()]));
                fresh.insert("id".into(), json!(id));
                fresh.extend(values);
                if let Some(meta) = rec.doc.get("meta") {
                    fresh.insert("meta".into(), meta.clone());
                }
                doc = Value::Object(fresh);
            }
        }
        if crate::gateway::values_of(&doc) == crate::gateway::values_of(&rec.doc) {
            return Ok(self.group_reply(ctx, op, &rec.doc));
        }
        let new_name = crate::store::name_of(Kind::Group, &doc).to_string();
        if new_name.trim().is_empty() {
            return self.audited(Err(ScimError::invalid_value("displayName must not be empty")), &refusal).await;
        }
        let before = self.stored_groups(app).await?;
        self.audited(check_external_id(Some(&rec), &doc, &before), &refusal).await?;
        let (old_members, new_members) = (member_ids(&rec.doc), member_ids(&doc));
        // Which mapping entry the group matches, not which role: a rename (or a new externalId) between two
        // entries that give the same role still moves the group in the order of precedence, and a member of
        // another group between them changes role.
        let renamed_role = entry_of(app, &rec.doc) != entry_of(app, &doc);
        let affected: Vec<String> = new_members
            .iter()
            .filter(|m| renamed_role || !old_members.contains(m))
            .chain(old_members.iter().filter(|m| !new_members.contains(m)))
            .cloned()
            .collect();
        let after: Vec<Record> = before
            .iter()
            .map(|g| match g.id == rec.id {
                true => Record { doc: doc.clone(), ..g.clone() },
                false => g.clone(),
            })
            .collect();
        let mut keys: Vec<(Kind, &str)> = vec![(Kind::Group, id)];
        keys.extend(role_changes(app, &affected, &before, &after));
        let _ids = self.locks.ids_in_order(&app.name, &keys).await.map_err(store_err)?;
        let renamed = !new_name.eq_ignore_ascii_case(rec.name());
        let _name = match renamed {
            true => Some(self.locks.name(&app.name, Kind::Group, &new_name).await.map_err(store_err)?),
            false => None,
        };
        if renamed {
            if let Some(other) = self.group_named(app, &new_name).await? {
                if other.id != rec.id {
                    let err = ScimError::uniqueness(format!("displayName '{new_name}' already exists"));
                    return self.audited(Err(err), &refusal).await;
                }
            }
        }
        let added: Vec<String> = new_members.iter().filter(|m| !old_members.contains(m)).cloned().collect();
        self.audited(self.check_members(app, &added).await, &refusal).await?;
        let updates = self.set_member_roles(app, ctx, &affected, &before, &after).await;
        let mut audit = self.audit_of(app, ctx, &rec, op);
        let (final_doc, failure) = match updates.failure.clone() {
            None => (doc, None),
            Some(err) => (partial_doc(&rec.doc, &doc, &updates.confirmed), Some(err)),
        };
        let updated = self.versioned(&rec, final_doc);
        audit.after = Some(updated.doc.clone());
        if let Some(err) = failure {
            let err = Self::partial_failure(err, &updates, affected.len());
            audit.outcome = updates.outcome();
            audit.status = err.status.as_u16();
            audit.detail = Some(err.detail.clone());
            stamp(&mut audit);
            if let Err(e) = self.record_group(Some(&updated), &rec, &audit).await {
                tracing::error!(error = %e, "cannot record the confirmed part of a group change");
                return Err(ScimError::store_unavailable_after_vendor());
            }
            return Err(err);
        }
        audit.status = if op == "update" { 204 } else { 200 };
        audit.detail = Some(updates.summary(affected.len()));
        stamp(&mut audit);
        if let Err(e) = self.record_group(Some(&updated), &rec, &audit).await {
            return Err(self.store_err_after_vendor(audit, e).await);
        }
        Ok(self.group_reply(ctx, op, &updated.doc))
    }

    pub(crate) async fn mapped_group_delete(&self, app: &App, ctx: &Ctx, id: &str) -> ScimResult<Reply> {
        let _serial = self.locks.app_groups(&app.name).await.map_err(store_err)?;
        let rec = self.load(app, Kind::Group, id).await?;
        let affected = match entry_of(app, &rec.doc) {
            Some(_) => member_ids(&rec.doc),
            None => Vec::new(),
        };
        let before = self.stored_groups(app).await?;
        let after: Vec<Record> = before.iter().filter(|g| g.id != rec.id).cloned().collect();
        let mut keys: Vec<(Kind, &str)> = vec![(Kind::Group, id)];
        keys.extend(role_changes(app, &affected, &before, &after));
        let _ids = self.locks.ids_in_order(&app.name, &keys).await.map_err(store_err)?;
        let updates = self.set_member_roles(app, ctx, &affected, &before, &after).await;
        let mut audit = self.audit_of(app, ctx, &rec, "delete");
        if let Some(err) = updates.failure.clone() {
            // The group stays, without the members whose role the vendor already confirmed.
            let mut kept = rec.doc.clone();
            if let Some(list) = kept.get_mut("members").and_then(Value::as_array_mut) {
                list.retain(|m| m.get("value").and_then(Value::as_str).is_none_or(|v| !updates.confirmed.contains(v)));
                if list.is_empty() {
                    kept.as_object_mut().map(|o| o.remove("members"));
                }
            }
            let updated = self.versioned(&rec, kept);
            let err = Self::partial_failure(err, &updates, affected.len());
            audit.after = Some(updated.doc.clone());
            audit.outcome = updates.outcome();
            audit.status = err.status.as_u16();
            audit.detail = Some(err.detail.clone());
            stamp(&mut audit);
            if let Err(e) = self.record_group(Some(&updated), &rec, &audit).await {
                tracing::error!(error = %e, "cannot record the confirmed part of a group delete");
                return Err(ScimError::store_unavailable_after_vendor());
            }
            return Err(err);
        }
        audit.status = 204;
        audit.detail = Some(updates.summary(affected.len()));
        stamp(&mut audit);
        if let Err(e) = self.record_group(None, &rec, &audit).await {
            return Err(self.store_err_after_vendor(audit, e).await);
        }
        Ok(Reply { status: StatusCode::NO_CONTENT, body: None, location: None })
    }

    /// `rec` with `doc` as its next version.
    pub(crate) fn versioned(&self, rec: &Record, mut doc: Value) -> Record {
        let at = now();
        let version = rec.version + 1;
        if let Some(obj) = doc.as_object_mut() {
            obj.insert(
                "meta".into(),
                json!({"resourceType": "Group", "created": rec.created, "lastModified": at,
                       "version": format!("W/\"{version}\"")}),
            );
        }
        Record { doc, modified: at, version, ..rec.clone() }
    }

    /// PATCH answers 204 (Entra discourages member lists in the answer), PUT the group.
    fn group_reply(&self, ctx: &Ctx, op: &str, doc: &Value) -> Reply {
        match op {
            "update" => Reply { status: StatusCode::NO_CONTENT, body: None, location: None },
            _ => {
                Reply { status: StatusCode::OK, body: Some(self.with_location(ctx, Kind::Group, doc)), location: None }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_change_keeps_only_the_confirmed_members_part() {
        let before = json!({"displayName": "G", "members": [{"value": "a"}, {"value": "b"}]});
        let after = json!({"displayName": "H", "members": [{"value": "a"}, {"value": "c"}, {"value": "d"}]});
        let confirmed: BTreeSet<String> = ["c".to_string(), "b".to_string()].into();
        let doc = partial_doc(&before, &after, &confirmed);
        // c's addition and b's removal stand; d's addition does not; the rename waits for the whole change.
        assert_eq!(member_ids(&doc), ["a", "c"]);
        assert_eq!(doc["displayName"], "G");
        let none = partial_doc(&before, &after, &BTreeSet::new());
        assert_eq!(member_ids(&none), ["a", "b"]);
    }
}
