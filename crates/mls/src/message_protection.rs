//! Message framing and protection (RFC 9420 §6): signing FramedContent,
//! the PublicMessage membership tag, and PrivateMessage content and
//! sender-data encryption with the reuse guard and padding.
//!
//! Sans-IO: every function takes the secrets and state it needs
//! explicitly (GroupContext, membership key, secret tree, sender data
//! secret, signature keys) and returns a value or a typed
//! [`ProtectionError`].
//!
//! Sending:
//! 1. [`sign_content`] signs a [`FramedContent`] (SignWithLabel
//!    "FramedContentTBS", through [`KeyCustody`]) into an
//!    [`AuthenticatedContent`]. For a Commit the caller then computes the
//!    confirmation tag (see [`crate::transcript`]) and sets
//!    `auth.confirmation_tag`.
//! 2. [`protect_public`] (adds the membership tag for member senders) or
//!    [`protect_private`] (encrypts with the secret tree).
//!
//! Receiving: [`unprotect_public`] and [`unprotect_private`] check group
//! id and epoch, the membership tag or the AEAD, and the signature. A
//! group member checks a PublicMessage from the bytes it received
//! (`unprotect_received_public`): the membership tag, the signature and a
//! commit's confirmed transcript hash are hashed from them, never from a
//! re-encoding, and a large commit is staged beside the last two. A
//! rejected message leaves the state unchanged: [`unprotect_private`]
//! deletes the used key from the [`SecretTree`] (RFC 9420 §9.2) only after
//! decryption, parsing and signature verification all succeeded.

use hsmls_crypto::{CipherSuiteProvider, CryptoError, Digest, MLS_LABEL_PREFIX, Secret};
use hsmls_custody::{KeyCustody, KeyRef};
use rand_core::CryptoRngCore;
use tls_codec::{Serialize, Size};
use zeroize::Zeroizing;

use crate::codec::vl::{vl_bytes, vl_header_len, write_vl_header};
use crate::codec::{
    AuthenticatedContent, CodecError, ContentType, Decode, Encode, FramedContent,
    FramedContentAuthData, FramedContentBody, GroupContext, PrivateContentAad, PrivateMessage,
    PrivateMessageContent, Proposal, ProtocolVersion, PublicMessage, Sender, SenderData,
    SenderDataAad, SignaturePublicKey, WireFormat,
};
use crate::secret_tree::{RatchetType, SecretTree, SecretTreeError, sender_data_key_nonce};
use crate::tree_math::LeafIndex;

/// The label of the content signature (RFC 9420 §6.1).
const FRAMED_CONTENT_TBS: &[u8] = b"FramedContentTBS";

/// The length of `SenderData.reuse_guard` (RFC 9420 §6.3.2).
const REUSE_GUARD_LEN: usize = 4;

impl From<crate::codec::CipherSuite> for hsmls_crypto::CipherSuite {
    fn from(v: crate::codec::CipherSuite) -> Self {
        hsmls_crypto::CipherSuite(v.0)
    }
}

impl From<hsmls_crypto::CipherSuite> for crate::codec::CipherSuite {
    fn from(v: hsmls_crypto::CipherSuite) -> Self {
        crate::codec::CipherSuite(v.0)
    }
}

/// Errors of protecting and unprotecting messages. No variant carries
/// secret or decrypted bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtectionError {
    /// The message's group id is not the group's.
    #[error("the message is for another group")]
    WrongGroupId,
    /// The message's epoch is not the epoch of the given state.
    #[error("the message is for epoch {message}, the state is at epoch {current}")]
    WrongEpoch {
        /// The message's epoch.
        message: u64,
        /// The epoch of the state it was checked against.
        current: u64,
    },
    /// The wire format is not the one this operation handles.
    #[error("wire format {actual} where {expected} was expected")]
    WrongWireFormat {
        /// The expected wire format.
        expected: u16,
        /// The content's wire format.
        actual: u16,
    },
    /// Application data in a PublicMessage (RFC 9420 §6: applications MUST
    /// use PrivateMessage for application messages).
    #[error("application messages must be sent as PrivateMessage")]
    ApplicationInPublicMessage,
    /// A PrivateMessage needs a member sender (RFC 9420 §6.3.2).
    #[error("only members can send a PrivateMessage")]
    NonMemberPrivateMessage,
    /// The sender type does not allow this content (RFC 9420 §6.1:
    /// external senders send proposals, new_member_commit senders commits,
    /// new_member_proposal senders Add proposals).
    #[error("a {sender:?} sender cannot send this {content:?} content")]
    InvalidSenderForContent {
        /// The sender.
        sender: Sender,
        /// The content type.
        content: ContentType,
    },
    /// The confirmation tag is missing on a Commit or present on another
    /// content type (RFC 9420 §6.1).
    #[error("confirmation_tag must be present exactly for commits")]
    ConfirmationTagMismatch,
    /// The FramedContentTBS of a member or new_member_commit sender needs
    /// the GroupContext.
    #[error("signing this content needs the GroupContext")]
    MissingGroupContext,
    /// A member's PublicMessage needs the membership key and GroupContext.
    #[error("a member sender's PublicMessage needs the membership key")]
    MissingMembershipKey,
    /// A member's PublicMessage has no membership tag.
    #[error("the membership tag is missing")]
    MissingMembershipTag,
    /// A non-member's PublicMessage carries a membership tag.
    #[error("a non-member sender's PublicMessage carries a membership tag")]
    UnexpectedMembershipTag,
    /// The membership tag does not verify (RFC 9420 §6.2).
    #[error("invalid membership tag")]
    InvalidMembershipTag,
    /// The content signature does not verify (RFC 9420 §6.1).
    #[error("invalid content signature")]
    InvalidSignature(#[source] CryptoError),
    /// The sender data does not decrypt (wrong sender data secret,
    /// tampered sender data, header or ciphertext sample).
    #[error("sender data decryption failed")]
    SenderDataDecryption,
    /// The decrypted sender data is not a SenderData.
    #[error("malformed sender data: {0}")]
    MalformedSenderData(#[source] CodecError),
    /// The sender's leaf is blank or outside the tree (RFC 9420 §6.3.2).
    #[error("leaf {0} is not a member of the group")]
    UnknownSender(LeafIndex),
    /// The content does not decrypt with the sender's key of the stated
    /// generation.
    #[error("content decryption failed")]
    ContentDecryption,
    /// The decrypted content is not a PrivateMessageContent.
    #[error("malformed content: {0}")]
    MalformedContent(#[source] CodecError),
    /// The padding of a PrivateMessageContent has a non-zero byte
    /// (RFC 9420 §6.3.1).
    #[error("non-zero padding")]
    NonZeroPadding,
    /// The secret tree refused the generation (already used, expired, too
    /// far ahead) or the leaf.
    #[error(transparent)]
    SecretTree(#[from] SecretTreeError),
    /// A cryptographic operation failed (signing, AEAD sealing).
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// Encoding failed.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl From<tls_codec::Error> for ProtectionError {
    fn from(e: tls_codec::Error) -> Self {
        ProtectionError::Codec(e.into())
    }
}

/// How much zero padding a PrivateMessage carries (RFC 9420 §6.3.1): the
/// PrivateMessageContent is padded to a multiple of `block` bytes. Padding
/// hides the exact length of a message from the Delivery Service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PaddingPolicy {
    block: u32,
}

impl PaddingPolicy {
    /// No padding.
    pub const NONE: PaddingPolicy = PaddingPolicy { block: 0 };

    /// Pad to a multiple of `block` bytes (0 and 1 mean no padding).
    pub const fn multiple_of(block: u32) -> Self {
        PaddingPolicy { block }
    }

    /// The block size (0: no padding).
    pub fn block(&self) -> u32 {
        self.block
    }

    /// The number of zero bytes to append to `content_len` bytes.
    pub fn padding_len(&self, content_len: usize) -> usize {
        match self.block {
            0 | 1 => 0,
            b => {
                let b = b as usize;
                (b - content_len % b) % b
            }
        }
    }
}

/// The signature public keys of the group's members, by leaf index: the
/// `signature_key` of each non-blank leaf of the ratchet tree (RFC 9420
/// §6.1). A receiver of a PrivateMessage learns the sender only after
/// decrypting the sender data, so it passes this lookup.
pub trait MemberSignatureKeys {
    /// The signature key of the member at `leaf`; `None` for a blank leaf
    /// or a leaf outside the tree.
    fn signature_key(&self, leaf: LeafIndex) -> Option<&[u8]>;
}

impl MemberSignatureKeys for [Option<SignaturePublicKey>] {
    fn signature_key(&self, leaf: LeafIndex) -> Option<&[u8]> {
        self.get(usize::try_from(leaf.0).ok()?)?
            .as_ref()
            .map(SignaturePublicKey::as_slice)
    }
}

impl MemberSignatureKeys for Vec<Option<SignaturePublicKey>> {
    fn signature_key(&self, leaf: LeafIndex) -> Option<&[u8]> {
        self.as_slice().signature_key(leaf)
    }
}

/// The membership key and GroupContext of the current epoch, for the
/// membership tag of a member's PublicMessage (RFC 9420 §6.2).
#[derive(Debug, Clone, Copy)]
pub struct Membership<'a> {
    /// The current GroupContext.
    pub group_context: &'a GroupContext,
    /// The epoch's `membership_key`.
    pub membership_key: &'a Secret,
}

/// A PrivateMessage's content after decryption and verification, with
/// what the sender data said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnprotectedPrivateMessage {
    /// The content (wire format `mls_private_message`, sender
    /// `member(leaf_index)`), its signature verified.
    pub content: AuthenticatedContent,
    /// The sender's leaf.
    pub leaf_index: LeafIndex,
    /// The generation of the sender's ratchet that encrypted it.
    pub generation: u32,
}

/// Whether FramedContentTBS includes the GroupContext (RFC 9420 §6.1).
fn needs_context(sender: &Sender) -> bool {
    matches!(sender, Sender::Member(_) | Sender::NewMemberCommit)
}

/// The ratchet that protects a content type (RFC 9420 §9): application
/// messages use the application ratchet, proposals and commits the
/// handshake ratchet.
pub fn ratchet_type(content_type: ContentType) -> RatchetType {
    match content_type {
        ContentType::Application => RatchetType::Application,
        ContentType::Proposal | ContentType::Commit => RatchetType::Handshake,
    }
}

/// Checks the sender type against the content (RFC 9420 §6.1).
fn check_sender_content(content: &FramedContent) -> Result<(), ProtectionError> {
    let content_type = content.content_type();
    let ok = match content.sender {
        Sender::Member(_) => true,
        Sender::External(_) => content_type == ContentType::Proposal,
        Sender::NewMemberCommit => content_type == ContentType::Commit,
        Sender::NewMemberProposal => {
            matches!(content.body, FramedContentBody::Proposal(Proposal::Add(_)))
        }
    };
    if ok {
        Ok(())
    } else {
        Err(ProtectionError::InvalidSenderForContent {
            sender: content.sender,
            content: content_type,
        })
    }
}

fn check_confirmation_tag(
    content_type: ContentType,
    auth: &FramedContentAuthData,
) -> Result<(), ProtectionError> {
    if auth.confirmation_tag.is_some() == (content_type == ContentType::Commit) {
        Ok(())
    } else {
        Err(ProtectionError::ConfirmationTagMismatch)
    }
}

fn check_wire_format(actual: WireFormat, expected: WireFormat) -> Result<(), ProtectionError> {
    if actual == expected {
        Ok(())
    } else {
        Err(ProtectionError::WrongWireFormat {
            expected: expected.0,
            actual: actual.0,
        })
    }
}

fn check_group_epoch(
    group_id: &[u8],
    epoch: u64,
    context: &GroupContext,
) -> Result<(), ProtectionError> {
    if group_id != context.group_id.as_slice() {
        return Err(ProtectionError::WrongGroupId);
    }
    if epoch != context.epoch {
        return Err(ProtectionError::WrongEpoch {
            message: epoch,
            current: context.epoch,
        });
    }
    Ok(())
}

/// `SignWithLabel(., "FramedContentTBS", FramedContentTBS)` (RFC 9420
/// §6.1): signs `content` for sending with `wire_format`, the private key
/// in `custody`. `context` (the current GroupContext) is required for
/// member and new_member_commit senders and ignored for the others.
///
/// Returns the AuthenticatedContent without a confirmation tag: for a
/// Commit, compute it (RFC 9420 §8.2, the transcript module) and set
/// `auth.confirmation_tag` before protecting.
pub fn sign_content(
    cs: &dyn CipherSuiteProvider,
    custody: &dyn KeyCustody,
    signature_key: &KeyRef,
    wire_format: WireFormat,
    content: FramedContent,
    context: Option<&GroupContext>,
) -> Result<AuthenticatedContent, ProtectionError> {
    if wire_format == WireFormat::PUBLIC_MESSAGE {
        if content.content_type() == ContentType::Application {
            return Err(ProtectionError::ApplicationInPublicMessage);
        }
    } else if wire_format == WireFormat::PRIVATE_MESSAGE {
        if !matches!(content.sender, Sender::Member(_)) {
            return Err(ProtectionError::NonMemberPrivateMessage);
        }
    } else {
        return Err(ProtectionError::WrongWireFormat {
            expected: WireFormat::PUBLIC_MESSAGE.0,
            actual: wire_format.0,
        });
    }
    check_sender_content(&content)?;
    let context = if needs_context(&content.sender) {
        let ctx = context.ok_or(ProtectionError::MissingGroupContext)?;
        check_group_epoch(&content.group_id, content.epoch, ctx)?;
        Some(ctx)
    } else {
        None
    };
    let tbs = content.to_be_signed(wire_format, context)?;
    let signature = cs.sign_with_label(custody, signature_key, FRAMED_CONTENT_TBS, &tbs)?;
    Ok(AuthenticatedContent {
        wire_format,
        content,
        auth: FramedContentAuthData {
            signature,
            confirmation_tag: None,
        },
    })
}

/// Verifies the content signature with `signature_key` (RFC 9420 §6.1).
/// `context` is used for member and new_member_commit senders.
pub fn verify_content_signature(
    cs: &dyn CipherSuiteProvider,
    content: &AuthenticatedContent,
    context: &GroupContext,
    signature_key: &[u8],
) -> Result<(), ProtectionError> {
    let ctx = needs_context(&content.content.sender).then_some(context);
    let tbs = content.content.to_be_signed(content.wire_format, ctx)?;
    cs.verify_with_label(
        signature_key,
        FRAMED_CONTENT_TBS,
        &tbs,
        &content.auth.signature,
    )
    .map_err(ProtectionError::InvalidSignature)
}

/// Frames signed content as a PublicMessage (RFC 9420 §6.2), adding
/// `membership_tag = MAC(membership_key, AuthenticatedContentTBM)` for a
/// member sender (`membership` is then required; it is ignored for other
/// senders).
pub fn protect_public(
    cs: &dyn CipherSuiteProvider,
    content: AuthenticatedContent,
    membership: Option<Membership<'_>>,
) -> Result<PublicMessage, ProtectionError> {
    check_wire_format(content.wire_format, WireFormat::PUBLIC_MESSAGE)?;
    let content_type = content.content.content_type();
    if content_type == ContentType::Application {
        return Err(ProtectionError::ApplicationInPublicMessage);
    }
    check_sender_content(&content.content)?;
    check_confirmation_tag(content_type, &content.auth)?;
    let mut message = PublicMessage {
        content: content.content,
        auth: content.auth,
        membership_tag: None,
    };
    if matches!(message.content.sender, Sender::Member(_)) {
        let m = membership.ok_or(ProtectionError::MissingMembershipKey)?;
        check_group_epoch(
            &message.content.group_id,
            message.content.epoch,
            m.group_context,
        )?;
        let tbm = message.membership_tag_input(m.group_context)?;
        let tag = cs.mac(m.membership_key.as_bytes(), &[&tbm]);
        message.membership_tag = Some(crate::codec::Mac(tag.to_vec()));
    }
    Ok(message)
}

/// Checks a PublicMessage received in the epoch of `context` (RFC 9420
/// §6.2): group id and epoch, the sender and content rules, the
/// membership tag of a member sender (constant time), and the signature
/// with `signature_key` (the sender's key, RFC 9420 §6.1).
pub fn unprotect_public(
    cs: &dyn CipherSuiteProvider,
    message: PublicMessage,
    context: &GroupContext,
    membership_key: &Secret,
    signature_key: &[u8],
) -> Result<AuthenticatedContent, ProtectionError> {
    let framed = framed_encoding(&message)?;
    unprotect_public_checked(
        cs,
        message,
        &framed,
        context,
        Some(membership_key),
        signature_key,
        None,
        |content, _| Ok::<_, ProtectionError>(content),
    )
    .inspect_err(|e| tracing::debug!(error = %e, "PublicMessage rejected"))
}

/// A commit's `confirmed_transcript_hash` (RFC 9420 §8.2) as the
/// processing of a received PublicMessage hands it on: computed from the
/// received bytes, possibly still on its own thread, and waited for when
/// the key schedule needs it.
pub(crate) struct ConfirmedHash<'a>(Box<dyn FnOnce() -> Option<Digest> + 'a>);

impl ConfirmedHash<'_> {
    /// The hash (waiting for its thread): `None` if the content is not a
    /// commit.
    pub(crate) fn get(self) -> Option<Digest> {
        (self.0)()
    }
}

/// [`unprotect_public`] for a member about to process the content, from
/// the `MLSMessage` as received (`received`, which `message` was decoded
/// from). The membership tag, the signature and a commit's
/// `confirmed_transcript_hash` (over `interim_transcript_hash_before`)
/// are computed over the received bytes of the content instead of an
/// encoding of it, and `process` gets the content with that hash.
///
/// The received bytes are the encoding the checks need: the decoder
/// accepts only canonical encodings (minimal vector headers, optional
/// flags 0 or 1, version mls10), so `version ‖ wire_format ‖
/// FramedContent` is the prefix of `received` of that encoding's length,
/// which is checked.
///
/// Without `membership_key` (an observer without the epoch's secrets: a
/// Delivery Service following the public group state) the membership tag
/// of a member sender must be there but its value is not checked.
///
/// A large message from a member (a commit to thousands of members) is
/// processed while its signature and transcript hash are still being
/// computed on their own threads, once its membership tag verified on
/// this one (so not for an observer): the sender holds this epoch's
/// membership key. Its result counts only if the signature verifies (an
/// invalid signature is the error reported, before any of `process`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn unprotect_received_public<R, E: From<ProtectionError> + std::fmt::Display>(
    cs: &dyn CipherSuiteProvider,
    message: PublicMessage,
    received: &[u8],
    context: &GroupContext,
    membership_key: Option<&Secret>,
    signature_key: &[u8],
    interim_transcript_hash_before: &[u8],
    process: impl FnOnce(AuthenticatedContent, ConfirmedHash<'_>) -> Result<R, E>,
) -> Result<R, E> {
    // version, wire_format: two uint16
    if received.len() != 4 + message.tls_serialized_len() {
        return Err(ProtectionError::from(CodecError::Malformed(
            "a PublicMessage not in its canonical encoding".into(),
        ))
        .into());
    }
    let framed_len = framed_len(&message);
    unprotect_public_checked(
        cs,
        message,
        &received[..framed_len],
        context,
        membership_key,
        signature_key,
        Some(interim_transcript_hash_before),
        process,
    )
    .inspect_err(|e| tracing::debug!(error = %e, "PublicMessage rejected"))
}

/// The length of `version ‖ wire_format ‖ FramedContent`, the start of an
/// `MLSMessage` carrying `message`, of its FramedContentTBS and (from
/// `wire_format` on) of its ConfirmedTranscriptHashInput.
fn framed_len(message: &PublicMessage) -> usize {
    4 + message.content.tls_serialized_len()
}

/// `version ‖ wire_format ‖ FramedContent` for a PublicMessage that was
/// not received as bytes.
fn framed_encoding(message: &PublicMessage) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(framed_len(message));
    ProtocolVersion::MLS10.tls_serialize(&mut out)?;
    WireFormat::PUBLIC_MESSAGE.tls_serialize(&mut out)?;
    message.content.tls_serialize(&mut out)?;
    Ok(out)
}

/// From this size of `FramedContentTBS` on (a commit whose UpdatePath is
/// encrypted to thousands of leaves), the membership tag, the signature
/// and the confirmed transcript hash, three independent SHA-256 passes
/// over the content, run side by side: the tag on the caller's thread,
/// the other two on their own, where they go on while a member's commit
/// is staged. Below it a thread costs more than it saves.
const PARALLEL_CHECKS_FROM: usize = 256 * 1024;

/// The checks of a PublicMessage, hashed from `framed` (`version ‖
/// wire_format ‖ FramedContent` as received or encoded): each of the three
/// inputs is `framed` between short pieces, so the content is never
/// copied. `process` gets the checked content and a commit's confirmed
/// transcript hash (see [`unprotect_received_public`] for when it runs
/// before the signature is known to verify).
#[allow(clippy::too_many_arguments)]
fn unprotect_public_checked<R, E: From<ProtectionError>>(
    cs: &dyn CipherSuiteProvider,
    message: PublicMessage,
    framed: &[u8],
    context: &GroupContext,
    membership_key: Option<&Secret>,
    signature_key: &[u8],
    interim_transcript_hash_before: Option<&[u8]>,
    process: impl FnOnce(AuthenticatedContent, ConfirmedHash<'_>) -> Result<R, E>,
) -> Result<R, E> {
    check_group_epoch(&message.content.group_id, message.content.epoch, context)?;
    let content_type = message.content.content_type();
    if content_type == ContentType::Application {
        return Err(ProtectionError::ApplicationInPublicMessage.into());
    }
    check_sender_content(&message.content)?;
    check_confirmation_tag(content_type, &message.auth)?;
    let membership = match (&message.content.sender, &message.membership_tag) {
        (Sender::Member(_), Some(tag)) => membership_key.map(|key| (key, tag.as_slice())),
        (Sender::Member(_), None) => return Err(ProtectionError::MissingMembershipTag.into()),
        (_, Some(_)) => return Err(ProtectionError::UnexpectedMembershipTag.into()),
        (_, None) => None,
    };

    // FramedContentTBS = version ‖ wire_format ‖ FramedContent ‖ [GroupContext]
    let context = match needs_context(&message.content.sender) {
        true => context.encode().map_err(ProtectionError::from)?,
        false => Vec::new(),
    };
    // SignContent = label<V> ‖ content<V> (RFC 9420 §5.1.2)
    let label_len = MLS_LABEL_PREFIX.len() + FRAMED_CONTENT_TBS.len();
    let mut sign_header = Vec::with_capacity(vl_header_len(label_len) + label_len + 4);
    write_vl_header(label_len, &mut sign_header).map_err(ProtectionError::from)?;
    sign_header.extend_from_slice(MLS_LABEL_PREFIX);
    sign_header.extend_from_slice(FRAMED_CONTENT_TBS);
    write_vl_header(framed.len() + context.len(), &mut sign_header)
        .map_err(ProtectionError::from)?;
    let auth = message.auth.encode().map_err(ProtectionError::from)?;
    let mut signature = Vec::with_capacity(message.auth.signature.len() + 4);
    vl_bytes::tls_serialize(&message.auth.signature, &mut signature)
        .map_err(ProtectionError::from)?;

    // AuthenticatedContentTBM = FramedContentTBS ‖ FramedContentAuthData
    let check_tag = || match membership {
        Some((key, tag)) => cs
            .verify_mac(key.as_bytes(), &[framed, &context, &auth], tag)
            .map_err(|_| ProtectionError::InvalidMembershipTag),
        None => Ok(()),
    };
    let check_signature = || {
        cs.verify(
            signature_key,
            &[&sign_header, framed, &context],
            &message.auth.signature,
        )
        .map_err(ProtectionError::InvalidSignature)
    };
    // ConfirmedTranscriptHashInput = wire_format ‖ content ‖ signature<V>
    let transcript = || match (content_type, interim_transcript_hash_before) {
        (ContentType::Commit, Some(interim)) => Some(cs.hash(&[interim, &framed[2..], &signature])),
        _ => None,
    };
    let checked = |auth: FramedContentAuthData| AuthenticatedContent {
        wire_format: WireFormat::PUBLIC_MESSAGE,
        content: message.content,
        auth,
    };
    if framed.len() < PARALLEL_CHECKS_FROM {
        check_tag()?;
        check_signature()?;
        let confirmed = transcript();
        return process(
            checked(message.auth.clone()),
            ConfirmedHash(Box::new(move || confirmed)),
        );
    }
    std::thread::scope(|scope| {
        let signature = on_thread(scope, check_signature);
        let confirmed = on_thread(scope, transcript);
        check_tag()?;
        let content = checked(message.auth.clone());
        if membership.is_some() {
            // A member sent it: processed while the other two finish.
            let processed = process(content, ConfirmedHash(Box::new(move || confirmed.join())));
            signature.join()?;
            processed
        } else {
            signature.join()?;
            process(content, ConfirmedHash(Box::new(move || confirmed.join())))
        }
    })
}

/// Work started on a scoped thread, or run on this one if no thread
/// could be started.
enum OnThread<'scope, T> {
    Spawned(std::thread::ScopedJoinHandle<'scope, T>),
    Done(T),
}

impl<T> OnThread<'_, T> {
    fn join(self) -> T {
        match self {
            OnThread::Spawned(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            OnThread::Done(v) => v,
        }
    }
}

fn on_thread<'scope, T: Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    f: impl FnOnce() -> T + Send + Clone + 'scope,
) -> OnThread<'scope, T> {
    match std::thread::Builder::new().spawn_scoped(scope, f.clone()) {
        Ok(h) => OnThread::Spawned(h),
        Err(_) => OnThread::Done(f()),
    }
}

/// `nonce XOR (reuse_guard || 0…)` (RFC 9420 §6.3.1).
fn guarded_nonce(nonce: &Secret, reuse_guard: &[u8; REUSE_GUARD_LEN]) -> Zeroizing<Vec<u8>> {
    let mut n = Zeroizing::new(nonce.as_bytes().to_vec());
    for (b, g) in n.iter_mut().zip(reuse_guard) {
        *b ^= g;
    }
    n
}

/// Encrypts signed content as a PrivateMessage (RFC 9420 §6.3): the
/// PrivateMessageContent (zero-padded per `padding`) under the sender's
/// next key of the content type's ratchet, the nonce XORed with a fresh
/// random reuse guard from `rng`, and the SenderData under the key and
/// nonce derived from `sender_data_secret` and the ciphertext sample.
///
/// The sender's ratchet in `secret_tree` advances (RFC 9420 §9.2).
pub fn protect_private(
    cs: &dyn CipherSuiteProvider,
    content: &AuthenticatedContent,
    secret_tree: &mut SecretTree,
    sender_data_secret: &Secret,
    padding: PaddingPolicy,
    rng: &mut dyn CryptoRngCore,
) -> Result<PrivateMessage, ProtectionError> {
    check_wire_format(content.wire_format, WireFormat::PRIVATE_MESSAGE)?;
    let Sender::Member(leaf_index) = content.content.sender else {
        return Err(ProtectionError::NonMemberPrivateMessage);
    };
    let content_type = content.content.content_type();
    check_confirmation_tag(content_type, &content.auth)?;

    // PrivateMessageContent, encoded in a buffer that also holds the AEAD
    // tag, so that sealing never reallocates the plaintext.
    let mut pmc = PrivateMessageContent {
        body: content.content.body.clone(),
        auth: content.auth.clone(),
        padding_len: 0,
    };
    pmc.padding_len = padding.padding_len(pmc.tls_serialized_len());
    let mut buffer = Zeroizing::new(Vec::with_capacity(pmc.tls_serialized_len() + 32));
    pmc.tls_serialize(&mut *buffer)?;
    drop(pmc);

    let aad = PrivateContentAad {
        group_id: content.content.group_id.clone(),
        epoch: content.content.epoch,
        content_type,
        authenticated_data: content.content.authenticated_data.clone(),
    }
    .encode()?;

    let key = secret_tree.next_encryption_key(leaf_index, ratchet_type(content_type))?;
    let mut reuse_guard = [0u8; REUSE_GUARD_LEN];
    rng.fill_bytes(&mut reuse_guard);
    let nonce = guarded_nonce(&key.nonce, &reuse_guard);
    cs.aead_seal_in_place(key.key.as_bytes(), &nonce, &aad, &mut buffer)?;
    let ciphertext = std::mem::take(&mut *buffer);

    let mut sender_data = SenderData {
        leaf_index,
        generation: key.generation,
        reuse_guard,
    }
    .encode()?;
    let (sd_key, sd_nonce) = sender_data_key_nonce(cs, sender_data_secret, &ciphertext)?;
    let sd_aad = SenderDataAad {
        group_id: content.content.group_id.clone(),
        epoch: content.content.epoch,
        content_type,
    }
    .encode()?;
    cs.aead_seal_in_place(
        sd_key.as_bytes(),
        sd_nonce.as_bytes(),
        &sd_aad,
        &mut sender_data,
    )?;

    Ok(PrivateMessage {
        group_id: content.content.group_id.clone(),
        epoch: content.content.epoch,
        content_type,
        authenticated_data: content.content.authenticated_data.clone(),
        encrypted_sender_data: sender_data,
        ciphertext,
    })
}

/// Decodes a decrypted PrivateMessageContent: the body (its type given by
/// the PrivateMessage), the auth data, then padding that MUST be zero
/// (RFC 9420 §6.3.1).
fn decode_private_content(
    content_type: ContentType,
    plaintext: &[u8],
) -> Result<(FramedContentBody, FramedContentAuthData), ProtectionError> {
    use tls_codec::DeserializeBytes;
    // The body is encoded without its content type, which the
    // PrivateMessage carries: decode it with the type prepended.
    let mut typed = Zeroizing::new(Vec::with_capacity(plaintext.len() + 1));
    typed.push(content_type as u8);
    typed.extend_from_slice(plaintext);
    let (body, rest) = FramedContentBody::tls_deserialize_bytes(&typed)
        .map_err(|e| ProtectionError::MalformedContent(e.into()))?;
    let (auth, padding) = FramedContentAuthData::deserialize_for(content_type, rest)
        .map_err(|e| ProtectionError::MalformedContent(e.into()))?;
    if padding.iter().fold(0u8, |acc, &b| acc | b) != 0 {
        return Err(ProtectionError::NonZeroPadding);
    }
    Ok((body, auth))
}

/// Decrypts and verifies a PrivateMessage received in the epoch of
/// `context` (RFC 9420 §6.3): checks group id and epoch, decrypts the
/// SenderData, looks up the sender in `members` (a blank or unknown leaf
/// is [`ProtectionError::UnknownSender`]), decrypts the content with the
/// sender's key of the stated generation and the reuse guard, rejects
/// non-zero padding, and verifies the signature.
///
/// The key is deleted from `secret_tree` (and its ratchet advanced) only
/// if all of this succeeds; a rejected message leaves it unchanged.
pub fn unprotect_private(
    cs: &dyn CipherSuiteProvider,
    message: &PrivateMessage,
    secret_tree: &mut SecretTree,
    sender_data_secret: &Secret,
    context: &GroupContext,
    members: &(impl MemberSignatureKeys + ?Sized),
) -> Result<UnprotectedPrivateMessage, ProtectionError> {
    unprotect_private_checked(
        cs,
        message,
        secret_tree,
        sender_data_secret,
        context,
        members,
    )
    .inspect_err(|e| tracing::debug!(error = %e, "PrivateMessage rejected"))
}

fn unprotect_private_checked(
    cs: &dyn CipherSuiteProvider,
    message: &PrivateMessage,
    secret_tree: &mut SecretTree,
    sender_data_secret: &Secret,
    context: &GroupContext,
    members: &(impl MemberSignatureKeys + ?Sized),
) -> Result<UnprotectedPrivateMessage, ProtectionError> {
    check_group_epoch(&message.group_id, message.epoch, context)?;
    let content_type = message.content_type;

    // Sender data (§6.3.2).
    let (sd_key, sd_nonce) = sender_data_key_nonce(cs, sender_data_secret, &message.ciphertext)?;
    let sd_aad = SenderDataAad {
        group_id: message.group_id.clone(),
        epoch: message.epoch,
        content_type,
    }
    .encode()?;
    let mut sd_plain = message.encrypted_sender_data.clone();
    cs.aead_open_in_place(
        sd_key.as_bytes(),
        sd_nonce.as_bytes(),
        &sd_aad,
        &mut sd_plain,
    )
    .map_err(|_| ProtectionError::SenderDataDecryption)?;
    let sender_data =
        SenderData::decode(&sd_plain).map_err(ProtectionError::MalformedSenderData)?;
    let leaf_index = sender_data.leaf_index;
    let signature_key = members
        .signature_key(leaf_index)
        .ok_or(ProtectionError::UnknownSender(leaf_index))?;

    // Content (§6.3.1), deleting the key only on success.
    let aad = PrivateContentAad {
        group_id: message.group_id.clone(),
        epoch: message.epoch,
        content_type,
        authenticated_data: message.authenticated_data.clone(),
    }
    .encode()?;
    let content = secret_tree.with_decryption_key(
        leaf_index,
        ratchet_type(content_type),
        sender_data.generation,
        |key| {
            let nonce = guarded_nonce(&key.nonce, &sender_data.reuse_guard);
            let mut plaintext = Zeroizing::new(message.ciphertext.clone());
            cs.aead_open_in_place(key.key.as_bytes(), &nonce, &aad, &mut plaintext)
                .map_err(|_| ProtectionError::ContentDecryption)?;
            let (body, auth) = decode_private_content(content_type, &plaintext)?;
            let content = AuthenticatedContent {
                wire_format: WireFormat::PRIVATE_MESSAGE,
                content: FramedContent {
                    group_id: message.group_id.clone(),
                    epoch: message.epoch,
                    sender: Sender::Member(leaf_index),
                    authenticated_data: message.authenticated_data.clone(),
                    body,
                },
                auth,
            };
            verify_content_signature(cs, &content, context, signature_key)?;
            Ok::<_, ProtectionError>(content)
        },
    )?;
    Ok(UnprotectedPrivateMessage {
        content,
        leaf_index,
        generation: sender_data.generation,
    })
}
