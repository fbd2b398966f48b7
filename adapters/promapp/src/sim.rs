//! The Promapp simulator: SCIM at `/api/scim/users` (path case-insensitive), bearer SCIM tokens that expire
//! and can be revoked (one per admin), numeric-string ids, a fixed catalogue of role names (unknown → 400),
//! `userName eq` as the only filter, paging capped at 200, PATCH switchable between 501 and supported,
//! DELETE as disable (204, user still readable), `/Groups` → 501; faults, throttle and counters from
//! `simkit`. Admin view: `/_sim/users`, `/_sim/users/{userName}`, `/_sim/flags`,
//! `/_sim/faults`, `/_sim/counters`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use simkit::{
    self, admin_not_found, apply_patch, bearer, list_response, page_params, scim_error, scim_json, scim_path,
    AdminEdit, ScimPath, SimFaults, SimKit, SimServer,
};

use crate::model::PromappUser;

pub const SCIM_BASE: &str = "/api/scim";
pub const MAX_PAGE: usize = 200;

/// How the simulator starts.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Accepted SCIM tokens, one per admin (`admin1`, `admin2`, ... in order).
    pub tokens: Vec<String>,
    /// Listen address; default `127.0.0.1:0`.
    pub addr: Option<SocketAddr>,
    /// The site's role names (exact match required).
    pub roles: Vec<String>,
    /// PATCH supported (true) or answered 501 (false, the default: only PUT is seen in the wild).
    pub patch_supported: bool,
    pub faults: SimFaults,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            tokens: vec!["promapp-sim-token".into()],
            addr: None,
            roles: ["Process Owner", "Process Expert", "Editor", "Viewer", "Promaster"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            patch_supported: false,
            faults: SimFaults::default(),
        }
    }
}

/// Switches settable at runtime (`GET/PUT /_sim/flags`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimFlags {
    pub patch_supported: bool,
    pub roles: Vec<String>,
}

#[derive(Clone, Debug)]
struct SimToken {
    admin: String,
    token: String,
    expires_at: Option<SystemTime>,
    revoked: bool,
}

#[derive(Debug)]
struct Store {
    users: BTreeMap<u64, PromappUser>,
    next_id: u64,
    tokens: Vec<SimToken>,
    flags: SimFlags,
}

#[derive(Clone, Debug)]
struct Shared(Arc<Mutex<Store>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
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
    let tokens = opts
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| SimToken { admin: format!("admin{}", i + 1), token: t.clone(), expires_at: None, revoked: false })
        .collect();
    let state = Shared(Arc::new(Mutex::new(Store {
        users: BTreeMap::new(),
        next_id: 1001,
        tokens,
        flags: SimFlags { patch_supported: opts.patch_supported, roles: opts.roles },
    })));
    let kit = SimKit::new(opts.faults);
    let router = Router::new()
        .route("/_sim/users", get(admin_users).post(admin_add))
        .route("/_sim/users/{user_name}", get(admin_user).patch(admin_edit).delete(admin_delete))
        .route("/_sim/flags", get(get_flags).put(put_flags))
        .route("/{*path}", any(scim))
        .with_state(state.clone());
    let server = simkit::spawn_sim(kit.wrap(router), opts.addr).await?;
    Ok(SimHandle { server, kit, state })
}

impl SimHandle {
    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.server.base_url
    }
    /// The SCIM base for the adapter's `base_url`: `http://127.0.0.1:PORT/api/scim`.
    pub fn scim_base(&self) -> String {
        format!("{}{SCIM_BASE}", self.server.base_url)
    }
    /// The stored user (as Promapp answers it) by userName, case-insensitively.
    pub fn user(&self, user_name: &str) -> Option<Value> {
        let s = self.state.lock();
        s.users.values().find(|u| u.user_name.eq_ignore_ascii_case(user_name)).map(PromappUser::to_resource)
    }
    pub fn users(&self) -> Vec<Value> {
        self.state.lock().users.values().map(PromappUser::to_resource).collect()
    }
    pub fn set_patch_supported(&self, on: bool) {
        self.state.lock().flags.patch_supported = on;
    }
    pub fn set_roles(&self, roles: Vec<String>) {
        self.state.lock().flags.roles = roles;
    }
    /// Creates a token for `admin`, revoking that admin's previous one (one token per admin).
    pub fn issue_token(&self, admin: &str) -> String {
        let mut s = self.state.lock();
        for t in s.tokens.iter_mut().filter(|t| t.admin == admin) {
            t.revoked = true;
        }
        let n = s.tokens.len() + 1;
        let token = format!("promapp-sim-{admin}-{n}-{:x}", rand_suffix());
        s.tokens.push(SimToken { admin: admin.into(), token: token.clone(), expires_at: None, revoked: false });
        token
    }
    pub fn revoke_token(&self, token: &str) {
        for t in self.state.lock().tokens.iter_mut().filter(|t| t.token == token) {
            t.revoked = true;
        }
    }
    /// Sets when `token` expires (`None`: never); a past time makes it answer 401.
    pub fn set_token_expiry(&self, token: &str, expires_at: Option<SystemTime>) {
        for t in self.state.lock().tokens.iter_mut().filter(|t| t.token == token) {
            t.expires_at = expires_at;
        }
    }
}

fn rand_suffix() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or_default()
}

async fn admin_users(State(s): State<Shared>) -> Json<Vec<Value>> {
    Json(s.lock().users.values().map(PromappUser::to_resource).collect())
}

async fn admin_user(State(s): State<Shared>, Path(user_name): Path<String>) -> Response {
    let store = s.lock();
    match store.users.values().find(|u| u.user_name.eq_ignore_ascii_case(&user_name)) {
        Some(u) => Json(u.to_resource()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The vendor's admin UI adds a user (its body as a SCIM create would carry it, so the same rules apply).
async fn admin_add(State(s): State<Shared>, Json(edit): Json<AdminEdit>) -> Response {
    let mut body = edit.scim_create_body();
    if let Some(role) = s.lock().flags.roles.first() {
        body["roles"] = serde_json::json!([{ "display": role, "value": role }]);
    }
    create(&mut s.lock(), body.to_string().as_bytes())
}

/// The vendor's admin UI edits a user found by userName.
async fn admin_edit(State(s): State<Shared>, Path(user_name): Path<String>, Json(edit): Json<AdminEdit>) -> Response {
    let mut store = s.lock();
    let Some(u) = store.users.values_mut().find(|u| u.user_name.eq_ignore_ascii_case(&user_name)) else {
        return admin_not_found(&user_name);
    };
    let mut doc = serde_json::to_value(&*u).unwrap_or(Value::Null);
    edit.apply_to_scim(&mut doc);
    match serde_json::from_value::<PromappUser>(doc) {
        Ok(edited) => {
            *u = edited;
            Json(u.to_resource()).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

/// The vendor's admin UI removes a user (the API cannot; the UI can).
async fn admin_delete(State(s): State<Shared>, Path(user_name): Path<String>) -> Response {
    let mut store = s.lock();
    let before = store.users.len();
    store.users.retain(|_, u| !u.user_name.eq_ignore_ascii_case(&user_name));
    if store.users.len() == before {
        return admin_not_found(&user_name);
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn get_flags(State(s): State<Shared>) -> Json<SimFlags> {
    Json(s.lock().flags.clone())
}

async fn put_flags(State(s): State<Shared>, Json(flags): Json<SimFlags>) -> Json<SimFlags> {
    s.lock().flags = flags.clone();
    Json(flags)
}

fn authorized(store: &Store, headers: &HeaderMap) -> bool {
    let Some(presented) = bearer(headers) else { return false };
    let now = SystemTime::now();
    store.tokens.iter().any(|t| t.token == presented && !t.revoked && t.expires_at.is_none_or(|e| e > now))
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
    if !authorized(&store, &headers) {
        return scim_error(StatusCode::UNAUTHORIZED, None, "The access token is invalid, expired or revoked");
    }
    match (route, method) {
        (ScimPath::Groups, _) => scim_error(StatusCode::NOT_IMPLEMENTED, None, "Groups are not supported"),
        (ScimPath::Users, Method::GET) => list(&store, &query),
        (ScimPath::Users, Method::POST) => create(&mut store, &body),
        (ScimPath::User(id), m) => {
            let Some(id) = id.parse::<u64>().ok().filter(|id| store.users.contains_key(id)) else {
                return scim_error(StatusCode::NOT_FOUND, None, &format!("User {id} not found"));
            };
            match m {
                Method::GET => user_response(StatusCode::OK, &store.users[&id]),
                Method::PUT => replace(&mut store, id, &body),
                Method::PATCH => patch(&mut store, id, &body),
                Method::DELETE => {
                    if let Some(u) = store.users.get_mut(&id) {
                        u.active = false;
                    }
                    StatusCode::NO_CONTENT.into_response()
                }
                _ => scim_error(StatusCode::METHOD_NOT_ALLOWED, None, "method not allowed"),
            }
        }
        _ => scim_error(StatusCode::METHOD_NOT_ALLOWED, None, "method not allowed"),
    }
}

fn user_response(status: StatusCode, user: &PromappUser) -> Response {
    scim_json(status, user.to_resource())
}

fn list(store: &Store, query: &BTreeMap<String, String>) -> Response {
    let filter = query.iter().find(|(k, _)| k.eq_ignore_ascii_case("filter")).map(|(_, v)| v);
    let matches: Vec<&PromappUser> = match filter {
        Some(f) => match simkit::parse_user_name_filter(f) {
            Ok(f) => store.users.values().filter(|u| simkit::filter_matches(&f, &u.to_resource())).collect(),
            Err(e) => return scim_error(StatusCode::BAD_REQUEST, Some("invalidFilter"), &e.to_string()),
        },
        None => store.users.values().collect(),
    };
    let (start, count) = page_params(query, 100, MAX_PAGE);
    let page = matches.iter().skip(start - 1).take(count).map(|u| u.to_resource()).collect();
    list_response(page, matches.len(), start)
}

/// Parses and checks a create/replace body; `Err` is the error response.
fn parse_user(store: &Store, body: &[u8], own_id: Option<u64>) -> Result<PromappUser, Box<Response>> {
    let user: PromappUser = serde_json::from_slice(body).map_err(|e| {
        Box::new(scim_error(
            StatusCode::BAD_REQUEST,
            Some("invalidSyntax"),
            &format!("The request body is invalid: {e}"),
        ))
    })?;
    check_user(store, user, own_id)
}

fn check_user(store: &Store, mut user: PromappUser, own_id: Option<u64>) -> Result<PromappUser, Box<Response>> {
    if user.user_name.trim().is_empty() {
        return Err(Box::new(scim_error(StatusCode::BAD_REQUEST, Some("invalidValue"), "userName is required")));
    }
    for role in &user.roles {
        let name = role.name().unwrap_or_default();
        if !store.flags.roles.iter().any(|r| r == name) {
            return Err(Box::new(scim_error(
                StatusCode::BAD_REQUEST,
                Some("invalidValue"),
                &format!("Role '{name}' does not exist in this Process Manager site"),
            )));
        }
    }
    let clash =
        store.users.iter().any(|(id, u)| Some(*id) != own_id && u.user_name.eq_ignore_ascii_case(&user.user_name));
    if clash {
        return Err(Box::new(scim_error(
            StatusCode::CONFLICT,
            Some("uniqueness"),
            &format!("A user with userName '{}' already exists", user.user_name),
        )));
    }
    let email_clash = user.emails.iter().find(|e| {
        store
            .users
            .iter()
            .any(|(id, u)| Some(*id) != own_id && u.emails.iter().any(|o| o.value.eq_ignore_ascii_case(&e.value)))
    });
    if let Some(e) = email_clash {
        return Err(Box::new(scim_error(
            StatusCode::CONFLICT,
            Some("uniqueness"),
            &format!("A user with email '{}' already exists", e.value),
        )));
    }
    user.id = own_id.map(|id| id.to_string());
    Ok(user)
}

fn create(store: &mut Store, body: &[u8]) -> Response {
    match parse_user(store, body, None) {
        Ok(mut user) => {
            let id = store.next_id;
            store.next_id += 1;
            user.id = Some(id.to_string());
            let resp = user_response(StatusCode::CREATED, &user);
            store.users.insert(id, user);
            resp
        }
        Err(resp) => *resp,
    }
}

fn replace(store: &mut Store, id: u64, body: &[u8]) -> Response {
    match parse_user(store, body, Some(id)) {
        Ok(user) => {
            let resp = user_response(StatusCode::OK, &user);
            store.users.insert(id, user);
            resp
        }
        Err(resp) => *resp,
    }
}

fn patch(store: &mut Store, id: u64, body: &[u8]) -> Response {
    if !store.flags.patch_supported {
        return scim_error(StatusCode::NOT_IMPLEMENTED, None, "PATCH is not supported; use PUT");
    }
    let Some(current) = store.users.get(&id) else {
        return scim_error(StatusCode::NOT_FOUND, None, "User not found");
    };
    let ops: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return scim_error(StatusCode::BAD_REQUEST, Some("invalidSyntax"), &e.to_string()),
    };
    let mut doc = serde_json::to_value(current).unwrap_or(Value::Null);
    if let Err(e) = apply_patch(&mut doc, &ops) {
        return scim_error(StatusCode::BAD_REQUEST, Some(e.scim_type), &e.detail);
    }
    let user = match serde_json::from_value::<PromappUser>(doc) {
        Ok(u) => u,
        Err(e) => return scim_error(StatusCode::BAD_REQUEST, Some("invalidValue"), &e.to_string()),
    };
    match check_user(store, user, Some(id)) {
        Ok(user) => {
            let resp = user_response(StatusCode::OK, &user);
            store.users.insert(id, user);
            resp
        }
        Err(resp) => *resp,
    }
}

impl simkit::Simulator for SimHandle {
    fn vendor(&self) -> &'static str {
        "promapp"
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
    let handle = spawn(SimOptions { tokens: vec![credential.to_string()], addr, ..SimOptions::default() }).await?;
    let mut opts = serde_json::Map::new();
    opts.insert("base_url".into(), serde_json::json!(handle.scim_base()));
    opts.insert("access_token".into(), serde_json::json!(credential));
    Ok(simkit::DemoSim { sim: Box::new(handle), app_options: opts })
}

/// The simulator in the vendor registry (`adapter_api::Vendor::simulator`).
pub static SPEC: simkit::SimSpec = simkit::SimSpec {
    start: |credential, addr| Box::pin(async move { demo(&credential, addr).await }),
    credential_key: "access_token",
    credential_expiry_key: Some("token_expires_at"),
    demo_group_roles: &[("Process Owners", "Process Owner"), ("Process Viewers", "Viewer")],
    demo_role: Some("Editor"),
};

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn sim() -> (SimHandle, reqwest::Client) {
        (spawn(SimOptions::default()).await.unwrap(), reqwest::Client::new())
    }

    #[tokio::test]
    async fn auth_paths_filters_and_delete_behave_like_promapp() {
        let (sim, http) = sim().await;
        let base = sim.scim_base();
        let tok = "promapp-sim-token";
        let r = http.get(format!("{base}/Users")).send().await.unwrap();
        assert_eq!(r.status(), 401);

        let body = json!({"userName": "A@x.com", "roles": [{"display": "Viewer"}]});
        let r = http.post(format!("{base}/users")).bearer_auth(tok).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 201);
        let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
        assert!(id.parse::<u64>().is_ok());

        let r = http.post(format!("{base}/Users")).bearer_auth(tok).json(&json!({"userName": "a@X.com"})).send();
        assert_eq!(r.await.unwrap().status(), 409);
        let first = json!({"userName": "m1@x.com", "emails": [{"value": "Shared@x.com"}]});
        let r = http.post(format!("{base}/Users")).bearer_auth(tok).json(&first).send();
        assert_eq!(r.await.unwrap().status(), 201);
        let same_mail = json!({"userName": "m2@x.com", "emails": [{"value": "shared@X.com"}]});
        let r = http.post(format!("{base}/Users")).bearer_auth(tok).json(&same_mail).send().await.unwrap();
        assert_eq!(r.status(), 409, "emails are unique, ignoring case");
        assert!(r.text().await.unwrap().contains("uniqueness"));
        let bad_role = json!({"userName": "b@x.com", "roles": [{"display": "Wizard"}]});
        let r = http.post(format!("{base}/Users")).bearer_auth(tok).json(&bad_role).send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains("Wizard"));

        let r = http
            .get(format!("{base}/USERS"))
            .query(&[("filter", "userName eq \"a@x.com\"")])
            .bearer_auth(tok)
            .send()
            .await
            .unwrap();
        assert_eq!(r.json::<Value>().await.unwrap()["totalResults"], 1);
        let r = http.get(format!("{base}/Users")).query(&[("filter", "email eq \"x\"")]).bearer_auth(tok);
        assert_eq!(r.send().await.unwrap().status(), 400);

        let r = http.patch(format!("{base}/Users/{id}")).bearer_auth(tok).json(&json!({"Operations": []}));
        assert_eq!(r.send().await.unwrap().status(), 501);
        let r = http.delete(format!("{base}/Users/{id}")).bearer_auth(tok).send().await.unwrap();
        assert_eq!(r.status(), 204);
        let r = http.get(format!("{base}/Users/{id}")).bearer_auth(tok).send().await.unwrap();
        assert_eq!(r.json::<Value>().await.unwrap()["active"], false);
        assert_eq!(http.get(format!("{base}/Groups")).bearer_auth(tok).send().await.unwrap().status(), 501);
    }

    #[tokio::test]
    async fn tokens_expire_and_are_revoked_per_admin() {
        let (sim, http) = sim().await;
        let url = format!("{}/Users", sim.scim_base());
        let status = |t: String| {
            let (http, url) = (http.clone(), url.clone());
            async move { http.get(url).bearer_auth(t).send().await.unwrap().status().as_u16() }
        };
        let t1 = sim.issue_token("alice");
        assert_eq!(status(t1.clone()).await, 200);
        let t2 = sim.issue_token("alice");
        assert_eq!(status(t1).await, 401, "a new token for the same admin revokes the old one");
        assert_eq!(status(t2.clone()).await, 200);
        sim.set_token_expiry(&t2, Some(SystemTime::now() - std::time::Duration::from_secs(1)));
        assert_eq!(status(t2).await, 401);
        sim.revoke_token("promapp-sim-token");
        assert_eq!(status("promapp-sim-token".into()).await, 401);
    }

    #[tokio::test]
    async fn paging_is_capped_at_200() {
        let (sim, http) = sim().await;
        for i in 0..205 {
            sim.state.lock().users.insert(
                i,
                PromappUser {
                    id: Some(i.to_string()),
                    user_name: format!("u{i}"),
                    external_id: None,
                    name: None,
                    emails: vec![],
                    active: true,
                    roles: vec![],
                    timezone: None,
                },
            );
        }
        let r = http
            .get(format!("{}/Users?startIndex=1&count=500", sim.scim_base()))
            .bearer_auth("promapp-sim-token")
            .send()
            .await
            .unwrap();
        let doc: Value = r.json().await.unwrap();
        assert_eq!((doc["itemsPerPage"].as_u64(), doc["totalResults"].as_u64()), (Some(200), Some(205)));
    }
}
