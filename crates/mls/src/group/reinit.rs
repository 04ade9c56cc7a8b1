//! Reinitialization (RFC 9420 §11.2) and subgroup branching (§11.3): a new
//! group linked to an old one by a resumption PSK of usage `reinit` or
//! `branch`.
//!
//! Reinit: a member proposes ([`Group::propose_reinit`]) or commits
//! ([`Group::commit_reinit`]) a ReInit; once that commit is merged the old
//! group refuses further use ([`GroupError::ReInitialized`]). Any member
//! then creates the new group with [`crate::Client::reinit_group`] (the
//! ReInit's group id, version, suite and extensions; every other member's
//! fresh KeyPackage; a `reinit` PSK of the old group's last epoch) and the
//! others join with [`crate::Client::join_reinit`], which checks the
//! Welcome against the ReInit and the old membership (§12.4.3.1).
//!
//! Branch: [`crate::Client::branch`] creates a group of a subset of the
//! members with a `branch` PSK of the current epoch;
//! [`crate::Client::join_branch`] checks version, suite, epoch 1 and that
//! every new member was an old one.
//!
//! "The same member" is decided by the group's
//! [`CredentialValidator::valid_successor`] (RFC 9420 leaves it to the
//! application).

use hsmls_crypto::Secret;
use rand_core::OsRng;

use std::sync::Arc;

use super::{
    CommitOptions, CommitOutput, Group, GroupConfig, GroupError, JoinOptions, ProposalMessage,
    ReInitRule, WelcomeRule,
};
use crate::codec::{
    Credential, PreSharedKeyId, Proposal, ProtocolVersion, Psk, ReInit, ResumptionPsk,
    ResumptionPskUsage,
};
use crate::credential::{CredentialValidator, Signer};
use crate::key_package::{KeyPackage, KeyPackageBundle};

use super::UnixTime;

/// The reinit/branch resumption PSK among a Welcome's PSKs, if any
/// (RFC 9420 §12.4.3.1): at most one, and only for a group at epoch 1.
pub(crate) fn linked_psk_of(
    psks: &[PreSharedKeyId],
    epoch: u64,
) -> Result<Option<ResumptionPsk>, GroupError> {
    let mut linked = psks.iter().filter_map(|id| match &id.psk {
        Psk::Resumption(r) if r.usage != ResumptionPskUsage::Application => Some(r),
        _ => None,
    });
    let first = linked.next().cloned();
    if linked.next().is_some() {
        return Err(GroupError::InvalidWelcome(WelcomeRule::SeveralLinkedPsks));
    }
    if first.is_some() && epoch != 1 {
        return Err(GroupError::InvalidWelcome(
            WelcomeRule::LinkedPskNotAtEpochOne,
        ));
    }
    Ok(first)
}

/// Whether every credential of `required` has a match in `present`.
fn all_matched(
    validator: &dyn CredentialValidator,
    required: &[Credential],
    present: &[Credential],
) -> bool {
    required
        .iter()
        .all(|r| present.iter().any(|p| validator.valid_successor(r, p)))
}

impl Group {
    /// Proposes reinitializing the group (RFC 9420 §12.1.5).
    pub fn propose_reinit(&mut self, reinit: ReInit) -> Result<ProposalMessage, GroupError> {
        super::proposals::check_reinit(&self.validation_context(0), &reinit)?;
        self.send_proposal(Proposal::ReInit(reinit))
    }

    /// Commits a ReInit by value, alone (RFC 9420 §11.2 steps 1 and 2).
    /// Once merged, the group is closed.
    pub fn commit_reinit(
        &mut self,
        reinit: ReInit,
        now: UnixTime,
    ) -> Result<CommitOutput, GroupError> {
        let mut options = CommitOptions::new();
        options.reinit = Some(reinit);
        options.include_pending = false;
        self.commit(options, now)
    }

    /// The ReInit of the last merged commit, once the group is closed by it.
    pub fn committed_reinit(&self) -> Option<&ReInit> {
        self.reinit.as_ref()
    }

    /// The reinit or branch resumption PSK this member joined with, if any.
    pub fn linked_psk(&self) -> Option<&ResumptionPsk> {
        self.linked_psk.as_ref()
    }

    /// Creates the reinitialized group (RFC 9420 §11.2 step 3): the
    /// ReInit's group id, version, suite and extensions, with `signer` at
    /// leaf 0, and one commit adding `key_packages` (one for every other
    /// member of the old group) with a `reinit` PSK of the old group's last
    /// epoch. The new group is returned at epoch 1 (no one else can commit
    /// at its epoch 0) with the commit output, whose Welcome goes to the
    /// members. Applications call [`crate::Client::reinit_group`].
    pub(crate) fn reinit_group(
        &self,
        config: GroupConfig,
        signer: Signer,
        validator: Arc<dyn CredentialValidator>,
        key_packages: &[KeyPackage],
        now: UnixTime,
    ) -> Result<(Group, CommitOutput), GroupError> {
        let reinit = self
            .reinit
            .clone()
            .ok_or(GroupError::ReInit(ReInitRule::NoReInitCommitted))?;
        if reinit.version != ProtocolVersion::MLS10 {
            return Err(GroupError::ReInit(ReInitRule::VersionNotImplemented));
        }
        if config.cipher_suite != reinit.cipher_suite {
            return Err(GroupError::ReInit(ReInitRule::CipherSuiteMismatch));
        }
        let mut present = vec![signer.credential.clone()];
        present.extend(
            key_packages
                .iter()
                .map(|kp| kp.leaf_node().credential.clone()),
        );
        let old: Vec<Credential> = self.members().into_iter().map(|m| m.credential).collect();
        if !all_matched(validator.as_ref(), &old, &present) {
            return Err(GroupError::ReInit(ReInitRule::MemberMissing));
        }
        self.linked_group(
            config,
            signer,
            validator,
            reinit.group_id,
            reinit.extensions,
            ResumptionPskUsage::Reinit,
            key_packages,
            now,
        )
    }

    /// Branches a subgroup (RFC 9420 §11.3): a new group `group_id` with
    /// this group's version and suite (`config`'s suite must be it),
    /// `signer` at leaf 0, adding `key_packages` (fresh ones of some
    /// members) with a `branch` PSK of the current epoch. Returned at
    /// epoch 1 with the commit output. Applications call
    /// [`crate::Client::branch`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn branch(
        &self,
        config: GroupConfig,
        signer: Signer,
        validator: Arc<dyn CredentialValidator>,
        group_id: Vec<u8>,
        extensions: Vec<crate::codec::Extension>,
        key_packages: &[KeyPackage],
        now: UnixTime,
    ) -> Result<(Group, CommitOutput), GroupError> {
        if config.cipher_suite != self.config.cipher_suite {
            return Err(GroupError::ReInit(ReInitRule::BranchChangesVersionOrSuite));
        }
        let mut present = vec![signer.credential.clone()];
        present.extend(
            key_packages
                .iter()
                .map(|kp| kp.leaf_node().credential.clone()),
        );
        let old: Vec<Credential> = self.members().into_iter().map(|m| m.credential).collect();
        if !all_matched(validator.as_ref(), &present, &old) {
            return Err(GroupError::ReInit(ReInitRule::BranchMemberNotInGroup));
        }
        self.linked_group(
            config,
            signer,
            validator,
            group_id,
            extensions,
            ResumptionPskUsage::Branch,
            key_packages,
            now,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn linked_group(
        &self,
        config: GroupConfig,
        signer: Signer,
        validator: Arc<dyn CredentialValidator>,
        group_id: Vec<u8>,
        extensions: Vec<crate::codec::Extension>,
        usage: ResumptionPskUsage,
        key_packages: &[KeyPackage],
        now: UnixTime,
    ) -> Result<(Group, CommitOutput), GroupError> {
        let epoch = self.state.context.epoch;
        let old_id = self.state.context.group_id.clone();
        let psk = self
            .psks
            .resumption(&old_id, epoch)
            .cloned()
            .ok_or(GroupError::UnknownPsk)?;
        let mut g = Group::create(config, signer, validator, group_id, extensions, now)?;
        g.psks.insert_linked(usage, &old_id, epoch, psk);
        // §11.3: a random psk_nonce of length KDF.Nh.
        let mut psk_nonce = vec![0; g.cs.hash_len()];
        rand_core::RngCore::fill_bytes(&mut OsRng, &mut psk_nonce);
        let id = PreSharedKeyId {
            psk: Psk::Resumption(ResumptionPsk {
                usage,
                psk_group_id: old_id,
                psk_epoch: epoch,
            }),
            psk_nonce,
        };
        let mut options = CommitOptions::new();
        options.add_key_packages = key_packages.to_vec();
        options.psks = vec![id];
        let result = g.commit(options, now).and_then(|out| {
            g.merge_pending_commit()?;
            Ok(out)
        });
        match result {
            Ok(out) => Ok((g, out)),
            Err(e) => {
                let _ = g.state.private.destroy_leaf_key(g.signer.custody.as_ref());
                Err(e)
            }
        }
    }

    /// Joins the reinitialized group from its Welcome (RFC 9420 §11.2,
    /// §12.4.3.1): this (closed) group supplies the `reinit` PSK; the new
    /// group must be at epoch 1, match the committed ReInit, have been
    /// keyed with this group's last-epoch `reinit` PSK, and hold every
    /// member of this group. Applications call
    /// [`crate::Client::join_reinit`].
    pub(crate) fn join_reinit(
        &self,
        config: GroupConfig,
        signer: Signer,
        validator: Arc<dyn CredentialValidator>,
        bundle: &KeyPackageBundle,
        welcome: &[u8],
        options: JoinOptions,
    ) -> Result<Group, GroupError> {
        let reinit = self
            .reinit
            .as_ref()
            .ok_or(GroupError::ReInit(ReInitRule::NoReInitCommitted))?;
        let g = self.join_linked(
            ResumptionPskUsage::Reinit,
            config,
            signer,
            validator.clone(),
            bundle,
            welcome,
            options,
        )?;
        let ctx = &g.state.context;
        let checks = if ctx.group_id != reinit.group_id
            || ctx.version != reinit.version
            || ctx.cipher_suite != reinit.cipher_suite
            || ctx.extensions != reinit.extensions
        {
            Err(GroupError::ReInit(ReInitRule::GroupDoesNotMatch))
        } else {
            let old: Vec<Credential> = self.members().into_iter().map(|m| m.credential).collect();
            let new: Vec<Credential> = g.members().into_iter().map(|m| m.credential).collect();
            if all_matched(validator.as_ref(), &old, &new) {
                Ok(())
            } else {
                Err(GroupError::ReInit(ReInitRule::MemberMissing))
            }
        };
        g.keep_if(checks)
    }

    /// Joins a branched subgroup from its Welcome (RFC 9420 §11.3): this
    /// group supplies the `branch` PSK (any retained epoch); the new group
    /// must be at epoch 1, have this group's version and suite, and hold
    /// only members of this group. Applications call
    /// [`crate::Client::join_branch`].
    pub(crate) fn join_branch(
        &self,
        config: GroupConfig,
        signer: Signer,
        validator: Arc<dyn CredentialValidator>,
        bundle: &KeyPackageBundle,
        welcome: &[u8],
        options: JoinOptions,
    ) -> Result<Group, GroupError> {
        let g = self.join_linked(
            ResumptionPskUsage::Branch,
            config,
            signer,
            validator.clone(),
            bundle,
            welcome,
            options,
        )?;
        let ctx = &g.state.context;
        let checks = if ctx.version != self.state.context.version
            || ctx.cipher_suite != self.state.context.cipher_suite
        {
            Err(GroupError::ReInit(ReInitRule::BranchChangesVersionOrSuite))
        } else {
            let old: Vec<Credential> = self.members().into_iter().map(|m| m.credential).collect();
            let new: Vec<Credential> = g.members().into_iter().map(|m| m.credential).collect();
            if all_matched(validator.as_ref(), &new, &old) {
                Ok(())
            } else {
                Err(GroupError::ReInit(ReInitRule::BranchMemberNotInGroup))
            }
        };
        g.keep_if(checks)
    }

    /// Joins with this group's resumption PSKs offered under `usage`, and
    /// checks the Welcome used one of them.
    #[allow(clippy::too_many_arguments)]
    fn join_linked(
        &self,
        usage: ResumptionPskUsage,
        config: GroupConfig,
        signer: Signer,
        validator: Arc<dyn CredentialValidator>,
        bundle: &KeyPackageBundle,
        welcome: &[u8],
        mut options: JoinOptions,
    ) -> Result<Group, GroupError> {
        let old_id = &self.state.context.group_id;
        let epochs = match usage {
            // §11.2: the epoch after the commit covering the ReInit.
            ResumptionPskUsage::Reinit => vec![self.state.context.epoch],
            _ => self.psks.resumption_epochs(old_id),
        };
        for e in &epochs {
            let psk: Secret = self
                .psks
                .resumption(old_id, *e)
                .cloned()
                .ok_or(GroupError::UnknownPsk)?;
            options.psks.insert_linked(usage, old_id, *e, psk);
        }
        let g = Group::join_from_welcome(config, signer, validator, bundle, welcome, options)?;
        let used = g.linked_psk.as_ref().is_some_and(|r| {
            r.usage == usage && &r.psk_group_id == old_id && epochs.contains(&r.psk_epoch)
        });
        let check = if used {
            Ok(())
        } else {
            Err(GroupError::ReInit(ReInitRule::LinkedPskMissing))
        };
        g.keep_if(check)
    }

    /// Returns the group if `check` passed; otherwise destroys its leaf key
    /// and returns the error.
    fn keep_if(self, check: Result<(), GroupError>) -> Result<Group, GroupError> {
        match check {
            Ok(()) => Ok(self),
            Err(e) => {
                let _ = self
                    .state
                    .private
                    .destroy_leaf_key(self.signer.custody.as_ref());
                Err(e)
            }
        }
    }
}
