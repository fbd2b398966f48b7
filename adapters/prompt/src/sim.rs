//! The PROMPT simulator: SCIM at `/api/authentication/scim/Users` (path case-insensitive), one static bearer
//! code per organisation (401 otherwise), 403 unless the org has SSO and provisioning on, org defaults
//! for department/section applied at create (or the assumed PROMPT extension), unique userName and email,
//! a per-user `has_permissions` flag that makes a disable fail with 409, unknown attributes refused (400)
//! or ignored, `userName eq` filter only (`emails.value eq` behind a flag), paging, DELETE disabling or
//! 405, `/Groups` → 501; faults, throttle and counters from `simkit`. Admin view:
//! `/_sim/users`, `/_sim/users/{userName}` (GET, PUT `{has_permissions}`), `/_sim/org`, `/_sim/flags`,
//! `/_sim/faults`, `/_sim/counters`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use simkit::{
    self, admin_not_found, apply_patch, bearer, list_response, page_params, scim_error, scim_json, scim_path,
    AdminEdit, ScimPath, SimFaults, SimKit, SimServer,
};

use crate::model::{PromptUser, PROMPT_EXT};

pub const SCIM_BASE: &str = "/api/authentication/scim";
pub const MAX_PAGE: usize = 100;

/// The organisation's settings (Edit Organisation > Azure AD).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgSettings {
    pub default_department: String,
    pub default_section: String,
    pub provisioning_enabled: bool,
    pub sso_enabled: bool,
    pub tenancy_id: String,
}

impl Default for OrgSettings {
    fn default() -> Self {
        OrgSettings {
            default_department: "Corporate Services".into(),
            default_section: "All Staff".into(),
            provisioning_enabled: true,
            sso_enabled: true,
            tenancy_id: "00000000-0000-4000-8000-000000000001".into(),
        }
    }
}

/// Switches settable at runtime (`GET/PUT /_sim/flags`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimFlags {
    /// Unknown attributes → 400 (true, default) or ignored (false).
    pub strict_attributes: bool,
    /// DELETE disables the user (true, default) or answers 405 (false).
    pub delete_disables: bool,
    /// PATCH supported (true, default: Entra itself sends PATCH to PROMPT) or 501.
    pub patch_supported: bool,
    /// `emails.value eq "x"` filters answered (true) or refused like any filter but `userName eq` (false,
    /// default: PROMPT documents no filters).
    #[serde(default)]
    pub email_filter: bool,
}

impl Default for SimFlags {
    fn default() -> Self {
        SimFlags { strict_attributes: true, delete_disables: true, patch_supported: true, email_filter: false }
    }
}

/// How the simulator starts.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Accepted Provisioning Authentication Codes (one organisation).
    pub auth_codes: Vec<String>,
    /// Listen address; default `127.0.0.1:0`.
    pub addr: Option<SocketAddr>,
    pub org: OrgSettings,
    pub flags: SimFlags,
    pub faults: SimFaults,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            auth_codes: vec!["prompt-sim-code".into()],
            addr: None,
            org: OrgSettings::default(),
            flags: SimFlags::default(),
            faults: SimFaults::default(),
        }
    }
}

/// A user as the simulator keeps it: the SCIM face plus PROMPT-only state.
#[derive(Clone, Debug, PartialEq, Serialize)]
struct SimUser {
    #[serde(flatten)]
    scim: PromptUser,
    department: String,
    section: String,
    has_permissions: bool,
}

#[derive(Debug)]
struct Store {
    users: BTreeMap<u64, SimUser>,
    next_id: u64,
    codes: Vec<String>,
    org: OrgSettings,
    flags: SimFlags,
}

#[derive(Clone, Debug)]
struct Shared(Arc<Mutex<Store>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn vendor_id(n: u64) -> String {
    format!("{n:08x}-7a1e-4c0d-9000-{n:012x}")
}

fn parse_id(id: &str) -> Option<u64> {
    let (head, _) = id.split_once('-')?;
    u64::from_str_radix(head, 16).ok().filter(|n| vendor_id(*n) == id)
}

/// The admin view of a user: SCIM attributes plus `department`, `section`, `has_permissions`.
fn admin_view(u: &SimUser) -> Value {
    let mut doc = serde_json::to_value(u).unwrap_or(Value::Null);
    if let Some(obj) = doc.as_object_mut() {
        obj.remove(PROMPT_EXT);
    }
    doc
}

/// A running simulator and programmatic access to its state.
#[derive(Debug)]
pub struct SimHandle {
    server: SimServer,
    kit: SimKit,
    state: Shared,
}

/// Starts the simulator.
pub async fn spawn(opts: SimOptions) -> std::io::Result<SimHandle> {
    let state = Shared(Arc::new(Mutex::new(Store {
        users: BTreeMap::new(),
        next_id: 1,
        codes: opts.auth_codes,
        org: opts.org,
        flags: opts.flags,
    })));
    let kit = SimKit::new(opts.faults);
    let router = Router::new()
        .route("/_sim/users", get(admin_users).post(admin_add))
        .route("/_sim/users/{user_name}", get(admin_user).put(admin_set_user).patch(admin_edit).delete(admin_delete))
        .route("/_sim/org", get(get_org).put(put_org))
        .route("/_sim/flags", get(get_flags).put(put_flags))
        .route("/{*path}", any(scim))
        .with_state(state.clone());
    let server = simkit::spawn_sim(kit.wrap(router), opts.addr).await?;
    Ok(SimHandle { server, kit, state })
}

impl SimHandle {
    pub fn base_url(&self) -> &str {
        &self.server.base_url
    }
    /// The SCIM base for the adapter's `base_url`.
    pub fn scim_base(&self) -> String {
        format!("{}{SCIM_BASE}", self.server.base_url)
    }
    /// The admin view of a user by userName (case-insensitive).
    pub fn user(&self, user_name: &str) -> Option<Value> {
        let s = self.state.lock();
        s.users.values().find(|u| u.scim.user_name.eq_ignore_ascii_case(user_name)).map(admin_view)
    }
    pub fn users(&self) -> Vec<Value> {
        self.state.lock().users.values().map(admin_view).collect()
    }
    /// Sets the flag that makes PROMPT refuse to disable the user. False when there is no such user.
    pub fn set_has_permissions(&self, user_name: &str, on: bool) -> bool {
        let mut s = self.state.lock();
        match s.users.values_mut().find(|u| u.scim.user_name.eq_ignore_ascii_case(user_name)) {
            Some(u) => {
                u.has_permissions = on;
                true
            }
            None => false,
        }
    }
    pub fn org(&self) -> OrgSettings {
        self.state.lock().org.clone()
    }
    pub fn set_org(&self, org: OrgSettings) {
        self.state.lock().org = org;
    }
    pub fn flags(&self) -> SimFlags {
        self.state.lock().flags.clone()
    }
    pub fn set_flags(&self, flags: SimFlags) {
        self.state.lock().flags = flags;
    }
}

async fn admin_users(State(s): State<Shared>) -> Json<Vec<Value>> {
    Json(s.lock().users.values().map(admin_view).collect())
}

async fn admin_user(State(s): State<Shared>, Path(user_name): Path<String>) -> Response {
    let store = s.lock();
    match store.users.values().find(|u| u.scim.user_name.eq_ignore_ascii_case(&user_name)) {
        Some(u) => Json(admin_view(u)).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserFlags {
    has_permissions: bool,
}

async fn admin_set_user(State(s): State<Shared>, Path(user_name): Path<String>, Json(f): Json<UserFlags>) -> Response {
    let mut store = s.lock();
    match store.users.values_mut().find(|u| u.scim.user_name.eq_ignore_ascii_case(&user_name)) {
        Some(u) => {
            u.has_permissions = f.has_permissions;
            Json(admin_view(u)).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The vendor's admin UI adds a user (its body as a SCIM create would carry it, so the same rules apply).
async fn admin_add(State(s): State<Shared>, Json(edit): Json<AdminEdit>) -> Response {
    create(&mut s.lock(), edit.scim_create_body().to_string().as_bytes())
}

/// The vendor's admin UI edits a user found by userName.
async fn admin_edit(State(s): State<Shared>, Path(user_name): Path<String>, Json(edit): Json<AdminEdit>) -> Response {
    let mut store = s.lock();
    let Some(u) = store.users.values_mut().find(|u| u.scim.user_name.eq_ignore_ascii_case(&user_name)) else {
        return admin_not_found(&user_name);
    };
    let mut doc = serde_json::to_value(&u.scim).unwrap_or(Value::Null);
    edit.apply_to_scim(&mut doc);
    match serde_json::from_value::<PromptUser>(doc) {
        Ok(edited) => {
            u.scim = edited;
            Json(admin_view(u)).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

/// The vendor's admin UI removes a user.
async fn admin_delete(State(s): State<Shared>, Path(user_name): Path<String>) -> Response {
    let mut store = s.lock();
    let before = store.users.len();
    store.users.retain(|_, u| !u.scim.user_name.eq_ignore_ascii_case(&user_name));
    if store.users.len() == before {
        return admin_not_found(&user_name);
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn get_org(State(s): State<Shared>) -> Json<OrgSettings> {
    Json(s.lock().org.clone())
}

async fn put_org(State(s): State<Shared>, Json(org): Json<OrgSettings>) -> Json<OrgSettings> {
    s.lock().org = org.clone();
    Json(org)
}

async fn get_flags(State(s): State<Shared>) -> Json<SimFlags> {
    Json(s.lock().flags.clone())
}

async fn put_flags(State(s): State<Shared>, Json(flags): Json<SimFlags>) -> Json<SimFlags> {
    s.lock().flags = flags.clone();
    Json(flags)
}

async fn scim(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
    body: Bytes,
) -> Response {
    let route = scim_path(uri.path(), SCIM_BASE);
    if route == ScimPath::Other {
        return scim_error(StatusCode::NOT_FOUND, None, "no such endpoint");
    }
    let mut store = s.lock();
    if !bearer(&headers).is_some_and(|code| store.codes.iter().any(|c| c == code)) {
        return scim_error(StatusCode::UNAUTHORIZED, None, "Invalid provisioning authentication code");
    }
    if !(store.org.provisioning_enabled && store.org.sso_enabled) {
        return scim_error(
            StatusCode::FORBIDDEN,
            None,
            "Automated user provisioning is not enabled for this organisation",
        );
    }
    match (route, method) {
        (ScimPath::Groups, _) => scim_error(StatusCode::NOT_IMPLEMENTED, None, "Groups are not supported"),
        (ScimPath::Users, Method::GET) => list(&store, &query),
        (ScimPath::Users, Method::POST) => create(&mut store, &body),
        (ScimPath::User(id), m) => {
            let Some(n) = parse_id(&id).filter(|n| store.users.contains_key(n)) else {
                return scim_error(StatusCode::NOT_FOUND, None, &format!("User {id} not found"));
            };
            match m {
                Method::GET => scim_json(StatusCode::OK, store.users[&n].scim.to_resource()),
                Method::PUT => match parse_body(&store, &body) {
                    Ok(user) => store_update(&mut store, n, user),
                    Err(resp) => *resp,
                },
                Method::PATCH => patch(&mut store, n, &body),
                Method::DELETE if store.flags.delete_disables => {
                    let Some(mut user) = store.users.get(&n).map(|u| u.scim.clone()) else {
                        return scim_error(StatusCode::NOT_FOUND, None, "User not found");
                    };
                    user.active = false;
                    match store_update(&mut store, n, user) {
                        r if r.status().is_success() => StatusCode::NO_CONTENT.into_response(),
                        r => r,
                    }
                }
                _ => scim_error(StatusCode::METHOD_NOT_ALLOWED, None, "method not allowed"),
            }
        }
        _ => scim_error(StatusCode::METHOD_NOT_ALLOWED, None, "method not allowed"),
    }
}

fn list(store: &Store, query: &BTreeMap<String, String>) -> Response {
    let filter = query.iter().find(|(k, _)| k.eq_ignore_ascii_case("filter")).map(|(_, v)| v);
    let attributes: &[&str] = if store.flags.email_filter { &["userName", "emails.value"] } else { &["userName"] };
    let matches: Vec<&SimUser> = match filter {
        Some(f) => match simkit::parse_eq_filter(f, attributes) {
            Ok(f) => store.users.values().filter(|u| simkit::filter_matches(&f, &u.scim.to_resource())).collect(),
            Err(e) => return scim_error(StatusCode::BAD_REQUEST, Some("invalidFilter"), &e.to_string()),
        },
        None => store.users.values().collect(),
    };
    let (start, count) = page_params(query, 50, MAX_PAGE);
    let page = matches.iter().skip(start - 1).take(count).map(|u| u.scim.to_resource()).collect();
    list_response(page, matches.len(), start)
}

/// Checks the attribute set (strict mode) and parses the body.
fn parse_body(store: &Store, body: &[u8]) -> Result<PromptUser, Box<Response>> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| {
        Box::new(scim_error(StatusCode::BAD_REQUEST, Some("invalidSyntax"), &format!("invalid JSON: {e}")))
    })?;
    parse_doc(store, doc)
}

fn parse_doc(store: &Store, mut doc: Value) -> Result<PromptUser, Box<Response>> {
    let Some(obj) = doc.as_object_mut() else {
        return Err(Box::new(scim_error(StatusCode::BAD_REQUEST, Some("invalidSyntax"), "the body must be an object")));
    };
    let unknown: Vec<String> =
        obj.keys().filter(|k| !PromptUser::KNOWN.contains(&k.as_str()) && k.as_str() != PROMPT_EXT).cloned().collect();
    if store.flags.strict_attributes && !unknown.is_empty() {
        return Err(Box::new(scim_error(
            StatusCode::BAD_REQUEST,
            Some("invalidValue"),
            &format!("Unsupported attribute(s): {}", unknown.join(", ")),
        )));
    }
    for k in unknown {
        obj.remove(&k);
    }
    serde_json::from_value::<PromptUser>(doc)
        .map_err(|e| Box::new(scim_error(StatusCode::BAD_REQUEST, Some("invalidValue"), &format!("invalid user: {e}"))))
}

/// Uniqueness of userName and emails against every other user.
fn clash(store: &Store, user: &PromptUser, own: Option<u64>) -> Option<Response> {
    for (id, other) in &store.users {
        if Some(*id) == own {
            continue;
        }
        if other.scim.user_name.eq_ignore_ascii_case(&user.user_name) {
            let detail = format!("A user with userName '{}' already exists", user.user_name);
            return Some(scim_error(StatusCode::CONFLICT, Some("uniqueness"), &detail));
        }
        let taken =
            user.emails.iter().any(|e| other.scim.emails.iter().any(|o| o.value.eq_ignore_ascii_case(&e.value)));
        if taken {
            return Some(scim_error(StatusCode::CONFLICT, Some("uniqueness"), "This email address is already in use"));
        }
    }
    None
}

fn create(store: &mut Store, body: &[u8]) -> Response {
    let mut user = match parse_body(store, body) {
        Ok(u) => u,
        Err(resp) => return *resp,
    };
    if user.user_name.trim().is_empty() {
        return scim_error(StatusCode::BAD_REQUEST, Some("invalidValue"), "userName is required");
    }
    if let Some(resp) = clash(store, &user, None) {
        return resp;
    }
    let n = store.next_id;
    store.next_id += 1;
    user.id = Some(vendor_id(n));
    let placement = user.placement.take().unwrap_or_default();
    let sim_user = SimUser {
        department: placement.department.unwrap_or_else(|| store.org.default_department.clone()),
        section: placement.section.unwrap_or_else(|| store.org.default_section.clone()),
        has_permissions: false,
        scim: user,
    };
    let resp = scim_json(StatusCode::CREATED, sim_user.scim.to_resource());
    store.users.insert(n, sim_user);
    resp
}

/// Replaces the SCIM face of user `n`, enforcing uniqueness and the permissions rule on disable.
fn store_update(store: &mut Store, n: u64, mut user: PromptUser) -> Response {
    if user.user_name.trim().is_empty() {
        return scim_error(StatusCode::BAD_REQUEST, Some("invalidValue"), "userName is required");
    }
    if let Some(resp) = clash(store, &user, Some(n)) {
        return resp;
    }
    let Some(current) = store.users.get_mut(&n) else {
        return scim_error(StatusCode::NOT_FOUND, None, "User not found");
    };
    if current.scim.active && !user.active && current.has_permissions {
        return scim_error(
            StatusCode::CONFLICT,
            None,
            "User still holds permissions or has documents checked out and cannot be disabled",
        );
    }
    if let Some(p) = user.placement.take() {
        if let Some(d) = p.department {
            current.department = d;
        }
        if let Some(s) = p.section {
            current.section = s;
        }
    }
    user.id = current.scim.id.clone();
    current.scim = user;
    scim_json(StatusCode::OK, current.scim.to_resource())
}

fn patch(store: &mut Store, n: u64, body: &[u8]) -> Response {
    if !store.flags.patch_supported {
        return scim_error(StatusCode::NOT_IMPLEMENTED, None, "PATCH is not supported");
    }
    let ops: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return scim_error(StatusCode::BAD_REQUEST, Some("invalidSyntax"), &e.to_string()),
    };
    let Some(current) = store.users.get(&n) else {
        return scim_error(StatusCode::NOT_FOUND, None, "User not found");
    };
    let mut doc = serde_json::to_value(&current.scim).unwrap_or_else(|_| json!({}));
    if let Err(e) = apply_patch(&mut doc, &ops) {
        return scim_error(StatusCode::BAD_REQUEST, Some(e.scim_type), &e.detail);
    }
    match parse_doc(store, doc) {
        Ok(user) => store_update(store, n, user),
        Err(resp) => *resp,
    }
}

impl simkit::Simulator for SimHandle {
    fn vendor(&self) -> &'static str {
        "prompt"
    }
    fn server(&self) -> &SimServer {
        &self.server
    }
    fn kit(&self) -> &SimKit {
        &self.kit
    }
    fn users_json(&self) -> Vec<Value> {
        self.users()
    }
}

/// Starts a simulator accepting `credential` and returns it with the options of an app in front of it
/// (for `scim-bridge demo` and `scim-bridge simulate`).
pub async fn demo(credential: &str, addr: Option<SocketAddr>) -> std::io::Result<simkit::DemoSim> {
    let handle = spawn(SimOptions { auth_codes: vec![credential.to_string()], addr, ..SimOptions::default() }).await?;
    let org = handle.org();
    let mut opts = serde_json::Map::new();
    opts.insert("base_url".into(), json!(handle.scim_base()));
    opts.insert("auth_code".into(), json!(credential));
    opts.insert("default_department".into(), json!(org.default_department));
    opts.insert("default_section".into(), json!(org.default_section));
    Ok(simkit::DemoSim { sim: Box::new(handle), app_options: opts })
}

/// The simulator in the vendor registry (`adapter_api::Vendor::simulator`).
pub static SPEC: simkit::SimSpec = simkit::SimSpec {
    start: |credential, addr| Box::pin(async move { demo(&credential, addr).await }),
    credential_key: "auth_code",
    credential_expiry_key: None,
    demo_group_roles: &[],
    demo_role: None,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn org_switches_codes_defaults_and_permissions() {
        let sim = spawn(SimOptions::default()).await.unwrap();
        let http = reqwest::Client::new();
        let users = format!("{}/users", sim.scim_base());
        let code = "prompt-sim-code";
        assert_eq!(http.get(&users).bearer_auth("nope").send().await.unwrap().status(), 401);

        let body = json!({"userName": "a@x.com", "emails": [{"value": "a@x.com", "type": "work"}]});
        let r = http.post(&users).bearer_auth(code).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 201);
        let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
        let rec = sim.user("A@X.COM").unwrap();
        assert_eq!(
            (rec["department"].as_str(), rec["section"].as_str()),
            (Some("Corporate Services"), Some("All Staff"))
        );

        let same_mail = json!({"userName": "b@x.com", "emails": [{"value": "A@x.com"}]});
        assert_eq!(http.post(&users).bearer_auth(code).json(&same_mail).send().await.unwrap().status(), 409);
        let extra = json!({"userName": "c@x.com", "title": "Boss"});
        assert_eq!(http.post(&users).bearer_auth(code).json(&extra).send().await.unwrap().status(), 400);

        assert!(sim.set_has_permissions("a@x.com", true));
        let off = json!({"Operations": [{"op": "replace", "path": "active", "value": false}]});
        let r = http.patch(format!("{users}/{id}")).bearer_auth(code).json(&off).send().await.unwrap();
        assert_eq!(r.status(), 409);
        assert!(r.text().await.unwrap().contains("permissions"));
        sim.set_has_permissions("a@x.com", false);
        assert_eq!(http.delete(format!("{users}/{id}")).bearer_auth(code).send().await.unwrap().status(), 204);
        assert_eq!(sim.user("a@x.com").unwrap()["active"], false);

        sim.set_flags(SimFlags { delete_disables: false, ..SimFlags::default() });
        assert_eq!(http.delete(format!("{users}/{id}")).bearer_auth(code).send().await.unwrap().status(), 405);

        sim.set_org(OrgSettings { sso_enabled: false, ..OrgSettings::default() });
        assert_eq!(http.get(&users).bearer_auth(code).send().await.unwrap().status(), 403);
        assert_eq!(http.get(format!("{}/_sim/org", sim.base_url())).send().await.unwrap().status(), 200);
    }

    #[test]
    fn ids_round_trip() {
        assert_eq!(parse_id(&vendor_id(42)), Some(42));
        assert_eq!(parse_id("42"), None);
        assert_eq!(parse_id("zz-1"), None);
    }
}
