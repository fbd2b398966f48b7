//! The engine: turns one authenticated SCIM request into shadow-store reads, adapter calls and audit
//! entries. Invariants kept here: no 2xx before the vendor confirmed; the shadow is written only after
//! vendor success (a crash in between is recovered by the next request, which looks the user up before
//! creating); one change per resource at a time; every attempt lands in the audit log.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use adapter_api::{Adapter, Capabilities, ErrorKind, Group, User, VendorUser};
use axum::http::StatusCode;
use serde_json::{json, Map, Value};
use tokio::sync::Mutex;

use crate::metrics::Metrics;
use crate::outcome::Outcome;
use crate::scim::error::ScimError;
use crate::scim::filter::{self, Filter};
use crate::scim::patch;
use crate::scim::schema::{self, ResourceKind};
use crate::scim::{list_page_response, ListQuery, ListWindow};
use crate::store::{lock_key, AuditEntry, Hold, Kind, Record, SharedLocks, Store, StoreError, StoreResult};
use crate::vendor_errors::from_adapter;
use crate::vendor_index::{UnmanagedSeen, VendorIndex};

/// One configured app at run time.
pub struct App {
    pub name: String,
    pub adapter: Arc<dyn Adapter>,
    pub token_sha256: [u8; 32],
    pub ip_allow: Vec<crate::ip_allow::Cidr>,
    pub reconcile: crate::config::ReconcileConfig,
    /// Entra groups whose members get a vendor role, in order of precedence (`src/group_roles.rs`).
    pub group_roles: Vec<crate::config::GroupRole>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("name", &self.name).field("vendor", &self.adapter.vendor()).finish()
    }
}

/// Per-request facts the engine needs besides the body.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub request_id: String,
    /// `https://host/scim/{app}/v2`, for `meta.location`.
    pub base_url: String,
}

/// What a group request asks: a PATCH's body or a PUT's document. The engine hands it to `group_roles`
/// for an app that maps groups to roles.
pub(crate) enum GroupEdit {
    Patch(Value),
    Replace(Value),
}

/// A successful answer.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Option<Value>,
    pub location: Option<String>,
}

impl Reply {
    fn ok(body: Value) -> Self {
        Reply { status: StatusCode::OK, body: Some(body), location: None }
    }
    fn no_content() -> Self {
        Reply { status: StatusCode::NO_CONTENT, body: None, location: None }
    }
}

pub type ScimResult<T> = Result<T, ScimError>;

const LOCK_STRIPES: usize = 1024;

/// Striped locks, bounded memory: one change per resource id, one claim per name, and one link per vendor
/// record at a time. Separate stripe sets, always taken id, then name, then vendor record, so a rename
/// (id and name) cannot deadlock with a create (name, then vendor record when it links an existing one).
/// On a store shared by replicas (PostgreSQL) each lock is also taken in the store (`SharedLocks`), after
/// the in-process stripe, in the same order; on SQLite nothing more is done than the stripe.
pub(crate) struct Locks {
    ids: Vec<Mutex<()>>,
    names: Vec<Mutex<()>>,
    vendor_records: Vec<Mutex<()>>,
    /// One group change per app at a time where the gateway maps groups to roles (taken before any id).
    app_groups: Vec<Mutex<()>>,
    shared: Option<Arc<dyn SharedLocks>>,
}

/// The lock sets' numbers in the shared locks, in the order the sets are taken.
const SET_APP_GROUPS: i32 = 1;
const SET_IDS: i32 = 2;
const SET_NAMES: i32 = 3;
const SET_VENDOR_RECORDS: i32 = 4;

fn stripe_of(stripes: &[Mutex<()>], app: &str, kind: Kind, key: &str) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (app, kind, key).hash(&mut h);
    (h.finish() as usize) % stripes.len()
}

/// One held lock: the in-process stripe and, on a shared store, the replicas' lock.
pub(crate) struct LockGuard<'a> {
    _shared: Option<Hold>,
    _local: tokio::sync::MutexGuard<'a, ()>,
}

/// Several id locks held together (`Locks::ids_in_order`).
pub(crate) struct LockGuards<'a> {
    _shared: Vec<Hold>,
    _local: Vec<tokio::sync::MutexGuard<'a, ()>>,
}

impl Locks {
    fn new(shared: Option<Arc<dyn SharedLocks>>) -> Self {
        let set = || (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect();
        Locks {
            ids: set(),
            names: set(),
            vendor_records: set(),
            app_groups: (0..64).map(|_| Mutex::new(())).collect(),
            shared,
        }
    }
    async fn take<'a>(
        &'a self,
        stripes: &'a [Mutex<()>],
        set: i32,
        app: &str,
        kind: Kind,
        key: &str,
    ) -> StoreResult<LockGuard<'a>> {
        let local = stripes[stripe_of(stripes, app, kind, key)].lock().await;
        let shared = match &self.shared {
            Some(shared) => Some(shared.acquire(set, lock_key(&[app, kind.as_str(), key])).await?),
            None => None,
        };
        Ok(LockGuard { _shared: shared, _local: local })
    }
    pub(crate) async fn app_groups(&self, app: &str) -> StoreResult<LockGuard<'_>> {
        self.take(&self.app_groups, SET_APP_GROUPS, app, Kind::Group, "").await
    }
    /// The id locks of several resources, taken in stripe order (each stripe once), then the shared ones
    /// in key order: two callers holding several id locks at a time cannot deadlock, whatever resources
    /// they name, in one process or across replicas.
    pub(crate) async fn ids_in_order(&self, app: &str, keys: &[(Kind, &str)]) -> StoreResult<LockGuards<'_>> {
        let mut stripes: Vec<usize> = keys.iter().map(|(kind, id)| stripe_of(&self.ids, app, *kind, id)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut local = Vec::with_capacity(stripes.len());
        for i in stripes {
            local.push(self.ids[i].lock().await);
        }
        let mut shared = Vec::new();
        if let Some(locks) = &self.shared {
            let mut shared_keys: Vec<i32> = keys.iter().map(|(kind, id)| lock_key(&[app, kind.as_str(), id])).collect();
            shared_keys.sort_unstable();
            shared_keys.dedup();
            for key in shared_keys {
                shared.push(locks.acquire(SET_IDS, key).await?);
            }
        }
        Ok(LockGuards { _shared: shared, _local: local })
    }
    pub(crate) async fn id(&self, app: &str, kind: Kind, id: &str) -> StoreResult<LockGuard<'_>> {
        self.take(&self.ids, SET_IDS, app, kind, id).await
    }
    pub(crate) async fn name(&self, app: &str, kind: Kind, name: &str) -> StoreResult<LockGuard<'_>> {
        self.take(&self.names, SET_NAMES, app, kind, &name.to_lowercase()).await
    }
    pub(crate) async fn vendor_record(&self, app: &str, kind: Kind, vendor_id: &str) -> StoreResult<LockGuard<'_>> {
        self.take(&self.vendor_records, SET_VENDOR_RECORDS, app, kind, vendor_id).await
    }
}

/// Held from linking an existing vendor record until its shadow record is written, so two creates (with
/// different userNames, one email) cannot both link it.
pub(crate) type VendorRecordGuard<'a> = LockGuard<'a>;

pub struct Gateway {
    pub apps: BTreeMap<String, Arc<App>>,
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub(crate) locks: Locks,
    /// Per app: the latest vendor listing, standing in for per-user lookups while fresh.
    indexes: BTreeMap<String, Arc<VendorIndex>>,
    pub(crate) unmanaged_seen: UnmanagedSeen,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("apps", &self.apps.keys().collect::<Vec<_>>()).finish()
    }
}

pub(crate) fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

fn resource_kind(kind: Kind) -> ResourceKind {
    match kind {
        Kind::User => ResourceKind::User,
        Kind::Group => ResourceKind::Group,
    }
}

fn collection(kind: Kind) -> &'static str {
    match kind {
        Kind::User => "Users",
        Kind::Group => "Groups",
    }
}

fn name_attr(kind: Kind) -> &'static str {
    match kind {
        Kind::User => "userName",
        Kind::Group => "displayName",
    }
}

/// A shadow-store failure inside the vendor-facing create path (adopt, adopt by email), which speaks
/// `adapter_api::Error`: like `store_err`, the database's words go to the log and Entra reads a fixed
/// sentence (the adapter error's detail reaches Entra).
fn store_err_for_vendor_path(err: StoreError) -> adapter_api::Error {
    tracing::error!(error = %err, "shadow store failure");
    adapter_api::Error::unavailable(None, STORE_UNAVAILABLE_DETAIL)
}

/// What Entra reads when the shadow store fails inside the vendor-facing path.
const STORE_UNAVAILABLE_DETAIL: &str = "the gateway's store is unavailable; try again";

/// Entra's answer to a write the store refused as stale (`StoreError::Fenced`): another replica acted on
/// the resource, or this one lost its replica lock. Entra's retry starts again from the store's state.
fn fenced(after_vendor: bool) -> ScimError {
    ScimError::unavailable(
        5,
        if after_vendor {
            "the vendor made the change, but another gateway replica changed this resource meanwhile (this \
             replica lost its lock), so it was not recorded; try again"
        } else {
            "another gateway replica is changing this resource (this replica lost its lock); try again"
        },
    )
}

pub(crate) fn store_err(err: StoreError) -> ScimError {
    match err {
        StoreError::Fenced(why) => {
            tracing::warn!(reason = %why, "shadow write refused as stale");
            fenced(false)
        }
        StoreError::Duplicate => ScimError::uniqueness("another resource already has this name"),
        StoreError::VendorLinked(owner) => {
            ScimError::uniqueness(format!("the vendor's record is already linked to gateway id {owner}"))
        }
        other => {
            // The database's words go to the log, never to Entra: they can name files and SQL.
            tracing::error!(error = %other, "shadow store failure");
            ScimError::store_unavailable()
        }
    }
}

/// Records one scan step of an unindexed filter reads (bounded memory per list request).
const SCAN_CHUNK: usize = 500;

/// An indexed lookup that narrows a filter's candidates; the whole filter is still evaluated on them.
#[derive(Debug, PartialEq)]
enum IndexHint {
    Name(String),
    ExternalId(String),
    Id(String),
    WorkEmail(String),
}

/// The first indexable condition of a filter's top-level conjunction: Entra's matching forms
/// (`userName eq`, `externalId eq`, `emails[type eq "work"].value eq`, `displayName eq`), with or without
/// further `and` conditions.
fn index_hint(kind: Kind, f: &Filter) -> Option<IndexHint> {
    match f {
        Filter::And(a, b) => index_hint(kind, a).or_else(|| index_hint(kind, b)),
        Filter::ValuePath { attr, filter, .. }
            if kind == Kind::User && attr.urn.is_none() && attr.attr.eq_ignore_ascii_case("emails") =>
        {
            let mut conjuncts = Vec::new();
            flatten_and(filter, &mut conjuncts);
            let eq_string = |name: &str| {
                conjuncts.iter().find_map(|c| match c {
                    Filter::Compare { path, op: filter::CompareOp::Eq, value: Value::String(v) }
                        if path.urn.is_none() && path.sub.is_none() && path.attr.eq_ignore_ascii_case(name) =>
                    {
                        Some(v.clone())
                    }
                    _ => None,
                })
            };
            let work = eq_string("type").is_some_and(|t| t.eq_ignore_ascii_case("work"));
            eq_string("value").filter(|_| work).map(IndexHint::WorkEmail)
        }
        other => match filter::simple_eq(other)? {
            (attr, v) if attr == name_attr(kind) => Some(IndexHint::Name(v)),
            (attr, v) if attr == "externalId" => Some(IndexHint::ExternalId(v)),
            (attr, v) if attr == "id" => Some(IndexHint::Id(v)),
            _ => None,
        },
    }
}

fn flatten_and<'a>(f: &'a Filter, out: &mut Vec<&'a Filter>) {
    match f {
        Filter::And(a, b) => {
            flatten_and(a, out);
            flatten_and(b, out);
        }
        other => out.push(other),
    }
}

/// Where the request's vendor traffic stands now, for `stamp_since`.
pub(crate) fn call_mark() -> (u32, u32, usize) {
    adapter_api::calls::current().map(|log| (log.calls(), log.attempts(), log.attempt_log().len())).unwrap_or_default()
}

/// Copies the vendor traffic since `mark` into an entry: one request can make several audited changes
/// (a group change sets each member's role).
pub(crate) fn stamp_since(entry: &mut AuditEntry, mark: (u32, u32, usize)) {
    if let Some(log) = adapter_api::calls::current() {
        entry.vendor_calls = log.calls().saturating_sub(mark.0);
        entry.attempts = log.attempts().saturating_sub(mark.1);
        entry.attempt_log = log.attempt_log().into_iter().skip(mark.2).collect();
    }
}

/// Copies the request's vendor traffic (calls and every attempt, retries included) into its audit entry.
pub(crate) fn stamp(entry: &mut AuditEntry) {
    if let Some(log) = adapter_api::calls::current() {
        entry.vendor_calls = log.calls();
        entry.attempts = log.attempts();
        entry.attempt_log = log.attempt_log();
    }
}

/// Attributes that are written but never returned (RFC 7643 `password`) are never stored either: none of
/// the vendors takes passwords (they sign in through Entra), and a shadow store must not hold them.
fn strip_write_only(doc: &mut Map<String, Value>) {
    doc.retain(|k, _| !k.eq_ignore_ascii_case("password"));
}

/// The resource's values without the gateway's envelope, for "did anything change?" comparisons.
pub(crate) fn values_of(doc: &Value) -> Value {
    let mut v = doc.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("meta");
        o.remove("id");
        o.remove("schemas");
    }
    v
}

/// `schemas` for a stored document: the core schema plus every extension it carries.
fn schemas_for(kind: Kind, doc: &Map<String, Value>) -> Value {
    let mut list = vec![json!(resource_kind(kind).core_schema_urn())];
    for (k, v) in doc {
        if k.to_ascii_lowercase().starts_with("urn:") && v.is_object() {
            list.push(json!(k));
        }
    }
    Value::Array(list)
}

impl Gateway {
    pub fn new(apps: BTreeMap<String, Arc<App>>, store: Arc<Store>, metrics: Arc<Metrics>) -> Self {
        let indexes = apps.keys().map(|name| (name.clone(), Arc::new(VendorIndex::default()))).collect();
        let shared = store.shared_locks();
        Gateway { apps, store, metrics, locks: Locks::new(shared), indexes, unmanaged_seen: UnmanagedSeen::default() }
    }

    /// Whether the app maps groups to roles (then its groups live in the gateway's store, and its group
    /// changes go through `group_roles`).
    pub(crate) fn maps_groups(app: &App) -> bool {
        !app.group_roles.is_empty()
    }

    /// The app's vendor index (see `vendor_index::VendorIndex`).
    pub fn vendor_index(&self, app: &str) -> Arc<VendorIndex> {
        self.indexes.get(app).cloned().unwrap_or_default()
    }

    /// Whether a fresh vendor listing shows that the vendor lacks `user_name`, so the lookup can be
    /// skipped: only for vendors whose create reports a conflict (a user created since the listing then
    /// still ends in match-and-adopt, never a twin). A missing or stale listing is refreshed in the
    /// background; until it is there, the vendor is asked.
    fn vendor_lacks(&self, app: &App, user_name: &str) -> bool {
        let caps = app.adapter.capabilities();
        let ttl = app.reconcile.index_ttl();
        if !(caps.list_users && caps.create_reports_conflict) || ttl.is_zero() {
            return false;
        }
        let index = self.vendor_index(&app.name);
        match index.lacks(user_name, ttl) {
            Some(lacks) => lacks,
            None => {
                index.refresh(&app.name, app.adapter.clone());
                false
            }
        }
    }

    pub(crate) fn audit(&self, app: &App, ctx: &Ctx, kind: Kind, op: &str) -> AuditEntry {
        AuditEntry {
            at: now(),
            app: app.name.clone(),
            resource_type: kind.as_str().into(),
            operation: op.into(),
            actor: "entra".into(),
            request_id: Some(ctx.request_id.clone()),
            outcome: Outcome::Ok,
            ..Default::default()
        }
    }

    /// An audit entry for an operation on the stored resource `rec` (its id, name and state before).
    pub(crate) fn audit_of(&self, app: &App, ctx: &Ctx, rec: &Record, op: &str) -> AuditEntry {
        let mut audit = self.audit(app, ctx, rec.kind, op);
        audit.resource_id = Some(rec.id.clone());
        audit.name = Some(rec.name().to_string());
        audit.before = Some(rec.doc.clone());
        audit
    }

    /// Records a failed operation; the failure itself is what the caller returns.
    pub(crate) async fn audit_failure(
        &self,
        mut entry: AuditEntry,
        err: &ScimError,
        adapter_err: Option<&adapter_api::Error>,
    ) {
        stamp(&mut entry);
        entry.outcome = adapter_err.map_or(Outcome::Rejected, Outcome::from);
        entry.status = err.status.as_u16();
        entry.detail = Some(err.detail.clone());
        if let Err(e) = self.store.audit(&entry).await {
            tracing::error!(error = %e, "cannot write audit entry");
        }
    }

    /// Passes `result` on, auditing it first when it is a refusal.
    pub(crate) async fn audited<T>(&self, result: ScimResult<T>, entry: &AuditEntry) -> ScimResult<T> {
        if let Err(err) = &result {
            self.audit_failure(entry.clone(), err, None).await;
        }
        result
    }

    /// A shadow write that failed after the vendor made the change. A logical refusal (the name or the
    /// vendor record already taken in the shadow) is 409 and completes the audit entry, so no intent is
    /// left open for a change that was answered; a store that cannot write is 503 with its own detail
    /// (the vendor has the change), and the entry stays an open intent because nothing can be written.
    pub(crate) async fn store_err_after_vendor(&self, audit: AuditEntry, err: StoreError) -> ScimError {
        match err {
            StoreError::Duplicate | StoreError::VendorLinked(_) => {
                let scim = ScimError::uniqueness(format!(
                    "the vendor made the change but the gateway could not record the link: {err}; \
                     resolve the clash (see the audit log), then retry"
                ));
                self.audit_failure(audit, &scim, None).await;
                scim
            }
            // Nothing of this change reached the shadow; the audit entry says so (the intent is completed,
            // not left open: the store can write, it refused this write).
            StoreError::Fenced(why) => {
                tracing::warn!(reason = %why, "shadow write refused as stale after the vendor made the change");
                let scim = fenced(true);
                let mut entry = audit;
                stamp(&mut entry);
                entry.outcome = Outcome::Fenced;
                entry.status = scim.status.as_u16();
                entry.detail = Some(format!("{} ({why})", scim.detail));
                if let Err(e) = self.store.audit(&entry).await {
                    tracing::error!(error = %e, "cannot write audit entry");
                }
                scim
            }
            other => {
                tracing::error!(error = %other, "shadow store failure after the vendor made the change");
                ScimError::store_unavailable_after_vendor()
            }
        }
    }

    /// Writes the intent line of a change before its first vendor call (see `Store::audit_intent`). A store
    /// that cannot write stops the change here: 503, and the vendor never hears of it.
    pub(crate) async fn begin_change(&self, app: &App, audit: &mut AuditEntry) -> ScimResult<()> {
        if !app.adapter.capabilities().in_process {
            audit.seq = self.store.audit_intent(audit).await.map_err(store_err)?;
        }
        Ok(())
    }

    /// Maps a vendor error for Entra (the one mapping, `from_adapter`) and counts it.
    pub(crate) fn vendor_error(&self, app: &App, err: &adapter_api::Error) -> ScimError {
        self.metrics.vendor_error(&app.name, err);
        from_adapter(&app.name, err)
    }

    pub(crate) fn with_location(&self, ctx: &Ctx, kind: Kind, doc: &Value) -> Value {
        let mut doc = doc.clone();
        let id = doc.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        if let Some(meta) = doc.get_mut("meta").and_then(Value::as_object_mut) {
            meta.insert("location".into(), json!(format!("{}/{}/{}", ctx.base_url, collection(kind), id)));
        }
        doc
    }

    fn group_capable(app: &App, kind: Kind) -> ScimResult<()> {
        if kind == Kind::Group && !app.adapter.capabilities().groups && !Self::maps_groups(app) {
            return Err(from_adapter(&app.name, &app.adapter.no_groups()));
        }
        Ok(())
    }

    /// Parses and normalises a POST/PUT body into a stored document's values.
    pub(crate) fn incoming_doc(kind: Kind, body: Value) -> ScimResult<Map<String, Value>> {
        let mut doc = body;
        if !doc.is_object() {
            return Err(ScimError::invalid_syntax("the request body must be a JSON object"));
        }
        schema::normalize(resource_kind(kind), &mut doc).map_err(|e| ScimError::invalid_value(e.to_string()))?;
        let Value::Object(mut map) = doc else {
            return Err(ScimError::invalid_syntax("the request body must be a JSON object"));
        };
        // Read-only envelope sent by clients (Entra sends meta.resourceType) is ignored, not an error.
        map.remove("id");
        map.remove("meta");
        map.remove("schemas");
        strip_write_only(&mut map);
        let name_ok = map.get(name_attr(kind)).and_then(Value::as_str).is_some_and(|s| !s.trim().is_empty());
        if !name_ok {
            return Err(ScimError::invalid_value(format!(
                "{} is required and must be a non-empty string",
                name_attr(kind)
            )));
        }
        Ok(map)
    }

    fn to_user(doc: &Value) -> ScimResult<User> {
        User::from_scim(doc).map(crate::roles::entra_roles_only).map_err(|e| ScimError::invalid_value(e.to_string()))
    }

    /// A group with member ids translated to the vendor's ids.
    async fn to_group(&self, app: &App, doc: &Value) -> ScimResult<Group> {
        let mut group = Group::from_scim(doc).map_err(|e| ScimError::invalid_value(e.to_string()))?;
        for m in &mut group.members {
            let rec = match self.store.get(&app.name, Kind::User, &m.value).await.map_err(store_err)? {
                Some(r) => Some(r),
                None => self.store.get(&app.name, Kind::Group, &m.value).await.map_err(store_err)?,
            };
            match rec {
                Some(r) => m.value = r.vendor_id,
                None => {
                    return Err(ScimError::invalid_value(format!(
                        "member {} is not a user or group provisioned through this app",
                        m.value
                    )))
                }
            }
        }
        Ok(group)
    }

    // ------------------------------------------------------------------ create

    pub async fn create(&self, app: &App, ctx: &Ctx, kind: Kind, body: Value) -> ScimResult<Reply> {
        Self::group_capable(app, kind)?;
        if kind == Kind::Group && Self::maps_groups(app) {
            return self.mapped_group_create(app, ctx, body).await;
        }
        let values = Self::incoming_doc(kind, body)?;
        let name = values.get(name_attr(kind)).and_then(Value::as_str).unwrap_or_default().to_string();
        let _guard = self.locks.name(&app.name, kind, &name).await.map_err(store_err)?;

        let mut audit = self.audit(app, ctx, kind, "create");
        audit.name = Some(name.clone());
        if self.store.find_by_name(&app.name, kind, &name).await.map_err(store_err)?.is_some() {
            let err = ScimError::uniqueness(format!("{} '{name}' already exists", name_attr(kind)));
            self.audit_failure(audit, &err, None).await;
            return Err(err);
        }
        let values_doc = Value::Object(values.clone());
        audit.after = Some(values_doc.clone());
        // Why the vendor holds the new user disabled although Entra has it active (see below).
        let mut held_disabled = None;
        let outcome = match kind {
            Kind::User => {
                let user = self.audited(Self::to_user(&values_doc), &audit).await?;
                self.begin_change(app, &mut audit).await?;
                // A new user is in no group yet: where groups give roles, the vendor may hold it disabled
                // until one does (Promapp: only Default Access of its own).
                if Self::maps_groups(app) {
                    held_disabled = app.adapter.held_disabled_reason(&user);
                }
                self.create_user_at_vendor(app, &user, &mut audit).await
            }
            Kind::Group => {
                let group = self.audited(self.to_group(app, &values_doc).await, &audit).await?;
                self.begin_change(app, &mut audit).await?;
                app.adapter.create_group(&group).await.map(|id| (id, None))
            }
        };
        let outcome = outcome.and_then(|(id, claim)| adapter_api::check_vendor_id(&id).map(|()| (id, claim)));
        // A linked vendor record stays claimed until the shadow write below.
        let (vendor_id, _linking) = match outcome {
            Ok(linked) => linked,
            Err(e) => {
                let err = self.vendor_error(app, &e);
                self.audit_failure(audit, &err, Some(&e)).await;
                return Err(err);
            }
        };

        let id = uuid::Uuid::new_v4().to_string();
        let at = now();
        let mut doc = Map::new();
        doc.insert("schemas".into(), schemas_for(kind, &values));
        doc.insert("id".into(), json!(id));
        doc.extend(values);
        doc.insert(
            "meta".into(),
            json!({"resourceType": kind.as_str(), "created": at, "lastModified": at, "version": "W/\"1\""}),
        );
        let record = Record {
            app: app.name.clone(),
            kind,
            id: id.clone(),
            vendor_id,
            doc: Value::Object(doc),
            created: at.clone(),
            modified: at,
            version: 1,
        };
        audit.resource_id = Some(id.clone());
        audit.after = Some(record.doc.clone());
        audit.status = 201;
        if let Some(reason) = held_disabled {
            audit.detail = Some(match audit.detail.take() {
                Some(linked) => format!("{linked}; {reason}"),
                None => format!("created {reason}"),
            });
        }
        stamp(&mut audit);
        if let Err(e) = self.store.put(&record, &audit).await {
            return Err(self.store_err_after_vendor(audit, e).await);
        }
        let body = self.with_location(ctx, kind, &record.doc);
        let location = body.pointer("/meta/location").and_then(Value::as_str).map(String::from);
        Ok(Reply { status: StatusCode::CREATED, body: Some(body), location })
    }

    /// Creates the user, or adopts the vendor's existing record with the same userName (re-assigned user
    /// of a disable-only vendor, or a create whose answer was lost), or with the same email when the vendor
    /// refused the create over it and can be asked by email. Never creates a duplicate. An adopted record
    /// comes back claimed (see `VendorRecordGuard`).
    pub(crate) async fn create_user_at_vendor(
        &self,
        app: &App,
        user: &User,
        audit: &mut AuditEntry,
    ) -> adapter_api::Result<(String, Option<VendorRecordGuard<'_>>)> {
        let caps: Capabilities = app.adapter.capabilities();
        let mut looked_up = false;
        for _attempt in 0..2 {
            let created = match Self::maps_groups(app) {
                true => app.adapter.create_user_awaiting_group_role(user).await,
                false => app.adapter.create_user(user).await,
            };
            let err = match created {
                Ok(id) => return Ok((id, None)),
                Err(e) => e,
            };
            let conflict = matches!(err.kind(), ErrorKind::Conflict);
            if !(conflict || err.maybe_applied()) || !caps.find_by_user_name {
                return Err(err);
            }
            if !looked_up {
                looked_up = true;
                if let Some(existing) = app.adapter.find_user(&user.user_name).await? {
                    return self.adopt(app, existing, user, audit, "userName").await;
                }
                if !conflict {
                    // The lost create did not happen: trying again cannot duplicate.
                    continue;
                }
            }
            if conflict {
                // A conflict on something else than the userName: an email in use.
                return self.adopt_by_email(app, user, audit, err).await;
            }
            return Err(err);
        }
        Err(adapter_api::Error::unavailable(None, "the vendor did not confirm the create; try again"))
    }

    /// After the vendor refused a create for a clash other than the userName: links the vendor user holding
    /// the Entra user's work email, where the vendor can be asked by email. Never a user the gateway
    /// deprovisioned or the vendor holds disabled: that email may have been recycled, and linking would hand
    /// a former user's account (documents, permissions) to someone else. Otherwise the original conflict.
    async fn adopt_by_email(
        &self,
        app: &App,
        user: &User,
        audit: &mut AuditEntry,
        conflict: adapter_api::Error,
    ) -> adapter_api::Result<(String, Option<VendorRecordGuard<'_>>)> {
        let Some(email) = user.work_email().filter(|_| app.adapter.capabilities().find_by_email) else {
            return Err(conflict);
        };
        let existing = match app.adapter.find_user_by_email(email).await {
            Ok(Some(existing)) => existing,
            Ok(None) => return Err(conflict),
            Err(lookup) => {
                tracing::warn!(app = %app.name, error = %lookup, "email lookup after a create conflict failed");
                let detail = format!("{} (looking the email up failed: {})", conflict.detail(), lookup.detail());
                return Err(adapter_api::Error::conflict(detail));
            }
        };
        let deprovisioned = self
            .store
            .is_tombstoned(&app.name, Kind::User, &existing.vendor_id)
            .await
            .map_err(store_err_for_vendor_path)?;
        if deprovisioned || !existing.user.active {
            return Err(adapter_api::Error::conflict(format!(
                "{}: the vendor's user '{}' holds {email} but is disabled{}; it is not linked automatically \
                 (the email may have been reused). Re-enable or rename it at the vendor, then retry",
                conflict.detail(),
                existing.user.user_name,
                if deprovisioned { " (deprovisioned through this gateway)" } else { "" }
            )));
        }
        self.adopt(app, existing, user, audit, &format!("email {email}")).await
    }

    async fn adopt(
        &self,
        app: &App,
        existing: VendorUser,
        user: &User,
        audit: &mut AuditEntry,
        matched_by: &str,
    ) -> adapter_api::Result<(String, Option<VendorRecordGuard<'_>>)> {
        adapter_api::check_vendor_id(&existing.vendor_id)?;
        let claim = self
            .locks
            .vendor_record(&app.name, Kind::User, &existing.vendor_id)
            .await
            .map_err(store_err_for_vendor_path)?;
        let owner = self
            .store
            .find_by_vendor_id(&app.name, Kind::User, &existing.vendor_id)
            .await
            .map_err(store_err_for_vendor_path)?;
        if let Some(owner) = owner {
            return Err(adapter_api::Error::conflict(format!(
                "the vendor's user '{}' is already linked to gateway id {}",
                existing.user.user_name, owner.id
            )));
        }
        // A leaver's account (deprovisioned through the gateway, or disabled at the vendor) goes back only to
        // the same Entra user: userNames are recycled, and re-enabling it for a newcomer would hand over the
        // leaver's documents and permissions. Entra's externalId (map objectId to it) tells them apart.
        let tombstone = self
            .store
            .tombstone(&app.name, Kind::User, &existing.vendor_id)
            .await
            .map_err(store_err_for_vendor_path)?;
        if tombstone.is_some() || !existing.user.active {
            let leaver = tombstone.and_then(|t| t.external_id).or_else(|| existing.user.external_id.clone());
            let same_person = leaver.is_some() && leaver == user.external_id;
            if !same_person {
                return Err(adapter_api::Error::needs_manual_action(format!(
                    "the vendor's user '{}' is a disabled or deprovisioned account of {}, not of this Entra user \
                     (externalId {}); it is not re-enabled automatically (the userName may have been reused). \
                     Rename or remove it at the vendor, or give the new user another userName, then retry",
                    existing.user.user_name,
                    leaver.as_deref().map(|l| format!("externalId {l}")).unwrap_or_else(|| "an unknown user".into()),
                    user.external_id.as_deref().unwrap_or("none"),
                )));
            }
        }
        if existing.user != *user && app.adapter.capabilities().update_users {
            app.adapter.update_user(&existing.vendor_id, &existing.user, user).await?;
        }
        audit.operation = "adopt".into();
        audit.detail =
            Some(format!("linked to the vendor's existing user {} (matched by {matched_by})", existing.vendor_id));
        Ok((existing.vendor_id, Some(claim)))
    }

    // ------------------------------------------------------------------ read

    pub(crate) async fn load(&self, app: &App, kind: Kind, id: &str) -> ScimResult<Record> {
        self.store
            .get(&app.name, kind, id)
            .await
            .map_err(store_err)?
            .ok_or_else(|| ScimError::not_found(format!("{} {id} not found", kind.as_str())))
    }

    pub async fn get(&self, app: &App, ctx: &Ctx, kind: Kind, id: &str, q: &ListQuery) -> ScimResult<Reply> {
        let rec = self.load(app, kind, id).await?;
        let doc = self.with_location(ctx, kind, &rec.doc);
        Ok(Reply::ok(schema::project(resource_kind(kind), &doc, &q.attributes, &q.excluded_attributes)))
    }

    pub async fn list(&self, app: &App, ctx: &Ctx, kind: Kind, q: &ListQuery) -> ScimResult<Reply> {
        let rk = resource_kind(kind);
        let parsed: Option<Filter> = match q.filter.as_deref().map(str::trim).filter(|f| !f.is_empty()) {
            Some(text) => {
                let f = filter::parse(text).map_err(|e| ScimError::invalid_filter(e.detail))?;
                filter::validate(rk, &f).map_err(|e| ScimError::invalid_filter(e.detail))?;
                Some(f)
            }
            None => None,
        };
        let simple = parsed.as_ref().and_then(filter::simple_eq);
        let window = ListWindow::of(q);
        let project = |r: &Record| {
            let doc = self.with_location(ctx, kind, &r.doc);
            schema::project(rk, &doc, &q.attributes, &q.excluded_attributes)
        };
        let hint = parsed.as_ref().and_then(|f| index_hint(kind, f));
        let (page, total): (Vec<Record>, usize) = match (hint, &parsed) {
            // Groups of a vendor without groups: nothing to list, and no vendor call.
            (None, _) if kind == Kind::Group && !app.adapter.capabilities().groups && !Self::maps_groups(app) => {
                (Vec::new(), 0)
            }
            // No filter: the page and the count come from the store, whatever its size.
            (None, None) => {
                let total = self.store.count(&app.name, kind).await.map_err(store_err)? as usize;
                let page = if window.len == 0 {
                    Vec::new()
                } else {
                    self.store.page(&app.name, kind, window.skip, window.len).await.map_err(store_err)?
                };
                (page, total)
            }
            // A filter no index narrows: scanned in chunks, keeping only the page (memory stays bounded).
            (None, Some(f)) => {
                let (mut page, mut total, mut after) = (Vec::new(), 0usize, 0i64);
                loop {
                    let (chunk, last) = self.store.scan(&app.name, kind, after, SCAN_CHUNK).await.map_err(store_err)?;
                    let done = chunk.len() < SCAN_CHUNK;
                    for r in chunk.into_iter().filter(|r| filter::matches(rk, f, &r.doc)) {
                        if window.holds(total) {
                            page.push(r);
                        }
                        total += 1;
                    }
                    if done {
                        break (page, total);
                    }
                    after = last;
                }
            }
            (Some(hint), _) => {
                let mut candidates = match hint {
                    IndexHint::Name(v) => {
                        self.store.find_by_name(&app.name, kind, &v).await.map_err(store_err)?.into_iter().collect()
                    }
                    IndexHint::ExternalId(v) => {
                        self.store.find_by_external_id(&app.name, kind, &v).await.map_err(store_err)?
                    }
                    IndexHint::Id(v) => {
                        self.store.get(&app.name, kind, &v).await.map_err(store_err)?.into_iter().collect()
                    }
                    IndexHint::WorkEmail(v) => {
                        self.store.find_by_work_email(&app.name, kind, &v).await.map_err(store_err)?
                    }
                };
                if let Some(f) = &parsed {
                    candidates.retain(|r| filter::matches(rk, f, &r.doc));
                }
                if candidates.is_empty() && kind == Kind::User {
                    if let Some((attr, value)) = &simple {
                        if attr == "userName" {
                            if let Some(rec) = self.import_from_vendor(app, ctx, value).await? {
                                candidates.push(rec);
                            }
                        }
                    }
                }
                let total = candidates.len();
                (candidates.into_iter().skip(window.skip).take(window.len).collect(), total)
            }
        };
        let docs: Vec<Value> = page.iter().map(project).collect();
        Ok(Reply::ok(list_page_response(docs, total, q)))
    }

    /// A userName the shadow does not know may still exist at the vendor (created before the gateway,
    /// or by a create whose answer was lost). Link it so Entra matches it instead of creating a twin.
    async fn import_from_vendor(&self, app: &App, ctx: &Ctx, user_name: &str) -> ScimResult<Option<Record>> {
        if !app.adapter.capabilities().find_by_user_name {
            return Ok(None);
        }
        let _guard = self.locks.name(&app.name, Kind::User, user_name).await.map_err(store_err)?;
        if let Some(rec) = self.store.find_by_name(&app.name, Kind::User, user_name).await.map_err(store_err)? {
            return Ok(Some(rec));
        }
        if self.vendor_lacks(app, user_name) {
            return Ok(None);
        }
        let found = app.adapter.find_user(user_name).await.map_err(|e| self.vendor_error(app, &e))?;
        let Some(vu) = found else { return Ok(None) };
        adapter_api::check_vendor_id(&vu.vendor_id).map_err(|e| self.vendor_error(app, &e))?;
        let _claim = self.locks.vendor_record(&app.name, Kind::User, &vu.vendor_id).await.map_err(store_err)?;
        if self.store.is_tombstoned(&app.name, Kind::User, &vu.vendor_id).await.map_err(store_err)?
            || self.store.find_by_vendor_id(&app.name, Kind::User, &vu.vendor_id).await.map_err(store_err)?.is_some()
        {
            return Ok(None);
        }
        // A disabled vendor account is a leaver's until shown otherwise: Entra's create then meets it and
        // the adopt rule (same externalId only) decides, audited.
        if !vu.user.active {
            return Ok(None);
        }
        let mut values = vu.user.to_scim();
        schema::normalize(ResourceKind::User, &mut values).map_err(|e| ScimError::invalid_value(e.to_string()))?;
        let Value::Object(values) = values else { return Ok(None) };
        let id = uuid::Uuid::new_v4().to_string();
        let at = now();
        let mut doc = Map::new();
        doc.insert("schemas".into(), schemas_for(Kind::User, &values));
        doc.insert("id".into(), json!(id));
        doc.extend(values);
        doc.insert(
            "meta".into(),
            json!({"resourceType": "User", "created": at, "lastModified": at, "version": "W/\"1\""}),
        );
        let record = Record {
            app: app.name.clone(),
            kind: Kind::User,
            id: id.clone(),
            vendor_id: vu.vendor_id.clone(),
            doc: Value::Object(doc),
            created: at.clone(),
            modified: at,
            version: 1,
        };
        let mut audit = self.audit(app, ctx, Kind::User, "import");
        audit.actor = "gateway".into();
        audit.name = Some(user_name.to_string());
        audit.resource_id = Some(id);
        audit.after = Some(record.doc.clone());
        audit.status = 200;
        audit.detail = Some(format!("linked the vendor's existing user {} found by userName", vu.vendor_id));
        stamp(&mut audit);
        self.store.put(&record, &audit).await.map_err(store_err)?;
        Ok(Some(record))
    }

    // ------------------------------------------------------------------ update

    pub async fn patch(&self, app: &App, ctx: &Ctx, kind: Kind, id: &str, body: Value) -> ScimResult<Reply> {
        if kind == Kind::Group && Self::maps_groups(app) {
            return self.mapped_group_update(app, ctx, id, GroupEdit::Patch(body)).await;
        }
        let parsed = patch::parse_patch(&body).map_err(|e| ScimError::bad_request(e.scim_type, e.detail));
        let _guard = self.locks.id(&app.name, kind, id).await.map_err(store_err)?;
        // A malformed PATCH is still a change Entra attempted: audited against the resource when it exists.
        let rec = match (parsed.as_ref(), self.load(app, kind, id).await) {
            (Err(err), Ok(rec)) => {
                self.audit_failure(self.audit_of(app, ctx, &rec, "update"), err, None).await;
                return Err(err.clone());
            }
            (Err(err), Err(_)) => return Err(err.clone()),
            (Ok(_), loaded) => loaded?,
        };
        let ops = parsed?;
        let mut doc = rec.doc.clone();
        if let Err(e) = patch::apply(resource_kind(kind), &mut doc, &ops) {
            let err = ScimError::bad_request(e.scim_type, e.detail);
            self.audit_failure(self.audit_of(app, ctx, &rec, "update"), &err, None).await;
            return Err(err);
        }
        if let Some(map) = doc.as_object_mut() {
            strip_write_only(map);
        }
        let updated = self.commit_update(app, ctx, rec, doc, "update").await?;
        match kind {
            // Entra discourages returning member lists on group PATCH: 204.
            Kind::Group => Ok(Reply::no_content()),
            Kind::User => Ok(Reply::ok(self.with_location(ctx, kind, &updated.doc))),
        }
    }

    pub async fn replace(&self, app: &App, ctx: &Ctx, kind: Kind, id: &str, body: Value) -> ScimResult<Reply> {
        if kind == Kind::Group && Self::maps_groups(app) {
            return self.mapped_group_update(app, ctx, id, GroupEdit::Replace(body)).await;
        }
        let values = Self::incoming_doc(kind, body);
        let _guard = self.locks.id(&app.name, kind, id).await.map_err(store_err)?;
        let rec = self.load(app, kind, id).await?;
        // A refused PUT of an existing resource is audited like a refused PATCH.
        let values = self.audited(values, &self.audit_of(app, ctx, &rec, "replace")).await?;
        let mut doc = Map::new();
        doc.insert("schemas".into(), schemas_for(kind, &values));
        doc.insert("id".into(), json!(id));
        doc.extend(values);
        if let Some(meta) = rec.doc.get("meta") {
            doc.insert("meta".into(), meta.clone());
        }
        let updated = self.commit_update(app, ctx, rec, Value::Object(doc), "replace").await?;
        Ok(Reply::ok(self.with_location(ctx, kind, &updated.doc)))
    }

    /// Sends a changed resource to the vendor and, once confirmed, to the shadow store.
    async fn commit_update(&self, app: &App, ctx: &Ctx, rec: Record, mut doc: Value, op: &str) -> ScimResult<Record> {
        let kind = rec.kind;
        if values_of(&doc) == values_of(&rec.doc) {
            // Nothing changed: Entra re-sends the same values every cycle; the vendor need not hear it again.
            return Ok(rec);
        }
        let mut audit = self.audit_of(app, ctx, &rec, op);
        let new_name = crate::store::name_of(kind, &doc).to_string();
        if new_name.trim().is_empty() {
            let err = ScimError::invalid_value(format!("{} must not be empty", name_attr(kind)));
            self.audit_failure(audit, &err, None).await;
            return Err(err);
        }
        // A rename claims the new name like a create does (the caller holds the id lock: ids before names).
        let _name_guard = match new_name.eq_ignore_ascii_case(rec.name()) {
            true => None,
            false => Some(self.locks.name(&app.name, kind, &new_name).await.map_err(store_err)?),
        };
        if !new_name.eq_ignore_ascii_case(rec.name()) {
            if let Some(other) = self.store.find_by_name(&app.name, kind, &new_name).await.map_err(store_err)? {
                if other.id != rec.id {
                    let err = ScimError::uniqueness(format!("{} '{new_name}' already exists", name_attr(kind)));
                    self.audit_failure(audit, &err, None).await;
                    return Err(err);
                }
            }
        }
        if let Some(obj) = doc.as_object_mut() {
            let schemas = schemas_for(kind, obj);
            obj.insert("schemas".into(), schemas);
        }
        enum Change {
            User(Box<(User, User)>),
            Group(Box<(Group, Group)>),
        }
        let change = match kind {
            Kind::User => {
                let before = self.audited(Self::to_user(&rec.doc), &audit).await?;
                let users = (before, self.audited(Self::to_user(&doc), &audit).await?);
                // Both with the user's group role, which this change cannot alter (a group change would hold
                // this user's id lock).
                let users =
                    (self.vendor_user(app, &rec.id, users.0).await?, self.vendor_user(app, &rec.id, users.1).await?);
                Change::User(Box::new(users))
            }
            Kind::Group => {
                let before = self.to_group(app, &rec.doc).await.unwrap_or_else(|_| Group {
                    display_name: rec.name().to_string(),
                    external_id: None,
                    members: Vec::new(),
                    extra: Map::new(),
                });
                Change::Group(Box::new((before, self.audited(self.to_group(app, &doc).await, &audit).await?)))
            }
        };
        audit.after = Some(doc.clone());
        self.begin_change(app, &mut audit).await?;
        let result = match &change {
            Change::User(users) => app.adapter.update_user(&rec.vendor_id, &users.0, &users.1).await,
            Change::Group(groups) => app.adapter.update_group(&rec.vendor_id, &groups.0, &groups.1).await,
        };
        if let Err(e) = result {
            let err = self.vendor_error(app, &e);
            if matches!(e.kind(), ErrorKind::NotFound) {
                // Deleted at the vendor behind the gateway's back: forget it, so Entra's next lookup misses
                // and it creates the user again instead of failing on this record forever. The tombstone
                // keeps the vendor id and Entra's externalId: should the vendor show that record again
                // (a 404 it did not mean), a filter does not silently relink it, and only the same Entra
                // user may take it back.
                stamp(&mut audit);
                audit.outcome = Outcome::from(&e);
                audit.status = err.status.as_u16();
                audit.after = None;
                audit.detail =
                    Some(format!("{}; the gateway forgot the record so Entra can create it again", err.detail));
                self.store.remove(&rec, true, &audit).await.map_err(store_err)?;
                return Err(err);
            }
            self.audit_failure(audit, &err, Some(&e)).await;
            return Err(err);
        }
        let at = now();
        let version = rec.version + 1;
        if let Some(obj) = doc.as_object_mut() {
            let meta = json!({
                "resourceType": kind.as_str(),
                "created": rec.created,
                "lastModified": at,
                "version": format!("W/\"{version}\""),
            });
            obj.insert("meta".into(), meta);
        }
        if let Change::User(users) = &change {
            // The vendor may hold the user otherwise than Entra says (Promapp: only Default Access).
            match (app.adapter.held_disabled_reason(&users.0), app.adapter.held_disabled_reason(&users.1)) {
                (None, Some(reason)) => audit.detail = Some(reason),
                (Some(_), None) if users.1.active => {
                    audit.detail = Some("enabled again at the vendor: the user has an app-specific role again".into())
                }
                _ => {}
            }
        }
        let updated = Record { doc, modified: at, version, ..rec };
        audit.after = Some(updated.doc.clone());
        audit.status = 200;
        stamp(&mut audit);
        if let Err(e) = self.store.put(&updated, &audit).await {
            return Err(self.store_err_after_vendor(audit, e).await);
        }
        Ok(updated)
    }

    // ------------------------------------------------------------------ delete

    pub async fn delete(&self, app: &App, ctx: &Ctx, kind: Kind, id: &str) -> ScimResult<Reply> {
        if kind == Kind::Group && Self::maps_groups(app) {
            return self.mapped_group_delete(app, ctx, id).await;
        }
        let guard = self.locks.id(&app.name, kind, id).await.map_err(store_err)?;
        let rec = self.load(app, kind, id).await?;
        let mut audit = self.audit_of(app, ctx, &rec, "delete");
        let caps = app.adapter.capabilities();
        let user = match kind {
            Kind::User => match match Self::to_user(&rec.doc) {
                Ok(u) => self.vendor_user(app, &rec.id, u).await,
                Err(e) => Err(e),
            } {
                Ok(user) => Some(user),
                Err(err) => {
                    self.audit_failure(audit, &err, None).await;
                    return Err(err);
                }
            },
            Kind::Group => None,
        };
        self.begin_change(app, &mut audit).await?;
        let result = match &user {
            Some(user) => app.adapter.delete_user(&rec.vendor_id, user).await,
            None => app.adapter.delete_group(&rec.vendor_id).await,
        };
        match result {
            Ok(()) => {}
            // Already gone at the vendor: the goal of the delete is met.
            Err(e) if matches!(e.kind(), ErrorKind::NotFound) => {
                audit.detail = Some("the vendor no longer had it".into());
            }
            Err(e) => {
                let err = self.vendor_error(app, &e);
                self.audit_failure(audit, &err, Some(&e)).await;
                return Err(err);
            }
        }
        if kind == Kind::User && !caps.hard_delete {
            audit.detail = Some("the vendor only disables users: its record is kept, disabled".into());
        }
        audit.status = 204;
        let tombstone = kind == Kind::User && !caps.hard_delete;
        stamp(&mut audit);
        if let Err(e) = self.store.remove(&rec, tombstone, &audit).await {
            return Err(self.store_err_after_vendor(audit, e).await);
        }
        // The group locks come after no id lock: a group change takes its members' id locks.
        drop(guard);
        self.drop_memberships(app, ctx, id).await;
        Ok(Reply::no_content())
    }

    /// Removes a deleted resource from the shadow's group member lists (the vendor drops memberships of
    /// deleted users itself).
    async fn drop_memberships(&self, app: &App, ctx: &Ctx, member_id: &str) {
        let mapped = Self::maps_groups(app);
        if !app.adapter.capabilities().groups && !mapped {
            return;
        }
        let _serial = match mapped {
            true => match self.locks.app_groups(&app.name).await {
                Ok(guard) => Some(guard),
                // The user is gone; its stale memberships are dropped by the next group change.
                Err(e) => return drop(store_err(e)),
            },
            false => None,
        };
        let Ok(groups) = self.store.list(&app.name, Kind::Group).await else { return };
        for g in groups {
            // A group changed meanwhile (its write is newer than this read) is read again: the store
            // refuses a write from a stale read (`StoreError::Fenced`).
            let mut g = g;
            for _ in 0..3 {
                match self.drop_membership(app, ctx, member_id, &g).await {
                    Err(StoreError::Fenced(_)) => match self.store.get(&app.name, Kind::Group, &g.id).await {
                        Ok(Some(again)) => g = again,
                        _ => break,
                    },
                    Err(e) => {
                        tracing::error!(error = %e, "cannot drop a deleted member from a group");
                        break;
                    }
                    Ok(()) => break,
                }
            }
        }
    }

    /// Removes `member_id` from group `g`'s member list, as the next version of the group.
    async fn drop_membership(&self, app: &App, ctx: &Ctx, member_id: &str, g: &Record) -> StoreResult<()> {
        let Some(members) = g.doc.get("members").and_then(Value::as_array) else { return Ok(()) };
        if !members.iter().any(|m| m.get("value").and_then(Value::as_str) == Some(member_id)) {
            return Ok(());
        }
        let mut doc = g.doc.clone();
        if let Some(list) = doc.get_mut("members").and_then(Value::as_array_mut) {
            list.retain(|m| m.get("value").and_then(Value::as_str) != Some(member_id));
            if list.is_empty() {
                doc.as_object_mut().map(|o| o.remove("members"));
            }
        }
        let mut audit = self.audit(app, ctx, Kind::Group, "drop-member");
        audit.actor = "gateway".into();
        audit.resource_id = Some(g.id.clone());
        audit.name = Some(g.name().to_string());
        audit.before = Some(g.doc.clone());
        audit.after = Some(doc.clone());
        audit.status = 204;
        let updated = self.versioned(g, doc);
        self.store.put(&updated, &audit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(kind: Kind, text: &str) -> Option<IndexHint> {
        index_hint(kind, &filter::parse(text).unwrap())
    }

    #[test]
    fn entra_matching_filters_use_an_index() {
        use IndexHint::*;
        let table = [
            (Kind::User, r#"userName eq "A@x""#, Some(Name("A@x".into()))),
            (Kind::User, r#"userName eq "a" and active eq true"#, Some(Name("a".into()))),
            (Kind::User, r#"active eq true and externalId eq "e1""#, Some(ExternalId("e1".into()))),
            (Kind::User, r#"emails[type eq "work"].value eq "A@x.com""#, Some(WorkEmail("A@x.com".into()))),
            (Kind::User, r#"emails[type eq "home"].value eq "a@x.com""#, None),
            (Kind::User, r#"emails.value eq "a@x.com""#, None),
            (Kind::User, r#"userName eq "a" or userName eq "b""#, None),
            (Kind::User, r#"userName co "a""#, None),
            (Kind::User, r#"id eq "42""#, Some(Id("42".into()))),
            (Kind::Group, r#"displayName eq "G""#, Some(Name("G".into()))),
            (Kind::Group, r#"userName eq "G""#, None),
        ];
        for (kind, text, want) in table {
            assert_eq!(hint(kind, text), want, "{text}");
        }
    }

    #[test]
    fn store_failures_in_the_vendor_path_carry_no_database_text() {
        let db = StoreError::Db(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
            Some("attempt to write a readonly database: /var/lib/scim-bridge/store.sqlite".into()),
        ));
        let json = StoreError::Json(serde_json::from_str::<Value>("{").unwrap_err());
        for err in [db, json] {
            let e = store_err_for_vendor_path(err);
            assert_eq!(e.detail(), STORE_UNAVAILABLE_DETAIL);
            let scim = from_adapter("app", &e);
            assert_eq!(scim.status, StatusCode::SERVICE_UNAVAILABLE);
            for leak in ["sqlite", "database", "readonly", "JSON", "shadow store:"] {
                assert!(!scim.detail.contains(leak), "{leak} in {}", scim.detail);
            }
        }
    }
}
