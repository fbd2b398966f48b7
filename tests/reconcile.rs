//! Black-box: vendor truth. Per vendor, against its simulator: Entra provisions users through the gateway,
//! then someone works in the vendor's own admin UI (the simulators' `/_sim/users` admin routes): re-enables
//! a user Entra disabled, renames one, deletes one, re-enables a leaver, adds a user of their own. The real
//! `scim-bridge reconcile` command, run against the same store, must report all of it with `--dry-run` and
//! change nothing, then repair the first four, leave the stranger alone and report it, all audited.

mod common;

use std::path::Path;
use std::process::Command;

use common::url_encode;
use reqwest::Method;
use scim_bridge::{config::Config, server};
use scim_bridge_devkit::demo;
use serde_json::{json, Value};

const TOKEN: &str = "reconcile-test-token";

struct Setup {
    running: server::Running,
    sim: simkit::DemoSim,
    config_path: std::path::PathBuf,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// The gateway (serving Entra) and a config file the CLI reads, both on one SQLite file.
async fn setup(vendor: &str) -> Setup {
    let sim = demo::simulator(vendor, "vendor-credential", None).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("gateway.sqlite");
    let mut yaml = format!(
        "listen: \"127.0.0.1:0\"\nstore:\n  path: {:?}\napps:\n  {vendor}:\n    type: {vendor}\n    token_sha256: \"{}\"\n    \
         limits:\n      requests_per_second: 500\n      burst: 50\n    reconcile:\n      interval: \"0\"\n",
        store.display().to_string(),
        common::sha(TOKEN)
    );
    for (key, value) in &sim.app_options {
        yaml.push_str(&format!("    {key}: {value}\n"));
    }
    let config_path = dir.path().join("proxy.yaml");
    std::fs::write(&config_path, &yaml).unwrap();
    let config = Config::load(&config_path).unwrap();
    let running = server::start(&config, server::build_gateway(&config, "test").unwrap()).await.unwrap();
    Setup { running, sim, config_path, client: reqwest::Client::new(), _dir: dir }
}

impl Setup {
    fn base(&self, vendor: &str) -> String {
        format!("http://{}/scim/{vendor}/v2", self.running.addr)
    }

    async fn entra(&self, vendor: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base(vendor))).bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.header("content-type", "application/scim+json").body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
    }

    /// Someone in the vendor's admin UI.
    async fn vendor_admin(&self, method: Method, path: &str, body: Option<Value>) -> u16 {
        let mut req = self.client.request(method, format!("{}/_sim/users{path}", self.sim.sim.root_url()));
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap().status().as_u16()
    }

    fn at_vendor(&self, user_name: &str) -> Vec<Value> {
        self.sim
            .sim
            .users_json()
            .into_iter()
            .filter(|u| {
                ["userName", "user_name", "email"]
                    .iter()
                    .any(|k| u.get(*k).and_then(Value::as_str).is_some_and(|v| v.eq_ignore_ascii_case(user_name)))
            })
            .collect()
    }

    /// Runs the real command; returns its exit status and its JSON report.
    fn reconcile(&self, extra: &[&str]) -> (bool, Value) {
        let out = Command::new(env!("CARGO_BIN_EXE_scim-bridge"))
            .args(["reconcile", "--json", "--config"])
            .arg(&self.config_path)
            .args(extra)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!("reconcile printed no JSON ({e}): {stdout}\n{}", String::from_utf8_lossy(&out.stderr))
        });
        (out.status.success(), report)
    }
}

fn entra_user(user_name: &str, vendor: &str) -> Value {
    let mut u = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "externalId": format!("oid-{user_name}"),
        "userName": user_name,
        "active": true,
        "emails": [{"primary": true, "type": "work", "value": user_name}],
        "name": {"familyName": "Family", "givenName": "Given"},
    });
    if vendor == "promapp" {
        u["roles"] = json!([{"primary": true, "value": "Editor"}]);
    }
    u
}

fn patch(ops: Value) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops})
}

fn finding<'a>(report: &'a Value, user_name: &str) -> Option<&'a Value> {
    report[0]["findings"].as_array()?.iter().find(|f| f["user_name"].as_str() == Some(user_name))
}

fn family_name(u: &Value) -> String {
    let v = u.pointer("/name/familyName").or_else(|| u.get("family_name")).or_else(|| u.get("familyName"));
    v.and_then(Value::as_str).unwrap_or_default().to_string()
}

fn is_active(u: &Value) -> bool {
    u.get("active").and_then(Value::as_bool) != Some(false)
}

fn drift_entries(store_path: &Path, outcome: &str) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_scim-bridge"))
        .args(["audit", "--json", "--limit", "0", "--config"])
        .arg(store_path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["outcome"] == outcome)
        .collect()
}

async fn vendor_truth(vendor: &str) {
    let s = setup(vendor).await;
    let name = |who: &str| format!("{who}-{vendor}@example.com");
    let (leaver, reenabled, renamed, deleted, steady, stranger) =
        (name("leaver"), name("reenabled"), name("renamed"), name("deleted"), name("steady"), name("stranger"));
    let mut ids = std::collections::HashMap::new();
    for who in [&leaver, &reenabled, &renamed, &deleted, &steady] {
        let (st, body) = s.entra(vendor, Method::POST, "/Users", Some(entra_user(who, vendor))).await;
        assert_eq!(st, 201, "{vendor}: create {who}: {body}");
        ids.insert(who.clone(), body["id"].as_str().unwrap().to_string());
    }
    let disable = patch(json!([{"op": "Replace", "path": "active", "value": "False"}]));
    let (st, _) = s.entra(vendor, Method::PATCH, &format!("/Users/{}", ids[&reenabled]), Some(disable)).await;
    assert_eq!(st, 200, "{vendor}: disable through Entra");
    let (st, _) = s.entra(vendor, Method::DELETE, &format!("/Users/{}", ids[&leaver]), None).await;
    assert_eq!(st, 204, "{vendor}: deprovision through Entra");
    let leaver_kept = !s.at_vendor(&leaver).is_empty();

    // Behind the gateway's back, in the vendor's admin UI.
    assert_eq!(s.vendor_admin(Method::PATCH, &format!("/{reenabled}"), Some(json!({"active": true}))).await, 200);
    assert_eq!(s.vendor_admin(Method::PATCH, &format!("/{renamed}"), Some(json!({"familyName": "Hacked"}))).await, 200);
    assert_eq!(s.vendor_admin(Method::DELETE, &format!("/{deleted}"), None).await, 204);
    assert_eq!(s.vendor_admin(Method::POST, "", Some(json!({"userName": stranger, "familyName": "Own"}))).await, 201);
    if leaver_kept {
        assert_eq!(s.vendor_admin(Method::PATCH, &format!("/{leaver}"), Some(json!({"active": true}))).await, 200);
    }
    let vendor_before = s.sim.sim.users_json();

    // --dry-run: everything reported, nothing changed (not even the audit log), exit status says "left".
    let (clean, report) = s.reconcile(&["--dry-run"]);
    assert!(!clean, "{vendor}: a dry run with drift is not clean: {report}");
    let kind = |r: &Value, who: &str| finding(r, who).map(|f| f["kind"].clone()).unwrap_or(Value::Null);
    assert_eq!(kind(&report, &reenabled), "reenabled", "{vendor}: {report}");
    assert_eq!(kind(&report, &renamed), "changed", "{vendor}: {report}");
    assert_eq!(kind(&report, &deleted), "missing", "{vendor}: {report}");
    assert_eq!(kind(&report, &stranger), "unmanaged", "{vendor}: {report}");
    assert_eq!(kind(&report, &steady), Value::Null, "{vendor}: an unchanged user is no finding: {report}");
    if leaver_kept {
        assert_eq!(kind(&report, &leaver), "leaver_active", "{vendor}: {report}");
    }
    assert_eq!(s.sim.sim.users_json(), vendor_before, "{vendor}: a dry run changed the vendor");
    assert!(drift_entries(&s.config_path, "drift_found").is_empty(), "{vendor}: a dry run wrote the audit log");

    // The real pass: repaired, the stranger untouched and reported; exit status 0.
    let (clean, report) = s.reconcile(&[]);
    assert!(clean, "{vendor}: everything repairable was repaired: {report:#}");
    for who in [&reenabled, &renamed, &deleted] {
        assert_eq!(finding(&report, who).unwrap()["resolution"], "repaired", "{vendor}: {who}: {report:#}");
    }
    assert_eq!(finding(&report, &stranger).unwrap()["resolution"], "left_alone", "{vendor}: {report:#}");
    let one = |who: &str| {
        let held = s.at_vendor(who);
        assert_eq!(held.len(), 1, "{vendor}: exactly one {who} at the vendor: {held:?}");
        held[0].clone()
    };
    assert!(!is_active(&one(&reenabled)), "{vendor}: offboarding enforced again");
    assert_eq!(family_name(&one(&renamed)), "Family", "{vendor}: Entra's name restored");
    assert!(is_active(&one(&deleted)), "{vendor}: the deleted user is back");
    let stranger_now = one(&stranger);
    assert!(is_active(&stranger_now) && family_name(&stranger_now) == "Own", "{vendor}: the stranger is untouched");
    if leaver_kept {
        assert!(!is_active(&one(&leaver)), "{vendor}: the leaver is disabled again");
    }

    // All audited: found and repaired.
    let found = drift_entries(&s.config_path, "drift_found");
    let repaired = drift_entries(&s.config_path, "drift_repaired");
    for who in [&reenabled, &renamed, &deleted, &stranger] {
        assert!(found.iter().any(|e| e["name"] == json!(who)), "{vendor}: drift_found for {who}");
    }
    for who in [&reenabled, &renamed, &deleted] {
        assert!(repaired.iter().any(|e| e["name"] == json!(who)), "{vendor}: drift_repaired for {who}");
    }
    assert!(!repaired.iter().any(|e| e["name"] == json!(stranger)), "{vendor}: the stranger was never touched");

    // The re-created user is linked again: Entra's next change reaches it.
    let rename = patch(json!([{"op": "Replace", "path": "name.familyName", "value": "Again"}]));
    let (st, _) = s.entra(vendor, Method::PATCH, &format!("/Users/{}", ids[&deleted]), Some(rename)).await;
    assert_eq!(st, 200, "{vendor}: update after re-create");
    assert_eq!(family_name(&one(&deleted)), "Again", "{vendor}");

    // A second pass finds nothing new to repair.
    let (clean, report) = s.reconcile(&[]);
    assert!(clean, "{vendor}: {report:#}");
    assert_eq!(
        report[0]["findings"].as_array().map(|f| f.iter().filter(|f| f["kind"] != "unmanaged").count()),
        Some(0),
        "{vendor}: {report:#}"
    );
    s.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prodpad_vendor_truth() {
    vendor_truth("prodpad").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promapp_vendor_truth() {
    vendor_truth("promapp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_vendor_truth() {
    vendor_truth("prompt").await;
}

/// The listing answers Entra's matching query for a user the vendor lacks without asking the vendor; a
/// user created at the vendor after the listing still ends in match-and-adopt, never a twin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_listing_answers_misses_and_a_late_vendor_user_is_adopted_not_duplicated() {
    for vendor in ["prodpad", "promapp", "prompt"] {
        let s = setup(vendor).await;
        let query = |n: &str| format!("/Users?filter={}", url_encode(&format!("userName eq \"{n}\"")));
        // Test Connection: the first miss asks the vendor and starts the listing.
        let (st, _) = s.entra(vendor, Method::GET, &query("probe-0f8f@example.com"), None).await;
        assert_eq!(st, 200);
        let mut settled = false;
        for _ in 0..100 {
            s.sim.sim.reset_counters();
            let (st, body) = s.entra(vendor, Method::GET, &query(&format!("new-{vendor}@example.com")), None).await;
            assert_eq!((st, body["totalResults"].clone()), (200, json!(0)));
            if s.sim.sim.counters().requests == 0 {
                settled = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(settled, "{vendor}: once listed, a miss costs no vendor call");

        // Created at the vendor after the listing: the index says "absent", Entra creates, the vendor says
        // conflict, the gateway matches and adopts it.
        let late = format!("late-{vendor}@example.com");
        assert_eq!(s.vendor_admin(Method::POST, "", Some(json!({"userName": late}))).await, 201);
        let (st, body) = s.entra(vendor, Method::GET, &query(&late), None).await;
        assert_eq!((st, body["totalResults"].clone()), (200, json!(0)), "{vendor}: the stale index said absent");
        let (st, body) = s.entra(vendor, Method::POST, "/Users", Some(entra_user(&late, vendor))).await;
        assert_eq!(st, 201, "{vendor}: the conflict ends in adoption: {body}");
        assert_eq!(s.at_vendor(&late).len(), 1, "{vendor}: no twin at the vendor");
        s.running.stop().await.unwrap();
    }
}

/// One `serve` per store file: the per-user locks live in its process. A second `serve` on the same file
/// is refused at start, and so is an enforcing `reconcile` from the command line (it could undo a change
/// Entra is making at that moment); a `--dry-run` pass writes nothing and runs beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_serve_per_store_and_no_enforcing_pass_beside_it() {
    let s = setup("prompt").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let yaml = std::fs::read_to_string(&s.config_path).unwrap().replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(&s.config_path, yaml).unwrap();
    let bin = env!("CARGO_BIN_EXE_scim-bridge");
    let mut serve = Command::new(bin)
        .args(["serve", "--config"])
        .arg(&s.config_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut up = false;
    for _ in 0..400 {
        if s.client.get(format!("http://127.0.0.1:{port}/healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(up, "serve came up");
    let second = Command::new(bin).args(["serve", "--config"]).arg(&s.config_path).output().unwrap();
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success() && said.contains("holds the store"), "second serve: {said}");
    assert!(said.contains("store.path") && said.contains("proxy.yaml"), "names the key and the file: {said}");
    let enforcing = Command::new(bin).args(["reconcile", "--config"]).arg(&s.config_path).output().unwrap();
    let said = String::from_utf8_lossy(&enforcing.stderr);
    assert!(!enforcing.status.success() && said.contains("--dry-run"), "enforcing pass: {said}");
    let (_, report) = s.reconcile(&["--dry-run"]);
    assert_eq!(report[0]["app"], "prompt", "the dry run ran beside serve: {report}");
    serve.kill().unwrap();
    serve.wait().unwrap();
    // Once serve is gone the file is free again.
    let (clean, _) = s.reconcile(&[]);
    assert!(clean, "an enforcing pass runs once serve is stopped");
}

/// A user deleted at the vendor, then an account with the same userName made there by someone else: the
/// repair that would re-create the user finds that account and leaves it alone (needs a person, audited),
/// instead of adopting and overwriting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_create_never_takes_over_an_account_made_at_the_vendor() {
    for vendor in ["prodpad", "promapp", "prompt"] {
        let s = setup(vendor).await;
        let who = format!("taken.{vendor}@example.com");
        let (st, body) = s.entra(vendor, Method::POST, "/Users", Some(entra_user(&who, vendor))).await;
        assert_eq!(st, 201, "{vendor}: {body}");
        assert_eq!(s.vendor_admin(Method::DELETE, &format!("/{who}"), None).await, 204, "{vendor}");
        let made = s.vendor_admin(Method::POST, "", Some(json!({"userName": who, "familyName": "Own"}))).await;
        assert_eq!(made, 201, "{vendor}");
        let (clean, report) = s.reconcile(&[]);
        assert!(!clean, "{vendor}: a refused repair is left for a person: {report:#}");
        let missing = report[0]["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["kind"] == "missing")
            .unwrap_or_else(|| panic!("{vendor}: no missing finding: {report:#}"));
        assert_eq!(missing["resolution"], "failed", "{vendor}: {missing}");
        assert!(missing["detail"].as_str().unwrap().contains("another account"), "{vendor}: {missing}");
        let held = s.at_vendor(&who);
        assert_eq!(held.len(), 1, "{vendor}: no second account: {held:?}");
        assert_eq!(family_name(&held[0]), "Own", "{vendor}: the other account is untouched");
        let refused = drift_entries(&s.config_path, "needs_manual_action");
        assert!(refused.iter().any(|e| e["name"] == json!(who)), "{vendor}: audited: {refused:?}");
    }
}
