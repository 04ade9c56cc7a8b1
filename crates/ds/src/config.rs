//! The DS configuration file (TOML) of `hsmls ds serve`; see
//! `hsm-config/ds.example.toml`. Relative paths are relative to the
//! file's folder.
//!
//! ```toml
//! listen = "127.0.0.1:8444"
//! tls_cert = "../.ds/tls.pem"        # chain, leaf first (PEM)
//! tls_key = "../.ds/tls.key"         # its private key (PEM)
//! key_file = "../.ds/ds.key"         # the DS key, created if missing
//! database = "sqlite:../.ds/ds.db"   # or a postgres:// URL
//! ds_identity = "ds.example"
//!
//! [credentials]
//! as_root = "../.as/root.pem"        # the AS root (PEM or DER)
//! as_url = "https://127.0.0.1:8443"  # its CRL: fetched, then refreshed
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::server::{CredentialChoice, DsConfig, RateLimit, ServeOptions, StoreChoice};

/// The configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DsFileConfig {
    /// The address to listen on (`host:port`).
    pub listen: String,
    /// The TLS certificate chain (PEM, leaf first).
    pub tls_cert: PathBuf,
    /// The TLS private key (PEM; keep it mode 0600).
    pub tls_key: PathBuf,
    /// The DS key (32 bytes, created with mode 0600 if missing): every
    /// process serving one database must use the same file.
    pub key_file: PathBuf,
    /// `sqlite:PATH` or a `postgres://` URL.
    pub database: String,
    /// The DS's name in authentication challenges.
    #[serde(default = "default_identity")]
    pub ds_identity: String,
    /// Application messages are accepted from this many epochs back.
    #[serde(default)]
    pub app_window: Option<u64>,
    /// Requests per second per client (the burst is twice as many).
    #[serde(default)]
    pub rate_per_second: Option<f64>,
    /// The largest request body (bytes).
    #[serde(default)]
    pub max_body: Option<usize>,
    /// Never-acknowledged messages and Welcomes are deleted after this
    /// many days.
    #[serde(default)]
    pub retention_days: Option<u64>,
    /// Which credentials the DS accepts.
    pub credentials: CredentialsConfig,
    #[serde(skip)]
    base: PathBuf,
}

/// The `[credentials]` section: the AS's X.509 credentials (`as_root`
/// with `as_url` or `as_crl`), or basic credentials (`basic = true`,
/// tests and demos only: they prove no identity).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CredentialsConfig {
    /// The AS root certificate (PEM or DER).
    pub as_root: Option<PathBuf>,
    /// The AS base URL (`https://…`): the CRL is fetched from it.
    pub as_url: Option<String>,
    /// A CRL file (PEM or DER), if no `as_url`.
    pub as_crl: Option<PathBuf>,
    /// Basic credentials.
    #[serde(default)]
    pub basic: bool,
}

fn default_identity() -> String {
    "hsmls-ds".into()
}

impl DsFileConfig {
    /// Reads and checks `path`.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut config: DsFileConfig =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        config.base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        config.serve_options()?;
        Ok(config)
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    /// What `serve` runs with.
    pub fn serve_options(&self) -> Result<ServeOptions, String> {
        let store = if let Some(path) = self.database.strip_prefix("sqlite:") {
            StoreChoice::Sqlite(self.resolve(Path::new(path)))
        } else if self.database.starts_with("postgres://")
            || self.database.starts_with("postgresql://")
        {
            StoreChoice::Postgres(self.database.clone())
        } else {
            return Err(format!(
                "database must be \"sqlite:PATH\" or a postgres:// URL, not {:?}",
                self.database
            ));
        };
        let c = &self.credentials;
        let credentials = match (&c.as_root, c.basic) {
            (Some(root), false) => {
                if c.as_url.is_none() == c.as_crl.is_none() {
                    return Err("[credentials]: as_root needs as_url or as_crl (one)".into());
                }
                CredentialChoice::X509 {
                    root: self.resolve(root),
                    as_url: c.as_url.clone(),
                    crl: c.as_crl.as_deref().map(|p| self.resolve(p)),
                }
            }
            (None, true) if c.as_url.is_none() && c.as_crl.is_none() => CredentialChoice::Basic,
            _ => {
                return Err(
                    "[credentials]: either as_root (the AS's X.509 credentials) or basic = true"
                        .into(),
                );
            }
        };
        let mut config = DsConfig::new(self.ds_identity.clone());
        if let Some(w) = self.app_window {
            config.app_window = w;
        }
        if let Some(r) = self.rate_per_second {
            if !(r > 0.0 && r.is_finite()) {
                return Err("rate_per_second: a positive number".into());
            }
            config.rate_limit = RateLimit {
                per_second: r,
                burst: r * 2.0,
            };
        }
        if let Some(b) = self.max_body {
            config.max_body = b;
        }
        if let Some(d) = self.retention_days {
            config.message_ttl = d.saturating_mul(86_400);
            config.route_ttl = d.saturating_mul(86_400);
        }
        Ok(ServeOptions {
            listen: self.listen.clone(),
            store,
            key_file: self.resolve(&self.key_file),
            tls_cert: self.resolve(&self.tls_cert),
            tls_key: self.resolve(&self.tls_key),
            config,
            credentials,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ServeOptions, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ds.toml");
        std::fs::write(&path, text).unwrap();
        DsFileConfig::from_file(&path).and_then(|c| c.serve_options())
    }

    const BASE: &str = "listen = \"127.0.0.1:0\"\ntls_cert = \"tls.pem\"\n\
        tls_key = \"/abs/tls.key\"\nkey_file = \"ds.key\"\n";

    #[test]
    fn example_forms() {
        let o = parse(&format!(
            "{BASE}database = \"sqlite:ds.db\"\nrate_per_second = 10\n\
             [credentials]\nas_root = \"root.pem\"\nas_url = \"https://as:8443\"\n"
        ))
        .unwrap();
        assert!(
            matches!(o.store, StoreChoice::Sqlite(ref p) if p.ends_with("ds.db") && p.is_absolute())
        );
        assert!(o.tls_cert.is_absolute());
        assert_eq!(o.tls_key, PathBuf::from("/abs/tls.key"));
        assert_eq!(o.config.rate_limit.per_second, 10.0);
        assert!(matches!(
            o.credentials,
            CredentialChoice::X509 { crl: None, .. }
        ));
        let o = parse(&format!(
            "{BASE}database = \"postgres://u:p@h/db\"\n[credentials]\nbasic = true\n"
        ))
        .unwrap();
        assert_eq!(o.credentials, CredentialChoice::Basic);
        assert!(matches!(o.store, StoreChoice::Postgres(_)));
    }

    #[test]
    fn the_example_file_parses() {
        let o = parse(include_str!("../../../hsm-config/ds.example.toml")).unwrap();
        assert!(matches!(
            o.credentials,
            CredentialChoice::X509 {
                as_url: Some(_),
                crl: None,
                ..
            }
        ));
        assert!(matches!(o.store, StoreChoice::Sqlite(_)));
        assert_eq!(o.listen, "127.0.0.1:8444");
    }

    #[test]
    fn refusals() {
        for (text, want) in [
            (
                format!("{BASE}database = \"mysql://x\"\n[credentials]\nbasic = true\n"),
                "database",
            ),
            (
                format!("{BASE}database = \"sqlite:x\"\n[credentials]\n"),
                "either as_root",
            ),
            (
                format!("{BASE}database = \"sqlite:x\"\n[credentials]\nas_root = \"r\"\n"),
                "as_url or as_crl",
            ),
            (
                format!(
                    "{BASE}database = \"sqlite:x\"\n[credentials]\nas_root = \"r\"\nbasic = true\n"
                ),
                "either as_root",
            ),
            (
                format!(
                    "{BASE}database = \"sqlite:x\"\nplain_http = true\n[credentials]\nbasic = true\n"
                ),
                "unknown field",
            ),
            ("listen = \"x\"\n".to_string(), "missing field"),
        ] {
            let e = parse(&text).unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
        }
    }
}
