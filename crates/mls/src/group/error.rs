//! Errors of the group state machine.

use hsmls_crypto::CryptoError;
use hsmls_custody::CustodyError;

use crate::codec::CodecError;
use crate::credential::CredentialError;
use crate::key_package::KeyPackageError;
use crate::message_protection::ProtectionError;
use crate::psk::PskError;
use crate::secret_tree::SecretTreeError;
use crate::transcript::TranscriptError;
use crate::tree::TreeError;
use crate::tree_math::LeafIndex;

/// Why a group operation failed. Every failure leaves the group state as it
/// was before the call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// Input bytes did not decode.
    #[error("malformed input: {0}")]
    Malformed(#[source] CodecError),
    /// An encoding step failed.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A cryptographic step failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The custody backend failed.
    #[error(transparent)]
    Custody(#[from] CustodyError),
    /// Message framing, signature, membership tag or decryption failed.
    #[error(transparent)]
    Protection(#[from] ProtectionError),
    /// The secret tree refused a generation or leaf.
    #[error(transparent)]
    SecretTree(#[from] SecretTreeError),
    /// Transcript hash or confirmation tag failure.
    #[error(transparent)]
    Transcript(#[from] TranscriptError),
    /// PSK secret computation failed.
    #[error(transparent)]
    Psk(#[from] PskError),
    /// A KeyPackage was refused.
    #[error(transparent)]
    KeyPackage(#[from] KeyPackageError),
    /// A credential was refused.
    #[error(transparent)]
    Credential(#[from] CredentialError),
    /// The current credential of the member that sent a proposal or a
    /// path-less commit no longer validates (e.g. revoked).
    #[error("the credential of member {sender:?} is no longer valid: {error}")]
    SenderCredential {
        /// The sender's leaf.
        sender: LeafIndex,
        /// Why its credential was refused.
        error: CredentialError,
    },
    /// The ratchet tree or TreeKEM refused the input.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// The cipher suite is not implemented.
    #[error("unsupported cipher suite 0x{0:04x}")]
    UnsupportedCipherSuite(u16),
    /// The message is for another group.
    #[error("the message is for another group")]
    WrongGroupId,
    /// The message is for an epoch this member cannot process.
    #[error("message for epoch {message}, group at epoch {current}")]
    WrongEpoch {
        /// The message's epoch.
        message: u64,
        /// The group's epoch.
        current: u64,
    },
    /// This kind of message cannot be processed here, or this sender
    /// cannot send it.
    #[error("unexpected message: {0}")]
    UnexpectedMessage(MessageRule),
    /// A handshake arrived in a wire format the group's policy refuses.
    #[error("handshake wire format refused by the group's policy")]
    WireFormatPolicy,
    /// A GroupInfo signature does not verify.
    #[error("invalid GroupInfo signature")]
    InvalidGroupInfoSignature,
    /// A part of a Welcome could not be decrypted (RFC 9420 §12.4.3.1).
    #[error("Welcome decryption failed: {0}")]
    WelcomeDecryption(WelcomePart),
    /// The Welcome has no entry for this KeyPackage.
    #[error("the Welcome is not addressed to this KeyPackage")]
    NotInWelcome,
    /// The joiner's GroupSecrets, GroupInfo or tree break a rule of RFC
    /// 9420 §12.4.3.1.
    #[error("invalid Welcome: {0}")]
    InvalidWelcome(WelcomeRule),
    /// The ratchet tree is neither in the GroupInfo nor given.
    #[error("no ratchet tree: none in the GroupInfo and none given out of band")]
    MissingRatchetTree,
    /// A proposal or proposal list breaks a rule of RFC 9420 §12.1 /
    /// §12.2.
    #[error("invalid proposal: {0}")]
    InvalidProposal(ProposalRule),
    /// A commit names a proposal this member has not received.
    #[error("commit references an unknown proposal")]
    UnknownProposalRef,
    /// A commit breaks a rule of RFC 9420 §12.4.
    #[error("invalid commit: {0}")]
    InvalidCommit(CommitRule),
    /// The commit's confirmation tag does not verify.
    #[error("invalid confirmation tag")]
    InvalidConfirmationTag,
    /// The sender is not a member (or the leaf is blank).
    #[error("leaf {0} is not a member")]
    NotAMember(LeafIndex),
    /// A PSK named by a proposal is not known to this member.
    #[error("unknown PSK")]
    UnknownPsk,
    /// A commit of this member is pending: merge or discard it first.
    #[error("a commit is pending: merge or discard it first")]
    PendingCommit,
    /// There is no pending commit to merge.
    #[error("no pending commit")]
    NoPendingCommit,
    /// The staged commit does not belong to this group state.
    #[error("the staged commit is for another epoch or group")]
    StaleStagedCommit,
    /// This member was removed from the group.
    #[error("this member is no longer in the group")]
    Removed,
    /// A commit with a ReInit proposal was merged: the group is closed and
    /// lives on as the reinitialized group (RFC 9420 §11.2).
    #[error("the group was reinitialized: use the new group")]
    ReInitialized,
    /// No ReInit was committed in this group, or the new group does not
    /// match it / the old group (RFC 9420 §11.2, §11.3, §12.4.3.1).
    #[error("reinit/branch: {0}")]
    ReInit(ReInitRule),
    /// The operation needs external_pub in the GroupInfo.
    #[error("the GroupInfo has no external_pub extension")]
    NoExternalPub,
    /// The KeyPackage (of a join, or of a new member's own Add) is not
    /// signed by the client's signature key: the group would sign with a
    /// key the other members do not know for this leaf.
    #[error("the KeyPackage is not signed by this client's signature key")]
    SignerMismatch,
}

impl From<tls_codec::Error> for GroupError {
    fn from(e: tls_codec::Error) -> Self {
        GroupError::Codec(e.into())
    }
}

/// Why a message cannot be processed here, or not from this sender (the
/// reason of [`GroupError::UnexpectedMessage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageRule {
    /// A Welcome was given to [`crate::Group::process_incoming`]; a
    /// Welcome is joined with [`crate::Client::join_from_welcome`].
    #[error("a Welcome is not a group message: join with it instead")]
    Welcome,
    /// A GroupInfo was given to [`crate::Group::process_incoming`].
    #[error("a GroupInfo is not a group message")]
    GroupInfo,
    /// A KeyPackage was given to [`crate::Group::process_incoming`].
    #[error("a KeyPackage is not a group message")]
    KeyPackage,
    /// A join from a Welcome was given another kind of message.
    #[error("the message is not a Welcome")]
    NotAWelcome,
    /// An external join was given another kind of message than a GroupInfo.
    #[error("the message is not a GroupInfo")]
    NotAGroupInfo,
    /// A content that is not a Commit was handed to commit processing.
    #[error("the content is not a Commit")]
    NotACommit,
    /// A content that is not a proposal was handed to the proposal cache.
    #[error("the content is not a proposal")]
    NotAProposal,
    /// §12.1.8.1: a proposal from an `external` sender, but the group has
    /// no `external_senders` extension.
    #[error("an external sender, but the group has no external_senders extension")]
    NoExternalSenders,
    /// §12.1.8.1: the `sender_index` of an `external` sender is beyond the
    /// group's `external_senders` list.
    #[error("the external sender index is not in the external_senders extension")]
    UnknownExternalSender,
    /// §6: this sender type cannot send this content (`external` and
    /// `new_member_proposal` senders send proposals — the latter only Add —,
    /// `new_member_commit` senders send commits).
    #[error("this sender type cannot send this content type")]
    SenderCannotSendContent,
    /// §6: application data from a sender that is not a member.
    #[error("application data from a non-member sender")]
    ApplicationFromNonMember,
    /// A handshake message of a past epoch: only application messages are
    /// read from retained past epochs (§14, §15.3).
    #[error("a handshake message of a past epoch")]
    PastEpochHandshake,
    /// A proposal signed by this member that is not one it sent recently
    /// (its record of sent messages holds the last
    /// [`crate::group::SENT_MESSAGES_KEPT`] messages); a proposal this
    /// member sent is reported as [`crate::ProcessedMessage::OwnMessage`].
    #[error("a proposal from this member's own leaf that it did not send")]
    OwnProposalNotSent,
    /// A commit from this member's own leaf that is not its pending commit
    /// (nor one it merged or lost recently).
    #[error("a commit from this member's own leaf that is not its pending commit")]
    OwnCommitNotPending,
    /// An observer of the public group state ([`crate::PublicGroup`]) was
    /// given a message that is not a PublicMessage (it cannot decrypt).
    #[error("an observer of the public group state reads PublicMessages only")]
    NotPublicMessage,
}

/// The encrypted part of a Welcome that did not decrypt (RFC 9420
/// §12.4.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WelcomePart {
    /// `encrypted_group_secrets` does not open with the KeyPackage's init
    /// key.
    #[error("encrypted_group_secrets does not decrypt with the init key")]
    GroupSecrets,
    /// `encrypted_group_info` does not open with the key and nonce derived
    /// from the `welcome_secret` (wrong joiner secret or PSKs).
    #[error("encrypted_group_info does not decrypt with the welcome key")]
    GroupInfo,
}

/// A rule of RFC 9420 §12.4.3.1 (joining from a Welcome) that a Welcome
/// breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WelcomeRule {
    /// §12.4.3.1: the `joiner_secret` of the GroupSecrets is not `KDF.Nh`
    /// bytes long.
    #[error("joiner_secret is not KDF.Nh bytes long")]
    JoinerSecretLength,
    /// §12.4.3.1: the GroupContext's cipher suite is not the Welcome's.
    #[error("the GroupContext's cipher suite is not the Welcome's")]
    CipherSuiteMismatch,
    /// §12.4.3.1: the GroupInfo's `signer` is not a member of the tree.
    #[error("the GroupInfo signer is not a member of the tree")]
    SignerNotMember,
    /// §12.4.3.1: the joiner's own LeafNode (from its KeyPackage) is not
    /// in the tree.
    #[error("the joiner's own leaf is not in the tree")]
    OwnLeafNotInTree,
    /// §12.4.3.1: more than one resumption PSK of usage `reinit` or
    /// `branch`.
    #[error("more than one resumption PSK of usage reinit or branch")]
    SeveralLinkedPsks,
    /// §12.4.3.1: a resumption PSK of usage `reinit` or `branch`, but the
    /// new group is not at epoch 1.
    #[error("a reinit or branch Welcome is not for epoch 1")]
    LinkedPskNotAtEpochOne,
    /// A GroupInfo does not describe the epoch an observer of the public
    /// group state computed (GroupContext or confirmation tag differ).
    #[error("the GroupInfo does not match the observed epoch")]
    GroupInfoMismatch,
}

/// A rule of RFC 9420 §12.1 (a proposal on its own) or §12.2 (the
/// proposal list of a commit) that a proposal breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProposalRule {
    /// The proposal cache holds [`crate::GroupConfig::max_pending_proposals`]
    /// proposals already (a local bound on memory, not an RFC rule).
    #[error("too many pending proposals in this epoch")]
    TooManyPending,
    /// The same proposal (same ProposalRef, §5.2) was received twice.
    #[error("the proposal was received twice")]
    ReceivedTwice,
    /// §12.1.2: an Update proposal from a sender that is not a member.
    #[error("an Update from a sender that is not a member")]
    UpdateFromNonMember,
    /// §12.1.2: the Update's `encryption_key` is the sender's current one.
    #[error("the Update's encryption_key is the leaf's current one")]
    EncryptionKeyNotFresh,
    /// §5.3.1: the Update's credential is not a valid successor of the
    /// leaf's current credential (the application's rule).
    #[error("the new credential is not a valid successor of the old one")]
    CredentialNotSuccessor,
    /// §12.1.3: the Remove names a blank leaf or a leaf outside the tree.
    #[error("the Remove names a blank or absent leaf")]
    RemoveBlankLeaf,
    /// draft-ietf-mls-extensions: a SelfRemove from a sender that is not a
    /// member.
    #[error("a SelfRemove from a sender that is not a member")]
    SelfRemoveFromNonMember,
    /// §12.1.4: `psk_nonce` is not `KDF.Nh` bytes long.
    #[error("psk_nonce is not KDF.Nh bytes long")]
    PskNonceLength,
    /// §12.1.4: a resumption PSK of usage `reinit` or `branch` outside the
    /// reinitialization or branch it belongs to (usage `application` only
    /// in a normal commit).
    #[error("a resumption PSK of usage reinit or branch in a normal commit")]
    LinkedPskInNormalCommit,
    /// §12.1.5: the ReInit's protocol version is lower than the group's.
    #[error("the ReInit lowers the protocol version")]
    ReInitLowersVersion,
    /// §12.1.8: an external sender proposed an Update or an ExternalInit
    /// (external senders may propose Add, Remove, PreSharedKey, ReInit and
    /// GroupContextExtensions).
    #[error("an external sender cannot propose Update or ExternalInit")]
    NotAllowedFromExternalSender,
    /// §12.2: the commit contains an Update generated by the committer.
    #[error("the commit contains the committer's own Update")]
    CommitterUpdate,
    /// §12.2: the commit contains a Remove of the committer.
    #[error("the commit removes the committer")]
    RemovesCommitter,
    /// draft-ietf-mls-extensions: the commit contains the committer's own
    /// SelfRemove.
    #[error("the commit contains the committer's own SelfRemove")]
    CommitterSelfRemove,
    /// §12.2: several Update and/or Remove proposals apply to one leaf.
    #[error("several Update/Remove proposals for one leaf")]
    SeveralChangesToOneLeaf,
    /// §12.2: several Adds whose KeyPackages represent the same client
    /// (the same signature key).
    #[error("several Adds of the same client")]
    SameClientAddedTwice,
    /// §12.2: several PreSharedKey proposals reference the same
    /// PreSharedKeyID.
    #[error("several PreSharedKey proposals for one PSK")]
    DuplicatePsk,
    /// §12.2: several GroupContextExtensions proposals.
    #[error("several GroupContextExtensions proposals")]
    SeveralGroupContextExtensions,
    /// §12.1.7, §13.4: an extension type appears twice in a
    /// GroupContextExtensions proposal.
    #[error("an extension type appears twice in GroupContextExtensions")]
    DuplicateExtensionType,
    /// §12.2: a ReInit together with any other proposal.
    #[error("a ReInit together with other proposals")]
    ReInitNotAlone,
    /// §12.2: an ExternalInit outside an external commit (in a member's
    /// commit, or received as a standalone proposal).
    #[error("an ExternalInit outside an external commit")]
    ExternalInitOutsideExternalCommit,
    /// §12.4.3.2: an external commit contains a proposal other than
    /// ExternalInit, Remove and PreSharedKey.
    #[error("an external commit may only hold ExternalInit, Remove and PreSharedKey")]
    NotAllowedInExternalCommit,
    /// §12.4.3.2: an external commit has not exactly one ExternalInit.
    #[error("an external commit needs exactly one ExternalInit")]
    ExternalInitCount,
    /// §12.4.3.2: an external commit has more than one Remove.
    #[error("an external commit has more than one Remove")]
    SeveralRemovesInExternalCommit,
    /// §12.4.3.2: an external commit includes proposals by reference.
    #[error("an external commit includes proposals by reference")]
    ByReferenceInExternalCommit,
    /// §12.1.7: a member that stays does not support a non-default
    /// extension type of a GroupContextExtensions proposal.
    #[error("a member does not support a proposed GroupContext extension")]
    ExtensionNotSupported,
    /// §11.1, §12.1.7: a member that stays or is added does not meet the
    /// group's `required_capabilities`.
    #[error("a member does not meet the group's required_capabilities")]
    RequiredCapabilitiesNotMet,
}

/// A rule of RFC 9420 §12.4 (commits) that a commit breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommitRule {
    /// The epoch counter would pass `u64::MAX`.
    #[error("the epoch counter would overflow")]
    EpochOverflow,
    /// §6.1: a commit without a confirmation tag.
    #[error("the commit has no confirmation tag")]
    MissingConfirmationTag,
    /// §12.4: a commit from a sender that is neither a member nor a new
    /// member (`external` or `new_member_proposal`).
    #[error("a commit from a sender that is neither a member nor a new member")]
    SenderNotMember,
    /// §12.4: the proposals require an UpdatePath (an empty list, an
    /// Update, Remove or GroupContextExtensions, an ExternalInit) and the
    /// commit has none.
    #[error("the proposals require an UpdatePath and the commit has none")]
    PathRequired,
    /// §12.4.3.2: an external commit without an UpdatePath.
    #[error("an external commit has no UpdatePath")]
    ExternalCommitWithoutPath,
    /// §12.4.3.2: the Remove of an external commit removes a leaf whose
    /// credential is not the joiner's (a resync removes only the joiner's
    /// old leaf).
    #[error("an external commit removes a leaf that is not the joiner's old leaf")]
    ExternalCommitRemovesOther,
    /// §8.3: the ExternalInit's `kem_output` does not decapsulate with the
    /// epoch's external key.
    #[error("the ExternalInit kem_output does not decapsulate")]
    ExternalInitKemOutput,
    /// §5.3.1: the UpdatePath's credential is not a valid successor of the
    /// committer's current credential.
    #[error("the path's credential is not a valid successor of the committer's")]
    PathCredentialNotSuccessor,
    /// The commit applies an Update of this member's leaf that this
    /// member did not propose (or already discarded).
    #[error("an Update of this member's leaf that it did not propose")]
    UnknownOwnUpdate,
}

/// A rule of RFC 9420 §11.2 (reinitialization) or §11.3 (subgroup
/// branching) that a new group or its Welcome breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReInitRule {
    /// §11.2: no ReInit was committed in this group.
    #[error("no ReInit was committed in this group")]
    NoReInitCommitted,
    /// The ReInit asks for a protocol version this engine does not
    /// implement.
    #[error("the ReInit's protocol version is not implemented")]
    VersionNotImplemented,
    /// §11.2: the new group's configuration has another cipher suite than
    /// the ReInit.
    #[error("the configuration's cipher suite is not the ReInit's")]
    CipherSuiteMismatch,
    /// §11.2: the new group's group id, version, cipher suite or
    /// extensions differ from the ReInit's.
    #[error("the new group does not match the ReInit")]
    GroupDoesNotMatch,
    /// §11.2: a member of the old group is missing from the new group.
    #[error("a member of the old group is missing from the new group")]
    MemberMissing,
    /// §11.3: a branch changes the protocol version or the cipher suite.
    #[error("a branch keeps the protocol version and cipher suite")]
    BranchChangesVersionOrSuite,
    /// §11.3: a member of the branch was not a member of the old group.
    #[error("a member of the branch was not in the old group")]
    BranchMemberNotInGroup,
    /// §11.2, §11.3, §12.4.3.1: the Welcome does not carry this group's
    /// resumption PSK with the expected usage (reinit or branch).
    #[error("the Welcome does not carry this group's resumption PSK with the expected usage")]
    LinkedPskMissing,
}
