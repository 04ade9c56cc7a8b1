//! MLS peers for hsmls: openmls and mls-rs behind one byte-oriented trait.
//!
//! Every message crossing the [`Peer`] trait is the TLS encoding of an
//! `MLSMessage` (RFC 9420 §6), or of a `ratchet_tree` (RFC 9420 §12.4.3.3),
//! so that any implementation — openmls, mls-rs, and later hsmls — can be
//! driven by the same interop tests and the same comparative benchmarks.
//!
//! All peers run cipher suite 0x0002
//! (`MLS_128_DHKEMP256_AES128GCM_SHA256_P256`, RFC 9420 §17.1) by default,
//! or the suite given to [`Peer::with_suite`] (0x0001, the mandatory suite,
//! in the interop tests), with their RustCrypto providers and basic credentials, and protect handshake
//! messages as PrivateMessage (RFC 9750 recommends it); every peer accepts
//! both PublicMessage and PrivateMessage handshakes, so external commits
//! (always PublicMessage, RFC 9420 §12.4.3.2) are processed too.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod hsmls_peer;
pub mod mls_rs_peer;
pub mod openmls_peer;
pub mod scenario;

pub use hsmls_peer::HsmlsPeer;
pub use mls_rs_peer::MlsRsPeer;
pub use openmls_peer::OpenMlsPeer;

use std::fmt;

/// The cipher suite of [`Peer::new`]: MLS_128_DHKEMP256_AES128GCM_SHA256_P256.
pub const CIPHER_SUITE: u16 = 0x0002;

/// An error of a peer, with the operation that failed.
///
/// `detail` is the peer library's own error message; neither library puts
/// key material into its error messages.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The peer library rejected an operation or an input.
    #[error("{implementation}: {operation} failed: {detail}")]
    Library {
        /// "openmls" or "mls-rs".
        implementation: &'static str,
        /// The trait operation, e.g. "process".
        operation: &'static str,
        /// The library's error message.
        detail: String,
    },
    /// The member has no group yet (create or join one first).
    #[error("{0}: no group")]
    NoGroup(&'static str),
    /// An input was a valid MLSMessage of the wrong kind.
    #[error("{implementation}: expected {expected}")]
    UnexpectedMessage {
        /// "openmls" or "mls-rs".
        implementation: &'static str,
        /// What the operation expected, e.g. "a Welcome".
        expected: &'static str,
    },
}

/// How a peer client is set up beyond its identity ([`Peer::with_options`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerOptions {
    /// The cipher suite (RFC 9420 §17.1).
    pub suite: u16,
    /// Handshake messages (proposals, commits) are sent as PublicMessage
    /// (RFC 9420 §6.2) instead of PrivateMessage (§6.3). Application
    /// messages are always PrivateMessage.
    pub public_handshakes: bool,
    /// Every commit carries an UpdatePath (RFC 9420 §12.4), Add-only
    /// commits included. When `false`, each implementation's default:
    /// hsmls and mls-rs add a path only when required, openmls's
    /// `add_members` always adds one.
    pub always_path: bool,
}

impl PeerOptions {
    /// The defaults of [`Peer::with_suite`]: `suite`, handshakes as
    /// PrivateMessage, a path only when required.
    pub fn new(suite: u16) -> Self {
        Self {
            suite,
            public_handshakes: false,
            always_path: false,
        }
    }
}

impl Default for PeerOptions {
    fn default() -> Self {
        Self::new(CIPHER_SUITE)
    }
}

/// A member's group state as key–value records, as a store would hold them
/// ([`Peer::save_state`]); each implementation chooses its own records.
#[derive(Clone, PartialEq, Eq)]
pub struct SavedState {
    /// The group's group_id.
    pub group_id: Vec<u8>,
    /// The records (key, value): hsmls's sealed state and epoch records,
    /// mls-rs's state and epoch records, or openmls's storage entries.
    pub records: Vec<(Vec<u8>, Vec<u8>)>,
}

impl SavedState {
    /// The bytes a store would hold: every key and value.
    pub fn size(&self) -> usize {
        self.records.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

impl fmt::Debug for SavedState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Sizes only: the records hold the group's secrets.
        f.debug_struct("SavedState")
            .field("records", &self.records.len())
            .field("size", &self.size())
            .finish()
    }
}

/// What processing an incoming message produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An application message with its plaintext.
    Application(Vec<u8>),
    /// A proposal, kept for a later commit.
    Proposal,
    /// A commit, already merged: the member is now at `epoch`.
    Commit {
        /// The new epoch.
        epoch: u64,
    },
}

/// The messages a commit produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitMessages {
    /// The Commit, as an MLSMessage (PrivateMessage or PublicMessage).
    pub commit: Vec<u8>,
    /// The Welcome for added members, as an MLSMessage, if any were added.
    pub welcome: Option<Vec<u8>>,
}

/// An MLS member (one client in one group) as the interop tests and the
/// comparative benchmarks drive it. All messages are MLSMessage encodings.
///
/// Commits are staged: [`Peer::add_members`], [`Peer::remove_member`] and
/// [`Peer::self_update`] leave a pending commit that
/// [`Peer::merge_pending`] applies (after the delivery service accepted it)
/// or [`Peer::discard_pending`] drops. [`Peer::process`] merges received
/// commits at once.
pub trait Peer: Sized {
    /// The implementation's name, for reports.
    const NAME: &'static str;

    /// A new client of cipher suite [`CIPHER_SUITE`] (0x0002) with a fresh
    /// P-256 signature key and a basic credential holding `identity`.
    fn new(identity: &[u8]) -> Result<Self, PeerError> {
        Self::with_suite(identity, CIPHER_SUITE)
    }
    /// A new client of cipher suite `suite` (RFC 9420 §17.1): a fresh
    /// signature key of the suite's scheme, KeyPackages and groups of the
    /// suite; [`PeerError::Library`] if the peer's crypto provider lacks
    /// it.
    fn with_suite(identity: &[u8], suite: u16) -> Result<Self, PeerError> {
        Self::with_options(identity, PeerOptions::new(suite))
    }
    /// A new client set up by `options` (suite, handshake framing, paths).
    fn with_options(identity: &[u8], options: PeerOptions) -> Result<Self, PeerError>;
    /// A fresh KeyPackage (RFC 9420 §10) as an MLSMessage; the client keeps
    /// its private init and leaf keys.
    fn key_package(&mut self) -> Result<Vec<u8>, PeerError>;
    /// Creates a one-member group with the given group_id (RFC 9420 §11).
    fn create_group(&mut self, group_id: &[u8]) -> Result<(), PeerError>;
    /// Stages a commit adding the KeyPackages (MLSMessages); returns the
    /// Commit and the Welcome (with the ratchet_tree extension).
    fn add_members(&mut self, key_packages: &[Vec<u8>]) -> Result<CommitMessages, PeerError>;
    /// Stages a commit removing the member at `leaf_index`.
    fn remove_member(&mut self, leaf_index: u32) -> Result<CommitMessages, PeerError>;
    /// Stages a commit with an UpdatePath and no proposals (a self-update).
    fn self_update(&mut self) -> Result<CommitMessages, PeerError>;
    /// Applies the pending commit.
    fn merge_pending(&mut self) -> Result<(), PeerError>;
    /// Drops the pending commit, staying in the current epoch.
    fn discard_pending(&mut self) -> Result<(), PeerError>;
    /// Joins from a Welcome (MLSMessage); `ratchet_tree` is the TLS-encoded
    /// tree when the Welcome lacks the ratchet_tree extension.
    fn join(&mut self, welcome: &[u8], ratchet_tree: Option<&[u8]>) -> Result<(), PeerError>;
    /// Processes an incoming MLSMessage; a commit is merged at once.
    fn process(&mut self, message: &[u8]) -> Result<Event, PeerError>;
    /// Protects application data as a PrivateMessage (an MLSMessage).
    fn encrypt(&mut self, application_data: &[u8]) -> Result<Vec<u8>, PeerError>;
    /// The current epoch.
    fn epoch(&self) -> Result<u64, PeerError>;
    /// The current epoch_authenticator (RFC 9420 §8.7).
    fn epoch_authenticator(&self) -> Result<Vec<u8>, PeerError>;
    /// MLS-Exporter(label, context, length) (RFC 9420 §8.5).
    fn export_secret(
        &self,
        label: &str,
        context: &[u8],
        length: usize,
    ) -> Result<Vec<u8>, PeerError>;
    /// This member's leaf index.
    fn own_leaf_index(&self) -> Result<u32, PeerError>;
    /// The number of members.
    fn member_count(&self) -> Result<usize, PeerError>;
    /// The TLS-encoded ratchet tree (RFC 9420 §12.4.3.3).
    fn ratchet_tree(&self) -> Result<Vec<u8>, PeerError>;
    /// A signed GroupInfo (MLSMessage) with the external_pub extension
    /// (RFC 9420 §12.4.3.2), optionally with the ratchet_tree extension.
    fn group_info(&mut self, with_ratchet_tree: bool) -> Result<Vec<u8>, PeerError>;
    /// Saves the group's state (RFC 9420 leaves the format to each
    /// implementation) as the records a store would hold.
    fn save_state(&mut self) -> Result<SavedState, PeerError>;
    /// Replaces the group by the one in `saved` (as after a restart);
    /// [`PeerError::Library`] if the records do not hold a group.
    fn load_state(&mut self, saved: &SavedState) -> Result<(), PeerError>;
    /// Joins by an external commit against `group_info` (an MLSMessage);
    /// returns the Commit to send. The joiner is in the new epoch at once.
    fn join_external(
        &mut self,
        group_info: &[u8],
        ratchet_tree: Option<&[u8]>,
    ) -> Result<Vec<u8>, PeerError>;
}
