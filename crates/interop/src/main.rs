//! `hsmls-interop-client`: the hsmls client of the public MLS interop
//! harness. Listens on 127.0.0.1 only.
//!
//! ```text
//! hsmls-interop-client [--port N] [--pkcs11]
//! ```
//!
//! `--port` defaults to 50051. Keys live in memory (zeroized on drop)
//! unless `--pkcs11` is given or `HSMLS_INTEROP_PKCS11=1` is set: then
//! they live in the PKCS#11 token(s) that `HSMLS_PKCS11_CONFIG` describes
//! ([`ConfiguredCustody`]: a router over the signature token and, if the
//! file names one with `hpke_token`, an HPKE token): the HPKE keys of a
//! suite the token cannot hold (X25519 on SoftHSM: suites 0x0001 and
//! 0x0003) live in process memory only when that file says
//! `hpke_keys = "token-else-software"` (or `"software"`), and are refused
//! otherwise; signature keys always live in the token.
#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use hsmls_custody::{ConfiguredCustody, KeyCustody, SoftwareCustody};
use hsmls_interop::InteropClient;

const USAGE: &str = "usage: hsmls-interop-client [--port N] [--pkcs11]
  --port N   TCP port on 127.0.0.1 (default 50051)
  --pkcs11   keep keys in the PKCS#11 token of HSMLS_PKCS11_CONFIG
             (also enabled by HSMLS_INTEROP_PKCS11=1)";

struct Args {
    port: u16,
    pkcs11: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        port: 50051,
        pkcs11: std::env::var("HSMLS_INTEROP_PKCS11").is_ok_and(|v| v == "1"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--port" | "-p" => {
                let v = it.next().ok_or("--port needs a value")?;
                args.port = v.parse().map_err(|_| format!("bad port {v:?}"))?;
            }
            s if s.starts_with("--port=") => {
                let v = &s["--port=".len()..];
                args.port = v.parse().map_err(|_| format!("bad port {v:?}"))?;
            }
            "--pkcs11" => args.pkcs11 = true,
            "--help" | "-h" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let custody: Arc<dyn KeyCustody> = if args.pkcs11 {
        match ConfiguredCustody::open_from_env() {
            Ok(c) => c.custody(),
            Err(e) => {
                eprintln!("cannot open the PKCS#11 token: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    } else {
        Arc::new(SoftwareCustody::new())
    };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tracing::info!(%addr, pkcs11 = args.pkcs11, "hsmls interop client listening");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match hsmls_interop::serve(InteropClient::new(custody), listener, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("server error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
