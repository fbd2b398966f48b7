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

    // Swap in a new certificate: new handshakes trust only the new one.
    let (cert2, key2, ca2) = write_cert(dir.path(), "second");
    std::fs::copy(&cert2, &cert).unwrap();
    std::fs::copy(&key2, &key).unwrap();
    s.running.reload_tls().await.unwrap();
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
