//! The embedded SQLite engine (WAL). One writer thread owns the only write connection and group-commits:
//! it applies each change as it arrives, inside its own savepoint (so one refused change does not undo its
//! neighbours) of one open transaction, and commits when the disk is free. A file store's commits are
//! pipelined: the writer commits without waiting for the disk (`synchronous=NORMAL`) and hands the batch
//! to a flusher thread, which fsyncs the WAL once for every batch committed meanwhile and only then
//! answers their callers; the writer is already applying the next batch. Reader threads each own a
//! read-only connection, which in WAL mode never waits for the writer. No database call runs on an async
//! worker: reads run on the reader threads, writes on the writer thread (see `SqliteEngine::wait` for how
//! a caller waits for either).
//! Counts (records per app and kind, audit entries) are kept by the writer, so `/metrics` counts nothing.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use rusqlite_migration::{Migrations, M};
use serde_json::Value;
use tokio::sync::oneshot;

use super::{
    external_id_of, work_email_of, AuditEntry, AuditFilter, AuditQuery, Kind, Record, StoreEngine, StoreError,
    StoreResult, Tombstone, INTENT,
};

/// Changes one commit takes at most: bounds a batch's latency while Entra's bursts still share an fsync.
const MAX_BATCH: usize = 256;
/// Audit entries one pruning transaction deletes: a large backlog never holds the writer for long.
const PRUNE_BATCH: usize = 1_000;
/// WAL pages after which the writer copies the WAL into the database (SQLite's default is 1,000). A change
/// dirties a handful of index pages besides its row, so at 1,000 the writer checkpointed every few dozen
/// commits, each checkpoint two more fsyncs and a random write of every page; at 10,000 (a WAL of about
/// 40 MiB) pages that many changes share (index interior pages, the audit tail) are copied once per
/// checkpoint (BENCHMARKS.md 2b: POST and PATCH 1.3-1.7x in two pairs on a loaded machine).
const WAL_CHECKPOINT_PAGES: i64 = 10_000;
/// Read-only connections of a file store.
const READERS: usize = 4;

/// How the engine is opened.
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// How long a statement waits for a lock another process holds before failing.
    pub busy_timeout: Duration,
    /// How often the writer checks whether another process wrote to the file (`PRAGMA data_version`;
    /// `scim-bridge reconcile --dry-run` and `audit` beside `serve` do not, an operator's tool might) and
    /// then counts again, so the cached counts never stay wrong.
    pub recount_every: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions { busy_timeout: Duration::from_secs(5), recount_every: Duration::from_secs(30) }
    }
}

/// The schema, in order. The first step is the layout of stores written before migrations were
/// numbered (created `IF NOT EXISTS`, then brought up by `legacy_upgrade`): an old store and a new one
/// both end at the same `user_version`.
fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up_with_hook(
            "CREATE TABLE IF NOT EXISTS resources (
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
                vendor_calls INTEGER NOT NULL
            );
            CREATE INDEX IF NOT EXISTS audit_app_name ON audit (app, name_key, seq);",
            legacy_upgrade,
        ),
        // Paging in the stable order (an index on (app, kind) is ordered by rowid within each pair), and
        // audit pruning and `since` filters by time.
        M::up(
            "CREATE INDEX IF NOT EXISTS resources_order ON resources (app, kind);
             CREATE INDEX IF NOT EXISTS audit_at ON audit (at);",
        ),
        // The status page counts entries by app and outcome for every card on every view: without this
        // index each count reads the whole table, documents included (~150 ms for the overview of a
        // 100,000-entry log). `name_key` (and `seq`, which every index holds) answers "was this drift
        // repaired later" from the index; `at` keeps the 24-hour failure count in it.
        M::up("CREATE INDEX IF NOT EXISTS audit_app_outcome ON audit (app, outcome, name_key, at);"),
        // The same counts from two indexes that cost a change one random page fewer. A new entry goes to
        // the end of an index whose keys after (app, outcome) begin with `at` (time only grows), onto the
        // page the entries before it already dirtied; with `name_key` before `at` (and in `audit_app_name`)
        // each entry landed on a random page of each, one more WAL frame for every change. `name_key` and
        // `vendor_calls` ride at the end so the "needs a person" count reads only this index, and "was it
        // repaired later" is one covering seek of (app, name_key, outcome) and the rowid, `seq`, that
        // every index ends with. BENCHMARKS.md 2b, fifth pass, eleven pairs against the layout before:
        // PATCH -5 to +15 % (better in ten), POST within the machine's swing; the status overview of a
        // 100,000-entry log 40 -> 31 ms. PostgreSQL keeps its indexes (DEVELOPERS.md says why).
        M::up(
            "DROP INDEX IF EXISTS audit_app_outcome;
             DROP INDEX IF EXISTS audit_app_name;
             CREATE INDEX IF NOT EXISTS audit_outcome_time ON audit (app, outcome, at, name_key, vendor_calls);
             CREATE INDEX IF NOT EXISTS audit_user_outcome ON audit (app, name_key, outcome);",
        ),
    ])
}

/// The column changes made before migrations were numbered; each step checks before it alters, so it
/// is right for a store at any of those versions.
fn legacy_upgrade(conn: &rusqlite::Transaction) -> rusqlite_migration::HookResult {
    let has = |table: &str, column: &str| -> rusqlite::Result<bool> {
        conn.prepare(&format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"))?.exists([column])
    };
    if !has("resources", "email_key")? {
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
    if !has("tombstones", "external_id")? {
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
    if !has("audit", "attempts")? {
        conn.execute_batch("ALTER TABLE audit ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0")?;
    }
    if !has("audit", "attempt_log")? {
        conn.execute_batch("ALTER TABLE audit ADD COLUMN attempt_log TEXT")?;
    }
    Ok(())
}

fn lower(s: &str) -> String {
    s.to_lowercase()
}

/// A change for the writer, its JSON already written as text by the caller: every change in the process
/// waits for the writer, so the writer's time goes to SQLite alone.
enum Write {
    Put(Box<(RecordRow, AuditRow)>),
    Remove(Box<(RecordKeys, bool, AuditRow)>),
    Audit(Box<AuditRow>),
    Intent(Box<AuditRow>),
    CheckWritable,
    PruneBatch(String),
}

/// What identifies a record and keeps its name, vendor record and `externalId` unique or findable.
struct RecordKeys {
    app: String,
    kind: Kind,
    id: String,
    vendor_id: String,
    name_key: String,
    external_id: Option<String>,
    /// The version the caller read (what a remove expects to find).
    version: i64,
}

impl RecordKeys {
    fn of(rec: &Record) -> RecordKeys {
        RecordKeys {
            app: rec.app.clone(),
            kind: rec.kind,
            id: rec.id.clone(),
            vendor_id: rec.vendor_id.clone(),
            name_key: lower(rec.name()),
            external_id: external_id_of(&rec.doc).map(String::from),
            version: rec.version,
        }
    }
}

/// A record's row.
struct RecordRow {
    keys: RecordKeys,
    doc: String,
    email_key: Option<String>,
    created: String,
    modified: String,
    version: i64,
}

impl RecordRow {
    fn of(rec: &Record) -> StoreResult<RecordRow> {
        Ok(RecordRow {
            keys: RecordKeys::of(rec),
            doc: serde_json::to_string(&rec.doc)?,
            email_key: work_email_of(&rec.doc),
            created: rec.created.clone(),
            modified: rec.modified.clone(),
            version: rec.version,
        })
    }
}

/// An audit entry's row.
struct AuditRow {
    seq: i64,
    at: String,
    app: String,
    resource_type: String,
    resource_id: Option<String>,
    name: Option<String>,
    operation: String,
    actor: String,
    request_id: Option<String>,
    before: Option<String>,
    after: Option<String>,
    outcome: String,
    status: u16,
    detail: Option<String>,
    vendor_calls: u32,
    attempts: u32,
    attempt_log: Option<String>,
}

impl AuditRow {
    fn of(e: &AuditEntry) -> StoreResult<AuditRow> {
        let json = |v: &Option<Value>| v.as_ref().map(Value::to_string);
        Ok(AuditRow {
            seq: e.seq,
            at: e.at.clone(),
            app: e.app.clone(),
            resource_type: e.resource_type.clone(),
            resource_id: e.resource_id.clone(),
            name: e.name.clone(),
            operation: e.operation.clone(),
            actor: e.actor.clone(),
            request_id: e.request_id.clone(),
            before: json(&e.before),
            after: json(&e.after),
            outcome: e.outcome.as_str().to_string(),
            status: e.status,
            detail: e.detail.clone(),
            vendor_calls: e.vendor_calls,
            attempts: e.attempts,
            attempt_log: if e.attempt_log.is_empty() { None } else { Some(serde_json::to_string(&e.attempt_log)?) },
        })
    }

    fn name_key(&self) -> Option<String> {
        self.name.as_deref().map(lower)
    }
}

/// What a change did, for its caller and for the engine's counts.
#[derive(Default)]
struct Applied {
    /// `audit_intent`'s seq, or the rows `PruneBatch` deleted.
    value: i64,
    /// Change in the number of records of (app, kind).
    records: Option<((String, Kind), i64)>,
    /// Change in the number of audit entries.
    audit: i64,
    /// The rowid a new record took, or the one a removed record left, in (app, kind) of `records`.
    moved: Option<Moved>,
}

enum Moved {
    Added(i64),
    Removed(i64),
}

type Reply = oneshot::Sender<StoreResult<i64>>;

enum Job {
    Write(Write, Reply),
    /// A read run by the writer with no transaction open (an in-memory store has no second connection;
    /// the paging positions are loaded where no commit can slip between).
    Read(ReadJob),
    /// The flusher has made the last commit durable: the next may go.
    Flushed,
    /// The engine is dropped: commit what is open, answer it, close.
    Stop,
    /// A fault the writer's own code cannot be made to raise: the writer thread panics.
    #[cfg(test)]
    Panic,
}

#[derive(Default)]
struct Counts {
    records: Mutex<HashMap<(String, Kind), i64>>,
    audit: AtomicU64,
    /// Each listed (app, kind)'s rowids in order: SCIM's `startIndex` is an offset, and SQLite walks an
    /// offset entry by entry (at 100,000 users a page near the end cost 2.65× the first). The writer
    /// loads a list the first time a page of it is asked for (between batches, so no commit is missed)
    /// and keeps it as it commits; 8 bytes a record. Like the counts, the lists are dropped when the
    /// writer notices another process wrote (within `recount_every`); until then a page may be shifted
    /// by that process's changes, never wrong in what it holds.
    positions: Mutex<HashMap<(String, Kind), Vec<i64>>>,
    /// How many times a list was read from the database (a list is loaded once, however many pages ask).
    #[cfg(test)]
    position_loads: AtomicU64,
}

impl Counts {
    /// The rowid at `offset` in (app, kind)'s order (`Some(None)` past the end), or `None` while that
    /// list is not loaded.
    fn position(&self, key: &(String, Kind), offset: usize) -> Option<Option<i64>> {
        let positions = self.positions.lock().unwrap_or_else(|p| p.into_inner());
        positions.get(key).map(|list| list.get(offset).copied())
    }

    fn apply(&self, a: &Applied) {
        if let Some((key, delta)) = &a.records {
            let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
            *records.entry(key.clone()).or_default() += delta;
            let mut positions = self.positions.lock().unwrap_or_else(|p| p.into_inner());
            if let (Some(list), Some(moved)) = (positions.get_mut(key), &a.moved) {
                match *moved {
                    Moved::Added(rowid) => list.insert(list.partition_point(|r| *r < rowid), rowid),
                    Moved::Removed(rowid) => {
                        if let Ok(at) = list.binary_search(&rowid) {
                            list.remove(at);
                        }
                    }
                }
            }
        }
        if a.audit > 0 {
            self.audit.fetch_add(a.audit as u64, Ordering::Relaxed);
        } else if a.audit < 0 {
            let _ = self
                .audit
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(a.audit.unsigned_abs())));
        }
    }
}

/// A read for a reader thread (or an in-memory store's writer): it runs the query and sends its own answer.
type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// Runs a read. One that panics drops its reply (its caller gets `Unavailable`); the thread running it
/// (a reader, or the writer) and its connection go on.
fn run_read(job: ReadJob, conn: &Connection) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(conn)));
}

/// A file store's readers: one thread per read-only connection, all taking reads from one queue. A
/// dedicated thread that already owns its connection costs a read one hand-off each way; tokio's blocking
/// pool (used before) also allocated a task per read and parked its threads on one condvar, then took a
/// connection from a locked list (BENCHMARKS.md 2b, fourth pass). The threads end when the engine (the
/// queue's only sender) is dropped, closing their connections; the writer waits for them before it
/// closes its own, so the last connection to close is the one that can checkpoint and remove the WAL.
struct Readers {
    queue: crossbeam_channel::Sender<ReadJob>,
}

impl Readers {
    fn start(connections: Vec<Connection>) -> StoreResult<(Readers, Vec<std::thread::JoinHandle<()>>)> {
        let (queue, jobs) = crossbeam_channel::unbounded::<ReadJob>();
        let mut threads = Vec::with_capacity(connections.len());
        for (n, conn) in connections.into_iter().enumerate() {
            let jobs = jobs.clone();
            let thread = std::thread::Builder::new()
                .name(format!("store-reader-{n}"))
                .spawn(move || {
                    for job in jobs.iter() {
                        run_read(job, &conn);
                    }
                })
                .map_err(|e| StoreError::Unavailable(format!("cannot start a reader thread: {e}")))?;
            threads.push(thread);
        }
        Ok((Readers { queue }, threads))
    }
}

pub struct SqliteEngine {
    path: String,
    writer: mpsc::Sender<Job>,
    /// Whether a caller waits for the writer on a blocking thread rather than on its task (in-memory
    /// stores: see `wait`).
    wait_blocking: bool,
    /// Set by the flusher when a flush failed (a file store).
    flush_failed: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// Set when the writer thread ended by a panic: no change can be made any more.
    writer_died: Arc<std::sync::atomic::AtomicBool>,
    readers: Option<Readers>,
    counts: Arc<Counts>,
}

impl Drop for SqliteEngine {
    fn drop(&mut self) {
        // The flusher holds a sender too, so the writer is told rather than left to notice.
        let _ = self.writer.send(Job::Stop);
    }
}

impl std::fmt::Debug for SqliteEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteEngine").field("path", &self.path).finish()
    }
}

/// Counts records per (app, kind) and audit entries from the tables.
fn recount(conn: &Connection, counts: &Counts) -> rusqlite::Result<()> {
    let mut fresh = HashMap::new();
    let mut stmt = conn.prepare_cached("SELECT app, kind, COUNT(*) FROM resources GROUP BY app, kind")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?)))?;
    for row in rows {
        let (app, kind, n) = row?;
        fresh.insert((app, Kind::parse(&kind)), n);
    }
    let audit: i64 = conn.query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))?;
    *counts.records.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
    // Loaded again when next asked for.
    counts.positions.lock().unwrap_or_else(|p| p.into_inner()).clear();
    counts.audit.store(audit as u64, Ordering::Relaxed);
    Ok(())
}

fn data_version(conn: &Connection) -> Option<i64> {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0)).ok()
}

fn configure(conn: &Connection, opts: &SqliteOptions) -> rusqlite::Result<()> {
    conn.busy_timeout(opts.busy_timeout)?;
    conn.pragma_update(None, "foreign_keys", "ON")
}

const COLUMNS: &str = "app, kind, id, vendor_id, doc, created, modified, version";

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

fn parse_docs(rows: Vec<(Record, String)>) -> StoreResult<Vec<Record>> {
    rows.into_iter()
        .map(|(mut r, doc)| {
            r.doc = serde_json::from_str(&doc)?;
            Ok(r)
        })
        .collect()
}

fn query(conn: &Connection, sql_where: &str, args: &[&dyn rusqlite::ToSql]) -> StoreResult<Vec<Record>> {
    let sql = format!("SELECT {COLUMNS} FROM resources WHERE {sql_where}");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(args, row_to_record)?.collect::<Result<Vec<_>, _>>()?;
    drop(stmt);
    parse_docs(rows)
}

impl SqliteEngine {
    /// Opens (creating if needed) the store at `path`; `:memory:` keeps it in memory.
    pub fn open(path: &str, opts: SqliteOptions) -> StoreResult<SqliteEngine> {
        let memory = path == ":memory:";
        let mut conn = if memory {
            Connection::open_in_memory()?
        } else {
            if let Some(dir) = Path::new(path).parent() {
                if !dir.as_os_str().is_empty() {
                    let _ = std::fs::create_dir_all(dir);
                }
            }
            Connection::open(path)?
        };
        // WAL: readers do not block the writer. FULL while the schema is brought up; a file store's
        // writer then commits with NORMAL and the flusher fsyncs the WAL before any caller is answered
        // (`Flusher`), so a commit is still on disk before Entra hears 2xx.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // The writer checkpoints after its own commits (every `WAL_CHECKPOINT_PAGES` WAL pages): right
        // after a commit no new frame can arrive, so the checkpoint completes and the next batch restarts
        // the WAL from its start. A checkpoint on another thread (tried) races the writer's next batch,
        // rarely completes under load, and the WAL grew past a gigabyte, slowing every read's lookup. The
        // size limit is above the checkpoint's, so the WAL file is reused, not cut and grown again.
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
        configure(&conn, &opts)?;
        migrations().to_latest(&mut conn)?;
        let counts = Arc::new(Counts::default());
        recount(&conn, &counts)?;
        let (readers, reader_threads) = if memory {
            (None, Vec::new())
        } else {
            let mut connections = Vec::with_capacity(READERS);
            for _ in 0..READERS {
                let r = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
                )?;
                configure(&r, &opts)?;
                // SQLite's default page cache (2 MB) and no memory map. After every commit a reader's next
                // transaction drops its cache and its mapping of the changed file: under writes, unmapping
                // and mapping again cost more than the read calls a map saves, and a larger cache costs
                // more to drop than it saves (BENCHMARKS.md 2b: CPU per request in alternated pairs).
                connections.push(r);
            }
            let (readers, threads) = Readers::start(connections)?;
            (Some(readers), threads)
        };
        let (tx, rx) = mpsc::channel();
        let flusher = if memory { None } else { Some(Flusher::start(&conn, tx.clone())?) };
        let flush_failed = flusher.as_ref().map(|f| f.failed.clone());
        let writer_counts = counts.clone();
        let writer_died = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let died = writer_died.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    writer_loop(conn, rx, &writer_counts, opts.recount_every, flusher, reader_threads)
                }));
                // A change that panics is caught where it is applied; this is a panic anywhere else in the
                // loop (a commit, the counts). Its callers get `Unavailable`, and so does every later one:
                // `/healthz` fails so that the process is restarted.
                if run.is_err() {
                    died.store(true, Ordering::Release);
                    tracing::error!(
                        "the store's writer thread panicked; every change and read is refused until a restart"
                    );
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteEngine {
            path: path.to_string(),
            writer: tx,
            wait_blocking: memory,
            flush_failed,
            writer_died,
            readers,
            counts,
        })
    }

    /// Sends a change to the writer and waits until it is committed and on disk, or refused (see `wait`).
    async fn write(&self, w: Write) -> StoreResult<i64> {
        let (reply, answer) = oneshot::channel();
        self.writer.send(Job::Write(w, reply)).map_err(|_| writer_gone())?;
        self.wait(answer).await
    }

    /// Runs a read on a reader thread's read-only connection (file store) or on the writer (in-memory
    /// store).
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        // After a failed flush the last commits are visible but may not be on disk: a read must not show
        // a change whose caller was refused (fail-stop, like writes, until the restart `/healthz` asks for).
        if let Some(why) = self.broken() {
            return Err(StoreError::Unavailable(why));
        }
        let (reply, answer) = oneshot::channel();
        let job = move |conn: &Connection| {
            // A caller that went away (Entra hung up, the request timed out) needs no answer.
            if !reply.is_closed() {
                let _ = reply.send(f(conn));
            }
        };
        match &self.readers {
            Some(readers) => readers.queue.send(Box::new(job)).map_err(|_| read_lost())?,
            None => self.writer.send(Job::Read(Box::new(job))).map_err(|_| writer_gone())?,
        }
        self.wait_or(answer, read_lost).await
    }

    /// Waits for the writer's (or flusher's) answer. A file store's caller awaits it on its task: no
    /// thread is woken to wait for it (two context switches a write, ~10 % of a write's CPU in
    /// BENCHMARKS.md 2b's profile). An in-memory store's caller waits on a blocking thread instead: tokio's
    /// paused test clock (tests/pacing.rs, which runs on memory) would otherwise see an idle runtime and
    /// jump its timers forward while the writer works; with a blocking call in flight it stands still.
    async fn wait<T: Send + 'static>(&self, answer: oneshot::Receiver<StoreResult<T>>) -> StoreResult<T> {
        self.wait_or(answer, writer_gone).await
    }

    /// `wait`, with `lost` saying what an answer that never came means (the writer or a reader stopped).
    async fn wait_or<T: Send + 'static>(
        &self,
        answer: oneshot::Receiver<StoreResult<T>>,
        lost: fn() -> StoreError,
    ) -> StoreResult<T> {
        if self.wait_blocking {
            return tokio::task::spawn_blocking(move || answer.blocking_recv().map_err(|_| lost())?)
                .await
                .map_err(store_call_failed)?;
        }
        answer.await.map_err(|_| lost())?
    }

    /// Loads (app, kind)'s rowids on the writer, between two batches, and answers the one at `offset`.
    async fn load_positions(&self, key: (String, Kind), offset: usize) -> StoreResult<Option<i64>> {
        let counts = self.counts.clone();
        let (reply, answer) = oneshot::channel();
        let job = Job::Read(Box::new(move |conn: &Connection| {
            // Pages asked for together before the list existed each sent a load: the first one loads,
            // the others answer from its list (the writer keeps it in step with every commit since).
            if let Some(start) = counts.position(&key, offset) {
                let _ = reply.send(Ok(start));
                return;
            }
            #[cfg(test)]
            counts.position_loads.fetch_add(1, Ordering::Relaxed);
            let loaded = conn
                .prepare_cached("SELECT rowid FROM resources WHERE app = ?1 AND kind = ?2 ORDER BY rowid")
                .and_then(|mut stmt| stmt.query_map(params![key.0, key.1.as_str()], |r| r.get(0))?.collect());
            let _ = reply.send(loaded.map_err(StoreError::from).map(|list: Vec<i64>| {
                let start = list.get(offset).copied();
                counts.positions.lock().unwrap_or_else(|p| p.into_inner()).insert(key, list);
                start
            }));
        }));
        self.writer.send(job).map_err(|_| writer_gone())?;
        self.wait(answer).await
    }

    async fn select(&self, sql_where: &'static str, args: Vec<String>) -> StoreResult<Vec<Record>> {
        self.read(move |conn| {
            let refs: Vec<&dyn rusqlite::ToSql> = args.iter().map(|a| a as &dyn rusqlite::ToSql).collect();
            query(conn, sql_where, &refs)
        })
        .await
    }
}

fn batch_lost() -> StoreError {
    StoreError::Unavailable("the database rolled the batch back after an error; nothing of it was kept".into())
}

fn store_call_failed(e: tokio::task::JoinError) -> StoreError {
    StoreError::Unavailable(format!("store call failed: {e}"))
}

fn read_lost() -> StoreError {
    StoreError::Unavailable("a store read failed before it answered".into())
}

fn writer_gone() -> StoreError {
    StoreError::Unavailable("the store's writer has stopped".into())
}

/// A committed change's answer to its caller, sent once the commit is on disk.
type Answer = (StoreResult<i64>, Reply);

fn answer(answers: Vec<Answer>) {
    for (outcome, reply) in answers {
        let _ = reply.send(outcome);
    }
}

fn flush_failed() -> StoreError {
    StoreError::Unavailable(
        "the store could not write its log to disk; it takes no more changes until the gateway is restarted".into(),
    )
}

/// Makes a file store's commits durable off the writer's thread. The writer commits with
/// `synchronous=NORMAL` (SQLite appends the WAL frames and returns without fsync) and hands the batch's
/// answers here; this thread takes every batch handed over meanwhile, fsyncs the WAL file once, and only
/// then answers them. The WAL is append-only between checkpoints and a checkpoint fsyncs it first, so one
/// fsync after a commit returned covers that commit and every earlier one: a caller is answered only when
/// its change is on disk, as with `synchronous=FULL`, but the writer applies the next batch while the
/// disk works instead of waiting (BENCHMARKS.md 2b: two cohorts of callers capped batches at ~5 and
/// COMMIT's fsync was ~70 % of the writer's time).
///
/// A failed fsync is final (fail-stop, as PostgreSQL does since 2018): Linux reports a write-back error
/// once and may then mark the lost pages clean, so a later fsync that succeeds proves nothing. Every
/// waiting caller and every later change gets `Unavailable` (Entra: 503, retried later), `/readyz` and
/// `/healthz` fail (`StoreEngine::broken`), and a restart recovers the store from what the disk holds.
struct Flusher {
    handed: Option<mpsc::Sender<Vec<Answer>>>,
    failed: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flusher {
    /// Opens the writer connection's WAL file (it exists once the connection is in WAL mode and lives as
    /// long as a connection is open) and switches the writer to `synchronous=NORMAL`.
    fn start(conn: &Connection, writer: mpsc::Sender<Job>) -> StoreResult<Flusher> {
        let db = conn.path().filter(|p| !p.is_empty()).map(std::path::PathBuf::from);
        let Some(db) = db else {
            return Err(StoreError::Unavailable("the store's file has no path; cannot find its WAL".into()));
        };
        let mut wal_name = db.clone().into_os_string();
        wal_name.push("-wal");
        let unusable = |what: &str, e: std::io::Error| {
            StoreError::Unavailable(format!(
                "cannot {what} the store's write-ahead log {}: {e}",
                wal_name.to_string_lossy()
            ))
        };
        let wal =
            std::fs::OpenOptions::new().read(true).write(true).open(&wal_name).map_err(|e| unusable("open", e))?;
        // The WAL's directory entry is on disk before the first answer relies on the file.
        if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let identity = file_identity(&wal.metadata().map_err(|e| unusable("read", e))?);
        let flush = move || {
            // The file SQLite writes is the one this handle fsyncs: a WAL replaced behind the store's back
            // (a restore, an operator's tool) would otherwise be answered for without being on disk.
            let now = std::fs::metadata(&wal_name).map(|m| file_identity(&m));
            if now.as_ref().ok() != Some(&identity) {
                return Err(std::io::Error::other(format!(
                    "the write-ahead log {} is no longer the file the store opened",
                    wal_name.to_string_lossy()
                )));
            }
            wal.sync_data()
        };
        Self::spawn(flush, move || drop(writer.send(Job::Flushed)))
    }

    /// Starts the flusher thread with `flush` making everything committed so far durable, and `flushed`
    /// telling the writer after each flush.
    fn spawn(
        flush: impl FnMut() -> std::io::Result<()> + Send + 'static,
        flushed: impl Fn() + Send + 'static,
    ) -> StoreResult<Flusher> {
        let (handed, batches) = mpsc::channel();
        let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = failed.clone();
        let thread = std::thread::Builder::new()
            .name("store-flusher".into())
            .spawn(move || {
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    flusher_loop(batches, flush, &flushed, &flag);
                }));
                // A flusher that panicked answered nothing of what it held (those callers get
                // `Unavailable`); the store fails, and the writer is told the disk is free so that it
                // refuses what it holds instead of waiting for a flush that will never come.
                if run.is_err() {
                    flag.store(true, Ordering::Release);
                    flushed();
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the flusher thread: {e}")))?;
        Ok(Flusher { handed: Some(handed), failed, thread: Some(thread) })
    }

    fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Hands a committed batch to the flusher thread; false if that thread is gone (it only stops when
    /// this sender is dropped, so it died): the replies drop with the batch (their callers get
    /// `Unavailable`) and, as after a failed flush, nothing more is trusted.
    fn hand_over(&self, answers: Vec<Answer>) -> bool {
        let handed = self.handed.as_ref().is_some_and(|h| h.send(answers).is_ok());
        if !handed {
            self.failed.store(true, Ordering::Release);
        }
        handed
    }
}

/// Device and inode: which file a path names now.
#[cfg(unix)]
fn file_identity(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

/// Elsewhere no stable file identity is at hand without more platform code, and the WAL's length changes
/// at every commit: the check is left out (the gateway is built and supported for Linux).
#[cfg(not(unix))]
fn file_identity(_: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

impl Drop for Flusher {
    /// Answers what is still handed over before the writer's connection closes.
    fn drop(&mut self) {
        self.handed.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn flusher_loop(
    batches: mpsc::Receiver<Vec<Answer>>,
    mut flush: impl FnMut() -> std::io::Result<()>,
    flushed: impl Fn(),
    failed: &std::sync::atomic::AtomicBool,
) {
    while let Ok(mut waiting) = batches.recv() {
        while let Ok(more) = batches.try_recv() {
            waiting.extend(more);
        }
        let durable = !failed.load(Ordering::Acquire)
            && flush().map_err(|e| {
                tracing::error!(error = %e, "store: writing the log to disk failed; the store takes no more changes until restarted");
                failed.store(true, Ordering::Release);
            })
            .is_ok();
        // The writer may commit again before these callers hear back: their answers do not change what
        // is on disk.
        flushed();
        if durable {
            answer(waiting);
        } else {
            for (_, reply) in waiting {
                let _ = reply.send(Err(flush_failed()));
            }
        }
    }
}

/// The changes of the transaction the writer holds open, with what each did (counted at its commit).
type Open = Vec<(StoreResult<Applied>, Reply)>;

/// The writer thread. It applies each change as it arrives, inside one open transaction, and commits
/// when the disk is free: a memory store at once, a file store when the flusher has made the previous
/// commit durable (or the transaction holds `MAX_BATCH` changes). So the changes that arrive during one
/// fsync share the next, and the writer is never waiting for the disk while callers wait for it.
fn writer_loop(
    conn: Connection,
    rx: mpsc::Receiver<Job>,
    counts: &Counts,
    recount_every: Duration,
    flusher: Option<Flusher>,
    readers: Vec<std::thread::JoinHandle<()>>,
) {
    let mut open: Option<Open> = None;
    let mut disk_busy = false;
    let mut version = data_version(&conn);
    let mut checked = std::time::Instant::now();
    loop {
        let first = match rx.recv_timeout(recount_every) {
            Ok(job) => Some(job),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => Some(Job::Stop),
        };
        if open.is_none() && checked.elapsed() >= recount_every {
            checked = std::time::Instant::now();
            let now = data_version(&conn);
            if now != version {
                version = now;
                if let Err(e) = recount(&conn, counts) {
                    tracing::warn!(error = %e, "store: counting again after another process wrote failed");
                }
            }
        }
        let mut next = first;
        while let Some(job) = next.take() {
            match job {
                Job::Write(w, reply) => {
                    if flusher.as_ref().is_some_and(Flusher::failed) {
                        let _ = reply.send(Err(flush_failed()));
                    } else {
                        apply_in_open(&conn, &mut open, w, reply);
                    }
                }
                Job::Flushed => disk_busy = false,
                Job::Read(f) => {
                    // Reads see committed state only (the positions list is kept in step with commits).
                    disk_busy |= commit_open(&conn, &mut open, counts, flusher.as_ref());
                    run_read(f, &conn);
                }
                #[cfg(test)]
                Job::Panic => panic!("a writer fault injected by a test"),
                Job::Stop => {
                    commit_open(&conn, &mut open, counts, flusher.as_ref());
                    // The flusher answers what it holds before the connection closes, and the readers
                    // (ending as the engine drops their queue) close theirs first: the last connection
                    // to close checkpoints the WAL and removes it, which a read-only one cannot.
                    drop(flusher);
                    for reader in readers {
                        let _ = reader.join();
                    }
                    drop(conn);
                    return;
                }
            }
            if open.as_ref().map_or(0, Vec::len) < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        let full = open.as_ref().is_some_and(|o| o.len() >= MAX_BATCH);
        if !disk_busy || full {
            disk_busy |= commit_open(&conn, &mut open, counts, flusher.as_ref());
        }
    }
}

/// Applies one change inside the open transaction (beginning one if none is), in its own savepoint so a
/// refused change does not undo its neighbours.
fn apply_in_open(conn: &Connection, open: &mut Option<Open>, w: Write, reply: Reply) {
    if open.is_none() {
        // IMMEDIATE: the write lock is taken (or refused) once for the transaction, not by each change.
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let _ = reply.send(Err(StoreError::Unavailable(e.to_string())));
            return;
        }
        *open = Some(Vec::with_capacity(MAX_BATCH));
    }
    // A change that panics must not take the writer (and with it every later change) down: the open
    // transaction is rolled back, its callers' replies are dropped (they get `Unavailable`, so Entra gets
    // 503), and the writer goes on.
    let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        step(conn, "SAVEPOINT change").and_then(|()| {
            let applied = apply(conn, &w);
            if applied.is_err() {
                if let Err(e) = step(conn, "ROLLBACK TO change") {
                    // The refused change's writes could not be undone: nothing of the open transaction
                    // may be committed with them.
                    let _ = conn.execute_batch("ROLLBACK");
                    return Err(e);
                }
            }
            step(conn, "RELEASE change")?;
            applied
        })
    }));
    let Ok(outcome) = applied else {
        tracing::error!("a store write panicked; the open transaction was rolled back");
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        *open = None;
        return;
    };
    // Some errors (a full disk, I/O, corruption) make SQLite roll the whole transaction back: what looked
    // applied before is not on disk, nothing of it was counted, and no later change may run outside a
    // transaction (each statement would commit on its own).
    // A refusal in it is not answered either: it may rest on a change of the batch that is gone (a name
    // taken a moment before), and the caller's retry gets the refusal again if it still holds.
    if conn.is_autocommit() {
        for (_, reply) in open.take().into_iter().flatten() {
            let _ = reply.send(Err(batch_lost()));
        }
        // The change that failed says why (a full disk, say), unless it was a refusal.
        let why = match outcome {
            Err(e @ (StoreError::Db(_) | StoreError::Unavailable(_))) => e,
            _ => batch_lost(),
        };
        let _ = reply.send(Err(why));
        return;
    }
    if let Some(open) = open.as_mut() {
        open.push((outcome, reply));
    }
}

/// Commits the open transaction, if any, counts what it did, and answers its callers: a file store's
/// through the flusher once the commit is on disk (true: the disk is now busy), a memory store's at once.
/// A refusal is answered after the flush too: it may rest on a change of this transaction (a name taken
/// a moment before) that is not on disk yet.
fn commit_open(conn: &Connection, open: &mut Option<Open>, counts: &Counts, flusher: Option<&Flusher>) -> bool {
    let Some(changes) = open.take() else { return false };
    if flusher.is_some_and(Flusher::failed) {
        // After a failed fsync nothing more is committed: the changes applied meanwhile are undone.
        let _ = conn.execute_batch("ROLLBACK");
        for (_, reply) in changes {
            let _ = reply.send(Err(flush_failed()));
        }
        return false;
    }
    if let Err(e) = conn.execute_batch("COMMIT") {
        let _ = conn.execute_batch("ROLLBACK");
        let why = e.to_string();
        // Refusals too (see `apply_in_open`): what they rested on may be what was not committed.
        for (_, reply) in changes {
            let _ = reply.send(Err(StoreError::Unavailable(why.clone())));
        }
        return false;
    }
    let answers: Vec<Answer> = changes
        .into_iter()
        .map(|(outcome, reply)| {
            let outcome = outcome.map(|a| {
                counts.apply(&a);
                a.value
            });
            (outcome, reply)
        })
        .collect();
    match flusher {
        Some(flusher) => {
            // The disk is busy until the flusher says so; a flusher that is gone never will, and every
            // later change is refused instead of waiting for it.
            flusher.hand_over(answers)
        }
        None => {
            answer(answers);
            false
        }
    }
}

/// Runs one statement from the connection's cache (a savepoint per change is parsed once, not each time).
fn step(conn: &Connection, sql: &str) -> StoreResult<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

fn apply(conn: &Connection, w: &Write) -> StoreResult<Applied> {
    match w {
        Write::Put(b) => put(conn, &b.0, &b.1),
        Write::Remove(b) => remove(conn, &b.0, b.1, &b.2),
        Write::Audit(e) => Ok(Applied { audit: append_audit(conn, e)?, ..Applied::default() }),
        Write::Intent(e) => {
            insert_audit(conn, e)?;
            Ok(Applied { value: conn.last_insert_rowid(), audit: 1, ..Applied::default() })
        }
        Write::CheckWritable => {
            conn.prepare_cached("INSERT OR REPLACE INTO health (k, at) VALUES (1, strftime('%Y-%m-%dT%H:%M:%fZ'))")?
                .execute([])?;
            Ok(Applied::default())
        }
        Write::PruneBatch(before) => {
            let n = conn
                .prepare_cached(
                    "DELETE FROM audit WHERE seq IN (SELECT seq FROM audit WHERE at < ?1 ORDER BY at LIMIT ?2)",
                )?
                .execute(params![before, PRUNE_BATCH as i64])? as i64;
            Ok(Applied { value: n, audit: -n, ..Applied::default() })
        }
    }
}

fn put(conn: &Connection, row: &RecordRow, audit: &AuditRow) -> StoreResult<Applied> {
    let k = &row.keys;
    let owner: Option<String> = conn
        .prepare_cached("SELECT id FROM resources WHERE app = ?1 AND kind = ?2 AND vendor_id = ?3 AND id != ?4")?
        .query_row(params![k.app, k.kind.as_str(), k.vendor_id, k.id], |r| r.get(0))
        .optional()?;
    if let Some(owner) = owner {
        return Err(StoreError::VendorLinked(owner));
    }
    type Keys = (String, String, Option<String>, Option<String>);
    let existing: Option<(i64, Keys, i64)> = conn
        .prepare_cached(
            "SELECT rowid, vendor_id, name_key, external_id, email_key, version FROM resources
             WHERE app = ?1 AND kind = ?2 AND id = ?3",
        )?
        .query_row(params![k.app, k.kind.as_str(), k.id], |r| {
            Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?), r.get(5)?))
        })
        .optional()?;
    super::check_version(row.version, existing.as_ref().map(|e| e.2))?;
    let existing = existing.map(|(rowid, keys, _)| (rowid, keys));
    let keys: Keys = (k.vendor_id.clone(), k.name_key.clone(), k.external_id.clone(), row.email_key.clone());
    match &existing {
        // An update that changes no key (most of Entra's PATCHes) rewrites the row alone: setting a key
        // column, even to its old value, rewrites that index's entry too, a page more for the commit.
        Some((rowid, old)) if *old == keys => {
            conn.prepare_cached("UPDATE resources SET doc = ?2, modified = ?3, version = ?4 WHERE rowid = ?1")?
                .execute(params![rowid, row.doc, row.modified, row.version])?;
        }
        _ => upsert(conn, row)?,
    }
    // Read before the audit insert below takes the last rowid.
    let (added, moved) = match existing {
        Some(_) => (0, None),
        None => (1, Some(Moved::Added(conn.last_insert_rowid()))),
    };
    conn.prepare_cached("DELETE FROM tombstones WHERE app = ?1 AND kind = ?2 AND vendor_id = ?3")?.execute(params![
        k.app,
        k.kind.as_str(),
        k.vendor_id
    ])?;
    let audit = append_audit(conn, audit)?;
    Ok(Applied { records: Some(((k.app.clone(), k.kind), added)), audit, moved, value: 0 })
}

/// Inserts a record, or rewrites every column of an existing one.
fn upsert(conn: &Connection, row: &RecordRow) -> StoreResult<()> {
    let k = &row.keys;
    let res = conn
        .prepare_cached(
            "INSERT INTO resources (app, kind, id, vendor_id, name_key, external_id, doc, created, modified, version, email_key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (app, kind, id) DO UPDATE SET vendor_id = excluded.vendor_id,
               name_key = excluded.name_key, external_id = excluded.external_id, doc = excluded.doc,
               modified = excluded.modified, version = excluded.version, email_key = excluded.email_key",
        )?
        .execute(params![
            k.app,
            k.kind.as_str(),
            k.id,
            k.vendor_id,
            k.name_key,
            k.external_id,
            row.doc,
            row.created,
            row.modified,
            row.version,
            row.email_key
        ]);
    match res {
        // A unique key taken (the name; the id's row is updated in place): any other constraint failing
        // (NOT NULL, say) is a bug to report as one, not a 409 saying the name is taken.
        Err(rusqlite::Error::SqliteFailure(e, _))
            if matches!(
                e.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            ) =>
        {
            Err(StoreError::Duplicate)
        }
        Err(e) => Err(e.into()),
        Ok(_) => Ok(()),
    }
}

fn remove(conn: &Connection, k: &RecordKeys, tombstone: bool, audit: &AuditRow) -> StoreResult<Applied> {
    let stored: Option<i64> = conn
        .prepare_cached("SELECT version FROM resources WHERE app = ?1 AND kind = ?2 AND id = ?3")?
        .query_row(params![k.app, k.kind.as_str(), k.id], |r| r.get(0))
        .optional()?;
    super::check_removed_version(k.version, stored)?;
    let gone: Option<i64> = conn
        .prepare_cached("DELETE FROM resources WHERE app = ?1 AND kind = ?2 AND id = ?3 RETURNING rowid")?
        .query_row(params![k.app, k.kind.as_str(), k.id], |r| r.get(0))
        .optional()?;
    if tombstone {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO tombstones (app, kind, vendor_id, name_key, deleted, external_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![k.app, k.kind.as_str(), k.vendor_id, k.name_key, audit.at, k.external_id])?;
    }
    let audit = append_audit(conn, audit)?;
    let removed = if gone.is_some() { -1 } else { 0 };
    Ok(Applied { records: Some(((k.app.clone(), k.kind), removed)), audit, moved: gone.map(Moved::Removed), value: 0 })
}

/// Completes an intent in place, or appends; returns how many entries were added (0 or 1).
fn append_audit(conn: &Connection, e: &AuditRow) -> StoreResult<i64> {
    if e.seq > 0 {
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
                e.name_key(),
                e.name,
                e.operation,
                e.before,
                e.after,
                e.outcome,
                e.status,
                e.detail,
                e.vendor_calls,
                e.attempts,
                e.attempt_log
            ])?;
        if updated == 1 {
            return Ok(0);
        }
    }
    insert_audit(conn, e)?;
    Ok(1)
}

fn insert_audit(conn: &Connection, e: &AuditRow) -> StoreResult<()> {
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
        e.name_key(),
        e.name,
        e.operation,
        e.actor,
        e.request_id,
        e.before,
        e.after,
        e.outcome,
        e.status,
        e.detail,
        e.vendor_calls,
        e.attempts,
        e.attempt_log
    ])?;
    Ok(())
}

const AUDIT_COLUMNS: &str = "a.seq, a.at, a.app, a.resource_type, a.resource_id, a.name, a.operation, a.actor,
    a.request_id, a.before, a.after, a.outcome, a.status, a.detail, a.vendor_calls, a.attempts, a.attempt_log";

fn audit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEntry> {
    let parse = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok());
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
        outcome: crate::outcome::Outcome::parse(&r.get::<_, String>(11)?),
        status: r.get(12)?,
        detail: r.get(13)?,
        vendor_calls: r.get(14)?,
        attempts: r.get(15)?,
        attempt_log: r.get::<_, Option<String>>(16)?.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default(),
    })
}

fn audit_rows(conn: &Connection, q: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {AUDIT_COLUMNS} FROM audit a
         WHERE (?1 IS NULL OR a.app = ?1) AND (?2 IS NULL OR a.name_key = ?2) AND (?3 IS NULL OR a.at >= ?3)
         ORDER BY a.seq DESC LIMIT ?4"
    ))?;
    let limit = if q.limit == 0 { i64::MAX } else { q.limit as i64 };
    let rows = stmt
        .query_map(params![q.app, q.name.as_deref().map(lower), q.since, limit], audit_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// The WHERE clause of an `AuditFilter` over `audit a`, and its parameters in order.
fn filter_clause(f: &AuditFilter) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value as Sql;
    let (sql, args) = super::audit_filter_sql(f, |n| format!("?{n}"), "instr(a.name_key, {}) > 0");
    let args = args
        .into_iter()
        .map(|a| match a {
            super::SqlArg::Text(t) => Sql::Text(t),
            super::SqlArg::Int(i) => Sql::Integer(i),
        })
        .collect();
    (sql, args)
}

fn own(app: &str, kind: Kind, value: &str) -> Vec<String> {
    vec![app.to_string(), kind.as_str().to_string(), value.to_string()]
}

#[async_trait::async_trait]
impl StoreEngine for SqliteEngine {
    fn location(&self) -> String {
        self.path.clone()
    }

    fn broken(&self) -> Option<String> {
        if self.flush_failed.as_ref().is_some_and(|f| f.load(Ordering::Acquire)) {
            return Some(flush_failed().to_string());
        }
        self.writer_died.load(Ordering::Acquire).then(|| writer_gone().to_string())
    }

    async fn check_writable(&self) -> StoreResult<()> {
        self.write(Write::CheckWritable).await.map(drop)
    }

    async fn get(&self, app: &str, kind: Kind, id: &str) -> StoreResult<Option<Record>> {
        Ok(self.select("app = ?1 AND kind = ?2 AND id = ?3", own(app, kind, id)).await?.pop())
    }

    async fn find_by_name(&self, app: &str, kind: Kind, name: &str) -> StoreResult<Option<Record>> {
        Ok(self.select("app = ?1 AND kind = ?2 AND name_key = ?3", own(app, kind, &lower(name))).await?.pop())
    }

    async fn find_by_external_id(&self, app: &str, kind: Kind, external_id: &str) -> StoreResult<Vec<Record>> {
        self.select("app = ?1 AND kind = ?2 AND external_id = ?3 ORDER BY rowid", own(app, kind, external_id)).await
    }

    async fn find_by_vendor_id(&self, app: &str, kind: Kind, vendor_id: &str) -> StoreResult<Option<Record>> {
        Ok(self.select("app = ?1 AND kind = ?2 AND vendor_id = ?3", own(app, kind, vendor_id)).await?.pop())
    }

    async fn find_by_work_email(&self, app: &str, kind: Kind, email: &str) -> StoreResult<Vec<Record>> {
        self.select("app = ?1 AND kind = ?2 AND email_key = ?3 ORDER BY rowid", own(app, kind, &email.to_lowercase()))
            .await
    }

    async fn list(&self, app: &str, kind: Kind) -> StoreResult<Vec<Record>> {
        let args = vec![app.to_string(), kind.as_str().to_string()];
        self.select("app = ?1 AND kind = ?2 ORDER BY rowid", args).await
    }

    async fn page(&self, app: &str, kind: Kind, offset: usize, limit: usize) -> StoreResult<Vec<Record>> {
        let key = (app.to_string(), kind);
        // The first page starts at the first row: no list is needed (Entra's paging starts there), and
        // none can be out of date.
        let start = if offset == 0 {
            Some(i64::MIN)
        } else {
            match self.counts.position(&key, offset) {
                Some(start) => start,
                None => self.load_positions(key, offset).await?,
            }
        };
        let Some(start) = start else { return Ok(Vec::new()) };
        let (app, kind) = (app.to_string(), kind.as_str());
        self.read(move |conn| {
            query(
                conn,
                "app = ?1 AND kind = ?2 AND rowid >= ?3 ORDER BY rowid LIMIT ?4",
                &[&app, &kind, &start, &(limit as i64)],
            )
        })
        .await
    }

    async fn scan(&self, app: &str, kind: Kind, after: i64, limit: usize) -> StoreResult<(Vec<Record>, i64)> {
        let (app, kind) = (app.to_string(), kind.as_str());
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS}, rowid FROM resources WHERE app = ?1 AND kind = ?2 AND rowid > ?3
                 ORDER BY rowid LIMIT ?4"
            ))?;
            let mut last = after;
            let rows = stmt
                .query_map(params![app, kind, after, limit as i64], |r| {
                    last = r.get(8)?;
                    row_to_record(r)
                })?
                .collect::<Result<Vec<_>, _>>()?;
            drop(stmt);
            Ok((parse_docs(rows)?, last))
        })
        .await
    }

    async fn count(&self, app: &str, kind: Kind) -> StoreResult<u64> {
        let records = self.counts.records.lock().unwrap_or_else(|p| p.into_inner());
        Ok(records.get(&(app.to_string(), kind)).copied().unwrap_or(0).max(0) as u64)
    }

    async fn put(&self, rec: &Record, audit: &AuditEntry) -> StoreResult<()> {
        self.write(Write::Put(Box::new((RecordRow::of(rec)?, AuditRow::of(audit)?)))).await.map(drop)
    }

    async fn remove(&self, rec: &Record, tombstone: bool, audit: &AuditEntry) -> StoreResult<()> {
        self.write(Write::Remove(Box::new((RecordKeys::of(rec), tombstone, AuditRow::of(audit)?)))).await.map(drop)
    }

    async fn tombstone(&self, app: &str, kind: Kind, vendor_id: &str) -> StoreResult<Option<Tombstone>> {
        let args = own(app, kind, vendor_id);
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT external_id, deleted FROM tombstones WHERE app = ?1 AND kind = ?2 AND vendor_id = ?3",
                )?
                .query_row(params![args[0], args[1], args[2]], |r| {
                    Ok(Tombstone { external_id: r.get(0)?, deleted: r.get(1)? })
                })
                .optional()?)
        })
        .await
    }

    async fn audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        self.write(Write::Audit(Box::new(AuditRow::of(entry)?))).await.map(drop)
    }

    async fn audit_intent(&self, entry: &AuditEntry) -> StoreResult<i64> {
        let intent = AuditRow {
            seq: 0,
            outcome: INTENT.into(),
            status: 0,
            detail: Some(
                "sent to the vendor; the outcome was never recorded (the gateway stopped or its store failed)".into(),
            ),
            ..AuditRow::of(entry)?
        };
        self.write(Write::Intent(Box::new(intent))).await
    }

    async fn audit_log(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        let q = q.clone();
        self.read(move |conn| audit_rows(conn, &q)).await
    }

    async fn prune_audit(&self, before: &str) -> StoreResult<u64> {
        let mut total = 0u64;
        loop {
            let n = self.write(Write::PruneBatch(before.to_string())).await?;
            total += n as u64;
            if (n as usize) < PRUNE_BATCH {
                return Ok(total);
            }
        }
    }

    async fn audit_len(&self) -> StoreResult<u64> {
        Ok(self.counts.audit.load(Ordering::Relaxed))
    }

    async fn audit_page(&self, filter: &AuditFilter, limit: usize) -> StoreResult<(Vec<AuditEntry>, bool)> {
        let (clause, mut args) = filter_clause(filter);
        self.read(move |conn| {
            args.push(rusqlite::types::Value::Integer(limit as i64 + 1));
            let sql =
                format!("SELECT {AUDIT_COLUMNS} FROM audit a WHERE {clause} ORDER BY a.seq DESC LIMIT ?{}", args.len());
            let mut stmt = conn.prepare(&sql)?;
            let mut rows =
                stmt.query_map(rusqlite::params_from_iter(args), audit_row)?.collect::<Result<Vec<_>, _>>()?;
            let more = rows.len() > limit;
            rows.truncate(limit);
            Ok((rows, more))
        })
        .await
    }

    async fn audit_count(&self, filter: &AuditFilter) -> StoreResult<u64> {
        let (clause, args) = filter_clause(filter);
        self.read(move |conn| {
            let sql = format!("SELECT COUNT(*) FROM audit a WHERE {clause}");
            let n: i64 = conn.query_row(&sql, rusqlite::params_from_iter(args), |r| r.get(0))?;
            Ok(n as u64)
        })
        .await
    }
}

#[cfg(test)]
mod flusher_tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn waiting_caller() -> (Reply, oneshot::Receiver<StoreResult<i64>>) {
        oneshot::channel()
    }

    /// A flush that reports when it starts and returns only when the test lets it.
    fn gated_flush(
        result: fn() -> std::io::Result<()>,
    ) -> (impl FnMut() -> std::io::Result<()> + Send + 'static, mpsc::Receiver<()>, mpsc::Sender<()>, Arc<AtomicUsize>)
    {
        let (entered_tx, entered) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let flush = move || {
            counted.fetch_add(1, Ordering::SeqCst);
            let _ = entered_tx.send(());
            let _ = release_rx.recv();
            result()
        };
        (flush, entered, release, calls)
    }

    #[test]
    fn a_caller_is_answered_only_after_the_flush_returns_and_one_flush_covers_what_waited() {
        let (flush, entered, release, calls) = gated_flush(|| Ok(()));
        let flusher = Flusher::spawn(flush, || ()).unwrap();
        let (reply1, mut answer1) = waiting_caller();
        flusher.hand_over(vec![(Ok(1), reply1)]);
        entered.recv().unwrap();
        // The flush has started and not returned: nothing may be answered yet.
        assert!(matches!(answer1.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
        // Two more batches committed while the disk works.
        let (reply2, mut answer2) = waiting_caller();
        let (reply3, mut answer3) = waiting_caller();
        flusher.hand_over(vec![(Ok(2), reply2)]);
        flusher.hand_over(vec![(Err(StoreError::Duplicate), reply3)]);
        release.send(()).unwrap();
        assert_eq!(answer1.blocking_recv().unwrap().unwrap(), 1);
        entered.recv().unwrap();
        assert!(matches!(answer2.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
        assert!(matches!(answer3.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
        release.send(()).unwrap();
        assert_eq!(answer2.blocking_recv().unwrap().unwrap(), 2);
        assert!(matches!(answer3.blocking_recv().unwrap(), Err(StoreError::Duplicate)));
        assert_eq!(calls.load(Ordering::SeqCst), 2, "the two batches that waited shared one flush");
        drop(flusher);
    }

    #[test]
    fn a_failed_flush_answers_unavailable_and_the_store_takes_no_more_changes() {
        let (flush, entered, release, calls) = gated_flush(|| Err(std::io::Error::other("EIO")));
        let flusher = Flusher::spawn(flush, || ()).unwrap();
        let (reply1, answer1) = waiting_caller();
        flusher.hand_over(vec![(Ok(1), reply1)]);
        entered.recv().unwrap();
        release.send(()).unwrap();
        assert!(matches!(answer1.blocking_recv().unwrap(), Err(StoreError::Unavailable(_))));
        assert!(flusher.failed());
        // A batch that reaches the flusher after the failure is refused without trusting a new fsync.
        let (reply2, answer2) = waiting_caller();
        flusher.hand_over(vec![(Ok(2), reply2)]);
        assert!(matches!(answer2.blocking_recv().unwrap(), Err(StoreError::Unavailable(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        drop(flusher);
    }

    #[test]
    fn dropping_the_flusher_answers_what_it_still_holds() {
        let (flush, entered, release, _calls) = gated_flush(|| Ok(()));
        let flusher = Flusher::spawn(flush, || ()).unwrap();
        let (reply1, answer1) = waiting_caller();
        flusher.hand_over(vec![(Ok(7), reply1)]);
        entered.recv().unwrap();
        let (reply2, answer2) = waiting_caller();
        flusher.hand_over(vec![(Ok(8), reply2)]);
        release.send(()).unwrap();
        // The second flush is let through before the drop joins the thread.
        let releaser = std::thread::spawn(move || {
            entered.recv().unwrap();
            release.send(()).unwrap();
        });
        drop(flusher);
        releaser.join().unwrap();
        assert_eq!(answer1.blocking_recv().unwrap().unwrap(), 7);
        assert_eq!(answer2.blocking_recv().unwrap().unwrap(), 8);
    }

    /// A flusher that panics (a bug, not a disk error) fails the store and wakes the writer: nothing it
    /// held is answered as on disk, and no later change waits for a flush that will never come.
    #[test]
    fn a_flusher_that_panics_fails_the_store_and_tells_the_writer() {
        let (told, writer_woken) = mpsc::channel();
        let flusher = Flusher::spawn(
            || -> std::io::Result<()> { panic!("a flush that panics") },
            move || {
                let _ = told.send(());
            },
        )
        .unwrap();
        let (reply, answer) = waiting_caller();
        assert!(flusher.hand_over(vec![(Ok(1), reply)]));
        writer_woken.recv_timeout(Duration::from_secs(30)).expect("the writer is told the disk is free");
        assert!(flusher.failed(), "the store takes no more changes");
        assert!(answer.blocking_recv().is_err(), "the held change is not answered as on disk");
        let (reply, _answer) = waiting_caller();
        assert!(!flusher.hand_over(vec![(Ok(2), reply)]), "a later commit finds the flusher gone");
    }

    /// The flusher fsyncs the file SQLite writes, named `<store>-wal`: replaced behind the store's back, the
    /// next change is refused (and every one after it), never answered as on disk.
    #[test]
    fn a_replaced_write_ahead_log_stops_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replaced.sqlite");
        let path = path.to_str().unwrap().to_string();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let store = SqliteEngine::open(&path, SqliteOptions::default()).unwrap();
        let entry = AuditEntry { app: "a".into(), operation: "create".into(), ..AuditEntry::default() };
        rt.block_on(store.audit(&entry)).unwrap();
        let wal = format!("{path}-wal");
        std::fs::rename(&wal, format!("{wal}.moved")).unwrap();
        std::fs::write(&wal, b"").unwrap();
        assert!(matches!(rt.block_on(store.audit(&entry)), Err(StoreError::Unavailable(_))));
        std::fs::remove_file(&wal).unwrap();
        std::fs::rename(format!("{wal}.moved"), &wal).unwrap();
        // Even with the file back: after a failed flush nothing is trusted until a restart.
        assert!(matches!(rt.block_on(store.audit(&entry)), Err(StoreError::Unavailable(_))));
        assert!(matches!(rt.block_on(store.check_writable()), Err(StoreError::Unavailable(_))));
        assert!(store.broken().is_some(), "/healthz fails so the process is restarted");
        // Nor is a read: the refused change may be visible in the file without being on disk.
        let read = rt.block_on(store.audit_log(&AuditQuery::default()));
        assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");
    }

    /// The writer's loop can panic outside the guarded change (a commit, the counts): the store then
    /// refuses every change and read, and says it is broken so that `/healthz` fails.
    #[test]
    fn a_writer_that_panics_fails_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("writer.sqlite");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let store = SqliteEngine::open(path.to_str().unwrap(), SqliteOptions::default()).unwrap();
        let entry = AuditEntry { app: "a".into(), operation: "create".into(), ..AuditEntry::default() };
        rt.block_on(store.audit(&entry)).unwrap();
        assert!(store.broken().is_none());
        store.writer.send(Job::Panic).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while store.broken().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(store.broken().is_some(), "/healthz fails so the process is restarted");
        assert!(matches!(rt.block_on(store.audit(&entry)), Err(StoreError::Unavailable(_))));
        let read = rt.block_on(store.audit_log(&AuditQuery::default()));
        assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");
    }

    #[test]
    fn a_file_store_writes_through_its_flusher_and_reopens_with_every_answered_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flushed.sqlite");
        let path = path.to_str().unwrap().to_string();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let store = Arc::new(SqliteEngine::open(&path, SqliteOptions::default()).unwrap());
            let mut writes = tokio::task::JoinSet::new();
            for i in 0..64 {
                let store = store.clone();
                writes.spawn(async move {
                    let entry = AuditEntry {
                        app: "a".into(),
                        operation: "create".into(),
                        detail: Some(format!("change {i}")),
                        ..AuditEntry::default()
                    };
                    store.audit(&entry).await
                });
            }
            while let Some(done) = writes.join_next().await {
                done.unwrap().unwrap();
            }
            assert_eq!(store.audit_len().await.unwrap(), 64);
        });
        drop(rt);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let again = SqliteEngine::open(&path, SqliteOptions::default()).unwrap();
        assert_eq!(rt.block_on(again.audit_len()).unwrap(), 64);
    }
}

#[cfg(test)]
mod plan_tests {
    use super::*;
    use crate::store::OutcomeFilter;

    /// The status page counts "needs a person" and the day's failures for every card on every view: both
    /// read only indexes (a table read would pull in every entry's before/after documents), and "was it
    /// repaired later" is a seek, not a walk through the user's entries.
    #[test]
    fn the_status_counts_read_only_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.sqlite");
        drop(SqliteEngine::open(path.to_str().unwrap(), SqliteOptions::default()).unwrap());
        let conn = Connection::open(&path).unwrap();
        let of_app = AuditFilter { app: Some("a".into()), ..Default::default() };
        let day = AuditFilter {
            since: Some("2026-01-01T00:00:00Z".into()),
            outcome: OutcomeFilter::Failed,
            ..of_app.clone()
        };
        for filter in [AuditFilter { outcome: OutcomeFilter::NeedsPerson, ..of_app }, day] {
            let (clause, args) = filter_clause(&filter);
            let plan: Vec<String> = conn
                .prepare(&format!("EXPLAIN QUERY PLAN SELECT COUNT(*) FROM audit a WHERE {clause}"))
                .unwrap()
                .query_map(rusqlite::params_from_iter(args), |r| r.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let searches: Vec<&String> =
                plan.iter().filter(|step| step.starts_with("SEARCH") || step.starts_with("SCAN")).collect();
            assert!(!searches.is_empty(), "{plan:?}");
            for step in searches {
                assert!(step.contains("COVERING INDEX"), "{filter:?} reads the table: {plan:?}");
            }
            if filter.outcome == OutcomeFilter::NeedsPerson {
                assert!(plan.iter().any(|s| s.contains("name_key=? AND outcome=? AND rowid>?")), "{plan:?}");
            }
        }
    }
}

#[cfg(test)]
mod reader_tests {
    use super::*;

    /// Pages asked for at once on a store whose position list is not loaded yet (just after a start, or
    /// a bulk load) load it once: 32 loads of 100,000 rowids, one after another on the writer, made the
    /// first such requests take 36-288 ms (BENCHMARKS.md 2c). The first page needs no list at all.
    #[test]
    fn pages_asked_for_together_load_the_positions_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pages.sqlite");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let store = Arc::new(SqliteEngine::open(path.to_str().unwrap(), SqliteOptions::default()).unwrap());
        rt.block_on(async {
            for i in 0..300 {
                let name = format!("user{i:03}");
                store
                    .put(&crate::store::tests::rec(&i.to_string(), &name), &crate::store::tests::audit("create", &name))
                    .await
                    .unwrap();
            }
            let first = store.page("a", Kind::User, 0, 10).await.unwrap();
            assert_eq!(first.iter().map(|r| r.name().to_string()).collect::<Vec<_>>()[..2], ["user000", "user001"]);
            assert_eq!(store.counts.position_loads.load(Ordering::Relaxed), 0, "the first page needs no list");
            // The writer is held on a read until every page has found no list and sent its load, so the
            // loads queue up behind each other as after a bulk load (none can finish before another asks).
            let (release, held) = mpsc::channel::<()>();
            store
                .writer
                .send(Job::Read(Box::new(move |_| {
                    let _ = held.recv();
                })))
                .unwrap();
            let mut pages = tokio::task::JoinSet::new();
            for k in 0..32usize {
                let store = store.clone();
                pages.spawn(async move { (k, store.page("a", Kind::User, 100 + k, 1).await.unwrap()) });
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            release.send(()).unwrap();
            for (k, page) in pages.join_all().await {
                assert_eq!(page[0].name(), format!("user{:03}", 100 + k));
            }
            assert_eq!(store.counts.position_loads.load(Ordering::Relaxed), 1);
        });
    }

    /// A read that panics (a bug in a query's row mapping, say) answers its caller `Unavailable` and leaves
    /// its reader thread and connection working: with every reader having panicked once, reads still run.
    #[test]
    fn a_read_that_panics_answers_unavailable_and_the_readers_keep_working() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("readers.sqlite");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let store = Arc::new(SqliteEngine::open(path.to_str().unwrap(), SqliteOptions::default()).unwrap());
        rt.block_on(async {
            for _ in 0..READERS * 2 {
                let failed = store.read(|_| -> StoreResult<i64> { panic!("a broken row mapping") }).await;
                assert!(matches!(failed, Err(StoreError::Unavailable(_))), "{failed:?}");
            }
            let mut reads = tokio::task::JoinSet::new();
            for n in 0..READERS as i64 * 4 {
                let store = store.clone();
                reads.spawn(async move {
                    store.read(move |c| Ok(c.query_row("SELECT ?1 + 1", [n], |r| r.get::<_, i64>(0))?)).await
                });
            }
            let mut answers = reads.join_all().await.into_iter().map(Result::unwrap).collect::<Vec<i64>>();
            answers.sort();
            assert_eq!(answers, (1..=READERS as i64 * 4).collect::<Vec<_>>());
        });
    }
}
