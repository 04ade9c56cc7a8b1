//! Saving a [`Group`] to sealed blobs and loading it back (see
//! [`crate::state`] for the header, the sealing and the record split).
//!
//! The plaintext of the state record (format version 1), in the TLS
//! presentation language; `CustodyKey`, `RatchetTreeState`, `TreeDiff`
//! and `TreeKemPrivateState` are in `tree/saved.rs`, `SecretTreeState` in
//! `secret_tree/saved.rs`, `PskStoreState` in `group/psk_store/saved.rs`:
//!
//! ```text
//! struct {
//!     uint16 cipher_suite;
//!     uint8 handshake_framing;            // 0 private, 1 public
//!     uint8 accept_public_handshakes;
//!     uint8 accept_private_handshakes;
//!     uint32 max_forward_distance;
//!     uint32 out_of_order_tolerance;
//!     uint64 max_past_epochs;
//!     uint32 padding_block;
//!     uint8 ratchet_tree_in_welcome;
//!     uint8 ratchet_tree_in_group_info;
//!     uint64 max_pending_proposals;
//! } GroupConfigState;
//!
//! struct {
//!     opaque sender_data_secret<V>;       // the epoch secrets of §8
//!     opaque encryption_secret<V>;        // empty: consumed into the secret tree
//!     opaque exporter_secret<V>;
//!     opaque external_secret<V>;
//!     opaque confirmation_key<V>;
//!     opaque membership_key<V>;
//!     opaque resumption_psk<V>;
//!     opaque epoch_authenticator<V>;
//!     opaque init_secret<V>;
//! } EpochSecretsState;
//!
//! struct {
//!     opaque group_context<V>;            // GroupContext (§8.1)
//!     select (is_current) {               // the current epoch: the whole tree;
//!         case true:  RatchetTreeState;   // a pending commit's epoch: its
//!         case false: TreeDiff;           // differences from the current one
//!     } tree;
//!     TreeKemPrivateState private;
//!     EpochSecretsState secrets;
//!     SecretTreeState secret_tree;
//!     opaque interim_transcript_hash<V>;
//!     opaque confirmation_tag<V>;         // MAC
//! } EpochStateState;
//!
//! struct {
//!     opaque save_id[16];                 // random per save; in every record
//!     uint8 removed;                      // this member was removed
//!     GroupConfigState config;
//!     CustodyKey signature_key;
//!     opaque credential<V>;               // Credential (§5.3)
//!     EpochStateState current;
//!     uint64 past_epochs<V>;              // the EpochRecords of this save, oldest first
//!     struct {
//!         opaque reference<V>;            // ProposalRef
//!         opaque proposal<V>;             // Proposal
//!         opaque sender<V>;               // Sender
//!     } proposals<V>;                     // cached proposals of the epoch
//!     struct {
//!         opaque reference<V>;            // ProposalRef
//!         opaque leaf_node<V>;            // LeafNode
//!         CustodyKey leaf_key;
//!     } own_updates<V>;                   // own Update proposals not yet committed
//!     struct {
//!         opaque digest<V>;               // Hash of the MLSMessage bytes
//!         ContentType content_type;
//!         uint64 epoch;
//!     } sent<V>;                          // own messages, recognised when echoed
//!     optional<PendingCommitState> pending_commit;
//!     PskStoreState psks;
//!     optional<opaque reinit<V>>;         // ReInit of the last merged commit (§11.2)
//!     optional<opaque linked_psk<V>>;     // ResumptionPSK this member joined with
//! } GroupState;
//!
//! struct {
//!     uint32 index;                       // LeafIndex
//!     opaque credential<V>;               // Credential
//!     opaque signature_key<V>;            // SignaturePublicKey
//!     opaque encryption_key<V>;           // HPKEPublicKey
//! } MemberState;
//!
//! struct {
//!     EpochStateState state;              // tree as a TreeDiff
//!     optional<opaque reinit<V>>;
//!     uint64 from_epoch;
//!     opaque digest<V>;                   // Hash of the commit's MLSMessage
//!     struct {                            // reported when the commit comes back
//!         uint64 epoch;
//!         MemberState adds<V>;
//!         MemberState removes<V>;
//!     } own;
//!     struct {                            // reported if another commit wins
//!         uint64 epoch;
//!         struct { opaque proposal<V>; } proposals<V>;  // Proposal
//!         MemberState adds<V>;
//!         MemberState removes<V>;
//!         uint8 force_path;
//!         uint8 group_info;
//!         opaque authenticated_data<V>;
//!     } lost;
//!     optional<struct {                   // CommitOptions::new_signer: the
//!         CustodyKey signature_key;       // signer after the merge (and of
//!         opaque credential<V>;           // the lost commit's options)
//!     }> new_signer;
//! } PendingCommitState;
//!
//! struct {
//!     opaque save_id[16];                 // the save_id of its GroupState
//!     opaque group_context<V>;
//!     opaque sender_data_secret<V>;
//!     SecretTreeState secret_tree;
//!     TreeDiff tree;                      // against the GroupState's current tree
//! } EpochRecordState;
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use hsmls_crypto::{CipherSuiteProvider, Digest, Secret};
use hsmls_custody::{KeyCustody, KeySpec, StateSealer};
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use super::commit::{LostCommit, OwnCommit, PendingCommit};
use super::proposals::{CachedProposal, suite_provider};
use super::{
    EpochState, Group, GroupConfig, HandshakeFraming, Member, OwnUpdate, PastEpoch, PskStore,
    SentMessage,
};
use crate::codec::{Credential, GroupContext, Mac, ReInit, ResumptionPsk};
use crate::credential::{CredentialValidator, Signer};
use crate::key_schedule::EpochSecrets;
use crate::message_protection::PaddingPolicy;
use crate::secret_tree::{SecretTree, SecretTreeConfig};
use crate::state::{EpochRecord, Reader, RecordKind, SavedGroup, StateError, Writer, open, seal};
use crate::tree::saved::{read_key, write_key};
use crate::tree::{RatchetTree, TreeKemPrivate};
use crate::tree_math::LeafIndex;

/// Length of the random id that binds epoch records to their state.
const SAVE_ID_LEN: usize = 16;

fn malformed(field: &'static str) -> StateError {
    StateError::MalformedPlaintext { field }
}

fn write_config(w: &mut Writer, config: &GroupConfig) {
    let GroupConfig {
        cipher_suite,
        handshake_framing,
        accept_public_handshakes,
        accept_private_handshakes,
        secret_tree:
            SecretTreeConfig {
                max_forward_distance,
                out_of_order_tolerance,
            },
        max_past_epochs,
        padding,
        ratchet_tree_in_welcome,
        ratchet_tree_in_group_info,
        max_pending_proposals,
    } = config;
    w.u16(cipher_suite.0);
    w.u8(match handshake_framing {
        HandshakeFraming::Private => 0,
        HandshakeFraming::Public => 1,
    });
    w.bool(*accept_public_handshakes);
    w.bool(*accept_private_handshakes);
    w.u32(*max_forward_distance);
    w.u32(*out_of_order_tolerance);
    w.len64(*max_past_epochs);
    w.u32(padding.block());
    w.bool(*ratchet_tree_in_welcome);
    w.bool(*ratchet_tree_in_group_info);
    w.len64(*max_pending_proposals);
}

fn read_config(r: &mut Reader<'_>) -> Result<GroupConfig, StateError> {
    Ok(GroupConfig {
        cipher_suite: crate::codec::CipherSuite(r.u16("cipher_suite")?),
        handshake_framing: match r.u8("handshake_framing")? {
            0 => HandshakeFraming::Private,
            1 => HandshakeFraming::Public,
            _ => return Err(malformed("handshake_framing")),
        },
        accept_public_handshakes: r.bool("accept_public_handshakes")?,
        accept_private_handshakes: r.bool("accept_private_handshakes")?,
        secret_tree: SecretTreeConfig {
            max_forward_distance: r.u32("max_forward_distance")?,
            out_of_order_tolerance: r.u32("out_of_order_tolerance")?,
        },
        max_past_epochs: r.len64("max_past_epochs")?,
        padding: PaddingPolicy::multiple_of(r.u32("padding_block")?),
        ratchet_tree_in_welcome: r.bool("ratchet_tree_in_welcome")?,
        ratchet_tree_in_group_info: r.bool("ratchet_tree_in_group_info")?,
        max_pending_proposals: r.len64("max_pending_proposals")?,
    })
}

fn write_secrets(w: &mut Writer, secrets: &EpochSecrets) -> Result<(), StateError> {
    let EpochSecrets {
        sender_data_secret,
        encryption_secret,
        exporter_secret,
        external_secret,
        confirmation_key,
        membership_key,
        resumption_psk,
        epoch_authenticator,
        init_secret,
    } = secrets;
    for s in [
        sender_data_secret,
        encryption_secret,
        exporter_secret,
        external_secret,
        confirmation_key,
        membership_key,
        resumption_psk,
        epoch_authenticator,
        init_secret,
    ] {
        w.bytes(s.as_bytes())?;
    }
    Ok(())
}

fn read_secret(
    r: &mut Reader<'_>,
    cs: &dyn CipherSuiteProvider,
    field: &'static str,
) -> Result<Secret, StateError> {
    let bytes = r.bytes(field)?;
    if bytes.len() != cs.hash_len() {
        return Err(malformed(field));
    }
    Ok(Secret::from_slice(bytes))
}

fn read_secrets(
    r: &mut Reader<'_>,
    cs: &dyn CipherSuiteProvider,
) -> Result<EpochSecrets, StateError> {
    let sender_data_secret = read_secret(r, cs, "sender_data_secret")?;
    // Consumed into the secret tree when the epoch began (§9.2).
    let encryption_secret = r.bytes("encryption_secret")?;
    if !encryption_secret.is_empty() {
        return Err(malformed("encryption_secret"));
    }
    Ok(EpochSecrets {
        sender_data_secret,
        encryption_secret: Secret::default(),
        exporter_secret: read_secret(r, cs, "exporter_secret")?,
        external_secret: read_secret(r, cs, "external_secret")?,
        confirmation_key: read_secret(r, cs, "confirmation_key")?,
        membership_key: read_secret(r, cs, "membership_key")?,
        resumption_psk: read_secret(r, cs, "resumption_psk")?,
        epoch_authenticator: read_secret(r, cs, "epoch_authenticator")?,
        init_secret: read_secret(r, cs, "init_secret")?,
    })
}

/// Writes an epoch state; `base` is the current tree the state's tree is
/// written against (None: write the whole tree).
fn write_epoch_state(
    w: &mut Writer,
    state: &EpochState,
    base: Option<&RatchetTree>,
) -> Result<(), StateError> {
    let EpochState {
        context,
        tree,
        private,
        secrets,
        secret_tree,
        interim_transcript_hash,
        confirmation_tag,
    } = state;
    w.wire(context)?;
    match base {
        None => tree.write_state(w)?,
        Some(base) => tree.write_diff(base, w)?,
    }
    private.write_state(w)?;
    write_secrets(w, secrets)?;
    secret_tree.write_state(w)?;
    w.bytes(interim_transcript_hash)?;
    w.wire(confirmation_tag)
}

/// What the reader of an epoch state checks the GroupContext against.
struct Expect<'a> {
    cs: &'static dyn CipherSuiteProvider,
    config: &'a GroupConfig,
    group_id: &'a [u8],
}

impl Expect<'_> {
    fn context(&self, r: &mut Reader<'_>) -> Result<GroupContext, StateError> {
        let context: GroupContext = r.wire("group_context")?;
        if context.group_id != self.group_id || context.cipher_suite != self.config.cipher_suite {
            return Err(malformed("group_context"));
        }
        Ok(context)
    }

    /// Reads an epoch state; `base`: the current tree its tree is a diff
    /// against (None: a whole tree).
    fn epoch_state(
        &self,
        r: &mut Reader<'_>,
        base: Option<&RatchetTree>,
        custody: Option<&Arc<dyn KeyCustody>>,
    ) -> Result<EpochState, StateError> {
        let context = self.context(r)?;
        let mut tree = match base {
            None => RatchetTree::read_state(r, self.cs)?,
            Some(base) => RatchetTree::read_diff(r, base)?,
        };
        let hash = tree.tree_hash().map_err(|_| malformed("tree"))?;
        if hash.as_bytes() != context.tree_hash {
            return Err(malformed("tree"));
        }
        let private = TreeKemPrivate::read_state(r, &tree, custody)?;
        let secrets = read_secrets(r, self.cs)?;
        let secret_tree = SecretTree::read_state(r, self.cs)?;
        if secret_tree.n_leaves() != tree.leaf_count() {
            return Err(malformed("secret tree leaves"));
        }
        let interim_transcript_hash = r.bytes("interim_transcript_hash")?.to_vec();
        let confirmation_tag: Mac = r.wire("confirmation_tag")?;
        Ok(EpochState {
            context,
            tree,
            private,
            secrets,
            secret_tree,
            interim_transcript_hash,
            confirmation_tag,
        })
    }
}

impl Group {
    /// Saves the group: encodes everything this member needs to continue
    /// (configuration, its signature key and HPKE keys as custody URIs,
    /// the current epoch, the retained past epochs, cached proposals, own
    /// pending Updates and commit, the PSK store) and seals it with
    /// `sealer` (see [`crate::state`]). Store the result's state and epoch
    /// records together, in one transaction; nothing in the group changes.
    pub fn save(&self, sealer: &dyn StateSealer) -> Result<SavedGroup, StateError> {
        let mut save_id = [0u8; SAVE_ID_LEN];
        OsRng.fill_bytes(&mut save_id);
        let group_id = self.state.context.group_id.clone();
        let epoch = self.state.context.epoch;
        let plaintext = self.encode_state(&save_id)?;
        let state = seal(sealer, RecordKind::GroupState, &group_id, epoch, &plaintext)?;
        drop(plaintext);
        let mut epoch_records = Vec::with_capacity(self.past.len());
        for past in &self.past {
            let plaintext = encode_past_epoch(past, &self.state.tree, &save_id)?;
            epoch_records.push(EpochRecord {
                epoch: past.context.epoch,
                data: seal(
                    sealer,
                    RecordKind::EpochRecord,
                    &group_id,
                    past.context.epoch,
                    &plaintext,
                )?,
            });
        }
        Ok(SavedGroup {
            group_id,
            epoch,
            state,
            epoch_records,
        })
    }

    /// The state plaintext (see the module documentation).
    pub(crate) fn encode_state(
        &self,
        save_id: &[u8; SAVE_ID_LEN],
    ) -> Result<Zeroizing<Vec<u8>>, StateError> {
        let Group {
            cs: _,
            config,
            signer,
            validator: _,
            state,
            past,
            proposals,
            own_updates,
            pending_commit,
            psks,
            removed,
            reinit,
            linked_psk,
            sent,
        } = self;
        // The tree dominates the size: about 300 bytes per member.
        let mut w = Writer::with_capacity(4096 + 320 * state.tree.member_count());
        w.raw(save_id);
        w.bool(*removed);
        write_config(&mut w, config);
        write_key(&mut w, &signer.signature_key)?;
        w.wire(&signer.credential)?;
        write_epoch_state(&mut w, state, None)?;
        w.list(past, |w, p| {
            w.u64(p.context.epoch);
            Ok(())
        })?;
        w.list(proposals, |w, p| {
            let CachedProposal {
                reference,
                proposal,
                sender,
            } = p;
            w.wire(reference)?;
            w.wire(proposal)?;
            w.wire(sender)
        })?;
        w.list(own_updates, |w, u| {
            let OwnUpdate {
                reference,
                leaf_node,
                leaf_key,
            } = u;
            w.wire(reference)?;
            w.wire(leaf_node)?;
            write_key(w, leaf_key)
        })?;
        w.list(sent, |w, m| {
            let SentMessage {
                digest,
                content_type,
                epoch,
            } = m;
            w.bytes(digest.as_bytes())?;
            w.item(content_type)?;
            w.u64(*epoch);
            Ok(())
        })?;
        w.optional(pending_commit.as_deref(), |w, p| {
            let PendingCommit {
                state: pending,
                reinit,
                from_epoch,
                digest,
                own,
                lost,
                new_signer,
            } = p;
            write_epoch_state(w, pending, Some(&state.tree))?;
            w.optional(reinit.as_ref(), |w, r| w.wire(r))?;
            w.u64(*from_epoch);
            w.bytes(digest.as_bytes())?;
            write_own_commit(w, own)?;
            write_lost_commit(w, lost)?;
            w.optional(new_signer.as_ref(), |w, s| {
                write_key(w, &s.signature_key)?;
                w.wire(&s.credential)
            })
        })?;
        psks.write_state(&mut w)?;
        w.optional(reinit.as_ref(), |w, r| w.wire(r))?;
        w.optional(linked_psk.as_ref(), |w, l| w.wire(l))?;
        Ok(w.finish())
    }

    /// Loads a group saved by [`Group::save`]: opens the state blob with
    /// `sealer` (it must be a state of `group_id`, sealed by this sealer's
    /// key), finds the member's keys in `custody` by their URIs, and
    /// attaches the records of the retained past epochs from
    /// `epoch_records` (records of other epochs are ignored). The group
    /// continues with `validator` for the credentials it meets from now
    /// on. Nothing is changed on failure.
    pub(crate) fn load(
        sealer: &dyn StateSealer,
        custody: Arc<dyn KeyCustody>,
        validator: Arc<dyn CredentialValidator>,
        group_id: &[u8],
        state: &[u8],
        epoch_records: &[EpochRecord],
    ) -> Result<Group, StateError> {
        let (header, plaintext) = open(sealer, state, RecordKind::GroupState, group_id)?;
        let mut r = Reader::new(&plaintext);
        let save_id: [u8; SAVE_ID_LEN] = r.fixed("save_id")?;
        let removed = r.bool("removed")?;
        let config = read_config(&mut r)?;
        let cs = suite_provider(config.cipher_suite)
            .map_err(|_| StateError::UnsupportedCipherSuite(config.cipher_suite.0))?;
        let signature_key = read_key(
            &mut r,
            KeySpec::Signature(cs.signature_scheme()),
            Some(custody.as_ref()),
        )?;
        let credential: Credential = r.wire("credential")?;
        // A removed member's HPKE keys were destroyed: their references are
        // rebuilt from the state instead of found in custody.
        let key_custody = (!removed).then_some(&custody);
        let expect = Expect {
            cs,
            config: &config,
            group_id,
        };
        let current = expect.epoch_state(&mut r, None, key_custody)?;
        if current.context.epoch != header.epoch {
            return Err(malformed("group_context"));
        }
        if let Some(leaf) = current.tree.leaf(current.private.own_leaf())
            && leaf.signature_key.as_slice() != signature_key.public_key().as_bytes()
        {
            return Err(StateError::KeyMismatch {
                uri: signature_key.uri().to_owned(),
            });
        }
        let past_epochs = r.list("past_epochs", |r| r.u64("past epoch"))?;
        if past_epochs.windows(2).any(|p| p[0] >= p[1])
            || past_epochs.last().is_some_and(|e| *e >= header.epoch)
        {
            return Err(malformed("past_epochs"));
        }
        let proposals = r.list("proposals", |r| {
            Ok(CachedProposal {
                reference: r.wire("proposal reference")?,
                proposal: r.wire("proposal")?,
                sender: r.wire("proposal sender")?,
            })
        })?;
        let own_updates = r.list("own_updates", |r| {
            Ok(OwnUpdate {
                reference: r.wire("update reference")?,
                leaf_node: r.wire("update leaf_node")?,
                leaf_key: read_key(r, KeySpec::Kem(cs.kem()), key_custody.map(|c| c.as_ref()))?,
            })
        })?;
        let sent = r.list("sent", |r| {
            Ok(SentMessage {
                digest: read_digest(r, "sent digest")?,
                content_type: r.item("sent content_type")?,
                epoch: r.u64("sent epoch")?,
            })
        })?;
        if sent.len() > super::SENT_MESSAGES_KEPT {
            return Err(malformed("sent"));
        }
        let pending_commit = r.optional("pending_commit", |r| {
            let state = expect.epoch_state(r, Some(&current.tree), key_custody)?;
            let reinit = r.optional("pending reinit", |r| r.wire::<ReInit>("pending reinit"))?;
            let from_epoch = r.u64("pending from_epoch")?;
            let digest = read_digest(r, "pending digest")?;
            let own = read_own_commit(r)?;
            let mut lost = read_lost_commit(r)?;
            let new_signer = r.optional("pending new_signer", |r| {
                let key = read_key(
                    r,
                    KeySpec::Signature(cs.signature_scheme()),
                    Some(custody.as_ref()),
                )?;
                let credential: Credential = r.wire("new_signer credential")?;
                Ok(Signer::new(custody.clone(), key, credential))
            })?;
            lost.new_signer = new_signer.clone();
            Ok(Box::new(PendingCommit {
                state,
                reinit,
                from_epoch,
                digest,
                own,
                lost,
                new_signer,
            }))
        })?;
        let psks = PskStore::read_state(&mut r)?;
        let reinit = r.optional("reinit", |r| r.wire::<ReInit>("reinit"))?;
        let linked_psk = r.optional("linked_psk", |r| r.wire::<ResumptionPsk>("linked_psk"))?;
        r.finish("group state")?;
        drop(plaintext);

        let past = load_past_epochs(
            sealer,
            &expect,
            &save_id,
            &current.tree,
            &past_epochs,
            epoch_records,
        )?;
        Ok(Group {
            cs,
            config,
            signer: Signer::new(custody, signature_key, credential),
            validator,
            state: current,
            past,
            proposals,
            own_updates,
            pending_commit,
            psks,
            removed,
            reinit,
            linked_psk,
            sent: VecDeque::from(sent),
        })
    }
}

fn read_digest(r: &mut Reader<'_>, field: &'static str) -> Result<Digest, StateError> {
    Digest::from_stored(r.bytes(field)?).ok_or(malformed(field))
}

fn write_members(w: &mut Writer, members: &[Member]) -> Result<(), StateError> {
    w.list(members, |w, m| {
        let Member {
            index,
            credential,
            signature_key,
            encryption_key,
        } = m;
        w.u32(index.0);
        w.wire(credential)?;
        w.wire(signature_key)?;
        w.wire(encryption_key)
    })
}

fn read_members(r: &mut Reader<'_>) -> Result<Vec<Member>, StateError> {
    r.list("members", |r| {
        Ok(Member {
            index: LeafIndex(r.u32("member index")?),
            credential: r.wire("member credential")?,
            signature_key: r.wire("member signature_key")?,
            encryption_key: r.wire("member encryption_key")?,
        })
    })
}

fn write_own_commit(w: &mut Writer, own: &OwnCommit) -> Result<(), StateError> {
    let OwnCommit {
        epoch,
        adds,
        removes,
    } = own;
    w.u64(*epoch);
    write_members(w, adds)?;
    write_members(w, removes)
}

fn read_own_commit(r: &mut Reader<'_>) -> Result<OwnCommit, StateError> {
    Ok(OwnCommit {
        epoch: r.u64("own commit epoch")?,
        adds: read_members(r)?,
        removes: read_members(r)?,
    })
}

fn write_lost_commit(w: &mut Writer, lost: &LostCommit) -> Result<(), StateError> {
    let LostCommit {
        epoch,
        proposals,
        adds,
        removes,
        force_path,
        group_info,
        authenticated_data,
        new_signer: _, // written once, with the pending commit's
    } = lost;
    w.u64(*epoch);
    w.list(proposals, |w, p| w.wire(p))?;
    write_members(w, adds)?;
    write_members(w, removes)?;
    w.bool(*force_path);
    w.bool(*group_info);
    w.bytes(authenticated_data)
}

fn read_lost_commit(r: &mut Reader<'_>) -> Result<LostCommit, StateError> {
    Ok(LostCommit {
        epoch: r.u64("lost commit epoch")?,
        proposals: r.list("lost commit proposals", |r| r.wire("lost commit proposal"))?,
        adds: read_members(r)?,
        removes: read_members(r)?,
        force_path: r.bool("lost commit force_path")?,
        group_info: r.bool("lost commit group_info")?,
        authenticated_data: r.bytes("lost commit authenticated_data")?.to_vec(),
        new_signer: None,
    })
}

fn encode_past_epoch(
    past: &PastEpoch,
    current_tree: &RatchetTree,
    save_id: &[u8; SAVE_ID_LEN],
) -> Result<Zeroizing<Vec<u8>>, StateError> {
    let PastEpoch {
        context,
        secret_tree,
        sender_data_secret,
        tree,
    } = past;
    let mut w = Writer::with_capacity(1024);
    w.raw(save_id);
    w.wire(context)?;
    w.bytes(sender_data_secret.as_bytes())?;
    secret_tree.write_state(&mut w)?;
    tree.write_diff(current_tree, &mut w)?;
    Ok(w.finish())
}

/// Opens and decodes the records of `epochs` from `records`.
fn load_past_epochs(
    sealer: &dyn StateSealer,
    expect: &Expect<'_>,
    save_id: &[u8; SAVE_ID_LEN],
    current_tree: &RatchetTree,
    epochs: &[u64],
    records: &[EpochRecord],
) -> Result<VecDeque<PastEpoch>, StateError> {
    let mut by_epoch: HashMap<u64, &EpochRecord> = HashMap::new();
    for record in records.iter().filter(|r| epochs.contains(&r.epoch)) {
        if by_epoch.insert(record.epoch, record).is_some() {
            return Err(StateError::DuplicateEpochRecord(record.epoch));
        }
    }
    let mut past = VecDeque::with_capacity(epochs.len());
    for &epoch in epochs {
        let record = by_epoch
            .get(&epoch)
            .ok_or(StateError::MissingEpochRecord(epoch))?;
        let (header, plaintext) = open(
            sealer,
            &record.data,
            RecordKind::EpochRecord,
            expect.group_id,
        )?;
        if header.epoch != epoch {
            return Err(StateError::EpochRecordMismatch(epoch));
        }
        let mut r = Reader::new(&plaintext);
        let record_save_id: [u8; SAVE_ID_LEN] = r.fixed("save_id")?;
        if &record_save_id != save_id {
            return Err(StateError::EpochRecordMismatch(epoch));
        }
        let context = expect.context(&mut r)?;
        if context.epoch != epoch {
            return Err(malformed("group_context"));
        }
        let sender_data_secret = read_secret(&mut r, expect.cs, "sender_data_secret")?;
        let secret_tree = SecretTree::read_state(&mut r, expect.cs)?;
        let tree = RatchetTree::read_diff(&mut r, current_tree)?;
        if secret_tree.n_leaves() != tree.leaf_count() {
            return Err(malformed("secret tree leaves"));
        }
        r.finish("epoch record")?;
        past.push_back(PastEpoch {
            context,
            secret_tree,
            sender_data_secret,
            tree,
        });
    }
    Ok(past)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Credential;
    use crate::credential::BasicCredentialValidator;
    use crate::key_package::{KeyPackageBundle, KeyPackageConfig};
    use crate::{CommitOptions, JoinOptions, ProcessedMessage};
    use hsmls_custody::{SoftwareCustody, SoftwareSealer};

    const NOW: u64 = 1_750_000_000;

    fn validator() -> Arc<dyn CredentialValidator> {
        Arc::new(BasicCredentialValidator::default())
    }

    fn member(custody: &Arc<SoftwareCustody>, name: &str) -> Signer {
        Signer::generate(
            custody.clone() as Arc<dyn KeyCustody>,
            Credential::Basic(name.as_bytes().to_vec()),
        )
        .unwrap()
    }

    /// Alice with past epochs, consumed generations, a cached proposal,
    /// her own Update, an external PSK and a pending commit; and Bob.
    fn busy_pair(custody: &Arc<SoftwareCustody>) -> (Group, Group) {
        let mut a = Group::create(
            GroupConfig::default(),
            member(custody, "alice"),
            validator(),
            b"saved-group".to_vec(),
            Vec::new(),
            NOW,
        )
        .unwrap();
        let bob = member(custody, "bob");
        let kp = KeyPackageBundle::generate(&KeyPackageConfig::new(NOW, 3600), &bob).unwrap();
        let out = a
            .add_members(std::slice::from_ref(&kp.key_package), NOW)
            .unwrap();
        a.merge_pending_commit().unwrap();
        let mut b = Group::join_from_welcome(
            GroupConfig::default(),
            bob,
            validator(),
            &kp,
            &out.welcome.unwrap(),
            JoinOptions::default(),
        )
        .unwrap();
        for _ in 0..3 {
            let out = b.self_update(NOW).unwrap();
            b.merge_pending_commit().unwrap();
            let ProcessedMessage::StagedCommit(s) = a.process_incoming(&out.commit, NOW).unwrap()
            else {
                panic!("commit");
            };
            a.merge_staged_commit(s).unwrap();
            // Out of order: the second message first.
            let m1 = b.encrypt_application(b"one").unwrap();
            let m2 = b.encrypt_application(b"two").unwrap();
            assert!(matches!(
                a.process_incoming(&m2, NOW).unwrap(),
                ProcessedMessage::ApplicationMessage { .. }
            ));
            let _ = m1;
        }
        let proposal = b.propose_update().unwrap();
        assert!(matches!(
            a.process_incoming(&proposal, NOW).unwrap(),
            ProcessedMessage::Proposal { .. }
        ));
        let _update = a.propose_update().unwrap();
        a.psk_store_mut()
            .insert_external(b"psk".to_vec(), Secret::from_slice(&[5; 32]));
        let _pending = a.commit(CommitOptions::new(), NOW).unwrap();
        (a, b)
    }

    fn reload(g: &Group, sealer: &SoftwareSealer, custody: &Arc<SoftwareCustody>) -> Group {
        let saved = g.save(sealer).unwrap();
        Group::load(
            sealer,
            custody.clone(),
            validator(),
            g.group_id(),
            &saved.state,
            &saved.epoch_records,
        )
        .unwrap()
    }

    #[test]
    fn load_then_encode_gives_the_same_plaintext() {
        let custody = Arc::new(SoftwareCustody::new());
        let sealer = SoftwareSealer::generate();
        let (a, _b) = busy_pair(&custody);
        assert!(a.has_pending_commit());
        assert_eq!(a.past.len(), 2);
        assert!(!a.own_updates.is_empty() && a.proposals.len() >= 2);
        let loaded = reload(&a, &sealer, &custody);
        let id = [3u8; SAVE_ID_LEN];
        assert!(a.encode_state(&id).unwrap() == loaded.encode_state(&id).unwrap());
        for (p, q) in a.past.iter().zip(&loaded.past) {
            assert!(
                encode_past_epoch(p, &a.state.tree, &id).unwrap()
                    == encode_past_epoch(q, &loaded.state.tree, &id).unwrap()
            );
            assert!(p == q);
        }
        assert!(a.state_snapshot() == loaded.state_snapshot());
        let (p, q) = (
            a.pending_commit.as_ref().unwrap(),
            loaded.pending_commit.as_ref().unwrap(),
        );
        assert!(p.state.tree == q.state.tree && p.from_epoch == q.from_epoch);
        assert!(p.state.secret_tree == q.state.secret_tree);
        assert_eq!(loaded.config, a.config);
    }

    #[test]
    fn a_plaintext_that_does_not_decode_is_malformed() {
        let custody = Arc::new(SoftwareCustody::new());
        let sealer = SoftwareSealer::generate();
        let (a, _) = busy_pair(&custody);
        let good = a.encode_state(&[1; SAVE_ID_LEN]).unwrap();
        let load = |plaintext: &[u8]| {
            let blob = seal(
                &sealer,
                RecordKind::GroupState,
                a.group_id(),
                a.epoch(),
                plaintext,
            )
            .unwrap();
            Group::load(
                &sealer,
                custody.clone(),
                validator(),
                a.group_id(),
                &blob,
                &[],
            )
        };
        // Cut at a few places, and with a byte appended.
        for len in [0, 17, 40, good.len() / 2, good.len() - 1] {
            assert!(
                matches!(
                    load(&good[..len]),
                    Err(StateError::MalformedPlaintext { .. })
                ),
                "{len}"
            );
        }
        let mut longer = good.to_vec();
        longer.push(0);
        assert!(matches!(
            load(&longer),
            Err(StateError::MalformedPlaintext {
                field: "group state"
            })
        ));
        // removed = 2 is not a bool.
        let mut bad = good.to_vec();
        bad[SAVE_ID_LEN] = 2;
        assert!(matches!(
            load(&bad),
            Err(StateError::MalformedPlaintext { field: "removed" })
        ));
        // An unknown cipher suite.
        let mut bad = good.to_vec();
        bad[SAVE_ID_LEN + 1..SAVE_ID_LEN + 3].copy_from_slice(&[0x7f, 0x7f]);
        assert!(matches!(
            load(&bad),
            Err(StateError::UnsupportedCipherSuite(0x7f7f))
        ));
    }
}
