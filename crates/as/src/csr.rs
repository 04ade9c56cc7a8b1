//! Checking a PKCS#10 request (RFC 2986) without C code: x509-cert parses
//! it, p256 verifies its signature (the client's proof of possession).
//! Only the public key and the SAN URI identity are read; every other
//! requested extension is ignored, never copied into a certificate.

use der::oid::AssociatedOid;
use der::{Decode, Encode};
use p256::ecdsa::signature::Verifier;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::request::{CertReq, ExtensionReq};

/// The largest CSR accepted (bytes of DER).
pub const MAX_CSR_LEN: usize = 8 * 1024;

const OID_EC_PUBLIC_KEY: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_ECDSA_SHA256: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");

/// Why a CSR was refused. One variant per rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CsrError {
    /// Larger than [`MAX_CSR_LEN`].
    #[error("the CSR is too large")]
    TooLarge,
    /// Not a DER PKCS#10 request.
    #[error("the CSR does not parse")]
    Malformed,
    /// The key is not a P-256 key or the signature not ECDSA-SHA256.
    #[error("the CSR's key or signature algorithm is not P-256 ECDSA with SHA-256")]
    UnsupportedAlgorithm,
    /// The signature does not verify with the request's key: no proof of
    /// possession.
    #[error("the CSR's signature does not verify with its key")]
    BadSignature,
    /// The request names an identity other than the order's, or several.
    #[error("the CSR's SAN URI is not the order's identity")]
    IdentityMismatch,
}

/// What the AS takes from a verified CSR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCsr {
    /// The P-256 key (SEC1 uncompressed point).
    pub public_key: Vec<u8>,
    /// The DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
    /// The SAN URIs the request asks for (checked against the order).
    pub uris: Vec<String>,
}

/// Parses `der` and verifies its self-signature.
pub fn verify_csr(der_bytes: &[u8]) -> Result<VerifiedCsr, CsrError> {
    if der_bytes.len() > MAX_CSR_LEN {
        return Err(CsrError::TooLarge);
    }
    let req = CertReq::from_der(der_bytes).map_err(|_| CsrError::Malformed)?;
    let spki = &req.info.public_key;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok());
    if spki.algorithm.oid != OID_EC_PUBLIC_KEY
        || curve != Some(OID_P256)
        || req.algorithm.oid != OID_ECDSA_SHA256
    {
        return Err(CsrError::UnsupportedAlgorithm);
    }
    let public_key = spki
        .subject_public_key
        .as_bytes()
        .ok_or(CsrError::Malformed)?
        .to_vec();
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&public_key)
        .map_err(|_| CsrError::UnsupportedAlgorithm)?;
    let signature = req
        .signature
        .as_bytes()
        .and_then(|s| p256::ecdsa::Signature::from_der(s).ok())
        .ok_or(CsrError::BadSignature)?;
    let info = req.info.to_der().map_err(|_| CsrError::Malformed)?;
    key.verify(&info, &signature)
        .map_err(|_| CsrError::BadSignature)?;
    let mut uris = Vec::new();
    for attr in req.info.attributes.iter() {
        if attr.oid != ExtensionReq::OID {
            continue;
        }
        for value in attr.values.iter() {
            let exts: ExtensionReq = value.decode_as().map_err(|_| CsrError::Malformed)?;
            for ext in exts.0 {
                if ext.extn_id != SubjectAltName::OID {
                    continue;
                }
                let san = SubjectAltName::from_der(ext.extn_value.as_bytes())
                    .map_err(|_| CsrError::Malformed)?;
                for name in san.0 {
                    if let GeneralName::UniformResourceIdentifier(uri) = name {
                        uris.push(uri.as_str().to_owned());
                    }
                }
            }
        }
    }
    Ok(VerifiedCsr {
        public_key,
        spki_der: spki.to_der().map_err(|_| CsrError::Malformed)?,
        uris,
    })
}
