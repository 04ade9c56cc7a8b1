//! MLS cipher suites (RFC 9420 §5.1).
//!
//! A [`CipherSuite`] is a value (the `uint16` of RFC 9420 §17.1); its
//! [`CipherSuite::provider`] gives the [`CipherSuiteProvider`] that
//! implements the suite's primitives, and, as provided methods, the labeled
//! constructions of RFC 9420 built from them: ExpandWithLabel, DeriveSecret,
//! DeriveTreeSecret (§8, §9), RefHash (§5.2), SignWithLabel /
//! VerifyWithLabel (§5.1.2) and EncryptWithLabel / DecryptWithLabel
//! (§5.1.3) over HPKE (RFC 9180, base mode).
//!
//! Private-key operations go through [`hsmls_custody::KeyCustody`]: signing
//! a digest and the Diffie-Hellman step of HPKE decapsulation, so the private
//! key may sit in a token. HPKE sealing, verification and the KDF run in
//! software.
//!
//! Implemented suites: 0x0001 and 0x0003 (X25519/Ed25519, one generic
//! [`X25519Suite`] over the AEAD), 0x0002 (P-256), 0x0005 (P-521) and 0x0007
//! (P-384) (one generic [`NistSuite`] over curve, hash and AEAD). The X448
//! suites (0x0004, 0x0006) are not implemented.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod encoding;
mod error;
pub mod hpke;
mod nist;
mod p256_sha256_aes128gcm;
mod primitives;
mod secret;
mod suite;
mod x25519_ed25519;

pub use error::{CryptoError, PublicKeyFault, SizedValue};
pub use nist::{NistSuite, P384Sha384Aes256Gcm, P521Sha512Aes256Gcm};
pub use p256_sha256_aes128gcm::P256Sha256Aes128Gcm;
pub use primitives::{SuiteAead, SuiteHash};
pub use secret::{Digest, MAX_DIGEST_LEN, Secret};
pub use suite::{
    CipherSuite, CipherSuiteProvider, HpkePrivateKey, HpkePublicKey, HpkeRecipient, HpkeSuite,
    PreparedEncryptContext,
};
pub use x25519_ed25519::{
    X25519Aes128GcmSha256Ed25519, X25519ChaCha20Poly1305Sha256Ed25519, X25519Suite,
};

/// The prefix of every MLS label (RFC 9420 §5.1.2, §5.1.3, §8).
pub const MLS_LABEL_PREFIX: &[u8] = b"MLS 1.0 ";
