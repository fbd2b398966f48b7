//! The Entra cycle driver (`entra_sim`) against the demo gateway, once per app: Test
//! Connection, 60 users created, groups where advertised, an incremental cycle (changes, disables,
//! deletions), the end state verified through the gateway and the vendor simulator's users checked.
//! No timing assertions.

use std::net::SocketAddr;

use entra_sim::{self, CycleReport, Options};
use serde_json::Value;

const TOKEN: &str = "entra-cycle-test-token";
const USERS: usize = 60;

async fn cycle(app: &str) -> (scim_bridge_devkit::demo::Demo, CycleReport) {
    let demo =
        scim_bridge_devkit::demo::start(SocketAddr::from(([127, 0, 0, 1], 0)), TOKEN, None).await.expect("demo starts");
    let mut opts = Options::new(demo.app_url(app), TOKEN, USERS);
    opts.groups = 3;
    opts.concurrency = 8;
    opts.seed = 7;
    let report = entra_sim::run(&opts).await.expect("the cycle runs");
    println!("== {app}\n{report}");
    assert!(report.ok(), "{app}: failures:\n{report}");
    assert!(report.verified, "{app}: end state not verified");
    let provisioned = report.users.iter().filter(|u| u.id.is_some()).count();
    assert_eq!(provisioned, USERS, "{app}:\n{report}");
    // 5 % deleted, 10 % disabled, 20 % changed, of 60.
    assert_eq!(report.users.iter().filter(|u| u.deleted).count(), 3, "{app}");
    assert_eq!(report.kept_users().filter(|u| !u.active).count(), 6, "{app}");
    assert_eq!(report.op("create"), USERS as u64, "{app}:\n{report}");
    assert_eq!(report.op("delete"), 3, "{app}");
    assert_eq!(report.op("disable"), 6, "{app}");
    assert_eq!(report.op("update"), 12, "{app}");
    assert_eq!(report.op("test_connection"), 1, "{app}");
    (demo, report)
}

/// What the simulator holds for `user_name`: (present, active).
fn vendor_view(users: &[Value], user_name: &str) -> Option<bool> {
    users
        .iter()
        .find(|u| {
            ["userName", "user_name", "email"]
                .iter()
                .any(|k| u.get(*k).and_then(Value::as_str).is_some_and(|v| v.eq_ignore_ascii_case(user_name)))
        })
        .map(|u| u.get("active").and_then(Value::as_bool).unwrap_or(true))
}

/// Kept users exist at the vendor with the right active flag; deleted ones are gone or (disable-only
/// vendors) inactive; nothing else is there.
fn check_vendor(demo: &scim_bridge_devkit::demo::Demo, app: &str, report: &CycleReport, hard_delete: bool) {
    let (_, sim) = demo.sims.iter().find(|(a, _)| a == app).expect("simulator");
    let users = sim.users_json();
    let kept = report.kept_users().count();
    let expected_count = if hard_delete { kept } else { USERS };
    assert_eq!(users.len(), expected_count, "{app}: vendor holds {} users", users.len());
    for u in &report.users {
        let held = vendor_view(&users, &u.user_name);
        if u.deleted {
            assert!(matches!(held, None | Some(false)), "{app}: deleted {} is {held:?} at the vendor", u.user_name);
            if !hard_delete {
                assert_eq!(held, Some(false), "{app}: {} should be kept disabled", u.user_name);
            }
        } else {
            assert_eq!(held, Some(u.active), "{app}: {} at the vendor", u.user_name);
        }
    }
    let counters = sim.counters();
    assert_eq!(counters.throttled, 0, "{app}: the simulator throttled");
}

#[tokio::test]
async fn sandbox_cycle_with_groups() {
    let (demo, report) = cycle("sandbox").await;
    assert!(report.groups_advertised);
    assert_eq!(report.groups.len(), 3);
    assert!(report.groups.iter().all(|g| g.id.is_some()));
    assert_eq!(report.op("group_create"), 3);
    assert!(report.op("group_members") >= 6, "{report}");
    demo.running.stop().await.unwrap();
}

/// One Entra cycle per vendor of the registry with a simulator: a new vendor runs it without an edit here.
#[tokio::test]
async fn every_vendor_cycle() {
    let vendors = scim_bridge_devkit::demo::simulated_types();
    assert!(!vendors.is_empty());
    for app in vendors {
        let (demo, report) = cycle(app).await;
        let capabilities = demo.running.gateway.apps[app].adapter.capabilities();
        assert_eq!(report.groups_advertised, capabilities.groups, "{app}: groups advertised as the vendor has them");
        check_vendor(&demo, app, &report, capabilities.hard_delete);
        demo.running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_second_run_with_the_same_seed_matches_instead_of_creating() {
    let demo = scim_bridge_devkit::demo::start(SocketAddr::from(([127, 0, 0, 1], 0)), TOKEN, None).await.unwrap();
    let mut opts = Options::new(demo.app_url("sandbox"), TOKEN, 10);
    opts.incremental = false;
    let first = entra_sim::run(&opts).await.unwrap();
    assert!(first.ok(), "{first}");
    let second = entra_sim::run(&opts).await.unwrap();
    assert!(second.ok(), "{second}");
    assert_eq!((second.op("create"), second.op("match"), second.op("update")), (0, 10, 0), "{second}");
    demo.running.stop().await.unwrap();
}
