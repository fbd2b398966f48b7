//! The ProdPad simulator: the REST face `/v1/users` (bearer key, revocable; ProdPad's error bodies; seats for
//! Admin and Editor with the fall-back to Reviewer; duplicate emails refused case-insensitively; `page`/`size`
//! paging), an optional SCIM face at a configurable path (Users only, `roles` taken like REST's `role_type`; PATCH switchable to 501), the "plain
//! HTTP -> 403" and "key blocked -> 403" switches, and an
//! admin view outside the API (`/_sim/users`, and simkit's `/_sim/faults`, `/_sim/counters`) plus the
//! programmatic `SimHandle`. Throttling, 5xx, slow replies, timeouts, dropped connections and lost responses
//! come from the shared `simkit`. Built by `app(sim)` so tests can drive it without sockets;
//! `spawn` serves it on 127.0.0.1:0 through `simkit::spawn_sim`.
//!
//! `https_only` (default off): the simulator itself only speaks plain HTTP, so with the switch on it treats a
//! request as HTTPS only when it carries `X-Forwarded-Proto: https`, and answers every other one 403 the way
//! ProdPad answers plain HTTP.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};

use adapter_api::scim;
use scim::patch::{PatchOp, PATCH_OP_SCHEMA};
use scim::schema::{ResourceKind, USER_SCHEMA};
use simkit::{
    admin_not_found, bearer, filter_matches, list_response, page_params, parse_user_name_filter, patch_ops, scim_error,
    scim_json, spawn_sim, AdminEdit, DemoSim, SimFaults, SimKit, SimServer, Simulator,
};

use crate::model::Role;

/// How to start a simulator.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Default 127.0.0.1:0 (a free port).
    pub listen: SocketAddr,
    /// Accepted API keys. Default `["sim-key"]`.
    pub api_keys: Vec<String>,
    /// Paid Admin seats (default 1).
    pub admin_seats: u32,
    /// Paid Editor seats (default 2).
    pub editor_seats: u32,
    /// When a paid seat is wanted but none is free: false (default) creates the user as Reviewer, true
    /// answers 403 "no seat" (the old docs mention both behaviours).
    pub no_seat_forbidden: bool,
    /// Answer requests without `X-Forwarded-Proto: https` with 403 (default off, see the module comment).
    pub https_only: bool,
    /// Path of the SCIM face (e.g. `/api/v2/scim`); `None` (default) serves no SCIM face.
    pub scim_path: Option<String>,
    /// Faults from the start (default none); change them later with `SimHandle::set_faults`.
    pub faults: SimFaults,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_keys: vec!["sim-key".to_string()],
            admin_seats: 1,
            editor_seats: 2,
            no_seat_forbidden: false,
            https_only: false,
            scim_path: None,
            faults: SimFaults::default(),
        }
    }
}

/// A user as the simulator holds it (also the admin view's shape).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimUser {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub email: String,
    /// The SCIM face's userName (the email for users created through REST).
    pub user_name: String,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub external_id: Option<String>,
    pub role_id: u32,
    pub role_type: String,
    pub timezone: Option<String>,
    pub active: bool,
}

#[derive(Debug, Default)]
struct Store {
    users: BTreeMap<u64, SimUser>,
    next_id: u64,
    keys: Vec<String>,
    revoked: HashSet<String>,
    /// Keys ProdPad has blocked (403 on every request, unlike a revoked key's 401).
    blocked: HashSet<String>,
    /// The SCIM face answers PATCH (true) or 501 (false).
    patch_off: bool,
    admin_seats: u32,
    editor_seats: u32,
    no_seat_forbidden: bool,
    https_only: bool,
    /// Every JSON body the SCIM face received, in order (tests check what the adapter forwards).
    scim_bodies: Vec<Value>,
}

impl Store {
    fn seats_used(&self, role: Role) -> u32 {
        let n = self.users.values().filter(|u| u.active && u.role_type == role.as_str()).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// The role a new user gets: the wanted paid role if a seat is free, else Reviewer (or `None` when the
    /// simulator is set to refuse).
    fn grant(&self, wanted: Role) -> Option<Role> {
        let free = match wanted {
            Role::Admin => self.seats_used(Role::Admin) < self.admin_seats,
            Role::Editor => self.seats_used(Role::Editor) < self.editor_seats,
            Role::Reviewer => true,
        };
        match (free, self.no_seat_forbidden) {
            (true, _) => Some(wanted),
            (false, true) => None,
            (false, false) => Some(Role::Reviewer),
        }
    }

    fn email_taken(&self, email: &str, except: Option<&str>) -> bool {
        self.users.values().any(|u| u.email.eq_ignore_ascii_case(email.trim()) && Some(u.id.as_str()) != except)
    }

    fn user_name_taken(&self, user_name: &str, except: Option<&str>) -> bool {
        self.users.values().any(|u| u.user_name.eq_ignore_ascii_case(user_name.trim()) && Some(u.id.as_str()) != except)
    }

    fn insert(&mut self, mut user: SimUser) -> SimUser {
        self.next_id += 1;
        let id = 1000 + self.next_id;
        user.id = id.to_string();
        self.users.insert(id, user.clone());
        user
    }

    fn by_id(&mut self, id: &str) -> Option<&mut SimUser> {
        self.users.get_mut(&id.parse::<u64>().ok()?)
    }
}

fn role_id(role: Role) -> u32 {
    match role {
        Role::Admin => 1,
        Role::Editor => 2,
        Role::Reviewer => 3,
    }
}

/// The shared state behind one simulator.
#[derive(Debug)]
pub struct Sim {
    store: Mutex<Store>,
    scim_path: Option<String>,
}

impl Sim {
    pub fn new(opts: &SimOptions) -> Arc<Sim> {
        let store = Store {
            keys: opts.api_keys.clone(),
            admin_seats: opts.admin_seats,
            editor_seats: opts.editor_seats,
            no_seat_forbidden: opts.no_seat_forbidden,
            https_only: opts.https_only,
            ..Store::default()
        };
        let scim_path = opts.scim_path.as_deref().map(|p| format!("/{}", p.trim_matches('/')));
        Arc::new(Sim { store: Mutex::new(store), scim_path })
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `None` when the request may go on; else ProdPad's answer (403 plain HTTP, 401 key).
    fn gate(&self, headers: &HeaderMap) -> Option<(StatusCode, &'static str)> {
        let store = self.store();
        if store.https_only {
            let https = headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("https"));
            if !https {
                return Some((StatusCode::FORBIDDEN, "The API is only available over HTTPS"));
            }
        }
        match bearer(headers) {
            None => Some((StatusCode::UNAUTHORIZED, "API key missing")),
            Some(k) if store.revoked.contains(k) || !store.keys.iter().any(|known| known == k) => {
                Some((StatusCode::UNAUTHORIZED, "Invalid API key"))
            }
            Some(k) if store.blocked.contains(k) => Some((StatusCode::FORBIDDEN, "This API key has been blocked")),
            Some(_) => None,
        }
    }
}

/// ProdPad's error body.
fn pp_error(status: StatusCode, developer: &str) -> Response {
    let user_message = match status {
        StatusCode::UNAUTHORIZED => "You are not authorised. Check your API key.",
        StatusCode::FORBIDDEN => "You are not allowed to do this.",
        StatusCode::NOT_FOUND => "Not found.",
        _ => "Something was wrong with the request.",
    };
    (status, Json(json!({"success": false, "developer_message": developer, "user_message": user_message})))
        .into_response()
}

fn rest_view(u: &SimUser) -> Value {
    json!({
        "id": u.id.parse::<u64>().ok(), "username": u.username, "display_name": u.display_name, "email": u.email,
        "role_id": u.role_id, "role_type": u.role_type, "timezone": u.timezone, "active": u.active,
    })
}

fn scim_view(u: &SimUser, base: &str) -> Value {
    let mut name = serde_json::Map::new();
    if let Some(g) = &u.given_name {
        name.insert("givenName".into(), json!(g));
    }
    if let Some(f) = &u.family_name {
        name.insert("familyName".into(), json!(f));
    }
    let mut doc = json!({
        "schemas": [USER_SCHEMA], "id": u.id, "userName": u.user_name, "active": u.active,
        "displayName": u.display_name,
        "emails": [{"value": u.email, "type": "work", "primary": true}],
        "meta": {"resourceType": "User", "location": format!("{base}/Users/{}", u.id)},
    });
    if !name.is_empty() {
        doc["name"] = Value::Object(name);
    }
    if let Some(x) = &u.external_id {
        doc["externalId"] = json!(x);
    }
    doc["roles"] = json!([{"value": u.role_type, "primary": true}]);
    doc
}

fn display_of(given: Option<&str>, family: Option<&str>, email: &str) -> String {
    let joined = [given, family].into_iter().flatten().collect::<Vec<_>>().join(" ");
    if joined.trim().is_empty() {
        email.to_string()
    } else {
        joined.trim().to_string()
    }
}

/// The simulator's HTTP app.
pub fn app(sim: Arc<Sim>) -> Router {
    let mut router = Router::new()
        .route("/v1/users", get(rest_list).post(rest_create))
        .route("/v1/users/{id}", get(rest_get))
        .route("/_sim/users", get(admin_users).post(admin_add))
        .route("/_sim/users/{user_name}", axum::routing::patch(admin_edit).delete(admin_delete));
    if let Some(path) = sim.scim_path.clone() {
        router = router.route(&format!("{path}/Users"), get(scim_list).post(scim_create)).route(
            &format!("{path}/Users/{{id}}"),
            get(scim_get).put(scim_replace).patch(scim_patch).delete(scim_delete),
        );
    }
    router.with_state(sim)
}

async fn admin_users(State(sim): State<Arc<Sim>>) -> Json<Vec<SimUser>> {
    Json(sim.store().users.values().cloned().collect())
}

/// The vendor's admin UI adds a user (a Reviewer; its email is the userName).
async fn admin_add(State(sim): State<Arc<Sim>>, Json(edit): Json<AdminEdit>) -> Response {
    let Some(user_name) = edit.user_name.clone().filter(|u| !u.trim().is_empty()) else {
        return (StatusCode::BAD_REQUEST, "userName is required").into_response();
    };
    let mut store = sim.store();
    if store.email_taken(&user_name, None) || store.user_name_taken(&user_name, None) {
        return (StatusCode::CONFLICT, "taken").into_response();
    }
    let user = SimUser {
        id: String::new(),
        username: user_name.clone(),
        display_name: display_of(edit.given_name.as_deref(), edit.family_name.as_deref(), &user_name),
        email: user_name.clone(),
        user_name,
        given_name: edit.given_name,
        family_name: edit.family_name,
        external_id: None,
        role_id: role_id(Role::Reviewer),
        role_type: Role::Reviewer.as_str().into(),
        timezone: None,
        active: edit.active.unwrap_or(true),
    };
    (StatusCode::CREATED, Json(store.insert(user))).into_response()
}

/// The vendor's admin UI edits a user found by userName or email.
async fn admin_edit(
    State(sim): State<Arc<Sim>>,
    Path(user_name): Path<String>,
    Json(edit): Json<AdminEdit>,
) -> Response {
    let mut store = sim.store();
    let Some(u) = store.users.values_mut().find(|u| u.user_name.eq_ignore_ascii_case(&user_name)) else {
        return admin_not_found(&user_name);
    };
    if let Some(a) = edit.active {
        u.active = a;
    }
    if edit.given_name.is_some() {
        u.given_name = edit.given_name;
    }
    if edit.family_name.is_some() {
        u.family_name = edit.family_name;
    }
    if let Some(new) = edit.user_name {
        u.user_name = new.clone();
        u.email = new;
    }
    u.display_name = display_of(u.given_name.as_deref(), u.family_name.as_deref(), &u.email);
    Json(u.clone()).into_response()
}

/// The vendor's admin UI removes a user.
async fn admin_delete(State(sim): State<Arc<Sim>>, Path(user_name): Path<String>) -> Response {
    let mut store = sim.store();
    let before = store.users.len();
    store.users.retain(|_, u| !u.user_name.eq_ignore_ascii_case(&user_name));
    if store.users.len() == before {
        return admin_not_found(&user_name);
    }
    StatusCode::NO_CONTENT.into_response()
}

// ---- REST face -------------------------------------------------------------------------------------------

async fn rest_list(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if let Some((status, msg)) = sim.gate(&headers) {
        return pp_error(status, msg);
    }
    let page = q.get("page").and_then(|p| p.parse::<usize>().ok()).filter(|p| *p >= 1).unwrap_or(1);
    let size = q.get("size").and_then(|s| s.parse::<usize>().ok()).filter(|s| *s >= 1).unwrap_or(20).min(100);
    let store = sim.store();
    let total = store.users.len();
    let users: Vec<Value> =
        store.users.values().skip((page - 1).saturating_mul(size)).take(size).map(rest_view).collect();
    Json(json!({"count": users.len(), "total": total, "page": page, "size": size, "users": users})).into_response()
}

async fn rest_get(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some((status, msg)) = sim.gate(&headers) {
        return pp_error(status, msg);
    }
    match sim.store().by_id(&id) {
        Some(u) => Json(rest_view(u)).into_response(),
        None => pp_error(StatusCode::NOT_FOUND, "User not found"),
    }
}

async fn rest_create(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some((status, msg)) = sim.gate(&headers) {
        return pp_error(status, msg);
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(email) = body.get("email").and_then(Value::as_str).map(str::trim).filter(|e| !e.is_empty()) else {
        return pp_error(StatusCode::BAD_REQUEST, "The email field is required");
    };
    let wanted = body.get("role_type").and_then(Value::as_str).and_then(Role::parse).unwrap_or(Role::Reviewer);
    let name = body.get("name").and_then(Value::as_str).map(str::trim).filter(|n| !n.is_empty());
    let timezone = body.get("timezone").and_then(Value::as_str).map(str::to_string);
    let mut store = sim.store();
    if store.email_taken(email, None) {
        return pp_error(StatusCode::FORBIDDEN, "That email address is already in use by another user");
    }
    let Some(role) = store.grant(wanted) else {
        return pp_error(StatusCode::FORBIDDEN, &format!("No seat available for the {} role", wanted.as_str()));
    };
    let (given, family) = match name.map(|n| n.split_once(' ').unwrap_or((n, ""))) {
        Some((g, f)) => (Some(g.to_string()), Some(f.trim().to_string()).filter(|f| !f.is_empty())),
        None => (None, None),
    };
    let user = store.insert(SimUser {
        id: String::new(),
        username: email.split('@').next().unwrap_or(email).to_string(),
        display_name: name.map(str::to_string).unwrap_or_else(|| email.to_string()),
        email: email.to_string(),
        user_name: email.to_string(),
        given_name: given,
        family_name: family,
        external_id: None,
        role_id: role_id(role),
        role_type: role.as_str().to_string(),
        timezone,
        active: true,
    });
    let reply = json!({
        "id": user.id.parse::<u64>().ok(), "username": user.username, "display_name": user.display_name,
        "email": user.email, "role_id": user.role_id, "role_type": user.role_type,
    });
    (StatusCode::CREATED, Json(reply)).into_response()
}

// ---- SCIM face -------------------------------------------------------------------------------------------

fn scim_base(sim: &Sim) -> String {
    sim.scim_path.clone().unwrap_or_default()
}

fn scim_gate(sim: &Sim, headers: &HeaderMap) -> Option<Response> {
    sim.gate(headers).map(|(status, msg)| scim_error(status, None, msg))
}

async fn scim_list(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if let Some(r) = scim_gate(&sim, &headers) {
        return r;
    }
    let wanted = match q.get("filter").map(|f| parse_user_name_filter(f)) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(e)) => return scim_error(StatusCode::BAD_REQUEST, Some("invalidFilter"), &e.to_string()),
    };
    let (start, count) = page_params(&q, 100, 100);
    let base = scim_base(&sim);
    let store = sim.store();
    let matching: Vec<Value> = store
        .users
        .values()
        .map(|u| scim_view(u, &base))
        .filter(|doc| wanted.as_ref().is_none_or(|f| filter_matches(f, doc)))
        .collect();
    let total = matching.len();
    let page: Vec<Value> = matching.into_iter().skip(start - 1).take(count).collect();
    list_response(page, total, start)
}

/// The SCIM attributes the face keeps, read from a full resource.
struct ScimFields {
    user_name: String,
    email: String,
    given: Option<String>,
    family: Option<String>,
    external_id: Option<String>,
    active: bool,
    /// The first `roles` entry's value read like REST's `role_type` (an unknown name is Reviewer); `None`
    /// when the body has no roles, which leaves the user's role as it is.
    role: Option<Role>,
}

fn scim_fields(doc: &Value) -> Result<ScimFields, Box<Response>> {
    let Some(user_name) = doc.get("userName").and_then(Value::as_str).map(str::trim).filter(|u| !u.is_empty()) else {
        return Err(Box::new(scim_error(StatusCode::BAD_REQUEST, Some("invalidValue"), "userName is required")));
    };
    let email = doc
        .get("emails")
        .and_then(Value::as_array)
        .and_then(|list| {
            list.iter()
                .find(|e| e.get("type").and_then(Value::as_str) == Some("work"))
                .or_else(|| list.first())
                .and_then(|e| e.get("value"))
                .and_then(Value::as_str)
        })
        .unwrap_or(user_name);
    let active = match doc.get("active") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(Box::new(scim_error(StatusCode::BAD_REQUEST, Some("invalidValue"), "active must be a boolean")))
        }
    };
    let name_part = |k: &str| doc.get("name").and_then(|n| n.get(k)).and_then(Value::as_str).map(str::to_string);
    Ok(ScimFields {
        user_name: user_name.to_string(),
        email: email.trim().to_string(),
        given: name_part("givenName"),
        family: name_part("familyName"),
        external_id: doc.get("externalId").and_then(Value::as_str).map(str::to_string),
        active,
        role: doc
            .get("roles")
            .and_then(Value::as_array)
            .and_then(|list| list.first())
            .map(|first| first.get("value").and_then(Value::as_str).and_then(Role::parse).unwrap_or(Role::Reviewer)),
    })
}

/// The role a SCIM write gives the user: its current one unless the body names another, which takes a
/// seat like a REST create (no seat: Reviewer, or 403 when the simulator is set to refuse).
fn scim_role(store: &Store, current: Option<&SimUser>, wanted: Option<Role>) -> Result<Role, Box<Response>> {
    let current_role = current.and_then(|u| Role::parse(&u.role_type)).unwrap_or(Role::Reviewer);
    let Some(wanted) = wanted.filter(|w| *w != current_role) else { return Ok(current_role) };
    store.grant(wanted).ok_or_else(|| {
        let detail = format!("No seat available for the {} role", wanted.as_str());
        Box::new(scim_error(StatusCode::FORBIDDEN, None, &detail))
    })
}

fn apply_fields(u: &mut SimUser, f: ScimFields, role: Role) {
    u.role_id = role_id(role);
    u.role_type = role.as_str().to_string();
    u.display_name = display_of(f.given.as_deref(), f.family.as_deref(), &f.email);
    u.user_name = f.user_name;
    u.email = f.email;
    u.given_name = f.given;
    u.family_name = f.family;
    u.external_id = f.external_id;
    u.active = f.active;
}

fn read_scim_body(sim: &Sim, body: &Bytes) -> Result<Value, Box<Response>> {
    let doc: Value = serde_json::from_slice(body)
        .map_err(|_| Box::new(scim_error(StatusCode::BAD_REQUEST, Some("invalidSyntax"), "body is not JSON")))?;
    sim.store().scim_bodies.push(doc.clone());
    Ok(doc)
}

async fn scim_create(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = scim_gate(&sim, &headers) {
        return r;
    }
    let fields = match read_scim_body(&sim, &body).and_then(|d| scim_fields(&d)) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let mut store = sim.store();
    if store.user_name_taken(&fields.user_name, None) || store.email_taken(&fields.email, None) {
        return scim_error(StatusCode::CONFLICT, Some("uniqueness"), "a user with this userName or email exists");
    }
    let role = match scim_role(&store, None, fields.role) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let mut user = SimUser {
        id: String::new(),
        username: fields.email.split('@').next().unwrap_or_default().to_string(),
        display_name: String::new(),
        email: String::new(),
        user_name: String::new(),
        given_name: None,
        family_name: None,
        external_id: None,
        role_id: role_id(Role::Reviewer),
        role_type: Role::Reviewer.as_str().to_string(),
        timezone: None,
        active: true,
    };
    apply_fields(&mut user, fields, role);
    let user = store.insert(user);
    let doc = scim_view(&user, &scim_base(&sim));
    scim_json(StatusCode::CREATED, doc)
}

async fn scim_get(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(r) = scim_gate(&sim, &headers) {
        return r;
    }
    let base = scim_base(&sim);
    match sim.store().by_id(&id) {
        Some(u) => scim_json(StatusCode::OK, scim_view(u, &base)),
        None => scim_error(StatusCode::NOT_FOUND, None, "user not found"),
    }
}

async fn scim_replace(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Some(r) = scim_gate(&sim, &headers) {
        return r;
    }
    let fields = match read_scim_body(&sim, &body).and_then(|d| scim_fields(&d)) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let base = scim_base(&sim);
    let mut store = sim.store();
    write_fields(&mut store, &id, fields, &base)
}

/// Writes `fields` over user `id` (a PUT, or the result of a PATCH): unique userName and email, then the
/// role's seat.
fn write_fields(store: &mut Store, id: &str, fields: ScimFields, base: &str) -> Response {
    if store.user_name_taken(&fields.user_name, Some(id)) || store.email_taken(&fields.email, Some(id)) {
        return scim_error(StatusCode::CONFLICT, Some("uniqueness"), "a user with this userName or email exists");
    }
    let current = id.parse::<u64>().ok().and_then(|n| store.users.get(&n));
    let role = match scim_role(store, current, fields.role) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    match store.by_id(id) {
        Some(u) => {
            apply_fields(u, fields, role);
            scim_json(StatusCode::OK, scim_view(u, base))
        }
        None => scim_error(StatusCode::NOT_FOUND, None, "user not found"),
    }
}

/// The paths the SCIM face takes in a PATCH; any other is refused `invalidPath`.
const PATCH_PATHS: [&str; 8] =
    ["userName", "active", "externalId", "displayName", "name.givenName", "name.familyName", "emails", "roles"];
const PATCH_WORK_EMAIL: &str = "emails[type eq \"work\"].value";

/// The first path `op` writes that the face does not take (a path-less value by its keys, `name` by
/// sub-attribute).
fn unsupported_path(op: &PatchOp) -> Option<String> {
    let written: Vec<String> = match (&op.path, &op.value) {
        (Some(path), _) => vec![path.clone()],
        (None, Some(Value::Object(members))) => members
            .iter()
            .flat_map(|(k, v)| match (k.as_str(), v.as_object()) {
                ("name", Some(name)) => name.keys().map(|sub| format!("name.{sub}")).collect(),
                ("name", None) => Vec::new(),
                _ => vec![k.clone()],
            })
            .collect(),
        (None, _) => Vec::new(),
    };
    written.into_iter().find(|p| !PATCH_PATHS.contains(&p.as_str()) && !p.eq_ignore_ascii_case(PATCH_WORK_EMAIL))
}

async fn scim_patch(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Response {
    if let Some(r) = scim_gate(&sim, &headers) {
        return r;
    }
    if sim.store().patch_off {
        return scim_error(StatusCode::NOT_IMPLEMENTED, None, "PATCH is not supported; use PUT");
    }
    let req = match read_scim_body(&sim, &body) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    // Unlike the gateway, the face insists on the PatchOp schema.
    let schemas_ok =
        req.get("schemas").and_then(Value::as_array).is_some_and(|s| s.iter().any(|x| x == PATCH_OP_SCHEMA));
    if !schemas_ok {
        return scim_error(StatusCode::BAD_REQUEST, Some("invalidSyntax"), "not a PatchOp request");
    }
    let ops = match patch_ops(&req) {
        Ok(ops) => ops,
        Err(e) => return scim_error(StatusCode::BAD_REQUEST, Some(e.scim_type), &e.detail),
    };
    let base = scim_base(&sim);
    let mut store = sim.store();
    let Some(mut doc) = store.by_id(&id).map(|u| scim_view(u, &base)) else {
        return scim_error(StatusCode::NOT_FOUND, None, "user not found");
    };
    if let Some(path) = ops.iter().find_map(unsupported_path) {
        return scim_error(StatusCode::BAD_REQUEST, Some("invalidPath"), &format!("unsupported path `{path}`"));
    }
    if let Err(e) = scim::patch::apply(ResourceKind::User, &mut doc, &ops) {
        return scim_error(StatusCode::BAD_REQUEST, Some(e.scim_type), &e.detail);
    }
    let fields = match scim_fields(&doc) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    write_fields(&mut store, &id, fields, &base)
}

async fn scim_delete(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(r) = scim_gate(&sim, &headers) {
        return r;
    }
    let mut store = sim.store();
    match id.parse::<u64>().ok().and_then(|n| store.users.remove(&n)) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => scim_error(StatusCode::NOT_FOUND, None, "user not found"),
    }
}

// ---- running it ------------------------------------------------------------------------------------------

/// A running simulator. Dropping it stops the server.
#[derive(Debug)]
pub struct SimHandle {
    server: SimServer,
    kit: SimKit,
    sim: Arc<Sim>,
}

/// Starts a simulator on `opts.listen` (default 127.0.0.1:0), with the shared simkit's faults and counters
/// on every API route and its `/_sim/faults` and `/_sim/counters` admin routes. Test infrastructure: panics
/// if the address cannot be bound (`try_spawn` returns the error instead).
pub async fn spawn(opts: SimOptions) -> SimHandle {
    try_spawn(opts).await.expect("prodpad simulator: cannot bind its listen address")
}

/// `spawn`, returning a bind failure instead of panicking.
pub async fn try_spawn(opts: SimOptions) -> std::io::Result<SimHandle> {
    let sim = Sim::new(&opts);
    let kit = SimKit::new(opts.faults.clone());
    let server = spawn_sim(kit.wrap(app(sim.clone())), Some(opts.listen)).await?;
    Ok(SimHandle { server, kit, sim })
}

/// The path of the SCIM face `demo` serves (ProdPad's real SCIM path is not public).
pub const DEMO_SCIM_PATH: &str = "/api/v2/scim";

/// Starts a simulator accepting `credential`, with the SCIM face on, and returns it with the options of a
/// scim-mode app in front of it (for `scim-bridge demo` and `scim-bridge simulate`). scim mode is the one
/// that can deprovision, so the demo's walkthrough shows the whole lifecycle.
pub async fn demo(credential: &str, addr: Option<SocketAddr>) -> std::io::Result<DemoSim> {
    let mut opts = SimOptions {
        api_keys: vec![credential.to_string()],
        scim_path: Some(DEMO_SCIM_PATH.to_string()),
        ..SimOptions::default()
    };
    if let Some(addr) = addr {
        opts.listen = addr;
    }
    let handle = try_spawn(opts).await?;
    let mut app_options = serde_json::Map::new();
    app_options.insert("mode".into(), json!("scim"));
    app_options.insert("base_url".into(), json!(handle.scim_base()));
    app_options.insert("api_key".into(), json!(credential));
    // The simulator keeps roles: the demo sends them (`scim_roles` is off by default for real ProdPads).
    app_options.insert("scim_roles".into(), json!(true));
    Ok(DemoSim { sim: Box::new(handle), app_options })
}

impl Simulator for SimHandle {
    fn vendor(&self) -> &'static str {
        "prodpad"
    }
    fn server(&self) -> &SimServer {
        &self.server
    }
    fn kit(&self) -> &SimKit {
        &self.kit
    }
    fn users_json(&self) -> Vec<Value> {
        self.users().iter().filter_map(|u| serde_json::to_value(u).ok()).collect()
    }
}

impl SimHandle {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.server.base_url.clone()
    }

    /// The REST base to configure (`.../v1`).
    pub fn rest_base(&self) -> String {
        format!("{}/v1", self.url())
    }

    /// The SCIM base to configure, when the SCIM face is on.
    pub fn scim_base(&self) -> Option<String> {
        self.sim.scim_path.as_ref().map(|p| format!("{}{p}", self.url()))
    }

    pub fn users(&self) -> Vec<SimUser> {
        self.sim.store().users.values().cloned().collect()
    }

    /// The user with this email, ignoring case.
    pub fn user_by_email(&self, email: &str) -> Option<SimUser> {
        self.sim.store().users.values().find(|u| u.email.eq_ignore_ascii_case(email)).cloned()
    }

    /// The user with this SCIM userName, ignoring case.
    pub fn user_by_user_name(&self, user_name: &str) -> Option<SimUser> {
        self.sim.store().users.values().find(|u| u.user_name.eq_ignore_ascii_case(user_name)).cloned()
    }

    /// Adds a user directly (as if created in ProdPad's UI) and returns its id.
    pub fn seed(&self, email: &str, display_name: &str, role: Role) -> String {
        let user = SimUser {
            id: String::new(),
            username: email.split('@').next().unwrap_or(email).to_string(),
            display_name: display_name.to_string(),
            email: email.to_string(),
            user_name: email.to_string(),
            given_name: None,
            family_name: None,
            external_id: None,
            role_id: role_id(role),
            role_type: role.as_str().to_string(),
            timezone: None,
            active: true,
        };
        self.sim.store().insert(user).id
    }

    /// Revokes a key (as regenerating it in ProdPad does): it is answered 401 from now on.
    pub fn revoke_key(&self, key: &str) {
        self.sim.store().revoked.insert(key.to_string());
    }

    /// Blocks a key (ProdPad's "key blocked"): every request with it is answered 403 from now on.
    pub fn block_key(&self, key: &str) {
        self.sim.store().blocked.insert(key.to_string());
    }

    /// Switches the SCIM face's PATCH on (default) or off (501), so both patch strategies get exercised.
    pub fn set_patch_supported(&self, on: bool) {
        self.sim.store().patch_off = !on;
    }

    pub fn set_https_only(&self, on: bool) {
        self.sim.store().https_only = on;
    }

    /// Every JSON body the SCIM face received, in order.
    pub fn scim_bodies(&self) -> Vec<Value> {
        self.sim.store().scim_bodies.clone()
    }
}

/// The simulator in the vendor registry (`adapter_api::Vendor::simulator`).
pub static SPEC: simkit::SimSpec = simkit::SimSpec {
    start: |credential, addr| Box::pin(async move { demo(&credential, addr).await }),
    credential_key: "api_key",
    credential_expiry_key: None,
    demo_group_roles: &[("ProdPad Admins", "Admin"), ("ProdPad Editors", "Editor")],
    demo_role: None,
};
