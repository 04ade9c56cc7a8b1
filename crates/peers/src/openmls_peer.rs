//! The openmls peer (openmls 0.9 with openmls_rust_crypto).
//!
//! Settings: cipher suite 0x0002 (or the one given to `Peer::with_suite`),
//! basic credentials, the ratchet_tree
//! extension in every Welcome, and the wire-format policy
//! `MIXED_CIPHERTEXT_WIRE_FORMAT_POLICY`: handshakes are sent as
//! PrivateMessage, and both PrivateMessage and PublicMessage handshakes are
//! accepted. openmls's default (`PURE_CIPHERTEXT_WIRE_FORMAT_POLICY`)
//! rejects incoming PublicMessage handshakes, which are mls-rs's default
//! and the only form of an external commit (RFC 9420 §12.4.3.2). With
//! `PeerOptions::public_handshakes`, `MIXED_PLAINTEXT_WIRE_FORMAT_POLICY`
//! (handshakes sent as PublicMessage). openmls's `add_members` always
//! carries an UpdatePath, so `PeerOptions::always_path` changes nothing.
//! Saved state: openmls writes its state to its storage provider as it
//! goes; the records are the entries of the in-memory storage, and a load
//! puts them into a fresh provider and calls `MlsGroup::load`.

use std::fmt;

use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;

use crate::{CommitMessages, Event, Peer, PeerError, PeerOptions, SavedState};

const NAME: &str = "openmls";

fn lib<E: fmt::Display>(operation: &'static str) -> impl FnOnce(E) -> PeerError {
    move |e| PeerError::Library {
        implementation: NAME,
        operation,
        detail: e.to_string(),
    }
}

fn unexpected(expected: &'static str) -> PeerError {
    PeerError::UnexpectedMessage {
        implementation: NAME,
        expected,
    }
}

fn wire_format_policy(public_handshakes: bool) -> WireFormatPolicy {
    if public_handshakes {
        MIXED_PLAINTEXT_WIRE_FORMAT_POLICY
    } else {
        MIXED_CIPHERTEXT_WIRE_FORMAT_POLICY
    }
}

fn create_config(suite: Ciphersuite, public_handshakes: bool) -> MlsGroupCreateConfig {
    MlsGroupCreateConfig::builder()
        .ciphersuite(suite)
        .use_ratchet_tree_extension(true)
        .wire_format_policy(wire_format_policy(public_handshakes))
        .build()
}

fn join_config(public_handshakes: bool) -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .wire_format_policy(wire_format_policy(public_handshakes))
        .build()
}

fn parse(operation: &'static str, bytes: &[u8]) -> Result<MlsMessageBodyIn, PeerError> {
    let message = MlsMessageIn::tls_deserialize_exact(bytes).map_err(lib(operation))?;
    Ok(message.extract())
}

fn parse_ratchet_tree(bytes: Option<&[u8]>) -> Result<Option<RatchetTreeIn>, PeerError> {
    bytes
        .map(|b| RatchetTreeIn::tls_deserialize_exact(b).map_err(lib("ratchet tree")))
        .transpose()
}

/// An openmls client with at most one group. Its whole state (keys, group)
/// lives in the provider's in-memory storage.
pub struct OpenMlsPeer {
    suite: Ciphersuite,
    public_handshakes: bool,
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
    group: Option<MlsGroup>,
}

impl fmt::Debug for OpenMlsPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenMlsPeer")
            .field("epoch", &self.group.as_ref().map(|g| g.epoch().as_u64()))
            .finish_non_exhaustive()
    }
}

impl OpenMlsPeer {
    fn group(&self) -> Result<&MlsGroup, PeerError> {
        self.group.as_ref().ok_or(PeerError::NoGroup(NAME))
    }

    fn parse_key_package(&self, bytes: &[u8]) -> Result<KeyPackage, PeerError> {
        match parse("key package", bytes)? {
            MlsMessageBodyIn::KeyPackage(kp) => kp
                .validate(self.provider.crypto(), ProtocolVersion::Mls10)
                .map_err(lib("key package validation")),
            _ => Err(unexpected("a KeyPackage")),
        }
    }
}

fn commit_messages(
    commit: &MlsMessageOut,
    welcome: Option<&MlsMessageOut>,
) -> Result<CommitMessages, PeerError> {
    Ok(CommitMessages {
        commit: commit.to_bytes().map_err(lib("encode commit"))?,
        welcome: welcome
            .map(|w| w.to_bytes().map_err(lib("encode welcome")))
            .transpose()?,
    })
}

impl Peer for OpenMlsPeer {
    const NAME: &'static str = NAME;

    fn with_options(identity: &[u8], options: PeerOptions) -> Result<Self, PeerError> {
        let suite = Ciphersuite::try_from(options.suite).map_err(lib("cipher suite"))?;
        let provider = OpenMlsRustCrypto::default();
        let signer =
            SignatureKeyPair::new(suite.signature_algorithm()).map_err(lib("signature key"))?;
        let credential = CredentialWithKey {
            credential: BasicCredential::new(identity.to_vec()).into(),
            signature_key: signer.public().into(),
        };
        Ok(Self {
            suite,
            public_handshakes: options.public_handshakes,
            provider,
            signer,
            credential,
            group: None,
        })
    }

    fn key_package(&mut self) -> Result<Vec<u8>, PeerError> {
        let bundle = KeyPackage::builder()
            .build(
                self.suite,
                &self.provider,
                &self.signer,
                self.credential.clone(),
            )
            .map_err(lib("key package"))?;
        MlsMessageOut::from(bundle.key_package().clone())
            .to_bytes()
            .map_err(lib("encode key package"))
    }

    fn create_group(&mut self, group_id: &[u8]) -> Result<(), PeerError> {
        let group = MlsGroup::new_with_group_id(
            &self.provider,
            &self.signer,
            &create_config(self.suite, self.public_handshakes),
            GroupId::from_slice(group_id),
            self.credential.clone(),
        )
        .map_err(lib("create group"))?;
        self.group = Some(group);
        Ok(())
    }

    fn add_members(&mut self, key_packages: &[Vec<u8>]) -> Result<CommitMessages, PeerError> {
        let kps = key_packages
            .iter()
            .map(|b| self.parse_key_package(b))
            .collect::<Result<Vec<_>, _>>()?;
        let (provider, signer) = (&self.provider, &self.signer);
        let group = self.group.as_mut().ok_or(PeerError::NoGroup(NAME))?;
        let (commit, welcome, _) = group
            .add_members(provider, signer, &kps)
            .map_err(lib("add members"))?;
        commit_messages(&commit, Some(&welcome))
    }

    fn remove_member(&mut self, leaf_index: u32) -> Result<CommitMessages, PeerError> {
        let (provider, signer) = (&self.provider, &self.signer);
        let group = self.group.as_mut().ok_or(PeerError::NoGroup(NAME))?;
        let (commit, welcome, _) = group
            .remove_members(provider, signer, &[LeafNodeIndex::new(leaf_index)])
            .map_err(lib("remove member"))?;
        commit_messages(&commit, welcome.as_ref())
    }

    fn self_update(&mut self) -> Result<CommitMessages, PeerError> {
        let provider = &self.provider;
        let group = self.group.as_mut().ok_or(PeerError::NoGroup(NAME))?;
        // As `MlsGroup::self_update`, but without the signed GroupInfo that
        // openmls otherwise makes for every commit when the ratchet_tree
        // extension is on (the other peers make none for a self-update).
        let bundle = group
            .commit_builder()
            .consume_proposal_store(true)
            .load_psks(provider.storage())
            .map_err(lib("self update"))?
            .create_group_info(false)
            .build(provider.rand(), provider.crypto(), &self.signer, |_| true)
            .map_err(lib("self update"))?
            .stage_commit(provider)
            .map_err(lib("self update"))?;
        commit_messages(bundle.commit(), None)
    }

    fn merge_pending(&mut self) -> Result<(), PeerError> {
        let provider = &self.provider;
        let group = self.group.as_mut().ok_or(PeerError::NoGroup(NAME))?;
        group
            .merge_pending_commit(provider)
            .map_err(lib("merge pending commit"))
    }

    fn discard_pending(&mut self) -> Result<(), PeerError> {
        let provider = &self.provider;
        let group = self.group.as_mut().ok_or(PeerError::NoGroup(NAME))?;
        group
            .clear_pending_commit(provider.storage())
            .map_err(lib("clear pending commit"))
    }

    fn join(&mut self, welcome: &[u8], ratchet_tree: Option<&[u8]>) -> Result<(), PeerError> {
        let MlsMessageBodyIn::Welcome(welcome) = parse("welcome", welcome)? else {
            return Err(unexpected("a Welcome"));
        };
        let tree = parse_ratchet_tree(ratchet_tree)?;
        let group = StagedWelcome::new_from_welcome(
            &self.provider,
            &join_config(self.public_handshakes),
            welcome,
            tree,
        )
        .map_err(lib("stage welcome"))?
        .into_group(&self.provider)
        .map_err(lib("join from welcome"))?;
        self.group = Some(group);
        Ok(())
    }

    fn process(&mut self, message: &[u8]) -> Result<Event, PeerError> {
        let message = MlsMessageIn::tls_deserialize_exact(message).map_err(lib("decode"))?;
        let message = message
            .try_into_protocol_message()
            .map_err(|_| unexpected("a PublicMessage or PrivateMessage"))?;
        let provider = &self.provider;
        let group = self.group.as_mut().ok_or(PeerError::NoGroup(NAME))?;
        let processed = group
            .process_message(provider, message)
            .map_err(lib("process"))?;
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(m) => {
                Ok(Event::Application(m.into_bytes()))
            }
            ProcessedMessageContent::ProposalMessage(p) => {
                group
                    .store_pending_proposal(provider.storage(), *p)
                    .map_err(lib("store proposal"))?;
                Ok(Event::Proposal)
            }
            ProcessedMessageContent::ExternalJoinProposalMessage(p) => {
                group
                    .store_pending_proposal(provider.storage(), *p)
                    .map_err(lib("store proposal"))?;
                Ok(Event::Proposal)
            }
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                group
                    .merge_staged_commit(provider, *staged)
                    .map_err(lib("merge commit"))?;
                Ok(Event::Commit {
                    epoch: group.epoch().as_u64(),
                })
            }
            ProcessedMessageContent::OwnPendingCommit
            | ProcessedMessageContent::OwnPrivateMessage => {
                Err(unexpected("a message from another member"))
            }
        }
    }

    fn encrypt(&mut self, application_data: &[u8]) -> Result<Vec<u8>, PeerError> {
        let (provider, signer) = (&self.provider, &self.signer);
        let group = self.group.as_mut().ok_or(PeerError::NoGroup(NAME))?;
        group
            .create_message(provider, signer, application_data)
            .map_err(lib("encrypt"))?
            .to_bytes()
            .map_err(lib("encode application message"))
    }

    fn epoch(&self) -> Result<u64, PeerError> {
        Ok(self.group()?.epoch().as_u64())
    }

    fn epoch_authenticator(&self) -> Result<Vec<u8>, PeerError> {
        Ok(self.group()?.epoch_authenticator().as_slice().to_vec())
    }

    fn export_secret(
        &self,
        label: &str,
        context: &[u8],
        length: usize,
    ) -> Result<Vec<u8>, PeerError> {
        self.group()?
            .export_secret(self.provider.crypto(), label, context, length)
            .map_err(lib("export secret"))
    }

    fn own_leaf_index(&self) -> Result<u32, PeerError> {
        Ok(self.group()?.own_leaf_index().u32())
    }

    fn member_count(&self) -> Result<usize, PeerError> {
        Ok(self.group()?.members().count())
    }

    fn ratchet_tree(&self) -> Result<Vec<u8>, PeerError> {
        self.group()?
            .export_ratchet_tree()
            .tls_serialize_detached()
            .map_err(lib("encode ratchet tree"))
    }

    fn group_info(&mut self, with_ratchet_tree: bool) -> Result<Vec<u8>, PeerError> {
        self.group()?
            .export_group_info(self.provider.crypto(), &self.signer, with_ratchet_tree)
            .map_err(lib("group info"))?
            .to_bytes()
            .map_err(lib("encode group info"))
    }

    fn save_state(&mut self) -> Result<SavedState, PeerError> {
        let group_id = self.group()?.group_id().as_slice().to_vec();
        let values = self
            .provider
            .storage()
            .values
            .read()
            .map_err(|_| lib("save")("storage lock poisoned"))?;
        let records = values.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        Ok(SavedState { group_id, records })
    }

    fn load_state(&mut self, saved: &SavedState) -> Result<(), PeerError> {
        // As after a restart: a fresh provider whose storage holds only
        // what was saved.
        let provider = OpenMlsRustCrypto::default();
        provider
            .storage()
            .values
            .write()
            .map_err(|_| lib("load")("storage lock poisoned"))?
            .extend(saved.records.iter().cloned());
        let group = MlsGroup::load(provider.storage(), &GroupId::from_slice(&saved.group_id))
            .map_err(lib("load"))?
            .ok_or_else(|| lib("load")("no group in the saved records"))?;
        self.provider = provider;
        self.group = Some(group);
        Ok(())
    }

    fn join_external(
        &mut self,
        group_info: &[u8],
        ratchet_tree: Option<&[u8]>,
    ) -> Result<Vec<u8>, PeerError> {
        let MlsMessageBodyIn::GroupInfo(group_info) = parse("group info", group_info)? else {
            return Err(unexpected("a GroupInfo"));
        };
        let mut builder =
            ExternalCommitBuilder::new().with_config(join_config(self.public_handshakes));
        if let Some(tree) = parse_ratchet_tree(ratchet_tree)? {
            builder = builder.with_ratchet_tree(tree);
        }
        let (mut group, bundle) = builder
            .build_group(&self.provider, group_info, self.credential.clone())
            .map_err(lib("external commit: group"))?
            .load_psks(self.provider.storage())
            .map_err(lib("external commit: psks"))?
            .build(
                self.provider.rand(),
                self.provider.crypto(),
                &self.signer,
                |_| true,
            )
            .map_err(lib("external commit: build"))?
            .finalize(&self.provider)
            .map_err(lib("external commit: finalize"))?;
        let commit = bundle
            .commit()
            .to_bytes()
            .map_err(lib("encode external commit"))?;
        group
            .merge_pending_commit(&self.provider)
            .map_err(lib("merge external commit"))?;
        self.group = Some(group);
        Ok(commit)
    }
}
