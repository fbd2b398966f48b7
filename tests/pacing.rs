//! Pacing: a vendor simulator limited to R requests per second (a fixed one-second window, 429 past it)
//! and the gateway configured for the same R. The gateway never makes the vendor send a 429. A test
//! binary of its own, so the heavy resilience tests do not share the two cores with it: a scheduling
//! stall of tens of milliseconds would be the machine's doing, not the gateway's.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use adapter_api::simkit::{SimFaults, Throttle};
use scim_bridge::config::{AppConfig, Config, LimitsConfig};
use scim_bridge::{demo, server};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_paced_at_the_vendor_rate_never_draws_a_429() {
    let rate = 40u32;
    let sim = demo::simulator("prompt", "code", None).await.unwrap();
    let throttle = Throttle { requests: rate, per: std::time::Duration::from_secs(1), retry_after_secs: 1 };
    sim.sim.set_faults(SimFaults { throttle: Some(throttle), ..SimFaults::default() });
    let mut apps = BTreeMap::new();
    apps.insert(
        "prompt".to_string(),
        AppConfig {
            vendor: "prompt".into(),
            token_sha256: common::sha("paced-token"),
            limits: LimitsConfig {
                requests_per_second: Some(rate as f64),
                burst: Some(1),
                max_in_flight: Some(8),
                ..Default::default()
            },
            ip_allow: Vec::new(),
            options: sim.app_options.clone(),
        },
    );
    let config = Config::with_apps("127.0.0.1:0".parse().unwrap(), apps);
    let running = server::start(&config, server::build_gateway(&config, "test").unwrap()).await.unwrap();
    let base = Arc::new(format!("http://{}/scim/prompt/v2", running.addr));
    let client = reqwest::Client::new();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..80 {
        let (client, base) = (client.clone(), base.clone());
        tasks.spawn(async move {
            let user_name = format!("paced{i:03}@example.com");
            let found = client
                .get(format!("{base}/Users?filter=userName+eq+%22{user_name}%22"))
                .bearer_auth("paced-token")
                .send()
                .await
                .unwrap()
                .status();
            let body = json!({"userName": user_name, "active": true, "emails": [{"type": "work", "value": user_name}]});
            let created = client
                .post(format!("{base}/Users"))
                .bearer_auth("paced-token")
                .json(&body)
                .send()
                .await
                .unwrap()
                .status();
            (found.as_u16(), created.as_u16())
        });
    }
    while let Some(r) = tasks.join_next().await {
        assert_eq!(r.unwrap(), (200, 201), "every lookup and create succeeded first time");
    }
    let counters = sim.sim.counters();
    assert_eq!(counters.requests, 160, "one vendor call per Entra request: {counters:?}");
    assert_eq!(counters.throttled, 0, "the simulator never had to send a 429: {counters:?}");
}
