//! `scim-bridge bench <which>`: measurements that print figures and ratios from one run. Nothing here
//! asserts on time; BENCHMARKS.md records the figures and the commands that produced them.
//!
//! - `latency`: p50/p99 of a user GET and PATCH through the gateway vs the same call made directly to the
//!   PROMPT simulator (which speaks SCIM), at 1 and at `--clients` concurrent clients.
//! - `throughput`: requests/s of the SCIM front end on the `sandbox` app (create/get/filter/patch mix).
//! - `endpoints`: wrk-style, each endpoint alone (POST, GET by id, filter, PATCH) with `--concurrency`
//!   connections for `--seconds` each, on the `sandbox` app: the store engine's figure.
//!
//! `throughput` and `endpoints` on the default `--store :memory:` also run on a fresh SQLite file (the
//! production setting), so the durable figures are always printed.
//! - `paging`: `GET /Users?count=100` p50/p99 with 1,000 users and with `--paging-users` users.
//! - `economy`: vendor calls per Entra request over a full Entra cycle, per vendor adapter.
//! - `cycle`: an initial cycle against a simulator throttled to R requests/s with the app limited to R:
//!   duration / (vendor calls / R) and the 429s the simulator sent; a large N at a high R, then a small N
//!   at a realistic R.
//! - `memory`: resident memory of a `serve` child process holding `--memory-users` users, then over a
//!   soak of `--soak-seconds` with RSS sampled every `--sample-seconds`.
//! - `all`: each of the above in turn.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use simkit::{SimFaults, Simulator, Throttle};
use tokio::task::JoinSet;

use crate::demo::{self, Demo};
use adapter_api::scim::schema::USER_SCHEMA as CORE_USER;
use entra_sim::{self, Options};
use scim_bridge::config::LimitsConfig;

const TOKEN: &str = "bench-token";

#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
pub enum Which {
    Latency,
    Throughput,
    Endpoints,
    Paging,
    Economy,
    Cycle,
    Memory,
    All,
}

/// `scim-bridge bench` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Which measurement.
    #[arg(value_enum)]
    pub which: Which,
    /// latency: timed requests per (target, operation, concurrency level).
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// latency: the high concurrency level (the low one is 1).
    #[arg(long, default_value_t = 200)]
    pub clients: usize,
    /// throughput: seconds of load.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// throughput workers, and the Entra driver's concurrency in economy, cycle and memory.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// economy: users per vendor cycle.
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// cycle: users of the large run.
    #[arg(long, default_value_t = 10_000)]
    pub cycle_users: usize,
    /// cycle: vendor requests/s of the large run (simulator throttle and app limit).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// cycle: users of the small run (0 skips it).
    #[arg(long, default_value_t = 300)]
    pub small_users: usize,
    /// cycle: vendor requests/s of the small run.
    #[arg(long, default_value_t = 10.0)]
    pub small_rate: f64,
    /// cycle: the app's `limits.burst`.
    #[arg(long, default_value_t = 1)]
    pub burst: u32,
    /// cycle: the vendor app (prodpad, promapp, prompt).
    #[arg(long, default_value = "prompt")]
    pub vendor: String,
    /// memory: users loaded into the store before measuring.
    #[arg(long, default_value_t = 100_000)]
    pub memory_users: usize,
    /// memory: soak duration after loading (0 skips the soak).
    #[arg(long, default_value_t = 600)]
    pub soak_seconds: u64,
    /// memory: RSS sampling period during the soak.
    #[arg(long, default_value_t = 30)]
    pub sample_seconds: u64,
    /// memory: soak clients (each loops match + PATCH, plus a create/delete every 20th turn).
    #[arg(long, default_value_t = 8)]
    pub soak_clients: usize,
    /// endpoints: users loaded (untimed) before the timed endpoints, so reads meet the same store size.
    #[arg(long, default_value_t = 10_000)]
    pub endpoint_users: usize,
    /// paging: the large store's user count (the small one is 1,000).
    #[arg(long, default_value_t = 100_000)]
    pub paging_users: usize,
    /// Store of the in-process gateway (latency, throughput, economy, cycle): `:memory:`, a file path, or
    /// `postgres://user@host:port/db#schema` (PostgreSQL; the password, if any, in
    /// `SCIM_DEMO_PG_PASSWORD`; `#schema` a fresh schema for the run).
    #[arg(long, default_value = ":memory:")]
    pub store: String,
    /// endpoints: gateways sharing the store (PostgreSQL only beyond 1), clients spread over them.
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
}

pub async fn cli(args: BenchArgs) -> Result<(), String> {
    let all = args.which == Which::All;
    println!("{}", machine());
    if all || args.which == Which::Economy {
        println!("{}", economy(&args).await?);
    }
    if all || args.which == Which::Latency {
        println!("{}", latency(&args).await?);
    }
    if all || args.which == Which::Throughput {
        for store in Stores::of(&args, "throughput").paths() {
            println!("{}", throughput(&args, store).await?);
        }
    }
    if all || args.which == Which::Endpoints {
        for store in Stores::of(&args, "endpoints").paths() {
            println!("{}", endpoints(&args, store).await?);
        }
    }
    if all || args.which == Which::Paging {
        println!("{}", paging(&args).await?);
    }
    if all || args.which == Which::Cycle {
        println!("{}", throttled_cycle(&args, args.cycle_users, args.rate).await?);
        if args.small_users > 0 {
            println!("{}", throttled_cycle(&args, args.small_users, args.small_rate).await?);
        }
    }
    if all || args.which == Which::Memory {
        println!("{}", memory(&args).await?);
    }
    Ok(())
}

/// `nproc`, CPU model and memory, as one line.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    format!(
        "machine: {cpus} CPUs ({model}), {:.1} GiB RAM; build: {}",
        mem_kb as f64 / 1024.0 / 1024.0,
        if cfg!(debug_assertions) { "debug (use --release for figures)" } else { "release" }
    )
}

/// The stores a throughput figure is measured on: the one asked for and, beside `:memory:`, a fresh file
/// store (WAL, committed with `synchronous=NORMAL` and fsynced by the store's flusher before any answer:
/// the production setting, where every 2xx waits for an fsync), so the durable figure is always printed.
/// The file is removed afterwards.
struct Stores {
    asked: String,
    file: Option<PathBuf>,
}

impl Stores {
    fn of(a: &BenchArgs, what: &str) -> Stores {
        let file = (a.store == ":memory:")
            .then(|| std::env::temp_dir().join(format!("scim-bridge-bench-{what}-{}.sqlite", std::process::id())));
        Stores { asked: a.store.clone(), file }
    }

    fn paths(&self) -> Vec<&str> {
        let mut paths = vec![self.asked.as_str()];
        paths.extend(self.file.as_ref().and_then(|f| f.to_str()));
        paths
    }
}

impl Drop for Stores {
    fn drop(&mut self) {
        if let Some(f) = &self.file {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", f.display()));
            }
        }
    }
}

fn any_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Limits high enough that the gateway's own rate limiter never paces the simulator.
fn unthrottled(max_in_flight: usize) -> LimitsConfig {
    LimitsConfig {
        requests_per_second: Some(1_000_000.0),
        burst: Some(100_000),
        max_in_flight: Some(max_in_flight),
        queue_timeout_ms: Some(60_000),
        ..Default::default()
    }
}

fn sim<'a>(demo: &'a Demo, vendor: &str) -> Result<&'a dyn Simulator, String> {
    demo.sims
        .iter()
        .find(|(a, _)| a == vendor)
        .map(|(_, s)| s.as_ref())
        .ok_or_else(|| format!("no simulator for '{vendor}' (known: {})", demo::simulated_types().join(", ")))
}

fn http_client(pool: usize) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(pool)
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------------------------------------
// 3. Vendor calls per Entra operation.

async fn economy(a: &BenchArgs) -> Result<String, String> {
    let demo =
        demo::start_with_limits(any_addr(), TOKEN, None, unthrottled(64), &a.store).await.map_err(|e| e.to_string())?;
    let mut out = format!(
        "== economy: vendor calls per Entra request, N = {}: the initial cycle (Test Connection + N match/create; \
         goal <= 0.55) and the full cycle (then incremental 20 % changes / 10 % disables / 5 % deletions; goal <= 1.0)\n",
        a.users
    );
    out.push_str(&format!(
        "{:<8} {:>14} {:>13} {:>8} {:>14} {:>13} {:>7}  {:<40} {}\n",
        "vendor",
        "initial: entra",
        "vendor calls",
        "ratio",
        "full: entra",
        "vendor calls",
        "ratio",
        "vendor calls by method (full)",
        "end state"
    ));
    for vendor in demo::simulated_types() {
        let sim = sim(&demo, vendor)?;
        let mut opts = Options::new(demo.app_url(vendor), TOKEN, a.users);
        opts.concurrency = a.concurrency;
        opts.verify = false;
        opts.seed = 3;
        let before = sim.counters().requests;
        let after_initial = std::sync::Mutex::new(before);
        let mut report = entra_sim::run_observed(&opts, &|phase| {
            if phase == "initial" {
                *after_initial.lock().unwrap_or_else(|p| p.into_inner()) = sim.counters().requests;
            }
        })
        .await?;
        let counters = sim.counters();
        let calls = counters.requests - before;
        let initial_calls = *after_initial.lock().unwrap_or_else(|p| p.into_inner()) - before;
        let entra = report.entra_requests();
        let phase = |p: &str| report.requests_by_phase.get(p).copied().unwrap_or(0);
        let initial_entra = phase("test_connection") + phase("initial");
        entra_sim::verify(&opts, &mut report).await?;
        let methods: Vec<String> = counters.by_method.iter().map(|(m, n)| format!("{m} {n}")).collect();
        out.push_str(&format!(
            "{vendor:<8} {initial_entra:>14} {initial_calls:>13} {:>8.3} {entra:>14} {calls:>13} {:>7.3}  {:<40} {}\n",
            initial_calls as f64 / initial_entra.max(1) as f64,
            calls as f64 / entra.max(1) as f64,
            methods.join(", "),
            if report.ok() { "verified, 0 failures".to_string() } else { format!("{} FAILURES", report.failure_count) }
        ));
        let ops: Vec<String> =
            report.ops.iter().filter(|(k, _)| !k.starts_with("verify")).map(|(k, n)| format!("{k} {n}")).collect();
        out.push_str(&format!("         entra operations: {}\n", ops.join(", ")));
    }
    demo.running.stop().await.map_err(|e| e.to_string())?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------------------
// 1. Added latency.

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Get,
    Patch,
}

struct Target {
    base: String,
    token: String,
    /// One user per client.
    ids: Vec<String>,
}

struct Timing {
    p50: Duration,
    p99: Duration,
    rps: f64,
    errors: u64,
}

static NONCE: AtomicU64 = AtomicU64::new(0);

async fn one_call(http: &reqwest::Client, t: &Target, id: &str, op: Op) -> Result<(), String> {
    let url = format!("{}/Users/{id}", t.base);
    let req = match op {
        Op::Get => http.get(&url),
        Op::Patch => {
            let n = NONCE.fetch_add(1, Ordering::Relaxed);
            let body = entra_sim::patch_body(vec![
                json!({"op": "Replace", "path": "name.familyName", "value": format!("Latency{n}")}),
            ]);
            http.patch(&url).header("content-type", "application/scim+json").body(body.to_string())
        }
    };
    let resp = req.bearer_auth(&t.token).send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let _ = resp.bytes().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}

/// `clients` concurrent clients, each on its own user, `total` timed requests between them (after one
/// untimed warm-up request each).
async fn measure(http: &reqwest::Client, t: &Arc<Target>, clients: usize, op: Op, total: usize) -> Timing {
    let per_client = (total / clients).max(5);
    let mut set = JoinSet::new();
    let started = Instant::now();
    for c in 0..clients {
        let (http, t) = (http.clone(), t.clone());
        set.spawn(async move {
            let id = t.ids[c].clone();
            let _ = one_call(&http, &t, &id, op).await;
            let mut times = Vec::with_capacity(per_client);
            let mut errors = 0u64;
            for _ in 0..per_client {
                let start = Instant::now();
                match one_call(&http, &t, &id, op).await {
                    Ok(()) => times.push(start.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (times, errors)
        });
    }
    let mut all = Vec::new();
    let mut errors = 0;
    while let Some(joined) = set.join_next().await {
        if let Ok((times, e)) = joined {
            all.extend(times);
            errors += e;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    all.sort();
    Timing {
        p50: percentile(&all, 50.0),
        p99: percentile(&all, 99.0),
        rps: if wall > 0.0 { all.len() as f64 / wall } else { 0.0 },
        errors,
    }
}

async fn latency(a: &BenchArgs) -> Result<String, String> {
    let vendor = "prompt";
    let clients = a.clients.max(1);
    let demo = demo::start_with_limits(any_addr(), TOKEN, None, unthrottled(clients * 2), &a.store)
        .await
        .map_err(|e| e.to_string())?;
    let sim = sim(&demo, vendor)?;
    let http = http_client(clients * 2)?;
    // Users made through the gateway (GET/PATCH through it) and users made directly at the simulator.
    let gateway_base = demo.app_url(vendor);
    let direct_base = format!("{}{}", sim.root_url(), adapter_prompt::sim::SCIM_BASE);
    let direct_token = demo::demo_credential(vendor);
    let mut gateway_ids = Vec::new();
    let mut direct_ids = Vec::new();
    for i in 0..clients {
        let name = format!("latency.gw.{i}@bench.example.com");
        let body = json!({"schemas": [CORE_USER], "userName": name, "active": true,
            "name": {"givenName": "Lat", "familyName": format!("Gw{i}")},
            "emails": [{"type": "work", "primary": true, "value": name}]});
        gateway_ids.push(create(&http, &gateway_base, TOKEN, &body).await?);
        let name = format!("latency.direct.{i}@bench.example.com");
        let body = json!({"schemas": [CORE_USER], "userName": name, "active": true,
            "name": {"givenName": "Lat", "familyName": format!("Direct{i}")},
            "emails": [{"type": "work", "primary": true, "value": name}]});
        direct_ids.push(create(&http, &direct_base, &direct_token, &body).await?);
    }
    let gateway = Arc::new(Target { base: gateway_base, token: TOKEN.into(), ids: gateway_ids });
    let direct = Arc::new(Target { base: direct_base, token: direct_token, ids: direct_ids });
    let mut out = format!(
        "== latency: user GET and PATCH through the gateway (app `{vendor}`) vs directly to the {vendor} \
         simulator; {} timed requests per row (gateway GETs are served from the shadow store; each PATCH \
         changes name.familyName, so every gateway PATCH is one vendor PATCH)\n",
        a.requests
    );
    out.push_str(&format!(
        "{:>7} {:<5} {:>11} {:>11} {:>11} {:>11} {:>9} {:>9} {:>10} {:>10} {:>6}\n",
        "clients",
        "op",
        "gw p50 ms",
        "gw p99 ms",
        "dir p50 ms",
        "dir p99 ms",
        "p50 ratio",
        "p99 ratio",
        "gw req/s",
        "dir req/s",
        "errors"
    ));
    for level in [1, clients] {
        for op in [Op::Get, Op::Patch] {
            let g = measure(&http, &gateway, level, op, a.requests).await;
            let d = measure(&http, &direct, level, op, a.requests).await;
            out.push_str(&format!(
                "{level:>7} {:<5} {:>11.3} {:>11.3} {:>11.3} {:>11.3} {:>9.2} {:>9.2} {:>10.0} {:>10.0} {:>6}\n",
                if op == Op::Get { "GET" } else { "PATCH" },
                ms(g.p50),
                ms(g.p99),
                ms(d.p50),
                ms(d.p99),
                g.p50.as_secs_f64() / d.p50.as_secs_f64().max(1e-9),
                g.p99.as_secs_f64() / d.p99.as_secs_f64().max(1e-9),
                g.rps,
                d.rps,
                g.errors + d.errors
            ));
        }
    }
    demo.running.stop().await.map_err(|e| e.to_string())?;
    Ok(out)
}

async fn create(http: &reqwest::Client, base: &str, token: &str, body: &Value) -> Result<String, String> {
    let resp = http
        .post(format!("{base}/Users"))
        .bearer_auth(token)
        .header("content-type", "application/scim+json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| format!("{base}: {e}"))?;
    let status = resp.status();
    let doc: Value = resp.json().await.unwrap_or(Value::Null);
    match doc.get("id").and_then(Value::as_str) {
        Some(id) if status == StatusCode::CREATED => Ok(id.to_string()),
        _ => Err(format!("create at {base}: {status} {doc}")),
    }
}

// ---------------------------------------------------------------------------------------------------------
// 2. Throughput of the SCIM front end (sandbox app).

#[derive(Default)]
struct Mix {
    ops: [u64; 4],
    errors: u64,
    times: Vec<Duration>,
}

async fn throughput(a: &BenchArgs, store: &str) -> Result<String, String> {
    let demo =
        demo::start_with_limits(any_addr(), TOKEN, None, unthrottled(64), store).await.map_err(|e| e.to_string())?;
    let run = std::process::id();
    let base = demo.app_url("sandbox");
    let http = http_client(a.concurrency * 2)?;
    let until = Instant::now() + Duration::from_secs_f64(a.seconds);
    let started = Instant::now();
    let mut set = JoinSet::new();
    for w in 0..a.concurrency.max(1) {
        let (http, base) = (http.clone(), base.clone());
        set.spawn(async move {
            let mut mix = Mix::default();
            let mut k = 0u64;
            while Instant::now() < until {
                k += 1;
                let name = format!("tp.{run}.{w}.{k}@bench.example.com");
                let body = json!({"schemas": [CORE_USER], "userName": name, "active": true,
                    "name": {"givenName": "Tp", "familyName": "Load"},
                    "emails": [{"type": "work", "primary": true, "value": name}]});
                let t = Instant::now();
                let Ok(id) = create(&http, &base, TOKEN, &body).await else {
                    mix.errors += 1;
                    continue;
                };
                mix.times.push(t.elapsed());
                mix.ops[0] += 1;
                let filter: String =
                    form_urlencoded::byte_serialize(format!("userName eq \"{name}\"").as_bytes()).collect();
                let patch = entra_sim::patch_body(vec![
                    json!({"op": "Replace", "path": "name.familyName", "value": format!("Load{k}")}),
                ]);
                let steps = [
                    (1, Method::GET, format!("{base}/Users/{id}"), None),
                    (2, Method::GET, format!("{base}/Users?filter={filter}"), None),
                    (3, Method::PATCH, format!("{base}/Users/{id}"), Some(patch.to_string())),
                ];
                for (slot, method, url, body) in steps {
                    let t = Instant::now();
                    let mut req = http.request(method, url).bearer_auth(TOKEN);
                    if let Some(b) = body {
                        req = req.header("content-type", "application/scim+json").body(b);
                    }
                    match req.send().await {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            mix.times.push(t.elapsed());
                            mix.ops[slot] += 1;
                        }
                        _ => mix.errors += 1,
                    }
                }
            }
            mix
        });
    }
    let mut total = Mix::default();
    while let Some(joined) = set.join_next().await {
        if let Ok(m) = joined {
            for i in 0..4 {
                total.ops[i] += m.ops[i];
            }
            total.errors += m.errors;
            total.times.extend(m.times);
        }
    }
    let wall = started.elapsed().as_secs_f64();
    total.times.sort();
    let requests: u64 = total.ops.iter().sum();
    demo.running.stop().await.map_err(|e| e.to_string())?;
    Ok(format!(
        "== throughput: SCIM front end, app `sandbox`, store {}, {} clients for {:.1}s, each looping \
         POST /Users, GET /Users/{{id}}, GET /Users?filter=userName eq, PATCH /Users/{{id}}\n\
         {requests} requests in {wall:.2}s = {:.0} requests/s (create {}, get {}, filter {}, patch {}); \
         errors {}; latency p50 {:.3} ms, p99 {:.3} ms\n",
        store,
        a.concurrency,
        a.seconds,
        requests as f64 / wall,
        total.ops[0],
        total.ops[1],
        total.ops[2],
        total.ops[3],
        total.errors,
        ms(percentile(&total.times, 50.0)),
        ms(percentile(&total.times, 99.0)),
    ))
}

// ---------------------------------------------------------------------------------------------------------
// 2b. Each endpoint alone, wrk-style: N connections looping one request for a fixed time.

#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    times: Vec<Duration>,
    /// CPU time the whole process (load generator and gateway) spent, when the platform says.
    cpu: Option<Duration>,
}

/// CPU time this process has used so far (user + system, all threads), from `/proc/self/stat` (Linux;
/// `None` elsewhere). A cost per request read from it moves far less with the machine's load than a rate.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces, so split after its closing parenthesis):
    // state is field 3, utime 14, stime 15, in clock ticks (USER_HZ, 100 on Linux).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.times.extend(other.times);
    }
}

/// Runs `clients` loops of `one(client, turn)` for `seconds`; each `Ok` is a timed request.
async fn hammer<F, Fut>(clients: usize, seconds: f64, one: F) -> (Tally, f64)
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let one = Arc::new(one);
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let cpu_before = process_cpu();
    let mut set = JoinSet::new();
    for c in 0..clients.max(1) {
        let one = one.clone();
        set.spawn(async move {
            let mut t = Tally::default();
            let mut turn = 0u64;
            while Instant::now() < until {
                turn += 1;
                let at = Instant::now();
                if one(c, turn).await {
                    t.ok += 1;
                    t.times.push(at.elapsed());
                } else {
                    t.errors += 1;
                }
            }
            t
        });
    }
    let mut total = Tally::default();
    while let Some(joined) = set.join_next().await {
        if let Ok(t) = joined {
            total.add(t);
        }
    }
    total.times.sort();
    total.cpu = cpu_before.zip(process_cpu()).map(|(before, after)| after.saturating_sub(before));
    (total, started.elapsed().as_secs_f64())
}

async fn send_ok(req: reqwest::RequestBuilder) -> bool {
    match req.send().await {
        Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
        _ => false,
    }
}

fn user_body(name: &str) -> Value {
    json!({"schemas": [CORE_USER], "userName": name, "active": true,
        "name": {"givenName": "Tp", "familyName": "Load"},
        "emails": [{"type": "work", "primary": true, "value": name}]})
}

async fn endpoints(a: &BenchArgs, store: &str) -> Result<String, String> {
    // Several gateways on one store (PostgreSQL): client c talks to gateway c % replicas. The sandbox
    // app's "vendor" lives in each gateway's process, so a user is PATCHed through the gateway that
    // created it; reads (shadow store) and creates go to any.
    let replicas = a.replicas.max(1);
    let mut demos = Vec::new();
    for _ in 0..replicas {
        demos.push(
            demo::start_with_limits(any_addr(), TOKEN, None, unthrottled(64), store)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let bases: Arc<Vec<String>> = Arc::new(demos.iter().map(|d| d.app_url("sandbox")).collect());
    // Names of this run only: a store file kept from an earlier run must not turn creates into conflicts.
    let run = std::process::id();
    let http = http_client(a.concurrency * 2)?;
    let clients = a.concurrency.max(1);
    // The same store size for every run, whatever its write speed: reads are measured over
    // `--endpoint-users` users loaded first (untimed), user i through gateway i % replicas.
    let loaded = entra_sim::for_each_bounded((0..a.endpoint_users).collect(), clients, |i| {
        let (http, base) = (http.clone(), bases[i % replicas].clone());
        async move {
            let name = format!("ep.{run}.load.{i}@bench.example.com");
            create(&http, &base, TOKEN, &user_body(&name)).await.ok().map(|id| (id, name))
        }
    })
    .await;
    let mut by_replica: Vec<Vec<(String, String)>> = vec![Vec::new(); replicas];
    for (i, user) in loaded.into_iter().enumerate() {
        if let Some(Some(user)) = user {
            by_replica[i % replicas].push(user);
        }
    }
    let by_replica = Arc::new(by_replica);
    let users: Arc<Vec<(String, String)>> = Arc::new(by_replica.iter().flatten().cloned().collect());
    if users.is_empty() {
        return Err("endpoints: no user was created".into());
    }
    let mut out = format!(
        "== endpoints: each alone, {clients} connections for {:.1}s each over {replicas} gateway(s), app `sandbox`, store {}, {} users loaded first\n   (cpu: this process's CPU time per answered request, load generator included)\n{:<8} {:>9} {:>10} {:>9} {:>9} {:>7} {:>8}\n",
        a.seconds, store, users.len(), "endpoint", "requests", "req/s", "p50 ms", "p99 ms", "errors", "cpu µs"
    );
    let mut row = |name: &str, (t, wall): (Tally, f64)| {
        let cpu = match t.cpu {
            Some(cpu) if t.ok > 0 => format!("{:.0}", cpu.as_secs_f64() * 1e6 / t.ok as f64),
            _ => "-".into(),
        };
        out.push_str(&format!(
            "{name:<8} {:>9} {:>10.0} {:>9.3} {:>9.3} {:>7} {cpu:>8}\n",
            t.ok,
            t.ok as f64 / wall,
            ms(percentile(&t.times, 50.0)),
            ms(percentile(&t.times, 99.0)),
            t.errors
        ));
    };
    let pick = |users: &[(String, String)], c: usize, turn: u64| {
        let i = (turn as usize).wrapping_mul(7919).wrapping_add(c.wrapping_mul(104_729)) % users.len();
        users[i].clone()
    };
    let get = {
        let (http, bases, users) = (http.clone(), bases.clone(), users.clone());
        hammer(clients, a.seconds, move |c, turn| {
            let (id, _) = pick(&users, c, turn);
            let base = &bases[c % replicas];
            send_ok(http.get(format!("{base}/Users/{id}")).bearer_auth(TOKEN))
        })
        .await
    };
    row("GET", get);
    let filter = {
        let (http, bases, users) = (http.clone(), bases.clone(), users.clone());
        hammer(clients, a.seconds, move |c, turn| {
            let (_, name) = pick(&users, c, turn);
            let base = &bases[c % replicas];
            let f: String = form_urlencoded::byte_serialize(format!("userName eq \"{name}\"").as_bytes()).collect();
            send_ok(http.get(format!("{base}/Users?filter={f}")).bearer_auth(TOKEN))
        })
        .await
    };
    row("filter", filter);
    // POST: every request a new user.
    let post = {
        let (http, bases) = (http.clone(), bases.clone());
        hammer(clients, a.seconds, move |c, turn| {
            let (http, base) = (http.clone(), bases[c % replicas].clone());
            async move {
                let name = format!("ep.{run}.{c}.{turn}@bench.example.com");
                create(&http, &base, TOKEN, &user_body(&name)).await.is_ok()
            }
        })
        .await
    };
    row("POST", post);
    let patch = {
        let (http, bases, by_replica) = (http.clone(), bases.clone(), by_replica.clone());
        hammer(clients, a.seconds, move |c, turn| {
            // Each client its own slice of its gateway's users, so no two PATCHes wait for one resource
            // lock; every PATCH changes the family name, so every one is a store write.
            let (base, users) = (&bases[c % replicas], &by_replica[c % replicas]);
            let (own, nth) = (clients.div_ceil(replicas), c / replicas);
            let slice = users.len() / own;
            let (id, _) =
                if slice > 0 { users[nth * slice + (turn as usize % slice)].clone() } else { pick(users, c, turn) };
            let body = entra_sim::patch_body(vec![
                json!({"op": "Replace", "path": "name.familyName", "value": format!("Load{c}x{turn}")}),
            ]);
            send_ok(
                http.patch(format!("{base}/Users/{id}"))
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/scim+json")
                    .body(body.to_string()),
            )
        })
        .await
    };
    row("PATCH", patch);
    for demo in demos {
        demo.running.stop().await.map_err(|e| e.to_string())?;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------------------
// 2c. Listing a page of users: flat in the store's size?

async fn paging(a: &BenchArgs) -> Result<String, String> {
    let mut out = format!(
        "== paging: GET /Users?count=100 from the first page, and from startIndex K spread over the store; \
         {} clients, 2,000 requests each, store {}\n{:>8} {:>10} {:>9} {:>9} {:>10}\n",
        a.concurrency, a.store, "users", "startIndex", "p50 ms", "p99 ms", "req/s"
    );
    // (p50, p99) per (users, spread) in order: (1k, first), (1k, spread), (N, first), (N, spread).
    let mut p99s = Vec::new();
    let mut p50s = Vec::new();
    for (round, users) in [1_000usize, a.paging_users].into_iter().enumerate() {
        let store = if a.store == ":memory:" { a.store.clone() } else { format!("{}.{round}", a.store) };
        let _ = std::fs::remove_file(&store);
        let demo = demo::start_with_limits(any_addr(), TOKEN, None, unthrottled(64), &store)
            .await
            .map_err(|e| e.to_string())?;
        let base = Arc::new(demo.app_url("sandbox"));
        let http = http_client(a.concurrency * 2)?;
        let made = entra_sim::for_each_bounded((0..users).collect(), a.concurrency, |i| {
            let (http, base) = (http.clone(), base.clone());
            async move { create(&http, &base, TOKEN, &user_body(&format!("pg.{i}@bench.example.com"))).await.is_ok() }
        })
        .await
        .into_iter()
        .filter(|ok| *ok == Some(true))
        .count();
        for spread in [false, true] {
            let requests = 2_000usize;
            let started = Instant::now();
            let mut t: Vec<Duration> = entra_sim::for_each_bounded((0..requests).collect(), a.concurrency, |i| {
                let (http, base) = (http.clone(), base.clone());
                async move {
                    let start = if spread { 1 + (i * 7919) % users.saturating_sub(100).max(1) } else { 1 };
                    let at = Instant::now();
                    let url = format!("{base}/Users?startIndex={start}&count=100");
                    send_ok(http.get(url).bearer_auth(TOKEN)).await.then(|| at.elapsed())
                }
            })
            .await
            .into_iter()
            .flatten()
            .flatten()
            .collect();
            let wall = started.elapsed().as_secs_f64();
            t.sort();
            let p99 = ms(percentile(&t, 99.0));
            p99s.push(p99);
            p50s.push(ms(percentile(&t, 50.0)));
            out.push_str(&format!(
                "{:>8} {:>10} {:>9.3} {:>9.3} {:>10.0}   ({} created, {} answered)\n",
                users,
                if spread { "spread" } else { "1" },
                ms(percentile(&t, 50.0)),
                p99,
                t.len() as f64 / wall,
                made,
                t.len()
            ));
        }
        demo.running.stop().await.map_err(|e| e.to_string())?;
        if store != ":memory:" {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{store}{suffix}"));
            }
        }
    }
    if let [first_small, spread_small, first_large, spread_large] = p99s[..] {
        out.push_str(&format!(
            "p99 {} users / 1,000 users: first page {:.2}, spread {:.2} (goal <= 2)\n",
            a.paging_users,
            first_large / first_small.max(1e-9),
            spread_large / spread_small.max(1e-9)
        ));
    }
    // The same question asked within one store, seconds apart: on a shared machine the load moves more
    // between the two stores' runs than the offset walk costs.
    if let ([_, _, first50, spread50], [_, _, first99, spread99]) = (&p50s[..], &p99s[..]) {
        out.push_str(&format!(
            "spread page / first page at {} users: p50 {:.2}, p99 {:.2}\n",
            a.paging_users,
            spread50 / first50.max(1e-9),
            spread99 / first99.max(1e-9)
        ));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------------------
// 4. An initial cycle against a throttled vendor.

async fn throttled_cycle(a: &BenchArgs, users: usize, rate: f64) -> Result<String, String> {
    let limits = LimitsConfig {
        requests_per_second: Some(rate),
        burst: Some(a.burst.max(1)),
        max_in_flight: Some(64),
        ..Default::default()
    };
    let demo = demo::start_with_limits(any_addr(), TOKEN, None, limits, &a.store).await.map_err(|e| e.to_string())?;
    let sim = sim(&demo, &a.vendor)?;
    let per_window = rate.floor().max(1.0) as u32;
    sim.set_faults(SimFaults {
        throttle: Some(Throttle { requests: per_window, per: Duration::from_secs(1), retry_after_secs: 1 }),
        ..Default::default()
    });
    let mut opts = Options::new(demo.app_url(&a.vendor), TOKEN, users);
    opts.concurrency = a.concurrency;
    opts.incremental = false;
    opts.verify = false;
    opts.seed = 4;
    let mut report = entra_sim::run(&opts).await?;
    let c = sim.counters();
    let statuses = report.statuses.clone();
    // Verification reads the shadow store; lift the throttle so it cannot disturb it.
    sim.set_faults(SimFaults::default());
    entra_sim::verify(&opts, &mut report).await?;
    let held = sim.users_json().len();
    let ideal = c.requests as f64 / rate;
    let secs = report.duration.as_secs_f64();
    demo.running.stop().await.map_err(|e| e.to_string())?;
    // Slow is a figure; wrong is a failure.
    if !report.ok() {
        return Err(format!("cycle at R = {rate}: end state not as intended: {} failures", report.failure_count));
    }
    Ok(format!(
        "== cycle: initial cycle, N = {users} users, app `{}` limited to {rate} requests/s (burst {}), \
         simulator throttled at {per_window} per 1 s window; driver concurrency {}\n\
         duration {secs:.2}s; vendor calls {} (GET {}, POST {}); ideal = vendor calls / R = {ideal:.2}s; \
         duration / ideal = {:.3} (goal <= 1.05)\n\
         duration / (N creates / R) = {:.3} (goal <= 1.1: about one vendor call per new user)\n\
         429s sent by the simulator: {} (goal 0); peak {} vendor requests in one second, mean {:.1}/s\n\
         Entra side: {} requests, statuses {:?}, retries {}; end state {} ({} users at the vendor)\n",
        a.vendor,
        a.burst.max(1),
        a.concurrency,
        c.requests,
        c.method("GET"),
        c.method("POST"),
        secs / ideal.max(1e-9),
        secs / (users as f64 / rate).max(1e-9),
        c.throttled,
        c.peak_requests_per_second,
        c.mean_requests_per_second,
        report.entra_requests(),
        statuses,
        report.retries,
        "verified, 0 failures",
        held
    ))
}

// ---------------------------------------------------------------------------------------------------------
// 5. Resident memory of a gateway process.

/// VmRSS of `pid` in KiB (`self` for this process).
pub fn rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A `scim-bridge serve` child with one sandbox app on a file store; killed on drop.
struct Child {
    child: std::process::Child,
    dir: PathBuf,
    base: String,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn spawn_gateway() -> Result<Child, String> {
    let dir = std::env::temp_dir().join(format!("scim-bridge-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let port = std::net::TcpListener::bind(any_addr()).and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
    let config = dir.join("bench.yaml");
    let yaml = format!(
        "listen: \"127.0.0.1:{port}\"\nconnections:\n  max_per_source: 1024\nstore:\n  path: \"{}\"\napps:\n  sandbox:\n    type: sandbox\n    token_sha256: \"{}\"\n",
        dir.join("store.sqlite").display(),
        hex::encode(scim_bridge::http::token_hash(TOKEN))
    );
    std::fs::write(&config, yaml).map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.join("gateway.log")).map_err(|e| e.to_string())?;
    // The gateway binary beside this one (the dev tool has no `serve` since the layout split; this bench
    // then failed with "unrecognized subcommand").
    let exe = std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("scim-bridge");
    if !exe.is_file() {
        return Err(format!(
            "{} not found: build it beside this tool (cargo build --release -p scim-bridge)",
            exe.display()
        ));
    }
    let child = std::process::Command::new(exe)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        // Not SCIM_BRIDGE_LOG: every SCIM_BRIDGE_* variable is read as a config key.
        .env_remove("SCIM_BRIDGE_LOG")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start the gateway: {e}"))?;
    let child = Child { child, dir, base: format!("http://127.0.0.1:{port}/scim/sandbox/v2") };
    let health = format!("http://127.0.0.1:{port}/healthz");
    for _ in 0..200 {
        if reqwest::get(&health).await.is_ok_and(|r| r.status().is_success()) {
            return Ok(child);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = std::fs::read_to_string(child.dir.join("gateway.log")).unwrap_or_default();
    Err(format!("the gateway child did not become healthy within 10 s; its log:\n{log}"))
}

async fn memory(a: &BenchArgs) -> Result<String, String> {
    let gw = spawn_gateway().await?;
    let pid = gw.child.id().to_string();
    let rss = || rss_kib(&pid).unwrap_or(0);
    let idle = rss();
    let mut opts = Options::new(&gw.base, TOKEN, a.memory_users);
    opts.concurrency = a.concurrency;
    opts.incremental = false;
    opts.verify = false;
    opts.role = None;
    opts.seed = 5;
    let load = entra_sim::run(&opts).await?;
    let loaded = rss();
    let mut out = format!(
        "== memory: `scim-bridge serve` child process, one sandbox app, SQLite file store, RUST_LOG=warn\n\
         idle RSS {:.1} MiB; after loading {} users ({} requests in {:.1}s, {} failures): RSS {:.1} MiB \
         ({:.0} bytes per user above idle)\n",
        mib(idle),
        a.memory_users,
        load.entra_requests(),
        load.duration.as_secs_f64(),
        load.failure_count,
        mib(loaded),
        (loaded.saturating_sub(idle) * 1024) as f64 / a.memory_users.max(1) as f64
    );
    if a.soak_seconds == 0 {
        return Ok(out);
    }
    // A soak takes minutes: show the load figures now and each sample as it is taken.
    print!("{out}");
    out.clear();
    let ids: Arc<Vec<(String, String)>> =
        Arc::new(load.users.iter().filter_map(|u| u.id.clone().map(|id| (u.user_name.clone(), id))).collect());
    if ids.is_empty() {
        return Err("no users were loaded".into());
    }
    let http = http_client(a.soak_clients * 2)?;
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(a.soak_seconds);
    let mut set = JoinSet::new();
    for w in 0..a.soak_clients.max(1) {
        let (http, base, ids, done, errors) =
            (http.clone(), gw.base.clone(), ids.clone(), done.clone(), errors.clone());
        set.spawn(async move {
            let mut rng = StdRng::seed_from_u64(w as u64);
            let mut k = 0u64;
            while Instant::now() < until {
                k += 1;
                let (name, id) = &ids[rng.random_range(0..ids.len())];
                let ok = soak_turn(&http, &base, w, k, name, id).await;
                done.fetch_add(ok.0, Ordering::Relaxed);
                errors.fetch_add(ok.1, Ordering::Relaxed);
            }
        });
    }
    let started = Instant::now();
    let mut series = vec![(0u64, rss(), 0u64)];
    let period = Duration::from_secs(a.sample_seconds.max(1));
    while Instant::now() < until {
        tokio::time::sleep(period.min(until.saturating_duration_since(Instant::now()))).await;
        series.push((started.elapsed().as_secs(), rss(), done.load(Ordering::Relaxed)));
        if let Some((t, r, n)) = series.last() {
            println!("  sample: {t}s RSS {:.1} MiB, {n} requests", mib(*r));
        }
    }
    while set.join_next().await.is_some() {}
    let first = series.first().map(|s| s.1).unwrap_or(0);
    let last = series.last().map(|s| s.1).unwrap_or(0);
    let peak = series.iter().map(|s| s.1).max().unwrap_or(0);
    let requests = done.load(Ordering::Relaxed);
    out.push_str(&format!(
        "soak: {} clients for {}s (match by filter + PATCH of a random user; every 20th turn also a create \
         and a delete): {requests} requests ({:.0}/s), {} errors\nRSS series (s, MiB, requests so far): {}\n\
         growth over the soak: {:+.1} MiB ({:.1} -> {:.1}; peak {:.1}); since idle: {:+.1} MiB\n",
        a.soak_clients,
        a.soak_seconds,
        requests as f64 / started.elapsed().as_secs_f64().max(1e-9),
        errors.load(Ordering::Relaxed),
        series.iter().map(|(t, r, n)| format!("({t}, {:.1}, {n})", mib(*r))).collect::<Vec<_>>().join(" "),
        mib(last) - mib(first),
        mib(first),
        mib(last),
        mib(peak),
        mib(last) - mib(idle),
    ));
    Ok(out)
}

/// One soak turn: (requests answered 2xx, errors).
async fn soak_turn(http: &reqwest::Client, base: &str, w: usize, k: u64, name: &str, id: &str) -> (u64, u64) {
    let mut ok = 0;
    let mut bad = 0;
    let mut tally = |r: Result<reqwest::Response, reqwest::Error>| match r {
        Ok(r) if r.status().is_success() => ok += 1,
        _ => bad += 1,
    };
    let filter: String = form_urlencoded::byte_serialize(format!("userName eq \"{name}\"").as_bytes()).collect();
    tally(http.get(format!("{base}/Users?filter={filter}")).bearer_auth(TOKEN).send().await);
    let patch = entra_sim::patch_body(vec![
        json!({"op": "Replace", "path": "name.familyName", "value": format!("Soak{w}-{k}")}),
    ]);
    tally(
        http.patch(format!("{base}/Users/{id}"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/scim+json")
            .body(patch.to_string())
            .send()
            .await,
    );
    if k.is_multiple_of(20) {
        let user_name = format!("soak.{w}.{k}@bench.example.com");
        let body = json!({"schemas": [CORE_USER], "userName": user_name, "active": true,
            "emails": [{"type": "work", "primary": true, "value": user_name}]});
        match create(http, base, TOKEN, &body).await {
            Ok(new_id) => {
                ok += 1;
                match http.delete(format!("{base}/Users/{new_id}")).bearer_auth(TOKEN).send().await {
                    Ok(r) if r.status().is_success() => ok += 1,
                    _ => bad += 1,
                }
            }
            Err(_) => bad += 1,
        }
    }
    (ok, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&[], 99.0), Duration::ZERO);
    }

    #[test]
    fn rss_of_self_is_readable() {
        assert!(rss_kib("self").is_some_and(|k| k > 0));
    }
}
