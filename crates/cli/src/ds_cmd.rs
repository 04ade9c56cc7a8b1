//! `hsmls ds …`: the Delivery Service.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use hsmls_ds::config::DsFileConfig;
use hsmls_ds::loadgen::{LoadConfig, run as run_load, setup_group};
use hsmls_ds::server::{authenticator, run_serve};

use crate::CliError;

/// The DS commands.
#[derive(Debug, Args)]
pub struct DsArgs {
    /// The DS configuration file (see hsm-config/ds.example.toml).
    #[arg(
        long,
        value_name = "FILE",
        env = "HSMLS_DS_CONFIG",
        default_value = "hsm-config/ds.toml"
    )]
    ds_config: PathBuf,
    #[command(subcommand)]
    command: DsCommand,
}

#[derive(Debug, Subcommand)]
enum DsCommand {
    /// Serve the DS over HTTPS and WebSocket over TLS until interrupted
    /// (SIGINT or SIGTERM); prints `listening on ADDR`.
    Serve,
    /// The open-loop load generator against running DS processes (which
    /// must accept basic credentials): a blind group of MEMBERS clients,
    /// messages at RATE per second, latencies from the intended send
    /// times. The configuration file is not read.
    Load(LoadArgs),
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// The DS URLs (https://host:port), members spread over them.
    #[arg(long, value_delimiter = ',', required = true)]
    url: Vec<String>,
    /// The roots the clients trust for the DS's TLS certificate (PEM).
    #[arg(long, value_name = "PEM")]
    tls_roots: PathBuf,
    /// The group size.
    #[arg(long, default_value_t = 10)]
    members: usize,
    /// Messages per second (intended).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// The longest the sending lasts (seconds).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// The most messages sent.
    #[arg(long, default_value_t = 100_000)]
    max: u64,
    /// Ciphertext bytes per message.
    #[arg(long, default_value_t = 256)]
    payload: usize,
    /// How many members send (round robin).
    #[arg(long, default_value_t = 8)]
    senders: usize,
    /// Requests in flight per sender at most.
    #[arg(long, default_value_t = 32)]
    in_flight: usize,
    /// How long to wait for the last deliveries (seconds).
    #[arg(long, default_value_t = 20.0)]
    drain: f64,
}

fn err(e: impl std::fmt::Display) -> CliError {
    CliError::Ds(e.to_string())
}

/// Runs a DS command.
pub fn run(args: DsArgs) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(err)?;
    runtime.block_on(async move {
        match args.command {
            DsCommand::Serve => {
                let config = DsFileConfig::from_file(&args.ds_config).map_err(err)?;
                let opts = config.serve_options().map_err(err)?;
                let auth = authenticator(&opts.credentials).await.map_err(err)?;
                run_serve(opts, auth).await.map_err(err)
            }
            DsCommand::Load(l) => {
                if !(l.rate > 0.0 && l.rate <= 1_000_000.0) {
                    return Err(err("--rate: between 0 and 1,000,000"));
                }
                let pem = std::fs::read(&l.tls_roots)
                    .map_err(|e| err(format!("{}: {e}", l.tls_roots.display())))?;
                let tls = hsmls_ds::client::tls_client_config(&pem).map_err(err)?;
                let tag = format!("{:x}", hsmls_ds::server::now());
                let group = setup_group(&l.url, tls, l.members, &tag)
                    .await
                    .map_err(err)?;
                let mut config = LoadConfig::default();
                config.rate = l.rate;
                config.duration = Duration::from_secs_f64(l.duration);
                config.max_messages = l.max;
                config.payload = l.payload;
                config.senders = l.senders;
                config.in_flight = l.in_flight;
                config.drain = Duration::from_secs_f64(l.drain);
                let report = run_load(&group, &config).await.map_err(err)?;
                println!("{report}");
                Ok(())
            }
        }
    })
}
