//! Joining a group: from a Welcome (RFC 9420 §12.4.3.1) and by an external
//! commit (§12.4.3.2).

use std::sync::Arc;

use hsmls_crypto::{HpkeRecipient, Secret};

use super::commit::{make_secret_tree, run_key_schedule};
use super::proposals::suite_provider;
use super::welcome::{
    decrypt_group_info, decrypt_group_secrets, joiner_welcome_secret, verify_group_info,
};
use super::{
    CommitRule, EpochState, Group, GroupConfig, GroupError, MessageRule, ProposalRule, PskStore,
    WelcomeRule,
};
use crate::codec::{
    self, Commit, Decode, Encode, ExternalInit, ExternalPub, FramedContent, FramedContentBody,
    GroupInfo, HpkePublicKey, MlsMessage, MlsMessageBody, Proposal, ProposalOrRef, Sender,
    WireFormat, find_extension,
};
use crate::credential::{CredentialValidator, Signer};
use crate::key_package::KeyPackageBundle;
use crate::key_schedule::{EpochSecrets, JoinerSecret, external_init};
use crate::message_protection::{protect_public, sign_content};
use crate::transcript::{
    ConfirmedTranscriptHashInput, InterimTranscriptHashInput, TranscriptHashes, confirmation_tag,
    confirmed_transcript_hash, interim_transcript_hash, verify_confirmation_tag,
};
use crate::tree::{
    GroupParams, LeafNodeParams, RatchetTree, TreeKemPrivate, UnverifiedTree, prepare_update_path,
};
use crate::tree_math;

/// Inputs of a join beyond the group's own messages. Build it from
/// `JoinOptions::default()` and set the fields needed.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct JoinOptions {
    /// The ratchet tree, when the GroupInfo has no `ratchet_tree`
    /// extension (given out of band, RFC 9420 §12.4.3.3).
    pub ratchet_tree: Option<codec::RatchetTree>,
    /// PSKs the Welcome may name (external PSKs, resumption PSKs of other
    /// groups), and that the new group keeps.
    pub psks: PskStore,
    /// For an external commit: PSKs to inject as PreSharedKey proposals by
    /// value (RFC 9420 §12.4.3.2 allows them beside ExternalInit), each
    /// with a fresh `psk_nonce`. Their values must be in `psks` (external
    /// PSKs, or resumption PSKs of usage application the joiner kept);
    /// every member must know them too. Ignored by Welcome joins.
    pub external_commit_psks: Vec<codec::Psk>,
}

/// The group parameters for validating a received tree. The lifetime of
/// key_package leaves is not checked there: RFC 9420 §7.3 only recommends
/// it for received trees, and a long-lived group's tree holds leaves whose
/// KeyPackage lifetime ended long ago.
fn group_params(gi: &GroupInfo) -> GroupParams<'_> {
    GroupParams {
        group_id: &gi.group_context.group_id,
        cipher_suite: gi.group_context.cipher_suite,
        version: gi.group_context.version,
        required_capabilities: None,
        now: None,
        max_lifetime: None,
    }
}

/// Takes the tree from the GroupInfo's extension or the options, and
/// validates it against the GroupContext (RFC 9420 §12.4.3.1).
fn verified_tree(
    cs: &'static dyn hsmls_crypto::CipherSuiteProvider,
    gi: &GroupInfo,
    given: Option<codec::RatchetTree>,
    validator: &dyn CredentialValidator,
) -> Result<RatchetTree, GroupError> {
    let wire = match find_extension::<codec::RatchetTree>(&gi.extensions) {
        Some(t) => t.map_err(GroupError::Malformed)?,
        None => given.ok_or(GroupError::MissingRatchetTree)?,
    };
    let tree =
        UnverifiedTree::new(cs, wire)?.verify(&gi.group_context.tree_hash, &group_params(gi))?;
    for (_, leaf) in tree.leaves() {
        validator.validate_in_suite(
            gi.group_context.cipher_suite,
            &leaf.credential,
            &leaf.signature_key,
        )?;
    }
    Ok(tree)
}

fn check_group_info_signer(
    cs: &dyn hsmls_crypto::CipherSuiteProvider,
    tree: &RatchetTree,
    gi: &GroupInfo,
) -> Result<(), GroupError> {
    let signer = tree
        .leaf(gi.signer)
        .ok_or(GroupError::InvalidWelcome(WelcomeRule::SignerNotMember))?;
    verify_group_info(cs, gi, signer.signature_key.as_slice())
}

impl Group {
    /// Joins a group from a Welcome (RFC 9420 §12.4.3.1) addressed to the
    /// KeyPackage of `bundle`: decrypts the GroupSecrets with the init key
    /// in custody, decrypts and verifies the GroupInfo, validates the tree
    /// (from the `ratchet_tree` extension or `options.ratchet_tree`),
    /// derives the path keys from the path secret, checks the confirmation
    /// tag, and then destroys the used init key in custody (§9.2).
    /// Applications call [`crate::Client::join_from_welcome`].
    pub(crate) fn join_from_welcome(
        config: GroupConfig,
        signer: Signer,
        validator: Arc<dyn CredentialValidator>,
        bundle: &KeyPackageBundle,
        welcome: &[u8],
        options: JoinOptions,
    ) -> Result<Self, GroupError> {
        if bundle.key_package.leaf_node().signature_key != signer.signature_public_key() {
            return Err(GroupError::SignerMismatch);
        }
        let welcome = match MlsMessage::decode(welcome)
            .map_err(GroupError::Malformed)?
            .body
        {
            MlsMessageBody::Welcome(w) => w,
            _ => return Err(GroupError::UnexpectedMessage(MessageRule::NotAWelcome)),
        };
        // The group runs the suite of the KeyPackage it invites (RFC 9420
        // §12.4.3.1): the configured suite is the one of groups this client
        // creates, not a limit on the Welcomes it accepts.
        if welcome.cipher_suite != bundle.key_package.cipher_suite() {
            return Err(GroupError::UnsupportedCipherSuite(welcome.cipher_suite.0));
        }
        let mut config = config;
        config.cipher_suite = welcome.cipher_suite;
        let cs = suite_provider(config.cipher_suite)?;
        let custody = signer.custody.clone();
        let secrets = decrypt_group_secrets(
            cs,
            &welcome,
            bundle.key_package.reference(),
            &HpkeRecipient::Custody {
                custody: custody.as_ref(),
                key: &bundle.init_key,
            },
        )?;
        let joiner =
            JoinerSecret::from_secret(cs, Secret::from_slice(secrets.joiner_secret.as_slice()))?;
        let psk = super::commit::compute_psk_secret(cs, &options.psks, &secrets.psks)?;
        let welcome_secret = joiner_welcome_secret(cs, &joiner, psk.as_ref())?;
        let gi = decrypt_group_info(cs, &welcome_secret, &welcome.encrypted_group_info)?;
        if gi.group_context.cipher_suite != config.cipher_suite {
            return Err(GroupError::InvalidWelcome(WelcomeRule::CipherSuiteMismatch));
        }
        // §12.4.3.1: at most one resumption PSK of usage reinit or branch,
        // and then the new group is at epoch 1.
        let linked_psk = super::reinit::linked_psk_of(&secrets.psks, gi.group_context.epoch)?;
        let tree = verified_tree(cs, &gi, options.ratchet_tree, validator.as_ref())?;
        check_group_info_signer(cs, &tree, &gi)?;
        let own = tree
            .find_leaf(bundle.key_package.leaf_node())
            .ok_or(GroupError::InvalidWelcome(WelcomeRule::OwnLeafNotInTree))?;
        let mut private = TreeKemPrivate::new(own, bundle.encryption_key.clone());
        if bundle.is_last_resort() {
            // The leaf key is shared by every group joined with this
            // KeyPackage: the application destroys it with the bundle.
            private.mark_leaf_key_shared();
        }
        if let Some(ps) = &secrets.path_secret {
            let lca = tree_math::common_ancestor(
                own.node_index().map_err(crate::tree::TreeError::from)?,
                gi.signer
                    .node_index()
                    .map_err(crate::tree::TreeError::from)?,
            );
            private.join_at(&tree, lca, ps.path_secret.as_slice())?;
        }
        let context_bytes = gi.group_context.encode()?;
        let epoch_secret = joiner
            .member_secret(cs, psk.as_ref())
            .epoch_secret(cs, &context_bytes)?;
        let mut epoch = EpochSecrets::derive(cs, epoch_secret)?;
        verify_confirmation_tag(
            cs,
            &epoch.confirmation_key,
            &gi.group_context.confirmed_transcript_hash,
            &gi.confirmation_tag,
        )
        .map_err(|_| GroupError::InvalidConfirmationTag)?;
        let hashes = TranscriptHashes::from_group_info(
            cs,
            &gi.group_context.confirmed_transcript_hash,
            &gi.confirmation_tag,
        )?;
        let secret_tree = make_secret_tree(cs, &config, &mut epoch, tree.leaf_count())?;
        let state = EpochState {
            context: gi.group_context,
            tree,
            private,
            secrets: epoch,
            secret_tree,
            interim_transcript_hash: hashes.interim,
            confirmation_tag: gi.confirmation_tag,
        };
        // §9.2: the init key is used once, unless the KeyPackage is a
        // last-resort one (§16.8, draft-ietf-mls-extensions last_resort).
        if !bundle.is_last_resort()
            && let Err(e) = custody.destroy(&bundle.init_key)
        {
            tracing::warn!(error = %e, "could not destroy the used init key");
        }
        let mut group = Group::from_state(cs, config, signer, validator, state, options.psks);
        group.linked_psk = linked_psk;
        Ok(group)
    }

    /// Joins by an external commit (RFC 9420 §12.4.3.2) from a GroupInfo
    /// with `external_pub` (an `MLSMessage` or bare). Returns the group, in
    /// the new epoch, and the commit (a PublicMessage) to send. If the
    /// Delivery Service refuses the commit, drop the group. The commit
    /// carries a PreSharedKey proposal for each PSK of
    /// [`JoinOptions::external_commit_psks`]. Applications call
    /// [`crate::Client::join_by_external_commit`].
    pub(crate) fn join_by_external_commit(
        config: GroupConfig,
        signer: Signer,
        validator: Arc<dyn CredentialValidator>,
        group_info: &[u8],
        options: JoinOptions,
    ) -> Result<(Self, Vec<u8>), GroupError> {
        Self::external_commit(config, signer, validator, group_info, options, None)
    }

    /// Re-joins by an external commit that also removes this member's old
    /// leaf `old_leaf` (resync, RFC 9420 §12.4.3.2), e.g. after losing the
    /// group state. The old leaf must hold the same credential, or one the
    /// signer's is a valid successor of (a renewed certificate).
    /// Applications call [`crate::Client::rejoin_by_external_commit`].
    pub(crate) fn rejoin_by_external_commit(
        config: GroupConfig,
        signer: Signer,
        validator: Arc<dyn CredentialValidator>,
        group_info: &[u8],
        options: JoinOptions,
        old_leaf: crate::tree_math::LeafIndex,
    ) -> Result<(Self, Vec<u8>), GroupError> {
        Self::external_commit(
            config,
            signer,
            validator,
            group_info,
            options,
            Some(old_leaf),
        )
    }

    fn external_commit(
        config: GroupConfig,
        signer: Signer,
        validator: Arc<dyn CredentialValidator>,
        group_info: &[u8],
        options: JoinOptions,
        remove_old_leaf: Option<crate::tree_math::LeafIndex>,
    ) -> Result<(Self, Vec<u8>), GroupError> {
        let gi = match MlsMessage::decode(group_info) {
            Ok(MlsMessage {
                body: MlsMessageBody::GroupInfo(gi),
            }) => gi,
            Ok(_) => return Err(GroupError::UnexpectedMessage(MessageRule::NotAGroupInfo)),
            Err(_) => GroupInfo::decode(group_info).map_err(GroupError::Malformed)?,
        };
        if gi.group_context.cipher_suite != config.cipher_suite {
            return Err(GroupError::UnsupportedCipherSuite(
                gi.group_context.cipher_suite.0,
            ));
        }
        let cs = suite_provider(config.cipher_suite)?;
        validator.validate_in_suite(
            config.cipher_suite,
            &signer.credential,
            &signer.signature_public_key(),
        )?;
        let mut tree = verified_tree(cs, &gi, options.ratchet_tree, validator.as_ref())?;
        check_group_info_signer(cs, &tree, &gi)?;
        let external_pub = find_extension::<ExternalPub>(&gi.extensions)
            .ok_or(GroupError::NoExternalPub)?
            .map_err(GroupError::Malformed)?;
        let (kem_output, init_secret) = external_init(cs, external_pub.external_pub.as_slice())?;
        let current = gi.group_context.clone();
        let interim_before = TranscriptHashes::from_group_info(
            cs,
            &current.confirmed_transcript_hash,
            &gi.confirmation_tag,
        )?
        .interim;

        let mut proposals = vec![ProposalOrRef::Proposal(Proposal::ExternalInit(
            ExternalInit { kem_output },
        ))];
        if let Some(old) = remove_old_leaf {
            let leaf = tree.leaf(old).ok_or(GroupError::NotAMember(old))?;
            super::sender::check_resync_removal(
                validator.as_ref(),
                &leaf.credential,
                &signer.credential,
            )?;
            tree.remove_leaf(old)?;
            proposals.push(ProposalOrRef::Proposal(Proposal::Remove(codec::Remove {
                removed: old,
            })));
        }
        // §12.4.3.2: PreSharedKey proposals by value may join the
        // ExternalInit; their psk_secret enters the key schedule.
        let mut psk_ids: Vec<codec::PreSharedKeyId> = Vec::new();
        for psk in &options.external_commit_psks {
            if let codec::Psk::Resumption(r) = psk
                && r.usage != codec::ResumptionPskUsage::Application
            {
                return Err(GroupError::InvalidProposal(
                    ProposalRule::LinkedPskInNormalCommit,
                ));
            }
            if psk_ids.iter().any(|id| &id.psk == psk) {
                return Err(GroupError::InvalidProposal(ProposalRule::DuplicatePsk));
            }
            let mut psk_nonce = vec![0; cs.hash_len()];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut psk_nonce);
            psk_ids.push(codec::PreSharedKeyId {
                psk: psk.clone(),
                psk_nonce,
            });
        }
        let psk_secret = super::commit::compute_psk_secret(cs, &options.psks, &psk_ids)?;
        proposals.extend(psk_ids.into_iter().map(|psk| {
            ProposalOrRef::Proposal(Proposal::PreSharedKey(codec::PreSharedKey { psk }))
        }));
        // The joiner's leaf enters at the leftmost free position, then its
        // UpdatePath replaces it and its direct path.
        let params = LeafNodeParams {
            credential: signer.credential.clone(),
            capabilities: crate::key_package::default_capabilities(
                config.cipher_suite,
                signer.credential.credential_type(),
            ),
            extensions: Vec::new(),
        };
        let placeholder = crate::tree::sign_leaf_node(
            cs,
            signer.custody.as_ref(),
            &signer.signature_key,
            HpkePublicKey(external_pub.external_pub.0.clone()),
            &params,
            codec::LeafNodeSource::Update,
            Some((&current.group_id, tree.free_leaf())),
        )?;
        let own = tree.add_leaf(placeholder)?;
        let custody = signer.custody.clone();
        let prepared = prepare_update_path(
            &mut tree,
            own,
            &current.group_id,
            &params,
            custody.as_ref(),
            &signer.signature_key,
        )?;
        let fresh_key = prepared.leaf_key().clone();
        let result = (|| {
            let mut provisional = current.clone();
            provisional.epoch = provisional
                .epoch
                .checked_add(1)
                .ok_or(GroupError::InvalidCommit(CommitRule::EpochOverflow))?;
            provisional.tree_hash = tree.tree_hash()?.to_vec();
            let created = prepared.encrypt(&tree, &provisional.encode()?, &[])?;
            let content = FramedContent {
                group_id: current.group_id.clone(),
                epoch: current.epoch,
                sender: Sender::NewMemberCommit,
                authenticated_data: Vec::new(),
                body: FramedContentBody::Commit(Commit {
                    proposals,
                    path: Some(created.update_path),
                }),
            };
            let mut signed = sign_content(
                cs,
                custody.as_ref(),
                &signer.signature_key,
                WireFormat::PUBLIC_MESSAGE,
                content,
                Some(&current),
            )?;
            let confirmed = confirmed_transcript_hash(
                cs,
                &interim_before,
                &ConfirmedTranscriptHashInput {
                    wire_format: signed.wire_format,
                    content: &signed.content,
                    signature: &signed.auth.signature,
                },
            )?;
            let mut context = provisional;
            context.confirmed_transcript_hash = confirmed.to_vec();
            let next = run_key_schedule(
                cs,
                &init_secret,
                Some(&created.commit_secret),
                psk_secret.as_ref(),
                context,
            )?;
            let tag = confirmation_tag(cs, &next.schedule.epoch.confirmation_key, &confirmed);
            signed.auth.confirmation_tag = Some(tag.clone());
            let interim = interim_transcript_hash(
                cs,
                &confirmed,
                &InterimTranscriptHashInput {
                    confirmation_tag: &tag,
                },
            )?;
            let message = protect_public(cs, signed, None)?;
            let bytes = MlsMessage {
                body: MlsMessageBody::PublicMessage(message),
            }
            .encode()?;
            let mut secrets = next.schedule.epoch;
            let secret_tree = make_secret_tree(cs, &config, &mut secrets, tree.leaf_count())?;
            Ok::<_, GroupError>((
                EpochState {
                    context: next.context,
                    tree,
                    private: created.private,
                    secrets,
                    secret_tree,
                    interim_transcript_hash: interim.to_vec(),
                    confirmation_tag: tag,
                },
                bytes,
            ))
        })();
        match result {
            Ok((state, bytes)) => Ok((
                Group::from_state(cs, config, signer, validator, state, options.psks),
                bytes,
            )),
            Err(e) => {
                let _ = custody.destroy(&fresh_key);
                Err(e)
            }
        }
    }
}
