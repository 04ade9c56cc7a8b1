//! The PKCS#11 backend's configuration: which module, which token, where the
//! user PIN comes from.
//!
//! The PIN is read from a file or an environment variable, never from a
//! command line, and is held only in zeroizing memory while logging in.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::{CustodyError, HpkeKeyHome, SplitFault};

/// The environment variable naming the configuration file
/// (`scripts/setup-hsm.sh` writes `.hsm/pkcs11.toml`).
pub const CONFIG_ENV: &str = "HSMLS_PKCS11_CONFIG";

/// Default number of PKCS#11 sessions kept open.
pub const DEFAULT_POOL_SIZE: usize = 4;
/// Largest accepted pool size.
pub const MAX_POOL_SIZE: usize = 64;
/// Default label of the token-resident AES key that wraps HPKE keys.
pub const DEFAULT_WRAPPING_KEY_LABEL: &str = "hsmls-hpke-wrap";
/// Default label of the token-resident AES key that seals state at rest.
pub const DEFAULT_STATE_SEAL_KEY_LABEL: &str = "hsmls-state-seal";

/// PINs longer than this are rejected (PKCS#11 tokens use short PINs; this
/// bounds what is read from a file).
const MAX_PIN_LEN: usize = 256;
/// Configuration files larger than this are rejected.
const MAX_CONFIG_LEN: u64 = 64 * 1024;

/// Where the user PIN comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum PinSource {
    /// A file holding the PIN; one trailing newline is ignored.
    File(PathBuf),
    /// The name of an environment variable holding the PIN.
    Env(String),
}

impl fmt::Debug for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names the source, never the PIN.
        match self {
            PinSource::File(p) => write!(f, "PinSource::File({})", p.display()),
            PinSource::Env(v) => write!(f, "PinSource::Env({v})"),
        }
    }
}

impl PinSource {
    /// Reads the PIN. The returned buffer is zeroized on drop.
    pub(crate) fn read(&self) -> Result<Zeroizing<Vec<u8>>, CustodyError> {
        let mut pin = match self {
            PinSource::File(path) => {
                let file = std::fs::File::open(path).map_err(|e| {
                    CustodyError::Config(format!("cannot open PIN file {}: {e}", path.display()))
                })?;
                let mut buf = Zeroizing::new(Vec::with_capacity(MAX_PIN_LEN + 2));
                file.take(MAX_PIN_LEN as u64 + 2)
                    .read_to_end(&mut buf)
                    .map_err(|e| {
                        CustodyError::Config(format!(
                            "cannot read PIN file {}: {e}",
                            path.display()
                        ))
                    })?;
                buf
            }
            PinSource::Env(var) => match std::env::var_os(var) {
                Some(v) => Zeroizing::new(v.into_encoded_bytes()),
                None => {
                    return Err(CustodyError::Config(format!(
                        "PIN environment variable {var} is not set"
                    )));
                }
            },
        };
        if pin.last() == Some(&b'\n') {
            pin.pop();
            if pin.last() == Some(&b'\r') {
                pin.pop();
            }
        }
        if pin.is_empty() {
            return Err(CustodyError::Config("the PIN is empty".into()));
        }
        if pin.len() > MAX_PIN_LEN {
            return Err(CustodyError::Config(format!(
                "the PIN is longer than {MAX_PIN_LEN} bytes"
            )));
        }
        Ok(pin)
    }
}

/// Configuration of [`Pkcs11Custody`](super::Pkcs11Custody).
///
/// File format (TOML), see `hsm-config/pkcs11.example.toml`:
///
/// ```toml
/// module = "/usr/lib/softhsm/libsofthsm2.so"
/// token_label = "hsmls-test"
/// pin_file = "/path/to/user.pin"      # or: pin_env = "HSMLS_PKCS11_PIN"
/// pool_size = 4                       # optional
/// wrapping_key_label = "hsmls-hpke-wrap"  # optional
/// state_seal_key_label = "hsmls-state-seal"  # optional
/// hpke_keys = "token"                 # optional: or "token-else-software", "software"
/// hpke_token = "hpke-pkcs11.toml"     # optional: another token for HPKE keys
/// ```
///
/// Relative paths are resolved against the directory of the file.
///
/// `hpke_token` names a second configuration file of this format: the
/// token that holds the HPKE keys (and the state-sealing key when this
/// token cannot seal), while this one holds the signature keys; that file
/// may set neither `hpke_keys` nor `hpke_token` ([`SplitFault::NestedHpkeToken`]).
/// `hpke_keys = "software"` with `hpke_token` is refused
/// ([`SplitFault::SoftwareAndHpkeToken`]). See
/// [`ConfiguredCustody`](super::ConfiguredCustody).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module (shared library).
    pub module: PathBuf,
    /// Label of the token to use.
    pub token_label: String,
    /// Where the user PIN comes from.
    pub pin: PinSource,
    /// Number of sessions kept open for concurrent callers (1 to 64).
    pub pool_size: usize,
    /// Label of the token-resident AES key that wraps HPKE keys.
    pub wrapping_key_label: String,
    /// Label of the token-resident AES-256 key that seals state at rest
    /// ([`Pkcs11Custody::state_sealer`](super::Pkcs11Custody::state_sealer)).
    pub state_seal_key_label: String,
    /// Where the HPKE keys of a KEM the token cannot hold may live
    /// (`hpke_keys` in the file; default: in the token only, so such keys
    /// are refused). Read by [`CustodyRouter`](crate::CustodyRouter).
    pub hpke_keys: HpkeKeyHome,
    /// The configuration file of the token that holds the HPKE keys
    /// (`hpke_token` in the file, resolved against its directory); `None`:
    /// HPKE keys go to this token (or software, as `hpke_keys` says).
    pub hpke_token: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    module: PathBuf,
    token_label: String,
    pin_file: Option<PathBuf>,
    pin_env: Option<String>,
    pool_size: Option<usize>,
    wrapping_key_label: Option<String>,
    state_seal_key_label: Option<String>,
    hpke_keys: Option<String>,
    hpke_token: Option<PathBuf>,
}

impl Pkcs11Config {
    /// A configuration with the default pool size and wrapping-key label.
    pub fn new(module: impl Into<PathBuf>, token_label: impl Into<String>, pin: PinSource) -> Self {
        Pkcs11Config {
            module: module.into(),
            token_label: token_label.into(),
            pin,
            pool_size: DEFAULT_POOL_SIZE,
            wrapping_key_label: DEFAULT_WRAPPING_KEY_LABEL.into(),
            state_seal_key_label: DEFAULT_STATE_SEAL_KEY_LABEL.into(),
            hpke_keys: HpkeKeyHome::Token,
            hpke_token: None,
        }
    }

    /// Parses a configuration file's text; `base` resolves relative paths.
    pub fn from_toml(text: &str, base: &Path) -> Result<Self, CustodyError> {
        let file: ConfigFile =
            toml::from_str(text).map_err(|e| CustodyError::Config(e.message().to_owned()))?;
        let resolve = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
        let pin = match (file.pin_file, file.pin_env) {
            (Some(path), None) => PinSource::File(resolve(path)),
            (None, Some(var)) if !var.is_empty() => PinSource::Env(var),
            (None, Some(_)) => return Err(CustodyError::Config("pin_env is empty".into())),
            (None, None) => {
                return Err(CustodyError::Config(
                    "set exactly one of pin_file or pin_env".into(),
                ));
            }
            (Some(_), Some(_)) => {
                return Err(CustodyError::Config(
                    "set only one of pin_file or pin_env".into(),
                ));
            }
        };
        let pool_size = file.pool_size.unwrap_or(DEFAULT_POOL_SIZE);
        if !(1..=MAX_POOL_SIZE).contains(&pool_size) {
            return Err(CustodyError::Config(format!(
                "pool_size must be between 1 and {MAX_POOL_SIZE}"
            )));
        }
        if file.token_label.is_empty() || file.token_label.len() > 32 {
            return Err(CustodyError::Config(
                "token_label must be 1 to 32 bytes".into(),
            ));
        }
        let hpke_keys = match file.hpke_keys.as_deref() {
            None => HpkeKeyHome::Token,
            Some(value) => HpkeKeyHome::from_config(value).ok_or_else(|| {
                CustodyError::Config(format!(
                    "hpke_keys must be \"token\", \"token-else-software\" or \"software\", not {value:?}"
                ))
            })?,
        };
        if hpke_keys == HpkeKeyHome::Software && file.hpke_token.is_some() {
            return Err(CustodyError::SplitConfig(SplitFault::SoftwareAndHpkeToken));
        }
        Ok(Pkcs11Config {
            module: resolve(file.module),
            token_label: file.token_label,
            pin,
            pool_size,
            wrapping_key_label: file
                .wrapping_key_label
                .unwrap_or_else(|| DEFAULT_WRAPPING_KEY_LABEL.into()),
            state_seal_key_label: file
                .state_seal_key_label
                .unwrap_or_else(|| DEFAULT_STATE_SEAL_KEY_LABEL.into()),
            hpke_keys,
            hpke_token: file.hpke_token.map(resolve),
        })
    }

    /// Reads the configuration of the HPKE token (`hpke_token`), if one is
    /// named. Refused with [`SplitFault::NestedHpkeToken`] if that file
    /// sets `hpke_keys` or `hpke_token` itself.
    pub fn hpke_token_config(&self) -> Result<Option<Pkcs11Config>, CustodyError> {
        let Some(path) = &self.hpke_token else {
            return Ok(None);
        };
        let text = read_bounded(path)?;
        let nested: ConfigFile =
            toml::from_str(&text).map_err(|e| CustodyError::Config(e.message().to_owned()))?;
        if nested.hpke_keys.is_some() || nested.hpke_token.is_some() {
            return Err(CustodyError::SplitConfig(SplitFault::NestedHpkeToken));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, base).map(Some)
    }

    /// Reads a configuration file.
    pub fn from_file(path: &Path) -> Result<Self, CustodyError> {
        let text = read_bounded(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, base)
    }

    /// Reads the file named by the `HSMLS_PKCS11_CONFIG` environment variable.
    pub fn from_env() -> Result<Self, CustodyError> {
        match std::env::var_os(CONFIG_ENV) {
            Some(path) => Self::from_file(Path::new(&path)),
            None => Err(CustodyError::Config(format!(
                "{CONFIG_ENV} is not set (run scripts/setup-hsm.sh and export the variables it prints)"
            ))),
        }
    }
}

/// A configuration file's text, at most `MAX_CONFIG_LEN` bytes.
fn read_bounded(path: &Path) -> Result<String, CustodyError> {
    let file = std::fs::File::open(path)
        .map_err(|e| CustodyError::Config(format!("cannot open {}: {e}", path.display())))?;
    let mut text = String::new();
    file.take(MAX_CONFIG_LEN + 1)
        .read_to_string(&mut text)
        .map_err(|e| CustodyError::Config(format!("cannot read {}: {e}", path.display())))?;
    if text.len() as u64 > MAX_CONFIG_LEN {
        return Err(CustodyError::Config(format!(
            "{} is larger than {MAX_CONFIG_LEN} bytes",
            path.display()
        )));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_with_relative_paths() {
        let c = Pkcs11Config::from_toml(
            "module = \"/m.so\"\ntoken_label = \"t\"\npin_file = \"user.pin\"\npool_size = 2\n",
            Path::new("/etc/hsmls"),
        )
        .unwrap();
        assert_eq!(c.module, PathBuf::from("/m.so"));
        assert_eq!(c.pin, PinSource::File(PathBuf::from("/etc/hsmls/user.pin")));
        assert_eq!(c.pool_size, 2);
        assert_eq!(c.wrapping_key_label, DEFAULT_WRAPPING_KEY_LABEL);
        assert_eq!(c.state_seal_key_label, DEFAULT_STATE_SEAL_KEY_LABEL);
        let c = Pkcs11Config::from_toml(
            "module = \"/m.so\"\ntoken_label = \"t\"\npin_env = \"P\"\nstate_seal_key_label = \"seal-2\"\n",
            Path::new("/etc/hsmls"),
        )
        .unwrap();
        assert_eq!(c.state_seal_key_label, "seal-2");
        assert_eq!(c.hpke_keys, HpkeKeyHome::Token);
        let c = Pkcs11Config::from_toml(
            "module = \"/m.so\"\ntoken_label = \"t\"\npin_env = \"P\"\nhpke_keys = \"token-else-software\"\n",
            Path::new("/etc/hsmls"),
        )
        .unwrap();
        assert_eq!(c.hpke_keys, HpkeKeyHome::TokenElseSoftware);
    }

    #[test]
    fn rejects_two_pin_sources_unknown_keys_and_bad_pool() {
        for text in [
            "module = \"m\"\ntoken_label = \"t\"\npin_file = \"p\"\npin_env = \"E\"\n",
            "module = \"m\"\ntoken_label = \"t\"\n",
            "module = \"m\"\ntoken_label = \"t\"\npin = \"1234\"\n",
            "module = \"m\"\ntoken_label = \"t\"\npin_env = \"E\"\npool_size = 0\n",
            "module = \"m\"\ntoken_label = \"\"\npin_env = \"E\"\n",
            "module = \"m\"\ntoken_label = \"t\"\npin_env = \"E\"\nhpke_keys = \"hpke-token\"\n",
            "not toml at all [",
        ] {
            assert!(
                matches!(
                    Pkcs11Config::from_toml(text, Path::new(".")),
                    Err(CustodyError::Config(_))
                ),
                "{text}"
            );
        }
    }

    #[test]
    fn hpke_token_is_resolved_and_its_rules_are_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let head = "module = \"/m.so\"\ntoken_label = \"sig\"\npin_env = \"P\"\n";
        let c = Pkcs11Config::from_toml(&format!("{head}hpke_keys = \"software\"\n"), dir.path())
            .unwrap();
        assert_eq!(c.hpke_keys, HpkeKeyHome::Software);
        assert_eq!(c.hpke_token_config().unwrap(), None);

        // "software" and an HPKE token: two homes for the HPKE keys.
        let e = Pkcs11Config::from_toml(
            &format!("{head}hpke_keys = \"software\"\nhpke_token = \"h.toml\"\n"),
            dir.path(),
        );
        assert!(
            matches!(
                e,
                Err(CustodyError::SplitConfig(SplitFault::SoftwareAndHpkeToken))
            ),
            "{e:?}"
        );

        let main = dir.path().join("sig.toml");
        std::fs::write(&main, format!("{head}hpke_token = \"hpke/h.toml\"\n")).unwrap();
        std::fs::create_dir(dir.path().join("hpke")).unwrap();
        let hpke = dir.path().join("hpke/h.toml");
        std::fs::write(
            &hpke,
            "module = \"m.so\"\ntoken_label = \"kem\"\npin_file = \"pin\"\n",
        )
        .unwrap();
        let c = Pkcs11Config::from_file(&main).unwrap();
        assert_eq!(c.hpke_token.as_deref(), Some(hpke.as_path()));
        let h = c.hpke_token_config().unwrap().unwrap();
        assert_eq!(h.token_label, "kem");
        // The HPKE token's paths resolve against its own folder.
        assert_eq!(h.module, dir.path().join("hpke/m.so"));
        assert_eq!(h.pin, PinSource::File(dir.path().join("hpke/pin")));

        // The HPKE token's file may not route keys itself.
        for extra in ["hpke_keys = \"token\"\n", "hpke_token = \"x.toml\"\n"] {
            std::fs::write(
                &hpke,
                format!("module = \"m.so\"\ntoken_label = \"kem\"\npin_env = \"P\"\n{extra}"),
            )
            .unwrap();
            let e = c.hpke_token_config();
            assert!(
                matches!(
                    e,
                    Err(CustodyError::SplitConfig(SplitFault::NestedHpkeToken))
                ),
                "{extra}: {e:?}"
            );
        }
        std::fs::remove_file(&hpke).unwrap();
        assert!(matches!(
            c.hpke_token_config(),
            Err(CustodyError::Config(_))
        ));
    }

    #[test]
    fn pin_file_trailing_newline_is_stripped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        std::fs::write(&path, b"1234\r\n").unwrap();
        let pin = PinSource::File(path.clone()).read().unwrap();
        assert_eq!(&pin[..], b"1234");
        std::fs::write(&path, b"\n").unwrap();
        assert!(matches!(
            PinSource::File(path).read(),
            Err(CustodyError::Config(_))
        ));
    }

    #[test]
    fn debug_never_shows_pin() {
        let s = format!("{:?}", PinSource::Env("HSMLS_PIN".into()));
        assert_eq!(s, "PinSource::Env(HSMLS_PIN)");
    }
}
