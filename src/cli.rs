//! The `scim-bridge` command line: serve, check, reconcile, audit, token. The binary is `main.rs` calling
//! `cli::main`; the demo, the simulators and the benchmarks are the `scim-bridge-dev` tool (tools/devkit).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Config;
use crate::server;
use clap::{Parser, Subcommand, ValueEnum};
use rand::RngCore;

#[derive(Parser)]
#[command(name = "scim-bridge", version, about = "SCIM 2.0 gateway between Microsoft Entra ID and SaaS vendor APIs")]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the apps of a config file.
    Serve {
        #[arg(long, short, default_value = "proxy.yaml")]
        config: PathBuf,
    },
    /// Validate a config and probe each app's vendor with a harmless read.
    Check {
        #[arg(long, short, default_value = "proxy.yaml")]
        config: PathBuf,
        /// Validate only; do not contact vendors.
        #[arg(long)]
        offline: bool,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Compare each app's vendor with Entra's state now and repair what differs (per the app's
    /// `reconcile.mode`). Exit status 0 when nothing is left unrepaired and everything could be checked.
    Reconcile {
        #[arg(long, short, default_value = "proxy.yaml")]
        config: PathBuf,
        /// Only this app.
        #[arg(long)]
        app: Option<String>,
        /// Compare and report only: change nothing at the vendor or in the gateway's store.
        #[arg(long)]
        dry_run: bool,
        /// The reports as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a new random app token and the token_sha256 to put in the config.
    Token,
    /// Print what the gateway did, newest first, from the audit log.
    Audit {
        #[arg(long, short, default_value = "proxy.yaml")]
        config: PathBuf,
        /// Only this app.
        #[arg(long)]
        app: Option<String>,
        /// Only this userName (or group displayName), case-insensitive.
        #[arg(long)]
        user: Option<String>,
        /// Only entries at or after: 2026-11-25, an RFC 3339 time, or an age such as 30m, 12h, 7d.
        #[arg(long)]
        since: Option<String>,
        /// At most this many entries (0: all).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).init(),
    }
}

/// The `scim-bridge` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    block_on(run(cli.command))
}

/// Why a command failed, as `error: ...` says it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The store file is held by another process, or its claim file cannot be made; `hint` says what to do.
    #[error("store.path in {file}: {source}{hint}")]
    Claim {
        file: String,
        #[source]
        source: crate::store::ClaimError,
        hint: &'static str,
    },
    #[error("--app: no app '{app}' in {file}")]
    NoSuchApp { app: String, file: String },
    #[error(transparent)]
    Since(#[from] crate::audit_report::SinceError),
    #[error(transparent)]
    Audit(#[from] crate::store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The drain at shutdown.
    #[error(transparent)]
    Stop(std::io::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("{0} app(s) failed the check")]
    ChecksFailed(usize),
    #[error("{unrepaired} difference(s) left unrepaired")]
    Unrepaired { unrepaired: usize },
    #[error("{unrepaired} difference(s) left unrepaired; {unchecked} thing(s) could not be checked")]
    Unchecked { unrepaired: usize, unchecked: usize },
}

/// Runs a command on a multi-threaded runtime; an error is printed as `error: ...` with a failing exit
/// status.
pub fn block_on<E: std::fmt::Display>(command: impl std::future::Future<Output = Result<(), E>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Serve { config } => {
            let hangup = server::Hangup::catch();
            let origin = config.display().to_string();
            let mut cfg = Config::load(&config)?;
            // PostgreSQL is shared by design (its locks live in the database); a SQLite file is not.
            let _claim = match cfg.store.url {
                Some(_) => None,
                None => crate::store::claim(&cfg.store.path).map_err(|source| CliError::Claim {
                    file: origin.clone(),
                    source,
                    hint: "; one serve per store file (see README, Deployment)",
                })?,
            };
            let gateway = server::open_gateway(&cfg, &origin).await?;
            cfg.drop_vendor_options();
            let running =
                server::start(&cfg, gateway).await.map_err(|source| CliError::Listen { addr: cfg.listen, source })?;
            server::reload_on_hangup(hangup, &running);
            crate::probe::spawn_health_probes(running.gateway.clone(), crate::probe::PROBE_INTERVAL);
            server::spawn_audit_retention(running.gateway.clone(), cfg.store.audit_retention_days);
            crate::reconcile::spawn_periodic(running.gateway.clone());
            tracing::info!(addr = %running.addr, tls = running.is_tls(), apps = cfg.apps.len(), "serving");
            server::termination().await;
            tracing::info!("shutting down; draining in-flight requests");
            running.stop().await.map_err(CliError::Stop)
        }
        Command::Audit { config, app, user, since, limit, json } => {
            let cfg = Config::load(&config)?;
            if let Some(a) = &app {
                if !cfg.apps.contains_key(a) {
                    return Err(CliError::NoSuchApp { app: a.clone(), file: config.display().to_string() });
                }
            }
            let since =
                since.map(|s| crate::audit_report::parse_since(&s, time::OffsetDateTime::now_utc())).transpose()?;
            let store = server::open_store(&cfg.store, &config.display().to_string()).await?;
            let entries = store.audit_log(&crate::store::AuditQuery { app, name: user, since, limit }).await?;
            if json {
                print!("{}", crate::audit_report::render_json(&entries));
            } else {
                print!("{}", crate::audit_report::render_table(&entries));
            }
            Ok(())
        }
        Command::Reconcile { config, app, dry_run, json } => reconcile(&config, app, dry_run, json).await,
        Command::Check { config, offline, json } => {
            let checks = crate::check::run(&config, offline).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&checks)?);
            } else {
                print!("{}", crate::check::render(&checks));
            }
            match checks.iter().filter(|c| !c.ok()).count() {
                0 => Ok(()),
                n => Err(CliError::ChecksFailed(n)),
            }
        }
        Command::Token => {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            let token = hex::encode(bytes);
            let hash = hex::encode(crate::http::token_hash(&token));
            println!("token:        {token}");
            println!("token_sha256: {hash}");
            println!("\nPut the token in the Entra app (Admin Credentials > Secret Token) and token_sha256 in the app's config.");
            Ok(())
        }
    }
}

/// `scim-bridge reconcile`: one pass per app (or `--app`), a progress bar on a terminal, a summary at the end.
async fn reconcile(config: &std::path::Path, only: Option<String>, dry_run: bool, json: bool) -> Result<(), CliError> {
    use crate::reconcile::{PassOptions, Progress};
    use std::io::IsTerminal;
    let origin = config.display().to_string();
    let cfg = Config::load(config)?;
    if let Some(a) = &only {
        if !cfg.apps.contains_key(a) {
            return Err(CliError::NoSuchApp { app: a.clone(), file: origin });
        }
    }
    // An enforcing pass writes to vendors and to the store: beside a running serve it could undo a change
    // Entra is making at that moment (the per-user locks live in serve's process). A dry run writes
    // nothing, so it may run beside serve.
    let _claim = match cfg.store.url.as_ref().map_or_else(|| crate::store::claim(&cfg.store.path), |_| Ok(None)) {
        Ok(claim) => claim,
        Err(crate::store::ClaimError::Held(_)) if dry_run => None,
        Err(source @ crate::store::ClaimError::Held(_)) => {
            return Err(CliError::Claim {
                file: origin,
                source,
                hint: ". serve runs this pass itself every `reconcile.interval`; `--dry-run` can run beside it, an \
                       enforcing pass only while serve is stopped",
            })
        }
        Err(source) => return Err(CliError::Claim { file: origin, source, hint: "" }),
    };
    let gateway = server::open_gateway(&cfg, &origin).await?;
    let mut reports = Vec::new();
    for app in gateway.apps.values().filter(|a| only.as_ref().is_none_or(|o| *o == a.name)) {
        let opts = PassOptions { mode: app.reconcile.mode, dry_run, max_repairs: app.reconcile.max_repairs };
        let bar = if std::io::stderr().is_terminal() && !json {
            indicatif::ProgressBar::new_spinner()
        } else {
            indicatif::ProgressBar::hidden()
        };
        let name = app.name.clone();
        let shown = bar.clone();
        let progress = move |p: Progress| match p {
            Progress::Listing => {
                shown.set_message(format!("{name}: listing the vendor's users"));
                shown.enable_steady_tick(std::time::Duration::from_millis(120));
            }
            Progress::Listed { vendor_users, to_check } => {
                shown.disable_steady_tick();
                shown.set_length(to_check as u64);
                shown.set_position(0);
                if let Ok(style) = indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}") {
                    shown.set_style(style.progress_chars("=> "));
                }
                shown.set_message(format!("{name}: {vendor_users} vendor users listed; checking differences"));
            }
            Progress::Checked => shown.inc(1),
        };
        let report = gateway.reconcile(app, &opts, false, &progress).await;
        bar.finish_and_clear();
        crate::reconcile::log_pass(&report);
        reports.push(report);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        print!("{}", crate::reconcile::render_summary(&reports));
    }
    let unrepaired: usize = reports.iter().map(|r| r.unrepaired()).sum();
    let unchecked: usize = reports.iter().map(|r| r.unchecked.len()).sum();
    match (unrepaired, unchecked) {
        (0, 0) => Ok(()),
        (unrepaired, 0) => Err(CliError::Unrepaired { unrepaired }),
        (unrepaired, unchecked) => Err(CliError::Unchecked { unrepaired, unchecked }),
    }
}
