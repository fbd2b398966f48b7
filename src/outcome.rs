//! The audit log's outcome vocabulary: how a change attempt ended, as every audit row, the `audit`
//! command's JSON, the status page and its filter say it. Stored as its word (the schemas keep a TEXT
//! column); written and read through this type only, so no caller spells a word by hand.

use std::fmt;

use adapter_api::KindName;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How one audited change attempt ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The vendor confirmed it (or nothing needed its call) and the shadow store recorded it. An entry
    /// starts so; a failure sets its kind.
    #[default]
    Ok,
    /// The gateway refused it itself (a malformed PATCH, an empty name, a duplicate).
    Rejected,
    /// Sent to the vendor; the outcome was never recorded (the gateway stopped or its store failed).
    Intent,
    /// Reconcile found the vendor differing from Entra's last state.
    DriftFound,
    /// Reconcile pushed Entra's state back.
    DriftRepaired,
    /// A group change recorded only as far as the vendor confirmed its members (`group_roles`).
    Partial,
    /// The vendor made the change but the shadow write was refused as stale: another replica holds the
    /// record's lock now, or wrote a newer version (the replicas' fence; Entra was answered 503).
    Fenced,
    /// The change failed or was refused with this kind: the vendor's, or the gateway's own judgement
    /// (`needs_manual_action` for a grant left to a person).
    Failed(KindName),
    /// A word this build does not know, read from a row another version of the gateway wrote: kept and
    /// shown as stored.
    Other(String),
}

impl Outcome {
    /// The outcomes the status page's filter offers, in its order.
    pub const OFFERED: [Outcome; 14] = [
        Outcome::Ok,
        Outcome::Rejected,
        Outcome::Failed(KindName::Conflict),
        Outcome::Failed(KindName::Invalid),
        Outcome::Failed(KindName::NotFound),
        Outcome::Failed(KindName::Unauthorized),
        Outcome::Failed(KindName::RateLimited),
        Outcome::Failed(KindName::Unavailable),
        Outcome::Failed(KindName::Unsupported),
        Outcome::Failed(KindName::NeedsManualAction),
        Outcome::Intent,
        Outcome::DriftFound,
        Outcome::DriftRepaired,
        Outcome::Fenced,
    ];

    /// Every outcome this build writes.
    pub fn known_all() -> impl Iterator<Item = Outcome> {
        Outcome::OFFERED.into_iter().chain([Outcome::Partial])
    }

    /// A change only a person can complete.
    pub const NEEDS_MANUAL_ACTION: Outcome = Outcome::Failed(KindName::NeedsManualAction);

    /// The stored word (`ok`, `needs_manual_action`, `drift_found`, ...).
    pub fn as_str(&self) -> &str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Rejected => "rejected",
            Outcome::Intent => "intent",
            Outcome::DriftFound => "drift_found",
            Outcome::DriftRepaired => "drift_repaired",
            Outcome::Partial => "partial",
            Outcome::Fenced => "fenced",
            Outcome::Failed(kind) => kind.as_str(),
            Outcome::Other(word) => word,
        }
    }

    /// The outcome the status page's filter offers as `word`.
    pub fn offered(word: &str) -> Option<Outcome> {
        Outcome::OFFERED.into_iter().find(|o| o.as_str() == word)
    }

    /// A stored word's outcome; one this build does not know is kept as [`Outcome::Other`].
    pub fn parse(word: &str) -> Outcome {
        Outcome::known_all().find(|o| o.as_str() == word).unwrap_or_else(|| Outcome::Other(word.to_string()))
    }
}

impl From<&adapter_api::Error> for Outcome {
    fn from(e: &adapter_api::Error) -> Self {
        Outcome::Failed(e.kind_tag())
    }
}

/// Compared with its word, as tests and reports read a stored entry.
impl PartialEq<str> for Outcome {
    fn eq(&self, word: &str) -> bool {
        self.as_str() == word
    }
}

impl PartialEq<&str> for Outcome {
    fn eq(&self, word: &&str) -> bool {
        self.as_str() == *word
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// As its word: the JSON of `audit --json` and of the status page is what it was when this was a string.
impl Serialize for Outcome {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Outcome {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Outcome::parse(&String::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_reads_back_as_its_outcome() {
        for o in Outcome::known_all() {
            assert_eq!(Outcome::parse(o.as_str()), o);
            assert_eq!(serde_json::to_string(&o).unwrap(), format!("\"{}\"", o.as_str()));
            assert_eq!(serde_json::from_str::<Outcome>(&serde_json::to_string(&o).unwrap()).unwrap(), o);
        }
        let words: Vec<&str> = Outcome::OFFERED.iter().map(Outcome::as_str).collect();
        assert_eq!(
            words,
            [
                "ok",
                "rejected",
                "conflict",
                "invalid",
                "not_found",
                "unauthorized",
                "rate_limited",
                "unavailable",
                "unsupported",
                "needs_manual_action",
                "intent",
                "drift_found",
                "drift_repaired",
                "fenced"
            ]
        );
        assert_eq!(Outcome::parse("fenced"), Outcome::Fenced);
        assert_eq!(Outcome::parse("quarantined"), Outcome::Other("quarantined".into()));
        assert_eq!(Outcome::parse("quarantined").as_str(), "quarantined");
        for kind in KindName::ALL {
            assert!(Outcome::offered(kind.as_str()).is_some(), "{kind:?} is offered by the filter");
        }
    }
}
