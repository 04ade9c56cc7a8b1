//! Certificate signing requests signed by a key held in custody (of any
//! MLS signature scheme, [`crate::keys`]), the rcgen signing key over
//! [`KeyCustody`] that the AS uses for its CA (P-256), and the subject key
//! of a certificate the CA issues ([`SubjectPublicKey`]).
//!
//! The requests are written with x509-cert, not rcgen: rcgen 0.14 knows
//! P-521 (`PKCS_ECDSA_P521_SHA512`) only with its `aws_lc_rs` backend (a C
//! build hsmls does not take), while the request itself is a small DER
//! structure that custody signs like any other message.

use std::fmt;
use std::sync::Arc;

use der::asn1::{BitString, Ia5String, OctetString, SetOfVec};
use der::oid::AssociatedOid;
use der::{Any, Encode};
use hsmls_custody::{KeyCustody, KeyRef, KeySpec, SignatureScheme};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::request::{CertReq, CertReqInfo, ExtensionReq, Version};

use crate::keys;

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
    /// The key is not a signature key of a scheme this use supports (the
    /// CA's rcgen key: `ecdsa_secp256r1_sha256` only; a CSR: any
    /// [`SignatureScheme`]).
    #[error("the key is not a supported signature key")]
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

/// The subject key of a certificate the CA issues, of any MLS signature
/// scheme ([`crate::keys`]). rcgen derives the subject key identifier from
/// the SubjectPublicKeyInfo this type gives (built by hsmls); it writes
/// the certificate's SPKI from [`algorithm`](rcgen::PublicKeyData::algorithm),
/// which has no P-521 entry without rcgen's `aws_lc_rs` backend, so the
/// AS puts this SPKI into the certificate itself before signing it.
#[derive(Debug, Clone)]
pub struct SubjectPublicKey {
    scheme: SignatureScheme,
    key: Vec<u8>,
    spki_der: Vec<u8>,
}

impl SubjectPublicKey {
    /// `public_key` (the MLS encoding) as a key of `scheme`.
    pub fn new(scheme: SignatureScheme, public_key: &[u8]) -> Result<Self, CsrError> {
        if public_key.len() != scheme.public_key_len() {
            return Err(CsrError::UnsupportedKey);
        }
        let spki_der =
            keys::spki_der(scheme, public_key).map_err(|e| CsrError::Build(e.to_string()))?;
        Ok(SubjectPublicKey {
            scheme,
            key: public_key.to_vec(),
            spki_der,
        })
    }

    /// The key's scheme.
    pub fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

impl rcgen::PublicKeyData for SubjectPublicKey {
    fn subject_public_key_info(&self) -> Vec<u8> {
        self.spki_der.clone()
    }
    fn der_bytes(&self) -> &[u8] {
        &self.key
    }
    /// The rcgen algorithm of the key's scheme; P-521 (none in rcgen
    /// without `aws_lc_rs`) answers P-256's, whose SPKI the AS replaces.
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match self.scheme {
            SignatureScheme::Ed25519 => &rcgen::PKCS_ED25519,
            SignatureScheme::EcdsaSecp384r1Sha384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            _ => &rcgen::PKCS_ECDSA_P256_SHA256,
        }
    }
}

/// A PKCS#10 request (RFC 2986) for `identity` (a SAN URI) and the key in
/// custody, signed by that key with its own algorithm (ecdsa-with-SHA256,
/// -SHA384, -SHA512 or Ed25519: the proof of possession the AS checks).
/// Returns the DER request.
pub fn build_csr(
    custody: Arc<dyn KeyCustody>,
    key: &KeyRef,
    identity: &str,
) -> Result<Vec<u8>, CsrError> {
    let KeySpec::Signature(scheme) = key.spec() else {
        return Err(CsrError::UnsupportedKey);
    };
    if !keys::SCHEMES.contains(&scheme) {
        return Err(CsrError::UnsupportedKey);
    }
    let build = |e: der::Error| CsrError::Build(e.to_string());
    let uri = Ia5String::new(identity).map_err(|_| CsrError::BadIdentity)?;
    let san = SubjectAltName(vec![GeneralName::UniformResourceIdentifier(uri)])
        .to_der()
        .map_err(build)?;
    let extensions = vec![Extension {
        extn_id: SubjectAltName::OID,
        critical: false,
        extn_value: OctetString::new(san).map_err(build)?,
    }];
    let mut values = SetOfVec::new();
    values
        .insert(Any::encode_from(&extensions).map_err(build)?)
        .map_err(build)?;
    let mut attributes = SetOfVec::new();
    attributes
        .insert(x509_cert::attr::Attribute {
            oid: ExtensionReq::OID,
            values,
        })
        .map_err(build)?;
    let info = CertReqInfo {
        version: Version::V1,
        subject: Default::default(),
        public_key: keys::spki(scheme, key.public_key().as_bytes()).map_err(build)?,
        attributes,
    };
    let tbs = info.to_der().map_err(build)?;
    let signature = custody
        .sign(key, &tbs)
        .map_err(|e| CsrError::Build(e.to_string()))?;
    CertReq {
        info,
        algorithm: keys::signature_algorithm(scheme),
        signature: BitString::from_bytes(&signature).map_err(build)?,
    }
    .to_der()
    .map_err(build)
}
