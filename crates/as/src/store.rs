//! Storage of the AS behind one trait, [`Store`], with two backends on
//! sqlx 0.9: [`SqliteStore`] (the embedded default: one file, WAL,
//! `synchronous=FULL`) and [`PgStore`] (PostgreSQL, for operators who run
//! several AS processes on one database). Runtime queries only (no
//! compile-time `query!` needing a live database).
//!
//! Both backends run the same SQL (the `$n` placeholders work in both);
//! only the schema's byte type, how a writing transaction begins and the
//! row lock of the log differ, which the `sql_store!` macro takes as
//! parameters. One conformance suite (`tests/store.rs`) runs on both.
//!
//! What is single-use or sequential is decided by the database, never by an
//! in-process lock, so that several AS processes can share one PostgreSQL
//! database:
//! * an enrolment token is claimed by one `UPDATE … WHERE used = FALSE
//!   RETURNING`: of concurrent claims exactly one gets the row;
//! * the log is appended under a row lock on `log_state` (PostgreSQL
//!   `FOR UPDATE`; SQLite `BEGIN IMMEDIATE`), so leaf indexes are gapless.
//!
//! The log keeps the hash of every complete subtree (`log_nodes`, keyed by
//! level and index, see [`hsmls_credentials::tlog::NodeId`]): an append
//! writes `O(log n)` rows, and a root or a proof reads `O(log n)` rows.

use std::future::Future;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use hsmls_credentials::tlog::{self, Hash, NodeId};
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed or could not be reached.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored value is not what the AS wrote (corruption).
    #[error("corrupt store: {0}")]
    Corrupt(&'static str),
}

/// An enrolment token as stored (its SHA-256, never the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// The identity the token is bound to.
    pub identity: String,
    /// Expiry, Unix seconds.
    pub expires: u64,
    /// Whether it has been used.
    pub used: bool,
}

/// An order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRow {
    /// Random id (hex).
    pub id: String,
    /// The identity to certify.
    pub identity: String,
    /// SHA-256 of the enrolment token.
    pub token_hash: Hash,
    /// Expiry of the token, Unix seconds.
    pub expires: u64,
    /// The serial (hex) of the issued certificate, once issued.
    pub serial: Option<String>,
}

/// An issued certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRow {
    /// Serial number, hex.
    pub serial: String,
    /// The identity it binds.
    pub identity: String,
    /// DER certificate.
    pub der: Vec<u8>,
    /// notAfter, Unix seconds.
    pub not_after: u64,
    /// When it was revoked, if it was.
    pub revoked_at: Option<u64>,
    /// The index of its issuance entry in the log.
    pub log_index: u64,
}

/// A certificate to record together with its log entry.
#[derive(Debug, Clone)]
pub struct NewCert<'a> {
    /// Serial number, hex.
    pub serial: &'a str,
    /// The identity.
    pub identity: &'a str,
    /// DER certificate.
    pub der: &'a [u8],
    /// SHA-256 of `der`.
    pub cert_hash: Hash,
    /// notAfter, Unix seconds.
    pub not_after: u64,
    /// The canonical log entry of the issuance.
    pub entry: &'a [u8],
}

/// How an issuance attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IssueOutcome {
    /// Recorded; the issuance entry's log index.
    Issued(u64),
    /// The order's token was already used: nothing recorded.
    TokenUsed,
    /// The order's token has expired: nothing recorded.
    TokenExpired,
}

/// How a revocation attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RevokeOutcome {
    /// Revoked; the revocation entry's log index.
    Revoked(u64),
    /// It was revoked before: nothing recorded.
    AlreadyRevoked,
    /// No such certificate.
    Unknown,
}

/// The AS's storage. Every method is one database transaction (or one
/// statement); a failed call leaves nothing behind.
pub trait Store: Send + Sync + 'static {
    /// Creates the tables if missing.
    fn migrate(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Stores an enrolment token (by its hash).
    fn insert_token(
        &self,
        token_hash: &Hash,
        identity: &str,
        expires: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Looks a token up.
    fn token(
        &self,
        token_hash: &Hash,
    ) -> impl Future<Output = Result<Option<TokenRow>, StoreError>> + Send;
    /// Stores a new order.
    fn insert_order(&self, order: &OrderRow)
    -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Looks an order up.
    fn order(&self, id: &str) -> impl Future<Output = Result<Option<OrderRow>, StoreError>> + Send;
    /// In one transaction: claims the order's token (`UPDATE … WHERE used
    /// = FALSE AND expires > now RETURNING`), records the certificate,
    /// appends its issuance entry to the log and marks the order issued.
    /// If the token cannot be claimed nothing is recorded.
    fn issue_for_order(
        &self,
        order_id: &str,
        token_hash: &Hash,
        now: u64,
        cert: &NewCert<'_>,
    ) -> impl Future<Output = Result<IssueOutcome, StoreError>> + Send;
    /// Records a certificate and appends its issuance entry (renewal).
    fn issue(&self, cert: &NewCert<'_>) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// A certificate by serial (hex).
    fn certificate(
        &self,
        serial: &str,
    ) -> impl Future<Output = Result<Option<CertRow>, StoreError>> + Send;
    /// A certificate by the SHA-256 of its DER.
    fn certificate_by_hash(
        &self,
        cert_hash: &Hash,
    ) -> impl Future<Output = Result<Option<CertRow>, StoreError>> + Send;
    /// In one transaction: marks the certificate revoked at `now` (if it is
    /// not already) and appends `entry` to the log.
    fn revoke(
        &self,
        serial: &str,
        now: u64,
        entry: &[u8],
    ) -> impl Future<Output = Result<RevokeOutcome, StoreError>> + Send;
    /// Every revoked certificate: (serial hex, revocation time).
    fn revoked(&self) -> impl Future<Output = Result<Vec<(String, u64)>, StoreError>> + Send;
    /// Stores a CRL under the next CRL number and returns that number's
    /// successor for the next call. The caller signs first with
    /// [`Store::next_crl_number`].
    fn store_crl(
        &self,
        number: u64,
        der: &[u8],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The next CRL number (one more than the last stored).
    fn next_crl_number(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// The latest CRL.
    fn latest_crl(&self) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;
    /// The number of log entries.
    fn log_size(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// The hashes of stored complete subtrees, in the order of `ids`.
    fn log_nodes(
        &self,
        ids: &[NodeId],
    ) -> impl Future<Output = Result<Vec<Hash>, StoreError>> + Send;
    /// The log entry at `index` and its certificate hash.
    fn log_entry(
        &self,
        index: u64,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;
    /// The index of the issuance entry of the certificate `cert_hash`.
    fn log_index_of(
        &self,
        cert_hash: &Hash,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;
}

fn u(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt("negative integer"))
}

fn i(v: u64) -> i64 {
    // Times, sizes and indexes stay far below 2^63.
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn hash(v: Vec<u8>) -> Result<Hash, StoreError> {
    v.try_into().map_err(|_| StoreError::Corrupt("hash length"))
}

/// The nodes to write when leaf `index` (with hash `leaf`) is appended:
/// the leaf, then each complete subtree it closes. `left(level, idx)` reads
/// a stored node.
fn closed_subtrees(index: u64) -> impl Iterator<Item = (NodeId, NodeId)> {
    // (left sibling to read, parent to write) for each level the append
    // closes.
    (0..64u32)
        .take_while(move |l| (index >> l) & 1 == 1)
        .map(move |l| {
            let idx = index >> l;
            (
                NodeId {
                    level: l,
                    index: idx - 1,
                },
                NodeId {
                    level: l + 1,
                    index: idx >> 1,
                },
            )
        })
}

macro_rules! sql_store {
    ($store:ident, $db:ty, begin_write = $begin:expr, lock_log = $lock:literal) => {
        impl $store {
            async fn append_log(
                tx: &mut sqlx::Transaction<'static, $db>,
                entry: &[u8],
                cert_hash: &Hash,
            ) -> Result<u64, StoreError> {
                let size: i64 = sqlx::query(concat!(
                    "SELECT size FROM log_state WHERE id = 1",
                    $lock
                ))
                .fetch_one(&mut **tx)
                .await?
                .try_get(0)?;
                let index = u(size)?;
                let mut current = tlog::leaf_hash(entry);
                sqlx::query("INSERT INTO log_nodes (level, idx, hash) VALUES (0, $1, $2)")
                    .bind(size)
                    .bind(current.to_vec())
                    .execute(&mut **tx)
                    .await?;
                for (left, parent) in closed_subtrees(index) {
                    let l: Vec<u8> =
                        sqlx::query("SELECT hash FROM log_nodes WHERE level = $1 AND idx = $2")
                            .bind(left.level as i64)
                            .bind(i(left.index))
                            .fetch_one(&mut **tx)
                            .await?
                            .try_get(0)?;
                    current = tlog::node_hash(&hash(l)?, &current);
                    sqlx::query("INSERT INTO log_nodes (level, idx, hash) VALUES ($1, $2, $3)")
                        .bind(parent.level as i64)
                        .bind(i(parent.index))
                        .bind(current.to_vec())
                        .execute(&mut **tx)
                        .await?;
                }
                sqlx::query("INSERT INTO log_entries (idx, entry, cert_hash) VALUES ($1, $2, $3)")
                    .bind(size)
                    .bind(entry)
                    .bind(cert_hash.to_vec())
                    .execute(&mut **tx)
                    .await?;
                sqlx::query("UPDATE log_state SET size = size + 1 WHERE id = 1")
                    .execute(&mut **tx)
                    .await?;
                Ok(index)
            }

            async fn insert_cert(
                tx: &mut sqlx::Transaction<'static, $db>,
                cert: &NewCert<'_>,
            ) -> Result<u64, StoreError> {
                let index = Self::append_log(tx, cert.entry, &cert.cert_hash).await?;
                sqlx::query(
                    "INSERT INTO certificates (serial, identity, der, cert_hash, not_after, log_index) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(cert.serial)
                .bind(cert.identity)
                .bind(cert.der)
                .bind(cert.cert_hash.to_vec())
                .bind(i(cert.not_after))
                .bind(i(index))
                .execute(&mut **tx)
                .await?;
                Ok(index)
            }

            fn cert_row(row: &<$db as sqlx::Database>::Row) -> Result<CertRow, StoreError> {
                Ok(CertRow {
                    serial: row.try_get(0)?,
                    identity: row.try_get(1)?,
                    der: row.try_get(2)?,
                    not_after: u(row.try_get(3)?)?,
                    revoked_at: row.try_get::<Option<i64>, _>(4)?.map(u).transpose()?,
                    log_index: u(row.try_get(5)?)?,
                })
            }
        }

        impl Store for $store {
            async fn migrate(&self) -> Result<(), StoreError> {
                for statement in self.schema() {
                    sqlx::raw_sql(*statement).execute(&self.pool).await?;
                }
                Ok(())
            }

            async fn insert_token(
                &self,
                token_hash: &Hash,
                identity: &str,
                expires: u64,
            ) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO enrol_tokens (hash, identity, expires, used) VALUES ($1, $2, $3, FALSE)",
                )
                .bind(token_hash.to_vec())
                .bind(identity)
                .bind(i(expires))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn token(&self, token_hash: &Hash) -> Result<Option<TokenRow>, StoreError> {
                let row = sqlx::query("SELECT identity, expires, used FROM enrol_tokens WHERE hash = $1")
                    .bind(token_hash.to_vec())
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|r| {
                    Ok(TokenRow {
                        identity: r.try_get(0)?,
                        expires: u(r.try_get(1)?)?,
                        used: r.try_get(2)?,
                    })
                })
                .transpose()
            }

            async fn insert_order(&self, order: &OrderRow) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO orders (id, identity, token_hash, expires, serial) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&order.id)
                .bind(&order.identity)
                .bind(order.token_hash.to_vec())
                .bind(i(order.expires))
                .bind(order.serial.as_deref())
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn order(&self, id: &str) -> Result<Option<OrderRow>, StoreError> {
                let row = sqlx::query(
                    "SELECT id, identity, token_hash, expires, serial FROM orders WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|r| {
                    Ok(OrderRow {
                        id: r.try_get(0)?,
                        identity: r.try_get(1)?,
                        token_hash: hash(r.try_get(2)?)?,
                        expires: u(r.try_get(3)?)?,
                        serial: r.try_get(4)?,
                    })
                })
                .transpose()
            }

            async fn issue_for_order(
                &self,
                order_id: &str,
                token_hash: &Hash,
                now: u64,
                cert: &NewCert<'_>,
            ) -> Result<IssueOutcome, StoreError> {
                let mut tx = self.pool.begin_with($begin).await?;
                let claimed = sqlx::query(
                    "UPDATE enrol_tokens SET used = TRUE \
                     WHERE hash = $1 AND used = FALSE AND expires > $2 RETURNING identity",
                )
                .bind(token_hash.to_vec())
                .bind(i(now))
                .fetch_optional(&mut *tx)
                .await?;
                if claimed.is_none() {
                    let used: Option<bool> =
                        sqlx::query("SELECT used FROM enrol_tokens WHERE hash = $1")
                            .bind(token_hash.to_vec())
                            .fetch_optional(&mut *tx)
                            .await?
                            .map(|r| r.try_get(0))
                            .transpose()?;
                    tx.rollback().await?;
                    return Ok(match used {
                        Some(false) => IssueOutcome::TokenExpired,
                        _ => IssueOutcome::TokenUsed,
                    });
                }
                let index = Self::insert_cert(&mut tx, cert).await?;
                sqlx::query("UPDATE orders SET serial = $1 WHERE id = $2 AND serial IS NULL")
                    .bind(cert.serial)
                    .bind(order_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(IssueOutcome::Issued(index))
            }

            async fn issue(&self, cert: &NewCert<'_>) -> Result<u64, StoreError> {
                let mut tx = self.pool.begin_with($begin).await?;
                let index = Self::insert_cert(&mut tx, cert).await?;
                tx.commit().await?;
                Ok(index)
            }

            async fn certificate(&self, serial: &str) -> Result<Option<CertRow>, StoreError> {
                let row = sqlx::query(
                    "SELECT serial, identity, der, not_after, revoked_at, log_index \
                     FROM certificates WHERE serial = $1",
                )
                .bind(serial)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(Self::cert_row).transpose()
            }

            async fn certificate_by_hash(
                &self,
                cert_hash: &Hash,
            ) -> Result<Option<CertRow>, StoreError> {
                let row = sqlx::query(
                    "SELECT serial, identity, der, not_after, revoked_at, log_index \
                     FROM certificates WHERE cert_hash = $1",
                )
                .bind(cert_hash.to_vec())
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(Self::cert_row).transpose()
            }

            async fn revoke(
                &self,
                serial: &str,
                now: u64,
                entry: &[u8],
            ) -> Result<RevokeOutcome, StoreError> {
                let mut tx = self.pool.begin_with($begin).await?;
                let row = sqlx::query(
                    "UPDATE certificates SET revoked_at = $1 \
                     WHERE serial = $2 AND revoked_at IS NULL RETURNING cert_hash",
                )
                .bind(i(now))
                .bind(serial)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    let known = sqlx::query("SELECT 1 FROM certificates WHERE serial = $1")
                        .bind(serial)
                        .fetch_optional(&mut *tx)
                        .await?
                        .is_some();
                    tx.rollback().await?;
                    return Ok(if known {
                        RevokeOutcome::AlreadyRevoked
                    } else {
                        RevokeOutcome::Unknown
                    });
                };
                let cert_hash = hash(row.try_get(0)?)?;
                let index = Self::append_log(&mut tx, entry, &cert_hash).await?;
                tx.commit().await?;
                Ok(RevokeOutcome::Revoked(index))
            }

            async fn revoked(&self) -> Result<Vec<(String, u64)>, StoreError> {
                let rows = sqlx::query(
                    "SELECT serial, revoked_at FROM certificates WHERE revoked_at IS NOT NULL ORDER BY serial",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| Ok((r.try_get(0)?, u(r.try_get(1)?)?)))
                    .collect()
            }

            async fn store_crl(&self, number: u64, der: &[u8]) -> Result<(), StoreError> {
                sqlx::query("INSERT INTO crls (number, der) VALUES ($1, $2)")
                    .bind(i(number))
                    .bind(der)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn next_crl_number(&self) -> Result<u64, StoreError> {
                let n: Option<i64> = sqlx::query("SELECT MAX(number) FROM crls")
                    .fetch_one(&self.pool)
                    .await?
                    .try_get(0)?;
                Ok(n.map(u).transpose()?.map_or(1, |n| n + 1))
            }

            async fn latest_crl(&self) -> Result<Option<Vec<u8>>, StoreError> {
                let row = sqlx::query("SELECT der FROM crls ORDER BY number DESC LIMIT 1")
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|r| r.try_get(0).map_err(StoreError::from))
                    .transpose()
            }

            async fn log_size(&self) -> Result<u64, StoreError> {
                u(sqlx::query("SELECT size FROM log_state WHERE id = 1")
                    .fetch_one(&self.pool)
                    .await?
                    .try_get(0)?)
            }

            async fn log_nodes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, StoreError> {
                let mut out = Vec::with_capacity(ids.len());
                let mut conn = self.pool.acquire().await?;
                for id in ids {
                    let h: Vec<u8> =
                        sqlx::query("SELECT hash FROM log_nodes WHERE level = $1 AND idx = $2")
                            .bind(id.level as i64)
                            .bind(i(id.index))
                            .fetch_optional(&mut *conn)
                            .await?
                            .ok_or(StoreError::Corrupt("missing log node"))?
                            .try_get(0)?;
                    out.push(hash(h)?);
                }
                Ok(out)
            }

            async fn log_entry(&self, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
                let row = sqlx::query("SELECT entry FROM log_entries WHERE idx = $1")
                    .bind(i(index))
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|r| r.try_get(0).map_err(StoreError::from))
                    .transpose()
            }

            async fn log_index_of(&self, cert_hash: &Hash) -> Result<Option<u64>, StoreError> {
                let row = sqlx::query("SELECT log_index FROM certificates WHERE cert_hash = $1")
                    .bind(cert_hash.to_vec())
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|r| u(r.try_get(0)?)).transpose()
            }
        }
    };
}

/// The schema, with `BYTES` replaced by the backend's byte type.
macro_rules! schema {
    ($bytes:literal) => {
        &[
            concat!(
                "CREATE TABLE IF NOT EXISTS enrol_tokens (hash ", $bytes, " PRIMARY KEY, \
                 identity TEXT NOT NULL, expires BIGINT NOT NULL, used BOOLEAN NOT NULL)"
            ),
            concat!(
                "CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, identity TEXT NOT NULL, \
                 token_hash ", $bytes, " NOT NULL, expires BIGINT NOT NULL, serial TEXT)"
            ),
            concat!(
                "CREATE TABLE IF NOT EXISTS certificates (serial TEXT PRIMARY KEY, \
                 identity TEXT NOT NULL, der ", $bytes, " NOT NULL, cert_hash ", $bytes,
                " NOT NULL UNIQUE, not_after BIGINT NOT NULL, revoked_at BIGINT, \
                 log_index BIGINT NOT NULL)"
            ),
            concat!(
                "CREATE TABLE IF NOT EXISTS crls (number BIGINT PRIMARY KEY, der ", $bytes,
                " NOT NULL)"
            ),
            concat!(
                "CREATE TABLE IF NOT EXISTS log_nodes (level INTEGER NOT NULL, idx BIGINT NOT NULL, \
                 hash ", $bytes, " NOT NULL, PRIMARY KEY (level, idx))"
            ),
            concat!(
                "CREATE TABLE IF NOT EXISTS log_entries (idx BIGINT PRIMARY KEY, entry ", $bytes,
                " NOT NULL, cert_hash ", $bytes, " NOT NULL)"
            ),
            "CREATE TABLE IF NOT EXISTS log_state (id INTEGER PRIMARY KEY, size BIGINT NOT NULL)",
            "INSERT INTO log_state (id, size) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
        ]
    };
}

/// The embedded store: one SQLite file, WAL, `synchronous=FULL` (a
/// certificate is acknowledged only once it is on disk).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path`.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        Self::with_options(options).await
    }

    /// Opens from a `sqlite://` URL.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        Self::with_options(options).await
    }

    async fn with_options(options: SqliteConnectOptions) -> Result<Self, StoreError> {
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        let store = SqliteStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    fn schema(&self) -> &'static [&'static str] {
        schema!("BLOB")
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

sql_store!(
    SqliteStore,
    sqlx::Sqlite,
    begin_write = "BEGIN IMMEDIATE",
    lock_log = ""
);

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (`postgres://…`), creating the tables if missing.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(PgConnectOptions::from_str(url)?).await
    }

    /// Connects with `options` (e.g. a `search_path` naming a schema).
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        let store = PgStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    fn schema(&self) -> &'static [&'static str] {
        schema!("BYTEA")
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

sql_store!(
    PgStore,
    sqlx::Postgres,
    begin_write = "BEGIN",
    lock_log = " FOR UPDATE"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_append_closes_one_subtree_per_trailing_one_bit() {
        assert_eq!(closed_subtrees(0).count(), 0);
        assert_eq!(
            closed_subtrees(3).collect::<Vec<_>>(),
            vec![
                (NodeId { level: 0, index: 2 }, NodeId { level: 1, index: 1 }),
                (NodeId { level: 1, index: 0 }, NodeId { level: 2, index: 0 }),
            ]
        );
        assert_eq!(closed_subtrees(4).count(), 0);
        assert_eq!(closed_subtrees(5).count(), 1);
    }
}
