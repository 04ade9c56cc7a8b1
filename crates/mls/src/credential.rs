//! Credential validation (RFC 9420 §5.3, RFC 9750 §5.3.1).
//!
//! MLS binds a member's identity (its [`Credential`]) to its signature key,
//! but leaves it to the application's Authentication Service to say whether
//! that binding is acceptable. [`CredentialValidator`] is that seam: the
//! engine calls it for every credential it meets (KeyPackages, LeafNodes in
//! a received tree, Updates, commit paths, external joiners). The AS crate's
//! X.509 validation implements it; [`BasicCredentialValidator`] accepts
//! basic credentials and is meant for tests and demos.

use std::fmt;
use std::sync::Arc;

use hsmls_custody::{KeyCustody, KeyRef, KeySpec, SignatureScheme};

use crate::codec::{CipherSuite, Credential, SignaturePublicKey};

/// A member's identity as a signer: its credential, its signature key in
/// custody, and the custody backend that holds the key (and the member's
/// HPKE keys). Holds no secret. Build it with [`Signer::new`] or
/// [`Signer::generate`].
#[derive(Clone)]
#[non_exhaustive]
pub struct Signer {
    /// The backend holding the signature key and the member's HPKE keys.
    pub custody: Arc<dyn KeyCustody>,
    /// The signature key (a [`KeySpec::Signature`] key).
    pub signature_key: KeyRef,
    /// The credential binding the member's identity to `signature_key`.
    pub credential: Credential,
}

impl Signer {
    /// A signer from an existing signature key.
    pub fn new(
        custody: Arc<dyn KeyCustody>,
        signature_key: KeyRef,
        credential: Credential,
    ) -> Self {
        Signer {
            custody,
            signature_key,
            credential,
        }
    }

    /// Generates a fresh signature key in `custody` for `credential`, of
    /// the signature scheme of cipher suite 0x0002
    /// (`ecdsa_secp256r1_sha256`), the default suite;
    /// [`Signer::generate_for`] takes the scheme (another suite's).
    pub fn generate(
        custody: Arc<dyn KeyCustody>,
        credential: Credential,
    ) -> Result<Self, hsmls_custody::CustodyError> {
        Self::generate_for(custody, credential, SignatureScheme::EcdsaSecp256r1Sha256)
    }

    /// Generates a fresh signature key of `scheme` in `custody` for
    /// `credential`. The scheme must be the one of the cipher suite the
    /// signer is used with (RFC 9420 §5.1.2); signing for another suite
    /// fails with `CryptoError::WrongKeySpec`.
    pub fn generate_for(
        custody: Arc<dyn KeyCustody>,
        credential: Credential,
        scheme: SignatureScheme,
    ) -> Result<Self, hsmls_custody::CustodyError> {
        let signature_key = custody.generate(KeySpec::Signature(scheme))?;
        Ok(Signer::new(custody, signature_key, credential))
    }

    /// The public signature key as it appears in a LeafNode.
    pub fn signature_public_key(&self) -> SignaturePublicKey {
        SignaturePublicKey(self.signature_key.public_key().as_bytes().to_vec())
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("signature_key", &self.signature_key)
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

/// Why a credential was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The validator does not accept this credential type.
    #[error("credential type {0} is not accepted")]
    UnsupportedType(u16),
    /// The credential names no identity (e.g. an empty basic identity or
    /// an empty certificate chain).
    #[error("the credential is empty")]
    Empty,
    /// A basic identity longer than the validator accepts.
    #[error("identity longer than {max} bytes")]
    IdentityTooLong {
        /// The longest identity the validator accepts.
        max: usize,
    },
    /// The Authentication Service's validator refused the credential
    /// (chain, validity, revocation, or the identity-to-key binding). The
    /// validator's own typed reason is kept: see
    /// [`ValidatorError::downcast_ref`].
    #[error("credential rejected: {0}")]
    Rejected(ValidatorError),
}

/// A credential validator's own reason for refusing a credential, kept as
/// its typed error so that the application can match on it
/// (`e.downcast_ref::<MyValidatorError>()`) after it crossed the engine.
#[derive(Clone)]
pub struct ValidatorError(Arc<dyn std::error::Error + Send + Sync + 'static>);

impl ValidatorError {
    /// Wraps a validator's error.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        ValidatorError(Arc::new(error))
    }

    /// The validator's error, if it is an `E`.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.0.downcast_ref::<E>()
    }
}

impl fmt::Debug for ValidatorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for ValidatorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Two reasons are equal when they are the same error or say the same
/// thing (the wrapped type need not implement `PartialEq`).
impl PartialEq for ValidatorError {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.to_string() == other.0.to_string()
    }
}

impl Eq for ValidatorError {}

/// Decides whether a credential together with the signature key it
/// claims is valid (RFC 9420 §5.3.1: "the Authentication Service ...
/// verifies the binding between the identity and the signature key").
pub trait CredentialValidator: Send + Sync + fmt::Debug {
    /// Validates `credential` for `signature_key`. `Ok(())` means the
    /// application accepts this identity with this key.
    fn validate(
        &self,
        credential: &Credential,
        signature_key: &SignaturePublicKey,
    ) -> Result<(), CredentialError>;

    /// Validates `credential` for `signature_key` in a group (or
    /// KeyPackage) of cipher suite `suite`: RFC 9420 §5.1.2 makes the
    /// signature key one of the suite's signature scheme, so a validator
    /// that can tell a credential's key type (an X.509 certificate's
    /// SubjectPublicKeyInfo) refuses a key of another scheme here. The
    /// engine calls this method; the default ignores `suite` and calls
    /// [`validate`](Self::validate).
    fn validate_in_suite(
        &self,
        suite: CipherSuite,
        credential: &Credential,
        signature_key: &SignaturePublicKey,
    ) -> Result<(), CredentialError> {
        let _ = suite;
        self.validate(credential, signature_key)
    }

    /// Whether a member may replace its credential `old` by `new` in an
    /// Update or a commit path (RFC 9420 §5.3.1: "the identity ... SHOULD
    /// be the same"). The default requires the same credential type and,
    /// for basic credentials, the same identity.
    fn valid_successor(&self, old: &Credential, new: &Credential) -> bool {
        match (old, new) {
            (Credential::Basic(a), Credential::Basic(b)) => a == b,
            _ => old.credential_type() == new.credential_type(),
        }
    }
}

/// Accepts basic credentials with a non-empty identity of at most
/// `max_identity_len` bytes, bound to any signature key. Basic credentials
/// carry no proof: use this for tests and demos only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BasicCredentialValidator {
    /// The longest identity accepted.
    pub max_identity_len: usize,
}

impl BasicCredentialValidator {
    /// Accepts basic identities of 1 to `max_identity_len` bytes.
    pub fn new(max_identity_len: usize) -> Self {
        BasicCredentialValidator { max_identity_len }
    }
}

impl Default for BasicCredentialValidator {
    fn default() -> Self {
        BasicCredentialValidator {
            max_identity_len: 1024,
        }
    }
}

impl CredentialValidator for BasicCredentialValidator {
    fn validate(
        &self,
        credential: &Credential,
        _signature_key: &SignaturePublicKey,
    ) -> Result<(), CredentialError> {
        match credential {
            Credential::Basic(identity) if identity.is_empty() => Err(CredentialError::Empty),
            Credential::Basic(identity) if identity.len() > self.max_identity_len => {
                Err(CredentialError::IdentityTooLong {
                    max: self.max_identity_len,
                })
            }
            Credential::Basic(_) => Ok(()),
            other => Err(CredentialError::UnsupportedType(other.credential_type().0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_validator() {
        let v = BasicCredentialValidator::default();
        let key = SignaturePublicKey(vec![4; 65]);
        assert_eq!(
            v.validate(&Credential::Basic(b"alice".to_vec()), &key),
            Ok(())
        );
        assert_eq!(
            v.validate(&Credential::Basic(Vec::new()), &key),
            Err(CredentialError::Empty)
        );
        assert_eq!(
            v.validate(&Credential::X509(Vec::new()), &key),
            Err(CredentialError::UnsupportedType(2))
        );
        assert!(v.valid_successor(
            &Credential::Basic(b"a".to_vec()),
            &Credential::Basic(b"a".to_vec())
        ));
        assert!(!v.valid_successor(
            &Credential::Basic(b"a".to_vec()),
            &Credential::Basic(b"b".to_vec())
        ));
    }
}
