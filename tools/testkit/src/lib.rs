//! The shared adapter test kit: the scenarios every vendor adapter runs against its simulator (create,
//! find case-insensitively, update each supported attribute, disable, re-enable, delete, duplicate
//! create, unknown id, refused credential, vendor outage). A vendor implements `Harness` for its simulator
//! and calls `run_all`; a failure names every scenario that failed and why.
//!
//! Scenarios follow the adapter's `Capabilities`, never skipping silently: for a vendor that cannot update
//! users (`update_users == false`, e.g. ProdPad's REST mode) the update, disable and unknown-id scenarios
//! expect a refusal (`Unsupported` or `NeedsManualAction` with a detail) that leaves the vendor record as it
//! was; delete then expects a refusal too unless the vendor can hard-delete.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use adapter_api::{Adapter, ErrorKind, OutboundConfig, User};
use simkit::SimFaults;

/// One attribute update the vendor supports: `apply` changes the canonical user; `check` reads the
/// simulator's record (JSON as the simulator keeps it) and says whether the change arrived.
#[derive(Clone, Copy)]
pub struct AttrUpdate {
    pub name: &'static str,
    pub apply: fn(&mut User),
    pub check: fn(&Value) -> bool,
}

/// What the test kit needs from a vendor's simulator setup.
#[async_trait]
pub trait Harness: Send + Sync {
    /// An adapter built against the simulator with a valid credential.
    fn adapter(&self) -> Arc<dyn Adapter>;
    /// An adapter built against the same simulator with a credential it refuses.
    fn bad_credential_adapter(&self) -> Arc<dyn Adapter>;
    /// Sets the simulator's faults (`SimFaults::default()` turns them off).
    async fn set_faults(&self, faults: SimFaults);
    /// The simulator's record of a user, looked up by userName case-insensitively; `None` if absent.
    /// Must contain at least `active` (bool).
    async fn sim_user(&self, user_name: &str) -> Option<Value>;
    /// A user the vendor accepts (e.g. with an app role for Promapp) with this userName.
    fn sample_user(&self, user_name: &str) -> User;
    /// The attribute updates the vendor supports.
    fn updates(&self) -> Vec<AttrUpdate>;
    /// An id the vendor surely does not hold.
    fn unknown_id(&self) -> String {
        "987654321".into()
    }
}

/// Outbound settings for tests: no meaningful rate limit, fast back-off, few attempts, a breaker that does
/// not open during a test run.
pub fn test_outbound() -> OutboundConfig {
    OutboundConfig {
        requests_per_second: 1000.0,
        burst: 100,
        max_in_flight: 16,
        queue_timeout: Duration::from_secs(5),
        attempt_timeout: Duration::from_secs(5),
        deadline: Duration::from_secs(10),
        max_attempts: 2,
        backoff_min: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        breaker_failures: 10_000,
        breaker_cooldown: Duration::from_millis(10),
        shared: Default::default(),
    }
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A userName unique within the process run.
pub fn unique_user_name(tag: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("kit-{tag}-{n}-{nanos:x}@example.com")
}

type Outcome = Result<(), String>;

fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Outcome {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

fn sim_active(rec: &Option<Value>) -> Option<bool> {
    rec.as_ref().and_then(|v| v.get("active")).and_then(Value::as_bool)
}

async fn create(h: &dyn Harness, tag: &str) -> Result<(User, String), String> {
    let user = h.sample_user(&unique_user_name(tag));
    let id = h.adapter().create_user(&user).await.map_err(|e| format!("create_user failed: {e}"))?;
    Ok((user, id))
}

async fn scenario_create(h: &dyn Harness) -> Outcome {
    let (user, id) = create(h, "create").await?;
    ensure(!id.is_empty(), || "empty vendor id".into())?;
    let rec = h.sim_user(&user.user_name).await;
    ensure(rec.is_some(), || "the simulator does not hold the created user".into())?;
    ensure(sim_active(&rec) == Some(true), || format!("created user is not active: {rec:?}"))?;
    let got = h.adapter().get_user(&id).await.map_err(|e| format!("get_user after create: {e}"))?;
    ensure(got.user.user_name.eq_ignore_ascii_case(&user.user_name), || {
        format!("get_user returned {}", got.user.user_name)
    })
}

async fn scenario_find(h: &dyn Harness) -> Outcome {
    let (user, id) = create(h, "find").await?;
    let a = h.adapter();
    let found = a.find_user(&user.user_name.to_uppercase()).await.map_err(|e| format!("find_user: {e}"))?;
    let found = found.ok_or("find_user with the userName upper-cased found nothing")?;
    ensure(found.vendor_id == id, || format!("found id {} expected {id}", found.vendor_id))?;
    let missing = a.find_user(&unique_user_name("absent")).await.map_err(|e| format!("find_user miss: {e}"))?;
    ensure(missing.is_none(), || "find_user of an unknown userName returned a user".into())
}

/// Whether the adapter declares that it cannot update users: its update scenarios then expect refusals.
fn refuses_updates(h: &dyn Harness) -> bool {
    !h.adapter().capabilities().update_users
}

/// A refusal an admin can act on: `Unsupported` or `NeedsManualAction`, with a detail. Never a success.
fn expect_refusal(what: &str, result: adapter_api::Result<()>) -> Outcome {
    match result {
        Err(e) if matches!(e.kind(), ErrorKind::Unsupported | ErrorKind::NeedsManualAction) => {
            ensure(!e.detail().trim().is_empty(), || format!("{what}: refusal without a detail"))
        }
        other => Err(format!(
            "{what}: the adapter declares update_users=false, so expected Unsupported or NeedsManualAction, \
             got {other:?}"
        )),
    }
}

/// For vendors that refuse updates: the record must still be there and still active.
async fn expect_untouched(h: &dyn Harness, user_name: &str, what: &str) -> Outcome {
    let rec = h.sim_user(user_name).await;
    ensure(sim_active(&rec) == Some(true), || format!("{what} was refused but the vendor record changed: {rec:?}"))
}

async fn scenario_updates(h: &dyn Harness) -> Outcome {
    let (mut current, id) = create(h, "update").await?;
    if refuses_updates(h) {
        for upd in h.updates() {
            let mut after = current.clone();
            (upd.apply)(&mut after);
            let what = format!("update of {}", upd.name);
            expect_refusal(&what, h.adapter().update_user(&id, &current, &after).await)?;
            expect_untouched(h, &current.user_name, &what).await?;
        }
        return Ok(());
    }
    for upd in h.updates() {
        let mut after = current.clone();
        (upd.apply)(&mut after);
        h.adapter().update_user(&id, &current, &after).await.map_err(|e| format!("update of {}: {e}", upd.name))?;
        let rec = h.sim_user(&after.user_name).await.ok_or(format!("user gone after updating {}", upd.name))?;
        ensure((upd.check)(&rec), || format!("update of {} did not reach the vendor: {rec}", upd.name))?;
        current = after;
    }
    Ok(())
}

async fn scenario_disable_enable(h: &dyn Harness) -> Outcome {
    let (user, id) = create(h, "disable").await?;
    let mut off = user.clone();
    off.active = false;
    if refuses_updates(h) {
        expect_refusal("disable", h.adapter().update_user(&id, &user, &off).await)?;
        return expect_untouched(h, &user.user_name, "disable").await;
    }
    h.adapter().update_user(&id, &user, &off).await.map_err(|e| format!("disable: {e}"))?;
    let rec = h.sim_user(&user.user_name).await;
    ensure(sim_active(&rec) == Some(false), || format!("not disabled at the vendor: {rec:?}"))?;
    h.adapter().update_user(&id, &off, &user).await.map_err(|e| format!("re-enable: {e}"))?;
    let rec = h.sim_user(&user.user_name).await;
    ensure(sim_active(&rec) == Some(true), || format!("not re-enabled at the vendor: {rec:?}"))
}

async fn scenario_delete(h: &dyn Harness) -> Outcome {
    let (user, id) = create(h, "delete").await?;
    let a = h.adapter();
    let caps = a.capabilities();
    if !caps.update_users && !caps.hard_delete {
        // Neither removing nor updating: deprovisioning may be refused (record untouched) or may disable.
        return match a.delete_user(&id, &user).await {
            Ok(()) => {
                let rec = h.sim_user(&user.user_name).await;
                ensure(sim_active(&rec) == Some(false), || format!("delete answered Ok but left: {rec:?}"))
            }
            refused => {
                expect_refusal("delete_user", refused)?;
                expect_untouched(h, &user.user_name, "delete_user").await
            }
        };
    }
    a.delete_user(&id, &user).await.map_err(|e| format!("delete_user: {e}"))?;
    let rec = h.sim_user(&user.user_name).await;
    if a.capabilities().hard_delete {
        ensure(rec.is_none(), || format!("hard delete left the user at the vendor: {rec:?}"))
    } else {
        ensure(sim_active(&rec) == Some(false), || format!("disable-delete left the user active: {rec:?}"))
    }
}

async fn scenario_duplicate(h: &dyn Harness) -> Outcome {
    let (user, _) = create(h, "dup").await?;
    match h.adapter().create_user(&user).await {
        Err(e) if *e.kind() == ErrorKind::Conflict => Ok(()),
        other => Err(format!("second create of the same userName gave {other:?}, expected Conflict")),
    }
}

async fn scenario_unknown_id(h: &dyn Harness) -> Outcome {
    let a = h.adapter();
    let id = h.unknown_id();
    match a.get_user(&id).await {
        Err(e) if *e.kind() == ErrorKind::NotFound => {}
        other => return Err(format!("get_user of an unknown id gave {other:?}, expected NotFound")),
    }
    let u = h.sample_user(&unique_user_name("ghost"));
    let mut after = u.clone();
    after.active = false;
    let result = a.update_user(&id, &u, &after).await;
    if refuses_updates(h) && !matches!(&result, Err(e) if *e.kind() == ErrorKind::NotFound) {
        return expect_refusal("update_user of an unknown id", result);
    }
    match result {
        Err(e) if *e.kind() == ErrorKind::NotFound => Ok(()),
        other => Err(format!("update_user of an unknown id gave {other:?}, expected NotFound")),
    }
}

async fn scenario_unauthorized(h: &dyn Harness) -> Outcome {
    let bad = h.bad_credential_adapter();
    match bad.find_user("anyone@example.com").await {
        Err(e) if *e.kind() == ErrorKind::Unauthorized && !e.is_retryable() => {}
        other => return Err(format!("find_user with a bad credential gave {other:?}, expected Unauthorized")),
    }
    match bad.create_user(&h.sample_user(&unique_user_name("unauth"))).await {
        Err(e) if *e.kind() == ErrorKind::Unauthorized && !e.is_retryable() => Ok(()),
        other => Err(format!("create_user with a bad credential gave {other:?}, expected Unauthorized")),
    }
}

async fn scenario_outage(h: &dyn Harness) -> Outcome {
    h.set_faults(SimFaults { error_rate: 1.0, seed: Some(7), ..Default::default() }).await;
    let result = h.adapter().find_user("anyone@example.com").await;
    h.set_faults(SimFaults::default()).await;
    match result {
        Err(e) if matches!(e.kind(), ErrorKind::Unavailable { .. }) && e.is_retryable() => Ok(()),
        other => Err(format!("find_user during a vendor outage gave {other:?}, expected retryable Unavailable")),
    }
}

/// Runs every scenario against the harness and panics listing each failed scenario with its reason.
pub async fn run_all(h: &dyn Harness) {
    let mut failures = Vec::new();
    macro_rules! run {
        ($name:literal, $f:expr) => {
            if let Err(why) = $f.await {
                failures.push(format!("{}: {}", $name, why));
            }
        };
    }
    run!("create", scenario_create(h));
    run!("find_by_user_name", scenario_find(h));
    run!("update_attributes", scenario_updates(h));
    run!("disable_and_reenable", scenario_disable_enable(h));
    run!("delete", scenario_delete(h));
    run!("duplicate_create_conflict", scenario_duplicate(h));
    run!("unknown_id_not_found", scenario_unknown_id(h));
    run!("bad_credential_unauthorized", scenario_unauthorized(h));
    run!("vendor_5xx_unavailable", scenario_outage(h));
    assert!(
        failures.is_empty(),
        "adapter test kit: {} scenario(s) failed:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use adapter_api::sandbox::Sandbox;

    /// The sandbox keeps no vendor state, so a harness over it must fail, naming the scenarios.
    struct SandboxHarness(Arc<Sandbox>);

    #[async_trait]
    impl Harness for SandboxHarness {
        fn adapter(&self) -> Arc<dyn Adapter> {
            self.0.clone()
        }
        fn bad_credential_adapter(&self) -> Arc<dyn Adapter> {
            self.0.clone()
        }
        async fn set_faults(&self, _faults: SimFaults) {}
        async fn sim_user(&self, _user_name: &str) -> Option<Value> {
            None
        }
        fn sample_user(&self, user_name: &str) -> User {
            User::new(user_name)
        }
        fn updates(&self) -> Vec<AttrUpdate> {
            Vec::new()
        }
    }

    #[tokio::test]
    #[should_panic(expected = "bad_credential_unauthorized")]
    async fn failures_name_their_scenarios() {
        run_all(&SandboxHarness(Arc::new(Sandbox::new()))).await;
    }

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique_user_name("a"), unique_user_name("a"));
    }
}
