//! The software backend: P-256 keys in zeroizing process memory.
//!
//! For tests, benchmarks and platforms without a token. Keys live only as
//! long as the [`SoftwareCustody`] value; its locators (`software:<n>`) are
//! meaningful only to the instance that issued them.

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

use crate::seal::SoftwareSealer;
use crate::{
    Capabilities, CustodyError, KeyCustody, KeyPurpose, KeyRef, PublicKey, SharedSecret,
    validate_p256_point,
};

struct Entry {
    purpose: KeyPurpose,
    /// `p256::SecretKey` zeroizes its scalar on drop.
    secret: SecretKey,
    /// For signature keys: the signing key, kept so that signing does not
    /// recompute the public key (a second scalar multiplication) each time.
    /// `SigningKey` zeroizes its scalar on drop.
    signing: Option<SigningKey>,
}

/// Keys in process memory, zeroized when destroyed or dropped.
pub struct SoftwareCustody {
    keys: RwLock<HashMap<u64, Entry>>,
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
            capabilities: Capabilities {
                signature_keys: true,
                hpke_keys: true,
                summary: "software: P-256 signature and HPKE keys in process memory".into(),
            },
            sealer: SoftwareSealer::generate(),
        }
    }

    /// The AES-256 key that seals this custody's state at rest (random,
    /// held as long as this custody; see [`crate::seal`]).
    pub fn state_sealer(&self) -> &SoftwareSealer {
        &self.sealer
    }

    fn insert(&self, purpose: KeyPurpose, secret: SecretKey) -> KeyRef {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let point = secret.public_key().to_encoded_point(false);
        let public = PublicKey(point.as_bytes().to_vec());
        self.keys.write().unwrap_or_else(|e| e.into_inner()).insert(
            id,
            Entry {
                purpose,
                signing: (purpose == KeyPurpose::Signature).then(|| SigningKey::from(&secret)),
                secret,
            },
        );
        KeyRef::new(purpose, public, format!("software:{id}"))
    }

    fn id_of(uri: &str) -> Result<u64, CustodyError> {
        uri.strip_prefix("software:")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| CustodyError::InvalidUri(uri.to_owned()))
    }

    fn with_secret<T>(
        &self,
        key: &KeyRef,
        purpose: KeyPurpose,
        operation: &'static str,
        f: impl FnOnce(&Entry) -> T,
    ) -> Result<T, CustodyError> {
        key.expect_purpose(purpose, operation)?;
        let id = Self::id_of(key.uri())?;
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let entry = keys
            .get(&id)
            .ok_or_else(|| CustodyError::KeyNotFound(key.uri().to_owned()))?;
        if entry.purpose != purpose {
            return Err(CustodyError::WrongPurpose {
                operation,
                expected: purpose,
                actual: entry.purpose,
            });
        }
        Ok(f(entry))
    }
}

impl KeyCustody for SoftwareCustody {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn generate(&self, purpose: KeyPurpose) -> Result<KeyRef, CustodyError> {
        Ok(self.insert(purpose, SecretKey::random(&mut OsRng)))
    }

    fn import(&self, purpose: KeyPurpose, private_key: &[u8]) -> Result<KeyRef, CustodyError> {
        // Exactly 32 bytes: p256 would also accept (and pad) shorter slices.
        if private_key.len() != 32 {
            return Err(CustodyError::InvalidPrivateKey);
        }
        let secret =
            SecretKey::from_slice(private_key).map_err(|_| CustodyError::InvalidPrivateKey)?;
        Ok(self.insert(purpose, secret))
    }

    fn sign_digest(&self, key: &KeyRef, digest: &[u8; 32]) -> Result<Vec<u8>, CustodyError> {
        self.with_secret(key, KeyPurpose::Signature, "sign", |entry| {
            let signed: Result<Signature, _> = match &entry.signing {
                Some(signing) => signing.sign_prehash(digest),
                None => SigningKey::from(&entry.secret).sign_prehash(digest),
            };
            let sig = signed.map_err(|_| CustodyError::Unsupported {
                purpose: KeyPurpose::Signature,
                reason: "ECDSA refused the digest".into(),
            })?;
            let sig = sig.normalize_s().unwrap_or(sig);
            Ok(sig.to_der().as_bytes().to_vec())
        })?
    }

    fn dh(&self, key: &KeyRef, peer_public_key: &[u8]) -> Result<SharedSecret, CustodyError> {
        let peer = validate_p256_point(peer_public_key)?;
        self.with_secret(key, KeyPurpose::Hpke, "ECDH", |entry| {
            let scalar: NonZeroScalar = entry.secret.to_nonzero_scalar();
            let shared = p256::ecdh::diffie_hellman(scalar, peer.as_affine());
            let mut out = Zeroizing::new([0u8; 32]);
            out.copy_from_slice(shared.raw_secret_bytes());
            out
        })
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
        let entry = keys
            .get(&id)
            .ok_or_else(|| CustodyError::KeyNotFound(uri.to_owned()))?;
        let point = entry.secret.public_key().to_encoded_point(false);
        Ok(KeyRef::new(
            entry.purpose,
            PublicKey(point.as_bytes().to_vec()),
            uri.to_owned(),
        ))
    }
}
