//! Saving a [`Group`] to sealed blobs and loading it back (see
//! [`crate::state`] for the header, the sealing and the record split).
//!
//! The plaintext of the state record (format version 2), in the TLS
//! presentation language; `CustodyKey`, `TreeChunk`, `TreeDiff` and
//! `TreeKemPrivateState` are in `tree/saved.rs`, `SecretTreeState` in
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
//!     uint32 n_leaves;
//!     opaque chunk_saves[16]<V>;          // per chunk, chunk 0 first: the save_id
//!                                         // of the save that wrote its TreeChunk
//!     struct {                            // node slots that changed since their
//!         uint32 node;                    // chunk's record was written (an
//!         optional<Node> value;           // incremental save writes a few here
//!         optional<opaque tree_hash<V>>;  // rather than seal the chunk again)
//!     } changed<V>;                       // ascending
//! } TreeChunksState;
//!
//! struct {
//!     opaque group_context<V>;            // GroupContext (§8.1)
//!     select (is_current) {               // the current epoch: its TreeChunk
//!         case true:  TreeChunksState;    // records; a pending commit's epoch:
//!         case false: TreeDiff;           // its differences from the current
//!     } tree;                             // tree
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
use std::sync::atomic::{AtomicU64, Ordering};

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
use crate::state::{
    EpochRecord, Reader, RecordKind, SavedGroup, StateError, TreeRecord, Writer, open, seal,
};
use crate::tree::saved::{
    apply_changed_slots, read_changed_slots, read_chunk, read_key, write_changed_slots,
    write_chunk, write_key,
};
use crate::tree::{ChunkRef, RatchetTree, TreeKemPrivate};
use crate::tree_math::LeafIndex;

/// Length of the random id that binds epoch records to their state.
const SAVE_ID_LEN: usize = 16;

/// Which save wrote a TreeChunk record: its `save_id`, in the record's
/// plaintext and listed in the state per chunk. The AEAD authenticates the
/// record, so a record whose `save_id` (and chunk index) is the one the
/// state lists is the record that save wrote: binding records to the state
/// this way costs nothing, where a SHA-256 of every record's plaintext
/// cost about a sixth of a load (measured: BENCHMARKS.md).
type RecordId = [u8; SAVE_ID_LEN];

/// From this many tree records on, a save seals and a load opens them on
/// every core (`crate::parallel::map`).
const PARALLEL_CHUNKS: usize = 4;

/// An incremental save writes the changed slots of a chunk in the state
/// (instead of sealing the chunk's record again) up to this many per
/// chunk...
const MAX_CHANGED_SLOTS_PER_CHUNK: usize = 16;
/// ... and this many in all (about 300 bytes each); beyond, the chunks
/// with the most changed slots are rewritten.
const MAX_CHANGED_SLOTS: usize = 128;

/// What the last confirmed save wrote of the tree (see
/// [`Group::save_changes`]).
#[derive(Default)]
pub(super) struct SavedTree {
    confirmed: Option<ConfirmedSave>,
    /// The sequence number of the last save made.
    last_seq: AtomicU64,
}

/// Per chunk, the chunk a confirmed save encoded and the `save_id` of the
/// save that wrote its record. Keeping the chunk keeps it from being changed in place: the tree
/// copies a chunk before changing it while another reference exists, so
/// the same chunk ([`ChunkRef::same`]) means the same nodes.
struct ConfirmedSave {
    seq: u64,
    chunks: Vec<(ChunkRef, RecordId)>,
}

/// The receipt of a save by [`Group::save_changes`]: give it back to
/// [`Group::confirm_saved`] once the store has committed that save, so
/// that the next save writes only what changed after it.
#[must_use = "an unconfirmed save makes the next save write the same tree records again"]
pub struct SaveTicket {
    group_id: Vec<u8>,
    seq: u64,
    chunks: Vec<(ChunkRef, RecordId)>,
}

impl std::fmt::Debug for SaveTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaveTicket")
            .field("seq", &self.seq)
            .field("tree_chunks", &self.chunks.len())
            .finish()
    }
}

/// Encodes chunk `c` of a tree as written by save `save_id` and seals it.
fn seal_chunk(
    sealer: &dyn StateSealer,
    group_id: &[u8],
    save_id: &RecordId,
    chunk: &ChunkRef,
    c: usize,
) -> Result<TreeRecord, StateError> {
    let index = u32::try_from(c).map_err(|_| malformed("tree chunk"))?;
    let mut w = Writer::with_capacity(48 * 1024);
    write_chunk(chunk, index, save_id, &mut w)?;
    let plaintext = w.finish();
    let data = seal(
        sealer,
        RecordKind::TreeChunk,
        group_id,
        u64::from(index),
        &plaintext,
    )?;
    Ok(TreeRecord { index, data })
}

/// Opens the tree record of chunk `index`, checks it is the one the save
/// `expected` wrote, and decodes it.
fn open_chunk(
    sealer: &dyn StateSealer,
    group_id: &[u8],
    index: u32,
    record: &TreeRecord,
    expected: &RecordId,
    hash_len: usize,
) -> Result<ChunkRef, StateError> {
    let (header, plaintext) = open(sealer, &record.data, RecordKind::TreeChunk, group_id)?;
    if header.epoch != u64::from(index) {
        return Err(StateError::TreeRecordMismatch(index));
    }
    let mut r = Reader::new(&plaintext);
    let (chunk, written_by) = read_chunk(&mut r, index, hash_len)?;
    if &written_by != expected {
        return Err(StateError::TreeRecordMismatch(index));
    }
    r.finish("tree chunk")?;
    Ok(chunk)
}

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

/// The current tree as a save writes it in the state.
#[derive(Clone, Copy)]
pub(crate) struct TreeSave<'a> {
    /// The save that wrote each chunk's record in the store after the
    /// save.
    saves: &'a [RecordId],
    /// The tree's chunks.
    chunks: &'a [ChunkRef],
    /// The `(chunk, slot)`s that differ from the stored records, ascending.
    changed: &'a [(usize, usize)],
}

/// How an epoch state's tree is written.
enum TreeOut<'a> {
    /// The current epoch: which saves wrote its TreeChunk records, and
    /// the slots that changed since.
    Chunks(TreeSave<'a>),
    /// Another epoch: its differences from the current tree.
    Diff(&'a RatchetTree),
}

/// Writes an epoch state with its tree as `tree` says.
fn write_epoch_state(
    w: &mut Writer,
    state: &EpochState,
    tree_out: TreeOut<'_>,
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
    match tree_out {
        TreeOut::Chunks(save) => {
            w.u32(tree.leaf_count());
            w.list(save.saves, |w, d| {
                w.raw(d);
                Ok(())
            })?;
            write_changed_slots(save.chunks, save.changed, w)?;
        }
        TreeOut::Diff(base) => tree.write_diff(base, w)?,
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
    sealer: &'a dyn StateSealer,
}

/// Where an epoch state's tree comes from.
enum TreeIn<'a> {
    /// The current epoch: the TreeChunk records the state lists.
    Records(&'a [TreeRecord]),
    /// Another epoch: differences from the current tree.
    Diff(&'a RatchetTree),
}

impl Expect<'_> {
    fn context(&self, r: &mut Reader<'_>) -> Result<GroupContext, StateError> {
        let context: GroupContext = r.wire("group_context")?;
        if context.group_id != self.group_id || context.cipher_suite != self.config.cipher_suite {
            return Err(malformed("group_context"));
        }
        Ok(context)
    }

    /// Reads the current tree: the writers the state lists and the slots
    /// changed since, then the records, opened and decoded on every core,
    /// and the changed slots applied. Returns the tree and, per chunk, the
    /// chunk of its record (before the changed slots) and the writer.
    fn tree_from_records(
        &self,
        r: &mut Reader<'_>,
        records: &[TreeRecord],
    ) -> Result<(RatchetTree, Vec<(ChunkRef, RecordId)>), StateError> {
        let n_leaves = r.u32("tree leaves")?;
        let writers = r.list("tree chunk saves", |r| {
            r.fixed::<SAVE_ID_LEN>("tree chunk save")
        })?;
        let hash_len = self.cs.hash_len();
        let changed = read_changed_slots(r, hash_len)?;
        // Bounded by the state's length (32 bytes per chunk).
        let mut by_chunk: Vec<Option<&TreeRecord>> = vec![None; writers.len()];
        for record in records {
            let slot = usize::try_from(record.index)
                .ok()
                .and_then(|i| by_chunk.get_mut(i))
                .ok_or(StateError::ExtraTreeRecord(record.index))?;
            if slot.replace(record).is_some() {
                return Err(StateError::DuplicateTreeRecord(record.index));
            }
        }
        let mut work = Vec::with_capacity(writers.len());
        for (c, (record, writer)) in by_chunk.into_iter().zip(&writers).enumerate() {
            let index = u32::try_from(c).map_err(|_| malformed("tree chunk saves"))?;
            let record = record.ok_or(StateError::MissingTreeRecord(index))?;
            work.push((index, record, writer));
        }
        let bases = crate::parallel::map(&work, PARALLEL_CHUNKS, |(index, record, writer)| {
            open_chunk(self.sealer, self.group_id, *index, record, writer, hash_len)
        })
        .map_err(|_| StateError::WorkerPanicked)?
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
        let mut chunks = bases.clone();
        apply_changed_slots(&mut chunks, changed)?;
        let tree = RatchetTree::from_chunks(self.cs, n_leaves, chunks)?;
        Ok((tree, bases.into_iter().zip(writers).collect()))
    }

    /// Reads an epoch state and its tree from `tree_in`; returns the
    /// chunks and writers of the tree records (empty for a diff).
    fn epoch_state(
        &self,
        r: &mut Reader<'_>,
        tree_in: TreeIn<'_>,
        custody: Option<&Arc<dyn KeyCustody>>,
    ) -> Result<(EpochState, Vec<(ChunkRef, RecordId)>), StateError> {
        let context = self.context(r)?;
        let (mut tree, writers) = match tree_in {
            TreeIn::Records(records) => self.tree_from_records(r, records)?,
            TreeIn::Diff(base) => (RatchetTree::read_diff(r, base)?, Vec::new()),
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
        let state = EpochState {
            context,
            tree,
            private,
            secrets,
            secret_tree,
            interim_transcript_hash,
            confirmation_tag,
        };
        Ok((state, writers))
    }
}

impl Group {
    /// Saves the whole group: encodes everything this member needs to
    /// continue (configuration, its signature key and HPKE keys as custody
    /// URIs, the current epoch with every tree record, the retained past
    /// epochs, cached proposals, own pending Updates and commit, the PSK
    /// store) and seals it with `sealer` (see [`crate::state`]). Store the
    /// result's state and records together, in one transaction; nothing in
    /// the group changes. For the first save, an export, or a store that
    /// lost rows; after every change, [`Group::save_changes`] writes less.
    pub fn save(&self, sealer: &dyn StateSealer) -> Result<SavedGroup, StateError> {
        Ok(self.save_tree(sealer, false)?.0)
    }

    /// Saves the group like [`Group::save`], but with only the tree
    /// records of the chunks that changed since the last save confirmed
    /// with [`Group::confirm_saved`] (every chunk if none was): persisting
    /// a commit then costs about what the commit changed. The state lists
    /// which save wrote every chunk's record, so the store must still hold the records of
    /// the confirmed save for the others. Write the result to the store,
    /// then confirm it with the ticket; a save that is not confirmed (the
    /// write failed) leaves the next one covering the same chunks again.
    pub fn save_changes(
        &self,
        sealer: &dyn StateSealer,
    ) -> Result<(SavedGroup, SaveTicket), StateError> {
        self.save_tree(sealer, true)
    }

    /// Confirms that the store committed the save of `ticket` (and holds
    /// its state and tree records): later [`Group::save_changes`] write
    /// only what changed since. Returns false, and changes nothing, for a
    /// ticket of another group or older than the last confirmed one.
    pub fn confirm_saved(&mut self, ticket: SaveTicket) -> bool {
        let SaveTicket {
            group_id,
            seq,
            chunks,
        } = ticket;
        if group_id != self.state.context.group_id
            || self
                .saved_tree
                .confirmed
                .as_ref()
                .is_some_and(|c| c.seq >= seq)
        {
            return false;
        }
        self.saved_tree.confirmed = Some(ConfirmedSave { seq, chunks });
        true
    }

    /// Forgets the last confirmed save: the next [`Group::save_changes`]
    /// writes every tree record (for a store that lost rows).
    pub fn forget_saved(&mut self) {
        self.saved_tree.confirmed = None;
    }

    /// A save with every tree record, or (`incremental`) with the records
    /// of the chunks changed since the confirmed save.
    fn save_tree(
        &self,
        sealer: &dyn StateSealer,
        incremental: bool,
    ) -> Result<(SavedGroup, SaveTicket), StateError> {
        let mut save_id = [0u8; SAVE_ID_LEN];
        OsRng.fill_bytes(&mut save_id);
        let group_id = self.state.context.group_id.clone();
        let epoch = self.state.context.epoch;
        let seq = self.saved_tree.last_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let tree = &self.state.tree;
        let chunks: Vec<ChunkRef> = (0..tree.chunk_count())
            .filter_map(|c| tree.chunk_ref(c))
            .collect();
        let confirmed = match &self.saved_tree.confirmed {
            Some(c) if incremental => c.chunks.as_slice(),
            _ => &[],
        };
        // Per chunk: unchanged since the confirmed save, a few slots
        // changed (written in the state), or rewritten.
        let mut rewrite = Vec::new();
        let mut changed: Vec<(usize, Vec<usize>)> = Vec::new();
        for (c, chunk) in chunks.iter().enumerate() {
            match confirmed.get(c) {
                Some((base, _)) if base.same(chunk) => {}
                Some((base, _)) => {
                    let slots = chunk.changed_slots(base);
                    if slots.len() > MAX_CHANGED_SLOTS_PER_CHUNK {
                        rewrite.push(c);
                    } else if !slots.is_empty() {
                        changed.push((c, slots));
                    }
                }
                None => rewrite.push(c),
            }
        }
        // Over the budget: rewrite the chunks with the most changed slots.
        let mut total: usize = changed.iter().map(|(_, s)| s.len()).sum();
        if total > MAX_CHANGED_SLOTS {
            changed.sort_by_key(|(_, s)| std::cmp::Reverse(s.len()));
            while total > MAX_CHANGED_SLOTS {
                let (c, s) = changed.remove(0);
                total -= s.len();
                rewrite.push(c);
            }
            changed.sort_by_key(|(c, _)| *c);
            rewrite.sort_unstable();
        }
        let sealed = crate::parallel::map(&rewrite, PARALLEL_CHUNKS, |&c| {
            seal_chunk(sealer, &group_id, &save_id, &chunks[c], c)
        })
        .map_err(|_| StateError::WorkerPanicked)?;
        // What the store holds after this save: the records it keeps and
        // the ones written now.
        let mut bases: Vec<(ChunkRef, RecordId)> = chunks
            .iter()
            .enumerate()
            .map(|(c, chunk)| {
                confirmed
                    .get(c)
                    .cloned()
                    .unwrap_or_else(|| (chunk.clone(), [0; SAVE_ID_LEN]))
            })
            .collect();
        let mut tree_records = Vec::with_capacity(sealed.len());
        for (&c, result) in rewrite.iter().zip(sealed) {
            tree_records.push(result?);
            bases[c] = (chunks[c].clone(), save_id);
        }
        let writers: Vec<RecordId> = bases.iter().map(|(_, d)| *d).collect();
        let changed: Vec<(usize, usize)> = changed
            .into_iter()
            .flat_map(|(c, slots)| slots.into_iter().map(move |i| (c, i)))
            .collect();
        let tree_chunks = u32::try_from(chunks.len()).map_err(|_| malformed("tree chunks"))?;
        let plaintext = self.encode_state(
            &save_id,
            TreeSave {
                saves: &writers,
                chunks: &chunks,
                changed: &changed,
            },
        )?;
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
        let ticket = SaveTicket {
            group_id: group_id.clone(),
            seq,
            chunks: bases,
        };
        Ok((
            SavedGroup {
                group_id,
                epoch,
                state,
                tree_chunks,
                tree_records,
                epoch_records,
            },
            ticket,
        ))
    }

    /// The state plaintext (see the module documentation).
    pub(crate) fn encode_state(
        &self,
        save_id: &[u8; SAVE_ID_LEN],
        tree_save: TreeSave<'_>,
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
            saved_tree: _,
        } = self;
        let mut w = Writer::with_capacity(
            4096 + SAVE_ID_LEN * tree_save.saves.len() + 320 * tree_save.changed.len(),
        );
        w.raw(save_id);
        w.bool(*removed);
        write_config(&mut w, config);
        write_key(&mut w, &signer.signature_key)?;
        w.wire(&signer.credential)?;
        write_epoch_state(&mut w, state, TreeOut::Chunks(tree_save))?;
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
            write_epoch_state(w, pending, TreeOut::Diff(&state.tree))?;
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

    /// Loads a group saved by [`Group::save`] or [`Group::save_changes`]:
    /// opens the state blob with `sealer` (it must be a state of
    /// `group_id`, sealed by this sealer's key), builds the tree from
    /// `tree_records` (exactly the chunks the state lists, each the record
    /// of the save it lists), finds the member's keys in `custody` by
    /// their URIs, and attaches the records of the retained past epochs
    /// from `epoch_records` (records of other epochs are ignored). The
    /// group continues with `validator` for the credentials it meets from
    /// now on, and takes the loaded records as its confirmed save. Nothing
    /// is changed on failure.
    pub(crate) fn load(
        sealer: &dyn StateSealer,
        custody: Arc<dyn KeyCustody>,
        validator: Arc<dyn CredentialValidator>,
        group_id: &[u8],
        state: &[u8],
        tree_records: &[TreeRecord],
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
            sealer,
        };
        let (current, stored_chunks) =
            expect.epoch_state(&mut r, TreeIn::Records(tree_records), key_custody)?;
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
            let (state, _) = expect.epoch_state(r, TreeIn::Diff(&current.tree), key_custody)?;
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

        let saved_tree = SavedTree {
            confirmed: Some(ConfirmedSave {
                seq: 0,
                chunks: stored_chunks,
            }),
            last_seq: AtomicU64::new(0),
        };
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
            saved_tree,
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
            &saved.tree_records,
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
        let save = TreeSave {
            saves: &[[7u8; SAVE_ID_LEN]],
            chunks: &[],
            changed: &[],
        };
        assert!(a.encode_state(&id, save).unwrap() == loaded.encode_state(&id, save).unwrap());
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
        let (saved, ticket) = a.save_changes(&sealer).unwrap();
        let writers: Vec<RecordId> = ticket.chunks.iter().map(|(_, d)| *d).collect();
        let save = TreeSave {
            saves: &writers,
            chunks: &[],
            changed: &[],
        };
        let good = a.encode_state(&[1; SAVE_ID_LEN], save).unwrap();
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
                &saved.tree_records,
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
