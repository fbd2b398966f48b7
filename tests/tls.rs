//! Black-box: HTTPS with a generated certificate; TLS 1.2 and 1.3 handshakes; reload keeps serving.

mod common;

use common::*;

fn write_cert(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert_pem = cert.cert.pem();
    let (c, k) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    std::fs::write(&c, &cert_pem).unwrap();
    std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
    (c, k, cert_pem.into_bytes())
}

fn client(ca_pem: &[u8], version: reqwest::tls::Version) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).unwrap())
        .min_tls_version(version)
        .max_tls_version(version)
        .build()
        .unwrap()
}

#[tokio::test]
async fn serves_https_with_tls12_and_tls13_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = write_cert(dir.path(), "first");
    let extra = format!("tls:\n  cert: \"{}\"\n  key: \"{}\"\n", cert.display(), key.display());
    let s = start_with(config(":memory:", &extra)).await;
    assert!(s.running.is_tls());
    let url = format!("https://localhost:{}/scim/sandbox/v2/Users", s.running.addr.port());

    for version in [reqwest::tls::Version::TLS_1_2, reqwest::tls::Version::TLS_1_3] {
        let resp = client(&ca, version).get(&url).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{version:?}");
    }

    // Plain HTTP on the TLS port is not served.
    let plain = reqwest::Client::new().get(url.replace("https", "http")).bearer_auth(TOKEN).send().await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));

    // A keep-alive connection opened before the reload...
    let kept = client(&ca, reqwest::tls::Version::TLS_1_3);
    assert_eq!(kept.get(&url).bearer_auth(TOKEN).send().await.unwrap().status(), 200);

    // Swap in a new certificate: new handshakes trust only the new one.
    let (cert2, key2, ca2) = write_cert(dir.path(), "second");
    std::fs::copy(&cert2, &cert).unwrap();
    std::fs::copy(&key2, &key).unwrap();
    s.running.reload_tls().await.unwrap();
    // ...is still served after it: the client trusts only the old certificate, so this can only succeed
    // on the connection it already had (a new handshake would fail, as the next assertion shows).
    assert_eq!(kept.get(&url).bearer_auth(TOKEN).send().await.unwrap().status(), 200, "connection kept");
    let resp = client(&ca2, reqwest::tls::Version::TLS_1_3).get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(client(&ca, reqwest::tls::Version::TLS_1_3).get(&url).send().await.is_err(), "old certificate retired");

    // A broken file leaves the current certificate in place.
    std::fs::write(&cert, "not a certificate").unwrap();
    assert!(s.running.reload_tls().await.is_err());
    let resp = client(&ca2, reqwest::tls::Version::TLS_1_2).get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    s.running.stop().await.unwrap();
}

/// The real process: `serve` with TLS reloads its certificate on SIGHUP.
#[tokio::test]
async fn sighup_reloads_the_certificate_of_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = write_cert(dir.path(), "first");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let yaml = format!(
        "listen: \"127.0.0.1:{port}\"\nstore:\n  path: \":memory:\"\ntls:\n  cert: \"{}\"\n  key: \"{}\"\napps:\n  sandbox:\n    type: sandbox\n    token_sha256: \"{}\"\n",
        cert.display(),
        key.display(),
        sha(TOKEN)
    );
    let config = dir.path().join("proxy.yaml");
    std::fs::write(&config, yaml).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_scim-bridge"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("https://localhost:{port}/scim/sandbox/v2/Users");
    let up = serves_with(&url, &ca).await;
    assert!(up, "the gateway came up with the first certificate");

    let (cert2, key2, ca2) = write_cert(dir.path(), "second");
    std::fs::copy(&cert2, &cert).unwrap();
    std::fs::copy(&key2, &key).unwrap();
    let _ = std::process::Command::new("kill").args(["-HUP", &child.id().to_string()]).status();
    let reloaded = serves_with(&url, &ca2).await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(reloaded, "after SIGHUP the new certificate is served");
}

/// Whether `url` answers a client trusting only `ca_pem`, within 20 s.
async fn serves_with(url: &str, ca_pem: &[u8]) -> bool {
    for _ in 0..800 {
        let client = client(ca_pem, reqwest::tls::Version::TLS_1_3);
        if client.get(url).bearer_auth(TOKEN).send().await.is_ok() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    false
}
