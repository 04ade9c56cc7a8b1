//! The `mls_client.MLSClient` service over the hsmls engine.
//!
//! The harness names objects by `u32` ids: group states (one member's
//! view of one group), transactions (a KeyPackage awaiting its Welcome)
//! and external signers. All three share one id space, since `StorePSK`
//! takes a "state or transaction" id.
//!
//! Private keys stay in the [`KeyCustody`] backend: the `*_priv` fields of
//! `CreateKeyPackageResponse` and `NewMemberAddProposalResponse` (meant
//! for passive-client test vectors) are always empty.
//!
//! ReInit (RFC 9420 §11.2): `HandleReInitCommit` / `HandlePendingReInitCommit`
//! move the closed group under a "reinit id" with a fresh KeyPackage,
//! which `ReInitWelcome` / `HandleReInitWelcome` consume. Branching (§11.3)
//! keeps the old group and adds the branch as a new state.
//!
//! `ExternalJoin.psks` carry each PSK by value (id and secret): the
//! external commit injects them as PreSharedKey proposals (RFC 9420
//! §12.4.3.2), and the members that handle it must have the same PSKs
//! from `StorePSK`.
//! Proposals from external senders are produced by `ExternalSignerProposal`
//! and received through `Group::process_incoming` like any other proposal
//! (accepted once the engine supports external senders).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use hsmls::KeyPackageIn;
use hsmls::PskStore;
use hsmls::internal::codec::{self, GroupInfo, MlsMessage, MlsMessageBody};
use hsmls::internal::group::{external_proposal, new_member_add_proposal};
use hsmls::wire::LeafIndex;
use hsmls::wire::{
    Credential, CredentialType, Decode, Encode, ExtensionType, ExternalSender, ExternalSenders,
    Proposal,
};
use hsmls::{
    BasicCredentialValidator, Client, CommitOptions, CredentialValidator, Group, GroupConfig,
    HandshakeFraming, JoinOptions, KeyPackage, KeyPackageBundle, KeyPackageConfig,
    ProcessedMessage, ProposalMessage, Signer,
};
use hsmls_crypto::{CipherSuite as SuiteId, CipherSuiteProvider, Secret};
use hsmls_custody::KeyCustody;
use rand_core::{OsRng, RngCore};
use tonic::{Request, Response, Status};

use crate::error::InteropError;
use crate::proto::mls_client_server::MlsClient;
use crate::proto::*;

/// The cipher suites this client offers (RFC 9420 §17.1), in code-point
/// order: every suite the engine implements. Each RPC runs in the suite of
/// its request (or of the GroupInfo, KeyPackage or group it names).
pub const SUPPORTED_SUITES: [u16; 5] = [0x0001, 0x0002, 0x0003, 0x0005, 0x0007];

/// How long generated KeyPackages are valid (90 days).
const KEY_PACKAGE_VALIDITY: u64 = 90 * 24 * 3600;

/// Past epochs kept (for late application messages and resumption PSKs):
/// harness scripts refer to a few epochs back.
const MAX_PAST_EPOCHS: usize = 8;

/// Most bytes an exporter request may ask for (HKDF-Expand's limit with
/// SHA-256 is 255 * 32).
const MAX_EXPORT_LEN: u32 = 255 * 32;

/// One member's group state, with the handshake messages it already knows
/// in the current epoch (its own proposals and those it processed), so a
/// by-reference list that repeats them is not processed twice.
struct GroupState {
    group: Group,
    known_epoch: u64,
    known: HashSet<Vec<u8>>,
    /// The commit message of this member's pending commit, so that a
    /// HandleCommit of it (as older runners send) merges it.
    pending_commit: Option<Vec<u8>>,
}

impl GroupState {
    fn new(group: Group) -> Self {
        GroupState {
            known_epoch: group.epoch(),
            group,
            known: HashSet::new(),
            pending_commit: None,
        }
    }

    fn known_set(&mut self) -> &mut HashSet<Vec<u8>> {
        if self.known_epoch != self.group.epoch() {
            self.known.clear();
            self.known_epoch = self.group.epoch();
        }
        &mut self.known
    }

    /// Processes proposals received by reference (skipping ones already
    /// known) so that they are cached for the commit.
    fn absorb_proposals(&mut self, proposals: &[Vec<u8>], now: u64) -> Result<(), InteropError> {
        for p in proposals {
            if self.known_set().contains(p) {
                continue;
            }
            match self.group.process_incoming(p, now)? {
                ProcessedMessage::Proposal { .. } => {
                    self.known_set().insert(p.clone());
                }
                _ => return Err(InteropError::UnexpectedMessage("not a proposal")),
            }
        }
        Ok(())
    }

    /// Sends one of this member's proposals and remembers it.
    fn sent(&mut self, proposal: ProposalMessage) -> Response<ProposalResponse> {
        let proposal = proposal.into_message();
        self.known_set().insert(proposal.clone());
        Response::new(ProposalResponse { proposal })
    }
}

/// A KeyPackage awaiting a Welcome: its private keys in custody and the
/// PSKs stored for the join.
struct Transaction {
    signer: Signer,
    bundle: KeyPackageBundle,
    psks: PskStore,
}

impl Transaction {
    /// Options to join with this KeyPackage: `ratchet_tree` when given out
    /// of band, and the PSKs stored for the transaction.
    fn join_options(&self, ratchet_tree: Option<codec::RatchetTree>) -> JoinOptions {
        let mut join = JoinOptions::default();
        join.ratchet_tree = ratchet_tree;
        join.psks = self.psks.clone();
        join
    }
}

/// What an id names.
enum Entry {
    Group(Box<GroupState>),
    Transaction(Box<Transaction>),
    ExternalSigner(Signer),
    ReInit(Box<ReInitState>),
}

/// A member between a merged ReInit commit and the new group: the closed
/// old group (it supplies the `reinit` PSK) and a fresh KeyPackage for the
/// new group.
struct ReInitState {
    old: GroupState,
    tx: Transaction,
}

struct Registry {
    next_id: u32,
    entries: HashMap<u32, Entry>,
}

impl Registry {
    fn insert(&mut self, entry: Entry) -> u32 {
        // Ids start at 1 (0 is what an unset proto field reads as).
        self.next_id = self.next_id.wrapping_add(1).max(1);
        while self.entries.contains_key(&self.next_id) {
            self.next_id = self.next_id.wrapping_add(1).max(1);
        }
        self.entries.insert(self.next_id, entry);
        self.next_id
    }

    fn group(&mut self, id: u32) -> Result<&mut GroupState, InteropError> {
        match self.entries.get_mut(&id) {
            Some(Entry::Group(g)) => Ok(g),
            Some(_) => Err(InteropError::WrongKind {
                id,
                expected: "group state",
            }),
            None => Err(InteropError::UnknownId(id)),
        }
    }

    /// Stores a group that has just been joined and returns its state id and
    /// epoch_authenticator; on failure puts `kept` (the consumed
    /// transaction or ReInit state) back under `id` for another attempt.
    fn store_joined(
        &mut self,
        joined: Result<Group, hsmls::GroupError>,
        id: u32,
        kept: Entry,
    ) -> Result<(u32, Vec<u8>), InteropError> {
        match joined {
            Ok(group) => {
                let epoch_authenticator = group.epoch_authenticator().to_vec();
                Ok((self.insert_group(group), epoch_authenticator))
            }
            Err(e) => {
                self.entries.insert(id, kept);
                Err(e.into())
            }
        }
    }

    fn insert_group(&mut self, group: Group) -> u32 {
        self.insert(Entry::Group(Box::new(GroupState::new(group))))
    }

    /// Stores a new ReInit or branch group at epoch 1 and answers with its
    /// Welcome (and its tree, when asked for out of band).
    fn insert_subgroup(
        &mut self,
        group: Group,
        out: hsmls::CommitOutput,
        external_tree: bool,
    ) -> Result<CreateSubgroupResponse, InteropError> {
        let epoch_authenticator = group.epoch_authenticator().to_vec();
        let ratchet_tree = match (&out.ratchet_tree, external_tree) {
            (Some(t), true) => t.encode()?,
            _ => Vec::new(),
        };
        let state_id = self.insert_group(group);
        Ok(CreateSubgroupResponse {
            state_id,
            welcome: out.welcome.unwrap_or_default(),
            ratchet_tree,
            epoch_authenticator,
        })
    }

    fn take_transaction(&mut self, id: u32) -> Result<Transaction, InteropError> {
        match self.entries.remove(&id) {
            Some(Entry::Transaction(t)) => Ok(*t),
            Some(other) => {
                self.entries.insert(id, other);
                Err(InteropError::WrongKind {
                    id,
                    expected: "transaction",
                })
            }
            None => Err(InteropError::UnknownId(id)),
        }
    }

    fn take_reinit(&mut self, id: u32) -> Result<ReInitState, InteropError> {
        match self.entries.remove(&id) {
            Some(Entry::ReInit(r)) => Ok(*r),
            Some(other) => {
                self.entries.insert(id, other);
                Err(InteropError::WrongKind {
                    id,
                    expected: "reinit id",
                })
            }
            None => Err(InteropError::UnknownId(id)),
        }
    }

    fn external_signer(&self, id: u32) -> Result<&Signer, InteropError> {
        match self.entries.get(&id) {
            Some(Entry::ExternalSigner(s)) => Ok(s),
            Some(_) => Err(InteropError::WrongKind {
                id,
                expected: "external signer",
            }),
            None => Err(InteropError::UnknownId(id)),
        }
    }
}

/// The interop client: group states by id over one key custody backend.
pub struct InteropClient {
    custody: Arc<dyn KeyCustody>,
    validator: Arc<dyn CredentialValidator>,
    registry: Mutex<Registry>,
}

impl std::fmt::Debug for InteropClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InteropClient")
            .field("custody", &self.custody)
            .finish_non_exhaustive()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The suite of a request, if this client offers it.
fn check_suite(suite: u32) -> Result<codec::CipherSuite, InteropError> {
    SUPPORTED_SUITES
        .into_iter()
        .find(|&s| u32::from(s) == suite)
        .map(codec::CipherSuite)
        .ok_or(InteropError::UnsupportedCipherSuite(suite))
}

fn provider(suite: codec::CipherSuite) -> Result<&'static dyn CipherSuiteProvider, InteropError> {
    Ok(SuiteId(suite.0).provider()?)
}

/// A group configuration of `suite` with the handshake framing asked for.
fn group_config(suite: codec::CipherSuite, encrypt_handshake: bool) -> GroupConfig {
    let mut config = GroupConfig::default();
    config.cipher_suite = suite;
    config.handshake_framing = if encrypt_handshake {
        HandshakeFraming::Private
    } else {
        HandshakeFraming::Public
    };
    config.max_past_epochs = MAX_PAST_EPOCHS;
    config
}

/// Checks a KeyPackage's suite and credential type before the engine sees
/// it, so that these answer with a clear INVALID_ARGUMENT.
fn check_key_package(bytes: &[u8]) -> Result<(), InteropError> {
    let kp = KeyPackageIn::from_bytes(bytes)?;
    check_suite(u32::from(kp.0.cipher_suite.0))?;
    check_credential(&kp.0.leaf_node.credential)
}

fn check_credential(credential: &Credential) -> Result<(), InteropError> {
    let t = credential.credential_type();
    if t == CredentialType::BASIC {
        Ok(())
    } else {
        Err(InteropError::UnsupportedCredentialType(t.0))
    }
}

fn extensions_from_proto(list: &[Extension]) -> Result<Vec<codec::Extension>, InteropError> {
    list.iter()
        .map(|e| {
            let t = u16::try_from(e.extension_type).map_err(|_| {
                InteropError::InvalidArgument(format!(
                    "extension type {} does not fit in 16 bits",
                    e.extension_type
                ))
            })?;
            Ok(codec::Extension {
                extension_type: ExtensionType(t),
                extension_data: e.extension_data.clone(),
            })
        })
        .collect()
}

fn decode_group_info(bytes: &[u8]) -> Result<GroupInfo, InteropError> {
    match MlsMessage::decode(bytes) {
        Ok(MlsMessage {
            body: MlsMessageBody::GroupInfo(gi),
        }) => Ok(gi),
        Ok(_) => Err(InteropError::UnexpectedMessage("not a GroupInfo")),
        Err(_) => Ok(GroupInfo::decode(bytes)?),
    }
}

fn decode_tree(bytes: &[u8]) -> Result<Option<codec::RatchetTree>, InteropError> {
    if bytes.is_empty() {
        Ok(None)
    } else {
        Ok(Some(codec::RatchetTree::decode(bytes)?))
    }
}

/// The leaf holding the basic credential `identity`, in a tree given as
/// the `ratchet_tree` array (leaves at even node indices).
fn leaf_with_identity(tree: &codec::RatchetTree, identity: &[u8]) -> Option<LeafIndex> {
    tree.0
        .iter()
        .step_by(2)
        .enumerate()
        .find_map(|(i, node)| match node {
            Some(codec::Node::Leaf(leaf))
                if leaf.credential == Credential::Basic(identity.to_vec()) =>
            {
                u32::try_from(i).ok().map(LeafIndex)
            }
            _ => None,
        })
}

fn member_with_identity(group: &Group, identity: &[u8]) -> Result<LeafIndex, InteropError> {
    group
        .members()
        .into_iter()
        .find(|m| m.credential == Credential::Basic(identity.to_vec()))
        .map(|m| m.index)
        .ok_or_else(|| InteropError::NoSuchMember(String::from_utf8_lossy(identity).into_owned()))
}

/// Destroys the signature key of a signer that was not kept (its RPC
/// failed after generating it), so that no key is left in custody.
fn discard_signer(signer: &Signer) {
    if let Err(e) = signer.custody.destroy(&signer.signature_key) {
        tracing::warn!(error = %e, "could not destroy an unused signature key");
    }
}

fn random_nonce(cs: &dyn CipherSuiteProvider) -> Vec<u8> {
    let mut nonce = vec![0; cs.hash_len()];
    OsRng.fill_bytes(&mut nonce);
    nonce
}

/// A `ProposalDescription` of the harness, parsed.
enum Description {
    Add(Vec<u8>),
    Remove(Vec<u8>),
    ExternalPsk(Vec<u8>),
    ResumptionPsk(u64),
    GroupContextExtensions(Vec<codec::Extension>),
    ReInit {
        group_id: Vec<u8>,
        cipher_suite: codec::CipherSuite,
        extensions: Vec<codec::Extension>,
    },
}

impl Description {
    fn parse(d: &ProposalDescription) -> Result<Self, InteropError> {
        Ok(match d.proposal_type.as_slice() {
            b"add" => {
                check_key_package(&d.key_package)?;
                Description::Add(d.key_package.clone())
            }
            b"remove" => Description::Remove(d.removed_id.clone()),
            b"externalPSK" => Description::ExternalPsk(d.psk_id.clone()),
            b"resumptionPSK" => Description::ResumptionPsk(d.epoch_id),
            b"groupContextExtensions" => {
                Description::GroupContextExtensions(extensions_from_proto(&d.extensions)?)
            }
            b"reinit" => Description::ReInit {
                group_id: d.group_id.clone(),
                cipher_suite: check_suite(d.cipher_suite)?,
                extensions: extensions_from_proto(&d.extensions)?,
            },
            other => {
                return Err(InteropError::InvalidArgument(format!(
                    "unknown proposal type {:?}",
                    String::from_utf8_lossy(other)
                )));
            }
        })
    }
}

type RpcResult<T> = Result<Response<T>, Status>;

impl InteropClient {
    /// A client whose members' keys live in `custody`.
    pub fn new(custody: Arc<dyn KeyCustody>) -> Self {
        InteropClient {
            custody,
            validator: Arc::new(BasicCredentialValidator::default()),
            registry: Mutex::new(Registry {
                next_id: 0,
                entries: HashMap::new(),
            }),
        }
    }

    /// The gRPC service of this client.
    pub fn into_service(self) -> crate::proto::mls_client_server::MlsClientServer<Self> {
        crate::proto::mls_client_server::MlsClientServer::new(self)
    }

    fn registry(&self) -> Result<MutexGuard<'_, Registry>, InteropError> {
        self.registry.lock().map_err(|_| InteropError::Poisoned)
    }

    /// Answers an RPC with `f` run on the group state `state_id`, the
    /// registry locked meanwhile.
    fn with_group<T>(
        &self,
        state_id: u32,
        f: impl FnOnce(&mut GroupState) -> Result<T, InteropError>,
    ) -> RpcResult<T> {
        answer(|| f(self.registry()?.group(state_id)?))
    }

    /// A fresh signer for `identity` whose signature key is of `suite`'s
    /// scheme (RFC 9420 §5.1.2), in this client's custody.
    fn signer(&self, identity: &[u8], suite: codec::CipherSuite) -> Result<Signer, InteropError> {
        if identity.is_empty() {
            return Err(InteropError::InvalidArgument("empty identity".into()));
        }
        Ok(Signer::generate_for(
            self.custody.clone(),
            Credential::Basic(identity.to_vec()),
            provider(suite)?.signature_scheme(),
        )?)
    }

    /// A fresh KeyPackage of `suite` for `signer`.
    fn key_package(
        &self,
        signer: &Signer,
        suite: codec::CipherSuite,
    ) -> Result<KeyPackageBundle, InteropError> {
        let mut config = KeyPackageConfig::new(now(), KEY_PACKAGE_VALIDITY);
        config.cipher_suite = suite;
        Ok(self
            .client(signer.clone(), group_config(suite, true))
            .generate_key_package(&config)?)
    }

    /// The client of `signer` with this service's validator and `config`.
    fn client(&self, signer: Signer, config: GroupConfig) -> Client {
        Client::new(signer, self.validator.clone()).with_group_config(config)
    }

    /// Validates a KeyPackage from the harness for a group of `group`'s
    /// suite.
    fn validate(&self, group: &Group, key_package: &[u8]) -> Result<KeyPackage, InteropError> {
        Ok(hsmls::KeyPackageIn::from_bytes(key_package)?.validate(
            group.config().cipher_suite,
            self.validator.as_ref(),
            now(),
        )?)
    }

    /// A fresh signer of `suite` with the same credential as `like`.
    fn signer_like(
        &self,
        like: &Signer,
        suite: codec::CipherSuite,
    ) -> Result<Signer, InteropError> {
        Ok(Signer::generate_for(
            self.custody.clone(),
            like.credential.clone(),
            provider(suite)?.signature_scheme(),
        )?)
    }

    /// After a ReInit commit was merged at `state_id`: moves the closed
    /// group under a new reinit id with a fresh KeyPackage for the new
    /// group (RFC 9420 §11.2).
    fn suspend_for_reinit(
        &self,
        state_id: u32,
        epoch_authenticator: Vec<u8>,
    ) -> Result<HandleReInitCommitResponse, InteropError> {
        let mut reg = self.registry()?;
        let g = reg.group(state_id)?;
        let Some(reinit) = g.group.committed_reinit() else {
            return Err(InteropError::UnexpectedMessage(
                "the commit holds no ReInit",
            ));
        };
        // The new group's suite may differ from the old one's: the new
        // signature key and KeyPackage are of the new suite.
        let suite = check_suite(u32::from(reinit.cipher_suite.0))?;
        let signer = self.signer_like(g.group.signer(), suite)?;
        let bundle = match self.key_package(&signer, suite) {
            Ok(b) => b,
            Err(e) => {
                discard_signer(&signer);
                return Err(e);
            }
        };
        let key_package = bundle.to_bytes()?;
        let Some(Entry::Group(old)) = reg.entries.remove(&state_id) else {
            return Err(InteropError::UnknownId(state_id));
        };
        let reinit_id = reg.insert(Entry::ReInit(Box::new(ReInitState {
            old: *old,
            tx: Transaction {
                signer,
                bundle,
                psks: PskStore::default(),
            },
        })));
        Ok(HandleReInitCommitResponse {
            reinit_id,
            key_package,
            epoch_authenticator,
        })
    }

    /// Destroys what an entry holds in custody (best effort: failures are
    /// logged).
    fn destroy_entry(&self, entry: Entry) {
        let result = match entry {
            Entry::Group(g) => {
                let signer = g.group.signer();
                let leaf = self.custody.destroy(g.group.own_leaf_key());
                leaf.and(signer.custody.destroy(&signer.signature_key))
            }
            Entry::Transaction(t) => t
                .bundle
                .destroy(&t.signer)
                .and(t.signer.custody.destroy(&t.signer.signature_key)),
            Entry::ExternalSigner(s) => s.custody.destroy(&s.signature_key),
            Entry::ReInit(r) => {
                let signer = r.old.group.signer();
                let old = signer.custody.destroy(&signer.signature_key);
                let tx = r.tx.bundle.destroy(&r.tx.signer);
                old.and(tx)
                    .and(r.tx.signer.custody.destroy(&r.tx.signer.signature_key))
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not destroy the keys of a freed state");
        }
    }

    fn commit_inner(&self, req: CommitRequest) -> Result<CommitResponse, InteropError> {
        let descriptions = req
            .by_value
            .iter()
            .map(Description::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let mut reg = self.registry()?;
        let g = reg.group(req.state_id)?;
        let now = now();
        g.absorb_proposals(&req.by_reference, now)?;
        let mut options = CommitOptions::new();
        options.force_path = req.force_path;
        for d in descriptions {
            match d {
                Description::Add(kp) => {
                    options.add_key_packages.push(self.validate(&g.group, &kp)?)
                }
                Description::Remove(identity) => options
                    .remove_leaves
                    .push(member_with_identity(&g.group, &identity)?),
                Description::ExternalPsk(id) => options.psks.push(g.group.external_psk_id(id)),
                Description::ResumptionPsk(epoch) => {
                    options.psks.push(g.group.resumption_psk_id(epoch))
                }
                Description::GroupContextExtensions(ext) => {
                    if options.group_context_extensions.is_some() {
                        return Err(InteropError::InvalidArgument(
                            "two GroupContextExtensions proposals by value".into(),
                        ));
                    }
                    options.group_context_extensions = Some(ext);
                }
                Description::ReInit {
                    group_id,
                    cipher_suite,
                    extensions,
                } => {
                    options.reinit = Some(codec::ReInit {
                        group_id,
                        version: codec::ProtocolVersion::MLS10,
                        cipher_suite,
                        extensions,
                    });
                }
            }
        }
        let saved = g.group.config().clone();
        let mut config = saved.clone();
        config.ratchet_tree_in_welcome = !req.external_tree;
        g.group.set_config(config);
        let out = g.group.commit(options, now);
        g.group.set_config(saved);
        let out = out?;
        g.pending_commit = Some(out.commit.clone());
        let ratchet_tree = match (&out.ratchet_tree, req.external_tree) {
            (Some(t), true) => t.encode()?,
            _ => Vec::new(),
        };
        Ok(CommitResponse {
            commit: out.commit,
            welcome: out.welcome.unwrap_or_default(),
            ratchet_tree,
        })
    }

    fn handle_commit_inner(
        &self,
        req: HandleCommitRequest,
    ) -> Result<HandleCommitResponse, InteropError> {
        let mut reg = self.registry()?;
        let g = reg.group(req.state_id)?;
        let now = now();
        if g.group.has_pending_commit() && g.pending_commit.as_deref() == Some(&req.commit[..]) {
            // The committer handling its own commit.
            g.group.merge_pending_commit()?;
            g.pending_commit = None;
            return Ok(HandleCommitResponse {
                state_id: req.state_id,
                epoch_authenticator: g.group.epoch_authenticator().to_vec(),
            });
        }
        g.absorb_proposals(&req.proposal, now)?;
        let staged = match g.group.process_incoming(&req.commit, now)? {
            ProcessedMessage::StagedCommit(s) => s,
            _ => return Err(InteropError::UnexpectedMessage("not a commit")),
        };
        g.group.merge_staged_commit(staged)?;
        Ok(HandleCommitResponse {
            state_id: req.state_id,
            epoch_authenticator: g.group.epoch_authenticator().to_vec(),
        })
    }

    fn handle_pending_commit_inner(
        &self,
        req: HandlePendingCommitRequest,
    ) -> Result<HandleCommitResponse, InteropError> {
        let mut reg = self.registry()?;
        let g = reg.group(req.state_id)?;
        g.group.merge_pending_commit()?;
        g.pending_commit = None;
        Ok(HandleCommitResponse {
            state_id: req.state_id,
            epoch_authenticator: g.group.epoch_authenticator().to_vec(),
        })
    }

    fn new_member_add_proposal_inner(
        &self,
        req: NewMemberAddProposalRequest,
    ) -> Result<NewMemberAddProposalResponse, InteropError> {
        let gi = decode_group_info(&req.group_info)?;
        let suite = check_suite(u32::from(gi.group_context.cipher_suite.0))?;
        let signer = self.signer(&req.identity, suite)?;
        let bundle = match self.key_package(&signer, suite) {
            Ok(b) => b,
            Err(e) => {
                discard_signer(&signer);
                return Err(e);
            }
        };
        // From here on a failure destroys the keys made for this request
        // (the signature key and the KeyPackage's HPKE keys): nothing of a
        // refused request stays in the token.
        let signed = new_member_add_proposal(
            &signer,
            &bundle.key_package,
            &gi.group_context.group_id,
            gi.group_context.epoch,
        )
        .map(|p| p.message)
        .map_err(InteropError::from);
        let (proposal, mut registry) = match signed.and_then(|p| Ok((p, self.registry()?))) {
            Ok(ok) => ok,
            Err(e) => {
                if let Err(d) = bundle.destroy(&signer) {
                    tracing::warn!(error = %d, "could not destroy an unused KeyPackage's keys");
                }
                discard_signer(&signer);
                return Err(e);
            }
        };
        let transaction_id = registry.insert(Entry::Transaction(Box::new(Transaction {
            signer,
            bundle,
            psks: PskStore::default(),
        })));
        Ok(NewMemberAddProposalResponse {
            transaction_id,
            proposal,
            init_priv: Vec::new(),
            encryption_priv: Vec::new(),
            signature_priv: Vec::new(),
        })
    }

    fn external_signer_proposal_inner(
        &self,
        req: ExternalSignerProposalRequest,
    ) -> Result<ProposalResponse, InteropError> {
        let signer = self.registry()?.external_signer(req.signer_id)?.clone();
        let gi = decode_group_info(&req.group_info)?;
        let suite = check_suite(u32::from(gi.group_context.cipher_suite.0))?;
        let cs = provider(suite)?;
        let description = req
            .description
            .as_ref()
            .ok_or_else(|| InteropError::InvalidArgument("missing description".into()))?;
        let tree = match decode_tree(&req.ratchet_tree)? {
            Some(t) => Some(t),
            None => codec::find_extension::<codec::RatchetTree>(&gi.extensions).transpose()?,
        };
        let proposal = match Description::parse(description)? {
            Description::Add(kp) => Proposal::Add(codec::Add {
                key_package: KeyPackageIn::from_bytes(&kp)?.0,
            }),
            Description::Remove(identity) => {
                let tree = tree.ok_or(InteropError::InvalidArgument(
                    "a remove needs the ratchet tree".into(),
                ))?;
                let removed = leaf_with_identity(&tree, &identity).ok_or_else(|| {
                    InteropError::NoSuchMember(String::from_utf8_lossy(&identity).into_owned())
                })?;
                Proposal::Remove(codec::Remove { removed })
            }
            Description::ExternalPsk(psk_id) => Proposal::PreSharedKey(codec::PreSharedKey {
                psk: codec::PreSharedKeyId {
                    psk: codec::Psk::External(psk_id),
                    psk_nonce: random_nonce(cs),
                },
            }),
            Description::ResumptionPsk(epoch) => Proposal::PreSharedKey(codec::PreSharedKey {
                psk: codec::PreSharedKeyId {
                    psk: codec::Psk::Resumption(codec::ResumptionPsk {
                        usage: codec::ResumptionPskUsage::Application,
                        psk_group_id: gi.group_context.group_id.clone(),
                        psk_epoch: epoch,
                    }),
                    psk_nonce: random_nonce(cs),
                },
            }),
            Description::GroupContextExtensions(extensions) => {
                Proposal::GroupContextExtensions(codec::GroupContextExtensions { extensions })
            }
            Description::ReInit {
                group_id,
                cipher_suite,
                extensions,
            } => Proposal::ReInit(codec::ReInit {
                group_id,
                version: codec::ProtocolVersion::MLS10,
                cipher_suite,
                extensions,
            }),
        };
        // The runner does not send `signer_index`: take the signer's
        // position in the group's external_senders extension, else the
        // index given.
        let own_key = signer.signature_public_key();
        let listed = match codec::find_extension::<ExternalSenders>(&gi.group_context.extensions) {
            Some(list) => list?
                .0
                .iter()
                .position(|s| s.signature_key == own_key)
                .and_then(|i| u32::try_from(i).ok()),
            None => None,
        };
        let signer_index = listed.unwrap_or(req.signer_index);
        let message = external_proposal(
            &signer,
            gi.group_context.cipher_suite,
            &gi.group_context.group_id,
            gi.group_context.epoch,
            signer_index,
            proposal,
        )?;
        Ok(ProposalResponse {
            proposal: message.message,
        })
    }
}

/// Runs `f` and converts its error to a gRPC status.
fn answer<T>(f: impl FnOnce() -> Result<T, InteropError>) -> RpcResult<T> {
    f().map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl MlsClient for InteropClient {
    async fn name(&self, _: Request<NameRequest>) -> RpcResult<NameResponse> {
        Ok(Response::new(NameResponse {
            name: format!("hsmls {}", env!("CARGO_PKG_VERSION")),
        }))
    }

    async fn supported_ciphersuites(
        &self,
        _: Request<SupportedCiphersuitesRequest>,
    ) -> RpcResult<SupportedCiphersuitesResponse> {
        Ok(Response::new(SupportedCiphersuitesResponse {
            ciphersuites: SUPPORTED_SUITES.into_iter().map(u32::from).collect(),
        }))
    }

    async fn create_group(
        &self,
        req: Request<CreateGroupRequest>,
    ) -> RpcResult<CreateGroupResponse> {
        let req = req.into_inner();
        answer(|| {
            let suite = check_suite(req.cipher_suite)?;
            let signer = self.signer(&req.identity, suite)?;
            let group = self
                .client(signer.clone(), group_config(suite, req.encrypt_handshake))
                .create_group(req.group_id, Vec::new(), now())
                .inspect_err(|_| discard_signer(&signer))?;
            let state_id = self.registry()?.insert_group(group);
            Ok(CreateGroupResponse { state_id })
        })
    }

    async fn create_key_package(
        &self,
        req: Request<CreateKeyPackageRequest>,
    ) -> RpcResult<CreateKeyPackageResponse> {
        let req = req.into_inner();
        answer(|| {
            let suite = check_suite(req.cipher_suite)?;
            let signer = self.signer(&req.identity, suite)?;
            let bundle = self
                .key_package(&signer, suite)
                .inspect_err(|_| discard_signer(&signer))?;
            let key_package = bundle.to_bytes()?;
            let transaction_id =
                self.registry()?
                    .insert(Entry::Transaction(Box::new(Transaction {
                        signer,
                        bundle,
                        psks: PskStore::default(),
                    })));
            Ok(CreateKeyPackageResponse {
                transaction_id,
                key_package,
                // The private keys never leave custody.
                init_priv: Vec::new(),
                encryption_priv: Vec::new(),
                signature_priv: Vec::new(),
            })
        })
    }

    async fn join_group(&self, req: Request<JoinGroupRequest>) -> RpcResult<JoinGroupResponse> {
        let req = req.into_inner();
        answer(|| {
            let ratchet_tree = decode_tree(&req.ratchet_tree)?;
            let mut reg = self.registry()?;
            let tx = reg.take_transaction(req.transaction_id)?;
            // The Welcome is joined in the suite of its KeyPackage.
            let suite = tx.bundle.key_package.cipher_suite();
            let joined = self
                .client(
                    tx.signer.clone(),
                    group_config(suite, req.encrypt_handshake),
                )
                .join_from_welcome(&tx.bundle, &req.welcome, tx.join_options(ratchet_tree));
            let (state_id, epoch_authenticator) =
                reg.store_joined(joined, req.transaction_id, Entry::Transaction(Box::new(tx)))?;
            Ok(JoinGroupResponse {
                state_id,
                epoch_authenticator,
            })
        })
    }

    async fn external_join(
        &self,
        req: Request<ExternalJoinRequest>,
    ) -> RpcResult<ExternalJoinResponse> {
        let req = req.into_inner();
        answer(|| {
            // The PSKs come by value (id and secret); the joiner injects
            // each as an external PreSharedKey proposal (RFC 9420
            // §12.4.3.2) and the new group keeps them in its store.
            let mut psks = PskStore::default();
            let mut external_commit_psks = Vec::with_capacity(req.psks.len());
            for psk in &req.psks {
                if psk.psk_id.is_empty() {
                    return Err(InteropError::InvalidArgument("empty psk_id".into()));
                }
                psks.insert_external(psk.psk_id.clone(), Secret::from_slice(&psk.psk_secret));
                external_commit_psks.push(codec::Psk::External(psk.psk_id.clone()));
            }
            let gi = decode_group_info(&req.group_info)?;
            let suite = check_suite(u32::from(gi.group_context.cipher_suite.0))?;
            let ratchet_tree = decode_tree(&req.ratchet_tree)?;
            let signer = self.signer(&req.identity, suite)?;
            let config = group_config(suite, req.encrypt_handshake);
            let prior = if req.remove_prior {
                let tree = match &ratchet_tree {
                    Some(t) => t.clone(),
                    None => codec::find_extension::<codec::RatchetTree>(&gi.extensions)
                        .ok_or(InteropError::Group(hsmls::GroupError::MissingRatchetTree))??,
                };
                Some(leaf_with_identity(&tree, &req.identity).ok_or_else(|| {
                    InteropError::NoSuchMember(String::from_utf8_lossy(&req.identity).into_owned())
                })?)
            } else {
                None
            };
            let mut options = JoinOptions::default();
            options.ratchet_tree = ratchet_tree;
            options.psks = psks;
            options.external_commit_psks = external_commit_psks;
            let result = match prior {
                Some(old) => self
                    .client(signer.clone(), config)
                    .rejoin_by_external_commit(&req.group_info, options, old),
                None => self
                    .client(signer.clone(), config)
                    .join_by_external_commit(&req.group_info, options),
            };
            let (group, commit) = match result {
                Ok(x) => x,
                Err(e) => {
                    discard_signer(&signer);
                    return Err(e.into());
                }
            };
            let epoch_authenticator = group.epoch_authenticator().to_vec();
            let state_id = self.registry()?.insert_group(group);
            Ok(ExternalJoinResponse {
                state_id,
                commit,
                epoch_authenticator,
            })
        })
    }

    async fn group_info(&self, req: Request<GroupInfoRequest>) -> RpcResult<GroupInfoResponse> {
        let req = req.into_inner();
        self.with_group(req.state_id, |g| {
            let g = &mut g.group;
            let saved = g.config().clone();
            let mut config = saved.clone();
            config.ratchet_tree_in_group_info = !req.external_tree;
            g.set_config(config);
            let group_info = g.group_info();
            g.set_config(saved);
            let ratchet_tree = if req.external_tree {
                g.ratchet_tree().encode()?
            } else {
                Vec::new()
            };
            Ok(GroupInfoResponse {
                group_info: group_info?,
                ratchet_tree,
            })
        })
    }

    async fn state_auth(&self, req: Request<StateAuthRequest>) -> RpcResult<StateAuthResponse> {
        let req = req.into_inner();
        self.with_group(req.state_id, |g| {
            Ok(StateAuthResponse {
                state_auth_secret: g.group.epoch_authenticator().to_vec(),
            })
        })
    }

    async fn export(&self, req: Request<ExportRequest>) -> RpcResult<ExportResponse> {
        let req = req.into_inner();
        answer(|| {
            if req.key_length > MAX_EXPORT_LEN {
                return Err(InteropError::InvalidArgument(format!(
                    "key_length {} exceeds {MAX_EXPORT_LEN}",
                    req.key_length
                )));
            }
            let mut reg = self.registry()?;
            let g = &reg.group(req.state_id)?.group;
            let len = usize::try_from(req.key_length)
                .map_err(|_| InteropError::InvalidArgument("key_length".into()))?;
            let secret = g.export_secret(req.label.as_bytes(), &req.context, len)?;
            Ok(ExportResponse {
                exported_secret: secret.as_bytes().to_vec(),
            })
        })
    }

    async fn protect(&self, req: Request<ProtectRequest>) -> RpcResult<ProtectResponse> {
        let req = req.into_inner();
        self.with_group(req.state_id, |g| {
            let ciphertext = g
                .group
                .encrypt_application_with_aad(&req.plaintext, req.authenticated_data)?;
            Ok(ProtectResponse { ciphertext })
        })
    }

    async fn unprotect(&self, req: Request<UnprotectRequest>) -> RpcResult<UnprotectResponse> {
        let req = req.into_inner();
        self.with_group(req.state_id, |g| {
            match g.group.process_incoming(&req.ciphertext, now())? {
                ProcessedMessage::ApplicationMessage {
                    data,
                    authenticated_data,
                    ..
                } => Ok(UnprotectResponse {
                    authenticated_data,
                    plaintext: data,
                }),
                _ => Err(InteropError::UnexpectedMessage(
                    "not an application message",
                )),
            }
        })
    }

    async fn store_psk(&self, req: Request<StorePskRequest>) -> RpcResult<StorePskResponse> {
        let req = req.into_inner();
        answer(|| {
            if req.psk_id.is_empty() {
                return Err(InteropError::InvalidArgument("empty psk_id".into()));
            }
            let secret = Secret::from_slice(&req.psk_secret);
            let mut reg = self.registry()?;
            match reg.entries.get_mut(&req.state_or_transaction_id) {
                Some(Entry::Group(g)) => {
                    g.group.psk_store_mut().insert_external(req.psk_id, secret)
                }
                Some(Entry::Transaction(t)) => t.psks.insert_external(req.psk_id, secret),
                Some(Entry::ReInit(r)) => r.tx.psks.insert_external(req.psk_id, secret),
                Some(Entry::ExternalSigner(_)) => {
                    return Err(InteropError::WrongKind {
                        id: req.state_or_transaction_id,
                        expected: "group state or transaction",
                    });
                }
                None => return Err(InteropError::UnknownId(req.state_or_transaction_id)),
            }
            Ok(StorePskResponse {})
        })
    }

    async fn add_proposal(&self, req: Request<AddProposalRequest>) -> RpcResult<ProposalResponse> {
        let req = req.into_inner();
        answer(|| {
            check_key_package(&req.key_package)?;
            let mut reg = self.registry()?;
            let g = reg.group(req.state_id)?;
            let key_package = self.validate(&g.group, &req.key_package)?;
            let p = g.group.propose_add(&key_package, now())?;
            Ok(g.sent(p).into_inner())
        })
    }

    async fn update_proposal(
        &self,
        req: Request<UpdateProposalRequest>,
    ) -> RpcResult<ProposalResponse> {
        let req = req.into_inner();
        self.with_group(req.state_id, |g| {
            let p = g.group.propose_update()?;
            Ok(g.sent(p).into_inner())
        })
    }

    async fn remove_proposal(
        &self,
        req: Request<RemoveProposalRequest>,
    ) -> RpcResult<ProposalResponse> {
        let req = req.into_inner();
        self.with_group(req.state_id, |g| {
            let leaf = member_with_identity(&g.group, &req.removed_id)?;
            let p = g.group.propose_remove(leaf)?;
            Ok(g.sent(p).into_inner())
        })
    }

    async fn external_psk_proposal(
        &self,
        req: Request<ExternalPskProposalRequest>,
    ) -> RpcResult<ProposalResponse> {
        let req = req.into_inner();
        self.with_group(req.state_id, |g| {
            let id = g.group.external_psk_id(req.psk_id);
            let p = g.group.propose_psk(id)?;
            Ok(g.sent(p).into_inner())
        })
    }

    async fn resumption_psk_proposal(
        &self,
        req: Request<ResumptionPskProposalRequest>,
    ) -> RpcResult<ProposalResponse> {
        let req = req.into_inner();
        self.with_group(req.state_id, |g| {
            let id = g.group.resumption_psk_id(req.epoch_id);
            let p = g.group.propose_psk(id)?;
            Ok(g.sent(p).into_inner())
        })
    }

    async fn group_context_extensions_proposal(
        &self,
        req: Request<GroupContextExtensionsProposalRequest>,
    ) -> RpcResult<ProposalResponse> {
        let req = req.into_inner();
        answer(|| {
            let extensions = extensions_from_proto(&req.extensions)?;
            let mut reg = self.registry()?;
            let g = reg.group(req.state_id)?;
            let p = g.group.propose_group_context_extensions(extensions)?;
            Ok(g.sent(p).into_inner())
        })
    }

    async fn commit(&self, req: Request<CommitRequest>) -> RpcResult<CommitResponse> {
        let req = req.into_inner();
        answer(|| self.commit_inner(req))
    }

    async fn handle_commit(
        &self,
        req: Request<HandleCommitRequest>,
    ) -> RpcResult<HandleCommitResponse> {
        let req = req.into_inner();
        answer(|| self.handle_commit_inner(req))
    }

    async fn handle_pending_commit(
        &self,
        req: Request<HandlePendingCommitRequest>,
    ) -> RpcResult<HandleCommitResponse> {
        let req = req.into_inner();
        answer(|| self.handle_pending_commit_inner(req))
    }

    // ----- ReInit (RFC 9420 §11.2) -----

    async fn re_init_proposal(
        &self,
        req: Request<ReInitProposalRequest>,
    ) -> RpcResult<ProposalResponse> {
        let req = req.into_inner();
        answer(|| {
            let cipher_suite = check_suite(req.cipher_suite)?;
            let extensions = extensions_from_proto(&req.extensions)?;
            let mut reg = self.registry()?;
            let g = reg.group(req.state_id)?;
            let p = g.group.propose_reinit(codec::ReInit {
                group_id: req.group_id,
                version: codec::ProtocolVersion::MLS10,
                cipher_suite,
                extensions,
            })?;
            Ok(g.sent(p).into_inner())
        })
    }

    async fn re_init_commit(&self, req: Request<CommitRequest>) -> RpcResult<CommitResponse> {
        let req = req.into_inner();
        answer(|| self.commit_inner(req))
    }

    async fn handle_pending_re_init_commit(
        &self,
        req: Request<HandlePendingCommitRequest>,
    ) -> RpcResult<HandleReInitCommitResponse> {
        let req = req.into_inner();
        answer(|| {
            let state_id = req.state_id;
            let r = self.handle_pending_commit_inner(req)?;
            self.suspend_for_reinit(state_id, r.epoch_authenticator)
        })
    }

    async fn handle_re_init_commit(
        &self,
        req: Request<HandleCommitRequest>,
    ) -> RpcResult<HandleReInitCommitResponse> {
        let req = req.into_inner();
        answer(|| {
            let state_id = req.state_id;
            let r = self.handle_commit_inner(req)?;
            self.suspend_for_reinit(state_id, r.epoch_authenticator)
        })
    }

    async fn re_init_welcome(
        &self,
        req: Request<ReInitWelcomeRequest>,
    ) -> RpcResult<CreateSubgroupResponse> {
        let req = req.into_inner();
        answer(|| {
            for kp in &req.key_package {
                check_key_package(kp)?;
            }
            let mut reg = self.registry()?;
            let r = reg.take_reinit(req.reinit_id)?;
            let mut config = r.old.group.config().clone();
            if let Some(reinit) = r.old.group.committed_reinit() {
                config.cipher_suite = reinit.cipher_suite;
            }
            config.ratchet_tree_in_welcome = !req.external_tree;
            // The new group's founder commit adds the members; it has a
            // path only if the engine requires one (`force_path` unused).
            let client = self.client(r.tx.signer.clone(), config);
            let created = req
                .key_package
                .iter()
                .map(|kp| {
                    client
                        .validate_key_package(kp, now())
                        .map_err(hsmls::GroupError::from)
                })
                .collect::<Result<Vec<KeyPackage>, _>>()
                .and_then(|kps| client.reinit_group(&r.old.group, &kps, now()));
            let (mut group, out) = match created {
                Ok(x) => x,
                Err(e) => {
                    reg.entries
                        .insert(req.reinit_id, Entry::ReInit(Box::new(r)));
                    return Err(e.into());
                }
            };
            // The welcomer's own new KeyPackage is not used.
            if let Err(e) = r.tx.bundle.destroy(&r.tx.signer) {
                tracing::warn!(error = %e, "could not destroy an unused KeyPackage's keys");
            }
            let mut config = group.config().clone();
            config.ratchet_tree_in_welcome = true;
            group.set_config(config);
            reg.insert_subgroup(group, out, req.external_tree)
        })
    }

    async fn handle_re_init_welcome(
        &self,
        req: Request<HandleReInitWelcomeRequest>,
    ) -> RpcResult<JoinGroupResponse> {
        let req = req.into_inner();
        answer(|| {
            let ratchet_tree = decode_tree(&req.ratchet_tree)?;
            let mut reg = self.registry()?;
            let r = reg.take_reinit(req.reinit_id)?;
            let mut config = r.old.group.config().clone();
            if let Some(reinit) = r.old.group.committed_reinit() {
                config.cipher_suite = reinit.cipher_suite;
            }
            let joined = self.client(r.tx.signer.clone(), config).join_reinit(
                &r.old.group,
                &r.tx.bundle,
                &req.welcome,
                r.tx.join_options(ratchet_tree),
            );
            let (state_id, epoch_authenticator) =
                reg.store_joined(joined, req.reinit_id, Entry::ReInit(Box::new(r)))?;
            Ok(JoinGroupResponse {
                state_id,
                epoch_authenticator,
            })
        })
    }

    // ----- Subgroup branching (RFC 9420 §11.3) -----

    async fn create_branch(
        &self,
        req: Request<CreateBranchRequest>,
    ) -> RpcResult<CreateSubgroupResponse> {
        let req = req.into_inner();
        answer(|| {
            let extensions = extensions_from_proto(&req.extensions)?;
            for kp in &req.key_packages {
                check_key_package(kp)?;
            }
            let mut reg = self.registry()?;
            let g = reg.group(req.state_id)?;
            let signer = self.signer_like(g.group.signer(), g.group.config().cipher_suite)?;
            // The branch takes this group's configuration, with the
            // Welcome's tree policy of the request.
            let saved = g.group.config().clone();
            let mut config = saved.clone();
            config.ratchet_tree_in_welcome = !req.external_tree;
            let client = self.client(signer.clone(), config);
            let created = req
                .key_packages
                .iter()
                .map(|kp| {
                    client
                        .validate_key_package(kp, now())
                        .map_err(hsmls::GroupError::from)
                })
                .collect::<Result<Vec<KeyPackage>, _>>()
                .and_then(|kps| client.branch(&g.group, req.group_id, extensions, &kps, now()));
            let (mut group, out) = match created {
                Ok(x) => x,
                Err(e) => {
                    discard_signer(&signer);
                    return Err(e.into());
                }
            };
            group.set_config(saved);
            reg.insert_subgroup(group, out, req.external_tree)
        })
    }

    async fn handle_branch(
        &self,
        req: Request<HandleBranchRequest>,
    ) -> RpcResult<HandleBranchResponse> {
        let req = req.into_inner();
        answer(|| {
            let ratchet_tree = decode_tree(&req.ratchet_tree)?;
            let mut reg = self.registry()?;
            reg.group(req.state_id)?;
            let tx = reg.take_transaction(req.transaction_id)?;
            let g = reg.group(req.state_id)?;
            let joined = self
                .client(tx.signer.clone(), g.group.config().clone())
                .join_branch(
                    &g.group,
                    &tx.bundle,
                    &req.welcome,
                    tx.join_options(ratchet_tree),
                );
            let (state_id, epoch_authenticator) =
                reg.store_joined(joined, req.transaction_id, Entry::Transaction(Box::new(tx)))?;
            Ok(HandleBranchResponse {
                state_id,
                epoch_authenticator,
            })
        })
    }

    // ----- External proposals (RFC 9420 §12.1.8) -----

    async fn new_member_add_proposal(
        &self,
        req: Request<NewMemberAddProposalRequest>,
    ) -> RpcResult<NewMemberAddProposalResponse> {
        let req = req.into_inner();
        answer(|| self.new_member_add_proposal_inner(req))
    }

    async fn create_external_signer(
        &self,
        req: Request<CreateExternalSignerRequest>,
    ) -> RpcResult<CreateExternalSignerResponse> {
        let req = req.into_inner();
        answer(|| {
            let suite = check_suite(req.cipher_suite)?;
            let signer = self.signer(&req.identity, suite)?;
            let external_sender = ExternalSender {
                signature_key: signer.signature_public_key(),
                credential: signer.credential.clone(),
            }
            .encode()?;
            let signer_id = self.registry()?.insert(Entry::ExternalSigner(signer));
            Ok(CreateExternalSignerResponse {
                signer_id,
                external_sender,
            })
        })
    }

    async fn add_external_signer(
        &self,
        req: Request<AddExternalSignerRequest>,
    ) -> RpcResult<ProposalResponse> {
        let req = req.into_inner();
        answer(|| {
            let sender = ExternalSender::decode(&req.external_sender)?;
            check_credential(&sender.credential)?;
            let mut reg = self.registry()?;
            let g = reg.group(req.state_id)?;
            // A GroupContextExtensions proposal replaces the whole list:
            // keep the other extensions, append to external_senders.
            let mut extensions = g.group.group_context().extensions.clone();
            let mut senders = match codec::find_extension::<ExternalSenders>(&extensions) {
                Some(list) => list?.0,
                None => Vec::new(),
            };
            senders.push(sender);
            extensions.retain(|e| e.extension_type != ExtensionType::EXTERNAL_SENDERS);
            extensions.push(codec::Extension::from_data(&ExternalSenders(senders))?);
            let p = g.group.propose_group_context_extensions(extensions)?;
            Ok(g.sent(p).into_inner())
        })
    }

    async fn external_signer_proposal(
        &self,
        req: Request<ExternalSignerProposalRequest>,
    ) -> RpcResult<ProposalResponse> {
        let req = req.into_inner();
        answer(|| self.external_signer_proposal_inner(req))
    }

    async fn free(&self, req: Request<FreeRequest>) -> RpcResult<FreeResponse> {
        let req = req.into_inner();
        answer(|| {
            let entry = self
                .registry()?
                .entries
                .remove(&req.state_id)
                .ok_or(InteropError::UnknownId(req.state_id))?;
            self.destroy_entry(entry);
            Ok(FreeResponse {})
        })
    }
}
