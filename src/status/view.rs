//! What the status page shows, read from real state: the metrics (vendor state, warnings, breaker,
//! limiter, per-hour counts, last reconcile pass) and the store (users managed, the audit log). Every
//! string that came from Entra or a vendor goes through `shown`, and documents through `redacted`, before
//! a template sees it; the templates HTML-escape it on top. The store calls are the few functions at the
//! bottom of this file.

use serde::Serialize;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;

use crate::audit_report::printable;
use crate::gateway::Gateway;
use crate::metrics::{self, VendorState};
use crate::status::chart::{self, Chart};
use crate::store::{AuditEntry, AuditFilter, Kind, OutcomeFilter, StoreResult};

/// Entries on one page of the audit view.
pub const PAGE_SIZE: usize = 50;

/// The longest string a page shows from one field (a vendor's error body can be long).
const MAX_SHOWN: usize = 2000;

/// Text from Entra or a vendor as a page shows it: invisible direction controls and control characters
/// blanked (so a name cannot reorder what is around it), and cut at `MAX_SHOWN` characters.
pub fn shown(s: &str) -> String {
    let s = printable(s);
    if s.chars().count() > MAX_SHOWN {
        let cut: String = s.chars().take(MAX_SHOWN).collect();
        format!("{cut}…")
    } else {
        s
    }
}

/// Keys whose values never reach a page, whatever document they are in (Entra may send a password; a
/// vendor's record may echo a key): matched case-insensitively as parts of the key.
const SECRET_KEYS: &[&str] = &[
    "password",
    "secret",
    "token",
    "credential",
    "auth_code",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "session",
    "private",
    "signature",
    "otp",
];

/// A copy of `doc` with the values of secret-looking keys replaced, at any depth.
pub fn redacted(doc: &Value) -> Value {
    match doc {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = k.to_ascii_lowercase();
                    if SECRET_KEYS.iter().any(|s| key.contains(s)) {
                        (k.clone(), Value::String("[redacted]".into()))
                    } else {
                        (k.clone(), redacted(v))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redacted).collect()),
        other => other.clone(),
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Overview {
    pub generated: String,
    pub cards: Vec<Card>,
    pub audit_entries: u64,
    pub needs_person: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Card {
    pub name: String,
    pub vendor: String,
    /// `ok`, `credential_refused`, `rate_limited`, `unavailable`, `unknown`.
    pub state: String,
    /// The state said for a person.
    pub state_text: String,
    /// `good`, `warn`, `bad`, `idle`: the badge's colour.
    pub tone: &'static str,
    pub outbound: Option<OutboundView>,
    pub users: u64,
    pub reconcile: Option<PassView>,
    pub warnings: Vec<String>,
    pub needs_person: u64,
    pub failed_24h: u64,
    pub chart: Chart,
}

#[derive(Clone, Debug, Serialize)]
pub struct OutboundView {
    pub breaker: &'static str,
    pub breaker_opens: u64,
    pub in_flight: u64,
    pub max_in_flight: u64,
    pub requests_per_second: String,
    pub limiter_wait: String,
    pub queue_rejections: u64,
    pub vendor_429s: u64,
    pub calls: u64,
    pub failures: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct PassView {
    pub at: String,
    pub found: u64,
    pub repaired: u64,
    pub unrepaired: u64,
    pub unchecked: u64,
}

/// The state's name, its words for a person and its tone; `None`: an app without a vendor (the sandbox).
fn state_words(state: Option<VendorState>) -> (&'static str, &'static str, &'static str) {
    let Some(state) = state else { return ("no_vendor", "no vendor: the gateway's store only", "idle") };
    let (text, tone) = match state {
        VendorState::Ok => ("vendor answers, credential accepted", "good"),
        VendorState::CredentialRefused => ("vendor refuses the credential", "bad"),
        VendorState::RateLimited => ("vendor is rate-limiting", "warn"),
        VendorState::Unavailable => ("vendor unavailable", "bad"),
        VendorState::Unknown => ("not heard from the vendor yet", "idle"),
    };
    (state.as_str(), text, tone)
}

fn rfc3339(at: time::OffsetDateTime) -> String {
    at.replace_nanosecond(0).unwrap_or(at).format(&Rfc3339).unwrap_or_default()
}

fn unix_rfc3339(secs: f64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs as i64).map(rfc3339).unwrap_or_default()
}

/// Everything the overview shows, now.
pub async fn overview(gw: &Gateway) -> StoreResult<Overview> {
    let now = time::OffsetDateTime::now_utc();
    let day_ago = rfc3339(now - time::Duration::hours(24));
    let hour = metrics::current_hour();
    let mut cards = Vec::new();
    for app in gw.apps.values() {
        let vendor = app.adapter.vendor();
        let state = (!app.adapter.capabilities().in_process).then(|| gw.metrics.vendor_state(&app.name));
        let (state, state_text, tone) = state_words(state);
        let outbound = app.adapter.outbound_stats().map(|s| OutboundView {
            breaker: match s.breaker_state {
                adapter_api::BreakerState::Closed => "closed",
                adapter_api::BreakerState::Open => "open",
                adapter_api::BreakerState::HalfOpen => "half open",
            },
            breaker_opens: s.breaker_opens,
            in_flight: s.in_flight,
            max_in_flight: s.max_in_flight,
            requests_per_second: format!("{}", s.requests_per_second),
            limiter_wait: format!("{:.1}", s.limiter_wait_seconds),
            queue_rejections: s.rejected_queue_full,
            vendor_429s: s.rate_limited_by_vendor,
            calls: s.calls,
            failures: s.failures,
        });
        let counts = card_counts(gw, &app.name, &day_ago).await?;
        cards.push(Card {
            name: app.name.clone(),
            vendor: vendor.to_string(),
            state: state.to_string(),
            state_text: state_text.to_string(),
            tone,
            outbound,
            users: counts.users,
            reconcile: gw.metrics.last_pass(&app.name).map(|p| PassView {
                at: unix_rfc3339(p.at),
                found: p.found,
                repaired: p.repaired,
                unrepaired: p.unrepaired,
                unchecked: p.unchecked,
            }),
            warnings: gw.metrics.vendor_warnings(&app.name).iter().map(|w| shown(w)).collect(),
            needs_person: counts.needs_person,
            failed_24h: counts.failed_24h,
            chart: chart::chart(&gw.metrics.hourly(&app.name, hour)),
        });
    }
    let needs_person = cards.iter().map(|c| c.needs_person).sum();
    Ok(Overview { generated: rfc3339(now), cards, audit_entries: gw.store.audit_len().await?, needs_person })
}

/// One audit entry as the audit view shows it.
#[derive(Clone, Debug, Serialize)]
pub struct EntryView {
    pub seq: i64,
    pub at: String,
    /// `at` to the second, for the table: `2026-12-04 02:52:51`.
    pub at_short: String,
    pub app: String,
    pub operation: String,
    pub resource: String,
    pub name: String,
    pub actor: String,
    pub outcome: String,
    pub status: u16,
    /// `good`, `warn`, `bad`: the outcome's colour.
    pub tone: &'static str,
    pub detail: String,
    pub request_id: String,
    pub vendor_calls: u32,
    pub attempts_summary: String,
    pub attempts: Vec<AttemptView>,
    pub before: Option<String>,
    pub after: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct AttemptView {
    pub method: String,
    pub path: String,
    pub outcome: String,
    pub ms: u64,
}

fn outcome_tone(outcome: &str) -> &'static str {
    match outcome {
        "ok" | "drift_repaired" => "good",
        "drift_found" | "rejected" | "not_found" | "conflict" | "invalid" | "unsupported" => "warn",
        _ => "bad",
    }
}

fn pretty(doc: &Option<Value>) -> Option<String> {
    doc.as_ref().map(|d| shown_document(&serde_json::to_string_pretty(&redacted(d)).unwrap_or_default()))
}

/// The most of one before/after document a page shows: a page holds up to 100 of them, and a document may
/// be as large as Entra's largest request body.
const MAX_DOCUMENT: usize = 20_000;

/// A document's text: like `shown`, but its newlines are kept (it is shown pre-formatted), and cut at
/// `MAX_DOCUMENT` characters.
fn shown_document(text: &str) -> String {
    let text = text.lines().map(shown).collect::<Vec<_>>().join("\n");
    if text.chars().count() > MAX_DOCUMENT {
        let cut: String = text.chars().take(MAX_DOCUMENT).collect();
        format!("{cut}\n… (cut: the whole document is in `scim-bridge audit --json`)")
    } else {
        text
    }
}

impl EntryView {
    fn of(e: &AuditEntry) -> EntryView {
        let attempts: Vec<AttemptView> = e
            .attempt_log
            .iter()
            .map(|a| AttemptView {
                method: shown(&a.method),
                path: shown(&a.path),
                outcome: shown(&a.outcome),
                ms: a.ms,
            })
            .collect();
        let mut summary: Vec<String> = attempts.iter().map(|a| format!("{} {}", a.method, a.outcome)).collect();
        let unlisted = (e.attempts as usize).saturating_sub(e.attempt_log.len());
        if unlisted > 0 {
            summary.push(format!("+{unlisted} more"));
        }
        EntryView {
            seq: e.seq,
            at: shown(&e.at),
            at_short: shown(&e.at).chars().take(19).collect::<String>().replacen('T', " ", 1),
            app: shown(&e.app),
            operation: shown(&e.operation),
            resource: shown(&e.resource_type),
            name: shown(e.name.as_deref().unwrap_or("-")),
            actor: shown(&e.actor),
            outcome: shown(e.outcome.as_str()),
            status: e.status,
            tone: outcome_tone(e.outcome.as_str()),
            detail: shown(e.detail.as_deref().unwrap_or("")),
            request_id: shown(e.request_id.as_deref().unwrap_or("")),
            vendor_calls: e.vendor_calls,
            attempts_summary: if summary.is_empty() { "-".into() } else { summary.join(", ") },
            attempts,
            before: pretty(&e.before),
            after: pretty(&e.after),
        }
    }
}

/// One page of the audit view: the entries and the `seq` to continue from, when older ones match.
pub async fn audit_page(gw: &Gateway, filter: &AuditFilter) -> StoreResult<(Vec<EntryView>, Option<i64>)> {
    let (entries, more) = gw.store.audit_page(filter, PAGE_SIZE).await?;
    let next = if more { entries.last().map(|e| e.seq) } else { None };
    Ok((entries.iter().map(EntryView::of).collect(), next))
}

struct CardCounts {
    users: u64,
    needs_person: u64,
    failed_24h: u64,
}

async fn card_counts(gw: &Gateway, app: &str, day_ago: &str) -> StoreResult<CardCounts> {
    let of_app = AuditFilter { app: Some(app.to_string()), ..AuditFilter::default() };
    Ok(CardCounts {
        users: gw.store.count(app, Kind::User).await?,
        needs_person: gw
            .store
            .audit_count(&AuditFilter { outcome: OutcomeFilter::NeedsPerson, ..of_app.clone() })
            .await?,
        failed_24h: gw
            .store
            .audit_count(&AuditFilter { outcome: OutcomeFilter::Failed, since: Some(day_ago.to_string()), ..of_app })
            .await?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_looking_keys_are_redacted_at_any_depth() {
        let doc = json!({"userName": "a", "password": "hunter2", "x": [{"apiKey": "k1", "ok": 1}],
            "urn:ext": {"AccessToken": "t", "client_secret": "s"}});
        let text = redacted(&doc).to_string();
        for secret in ["hunter2", "k1", "\"t\"", "\"s\""] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("\"userName\":\"a\"") && text.contains("\"ok\":1"), "{text}");
    }

    #[test]
    fn shown_text_has_no_controls_and_is_bounded() {
        assert_eq!(shown("a\u{202e}b\u{1b}[2Jc"), "a b [2Jc");
        assert_eq!(shown(&"x".repeat(5000)).chars().count(), MAX_SHOWN + 1);
        assert_eq!(shown_document("{\n  \"a\": \"\u{7}\"\n}"), "{\n  \"a\": \" \"\n}");
        let long = "[\n".to_string() + &"  1,\n".repeat(10_000) + "]";
        assert!(shown_document(&long).chars().count() < MAX_DOCUMENT + 100);
    }
}
