//! Black-box: the gateway in front of each vendor simulator (as `scim-bridge demo` runs them), with the
//! simulator's state checked after each Entra step.

mod common;

use common::url_encode;
use reqwest::Method;
use scim_bridge_devkit::demo;
use serde_json::{json, Value};

const TOKEN: &str = "vendor-test-token";

struct Vendors {
    demo: demo::Demo,
    client: reqwest::Client,
}

async fn start() -> Vendors {
    let demo = demo::start("127.0.0.1:0".parse().unwrap(), TOKEN, None).await.expect("demo starts");
    Vendors { demo, client: reqwest::Client::new() }
}

impl Vendors {
    async fn call(&self, app: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.demo.app_url(app))).bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.header("content-type", "application/scim+json").body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    fn vendor_user(&self, app: &str, user_name: &str) -> Option<Value> {
        let (_, sim) = self.demo.sims.iter().find(|(a, _)| a == app)?;
        sim.users_json().into_iter().find(|u| {
            ["userName", "email", "username"]
                .iter()
                .any(|k| u.get(*k).and_then(Value::as_str).is_some_and(|v| v.eq_ignore_ascii_case(user_name)))
        })
    }
}

fn entra_user(user_name: &str, role: Option<&str>) -> Value {
    let mut u = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "externalId": format!("ext-{user_name}"),
        "userName": user_name,
        "active": true,
        "emails": [{"primary": true, "type": "work", "value": user_name}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "Given Family", "familyName": "Family", "givenName": "Given"},
        "phoneNumbers": [{"type": "mobile", "value": "+61 400 000 000"}],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Finance", "employeeNumber": "7"},
        "roles": []
    });
    if let Some(r) = role {
        u["roles"] = json!([{"primary": true, "type": "WindowsAzureActiveDirectoryRole", "value": r}]);
    }
    u
}

fn patch(ops: Value) -> Option<Value> {
    Some(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops}))
}

fn active(u: &Value) -> Option<bool> {
    u.get("active").and_then(Value::as_bool)
}

#[test]
fn every_vendor_of_the_registry_has_a_simulator() {
    // The registry loops below would silently skip a vendor built without one.
    let simulated = demo::simulated_types();
    for vendor in scim_bridge::vendors::VENDORS.iter().filter(|v| v.has_limits()) {
        assert!(simulated.contains(&vendor.type_name()), "{} has no simulator", vendor.type_name());
    }
    assert!(!simulated.is_empty());
}

#[tokio::test]
async fn each_vendor_sees_the_entra_lifecycle() {
    let v = start().await;
    // Every vendor of the registry with a simulator: a new vendor runs these without an edit here.
    for (app, spec) in demo::simulated() {
        let capabilities = v.demo.running.gateway.apps[app].adapter.capabilities();
        let user_name = format!("life-{app}@example.com");
        // Test Connection: a probe that cannot exist, answered through the vendor.
        let (s, b) = v
            .call(
                app,
                Method::GET,
                &format!("/Users?filter={}", url_encode("userName eq \"0f8fad5b-d9cb-469f-a165-70867728950e\"")),
                None,
            )
            .await;
        assert_eq!((s, b["totalResults"].clone()), (200, json!(0)), "{app}: {b}");

        let role = spec.demo_role;
        let (s, created) = v.call(app, Method::POST, "/Users", Some(entra_user(&user_name, role))).await;
        assert_eq!(s, 201, "{app}: {created}");
        let id = created["id"].as_str().unwrap().to_string();
        let at_vendor = v.vendor_user(app, &user_name).unwrap_or_else(|| panic!("{app}: vendor has no {user_name}"));
        assert_ne!(active(&at_vendor), Some(false), "{app}: {at_vendor}");
        // Stripped attributes are kept for Entra, not sent to the vendor.
        assert!(at_vendor.get("phoneNumbers").is_none(), "{app}: phone numbers leaked to the vendor: {at_vendor}");
        let (_, back) = v.call(app, Method::GET, &format!("/Users/{id}"), None).await;
        assert_eq!(back["phoneNumbers"][0]["value"], "+61 400 000 000", "{app}: Entra reads back what it wrote");
        assert_eq!(back["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"], "Finance");

        // Update a supported attribute.
        let (s, _) = v
            .call(
                app,
                Method::PATCH,
                &format!("/Users/{id}"),
                patch(json!([{"op": "Replace", "path": "name.familyName", "value": "Renamed"}])),
            )
            .await;
        assert!(s == 200 || s == 204, "{app}: {s}");
        let at_vendor = v.vendor_user(app, &user_name).unwrap();
        assert!(at_vendor.to_string().contains("Renamed"), "{app}: {at_vendor}");

        // Disable ("False" string), vendor shows inactive; re-enable.
        let (s, _) = v
            .call(
                app,
                Method::PATCH,
                &format!("/Users/{id}"),
                patch(json!([{"op": "Replace", "path": "active", "value": "False"}])),
            )
            .await;
        assert!(s == 200 || s == 204, "{app}: {s}");
        assert_eq!(active(&v.vendor_user(app, &user_name).unwrap()), Some(false), "{app}");
        let (s, _) = v
            .call(
                app,
                Method::PATCH,
                &format!("/Users/{id}"),
                patch(json!([{"op": "replace", "path": "active", "value": true}])),
            )
            .await;
        assert!(s == 200 || s == 204, "{app}: {s}");
        assert_eq!(active(&v.vendor_user(app, &user_name).unwrap()), Some(true), "{app}");

        // Delete: gone for Entra; hard-deleted (ProdPad SCIM) or disabled (Promapp, PROMPT) at the vendor.
        let (s, _) = v.call(app, Method::DELETE, &format!("/Users/{id}"), None).await;
        assert_eq!(s, 204, "{app}");
        assert_eq!(v.call(app, Method::GET, &format!("/Users/{id}"), None).await.0, 404);
        let (_, f) = v
            .call(
                app,
                Method::GET,
                &format!("/Users?filter={}", url_encode(&format!("userName eq \"{user_name}\""))),
                None,
            )
            .await;
        assert_eq!(f["totalResults"], 0, "{app}: a deleted user must not come back through the filter: {f}");
        match (capabilities.hard_delete, v.vendor_user(app, &user_name)) {
            (true, None) => {}
            (true, Some(u)) => assert_eq!(active(&u), Some(false), "{app}: {u}"),
            (false, Some(u)) => {
                assert_eq!(active(&u), Some(false), "{app}: disable-only vendor keeps it disabled: {u}")
            }
            (false, None) => panic!("{app}: a disable-only vendor lost the record"),
        }

        // Re-assignment: Entra creates the same userName again; the vendor record is re-activated, not duplicated.
        let (s, again) = v.call(app, Method::POST, "/Users", Some(entra_user(&user_name, role))).await;
        assert_eq!(s, 201, "{app}: {again}");
        assert_eq!(active(&v.vendor_user(app, &user_name).unwrap()), Some(true), "{app}");
        let (_, sim) = v.demo.sims.iter().find(|(a, _)| a == app).unwrap();
        let twins = sim
            .users_json()
            .iter()
            .filter(|u| u.to_string().to_lowercase().contains(&user_name.to_lowercase()))
            .count();
        assert_eq!(twins, 1, "{app}: no duplicate at the vendor");
    }
}

#[tokio::test]
async fn vendors_without_groups_answer_group_requests_clearly() {
    let v = start().await;
    // Every vendor of the registry with a simulator and no groups: a new vendor runs these without an edit.
    let without_groups: Vec<&str> = demo::simulated_types()
        .into_iter()
        .filter(|app| !v.demo.running.gateway.apps[*app].adapter.capabilities().groups)
        .collect();
    assert!(!without_groups.is_empty());
    for app in without_groups {
        let (s, b) = v.call(app, Method::POST, "/Groups", Some(json!({"displayName": "g"}))).await;
        assert_eq!(s, 501, "{app}: {b}");
        assert_eq!(b["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error");
        assert!(b["detail"].as_str().unwrap().contains("groups"), "{app}: {b}");
        let (s, b) =
            v.call(app, Method::GET, "/Groups?excludedAttributes=members&filter=displayName+eq+%22x%22", None).await;
        assert_eq!(
            (s, b["totalResults"].clone()),
            (200, json!(0)),
            "{app}: Test Connection's group probe still passes"
        );
        let (_, types) = v.call(app, Method::GET, "/ResourceTypes", None).await;
        assert_eq!(types["totalResults"], 1, "{app}: only User is advertised");
        let (_, spc) = v.call(app, Method::GET, "/ServiceProviderConfig", None).await;
        assert_eq!(spc["patch"]["supported"], true, "{app}: users can be updated");
        assert_eq!(v.call(app, Method::GET, "/Groups/x", None).await.0, 404);
    }
}

#[tokio::test]
async fn promapp_refuses_default_access_users_and_prompt_applies_department() {
    let v = start().await;
    let (s, b) =
        v.call("promapp", Method::POST, "/Users", Some(entra_user("default@example.com", Some("msiam_access")))).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["scimType"], "invalidValue");
    assert!(b["detail"].as_str().unwrap().to_lowercase().contains("role"), "{b}");
    assert!(v.vendor_user("promapp", "default@example.com").is_none());
    let log = v.demo.running.gateway.store.audit_log(&Default::default()).await.unwrap();
    assert!(log.iter().any(|e| e.outcome == "invalid" && e.status == 400), "the refusal is audited");

    let (s, _) = v.call("prompt", Method::POST, "/Users", Some(entra_user("dept@example.com", None))).await;
    assert_eq!(s, 201);
    let u = v.vendor_user("prompt", "dept@example.com").unwrap();
    assert_eq!(u["department"], "Corporate Services", "{u}");
    assert_eq!(u["section"], "All Staff", "{u}");
}

#[tokio::test]
async fn two_prompt_organisations_side_by_side() {
    use scim_bridge::config::{AppConfig, Config, LimitsConfig};
    let mut apps = std::collections::BTreeMap::new();
    let mut sims = Vec::new();
    for (org, dept) in [("north", "North Office"), ("south", "South Office")] {
        // PROMPT applies the organisation's default department itself; the gateway config repeats it.
        let sim = adapter_prompt::sim::spawn(adapter_prompt::sim::SimOptions {
            auth_codes: vec![format!("{org}-code")],
            org: adapter_prompt::sim::OrgSettings { default_department: dept.into(), ..Default::default() },
            ..Default::default()
        })
        .await
        .unwrap();
        let mut options = serde_json::Map::new();
        options.insert("base_url".into(), json!(sim.scim_base()));
        options.insert("auth_code".into(), json!(format!("{org}-code")));
        options.insert("default_department".into(), json!(dept));
        options.insert("default_section".into(), json!("All Staff"));
        apps.insert(
            org.to_string(),
            AppConfig {
                vendor: "prompt".into(),
                token_sha256: common::sha(&format!("{org}-token")),
                limits: LimitsConfig::default(),
                ip_allow: Vec::new(),
                reconcile: Default::default(),
                group_roles: Vec::new(),
                options,
            },
        );
        sims.push((org, sim));
    }
    let config = Config::with_apps("127.0.0.1:0".parse().unwrap(), apps);
    config.validate("test").unwrap();
    let running = scim_bridge::server::start(&config, scim_bridge::server::build_gateway(&config, "test").unwrap())
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let base = |org: &str| format!("http://{}/scim/{org}/v2", running.addr);
    let r = client
        .post(format!("{}/Users", base("north")))
        .bearer_auth("north-token")
        .json(&entra_user("same@example.com", None))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // The other organisation's token does not open this one, and its store and vendor are separate.
    assert_eq!(
        client.get(format!("{}/Users", base("north"))).bearer_auth("south-token").send().await.unwrap().status(),
        401
    );
    let r = client
        .post(format!("{}/Users", base("south")))
        .bearer_auth("south-token")
        .json(&entra_user("same@example.com", None))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "the same user in another organisation is a different user");
    let north = sims[0].1.users();
    let south = sims[1].1.users();
    assert_eq!((north.len(), south.len()), (1, 1));
    assert_eq!(north[0]["department"], "North Office");
    assert_eq!(south[0]["department"], "South Office");
}

#[tokio::test]
async fn a_user_deleted_at_the_vendor_can_be_created_again() {
    let v = start().await;
    let user_name = "vanished@example.com";
    let (s, created) = v.call("prodpad", Method::POST, "/Users", Some(entra_user(user_name, None))).await;
    assert_eq!(s, 201);
    let id = created["id"].as_str().unwrap().to_string();
    // An admin deletes the user in ProdPad itself.
    let vendor_id = v.vendor_user("prodpad", user_name).unwrap()["id"].as_str().unwrap().to_string();
    let (_, sim) = v.demo.sims.iter().find(|(a, _)| a == "prodpad").unwrap();
    let scim_base = format!("{}/api/v2/scim", sim.root_url());
    let r = v
        .client
        .delete(format!("{scim_base}/Users/{vendor_id}"))
        .bearer_auth(demo::demo_credential("prodpad"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    // Entra's next update learns it is gone (404), and its next lookup misses so it creates the user again.
    let (s, _) = v.call("prodpad", Method::PATCH, &format!("/Users/{id}"), patch(json!([{"op": "Replace", "path": "title", "value": "x"}, {"op": "Replace", "path": "name.givenName", "value": "New"}]))).await;
    assert_eq!(s, 404);
    let (_, f) = v
        .call(
            "prodpad",
            Method::GET,
            &format!("/Users?filter={}", url_encode(&format!("userName eq \"{user_name}\""))),
            None,
        )
        .await;
    assert_eq!(f["totalResults"], 0, "{f}");
    let (s, again) = v.call("prodpad", Method::POST, "/Users", Some(entra_user(user_name, None))).await;
    assert_eq!(s, 201, "{again}");
    assert!(v.vendor_user("prodpad", user_name).is_some());
}

/// PROMPT refuses a second user with an email already in use. Where PROMPT answers email filters
/// (`email_lookup: true`), Entra's create links the existing PROMPT user instead and brings it to Entra's
/// values; without it, the create fails with 409 uniqueness and nothing changes at PROMPT.
#[tokio::test]
async fn prompt_matches_an_existing_user_by_email_only_where_enabled() {
    use scim_bridge::config::{AppConfig, Config, LimitsConfig};
    let mut apps = std::collections::BTreeMap::new();
    let mut sims = Vec::new();
    for (app, email_lookup) in [("lookup", true), ("plain", false)] {
        let sim = adapter_prompt::sim::spawn(adapter_prompt::sim::SimOptions {
            auth_codes: vec![format!("{app}-code")],
            flags: adapter_prompt::sim::SimFlags { email_filter: true, ..Default::default() },
            ..Default::default()
        })
        .await
        .unwrap();
        // A user PROMPT already had before provisioning, under another userName.
        let legacy = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "jane.legacy",
            "active": true, "emails": [{"type": "work", "value": "Jane@example.com", "primary": true}]});
        let r = reqwest::Client::new()
            .post(format!("{}/Users", sim.scim_base()))
            .bearer_auth(format!("{app}-code"))
            .json(&legacy)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let mut options = serde_json::Map::new();
        options.insert("base_url".into(), json!(sim.scim_base()));
        options.insert("auth_code".into(), json!(format!("{app}-code")));
        options.insert("default_department".into(), json!("Corporate Services"));
        options.insert("default_section".into(), json!("All Staff"));
        options.insert("email_lookup".into(), json!(email_lookup));
        // PROMPT's default 1 request/s would make this test wait seconds for nothing.
        let limits = LimitsConfig { requests_per_second: Some(100.0), burst: Some(10), ..Default::default() };
        let token_sha256 = common::sha(&format!("{app}-token"));
        apps.insert(
            app.to_string(),
            AppConfig {
                vendor: "prompt".into(),
                token_sha256,
                limits,
                ip_allow: vec![],
                reconcile: Default::default(),
                group_roles: Vec::new(),
                options,
            },
        );
        sims.push(sim);
    }
    let config = Config::with_apps("127.0.0.1:0".parse().unwrap(), apps);
    config.validate("test").unwrap();
    let gateway = scim_bridge::server::build_gateway(&config, "test").unwrap();
    let store = gateway.store.clone();
    let running = scim_bridge::server::start(&config, gateway).await.unwrap();
    let client = reqwest::Client::new();
    let create = |app: &'static str| {
        client
            .post(format!("http://{}/scim/{app}/v2/Users", running.addr))
            .bearer_auth(format!("{app}-token"))
            .json(&entra_user("jane@example.com", None))
            .send()
    };

    let r = create("lookup").await.unwrap();
    assert_eq!(r.status(), 201, "matched by email");
    let users = sims[0].users();
    assert_eq!(users.len(), 1, "no second user: {users:?}");
    assert_eq!(users[0]["userName"], "jane@example.com", "brought to Entra's userName: {users:?}");
    let audit = store.audit_log(&Default::default()).await.unwrap();
    let adopt = audit.iter().find(|e| e.app == "lookup").unwrap();
    assert_eq!(adopt.operation, "adopt");
    assert!(adopt.detail.as_deref().unwrap().contains("matched by email jane@example.com"), "{adopt:?}");

    // A disabled PROMPT user holding the email (a former employee's, say) is never taken over.
    let former = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "bob.former",
        "active": false, "emails": [{"type": "work", "value": "bob@example.com", "primary": true}]});
    let r = client.post(format!("{}/Users", sims[0].scim_base())).bearer_auth("lookup-code").json(&former).send();
    assert_eq!(r.await.unwrap().status(), 201);
    let r = client
        .post(format!("http://{}/scim/lookup/v2/Users", running.addr))
        .bearer_auth("lookup-token")
        .json(&entra_user("bob@example.com", None))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("disabled"), "{body}");
    let bob = sims[0].users().into_iter().find(|u| u["userName"] == "bob.former").unwrap();
    assert_eq!(bob["active"], false, "left as it was: {bob}");

    // Two Entra users with one email, created at once: one links the PROMPT user, the other is refused.
    let shared = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "carol.legacy",
        "active": true, "emails": [{"type": "work", "value": "carol@example.com", "primary": true}]});
    let r = client.post(format!("{}/Users", sims[0].scim_base())).bearer_auth("lookup-code").json(&shared).send();
    assert_eq!(r.await.unwrap().status(), 201);
    let claimant = |user_name: &str| {
        let mut u = entra_user(user_name, None);
        u["emails"][0]["value"] = json!("carol@example.com");
        client.post(format!("http://{}/scim/lookup/v2/Users", running.addr)).bearer_auth("lookup-token").json(&u).send()
    };
    let (a, b) = tokio::join!(claimant("carol1@example.com"), claimant("carol2@example.com"));
    let mut statuses = [a.unwrap().status().as_u16(), b.unwrap().status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [201, 409], "exactly one links the vendor user");
    let carols = sims[0].users().into_iter().filter(|u| u.to_string().contains("carol")).count();
    assert_eq!(carols, 1, "one PROMPT user for carol");

    let r = create("plain").await.unwrap();
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["scimType"], "uniqueness", "{body}");
    let users = sims[1].users();
    assert_eq!((users.len(), users[0]["userName"].as_str()), (1, Some("jane.legacy")), "PROMPT unchanged");
}

/// ProdPad's REST fallback can create and read users but not change them: its app says PATCH is not
/// supported, and a PATCH is refused with a clear error rather than faked.
#[tokio::test]
async fn prodpad_rest_mode_advertises_no_patch() {
    use scim_bridge::config::{AppConfig, Config, LimitsConfig};
    let sim = adapter_prodpad::sim::spawn(adapter_prodpad::sim::SimOptions::default()).await;
    let mut options = serde_json::Map::new();
    options.insert("mode".into(), json!("rest"));
    options.insert("base_url".into(), json!(sim.rest_base()));
    options.insert("api_key".into(), json!("sim-key"));
    let mut apps = std::collections::BTreeMap::new();
    let token_sha256 = common::sha("rest-token");
    let limits = LimitsConfig::default();
    apps.insert(
        "pp".to_string(),
        AppConfig {
            vendor: "prodpad".into(),
            token_sha256,
            limits,
            ip_allow: vec![],
            reconcile: Default::default(),
            group_roles: Vec::new(),
            options,
        },
    );
    let config = Config::with_apps("127.0.0.1:0".parse().unwrap(), apps);
    let running = scim_bridge::server::start(&config, scim_bridge::server::build_gateway(&config, "test").unwrap())
        .await
        .unwrap();
    let base = format!("http://{}/scim/pp/v2", running.addr);
    let client = reqwest::Client::new();
    let spc: Value = client
        .get(format!("{base}/ServiceProviderConfig"))
        .bearer_auth("rest-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(spc["patch"]["supported"], false, "{spc}");
    let created =
        client.post(format!("{base}/Users")).bearer_auth("rest-token").json(&entra_user("rest@example.com", None));
    let created = created.send().await.unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let rename = patch(json!([{"op": "Replace", "path": "name.givenName", "value": "Other"}])).unwrap();
    let r = client.patch(format!("{base}/Users/{id}")).bearer_auth("rest-token").json(&rename).send().await.unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 501, "refused (rest_unsupported: error), not faked: {body}");
    assert_eq!(body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error");
}
