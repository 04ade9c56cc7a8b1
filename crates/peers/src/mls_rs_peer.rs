//! The mls-rs peer (mls-rs 0.57 with mls-rs-crypto-rustcrypto).
//!
//! Settings: cipher suite 0x0002 (`CipherSuite::P256_AES128`, or the one
//! given to `Peer::with_suite`), basic
//! credentials, `DefaultMlsRules` with `encrypt_control_messages = true`
//! (handshakes sent as PrivateMessage, unless
//! `PeerOptions::public_handshakes`; mls-rs's default sends them as
//! PublicMessage) and no padding (as openmls's default); with
//! `PeerOptions::always_path`, `CommitOptions::with_path_required`. Saved
//! state: `Group::write_to_storage` into the client's in-memory
//! `GroupStateStorage`, whose state and epoch records are the records. mls-rs always
//! accepts both forms. Default commit options: the ratchet_tree extension in
//! Welcome, one Welcome for all new members, a path only when required
//! (RFC 9420 §12.4). Built without mls-rs's default `rayon` feature (one
//! thread) unless this crate's `mls-rs-rayon` feature is on.

use std::fmt;

use mls_rs::client_builder::{
    BaseConfig, PaddingMode, WithCryptoProvider, WithIdentityProvider, WithMlsRules,
};
use mls_rs::group::{ExportedTree, ReceivedMessage};
use mls_rs::identity::SigningIdentity;
use mls_rs::identity::basic::{BasicCredential, BasicIdentityProvider};
use mls_rs::mls_rules::{CommitOptions, DefaultMlsRules, EncryptionOptions};
use mls_rs::{
    CipherSuite, CipherSuiteProvider, Client, CryptoProvider, Group, GroupStateStorage as _,
    MlsMessage,
};
use mls_rs_core::group::{EpochRecord, GroupState};
use mls_rs_crypto_rustcrypto::RustCryptoProvider;
use zeroize::Zeroizing;

use crate::{CommitMessages, Event, Peer, PeerError, PeerOptions, SavedState};

/// The record key of the group state in a [`SavedState`]; epoch records
/// are keyed by their id (8 bytes, big-endian).
const STATE_KEY: &[u8] = b"state";

const NAME: &str = "mls-rs";

type Config = WithMlsRules<
    DefaultMlsRules,
    WithIdentityProvider<BasicIdentityProvider, WithCryptoProvider<RustCryptoProvider, BaseConfig>>,
>;

fn lib<E: fmt::Display>(operation: &'static str) -> impl FnOnce(E) -> PeerError {
    move |e| PeerError::Library {
        implementation: NAME,
        operation,
        detail: e.to_string(),
    }
}

fn parse(operation: &'static str, bytes: &[u8]) -> Result<MlsMessage, PeerError> {
    MlsMessage::from_bytes(bytes).map_err(lib(operation))
}

fn parse_tree(bytes: Option<&[u8]>) -> Result<Option<ExportedTree<'static>>, PeerError> {
    bytes
        .map(|b| ExportedTree::from_bytes(b).map_err(lib("ratchet tree")))
        .transpose()
}

fn commit_messages(output: mls_rs::group::CommitOutput) -> Result<CommitMessages, PeerError> {
    Ok(CommitMessages {
        commit: output
            .commit_message
            .to_bytes()
            .map_err(lib("encode commit"))?,
        welcome: output
            .welcome_messages
            .first()
            .map(|w| w.to_bytes().map_err(lib("encode welcome")))
            .transpose()?,
    })
}

/// An mls-rs client with at most one group.
pub struct MlsRsPeer {
    client: Client<Config>,
    group: Option<Group<Config>>,
}

impl fmt::Debug for MlsRsPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MlsRsPeer")
            .field("epoch", &self.group.as_ref().map(|g| g.current_epoch()))
            .finish_non_exhaustive()
    }
}

impl MlsRsPeer {
    fn group(&self) -> Result<&Group<Config>, PeerError> {
        self.group.as_ref().ok_or(PeerError::NoGroup(NAME))
    }

    fn group_mut(&mut self) -> Result<&mut Group<Config>, PeerError> {
        self.group.as_mut().ok_or(PeerError::NoGroup(NAME))
    }
}

impl Peer for MlsRsPeer {
    const NAME: &'static str = NAME;

    fn with_options(identity: &[u8], options: PeerOptions) -> Result<Self, PeerError> {
        let suite = options.suite;
        let cipher_suite = CipherSuite::from(suite);
        let crypto = RustCryptoProvider::default();
        let provider = crypto
            .cipher_suite_provider(cipher_suite)
            .ok_or_else(|| lib("cipher suite")(format!("0x{suite:04x} not supported")))?;
        let (secret, public) = provider
            .signature_key_generate()
            .map_err(lib("signature key"))?;
        let credential = BasicCredential::new(identity.to_vec()).into_credential();
        let rules = DefaultMlsRules::new()
            .with_encryption_options(EncryptionOptions::new(
                !options.public_handshakes,
                PaddingMode::None,
            ))
            .with_commit_options(CommitOptions::new().with_path_required(options.always_path));
        let client = Client::builder()
            .crypto_provider(crypto)
            .identity_provider(BasicIdentityProvider::new())
            .mls_rules(rules)
            .signing_identity(
                SigningIdentity::new(credential, public),
                secret,
                cipher_suite,
            )
            .build();
        Ok(Self {
            client,
            group: None,
        })
    }

    fn key_package(&mut self) -> Result<Vec<u8>, PeerError> {
        self.client
            .generate_key_package_message(Default::default(), Default::default(), None)
            .map_err(lib("key package"))?
            .to_bytes()
            .map_err(lib("encode key package"))
    }

    fn create_group(&mut self, group_id: &[u8]) -> Result<(), PeerError> {
        let group = self
            .client
            .create_group_with_id(
                group_id.to_vec(),
                Default::default(),
                Default::default(),
                None,
            )
            .map_err(lib("create group"))?;
        self.group = Some(group);
        Ok(())
    }

    fn add_members(&mut self, key_packages: &[Vec<u8>]) -> Result<CommitMessages, PeerError> {
        let group = self.group_mut()?;
        let mut builder = group.commit_builder();
        for kp in key_packages {
            builder = builder
                .add_member(parse("key package", kp)?)
                .map_err(lib("add member"))?;
        }
        commit_messages(builder.build().map_err(lib("add members"))?)
    }

    fn remove_member(&mut self, leaf_index: u32) -> Result<CommitMessages, PeerError> {
        let output = self
            .group_mut()?
            .commit_builder()
            .remove_member(leaf_index)
            .map_err(lib("remove member"))?
            .build()
            .map_err(lib("remove member"))?;
        commit_messages(output)
    }

    fn self_update(&mut self) -> Result<CommitMessages, PeerError> {
        let output = self
            .group_mut()?
            .commit_builder()
            .build()
            .map_err(lib("self update"))?;
        if !output.contains_update_path {
            return Err(lib("self update")("the empty commit has no UpdatePath"));
        }
        commit_messages(output)
    }

    fn merge_pending(&mut self) -> Result<(), PeerError> {
        self.group_mut()?
            .apply_pending_commit()
            .map_err(lib("merge pending commit"))?;
        Ok(())
    }

    fn discard_pending(&mut self) -> Result<(), PeerError> {
        self.group_mut()?.clear_pending_commit();
        Ok(())
    }

    fn join(&mut self, welcome: &[u8], ratchet_tree: Option<&[u8]>) -> Result<(), PeerError> {
        let welcome = parse("welcome", welcome)?;
        let (group, _) = self
            .client
            .join_group(parse_tree(ratchet_tree)?, &welcome, None)
            .map_err(lib("join from welcome"))?;
        self.group = Some(group);
        Ok(())
    }

    fn process(&mut self, message: &[u8]) -> Result<Event, PeerError> {
        let message = parse("decode", message)?;
        let group = self.group_mut()?;
        match group
            .process_incoming_message(message)
            .map_err(lib("process"))?
        {
            ReceivedMessage::ApplicationMessage(m) => Ok(Event::Application(m.data().to_vec())),
            ReceivedMessage::Commit(_) => Ok(Event::Commit {
                epoch: group.current_epoch(),
            }),
            ReceivedMessage::Proposal(_) => Ok(Event::Proposal),
            ReceivedMessage::GroupInfo(_)
            | ReceivedMessage::Welcome
            | ReceivedMessage::KeyPackage(_) => Err(PeerError::UnexpectedMessage {
                implementation: NAME,
                expected: "a PublicMessage or PrivateMessage",
            }),
        }
    }

    fn encrypt(&mut self, application_data: &[u8]) -> Result<Vec<u8>, PeerError> {
        self.group_mut()?
            .encrypt_application_message(application_data, Vec::new())
            .map_err(lib("encrypt"))?
            .to_bytes()
            .map_err(lib("encode application message"))
    }

    fn epoch(&self) -> Result<u64, PeerError> {
        Ok(self.group()?.current_epoch())
    }

    fn epoch_authenticator(&self) -> Result<Vec<u8>, PeerError> {
        Ok(self
            .group()?
            .epoch_authenticator()
            .map_err(lib("epoch authenticator"))?
            .to_vec())
    }

    fn export_secret(
        &self,
        label: &str,
        context: &[u8],
        length: usize,
    ) -> Result<Vec<u8>, PeerError> {
        Ok(self
            .group()?
            .export_secret(label.as_bytes(), context, length)
            .map_err(lib("export secret"))?
            .to_vec())
    }

    fn own_leaf_index(&self) -> Result<u32, PeerError> {
        Ok(self.group()?.current_member_index())
    }

    fn member_count(&self) -> Result<usize, PeerError> {
        Ok(self.group()?.roster().members_iter().count())
    }

    fn ratchet_tree(&self) -> Result<Vec<u8>, PeerError> {
        self.group()?
            .export_tree()
            .to_bytes()
            .map_err(lib("encode ratchet tree"))
    }

    fn group_info(&mut self, with_ratchet_tree: bool) -> Result<Vec<u8>, PeerError> {
        self.group()?
            .group_info_message_allowing_ext_commit(with_ratchet_tree)
            .map_err(lib("group info"))?
            .to_bytes()
            .map_err(lib("encode group info"))
    }

    fn save_state(&mut self) -> Result<SavedState, PeerError> {
        let group = self.group_mut()?;
        group.write_to_storage().map_err(lib("save"))?;
        let group_id = group.group_id().to_vec();
        let storage = self.client.group_state_storage();
        let state = storage
            .state(&group_id)
            .map_err(lib("save"))?
            .ok_or_else(|| lib("save")("no state written"))?;
        let mut records = vec![(STATE_KEY.to_vec(), state.to_vec())];
        if let Some(max) = storage.max_epoch_id(&group_id).map_err(lib("save"))? {
            let mut id = max;
            while let Some(data) = storage.epoch(&group_id, id).map_err(lib("save"))? {
                records.push((id.to_be_bytes().to_vec(), data.to_vec()));
                match id.checked_sub(1) {
                    Some(prev) => id = prev,
                    None => break,
                }
            }
        }
        Ok(SavedState { group_id, records })
    }

    fn load_state(&mut self, saved: &SavedState) -> Result<(), PeerError> {
        let mut state = None;
        let mut epochs = Vec::new();
        for (key, value) in &saved.records {
            if key.as_slice() == STATE_KEY {
                state = Some(Zeroizing::new(value.clone()));
            } else {
                let id = <[u8; 8]>::try_from(key.as_slice())
                    .map_err(|_| lib("load")("a record key is neither \"state\" nor an epoch"))?;
                epochs.push(EpochRecord::new(
                    u64::from_be_bytes(id),
                    Zeroizing::new(value.clone()),
                ));
            }
        }
        let data = state.ok_or_else(|| lib("load")("no state record"))?;
        epochs.sort_by_key(|e| e.id);
        // As after a restart: the store holds only what was saved.
        let mut storage = self.client.group_state_storage();
        storage.delete_group(&saved.group_id);
        storage
            .write(
                GroupState {
                    id: saved.group_id.clone(),
                    data,
                },
                epochs,
                Vec::new(),
            )
            .map_err(lib("load"))?;
        let group = self
            .client
            .load_group(&saved.group_id)
            .map_err(lib("load"))?;
        self.group = Some(group);
        Ok(())
    }

    fn join_external(
        &mut self,
        group_info: &[u8],
        ratchet_tree: Option<&[u8]>,
    ) -> Result<Vec<u8>, PeerError> {
        let group_info = parse("group info", group_info)?;
        let mut builder = self
            .client
            .external_commit_builder()
            .map_err(lib("external commit"))?;
        if let Some(tree) = parse_tree(ratchet_tree)? {
            builder = builder.with_tree_data(tree);
        }
        let (group, commit) = builder.build(group_info).map_err(lib("external commit"))?;
        self.group = Some(group);
        commit.to_bytes().map_err(lib("encode external commit"))
    }
}
