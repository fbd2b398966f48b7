//! ProdPad rest mode against the simulator: create and read, seats, roles, duplicates, the refused
//! deprovisioning, credentials, HTTPS, paging and vendor trouble.

mod common;

use adapter_api::ErrorKind;
use adapter_prodpad::model::Role;
use adapter_prodpad::sim::SimOptions;
use common::*;
use serde_json::json;
use simkit::{SimFaults, Simulator};

#[tokio::test]
async fn create_then_get_and_find_by_email_ignoring_case() {
    let sim = rest_sim(SimOptions::default()).await;
    let pp = rest_adapter(&sim, json!({"timezone_default": "Europe/London"}));
    let id = pp.create_user(&user("Ann.Lee@Example.com", "Ann", "Lee", None)).await.unwrap();

    let held = sim.user_by_email("ann.lee@example.com").unwrap();
    assert_eq!(held.id, id);
    assert_eq!(held.display_name, "Ann Lee");
    assert_eq!(held.role_type, "Reviewer");
    assert_eq!(held.timezone.as_deref(), Some("Europe/London"));

    let got = pp.get_user(&id).await.unwrap();
    assert_eq!(got.user.user_name, "Ann.Lee@Example.com");
    assert_eq!(got.user.given_name(), Some("Ann"));
    assert_eq!(got.user.family_name(), Some("Lee"));

    let found = pp.find_user("ANN.LEE@example.COM").await.unwrap().unwrap();
    assert_eq!(found.vendor_id, id);
    assert!(pp.find_user("nobody@example.com").await.unwrap().is_none());
    assert!(pp.find_user("not-an-email").await.unwrap().is_none());
    assert_eq!(pp.get_user("99999").await.unwrap_err().kind(), &ErrorKind::NotFound);
    assert_eq!(pp.get_user("../etc").await.unwrap_err().kind(), &ErrorKind::NotFound);
}

#[tokio::test]
async fn paid_roles_fall_back_to_reviewer_when_no_seat_is_free() {
    let sim = rest_sim(SimOptions { admin_seats: 1, editor_seats: 0, ..SimOptions::default() }).await;
    let pp = rest_adapter(&sim, json!({"role_map": {"PM.Admin": "Admin", "PM.Editor": "Editor"}}));
    pp.create_user(&user("a1@x.io", "A", "One", Some("PM.Admin"))).await.unwrap();
    pp.create_user(&user("a2@x.io", "A", "Two", Some("PM.Admin"))).await.unwrap();
    pp.create_user(&user("e1@x.io", "E", "One", Some("PM.Editor"))).await.unwrap();
    assert_eq!(sim.user_by_email("a1@x.io").unwrap().role_type, "Admin");
    assert_eq!(sim.user_by_email("a2@x.io").unwrap().role_type, "Reviewer");
    assert_eq!(sim.user_by_email("e1@x.io").unwrap().role_type, "Reviewer");
}

#[tokio::test]
async fn a_refused_seat_is_invalid_with_the_vendor_detail() {
    let sim = rest_sim(SimOptions { admin_seats: 0, no_seat_forbidden: true, ..SimOptions::default() }).await;
    let pp = rest_adapter(&sim, json!({"role_map": {"Boss": "Admin"}}));
    let err = pp.create_user(&user("b@x.io", "B", "Oss", Some("Boss"))).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Invalid, "{err}");
    assert!(err.detail().contains("No seat available"), "{err}");
    assert!(sim.user_by_email("b@x.io").is_none());
}

#[tokio::test]
async fn role_map_then_role_default() {
    let sim = rest_sim(SimOptions { editor_seats: 5, ..SimOptions::default() }).await;
    let pp = rest_adapter(&sim, json!({"role_map": {"Writers": "editor"}, "role_default": "Reviewer"}));
    pp.create_user(&user("w@x.io", "W", "R", Some("writers"))).await.unwrap();
    pp.create_user(&user("u@x.io", "U", "N", Some("Unmapped"))).await.unwrap();
    pp.create_user(&user("n@x.io", "N", "O", None)).await.unwrap();
    assert_eq!(sim.user_by_email("w@x.io").unwrap().role_type, "Editor");
    assert_eq!(sim.user_by_email("u@x.io").unwrap().role_type, "Reviewer");
    assert_eq!(sim.user_by_email("n@x.io").unwrap().role_type, "Reviewer");

    let pp = rest_adapter(&sim, json!({"role_default": "Editor"}));
    pp.create_user(&user("d@x.io", "D", "E", Some("Anything"))).await.unwrap();
    assert_eq!(sim.user_by_email("d@x.io").unwrap().role_type, Role::Editor.as_str());
}

#[tokio::test]
async fn duplicate_email_is_a_conflict_ignoring_case() {
    let sim = rest_sim(SimOptions::default()).await;
    let pp = rest_adapter(&sim, json!({}));
    pp.create_user(&user("dup@x.io", "D", "Up", None)).await.unwrap();
    let err = pp.create_user(&user("DUP@X.io", "D", "Up", None)).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Conflict, "{err}");
    assert!(err.detail().contains("already in use"), "{err}");
    assert_eq!(sim.users().len(), 1);
}

#[tokio::test]
async fn a_user_name_that_is_not_an_email_is_refused_before_any_call() {
    let sim = rest_sim(SimOptions::default()).await;
    let pp = rest_adapter(&sim, json!({}));
    let err = pp.create_user(&user("jdoe", "J", "Doe", None)).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Invalid);
    assert!(err.detail().contains("userName"), "{err}");
    assert_eq!(sim.counters().requests, 0);
}

#[tokio::test]
async fn deprovisioning_is_refused_with_a_clear_detail_never_faked() {
    let sim = rest_sim(SimOptions::default()).await;
    let pp = rest_adapter(&sim, json!({}));
    let caps = pp.capabilities();
    assert!(!caps.update_users && !caps.hard_delete && !caps.groups);
    let before = user("gone@x.io", "Gone", "Soon", None);
    let id = pp.create_user(&before).await.unwrap();
    sim.reset_counters();

    let err = pp.delete_user(&id, &before).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Unsupported);
    for needle in ["gone@x.io", "by hand in ProdPad", "mode: scim"] {
        assert!(err.detail().contains(needle), "{needle}: {err}");
    }
    let mut disabled = before.clone();
    disabled.active = false;
    let err = pp.update_user(&id, &before, &disabled).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Unsupported);
    assert!(err.detail().contains("disable"), "{err}");
    let mut renamed = before.clone();
    renamed.name.as_mut().unwrap().family_name = Some("Later".into());
    assert_eq!(pp.update_user(&id, &before, &renamed).await.unwrap_err().kind(), &ErrorKind::Unsupported);

    // Attributes ProdPad does not keep: nothing to do at the vendor, so no refusal.
    let mut phone = before.clone();
    phone.phone_numbers = vec![adapter_api::MultiValue { value: Some("123".into()), ..Default::default() }];
    pp.update_user(&id, &before, &phone).await.unwrap();

    let manual = rest_adapter(&sim, json!({"rest_unsupported": "manual_queue"}));
    let err = manual.delete_user(&id, &before).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::NeedsManualAction);
    assert!(err.detail().contains("audit log") && err.detail().contains("by hand"), "{err}");

    assert_eq!(sim.counters().requests, 0, "refusals never reach ProdPad");
    assert!(sim.user_by_email("gone@x.io").unwrap().active);
}

#[tokio::test]
async fn a_revoked_key_is_unauthorized_and_not_retried() {
    let sim = rest_sim(SimOptions::default()).await;
    let pp = rest_adapter(&sim, json!({}));
    sim.revoke_key(KEY);
    sim.reset_counters();
    let err = pp.create_user(&user("k@x.io", "K", "Ey", None)).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Unauthorized);
    assert!(err.detail().contains("Profile Settings > API key"), "{err}");
    assert!(!err.is_retryable());
    let err = pp.find_user("k@x.io").await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Unauthorized);
    let c = sim.counters();
    assert_eq!((c.method("POST"), c.method("GET")), (1, 1), "{c:?}");

    let report = pp.probe().await.unwrap();
    assert!(report.reachable && !report.credential_accepted, "{report:?}");
}

#[tokio::test]
async fn the_key_never_appears_in_errors() {
    let sim = rest_sim(SimOptions::default()).await;
    let secret = "pp-wrong-key-5f2a";
    let cfg = json!({"mode": "rest", "base_url": sim.rest_base(), "api_key": secret});
    let pp = adapter_prodpad::build("prodpad-test", cfg, fast_limits()).unwrap();
    let err = pp.create_user(&user("s@x.io", "S", "K", None)).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Unauthorized);
    assert!(!format!("{err} {err:?}").contains(secret));
    let report = pp.probe().await.unwrap();
    assert!(!format!("{report:?}").contains(secret));

    let config: adapter_prodpad::Config = serde_json::from_value(json!({"mode": "rest", "api_key": secret})).unwrap();
    let shown = format!("{config:?}");
    assert!(!shown.contains(secret) && shown.contains("REDACTED"), "{shown}");

    let bad = json!({"mode": "rest", "base_url": "http://prodpad.example/v1", "api_key": secret});
    let err = adapter_prodpad::build("prodpad-test", bad, fast_limits()).err().unwrap().to_string();
    assert!(err.contains("base_url") && !err.contains(secret), "{err}");
}

#[tokio::test]
async fn https_only_is_checked_in_config_and_answered_403_by_the_vendor() {
    for bad in ["http://api.prodpad.com/v1", "http://10.0.0.5/v1"] {
        let cfg = json!({"mode": "rest", "base_url": bad, "api_key": KEY});
        let err = adapter_prodpad::build("prodpad-test", cfg, fast_limits()).err().unwrap().to_string();
        assert!(err.contains("`base_url`") && err.contains("https"), "{err}");
    }
    let sim = rest_sim(SimOptions { https_only: true, ..SimOptions::default() }).await;
    let pp = rest_adapter(&sim, json!({}));
    let err = pp.find_user("a@x.io").await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Unauthorized);
    assert!(err.detail().contains("HTTPS") && err.detail().contains("https"), "{err}");
    sim.set_https_only(false);
    assert!(pp.find_user("a@x.io").await.unwrap().is_none());
}

#[tokio::test]
async fn find_follows_pages() {
    let sim = rest_sim(SimOptions::default()).await;
    for i in 0..230 {
        sim.seed(&format!("user{i}@x.io"), &format!("User {i}"), Role::Reviewer);
    }
    let pp = rest_adapter(&sim, json!({}));
    sim.reset_counters();
    let found = pp.find_user("USER229@x.io").await.unwrap().unwrap();
    assert_eq!(found.user.display_name.as_deref(), Some("User 229"));
    assert_eq!(sim.counters().method("GET"), 3);
    sim.reset_counters();
    assert!(pp.find_user("missing@x.io").await.unwrap().is_none());
    assert_eq!(sim.counters().method("GET"), 3);
}

#[tokio::test]
async fn vendor_outages_are_retryable_errors_and_nothing_is_created() {
    let sim = rest_sim(SimOptions::default()).await;
    let pp = rest_adapter(&sim, json!({}));
    sim.set_faults(SimFaults { error_rate: 1.0, seed: Some(7), ..SimFaults::default() });
    let err = pp.create_user(&user("o@x.io", "O", "Ut", None)).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(sim.user_by_email("o@x.io").is_none());
    let err = pp.find_user("o@x.io").await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    sim.set_faults(SimFaults::default());
    pp.create_user(&user("o@x.io", "O", "Ut", None)).await.unwrap();
}

#[tokio::test]
async fn probe_and_admin_view() {
    let sim = rest_sim(SimOptions::default()).await;
    let pp = rest_adapter(&sim, json!({}));
    let report = pp.probe().await.unwrap();
    assert!(report.reachable && report.credential_accepted, "{report:?}");
    assert!(report.notes.iter().any(|n| n.text.contains("by hand")), "{report:?}");

    pp.create_user(&user("v@x.io", "V", "Iew", None)).await.unwrap();
    let view: serde_json::Value =
        reqwest::get(format!("{}/_sim/users", sim.url())).await.unwrap().json().await.unwrap();
    assert_eq!(view[0]["email"], "v@x.io");
    let counters: serde_json::Value =
        reqwest::get(format!("{}/_sim/counters", sim.url())).await.unwrap().json().await.unwrap();
    assert!(counters["requests"].as_u64().unwrap() >= 2, "{counters}");
}

#[tokio::test]
async fn the_rest_face_speaks_prodpad() {
    let sim = rest_sim(SimOptions::default()).await;
    let http = reqwest::Client::new();
    let url = format!("{}/users", sim.rest_base());
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["success"], false);
    assert!(body["developer_message"].is_string() && body["user_message"].is_string());

    let r = http.post(&url).bearer_auth(KEY).json(&json!({"name": "No Mail"})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = http.post(&url).bearer_auth(KEY).json(&json!({"email": "a@x.io", "role_type": "Owner"})).send().await;
    let r = r.unwrap();
    assert_eq!(r.status(), 201);
    let body: serde_json::Value = r.json().await.unwrap();
    for k in ["id", "username", "display_name", "email", "role_id", "role_type"] {
        assert!(body.get(k).is_some(), "{k}: {body}");
    }
    assert_eq!(body["role_type"], "Reviewer");

    for i in 0..25 {
        sim.seed(&format!("p{i}@x.io"), "P", Role::Reviewer);
    }
    let page: serde_json::Value = http.get(&url).bearer_auth(KEY).send().await.unwrap().json().await.unwrap();
    assert_eq!((page["page"].as_u64(), page["size"].as_u64()), (Some(1), Some(20)));
    assert_eq!(page["users"].as_array().unwrap().len(), 20);
    assert_eq!(page["total"], 26);
    let big: serde_json::Value =
        http.get(format!("{url}?page=1&size=500")).bearer_auth(KEY).send().await.unwrap().json().await.unwrap();
    assert_eq!(big["size"], 100);
}

#[tokio::test]
async fn a_lost_create_reply_is_maybe_applied_and_the_user_is_then_found() {
    let sim = rest_sim(SimOptions::default()).await;
    let pp = rest_adapter(&sim, json!({}));
    sim.set_faults(SimFaults { lost_response_rate: 1.0, seed: Some(1), ..SimFaults::default() });
    let err = pp.create_user(&user("lost@x.io", "Lo", "St", None)).await.unwrap_err();
    assert!(err.is_retryable() && err.maybe_applied(), "{err:?}");
    sim.set_faults(SimFaults::default());
    assert_eq!(sim.counters().method("POST"), 1, "a create is never repeated blindly");
    let found = pp.find_user("lost@x.io").await.unwrap().expect("the create took effect");
    assert_eq!(sim.user_by_email("lost@x.io").unwrap().id, found.vendor_id);
    let again = pp.create_user(&user("lost@x.io", "Lo", "St", None)).await.unwrap_err();
    assert_eq!(again.kind(), &ErrorKind::Conflict);
}

#[tokio::test]
async fn throttling_is_a_retryable_rate_limit() {
    use simkit::Throttle;
    use std::time::Duration;
    let sim = rest_sim(SimOptions::default()).await;
    let pp = rest_adapter(&sim, json!({}));
    let throttle = Throttle { requests: 1, per: Duration::from_secs(60), retry_after_secs: 30 };
    sim.set_faults(SimFaults { throttle: Some(throttle), ..SimFaults::default() });
    assert!(pp.find_user("t@x.io").await.unwrap().is_none());
    let err = pp.find_user("t@x.io").await.unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::RateLimited { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(sim.counters().throttled >= 1);
}
