//! The status page, on `admin_listen` only and only when `admin.token_sha256` is set: an overview card per
//! app (`/`) and the audit log with filters (`/audit`), server-rendered from the templates in
//! `templates/` (minijinja, HTML auto-escaped). Owns the admin's authentication (a bearer header, or a
//! session cookie from `/login`; failures throttled per source like the SCIM listener's) and the headers
//! that keep the pages private and inert: a CSP that allows no script, no framing, no caching.

pub mod chart;
mod session;
pub mod view;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use minijinja::Environment;
use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::auth::{token_hash, AuthFailures};
use crate::gateway::Gateway;
use crate::store::{AuditFilter, OutcomeFilter};
use session::Sessions;

/// What the page's handlers read: the engine, the page's credential and sessions, and the failed-token
/// throttle it shares with the SCIM listener. `http` builds it from its own state (`FromRef`).
#[derive(Clone, Debug)]
pub struct StatusState {
    pub(crate) gateway: Arc<Gateway>,
    pub(crate) status: Option<Arc<Status>>,
    pub(crate) auth_failures: Arc<AuthFailures>,
}

impl StatusState {
    /// Counts a failed admin-token check from `peer`; `Some(wait)` when the source is over its quota.
    fn record_auth_failure(&self, peer: Option<SocketAddr>) -> Option<std::time::Duration> {
        peer.and_then(|p| self.auth_failures.record(p.ip()))
    }
}

/// The admin's credential (its hash) and the open sessions.
pub struct Status {
    token_sha256: [u8; 32],
    sessions: Sessions,
    /// Sources over their failed-token quota, until when: they are refused before any token is compared
    /// (unlike the SCIM listener, where Entra's shared addresses must keep working, an admin page can make
    /// a guesser wait).
    blocked: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, std::time::Instant>>,
}

impl std::fmt::Debug for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token's hash is a credential's fingerprint: never formatted.
        f.debug_struct("Status").field("sessions", &self.sessions).finish_non_exhaustive()
    }
}

/// Sources remembered as blocked at most (past it, expired entries are dropped first, then the oldest).
const BLOCKED_SOURCES: usize = 10_000;

impl Status {
    /// The status page for an admin token whose hex SHA-256 is `hash`; `None` (page off) if it is not one.
    pub fn from_hash(hash: &str) -> Option<Status> {
        let mut token = [0u8; 32];
        hex::decode_to_slice(hash.trim(), &mut token).ok()?;
        Some(Status { token_sha256: token, sessions: Sessions::default(), blocked: Default::default() })
    }

    /// How long `peer` must still wait, if it is blocked.
    fn blocked_for(&self, peer: Option<SocketAddr>) -> Option<std::time::Duration> {
        let ip = peer?.ip();
        let blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        blocked.get(&ip).and_then(|until| until.checked_duration_since(std::time::Instant::now()))
    }

    fn block(&self, peer: Option<SocketAddr>, wait: std::time::Duration) {
        let Some(peer) = peer else { return };
        let now = std::time::Instant::now();
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        if blocked.len() >= BLOCKED_SOURCES {
            blocked.retain(|_, until| *until > now);
            if blocked.len() >= BLOCKED_SOURCES {
                if let Some(oldest) = blocked.iter().min_by_key(|(_, until)| **until).map(|(ip, _)| *ip) {
                    blocked.remove(&oldest);
                }
            }
        }
        blocked.insert(peer.ip(), now + wait);
    }

    fn is_admin_token(&self, token: &str) -> bool {
        token_hash(token.trim()).ct_eq(&self.token_sha256).into()
    }
}

/// The session cookie's name.
const COOKIE: &str = "scim_bridge_session";

/// The largest `/login` body read (a token and a little form encoding).
const MAX_LOGIN_BODY: usize = 4096;

/// No script at all, styles only from the gateway itself, forms only back to it, never in a frame.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// `/`, `/audit`, `/login`, `/logout` and the stylesheet; mounted by `http::admin_app` only.
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    StatusState: axum::extract::FromRef<S>,
{
    Router::new()
        .route("/", get(overview))
        .route("/audit", get(audit))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/status.css", get(stylesheet))
        .route("/favicon.svg", get(favicon))
        .layer(axum::middleware::map_response(private_headers))
}

async fn private_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

fn templates() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        // A name the view forgot to fill is a bug the tests should see, not an empty cell.
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        for (name, source) in [
            ("base.html", include_str!("templates/base.html")),
            ("overview.html", include_str!("templates/overview.html")),
            ("audit.html", include_str!("templates/audit.html")),
            ("login.html", include_str!("templates/login.html")),
        ] {
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "status page template does not parse");
            }
        }
        env
    })
}

/// Renders `name` (an `.html` template: every value is HTML-escaped) with `status`.
fn page(status: StatusCode, name: &str, context: impl Serialize) -> Response {
    let rendered = templates().get_template(name).and_then(|t| t.render(context));
    match rendered {
        Ok(html) => (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
        Err(e) => {
            tracing::error!(template = name, error = %e, "status page could not be rendered");
            (StatusCode::INTERNAL_SERVER_ERROR, "the status page could not be rendered; see the gateway's log\n")
                .into_response()
        }
    }
}

/// What a request to a page may do.
enum Access {
    Granted,
    /// No credential at all: to the login form.
    Login,
    Refused(Response),
}

fn peer_of(req: &Request) -> Option<SocketAddr> {
    req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE).and_then(|rest| rest.strip_prefix('=')))
}

/// A failed admin-token check: counted against its source; a source over its quota gets 429.
fn refused(state: &StatusState, peer: Option<SocketAddr>, login_page: bool) -> Response {
    let wait = state.record_auth_failure(peer);
    if let (Some(status), Some(wait)) = (status_of(state), wait) {
        status.block(peer, wait);
    }
    too_many(wait, login_page).unwrap_or_else(|| wrong_token(login_page))
}

/// A source blocked for failed tokens is answered 429 before its token is even compared.
fn still_blocked(state: &StatusState, peer: Option<SocketAddr>, login_page: bool) -> Option<Response> {
    too_many(status_of(state)?.blocked_for(peer), login_page)
}

fn too_many(wait: Option<std::time::Duration>, login_page: bool) -> Option<Response> {
    match wait {
        Some(wait) => {
            let secs = wait.as_secs().max(1);
            let mut resp = if login_page {
                page(
                    StatusCode::TOO_MANY_REQUESTS,
                    "login.html",
                    minijinja::context! { error => format!("Too many wrong tokens from your address; try again in {secs} s.") },
                )
            } else {
                (StatusCode::TOO_MANY_REQUESTS, "too many wrong admin tokens from this address\n").into_response()
            };
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            Some(resp)
        }
        None => None,
    }
}

fn wrong_token(login_page: bool) -> Response {
    match () {
        () if login_page => page(
            StatusCode::UNAUTHORIZED,
            "login.html",
            minijinja::context! { error => "That is not the admin token." },
        ),
        () => {
            let mut resp = (StatusCode::UNAUTHORIZED, "wrong admin token\n").into_response();
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            resp
        }
    }
}

fn access(state: &StatusState, status: &Status, req: &Request) -> Access {
    let headers = req.headers();
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().split_once(' '))
            .and_then(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer").then_some(token));
        if let Some(wait) = still_blocked(state, peer_of(req), false) {
            return Access::Refused(wait);
        }
        return match token {
            Some(token) if status.is_admin_token(token) => Access::Granted,
            _ => Access::Refused(refused(state, peer_of(req), false)),
        };
    }
    match session_cookie(headers) {
        Some(id) if status.sessions.valid(id) => Access::Granted,
        _ => Access::Login,
    }
}

fn to_login() -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, "/login")]).into_response()
}

fn status_of(state: &StatusState) -> Option<&Status> {
    state.status.as_deref()
}

fn not_mounted() -> Response {
    (StatusCode::NOT_FOUND, "no such page\n").into_response()
}

/// The page `render` makes, for an admin; the login form for anyone else.
/// Lets a signed-in admin through (`None`); everyone else gets the login redirect or a refusal. Sync, so
/// no handler holds the request across an await.
fn gate(state: &StatusState, req: &Request) -> Option<Response> {
    let Some(status) = status_of(state) else { return Some(not_mounted()) };
    match access(state, status, req) {
        Access::Granted => None,
        Access::Login => Some(to_login()),
        Access::Refused(resp) => Some(resp),
    }
}

fn store_failed(e: crate::store::StoreError) -> Response {
    tracing::error!(error = %e, "status page: the store could not be read");
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "login.html",
        minijinja::context! { error => "The gateway's store cannot be read right now; see the gateway's log.", signed_in => true },
    )
}

async fn overview(State(state): State<StatusState>, req: Request) -> Response {
    if let Some(refused) = gate(&state, &req) {
        return refused;
    }
    match view::overview(&state.gateway).await {
        Ok(overview) => page(StatusCode::OK, "overview.html", minijinja::context! { o => overview, nav => "overview" }),
        Err(e) => store_failed(e),
    }
}

/// The audit view's query parameters, as typed (shown back in the form) and as parsed.
#[derive(Clone, Debug, Default, Serialize)]
struct AuditParams {
    app: String,
    user: String,
    outcome: String,
    since: String,
    view: String,
}

/// Reads the audit view's query: unknown parameters are ignored; a bad value is said on the page.
fn audit_filter(state: &StatusState, query: &str) -> (AuditParams, AuditFilter, Option<String>) {
    let mut p = AuditParams::default();
    let mut before = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let v: String = v.trim().chars().take(200).collect();
        match &*k {
            "app" => p.app = v,
            "user" => p.user = v,
            "outcome" => p.outcome = v,
            "since" => p.since = v,
            "view" => p.view = v,
            "before" => before = Some(v),
            _ => {}
        }
    }
    let mut error = None;
    let mut filter = AuditFilter::default();
    if !p.app.is_empty() {
        if state.gateway.apps.contains_key(&p.app) {
            filter.app = Some(p.app.clone());
        } else {
            error = Some(format!("There is no app '{}'.", view::shown(&p.app)));
        }
    }
    if !p.user.is_empty() {
        filter.name_contains = Some(p.user.clone());
    }
    if p.view == "person" {
        p.outcome = "needs_person".into();
    }
    filter.outcome = match p.outcome.as_str() {
        "" => OutcomeFilter::Any,
        "failed" => OutcomeFilter::Failed,
        "needs_person" => OutcomeFilter::NeedsPerson,
        o => match crate::outcome::Outcome::offered(o) {
            Some(outcome) => OutcomeFilter::Is(outcome),
            None => {
                error = Some(format!("'{}' is not an outcome.", view::shown(o)));
                OutcomeFilter::Any
            }
        },
    };
    if !p.since.is_empty() {
        match crate::audit_report::parse_since(&p.since, time::OffsetDateTime::now_utc()) {
            Ok(at) => filter.since = Some(at),
            Err(_) => {
                error = Some(
                    "Since: write a date (2026-11-25), a time (2026-11-25T10:00:00Z) or an age (30m, 12h, 7d).".into(),
                )
            }
        }
    }
    if let Some(b) = before {
        match b.parse::<i64>() {
            Ok(seq) if seq > 0 => filter.before_seq = Some(seq),
            _ => error = Some("That page does not exist.".into()),
        }
    }
    (p, filter, error)
}

/// The query string for the page after this one (the same filters, older entries).
fn older_link(p: &AuditParams, before: i64) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in [("app", &p.app), ("user", &p.user), ("outcome", &p.outcome), ("since", &p.since)] {
        if !v.is_empty() {
            q.append_pair(k, v);
        }
    }
    q.append_pair("before", &before.to_string());
    format!("/audit?{}", q.finish())
}

async fn audit(State(state): State<StatusState>, req: Request) -> Response {
    let query = req.uri().query().unwrap_or("").to_string();
    if let Some(refused) = gate(&state, &req) {
        return refused;
    }
    drop(req);
    let (params, filter, error) = audit_filter(&state, &query);
    if let Some(error) = error {
        let ctx = audit_context(&state, &params, Vec::new(), None, Some(error));
        return page(StatusCode::BAD_REQUEST, "audit.html", ctx);
    }
    match view::audit_page(&state.gateway, &filter).await {
        Ok((entries, next)) => {
            let older = next.map(|seq| older_link(&params, seq));
            page(StatusCode::OK, "audit.html", audit_context(&state, &params, entries, older, None))
        }
        Err(e) => store_failed(e),
    }
}

fn audit_context(
    state: &StatusState,
    params: &AuditParams,
    entries: Vec<view::EntryView>,
    older: Option<String>,
    error: Option<String>,
) -> minijinja::Value {
    let apps: Vec<&String> = state.gateway.apps.keys().collect();
    let nav = if params.outcome == "needs_person" { "person" } else { "audit" };
    minijinja::context! {
        p => params, apps => apps, outcomes => crate::outcome::Outcome::OFFERED.iter().map(|o| o.as_str()).collect::<Vec<_>>(), entries => entries, older => older, error => error,
        nav => nav, page_size => view::PAGE_SIZE,
    }
}

async fn login_form(State(state): State<StatusState>) -> Response {
    if status_of(&state).is_none() {
        return not_mounted();
    }
    page(StatusCode::OK, "login.html", minijinja::context! { error => None::<String> })
}

async fn login(State(state): State<StatusState>, req: Request) -> Response {
    let Some(status) = status_of(&state) else { return not_mounted() };
    let peer = peer_of(&req);
    let secure = req.headers().get("x-forwarded-proto").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let body: Body = req.into_body();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_LOGIN_BODY).await else {
        return page(
            StatusCode::PAYLOAD_TOO_LARGE,
            "login.html",
            minijinja::context! { error => "That form was too large." },
        );
    };
    if let Some(wait) = still_blocked(&state, peer, true) {
        return wait;
    }
    let token = form_urlencoded::parse(&bytes).find(|(k, _)| k == "token").map(|(_, v)| v.into_owned());
    match token {
        Some(token) if status.is_admin_token(&token) => {
            let id = status.sessions.open();
            let cookie = format!(
                "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
                session::SESSION_TTL.as_secs(),
                if secure { "; Secure" } else { "" }
            );
            let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
        _ => refused(&state, peer, true),
    }
}

async fn logout(State(state): State<StatusState>, req: Request) -> Response {
    let Some(status) = status_of(&state) else { return not_mounted() };
    if let Some(id) = session_cookie(req.headers()) {
        status.sessions.close(id);
    }
    let mut resp = to_login();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("scim_bridge_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    resp
}

async fn stylesheet(State(state): State<StatusState>) -> Response {
    if status_of(&state).is_none() {
        return not_mounted();
    }
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("templates/status.css")).into_response()
}

/// A plain mark, so the browser's favicon request is answered (and no image from elsewhere is needed).
const FAVICON: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 16 16\">\
<rect width=\"16\" height=\"16\" rx=\"3\" fill=\"#24292f\"/><rect x=\"3\" y=\"9\" width=\"2\" height=\"4\" fill=\"#fff\"/>\
<rect x=\"7\" y=\"6\" width=\"2\" height=\"7\" fill=\"#fff\"/><rect x=\"11\" y=\"3\" width=\"2\" height=\"10\" fill=\"#cf222e\"/></svg>";

async fn favicon(State(state): State<StatusState>) -> Response {
    if status_of(&state).is_none() {
        return not_mounted();
    }
    ([(header::CONTENT_TYPE, "image/svg+xml")], FAVICON).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        for name in ["base.html", "overview.html", "audit.html", "login.html"] {
            assert!(templates().get_template(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; scim_bridge_session=abc; b=2"));
        assert_eq!(session_cookie(&h), Some("abc"));
        h.insert(header::COOKIE, HeaderValue::from_static("scim_bridge_sessionx=abc"));
        assert_eq!(session_cookie(&h), None);
    }

    #[test]
    fn the_older_link_keeps_the_filters_and_encodes_them() {
        let p = AuditParams { user: "a&b c".into(), outcome: "failed".into(), ..Default::default() };
        assert_eq!(older_link(&p, 42), "/audit?user=a%26b+c&outcome=failed&before=42");
    }
}
