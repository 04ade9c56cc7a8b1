//! Custody chosen per key kind: signature keys and HPKE keys may live in
//! different backends, and which one is a matter of explicit configuration.
//!
//! RFC 9420 needs two kinds of private key: signature keys (§5.1.2) and
//! HPKE keys (leaf `encryption_key`s and KeyPackage `init_key`s, §5.1.3).
//! A token may hold one kind and not the other: a TPM 2.0 through
//! tpm2-pkcs11 signs with ECDSA P-256 but has no `C_DeriveKey`, so it holds
//! no HPKE key at all; SoftHSM 2.6.1 signs with Ed25519 but has no X25519
//! key agreement. [`CustodyRouter`] sends each key to the home its
//! configuration names (the `hpke_keys` and `hpke_token` settings of the
//! PKCS#11 configuration file):
//!
//! | `hpke_keys` | `hpke_token` unset | `hpke_token = "other.toml"` |
//! | --- | --- | --- |
//! | `"token"` (default) | HPKE keys in the signature token; a KEM it cannot hold is refused | HPKE keys in the HPKE token; a KEM it cannot hold is refused |
//! | `"token-else-software"` | in the signature token, else in process memory | in the HPKE token, else in process memory |
//! | `"software"` | every HPKE key in process memory | refused: [`SplitFault::SoftwareAndHpkeToken`] |
//!
//! Signature keys always live in the signature token ([`KeyHome::Token`]);
//! a key the chosen home cannot hold is refused with
//! [`CustodyError::KeyHomeRefused`]: never a silent fallback.
//!
//! A key's URI says which backend made it: `software:` and
//! `software-sealed:` locators are the software backend's; a `pkcs11:` URI names its token by label
//! (`token=…`, RFC 7512), which picks the signature token or the HPKE
//! token. So `find`, `destroy` and the key operations go to that backend.
//!
//! Software HPKE keys live as long as the process, unless the router is
//! given a [`StateSealer`] (the token's non-extractable AES key,
//! [`CustodyRouter::with_sealed_software_keys`]): an X25519 HPKE key is
//! then generated in memory and its URI carries its private key sealed
//! under that token key (`software-sealed:<KEM id>:<hex>`), the way the
//! token's own HPKE keys carry their wrapped blob, so a process that
//! restarts finds it again from the URI its saved state holds, and a copy
//! of that state is useless without the token. As for the token's HPKE
//! keys, forward secrecy needs every stored copy of a destroyed key's URI
//! deleted.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use zeroize::Zeroizing;

use crate::{
    Capabilities, CustodyError, KemAlgorithm, KeyAttributes, KeyCustody, KeyPurpose, KeyRef,
    KeySpec, SharedSecret, SoftwareCustody, StateSealer,
};

/// The URI prefix of a software HPKE key sealed under the token's key.
const SEALED_PREFIX: &str = "software-sealed:";
/// The additional data of a sealed software HPKE key (with the KEM id).
const SEALED_AAD: &[u8] = b"hsmls software HPKE key";

/// Where HPKE keys live (the `hpke_keys` setting of the PKCS#11
/// configuration file). "The token" is the HPKE token when the
/// configuration names one (`hpke_token`), else the signature token.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HpkeKeyHome {
    /// `"token"` (the default): HPKE keys live in the token only; a KEM the
    /// token cannot hold (X25519 on SoftHSM, every KEM on a TPM) is refused.
    #[default]
    Token,
    /// `"token-else-software"`: HPKE keys live in the token where it can
    /// hold them, and in process memory ([`SoftwareCustody`]) otherwise.
    TokenElseSoftware,
    /// `"software"`: every HPKE key lives in process memory
    /// ([`SoftwareCustody`]), chosen explicitly (e.g. for a signature
    /// token without key agreement and no second token).
    Software,
}

impl HpkeKeyHome {
    /// Every value, in the order the documentation lists them.
    pub const ALL: [HpkeKeyHome; 3] = [
        HpkeKeyHome::Token,
        HpkeKeyHome::TokenElseSoftware,
        HpkeKeyHome::Software,
    ];

    /// The value of `hpke_keys` in the configuration file.
    pub const fn config_value(self) -> &'static str {
        match self {
            HpkeKeyHome::Token => "token",
            HpkeKeyHome::TokenElseSoftware => "token-else-software",
            HpkeKeyHome::Software => "software",
        }
    }

    /// Parses a value of `hpke_keys`.
    pub fn from_config(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.config_value() == value)
    }
}

/// The backend a key lives in, as [`CustodyRouter::home`] chooses it.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyHome {
    /// The signature token (the router's first backend); also the HPKE
    /// keys' home when no HPKE token is configured.
    Token,
    /// Process memory ([`SoftwareCustody`]), allowed by the configuration.
    Software,
    /// The HPKE token named by `hpke_token` (HPKE keys only).
    HpkeToken,
}

/// Why a configuration that splits custody between two tokens is refused
/// (the reason of [`CustodyError::SplitConfig`]).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SplitFault {
    /// `hpke_keys = "software"` and `hpke_token` both set: the HPKE keys
    /// would have two homes.
    #[error(
        "hpke_keys = \"software\" and hpke_token both set: HPKE keys live either in process memory or in the HPKE token"
    )]
    SoftwareAndHpkeToken,
    /// The HPKE token's own configuration sets `hpke_token` or `hpke_keys`:
    /// those belong to the signature token's configuration only.
    #[error(
        "the HPKE token's configuration sets hpke_token or hpke_keys (only the signature token's configuration may)"
    )]
    NestedHpkeToken,
    /// The HPKE token has the signature token's label: key URIs name their
    /// token by label, so the two would be indistinguishable.
    #[error("the HPKE token has the signature token's label")]
    SameTokenLabel,
}

/// "0x0001, 0x0003": the cipher suites whose keys are of `spec`.
pub(crate) fn suite_list(spec: &KeySpec) -> String {
    spec.cipher_suites()
        .iter()
        .map(|s| format!("0x{s:04x}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The configuration rule that refused a key of `purpose` a home.
pub(crate) fn refusal_rule(purpose: &KeyPurpose) -> &'static str {
    match purpose {
        KeyPurpose::Signature => "signature keys live only in the signature token",
        KeyPurpose::Hpke => {
            "the configuration keeps HPKE keys in the token (hpke_keys = \"token\"; \
             \"token-else-software\" or \"software\" would keep them in process memory)"
        }
    }
}

/// The label a `pkcs11:` URI gives its token (`token=…`, RFC 7512 §2.3,
/// percent-decoded), or `None` (another scheme, no such attribute, or a
/// malformed escape).
fn uri_token_label(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("pkcs11:")?;
    let path = rest.split_once('?').map_or(rest, |(p, _)| p);
    let value = path
        .split(';')
        .find_map(|attr| attr.strip_prefix("token="))?;
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The HPKE token of a split router and the label its key URIs carry.
struct HpkeToken {
    custody: Arc<dyn KeyCustody>,
    label: String,
    /// The signature token's label.
    token_label: String,
}

/// A [`KeyCustody`] that sends each key to the backend configured for its
/// kind: signature keys to the signature token; HPKE keys to the HPKE token
/// (or the signature token when none is configured), or to
/// [`SoftwareCustody`] where [`HpkeKeyHome`] allows it.
pub struct CustodyRouter {
    token: Arc<dyn KeyCustody>,
    hpke_token: Option<HpkeToken>,
    /// Present only when the configuration lets software hold HPKE keys.
    software: Option<SoftwareCustody>,
    hpke_keys: HpkeKeyHome,
    capabilities: Capabilities,
    /// Seals software HPKE keys into their URIs, when set.
    sealer: Option<Arc<dyn StateSealer>>,
    /// Sealed URI → the key in `software` (after generation or `find`).
    sealed: RwLock<HashMap<String, KeyRef>>,
}

impl fmt::Debug for CustodyRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustodyRouter")
            .field("token", &self.token)
            .field("hpke_token", &self.hpke_token.as_ref().map(|h| &h.custody))
            .field("hpke_keys", &self.hpke_keys)
            .finish_non_exhaustive()
    }
}

impl CustodyRouter {
    /// A router over one `token` (signature keys, and HPKE keys as
    /// `hpke_keys` says).
    pub fn new(token: Arc<dyn KeyCustody>, hpke_keys: HpkeKeyHome) -> Self {
        Self::build(token, None, hpke_keys)
    }

    /// A router over two tokens: `token` (labelled `token_label`) for
    /// signature keys, `hpke_token` (labelled `hpke_token_label`) for HPKE
    /// keys, with software custody for the HPKE keys `hpke_token` cannot
    /// hold only under [`HpkeKeyHome::TokenElseSoftware`]. Refused with
    /// [`CustodyError::SplitConfig`]: [`SplitFault::SoftwareAndHpkeToken`]
    /// under [`HpkeKeyHome::Software`], [`SplitFault::SameTokenLabel`] when
    /// the labels are equal.
    pub fn split(
        token: Arc<dyn KeyCustody>,
        token_label: &str,
        hpke_token: Arc<dyn KeyCustody>,
        hpke_token_label: &str,
        hpke_keys: HpkeKeyHome,
    ) -> Result<Self, CustodyError> {
        if hpke_keys == HpkeKeyHome::Software {
            return Err(CustodyError::SplitConfig(SplitFault::SoftwareAndHpkeToken));
        }
        if token_label == hpke_token_label {
            return Err(CustodyError::SplitConfig(SplitFault::SameTokenLabel));
        }
        let hpke = HpkeToken {
            custody: hpke_token,
            label: hpke_token_label.to_owned(),
            token_label: token_label.to_owned(),
        };
        Ok(Self::build(token, Some(hpke), hpke_keys))
    }

    fn build(
        token: Arc<dyn KeyCustody>,
        hpke_token: Option<HpkeToken>,
        hpke_keys: HpkeKeyHome,
    ) -> Self {
        let software = match hpke_keys {
            HpkeKeyHome::Token => None,
            HpkeKeyHome::TokenElseSoftware | HpkeKeyHome::Software => Some(SoftwareCustody::new()),
        };
        let mut router = CustodyRouter {
            token,
            hpke_token,
            software,
            hpke_keys,
            capabilities: Capabilities::new(Vec::new(), String::new()),
            sealer: None,
            sealed: RwLock::new(HashMap::new()),
        };
        let mut specs = Vec::new();
        let mut notes = Vec::new();
        for spec in KeySpec::ALL {
            match router.home(spec) {
                Ok(home) => {
                    specs.push(spec);
                    notes.push(format!("{spec} keys: {home:?}"));
                }
                Err(e) => notes.push(format!("{spec} keys: refused ({e})")),
            }
        }
        let mut summary = router.token.capabilities().summary.clone();
        if let Some(h) = &router.hpke_token {
            summary.push_str(&format!(
                " | HPKE token: {}",
                h.custody.capabilities().summary
            ));
        }
        router.capabilities = Capabilities::new(
            specs,
            format!(
                "{summary} | routing (hpke_keys = {:?}{}): {}",
                hpke_keys.config_value(),
                match &router.hpke_token {
                    Some(h) => format!(", hpke_token {:?}", h.label),
                    None => String::new(),
                },
                notes.join("; ")
            ),
        );
        router
    }

    /// Seals the X25519 HPKE keys kept in software under `sealer` (the
    /// token's state-sealing key) into their URIs, so they survive a
    /// restart (module documentation).
    #[must_use]
    pub fn with_sealed_software_keys(mut self, sealer: Arc<dyn StateSealer>) -> Self {
        self.sealer = Some(sealer);
        self
    }

    /// The HPKE key policy.
    pub fn hpke_keys(&self) -> HpkeKeyHome {
        self.hpke_keys
    }

    /// The signature token.
    pub fn token(&self) -> &Arc<dyn KeyCustody> {
        &self.token
    }

    /// The HPKE token, when the configuration names one.
    pub fn hpke_token(&self) -> Option<&Arc<dyn KeyCustody>> {
        self.hpke_token.as_ref().map(|h| &h.custody)
    }

    /// The token HPKE keys go to first: the HPKE token if configured, else
    /// the signature token.
    fn hpke_first(&self) -> (&Arc<dyn KeyCustody>, KeyHome) {
        match &self.hpke_token {
            Some(h) => (&h.custody, KeyHome::HpkeToken),
            None => (&self.token, KeyHome::Token),
        }
    }

    /// Where a key of `spec` lives: a signature key in the signature token
    /// if it can hold it; an HPKE key in software under
    /// [`HpkeKeyHome::Software`], else in the HPKE token (or the signature
    /// token) if it can hold it, else in software under
    /// [`HpkeKeyHome::TokenElseSoftware`]; otherwise
    /// [`CustodyError::KeyHomeRefused`], naming the cipher suites, the key
    /// kind and why.
    pub fn home(&self, spec: KeySpec) -> Result<KeyHome, CustodyError> {
        let refused = |token: &Arc<dyn KeyCustody>| {
            let reason = token.unsupported_reason(spec).unwrap_or_default();
            CustodyError::KeyHomeRefused {
                spec,
                purpose: spec.purpose(),
                reason,
            }
        };
        match spec.purpose() {
            KeyPurpose::Signature => {
                if self.token.capabilities().supports(spec) {
                    Ok(KeyHome::Token)
                } else {
                    Err(refused(&self.token))
                }
            }
            KeyPurpose::Hpke => {
                let software = self
                    .software
                    .as_ref()
                    .is_some_and(|s| s.capabilities().supports(spec));
                let (first, home) = self.hpke_first();
                match self.hpke_keys {
                    HpkeKeyHome::Software if software => Ok(KeyHome::Software),
                    HpkeKeyHome::Software => Err(CustodyError::KeyHomeRefused {
                        spec,
                        purpose: KeyPurpose::Hpke,
                        reason: "software custody cannot hold them".into(),
                    }),
                    _ if first.capabilities().supports(spec) => Ok(home),
                    HpkeKeyHome::TokenElseSoftware if software => Ok(KeyHome::Software),
                    _ => Err(refused(first)),
                }
            }
        }
    }

    fn backend(&self, home: KeyHome) -> Option<&dyn KeyCustody> {
        match home {
            KeyHome::Token => Some(&*self.token),
            KeyHome::HpkeToken => self.hpke_token.as_ref().map(|h| &*h.custody),
            KeyHome::Software => self.software.as_ref().map(|s| s as &dyn KeyCustody),
        }
    }

    fn backend_for(&self, spec: KeySpec) -> Result<&dyn KeyCustody, CustodyError> {
        let home = self.home(spec)?;
        self.backend(home)
            .ok_or_else(|| CustodyError::KeyHomeRefused {
                spec,
                purpose: spec.purpose(),
                reason: format!("no {home:?} backend"),
            })
    }

    /// The home of the key named by `uri`: software for `software:` and
    /// `software-sealed:` locators; for a `pkcs11:` URI of a split router, the token its
    /// `token=` label names (a URI without one goes to the signature
    /// token); the token otherwise.
    pub fn home_of(&self, uri: &str) -> Result<KeyHome, CustodyError> {
        if uri.starts_with("software:") || uri.starts_with(SEALED_PREFIX) {
            return match &self.software {
                Some(_) => Ok(KeyHome::Software),
                // No software custody: no key of this router has such a URI.
                None => Err(CustodyError::KeyNotFound(uri.to_owned())),
            };
        }
        let Some(h) = &self.hpke_token else {
            return Ok(KeyHome::Token);
        };
        match uri_token_label(uri) {
            Some(label) if label == h.label => Ok(KeyHome::HpkeToken),
            Some(label) if label == h.token_label => Ok(KeyHome::Token),
            // A token this router does not use holds no key of it.
            Some(_) => Err(CustodyError::KeyNotFound(uri.to_owned())),
            None => Ok(KeyHome::Token),
        }
    }

    fn sealed_aad(spec: KeySpec) -> Vec<u8> {
        let mut aad = SEALED_AAD.to_vec();
        if let KeySpec::Kem(k) = spec {
            aad.extend_from_slice(&k.kem_id().to_be_bytes());
        }
        aad
    }

    /// A new X25519 key in software, its private key sealed into its URI.
    fn generate_sealed(
        &self,
        software: &SoftwareCustody,
        sealer: &dyn StateSealer,
        spec: KeySpec,
    ) -> Result<KeyRef, CustodyError> {
        let mut private = Zeroizing::new(vec![0u8; spec.private_key_len()]);
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut private);
        let inner = software.import(spec, &private)?;
        let sealed = sealer.seal(&Self::sealed_aad(spec), &private)?;
        let KeySpec::Kem(kem) = spec else {
            return Err(CustodyError::InvalidUri("not an HPKE key".into()));
        };
        let uri = format!(
            "{SEALED_PREFIX}{:04x}:{}",
            kem.kem_id(),
            hex::encode(sealed)
        );
        let key = KeyRef::new(inner.public_key().clone(), uri.clone());
        self.sealed
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uri, inner);
        Ok(key)
    }

    /// The software key behind a sealed URI: known, or unsealed now.
    fn unseal(&self, uri: &str) -> Result<KeyRef, CustodyError> {
        if let Some(k) = self
            .sealed
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(uri)
        {
            return Ok(k.clone());
        }
        let (Some(software), Some(sealer)) = (&self.software, &self.sealer) else {
            return Err(CustodyError::KeyNotFound(uri.to_owned()));
        };
        let bad = || CustodyError::InvalidUri(uri.to_owned());
        let rest = uri.strip_prefix(SEALED_PREFIX).ok_or_else(bad)?;
        let (kem, blob) = rest.split_once(':').ok_or_else(bad)?;
        let kem = u16::from_str_radix(kem, 16).map_err(|_| bad())?;
        let spec = KeySpec::ALL
            .into_iter()
            .find(|s| matches!(s, KeySpec::Kem(k) if k.kem_id() == kem))
            .ok_or_else(bad)?;
        let blob = hex::decode(blob).map_err(|_| bad())?;
        let private = sealer.open(&Self::sealed_aad(spec), &blob)?;
        let inner = software.import(spec, &private)?;
        self.sealed
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uri.to_owned(), inner.clone());
        Ok(inner)
    }

    /// The backend that made the key named by `uri`.
    fn backend_of(&self, uri: &str) -> Result<&dyn KeyCustody, CustodyError> {
        let home = self.home_of(uri)?;
        self.backend(home)
            .ok_or_else(|| CustodyError::KeyNotFound(uri.to_owned()))
    }
}

impl KeyCustody for CustodyRouter {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn unsupported_reason(&self, spec: KeySpec) -> Option<String> {
        self.home(spec).err().map(|e| e.to_string())
    }

    fn generate(&self, spec: KeySpec) -> Result<KeyRef, CustodyError> {
        if let (Ok(KeyHome::Software), Some(software), Some(sealer)) =
            (self.home(spec), &self.software, &self.sealer)
            && spec == KeySpec::Kem(KemAlgorithm::DhKemX25519HkdfSha256)
        {
            return self.generate_sealed(software, sealer.as_ref(), spec);
        }
        self.backend_for(spec)?.generate(spec)
    }

    fn import(&self, spec: KeySpec, private_key: &[u8]) -> Result<KeyRef, CustodyError> {
        self.backend_for(spec)?.import(spec, private_key)
    }

    fn sign_prehash(&self, key: &KeyRef, prehash: &[u8]) -> Result<Vec<u8>, CustodyError> {
        self.backend_of(key.uri())?.sign_prehash(key, prehash)
    }

    fn sign(&self, key: &KeyRef, message: &[u8]) -> Result<Vec<u8>, CustodyError> {
        self.backend_of(key.uri())?.sign(key, message)
    }

    fn dh(&self, key: &KeyRef, peer_public_key: &[u8]) -> Result<SharedSecret, CustodyError> {
        if key.uri().starts_with(SEALED_PREFIX) {
            let inner = self.unseal(key.uri())?;
            return self.backend_of(key.uri())?.dh(&inner, peer_public_key);
        }
        self.backend_of(key.uri())?.dh(key, peer_public_key)
    }

    fn destroy(&self, key: &KeyRef) -> Result<(), CustodyError> {
        if key.uri().starts_with(SEALED_PREFIX) {
            let inner = self.unseal(key.uri())?;
            self.sealed
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(key.uri());
            return self.backend_of(key.uri())?.destroy(&inner);
        }
        self.backend_of(key.uri())?.destroy(key)
    }

    fn find(&self, uri: &str) -> Result<KeyRef, CustodyError> {
        if uri.starts_with(SEALED_PREFIX) {
            let inner = self.unseal(uri)?;
            return Ok(KeyRef::new(inner.public_key().clone(), uri.to_owned()));
        }
        self.backend_of(uri)?.find(uri)
    }

    fn key_attributes(&self, key: &KeyRef) -> Result<KeyAttributes, CustodyError> {
        if key.uri().starts_with(SEALED_PREFIX) {
            let inner = self.unseal(key.uri())?;
            return self.backend_of(key.uri())?.key_attributes(&inner);
        }
        self.backend_of(key.uri())?.key_attributes(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpke_keys_values_round_trip_and_unknown_ones_are_refused() {
        for home in HpkeKeyHome::ALL {
            assert_eq!(HpkeKeyHome::from_config(home.config_value()), Some(home));
        }
        assert_eq!(HpkeKeyHome::from_config("Software"), None);
        assert_eq!(HpkeKeyHome::from_config("hpke-token"), None);
        assert_eq!(HpkeKeyHome::default(), HpkeKeyHome::Token);
    }

    #[test]
    fn the_token_label_is_read_from_pkcs11_uris() {
        for (uri, label) in [
            ("pkcs11:token=hsmls-tpm;object=k;id=%01", Some("hsmls-tpm")),
            (
                "pkcs11:object=k;token=My%20token;type=private",
                Some("My token"),
            ),
            ("pkcs11:token=a?x-hsmls-wrapped=00", Some("a")),
            ("pkcs11:object=k;id=%01", None),
            ("pkcs11:token=bad%2", None),
            ("pkcs11:token=bad%zz", None),
            ("software:3", None),
        ] {
            assert_eq!(uri_token_label(uri).as_deref(), label, "{uri}");
        }
    }

    #[test]
    fn the_refusal_names_the_suites_and_the_key_kind() {
        let e = CustodyError::KeyHomeRefused {
            spec: KeySpec::DHKEM_X25519_HKDF_SHA256,
            purpose: KeyPurpose::Hpke,
            reason: "no X25519".into(),
        };
        let text = e.to_string();
        for part in [
            "0x0001, 0x0003",
            "HPKE",
            "DHKEM(X25519",
            "no X25519",
            "hpke_keys",
        ] {
            assert!(text.contains(part), "{text}");
        }
    }
}
