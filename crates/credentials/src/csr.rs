//! Certificate signing requests signed by a key held in custody, and the
//! rcgen signing key over [`KeyCustody`] that the AS also uses for its CA.

use std::fmt;
use std::sync::Arc;

use hsmls_custody::{KeyCustody, KeyRef, KeySpec, SignatureScheme};
use rcgen::{CertificateParams, DistinguishedName, SanType};

/// An rcgen signing key whose private half is in a [`KeyCustody`] backend
/// (a PKCS#11 token): rcgen hands it the whole to-be-signed structure,
/// custody hashes it with SHA-256 and signs the digest (`CKM_ECDSA` in the
/// token), and returns the ASN.1 DER signature X.509 needs (a raw r‖s would
/// give certificates that parse but verify nowhere).
#[derive(Clone)]
pub struct CustodySigningKey {
    custody: Arc<dyn KeyCustody>,
    key: KeyRef,
}

impl fmt::Debug for CustodySigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustodySigningKey")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Why a CSR could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CsrError {
    /// Only `ecdsa_secp256r1_sha256` keys are supported.
    #[error("the key is not an ecdsa_secp256r1_sha256 signature key")]
    UnsupportedKey,
    /// The identity is not a valid IA5 URI.
    #[error("the identity is not a valid URI")]
    BadIdentity,
    /// rcgen or the custody backend failed.
    #[error("building the request failed: {0}")]
    Build(String),
}

impl CustodySigningKey {
    /// Wraps `key` (an `ecdsa_secp256r1_sha256` key in `custody`).
    pub fn new(custody: Arc<dyn KeyCustody>, key: KeyRef) -> Result<Self, CsrError> {
        if key.spec() != KeySpec::Signature(SignatureScheme::EcdsaSecp256r1Sha256) {
            return Err(CsrError::UnsupportedKey);
        }
        Ok(CustodySigningKey { custody, key })
    }

    /// The key in custody.
    pub fn key(&self) -> &KeyRef {
        &self.key
    }
}

impl rcgen::PublicKeyData for CustodySigningKey {
    fn der_bytes(&self) -> &[u8] {
        self.key.public_key().as_bytes()
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for CustodySigningKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.custody.sign(&self.key, msg).map_err(|e| {
            tracing::warn!("custody signature failed: {e}");
            rcgen::Error::RemoteKeyError
        })
    }
}

/// A P-256 public key (SEC1 uncompressed point) as rcgen public key data,
/// for certifying a key the CA does not hold.
#[derive(Debug, Clone)]
pub struct P256PublicKey(pub Vec<u8>);

impl rcgen::PublicKeyData for P256PublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

/// A PKCS#10 request (RFC 2986) for `identity` (a SAN URI) and the key in
/// custody, signed by that key (the proof of possession the AS checks).
/// Returns the DER request.
pub fn build_csr(
    custody: Arc<dyn KeyCustody>,
    key: &KeyRef,
    identity: &str,
) -> Result<Vec<u8>, CsrError> {
    let signer = CustodySigningKey::new(custody, key.clone())?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(
        identity.try_into().map_err(|_| CsrError::BadIdentity)?,
    )];
    let csr = params
        .serialize_request(&signer)
        .map_err(|e| CsrError::Build(e.to_string()))?;
    Ok(csr.der().to_vec())
}
