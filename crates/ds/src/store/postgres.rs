//! The PostgreSQL store: several DS processes on one database.
//!
//! Exactly-once claims take a KeyPackage with `DELETE … WHERE id =
//! (SELECT … FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING`, and fall back to
//! the last-resort package with a plain read (no SKIP LOCKED: a claim never
//! fails because another claim holds the row). The first commit of an
//! epoch wins by `UPDATE groups SET epoch = epoch + 1, seq = seq + 1 WHERE
//! id = $1 AND epoch = $2`: the row lock orders concurrent commits across
//! processes, and the loser's update matches no row. Sequence numbers come
//! from that counter under the row lock, so they commit in order.
//!
//! Every accepted message sends `NOTIFY hsmls_ds` (delivered at commit);
//! [`PostgresStore::listen`] turns them into wake-ups for the local push
//! hub. They are hints only: a woken connection re-reads from its
//! position. A hint names its group by the group's tag and sealed id (as
//! stored in the group's row) and a Welcome's recipient by its queue id
//! sealed: PostgreSQL's notification queue (and a log of statements)
//! holds no group id or queue id in clear either.

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};

use std::sync::Arc;

use super::{
    ClaimedRow, CommitOutcome, CommitRow, DsStore, GroupRow, KeyPackageRow, MembershipRow,
    MessageOutcome, MessageRow, NewGroupRow, Purged, QueueId, SCHEMA_VERSION, StoreError,
    StoredRow, Tag, check_schema_version, random_queue_id, to_i64, to_queue, to_tag, to_u64,
};
use crate::api::{GroupMode, KeyPackageCounts};
use crate::fanout::Hub;
use crate::seal::{AtRest, Sealed};

/// The notification channel.
pub const CHANNEL: &str = "hsmls_ds";

/// The tables of [`SCHEMA_VERSION`] (tags and sealed cells: see
/// [`super::sealed`]).
const SCHEMA: &[&str] = &[
    "CREATE TABLE ds_meta (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        schema_version BIGINT NOT NULL,
        key_check BYTEA
    )",
    "CREATE TABLE clients (
        identity_tag BYTEA PRIMARY KEY,
        queue_id BYTEA NOT NULL UNIQUE,
        last_resort_claims BIGINT NOT NULL DEFAULT 0
    )",
    "CREATE TABLE key_packages (
        id BIGSERIAL PRIMARY KEY,
        reference_tag BYTEA NOT NULL UNIQUE,
        owner BYTEA NOT NULL,
        key_package BYTEA NOT NULL,
        not_after BIGINT NOT NULL,
        last_resort BOOLEAN NOT NULL,
        route BYTEA NOT NULL
    )",
    "CREATE INDEX key_packages_owner ON key_packages (owner, last_resort, id)",
    "CREATE TABLE kp_routes (
        reference_tag BYTEA PRIMARY KEY,
        owner_sealed BYTEA NOT NULL,
        until BIGINT NOT NULL
    )",
    "CREATE TABLE groups (
        tag BYTEA PRIMARY KEY,
        sealed_id BYTEA NOT NULL,
        mode BIGINT NOT NULL,
        epoch BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        public_state BYTEA,
        group_info BYTEA
    )",
    "CREATE TABLE members (
        group_tag BYTEA NOT NULL,
        member_tag BYTEA NOT NULL,
        cursor BIGINT NOT NULL,
        until BIGINT,
        PRIMARY KEY (group_tag, member_tag)
    )",
    "CREATE INDEX members_member ON members (member_tag)",
    "CREATE INDEX members_cursor ON members (group_tag, cursor)",
    "CREATE TABLE commits (
        group_tag BYTEA NOT NULL,
        epoch BIGINT NOT NULL,
        digest_tag BYTEA NOT NULL,
        seq BIGINT NOT NULL,
        stored_at BIGINT NOT NULL,
        PRIMARY KEY (group_tag, epoch)
    )",
    "CREATE TABLE messages (
        group_tag BYTEA NOT NULL,
        seq BIGINT NOT NULL,
        digest_tag BYTEA NOT NULL,
        message BYTEA NOT NULL,
        stored_at BIGINT NOT NULL,
        PRIMARY KEY (group_tag, seq)
    )",
    "CREATE UNIQUE INDEX messages_digest ON messages (group_tag, digest_tag)",
    "CREATE INDEX messages_stored_at ON messages (stored_at)",
    "CREATE TABLE welcome_bodies (
        id BIGSERIAL PRIMARY KEY,
        body BYTEA NOT NULL,
        stored_at BIGINT NOT NULL
    )",
    "CREATE TABLE inbox (
        recipient_tag BYTEA NOT NULL,
        welcome_id BIGINT NOT NULL,
        PRIMARY KEY (recipient_tag, welcome_id)
    )",
    "CREATE INDEX inbox_welcome ON inbox (welcome_id)",
];

/// Counts the tables of schema version 1 (which had no version row) in
/// the current schema.
const VERSION_1_TABLES: &str = "SELECT COUNT(*) FROM information_schema.tables
    WHERE table_schema = current_schema()
    AND table_name IN ('clients', 'key_packages', 'kp_routes', 'groups', 'members', 'commits',
                       'messages', 'welcome_bodies', 'inbox')";

/// Creates the tables in a new database, or checks the version of an
/// existing one (inside the caller's transaction).
async fn prepare_schema(tx: &mut Transaction<'_, Postgres>) -> Result<(), StoreError> {
    let has_meta: bool = sqlx::query_scalar("SELECT to_regclass('ds_meta') IS NOT NULL")
        .fetch_one(&mut **tx)
        .await?;
    if has_meta {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT schema_version FROM ds_meta WHERE id = 1")
                .fetch_optional(&mut **tx)
                .await?;
        return check_schema_version(found);
    }
    let old: i64 = sqlx::query_scalar(VERSION_1_TABLES)
        .fetch_one(&mut **tx)
        .await?;
    if old > 0 {
        return Err(StoreError::SchemaVersion {
            found: 1,
            expected: SCHEMA_VERSION,
        });
    }
    for statement in SCHEMA {
        sqlx::query(*statement).execute(&mut **tx).await?;
    }
    sqlx::query("INSERT INTO ds_meta (id, schema_version) VALUES (1, $1)")
        .bind(SCHEMA_VERSION)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The DS store on PostgreSQL (see the module documentation).
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

fn u(row: &PgRow, i: usize, what: &'static str) -> Result<u64, StoreError> {
    to_u64(row.try_get::<i64, _>(i)?, what)
}

/// The hint payload of a group's new message: `g` + hex(group tag) + `:`
/// + seq + `:` + hex(sealed group id, from the group's row).
fn group_hint(group: &Tag, seq: i64, sealed_id: &[u8]) -> String {
    format!("g{}:{seq}:{}", hex::encode(group), hex::encode(sealed_id))
}

/// The hint payload of a queue's new Welcome: `q` + hex(sealed queue id).
fn queue_hint(sealed_queue: &[u8]) -> String {
    format!("q{}", hex::encode(sealed_queue))
}

async fn notify(tx: &mut Transaction<'_, Postgres>, payload: String) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(payload)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn is_current_member(
    c: &mut sqlx::PgConnection,
    group: &Tag,
    member: &Tag,
) -> Result<bool, StoreError> {
    Ok(sqlx::query(
        "SELECT 1 FROM members WHERE group_tag = $1 AND member_tag = $2 AND until IS NULL",
    )
    .bind(&group[..])
    .bind(&member[..])
    .fetch_optional(&mut *c)
    .await?
    .is_some())
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23505"))
}

impl PostgresStore {
    /// Connects to `url` (e.g. `postgres://user@127.0.0.1:5432/db`) with
    /// `connections` pooled connections and creates the tables if needed.
    pub async fn connect(url: &str, connections: u32) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(connections.max(2))
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await?;
        let mut tx = pool.begin().await?;
        // Several processes may start at once: one creates the tables.
        sqlx::query("SELECT pg_advisory_xact_lock(7306551)")
            .execute(&mut *tx)
            .await?;
        prepare_schema(&mut tx).await?;
        tx.commit().await?;
        Ok(PostgresStore { pool })
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Listens for the other processes' notifications and wakes `hub`'s
    /// subscribers; after a lost connection every subscriber is woken
    /// (they re-read from their positions). `keys` (the DS key's, as
    /// every process's) open the hints' sealed ids. Runs until the task
    /// is dropped.
    pub fn listen(&self, hub: Hub, keys: Arc<AtRest>) -> tokio::task::JoinHandle<()> {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            loop {
                let mut listener = match PgListener::connect_with(&pool).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                if let Err(e) = listener.listen(CHANNEL).await {
                    tracing::warn!(error = %e, "LISTEN failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                // Anything sent while not listening is lost: wake everyone.
                hub.wake_all();
                loop {
                    match listener.try_recv().await {
                        Ok(Some(n)) => apply_hint(&hub, &keys, n.payload()),
                        Ok(None) => {
                            hub.wake_all();
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "LISTEN connection lost");
                            break;
                        }
                    }
                }
            }
        })
    }
}

/// Wakes what a hint names. A hint that does not parse or open (it
/// cannot come from a process with the same key) wakes everyone: hints
/// are never trusted for more than a re-read.
fn apply_hint(hub: &Hub, keys: &AtRest, payload: &str) {
    let woke = if let Some(rest) = payload.strip_prefix('g') {
        let mut parts = rest.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(tag), Some(seq), Some(sealed)) => {
                match (hex::decode(tag), seq.parse::<u64>(), hex::decode(sealed)) {
                    (Ok(tag), Ok(seq), Ok(sealed)) => keys
                        .open(Sealed::GroupId, &[&tag], &sealed)
                        .map(|gid| hub.group_advanced(&gid, seq))
                        .is_ok(),
                    _ => false,
                }
            }
            _ => false,
        }
    } else if let Some(q) = payload.strip_prefix('q') {
        hex::decode(q)
            .ok()
            .and_then(|sealed| keys.open_queue(Sealed::Hint, &[], &sealed).ok())
            .map(|q| hub.queue_changed(&q))
            .is_some()
    } else {
        false
    };
    if !woke {
        tracing::warn!("a wake-up hint did not open; waking every push connection");
        hub.wake_all();
    }
}

/// What [`decide_message`] found, inside its transaction.
enum Decided {
    /// Counted and inserted (not yet committed); the group's sealed id is
    /// for the hint.
    Accepted {
        seq: i64,
        epoch: u64,
        sealed_id: Vec<u8>,
    },
    /// Not stored.
    Refused(MessageOutcome),
}

/// Decides and, if accepted, stores one application message or proposal
/// in `tx` (which the caller commits or drops).
async fn decide_message(
    tx: &mut Transaction<'_, Postgres>,
    m: &MessageRow,
) -> Result<Decided, StoreError> {
    let e = to_i64(m.epoch, "epoch")?;
    let window = to_i64(m.window, "window")?;
    let now = to_i64(m.now, "now")?;
    if let Some(r) =
        sqlx::query("SELECT seq FROM messages WHERE group_tag = $1 AND digest_tag = $2")
            .bind(&m.group[..])
            .bind(&m.digest[..])
            .fetch_optional(&mut **tx)
            .await?
    {
        return Ok(Decided::Refused(MessageOutcome::Duplicate {
            seq: u(&r, 0, "seq")?,
        }));
    }
    let (state, expect) = match &m.public_state {
        Some((s, seq)) => (Some(s.clone()), Some(to_i64(*seq, "seq")?)),
        None => (None, None),
    };
    let row = sqlx::query(
        "UPDATE groups SET seq = seq + 1, public_state = COALESCE($5, public_state)
         WHERE tag = $1 AND epoch >= $2 AND epoch <= $2 + $3
           AND ($6::BIGINT IS NULL OR seq = $6)
           AND EXISTS (SELECT 1 FROM members
                       WHERE group_tag = $1 AND member_tag = $4 AND until IS NULL)
         RETURNING seq, epoch, sealed_id",
    )
    .bind(&m.group[..])
    .bind(e)
    .bind(window)
    .bind(&m.sender[..])
    .bind(state)
    .bind(expect)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else {
        let Some(g) = sqlx::query("SELECT epoch, seq FROM groups WHERE tag = $1")
            .bind(&m.group[..])
            .fetch_optional(&mut **tx)
            .await?
        else {
            return Ok(Decided::Refused(MessageOutcome::UnknownGroup));
        };
        if !is_current_member(tx, &m.group, &m.sender).await? {
            return Ok(Decided::Refused(MessageOutcome::NotMember));
        }
        let current = u(&g, 0, "epoch")?;
        if m.epoch > current || m.epoch.saturating_add(m.window) < current {
            return Ok(Decided::Refused(MessageOutcome::WrongEpoch {
                current_epoch: current,
            }));
        }
        return Ok(Decided::Refused(MessageOutcome::StateChanged));
    };
    let seq: i64 = row.try_get(0)?;
    let epoch = u(&row, 1, "epoch")?;
    let sealed_id: Vec<u8> = row.try_get(2)?;
    sqlx::query(
        "INSERT INTO messages (group_tag, seq, digest_tag, message, stored_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&m.group[..])
    .bind(seq)
    .bind(&m.digest[..])
    .bind(&m.message)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(Decided::Accepted {
        seq,
        epoch,
        sealed_id,
    })
}

impl PostgresStore {
    /// [`DsStore::append_messages`] in one transaction; `None` if it
    /// failed (rolled back).
    async fn append_in_one_transaction(
        &self,
        messages: &[MessageRow],
    ) -> Result<Option<Vec<MessageOutcome>>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut outcomes = Vec::with_capacity(messages.len());
        // The last seq per group, for one hint each.
        let mut last: Vec<(&Tag, i64, Vec<u8>)> = Vec::new();
        for m in messages {
            match decide_message(&mut tx, m).await {
                Ok(Decided::Accepted {
                    seq,
                    epoch,
                    sealed_id,
                }) => {
                    match last.iter_mut().find(|(g, _, _)| **g == m.group) {
                        Some((_, s, _)) => *s = seq,
                        None => last.push((&m.group, seq, sealed_id)),
                    }
                    outcomes.push(MessageOutcome::Accepted {
                        seq: to_u64(seq, "seq")?,
                        epoch,
                    });
                }
                Ok(Decided::Refused(o)) => outcomes.push(o),
                Err(StoreError::Database(_)) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        for (g, seq, sealed_id) in last {
            notify(&mut tx, group_hint(g, seq, &sealed_id)).await?;
        }
        match tx.commit().await {
            Ok(()) => Ok(Some(outcomes)),
            Err(_) => Ok(None),
        }
    }
}

impl DsStore for PostgresStore {
    async fn key_check(&self, check: Tag) -> Result<bool, StoreError> {
        // Concurrent first starts: the row lock orders the updates, the
        // second finds the first's value.
        sqlx::query("UPDATE ds_meta SET key_check = $1 WHERE id = 1 AND key_check IS NULL")
            .bind(&check[..])
            .execute(&self.pool)
            .await?;
        let stored: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT key_check FROM ds_meta WHERE id = 1")
                .fetch_one(&self.pool)
                .await?;
        Ok(stored.as_deref() == Some(&check[..]))
    }

    async fn client_queue(&self, identity_tag: [u8; 32]) -> Result<QueueId, StoreError> {
        let q = random_queue_id();
        sqlx::query(
            "INSERT INTO clients (identity_tag, queue_id) VALUES ($1, $2) ON CONFLICT (identity_tag) DO NOTHING",
        )
        .bind(&identity_tag[..])
        .bind(&q[..])
        .execute(&self.pool)
        .await?;
        self.find_client(identity_tag)
            .await?
            .ok_or(StoreError::CorruptRow("client row vanished"))
    }

    async fn find_client(&self, identity_tag: [u8; 32]) -> Result<Option<QueueId>, StoreError> {
        let r = sqlx::query("SELECT queue_id FROM clients WHERE identity_tag = $1")
            .bind(&identity_tag[..])
            .fetch_optional(&self.pool)
            .await?;
        r.map(|r| to_queue(&r.try_get::<Vec<u8>, _>(0)?))
            .transpose()
    }

    async fn publish_key_packages(
        &self,
        owner: QueueId,
        key_packages: Vec<KeyPackageRow>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for kp in &key_packages {
            sqlx::query(
                "INSERT INTO key_packages
                    (reference_tag, owner, key_package, not_after, last_resort, route)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (reference_tag) DO NOTHING",
            )
            .bind(&kp.reference[..])
            .bind(&owner[..])
            .bind(&kp.key_package)
            .bind(to_i64(kp.not_after, "not_after")?)
            .bind(kp.last_resort)
            .bind(&kp.route)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE clients SET last_resort_claims = 0 WHERE queue_id = $1")
            .bind(&owner[..])
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn claim_key_package(
        &self,
        owner: QueueId,
        now: u64,
        route_until: u64,
    ) -> Result<Option<ClaimedRow>, StoreError> {
        let now = to_i64(now, "now")?;
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "DELETE FROM key_packages WHERE id = (
                SELECT id FROM key_packages
                WHERE owner = $1 AND NOT last_resort AND not_after >= $2
                ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING reference_tag, key_package, route",
        )
        .bind(&owner[..])
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let (row, last_resort) = match row {
            Some(r) => (r, false),
            None => {
                // A plain read: a last-resort package held by another
                // claim is served all the same.
                let Some(r) = sqlx::query(
                    "SELECT reference_tag, key_package, route FROM key_packages
                     WHERE owner = $1 AND last_resort AND not_after >= $2
                     ORDER BY not_after DESC, id DESC LIMIT 1",
                )
                .bind(&owner[..])
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?
                else {
                    return Ok(None);
                };
                sqlx::query(
                    "UPDATE clients SET last_resort_claims = last_resort_claims + 1 WHERE queue_id = $1",
                )
                .bind(&owner[..])
                .execute(&mut *tx)
                .await?;
                (r, true)
            }
        };
        let claimed = ClaimedRow {
            reference: to_tag(&row.try_get::<Vec<u8>, _>(0)?)?,
            key_package: row.try_get(1)?,
            last_resort,
        };
        let route: Vec<u8> = row.try_get(2)?;
        sqlx::query(
            "INSERT INTO kp_routes (reference_tag, owner_sealed, until) VALUES ($1, $2, $3)
             ON CONFLICT (reference_tag)
             DO UPDATE SET owner_sealed = excluded.owner_sealed, until = excluded.until",
        )
        .bind(&claimed.reference[..])
        .bind(&route)
        .bind(to_i64(route_until, "route_until")?)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(claimed))
    }

    async fn key_package_counts(
        &self,
        owner: QueueId,
        now: u64,
    ) -> Result<KeyPackageCounts, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) FILTER (WHERE NOT last_resort), COUNT(*) FILTER (WHERE last_resort),
                COALESCE((SELECT last_resort_claims FROM clients WHERE queue_id = $1), 0)
             FROM key_packages WHERE owner = $1 AND not_after >= $2",
        )
        .bind(&owner[..])
        .bind(to_i64(now, "now")?)
        .fetch_one(&self.pool)
        .await?;
        Ok(KeyPackageCounts {
            available: u(&row, 0, "count")?,
            last_resort: u(&row, 1, "count")?,
            last_resort_claims: u(&row, 2, "count")?,
        })
    }

    async fn route_key_package_refs(
        &self,
        references: Vec<Tag>,
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let mut out = Vec::with_capacity(references.len());
        let mut c = self.pool.acquire().await?;
        for r in &references {
            let owner: Option<Vec<u8>> =
                sqlx::query_scalar("SELECT owner_sealed FROM kp_routes WHERE reference_tag = $1")
                    .bind(&r[..])
                    .fetch_optional(&mut *c)
                    .await?;
            out.push(owner);
        }
        Ok(out)
    }

    async fn create_group(&self, g: NewGroupRow) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "INSERT INTO groups (tag, sealed_id, mode, epoch, seq, public_state, group_info)
             VALUES ($1, $2, $3, $4, 0, $5, $6) ON CONFLICT (tag) DO NOTHING",
        )
        .bind(&g.group[..])
        .bind(&g.sealed_id)
        .bind(g.mode.code())
        .bind(to_i64(g.epoch, "epoch")?)
        .bind(&g.public_state)
        .bind(&g.group_info)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO members (group_tag, member_tag, cursor, until) VALUES ($1, $2, 0, NULL)",
        )
        .bind(&g.group[..])
        .bind(&g.creator[..])
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn group(&self, group: Tag) -> Result<Option<GroupRow>, StoreError> {
        let row = sqlx::query(
            "SELECT mode, epoch, seq, public_state, group_info FROM groups WHERE tag = $1",
        )
        .bind(&group[..])
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(GroupRow {
                mode: GroupMode::from_code(r.try_get(0)?).ok_or(StoreError::CorruptRow("mode"))?,
                epoch: u(&r, 1, "epoch")?,
                seq: u(&r, 2, "seq")?,
                public_state: r.try_get(3)?,
                group_info: r.try_get(4)?,
            })
        })
        .transpose()
    }

    async fn is_member(&self, group: Tag, member: Tag) -> Result<bool, StoreError> {
        let mut c = self.pool.acquire().await?;
        is_current_member(&mut c, &group, &member).await
    }

    async fn append_commit(&self, m: CommitRow) -> Result<CommitOutcome, StoreError> {
        let epoch = to_i64(m.epoch, "epoch")?;
        let now = to_i64(m.now, "now")?;
        let mut tx = self.pool.begin().await?;
        let retry = |r: PgRow| -> Result<CommitOutcome, StoreError> {
            Ok(CommitOutcome::AlreadyAccepted {
                seq: u(&r, 0, "seq")?,
                epoch: m.epoch + 1,
            })
        };
        let find_retry =
            "SELECT seq FROM commits WHERE group_tag = $1 AND epoch = $2 AND digest_tag = $3";
        if let Some(r) = sqlx::query(find_retry)
            .bind(&m.group[..])
            .bind(epoch)
            .bind(&m.digest[..])
            .fetch_optional(&mut *tx)
            .await?
        {
            return retry(r);
        }
        // The row lock of this UPDATE orders concurrent commits (of every
        // process); the loser matches no row once the winner committed.
        let row = sqlx::query(
            "UPDATE groups SET epoch = epoch + 1, seq = seq + 1,
                public_state = COALESCE($3, public_state), group_info = COALESCE($4, group_info)
             WHERE tag = $1 AND epoch = $2 AND ($6 OR EXISTS (
                SELECT 1 FROM members WHERE group_tag = $1 AND member_tag = $5 AND until IS NULL))
             RETURNING seq, epoch, sealed_id",
        )
        .bind(&m.group[..])
        .bind(epoch)
        .bind(&m.public_state)
        .bind(&m.group_info)
        .bind(&m.sender[..])
        .bind(m.external)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            // Why not: no group, not a member, a concurrent retry of the
            // same commit that won, or another commit has the epoch.
            let Some(g) = sqlx::query("SELECT epoch FROM groups WHERE tag = $1")
                .bind(&m.group[..])
                .fetch_optional(&mut *tx)
                .await?
            else {
                return Ok(CommitOutcome::UnknownGroup);
            };
            if let Some(r) = sqlx::query(find_retry)
                .bind(&m.group[..])
                .bind(epoch)
                .bind(&m.digest[..])
                .fetch_optional(&mut *tx)
                .await?
            {
                return retry(r);
            }
            if !m.external && !is_current_member(&mut tx, &m.group, &m.sender).await? {
                return Ok(CommitOutcome::NotMember);
            }
            return Ok(CommitOutcome::Conflict {
                current_epoch: u(&g, 0, "epoch")?,
            });
        };
        let seq: i64 = row.try_get(0)?;
        let new_epoch = u(&row, 1, "epoch")?;
        let sealed_id: Vec<u8> = row.try_get(2)?;
        sqlx::query(
            "INSERT INTO messages (group_tag, seq, digest_tag, message, stored_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&m.group[..])
        .bind(seq)
        .bind(&m.digest[..])
        .bind(&m.message)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO commits (group_tag, epoch, digest_tag, seq, stored_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&m.group[..])
        .bind(epoch)
        .bind(&m.digest[..])
        .bind(seq)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for q in &m.removed {
            sqlx::query(
                "UPDATE members SET until = $3
                 WHERE group_tag = $1 AND member_tag = $2 AND until IS NULL",
            )
            .bind(&m.group[..])
            .bind(&q[..])
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        }
        for q in &m.added {
            sqlx::query(
                "INSERT INTO members (group_tag, member_tag, cursor, until) VALUES ($1, $2, $3, NULL)
                 ON CONFLICT (group_tag, member_tag)
                 DO UPDATE SET cursor = excluded.cursor, until = NULL",
            )
            .bind(&m.group[..])
            .bind(&q[..])
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(w) = &m.welcome {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO welcome_bodies (body, stored_at) VALUES ($1, $2) RETURNING id",
            )
            .bind(&w.body)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            for r in &w.recipients {
                sqlx::query(
                    "INSERT INTO inbox (recipient_tag, welcome_id) VALUES ($1, $2)
                     ON CONFLICT DO NOTHING",
                )
                .bind(&r[..])
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            for h in &w.hints {
                notify(&mut tx, queue_hint(h)).await?;
            }
        }
        notify(&mut tx, group_hint(&m.group, seq, &sealed_id)).await?;
        tx.commit().await?;
        Ok(CommitOutcome::Accepted {
            seq: to_u64(seq, "seq")?,
            epoch: new_epoch,
        })
    }

    async fn append_message(&self, m: MessageRow) -> Result<MessageOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        match decide_message(&mut tx, &m).await {
            Ok(Decided::Accepted {
                seq,
                epoch,
                sealed_id,
            }) => {
                notify(&mut tx, group_hint(&m.group, seq, &sealed_id)).await?;
                tx.commit().await?;
                Ok(MessageOutcome::Accepted {
                    seq: to_u64(seq, "seq")?,
                    epoch,
                })
            }
            Ok(Decided::Refused(outcome)) => Ok(outcome),
            Err(StoreError::Database(e)) if is_unique_violation(&e) => {
                // The same bytes committed concurrently: give the counter
                // back and report where they are.
                tx.rollback().await?;
                let r = sqlx::query(
                    "SELECT seq FROM messages WHERE group_tag = $1 AND digest_tag = $2",
                )
                .bind(&m.group[..])
                .bind(&m.digest[..])
                .fetch_one(&self.pool)
                .await?;
                Ok(MessageOutcome::Duplicate {
                    seq: u(&r, 0, "seq")?,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Several messages in one transaction (the group's row lock taken
    /// once, one commit): a group's rate is bounded by its commits, so a
    /// batch of n raises it about n-fold. Any database error (such as the
    /// same bytes committed concurrently by another connection) rolls the
    /// batch back, and its messages are decided one by one instead.
    async fn append_messages(
        &self,
        messages: Vec<MessageRow>,
    ) -> Result<Vec<MessageOutcome>, StoreError> {
        if messages.len() > 1
            && messages.iter().all(|m| m.public_state.is_none())
            && let Some(outcomes) = self.append_in_one_transaction(&messages).await?
        {
            return Ok(outcomes);
        }
        let mut outcomes = Vec::with_capacity(messages.len());
        for m in messages {
            outcomes.push(self.append_message(m).await?);
        }
        Ok(outcomes)
    }

    async fn memberships(&self, member: Tag) -> Result<Vec<MembershipRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT m.group_tag, g.sealed_id, m.cursor, m.until
             FROM members m JOIN groups g ON g.tag = m.group_tag WHERE m.member_tag = $1",
        )
        .bind(&member[..])
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MembershipRow {
                    group: to_tag(&r.try_get::<Vec<u8>, _>(0)?)?,
                    sealed_id: r.try_get(1)?,
                    cursor: u(r, 2, "cursor")?,
                    until: r
                        .try_get::<Option<i64>, _>(3)?
                        .map(|v| to_u64(v, "until"))
                        .transpose()?,
                })
            })
            .collect()
    }

    async fn read_messages(
        &self,
        group: Tag,
        after: u64,
        until: Option<u64>,
        limit: u32,
    ) -> Result<Vec<StoredRow>, StoreError> {
        let until = until.map_or(Ok(i64::MAX), |v| to_i64(v, "until"))?;
        let rows = sqlx::query(
            "SELECT seq, digest_tag, message FROM messages
             WHERE group_tag = $1 AND seq > $2 AND seq <= $3
             ORDER BY seq LIMIT $4",
        )
        .bind(&group[..])
        .bind(to_i64(after, "after")?)
        .bind(until)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredRow {
                    seq: u(r, 0, "seq")?,
                    digest: to_tag(&r.try_get::<Vec<u8>, _>(1)?)?,
                    message: r.try_get(2)?,
                })
            })
            .collect()
    }

    async fn read_welcomes(
        &self,
        inbox: Tag,
        limit: u32,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT i.welcome_id, b.body FROM inbox i JOIN welcome_bodies b ON b.id = i.welcome_id
             WHERE i.recipient_tag = $1 ORDER BY i.welcome_id LIMIT $2",
        )
        .bind(&inbox[..])
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((u(r, 0, "welcome id")?, r.try_get(1)?)))
            .collect()
    }

    async fn acknowledge(
        &self,
        member: Tag,
        inbox: Tag,
        positions: Vec<(Tag, u64)>,
        welcomes: Vec<u64>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for (group, seq) in positions {
            let seq = to_i64(seq, "seq")?;
            let changed = sqlx::query(
                "UPDATE members SET cursor = LEAST($3, (SELECT seq FROM groups WHERE tag = $1))
                 WHERE group_tag = $1 AND member_tag = $2 AND cursor < $3",
            )
            .bind(&group[..])
            .bind(&member[..])
            .bind(seq)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed == 0 {
                continue;
            }
            sqlx::query(
                "DELETE FROM members WHERE group_tag = $1 AND member_tag = $2
                 AND until IS NOT NULL AND cursor >= until",
            )
            .bind(&group[..])
            .bind(&member[..])
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "DELETE FROM messages WHERE group_tag = $1 AND seq <= COALESCE(
                    (SELECT MIN(cursor) FROM members WHERE group_tag = $1),
                    (SELECT seq FROM groups WHERE tag = $1))",
            )
            .bind(&group[..])
            .execute(&mut *tx)
            .await?;
        }
        for id in welcomes {
            let id = to_i64(id, "welcome id")?;
            let n = sqlx::query("DELETE FROM inbox WHERE recipient_tag = $1 AND welcome_id = $2")
                .bind(&inbox[..])
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n > 0 {
                sqlx::query(
                    "DELETE FROM welcome_bodies WHERE id = $1
                     AND NOT EXISTS (SELECT 1 FROM inbox WHERE welcome_id = $1)",
                )
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn purge(&self, now: u64, stored_before: u64) -> Result<Purged, StoreError> {
        let now = to_i64(now, "now")?;
        let before = to_i64(stored_before, "stored_before")?;
        let mut tx = self.pool.begin().await?;
        let key_packages = sqlx::query("DELETE FROM key_packages WHERE not_after < $1")
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let routes = sqlx::query("DELETE FROM kp_routes WHERE until < $1")
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let messages = sqlx::query("DELETE FROM messages WHERE stored_at < $1")
            .bind(before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM commits WHERE stored_at < $1")
            .bind(before)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM inbox WHERE welcome_id IN (SELECT id FROM welcome_bodies WHERE stored_at < $1)",
        )
        .bind(before)
        .execute(&mut *tx)
        .await?;
        let welcomes = sqlx::query("DELETE FROM welcome_bodies WHERE stored_at < $1")
            .bind(before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(Purged {
            key_packages,
            messages,
            welcomes,
            routes,
        })
    }

    async fn stored_message_count(&self, group: Tag) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE group_tag = $1")
            .bind(&group[..])
            .fetch_one(&self.pool)
            .await?;
        to_u64(n, "count")
    }
}
