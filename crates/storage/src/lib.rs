//! Storage of sealed hsmls state: the [`GroupStateStorage`] trait and its
//! embedded SQLite implementation, [`SqliteStorage`].
//!
//! The store holds what [`hsmls::Group::save`] and
//! [`hsmls::Client::save_key_package`] produce (and
//! [`hsmls::Client::load_group`] / [`hsmls::Client::load_key_package`]
//! read back): blobs sealed under a key in
//! the custody backend ([`hsmls::state`]), plus the few clear values a store
//! needs to index them (group id, epoch, KeyPackageRef, last-resort flag,
//! expiry). Nothing in it is readable without the token.
//!
//! The shape follows mls-rs's `GroupStateStorage`: a group is its state,
//! its tree records (one per chunk of the ratchet tree) and one record per
//! retained past epoch, and a write replaces the state and the set of
//! epoch records in one transaction — new records inserted, changed ones
//! replaced, those that left the window deleted — together with the tree
//! records it carries (an incremental save carries only the changed
//! chunks, [`hsmls::Group::save_changes`]). Deleted records are
//! really gone (RFC 9420 §9.2): the SQLite store overwrites them in the file
//! (see [`SqliteStorage`] for how, and what was measured).
//!
//! The trait is async (sqlx is; the client runtime runs on tokio) with
//! `Send` futures, so it can be called from spawned tasks.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod sqlite;

pub use sqlite::{ConnectionSettings, JournalMode, SqliteOptions, SqliteStorage};

use std::future::Future;

use hsmls::{SavedGroup, SavedKeyPackage};

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The database failed (I/O, locking, a constraint).
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// A write would move a group back to an older epoch than the stored
    /// one (a stale save; groups only move forward).
    #[error("group state of epoch {new} is older than the stored epoch {stored}")]
    EpochRegression {
        /// The stored epoch.
        stored: u64,
        /// The epoch of the refused write.
        new: u64,
    },
    /// A write lists two records for the same epoch.
    #[error("two epoch records for epoch {0}")]
    DuplicateEpochRecord(u64),
    /// A write lists two tree records for the same chunk.
    #[error("two tree records for chunk {0}")]
    DuplicateTreeRecord(u32),
    /// A write lists a tree record of a chunk the tree does not have.
    #[error("a tree record for chunk {index} of a tree of {count} chunks")]
    TreeRecordBeyondCount {
        /// The record's chunk.
        index: u32,
        /// [`SavedGroup::tree_chunks`].
        count: u32,
    },
    /// A value does not fit the database's signed 64-bit integers.
    #[error("{field} {value} does not fit a 64-bit signed integer")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The value.
        value: u64,
    },
    /// A stored row holds a value the store never writes (a negative epoch
    /// or expiry): the file was changed by someone else.
    #[error("corrupt row: {0}")]
    CorruptRow(&'static str),
    /// The database file could not be created or its permissions set.
    #[error("cannot prepare the database file: {0}")]
    File(#[source] std::io::Error),
}

impl From<sqlx::Error> for StorageError {
    fn from(e: sqlx::Error) -> Self {
        StorageError::Database(e)
    }
}

/// Where a client keeps its sealed groups and KeyPackage bundles.
///
/// Every method is one transaction: a crash (even `kill -9`) leaves either
/// the state before or the state after it.
pub trait GroupStateStorage: Send + Sync {
    /// The stored state, tree records (every stored chunk, ascending;
    /// [`SavedGroup::tree_chunks`] is their number) and epoch records
    /// (oldest first) of a group, or `None` if the group is not stored.
    fn read_group(
        &self,
        group_id: &[u8],
    ) -> impl Future<Output = Result<Option<SavedGroup>, StorageError>> + Send;

    /// Writes a group's state and replaces its set of epoch records with
    /// `saved.epoch_records`, atomically: records of epochs not in the set
    /// are deleted (and overwritten), the others inserted or replaced. In
    /// the same transaction, inserts or replaces the tree records of
    /// `saved.tree_records` and deletes those of chunks at or beyond
    /// `saved.tree_chunks`; the other stored tree records stay (an
    /// incremental save relies on them). Refuses to move the group to an
    /// older epoch than the stored one.
    fn write_group(
        &self,
        saved: &SavedGroup,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Deletes a group's state and records; returns whether it was stored.
    fn delete_group(
        &self,
        group_id: &[u8],
    ) -> impl Future<Output = Result<bool, StorageError>> + Send;

    /// The ids of the stored groups, in byte order.
    fn list_groups(&self) -> impl Future<Output = Result<Vec<Vec<u8>>, StorageError>> + Send;

    /// Stores (or replaces) a KeyPackage bundle under its reference.
    fn store_key_package(
        &self,
        key_package: &SavedKeyPackage,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// The bundle of the KeyPackage `reference` (to join from a Welcome
    /// that names it), removed from the store unless it is last resort
    /// (RFC 9420 §16.8: a last-resort KeyPackage serves several joins).
    fn take_key_package(
        &self,
        reference: &[u8],
    ) -> impl Future<Output = Result<Option<SavedKeyPackage>, StorageError>> + Send;

    /// Deletes a KeyPackage bundle (withdrawn, or a last-resort package
    /// rotated); returns whether it was stored.
    fn delete_key_package(
        &self,
        reference: &[u8],
    ) -> impl Future<Output = Result<bool, StorageError>> + Send;

    /// Deletes the bundles whose lifetime ended before `now` (seconds
    /// since the Unix epoch) and returns them, so that the application can
    /// destroy their keys ([`hsmls::KeyPackageBundle::destroy`]).
    fn delete_expired_key_packages(
        &self,
        now: u64,
    ) -> impl Future<Output = Result<Vec<SavedKeyPackage>, StorageError>> + Send;
}
