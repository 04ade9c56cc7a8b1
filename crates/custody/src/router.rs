//! Custody chosen per key kind: signature keys and HPKE keys may live in
//! different backends, and which one is a matter of explicit configuration.
//!
//! RFC 9420 needs two kinds of private key: signature keys (§5.1.2) and
//! HPKE keys (leaf `encryption_key`s and KeyPackage `init_key`s, §5.1.3).
//! A token may hold one kind and not the other: SoftHSM 2.6.1 signs with
//! Ed25519 but has no X25519 key agreement, so the HPKE keys of suites
//! 0x0001 and 0x0003 cannot live in it. [`CustodyRouter`] puts every key
//! it can in the token and, only where the configuration says so
//! ([`HpkeKeyHome::TokenElseSoftware`], `hpke_keys = "token-else-software"`
//! in the PKCS#11 configuration file), keeps the HPKE keys the token cannot
//! hold in a [`SoftwareCustody`]. Otherwise such a key is refused with
//! [`CustodyError::KeyHomeRefused`]: never a silent fallback. Signature keys
//! always live in the token.
//!
//! A key's URI says which backend made it (`software:` locators are the
//! software backend's, everything else the token's), so `find`, `destroy`
//! and the key operations go to that backend.

use std::fmt;
use std::sync::Arc;

use crate::{
    Capabilities, CustodyError, KeyAttributes, KeyCustody, KeyPurpose, KeyRef, KeySpec,
    SharedSecret, SoftwareCustody,
};

/// Where the HPKE keys of a KEM the token cannot hold may live (the
/// `hpke_keys` setting of the PKCS#11 configuration file).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HpkeKeyHome {
    /// `"token"` (the default): HPKE keys live in the token only; a KEM the
    /// token cannot hold (X25519 on SoftHSM) is refused.
    #[default]
    Token,
    /// `"token-else-software"`: HPKE keys live in the token where it can
    /// hold them, and in process memory ([`SoftwareCustody`]) otherwise.
    TokenElseSoftware,
}

impl HpkeKeyHome {
    /// The value of `hpke_keys` in the configuration file.
    pub const fn config_value(self) -> &'static str {
        match self {
            HpkeKeyHome::Token => "token",
            HpkeKeyHome::TokenElseSoftware => "token-else-software",
        }
    }

    /// Parses a value of `hpke_keys`.
    pub fn from_config(value: &str) -> Option<Self> {
        [HpkeKeyHome::Token, HpkeKeyHome::TokenElseSoftware]
            .into_iter()
            .find(|h| h.config_value() == value)
    }
}

/// The backend a key lives in, as [`CustodyRouter::home`] chooses it.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyHome {
    /// The token (the router's first backend).
    Token,
    /// Process memory ([`SoftwareCustody`]), allowed by the configuration.
    Software,
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
        KeyPurpose::Signature => "signature keys live only in the token",
        KeyPurpose::Hpke => {
            "the configuration keeps HPKE keys in the token (hpke_keys = \"token\"; \
             \"token-else-software\" would keep them in process memory)"
        }
    }
}

/// A [`KeyCustody`] that sends each key to the backend configured for its
/// kind: the token for every key it can hold, [`SoftwareCustody`] for the
/// HPKE keys it cannot, when [`HpkeKeyHome::TokenElseSoftware`] allows it.
pub struct CustodyRouter {
    token: Arc<dyn KeyCustody>,
    /// Present only when the configuration lets software hold HPKE keys.
    software: Option<SoftwareCustody>,
    hpke_keys: HpkeKeyHome,
    capabilities: Capabilities,
}

impl fmt::Debug for CustodyRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustodyRouter")
            .field("token", &self.token)
            .field("hpke_keys", &self.hpke_keys)
            .finish_non_exhaustive()
    }
}

impl CustodyRouter {
    /// A router over `token` with the HPKE key policy `hpke_keys`.
    pub fn new(token: Arc<dyn KeyCustody>, hpke_keys: HpkeKeyHome) -> Self {
        let software = match hpke_keys {
            HpkeKeyHome::Token => None,
            HpkeKeyHome::TokenElseSoftware => Some(SoftwareCustody::new()),
        };
        let mut router = CustodyRouter {
            token,
            software,
            hpke_keys,
            capabilities: Capabilities::new(Vec::new(), String::new()),
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
        router.capabilities = Capabilities::new(
            specs,
            format!(
                "{} | routing (hpke_keys = {:?}): {}",
                router.token.capabilities().summary,
                hpke_keys.config_value(),
                notes.join("; ")
            ),
        );
        router
    }

    /// The HPKE key policy.
    pub fn hpke_keys(&self) -> HpkeKeyHome {
        self.hpke_keys
    }

    /// The token backend.
    pub fn token(&self) -> &Arc<dyn KeyCustody> {
        &self.token
    }

    /// Where a key of `spec` lives: the token if it can hold it; software
    /// for an HPKE key the token cannot hold when the configuration allows
    /// it; otherwise [`CustodyError::KeyHomeRefused`], naming the cipher
    /// suites, the key kind and why.
    pub fn home(&self, spec: KeySpec) -> Result<KeyHome, CustodyError> {
        if self.token.capabilities().supports(spec) {
            return Ok(KeyHome::Token);
        }
        match (spec.purpose(), &self.software) {
            (KeyPurpose::Hpke, Some(software)) if software.capabilities().supports(spec) => {
                Ok(KeyHome::Software)
            }
            (purpose, _) => Err(CustodyError::KeyHomeRefused {
                spec,
                purpose,
                reason: self.token.unsupported_reason(spec).unwrap_or_default(),
            }),
        }
    }

    fn backend_for(&self, spec: KeySpec) -> Result<&dyn KeyCustody, CustodyError> {
        match self.home(spec)? {
            KeyHome::Token => Ok(&*self.token),
            KeyHome::Software => match &self.software {
                Some(s) => Ok(s),
                None => Err(CustodyError::KeyHomeRefused {
                    spec,
                    purpose: spec.purpose(),
                    reason: "no software custody".into(),
                }),
            },
        }
    }

    /// The backend that made the key named by `uri`.
    fn backend_of(&self, uri: &str) -> Result<&dyn KeyCustody, CustodyError> {
        if uri.starts_with("software:") {
            match &self.software {
                Some(s) => Ok(s),
                // No software custody: no key of this router has such a URI.
                None => Err(CustodyError::KeyNotFound(uri.to_owned())),
            }
        } else {
            Ok(&*self.token)
        }
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
        self.backend_of(key.uri())?.dh(key, peer_public_key)
    }

    fn destroy(&self, key: &KeyRef) -> Result<(), CustodyError> {
        self.backend_of(key.uri())?.destroy(key)
    }

    fn find(&self, uri: &str) -> Result<KeyRef, CustodyError> {
        self.backend_of(uri)?.find(uri)
    }

    fn key_attributes(&self, key: &KeyRef) -> Result<KeyAttributes, CustodyError> {
        self.backend_of(key.uri())?.key_attributes(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpke_keys_values_round_trip_and_unknown_ones_are_refused() {
        for home in [HpkeKeyHome::Token, HpkeKeyHome::TokenElseSoftware] {
            assert_eq!(HpkeKeyHome::from_config(home.config_value()), Some(home));
        }
        assert_eq!(HpkeKeyHome::from_config("software"), None);
        assert_eq!(HpkeKeyHome::default(), HpkeKeyHome::Token);
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
