//! The DS's storage: one trait, [`DsStore`], with an embedded SQLite
//! implementation ([`SqliteStore`]: one writer task batching requests into
//! one transaction per millisecond or so, readers on a pool) and a
//! PostgreSQL one ([`PostgresStore`]: several DS processes on one
//! database). Both pass the same conformance suite (`tests/store_*.rs`).
//!
//! The stores hold no group id, no message, no Welcome and no
//! membership or route in clear: [`SealedStore`] stands above the trait
//! and gives the stores keyed tags and sealed cells ([`crate::seal`]),
//! so SQLite and PostgreSQL share one sealing layer and the stores never
//! see the DS key. The DS ([`crate::Ds`]) uses the [`SealedStore`]; the
//! row types of the trait (`*Row`) carry tags and sealed cells, the types
//! of the [`SealedStore`] carry the values.
//!
//! What is stored:
//! - clients: a random 16-byte queue id per client, found by an HMAC of
//!   the client's identity under the DS key (the identity itself is not
//!   stored);
//! - KeyPackages (as published: they name their owner in clear, the DS
//!   must serve them), their owner's queue, expiry and last-resort flag,
//!   and the tag of their KeyPackageRef with the owner sealed; the routes
//!   of the KeyPackageRefs handed out (the reference's tag → the owner,
//!   sealed), kept for a bounded time;
//! - groups: the group's tag, its id sealed, mode, epoch, the sequence
//!   counter, and in assisted mode the public group state and the current
//!   GroupInfo, sealed; members as (group tag, member tag, cursor); the
//!   digest tags of accepted commits per epoch;
//! - messages once per group (not per recipient), sealed, deleted when
//!   every member acknowledged them or when they expire; Welcomes (sealed)
//!   in a per-recipient inbox named by the recipient's inbox tag;
//! - the schema version ([`SCHEMA_VERSION`]; a database of another
//!   version is refused) and a check value of the DS key (a process with
//!   another key is refused: [`StoreError::WrongDsKey`]).
//!
//! Every write method is one transaction: it either happened completely
//! (and is durable when the method returns: SQLite `synchronous=FULL`,
//! PostgreSQL's commit) or not at all.

mod postgres;
mod sealed;
mod sqlite;

pub use postgres::PostgresStore;
pub use sealed::SealedStore;
pub use sqlite::{SqliteConfig, SqliteStore};

use std::future::Future;

use crate::api::{GroupMode, KeyPackageCounts};
use crate::seal::SealError;

/// A client's queue id (random).
pub type QueueId = [u8; 16];

/// A keyed tag (HMAC-SHA256 under a key derived from the DS key) that
/// stands in for a value the store finds rows by but must not hold
/// ([`crate::seal::AtRest`]).
pub type Tag = [u8; 32];

/// The version of the tables this DS writes. Version 1 (before the
/// tables held tags and sealed cells) had no version row.
pub const SCHEMA_VERSION: i64 = 2;

/// The verdict on the version row of an existing database (both stores).
pub(crate) fn check_schema_version(found: Option<i64>) -> Result<(), StoreError> {
    match found {
        Some(SCHEMA_VERSION) => Ok(()),
        Some(found) => Err(StoreError::SchemaVersion {
            found,
            expected: SCHEMA_VERSION,
        }),
        None => Err(StoreError::CorruptRow("ds_meta has no version row")),
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored value is not one the store writes.
    #[error("corrupt row: {0}")]
    CorruptRow(&'static str),
    /// A value does not fit a 64-bit signed integer.
    #[error("value out of range: {0}")]
    OutOfRange(&'static str),
    /// The SQLite writer task is gone (the store is shutting down).
    #[error("the writer task stopped")]
    WriterGone,
    /// Another message stored in the same call failed (its error is
    /// logged and answered to it); this one was not stored either.
    #[error("the batch this request was stored with failed")]
    BatchFailed,
    /// The database file could not be prepared.
    #[error("cannot prepare the database file: {0}")]
    File(#[source] std::io::Error),
    /// The database's tables are of another schema version than this DS
    /// writes (version 1 had no version row): nothing is read or written.
    #[error(
        "the database has DS schema version {found}, this DS reads and writes version {expected}; \
         it will not mix them (start from a new database)"
    )]
    SchemaVersion {
        /// The version found.
        found: i64,
        /// The version this DS writes ([`SCHEMA_VERSION`]).
        expected: i64,
    },
    /// The database was written under another DS key: its tags find
    /// nothing and its sealed cells do not open with this one. Every
    /// process serving one database must use the same key file.
    #[error(
        "the database was written under another DS key: every DS process serving it must use \
         the same key file"
    )]
    WrongDsKey,
    /// A sealed cell does not open (another DS key, or the cell or its
    /// row was altered): nothing of it is served.
    #[error("sealed cell: {0}")]
    Sealed(#[from] SealError),
}

/// A KeyPackage to publish, already validated by the DS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKeyPackage {
    /// Its KeyPackageRef.
    pub reference: Vec<u8>,
    /// The KeyPackage (`MLSMessage`).
    pub key_package: Vec<u8>,
    /// The end of its lifetime (seconds since the Unix epoch).
    pub not_after: u64,
    /// Whether it carries the `last_resort` extension.
    pub last_resort: bool,
}

/// A claimed KeyPackage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The KeyPackage.
    pub key_package: Vec<u8>,
    /// Whether it is last resort (then it stays published).
    pub last_resort: bool,
}

/// A group as stored, its cells opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    /// Its mode.
    pub mode: GroupMode,
    /// The current epoch.
    pub epoch: u64,
    /// The last sequence number given.
    pub seq: u64,
    /// Assisted mode: the public group state of `epoch`
    /// ([`hsmls::PublicGroup::to_bytes`]).
    pub public_state: Option<Vec<u8>>,
    /// Assisted mode: the GroupInfo of `epoch` (`MLSMessage`).
    pub group_info: Option<Vec<u8>>,
}

/// A new group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGroup {
    /// The group id.
    pub group_id: Vec<u8>,
    /// The mode.
    pub mode: GroupMode,
    /// The current epoch.
    pub epoch: u64,
    /// The creator, its only member.
    pub creator: QueueId,
    /// Assisted mode: the public state.
    pub public_state: Option<Vec<u8>>,
    /// Assisted mode: the GroupInfo.
    pub group_info: Option<Vec<u8>>,
}

/// A commit to order, with what it changes in the routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCommit {
    /// The group.
    pub group_id: Vec<u8>,
    /// The epoch the commit ends.
    pub epoch: u64,
    /// SHA-256 of the commit's bytes (a retry of the winner is recognised
    /// by it).
    pub digest: [u8; 32],
    /// The committer.
    pub sender: QueueId,
    /// An external commit (RFC 9420 §12.4.3.2): the sender joins by it,
    /// so it need not be a member; it becomes one.
    pub external: bool,
    /// The commit (`MLSMessage`).
    pub message: Vec<u8>,
    /// The Welcome and the queues it goes to.
    pub welcome: Option<(Vec<u8>, Vec<QueueId>)>,
    /// Queues that become members (their cursor starts after the commit).
    pub added: Vec<QueueId>,
    /// Queues that stop being members (they still get the commit).
    pub removed: Vec<QueueId>,
    /// Assisted mode: the public state and GroupInfo of the new epoch.
    pub public_state: Option<Vec<u8>>,
    /// Assisted mode: the GroupInfo of the new epoch.
    pub group_info: Option<Vec<u8>>,
    /// Now (seconds since the Unix epoch).
    pub now: u64,
}

/// What became of a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommitOutcome {
    /// It won its epoch.
    Accepted {
        /// Its sequence number.
        seq: u64,
        /// The new epoch.
        epoch: u64,
    },
    /// It had already won (a retry): nothing changed.
    AlreadyAccepted {
        /// Its sequence number.
        seq: u64,
        /// The epoch it moved to.
        epoch: u64,
    },
    /// Another commit has the epoch, or the epoch is not the current one.
    Conflict {
        /// The group's epoch.
        current_epoch: u64,
    },
    /// The sender is not a current member.
    NotMember,
    /// No such group.
    UnknownGroup,
}

/// An application message or proposal to order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The group.
    pub group_id: Vec<u8>,
    /// The message's epoch.
    pub epoch: u64,
    /// The oldest epoch accepted relative to the current one: the message
    /// is accepted if `current - window <= epoch <= current` (0 for
    /// handshakes).
    pub window: u64,
    /// SHA-256 of the message (a duplicate is refused).
    pub digest: [u8; 32],
    /// The sender.
    pub sender: QueueId,
    /// The message (`MLSMessage`).
    pub message: Vec<u8>,
    /// Assisted mode: the public state after a proposal, written only if
    /// the group is still at `expect_seq` (and so in the proposal's
    /// epoch: proposals have a window of 0).
    pub public_state: Option<(Vec<u8>, u64)>,
    /// Now.
    pub now: u64,
}

/// What became of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageOutcome {
    /// Stored at `seq`.
    Accepted {
        /// Its sequence number.
        seq: u64,
        /// The group's epoch.
        epoch: u64,
    },
    /// The same bytes are already stored at `seq`.
    Duplicate {
        /// Where.
        seq: u64,
    },
    /// The epoch is outside the window.
    WrongEpoch {
        /// The group's epoch.
        current_epoch: u64,
    },
    /// Assisted mode: the group moved on since the state was read (retry).
    StateChanged,
    /// Not a current member.
    NotMember,
    /// No such group.
    UnknownGroup,
}

/// A message read from a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its sequence number.
    pub seq: u64,
    /// The bytes.
    pub message: Vec<u8>,
}

/// A client's membership in a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The group.
    pub group_id: Vec<u8>,
    /// The last acknowledged sequence number.
    pub cursor: u64,
    /// If the client was removed: the sequence number of the commit that
    /// removed it (the last message it gets).
    pub until: Option<u64>,
}

/// What the purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Expired KeyPackages.
    pub key_packages: u64,
    /// Never-acknowledged messages past their time.
    pub messages: u64,
    /// Never-acknowledged Welcomes past their time.
    pub welcomes: u64,
    /// KeyPackageRef routes past their time.
    pub routes: u64,
}

// ----- Rows: what the stores hold (tags and sealed cells) -----

/// A KeyPackage row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPackageRow {
    /// The tag of its KeyPackageRef (a reference published twice is
    /// stored once).
    pub reference: Tag,
    /// The KeyPackage, as published.
    pub key_package: Vec<u8>,
    /// The end of its lifetime (seconds since the Unix epoch).
    pub not_after: u64,
    /// Whether it carries the `last_resort` extension.
    pub last_resort: bool,
    /// Its owner's queue id, sealed: the route the claim moves into the
    /// routes (the store cannot seal it then).
    pub route: Vec<u8>,
}

/// A claimed KeyPackage row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedRow {
    /// The tag of its KeyPackageRef.
    pub reference: Tag,
    /// The KeyPackage.
    pub key_package: Vec<u8>,
    /// Whether it is last resort (then it stays published).
    pub last_resort: bool,
}

/// A group row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRow {
    /// Its mode.
    pub mode: GroupMode,
    /// The current epoch.
    pub epoch: u64,
    /// The last sequence number given.
    pub seq: u64,
    /// Assisted mode: the public group state, sealed.
    pub public_state: Option<Vec<u8>>,
    /// Assisted mode: the GroupInfo, sealed.
    pub group_info: Option<Vec<u8>>,
}

/// A new group's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGroupRow {
    /// The group's tag.
    pub group: Tag,
    /// The group id, sealed (read back with the memberships).
    pub sealed_id: Vec<u8>,
    /// The mode.
    pub mode: GroupMode,
    /// The current epoch.
    pub epoch: u64,
    /// The creator's member tag.
    pub creator: Tag,
    /// Assisted mode: the public state, sealed.
    pub public_state: Option<Vec<u8>>,
    /// Assisted mode: the GroupInfo, sealed.
    pub group_info: Option<Vec<u8>>,
}

/// A Welcome to store with a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WelcomeRow {
    /// The Welcome, sealed.
    pub body: Vec<u8>,
    /// The inbox tags of its recipients.
    pub recipients: Vec<Tag>,
    /// For each recipient, its queue id sealed: the wake-up hint for the
    /// other DS processes (PostgreSQL NOTIFY).
    pub hints: Vec<Vec<u8>>,
}

/// A commit to order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRow {
    /// The group's tag.
    pub group: Tag,
    /// The epoch the commit ends.
    pub epoch: u64,
    /// The commit's digest tag (a retry of the winner is recognised by
    /// it).
    pub digest: Tag,
    /// The committer's member tag.
    pub sender: Tag,
    /// An external commit: the sender need not be a member; it becomes one.
    pub external: bool,
    /// The commit, sealed.
    pub message: Vec<u8>,
    /// The Welcome.
    pub welcome: Option<WelcomeRow>,
    /// Member tags of the clients that become members (their cursor starts
    /// after the commit).
    pub added: Vec<Tag>,
    /// Member tags of the clients that stop being members (they still get
    /// the commit).
    pub removed: Vec<Tag>,
    /// Assisted mode: the public state of the new epoch, sealed.
    pub public_state: Option<Vec<u8>>,
    /// Assisted mode: the GroupInfo of the new epoch, sealed.
    pub group_info: Option<Vec<u8>>,
    /// Now (seconds since the Unix epoch).
    pub now: u64,
}

/// An application message or proposal to order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRow {
    /// The group's tag.
    pub group: Tag,
    /// The message's epoch.
    pub epoch: u64,
    /// The oldest epoch accepted relative to the current one (see
    /// [`NewMessage::window`]).
    pub window: u64,
    /// The message's digest tag (a duplicate is refused).
    pub digest: Tag,
    /// The sender's member tag.
    pub sender: Tag,
    /// The message, sealed.
    pub message: Vec<u8>,
    /// Assisted mode: the public state after a proposal (sealed), written
    /// only if the group is still at the sequence number given.
    pub public_state: Option<(Vec<u8>, u64)>,
    /// Now.
    pub now: u64,
}

/// A message row read from a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    /// Its sequence number.
    pub seq: u64,
    /// Its digest tag (the sealed message is bound to it).
    pub digest: Tag,
    /// The message, sealed.
    pub message: Vec<u8>,
}

/// A membership row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipRow {
    /// The group's tag.
    pub group: Tag,
    /// The group's id, sealed (from the group's row).
    pub sealed_id: Vec<u8>,
    /// The last acknowledged sequence number.
    pub cursor: u64,
    /// If the client was removed: the sequence number of the commit that
    /// removed it.
    pub until: Option<u64>,
}

/// The Delivery Service's storage, over tags and sealed cells (the DS
/// reaches it through [`SealedStore`]).
///
/// Implementations keep one total order per group: sequence numbers come
/// from the group row's counter, taken under the row's lock (never an
/// identity column), so a reader at a cursor never skips a message that
/// commits late.
pub trait DsStore: Send + Sync + 'static {
    /// Records `check` (a value derived from the DS key) if the database
    /// has none, and says whether the database's value is `check`: `false`
    /// when it was written under another key.
    fn key_check(&self, check: Tag) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The queue of the client whose identity has `identity_tag`, created
    /// (with a fresh random queue id) if it is new.
    fn client_queue(
        &self,
        identity_tag: [u8; 32],
    ) -> impl Future<Output = Result<QueueId, StoreError>> + Send;

    /// The queue of a known client, or `None`.
    fn find_client(
        &self,
        identity_tag: [u8; 32],
    ) -> impl Future<Output = Result<Option<QueueId>, StoreError>> + Send;

    /// Publishes KeyPackages of `owner` (a reference published twice is
    /// stored once) and resets its count of last-resort claims.
    fn publish_key_packages(
        &self,
        owner: QueueId,
        key_packages: Vec<KeyPackageRow>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Claims one unexpired KeyPackage of `owner`: a package that is not
    /// last resort if one is left (deleted as it is handed out: never
    /// handed out twice, even to concurrent claims), else a last-resort one
    /// (kept, and the owner's count of last-resort claims goes up). Its
    /// reference's route (the row's [`KeyPackageRow::route`]) is kept until
    /// `route_until`.
    fn claim_key_package(
        &self,
        owner: QueueId,
        now: u64,
        route_until: u64,
    ) -> impl Future<Output = Result<Option<ClaimedRow>, StoreError>> + Send;

    /// The owner's counts of unexpired packages.
    fn key_package_counts(
        &self,
        owner: QueueId,
        now: u64,
    ) -> impl Future<Output = Result<KeyPackageCounts, StoreError>> + Send;

    /// The routes (sealed owners) of handed-out references, in order
    /// (`None` for a reference the DS did not hand out).
    fn route_key_package_refs(
        &self,
        references: Vec<Tag>,
    ) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>, StoreError>> + Send;

    /// Creates a group; `false` if the tag is taken.
    fn create_group(
        &self,
        group: NewGroupRow,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// A group, or `None`.
    fn group(
        &self,
        group: Tag,
    ) -> impl Future<Output = Result<Option<GroupRow>, StoreError>> + Send;

    /// Whether the client with member tag `member` is a current member of
    /// the group.
    fn is_member(
        &self,
        group: Tag,
        member: Tag,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Orders a commit: it wins if the group is in `commit.epoch` and no
    /// commit won that epoch; then the epoch and the counter move by one,
    /// the commit is stored, members are added and removed, the Welcome is
    /// put in its recipients' inboxes. A retry of the winner (same digest)
    /// is `AlreadyAccepted`. All in one transaction.
    fn append_commit(
        &self,
        commit: CommitRow,
    ) -> impl Future<Output = Result<CommitOutcome, StoreError>> + Send;

    /// Orders an application message or a proposal.
    fn append_message(
        &self,
        message: MessageRow,
    ) -> impl Future<Output = Result<MessageOutcome, StoreError>> + Send;

    /// Orders several application messages or proposals in the order
    /// given (those of one group get increasing sequence numbers in that
    /// order), each decided as [`DsStore::append_message`] would decide it
    /// alone. By default one after the other; a store may do them
    /// together.
    fn append_messages(
        &self,
        messages: Vec<MessageRow>,
    ) -> impl Future<Output = Result<Vec<MessageOutcome>, StoreError>> + Send {
        async move {
            let mut outcomes = Vec::with_capacity(messages.len());
            for m in messages {
                outcomes.push(self.append_message(m).await?);
            }
            Ok(outcomes)
        }
    }

    /// The memberships of the client with member tag `member` (current,
    /// and past ones whose last message it has not acknowledged).
    fn memberships(
        &self,
        member: Tag,
    ) -> impl Future<Output = Result<Vec<MembershipRow>, StoreError>> + Send;

    /// The messages of a group after `after`, up to `until` (inclusive)
    /// if given, at most `limit`, in order.
    fn read_messages(
        &self,
        group: Tag,
        after: u64,
        until: Option<u64>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<StoredRow>, StoreError>> + Send;

    /// The Welcomes (sealed) in the inbox with tag `inbox`, oldest first.
    fn read_welcomes(
        &self,
        inbox: Tag,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<(u64, Vec<u8>)>, StoreError>> + Send;

    /// Moves the cursors of the client with member tag `member` forward
    /// (never back) and deletes what every member acknowledged; deletes
    /// the acknowledged Welcomes of its inbox `inbox`. A removed member
    /// that acknowledged its last message leaves the group's routing.
    fn acknowledge(
        &self,
        member: Tag,
        inbox: Tag,
        positions: Vec<(Tag, u64)>,
        welcomes: Vec<u64>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes expired KeyPackages and routes, and messages and Welcomes
    /// stored before `stored_before` that were never acknowledged.
    fn purge(
        &self,
        now: u64,
        stored_before: u64,
    ) -> impl Future<Output = Result<Purged, StoreError>> + Send;

    /// How many message rows the group holds (for tests and metrics).
    fn stored_message_count(
        &self,
        group: Tag,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// `u64` to the database's `i64`.
pub(crate) fn to_i64(v: u64, what: &'static str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::OutOfRange(what))
}

/// The database's `i64` to `u64`.
pub(crate) fn to_u64(v: i64, what: &'static str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::CorruptRow(what))
}

/// A stored queue id.
pub(crate) fn to_queue(v: &[u8]) -> Result<QueueId, StoreError> {
    v.try_into().map_err(|_| StoreError::CorruptRow("queue id"))
}

/// A fresh random queue id.
pub(crate) fn random_queue_id() -> QueueId {
    let mut q = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut q);
    q
}

/// A stored tag.
pub(crate) fn to_tag(v: &[u8]) -> Result<Tag, StoreError> {
    v.try_into().map_err(|_| StoreError::CorruptRow("tag"))
}
