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
//! position.

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};

use super::{
    Claimed, CommitOutcome, DsStore, GroupRecord, Membership, MessageOutcome, NewCommit, NewGroup,
    NewKeyPackage, NewMessage, Purged, QueueId, StoreError, StoredMessage, random_queue_id, to_i64,
    to_queue, to_u64,
};
use crate::api::{GroupMode, KeyPackageCounts};
use crate::fanout::Hub;

/// The notification channel.
pub const CHANNEL: &str = "hsmls_ds";

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS clients (
        identity_tag BYTEA PRIMARY KEY,
        queue_id BYTEA NOT NULL UNIQUE,
        last_resort_claims BIGINT NOT NULL DEFAULT 0
    )",
    "CREATE TABLE IF NOT EXISTS key_packages (
        id BIGSERIAL PRIMARY KEY,
        reference BYTEA NOT NULL UNIQUE,
        owner BYTEA NOT NULL,
        key_package BYTEA NOT NULL,
        not_after BIGINT NOT NULL,
        last_resort BOOLEAN NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS key_packages_owner ON key_packages (owner, last_resort, id)",
    "CREATE TABLE IF NOT EXISTS kp_routes (
        reference BYTEA PRIMARY KEY,
        owner BYTEA NOT NULL,
        until BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS groups (
        id BYTEA PRIMARY KEY,
        mode BIGINT NOT NULL,
        epoch BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        public_state BYTEA,
        group_info BYTEA
    )",
    "CREATE TABLE IF NOT EXISTS members (
        group_id BYTEA NOT NULL,
        queue_id BYTEA NOT NULL,
        cursor BIGINT NOT NULL,
        until BIGINT,
        PRIMARY KEY (group_id, queue_id)
    )",
    "CREATE INDEX IF NOT EXISTS members_queue ON members (queue_id)",
    "CREATE INDEX IF NOT EXISTS members_cursor ON members (group_id, cursor)",
    "CREATE TABLE IF NOT EXISTS commits (
        group_id BYTEA NOT NULL,
        epoch BIGINT NOT NULL,
        digest BYTEA NOT NULL,
        seq BIGINT NOT NULL,
        stored_at BIGINT NOT NULL,
        PRIMARY KEY (group_id, epoch)
    )",
    "CREATE TABLE IF NOT EXISTS messages (
        group_id BYTEA NOT NULL,
        seq BIGINT NOT NULL,
        digest BYTEA NOT NULL,
        message BYTEA NOT NULL,
        stored_at BIGINT NOT NULL,
        PRIMARY KEY (group_id, seq)
    )",
    "CREATE UNIQUE INDEX IF NOT EXISTS messages_digest ON messages (group_id, digest)",
    "CREATE INDEX IF NOT EXISTS messages_stored_at ON messages (stored_at)",
    "CREATE TABLE IF NOT EXISTS welcome_bodies (
        id BIGSERIAL PRIMARY KEY,
        body BYTEA NOT NULL,
        stored_at BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS inbox (
        queue_id BYTEA NOT NULL,
        welcome_id BIGINT NOT NULL,
        PRIMARY KEY (queue_id, welcome_id)
    )",
    "CREATE INDEX IF NOT EXISTS inbox_welcome ON inbox (welcome_id)",
];

/// The DS store on PostgreSQL (see the module documentation).
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

fn u(row: &PgRow, i: usize, what: &'static str) -> Result<u64, StoreError> {
    to_u64(row.try_get::<i64, _>(i)?, what)
}

/// The hint payload of a group's new message: `g` + hex(group id) + `:` +
/// seq.
fn group_hint(group_id: &[u8], seq: i64) -> String {
    format!("g{}:{seq}", hex::encode(group_id))
}

/// The hint payload of a queue's new Welcome.
fn queue_hint(queue: &QueueId) -> String {
    format!("q{}", hex::encode(queue))
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
    group_id: &[u8],
    queue: &QueueId,
) -> Result<bool, StoreError> {
    Ok(
        sqlx::query(
            "SELECT 1 FROM members WHERE group_id = $1 AND queue_id = $2 AND until IS NULL",
        )
        .bind(group_id)
        .bind(&queue[..])
        .fetch_optional(&mut *c)
        .await?
        .is_some(),
    )
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
        for s in SCHEMA {
            sqlx::query(*s).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(PostgresStore { pool })
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Listens for the other processes' notifications and wakes `hub`'s
    /// subscribers; after a lost connection every subscriber is woken
    /// (they re-read from their positions). Runs until the task is
    /// dropped.
    pub fn listen(&self, hub: Hub) -> tokio::task::JoinHandle<()> {
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
                        Ok(Some(n)) => apply_hint(&hub, n.payload()),
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

fn apply_hint(hub: &Hub, payload: &str) {
    if let Some(rest) = payload.strip_prefix('g') {
        if let Some((gid, seq)) = rest.split_once(':')
            && let (Ok(gid), Ok(seq)) = (hex::decode(gid), seq.parse::<u64>())
        {
            hub.group_advanced(&gid, seq);
        }
    } else if let Some(q) = payload.strip_prefix('q')
        && let Ok(q) = hex::decode(q)
        && let Ok(q) = to_queue(&q)
    {
        hub.queue_changed(&q);
    }
}

/// What [`decide_message`] found, inside its transaction.
enum Decided {
    /// Counted and inserted (not yet committed).
    Accepted { seq: i64, epoch: u64 },
    /// Not stored.
    Refused(MessageOutcome),
}

/// Decides and, if accepted, stores one application message or proposal
/// in `tx` (which the caller commits or drops).
async fn decide_message(
    tx: &mut Transaction<'_, Postgres>,
    m: &NewMessage,
) -> Result<Decided, StoreError> {
    let e = to_i64(m.epoch, "epoch")?;
    let window = to_i64(m.window, "window")?;
    let now = to_i64(m.now, "now")?;
    if let Some(r) = sqlx::query("SELECT seq FROM messages WHERE group_id = $1 AND digest = $2")
        .bind(&m.group_id)
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
         WHERE id = $1 AND epoch >= $2 AND epoch <= $2 + $3
           AND ($6::BIGINT IS NULL OR seq = $6)
           AND EXISTS (SELECT 1 FROM members WHERE group_id = $1 AND queue_id = $4 AND until IS NULL)
         RETURNING seq, epoch",
    )
    .bind(&m.group_id)
    .bind(e)
    .bind(window)
    .bind(&m.sender[..])
    .bind(state)
    .bind(expect)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else {
        let Some(g) = sqlx::query("SELECT epoch, seq FROM groups WHERE id = $1")
            .bind(&m.group_id)
            .fetch_optional(&mut **tx)
            .await?
        else {
            return Ok(Decided::Refused(MessageOutcome::UnknownGroup));
        };
        if !is_current_member(tx, &m.group_id, &m.sender).await? {
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
    sqlx::query(
        "INSERT INTO messages (group_id, seq, digest, message, stored_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&m.group_id)
    .bind(seq)
    .bind(&m.digest[..])
    .bind(&m.message)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(Decided::Accepted { seq, epoch })
}

impl PostgresStore {
    /// [`DsStore::append_messages`] in one transaction; `None` if it
    /// failed (rolled back).
    async fn append_in_one_transaction(
        &self,
        messages: &[NewMessage],
    ) -> Result<Option<Vec<MessageOutcome>>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut outcomes = Vec::with_capacity(messages.len());
        // The last seq per group, for one hint each.
        let mut last: Vec<(&[u8], i64)> = Vec::new();
        for m in messages {
            match decide_message(&mut tx, m).await {
                Ok(Decided::Accepted { seq, epoch }) => {
                    match last.iter_mut().find(|(g, _)| *g == m.group_id.as_slice()) {
                        Some((_, s)) => *s = seq,
                        None => last.push((&m.group_id, seq)),
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
        for (g, seq) in last {
            notify(&mut tx, group_hint(g, seq)).await?;
        }
        match tx.commit().await {
            Ok(()) => Ok(Some(outcomes)),
            Err(_) => Ok(None),
        }
    }
}

impl DsStore for PostgresStore {
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
        key_packages: Vec<NewKeyPackage>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for kp in &key_packages {
            sqlx::query(
                "INSERT INTO key_packages (reference, owner, key_package, not_after, last_resort)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (reference) DO NOTHING",
            )
            .bind(&kp.reference)
            .bind(&owner[..])
            .bind(&kp.key_package)
            .bind(to_i64(kp.not_after, "not_after")?)
            .bind(kp.last_resort)
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
    ) -> Result<Option<Claimed>, StoreError> {
        let now = to_i64(now, "now")?;
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "DELETE FROM key_packages WHERE id = (
                SELECT id FROM key_packages
                WHERE owner = $1 AND NOT last_resort AND not_after >= $2
                ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING reference, key_package",
        )
        .bind(&owner[..])
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let claimed = match row {
            Some(r) => Claimed {
                reference: r.try_get(0)?,
                key_package: r.try_get(1)?,
                last_resort: false,
            },
            None => {
                // A plain read: a last-resort package held by another
                // claim is served all the same.
                let Some(r) = sqlx::query(
                    "SELECT reference, key_package FROM key_packages
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
                Claimed {
                    reference: r.try_get(0)?,
                    key_package: r.try_get(1)?,
                    last_resort: true,
                }
            }
        };
        sqlx::query(
            "INSERT INTO kp_routes (reference, owner, until) VALUES ($1, $2, $3)
             ON CONFLICT (reference) DO UPDATE SET owner = excluded.owner, until = excluded.until",
        )
        .bind(&claimed.reference)
        .bind(&owner[..])
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
        references: Vec<Vec<u8>>,
    ) -> Result<Vec<Option<QueueId>>, StoreError> {
        let mut out = Vec::with_capacity(references.len());
        let mut c = self.pool.acquire().await?;
        for r in &references {
            let row = sqlx::query("SELECT owner FROM kp_routes WHERE reference = $1")
                .bind(r)
                .fetch_optional(&mut *c)
                .await?;
            out.push(
                row.map(|r| to_queue(&r.try_get::<Vec<u8>, _>(0)?))
                    .transpose()?,
            );
        }
        Ok(out)
    }

    async fn create_group(&self, g: NewGroup) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "INSERT INTO groups (id, mode, epoch, seq, public_state, group_info)
             VALUES ($1, $2, $3, 0, $4, $5) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&g.group_id)
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
            "INSERT INTO members (group_id, queue_id, cursor, until) VALUES ($1, $2, 0, NULL)",
        )
        .bind(&g.group_id)
        .bind(&g.creator[..])
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn group(&self, group_id: Vec<u8>) -> Result<Option<GroupRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT mode, epoch, seq, public_state, group_info FROM groups WHERE id = $1",
        )
        .bind(&group_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(GroupRecord {
                mode: GroupMode::from_code(r.try_get(0)?).ok_or(StoreError::CorruptRow("mode"))?,
                epoch: u(&r, 1, "epoch")?,
                seq: u(&r, 2, "seq")?,
                public_state: r.try_get(3)?,
                group_info: r.try_get(4)?,
            })
        })
        .transpose()
    }

    async fn is_member(&self, group_id: Vec<u8>, queue: QueueId) -> Result<bool, StoreError> {
        let mut c = self.pool.acquire().await?;
        is_current_member(&mut c, &group_id, &queue).await
    }

    async fn append_commit(&self, m: NewCommit) -> Result<CommitOutcome, StoreError> {
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
            "SELECT seq FROM commits WHERE group_id = $1 AND epoch = $2 AND digest = $3";
        if let Some(r) = sqlx::query(find_retry)
            .bind(&m.group_id)
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
             WHERE id = $1 AND epoch = $2 AND ($6 OR EXISTS (
                SELECT 1 FROM members WHERE group_id = $1 AND queue_id = $5 AND until IS NULL))
             RETURNING seq, epoch",
        )
        .bind(&m.group_id)
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
            let Some(g) = sqlx::query("SELECT epoch FROM groups WHERE id = $1")
                .bind(&m.group_id)
                .fetch_optional(&mut *tx)
                .await?
            else {
                return Ok(CommitOutcome::UnknownGroup);
            };
            if let Some(r) = sqlx::query(find_retry)
                .bind(&m.group_id)
                .bind(epoch)
                .bind(&m.digest[..])
                .fetch_optional(&mut *tx)
                .await?
            {
                return retry(r);
            }
            if !m.external && !is_current_member(&mut tx, &m.group_id, &m.sender).await? {
                return Ok(CommitOutcome::NotMember);
            }
            return Ok(CommitOutcome::Conflict {
                current_epoch: u(&g, 0, "epoch")?,
            });
        };
        let seq: i64 = row.try_get(0)?;
        let new_epoch = u(&row, 1, "epoch")?;
        sqlx::query(
            "INSERT INTO messages (group_id, seq, digest, message, stored_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&m.group_id)
        .bind(seq)
        .bind(&m.digest[..])
        .bind(&m.message)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO commits (group_id, epoch, digest, seq, stored_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&m.group_id)
        .bind(epoch)
        .bind(&m.digest[..])
        .bind(seq)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for q in &m.removed {
            sqlx::query(
                "UPDATE members SET until = $3 WHERE group_id = $1 AND queue_id = $2 AND until IS NULL",
            )
            .bind(&m.group_id)
            .bind(&q[..])
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        }
        for q in &m.added {
            sqlx::query(
                "INSERT INTO members (group_id, queue_id, cursor, until) VALUES ($1, $2, $3, NULL)
                 ON CONFLICT (group_id, queue_id) DO UPDATE SET cursor = excluded.cursor, until = NULL",
            )
            .bind(&m.group_id)
            .bind(&q[..])
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        }
        if let Some((body, recipients)) = &m.welcome {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO welcome_bodies (body, stored_at) VALUES ($1, $2) RETURNING id",
            )
            .bind(body)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            for q in recipients {
                sqlx::query(
                    "INSERT INTO inbox (queue_id, welcome_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                )
                .bind(&q[..])
                .bind(id)
                .execute(&mut *tx)
                .await?;
                notify(&mut tx, queue_hint(q)).await?;
            }
        }
        notify(&mut tx, group_hint(&m.group_id, seq)).await?;
        tx.commit().await?;
        Ok(CommitOutcome::Accepted {
            seq: to_u64(seq, "seq")?,
            epoch: new_epoch,
        })
    }

    async fn append_message(&self, m: NewMessage) -> Result<MessageOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        match decide_message(&mut tx, &m).await {
            Ok(Decided::Accepted { seq, epoch }) => {
                notify(&mut tx, group_hint(&m.group_id, seq)).await?;
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
                let r = sqlx::query("SELECT seq FROM messages WHERE group_id = $1 AND digest = $2")
                    .bind(&m.group_id)
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
        messages: Vec<NewMessage>,
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

    async fn memberships(&self, queue: QueueId) -> Result<Vec<Membership>, StoreError> {
        let rows = sqlx::query("SELECT group_id, cursor, until FROM members WHERE queue_id = $1")
            .bind(&queue[..])
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Membership {
                    group_id: r.try_get(0)?,
                    cursor: u(r, 1, "cursor")?,
                    until: r
                        .try_get::<Option<i64>, _>(2)?
                        .map(|v| to_u64(v, "until"))
                        .transpose()?,
                })
            })
            .collect()
    }

    async fn read_messages(
        &self,
        group_id: Vec<u8>,
        after: u64,
        until: Option<u64>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let until = until.map_or(Ok(i64::MAX), |v| to_i64(v, "until"))?;
        let rows = sqlx::query(
            "SELECT seq, message FROM messages WHERE group_id = $1 AND seq > $2 AND seq <= $3
             ORDER BY seq LIMIT $4",
        )
        .bind(&group_id)
        .bind(to_i64(after, "after")?)
        .bind(until)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredMessage {
                    seq: u(r, 0, "seq")?,
                    message: r.try_get(1)?,
                })
            })
            .collect()
    }

    async fn read_welcomes(
        &self,
        queue: QueueId,
        limit: u32,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT i.welcome_id, b.body FROM inbox i JOIN welcome_bodies b ON b.id = i.welcome_id
             WHERE i.queue_id = $1 ORDER BY i.welcome_id LIMIT $2",
        )
        .bind(&queue[..])
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((u(r, 0, "welcome id")?, r.try_get(1)?)))
            .collect()
    }

    async fn acknowledge(
        &self,
        queue: QueueId,
        positions: Vec<(Vec<u8>, u64)>,
        welcomes: Vec<u64>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for (group_id, seq) in positions {
            let seq = to_i64(seq, "seq")?;
            let changed = sqlx::query(
                "UPDATE members SET cursor = LEAST($3, (SELECT seq FROM groups WHERE id = $1))
                 WHERE group_id = $1 AND queue_id = $2 AND cursor < $3",
            )
            .bind(&group_id)
            .bind(&queue[..])
            .bind(seq)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed == 0 {
                continue;
            }
            sqlx::query(
                "DELETE FROM members WHERE group_id = $1 AND queue_id = $2
                 AND until IS NOT NULL AND cursor >= until",
            )
            .bind(&group_id)
            .bind(&queue[..])
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "DELETE FROM messages WHERE group_id = $1 AND seq <= COALESCE(
                    (SELECT MIN(cursor) FROM members WHERE group_id = $1),
                    (SELECT seq FROM groups WHERE id = $1))",
            )
            .bind(&group_id)
            .execute(&mut *tx)
            .await?;
        }
        for id in welcomes {
            let id = to_i64(id, "welcome id")?;
            let n = sqlx::query("DELETE FROM inbox WHERE queue_id = $1 AND welcome_id = $2")
                .bind(&queue[..])
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

    async fn stored_message_count(&self, group_id: Vec<u8>) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE group_id = $1")
            .bind(&group_id)
            .fetch_one(&self.pool)
            .await?;
        to_u64(n, "count")
    }
}
