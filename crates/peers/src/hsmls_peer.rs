//! The hsmls peer: hsmls's own [`Group`] with software custody.
//!
//! Settings: cipher suite 0x0002 (or the one given to
//! [`Peer::with_suite`]), basic credentials, [`GroupConfig`]'s
//! defaults (handshakes sent as PrivateMessage unless
//! [`PeerOptions::public_handshakes`], both forms accepted, the
//! ratchet_tree extension in Welcome). Self-updates are commits with
//! `force_path` and without a GroupInfo, as the peers make them. Saved
//! state is [`Group::save`], sealed by the client's custody.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hsmls::UnixTime;
use hsmls::wire::LeafIndex;
use hsmls::wire::{Credential, Decode as _, Encode as _, RatchetTree};
use hsmls::{
    BasicCredentialValidator, Client, CommitOptions, CommitOutput, EpochRecord, Group, GroupConfig,
    HandshakeFraming, JoinOptions, KeyPackageBundle, KeyPackageConfig, ProcessedMessage, Signer,
    TreeRecord,
};
use hsmls_custody::SoftwareCustody;

use crate::{CommitMessages, Event, Peer, PeerError, PeerOptions, SavedState};

/// The record key of the sealed group state in a [`SavedState`]; epoch
/// records are keyed by their epoch (8 bytes, big-endian), tree records by
/// [`TREE_KEY_PREFIX`] and their chunk index (4 bytes, big-endian).
const STATE_KEY: &[u8] = b"state";
/// The start of a tree record's key in a [`SavedState`].
const TREE_KEY_PREFIX: &[u8] = b"chunk:";

const NAME: &str = "hsmls";
/// KeyPackage validity (RFC 9420 §10: lifetime).
const KEY_PACKAGE_VALIDITY: u64 = 90 * 24 * 3600;

fn lib<E: fmt::Display>(operation: &'static str) -> impl FnOnce(E) -> PeerError {
    move |e| PeerError::Library {
        implementation: NAME,
        operation,
        detail: e.to_string(),
    }
}

fn now() -> UnixTime {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn parse_tree(bytes: Option<&[u8]>) -> Result<Option<RatchetTree>, PeerError> {
    bytes
        .map(|b| RatchetTree::decode(b).map_err(lib("ratchet tree")))
        .transpose()
}

fn commit_messages(output: CommitOutput) -> CommitMessages {
    CommitMessages {
        commit: output.commit,
        welcome: output.welcome,
    }
}

/// An hsmls client with at most one group; its keys are in a
/// [`SoftwareCustody`].
pub struct HsmlsPeer {
    suite: u16,
    always_path: bool,
    custody: Arc<SoftwareCustody>,
    client: Client,
    key_packages: Vec<KeyPackageBundle>,
    group: Option<Group>,
}

impl fmt::Debug for HsmlsPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HsmlsPeer")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl HsmlsPeer {
    fn group(&self) -> Result<&Group, PeerError> {
        self.group.as_ref().ok_or(PeerError::NoGroup(NAME))
    }

    fn group_mut(&mut self) -> Result<&mut Group, PeerError> {
        self.group.as_mut().ok_or(PeerError::NoGroup(NAME))
    }
}

impl Peer for HsmlsPeer {
    const NAME: &'static str = NAME;

    fn with_options(identity: &[u8], options: PeerOptions) -> Result<Self, PeerError> {
        let suite = options.suite;
        let scheme = hsmls_crypto::CipherSuite(suite)
            .provider()
            .map_err(lib("cipher suite"))?
            .signature_scheme();
        let custody = Arc::new(SoftwareCustody::new());
        let signer = Signer::generate_for(
            custody.clone(),
            Credential::Basic(identity.to_vec()),
            scheme,
        )
        .map_err(lib("signature key"))?;
        let mut config = GroupConfig::default();
        config.cipher_suite = hsmls::wire::CipherSuite(suite);
        if options.public_handshakes {
            config.handshake_framing = HandshakeFraming::Public;
        }
        Ok(Self {
            suite,
            always_path: options.always_path,
            custody,
            client: Client::new(signer, Arc::new(BasicCredentialValidator::default()))
                .with_group_config(config),
            key_packages: Vec::new(),
            group: None,
        })
    }

    fn key_package(&mut self) -> Result<Vec<u8>, PeerError> {
        let bundle = self
            .client
            .generate_key_package(&{
                let mut config = KeyPackageConfig::new(now(), KEY_PACKAGE_VALIDITY);
                config.cipher_suite = hsmls::wire::CipherSuite(self.suite);
                config
            })
            .map_err(lib("key package"))?;
        let bytes = bundle.to_bytes().map_err(lib("encode key package"))?;
        self.key_packages.push(bundle);
        Ok(bytes)
    }

    fn create_group(&mut self, group_id: &[u8]) -> Result<(), PeerError> {
        let group = self
            .client
            .create_group(group_id.to_vec(), Vec::new(), now())
            .map_err(lib("create group"))?;
        self.group = Some(group);
        Ok(())
    }

    fn add_members(&mut self, key_packages: &[Vec<u8>]) -> Result<CommitMessages, PeerError> {
        let mut options = CommitOptions::new();
        options.add_key_packages = self
            .client
            .validate_key_packages(key_packages, now())
            .map_err(lib("validate key package"))?;
        options.force_path = self.always_path;
        let output = self
            .group_mut()?
            .commit(options, now())
            .map_err(lib("add members"))?;
        Ok(commit_messages(output))
    }

    fn remove_member(&mut self, leaf_index: u32) -> Result<CommitMessages, PeerError> {
        let output = self
            .group_mut()?
            .remove_members(&[LeafIndex(leaf_index)], now())
            .map_err(lib("remove member"))?;
        Ok(commit_messages(output))
    }

    fn self_update(&mut self) -> Result<CommitMessages, PeerError> {
        let mut options = CommitOptions::new();
        options.force_path = true;
        options.group_info = false;
        let output = self
            .group_mut()?
            .commit(options, now())
            .map_err(lib("self update"))?;
        Ok(commit_messages(output))
    }

    fn merge_pending(&mut self) -> Result<(), PeerError> {
        self.group_mut()?
            .merge_pending_commit()
            .map_err(lib("merge pending commit"))
    }

    fn discard_pending(&mut self) -> Result<(), PeerError> {
        self.group_mut()?
            .discard_pending_commit()
            .map_err(lib("discard pending commit"))
    }

    fn join(&mut self, welcome: &[u8], ratchet_tree: Option<&[u8]>) -> Result<(), PeerError> {
        let tree = parse_tree(ratchet_tree)?;
        let mut last_error = None;
        for (i, bundle) in self.key_packages.iter().enumerate() {
            let mut options = JoinOptions::default();
            options.ratchet_tree = tree.clone();
            match self.client.join_from_welcome(bundle, welcome, options) {
                Ok(group) => {
                    // Used: the join destroyed its init key.
                    let _used = self.key_packages.remove(i);
                    self.group = Some(group);
                    return Ok(());
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(match last_error {
            Some(e) => lib("join from welcome")(e),
            None => lib("join from welcome")("no KeyPackage generated"),
        })
    }

    fn process(&mut self, message: &[u8]) -> Result<Event, PeerError> {
        let group = self.group_mut()?;
        match group
            .process_incoming(message, now())
            .map_err(lib("process"))?
        {
            ProcessedMessage::ApplicationMessage { data, .. } => Ok(Event::Application(data)),
            ProcessedMessage::Proposal { .. } => Ok(Event::Proposal),
            ProcessedMessage::StagedCommit(staged) => {
                group
                    .merge_staged_commit(staged)
                    .map_err(lib("merge commit"))?;
                Ok(Event::Commit {
                    epoch: group.epoch(),
                })
            }
            ProcessedMessage::OwnCommit(own) => Ok(Event::Commit { epoch: own.epoch }),
            _ => Err(lib("process")(
                "one of this member's own messages came back",
            )),
        }
    }

    fn encrypt(&mut self, application_data: &[u8]) -> Result<Vec<u8>, PeerError> {
        self.group_mut()?
            .encrypt_application(application_data)
            .map_err(lib("encrypt"))
    }

    fn epoch(&self) -> Result<u64, PeerError> {
        Ok(self.group()?.epoch())
    }

    fn epoch_authenticator(&self) -> Result<Vec<u8>, PeerError> {
        Ok(self.group()?.epoch_authenticator().to_vec())
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
            .as_bytes()
            .to_vec())
    }

    fn own_leaf_index(&self) -> Result<u32, PeerError> {
        Ok(self.group()?.own_leaf_index().0)
    }

    fn member_count(&self) -> Result<usize, PeerError> {
        Ok(self.group()?.members().len())
    }

    fn ratchet_tree(&self) -> Result<Vec<u8>, PeerError> {
        self.group()?
            .ratchet_tree()
            .encode()
            .map_err(lib("encode ratchet tree"))
    }

    fn group_info(&mut self, with_ratchet_tree: bool) -> Result<Vec<u8>, PeerError> {
        let group = self.group_mut()?;
        let config = group.config().clone();
        let mut with_tree = config.clone();
        with_tree.ratchet_tree_in_group_info = with_ratchet_tree;
        group.set_config(with_tree);
        let group_info = group.group_info();
        group.set_config(config);
        group_info.map_err(lib("group info"))
    }

    fn save_state(&mut self) -> Result<SavedState, PeerError> {
        let saved = self
            .group()?
            .save(self.custody.state_sealer())
            .map_err(lib("save"))?;
        let mut records = vec![(STATE_KEY.to_vec(), saved.state)];
        records.extend(saved.tree_records.into_iter().map(|r| {
            let mut key = TREE_KEY_PREFIX.to_vec();
            key.extend_from_slice(&r.index.to_be_bytes());
            (key, r.data)
        }));
        records.extend(
            saved
                .epoch_records
                .into_iter()
                .map(|r| (r.epoch.to_be_bytes().to_vec(), r.data)),
        );
        Ok(SavedState {
            group_id: saved.group_id,
            records,
        })
    }

    fn load_state(&mut self, saved: &SavedState) -> Result<(), PeerError> {
        let mut state = None;
        let mut epoch_records = Vec::new();
        let mut tree_records = Vec::new();
        for (key, value) in &saved.records {
            if key.as_slice() == STATE_KEY {
                state = Some(value.as_slice());
            } else if let Some(index) = key.strip_prefix(TREE_KEY_PREFIX) {
                let index = <[u8; 4]>::try_from(index)
                    .map_err(|_| lib("load")("a tree record key without a chunk index"))?;
                tree_records.push(TreeRecord {
                    index: u32::from_be_bytes(index),
                    data: value.clone(),
                });
            } else {
                let epoch = <[u8; 8]>::try_from(key.as_slice())
                    .map_err(|_| lib("load")("a record key is neither \"state\" nor an epoch"))?;
                epoch_records.push(EpochRecord {
                    epoch: u64::from_be_bytes(epoch),
                    data: value.clone(),
                });
            }
        }
        let state = state.ok_or_else(|| lib("load")("no state record"))?;
        let group = self
            .client
            .load_group(
                self.custody.state_sealer(),
                &saved.group_id,
                state,
                &tree_records,
                &epoch_records,
            )
            .map_err(lib("load"))?;
        self.group = Some(group);
        Ok(())
    }

    fn join_external(
        &mut self,
        group_info: &[u8],
        ratchet_tree: Option<&[u8]>,
    ) -> Result<Vec<u8>, PeerError> {
        let mut options = JoinOptions::default();
        options.ratchet_tree = parse_tree(ratchet_tree)?;
        let (group, commit) = self
            .client
            .join_by_external_commit(group_info, options)
            .map_err(lib("external commit"))?;
        self.group = Some(group);
        Ok(commit)
    }
}
