//! Black-box: the gateway as an operator and an attacker meet it. Signals (SIGHUP on a plain-HTTP gateway),
//! the audit line written before any vendor call (a store that stops writing mid-cycle, a client that
//! hangs up), recycled userNames meeting a leaver's account, slow and hostile clients (silent connections,
//! idle keep-alives, the connection cap, the IP allow-list before the token, failed-auth throttling), and
//! the smaller guards (PATCH size, hostile vendor ids and reply sizes, no database or transport error text
//! in what Entra reads).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use reqwest::Method;
use scim_bridge::config::{AppConfig, Config};
use scim_bridge::server::{self, Running};
use scim_bridge::store::{AuditQuery, Kind, Store};
use serde_json::{json, Value};
use simkit::SimFaults;

const VENDOR_TOKEN: &str = "hardening-token";

/// A gateway in front of one vendor simulator, on a file store.
struct VendorGateway {
    base: String,
    sim: simkit::DemoSim,
    running: Running,
    store: Arc<Store>,
    store_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
    client: reqwest::Client,
}

async fn vendor_gateway(vendor: &str) -> VendorGateway {
    let dir = tempfile::tempdir().unwrap();
    let sim = scim_bridge_devkit::demo::simulator(vendor, &scim_bridge_devkit::demo::demo_credential(vendor), None)
        .await
        .unwrap();
    let options = sim.app_options.clone();
    vendor_gateway_with(vendor, options, sim, dir).await
}

async fn vendor_gateway_with(
    vendor: &str,
    options: serde_json::Map<String, Value>,
    sim: simkit::DemoSim,
    dir: tempfile::TempDir,
) -> VendorGateway {
    let mut apps = BTreeMap::new();
    apps.insert(
        vendor.to_string(),
        AppConfig {
            vendor: vendor.to_string(),
            token_sha256: sha(VENDOR_TOKEN),
            limits: Default::default(),
            ip_allow: Vec::new(),
            reconcile: Default::default(),
            group_roles: Vec::new(),
            options,
        },
    );
    let mut config = Config::with_apps("127.0.0.1:0".parse().unwrap(), apps);
    let store_path = dir.path().join("store.sqlite");
    config.store.path = store_path.to_str().unwrap().to_string();
    let gw = server::build_gateway(&config, "test").unwrap();
    let store = gw.store.clone();
    let running = server::start(&config, gw).await.unwrap();
    VendorGateway {
        base: format!("http://{}/scim/{vendor}/v2", running.addr),
        sim,
        running,
        store,
        store_path,
        _dir: dir,
        client: reqwest::Client::new(),
    }
}

impl VendorGateway {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(VENDOR_TOKEN);
        if let Some(b) = body {
            req = req.header("content-type", "application/scim+json").body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
    }

    async fn audit_for(&self, user_name: &str) -> Vec<scim_bridge::store::AuditEntry> {
        self.store.audit_log(&AuditQuery { name: Some(user_name.into()), ..Default::default() }).await.unwrap()
    }

    fn vendor_user(&self, user_name: &str) -> Option<Value> {
        self.sim.sim.users_json().into_iter().find(|u| {
            ["userName", "email", "username"]
                .iter()
                .any(|k| u.get(*k).and_then(Value::as_str).is_some_and(|v| v.eq_ignore_ascii_case(user_name)))
        })
    }

    /// Another process holding the store's write lock: every write of the gateway waits out its busy
    /// timeout and fails, as it would on a full disk or a file turned read-only under it.
    fn lock_store(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(&self.store_path).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        conn
    }
}

fn entra_user_with(user_name: &str, external_id: &str) -> Value {
    let mut u = entra_user(user_name);
    u["externalId"] = json!(external_id);
    u
}

async fn eventually<F: FnMut() -> Fut, Fut: std::future::Future<Output = bool>>(mut done: F) -> bool {
    for _ in 0..400 {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

// ------------------------------------------------------------------ 1. SIGHUP

/// The real process without TLS: SIGHUP (systemd's `ExecReload`) must not end it.
#[tokio::test]
async fn sighup_does_not_kill_a_plain_http_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let yaml = format!(
        "listen: \"127.0.0.1:{port}\"\nstore:\n  path: \":memory:\"\napps:\n  sandbox:\n    type: sandbox\n    token_sha256: \"{}\"\n",
        sha(TOKEN)
    );
    let config = dir.path().join("proxy.yaml");
    std::fs::write(&config, yaml).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_scim-bridge"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/scim/sandbox/v2/Users");
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..800 {
        if client.get(&url).bearer_auth(TOKEN).send().await.is_ok_and(|r| r.status() == 200) {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "the gateway came up");
    for _ in 0..3 {
        let _ = std::process::Command::new("kill").args(["-HUP", &child.id().to_string()]).status();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let exited = child.try_wait().unwrap();
    let still = client.get(&url).bearer_auth(TOKEN).send().await.map(|r| r.status().as_u16());
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(exited, None, "SIGHUP ended the process");
    assert_eq!(still.ok(), Some(200), "the gateway answers after SIGHUP");
}

// ------------------------------------------------------------------ 2. audit before the vendor call

/// The store stops taking writes while creates are at the vendor: every user the vendor now holds has an
/// audit line (the intent written before the call), Entra got 503 for the changes that could not be
/// recorded, and never the database's own error text.
#[tokio::test]
async fn every_vendor_change_is_audited_even_when_the_store_fails_mid_cycle() {
    let g = vendor_gateway("promapp").await;
    assert_eq!(g.call(Method::POST, "/Users", Some(entra_user("before@example.com"))).await.0, 201);
    // Every vendor call now takes 1.5 s, so the store can fail while calls are in flight.
    g.sim.sim.set_faults(SimFaults { slow_rate: 1.0, slow_ms: 1500, ..Default::default() });
    let names: Vec<String> = (0..4).map(|i| format!("burst{i}@example.com")).collect();
    let mut calls = Vec::new();
    for name in &names {
        let (client, base, body) = (g.client.clone(), g.base.clone(), entra_user(name));
        calls.push(tokio::spawn(async move {
            let resp = client
                .post(format!("{base}/Users"))
                .bearer_auth(VENDOR_TOKEN)
                .header("content-type", "application/scim+json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap_or(Value::Null))
        }));
    }
    // Wait until creates reached the vendor, then take the store away.
    assert!(eventually(|| async { g.sim.sim.counters().method("POST") >= 2 }).await, "the creates reached the vendor");
    let lock = g.lock_store();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap());
    }
    drop(lock);
    let mut unrecorded_at_vendor = 0;
    for (name, (status, body)) in names.iter().zip(&answers) {
        let at_vendor = g.vendor_user(name).is_some();
        let audit = g.audit_for(name).await;
        assert!(!at_vendor || !audit.is_empty(), "{name} was created at the vendor with no audit entry");
        if *status == 503 {
            let detail = body["detail"].as_str().unwrap_or_default().to_lowercase();
            assert!(!detail.contains("database") && !detail.contains("sqlite"), "{detail}");
            if at_vendor {
                // What the vendor did and the gateway could not record is an open intent, not a success.
                assert_eq!(audit[0].outcome, scim_bridge::store::INTENT, "{audit:?}");
                unrecorded_at_vendor += 1;
            }
        } else {
            assert_eq!(*status, 201, "{body}");
        }
    }
    assert!(unrecorded_at_vendor > 0, "the store failed while creates were at the vendor: {answers:?}");
    // Entra's retry after the store is back adopts what the vendor already has: no duplicate.
    for name in &names {
        let (s, _) = g.call(Method::POST, "/Users", Some(entra_user(name))).await;
        assert!(s == 201 || s == 409, "{s}");
    }
    assert_eq!(g.sim.sim.users_json().len(), names.len() + 1);
}

/// Makes every vendor reply take 1.5 s, sends a create of `user_name`, and hangs up after 300 ms.
async fn hang_up_on_a_slow_create(g: &VendorGateway, user_name: &str) {
    g.sim.sim.set_faults(SimFaults { slow_rate: 1.0, slow_ms: 1500, ..Default::default() });
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(300)).build().unwrap();
    let sent = impatient
        .post(format!("{}/Users", g.base))
        .bearer_auth(VENDOR_TOKEN)
        .header("content-type", "application/scim+json")
        .body(entra_user(user_name).to_string())
        .send()
        .await;
    assert!(sent.is_err(), "the client gave up before the vendor answered");
}

/// A client that hangs up while its create is at the vendor does not cancel the change half-way: the
/// shadow record and the audit entry are written as if it had waited.
#[tokio::test]
async fn a_client_that_hangs_up_does_not_cancel_a_change() {
    let g = vendor_gateway("promapp").await;
    hang_up_on_a_slow_create(&g, "hangup@example.com").await;
    let stored =
        || async { g.store.find_by_name("promapp", Kind::User, "hangup@example.com").await.unwrap().is_some() };
    assert!(eventually(stored).await, "the change finished and was recorded");
    let audit = g.audit_for("hangup@example.com").await;
    assert_eq!(audit.len(), 1);
    assert_eq!((audit[0].outcome.as_str(), audit[0].status), ("ok", 201));
    assert!(g.vendor_user("hangup@example.com").is_some());
}

/// SIGTERM right after a client hung up on a create the vendor is still working on: `stop` returns only
/// once that change is finished, so the audit entry is complete and the shadow holds the user (the runtime
/// would otherwise drop the task between the vendor call and the shadow write).
#[tokio::test]
async fn stop_waits_for_a_change_whose_client_hung_up() {
    let g = vendor_gateway("promapp").await;
    hang_up_on_a_slow_create(&g, "drained@example.com").await;
    let VendorGateway { running, store, sim, _dir, .. } = g;
    running.stop().await.unwrap();
    let audit =
        store.audit_log(&AuditQuery { name: Some("drained@example.com".into()), ..Default::default() }).await.unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!((audit[0].outcome.as_str(), audit[0].status), ("ok", 201), "{audit:?}");
    assert!(store.find_by_name("promapp", Kind::User, "drained@example.com").await.unwrap().is_some());
    drop(sim);
}

/// `/readyz` proves the store can commit a write, not only read; the check is reused for a second, so a
/// flood of probes costs at most one synced write per second.
#[tokio::test]
async fn readyz_fails_while_the_store_cannot_write() {
    let g = vendor_gateway("promapp").await;
    let readyz = format!("http://{}/readyz", g.running.addr);
    assert_eq!(g.client.get(&readyz).send().await.unwrap().status(), 200);
    let lock = g.lock_store();
    // Within the second: the last answer, no new write (a write would wait out the lock and fail).
    let started = std::time::Instant::now();
    let cached = g.client.get(&readyz).send().await.unwrap().status();
    assert!(started.elapsed() < Duration::from_millis(900), "the cached answer came without a write");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let status = g.client.get(&readyz).send().await.unwrap().status();
    drop(lock);
    assert_eq!(cached, 200);
    assert_eq!(status, 503);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(g.client.get(&readyz).send().await.unwrap().status(), 200);
}

/// The grace periods of the shipped deploy files, read from the files: (file, seconds).
fn deploy_grace_periods() -> Vec<(&'static str, u64)> {
    let root = env!("CARGO_MANIFEST_DIR");
    let value = |file: &'static str, key: &str| -> (&'static str, u64) {
        let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.starts_with('#') && l.starts_with(key))
            .unwrap_or_else(|| panic!("{file}: no {key}"));
        let raw = line[key.len()..].trim_start_matches([':', '=', ' ']).trim();
        let secs = raw.strip_suffix('s').unwrap_or(raw).parse().unwrap_or_else(|_| panic!("{file}: {line}"));
        (file, secs)
    };
    vec![
        value("deploy/systemd/scim-bridge.service", "TimeoutStopSec"),
        value("deploy/kubernetes/deployment.yaml", "terminationGracePeriodSeconds"),
        value("deploy/compose.yaml", "stop_grace_period"),
        value("deploy/kubernetes-replicas/deployment.yaml", "terminationGracePeriodSeconds"),
        value("deploy/replicas/compose.yaml", "stop_grace_period"),
    ]
}

/// The drain outlasts any request's vendor budget, and even the longest drain (at the largest budget the
/// config accepts) ends, with `Running::stop`'s extra second, before a shipped deploy file sends SIGKILL.
#[test]
fn the_drain_outlasts_the_request_budget() {
    let max = Duration::from_millis(scim_bridge::config::MAX_REQUEST_BUDGET_MS);
    assert!(server::drain_timeout(max) > max);
    for (file, grace) in deploy_grace_periods() {
        let longest = server::drain_timeout(max) + Duration::from_secs(1);
        assert!(longest < Duration::from_secs(grace), "{file}: grace {grace} s, drain up to {longest:?}");
    }
    // And the cap is enforced: a larger budget is refused.
    let yaml = format!("request_budget_ms: {}\nconnections:\n  idle_timeout_ms: 90000\n", max.as_millis() + 1);
    assert!(Config::from_yaml(&yaml, "proxy.yaml").is_err());
}

// ------------------------------------------------------------------ 3. recycled userNames

/// A leaver's account, deprovisioned through the gateway, goes back only to the same Entra user (same
/// externalId). A newcomer given the recycled userName gets 409, audited `needs_manual_action`, and the
/// leaver's account stays disabled.
#[tokio::test]
async fn a_recycled_user_name_does_not_take_over_a_leavers_account() {
    let g = vendor_gateway("promapp").await;
    let name = "recycled@example.com";
    let (s, created) = g.call(Method::POST, "/Users", Some(entra_user_with(name, "object-id-leaver"))).await;
    assert_eq!(s, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    assert_eq!(g.call(Method::DELETE, &format!("/Users/{id}"), None).await.0, 204);
    assert_eq!(g.vendor_user(name).unwrap()["active"], false);

    let (s, refused) = g.call(Method::POST, "/Users", Some(entra_user_with(name, "object-id-newcomer"))).await;
    assert_eq!(s, 409, "{refused}");
    assert!(refused["detail"].as_str().unwrap().contains("not re-enabled automatically"), "{refused}");
    assert_eq!(g.vendor_user(name).unwrap()["active"], false, "the leaver's account stays disabled");
    assert_eq!(g.audit_for(name).await[0].outcome, "needs_manual_action");

    // The leaver coming back (same objectId) gets the account back.
    let (s, back) = g.call(Method::POST, "/Users", Some(entra_user_with(name, "object-id-leaver"))).await;
    assert_eq!(s, 201, "{back}");
    assert_eq!(g.vendor_user(name).unwrap()["active"], true);
}

/// The import path (Entra's `userName eq` matching query) never links a disabled vendor account the
/// gateway knows nothing of; the create that follows meets the adopt rule.
#[tokio::test]
async fn the_matching_query_does_not_link_a_disabled_vendor_account() {
    let g = vendor_gateway("promapp").await;
    let name = "former@example.com";
    let vendor_base = g.sim.app_options["base_url"].as_str().unwrap().to_string();
    let legacy = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name,
        "externalId": "someone-else", "active": false, "name": {"givenName": "Former", "familyName": "Staff"},
        "emails": [{"type": "work", "value": name, "primary": true}]});
    let r = g
        .client
        .post(format!("{vendor_base}/Users"))
        .bearer_auth(scim_bridge_devkit::demo::demo_credential("promapp"))
        .header("content-type", "application/scim+json")
        .body(legacy.to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let (s, found) =
        g.call(Method::GET, &format!("/Users?filter={}", url_encode(&format!("userName eq \"{name}\""))), None).await;
    assert_eq!((s, found["totalResults"].clone()), (200, json!(0)), "{found}");
    let (s, refused) = g.call(Method::POST, "/Users", Some(entra_user_with(name, "newcomer"))).await;
    assert_eq!(s, 409, "{refused}");
    assert_eq!(g.vendor_user(name).unwrap()["active"], false);
}

// ------------------------------------------------------------------ 4. slow and hostile clients

fn sandbox_with(extra: &str) -> Config {
    config(":memory:", extra)
}

/// Reads from a raw connection until the server closes it; false if it stays open past `limit`.
fn closed_within(stream: &mut std::net::TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn a_silent_or_slow_client_is_cut_off() {
    let s = start_with(sandbox_with("connections:\n  header_read_timeout_ms: 300\n")).await;
    let addr = s.running.addr;
    let (silent, slow) = tokio::task::spawn_blocking(move || {
        // Connects and never sends a byte.
        let mut silent = std::net::TcpStream::connect(addr).unwrap();
        let silent = closed_within(&mut silent, Duration::from_secs(20));
        // Sends the start of a request, then nothing more (slowloris).
        let mut slow = std::net::TcpStream::connect(addr).unwrap();
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
        let slow = closed_within(&mut slow, Duration::from_secs(20));
        (silent, slow)
    })
    .await
    .unwrap();
    assert!(silent, "a connection that sends nothing is closed");
    assert!(slow, "a connection that never finishes its headers is closed");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let s = start_with(sandbox_with("connections:\n  header_read_timeout_ms: 300\n")).await;
    let addr = s.running.addr;
    let closed = tokio::task::spawn_blocking(move || {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = [0u8; 1024];
        let n = c.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        closed_within(&mut c, Duration::from_secs(20))
    })
    .await
    .unwrap();
    assert!(closed, "the keep-alive connection left idle is closed");
}

#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() {
    let s = start_with(sandbox_with("connections:\n  max: 2\n  header_read_timeout_ms: 60000\n")).await;
    let addr = s.running.addr;
    let holders: Vec<std::net::TcpStream> = (0..2).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
    // Let the listener take both before the third arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let quick = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap();
    let url = format!("{}/Users", s.base);
    assert!(quick.get(&url).bearer_auth(TOKEN).send().await.is_err(), "a third connection is not served");
    drop(holders);
    let patient = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    assert_eq!(patient.get(&url).bearer_auth(TOKEN).send().await.unwrap().status(), 200);
}

/// One source cannot take every connection slot: past `max_per_source` its connection is closed at once,
/// while the listener still has room; once one of its connections closes, it is served again.
#[tokio::test]
async fn a_source_past_its_connection_cap_is_closed_at_once() {
    let yaml = "connections:\n  max: 100\n  max_per_source: 2\n  header_read_timeout_ms: 60000\n";
    let s = start_with(sandbox_with(yaml)).await;
    let addr = s.running.addr;
    let (extra_closed, holders) = tokio::task::spawn_blocking(move || {
        let holders: Vec<std::net::TcpStream> = (0..2).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(200));
        let mut extra = std::net::TcpStream::connect(addr).unwrap();
        // Well under the 60 s header-read timeout: only the per-source cap can close it this fast.
        (closed_within(&mut extra, Duration::from_secs(5)), holders)
    })
    .await
    .unwrap();
    assert!(extra_closed, "the connection past the per-source cap is closed at once");
    let mut holders = holders;
    drop(holders.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let url = format!("{}/Users", s.base);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    assert_eq!(client.get(&url).bearer_auth(TOKEN).send().await.unwrap().status(), 200);
    drop(holders);
}

#[tokio::test]
async fn the_ip_allow_list_is_checked_before_the_token() {
    let yaml = format!(
        "listen: \"127.0.0.1:0\"\nstore:\n  path: \":memory:\"\napps:\n  sandbox:\n    type: sandbox\n    token_sha256: \"{}\"\n    ip_allow: [\"192.0.2.0/24\"]\n",
        sha(TOKEN)
    );
    let s = start_with(Config::from_yaml(&yaml, "test.yaml").unwrap()).await;
    let a = s.send_raw(Method::GET, "/Users", Some("wrong-token"), None, "").await;
    assert_eq!(a.status, 403, "{:?}", a.body);
    let a = s.send_raw(Method::GET, "/Users", Some(TOKEN), None, "").await;
    assert_eq!(a.status, 403);
}

#[tokio::test]
async fn failed_authentication_is_throttled_per_source_but_the_right_token_is_served() {
    let s = start_with(sandbox_with("connections:\n  auth_failures_per_minute: 3\n")).await;
    for _ in 0..3 {
        assert_eq!(s.send_raw(Method::GET, "/Users", Some("guess"), None, "").await.status, 401);
    }
    let a = s.send_raw(Method::GET, "/Users", Some("guess"), None, "").await;
    assert_eq!(a.status, 429, "{:?}", a.body);
    let wait: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert_eq!(a.body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error");
    // Unknown apps count as failures too.
    let other = format!("http://{}/scim/nope/v2/Users", s.running.addr);
    assert_eq!(s.send_raw(Method::GET, &other, Some("guess"), None, "").await.status, 429);
    assert_eq!(s.send_raw(Method::GET, "/Users", Some(TOKEN), None, "").await.status, 200);
}

// ------------------------------------------------------------------ 5. smaller guards

#[tokio::test]
async fn a_patch_with_too_many_operations_is_refused() {
    let s = start().await;
    let id = s.create_user("many-ops@example.com").await;
    let ops: Vec<Value> = (0..=scim_bridge::scim::patch::MAX_OPERATIONS)
        .map(|i| json!({"op": "replace", "path": "title", "value": format!("t{i}")}))
        .collect();
    let a = s.patch(&format!("/Users/{id}"), Value::Array(ops)).await;
    assert_eq!(a.status, 400, "{:?}", a.body);
    assert_eq!(a.body["scimType"], "invalidSyntax");
    // A group PATCH adding thousands of members at once still works (and in linear time: see the PATCH
    // engine's unit tests for the equivalence with one-by-one adds).
    let members: Vec<String> = futures_create(&s, 50).await;
    let g = s
        .post("/Groups", json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "big"}))
        .await;
    assert_eq!(g.status, 201);
    let gid = g.body["id"].as_str().unwrap();
    let value: Vec<Value> = members.iter().map(|m| json!({"value": m})).collect();
    let a = s.patch(&format!("/Groups/{gid}"), json!([{"op": "add", "path": "members", "value": value}])).await;
    assert_eq!(a.status, 204, "{:?}", a.body);
    let got = s.get(&format!("/Groups/{gid}")).await;
    assert_eq!(got.body["members"].as_array().unwrap().len(), 50);
}

async fn futures_create(s: &Server, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(s.create_user(&format!("member{i}@example.com")).await);
    }
    ids
}

/// A vendor deleted the user behind the gateway's back: the update's 404 forgets the record and leaves a
/// tombstone, so the vendor record is never silently relinked by a matching query.
#[tokio::test]
async fn a_vendor_404_on_update_leaves_a_tombstone() {
    let g = vendor_gateway("prodpad").await;
    let name = "gone@example.com";
    let (s, created) = g.call(Method::POST, "/Users", Some(entra_user(name))).await;
    assert_eq!(s, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    let rec = g.store.get("prodpad", Kind::User, id).await.unwrap().unwrap();
    let scim_base = format!("{}/api/v2/scim", g.sim.sim.root_url());
    let r = g
        .client
        .delete(format!("{scim_base}/Users/{}", rec.vendor_id))
        .bearer_auth(scim_bridge_devkit::demo::demo_credential("prodpad"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let ops = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "Replace", "path": "title", "value": "x"}, {"op": "Replace", "path": "name.givenName", "value": "New"}]});
    assert_eq!(g.call(Method::PATCH, &format!("/Users/{id}"), Some(ops)).await.0, 404);
    assert!(g.store.get("prodpad", Kind::User, id).await.unwrap().is_none());
    let tomb = g.store.tombstone("prodpad", Kind::User, &rec.vendor_id).await.unwrap();
    assert_eq!(tomb.and_then(|t| t.external_id).as_deref(), Some("ext-gone@example.com"));
}

/// A fake Promapp whose create answers with a hostile id or an endless body.
async fn hostile_vendor(reply: &'static str) -> (String, tokio::task::JoinHandle<()>) {
    use axum::routing::any;
    let app = axum::Router::new().route(
        "/api/scim/Users",
        any(move |body: String| async move {
            let user: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            match reply {
                "dots" => (
                    axum::http::StatusCode::CREATED,
                    json!({"id": "..", "userName": user["userName"], "active": true}).to_string(),
                ),
                // Every create answers with the same id: the second one is already linked in the shadow.
                "same" => (
                    axum::http::StatusCode::CREATED,
                    json!({"id": "always-7", "userName": user["userName"], "active": true}).to_string(),
                ),
                _ => (axum::http::StatusCode::CREATED, "x".repeat(adapter_api::outbound::MAX_RESPONSE_BYTES + 1)),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/api/scim", listener.local_addr().unwrap());
    (base, tokio::spawn(async move { axum::serve(listener, app).await.unwrap() }))
}

async fn gateway_before_hostile_vendor(reply: &'static str) -> (VendorGateway, tokio::task::JoinHandle<()>) {
    let (base, server) = hostile_vendor(reply).await;
    let sim = scim_bridge_devkit::demo::simulator("promapp", "unused", None).await.unwrap();
    let mut options = sim.app_options.clone();
    options.insert("base_url".into(), json!(base));
    (vendor_gateway_with("promapp", options, sim, tempfile::tempdir().unwrap()).await, server)
}

#[tokio::test]
async fn a_vendor_id_of_dots_is_never_stored() {
    let (g, server) = gateway_before_hostile_vendor("dots").await;
    let (s, body) = g.call(Method::POST, "/Users", Some(entra_user("dots@example.com"))).await;
    server.abort();
    // 409 an admin acts on, not 503: the vendor may hold the user, so Entra's retries could never succeed.
    assert_eq!(s, 409, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("unusable id"), "{body}");
    assert!(g.store.find_by_name("promapp", Kind::User, "dots@example.com").await.unwrap().is_none());
    assert_eq!(g.audit_for("dots@example.com").await[0].outcome, "needs_manual_action");
}

/// The vendor made the change but the shadow refuses the link (the vendor answered with an id another
/// gateway record holds): 409, and the audit entry is completed, not left an open intent.
#[tokio::test]
async fn a_shadow_write_refused_after_the_vendor_call_completes_the_audit_entry() {
    let (g, server) = gateway_before_hostile_vendor("same").await;
    let (s, body) = g.call(Method::POST, "/Users", Some(entra_user("first@example.com"))).await;
    assert_eq!(s, 201, "{body}");
    let (s, body) = g.call(Method::POST, "/Users", Some(entra_user("second@example.com"))).await;
    server.abort();
    assert_eq!(s, 409, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("the vendor made the change but the gateway could not record the link"), "{detail}");
    let audit = g.audit_for("second@example.com").await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_ne!(audit[0].outcome, scim_bridge::store::INTENT, "{audit:?}");
    assert_eq!(audit[0].status, 409);
    assert!(audit[0].detail.as_deref().unwrap_or_default().contains("could not record the link"), "{audit:?}");
    assert!(g.store.find_by_name("promapp", Kind::User, "second@example.com").await.unwrap().is_none());
}

#[tokio::test]
async fn a_vendor_reply_over_the_size_cap_is_refused() {
    let (g, server) = gateway_before_hostile_vendor("huge").await;
    let (s, body) = g.call(Method::POST, "/Users", Some(entra_user("huge@example.com"))).await;
    server.abort();
    assert_eq!(s, 503, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("larger than"), "{body}");
}

/// A vendor that cannot be reached: Entra reads that, not the transport's error chain (addresses, OS
/// error numbers).
#[tokio::test]
async fn transport_error_chains_stay_in_the_log() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let sim = scim_bridge_devkit::demo::simulator("promapp", "unused", None).await.unwrap();
    let mut options = sim.app_options.clone();
    options.insert("base_url".into(), json!(format!("http://{closed}/api/scim")));
    let g = vendor_gateway_with("promapp", options, sim, tempfile::tempdir().unwrap()).await;
    let (s, body) = g.call(Method::POST, "/Users", Some(entra_user("nowhere@example.com"))).await;
    assert_eq!(s, 503, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("cannot connect"), "{detail}");
    for leak in ["os error", "tcp connect", "Connection refused", &closed.port().to_string()] {
        assert!(!detail.contains(leak), "{leak} in {detail}");
    }
}
