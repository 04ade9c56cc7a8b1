//! The embedded store: one SQLite file (see [`SqliteStorage`]).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use hsmls::{EpochRecord, SavedGroup, SavedKeyPackage, TreeRecord};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, SqliteConnection};

use crate::{GroupStateStorage, StorageError};

/// How SQLite journals a write transaction (see [`SqliteStorage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum JournalMode {
    /// Rollback journal, truncated to zero bytes at each commit (the
    /// default).
    #[default]
    Truncate,
    /// Rollback journal, deleted at each commit.
    Delete,
    /// Write-ahead log, checkpointed and truncated after every write
    /// (`PRAGMA wal_checkpoint(TRUNCATE)`).
    WalCheckpoint,
}

/// Options of [`SqliteStorage`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteOptions {
    /// `PRAGMA secure_delete`. Keep it on: off, deleted records stay in the
    /// file until their space is reused (the option exists so that a test
    /// can show that).
    pub secure_delete: bool,
    /// The journal mode.
    pub journal: JournalMode,
    /// How long to wait for another process's lock.
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            secure_delete: true,
            journal: JournalMode::Truncate,
            busy_timeout: Duration::from_secs(10),
        }
    }
}

impl SqliteOptions {
    /// The defaults: `secure_delete` on, `TRUNCATE` journal, 10 s busy
    /// timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`SqliteOptions::secure_delete`].
    pub fn secure_delete(mut self, on: bool) -> Self {
        self.secure_delete = on;
        self
    }

    /// Sets [`SqliteOptions::journal`].
    pub fn journal(mut self, journal: JournalMode) -> Self {
        self.journal = journal;
        self
    }

    /// Sets [`SqliteOptions::busy_timeout`].
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }
}

/// What the store's connection runs with, as SQLite reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionSettings {
    /// `PRAGMA secure_delete` (1 on).
    pub secure_delete: i64,
    /// `PRAGMA journal_mode` (lower case).
    pub journal_mode: String,
    /// `PRAGMA synchronous` (2 FULL).
    pub synchronous: i64,
    /// `PRAGMA foreign_keys` (1 on).
    pub foreign_keys: i64,
}

const SCHEMA: [&str; 4] = [
    "CREATE TABLE IF NOT EXISTS groups (
        group_id BLOB PRIMARY KEY NOT NULL,
        epoch INTEGER NOT NULL CHECK (epoch >= 0),
        state BLOB NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS epoch_records (
        group_id BLOB NOT NULL REFERENCES groups (group_id) ON DELETE CASCADE,
        epoch INTEGER NOT NULL CHECK (epoch >= 0),
        record BLOB NOT NULL,
        PRIMARY KEY (group_id, epoch)
    )",
    "CREATE TABLE IF NOT EXISTS tree_records (
        group_id BLOB NOT NULL REFERENCES groups (group_id) ON DELETE CASCADE,
        chunk INTEGER NOT NULL CHECK (chunk >= 0),
        record BLOB NOT NULL,
        PRIMARY KEY (group_id, chunk)
    )",
    "CREATE TABLE IF NOT EXISTS key_packages (
        reference BLOB PRIMARY KEY NOT NULL,
        last_resort INTEGER NOT NULL CHECK (last_resort IN (0, 1)),
        not_after INTEGER NOT NULL CHECK (not_after >= 0),
        bundle BLOB NOT NULL
    )",
];

/// A [`GroupStateStorage`] in one SQLite file.
///
/// # Deleted records are overwritten
///
/// RFC 9420 §9.2 asks that old epochs' secrets be deleted. Their records are
/// sealed, but a copy of the file together with the token would still open
/// them, so deletion must remove the bytes, not only unlink the rows:
///
/// * `PRAGMA secure_delete = ON`: SQLite overwrites deleted content (the
///   cells of deleted and replaced rows, freed overflow pages) with zeros
///   in the main file.
/// * A rollback journal in `TRUNCATE` mode (the default, [`JournalMode`]):
///   during a write transaction the journal holds the original pages
///   (including the rows being deleted); at commit it is truncated to zero
///   bytes, so no file keeps them. (`WAL` would keep old page images in
///   the `-wal` file until a checkpoint resets it;
///   [`JournalMode::WalCheckpoint`] runs `wal_checkpoint(TRUNCATE)` after
///   every write for that reason.) What a file system keeps of freed blocks
///   is beyond SQLite's reach: use an encrypted file system for that.
/// * `PRAGMA synchronous = FULL`, one transaction (`BEGIN IMMEDIATE`) per
///   write: a crash or `kill -9` leaves the state before or after a write.
///
/// The test `crates/storage/tests/secure_delete.rs` searches the database
/// files for the sealed bytes of deleted epoch records and for the deleted
/// epochs' secrets, and finds them when `secure_delete` is off (and, with
/// WAL but no checkpoint, found the sealed bytes of every deleted epoch:
/// measured). `BENCHMARKS.md` gives the cost of each journal mode.
///
/// The pool has one connection: a client's writes are serialised in the
/// process; other processes on the same file wait up to
/// [`SqliteOptions::busy_timeout`].
#[derive(Debug, Clone)]
pub struct SqliteStorage {
    pool: SqlitePool,
    path: PathBuf,
    options: SqliteOptions,
}

fn to_i64(field: &'static str, value: u64) -> Result<i64, StorageError> {
    i64::try_from(value).map_err(|_| StorageError::OutOfRange { field, value })
}

fn from_i64(field: &'static str, value: i64) -> Result<u64, StorageError> {
    u64::try_from(value).map_err(|_| StorageError::CorruptRow(field))
}

/// Creates the file with mode 0600 if it does not exist (SQLite gives its
/// journal the same permissions).
fn prepare_file(path: &Path) -> Result<(), StorageError> {
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        open.mode(0o600);
    }
    open.open(path).map(drop).map_err(StorageError::File)
}

impl SqliteStorage {
    /// Opens (or creates) the store at `path` with the default options.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StorageError> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// Opens (or creates) the store at `path`.
    pub async fn open_with(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<Self, StorageError> {
        let path = path.as_ref().to_path_buf();
        prepare_file(&path)?;
        let journal = match options.journal {
            JournalMode::Truncate => SqliteJournalMode::Truncate,
            JournalMode::Delete => SqliteJournalMode::Delete,
            JournalMode::WalCheckpoint => SqliteJournalMode::Wal,
        };
        let connect = SqliteConnectOptions::from_str("sqlite:")?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(journal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(options.busy_timeout)
            .pragma(
                "secure_delete",
                if options.secure_delete { "ON" } else { "OFF" },
            );
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(connect)
            .await?;
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        for statement in SCHEMA {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(SqliteStorage {
            pool,
            path,
            options,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &SqliteOptions {
        &self.options
    }

    /// The pragmas of the store's connection, as SQLite reports them.
    pub async fn connection_settings(&self) -> Result<ConnectionSettings, StorageError> {
        let mut conn = self.pool.acquire().await?;
        let int = |name: &'static str| sqlx::query_scalar::<_, i64>(name);
        Ok(ConnectionSettings {
            secure_delete: int("PRAGMA secure_delete").fetch_one(&mut *conn).await?,
            journal_mode: sqlx::query_scalar::<_, String>("PRAGMA journal_mode")
                .fetch_one(&mut *conn)
                .await?
                .to_ascii_lowercase(),
            synchronous: int("PRAGMA synchronous").fetch_one(&mut *conn).await?,
            foreign_keys: int("PRAGMA foreign_keys").fetch_one(&mut *conn).await?,
        })
    }

    /// Closes the connection (waits for running operations).
    pub async fn close(self) {
        self.pool.close().await;
    }

    /// After a write: in WAL mode, copy the log into the file and truncate
    /// it, so that no old page image stays in the `-wal` file.
    async fn after_write(&self, conn: &mut SqliteConnection) -> Result<(), StorageError> {
        if self.options.journal == JournalMode::WalCheckpoint {
            let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(&mut *conn)
                .await?;
            let busy: i64 = row.try_get(0)?;
            if busy != 0 {
                tracing::warn!(
                    path = %self.path.display(),
                    "wal_checkpoint(TRUNCATE) was blocked by another connection; old pages stay in the WAL until the next checkpoint"
                );
            }
        }
        Ok(())
    }
}

fn key_package_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<SavedKeyPackage, StorageError> {
    let reference: Vec<u8> = row.try_get(0)?;
    let last_resort: i64 = row.try_get(1)?;
    let not_after: i64 = row.try_get(2)?;
    let data: Vec<u8> = row.try_get(3)?;
    let last_resort = match last_resort {
        0 => false,
        1 => true,
        _ => return Err(StorageError::CorruptRow("last_resort")),
    };
    Ok(SavedKeyPackage {
        reference,
        last_resort,
        not_after: from_i64("not_after", not_after)?,
        data,
    })
}

impl GroupStateStorage for SqliteStorage {
    async fn read_group(&self, group_id: &[u8]) -> Result<Option<SavedGroup>, StorageError> {
        let mut tx = self.pool.begin().await?;
        let Some(row) = sqlx::query("SELECT epoch, state FROM groups WHERE group_id = ?1")
            .bind(group_id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let epoch = from_i64("epoch", row.try_get(0)?)?;
        let state: Vec<u8> = row.try_get(1)?;
        let rows = sqlx::query(
            "SELECT epoch, record FROM epoch_records WHERE group_id = ?1 ORDER BY epoch",
        )
        .bind(group_id)
        .fetch_all(&mut *tx)
        .await?;
        let chunks = sqlx::query(
            "SELECT chunk, record FROM tree_records WHERE group_id = ?1 ORDER BY chunk",
        )
        .bind(group_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut tree_records = Vec::with_capacity(chunks.len());
        for row in chunks {
            let index: i64 = row.try_get(0)?;
            tree_records.push(TreeRecord {
                index: u32::try_from(index).map_err(|_| StorageError::CorruptRow("chunk"))?,
                data: row.try_get(1)?,
            });
        }
        let mut epoch_records = Vec::with_capacity(rows.len());
        for row in rows {
            epoch_records.push(EpochRecord {
                epoch: from_i64("epoch", row.try_get(0)?)?,
                data: row.try_get(1)?,
            });
        }
        Ok(Some(SavedGroup {
            group_id: group_id.to_vec(),
            epoch,
            state,
            // What the last write left: chunks 0 .. count (the loader
            // checks them against the state).
            tree_chunks: u32::try_from(tree_records.len())
                .map_err(|_| StorageError::CorruptRow("chunk"))?,
            tree_records,
            epoch_records,
        }))
    }

    async fn write_group(&self, saved: &SavedGroup) -> Result<(), StorageError> {
        let epoch = to_i64("epoch", saved.epoch)?;
        let mut epochs: Vec<i64> = Vec::with_capacity(saved.epoch_records.len());
        for r in &saved.epoch_records {
            let e = to_i64("epoch", r.epoch)?;
            if epochs.contains(&e) {
                return Err(StorageError::DuplicateEpochRecord(r.epoch));
            }
            epochs.push(e);
        }
        let mut chunks: Vec<u32> = Vec::with_capacity(saved.tree_records.len());
        for r in &saved.tree_records {
            if r.index >= saved.tree_chunks {
                return Err(StorageError::TreeRecordBeyondCount {
                    index: r.index,
                    count: saved.tree_chunks,
                });
            }
            if chunks.contains(&r.index) {
                return Err(StorageError::DuplicateTreeRecord(r.index));
            }
            chunks.push(r.index);
        }
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let stored: Option<i64> =
            sqlx::query_scalar("SELECT epoch FROM groups WHERE group_id = ?1")
                .bind(&saved.group_id)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(stored) = stored {
            let stored = from_i64("epoch", stored)?;
            if stored > saved.epoch {
                return Err(StorageError::EpochRegression {
                    stored,
                    new: saved.epoch,
                });
            }
        }
        sqlx::query(
            "INSERT INTO groups (group_id, epoch, state) VALUES (?1, ?2, ?3)
             ON CONFLICT (group_id) DO UPDATE SET epoch = excluded.epoch, state = excluded.state",
        )
        .bind(&saved.group_id)
        .bind(epoch)
        .bind(&saved.state)
        .execute(&mut *tx)
        .await?;
        let existing: Vec<i64> =
            sqlx::query_scalar("SELECT epoch FROM epoch_records WHERE group_id = ?1")
                .bind(&saved.group_id)
                .fetch_all(&mut *tx)
                .await?;
        for old in existing.into_iter().filter(|e| !epochs.contains(e)) {
            sqlx::query("DELETE FROM epoch_records WHERE group_id = ?1 AND epoch = ?2")
                .bind(&saved.group_id)
                .bind(old)
                .execute(&mut *tx)
                .await?;
        }
        // Chunks the tree no longer has (it shrank), then the changed ones.
        sqlx::query("DELETE FROM tree_records WHERE group_id = ?1 AND chunk >= ?2")
            .bind(&saved.group_id)
            .bind(i64::from(saved.tree_chunks))
            .execute(&mut *tx)
            .await?;
        for r in &saved.tree_records {
            sqlx::query(
                "INSERT INTO tree_records (group_id, chunk, record) VALUES (?1, ?2, ?3)
                 ON CONFLICT (group_id, chunk) DO UPDATE SET record = excluded.record",
            )
            .bind(&saved.group_id)
            .bind(i64::from(r.index))
            .bind(&r.data)
            .execute(&mut *tx)
            .await?;
        }
        for (r, e) in saved.epoch_records.iter().zip(&epochs) {
            sqlx::query(
                "INSERT INTO epoch_records (group_id, epoch, record) VALUES (?1, ?2, ?3)
                 ON CONFLICT (group_id, epoch) DO UPDATE SET record = excluded.record",
            )
            .bind(&saved.group_id)
            .bind(*e)
            .bind(&r.data)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        let mut conn = self.pool.acquire().await?;
        self.after_write(&mut conn).await
    }

    async fn delete_group(&self, group_id: &[u8]) -> Result<bool, StorageError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM epoch_records WHERE group_id = ?1")
            .bind(group_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM tree_records WHERE group_id = ?1")
            .bind(group_id)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM groups WHERE group_id = ?1")
            .bind(group_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        let mut conn = self.pool.acquire().await?;
        self.after_write(&mut conn).await?;
        Ok(deleted > 0)
    }

    async fn list_groups(&self) -> Result<Vec<Vec<u8>>, StorageError> {
        Ok(
            sqlx::query_scalar("SELECT group_id FROM groups ORDER BY group_id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn store_key_package(&self, key_package: &SavedKeyPackage) -> Result<(), StorageError> {
        let not_after = to_i64("not_after", key_package.not_after)?;
        let mut conn = self.pool.acquire().await?;
        sqlx::query(
            "INSERT INTO key_packages (reference, last_resort, not_after, bundle)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (reference) DO UPDATE SET last_resort = excluded.last_resort,
                 not_after = excluded.not_after, bundle = excluded.bundle",
        )
        .bind(&key_package.reference)
        .bind(i64::from(key_package.last_resort))
        .bind(not_after)
        .bind(&key_package.data)
        .execute(&mut *conn)
        .await?;
        self.after_write(&mut conn).await
    }

    async fn take_key_package(
        &self,
        reference: &[u8],
    ) -> Result<Option<SavedKeyPackage>, StorageError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let Some(row) = sqlx::query(
            "SELECT reference, last_resort, not_after, bundle FROM key_packages WHERE reference = ?1",
        )
        .bind(reference)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        let kp = key_package_from_row(&row)?;
        if !kp.last_resort {
            sqlx::query("DELETE FROM key_packages WHERE reference = ?1")
                .bind(reference)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        if !kp.last_resort {
            let mut conn = self.pool.acquire().await?;
            self.after_write(&mut conn).await?;
        }
        Ok(Some(kp))
    }

    async fn delete_key_package(&self, reference: &[u8]) -> Result<bool, StorageError> {
        let mut conn = self.pool.acquire().await?;
        let deleted = sqlx::query("DELETE FROM key_packages WHERE reference = ?1")
            .bind(reference)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        self.after_write(&mut conn).await?;
        Ok(deleted > 0)
    }

    async fn delete_expired_key_packages(
        &self,
        now: u64,
    ) -> Result<Vec<SavedKeyPackage>, StorageError> {
        let now = to_i64("now", now)?;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query(
            "DELETE FROM key_packages WHERE not_after < ?1
             RETURNING reference, last_resort, not_after, bundle",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut conn = self.pool.acquire().await?;
        self.after_write(&mut conn).await?;
        let mut out = rows
            .iter()
            .map(key_package_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }
}
