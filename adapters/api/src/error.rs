//! The one error type every adapter returns. Its kind decides retry policy and, in exactly one place in the
//! gateway (`vendor_errors::from_adapter`), the HTTP status and `scimType` Entra sees. Policy reads kinds,
//! never message strings.

use std::fmt;
use std::time::Duration;

/// What went wrong, in terms the gateway can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The vendor has no such resource.
    NotFound,
    /// The vendor already holds a resource with this unique value (userName, email, displayName).
    Conflict,
    /// The vendor refused the values (bad email, unknown role, a user it must not get).
    Invalid,
    /// The vendor refused the gateway's credential (revoked or expired key). Never retried.
    Unauthorized,
    /// The vendor asked us to slow down.
    RateLimited { retry_after: Option<Duration> },
    /// The vendor is down, slow, or answered 5xx; or our own circuit breaker is open.
    Unavailable { retry_after: Option<Duration> },
    /// The vendor cannot do this at all (groups, hard delete, updates through a create-only API).
    Unsupported,
    /// The vendor refused because of state an admin must fix by hand (PROMPT: user still holds permissions).
    NeedsManualAction,
}

/// An [`ErrorKind`] without its data: what logs, metrics labels and the audit log call it. A label or a
/// stored outcome is one of these words, never an error's message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KindName {
    NotFound,
    Conflict,
    Invalid,
    Unauthorized,
    RateLimited,
    Unavailable,
    Unsupported,
    NeedsManualAction,
}

impl KindName {
    /// Every kind, in declaration order.
    pub const ALL: [KindName; 8] = [
        KindName::NotFound,
        KindName::Conflict,
        KindName::Invalid,
        KindName::Unauthorized,
        KindName::RateLimited,
        KindName::Unavailable,
        KindName::Unsupported,
        KindName::NeedsManualAction,
    ];

    /// The wire word (`not_found`, `rate_limited`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            KindName::NotFound => "not_found",
            KindName::Conflict => "conflict",
            KindName::Invalid => "invalid",
            KindName::Unauthorized => "unauthorized",
            KindName::RateLimited => "rate_limited",
            KindName::Unavailable => "unavailable",
            KindName::Unsupported => "unsupported",
            KindName::NeedsManualAction => "needs_manual_action",
        }
    }
}

/// Where an error came from (pingora's `ErrorSource`): the vendor's answer, the network between us (no
/// answer at all), or the gateway's own limits refusing before any vendor call (queue full, breaker open,
/// the Entra request's budget spent). Logs and metrics tell an admin whom to call; policy reads the kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Origin {
    /// The vendor answered this (its status or body).
    #[default]
    Vendor,
    /// No complete answer came back: connect failure, timeout, connection lost.
    Network,
    /// The gateway refused before calling the vendor.
    Gateway,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Vendor => "vendor",
            Origin::Network => "network",
            Origin::Gateway => "gateway",
        }
    }
}

/// An adapter error: a kind, a detail an admin can act on, where it came from, and whether the request may
/// have taken effect.
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    origin: Origin,
    detail: String,
    /// True when the request may have reached the vendor and been applied even though we saw no answer
    /// (timeout, dropped connection after the body was sent). Creates check before they are retried.
    maybe_applied: bool,
}

impl Error {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Error { kind, origin: Origin::Vendor, detail: detail.into(), maybe_applied: false }
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, detail)
    }
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, detail)
    }
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, detail)
    }
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthorized, detail)
    }
    pub fn rate_limited(retry_after: Option<Duration>, detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::RateLimited { retry_after }, detail)
    }
    pub fn unavailable(retry_after: Option<Duration>, detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable { retry_after }, detail)
    }
    pub fn unsupported(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, detail)
    }
    pub fn needs_manual_action(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::NeedsManualAction, detail)
    }
    /// Marks that the vendor may have applied the request although no answer came back.
    pub fn with_maybe_applied(mut self, maybe: bool) -> Self {
        self.maybe_applied = maybe;
        self
    }

    /// Sets where the error came from (adapters' errors default to the vendor's answer).
    pub fn with_origin(mut self, origin: Origin) -> Self {
        self.origin = origin;
        self
    }

    pub fn origin(&self) -> Origin {
        self.origin
    }

    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }
    pub fn detail(&self) -> &str {
        &self.detail
    }
    pub fn maybe_applied(&self) -> bool {
        self.maybe_applied
    }

    /// Whether trying the same call again later can succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, ErrorKind::RateLimited { .. } | ErrorKind::Unavailable { .. })
    }

    /// How long the vendor (or our breaker) asked us to wait, when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.kind {
            ErrorKind::RateLimited { retry_after } | ErrorKind::Unavailable { retry_after } => retry_after,
            _ => None,
        }
    }

    /// The kind without its data, as logs, metrics and the audit log name it.
    pub fn kind_tag(&self) -> KindName {
        match self.kind {
            ErrorKind::NotFound => KindName::NotFound,
            ErrorKind::Conflict => KindName::Conflict,
            ErrorKind::Invalid => KindName::Invalid,
            ErrorKind::Unauthorized => KindName::Unauthorized,
            ErrorKind::RateLimited { .. } => KindName::RateLimited,
            ErrorKind::Unavailable { .. } => KindName::Unavailable,
            ErrorKind::Unsupported => KindName::Unsupported,
            ErrorKind::NeedsManualAction => KindName::NeedsManualAction,
        }
    }

    /// A short stable name for logs, metrics and the audit log.
    pub fn kind_name(&self) -> &'static str {
        self.kind_tag().as_str()
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("origin", &self.origin)
            .field("detail", &self.detail)
            .field("maybe_applied", &self.maybe_applied)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind_name(), self.detail)
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rate_limits_and_outages_are_retryable() {
        let table = [
            (Error::not_found("x"), false),
            (Error::conflict("x"), false),
            (Error::invalid("x"), false),
            (Error::unauthorized("x"), false),
            (Error::rate_limited(Some(Duration::from_secs(3)), "x"), true),
            (Error::unavailable(None, "x"), true),
            (Error::unsupported("x"), false),
            (Error::needs_manual_action("x"), false),
        ];
        for (err, retryable) in table {
            assert_eq!(err.is_retryable(), retryable, "{err}");
        }
    }

    #[test]
    fn retry_after_is_reported_only_for_retryable_kinds() {
        let d = Some(Duration::from_secs(7));
        assert_eq!(Error::rate_limited(d, "slow down").retry_after(), d);
        assert_eq!(Error::unavailable(d, "down").retry_after(), d);
        assert_eq!(Error::invalid("bad").retry_after(), None);
    }
}
