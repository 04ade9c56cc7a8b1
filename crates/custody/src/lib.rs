//! Key custody for hsmls.
//!
//! Every private-key operation of MLS goes through the [`KeyCustody`] trait:
//! signatures with a member's signature key (RFC 9420 §5.1.2) and the
//! Diffie-Hellman step of HPKE decapsulation with a leaf or init key
//! (RFC 9420 §5.1.3, RFC 9180 §4.1). The private key never has to leave the
//! backend: the PKCS#11 backend keeps it in a token (an HSM, a TPM, or SoftHSM
//! in tests), the software backend in zeroizing memory.
//!
//! Keys are P-256 (cipher suite 0x0002). A key is named by a [`KeyRef`], which
//! carries the public key and a persistent, human-readable locator (a PKCS#11
//! URI, RFC 7512, for token keys) from which [`KeyCustody::find`] finds the key
//! again after a restart.
#![forbid(unsafe_code)]

mod error;
pub mod pkcs11;
pub mod seal;
pub mod software;

pub use error::CustodyError;
pub use pkcs11::{Pkcs11Config, Pkcs11Custody, Pkcs11Sealer};
pub use seal::{SoftwareSealer, StateSealer};
pub use software::SoftwareCustody;

use std::fmt;
use zeroize::Zeroizing;

/// What a key is for. A key is generated for exactly one purpose and the
/// backends refuse to use it for the other (RFC 9420 §5.1: signature keys and
/// HPKE keys are distinct).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyPurpose {
    /// An MLS signature key (ECDSA P-256 with SHA-256).
    Signature,
    /// An HPKE private key (DHKEM(P-256, HKDF-SHA256)): leaf `encryption_key`
    /// or KeyPackage `init_key`.
    Hpke,
}

impl fmt::Display for KeyPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyPurpose::Signature => "signature",
            KeyPurpose::Hpke => "HPKE",
        })
    }
}

/// An uncompressed SEC1 P-256 public key (`0x04 ‖ X ‖ Y`, 65 bytes), the
/// encoding MLS uses for both `SignaturePublicKey` and `HPKEPublicKey` in
/// suite 0x0002.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PublicKey(Vec<u8>);

impl PublicKey {
    /// Parses and validates an uncompressed SEC1 point (on the curve, not the
    /// identity).
    pub fn from_sec1(bytes: &[u8]) -> Result<Self, CustodyError> {
        validate_p256_point(bytes)?;
        Ok(PublicKey(bytes.to_vec()))
    }

    /// The 65 bytes `0x04 ‖ X ‖ Y`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", hex::encode(&self.0))
    }
}

/// Checks that `bytes` is an uncompressed SEC1 encoding of a P-256 point on
/// the curve. Peer points are always checked in software before they reach a
/// token (a token's own checks vary).
pub fn validate_p256_point(bytes: &[u8]) -> Result<p256::PublicKey, CustodyError> {
    if bytes.len() != 65 || bytes[0] != 0x04 {
        return Err(CustodyError::InvalidPublicKey(
            "not an uncompressed SEC1 P-256 point (65 bytes starting 0x04)",
        ));
    }
    p256::PublicKey::from_sec1_bytes(bytes)
        .map_err(|_| CustodyError::InvalidPublicKey("point is not on the P-256 curve"))
}

/// A reference to a private key held by a custody backend.
///
/// It holds no secret: the public key, the purpose, and a persistent locator
/// string. For PKCS#11 keys the locator is a PKCS#11 URI (RFC 7512); it may
/// carry a wrapped (encrypted under a token-resident key) key blob, which is
/// not secret without the token.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyRef {
    purpose: KeyPurpose,
    public_key: PublicKey,
    locator: String,
}

impl KeyRef {
    /// Builds a reference; for backends.
    pub fn new(purpose: KeyPurpose, public_key: PublicKey, locator: String) -> Self {
        KeyRef {
            purpose,
            public_key,
            locator,
        }
    }

    /// What the key is for.
    pub fn purpose(&self) -> KeyPurpose {
        self.purpose
    }

    /// The public half of the key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// The persistent locator: pass it to [`KeyCustody::find`] to get the key
    /// back, in this process or after a restart (for persistent backends).
    pub fn uri(&self) -> &str {
        &self.locator
    }

    /// Returns [`CustodyError::WrongPurpose`] unless the key is for `purpose`.
    pub fn expect_purpose(
        &self,
        purpose: KeyPurpose,
        operation: &'static str,
    ) -> Result<(), CustodyError> {
        if self.purpose == purpose {
            Ok(())
        } else {
            Err(CustodyError::WrongPurpose {
                operation,
                expected: purpose,
                actual: self.purpose,
            })
        }
    }
}

impl fmt::Debug for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRef")
            .field("purpose", &self.purpose)
            .field("public_key", &self.public_key)
            .field("uri", &self.locator)
            .finish()
    }
}

/// What a backend can hold, found by probing it at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Can generate P-256 signature keys and sign with them.
    pub signature_keys: bool,
    /// Can generate P-256 HPKE keys and run ECDH with them.
    pub hpke_keys: bool,
    /// A human-readable summary for logs and operators.
    pub summary: String,
}

/// The 32-byte x-coordinate of an ECDH shared point (the DHKEM `dh` value of
/// RFC 9180 §4.1 for P-256), zeroized on drop.
pub type SharedSecret = Zeroizing<[u8; 32]>;

/// The seam between MLS and key storage: every private-key operation of hsmls
/// goes through this trait.
///
/// Implementations are shared between threads; calls may block (a token call
/// takes 0.1 ms on SoftHSM and several ms on a TPM), so async callers should
/// use a blocking pool.
pub trait KeyCustody: Send + Sync + fmt::Debug {
    /// What this backend can hold.
    fn capabilities(&self) -> &Capabilities;

    /// Generates a fresh P-256 key pair for `purpose` inside the backend.
    fn generate(&self, purpose: KeyPurpose) -> Result<KeyRef, CustodyError>;

    /// Imports an existing P-256 private key (a 32-byte big-endian scalar),
    /// e.g. one given by a test vector or derived by `DeriveKeyPair`. The
    /// caller should zeroize `private_key` afterwards.
    fn import(&self, purpose: KeyPurpose, private_key: &[u8]) -> Result<KeyRef, CustodyError>;

    /// Signs a SHA-256 digest with ECDSA P-256. Returns an ASN.1 DER
    /// signature, normalised to low S (RFC 9420 §5.1.2 uses DER for ECDSA).
    fn sign_digest(&self, key: &KeyRef, digest: &[u8; 32]) -> Result<Vec<u8>, CustodyError>;

    /// ECDH between the private `key` and an uncompressed SEC1 peer point:
    /// returns the x-coordinate of the shared point. The peer point is
    /// validated first.
    fn dh(&self, key: &KeyRef, peer_public_key: &[u8]) -> Result<SharedSecret, CustodyError>;

    /// Destroys the private key (RFC 9420 §9.2 deletion schedule: used init
    /// keys, replaced leaf keys). Afterwards the key can no longer be used.
    fn destroy(&self, key: &KeyRef) -> Result<(), CustodyError>;

    /// Finds a key again from its [`KeyRef::uri`].
    fn find(&self, uri: &str) -> Result<KeyRef, CustodyError>;
}

impl<T: KeyCustody + ?Sized> KeyCustody for std::sync::Arc<T> {
    fn capabilities(&self) -> &Capabilities {
        (**self).capabilities()
    }
    fn generate(&self, purpose: KeyPurpose) -> Result<KeyRef, CustodyError> {
        (**self).generate(purpose)
    }
    fn import(&self, purpose: KeyPurpose, private_key: &[u8]) -> Result<KeyRef, CustodyError> {
        (**self).import(purpose, private_key)
    }
    fn sign_digest(&self, key: &KeyRef, digest: &[u8; 32]) -> Result<Vec<u8>, CustodyError> {
        (**self).sign_digest(key, digest)
    }
    fn dh(&self, key: &KeyRef, peer_public_key: &[u8]) -> Result<SharedSecret, CustodyError> {
        (**self).dh(key, peer_public_key)
    }
    fn destroy(&self, key: &KeyRef) -> Result<(), CustodyError> {
        (**self).destroy(key)
    }
    fn find(&self, uri: &str) -> Result<KeyRef, CustodyError> {
        (**self).find(uri)
    }
}
