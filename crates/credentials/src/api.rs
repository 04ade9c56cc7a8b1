//! The JSON resources of the Authentication Service, named as ACME
//! (RFC 8555 §7.1) names them so that an ACME front end can be added
//! without breaking clients:
//!
//! | resource | method | body → answer |
//! | --- | --- | --- |
//! | `new-order` | POST | [`NewOrder`] → [`Order`] (201) |
//! | `order/{id}` | GET | → [`Order`] |
//! | `order/{id}/finalize` | POST | [`Finalize`] → [`Order`] |
//! | `cert/{id}` | GET | → [`CertificateChain`] |
//! | `renew` | POST | [`Renew`] → [`CertificateChain`] (201) |
//! | `revoke-cert` | POST | [`RevokeCert`] → 200 |
//! | `crl` | GET | → DER CRL, `application/pkix-crl` |
//! | `log/checkpoint` | GET | → signed note, `text/plain` |
//! | `log/proof/inclusion?cert_hash=&tree_size=` | GET | → [`InclusionProof`] |
//! | `log/proof/consistency?first=&second=` | GET | → [`ConsistencyProof`] |
//!
//! Binary fields are base64url without padding (as in ACME). Errors are
//! RFC 9457 problem details ([`Problem`], `application/problem+json`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};

use crate::tlog::{Hash, LogError, MAX_PROOF_LEN};

/// Encodes bytes as base64url without padding.
pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// Decodes base64url without padding.
pub fn unb64(text: &str) -> Option<Vec<u8>> {
    B64.decode(text).ok()
}

/// The label signed before a CSR in a [`Renew`] request.
pub const RENEW_LABEL: &[u8] = b"hsmls-as renew v1\0";
/// The label signed before the certificate in a [`RevokeCert`] request.
pub const REVOKE_LABEL: &[u8] = b"hsmls-as revoke-cert v1\0";

/// `new-order`: an enrolment for `identity` with the one-time enrolment
/// token the operator issued for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    /// The identity (SAN URI) to be certified.
    pub identity: String,
    /// The enrolment token (secret; sent once, stored hashed by the AS).
    pub token: String,
}

/// The state of an order (RFC 8555 §7.1.6, without challenges: the
/// enrolment token is the authorisation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum OrderStatus {
    /// Waiting for the CSR.
    Ready,
    /// The certificate has been issued.
    Valid,
    /// The order can no longer be finalized.
    Invalid,
}

/// An order (RFC 8555 §7.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// The order's id.
    pub id: String,
    /// Its state.
    pub status: OrderStatus,
    /// The identity to be certified.
    pub identity: String,
    /// Expiry of the enrolment token, Unix seconds.
    pub expires: u64,
    /// Where to send the CSR (`order/{id}/finalize`).
    pub finalize: String,
    /// Where the certificate is (`cert/{id}`), once issued.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub certificate: Option<String>,
}

/// `order/{id}/finalize`: the PKCS#10 request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finalize {
    /// The DER CSR, base64url.
    pub csr: String,
}

/// An issued certificate with its chain and its place in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateChain {
    /// The certificate id (`cert/{id}`): the serial number in hex.
    pub id: String,
    /// DER certificates, leaf first, base64url.
    pub chain: Vec<String>,
    /// The index of its issuance entry in the transparency log.
    pub log_index: u64,
}

impl CertificateChain {
    /// The DER certificates, leaf first.
    pub fn ders(&self) -> Option<Vec<Vec<u8>>> {
        self.chain.iter().map(|c| unb64(c)).collect()
    }
}

/// `renew`: a new CSR for the same identity, with the current certificate
/// and a signature by its key over [`RENEW_LABEL`] ‖ CSR (proof of
/// possession of the current key). Accepted before the current
/// certificate expires and while it is not revoked.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Renew {
    /// The current DER certificate, base64url.
    pub certificate: String,
    /// The new DER CSR, base64url.
    pub csr: String,
    /// Signature by the current key over `RENEW_LABEL ‖ csr`, in the
    /// X.509 form of its scheme (DER ECDSA, or the 64-byte Ed25519
    /// signature), base64url.
    pub signature: String,
}

/// `revoke-cert` (RFC 8555 §7.6, signed by the certificate's key): a
/// holder revokes its own certificate. The operator revokes through the
/// AS library or `hsmls as revoke`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeCert {
    /// The DER certificate, base64url.
    pub certificate: String,
    /// Signature by the certificate's key (DER ECDSA or Ed25519) over [`REVOKE_LABEL`] ‖
    /// certificate, base64url.
    pub signature: String,
}

/// An inclusion proof of a log entry (RFC 9162 §2.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    /// The entry's leaf index.
    pub index: u64,
    /// The tree size the proof is for.
    pub tree_size: u64,
    /// The canonical entry ([`crate::LogEntry`]), base64url.
    #[serde(with = "b64_bytes")]
    pub entry: Vec<u8>,
    /// The audit path, base64url hashes.
    pub proof: Vec<String>,
}

/// A consistency proof between two tree sizes (RFC 9162 §2.1.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    /// The older size.
    pub first: u64,
    /// The newer size.
    pub second: u64,
    /// The proof, base64url hashes.
    pub proof: Vec<String>,
}

/// Decodes a list of base64url hashes, at most [`MAX_PROOF_LEN`].
pub fn decode_hashes(hashes: &[String]) -> Result<Vec<Hash>, LogError> {
    if hashes.len() > MAX_PROOF_LEN {
        return Err(LogError::ProofTooLong);
    }
    hashes
        .iter()
        .map(|h| {
            unb64(h)
                .and_then(|b| b.try_into().ok())
                .ok_or(LogError::InclusionProof)
        })
        .collect()
}

/// Encodes hashes as base64url.
pub fn encode_hashes(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(|h| b64(h)).collect()
}

impl InclusionProof {
    /// The audit path's hashes.
    pub fn hashes(&self) -> Result<Vec<Hash>, crate::ValidationError> {
        decode_hashes(&self.proof).map_err(crate::ValidationError::BadInclusion)
    }
}

impl ConsistencyProof {
    /// The proof's hashes.
    pub fn hashes(&self) -> Result<Vec<Hash>, LogError> {
        decode_hashes(&self.proof).map_err(|_| LogError::ConsistencyProof)
    }
}

mod b64_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::b64(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        super::unb64(&s).ok_or_else(|| serde::de::Error::custom("bad base64url"))
    }
}

/// An RFC 9457 problem detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// A URI naming the rule broken (see [`problem`]).
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened this time.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
}

/// The problem types of the AS. Where ACME (RFC 8555 §6.7) has a type for
/// the rule, it is used; the others are under `urn:hsmls:as:error:`.
pub mod problem {
    /// The request body is not the expected JSON (RFC 8555 `malformed`).
    pub const MALFORMED: &str = "urn:ietf:params:acme:error:malformed";
    /// The CSR does not parse, its signature does not verify, or it asks
    /// for something the AS does not issue (RFC 8555 `badCSR`).
    pub const BAD_CSR: &str = "urn:ietf:params:acme:error:badCSR";
    /// The enrolment token is unknown or bound to another identity (RFC
    /// 8555 `unauthorized`).
    pub const UNAUTHORIZED: &str = "urn:ietf:params:acme:error:unauthorized";
    /// The enrolment token has already been used.
    pub const TOKEN_USED: &str = "urn:hsmls:as:error:tokenUsed";
    /// The enrolment token has expired.
    pub const TOKEN_EXPIRED: &str = "urn:hsmls:as:error:tokenExpired";
    /// No such order.
    pub const UNKNOWN_ORDER: &str = "urn:hsmls:as:error:unknownOrder";
    /// The order is not ready to be finalized (RFC 8555 `orderNotReady`).
    pub const ORDER_NOT_READY: &str = "urn:ietf:params:acme:error:orderNotReady";
    /// No such certificate issued by this AS.
    pub const UNKNOWN_CERTIFICATE: &str = "urn:hsmls:as:error:unknownCertificate";
    /// The certificate has been revoked (RFC 8555 `alreadyRevoked`).
    pub const ALREADY_REVOKED: &str = "urn:ietf:params:acme:error:alreadyRevoked";
    /// The certificate has expired: renewal is too late.
    pub const CERTIFICATE_EXPIRED: &str = "urn:hsmls:as:error:certificateExpired";
    /// The proof-of-possession signature does not verify.
    pub const BAD_SIGNATURE: &str = "urn:hsmls:as:error:badProofOfPossession";
    /// The request body is larger than the AS accepts.
    pub const TOO_LARGE: &str = "urn:hsmls:as:error:requestTooLarge";
    /// No such log entry or tree size.
    pub const UNKNOWN_LOG_ENTRY: &str = "urn:hsmls:as:error:unknownLogEntry";
    /// No such resource.
    pub const NOT_FOUND: &str = "urn:hsmls:as:error:notFound";
    /// The AS failed (storage or token); nothing was issued.
    pub const SERVER_INTERNAL: &str = "urn:ietf:params:acme:error:serverInternal";
}
