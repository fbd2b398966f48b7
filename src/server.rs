//! Running the gateway: builds apps and the store from config, binds listeners, serves until SIGTERM or
//! Ctrl-C and then drains in-flight requests.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

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
        let adapter =
            crate::vendors::build(name, app).map_err(|e| ConfigError(format!("{origin}: apps.{name}: {e}")))?;
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
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops accepting, drains in-flight requests, and waits for the server to finish.
    pub async fn stop(self) -> std::io::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await.unwrap_or(Ok(()))
    }
}

async fn shutdown_signal(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Binds and serves `gateway` per `config` until `stop` or a signal.
pub async fn start(config: &Config, gateway: Arc<Gateway>) -> std::io::Result<Running> {
    let state = AppState {
        gateway: gateway.clone(),
        max_body_bytes: config.max_body_bytes,
        public_url: config.public_url.clone(),
    };
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let admin = match config.admin_listen {
        Some(a) => Some(TcpListener::bind(a).await?),
        None => None,
    };
    let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
    let router = http::app(state.clone(), admin.is_none());
    let main_rx = rx.clone();
    let task = tokio::spawn(async move {
        if let Some(admin) = admin {
            let admin_router = http::admin_app(state);
            let admin_rx = main_rx.clone();
            tokio::spawn(async move {
                let _ = axum::serve(admin, admin_router.into_make_service_with_connect_info::<SocketAddr>())
                    .with_graceful_shutdown(shutdown_signal(admin_rx))
                    .await;
            });
        }
        axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(shutdown_signal(main_rx))
            .await
    });
    Ok(Running { addr, admin_addr, gateway, shutdown: tx, task })
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
