//! The signature keys an X.509 MLS credential may carry, one per MLS
//! signature scheme (RFC 9420 §5.1.2, §17.1): how each is written in a
//! SubjectPublicKeyInfo (RFC 5480 for ECDSA, RFC 8410 for Ed25519), which
//! X.509 signature algorithm it signs with (RFC 5758 §3.2, RFC 8410 §3),
//! and the verification of such a signature (a CSR's proof of possession).
//!
//! | scheme | SPKI algorithm | X.509 signature | cipher suites |
//! | --- | --- | --- | --- |
//! | `ecdsa_secp256r1_sha256` | id-ecPublicKey, secp256r1 | ecdsa-with-SHA256 | 0x0002 |
//! | `ecdsa_secp384r1_sha384` | id-ecPublicKey, secp384r1 | ecdsa-with-SHA384 | 0x0007 |
//! | `ecdsa_secp521r1_sha512` | id-ecPublicKey, secp521r1 | ecdsa-with-SHA512 | 0x0005 |
//! | `ed25519` | id-Ed25519 (no parameters) | id-Ed25519 | 0x0001, 0x0003 |
//!
//! The key bytes in the SPKI's BIT STRING are the MLS `SignaturePublicKey`
//! bytes of the scheme (the uncompressed SEC1 point; the 32-byte Ed25519
//! key), so "the certificate's key is the LeafNode's signature key" is a
//! byte comparison plus a scheme comparison.

use der::asn1::{Any, BitString, ObjectIdentifier};
use der::{Decode, Encode};
use hsmls::wire::CipherSuite;
pub use hsmls_custody::SignatureScheme;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

/// id-ecPublicKey (RFC 5480 §2.1.1).
pub const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// secp256r1 (RFC 5480 §2.1.1.1).
pub const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// secp384r1 (RFC 5480 §2.1.1.1).
pub const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// secp521r1 (RFC 5480 §2.1.1.1).
pub const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");
/// id-Ed25519 (RFC 8410 §3), both the key and the signature algorithm.
pub const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
/// ecdsa-with-SHA256 (RFC 5758 §3.2).
pub const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
/// ecdsa-with-SHA384 (RFC 5758 §3.2).
pub const OID_ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
/// ecdsa-with-SHA512 (RFC 5758 §3.2).
pub const OID_ECDSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");

/// Every signature scheme a credential's key may have.
pub const SCHEMES: [SignatureScheme; 4] = [
    SignatureScheme::Ed25519,
    SignatureScheme::EcdsaSecp256r1Sha256,
    SignatureScheme::EcdsaSecp384r1Sha384,
    SignatureScheme::EcdsaSecp521r1Sha512,
];

/// The named curve of an ECDSA scheme; `None` for Ed25519.
fn curve(scheme: SignatureScheme) -> Option<ObjectIdentifier> {
    match scheme {
        SignatureScheme::EcdsaSecp256r1Sha256 => Some(OID_P256),
        SignatureScheme::EcdsaSecp384r1Sha384 => Some(OID_P384),
        SignatureScheme::EcdsaSecp521r1Sha512 => Some(OID_P521),
        _ => None,
    }
}

/// The scheme of a SubjectPublicKeyInfo's algorithm, if it is one an MLS
/// credential may carry (and its key has the scheme's length).
pub fn scheme_of_spki(spki: &SubjectPublicKeyInfoOwned) -> Option<SignatureScheme> {
    let scheme = if spki.algorithm.oid == OID_ED25519 {
        // RFC 8410 §3: the parameters MUST be absent.
        if spki.algorithm.parameters.is_some() {
            return None;
        }
        SignatureScheme::Ed25519
    } else if spki.algorithm.oid == OID_EC_PUBLIC_KEY {
        let named = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())?;
        SCHEMES.into_iter().find(|s| curve(*s) == Some(named))?
    } else {
        return None;
    };
    let key = spki.subject_public_key.as_bytes()?;
    (key.len() == scheme.public_key_len()).then_some(scheme)
}

/// The SubjectPublicKeyInfo of `public_key` (the MLS encoding of a key of
/// `scheme`).
pub fn spki(
    scheme: SignatureScheme,
    public_key: &[u8],
) -> Result<SubjectPublicKeyInfoOwned, der::Error> {
    let algorithm = match curve(scheme) {
        Some(named) => AlgorithmIdentifierOwned {
            oid: OID_EC_PUBLIC_KEY,
            parameters: Some(Any::encode_from(&named)?),
        },
        None => AlgorithmIdentifierOwned {
            oid: OID_ED25519,
            parameters: None,
        },
    };
    Ok(SubjectPublicKeyInfoOwned {
        algorithm,
        subject_public_key: BitString::from_bytes(public_key)?,
    })
}

/// The DER SubjectPublicKeyInfo of `public_key`.
pub fn spki_der(scheme: SignatureScheme, public_key: &[u8]) -> Result<Vec<u8>, der::Error> {
    spki(scheme, public_key)?.to_der()
}

/// The X.509 signature algorithm a key of `scheme` signs with: ECDSA with
/// the scheme's hash (parameters absent, RFC 5758 §3.2), or id-Ed25519.
pub fn signature_algorithm(scheme: SignatureScheme) -> AlgorithmIdentifierOwned {
    let oid = match scheme {
        SignatureScheme::EcdsaSecp256r1Sha256 => OID_ECDSA_SHA256,
        SignatureScheme::EcdsaSecp384r1Sha384 => OID_ECDSA_SHA384,
        SignatureScheme::EcdsaSecp521r1Sha512 => OID_ECDSA_SHA512,
        _ => OID_ED25519,
    };
    AlgorithmIdentifierOwned {
        oid,
        parameters: None,
    }
}

/// An MLS cipher suite whose signature scheme is `scheme` (the one whose
/// `Signature.Verify` this module borrows).
fn suite_of(scheme: SignatureScheme) -> Option<hsmls_crypto::CipherSuite> {
    SCHEME_SUITES
        .into_iter()
        .find(|s| suite_scheme(CipherSuite(*s)) == Some(scheme))
        .map(hsmls_crypto::CipherSuite)
}

const SCHEME_SUITES: [u16; 4] = [0x0001, 0x0002, 0x0005, 0x0007];

/// The signature scheme of an MLS cipher suite hsmls implements (RFC 9420
/// §17.1), or `None` for another suite.
pub fn suite_scheme(suite: CipherSuite) -> Option<SignatureScheme> {
    hsmls_crypto::CipherSuite(suite.0)
        .provider()
        .ok()
        .map(|p| p.signature_scheme())
}

/// Verifies an X.509 signature (a CSR's or a challenge's) made by a key of
/// `scheme`: DER ECDSA over the scheme's hash of `message`, or PureEdDSA
/// over `message`. `true` when it verifies.
pub fn verify(
    scheme: SignatureScheme,
    public_key: &[u8],
    message: &[u8],
    signature: &[u8],
) -> bool {
    suite_of(scheme)
        .and_then(|s| s.provider().ok())
        .is_some_and(|p| p.verify(public_key, &[message], signature).is_ok())
}

/// The scheme and key of a DER SubjectPublicKeyInfo.
pub fn parse_spki_der(der_bytes: &[u8]) -> Option<(SignatureScheme, Vec<u8>)> {
    let spki = SubjectPublicKeyInfoOwned::from_der(der_bytes).ok()?;
    let scheme = scheme_of_spki(&spki)?;
    Some((scheme, spki.subject_public_key.as_bytes()?.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spki_round_trips_for_every_scheme_and_suites_name_their_scheme() {
        for scheme in SCHEMES {
            let key = vec![4u8; scheme.public_key_len()];
            let der = spki_der(scheme, &key).unwrap();
            assert_eq!(parse_spki_der(&der), Some((scheme, key.clone())));
            // A key of another length is not a key of the scheme.
            let short = spki_der(scheme, &key[1..]).unwrap();
            assert_eq!(parse_spki_der(&short), None);
        }
        assert_eq!(suite_scheme(CipherSuite(1)), Some(SignatureScheme::Ed25519));
        assert_eq!(suite_scheme(CipherSuite(3)), Some(SignatureScheme::Ed25519));
        assert_eq!(
            suite_scheme(CipherSuite(5)),
            Some(SignatureScheme::EcdsaSecp521r1Sha512)
        );
        assert_eq!(
            suite_scheme(CipherSuite(7)),
            Some(SignatureScheme::EcdsaSecp384r1Sha384)
        );
        assert_eq!(suite_scheme(CipherSuite(4)), None);
    }
}
