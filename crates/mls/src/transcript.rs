//! Transcript hashes and the confirmation tag (RFC 9420 §8.2, §6.1).
//!
//! ```text
//! confirmed_transcript_hash_[epoch] =
//!     Hash(interim_transcript_hash_[epoch - 1] || ConfirmedTranscriptHashInput_[epoch])
//! interim_transcript_hash_[epoch] =
//!     Hash(confirmed_transcript_hash_[epoch] || InterimTranscriptHashInput_[epoch])
//! confirmation_tag = MAC(confirmation_key, confirmed_transcript_hash)
//! ```
//!
//! The confirmed hash covers a Commit's AuthenticatedContent up to its
//! signature; the interim hash adds the Commit's confirmation tag.

use hsmls_crypto::{CipherSuiteProvider, Digest, Secret};
use tls_codec::{Serialize, Size};

use crate::codec::vl::vl_bytes;
use crate::codec::{AuthenticatedContent, CodecError, ContentType, FramedContent, Mac, WireFormat};

/// Errors of the transcript hash computation and confirmation tag check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TranscriptError {
    /// Only Commits enter the transcript (RFC 9420 §8.2).
    #[error("transcript hashes are computed over commits, not {0:?} content")]
    NotACommit(ContentType),
    /// The Commit has no confirmation tag (needed for the interim hash).
    #[error("the commit has no confirmation_tag")]
    MissingConfirmationTag,
    /// The confirmation tag does not match `MAC(confirmation_key,
    /// confirmed_transcript_hash)` (RFC 9420 §6.1).
    #[error("invalid confirmation tag")]
    InvalidConfirmationTag,
    /// Encoding an input failed.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl From<tls_codec::Error> for TranscriptError {
    fn from(e: tls_codec::Error) -> Self {
        TranscriptError::Codec(e.into())
    }
}

/// `ConfirmedTranscriptHashInput` (RFC 9420 §8.2), borrowing from a
/// Commit's AuthenticatedContent.
#[derive(Debug, Clone, Copy)]
pub struct ConfirmedTranscriptHashInput<'a> {
    /// `WireFormat wire_format`
    pub wire_format: WireFormat,
    /// `FramedContent content` (with `content_type == commit`)
    pub content: &'a FramedContent,
    /// `opaque signature<V>`
    pub signature: &'a [u8],
}

impl<'a> ConfirmedTranscriptHashInput<'a> {
    /// The input of a Commit's AuthenticatedContent; the confirmation tag
    /// need not be set yet (the sender computes it from this hash).
    pub fn new(commit: &'a AuthenticatedContent) -> Result<Self, TranscriptError> {
        let content_type = commit.content.content_type();
        if content_type != ContentType::Commit {
            return Err(TranscriptError::NotACommit(content_type));
        }
        Ok(ConfirmedTranscriptHashInput {
            wire_format: commit.wire_format,
            content: &commit.content,
            signature: &commit.auth.signature,
        })
    }

    /// The TLS encoding.
    pub fn encode(&self) -> Result<Vec<u8>, TranscriptError> {
        let content_type = self.content.content_type();
        if content_type != ContentType::Commit {
            return Err(TranscriptError::NotACommit(content_type));
        }
        let mut out = Vec::with_capacity(
            self.wire_format.tls_serialized_len()
                + self.content.tls_serialized_len()
                + vl_bytes::tls_serialized_len(self.signature),
        );
        self.wire_format.tls_serialize(&mut out)?;
        self.content.tls_serialize(&mut out)?;
        vl_bytes::tls_serialize(self.signature, &mut out)?;
        Ok(out)
    }
}

/// `InterimTranscriptHashInput` (RFC 9420 §8.2).
#[derive(Debug, Clone, Copy)]
pub struct InterimTranscriptHashInput<'a> {
    /// `MAC confirmation_tag`
    pub confirmation_tag: &'a Mac,
}

impl<'a> InterimTranscriptHashInput<'a> {
    /// The input of a Commit's AuthenticatedContent, which must carry its
    /// confirmation tag.
    pub fn new(commit: &'a AuthenticatedContent) -> Result<Self, TranscriptError> {
        let content_type = commit.content.content_type();
        if content_type != ContentType::Commit {
            return Err(TranscriptError::NotACommit(content_type));
        }
        let confirmation_tag = commit
            .auth
            .confirmation_tag
            .as_ref()
            .ok_or(TranscriptError::MissingConfirmationTag)?;
        Ok(InterimTranscriptHashInput { confirmation_tag })
    }

    /// The TLS encoding.
    pub fn encode(&self) -> Result<Vec<u8>, TranscriptError> {
        let mut out = Vec::with_capacity(self.confirmation_tag.tls_serialized_len());
        self.confirmation_tag.tls_serialize(&mut out)?;
        Ok(out)
    }
}

/// ```text
/// confirmed_transcript_hash_[epoch] =
///     Hash(interim_transcript_hash_[epoch - 1] || ConfirmedTranscriptHashInput_[epoch])
/// ```
pub fn confirmed_transcript_hash(
    cs: &dyn CipherSuiteProvider,
    interim_transcript_hash_before: &[u8],
    input: &ConfirmedTranscriptHashInput<'_>,
) -> Result<Digest, TranscriptError> {
    let encoded = input.encode()?;
    Ok(cs.hash(&[interim_transcript_hash_before, &encoded]))
}

/// `interim_transcript_hash_[epoch] = Hash(confirmed_transcript_hash_[epoch]
/// || InterimTranscriptHashInput_[epoch])`.
pub fn interim_transcript_hash(
    cs: &dyn CipherSuiteProvider,
    confirmed_transcript_hash: &[u8],
    input: &InterimTranscriptHashInput<'_>,
) -> Result<Digest, TranscriptError> {
    let encoded = input.encode()?;
    Ok(cs.hash(&[confirmed_transcript_hash, &encoded]))
}

/// `confirmation_tag = MAC(confirmation_key, confirmed_transcript_hash)`
/// (RFC 9420 §6.1, §8.1).
pub fn confirmation_tag(
    cs: &dyn CipherSuiteProvider,
    confirmation_key: &Secret,
    confirmed_transcript_hash: &[u8],
) -> Mac {
    Mac(cs
        .mac(confirmation_key.as_bytes(), &[confirmed_transcript_hash])
        .to_vec())
}

/// Checks a confirmation tag in constant time (RFC 9420 §6.1, §12.4.2).
pub fn verify_confirmation_tag(
    cs: &dyn CipherSuiteProvider,
    confirmation_key: &Secret,
    confirmed_transcript_hash: &[u8],
    tag: &Mac,
) -> Result<(), TranscriptError> {
    cs.verify_mac(
        confirmation_key.as_bytes(),
        &[confirmed_transcript_hash],
        tag.as_slice(),
    )
    .map_err(|_| TranscriptError::InvalidConfirmationTag)
}

/// The two transcript hashes of an epoch (RFC 9420 §8.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TranscriptHashes {
    /// `confirmed_transcript_hash` (in the GroupContext).
    pub confirmed: Vec<u8>,
    /// `interim_transcript_hash`.
    pub interim: Vec<u8>,
}

impl TranscriptHashes {
    /// The hashes of epoch 0: both the zero-length string.
    pub fn initial() -> Self {
        TranscriptHashes::default()
    }

    /// The hashes of the epoch that `commit` (with its confirmation tag)
    /// starts, from this epoch's hashes.
    pub fn next(
        &self,
        cs: &dyn CipherSuiteProvider,
        commit: &AuthenticatedContent,
    ) -> Result<Self, TranscriptError> {
        let confirmed = confirmed_transcript_hash(
            cs,
            &self.interim,
            &ConfirmedTranscriptHashInput::new(commit)?,
        )?;
        let interim =
            interim_transcript_hash(cs, &confirmed, &InterimTranscriptHashInput::new(commit)?)?;
        Ok(TranscriptHashes {
            confirmed: confirmed.to_vec(),
            interim: interim.to_vec(),
        })
    }

    /// The hashes of a joiner (RFC 9420 §12.4.3.1): the confirmed hash
    /// from the GroupInfo's GroupContext, the interim hash from it and the
    /// GroupInfo's confirmation tag.
    pub fn from_group_info(
        cs: &dyn CipherSuiteProvider,
        confirmed_transcript_hash: &[u8],
        confirmation_tag: &Mac,
    ) -> Result<Self, TranscriptError> {
        let interim = interim_transcript_hash(
            cs,
            confirmed_transcript_hash,
            &InterimTranscriptHashInput { confirmation_tag },
        )?;
        Ok(TranscriptHashes {
            confirmed: confirmed_transcript_hash.to_vec(),
            interim: interim.to_vec(),
        })
    }
}
