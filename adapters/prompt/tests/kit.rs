//! The PROMPT adapter against its simulator: the shared adapter test kit (passthrough and put_merge), then
//! PROMPT's own rules (attribute stripping, department/section, permissions-held disable, org switches,
//! delete passthrough, probe).

use std::sync::Arc;

use adapter_api::{Adapter, Enterprise, ErrorKind, MultiValue, Name, User};
use adapter_prompt::sim::{self, OrgSettings, SimFlags, SimHandle, SimOptions};
use async_trait::async_trait;
use serde_json::{json, Value};
use simkit::{SimFaults, Simulator};
use testkit::{self, AttrUpdate, Harness};

const CODE: &str = "prompt-sim-code";

fn build(sim: &SimHandle, extra: Value) -> Arc<dyn Adapter> {
    let mut cfg = json!({
        "base_url": sim.scim_base(), "auth_code": CODE,
        "default_department": "Corporate Services", "default_section": "All Staff"
    });
    if let (Some(obj), Some(more)) = (cfg.as_object_mut(), extra.as_object()) {
        obj.extend(more.clone());
    }
    adapter_prompt::build("prompt-test", cfg, testkit::test_outbound()).unwrap()
}

/// A user as Entra sends it: more attributes than PROMPT accepts (the strict simulator refuses extras).
fn sample(user_name: &str) -> User {
    let mut u = User::new(user_name);
    u.external_id = Some(format!("ext-{user_name}"));
    u.name = Some(Name { given_name: Some("Sam".into()), family_name: Some("Ray".into()), ..Default::default() });
    u.emails = vec![MultiValue {
        value: Some(user_name.into()),
        kind: Some("work".into()),
        primary: Some(true),
        display: None,
    }];
    u.title = Some("Policy Officer".into());
    u.phone_numbers = vec![MultiValue { value: Some("+61 3 5555".into()), ..Default::default() }];
    u.enterprise = Some(Enterprise { department: Some("Finance".into()), ..Default::default() });
    u
}

struct PromptHarness {
    sim: SimHandle,
    good: Arc<dyn Adapter>,
    bad: Arc<dyn Adapter>,
}

impl PromptHarness {
    async fn new(extra: Value) -> Self {
        let sim = sim::spawn(SimOptions::default()).await.unwrap();
        let good = build(&sim, extra.clone());
        let mut bad_cfg = extra;
        bad_cfg["auth_code"] = json!("wrong-code");
        let bad = build(&sim, bad_cfg);
        PromptHarness { sim, good, bad }
    }
}

#[async_trait]
impl Harness for PromptHarness {
    fn adapter(&self) -> Arc<dyn Adapter> {
        self.good.clone()
    }
    fn bad_credential_adapter(&self) -> Arc<dyn Adapter> {
        self.bad.clone()
    }
    async fn set_faults(&self, faults: SimFaults) {
        self.sim.set_faults(faults);
    }
    async fn sim_user(&self, user_name: &str) -> Option<Value> {
        self.sim.user(user_name)
    }
    fn sample_user(&self, user_name: &str) -> User {
        sample(user_name)
    }
    fn unknown_id(&self) -> String {
        "0000ffff-7a1e-4c0d-9000-00000000ffff".into()
    }
    fn updates(&self) -> Vec<AttrUpdate> {
        vec![
            AttrUpdate {
                name: "name.givenName",
                apply: |u| u.name.get_or_insert_with(Default::default).given_name = Some("Alex".into()),
                check: |v| v["name"]["givenName"] == "Alex",
            },
            AttrUpdate {
                name: "name.familyName",
                apply: |u| u.name.get_or_insert_with(Default::default).family_name = Some("Moss".into()),
                check: |v| v["name"]["familyName"] == "Moss",
            },
            AttrUpdate {
                name: "emails[type eq \"work\"].value",
                apply: |u| u.emails[0].value = Some(format!("new.{}", u.user_name)),
                check: |v| v["emails"][0]["value"].as_str().is_some_and(|m| m.starts_with("new.")),
            },
        ]
    }
}

#[tokio::test]
async fn kit_passthrough() {
    let h = PromptHarness::new(json!({})).await;
    testkit::run_all(&h).await;
    assert!(h.sim.counters().method("PATCH") > 0);
    assert_eq!(h.sim.counters().method("PUT"), 0);
}

#[tokio::test]
async fn kit_put_merge() {
    let h = PromptHarness::new(json!({"patch_strategy": "put_merge"})).await;
    h.sim.set_flags(SimFlags { patch_supported: false, ..SimFlags::default() });
    testkit::run_all(&h).await;
    assert_eq!(h.sim.counters().method("PATCH"), 0);
}

#[tokio::test]
async fn only_allowed_attributes_reach_prompt() {
    let h = PromptHarness::new(json!({})).await;
    let u = sample("strip@example.com");
    h.good.create_user(&u).await.expect("the strict simulator refuses any attribute not stripped");
    let rec = h.sim.user(&u.user_name).unwrap();
    assert!(rec.get("externalId").is_none() && rec.get("title").is_none(), "{rec}");

    let with_ext = build(&h.sim, json!({"send_external_id": true}));
    let u2 = sample("ext@example.com");
    with_ext.create_user(&u2).await.unwrap();
    assert_eq!(h.sim.user(&u2.user_name).unwrap()["externalId"], "ext-ext@example.com");
}

#[tokio::test]
async fn department_and_section_come_from_org_defaults_or_department_from() {
    let h = PromptHarness::new(json!({})).await;
    let u = sample("defaults@example.com");
    h.good.create_user(&u).await.unwrap();
    let rec = h.sim.user(&u.user_name).unwrap();
    assert_eq!((rec["department"].as_str(), rec["section"].as_str()), (Some("Corporate Services"), Some("All Staff")));

    let per_user = build(
        &h.sim,
        json!({"department_from": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"}),
    );
    let u2 = sample("finance@example.com");
    let id = per_user.create_user(&u2).await.unwrap();
    let rec = h.sim.user(&u2.user_name).unwrap();
    assert_eq!((rec["department"].as_str(), rec["section"].as_str()), (Some("Finance"), Some("All Staff")));

    let mut moved = u2.clone();
    moved.enterprise = Some(Enterprise { department: Some("Legal".into()), ..Default::default() });
    per_user.update_user(&id, &u2, &moved).await.unwrap();
    assert_eq!(h.sim.user(&u2.user_name).unwrap()["department"], "Legal");
    assert!(per_user.get_user(&id).await.unwrap().user.extra.is_empty(), "the extension is not echoed to Entra");
}

#[tokio::test]
async fn disable_of_a_user_holding_permissions_needs_manual_action() {
    for strategy in ["passthrough", "put_merge"] {
        let h = PromptHarness::new(json!({"patch_strategy": strategy})).await;
        let u = sample(&format!("holder-{strategy}@example.com"));
        let id = h.good.create_user(&u).await.unwrap();
        h.sim.set_has_permissions(&u.user_name, true);

        let mut off = u.clone();
        off.active = false;
        let err = h.good.update_user(&id, &u, &off).await.unwrap_err();
        assert_eq!(*err.kind(), ErrorKind::NeedsManualAction, "{strategy}: {err}");
        assert!(err.detail().contains("permissions") && err.detail().contains(&u.user_name), "{}", err.detail());
        let err = h.good.delete_user(&id, &u).await.unwrap_err();
        assert_eq!(*err.kind(), ErrorKind::NeedsManualAction, "{strategy}: {err}");
        assert!(!err.is_retryable());
        assert_eq!(h.sim.user(&u.user_name).unwrap()["active"], true);

        h.sim.set_has_permissions(&u.user_name, false);
        h.good.delete_user(&id, &u).await.unwrap();
        assert_eq!(h.sim.user(&u.user_name).unwrap()["active"], false);
    }
}

#[tokio::test]
async fn email_clash_on_create_is_a_conflict() {
    let h = PromptHarness::new(json!({})).await;
    let a = sample("one@example.com");
    h.good.create_user(&a).await.unwrap();
    let mut b = sample("two@example.com");
    b.emails[0].value = Some("ONE@example.com".into());
    let err = h.good.create_user(&b).await.unwrap_err();
    assert_eq!(*err.kind(), ErrorKind::Conflict, "{err}");
}

#[tokio::test]
async fn email_lookup_finds_the_user_holding_an_email_only_when_enabled() {
    let h = PromptHarness::new(json!({"email_lookup": true})).await;
    let off = build(&h.sim, json!({}));
    h.sim.set_flags(SimFlags { email_filter: true, ..SimFlags::default() });
    let created = h.good.create_user(&sample("holder@example.com")).await.unwrap();
    assert!(h.good.capabilities().find_by_email && !off.capabilities().find_by_email);
    let found = h.good.find_user_by_email("HOLDER@example.com").await.unwrap().expect("found by email");
    assert_eq!((found.vendor_id.as_str(), found.user.user_name.as_str()), (created.as_str(), "holder@example.com"));
    assert_eq!(h.good.find_user_by_email("nobody@example.com").await.unwrap(), None);
    let before = h.sim.counters().requests;
    assert_eq!(off.find_user_by_email("holder@example.com").await.unwrap(), None);
    assert_eq!(h.sim.counters().requests, before, "no vendor call when email_lookup is off");
    // A PROMPT that does not know the filter refuses it: that is an error, never a silent "no match".
    h.sim.set_flags(SimFlags::default());
    let err = h.good.find_user_by_email("holder@example.com").await.unwrap_err();
    assert_eq!(*err.kind(), ErrorKind::Invalid, "{err}");
}

#[tokio::test]
async fn provisioning_off_is_unauthorized_with_advice() {
    let h = PromptHarness::new(json!({})).await;
    h.sim.set_org(OrgSettings { provisioning_enabled: false, ..OrgSettings::default() });
    let err = h.good.find_user("x@example.com").await.unwrap_err();
    assert_eq!(*err.kind(), ErrorKind::Unauthorized);
    assert!(err.detail().contains("Automated User Provisioning"), "{}", err.detail());
    let report = h.good.probe().await.unwrap();
    assert!(!report.credential_accepted);

    let err = h.bad.find_user("x@example.com").await.unwrap_err();
    assert!(err.detail().contains("auth_code") && !err.detail().contains("wrong-code"), "{}", err.detail());
}

#[tokio::test]
async fn delete_passthrough_hard_deletes_or_reports_unsupported() {
    let h = PromptHarness::new(json!({"delete_mode": "passthrough"})).await;
    assert!(h.good.capabilities().hard_delete);
    let u = sample("del@example.com");
    let id = h.good.create_user(&u).await.unwrap();
    h.sim.set_flags(SimFlags { delete_disables: false, ..SimFlags::default() });
    let err = h.good.delete_user(&id, &u).await.unwrap_err();
    assert_eq!(*err.kind(), ErrorKind::Unsupported, "{err}");
    h.sim.set_flags(SimFlags::default());
    h.good.delete_user(&id, &u).await.unwrap();
    assert_eq!(h.sim.user(&u.user_name).unwrap()["active"], false);
}

#[tokio::test]
async fn probe_passes_and_echoes_the_org_defaults() {
    let h = PromptHarness::new(json!({})).await;
    let report = h.good.probe().await.unwrap();
    assert!(report.reachable && report.credential_accepted);
    assert!(report.notes.iter().any(|n| n.text.contains("Corporate Services") && n.text.contains("All Staff")));
    assert_eq!(h.sim.counters().method("GET"), 1);
    assert!(!h.good.capabilities().groups && !h.good.capabilities().hard_delete);
}
