//! X.509 MLS credentials for hsmls, shared by every member and the
//! Authentication Service (RFC 9750 §5), with no server dependency:
//!
//! * [`X509CredentialValidator`]: the one credential check of every member
//!   (an [`hsmls::CredentialValidator`]): chain to the AS root, validity,
//!   CRL, id-kp-imUri, KeyUsage, identity and signature key, and optionally
//!   inclusion in the AS's transparency log;
//! * [`csr`]: PKCS#10 requests signed by a key held in custody, and the MLS
//!   x509 [`Credential`](hsmls::wire::Credential) from a chain;
//! * [`tlog`]: RFC 9162 Merkle proofs, C2SP signed checkpoints, and the
//!   [`LogMonitor`](tlog::LogMonitor) that detects a split view;
//! * [`api`] and [`client`]: the AS's JSON resources (named as ACME, RFC
//!   8555, names them) and an async HTTPS client for them;
//! * [`LogEntry`]: the canonical encoding of a log entry (an issuance or a
//!   revocation).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod client;
pub mod csr;
pub mod keys;
pub mod tlog;
pub mod x509;

pub use api::InclusionProof;
pub use x509::{
    Clock, FixedClock, LeafInfo, SystemClock, Transparency, ValidationError,
    X509CredentialValidator, cert_hash, leaf_info, x509_credential,
};

use tlog::Hash;

/// What a log entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntryKind {
    /// A certificate was issued.
    Issued = 1,
    /// A certificate was revoked.
    Revoked = 2,
}

/// The largest identity (SAN URI) a log entry carries, in bytes.
pub const MAX_IDENTITY_LEN: usize = 1024;
/// The largest serial number (RFC 5280 §4.1.2.2: at most 20 octets).
pub const MAX_SERIAL_LEN: usize = 20;

/// One entry of the AS's transparency log: an issuance or a revocation.
/// Its canonical encoding (the bytes the log hashes as a leaf) is, in the
/// TLS presentation language of RFC 8446 §3:
///
/// ```text
/// struct {
///     uint8 kind;               // 1 issued, 2 revoked
///     uint64 time;              // Unix seconds
///     opaque serial<1..20>;     // certificate serial number
///     opaque identity<1..2^16-1>; // the SAN URI, UTF-8
///     opaque spki_hash[32];     // SHA-256 of the SubjectPublicKeyInfo
///     opaque cert_hash[32];     // SHA-256 of the DER certificate
/// } LogEntry;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Issuance or revocation.
    pub kind: EntryKind,
    /// When it happened (Unix seconds).
    pub time: u64,
    /// The certificate's serial number.
    pub serial: Vec<u8>,
    /// The identity the certificate binds.
    pub identity: String,
    /// SHA-256 of the certificate's SubjectPublicKeyInfo (DER).
    pub spki_hash: Hash,
    /// SHA-256 of the DER certificate.
    pub cert_hash: Hash,
}

/// A log entry that does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed log entry: {0}")]
pub struct EntryError(pub &'static str);

impl LogEntry {
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(1 + 8 + 1 + self.serial.len() + 2 + self.identity.len() + 64);
        out.push(self.kind as u8);
        out.extend_from_slice(&self.time.to_be_bytes());
        out.push(self.serial.len() as u8);
        out.extend_from_slice(&self.serial);
        out.extend_from_slice(&(self.identity.len() as u16).to_be_bytes());
        out.extend_from_slice(self.identity.as_bytes());
        out.extend_from_slice(&self.spki_hash);
        out.extend_from_slice(&self.cert_hash);
        out
    }

    /// Decodes the canonical encoding; every length is bounded and the
    /// whole input must be used.
    pub fn decode(bytes: &[u8]) -> Result<Self, EntryError> {
        fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], EntryError> {
            if b.len() < n {
                return Err(EntryError("truncated"));
            }
            let (head, tail) = b.split_at(n);
            *b = tail;
            Ok(head)
        }
        let mut b = bytes;
        let kind = match take(&mut b, 1)?[0] {
            1 => EntryKind::Issued,
            2 => EntryKind::Revoked,
            _ => return Err(EntryError("unknown kind")),
        };
        let time = u64::from_be_bytes(
            take(&mut b, 8)?
                .try_into()
                .map_err(|_| EntryError("time"))?,
        );
        let serial_len = take(&mut b, 1)?[0] as usize;
        if serial_len == 0 || serial_len > MAX_SERIAL_LEN {
            return Err(EntryError("serial length"));
        }
        let serial = take(&mut b, serial_len)?.to_vec();
        let id_len = u16::from_be_bytes([take(&mut b, 1)?[0], take(&mut b, 1)?[0]]) as usize;
        if id_len == 0 || id_len > MAX_IDENTITY_LEN {
            return Err(EntryError("identity length"));
        }
        let identity = String::from_utf8(take(&mut b, id_len)?.to_vec())
            .map_err(|_| EntryError("identity is not UTF-8"))?;
        let spki_hash: Hash = take(&mut b, 32)?
            .try_into()
            .map_err(|_| EntryError("hash"))?;
        let cert_hash: Hash = take(&mut b, 32)?
            .try_into()
            .map_err(|_| EntryError("hash"))?;
        if !b.is_empty() {
            return Err(EntryError("trailing bytes"));
        }
        Ok(LogEntry {
            kind,
            time,
            serial,
            identity,
            spki_hash,
            cert_hash,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_entries_round_trip_and_bad_ones_are_refused() {
        let e = LogEntry {
            kind: EntryKind::Revoked,
            time: 1_750_000_000,
            serial: vec![0x42; 16],
            identity: "im:alice@example.com".into(),
            spki_hash: [1; 32],
            cert_hash: [2; 32],
        };
        let bytes = e.encode();
        assert_eq!(LogEntry::decode(&bytes).unwrap(), e);
        assert_eq!(
            LogEntry::decode(&bytes[..bytes.len() - 1]),
            Err(EntryError("truncated"))
        );
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(LogEntry::decode(&long), Err(EntryError("trailing bytes")));
        let mut kind = bytes.clone();
        kind[0] = 3;
        assert_eq!(LogEntry::decode(&kind), Err(EntryError("unknown kind")));
        let mut serial = bytes;
        serial[9] = 21;
        assert_eq!(LogEntry::decode(&serial), Err(EntryError("serial length")));
    }
}
