//! `scim-bridge entra-sim`: a driver that behaves like the Microsoft Entra provisioning service against one
//! SCIM base URL (normally a gateway app, `/scim/{app}/v2`).
//!
//! One run is: Test Connection (`userName eq "<random guid>"`, must be `200` and empty), the initial cycle
//! (per user the matching query, then `POST` on a miss or a diff `PATCH` on a hit), groups when the app
//! advertises them in `/ResourceTypes` (match, `POST` with the ADSCIM schema, member `PATCH`es), an
//! incremental cycle (attribute changes for ~20 % of the users, disables for ~10 %, deletions for ~5 %),
//! then a verification of the end state through the same base URL. Request bodies use Entra's default
//! shapes (no `aadOptscim062020` flag): `Replace` ops, `emails[type eq "work"].value`, `name.familyName`,
//! `active` as the string `"False"`, members as `[{"$ref": null, "value": id}]`.
//!
//! `429` and `503` are retried the way Entra does: after `Retry-After` (capped at `max_retry_wait` so a
//! benchmark does not sleep for minutes), up to `max_attempts` attempts; every retry is counted.
//!
//! The core is [`run`], used by the CLI, the tests (`tests/entra_cycle.rs`) and the benchmarks.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

// The URNs Entra sends, from the protocol crate. Bodies are built here, not with `scim::patch::PatchOp`:
// they must carry Entra's own spelling (`Replace`, `"False"`).
use scim::patch::PATCH_OP_SCHEMA as PATCH_OP;
use scim::schema::{
    ADSCIM_GROUP_SCHEMA as ADSCIM_GROUP, ENTERPRISE_USER_SCHEMA as ENTERPRISE_USER, GROUP_SCHEMA as CORE_GROUP,
    USER_SCHEMA as CORE_USER,
};

/// Members per group `PATCH` (Entra batches membership changes; one PATCH may carry several).
const MEMBERS_PER_PATCH: usize = 10;
/// Failure messages kept verbatim in a report (the count is always exact).
const FAILURES_KEPT: usize = 50;

/// What one run does.
#[derive(Clone, Debug)]
pub struct Options {
    /// SCIM base URL, e.g. `http://127.0.0.1:8080/scim/sandbox/v2`.
    pub base: String,
    pub token: String,
    pub users: usize,
    /// Groups to provision (only when the app advertises `Group` in `/ResourceTypes`).
    pub groups: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Seeds the names and the choice of changed/disabled/deleted users; the same seed against the same
    /// gateway matches the users of the previous run (the way a second Entra cycle does).
    pub seed: u64,
    /// Longest wait honoured from a `Retry-After` (Entra waits the full time; benchmarks should not).
    pub max_retry_wait: Duration,
    /// Attempts per request, the first included, for `429`/`503`/transport errors.
    pub max_attempts: u32,
    /// Timeout of one HTTP attempt.
    pub request_timeout: Duration,
    /// Run the incremental cycle after the initial one.
    pub incremental: bool,
    /// Verify the end state after the cycles.
    pub verify: bool,
    /// App-role value sent in `roles` (Promapp refuses users without a role); `None` sends `roles: []`.
    pub role: Option<String>,
    /// Fractions of the provisioned users changed, disabled and deleted by the incremental cycle.
    pub change_rate: f64,
    pub disable_rate: f64,
    pub delete_rate: f64,
}

impl Options {
    pub fn new(base: impl Into<String>, token: impl Into<String>, users: usize) -> Self {
        Options {
            base: base.into().trim_end_matches('/').to_string(),
            token: token.into(),
            users,
            groups: 0,
            concurrency: 8,
            seed: 1,
            max_retry_wait: Duration::from_secs(5),
            max_attempts: 10,
            request_timeout: Duration::from_secs(60),
            incremental: true,
            verify: true,
            role: Some("Viewer".into()),
            change_rate: 0.20,
            disable_rate: 0.10,
            delete_rate: 0.05,
        }
    }
}

/// What the driver expects one user to look like at the end.
#[derive(Clone, Debug, PartialEq)]
pub struct ExpectedUser {
    pub index: usize,
    pub user_name: String,
    /// The id the app gave it (None when provisioning failed).
    pub id: Option<String>,
    pub given_name: String,
    pub family_name: String,
    pub email: String,
    pub active: bool,
    pub deleted: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ExpectedGroup {
    pub display_name: String,
    pub id: Option<String>,
    /// Indexes (into `CycleReport::users`) of the users added as members.
    pub members: Vec<usize>,
}

/// Counts of one run. `ops` counts logical operations once; `statuses` counts every response, retries
/// included; `requests_by_phase` counts every attempt that reached the wire.
#[derive(Clone, Debug, Default)]
pub struct CycleReport {
    pub ops: BTreeMap<String, u64>,
    pub statuses: BTreeMap<u16, u64>,
    pub requests_by_phase: BTreeMap<String, u64>,
    pub phases: Vec<(String, Duration)>,
    pub retries: u64,
    /// Time spent waiting on `Retry-After` (after the cap).
    pub retry_wait: Duration,
    pub transport_errors: u64,
    pub failure_count: u64,
    /// The first failures, verbatim.
    pub failures: Vec<String>,
    /// Whether the app advertised groups (and so whether groups were sent).
    pub groups_advertised: bool,
    pub users: Vec<ExpectedUser>,
    pub groups: Vec<ExpectedGroup>,
    /// Test connection and both cycles; verification excluded.
    pub duration: Duration,
    /// Whether the end state was verified, and the time that took.
    pub verified: bool,
    pub verify_duration: Duration,
}

impl CycleReport {
    /// HTTP requests sent by the cycles (what Entra would send), verification excluded, retries included.
    pub fn entra_requests(&self) -> u64 {
        self.requests_by_phase.iter().filter(|(p, _)| p.as_str() != "verify").map(|(_, n)| n).sum()
    }
    pub fn op(&self, name: &str) -> u64 {
        self.ops.get(name).copied().unwrap_or(0)
    }
    pub fn status(&self, code: u16) -> u64 {
        self.statuses.get(&code).copied().unwrap_or(0)
    }
    pub fn ok(&self) -> bool {
        self.failure_count == 0
    }
    pub fn kept_users(&self) -> impl Iterator<Item = &ExpectedUser> {
        self.users.iter().filter(|u| u.id.is_some() && !u.deleted)
    }
}

impl fmt::Display for CycleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kept = self.kept_users().count();
        let active = self.kept_users().filter(|u| u.active).count();
        let deleted = self.users.iter().filter(|u| u.deleted).count();
        writeln!(
            f,
            "users: {} provisioned ({kept} kept: {active} active, {} disabled; {deleted} deleted); groups: {}",
            self.users.iter().filter(|u| u.id.is_some()).count(),
            kept - active,
            if self.groups_advertised { self.groups.len().to_string() } else { "not advertised".into() }
        )?;
        writeln!(f, "operations:")?;
        for (op, n) in &self.ops {
            writeln!(f, "  {op:<18} {n}")?;
        }
        let statuses: Vec<String> = self.statuses.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        writeln!(f, "statuses: {}", statuses.join(", "))?;
        let phases: Vec<String> = self
            .phases
            .iter()
            .map(|(p, d)| format!("{p} {:.2}s/{} req", d.as_secs_f64(), self.requests_by_phase.get(p).unwrap_or(&0)))
            .collect();
        writeln!(f, "phases: {}", phases.join(", "))?;
        writeln!(
            f,
            "requests: {} (verification excluded); retries: {} (waited {:.1}s); transport errors: {}",
            self.entra_requests(),
            self.retries,
            self.retry_wait.as_secs_f64(),
            self.transport_errors
        )?;
        let secs = self.duration.as_secs_f64();
        writeln!(
            f,
            "duration: {secs:.2}s ({:.0} requests/s){}",
            if secs > 0.0 { self.entra_requests() as f64 / secs } else { 0.0 },
            if self.verified {
                format!("; verification {:.2}s", self.verify_duration.as_secs_f64())
            } else {
                "; end state not verified".into()
            }
        )?;
        writeln!(f, "failures: {}", self.failure_count)?;
        for failure in &self.failures {
            writeln!(f, "  {failure}")?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Tally {
    ops: BTreeMap<String, u64>,
    statuses: BTreeMap<u16, u64>,
    requests_by_phase: BTreeMap<String, u64>,
    retries: u64,
    retry_wait: Duration,
    transport_errors: u64,
    failure_count: u64,
    failures: Vec<String>,
}

fn lock(t: &Mutex<Tally>) -> std::sync::MutexGuard<'_, Tally> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

/// A SCIM client that counts like Entra's logs would and retries like Entra does.
#[derive(Clone)]
struct Scim {
    http: reqwest::Client,
    base: String,
    token: String,
    phase: &'static str,
    max_retry_wait: Duration,
    max_attempts: u32,
    tally: Arc<Mutex<Tally>>,
}

struct Answer {
    status: StatusCode,
    body: Value,
}

impl Scim {
    fn in_phase(&self, phase: &'static str) -> Scim {
        Scim { phase, ..self.clone() }
    }

    fn fail(&self, msg: String) {
        let mut t = lock(&self.tally);
        t.failure_count += 1;
        if t.failures.len() < FAILURES_KEPT {
            t.failures.push(format!("[{}] {msg}", self.phase));
        }
    }

    /// One logical operation: sends, retries 429/503 (after `Retry-After`) and transport errors.
    async fn send(&self, op: &str, method: Method, path: &str, body: Option<&Value>) -> Result<Answer, String> {
        *lock(&self.tally).ops.entry(op.to_string()).or_default() += 1;
        let url = format!("{}{path}", self.base);
        let payload = body.map(|b| b.to_string());
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self.http.request(method.clone(), &url).bearer_auth(&self.token);
            if let Some(p) = &payload {
                req = req.header("content-type", "application/scim+json").body(p.clone());
            }
            *lock(&self.tally).requests_by_phase.entry(self.phase.to_string()).or_default() += 1;
            let wait = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    *lock(&self.tally).statuses.entry(status.as_u16()).or_default() += 1;
                    let retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok());
                    let bytes = resp.bytes().await.unwrap_or_default();
                    let retryable =
                        status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE;
                    if !retryable || attempt >= self.max_attempts {
                        let body = if bytes.is_empty() {
                            Value::Null
                        } else {
                            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
                        };
                        return Ok(Answer { status, body });
                    }
                    Duration::from_secs(retry_after.unwrap_or(1))
                }
                Err(e) => {
                    lock(&self.tally).transport_errors += 1;
                    if attempt >= self.max_attempts {
                        return Err(format!("{method} {path}: {e}"));
                    }
                    Duration::from_secs(1)
                }
            };
            let wait = wait.min(self.max_retry_wait);
            {
                let mut t = lock(&self.tally);
                t.retries += 1;
                t.retry_wait += wait;
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// `GET /Users?filter=userName eq "<name>"`: the matching query. `Ok(None)` on a miss.
    async fn find_user(&self, op: &str, user_name: &str) -> Result<Option<Value>, String> {
        let path = format!("/Users?filter={}", encode(&format!("userName eq \"{user_name}\"")));
        let a = self.send(op, Method::GET, &path, None).await?;
        if a.status != StatusCode::OK {
            return Err(format!("{op} {user_name}: status {} {}", a.status.as_u16(), detail(&a.body)));
        }
        let resources = a.body.get("Resources").and_then(Value::as_array).cloned().unwrap_or_default();
        match resources.len() {
            0 => Ok(None),
            1 => Ok(resources.into_iter().next()),
            n => Err(format!("{op} {user_name}: {n} users match")),
        }
    }
}

fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn detail(body: &Value) -> String {
    body.get("detail").and_then(Value::as_str).map(|d| format!("({d})")).unwrap_or_default()
}

/// The run's name prefix, from the seed, so two runs with different seeds never collide.
fn run_tag(seed: u64) -> String {
    format!("{:08x}", (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32)
}

fn new_user(tag: &str, index: usize) -> ExpectedUser {
    let user_name = format!("entra.{tag}.{index:06}@sim.example.com");
    ExpectedUser {
        index,
        email: user_name.clone(),
        user_name,
        id: None,
        given_name: format!("Given{index}"),
        family_name: format!("Family{index}"),
        active: true,
        deleted: false,
    }
}

/// Entra's create body (default mappings; `meta` and `roles` included the way Entra sends them).
pub fn create_body(u: &ExpectedUser, tag: &str, role: Option<&str>) -> Value {
    let roles = match role {
        Some(r) => json!([{"primary": true, "type": "WindowsAzureActiveDirectoryRole", "value": r}]),
        None => json!([]),
    };
    json!({
        "schemas": [CORE_USER, ENTERPRISE_USER],
        "externalId": format!("{tag}-{}", u.index),
        "userName": u.user_name,
        "active": u.active,
        "emails": [{"primary": true, "type": "work", "value": u.email}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": format!("{} {}", u.given_name, u.family_name), "familyName": u.family_name, "givenName": u.given_name},
        "roles": roles
    })
}

pub fn patch_body(ops: Vec<Value>) -> Value {
    json!({"schemas": [PATCH_OP], "Operations": ops})
}

fn work_email(doc: &Value) -> Option<&str> {
    let emails = doc.get("emails")?.as_array()?;
    let work =
        emails.iter().find(|e| e.get("type").and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case("work")));
    work.or_else(|| emails.iter().find(|e| e.get("primary") == Some(&Value::Bool(true))))
        .or(emails.first())
        .and_then(|e| e.get("value"))
        .and_then(Value::as_str)
}

fn active_of(doc: &Value) -> bool {
    match doc.get("active") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => true,
    }
}

fn name_part<'a>(doc: &'a Value, key: &str) -> Option<&'a str> {
    doc.get("name").and_then(|n| n.get(key)).and_then(Value::as_str)
}

/// The `Replace` operations Entra would send to turn `current` into `want` (Entra compares the matched
/// resource with the source and sends only the differences, one op per attribute).
pub fn diff_ops(current: &Value, want: &ExpectedUser) -> Vec<Value> {
    let mut ops = Vec::new();
    if work_email(current) != Some(want.email.as_str()) {
        ops.push(json!({"op": "Replace", "path": "emails[type eq \"work\"].value", "value": want.email}));
    }
    if name_part(current, "givenName") != Some(want.given_name.as_str()) {
        ops.push(json!({"op": "Replace", "path": "name.givenName", "value": want.given_name}));
    }
    if name_part(current, "familyName") != Some(want.family_name.as_str()) {
        ops.push(json!({"op": "Replace", "path": "name.familyName", "value": want.family_name}));
    }
    if active_of(current) != want.active {
        ops.push(json!({"op": "Replace", "path": "active", "value": if want.active { "True" } else { "False" }}));
    }
    ops
}

/// What is wrong with `doc` as the representation of `want` (None when it matches).
pub fn mismatch(doc: &Value, want: &ExpectedUser) -> Option<String> {
    let mut wrong = Vec::new();
    let user_name = doc.get("userName").and_then(Value::as_str).unwrap_or("");
    if !user_name.eq_ignore_ascii_case(&want.user_name) {
        wrong.push(format!("userName {user_name:?}"));
    }
    if want.id.is_some() && doc.get("id").and_then(Value::as_str) != want.id.as_deref() {
        wrong.push(format!("id {:?} (expected {:?})", doc.get("id"), want.id));
    }
    if work_email(doc) != Some(want.email.as_str()) {
        wrong.push(format!("work email {:?} (expected {})", work_email(doc), want.email));
    }
    if name_part(doc, "familyName") != Some(want.family_name.as_str()) {
        wrong.push(format!("familyName {:?} (expected {})", name_part(doc, "familyName"), want.family_name));
    }
    if active_of(doc) != want.active {
        wrong.push(format!("active {} (expected {})", active_of(doc), want.active));
    }
    (!wrong.is_empty()).then(|| format!("{}: {}", want.user_name, wrong.join(", ")))
}

/// Runs `f` over `items` with at most `concurrency` futures in flight (a semaphore permit is taken before
/// each spawn, so the JoinSet never holds more than `concurrency` tasks). Results come back in input order;
/// `None` for a task that panicked.
pub async fn for_each_bounded<T, O, F, Fut>(items: Vec<T>, concurrency: usize, f: F) -> Vec<Option<O>>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = O> + Send + 'static,
    O: Send + 'static,
{
    let semaphore = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut out: Vec<Option<O>> = Vec::with_capacity(items.len());
    out.resize_with(items.len(), || None);
    let mut set = JoinSet::new();
    fn store<O>(joined: Result<(usize, O), tokio::task::JoinError>, out: &mut [Option<O>]) {
        if let Ok((i, o)) = joined {
            out[i] = Some(o);
        }
    }
    for (i, item) in items.into_iter().enumerate() {
        let Ok(permit) = semaphore.clone().acquire_owned().await else { break };
        let fut = f(item);
        set.spawn(async move {
            let o = fut.await;
            drop(permit);
            (i, o)
        });
        while let Some(joined) = set.try_join_next() {
            store(joined, &mut out);
        }
    }
    while let Some(joined) = set.join_next().await {
        store(joined, &mut out);
    }
    out
}

/// Creates or (on a match) aligns one user: the initial cycle's work for that user.
async fn provision(scim: Scim, mut u: ExpectedUser, tag: String, role: Option<String>) -> ExpectedUser {
    let found = match scim.find_user("match", &u.user_name).await {
        Ok(found) => found,
        Err(e) => {
            scim.fail(e);
            return u;
        }
    };
    let current = match found {
        Some(doc) => doc,
        None => {
            let body = create_body(&u, &tag, role.as_deref());
            match scim.send("create", Method::POST, "/Users", Some(&body)).await {
                Ok(a) if a.status == StatusCode::CREATED => {
                    u.id = a.body.get("id").and_then(Value::as_str).map(str::to_string);
                    if u.id.is_none() {
                        scim.fail(format!("create {}: 201 without an id", u.user_name));
                    }
                    return u;
                }
                // A create that reached the app but whose answer was lost: Entra re-matches and updates.
                Ok(a) if a.status == StatusCode::CONFLICT => {
                    match scim.find_user("match_after_409", &u.user_name).await {
                        Ok(Some(doc)) => doc,
                        Ok(None) => {
                            scim.fail(format!("create {}: 409, then no match", u.user_name));
                            return u;
                        }
                        Err(e) => {
                            scim.fail(e);
                            return u;
                        }
                    }
                }
                Ok(a) => {
                    scim.fail(format!("create {}: status {} {}", u.user_name, a.status.as_u16(), detail(&a.body)));
                    return u;
                }
                Err(e) => {
                    scim.fail(e);
                    return u;
                }
            }
        }
    };
    u.id = current.get("id").and_then(Value::as_str).map(str::to_string);
    let Some(id) = u.id.clone() else {
        scim.fail(format!("match {}: resource without id", u.user_name));
        return u;
    };
    let ops = diff_ops(&current, &u);
    if !ops.is_empty() {
        patch_user(&scim, "update", &id, &u.user_name, ops).await;
    }
    u
}

async fn patch_user(scim: &Scim, op: &str, id: &str, user_name: &str, ops: Vec<Value>) {
    match scim.send(op, Method::PATCH, &format!("/Users/{id}"), Some(&patch_body(ops))).await {
        Ok(a) if a.status == StatusCode::OK || a.status == StatusCode::NO_CONTENT => {}
        Ok(a) => scim.fail(format!("{op} {user_name}: status {} {}", a.status.as_u16(), detail(&a.body))),
        Err(e) => scim.fail(e),
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Change {
    Attributes,
    Disable,
    Delete,
}

/// The incremental cycle's work for one user: match, then PATCH or DELETE.
async fn change(scim: Scim, mut u: ExpectedUser, what: Change) -> ExpectedUser {
    let current = match scim.find_user("match", &u.user_name).await {
        Ok(Some(doc)) => doc,
        Ok(None) => {
            scim.fail(format!("incremental match {}: the user is gone", u.user_name));
            return u;
        }
        Err(e) => {
            scim.fail(e);
            return u;
        }
    };
    let Some(id) = current.get("id").and_then(Value::as_str).map(str::to_string) else {
        scim.fail(format!("match {}: resource without id", u.user_name));
        return u;
    };
    match what {
        Change::Attributes => {
            u.family_name = format!("{}-renamed", u.family_name);
            u.email = format!("moved.{}", u.user_name);
            let ops = diff_ops(&current, &u);
            patch_user(&scim, "update", &id, &u.user_name, ops).await;
        }
        Change::Disable => {
            u.active = false;
            let ops = diff_ops(&current, &u);
            patch_user(&scim, "disable", &id, &u.user_name, ops).await;
        }
        Change::Delete => match scim.send("delete", Method::DELETE, &format!("/Users/{id}"), None).await {
            Ok(a) if a.status == StatusCode::NO_CONTENT || a.status == StatusCode::OK => u.deleted = true,
            Ok(a) => scim.fail(format!("delete {}: status {} {}", u.user_name, a.status.as_u16(), detail(&a.body))),
            Err(e) => scim.fail(e),
        },
    }
    u
}

async fn advertises_groups(scim: &Scim) -> Result<bool, String> {
    let a = scim.send("discovery", Method::GET, "/ResourceTypes", None).await?;
    if a.status != StatusCode::OK {
        return Ok(false);
    }
    let list = a.body.get("Resources").and_then(Value::as_array).cloned().unwrap_or_default();
    Ok(list.iter().any(|t| {
        ["id", "name"].iter().any(|k| t.get(k).and_then(Value::as_str).is_some_and(|v| v.eq_ignore_ascii_case("Group")))
    }))
}

async fn find_group(scim: &Scim, op: &str, display_name: &str) -> Result<Option<Value>, String> {
    let filter = encode(&format!("displayName eq \"{display_name}\""));
    let a = scim.send(op, Method::GET, &format!("/Groups?excludedAttributes=members&filter={filter}"), None).await?;
    if a.status != StatusCode::OK {
        return Err(format!("{op} {display_name}: status {} {}", a.status.as_u16(), detail(&a.body)));
    }
    Ok(a.body.get("Resources").and_then(Value::as_array).and_then(|r| r.first().cloned()))
}

/// Creates (or matches) one group, then adds its members in batches.
async fn provision_group(scim: Scim, mut g: ExpectedGroup, member_ids: Vec<String>, tag: String) -> ExpectedGroup {
    let existing = match find_group(&scim, "group_match", &g.display_name).await {
        Ok(found) => found,
        Err(e) => {
            scim.fail(e);
            return g;
        }
    };
    g.id = match existing {
        Some(doc) => doc.get("id").and_then(Value::as_str).map(str::to_string),
        None => {
            let body = json!({
                "schemas": [CORE_GROUP, ADSCIM_GROUP],
                "externalId": format!("{tag}-{}", g.display_name),
                "displayName": g.display_name,
                "meta": {"resourceType": "Group"}
            });
            match scim.send("group_create", Method::POST, "/Groups", Some(&body)).await {
                Ok(a) if a.status == StatusCode::CREATED => {
                    a.body.get("id").and_then(Value::as_str).map(str::to_string)
                }
                Ok(a) => {
                    scim.fail(format!(
                        "group_create {}: status {} {}",
                        g.display_name,
                        a.status.as_u16(),
                        detail(&a.body)
                    ));
                    None
                }
                Err(e) => {
                    scim.fail(e);
                    None
                }
            }
        }
    };
    let Some(id) = g.id.clone() else { return g };
    for chunk in member_ids.chunks(MEMBERS_PER_PATCH) {
        let members: Vec<Value> = chunk.iter().map(|m| json!({"$ref": null, "value": m})).collect();
        let body = patch_body(vec![json!({"op": "Add", "path": "members", "value": members})]);
        match scim.send("group_members", Method::PATCH, &format!("/Groups/{id}"), Some(&body)).await {
            Ok(a) if a.status == StatusCode::NO_CONTENT || a.status == StatusCode::OK => {}
            Ok(a) => {
                scim.fail(format!("group_members {}: status {} {}", g.display_name, a.status.as_u16(), detail(&a.body)))
            }
            Err(e) => scim.fail(e),
        }
    }
    g
}

/// Runs Test Connection, the initial cycle, groups, the incremental cycle and (with `opts.verify`) the
/// verification. `Err` only when the run could not start (bad URL, Test Connection refused); every other
/// problem is counted in `failures`.
pub async fn run(opts: &Options) -> Result<CycleReport, String> {
    run_observed(opts, &|_| {}).await
}

/// `run`, calling `after_phase` with each phase's name as it ends (a benchmark reads the vendor's
/// counters there, to give each phase its own figure).
pub async fn run_observed(opts: &Options, after_phase: &(dyn Fn(&str) + Sync)) -> Result<CycleReport, String> {
    let http = reqwest::Client::builder()
        .timeout(opts.request_timeout)
        .pool_max_idle_per_host(opts.concurrency.max(1) * 2)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let root = Scim {
        http,
        base: opts.base.clone(),
        token: opts.token.clone(),
        phase: "test_connection",
        max_retry_wait: opts.max_retry_wait,
        max_attempts: opts.max_attempts.max(1),
        tally: tally.clone(),
    };
    let tag = run_tag(opts.seed);
    let mut report = CycleReport::default();
    let started = Instant::now();

    // Test Connection: a random GUID must not match, and the answer must be 200.
    let phase = Instant::now();
    let probe = uuid::Uuid::new_v4().to_string();
    match root.find_user("test_connection", &probe).await {
        Ok(None) => {}
        Ok(Some(_)) => return Err(format!("Test Connection: userName eq \"{probe}\" matched a user")),
        Err(e) => return Err(format!("Test Connection failed: {e}")),
    }
    report.phases.push(("test_connection".into(), phase.elapsed()));
    after_phase("test_connection");

    // Initial cycle.
    let phase = Instant::now();
    let scim = root.in_phase("initial");
    let users: Vec<ExpectedUser> = (0..opts.users).map(|i| new_user(&tag, i)).collect();
    let results = for_each_bounded(users.clone(), opts.concurrency, |u| {
        provision(scim.clone(), u, tag.clone(), opts.role.clone())
    })
    .await;
    report.users = results.into_iter().zip(users).map(|(r, u)| r.unwrap_or(u)).collect();
    report.phases.push(("initial".into(), phase.elapsed()));
    after_phase("initial");

    // Groups, only where the app keeps them.
    if opts.groups > 0 {
        let phase = Instant::now();
        let scim = root.in_phase("groups");
        report.groups_advertised = match advertises_groups(&scim).await {
            Ok(b) => b,
            Err(e) => {
                scim.fail(e);
                false
            }
        };
        if report.groups_advertised {
            let mut jobs = Vec::new();
            for g in 0..opts.groups {
                let members: Vec<usize> = (g..report.users.len()).step_by(opts.groups).collect();
                let ids = members.iter().filter_map(|&i| report.users[i].id.clone()).collect::<Vec<_>>();
                jobs.push((ExpectedGroup { display_name: format!("Group {tag} {g:03}"), id: None, members }, ids));
            }
            let fallback: Vec<ExpectedGroup> = jobs.iter().map(|(g, _)| g.clone()).collect();
            let results =
                for_each_bounded(jobs, opts.concurrency, |(g, ids)| provision_group(scim.clone(), g, ids, tag.clone()))
                    .await;
            report.groups = results.into_iter().zip(fallback).map(|(r, g)| r.unwrap_or(g)).collect();
        }
        report.phases.push(("groups".into(), phase.elapsed()));
        after_phase("groups");
    }

    // Incremental cycle: disjoint random sets of deletions, disables and attribute changes.
    if opts.incremental {
        let phase = Instant::now();
        let scim = root.in_phase("incremental");
        let mut candidates: Vec<usize> = report.users.iter().filter(|u| u.id.is_some()).map(|u| u.index).collect();
        candidates.shuffle(&mut StdRng::seed_from_u64(opts.seed));
        let n = candidates.len() as f64;
        let deletes = (n * opts.delete_rate).round() as usize;
        let disables = (n * opts.disable_rate).round() as usize;
        let changes = (n * opts.change_rate).round() as usize;
        let mut jobs = Vec::new();
        for (k, &i) in candidates.iter().enumerate().take(deletes + disables + changes) {
            let what = if k < deletes {
                Change::Delete
            } else if k < deletes + disables {
                Change::Disable
            } else {
                Change::Attributes
            };
            jobs.push((report.users[i].clone(), what));
        }
        let fallback: Vec<ExpectedUser> = jobs.iter().map(|(u, _)| u.clone()).collect();
        let results = for_each_bounded(jobs, opts.concurrency, |(u, what)| change(scim.clone(), u, what)).await;
        for (r, u) in results.into_iter().zip(fallback) {
            let u = r.unwrap_or(u);
            let i = u.index;
            report.users[i] = u;
        }
        report.phases.push(("incremental".into(), phase.elapsed()));
        after_phase("incremental");
    }
    report.duration = started.elapsed();
    absorb(&mut report, &tally);

    if opts.verify {
        verify(opts, &mut report).await?;
    }
    Ok(report)
}

fn absorb(report: &mut CycleReport, tally: &Mutex<Tally>) {
    let t = lock(tally);
    report.ops = t.ops.clone();
    report.statuses = t.statuses.clone();
    report.requests_by_phase = t.requests_by_phase.clone();
    report.retries = t.retries;
    report.retry_wait = t.retry_wait;
    report.transport_errors = t.transport_errors;
    report.failure_count = t.failure_count;
    report.failures = t.failures.clone();
}

/// Checks the end state through `opts.base`: every kept user is found by its userName with the expected
/// attributes and active flag; every deleted user is `404` by id and not matched by filter; every group is
/// found by displayName and holds its kept members. Counts are added to `report`.
pub async fn verify(opts: &Options, report: &mut CycleReport) -> Result<(), String> {
    let http = reqwest::Client::builder()
        .timeout(opts.request_timeout)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    {
        // Carry the cycle's counts over so the report stays one sum.
        let mut t = lock(&tally);
        t.ops = report.ops.clone();
        t.statuses = report.statuses.clone();
        t.requests_by_phase = report.requests_by_phase.clone();
        t.retries = report.retries;
        t.retry_wait = report.retry_wait;
        t.transport_errors = report.transport_errors;
        t.failure_count = report.failure_count;
        t.failures = report.failures.clone();
    }
    let scim = Scim {
        http,
        base: opts.base.clone(),
        token: opts.token.clone(),
        phase: "verify",
        max_retry_wait: opts.max_retry_wait,
        max_attempts: opts.max_attempts.max(1),
        tally: tally.clone(),
    };
    let started = Instant::now();
    let users: Vec<ExpectedUser> = report.users.iter().filter(|u| u.id.is_some()).cloned().collect();
    for_each_bounded(users, opts.concurrency, |u| {
        let scim = scim.clone();
        async move {
            if u.deleted {
                let id = u.id.clone().unwrap_or_default();
                match scim.send("verify_deleted", Method::GET, &format!("/Users/{id}"), None).await {
                    Ok(a) if a.status == StatusCode::NOT_FOUND => {}
                    Ok(a) => scim.fail(format!("deleted {} answers {} by id", u.user_name, a.status.as_u16())),
                    Err(e) => scim.fail(e),
                }
                match scim.find_user("verify_deleted", &u.user_name).await {
                    Ok(None) => {}
                    Ok(Some(_)) => scim.fail(format!("deleted {} still matches by userName", u.user_name)),
                    Err(e) => scim.fail(e),
                }
            } else {
                match scim.find_user("verify_user", &u.user_name).await {
                    Ok(Some(doc)) => {
                        if let Some(m) = mismatch(&doc, &u) {
                            scim.fail(m);
                        }
                    }
                    Ok(None) => scim.fail(format!("{} is not found by userName", u.user_name)),
                    Err(e) => scim.fail(e),
                }
            }
        }
    })
    .await;
    let groups = report.groups.clone();
    for g in groups {
        let Some(id) = g.id.clone() else { continue };
        match find_group(&scim, "verify_group", &g.display_name).await {
            Ok(Some(doc)) if doc.get("id").and_then(Value::as_str) == Some(id.as_str()) => {}
            Ok(other) => scim.fail(format!("group {} not matched by displayName ({other:?})", g.display_name)),
            Err(e) => scim.fail(e),
        }
        match scim.send("verify_group", Method::GET, &format!("/Groups/{id}"), None).await {
            Ok(a) if a.status == StatusCode::OK => {
                let held: Vec<&str> = a
                    .body
                    .get("members")
                    .and_then(Value::as_array)
                    .map(|m| m.iter().filter_map(|v| v.get("value").and_then(Value::as_str)).collect())
                    .unwrap_or_default();
                let missing = g
                    .members
                    .iter()
                    .map(|&i| &report.users[i])
                    .filter(|u| !u.deleted)
                    .filter_map(|u| u.id.as_deref())
                    .filter(|id| !held.contains(id))
                    .count();
                if missing > 0 {
                    scim.fail(format!("group {} lacks {missing} member(s)", g.display_name));
                }
            }
            Ok(a) => scim.fail(format!("group {} answers {} by id", g.display_name, a.status.as_u16())),
            Err(e) => scim.fail(e),
        }
    }
    report.verify_duration = started.elapsed();
    report.verified = true;
    report.phases.push(("verify".into(), report.verify_duration));
    absorb(report, &tally);
    Ok(())
}

/// `scim-bridge entra-sim` arguments.
#[derive(clap::Args, Debug)]
pub struct CliArgs {
    /// SCIM base URL of the app, e.g. http://127.0.0.1:8080/scim/sandbox/v2
    #[arg(long)]
    pub base: String,
    /// The app's secret token (the one Entra would send).
    #[arg(long, env = "SCIM_BRIDGE_ENTRA_SIM_TOKEN", hide_env_values = true)]
    pub token: String,
    #[arg(long, default_value_t = 100)]
    pub users: usize,
    /// Groups to provision (skipped when the app does not advertise Group in /ResourceTypes).
    #[arg(long, default_value_t = 0)]
    pub groups: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Seeds the user names and the incremental choices (same seed = same users: a second cycle).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Longest Retry-After honoured, in seconds (Entra honours it fully).
    #[arg(long, default_value_t = 5.0)]
    pub max_retry_wait: f64,
    /// Attempts per request on 429/503/transport errors, the first included.
    #[arg(long, default_value_t = 10)]
    pub max_attempts: u32,
    /// App-role value sent in `roles` ("" sends `roles: []`; Promapp needs a role).
    #[arg(long, default_value = "Viewer")]
    pub role: String,
    /// Initial cycle only.
    #[arg(long)]
    pub no_incremental: bool,
    /// Do not verify the end state.
    #[arg(long)]
    pub no_verify: bool,
}

impl CliArgs {
    pub fn options(&self) -> Result<Options, String> {
        let mut o = Options::new(&self.base, &self.token, self.users);
        o.groups = self.groups;
        o.concurrency = self.concurrency.max(1);
        o.seed = self.seed;
        o.max_retry_wait =
            Duration::try_from_secs_f64(self.max_retry_wait).map_err(|e| format!("--max-retry-wait: {e}"))?;
        o.max_attempts = self.max_attempts.max(1);
        o.role = (!self.role.is_empty()).then(|| self.role.clone());
        o.incremental = !self.no_incremental;
        o.verify = !self.no_verify;
        Ok(o)
    }
}

/// Runs `entra-sim` and prints the report; an error when anything failed.
pub async fn cli(args: CliArgs) -> Result<(), String> {
    let report = run(&args.options()?).await?;
    print!("{report}");
    match report.failure_count {
        0 => Ok(()),
        n => Err(format!("{n} failure(s)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_sends_only_changes_with_entra_shapes() {
        let mut u = new_user("t", 1);
        let doc = json!({"userName": u.user_name, "active": true,
            "emails": [{"type": "work", "value": u.email}],
            "name": {"givenName": u.given_name, "familyName": u.family_name}});
        assert!(diff_ops(&doc, &u).is_empty());
        assert_eq!(mismatch(&doc, &u), None);
        u.active = false;
        u.family_name = "X".into();
        let ops = diff_ops(&doc, &u);
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0], json!({"op": "Replace", "path": "name.familyName", "value": "X"}));
        assert_eq!(ops[1], json!({"op": "Replace", "path": "active", "value": "False"}));
        assert!(mismatch(&doc, &u).is_some());
    }

    #[tokio::test]
    async fn bounded_runs_everything_in_order_and_never_exceeds_the_bound() {
        let live = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let out = for_each_bounded((0..50).collect(), 4, |i: usize| {
            let (live, peak) = (live.clone(), peak.clone());
            async move {
                let now = live.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                peak.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
                live.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                i * 2
            }
        })
        .await;
        assert_eq!(out, (0..50).map(|i| Some(i * 2)).collect::<Vec<_>>());
        assert!(peak.load(std::sync::atomic::Ordering::SeqCst) <= 4);
    }
}
