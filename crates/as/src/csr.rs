//! Checking a PKCS#10 request (RFC 2986) without C code: x509-cert parses
//! it, and the signature (the client's proof of possession) is verified
//! with the key's own MLS signature scheme (Ed25519, or ECDSA on P-256,
//! P-384 or P-521 with SHA-256, SHA-384 or SHA-512:
//! [`hsmls_credentials::keys`]).
//! Only the public key and the SAN URI identity are read; every other
//! requested extension is ignored, never copied into a certificate.

use der::oid::AssociatedOid;
use der::{Decode, Encode};
use hsmls_credentials::keys::{self, SignatureScheme};
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::request::{CertReq, ExtensionReq};

/// The largest CSR accepted (bytes of DER).
pub const MAX_CSR_LEN: usize = 8 * 1024;

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
    /// The key is not an Ed25519, P-256, P-384 or P-521 key, or the
    /// request is not signed with that key's own algorithm
    /// (ecdsa-with-SHA256/-SHA384/-SHA512 or Ed25519).
    #[error(
        "the CSR's key is not Ed25519/P-256/P-384/P-521, or its signature algorithm is not the key's"
    )]
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
    /// The key's signature scheme.
    pub scheme: SignatureScheme,
    /// The key, in the MLS encoding of its scheme.
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
    let scheme = keys::scheme_of_spki(spki).ok_or(CsrError::UnsupportedAlgorithm)?;
    let expected = keys::signature_algorithm(scheme);
    if req.algorithm.oid != expected.oid || req.algorithm.parameters.is_some() {
        return Err(CsrError::UnsupportedAlgorithm);
    }
    let public_key = spki
        .subject_public_key
        .as_bytes()
        .ok_or(CsrError::Malformed)?
        .to_vec();
    let signature = req.signature.as_bytes().ok_or(CsrError::BadSignature)?;
    let info = req.info.to_der().map_err(|_| CsrError::Malformed)?;
    if !keys::verify(scheme, &public_key, &info, signature) {
        return Err(CsrError::BadSignature);
    }
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
        scheme,
        public_key,
        spki_der: spki.to_der().map_err(|_| CsrError::Malformed)?,
        uris,
    })
}
