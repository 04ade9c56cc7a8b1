//! Proposals and Commit (RFC 9420 §8.4, §12.1, §12.4).

use tls_codec::{TlsDeserializeBytes, TlsSerialize, TlsSize};

use super::group::KeyPackage;
use super::tree::{LeafNode, UpdatePath};
use super::types::{CipherSuite, Extension, ProposalRef, ProposalType, ProtocolVersion};
use super::vl::{vl_bytes, vl_vec};
use crate::tree_math::LeafIndex;

/// `Add` (RFC 9420 §12.1.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct Add {
    /// `KeyPackage key_package`
    pub key_package: KeyPackage,
}

/// `Update` (RFC 9420 §12.1.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct Update {
    /// `LeafNode leaf_node`
    pub leaf_node: LeafNode,
}

/// `Remove` (RFC 9420 §12.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct Remove {
    /// `uint32 removed`: the leaf index of the removed member.
    pub removed: LeafIndex,
}

/// `ResumptionPSKUsage` (RFC 9420 §8.4). `reserved(0)` is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
#[repr(u8)]
pub enum ResumptionPskUsage {
    /// `application(1)`
    Application = 1,
    /// `reinit(2)`
    Reinit = 2,
    /// `branch(3)`
    Branch = 3,
}

/// The `resumption` body of a PreSharedKeyID (RFC 9420 §8.4).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct ResumptionPsk {
    /// `ResumptionPSKUsage usage`
    pub usage: ResumptionPskUsage,
    /// `opaque psk_group_id<V>`
    #[tls_codec(with = "vl_bytes")]
    pub psk_group_id: Vec<u8>,
    /// `uint64 psk_epoch`
    pub psk_epoch: u64,
}

/// `PSKType` with its `select` body (RFC 9420 §8.4).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
#[repr(u8)]
pub enum Psk {
    /// `external(1)`: `opaque psk_id<V>`
    #[tls_codec(discriminant = 1)]
    External(#[tls_codec(with = "vl_bytes")] Vec<u8>),
    /// `resumption(2)`
    #[tls_codec(discriminant = 2)]
    Resumption(ResumptionPsk),
}

/// `PreSharedKeyID` (RFC 9420 §8.4).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct PreSharedKeyId {
    /// `psktype` and its body.
    pub psk: Psk,
    /// `opaque psk_nonce<V>`
    #[tls_codec(with = "vl_bytes")]
    pub psk_nonce: Vec<u8>,
}

/// `PSKLabel` (RFC 9420 §8.4), input to the PSK secret derivation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct PskLabel {
    /// `PreSharedKeyID id`
    pub id: PreSharedKeyId,
    /// `uint16 index`
    pub index: u16,
    /// `uint16 count`
    pub count: u16,
}

/// `PreSharedKey` (RFC 9420 §12.1.4).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct PreSharedKey {
    /// `PreSharedKeyID psk`
    pub psk: PreSharedKeyId,
}

/// `ReInit` (RFC 9420 §12.1.5).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct ReInit {
    /// `opaque group_id<V>`
    #[tls_codec(with = "vl_bytes")]
    pub group_id: Vec<u8>,
    /// `ProtocolVersion version`
    pub version: ProtocolVersion,
    /// `CipherSuite cipher_suite`
    pub cipher_suite: CipherSuite,
    /// `Extension extensions<V>`
    #[tls_codec(with = "vl_vec")]
    pub extensions: Vec<Extension>,
}

/// `ExternalInit` (RFC 9420 §12.1.6).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct ExternalInit {
    /// `opaque kem_output<V>`
    #[tls_codec(with = "vl_bytes")]
    pub kem_output: Vec<u8>,
}

/// `GroupContextExtensions` (RFC 9420 §12.1.7).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct GroupContextExtensions {
    /// `Extension extensions<V>`
    #[tls_codec(with = "vl_vec")]
    pub extensions: Vec<Extension>,
}

/// The `proposal_type` hsmls uses for SelfRemove (draft-ietf-mls-extensions,
/// `struct {} SelfRemove`). The two peers disagree: openmls 0.9 uses
/// 0x000A, the value the MLS extensions draft asks IANA to register for
/// `self_remove`; mls-rs 0.57 (feature `self_remove_proposal`) uses 0xF003
/// from the private-use range. hsmls follows the draft's registration
/// (0x000A); change this constant to 0xF003 to talk SelfRemove with mls-rs.
pub const SELF_REMOVE_PROPOSAL_TYPE: u16 = 0x000A;

impl ProposalType {
    /// `self_remove` (draft-ietf-mls-extensions), see
    /// [`SELF_REMOVE_PROPOSAL_TYPE`].
    pub const SELF_REMOVE: ProposalType = ProposalType(SELF_REMOVE_PROPOSAL_TYPE);
}

/// `SelfRemove` (draft-ietf-mls-extensions): no body; the sender asks to be
/// removed by the next commit of another member.
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct SelfRemove {}

/// `Proposal` (RFC 9420 §12.1). Unknown proposal types are a decoding error
/// ([`super::CodecError::UnknownValue`]): their body cannot be delimited, and
/// §13.5 says an unsupported proposal type rejects the message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
#[repr(u16)]
pub enum Proposal {
    /// `add(1)`
    #[tls_codec(discriminant = 1)]
    Add(Add),
    /// `update(2)`
    #[tls_codec(discriminant = 2)]
    Update(Update),
    /// `remove(3)`
    #[tls_codec(discriminant = 3)]
    Remove(Remove),
    /// `psk(4)`
    #[tls_codec(discriminant = 4)]
    PreSharedKey(PreSharedKey),
    /// `reinit(5)`
    #[tls_codec(discriminant = 5)]
    ReInit(ReInit),
    /// `external_init(6)`
    #[tls_codec(discriminant = 6)]
    ExternalInit(ExternalInit),
    /// `group_context_extensions(7)`
    #[tls_codec(discriminant = 7)]
    GroupContextExtensions(GroupContextExtensions),
    /// `self_remove` (draft-ietf-mls-extensions; codepoint
    /// [`SELF_REMOVE_PROPOSAL_TYPE`]).
    #[tls_codec(discriminant = "SELF_REMOVE_PROPOSAL_TYPE")]
    SelfRemove(SelfRemove),
}

impl Proposal {
    /// The `proposal_type` of this proposal.
    pub fn proposal_type(&self) -> ProposalType {
        match self {
            Proposal::Add(_) => ProposalType::ADD,
            Proposal::Update(_) => ProposalType::UPDATE,
            Proposal::Remove(_) => ProposalType::REMOVE,
            Proposal::PreSharedKey(_) => ProposalType::PSK,
            Proposal::ReInit(_) => ProposalType::REINIT,
            Proposal::ExternalInit(_) => ProposalType::EXTERNAL_INIT,
            Proposal::GroupContextExtensions(_) => ProposalType::GROUP_CONTEXT_EXTENSIONS,
            Proposal::SelfRemove(_) => ProposalType::SELF_REMOVE,
        }
    }
}

/// `ProposalOrRef` (RFC 9420 §12.4).
#[allow(
    clippy::large_enum_variant,
    reason = "wire type mirroring the RFC; most values are of the large variant"
)]
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
#[repr(u8)]
pub enum ProposalOrRef {
    /// `proposal(1)`: a proposal inline.
    #[tls_codec(discriminant = 1)]
    Proposal(Proposal),
    /// `reference(2)`: the ProposalRef of a proposal sent before.
    #[tls_codec(discriminant = 2)]
    Reference(ProposalRef),
}

/// `Commit` (RFC 9420 §12.4).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct Commit {
    /// `ProposalOrRef proposals<V>`
    #[tls_codec(with = "vl_vec")]
    pub proposals: Vec<ProposalOrRef>,
    /// `optional<UpdatePath> path`
    pub path: Option<UpdatePath>,
}
