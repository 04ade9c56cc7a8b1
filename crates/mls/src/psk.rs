//! The PSK secret (RFC 9420 §8.4): the PSKs of a Commit or GroupSecrets
//! chained into the `psk_secret` input of the key schedule.

use hsmls_crypto::{CipherSuiteProvider, CryptoError, Secret};
use tls_codec::Serialize;

use crate::codec::{CodecError, PreSharedKeyId};

/// Errors of the PSK secret computation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PskError {
    /// More PSKs than `PSKLabel.count` (a `uint16`) can express.
    #[error("{0} PSKs are more than a uint16 count allows")]
    TooManyPsks(usize),
    /// A PreSharedKeyID could not be encoded.
    #[error("cannot encode PreSharedKeyID: {0}")]
    Codec(#[from] CodecError),
    /// A cryptographic step failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// One PSK to inject: its `PreSharedKeyID` and its value (an external PSK,
/// or the `resumption_psk` of the epoch it names).
#[derive(Clone, Copy)]
pub struct PskInput<'a> {
    /// The `PreSharedKeyID` (RFC 9420 §8.4).
    pub id: &'a PreSharedKeyId,
    /// The PSK value.
    pub psk: &'a Secret,
}

impl std::fmt::Debug for PskInput<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PskInput")
            .field("id", self.id)
            .finish_non_exhaustive()
    }
}

/// `psk_secret` of RFC 9420 §8.4, for the PSKs in the order the Commit or
/// GroupSecrets lists them:
///
/// ```text
/// psk_extracted_[i] = KDF.Extract(0, psk_[i])
/// psk_input_[i]     = ExpandWithLabel(psk_extracted_[i], "derived psk",
///                                     PSKLabel, KDF.Nh)
/// psk_secret_[i+1]  = KDF.Extract(psk_input_[i], psk_secret_[i])
/// ```
///
/// with `PSKLabel { PreSharedKeyID id; uint16 index; uint16 count; }` and
/// `psk_secret_[0] = 0`. With no PSKs the result is the all-zero vector.
pub fn psk_secret(cs: &dyn CipherSuiteProvider, psks: &[PskInput<'_>]) -> Result<Secret, PskError> {
    let count = u16::try_from(psks.len()).map_err(|_| PskError::TooManyPsks(psks.len()))?;
    let zero = Secret::zero(cs.hash_len());
    let mut psk_secret = Secret::zero(cs.hash_len());
    let mut label = Vec::new();
    for (index, input) in (0u16..).zip(psks) {
        let extracted = cs.kdf_extract(zero.as_bytes(), &[input.psk.as_bytes()]);
        label.clear();
        // PSKLabel, encoded in place: the id, then index and count.
        input
            .id
            .tls_serialize(&mut label)
            .map_err(CodecError::from)?;
        label.extend_from_slice(&index.to_be_bytes());
        label.extend_from_slice(&count.to_be_bytes());
        let psk_input =
            cs.expand_with_label(extracted.as_bytes(), b"derived psk", &label, cs.hash_len())?;
        psk_secret = cs.kdf_extract(psk_input.as_bytes(), &[psk_secret.as_bytes()]);
    }
    Ok(psk_secret)
}
