//! Commits (RFC 9420 §12.4): creation by a member, processing (staging)
//! by the others, and merging.

use std::collections::HashMap;
use std::sync::Arc;

use hsmls_crypto::{CipherSuiteProvider, Digest, Secret};
use hsmls_custody::KeyRef;

use super::proposals::{ProposalEffects, ResolvedProposal, resolve, validate_and_apply};
use super::welcome::{WELCOME_LABEL, encrypt_group_info, encrypt_group_secrets};
use super::{
    CommitOptions, CommitRule, EpochState, Group, GroupConfig, GroupError, Member, MessageRule,
    UnixTime,
};
use crate::codec::{
    Add, AuthenticatedContent, Commit, ContentType, Encode, Extension, FramedContentBody,
    GroupContext, GroupSecrets, MlsMessage, MlsMessageBody, PathSecret, PreSharedKey,
    PreSharedKeyId, Proposal, ProposalOrRef, Remove, SecretBytes, Sender, Welcome,
};
use crate::credential::Signer;
use crate::key_package::KeyPackage;
use crate::key_schedule::{EpochSecrets, KeySchedule};
use crate::message_protection::{ConfirmedHash, sign_content};
use crate::psk::{PskInput, psk_secret};
use crate::secret_tree::SecretTree;
use crate::transcript::{
    ConfirmedTranscriptHashInput, InterimTranscriptHashInput, confirmation_tag,
    confirmed_transcript_hash, interim_transcript_hash, verify_confirmation_tag,
};
use crate::tree::{LeafNodeParams, decrypt_update_path, merge_update_path, prepare_update_path};
use crate::tree_math::LeafIndex;

/// From this many new members on, a Welcome's GroupSecrets are sealed on
/// several threads.
const PARALLEL_WELCOME: usize = 32;

/// Builds the secret tree of an epoch, consuming `encryption_secret`
/// (RFC 9420 §9, §9.2).
pub(crate) fn make_secret_tree(
    cs: &'static dyn CipherSuiteProvider,
    config: &GroupConfig,
    secrets: &mut EpochSecrets,
    n_leaves: u32,
) -> Result<SecretTree, GroupError> {
    let encryption_secret = std::mem::take(&mut secrets.encryption_secret);
    Ok(SecretTree::new(
        cs,
        encryption_secret,
        n_leaves,
        config.secret_tree,
    )?)
}

/// `psk_secret` of a list of PSK ids, with values from `store` (RFC 9420
/// §8.4); `None` when there are none.
pub(crate) fn compute_psk_secret(
    cs: &dyn CipherSuiteProvider,
    store: &super::PskStore,
    ids: &[PreSharedKeyId],
) -> Result<Option<Secret>, GroupError> {
    if ids.is_empty() {
        return Ok(None);
    }
    let mut inputs = Vec::with_capacity(ids.len());
    for id in ids {
        let psk = store.get(id).ok_or(GroupError::UnknownPsk)?;
        inputs.push(PskInput { id, psk });
    }
    Ok(Some(psk_secret(cs, &inputs)?))
}

/// The new epoch's state from the key schedule output (RFC 9420 §8):
/// confirmation tag check or creation is the caller's.
pub(crate) struct NextEpoch {
    pub(crate) schedule: KeySchedule,
    pub(crate) context: GroupContext,
}

/// Runs the key schedule for `context` (whose confirmed transcript hash is
/// already set).
pub(crate) fn run_key_schedule(
    cs: &dyn CipherSuiteProvider,
    init_secret: &Secret,
    commit_secret: Option<&Secret>,
    psk_secret: Option<&Secret>,
    context: GroupContext,
) -> Result<NextEpoch, GroupError> {
    let schedule = KeySchedule::run(
        cs,
        init_secret,
        commit_secret,
        psk_secret,
        &context.encode()?,
    )?;
    Ok(NextEpoch { schedule, context })
}

/// A commit of this member awaiting [`Group::merge_pending_commit`].
pub(crate) struct PendingCommit {
    pub(crate) state: EpochState,
    pub(crate) reinit: Option<crate::codec::ReInit>,
    pub(crate) from_epoch: u64,
    /// The digest of the commit's `MLSMessage` bytes, to recognise it
    /// when the Delivery Service sends it back.
    pub(crate) digest: Digest,
    /// What [`Group::process_incoming`] reports when it comes back.
    pub(crate) own: OwnCommit,
    /// What the application gets back if another commit wins the epoch.
    pub(crate) lost: LostCommit,
    /// The signer the group uses once this commit is merged, if the
    /// commit replaced this member's credential
    /// ([`CommitOptions::new_signer`]).
    pub(crate) new_signer: Option<Signer>,
}

/// This member's pending commit, sent back by the Delivery Service (which
/// sends a group's messages to every member, the sender included, RFC
/// 9750 §5.2): the Delivery Service accepted it, and
/// [`Group::process_incoming`] has merged it — the group is in `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OwnCommit {
    /// The epoch the merge moved to.
    pub epoch: u64,
    /// Members added, with their leaf indices.
    pub adds: Vec<Member>,
    /// Members removed (as they were).
    pub removes: Vec<Member>,
}

/// This member's pending commit, lost: another member's commit for the
/// same epoch won the Delivery Service's ordering (RFC 9420 §14: one
/// commit per epoch). Merging the winner (see
/// [`StagedCommit::lost_commit`]) discards the pending commit and destroys
/// its fresh keys in custody. What the lost commit was to do is here, so
/// that the application can commit it again in the new epoch
/// ([`LostCommit::commit_options`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LostCommit {
    /// The epoch the commit was for (the one the winning commit ended).
    pub epoch: u64,
    /// The proposals the commit carried by value, in order: the
    /// KeyPackages it added, the members it removed (by their leaf index
    /// of `epoch`), PSKs, GroupContextExtensions, ReInit. The proposals it
    /// carried by reference were other members' and are void with the
    /// epoch (RFC 9420 §12.1).
    pub proposals: Vec<Proposal>,
    /// The members it would have added.
    pub adds: Vec<Member>,
    /// The members it would have removed (as they were in `epoch`).
    pub removes: Vec<Member>,
    /// Whether the application asked for an UpdatePath
    /// ([`CommitOptions::force_path`]).
    pub force_path: bool,
    /// Whether the application asked for a GroupInfo
    /// ([`CommitOptions::group_info`]).
    pub group_info: bool,
    /// The commit's `authenticated_data`.
    pub authenticated_data: Vec<u8>,
    /// The signer the lost commit was to replace this member's credential
    /// with ([`CommitOptions::new_signer`]).
    pub new_signer: Option<Signer>,
}

/// Equal when every field is; signers are compared by signature key and
/// credential (their custody handles are not comparable values).
impl PartialEq for LostCommit {
    fn eq(&self, other: &Self) -> bool {
        let signer = |s: &Option<Signer>| {
            s.as_ref()
                .map(|s| (s.signature_key.clone(), s.credential.clone()))
        };
        self.epoch == other.epoch
            && self.proposals == other.proposals
            && self.adds == other.adds
            && self.removes == other.removes
            && self.force_path == other.force_path
            && self.group_info == other.group_info
            && self.authenticated_data == other.authenticated_data
            && signer(&self.new_signer) == signer(&other.new_signer)
    }
}

impl Eq for LostCommit {}

impl LostCommit {
    /// Options that make the lost commit's changes again on `group`'s
    /// current epoch, with the pending proposals of that epoch: the
    /// KeyPackages whose client is not a member yet (the winner may have
    /// added it), the removed members that are still members (found by
    /// signature key, at their current leaf), the PSKs with fresh nonces,
    /// the GroupContextExtensions and the ReInit. Commit them with
    /// [`Group::commit`]; the new commit is validated like any other.
    pub fn commit_options(&self, group: &Group) -> CommitOptions {
        let members = group.members();
        let mut options = CommitOptions::new();
        options.force_path = self.force_path;
        options.group_info = self.group_info;
        options.authenticated_data = self.authenticated_data.clone();
        options.new_signer = self.new_signer.clone();
        for p in &self.proposals {
            match p {
                Proposal::Add(add) => {
                    let key = &add.key_package.leaf_node.signature_key;
                    // The lost commit was given these KeyPackages validated
                    // (CommitOptions::add_key_packages).
                    if !members.iter().any(|m| &m.signature_key == key)
                        && let Ok(kp) = KeyPackage::from_trusted(group.cs, add.key_package.clone())
                    {
                        options.add_key_packages.push(kp);
                    }
                }
                Proposal::Remove(remove) => {
                    let Some(was) = self.removes.iter().find(|m| m.index == remove.removed) else {
                        continue;
                    };
                    if let Some(now) = members
                        .iter()
                        .find(|m| m.signature_key == was.signature_key)
                    {
                        options.remove_leaves.push(now.index);
                    }
                }
                Proposal::PreSharedKey(psk) => {
                    let mut id = psk.psk.clone();
                    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id.psk_nonce);
                    options.psks.push(id);
                }
                Proposal::GroupContextExtensions(gce) => {
                    options.group_context_extensions = Some(gce.extensions.clone());
                }
                Proposal::ReInit(reinit) => {
                    options.reinit = Some(reinit.clone());
                    options.include_pending = false;
                }
                Proposal::Update(_) | Proposal::SelfRemove(_) | Proposal::ExternalInit(_) => {}
            }
        }
        options
    }
}

/// What [`Group::commit`] produced: the commit to send, and the Welcome
/// and GroupInfo that go with it. The group stays in its epoch until
/// [`Group::merge_pending_commit`] (once the Delivery Service accepted
/// the commit) or the commit comes back
/// ([`ProcessedMessage::OwnCommit`](crate::ProcessedMessage::OwnCommit)).
#[must_use = "a commit changes nothing until it is sent and merged"]
#[non_exhaustive]
pub struct CommitOutput {
    /// The Commit as an `MLSMessage` (PrivateMessage or PublicMessage per
    /// the group's policy): send it to the group.
    pub commit: Vec<u8>,
    /// The Welcome (an `MLSMessage`) for the members it adds, if any.
    pub welcome: Option<Vec<u8>>,
    /// The GroupInfo of the new epoch (an `MLSMessage`, with
    /// `external_pub`), for publishing to external joiners, if
    /// [`CommitOptions::group_info`] asked for it.
    pub group_info: Option<Vec<u8>>,
    /// The ratchet tree of the new epoch, for joiners that get it out of
    /// band (only when the commit adds members).
    pub ratchet_tree: Option<crate::codec::RatchetTree>,
    /// Members added (with their new leaf indices), removed and updated.
    pub adds: Vec<Member>,
    /// Members removed.
    pub removes: Vec<Member>,
}

impl std::fmt::Debug for CommitOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitOutput")
            .field("commit_len", &self.commit.len())
            .field("welcome", &self.welcome.as_ref().map(Vec::len))
            .field("adds", &self.adds)
            .field("removes", &self.removes)
            .finish_non_exhaustive()
    }
}

/// A validated commit from another member, ready to merge with
/// [`Group::merge_staged_commit`]. Its fields show what the commit does.
#[must_use = "a staged commit changes nothing until merged, and may carry a lost commit"]
#[non_exhaustive]
pub struct StagedCommit {
    /// Who committed.
    pub sender: Sender,
    /// Added members with their leaf indices.
    pub adds: Vec<Member>,
    /// Removed members (as they were).
    pub removes: Vec<Member>,
    /// Members whose leaf an Update proposal replaced (new leaf).
    pub updates: Vec<Member>,
    /// PSKs injected.
    pub psks: Vec<PreSharedKeyId>,
    /// New GroupContext extensions, if changed.
    pub group_context_extensions: Option<Vec<Extension>>,
    /// Whether the commit carried an UpdatePath.
    pub has_path: bool,
    /// Whether this commit removes this member from the group.
    pub self_removed: bool,
    /// The epoch the merge moves to.
    pub new_epoch: u64,
    pub(crate) from_epoch: u64,
    pub(crate) group_id: Vec<u8>,
    pub(crate) state: Option<Box<EpochState>>,
    pub(crate) used_update: Option<KeyRef>,
    /// The committed ReInit, if any: merging closes the group (§11.2).
    pub reinit: Option<crate::codec::ReInit>,
    /// This member's pending commit for the same epoch, if it has one:
    /// this commit won, and merging it discards the pending one (and
    /// destroys its fresh keys). What the lost commit was to do, for
    /// committing it again in the new epoch.
    pub lost_commit: Option<LostCommit>,
}

impl std::fmt::Debug for StagedCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedCommit")
            .field("sender", &self.sender)
            .field("adds", &self.adds)
            .field("removes", &self.removes)
            .field("updates", &self.updates)
            .field("has_path", &self.has_path)
            .field("self_removed", &self.self_removed)
            .field("new_epoch", &self.new_epoch)
            .field("lost_commit", &self.lost_commit.is_some())
            .finish_non_exhaustive()
    }
}

fn members_of(list: &[(LeafIndex, crate::codec::LeafNode)]) -> Vec<Member> {
    list.iter().map(|(i, l)| Member::from_leaf(*i, l)).collect()
}

fn added_members(effects: &ProposalEffects) -> Vec<Member> {
    effects
        .adds
        .iter()
        .map(|(i, kp)| Member::from_leaf(*i, &kp.leaf_node))
        .collect()
}

impl Group {
    /// Creates a commit (RFC 9420 §12.4.1) of the pending proposals (by
    /// reference) and the proposals of `options` (by value), with an
    /// UpdatePath when required or asked for. The group stays in its epoch
    /// until [`Group::merge_pending_commit`] (call it once the Delivery
    /// Service accepted the commit) or [`Group::discard_pending_commit`].
    pub fn commit(
        &mut self,
        options: CommitOptions,
        now: UnixTime,
    ) -> Result<CommitOutput, GroupError> {
        self.check_active()?;
        if self.pending_commit.is_some() {
            return Err(GroupError::PendingCommit);
        }
        let own = self.state.own_leaf();
        let committer = Sender::Member(own);
        if let Some(new) = &options.new_signer {
            self.check_new_signer(new)?;
        }
        let mut list = Vec::new();
        let mut resolved = Vec::new();
        if options.include_pending {
            for c in &self.proposals {
                // The committer's own Update is replaced by its path, and
                // a Remove of the committer cannot be committed by it.
                let own_update = c.sender == committer && matches!(c.proposal, Proposal::Update(_));
                let removes_self = matches!(&c.proposal, Proposal::Remove(r) if r.removed == own)
                    || (c.sender == committer && matches!(c.proposal, Proposal::SelfRemove(_)));
                if own_update || removes_self {
                    continue;
                }
                list.push(ProposalOrRef::Reference(c.reference.clone()));
                resolved.push(ResolvedProposal {
                    proposal: c.proposal.clone(),
                    sender: c.sender,
                    validated: false,
                });
            }
        }
        let mut by_value = Vec::new();
        if let Some(extensions) = &options.group_context_extensions {
            by_value.push(Proposal::GroupContextExtensions(
                crate::codec::GroupContextExtensions {
                    extensions: extensions.clone(),
                },
            ));
        }
        for r in &options.remove_leaves {
            by_value.push(Proposal::Remove(Remove { removed: *r }));
        }
        for kp in &options.add_key_packages {
            by_value.push(Proposal::Add(Add {
                key_package: kp.as_wire().clone(),
            }));
        }
        for psk in &options.psks {
            by_value.push(Proposal::PreSharedKey(PreSharedKey { psk: psk.clone() }));
        }
        if let Some(reinit) = &options.reinit {
            by_value.push(Proposal::ReInit(reinit.clone()));
        }
        for p in by_value.iter().cloned() {
            resolved.push(ResolvedProposal {
                validated: matches!(p, Proposal::Add(_)),
                proposal: p.clone(),
                sender: committer,
            });
            list.push(ProposalOrRef::Proposal(p));
        }

        let v = self.validation_context(now);
        let mut tree = self.state.tree.clone();
        let effects = validate_and_apply(&v, &mut tree, committer, &resolved, false)?;
        let mut private = self.state.private.clone();
        private.prune(&tree);
        let mut provisional = self.state.context.clone();
        provisional.epoch = provisional
            .epoch
            .checked_add(1)
            .ok_or(GroupError::InvalidCommit(CommitRule::EpochOverflow))?;
        if let Some(ext) = &effects.group_context_extensions {
            provisional.extensions = ext.clone();
        }
        let added: Vec<LeafIndex> = effects.adds.iter().map(|(i, _)| *i).collect();
        let with_path = effects.path_required || options.force_path || options.new_signer.is_some();
        // The path's LeafNode and the new epoch's GroupInfos are signed by
        // the signer the group will have; the commit by the current one.
        let next_signer = options.new_signer.as_ref().unwrap_or(&self.signer);

        let custody = self.signer.custody.clone();
        let mut fresh_key = None;
        let result = (|| {
            let (path, commit_secret, path_secrets) = if with_path {
                let own_leaf = tree.leaf(own).ok_or(GroupError::NotAMember(own))?;
                let mut params = LeafNodeParams::from_leaf(own_leaf);
                params.credential = next_signer.credential.clone();
                let prepared = prepare_update_path(
                    &mut tree,
                    own,
                    &self.state.context.group_id,
                    &params,
                    custody.as_ref(),
                    &next_signer.signature_key,
                )?;
                fresh_key = Some(prepared.leaf_key().clone());
                provisional.tree_hash = tree.tree_hash()?.to_vec();
                let created = prepared.encrypt(&tree, &provisional.encode()?, &added)?;
                let secrets: Vec<(LeafIndex, Option<SecretBytes>)> = added
                    .iter()
                    .map(|j| {
                        (
                            *j,
                            created
                                .path_secret_for(*j)
                                .map(|s| SecretBytes::new(s.as_bytes().to_vec())),
                        )
                    })
                    .collect();
                private = created.private;
                (
                    Some(created.update_path),
                    Some(created.commit_secret),
                    secrets,
                )
            } else {
                provisional.tree_hash = tree.tree_hash()?.to_vec();
                (None, None, Vec::new())
            };

            let content = self.member_content(
                FramedContentBody::Commit(Commit {
                    proposals: list,
                    path,
                }),
                options.authenticated_data.clone(),
            );
            let mut signed = sign_content(
                self.cs,
                self.signer.custody.as_ref(),
                &self.signer.signature_key,
                self.handshake_wire_format(),
                content,
                Some(&self.state.context),
            )?;
            let confirmed = confirmed_transcript_hash(
                self.cs,
                &self.state.interim_transcript_hash,
                &ConfirmedTranscriptHashInput {
                    wire_format: signed.wire_format,
                    content: &signed.content,
                    signature: &signed.auth.signature,
                },
            )?;
            let mut context = provisional.clone();
            context.confirmed_transcript_hash = confirmed.to_vec();
            let psk = compute_psk_secret(self.cs, &self.psks, &effects.psks)?;
            let next = run_key_schedule(
                self.cs,
                &self.state.secrets.init_secret,
                commit_secret.as_ref(),
                psk.as_ref(),
                context,
            )?;
            let tag = confirmation_tag(self.cs, &next.schedule.epoch.confirmation_key, &confirmed);
            signed.auth.confirmation_tag = Some(tag.clone());
            let interim = interim_transcript_hash(
                self.cs,
                &confirmed,
                &InterimTranscriptHashInput {
                    confirmation_tag: &tag,
                },
            )?;
            let KeySchedule {
                joiner_secret,
                welcome_secret,
                epoch: mut secrets,
            } = next.schedule;
            let secret_tree =
                make_secret_tree(self.cs, &self.config, &mut secrets, tree.leaf_count())?;
            let state = EpochState {
                context: next.context,
                tree,
                private,
                secrets,
                secret_tree,
                interim_transcript_hash: interim.to_vec(),
                confirmation_tag: tag,
            };

            let welcome = if effects.adds.is_empty() {
                None
            } else {
                let gi = self.build_group_info_by(
                    &state,
                    self.config.ratchet_tree_in_welcome,
                    false,
                    next_signer,
                )?;
                let encrypted_group_info = encrypt_group_info(self.cs, &welcome_secret, &gi)?;
                // Every new member's EncryptWithLabel has the same context
                // (the encrypted GroupInfo, with the tree: O(N) bytes):
                // hashed once, then the seals run on every core.
                let context = self
                    .cs
                    .prepare_encrypt_context(WELCOME_LABEL, &encrypted_group_info)?;
                let path_secret_of: HashMap<LeafIndex, &SecretBytes> = path_secrets
                    .iter()
                    .filter_map(|(j, s)| s.as_ref().map(|s| (*j, s)))
                    .collect();
                let cs = self.cs;
                let seal = |(i, kp): &(LeafIndex, crate::codec::KeyPackage)| {
                    let gs = GroupSecrets {
                        joiner_secret: SecretBytes::new(
                            joiner_secret.as_secret().as_bytes().to_vec(),
                        ),
                        path_secret: path_secret_of.get(i).map(|s| PathSecret {
                            path_secret: (*s).clone(),
                        }),
                        psks: effects.psks.clone(),
                    };
                    let reference = crate::codec::KeyPackageRef(
                        cs.make_key_package_ref(&kp.encode()?)?.to_vec(),
                    );
                    encrypt_group_secrets(cs, reference, kp.init_key.as_slice(), &context, &gs)
                };
                let secrets_out = crate::parallel::map(&effects.adds, PARALLEL_WELCOME, seal)?
                    .into_iter()
                    .collect::<Result<Vec<_>, GroupError>>()?;
                Some(
                    MlsMessage {
                        body: MlsMessageBody::Welcome(Welcome {
                            cipher_suite: self.config.cipher_suite,
                            secrets: secrets_out,
                            encrypted_group_info,
                        }),
                    }
                    .encode()?,
                )
            };
            let group_info = if options.group_info {
                let gi = self.build_group_info_by(
                    &state,
                    self.config.ratchet_tree_in_group_info,
                    true,
                    next_signer,
                )?;
                Some(
                    MlsMessage {
                        body: MlsMessageBody::GroupInfo(gi),
                    }
                    .encode()?,
                )
            } else {
                None
            };
            Ok::<_, GroupError>((signed, state, welcome, group_info))
        })();
        let (signed, state, welcome, group_info) = match result {
            Ok(r) => r,
            Err(e) => {
                if let Some(k) = fresh_key {
                    let _ = custody.destroy(&k);
                }
                return Err(e);
            }
        };
        let commit = match self.frame(signed) {
            Ok(c) => c,
            Err(e) => {
                if let Some(k) = fresh_key {
                    let _ = custody.destroy(&k);
                }
                return Err(e);
            }
        };
        let digest = self.cs.hash(&[&commit]);
        let output = CommitOutput {
            commit,
            welcome,
            group_info,
            ratchet_tree: (!effects.adds.is_empty()).then(|| state.tree.to_ratchet_tree()),
            adds: added_members(&effects),
            removes: members_of(&effects.removes),
        };
        tracing::debug!(
            epoch = self.state.context.epoch,
            adds = output.adds.len(),
            removes = output.removes.len(),
            with_path,
            "created a commit"
        );
        let own = OwnCommit {
            epoch: state.context.epoch,
            adds: output.adds.clone(),
            removes: output.removes.clone(),
        };
        let lost = LostCommit {
            epoch: self.state.context.epoch,
            proposals: by_value,
            adds: output.adds.clone(),
            removes: output.removes.clone(),
            force_path: options.force_path,
            group_info: options.group_info,
            authenticated_data: options.authenticated_data,
            new_signer: options.new_signer.clone(),
        };
        self.pending_commit = Some(Box::new(PendingCommit {
            state,
            reinit: effects.reinit.clone(),
            from_epoch: self.state.context.epoch,
            digest,
            own,
            lost,
            new_signer: options.new_signer,
        }));
        Ok(output)
    }

    /// Installs this member's pending commit: the group moves to the new
    /// epoch; the replaced leaf key is destroyed in custody (§9.2).
    pub fn merge_pending_commit(&mut self) -> Result<(), GroupError> {
        match &self.pending_commit {
            None => return Err(GroupError::NoPendingCommit),
            // Checked before taking it, so a refusal leaves it pending.
            Some(p) if p.from_epoch != self.state.context.epoch => {
                return Err(GroupError::StaleStagedCommit);
            }
            Some(_) => {}
        }
        let pending = self
            .pending_commit
            .take()
            .ok_or(GroupError::NoPendingCommit)?;
        self.install_epoch(pending.state, None);
        self.reinit = pending.reinit;
        self.remember_sent(pending.digest, ContentType::Commit, pending.from_epoch);
        if let Some(signer) = pending.new_signer {
            tracing::debug!(
                uri = signer.signature_key.uri(),
                "the group signs with its new signer"
            );
            self.signer = signer;
        }
        Ok(())
    }

    /// Checks a [`CommitOptions::new_signer`] before committing it: its key
    /// in the group's custody, its credential valid for its key and a valid
    /// successor of this member's current one (RFC 9420 §5.3.1), as the
    /// other members will check it.
    fn check_new_signer(&self, new: &Signer) -> Result<(), GroupError> {
        if !Arc::ptr_eq(&new.custody, &self.signer.custody) {
            return Err(GroupError::NewSignerCustody);
        }
        let own = self.state.own_leaf();
        let current = self
            .state
            .tree
            .leaf(own)
            .ok_or(GroupError::NotAMember(own))?;
        self.validator.validate_in_suite(
            self.state.context.cipher_suite,
            &new.credential,
            &new.signature_public_key(),
        )?;
        if !self
            .validator
            .valid_successor(&current.credential, &new.credential)
        {
            return Err(GroupError::InvalidCommit(
                CommitRule::PathCredentialNotSuccessor,
            ));
        }
        Ok(())
    }

    /// Abandons this member's pending commit (e.g. the Delivery Service
    /// refused it); its fresh leaf key is destroyed. A copy of the
    /// discarded commit coming back later is not recognised as this
    /// member's own (it is refused): the Delivery Service should not
    /// deliver a commit it refused. When another member's commit wins,
    /// merging that commit discards the pending one without this call
    /// ([`StagedCommit::lost_commit`]).
    pub fn discard_pending_commit(&mut self) -> Result<(), GroupError> {
        let pending = self
            .pending_commit
            .take()
            .ok_or(GroupError::NoPendingCommit)?;
        pending
            .state
            .private
            .retire(&self.state.private, self.signer.custody.as_ref())?;
        Ok(())
    }

    /// Validates a commit from another member (RFC 9420 §12.4.2) and
    /// computes the next epoch without changing the group.
    /// `precomputed_confirmed`: the commit's confirmed transcript hash, if
    /// computed elsewhere over the current interim transcript hash (from
    /// the received bytes, maybe on another thread: asked for only when
    /// the key schedule needs it).
    pub(crate) fn stage_commit(
        &self,
        content: &AuthenticatedContent,
        precomputed_confirmed: Option<ConfirmedHash<'_>>,
        now: UnixTime,
    ) -> Result<StagedCommit, GroupError> {
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
        let own = self.state.own_leaf();
        let committer = content.content.sender;
        match committer {
            Sender::Member(i) if i == own => {
                return Err(GroupError::UnexpectedMessage(
                    MessageRule::OwnCommitNotPending,
                ));
            }
            Sender::Member(i) => {
                if self.state.tree.leaf(i).is_none() {
                    return Err(GroupError::NotAMember(i));
                }
            }
            Sender::NewMemberCommit => {}
            _ => {
                return Err(GroupError::InvalidCommit(CommitRule::SenderNotMember));
            }
        }
        let by_reference = commit
            .proposals
            .iter()
            .any(|p| matches!(p, ProposalOrRef::Reference(_)));
        let resolved = resolve(&commit.proposals, &self.proposals, committer)?;
        let v = self.validation_context(now);
        let mut tree = self.state.tree.clone();
        let effects = validate_and_apply(&v, &mut tree, committer, &resolved, by_reference)?;
        if effects.path_required && commit.path.is_none() {
            return Err(GroupError::InvalidCommit(CommitRule::PathRequired));
        }
        let mut private = self.state.private.clone();
        let mut used_update = None;
        for (i, leaf) in &effects.updates {
            if *i == own {
                let u = self
                    .own_updates
                    .iter()
                    .find(|u| &u.leaf_node == leaf)
                    .ok_or(GroupError::InvalidCommit(CommitRule::UnknownOwnUpdate))?;
                private.replace_leaf_key(u.leaf_key.clone());
                used_update = Some(u.leaf_key.clone());
            }
        }
        let self_removed = effects.removes.iter().any(|(i, _)| *i == own);
        let mut provisional = self.state.context.clone();
        provisional.epoch = provisional
            .epoch
            .checked_add(1)
            .ok_or(GroupError::InvalidCommit(CommitRule::EpochOverflow))?;
        if let Some(ext) = &effects.group_context_extensions {
            provisional.extensions = ext.clone();
        }
        let mut staged = StagedCommit {
            sender: committer,
            adds: added_members(&effects),
            removes: members_of(&effects.removes),
            updates: members_of(&effects.updates),
            psks: effects.psks.clone(),
            group_context_extensions: effects.group_context_extensions.clone(),
            has_path: commit.path.is_some(),
            self_removed,
            new_epoch: provisional.epoch,
            from_epoch: self.state.context.epoch,
            group_id: self.state.context.group_id.clone(),
            state: None,
            used_update,
            reinit: effects.reinit.clone(),
            lost_commit: self
                .pending_commit
                .as_ref()
                .filter(|p| p.from_epoch == self.state.context.epoch)
                .map(|p| p.lost.clone()),
        };
        if self_removed {
            return Ok(staged);
        }
        private.prune(&tree);
        let added: Vec<LeafIndex> = effects.adds.iter().map(|(i, _)| *i).collect();
        let commit_secret = match &commit.path {
            Some(path) => {
                super::sender::check_path_credential(
                    &self.state.tree,
                    self.validator.as_ref(),
                    committer,
                    &path.leaf_node,
                    &effects.removes,
                )?;
                let sender = match committer {
                    Sender::Member(i) => i,
                    _ => {
                        // The joiner's leaf enters at the leftmost free
                        // position; a placeholder with a key foreign to the
                        // tree (the external_pub) stands for it until the
                        // UpdatePath replaces it, as on the joiner's side.
                        let external = self.state.secrets.external_key_pair(self.cs)?;
                        let mut placeholder = path.leaf_node.clone();
                        placeholder.encryption_key =
                            crate::codec::HpkePublicKey(external.public_key().as_bytes().to_vec());
                        tree.add_leaf(placeholder)?
                    }
                };
                let merged = merge_update_path(&mut tree, sender, path, &v.group_params(), &added)?;
                provisional.tree_hash = tree.tree_hash()?.to_vec();
                let processed = decrypt_update_path(
                    &tree,
                    &merged,
                    path,
                    &private,
                    self.signer.custody.as_ref(),
                    &provisional.encode()?,
                )?;
                private = processed.private;
                Some(processed.commit_secret)
            }
            None => {
                if committer == Sender::NewMemberCommit {
                    return Err(GroupError::InvalidCommit(
                        CommitRule::ExternalCommitWithoutPath,
                    ));
                }
                provisional.tree_hash = tree.tree_hash()?.to_vec();
                None
            }
        };
        let init_secret = match &effects.external_init {
            Some(init) => self
                .state
                .secrets
                .external_init_secret(self.cs, &init.kem_output)
                .map_err(|_| GroupError::InvalidCommit(CommitRule::ExternalInitKemOutput))?,
            None => self.state.secrets.init_secret.clone(),
        };
        let confirmed = match precomputed_confirmed.and_then(ConfirmedHash::get) {
            Some(confirmed) => confirmed,
            None => confirmed_transcript_hash(
                self.cs,
                &self.state.interim_transcript_hash,
                &ConfirmedTranscriptHashInput::new(content)?,
            )?,
        };
        let mut context = provisional;
        context.confirmed_transcript_hash = confirmed.to_vec();
        let psk = compute_psk_secret(self.cs, &self.psks, &effects.psks)?;
        let next = run_key_schedule(
            self.cs,
            &init_secret,
            commit_secret.as_ref(),
            psk.as_ref(),
            context,
        )?;
        verify_confirmation_tag(
            self.cs,
            &next.schedule.epoch.confirmation_key,
            &confirmed,
            tag,
        )
        .map_err(|_| GroupError::InvalidConfirmationTag)?;
        let interim = interim_transcript_hash(
            self.cs,
            &confirmed,
            &InterimTranscriptHashInput {
                confirmation_tag: tag,
            },
        )?;
        let mut secrets = next.schedule.epoch;
        let secret_tree = make_secret_tree(self.cs, &self.config, &mut secrets, tree.leaf_count())?;
        staged.state = Some(Box::new(EpochState {
            context: next.context,
            tree,
            private,
            secrets,
            secret_tree,
            interim_transcript_hash: interim.to_vec(),
            confirmation_tag: tag.clone(),
        }));
        Ok(staged)
    }

    /// Installs a commit staged by [`Group::process_incoming`]. If the
    /// commit removed this member, the group becomes unusable and its leaf
    /// key is destroyed.
    pub fn merge_staged_commit(&mut self, staged: StagedCommit) -> Result<(), GroupError> {
        if staged.from_epoch != self.state.context.epoch
            || staged.group_id != self.state.context.group_id
        {
            return Err(GroupError::StaleStagedCommit);
        }
        if let Some(p) = self.pending_commit.take() {
            // Another member's commit won: ours is void. Its echo from the
            // Delivery Service is still recognised as this member's own.
            let _ = p
                .state
                .private
                .retire(&self.state.private, self.signer.custody.as_ref());
            self.remember_sent(p.digest, ContentType::Commit, p.from_epoch);
        }
        match staged.state {
            Some(state) => {
                self.install_epoch(*state, staged.used_update.as_ref());
                self.reinit = staged.reinit;
                Ok(())
            }
            None => {
                let custody = self.signer.custody.clone();
                let _ = self.state.private.destroy_leaf_key(custody.as_ref());
                for u in self.own_updates.drain(..) {
                    let _ = custody.destroy(&u.leaf_key);
                }
                self.removed = true;
                Ok(())
            }
        }
    }
}
