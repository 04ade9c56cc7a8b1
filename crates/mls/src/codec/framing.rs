//! Message framing (RFC 9420 §6): FramedContent, PublicMessage,
//! PrivateMessage and their authenticated and to-be-signed encodings.

use std::io::Write;

use tls_codec::{
    DeserializeBytes, Error, Serialize, Size, TlsDeserializeBytes, TlsSerialize, TlsSize,
};

use super::CodecError;
use super::group::GroupContext;
use super::proposals::{Commit, Proposal};
use super::types::{Mac, ProtocolVersion, WireFormat};
use super::vl::vl_bytes;
use crate::tree_math::LeafIndex;

/// `ContentType` (RFC 9420 §6). `reserved(0)` and unknown values are rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
#[repr(u8)]
pub enum ContentType {
    /// `application(1)`
    Application = 1,
    /// `proposal(2)`
    Proposal = 2,
    /// `commit(3)`
    Commit = 3,
}

/// `SenderType` with its `select` body: `Sender` (RFC 9420 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
#[repr(u8)]
pub enum Sender {
    /// `member(1)`: `uint32 leaf_index`
    #[tls_codec(discriminant = 1)]
    Member(LeafIndex),
    /// `external(2)`: `uint32 sender_index` into the external_senders extension.
    #[tls_codec(discriminant = 2)]
    External(u32),
    /// `new_member_proposal(3)`
    #[tls_codec(discriminant = 3)]
    NewMemberProposal,
    /// `new_member_commit(4)`
    #[tls_codec(discriminant = 4)]
    NewMemberCommit,
}

/// The `select (content_type)` part of FramedContent and
/// PrivateMessageContent (RFC 9420 §6, §6.3.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
#[repr(u8)]
pub enum FramedContentBody {
    /// `application(1)`: `opaque application_data<V>`
    #[tls_codec(discriminant = 1)]
    Application(#[tls_codec(with = "vl_bytes")] Vec<u8>),
    /// `proposal(2)`
    #[tls_codec(discriminant = 2)]
    Proposal(Proposal),
    /// `commit(3)`
    #[tls_codec(discriminant = 3)]
    Commit(Commit),
}

impl FramedContentBody {
    /// The content type of this body.
    pub fn content_type(&self) -> ContentType {
        match self {
            FramedContentBody::Application(_) => ContentType::Application,
            FramedContentBody::Proposal(_) => ContentType::Proposal,
            FramedContentBody::Commit(_) => ContentType::Commit,
        }
    }

    fn body_len(&self) -> usize {
        match self {
            FramedContentBody::Application(d) => vl_bytes::tls_serialized_len(d),
            FramedContentBody::Proposal(p) => p.tls_serialized_len(),
            FramedContentBody::Commit(c) => c.tls_serialized_len(),
        }
    }

    /// The body without the content type byte.
    fn serialize_body<W: Write>(&self, writer: &mut W) -> Result<usize, Error> {
        match self {
            FramedContentBody::Application(d) => vl_bytes::tls_serialize(d, writer),
            FramedContentBody::Proposal(p) => p.tls_serialize(writer),
            FramedContentBody::Commit(c) => c.tls_serialize(writer),
        }
    }

    /// Decodes a body whose content type is given from outside.
    fn deserialize_body(content_type: ContentType, bytes: &[u8]) -> Result<(Self, &[u8]), Error> {
        Ok(match content_type {
            ContentType::Application => {
                let (d, rest) = vl_bytes::tls_deserialize_bytes(bytes)?;
                (FramedContentBody::Application(d), rest)
            }
            ContentType::Proposal => {
                let (p, rest) = Proposal::tls_deserialize_bytes(bytes)?;
                (FramedContentBody::Proposal(p), rest)
            }
            ContentType::Commit => {
                let (c, rest) = Commit::tls_deserialize_bytes(bytes)?;
                (FramedContentBody::Commit(c), rest)
            }
        })
    }
}

/// `FramedContent` (RFC 9420 §6).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct FramedContent {
    /// `opaque group_id<V>`
    #[tls_codec(with = "vl_bytes")]
    pub group_id: Vec<u8>,
    /// `uint64 epoch`
    pub epoch: u64,
    /// `Sender sender`
    pub sender: Sender,
    /// `opaque authenticated_data<V>`
    #[tls_codec(with = "vl_bytes")]
    pub authenticated_data: Vec<u8>,
    /// `ContentType content_type` and its `select` body.
    pub body: FramedContentBody,
}

impl FramedContent {
    /// The content type.
    pub fn content_type(&self) -> ContentType {
        self.body.content_type()
    }

    /// The encoding of `FramedContentTBS` (RFC 9420 §6.1). `context` must be
    /// given exactly when the sender is `member` or `new_member_commit`.
    pub fn to_be_signed(
        &self,
        wire_format: WireFormat,
        context: Option<&GroupContext>,
    ) -> Result<Vec<u8>, CodecError> {
        let needs_context = matches!(self.sender, Sender::Member(_) | Sender::NewMemberCommit);
        match (needs_context, context) {
            (true, None) => {
                return Err(CodecError::Encoding(
                    "FramedContentTBS of a member or new_member_commit sender needs the GroupContext".into(),
                ));
            }
            (false, Some(_)) => {
                return Err(CodecError::Encoding(
                    "FramedContentTBS of an external or new_member_proposal sender has no GroupContext".into(),
                ));
            }
            _ => {}
        }
        let mut out = Vec::with_capacity(self.to_be_signed_len(context));
        ProtocolVersion::MLS10.tls_serialize(&mut out)?;
        wire_format.tls_serialize(&mut out)?;
        self.tls_serialize(&mut out)?;
        if let Some(ctx) = context {
            ctx.tls_serialize(&mut out)?;
        }
        Ok(out)
    }

    /// The length of the `FramedContentTBS` encoding with `context`, so
    /// that a buffer for it is allocated once: at 100,000 members a
    /// commit is 11 MB, and growing its buffer by the GroupContext at the
    /// end copies all of it again.
    pub fn to_be_signed_len(&self, context: Option<&GroupContext>) -> usize {
        // version, wire_format: two uint16
        4 + self.tls_serialized_len() + context.map_or(0, |c| c.tls_serialized_len())
    }
}

/// `FramedContentAuthData` (RFC 9420 §6.1). `confirmation_tag` is present
/// exactly when the content is a commit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FramedContentAuthData {
    /// `opaque signature<V>`
    pub signature: Vec<u8>,
    /// `MAC confirmation_tag`, for commits only.
    pub confirmation_tag: Option<Mac>,
}

impl FramedContentAuthData {
    /// Decodes the auth data of content of the given type.
    pub fn deserialize_for(
        content_type: ContentType,
        bytes: &[u8],
    ) -> Result<(Self, &[u8]), Error> {
        let (signature, rest) = vl_bytes::tls_deserialize_bytes(bytes)?;
        if content_type == ContentType::Commit {
            let (tag, rest) = Mac::tls_deserialize_bytes(rest)?;
            Ok((
                FramedContentAuthData {
                    signature,
                    confirmation_tag: Some(tag),
                },
                rest,
            ))
        } else {
            Ok((
                FramedContentAuthData {
                    signature,
                    confirmation_tag: None,
                },
                rest,
            ))
        }
    }

    /// Checks that the confirmation tag is present exactly for commits.
    pub fn check_for(&self, content_type: ContentType) -> Result<(), Error> {
        if self.confirmation_tag.is_some() == (content_type == ContentType::Commit) {
            Ok(())
        } else {
            Err(Error::EncodingError(
                "confirmation_tag must be present exactly for commits".into(),
            ))
        }
    }
}

impl Size for FramedContentAuthData {
    fn tls_serialized_len(&self) -> usize {
        vl_bytes::tls_serialized_len(&self.signature)
            + self
                .confirmation_tag
                .as_ref()
                .map_or(0, Size::tls_serialized_len)
    }
}

impl Serialize for FramedContentAuthData {
    fn tls_serialize<W: Write>(&self, writer: &mut W) -> Result<usize, Error> {
        let mut n = vl_bytes::tls_serialize(&self.signature, writer)?;
        if let Some(tag) = &self.confirmation_tag {
            n += tag.tls_serialize(writer)?;
        }
        Ok(n)
    }
}

/// `AuthenticatedContent` (RFC 9420 §6): content with its wire format and
/// authentication data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthenticatedContent {
    /// `WireFormat wire_format`
    pub wire_format: WireFormat,
    /// `FramedContent content`
    pub content: FramedContent,
    /// `FramedContentAuthData auth`
    pub auth: FramedContentAuthData,
}

impl Size for AuthenticatedContent {
    fn tls_serialized_len(&self) -> usize {
        self.wire_format.tls_serialized_len()
            + self.content.tls_serialized_len()
            + self.auth.tls_serialized_len()
    }
}

impl Serialize for AuthenticatedContent {
    fn tls_serialize<W: Write>(&self, writer: &mut W) -> Result<usize, Error> {
        self.auth.check_for(self.content.content_type())?;
        Ok(self.wire_format.tls_serialize(writer)?
            + self.content.tls_serialize(writer)?
            + self.auth.tls_serialize(writer)?)
    }
}

impl DeserializeBytes for AuthenticatedContent {
    fn tls_deserialize_bytes(bytes: &[u8]) -> Result<(Self, &[u8]), Error> {
        let (wire_format, rest) = WireFormat::tls_deserialize_bytes(bytes)?;
        let (content, rest) = FramedContent::tls_deserialize_bytes(rest)?;
        let (auth, rest) = FramedContentAuthData::deserialize_for(content.content_type(), rest)?;
        Ok((
            AuthenticatedContent {
                wire_format,
                content,
                auth,
            },
            rest,
        ))
    }
}

impl AuthenticatedContent {
    /// The encoding of `ConfirmedTranscriptHashInput` (RFC 9420 §8.2):
    /// wire_format, content and signature.
    pub fn confirmed_transcript_hash_input(&self) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(self.tls_serialized_len());
        self.wire_format.tls_serialize(&mut out)?;
        self.content.tls_serialize(&mut out)?;
        vl_bytes::tls_serialize(&self.auth.signature, &mut out)?;
        Ok(out)
    }

    /// The encoding of `InterimTranscriptHashInput` (RFC 9420 §8.2): the
    /// confirmation tag (commits only).
    pub fn interim_transcript_hash_input(&self) -> Result<Vec<u8>, CodecError> {
        match &self.auth.confirmation_tag {
            Some(tag) => Ok(crate::codec::Encode::encode(tag)?),
            None => Err(CodecError::Encoding(
                "InterimTranscriptHashInput needs a commit's confirmation_tag".into(),
            )),
        }
    }
}

/// `PublicMessage` (RFC 9420 §6.2). `membership_tag` is present exactly when
/// the sender is a member; `auth.confirmation_tag` exactly for commits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PublicMessage {
    /// `FramedContent content`
    pub content: FramedContent,
    /// `FramedContentAuthData auth`
    pub auth: FramedContentAuthData,
    /// `MAC membership_tag`, for member senders only.
    pub membership_tag: Option<Mac>,
}

impl PublicMessage {
    /// The encoding of `AuthenticatedContentTBM` (RFC 9420 §6.2), the input
    /// of the membership tag: FramedContentTBS (wire format
    /// `mls_public_message`, with `context`) followed by the auth data.
    pub fn membership_tag_input(&self, context: &GroupContext) -> Result<Vec<u8>, CodecError> {
        let mut out = self
            .content
            .to_be_signed(WireFormat::PUBLIC_MESSAGE, Some(context))?;
        self.auth.tls_serialize(&mut out)?;
        Ok(out)
    }

    fn check(&self) -> Result<(), Error> {
        self.auth.check_for(self.content.content_type())?;
        let member = matches!(self.content.sender, Sender::Member(_));
        if member != self.membership_tag.is_some() {
            return Err(Error::EncodingError(
                "membership_tag must be present exactly for member senders".into(),
            ));
        }
        Ok(())
    }
}

impl Size for PublicMessage {
    fn tls_serialized_len(&self) -> usize {
        self.content.tls_serialized_len()
            + self.auth.tls_serialized_len()
            + self
                .membership_tag
                .as_ref()
                .map_or(0, Size::tls_serialized_len)
    }
}

impl Serialize for PublicMessage {
    fn tls_serialize<W: Write>(&self, writer: &mut W) -> Result<usize, Error> {
        self.check()?;
        let mut n = self.content.tls_serialize(writer)?;
        n += self.auth.tls_serialize(writer)?;
        if let Some(tag) = &self.membership_tag {
            n += tag.tls_serialize(writer)?;
        }
        Ok(n)
    }
}

impl DeserializeBytes for PublicMessage {
    fn tls_deserialize_bytes(bytes: &[u8]) -> Result<(Self, &[u8]), Error> {
        let (content, rest) = FramedContent::tls_deserialize_bytes(bytes)?;
        let (auth, rest) = FramedContentAuthData::deserialize_for(content.content_type(), rest)?;
        let (membership_tag, rest) = if matches!(content.sender, Sender::Member(_)) {
            let (tag, rest) = Mac::tls_deserialize_bytes(rest)?;
            (Some(tag), rest)
        } else {
            (None, rest)
        };
        Ok((
            PublicMessage {
                content,
                auth,
                membership_tag,
            },
            rest,
        ))
    }
}

/// `PrivateMessage` (RFC 9420 §6.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct PrivateMessage {
    /// `opaque group_id<V>`
    #[tls_codec(with = "vl_bytes")]
    pub group_id: Vec<u8>,
    /// `uint64 epoch`
    pub epoch: u64,
    /// `ContentType content_type`
    pub content_type: ContentType,
    /// `opaque authenticated_data<V>`
    #[tls_codec(with = "vl_bytes")]
    pub authenticated_data: Vec<u8>,
    /// `opaque encrypted_sender_data<V>`
    #[tls_codec(with = "vl_bytes")]
    pub encrypted_sender_data: Vec<u8>,
    /// `opaque ciphertext<V>`
    #[tls_codec(with = "vl_bytes")]
    pub ciphertext: Vec<u8>,
}

/// `PrivateMessageContent` (RFC 9420 §6.3.1): the plaintext of
/// `PrivateMessage.ciphertext`: content, then auth, then zero padding.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PrivateMessageContent {
    /// The `select (PrivateMessage.content_type)` body (encoded without the
    /// content type, which is in the PrivateMessage).
    pub body: FramedContentBody,
    /// `FramedContentAuthData auth`
    pub auth: FramedContentAuthData,
    /// The number of zero bytes of `opaque padding[length_of_padding]`.
    pub padding_len: usize,
}

impl PrivateMessageContent {
    /// Decodes a decrypted `PrivateMessageContent` whose content type is
    /// given by the PrivateMessage. Everything after the auth data is
    /// padding and MUST be zero (RFC 9420 §6.3.1).
    pub fn decode(content_type: ContentType, plaintext: &[u8]) -> Result<Self, CodecError> {
        let (body, rest) = FramedContentBody::deserialize_body(content_type, plaintext)?;
        let (auth, rest) = FramedContentAuthData::deserialize_for(content_type, rest)?;
        if rest.iter().any(|&b| b != 0) {
            return Err(CodecError::Malformed("non-zero padding".into()));
        }
        Ok(PrivateMessageContent {
            body,
            auth,
            padding_len: rest.len(),
        })
    }
}

impl Size for PrivateMessageContent {
    fn tls_serialized_len(&self) -> usize {
        self.body.body_len() + self.auth.tls_serialized_len() + self.padding_len
    }
}

impl Serialize for PrivateMessageContent {
    fn tls_serialize<W: Write>(&self, writer: &mut W) -> Result<usize, Error> {
        self.auth.check_for(self.body.content_type())?;
        let mut n = self.body.serialize_body(writer)?;
        n += self.auth.tls_serialize(writer)?;
        const ZEROS: [u8; 256] = [0; 256];
        let mut left = self.padding_len;
        while left > 0 {
            let k = left.min(ZEROS.len());
            writer.write_all(&ZEROS[..k])?;
            left -= k;
        }
        Ok(n + self.padding_len)
    }
}

/// `SenderData` (RFC 9420 §6.3.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct SenderData {
    /// `uint32 leaf_index`
    pub leaf_index: LeafIndex,
    /// `uint32 generation`
    pub generation: u32,
    /// `opaque reuse_guard[4]`
    pub reuse_guard: [u8; 4],
}

/// `PrivateContentAAD` (RFC 9420 §6.3.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct PrivateContentAad {
    /// `opaque group_id<V>`
    #[tls_codec(with = "vl_bytes")]
    pub group_id: Vec<u8>,
    /// `uint64 epoch`
    pub epoch: u64,
    /// `ContentType content_type`
    pub content_type: ContentType,
    /// `opaque authenticated_data<V>`
    #[tls_codec(with = "vl_bytes")]
    pub authenticated_data: Vec<u8>,
}

/// `SenderDataAAD` (RFC 9420 §6.3.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct SenderDataAad {
    /// `opaque group_id<V>`
    #[tls_codec(with = "vl_bytes")]
    pub group_id: Vec<u8>,
    /// `uint64 epoch`
    pub epoch: u64,
    /// `ContentType content_type`
    pub content_type: ContentType,
}
