//! HTTP front end: routes `/scim/{app}/v2/...`, per-app bearer auth (SHA-256 of the token, compared in
//! constant time), optional IP allow-lists, body limits, JSON parsing, request ids, and the operational
//! endpoints (/healthz, /readyz, /metrics). Everything SCIM-shaped is handed to the gateway engine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tracing::Instrument;

pub use crate::auth::token_hash;
use crate::auth::AuthFailures;
use crate::gateway::{App, Ctx, Gateway, Reply};
use crate::scim::discovery;
use crate::scim::error::{ScimError, SCIM_CONTENT_TYPE};
use crate::scim::{list_response, ListQuery};
use crate::store::Kind;

/// Shared state of the HTTP layer.
#[derive(Clone, Debug)]
pub struct AppState {
    pub gateway: Arc<Gateway>,
    pub max_body_bytes: usize,
    pub public_url: Option<String>,
    /// Vendor time one Entra request may use in all (`request_budget_ms`).
    pub request_budget: std::time::Duration,
    /// Every engine task (see `handle`): the drain waits for these, not only for open connections, so a
    /// change whose client hung up is still finished before the process ends.
    pub tasks: tokio_util::task::TaskTracker,
    auth_failures: Arc<AuthFailures>,
    /// The last `/readyz` store check: when it finished and whether the store could write.
    store_check: Arc<tokio::sync::Mutex<Option<(Instant, bool)>>>,
    /// The status page (`admin.token_sha256` set): mounted on the admin listener only.
    pub status: Option<Arc<crate::status::Status>>,
}

/// The status page's handlers read the part of the state they need (`status` imports nothing of `http`).
impl axum::extract::FromRef<AppState> for crate::status::StatusState {
    fn from_ref(state: &AppState) -> Self {
        crate::status::StatusState {
            gateway: state.gateway.clone(),
            status: state.status.clone(),
            auth_failures: state.auth_failures.clone(),
        }
    }
}

/// How long one `/readyz` store check is reused: each check is a synced write under the store's lock, and
/// without `admin_listen` anyone can ask for `/readyz` as often as they like.
const STORE_CHECK_TTL: std::time::Duration = std::time::Duration::from_secs(1);

impl AppState {
    pub fn new(gateway: Arc<Gateway>, config: &crate::config::Config) -> Self {
        AppState {
            gateway,
            max_body_bytes: config.max_body_bytes,
            public_url: config.public_url.clone(),
            request_budget: std::time::Duration::from_millis(config.request_budget_ms),
            tasks: tokio_util::task::TaskTracker::new(),
            auth_failures: Arc::new(AuthFailures::new(config.connections.auth_failures_per_minute)),
            store_check: Arc::new(tokio::sync::Mutex::new(None)),
            status: config.admin.token_sha256.as_deref().and_then(crate::status::Status::from_hash).map(Arc::new),
        }
    }

    /// Counts a failed credential check from `peer` (the status page's admin token shares the SCIM
    /// listener's throttle); `Some(wait)` when the source is over its quota.
    pub(crate) fn record_auth_failure(&self, peer: Option<SocketAddr>) -> Option<std::time::Duration> {
        peer.and_then(|p| self.auth_failures.record(p.ip()))
    }
}

/// The SCIM router (plus the operational endpoints unless they have their own listener).
pub fn app(state: AppState, with_admin: bool) -> Router {
    let mut router = Router::new()
        .route("/scim/{app}/v2", any(scim_root))
        .route("/scim/{app}/v2/", any(scim_root))
        .route("/scim/{app}/v2/{*rest}", any(scim_entry));
    if with_admin {
        router = router.merge(admin_routes());
    }
    router.fallback(not_found).with_state(state)
}

/// /healthz, /readyz and /metrics.
pub fn admin_routes() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).route("/metrics", get(metrics))
}

/// The admin listener's router: the operational endpoints, and the status page when an admin token is set
/// (never on the SCIM listener: `app` does not mount it).
pub fn admin_app(state: AppState) -> Router {
    let mut router = admin_routes();
    if state.status.is_some() {
        router = router.merge(crate::status::routes());
    }
    router.fallback(not_found).with_state(state)
}

async fn not_found() -> Response {
    ScimError::not_found("no such endpoint; SCIM lives under /scim/{app}/v2").into_response()
}

/// Alive unless the store has stopped for good (a failed fsync, a panicked writer thread): only a restart
/// recovers that, so the orchestrator is told to do it rather than keep an unready process.
async fn healthz(State(state): State<AppState>) -> Response {
    match state.gateway.store.broken() {
        None => "ok\n".into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("store stopped: {why}\n")).into_response(),
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    let gw = &state.gateway;
    let store_ok = store_writable(&state).await;
    let apps: serde_json::Map<String, Value> = gw
        .apps
        .values()
        .map(|a| {
            let app = json!({"vendor": a.adapter.vendor(), "state": gw.metrics.vendor_state(&a.name).as_str(),
                "warnings": gw.metrics.vendor_warnings(&a.name)});
            (a.name.clone(), app)
        })
        .collect();
    let body = json!({"store": if store_ok { "ok" } else { "unavailable" }, "config": "loaded", "apps": apps});
    let status = if store_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// Whether the store can commit a write, checked at most once per `STORE_CHECK_TTL`: probes in between
/// get the last answer. Concurrent probes wait (without holding a runtime thread) for the one check under
/// way instead of each writing; the write itself runs off the async workers (SQLite's writer thread, or a
/// PostgreSQL connection), as it may wait out the store's busy timeout.
async fn store_writable(state: &AppState) -> bool {
    let mut last = state.store_check.lock().await;
    if let Some((at, ok)) = *last {
        if at.elapsed() < STORE_CHECK_TTL {
            return ok;
        }
    }
    let store = state.gateway.store.clone();
    let ok = store.check_writable().await.is_ok();
    *last = Some((Instant::now(), ok));
    ok
}

async fn metrics(State(state): State<AppState>) -> Response {
    let gw = &state.gateway;
    let mut scrape = crate::metrics::Scrape {
        apps: gw.apps.keys().cloned().collect(),
        outbound: gw.apps.values().filter_map(|a| a.adapter.outbound_stats().map(|s| (a.name.clone(), s))).collect(),
        shadow: Vec::new(),
        audit_entries: gw.store.audit_len().await.unwrap_or(0),
    };
    for app in gw.apps.keys() {
        for kind in [Kind::User, Kind::Group] {
            scrape.shadow.push((app.clone(), kind.as_str(), gw.store.count(app, kind).await.unwrap_or(0)));
        }
    }
    let text = gw.metrics.render(scrape);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

/// Whether the request carries this app's bearer token. Constant-time in the token's content.
fn authorized(app: &App, headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return false };
    let Some((scheme, token)) = value.trim().split_once(' ') else { return false };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let presented = token_hash(token.trim());
    presented.ct_eq(&app.token_sha256).into()
}

/// The answer to a failed bearer-token check (a wrong token or an unknown app, which answer alike): the
/// failure is counted against its source, and a source over its quota gets 429 instead of 401.
fn auth_failed(state: &AppState, peer: Option<SocketAddr>) -> ScimError {
    match state.record_auth_failure(peer) {
        Some(wait) => ScimError::too_many_auth_failures(wait),
        None => ScimError::unauthorized("unknown app or wrong bearer token"),
    }
}

fn request_id(headers: &HeaderMap) -> String {
    ["client-request-id", "x-request-id", "x-ms-request-id"]
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
        .map(String::from)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

fn base_url(state: &AppState, headers: &HeaderMap, app: &str) -> String {
    let origin = match &state.public_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("localhost");
            let proto = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).unwrap_or("http");
            format!("{proto}://{host}")
        }
    };
    format!("{origin}/scim/{app}/v2")
}

async fn scim_root(state: State<AppState>, Path(app): Path<String>, req: Request) -> Response {
    handle(state.0, app, String::new(), req).await
}

async fn scim_entry(state: State<AppState>, Path((app, rest)): Path<(String, String)>, req: Request) -> Response {
    handle(state.0, app, rest, req).await
}

async fn handle(state: AppState, app_name: String, rest: String, req: Request) -> Response {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let (parts, body) = req.into_parts();
    let (method, uri, headers) = (parts.method, parts.uri, parts.headers);
    let started = Instant::now();
    let rid = request_id(&headers);
    let segments: Vec<String> = rest.split('/').filter(|s| !s.is_empty()).map(String::from).collect();
    let resource = segments.first().cloned().unwrap_or_default();
    let span = tracing::info_span!("scim", app = %app_name, method = %method, resource = %resource, request_id = %rid,
        operation = tracing::field::Empty, status = tracing::field::Empty, vendor_calls = tracing::field::Empty,
        attempts = tracing::field::Empty, outcome = tracing::field::Empty, duration_ms = tracing::field::Empty);
    let budget_ends = tokio::time::Instant::now() + state.request_budget;
    let calls = Arc::new(adapter_api::calls::CallLog::for_request(&rid).with_deadline(budget_ends));
    let tasks = state.tasks.clone();
    let work = async move {
        let gw = state.gateway.clone();
        let (operation, result) = match gw.apps.get(&app_name).cloned() {
            // An unknown app answers like a wrong token, so the SCIM surface does not confirm app names
            // (/readyz and /metrics do list them: README says to keep them on a private admin_listen).
            None => ("auth", Err(auth_failed(&state, peer))),
            Some(app) => {
                let ip = peer.map(|p| p.ip());
                // The allow-list first: an address outside it learns nothing and costs no hashing.
                if !app.ip_allow.is_empty() && !ip.is_some_and(|ip| app.ip_allow.iter().any(|c| c.contains(ip))) {
                    ("auth", Err(ScimError::new(StatusCode::FORBIDDEN, None, "this address may not call this app")))
                } else if !authorized(&app, &headers) {
                    ("auth", Err(auth_failed(&state, peer)))
                } else {
                    let ctx = Ctx { request_id: rid.clone(), base_url: base_url(&state, &headers, &app_name) };
                    let work = dispatch(&state, &app, &ctx, &method, &segments, uri.query(), &headers, body);
                    let answer = adapter_api::calls::scope(calls.clone(), work).await;
                    if answer.1.is_ok() && calls.calls() > 0 {
                        gw.metrics.set_vendor_state(&app.name, crate::metrics::VendorState::Ok);
                    }
                    answer
                }
            }
        };
        let status = match &result {
            Ok(r) => r.status,
            Err(e) => e.status,
        };
        let span = tracing::Span::current();
        span.record("operation", operation);
        span.record("status", status.as_u16());
        span.record("vendor_calls", calls.calls());
        span.record("attempts", calls.attempts());
        span.record("outcome", outcome_label(&result));
        span.record("duration_ms", started.elapsed().as_millis() as u64);
        // Unknown app names come from anyone's URL: one label for all of them keeps the series bounded.
        let label = if gw.apps.contains_key(&app_name) { app_name.as_str() } else { "_unknown" };
        gw.metrics.observe_request(label, operation, status.as_u16(), started.elapsed());
        if calls.attempts() > 0 {
            gw.metrics.observe_vendor_attempts(label, &calls.attempt_log());
        }
        match &result {
            Err(e) if e.status.is_server_error() || e.status == StatusCode::TOO_MANY_REQUESTS => {
                tracing::warn!(detail = %e.detail, "request failed")
            }
            Err(e) => {
                tracing::info!(detail = %e.detail, "request refused")
            }
            Ok(_) => tracing::info!("request done"),
        }
        let mut resp = match result {
            Ok(reply) => reply_response(reply),
            Err(e) => e.into_response(),
        };
        if let Ok(v) = HeaderValue::from_str(&rid) {
            resp.headers_mut().insert("x-request-id", v);
        }
        resp
    }
    .instrument(span);
    // Its own task: a client that disconnects (or a drain that ends the connection) drops this handler,
    // but never a change half-way between the vendor call and its shadow write and audit entry. The task
    // is tracked: `Running::stop` waits for it even when its connection is already gone.
    match tasks.spawn(work).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::error!(error = %e, "request task failed");
            ScimError::unavailable(5, "the request could not be completed; try again").into_response()
        }
    }
}

fn reply_response(reply: Reply) -> Response {
    let mut resp = match reply.body {
        Some(body) => (reply.status, serde_json::to_vec(&body).unwrap_or_default()).into_response(),
        None => reply.status.into_response(),
    };
    if resp.status() != StatusCode::NO_CONTENT {
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_CONTENT_TYPE));
    }
    if let Some(loc) = reply.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    resp
}

/// Reads and parses a JSON body within the size limit.
async fn json_body(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Value, ScimError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if !(mime.is_empty() || mime == "application/scim+json" || mime == "application/json") {
            return Err(ScimError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Some("invalidSyntax"),
                format!("send application/scim+json or application/json, not {mime}"),
            ));
        }
    }
    let too_large = || {
        ScimError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            format!("the request body is larger than the limit of {} bytes", state.max_body_bytes),
        )
    };
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_body_bytes as u64) {
        return Err(too_large());
    }
    let bytes: Bytes = axum::body::to_bytes(body, state.max_body_bytes).await.map_err(|_| too_large())?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ScimError::invalid_syntax("the request body is empty; a JSON object is expected"));
    }
    serde_json::from_slice(&bytes).map_err(|e| ScimError::invalid_syntax(format!("the body is not valid JSON: {e}")))
}

fn kind_of(segment: &str) -> Option<Kind> {
    if segment.eq_ignore_ascii_case("Users") {
        Some(Kind::User)
    } else if segment.eq_ignore_ascii_case("Groups") {
        Some(Kind::Group)
    } else {
        None
    }
}

fn method_not_allowed(method: &Method) -> ScimError {
    ScimError::new(StatusCode::METHOD_NOT_ALLOWED, None, format!("{method} is not allowed here"))
}

type Dispatched = (&'static str, Result<Reply, ScimError>);

/// One word for how a request ended, for its log line: `ok`, the SCIM error type, or what kind of failure.
fn outcome_label(result: &Result<Reply, ScimError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) if e.status == StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        Err(e) if e.status.is_server_error() => "unavailable",
        Err(e) => e.scim_type.unwrap_or("refused"),
    }
}

#[allow(clippy::too_many_arguments)]
async fn dispatch(
    state: &AppState,
    app: &App,
    ctx: &Ctx,
    method: &Method,
    segments: &[String],
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Dispatched {
    let gw = &state.gateway;
    let capabilities = app.adapter.capabilities();
    // Groups exist for this app when the vendor keeps them or the gateway does (`group_roles`).
    let groups = capabilities.groups || Gateway::maps_groups(app);
    let base = &ctx.base_url;
    let list_of = |items: Vec<Value>| {
        let n = items.len();
        Ok(Reply {
            status: StatusCode::OK,
            body: Some(list_response(items, &ListQuery { start_index: 1, count: Some(n), ..Default::default() })),
            location: None,
        })
    };
    let ok = |v: Value| Ok(Reply { status: StatusCode::OK, body: Some(v), location: None });
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let lower: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let lower: Vec<&str> = lower.iter().map(String::as_str).collect();

    if method == Method::GET {
        match lower.as_slice() {
            [] | ["serviceproviderconfig"] | ["serviceproviderconfigs"] => {
                return ("discovery", ok(discovery::service_provider_config(base, capabilities.update_users)))
            }
            ["resourcetypes"] => return ("discovery", list_of(discovery::resource_types(base, groups))),
            ["resourcetypes", _] => {
                return (
                    "discovery",
                    discovery::find_by_id(discovery::resource_types(base, groups), segs[1])
                        .map(|v| Reply { status: StatusCode::OK, body: Some(v), location: None })
                        .ok_or_else(|| ScimError::not_found(format!("no resource type {}", segs[1]))),
                )
            }
            ["schemas"] => return ("discovery", list_of(discovery::schemas(base, groups))),
            ["schemas", _] => {
                let id = segs[1..].join("/");
                return (
                    "discovery",
                    discovery::find_by_id(discovery::schemas(base, groups), &id)
                        .map(|v| Reply { status: StatusCode::OK, body: Some(v), location: None })
                        .ok_or_else(|| ScimError::not_found(format!("no schema {id}"))),
                );
            }
            _ => {}
        }
    }
    if matches!(lower.first(), Some(&"serviceproviderconfig" | &"resourcetypes" | &"schemas")) {
        return ("discovery", Err(method_not_allowed(method)));
    }
    if matches!(lower.first(), Some(&"bulk" | &"me" | &".search")) {
        return (
            "unsupported",
            Err(ScimError::not_implemented(format!("/{} is not supported by this gateway", segs[0]))),
        );
    }
    let Some(kind) = segs.first().and_then(|s| kind_of(s)) else {
        return ("unknown", Err(ScimError::not_found(format!("no endpoint /{}", segs.join("/")))));
    };
    let query = match ListQuery::parse(query) {
        Ok(q) => q,
        Err(e) => return ("list", Err(e)),
    };
    match (segs.len(), method) {
        (1, &Method::GET) => ("list", gw.list(app, ctx, kind, &query).await),
        (1, &Method::POST) => match json_body(state, headers, body).await {
            Ok(v) => ("create", gw.create(app, ctx, kind, v).await),
            Err(e) => ("create", Err(e)),
        },
        (2, &Method::POST) if segs[1].eq_ignore_ascii_case(".search") => {
            match json_body(state, headers, body).await.and_then(|v| ListQuery::from_search_body(&v)) {
                Ok(q) => ("search", gw.list(app, ctx, kind, &q).await),
                Err(e) => ("search", Err(e)),
            }
        }
        (2, &Method::GET) => ("get", gw.get(app, ctx, kind, segs[1], &query).await),
        (2, &Method::PATCH) => match json_body(state, headers, body).await {
            Ok(v) => ("patch", gw.patch(app, ctx, kind, segs[1], v).await),
            Err(e) => ("patch", Err(e)),
        },
        (2, &Method::PUT) => match json_body(state, headers, body).await {
            Ok(v) => ("replace", gw.replace(app, ctx, kind, segs[1], v).await),
            Err(e) => ("replace", Err(e)),
        },
        (2, &Method::DELETE) => ("delete", gw.delete(app, ctx, kind, segs[1]).await),
        (1 | 2, _) => ("unknown", Err(method_not_allowed(method))),
        _ => ("unknown", Err(ScimError::not_found(format!("no endpoint /{}", segs.join("/"))))),
    }
}
