//! Proposals (RFC 9420 §12.1): the per-epoch cache of received proposals,
//! validation of a commit's proposal list (§12.2) and its application to
//! the tree in the order of §12.3.

use std::collections::HashSet;

use hsmls_crypto::CipherSuiteProvider;

use super::psk_store::PskStore;
use super::{CommitRule, GroupError, MessageRule, ProposalRule};
use crate::codec::{
    AuthenticatedContent, CipherSuite, Encode, Extension, ExternalInit, FramedContentBody,
    GroupContext, KeyPackage, LeafNode, PreSharedKeyId, Proposal, ProposalOrRef, ProposalRef, Psk,
    RequiredCapabilities, ResumptionPskUsage, Sender,
};
use crate::credential::CredentialValidator;
use crate::key_package::{KeyPackageError, KeyPackageIn};
use crate::tree::{GroupParams, LeafNodeUsage, RatchetTree, validate_leaf_node};
use crate::tree_math::LeafIndex;

/// A proposal received (or sent) in the current epoch, with its
/// reference (RFC 9420 §5.2): what [`crate::Group::pending_proposals`]
/// lists.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CachedProposal {
    /// `ProposalRef = RefHash("MLS 1.0 Proposal Reference", AuthenticatedContent)`.
    pub reference: ProposalRef,
    /// The proposal.
    pub proposal: Proposal,
    /// Who proposed it.
    pub sender: Sender,
}

impl CachedProposal {
    /// Caches the proposal carried by `content` (which must be a proposal).
    pub(crate) fn from_content(
        cs: &dyn CipherSuiteProvider,
        content: &AuthenticatedContent,
    ) -> Result<Self, GroupError> {
        let FramedContentBody::Proposal(proposal) = &content.content.body else {
            return Err(GroupError::UnexpectedMessage(MessageRule::NotAProposal));
        };
        let reference = ProposalRef(cs.make_proposal_ref(&content.encode()?)?.to_vec());
        Ok(CachedProposal {
            reference,
            proposal: proposal.clone(),
            sender: content.content.sender,
        })
    }
}

/// A proposal of a commit, by value or resolved from its reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedProposal {
    /// The proposal.
    pub proposal: Proposal,
    /// Its sender (the committer for proposals by value).
    pub sender: Sender,
    /// An Add of a [`crate::KeyPackage`] the committer was given
    /// validated ([`crate::CommitOptions::add_key_packages`]): its
    /// signatures and credential are not checked again, only what depends
    /// on the group (`check_validated_key_package`).
    pub validated: bool,
}

/// Resolves a commit's `proposals` against the cache (RFC 9420 §12.4.2).
pub fn resolve(
    proposals: &[ProposalOrRef],
    cache: &[CachedProposal],
    committer: Sender,
) -> Result<Vec<ResolvedProposal>, GroupError> {
    proposals
        .iter()
        .map(|p| match p {
            ProposalOrRef::Proposal(proposal) => Ok(ResolvedProposal {
                proposal: proposal.clone(),
                sender: committer,
                validated: false,
            }),
            ProposalOrRef::Reference(r) => cache
                .iter()
                .find(|c| &c.reference == r)
                .map(|c| ResolvedProposal {
                    proposal: c.proposal.clone(),
                    sender: c.sender,
                    validated: false,
                })
                .ok_or(GroupError::UnknownProposalRef),
        })
        .collect()
}

/// What a commit's proposals do, after they were applied to the tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProposalEffects {
    /// Added members: their new leaf index and KeyPackage.
    pub adds: Vec<(LeafIndex, KeyPackage)>,
    /// Removed members: their former leaf index and LeafNode.
    pub removes: Vec<(LeafIndex, LeafNode)>,
    /// Members whose leaf an Update proposal replaced.
    pub updates: Vec<(LeafIndex, LeafNode)>,
    /// PSKs to inject, in commit order.
    pub psks: Vec<PreSharedKeyId>,
    /// New GroupContext extensions.
    pub group_context_extensions: Option<Vec<Extension>>,
    /// The ExternalInit of an external commit.
    pub external_init: Option<ExternalInit>,
    /// Whether the commit must carry an UpdatePath (RFC 9420 §12.4).
    pub path_required: bool,
    /// The ReInit proposal of the commit, if any (RFC 9420 §12.1.5).
    pub reinit: Option<crate::codec::ReInit>,
}

/// Inputs of proposal validation.
#[derive(Clone)]
pub struct ValidationContext<'a> {
    /// The suite provider.
    pub cs: &'static dyn CipherSuiteProvider,
    /// The current GroupContext.
    pub context: &'a GroupContext,
    /// Credential validation.
    pub validator: &'a dyn CredentialValidator,
    /// PSKs this member knows.
    pub psks: &'a PskStore,
    /// The current time (seconds since the Unix epoch).
    pub now: u64,
    /// The group's `required_capabilities` (RFC 9420 §11.1), if any.
    pub required_capabilities: Option<RequiredCapabilities>,
    /// Whether PSK values are looked up in `psks` (a member), or only the
    /// PSK ids are checked (an observer without secrets,
    /// [`crate::PublicGroup`], cannot know PSK values).
    pub psk_values_known: bool,
}

impl ValidationContext<'_> {
    /// The tree module's view of the group parameters.
    pub fn group_params(&self) -> GroupParams<'_> {
        GroupParams {
            group_id: &self.context.group_id,
            cipher_suite: self.context.cipher_suite,
            version: self.context.version,
            required_capabilities: self.required_capabilities.as_ref(),
            now: Some(self.now),
            max_lifetime: None,
        }
    }
}

impl std::fmt::Debug for ValidationContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidationContext")
            .field("epoch", &self.context.epoch)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

/// Checks what the acceptance of an already validated KeyPackage (RFC
/// 9420 §10.1, done by [`KeyPackageIn::validate`]: signatures, keys,
/// credential) depends on in this group: the group's cipher suite and the
/// KeyPackage's lifetime at `now`.
pub fn check_validated_key_package(
    v: &ValidationContext<'_>,
    key_package: &KeyPackage,
) -> Result<(), GroupError> {
    if key_package.cipher_suite != v.context.cipher_suite {
        return Err(KeyPackageError::WrongCipherSuite {
            expected: v.context.cipher_suite.0,
            actual: key_package.cipher_suite.0,
        }
        .into());
    }
    let crate::codec::LeafNodeSource::KeyPackage(lifetime) = key_package.leaf_node.leaf_node_source
    else {
        return Err(
            KeyPackageError::InvalidLeafNode(crate::tree::LeafNodeError::WrongSource {
                expected: crate::tree::LeafNodeSourceType::KeyPackage,
                actual: crate::tree::LeafNodeSourceType::of(
                    &key_package.leaf_node.leaf_node_source,
                ),
            })
            .into(),
        );
    };
    if v.now < lifetime.not_before || v.now > lifetime.not_after {
        return Err(KeyPackageError::Expired {
            not_before: lifetime.not_before,
            not_after: lifetime.not_after,
            now: v.now,
        }
        .into());
    }
    Ok(())
}

/// Validates an Update proposal's LeafNode from `sender` (RFC 9420
/// §12.1.2, §7.3) against the tree.
pub fn validate_update(
    v: &ValidationContext<'_>,
    tree: &RatchetTree,
    sender: LeafIndex,
    leaf: &LeafNode,
) -> Result<(), GroupError> {
    let old = tree.leaf(sender).ok_or(GroupError::NotAMember(sender))?;
    validate_member_leaf(v, tree, LeafNodeUsage::Update(sender), sender, old, leaf)
}

/// Validates a LeafNode that replaces member `index`'s `old` leaf (Update
/// or commit path): signature, capabilities, credential, key uniqueness.
pub fn validate_member_leaf(
    v: &ValidationContext<'_>,
    tree: &RatchetTree,
    usage: LeafNodeUsage,
    index: LeafIndex,
    old: &LeafNode,
    leaf: &LeafNode,
) -> Result<(), GroupError> {
    validate_leaf_node(v.cs, leaf, usage, &v.group_params())?;
    v.validator.validate_in_suite(
        v.context.cipher_suite,
        &leaf.credential,
        &leaf.signature_key,
    )?;
    if !v
        .validator
        .valid_successor(&old.credential, &leaf.credential)
    {
        return Err(GroupError::InvalidProposal(
            ProposalRule::CredentialNotSuccessor,
        ));
    }
    if leaf.encryption_key == old.encryption_key {
        return Err(GroupError::InvalidProposal(
            ProposalRule::EncryptionKeyNotFresh,
        ));
    }
    tree.check_leaves_fit(&[(Some(index), leaf)])?;
    Ok(())
}

fn check_psk_id(v: &ValidationContext<'_>, id: &PreSharedKeyId) -> Result<(), GroupError> {
    if id.psk_nonce.len() != v.cs.hash_len() {
        return Err(GroupError::InvalidProposal(ProposalRule::PskNonceLength));
    }
    if let Psk::Resumption(r) = &id.psk {
        // §11.2, §11.3, §12.1.4: usage reinit or branch only in the
        // initial commit (epoch 0 to 1) that sets up a reinitialized or
        // branched group, and only with a value the application put there
        // through `Group::reinit_group` / `Group::branch`.
        if r.usage != ResumptionPskUsage::Application && v.context.epoch != 0 {
            return Err(GroupError::InvalidProposal(
                ProposalRule::LinkedPskInNormalCommit,
            ));
        }
    }
    if v.psk_values_known && v.psks.get(id).is_none() {
        return Err(GroupError::UnknownPsk);
    }
    Ok(())
}

fn sender_leaf(sender: &Sender) -> Option<LeafIndex> {
    match sender {
        Sender::Member(l) => Some(*l),
        _ => None,
    }
}

/// Validates the proposal list of a commit from `committer` (RFC 9420
/// §12.2, §12.4.3.2 for external commits) and applies it to `tree` in the
/// order of §12.3: GroupContextExtensions, Update, Remove, Add, then PSK
/// and ExternalInit (which touch only the key schedule). `tree` is a
/// staging copy: on error the caller drops it.
pub fn validate_and_apply(
    v: &ValidationContext<'_>,
    tree: &mut RatchetTree,
    committer: Sender,
    proposals: &[ResolvedProposal],
    by_reference: bool,
) -> Result<ProposalEffects, GroupError> {
    let external = matches!(committer, Sender::NewMemberCommit);
    let committer_leaf = sender_leaf(&committer);
    if !external && committer_leaf.is_none() {
        return Err(GroupError::InvalidCommit(CommitRule::SenderNotMember));
    }
    let mut effects = ProposalEffects {
        path_required: proposals.is_empty(),
        ..Default::default()
    };
    let mut touched: HashSet<LeafIndex> = HashSet::new();
    let mut psk_ids: HashSet<Vec<u8>> = HashSet::new();
    let mut add_sig_keys: HashSet<Vec<u8>> = HashSet::new();
    let mut updates = Vec::new();
    let mut removes = Vec::new();
    let mut adds = Vec::new();
    let mut n_external_init = 0usize;
    for p in proposals {
        match &p.proposal {
            Proposal::Add(add) => {
                if external {
                    return Err(GroupError::InvalidProposal(
                        ProposalRule::NotAllowedInExternalCommit,
                    ));
                }
                let kp = if p.validated {
                    check_validated_key_package(v, &add.key_package)?;
                    add.key_package.clone()
                } else {
                    KeyPackageIn(add.key_package.clone())
                        .validate(v.context.cipher_suite, v.validator, v.now)?
                        .into_wire()
                };
                if let Some(rc) = &v.required_capabilities {
                    check_required_capabilities(&kp.leaf_node, rc)?;
                }
                if !add_sig_keys.insert(kp.leaf_node.signature_key.0.clone()) {
                    return Err(GroupError::InvalidProposal(
                        ProposalRule::SameClientAddedTwice,
                    ));
                }
                adds.push(kp);
            }
            Proposal::Update(update) => {
                let Some(sender) = sender_leaf(&p.sender) else {
                    return Err(GroupError::InvalidProposal(
                        ProposalRule::UpdateFromNonMember,
                    ));
                };
                if Some(sender) == committer_leaf {
                    return Err(GroupError::InvalidProposal(ProposalRule::CommitterUpdate));
                }
                if !touched.insert(sender) {
                    return Err(GroupError::InvalidProposal(
                        ProposalRule::SeveralChangesToOneLeaf,
                    ));
                }
                validate_update(v, tree, sender, &update.leaf_node)?;
                updates.push((sender, update.leaf_node.clone()));
                effects.path_required = true;
            }
            Proposal::Remove(remove) => {
                if Some(remove.removed) == committer_leaf {
                    return Err(GroupError::InvalidProposal(ProposalRule::RemovesCommitter));
                }
                if tree.leaf(remove.removed).is_none() {
                    return Err(GroupError::InvalidProposal(ProposalRule::RemoveBlankLeaf));
                }
                if !touched.insert(remove.removed) {
                    return Err(GroupError::InvalidProposal(
                        ProposalRule::SeveralChangesToOneLeaf,
                    ));
                }
                removes.push(remove.removed);
                effects.path_required = true;
            }
            Proposal::SelfRemove(_) => {
                // draft-ietf-mls-extensions: the sender leaves; it cannot
                // commit its own SelfRemove.
                let Some(sender) = sender_leaf(&p.sender) else {
                    return Err(GroupError::InvalidProposal(
                        ProposalRule::SelfRemoveFromNonMember,
                    ));
                };
                if Some(sender) == committer_leaf {
                    return Err(GroupError::InvalidProposal(
                        ProposalRule::CommitterSelfRemove,
                    ));
                }
                if tree.leaf(sender).is_none() {
                    return Err(GroupError::NotAMember(sender));
                }
                if !touched.insert(sender) {
                    return Err(GroupError::InvalidProposal(
                        ProposalRule::SeveralChangesToOneLeaf,
                    ));
                }
                removes.push(sender);
                effects.path_required = true;
            }
            Proposal::PreSharedKey(psk) => {
                check_psk_id(v, &psk.psk)?;
                if !psk_ids.insert(psk.psk.encode()?) {
                    return Err(GroupError::InvalidProposal(ProposalRule::DuplicatePsk));
                }
                effects.psks.push(psk.psk.clone());
            }
            Proposal::ReInit(reinit) => {
                // §12.1.5, §12.2: a ReInit stands alone, never in an
                // external commit, and does not lower the version.
                if external {
                    return Err(GroupError::InvalidProposal(
                        ProposalRule::NotAllowedInExternalCommit,
                    ));
                }
                if proposals.len() != 1 {
                    return Err(GroupError::InvalidProposal(ProposalRule::ReInitNotAlone));
                }
                check_reinit(v, reinit)?;
                effects.reinit = Some(reinit.clone());
            }
            Proposal::ExternalInit(init) => {
                if !external {
                    return Err(GroupError::InvalidProposal(
                        ProposalRule::ExternalInitOutsideExternalCommit,
                    ));
                }
                n_external_init += 1;
                effects.external_init = Some(init.clone());
                effects.path_required = true;
            }
            Proposal::GroupContextExtensions(gce) => {
                if external {
                    return Err(GroupError::InvalidProposal(
                        ProposalRule::NotAllowedInExternalCommit,
                    ));
                }
                if effects.group_context_extensions.is_some() {
                    return Err(GroupError::InvalidProposal(
                        ProposalRule::SeveralGroupContextExtensions,
                    ));
                }
                let mut seen = HashSet::new();
                if !gce.extensions.iter().all(|e| seen.insert(e.extension_type)) {
                    return Err(GroupError::InvalidProposal(
                        ProposalRule::DuplicateExtensionType,
                    ));
                }
                effects.group_context_extensions = Some(gce.extensions.clone());
                effects.path_required = true;
            }
        }
    }
    if external {
        if n_external_init != 1 {
            return Err(GroupError::InvalidProposal(ProposalRule::ExternalInitCount));
        }
        if !updates.is_empty() {
            return Err(GroupError::InvalidProposal(
                ProposalRule::NotAllowedInExternalCommit,
            ));
        }
        if removes.len() > 1 {
            return Err(GroupError::InvalidProposal(
                ProposalRule::SeveralRemovesInExternalCommit,
            ));
        }
        if by_reference {
            return Err(GroupError::InvalidProposal(
                ProposalRule::ByReferenceInExternalCommit,
            ));
        }
    }
    if let Some(exts) = &effects.group_context_extensions {
        check_members_support(tree, exts, &removes)?;
        // §12.1.7: new required_capabilities must be met by every member
        // that stays and every member added.
        if let Some(rc) = crate::codec::find_extension::<RequiredCapabilities>(exts) {
            let rc = rc.map_err(GroupError::Malformed)?;
            for (i, leaf) in tree.leaves() {
                if !removes.contains(&i) {
                    check_required_capabilities(leaf, &rc)?;
                }
            }
            for kp in &adds {
                check_required_capabilities(&kp.leaf_node, &rc)?;
            }
        }
    }
    // §12.3: Update, Remove, Add.
    for (i, leaf) in &updates {
        tree.update_leaf(*i, leaf.clone())?;
    }
    effects.updates = updates;
    for i in &removes {
        let leaf = tree.leaf(*i).cloned().ok_or(GroupError::NotAMember(*i))?;
        tree.remove_leaf(*i)?;
        effects.removes.push((*i, leaf));
    }
    if !adds.is_empty() {
        let batch: Vec<(Option<LeafIndex>, &LeafNode)> =
            adds.iter().map(|kp| (None, &kp.leaf_node)).collect();
        tree.check_leaves_fit(&batch)?;
        let indices = tree.add_leaves(adds.iter().map(|kp| kp.leaf_node.clone()))?;
        effects.adds.extend(indices.into_iter().zip(adds));
    }
    Ok(effects)
}

/// A ReInit proposal on its own (RFC 9420 §12.1.5): the version is not
/// lower than the group's; the new suite is one this engine implements.
pub fn check_reinit(
    v: &ValidationContext<'_>,
    reinit: &crate::codec::ReInit,
) -> Result<(), GroupError> {
    if reinit.version.0 < v.context.version.0 {
        return Err(GroupError::InvalidProposal(
            ProposalRule::ReInitLowersVersion,
        ));
    }
    suite_provider(reinit.cipher_suite)?;
    Ok(())
}

/// Every member that stays supports every non-default extension type of a
/// GroupContextExtensions proposal (RFC 9420 §12.1.7).
fn check_members_support(
    tree: &RatchetTree,
    extensions: &[Extension],
    removed: &[LeafIndex],
) -> Result<(), GroupError> {
    for (i, leaf) in tree.leaves() {
        if removed.contains(&i) {
            continue;
        }
        for e in extensions {
            if !crate::key_package::is_default_extension(e.extension_type)
                && !leaf.capabilities.extensions.contains(&e.extension_type)
            {
                return Err(GroupError::InvalidProposal(
                    ProposalRule::ExtensionNotSupported,
                ));
            }
        }
    }
    Ok(())
}

/// The cipher suite id as the crypto crate names it.
pub fn suite_provider(suite: CipherSuite) -> Result<&'static dyn CipherSuiteProvider, GroupError> {
    hsmls_crypto::CipherSuite(suite.0)
        .provider()
        .map_err(|_| GroupError::UnsupportedCipherSuite(suite.0))
}

/// Whether a leaf's capabilities meet `required_capabilities` (RFC 9420
/// §11.1; default extension and proposal types need not be listed).
pub fn check_required_capabilities(
    leaf: &LeafNode,
    rc: &RequiredCapabilities,
) -> Result<(), GroupError> {
    let caps = &leaf.capabilities;
    let ok = rc
        .extension_types
        .iter()
        .all(|t| crate::key_package::is_default_extension(*t) || caps.extensions.contains(t))
        && rc
            .proposal_types
            .iter()
            .all(|t| (1..=7).contains(&t.0) || caps.proposals.contains(t))
        && rc
            .credential_types
            .iter()
            .all(|t| caps.credentials.contains(t));
    if ok {
        Ok(())
    } else {
        Err(GroupError::InvalidProposal(
            ProposalRule::RequiredCapabilitiesNotMet,
        ))
    }
}

/// Checks a received proposal on its own (RFC 9420 §12.1), against the
/// current `tree`.
pub fn check_proposal(
    v: &ValidationContext<'_>,
    tree: &RatchetTree,
    sender: &Sender,
    proposal: &Proposal,
) -> Result<(), GroupError> {
    match proposal {
        Proposal::Add(add) => {
            let kp = KeyPackageIn(add.key_package.clone()).validate(
                v.context.cipher_suite,
                v.validator,
                v.now,
            )?;
            tree.check_leaves_fit(&[(None, kp.leaf_node())])?;
        }
        Proposal::Update(update) => {
            let Sender::Member(i) = sender else {
                return Err(GroupError::InvalidProposal(
                    ProposalRule::UpdateFromNonMember,
                ));
            };
            validate_update(v, tree, *i, &update.leaf_node)?;
        }
        Proposal::Remove(remove) => {
            if tree.leaf(remove.removed).is_none() {
                return Err(GroupError::InvalidProposal(ProposalRule::RemoveBlankLeaf));
            }
        }
        Proposal::PreSharedKey(_) | Proposal::GroupContextExtensions(_) => {}
        Proposal::SelfRemove(_) => {
            if !matches!(sender, Sender::Member(_)) {
                return Err(GroupError::InvalidProposal(
                    ProposalRule::SelfRemoveFromNonMember,
                ));
            }
        }
        Proposal::ReInit(reinit) => check_reinit(v, reinit)?,
        Proposal::ExternalInit(_) => {
            return Err(GroupError::InvalidProposal(
                ProposalRule::ExternalInitOutsideExternalCommit,
            ));
        }
    }
    Ok(())
}
