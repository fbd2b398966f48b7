//! Crash safety: the gateway is SIGKILLed in the middle of an initial Entra cycle (requests in flight),
//! started again on the same SQLite file, and the cycle is finished the way Entra's next cycle would
//! (match by userName, create only on a miss). The vendor simulator must end with every user exactly once.
//! And the opposite: SIGTERM lets in-flight requests finish before the process exits.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_scim-bridge");
const USERS: usize = 240;
const TOKEN: &str = "crash-token";

/// A config with one Promapp app `pm` in front of `sim`, on a free port and a store file in `dir`.
fn write_config(dir: &std::path::Path, sim: &simkit::DemoSim, extra: &str) -> (std::path::PathBuf, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut yaml = format!(
        "listen: \"127.0.0.1:{port}\"\nstore:\n  path: \"{}\"\napps:\n  pm:\n    type: promapp\n    token_sha256: \"{}\"\n{extra}",
        dir.join("store.sqlite").display(),
        common::sha(TOKEN)
    );
    for (k, v) in &sim.app_options {
        yaml.push_str(&format!("    {k}: {v}\n"));
    }
    let config = dir.join("proxy.yaml");
    std::fs::write(&config, yaml).unwrap();
    (config, format!("http://127.0.0.1:{port}"))
}

fn spawn_gateway(config: &std::path::Path) -> Child {
    Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gateway starts")
}

async fn wait_up(client: &reqwest::Client, base: &str) {
    for _ in 0..800 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("gateway did not come up");
}

/// One user's Entra step: match, then create on a miss. `Err` when the gateway was unreachable or the
/// answer was retryable (Entra tries again next cycle).
async fn provision(client: &reqwest::Client, base: &str, i: usize) -> Result<String, String> {
    let user_name = format!("crash{i:04}@example.com");
    let found: Value = client
        .get(format!("{base}/scim/pm/v2/Users?filter=userName+eq+%22{user_name}%22"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    if let Some(id) = found["Resources"][0]["id"].as_str() {
        return Ok(id.to_string());
    }
    let body = json!({"userName": user_name, "active": true, "name": {"givenName": "C", "familyName": "R"},
        "emails": [{"type": "work", "value": user_name}], "roles": [{"value": "Editor"}]});
    let resp = client
        .post(format!("{base}/scim/pm/v2/Users"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.map_err(|e| e.to_string())?;
    match status {
        201 => Ok(v["id"].as_str().unwrap_or_default().to_string()),
        s => Err(format!("{s} {v}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_cycle_then_restart_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Slow vendor replies keep requests in flight when the kill lands.
    let sim = scim_bridge_devkit::demo::simulator("promapp", "vendor-cred", None).await.unwrap();
    sim.sim.set_faults(simkit::SimFaults { slow_rate: 1.0, slow_ms: 25, ..Default::default() });
    let limits = "    limits:\n      requests_per_second: 1000\n      burst: 100\n      max_in_flight: 16\n";
    let (config, base) = write_config(dir.path(), &sim, limits);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();

    // First cycle, killed once a third of the users are through.
    let mut gateway = spawn_gateway(&config);
    wait_up(&client, &base).await;
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(12));
    for i in 0..USERS {
        let (client, base, done, gate) = (client.clone(), base.clone(), done.clone(), gate.clone());
        tasks.spawn(async move {
            let _p = gate.acquire_owned().await.unwrap();
            if provision(&client, &base, i).await.is_ok() {
                done.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    while done.load(Ordering::SeqCst) < USERS / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gateway.kill().unwrap(); // SIGKILL: no drain, no cleanup
    gateway.wait().unwrap();
    while tasks.join_next().await.is_some() {}
    let before_restart = done.load(Ordering::SeqCst);
    assert!(before_restart < USERS, "the kill landed mid-cycle ({before_restart} of {USERS} done)");

    // Restart on the same store; Entra's next cycle goes over every user again.
    let mut gateway = spawn_gateway(&config);
    wait_up(&client, &base).await;
    let mut ids = Vec::new();
    for i in 0..USERS {
        let id = provision(&client, &base, i).await.unwrap_or_else(|e| panic!("user {i} after restart: {e}"));
        ids.push(id);
    }
    gateway.kill().unwrap();
    gateway.wait().unwrap();

    let users = sim.sim.users_json();
    let mut names: Vec<String> = users.iter().filter_map(|u| u["userName"].as_str()).map(str::to_lowercase).collect();
    names.sort();
    let total = names.len();
    names.dedup();
    assert_eq!(total, names.len(), "no duplicate at the vendor");
    assert_eq!(names.len(), USERS, "every user at the vendor, none missing");
    assert!(users.iter().all(|u| u["active"] != json!(false)));
    let mut unique_ids = ids.clone();
    unique_ids.sort();
    unique_ids.dedup();
    assert_eq!(unique_ids.len(), USERS, "every user has its own gateway id");
    let store = scim_bridge::store::open(dir.path().join("store.sqlite").to_str().unwrap()).unwrap();
    let log = store.audit_log(&Default::default()).await.unwrap();
    let recovered = log.iter().filter(|e| e.operation == "import" || e.operation == "adopt").count();
    println!(
        "killed after {before_restart} of {USERS} users; {recovered} user(s) the vendor had but the store did not were \
         linked on the next cycle; the vendor holds {USERS} users, no duplicates"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests() {
    let dir = tempfile::tempdir().unwrap();
    let sim = scim_bridge_devkit::demo::simulator("promapp", "vendor-cred", None).await.unwrap();
    sim.sim.set_faults(simkit::SimFaults { slow_rate: 1.0, slow_ms: 400, ..Default::default() });
    let (config, base) = write_config(dir.path(), &sim, "");
    let client = reqwest::Client::new();
    let mut gateway = spawn_gateway(&config);
    wait_up(&client, &base).await;
    let in_flight = tokio::spawn({
        let (client, base) = (client.clone(), base.clone());
        async move {
            let body = json!({"userName": "drain@example.com", "active": true, "roles": [{"value": "Editor"}],
                "emails": [{"type": "work", "value": "drain@example.com"}]});
            let resp = client.post(format!("{base}/scim/pm/v2/Users")).bearer_auth(TOKEN).json(&body).send().await;
            resp.map(|r| r.status().as_u16()).map_err(|e| e.to_string())
        }
    });
    // Let the request reach the (slow) vendor, then ask the gateway to stop.
    while sim.sim.counters().requests == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = Command::new("kill").args(["-TERM", &gateway.id().to_string()]).status();
    let answer = in_flight.await.unwrap();
    assert_eq!(answer, Ok(201), "the in-flight request finished");
    let status = gateway.wait().unwrap();
    assert!(status.success(), "clean exit after draining: {status}");
    assert_eq!(sim.sim.users_json().len(), 1);
}

/// The store engine's promise under a crash: SIGKILL lands during a burst of concurrent creates and
/// PATCHes (many changes per group commit), and after a restart every change that was answered 2xx is
/// there. Each client works on its own users and numbers its PATCHes, so a user's stored family name
/// must be at least the last one acknowledged (a later one may have committed with its answer lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_write_burst_keeps_every_acknowledged_change() {
    const CLIENTS: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let yaml = format!(
        "listen: \"127.0.0.1:{port}\"\nstore:\n  path: \"{}\"\nconnections:\n  max_per_source: 64\napps:\n  sb:\n    type: sandbox\n    token_sha256: \"{}\"\n",
        dir.path().join("store.sqlite").display(),
        common::sha(TOKEN)
    );
    let config = dir.path().join("proxy.yaml");
    std::fs::write(&config, yaml).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let mut gateway = spawn_gateway(&config);
    wait_up(&client, &base).await;

    // (id, last acknowledged PATCH number) per created user, per client.
    type Acked = Arc<std::sync::Mutex<Vec<(String, u32)>>>;
    let acked: Acked = Arc::default();
    let answered = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        let (client, base, acked, answered) = (client.clone(), base.clone(), acked.clone(), answered.clone());
        tasks.spawn(async move {
            let users = format!("{base}/scim/sb/v2/Users");
            for k in 0.. {
                let name = format!("burst{c}.{k}@example.com");
                let body = json!({"userName": name, "name": {"givenName": "B", "familyName": "v0"},
                    "emails": [{"type": "work", "value": name}]});
                let Ok(resp) = client.post(&users).bearer_auth(TOKEN).json(&body).send().await else { return };
                if resp.status() != 201 {
                    return;
                }
                let Ok(doc) = resp.json::<Value>().await else { return };
                let id = doc["id"].as_str().unwrap().to_string();
                let slot = {
                    let mut acked = acked.lock().unwrap();
                    acked.push((id.clone(), 0));
                    acked.len() - 1
                };
                answered.fetch_add(1, Ordering::SeqCst);
                for n in 1..=3u32 {
                    let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                        "Operations": [{"op": "replace", "path": "name.familyName", "value": format!("v{n}")}]});
                    let sent = client.patch(format!("{users}/{id}")).bearer_auth(TOKEN).json(&patch).send().await;
                    match sent {
                        Ok(r) if r.status() == 200 => {
                            acked.lock().unwrap()[slot].1 = n;
                            answered.fetch_add(1, Ordering::SeqCst);
                        }
                        _ => return,
                    }
                }
            }
        });
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while answered.load(Ordering::SeqCst) < 2_000 {
        assert!(std::time::Instant::now() < deadline, "the burst never got going");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    gateway.kill().unwrap(); // SIGKILL mid-burst: no drain, no cleanup
    gateway.wait().unwrap();
    while tasks.join_next().await.is_some() {}
    let acked = std::mem::take(&mut *acked.lock().unwrap());

    let mut gateway = spawn_gateway(&config);
    wait_up(&client, &base).await;
    let mut missing = Vec::new();
    for (id, n) in &acked {
        let resp = client.get(format!("{base}/scim/sb/v2/Users/{id}")).bearer_auth(TOKEN).send().await.unwrap();
        let status = resp.status().as_u16();
        let doc: Value = resp.json().await.unwrap_or(Value::Null);
        let stored = doc["name"]["familyName"].as_str().and_then(|v| v.strip_prefix('v')?.parse::<u32>().ok());
        if status != 200 || stored.is_none_or(|s| s < *n) {
            missing.push(format!("{id}: acknowledged v{n}, restart has {status} {stored:?}"));
        }
    }
    gateway.kill().unwrap();
    gateway.wait().unwrap();
    let patches: u32 = acked.iter().map(|(_, n)| n).sum();
    println!(
        "killed after {} creates and {patches} PATCHes answered 2xx; after restart {} missing",
        acked.len(),
        missing.len()
    );
    assert!(acked.len() >= 100, "the burst was under way when the kill landed");
    assert!(missing.is_empty(), "acknowledged changes lost: {missing:#?}");
}
