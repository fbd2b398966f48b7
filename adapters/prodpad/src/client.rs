//! ProdPad REST wire calls (`/v1/users`): building requests with the bearer key, sending every one through
//! the shared `Outbound` client, following list pages, and the ONE function (`map_error`) that turns a
//! ProdPad status and error body into an adapter `Error`.

use std::sync::Arc;

use adapter_api::{Error, Outbound, Result, VendorRequest, VendorResponse};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};

use crate::model::{CreateUser, PpError, PpUser, UserPage};

/// Page size asked of `GET /users` (ProdPad's assumed maximum).
pub const PAGE_SIZE: u32 = 100;
/// Pages followed at most when looking a user up: 50 000 users, far beyond any ProdPad account, so a vendor
/// that ignores `page` cannot keep the adapter looping.
pub const MAX_PAGES: u32 = 500;

/// The REST client of one app.
pub struct RestClient {
    outbound: Arc<Outbound>,
    base: String,
    /// `Bearer <key>`, marked sensitive so it is never formatted.
    auth: HeaderValue,
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestClient").field("base", &self.base).field("auth", &"<redacted>").finish()
    }
}

/// The `Authorization: Bearer <key>` value, marked sensitive. The error never repeats the key.
pub fn bearer(key: &SecretString) -> std::result::Result<HeaderValue, crate::SettingsError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose_secret().trim()))
        .map_err(|_| crate::SettingsError::ApiKeyHeader)?;
    value.set_sensitive(true);
    Ok(value)
}

impl RestClient {
    pub fn new(outbound: Arc<Outbound>, base: &str, auth: HeaderValue) -> Self {
        RestClient { outbound, base: base.trim_end_matches('/').to_string(), auth }
    }

    /// The API key's fingerprint (`adapter_api::secret::fingerprint`), for `check` and logs.
    pub fn key_fingerprint(&self) -> String {
        adapter_api::secret::fingerprint(self.auth.to_str().unwrap_or_default())
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send(&self, req: VendorRequest) -> Result<VendorResponse> {
        let req =
            req.header(AUTHORIZATION, self.auth.clone()).header(ACCEPT, HeaderValue::from_static("application/json"));
        self.outbound.send(req).await
    }

    /// `POST /users`. Not idempotent: ProdPad answers a repeated create with 403 "email in use".
    pub async fn create(&self, body: &CreateUser) -> Result<PpUser> {
        let json = serde_json::to_value(body).map_err(|e| Error::invalid(format!("cannot encode the user: {e}")))?;
        let req = VendorRequest::new(Method::POST, format!("{}/users", self.base))
            .json(&json)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .idempotent(false);
        let resp = self.send(req).await?;
        if !(200..300).contains(&resp.status) {
            return Err(map_error(resp.status, &resp.body));
        }
        let user = resp.json().as_ref().and_then(PpUser::from_reply);
        match user {
            Some(u) if u.id.is_some() => Ok(u),
            _ => Err(Error::unavailable(
                None,
                format!("ProdPad answered {} to the create but the reply carries no user id", resp.status),
            )
            .with_maybe_applied(true)),
        }
    }

    /// `GET /users/{id}`.
    pub async fn get(&self, id: &str) -> Result<PpUser> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(Error::not_found(format!("`{id}` is not a ProdPad user id")));
        }
        let resp = self.send(VendorRequest::new(Method::GET, format!("{}/users/{id}", self.base))).await?;
        if resp.status != 200 {
            return Err(map_error(resp.status, &resp.body));
        }
        match resp.json().as_ref().and_then(PpUser::from_reply) {
            Some(u) if u.id.is_some() => Ok(u),
            _ => Err(Error::unavailable(None, format!("ProdPad's reply for user {id} is not a user"))),
        }
    }

    /// `GET /users?page=N&size=S`, with the raw response (for probes).
    pub async fn list_raw(&self, page: u32, size: u32) -> Result<VendorResponse> {
        let url = format!("{}/users?page={page}&size={size}", self.base);
        self.send(VendorRequest::new(Method::GET, url)).await
    }

    /// One page of users.
    pub async fn list_page(&self, page: u32, size: u32) -> Result<UserPage> {
        let resp = self.list_raw(page, size).await?;
        if resp.status != 200 {
            return Err(map_error(resp.status, &resp.body));
        }
        resp.json()
            .as_ref()
            .and_then(UserPage::from_reply)
            .ok_or_else(|| Error::unavailable(None, "ProdPad's user list reply is not a list of users"))
    }

    /// Walks the user list page by page, handing each page's users to `visit` until it answers `true`
    /// (found what it looked for) or the list ends: an empty page, every entry the reply's total promised,
    /// or (with no total) a short page. ProdPad may cap the page size below ours, so a short page only ends
    /// the walk when no total says otherwise. A page repeating the previous one (a vendor that ignores
    /// `page`) or more than `MAX_PAGES` pages cut the walk short: `Walked::Cut` says why.
    async fn walk(&self, mut visit: impl FnMut(Vec<PpUser>) -> bool + Send) -> Result<Walked> {
        let mut previous_first: Option<String> = None;
        let mut seen = 0u64;
        for page in 1..=MAX_PAGES {
            let batch = self.list_page(page, PAGE_SIZE).await?;
            let first = batch.users.first().and_then(|u| u.id.clone());
            if first.is_some() && first == previous_first {
                return Ok(match batch.total {
                    Some(total) if seen >= total => Walked::Ended,
                    _ => {
                        Walked::Cut(format!("ProdPad sent page {page} again as page {} (it ignores `page`?)", page - 1))
                    }
                });
            }
            seen += batch.entries as u64;
            if visit(batch.users) {
                return Ok(Walked::Found);
            }
            let done = match batch.total {
                Some(total) => seen >= total,
                None => batch.entries < PAGE_SIZE as usize,
            };
            if batch.entries == 0 || done || first.is_none() {
                return Ok(match batch.total {
                    Some(total) if seen < total => {
                        Walked::Cut(format!("ProdPad listed {seen} of the {total} users it counts"))
                    }
                    _ => Walked::Ended,
                });
            }
            previous_first = first;
        }
        Ok(Walked::Cut(format!("more than {MAX_PAGES} pages of users")))
    }

    /// The user whose email matches, ignoring case.
    pub async fn find_by_email(&self, email: &str) -> Result<Option<PpUser>> {
        let want = email.trim();
        let mut hit = None;
        self.walk(|users| {
            hit = users.into_iter().find(|u| u.email.as_deref().is_some_and(|e| e.trim().eq_ignore_ascii_case(want)));
            hit.is_some()
        })
        .await?;
        Ok(hit)
    }

    /// Every user ProdPad lists; an error when the listing could not be completed (reconcile then says it
    /// could not check, and the vendor index is not built from a partial list).
    pub async fn list_all(&self) -> Result<Vec<PpUser>> {
        let mut all = Vec::new();
        let walked = self
            .walk(|users| {
                all.extend(users);
                false
            })
            .await?;
        match walked {
            Walked::Cut(why) => Err(Error::unavailable(None, format!("the user listing is incomplete: {why}"))),
            Walked::Found | Walked::Ended => Ok(all),
        }
    }
}

/// How a walk over the user list ended.
#[derive(Debug, PartialEq)]
enum Walked {
    /// `visit` found what it looked for.
    Found,
    /// The list ended.
    Ended,
    /// Stopped before the end (the reason).
    Cut(String),
}

/// THE mapping from a ProdPad non-success status and error body to an adapter error (429 and 5xx never get
/// here: `Outbound` turns them into retryable errors). The vendor's `developer_message` goes into the detail.
pub fn map_error(status: u16, body: &[u8]) -> Error {
    let msg = PpError::message(body);
    let said = msg.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
    let lower = msg.as_deref().unwrap_or_default().to_ascii_lowercase();
    match status {
        400 => Error::invalid(format!("ProdPad refused the request (400){said}")),
        401 => Error::unauthorized(format!(
            "ProdPad refused the API key (401){said}; regenerate the API key in ProdPad under Profile Settings > \
             API key and update `api_key` for this app"
        )),
        403 if lower.contains("seat") => Error::invalid(format!(
            "ProdPad has no free paid seat for this role (403){said}; free a seat or buy more in ProdPad, or \
             map the user to Reviewer"
        )),
        403 if lower.contains("email")
            && ["use", "taken", "exist", "already", "duplicate"].iter().any(|w| lower.contains(w)) =>
        {
            Error::conflict(format!("ProdPad already has a user with this email (403){said}"))
        }
        403 => Error::unauthorized(format!(
            "ProdPad refused the request (403){said}; the API key must belong to a ProdPad Admin, and ProdPad \
             answers 403 to plain HTTP, so `base_url` must be https"
        )),
        404 => Error::not_found(format!("ProdPad has no such user (404){said}")),
        409 => Error::conflict(format!("ProdPad reported a conflict (409){said}")),
        408 | 425 => Error::unavailable(None, format!("ProdPad answered {status}{said}")),
        300..=399 => Error::unavailable(
            None,
            format!("ProdPad redirected the request ({status}); redirects are not followed: point base_url at the final address"),
        ),
        _ => Error::invalid(format!("ProdPad answered an unexpected {status}{said}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adapter_api::ErrorKind;

    fn body(msg: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"success": false, "developer_message": msg, "user_message": "x"}))
            .unwrap()
    }

    #[test]
    fn statuses_map_to_kinds_with_the_vendor_message() {
        let table = [
            (400, "Email is required", ErrorKind::Invalid),
            (401, "Invalid API key", ErrorKind::Unauthorized),
            (403, "That email is already in use", ErrorKind::Conflict),
            (403, "Email address taken", ErrorKind::Conflict),
            (403, "No seat available for Editor", ErrorKind::Invalid),
            (403, "Forbidden", ErrorKind::Unauthorized),
            (404, "Not found", ErrorKind::NotFound),
            (409, "dup", ErrorKind::Conflict),
            (418, "teapot", ErrorKind::Invalid),
        ];
        for (status, msg, kind) in table {
            let err = map_error(status, &body(msg));
            assert_eq!(err.kind(), &kind, "{status} {msg}");
            assert!(err.detail().contains(msg), "{err}");
            assert!(!err.is_retryable());
        }
        assert!(map_error(401, b"").detail().contains("Profile Settings > API key"));
        assert!(map_error(403, b"<html>").detail().contains("Admin"));
    }

    #[test]
    fn the_bearer_value_is_sensitive_and_errors_do_not_repeat_the_key() {
        let v = bearer(&SecretString::from("k-123")).unwrap();
        assert!(v.is_sensitive());
        assert!(!format!("{v:?}").contains("k-123"));
        let err = bearer(&SecretString::from("bad\nkey-xyz")).unwrap_err().to_string();
        assert!(!err.contains("key-xyz"), "{err}");
    }
}
