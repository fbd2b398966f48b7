//! Test helpers shared by the ProdPad black-box tests: quick outbound limits, users, and building the
//! adapter against a running simulator.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use adapter_api::{Adapter, MultiValue, Name, OutboundConfig, User};
use adapter_prodpad::sim::{self, SimHandle, SimOptions};
use serde_json::{json, Value};

pub const KEY: &str = "sim-key";

/// Limits that keep tests fast: no waiting on the limiter, short timeouts, quick retries.
pub fn fast_limits() -> OutboundConfig {
    OutboundConfig {
        requests_per_second: 10_000.0,
        burst: 10_000,
        max_in_flight: 16,
        queue_timeout: Duration::from_secs(2),
        attempt_timeout: Duration::from_secs(2),
        deadline: Duration::from_secs(5),
        max_attempts: 3,
        backoff_min: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        breaker_failures: 1_000,
        breaker_cooldown: Duration::from_millis(50),
        shared: Default::default(),
    }
}

pub fn user(email: &str, given: &str, family: &str, role: Option<&str>) -> User {
    let mut u = User::new(email);
    u.name = Some(Name { given_name: Some(given.into()), family_name: Some(family.into()), ..Name::default() });
    u.emails =
        vec![MultiValue { value: Some(email.into()), kind: Some("work".into()), primary: Some(true), display: None }];
    if let Some(r) = role {
        u.roles = vec![MultiValue { value: Some(r.into()), ..MultiValue::default() }];
    }
    u
}

pub async fn rest_sim(opts: SimOptions) -> SimHandle {
    sim::spawn(opts).await
}

pub async fn scim_sim() -> SimHandle {
    sim::spawn(SimOptions { scim_path: Some("/api/v2/scim".into()), ..SimOptions::default() }).await
}

/// The adapter in rest mode against `sim`, with `extra` config keys merged in.
pub fn rest_adapter(sim: &SimHandle, extra: Value) -> Arc<dyn Adapter> {
    let mut cfg = json!({"mode": "rest", "base_url": sim.rest_base(), "api_key": KEY});
    merge(&mut cfg, extra);
    adapter_prodpad::build("prodpad-test", cfg, fast_limits()).expect("rest adapter builds")
}

/// The adapter in scim mode against `sim`'s SCIM face, with `extra` config keys merged in.
pub fn scim_adapter(sim: &SimHandle, extra: Value) -> Arc<dyn Adapter> {
    let base = sim.scim_base().expect("the simulator has a SCIM face");
    let mut cfg = json!({"mode": "scim", "base_url": base, "api_key": KEY});
    merge(&mut cfg, extra);
    adapter_prodpad::build("prodpad-test", cfg, fast_limits()).expect("scim adapter builds")
}

fn merge(cfg: &mut Value, extra: Value) {
    if let (Some(c), Value::Object(e)) = (cfg.as_object_mut(), extra) {
        c.extend(e);
    }
}
