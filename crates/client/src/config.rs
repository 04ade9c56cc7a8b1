//! The client's configuration: a TOML file (or a value built in code)
//! naming the client's identity, its key custody, its state file, the
//! Authentication Service and the Delivery Service, and the schedule of
//! its background work.
//!
//! ```toml
//! identity = "im:alice@example.org"
//! state_path = "alice.sqlite"
//! cipher_suite = 0x0001            # or its name; default 0x0002
//! join_cipher_suites = []          # other suites whose Welcomes it joins
//!
//! [custody]
//! kind = "pkcs11"
//! config = "pkcs11.toml"          # hsmls-custody's Pkcs11Config file
//!
//! [authentication_service]
//! url = "https://as.example.org:8444"
//! root_certificate = "as/root.pem" # PEM or DER
//! log_public_key = "as/log.pub"    # PEM or DER SubjectPublicKeyInfo
//! log_origin = "hsmls.invalid/as-log"
//!
//! [delivery_service]
//! url = "https://ds.example.org:8443"
//! root_certificate = "ds/root.pem" # PEM or DER: the root of its TLS certificate
//!
//! [key_packages]
//! batch_size = 20
//! low_water_mark = 5
//!
//! [schedule]
//! self_update_interval_secs = 86400
//! crl_refresh_interval_secs = 3600
//! ```
//!
//! Relative paths resolve against the configuration file's folder.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ClientError;

/// The largest configuration file read (bytes).
pub const MAX_CONFIG_LEN: u64 = 64 * 1024;

/// Where the client's private keys live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum CustodyConfig {
    /// A PKCS#11 token (an HSM, a TPM through tpm2-pkcs11, SoftHSM in
    /// tests), configured by an `hsmls-custody` PKCS#11 configuration file
    /// (module, token label, PIN source). Keys survive restarts.
    Pkcs11 {
        /// The PKCS#11 configuration file.
        config: PathBuf,
    },
    /// Keys in process memory (tests and demos only): they are lost when
    /// the process ends, so a restarted client cannot open its saved
    /// groups.
    Software,
}

/// The Authentication Service (RFC 9750 §5.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AsConfig {
    /// Its base URL, `https://host:port`.
    pub url: String,
    /// The AS root certificate (PEM or DER): the trust anchor of the TLS
    /// connection and of every credential.
    pub root_certificate: PathBuf,
    /// The transparency log's public key (PEM or DER
    /// SubjectPublicKeyInfo, P-256): checkpoints are verified with it.
    pub log_public_key: PathBuf,
    /// The log's origin (the first line of its checkpoints).
    #[serde(default = "default_log_origin")]
    pub log_origin: String,
}

fn default_log_origin() -> String {
    "hsmls.invalid/as-log".into()
}

impl AsConfig {
    /// The AS at `url` with its root certificate and log key files (the
    /// default log origin).
    pub fn new(
        url: impl Into<String>,
        root_certificate: impl Into<PathBuf>,
        log_public_key: impl Into<PathBuf>,
    ) -> Self {
        AsConfig {
            url: url.into(),
            root_certificate: root_certificate.into(),
            log_public_key: log_public_key.into(),
            log_origin: default_log_origin(),
        }
    }
}

/// The Delivery Service (RFC 9750 §5.2), reached over TLS only (HTTPS
/// and WebSocket over TLS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DsConfig {
    /// Its base URL (`https://host:port`).
    pub url: String,
    /// The root certificate(s) its TLS certificate chains to (PEM, one or
    /// more blocks, or DER): the only roots trusted for the DS, never the
    /// system's.
    pub root_certificate: PathBuf,
}

impl DsConfig {
    /// The DS at `url` whose TLS certificate chains to `root_certificate`.
    pub fn new(url: impl Into<String>, root_certificate: impl Into<PathBuf>) -> Self {
        DsConfig {
            url: url.into(),
            root_certificate: root_certificate.into(),
        }
    }
}

/// How many KeyPackages the client keeps on the Delivery Service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct KeyPackagePolicy {
    /// How many (non last-resort) KeyPackages a top-up brings the count
    /// back to.
    pub batch_size: u32,
    /// A top-up happens when fewer than this many are left.
    pub low_water_mark: u32,
    /// The lifetime of each KeyPackage, seconds.
    pub lifetime_secs: u64,
}

impl Default for KeyPackagePolicy {
    fn default() -> Self {
        KeyPackagePolicy {
            batch_size: 20,
            low_water_mark: 5,
            lifetime_secs: 28 * 86_400,
        }
    }
}

/// When the background work runs. Every interval is in seconds; 0 turns
/// the task off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Schedule {
    /// How often the client commits a self-update in each group
    /// (post-compromise security, RFC 9750 §8.2.2). Default one day.
    pub self_update_interval_secs: u64,
    /// How often the CRL (and the log checkpoint) is fetched from the AS.
    /// Default one hour.
    pub crl_refresh_interval_secs: u64,
    /// The certificate is renewed this long before it expires. Default
    /// two days.
    pub renew_margin_secs: u64,
    /// How often the KeyPackage counts are checked on the DS. Default ten
    /// minutes.
    pub key_package_check_interval_secs: u64,
    /// How often the maintenance task wakes up to see what is due,
    /// milliseconds. Default one second.
    pub tick_millis: u64,
    /// How often the client fetches when the push connection is down,
    /// milliseconds. Default two seconds.
    pub poll_millis: u64,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            self_update_interval_secs: 86_400,
            crl_refresh_interval_secs: 3_600,
            renew_margin_secs: 2 * 86_400,
            key_package_check_interval_secs: 600,
            tick_millis: 1_000,
            poll_millis: 2_000,
        }
    }
}

impl Schedule {
    /// The maintenance tick.
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_millis.max(10))
    }

    /// The fetch interval without push.
    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.poll_millis.max(10))
    }
}

/// Group policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct GroupPolicy {
    /// How many times a commit that lost its epoch is rebuilt and sent
    /// again before the operation fails.
    pub max_commit_retries: u32,
    /// How many times a request that failed in transport is sent again.
    pub max_transport_retries: u32,
    /// Remove members whose credential the AS revoked (checked after each
    /// CRL refresh).
    pub remove_revoked_members: bool,
    /// Rejoin by external commit a group whose commit cannot be processed
    /// (assisted groups only: the DS serves the GroupInfo).
    pub rejoin_on_fork: bool,
}

impl Default for GroupPolicy {
    fn default() -> Self {
        GroupPolicy {
            max_commit_retries: 5,
            max_transport_retries: 3,
            remove_revoked_members: true,
            rejoin_on_fork: true,
        }
    }
}

/// The MLS cipher suites hsmls implements, by their RFC 9420 §17.1 names.
pub const SUITES: [(u16, &str); 5] = [
    (0x0001, "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519"),
    (0x0002, "MLS_128_DHKEMP256_AES128GCM_SHA256_P256"),
    (
        0x0003,
        "MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519",
    ),
    (0x0005, "MLS_256_DHKEMP521_AES256GCM_SHA512_P521"),
    (0x0007, "MLS_256_DHKEMP384_AES256GCM_SHA384_P384"),
];

/// The suite named `text`: a number (`1`, `0x0001`) or the RFC 9420
/// §17.1 name, one of [`SUITES`].
pub fn parse_suite(text: &str) -> Result<u16, ClientError> {
    let t = text.trim();
    let value = if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u16::from_str_radix(hex, 16).ok()
    } else if let Ok(n) = t.parse::<u16>() {
        Some(n)
    } else {
        SUITES
            .iter()
            .find(|(_, name)| name.eq_ignore_ascii_case(t))
            .map(|(v, _)| *v)
    };
    value
        .filter(|v| SUITES.iter().any(|(s, _)| s == v))
        .ok_or_else(|| {
            ClientError::Config(format!(
                "cipher suite {t:?} is not one of {}",
                SUITES
                    .iter()
                    .map(|(v, n)| format!("0x{v:04x} ({n})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// The name of suite `value` ([`SUITES`]), or `"unknown"`.
pub fn suite_name(value: u16) -> &'static str {
    SUITES
        .iter()
        .find(|(v, _)| *v == value)
        .map_or("unknown", |(_, n)| n)
}

/// A cipher suite in the TOML file: an integer (`cipher_suite = 0x0001`)
/// or a string (a number or the suite's name); written as an integer.
mod suite_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(i64),
        Text(String),
    }

    fn one(raw: Raw) -> Result<u16, String> {
        match raw {
            Raw::Number(n) => super::parse_suite(&n.to_string()),
            Raw::Text(t) => super::parse_suite(&t),
        }
        .map_err(|e| e.to_string())
    }

    pub fn serialize<S: Serializer>(v: &u16, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(*v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
        one(Raw::deserialize(d)?).map_err(serde::de::Error::custom)
    }

    pub mod list {
        use super::*;

        pub fn serialize<S: Serializer>(v: &[u16], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(v.iter())
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u16>, D::Error> {
            Vec::<Raw>::deserialize(d)?
                .into_iter()
                .map(|r| one(r).map_err(serde::de::Error::custom))
                .collect()
        }
    }
}

fn default_suite() -> u16 {
    0x0002
}

/// The whole configuration of one client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The client's identity: the URI its certificate names
    /// (e.g. `im:alice@example.org`), and the name others claim its
    /// KeyPackages by.
    pub identity: String,
    /// The SQLite file of the client's state (sealed groups, KeyPackage
    /// bundles, credential, cursors).
    pub state_path: PathBuf,
    /// The MLS cipher suite of its KeyPackages and of the groups it
    /// creates (`cipher_suite = 0x0001`, or the RFC 9420 §17.1 name;
    /// default 0x0002). With a PKCS#11 token that cannot hold the suite's
    /// HPKE keys (X25519 on SoftHSM: suites 0x0001 and 0x0003), the
    /// PKCS#11 configuration must say `hpke_keys = "token-else-software"`,
    /// or the client refuses to open.
    #[serde(default = "default_suite", with = "suite_serde")]
    pub cipher_suite: u16,
    /// Other suites whose Welcomes the client joins (a Welcome in a suite
    /// neither `cipher_suite` nor listed here is refused with
    /// [`ClientError::WelcomeSuiteRefused`]). Its KeyPackages are of
    /// `cipher_suite` only.
    #[serde(default, with = "suite_serde::list")]
    pub join_cipher_suites: Vec<u16>,
    /// Where the keys live.
    pub custody: CustodyConfig,
    /// The Authentication Service.
    pub authentication_service: AsConfig,
    /// The Delivery Service.
    pub delivery_service: DsConfig,
    /// KeyPackages kept on the DS.
    #[serde(default)]
    pub key_packages: KeyPackagePolicy,
    /// The background work.
    #[serde(default)]
    pub schedule: Schedule,
    /// Group policy.
    #[serde(default)]
    pub groups: GroupPolicy,
}

impl ClientConfig {
    /// A configuration with the default policies.
    pub fn new(
        identity: impl Into<String>,
        state_path: impl Into<PathBuf>,
        custody: CustodyConfig,
        authentication_service: AsConfig,
        delivery_service: DsConfig,
    ) -> Self {
        ClientConfig {
            identity: identity.into(),
            state_path: state_path.into(),
            cipher_suite: default_suite(),
            join_cipher_suites: Vec::new(),
            custody,
            authentication_service,
            delivery_service,
            key_packages: KeyPackagePolicy::default(),
            schedule: Schedule::default(),
            groups: GroupPolicy::default(),
        }
    }

    /// Parses a configuration's TOML text; relative paths resolve against
    /// `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Self, ClientError> {
        let mut c: ClientConfig =
            toml::from_str(text).map_err(|e| ClientError::Config(e.message().to_owned()))?;
        c.resolve(base);
        c.check()?;
        Ok(c)
    }

    /// Reads a configuration file (at most [`MAX_CONFIG_LEN`] bytes).
    pub fn from_file(path: &Path) -> Result<Self, ClientError> {
        let text = read_bounded(path, MAX_CONFIG_LEN)?;
        let text = String::from_utf8(text)
            .map_err(|_| ClientError::Config(format!("{} is not UTF-8", path.display())))?;
        Self::from_toml(&text, path.parent().unwrap_or(Path::new(".")))
    }

    /// The configuration as TOML.
    pub fn to_toml(&self) -> Result<String, ClientError> {
        toml::to_string_pretty(self).map_err(|e| ClientError::Config(e.to_string()))
    }

    fn resolve(&mut self, base: &Path) {
        let r = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        r(&mut self.state_path);
        if let CustodyConfig::Pkcs11 { config } = &mut self.custody {
            r(config);
        }
        r(&mut self.authentication_service.root_certificate);
        r(&mut self.authentication_service.log_public_key);
        r(&mut self.delivery_service.root_certificate);
    }

    /// Checks the values that cannot be right.
    pub fn check(&self) -> Result<(), ClientError> {
        if self.identity.is_empty() || self.identity.len() > hsmls_credentials::MAX_IDENTITY_LEN {
            return Err(ClientError::Config(
                "identity must be 1 to 1024 bytes".into(),
            ));
        }
        for suite in std::iter::once(&self.cipher_suite).chain(&self.join_cipher_suites) {
            parse_suite(&suite.to_string())?;
        }
        if !self.authentication_service.url.starts_with("https://") {
            return Err(ClientError::Config(
                "authentication_service.url must be https://host:port".into(),
            ));
        }
        if !self.delivery_service.url.starts_with("https://") {
            return Err(ClientError::Config(
                "delivery_service.url must be https://host:port (the DS speaks TLS only)".into(),
            ));
        }
        if self.key_packages.batch_size == 0 || self.key_packages.batch_size > 100 {
            return Err(ClientError::Config(
                "key_packages.batch_size must be 1 to 100 (the DS takes 100 per request)".into(),
            ));
        }
        if self.key_packages.low_water_mark > self.key_packages.batch_size {
            return Err(ClientError::Config(
                "key_packages.low_water_mark must not exceed batch_size".into(),
            ));
        }
        if self.key_packages.lifetime_secs < 3_600 {
            return Err(ClientError::Config(
                "key_packages.lifetime_secs must be at least 3600".into(),
            ));
        }
        Ok(())
    }
}

/// Reads at most `max` bytes of a file.
pub(crate) fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, ClientError> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .map_err(|e| ClientError::Config(format!("cannot open {}: {e}", path.display())))?;
    let mut out = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut out)
        .map_err(|e| ClientError::Config(format!("cannot read {}: {e}", path.display())))?;
    if out.len() as u64 > max {
        return Err(ClientError::Config(format!(
            "{} is larger than {max} bytes",
            path.display()
        )));
    }
    Ok(out)
}

/// The PEM text of a PEM (kept whole: every block) or DER certificate
/// file.
pub(crate) fn pem_of(bytes: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine as _;
    if bytes.is_empty() {
        return None;
    }
    if let Ok(t) = std::str::from_utf8(bytes)
        && t.contains("-----BEGIN")
    {
        return Some(bytes.to_vec());
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).ok()?);
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    Some(pem.into_bytes())
}

/// The DER bytes of a PEM (the first block) or DER file.
pub(crate) fn der_of(bytes: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let text = match std::str::from_utf8(bytes) {
        Ok(t) if t.contains("-----BEGIN") => t,
        _ => return (!bytes.is_empty()).then(|| bytes.to_vec()),
    };
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .map(str::trim)
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
identity = "im:alice@hsmls.test"
state_path = "alice.sqlite"

[custody]
kind = "pkcs11"
config = "pkcs11.toml"

[authentication_service]
url = "https://127.0.0.1:8444"
root_certificate = "/etc/as/root.pem"
log_public_key = "log.pub"

[delivery_service]
url = "https://127.0.0.1:8443"
root_certificate = "ds-root.pem"

[key_packages]
batch_size = 10
low_water_mark = 3

[schedule]
self_update_interval_secs = 60
"#;

    #[test]
    fn parses_resolves_and_keeps_defaults() {
        let c = ClientConfig::from_toml(TEXT, Path::new("/home/a")).unwrap();
        assert_eq!(c.identity, "im:alice@hsmls.test");
        assert_eq!(c.state_path, PathBuf::from("/home/a/alice.sqlite"));
        assert_eq!(
            c.custody,
            CustodyConfig::Pkcs11 {
                config: PathBuf::from("/home/a/pkcs11.toml")
            }
        );
        assert_eq!(
            c.authentication_service.root_certificate,
            PathBuf::from("/etc/as/root.pem")
        );
        assert_eq!(c.authentication_service.log_origin, "hsmls.invalid/as-log");
        assert_eq!(c.delivery_service.url, "https://127.0.0.1:8443");
        assert_eq!(
            c.delivery_service.root_certificate,
            PathBuf::from("/home/a/ds-root.pem")
        );
        assert_eq!(
            (c.key_packages.batch_size, c.key_packages.low_water_mark),
            (10, 3)
        );
        assert_eq!(c.key_packages.lifetime_secs, 28 * 86_400);
        assert_eq!(c.schedule.self_update_interval_secs, 60);
        assert_eq!(c.schedule.crl_refresh_interval_secs, 3_600);
        assert_eq!(c.groups, GroupPolicy::default());
        // Round trip through TOML.
        let again = ClientConfig::from_toml(&c.to_toml().unwrap(), Path::new("/x")).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn refuses_what_cannot_work() {
        let cases = [
            (
                TEXT.replace("https://127", "http://127"),
                "authentication_service.url",
            ),
            (
                TEXT.replace("https://127.0.0.1:8443", "http://127.0.0.1:8443"),
                "delivery_service.url",
            ),
            (
                TEXT.replace("root_certificate = \"ds-root.pem\"\n", ""),
                "missing field `root_certificate`",
            ),
            (
                TEXT.replace("batch_size = 10", "batch_size = 0"),
                "batch_size",
            ),
            (
                TEXT.replace("low_water_mark = 3", "low_water_mark = 11"),
                "low_water_mark",
            ),
            (
                TEXT.replace("identity = \"im:alice@hsmls.test\"", "identity = \"\""),
                "identity",
            ),
            (
                TEXT.replace("[delivery_service]", "[delivery_service]\nfoo = 1"),
                "unknown field",
            ),
        ];
        for (text, what) in cases {
            match ClientConfig::from_toml(&text, Path::new("/")) {
                Err(ClientError::Config(m)) => assert!(m.contains(what), "{what}: {m}"),
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    #[test]
    fn pem_and_der() {
        let der = vec![0x30, 0x03, 0x02, 0x01, 0x05];
        use base64::Engine as _;
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64::engine::general_purpose::STANDARD.encode(&der)
        );
        assert_eq!(der_of(pem.as_bytes()), Some(der.clone()));
        assert_eq!(pem_of(pem.as_bytes()), Some(pem.clone().into_bytes()));
        assert_eq!(pem_of(&der), Some(pem.clone().into_bytes()));
        assert_eq!(pem_of(b""), None);
        assert_eq!(der_of(&der), Some(der));
        assert_eq!(der_of(b""), None);
        assert_eq!(der_of(b"-----BEGIN X-----\n!!!\n-----END X-----\n"), None);
    }
}
