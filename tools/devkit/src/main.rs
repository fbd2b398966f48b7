//! `scim-bridge-dev`: the demo, the vendor simulators, the Entra cycle driver and the benchmarks. None of
//! it is in the `scim-bridge` release binary.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use scim_bridge::cli::{block_on, init_logs, LogFormat};
use scim_bridge::server;
use scim_bridge_devkit::{bench, demo};

#[derive(Parser)]
#[command(
    name = "scim-bridge-dev",
    version,
    about = "scim-bridge's demo, vendor simulators, Entra driver and benchmarks"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve `sandbox`, `prodpad`, `promapp` and `prompt` apps in front of in-process vendor simulators,
    /// on an in-memory store, for a first look.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The bearer token every demo app accepts.
        #[arg(long, default_value = "demo-token")]
        token: String,
        /// Run a scripted Entra-like walkthrough against every app, print what each vendor holds, and exit.
        #[arg(long)]
        walkthrough: bool,
        /// Make the simulators misbehave: `mixed`, or fault JSON such as '{"error_rate":0.2}'.
        #[arg(long)]
        faults: Option<String>,
        /// Serve the status page on this address (with /healthz, /readyz and /metrics, which then leave
        /// the SCIM listener).
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
        /// The admin token that opens the status page (with --admin-listen).
        #[arg(long, default_value = "demo-admin-token")]
        admin_token: String,
    },
    /// Drive an app like the Entra provisioning service (Test Connection, initial and incremental cycle,
    /// Retry-After honoured) and verify the end state.
    EntraSim(entra_sim::CliArgs),
    /// Benchmarks that print figures and ratios (see BENCHMARKS.md): latency, throughput, economy, cycle,
    /// memory, all.
    Bench(bench::BenchArgs),
    /// Run one vendor simulator on its own (point a staging gateway app at it before the real vendor).
    ///
    /// With `--config`: a simulator for every app of that config whose vendor has one and whose
    /// `base_url` is on this machine, on that address, accepting the app's credential (e.g. proxy.yaml).
    Simulate {
        /// The vendor type (see `type:`); not with --config.
        #[arg(required_unless_present = "config", conflicts_with = "config")]
        vendor: Option<String>,
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        /// The vendor credential the simulator accepts.
        #[arg(long, required_unless_present = "config")]
        token: Option<String>,
        /// Simulate the vendors of this config's apps instead.
        #[arg(long, short)]
        config: Option<std::path::PathBuf>,
        /// Faults from the start: `mixed`, or fault JSON.
        #[arg(long)]
        faults: Option<String>,
    },
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    block_on(run(cli.command))
}

/// The dev binary's edge: every command's error, said as `error: ...` by `block_on`.
async fn run(command: Command) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::Demo { listen, token, walkthrough, faults, admin_listen, admin_token } => {
            let faults = faults.map(|f| demo::parse_faults(&f)).transpose()?;
            let demo = match admin_listen {
                Some(admin) => {
                    let admin = demo::DemoAdmin { listen: admin, token: admin_token };
                    demo::start_with_admin(listen, &token, faults, admin).await?
                }
                None => demo::start(listen, &token, faults).await?,
            };
            print!("{}", demo.banner());
            if walkthrough {
                print!("{}", demo.walkthrough().await?);
                return Ok(demo.running.stop().await?);
            }
            server::termination().await;
            Ok(demo.running.stop().await?)
        }
        Command::EntraSim(args) => Ok(entra_sim::cli(args).await?),
        Command::Bench(args) => Ok(bench::cli(args).await?),
        Command::Simulate { config: Some(config), faults, .. } => {
            let faults = faults.map(|f| demo::parse_faults(&f)).transpose()?;
            let started = demo::simulate_config(&config, faults).await?;
            for (app, sim) in &started {
                println!("{app}: simulator on {}", sim.root_url());
            }
            println!("simulators ready: {}", started.len());
            server::termination().await;
            Ok(())
        }
        Command::Simulate { vendor, listen, token, faults, config: None } => {
            let (Some(vendor), Some(token)) = (vendor, token) else {
                return Err("simulate: give a vendor and --token, or --config".into());
            };
            let started = demo::simulator(&vendor, &token, Some(listen)).await?;
            if let Some(f) = faults {
                started.sim.set_faults(demo::parse_faults(&f)?);
            }
            println!("{vendor} simulator on {}", started.sim.root_url());
            println!("gateway app options for it:");
            for (k, v) in &started.app_options {
                println!("    {k}: {v}");
            }
            println!(
                "admin view: {}/_sim/users, {}/_sim/faults, {}/_sim/counters",
                started.sim.root_url(),
                started.sim.root_url(),
                started.sim.root_url()
            );
            server::termination().await;
            Ok(())
        }
    }
}
