//! Running the gateway: builds apps and the store from config, binds listeners, serves until SIGTERM or
//! Ctrl-C and then drains in-flight requests.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;

use tokio::net::TcpListener;

use crate::config::{Config, ConfigError, Problem, StoreConfig};
use crate::gateway::{App, Gateway};
use crate::http::{self, AppState};
use crate::ip_allow::Cidr;
use crate::listener;
use crate::metrics::Metrics;
use crate::store;

/// Builds the engine for a validated config on its SQLite store. `origin` names the config file in errors.
/// A config with `store.url` (PostgreSQL) needs [`open_gateway`].
pub fn build_gateway(config: &Config, origin: &str) -> Result<Arc<Gateway>, ConfigError> {
    if config.store.url.is_some() {
        return Err(ConfigError::at(
            origin,
            "store.url",
            Problem::Invalid("PostgreSQL is opened by `open_gateway`".into()),
        ));
    }
    let store = store::open(&config.store.path).map_err(|source| {
        ConfigError::at(origin, "store.path", Problem::Open { target: config.store.path.clone(), source })
    })?;
    build_gateway_on(config, origin, store)
}

/// Builds the engine for a validated config on whichever store it names (SQLite or PostgreSQL).
pub async fn open_gateway(config: &Config, origin: &str) -> Result<Arc<Gateway>, ConfigError> {
    let store = open_store(&config.store, origin).await?;
    build_gateway_on(config, origin, store)
}

/// Opens the store a config names: PostgreSQL when `store.url` is set, else the SQLite file at
/// `store.path`. `origin` names the config file; errors name the key, never the password.
pub async fn open_store(cfg: &StoreConfig, origin: &str) -> Result<Arc<store::Store>, ConfigError> {
    let Some(url) = &cfg.url else {
        // Migrations and the first counts run SQLite, which stays off the async workers.
        let path = cfg.path.clone();
        let opened = tokio::task::spawn_blocking(move || store::open(&path))
            .await
            .unwrap_or_else(|e| Err(store::StoreError::Unavailable(format!("opening the store stopped: {e}"))));
        return opened.map_err(|source| {
            ConfigError::at(origin, "store.path", Problem::Open { target: cfg.path.clone(), source })
        });
    };
    let password = match (&cfg.password_env, &cfg.password_file) {
        (None, None) => None,
        (env, file) => Some(
            adapter_api::secret::resolve("store.password", None, env.as_deref(), file.as_deref())
                .map_err(|source| ConfigError::Credential { file: origin.to_string(), source })?,
        ),
    };
    let opts =
        store::PgOptions { url: url.clone(), password, schema: cfg.schema.clone(), pool_size: cfg.pool_size as usize };
    let engine = store::PgEngine::open(opts)
        .await
        .map_err(|source| ConfigError::at(origin, "store.url", Problem::Connect { url: url.clone(), source }))?;
    Ok(Arc::new(engine))
}

/// Builds the engine for a validated config on an open store.
pub fn build_gateway_on(config: &Config, origin: &str, store: Arc<store::Store>) -> Result<Arc<Gateway>, ConfigError> {
    // On a store shared by replicas, every app's vendor calls are paced on one schedule for all of them.
    let shared = store.rate_budget().map(adapter_api::budget::SharedBudget::new).unwrap_or_default();
    let mut apps = BTreeMap::new();
    for (name, app) in &config.apps {
        let adapter = crate::vendors::build(name, app, Duration::from_millis(config.request_budget_ms), &shared)
            .map_err(|e| ConfigError::app(origin, format!("apps.{name}"), e))?;
        let mut token = [0u8; 32];
        hex::decode_to_slice(app.token_sha256.trim(), &mut token).map_err(|_| {
            ConfigError::at(origin, format!("apps.{name}.token_sha256"), Problem::Invalid("not hex".into()))
        })?;
        let ip_allow = app
            .ip_allow
            .iter()
            .map(|c| Cidr::parse(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::at(origin, format!("apps.{name}.ip_allow"), e))?;
        let reconcile = app.reconcile.clone();
        crate::group_roles::check_config(app, adapter.as_ref())
            .map_err(|e| ConfigError::app(origin, format!("apps.{name}.{}", e.key()), e))?;
        let group_roles = app.group_roles.clone();
        apps.insert(
            name.clone(),
            Arc::new(App { name: name.clone(), adapter, token_sha256: token, ip_allow, reconcile, group_roles }),
        );
    }
    Ok(Arc::new(Gateway::new(apps, store, Arc::new(Metrics::default()))))
}

/// A running server, for tests and the demo.
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub gateway: Arc<Gateway>,
    tls: Option<(RustlsConfig, crate::config::TlsConfig)>,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    admin_task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// The engine tasks of both listeners (`AppState::tasks`).
    tasks: tokio_util::task::TaskTracker,
    drain: Duration,
}

/// How long in-flight requests get to finish after SIGTERM: longer than an Entra request may spend on the
/// vendor (`request_budget_ms`), so a request the vendor is working on is answered and audited, never cut.
/// The deploy files' grace periods (systemd, Kubernetes, compose) are longer still.
pub fn drain_timeout(request_budget: Duration) -> Duration {
    request_budget + DRAIN_MARGIN
}

/// What the drain adds to the request budget: the shadow write and the answer after the last vendor call.
pub const DRAIN_MARGIN: Duration = Duration::from_secs(5);

impl Running {
    /// Stops accepting, drains in-flight requests, and waits for the server to finish: for the open
    /// connections and for every engine task, including those whose client already hung up (a change at
    /// the vendor is finished and recorded, not dropped between the vendor call and the shadow write).
    /// All of it within the drain timeout.
    pub async fn stop(self) -> std::io::Result<()> {
        let deadline = tokio::time::Instant::now() + self.drain;
        let _ = self.shutdown.send(true);
        // The listeners drain for `drain` themselves; the extra second lets them say so before this gives up.
        let wait = self.drain + Duration::from_secs(1);
        if let Some(admin) = self.admin_task {
            let _ = tokio::time::timeout(wait, admin).await;
        }
        let mut task = self.task;
        let served = match tokio::time::timeout(wait, &mut task).await {
            Ok(joined) => joined.unwrap_or(Ok(())),
            Err(_) => {
                task.abort();
                Ok(())
            }
        };
        // No connection is left to start another engine task: wait for the running ones.
        self.tasks.close();
        if tokio::time::timeout_at(deadline, self.tasks.wait()).await.is_err() {
            tracing::warn!(
                running = self.tasks.len(),
                "changes in flight did not finish within {} s; stopping anyway",
                self.drain.as_secs()
            );
        }
        served
    }

    /// Re-reads the certificate and key (what SIGHUP does). Open connections keep their session; new
    /// handshakes use the new certificate. A bad file leaves the old certificate in place.
    pub async fn reload_tls(&self) -> std::io::Result<()> {
        match &self.tls {
            Some((rustls, paths)) => rustls.reload_from_pem_file(&paths.cert, &paths.key).await,
            None => Ok(()),
        }
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// Binds and serves `gateway` per `config` until `stop` is called.
pub async fn start(config: &Config, gateway: Arc<Gateway>) -> std::io::Result<Running> {
    let request_budget = Duration::from_millis(config.request_budget_ms);
    let state = AppState::new(gateway.clone(), config);
    let tasks = state.tasks.clone();
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let drain = drain_timeout(request_budget);
    let admin = match config.admin_listen {
        Some(a) => Some(TcpListener::bind(a).await?),
        None => None,
    };
    let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
    let router = http::app(state.clone(), admin.is_none());
    let admin_task = admin.map(|admin| {
        let admin_router = http::admin_app(state);
        tokio::spawn(listener::serve(admin, admin_router, None, config.connections.clone(), rx.clone(), drain))
    });
    let tls = match &config.tls {
        None => None,
        Some(paths) => {
            let rustls = RustlsConfig::from_pem_file(&paths.cert, &paths.key).await.map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("tls: cannot load {} / {}: {e}", paths.cert.display(), paths.key.display()),
                )
            })?;
            Some((rustls, paths.clone()))
        }
    };
    let task = tokio::spawn(listener::serve(
        listener,
        router,
        tls.as_ref().map(|(r, _)| r.clone()),
        config.connections.clone(),
        rx,
        drain,
    ));
    Ok(Running { addr, admin_addr, gateway, tls, shutdown: tx, task, admin_task, tasks, drain })
}

/// SIGHUP, caught from the start of `serve`: the default action of SIGHUP is to end the process, and the
/// shipped systemd unit's `ExecReload` sends it, so the handler is installed before anything else can fail.
pub struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    /// Starts catching SIGHUP now; `reload_on_hangup` says what each one does.
    pub fn catch() -> Hangup {
        #[cfg(unix)]
        {
            let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .inspect_err(|e| tracing::warn!(error = %e, "cannot catch SIGHUP"))
                .ok();
            Hangup { signal }
        }
        #[cfg(not(unix))]
        Hangup {}
    }
}

/// On every SIGHUP until the process ends: reloads the TLS certificate, or logs that a plain-HTTP gateway
/// has nothing to reload (config changes need a restart).
pub fn reload_on_hangup(hangup: Hangup, running: &Running) {
    #[cfg(unix)]
    {
        let Some(mut hup) = hangup.signal else { return };
        let tls = running.tls.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match &tls {
                    Some((rustls, paths)) => match rustls.reload_from_pem_file(&paths.cert, &paths.key).await {
                        Ok(()) => tracing::info!(cert = %paths.cert.display(), "TLS certificate reloaded"),
                        Err(e) => tracing::error!(error = %e, "TLS reload failed; keeping the previous certificate"),
                    },
                    None => tracing::info!("SIGHUP: no TLS certificate to reload; config changes need a restart"),
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (hangup, running);
}

/// Waits for SIGTERM or Ctrl-C.
pub async fn termination() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Deletes audit entries older than `days` now and once a day (0: keep forever). With replicas, one of
/// them does it each day (a lease, as for reconcile): the same deletes run on every replica only made
/// them wait on each other's row locks.
pub fn spawn_audit_retention(gateway: Arc<Gateway>, days: u32) {
    if days == 0 {
        return;
    }
    // Under a day, so a replica whose timer drifted a little still finds the lease free the next day.
    const EVERY: Duration = Duration::from_secs(23 * 60 * 60);
    tokio::spawn(async move {
        loop {
            let lease = match gateway.store.lease("audit-retention", EVERY).await {
                Ok(lease) => lease,
                Err(e) => {
                    tracing::warn!(error = %e, "audit retention: the lease could not be asked for");
                    None
                }
            };
            if lease.is_none() {
                tokio::time::sleep(Duration::from_secs(24 * 60 * 60)).await;
                continue;
            }
            let cutoff = time::OffsetDateTime::now_utc() - time::Duration::days(i64::from(days));
            match cutoff.format(&time::format_description::well_known::Rfc3339) {
                Ok(before) => match gateway.store.prune_audit(&before).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, %before, "audit retention: old entries deleted"),
                    Err(e) => tracing::error!(error = %e, "audit retention failed"),
                },
                Err(e) => tracing::error!(error = %e, "audit retention: bad cutoff"),
            }
            drop(lease);
            tokio::time::sleep(Duration::from_secs(24 * 60 * 60)).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The password from `store.password_file` appears neither in the engine's options as printed nor in
    /// the error of a connection that fails (the message names `store.url`).
    #[tokio::test]
    async fn the_postgres_password_is_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pg-password");
        std::fs::write(&file, "hunter2-pg\n").unwrap();
        let cfg = StoreConfig {
            url: Some("postgres://gw@127.0.0.1:1/scim".into()),
            password_file: Some(file.clone()),
            ..Default::default()
        };
        let err = open_store(&cfg, "proxy.yaml").await.err().unwrap();
        assert_eq!(err.key().as_deref(), Some("store.url"));
        let err = err.to_string();
        assert!(err.starts_with("proxy.yaml: store.url: ") && !err.contains("hunter2"), "{err}");
        assert!(!format!("{cfg:?}").contains("hunter2"));
        let opts = store::PgOptions {
            url: "postgres://gw@127.0.0.1:1/scim".into(),
            password: Some(secrecy::SecretString::from("hunter2-pg")),
            schema: None,
            pool_size: 2,
        };
        assert!(!format!("{opts:?}").contains("hunter2"));
        let missing = StoreConfig { password_file: Some(dir.path().join("nope")), ..cfg };
        let err = open_store(&missing, "proxy.yaml").await.err().unwrap();
        assert_eq!(err.key().as_deref(), Some("store.password_file"));
        let err = err.to_string();
        assert!(err.contains("store.password_file") && err.contains("nope"), "{err}");
    }
}
