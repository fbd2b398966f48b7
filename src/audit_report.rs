//! `scim-bridge audit`: reading the audit log back for a person, as a table or as JSON lines.

use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::store::AuditEntry;

/// `--since` as RFC 3339 (`2026-11-25T10:00:00Z`), a date (`2026-11-25`), or an age (`90s`, `30m`, `12h`, `7d`).
/// Returns the RFC 3339 instant to compare stored timestamps with.
pub fn parse_since(text: &str, now: OffsetDateTime) -> Result<String, SinceError> {
    let t = text.trim();
    if let Ok(at) = OffsetDateTime::parse(t, &Rfc3339) {
        // Stored times are UTC (`…Z`) and compared as text: an offset given here is turned into UTC.
        return Ok(at.to_offset(time::UtcOffset::UTC).format(&Rfc3339)?);
    }
    if let Ok(date) = time::Date::parse(t, time::macros::format_description!("[year]-[month]-[day]")) {
        return Ok(date.midnight().assume_utc().format(&Rfc3339)?);
    }
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: i64 = num.parse().map_err(|_| SinceError::Unreadable(text.to_string()))?;
    let seconds_per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(SinceError::Unit(text.to_string())),
    };
    let too_far = || SinceError::TooFar(text.to_string());
    let age = n.checked_mul(seconds_per).map(Duration::seconds).ok_or_else(too_far)?;
    Ok(now.checked_sub(age).ok_or_else(too_far)?.format(&Rfc3339)?)
}

/// A `--since` that does not read as a time, a date or an age.
#[derive(Debug, thiserror::Error)]
pub enum SinceError {
    #[error("--since: cannot read '{0}'; use 2026-11-25, an RFC 3339 time, or 30m/12h/7d")]
    Unreadable(String),
    #[error("--since: unknown unit in '{0}'; use s, m, h or d")]
    Unit(String),
    #[error("--since: '{0}' reaches before any date the log can hold")]
    TooFar(String),
    /// A year RFC 3339 cannot write (before 0 or after 9999).
    #[error("{0}")]
    Format(#[from] time::error::Format),
}

/// Text from the audit log as it may reach a terminal: details quote vendors' error bodies and names come
/// from Entra, so control characters (ESC sequences that recolour, retitle or rewrite the screen, CR, BEL)
/// become spaces, and so do Unicode's invisible direction controls: the embeddings and overrides
/// (U+202A..U+202E), the isolates (U+2066..U+2069) and the marks (U+200E, U+200F, U+061C).
pub(crate) fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() || is_direction_control(c) { ' ' } else { c }).collect()
}

fn is_direction_control(c: char) -> bool {
    ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}')
}

fn cell(s: &str, width: usize) -> String {
    let s = printable(s);
    if s.chars().count() > width {
        let cut: String = s.chars().take(width.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        format!("{s:width$}")
    }
}

/// A fixed-width table, newest first (the order the store returns).
pub fn render_table(entries: &[AuditEntry]) -> String {
    let mut out = format!(
        "{} {} {} {} {} {} {} {}\n",
        cell("TIME", 30),
        cell("APP", 10),
        cell("OPERATION", 11),
        cell("NAME", 32),
        cell("OUTCOME", 20),
        cell("STATUS", 6),
        cell("VENDOR ATTEMPTS", 30),
        "DETAIL"
    );
    for e in entries {
        out.push_str(&format!(
            "{} {} {} {} {} {} {} {}\n",
            cell(&e.at, 30),
            cell(&e.app, 10),
            cell(&e.operation, 11),
            cell(e.name.as_deref().unwrap_or("-"), 32),
            cell(e.outcome.as_str(), 20),
            cell(&e.status.to_string(), 6),
            cell(&attempts_summary(e), 30),
            printable(e.detail.as_deref().unwrap_or(""))
        ));
    }
    if entries.is_empty() {
        out.push_str("(no audit entries match)\n");
    }
    out
}

/// The vendor attempts in order, as `METHOD outcome` (`POST 503, POST 201`), or how many were made when
/// the entry predates the per-attempt log; `-` when the vendor was not called.
fn attempts_summary(e: &AuditEntry) -> String {
    if e.attempt_log.is_empty() {
        return if e.attempts == 0 { "-".to_string() } else { format!("{} attempts", e.attempts) };
    }
    let mut out: Vec<String> = e.attempt_log.iter().map(|a| format!("{} {}", a.method, a.outcome)).collect();
    let unlisted = (e.attempts as usize).saturating_sub(e.attempt_log.len());
    if unlisted > 0 {
        out.push(format!("+{unlisted} more"));
    }
    out.join(", ")
}

/// One JSON object per line.
pub fn render_json(entries: &[AuditEntry]) -> String {
    entries.iter().filter_map(|e| serde_json::to_string(e).ok()).map(|l| l + "\n").collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_dates_times_and_ages() {
        let now = OffsetDateTime::parse("2026-11-25T12:00:00Z", &Rfc3339).unwrap();
        assert_eq!(parse_since("2026-11-20", now).unwrap(), "2026-11-20T00:00:00Z");
        assert_eq!(parse_since("2026-11-25T10:30:00Z", now).unwrap(), "2026-11-25T10:30:00Z");
        assert_eq!(parse_since("90m", now).unwrap(), "2026-11-25T10:30:00Z");
        assert_eq!(parse_since("2d", now).unwrap(), "2026-11-23T12:00:00Z");
        assert!(parse_since("yesterday", now).unwrap_err().to_string().contains("--since"));
        assert!(parse_since("5w", now).unwrap_err().to_string().contains("unit"));
        // An offset is turned into UTC (stored times are compared as `…Z` text); an age too large for
        // any date is an error, not a panic.
        assert_eq!(parse_since("2026-11-25T10:00:00+02:00", now).unwrap(), "2026-11-25T08:00:00Z");
        assert!(parse_since("99999999999d", now).unwrap_err().to_string().contains("--since"));
        assert!(parse_since("9223372036854775807s", now).unwrap_err().to_string().contains("--since"));
    }

    #[test]
    fn table_has_a_header_and_one_line_per_entry() {
        let e = AuditEntry {
            at: "2026-11-25T12:00:00Z".into(),
            app: "prompt".into(),
            operation: "delete".into(),
            name: Some("a@example.com".into()),
            outcome: crate::outcome::Outcome::NEEDS_MANUAL_ACTION,
            status: 409,
            detail: Some("user still holds permissions\nreassign them".into()),
            vendor_calls: 1,
            ..Default::default()
        };
        let t = render_table(&[e.clone(), e]);
        assert_eq!(t.lines().count(), 3);
        assert!(t.lines().nth(1).unwrap().contains("needs_manual_action"));
        assert!(render_table(&[]).contains("no audit entries"));
        assert_eq!(render_json(&[AuditEntry::default()]).lines().count(), 1);
    }

    #[test]
    fn terminal_escapes_in_any_column_never_reach_the_terminal() {
        let hostile = "\u{1b}]0;pwned\u{7}\u{1b}[2J\rspoofed\u{202e}txt.exe\u{200e}\u{200f}\u{61c}\u{2067}end";
        let e = AuditEntry {
            app: "prompt".into(),
            operation: "create".into(),
            name: Some(hostile.into()),
            outcome: crate::outcome::Outcome::Failed(adapter_api::KindName::Conflict),
            detail: Some(format!("vendor said: {hostile}")),
            ..Default::default()
        };
        let t = render_table(&[e]);
        for bad in ['\u{1b}', '\u{7}', '\r', '\u{202e}', '\u{200e}', '\u{200f}', '\u{61c}', '\u{2067}'] {
            assert!(!t.contains(bad), "{bad:?} in {t:?}");
        }
        assert!(t.contains("spoofed"));
    }

    #[test]
    fn vendor_attempts_read_in_order() {
        let tried = |method: &str, outcome: &str| adapter_api::calls::Attempt {
            method: method.into(),
            path: "/Users".into(),
            outcome: outcome.into(),
            ms: 5,
        };
        let e = AuditEntry {
            vendor_calls: 2,
            attempts: 3,
            attempt_log: vec![tried("GET", "200"), tried("POST", "503"), tried("POST", "201")],
            ..Default::default()
        };
        assert_eq!(attempts_summary(&e), "GET 200, POST 503, POST 201");
        assert_eq!(attempts_summary(&AuditEntry { attempts: 5, ..e.clone() }), "GET 200, POST 503, POST 201, +2 more");
        assert_eq!(attempts_summary(&AuditEntry { attempts: 2, attempt_log: vec![], ..e }), "2 attempts");
        assert_eq!(attempts_summary(&AuditEntry::default()), "-");
        let json = render_json(&[AuditEntry {
            attempts: 1,
            attempt_log: vec![tried("PATCH", "timeout")],
            ..Default::default()
        }]);
        assert!(
            json.contains(r#""attempt_log":[{"method":"PATCH","path":"/Users","outcome":"timeout","ms":5}]"#),
            "{json}"
        );
    }
}
