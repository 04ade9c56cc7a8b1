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
//! Implemented suites: 0x0002 (MLS_128_DHKEMP256_AES128GCM_SHA256_P256).
//! Every other suite is one module away: implement [`CipherSuiteProvider`]
//! for it and add it to [`CipherSuite::provider`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod encoding;
mod error;
pub mod hpke;
mod p256_sha256_aes128gcm;
mod secret;
mod suite;

pub use error::{CryptoError, PublicKeyFault, SizedValue};
pub use p256_sha256_aes128gcm::P256Sha256Aes128Gcm;
pub use secret::{Digest, MAX_DIGEST_LEN, Secret};
pub use suite::{
    CipherSuite, CipherSuiteProvider, HpkePrivateKey, HpkePublicKey, HpkeRecipient, HpkeSuite,
};

/// The prefix of every MLS label (RFC 9420 §5.1.2, §5.1.3, §8).
pub const MLS_LABEL_PREFIX: &[u8] = b"MLS 1.0 ";
