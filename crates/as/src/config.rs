//! The AS's configuration file (TOML, under `hsm-config/` for the example)
//! and its state directory: `init` generates the CA and log keys in the
//! token and writes their PKCS#11 URIs into the configuration, the CA
//! certificates and the TLS certificate and key into the state directory.
//!
//! ```toml
//! pkcs11_config = "../.hsm/pkcs11.toml"  # the token (as for the CLI)
//! listen = "127.0.0.1:8443"
//! public_url = "https://127.0.0.1:8443"  # in every certificate's CRL DP
//! tls_names = ["localhost", "127.0.0.1"]
//! state_dir = "../.as"                   # certificates, TLS key, SQLite file
//! database = "sqlite"                    # or a postgres:// URL
//! leaf_lifetime_days = 7
//! log_origin = "hsmls.invalid/as-log"
//!
//! [keys]                                 # written by `hsmls as init`
//! root = "pkcs11:token=…;object=…;id=…"
//! issuing = "pkcs11:…"
//! log = "pkcs11:…"
//! ```
//!
//! Relative paths are relative to the configuration file's folder.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use hsmls_credentials::Clock;
use hsmls_custody::{KeyCustody, KeyRef, KeySpec, SignatureScheme};
use serde::{Deserialize, Serialize};

use crate::ca::{Ca, CaError, CaProfile};
use crate::service::{AuthService, ServiceConfig};
use crate::store::Store;

/// A configuration or state-directory failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The configuration does not parse.
    #[error("bad AS configuration: {0}")]
    Parse(String),
    /// `init` was asked for an AS that has keys already.
    #[error("the AS is already initialised (its config names keys)")]
    AlreadyInitialised,
    /// The AS has not been initialised.
    #[error("the AS has no keys: run `hsmls as init` first")]
    NotInitialised,
    /// The CA failed.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The token failed.
    #[error(transparent)]
    Custody(#[from] hsmls_custody::CustodyError),
}

/// The PKCS#11 URIs of the AS's keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyUris {
    /// The root CA key.
    pub root: String,
    /// The issuing CA key.
    pub issuing: String,
    /// The transparency log's checkpoint key.
    pub log: String,
}

/// The AS configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AsConfig {
    /// The PKCS#11 configuration (module, token, PIN source).
    pub pkcs11_config: PathBuf,
    /// The address to listen on.
    pub listen: String,
    /// The AS's base URL as clients reach it.
    pub public_url: String,
    /// The DNS names and IP addresses of the TLS certificate.
    pub tls_names: Vec<String>,
    /// Where certificates, the TLS key and the SQLite file live.
    pub state_dir: PathBuf,
    /// `sqlite` (the file `as.db` in the state directory) or a
    /// `postgres://` URL.
    pub database: String,
    /// Leaf certificate lifetime, days.
    #[serde(default = "default_lifetime")]
    pub leaf_lifetime_days: u64,
    /// The transparency log's origin.
    #[serde(default = "default_origin")]
    pub log_origin: String,
    /// The organisation name in the CA certificates.
    #[serde(default = "default_ca_name")]
    pub ca_name: String,
    /// The keys, once `init` has run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<KeyUris>,
    #[serde(skip)]
    base: PathBuf,
}

fn default_lifetime() -> u64 {
    7
}
fn default_origin() -> String {
    "hsmls.invalid/as-log".into()
}
fn default_ca_name() -> String {
    "hsmls AS".into()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ConfigError + '_ {
    move |source| ConfigError::Io {
        path: path.to_owned(),
        source,
    }
}

/// PEM armour (RFC 7468) of DER bytes.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DER bytes inside the first PEM block of `text`.
pub fn unpem(text: &str) -> Option<Vec<u8>> {
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

impl AsConfig {
    /// Reads the configuration at `path`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        let mut config: AsConfig =
            toml::from_str(&text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(config)
    }

    /// Writes the configuration to `path`.
    pub fn write(&self, path: &Path) -> Result<(), ConfigError> {
        let text = toml::to_string(self).map_err(|e| ConfigError::Parse(e.to_string()))?;
        std::fs::write(path, text).map_err(io(path))
    }

    /// A path of the configuration, resolved against its folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base.join(p)
        }
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.resolve(&self.state_dir)
    }

    /// The PKCS#11 configuration file.
    pub fn pkcs11_config_path(&self) -> PathBuf {
        self.resolve(&self.pkcs11_config)
    }

    /// The SQLite file (when `database` is `sqlite`).
    pub fn sqlite_path(&self) -> PathBuf {
        self.state_dir().join("as.db")
    }

    /// The service settings.
    pub fn service_config(&self) -> ServiceConfig {
        let mut c = ServiceConfig::new(&self.public_url);
        c.leaf_lifetime = self.leaf_lifetime_days * 86_400;
        c.log_origin = self.log_origin.clone();
        c
    }

    fn profile(&self) -> CaProfile {
        CaProfile {
            name: self.ca_name.clone(),
            ..CaProfile::default()
        }
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, ConfigError> {
        let path = self.state_dir().join(name);
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        unpem(&text).ok_or_else(|| ConfigError::Parse(format!("{}: not PEM", path.display())))
    }

    fn write_state(&self, name: &str, text: &str, private: bool) -> Result<(), ConfigError> {
        let path = self.state_dir().join(name);
        if private {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .map_err(io(&path))?;
            f.write_all(text.as_bytes()).map_err(io(&path))
        } else {
            std::fs::write(&path, text).map_err(io(&path))
        }
    }

    /// `hsmls as init`: generates the root, issuing and log keys in the
    /// token (`custody`), writes `root.pem`, `issuing.pem`, the TLS
    /// certificate chain `tls.pem` and its key `tls.key` (mode 0600; the
    /// TLS key is a software key: see docs/authentication-service.md) into
    /// the state directory, and the keys' URIs into this configuration,
    /// saved at `path`.
    pub fn init(
        &mut self,
        path: &Path,
        custody: Arc<dyn KeyCustody>,
        now: u64,
    ) -> Result<Ca, ConfigError> {
        if self.keys.is_some() {
            return Err(ConfigError::AlreadyInitialised);
        }
        let dir = self.state_dir();
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let ca = Ca::create(custody.clone(), self.profile(), now)?;
        let log = custody.generate(KeySpec::Signature(SignatureScheme::EcdsaSecp256r1Sha256))?;
        self.write_state("root.pem", &pem("CERTIFICATE", ca.root_der()), false)?;
        self.write_state("issuing.pem", &pem("CERTIFICATE", ca.issuing_der()), false)?;
        self.write_state(
            "log.pub",
            &pem(
                "PUBLIC KEY",
                &rcgen::PublicKeyData::subject_public_key_info(
                    &hsmls_credentials::csr::P256PublicKey(log.public_key().as_bytes().to_vec()),
                ),
            ),
            false,
        )?;
        self.issue_tls(&ca, now)?;
        self.keys = Some(KeyUris {
            root: ca.root_key().uri().to_owned(),
            issuing: ca.issuing_key().uri().to_owned(),
            log: log.uri().to_owned(),
        });
        self.write(path)?;
        Ok(ca)
    }

    /// Issues a new TLS key and certificate (one year) from the CA.
    pub fn issue_tls(&self, ca: &Ca, now: u64) -> Result<(), ConfigError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| ConfigError::Ca(CaError::Build(e.to_string())))?;
        let cert = ca.issue_tls(&self.tls_names, &key, now, 365 * 86_400)?;
        self.write_state(
            "tls.pem",
            &(pem("CERTIFICATE", &cert) + &pem("CERTIFICATE", ca.issuing_der())),
            false,
        )?;
        let key_pem = zeroize::Zeroizing::new(key.serialize_pem());
        self.write_state("tls.key", &key_pem, true)
    }

    /// The CA and the log key, found in the token by their URIs.
    pub fn load(&self, custody: Arc<dyn KeyCustody>) -> Result<(Ca, KeyRef), ConfigError> {
        let keys = self.keys.as_ref().ok_or(ConfigError::NotInitialised)?;
        let ca = Ca::load(
            custody.clone(),
            self.profile(),
            &keys.root,
            &keys.issuing,
            self.read("root.pem")?,
            self.read("issuing.pem")?,
        )?;
        let log = custody.find(&keys.log)?;
        Ok((ca, log))
    }

    /// The service over `store`.
    pub fn service<S: Store>(
        &self,
        custody: Arc<dyn KeyCustody>,
        store: S,
        clock: Arc<dyn Clock>,
    ) -> Result<AuthService<S>, ConfigError> {
        let (ca, log) = self.load(custody)?;
        AuthService::new(store, ca, log, self.service_config(), clock)
            .map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// The TLS server configuration from `tls.pem` and `tls.key`.
    pub fn tls(&self) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
        let path = self.state_dir().join("tls.pem");
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let chain: Vec<Vec<u8>> = text
            .split_inclusive("-----END CERTIFICATE-----\n")
            .filter_map(unpem)
            .collect();
        let key = zeroize::Zeroizing::new(self.read("tls.key")?);
        crate::http::tls_config(chain, key.to_vec()).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// A fresh configuration (no keys yet) whose relative paths resolve
    /// against `base`.
    pub fn new(base: &Path, pkcs11_config: PathBuf, state_dir: PathBuf, listen: &str) -> Self {
        AsConfig {
            pkcs11_config,
            listen: listen.to_owned(),
            public_url: format!("https://{listen}"),
            tls_names: vec!["localhost".into(), "127.0.0.1".into()],
            state_dir,
            database: "sqlite".into(),
            leaf_lifetime_days: default_lifetime(),
            log_origin: default_origin(),
            ca_name: default_ca_name(),
            keys: None,
            base: base.to_owned(),
        }
    }
}
