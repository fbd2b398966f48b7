//! Black-box: roles as the vendors really have them, through the real server and the vendor simulators.
//! Promapp's "only Default Access" rule (create refused, later disabled at Promapp and enabled again, never
//! over an Entra disable); ProdPad SCIM mode's mapped role; `group_roles` through membership changes
//! (add, remove, precedence, rename, group deleted), with each member's role checked at the simulator;
//! vendor failures in the middle of a group change (nothing lied about, the rest done on Entra's retry);
//! members that are not this app's users; config errors naming key and file.

mod common;

use std::collections::BTreeMap;

use reqwest::Method;
use scim_bridge::config::{AppConfig, Config, GroupRole, LimitsConfig};
use scim_bridge::server::Running;
use serde_json::{json, Value};
use simkit::{SimFaults, Simulator, Throttle};

struct Gw {
    running: Running,
    client: reqwest::Client,
    sims: BTreeMap<&'static str, Box<dyn Simulator>>,
}

fn group_roles(pairs: &[(&str, &str)]) -> Vec<GroupRole> {
    pairs.iter().map(|(g, r)| GroupRole::by_name(g, r)).collect()
}

/// The Entra objectId of the group the Promapp app maps by id (`group_id`) to Process Expert.
const EXPERTS_OBJECT_ID: &str = "0b6c1a6e-3f0a-4d5e-9c1b-2a7d8e9f0a1b";

/// A Promapp app and a ProdPad (scim mode, `scim_roles: true`) app, each on its own simulator, with
/// group_roles; and, each on a simulator of its own, `promapp-plain`, a Promapp app without group_roles, and
/// `prodpad-plain`, a ProdPad scim-mode app with a role_map and `scim_roles` left at its default.
async fn start() -> Gw {
    let mut apps = BTreeMap::new();
    let mut sims = BTreeMap::new();
    let limits = LimitsConfig {
        requests_per_second: Some(200.0),
        burst: Some(50),
        max_in_flight: Some(4),
        max_attempts: Some(2),
        attempt_timeout_ms: Some(2000),
        deadline_ms: Some(4000),
        ..Default::default()
    };
    let promapp = adapter_promapp::sim::demo("pm-cred", None).await.unwrap();
    let plain = adapter_promapp::sim::demo("pm-cred", None).await.unwrap();
    let prodpad = adapter_prodpad::sim::demo("pp-cred", None).await.unwrap();
    let prodpad_plain = adapter_prodpad::sim::demo("pp-cred", None).await.unwrap();
    let mut plain_options = prodpad_plain.app_options;
    assert_eq!(plain_options.remove("scim_roles"), Some(json!(true)), "the demo turns roles on");
    plain_options.insert("role_map".into(), json!({"Boss": "Admin"}));
    let mut prodpad_options = prodpad.app_options;
    // An app-role value spelled like a ProdPad role, as in proxy.yaml's example.
    prodpad_options.insert("role_map".into(), json!({"Writer": "Editor", "Editor": "Editor"}));
    for (app, options, roles) in [
        ("promapp", promapp.app_options, {
            let mut roles = group_roles(&[("Process Owners", "Process Owner"), ("Process Viewers", "Viewer")]);
            roles.push(GroupRole::by_id(EXPERTS_OBJECT_ID, "Process Expert"));
            roles
        }),
        (
            "prodpad",
            prodpad_options,
            group_roles(&[("ProdPad Admins", "Admin"), ("ProdPad Editors", "Editor"), ("ProdPad Leads", "Admin")]),
        ),
        ("promapp-plain", plain.app_options, Vec::new()),
        ("prodpad-plain", plain_options, Vec::new()),
    ] {
        let vendor = app.trim_end_matches("-plain");
        apps.insert(
            app.to_string(),
            AppConfig {
                vendor: vendor.to_string(),
                token_sha256: common::sha(&format!("{app}-token")),
                limits: limits.clone(),
                ip_allow: Vec::new(),
                reconcile: Default::default(),
                group_roles: roles,
                options,
            },
        );
    }
    sims.insert("promapp", promapp.sim);
    sims.insert("promapp-plain", plain.sim);
    sims.insert("prodpad-plain", prodpad_plain.sim);
    sims.insert("prodpad", prodpad.sim);
    let config = Config::with_apps("127.0.0.1:0".parse().unwrap(), apps);
    config.validate("test.yaml").unwrap();
    let gateway = scim_bridge::server::build_gateway(&config, "test.yaml").unwrap();
    let running = scim_bridge::server::start(&config, gateway).await.unwrap();
    Gw { running, client: reqwest::Client::new(), sims }
}

struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

impl Gw {
    async fn call(&self, app: &str, method: Method, path: &str, body: Option<Value>) -> Answer {
        let url = format!("http://{}/scim/{app}/v2{path}", self.running.addr);
        let mut req = self.client.request(method, url).bearer_auth(format!("{app}-token"));
        if let Some(b) = body {
            req = req.header("content-type", "application/scim+json").body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let retry_after = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        Answer { status, retry_after, body: resp.json().await.unwrap_or(Value::Null) }
    }

    async fn create_user(&self, app: &str, user_name: &str, roles: &[&str]) -> String {
        let a = self.call(app, Method::POST, "/Users", Some(entra_user(user_name, roles))).await;
        assert_eq!(a.status, 201, "{app} create {user_name}: {}", a.body);
        a.body["id"].as_str().unwrap().to_string()
    }

    async fn create_group(&self, app: &str, name: &str) -> String {
        let body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": name,
            "externalId": format!("g-{name}"), "meta": {"resourceType": "Group"}});
        let a = self.call(app, Method::POST, "/Groups", Some(body)).await;
        assert_eq!(a.status, 201, "{app} create group {name}: {}", a.body);
        a.body["id"].as_str().unwrap().to_string()
    }

    async fn patch(&self, app: &str, path: &str, ops: Value) -> Answer {
        self.call(app, Method::PATCH, path, Some(patch_body(ops))).await
    }

    async fn add(&self, app: &str, gid: &str, uids: &[&str]) -> Answer {
        let members: Vec<Value> = uids.iter().map(|u| json!({"$ref": null, "value": u})).collect();
        self.patch(app, &format!("/Groups/{gid}"), json!([{"op": "Add", "path": "members", "value": members}])).await
    }

    async fn remove(&self, app: &str, gid: &str, uid: &str) -> Answer {
        let path = format!("members[value eq \"{uid}\"]");
        self.patch(app, &format!("/Groups/{gid}"), json!([{"op": "Remove", "path": path}])).await
    }

    fn held(&self, app: &str, user_name: &str) -> Value {
        self.sims[app]
            .users_json()
            .into_iter()
            .find(|u| {
                ["userName", "user_name", "email"]
                    .iter()
                    .any(|k| u.get(*k).and_then(Value::as_str).is_some_and(|v| v.eq_ignore_ascii_case(user_name)))
            })
            .unwrap_or(Value::Null)
    }

    /// The roles the simulator holds for the user (ProdPad: its one `role_type`).
    fn held_roles(&self, app: &str, user_name: &str) -> Vec<String> {
        let u = self.held(app, user_name);
        if let Some(r) = u.get("role_type").and_then(Value::as_str) {
            return vec![r.to_string()];
        }
        let roles = u.get("roles").and_then(Value::as_array).cloned().unwrap_or_default();
        roles
            .iter()
            .filter_map(|r| r.get("display").or(r.get("value")).and_then(Value::as_str).map(String::from))
            .collect()
    }

    fn held_active(&self, app: &str, user_name: &str) -> Option<bool> {
        self.held(app, user_name).get("active").and_then(Value::as_bool)
    }

    /// The audit log, newest first.
    async fn audit(&self) -> Vec<scim_bridge::store::AuditEntry> {
        self.running.gateway.store.audit_log(&Default::default()).await.unwrap()
    }

    async fn members(&self, app: &str, gid: &str) -> Vec<String> {
        let a = self.call(app, Method::GET, &format!("/Groups/{gid}"), None).await;
        assert_eq!(a.status, 200, "{}", a.body);
        let list = a.body["members"].as_array().cloned().unwrap_or_default();
        list.iter().map(|m| m["value"].as_str().unwrap().to_string()).collect()
    }
}

fn entra_user(user_name: &str, roles: &[&str]) -> Value {
    let roles: Vec<Value> =
        roles.iter().map(|r| json!({"primary": true, "type": "WindowsAzureActiveDirectoryRole", "value": r})).collect();
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "externalId": format!("ext-{user_name}"), "userName": user_name, "active": true,
        "emails": [{"primary": true, "type": "work", "value": user_name}],
        "name": {"givenName": "Given", "familyName": "Family"},
        "roles": roles
    })
}

fn patch_body(ops: Value) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops})
}

fn set_roles(roles: &[&str]) -> Value {
    let roles: Vec<Value> =
        roles.iter().map(|r| json!({"primary": true, "type": "WindowsAzureActiveDirectoryRole", "value": r})).collect();
    json!([{"op": "Replace", "path": "roles", "value": roles}])
}

#[tokio::test]
async fn promapp_refuses_a_default_access_only_create_and_disables_a_user_left_with_it() {
    let gw = start().await;
    let app = "promapp-plain";
    // Create: refused with a 400 that says what to change in Entra; Promapp never hears of the user.
    let a = gw.call(app, Method::POST, "/Users", Some(entra_user("da@example.com", &["Default Access"]))).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body["detail"].as_str().unwrap().contains("Default Access"), "{}", a.body);
    assert!(gw.held(app, "da@example.com").is_null());

    // A user whose role later becomes only Default Access is disabled at Promapp, audited as such;
    // Entra still sees the user, as it set it.
    let uid = gw.create_user(app, "ed@example.com", &["Editor"]).await;
    assert_eq!(gw.held_active(app, "ed@example.com"), Some(true));
    let a = gw.patch(app, &format!("/Users/{uid}"), set_roles(&["Default Access"])).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(gw.held_active(app, "ed@example.com"), Some(false), "{}", gw.held(app, "ed@example.com"));
    let a = gw.call(app, Method::GET, &format!("/Users/{uid}"), None).await;
    assert_eq!((a.status, a.body["active"].as_bool()), (200, Some(true)), "Entra's view is what Entra set");
    let disabled = gw.audit().await.into_iter().find(|e| e.resource_id.as_deref() == Some(&uid)).unwrap();
    assert!(disabled.detail.as_deref().unwrap_or("").contains("disabled at Promapp"), "{disabled:?}");
    // Only the disable was sent: the Process Manager role Promapp holds stays.
    assert_eq!(gw.held_roles(app, "ed@example.com"), ["Editor"], "{}", gw.held(app, "ed@example.com"));

    // A real role again: enabled again, audited.
    let a = gw.patch(app, &format!("/Users/{uid}"), set_roles(&["Editor"])).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(gw.held_active(app, "ed@example.com"), Some(true));
    assert_eq!(gw.held_roles(app, "ed@example.com"), ["Editor"]);
    let enabled = gw.audit().await.into_iter().find(|e| e.resource_id.as_deref() == Some(&uid)).unwrap();
    assert!(enabled.detail.as_deref().unwrap_or("").contains("enabled again"), "{enabled:?}");

    // Entra disables the user; a role coming back never overrides that.
    let off = json!([{"op": "Replace", "path": "active", "value": "False"}]);
    assert_eq!(gw.patch(app, &format!("/Users/{uid}"), off).await.status, 200);
    assert_eq!(gw.patch(app, &format!("/Users/{uid}"), set_roles(&["Default Access"])).await.status, 200);
    assert_eq!(gw.patch(app, &format!("/Users/{uid}"), set_roles(&["Editor"])).await.status, 200);
    assert_eq!(gw.held_active(app, "ed@example.com"), Some(false), "an Entra disable stands");

    // Through groups: a member keeps its group's role whatever its own; leaving the group with only
    // Default Access disables it at Promapp, joining again enables it.
    let app = "promapp";
    let uid2 = gw.create_user(app, "grp@example.com", &["Editor"]).await;
    let owners = gw.create_group(app, "Process Owners").await;
    assert_eq!(gw.add(app, &owners, &[&uid2]).await.status, 204);
    assert_eq!(gw.patch(app, &format!("/Users/{uid2}"), set_roles(&["Default Access"])).await.status, 200);
    assert_eq!(gw.held_roles(app, "grp@example.com"), ["Process Owner"]);
    assert_eq!(gw.held_active(app, "grp@example.com"), Some(true));
    assert_eq!(gw.remove(app, &owners, &uid2).await.status, 204);
    assert_eq!(gw.held_active(app, "grp@example.com"), Some(false));
    assert_eq!(gw.held_roles(app, "grp@example.com"), ["Process Owner"], "disabled, roles untouched");
    let entry = gw.audit().await.into_iter().find(|e| e.operation == "group-role").unwrap();
    assert!(entry.detail.as_deref().unwrap_or("").contains("disabled at Promapp"), "{entry:?}");
    assert_eq!(gw.add(app, &owners, &[&uid2]).await.status, 204);
    assert_eq!(gw.held_active(app, "grp@example.com"), Some(true));
    assert_eq!(gw.held_roles(app, "grp@example.com"), ["Process Owner"]);
}

/// With group_roles, a user with only Default Access of its own is created held disabled (audited), enabled
/// when it joins a mapped group, disabled again when it leaves the last one; an Entra disable always wins.
#[tokio::test]
async fn promapp_with_group_roles_holds_a_default_access_user_until_a_group_gives_it_a_role() {
    let gw = start().await;
    let app = "promapp";
    let uid = gw.create_user(app, "held@example.com", &["Default Access"]).await;
    assert_eq!(gw.held_active(app, "held@example.com"), Some(false), "{}", gw.held(app, "held@example.com"));
    assert_eq!(gw.held_roles(app, "held@example.com"), Vec::<String>::new());
    let a = gw.call(app, Method::GET, &format!("/Users/{uid}"), None).await;
    assert_eq!(a.body["active"], true, "Entra's view is what Entra set");
    let created = gw.audit().await.into_iter().find(|e| e.resource_id.as_deref() == Some(&uid)).unwrap();
    assert_eq!((created.operation.as_str(), created.status), ("create", 201), "{created:?}");
    assert!(created.detail.as_deref().unwrap_or("").contains("created disabled at Promapp"), "{created:?}");

    let owners = gw.create_group(app, "Process Owners").await;
    let viewers = gw.create_group(app, "Process Viewers").await;
    assert_eq!(gw.add(app, &owners, &[&uid]).await.status, 204);
    assert_eq!(gw.held_active(app, "held@example.com"), Some(true), "a mapped group gives it a role");
    assert_eq!(gw.held_roles(app, "held@example.com"), ["Process Owner"]);
    let joined = gw.audit().await.into_iter().find(|e| e.operation == "group-role").unwrap();
    assert!(joined.detail.as_deref().unwrap_or("").contains("enabled again"), "{joined:?}");
    assert_eq!(gw.add(app, &viewers, &[&uid]).await.status, 204);
    assert_eq!(gw.remove(app, &owners, &uid).await.status, 204);
    assert_eq!(
        (gw.held_active(app, "held@example.com"), gw.held_roles(app, "held@example.com")),
        (Some(true), vec!["Viewer".to_string()])
    );
    assert_eq!(gw.remove(app, &viewers, &uid).await.status, 204);
    assert_eq!(gw.held_active(app, "held@example.com"), Some(false), "left every mapped group");
    let left = gw.audit().await.into_iter().find(|e| e.operation == "group-role").unwrap();
    assert!(left.detail.as_deref().unwrap_or("").contains("disabled at Promapp"), "{left:?}");

    // Entra disables the user: joining a mapped group never enables it.
    let off = json!([{"op": "Replace", "path": "active", "value": "False"}]);
    assert_eq!(gw.patch(app, &format!("/Users/{uid}"), off).await.status, 200);
    assert_eq!(gw.add(app, &owners, &[&uid]).await.status, 204);
    assert_eq!(gw.held_active(app, "held@example.com"), Some(false), "an Entra disable stands");
    assert_eq!(gw.held_roles(app, "held@example.com"), ["Process Owner"]);
    let on = json!([{"op": "Replace", "path": "active", "value": "True"}]);
    assert_eq!(gw.patch(app, &format!("/Users/{uid}"), on).await.status, 200);
    assert_eq!(gw.held_active(app, "held@example.com"), Some(true), "enabled by Entra, with its group's role");
}

/// With group_roles and no `roles` mapping in Entra, a user has no Process Manager role until a mapped
/// group gives it one, and Promapp requires one: it is created held disabled, enabled when it joins a
/// mapped group, disabled again (roles untouched) when it leaves the last one; an Entra disable wins.
#[tokio::test]
async fn promapp_with_group_roles_holds_a_user_with_no_role_until_a_group_gives_it_one() {
    let gw = start().await;
    let app = "promapp";
    let uid = gw.create_user(app, "norole@example.com", &[]).await;
    assert_eq!(gw.held_active(app, "norole@example.com"), Some(false), "{}", gw.held(app, "norole@example.com"));
    let created = gw.audit().await.into_iter().find(|e| e.resource_id.as_deref() == Some(&uid)).unwrap();
    assert!(created.detail.as_deref().unwrap_or("").contains("created disabled at Promapp"), "{created:?}");
    let a = gw.call(app, Method::GET, &format!("/Users/{uid}"), None).await;
    assert_eq!(a.body["active"], true, "Entra's view is what Entra set");

    let owners = gw.create_group(app, "Process Owners").await;
    assert_eq!(gw.add(app, &owners, &[&uid]).await.status, 204);
    assert_eq!(gw.held_active(app, "norole@example.com"), Some(true), "a mapped group gives it a role");
    assert_eq!(gw.held_roles(app, "norole@example.com"), ["Process Owner"]);
    assert_eq!(gw.remove(app, &owners, &uid).await.status, 204);
    assert_eq!(gw.held_active(app, "norole@example.com"), Some(false), "no role left: held disabled");
    assert_eq!(gw.held_roles(app, "norole@example.com"), ["Process Owner"], "disabled, roles untouched");
    let left = gw.audit().await.into_iter().find(|e| e.operation == "group-role").unwrap();
    assert!(left.detail.as_deref().unwrap_or("").contains("no Process Manager role"), "{left:?}");

    // Entra disables the user: joining a mapped group does not enable it.
    let off = json!([{"op": "Replace", "path": "active", "value": "False"}]);
    assert_eq!(gw.patch(app, &format!("/Users/{uid}"), off).await.status, 200);
    assert_eq!(gw.add(app, &owners, &[&uid]).await.status, 204);
    assert_eq!(gw.held_active(app, "norole@example.com"), Some(false), "an Entra disable stands");

    // An app without group_roles is unchanged: a user without roles is created as Entra sent it.
    gw.create_user("promapp-plain", "plain-norole@example.com", &[]).await;
    assert_eq!(gw.held_active("promapp-plain", "plain-norole@example.com"), Some(true));
}

/// Deprovisioning a user Promapp holds disabled (only Default Access) still sends the disable, so a user
/// someone enabled in Promapp meanwhile ends disabled; only the disable: its roles stay.
#[tokio::test]
async fn promapp_deprovision_of_a_held_disabled_user_disables_it_and_keeps_its_roles() {
    let gw = start().await;
    for app in ["promapp-plain", "promapp"] {
        let name = format!("leaver-{app}@example.com");
        let uid = gw.create_user(app, &name, &["Editor"]).await;
        assert_eq!(gw.patch(app, &format!("/Users/{uid}"), set_roles(&["Default Access"])).await.status, 200);
        assert_eq!(gw.held_active(app, &name), Some(false));
        // A Promaster enables the user in Promapp itself.
        let url = format!("{}/_sim/users/{name}", gw.sims[app].root_url());
        let r = gw.client.patch(url).json(&json!({"active": true})).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        assert_eq!(gw.held_active(app, &name), Some(true));

        let d = gw.call(app, Method::DELETE, &format!("/Users/{uid}"), None).await;
        assert_eq!(d.status, 204, "{}", d.body);
        assert_eq!(gw.held_active(app, &name), Some(false), "{app}: deprovisioned means disabled at Promapp");
        assert_eq!(gw.held_roles(app, &name), ["Editor"], "{app}: only the disable was sent");
        let entry = gw.audit().await.into_iter().find(|e| e.resource_id.as_deref() == Some(&uid)).unwrap();
        assert_eq!((entry.operation.as_str(), entry.outcome.as_str(), entry.status), ("delete", "ok", 204));
        assert!(entry.vendor_calls >= 1, "{entry:?}");
    }
}

#[tokio::test]
async fn prodpad_scim_mode_sends_the_mapped_role() {
    let gw = start().await;
    let app = "prodpad";
    gw.create_user(app, "writer@example.com", &["Writer"]).await;
    assert_eq!(gw.held_roles(app, "writer@example.com"), ["Editor"], "role_map Writer -> Editor");
    let uid = gw.create_user(app, "plain@example.com", &["Nobody"]).await;
    assert_eq!(gw.held_roles(app, "plain@example.com"), ["Reviewer"], "unmapped: the default, never more");
    assert_eq!(gw.patch(app, &format!("/Users/{uid}"), set_roles(&["Writer"])).await.status, 200);
    assert_eq!(gw.held_roles(app, "plain@example.com"), ["Editor"]);
    // A role Entra sends marked as the gateway's own vendor-role type is still an app-role value: it goes
    // through role_map and the default, so a mapping cannot hand out Admin past them.
    let forged = json!({"type": adapter_api::model::VENDOR_ROLE_TYPE, "value": "Admin"});
    let mut body = entra_user("forged@example.com", &[]);
    body["roles"] = json!([forged]);
    let a = gw.call(app, Method::POST, "/Users", Some(body)).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(gw.held_roles(app, "forged@example.com"), ["Reviewer"]);
    let ops = json!([{"op": "Replace", "path": "roles", "value": [forged]}]);
    assert_eq!(gw.patch(app, &format!("/Users/{uid}"), ops).await.status, 200);
    assert_eq!(gw.held_roles(app, "plain@example.com"), ["Reviewer"]);
    assert_eq!(gw.patch(app, &format!("/Users/{uid}"), set_roles(&["Writer"])).await.status, 200);
    assert_eq!(gw.held_roles(app, "plain@example.com"), ["Editor"]);
    // What Entra sends for the `SingleAppRoleAssignment` mapping once the role changes.
    let ops = json!([{"op": "Replace", "path": "roles[primary eq \"True\"].value", "value": "Nobody"}]);
    let a = gw.patch(app, &format!("/Users/{uid}"), ops).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(gw.held_roles(app, "plain@example.com"), ["Reviewer"]);
}

/// Reconcile over one app, enforcing.
async fn reconcile(gw: &Gw, app: &str) -> scim_bridge::reconcile::PassReport {
    let app = gw.running.gateway.apps[app].clone();
    let opts = scim_bridge::reconcile::PassOptions {
        mode: scim_bridge::config::ReconcileMode::Enforce,
        dry_run: false,
        max_repairs: 10,
    };
    gw.running.gateway.reconcile(&app, &opts, false, &|_| {}).await
}

/// Someone changes a user in ProdPad itself (through ProdPad's SCIM API).
async fn edit_in_prodpad(gw: &Gw, app: &str, user_name: &str, ops: Value) {
    let vendor_id = gw.held(app, user_name)["id"].as_str().unwrap().to_string();
    let scim = format!("{}{}", gw.sims[app].root_url(), adapter_prodpad::sim::DEMO_SCIM_PATH);
    let r = gw.client.patch(format!("{scim}/Users/{vendor_id}")).bearer_auth("pp-cred").json(&patch_body(ops));
    assert!(r.send().await.unwrap().status().is_success());
}

/// Someone makes a user an Admin in ProdPad itself.
async fn make_admin_in_prodpad(gw: &Gw, app: &str, user_name: &str) {
    edit_in_prodpad(gw, app, user_name, json!([{"op": "replace", "path": "roles", "value": [{"value": "Admin"}]}]))
        .await;
    assert_eq!(gw.held_roles(app, user_name), ["Admin"]);
}

/// `scim_roles` is off unless set, so an existing ProdPad deployment keeps the roles its admins set; with it
/// on, the gateway changes only the roles it manages (a mapped app role, a group role): an Admin set by
/// hand in ProdPad survives Entra's updates and reconcile, and a role the gateway gave is taken back to the
/// default when Entra's mapping goes.
#[tokio::test]
async fn prodpad_roles_the_gateway_does_not_manage_are_left_alone() {
    let gw = start().await;
    // Default: no role sent, whatever role_map says.
    let app = "prodpad-plain";
    let uid = gw.create_user(app, "boss@example.com", &["Boss"]).await;
    assert_eq!(gw.held_roles(app, "boss@example.com"), ["Reviewer"], "scim_roles is off by default");
    make_admin_in_prodpad(&gw, app, "boss@example.com").await;
    let rename = json!([{"op": "Replace", "path": "name.givenName", "value": "Renamed"}]);
    assert_eq!(gw.patch(app, &format!("/Users/{uid}"), rename.clone()).await.status, 200);
    let report = reconcile(&gw, app).await;
    assert!(report.findings.is_empty(), "{report:?}");
    assert_eq!(gw.held_roles(app, "boss@example.com"), ["Admin"]);

    // scim_roles on: a user whose Entra roles map to nothing is created with the default, then its role is
    // ProdPad's: a hand-set Admin survives an update and reconcile.
    let app = "prodpad";
    let uid = gw.create_user(app, "handset@example.com", &["Nobody"]).await;
    assert_eq!(gw.held_roles(app, "handset@example.com"), ["Reviewer"]);
    make_admin_in_prodpad(&gw, app, "handset@example.com").await;
    assert_eq!(gw.patch(app, &format!("/Users/{uid}"), rename).await.status, 200);
    assert_eq!(gw.held_roles(app, "handset@example.com"), ["Admin"], "an update sends no unmanaged role");
    let report = reconcile(&gw, app).await;
    assert!(report.findings.is_empty(), "{report:?}");
    assert_eq!(gw.held_roles(app, "handset@example.com"), ["Admin"], "reconcile leaves an unmanaged role alone");

    // A hand-set role whose name is also a role_map value ("Editor") is still ProdPad's: reconcile repairing
    // another attribute leaves it as it is.
    let ops = json!([{"op": "replace", "path": "roles", "value": [{"value": "Editor"}]},
                     {"op": "replace", "path": "name.familyName", "value": "Changed in ProdPad"}]);
    edit_in_prodpad(&gw, app, "handset@example.com", ops).await;
    let report = reconcile(&gw, app).await;
    assert_eq!(report.findings.len(), 1, "the name drifted: {report:?}");
    assert_eq!(gw.held(app, "handset@example.com")["family_name"], "Family", "the name is repaired");
    assert_eq!(gw.held_roles(app, "handset@example.com"), ["Editor"], "the repair sends no role");

    // A mapped role is the gateway's: set, repaired by reconcile, and taken back to the default.
    assert_eq!(gw.patch(app, &format!("/Users/{uid}"), set_roles(&["Writer"])).await.status, 200);
    assert_eq!(gw.held_roles(app, "handset@example.com"), ["Editor"]);
    make_admin_in_prodpad(&gw, app, "handset@example.com").await;
    let report = reconcile(&gw, app).await;
    assert_eq!(report.findings.len(), 1, "{report:?}");
    assert_eq!(gw.held_roles(app, "handset@example.com"), ["Editor"], "a managed role is repaired");
    assert_eq!(gw.patch(app, &format!("/Users/{uid}"), set_roles(&["Nobody"])).await.status, 200);
    assert_eq!(gw.held_roles(app, "handset@example.com"), ["Reviewer"], "the gateway takes back what it gave");
}

/// ProdPad's guide has no Default Access rule: such a user is created with the default role, never more.
#[tokio::test]
async fn default_access_on_prodpad_is_no_mapped_role() {
    let gw = start().await;
    gw.create_user("prodpad", "da@example.com", &["msiam_access"]).await;
    assert_eq!(gw.held_roles("prodpad", "da@example.com"), ["Reviewer"]);
    assert_eq!(gw.held_active("prodpad", "da@example.com"), Some(true));
}

/// A mapped group and the role its members get.
type Mapped = (&'static str, &'static str);

/// (app, first mapped group and its role, second mapped group and its role, the user's own role as held)
const VENDORS: [(&str, Mapped, Mapped, &str); 2] = [
    ("promapp", ("Process Owners", "Process Owner"), ("Process Viewers", "Viewer"), "Editor"),
    ("prodpad", ("ProdPad Admins", "Admin"), ("ProdPad Editors", "Editor"), "Reviewer"),
];

#[tokio::test]
async fn group_roles_follow_membership_precedence_renames_and_deletes() {
    let gw = start().await;
    for (app, (first, first_role), (second, second_role), own) in VENDORS {
        let own_roles: &[&str] = if app == "promapp" { &["Editor"] } else { &[] };
        let a_name = format!("a-{app}@example.com");
        let a = gw.create_user(app, &a_name, own_roles).await;
        let b_name = format!("b-{app}@example.com");
        let b = gw.create_user(app, &b_name, own_roles).await;
        assert_eq!(gw.held_roles(app, &a_name), [own], "{app}: no group, own role");
        let g1 = gw.create_group(app, first).await;
        let g2 = gw.create_group(app, second).await;
        let unmapped = gw.create_group(app, "Everyone").await;

        assert_eq!(gw.add(app, &g2, &[&a]).await.status, 204);
        assert_eq!(gw.held_roles(app, &a_name), [second_role], "{app}: joined the second group");
        assert_eq!(gw.add(app, &g1, &[&a]).await.status, 204);
        assert_eq!(gw.held_roles(app, &a_name), [first_role], "{app}: the first group takes precedence");
        assert_eq!(gw.add(app, &g2, &[&a]).await.status, 204, "{app}: adding again changes nothing");
        assert_eq!(gw.held_roles(app, &a_name), [first_role]);
        assert_eq!(gw.remove(app, &g1, &a).await.status, 204);
        assert_eq!(gw.held_roles(app, &a_name), [second_role], "{app}: left the first, the second applies");
        assert_eq!(gw.members(app, &g2).await, std::slice::from_ref(&a));

        // An unmapped group changes nothing and costs no vendor call.
        let calls = gw.sims[app].counters().requests;
        assert_eq!(gw.add(app, &unmapped, &[&b]).await.status, 204);
        assert_eq!(gw.held_roles(app, &b_name), [own]);
        assert_eq!(gw.sims[app].counters().requests, calls, "{app}: no vendor call for an unmapped group");

        // A rename to an unmapped name takes the role back; renaming back gives it again.
        let rename = |name: &str| json!([{"op": "Replace", "path": "displayName", "value": name}]);
        assert_eq!(gw.patch(app, &format!("/Groups/{g2}"), rename("Retired")).await.status, 204);
        assert_eq!(gw.held_roles(app, &a_name), [own], "{app}: renamed away");
        // Names match exactly: the mapped name in other case is another name.
        assert_eq!(gw.patch(app, &format!("/Groups/{g2}"), rename(&second.to_uppercase())).await.status, 204);
        assert_eq!(gw.held_roles(app, &a_name), [own], "{app}: {} is not {second}", second.to_uppercase());
        assert_eq!(gw.patch(app, &format!("/Groups/{g2}"), rename(second)).await.status, 204);
        assert_eq!(gw.held_roles(app, &a_name), [second_role], "{app}: renamed back");
        // A rename onto another group's name is refused, and changes nothing.
        let clash = gw.patch(app, &format!("/Groups/{unmapped}"), rename(first)).await;
        assert_eq!(clash.status, 409, "{}", clash.body);

        // The group deleted: its members fall back.
        assert_eq!(gw.add(app, &g1, &[&b]).await.status, 204);
        assert_eq!(gw.held_roles(app, &b_name), [first_role]);
        let d = gw.call(app, Method::DELETE, &format!("/Groups/{g1}"), None).await;
        assert_eq!(d.status, 204, "{}", d.body);
        assert_eq!(gw.held_roles(app, &b_name), [own], "{app}: group deleted, own role back");
        assert_eq!(gw.call(app, Method::GET, &format!("/Groups/{g1}"), None).await.status, 404);

        // Every role change is audited against its user.
        let audit = gw.audit().await;
        let role_changes = |uid: &str| {
            audit.iter().filter(|e| e.operation == "group-role" && e.resource_id.as_deref() == Some(uid)).count()
        };
        assert_eq!(role_changes(&a), 5, "{app}: join, precedence, leave, rename away, rename back");
        assert_eq!(role_changes(&b), 2, "{app}: join, group deleted");
        assert!(audit.iter().filter(|e| e.operation == "group-role").all(|e| e.outcome == "ok" && e.vendor_calls >= 1));

        // A deleted user leaves its groups.
        assert_eq!(gw.call(app, Method::DELETE, &format!("/Users/{a}"), None).await.status, 204);
        assert!(gw.members(app, &g2).await.is_empty(), "{app}");
    }
}

#[tokio::test]
async fn a_group_change_the_vendor_cuts_short_is_recorded_as_far_as_confirmed_and_finished_on_retry() {
    let gw = start().await;
    let app = "promapp";
    let mut uids = Vec::new();
    for i in 0..3 {
        uids.push(gw.create_user(app, &format!("m{i}@example.com"), &["Editor"]).await);
    }
    let g = gw.create_group(app, "Process Owners").await;

    // Every vendor call fails: Entra gets 503 with Retry-After, nothing is recorded.
    gw.sims[app].set_faults(SimFaults { error_rate: 1.0, ..Default::default() });
    let refs: Vec<&str> = uids.iter().map(String::as_str).collect();
    let a = gw.add(app, &g, &refs).await;
    assert!(matches!(a.status, 429 | 503), "{} {}", a.status, a.body);
    assert!(a.retry_after.is_some(), "Retry-After on vendor trouble");
    assert!(gw.members(app, &g).await.is_empty(), "no member recorded without the vendor's confirmation");
    assert!((0..3).all(|i| gw.held_roles(app, &format!("m{i}@example.com")) == ["Editor"]));

    // The vendor throttles after two members' updates (a GET and a PUT each): the first two are done and
    // recorded, the third is not, and Entra is told so with 429/503 and Retry-After.
    gw.sims[app].set_faults(SimFaults {
        throttle: Some(Throttle { requests: 4, per: std::time::Duration::from_secs(600), retry_after_secs: 1 }),
        ..Default::default()
    });
    let a = gw.add(app, &g, &refs).await;
    assert!(matches!(a.status, 429 | 503), "{} {}", a.status, a.body);
    assert!(a.retry_after.is_some());
    assert!(a.body["detail"].as_str().unwrap().contains("2 of 3"), "{}", a.body);
    assert_eq!(gw.members(app, &g).await, uids[..2], "the confirmed members are recorded");
    assert_eq!(gw.held_roles(app, "m0@example.com"), ["Process Owner"]);
    assert_eq!(gw.held_roles(app, "m1@example.com"), ["Process Owner"]);
    assert_eq!(gw.held_roles(app, "m2@example.com"), ["Editor"], "the third was not changed");
    let audit = gw.audit().await;
    let failed = audit.iter().find(|e| e.operation == "group-role").unwrap();
    assert_eq!(failed.resource_id.as_deref(), Some(uids[2].as_str()));
    assert_ne!(failed.outcome, "ok", "{failed:?}");
    let group_entry = audit.iter().find(|e| e.resource_id.as_deref() == Some(&g)).unwrap();
    assert_eq!(group_entry.outcome, "partial", "{group_entry:?}");

    // Entra retries the same request once the vendor lets it: only the third member is left to do.
    gw.sims[app].set_faults(SimFaults::default());
    let mut done = None;
    for _ in 0..20 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let a = gw.add(app, &g, &refs).await;
        if a.status == 204 {
            done = Some(a);
            break;
        }
    }
    assert!(done.is_some(), "the retry completes once the vendor's pause is over");
    assert_eq!(gw.members(app, &g).await, uids);
    assert!((0..3).all(|i| gw.held_roles(app, &format!("m{i}@example.com")) == ["Process Owner"]));
    let audit = gw.audit().await;
    let ok_updates = |uid: &str| {
        audit
            .iter()
            .filter(|e| e.operation == "group-role" && e.outcome == "ok" && e.resource_id.as_deref() == Some(uid))
            .count()
    };
    assert_eq!((ok_updates(&uids[0]), ok_updates(&uids[1]), ok_updates(&uids[2])), (1, 1, 1), "no member twice");

    // A create whose members the vendor refuses is not recorded at all (m0 is an owner already: joining
    // the viewers changes nothing for it; m3's update is what fails).
    let m3 = gw.create_user(app, "m3@example.com", &["Editor"]).await;
    gw.sims[app].set_faults(SimFaults { error_rate: 1.0, ..Default::default() });
    let body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Process Viewers",
        "members": [{"value": uids[0]}, {"value": m3}]});
    let a = gw.call(app, Method::POST, "/Groups", Some(body)).await;
    assert!(matches!(a.status, 429 | 503), "{} {}", a.status, a.body);
    gw.sims[app].set_faults(SimFaults::default());
    let f = gw.call(app, Method::GET, &common::filter_path("Groups", "displayName eq \"Process Viewers\""), None).await;
    assert_eq!(f.body["totalResults"], 0, "{}", f.body);

    // Deleting the group, cut short the same way: it stays, holding only the members not yet done.
    gw.sims[app].set_faults(SimFaults {
        throttle: Some(Throttle { requests: 4, per: std::time::Duration::from_secs(600), retry_after_secs: 1 }),
        ..Default::default()
    });
    let d = gw.call(app, Method::DELETE, &format!("/Groups/{g}"), None).await;
    assert!(matches!(d.status, 429 | 503), "{} {}", d.status, d.body);
    assert!(d.retry_after.is_some());
    assert_eq!(gw.members(app, &g).await, uids[2..], "the group keeps the member whose role is unchanged");
    assert_eq!(gw.held_roles(app, "m0@example.com"), ["Editor"]);
    assert_eq!(gw.held_roles(app, "m2@example.com"), ["Process Owner"]);
    gw.sims[app].set_faults(SimFaults::default());
    let mut status = 0;
    for _ in 0..20 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        status = gw.call(app, Method::DELETE, &format!("/Groups/{g}"), None).await.status;
        if status == 204 {
            break;
        }
    }
    assert_eq!(status, 204, "the retried delete completes");
    assert_eq!(gw.call(app, Method::GET, &format!("/Groups/{g}"), None).await.status, 404);
    assert!((0..3).all(|i| gw.held_roles(app, &format!("m{i}@example.com")) == ["Editor"]));
}

/// A group mapped by its Entra objectId (`group_id`, sent as the group's externalId) keeps its role through
/// any rename, and no other group gets it by taking its name or its externalId; a group mapped by name is
/// matched exactly.
#[tokio::test]
async fn a_group_mapped_by_object_id_survives_renames_and_cannot_be_impersonated_by_name() {
    let gw = start().await;
    let app = "promapp";
    let group = |name: &str, external_id: &str| {
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": name,
               "externalId": external_id})
    };
    let uid = gw.create_user(app, "expert@example.com", &["Editor"]).await;
    let other = gw.create_user(app, "owner-of-other@example.com", &["Editor"]).await;
    // Entra sends the objectId as it is; its hex case does not matter.
    let a = gw.call(app, Method::POST, "/Groups", Some(group("Experts", &EXPERTS_OBJECT_ID.to_uppercase()))).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let experts = a.body["id"].as_str().unwrap().to_string();
    assert_eq!(gw.add(app, &experts, &[&uid]).await.status, 204);
    assert_eq!(gw.held_roles(app, "expert@example.com"), ["Process Expert"]);

    // Renamed in Entra: the role stays, and the vendor is not called.
    let calls = gw.sims[app].counters().requests;
    let rename = json!([{"op": "Replace", "path": "displayName", "value": "Experts (EMEA)"}]);
    assert_eq!(gw.patch(app, &format!("/Groups/{experts}"), rename).await.status, 204);
    assert_eq!(gw.held_roles(app, "expert@example.com"), ["Process Expert"]);
    assert_eq!(gw.sims[app].counters().requests, calls, "a rename of a group mapped by id changes no role");

    // Another group's owner renames it to the mapped group's old name: its members get nothing.
    let a = gw.call(app, Method::POST, "/Groups", Some(group("Team", "7f000000-0000-4000-8000-000000000001"))).await;
    let team = a.body["id"].as_str().unwrap().to_string();
    assert_eq!(gw.add(app, &team, &[&other]).await.status, 204);
    let rename = json!([{"op": "Replace", "path": "displayName", "value": "Experts"}]);
    assert_eq!(gw.patch(app, &format!("/Groups/{team}"), rename).await.status, 204);
    assert_eq!(gw.held_roles(app, "owner-of-other@example.com"), ["Editor"]);
    // A group named like a by-name entry in another case is another group.
    let rename = json!([{"op": "Replace", "path": "displayName", "value": "process owners"}]);
    assert_eq!(gw.patch(app, &format!("/Groups/{team}"), rename).await.status, 204);
    assert_eq!(gw.held_roles(app, "owner-of-other@example.com"), ["Editor"], "names match exactly");

    // Another group cannot take the mapped objectId: not at create (uniqueness), not by a change of its
    // externalId (an objectId never changes); both audited, no vendor call.
    let calls = gw.sims[app].counters().requests;
    let a = gw.call(app, Method::POST, "/Groups", Some(group("Impostors", EXPERTS_OBJECT_ID))).await;
    assert_eq!((a.status, a.body["scimType"].as_str()), (409, Some("uniqueness")), "{}", a.body);
    let ops = json!([{"op": "Replace", "path": "externalId", "value": EXPERTS_OBJECT_ID}]);
    let a = gw.patch(app, &format!("/Groups/{team}"), ops.clone()).await;
    assert_eq!((a.status, a.body["scimType"].as_str()), (409, None), "{}", a.body);
    let refused = gw.audit().await.into_iter().find(|e| e.resource_id.as_deref() == Some(&team)).unwrap();
    assert_eq!((refused.outcome.as_str(), refused.status), ("rejected", 409), "{refused:?}");
    assert_eq!(gw.held_roles(app, "owner-of-other@example.com"), ["Editor"]);
    assert_eq!(gw.sims[app].counters().requests, calls, "no vendor call for a refused externalId");

    // The mapped group deleted: its member falls back to its own role; the objectId is still not another
    // group's to take.
    assert_eq!(gw.call(app, Method::DELETE, &format!("/Groups/{experts}"), None).await.status, 204);
    assert_eq!(gw.held_roles(app, "expert@example.com"), ["Editor"]);
    assert_eq!(gw.patch(app, &format!("/Groups/{team}"), ops).await.status, 409);
    assert_eq!(gw.held_roles(app, "owner-of-other@example.com"), ["Editor"]);
    // The same externalId in another case is no change.
    let ops = json!([{"op": "Replace", "path": "externalId", "value": "7F000000-0000-4000-8000-000000000001"}]);
    assert_eq!(gw.patch(app, &format!("/Groups/{team}"), ops).await.status, 204);
}

/// The vendor refuses to take a group role back (the member's own Process Manager role was removed from the
/// site): the member is disabled at the vendor instead (audited, on the needs-a-person list), never left
/// with the higher role behind a 204; the other members go on. If even the disable is refused, the
/// change stops like an outage (503 with Retry-After) and records nothing of that member.
#[tokio::test]
async fn a_group_role_the_vendor_will_not_take_back_disables_the_member() {
    let gw = start().await;
    let app = "promapp";
    let flags = format!("{}/_sim/flags", gw.sims[app].root_url());
    let set_catalogue = |roles: &[&str]| {
        let body = json!({"patch_supported": false, "roles": roles});
        let req = gw.client.put(flags.clone()).json(&body);
        async move { assert!(req.send().await.unwrap().status().is_success()) }
    };
    set_catalogue(&["Process Owner", "Viewer", "Editor", "Legacy"]).await;
    let a = gw.create_user(app, "r-a@example.com", &["Editor"]).await;
    let b = gw.create_user(app, "r-b@example.com", &["Legacy"]).await;
    let c = gw.create_user(app, "r-c@example.com", &["Editor"]).await;
    let g = gw.create_group(app, "Process Owners").await;
    assert_eq!(gw.add(app, &g, &[&a, &b, &c]).await.status, 204);
    assert!(["r-a", "r-b", "r-c"].iter().all(|u| gw.held_roles(app, &format!("{u}@example.com")) == ["Process Owner"]));

    // Promapp's site drops the "Legacy" role: b cannot fall back to it, so it is disabled instead.
    set_catalogue(&["Process Owner", "Viewer", "Editor"]).await;
    let d = gw.call(app, Method::DELETE, &format!("/Groups/{g}"), None).await;
    assert_eq!(d.status, 204, "{}", d.body);
    assert_eq!(gw.call(app, Method::GET, &format!("/Groups/{g}"), None).await.status, 404);
    assert_eq!(gw.held_roles(app, "r-a@example.com"), ["Editor"]);
    assert_eq!(gw.held_roles(app, "r-c@example.com"), ["Editor"], "the member after the refused one went on");
    assert_eq!(gw.held_active(app, "r-b@example.com"), Some(false), "{}", gw.held(app, "r-b@example.com"));
    assert_eq!(gw.held_active(app, "r-a@example.com"), Some(true));
    let audit = gw.audit().await;
    let mine: Vec<_> =
        audit.iter().filter(|e| e.operation == "group-role" && e.resource_id.as_deref() == Some(&b)).collect();
    let (disable, refused) = (mine[0], mine[1]);
    assert_eq!((refused.outcome.as_str(), refused.status), ("needs_manual_action", 400), "{refused:?}");
    assert!(refused.detail.as_deref().unwrap_or("").contains("Legacy"), "{refused:?}");
    assert!(
        disable.detail.as_deref().unwrap_or("").contains("disabled: its group role could not be taken back"),
        "{disable:?}"
    );
    assert_eq!(disable.outcome, "needs_manual_action", "{disable:?}");
    let group = audit.iter().find(|e| e.resource_id.as_deref() == Some(&g)).unwrap();
    assert_eq!((group.outcome.as_str(), group.status), ("ok", 204), "{group:?}");
    assert!(group.detail.as_deref().unwrap_or("").contains("1 member(s) disabled"), "{group:?}");
    let filter = scim_bridge::store::AuditFilter {
        outcome: scim_bridge::store::OutcomeFilter::NeedsPerson,
        ..Default::default()
    };
    let (person, _) = gw.running.gateway.store.audit_page(&filter, 100).await.unwrap();
    assert!(person.iter().any(|e| e.resource_id.as_deref() == Some(&b)), "on the needs-a-person list: {person:?}");

    // The disable refused too (the role b holds is gone from the site as well): 503 with Retry-After, and
    // b's removal is not recorded.
    set_catalogue(&["Process Owner", "Viewer", "Editor", "Legacy"]).await;
    let e = gw.create_user(app, "r-e@example.com", &["Legacy"]).await;
    let g2 = gw.create_group(app, "Process Owners").await;
    assert_eq!(gw.add(app, &g2, &[&a, &e]).await.status, 204);
    set_catalogue(&["Viewer", "Editor"]).await;
    let r = gw.remove(app, &g2, &e).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.retry_after.is_some());
    assert_eq!(gw.members(app, &g2).await, [a.clone(), e.clone()]);
    assert_eq!(gw.held_active(app, "r-e@example.com"), Some(true));
}

/// A ProdPad (scim mode, `scim_roles: true`) app `prodpad` with group_roles Admins -> Admin and Editors ->
/// Editor, on a simulator with two Admin seats and one Editor seat that refuses (403 "no seat") a role it
/// has no free seat for, so a change to Editor can be refused for good.
async fn start_prodpad_one_editor_seat() -> Gw {
    let sim = adapter_prodpad::sim::spawn(adapter_prodpad::sim::SimOptions {
        api_keys: vec!["pp-cred".into()],
        admin_seats: 2,
        editor_seats: 1,
        no_seat_forbidden: true,
        scim_path: Some(adapter_prodpad::sim::DEMO_SCIM_PATH.into()),
        ..Default::default()
    })
    .await;
    let options =
        json!({"mode": "scim", "base_url": sim.scim_base().unwrap(), "api_key": "pp-cred", "scim_roles": true});
    let app = AppConfig {
        vendor: "prodpad".into(),
        token_sha256: common::sha("prodpad-token"),
        limits: LimitsConfig {
            max_attempts: Some(2),
            attempt_timeout_ms: Some(2000),
            deadline_ms: Some(4000),
            ..Default::default()
        },
        ip_allow: Vec::new(),
        reconcile: Default::default(),
        group_roles: group_roles(&[("ProdPad Admins", "Admin"), ("ProdPad Editors", "Editor")]),
        options: options.as_object().unwrap().clone(),
    };
    let config = Config::with_apps("127.0.0.1:0".parse().unwrap(), BTreeMap::from([("prodpad".to_string(), app)]));
    config.validate("test.yaml").unwrap();
    let gateway = scim_bridge::server::build_gateway(&config, "test.yaml").unwrap();
    let running = scim_bridge::server::start(&config, gateway).await.unwrap();
    let sims: BTreeMap<&'static str, Box<dyn Simulator>> = BTreeMap::from([("prodpad", Box::new(sim) as _)]);
    Gw { running, client: reqwest::Client::new(), sims }
}

/// ProdPad's SCIM PATCH carries only what changed. A member disabled because ProdPad refused to take back
/// its group role (Admin -> Editor, no Editor seat) must not be enabled later with that Admin role: when
/// Entra disables and enables the user again, the enable sends the role its groups give (Editor) with it.
#[tokio::test]
async fn prodpad_enables_a_member_disabled_over_a_refused_group_role_with_its_lower_role() {
    let gw = start_prodpad_one_editor_seat().await;
    let app = "prodpad";
    let name = "up@example.com";
    let x = gw.create_user(app, name, &[]).await;
    let filler = gw.create_user(app, "seat@example.com", &[]).await;
    let admins = gw.create_group(app, "ProdPad Admins").await;
    let editors = gw.create_group(app, "ProdPad Editors").await;
    assert_eq!(gw.add(app, &editors, &[&filler]).await.status, 204);
    assert_eq!(gw.add(app, &admins, &[&x]).await.status, 204);
    assert_eq!(gw.add(app, &editors, &[&x]).await.status, 204);
    assert_eq!((gw.held_roles(app, name), gw.held_active(app, name)), (vec!["Admin".to_string()], Some(true)));

    // Leaving Admins makes x an Editor; the one Editor seat is taken, so ProdPad refuses: x is disabled.
    assert_eq!(gw.remove(app, &admins, &x).await.status, 204);
    assert_eq!((gw.held_roles(app, name), gw.held_active(app, name)), (vec!["Admin".to_string()], Some(false)));

    // The seat is freed; Entra disables, then enables the user: a change of `active` only.
    assert_eq!(gw.remove(app, &editors, &filler).await.status, 204);
    let active = |on: bool| json!([{"op": "Replace", "path": "active", "value": on}]);
    assert_eq!(gw.patch(app, &format!("/Users/{x}"), active(false)).await.status, 200);
    let enabled = gw.patch(app, &format!("/Users/{x}"), active(true)).await;
    let held = gw.held(app, name);
    assert!(
        !(held["active"] == json!(true) && held["role_type"] == json!("Admin")),
        "enabled with the Admin role ProdPad refused to take back: {held} (answer {} {})",
        enabled.status,
        enabled.body
    );
    assert_eq!(enabled.status, 200, "{}", enabled.body);
    assert_eq!((gw.held_roles(app, name), gw.held_active(app, name)), (vec!["Editor".to_string()], Some(true)));
}

/// A grant the vendor refuses for good leaves the member with less than its groups give: its membership
/// is recorded for a person and the others go on (Entra's 2xx confirms the membership); when every member
/// the vendor was asked about refused, the change stops with the vendor's refusal and records nothing.
#[tokio::test]
async fn a_refused_grant_is_left_to_a_person_unless_every_member_was_refused() {
    let gw = start().await;
    let app = "promapp";
    let flags = format!("{}/_sim/flags", gw.sims[app].root_url());
    let set_catalogue = |roles: &[&str]| {
        let body = json!({"patch_supported": false, "roles": roles});
        let req = gw.client.put(flags.clone()).json(&body);
        async move { assert!(req.send().await.unwrap().status().is_success()) }
    };
    let viewer = gw.create_user(app, "v@example.com", &["Editor"]).await;
    let plain = gw.create_user(app, "p@example.com", &["Editor"]).await;
    let alone = gw.create_user(app, "alone@example.com", &["Editor"]).await;
    let viewers = gw.create_group(app, "Process Viewers").await;
    assert_eq!(gw.add(app, &viewers, &[&viewer]).await.status, 204);
    let owners = gw.create_group(app, "Process Owners").await;
    set_catalogue(&["Viewer", "Editor"]).await;
    // viewer: Viewer -> Process Owner refused (a group role changed): disabled; plain: a grant refused.
    let a = gw.add(app, &owners, &[&viewer, &plain]).await;
    assert_eq!(a.status, 204, "{}", a.body);
    assert_eq!(gw.members(app, &owners).await, [viewer.clone(), plain.clone()]);
    assert_eq!(gw.held_active(app, "v@example.com"), Some(false));
    assert_eq!(
        (gw.held_active(app, "p@example.com"), gw.held_roles(app, "p@example.com")),
        (Some(true), vec!["Editor".to_string()])
    );
    let audit = gw.audit().await;
    let refused =
        audit.iter().find(|e| e.operation == "group-role" && e.resource_id.as_deref() == Some(&plain)).unwrap();
    assert_eq!((refused.outcome.as_str(), refused.status), ("needs_manual_action", 400), "{refused:?}");
    assert!(refused.detail.as_deref().unwrap_or("").contains("membership is recorded"), "{refused:?}");
    let group = audit.iter().find(|e| e.resource_id.as_deref() == Some(&owners)).unwrap();
    assert_eq!((group.outcome.as_str(), group.status), ("ok", 204), "{group:?}");
    assert!(group.detail.as_deref().unwrap_or("").contains("1 member(s) refused"), "{group:?}");

    // Only one member, refused: not a 204.
    let a = gw.add(app, &owners, &[&alone]).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(gw.members(app, &owners).await, [viewer.clone(), plain.clone()], "nothing recorded");
    let audit = gw.audit().await;
    let group = audit.iter().find(|e| e.resource_id.as_deref() == Some(&owners)).unwrap();
    assert_eq!((group.outcome.as_str(), group.status), ("needs_manual_action", 400), "{group:?}");
    let refused =
        audit.iter().find(|e| e.operation == "group-role" && e.resource_id.as_deref() == Some(&alone)).unwrap();
    assert!(refused.detail.as_deref().unwrap_or("").contains("not recorded"), "{refused:?}");
}

/// Group changes with overlapping members and user changes, all at once: none waits for another forever
/// (the lock order), and afterwards every user holds at the vendor the role its final groups give.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_group_and_user_changes_end_consistent() {
    let gw = std::sync::Arc::new(start().await);
    let app = "promapp";
    let mut uids = Vec::new();
    for i in 0..6 {
        uids.push(gw.create_user(app, &format!("c{i}@example.com"), &["Editor"]).await);
    }
    let owners = gw.create_group(app, "Process Owners").await;
    let viewers = gw.create_group(app, "Process Viewers").await;
    let mut tasks = Vec::new();
    for round in 0..24usize {
        let (gw, uids, owners, viewers) = (gw.clone(), uids.clone(), owners.clone(), viewers.clone());
        tasks.push(tokio::spawn(async move {
            let group = if round % 2 == 0 { &owners } else { &viewers };
            let (a, b) = (&uids[round % 6], &uids[(round * 5 + 1) % 6]);
            match round % 4 {
                0 | 1 => gw.add(app, group, &[a, b]).await.status,
                2 => gw.remove(app, group, a).await.status,
                _ => {
                    let ops = json!([{"op": "Replace", "path": "name.givenName", "value": format!("R{round}")}]);
                    gw.patch(app, &format!("/Users/{a}"), ops).await.status
                }
            }
        }));
    }
    // A guard against a deadlock hanging the suite, not a timing check: the changes take milliseconds.
    let all = tokio::time::timeout(std::time::Duration::from_secs(120), futures_join(tasks)).await;
    let statuses = all.expect("no change waits forever for another");
    assert!(statuses.iter().all(|s| matches!(s, 200 | 204)), "{statuses:?}");
    let (in_owners, in_viewers) = (gw.members(app, &owners).await, gw.members(app, &viewers).await);
    for (i, uid) in uids.iter().enumerate() {
        let want = if in_owners.contains(uid) {
            "Process Owner"
        } else if in_viewers.contains(uid) {
            "Viewer"
        } else {
            "Editor"
        };
        assert_eq!(gw.held_roles(app, &format!("c{i}@example.com")), [want], "c{i}");
    }
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<u16>>) -> Vec<u16> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// Reconcile compares each user with the role its groups give (and Promapp's Default Access rule), so it
/// finds nothing to repair in what the gateway set, and repairs a group role changed behind its back.
#[tokio::test]
async fn reconcile_keeps_group_roles() {
    use scim_bridge::reconcile::{PassOptions, Resolution};
    let gw = start().await;
    let pass = |app: &'static str| {
        let gateway = gw.running.gateway.clone();
        async move {
            let app = gateway.apps[app].clone();
            let opts =
                PassOptions { mode: scim_bridge::config::ReconcileMode::Enforce, dry_run: false, max_repairs: 10 };
            gateway.reconcile(&app, &opts, false, &|_| {}).await
        }
    };
    let owner = gw.create_user("promapp", "owner@example.com", &["Editor"]).await;
    let g = gw.create_group("promapp", "Process Owners").await;
    assert_eq!(gw.add("promapp", &g, &[&owner]).await.status, 204);
    let da = gw.create_user("promapp", "da-later@example.com", &["Editor"]).await;
    assert_eq!(gw.patch("promapp", &format!("/Users/{da}"), set_roles(&["Default Access"])).await.status, 200);
    let editor = gw.create_user("prodpad", "ed-group@example.com", &[]).await;
    let e = gw.create_group("prodpad", "ProdPad Editors").await;
    assert_eq!(gw.add("prodpad", &e, &[&editor]).await.status, 204);
    for app in ["promapp", "prodpad"] {
        let report = pass(app).await;
        assert!(report.findings.is_empty() && report.unchecked.is_empty(), "{app}: {report:?}");
    }

    // Someone makes the member an Admin in ProdPad itself: reconcile gives it its group's role back.
    let vendor_id = gw.held("prodpad", "ed-group@example.com")["id"].as_str().unwrap().to_string();
    let scim = format!("{}{}", gw.sims["prodpad"].root_url(), adapter_prodpad::sim::DEMO_SCIM_PATH);
    let r = gw
        .client
        .patch(format!("{scim}/Users/{vendor_id}"))
        .bearer_auth("pp-cred")
        .json(&patch_body(json!([{"op": "replace", "path": "roles", "value": [{"value": "Admin"}]}])))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(gw.held_roles("prodpad", "ed-group@example.com"), ["Admin"]);
    let report = pass("prodpad").await;
    assert_eq!(report.findings.len(), 1, "{report:?}");
    assert_eq!(report.findings[0].resolution, Resolution::Repaired, "{report:?}");
    assert_eq!(gw.held_roles("prodpad", "ed-group@example.com"), ["Editor"]);
}

#[tokio::test]
async fn members_must_be_this_apps_users() {
    let gw = start().await;
    let other_user = gw.create_user("prodpad", "elsewhere@example.com", &[]).await;
    let app = "promapp";
    let g = gw.create_group(app, "Process Owners").await;
    let other_group = gw.create_group(app, "Everyone").await;
    let calls = gw.sims[app].counters().requests;
    for member in [other_user.as_str(), other_group.as_str(), "no-such-id", "../../Users"] {
        let a = gw.add(app, &g, &[member]).await;
        assert_eq!(a.status, 400, "{member}: {}", a.body);
        assert_eq!(a.body["scimType"], "invalidValue", "{}", a.body);
    }
    assert_eq!(gw.sims[app].counters().requests, calls, "no vendor call for a refused member");
    assert!(gw.members(app, &g).await.is_empty());
    let refused = gw.audit().await.into_iter().find(|e| e.resource_id.as_deref() == Some(&g)).unwrap();
    assert_eq!(refused.outcome, "rejected", "refusals are audited: {refused:?}");
    // Discovery says this app has groups (the gateway keeps them).
    let types = gw.call(app, Method::GET, "/ResourceTypes", None).await;
    assert!(types.body.to_string().contains("\"Group\""), "{}", types.body);
}

#[tokio::test]
async fn group_roles_config_errors_name_key_and_file() {
    let hash = common::sha("t");
    let cases = [
        (
            "prodpad",
            "    mode: scim\n    base_url: https://pp.example/scim\n    api_key: k\n",
            "Owner",
            "apps.a.group_roles[0].role",
        ),
        ("promapp", "    access_token: t\n", "Default Access", "apps.a.group_roles[0].role"),
        (
            "promapp",
            "    access_token: t\n    role_mode: preserve\n",
            "Process Owner",
            "apps.a: app a (promapp): `role_mode`: preserve cannot be combined with `group_roles`",
        ),
        (
            "prompt",
            "    auth_code: c\n    default_department: D\n    default_section: S\n",
            "Admin",
            "apps.a.group_roles[0].role",
        ),
        ("sandbox", "", "Admin", "apps.a.group_roles"),
        ("prodpad", "    mode: rest\n    api_key: k\n", "Admin", "apps.a.group_roles[0].role: rest mode cannot"),
        (
            "prodpad",
            "    mode: scim\n    base_url: https://pp.example/scim\n    api_key: k\n",
            "Admin",
            "apps.a.group_roles[0].role: scim_roles is off (the default)",
        ),
    ];
    for (vendor, options, role, key) in cases {
        let yaml = format!(
            "apps:\n  a:\n    type: {vendor}\n    token_sha256: {hash}\n{options}    group_roles:\n      - group: G\n        role: {role}\n"
        );
        let config = Config::from_yaml(&yaml, "proxy.yaml").unwrap();
        let err = scim_bridge::server::build_gateway(&config, "proxy.yaml").expect_err(vendor);
        // The error carries the file and the key, and says them in that order.
        assert_eq!(err.file().as_deref(), Some("proxy.yaml"), "{vendor}: {err}");
        let at = err.key().unwrap_or_default();
        assert!(at.starts_with("apps.a") && key.starts_with(&at), "{vendor}: key {at}: {err}");
        let err = err.to_string();
        assert!(err.contains(key) && err.starts_with("proxy.yaml: "), "{vendor}: {err}");
    }
}

/// A rename can move a group in the order of precedence without changing the role it maps to: with
/// Admins → Admin, Editors → Editor, Leads → Admin, a member of Leads and Editors is an Editor (Editors
/// comes first); renaming Leads to Admins puts the group first, and the member becomes an Admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_that_moves_a_group_up_the_precedence_changes_its_members_roles() {
    let gw = start().await;
    let name = "lead@example.com";
    let user = gw.create_user("prodpad", name, &[]).await;
    let leads = gw.create_group("prodpad", "ProdPad Leads").await;
    let editors = gw.create_group("prodpad", "ProdPad Editors").await;
    assert_eq!(gw.add("prodpad", &leads, &[&user]).await.status, 204);
    assert_eq!(gw.add("prodpad", &editors, &[&user]).await.status, 204);
    assert_eq!(gw.held_roles("prodpad", name), ["Editor"], "Editors comes before Leads");
    let rename = json!([{"op": "Replace", "path": "displayName", "value": "ProdPad Admins"}]);
    assert_eq!(gw.patch("prodpad", &format!("/Groups/{leads}"), rename).await.status, 204);
    assert_eq!(gw.held_roles("prodpad", name), ["Admin"], "now the first mapped group");
}
