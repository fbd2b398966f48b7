//! Gateway configuration: typed, loaded once with figment (YAML file, then `SCIM_BRIDGE_*` environment
//! variables with `__` for nesting), validated once. Every error names the key and the file it came from.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Yaml};
use figment::Figment;
use serde::Deserialize;
use serde_json::{Map, Value};

pub const ENV_PREFIX: &str = "SCIM_BRIDGE_";

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_store_path() -> String {
    "scim-bridge.sqlite".into()
}
fn default_max_body() -> usize {
    1024 * 1024
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the SCIM endpoint listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Optional separate address for /healthz, /readyz and /metrics.
    #[serde(default)]
    pub admin_listen: Option<SocketAddr>,
    /// The public base URL (e.g. https://gw.example.com) used in `meta.location`; else taken from Host.
    #[serde(default)]
    pub public_url: Option<String>,
    #[serde(default)]
    pub store: StoreConfig,
    /// Largest request body accepted; larger ones get 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Time one Entra request may spend on vendor calls, all of them together (a create can take a call,
    /// a lookup and a retry). Past it, what is left is not started and Entra gets 429/503 with
    /// `Retry-After`, well before Entra itself would give up on the request.
    #[serde(default = "default_request_budget_ms")]
    pub request_budget_ms: u64,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Limits on inbound connections, for both listeners: what one slow or hostile client may hold.
    #[serde(default)]
    pub connections: ConnectionLimits,
    /// The status page on `admin_listen` (`src/status`): off unless an admin token is configured.
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub apps: BTreeMap<String, AppConfig>,
}

/// `admin`: who may read the status page. Only the token's hash is kept, like the apps' tokens.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Hex SHA-256 of the admin token (`scim-bridge token` makes one); unset, the status page is off.
    #[serde(default)]
    pub token_sha256: Option<String>,
}

/// Whether `hash` reads as a hex SHA-256 (64 hex digits, surrounding blanks ignored).
fn is_sha256_hex(hash: &str) -> bool {
    let hash = hash.trim();
    hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit())
}

/// Inbound connection limits. A client that connects and sends nothing, sends its headers a byte at a
/// time, or idles on a keep-alive connection is cut off; past `max` open connections the listener stops
/// accepting until one closes (the kernel's backlog holds the rest).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionLimits {
    /// Time for a client to send a request's headers (the TLS handshake included), counted from the moment
    /// the connection waits for a request, so it also ends an HTTP/1 keep-alive connection left idle.
    pub header_read_timeout_ms: u64,
    /// A connection on which nothing is read or written for this long is closed (HTTP/2 included). Must
    /// exceed `request_budget_ms`: a request waiting on the vendor moves no bytes.
    pub idle_timeout_ms: u64,
    /// Open connections per listener (1 to 65536).
    pub max: usize,
    /// Open connections per listener from one source address (IPv6: one /64); a connection past it is
    /// closed at once. Behind a reverse proxy every client shares the proxy's address.
    pub max_per_source: usize,
    /// Failed bearer-token checks allowed per source address and minute; past it that address gets 429
    /// for its failures (a right token is always served: Entra's addresses are shared by all tenants).
    pub auth_failures_per_minute: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 75_000,
            max: 1024,
            max_per_source: 64,
            auth_failures_per_minute: 30,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// SQLite file; `:memory:` keeps everything in memory (lost on restart). Unused with `url`.
    #[serde(default = "default_store_path")]
    pub path: String,
    /// PostgreSQL instead of SQLite (`postgres://user@host:5432/db`), for more than one replica. The URL
    /// holds no password: it comes from `password_env` or `password_file`.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// A PostgreSQL schema of the gateway's own (created if missing) instead of `public`.
    #[serde(default)]
    pub schema: Option<String>,
    /// Connections each replica keeps to PostgreSQL.
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    /// Audit entries older than this many days are deleted once a day; 0 (the default) keeps them forever:
    /// the audit log is append-only unless an operator opts into retention. Every change attempt is audited
    /// with its before/after documents (~1.5 KB each), so the file grows with traffic.
    #[serde(default = "default_audit_retention_days")]
    pub audit_retention_days: u32,
}

impl StoreConfig {
    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let at = |key: &str| format!("store.{key}");
        match &self.url {
            // The URL is shown in messages and logs, so it must not carry the password: parsing it here
            // also means a bad URL is refused at load, before anything starts.
            Some(url) => {
                crate::store::postgres_url_problem(url).map_or(Ok(()), |e| Err(invalid(origin, at("url"), e)))?;
                if self.password_env.is_some() && self.password_file.is_some() {
                    return Err(invalid(
                        origin,
                        at("password_env"),
                        "give only one of store.password_env and store.password_file",
                    ));
                }
                if !(1..=1000).contains(&self.pool_size) {
                    return Err(invalid(origin, at("pool_size"), "must be 1 to 1000"));
                }
                Ok(())
            }
            None => {
                for (key, given) in [
                    ("password_env", self.password_env.is_some()),
                    ("password_file", self.password_file.is_some()),
                    ("schema", self.schema.is_some()),
                ] {
                    if given {
                        return Err(invalid(origin, at(key), "only with store.url (PostgreSQL)"));
                    }
                }
                Ok(())
            }
        }
    }
}

/// The largest `connections.max` (a tokio semaphore panics past `Semaphore::MAX_PERMITS`; far more open
/// connections than file descriptors a gateway gets anyway).
pub const MAX_CONNECTIONS: usize = 65_536;

/// The largest `request_budget_ms`: the drain (budget + 5 s, `server::drain_timeout`) must end before the
/// shipped deploy files' grace periods (50 s) send SIGKILL.
pub const MAX_REQUEST_BUDGET_MS: u64 = 40_000;

fn default_request_budget_ms() -> u64 {
    30_000
}

fn default_pool_size() -> u32 {
    16
}

fn default_audit_retention_days() -> u32 {
    0
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: default_store_path(),
            url: None,
            password_env: None,
            password_file: None,
            schema: None,
            pool_size: default_pool_size(),
            audit_retention_days: default_audit_retention_days(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Outbound limits for one app; unset values take the vendor's defaults.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub requests_per_second: Option<f64>,
    pub burst: Option<u32>,
    pub max_in_flight: Option<usize>,
    pub queue_timeout_ms: Option<u64>,
    pub attempt_timeout_ms: Option<u64>,
    pub deadline_ms: Option<u64>,
    pub max_attempts: Option<u32>,
    pub breaker_failures: Option<u32>,
    pub breaker_cooldown_ms: Option<u64>,
}

/// One Entra enterprise app pointed at `/scim/{name}/v2`. `Debug` shows option keys only: the options may
/// hold an inline vendor credential.
#[derive(Clone, Deserialize, PartialEq)]
pub struct AppConfig {
    /// sandbox | prodpad | promapp | prompt
    #[serde(rename = "type")]
    pub vendor: String,
    /// Hex SHA-256 of the bearer token Entra sends (`scim-bridge token` makes one).
    pub token_sha256: String,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Optional CIDR allow-list for Entra's source addresses.
    #[serde(default)]
    pub ip_allow: Vec<String>,
    /// Comparing the vendor with Entra's state (see `src/reconcile.rs`).
    #[serde(default)]
    pub reconcile: ReconcileConfig,
    /// For a vendor without groups: Entra groups whose members get a vendor role, in order of precedence
    /// (a member of several mapped groups gets the first one's role; see `src/group_roles.rs`).
    #[serde(default)]
    pub group_roles: Vec<GroupRole>,
    /// Everything else: the vendor's own options, validated by its adapter crate.
    #[serde(flatten)]
    pub options: Map<String, Value>,
}

impl std::fmt::Debug for AppConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppConfig")
            .field("vendor", &self.vendor)
            .field("token_sha256", &self.token_sha256)
            .field("limits", &self.limits)
            .field("ip_allow", &self.ip_allow)
            .field("reconcile", &self.reconcile)
            .field("group_roles", &self.group_roles)
            .field("option_keys", &self.options.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// One `apps.<name>.group_roles` entry: members of one Entra group get the vendor role `role`. The group is
/// named by exactly one of `group_id` (its Entra objectId, which Entra sends as the group's `externalId`:
/// renaming the group changes nothing) or `group` (its displayName, matched exactly: a rename in Entra moves
/// the group out of the mapping, and an owner who renames another group to this name gives its members the
/// role).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GroupRole {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub group_id: Option<String>,
    pub role: String,
}

impl GroupRole {
    /// An entry naming the group by its displayName.
    pub fn by_name(group: &str, role: &str) -> Self {
        GroupRole { group: Some(group.to_string()), group_id: None, role: role.to_string() }
    }

    /// An entry naming the group by its Entra objectId (the group's `externalId`).
    pub fn by_id(object_id: &str, role: &str) -> Self {
        GroupRole { group: None, group_id: Some(object_id.to_string()), role: role.to_string() }
    }

    /// Whether this entry names the group with displayName `name` and externalId `external_id`: the name
    /// exactly as written, the objectId ignoring the case of its hex digits.
    pub fn names(&self, name: &str, external_id: Option<&str>) -> bool {
        match (&self.group, &self.group_id) {
            (Some(group), _) => group == name,
            (None, Some(id)) => external_id.is_some_and(|e| e.trim().eq_ignore_ascii_case(id.trim())),
            (None, None) => false,
        }
    }
}

/// An Entra objectId: a GUID, `8-4-4-4-12` hex digits.
fn is_object_id(raw: &str) -> bool {
    let parts: Vec<&str> = raw.split('-').collect();
    parts.len() == 5
        && parts.iter().zip([8, 4, 4, 4, 12]).all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// What reconcile does with a difference between the vendor and Entra's last desired state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReconcileMode {
    /// Push Entra's values of the managed attributes back to the vendor.
    #[default]
    Enforce,
    /// Only record the difference (audit, metrics).
    Report,
}

/// `apps.<name>.reconcile`: durations are written like `1h`, `10m`, `90s`; `0` turns the periodic pass off.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileConfig {
    pub interval: String,
    pub mode: ReconcileMode,
    /// How long a listing answers Entra's `userName eq` matching queries for users the vendor lacks.
    pub index_ttl: String,
    /// Repairs one pass makes at most; beyond that it only reports (a vendor glitch that shows every user
    /// changed should page a person, not rewrite the vendor).
    pub max_repairs: usize,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            interval: "1h".into(),
            mode: ReconcileMode::Enforce,
            index_ttl: "10m".into(),
            max_repairs: 500,
        }
    }
}

/// A duration key that does not read as one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{raw:?}: {source} (write it like 1h, 10m or 90s; 0 is off)")]
pub struct DurationError {
    raw: String,
    #[source]
    source: humantime::DurationError,
}

/// `0`, `off` or a humantime duration (`1h`, `10m`, `90s`, `1h 30m`).
fn parse_duration(raw: &str) -> Result<Duration, DurationError> {
    match raw.trim() {
        "0" | "off" => Ok(Duration::ZERO),
        other => humantime::parse_duration(other).map_err(|source| DurationError { raw: raw.to_string(), source }),
    }
}

impl ReconcileConfig {
    /// The periodic pass's interval; zero is off.
    pub fn interval(&self) -> Duration {
        parse_duration(&self.interval).unwrap_or(Duration::ZERO)
    }
    /// How long a listing stands in for per-user lookups; zero is never.
    pub fn index_ttl(&self) -> Duration {
        parse_duration(&self.index_ttl).unwrap_or(Duration::ZERO)
    }
    fn validate(&self, origin: &str, at: impl Fn(&str) -> String) -> Result<(), ConfigError> {
        for (key, raw) in [("reconcile.interval", &self.interval), ("reconcile.index_ttl", &self.index_ttl)] {
            parse_duration(raw).map_err(|e| ConfigError::at(origin, at(key), e))?;
        }
        let interval = self.interval();
        if !interval.is_zero() && interval < Duration::from_secs(1) {
            return Err(invalid(origin, at("reconcile.interval"), "must be at least 1s, or 0 for off"));
        }
        Ok(())
    }
}

/// A configuration problem, said with the file and the key: `<file>: <key>: <what>`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {} does not exist", .0.display())]
    NoFile(PathBuf),
    /// The YAML or an environment variable does not fit `Config`: one line per problem figment found.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Syntax(Vec<SyntaxError>),
    /// A value that reads but cannot be used. `key` is the dotted path (`apps.a.limits.burst`), or the app
    /// (`apps.a`) when the app's adapter refused its options (the problem then names the key inside it).
    #[error("{file}: {key}: {problem}")]
    Key {
        file: String,
        key: String,
        #[source]
        problem: Box<Problem>,
    },
    /// A credential the config names cannot be read (the error names its key).
    #[error("{file}: {source}")]
    Credential {
        file: String,
        #[source]
        source: adapter_api::secret::CredentialError,
    },
}

/// What is wrong with a key's value.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// A rule of the gateway's the value breaks, in words.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Duration(#[from] DurationError),
    #[error(transparent)]
    IpAllow(#[from] crate::ip_allow::NotACidr),
    /// The store cannot be opened at `target` (the SQLite file).
    #[error("cannot open {target}: {source}")]
    Open {
        target: String,
        #[source]
        source: crate::store::StoreError,
    },
    /// The database at `url` (which never holds the password) cannot be reached or set up.
    #[error("{url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: crate::store::StoreError,
    },
    /// The app's adapter cannot be built from its type, limits and vendor options, or cannot do what the
    /// app asks of it (`vendors::AppBuildError`, `group_roles::GroupRolesError`). Boxed, so that config,
    /// which those modules read, does not depend on them.
    #[error(transparent)]
    App(Box<dyn std::error::Error + Send + Sync>),
}

/// One problem figment found reading the YAML or the environment.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {}{kind}", key.as_ref().map(|k| format!("key `{k}`: ")).unwrap_or_default())]
pub struct SyntaxError {
    /// The file, or the environment variable the value came from.
    pub source_name: String,
    /// The dotted key, when figment knows it.
    pub key: Option<String>,
    pub kind: figment::error::Kind,
}

impl ConfigError {
    /// A problem with `key` in `file`.
    pub fn at(file: &str, key: impl Into<String>, problem: impl Into<Problem>) -> Self {
        ConfigError::Key { file: file.to_string(), key: key.into(), problem: Box::new(problem.into()) }
    }

    /// The app's adapter refused what `key` says (see [`Problem::App`]).
    pub fn app(file: &str, key: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        ConfigError::at(file, key, Problem::App(Box::new(source)))
    }

    /// The file (or, for an environment override, the variable) the error is about.
    pub fn file(&self) -> Option<String> {
        match self {
            ConfigError::NoFile(path) => Some(path.display().to_string()),
            ConfigError::Syntax(problems) => problems.first().map(|p| p.source_name.clone()),
            ConfigError::Key { file, .. } => Some(file.clone()),
            ConfigError::Credential { file, .. } => Some(file.clone()),
        }
    }

    /// The dotted key the error is about, when there is one.
    pub fn key(&self) -> Option<String> {
        match self {
            ConfigError::NoFile(_) => None,
            ConfigError::Syntax(problems) => problems.first().and_then(|p| p.key.clone()),
            ConfigError::Key { key, .. } => Some(key.clone()),
            ConfigError::Credential { source, .. } => Some(source.key()),
        }
    }
}

/// A broken rule of the gateway's, for `key` in `file`.
fn invalid(file: &str, key: impl Into<String>, what: impl Into<String>) -> ConfigError {
    ConfigError::at(file, key, Problem::Invalid(what.into()))
}

impl Config {
    /// Defaults around `apps`, on `listen`, with an in-memory store (demo, tests, benchmarks).
    pub fn with_apps(listen: SocketAddr, apps: BTreeMap<String, AppConfig>) -> Config {
        Config {
            listen,
            admin_listen: None,
            public_url: None,
            store: StoreConfig { path: ":memory:".into(), ..StoreConfig::default() },
            max_body_bytes: default_max_body(),
            request_budget_ms: default_request_budget_ms(),
            tls: None,
            connections: ConnectionLimits::default(),
            admin: AdminConfig::default(),
            apps,
        }
    }

    /// Drops the apps' raw vendor options once the adapters are built: an inline credential sits there as
    /// plain JSON text, while the adapters keep theirs as `SecretString`. Nothing reads the options later.
    pub fn drop_vendor_options(&mut self) {
        for app in self.apps.values_mut() {
            app.options = serde_json::Map::new();
        }
    }

    /// Loads `path`, applies environment overrides and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        if !path.exists() {
            return Err(ConfigError::NoFile(path.to_path_buf()));
        }
        let figment =
            Figment::from(Yaml::file_exact(path)).merge(Env::prefixed(ENV_PREFIX).split("__").lowercase(true));
        let config: Config = figment.extract().map_err(|e| syntax_error(e, path))?;
        config.validate(&path.display().to_string())?;
        Ok(config)
    }

    /// Parses YAML text (no environment), for tests and `demo`.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config =
            Figment::from(Yaml::string(text)).extract().map_err(|e| syntax_error(e, Path::new(origin)))?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Checks what serde cannot: token hashes, duplicate tokens, app names, limits.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        self.store.validate(origin)?;
        let mut seen_tokens: BTreeMap<String, &str> = BTreeMap::new();
        for (name, app) in &self.apps {
            let at = |key: &str| format!("apps.{name}.{key}");
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(invalid(
                    origin,
                    format!("apps.{name}"),
                    "app names may hold only letters, digits, '-' and '_' (they appear in the URL)",
                ));
            }
            let hash = app.token_sha256.trim().to_ascii_lowercase();
            if !is_sha256_hex(&hash) {
                return Err(invalid(
                    origin,
                    at("token_sha256"),
                    "must be the 64-character hex SHA-256 of the app's token (run `scim-bridge token`)",
                ));
            }
            if let Some(other) = seen_tokens.insert(hash, name) {
                return Err(invalid(
                    origin,
                    at("token_sha256"),
                    format!("the same token is configured for app '{other}'; every app needs its own token"),
                ));
            }
            let l = &app.limits;
            if let Some(rps) = l.requests_per_second {
                if !(rps.is_finite() && rps > 0.0) {
                    return Err(invalid(origin, at("limits.requests_per_second"), "must be a positive number"));
                }
            }
            for (key, v) in [
                ("limits.burst", l.burst.map(|v| v as u64)),
                ("limits.max_in_flight", l.max_in_flight.map(|v| v as u64)),
                ("limits.max_attempts", l.max_attempts.map(u64::from)),
            ] {
                if v == Some(0) {
                    return Err(invalid(origin, at(key), "must be at least 1"));
                }
            }
            if let (Some(attempt), Some(deadline)) = (l.attempt_timeout_ms, l.deadline_ms) {
                if attempt > deadline {
                    return Err(invalid(
                        origin,
                        at("limits.attempt_timeout_ms"),
                        format!("an attempt timeout of {attempt} ms cannot fit in a deadline of {deadline} ms"),
                    ));
                }
            }
            app.reconcile.validate(origin, at)?;
            // Names are unique in the gateway's store ignoring case, so two entries differing only in case
            // could never both match: refused as the same group.
            let mut seen_groups: BTreeMap<String, usize> = BTreeMap::new();
            for (i, entry) in app.group_roles.iter().enumerate() {
                let key = |k: &str| at(&format!("group_roles[{i}].{k}"));
                let (seen_key, shown, field) = match (&entry.group, &entry.group_id) {
                    (Some(_), Some(_)) | (None, None) => {
                        return Err(invalid(
                            origin,
                            at(&format!("group_roles[{i}]")),
                            "give exactly one of group_id (the Entra group's objectId, which a rename does not \
                             change) or group (its displayName, matched exactly)",
                        ))
                    }
                    (Some(group), None) if group.trim().is_empty() => {
                        return Err(invalid(origin, key("group"), "must name an Entra group (its displayName)"))
                    }
                    (Some(group), None) if group.trim() != group => {
                        return Err(invalid(
                            origin,
                            key("group"),
                            format!(
                                "'{group}' has leading or trailing spaces: names match exactly, so a stray space \
                             would keep the entry from ever matching the Entra group; remove it"
                            ),
                        ))
                    }
                    (Some(group), None) => (format!("name:{}", group.to_lowercase()), group, "group"),
                    (None, Some(id)) if !is_object_id(id.trim()) => {
                        return Err(invalid(
                            origin,
                            key("group_id"),
                            format!(
                                "'{id}' is not an Entra objectId (a GUID such as \
                             0b6c1a6e-3f0a-4d5e-9c1b-2a7d8e9f0a1b; Entra ID > Groups > the group > Object ID)"
                            ),
                        ))
                    }
                    (None, Some(id)) => (format!("id:{}", id.trim().to_lowercase()), id, "group_id"),
                };
                if entry.role.trim().is_empty() {
                    return Err(invalid(origin, key("role"), "must name a vendor role"));
                }
                if let Some(first) = seen_groups.insert(seen_key, i) {
                    return Err(invalid(
                        origin,
                        key(field),
                        format!(
                            "'{shown}' is already mapped by group_roles[{first}]; a group has one role (the list's \
                         order is the precedence between groups)"
                        ),
                    ));
                }
            }
            for (i, cidr) in app.ip_allow.iter().enumerate() {
                crate::ip_allow::Cidr::parse(cidr)
                    .map_err(|e| ConfigError::at(origin, at(&format!("ip_allow[{i}]")), e))?;
            }
        }
        if let Some(admin) = &self.admin.token_sha256 {
            let hash = admin.trim().to_ascii_lowercase();
            if !is_sha256_hex(&hash) {
                return Err(invalid(
                    origin,
                    "admin.token_sha256",
                    "must be the 64-character hex SHA-256 of the admin token (run `scim-bridge token`)",
                ));
            }
            if let Some(app) = seen_tokens.get(&hash) {
                return Err(invalid(
                    origin,
                    "admin.token_sha256",
                    format!(
                        "the same token is configured for app '{app}'; Entra's token must not open the status page"
                    ),
                ));
            }
            if self.admin_listen.is_none() {
                return Err(invalid(
                    origin,
                    "admin.token_sha256",
                    "the status page is served only on admin_listen, never on the SCIM listener; set admin_listen \
                     (e.g. 127.0.0.1:9090)",
                ));
            }
        }
        let c = &self.connections;
        if c.header_read_timeout_ms < 100 {
            return Err(invalid(origin, "connections.header_read_timeout_ms", "must be at least 100"));
        }
        if c.idle_timeout_ms <= self.request_budget_ms {
            return Err(invalid(
                origin,
                "connections.idle_timeout_ms",
                format!(
                    "must exceed request_budget_ms ({} ms): a request waiting \
                 on the vendor moves no bytes",
                    self.request_budget_ms
                ),
            ));
        }
        if c.max == 0 {
            return Err(invalid(origin, "connections.max", "must be at least 1"));
        }
        if c.max > MAX_CONNECTIONS {
            return Err(invalid(origin, "connections.max", format!("must be at most {MAX_CONNECTIONS}")));
        }
        if c.max_per_source == 0 {
            return Err(invalid(origin, "connections.max_per_source", "must be at least 1"));
        }
        if c.auth_failures_per_minute == 0 {
            return Err(invalid(origin, "connections.auth_failures_per_minute", "must be at least 1"));
        }
        if self.request_budget_ms < 1000 {
            return Err(invalid(origin, "request_budget_ms", "must be at least 1000"));
        }
        if self.request_budget_ms > MAX_REQUEST_BUDGET_MS {
            return Err(invalid(
                origin,
                "request_budget_ms",
                format!(
                    "must be at most {MAX_REQUEST_BUDGET_MS}: the shutdown drain \
                 (request_budget_ms + 5 s) must end before the deploy files' grace period sends SIGKILL"
                ),
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(invalid(origin, "max_body_bytes", "must be at least 1024"));
        }
        if let Some(url) = &self.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(origin, "public_url", "must start with http:// or https://"));
            }
        }
        Ok(())
    }
}

/// figment's errors, each with where its value came from: the file, or the environment variable that
/// overrode it (figment's own message does not always name either).
fn syntax_error(err: figment::Error, path: &Path) -> ConfigError {
    let problems = err
        .into_iter()
        .map(|e| {
            let source_name = match &e.metadata {
                Some(md) if md.name.contains("environment") => {
                    format!("environment variable {}{}", ENV_PREFIX, e.path.join("__").to_uppercase())
                }
                _ => path.display().to_string(),
            };
            let key = (!e.path.is_empty()).then(|| e.path.join("."));
            SyntaxError { source_name, key, kind: e.kind }
        })
        .collect();
    ConfigError::Syntax(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    const HASH2: &str = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752";

    #[test]
    fn debug_never_shows_vendor_options() {
        let c = Config::from_yaml(
            &format!("apps:\n  p:\n    type: prompt\n    token_sha256: {HASH}\n    auth_code: s3cr3t-code\n"),
            "t.yaml",
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cr3t-code") && shown.contains("auth_code"), "{shown}");
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_yaml(&format!("apps:\n  s:\n    type: sandbox\n    token_sha256: {HASH}\n"), "t.yaml")
            .unwrap();
        assert_eq!(c.listen, default_listen());
        assert_eq!(c.store.path, "scim-bridge.sqlite");
        assert_eq!(c.apps["s"].vendor, "sandbox");
        assert!(c.apps["s"].options.is_empty());
    }

    #[test]
    fn errors_name_key_and_file() {
        let cases = [
            ("lisen: 1\n", "lisen"),
            ("apps:\n  s:\n    type: sandbox\n    token_sha256: abc\n", "apps.s.token_sha256"),
            (&format!("apps:\n  a:\n    type: sandbox\n    token_sha256: {HASH}\n  b:\n    type: sandbox\n    token_sha256: {HASH}\n"), "apps.b.token_sha256"),
            (&format!("apps:\n  a:\n    type: sandbox\n    token_sha256: {HASH}\n    limits:\n      burst: 0\n"), "apps.a.limits.burst"),
            (&format!("apps:\n  a:\n    type: sandbox\n    token_sha256: {HASH}\n    limits:\n      requests_per_second: -1\n"), "apps.a.limits.requests_per_second"),
            (&format!("apps:\n  a:\n    type: sandbox\n    token_sha256: {HASH2}\n    limits:\n      bogus: 1\n"), "bogus"),
            (&format!("apps:\n  a:\n    type: sandbox\n    token_sha256: {HASH2}\n    ip_allow: [\"10.0.0.0/33\"]\n"), "apps.a.ip_allow[0]"),
            ("listen: not-an-address\n", "listen"),
            ("public_url: ftp://x\n", "public_url"),
            ("connections:\n  idle_timeout_ms: 1000\n", "connections.idle_timeout_ms"),
            ("connections:\n  max: 0\n", "connections.max"),
            ("connections:\n  max: 65537\n", "connections.max"),
            ("connections:\n  max: 18446744073709551615\n", "connections.max"),
            ("connections:\n  header_read_timeout_ms: 99\n", "connections.header_read_timeout_ms"),
            ("connections:\n  max_per_source: 0\n", "connections.max_per_source"),
            (&format!("apps:\n  a:\n    type: sandbox\n    token_sha256: {HASH2}\n    reconcile:\n      interval: soon\n"), "apps.a.reconcile.interval"),
            (&format!("apps:\n  a:\n    type: sandbox\n    token_sha256: {HASH2}\n    reconcile:\n      mode: fix\n"), "mode"),
            ("connections:\n  auth_failures_per_minute: 0\n", "connections.auth_failures_per_minute"),
            ("request_budget_ms: 40001\nconnections:\n  idle_timeout_ms: 90000\n", "request_budget_ms"),
            ("admin_listen: 127.0.0.1:0\nadmin:\n  token_sha256: abc\n", "admin.token_sha256"),
            (&format!("admin:\n  token_sha256: {HASH}\n"), "admin.token_sha256"),
            (&format!("admin_listen: 127.0.0.1:0\nadmin:\n  token_sha256: {HASH}\napps:\n  a:\n    type: sandbox\n    token_sha256: {HASH}\n"), "admin.token_sha256"),
            ("admin:\n  token: x\n", "token"),
            (&format!("apps:\n  a:\n    type: promapp\n    token_sha256: {HASH2}\n    group_roles:\n      - group: \" \"\n        role: Editor\n"), "apps.a.group_roles[0].group"),
            (&format!("apps:\n  a:\n    type: promapp\n    token_sha256: {HASH2}\n    group_roles:\n      - group: G\n        role: \"\"\n"), "apps.a.group_roles[0].role"),
            (&format!("apps:\n  a:\n    type: promapp\n    token_sha256: {HASH2}\n    group_roles:\n      - group: G\n        role: A\n      - group: g\n        role: B\n"), "apps.a.group_roles[1].group"),
            (&format!("apps:\n  a:\n    type: promapp\n    token_sha256: {HASH2}\n    group_roles:\n      - group: G\n        rank: 1\n"), "rank"),
        ];
        for (yaml, key) in cases {
            let err = Config::from_yaml(yaml, "proxy.yaml").unwrap_err().to_string();
            assert!(err.contains(key), "{yaml:?}: {err}");
            assert!(err.contains("proxy.yaml"), "{yaml:?}: {err}");
        }
    }

    #[test]
    fn errors_carry_file_key_and_problem() {
        let yaml = format!("apps:\n  a:\n    type: sandbox\n    token_sha256: {HASH}\n    limits:\n      burst: 0\n");
        let err = Config::from_yaml(&yaml, "proxy.yaml").unwrap_err();
        assert_eq!((err.file().as_deref(), err.key().as_deref()), (Some("proxy.yaml"), Some("apps.a.limits.burst")));
        assert!(matches!(&err, ConfigError::Key { problem, .. } if matches!(**problem, Problem::Invalid(_))));
        assert_eq!(err.to_string(), "proxy.yaml: apps.a.limits.burst: must be at least 1");
        let yaml =
            format!("apps:\n  a:\n    type: sandbox\n    token_sha256: {HASH}\n    reconcile:\n      interval: soon\n");
        let err = Config::from_yaml(&yaml, "proxy.yaml").unwrap_err();
        assert_eq!(err.key().as_deref(), Some("apps.a.reconcile.interval"));
        assert!(matches!(&err, ConfigError::Key { problem, .. } if matches!(**problem, Problem::Duration(_))));
        let err = Config::from_yaml("lisen: 1\n", "proxy.yaml").unwrap_err();
        assert!(matches!(&err, ConfigError::Syntax(_)), "{err}");
        assert_eq!(err.file().as_deref(), Some("proxy.yaml"));
    }

    #[test]
    fn load_errors_name_the_file_even_when_it_is_missing_or_unparsable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, "listen: [\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("bad.yaml"), "{err}");
        let missing = Config::load(&dir.path().join("nope.yaml")).unwrap_err().to_string();
        assert!(missing.contains("nope.yaml"), "{missing}");
    }
}
