//! The RFC 9420 wire structures an application meets in the public API,
//! and [`RoutingInfo`], what is read of an `MLSMessage` to route it.
//!
//! These are the structures the engine hands out or takes: the proposals
//! a [`ProcessedMessage`](crate::ProcessedMessage) reports (§12.1), the
//! extensions, capabilities and lifetime of KeyPackages and groups
//! (§7.2, §13), the GroupContext (§8.1), the ratchet tree for sending out
//! of band (§12.4.3.3), references (§5.2), leaf indices (§4.2), senders
//! (§6) and the registries' code points. They encode and decode with
//! [`Encode`] and [`Decode`] (bounded, panic-free decoding of untrusted
//! bytes; errors are [`crate::error::CodecError`]).
//!
//! `wire::KeyPackage` is the KeyPackage structure as on the wire (RFC
//! 9420 §10), e.g. inside an Add proposal; a KeyPackage a group accepts is
//! [`crate::KeyPackage`], obtained by validating a
//! [`crate::KeyPackageIn`].
//!
//! The framing structures (PublicMessage, PrivateMessage, Welcome,
//! GroupInfo and what they carry) are not here: the engine builds and
//! reads them, and [`RoutingInfo`] gives what is in clear.

pub use crate::codec::{
    Add, ApplicationId, Capabilities, Certificate, CipherSuite, ContentType, Credential,
    CredentialType, Decode, Encode, Extension, ExtensionData, ExtensionType, ExternalInit,
    ExternalPub, ExternalSender, ExternalSenders, GroupContext, GroupContextExtensions,
    HpkePublicKey, KeyPackage, KeyPackageRef, LeafNode, LeafNodeSource, Lifetime, Node, NodeType,
    ParentNode, PreSharedKey, PreSharedKeyId, Proposal, ProposalRef, ProposalType, ProtocolVersion,
    Psk, RatchetTree, ReInit, Remove, RequiredCapabilities, ResumptionPsk, ResumptionPskUsage,
    SELF_REMOVE_PROPOSAL_TYPE, SelfRemove, Sender, SignaturePublicKey, Update, WireFormat,
    find_extension,
};
pub use crate::key_package::LAST_RESORT;
pub use crate::tree_math::LeafIndex;

use crate::codec::{CodecError, FramedContentBody, MlsMessage, MlsMessageBody};

/// What a Delivery Service, or a client sorting its incoming messages,
/// reads of an `MLSMessage` (RFC 9420 §6) without being a member: its
/// wire format, and where the format carries them in clear, the group,
/// epoch, content type and sender. Nothing here is authenticated: a
/// member's [`Group::process_incoming`](crate::Group::process_incoming)
/// decides what the message is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoutingInfo {
    /// The message's wire format.
    pub wire_format: WireFormat,
    /// The group id of a PublicMessage, PrivateMessage or GroupInfo.
    pub group_id: Option<Vec<u8>>,
    /// The epoch of a PublicMessage, PrivateMessage or GroupInfo.
    pub epoch: Option<u64>,
    /// The content type of a PublicMessage or PrivateMessage (in clear in
    /// both, RFC 9420 §6.3).
    pub content_type: Option<ContentType>,
    /// The sender of a PublicMessage (a PrivateMessage encrypts it), or
    /// the signer of a GroupInfo (`Sender::Member(signer)`, RFC 9420
    /// §12.4.3).
    pub sender: Option<Sender>,
    /// The cipher suite of a Welcome, GroupInfo or KeyPackage.
    pub cipher_suite: Option<CipherSuite>,
    /// The KeyPackageRefs a Welcome is addressed to (its
    /// `secrets[].new_member`, RFC 9420 §12.4.3.1).
    pub new_members: Vec<KeyPackageRef>,
}

impl RoutingInfo {
    /// Decodes `message` (an `MLSMessage`, with the bounded decoder) and
    /// returns what is in clear. Fails on bytes that are not one
    /// well-formed `MLSMessage`.
    pub fn parse(message: &[u8]) -> Result<Self, CodecError> {
        let message = MlsMessage::decode(message)?;
        let mut info = RoutingInfo {
            wire_format: message.body.wire_format(),
            group_id: None,
            epoch: None,
            content_type: None,
            sender: None,
            cipher_suite: None,
            new_members: Vec::new(),
        };
        match message.body {
            MlsMessageBody::PublicMessage(m) => {
                info.content_type = Some(match &m.content.body {
                    FramedContentBody::Application(_) => ContentType::Application,
                    FramedContentBody::Proposal(_) => ContentType::Proposal,
                    FramedContentBody::Commit(_) => ContentType::Commit,
                });
                info.sender = Some(m.content.sender);
                info.epoch = Some(m.content.epoch);
                info.group_id = Some(m.content.group_id);
            }
            MlsMessageBody::PrivateMessage(m) => {
                info.content_type = Some(m.content_type);
                info.epoch = Some(m.epoch);
                info.group_id = Some(m.group_id);
            }
            MlsMessageBody::Welcome(w) => {
                info.cipher_suite = Some(w.cipher_suite);
                info.new_members = w.secrets.into_iter().map(|s| s.new_member).collect();
            }
            MlsMessageBody::GroupInfo(gi) => {
                info.cipher_suite = Some(gi.group_context.cipher_suite);
                info.epoch = Some(gi.group_context.epoch);
                info.group_id = Some(gi.group_context.group_id);
                info.sender = Some(Sender::Member(gi.signer));
            }
            MlsMessageBody::KeyPackage(kp) => info.cipher_suite = Some(kp.cipher_suite),
        }
        Ok(info)
    }
}
