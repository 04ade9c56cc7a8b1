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
//! A key's URI says which backend made it (`software:` and
//! `software-sealed:` locators are the software backend's, everything else
//! the token's), so `find`, `destroy` and the key operations go to that
//! backend.
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
    /// Seals software HPKE keys into their URIs, when set.
    sealer: Option<Arc<dyn StateSealer>>,
    /// Sealed URI → the key in `software` (after generation or `find`).
    sealed: RwLock<HashMap<String, KeyRef>>,
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
        if uri.starts_with("software:") || uri.starts_with(SEALED_PREFIX) {
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
