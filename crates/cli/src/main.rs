//! `hsmls`: the hsmls command line.
//!
//! ```text
//! hsmls [--config FILE] demo
//! hsmls [--config FILE] custody-demo
//! hsmls [--config FILE] group-demo
//! hsmls [--config FILE] probe
//! hsmls [--config FILE] key generate (signature|hpke)
//! hsmls [--config FILE] key sign URI MESSAGE
//! hsmls [--config FILE] key destroy URI
//! hsmls as [--as-config FILE] init
//! hsmls as [--as-config FILE] token issue IDENTITY
//! hsmls as [--as-config FILE] revoke SERIAL
//! hsmls as [--as-config FILE] serve
//! hsmls as [--as-config FILE] tls issue NAME… --out PREFIX
//! hsmls ds [--ds-config FILE] serve
//! hsmls ds load --url URL[,URL…] --tls-roots PEM [--members N] [--rate MSG/S] …
//!
//! hsmls [--config FILE] [--json] enrol --token TOKEN
//! hsmls [--config FILE] [--json] group (create [--assisted|--blind] | add GROUP ID… |
//!                                 remove GROUP ID… | leave GROUP | update GROUP |
//!                                 members GROUP | list)
//! hsmls [--config FILE] [--json] send GROUP [TEXT]
//! hsmls [--config FILE] [--json] receive [--follow [--for SECONDS]]
//! hsmls [--config FILE] [--json] safety-number GROUP
//! hsmls [--config FILE] [--json] status
//! hsmls completions SHELL
//! ```
//!
//! For the user commands `--config` names the client configuration
//! (default `$HSMLS_CLIENT_CONFIG`; `hsm-config/client.example.toml`), for
//! the others the PKCS#11 configuration (default `$HSMLS_PKCS11_CONFIG`;
//! for `as`, the AS configuration names it; `ds` uses no token). PINs come from the file or
//! environment variable that the PKCS#11 configuration names, never from
//! the command line. Exit codes: see `exit.rs` (and `hsmls --help`).
#![forbid(unsafe_code)]

mod as_cmd;
mod ds_cmd;
mod exit;
mod group_demo;
mod output;
mod user;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use hsmls_custody::pkcs11::Pkcs11Config;
use hsmls_custody::{
    ConfiguredCustody, CustodyError, CustodyRouter, HpkeKeyHome, KeyCustody, KeyHome, KeySpec,
    Pkcs11Custody, SealHome,
};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand_core::OsRng;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Custody(#[from] CustodyError),
    #[error("MLS: {0}")]
    Mls(String),
    #[error("check failed: {0}")]
    Check(String),
    #[error("AS: {0}")]
    As(String),
    /// A user command failed (with the AS and DS URLs of its client, for
    /// the hint).
    #[error("{}", .0.error)]
    User(Box<user::Failure>),
    #[error("DS: {0}")]
    Ds(String),
}

const EXIT_CODES: &str = "\
Exit codes: 0 done; 1 failed (another reason); 2 bad command line; \
3 configuration missing or invalid; 4 token (PKCS#11 module, token, PIN); \
5 not enrolled / already enrolled; 6 unknown group, not a member, removed; \
7 Authentication Service unreachable; 8 Delivery Service unreachable; \
9 refused by the AS or DS; 10 another hsmls process is using this client.";

/// The hsmls command line: MLS with private keys in a PKCS#11 token.
///
/// User commands (enrol, group, send, receive, safety-number, status) read
/// the client configuration from --config or HSMLS_CLIENT_CONFIG
/// (hsm-config/client.example.toml); probe, key and the demos read a
/// PKCS#11 configuration from --config or HSMLS_PKCS11_CONFIG
/// (scripts/setup-hsm.sh writes one for SoftHSM). PINs are never taken as
/// arguments.
#[derive(Debug, Parser)]
#[command(name = "hsmls", version, after_help = EXIT_CODES)]
struct Cli {
    /// The configuration file: the client's for user commands (default:
    /// $HSMLS_CLIENT_CONFIG), the PKCS#11 one for the others (default:
    /// $HSMLS_PKCS11_CONFIG).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print one JSON object per line (user and AS commands; a user
    /// command's error too, on stderr).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// custody-demo, then group-demo.
    Demo,
    /// Generate keys in the token, sign, verify, ECDH.
    CustodyDemo,
    /// An MLS group of alice, bob and carol, keys in the token.
    GroupDemo,
    /// Show what the token can hold.
    Probe,
    /// Token keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// The Authentication Service (an X.509 CA with its keys in the token).
    As(as_cmd::AsArgs),
    #[command(flatten)]
    User(user::UserCommand),
    /// The Delivery Service (KeyPackage directory, ordering, fan-out).
    Ds(ds_cmd::DsArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum KeyKind {
    Signature,
    Hpke,
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Generate a key; prints its URI and public key.
    Generate { kind: KeyKind },
    /// Sign SHA-256(MESSAGE); prints the DER signature (hex).
    Sign { uri: String, message: String },
    /// Destroy a key.
    Destroy { uri: String },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let json = cli.json;
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::User(f)) => {
            let (e, urls) = (&f.error, &f.urls);
            let c = e.category(urls.as_ref().map(|(a, d)| (a.as_str(), d.as_str())));
            if json {
                eprintln!(
                    "{}",
                    serde_json::json!({"type": "error", "kind": c.kind, "exit_code": c.code,
                        "message": e.to_string(), "hint": c.hint})
                );
            } else {
                eprintln!("hsmls: {e}");
                if let Some(h) = c.hint {
                    eprintln!("hsmls: hint: {h}");
                }
            }
            ExitCode::from(c.code)
        }
        Err(e) => {
            eprintln!("hsmls: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load(config: Option<PathBuf>) -> Result<Pkcs11Config, CliError> {
    Ok(match config {
        Some(path) => Pkcs11Config::from_file(&path)?,
        None => Pkcs11Config::from_env()?,
    })
}

fn open(config: Option<PathBuf>) -> Result<Pkcs11Custody, CliError> {
    Ok(Pkcs11Custody::open(&load(config)?)?)
}

/// The cipher suites `hsmls probe` reports on (RFC 9420 §17.1).
const PROBED_SUITES: [u16; 5] = [0x0001, 0x0002, 0x0003, 0x0005, 0x0007];

/// One line per cipher suite and key kind: where the key would live with
/// this configuration (the signature token, the HPKE token, software, or
/// nowhere) and why.
fn key_homes(router: &CustodyRouter) -> Vec<String> {
    let mut lines = Vec::new();
    for suite in PROBED_SUITES {
        let Some((signature, hpke)) = KeySpec::of_cipher_suite(suite) else {
            continue;
        };
        for spec in [signature, hpke] {
            let (kind, algorithm) = match spec {
                KeySpec::Signature(s) => ("signature", s.name()),
                KeySpec::Kem(k) => ("HPKE", k.name()),
                _ => ("other", "?"),
            };
            let home = match router.home(spec) {
                Ok(KeyHome::Token) => format!(
                    "token (mechanisms present: {})",
                    Pkcs11Custody::mechanisms(spec).join(", ")
                ),
                Ok(KeyHome::HpkeToken) => format!(
                    "HPKE token (named by hpke_token; mechanisms present: {})",
                    Pkcs11Custody::mechanisms(spec).join(", ")
                ),
                Ok(KeyHome::Software) if router.hpke_keys() == HpkeKeyHome::Software => {
                    "software (chosen by hpke_keys = \"software\")".to_owned()
                }
                Ok(KeyHome::Software) => format!(
                    "software (the token cannot: {}; allowed by hpke_keys = {:?})",
                    router
                        .hpke_token()
                        .unwrap_or(router.token())
                        .unsupported_reason(spec)
                        .unwrap_or_default(),
                    router.hpke_keys().config_value()
                ),
                Ok(other) => format!("{other:?}"),
                Err(e) => format!("refused ({e})"),
            };
            lines.push(format!(
                "suite 0x{suite:04x} {kind} key ({algorithm}): {home}"
            ));
        }
    }
    lines
}

/// Where the state-sealing key would live, and why (nothing is created).
fn seal_line(custody: &ConfiguredCustody) -> String {
    let home = match custody.seal_home() {
        Ok(SealHome::Token) => format!(
            "token {:?} (CKM_AES_KEY_GEN, CKM_AES_GCM present)",
            custody.token().token_label()
        ),
        Ok(SealHome::HpkeToken) => {
            let why = match custody.token().can_seal() {
                Err(e) => e.to_string(),
                Ok(()) => String::new(),
            };
            format!(
                "HPKE token {:?} (CKM_AES_KEY_GEN, CKM_AES_GCM present; {why})",
                custody
                    .hpke_token()
                    .map(|h| h.token_label())
                    .unwrap_or_default()
            )
        }
        Ok(other) => format!("{other:?}"),
        Err(e) => format!("refused ({e})"),
    };
    format!("state-sealing key: {home}")
}

fn run(cli: Cli) -> Result<(), CliError> {
    let config = cli.config;
    match cli.command {
        Command::Demo => {
            let config = load(config)?;
            demo(&Pkcs11Custody::open(&config)?)?;
            println!("\n");
            group_demo::group_demo(&config)
        }
        Command::CustodyDemo => demo(&open(config)?),
        Command::GroupDemo => group_demo::group_demo(&load(config)?),
        Command::Probe => {
            let config = load(config)?;
            let custody = ConfiguredCustody::open(&config)?;
            println!("{}", custody.token().capabilities().summary);
            if let Some(h) = custody.hpke_token() {
                println!("HPKE token: {}", h.capabilities().summary);
            }
            for line in key_homes(custody.router()) {
                println!("{line}");
            }
            println!("{}", seal_line(&custody));
            Ok(())
        }
        Command::Key(KeyCommand::Generate { kind }) => {
            // The keys of cipher suite 0x0002.
            let spec = match kind {
                KeyKind::Signature => KeySpec::ECDSA_SECP256R1_SHA256,
                KeyKind::Hpke => KeySpec::DHKEM_P256_HKDF_SHA256,
            };
            let key = open(config)?.generate(spec)?;
            println!("uri={}", key.uri());
            println!("public={}", hex::encode(key.public_key().as_bytes()));
            Ok(())
        }
        Command::Key(KeyCommand::Sign { uri, message }) => {
            let custody = open(config)?;
            let key = custody.find(&uri)?;
            println!("{}", hex::encode(custody.sign(&key, message.as_bytes())?));
            Ok(())
        }
        Command::Key(KeyCommand::Destroy { uri }) => {
            let custody = open(config)?;
            let key = custody.find(&uri)?;
            custody.destroy(&key)?;
            println!("destroyed {}", key.uri());
            Ok(())
        }
        Command::As(args) => as_cmd::run(args, config, output::Output { json: cli.json }),
        Command::User(command) => user::run(
            command,
            config,
            output::Output { json: cli.json },
            <Cli as clap::CommandFactory>::command,
        )
        .map_err(CliError::User),
        Command::Ds(args) => ds_cmd::run(args),
    }
}

/// The custody demo: a P-256 signature key and an HPKE key generated in the
/// token; the signature is verified and the ECDH result checked in software.
fn demo(custody: &Pkcs11Custody) -> Result<(), CliError> {
    println!("hsmls custody demo");
    println!("token: {}", custody.capabilities().summary);

    let key = custody.generate(KeySpec::ECDSA_SECP256R1_SHA256)?;
    println!("\n1. P-256 signature key generated inside the token");
    println!("   PKCS#11 URI: {}", key.uri());
    println!(
        "   public key:  {}",
        hex::encode(key.public_key().as_bytes())
    );
    let message = b"hsmls: private keys stay in the token";
    let digest: [u8; 32] = Sha256::digest(message).into();
    let der = custody.sign(&key, message)?;
    println!("   message:     {:?}", String::from_utf8_lossy(message));
    println!(
        "   signature:   {} (ECDSA P-256, DER, low S)",
        hex::encode(&der)
    );
    let sig = p256::ecdsa::Signature::from_der(&der)
        .map_err(|e| CliError::Check(format!("signature is not DER: {e}")))?;
    let verifying = p256::ecdsa::VerifyingKey::from_sec1_bytes(key.public_key().as_bytes())
        .map_err(|e| CliError::Check(format!("bad public key: {e}")))?;
    verifying
        .verify_prehash(&digest, &sig)
        .map_err(|e| CliError::Check(format!("signature does not verify: {e}")))?;
    if sig.normalize_s().is_some() {
        return Err(CliError::Check("signature has a high S".into()));
    }
    println!("   verified in software with the p256 crate: OK");

    if custody
        .capabilities()
        .supports(KeySpec::DHKEM_P256_HKDF_SHA256)
    {
        let hpke = custody.generate(KeySpec::DHKEM_P256_HKDF_SHA256)?;
        println!(
            "\n2. HPKE (DHKEM P-256) key: a session object, wrapped once under the token's AES key"
        );
        println!("   PKCS#11 URI: {}", hpke.uri());
        let peer = p256::SecretKey::random(&mut OsRng);
        let peer_public = peer.public_key().to_encoded_point(false);
        let in_token = custody.dh(&hpke, peer_public.as_bytes())?;
        let key_public = p256::PublicKey::from_sec1_bytes(hpke.public_key().as_bytes())
            .map_err(|e| CliError::Check(format!("bad public key: {e}")))?;
        let software = p256::ecdh::diffie_hellman(peer.to_nonzero_scalar(), key_public.as_affine());
        if in_token.as_bytes() != &software.raw_secret_bytes()[..] {
            return Err(CliError::Check(
                "token ECDH differs from software DH".into(),
            ));
        }
        println!("   ECDH in the token equals the software DH from the peer side: OK");
        custody.destroy(&hpke)?;
    } else {
        println!("\n2. this token cannot hold HPKE keys; skipped the ECDH step");
    }

    custody.destroy(&key)?;
    println!("\n3. demo keys destroyed");
    Ok(())
}
