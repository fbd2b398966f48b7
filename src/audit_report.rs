//! `scim-bridge audit`: reading the audit log back for a person, as a table or as JSON lines.

use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::store::AuditEntry;

/// `--since` as RFC 3339 (`2026-11-25T10:00:00Z`), a date (`2026-11-25`), or an age (`90s`, `30m`, `12h`, `7d`).
/// Returns the RFC 3339 instant to compare stored timestamps with.
pub fn parse_since(text: &str, now: OffsetDateTime) -> Result<String, String> {
    let t = text.trim();
    if let Ok(at) = OffsetDateTime::parse(t, &Rfc3339) {
        return at.format(&Rfc3339).map_err(|e| e.to_string());
    }
    if let Ok(date) = time::Date::parse(t, time::macros::format_description!("[year]-[month]-[day]")) {
        return date.midnight().assume_utc().format(&Rfc3339).map_err(|e| e.to_string());
    }
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| format!("--since: cannot read '{text}'; use 2026-11-25, an RFC 3339 time, or 30m/12h/7d"))?;
    let age = match unit {
        "s" => Duration::seconds(n),
        "m" => Duration::minutes(n),
        "h" => Duration::hours(n),
        "d" => Duration::days(n),
        _ => return Err(format!("--since: unknown unit in '{text}'; use s, m, h or d")),
    };
    (now - age).format(&Rfc3339).map_err(|e| e.to_string())
}

fn cell(s: &str, width: usize) -> String {
    let s: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
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
        cell("CALLS", 5),
        "DETAIL"
    );
    for e in entries {
        out.push_str(&format!(
            "{} {} {} {} {} {} {} {}\n",
            cell(&e.at, 30),
            cell(&e.app, 10),
            cell(&e.operation, 11),
            cell(e.name.as_deref().unwrap_or("-"), 32),
            cell(&e.outcome, 20),
            cell(&e.status.to_string(), 6),
            cell(&e.vendor_calls.to_string(), 5),
            e.detail.as_deref().unwrap_or("").replace('\n', " ")
        ));
    }
    if entries.is_empty() {
        out.push_str("(no audit entries match)\n");
    }
    out
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
        assert!(parse_since("yesterday", now).unwrap_err().contains("--since"));
        assert!(parse_since("5w", now).unwrap_err().contains("unit"));
    }

    #[test]
    fn table_has_a_header_and_one_line_per_entry() {
        let e = AuditEntry {
            at: "2026-11-25T12:00:00Z".into(),
            app: "prompt".into(),
            operation: "delete".into(),
            name: Some("a@example.com".into()),
            outcome: "needs_manual_action".into(),
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
}
