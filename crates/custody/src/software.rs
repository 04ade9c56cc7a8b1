//! The software backend: keys in zeroizing process memory.
//!
//! For tests, benchmarks, and applications without a token. Keys live only
//! as long as the [`SoftwareCustody`] value; its locators (`software:<n>`)
//! are meaningful only to the instance that issued them. It holds the keys
//! of cipher suite 0x0002: `ecdsa_secp256r1_sha256` signature keys and
//! `DHKEM(P-256, HKDF-SHA256)` HPKE keys.

use std::collections::HashMap;
use std::fmt;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::{Signature, SigningKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::{NonZeroScalar, SecretKey};
use rand_core::OsRng;
use zeroize::Zeroizing;

use crate::keys::parse_p256;
use crate::seal::SoftwareSealer;
use crate::{
    Capabilities, CustodyError, KemAlgorithm, KeyAttributes, KeyCustody, KeyRef, KeySpec,
    PublicKey, SharedSecret, SignatureScheme, check_prehash,
};

/// A private key in memory.
enum Secret {
    /// An `ecdsa_secp256r1_sha256` key; `SigningKey` zeroizes its scalar on
    /// drop, and keeping it (not only the scalar) spares recomputing the
    /// public key on every signature.
    EcdsaP256(SigningKey),
    /// A `DHKEM(P-256, HKDF-SHA256)` key; `SecretKey` zeroizes on drop.
    DhKemP256(SecretKey),
}

impl Secret {
    fn spec(&self) -> KeySpec {
        match self {
            Secret::EcdsaP256(_) => KeySpec::ECDSA_SECP256R1_SHA256,
            Secret::DhKemP256(_) => KeySpec::DHKEM_P256_HKDF_SHA256,
        }
    }

    fn public_key(&self) -> PublicKey {
        let point = match self {
            Secret::EcdsaP256(k) => k.verifying_key().to_encoded_point(false),
            Secret::DhKemP256(k) => k.public_key().to_encoded_point(false),
        };
        PublicKey {
            spec: self.spec(),
            bytes: point.as_bytes().to_vec(),
        }
    }

    /// A P-256 scalar as the key of `spec`.
    fn p256(spec: KeySpec, secret: SecretKey) -> Self {
        match spec {
            KeySpec::Signature(SignatureScheme::EcdsaSecp256r1Sha256) => {
                Secret::EcdsaP256(SigningKey::from(&secret))
            }
            KeySpec::Kem(KemAlgorithm::DhKemP256HkdfSha256) => Secret::DhKemP256(secret),
        }
    }
}

/// Keys in process memory, zeroized when destroyed or dropped.
pub struct SoftwareCustody {
    keys: RwLock<HashMap<u64, Secret>>,
    next: AtomicU64,
    capabilities: Capabilities,
    sealer: SoftwareSealer,
}

impl fmt::Debug for SoftwareCustody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.keys.read().map(|k| k.len()).unwrap_or(0);
        f.debug_struct("SoftwareCustody").field("keys", &n).finish()
    }
}

impl Default for SoftwareCustody {
    fn default() -> Self {
        Self::new()
    }
}

impl SoftwareCustody {
    /// An empty key store.
    pub fn new() -> Self {
        SoftwareCustody {
            keys: RwLock::new(HashMap::new()),
            next: AtomicU64::new(1),
            capabilities: Capabilities::new(
                vec![
                    KeySpec::ECDSA_SECP256R1_SHA256,
                    KeySpec::DHKEM_P256_HKDF_SHA256,
                ],
                "software: ecdsa_secp256r1_sha256 signature and DHKEM(P-256, HKDF-SHA256) \
                 HPKE keys in process memory"
                    .into(),
            ),
            sealer: SoftwareSealer::generate(),
        }
    }

    /// The AES-256 key that seals this custody's state at rest (random,
    /// held as long as this custody; see [`crate::seal`]).
    pub fn state_sealer(&self) -> &SoftwareSealer {
        &self.sealer
    }

    fn insert(&self, secret: Secret) -> KeyRef {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let public = secret.public_key();
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, secret);
        KeyRef::new(public, format!("software:{id}"))
    }

    fn id_of(uri: &str) -> Result<u64, CustodyError> {
        uri.strip_prefix("software:")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| CustodyError::InvalidUri(uri.to_owned()))
    }

    /// Runs `f` on the stored secret of `key`, which must be a key of the
    /// spec the caller derived from the `KeyRef` (the store is checked too:
    /// a `KeyRef` may lie about its key).
    fn with_secret<T>(
        &self,
        key: &KeyRef,
        operation: &'static str,
        f: impl FnOnce(&Secret) -> T,
    ) -> Result<T, CustodyError> {
        let id = Self::id_of(key.uri())?;
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let secret = keys
            .get(&id)
            .ok_or_else(|| CustodyError::KeyNotFound(key.uri().to_owned()))?;
        if secret.spec().purpose() != key.purpose() {
            return Err(CustodyError::WrongPurpose {
                operation,
                expected: key.purpose(),
                actual: secret.spec().purpose(),
            });
        }
        Ok(f(secret))
    }
}

impl KeyCustody for SoftwareCustody {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn generate(&self, spec: KeySpec) -> Result<KeyRef, CustodyError> {
        Ok(self.insert(Secret::p256(spec, SecretKey::random(&mut OsRng))))
    }

    fn import(&self, spec: KeySpec, private_key: &[u8]) -> Result<KeyRef, CustodyError> {
        // Exactly the key length: p256 would also accept (and pad) shorter
        // slices.
        if private_key.len() != spec.private_key_len() {
            return Err(CustodyError::InvalidPrivateKey(spec));
        }
        let secret = SecretKey::from_slice(private_key)
            .map_err(|_| CustodyError::InvalidPrivateKey(spec))?;
        Ok(self.insert(Secret::p256(spec, secret)))
    }

    fn sign_prehash(&self, key: &KeyRef, prehash: &[u8]) -> Result<Vec<u8>, CustodyError> {
        let scheme = key.signature_scheme("sign")?;
        check_prehash(scheme, prehash)?;
        self.with_secret(key, "sign", |secret| match secret {
            Secret::EcdsaP256(signing) => {
                let sig: Signature =
                    signing
                        .sign_prehash(prehash)
                        .map_err(|_| CustodyError::Unsupported {
                            spec: key.spec(),
                            reason: "ECDSA refused the digest".into(),
                        })?;
                let sig = sig.normalize_s().unwrap_or(sig);
                Ok(sig.to_der().as_bytes().to_vec())
            }
            Secret::DhKemP256(_) => Err(CustodyError::WrongPurpose {
                operation: "sign",
                expected: crate::KeyPurpose::Signature,
                actual: crate::KeyPurpose::Hpke,
            }),
        })?
    }

    fn sign(&self, key: &KeyRef, message: &[u8]) -> Result<Vec<u8>, CustodyError> {
        let scheme = key.signature_scheme("sign")?;
        self.sign_prehash(key, &scheme.prehash(message))
    }

    fn dh(&self, key: &KeyRef, peer_public_key: &[u8]) -> Result<SharedSecret, CustodyError> {
        let kem = key.kem("ECDH")?;
        let peer = match kem {
            KemAlgorithm::DhKemP256HkdfSha256 => parse_p256(peer_public_key)?,
        };
        self.with_secret(key, "ECDH", |secret| match secret {
            Secret::DhKemP256(secret) => {
                let scalar: NonZeroScalar = secret.to_nonzero_scalar();
                let shared = p256::ecdh::diffie_hellman(scalar, peer.as_affine());
                Ok(SharedSecret::new(Zeroizing::new(
                    shared.raw_secret_bytes().to_vec(),
                )))
            }
            Secret::EcdsaP256(_) => Err(CustodyError::WrongPurpose {
                operation: "ECDH",
                expected: crate::KeyPurpose::Hpke,
                actual: crate::KeyPurpose::Signature,
            }),
        })?
    }

    fn destroy(&self, key: &KeyRef) -> Result<(), CustodyError> {
        let id = Self::id_of(key.uri())?;
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
            .map(drop)
            .ok_or_else(|| CustodyError::KeyNotFound(key.uri().to_owned()))
    }

    fn find(&self, uri: &str) -> Result<KeyRef, CustodyError> {
        let id = Self::id_of(uri)?;
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let secret = keys
            .get(&id)
            .ok_or_else(|| CustodyError::KeyNotFound(uri.to_owned()))?;
        Ok(KeyRef::new(secret.public_key(), uri.to_owned()))
    }

    /// A key in process memory has none of a token's protections.
    fn key_attributes(&self, key: &KeyRef) -> Result<KeyAttributes, CustodyError> {
        self.with_secret(key, "read the attributes of", |_| KeyAttributes {
            sensitive: false,
            extractable: true,
            always_sensitive: false,
            never_extractable: false,
            value_readable: true,
            token_object: false,
        })
    }
}
