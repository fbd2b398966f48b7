//! The shadow store: per app, the gateway id ↔ vendor id mapping, the last full SCIM representation
//! returned to Entra, timestamps, tombstones of users a disable-only vendor still holds, and the
//! append-only audit log. This module owns the data types and the `StoreEngine` contract every backend
//! keeps (a record and its audit entry land together or not at all; an answered write is durable);
//! `sqlite` is the embedded engine. Storage never sees SCIM syntax beyond the JSON document it keeps.

mod postgres;
mod sqlite;

pub use crate::outcome::Outcome;
use std::sync::Arc;

use adapter_api::calls::Attempt;
use serde::Serialize;
use serde_json::Value;

pub use postgres::{PgEngine, PgOptions};
pub use sqlite::{SqliteEngine, SqliteOptions};

/// Users or groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Kind {
    User,
    Group,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::User => "User",
            Kind::Group => "Group",
        }
    }
    pub(crate) fn parse(s: &str) -> Kind {
        if s == "Group" {
            Kind::Group
        } else {
            Kind::User
        }
    }
}

/// One shadowed resource.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub app: String,
    pub kind: Kind,
    /// The gateway's id: what Entra knows.
    pub id: String,
    /// The vendor's id for the same resource.
    pub vendor_id: String,
    /// The full SCIM document last returned to Entra (with `meta`).
    pub doc: Value,
    pub created: String,
    pub modified: String,
    pub version: i64,
}

impl Record {
    /// The unique name: userName for users, displayName for groups; compared case-insensitively.
    pub fn name(&self) -> &str {
        name_of(self.kind, &self.doc)
    }
}

pub fn name_of(kind: Kind, doc: &Value) -> &str {
    let key = match kind {
        Kind::User => "userName",
        Kind::Group => "displayName",
    };
    doc.get(key).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn external_id_of(doc: &Value) -> Option<&str> {
    doc.get("externalId").and_then(Value::as_str)
}

/// The lowercased `emails[type eq "work"].value`: Entra's third matching attribute, indexed.
pub(crate) fn work_email_of(doc: &Value) -> Option<String> {
    doc.get("emails")?
        .as_array()?
        .iter()
        .find(|e| e.get("type").and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case("work")))
        .and_then(|e| e.get("value").and_then(Value::as_str))
        .map(str::to_lowercase)
}

/// One line of the audit log.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AuditEntry {
    pub seq: i64,
    pub at: String,
    pub app: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub name: Option<String>,
    /// create, update, replace, delete, adopt, import, ...
    pub operation: String,
    /// Who asked: "entra" (the bearer of the app's token) or "gateway" for its own work.
    pub actor: String,
    pub request_id: Option<String>,
    pub before: Option<Value>,
    pub after: Option<Value>,
    /// ok, or the error kind (stored as its word).
    pub outcome: Outcome,
    /// HTTP status given to Entra.
    pub status: u16,
    pub detail: Option<String>,
    /// Vendor calls this operation made.
    pub vendor_calls: u32,
    /// HTTP attempts those calls took, retries included.
    pub attempts: u32,
    /// Each attempt: method, vendor path, status or failure, duration (the first
    /// `adapter_api::calls::MAX_ATTEMPTS_KEPT`).
    pub attempt_log: Vec<Attempt>,
}

/// The outcome of an audit entry whose change was sent to the vendor and never completed.
pub const INTENT: &str = "intent";

/// What the gateway remembers of a vendor record it deprovisioned.
#[derive(Clone, Debug, PartialEq)]
pub struct Tombstone {
    /// Entra's `externalId` of the user it belonged to: only that user may have it back.
    pub external_id: Option<String>,
    pub deleted: String,
}

/// Filters for reading the audit log back.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    pub app: Option<String>,
    pub name: Option<String>,
    pub since: Option<String>,
    pub limit: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the name is already taken")]
    Duplicate,
    /// The vendor record is already linked to another gateway id (one vendor user, one Entra user).
    #[error("the vendor record is already linked to gateway id {0}")]
    VendorLinked(String),
    #[error("shadow store: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("shadow store: {}", describe_pg(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("shadow store: schema migration: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    /// The engine could not take or finish the request (its writer stopped, or a batch failed to commit).
    #[error("shadow store: {0}")]
    Unavailable(String),
    #[error("shadow store: bad JSON in a stored document: {0}")]
    Json(#[from] serde_json::Error),
    /// The write was refused because it would act on a stale view: the record changed since it was read
    /// (another replica wrote it), or a replica lock the request holds was lost (its database session
    /// ended, so another replica may hold it now). Nothing was written; Entra retries (503).
    #[error("shadow store: write refused: {0}")]
    Fenced(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A PostgreSQL error with the server's message (tokio-postgres's own text says only "db error").
fn describe_pg(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

/// A parameter of a generated SQL clause, for either engine.
pub(crate) enum SqlArg {
    Text(String),
    Int(i64),
}

const SUCCESS_OUTCOMES: &str = "'ok', 'drift_found', 'drift_repaired'";

/// The WHERE clause of an `AuditFilter` over `audit a` and its parameters in order, in either engine's
/// dialect: `placeholder(n)` writes the n-th (1-based) parameter, `contains` is the substring test with
/// `{}` where the parameter goes.
pub(crate) fn audit_filter_sql(
    f: &AuditFilter,
    placeholder: fn(usize) -> String,
    contains: &str,
) -> (String, Vec<SqlArg>) {
    let mut sql = vec!["1 = 1".to_string()];
    let mut args: Vec<SqlArg> = Vec::new();
    let mut arg = |sql: &mut Vec<String>, clause: &str, v: SqlArg| {
        args.push(v);
        sql.push(clause.replace("{}", &placeholder(args.len())));
    };
    if let Some(app) = &f.app {
        arg(&mut sql, "a.app = {}", SqlArg::Text(app.clone()));
    }
    if let Some(name) = f.name_contains.as_deref().filter(|n| !n.is_empty()) {
        arg(&mut sql, contains, SqlArg::Text(name.to_lowercase()));
    }
    if let Some(since) = &f.since {
        arg(&mut sql, "a.at >= {}", SqlArg::Text(since.clone()));
    }
    if let Some(seq) = f.before_seq {
        arg(&mut sql, "a.seq < {}", SqlArg::Int(seq));
    }
    match &f.outcome {
        OutcomeFilter::Any => {}
        OutcomeFilter::Is(outcome) => arg(&mut sql, "a.outcome = {}", SqlArg::Text(outcome.as_str().to_string())),
        OutcomeFilter::Failed => sql.push(format!("a.outcome NOT IN ({SUCCESS_OUTCOMES})")),
        // The IN list first, so the (app, outcome) index finds the candidates; only drift is then
        // checked for a later repair of the same user.
        // A `rejected` entry with vendor calls is a change the vendor made that the gateway refused to
        // link (the name or the vendor record already taken in the shadow): a clash to resolve.
        OutcomeFilter::NeedsPerson => sql.push(format!(
            "a.outcome IN ('needs_manual_action', 'unauthorized', '{INTENT}', 'drift_found', 'rejected')
             AND (a.outcome <> 'rejected' OR a.vendor_calls > 0)
             AND NOT EXISTS (
                  SELECT 1 FROM audit r WHERE r.app = a.app AND r.name_key = a.name_key AND r.seq > a.seq
                    AND r.outcome IN ('ok', 'drift_repaired'))"
        )),
    }
    (sql.join(" AND "), args)
}

// ---- Reading the audit log for the status page (src/status). ----

/// Which entries the status page's audit view shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuditFilter {
    pub app: Option<String>,
    /// Part of the userName/displayName, any case.
    pub name_contains: Option<String>,
    pub outcome: OutcomeFilter,
    /// RFC 3339: entries at or after it.
    pub since: Option<String>,
    /// Entries older than this `seq` (paging from newest to oldest).
    pub before_seq: Option<i64>,
}

/// An outcome, or one of the groups a person looks for.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum OutcomeFilter {
    #[default]
    Any,
    /// Exactly this outcome (`ok`, `unavailable`, `needs_manual_action`, ...).
    Is(Outcome),
    /// Anything but a success: the vendor or the gateway refused, failed, or never recorded the outcome.
    Failed,
    /// What only a person can settle: refusals that need manual action, a vendor that refuses the
    /// gateway's credential, intents never completed, vendor changes the gateway could not link, and
    /// drift; each until a later change of the same user succeeds (`ok`) or a pass repairs it.
    NeedsPerson,
}

/// The shadow store as the gateway uses it: `Arc<Store>` is any engine.
pub type Store = dyn StoreEngine;

/// What is wrong with a `store.url`, if anything (config validation).
pub fn postgres_url_problem(url: &str) -> Option<String> {
    postgres::parse_url(url).err()
}

/// Opens a SQLite store: `:memory:` or a file path.
pub fn open(path: &str) -> StoreResult<Arc<Store>> {
    Ok(Arc::new(SqliteEngine::open(path, SqliteOptions::default())?))
}

/// An exclusive claim on a store file, held by `serve` for as long as it runs: the per-resource locks
/// that keep two changes off one user live in one process, so a second `serve` (or an enforcing
/// `reconcile` from the command line) on the same file could act on a user at the same time. The claim is
/// an OS file lock on `<store>.claim`, released when the process ends, however it ends.
#[derive(Debug)]
pub struct StoreClaim {
    _file: std::fs::File,
}

/// Whether another process already holds the store.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("another process (a running `scim-bridge serve`) holds the store {0}")]
    Held(String),
    #[error("cannot create the claim file {0}: {1}")]
    Io(String, std::io::Error),
}

/// Claims the store at `path` for this process; `Ok(None)` for `:memory:` (nothing to share).
pub fn claim(path: &str) -> Result<Option<StoreClaim>, ClaimError> {
    if path == ":memory:" {
        return Ok(None);
    }
    let claim_path = format!("{path}.claim");
    if let Some(dir) = std::path::Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&claim_path)
        .map_err(|e| ClaimError::Io(claim_path.clone(), e))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(StoreClaim { _file: file })),
        Err(std::fs::TryLockError::WouldBlock) => Err(ClaimError::Held(path.to_string())),
        Err(std::fs::TryLockError::Error(e)) => Err(ClaimError::Io(claim_path, e)),
    }
}

/// Something a replica holds (a lock, a lease) until it is dropped.
pub type Hold = Box<dyn Send + Sync>;

/// Locks shared by every replica of one store (PostgreSQL advisory locks). The gateway's in-process
/// striped locks keep two tasks of one process apart; these keep two processes apart. A SQLite store
/// has none: one process owns its file (`claim`), so the in-process locks are the whole story.
#[async_trait::async_trait]
pub trait SharedLocks: Send + Sync + std::fmt::Debug {
    /// Takes lock `key` of lock set `set`, waiting while another replica holds it; released when the
    /// hold is dropped, or by the database when this process or its connection dies. Callers take keys
    /// in (set, key) order, so replicas cannot deadlock. `Err` when the database cannot be reached.
    async fn acquire(&self, set: i32, key: i32) -> StoreResult<Hold>;
}

/// The compare-and-set of `put`, the same in every engine: version 1 is a new record, version n > 1
/// replaces the stored n − 1. `stored`: the version the store holds now, if it holds the record.
pub(crate) fn check_version(new: i64, stored: Option<i64>) -> StoreResult<()> {
    match stored {
        None if new <= 1 => Ok(()),
        Some(v) if v == new - 1 => Ok(()),
        None => Err(StoreError::Fenced(format!(
            "version {new} of a record the store no longer holds (removed since it was read)"
        ))),
        Some(v) => Err(StoreError::Fenced(format!(
            "version {new} would replace version {v}, not {} (written since it was read)",
            new - 1
        ))),
    }
}

/// The compare-and-set of `remove`: the stored record, if still there, is the version that was read.
pub(crate) fn check_removed_version(read: i64, stored: Option<i64>) -> StoreResult<()> {
    match stored {
        Some(v) if v != read => {
            Err(StoreError::Fenced(format!("the record is at version {v}, not {read} (written since it was read)")))
        }
        _ => Ok(()),
    }
}

/// A stable 31-bit key for a lock name: the same in every replica and every release (std's hasher is
/// neither promised), so replicas of different versions during a rolling update still meet on one key.
pub fn lock_key(parts: &[&str]) -> i32 {
    // FNV-1a, 64-bit, folded.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    ((h ^ (h >> 32)) & 0x7fff_ffff) as i32
}

/// What a backend keeps. Every write is atomic with its audit entry and durable when it returns `Ok`
/// (a 2xx to Entra may follow); reads see every write that returned. The methods are async so that no
/// backend runs a database call on an async worker thread.
#[async_trait::async_trait]
pub trait StoreEngine: Send + Sync + std::fmt::Debug {
    /// Where the data lives, for messages (a path; never a credential).
    fn location(&self) -> String;

    /// Why the store has stopped taking changes and reads for good, until the process restarts (SQLite
    /// after a failed fsync, see `sqlite::Flusher`, or a panicked writer thread); `/healthz` then fails so
    /// an orchestrator restarts it.
    fn broken(&self) -> Option<String> {
        None
    }

    /// Proves the store can commit a write (for /readyz).
    async fn check_writable(&self) -> StoreResult<()>;

    async fn get(&self, app: &str, kind: Kind, id: &str) -> StoreResult<Option<Record>>;
    /// By userName / displayName, case-insensitively.
    async fn find_by_name(&self, app: &str, kind: Kind, name: &str) -> StoreResult<Option<Record>>;
    async fn find_by_external_id(&self, app: &str, kind: Kind, external_id: &str) -> StoreResult<Vec<Record>>;
    async fn find_by_vendor_id(&self, app: &str, kind: Kind, vendor_id: &str) -> StoreResult<Option<Record>>;
    /// By work email, case-insensitively.
    async fn find_by_work_email(&self, app: &str, kind: Kind, email: &str) -> StoreResult<Vec<Record>>;
    /// Every record of a kind, oldest first.
    async fn list(&self, app: &str, kind: Kind) -> StoreResult<Vec<Record>>;
    /// `limit` records of a kind from position `offset` (0-based) in the stable oldest-first order.
    async fn page(&self, app: &str, kind: Kind, offset: usize, limit: usize) -> StoreResult<Vec<Record>>;
    /// Up to `limit` records after the position `after` (0 = from the start) in the same order, with the
    /// position of the last one: a scan in bounded memory.
    async fn scan(&self, app: &str, kind: Kind, after: i64, limit: usize) -> StoreResult<(Vec<Record>, i64)>;
    /// How many records of a kind (kept current by the engine, not counted per call).
    async fn count(&self, app: &str, kind: Kind) -> StoreResult<u64>;

    /// Inserts or replaces a record and appends its audit entry, atomically. `Duplicate` when another
    /// record of the app already has the same name; `VendorLinked` when another id holds the vendor record.
    /// Compare-and-set on `version`: version 1 only inserts (a new id), version n > 1 only replaces the
    /// stored version n − 1; anything else is `Fenced` (someone wrote the record since it was read), so a
    /// writer working from a stale read never overwrites a newer write. On a store shared by replicas,
    /// also `Fenced` when a replica lock the current request holds (`adapter_api::calls::fences`) is lost.
    async fn put(&self, rec: &Record, audit: &AuditEntry) -> StoreResult<()>;
    /// Removes a record and appends its audit entry, atomically. With `tombstone`, remembers that the
    /// vendor still holds the (disabled) record so filters do not bring it back. `Fenced` when the stored
    /// record is another version than `rec` (or, shared, a lock of the request was lost); a record
    /// already gone is not an error.
    async fn remove(&self, rec: &Record, tombstone: bool, audit: &AuditEntry) -> StoreResult<()>;
    /// The tombstone of a vendor record the gateway deprovisioned, if any.
    async fn tombstone(&self, app: &str, kind: Kind, vendor_id: &str) -> StoreResult<Option<Tombstone>>;
    async fn is_tombstoned(&self, app: &str, kind: Kind, vendor_id: &str) -> StoreResult<bool> {
        Ok(self.tombstone(app, kind, vendor_id).await?.is_some())
    }

    /// Appends an audit entry on its own (failed operations, imports); an entry that began as an intent
    /// (`seq` set by `audit_intent`) is completed in place.
    async fn audit(&self, entry: &AuditEntry) -> StoreResult<()>;
    /// Records, durably and before the first vendor call, that a change is about to be sent: whatever
    /// happens next (a failed shadow write, a crash, a cancelled task), the vendor change has an audit
    /// line. Returns the entry's `seq`; the entry passed to `put`/`remove`/`audit` with that `seq`
    /// completes it.
    async fn audit_intent(&self, entry: &AuditEntry) -> StoreResult<i64>;
    /// Audit entries, newest first.
    async fn audit_log(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEntry>>;
    /// Deletes audit entries older than `before` (RFC 3339) in bounded batches; returns how many went.
    async fn prune_audit(&self, before: &str) -> StoreResult<u64>;
    /// How many audit entries (kept current by the engine).
    async fn audit_len(&self) -> StoreResult<u64>;
    /// Up to `limit` entries matching `filter`, newest first, and whether older ones match too.
    async fn audit_page(&self, filter: &AuditFilter, limit: usize) -> StoreResult<(Vec<AuditEntry>, bool)>;
    /// How many entries match `filter`.
    async fn audit_count(&self, filter: &AuditFilter) -> StoreResult<u64>;

    /// The locks every replica of this store shares; `None` where one process owns the store.
    fn shared_locks(&self) -> Option<Arc<dyn SharedLocks>> {
        None
    }

    /// The vendor rate, pauses and breakers every replica of this store shares; `None` where one
    /// process owns the store (its outbound clients pace alone).
    fn rate_budget(&self) -> Option<Arc<dyn adapter_api::budget::RateBudget>> {
        None
    }

    /// Asks to run the periodic job `name` now: `Some` (held until dropped) when no replica is running it
    /// and none started it less than `every` ago; `None` means another replica has it. A store one
    /// process owns always grants it.
    async fn lease(&self, name: &str, every: std::time::Duration) -> StoreResult<Option<Hold>> {
        let _ = (name, every);
        Ok(Some(Box::new(())))
    }
}

/// The environment variable that points the test suites at a PostgreSQL server
/// (`postgres://user@127.0.0.1:port/db`; `.ci/run` starts one and sets it). Not `SCIM_BRIDGE_*`: every
/// `serve` a test starts would read that as a config key and refuse to start.
pub const TEST_PG_URL: &str = "SCIM_TEST_PG_URL";

/// The PostgreSQL URL the tests run against, if any. Without one a test says so loudly, and under
/// `CI=true` it fails: CI must run every backend, never skip one in silence.
pub fn test_pg_url(test: &str) -> Option<String> {
    match std::env::var(TEST_PG_URL) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: {TEST_PG_URL} is not set and CI=true: the PostgreSQL backend must be tested in CI")
        }
        _ => {
            eprintln!("SKIPPED {test} on PostgreSQL: set {TEST_PG_URL} (see DEVELOPERS.md)");
            None
        }
    }
}

/// A PostgreSQL store in a schema of its own, so tests do not see each other's rows.
pub async fn test_pg_store(url: &str) -> StoreResult<Arc<PgEngine>> {
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    Ok(Arc::new(
        PgEngine::open(PgOptions { url: url.into(), password: None, schema: Some(schema), pool_size: 8 }).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;
    use serde_json::json;

    /// The suite runs on each backend: SQLite in memory, and PostgreSQL when `TEST_PG_URL` is set.
    pub(super) async fn backends(test: &str) -> Vec<Arc<Store>> {
        let mut out: Vec<Arc<Store>> = vec![open(":memory:").unwrap()];
        if let Some(url) = test_pg_url(test) {
            out.push(test_pg_store(&url).await.expect("PostgreSQL at SCIM_TEST_PG_URL"));
        }
        out
    }

    pub(super) fn rec(id: &str, name: &str) -> Record {
        Record {
            app: "a".into(),
            kind: Kind::User,
            id: id.into(),
            vendor_id: format!("v-{id}"),
            doc: json!({"id": id, "userName": name, "externalId": format!("ext-{id}")}),
            created: "2026-01-01T00:00:00Z".into(),
            modified: "2026-01-01T00:00:00Z".into(),
            version: 1,
        }
    }

    pub(super) fn audit(op: &str, name: &str) -> AuditEntry {
        AuditEntry {
            at: "2026-01-01T00:00:00Z".into(),
            app: "a".into(),
            resource_type: "User".into(),
            name: Some(name.into()),
            operation: op.into(),
            actor: "entra".into(),
            outcome: Outcome::Ok,
            status: 201,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn put_get_find_and_names_are_unique_case_insensitively() {
        for s in backends("put_get_find_and_names_are_unique_case_insensitively").await {
            s.put(&rec("1", "Alice@x"), &audit("create", "Alice@x")).await.unwrap();
            assert_eq!(s.get("a", Kind::User, "1").await.unwrap().unwrap().name(), "Alice@x");
            assert!(s.find_by_name("a", Kind::User, "ALICE@X").await.unwrap().is_some());
            assert!(s.find_by_name("other", Kind::User, "alice@x").await.unwrap().is_none());
            assert_eq!(s.find_by_external_id("a", Kind::User, "ext-1").await.unwrap().len(), 1);
            assert!(matches!(s.put(&rec("2", "alice@X"), &audit("create", "x")).await, Err(StoreError::Duplicate)));
            // The failed insert left no audit line behind.
            assert_eq!(s.audit_len().await.unwrap(), 1);
        }
    }

    /// An update that keeps every key rewrites the row alone; one that changes a key moves its index
    /// entries (the old name, email and vendor id no longer find it, and are free for another record).
    #[tokio::test]
    async fn updates_keep_or_move_the_keys() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path().join("upd.sqlite").to_str().unwrap()).unwrap();
        let mut r = rec("1", "erin");
        r.doc["emails"] = json!([{"type": "work", "value": "Erin@x"}]);
        s.put(&r, &audit("create", "erin")).await.unwrap();
        r.doc["title"] = json!("Engineer");
        r.version = 2;
        r.modified = "2026-01-02T00:00:00Z".into();
        s.put(&r, &audit("update", "erin")).await.unwrap();
        let got = s.get("a", Kind::User, "1").await.unwrap().unwrap();
        assert_eq!(
            (got.doc["title"].as_str(), got.version, got.modified.as_str()),
            (Some("Engineer"), 2, "2026-01-02T00:00:00Z")
        );
        assert_eq!(got.created, "2026-01-01T00:00:00Z");
        assert_eq!(s.find_by_work_email("a", Kind::User, "erin@x").await.unwrap().len(), 1);

        r.doc["userName"] = json!("erin2");
        r.doc["externalId"] = json!("ext-9");
        r.doc["emails"] = json!([{"type": "work", "value": "erin2@x"}]);
        r.vendor_id = "v-9".into();
        r.version = 3;
        s.put(&r, &audit("update", "erin2")).await.unwrap();
        assert!(s.find_by_name("a", Kind::User, "erin").await.unwrap().is_none());
        assert_eq!(s.find_by_name("a", Kind::User, "ERIN2").await.unwrap().unwrap().id, "1");
        assert!(s.find_by_work_email("a", Kind::User, "erin@x").await.unwrap().is_empty());
        assert_eq!(s.find_by_work_email("a", Kind::User, "erin2@x").await.unwrap().len(), 1);
        assert!(s.find_by_external_id("a", Kind::User, "ext-1").await.unwrap().is_empty());
        assert_eq!(s.find_by_vendor_id("a", Kind::User, "v-9").await.unwrap().unwrap().id, "1");
        assert!(s.find_by_vendor_id("a", Kind::User, "v-1").await.unwrap().is_none());
        // The old name and vendor record are free again; the record was counted once.
        s.put(&rec("2", "erin"), &audit("create", "erin")).await.unwrap();
        assert_eq!(s.count("a", Kind::User).await.unwrap(), 2);
        assert_eq!(s.audit_len().await.unwrap(), 4);
    }

    #[tokio::test]
    async fn remove_with_tombstone_and_audit_newest_first() {
        for s in backends("remove_with_tombstone_and_audit_newest_first").await {
            let r = rec("1", "bob");
            s.put(&r, &audit("create", "bob")).await.unwrap();
            s.remove(&r, true, &audit("delete", "bob")).await.unwrap();
            assert!(s.get("a", Kind::User, "1").await.unwrap().is_none());
            assert!(s.is_tombstoned("a", Kind::User, "v-1").await.unwrap());
            s.put(&r, &audit("adopt", "bob")).await.unwrap();
            assert!(!s.is_tombstoned("a", Kind::User, "v-1").await.unwrap());
            let log = s
                .audit_log(&AuditQuery { app: Some("a".into()), name: Some("BOB".into()), ..Default::default() })
                .await
                .unwrap();
            let ops: Vec<_> = log.iter().map(|e| e.operation.as_str()).collect();
            assert_eq!(ops, ["adopt", "delete", "create"]);
        }
    }

    #[tokio::test]
    async fn one_vendor_record_links_to_one_gateway_id() {
        for s in backends("one_vendor_record_links_to_one_gateway_id").await {
            s.put(&rec("1", "dan"), &audit("create", "dan")).await.unwrap();
            let twin = Record { vendor_id: "v-1".into(), ..rec("2", "dan2") };
            assert!(
                matches!(s.put(&twin, &audit("create", "dan2")).await, Err(StoreError::VendorLinked(owner)) if owner == "1")
            );
        }
        // The unique index holds even for a write that skips the check.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("unique.sqlite");
        let path = path.to_str().unwrap();
        open(path).unwrap().put(&rec("1", "dan"), &audit("create", "dan")).await.unwrap();
        let conn = Connection::open(path).unwrap();
        let raw = conn.execute(
            "INSERT INTO resources (app, kind, id, vendor_id, name_key, doc, created, modified, version)
             VALUES ('a', 'User', '3', 'v-1', 'x', '{}', 't', 't', 1)",
            [],
        );
        assert!(raw.is_err());
    }

    #[tokio::test]
    async fn an_intent_is_completed_in_place_or_stays_open() {
        for s in backends("an_intent_is_completed_in_place_or_stays_open").await {
            let mut entry = audit("create", "erin");
            entry.seq = s.audit_intent(&entry).await.unwrap();
            let open = s.audit_log(&AuditQuery::default()).await.unwrap();
            assert_eq!((open.len(), &open[0].outcome), (1, &Outcome::Intent));
            s.put(&rec("1", "erin"), &entry).await.unwrap();
            let done = s.audit_log(&AuditQuery::default()).await.unwrap();
            assert_eq!((done.len(), done[0].outcome.as_str(), done[0].status), (1, "ok", 201));
        }
    }

    #[tokio::test]
    async fn tombstones_keep_entras_external_id() {
        for s in backends("tombstones_keep_entras_external_id").await {
            let r = rec("1", "fay");
            s.put(&r, &audit("create", "fay")).await.unwrap();
            s.remove(&r, true, &audit("delete", "fay")).await.unwrap();
            assert_eq!(
                s.tombstone("a", Kind::User, "v-1").await.unwrap().unwrap().external_id.as_deref(),
                Some("ext-1")
            );
        }
    }

    #[tokio::test]
    async fn a_store_that_cannot_write_is_not_ready() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite");
        let quick = SqliteOptions { busy_timeout: std::time::Duration::from_millis(10), ..SqliteOptions::default() };
        let s = SqliteEngine::open(path.to_str().unwrap(), quick).unwrap();
        s.check_writable().await.unwrap();
        let other = Connection::open(&path).unwrap();
        other.busy_timeout(std::time::Duration::ZERO).unwrap();
        other.execute_batch("BEGIN EXCLUSIVE").unwrap();
        assert!(s.check_writable().await.is_err());
    }

    #[tokio::test]
    async fn audit_retention_prunes_only_older_entries() {
        for s in backends("audit_retention_prunes_only_older_entries").await {
            for at in ["2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z", "2026-11-01T00:00:00Z"] {
                s.audit(&AuditEntry { at: at.into(), ..audit("create", "x") }).await.unwrap();
            }
            assert_eq!(s.prune_audit("2026-06-01T00:00:00Z").await.unwrap(), 1);
            assert_eq!(s.audit_len().await.unwrap(), 2);
        }
    }

    /// A SQLite store's schema version, tables, indexes, each table's columns and types, and each index's
    /// columns and uniqueness: what two stores must share to be the same schema.
    fn sqlite_layout(path: &std::path::Path) -> (i64, Vec<(String, String)>) {
        let conn = Connection::open(path).unwrap();
        let mut names: Vec<(String, String)> = conn
            .prepare("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for table in ["resources", "tombstones", "audit", "health"] {
            let mut columns: Vec<(String, String)> = conn
                .prepare(&format!("SELECT name, type FROM pragma_table_info('{table}')"))
                .unwrap()
                .query_map([], |r| Ok((format!("{table}.{}", r.get::<_, String>(0)?), r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            columns.sort();
            names.extend(columns);
        }
        // Each index's columns in order and whether it is unique, not its name alone.
        let indexes: Vec<String> = names.iter().filter(|(t, _)| t == "index").map(|(_, n)| n.clone()).collect();
        for index in indexes {
            let columns: Vec<String> = conn
                .prepare(&format!(
                    "SELECT coalesce(name, '<expr>') FROM pragma_index_xinfo('{index}') WHERE key = 1 ORDER BY seqno"
                ))
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let unique: bool = conn
                .query_row("SELECT sql LIKE 'CREATE UNIQUE%' FROM sqlite_master WHERE name = ?1", [&index], |r| {
                    r.get(0)
                })
                .unwrap();
            names.push((format!("{index} unique={unique}"), columns.join(",")));
        }
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        (version, names)
    }

    #[tokio::test]
    async fn older_stores_are_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE resources (app TEXT NOT NULL, kind TEXT NOT NULL, id TEXT NOT NULL, vendor_id TEXT NOT NULL,
                   name_key TEXT NOT NULL, external_id TEXT, doc TEXT NOT NULL, created TEXT NOT NULL,
                   modified TEXT NOT NULL, version INTEGER NOT NULL, PRIMARY KEY (app, kind, id));
                 CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, app TEXT NOT NULL,
                   resource_type TEXT NOT NULL, resource_id TEXT, name_key TEXT, name TEXT, operation TEXT NOT NULL,
                   actor TEXT NOT NULL, request_id TEXT, before TEXT, after TEXT, outcome TEXT NOT NULL,
                   status INTEGER NOT NULL, detail TEXT, vendor_calls INTEGER NOT NULL);
                 INSERT INTO resources VALUES ('a', 'User', '1', 'v1', 'old', NULL,
                   '{\"userName\":\"old\",\"emails\":[{\"type\":\"work\",\"value\":\"Old@X.com\"}]}', 't', 't', 1);",
            )
            .unwrap();
        }
        let s = open(path.to_str().unwrap()).unwrap();
        // The same tables, columns and indexes as a store created new.
        let new_path = dir.path().join("new.sqlite");
        drop(open(new_path.to_str().unwrap()).unwrap());
        assert_eq!(sqlite_layout(&path), sqlite_layout(&new_path));
        assert_eq!(s.find_by_work_email("a", Kind::User, "old@x.com").await.unwrap().len(), 1);
        s.audit(&audit("create", "old")).await.unwrap();
        assert_eq!(s.audit_log(&AuditQuery::default()).await.unwrap()[0].attempts, 0);
        let tried = Attempt { method: "POST".into(), path: "/Users".into(), outcome: "503".into(), ms: 12 };
        s.audit(&AuditEntry { attempts: 1, attempt_log: vec![tried.clone()], ..audit("create", "new") }).await.unwrap();
        assert_eq!(s.audit_log(&AuditQuery::default()).await.unwrap()[0].attempt_log, [tried]);
    }

    #[tokio::test]
    async fn survives_reopen_on_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite");
        let path = path.to_str().unwrap();
        open(path).unwrap().put(&rec("1", "carol"), &audit("create", "carol")).await.unwrap();
        let again = open(path).unwrap();
        assert_eq!(again.get("a", Kind::User, "1").await.unwrap().unwrap().vendor_id, "v-1");
    }

    /// Concurrent changes share commits, and one refused change does not undo its batch neighbours.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_are_all_kept_and_a_refused_one_alone_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("batch.sqlite");
        let s = open(path.to_str().unwrap()).unwrap();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let s = s.clone();
            // Every tenth is a second record with an already used name: refused, alone.
            let name = if i % 10 == 9 { format!("user{}", i - 1) } else { format!("user{i}") };
            tasks.push(tokio::spawn(async move { s.put(&rec(&i.to_string(), &name), &audit("create", &name)).await }));
        }
        let mut refused = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => {}
                Err(StoreError::Duplicate) => refused += 1,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(refused, 20);
        assert_eq!(s.count("a", Kind::User).await.unwrap(), 180);
        assert_eq!(s.audit_len().await.unwrap(), 180);
        // What the engine counted is what is on disk.
        let again = open(path.to_str().unwrap()).unwrap();
        assert_eq!(again.list("a", Kind::User).await.unwrap().len(), 180);
        assert_eq!((again.count("a", Kind::User).await.unwrap(), again.audit_len().await.unwrap()), (180, 180));
    }

    /// The same burst on PostgreSQL: concurrent transactions, the database's unique index refusing the
    /// twins (two replicas racing on a name end here too).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_on_postgres_are_all_kept_and_twins_refused() {
        let Some(url) = test_pg_url("concurrent_writes_on_postgres_are_all_kept_and_twins_refused") else { return };
        let s = test_pg_store(&url).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let s = s.clone();
            let name = if i % 10 == 9 { format!("USER{}", i - 1) } else { format!("user{i}") };
            tasks.push(tokio::spawn(async move { s.put(&rec(&i.to_string(), &name), &audit("create", &name)).await }));
        }
        let mut refused = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => {}
                Err(StoreError::Duplicate) => refused += 1,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(refused, 20);
        assert_eq!((s.count("a", Kind::User).await.unwrap(), s.audit_len().await.unwrap()), (180, 180));
    }

    /// The rules hold in the database itself, whoever writes: a second link of a vendor record and a
    /// name that is not lowercased are refused by PostgreSQL; replicas opening at once migrate once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_keeps_the_rules_and_migrates_once() {
        let Some(url) = test_pg_url("postgres_keeps_the_rules_and_migrates_once") else { return };
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        let opts = PgOptions { url: url.clone(), password: None, schema: Some(schema.clone()), pool_size: 2 };
        let (a, b) = tokio::join!(PgEngine::open(opts.clone()), PgEngine::open(opts.clone()));
        let (a, _b) = (a.unwrap(), b.unwrap());
        a.put(&rec("1", "dan"), &audit("create", "dan")).await.unwrap();
        let client = a.pool().get().await.unwrap();
        let version: i32 = client.query_one("SELECT version FROM schema_version", &[]).await.unwrap().get(0);
        assert_eq!(version as usize, postgres::MIGRATIONS.len());
        let raw = |id: &str, vendor: &str, name: &str| {
            format!(
                "INSERT INTO resources (app, kind, id, vendor_id, name_key, doc, created, modified, version)
                 VALUES ('a', 'User', '{id}', '{vendor}', '{name}', '{{}}', 't', 't', 1)"
            )
        };
        assert!(client.execute(raw("2", "v-1", "x").as_str(), &[]).await.is_err(), "vendor record linked twice");
        assert!(client.execute(raw("3", "v-3", "DAN").as_str(), &[]).await.is_err(), "name not lowercased");
        assert!(client.execute(raw("4", "v-4", "dan").as_str(), &[]).await.is_err(), "same name");
        client.execute(raw("5", "v-5", "eve").as_str(), &[]).await.unwrap();
    }

    /// The compare-and-set on `version`: two writers that read the same version cannot both write the
    /// next one (the second is refused and the first's write stays), a remove from a stale read is
    /// refused, and a record removed since it was read is not brought back by an update.
    #[tokio::test]
    async fn a_write_from_a_stale_read_is_refused() {
        for s in backends("a_write_from_a_stale_read_is_refused").await {
            let path = s.location();
            let read = rec("1", "fay");
            s.put(&read, &audit("create", "fay")).await.unwrap();
            let mut first = Record { version: 2, ..read.clone() };
            first.doc["title"] = json!("first");
            let mut second = Record { version: 2, ..read.clone() };
            second.doc["title"] = json!("second");
            s.put(&first, &audit("update", "fay")).await.unwrap();
            let refused = s.put(&second, &audit("update", "fay")).await;
            assert!(matches!(refused, Err(StoreError::Fenced(_))), "{path}: {refused:?}");
            let refused = s.put(&read, &audit("create", "fay")).await;
            assert!(
                matches!(refused, Err(StoreError::Fenced(_))),
                "{path}: a version 1 over an existing id: {refused:?}"
            );
            let refused = s.remove(&read, false, &audit("delete", "fay")).await;
            assert!(matches!(refused, Err(StoreError::Fenced(_))), "{path}: {refused:?}");
            let got = s.get("a", Kind::User, "1").await.unwrap().expect("still there");
            assert_eq!((got.version, got.doc["title"].as_str()), (2, Some("first")), "{path}");
            s.remove(&first, false, &audit("delete", "fay")).await.unwrap();
            let refused = s.put(&Record { version: 3, ..first.clone() }, &audit("update", "fay")).await;
            assert!(matches!(refused, Err(StoreError::Fenced(_))), "{path}: resurrected: {refused:?}");
            assert!(s.get("a", Kind::User, "1").await.unwrap().is_none(), "{path}");
            // Refusals wrote no audit entry: create, update, delete.
            assert_eq!(s.audit_len().await.unwrap(), 3, "{path}");
        }
    }

    /// The fence. Replica A holds a user's lock for a request; its lock session ends under it (here
    /// `pg_terminate_backend`, as a server restart or a dropped connection would), so the database
    /// releases the lock and replica B takes it. A must neither call the vendor (its fences fail) nor
    /// write: its write is refused even when B has written nothing yet (the version check alone would
    /// let it through), and after B wrote, B's write stays. A's next request locks and writes as before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_whose_lock_session_ended_cannot_write() {
        use adapter_api::calls::{self, CallLog};
        let Some(url) = test_pg_url("a_replica_whose_lock_session_ended_cannot_write") else { return };
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        let opts = PgOptions { url, password: None, schema: Some(schema), pool_size: 4 };
        let (a, b) = (PgEngine::open(opts.clone()).await.unwrap(), PgEngine::open(opts).await.unwrap());
        let read = rec("1", "gil");
        a.put(&read, &audit("create", "gil")).await.unwrap();
        let key = lock_key(&["a", "User", "1"]);
        let next = |title: &str| {
            let mut r = Record { version: 2, ..read.clone() };
            r.doc["title"] = json!(title);
            r
        };
        let (request_a, request_b) = (Arc::new(CallLog::for_request("a")), Arc::new(CallLog::for_request("b")));
        let hold_a = calls::scope(request_a.clone(), a.shared_locks().unwrap().acquire(2, key)).await.unwrap();
        calls::scope(request_a.clone(), async { calls::check_fences().await }).await.expect("held");
        let pid = calls::scope(request_a.clone(), async {
            let fences = calls::fences();
            fences[0].as_any().downcast_ref::<postgres::AdvisoryHold>().unwrap().session_pid()
        })
        .await;
        let admin = b.pool().get().await.unwrap();
        let ended: bool = admin.query_one("SELECT pg_terminate_backend($1)", &[&pid]).await.unwrap().get(0);
        assert!(ended);
        let lost = calls::scope(request_a.clone(), async { calls::check_fences().await }).await;
        assert!(lost.is_err(), "A's fence still passes after its lock session ended");
        let hold_b = calls::scope(request_b.clone(), b.shared_locks().unwrap().acquire(2, key))
            .await
            .expect("B takes the lock the database released");
        let refused = calls::scope(request_a.clone(), a.put(&next("from A"), &audit("update", "gil"))).await;
        assert!(matches!(refused, Err(StoreError::Fenced(_))), "A wrote without its lock: {refused:?}");
        calls::scope(request_b.clone(), b.put(&next("from B"), &audit("update", "gil"))).await.unwrap();
        let refused = calls::scope(request_a.clone(), a.put(&next("from A"), &audit("update", "gil"))).await;
        assert!(matches!(refused, Err(StoreError::Fenced(_))), "A overwrote B: {refused:?}");
        let refused = calls::scope(request_a.clone(), a.remove(&read, true, &audit("delete", "gil"))).await;
        assert!(matches!(refused, Err(StoreError::Fenced(_))), "A removed B's record: {refused:?}");
        let got = b.get("a", Kind::User, "1").await.unwrap().unwrap();
        assert_eq!((got.version, got.doc["title"].as_str()), (2, Some("from B")));
        drop((hold_a, hold_b));
        // A recovers: a new lock session, a new lock, a write.
        let request = Arc::new(CallLog::for_request("a2"));
        let third = Record { version: 3, ..got };
        let hold = calls::scope(request.clone(), a.shared_locks().unwrap().acquire(2, key)).await.unwrap();
        calls::scope(request.clone(), a.put(&third, &audit("update", "gil"))).await.unwrap();
        drop(hold);
    }

    /// Advisory locks are database-wide: two gateways in different schemas of one database take the same
    /// lock name without blocking each other (and their reconcile leases are their own), while two
    /// replicas of one schema still exclude each other.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gateways_in_different_schemas_lock_apart() {
        let Some(url) = test_pg_url("gateways_in_different_schemas_lock_apart") else { return };
        let opts =
            |schema: &str| PgOptions { url: url.clone(), password: None, schema: Some(schema.into()), pool_size: 4 };
        let (one, two) =
            (format!("t_{}", uuid::Uuid::new_v4().simple()), format!("t_{}", uuid::Uuid::new_v4().simple()));
        let a = PgEngine::open(opts(&one)).await.unwrap();
        let b = PgEngine::open(opts(&two)).await.unwrap();
        let a_twin = PgEngine::open(opts(&one)).await.unwrap();
        let key = lock_key(&["a", "User", "42"]);
        let _held = a.shared_locks().unwrap().acquire(2, key).await.unwrap();
        let other = b.locks_waiting(std::time::Duration::from_millis(200)).acquire(2, key).await;
        assert!(other.is_ok(), "another schema's gateway is not blocked: {:?}", other.err());
        let twin = a_twin.locks_waiting(std::time::Duration::from_millis(200)).acquire(2, key).await;
        assert!(matches!(twin, Err(StoreError::Unavailable(_))), "the same schema's replica waits");
        let every = std::time::Duration::from_secs(3600);
        let _lease = a.lease("reconcile:a", every).await.unwrap().expect("first lease");
        assert!(b.lease("reconcile:a", every).await.unwrap().is_some(), "its own lease in its own schema");
    }

    /// Two replicas (two engines, two database sessions) on one store: a lock held by one keeps the
    /// other out. Each increments a counter that lives outside both under the lock, reading and writing
    /// it with a database round trip between: without mutual exclusion, increments are lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_take_turns_under_a_shared_lock() {
        let Some(url) = test_pg_url("replicas_take_turns_under_a_shared_lock") else { return };
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        let opts = PgOptions { url, password: None, schema: Some(schema), pool_size: 4 };
        let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut replicas = Vec::new();
        for _ in 0..2 {
            let engine = Arc::new(PgEngine::open(opts.clone()).await.unwrap());
            let (engine, counter) = (engine.clone(), counter.clone());
            replicas.push(tokio::spawn(async move {
                let locks = engine.shared_locks().unwrap();
                for _ in 0..50 {
                    let _hold = locks.acquire(2, lock_key(&["a", "User", "42"])).await.unwrap();
                    let seen = counter.load(std::sync::atomic::Ordering::SeqCst);
                    engine.count("a", Kind::User).await.unwrap();
                    tokio::task::yield_now().await;
                    counter.store(seen + 1, std::sync::atomic::Ordering::SeqCst);
                }
            }));
        }
        for r in replicas {
            r.await.unwrap();
        }
        assert_eq!(counter.load(std::sync::atomic::Ordering::SeqCst), 100);
    }

    /// A lock another replica holds is waited for within a bound, then refused as `Unavailable` (503 with
    /// Retry-After to Entra), never waited for for ever; once released it is taken again. The outer
    /// timeout only turns a hang into a failure: nothing here asserts a duration.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lock_held_elsewhere_is_refused_within_its_bound() {
        let Some(url) = test_pg_url("a_lock_held_elsewhere_is_refused_within_its_bound") else { return };
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        let opts = PgOptions { url, password: None, schema: Some(schema), pool_size: 4 };
        let (a, b) = (PgEngine::open(opts.clone()).await.unwrap(), PgEngine::open(opts).await.unwrap());
        let key = lock_key(&["a", "User", "held"]);
        let held = a.shared_locks().unwrap().acquire(2, key).await.unwrap();
        let short = b.locks_waiting(std::time::Duration::from_millis(200));
        let hang_guard = std::time::Duration::from_secs(120);
        let refused = tokio::time::timeout(hang_guard, short.acquire(2, key)).await.expect("acquire returned");
        assert!(matches!(refused, Err(StoreError::Unavailable(_))), "refused as unavailable: {:?}", refused.err());
        let other = tokio::time::timeout(hang_guard, short.acquire(2, lock_key(&["a", "User", "free"])))
            .await
            .expect("acquire returned");
        assert!(other.is_ok(), "another key is free");
        drop(held);
        let again = tokio::time::timeout(hang_guard, b.locks_waiting(postgres::LOCK_WAIT).acquire(2, key))
            .await
            .expect("acquire returned");
        assert!(again.is_ok(), "taken once released: {:?}", again.err());
    }

    /// A periodic job runs on one replica at a time, and once per interval across all of them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_replica_holds_a_lease() {
        let Some(url) = test_pg_url("one_replica_holds_a_lease") else { return };
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        let opts = PgOptions { url, password: None, schema: Some(schema), pool_size: 4 };
        let (a, b) = (PgEngine::open(opts.clone()).await.unwrap(), PgEngine::open(opts).await.unwrap());
        let hour = std::time::Duration::from_secs(3600);
        let held = a.lease("reconcile:x", hour).await.unwrap().expect("the first asker gets it");
        assert!(b.lease("reconcile:x", std::time::Duration::ZERO).await.unwrap().is_none(), "held by a");
        assert!(b.lease("reconcile:y", hour).await.unwrap().is_some(), "another job is free");
        drop(held);
        // Released (the unlock is sent on drop): within the hour nobody runs it again.
        let mut again = None;
        for _ in 0..500 {
            again = b.lease("reconcile:x", std::time::Duration::ZERO).await.unwrap();
            if again.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(again.is_some(), "free once a released it, when due");
        drop(again);
        assert!(a.lease("reconcile:x", hour).await.unwrap().is_none(), "not due again within the interval");
        // SQLite: one process owns the store, the lease is always granted.
        assert!(open(":memory:").unwrap().lease("reconcile:x", hour).await.unwrap().is_some());
    }

    /// Two replicas draw from one vendor schedule: with one call per 1,000 s and room to wait 1,500 s,
    /// exactly two slots exist however many ask, from whichever replica. A pause or an open breaker
    /// recorded by one holds the other.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_share_one_vendor_schedule() {
        use adapter_api::budget::Reserved;
        let Some(url) = test_pg_url("replicas_share_one_vendor_schedule") else { return };
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        let opts = PgOptions { url, password: None, schema: Some(schema), pool_size: 4 };
        let (a, b) = (PgEngine::open(opts.clone()).await.unwrap(), PgEngine::open(opts).await.unwrap());
        let (a, b) = (a.rate_budget().unwrap(), b.rate_budget().unwrap());
        let s = std::time::Duration::from_secs;
        let mut asks = Vec::new();
        for i in 0..10 {
            let budget = if i % 2 == 0 { a.clone() } else { b.clone() };
            asks.push(tokio::spawn(async move { budget.reserve("vendor", s(1000), s(0), s(1500)).await.unwrap() }));
        }
        let mut granted = Vec::new();
        for ask in asks {
            match ask.await.unwrap() {
                Reserved::After(wait) => granted.push(wait),
                Reserved::Full(wait) => assert!(wait > s(1500), "{wait:?}"),
                other => panic!("{other:?}"),
            }
        }
        granted.sort();
        assert_eq!(granted.len(), 2, "{granted:?}");
        assert!(granted[0] < s(1) && granted[1] > s(990), "one now, one a period later: {granted:?}");
        // Background work on either replica sees the schedule full, without taking a slot.
        assert!(b.next_free("vendor", s(0)).await.unwrap() > s(1990));
        assert!(a.next_free("vendor", s(0)).await.unwrap() > s(1990));
        // Another app has its own schedule; a pause set by one replica holds the other's next slot.
        assert!(matches!(b.reserve("other", s(1), s(0), s(5)).await.unwrap(), Reserved::After(w) if w < s(1)));
        assert!(a.next_free("other", s(0)).await.unwrap() < s(1));
        a.pause("other", s(3600)).await.unwrap();
        assert!(b.next_free("other", s(0)).await.unwrap() > s(3500), "a pause is no free slot");
        assert!(matches!(b.reserve("other", s(1), s(0), s(5)).await.unwrap(), Reserved::Full(w) if w > s(3500)));
        a.open_breaker("third", s(60)).await.unwrap();
        assert!(matches!(b.reserve("third", s(1), s(0), s(5)).await.unwrap(), Reserved::BreakerOpen(w) if w > s(50)));
    }

    #[test]
    fn lock_keys_are_stable_and_separate_their_parts() {
        // A fixed value (FNV-1a of "a\0User\042\0", folded): replicas of two releases meet on one key.
        assert_eq!(lock_key(&["a", "User", "42"]), 0x05fc_c79a);
        assert_ne!(lock_key(&["ab", "c"]), lock_key(&["a", "bc"]));
    }

    /// The schema name is written into SQL (an identifier cannot be a parameter): anything but a plain
    /// lowercase identifier is refused before a connection is made.
    #[tokio::test]
    async fn a_schema_that_is_not_a_plain_identifier_is_refused() {
        for bad in ["a;drop table audit", "A", "x y", "\"q\"", "", "1abc"] {
            let opts = PgOptions {
                url: "postgres://gw@127.0.0.1:1/scim".into(),
                password: None,
                schema: Some(bad.into()),
                pool_size: 2,
            };
            let err = PgEngine::open(opts).await.unwrap_err().to_string();
            assert!(err.contains("lowercase letters"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_postgres_url_with_a_password_is_refused() {
        assert!(postgres_url_problem("postgres://gw:s3cret@db:5432/scim").unwrap().contains("password_file"));
        assert!(postgres_url_problem("postgres://gw@db:5432/scim?password=s3cret").is_some());
        assert!(postgres_url_problem("not a url").is_some());
        assert!(postgres_url_problem("postgres://gw@db:5432/scim").is_none());
    }

    #[tokio::test]
    async fn pages_and_scans_follow_the_stable_order() {
        let file = tempfile::tempdir().unwrap().keep().join("page.sqlite");
        let mut stores = backends("pages_and_scans_follow_the_stable_order").await;
        stores.push(open(file.to_str().unwrap()).unwrap());
        for s in stores {
            let path = s.location();
            for i in 0..25 {
                s.put(&rec(&format!("{i:02}"), &format!("u{i}")), &audit("create", "u")).await.unwrap();
            }
            s.put(&Record { app: "b".into(), ..rec("x", "other-app") }, &audit("create", "o")).await.unwrap();
            let page = s.page("a", Kind::User, 10, 5).await.unwrap();
            let ids: Vec<_> = page.iter().map(|r| r.id.as_str()).collect();
            assert_eq!(ids, ["10", "11", "12", "13", "14"], "{path}");
            assert!(s.page("a", Kind::User, 25, 5).await.unwrap().is_empty());
            let mut seen = Vec::new();
            let mut after = 0;
            loop {
                let (chunk, last) = s.scan("a", Kind::User, after, 7).await.unwrap();
                if chunk.is_empty() {
                    break;
                }
                seen.extend(chunk.into_iter().map(|r| r.id));
                after = last;
            }
            assert_eq!(seen.len(), 25);
            assert_eq!((s.count("a", Kind::User).await.unwrap(), s.count("b", Kind::User).await.unwrap()), (25, 1));
            s.remove(&rec("03", "u3"), false, &audit("delete", "u3")).await.unwrap();
            // Removing what is already gone counts nothing.
            s.remove(&rec("03", "u3"), false, &audit("delete", "u3")).await.unwrap();
            assert_eq!(s.count("a", Kind::User).await.unwrap(), 24);
            // Pages follow the changes made since the first page was read: a removal shifts the later
            // records back, a new record ends the order, an update keeps its place, a refused one is
            // nowhere.
            let ids = |page: Vec<Record>| page.into_iter().map(|r| r.id).collect::<Vec<_>>();
            assert_eq!(ids(s.page("a", Kind::User, 2, 3).await.unwrap()), ["02", "04", "05"], "{path}");
            s.put(&rec("new", "u-new"), &audit("create", "u")).await.unwrap();
            s.put(&Record { version: 2, ..rec("00", "u0") }, &audit("update", "u")).await.unwrap();
            assert!(matches!(s.put(&rec("dup", "u1"), &audit("create", "u")).await, Err(StoreError::Duplicate)));
            assert_eq!(ids(s.page("a", Kind::User, 0, 2).await.unwrap()), ["00", "01"], "{path}");
            assert_eq!(ids(s.page("a", Kind::User, 23, 5).await.unwrap()), ["24", "new"], "{path}");
            assert_eq!(ids(s.page("a", Kind::User, 24, 5).await.unwrap()), ["new"], "{path}");
            assert!(s.page("a", Kind::User, 25, 5).await.unwrap().is_empty());
        }
    }

    /// Another process writing to the same file (an operator's tool, an older CLI) does not leave the
    /// cached counts wrong: the writer notices (`data_version`) and counts again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counts_follow_writes_made_by_another_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.sqlite");
        let path = path.to_str().unwrap();
        let quick = SqliteOptions { recount_every: std::time::Duration::from_millis(20), ..SqliteOptions::default() };
        let serve = SqliteEngine::open(path, quick).unwrap();
        serve.put(&rec("1", "one"), &audit("create", "one")).await.unwrap();
        let other = open(path).unwrap();
        other.put(&rec("2", "two"), &audit("create", "two")).await.unwrap();
        other.audit(&audit("reconcile", "two")).await.unwrap();
        let mut counted = (0, 0);
        for _ in 0..500 {
            // Any write (or the writer's idle wake-up) lets it look.
            serve.check_writable().await.unwrap();
            counted = (serve.count("a", Kind::User).await.unwrap(), serve.audit_len().await.unwrap());
            if counted == (2, 3) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(counted, (2, 3));
    }

    /// One serve per store file: a second claim fails while the first is held, and succeeds once it is
    /// released; `:memory:` needs none.
    #[test]
    fn a_store_file_is_claimed_by_one_process_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("claimed.sqlite");
        let path = path.to_str().unwrap();
        let first = claim(path).unwrap();
        assert!(first.is_some());
        // flock is per open file description: a second open in this process conflicts like another process.
        assert!(matches!(claim(path), Err(ClaimError::Held(_))));
        drop(first);
        assert!(claim(path).unwrap().is_some());
        assert!(claim(":memory:").unwrap().is_none());
    }

    #[tokio::test]
    async fn pruning_runs_in_bounded_batches_and_keeps_the_count() {
        for s in backends("pruning_runs_in_bounded_batches_and_keeps_the_count").await {
            for i in 0..2_500 {
                let at = if i < 2_100 { "2026-01-01T00:00:00Z" } else { "2026-12-01T00:00:00Z" };
                s.audit(&AuditEntry { at: at.into(), ..audit("create", "x") }).await.unwrap();
            }
            assert_eq!(s.prune_audit("2026-06-01T00:00:00Z").await.unwrap(), 2_100);
            assert_eq!(s.audit_len().await.unwrap(), 400);
            assert_eq!(s.audit_log(&AuditQuery::default()).await.unwrap().len(), 400);
        }
    }

    #[tokio::test]
    async fn a_new_store_and_a_migrated_one_end_at_the_same_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sqlite");
        drop(open(path.to_str().unwrap()).unwrap());
        let latest = sqlite_layout(&path);
        assert_eq!(latest.0, 4);
        let audit_indexes: Vec<&str> =
            latest.1.iter().filter(|(t, n)| t == "index" && n.starts_with("audit")).map(|(_, n)| n.as_str()).collect();
        assert_eq!(audit_indexes, ["audit_at", "audit_outcome_time", "audit_user_outcome"]);
        // A store left at version 3, with that version's audit indexes, is brought to the same place.
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "DROP INDEX audit_outcome_time; DROP INDEX audit_user_outcome;
                 CREATE INDEX audit_app_name ON audit (app, name_key, seq);
                 CREATE INDEX audit_app_outcome ON audit (app, outcome, name_key, at);
                 PRAGMA user_version = 3;",
            )
            .unwrap();
        drop(open(path.to_str().unwrap()).unwrap());
        assert_eq!(sqlite_layout(&path), latest);
    }
}

#[cfg(test)]
mod status_tests {
    use super::*;

    fn entry(app: &str, name: &str, outcome: &str, status: u16) -> AuditEntry {
        AuditEntry {
            at: "2026-01-01T00:00:00Z".into(),
            app: app.into(),
            resource_type: "User".into(),
            name: Some(name.into()),
            operation: "create".into(),
            actor: "entra".into(),
            outcome: Outcome::parse(outcome),
            status,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn filters_page_and_count_alike() {
        for s in super::tests::backends("filters_page_and_count_alike").await {
            for (app, name, outcome, status) in [
                ("a", "Ada@x", "ok", 201),
                ("a", "alan@x", "unavailable", 503),
                ("b", "ada@y", "needs_manual_action", 409),
                ("a", "grace@x", "drift_found", 0),
                ("a", "hedy@x", "drift_found", 0),
                ("a", "hedy@x", "drift_repaired", 0),
                ("b", "x%_@y", INTENT, 0),
                ("a", "malformed@x", "rejected", 400),
            ] {
                s.audit(&entry(app, name, outcome, status)).await.unwrap();
            }
            let unlinked = AuditEntry { vendor_calls: 1, ..entry("b", "unlinked@y", "rejected", 409) };
            s.audit(&unlinked).await.unwrap();
            // Settled later: a refused disable that a later change of the same user got through.
            s.audit(&entry("a", "settled@x", "needs_manual_action", 409)).await.unwrap();
            s.audit(&entry("a", "settled@x", "ok", 200)).await.unwrap();
            let names = |f: AuditFilter| {
                let s = s.clone();
                async move { s.audit_page(&f, 100).await.unwrap().0.into_iter().filter_map(|e| e.name).collect::<Vec<_>>() }
            };
            let ada = AuditFilter { name_contains: Some("ADA".into()), ..Default::default() };
            assert_eq!(names(ada.clone()).await, ["ada@y", "Ada@x"]);
            assert_eq!(s.audit_count(&ada).await.unwrap(), 2);
            assert_eq!(names(AuditFilter { app: Some("b".into()), ..ada.clone() }).await, ["ada@y"]);
            let failed = AuditFilter { outcome: OutcomeFilter::Failed, ..Default::default() };
            assert_eq!(
                names(failed.clone()).await,
                ["settled@x", "unlinked@y", "malformed@x", "x%_@y", "ada@y", "alan@x"]
            );
            let person = AuditFilter { outcome: OutcomeFilter::NeedsPerson, ..Default::default() };
            assert_eq!(
                names(person.clone()).await,
                ["unlinked@y", "x%_@y", "grace@x", "ada@y"],
                "hedy's drift was repaired later, settled@x succeeded later; a refusal without a vendor call is \
                 not a person's"
            );
            assert_eq!(s.audit_count(&person).await.unwrap(), 4);
            // A LIKE pattern in the name is text, not a pattern.
            assert_eq!(names(AuditFilter { name_contains: Some("%".into()), ..Default::default() }).await, ["x%_@y"]);
            let exact = AuditFilter {
                outcome: OutcomeFilter::Is(Outcome::Failed(adapter_api::KindName::Unavailable)),
                ..Default::default()
            };
            assert_eq!(names(exact.clone()).await, ["alan@x"]);
            // Pages of two, newest first, until nothing older is left.
            let (first, more) = s.audit_page(&AuditFilter::default(), 2).await.unwrap();
            assert!(more);
            let older = AuditFilter { before_seq: Some(first[1].seq), ..Default::default() };
            let (second, _) = s.audit_page(&older, 2).await.unwrap();
            assert!(second[0].seq < first[1].seq);
            let (last, more) =
                s.audit_page(&AuditFilter { before_seq: Some(2), ..Default::default() }, 2).await.unwrap();
            assert_eq!((last.len(), more), (1, false));
        }
    }
}
