//! Outbound resilience end to end: 1,000 users created, updated, disabled and deleted through the gateway
//! against a vendor simulator that fails 20 % of requests in mixed ways (5xx, dropped connections, lost
//! responses, slow replies, timeouts). The test plays Entra: a 429/503 is retried later (Entra's next
//! cycle), anything else is final. It checks that every answer was a true 2xx or a retryable 429/503 with
//! `Retry-After`, and that the simulator ends with exactly the intended users: none lost, none duplicated.
//! (`tests/pacing.rs` shows the gateway paced at a vendor's rate never draws a 429.)

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use scim_bridge::config::{AppConfig, Config, LimitsConfig};
use scim_bridge::server;
use scim_bridge_devkit::demo;
use serde_json::{json, Value};
use simkit::SimFaults;
use tokio::sync::{Mutex, Semaphore};

const TOKEN: &str = "resilience-token";

struct Setup {
    base: String,
    sim: simkit::DemoSim,
    running: server::Running,
    store: Arc<scim_bridge::store::Store>,
}

async fn setup(vendor: &str, faults: SimFaults, limits: LimitsConfig) -> Setup {
    let sim = demo::simulator(vendor, "vendor-credential", None).await.unwrap();
    sim.sim.set_faults(faults);
    let mut apps = BTreeMap::new();
    apps.insert(
        vendor.to_string(),
        AppConfig {
            vendor: vendor.to_string(),
            token_sha256: hex(&scim_bridge::http::token_hash(TOKEN)),
            limits,
            ip_allow: Vec::new(),
            reconcile: Default::default(),
            group_roles: Vec::new(),
            options: sim.app_options.clone(),
        },
    );
    let config = Config::with_apps("127.0.0.1:0".parse().unwrap(), apps);
    let gw = server::build_gateway(&config, "test").unwrap();
    let store = gw.store.clone();
    let running = server::start(&config, gw).await.unwrap();
    Setup { base: format!("http://{}/scim/{vendor}/v2", running.addr), sim, running, store }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What Entra saw, for the final verdict.
#[derive(Default, Debug)]
struct Tally {
    statuses: BTreeMap<u16, u64>,
    retryable_without_retry_after: u64,
    unexpected: Vec<String>,
}

struct Entra {
    client: reqwest::Client,
    base: String,
    tally: Mutex<Tally>,
}

impl Entra {
    /// Sends until a final answer; 429/503 are retried like Entra's next cycle would (compressed in time).
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        for _ in 0..1000 {
            let mut req = self.client.request(method.clone(), format!("{}{path}", self.base)).bearer_auth(TOKEN);
            if let Some(b) = body {
                req = req.header("content-type", "application/scim+json").body(b.to_string());
            }
            let resp = req.send().await.expect("the gateway itself always answers");
            let status = resp.status().as_u16();
            let has_retry_after = resp.headers().get("retry-after").is_some();
            let value: Value = resp.json().await.unwrap_or(Value::Null);
            let mut t = self.tally.lock().await;
            *t.statuses.entry(status).or_default() += 1;
            if status == 429 || status == 503 {
                if !has_retry_after {
                    t.retryable_without_retry_after += 1;
                }
                drop(t);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
            return (status, value);
        }
        panic!("{method} {path}: still retryable after 1000 tries");
    }

    fn unexpected(&self, t: &mut Tally, what: String) {
        t.unexpected.push(what);
    }

    /// Entra's create: match by userName first, create only when nothing matches.
    async fn ensure_user(&self, user_name: &str) -> Option<String> {
        let filter = format!("/Users?filter=userName+eq+%22{user_name}%22");
        let (s, found) = self.send(reqwest::Method::GET, &filter, None).await;
        if s == 200 {
            if let Some(id) = found["Resources"][0]["id"].as_str() {
                return Some(id.to_string());
            }
        }
        let body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": user_name, "externalId": user_name, "active": true,
            "name": {"givenName": "Load", "familyName": "Original"},
            "emails": [{"type": "work", "primary": true, "value": user_name}],
            "roles": [{"primary": true, "type": "WindowsAzureActiveDirectoryRole", "value": "Editor"}]
        });
        let (s, created) = self.send(reqwest::Method::POST, "/Users", Some(&body)).await;
        match s {
            // A create whose vendor answer was lost is adopted by the gateway on the retry: never a 409.
            201 => created["id"].as_str().map(String::from),
            other => {
                let mut t = self.tally.lock().await;
                self.unexpected(&mut t, format!("create {user_name}: {other} {created}"));
                None
            }
        }
    }

    async fn expect_success(&self, method: reqwest::Method, path: &str, body: Option<&Value>, what: &str) {
        let (s, v) = self.send(method, path, body).await;
        if !(200..300).contains(&s) {
            let mut t = self.tally.lock().await;
            self.unexpected(&mut t, format!("{what}: {s} {v}"));
        }
    }
}

fn patch(ops: Value) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops})
}

const USERS: usize = 1000;

async fn lifecycle_under_faults(vendor: &str, reconcile_meanwhile: bool) {
    let faults = SimFaults {
        error_rate: 0.07,
        drop_rate: 0.04,
        lost_response_rate: 0.05,
        slow_rate: 0.02,
        slow_ms: 150,
        timeout_rate: 0.02,
        seed: Some(7),
        ..SimFaults::default()
    };
    let limits = LimitsConfig {
        requests_per_second: Some(2000.0),
        burst: Some(200),
        max_in_flight: Some(32),
        attempt_timeout_ms: Some(400),
        deadline_ms: Some(3000),
        max_attempts: Some(4),
        breaker_failures: Some(50),
        breaker_cooldown_ms: Some(100),
        ..LimitsConfig::default()
    };
    let s = setup(vendor, faults, limits).await;
    let entra =
        Arc::new(Entra { client: reqwest::Client::new(), base: s.base.clone(), tally: Mutex::new(Tally::default()) });
    // Reconcile passes back to back while Entra's cycle runs (enforce mode, through the same faults).
    let cycle_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reconciler = reconcile_meanwhile.then(|| {
        let (gateway, done) = (s.running.gateway.clone(), cycle_done.clone());
        let app = gateway.apps[vendor].clone();
        tokio::spawn(async move {
            let opts = scim_bridge::reconcile::PassOptions {
                mode: scim_bridge::config::ReconcileMode::Enforce,
                dry_run: false,
                max_repairs: usize::MAX,
            };
            let mut passes = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                passes.push(gateway.reconcile(&app, &opts, true, &|_| {}).await);
            }
            passes
        })
    });
    let gate = Arc::new(Semaphore::new(32));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..USERS {
        let (entra, gate) = (entra.clone(), gate.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            let user_name = format!("load{i:04}@example.com");
            let Some(id) = entra.ensure_user(&user_name).await else { return };
            let path = format!("/Users/{id}");
            let rename = patch(json!([{"op": "Replace", "path": "name.familyName", "value": "Updated"}]));
            entra.expect_success(reqwest::Method::PATCH, &path, Some(&rename), &format!("update {user_name}")).await;
            match i % 3 {
                0 => {}
                1 => {
                    let disable = patch(json!([{"op": "Replace", "path": "active", "value": "False"}]));
                    entra
                        .expect_success(reqwest::Method::PATCH, &path, Some(&disable), &format!("disable {user_name}"))
                        .await;
                }
                _ => {
                    let (st, v) = entra.send(reqwest::Method::DELETE, &path, None).await;
                    if st != 204 {
                        let mut t = entra.tally.lock().await;
                        entra.unexpected(&mut t, format!("delete {user_name}: {st} {v}"));
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    cycle_done.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(reconciler) = reconciler {
        let passes = reconciler.await.unwrap();
        let listed = passes.iter().filter(|p| p.unchecked.is_empty()).count();
        let repaired: usize = passes.iter().map(|p| p.count(scim_bridge::reconcile::Resolution::Repaired)).sum();
        println!(
            "{vendor}: {} reconcile passes during the cycle ({listed} complete), {repaired} repairs",
            passes.len()
        );
        assert!(listed > 0, "{vendor}: at least one pass compared the whole vendor during the cycle");
    }

    let tally = entra.tally.lock().await;
    println!("{vendor}: statuses Entra saw: {:?}; simulator counters: {:?}", tally.statuses, s.sim.sim.counters());
    assert!(
        tally.unexpected.is_empty(),
        "{vendor}: non-retryable failures: {:#?}",
        &tally.unexpected[..tally.unexpected.len().min(10)]
    );
    assert_eq!(tally.retryable_without_retry_after, 0, "{vendor}: every 429/503 carries Retry-After");
    for status in tally.statuses.keys() {
        assert!(matches!(status, 200 | 201 | 204 | 429 | 503), "{vendor}: unexpected status {status}");
    }
    assert!(s.sim.sim.counters().faults_total() > 0, "{vendor}: the faults really happened");

    // The vendor's final state, user by user.
    let mut held: HashMap<String, Vec<Value>> = HashMap::new();
    for u in s.sim.sim.users_json() {
        let name = ["userName", "user_name", "email"]
            .iter()
            .find_map(|k| u.get(*k).and_then(Value::as_str))
            .unwrap_or_default()
            .to_lowercase();
        held.entry(name).or_default().push(u);
    }
    let hard_delete = s.running.gateway.apps[vendor].adapter.capabilities().hard_delete;
    for i in 0..USERS {
        let name = format!("load{i:04}@example.com");
        let records = held.get(&name).cloned().unwrap_or_default();
        assert!(records.len() <= 1, "{vendor}: {name} duplicated at the vendor: {records:?}");
        let rec = records.first();
        match (i % 3, rec) {
            (0, Some(u)) => {
                assert_ne!(u["active"], json!(false), "{vendor}: {name} should be active: {u}");
                assert!(u.to_string().contains("Updated"), "{vendor}: {name} lost its update: {u}");
            }
            (1, Some(u)) => assert_eq!(u["active"], json!(false), "{vendor}: {name} should be disabled: {u}"),
            (2, None) if hard_delete => {}
            (2, Some(u)) if !hard_delete => assert_eq!(u["active"], json!(false), "{vendor}: {name}: {u}"),
            (_, other) => panic!("{vendor}: {name} (group {}) wrong final state: {other:?}", i % 3),
        }
    }

    // The audit log kept every attempt: retried changes show the failed attempts before the one that took.
    let audit = s.store.audit_log(&scim_bridge::store::AuditQuery::default()).await.unwrap();
    let mut retried_then_ok = 0;
    for e in &audit {
        assert_eq!(e.attempt_log.len(), e.attempts as usize, "{vendor}: every attempt listed: {e:?}");
        assert!(e.attempts >= e.vendor_calls, "{vendor}: {e:?}");
        let failed_first = e.attempt_log.first().is_some_and(|a| !a.outcome.starts_with('2'));
        if e.outcome == "ok" && failed_first && e.attempt_log.last().is_some_and(|a| a.outcome.starts_with('2')) {
            retried_then_ok += 1;
        }
    }
    println!("{vendor}: {} audit entries, {retried_then_ok} succeeded after failed attempts", audit.len());
    assert!(retried_then_ok > 0, "{vendor}: the audit log shows changes that succeeded after failed attempts");
    s.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_users_under_twenty_percent_faults_prodpad() {
    lifecycle_under_faults("prodpad", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_users_under_faults_with_reconcile_running_prodpad() {
    lifecycle_under_faults("prodpad", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_users_under_faults_with_reconcile_running_promapp() {
    lifecycle_under_faults("promapp", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_users_under_twenty_percent_faults_promapp() {
    lifecycle_under_faults("promapp", false).await;
}
