//! The runtime's own records, in tables of its own in the state file
//! beside `hsmls-storage`'s sealed groups and KeyPackage bundles: the
//! credential (certificate chain and the signature key's custody URI), the
//! last CRL and log checkpoint, each group's mode and the last message
//! handled (its cursor), the KeyPackages published, the Welcomes handled.
//! None of it is secret: certificates, CRLs and checkpoints are public,
//! custody URIs name keys only the token can use, and the rest is
//! bookkeeping the Delivery Service also knows.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::error::ClientError;
use crate::event::GroupMode;

const SCHEMA: [&str; 5] = [
    "CREATE TABLE IF NOT EXISTS client_credential (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        identity TEXT NOT NULL,
        signature_key_uri TEXT NOT NULL,
        chain TEXT NOT NULL,
        serial TEXT NOT NULL,
        not_after INTEGER NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS client_values (
        name TEXT PRIMARY KEY NOT NULL,
        value BLOB NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS client_groups (
        group_id BLOB PRIMARY KEY NOT NULL,
        mode INTEGER NOT NULL,
        last_seq INTEGER NOT NULL CHECK (last_seq >= 0),
        last_update INTEGER NOT NULL CHECK (last_update >= 0)
    )",
    "CREATE TABLE IF NOT EXISTS client_key_packages (
        reference BLOB PRIMARY KEY NOT NULL,
        last_resort INTEGER NOT NULL CHECK (last_resort IN (0, 1)),
        not_after INTEGER NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS client_welcomes (
        id INTEGER PRIMARY KEY NOT NULL,
        handled_at INTEGER NOT NULL
    )",
];

/// The largest certificate chain kept (bytes of its JSON text).
const MAX_CHAIN_TEXT: usize = 64 * 1024;

/// The client's certificate, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredCredential {
    pub identity: String,
    pub signature_key_uri: String,
    /// DER certificates, leaf first.
    pub chain: Vec<Vec<u8>>,
    pub serial: String,
    pub not_after: u64,
}

/// One group's bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GroupMeta {
    pub mode: GroupMode,
    /// The last sequence number handled (its effect saved).
    pub last_seq: u64,
    /// When this client last committed fresh keys (Unix seconds).
    pub last_update: u64,
}

/// A KeyPackage this client published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PublishedKeyPackage {
    pub reference: Vec<u8>,
    pub last_resort: bool,
    pub not_after: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pool: SqlitePool,
}

fn i64_of(v: u64) -> Result<i64, ClientError> {
    i64::try_from(v).map_err(|_| ClientError::Config(format!("{v} does not fit the state file")))
}

fn u64_of(v: i64, what: &'static str) -> Result<u64, ClientError> {
    u64::try_from(v)
        .map_err(|_| ClientError::Storage(hsmls_storage::StorageError::CorruptRow(what)))
}

fn corrupt(what: &'static str) -> ClientError {
    ClientError::Storage(hsmls_storage::StorageError::CorruptRow(what))
}

impl Meta {
    /// Opens the runtime's tables in the state file (created by
    /// `SqliteStorage` first, with the same pragmas).
    pub(crate) async fn open(path: &Path) -> Result<Self, ClientError> {
        let connect = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Truncate)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .pragma("secure_delete", "ON");
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(connect)
            .await?;
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        for s in SCHEMA {
            sqlx::query(s).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(Meta { pool })
    }

    pub(crate) async fn credential(&self) -> Result<Option<StoredCredential>, ClientError> {
        let Some(r) = sqlx::query(
            "SELECT identity, signature_key_uri, chain, serial, not_after FROM client_credential WHERE id = 1",
        )
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let chain_text: String = r.try_get(2)?;
        if chain_text.len() > MAX_CHAIN_TEXT {
            return Err(corrupt("chain"));
        }
        let hexes: Vec<String> = serde_json::from_str(&chain_text).map_err(|_| corrupt("chain"))?;
        let chain = hexes
            .iter()
            .map(|h| hex::decode(h).map_err(|_| corrupt("chain")))
            .collect::<Result<Vec<_>, _>>()?;
        if chain.is_empty() {
            return Err(corrupt("chain"));
        }
        Ok(Some(StoredCredential {
            identity: r.try_get(0)?,
            signature_key_uri: r.try_get(1)?,
            chain,
            serial: r.try_get(3)?,
            not_after: u64_of(r.try_get(4)?, "not_after")?,
        }))
    }

    pub(crate) async fn set_credential(&self, c: &StoredCredential) -> Result<(), ClientError> {
        let chain: Vec<String> = c.chain.iter().map(hex::encode).collect();
        let chain =
            serde_json::to_string(&chain).map_err(|e| ClientError::Config(e.to_string()))?;
        sqlx::query(
            "INSERT OR REPLACE INTO client_credential (id, identity, signature_key_uri, chain, serial, not_after)
             VALUES (1, ?1, ?2, ?3, ?4, ?5)",
        )
        .bind(&c.identity)
        .bind(&c.signature_key_uri)
        .bind(chain)
        .bind(&c.serial)
        .bind(i64_of(c.not_after)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(crate) async fn value(&self, name: &str) -> Result<Option<Vec<u8>>, ClientError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM client_values WHERE name = ?1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub(crate) async fn set_value(&self, name: &str, value: &[u8]) -> Result<(), ClientError> {
        sqlx::query("INSERT OR REPLACE INTO client_values (name, value) VALUES (?1, ?2)")
            .bind(name)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(crate) async fn groups(&self) -> Result<Vec<(Vec<u8>, GroupMeta)>, ClientError> {
        let rows = sqlx::query("SELECT group_id, mode, last_seq, last_update FROM client_groups")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let mode = GroupMode::from_code(r.try_get(1)?).ok_or_else(|| corrupt("mode"))?;
                Ok((
                    r.try_get(0)?,
                    GroupMeta {
                        mode,
                        last_seq: u64_of(r.try_get(2)?, "last_seq")?,
                        last_update: u64_of(r.try_get(3)?, "last_update")?,
                    },
                ))
            })
            .collect()
    }

    pub(crate) async fn set_group(&self, id: &[u8], m: &GroupMeta) -> Result<(), ClientError> {
        sqlx::query(
            "INSERT OR REPLACE INTO client_groups (group_id, mode, last_seq, last_update) VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(id)
        .bind(m.mode.code())
        .bind(i64_of(m.last_seq)?)
        .bind(i64_of(m.last_update)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(crate) async fn delete_group(&self, id: &[u8]) -> Result<(), ClientError> {
        sqlx::query("DELETE FROM client_groups WHERE group_id = ?1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(crate) async fn key_packages(&self) -> Result<Vec<PublishedKeyPackage>, ClientError> {
        let rows = sqlx::query("SELECT reference, last_resort, not_after FROM client_key_packages")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(PublishedKeyPackage {
                    reference: r.try_get(0)?,
                    last_resort: r.try_get::<i64, _>(1)? == 1,
                    not_after: u64_of(r.try_get(2)?, "not_after")?,
                })
            })
            .collect()
    }

    pub(crate) async fn add_key_package(&self, k: &PublishedKeyPackage) -> Result<(), ClientError> {
        sqlx::query(
            "INSERT OR REPLACE INTO client_key_packages (reference, last_resort, not_after) VALUES (?1, ?2, ?3)",
        )
        .bind(&k.reference)
        .bind(i64::from(k.last_resort))
        .bind(i64_of(k.not_after)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(crate) async fn delete_key_package(&self, reference: &[u8]) -> Result<(), ClientError> {
        sqlx::query("DELETE FROM client_key_packages WHERE reference = ?1")
            .bind(reference)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(crate) async fn welcome_handled(&self, id: u64) -> Result<bool, ClientError> {
        Ok(
            sqlx::query_scalar::<_, i64>("SELECT 1 FROM client_welcomes WHERE id = ?1")
                .bind(i64_of(id)?)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    pub(crate) async fn set_welcome_handled(&self, id: u64, now: u64) -> Result<(), ClientError> {
        sqlx::query("INSERT OR IGNORE INTO client_welcomes (id, handled_at) VALUES (?1, ?2)")
            .bind(i64_of(id)?)
            .bind(i64_of(now)?)
            .execute(&self.pool)
            .await?;
        // Forget handled Welcomes after 30 days (the DS purges them sooner).
        sqlx::query("DELETE FROM client_welcomes WHERE handled_at < ?1")
            .bind(i64_of(now.saturating_sub(30 * 86_400))?)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
