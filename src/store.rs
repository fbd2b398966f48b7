//! The shadow store: per app, the gateway id ↔ vendor id mapping, the last full SCIM representation
//! returned to Entra, timestamps, tombstones of users a disable-only vendor still holds, and the
//! append-only audit log. Embedded SQLite; every write is one transaction, so a record and its audit
//! entry land together or not at all. Storage never sees SCIM syntax beyond the JSON document it keeps.

use std::path::Path;
use std::sync::Mutex;

use adapter_api::calls::Attempt;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use serde_json::Value;

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
    fn parse(s: &str) -> Kind {
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

fn external_id_of(doc: &Value) -> Option<&str> {
    doc.get("externalId").and_then(Value::as_str)
}

/// The lowercased `emails[type eq "work"].value`: Entra's third matching attribute, indexed.
fn work_email_of(doc: &Value) -> Option<String> {
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
    /// ok, or the error kind.
    pub outcome: String,
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
    #[error("shadow store: bad JSON in a stored document: {0}")]
    Json(#[from] serde_json::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

pub struct Store {
    conn: Mutex<Connection>,
    path: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS resources (
    app TEXT NOT NULL,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    vendor_id TEXT NOT NULL,
    name_key TEXT NOT NULL,
    external_id TEXT,
    doc TEXT NOT NULL,
    created TEXT NOT NULL,
    modified TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (app, kind, id)
);
CREATE UNIQUE INDEX IF NOT EXISTS resources_name ON resources (app, kind, name_key);
CREATE INDEX IF NOT EXISTS resources_external ON resources (app, kind, external_id);
CREATE TABLE IF NOT EXISTS tombstones (
    app TEXT NOT NULL,
    kind TEXT NOT NULL,
    vendor_id TEXT NOT NULL,
    name_key TEXT NOT NULL,
    deleted TEXT NOT NULL,
    external_id TEXT,
    PRIMARY KEY (app, kind, vendor_id)
);
CREATE TABLE IF NOT EXISTS health (
    k INTEGER PRIMARY KEY,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    app TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id TEXT,
    name_key TEXT,
    name TEXT,
    operation TEXT NOT NULL,
    actor TEXT NOT NULL,
    request_id TEXT,
    before TEXT,
    after TEXT,
    outcome TEXT NOT NULL,
    status INTEGER NOT NULL,
    detail TEXT,
    vendor_calls INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    attempt_log TEXT
);
CREATE INDEX IF NOT EXISTS audit_app_name ON audit (app, name_key, seq);
";

fn lower(s: &str) -> String {
    s.to_lowercase()
}

impl Store {
    /// Opens (creating if needed) the store at `path`; `:memory:` keeps it in memory.
    pub fn open(path: &str) -> StoreResult<Store> {
        let mut conn = if path == ":memory:" {
            Connection::open_in_memory()?
        } else {
            if let Some(dir) = Path::new(path).parent() {
                if !dir.as_os_str().is_empty() {
                    let _ = std::fs::create_dir_all(dir);
                }
            }
            Connection::open(path)?
        };
        // WAL + FULL: a commit is on disk before Entra hears 2xx, and readers do not block the writer.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(STATUS_INDEXES)?;
        Self::migrate(&mut conn)?;
        Ok(Store { conn: Mutex::new(conn), path: path.to_string() })
    }

    /// Brings a store written by an older version up to the current schema.
    fn migrate(conn: &mut Connection) -> StoreResult<()> {
        // One transaction: a crash half-way leaves the old schema, and the next start migrates again.
        let tx = conn.transaction()?;
        Self::migrate_in(&tx)?;
        tx.commit()?;
        Ok(())
    }

    fn migrate_in(conn: &Connection) -> StoreResult<()> {
        let has_email_key: bool =
            conn.prepare("SELECT 1 FROM pragma_table_info('resources') WHERE name = 'email_key'")?.exists([])?;
        if !has_email_key {
            conn.execute_batch("ALTER TABLE resources ADD COLUMN email_key TEXT")?;
            let rows: Vec<(i64, String)> = conn
                .prepare("SELECT rowid, doc FROM resources")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            for (rowid, doc) in rows {
                let email = serde_json::from_str::<Value>(&doc).ok().as_ref().and_then(work_email_of);
                conn.execute("UPDATE resources SET email_key = ?1 WHERE rowid = ?2", params![email, rowid])?;
            }
        }
        conn.execute_batch("CREATE INDEX IF NOT EXISTS resources_email ON resources (app, kind, email_key)")?;
        let tombstone_has_external: bool =
            conn.prepare("SELECT 1 FROM pragma_table_info('tombstones') WHERE name = 'external_id'")?.exists([])?;
        if !tombstone_has_external {
            conn.execute_batch("ALTER TABLE tombstones ADD COLUMN external_id TEXT")?;
        }
        // One vendor record, one gateway id. A store written before this rule may hold twins: it still
        // opens (with the old, non-unique index) and says which, so an operator can remove one.
        let twins: Vec<(String, String, String)> = conn
            .prepare(
                "SELECT app, kind, vendor_id FROM resources GROUP BY app, kind, vendor_id HAVING COUNT(*) > 1 LIMIT 20",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        if twins.is_empty() {
            conn.execute_batch(
                "DROP INDEX IF EXISTS resources_vendor;
                 CREATE UNIQUE INDEX IF NOT EXISTS resources_vendor_unique ON resources (app, kind, vendor_id);",
            )?;
        } else {
            tracing::error!(?twins, "the store links one vendor record to several gateway ids; remove the extra ones");
            conn.execute_batch("CREATE INDEX IF NOT EXISTS resources_vendor ON resources (app, kind, vendor_id)")?;
        }
        let has_attempts: bool =
            conn.prepare("SELECT 1 FROM pragma_table_info('audit') WHERE name = 'attempts'")?.exists([])?;
        if !has_attempts {
            conn.execute_batch("ALTER TABLE audit ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0")?;
        }
        let has_attempt_log: bool =
            conn.prepare("SELECT 1 FROM pragma_table_info('audit') WHERE name = 'attempt_log'")?.exists([])?;
        if !has_attempt_log {
            conn.execute_batch("ALTER TABLE audit ADD COLUMN attempt_log TEXT")?;
        }
        Ok(())
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions roll back), so a
        // poisoned lock is still safe to use.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Proves the store can write (for /readyz): a store that can only read cannot record a change, so the
    /// gateway must not take any.
    pub fn check_writable(&self) -> StoreResult<()> {
        self.conn().execute("INSERT OR REPLACE INTO health (k, at) VALUES (1, strftime('%Y-%m-%dT%H:%M:%fZ'))", [])?;
        Ok(())
    }

    fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<(Record, String)> {
        let doc: String = row.get(4)?;
        Ok((
            Record {
                app: row.get(0)?,
                kind: Kind::parse(&row.get::<_, String>(1)?),
                id: row.get(2)?,
                vendor_id: row.get(3)?,
                doc: Value::Null,
                created: row.get(5)?,
                modified: row.get(6)?,
                version: row.get(7)?,
            },
            doc,
        ))
    }

    fn collect(rows: Vec<(Record, String)>) -> StoreResult<Vec<Record>> {
        rows.into_iter()
            .map(|(mut r, doc)| {
                r.doc = serde_json::from_str(&doc)?;
                Ok(r)
            })
            .collect()
    }

    const COLUMNS: &'static str = "app, kind, id, vendor_id, doc, created, modified, version";

    fn query(&self, sql_where: &str, args: &[&dyn rusqlite::ToSql]) -> StoreResult<Vec<Record>> {
        let conn = self.conn();
        let sql = format!("SELECT {} FROM resources WHERE {sql_where} ORDER BY rowid", Self::COLUMNS);
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(args, Self::row_to_record)?.collect::<Result<Vec<_>, _>>()?;
        drop(stmt);
        drop(conn);
        Self::collect(rows)
    }

    pub fn get(&self, app: &str, kind: Kind, id: &str) -> StoreResult<Option<Record>> {
        Ok(self.query("app = ?1 AND kind = ?2 AND id = ?3", &[&app, &kind.as_str(), &id])?.pop())
    }

    /// By userName / displayName, case-insensitively.
    pub fn find_by_name(&self, app: &str, kind: Kind, name: &str) -> StoreResult<Option<Record>> {
        Ok(self.query("app = ?1 AND kind = ?2 AND name_key = ?3", &[&app, &kind.as_str(), &lower(name)])?.pop())
    }

    pub fn find_by_external_id(&self, app: &str, kind: Kind, external_id: &str) -> StoreResult<Vec<Record>> {
        self.query("app = ?1 AND kind = ?2 AND external_id = ?3", &[&app, &kind.as_str(), &external_id])
    }

    pub fn find_by_vendor_id(&self, app: &str, kind: Kind, vendor_id: &str) -> StoreResult<Option<Record>> {
        Ok(self.query("app = ?1 AND kind = ?2 AND vendor_id = ?3", &[&app, &kind.as_str(), &vendor_id])?.pop())
    }

    /// By work email, case-insensitively.
    pub fn find_by_work_email(&self, app: &str, kind: Kind, email: &str) -> StoreResult<Vec<Record>> {
        self.query("app = ?1 AND kind = ?2 AND email_key = ?3", &[&app, &kind.as_str(), &email.to_lowercase()])
    }

    /// Every record of a kind, oldest first (stable paging order).
    pub fn list(&self, app: &str, kind: Kind) -> StoreResult<Vec<Record>> {
        self.query("app = ?1 AND kind = ?2", &[&app, &kind.as_str()])
    }

    pub fn count(&self, app: &str, kind: Kind) -> StoreResult<u64> {
        let n: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM resources WHERE app = ?1 AND kind = ?2",
            params![app, kind.as_str()],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Inserts or replaces a record and appends its audit entry, atomically. `Duplicate` when another
    /// record of the app already has the same name.
    pub fn put(&self, rec: &Record, audit: &AuditEntry) -> StoreResult<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let owner: Option<String> = tx
            .query_row(
                "SELECT id FROM resources WHERE app = ?1 AND kind = ?2 AND vendor_id = ?3 AND id != ?4",
                params![rec.app, rec.kind.as_str(), rec.vendor_id, rec.id],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(owner) = owner {
            return Err(StoreError::VendorLinked(owner));
        }
        let res = tx.execute(
            "INSERT INTO resources (app, kind, id, vendor_id, name_key, external_id, doc, created, modified, version, email_key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (app, kind, id) DO UPDATE SET vendor_id = excluded.vendor_id,
               name_key = excluded.name_key, external_id = excluded.external_id, doc = excluded.doc,
               modified = excluded.modified, version = excluded.version, email_key = excluded.email_key",
            params![
                rec.app,
                rec.kind.as_str(),
                rec.id,
                rec.vendor_id,
                lower(rec.name()),
                external_id_of(&rec.doc),
                serde_json::to_string(&rec.doc)?,
                rec.created,
                rec.modified,
                rec.version,
                work_email_of(&rec.doc)
            ],
        );
        match res {
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                return Err(StoreError::Duplicate)
            }
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        tx.execute(
            "DELETE FROM tombstones WHERE app = ?1 AND kind = ?2 AND vendor_id = ?3",
            params![rec.app, rec.kind.as_str(), rec.vendor_id],
        )?;
        Self::append_audit(&tx, audit)?;
        tx.commit()?;
        Ok(())
    }

    /// Removes a record and appends its audit entry, atomically. With `tombstone`, remembers that the
    /// vendor still holds the (disabled) record so filters do not bring it back.
    pub fn remove(&self, rec: &Record, tombstone: bool, audit: &AuditEntry) -> StoreResult<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM resources WHERE app = ?1 AND kind = ?2 AND id = ?3",
            params![rec.app, rec.kind.as_str(), rec.id],
        )?;
        if tombstone {
            tx.execute(
                "INSERT OR REPLACE INTO tombstones (app, kind, vendor_id, name_key, deleted, external_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    rec.app,
                    rec.kind.as_str(),
                    rec.vendor_id,
                    lower(rec.name()),
                    audit.at,
                    external_id_of(&rec.doc)
                ],
            )?;
        }
        Self::append_audit(&tx, audit)?;
        tx.commit()?;
        Ok(())
    }

    pub fn is_tombstoned(&self, app: &str, kind: Kind, vendor_id: &str) -> StoreResult<bool> {
        Ok(self.tombstone(app, kind, vendor_id)?.is_some())
    }

    /// The tombstone of a vendor record the gateway deprovisioned, if any.
    pub fn tombstone(&self, app: &str, kind: Kind, vendor_id: &str) -> StoreResult<Option<Tombstone>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT external_id, deleted FROM tombstones WHERE app = ?1 AND kind = ?2 AND vendor_id = ?3",
                params![app, kind.as_str(), vendor_id],
                |r| Ok(Tombstone { external_id: r.get(0)?, deleted: r.get(1)? }),
            )
            .optional()?)
    }

    /// Appends an audit entry on its own (failed operations, imports); an entry that began as an intent
    /// (`seq` set by `audit_intent`) is completed in place.
    pub fn audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        let conn = self.conn();
        Self::append_audit(&conn, entry)
    }

    /// Records, in its own transaction and before the first vendor call, that a change is about to be
    /// sent: whatever happens next (a failed shadow write, a crash, a cancelled task), the vendor change
    /// has an audit line. Returns the entry's `seq`; the entry passed to `put`/`remove`/`audit` with that
    /// `seq` completes it.
    pub fn audit_intent(&self, entry: &AuditEntry) -> StoreResult<i64> {
        let conn = self.conn();
        let intent = AuditEntry {
            seq: 0,
            outcome: INTENT.into(),
            status: 0,
            detail: Some(
                "sent to the vendor; the outcome was never recorded (the gateway stopped or its store failed)".into(),
            ),
            ..entry.clone()
        };
        Self::insert_audit(&conn, &intent)?;
        Ok(conn.last_insert_rowid())
    }

    fn append_audit(conn: &Connection, e: &AuditEntry) -> StoreResult<()> {
        if e.seq > 0 {
            let json = |v: &Option<Value>| v.as_ref().map(|v| v.to_string());
            let updated = conn
                .prepare_cached(
                    "UPDATE audit SET at = ?2, resource_id = ?3, name_key = ?4, name = ?5, operation = ?6,
                       before = ?7, after = ?8, outcome = ?9, status = ?10, detail = ?11, vendor_calls = ?12,
                       attempts = ?13, attempt_log = ?14
                     WHERE seq = ?1",
                )?
                .execute(params![
                    e.seq,
                    e.at,
                    e.resource_id,
                    e.name.as_deref().map(lower),
                    e.name,
                    e.operation,
                    json(&e.before),
                    json(&e.after),
                    e.outcome,
                    e.status,
                    e.detail,
                    e.vendor_calls,
                    e.attempts,
                    if e.attempt_log.is_empty() { None } else { Some(serde_json::to_string(&e.attempt_log)?) }
                ])?;
            if updated == 1 {
                return Ok(());
            }
        }
        Self::insert_audit(conn, e)
    }

    fn insert_audit(conn: &Connection, e: &AuditEntry) -> StoreResult<()> {
        let json = |v: &Option<Value>| v.as_ref().map(|v| v.to_string());
        conn.prepare_cached(
            "INSERT INTO audit (at, app, resource_type, resource_id, name_key, name, operation, actor, request_id,
               before, after, outcome, status, detail, vendor_calls, attempts, attempt_log)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        )?
        .execute(params![
            e.at,
            e.app,
            e.resource_type,
            e.resource_id,
            e.name.as_deref().map(lower),
            e.name,
            e.operation,
            e.actor,
            e.request_id,
            json(&e.before),
            json(&e.after),
            e.outcome,
            e.status,
            e.detail,
            e.vendor_calls,
            e.attempts,
            if e.attempt_log.is_empty() { None } else { Some(serde_json::to_string(&e.attempt_log)?) }
        ])?;
        Ok(())
    }

    /// Audit entries, newest first.
    pub fn audit_log(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, at, app, resource_type, resource_id, name, operation, actor, request_id, before, after,
                    outcome, status, detail, vendor_calls, attempts, attempt_log
             FROM audit
             WHERE (?1 IS NULL OR app = ?1) AND (?2 IS NULL OR name_key = ?2) AND (?3 IS NULL OR at >= ?3)
             ORDER BY seq DESC LIMIT ?4",
        )?;
        let limit = if q.limit == 0 { i64::MAX } else { q.limit as i64 };
        let parse = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok());
        let rows = stmt
            .query_map(params![q.app, q.name.as_deref().map(lower), q.since, limit], |r| {
                Ok(AuditEntry {
                    seq: r.get(0)?,
                    at: r.get(1)?,
                    app: r.get(2)?,
                    resource_type: r.get(3)?,
                    resource_id: r.get(4)?,
                    name: r.get(5)?,
                    operation: r.get(6)?,
                    actor: r.get(7)?,
                    request_id: r.get(8)?,
                    before: parse(r.get(9)?),
                    after: parse(r.get(10)?),
                    outcome: r.get(11)?,
                    status: r.get(12)?,
                    detail: r.get(13)?,
                    vendor_calls: r.get(14)?,
                    attempts: r.get(15)?,
                    attempt_log: r
                        .get::<_, Option<String>>(16)?
                        .and_then(|s| serde_json::from_str(&s).ok())
                        .unwrap_or_default(),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Deletes audit entries older than `before` (RFC 3339); returns how many went.
    pub fn prune_audit(&self, before: &str) -> StoreResult<u64> {
        let n = self.conn().execute("DELETE FROM audit WHERE at < ?1", params![before])?;
        Ok(n as u64)
    }

    pub fn audit_len(&self) -> StoreResult<u64> {
        let n: i64 = self.conn().query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))?;
        Ok(n as u64)
    }
}

// ---- Reading the audit log for the status page (src/status). Kept apart from the engine's store calls. ----

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
    Is(String),
    /// Anything but a success: the vendor or the gateway refused, failed, or never recorded the outcome.
    Failed,
    /// What only a person can settle: refusals that need manual action, a vendor that refuses the
    /// gateway's credential, intents never completed, vendor changes the gateway could not link, and
    /// drift that no later pass repaired.
    NeedsPerson,
}

/// The status page counts entries by app and outcome for every card on every view: without this index
/// each count reads the whole table, before/after documents included (~150 ms for the overview of a
/// 100,000-entry log, under the store's lock). `name_key` (and the rowid, `seq`, which every index holds)
/// answers "was this drift repaired later" from the index; `at` keeps the 24-hour failure count in it.
const STATUS_INDEXES: &str = "CREATE INDEX IF NOT EXISTS audit_app_outcome ON audit (app, outcome, name_key, at);";

/// The outcomes that are a success (for `OutcomeFilter::Failed`).
const SUCCESS_OUTCOMES: &str = "'ok', 'drift_found', 'drift_repaired'";

impl AuditFilter {
    /// The WHERE clause over `audit a` and its parameters, in order.
    fn clause(&self) -> (String, Vec<rusqlite::types::Value>) {
        use rusqlite::types::Value as Sql;
        let mut sql = vec!["1 = 1".to_string()];
        let mut args: Vec<Sql> = Vec::new();
        let mut arg = |sql: &mut Vec<String>, clause: &str, v: Sql| {
            args.push(v);
            sql.push(clause.replace('?', &format!("?{}", args.len())));
        };
        if let Some(app) = &self.app {
            arg(&mut sql, "a.app = ?", Sql::Text(app.clone()));
        }
        if let Some(name) = self.name_contains.as_deref().filter(|n| !n.is_empty()) {
            arg(&mut sql, "instr(a.name_key, ?) > 0", Sql::Text(lower(name)));
        }
        if let Some(since) = &self.since {
            arg(&mut sql, "a.at >= ?", Sql::Text(since.clone()));
        }
        if let Some(seq) = self.before_seq {
            arg(&mut sql, "a.seq < ?", Sql::Integer(seq));
        }
        match &self.outcome {
            OutcomeFilter::Any => {}
            OutcomeFilter::Is(outcome) => arg(&mut sql, "a.outcome = ?", Sql::Text(outcome.clone())),
            OutcomeFilter::Failed => sql.push(format!("a.outcome NOT IN ({SUCCESS_OUTCOMES})")),
            // The IN list first, so the (app, outcome) index finds the candidates; only drift is then
            // checked for a later repair of the same user.
            // A `rejected` entry with vendor calls is a change the vendor made that the gateway refused to
            // link (the name or the vendor record already taken in the shadow): a clash to resolve.
            OutcomeFilter::NeedsPerson => sql.push(format!(
                "a.outcome IN ('needs_manual_action', 'unauthorized', '{INTENT}', 'drift_found', 'rejected')
                 AND (a.outcome <> 'rejected' OR a.vendor_calls > 0)
                 AND (a.outcome <> 'drift_found' OR NOT EXISTS (
                      SELECT 1 FROM audit r WHERE r.app = a.app AND r.name_key = a.name_key AND r.seq > a.seq
                        AND r.outcome = 'drift_repaired'))"
            )),
        }
        (sql.join(" AND "), args)
    }
}

impl Store {
    /// Up to `limit` entries matching `filter`, newest first, and whether older ones match too.
    pub fn audit_page(&self, filter: &AuditFilter, limit: usize) -> StoreResult<(Vec<AuditEntry>, bool)> {
        let (clause, mut args) = filter.clause();
        args.push(rusqlite::types::Value::Integer(limit as i64 + 1));
        let sql = format!(
            "SELECT a.seq, a.at, a.app, a.resource_type, a.resource_id, a.name, a.operation, a.actor, a.request_id,
                    a.before, a.after, a.outcome, a.status, a.detail, a.vendor_calls, a.attempts, a.attempt_log
             FROM audit a WHERE {clause} ORDER BY a.seq DESC LIMIT ?{}",
            args.len()
        );
        let conn = self.conn();
        let mut stmt = conn.prepare(&sql)?;
        let json = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok());
        let mut rows = stmt
            .query_map(rusqlite::params_from_iter(args), |r| {
                Ok(AuditEntry {
                    seq: r.get(0)?,
                    at: r.get(1)?,
                    app: r.get(2)?,
                    resource_type: r.get(3)?,
                    resource_id: r.get(4)?,
                    name: r.get(5)?,
                    operation: r.get(6)?,
                    actor: r.get(7)?,
                    request_id: r.get(8)?,
                    before: json(r.get(9)?),
                    after: json(r.get(10)?),
                    outcome: r.get(11)?,
                    status: r.get(12)?,
                    detail: r.get(13)?,
                    vendor_calls: r.get(14)?,
                    attempts: r.get(15)?,
                    attempt_log: r
                        .get::<_, Option<String>>(16)?
                        .and_then(|s| serde_json::from_str(&s).ok())
                        .unwrap_or_default(),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        Ok((rows, more))
    }

    /// How many entries match `filter`.
    pub fn audit_count(&self, filter: &AuditFilter) -> StoreResult<u64> {
        let (clause, args) = filter.clause();
        let conn = self.conn();
        let n: i64 = conn.query_row(
            &format!("SELECT COUNT(*) FROM audit a WHERE {clause}"),
            rusqlite::params_from_iter(args),
            |r| r.get(0),
        )?;
        Ok(n as u64)
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
            outcome: outcome.into(),
            status,
            ..Default::default()
        }
    }

    #[test]
    fn filters_page_and_count_alike() {
        let s = Store::open(":memory:").unwrap();
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
            s.audit(&entry(app, name, outcome, status)).unwrap();
        }
        let unlinked = AuditEntry { vendor_calls: 1, ..entry("b", "unlinked@y", "rejected", 409) };
        s.audit(&unlinked).unwrap();
        let names = |f: &AuditFilter| -> Vec<String> {
            s.audit_page(f, 100).unwrap().0.into_iter().filter_map(|e| e.name).collect()
        };
        let ada = AuditFilter { name_contains: Some("ADA".into()), ..Default::default() };
        assert_eq!(names(&ada), ["ada@y", "Ada@x"]);
        assert_eq!(s.audit_count(&ada).unwrap(), 2);
        assert_eq!(names(&AuditFilter { app: Some("b".into()), ..ada.clone() }), ["ada@y"]);
        let failed = AuditFilter { outcome: OutcomeFilter::Failed, ..Default::default() };
        assert_eq!(names(&failed), ["unlinked@y", "malformed@x", "x%_@y", "ada@y", "alan@x"]);
        let person = AuditFilter { outcome: OutcomeFilter::NeedsPerson, ..Default::default() };
        assert_eq!(
            names(&person),
            ["unlinked@y", "x%_@y", "grace@x", "ada@y"],
            "hedy's drift was repaired later; a refusal without a vendor call is not a person's"
        );
        assert_eq!(s.audit_count(&person).unwrap(), 4);
        // A LIKE pattern in the name is text, not a pattern.
        assert_eq!(names(&AuditFilter { name_contains: Some("%".into()), ..Default::default() }), ["x%_@y"]);
        let exact = AuditFilter { outcome: OutcomeFilter::Is("unavailable".into()), ..Default::default() };
        assert_eq!(names(&exact), ["alan@x"]);
        // Pages of two, newest first, until nothing older is left.
        let (first, more) = s.audit_page(&AuditFilter::default(), 2).unwrap();
        assert!(more);
        let older = AuditFilter { before_seq: Some(first[1].seq), ..Default::default() };
        let (second, _) = s.audit_page(&older, 2).unwrap();
        assert!(second[0].seq < first[1].seq);
        let (last, more) = s.audit_page(&AuditFilter { before_seq: Some(2), ..Default::default() }, 2).unwrap();
        assert_eq!((last.len(), more), (1, false));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(id: &str, name: &str) -> Record {
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

    fn audit(op: &str, name: &str) -> AuditEntry {
        AuditEntry {
            at: "2026-01-01T00:00:00Z".into(),
            app: "a".into(),
            resource_type: "User".into(),
            name: Some(name.into()),
            operation: op.into(),
            actor: "entra".into(),
            outcome: "ok".into(),
            status: 201,
            ..Default::default()
        }
    }

    #[test]
    fn put_get_find_and_names_are_unique_case_insensitively() {
        let s = Store::open(":memory:").unwrap();
        s.put(&rec("1", "Alice@x"), &audit("create", "Alice@x")).unwrap();
        assert_eq!(s.get("a", Kind::User, "1").unwrap().unwrap().name(), "Alice@x");
        assert!(s.find_by_name("a", Kind::User, "ALICE@X").unwrap().is_some());
        assert!(s.find_by_name("other", Kind::User, "alice@x").unwrap().is_none());
        assert_eq!(s.find_by_external_id("a", Kind::User, "ext-1").unwrap().len(), 1);
        assert!(matches!(s.put(&rec("2", "alice@X"), &audit("create", "x")), Err(StoreError::Duplicate)));
        // The failed insert left no audit line behind.
        assert_eq!(s.audit_len().unwrap(), 1);
    }

    #[test]
    fn remove_with_tombstone_and_audit_newest_first() {
        let s = Store::open(":memory:").unwrap();
        let r = rec("1", "bob");
        s.put(&r, &audit("create", "bob")).unwrap();
        s.remove(&r, true, &audit("delete", "bob")).unwrap();
        assert!(s.get("a", Kind::User, "1").unwrap().is_none());
        assert!(s.is_tombstoned("a", Kind::User, "v-1").unwrap());
        s.put(&r, &audit("adopt", "bob")).unwrap();
        assert!(!s.is_tombstoned("a", Kind::User, "v-1").unwrap());
        let log =
            s.audit_log(&AuditQuery { app: Some("a".into()), name: Some("BOB".into()), ..Default::default() }).unwrap();
        let ops: Vec<_> = log.iter().map(|e| e.operation.as_str()).collect();
        assert_eq!(ops, ["adopt", "delete", "create"]);
    }

    #[test]
    fn one_vendor_record_links_to_one_gateway_id() {
        let s = Store::open(":memory:").unwrap();
        s.put(&rec("1", "dan"), &audit("create", "dan")).unwrap();
        let twin = Record { vendor_id: "v-1".into(), ..rec("2", "dan2") };
        assert!(matches!(s.put(&twin, &audit("create", "dan2")), Err(StoreError::VendorLinked(owner)) if owner == "1"));
        // The unique index holds even for a write that skips the check.
        let conn = s.conn();
        let raw = conn.execute(
            "INSERT INTO resources (app, kind, id, vendor_id, name_key, doc, created, modified, version)
             VALUES ('a', 'User', '3', 'v-1', 'x', '{}', 't', 't', 1)",
            [],
        );
        assert!(raw.is_err());
    }

    #[test]
    fn an_intent_is_completed_in_place_or_stays_open() {
        let s = Store::open(":memory:").unwrap();
        let mut entry = audit("create", "erin");
        entry.seq = s.audit_intent(&entry).unwrap();
        let open = s.audit_log(&AuditQuery::default()).unwrap();
        assert_eq!((open.len(), open[0].outcome.as_str()), (1, INTENT));
        s.put(&rec("1", "erin"), &entry).unwrap();
        let done = s.audit_log(&AuditQuery::default()).unwrap();
        assert_eq!((done.len(), done[0].outcome.as_str(), done[0].status), (1, "ok", 201));
    }

    #[test]
    fn tombstones_keep_entras_external_id() {
        let s = Store::open(":memory:").unwrap();
        let r = rec("1", "fay");
        s.put(&r, &audit("create", "fay")).unwrap();
        s.remove(&r, true, &audit("delete", "fay")).unwrap();
        assert_eq!(s.tombstone("a", Kind::User, "v-1").unwrap().unwrap().external_id.as_deref(), Some("ext-1"));
    }

    #[test]
    fn a_store_that_cannot_write_is_not_ready() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite");
        let s = Store::open(path.to_str().unwrap()).unwrap();
        s.check_writable().unwrap();
        let other = Connection::open(&path).unwrap();
        other.busy_timeout(std::time::Duration::ZERO).unwrap();
        other.execute_batch("BEGIN EXCLUSIVE").unwrap();
        s.conn().busy_timeout(std::time::Duration::from_millis(10)).unwrap();
        assert!(s.check_writable().is_err());
    }

    #[test]
    fn audit_retention_prunes_only_older_entries() {
        let s = Store::open(":memory:").unwrap();
        for at in ["2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z", "2026-11-01T00:00:00Z"] {
            s.audit(&AuditEntry { at: at.into(), ..audit("create", "x") }).unwrap();
        }
        assert_eq!(s.prune_audit("2026-06-01T00:00:00Z").unwrap(), 1);
        assert_eq!(s.audit_len().unwrap(), 2);
    }

    #[test]
    fn older_stores_are_migrated_in_place() {
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
        let s = Store::open(path.to_str().unwrap()).unwrap();
        assert_eq!(s.find_by_work_email("a", Kind::User, "old@x.com").unwrap().len(), 1);
        s.audit(&audit("create", "old")).unwrap();
        assert_eq!(s.audit_log(&AuditQuery::default()).unwrap()[0].attempts, 0);
        let tried = Attempt { method: "POST".into(), path: "/Users".into(), outcome: "503".into(), ms: 12 };
        s.audit(&AuditEntry { attempts: 1, attempt_log: vec![tried.clone()], ..audit("create", "new") }).unwrap();
        assert_eq!(s.audit_log(&AuditQuery::default()).unwrap()[0].attempt_log, [tried]);
    }

    #[test]
    fn survives_reopen_on_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite");
        let path = path.to_str().unwrap();
        Store::open(path).unwrap().put(&rec("1", "carol"), &audit("create", "carol")).unwrap();
        let again = Store::open(path).unwrap();
        assert_eq!(again.get("a", Kind::User, "1").unwrap().unwrap().vendor_id, "v-1");
    }
}
