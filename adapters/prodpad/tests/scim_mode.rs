//! ProdPad scim mode against the simulator's SCIM face: the round trip, attribute stripping, delete modes,
//! patch strategies, duplicates and a refused key.

mod common;

use adapter_api::{ErrorKind, MultiValue};
use common::*;
use serde_json::json;
use simkit::Simulator;

#[tokio::test]
async fn round_trip_create_find_patch_delete() {
    let sim = scim_sim().await;
    let pp = scim_adapter(&sim, json!({}));
    let caps = pp.capabilities();
    assert!(caps.update_users && caps.hard_delete && !caps.groups);

    let mut before = user("Sam@x.io", "Sam", "Poe", None);
    before.external_id = Some("ext-1".into());
    before.phone_numbers = vec![MultiValue { value: Some("555".into()), ..MultiValue::default() }];
    before.title = Some("PM".into());
    let id = pp.create_user(&before).await.unwrap();
    let created = sim.user_by_user_name("sam@x.io").unwrap();
    assert_eq!(created.id, id);
    assert_eq!(created.external_id, None, "externalId is not sent by default");

    let sent = sim.scim_bodies();
    let keys: Vec<&String> = sent[0].as_object().unwrap().keys().collect();
    for stripped in ["phoneNumbers", "title", "externalId"] {
        assert!(!sent[0].as_object().unwrap().contains_key(stripped), "{stripped} forwarded: {keys:?}");
    }

    let found = pp.find_user("SAM@x.io").await.unwrap().unwrap();
    assert_eq!(found.vendor_id, id);
    assert_eq!(pp.get_user(&id).await.unwrap().user.family_name(), Some("Poe"));

    let mut after = before.clone();
    after.name.as_mut().unwrap().family_name = Some("Poe-Smith".into());
    after.active = false;
    pp.update_user(&id, &before, &after).await.unwrap();
    let patched = sim.user_by_user_name("sam@x.io").unwrap();
    assert_eq!(patched.family_name.as_deref(), Some("Poe-Smith"));
    assert!(!patched.active);
    let last = sim.scim_bodies().pop().unwrap();
    assert!(last.get("Operations").is_some(), "passthrough sends a PATCH: {last}");

    pp.delete_user(&id, &after).await.unwrap();
    assert!(sim.user_by_user_name("sam@x.io").is_none());
    assert_eq!(pp.get_user(&id).await.unwrap_err().kind(), &ErrorKind::NotFound);
    assert!(pp.find_user("sam@x.io").await.unwrap().is_none());
}

#[tokio::test]
async fn disable_mode_put_merge_and_external_id_options() {
    let sim = scim_sim().await;
    let pp =
        scim_adapter(&sim, json!({"delete_mode": "disable", "patch_strategy": "put_merge", "send_external_id": true}));
    assert!(!pp.capabilities().hard_delete);
    let mut u = user("kim@x.io", "Kim", "Ro", None);
    u.external_id = Some("ext-9".into());
    let id = pp.create_user(&u).await.unwrap();
    assert_eq!(sim.user_by_user_name("kim@x.io").unwrap().external_id.as_deref(), Some("ext-9"));
    pp.delete_user(&id, &u).await.unwrap();
    let held = sim.user_by_user_name("kim@x.io").unwrap();
    assert!(!held.active, "disable mode keeps the record, inactive");
    let last = sim.scim_bodies().pop().unwrap();
    assert_eq!(last["active"], false, "put_merge sends the full resource: {last}");
}

#[tokio::test]
async fn duplicates_conflict_and_a_revoked_key_is_unauthorized() {
    let sim = scim_sim().await;
    let pp = scim_adapter(&sim, json!({}));
    pp.create_user(&user("d@x.io", "D", "Up", None)).await.unwrap();
    let err = pp.create_user(&user("D@X.IO", "D", "Up", None)).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Conflict, "{err}");

    sim.revoke_key(KEY);
    sim.reset_counters();
    let err = pp.find_user("d@x.io").await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Unauthorized, "{err}");
    assert!(err.detail().contains("Profile Settings > API key"), "{err}");
    assert_eq!(sim.counters().requests, 1, "401 is not retried");
    let report = pp.probe().await.unwrap();
    assert!(!report.credential_accepted);
}

#[tokio::test]
async fn scim_mode_requires_base_url() {
    let err =
        adapter_prodpad::build("pp", json!({"mode": "scim", "api_key": KEY}), fast_limits()).err().unwrap().to_string();
    assert!(err.contains("`base_url`"), "{err}");
    let sim = scim_sim().await;
    let pp = scim_adapter(&sim, json!({}));
    let report = pp.probe().await.unwrap();
    assert!(report.reachable && report.credential_accepted, "{report:?}");
    assert!(report.notes.is_empty(), "{report:?}");
    // A role_map that scim mode would ignore (roles are off by default) is said by `check` and /readyz.
    let mapped = scim_adapter(&sim, json!({"role_map": {"Boss": "Admin"}}));
    let report = mapped.probe().await.unwrap();
    assert!(report.notes.iter().any(|n| n.is_warning() && n.text.contains("scim_roles is off")), "{report:?}");
    let on = scim_adapter(&sim, json!({"role_map": {"Boss": "Admin"}, "scim_roles": true}));
    assert!(on.probe().await.unwrap().notes.is_empty());
}

/// With PATCH switched off at ProdPad, passthrough is refused as unsupported (never faked) and put_merge
/// still updates; a blocked key is a 403 the adapter reports as a refused credential, never retried.
#[tokio::test]
async fn patch_off_and_a_blocked_key() {
    let sim = scim_sim().await;
    sim.set_patch_supported(false);
    let passthrough = scim_adapter(&sim, json!({"patch_strategy": "passthrough"}));
    let merging = scim_adapter(&sim, json!({"patch_strategy": "put_merge"}));
    let before = user("pat@x.io", "Pat", "Lee", None);
    let id = passthrough.create_user(&before).await.unwrap();
    let mut after = before.clone();
    after.name.as_mut().unwrap().family_name = Some("Lee-Ng".into());
    let err = passthrough.update_user(&id, &before, &after).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Unsupported, "{err}");
    merging.update_user(&id, &before, &after).await.unwrap();
    assert_eq!(sim.user_by_user_name("pat@x.io").unwrap().family_name.as_deref(), Some("Lee-Ng"));

    sim.block_key(KEY);
    sim.reset_counters();
    let err = merging.find_user("pat@x.io").await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Unauthorized, "{err}");
    assert_eq!(sim.counters().requests, 1, "403 is not retried");
    assert!(!merging.probe().await.unwrap().credential_accepted);
}

/// The SCIM face's PATCH runs on the protocol crate's engine but keeps ProdPad's refusals: the PatchOp
/// schema is required, only the face's paths are taken, and booleans must be JSON booleans.
#[tokio::test]
async fn the_scim_face_patch_keeps_its_refusals() {
    let sim = scim_sim().await;
    let id = sim.seed("lee@x.io", "Lee", adapter_prodpad::model::Role::Reviewer);
    let url = format!("{}/Users/{id}", sim.scim_base().unwrap());
    let http = reqwest::Client::new();
    let patch = |body: serde_json::Value| http.patch(&url).bearer_auth(KEY).json(&body).send();
    let schema = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
    let refused = [
        (json!({"Operations": [{"op": "replace", "path": "active", "value": false}]}), "invalidSyntax"),
        (
            json!({"schemas": [schema], "Operations": [{"op": "replace", "path": "timezone", "value": "UTC"}]}),
            "invalidPath",
        ),
        (json!({"schemas": [schema], "Operations": [{"op": "replace", "value": {"title": "PM"}}]}), "invalidPath"),
        (
            json!({"schemas": [schema], "Operations": [{"op": "replace", "path": "active", "value": "False"}]}),
            "invalidValue",
        ),
    ];
    for (body, scim_type) in refused {
        let r = patch(body.clone()).await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        assert_eq!(r.json::<serde_json::Value>().await.unwrap()["scimType"], scim_type, "{body}");
    }
    assert!(sim.user_by_user_name("lee@x.io").unwrap().active, "a refused PATCH changes nothing");

    let ops = json!([
        {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "lee@y.io"},
        {"op": "replace", "value": {"active": false, "name": {"givenName": "Lee"}}}
    ]);
    let r = patch(json!({"schemas": [schema], "Operations": ops})).await.unwrap();
    assert_eq!(r.status(), 200);
    let held = sim.user_by_user_name("lee@x.io").unwrap();
    assert_eq!((held.email.as_str(), held.active, held.given_name.as_deref()), ("lee@y.io", false, Some("Lee")));
}
