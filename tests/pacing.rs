//! Pacing: a vendor simulator limited to R requests per second (a one-second window, 429 past it) and the
//! gateway configured for the same R. The gateway never makes the vendor send a 429, and still delivers at
//! least 95 % of R.
//!
//! The whole stack (Entra client, gateway, vendor adapter, simulator) runs on tokio's paused clock, over
//! real loopback HTTP: time moves only when every task is waiting on a timer, so each vendor call arrives at
//! the simulator at exactly the instant the gateway's pacer released it. That makes the result depend on the
//! pacer alone, not on how busy the machine is. The same run against the wall clock, where host jitter is
//! part of the picture, is `scim-bridge bench cycle` (BENCHMARKS.md figure 4).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use scim_bridge::config::{AppConfig, Config, LimitsConfig};
use scim_bridge::server;
use scim_bridge_devkit::demo;
use serde_json::json;
use simkit::{SimFaults, Throttle};

#[tokio::test(start_paused = true)]
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
            reconcile: Default::default(),
            group_roles: Vec::new(),
            options: sim.app_options.clone(),
        },
    );
    let mut config = Config::with_apps("127.0.0.1:0".parse().unwrap(), apps);
    // 80 connections at once from this one test client: above the default per-source cap.
    config.connections.max_per_source = 128;
    let running = server::start(&config, server::build_gateway(&config, "test").unwrap()).await.unwrap();
    let base = Arc::new(format!("http://{}/scim/prompt/v2", running.addr));
    let client = reqwest::Client::new();
    let started = tokio::time::Instant::now();
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
    let elapsed = started.elapsed().as_secs_f64();
    let counters = sim.sim.counters();
    assert_eq!(counters.throttled, 0, "the simulator never had to send a 429: {counters:?}");
    // One create each; a lookup is a vendor GET unless the vendor index already answers it. The index
    // is one background listing (one page for these 80 users, waiting for Entra's calls), so at most one
    // vendor call per Entra request plus that page, whichever finished first.
    assert_eq!(counters.method("POST"), 80, "one create per new user: {counters:?}");
    assert!(counters.method("GET") <= 81, "a lookup or the listing's one page, no more: {counters:?}");
    // The first call goes at once, then one per period: (calls - 1) periods in all.
    let throughput = (counters.requests - 1) as f64 / elapsed;
    println!(
        "paced at R = {rate}: {} vendor calls in {elapsed:.3} s of virtual time = {throughput:.2}/s ({:.1} % of R), \
         {} × 429",
        counters.requests,
        100.0 * throughput / rate as f64,
        counters.throttled
    );
    assert!(throughput >= 0.95 * rate as f64, "throughput {throughput:.2}/s is under 95 % of {rate}/s");
    assert!(throughput <= rate as f64, "throughput {throughput:.2}/s is over the vendor's {rate}/s");
}
