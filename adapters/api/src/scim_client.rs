//! The vendor-side SCIM 2.0 client, written once for every vendor that speaks SCIM (Promapp, PROMPT,
//! ProdPad's scim mode). A vendor declares its `ScimRules` (base URL, credential, the attributes it
//! accepts, PATCH strategy, delete mode, page size, an error hook); this module builds the requests, sends
//! them through `Outbound`, parses replies without panicking, and maps vendor statuses to `Error` in one
//! function (`map_status`). The credential only ever goes into the `Authorization` header value. The
//! SCIM itself (attribute paths, projection, the merging PUT's merge, the PATCH diff, filters) is the
//! `scim` crate's, shared with the gateway and the simulators.

use std::fmt;
use std::sync::Arc;

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::Method;
use scim::document::{diff, merge_onto, project};
use scim::error::SCIM_CONTENT_TYPE;
use scim::filter::eq_filter;
use scim::patch::{self, PatchOp};
use scim::schema::USER_SCHEMA;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::adapter::{ProbeReport, VendorUser};
use crate::error::{Error, ErrorKind, Result};
use crate::model::User;
use crate::outbound::{Outbound, VendorRequest, VendorResponse};

/// Pages `list_all` follows at most (a million users at 100 a page): a vendor whose `totalResults` never
/// ends, or that pages forever, cannot keep a pass listing.
pub const MAX_LIST_PAGES: usize = 10_000;

/// How an update reaches the vendor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatchStrategy {
    /// A SCIM PATCH (lowercase ops, JSON booleans) built from the before/after diff of allowed attributes.
    Passthrough,
    /// GET the vendor's user, set the allowed attributes to `after`'s values (removing those `after` no
    /// longer has), keep everything else the vendor holds, PUT the result. Vendor-only attributes (a
    /// timezone set in the vendor's UI) survive, which a PUT of the allowed attributes alone would wipe on
    /// a full-replace PUT. An update that changes no allowed attribute sends nothing.
    #[default]
    PutMerge,
}

/// What deprovisioning sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteMode {
    /// `DELETE {base}/Users/{id}`.
    Delete,
    /// An update to `active=false` through the patch strategy.
    #[default]
    Disable,
}

/// Which call a vendor answered, for error hooks and details.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScimOp {
    Find,
    Get,
    List,
    Create,
    Update,
    /// An update that turns `active` off, or a disable-mode delete.
    Disable,
    Delete,
    Probe,
}

impl ScimOp {
    pub fn name(self) -> &'static str {
        match self {
            ScimOp::Find => "find user",
            ScimOp::Get => "get user",
            ScimOp::List => "list users",
            ScimOp::Create => "create user",
            ScimOp::Update => "update user",
            ScimOp::Disable => "disable user",
            ScimOp::Delete => "delete user",
            ScimOp::Probe => "connection test",
        }
    }
}

/// What an error hook sees of a non-2xx vendor reply.
#[derive(Clone, Debug)]
pub struct VendorFailure<'a> {
    pub op: ScimOp,
    pub status: u16,
    /// The reply body as JSON (`Value::Null` when it was not JSON).
    pub body: &'a Value,
    /// The vendor's own message (`detail`, `message`, ...), if any.
    pub detail: Option<String>,
    /// The userName concerned, when known.
    pub user_name: Option<&'a str>,
}

/// A vendor-specific hook: given the failure and the standard mapping, returns the error to report.
pub type ErrorMapper = Arc<dyn Fn(&VendorFailure<'_>, Error) -> Error + Send + Sync>;

/// What a vendor declares about its SCIM service.
#[derive(Clone)]
pub struct ScimRules {
    /// The vendor name used in error details (`promapp`, `prompt`).
    pub vendor: &'static str,
    /// Base URL without trailing slash, e.g. `https://api.promapp.com/api/scim`.
    pub base_url: String,
    /// Path of the users collection under the base (default `/Users`).
    pub users_path: String,
    /// The full `Authorization` header value (e.g. `Bearer <token>`).
    pub auth_header: SecretString,
    /// Canonical attribute paths the vendor accepts; everything else is stripped (userName always sent).
    /// Forms: `active`, `name.givenName`, `emails`, `emails[type eq "work"].value`, `roles`,
    /// `urn:...:User:department`, or a whole top-level key such as an extension URN.
    pub allowed_attributes: Vec<String>,
    pub patch_strategy: PatchStrategy,
    pub delete_mode: DeleteMode,
    pub page_size: u32,
    pub error_mapper: Option<ErrorMapper>,
    /// The vendor answers `emails.value eq "x"` filters, so a create refused for an email already in use
    /// can be matched to the vendor's existing user instead of failing.
    pub email_lookup: bool,
}

impl fmt::Debug for ScimRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScimRules")
            .field("vendor", &self.vendor)
            .field("base_url", &self.base_url)
            .field("users_path", &self.users_path)
            .field("auth_header", &"[redacted]")
            .field("allowed_attributes", &self.allowed_attributes)
            .field("patch_strategy", &self.patch_strategy)
            .field("delete_mode", &self.delete_mode)
            .field("page_size", &self.page_size)
            .field("error_mapper", &self.error_mapper.is_some())
            .field("email_lookup", &self.email_lookup)
            .finish()
    }
}

impl ScimRules {
    /// Rules with the defaults: `/Users`, put_merge, disable, page size 100, no hook.
    pub fn new(vendor: &'static str, base_url: impl Into<String>, auth_header: SecretString, allowed: &[&str]) -> Self {
        ScimRules {
            vendor,
            base_url: base_url.into(),
            users_path: "/Users".into(),
            auth_header,
            allowed_attributes: allowed.iter().map(|s| s.to_string()).collect(),
            patch_strategy: PatchStrategy::PutMerge,
            delete_mode: DeleteMode::Disable,
            page_size: 100,
            error_mapper: None,
            email_lookup: false,
        }
    }
}

/// Deserialises an adapter's config object; every error names the offending key by its path.
pub fn parse_config<T: serde::de::DeserializeOwned>(config: Value) -> Result<T, crate::options::OptionsError> {
    crate::options::parse(config)
}

/// A vendor URL or path from config that cannot be used; each names its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("`{key}`: not a URL ({reason})")]
    NotAUrl { key: String, reason: String },
    #[error("`{key}`: must be an http(s) URL with a host")]
    NotHttp { key: String },
    #[error("`{key}`: must be https:// (plain http is allowed only to localhost)")]
    PlainHttp { key: String },
    #[error("`{key}`: must not have a query or fragment")]
    QueryOrFragment { key: String },
    #[error("`{key}`: must not carry credentials; use the token keys")]
    Credentials { key: String },
    #[error("`{key}`: must be a path such as /Users")]
    NotAPath { key: String },
}

impl UrlError {
    /// The config key the error is about.
    pub fn key(&self) -> &str {
        match self {
            UrlError::NotAUrl { key, .. }
            | UrlError::NotHttp { key }
            | UrlError::PlainHttp { key }
            | UrlError::QueryOrFragment { key }
            | UrlError::Credentials { key }
            | UrlError::NotAPath { key } => key,
        }
    }
}

/// Checks a base URL from config: absolute http(s), no query. Returns it without trailing slash.
pub fn check_base_url(key: &str, raw: &str) -> Result<String, UrlError> {
    let key_ = || key.to_string();
    let url = reqwest::Url::parse(raw).map_err(|e| UrlError::NotAUrl { key: key_(), reason: e.to_string() })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(UrlError::NotHttp { key: key_() });
    }
    // The vendor credential travels in every request: plain HTTP only to this machine (simulators, a local
    // TLS-terminating proxy).
    let local = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    if url.scheme() == "http" && !local {
        return Err(UrlError::PlainHttp { key: key_() });
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(UrlError::QueryOrFragment { key: key_() });
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Credentials { key: key_() });
    }
    Ok(raw.trim_end_matches('/').to_string())
}

/// Checks a users path from config: starts with `/`, no query.
pub fn check_users_path(key: &str, raw: &str) -> Result<String, UrlError> {
    if !raw.starts_with('/') || raw.contains('?') || raw.contains('#') || raw.len() < 2 {
        return Err(UrlError::NotAPath { key: key.to_string() });
    }
    Ok(raw.trim_end_matches('/').to_string())
}

/// The SCIM client of one app.
pub struct ScimClient {
    rules: ScimRules,
    outbound: Arc<Outbound>,
}

impl fmt::Debug for ScimClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScimClient").field("rules", &self.rules).finish()
    }
}

impl ScimClient {
    pub fn new(rules: ScimRules, outbound: Arc<Outbound>) -> Self {
        ScimClient { rules, outbound }
    }

    pub fn rules(&self) -> &ScimRules {
        &self.rules
    }

    pub fn outbound(&self) -> &Outbound {
        &self.outbound
    }

    fn users_url(&self) -> Result<reqwest::Url> {
        let raw = format!("{}{}", self.rules.base_url, self.rules.users_path);
        reqwest::Url::parse(&raw).map_err(|e| {
            Error::invalid(format!("{}: bad base_url/users_path ({e})", self.rules.vendor))
                .with_origin(crate::Origin::Gateway)
        })
    }

    fn user_url(&self, id: &str) -> Result<reqwest::Url> {
        let mut url = self.users_url()?;
        url.path_segments_mut()
            .map_err(|_| {
                Error::invalid(format!("{}: base_url cannot take a path", self.rules.vendor))
                    .with_origin(crate::Origin::Gateway)
            })?
            .push(id);
        Ok(url)
    }

    fn filter_url(&self, filter: &str) -> Result<reqwest::Url> {
        let mut url = self.users_url()?;
        url.query_pairs_mut().append_pair("filter", filter);
        Ok(url)
    }

    fn request(&self, method: Method, url: reqwest::Url) -> Result<VendorRequest> {
        let mut headers = HeaderMap::new();
        let mut auth = HeaderValue::from_str(self.rules.auth_header.expose_secret()).map_err(|_| {
            Error::unauthorized(format!(
                "{}: the credential contains characters not allowed in an HTTP header; check the token in the gateway config",
                self.rules.vendor
            ))
        })?;
        auth.set_sensitive(true);
        headers.insert(AUTHORIZATION, auth);
        headers.insert(ACCEPT, HeaderValue::from_static("application/scim+json, application/json"));
        let mut req = VendorRequest::new(method, url.to_string());
        req.headers = headers;
        Ok(req)
    }

    fn with_body(req: VendorRequest, body: &Value) -> VendorRequest {
        req.json(body).header(CONTENT_TYPE, HeaderValue::from_static(SCIM_CONTENT_TYPE))
    }

    fn fail(&self, op: ScimOp, resp: &VendorResponse, user_name: Option<&str>) -> Error {
        let body = resp.json().unwrap_or(Value::Null);
        let detail = vendor_detail(&body, &resp.body);
        let base = map_status(self.rules.vendor, op, resp.status, detail.as_deref());
        match &self.rules.error_mapper {
            Some(hook) => {
                let failure = VendorFailure { op, status: resp.status, body: &body, detail, user_name };
                hook(&failure, base)
            }
            None => base,
        }
    }

    fn parse_user(&self, op: ScimOp, doc: &Value) -> Result<VendorUser> {
        let vendor_id = match doc.get("id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(self.bad_reply(op, "a user without an id")),
        };
        let user = User::from_vendor_json(doc).map_err(|e| self.bad_reply(op, &e.to_string()))?;
        Ok(VendorUser { vendor_id, user })
    }

    fn bad_reply(&self, op: ScimOp, what: &str) -> Error {
        Error::unavailable(None, format!("{}: {} got an unexpected reply: {what}", self.rules.vendor, op.name()))
    }

    fn json_body(&self, op: ScimOp, resp: &VendorResponse) -> Result<Value> {
        resp.json().ok_or_else(|| self.bad_reply(op, "the body is not JSON"))
    }

    /// The users of a ListResponse reply.
    fn parse_list(&self, op: ScimOp, doc: &Value) -> Result<(Vec<VendorUser>, Option<u64>)> {
        let total = doc.get("totalResults").and_then(Value::as_u64);
        let resources = match doc.get("Resources").or_else(|| doc.get("resources")) {
            Some(Value::Array(items)) => items.as_slice(),
            None | Some(Value::Null) => &[],
            Some(_) => return Err(self.bad_reply(op, "Resources is not a list")),
        };
        let users = resources.iter().map(|r| self.parse_user(op, r)).collect::<Result<Vec<_>>>()?;
        Ok((users, total))
    }

    /// `GET {base}/Users?filter=userName eq "x"`; the match is made case-insensitively here too.
    pub async fn find(&self, user_name: &str) -> Result<Option<VendorUser>> {
        let users = self.find_where(&eq_filter("userName", user_name), user_name).await?;
        Ok(users.into_iter().find(|u| u.user.user_name.eq_ignore_ascii_case(user_name)))
    }

    /// `GET {base}/Users?filter=emails.value eq "x"` (only when the rules' `email_lookup` is on: a vendor that
    /// does not know the filter might answer with every user). The match is made case-insensitively here too.
    pub async fn find_by_email(&self, email: &str) -> Result<Option<VendorUser>> {
        if !self.rules.email_lookup {
            return Ok(None);
        }
        let users = self.find_where(&eq_filter("emails.value", email), email).await?;
        Ok(users
            .into_iter()
            .find(|u| u.user.emails.iter().any(|e| e.value.as_deref().is_some_and(|v| v.eq_ignore_ascii_case(email)))))
    }

    async fn find_where(&self, filter: &str, value: &str) -> Result<Vec<VendorUser>> {
        let op = ScimOp::Find;
        let resp = self.outbound.send(self.request(Method::GET, self.filter_url(filter)?)?).await?;
        // Some SCIM servers answer a filter miss with 404; for the gateway a miss is never an error.
        if resp.status == 404 {
            return Ok(Vec::new());
        }
        if resp.status != 200 {
            return Err(self.fail(op, &resp, Some(value)));
        }
        Ok(self.parse_list(op, &self.json_body(op, &resp)?)?.0)
    }

    /// `GET {base}/Users/{id}`.
    pub async fn get(&self, id: &str) -> Result<VendorUser> {
        let doc = self.get_raw(id).await?;
        self.parse_user(ScimOp::Get, &Value::Object(doc))
    }

    /// `GET {base}/Users/{id}` as the vendor sent it.
    async fn get_raw(&self, id: &str) -> Result<Map<String, Value>> {
        let op = ScimOp::Get;
        let resp = self.outbound.send(self.request(Method::GET, self.user_url(id)?)?).await?;
        if resp.status != 200 {
            return Err(self.fail(op, &resp, None));
        }
        match self.json_body(op, &resp)? {
            Value::Object(doc) => Ok(doc),
            _ => Err(self.bad_reply(op, "the user is not a JSON object")),
        }
    }

    /// One page: `GET {base}/Users?startIndex=&count=` (count = the rules' page size). Returns the users and
    /// `totalResults`.
    pub async fn list(&self, start_index: u64) -> Result<(Vec<VendorUser>, Option<u64>)> {
        let op = ScimOp::List;
        let mut url = self.users_url()?;
        url.query_pairs_mut()
            .append_pair("startIndex", &start_index.max(1).to_string())
            .append_pair("count", &self.rules.page_size.to_string());
        let resp = self.outbound.send(self.request(Method::GET, url)?).await?;
        if resp.status != 200 {
            return Err(self.fail(op, &resp, None));
        }
        self.parse_list(op, &self.json_body(op, &resp)?)
    }

    /// Every user, page by page: until `totalResults` (a vendor may cap the page below our count, so a
    /// short page ends the listing only when no total is given) or an empty page. A listing that cannot be
    /// completed is an error, never a shorter list: fewer users than `totalResults`, a page that repeats
    /// the previous one (a vendor that ignores `startIndex`), or more than `MAX_LIST_PAGES` pages.
    pub async fn list_all(&self) -> Result<Vec<VendorUser>> {
        let incomplete = |why: String| Error::unavailable(None, format!("the user listing is incomplete: {why}"));
        let mut all: Vec<VendorUser> = Vec::new();
        let mut start = 1u64;
        let mut previous_first: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let (page, total) = self.list(start).await?;
            let n = page.len() as u64;
            let first = page.first().map(|u| u.vendor_id.clone());
            if first.is_some() && first == previous_first {
                if total.is_some_and(|t| all.len() as u64 >= t) {
                    return Ok(all);
                }
                return Err(incomplete(format!("the page at startIndex {start} repeats the previous one")));
            }
            previous_first = first;
            all.extend(page);
            start += n;
            let done = match total {
                Some(t) => n == 0 || start > t,
                None => n < u64::from(self.rules.page_size),
            };
            if done {
                return match total {
                    Some(t) if (all.len() as u64) < t => {
                        Err(incomplete(format!("{} users listed of the {t} the vendor counts", all.len())))
                    }
                    _ => Ok(all),
                };
            }
        }
        Err(incomplete(format!("more than {MAX_LIST_PAGES} pages")))
    }

    /// The managed attributes on which the vendor's `held` differs from `desired`, among those this vendor
    /// keeps (the rules' allowed attributes): see `Adapter::drift`.
    pub fn drift(&self, desired: &User, held: &User) -> Vec<String> {
        let kept = |u: &User| {
            let doc = Value::Object(project(&u.to_scim(), &self.rules.allowed_attributes));
            User::from_scim(&doc).unwrap_or_else(|_| u.clone())
        };
        crate::model::managed_differences(&kept(desired), &kept(held))
    }

    /// The body the vendor gets for `user`: its allowed attributes with the core schema (and the URNs of
    /// extensions present).
    pub fn body_for(&self, user: &User) -> Value {
        let mut body = project(&user.to_scim(), &self.rules.allowed_attributes);
        let mut schemas = vec![Value::String(USER_SCHEMA.into())];
        schemas.extend(body.keys().filter(|k| k.starts_with("urn:")).map(|k| Value::String(k.clone())));
        body.insert("schemas".into(), Value::Array(schemas));
        Value::Object(body)
    }

    /// `POST {base}/Users`; returns the vendor's id.
    pub async fn create(&self, user: &User) -> Result<String> {
        let op = ScimOp::Create;
        let req = Self::with_body(self.request(Method::POST, self.users_url()?)?, &self.body_for(user));
        let resp = self.outbound.send(req).await?;
        if !(200..300).contains(&resp.status) {
            return Err(self.fail(op, &resp, Some(&user.user_name)));
        }
        // Only the id matters here; a 2xx without one did create the user, so the gateway must look it up
        // before trying again.
        match resp.json().as_ref().and_then(|doc| doc.get("id")) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            _ => Err(self.bad_reply(op, "a created user without an id").with_maybe_applied(true)),
        }
    }

    /// Brings the vendor record from `before` to `after` by the rules' patch strategy. A PATCH with no
    /// change to allowed attributes sends nothing; a PATCH that enables the user also sends its roles when
    /// the rules allow them (a PUT sends every allowed attribute anyway).
    pub async fn update(&self, id: &str, before: &User, after: &User) -> Result<()> {
        let op = if before.active && !after.active { ScimOp::Disable } else { ScimOp::Update };
        match self.rules.patch_strategy {
            PatchStrategy::PutMerge => self.put_merge(op, id, before, after, false).await,
            PatchStrategy::Passthrough => {
                let after_doc = project(&after.to_scim(), &self.rules.allowed_attributes);
                let mut ops = diff(&project(&before.to_scim(), &self.rules.allowed_attributes), &after_doc);
                // A user enabled again gets its managed roles in the same request, changed or not: the vendor
                // may still hold a role the gateway could not take back while it was disabled (a group role
                // the vendor refused to lower), and enabling it alone would hand that role back.
                if !before.active && after.active {
                    if let Some(roles) = after_doc.get("roles") {
                        if !ops.iter().any(|op| op.path.as_deref() == Some("roles")) {
                            ops.push(PatchOp::replace("roles", roles.clone()));
                        }
                    }
                }
                if ops.is_empty() {
                    return Ok(());
                }
                self.patch(op, id, &after.user_name, ops).await
            }
        }
    }

    /// GET, merge the allowed attributes of `after` onto the vendor's record, PUT (see `PatchStrategy`).
    /// `always`: send even when no managed attribute changed (a disable must reach the vendor even if the
    /// gateway already believed the user inactive).
    async fn put_merge(&self, op: ScimOp, id: &str, before: &User, after: &User, always: bool) -> Result<()> {
        let before = project(&before.to_scim(), &self.rules.allowed_attributes);
        let wanted = self.body_for(after);
        let Some(wanted) = wanted.as_object() else { return Ok(()) };
        let unchanged = wanted.iter().filter(|(k, _)| *k != "schemas").all(|(k, v)| before.get(k) == Some(v))
            && before.keys().all(|k| wanted.contains_key(k));
        if unchanged && !always {
            return Ok(());
        }
        let mut body = self.get_raw(id).await?;
        // What is PUT back must be this user: a wrapper, an empty object or another record would be
        // written over the user on a full-replace vendor.
        let read = self.parse_user(ScimOp::Get, &Value::Object(body.clone()))?;
        if read.vendor_id != id {
            return Err(self.bad_reply(ScimOp::Get, &format!("asked for user {id}, got {}", read.vendor_id)));
        }
        merge_onto(&mut body, &before, wanted);
        body.insert("id".into(), Value::String(id.into()));
        let req = Self::with_body(self.request(Method::PUT, self.user_url(id)?)?, &Value::Object(body));
        let resp = self.outbound.send(req).await?;
        if !(200..300).contains(&resp.status) {
            return Err(self.fail(op, &resp, Some(&after.user_name)));
        }
        Ok(())
    }

    async fn patch(&self, op: ScimOp, id: &str, user_name: &str, ops: Vec<PatchOp>) -> Result<()> {
        let body = patch::request_body(&ops);
        // Only replace/remove ops are built, so sending the same PATCH twice has the effect of once.
        let req = Self::with_body(self.request(Method::PATCH, self.user_url(id)?)?, &body).idempotent(true);
        let resp = self.outbound.send(req).await?;
        if !(200..300).contains(&resp.status) {
            return Err(self.fail(op, &resp, Some(user_name)));
        }
        Ok(())
    }

    /// Deprovisions by the rules' delete mode: `DELETE`, or an update to `active=false`.
    pub async fn delete(&self, id: &str, last_known: &User) -> Result<()> {
        match self.rules.delete_mode {
            DeleteMode::Delete => {
                let resp = self.outbound.send(self.request(Method::DELETE, self.user_url(id)?)?).await?;
                if !(200..300).contains(&resp.status) {
                    return Err(self.fail(ScimOp::Delete, &resp, Some(&last_known.user_name)));
                }
                Ok(())
            }
            DeleteMode::Disable => self.disable(id, last_known).await,
        }
    }

    /// Sets `active=false` (PUT or PATCH by the patch strategy).
    pub async fn disable(&self, id: &str, last_known: &User) -> Result<()> {
        let mut off = last_known.clone();
        off.active = false;
        match self.rules.patch_strategy {
            PatchStrategy::PutMerge => self.put_merge(ScimOp::Disable, id, last_known, &off, true).await,
            PatchStrategy::Passthrough => {
                let ops = vec![PatchOp::replace("active", Value::Bool(false))];
                self.patch(ScimOp::Disable, id, &last_known.user_name, ops).await
            }
        }
    }

    /// The connection test: the userName filter with a random value must answer 200 with no users.
    /// A refused credential is reported (`credential_accepted: false`), not returned as an error.
    pub async fn probe(&self) -> Result<ProbeReport> {
        let op = ScimOp::Probe;
        let probe_name = format!("scim-bridge-probe-{}", random_guid());
        let resp = self
            .outbound
            .send(self.request(Method::GET, self.filter_url(&eq_filter("userName", &probe_name))?)?)
            .await?;
        let mut report = ProbeReport {
            reachable: true,
            credential_accepted: true,
            rate_limit_headers: rate_limit_headers(&resp.headers),
            notes: Vec::new(),
            credential_fingerprint: Some(crate::secret::fingerprint(self.rules.auth_header.expose_secret())),
        };
        match resp.status {
            200 => {
                let (users, total) = self.parse_list(op, &self.json_body(op, &resp)?)?;
                if !users.is_empty() || total.unwrap_or(0) > 0 {
                    return Err(Error::invalid(format!(
                        "{}: the connection test filtered on a random userName and got users back; the vendor \
                         ignores `filter` or base_url/users_path point elsewhere",
                        self.rules.vendor
                    )));
                }
                Ok(report)
            }
            401 | 403 => {
                report.credential_accepted = false;
                report.notes.push(crate::Note::info(self.fail(op, &resp, None).detail()));
                Ok(report)
            }
            _ => Err(self.fail(op, &resp, None)),
        }
    }
}

/// The ONE mapping of a non-2xx vendor status (429 and 5xx arrive as errors from `Outbound`).
pub fn map_status(vendor: &str, op: ScimOp, status: u16, detail: Option<&str>) -> Error {
    let said = detail.map(|d| format!(": {d}")).unwrap_or_default();
    let what = op.name();
    match status {
        400 | 422 => Error::invalid(format!("{vendor} refused {what} (HTTP {status}){said}")),
        401 | 403 => Error::unauthorized(format!(
            "{vendor} refused the gateway's credential for {what} (HTTP {status}){said}; the token may be expired, \
             revoked or lack permission: create a new one in {vendor} and put it in the gateway config"
        )),
        404 => Error::not_found(format!("{vendor} has no such user ({what}, HTTP 404){said}")),
        409 => Error::conflict(format!("{vendor} already holds a user with this value ({what}, HTTP 409){said}")),
        405 | 501 => Error::unsupported(format!("{vendor} does not support {what} (HTTP {status}){said}")),
        408 | 425 => Error::unavailable(None, format!("{vendor} answered {status} to {what}{said}")),
        300..=399 => Error::unavailable(
            None,
            format!(
                "{vendor} redirected {what} (HTTP {status}); redirects are not followed, since they would turn an \
                 update into a read: point base_url/users_path at the final address"
            ),
        ),
        429 => Error::rate_limited(None, format!("{vendor} answered 429 to {what}")),
        s if s >= 500 => Error::unavailable(None, format!("{vendor} answered {s} to {what}{said}")),
        s => Error::new(ErrorKind::Invalid, format!("{vendor} answered an unexpected HTTP {s} to {what}{said}")),
    }
}

/// The vendor's own words from an error body: SCIM `detail`, else common fields, else short plain text.
pub fn vendor_detail(body: &Value, raw: &[u8]) -> Option<String> {
    for key in ["detail", "message", "error_description", "developer_message", "error", "Message"] {
        if let Some(s) = body.get(key).and_then(Value::as_str) {
            if !s.trim().is_empty() {
                return Some(truncate(s.trim(), 300));
            }
        }
    }
    if body.is_null() {
        let text = String::from_utf8_lossy(raw);
        let text = text.trim();
        if !text.is_empty() && !text.starts_with('<') {
            return Some(truncate(text, 200));
        }
    }
    None
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn random_guid() -> String {
    let b: [u8; 16] = rand::random();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

fn rate_limit_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| {
            let n = name.as_str();
            n.contains("ratelimit") || n.contains("rate-limit") || n == "retry-after"
        })
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MultiValue, Name};
    use serde_json::json;

    fn allowed(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn user() -> User {
        let mut u = User::new("a@x.com");
        u.external_id = Some("ext".into());
        u.name = Some(Name { given_name: Some("Ann".into()), family_name: Some("Lee".into()), ..Default::default() });
        u.emails = vec![
            MultiValue { value: Some("home@x.com".into()), kind: Some("home".into()), ..Default::default() },
            MultiValue { value: Some("a@x.com".into()), kind: Some("work".into()), ..Default::default() },
        ];
        u.phone_numbers = vec![MultiValue { value: Some("123".into()), ..Default::default() }];
        u.enterprise = Some(crate::model::Enterprise { department: Some("Sales".into()), ..Default::default() });
        u
    }

    #[test]
    fn projection_keeps_only_allowed_attributes() {
        let p = project(&user().to_scim(), &allowed(&["active", "name.givenName", "emails[type eq \"work\"].value"]));
        assert_eq!(
            Value::Object(p),
            json!({"userName": "a@x.com", "active": true, "name": {"givenName": "Ann"},
                   "emails": [{"type": "work", "value": "a@x.com", "primary": true}]})
        );
        let ent = scim::schema::ENTERPRISE_USER_SCHEMA;
        let p = project(&user().to_scim(), &allowed(&[&format!("{ent}:department")]));
        assert_eq!(p[ent], json!({"department": "Sales"}));
    }

    #[test]
    fn patch_ops_are_lowercase_with_json_booleans() {
        let list = allowed(&["active", "name.givenName", "name.familyName", "emails"]);
        let before = user();
        let mut after = before.clone();
        after.active = false;
        after.name.as_mut().unwrap().given_name = Some("Anne".into());
        after.name.as_mut().unwrap().family_name = None;
        let ops = diff(&project(&before.to_scim(), &list), &project(&after.to_scim(), &list));
        assert_eq!(
            patch::request_body(&ops)["Operations"],
            json!(
            [
                            {"op": "replace", "path": "active", "value": false},
                            {"op": "replace", "path": "name.givenName", "value": "Anne"},
                            {"op": "remove", "path": "name.familyName"},
                        ])
        );
        assert!(diff(&project(&before.to_scim(), &list), &project(&before.to_scim(), &list)).is_empty());
    }

    #[test]
    fn status_mapping_table() {
        let table = [
            (400, "invalid"),
            (401, "unauthorized"),
            (403, "unauthorized"),
            (404, "not_found"),
            (409, "conflict"),
            (405, "unsupported"),
            (501, "unsupported"),
            (503, "unavailable"),
            (418, "invalid"),
        ];
        for (status, kind) in table {
            let e = map_status("v", ScimOp::Update, status, Some("why"));
            assert_eq!(e.kind_name(), kind, "{status}");
            assert!(e.detail().contains("why"), "{status}: {}", e.detail());
        }
        assert!(map_status("v", ScimOp::Get, 401, None).detail().contains("new one"));
    }

    #[test]
    fn vendor_detail_reads_scim_and_plain_bodies() {
        assert_eq!(vendor_detail(&json!({"detail": "bad role"}), b""), Some("bad role".into()));
        assert_eq!(vendor_detail(&Value::Null, b"plain text"), Some("plain text".into()));
        assert_eq!(vendor_detail(&Value::Null, b"<html>"), None);
    }

    #[test]
    fn rules_debug_hides_the_credential() {
        let rules = ScimRules::new("v", "https://x", SecretString::from("Bearer s3cret"), &["active"]);
        assert!(!format!("{rules:?}").contains("s3cret"));
    }

    #[test]
    fn config_checks_name_the_key() {
        assert!(check_base_url("base_url", "https://h/api/scim/").unwrap().ends_with("/scim"));
        assert!(check_base_url("base_url", "ftp://h").unwrap_err().to_string().contains("base_url"));
        assert!(check_base_url("base_url", "https://u:p@h").is_err());
        assert_eq!(check_users_path("users_path", "Users").unwrap_err().key(), "users_path");
    }
}

#[cfg(test)]
mod put_merge_tests {
    use super::*;
    use serde_json::json;
    use std::sync::Mutex;

    /// A vendor whose `GET /Users/7` answers `read`, recording every PUT body.
    async fn vendor(read: Value) -> (ScimClient, Arc<Mutex<Vec<Value>>>) {
        let puts = Arc::new(Mutex::new(Vec::new()));
        let seen = puts.clone();
        let app = axum::Router::new().route(
            "/Users/{id}",
            axum::routing::get(move || {
                let read = read.clone();
                async move { axum::Json(read) }
            })
            .put(move |axum::Json(body): axum::Json<Value>| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(body.clone());
                    axum::Json(body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let rules = ScimRules::new("acme", base, SecretString::from("Bearer k"), &["active", "name.givenName"]);
        let outbound = Outbound::new("acme", crate::OutboundConfig::default()).unwrap();
        (ScimClient::new(rules, Arc::new(outbound)), puts)
    }

    fn ann(active: bool) -> User {
        let mut u = User::new("a@x.com");
        u.active = active;
        u.name = Some(crate::model::Name { given_name: Some("Ann".into()), ..Default::default() });
        u
    }

    #[tokio::test]
    async fn a_read_that_is_not_this_user_is_never_written_back() {
        for read in [json!({}), json!({"Resources": []}), json!({"id": "8", "userName": "b@x.com"})] {
            let (client, puts) = vendor(read.clone()).await;
            let err = client.update("7", &ann(true), &ann(false)).await.unwrap_err();
            assert!(matches!(err.kind(), crate::ErrorKind::Unavailable { .. }), "{read}: {err}");
            assert!(puts.lock().unwrap().is_empty(), "{read}: nothing PUT");
        }
    }

    #[tokio::test]
    async fn a_disable_is_sent_even_when_the_gateway_thought_the_user_inactive() {
        let (client, puts) = vendor(json!({"id": "7", "userName": "a@x.com", "active": true})).await;
        client.disable("7", &ann(false)).await.unwrap();
        let sent = puts.lock().unwrap().clone();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0]["active"], false);
    }
}

#[cfg(test)]
mod listing_tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    /// A vendor listing `users` users; `pages` decides what it answers for a `startIndex` (1-based) and
    /// page size: the users on the page and the `totalResults` it claims.
    async fn lister(
        pages: impl Fn(usize, usize) -> (std::ops::Range<usize>, Option<usize>) + Clone + Send + Sync + 'static,
    ) -> ScimClient {
        let app = axum::Router::new().route(
            "/Users",
            axum::routing::get(move |axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>| {
                let pages = pages.clone();
                async move {
                    let start: usize = q.get("startIndex").and_then(|v| v.parse().ok()).unwrap_or(1);
                    let count: usize = q.get("count").and_then(|v| v.parse().ok()).unwrap_or(100);
                    let (range, total) = pages(start, count);
                    let users: Vec<Value> =
                        range.map(|i| json!({"id": format!("u{i}"), "userName": format!("u{i}@x.com")})).collect();
                    let mut body = json!({"Resources": users});
                    if let Some(t) = total {
                        body["totalResults"] = json!(t);
                    }
                    axum::Json(body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let mut rules = ScimRules::new("acme", base, SecretString::from("Bearer k"), &["active"]);
        rules.page_size = 10;
        ScimClient::new(rules, Arc::new(Outbound::new("acme", crate::OutboundConfig::default()).unwrap()))
    }

    #[tokio::test]
    async fn a_listing_is_complete_or_an_error_never_a_shorter_list() {
        // Honest paging, and a vendor that caps the page below our count (a short page is not the end
        // while totalResults says more).
        let honest = lister(|start, count| (start - 1..(start - 1 + count).min(25), Some(25))).await;
        assert_eq!(honest.list_all().await.unwrap().len(), 25);
        let capped = lister(|start, count| (start - 1..(start - 1 + count.min(4)).min(25), Some(25))).await;
        assert_eq!(capped.list_all().await.unwrap().len(), 25);
        let no_total = lister(|start, count| (start - 1..(start - 1 + count).min(25), None)).await;
        assert_eq!(no_total.list_all().await.unwrap().len(), 25);
        // A vendor that ignores startIndex, and one that counts more than it lists: each is an error saying
        // the listing is incomplete (a total that never ends stops at MAX_LIST_PAGES the same way).
        let ignores_start = lister(|_, count| (0..count, Some(25))).await;
        let short = lister(|start, count| (start - 1..(start - 1 + count).min(15), Some(25))).await;
        for (what, client) in [("ignores startIndex", ignores_start), ("short", short)] {
            let err = client.list_all().await.unwrap_err();
            assert!(err.detail().contains("incomplete"), "{what}: {err}");
        }
    }
}
