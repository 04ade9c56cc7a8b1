//! Group state at rest: a [`Group`](crate::Group) or a
//! [`KeyPackageBundle`](crate::KeyPackageBundle) encoded to a versioned
//! blob, sealed with AES-256-GCM under a key held by the custody backend
//! ([`StateSealer`](hsmls_custody::StateSealer)), and loaded back.
//!
//! A client saves its groups after every change so that a restart loses
//! nothing: the private keys already survive in the token, and the saved
//! state names them by their custody URIs. What cannot live in a token
//! (epoch secrets, the secret tree, parent-node keys; RFC 9420 §9.2) is
//! only ever written sealed, so a copy of the state file is useless
//! without the token.
//!
//! # Records
//!
//! [`Group::save`](crate::Group::save) gives a [`SavedGroup`]: one *state*
//! blob (everything of the current epoch and the pending operations, but
//! the ratchet tree's nodes), the *tree records* ([`TreeRecord`]: the
//! tree's node array cut into chunks of 256 slots, one sealed record per
//! chunk) and one [`EpochRecord`] per retained past epoch (what decrypts
//! late application messages of that epoch). Each is sealed separately, so
//! a store can delete a past epoch's record on its own when the window
//! moves on (§9.2), and must write the state, the tree records and the set
//! of epoch records in one transaction. The epoch records carry the random
//! `save_id` of their state, and
//! [`Client::load_group`](crate::Client::load_group) refuses records of
//! another save. The state lists, per chunk, the `save_id` of the save
//! that wrote the chunk's tree record (the record carries it, under the
//! AEAD), so a tree record of another save or another chunk is refused
//! too, while an unchanged chunk's record written by an earlier save is
//! still the one the state lists.
//!
//! That is what makes saving incremental:
//! [`Group::save_changes`](crate::Group::save_changes) seals only the tree
//! chunks that changed since the last save the application confirmed
//! ([`Group::confirm_saved`](crate::Group::confirm_saved), after the
//! store committed it), so persisting a commit costs about what the commit
//! changed (a path: O(log N) nodes, in a few chunks), not the whole tree.
//! A save that is not confirmed leaves the next one covering the same
//! chunks again, so a failed write never loses a chunk.
//! [`Group::save`](crate::Group::save) is a full save: every chunk.
//!
//! # Format (version 2)
//!
//! In the TLS presentation language of RFC 9420 §2.1 (`<V>`: the
//! variable-length vectors of §2.1.2). Each blob is a clear header followed
//! by the sealed body; the header, byte for byte, is the AEAD's additional
//! data, so none of it can be changed without the body failing to open:
//!
//! ```text
//! struct {
//!     opaque magic[8] = "HSMLS\0ST";
//!     uint16 format_version = 2;
//!     uint8 record_kind;          // 1 group state, 2 epoch record, 3 KeyPackage bundle,
//!                                 // 4 tree chunk
//!     opaque sealing_key_id<V>;   // StateSealer::key_id: which token's key
//!     opaque group_id<V>;         // the KeyPackageRef for a KeyPackage bundle
//!     uint64 epoch;               // 0 for a KeyPackage bundle, the chunk
//!                                 // index for a tree chunk
//!     uint32 sealed_length;       // length of what follows
//! } SealedHeader;
//!
//! nonce[12] ‖ AES-256-GCM(plaintext, aad = SealedHeader) ‖ tag[16]
//! ```
//!
//! The plaintexts (`GroupState`, `EpochRecord`, `KeyPackageBundle`,
//! `TreeChunk`) are described next to their encoders (`group/saved.rs`,
//! `key_package/saved.rs`, `tree/saved.rs`). Version 1 (the whole tree in
//! the state blob) is not read: its blobs give
//! [`StateError::UnknownVersion`]. Wire structures of RFC 9420 (GroupContext,
//! LeafNode, Node, Proposal, ...) appear as `opaque x<V>` holding their RFC
//! encoding. The plaintext lives only in zeroizing buffers; decoding uses
//! the project's bounded decoders of variable-length vectors, so a
//! malformed blob gives a typed error, never a panic or an unbounded
//! allocation.

mod codec;
mod sealed;

pub use sealed::{FORMAT_VERSION, MAGIC, RecordKind, SealedHeader};

pub(crate) use codec::{Reader, Writer};
pub(crate) use sealed::{open, seal};

use hsmls_custody::CustodyError;

use crate::codec::CodecError;

/// Why a saved state could not be saved or loaded. Loading never changes
/// anything: on error the caller's stored bytes and the custody's keys are
/// as they were.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The blob does not start with the hsmls state magic.
    #[error("not an hsmls state blob (bad magic)")]
    BadMagic,
    /// The blob has a format version this build cannot read.
    #[error("unknown state format version {0}")]
    UnknownVersion(u16),
    /// The header names a record kind this build does not know.
    #[error("unknown record kind {0}")]
    UnknownRecordKind(u8),
    /// The blob holds another kind of record than the one asked for.
    #[error("the blob holds a {found:?} record, not a {expected:?} record")]
    WrongRecordKind {
        /// The kind asked for.
        expected: RecordKind,
        /// The kind in the blob.
        found: RecordKind,
    },
    /// The blob was sealed by another key: another token (or another
    /// software custody) saved it.
    #[error(
        "sealed by another key (key id {found}; this custody's key is {expected}): a blob of another token"
    )]
    SealedByAnotherKey {
        /// This sealer's key id (hex).
        expected: String,
        /// The key id in the blob (hex).
        found: String,
    },
    /// The blob is a state of another group than the one asked for.
    #[error("the blob is for group {found}, not for group {expected}")]
    WrongGroup {
        /// The group id asked for (hex).
        expected: String,
        /// The group id in the blob (hex).
        found: String,
    },
    /// The blob is a bundle of another KeyPackage than the one asked for.
    #[error("the blob is for KeyPackage {found}, not for KeyPackage {expected}")]
    WrongKeyPackage {
        /// The KeyPackageRef asked for (hex).
        expected: String,
        /// The KeyPackageRef in the blob (hex).
        found: String,
    },
    /// The blob ends before its header or its sealed body does.
    #[error("the blob is truncated")]
    Truncated,
    /// Bytes follow the sealed body.
    #[error("{0} bytes follow the sealed body")]
    TrailingData(usize),
    /// The header is not well formed (a length header, not a truncation).
    #[error("malformed header")]
    MalformedHeader,
    /// The sealed body does not open: the blob (header or body) was
    /// altered.
    #[error("the blob was altered (it does not open under its header)")]
    Altered,
    /// The opened plaintext does not decode (a field that is not what
    /// the format says).
    #[error("malformed state plaintext (field {field})")]
    MalformedPlaintext {
        /// The field that did not decode.
        field: &'static str,
    },
    /// The state lists an epoch record that was not given.
    #[error("the epoch record of epoch {0} is missing")]
    MissingEpochRecord(u64),
    /// Two epoch records were given for the same epoch.
    #[error("two epoch records for epoch {0}")]
    DuplicateEpochRecord(u64),
    /// An epoch record belongs to another save of the state (the store did
    /// not write state and records together).
    #[error("the epoch record of epoch {0} belongs to another save of the state")]
    EpochRecordMismatch(u64),
    /// The state lists a tree record that was not given.
    #[error("the tree record of chunk {0} is missing")]
    MissingTreeRecord(u32),
    /// A tree record was given for a chunk the state does not list (the
    /// tree has fewer chunks).
    #[error("a tree record for chunk {0}, which the state does not list")]
    ExtraTreeRecord(u32),
    /// Two tree records were given for the same chunk.
    #[error("two tree records for chunk {0}")]
    DuplicateTreeRecord(u32),
    /// A tree record is not the one the state lists for its chunk: written
    /// by another save than the one the state lists, or another chunk's
    /// record.
    #[error("the tree record of chunk {0} is not the one of this state")]
    TreeRecordMismatch(u32),
    /// A worker thread of a parallel save or load panicked (a bug).
    #[error("a worker thread panicked")]
    WorkerPanicked,
    /// The cipher suite of the saved state is not implemented.
    #[error("unsupported cipher suite 0x{0:04x}")]
    UnsupportedCipherSuite(u16),
    /// A key the state names is not in the custody (destroyed, or another
    /// token).
    #[error("key not found in custody: {uri}")]
    KeyNotFound {
        /// The key's custody URI.
        uri: String,
    },
    /// A key found in custody is not the one the state names (another
    /// public key or purpose).
    #[error("the key in custody does not match the state: {uri}")]
    KeyMismatch {
        /// The key's custody URI.
        uri: String,
    },
    /// The custody backend failed (a token error, not a missing key).
    #[error(transparent)]
    Custody(CustodyError),
    /// Encoding the state failed (a value too long for the format).
    #[error("cannot encode the state: {0}")]
    Encoding(#[source] CodecError),
}

/// A saved group: the sealed state, the sealed tree records this save
/// wrote and one sealed record per retained past epoch. Write them to
/// storage together, in one transaction: replace the state, insert or
/// replace the given tree records, delete the group's tree records of
/// chunks at or beyond [`SavedGroup::tree_chunks`], and replace the set
/// of epoch records. A plain record (not `#[non_exhaustive]`): a store
/// builds it again from what it read (then with every tree record); new
/// data goes inside the sealed, versioned blobs.
#[must_use = "a saved group is lost unless written to storage"]
#[derive(Clone, PartialEq, Eq)]
pub struct SavedGroup {
    /// The group id (in clear in the header too).
    pub group_id: Vec<u8>,
    /// The current epoch.
    pub epoch: u64,
    /// The sealed state blob.
    pub state: Vec<u8>,
    /// How many tree records (chunks) the state lists: records `0 ..
    /// tree_chunks` make the tree.
    pub tree_chunks: u32,
    /// Sealed tree records, by ascending chunk: every chunk for a full
    /// save ([`Group::save`](crate::Group::save)) or one read back from
    /// storage, the chunks changed since the last confirmed save for
    /// [`Group::save_changes`](crate::Group::save_changes).
    pub tree_records: Vec<TreeRecord>,
    /// The sealed records of the retained past epochs, oldest first.
    pub epoch_records: Vec<EpochRecord>,
}

impl SavedGroup {
    /// Writes a later save of the group over this one, as a store does
    /// (see [`SavedGroup`]): the state, epoch records and chunk count
    /// replaced, `later`'s tree records inserted or replacing those of
    /// their chunks, records at or beyond its `tree_chunks` dropped. For
    /// stores that keep the group as one `SavedGroup` (in memory, one
    /// key-value entry); the result holds every tree record.
    pub fn apply(&mut self, later: SavedGroup) {
        let mut tree: std::collections::BTreeMap<u32, TreeRecord> =
            std::mem::take(&mut self.tree_records)
                .into_iter()
                .chain(later.tree_records)
                .map(|r| (r.index, r))
                .collect();
        tree.retain(|&index, _| index < later.tree_chunks);
        *self = SavedGroup {
            tree_records: tree.into_values().collect(),
            ..later
        };
    }

    /// The bytes a store writes for this save: state, tree records and
    /// epoch records.
    pub fn written_bytes(&self) -> usize {
        self.state.len()
            + self
                .tree_records
                .iter()
                .map(|r| r.data.len())
                .sum::<usize>()
            + self
                .epoch_records
                .iter()
                .map(|r| r.data.len())
                .sum::<usize>()
    }
}

impl std::fmt::Debug for SavedGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SavedGroup")
            .field("group_id", &hex(&self.group_id))
            .field("epoch", &self.epoch)
            .field("state_len", &self.state.len())
            .field("tree_chunks", &self.tree_chunks)
            .field("tree_records", &self.tree_records)
            .field("epoch_records", &self.epoch_records)
            .finish()
    }
}

/// The sealed record of one chunk of the ratchet tree: node slots
/// `256 * index ..= 256 * index + 255` of the array of RFC 9420 Appendix C
/// and their cached tree hashes (§7.8).
#[derive(Clone, PartialEq, Eq)]
pub struct TreeRecord {
    /// The chunk index (in clear in the header too).
    pub index: u32,
    /// The sealed record.
    pub data: Vec<u8>,
}

impl std::fmt::Debug for TreeRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeRecord")
            .field("index", &self.index)
            .field("len", &self.data.len())
            .finish()
    }
}

/// The sealed record of one past epoch (RFC 9420 §9.2: what is kept to
/// decrypt late application messages of that epoch).
#[derive(Clone, PartialEq, Eq)]
pub struct EpochRecord {
    /// The past epoch (in clear in the header too).
    pub epoch: u64,
    /// The sealed record.
    pub data: Vec<u8>,
}

impl std::fmt::Debug for EpochRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochRecord")
            .field("epoch", &self.epoch)
            .field("len", &self.data.len())
            .finish()
    }
}

/// A saved [`KeyPackageBundle`](crate::KeyPackageBundle): its reference
/// and last-resort flag in clear (for the store's index) and the sealed
/// bundle. A plain record, like [`SavedGroup`].
#[must_use = "a saved KeyPackage bundle is lost unless written to storage"]
#[derive(Clone, PartialEq, Eq)]
pub struct SavedKeyPackage {
    /// `KeyPackageRef` of the KeyPackage (RFC 9420 §5.2).
    pub reference: Vec<u8>,
    /// Whether the KeyPackage is last resort (RFC 9420 §16.8): a store
    /// keeps it when it is taken for a join.
    pub last_resort: bool,
    /// The end of the KeyPackage's lifetime (seconds since the Unix
    /// epoch), for expiring stored bundles.
    pub not_after: u64,
    /// The sealed bundle.
    pub data: Vec<u8>,
}

impl std::fmt::Debug for SavedKeyPackage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SavedKeyPackage")
            .field("reference", &hex(&self.reference))
            .field("last_resort", &self.last_resort)
            .field("not_after", &self.not_after)
            .field("len", &self.data.len())
            .finish()
    }
}

/// Lower-case hex of public bytes (ids, references) for error messages.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(2 * bytes.len());
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Maps a custody error of a key lookup: a missing key is
/// [`StateError::KeyNotFound`], anything else [`StateError::Custody`].
pub(crate) fn lookup_error(uri: &str, e: CustodyError) -> StateError {
    match e {
        CustodyError::KeyNotFound(_) | CustodyError::InvalidUri(_) => StateError::KeyNotFound {
            uri: uri.to_owned(),
        },
        other => StateError::Custody(other),
    }
}
