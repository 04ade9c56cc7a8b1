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
    /// This kind of message cannot be processed here.
    #[error("unexpected message: {0}")]
    UnexpectedMessage(&'static str),
    /// A handshake arrived in a wire format the group's policy refuses.
    #[error("handshake wire format refused by the group's policy")]
    WireFormatPolicy,
    /// A GroupInfo signature does not verify.
    #[error("invalid GroupInfo signature")]
    InvalidGroupInfoSignature,
    /// A Welcome could not be decrypted.
    #[error("Welcome decryption failed ({0})")]
    WelcomeDecryption(&'static str),
    /// The Welcome has no entry for this KeyPackage.
    #[error("the Welcome is not addressed to this KeyPackage")]
    NotInWelcome,
    /// The joiner's GroupInfo or tree is inconsistent.
    #[error("invalid Welcome: {0}")]
    InvalidWelcome(&'static str),
    /// The ratchet tree is neither in the GroupInfo nor given.
    #[error("no ratchet tree: none in the GroupInfo and none given out of band")]
    MissingRatchetTree,
    /// A proposal or proposal list breaks RFC 9420 §12.2 / §12.3.
    #[error("invalid proposal: {0}")]
    InvalidProposal(&'static str),
    /// A commit names a proposal this member has not received.
    #[error("commit references an unknown proposal")]
    UnknownProposalRef,
    /// A commit breaks RFC 9420 §12.4.
    #[error("invalid commit: {0}")]
    InvalidCommit(&'static str),
    /// The commit's confirmation tag does not verify.
    #[error("invalid confirmation tag")]
    InvalidConfirmationTag,
    /// The sender is not a member (or the leaf is blank).
    #[error("leaf {0} is not a member")]
    NotAMember(u32),
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
    ReInit(&'static str),
    /// The operation needs external_pub in the GroupInfo.
    #[error("the GroupInfo has no external_pub extension")]
    NoExternalPub,
}

impl From<tls_codec::Error> for GroupError {
    fn from(e: tls_codec::Error) -> Self {
        GroupError::Codec(e.into())
    }
}
