//! The `scim-bridge` command line: serve, token, demo.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use rand::RngCore;
use scim_bridge::config::Config;
use scim_bridge::server;

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
enum LogFormat {
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
    /// Print a new random app token and the token_sha256 to put in the config.
    Token,
    /// Serve a `sandbox` app on an in-memory store, for a first look.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[arg(long, default_value = "demo-token")]
        token: String,
    },
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SCIM_BRIDGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Serve { config } => {
            let origin = config.display().to_string();
            let cfg = Config::load(&config).map_err(|e| e.to_string())?;
            let gateway = server::build_gateway(&cfg, &origin).map_err(|e| e.to_string())?;
            let running =
                server::start(&cfg, gateway).await.map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
            tracing::info!(addr = %running.addr, apps = cfg.apps.len(), "serving");
            server::termination().await;
            tracing::info!("shutting down; draining in-flight requests");
            running.stop().await.map_err(|e| e.to_string())
        }
        Command::Token => {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            let token = hex::encode(bytes);
            let hash = hex::encode(scim_bridge::http::token_hash(&token));
            println!("token:        {token}");
            println!("token_sha256: {hash}");
            println!("\nPut the token in the Entra app (Admin Credentials > Secret Token) and token_sha256 in the app's config.");
            Ok(())
        }
        Command::Demo { listen, token } => {
            let hash = hex::encode(scim_bridge::http::token_hash(&token));
            let yaml = format!(
                "listen: \"{listen}\"\nstore:\n  path: \":memory:\"\napps:\n  sandbox:\n    type: sandbox\n    token_sha256: \"{hash}\"\n"
            );
            let cfg = Config::from_yaml(&yaml, "demo").map_err(|e| e.to_string())?;
            let gateway = server::build_gateway(&cfg, "demo").map_err(|e| e.to_string())?;
            let running = server::start(&cfg, gateway).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
            println!("scim-bridge demo on http://{}", running.addr);
            println!("  sandbox: http://{}/scim/sandbox/v2   token: {token}", running.addr);
            server::termination().await;
            running.stop().await.map_err(|e| e.to_string())
        }
    }
}
