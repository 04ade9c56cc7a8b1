//! The software backend: keys in zeroizing process memory.
//!
//! For tests, benchmarks, and applications without a token. Keys live only
//! as long as the [`SoftwareCustody`] value; its locators (`software:<n>`)
//! are meaningful only to the instance that issued them. It holds the keys
//! of cipher suites 0x0001/0x0003 (`ed25519`, `DHKEM(X25519, HKDF-SHA256)`),
//! 0x0002 (`ecdsa_secp256r1_sha256`, `DHKEM(P-256, HKDF-SHA256)`), 0x0005
//! (`ecdsa_secp521r1_sha512`, `DHKEM(P-521, HKDF-SHA512)`) and 0x0007
//! (`ecdsa_secp384r1_sha384`, `DHKEM(P-384, HKDF-SHA384)`).

use std::collections::HashMap;
use std::fmt;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use p256::ecdsa::signature::Signer;
use p256::ecdsa::signature::hazmat::{PrehashSigner, RandomizedPrehashSigner};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand_core::OsRng;
use zeroize::Zeroizing;

use crate::keys::{parse_p256, parse_sec1, parse_x25519};
use crate::seal::SoftwareSealer;
use crate::{
    Capabilities, CustodyError, KemAlgorithm, KeyAttributes, KeyCustody, KeyPurpose, KeyRef,
    KeySpec, PointFault, PublicKey, SharedSecret, SignatureScheme, check_prehash,
};

/// A private key in memory. Every variant zeroizes its secret on drop
/// (the RustCrypto and dalek key types do).
enum Secret {
    /// An `ecdsa_secp256r1_sha256` key; keeping the `SigningKey` (not only
    /// the scalar) spares recomputing the public key on every signature.
    EcdsaP256(p256::ecdsa::SigningKey),
    /// A `DHKEM(P-256, HKDF-SHA256)` key.
    DhKemP256(p256::SecretKey),
    /// An `ecdsa_secp384r1_sha384` key.
    EcdsaP384(p384::ecdsa::SigningKey),
    /// A `DHKEM(P-384, HKDF-SHA384)` key.
    DhKemP384(p384::SecretKey),
    /// An `ecdsa_secp521r1_sha512` key.
    EcdsaP521(p521::ecdsa::SigningKey),
    /// A `DHKEM(P-521, HKDF-SHA512)` key.
    DhKemP521(p521::SecretKey),
    /// An `ed25519` key (the 32-byte seed and its expansion).
    Ed25519(ed25519_dalek::SigningKey),
    /// A `DHKEM(X25519, HKDF-SHA256)` key.
    X25519(x25519_dalek::StaticSecret),
}

impl Secret {
    fn spec(&self) -> KeySpec {
        match self {
            Secret::EcdsaP256(_) => KeySpec::ECDSA_SECP256R1_SHA256,
            Secret::DhKemP256(_) => KeySpec::DHKEM_P256_HKDF_SHA256,
            Secret::EcdsaP384(_) => KeySpec::ECDSA_SECP384R1_SHA384,
            Secret::DhKemP384(_) => KeySpec::DHKEM_P384_HKDF_SHA384,
            Secret::EcdsaP521(_) => KeySpec::ECDSA_SECP521R1_SHA512,
            Secret::DhKemP521(_) => KeySpec::DHKEM_P521_HKDF_SHA512,
            Secret::Ed25519(_) => KeySpec::ED25519,
            Secret::X25519(_) => KeySpec::DHKEM_X25519_HKDF_SHA256,
        }
    }

    fn public_key(&self) -> PublicKey {
        let bytes = match self {
            Secret::EcdsaP256(k) => k
                .verifying_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
            Secret::DhKemP256(k) => k.public_key().to_encoded_point(false).as_bytes().to_vec(),
            Secret::EcdsaP384(k) => k
                .verifying_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
            Secret::DhKemP384(k) => k.public_key().to_encoded_point(false).as_bytes().to_vec(),
            Secret::EcdsaP521(k) => p521::PublicKey::from_secret_scalar(k.as_nonzero_scalar())
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
            Secret::DhKemP521(k) => k.public_key().to_encoded_point(false).as_bytes().to_vec(),
            Secret::Ed25519(k) => k.verifying_key().as_bytes().to_vec(),
            Secret::X25519(k) => x25519_dalek::PublicKey::from(k).as_bytes().to_vec(),
        };
        PublicKey {
            spec: self.spec(),
            bytes,
        }
    }

    /// A fresh random key of `spec`.
    fn random(spec: KeySpec) -> Self {
        match spec {
            KeySpec::Signature(SignatureScheme::EcdsaSecp256r1Sha256) => {
                Secret::EcdsaP256(p256::ecdsa::SigningKey::random(&mut OsRng))
            }
            KeySpec::Kem(KemAlgorithm::DhKemP256HkdfSha256) => {
                Secret::DhKemP256(p256::SecretKey::random(&mut OsRng))
            }
            KeySpec::Signature(SignatureScheme::EcdsaSecp384r1Sha384) => {
                Secret::EcdsaP384(p384::ecdsa::SigningKey::random(&mut OsRng))
            }
            KeySpec::Kem(KemAlgorithm::DhKemP384HkdfSha384) => {
                Secret::DhKemP384(p384::SecretKey::random(&mut OsRng))
            }
            KeySpec::Signature(SignatureScheme::EcdsaSecp521r1Sha512) => {
                Secret::EcdsaP521(p521::ecdsa::SigningKey::random(&mut OsRng))
            }
            KeySpec::Kem(KemAlgorithm::DhKemP521HkdfSha512) => {
                Secret::DhKemP521(p521::SecretKey::random(&mut OsRng))
            }
            KeySpec::Signature(SignatureScheme::Ed25519) => {
                Secret::Ed25519(ed25519_dalek::SigningKey::generate(&mut OsRng))
            }
            KeySpec::Kem(KemAlgorithm::DhKemX25519HkdfSha256) => {
                Secret::X25519(x25519_dalek::StaticSecret::random_from_rng(OsRng))
            }
        }
    }

    /// The key of `spec` encoded as `private_key` (exactly
    /// [`KeySpec::private_key_len`] bytes: the NIST scalar crates would
    /// also accept, and pad, shorter slices).
    fn import(spec: KeySpec, private_key: &[u8]) -> Result<Self, CustodyError> {
        let invalid = || CustodyError::InvalidPrivateKey(spec);
        if private_key.len() != spec.private_key_len() {
            return Err(invalid());
        }
        Ok(match spec {
            KeySpec::Signature(SignatureScheme::EcdsaSecp256r1Sha256) => Secret::EcdsaP256(
                p256::ecdsa::SigningKey::from_slice(private_key).map_err(|_| invalid())?,
            ),
            KeySpec::Kem(KemAlgorithm::DhKemP256HkdfSha256) => {
                Secret::DhKemP256(p256::SecretKey::from_slice(private_key).map_err(|_| invalid())?)
            }
            KeySpec::Signature(SignatureScheme::EcdsaSecp384r1Sha384) => Secret::EcdsaP384(
                p384::ecdsa::SigningKey::from_slice(private_key).map_err(|_| invalid())?,
            ),
            KeySpec::Kem(KemAlgorithm::DhKemP384HkdfSha384) => {
                Secret::DhKemP384(p384::SecretKey::from_slice(private_key).map_err(|_| invalid())?)
            }
            KeySpec::Signature(SignatureScheme::EcdsaSecp521r1Sha512) => Secret::EcdsaP521(
                p521::ecdsa::SigningKey::from_slice(private_key).map_err(|_| invalid())?,
            ),
            KeySpec::Kem(KemAlgorithm::DhKemP521HkdfSha512) => {
                Secret::DhKemP521(p521::SecretKey::from_slice(private_key).map_err(|_| invalid())?)
            }
            KeySpec::Signature(SignatureScheme::Ed25519) => {
                let mut seed = Zeroizing::new([0u8; 32]);
                seed.copy_from_slice(private_key);
                Secret::Ed25519(ed25519_dalek::SigningKey::from_bytes(&seed))
            }
            KeySpec::Kem(KemAlgorithm::DhKemX25519HkdfSha256) => {
                let mut sk = Zeroizing::new([0u8; 32]);
                sk.copy_from_slice(private_key);
                Secret::X25519(x25519_dalek::StaticSecret::from(*sk))
            }
        })
    }
}

/// A stored key and its public key, computed once at generation or import
/// (a P-256 KEM key's public key is a scalar multiplication, most of a
/// small group's load when `find` recomputed it).
struct Stored {
    secret: Secret,
    public: PublicKey,
}

/// Keys in process memory, zeroized when destroyed or dropped.
pub struct SoftwareCustody {
    keys: RwLock<HashMap<u64, Stored>>,
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
                KeySpec::ALL.to_vec(),
                "software: the signature and HPKE keys of suites 0x0001, 0x0002, 0x0003, \
                 0x0005 and 0x0007 in process memory"
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
        self.keys.write().unwrap_or_else(|e| e.into_inner()).insert(
            id,
            Stored {
                secret,
                public: public.clone(),
            },
        );
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
        let secret = &keys
            .get(&id)
            .ok_or_else(|| CustodyError::KeyNotFound(key.uri().to_owned()))?
            .secret;
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

fn wrong_purpose(operation: &'static str, expected: KeyPurpose) -> CustodyError {
    CustodyError::WrongPurpose {
        operation,
        expected,
        actual: match expected {
            KeyPurpose::Signature => KeyPurpose::Hpke,
            KeyPurpose::Hpke => KeyPurpose::Signature,
        },
    }
}

impl KeyCustody for SoftwareCustody {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn generate(&self, spec: KeySpec) -> Result<KeyRef, CustodyError> {
        Ok(self.insert(Secret::random(spec)))
    }

    fn import(&self, spec: KeySpec, private_key: &[u8]) -> Result<KeyRef, CustodyError> {
        Ok(self.insert(Secret::import(spec, private_key)?))
    }

    fn sign_prehash(&self, key: &KeyRef, prehash: &[u8]) -> Result<Vec<u8>, CustodyError> {
        let scheme = key.signature_scheme("sign")?;
        check_prehash(scheme, prehash)?;
        let refused = || CustodyError::Unsupported {
            spec: key.spec(),
            reason: "ECDSA refused the digest".into(),
        };
        self.with_secret(key, "sign", |secret| match secret {
            Secret::EcdsaP256(k) => Ok(der_low_s!(
                PrehashSigner::<p256::ecdsa::Signature>::sign_prehash(k, prehash)
                    .map_err(|_| refused())?,
            )),
            Secret::EcdsaP384(k) => Ok(der_low_s!(
                PrehashSigner::<p384::ecdsa::Signature>::sign_prehash(k, prehash)
                    .map_err(|_| refused())?,
            )),
            Secret::EcdsaP521(k) => Ok(der_low_s!(
                k.sign_prehash_with_rng(&mut OsRng, prehash)
                    .map_err(|_| refused())?,
            )),
            // check_prehash refused Ed25519 already; the store is checked
            // against the KeyRef's claim here.
            Secret::Ed25519(_) => Err(CustodyError::PrehashNotApplicable {
                scheme: SignatureScheme::Ed25519,
            }),
            Secret::DhKemP256(_)
            | Secret::DhKemP384(_)
            | Secret::DhKemP521(_)
            | Secret::X25519(_) => Err(wrong_purpose("sign", KeyPurpose::Signature)),
        })?
    }

    fn sign(&self, key: &KeyRef, message: &[u8]) -> Result<Vec<u8>, CustodyError> {
        let scheme = key.signature_scheme("sign")?;
        match scheme.prehash(message) {
            Some(prehash) => self.sign_prehash(key, &prehash),
            // PureEdDSA: the message itself (RFC 8032 §5.1.6).
            None => self.with_secret(key, "sign", |secret| match secret {
                Secret::Ed25519(k) => {
                    let sig: ed25519_dalek::Signature = k.sign(message);
                    Ok(sig.to_bytes().to_vec())
                }
                other => Err(CustodyError::WrongPurpose {
                    operation: "sign",
                    expected: key.purpose(),
                    actual: other.spec().purpose(),
                }),
            })?,
        }
    }

    fn dh(&self, key: &KeyRef, peer_public_key: &[u8]) -> Result<SharedSecret, CustodyError> {
        let kem = key.kem("ECDH")?;
        // The peer key is parsed for the KeyRef's KEM before the store is
        // read; the stored key must then be of the same KEM.
        enum Peer {
            P256(p256::PublicKey),
            P384(p384::PublicKey),
            P521(p521::PublicKey),
            X25519(x25519_dalek::PublicKey),
        }
        let peer = match kem {
            KemAlgorithm::DhKemP256HkdfSha256 => Peer::P256(parse_p256(peer_public_key)?),
            KemAlgorithm::DhKemP384HkdfSha384 => {
                Peer::P384(parse_sec1::<p384::NistP384>(peer_public_key)?)
            }
            KemAlgorithm::DhKemP521HkdfSha512 => {
                Peer::P521(parse_sec1::<p521::NistP521>(peer_public_key)?)
            }
            KemAlgorithm::DhKemX25519HkdfSha256 => Peer::X25519(parse_x25519(peer_public_key)?),
        };
        let mismatch = |secret: &Secret| CustodyError::WrongPurpose {
            operation: "ECDH",
            expected: KeyPurpose::Hpke,
            actual: secret.spec().purpose(),
        };
        self.with_secret(key, "ECDH", |secret| {
            let value: Vec<u8> = match (secret, &peer) {
                (Secret::DhKemP256(k), Peer::P256(p)) => {
                    p256::ecdh::diffie_hellman(k.to_nonzero_scalar(), p.as_affine())
                        .raw_secret_bytes()
                        .to_vec()
                }
                (Secret::DhKemP384(k), Peer::P384(p)) => {
                    p384::ecdh::diffie_hellman(k.to_nonzero_scalar(), p.as_affine())
                        .raw_secret_bytes()
                        .to_vec()
                }
                (Secret::DhKemP521(k), Peer::P521(p)) => {
                    p521::ecdh::diffie_hellman(k.to_nonzero_scalar(), p.as_affine())
                        .raw_secret_bytes()
                        .to_vec()
                }
                (Secret::X25519(k), Peer::X25519(p)) => {
                    let shared = k.diffie_hellman(p);
                    // RFC 7748 §6.1, RFC 9180 §7.1.4: an all-zero value
                    // means a low-order peer point.
                    if !shared.was_contributory() {
                        return Err(CustodyError::InvalidPublicKey(PointFault::LowOrder));
                    }
                    shared.as_bytes().to_vec()
                }
                (other, _) => return Err(mismatch(other)),
            };
            Ok(SharedSecret::new(Zeroizing::new(value)))
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
        let stored = keys
            .get(&id)
            .ok_or_else(|| CustodyError::KeyNotFound(uri.to_owned()))?;
        Ok(KeyRef::new(stored.public.clone(), uri.to_owned()))
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
