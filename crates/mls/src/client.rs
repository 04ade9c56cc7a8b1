//! The client (RFC 9420 §1: "an agent that uses this protocol to establish
//! shared cryptographic state with other clients"): one identity's
//! [`Signer`], [`CredentialValidator`] and [`GroupConfig`], gathered once
//! so that every group it creates or joins and every KeyPackage it
//! generates uses them.

use std::fmt;
use std::sync::Arc;

use hsmls_custody::{KeyCustody, StateSealer};

use crate::codec::{Extension, Proposal};
use crate::credential::{CredentialValidator, Signer};
use crate::group::{CommitOutput, Group, GroupConfig, GroupError, JoinOptions, UnixTime};
use crate::key_package::{
    KeyPackage, KeyPackageBundle, KeyPackageConfig, KeyPackageError, KeyPackageIn,
};
use crate::state::{EpochRecord, SavedGroup, SavedKeyPackage, StateError, TreeRecord};
use crate::tree_math::LeafIndex;

/// From this many KeyPackages on, [`Client::validate_key_packages`] uses
/// several threads.
const PARALLEL_KEY_PACKAGES: usize = 16;

/// An MLS client: the identity ([`Signer`]: credential and signature key
/// in custody, which also holds the client's HPKE keys), the
/// [`CredentialValidator`] that decides which credentials it accepts
/// (its Authentication Service, RFC 9750 §5), and the [`GroupConfig`] of
/// the groups it creates and joins.
///
/// It generates KeyPackages, validates received ones, creates groups,
/// joins them (by Welcome, external commit, reinitialization or branch)
/// and loads saved groups and KeyPackage bundles. Cloning is cheap (the
/// custody and the validator are shared); a client with another group
/// policy is [`Client::with_group_config`] of a clone.
#[derive(Clone)]
pub struct Client {
    signer: Signer,
    validator: Arc<dyn CredentialValidator>,
    config: GroupConfig,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("signer", &self.signer)
            .field("validator", &self.validator)
            .field("config", &self.config)
            .finish()
    }
}

impl Client {
    /// A client with `signer`'s identity that validates credentials with
    /// `validator`, and the default [`GroupConfig`] (suite 0x0002).
    pub fn new(signer: Signer, validator: Arc<dyn CredentialValidator>) -> Self {
        Client {
            signer,
            validator,
            config: GroupConfig::default(),
        }
    }

    /// This client with `config` for the groups it creates and joins from
    /// now on (groups already made keep theirs; see
    /// [`Group::set_config`]).
    #[must_use]
    pub fn with_group_config(mut self, config: GroupConfig) -> Self {
        self.config = config;
        self
    }

    /// The configuration of the groups this client creates and joins.
    pub fn group_config(&self) -> &GroupConfig {
        &self.config
    }

    /// The client's identity.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// The client's credential validator.
    pub fn validator(&self) -> &Arc<dyn CredentialValidator> {
        &self.validator
    }

    /// The custody backend holding the client's keys.
    pub fn custody(&self) -> &Arc<dyn KeyCustody> {
        &self.signer.custody
    }

    // ----- KeyPackages -----

    /// Generates a KeyPackage (RFC 9420 §10) and its private keys: the
    /// init key and the leaf encryption key are fresh HPKE keys in the
    /// client's custody, and the LeafNode and the KeyPackage are signed
    /// with its signature key. Publish [`KeyPackageBundle::to_bytes`];
    /// keep the bundle (or [`Client::save_key_package`]) to join from the
    /// Welcome that uses it.
    pub fn generate_key_package(
        &self,
        config: &KeyPackageConfig,
    ) -> Result<KeyPackageBundle, KeyPackageError> {
        KeyPackageBundle::generate(config, &self.signer)
    }

    /// Decodes a received KeyPackage (an `MLSMessage` or a bare
    /// KeyPackage) and validates it (RFC 9420 §10.1) for this client's
    /// cipher suite at time `now`, with this client's credential
    /// validator: the [`KeyPackage`] that [`Group::add_members`] and
    /// [`Group::propose_add`] take.
    pub fn validate_key_package(
        &self,
        key_package: &[u8],
        now: UnixTime,
    ) -> Result<KeyPackage, KeyPackageError> {
        KeyPackageIn::from_bytes(key_package)?.validate(
            self.config.cipher_suite,
            self.validator.as_ref(),
            now,
        )
    }

    /// [`Client::validate_key_package`] for many KeyPackages at once (a
    /// commit adding thousands of members): the signature checks are
    /// spread over the available cores. Returns the KeyPackages in input
    /// order, or the error of the first invalid one (in input order);
    /// validate them one by one to sort out which ones are invalid.
    pub fn validate_key_packages<B: AsRef<[u8]> + Sync>(
        &self,
        key_packages: &[B],
        now: UnixTime,
    ) -> Result<Vec<KeyPackage>, KeyPackageError> {
        crate::parallel::map(key_packages, PARALLEL_KEY_PACKAGES, |kp| {
            self.validate_key_package(kp.as_ref(), now)
        })
        .map_err(KeyPackageError::LeafNode)?
        .into_iter()
        .collect()
    }

    /// Saves a KeyPackage bundle this client generated: the KeyPackage and
    /// the custody URIs of its keys, sealed with `sealer` (see
    /// [`crate::state`]). Fails with [`StateError::KeyMismatch`] for a
    /// bundle of another signature key.
    pub fn save_key_package(
        &self,
        bundle: &KeyPackageBundle,
        sealer: &dyn StateSealer,
    ) -> Result<SavedKeyPackage, StateError> {
        bundle.save(&self.signer, sealer)
    }

    /// Loads a bundle saved by [`Client::save_key_package`]: the blob must
    /// be the bundle of the KeyPackage `reference`, sealed by `sealer`'s
    /// key, and its keys in this client's custody; the KeyPackage must be
    /// signed by this client's signature key
    /// ([`StateError::KeyMismatch`] otherwise). Nothing changes on failure.
    pub fn load_key_package(
        &self,
        sealer: &dyn StateSealer,
        reference: &[u8],
        data: &[u8],
    ) -> Result<KeyPackageBundle, StateError> {
        let (bundle, signer) =
            KeyPackageBundle::load(sealer, self.signer.custody.clone(), reference, data)?;
        if signer.signature_key.public_key() != self.signer.signature_key.public_key() {
            return Err(StateError::KeyMismatch {
                uri: signer.signature_key.uri().to_owned(),
            });
        }
        Ok(bundle)
    }

    // ----- groups -----

    /// Creates a one-member group (RFC 9420 §11) with this client at
    /// leaf 0 and the GroupContext `extensions`; its leaf encryption key
    /// is generated in the client's custody. Use a fresh random
    /// `group_id` ([`crate::random_group_id`]).
    pub fn create_group(
        &self,
        group_id: Vec<u8>,
        extensions: Vec<Extension>,
        now: UnixTime,
    ) -> Result<Group, GroupError> {
        Group::create(
            self.config.clone(),
            self.signer.clone(),
            self.validator.clone(),
            group_id,
            extensions,
            now,
        )
    }

    /// Joins a group from a Welcome (RFC 9420 §12.4.3.1) addressed to the
    /// KeyPackage of `bundle` (one this client generated): decrypts the
    /// GroupSecrets with the init key in custody, decrypts and verifies
    /// the GroupInfo, validates the tree (from the `ratchet_tree`
    /// extension or [`JoinOptions::ratchet_tree`]), derives the path keys,
    /// checks the confirmation tag, and then destroys the used init key in
    /// custody (§9.2; not for a last-resort KeyPackage). The KeyPackage
    /// must be signed by this client's signature key
    /// ([`GroupError::SignerMismatch`] otherwise).
    pub fn join_from_welcome(
        &self,
        bundle: &KeyPackageBundle,
        welcome: &[u8],
        options: JoinOptions,
    ) -> Result<Group, GroupError> {
        Group::join_from_welcome(
            self.config.clone(),
            self.signer.clone(),
            self.validator.clone(),
            bundle,
            welcome,
            options,
        )
    }

    /// Joins by an external commit (RFC 9420 §12.4.3.2) from a GroupInfo
    /// with `external_pub` (an `MLSMessage` or bare). Returns the group,
    /// in the new epoch, and the commit (a PublicMessage) to send; if the
    /// Delivery Service refuses the commit, drop the group. The commit
    /// carries a PreSharedKey proposal for each PSK of
    /// [`JoinOptions::external_commit_psks`].
    pub fn join_by_external_commit(
        &self,
        group_info: &[u8],
        options: JoinOptions,
    ) -> Result<(Group, Vec<u8>), GroupError> {
        Group::join_by_external_commit(
            self.config.clone(),
            self.signer.clone(),
            self.validator.clone(),
            group_info,
            options,
        )
    }

    /// Re-joins by an external commit that also removes this client's old
    /// leaf `old_leaf` (resync, RFC 9420 §12.4.3.2), e.g. after losing the
    /// group state. The old leaf must hold the same credential, or one
    /// this client's is a valid successor of
    /// ([`CredentialValidator::valid_successor`]: a renewed certificate).
    pub fn rejoin_by_external_commit(
        &self,
        group_info: &[u8],
        options: JoinOptions,
        old_leaf: LeafIndex,
    ) -> Result<(Group, Vec<u8>), GroupError> {
        Group::rejoin_by_external_commit(
            self.config.clone(),
            self.signer.clone(),
            self.validator.clone(),
            group_info,
            options,
            old_leaf,
        )
    }

    /// Creates the group that reinitializes `old` (RFC 9420 §11.2 step 3)
    /// once a ReInit was committed there: the ReInit's group id, version,
    /// suite (which must be this client's) and extensions, with this client
    /// at leaf 0, and one commit adding `key_packages` (one for every
    /// other member of `old`) with a `reinit` PSK of `old`'s last epoch.
    /// The new group is returned at epoch 1 with the commit output, whose
    /// Welcome goes to the members.
    pub fn reinit_group(
        &self,
        old: &Group,
        key_packages: &[KeyPackage],
        now: UnixTime,
    ) -> Result<(Group, CommitOutput), GroupError> {
        old.reinit_group(
            self.config.clone(),
            self.signer.clone(),
            self.validator.clone(),
            key_packages,
            now,
        )
    }

    /// Joins the group that reinitializes `old` from its Welcome (RFC 9420
    /// §11.2, §12.4.3.1): `old` (closed by its ReInit) supplies the
    /// `reinit` PSK; the new group must be at epoch 1, match the committed
    /// ReInit, have been keyed with `old`'s last-epoch `reinit` PSK, and
    /// hold every member of `old`.
    pub fn join_reinit(
        &self,
        old: &Group,
        bundle: &KeyPackageBundle,
        welcome: &[u8],
        options: JoinOptions,
    ) -> Result<Group, GroupError> {
        old.join_reinit(
            self.config.clone(),
            self.signer.clone(),
            self.validator.clone(),
            bundle,
            welcome,
            options,
        )
    }

    /// Branches a subgroup of `old` (RFC 9420 §11.3): a new group
    /// `group_id` with `old`'s version and suite (this client's suite must
    /// be it), this client at leaf 0, adding `key_packages` (fresh ones of
    /// some members of `old`) with a `branch` PSK of `old`'s current epoch.
    /// Returned at epoch 1 with the commit output.
    pub fn branch(
        &self,
        old: &Group,
        group_id: Vec<u8>,
        extensions: Vec<Extension>,
        key_packages: &[KeyPackage],
        now: UnixTime,
    ) -> Result<(Group, CommitOutput), GroupError> {
        old.branch(
            self.config.clone(),
            self.signer.clone(),
            self.validator.clone(),
            group_id,
            extensions,
            key_packages,
            now,
        )
    }

    /// Joins a subgroup branched from `old` from its Welcome (RFC 9420
    /// §11.3): `old` supplies the `branch` PSK (any retained epoch); the
    /// new group must be at epoch 1, have `old`'s version and suite, and
    /// hold only members of `old`.
    pub fn join_branch(
        &self,
        old: &Group,
        bundle: &KeyPackageBundle,
        welcome: &[u8],
        options: JoinOptions,
    ) -> Result<Group, GroupError> {
        old.join_branch(
            self.config.clone(),
            self.signer.clone(),
            self.validator.clone(),
            bundle,
            welcome,
            options,
        )
    }

    /// Loads a group saved by [`Group::save`] or [`Group::save_changes`]:
    /// opens the state blob with `sealer` (it must be a state of
    /// `group_id`, sealed by this sealer's key), builds the ratchet tree
    /// from `tree_records` (every chunk the state lists, each the record
    /// written by the save it lists: [`StateError::MissingTreeRecord`],
    /// [`StateError::ExtraTreeRecord`], [`StateError::TreeRecordMismatch`]
    /// otherwise), finds the member's keys in this client's custody by
    /// their URIs, and attaches the records of the retained past epochs
    /// from `epoch_records` (records of other epochs are ignored). The
    /// group keeps the signature key and credential it was saved with, and
    /// validates the credentials it meets from now on with this client's
    /// validator; the loaded records count as its last confirmed save
    /// ([`Group::save_changes`]). Nothing changes on failure.
    pub fn load_group(
        &self,
        sealer: &dyn StateSealer,
        group_id: &[u8],
        state: &[u8],
        tree_records: &[TreeRecord],
        epoch_records: &[EpochRecord],
    ) -> Result<Group, StateError> {
        Group::load(
            sealer,
            self.signer.custody.clone(),
            self.validator.clone(),
            group_id,
            state,
            tree_records,
            epoch_records,
        )
    }

    /// [`Client::load_group`] of everything a store read back.
    pub fn load_saved_group(
        &self,
        sealer: &dyn StateSealer,
        saved: &SavedGroup,
    ) -> Result<Group, StateError> {
        self.load_group(
            sealer,
            &saved.group_id,
            &saved.state,
            &saved.tree_records,
            &saved.epoch_records,
        )
    }

    // ----- proposals from outside a group -----

    /// A proposal by this client as the external sender at
    /// `sender_index` of a group's `external_senders` extension (RFC 9420
    /// §12.1.8.1; e.g. a Delivery Service removing a member), for `epoch`
    /// of the group `group_id`, as a PublicMessage. Allowed proposals: Add,
    /// Remove, PreSharedKey, ReInit, GroupContextExtensions.
    pub fn external_proposal(
        &self,
        group_id: &[u8],
        epoch: u64,
        sender_index: u32,
        proposal: Proposal,
    ) -> Result<crate::ProposalMessage, GroupError> {
        crate::group::external_proposal(
            &self.signer,
            self.config.cipher_suite,
            group_id,
            epoch,
            sender_index,
            proposal,
        )
    }

    /// This client's proposal to add itself to the group `group_id` at
    /// `epoch` with `key_package` (one of its own; `new_member_proposal`,
    /// RFC 9420 §12.1.8), as a PublicMessage signed with the KeyPackage's
    /// signature key.
    pub fn new_member_add_proposal(
        &self,
        key_package: &KeyPackage,
        group_id: &[u8],
        epoch: u64,
    ) -> Result<crate::ProposalMessage, GroupError> {
        if key_package.leaf_node().signature_key != self.signer.signature_public_key() {
            return Err(GroupError::SignerMismatch);
        }
        crate::group::new_member_add_proposal(&self.signer, key_package, group_id, epoch)
    }
}
