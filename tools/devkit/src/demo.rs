//! `scim-bridge demo` and `scim-bridge simulate`: vendor simulators started in-process, a gateway in front
//! of them on an in-memory store, and an optional scripted walkthrough that shows what each vendor ends
//! up holding.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use adapter_api::scim::patch::PATCH_OP_SCHEMA;
use adapter_api::scim::schema::{GROUP_SCHEMA, USER_SCHEMA};
use serde_json::{json, Value};
use simkit::{DemoSim, SimFaults, SimSpec, Simulator};

use scim_bridge::config::{AppConfig, Config, GroupRole, LimitsConfig};
use scim_bridge::server::{self, Running};

/// The vendor types of the registry that have a simulator, with it, in the registry's order.
pub fn simulated() -> impl Iterator<Item = (&'static str, &'static SimSpec)> {
    scim_bridge::vendors::VENDORS.iter().filter_map(|v| Some((v.type_name(), v.simulator()?)))
}

/// The vendor types that have a simulator.
pub fn simulated_types() -> Vec<&'static str> {
    simulated().map(|(name, _)| name).collect()
}

/// Why the demo, a simulator or `simulate --config` could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("no simulator for '{vendor}' (known: {known})")]
    NoSimulator { vendor: String, known: String },
    #[error("cannot start the {vendor} simulator: {source}")]
    Simulator {
        vendor: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] scim_bridge::config::ConfigError),
    /// `simulate --config`: a key of an app the simulator needs is missing or unusable.
    #[error("apps.{app}.{key} in {file}: {what}")]
    Simulate { file: String, app: String, key: String, what: String },
    #[error("--faults: not 'mixed' nor fault JSON: {0}")]
    Faults(#[source] serde_json::Error),
    #[error("--admin-token must differ from --token: Entra's token must not open the status page")]
    AdminTokenIsEntras,
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Starts the simulator of `vendor` accepting `credential`.
pub async fn simulator(vendor: &str, credential: &str, addr: Option<SocketAddr>) -> Result<DemoSim, DemoError> {
    let Some((_, spec)) = simulated().find(|(name, _)| *name == vendor) else {
        return Err(DemoError::NoSimulator { vendor: vendor.to_string(), known: simulated_types().join(", ") });
    };
    (spec.start)(credential.to_string(), addr)
        .await
        .map_err(|source| DemoError::Simulator { vendor: vendor.to_string(), source })
}

/// Starts, for every app of the config at `path` whose vendor has a simulator, that simulator on the
/// app's `base_url` address (which must be on this machine) accepting the app's inline credential: the
/// config then runs as written against simulators (`.ci/run` checks proxy.yaml so).
pub async fn simulate_config(
    path: &std::path::Path,
    faults: Option<SimFaults>,
) -> Result<Vec<(String, Box<dyn Simulator>)>, DemoError> {
    let origin = path.display();
    let config = Config::load(path)?;
    let mut started = Vec::new();
    for (name, app) in &config.apps {
        let Some((vendor, spec)) = simulated().find(|(v, _)| *v == app.vendor) else { continue };
        let unusable = |key: &str, what: String| DemoError::Simulate {
            file: origin.to_string(),
            app: name.clone(),
            key: key.to_string(),
            what,
        };
        let base = app
            .options
            .get("base_url")
            .and_then(Value::as_str)
            .ok_or_else(|| unusable("base_url", "needed to simulate".into()))?;
        let url = reqwest::Url::parse(base).map_err(|e| unusable("base_url", e.to_string()))?;
        let addr = match (url.host_str(), url.port_or_known_default()) {
            (Some(host @ ("127.0.0.1" | "localhost")), Some(port)) => {
                let ip = if host == "localhost" {
                    std::net::Ipv4Addr::LOCALHOST
                } else {
                    host.parse().map_err(|_| unusable("base_url", format!("{host} is not an address")))?
                };
                SocketAddr::from((ip, port))
            }
            _ => continue,
        };
        let credential =
            app.options.get(spec.credential_key).and_then(Value::as_str).ok_or_else(|| {
                unusable(spec.credential_key, "the simulator needs the credential written inline".into())
            })?;
        let sim = simulator(vendor, credential, Some(addr)).await?.sim;
        if let Some(f) = &faults {
            sim.set_faults(f.clone());
        }
        started.push((name.clone(), sim));
    }
    Ok(started)
}

/// The options of an app in front of a simulator, as `config` would hold them (for tests writing configs).
#[derive(Clone, Debug)]
pub struct DemoSimOptions {
    pub vendor: &'static str,
    pub options: serde_json::Map<String, Value>,
}

/// Parses `--faults`: `mixed` (20 % of requests: errors, drops, lost responses, slow replies) or the JSON
/// of the simulators' fault settings (e.g. `{"error_rate":0.1,"throttle":{"requests":5,"per":1,"retry_after_secs":1}}`).
pub fn parse_faults(text: &str) -> Result<SimFaults, DemoError> {
    if text.trim().eq_ignore_ascii_case("mixed") {
        return Ok(SimFaults {
            error_rate: 0.08,
            drop_rate: 0.04,
            lost_response_rate: 0.04,
            slow_rate: 0.04,
            slow_ms: 300,
            ..SimFaults::default()
        });
    }
    serde_json::from_str(text).map_err(DemoError::Faults)
}

/// The vendor credential the demo's simulator of `vendor` accepts (for calling a simulator directly).
pub fn demo_credential(vendor: &str) -> String {
    format!("{vendor}-demo-credential")
}

pub struct Demo {
    pub running: Running,
    /// (app name, its simulator)
    pub sims: Vec<(String, Box<dyn Simulator>)>,
    pub token: String,
    /// The status page's admin token, when the demo has an admin listener.
    pub admin_token: Option<String>,
}

/// The demo's status page: the admin listener's address and the admin token that opens it.
#[derive(Clone)]
pub struct DemoAdmin {
    pub listen: SocketAddr,
    pub token: String,
}

/// The demo's outbound limits: simulators answer in microseconds; the demo should not wait on
/// production-sized limits.
fn demo_limits() -> LimitsConfig {
    LimitsConfig { requests_per_second: Some(200.0), burst: Some(50), max_in_flight: Some(16), ..Default::default() }
}

/// Like [`start`], with the status page on `admin.listen` behind `admin.token`; vendors are probed at
/// start (as `serve` does) so the cards show each vendor's state, and the Promapp app's token is said to
/// expire in three weeks, so its card shows the expiry warning the probe raises.
pub async fn start_with_admin(
    listen: SocketAddr,
    token: &str,
    faults: Option<SimFaults>,
    admin: DemoAdmin,
) -> Result<Demo, DemoError> {
    let demo = start_inner(listen, token, faults, demo_limits(), ":memory:", Some(admin)).await?;
    scim_bridge::probe::spawn_health_probes(demo.running.gateway.clone(), scim_bridge::probe::PROBE_INTERVAL);
    Ok(demo)
}

impl std::fmt::Debug for Demo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Demo").field("addr", &self.running.addr).finish()
    }
}

/// The Entra objectId the demo's `group_roles` apps map by id (`group_id`) to their last listed role: a
/// group whose externalId is this gets it whatever its name (`tests/blackbox/vendor_replay.py` checks it).
pub const DEMO_GROUP_OBJECT_ID: &str = "0b6c1a6e-3f0a-4d5e-9c1b-2a7d8e9f0a1b";

/// Starts the simulators and a gateway serving `sandbox`, `prodpad`, `promapp` and `prompt`, and the
/// `group_roles` apps `prodpad-groups` and `promapp-groups` (each simulator's `demo_group_roles`), all with `token` (the demo's one convenience: real configs need one token per app).
pub async fn start(listen: SocketAddr, token: &str, faults: Option<SimFaults>) -> Result<Demo, DemoError> {
    start_with_limits(listen, token, faults, demo_limits(), ":memory:").await
}

/// Like [`start`], with the vendor apps' outbound `limits` and the store at `store_path` (`:memory:` or a
/// file) chosen by the caller: what the benchmarks and the Entra cycle driver's tests run.
pub async fn start_with_limits(
    listen: SocketAddr,
    token: &str,
    faults: Option<SimFaults>,
    limits: LimitsConfig,
    store_path: &str,
) -> Result<Demo, DemoError> {
    start_inner(listen, token, faults, limits, store_path, None).await
}

async fn start_inner(
    listen: SocketAddr,
    token: &str,
    faults: Option<SimFaults>,
    limits: LimitsConfig,
    store_path: &str,
    admin: Option<DemoAdmin>,
) -> Result<Demo, DemoError> {
    let hash = hex::encode(scim_bridge::http::token_hash(token));
    // Every demo app: one token, no IP allow-list, reconcile as configured by default.
    let app = |vendor: &str, limits: LimitsConfig, group_roles: Vec<GroupRole>, options| AppConfig {
        vendor: vendor.to_string(),
        token_sha256: hash.clone(),
        limits,
        ip_allow: Vec::new(),
        reconcile: Default::default(),
        group_roles,
        options,
    };
    let mut apps = BTreeMap::new();
    apps.insert("sandbox".to_string(), app("sandbox", LimitsConfig::default(), Vec::new(), Default::default()));
    let mut sims = Vec::new();
    for (vendor, spec) in simulated() {
        let started = simulator(vendor, &demo_credential(vendor), None).await?;
        if let Some(f) = &faults {
            started.sim.set_faults(f.clone());
        }
        let mut options = started.app_options;
        if let (Some(_), Some(key)) = (&admin, spec.credential_expiry_key) {
            let expires = time::OffsetDateTime::now_utc().date() + time::Duration::days(21);
            options.insert(key.into(), json!(expires.to_string()));
        }
        apps.insert(vendor.to_string(), app(vendor, limits.clone(), Vec::new(), options));
        sims.push((vendor.to_string(), started.sim));
    }
    // One app per vendor with roles that maps Entra groups to them, each on a simulator of its own so its
    // vendor state can be checked apart: the Entra group vectors run against these (`.ci/run`).
    for (vendor, group_roles) in simulated().map(|(v, spec)| (v, spec.demo_group_roles)).filter(|(_, g)| !g.is_empty())
    {
        let name = format!("{vendor}-groups");
        let started = simulator(vendor, &demo_credential(vendor), None).await?;
        if let Some(f) = &faults {
            started.sim.set_faults(f.clone());
        }
        // By name as the simulator lists them, then one by objectId (the safe form): the last listed role.
        let mut group_roles: Vec<GroupRole> =
            group_roles.iter().map(|(group, role)| GroupRole::by_name(group, role)).collect();
        if let Some(role) = group_roles.last().map(|g| g.role.clone()) {
            group_roles.push(GroupRole::by_id(DEMO_GROUP_OBJECT_ID, &role));
        }
        apps.insert(name.clone(), app(vendor, limits.clone(), group_roles, started.app_options));
        sims.push((name, started.sim));
    }
    let mut config = Config::with_apps(listen, apps);
    // A `postgres://` store (the replica benchmarks) is PostgreSQL with the password, if any, in
    // `SCIM_DEMO_PG_PASSWORD` (not `SCIM_BRIDGE_*`, which a `serve` in the same shell would read as a
    // config key); anything else is SQLite.
    if store_path.starts_with("postgres://") || store_path.starts_with("postgresql://") {
        // `#schema`: a schema of its own (a benchmark's fresh one).
        let (url, schema) = store_path.split_once('#').map_or((store_path, None), |(u, s)| (u, Some(s)));
        config.store.url = Some(url.into());
        config.store.schema = schema.map(str::to_string);
        if std::env::var_os("SCIM_DEMO_PG_PASSWORD").is_some() {
            config.store.password_env = Some("SCIM_DEMO_PG_PASSWORD".into());
        }
    } else {
        config.store.path = store_path.into();
    }
    // The demo and the benchmarks drive the gateway from one address with many connections at once
    // (`bench latency --clients 200`): no per-source cap below the listener's own.
    config.connections.max_per_source = config.connections.max;
    if let Some(admin) = &admin {
        config.admin_listen = Some(admin.listen);
        if admin.token == token {
            return Err(DemoError::AdminTokenIsEntras);
        }
        config.admin.token_sha256 = Some(hex::encode(scim_bridge::http::token_hash(&admin.token)));
    }
    let gateway = server::open_gateway(&config, "demo").await?;
    let running = server::start(&config, gateway).await.map_err(|source| DemoError::Listen { addr: listen, source })?;
    Ok(Demo { running, sims, token: token.to_string(), admin_token: admin.map(|a| a.token) })
}

impl Demo {
    pub fn app_url(&self, app: &str) -> String {
        format!("http://{}/scim/{app}/v2", self.running.addr)
    }

    /// The banner `demo` prints. CI reads the `  <app>: <url>` lines, with what a check of the vendor's
    /// state needs to know of the app (how it deletes, its `group_roles` as JSON), so that a vendor added
    /// to the registry is checked without an edit there.
    pub fn banner(&self) -> String {
        let mut out = format!("scim-bridge demo on http://{}\n", self.running.addr);
        if let (Some(addr), Some(token)) = (self.running.admin_addr, &self.admin_token) {
            out.push_str(&format!("  status page: http://{addr}/   admin token: {token}\n"));
        }
        out.push_str(&format!("  sandbox: {}   token: {}\n", self.app_url("sandbox"), self.token));
        for (app, sim) in &self.sims {
            let configured = self.running.gateway.apps.get(app);
            let hard_delete = configured.is_some_and(|a| a.adapter.capabilities().hard_delete);
            let groups = match configured.map(|a| &a.group_roles) {
                Some(roles) if !roles.is_empty() => {
                    let entries: Vec<Value> = roles
                        .iter()
                        .map(|r| json!({"group": r.group, "group_id": r.group_id, "role": r.role}))
                        .collect();
                    format!("   group_roles: {}", Value::Array(entries))
                }
                _ => String::new(),
            };
            out.push_str(&format!(
                "  {app}: {}   token: {}   simulator: {}/_sim/users   delete: {}{groups}\n",
                self.app_url(app),
                self.token,
                sim.root_url(),
                if hard_delete { "hard" } else { "disable" },
            ));
        }
        out
    }

    /// Drives each app the way Entra would for three users (create, match, update, disable, delete) and
    /// returns, per app, what happened and what the vendor holds afterwards.
    pub async fn walkthrough(&self) -> Result<String, String> {
        let client = reqwest::Client::new();
        let mut out = String::new();
        let mut apps: Vec<&str> = vec!["sandbox"];
        apps.extend(self.sims.iter().map(|(a, _)| a.as_str()));
        for app in apps {
            let base = self.app_url(app);
            out.push_str(&format!("== {app}\n"));
            let mut ids = Vec::new();
            for name in ["ada.lovelace", "alan.turing", "grace.hopper"] {
                let user_name = format!("{name}@example.com");
                let (given, family) = name.split_once('.').unwrap_or((name, name));
                let probe = self
                    .call(&client, "GET", &format!("{base}/Users?filter=userName+eq+%22{user_name}%22"), None)
                    .await?;
                let body = json!({
                    "schemas": [USER_SCHEMA],
                    "userName": user_name, "externalId": name, "active": true,
                    "name": {"givenName": given, "familyName": family},
                    "emails": [{"type": "work", "primary": true, "value": user_name}],
                    "roles": [{"primary": true, "type": "WindowsAzureActiveDirectoryRole", "value": "Editor"}]
                });
                let created = self.call(&client, "POST", &format!("{base}/Users"), Some(body)).await?;
                out.push_str(&format!("   match {user_name}: {}   create: {}\n", probe.0, created.0));
                if let Some(id) = created.1.get("id").and_then(Value::as_str) {
                    ids.push(id.to_string());
                }
            }
            let patch = |ops: Value| json!({"schemas": [PATCH_OP_SCHEMA], "Operations": ops});
            if let Some(id) = ids.first() {
                let r = self
                    .call(
                        &client,
                        "PATCH",
                        &format!("{base}/Users/{id}"),
                        Some(patch(json!([{"op": "Replace", "path": "name.familyName", "value": "King"}]))),
                    )
                    .await?;
                out.push_str(&format!("   rename ada's family name: {}\n", r.0));
            }
            if let Some(id) = ids.get(1) {
                let r = self
                    .call(
                        &client,
                        "PATCH",
                        &format!("{base}/Users/{id}"),
                        Some(patch(json!([{"op": "Replace", "path": "active", "value": "False"}]))),
                    )
                    .await?;
                out.push_str(&format!("   disable alan: {}\n", r.0));
            }
            if let Some(id) = ids.get(2) {
                let r = self.call(&client, "DELETE", &format!("{base}/Users/{id}"), None).await?;
                out.push_str(&format!("   delete grace: {}\n", r.0));
            }
            let mapped = simulated()
                .find(|(v, _)| app.strip_suffix("-groups") == Some(*v))
                .map(|(_, spec)| spec.demo_group_roles)
                .filter(|roles| !roles.is_empty());
            if let (Some(roles), Some(id)) = (mapped, ids.first()) {
                let (group, role) = roles[0];
                let body = json!({"schemas": [GROUP_SCHEMA], "displayName": group});
                let created = self.call(&client, "POST", &format!("{base}/Groups"), Some(body)).await?;
                let gid = created.1.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
                let add = patch(json!([{"op": "Add", "path": "members", "value": [{"value": id}]}]));
                let r = self.call(&client, "PATCH", &format!("{base}/Groups/{gid}"), Some(add)).await?;
                out.push_str(&format!(
                    "   group '{group}' (group_roles: {role}): create {}, add ada: {}\n",
                    created.0, r.0
                ));
            }
            match self.sims.iter().find(|(a, _)| a == app) {
                Some((_, sim)) => {
                    out.push_str(&format!("   the {} simulator now holds:\n", sim.vendor()));
                    for u in sim.users_json() {
                        out.push_str(&format!("     {}\n", summarize(&u)));
                    }
                }
                None => {
                    out.push_str("   (sandbox: no vendor; the gateway's store holds:)\n");
                    let list = self.call(&client, "GET", &format!("{base}/Users"), None).await?;
                    for u in list.1["Resources"].as_array().cloned().unwrap_or_default() {
                        out.push_str(&format!("     {}\n", summarize(&u)));
                    }
                }
            }
        }
        Ok(out)
    }

    async fn call(
        &self,
        client: &reqwest::Client,
        method: &str,
        url: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let mut req = client.request(method, url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.header("content-type", "application/scim+json").body(b.to_string());
        }
        let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }
}

/// One line per vendor user: userName, active, and whatever else the vendor shows that matters.
fn summarize(u: &Value) -> String {
    let get = |k: &str| u.get(k).map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    let mut line = format!(
        "userName={} active={}",
        u.get("userName").or(u.get("email")).map(|v| v.to_string()).unwrap_or_default(),
        get("active")
    );
    for key in ["name", "department", "section", "roles", "role_type"] {
        if let Some(v) = u.get(key) {
            line.push_str(&format!(" {key}={v}"));
        }
    }
    line
}
