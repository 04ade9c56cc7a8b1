//! `hsmls as …`: the Authentication Service's operator commands.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use hsmls_as::http::{DEFAULT_BODY_LIMIT, Server};
use hsmls_as::{AsConfig, PgStore, SqliteStore, Store};
use hsmls_credentials::SystemClock;
use hsmls_custody::pkcs11::Pkcs11Config;
use hsmls_custody::{KeyCustody, Pkcs11Custody};

use serde_json::json;

use crate::CliError;
use crate::output::Output;

/// The AS commands.
#[derive(Debug, Args)]
pub struct AsArgs {
    /// The AS configuration file (see hsm-config/as.example.toml).
    #[arg(
        long,
        value_name = "FILE",
        env = "HSMLS_AS_CONFIG",
        default_value = "hsm-config/as.toml"
    )]
    as_config: PathBuf,
    #[command(subcommand)]
    command: AsCommand,
}

#[derive(Debug, Subcommand)]
enum AsCommand {
    /// Generate the root, issuing and log keys in the token, the CA and TLS
    /// certificates, and write the keys' PKCS#11 URIs into the AS config.
    Init,
    /// Enrolment tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Revoke a certificate by serial (hex) and re-sign the CRL.
    Revoke { serial: String },
    /// Serve the AS over HTTPS until interrupted.
    Serve,
    /// TLS certificates for the other services (the Delivery Service).
    #[command(subcommand)]
    Tls(TlsCommand),
}

#[derive(Debug, Subcommand)]
enum TlsCommand {
    /// Issue a TLS server certificate for NAMES (DNS names or IP
    /// addresses) from the AS's CA, with a fresh key: writes PREFIX.pem
    /// (the certificate and the issuing CA's) and PREFIX.key (mode 0600).
    /// Clients that trust the AS root then trust the service.
    Issue {
        /// The names.
        #[arg(required = true)]
        names: Vec<String>,
        /// Where to write (PREFIX.pem, PREFIX.key).
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
        /// Validity, days.
        #[arg(long, default_value_t = 365)]
        days: u64,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Issue a one-time enrolment token for IDENTITY (a SAN URI); prints it.
    Issue { identity: String },
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn err(e: impl std::fmt::Display) -> CliError {
    CliError::As(e.to_string())
}

fn custody(
    config: &AsConfig,
    override_path: Option<PathBuf>,
) -> Result<Arc<dyn KeyCustody>, CliError> {
    let path = override_path.unwrap_or_else(|| config.pkcs11_config_path());
    let p11 = Pkcs11Config::from_file(&path)?;
    Ok(Arc::new(Pkcs11Custody::open(&p11)?))
}

/// Runs an AS command.
/// Runs an AS command; `out` says whether to print JSON.
pub fn run(args: AsArgs, pkcs11: Option<PathBuf>, out: Output) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(err)?;
    runtime.block_on(run_async(args, pkcs11, out))
}

async fn run_async(args: AsArgs, pkcs11: Option<PathBuf>, out: Output) -> Result<(), CliError> {
    let mut config = AsConfig::from_file(&args.as_config).map_err(err)?;
    let custody = custody(&config, pkcs11)?;
    if let AsCommand::Tls(TlsCommand::Issue {
        names,
        out: prefix,
        days,
    }) = &args.command
    {
        return issue_tls(&config, custody, names, prefix, *days, out);
    }
    if let AsCommand::Init = args.command {
        let ca = config
            .init(&args.as_config, custody.clone(), now())
            .map_err(err)?;
        let keys = config
            .keys
            .clone()
            .ok_or_else(|| err("no keys after init"))?;
        let dir = config.state_dir();
        out.result(
            json!({"type": "as_initialised", "root_key": keys.root, "issuing_key": keys.issuing,
                "log_key": keys.log, "state_dir": dir}),
            || {
                format!(
                    "root key:    {}\nissuing key: {}\nlog key:     {}\ncertificates in {}",
                    keys.root,
                    keys.issuing,
                    keys.log,
                    dir.display()
                )
            },
        );
        drop(ca);
        // Create the database and sign the first CRL.
        return with_store(&config, custody, args.command, out).await;
    }
    with_store(&config, custody, args.command, out).await
}

/// `hsmls as tls issue`: a TLS server certificate from the AS's CA.
fn issue_tls(
    config: &AsConfig,
    custody: Arc<dyn KeyCustody>,
    names: &[String],
    prefix: &std::path::Path,
    days: u64,
    out: Output,
) -> Result<(), CliError> {
    use hsmls_as::config::pem;
    let (ca, _) = config.load(custody).map_err(err)?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?;
    // A minute early, so a clock a little behind still accepts it.
    let cert = ca
        .issue_tls(names, &key, now().saturating_sub(60), days * 86_400)
        .map_err(err)?;
    let with = |ext: &str| {
        let mut p = prefix.as_os_str().to_owned();
        p.push(ext);
        PathBuf::from(p)
    };
    let chain = pem("CERTIFICATE", &cert) + &pem("CERTIFICATE", ca.issuing_der());
    std::fs::write(with(".pem"), chain).map_err(err)?;
    let key_pem = zeroize::Zeroizing::new(key.serialize_pem());
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create(true).truncate(true);
    {
        use std::os::unix::fs::OpenOptionsExt;
        open.mode(0o600);
    }
    use std::io::Write;
    open.open(with(".key"))
        .and_then(|mut f| f.write_all(key_pem.as_bytes()))
        .map_err(err)?;
    let (pem_path, key_path) = (with(".pem"), with(".key"));
    out.result(
        json!({"type": "tls_certificate", "names": names, "certificate": pem_path,
            "key": key_path}),
        || {
            format!(
                "TLS certificate for {} in {} (key {})",
                names.join(", "),
                pem_path.display(),
                key_path.display()
            )
        },
    );
    Ok(())
}

async fn with_store(
    config: &AsConfig,
    custody: Arc<dyn KeyCustody>,
    command: AsCommand,
    out: Output,
) -> Result<(), CliError> {
    let db = config.database.as_str();
    if db == "sqlite" {
        let store = SqliteStore::open(&config.sqlite_path())
            .await
            .map_err(err)?;
        command_on(config, custody, command, store, out).await
    } else if db.starts_with("postgres://") || db.starts_with("postgresql://") {
        let store = PgStore::connect(db).await.map_err(err)?;
        command_on(config, custody, command, store, out).await
    } else {
        Err(err(format!(
            "database must be \"sqlite\" or a postgres:// URL, not {db:?}"
        )))
    }
}

async fn command_on<S: Store>(
    config: &AsConfig,
    custody: Arc<dyn KeyCustody>,
    command: AsCommand,
    store: S,
    out: Output,
) -> Result<(), CliError> {
    let service = Arc::new(
        config
            .service(custody, store, Arc::new(SystemClock))
            .map_err(err)?,
    );
    match command {
        AsCommand::Init => {
            service.refresh_crl().await.map_err(err)?;
            out.result(json!({"type": "as_database_ready"}), || {
                "database ready, first CRL signed".into()
            });
        }
        AsCommand::Token(TokenCommand::Issue { identity }) => {
            let token = service.issue_token(&identity).await.map_err(err)?;
            out.result(
                json!({"type": "enrolment_token", "identity": identity, "token": token}),
                || token.to_string(),
            );
        }
        AsCommand::Revoke { serial } => {
            let index = service.revoke(&serial).await.map_err(err)?;
            out.result(
                json!({"type": "revoked", "serial": serial, "log_index": index}),
                || format!("revoked {serial} (log entry {index}); CRL re-signed"),
            );
        }
        AsCommand::Tls(_) => {}
        AsCommand::Serve => {
            let listener = std::net::TcpListener::bind(&config.listen).map_err(err)?;
            let tls = config.tls().map_err(err)?;
            service.crl().await.map_err(err)?;
            let server = Server::start(service, listener, tls, DEFAULT_BODY_LIMIT)
                .await
                .map_err(err)?;
            eprintln!(
                "hsmls AS listening on https://{} ({})",
                server.addr, config.public_url
            );
            tokio::signal::ctrl_c().await.map_err(err)?;
            server.shutdown().await.map_err(err)?;
        }
    }
    Ok(())
}
