//! One vendor call as an adapter describes it and the answer it gets, both formatted without secrets
//! (header values, query strings and bodies never reach a log line), and the capped read of a reply.

use std::fmt;

use reqwest::header::HeaderMap;
use reqwest::Method;

use super::retry::Failure;

/// One vendor call as an adapter describes it.
#[derive(Clone)]
pub struct VendorRequest {
    pub method: Method,
    pub url: String,
    /// Headers to send. Values may hold secrets: they are never logged or formatted.
    pub headers: HeaderMap,
    pub body: Option<Vec<u8>>,
    /// Whether sending the request twice has the same effect as once (GET, PUT, DELETE, idempotent PATCH).
    /// Non-idempotent calls are retried only when the vendor surely did not process them.
    pub idempotent: bool,
}

impl VendorRequest {
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        let idempotent = method != Method::POST && method != Method::PATCH;
        VendorRequest { method, url: url.into(), headers: HeaderMap::new(), body: None, idempotent }
    }

    pub fn json(mut self, body: &serde_json::Value) -> Self {
        self.body = Some(serde_json::to_vec(body).unwrap_or_default());
        self
    }

    pub fn header(mut self, name: reqwest::header::HeaderName, value: reqwest::header::HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }
}

/// Header names only, query and user info cut from the URL, body by length: secrets and personal data
/// (keys in headers or query strings, user attributes in bodies) never reach a log line.
impl fmt::Debug for VendorRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VendorRequest")
            .field("method", &self.method)
            .field("url", &redact_url(&self.url))
            .field("headers", &RedactedHeaders(&self.headers))
            .field("body_len", &self.body.as_ref().map(Vec::len))
            .field("idempotent", &self.idempotent)
            .finish()
    }
}

/// What the vendor answered. 429 and 5xx never come back as a response: they become errors. The exception is
/// 501 Not Implemented: an answer about what the vendor supports, not an outage, so the adapter maps it
/// (to `unsupported`) like a 405, and it is never retried.
#[derive(Clone)]
pub struct VendorResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl VendorResponse {
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Response headers can carry tokens and cookies too: names only.
impl fmt::Debug for VendorResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VendorResponse")
            .field("status", &self.status)
            .field("headers", &RedactedHeaders(&self.headers))
            .field("body_len", &self.body.len())
            .finish()
    }
}

struct RedactedHeaders<'a>(&'a HeaderMap);

impl fmt::Debug for RedactedHeaders<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.keys().map(|name| (name.as_str(), "<redacted>"))).finish()
    }
}

/// The URL without user info, query or fragment (vendors put keys in query strings).
pub(super) fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            if url.query().is_some() {
                url.set_query(Some("<redacted>"));
            }
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => "<unparsable url>".to_string(),
    }
}

/// The URL path only, for error details an admin reads.
pub(super) fn url_path(url: &str) -> String {
    reqwest::Url::parse(url).map(|u| u.path().to_string()).unwrap_or_default()
}

/// The most a vendor reply may weigh: a page of users is well under 1 MiB; a vendor (or something in
/// its place) sending more is cut off rather than held in memory.
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// Reads a reply's body, refusing one over `MAX_RESPONSE_BYTES` (declared or streamed).
pub(super) async fn read_capped(
    mut resp: reqwest::Response,
) -> std::result::Result<Vec<u8>, (Failure, Option<reqwest::Error>)> {
    if resp.content_length().is_some_and(|n| n > MAX_RESPONSE_BYTES as u64) {
        return Err((Failure::TooLarge, None));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| (Failure::Lost, Some(e.without_url())))? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err((Failure::TooLarge, None));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A few words on a transport failure, without addresses or OS detail.
pub(super) fn short_reason(e: &Option<reqwest::Error>) -> &'static str {
    match e {
        None => "no detail",
        Some(e) if e.is_timeout() => "timed out",
        Some(e) if e.is_body() || e.is_decode() => "the body broke off",
        Some(_) => "the connection broke",
    }
}

/// A reqwest error (its URL already stripped: query strings may hold keys) with its causes.
pub(super) fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
