//! A passive observer of a group's public state (RFC 9420 §6.2, RFC 9750
//! §5.2 "Invalid Commits"): what a Delivery Service can check of a group
//! whose handshakes are PublicMessages, without any of its secrets.
//!
//! A [`PublicGroup`] is built from a GroupInfo and the ratchet tree (the
//! tree is validated as a joiner validates it, §12.4.3.1) and follows the
//! group by processing its PublicMessage proposals and commits with the
//! engine's own rules:
//!
//! - the content signature with the sender's key (§6.1), the sender and
//!   content-type rules, the presence of a confirmation tag on commits and
//!   of a membership tag on members' messages;
//! - that a member sending a proposal or a path-less commit still has a
//!   valid credential (as members check it: `GroupError::SenderCredential`);
//! - each proposal on its own (§12.1) and a commit's proposal list
//!   (§12.2, §12.4.3.2 for external commits), applied to the tree in the
//!   order of §12.3;
//! - the UpdatePath: its LeafNode (§7.3), credential (through the
//!   [`CredentialValidator`]) and succession, the number of nodes and
//!   ciphertexts, the public keys, the parent hashes (§7.9);
//! - the new tree hash, the confirmed and interim transcript hashes and the
//!   next GroupContext (§8.2).
//!
//! What it cannot check, by construction: the membership tag's value
//! (it needs the epoch's `membership_key`), the confirmation tag's value
//! (`confirmation_key`), the UpdatePath's ciphertexts (that they decrypt
//! to consistent path secrets), PSK values (it checks PSK ids only), and
//! application messages (PrivateMessages). A commit that passes here can
//! still fail at the members for one of those reasons — only a member can
//! tell; what passes here cannot fail for any reason a member checks in
//! public.

use std::sync::Arc;

use hsmls_crypto::CipherSuiteProvider;

use super::proposals::{
    CachedProposal, ValidationContext, check_proposal, resolve, suite_provider, validate_and_apply,
};
use super::{CommitRule, GroupError, Member, MessageRule, ProposalRule, PskStore, WelcomeRule};
use crate::codec::{
    self, AuthenticatedContent, Decode, Encode, FramedContentBody, GroupContext, GroupInfo,
    KeyPackageRef, Mac, MlsMessage, MlsMessageBody, Proposal, ProposalOrRef, ProposalRef, Sender,
    find_extension, vl::split_vl,
};
use crate::credential::CredentialValidator;
use crate::message_protection::{ConfirmedHash, unprotect_received_public};
use crate::transcript::{
    ConfirmedTranscriptHashInput, InterimTranscriptHashInput, TranscriptHashes,
    confirmed_transcript_hash, interim_transcript_hash,
};
use crate::tree::{GroupParams, RatchetTree, UnverifiedTree, merge_update_path};
use crate::tree_math::LeafIndex;

/// The magic of [`PublicGroup::to_bytes`].
const MAGIC: &[u8; 4] = b"HPG\x01";

/// The most proposals an observer caches in one epoch.
pub const MAX_OBSERVED_PROPOSALS: usize = 256;

/// A member a commit added.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AddedMember {
    /// The member.
    pub member: Member,
    /// The reference of the KeyPackage it was added with (the Welcome
    /// names it); `None` for the joiner of an external commit.
    pub key_package_ref: Option<KeyPackageRef>,
}

/// What an observed commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ObservedCommit {
    /// The committer.
    pub sender: Sender,
    /// Members added (by Add proposals, or the joiner of an external
    /// commit).
    pub added: Vec<AddedMember>,
    /// Members removed, as they were.
    pub removed: Vec<Member>,
    /// Whether it is an external commit (§12.4.3.2).
    pub external: bool,
    /// The epoch it moved to.
    pub epoch: u64,
}

/// An observed commit, validated, and the epoch it moves to.
struct StagedObservedCommit {
    observed: ObservedCommit,
    context: GroupContext,
    tree: RatchetTree,
    interim_transcript_hash: Vec<u8>,
    confirmation_tag: codec::Mac,
}

/// What [`PublicGroup::process`] made of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ObservedMessage {
    /// A proposal, cached for the commit that may reference it.
    Proposal {
        /// Its reference.
        reference: ProposalRef,
        /// Who proposed it.
        sender: Sender,
    },
    /// A commit: the observer is now in the next epoch.
    Commit(ObservedCommit),
}

/// The public state of a group, followed without secrets (see the module
/// documentation for what it checks and what it cannot).
#[derive(Clone)]
pub struct PublicGroup {
    cs: &'static dyn CipherSuiteProvider,
    context: GroupContext,
    tree: RatchetTree,
    interim_transcript_hash: Vec<u8>,
    confirmation_tag: Mac,
    proposals: Vec<CachedProposal>,
    validator: Arc<dyn CredentialValidator>,
}

impl std::fmt::Debug for PublicGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicGroup")
            .field("epoch", &self.context.epoch)
            .field("members", &self.tree.member_count())
            .field("proposals", &self.proposals.len())
            .finish_non_exhaustive()
    }
}

fn group_params(context: &GroupContext) -> GroupParams<'_> {
    GroupParams {
        group_id: &context.group_id,
        cipher_suite: context.cipher_suite,
        version: context.version,
        required_capabilities: None,
        now: None,
        max_lifetime: None,
    }
}

fn malformed(what: &str) -> GroupError {
    GroupError::Malformed(codec::CodecError::Malformed(what.into()))
}

impl PublicGroup {
    /// Starts observing from a GroupInfo (`MLSMessage` or bare) and the
    /// ratchet tree (from the GroupInfo's `ratchet_tree` extension, or
    /// `ratchet_tree`). The tree is validated as a joiner validates it
    /// (§12.4.3.1: tree hash, parent hashes, every leaf and its
    /// credential), and the GroupInfo's signature with its signer's key.
    pub fn from_group_info(
        group_info: &[u8],
        ratchet_tree: Option<codec::RatchetTree>,
        validator: Arc<dyn CredentialValidator>,
    ) -> Result<Self, GroupError> {
        let gi = match MlsMessage::decode(group_info) {
            Ok(MlsMessage {
                body: MlsMessageBody::GroupInfo(gi),
            }) => gi,
            Ok(_) => return Err(GroupError::UnexpectedMessage(MessageRule::NotAGroupInfo)),
            Err(_) => GroupInfo::decode(group_info).map_err(GroupError::Malformed)?,
        };
        let cs = suite_provider(gi.group_context.cipher_suite)?;
        let wire = match find_extension::<codec::RatchetTree>(&gi.extensions) {
            Some(t) => t.map_err(GroupError::Malformed)?,
            None => ratchet_tree.ok_or(GroupError::MissingRatchetTree)?,
        };
        let tree = UnverifiedTree::new(cs, wire)?.verify(
            &gi.group_context.tree_hash,
            &group_params(&gi.group_context),
        )?;
        for (_, leaf) in tree.leaves() {
            validator.validate_in_suite(
                gi.group_context.cipher_suite,
                &leaf.credential,
                &leaf.signature_key,
            )?;
        }
        let signer = tree
            .leaf(gi.signer)
            .ok_or(GroupError::InvalidWelcome(WelcomeRule::SignerNotMember))?;
        super::welcome::verify_group_info(cs, &gi, signer.signature_key.as_slice())?;
        let interim = TranscriptHashes::from_group_info(
            cs,
            &gi.group_context.confirmed_transcript_hash,
            &gi.confirmation_tag,
        )?
        .interim;
        Ok(PublicGroup {
            cs,
            context: gi.group_context,
            tree,
            interim_transcript_hash: interim,
            confirmation_tag: gi.confirmation_tag,
            proposals: Vec::new(),
            validator,
        })
    }

    /// The current GroupContext.
    pub fn group_context(&self) -> &GroupContext {
        &self.context
    }

    /// The group id.
    pub fn group_id(&self) -> &[u8] {
        &self.context.group_id
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.context.epoch
    }

    /// The tree hash of the current epoch (§7.8).
    pub fn tree_hash(&self) -> &[u8] {
        &self.context.tree_hash
    }

    /// The confirmation tag of the commit that started this epoch (its
    /// MAC value, §6.1; the observer cannot check it, only carry it into
    /// the next interim transcript hash, §8.2).
    pub fn confirmation_tag(&self) -> &[u8] {
        &self.confirmation_tag.0
    }

    /// The ratchet tree (§12.4.3.3), to serve to external joiners.
    pub fn ratchet_tree(&self) -> codec::RatchetTree {
        self.tree.to_ratchet_tree()
    }

    /// The members, in leaf order.
    pub fn members(&self) -> Vec<Member> {
        self.tree
            .leaves()
            .map(|(i, l)| Member::from_leaf(i, l))
            .collect()
    }

    /// The member at `index`.
    pub fn member(&self, index: LeafIndex) -> Option<Member> {
        self.tree.leaf(index).map(|l| Member::from_leaf(index, l))
    }

    /// The proposals cached in this epoch.
    pub fn pending_proposals(&self) -> &[CachedProposal] {
        &self.proposals
    }

    fn validation_context<'a>(&'a self, now: u64, psks: &'a PskStore) -> ValidationContext<'a> {
        ValidationContext {
            cs: self.cs,
            context: &self.context,
            validator: self.validator.as_ref(),
            psks,
            now,
            required_capabilities: find_extension::<codec::RequiredCapabilities>(
                &self.context.extensions,
            )
            .and_then(Result::ok),
            psk_values_known: false,
        }
    }

    /// Checks a GroupInfo against the observed state: same GroupContext
    /// and confirmation tag, signed by the member it names.
    pub fn check_group_info(&self, group_info: &[u8]) -> Result<(), GroupError> {
        let gi = match MlsMessage::decode(group_info) {
            Ok(MlsMessage {
                body: MlsMessageBody::GroupInfo(gi),
            }) => gi,
            Ok(_) => return Err(GroupError::UnexpectedMessage(MessageRule::NotAGroupInfo)),
            Err(e) => return Err(GroupError::Malformed(e)),
        };
        if gi.group_context != self.context || gi.confirmation_tag != self.confirmation_tag {
            return Err(GroupError::InvalidWelcome(WelcomeRule::GroupInfoMismatch));
        }
        let signer = self
            .tree
            .leaf(gi.signer)
            .ok_or(GroupError::InvalidWelcome(WelcomeRule::SignerNotMember))?;
        super::welcome::verify_group_info(self.cs, &gi, signer.signature_key.as_slice())
    }

    /// Processes a PublicMessage proposal or commit (`MLSMessage` bytes)
    /// at time `now`. A proposal is cached; a commit moves the observer
    /// to the next epoch. On error the state is unchanged.
    pub fn process(&mut self, bytes: &[u8], now: u64) -> Result<ObservedMessage, GroupError> {
        let message = MlsMessage::decode(bytes).map_err(GroupError::Malformed)?;
        let MlsMessageBody::PublicMessage(m) = message.body else {
            return Err(GroupError::UnexpectedMessage(MessageRule::NotPublicMessage));
        };
        if m.content.group_id != self.context.group_id {
            return Err(GroupError::WrongGroupId);
        }
        if m.content.epoch != self.context.epoch {
            return Err(GroupError::WrongEpoch {
                message: m.content.epoch,
                current: self.context.epoch,
            });
        }
        let signature_key =
            super::sender::sender_signature_key(&self.tree, &self.context.extensions, &m.content)?;
        // Every public check of §6.2 but the membership tag's value (the
        // observer has no membership key), hashed from the received
        // bytes; a commit is staged (its transcript hash taken when
        // needed), then installed.
        let checked = unprotect_received_public(
            self.cs,
            m,
            bytes,
            &self.context,
            None,
            signature_key.as_slice(),
            &self.interim_transcript_hash,
            |content, confirmed| {
                super::sender::check_sender_credential(
                    &self.tree,
                    self.validator.as_ref(),
                    &content.content,
                )?;
                match &content.content.body {
                    FramedContentBody::Commit(_) => {
                        Ok::<_, GroupError>(Err(self.stage_commit(&content, confirmed, now)?))
                    }
                    _ => Ok(Ok(content)),
                }
            },
        )?;
        let content = match checked {
            Ok(content) => content,
            Err(staged) => return Ok(ObservedMessage::Commit(self.install(staged))),
        };
        match &content.content.body {
            FramedContentBody::Proposal(proposal) => {
                if self.proposals.len() >= MAX_OBSERVED_PROPOSALS {
                    return Err(GroupError::InvalidProposal(ProposalRule::TooManyPending));
                }
                let psks = PskStore::default();
                let v = self.validation_context(now, &psks);
                check_proposal(&v, &self.tree, &content.content.sender, proposal)?;
                let cached = CachedProposal::from_content(self.cs, &content)?;
                if self
                    .proposals
                    .iter()
                    .any(|p| p.reference == cached.reference)
                {
                    return Err(GroupError::InvalidProposal(ProposalRule::ReceivedTwice));
                }
                let event = ObservedMessage::Proposal {
                    reference: cached.reference.clone(),
                    sender: cached.sender,
                };
                self.proposals.push(cached);
                Ok(event)
            }
            _ => Err(GroupError::UnexpectedMessage(
                MessageRule::SenderCannotSendContent,
            )),
        }
    }

    /// Validates a commit and computes the observer's next epoch without
    /// changing it.
    fn stage_commit(
        &self,
        content: &AuthenticatedContent,
        confirmed: ConfirmedHash<'_>,
        now: u64,
    ) -> Result<StagedObservedCommit, GroupError> {
        let FramedContentBody::Commit(commit) = &content.content.body else {
            return Err(GroupError::UnexpectedMessage(MessageRule::NotACommit));
        };
        let tag = content
            .auth
            .confirmation_tag
            .as_ref()
            .ok_or(GroupError::InvalidCommit(
                CommitRule::MissingConfirmationTag,
            ))?;
        let committer = content.content.sender;
        match committer {
            Sender::Member(i) => {
                if self.tree.leaf(i).is_none() {
                    return Err(GroupError::NotAMember(i));
                }
            }
            Sender::NewMemberCommit => {}
            _ => return Err(GroupError::InvalidCommit(CommitRule::SenderNotMember)),
        }
        let by_reference = commit
            .proposals
            .iter()
            .any(|p| matches!(p, ProposalOrRef::Reference(_)));
        let resolved = resolve(&commit.proposals, &self.proposals, committer)?;
        let psks = PskStore::default();
        let v = self.validation_context(now, &psks);
        let mut tree = self.tree.clone();
        let effects = validate_and_apply(&v, &mut tree, committer, &resolved, by_reference)?;
        if effects.path_required && commit.path.is_none() {
            return Err(GroupError::InvalidCommit(CommitRule::PathRequired));
        }
        let mut context = self.context.clone();
        context.epoch = context
            .epoch
            .checked_add(1)
            .ok_or(GroupError::InvalidCommit(CommitRule::EpochOverflow))?;
        if let Some(ext) = &effects.group_context_extensions {
            context.extensions = ext.clone();
        }
        let mut added = Vec::with_capacity(effects.adds.len() + 1);
        for (i, kp) in &effects.adds {
            let kp = crate::key_package::KeyPackage::from_trusted(self.cs, kp.clone())?;
            added.push(AddedMember {
                member: Member::from_leaf(*i, kp.leaf_node()),
                key_package_ref: Some(kp.reference().clone()),
            });
        }
        let added_leaves: Vec<LeafIndex> = effects.adds.iter().map(|(i, _)| *i).collect();
        let external = committer == Sender::NewMemberCommit;
        match &commit.path {
            Some(path) => {
                super::sender::check_path_credential(
                    &self.tree,
                    self.validator.as_ref(),
                    committer,
                    &path.leaf_node,
                    &effects.removes,
                )?;
                let sender = match committer {
                    Sender::Member(i) => i,
                    _ => {
                        // The joiner's leaf enters at the leftmost free
                        // position; the UpdatePath then replaces it. The
                        // placeholder's encryption key (the members use
                        // the external_pub, which the observer does not
                        // know) only has to differ from every key of the
                        // tree: it never reaches a hash.
                        let mut placeholder = path.leaf_node.clone();
                        placeholder.encryption_key = codec::HpkePublicKey(Vec::new());
                        tree.add_leaf(placeholder)?
                    }
                };
                merge_update_path(&mut tree, sender, path, &v.group_params(), &added_leaves)?;
                if external {
                    added.push(AddedMember {
                        member: Member::from_leaf(sender, &path.leaf_node),
                        key_package_ref: None,
                    });
                }
            }
            None => {
                if external {
                    return Err(GroupError::InvalidCommit(
                        CommitRule::ExternalCommitWithoutPath,
                    ));
                }
            }
        }
        context.tree_hash = tree.tree_hash()?.to_vec();
        let confirmed = match confirmed.get() {
            Some(confirmed) => confirmed,
            None => confirmed_transcript_hash(
                self.cs,
                &self.interim_transcript_hash,
                &ConfirmedTranscriptHashInput::new(content)?,
            )?,
        };
        let interim = interim_transcript_hash(
            self.cs,
            &confirmed,
            &InterimTranscriptHashInput {
                confirmation_tag: tag,
            },
        )?;
        context.confirmed_transcript_hash = confirmed.to_vec();
        let removed = effects
            .removes
            .iter()
            .map(|(i, l)| Member::from_leaf(*i, l))
            .collect();
        Ok(StagedObservedCommit {
            observed: ObservedCommit {
                sender: committer,
                added,
                removed,
                external,
                epoch: context.epoch,
            },
            context,
            tree,
            interim_transcript_hash: interim.to_vec(),
            confirmation_tag: tag.clone(),
        })
    }

    /// Moves to a staged commit's epoch (nothing can fail).
    fn install(&mut self, staged: StagedObservedCommit) -> ObservedCommit {
        self.context = staged.context;
        self.tree = staged.tree;
        self.interim_transcript_hash = staged.interim_transcript_hash;
        self.confirmation_tag = staged.confirmation_tag;
        self.proposals.clear();
        staged.observed
    }

    /// The observer's state as bytes, to store (holds no secret: public
    /// group state only).
    pub fn to_bytes(&self) -> Result<Vec<u8>, GroupError> {
        let mut out = MAGIC.to_vec();
        let mut vl = |bytes: &[u8]| -> Result<(), GroupError> {
            crate::codec::vl::write_vl_header(bytes.len(), &mut out)
                .map_err(crate::codec::CodecError::from)?;
            out.extend_from_slice(bytes);
            Ok(())
        };
        vl(&self.context.encode()?)?;
        vl(&self.tree.to_ratchet_tree().encode()?)?;
        vl(&self.interim_transcript_hash)?;
        vl(&self.confirmation_tag.encode()?)?;
        vl(&(self.proposals.len() as u32).to_be_bytes())?;
        for p in &self.proposals {
            vl(&p.reference.0)?;
            vl(&p.sender.encode()?)?;
            vl(&p.proposal.encode()?)?;
        }
        Ok(out)
    }

    /// An observer from [`PublicGroup::to_bytes`]. The bytes are trusted
    /// (the observer's own store): the tree is not validated again, only
    /// checked against the GroupContext's tree hash.
    pub fn from_bytes(
        bytes: &[u8],
        validator: Arc<dyn CredentialValidator>,
    ) -> Result<Self, GroupError> {
        let rest = bytes
            .strip_prefix(&MAGIC[..])
            .ok_or_else(|| malformed("not a PublicGroup state"))?;
        let mut rest = rest;
        let mut next = || -> Result<&[u8], GroupError> {
            let (v, r) = split_vl(rest).map_err(|e| GroupError::Malformed(e.into()))?;
            rest = r;
            Ok(v)
        };
        let context = GroupContext::decode(next()?).map_err(GroupError::Malformed)?;
        let wire = codec::RatchetTree::decode(next()?).map_err(GroupError::Malformed)?;
        let interim = next()?.to_vec();
        let tag = Mac::decode(next()?).map_err(GroupError::Malformed)?;
        let n: [u8; 4] = next()?
            .try_into()
            .map_err(|_| malformed("proposal count"))?;
        let n = u32::from_be_bytes(n) as usize;
        if n > MAX_OBSERVED_PROPOSALS {
            return Err(malformed("too many proposals"));
        }
        let mut proposals = Vec::with_capacity(n);
        for _ in 0..n {
            let reference = ProposalRef(next()?.to_vec());
            let sender = Sender::decode(next()?).map_err(GroupError::Malformed)?;
            let proposal = Proposal::decode(next()?).map_err(GroupError::Malformed)?;
            proposals.push(CachedProposal {
                reference,
                proposal,
                sender,
            });
        }
        if !rest.is_empty() {
            return Err(malformed("trailing bytes"));
        }
        let cs = suite_provider(context.cipher_suite)?;
        let mut tree = UnverifiedTree::new(cs, wire)?.trusted_without_validation();
        if tree.tree_hash()?.as_bytes() != context.tree_hash.as_slice() {
            return Err(GroupError::Tree(crate::tree::TreeError::TreeHashMismatch));
        }
        Ok(PublicGroup {
            cs,
            context,
            tree,
            interim_transcript_hash: interim,
            confirmation_tag: tag,
            proposals,
            validator,
        })
    }
}
