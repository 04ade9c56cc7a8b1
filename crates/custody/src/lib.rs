//! Key custody for hsmls.
//!
//! Every private-key operation of MLS goes through the [`KeyCustody`] trait:
//! signatures with a member's signature key (RFC 9420 §5.1.2) and the
//! Diffie-Hellman step of HPKE decapsulation with a leaf or init key
//! (RFC 9420 §5.1.3, RFC 9180 §4.1). The private key never has to leave the
//! backend: the PKCS#11 backend keeps it in a token (an HSM, a TPM, or SoftHSM
//! in tests), the software backend in zeroizing memory.
//!
//! A key has an algorithm, its [`KeySpec`]: a [`SignatureScheme`] or a
//! [`KemAlgorithm`], named as the IANA registries of RFC 9420 §17.1 and
//! RFC 9180 §7.1 name them. The software backend holds the keys of cipher
//! suites 0x0001/0x0003 (`ed25519`, `DHKEM(X25519, HKDF-SHA256)`), 0x0002
//! (`ecdsa_secp256r1_sha256`, `DHKEM(P-256, HKDF-SHA256)`), 0x0005 (P-521)
//! and 0x0007 (P-384); the PKCS#11 backend all of them but the X25519 HPKE
//! keys (no Montgomery key agreement in SoftHSM 2.6.1), which it answers
//! with [`CustodyError::Unsupported`]; [`CustodyRouter`] keeps those in
//! software only when the configuration says so. A key is
//! named by a [`KeyRef`], which carries the public key and a persistent,
//! human-readable locator (a PKCS#11 URI, RFC 7512, for token keys) from
//! which [`KeyCustody::find`] finds the key again after a restart.
//!
//! # Features
//!
//! * `pkcs11` (off by default): the PKCS#11 backend (`Pkcs11Custody`),
//!   which builds `cryptoki`. An application with software custody leaves
//!   it off.
//! * `test-utils` (implies `pkcs11`): raw `cryptoki` access to the token for
//!   tests (`Pkcs11Custody::with_session` and the object handles). No
//!   `cryptoki` type appears in the public API without it.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// ECDSA's DER encoding with a low S (RFC 9420 §5.1.2), for any curve's
/// `ecdsa::Signature` (a macro: the generic bounds name the deprecated
/// generic-array 0.14 traits).
macro_rules! der_low_s {
    ($sig:expr $(,)?) => {{
        let sig = $sig;
        let sig = sig.normalize_s().unwrap_or(sig);
        sig.to_der().as_bytes().to_vec()
    }};
}

mod error;
mod keys;
#[cfg(feature = "pkcs11")]
pub mod pkcs11;
pub mod router;
pub mod seal;
pub mod software;

pub use error::{CustodyError, KeyObjectFault, PointFault};
pub use keys::{
    Capabilities, KemAlgorithm, KeyAttributes, KeyPurpose, KeyRef, KeySpec, PublicKey,
    SharedSecret, SignatureScheme,
};
#[cfg(feature = "pkcs11")]
pub use pkcs11::{ConfiguredCustody, Pkcs11Config, Pkcs11Custody, Pkcs11Sealer, SealHome};
pub use router::{CustodyRouter, HpkeKeyHome, KeyHome, SplitFault};
pub use seal::{SoftwareSealer, StateSealer};
pub use software::SoftwareCustody;

use std::fmt;

/// The seam between MLS and key storage: every private-key operation of hsmls
/// goes through this trait.
///
/// Signing comes in two forms, as RustCrypto's `signature` crate separates
/// them: [`sign_prehash`](Self::sign_prehash) signs a digest the caller has
/// computed (for ECDSA, what a token's `CKM_ECDSA` takes), and
/// [`sign`](Self::sign) signs a whole message (for ECDSA it hashes with the
/// scheme's hash and signs that digest; a scheme that signs the message
/// itself, such as EdDSA, signs it whole). The MLS engine calls
/// [`sign`](Self::sign).
///
/// Implementations are shared between threads; calls may block (a token call
/// takes 0.1 ms on SoftHSM and several ms on a TPM), so async callers should
/// use a blocking pool.
pub trait KeyCustody: Send + Sync + fmt::Debug {
    /// What this backend can hold.
    fn capabilities(&self) -> &Capabilities;

    /// Why this backend cannot hold keys of `spec`, or `None` if it can
    /// (for operators and for [`CustodyRouter`]). By default the
    /// capabilities' summary.
    fn unsupported_reason(&self, spec: KeySpec) -> Option<String> {
        if self.capabilities().supports(spec) {
            None
        } else {
            Some(self.capabilities().summary.clone())
        }
    }

    /// Generates a fresh key pair of `spec` inside the backend, or
    /// [`CustodyError::Unsupported`] if the backend cannot hold such keys.
    fn generate(&self, spec: KeySpec) -> Result<KeyRef, CustodyError>;

    /// Imports an existing private key of `spec` (for P-256 a 32-byte
    /// big-endian scalar), e.g. one given by a test vector or derived by
    /// `DeriveKeyPair`. A malformed key is
    /// [`CustodyError::InvalidPrivateKey`]. The caller should zeroize
    /// `private_key` afterwards.
    fn import(&self, spec: KeySpec, private_key: &[u8]) -> Result<KeyRef, CustodyError>;

    /// Signs `prehash`, a digest of the scheme's hash
    /// ([`SignatureScheme::prehash_len`] bytes, else
    /// [`CustodyError::PrehashLength`]; a scheme that signs the whole
    /// message, Ed25519, is [`CustodyError::PrehashNotApplicable`]). For ECDSA the result is an ASN.1
    /// DER signature normalised to low S (RFC 9420 §5.1.2 uses DER for
    /// ECDSA).
    fn sign_prehash(&self, key: &KeyRef, prehash: &[u8]) -> Result<Vec<u8>, CustodyError>;

    /// Signs a whole message (`Signature.Sign` of RFC 9420 §5.1.2). For
    /// ECDSA: [`sign_prehash`](Self::sign_prehash) of
    /// [`SignatureScheme::prehash`]`(message)`; for Ed25519, PureEdDSA over
    /// the message (RFC 8032 §5.1.6).
    fn sign(&self, key: &KeyRef, message: &[u8]) -> Result<Vec<u8>, CustodyError>;

    /// The Diffie-Hellman step of the key's KEM (`DH(skR, pkE)` in
    /// RFC 9180 §4.1) between the private `key` and a peer public key in
    /// the KEM's encoding; returns `Ndh` bytes ([`KemAlgorithm::n_dh`]; for
    /// P-256 the x-coordinate of the shared point). The peer key is
    /// validated first ([`CustodyError::InvalidPublicKey`]).
    fn dh(&self, key: &KeyRef, peer_public_key: &[u8]) -> Result<SharedSecret, CustodyError>;

    /// Destroys the private key (RFC 9420 §9.2 deletion schedule: used init
    /// keys, replaced leaf keys). Afterwards the key can no longer be used.
    fn destroy(&self, key: &KeyRef) -> Result<(), CustodyError>;

    /// Finds a key again from its [`KeyRef::uri`].
    fn find(&self, uri: &str) -> Result<KeyRef, CustodyError>;

    /// How the backend protects the key, as it reports it (for PKCS#11 the
    /// private key object's attributes read from the token).
    fn key_attributes(&self, key: &KeyRef) -> Result<KeyAttributes, CustodyError>;
}

impl<T: KeyCustody + ?Sized> KeyCustody for std::sync::Arc<T> {
    fn capabilities(&self) -> &Capabilities {
        (**self).capabilities()
    }
    fn unsupported_reason(&self, spec: KeySpec) -> Option<String> {
        (**self).unsupported_reason(spec)
    }
    fn generate(&self, spec: KeySpec) -> Result<KeyRef, CustodyError> {
        (**self).generate(spec)
    }
    fn import(&self, spec: KeySpec, private_key: &[u8]) -> Result<KeyRef, CustodyError> {
        (**self).import(spec, private_key)
    }
    fn sign_prehash(&self, key: &KeyRef, prehash: &[u8]) -> Result<Vec<u8>, CustodyError> {
        (**self).sign_prehash(key, prehash)
    }
    fn sign(&self, key: &KeyRef, message: &[u8]) -> Result<Vec<u8>, CustodyError> {
        (**self).sign(key, message)
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
    fn key_attributes(&self, key: &KeyRef) -> Result<KeyAttributes, CustodyError> {
        (**self).key_attributes(key)
    }
}

/// Checks that `prehash` has the length `scheme` signs
/// ([`CustodyError::PrehashLength`] otherwise); for backends.
/// A scheme that signs whole messages (Ed25519) is
/// [`CustodyError::PrehashNotApplicable`].
pub(crate) fn check_prehash(scheme: SignatureScheme, prehash: &[u8]) -> Result<(), CustodyError> {
    match scheme.prehash_len() {
        None => Err(CustodyError::PrehashNotApplicable { scheme }),
        Some(expected) if prehash.len() == expected => Ok(()),
        Some(expected) => Err(CustodyError::PrehashLength {
            scheme,
            expected,
            actual: prehash.len(),
        }),
    }
}
