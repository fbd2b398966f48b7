//! Running the gateway: builds apps and the store from config, binds listeners, serves until SIGTERM or
//! Ctrl-C and then drains in-flight requests.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;

use tokio::net::TcpListener;

use crate::config::{Config, ConfigError};
use crate::gateway::{App, Gateway};
use crate::http::{self, AppState, Cidr};
use crate::metrics::Metrics;
use crate::store::Store;

/// Builds the engine for a validated config. `origin` names the config file in errors.
pub fn build_gateway(config: &Config, origin: &str) -> Result<Arc<Gateway>, ConfigError> {
    let mut apps = BTreeMap::new();
    for (name, app) in &config.apps {
        let adapter = crate::vendors::build(name, app, Duration::from_millis(config.request_budget_ms))
            .map_err(|e| ConfigError(format!("{origin}: apps.{name}: {e}")))?;
        let mut token = [0u8; 32];
        hex::decode_to_slice(app.token_sha256.trim(), &mut token)
            .map_err(|_| ConfigError(format!("{origin}: apps.{name}.token_sha256: not hex")))?;
        let ip_allow = app
            .ip_allow
            .iter()
            .map(|c| Cidr::parse(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError(format!("{origin}: apps.{name}.ip_allow: {e}")))?;
        apps.insert(name.clone(), Arc::new(App { name: name.clone(), adapter, token_sha256: token, ip_allow }));
    }
    let store = Store::open(&config.store.path)
        .map_err(|e| ConfigError(format!("{origin}: store.path: cannot open {}: {e}", config.store.path)))?;
    Ok(Arc::new(Gateway::new(apps, Arc::new(store), Arc::new(Metrics::default()))))
}

/// A running server, for tests and the demo.
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub gateway: Arc<Gateway>,
    tls: Option<(RustlsConfig, crate::config::TlsConfig)>,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// How long in-flight requests get to finish after SIGTERM.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

impl Running {
    /// Stops accepting, drains in-flight requests, and waits for the server to finish.
    pub async fn stop(self) -> std::io::Result<()> {
        let _ = self.shutdown.send(true);
        let mut task = self.task;
        match tokio::time::timeout(DRAIN_TIMEOUT, &mut task).await {
            Ok(joined) => joined.unwrap_or(Ok(())),
            Err(_) => {
                tracing::warn!(
                    "in-flight requests did not finish within {}s; stopping anyway",
                    DRAIN_TIMEOUT.as_secs()
                );
                task.abort();
                Ok(())
            }
        }
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

async fn shutdown_signal(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

fn std_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Binds and serves `gateway` per `config` until `stop` is called.
pub async fn start(config: &Config, gateway: Arc<Gateway>) -> std::io::Result<Running> {
    let state = AppState {
        gateway: gateway.clone(),
        max_body_bytes: config.max_body_bytes,
        public_url: config.public_url.clone(),
        request_budget: Duration::from_millis(config.request_budget_ms),
    };
    let listener = std_listener(config.listen)?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let admin = match config.admin_listen {
        Some(a) => Some(TcpListener::bind(a).await?),
        None => None,
    };
    let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
    let router = http::app(state.clone(), admin.is_none());
    if let Some(admin) = admin {
        let admin_router = http::admin_app(state);
        let admin_rx = rx.clone();
        tokio::spawn(async move {
            let _ = axum::serve(admin, admin_router.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(shutdown_signal(admin_rx))
                .await;
        });
    }
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let (task, tls) = match &config.tls {
        None => {
            let listener = TcpListener::from_std(listener)?;
            let task = tokio::spawn(async move {
                axum::serve(listener, service).with_graceful_shutdown(shutdown_signal(rx)).await
            });
            (task, None)
        }
        Some(paths) => {
            let rustls = RustlsConfig::from_pem_file(&paths.cert, &paths.key).await.map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("tls: cannot load {} / {}: {e}", paths.cert.display(), paths.key.display()),
                )
            })?;
            let handle: axum_server::Handle<SocketAddr> = axum_server::Handle::new();
            let drain = handle.clone();
            tokio::spawn(async move {
                shutdown_signal(rx).await;
                drain.graceful_shutdown(Some(DRAIN_TIMEOUT));
            });
            let server = axum_server::from_tcp_rustls(listener, rustls.clone())?.handle(handle);
            (tokio::spawn(async move { server.serve(service).await }), Some((rustls, paths.clone())))
        }
    };
    Ok(Running { addr, admin_addr, gateway, tls, shutdown: tx, task })
}

/// Reloads the TLS certificate on every SIGHUP until the process ends.
pub fn reload_tls_on_sighup(running: &Running) {
    #[cfg(unix)]
    if let Some((rustls, paths)) = running.tls.clone() {
        tokio::spawn(async move {
            let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
            while hup.recv().await.is_some() {
                match rustls.reload_from_pem_file(&paths.cert, &paths.key).await {
                    Ok(()) => tracing::info!(cert = %paths.cert.display(), "TLS certificate reloaded"),
                    Err(e) => tracing::error!(error = %e, "TLS reload failed; keeping the previous certificate"),
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = running;
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

/// How often each app's vendor is probed in the background (credential expiry, revoked keys).
pub const PROBE_INTERVAL: Duration = Duration::from_secs(6 * 60 * 60);

/// Probes every app's vendor now and then every `interval`: logs what an operator must act on (a refused
/// credential, a token about to expire) and keeps `/readyz` and `scim_bridge_vendor_state` current
/// before Entra's first request.
pub fn spawn_health_probes(gateway: Arc<Gateway>, interval: Duration) {
    tokio::spawn(async move {
        loop {
            probe_apps(&gateway).await;
            tokio::time::sleep(interval).await;
        }
    });
}

/// Probes every app's vendor once: sets its vendor state and its warnings (shown in `/readyz` and
/// `scim_bridge_vendor_warnings`), and logs what it found.
pub async fn probe_apps(gateway: &Gateway) {
    for app in gateway.apps.values() {
        let result = tokio::time::timeout(crate::check::PROBE_TIMEOUT, app.adapter.probe()).await;
        match result {
            Ok(Ok(report)) => {
                let state = if report.credential_accepted { "ok" } else { "credential_refused" };
                gateway.metrics.set_vendor_state(&app.name, state);
                if !report.credential_accepted {
                    tracing::error!(app = %app.name, "the vendor refused the app's credential");
                }
                let mut warnings = Vec::new();
                for note in &report.notes {
                    if note.starts_with("warning") {
                        tracing::warn!(app = %app.name, "{note}");
                        warnings.push(note.clone());
                    } else {
                        tracing::info!(app = %app.name, "{note}");
                    }
                }
                gateway.metrics.set_vendor_warnings(&app.name, warnings);
            }
            Ok(Err(e)) => {
                gateway.metrics.vendor_error(&app.name, &e);
                gateway.metrics.set_vendor_warnings(&app.name, Vec::new());
                tracing::error!(app = %app.name, error = %e, "vendor probe failed");
            }
            Err(_) => {
                gateway.metrics.set_vendor_state(&app.name, "unavailable");
                gateway.metrics.set_vendor_warnings(&app.name, Vec::new());
                let secs = crate::check::PROBE_TIMEOUT.as_secs();
                tracing::error!(app = %app.name, "vendor probe got no answer within {secs} s");
            }
        }
    }
}

/// Deletes audit entries older than `days` now and once a day (0: keep forever).
pub fn spawn_audit_retention(gateway: Arc<Gateway>, days: u32) {
    if days == 0 {
        return;
    }
    tokio::spawn(async move {
        loop {
            let cutoff = time::OffsetDateTime::now_utc() - time::Duration::days(i64::from(days));
            match cutoff.format(&time::format_description::well_known::Rfc3339) {
                Ok(before) => match gateway.store.prune_audit(&before) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, %before, "audit retention: old entries deleted"),
                    Err(e) => tracing::error!(error = %e, "audit retention failed"),
                },
                Err(e) => tracing::error!(error = %e, "audit retention: bad cutoff"),
            }
            tokio::time::sleep(Duration::from_secs(24 * 60 * 60)).await;
        }
    });
}
