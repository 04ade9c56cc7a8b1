//! `hsmls-ds serve`: a Delivery Service process (the tests start it as a
//! real process; `hsmls ds serve` in the CLI is the same).
//!
//! ```text
//! hsmls-ds serve --listen 127.0.0.1:0 (--sqlite FILE | --postgres URL) --tls-cert PEM --tls-key PEM
//!                --key-file FILE [--ds-identity NAME] [--app-window N]
//! ```
//!
//! The key file holds the DS key (32 bytes, created with mode 0600 if
//! missing); every process serving one database must use the same one.
//! The bound address is printed as `listening on ADDR`; logs go to
//! standard error (`RUST_LOG`, default `warn`).

use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hsmls-ds: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(hsmls_ds::server::run_cli(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hsmls-ds: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to standard error, filtered by `RUST_LOG` (default `warn`).
fn tracing_init() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
}
