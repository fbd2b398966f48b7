//! Operations, black-box: `check` against simulators with a good and a revoked credential, the `audit`
//! command, `/metrics` names and labels after a small run, config errors that name key and file, and a run
//! of the real binary with secrets configured whose entire log output must contain none of them.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use scim_bridge_devkit::demo;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_scim-bridge");

fn sha(token: &str) -> String {
    common::sha(token)
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A config with one app per simulator, each with its own token, on `store`.
fn vendor_config(listen: &str, store: &str, sims: &[(&str, &demo::DemoSimOptions)]) -> String {
    let mut out = format!("listen: \"{listen}\"\nstore:\n  path: \"{store}\"\napps:\n");
    for (app, opts) in sims {
        out.push_str(&format!(
            "  {app}:\n    type: {}\n    token_sha256: \"{}\"\n",
            opts.vendor,
            sha(&format!("{app}-token"))
        ));
        for (k, v) in &opts.options {
            out.push_str(&format!("    {k}: {v}\n"));
        }
    }
    out
}

async fn sim(vendor: &'static str, credential: &str) -> (simkit::DemoSim, demo::DemoSimOptions) {
    let s = demo::simulator(vendor, credential, None).await.unwrap();
    let opts = demo::DemoSimOptions { vendor, options: s.app_options.clone() };
    (s, opts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_good_and_revoked_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let (good_sim, good) = sim("promapp", "right-token").await;
    let (_bad_sim, mut bad) = sim("prompt", "right-code").await;
    bad.options.insert("auth_code".into(), json!("revoked-code"));
    let store = dir.path().join("s.sqlite");
    let cfg = write(
        dir.path(),
        "proxy.yaml",
        &vendor_config("127.0.0.1:0", store.to_str().unwrap(), &[("good", &good), ("bad", &bad)]),
    );

    let checks = scim_bridge::check::run(&cfg, false).await.unwrap();
    let good_check = checks.iter().find(|c| c.app == "good").unwrap();
    let bad_check = checks.iter().find(|c| c.app == "bad").unwrap();
    assert!(good_check.ok(), "{good_check:?}");
    assert!(good_check.reachable && good_check.credential_accepted);
    assert!(!bad_check.ok(), "{bad_check:?}");
    assert!(!bad_check.credential_accepted);
    let text = scim_bridge::check::render(&checks);
    assert!(text.contains("1 passed, 1 failed"), "{text}");
    assert!(!text.contains("revoked-code") && !text.contains("right-token"), "no credential in the report: {text}");
    // Which credential each app holds, by fingerprint only (`printf %s right-token | sha256sum`).
    assert!(text.contains(&adapter_api::secret::fingerprint("right-token")), "{text}");
    assert!(text.contains(&adapter_api::secret::fingerprint("revoked-code")), "{text}");
    assert!(good_sim.sim.counters().requests >= 1, "the probe really reached the vendor");

    // Through the binary: exit status says it too.
    let out = Command::new(BIN).args(["check", "--config"]).arg(&cfg).output().unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FAIL") && stdout.contains("ok"), "{stdout}");
}

#[test]
fn config_errors_name_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("unknown-top.yaml", "lissten: 1\n".to_string(), "lissten"),
        ("bad-hash.yaml", "apps:\n  a:\n    type: sandbox\n    token_sha256: nothex\n".to_string(), "apps.a.token_sha256"),
        (
            "dup-token.yaml",
            format!("apps:\n  a:\n    type: sandbox\n    token_sha256: {0}\n  b:\n    type: sandbox\n    token_sha256: {0}\n", sha("x")),
            "apps.b.token_sha256",
        ),
        ("unknown-type.yaml", format!("apps:\n  a:\n    type: salesforce\n    token_sha256: {}\n", sha("x")), "apps.a"),
        (
            "missing-secret.yaml",
            format!("apps:\n  p:\n    type: prompt\n    token_sha256: {}\n    default_department: D\n    default_section: S\n", sha("x")),
            "auth_code",
        ),
        (
            "missing-department.yaml",
            format!("apps:\n  p:\n    type: prompt\n    token_sha256: {}\n    auth_code: c\n    default_section: S\n", sha("x")),
            "default_department",
        ),
        (
            "bad-url.yaml",
            format!("apps:\n  p:\n    type: promapp\n    token_sha256: {}\n    access_token: t\n    base_url: \"http://vendor.example.com/api/scim\"\n", sha("x")),
            "base_url",
        ),
        (
            "secret-file.yaml",
            format!("apps:\n  p:\n    type: promapp\n    token_sha256: {}\n    access_token_file: /nonexistent/token\n", sha("x")),
            "access_token_file",
        ),
        (
            "impossible-limits.yaml",
            format!("apps:\n  a:\n    type: sandbox\n    token_sha256: {}\n    limits:\n      attempt_timeout_ms: 5000\n      deadline_ms: 1000\n", sha("x")),
            "apps.a.limits.attempt_timeout_ms",
        ),
        (
            // Impossible only together with the vendor's default deadline: checked on the merged limits.
            "limits-past-default-deadline.yaml",
            format!("apps:\n  p:\n    type: promapp\n    token_sha256: {}\n    access_token: t\n    limits:\n      attempt_timeout_ms: 600000\n", sha("x")),
            "apps.p: limits.attempt_timeout_ms (600000 ms) cannot fit in deadline_ms",
        ),
        (
            "zero-queue.yaml",
            format!("apps:\n  p:\n    type: promapp\n    token_sha256: {}\n    access_token: t\n    limits:\n      queue_timeout_ms: 0\n", sha("x")),
            "limits.queue_timeout_ms",
        ),
        ("tiny-budget.yaml", format!("request_budget_ms: 10\napps:\n  a:\n    type: sandbox\n    token_sha256: {}\n", sha("x")), "request_budget_ms"),
        ("vendor-typo.yaml", format!("apps:\n  p:\n    type: promapp\n    token_sha256: {}\n    access_token: t\n    rol_map: {{}}\n", sha("x")), "rol_map"),
        ("admin-bad-hash.yaml", "admin_listen: 127.0.0.1:0\nadmin:\n  token_sha256: nothex\n".to_string(), "admin.token_sha256"),
        ("admin-no-listener.yaml", format!("admin:\n  token_sha256: {}\n", sha("admin")), "admin.token_sha256"),
        (
            "admin-is-an-app-token.yaml",
            format!("admin_listen: 127.0.0.1:0\nadmin:\n  token_sha256: {0}\napps:\n  a:\n    type: sandbox\n    token_sha256: {0}\n", sha("x")),
            "admin.token_sha256",
        ),
        (
            "group-roles-empty-group.yaml",
            format!("apps:\n  p:\n    type: promapp\n    token_sha256: {}\n    access_token: t\n    group_roles:\n      - {{group: \"\", role: Viewer}}\n", sha("x")),
            "apps.p.group_roles[0].group",
        ),
        (
            "group-roles-name-and-id.yaml",
            format!("apps:\n  p:\n    type: promapp\n    token_sha256: {}\n    access_token: t\n    group_roles:\n      - {{group: G, group_id: 0b6c1a6e-3f0a-4d5e-9c1b-2a7d8e9f0a1b, role: Viewer}}\n", sha("x")),
            "apps.p.group_roles[0]: give exactly one of group_id",
        ),
        (
            "group-roles-no-group.yaml",
            format!("apps:\n  p:\n    type: promapp\n    token_sha256: {}\n    access_token: t\n    group_roles:\n      - {{role: Viewer}}\n", sha("x")),
            "apps.p.group_roles[0]: give exactly one of group_id",
        ),
        (
            "group-roles-not-an-object-id.yaml",
            format!("apps:\n  p:\n    type: promapp\n    token_sha256: {}\n    access_token: t\n    group_roles:\n      - {{group_id: Process Owners, role: Viewer}}\n", sha("x")),
            "apps.p.group_roles[0].group_id: 'Process Owners' is not an Entra objectId",
        ),
        (
            "group-roles-same-id-twice.yaml",
            format!("apps:\n  p:\n    type: promapp\n    token_sha256: {}\n    access_token: t\n    group_roles:\n      - {{group_id: 0b6c1a6e-3f0a-4d5e-9c1b-2a7d8e9f0a1b, role: Viewer}}\n      - {{group_id: 0B6C1A6E-3F0A-4D5E-9C1B-2A7D8E9F0A1B, role: Editor}}\n", sha("x")),
            "apps.p.group_roles[1].group_id: '0B6C1A6E-3F0A-4D5E-9C1B-2A7D8E9F0A1B' is already mapped by group_roles[0]",
        ),
        (
            "group-roles-name-with-spaces.yaml",
            format!("apps:\n  p:\n    type: promapp\n    token_sha256: {}\n    access_token: t\n    group_roles:\n      - {{group: \"Process Owners \", role: Viewer}}\n", sha("x")),
            "apps.p.group_roles[0].group: 'Process Owners ' has leading or trailing spaces",
        ),
        (
            "group-roles-unknown-role.yaml",
            format!("apps:\n  p:\n    type: prodpad\n    token_sha256: {}\n    mode: scim\n    base_url: https://pp.example/scim\n    api_key: k\n    group_roles:\n      - {{group: G, role: Owner}}\n", sha("x")),
            "apps.p.group_roles[0].role: 'Owner' is not a ProdPad role",
        ),
        ("pg-password-in-url.yaml", "store:\n  url: postgres://gw:hunter2@127.0.0.1:1/scim\n".to_string(), "store.url"),
        (
            "pg-password-file.yaml",
            "store:\n  url: postgres://gw@127.0.0.1:1/scim\n  password_file: /nonexistent/pg-password\n".to_string(),
            "store.password_file",
        ),
        ("pg-schema-without-url.yaml", "store:\n  schema: gw\n".to_string(), "store.schema"),
    ];
    for (file, yaml, key) in cases {
        let path = write(dir.path(), file, &yaml);
        let out = Command::new(BIN).args(["check", "--offline", "--config"]).arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file}: should fail");
        assert!(stderr.contains(key), "{file}: error should name `{key}`: {stderr}");
        assert!(stderr.contains(file), "{file}: error should name the file: {stderr}");
        assert!(!stderr.contains("hunter2"), "{file}: a password is never repeated: {stderr}");
    }
    // Environment variables override the file, and their errors name the variable.
    let path =
        write(dir.path(), "ok.yaml", &format!("apps:\n  a:\n    type: sandbox\n    token_sha256: {}\n", sha("x")));
    let out = Command::new(BIN)
        .args(["check", "--offline", "--config"])
        .arg(&path)
        .env("SCIM_BRIDGE_LISTEN", "nonsense")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("SCIM_BRIDGE_LISTEN"), "{stderr}");
}

#[tokio::test]
async fn metrics_after_a_small_run_and_audit_query() {
    let dir = tempfile::tempdir().unwrap();
    let (_s, mut opts) = sim("promapp", "cred").await;
    let soon = time::OffsetDateTime::now_utc().date() + time::Duration::days(10);
    opts.options.insert("token_expires_at".into(), json!(soon.to_string()));
    let store = dir.path().join("store.sqlite");
    let yaml = vendor_config("127.0.0.1:0", store.to_str().unwrap(), &[("pm", &opts)]);
    let cfg_path = write(dir.path(), "proxy.yaml", &yaml);
    let cfg = scim_bridge::config::Config::load(&cfg_path).unwrap();
    let gw = scim_bridge::server::build_gateway(&cfg, "proxy.yaml").unwrap();
    let running = scim_bridge::server::start(&cfg, gw).await.unwrap();
    let base = format!("http://{}/scim/pm/v2", running.addr);
    let client = reqwest::Client::new();
    let body = json!({"userName": "metrics@example.com", "active": true, "name": {"givenName": "M", "familyName": "X"},
        "emails": [{"type": "work", "value": "metrics@example.com"}], "roles": [{"value": "Editor"}]});
    let r = client.post(format!("{base}/Users")).bearer_auth("pm-token").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let refused = json!({"userName": "nobody@example.com", "roles": [{"value": "msiam_access"}]});
    assert_eq!(
        client.post(format!("{base}/Users")).bearer_auth("pm-token").json(&refused).send().await.unwrap().status(),
        400
    );
    assert_eq!(client.get(format!("{base}/Users")).bearer_auth("wrong").send().await.unwrap().status(), 401);
    let disable = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "Replace", "path": "active", "value": "False"}]});
    assert_eq!(
        client
            .patch(format!("{base}/Users/{id}"))
            .bearer_auth("pm-token")
            .json(&disable)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // The background probe (every 6 h in `serve`) sees the token expiring soon.
    scim_bridge::probe::probe_apps(&running.gateway).await;
    let metrics = client.get(format!("http://{}/metrics", running.addr)).send().await.unwrap().text().await.unwrap();
    for needle in [
        "scim_bridge_requests_total{app=\"pm\",operation=\"create\",status=\"201\"} 1",
        "scim_bridge_requests_total{app=\"pm\",operation=\"create\",status=\"400\"} 1",
        "scim_bridge_requests_total{app=\"pm\",operation=\"auth\",status=\"401\"} 1",
        "scim_bridge_requests_total{app=\"pm\",operation=\"patch\",status=\"200\"} 1",
        "scim_bridge_vendor_calls_total{app=\"pm\",outcome=\"2xx\"}",
        "scim_bridge_breaker_state{app=\"pm\",state=\"closed\"} 1",
        "scim_bridge_breaker_state{app=\"pm\",state=\"open\"} 0",
        "scim_bridge_vendor_retries_total{app=\"pm\"} 0",
        "scim_bridge_limiter_wait_seconds_total{app=\"pm\"}",
        "scim_bridge_breaker_open{app=\"pm\"} 0",
        "scim_bridge_vendor_state{app=\"pm\",state=\"ok\"} 1",
        "scim_bridge_vendor_errors_total{app=\"pm\",kind=\"invalid\",origin=\"vendor\"} 1",
        "scim_bridge_shadow_resources{app=\"pm\",type=\"User\"} 1",
        "scim_bridge_audit_entries 3",
        "scim_bridge_vendor_warnings{app=\"pm\"} 1",
        // OpenMetrics names a counter's family without `_total`; its samples carry it.
        "# TYPE scim_bridge_requests counter",
        "scim_bridge_request_duration_seconds_count{app=\"pm\",operation=\"create\"} 2",
        "scim_bridge_request_duration_seconds_bucket{le=\"+Inf\",app=\"pm\",operation=\"create\"} 2",
        "scim_bridge_vendor_attempt_duration_seconds_count{app=\"pm\"} ",
    ] {
        assert!(metrics.contains(needle), "missing `{needle}` in:\n{metrics}");
    }
    // A reconcile pass's vendor attempts are timed into the same histogram as Entra requests' attempts.
    let attempts_observed = |metrics: &str| -> u64 {
        let needle = "scim_bridge_vendor_attempt_duration_seconds_count{app=\"pm\"} ";
        let line = metrics.lines().find(|l| l.starts_with(needle)).unwrap_or_else(|| panic!("no {needle}"));
        line[needle.len()..].trim().parse().unwrap()
    };
    let before = attempts_observed(&metrics);
    let app = running.gateway.apps["pm"].clone();
    let opts = scim_bridge::reconcile::PassOptions {
        mode: scim_bridge::config::ReconcileMode::Report,
        dry_run: true,
        max_repairs: 0,
    };
    let report = running.gateway.reconcile(&app, &opts, false, &|_| {}).await;
    assert!(report.vendor_calls >= 1, "the pass listed the vendor: {report:?}");
    let metrics = client.get(format!("http://{}/metrics", running.addr)).send().await.unwrap().text().await.unwrap();
    let after = attempts_observed(&metrics);
    assert!(after >= before + u64::from(report.vendor_calls), "{before} + {} > {after}", report.vendor_calls);
    let ready = client.get(format!("http://{}/readyz", running.addr)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["apps"]["pm"]["state"], "ok", "{ready}");
    let warning = ready["apps"]["pm"]["warnings"][0].as_str().unwrap_or_default();
    assert!(warning.contains(&format!("expires on {soon}")), "{ready}");
    running.stop().await.unwrap();

    // The audit command reads the same store: newest first, filtered by user, as JSON and as a table.
    let out = Command::new(BIN)
        .args(["audit", "--app", "pm", "--user", "METRICS@example.com", "--json", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let ops: Vec<&str> = lines.iter().map(|e| e["operation"].as_str().unwrap()).collect();
    assert_eq!(ops, ["update", "create"]);
    assert_eq!(lines[0]["after"]["active"], false);
    assert_eq!(lines[1]["vendor_calls"], 1);
    assert_eq!(lines[1]["attempt_log"][0]["method"], "POST", "{}", lines[1]);
    assert_eq!(lines[1]["attempt_log"][0]["outcome"], "201", "{}", lines[1]);
    let out =
        Command::new(BIN).args(["audit", "--app", "pm", "--since", "1h", "--config"]).arg(&cfg_path).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.lines().next().unwrap().starts_with("TIME"), "{table}");
    assert!(table.contains("POST 201"), "the table lists vendor attempts: {table}");
    assert!(table.contains("nobody@example.com") && table.contains("invalid"), "refusals are audited too: {table}");
    let out = Command::new(BIN).args(["audit", "--app", "nope", "--config"]).arg(&cfg_path).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--app"));
}

/// Runs `serve` with secrets configured, exercises it (including failures that log), stops it with SIGTERM
/// and returns everything it logged.
async fn serve_and_capture(log_format: &str) -> (String, Vec<&'static str>) {
    let dir = tempfile::tempdir().unwrap();
    let (_ok_sim, ok) = sim("promapp", "promapp-secret-credential-1").await;
    let (_bad_sim, mut bad) = sim("prodpad", "prodpad-secret-key-2").await;
    bad.options.insert("api_key".into(), json!("prodpad-wrong-secret-key-3"));
    let env_secret = "prompt-secret-from-env-4";
    let (_env_sim, mut via_env) = sim("prompt", env_secret).await;
    via_env.options.remove("auth_code");
    via_env.options.insert("auth_code_env".into(), json!("TEST_PROMPT_CODE"));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let store = dir.path().join("s.sqlite");
    let yaml = vendor_config(
        &format!("127.0.0.1:{port}"),
        store.to_str().unwrap(),
        &[("ok", &ok), ("bad", &bad), ("env", &via_env)],
    );
    let cfg = write(dir.path(), "proxy.yaml", &yaml);
    let mut child = Command::new(BIN)
        .args(["--log-format", log_format, "serve", "--config"])
        .arg(&cfg)
        .env("TEST_PROMPT_CODE", env_secret)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..400 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let user = |n: &str| json!({"userName": n, "active": true, "roles": [{"value": "Editor"}], "emails": [{"type": "work", "value": n}], "name": {"givenName": "A", "familyName": "B"}});
    for app in ["ok", "bad", "env"] {
        let token = format!("{app}-token");
        let _ = client
            .get(format!("{base}/scim/{app}/v2/Users?filter=userName+eq+%22x%22"))
            .bearer_auth(&token)
            .send()
            .await;
        let _ = client
            .post(format!("{base}/scim/{app}/v2/Users"))
            .bearer_auth(&token)
            .json(&user(&format!("{app}@example.com")))
            .send()
            .await;
        let _ = client.get(format!("{base}/scim/{app}/v2/Users")).bearer_auth("not-the-token").send().await;
        let _ = client.post(format!("{base}/scim/{app}/v2/Users")).bearer_auth(&token).body("{broken").send().await;
    }
    let _ = client.get(format!("{base}/metrics")).send().await;
    // SAFETY of the cast: the pid of a child we spawned.
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    let mut logs = String::new();
    child.stderr.take().unwrap().read_to_string(&mut logs).unwrap();
    child.stdout.take().unwrap().read_to_string(&mut logs).unwrap();
    assert!(status.success(), "serve exits cleanly on SIGTERM: {status}\n{logs}");
    let secrets = vec![
        "promapp-secret-credential-1",
        "prodpad-secret-key-2",
        "prodpad-wrong-secret-key-3",
        "prompt-secret-from-env-4",
        "ok-token",
        "bad-token",
        "env-token",
        "not-the-token",
    ];
    (logs, secrets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_ever_appears_in_logs() {
    for format in ["text", "json"] {
        let (logs, secrets) = serve_and_capture(format).await;
        assert!(logs.lines().count() > 20, "{format}: the run logged (trace level): {logs}");
        assert!(logs.contains("request done") || logs.contains("request refused"), "{format}: {logs}");
        for s in &secrets {
            assert!(!logs.contains(s), "{format}: secret {s} leaked into the logs");
        }
        if format == "json" {
            let mut saw_app = false;
            let mut saw_fields = false;
            for line in logs.lines().filter(|l| l.starts_with('{')) {
                let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
                saw_app |= v.to_string().contains("\"app\":\"bad\"");
                let span = &v["span"];
                saw_fields |=
                    ["operation", "status", "vendor_calls", "attempts", "outcome", "duration_ms", "request_id"]
                        .iter()
                        .all(|f| !span[*f].is_null());
            }
            assert!(saw_app, "JSON logs carry the request span fields");
            assert!(
                saw_fields,
                "a request's log line has operation, status, vendor calls, attempts, outcome, duration"
            );
        }
    }
}
