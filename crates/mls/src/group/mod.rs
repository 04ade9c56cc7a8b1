//! The group state machine (RFC 9420 §8-§12), sans-IO: bytes in, events
//! and bytes out.
//!
//! A [`Group`] is one member's view of one group. A
//! [`Client`](crate::Client) creates it ([`Client::create_group`](crate::Client::create_group))
//! or joins it ([`Client::join_from_welcome`](crate::Client::join_from_welcome),
//! [`Client::join_by_external_commit`](crate::Client::join_by_external_commit)); it produces messages
//! ([`Group::encrypt_application`], `propose_*`, [`Group::commit`]) and
//! consumes them ([`Group::process_incoming`] returns a typed
//! [`ProcessedMessage`]). Every operation either succeeds or returns a
//! [`GroupError`] and leaves the state unchanged: commits are staged on
//! copies and installed only by [`Group::merge_pending_commit`] /
//! [`Group::merge_staged_commit`].
//!
//! Private keys never leave the member's [`hsmls_custody::KeyCustody`]:
//! the signature key signs there, leaf and init HPKE keys decrypt there,
//! and replaced leaf keys and used init keys are destroyed there (§9.2).

mod commit;
mod config;
mod error;
mod external;
mod join;
mod leaf_ext;
mod proposal_message;
mod proposals;
mod psk_store;
mod public;
mod reinit;
mod saved;
mod self_remove;
mod sender;
pub mod welcome;

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use hsmls_crypto::{CipherSuiteProvider, Digest, Secret};
use hsmls_custody::KeyRef;
use rand_core::OsRng;

pub use commit::{CommitOutput, LostCommit, OwnCommit, StagedCommit};
pub use config::{CommitOptions, GroupConfig, HandshakeFraming};
pub use error::{
    CommitRule, GroupError, MessageRule, ProposalRule, ReInitRule, WelcomePart, WelcomeRule,
};
pub use external::{external_proposal, new_member_add_proposal};
pub use join::JoinOptions;
pub use proposal_message::ProposalMessage;
pub use proposals::CachedProposal;
#[cfg_attr(not(feature = "test-utils"), allow(unused_imports))]
pub use proposals::{ProposalEffects, ResolvedProposal};
pub use psk_store::PskStore;
pub use public::{
    AddedMember, MAX_OBSERVED_PROPOSALS, ObservedCommit, ObservedMessage, PublicGroup,
};
pub use saved::SaveTicket;

use crate::codec::{
    AuthenticatedContent, ContentType, Credential, Decode, Encode, ExternalPub, FramedContent,
    FramedContentBody, GroupContext, GroupInfo, HpkePublicKey, LeafNode, LeafNodeSource, Mac,
    MlsMessage, MlsMessageBody, PrivateMessage, Proposal, ProposalRef, PublicMessage, Remove,
    Sender, SignaturePublicKey, Update, WireFormat,
};
use crate::credential::{CredentialValidator, Signer};
use crate::key_package::KeyPackage;
use crate::key_schedule::EpochSecrets;
use crate::message_protection::{
    MemberSignatureKeys, Membership, protect_private, protect_public, sign_content,
    unprotect_private, unprotect_received_public,
};
use crate::secret_tree::SecretTree;
use crate::tree::{RatchetTree, TreeKemPrivate};
use crate::tree_math::LeafIndex;
use proposals::{ValidationContext, suite_provider};

/// A member of the group as the application sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Member {
    /// The member's leaf index (stable while it stays in the group).
    pub index: LeafIndex,
    /// Its credential.
    pub credential: Credential,
    /// Its signature public key.
    pub signature_key: SignaturePublicKey,
    /// Its leaf HPKE public key.
    pub encryption_key: HpkePublicKey,
}

impl Member {
    fn from_leaf(index: LeafIndex, leaf: &LeafNode) -> Self {
        Member {
            index,
            credential: leaf.credential.clone(),
            signature_key: leaf.signature_key.clone(),
            encryption_key: leaf.encryption_key.clone(),
        }
    }
}

/// What [`Group::process_incoming`] made of a message. Its Debug output
/// shows the length of application data, not the data.
///
/// A Delivery Service sends a group's messages to every member, the
/// sender included (RFC 9750 §5.2): this member's own messages coming back
/// are [`ProcessedMessage::OwnCommit`] (its pending commit, now merged) or
/// [`ProcessedMessage::OwnMessage`] (a message it sent, recognised).
#[allow(
    clippy::large_enum_variant,
    reason = "events are moved once to the application"
)]
#[must_use = "a StagedCommit changes nothing until merged, and may carry a lost commit"]
#[non_exhaustive]
pub enum ProcessedMessage {
    /// Application data from a member.
    ApplicationMessage {
        /// The sending member.
        sender: LeafIndex,
        /// The epoch the message was sent in (may be a past epoch).
        epoch: u64,
        /// The application data.
        data: Vec<u8>,
        /// The message's `authenticated_data`.
        authenticated_data: Vec<u8>,
    },
    /// A proposal, now cached for the next commit.
    Proposal {
        /// Who proposed it.
        sender: Sender,
        /// The proposal.
        proposal: Proposal,
        /// Its reference.
        reference: ProposalRef,
    },
    /// A commit, validated and staged: show its changes, then call
    /// [`Group::merge_staged_commit`]. If this member had a commit pending
    /// for the same epoch, it lost: [`StagedCommit::lost_commit`] says
    /// what it was to do.
    StagedCommit(StagedCommit),
    /// This member's pending commit came back from the Delivery Service
    /// (byte for byte): the Delivery Service accepted it, and it is now
    /// merged (as by [`Group::merge_pending_commit`]; the application
    /// does not merge it again). If the application merged it already, its
    /// echo is an [`ProcessedMessage::OwnMessage`].
    OwnCommit(OwnCommit),
    /// A message this member sent (an application message, a proposal, a
    /// commit merged or lost) came back from the Delivery Service: nothing
    /// to do. The sender cannot decrypt its own PrivateMessage (the key of
    /// its generation was deleted when it was sent, RFC 9420 §9.2), so the
    /// member keeps the digests of the last [`SENT_MESSAGES_KEPT`]
    /// messages it sent in the current and retained epochs and recognises
    /// them by their bytes. This is a recognition, not an authentication:
    /// a byte-equal replay of the message is the same message.
    OwnMessage {
        /// The message's content type.
        content_type: ContentType,
        /// The epoch it was sent in.
        epoch: u64,
    },
}

impl fmt::Debug for ProcessedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessedMessage::ApplicationMessage {
                sender,
                epoch,
                data,
                authenticated_data,
            } => f
                .debug_struct("ApplicationMessage")
                .field("sender", sender)
                .field("epoch", epoch)
                .field("data_len", &data.len())
                .field("authenticated_data_len", &authenticated_data.len())
                .finish(),
            ProcessedMessage::Proposal {
                sender, reference, ..
            } => f
                .debug_struct("Proposal")
                .field("sender", sender)
                .field("reference", reference)
                .finish_non_exhaustive(),
            ProcessedMessage::StagedCommit(s) => f.debug_tuple("StagedCommit").field(s).finish(),
            ProcessedMessage::OwnCommit(c) => f.debug_tuple("OwnCommit").field(c).finish(),
            ProcessedMessage::OwnMessage {
                content_type,
                epoch,
            } => f
                .debug_struct("OwnMessage")
                .field("content_type", content_type)
                .field("epoch", epoch)
                .finish(),
        }
    }
}

/// The state of one epoch.
#[derive(Clone)]
pub(crate) struct EpochState {
    pub(crate) context: GroupContext,
    pub(crate) tree: RatchetTree,
    pub(crate) private: TreeKemPrivate,
    /// The epoch secrets; `encryption_secret` is consumed into
    /// `secret_tree` and left empty.
    pub(crate) secrets: EpochSecrets,
    pub(crate) secret_tree: SecretTree,
    pub(crate) interim_transcript_hash: Vec<u8>,
    pub(crate) confirmation_tag: Mac,
}

impl EpochState {
    fn own_leaf(&self) -> LeafIndex {
        self.private.own_leaf()
    }
}

/// What is kept of a past epoch to decrypt late application messages.
#[derive(Clone, PartialEq, Eq)]
struct PastEpoch {
    context: GroupContext,
    secret_tree: SecretTree,
    sender_data_secret: Secret,
    /// The epoch's tree (cheap to keep: nodes are shared), for the
    /// senders' signature keys.
    tree: RatchetTree,
}

/// Tree leaves as the message-protection layer looks signature keys up.
struct TreeKeys<'a>(&'a RatchetTree);

impl MemberSignatureKeys for TreeKeys<'_> {
    fn signature_key(&self, leaf: LeafIndex) -> Option<&[u8]> {
        self.0.leaf(leaf).map(|l| l.signature_key.as_slice())
    }
}

/// An own Update proposal not yet committed: the new leaf key in custody.
#[derive(Clone, PartialEq, Eq)]
struct OwnUpdate {
    reference: ProposalRef,
    leaf_node: LeafNode,
    leaf_key: KeyRef,
}

/// How many of its own messages a member recognises when the Delivery
/// Service sends them back (see [`ProcessedMessage::OwnMessage`]): the
/// digests of the last 256 it sent, from the current and retained epochs.
pub const SENT_MESSAGES_KEPT: usize = 256;

/// A message this member sent, remembered by the digest of its
/// `MLSMessage` bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
struct SentMessage {
    digest: Digest,
    content_type: ContentType,
    epoch: u64,
}

/// One member's state of one MLS group (RFC 9420 §8-§12), sans-IO: bytes
/// in, events and bytes out.
///
/// A [`Client`](crate::Client) creates it
/// ([`Client::create_group`](crate::Client::create_group)) or joins it
/// ([`Client::join_from_welcome`](crate::Client::join_from_welcome),
/// [`Client::join_by_external_commit`](crate::Client::join_by_external_commit),
/// [`Client::join_reinit`](crate::Client::join_reinit),
/// [`Client::join_branch`](crate::Client::join_branch)) or loads it
/// ([`Client::load_group`](crate::Client::load_group)). It produces
/// messages ([`Group::encrypt_application`], the `propose_*` methods,
/// [`Group::commit`] and its shorthands) and consumes them
/// ([`Group::process_incoming`] returns a typed [`ProcessedMessage`]).
/// Every operation either succeeds or returns a [`GroupError`] and leaves
/// the state unchanged: commits are staged on copies and installed only by
/// [`Group::merge_pending_commit`] / [`Group::merge_staged_commit`].
///
/// Private keys never leave the member's custody: the signature key signs
/// there, leaf and init HPKE keys decrypt there, and replaced leaf keys
/// and used init keys are destroyed there (RFC 9420 §9.2).
pub struct Group {
    cs: &'static dyn CipherSuiteProvider,
    config: GroupConfig,
    signer: Signer,
    validator: Arc<dyn CredentialValidator>,
    state: EpochState,
    past: VecDeque<PastEpoch>,
    proposals: Vec<CachedProposal>,
    own_updates: Vec<OwnUpdate>,
    pending_commit: Option<Box<commit::PendingCommit>>,
    psks: PskStore,
    removed: bool,
    /// The ReInit of the last merged commit: the group is closed (§11.2).
    reinit: Option<crate::codec::ReInit>,
    /// The reinit or branch resumption PSK this member joined with.
    linked_psk: Option<crate::codec::ResumptionPsk>,
    /// The last messages this member sent (at most
    /// [`SENT_MESSAGES_KEPT`]), oldest first.
    sent: VecDeque<SentMessage>,
    /// What the last confirmed save wrote of the tree (incremental saves).
    saved_tree: saved::SavedTree,
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("group_id", &self.state.context.group_id)
            .field("epoch", &self.state.context.epoch)
            .field("own_leaf", &self.state.own_leaf())
            .field("members", &self.state.tree.member_count())
            .finish_non_exhaustive()
    }
}

/// A comparable snapshot of a group's whole state, for tests that check a
/// rejected input changed nothing. Its Debug output shows no secret.
#[cfg(feature = "test-utils")]
#[derive(Clone, PartialEq, Eq)]
pub struct GroupStateSnapshot {
    context: GroupContext,
    tree: RatchetTree,
    leaf_key: KeyRef,
    parent_key_nodes: Vec<u32>,
    epoch_authenticator: Secret,
    init_secret: Secret,
    secret_tree: SecretTree,
    interim_transcript_hash: Vec<u8>,
    past: Vec<PastEpoch>,
    proposals: Vec<CachedProposal>,
    own_updates: Vec<OwnUpdate>,
    pending_commit: bool,
    psks: PskStore,
    sent: Vec<SentMessage>,
}

#[cfg(feature = "test-utils")]
impl fmt::Debug for GroupStateSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupStateSnapshot")
            .field("epoch", &self.context.epoch)
            .field("proposals", &self.proposals.len())
            .finish_non_exhaustive()
    }
}

/// The current time is needed only where lifetimes are checked; this
/// names the parameter (seconds since the Unix epoch).
pub type UnixTime = u64;

/// Lifetime of the founder's leaf (90 days).
const FOUNDER_LEAF_LIFETIME: u64 = 90 * 24 * 3600;

/// A fresh random group id (32 bytes): RFC 9420 §11 asks for group ids
/// that honest creators do not generate twice, e.g. random ones.
pub fn random_group_id() -> Vec<u8> {
    let mut id = vec![0; 32];
    rand_core::RngCore::fill_bytes(&mut OsRng, &mut id);
    id
}

impl Group {
    /// Creates a one-member group (RFC 9420 §11) with `signer` at leaf 0.
    /// The founder's leaf encryption key is generated in the signer's
    /// custody. Applications call [`crate::Client::create_group`].
    pub(crate) fn create(
        config: GroupConfig,
        signer: Signer,
        validator: Arc<dyn CredentialValidator>,
        group_id: Vec<u8>,
        extensions: Vec<crate::codec::Extension>,
        now: UnixTime,
    ) -> Result<Self, GroupError> {
        let cs = suite_provider(config.cipher_suite)?;
        validator.validate_in_suite(
            config.cipher_suite,
            &signer.credential,
            &signer.signature_public_key(),
        )?;
        let leaf_key = signer.custody.generate(cs.hpke_key_spec())?;
        let result = (|| {
            // The founder's leaf has source key_package (§11) with a
            // lifetime starting now.
            let lifetime = crate::codec::Lifetime {
                not_before: now,
                not_after: now.saturating_add(FOUNDER_LEAF_LIFETIME),
            };
            let mut leaf = LeafNode {
                encryption_key: HpkePublicKey(leaf_key.public_key().as_bytes().to_vec()),
                signature_key: signer.signature_public_key(),
                credential: signer.credential.clone(),
                capabilities: crate::key_package::default_capabilities(
                    config.cipher_suite,
                    signer.credential.credential_type(),
                ),
                leaf_node_source: LeafNodeSource::KeyPackage(lifetime),
                extensions: Vec::new(),
                signature: Vec::new(),
            };
            crate::key_package::sign_leaf_node(cs, &signer, &mut leaf, None)?;
            let mut tree = RatchetTree::new(cs, leaf);
            let context = GroupContext {
                version: crate::codec::ProtocolVersion::MLS10,
                cipher_suite: config.cipher_suite,
                group_id,
                epoch: 0,
                tree_hash: tree.tree_hash()?.to_vec(),
                confirmed_transcript_hash: Vec::new(),
                extensions,
            };
            // §8: epoch 0 uses a random init_secret and no commit secret.
            let mut init = Secret::zero(cs.hash_len());
            rand_core::RngCore::fill_bytes(&mut OsRng, init.as_mut_bytes());
            let schedule =
                crate::key_schedule::KeySchedule::run(cs, &init, None, None, &context.encode()?)?;
            let private = TreeKemPrivate::new(LeafIndex(0), leaf_key.clone());
            let mut secrets = schedule.epoch;
            let secret_tree = commit::make_secret_tree(cs, &config, &mut secrets, 1)?;
            // §8.2: epoch 0's interim transcript hash uses the confirmation
            // tag over the empty confirmed transcript hash.
            let confirmation_tag = crate::transcript::confirmation_tag(
                cs,
                &secrets.confirmation_key,
                &context.confirmed_transcript_hash,
            );
            let interim = crate::transcript::TranscriptHashes::from_group_info(
                cs,
                &context.confirmed_transcript_hash,
                &confirmation_tag,
            )?
            .interim;
            Ok::<_, GroupError>(EpochState {
                context,
                tree,
                private,
                secrets,
                secret_tree,
                interim_transcript_hash: interim,
                confirmation_tag,
            })
        })();
        let state = match result {
            Ok(s) => s,
            Err(e) => {
                let _ = signer.custody.destroy(&leaf_key);
                return Err(e);
            }
        };
        Ok(Group::from_state(
            cs,
            config,
            signer,
            validator,
            state,
            PskStore::default(),
        ))
    }

    fn from_state(
        cs: &'static dyn CipherSuiteProvider,
        config: GroupConfig,
        signer: Signer,
        validator: Arc<dyn CredentialValidator>,
        state: EpochState,
        psks: PskStore,
    ) -> Self {
        let mut g = Group {
            cs,
            config,
            signer,
            validator,
            state,
            past: VecDeque::new(),
            proposals: Vec::new(),
            own_updates: Vec::new(),
            pending_commit: None,
            psks,
            removed: false,
            reinit: None,
            linked_psk: None,
            sent: VecDeque::new(),
            saved_tree: saved::SavedTree::default(),
        };
        g.record_resumption_psk();
        g
    }

    fn record_resumption_psk(&mut self) {
        let keep = self.config.max_past_epochs.max(1) + 1;
        self.psks.insert_resumption(
            &self.state.context.group_id,
            self.state.context.epoch,
            self.state.secrets.resumption_psk.clone(),
            keep,
        );
    }

    // ----- accessors -----

    /// Whether this member is still in the group (false once a commit
    /// removing it was merged).
    pub fn is_active(&self) -> bool {
        !self.removed
    }

    fn check_active(&self) -> Result<(), GroupError> {
        if self.removed {
            Err(GroupError::Removed)
        } else if self.reinit.is_some() {
            Err(GroupError::ReInitialized)
        } else {
            Ok(())
        }
    }

    /// The group id.
    pub fn group_id(&self) -> &[u8] {
        &self.state.context.group_id
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.state.context.epoch
    }

    /// The current GroupContext.
    pub fn group_context(&self) -> &GroupContext {
        &self.state.context
    }

    /// This member's leaf index.
    pub fn own_leaf_index(&self) -> LeafIndex {
        self.state.own_leaf()
    }

    /// The custody reference of this member's current leaf HPKE key (for
    /// audits: the key lives in the signer's custody backend).
    pub fn own_leaf_key(&self) -> &KeyRef {
        self.state.private.leaf_key()
    }

    /// The group's configuration.
    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// Changes the configuration (framing, retention); the cipher suite
    /// cannot change.
    pub fn set_config(&mut self, mut config: GroupConfig) {
        config.cipher_suite = self.config.cipher_suite;
        self.config = config;
    }

    /// The members, in leaf order.
    pub fn members(&self) -> Vec<Member> {
        self.state
            .tree
            .leaves()
            .map(|(i, l)| Member::from_leaf(i, l))
            .collect()
    }

    /// The member at `index`, if any.
    pub fn member(&self, index: LeafIndex) -> Option<Member> {
        self.state
            .tree
            .leaf(index)
            .map(|l| Member::from_leaf(index, l))
    }

    /// The tree hash of the current epoch (RFC 9420 §7.8).
    pub fn tree_hash(&self) -> &[u8] {
        &self.state.context.tree_hash
    }

    /// The ratchet tree, for sending out of band (RFC 9420 §12.4.3.3).
    pub fn ratchet_tree(&self) -> crate::codec::RatchetTree {
        self.state.tree.to_ratchet_tree()
    }

    /// The `epoch_authenticator` (RFC 9420 §8.7): equal at every member of
    /// the epoch; compare it out of band to detect a split view.
    pub fn epoch_authenticator(&self) -> &[u8] {
        self.state.secrets.epoch_authenticator.as_bytes()
    }

    /// `MLS-Exporter(label, context, length)` (RFC 9420 §8.5).
    pub fn export_secret(
        &self,
        label: &[u8],
        context: &[u8],
        length: usize,
    ) -> Result<Secret, GroupError> {
        Ok(self
            .state
            .secrets
            .mls_exporter(self.cs, label, context, length)?)
    }

    /// The proposals cached in this epoch.
    pub fn pending_proposals(&self) -> &[CachedProposal] {
        &self.proposals
    }

    /// Drops a cached proposal (e.g. one the application does not want to
    /// commit). If it is this member's own Update, its key is destroyed.
    pub fn discard_proposal(&mut self, reference: &ProposalRef) -> bool {
        let before = self.proposals.len();
        self.proposals.retain(|p| &p.reference != reference);
        let custody = self.signer.custody.clone();
        self.own_updates.retain(|u| {
            if &u.reference == reference {
                if let Err(e) = custody.destroy(&u.leaf_key) {
                    tracing::warn!(error = %e, "could not destroy a discarded update key");
                }
                false
            } else {
                true
            }
        });
        self.proposals.len() != before
    }

    /// Whether a commit of this member awaits merging.
    pub fn has_pending_commit(&self) -> bool {
        self.pending_commit.is_some()
    }

    /// The custody reference of the fresh leaf key of this member's
    /// pending commit, if the commit has an UpdatePath (for audits: the key
    /// becomes the leaf key when the commit is merged, and is destroyed
    /// when it is discarded or lost).
    pub fn pending_leaf_key(&self) -> Option<&KeyRef> {
        self.pending_commit
            .as_ref()
            .map(|p| p.state.private.leaf_key())
            .filter(|k| *k != self.state.private.leaf_key())
    }

    /// The PSK store (add external PSKs here before committing or
    /// processing PreSharedKey proposals).
    pub fn psk_store_mut(&mut self) -> &mut PskStore {
        &mut self.psks
    }

    /// This member's signer.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// The current GroupContext and membership key, for tests that tag
    /// forged PublicMessages as a member could.
    #[cfg(feature = "test-utils")]
    #[doc(hidden)]
    pub fn membership(&self) -> Membership<'_> {
        Membership {
            group_context: &self.state.context,
            membership_key: &self.state.secrets.membership_key,
        }
    }

    /// A snapshot of the whole state, for equality checks in tests.
    #[cfg(feature = "test-utils")]
    #[doc(hidden)]
    pub fn state_snapshot(&self) -> GroupStateSnapshot {
        GroupStateSnapshot {
            context: self.state.context.clone(),
            tree: self.state.tree.clone(),
            leaf_key: self.state.private.leaf_key().clone(),
            parent_key_nodes: self.state.private.parent_key_nodes().map(|x| x.0).collect(),
            epoch_authenticator: self.state.secrets.epoch_authenticator.clone(),
            init_secret: self.state.secrets.init_secret.clone(),
            secret_tree: self.state.secret_tree.clone(),
            interim_transcript_hash: self.state.interim_transcript_hash.clone(),
            past: self.past.iter().cloned().collect(),
            proposals: self.proposals.clone(),
            own_updates: self.own_updates.clone(),
            pending_commit: self.pending_commit.is_some(),
            psks: self.psks.clone(),
            sent: self.sent.iter().copied().collect(),
        }
    }

    /// The GroupInfo of the current epoch (RFC 9420 §12.4.3), signed, as
    /// an `MLSMessage`: with `external_pub` (for external joins) and, per
    /// the configuration, the ratchet tree.
    pub fn group_info(&self) -> Result<Vec<u8>, GroupError> {
        let gi =
            self.build_group_info(&self.state, self.config.ratchet_tree_in_group_info, true)?;
        Ok(MlsMessage {
            body: MlsMessageBody::GroupInfo(gi),
        }
        .encode()?)
    }

    pub(crate) fn build_group_info(
        &self,
        state: &EpochState,
        with_tree: bool,
        with_external_pub: bool,
    ) -> Result<GroupInfo, GroupError> {
        self.build_group_info_by(state, with_tree, with_external_pub, &self.signer)
    }

    /// [`Group::build_group_info`] signed by `signer` (the signer of this
    /// member's leaf in `state`).
    pub(crate) fn build_group_info_by(
        &self,
        state: &EpochState,
        with_tree: bool,
        with_external_pub: bool,
        signer: &Signer,
    ) -> Result<GroupInfo, GroupError> {
        let mut extensions = Vec::new();
        if with_tree {
            extensions.push(crate::codec::Extension::from_data(
                &state.tree.to_ratchet_tree(),
            )?);
        }
        if with_external_pub {
            let external = state.secrets.external_key_pair(self.cs)?;
            extensions.push(crate::codec::Extension::from_data(&ExternalPub {
                external_pub: HpkePublicKey(external.public_key().as_bytes().to_vec()),
            })?);
        }
        let mut gi = GroupInfo {
            group_context: state.context.clone(),
            extensions,
            confirmation_tag: state.confirmation_tag.clone(),
            signer: state.own_leaf(),
            signature: Vec::new(),
        };
        welcome::sign_group_info(self.cs, signer, &mut gi)?;
        Ok(gi)
    }

    // ----- sending -----

    fn handshake_wire_format(&self) -> WireFormat {
        match self.config.handshake_framing {
            HandshakeFraming::Private => WireFormat::PRIVATE_MESSAGE,
            HandshakeFraming::Public => WireFormat::PUBLIC_MESSAGE,
        }
    }

    fn member_content(
        &self,
        body: FramedContentBody,
        authenticated_data: Vec<u8>,
    ) -> FramedContent {
        FramedContent {
            group_id: self.state.context.group_id.clone(),
            epoch: self.state.context.epoch,
            sender: Sender::Member(self.state.own_leaf()),
            authenticated_data,
            body,
        }
    }

    /// Frames signed content of the current epoch as an `MLSMessage`.
    fn frame(&mut self, content: AuthenticatedContent) -> Result<Vec<u8>, GroupError> {
        let body = if content.wire_format == WireFormat::PUBLIC_MESSAGE {
            let msg = protect_public(
                self.cs,
                content,
                Some(Membership {
                    group_context: &self.state.context,
                    membership_key: &self.state.secrets.membership_key,
                }),
            )?;
            MlsMessageBody::PublicMessage(msg)
        } else {
            let msg = protect_private(
                self.cs,
                &content,
                &mut self.state.secret_tree,
                &self.state.secrets.sender_data_secret,
                self.config.padding,
                &mut OsRng,
            )?;
            MlsMessageBody::PrivateMessage(msg)
        };
        Ok(MlsMessage { body }.encode()?)
    }

    /// Encrypts application data as a PrivateMessage (RFC 9420 §6.3).
    pub fn encrypt_application(&mut self, data: &[u8]) -> Result<Vec<u8>, GroupError> {
        self.encrypt_application_with_aad(data, Vec::new())
    }

    /// Encrypts application data with `authenticated_data` (sent in clear,
    /// authenticated).
    pub fn encrypt_application_with_aad(
        &mut self,
        data: &[u8],
        authenticated_data: Vec<u8>,
    ) -> Result<Vec<u8>, GroupError> {
        self.check_active()?;
        if self.pending_commit.is_some() {
            return Err(GroupError::PendingCommit);
        }
        let content = self.member_content(
            FramedContentBody::Application(data.to_vec()),
            authenticated_data,
        );
        let signed = sign_content(
            self.cs,
            self.signer.custody.as_ref(),
            &self.signer.signature_key,
            WireFormat::PRIVATE_MESSAGE,
            content,
            Some(&self.state.context),
        )?;
        let bytes = self.frame(signed)?;
        let digest = self.cs.hash(&[&bytes]);
        self.remember_sent(digest, ContentType::Application, self.state.context.epoch);
        Ok(bytes)
    }

    fn send_proposal(&mut self, proposal: Proposal) -> Result<ProposalMessage, GroupError> {
        self.check_active()?;
        if self.pending_commit.is_some() {
            return Err(GroupError::PendingCommit);
        }
        let content = self.member_content(FramedContentBody::Proposal(proposal), Vec::new());
        let signed = sign_content(
            self.cs,
            self.signer.custody.as_ref(),
            &self.signer.signature_key,
            self.handshake_wire_format(),
            content,
            Some(&self.state.context),
        )?;
        let cached = CachedProposal::from_content(self.cs, &signed)?;
        let reference = cached.reference.clone();
        let bytes = self.frame(signed)?;
        self.proposals.push(cached);
        let digest = self.cs.hash(&[&bytes]);
        self.remember_sent(digest, ContentType::Proposal, self.state.context.epoch);
        Ok(ProposalMessage {
            message: bytes,
            reference,
        })
    }

    /// Proposes adding the member of a validated KeyPackage (RFC 9420
    /// §12.1.1). The group checks what depends on it (see
    /// [`Group::add_members`]).
    pub fn propose_add(
        &mut self,
        key_package: &KeyPackage,
        now: UnixTime,
    ) -> Result<ProposalMessage, GroupError> {
        proposals::check_validated_key_package(
            &self.validation_context(now),
            key_package.as_wire(),
        )?;
        self.state
            .tree
            .check_leaves_fit(&[(None, key_package.leaf_node())])?;
        self.send_proposal(Proposal::Add(crate::codec::Add {
            key_package: key_package.as_wire().clone(),
        }))
    }

    /// Proposes removing the member at `leaf` (RFC 9420 §12.1.3).
    pub fn propose_remove(&mut self, leaf: LeafIndex) -> Result<ProposalMessage, GroupError> {
        if self.state.tree.leaf(leaf).is_none() {
            return Err(GroupError::NotAMember(leaf));
        }
        self.send_proposal(Proposal::Remove(Remove { removed: leaf }))
    }

    /// Proposes removing this member (leaving the group, RFC 9420 §12.1.3):
    /// another member must commit it.
    pub fn leave(&mut self) -> Result<ProposalMessage, GroupError> {
        let own = self.state.own_leaf();
        self.propose_remove(own)
    }

    /// Proposes a self-update (RFC 9420 §12.1.2): a fresh leaf HPKE key
    /// generated in custody. The key replaces the current one when a commit
    /// including the proposal is merged.
    pub fn propose_update(&mut self) -> Result<ProposalMessage, GroupError> {
        let own = self.state.own_leaf();
        let old = self
            .state
            .tree
            .leaf(own)
            .cloned()
            .ok_or(GroupError::NotAMember(own))?;
        let leaf_key = self.signer.custody.generate(self.cs.hpke_key_spec())?;
        let result = (|| {
            let mut leaf = LeafNode {
                encryption_key: HpkePublicKey(leaf_key.public_key().as_bytes().to_vec()),
                signature_key: self.signer.signature_public_key(),
                credential: self.signer.credential.clone(),
                capabilities: old.capabilities.clone(),
                leaf_node_source: LeafNodeSource::Update,
                extensions: old.extensions.clone(),
                signature: Vec::new(),
            };
            crate::key_package::sign_leaf_node(
                self.cs,
                &self.signer,
                &mut leaf,
                Some((&self.state.context.group_id, own)),
            )?;
            let sent = self.send_proposal(Proposal::Update(Update {
                leaf_node: leaf.clone(),
            }))?;
            Ok::<_, GroupError>((sent, leaf))
        })();
        match result {
            Ok((sent, leaf_node)) => {
                self.own_updates.push(OwnUpdate {
                    reference: sent.reference.clone(),
                    leaf_node,
                    leaf_key,
                });
                Ok(sent)
            }
            Err(e) => {
                let _ = self.signer.custody.destroy(&leaf_key);
                Err(e)
            }
        }
    }

    /// Proposes injecting a PSK (RFC 9420 §12.1.4). The PSK must be in this
    /// member's store and in every member's.
    pub fn propose_psk(
        &mut self,
        psk: crate::codec::PreSharedKeyId,
    ) -> Result<ProposalMessage, GroupError> {
        if self.psks.get(&psk).is_none() {
            return Err(GroupError::UnknownPsk);
        }
        self.send_proposal(Proposal::PreSharedKey(crate::codec::PreSharedKey { psk }))
    }

    /// Proposes new GroupContext extensions (RFC 9420 §12.1.7).
    pub fn propose_group_context_extensions(
        &mut self,
        extensions: Vec<crate::codec::Extension>,
    ) -> Result<ProposalMessage, GroupError> {
        self.send_proposal(Proposal::GroupContextExtensions(
            crate::codec::GroupContextExtensions { extensions },
        ))
    }

    /// A fresh PSK id for an external PSK, with a random nonce.
    pub fn external_psk_id(&self, psk_id: Vec<u8>) -> crate::codec::PreSharedKeyId {
        let mut nonce = vec![0; self.cs.hash_len()];
        rand_core::RngCore::fill_bytes(&mut OsRng, &mut nonce);
        crate::codec::PreSharedKeyId {
            psk: crate::codec::Psk::External(psk_id),
            psk_nonce: nonce,
        }
    }

    /// A fresh PSK id for the resumption PSK of `epoch` of this group.
    pub fn resumption_psk_id(&self, epoch: u64) -> crate::codec::PreSharedKeyId {
        let mut nonce = vec![0; self.cs.hash_len()];
        rand_core::RngCore::fill_bytes(&mut OsRng, &mut nonce);
        crate::codec::PreSharedKeyId {
            psk: crate::codec::Psk::Resumption(crate::codec::ResumptionPsk {
                usage: crate::codec::ResumptionPskUsage::Application,
                psk_group_id: self.state.context.group_id.clone(),
                psk_epoch: epoch,
            }),
            psk_nonce: nonce,
        }
    }

    /// Adds the members of these validated KeyPackages in one commit (by
    /// value, with any pending proposals): shorthand for [`Group::commit`].
    ///
    /// A [`KeyPackage`] was validated when it was made (RFC 9420 §10.1:
    /// signatures, keys, credential through the validator given to
    /// [`crate::KeyPackageIn::validate`], usually the client's through
    /// [`crate::Client::validate_key_package`]); the group checks what
    /// depends on it: its cipher suite, its lifetime at `now`, the
    /// group's required capabilities and the tree.
    pub fn add_members(
        &mut self,
        key_packages: &[KeyPackage],
        now: UnixTime,
    ) -> Result<CommitOutput, GroupError> {
        let mut options = CommitOptions::new();
        options.add_key_packages = key_packages.to_vec();
        self.commit(options, now)
    }

    /// Removes these members in one commit (by value).
    pub fn remove_members(
        &mut self,
        leaves: &[LeafIndex],
        now: UnixTime,
    ) -> Result<CommitOutput, GroupError> {
        let mut options = CommitOptions::new();
        options.remove_leaves = leaves.to_vec();
        self.commit(options, now)
    }

    /// Commits a fresh UpdatePath for this member (a self-update by
    /// commit, RFC 9420 §12.4), with any pending proposals.
    pub fn self_update(&mut self, now: UnixTime) -> Result<CommitOutput, GroupError> {
        let mut options = CommitOptions::new();
        options.force_path = true;
        self.commit(options, now)
    }

    // ----- receiving -----

    fn validation_context(&self, now: UnixTime) -> ValidationContext<'_> {
        ValidationContext {
            cs: self.cs,
            context: &self.state.context,
            validator: self.validator.as_ref(),
            psks: &self.psks,
            now,
            // A malformed extension cannot be in an accepted GroupContext
            // (it is checked when proposed); treat it as absent.
            required_capabilities:
                crate::codec::find_extension::<crate::codec::RequiredCapabilities>(
                    &self.state.context.extensions,
                )
                .and_then(Result::ok),
            psk_values_known: true,
        }
    }

    /// Processes a message from the Delivery Service (an `MLSMessage`
    /// carrying a PublicMessage or PrivateMessage of this group). On error
    /// the state is unchanged.
    ///
    /// This member's own messages coming back are recognised by their
    /// bytes first: its pending commit is merged and reported as
    /// [`ProcessedMessage::OwnCommit`]; a message it sent (or a commit it
    /// merged or lost) as [`ProcessedMessage::OwnMessage`].
    pub fn process_incoming(
        &mut self,
        message: impl AsRef<[u8]>,
        now: UnixTime,
    ) -> Result<ProcessedMessage, GroupError> {
        self.process_message(message.as_ref(), now)
    }

    fn process_message(
        &mut self,
        bytes: &[u8],
        now: UnixTime,
    ) -> Result<ProcessedMessage, GroupError> {
        let message = MlsMessage::decode(bytes);
        // Only a PublicMessage from this member's leaf, or a PrivateMessage
        // (its sender is encrypted), can be one this member sent: others
        // are not hashed (a commit to a large group is megabytes).
        let may_be_own = match &message {
            Ok(m) => match &m.body {
                MlsMessageBody::PublicMessage(p) => {
                    p.content.sender == Sender::Member(self.state.own_leaf())
                }
                MlsMessageBody::PrivateMessage(_) => true,
                _ => false,
            },
            Err(_) => false,
        };
        if may_be_own && let Some(event) = self.recognise_own(bytes)? {
            return Ok(event);
        }
        self.check_active()?;
        let message = message.map_err(GroupError::Malformed)?;
        match message.body {
            MlsMessageBody::PublicMessage(m) => self.process_public(m, bytes, now),
            MlsMessageBody::PrivateMessage(m) => self.process_private(m, now),
            MlsMessageBody::Welcome(_) => Err(GroupError::UnexpectedMessage(MessageRule::Welcome)),
            MlsMessageBody::GroupInfo(_) => {
                Err(GroupError::UnexpectedMessage(MessageRule::GroupInfo))
            }
            MlsMessageBody::KeyPackage(_) => {
                Err(GroupError::UnexpectedMessage(MessageRule::KeyPackage))
            }
        }
    }

    /// This member's pending commit or a message it sent, recognised by
    /// the digest of its bytes.
    fn recognise_own(&mut self, bytes: &[u8]) -> Result<Option<ProcessedMessage>, GroupError> {
        if self.pending_commit.is_none() && self.sent.is_empty() {
            return Ok(None);
        }
        let digest = self.cs.hash(&[bytes]);
        if let Some(p) = &self.pending_commit
            && p.digest == digest
        {
            let own = p.own.clone();
            self.merge_pending_commit()?;
            tracing::debug!(epoch = own.epoch, "own commit came back: merged");
            return Ok(Some(ProcessedMessage::OwnCommit(own)));
        }
        Ok(self
            .sent
            .iter()
            .find(|s| s.digest == digest)
            .map(|s| ProcessedMessage::OwnMessage {
                content_type: s.content_type,
                epoch: s.epoch,
            }))
    }

    /// Records a message this member sent (bounded by
    /// [`SENT_MESSAGES_KEPT`]).
    pub(crate) fn remember_sent(&mut self, digest: Digest, content_type: ContentType, epoch: u64) {
        if self.sent.len() >= SENT_MESSAGES_KEPT {
            self.sent.pop_front();
        }
        self.sent.push_back(SentMessage {
            digest,
            content_type,
            epoch,
        });
    }

    /// `received`: the MLSMessage `message` was decoded from.
    fn process_public(
        &mut self,
        message: PublicMessage,
        received: &[u8],
        now: UnixTime,
    ) -> Result<ProcessedMessage, GroupError> {
        if message.content.group_id != self.state.context.group_id {
            return Err(GroupError::WrongGroupId);
        }
        if message.content.epoch != self.state.context.epoch {
            return Err(GroupError::WrongEpoch {
                message: message.content.epoch,
                current: self.state.context.epoch,
            });
        }
        if !self.config.accept_public_handshakes {
            return Err(GroupError::WireFormatPolicy);
        }
        let signature_key = sender::sender_signature_key(
            &self.state.tree,
            &self.state.context.extensions,
            &message.content,
        )?;
        unprotect_received_public(
            self.cs,
            message,
            received,
            &self.state.context,
            Some(&self.state.secrets.membership_key),
            signature_key.as_slice(),
            &self.state.interim_transcript_hash,
            |content, confirmed| match content.content.body {
                FramedContentBody::Commit(_) => {
                    // Staging changes nothing: it may run before the
                    // signature is known to verify (see
                    // `unprotect_received_public`).
                    self.check_sender_credential(&content)?;
                    let staged = self.stage_commit(&content, Some(confirmed), now)?;
                    Ok::<_, GroupError>(Ok(ProcessedMessage::StagedCommit(staged)))
                }
                _ => Ok(Err(content)),
            },
        )?
        .or_else(|content| self.process_content(content, None, now))
    }

    fn process_private(
        &mut self,
        message: PrivateMessage,
        now: UnixTime,
    ) -> Result<ProcessedMessage, GroupError> {
        if message.group_id != self.state.context.group_id {
            return Err(GroupError::WrongGroupId);
        }
        if message.epoch != self.state.context.epoch {
            return self.process_past_epoch(&message);
        }
        if message.content_type != ContentType::Application
            && !self.config.accept_private_handshakes
        {
            return Err(GroupError::WireFormatPolicy);
        }
        if message.content_type == ContentType::Application {
            // Decryption is transactional (the key is consumed only if the
            // message opens and verifies) and nothing can fail after it:
            // no copy of the secret tree is needed.
            let unprotected = unprotect_private(
                self.cs,
                &message,
                &mut self.state.secret_tree,
                &self.state.secrets.sender_data_secret,
                &self.state.context,
                &TreeKeys(&self.state.tree),
            )?;
            return self.process_content(unprotected.content, None, now);
        }
        // Handshakes are validated after decryption: stage the secret tree
        // and keep it only if the whole message is accepted.
        let mut secret_tree = self.state.secret_tree.clone();
        let unprotected = unprotect_private(
            self.cs,
            &message,
            &mut secret_tree,
            &self.state.secrets.sender_data_secret,
            &self.state.context,
            &TreeKeys(&self.state.tree),
        )?;
        self.process_content(unprotected.content, Some(secret_tree), now)
    }

    /// A late application message of a retained past epoch.
    fn process_past_epoch(
        &mut self,
        message: &PrivateMessage,
    ) -> Result<ProcessedMessage, GroupError> {
        let current = self.state.context.epoch;
        let wrong = GroupError::WrongEpoch {
            message: message.epoch,
            current,
        };
        if message.content_type != ContentType::Application {
            return Err(wrong);
        }
        let Some(past) = self
            .past
            .iter_mut()
            .find(|p| p.context.epoch == message.epoch)
        else {
            return Err(wrong);
        };
        // Transactional decryption; the content type was checked above.
        let unprotected = unprotect_private(
            self.cs,
            message,
            &mut past.secret_tree,
            &past.sender_data_secret,
            &past.context,
            &TreeKeys(&past.tree),
        )?;
        let FramedContentBody::Application(data) = unprotected.content.content.body else {
            return Err(GroupError::UnexpectedMessage(
                MessageRule::PastEpochHandshake,
            ));
        };
        Ok(ProcessedMessage::ApplicationMessage {
            sender: unprotected.leaf_index,
            epoch: message.epoch,
            data,
            authenticated_data: unprotected.content.content.authenticated_data,
        })
    }

    /// `confirmed_transcript_hash`: a commit's, if already computed from
    /// the current interim transcript hash (PublicMessage).
    fn process_content(
        &mut self,
        content: AuthenticatedContent,
        secret_tree: Option<SecretTree>,
        now: UnixTime,
    ) -> Result<ProcessedMessage, GroupError> {
        self.check_sender_credential(&content)?;
        let event = match content.content.body {
            FramedContentBody::Application(data) => {
                let Sender::Member(sender) = content.content.sender else {
                    return Err(GroupError::UnexpectedMessage(
                        MessageRule::ApplicationFromNonMember,
                    ));
                };
                ProcessedMessage::ApplicationMessage {
                    sender,
                    epoch: content.content.epoch,
                    data,
                    authenticated_data: content.content.authenticated_data,
                }
            }
            FramedContentBody::Proposal(ref proposal) => {
                if content.content.sender == Sender::Member(self.state.own_leaf()) {
                    return Err(GroupError::UnexpectedMessage(
                        MessageRule::OwnProposalNotSent,
                    ));
                }
                if self.proposals.len() >= self.config.max_pending_proposals {
                    return Err(GroupError::InvalidProposal(ProposalRule::TooManyPending));
                }
                self.check_proposal(&content.content.sender, proposal, now)?;
                let cached = CachedProposal::from_content(self.cs, &content)?;
                if self
                    .proposals
                    .iter()
                    .any(|p| p.reference == cached.reference)
                {
                    return Err(GroupError::InvalidProposal(ProposalRule::ReceivedTwice));
                }
                let event = ProcessedMessage::Proposal {
                    sender: cached.sender,
                    proposal: cached.proposal.clone(),
                    reference: cached.reference.clone(),
                };
                self.proposals.push(cached);
                event
            }
            FramedContentBody::Commit(_) => {
                let staged = self.stage_commit(&content, None, now)?;
                ProcessedMessage::StagedCommit(staged)
            }
        };
        if let Some(st) = secret_tree {
            self.state.secret_tree = st;
        }
        Ok(event)
    }

    /// [`sender::check_sender_credential`], except for this member's own
    /// messages.
    fn check_sender_credential(&self, content: &AuthenticatedContent) -> Result<(), GroupError> {
        if content.content.sender == Sender::Member(self.state.own_leaf()) {
            return Ok(());
        }
        sender::check_sender_credential(&self.state.tree, self.validator.as_ref(), &content.content)
    }

    /// Checks a received proposal on its own (RFC 9420 §12.1).
    fn check_proposal(
        &self,
        sender: &Sender,
        proposal: &Proposal,
        now: UnixTime,
    ) -> Result<(), GroupError> {
        let v = self.validation_context(now);
        proposals::check_proposal(&v, &self.state.tree, sender, proposal)
    }

    /// Moves to `next`: retains the current epoch for late application
    /// messages (bounded), destroys the replaced leaf key and unused own
    /// update keys in custody (§9.2), clears the proposal cache.
    fn install_epoch(&mut self, next: EpochState, used_update: Option<&KeyRef>) {
        let EpochState {
            context,
            tree,
            private,
            mut secrets,
            secret_tree,
            ..
        } = std::mem::replace(&mut self.state, next);
        if self.config.max_past_epochs > 0 {
            self.past.push_back(PastEpoch {
                context,
                secret_tree,
                sender_data_secret: std::mem::take(&mut secrets.sender_data_secret),
                tree,
            });
            while self.past.len() > self.config.max_past_epochs {
                self.past.pop_front();
            }
        }
        // The other secrets of the old epoch drop (and zeroize) here.
        drop(secrets);
        let custody = self.signer.custody.clone();
        if let Err(e) = private.retire(&self.state.private, custody.as_ref()) {
            tracing::warn!(error = %e, "could not destroy the replaced leaf key");
        }
        for u in self.own_updates.drain(..) {
            if Some(&u.leaf_key) != used_update
                && let Err(e) = custody.destroy(&u.leaf_key)
            {
                tracing::warn!(error = %e, "could not destroy an unused update key");
            }
        }
        self.proposals.clear();
        // Own messages of epochs no longer retained cannot come back as
        // anything but stale: forget them (the commit that ended the
        // previous epoch is always kept).
        let current = self.state.context.epoch;
        let keep = self.config.max_past_epochs.max(1) as u64;
        self.sent
            .retain(|s| s.epoch.saturating_add(keep) >= current);
        self.record_resumption_psk();
        tracing::debug!(
            epoch = self.state.context.epoch,
            members = self.state.tree.member_count(),
            "moved to a new epoch"
        );
    }
}
