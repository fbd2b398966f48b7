//! Shared machinery for vendor simulators: fault injection (`SimFaults`: throttling, 5xx, latency,
//! timeouts, dropped connections, lost responses), request counters (`SimCounters`), the `/_sim/faults`
//! and `/_sim/counters` admin routes, the SCIM a simulated vendor speaks (error bodies, list responses,
//! `eq` filters and PATCH, all on the `scim` crate), vendor-lenient paging, case-insensitive routing, and
//! `spawn_sim`, which serves a router connection by connection so a fault can close the TCP connection
//! without any HTTP response.
//!
//! A vendor simulator is then only its store and its vendor rules: build an axum `Router`, wrap it with
//! `SimKit::wrap`, and serve it with `spawn_sim`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use scim::error::{ScimError, SCIM_CONTENT_TYPE};
use scim::filter::{CompareOp, Filter};
use scim::patch::{PatchError, PatchOp};
use scim::schema::{AttrType, ResourceKind, USER_SCHEMA};
use scim::ListQuery;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tower::ServiceExt;

/// Admin paths start with this prefix; faults and counters never apply to them.
pub const ADMIN_PREFIX: &str = "/_sim";

/// 429 + `Retry-After` once more than `requests` requests arrived within one window of `per`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Throttle {
    pub requests: u32,
    /// Window length, in seconds in JSON (fractions allowed).
    #[serde(with = "secs_f64")]
    pub per: Duration,
    pub retry_after_secs: u64,
}

/// Faults a simulator injects. All off by default; settable at runtime (`PUT /_sim/faults` or
/// `SimKit::set_faults`). Rates are fractions of requests in 0.0..=1.0.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimFaults {
    pub throttle: Option<Throttle>,
    /// Fraction answered 500, 502 or 503 (chosen at random among the three).
    pub error_rate: f64,
    /// Fraction delayed by `slow_ms` before being handled.
    pub slow_rate: f64,
    pub slow_ms: u64,
    /// Fraction never answered within any sane client timeout (held `TIMEOUT_HOLD`, then dropped).
    pub timeout_rate: f64,
    /// Fraction whose connection is closed without a response, before the request is applied.
    pub drop_rate: f64,
    /// Fraction applied, then their connection closed without a response ("the response was lost").
    pub lost_response_rate: f64,
    /// Seed for reproducible fault sequences; `None` seeds from the OS.
    pub seed: Option<u64>,
}

/// How long a `timeout_rate` fault holds a request before closing its connection.
pub const TIMEOUT_HOLD: Duration = Duration::from_secs(60);

mod secs_f64 {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

/// What a simulator saw, for tests and `GET /_sim/counters`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SimCounters {
    pub requests: u64,
    /// Requests by HTTP method (`GET`, `POST`, ...).
    pub by_method: BTreeMap<String, u64>,
    /// 429s sent by the throttle.
    pub throttled: u64,
    /// Faults injected (5xx, slow, timeout, drop, lost response), by name.
    pub faults: BTreeMap<String, u64>,
    /// Highest number of requests being handled at once.
    pub max_in_flight: usize,
    /// Most requests that arrived within one wall-clock second.
    pub peak_requests_per_second: u64,
    /// Requests divided by the seconds between the first and the last request (0 below two requests).
    pub mean_requests_per_second: f64,
}

impl SimCounters {
    pub fn method(&self, method: &str) -> u64 {
        self.by_method.get(method).copied().unwrap_or(0)
    }
    pub fn faults_total(&self) -> u64 {
        self.faults.values().sum()
    }
}

#[derive(Debug)]
struct Inner {
    faults: SimFaults,
    rng: StdRng,
    window_start: Option<Instant>,
    window_count: u32,
    counters: SimCounters,
    first: Option<Instant>,
    last: Option<Instant>,
    per_second: BTreeMap<u64, u64>,
    epoch: Instant,
}

/// Fault and counter state of one simulator; cheap to clone.
#[derive(Clone, Debug)]
pub struct SimKit {
    inner: Arc<Mutex<Inner>>,
    in_flight: Arc<AtomicUsize>,
}

impl Default for SimKit {
    fn default() -> Self {
        SimKit::new(SimFaults::default())
    }
}

enum Decision {
    Pass,
    Throttle(u64),
    Status(StatusCode),
    Drop,
    Timeout,
    Lost,
}

fn rng_for(seed: Option<u64>) -> StdRng {
    match seed {
        Some(s) => StdRng::seed_from_u64(s),
        None => StdRng::from_os_rng(),
    }
}

impl SimKit {
    pub fn new(faults: SimFaults) -> Self {
        let rng = rng_for(faults.seed);
        SimKit {
            inner: Arc::new(Mutex::new(Inner {
                faults,
                rng,
                window_start: None,
                window_count: 0,
                counters: SimCounters::default(),
                first: None,
                last: None,
                per_second: BTreeMap::new(),
                epoch: Instant::now(),
            })),
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the counters inconsistent in a harmful way.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the faults (and reseeds, and restarts the throttle window).
    pub fn set_faults(&self, faults: SimFaults) {
        let mut inner = self.lock();
        inner.rng = rng_for(faults.seed);
        inner.faults = faults;
        inner.window_start = None;
        inner.window_count = 0;
    }

    pub fn faults(&self) -> SimFaults {
        self.lock().faults.clone()
    }

    pub fn counters(&self) -> SimCounters {
        let inner = self.lock();
        let mut c = inner.counters.clone();
        c.peak_requests_per_second = inner.per_second.values().copied().max().unwrap_or(0);
        if let (Some(first), Some(last)) = (inner.first, inner.last) {
            let secs = last.duration_since(first).as_secs_f64();
            if c.requests > 1 && secs > 0.0 {
                c.mean_requests_per_second = c.requests as f64 / secs;
            }
        }
        c
    }

    pub fn reset_counters(&self) {
        let mut inner = self.lock();
        inner.counters = SimCounters::default();
        inner.first = None;
        inner.last = None;
        inner.per_second.clear();
    }

    /// Counts the request and decides which fault (if any) it gets.
    fn admit(&self, method: &Method) -> (Decision, Option<u64>) {
        let mut inner = self.lock();
        let now = Instant::now();
        inner.counters.requests += 1;
        *inner.counters.by_method.entry(method.as_str().to_string()).or_default() += 1;
        inner.first.get_or_insert(now);
        inner.last = Some(now);
        let second = now.duration_since(inner.epoch).as_secs();
        *inner.per_second.entry(second).or_default() += 1;
        while inner.per_second.len() > 3600 {
            inner.per_second.pop_first();
        }

        if let Some(t) = inner.faults.throttle.clone() {
            let expired = inner.window_start.is_none_or(|s| now.duration_since(s) >= t.per);
            if expired {
                inner.window_start = Some(now);
                inner.window_count = 0;
            }
            inner.window_count += 1;
            if inner.window_count > t.requests {
                inner.counters.throttled += 1;
                return (Decision::Throttle(t.retry_after_secs), None);
            }
        }

        let f = inner.faults.clone();
        let slow = if f.slow_rate > 0.0 && inner.rng.random::<f64>() < f.slow_rate { Some(f.slow_ms) } else { None };
        let roll: f64 = inner.rng.random();
        let mut edge = 0.0;
        let mut pick = |rate: f64| {
            edge += rate.max(0.0);
            roll < edge
        };
        let decision = if pick(f.drop_rate) {
            Decision::Drop
        } else if pick(f.timeout_rate) {
            Decision::Timeout
        } else if pick(f.lost_response_rate) {
            Decision::Lost
        } else if pick(f.error_rate) {
            let codes = [StatusCode::INTERNAL_SERVER_ERROR, StatusCode::BAD_GATEWAY, StatusCode::SERVICE_UNAVAILABLE];
            Decision::Status(codes[inner.rng.random_range(0..codes.len())])
        } else {
            Decision::Pass
        };
        let name = match &decision {
            Decision::Drop => Some("drop".to_string()),
            Decision::Timeout => Some("timeout".to_string()),
            Decision::Lost => Some("lost_response".to_string()),
            Decision::Status(code) => Some(code.as_u16().to_string()),
            _ => None,
        };
        if let Some(name) = name {
            *inner.counters.faults.entry(name).or_default() += 1;
        }
        if slow.is_some() {
            *inner.counters.faults.entry("slow".into()).or_default() += 1;
        }
        (decision, slow)
    }

    fn enter(&self) -> InFlight {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let mut inner = self.lock();
        inner.counters.max_in_flight = inner.counters.max_in_flight.max(now);
        InFlight(self.in_flight.clone())
    }

    /// `/_sim/faults` (GET, PUT) and `/_sim/counters` (GET; DELETE resets).
    pub fn admin_routes(&self) -> Router {
        Router::new()
            .route("/_sim/faults", get(get_faults).put(put_faults))
            .route("/_sim/counters", get(get_counters).delete(reset_counters))
            .with_state(self.clone())
    }

    /// The router with the admin routes merged in and the fault/counter middleware on every route.
    pub fn wrap(&self, router: Router) -> Router {
        router.merge(self.admin_routes()).layer(axum::middleware::from_fn_with_state(self.clone(), fault_layer))
    }
}

struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn get_faults(State(kit): State<SimKit>) -> Json<SimFaults> {
    Json(kit.faults())
}

async fn put_faults(State(kit): State<SimKit>, Json(faults): Json<SimFaults>) -> Json<SimFaults> {
    kit.set_faults(faults);
    Json(kit.faults())
}

async fn get_counters(State(kit): State<SimKit>) -> Json<SimCounters> {
    Json(kit.counters())
}

async fn reset_counters(State(kit): State<SimKit>) -> StatusCode {
    kit.reset_counters();
    StatusCode::NO_CONTENT
}

/// Lets a request close its own connection (inserted by `spawn_sim`).
#[derive(Clone)]
struct ConnKill(Arc<Notify>);

/// Closes the connection carrying this request without answering; never returns when served by
/// `spawn_sim`. Served some other way (e.g. `oneshot` in a unit test), answers 599 so the test notices.
async fn close_connection(kill: Option<ConnKill>) -> Response {
    match kill {
        Some(k) => {
            k.0.notify_one();
            std::future::pending::<Response>().await
        }
        None => (
            StatusCode::from_u16(599).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "connection would be dropped (not served by spawn_sim)",
        )
            .into_response(),
    }
}

async fn fault_layer(State(kit): State<SimKit>, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with(ADMIN_PREFIX) {
        return next.run(req).await;
    }
    let kill = req.extensions().get::<ConnKill>().cloned();
    let _in_flight = kit.enter();
    let (decision, slow) = kit.admit(req.method());
    if let Some(ms) = slow {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    match decision {
        Decision::Pass => next.run(req).await,
        Decision::Throttle(secs) => {
            let mut resp = scim_error(StatusCode::TOO_MANY_REQUESTS, None, "too many requests");
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
            resp
        }
        Decision::Status(code) => scim_error(code, None, "simulated vendor failure"),
        Decision::Drop => close_connection(kill).await,
        Decision::Timeout => {
            tokio::time::sleep(TIMEOUT_HOLD).await;
            close_connection(kill).await
        }
        Decision::Lost => {
            let _applied = next.run(req).await;
            close_connection(kill).await
        }
    }
}

/// A running simulator. Dropping it (or `shutdown`) stops accepting and closes every connection.
#[derive(Debug)]
pub struct SimServer {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub base_url: String,
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
}

impl SimServer {
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Serves `router` on `addr` (default `127.0.0.1:0`), one hyper HTTP/1 connection task per TCP
/// connection, so faults can really close a connection without a response.
pub async fn spawn_sim(router: Router, addr: Option<SocketAddr>) -> std::io::Result<SimServer> {
    let listener = TcpListener::bind(addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))).await?;
    let local = listener.local_addr()?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(accept_loop(listener, router, rx));
    Ok(SimServer { base_url: format!("http://{local}"), addr: local, shutdown: tx })
}

async fn accept_loop(listener: TcpListener, router: Router, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let router = router.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let kill = Arc::new(Notify::new());
            let conn_kill = ConnKill(kill.clone());
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(conn_kill.clone());
                let router = router.clone();
                async move { router.oneshot(req.map(Body::new)).await.map_err(|e: Infallible| e) }
            });
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            // Leaving the select drops the connection future and with it the socket: the client sees the
            // connection close with no response.
            tokio::select! {
                _ = conn => {}
                _ = kill.notified() => {}
                _ = stop.changed() => {}
            }
        });
    }
}

// ---- SCIM helpers shared by the vendor simulators ----

/// A SCIM error response with the protocol crate's body. The headers stay a vendor's: no `Retry-After`
/// or gateway realm from `ScimError`'s own response (the throttle sets its `Retry-After` itself).
pub fn scim_error(status: StatusCode, scim_type: Option<&'static str>, detail: &str) -> Response {
    scim_json(status, ScimError::new(status, scim_type, detail).body())
}

/// A JSON response with `Content-Type: application/scim+json`.
pub fn scim_json(status: StatusCode, body: Value) -> Response {
    let mut resp = (status, Json(body)).into_response();
    resp.headers_mut().insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static(SCIM_CONTENT_TYPE));
    resp
}

/// A SCIM ListResponse for one page of `total` results.
pub fn list_response(page: Vec<Value>, total: usize, start_index: usize) -> Response {
    scim_json(StatusCode::OK, scim::list_page_response(page, total, &ListQuery { start_index, ..ListQuery::default() }))
}

/// The bearer token of `Authorization: Bearer <token>`, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let raw = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = raw.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// A filter a simulator does not take; its message is the detail of the 400 `invalidFilter` it answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported filter '{filter}': only {} eq \"value\" is supported", attributes.join(" / "))]
pub struct UnsupportedFilter {
    pub filter: String,
    /// The attributes it would take.
    pub attributes: Vec<String>,
}

/// Parses the only filter the simulators accept by default, `userName eq "value"` (attribute and operator
/// case-insensitive). `Err` carries a detail for a 400 `invalidFilter`.
pub fn parse_user_name_filter(filter: &str) -> Result<Filter, UnsupportedFilter> {
    parse_eq_filter(filter, &["userName"])
}

/// Parses `ATTR eq "value"` where ATTR is one of `attributes` (case-insensitive), with the protocol
/// crate's filter parser; any other filter is refused, as by a vendor that documents only these. Match
/// users with `filter_matches`.
pub fn parse_eq_filter(filter: &str, attributes: &[&str]) -> Result<Filter, UnsupportedFilter> {
    let f = filter.trim();
    let unsupported =
        || UnsupportedFilter { filter: f.to_string(), attributes: attributes.iter().map(|a| a.to_string()).collect() };
    let parsed = scim::filter::parse(f).map_err(|_| unsupported())?;
    let Filter::Compare { path, op: CompareOp::Eq, value: Value::String(_) } = &parsed else {
        return Err(unsupported());
    };
    let written = match &path.sub {
        Some(sub) => format!("{}.{sub}", path.attr),
        None => path.attr.clone(),
    };
    if path.urn.is_some() || !attributes.iter().any(|a| a.eq_ignore_ascii_case(&written)) {
        return Err(unsupported());
    }
    Ok(parsed)
}

/// Whether a user in SCIM shape matches `filter`, by the protocol crate's rules (userName and emails
/// compared case-insensitively).
pub fn filter_matches(filter: &Filter, user: &Value) -> bool {
    scim::filter::matches(ResourceKind::User, filter, user)
}

/// `startIndex`/`count` of a list request: 1-based start (at least 1), count capped at `max`.
pub fn page_params(query: &BTreeMap<String, String>, default_count: usize, max: usize) -> (usize, usize) {
    let get = |k: &str| {
        query.iter().find(|(key, _)| key.eq_ignore_ascii_case(k)).and_then(|(_, v)| v.trim().parse::<usize>().ok())
    };
    let start = get("startIndex").unwrap_or(1).max(1);
    let count = get("count").unwrap_or(default_count).min(max);
    (start, count)
}

/// Which SCIM resource a request path addresses, matching `base` and the resource names
/// case-insensitively (`/api/scim/users` and `/API/SCIM/Users/7` alike).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScimPath {
    Users,
    User(String),
    Groups,
    Other,
}

pub fn scim_path(path: &str, base: &str) -> ScimPath {
    let base = base.trim_end_matches('/');
    if path.len() < base.len() || !path.is_char_boundary(base.len()) {
        return ScimPath::Other;
    }
    let (head, rest) = path.split_at(base.len());
    if !head.eq_ignore_ascii_case(base) {
        return ScimPath::Other;
    }
    let segs: Vec<&str> = rest.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        [r] if r.eq_ignore_ascii_case("users") => ScimPath::Users,
        [r, id] if r.eq_ignore_ascii_case("users") => ScimPath::User((*id).to_string()),
        [r, ..] if r.eq_ignore_ascii_case("groups") => ScimPath::Groups,
        _ => ScimPath::Other,
    }
}

/// The operations of a SCIM PATCH body, read by the protocol crate. A simulated vendor takes JSON as
/// typed: a boolean attribute given anything but a JSON boolean (Entra's `"False"`, which the gateway must
/// turn into `false` before a vendor sees it) is refused `invalidValue`, where the crate's engine would
/// coerce it.
pub fn patch_ops(body: &Value) -> Result<Vec<PatchOp>, PatchError> {
    let ops = scim::patch::parse_patch(body)?;
    for op in &ops {
        let written: Vec<(&str, &Value)> = match (&op.path, &op.value) {
            (Some(path), Some(value)) => vec![(path.as_str(), value)],
            (None, Some(Value::Object(members))) => members.iter().map(|(k, v)| (k.as_str(), v)).collect(),
            _ => Vec::new(),
        };
        for (path, value) in written {
            let boolean =
                scim::schema::resolve(ResourceKind::User, path).is_some_and(|r| r.leaf().kind == AttrType::Boolean);
            if boolean && !value.is_boolean() && !value.is_null() {
                return Err(PatchError {
                    scim_type: "invalidValue",
                    detail: format!("{path} must be a JSON boolean, got {value}"),
                });
            }
        }
    }
    Ok(ops)
}

/// Applies a SCIM PATCH body (`patch_ops`) to a user document with the protocol crate's engine (RFC 7644
/// §3.5.2, atomic). `Err` is the 400 to answer, with its `scimType`.
pub fn apply_patch(doc: &mut Value, body: &Value) -> Result<(), PatchError> {
    scim::patch::apply(ResourceKind::User, doc, &patch_ops(body)?)
}

/// What the gateway's `demo` and `simulate` commands need from any vendor simulator, whatever its vendor.
/// A vendor's handle supplies its name, its server, its kit and its users; the rest comes from here.
pub trait Simulator: Send + Sync + std::fmt::Debug {
    fn vendor(&self) -> &'static str;
    fn server(&self) -> &SimServer;
    fn kit(&self) -> &SimKit;
    /// The users the simulated vendor holds, in its own admin view.
    fn users_json(&self) -> Vec<Value>;

    /// `http://127.0.0.1:PORT`; the admin view lives under `/_sim`.
    fn root_url(&self) -> String {
        self.server().base_url.clone()
    }
    fn set_faults(&self, faults: SimFaults) {
        self.kit().set_faults(faults);
    }
    fn counters(&self) -> SimCounters {
        self.kit().counters()
    }
    fn reset_counters(&self) {
        self.kit().reset_counters();
    }
}

/// What someone in the vendor's own admin UI does to a user behind the gateway's back (re-enable, rename,
/// add a user): the body of `POST /_sim/users` (add; `userName` required) and `PATCH /_sim/users/{userName}`
/// (edit) on every simulator; `DELETE /_sim/users/{userName}` removes one. Reconcile tests use them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminEdit {
    pub user_name: Option<String>,
    pub active: Option<bool>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
}

impl AdminEdit {
    /// Applies the edit to a user in SCIM shape (`userName`, `active`, `name.givenName/familyName`).
    pub fn apply_to_scim(&self, doc: &mut Value) {
        let Some(obj) = doc.as_object_mut() else { return };
        if let Some(u) = &self.user_name {
            obj.insert("userName".into(), json!(u));
        }
        if let Some(a) = self.active {
            obj.insert("active".into(), json!(a));
        }
        for (key, v) in [("givenName", &self.given_name), ("familyName", &self.family_name)] {
            if let Some(v) = v {
                let name = obj.entry("name").or_insert_with(|| json!({}));
                if let Some(name) = name.as_object_mut() {
                    name.insert(key.into(), json!(v));
                }
            }
        }
    }

    /// A SCIM create body for the user this edit adds (its work email is the userName).
    pub fn scim_create_body(&self) -> Value {
        let user_name = self.user_name.clone().unwrap_or_default();
        let mut doc = json!({
            "schemas": [USER_SCHEMA],
            "emails": [{"value": user_name, "type": "work", "primary": true}],
            "active": true,
        });
        self.apply_to_scim(&mut doc);
        doc
    }
}

/// The admin UI's answer for a user it does not hold.
pub fn admin_not_found(user_name: &str) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"error": format!("no user {user_name}")}))).into_response()
}

/// A simulator started for `demo`/`simulate`, with the adapter options that point an app at it.
/// A vendor's simulator as the registry knows it (`adapter_api::Vendor::simulator`): how to start it and
/// what the demo needs to put an app in front of it.
pub struct SimSpec {
    /// Starts the simulator accepting `credential`, on `addr` or a free port of 127.0.0.1.
    pub start: fn(credential: String, addr: Option<SocketAddr>) -> StartSim,
    /// The app option that carries the vendor credential (`simulate --config` reads it).
    pub credential_key: &'static str,
    /// The demo's `<type>-groups` app: Entra group displayName -> vendor role, first match wins. Empty:
    /// the demo has no groups app for this vendor.
    pub demo_group_roles: &'static [(&'static str, &'static str)],
    /// A role an Entra user must carry for this vendor to take it (Promapp refuses users with only Default
    /// Access): the role the demo's and the tests' users are given. `None`: the vendor needs none.
    pub demo_role: Option<&'static str>,
    /// The app option that says when the vendor credential expires, if the vendor's tokens do: the demo
    /// with a status page sets it three weeks ahead so the card shows the expiry warning.
    pub credential_expiry_key: Option<&'static str>,
}

/// The simulator being started.
pub type StartSim = std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<DemoSim>> + Send>>;

pub struct DemoSim {
    pub sim: Box<dyn Simulator>,
    /// The vendor-specific options of an app in front of this simulator (base_url, credential, ...).
    pub app_options: serde_json::Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    fn counting_router(hits: Arc<AtomicU64>) -> Router {
        Router::new().route(
            "/x",
            get(move || {
                let hits = hits.clone();
                async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    "ok"
                }
            }),
        )
    }

    async fn serve(faults: SimFaults) -> (SimKit, SimServer, Arc<AtomicU64>) {
        let hits = Arc::new(AtomicU64::new(0));
        let kit = SimKit::new(faults);
        let server = spawn_sim(kit.wrap(counting_router(hits.clone())), None).await.unwrap();
        (kit, server, hits)
    }

    #[tokio::test]
    async fn no_faults_answers_and_counts() {
        let (kit, server, hits) = serve(SimFaults::default()).await;
        let client = reqwest::Client::new();
        for _ in 0..3 {
            let r = client.get(format!("{}/x", server.base_url)).send().await.unwrap();
            assert_eq!(r.status(), 200);
        }
        let c = kit.counters();
        assert_eq!((c.requests, c.method("GET"), c.faults_total()), (3, 3, 0));
        assert!(c.max_in_flight >= 1 && c.peak_requests_per_second >= 1);
        assert_eq!(hits.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn drop_closes_the_connection_without_a_response() {
        let (kit, server, hits) = serve(SimFaults { drop_rate: 1.0, ..Default::default() }).await;
        let err = reqwest::get(format!("{}/x", server.base_url)).await.unwrap_err();
        assert!(err.status().is_none(), "a status came back: {err}");
        assert!(err.is_request() || err.is_connect() || err.to_string().contains("error"), "{err}");
        assert_eq!(hits.load(Ordering::SeqCst), 0, "a dropped request must not be applied");
        assert_eq!(kit.counters().faults.get("drop"), Some(&1));
    }

    #[tokio::test]
    async fn lost_response_applies_then_drops() {
        let (_kit, server, hits) = serve(SimFaults { lost_response_rate: 1.0, ..Default::default() }).await;
        let err = reqwest::get(format!("{}/x", server.base_url)).await.unwrap_err();
        assert!(err.status().is_none(), "{err}");
        assert_eq!(hits.load(Ordering::SeqCst), 1, "the write must have happened");
    }

    #[tokio::test]
    async fn timeout_holds_past_the_client_timeout() {
        let (_kit, server, _hits) = serve(SimFaults { timeout_rate: 1.0, ..Default::default() }).await;
        let client = reqwest::Client::builder().timeout(Duration::from_millis(200)).build().unwrap();
        let err = client.get(format!("{}/x", server.base_url)).send().await.unwrap_err();
        assert!(err.is_timeout(), "{err}");
    }

    #[tokio::test]
    async fn throttle_sends_429_with_retry_after_past_the_limit() {
        let throttle = Throttle { requests: 2, per: Duration::from_secs(60), retry_after_secs: 7 };
        let (kit, server, _hits) = serve(SimFaults { throttle: Some(throttle), ..Default::default() }).await;
        let client = reqwest::Client::new();
        let mut statuses = Vec::new();
        for _ in 0..3 {
            let r = client.get(format!("{}/x", server.base_url)).send().await.unwrap();
            statuses.push((r.status().as_u16(), r.headers().get("retry-after").cloned()));
        }
        assert_eq!(statuses[0].0, 200);
        assert_eq!(statuses[1].0, 200);
        assert_eq!(statuses[2].0, 429);
        assert_eq!(statuses[2].1.as_ref().unwrap(), "7");
        assert_eq!(kit.counters().throttled, 1);
    }

    #[tokio::test]
    async fn errors_are_5xx_and_faults_settable_over_http() {
        let (kit, server, _hits) = serve(SimFaults::default()).await;
        let client = reqwest::Client::new();
        let put = client
            .put(format!("{}/_sim/faults", server.base_url))
            .json(&json!({"error_rate": 1.0, "seed": 42}))
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 200);
        assert_eq!(kit.faults().error_rate, 1.0);
        for _ in 0..5 {
            let s = client.get(format!("{}/x", server.base_url)).send().await.unwrap().status().as_u16();
            assert!([500, 502, 503].contains(&s), "{s}");
        }
        let counters: SimCounters =
            client.get(format!("{}/_sim/counters", server.base_url)).send().await.unwrap().json().await.unwrap();
        assert_eq!(counters.faults_total(), 5);
        let bad =
            client.put(format!("{}/_sim/faults", server.base_url)).json(&json!({"nonsense": 1})).send().await.unwrap();
        assert_eq!(bad.status(), 422);
    }

    #[test]
    fn faults_deserialise_with_defaults_and_seconds() {
        let f: SimFaults = serde_json::from_value(json!({
            "throttle": {"requests": 5, "per": 1.5, "retry_after_secs": 2}
        }))
        .unwrap();
        assert_eq!(f.throttle.unwrap().per, Duration::from_millis(1500));
        assert_eq!(f.error_rate, 0.0);
    }

    #[test]
    fn user_name_filter_parses_only_eq_and_matches_case_insensitively() {
        let ok = [
            (r#"userName eq "a@b.c""#, "A@b.C"),
            (r#"USERNAME EQ "x\"y""#, "x\"y"),
            (r#"userName eq "back\\slash""#, "back\\slash"),
            (r#"userName  eq  """#, ""),
        ];
        for (f, user_name) in ok {
            let filter = parse_user_name_filter(f).unwrap();
            assert!(filter_matches(&filter, &json!({"userName": user_name})), "{f}");
            assert!(!filter_matches(&filter, &json!({"userName": format!("{user_name}z")})), "{f}");
        }
        let refused = [
            r#"email eq "x""#,
            r#"userName co "x""#,
            "userName eq x",
            r#"userName eq "a" and active eq true"#,
            r#"urn:ietf:params:scim:schemas:core:2.0:User:userName eq "a""#,
            r#"emails[value eq "a"]"#,
            r#"userName eq "unterminated"#,
        ];
        for bad in refused {
            assert!(parse_user_name_filter(bad).unwrap_err().to_string().contains("only userName eq"), "{bad}");
        }
        let attrs = ["userName", "emails.value"];
        let by_email = parse_eq_filter(r#"Emails.Value eq "A@x""#, &attrs).unwrap();
        assert!(filter_matches(&by_email, &json!({"userName": "u", "emails": [{"value": "b@x"}, {"value": "a@X"}]})));
        assert!(!filter_matches(&by_email, &json!({"userName": "a@x"})));
        assert!(parse_eq_filter(r#"username eq "b""#, &attrs).is_ok());
        assert!(parse_eq_filter(r#"emails eq "a""#, &attrs)
            .unwrap_err()
            .to_string()
            .contains("userName / emails.value"));
    }

    #[test]
    fn scim_paths_are_case_insensitive() {
        assert_eq!(scim_path("/api/scim/users", "/api/scim"), ScimPath::Users);
        assert_eq!(scim_path("/API/Scim/Users/17", "/api/scim"), ScimPath::User("17".into()));
        assert_eq!(scim_path("/api/scim/Groups", "/api/scim"), ScimPath::Groups);
        assert_eq!(scim_path("/other/Users", "/api/scim"), ScimPath::Other);
        assert_eq!(scim_path("/api", "/api/scim"), ScimPath::Other);
    }

    #[test]
    fn patch_applies_replace_add_remove_with_the_protocol_engine() {
        let mut doc = json!({"userName": "a", "active": true, "name": {"givenName": "A", "familyName": "B"},
            "emails": [{"value": "a@x", "type": "work"}]});
        let body = json!({"Operations": [
            {"op": "Replace", "path": "active", "value": false},
            {"op": "replace", "path": "name.givenName", "value": "Z"},
            {"op": "remove", "path": "name.familyName"},
            {"op": "add", "value": {"timezone": "UTC"}},
            {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "z@x"}
        ]});
        apply_patch(&mut doc, &body).unwrap();
        assert_eq!(
            doc,
            json!({"userName": "a", "active": false, "name": {"givenName": "Z"}, "timezone": "UTC",
                "emails": [{"value": "z@x", "type": "work"}]})
        );
        let unknown_op = json!({"Operations": [{"op": "move", "path": "active", "value": true}]});
        assert_eq!(apply_patch(&mut doc, &unknown_op).unwrap_err().scim_type, "invalidSyntax");
        let not_a_list = json!({"Operations": {"op": "remove", "path": "active"}});
        assert_eq!(apply_patch(&mut doc, &not_a_list).unwrap_err().scim_type, "invalidSyntax");
        let entra_string = json!({"Operations": [{"op": "replace", "path": "active", "value": "True"}]});
        assert_eq!(apply_patch(&mut doc, &entra_string).unwrap_err().scim_type, "invalidValue");
        let entra_string = json!({"Operations": [{"op": "replace", "value": {"active": "True"}}]});
        assert_eq!(apply_patch(&mut doc, &entra_string).unwrap_err().scim_type, "invalidValue");
        assert_eq!(doc["active"], false, "a refused PATCH changes nothing");
    }

    #[test]
    fn paging_defaults_and_caps() {
        let q: BTreeMap<String, String> = [("startIndex".into(), "0".into()), ("count".into(), "500".into())].into();
        assert_eq!(page_params(&q, 100, 200), (1, 200));
        assert_eq!(page_params(&BTreeMap::new(), 100, 200), (1, 100));
    }
}
