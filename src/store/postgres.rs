//! The PostgreSQL engine: the same contract as the SQLite one, for several gateway replicas sharing one
//! database. Each write is one transaction on a pooled connection (`synchronous_commit` on: answered
//! after the commit is on the server's disk); the database itself keeps one name per (app, kind) and one
//! gateway id per vendor record, so two replicas racing on a user cannot both record it. Counts are
//! counted by the database (another replica may have written since), not cached. The schema is migrated
//! under an advisory lock, so replicas starting together migrate once. Nothing on this path waits without
//! bound: statement and lock timeouts on every session, bounded pool waits, TCP keepalives, and a bounded
//! wait for a replica lock; each ends as `StoreError` (503 with Retry-After to Entra).

use adapter_api::budget::SharedError;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::{
    external_id_of, work_email_of, AuditEntry, AuditFilter, AuditQuery, Kind, Record, StoreEngine, StoreError,
    StoreResult, Tombstone,
};

/// Audit entries one pruning transaction deletes: a large backlog never holds a connection for long.
const PRUNE_BATCH: i64 = 1_000;
/// The longest one statement runs (the session's `statement_timeout`): a request is answered 503, not held.
const STATEMENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The longest a statement waits for a row or table lock (the session's `lock_timeout`).
const LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The longest a request waits for a free pooled connection.
const POOL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// The longest opening (or checking) one connection takes.
const POOL_CREATE: std::time::Duration = std::time::Duration::from_secs(5);
/// The advisory lock key that serialises migrations across replicas (an arbitrary constant: "scimmigr").
const MIGRATION_LOCK: i64 = 0x7363_696d_6d69_6772;

/// How the engine connects.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// `postgres://user@host:port/db` (no password: it comes from `password`).
    pub url: String,
    pub password: Option<SecretString>,
    /// A schema of its own (created if missing) instead of `public`: tests, or several gateways on one
    /// database.
    pub schema: Option<String>,
    /// Connections in the pool.
    pub pool_size: usize,
}

/// The schema, in order: step n runs once, in its own transaction, and is recorded in `schema_version`.
/// A change is a new step at the end, never an edit of an old one.
pub(super) const MIGRATIONS: &[&str] = &[
    "CREATE TABLE resources (
        pos BIGSERIAL NOT NULL,
        app TEXT NOT NULL,
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        vendor_id TEXT NOT NULL,
        -- The lowercased userName/displayName: the unique key, kept lowercased by the database too.
        name_key TEXT NOT NULL CHECK (name_key = lower(name_key)),
        external_id TEXT,
        email_key TEXT,
        doc TEXT NOT NULL,
        created TEXT NOT NULL,
        modified TEXT NOT NULL,
        version BIGINT NOT NULL,
        PRIMARY KEY (app, kind, id)
    );
    CREATE UNIQUE INDEX resources_name ON resources (app, kind, name_key);
    CREATE UNIQUE INDEX resources_vendor_unique ON resources (app, kind, vendor_id);
    CREATE INDEX resources_external ON resources (app, kind, external_id);
    CREATE INDEX resources_email ON resources (app, kind, email_key);
    CREATE INDEX resources_order ON resources (app, kind, pos);
    CREATE TABLE tombstones (
        app TEXT NOT NULL,
        kind TEXT NOT NULL,
        vendor_id TEXT NOT NULL,
        name_key TEXT NOT NULL,
        deleted TEXT NOT NULL,
        external_id TEXT,
        PRIMARY KEY (app, kind, vendor_id)
    );
    CREATE TABLE health (k INTEGER PRIMARY KEY, at TEXT NOT NULL);
    CREATE TABLE audit (
        seq BIGSERIAL PRIMARY KEY,
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
        vendor_calls BIGINT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        attempt_log TEXT
    );
    CREATE INDEX audit_app_name ON audit (app, name_key, seq);
    CREATE INDEX audit_at ON audit (at);
    CREATE INDEX audit_app_outcome ON audit (app, outcome, name_key, at);",
    // When each periodic job (a reconcile pass per app) last started on any replica (`lease`).
    "CREATE TABLE leases (name TEXT PRIMARY KEY, started TIMESTAMPTZ NOT NULL);",
    // Each app's vendor schedule shared by the replicas (`PgRateBudget`), in the database's clock as
    // epoch seconds: the theoretical arrival time of the next call, the vendor's pause, an open breaker.
    "CREATE TABLE rate_budget (
        app TEXT PRIMARY KEY,
        tat DOUBLE PRECISION NOT NULL DEFAULT 0,
        paused_until DOUBLE PRECISION NOT NULL DEFAULT 0,
        breaker_until DOUBLE PRECISION NOT NULL DEFAULT 0
    );",
];

/// One schedule per app for all replicas: the GCRA of the outbound pacer, kept in one row and advanced by
/// one `UPDATE` per vendor call (the row lock orders the replicas), timed by the database's clock so the
/// replicas' own clocks never meet. Pauses and an open breaker sit in the same row, so every replica's
/// next call sees them.
///
/// A slot is an instant of the database's clock, and each replica sends at that instant on its own clock
/// (`DbClock`), not "the wait the database computed" after the answer arrived: the answer's delay (the
/// commit, the network, the replica's scheduling) differs call by call and replica by replica, and
/// added to the wait it bunched calls reserved a period apart. The schedule's `UPDATE` commits without
/// waiting for the WAL flush (`synchronous_commit` off for that transaction alone): a schedule lost in
/// a database crash costs nothing (the next call starts a new one), while a flush per vendor call made
/// each slot ~7 ms late, by a varying amount, and capped the schedule near 270 calls a second.
#[derive(Debug)]
pub(crate) struct PgRateBudget {
    pool: Pool,
    /// Apps whose row is known to exist.
    ready: std::sync::Mutex<std::collections::HashSet<String>>,
    clock: std::sync::Mutex<DbClock>,
}

/// The database's clock as seen from this process: its offset from the local monotonic clock, taken
/// from the round trip that bounded the database's reading most tightly (NTP's rule). A reading lies
/// between the request's sending and the answer's arrival, so the offset is known to half the round
/// trip; the best sample ages (`DRIFT`), so the estimate follows the clocks' drift.
#[derive(Debug)]
struct DbClock {
    origin: std::time::Instant,
    /// (database time − local time in seconds since `origin`, the sample's round trip, when it was taken).
    best: Option<(f64, f64, f64)>,
}

/// A disagreement with the best sample beyond both round trips and this is a step of the database's
/// clock, not noise: the estimate follows it at once.
const CLOCK_STEP: f64 = 0.05;

/// How fast a sample's precision is taken to decay, seconds per second: well above two clocks' drift
/// (tens of ppm), so a better sample is preferred within a few seconds of the last one.
const DRIFT: f64 = 1e-4;

impl DbClock {
    fn new() -> Self {
        DbClock { origin: std::time::Instant::now(), best: None }
    }

    fn local(&self, at: std::time::Instant) -> f64 {
        at.saturating_duration_since(self.origin).as_secs_f64()
    }

    /// A reading `db` of the database's clock taken between `sent` and `answered`.
    fn sample(&mut self, sent: std::time::Instant, answered: std::time::Instant, db: f64) {
        let (t0, t1) = (self.local(sent), self.local(answered));
        let rtt = t1 - t0;
        let offset = db - (t0 + t1) / 2.0;
        let better = match self.best {
            None => true,
            // Tighter than the best once its age is counted; or the two cannot both be right (the
            // database's clock was stepped, or a failover moved it to another host): the new one wins.
            Some((best, best_rtt, at)) => {
                rtt <= best_rtt + (t1 - at) * DRIFT || (offset - best).abs() > (rtt + best_rtt) / 2.0 + CLOCK_STEP
            }
        };
        if better {
            self.best = Some((offset, rtt, t1));
        }
    }

    /// How long from `now` until the database's clock reads `db`.
    fn until(&self, db: f64, now: std::time::Instant) -> std::time::Duration {
        let Some((offset, _, _)) = self.best else { return std::time::Duration::ZERO };
        duration(db - offset - self.local(now))
    }
}

fn secs(d: std::time::Duration) -> f64 {
    d.as_secs_f64()
}

fn duration(secs: f64) -> std::time::Duration {
    std::time::Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(std::time::Duration::MAX)
}

impl PgRateBudget {
    async fn client(&self, app: &str) -> Result<deadpool_postgres::Object, SharedError> {
        let client = self.pool.get().await.map_err(|e| SharedError::Unreachable(pool_error(e).to_string()))?;
        let known = self.ready.lock().unwrap_or_else(|p| p.into_inner()).contains(app);
        if !known {
            client
                .execute("INSERT INTO rate_budget (app) VALUES ($1) ON CONFLICT (app) DO NOTHING", &[&app])
                .await
                .map_err(|e| SharedError::Unreachable(StoreError::from(e).to_string()))?;
            self.ready.lock().unwrap_or_else(|p| p.into_inner()).insert(app.to_string());
        }
        Ok(client)
    }
}

const NOW: &str = "extract(epoch FROM clock_timestamp())::float8";

#[async_trait::async_trait]
impl adapter_api::budget::RateBudget for PgRateBudget {
    async fn reserve(
        &self,
        app: &str,
        period: std::time::Duration,
        tolerance: std::time::Duration,
        max_wait: std::time::Duration,
    ) -> Result<adapter_api::budget::Reserved, SharedError> {
        use adapter_api::budget::Reserved;
        let client = self.client(app).await?;
        let db = |e: tokio_postgres::Error| SharedError::Unreachable(StoreError::from(e).to_string());
        let (period, tolerance, max_wait) = (secs(period), secs(tolerance), secs(max_wait));
        // The slot is max(now, tat - tolerance, paused_until); taken only if it is within max_wait and no
        // breaker is open. RETURNING sees the new tat, from which the slot follows again: as an instant
        // of the database's clock, with the reading of that clock. `set_config(.., true)` turns the
        // flush off for this statement's own transaction only (see `PgRateBudget`).
        let stmt = client
            .prepare_cached(&format!(
                "WITH c AS (SELECT {NOW} AS now, set_config('synchronous_commit', 'off', true) AS async)
                 UPDATE rate_budget r SET tat = GREATEST(r.tat, c.now, r.paused_until) + $2
                 FROM c
                 WHERE r.app = $1 AND r.breaker_until <= c.now
                   AND GREATEST(c.now, r.tat - $3, r.paused_until) <= c.now + $4
                 RETURNING GREATEST(c.now, r.tat - $2 - $3, r.paused_until), c.now"
            ))
            .await
            .map_err(db)?;
        let sent = std::time::Instant::now();
        let taken = client.query_opt(&stmt, &[&app, &period, &tolerance, &max_wait]).await.map_err(db)?;
        let answered = std::time::Instant::now();
        if let Some(row) = taken {
            let (slot, db_now): (f64, f64) = (row.get(0), row.get(1));
            let mut clock = self.clock.lock().unwrap_or_else(|p| p.into_inner());
            clock.sample(sent, answered, db_now);
            return Ok(Reserved::After(clock.until(slot, std::time::Instant::now())));
        }
        let row = client
            .query_one(
                &format!(
                    "WITH c AS (SELECT {NOW} AS now)
                     SELECT r.breaker_until - c.now, GREATEST(c.now, r.tat - $2, r.paused_until) - c.now
                     FROM rate_budget r, c WHERE r.app = $1"
                ),
                &[&app, &tolerance],
            )
            .await
            .map_err(db)?;
        let (breaker, wait): (f64, f64) = (row.get(0), row.get(1));
        Ok(if breaker > 0.0 { Reserved::BreakerOpen(duration(breaker)) } else { Reserved::Full(duration(wait)) })
    }

    async fn next_free(&self, app: &str, tolerance: std::time::Duration) -> Result<std::time::Duration, SharedError> {
        let client = self.client(app).await?;
        let row = client
            .query_one(
                &format!(
                    "WITH c AS (SELECT {NOW} AS now)
                     SELECT GREATEST(c.now, r.tat - $2, r.paused_until, r.breaker_until) - c.now
                     FROM rate_budget r, c WHERE r.app = $1"
                ),
                &[&app, &secs(tolerance)],
            )
            .await
            .map_err(|e| SharedError::Unreachable(StoreError::from(e).to_string()))?;
        Ok(duration(row.get(0)))
    }

    async fn pause(&self, app: &str, d: std::time::Duration) -> Result<(), SharedError> {
        let client = self.client(app).await?;
        client
            .execute(
                &format!("UPDATE rate_budget SET paused_until = GREATEST(paused_until, {NOW} + $2) WHERE app = $1"),
                &[&app, &secs(d)],
            )
            .await
            .map_err(|e| SharedError::Unreachable(StoreError::from(e).to_string()))?;
        Ok(())
    }

    async fn open_breaker(&self, app: &str, cooldown: std::time::Duration) -> Result<(), SharedError> {
        let client = self.client(app).await?;
        client
            .execute(
                &format!("UPDATE rate_budget SET breaker_until = GREATEST(breaker_until, {NOW} + $2) WHERE app = $1"),
                &[&app, &secs(cooldown)],
            )
            .await
            .map_err(|e| SharedError::Unreachable(StoreError::from(e).to_string()))?;
        Ok(())
    }
}

/// The lock set of leases (the gateway's own sets are small numbers, `gateway::Locks`).
const LEASE_SET: i32 = 100;

/// Session-level advisory locks on one connection of the pool kept aside for them. Session locks are
/// per connection, so one connection serves every task of the process: the in-process locks already
/// keep two tasks off one key, and a lock taken twice by the session is counted and released twice.
/// Taking is `pg_try_advisory_lock` polled with backoff, never the blocking form: a blocked statement
/// would hold up every other lock and unlock behind it on the shared connection. The polling ends at
/// `wait_for`: a lock held elsewhere for longer refuses the change (503), it never waits for ever.
///
/// The fence: a lock's session can end under it (the server restarted, the backend was terminated, the
/// network dropped the connection); the database then releases the lock at once and another replica may
/// take it, while this replica's request goes on. So each lock taken for a request is one of the
/// request's fences (`adapter_api::calls::add_fence`): the outbound client asks, on the lock's own
/// connection, whether the session still holds it right before each vendor attempt, and `put`/`remove`
/// check in their write transaction that the session that took it still holds it: the lock held by the
/// backend pid, which also holds the session's token (an advisory lock on a random 64-bit key taken
/// when the connection opened, which no later session holds even if it gets the same pid). Either
/// refuses with 503; the record's version compare-and-set catches what slips between that check and
/// the commit. (The token, not `pg_stat_activity.backend_start`: that view costs a snapshot of every
/// backend, ~1 ms a write under load, against ~0.5 ms for `pg_locks` alone.)
#[derive(Debug)]
pub(crate) struct PgLocks {
    pool: Pool,
    conn: tokio::sync::Mutex<Option<std::sync::Arc<LockConn>>>,
    /// How long `acquire` waits, for a lock another replica holds or for an unreachable database, before
    /// the change is refused with 503 and Retry-After (`LOCK_WAIT`; shorter in tests).
    wait_for: std::time::Duration,
    /// Mixed into every key: two gateways with different `store.schema` on one database lock apart
    /// (advisory locks are database-wide).
    namespace: String,
}

/// How long a replica lock is waited for (held elsewhere, or the database unreachable) before the change
/// is refused (503 with Retry-After): Entra retries; a lock held for ever never holds a request for ever.
pub(crate) const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The lock connection and the identity of its database session.
struct LockConn {
    client: deadpool_postgres::Object,
    /// `pg_backend_pid()` of the session.
    pid: i32,
    /// The key of the advisory lock the session holds as its token: with the pid, names this session
    /// and no later one.
    token: i64,
}

impl std::fmt::Debug for LockConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockConn").field("pid", &self.pid).finish()
    }
}

/// One advisory lock held by this replica's lock session.
pub(crate) struct AdvisoryHold {
    conn: std::sync::Arc<LockConn>,
    set: i32,
    key: i32,
}

impl Drop for AdvisoryHold {
    fn drop(&mut self) {
        let (conn, set, key) = (self.conn.clone(), self.set, self.key);
        // Outside a runtime (process exit) the closing connection releases it.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if conn.client.is_closed() {
                    return;
                }
                if let Err(e) = conn.client.execute("SELECT pg_advisory_unlock($1, $2)", &[&set, &key]).await {
                    tracing::warn!(error = %StoreError::from(e), "releasing a replica lock failed; the database releases it with the connection");
                }
            });
        }
    }
}

impl AdvisoryHold {
    /// The backend pid of the session holding the lock (tests end that session).
    #[cfg(test)]
    pub(crate) fn session_pid(&self) -> i32 {
        self.conn.pid
    }
}

impl adapter_api::calls::Fence for AdvisoryHold {
    fn check(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), SharedError>> + Send + '_>> {
        Box::pin(async move {
            let lost = || format!("replica lock ({}, {}) lost with its database session", self.set, self.key);
            let gone = || SharedError::LockLost(lost());
            if self.conn.client.is_closed() {
                return Err(gone());
            }
            // On the lock's own session: if it answers, it is the session that took the lock.
            let held: bool = self
                .conn
                .client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
                       AND pid = pg_backend_pid() AND classid = ($1::int4)::oid AND objid = ($2::int4)::oid
                       AND objsubid = 2)",
                    &[&self.set, &self.key],
                )
                .await
                .map_err(|e| SharedError::LockLost(format!("{}: {}", lost(), StoreError::from(e))))?
                .get(0);
            if held {
                Ok(())
            } else {
                Err(gone())
            }
        })
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl PgLocks {
    /// The lock connection, opened again if it was lost (its locks went with it).
    async fn conn(&self) -> StoreResult<std::sync::Arc<LockConn>> {
        let mut held = self.conn.lock().await;
        if let Some(c) = held.as_ref().filter(|c| !c.client.is_closed()) {
            return Ok(c.clone());
        }
        if held.is_some() {
            tracing::warn!("the replica lock connection was lost; the locks it held were released by the database");
        }
        let client = self.pool.get().await.map_err(pool_error)?;
        let (pid, token) = loop {
            // A random 64-bit key: another session holding it is all but impossible; if one does, draw again.
            let token = uuid::Uuid::new_v4().as_u64_pair().0 as i64;
            let row = client.query_one("SELECT pg_backend_pid(), pg_try_advisory_lock($1)", &[&token]).await?;
            if row.get::<_, bool>(1) {
                break (row.get::<_, i32>(0), token);
            }
        };
        let c = std::sync::Arc::new(LockConn { client, pid, token });
        *held = Some(c.clone());
        Ok(c)
    }

    /// The key of a lock name in this store's namespace.
    fn key(&self, name: i32) -> i32 {
        if self.namespace.is_empty() {
            name
        } else {
            super::lock_key(&[&self.namespace, &name.to_string()])
        }
    }

    /// One attempt: `Some` when taken.
    async fn try_take(&self, set: i32, key: i32) -> StoreResult<Option<AdvisoryHold>> {
        let key = self.key(key);
        let conn = self.conn().await?;
        let taken: bool = conn.client.query_one("SELECT pg_try_advisory_lock($1, $2)", &[&set, &key]).await?.get(0);
        Ok(taken.then_some(AdvisoryHold { conn, set, key }))
    }
}

/// The replica locks the current request holds (its fences), as (session pid, session token, set, key).
fn request_locks() -> StoreResult<Vec<(i32, i64, i32, i32)>> {
    let mut held = Vec::new();
    for fence in adapter_api::calls::fences() {
        if let Some(hold) = fence.as_any().downcast_ref::<AdvisoryHold>() {
            if hold.conn.client.is_closed() {
                return Err(StoreError::Fenced(format!(
                    "replica lock ({}, {}) lost with its database session",
                    hold.set, hold.key
                )));
            }
            held.push((hold.conn.pid, hold.conn.token, hold.set, hold.key));
        }
    }
    Ok(held)
}

/// Inside a write transaction: every replica lock of the current request is still held by the session
/// that took it. `Fenced` otherwise: the database released it, and another replica may have acted.
async fn check_request_locks(tx: &deadpool_postgres::Transaction<'_>) -> StoreResult<()> {
    let held = request_locks()?;
    if held.is_empty() {
        return Ok(());
    }
    let pids: Vec<i32> = held.iter().map(|h| h.0).collect();
    let tokens: Vec<i64> = held.iter().map(|h| h.1).collect();
    let sets: Vec<i32> = held.iter().map(|h| h.2).collect();
    let keys: Vec<i32> = held.iter().map(|h| h.3).collect();
    let stmt = tx
        .prepare_cached(
            "SELECT count(*) FROM unnest($1::int4[], $2::int8[], $3::int4[], $4::int4[]) AS h(pid, token, set, key)
             WHERE (SELECT count(*) FROM pg_locks l
                    WHERE l.locktype = 'advisory' AND l.granted AND l.pid = h.pid
                      AND ((l.objsubid = 2 AND l.classid = (h.set)::oid AND l.objid = (h.key)::oid)
                        OR (l.objsubid = 1 AND l.classid = ((h.token >> 32) & 4294967295)::oid
                            AND l.objid = (h.token & 4294967295)::oid))) = 2",
        )
        .await?;
    let still: i64 = tx.query_one(&stmt, &[&pids, &tokens, &sets, &keys]).await?.get(0);
    if still as usize == held.len() {
        Ok(())
    } else {
        Err(StoreError::Fenced(format!(
            "{} of the request's {} replica locks lost with their database session",
            held.len() - still as usize,
            held.len()
        )))
    }
}

#[async_trait::async_trait]
impl super::SharedLocks for PgLocks {
    async fn acquire(&self, set: i32, key: i32) -> StoreResult<super::Hold> {
        let deadline = tokio::time::Instant::now() + self.wait_for;
        let mut wait = std::time::Duration::from_millis(2);
        loop {
            // One attempt is bounded too: the pool's wait and the session's statement_timeout.
            let last = match self.try_take(set, key).await {
                Ok(Some(hold)) => {
                    // One of the request's fences until it is released (see `PgLocks`).
                    let hold = std::sync::Arc::new(hold);
                    let fence: std::sync::Arc<dyn adapter_api::calls::Fence> = hold.clone();
                    adapter_api::calls::add_fence(std::sync::Arc::downgrade(&fence));
                    return Ok(Box::new(hold));
                }
                Ok(None) => None,
                Err(e) => Some(e),
            };
            if tokio::time::Instant::now() + wait >= deadline {
                return Err(last.unwrap_or_else(|| {
                    StoreError::Unavailable(format!(
                        "replica lock ({set}, {key}) still held by another replica after {:?}",
                        self.wait_for
                    ))
                }));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(std::time::Duration::from_millis(50));
        }
    }
}

pub struct PgEngine {
    location: String,
    pool: Pool,
    locks: std::sync::Arc<PgLocks>,
    budget: std::sync::Arc<PgRateBudget>,
}

impl std::fmt::Debug for PgEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgEngine").field("location", &self.location).finish()
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Unavailable(format!("no database connection: {e}"))
}

/// The schema's part of the lock and lease keys: the schema as PostgreSQL names it (an unquoted name is
/// folded to lower case), and nothing for `public`, where the tables are when no schema is set, so
/// `store.schema: public` written out and left out lock alike.
fn lock_namespace(schema: Option<&str>) -> String {
    match schema.map(str::to_ascii_lowercase) {
        Some(schema) if schema != "public" => schema,
        _ => String::new(),
    }
}

/// Parses `url` and refuses a password in it: the password comes from `*_file`/`*_env`, so the URL can
/// be logged and shown.
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config, String> {
    let config: tokio_postgres::Config = url.parse().map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
    if config.get_password().is_some() {
        return Err("holds a password; give it as store.password_file or store.password_env instead".into());
    }
    if config.get_hosts().is_empty() {
        return Err("names no host".into());
    }
    Ok(config)
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl PgEngine {
    /// Connects, creates the schema if asked, and migrates to the latest version.
    pub async fn open(opts: PgOptions) -> StoreResult<PgEngine> {
        let mut config = parse_url(&opts.url).map_err(StoreError::Unavailable)?;
        if let Some(p) = &opts.password {
            config.password(p.expose_secret());
        }
        // A 2xx to Entra means the commit is flushed, whatever the server's default says. No statement
        // runs, and no lock is waited for, without bound: a stuck server answers 503, not never.
        let mut options = format!(
            "-c synchronous_commit=on -c statement_timeout={}ms -c lock_timeout={}ms",
            STATEMENT_TIMEOUT.as_millis(),
            LOCK_TIMEOUT.as_millis()
        );
        if let Some(schema) = &opts.schema {
            if !is_identifier(schema) {
                return Err(StoreError::Unavailable(format!(
                    "schema {schema:?}: lowercase letters, digits and '_' only"
                )));
            }
            options.push_str(&format!(" -c search_path={schema}"));
        }
        config.options(options);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(5));
        }
        config.application_name("scim-bridge");
        // A peer that vanished (a node lost, a firewall dropping the flow) is noticed in about a minute,
        // not after the kernel's two hours: the lock connection's locks are gone with it.
        config.keepalives(true);
        config.keepalives_idle(std::time::Duration::from_secs(30));
        config.keepalives_interval(std::time::Duration::from_secs(10));
        config.keepalives_retries(3);
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(opts.pool_size.max(2))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_CREATE))
            .recycle_timeout(Some(POOL_CREATE))
            .build()
            .map_err(|e| StoreError::Unavailable(format!("cannot build the connection pool: {e}")))?;
        let locks = std::sync::Arc::new(PgLocks {
            pool: pool.clone(),
            conn: tokio::sync::Mutex::new(None),
            wait_for: LOCK_WAIT,
            namespace: lock_namespace(opts.schema.as_deref()),
        });
        let budget = std::sync::Arc::new(PgRateBudget {
            pool: pool.clone(),
            ready: Default::default(),
            clock: std::sync::Mutex::new(DbClock::new()),
        });
        let engine = PgEngine { location: opts.url.clone(), pool, locks, budget };
        engine.migrate(opts.schema.as_deref()).await?;
        Ok(engine)
    }

    async fn migrate(&self, schema: Option<&str>) -> StoreResult<()> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await?;
        // Replicas starting together: the first migrates, the others wait here and then find it done.
        // A migration may be long, and another replica's may be under way: the session's bounds are for
        // requests, not for this.
        tx.batch_execute("SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = '10min'").await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
        if let Some(schema) = schema {
            // Checked to be a plain identifier above.
            tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")).await?;
        }
        tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)").await?;
        let at: i32 = match tx.query_opt("SELECT version FROM schema_version", &[]).await? {
            Some(row) => row.get(0),
            None => {
                tx.execute("INSERT INTO schema_version VALUES (0)", &[]).await?;
                0
            }
        };
        if at as usize > MIGRATIONS.len() {
            return Err(StoreError::Unavailable(format!(
                "the database's schema is version {at}, newer than this gateway knows ({}): run the newer release",
                MIGRATIONS.len()
            )));
        }
        for (i, step) in MIGRATIONS.iter().enumerate().skip(at as usize) {
            tx.batch_execute(step).await?;
            tx.execute("UPDATE schema_version SET version = $1", &[&(i as i32 + 1)]).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_error)
    }

    async fn select(&self, sql_where: &str, args: &[&(dyn ToSql + Sync)]) -> StoreResult<Vec<Record>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(&format!("SELECT {COLUMNS} FROM resources WHERE {sql_where}")).await?;
        client.query(&stmt, args).await?.iter().map(row_to_record).collect()
    }

    async fn count_where(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> StoreResult<u64> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await?;
        let n: i64 = client.query_one(&stmt, args).await?.get(0);
        Ok(n.max(0) as u64)
    }

    /// Replica locks on a lock connection of their own (another session, as another replica's would
    /// be) that wait at most `wait_for`.
    #[cfg(test)]
    pub(crate) fn locks_waiting(&self, wait_for: std::time::Duration) -> std::sync::Arc<dyn super::SharedLocks> {
        std::sync::Arc::new(PgLocks {
            pool: self.pool.clone(),
            conn: tokio::sync::Mutex::new(None),
            wait_for,
            namespace: self.locks.namespace.clone(),
        })
    }

    #[cfg(test)]
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }
}

const COLUMNS: &str = "app, kind, id, vendor_id, doc, created, modified, version";

fn row_to_record(row: &Row) -> StoreResult<Record> {
    let doc: String = row.get(4);
    Ok(Record {
        app: row.get(0),
        kind: Kind::parse(row.get::<_, &str>(1)),
        id: row.get(2),
        vendor_id: row.get(3),
        doc: serde_json::from_str(&doc)?,
        created: row.get(5),
        modified: row.get(6),
        version: row.get(7),
    })
}

fn json_text(v: &Option<Value>) -> Option<String> {
    v.as_ref().map(|v| v.to_string())
}

fn attempt_log_text(e: &AuditEntry) -> StoreResult<Option<String>> {
    Ok(if e.attempt_log.is_empty() { None } else { Some(serde_json::to_string(&e.attempt_log)?) })
}

/// Which unique rule a failed statement broke, if it broke one.
fn unique_violation(e: &tokio_postgres::Error) -> Option<&str> {
    let db = e.as_db_error()?;
    (db.code() == &SqlState::UNIQUE_VIOLATION).then(|| db.constraint().unwrap_or(""))
}

/// Completes an intent in place, or appends.
async fn append_audit(tx: &deadpool_postgres::Transaction<'_>, e: &AuditEntry) -> StoreResult<()> {
    if e.seq > 0 {
        let stmt = tx
            .prepare_cached(
                "UPDATE audit SET at = $2, resource_id = $3, name_key = $4, name = $5, operation = $6,
                   before = $7, after = $8, outcome = $9, status = $10, detail = $11, vendor_calls = $12,
                   attempts = $13, attempt_log = $14
                 WHERE seq = $1",
            )
            .await?;
        let updated = tx
            .execute(
                &stmt,
                &[
                    &e.seq,
                    &e.at,
                    &e.resource_id,
                    &e.name.as_deref().map(str::to_lowercase),
                    &e.name,
                    &e.operation,
                    &json_text(&e.before),
                    &json_text(&e.after),
                    &e.outcome.as_str(),
                    &i32::from(e.status),
                    &e.detail,
                    &i64::from(e.vendor_calls),
                    &i64::from(e.attempts),
                    &attempt_log_text(e)?,
                ],
            )
            .await?;
        if updated == 1 {
            return Ok(());
        }
    }
    insert_audit(tx, e).await.map(drop)
}

async fn insert_audit(tx: &deadpool_postgres::Transaction<'_>, e: &AuditEntry) -> StoreResult<i64> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO audit (at, app, resource_type, resource_id, name_key, name, operation, actor, request_id,
               before, after, outcome, status, detail, vendor_calls, attempts, attempt_log)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) RETURNING seq",
        )
        .await?;
    let row = tx
        .query_one(
            &stmt,
            &[
                &e.at,
                &e.app,
                &e.resource_type,
                &e.resource_id,
                &e.name.as_deref().map(str::to_lowercase),
                &e.name,
                &e.operation,
                &e.actor,
                &e.request_id,
                &json_text(&e.before),
                &json_text(&e.after),
                &e.outcome.as_str(),
                &i32::from(e.status),
                &e.detail,
                &i64::from(e.vendor_calls),
                &i64::from(e.attempts),
                &attempt_log_text(e)?,
            ],
        )
        .await?;
    Ok(row.get(0))
}

const AUDIT_COLUMNS: &str = "a.seq, a.at, a.app, a.resource_type, a.resource_id, a.name, a.operation, a.actor,
    a.request_id, a.before, a.after, a.outcome, a.status, a.detail, a.vendor_calls, a.attempts, a.attempt_log";

fn audit_row(r: &Row) -> AuditEntry {
    let parse = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok());
    AuditEntry {
        seq: r.get(0),
        at: r.get(1),
        app: r.get(2),
        resource_type: r.get(3),
        resource_id: r.get(4),
        name: r.get(5),
        operation: r.get(6),
        actor: r.get(7),
        request_id: r.get(8),
        before: parse(r.get(9)),
        after: parse(r.get(10)),
        outcome: crate::outcome::Outcome::parse(r.get(11)),
        status: u16::try_from(r.get::<_, i32>(12)).unwrap_or(0),
        detail: r.get(13),
        vendor_calls: u32::try_from(r.get::<_, i64>(14)).unwrap_or(u32::MAX),
        attempts: u32::try_from(r.get::<_, i64>(15)).unwrap_or(u32::MAX),
        attempt_log: r.get::<_, Option<String>>(16).and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default(),
    }
}

/// `audit_filter_sql` in PostgreSQL's dialect, with its parameters as values to bind.
fn filter_clause(f: &AuditFilter) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
    let (sql, args) = super::audit_filter_sql(f, |n| format!("${n}"), "strpos(a.name_key, {}) > 0");
    let args = args
        .into_iter()
        .map(|a| -> Box<dyn ToSql + Sync + Send> {
            match a {
                super::SqlArg::Text(t) => Box::new(t),
                super::SqlArg::Int(i) => Box::new(i),
            }
        })
        .collect();
    (sql, args)
}

#[async_trait::async_trait]
impl StoreEngine for PgEngine {
    fn location(&self) -> String {
        self.location.clone()
    }

    async fn check_writable(&self) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO health (k, at) VALUES (1, to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'))
                 ON CONFLICT (k) DO UPDATE SET at = excluded.at",
                &[],
            )
            .await?;
        Ok(())
    }

    async fn get(&self, app: &str, kind: Kind, id: &str) -> StoreResult<Option<Record>> {
        Ok(self.select("app = $1 AND kind = $2 AND id = $3", &[&app, &kind.as_str(), &id]).await?.pop())
    }

    async fn find_by_name(&self, app: &str, kind: Kind, name: &str) -> StoreResult<Option<Record>> {
        let key = name.to_lowercase();
        Ok(self.select("app = $1 AND kind = $2 AND name_key = $3", &[&app, &kind.as_str(), &key]).await?.pop())
    }

    async fn find_by_external_id(&self, app: &str, kind: Kind, external_id: &str) -> StoreResult<Vec<Record>> {
        self.select("app = $1 AND kind = $2 AND external_id = $3 ORDER BY pos", &[&app, &kind.as_str(), &external_id])
            .await
    }

    async fn find_by_vendor_id(&self, app: &str, kind: Kind, vendor_id: &str) -> StoreResult<Option<Record>> {
        Ok(self.select("app = $1 AND kind = $2 AND vendor_id = $3", &[&app, &kind.as_str(), &vendor_id]).await?.pop())
    }

    async fn find_by_work_email(&self, app: &str, kind: Kind, email: &str) -> StoreResult<Vec<Record>> {
        let key = email.to_lowercase();
        self.select("app = $1 AND kind = $2 AND email_key = $3 ORDER BY pos", &[&app, &kind.as_str(), &key]).await
    }

    async fn list(&self, app: &str, kind: Kind) -> StoreResult<Vec<Record>> {
        self.select("app = $1 AND kind = $2 ORDER BY pos", &[&app, &kind.as_str()]).await
    }

    async fn page(&self, app: &str, kind: Kind, offset: usize, limit: usize) -> StoreResult<Vec<Record>> {
        let (offset, limit) = (offset as i64, limit as i64);
        self.select("app = $1 AND kind = $2 ORDER BY pos LIMIT $3 OFFSET $4", &[&app, &kind.as_str(), &limit, &offset])
            .await
    }

    async fn scan(&self, app: &str, kind: Kind, after: i64, limit: usize) -> StoreResult<(Vec<Record>, i64)> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {COLUMNS}, pos FROM resources WHERE app = $1 AND kind = $2 AND pos > $3 ORDER BY pos LIMIT $4"
            ))
            .await?;
        let rows = client.query(&stmt, &[&app, &kind.as_str(), &after, &(limit as i64)]).await?;
        let last = rows.last().map(|r| r.get::<_, i64>(8)).unwrap_or(after);
        Ok((rows.iter().map(row_to_record).collect::<StoreResult<_>>()?, last))
    }

    async fn count(&self, app: &str, kind: Kind) -> StoreResult<u64> {
        self.count_where("SELECT COUNT(*) FROM resources WHERE app = $1 AND kind = $2", &[&app, &kind.as_str()]).await
    }

    async fn put(&self, rec: &Record, audit: &AuditEntry) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        check_request_locks(&tx).await?;
        let kind = rec.kind.as_str();
        // The compare-and-set (`check_version`): the row, locked until the commit, is the version the
        // writer read, or absent for a new one.
        let stored = tx
            .query_opt(
                "SELECT version FROM resources WHERE app = $1 AND kind = $2 AND id = $3 FOR UPDATE",
                &[&rec.app, &kind, &rec.id],
            )
            .await?;
        super::check_version(rec.version, stored.map(|r| r.get(0)))?;
        let owner = tx
            .query_opt(
                "SELECT id FROM resources WHERE app = $1 AND kind = $2 AND vendor_id = $3 AND id <> $4",
                &[&rec.app, &kind, &rec.vendor_id, &rec.id],
            )
            .await?;
        if let Some(owner) = owner {
            return Err(StoreError::VendorLinked(owner.get(0)));
        }
        let stmt = tx
            .prepare_cached(
                "INSERT INTO resources (app, kind, id, vendor_id, name_key, external_id, doc, created, modified, version, email_key)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (app, kind, id) DO UPDATE SET vendor_id = excluded.vendor_id,
                   name_key = excluded.name_key, external_id = excluded.external_id, doc = excluded.doc,
                   modified = excluded.modified, version = excluded.version, email_key = excluded.email_key
                 WHERE resources.version = excluded.version - 1",
            )
            .await?;
        let res = tx
            .execute(
                &stmt,
                &[
                    &rec.app,
                    &kind,
                    &rec.id,
                    &rec.vendor_id,
                    &rec.name().to_lowercase(),
                    &external_id_of(&rec.doc),
                    &serde_json::to_string(&rec.doc)?,
                    &rec.created,
                    &rec.modified,
                    &rec.version,
                    &work_email_of(&rec.doc),
                ],
            )
            .await;
        if let Ok(0) = res {
            // A new record whose id another writer inserted since the check above.
            return Err(StoreError::Fenced(format!("version {} was written since it was read", rec.version)));
        }
        if let Err(e) = res {
            return Err(match unique_violation(&e) {
                // Another replica linked the vendor record between the check above and this insert.
                Some("resources_vendor_unique") => {
                    drop(tx);
                    let owner = self.find_by_vendor_id(&rec.app, rec.kind, &rec.vendor_id).await?;
                    StoreError::VendorLinked(owner.map(|r| r.id).unwrap_or_default())
                }
                Some(_) => StoreError::Duplicate,
                None => e.into(),
            });
        }
        tx.execute(
            "DELETE FROM tombstones WHERE app = $1 AND kind = $2 AND vendor_id = $3",
            &[&rec.app, &kind, &rec.vendor_id],
        )
        .await?;
        append_audit(&tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn remove(&self, rec: &Record, tombstone: bool, audit: &AuditEntry) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        check_request_locks(&tx).await?;
        let kind = rec.kind.as_str();
        let gone = tx
            .query_opt(
                "DELETE FROM resources WHERE app = $1 AND kind = $2 AND id = $3 RETURNING version",
                &[&rec.app, &kind, &rec.id],
            )
            .await?;
        // Deleted, then refused if it was not the version read: the rollback keeps it.
        super::check_removed_version(rec.version, gone.map(|r| r.get(0)))?;
        if tombstone {
            tx.execute(
                "INSERT INTO tombstones (app, kind, vendor_id, name_key, deleted, external_id)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (app, kind, vendor_id) DO UPDATE SET name_key = excluded.name_key,
                   deleted = excluded.deleted, external_id = excluded.external_id",
                &[&rec.app, &kind, &rec.vendor_id, &rec.name().to_lowercase(), &audit.at, &external_id_of(&rec.doc)],
            )
            .await?;
        }
        append_audit(&tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn tombstone(&self, app: &str, kind: Kind, vendor_id: &str) -> StoreResult<Option<Tombstone>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT external_id, deleted FROM tombstones WHERE app = $1 AND kind = $2 AND vendor_id = $3",
            )
            .await?;
        Ok(client
            .query_opt(&stmt, &[&app, &kind.as_str(), &vendor_id])
            .await?
            .map(|r| Tombstone { external_id: r.get(0), deleted: r.get(1) }))
    }

    async fn audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        append_audit(&tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn audit_intent(&self, entry: &AuditEntry) -> StoreResult<i64> {
        let intent = AuditEntry {
            seq: 0,
            outcome: crate::outcome::Outcome::Intent,
            status: 0,
            detail: Some(
                "sent to the vendor; the outcome was never recorded (the gateway stopped or its store failed)".into(),
            ),
            ..entry.clone()
        };
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let seq = insert_audit(&tx, &intent).await?;
        tx.commit().await?;
        Ok(seq)
    }

    async fn audit_log(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit a
                 WHERE ($1::TEXT IS NULL OR a.app = $1) AND ($2::TEXT IS NULL OR a.name_key = $2)
                   AND ($3::TEXT IS NULL OR a.at >= $3)
                 ORDER BY a.seq DESC LIMIT $4"
            ))
            .await?;
        let limit = if q.limit == 0 { i64::MAX } else { q.limit as i64 };
        let name = q.name.as_deref().map(str::to_lowercase);
        Ok(client.query(&stmt, &[&q.app, &name, &q.since, &limit]).await?.iter().map(audit_row).collect())
    }

    async fn prune_audit(&self, before: &str) -> StoreResult<u64> {
        let client = self.client().await?;
        let mut total = 0u64;
        loop {
            let n = client
                .execute(
                    "DELETE FROM audit WHERE seq IN (SELECT seq FROM audit WHERE at < $1 ORDER BY at LIMIT $2)",
                    &[&before, &PRUNE_BATCH],
                )
                .await?;
            total += n;
            if (n as i64) < PRUNE_BATCH {
                return Ok(total);
            }
        }
    }

    async fn audit_len(&self) -> StoreResult<u64> {
        self.count_where("SELECT COUNT(*) FROM audit", &[]).await
    }

    async fn audit_page(&self, filter: &AuditFilter, limit: usize) -> StoreResult<(Vec<AuditEntry>, bool)> {
        let (clause, mut args) = filter_clause(filter);
        args.push(Box::new(limit as i64 + 1));
        let sql =
            format!("SELECT {AUDIT_COLUMNS} FROM audit a WHERE {clause} ORDER BY a.seq DESC LIMIT ${}", args.len());
        let client = self.client().await?;
        let refs: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)).collect();
        let mut rows: Vec<AuditEntry> = client.query(&sql, &refs).await?.iter().map(audit_row).collect();
        let more = rows.len() > limit;
        rows.truncate(limit);
        Ok((rows, more))
    }

    async fn audit_count(&self, filter: &AuditFilter) -> StoreResult<u64> {
        let (clause, args) = filter_clause(filter);
        let sql = format!("SELECT COUNT(*) FROM audit a WHERE {clause}");
        let refs: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)).collect();
        self.count_where(&sql, &refs).await
    }

    fn shared_locks(&self) -> Option<std::sync::Arc<dyn super::SharedLocks>> {
        Some(self.locks.clone())
    }

    fn rate_budget(&self) -> Option<std::sync::Arc<dyn adapter_api::budget::RateBudget>> {
        Some(self.budget.clone())
    }

    async fn lease(&self, name: &str, every: std::time::Duration) -> StoreResult<Option<super::Hold>> {
        // The advisory lock keeps two replicas out of one run; the row keeps them from running one after
        // the other (each on its own timer) when one run per `every` is enough.
        let Some(hold) = self.locks.try_take(LEASE_SET, super::lock_key(&["lease", name])).await? else {
            return Ok(None);
        };
        let client = self.client().await?;
        let due = client
            .query_opt(
                "INSERT INTO leases (name, started) VALUES ($1, now())
                 ON CONFLICT (name) DO UPDATE SET started = now()
                   WHERE leases.started <= now() - make_interval(secs => $2)
                 RETURNING name",
                &[&name, &every.as_secs_f64()],
            )
            .await?;
        Ok(due.map(|_| Box::new(hold) as super::Hold))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_schema_locks_by_the_name_postgres_gives_it() {
        assert_eq!(super::lock_namespace(None), "");
        assert_eq!(super::lock_namespace(Some("public")), "");
        assert_eq!(super::lock_namespace(Some("PUBLIC")), "");
        assert_eq!(super::lock_namespace(Some("Tenant_A")), "tenant_a");
        assert_eq!(super::lock_namespace(Some("tenant_a")), "tenant_a");
    }

    use super::*;
    use std::time::Duration;

    /// The database's clock is read off the tightest round trip: a slow answer (a commit, a busy
    /// replica) does not move where this replica puts the database's instants, a faster one refines it,
    /// and a slot is an instant, whenever the answer that named it arrived.
    #[test]
    fn the_database_clock_follows_the_tightest_round_trip() {
        let mut clock = DbClock::new();
        let origin = clock.origin;
        let t = |ms: u64| origin + Duration::from_millis(ms);
        // The database reads 1000.010 s while we are at 10 ms: offset 1000 s, known to ±2 ms.
        let (sent, answered) = (t(8), t(12));
        clock.sample(sent, answered, 1000.010);
        let slot = 1000.050;
        assert_eq!(clock.until(slot, t(10)).as_millis(), 40);
        // A slow answer (a 30 ms round trip) is not taken, whatever it says.
        clock.sample(t(25), t(55), 1000.045);
        assert_eq!(clock.until(slot, t(10)).as_millis(), 40);
        // A tighter one is: the database is 1 ms ahead of what we thought.
        clock.sample(t(60), t(61), 1000.0615);
        let left = clock.until(slot, t(10)).as_secs_f64();
        assert!((left - 0.039).abs() < 1e-6, "{left}");
        // A slot already past goes now.
        assert_eq!(clock.until(1000.0, t(100)), Duration::ZERO);
        // The database's clock stepped back 10 s (a failover): even a loose sample is taken at once.
        clock.sample(t(200), t(230), 990.216);
        let left = clock.until(990.250, t(200)).as_secs_f64();
        assert!((left - 0.049).abs() < 1e-6, "{left}");
    }
}
