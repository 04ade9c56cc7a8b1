//! The embedded store: one SQLite file in WAL mode with
//! `synchronous=FULL`, one writer task and a pool of readers.
//!
//! SQLite allows one writer at a time, and with `synchronous=FULL` each
//! transaction costs an fsync (measured here: 346 one-row transactions
//! per second, 25,000 rows per second at 100 rows per transaction). So
//! every write goes to one writer task, which takes the requests waiting
//! (after at most [`SqliteConfig::linger`] for more), runs them in one
//! `BEGIN IMMEDIATE` transaction, each inside its own savepoint (a failed
//! request is rolled back alone), commits, and only then answers each
//! request. A request is never acknowledged before its transaction is on
//! disk.

use std::any::Any;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, Row, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use super::{
    ClaimedRow, CommitOutcome, CommitRow, DsStore, GroupRow, KeyPackageRow, MembershipRow,
    MessageOutcome, MessageRow, NewGroupRow, Purged, QueueId, SCHEMA_VERSION, StoreError,
    StoredRow, Tag, check_schema_version, random_queue_id, to_i64, to_queue, to_tag, to_u64,
};
use crate::api::{GroupMode, KeyPackageCounts};

/// The tables of [`SCHEMA_VERSION`] (tags and sealed cells: see
/// [`super::sealed`]).
const SCHEMA: &[&str] = &[
    "CREATE TABLE ds_meta (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        schema_version INTEGER NOT NULL,
        key_check BLOB
    )",
    "CREATE TABLE clients (
        identity_tag BLOB PRIMARY KEY NOT NULL,
        queue_id BLOB NOT NULL UNIQUE,
        last_resort_claims INTEGER NOT NULL DEFAULT 0
    )",
    "CREATE TABLE key_packages (
        id INTEGER PRIMARY KEY,
        reference_tag BLOB NOT NULL UNIQUE,
        owner BLOB NOT NULL,
        key_package BLOB NOT NULL,
        not_after INTEGER NOT NULL,
        last_resort INTEGER NOT NULL CHECK (last_resort IN (0, 1)),
        route BLOB NOT NULL
    )",
    "CREATE INDEX key_packages_owner ON key_packages (owner, last_resort, id)",
    "CREATE TABLE kp_routes (
        reference_tag BLOB PRIMARY KEY NOT NULL,
        owner_sealed BLOB NOT NULL,
        until INTEGER NOT NULL
    )",
    "CREATE TABLE groups (
        tag BLOB PRIMARY KEY NOT NULL,
        sealed_id BLOB NOT NULL,
        mode INTEGER NOT NULL,
        epoch INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        public_state BLOB,
        group_info BLOB
    )",
    "CREATE TABLE members (
        group_tag BLOB NOT NULL,
        member_tag BLOB NOT NULL,
        cursor INTEGER NOT NULL,
        until INTEGER,
        PRIMARY KEY (group_tag, member_tag)
    )",
    "CREATE INDEX members_member ON members (member_tag)",
    "CREATE INDEX members_cursor ON members (group_tag, cursor)",
    "CREATE TABLE commits (
        group_tag BLOB NOT NULL,
        epoch INTEGER NOT NULL,
        digest_tag BLOB NOT NULL,
        seq INTEGER NOT NULL,
        stored_at INTEGER NOT NULL,
        PRIMARY KEY (group_tag, epoch)
    )",
    "CREATE TABLE messages (
        group_tag BLOB NOT NULL,
        seq INTEGER NOT NULL,
        epoch INTEGER NOT NULL DEFAULT 0,
        digest_tag BLOB NOT NULL,
        message BLOB NOT NULL,
        stored_at INTEGER NOT NULL,
        PRIMARY KEY (group_tag, seq)
    )",
    "CREATE UNIQUE INDEX messages_digest ON messages (group_tag, digest_tag)",
    "CREATE INDEX messages_stored_at ON messages (stored_at)",
    // A message inserted at seq moves the group's counter there (the
    // one-statement insert of application messages and proposals).
    "CREATE TRIGGER messages_seq AFTER INSERT ON messages BEGIN
        UPDATE groups SET seq = NEW.seq WHERE tag = NEW.group_tag AND seq < NEW.seq;
    END",
    "CREATE TABLE welcome_bodies (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        body BLOB NOT NULL,
        stored_at INTEGER NOT NULL
    )",
    "CREATE TABLE inbox (
        recipient_tag BLOB NOT NULL,
        welcome_id INTEGER NOT NULL,
        PRIMARY KEY (recipient_tag, welcome_id)
    )",
    "CREATE INDEX inbox_welcome ON inbox (welcome_id)",
];

/// Counts the tables of schema version 1 (which had no version row).
const VERSION_1_TABLES: &str = "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'
    AND name IN ('clients', 'key_packages', 'kp_routes', 'groups', 'members', 'commits',
                 'messages', 'welcome_bodies', 'inbox')";

/// Creates the tables in a new database, or checks the version of an
/// existing one (inside the caller's transaction).
async fn prepare_schema(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    let has_meta =
        sqlx::query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ds_meta'")
            .fetch_optional(&mut *conn)
            .await?
            .is_some();
    if has_meta {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT schema_version FROM ds_meta WHERE id = 1")
                .fetch_optional(&mut *conn)
                .await?;
        return check_schema_version(found);
    }
    let old: i64 = sqlx::query_scalar(VERSION_1_TABLES)
        .fetch_one(&mut *conn)
        .await?;
    if old > 0 {
        return Err(StoreError::SchemaVersion {
            found: 1,
            expected: SCHEMA_VERSION,
        });
    }
    for statement in SCHEMA {
        sqlx::query(*statement).execute(&mut *conn).await?;
    }
    sqlx::query("INSERT INTO ds_meta (id, schema_version) VALUES (1, ?1)")
        .bind(SCHEMA_VERSION)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Options of [`SqliteStore`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SqliteConfig {
    /// How long the writer waits for more requests after the first one
    /// before it starts a transaction (default 1 ms; zero batches only
    /// what is already waiting).
    pub linger: Duration,
    /// The most requests in one transaction.
    pub max_batch: usize,
    /// Reader connections.
    pub readers: u32,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            linger: Duration::from_millis(1),
            max_batch: 512,
            readers: 4,
        }
    }
}

impl SqliteConfig {
    /// Sets [`SqliteConfig::linger`].
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }
}

type BoxFut<'c, T> = Pin<Box<dyn Future<Output = T> + Send + 'c>>;
type AnyResult = Result<Box<dyn Any + Send>, StoreError>;
type RunFn = Box<dyn for<'c> Fn(&'c mut SqliteConnection) -> BoxFut<'c, AnyResult> + Send + Sync>;

/// What a writer request does.
enum Work {
    /// Any write: a closure run in the transaction.
    Run(RunFn),
    /// Application messages or proposals without public state, in their
    /// order: appended together with the batch's other messages
    /// ([`append_messages`]), a few statements per group and batch
    /// instead of one per message. The reply is their outcomes.
    Messages(Vec<MessageRow>),
}

struct Job {
    work: Work,
    reply: oneshot::Sender<AnyResult>,
}

/// The DS store in one SQLite file (see the module documentation).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    readers: SqlitePool,
    writer: mpsc::Sender<Job>,
    path: PathBuf,
}

fn prepare_file(path: &Path) -> Result<(), StoreError> {
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        open.mode(0o600);
    }
    open.open(path).map(drop).map_err(StoreError::File)
}

impl SqliteStore {
    /// Opens (or creates) the store at `path`.
    pub async fn open(path: impl AsRef<Path>, config: SqliteConfig) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        prepare_file(&path)?;
        let connect = SqliteConnectOptions::from_str("sqlite:")?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let mut conn = SqliteConnection::connect_with(&connect).await?;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await?;
        if let Err(e) = prepare_schema(&mut conn).await {
            let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
            return Err(e);
        }
        sqlx::query("COMMIT").execute(&mut conn).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(config.readers.max(1))
            .connect_with(connect.read_only(true))
            .await?;
        let (tx, rx) = mpsc::channel(config.max_batch.max(1) * 4);
        tokio::spawn(writer_task(conn, rx, config));
        Ok(SqliteStore {
            readers,
            writer: tx,
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `PRAGMA journal_mode` and `PRAGMA synchronous` of a reader (WAL and
    /// FULL are set on every connection).
    pub async fn settings(&self) -> Result<(String, i64), StoreError> {
        let mut c = self.readers.acquire().await?;
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *c)
            .await?;
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *c)
            .await?;
        Ok((journal.to_ascii_lowercase(), sync))
    }

    /// Runs `f` in the writer's next transaction and returns its result
    /// once that transaction committed.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> Fn(&'c mut SqliteConnection) -> BoxFut<'c, Result<T, StoreError>>
            + Send
            + Sync
            + 'static,
    {
        let run: RunFn = Box::new(move |c| {
            let fut = f(c);
            Box::pin(async move { fut.await.map(|v| Box::new(v) as Box<dyn Any + Send>) })
        });
        self.submit(Work::Run(run)).await
    }

    /// Sends `work` to the writer and waits for its result, after its
    /// transaction committed.
    async fn submit<T: Send + 'static>(&self, work: Work) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(Job { work, reply })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        let any = rx.await.map_err(|_| StoreError::WriterGone)??;
        any.downcast::<T>()
            .map(|b| *b)
            .map_err(|_| StoreError::CorruptRow("writer reply type"))
    }
}

async fn writer_task(
    mut conn: SqliteConnection,
    mut rx: mpsc::Receiver<Job>,
    config: SqliteConfig,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(config.max_batch);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        if !config.linger.is_zero() {
            let deadline = tokio::time::Instant::now() + config.linger;
            while batch.len() < config.max_batch {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(job)) => batch.push(job),
                    _ => break,
                }
            }
        }
        while batch.len() < config.max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&mut conn, &mut batch).await;
    }
}

/// Runs a batch in one transaction. A request that fails (a database
/// error, not a refusal such as a conflict, which is a result) makes the
/// whole transaction roll back; then each request runs again in a
/// transaction of its own, so that one failure fails only its request.
/// (Requests are re-runnable: each runs on its own copy of its input.)
async fn run_batch(conn: &mut SqliteConnection, batch: &mut Vec<Job>) {
    let jobs: Vec<Job> = std::mem::take(batch);
    match run_in_transaction(conn, &jobs).await {
        Ok(results) => {
            for (job, r) in jobs.into_iter().zip(results) {
                let _ = job.reply.send(r);
            }
        }
        Err(()) => {
            for job in jobs {
                let r = match run_in_transaction(conn, std::slice::from_ref(&job)).await {
                    Ok(mut results) => results.pop().unwrap_or(Err(StoreError::WriterGone)),
                    Err(()) => {
                        // The request fails alone: run it once more for its
                        // error, outside any batch, and roll it back.
                        let _ = sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await;
                        let r = run_job(&mut *conn, &job.work).await;
                        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                        match r {
                            Ok(_) => Err(StoreError::WriterGone),
                            Err(e) => Err(e),
                        }
                    }
                };
                let _ = job.reply.send(r);
            }
        }
    }
}

/// Runs `jobs` in one `BEGIN IMMEDIATE` transaction and commits it: their
/// results, or `Err` (rolled back) if any of them or the commit failed.
async fn run_in_transaction(
    conn: &mut SqliteConnection,
    jobs: &[Job],
) -> Result<Vec<AnyResult>, ()> {
    if let Err(e) = sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await {
        tracing::error!(error = %e, "the SQLite writer could not begin a transaction");
        return Err(());
    }
    let mut results = Vec::with_capacity(jobs.len());
    let mut rest = jobs;
    while let Some(job) = rest.first() {
        // A run of consecutive messages is appended together; anything
        // else runs alone, in arrival order.
        let run = match job.work {
            Work::Messages(_) => rest
                .iter()
                .position(|j| !matches!(j.work, Work::Messages(_)))
                .unwrap_or(rest.len()),
            Work::Run(_) => 1,
        };
        let (these, after) = rest.split_at(run);
        rest = after;
        let r: Result<Vec<AnyResult>, StoreError> = match &job.work {
            Work::Run(f) => Ok(vec![f(&mut *conn).await]),
            Work::Messages(_) => {
                let lists: Vec<&[MessageRow]> = these
                    .iter()
                    .filter_map(|j| match &j.work {
                        Work::Messages(m) => Some(m.as_slice()),
                        Work::Run(_) => None,
                    })
                    .collect();
                let messages: Vec<&MessageRow> = lists.iter().flat_map(|l| l.iter()).collect();
                append_messages(&mut *conn, &messages)
                    .await
                    .map(|outcomes| {
                        // Each job's share of the outcomes, in its order.
                        let mut outcomes = outcomes.into_iter();
                        lists
                            .iter()
                            .map(|l| {
                                let mine: Vec<MessageOutcome> =
                                    outcomes.by_ref().take(l.len()).collect();
                                Ok(Box::new(mine) as Box<dyn Any + Send>)
                            })
                            .collect()
                    })
            }
        };
        match r {
            Ok(rs) if rs.iter().all(Result::is_ok) => results.extend(rs),
            _ => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                return Err(());
            }
        }
    }
    match sqlx::query("COMMIT").execute(&mut *conn).await {
        Ok(_) => Ok(results),
        Err(e) => {
            tracing::error!(error = %e, "the SQLite writer's commit failed");
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            Err(())
        }
    }
}

/// Runs one request alone (outside the batching of messages).
async fn run_job(conn: &mut SqliteConnection, work: &Work) -> AnyResult {
    match work {
        Work::Run(f) => f(conn).await,
        Work::Messages(list) => {
            let mut outcomes = Vec::with_capacity(list.len());
            for m in list {
                outcomes.push(op_message(&mut *conn, m.clone()).await?);
            }
            Ok(Box::new(outcomes) as Box<dyn Any + Send>)
        }
    }
}

/// The rows of one multi-row insert of messages, at most (6 parameters
/// each; SQLite takes 32,766).
const INSERT_CHUNK: usize = 64;

/// Appends a run of messages (none with public state) inside the
/// writer's transaction, deciding each as [`op_message`] would in their
/// order. A group with one message of the run takes `op_message`'s one
/// statement; a group with several takes four or so (its row, which of
/// the senders are members, which digests are stored, then multi-row
/// inserts), instead of one round trip to SQLite's thread per message,
/// which bounded the writer at about 7,700 messages/s (measured).
/// Nothing else writes between the statements: the writer is the only
/// writer and the run holds no commit, so the group's epoch and
/// membership cannot change within it.
async fn append_messages(
    c: &mut SqliteConnection,
    messages: &[&MessageRow],
) -> Result<Vec<MessageOutcome>, StoreError> {
    let mut outcomes = vec![MessageOutcome::UnknownGroup; messages.len()];
    // The run's groups, in order of first appearance.
    let mut groups: Vec<(&Tag, Vec<usize>)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        match groups.iter_mut().find(|(g, _)| **g == m.group) {
            Some((_, v)) => v.push(i),
            None => groups.push((&m.group, vec![i])),
        }
    }
    for (group, members_of_run) in groups {
        if let [only] = members_of_run[..] {
            outcomes[only] = op_message(&mut *c, messages[only].clone()).await?;
            continue;
        }
        let Some(row) = sqlx::query("SELECT epoch, seq FROM groups WHERE tag = ?1")
            .bind(&group[..])
            .fetch_optional(&mut *c)
            .await?
        else {
            continue; // UnknownGroup for each
        };
        let epoch = i64_of(&row, 0, "epoch")?;
        let mut seq = i64_of(&row, 1, "seq")?;
        let hex_list = |items: &mut dyn Iterator<Item = &[u8]>| {
            let mut v: Vec<String> = items.map(hex::encode).collect();
            v.sort_unstable();
            v.dedup();
            serde_json::to_string(&v).unwrap_or_default()
        };
        let senders = hex_list(&mut members_of_run.iter().map(|&i| &messages[i].sender[..]));
        let current: std::collections::HashSet<Vec<u8>> = sqlx::query_scalar(
            "SELECT member_tag FROM members WHERE group_tag = ?1 AND until IS NULL
               AND member_tag IN (SELECT unhex(value) FROM json_each(?2))",
        )
        .bind(&group[..])
        .bind(senders)
        .fetch_all(&mut *c)
        .await?
        .into_iter()
        .collect();
        let digests = hex_list(&mut members_of_run.iter().map(|&i| &messages[i].digest[..]));
        let mut stored: std::collections::HashMap<Vec<u8>, u64> = std::collections::HashMap::new();
        for r in sqlx::query(
            "SELECT digest_tag, seq FROM messages WHERE group_tag = ?1
               AND digest_tag IN (SELECT unhex(value) FROM json_each(?2))",
        )
        .bind(&group[..])
        .bind(digests)
        .fetch_all(&mut *c)
        .await?
        {
            stored.insert(r.try_get(0)?, i64_of(&r, 1, "seq")?);
        }
        let mut accepted: Vec<(usize, u64)> = Vec::with_capacity(members_of_run.len());
        for &i in &members_of_run {
            let m = messages[i];
            outcomes[i] = if !current.contains(&m.sender[..]) {
                MessageOutcome::NotMember
            } else if let Some(&dup) = stored.get(&m.digest[..]) {
                MessageOutcome::Duplicate { seq: dup }
            } else if m.epoch > epoch || m.epoch.saturating_add(m.window) < epoch {
                MessageOutcome::WrongEpoch {
                    current_epoch: epoch,
                }
            } else {
                seq += 1;
                stored.insert(m.digest.to_vec(), seq);
                accepted.push((i, seq));
                MessageOutcome::Accepted { seq, epoch }
            };
        }
        // Multi-row inserts of a few fixed sizes (the statement cache
        // keeps one of each); the trigger moves the group's counter.
        let mut rest = &accepted[..];
        while !rest.is_empty() {
            let n = [INSERT_CHUNK, 8, 1]
                .into_iter()
                .find(|&n| n <= rest.len())
                .unwrap_or(1);
            let (chunk, after) = rest.split_at(n);
            rest = after;
            let mut sql = String::from(
                "INSERT INTO messages (group_tag, seq, epoch, digest_tag, message, stored_at) VALUES ",
            );
            for k in 0..n {
                if k > 0 {
                    sql.push(',');
                }
                sql.push_str("(?,?,?,?,?,?)");
            }
            // Only placeholders are spliced in: no input reaches the text.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for &(i, s) in chunk {
                let m = messages[i];
                q = q
                    .bind(&m.group[..])
                    .bind(to_i64(s, "seq")?)
                    .bind(to_i64(epoch, "epoch")?)
                    .bind(&m.digest[..])
                    .bind(&m.message)
                    .bind(to_i64(m.now, "now")?);
            }
            q.execute(&mut *c).await?;
        }
    }
    Ok(outcomes)
}

fn i64_of(row: &sqlx::sqlite::SqliteRow, i: usize, what: &'static str) -> Result<u64, StoreError> {
    to_u64(row.try_get::<i64, _>(i)?, what)
}

fn group_of(row: &sqlx::sqlite::SqliteRow) -> Result<GroupRow, StoreError> {
    Ok(GroupRow {
        mode: GroupMode::from_code(row.try_get(0)?).ok_or(StoreError::CorruptRow("mode"))?,
        epoch: i64_of(row, 1, "epoch")?,
        seq: i64_of(row, 2, "seq")?,
        public_state: row.try_get(3)?,
        group_info: row.try_get(4)?,
    })
}

async fn is_current_member(
    c: &mut SqliteConnection,
    group: &Tag,
    member: &Tag,
) -> Result<bool, StoreError> {
    Ok(sqlx::query(
        "SELECT 1 FROM members WHERE group_tag = ?1 AND member_tag = ?2 AND until IS NULL",
    )
    .bind(&group[..])
    .bind(&member[..])
    .fetch_optional(&mut *c)
    .await?
    .is_some())
}

fn op_commit<'c>(
    c: &'c mut SqliteConnection,
    m: CommitRow,
) -> BoxFut<'c, Result<CommitOutcome, StoreError>> {
    Box::pin(async move {
        let epoch = to_i64(m.epoch, "epoch")?;
        let now = to_i64(m.now, "now")?;
        let Some(row) = sqlx::query("SELECT epoch, seq FROM groups WHERE tag = ?1")
            .bind(&m.group[..])
            .fetch_optional(&mut *c)
            .await?
        else {
            return Ok(CommitOutcome::UnknownGroup);
        };
        let current = i64_of(&row, 0, "epoch")?;
        if let Some(r) = sqlx::query(
            "SELECT seq FROM commits WHERE group_tag = ?1 AND epoch = ?2 AND digest_tag = ?3",
        )
        .bind(&m.group[..])
        .bind(epoch)
        .bind(&m.digest[..])
        .fetch_optional(&mut *c)
        .await?
        {
            return Ok(CommitOutcome::AlreadyAccepted {
                seq: i64_of(&r, 0, "seq")?,
                epoch: m.epoch + 1,
            });
        }
        if !m.external && !is_current_member(c, &m.group, &m.sender).await? {
            return Ok(CommitOutcome::NotMember);
        }
        if current != m.epoch {
            return Ok(CommitOutcome::Conflict {
                current_epoch: current,
            });
        }
        let row = sqlx::query(
            "UPDATE groups SET epoch = epoch + 1, seq = seq + 1,
                public_state = COALESCE(?3, public_state), group_info = COALESCE(?4, group_info)
             WHERE tag = ?1 AND epoch = ?2 RETURNING seq, epoch",
        )
        .bind(&m.group[..])
        .bind(epoch)
        .bind(&m.public_state)
        .bind(&m.group_info)
        .fetch_one(&mut *c)
        .await?;
        let seq: i64 = row.try_get(0)?;
        let new_epoch = i64_of(&row, 1, "epoch")?;
        sqlx::query(
            "INSERT INTO messages (group_tag, seq, digest_tag, message, stored_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(&m.group[..])
        .bind(seq)
        .bind(&m.digest[..])
        .bind(&m.message)
        .bind(now)
        .execute(&mut *c)
        .await?;
        sqlx::query(
            "INSERT INTO commits (group_tag, epoch, digest_tag, seq, stored_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(&m.group[..])
        .bind(epoch)
        .bind(&m.digest[..])
        .bind(seq)
        .bind(now)
        .execute(&mut *c)
        .await?;
        for q in &m.removed {
            sqlx::query(
                "UPDATE members SET until = ?3
                 WHERE group_tag = ?1 AND member_tag = ?2 AND until IS NULL",
            )
            .bind(&m.group[..])
            .bind(&q[..])
            .bind(seq)
            .execute(&mut *c)
            .await?;
        }
        for q in &m.added {
            sqlx::query(
                "INSERT INTO members (group_tag, member_tag, cursor, until) VALUES (?1, ?2, ?3, NULL)
                 ON CONFLICT (group_tag, member_tag)
                 DO UPDATE SET cursor = excluded.cursor, until = NULL",
            )
            .bind(&m.group[..])
            .bind(&q[..])
            .bind(seq)
            .execute(&mut *c)
            .await?;
        }
        if let Some(w) = &m.welcome {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO welcome_bodies (body, stored_at) VALUES (?1, ?2) RETURNING id",
            )
            .bind(&w.body)
            .bind(now)
            .fetch_one(&mut *c)
            .await?;
            for r in &w.recipients {
                sqlx::query(
                    "INSERT OR IGNORE INTO inbox (recipient_tag, welcome_id) VALUES (?1, ?2)",
                )
                .bind(&r[..])
                .bind(id)
                .execute(&mut *c)
                .await?;
            }
        }
        Ok(CommitOutcome::Accepted {
            seq: to_u64(seq, "seq")?,
            epoch: new_epoch,
        })
    })
}

fn op_message<'c>(
    c: &'c mut SqliteConnection,
    m: MessageRow,
) -> BoxFut<'c, Result<MessageOutcome, StoreError>> {
    Box::pin(async move {
        let now = to_i64(m.now, "now")?;
        // The usual case in one statement: stored if the group is in the
        // window, the sender a member, the bytes new (and, for an assisted
        // proposal, the group still at the sequence number its state was
        // computed at); the trigger moves the group's counter.
        let expect = match &m.public_state {
            Some((_, seq)) => Some(to_i64(*seq, "seq")?),
            None => None,
        };
        if let Some(row) = sqlx::query(
            "INSERT INTO messages (group_tag, seq, epoch, digest_tag, message, stored_at)
             SELECT ?1, g.seq + 1, g.epoch, ?3, ?4, ?5 FROM groups g
             WHERE g.tag = ?1 AND g.epoch >= ?6 AND g.epoch - ?6 <= ?7
               AND EXISTS (SELECT 1 FROM members
                           WHERE group_tag = ?1 AND member_tag = ?2 AND until IS NULL)
               AND NOT EXISTS (SELECT 1 FROM messages WHERE group_tag = ?1 AND digest_tag = ?3)
               AND (?8 IS NULL OR g.seq = ?8)
             RETURNING seq, epoch",
        )
        .bind(&m.group[..])
        .bind(&m.sender[..])
        .bind(&m.digest[..])
        .bind(&m.message)
        .bind(now)
        .bind(to_i64(m.epoch, "epoch")?)
        .bind(to_i64(m.window, "window")?)
        .bind(expect)
        .fetch_optional(&mut *c)
        .await?
        {
            if let Some((state, _)) = &m.public_state {
                sqlx::query("UPDATE groups SET public_state = ?2 WHERE tag = ?1")
                    .bind(&m.group[..])
                    .bind(state)
                    .execute(&mut *c)
                    .await?;
            }
            return Ok(MessageOutcome::Accepted {
                seq: i64_of(&row, 0, "seq")?,
                epoch: i64_of(&row, 1, "epoch")?,
            });
        }
        // Refused: say why. One statement for the group, the membership
        // and a duplicate.
        let Some(row) = sqlx::query(
            "SELECT g.epoch, g.seq,
                EXISTS (SELECT 1 FROM members
                        WHERE group_tag = ?1 AND member_tag = ?2 AND until IS NULL),
                (SELECT seq FROM messages WHERE group_tag = ?1 AND digest_tag = ?3)
             FROM groups g WHERE g.tag = ?1",
        )
        .bind(&m.group[..])
        .bind(&m.sender[..])
        .bind(&m.digest[..])
        .fetch_optional(&mut *c)
        .await?
        else {
            return Ok(MessageOutcome::UnknownGroup);
        };
        let current = i64_of(&row, 0, "epoch")?;
        let seq_now = i64_of(&row, 1, "seq")?;
        if row.try_get::<i64, _>(2)? == 0 {
            return Ok(MessageOutcome::NotMember);
        }
        if let Some(dup) = row.try_get::<Option<i64>, _>(3)? {
            return Ok(MessageOutcome::Duplicate {
                seq: to_u64(dup, "seq")?,
            });
        }
        if m.epoch > current || m.epoch.saturating_add(m.window) < current {
            return Ok(MessageOutcome::WrongEpoch {
                current_epoch: current,
            });
        }
        if let Some((_, expect)) = &m.public_state
            && *expect != seq_now
        {
            return Ok(MessageOutcome::StateChanged);
        }
        // Every condition holds now but did not a moment ago: cannot happen
        // under the single writer; the caller retries.
        let _ = (seq_now, now);
        Ok(MessageOutcome::StateChanged)
    })
}

fn op_ack<'c>(
    c: &'c mut SqliteConnection,
    member: Tag,
    inbox: Tag,
    positions: Vec<(Tag, u64)>,
    welcomes: Vec<u64>,
) -> BoxFut<'c, Result<(), StoreError>> {
    Box::pin(async move {
        for (group, seq) in positions {
            let seq = to_i64(seq, "seq")?;
            let changed = sqlx::query(
                "UPDATE members SET cursor = MIN(?3, (SELECT seq FROM groups WHERE tag = ?1))
                 WHERE group_tag = ?1 AND member_tag = ?2 AND cursor < ?3",
            )
            .bind(&group[..])
            .bind(&member[..])
            .bind(seq)
            .execute(&mut *c)
            .await?
            .rows_affected();
            if changed == 0 {
                continue;
            }
            sqlx::query(
                "DELETE FROM members WHERE group_tag = ?1 AND member_tag = ?2
                 AND until IS NOT NULL AND cursor >= until",
            )
            .bind(&group[..])
            .bind(&member[..])
            .execute(&mut *c)
            .await?;
            sqlx::query(
                "DELETE FROM messages WHERE group_tag = ?1 AND seq <= COALESCE(
                    (SELECT MIN(cursor) FROM members WHERE group_tag = ?1),
                    (SELECT seq FROM groups WHERE tag = ?1))",
            )
            .bind(&group[..])
            .execute(&mut *c)
            .await?;
        }
        for id in welcomes {
            let id = to_i64(id, "welcome id")?;
            let n = sqlx::query("DELETE FROM inbox WHERE recipient_tag = ?1 AND welcome_id = ?2")
                .bind(&inbox[..])
                .bind(id)
                .execute(&mut *c)
                .await?
                .rows_affected();
            if n > 0 {
                sqlx::query(
                    "DELETE FROM welcome_bodies WHERE id = ?1
                     AND NOT EXISTS (SELECT 1 FROM inbox WHERE welcome_id = ?1)",
                )
                .bind(id)
                .execute(&mut *c)
                .await?;
            }
        }
        Ok(())
    })
}

fn op_claim<'c>(
    c: &'c mut SqliteConnection,
    owner: QueueId,
    now: i64,
    route_until: i64,
) -> BoxFut<'c, Result<Option<ClaimedRow>, StoreError>> {
    Box::pin(async move {
        let row = sqlx::query(
            "DELETE FROM key_packages WHERE id = (
                SELECT id FROM key_packages WHERE owner = ?1 AND last_resort = 0 AND not_after >= ?2
                ORDER BY id LIMIT 1)
             RETURNING reference_tag, key_package, route",
        )
        .bind(&owner[..])
        .bind(now)
        .fetch_optional(&mut *c)
        .await?;
        let (row, last_resort) = match row {
            Some(r) => (r, false),
            None => {
                let Some(r) = sqlx::query(
                    "SELECT reference_tag, key_package, route FROM key_packages
                     WHERE owner = ?1 AND last_resort = 1 AND not_after >= ?2
                     ORDER BY not_after DESC, id DESC LIMIT 1",
                )
                .bind(&owner[..])
                .bind(now)
                .fetch_optional(&mut *c)
                .await?
                else {
                    return Ok(None);
                };
                sqlx::query(
                    "UPDATE clients SET last_resort_claims = last_resort_claims + 1 WHERE queue_id = ?1",
                )
                .bind(&owner[..])
                .execute(&mut *c)
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
            "INSERT OR REPLACE INTO kp_routes (reference_tag, owner_sealed, until) VALUES (?1, ?2, ?3)",
        )
        .bind(&claimed.reference[..])
        .bind(&route)
        .bind(route_until)
        .execute(&mut *c)
        .await?;
        Ok(Some(claimed))
    })
}

impl DsStore for SqliteStore {
    async fn key_check(&self, check: Tag) -> Result<bool, StoreError> {
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query("UPDATE ds_meta SET key_check = ?1 WHERE id = 1 AND key_check IS NULL")
                    .bind(&check[..])
                    .execute(&mut *c)
                    .await?;
                let stored: Option<Vec<u8>> =
                    sqlx::query_scalar("SELECT key_check FROM ds_meta WHERE id = 1")
                        .fetch_one(&mut *c)
                        .await?;
                Ok(stored.as_deref() == Some(&check[..]))
            })
        })
        .await
    }

    async fn client_queue(&self, identity_tag: [u8; 32]) -> Result<QueueId, StoreError> {
        if let Some(q) = self.find_client(identity_tag).await? {
            return Ok(q);
        }
        self.write(move |c| {
            Box::pin(async move {
                if let Some(r) = sqlx::query("SELECT queue_id FROM clients WHERE identity_tag = ?1")
                    .bind(&identity_tag[..])
                    .fetch_optional(&mut *c)
                    .await?
                {
                    return to_queue(&r.try_get::<Vec<u8>, _>(0)?);
                }
                let q = random_queue_id();
                sqlx::query("INSERT INTO clients (identity_tag, queue_id) VALUES (?1, ?2)")
                    .bind(&identity_tag[..])
                    .bind(&q[..])
                    .execute(&mut *c)
                    .await?;
                Ok(q)
            })
        })
        .await
    }

    async fn find_client(&self, identity_tag: [u8; 32]) -> Result<Option<QueueId>, StoreError> {
        let r = sqlx::query("SELECT queue_id FROM clients WHERE identity_tag = ?1")
            .bind(&identity_tag[..])
            .fetch_optional(&self.readers)
            .await?;
        r.map(|r| to_queue(&r.try_get::<Vec<u8>, _>(0)?))
            .transpose()
    }

    async fn publish_key_packages(
        &self,
        owner: QueueId,
        key_packages: Vec<KeyPackageRow>,
    ) -> Result<(), StoreError> {
        self.write(move |c| {
            let key_packages = key_packages.clone();
            Box::pin(async move {
                for kp in &key_packages {
                    sqlx::query(
                        "INSERT OR IGNORE INTO key_packages
                            (reference_tag, owner, key_package, not_after, last_resort, route)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )
                    .bind(&kp.reference[..])
                    .bind(&owner[..])
                    .bind(&kp.key_package)
                    .bind(to_i64(kp.not_after, "not_after")?)
                    .bind(i64::from(kp.last_resort))
                    .bind(&kp.route)
                    .execute(&mut *c)
                    .await?;
                }
                sqlx::query("UPDATE clients SET last_resort_claims = 0 WHERE queue_id = ?1")
                    .bind(&owner[..])
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn claim_key_package(
        &self,
        owner: QueueId,
        now: u64,
        route_until: u64,
    ) -> Result<Option<ClaimedRow>, StoreError> {
        let now = to_i64(now, "now")?;
        let until = to_i64(route_until, "route_until")?;
        self.write(move |c| op_claim(c, owner, now, until)).await
    }

    async fn key_package_counts(
        &self,
        owner: QueueId,
        now: u64,
    ) -> Result<KeyPackageCounts, StoreError> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(last_resort = 0), 0), COALESCE(SUM(last_resort = 1), 0),
                COALESCE((SELECT last_resort_claims FROM clients WHERE queue_id = ?1), 0)
             FROM key_packages WHERE owner = ?1 AND not_after >= ?2",
        )
        .bind(&owner[..])
        .bind(to_i64(now, "now")?)
        .fetch_one(&self.readers)
        .await?;
        Ok(KeyPackageCounts {
            available: i64_of(&row, 0, "count")?,
            last_resort: i64_of(&row, 1, "count")?,
            last_resort_claims: i64_of(&row, 2, "count")?,
        })
    }

    async fn route_key_package_refs(
        &self,
        references: Vec<Tag>,
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let mut out = Vec::with_capacity(references.len());
        let mut c = self.readers.acquire().await?;
        for r in &references {
            let owner: Option<Vec<u8>> =
                sqlx::query_scalar("SELECT owner_sealed FROM kp_routes WHERE reference_tag = ?1")
                    .bind(&r[..])
                    .fetch_optional(&mut *c)
                    .await?;
            out.push(owner);
        }
        Ok(out)
    }

    async fn create_group(&self, g: NewGroupRow) -> Result<bool, StoreError> {
        self.write(move |c| {
            let g = g.clone();
            Box::pin(async move {
                let n = sqlx::query(
                    "INSERT OR IGNORE INTO groups
                        (tag, sealed_id, mode, epoch, seq, public_state, group_info)
                     VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6)",
                )
                .bind(&g.group[..])
                .bind(&g.sealed_id)
                .bind(g.mode.code())
                .bind(to_i64(g.epoch, "epoch")?)
                .bind(&g.public_state)
                .bind(&g.group_info)
                .execute(&mut *c)
                .await?
                .rows_affected();
                if n == 0 {
                    return Ok(false);
                }
                sqlx::query(
                    "INSERT INTO members (group_tag, member_tag, cursor, until)
                     VALUES (?1, ?2, 0, NULL)",
                )
                .bind(&g.group[..])
                .bind(&g.creator[..])
                .execute(&mut *c)
                .await?;
                Ok(true)
            })
        })
        .await
    }

    async fn group(&self, group: Tag) -> Result<Option<GroupRow>, StoreError> {
        let row = sqlx::query(
            "SELECT mode, epoch, seq, public_state, group_info FROM groups WHERE tag = ?1",
        )
        .bind(&group[..])
        .fetch_optional(&self.readers)
        .await?;
        row.as_ref().map(group_of).transpose()
    }

    async fn is_member(&self, group: Tag, member: Tag) -> Result<bool, StoreError> {
        let mut c = self.readers.acquire().await?;
        is_current_member(&mut c, &group, &member).await
    }

    async fn append_commit(&self, commit: CommitRow) -> Result<CommitOutcome, StoreError> {
        self.write(move |c| op_commit(c, commit.clone())).await
    }

    async fn append_message(&self, message: MessageRow) -> Result<MessageOutcome, StoreError> {
        if message.public_state.is_some() {
            return self.write(move |c| op_message(c, message.clone())).await;
        }
        let mut outcomes: Vec<MessageOutcome> = self.submit(Work::Messages(vec![message])).await?;
        outcomes
            .pop()
            .ok_or(StoreError::CorruptRow("writer reply count"))
    }

    async fn append_messages(
        &self,
        messages: Vec<MessageRow>,
    ) -> Result<Vec<MessageOutcome>, StoreError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        if messages.iter().any(|m| m.public_state.is_some()) {
            // Assisted proposals, each against the state it was checked
            // with: one at a time, in order.
            let mut outcomes = Vec::with_capacity(messages.len());
            for m in messages {
                outcomes.push(self.append_message(m).await?);
            }
            return Ok(outcomes);
        }
        self.submit(Work::Messages(messages)).await
    }

    async fn memberships(&self, member: Tag) -> Result<Vec<MembershipRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT m.group_tag, g.sealed_id, m.cursor, m.until
             FROM members m JOIN groups g ON g.tag = m.group_tag WHERE m.member_tag = ?1",
        )
        .bind(&member[..])
        .fetch_all(&self.readers)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MembershipRow {
                    group: to_tag(&r.try_get::<Vec<u8>, _>(0)?)?,
                    sealed_id: r.try_get(1)?,
                    cursor: i64_of(r, 2, "cursor")?,
                    until: r
                        .try_get::<Option<i64>, _>(3)?
                        .map(|u| to_u64(u, "until"))
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
        let until = until.map_or(Ok(i64::MAX), |u| to_i64(u, "until"))?;
        let rows = sqlx::query(
            "SELECT seq, digest_tag, message FROM messages
             WHERE group_tag = ?1 AND seq > ?2 AND seq <= ?3
             ORDER BY seq LIMIT ?4",
        )
        .bind(&group[..])
        .bind(to_i64(after, "after")?)
        .bind(until)
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredRow {
                    seq: i64_of(r, 0, "seq")?,
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
             WHERE i.recipient_tag = ?1 ORDER BY i.welcome_id LIMIT ?2",
        )
        .bind(&inbox[..])
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
        .await?;
        rows.iter()
            .map(|r| Ok((i64_of(r, 0, "welcome id")?, r.try_get(1)?)))
            .collect()
    }

    async fn acknowledge(
        &self,
        member: Tag,
        inbox: Tag,
        positions: Vec<(Tag, u64)>,
        welcomes: Vec<u64>,
    ) -> Result<(), StoreError> {
        self.write(move |c| op_ack(c, member, inbox, positions.clone(), welcomes.clone()))
            .await
    }

    async fn purge(&self, now: u64, stored_before: u64) -> Result<Purged, StoreError> {
        let now = to_i64(now, "now")?;
        let before = to_i64(stored_before, "stored_before")?;
        self.write(move |c| {
            Box::pin(async move {
                let key_packages = sqlx::query("DELETE FROM key_packages WHERE not_after < ?1")
                    .bind(now)
                    .execute(&mut *c)
                    .await?
                    .rows_affected();
                let routes = sqlx::query("DELETE FROM kp_routes WHERE until < ?1")
                    .bind(now)
                    .execute(&mut *c)
                    .await?
                    .rows_affected();
                let messages = sqlx::query("DELETE FROM messages WHERE stored_at < ?1")
                    .bind(before)
                    .execute(&mut *c)
                    .await?
                    .rows_affected();
                sqlx::query("DELETE FROM commits WHERE stored_at < ?1")
                    .bind(before)
                    .execute(&mut *c)
                    .await?;
                sqlx::query(
                    "DELETE FROM inbox WHERE welcome_id IN (SELECT id FROM welcome_bodies WHERE stored_at < ?1)",
                )
                .bind(before)
                .execute(&mut *c)
                .await?;
                let welcomes = sqlx::query("DELETE FROM welcome_bodies WHERE stored_at < ?1")
                    .bind(before)
                    .execute(&mut *c)
                    .await?
                    .rows_affected();
                Ok(Purged {
                    key_packages,
                    messages,
                    welcomes,
                    routes,
                })
            })
        })
        .await
    }

    async fn stored_message_count(&self, group: Tag) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE group_tag = ?1")
            .bind(&group[..])
            .fetch_one(&self.readers)
            .await?;
        to_u64(n, "count")
    }
}
