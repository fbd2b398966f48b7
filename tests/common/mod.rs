//! Shared harness for the black-box tests: a real gateway on 127.0.0.1:0 and a small SCIM client.
#![allow(dead_code)]

use std::path::Path;

use reqwest::{Method, StatusCode};
use scim_bridge::config::Config;
use scim_bridge::server::{self, Running};
use serde_json::{json, Value};

pub const TOKEN: &str = "test-token-for-sandbox";
pub const OTHER_TOKEN: &str = "test-token-for-other-app";

pub fn sha(token: &str) -> String {
    hex_encode(&scim_bridge::http::token_hash(token))
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A config with two sandbox apps (`sandbox`, `other`) on `store_path`.
pub fn config(store_path: &str, extra: &str) -> Config {
    let yaml = format!(
        "listen: \"127.0.0.1:0\"\nstore:\n  path: \"{store_path}\"\nmax_body_bytes: 65536\n{extra}apps:\n  sandbox:\n    type: sandbox\n    token_sha256: \"{}\"\n  other:\n    type: sandbox\n    token_sha256: \"{}\"\n",
        sha(TOKEN),
        sha(OTHER_TOKEN)
    );
    Config::from_yaml(&yaml, "test.yaml").expect("test config is valid")
}

pub struct Server {
    pub running: Running,
    pub client: reqwest::Client,
    pub base: String,
}

pub async fn start_with(config: Config) -> Server {
    let gateway = server::build_gateway(&config, "test.yaml").expect("gateway builds");
    let running = server::start(&config, gateway).await.expect("server starts");
    let base = format!("http://{}/scim/sandbox/v2", running.addr);
    Server { running, client: reqwest::Client::new(), base }
}

pub async fn start() -> Server {
    start_with(config(":memory:", "")).await
}

pub async fn start_on(path: &Path) -> Server {
    start_with(config(path.to_str().expect("utf-8 path"), "")).await
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn content_type(&self) -> &str {
        self.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

impl Server {
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        ct: &str,
    ) -> Answer {
        let url = if path.starts_with("http") { path.to_string() } else { format!("{}{}", self.base, path) };
        let mut req = self.client.request(method, url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", ct).body(b);
        }
        let resp = req.send().await.expect("request reaches the server");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Answer { status, headers, body }
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.send_raw(method, path, Some(TOKEN), body.map(|b| b.to_string().into_bytes()), "application/scim+json")
            .await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, ops: Value) -> Answer {
        self.send(
            Method::PATCH,
            path,
            Some(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops})),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.send(Method::DELETE, path, None).await
    }

    /// Creates a user the way Entra does and returns its id.
    pub async fn create_user(&self, user_name: &str) -> String {
        let a = self.post("/Users", entra_user(user_name)).await;
        assert_eq!(a.status, 201, "{:?}", a.body);
        a.body["id"].as_str().expect("id").to_string()
    }
}

/// The body Entra sends to create a user.
pub fn entra_user(user_name: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "externalId": format!("ext-{user_name}"),
        "userName": user_name,
        "active": true,
        "emails": [{"primary": true, "type": "work", "value": format!("{user_name}@example.com")}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "Given Family", "familyName": "Family", "givenName": "Given"},
        "roles": []
    })
}

pub fn filter_path(collection: &str, filter: &str) -> String {
    let encoded: String = url_encode(filter);
    format!("/{collection}?filter={encoded}")
}

pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
