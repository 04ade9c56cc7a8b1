//! The RFC 9420 wire format: every structure an MLSMessage can carry, with
//! tls_codec encoding and bounded, panic-free decoding.
//!
//! This is the wire layer only: decoding checks syntax (lengths, enum values,
//! presence of fields), not signatures, MACs or group rules. Decode untrusted
//! bytes with [`Decode::decode`], which rejects trailing bytes and returns a
//! [`CodecError`].
//!
//! Registries (RFC 9420 §13, §17): extension types, cipher suites, protocol
//! versions, proposal and credential types in `Capabilities`, and wire formats
//! are open `u16` values that keep unknown code points. Where the RFC gives no
//! way to skip an unknown value (the `select` bodies of `Proposal`,
//! `Credential`, `MLSMessage`) or the enumeration is closed (`ContentType`,
//! `SenderType`, `LeafNodeSource`, `NodeType`, `PSKType`,
//! `ResumptionPSKUsage`, `ProposalOrRefType`), an unknown or reserved value is
//! a decoding error; RFC 9420 §13.5 also says an unsupported
//! `Proposal.proposal_type` or `Credential.credential_type` rejects the message.

mod extensions;
mod framing;
mod group;
mod message;
mod proposals;
mod tree;
mod types;
pub mod vl;

pub use extensions::*;
pub use framing::*;
pub use group::*;
pub use message::*;
pub use proposals::*;
pub use tree::*;
pub use types::*;
pub use vl::SecretBytes;

use thiserror::Error;
use tls_codec::{DeserializeBytes, Serialize};

/// Errors of encoding and decoding the wire format.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The input ended before the structure was complete, or a vector's
    /// declared length runs past the end of the input.
    #[error("input truncated")]
    Truncated,
    /// Bytes remain after the top-level structure.
    #[error("trailing bytes after the structure")]
    TrailingData,
    /// A variable-length header is over-long (8 bytes), not minimal, or the
    /// length is above 2^30 - 1.
    #[error("invalid variable-length vector header")]
    InvalidLengthHeader,
    /// An unknown or reserved value in a field that must reject it.
    #[error("unknown or reserved value {0}")]
    UnknownValue(u64),
    /// Another syntax error (e.g. an `optional<T>` flag that is not 0 or 1,
    /// non-zero padding, a field inconsistent with its selector).
    #[error("malformed encoding: {0}")]
    Malformed(String),
    /// The value cannot be encoded (e.g. a vector longer than 2^30 - 1 bytes
    /// or fields inconsistent with their selector).
    #[error("cannot encode: {0}")]
    Encoding(String),
}

impl From<tls_codec::Error> for CodecError {
    fn from(e: tls_codec::Error) -> Self {
        use tls_codec::Error as E;
        match e {
            E::EndOfStream => CodecError::Truncated,
            E::TrailingData => CodecError::TrailingData,
            E::InvalidVectorLength => CodecError::InvalidLengthHeader,
            E::UnknownValue(v) => CodecError::UnknownValue(v),
            E::DecodingError(s) => CodecError::Malformed(s),
            E::InvalidInput => CodecError::Malformed("invalid input".into()),
            E::EncodingError(s) | E::InvalidWriteLength(s) => CodecError::Encoding(s),
            E::LibraryError => CodecError::Encoding("tls_codec library error".into()),
        }
    }
}

/// Decoding a complete structure from untrusted bytes.
///
/// Implemented for the wire types only (not for bare `Vec<T>` or
/// integers, whose tls_codec decoders are not hsmls's bounded decoders of
/// variable-length vectors).
pub trait Decode: Sized {
    /// Decodes `bytes` as exactly one `Self`: trailing bytes are an error.
    fn decode(bytes: &[u8]) -> Result<Self, CodecError>;
}

/// Encoding a structure to bytes.
pub trait Encode {
    /// The TLS presentation-language encoding of `self`.
    fn encode(&self) -> Result<Vec<u8>, CodecError>;
}

fn decode_exact<T: DeserializeBytes>(bytes: &[u8]) -> Result<T, CodecError> {
    let (v, rest) = T::tls_deserialize_bytes(bytes)?;
    if rest.is_empty() {
        Ok(v)
    } else {
        Err(CodecError::TrailingData)
    }
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(v.tls_serialized_len());
    v.tls_serialize(&mut out)?;
    Ok(out)
}

macro_rules! wire_types {
    (encode only: $($e:ty),* ; $($t:ty),* $(,)?) => {
        $(impl Encode for $e {
            fn encode(&self) -> Result<Vec<u8>, CodecError> { encode(self) }
        })*
        $(impl Decode for $t {
            fn decode(bytes: &[u8]) -> Result<Self, CodecError> { decode_exact(bytes) }
        }
        impl Encode for $t {
            fn encode(&self) -> Result<Vec<u8>, CodecError> { encode(self) }
        })*
    };
}

wire_types!(
    encode only: FramedContentAuthData, PrivateMessageContent;
    Add, ApplicationId, AuthenticatedContent, Capabilities, Certificate, CipherSuite, Commit,
    ContentType, Credential, CredentialType, EncryptedGroupSecrets, Extension, ExtensionType,
    ExternalInit, ExternalPub, ExternalSender, ExternalSenders, FramedContent,
    FramedContentBody, GroupContext, GroupContextExtensions, GroupInfo, GroupSecrets,
    HpkeCiphertext, HpkePublicKey, KeyPackage, KeyPackageRef, LeafNode, LeafNodeSource,
    Lifetime, Mac, MlsMessage, MlsMessageBody, Node, NodeType, ParentNode, PathSecret,
    PreSharedKey, PreSharedKeyId, PrivateContentAad, PrivateMessage, Proposal, ProposalOrRef,
    ProposalRef, ProposalType, ProtocolVersion, Psk, PskLabel, PublicMessage, RatchetTree,
    ReInit, Remove, RequiredCapabilities, ResumptionPsk, ResumptionPskUsage, Sender,
    SenderData, SenderDataAad, SignaturePublicKey, Update, UpdatePath, UpdatePathNode, Welcome,
    WireFormat,
);
