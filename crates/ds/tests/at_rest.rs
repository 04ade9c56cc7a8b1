//! The DS's data at rest (issue 10 item 7; RFC 9750 §8.4.1.2): a copy of
//! the database — every cell of every table, and for SQLite the bytes of
//! the database file and its WAL — holds no group id, no queue id in the
//! membership, inbox or route rows, no KeyPackageRef, no message, Welcome,
//! GroupInfo or public state, nor their framing bytes; only the DS key
//! opens them. A process with another key is refused, a tampered cell is
//! refused, and a database of the old schema is refused. On SQLite and
//! PostgreSQL.

mod common;

use std::sync::Arc;

use common::*;
use hsmls::CommitOptions;
use hsmls_custody::{KeyCustody, SoftwareCustody};
use hsmls_ds::api::GroupMode;
use hsmls_ds::auth::{DsKey, ValidatorAuthenticator};
use hsmls_ds::fanout::Hub;
use hsmls_ds::seal::{AtRest, SealError};
use hsmls_ds::server::load_or_create_key;
use hsmls_ds::store::{
    DsStore, PostgresStore, QueueId, SCHEMA_VERSION, SqliteConfig, SqliteStore, StoreError,
};
use hsmls_ds::{Ds, DsError};
use sqlx::{Connection, Row};

/// The key of the tests' DS (`common::serve_store_with`).
fn test_keys() -> AtRest {
    AtRest::new(&DsKey::from_bytes([42; 32]))
}

fn soft() -> Arc<dyn KeyCustody> {
    Arc::new(SoftwareCustody::new())
}

fn queue(c: &Client) -> QueueId {
    c.ds.session().unwrap().queue_id.try_into().unwrap()
}

/// A DS with data of every kind at rest: a blind group (alice, bob, carol)
/// whose messages wait for carol, who never fetches; dave added to it by a
/// Welcome he never fetches; an assisted group (erin, frank, gina) with a
/// proposal, a commit and a message that wait for gina; KeyPackages
/// claimed (their routes kept) and unclaimed.
struct World {
    blind: Vec<u8>,
    assisted: Vec<u8>,
    clients: Vec<Client>,
    /// The KeyPackageRef of dave's claimed KeyPackage.
    dave_ref: Vec<u8>,
}

impl World {
    fn client(&self, name: &str) -> &Client {
        self.clients.iter().find(|c| c.name == name).unwrap()
    }
}

async fn world(base: &str) -> World {
    let (mut alice, mut bob, mut carol) = three(base).await;
    let blind = form(&mut alice, &mut bob, &mut carol, GroupMode::Blind).await;
    alice.send_app("blind: from alice").await;
    bob.send_app("blind: from bob").await;
    alice.sync().await;
    bob.sync().await;
    let mut dave = Client::new(soft(), "dave", base).await;
    dave.publish(2, true).await;
    let kd = alice.ds.claim_key_package(b"dave").await.unwrap();
    let kd = alice.validate(&kd.key_package);
    let dave_ref = kd.reference().0.clone();
    let mut opts = CommitOptions::new();
    opts.add_key_packages = vec![kd];
    let out = alice.group().commit(opts, now()).unwrap();
    assert!(out.welcome.is_some());
    alice.send_commit(&out, vec![]).await.unwrap();
    alice.sync().await;

    let mut erin = Client::new(soft(), "erin", base).await;
    let mut frank = Client::new(soft(), "frank", base).await;
    let mut gina = Client::new(soft(), "gina", base).await;
    for c in [&mut erin, &mut frank, &mut gina] {
        c.publish(2, true).await;
    }
    let assisted = form(&mut erin, &mut frank, &mut gina, GroupMode::Assisted).await;
    let p = gina.group().propose_update().unwrap();
    gina.ds.send_message(&p.message).await.unwrap();
    erin.sync().await;
    frank.sync().await;
    let out = frank.group().commit(CommitOptions::new(), now()).unwrap();
    frank.send_commit(&out, vec![]).await.unwrap();
    frank.sync().await;
    erin.sync().await;
    erin.send_app("assisted: from erin").await;
    erin.sync().await;
    World {
        blind,
        assisted,
        clients: vec![alice, bob, carol, dave, erin, frank, gina],
        dave_ref,
    }
}

/// What must not appear in a copy of the database.
struct Needles {
    /// Group ids, KeyPackageRefs, stored bodies and their framing
    /// prefixes and tails: nowhere.
    nowhere: Vec<(String, Vec<u8>)>,
    /// Queue ids: only in `clients.queue_id` and `key_packages.owner`.
    queues: Vec<(String, Vec<u8>)>,
}

/// A body's prefix through the group id and epoch (version, wire format,
/// the group id's length and bytes, the epoch) and its last 32 bytes.
fn body_needles(what: &str, gid: &[u8], body: &[u8], out: &mut Vec<(String, Vec<u8>)>) {
    out.push((format!("{what} (whole)"), body.to_vec()));
    let prefix = (4 + 1 + gid.len() + 8).min(body.len());
    out.push((format!("{what} (framing)"), body[..prefix].to_vec()));
    out.push((
        format!("{what} (last 32 bytes)"),
        body[body.len().saturating_sub(32)..].to_vec(),
    ));
}

async fn needles<S: DsStore>(ds: &Ds<S>, w: &World) -> Needles {
    let mut nowhere = Vec::new();
    let store = ds.store();
    for (name, gid) in [("blind", &w.blind), ("assisted", &w.assisted)] {
        nowhere.push((format!("{name} group id"), gid.clone()));
        let stored = store
            .read_messages(gid.clone(), 0, None, 1000)
            .await
            .unwrap();
        assert!(stored.len() >= 3, "{name}: messages wait for a member");
        for m in stored {
            body_needles(
                &format!("{name} message {}", m.seq),
                gid,
                &m.message,
                &mut nowhere,
            );
        }
    }
    let g = store.group(w.assisted.clone()).await.unwrap().unwrap();
    body_needles(
        "GroupInfo",
        &w.assisted,
        &g.group_info.unwrap(),
        &mut nowhere,
    );
    let state = g.public_state.unwrap();
    nowhere.push(("public state".into(), state.clone()));
    nowhere.push((
        "public state (last 32 bytes)".into(),
        state[state.len() - 32..].to_vec(),
    ));
    let welcomes = store
        .read_welcomes(queue(w.client("dave")), 10)
        .await
        .unwrap();
    assert_eq!(welcomes.len(), 1, "dave's Welcome waits");
    body_needles("Welcome", &[], &welcomes[0].1, &mut nowhere);
    let mut routes = 0;
    for c in &w.clients {
        for r in c.bundles.keys() {
            nowhere.push((format!("{}'s KeyPackageRef", c.name), r.clone()));
            routes += usize::from(
                store.route_key_package_refs(vec![r.clone()]).await.unwrap()[0].is_some(),
            );
        }
    }
    assert_eq!(
        routes, 5,
        "bob, carol, dave, frank and gina's claimed refs are routed"
    );
    let queues = w
        .clients
        .iter()
        .map(|c| (format!("{}'s queue id", c.name), queue(c).to_vec()))
        .collect();
    Needles { nowhere, queues }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Every cell of a database: (table, column, bytes).
type Cells = Vec<(String, String, Vec<u8>)>;

async fn sqlite_cells(path: &std::path::Path) -> Cells {
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite:{}?mode=ro", path.display()))
        .await
        .unwrap();
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(&mut c)
            .await
            .unwrap();
    let mut cells = Vec::new();
    for t in tables {
        let columns: Vec<String> =
            sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA table_info(\"{t}\")")))
                .fetch_all(&mut c)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>("name"))
                .collect();
        for col in columns {
            let values: Vec<Vec<u8>> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT CAST(\"{col}\" AS BLOB) FROM \"{t}\" WHERE \"{col}\" IS NOT NULL"
            )))
            .fetch_all(&mut c)
            .await
            .unwrap();
            cells.extend(values.into_iter().map(|v| (t.clone(), col.clone(), v)));
        }
    }
    cells
}

async fn postgres_cells(url: &str) -> Cells {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let columns = sqlx::query(
        "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns
         WHERE table_schema = current_schema()",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    let mut cells = Vec::new();
    for r in columns {
        let (t, col, ty): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        let expr = if ty == "bytea" {
            format!("\"{col}\"")
        } else {
            format!("convert_to(\"{col}\"::text, 'UTF8')")
        };
        let values: Vec<Vec<u8>> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT {expr} FROM \"{t}\" WHERE \"{col}\" IS NOT NULL"
        )))
        .fetch_all(&mut c)
        .await
        .unwrap();
        cells.extend(values.into_iter().map(|v| (t.clone(), col.clone(), v)));
    }
    c.close().await.unwrap();
    cells
}

/// Asserts what a copy shows: none of `n.nowhere` in any cell, queue ids
/// only where clients and their KeyPackages are listed; and that the scan
/// would have seen them (the queue ids are found there, the membership
/// and inbox rows exist).
fn assert_copy_is_blind(cells: &Cells, n: &Needles) {
    let tables: std::collections::HashSet<&str> =
        cells.iter().map(|(t, _, _)| t.as_str()).collect();
    for t in [
        "clients",
        "key_packages",
        "kp_routes",
        "groups",
        "members",
        "commits",
        "messages",
        "welcome_bodies",
        "inbox",
        "ds_meta",
    ] {
        assert!(tables.contains(t), "the scan reads table {t}");
    }
    for (t, col, v) in cells {
        for (what, needle) in &n.nowhere {
            assert!(!contains(v, needle), "{what} found in {t}.{col}");
        }
        let listed =
            (t == "clients" && col == "queue_id") || (t == "key_packages" && col == "owner");
        if !listed {
            for (what, needle) in &n.queues {
                assert!(!contains(v, needle), "{what} found in {t}.{col}");
            }
        }
    }
    // The scan can fail: the queue ids are where they are listed.
    for (what, q) in &n.queues {
        assert!(
            cells
                .iter()
                .any(|(t, c, v)| t == "clients" && c == "queue_id" && v == q),
            "{what} listed in clients"
        );
    }
    let members = cells
        .iter()
        .filter(|(t, c, _)| t == "members" && c == "member_tag")
        .count();
    assert!(members >= 7, "membership rows exist ({members})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_the_sqlite_database_shows_no_group_membership_route_or_body() {
    let t = sqlite_ds(config()).await;
    let w = world(&t.base).await;
    let n = needles(&t.ds, &w).await;
    let path = t.dir.as_ref().unwrap().path().join("ds.sqlite");
    assert_copy_is_blind(&sqlite_cells(&path).await, &n);
    // The files themselves (pages, free pages, indexes, the WAL): no group
    // id, reference or body either.
    let mut files = std::fs::read(&path).unwrap();
    files.extend(std::fs::read(path.with_extension("sqlite-wal")).unwrap_or_default());
    for (what, needle) in &n.nowhere {
        assert!(
            !contains(&files, needle),
            "{what} found in the database files"
        );
    }
    assert!(
        contains(&files, &n.queues[0].1),
        "the file scan sees the clients table"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_the_postgres_database_shows_no_group_membership_route_or_body() {
    let db = PgDb::create().await;
    let store = PostgresStore::connect(&db.url, 8).await.unwrap();
    let t = serve_store(store.clone(), Hub::new(), config()).await;
    let w = world(&t.base).await;
    let n = needles(&t.ds, &w).await;
    assert_copy_is_blind(&postgres_cells(&db.url).await, &n);
    drop(t);
    store.pool().close().await;
}

/// A raw connection to the database, for tampering.
enum Raw {
    Lite(sqlx::SqliteConnection),
    Pg(sqlx::PgConnection),
}

impl Raw {
    /// The non-null values of `table.column` where `key_column = key`.
    async fn cells(&mut self, table: &str, column: &str, key: (&str, &[u8])) -> Vec<Vec<u8>> {
        let sql = format!(
            "SELECT \"{column}\" FROM \"{table}\" WHERE \"{}\" = $1 AND \"{column}\" IS NOT NULL",
            key.0
        );
        match self {
            Raw::Lite(c) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(key.1)
                .fetch_all(c)
                .await
                .unwrap(),
            Raw::Pg(c) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(key.1)
                .fetch_all(c)
                .await
                .unwrap(),
        }
    }

    /// All non-null values of `table.column`.
    async fn all(&mut self, table: &str, column: &str) -> Vec<Vec<u8>> {
        let sql = format!("SELECT \"{column}\" FROM \"{table}\" WHERE \"{column}\" IS NOT NULL");
        match self {
            Raw::Lite(c) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_all(c)
                .await
                .unwrap(),
            Raw::Pg(c) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_all(c)
                .await
                .unwrap(),
        }
    }

    /// Sets `table.column` to `new` in the row where `key_column = key`.
    async fn set(&mut self, table: &str, column: &str, key: (&str, &[u8]), new: &[u8]) {
        let sql = format!(
            "UPDATE \"{table}\" SET \"{column}\" = $1 WHERE \"{}\" = $2",
            key.0
        );
        let n = match self {
            Raw::Lite(c) => sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(new)
                .bind(key.1)
                .execute(c)
                .await
                .unwrap()
                .rows_affected(),
            Raw::Pg(c) => sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(new)
                .bind(key.1)
                .execute(c)
                .await
                .unwrap()
                .rows_affected(),
        };
        assert_eq!(n, 1, "{table}.{column}: one row set");
    }

    /// Replaces the cell of `table.column` holding `old` by `new`.
    async fn replace(&mut self, table: &str, column: &str, old: &[u8], new: &[u8]) {
        let sql = format!("UPDATE \"{table}\" SET \"{column}\" = $1 WHERE \"{column}\" = $2");
        let n = match self {
            Raw::Lite(c) => sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(new)
                .bind(old)
                .execute(c)
                .await
                .unwrap()
                .rows_affected(),
            Raw::Pg(c) => sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(new)
                .bind(old)
                .execute(c)
                .await
                .unwrap()
                .rows_affected(),
        };
        assert_eq!(n, 1, "{table}.{column}: one cell replaced");
    }
}

fn flipped(v: &[u8], at: usize) -> Vec<u8> {
    let mut v = v.to_vec();
    v[at] ^= 0x01;
    v
}

fn rejected(e: DsError, what: &str) {
    assert!(
        matches!(e, DsError::Storage(StoreError::Sealed(SealError::Rejected { what: w })) if w == what),
        "{what}: {e:?}"
    );
}

/// Alters sealed cells one at a time: each gives its typed error and
/// serves nothing (not the other messages, not a partial batch); put
/// back, the data is served again.
async fn tampering<S: DsStore>(ds: &Ds<S>, w: &World, raw: &mut Raw) {
    let keys = test_keys();
    let carol = queue(w.client("carol"));
    let gina = queue(w.client("gina"));
    let dave = queue(w.client("dave"));
    let blind_tag = keys.group_tag(&w.blind);
    let assisted_tag = keys.group_tag(&w.assisted);
    let before = ds.fetch(carol, 100).await.unwrap();
    assert!(before.messages.len() >= 3);

    // A message: one flipped bit in its ciphertext, then in its nonce.
    let msgs = raw
        .cells("messages", "message", ("group_tag", &blind_tag))
        .await;
    for at in [msgs[1].len() - 1, 5] {
        let bad = flipped(&msgs[1], at);
        raw.replace("messages", "message", &msgs[1], &bad).await;
        rejected(ds.fetch(carol, 100).await.unwrap_err(), "message");
        raw.replace("messages", "message", &bad, &msgs[1]).await;
    }
    // Two messages' sealed bodies swapped (each bound to its own row).
    let placeholder = vec![0u8; 8];
    raw.replace("messages", "message", &msgs[0], &placeholder)
        .await;
    raw.replace("messages", "message", &msgs[1], &msgs[0]).await;
    raw.replace("messages", "message", &placeholder, &msgs[1])
        .await;
    rejected(ds.fetch(carol, 100).await.unwrap_err(), "message");
    raw.replace("messages", "message", &msgs[1], &placeholder)
        .await;
    raw.replace("messages", "message", &msgs[0], &msgs[1]).await;
    raw.replace("messages", "message", &placeholder, &msgs[0])
        .await;
    // A message cell too short to be sealed.
    raw.replace("messages", "message", &msgs[0], &[1, 2, 3])
        .await;
    assert!(matches!(
        ds.fetch(carol, 100).await.unwrap_err(),
        DsError::Storage(StoreError::Sealed(SealError::Truncated { what: "message" }))
    ));
    raw.replace("messages", "message", &[1, 2, 3], &msgs[0])
        .await;

    // The group id in the group's row (carol's memberships name it).
    let id = raw.cells("groups", "sealed_id", ("tag", &blind_tag)).await;
    let bad = flipped(&id[0], id[0].len() - 1);
    raw.replace("groups", "sealed_id", &id[0], &bad).await;
    rejected(ds.fetch(carol, 100).await.unwrap_err(), "group id");
    raw.replace("groups", "sealed_id", &bad, &id[0]).await;
    // Another group's sealed id copied into this group's row.
    let other = raw
        .cells("groups", "sealed_id", ("tag", &assisted_tag))
        .await;
    raw.set("groups", "sealed_id", ("tag", &blind_tag), &other[0])
        .await;
    rejected(ds.fetch(carol, 100).await.unwrap_err(), "group id");
    raw.set("groups", "sealed_id", ("tag", &blind_tag), &id[0])
        .await;

    // The Welcome dave waits for.
    let bodies = raw.all("welcome_bodies", "body").await;
    assert_eq!(bodies.len(), 1);
    let bad = flipped(&bodies[0], 30);
    raw.replace("welcome_bodies", "body", &bodies[0], &bad)
        .await;
    rejected(ds.fetch(dave, 100).await.unwrap_err(), "welcome");
    raw.replace("welcome_bodies", "body", &bad, &bodies[0])
        .await;

    // The assisted group's public state and GroupInfo.
    for (column, what) in [
        ("public_state", "group state"),
        ("group_info", "group info"),
    ] {
        let cell = raw.cells("groups", column, ("tag", &assisted_tag)).await;
        let bad = flipped(&cell[0], cell[0].len() / 2);
        raw.replace("groups", column, &cell[0], &bad).await;
        let e = if column == "public_state" {
            ds.ratchet_tree(gina, w.assisted.clone()).await.unwrap_err()
        } else {
            ds.group_info(gina, w.assisted.clone()).await.unwrap_err()
        };
        rejected(e, what);
        raw.replace("groups", column, &bad, &cell[0]).await;
    }

    // The route of dave's claimed KeyPackageRef.
    let reference = keys.reference_tag(&w.dave_ref);
    let owner = raw
        .cells("kp_routes", "owner_sealed", ("reference_tag", &reference))
        .await;
    let bad = flipped(&owner[0], 40);
    raw.replace("kp_routes", "owner_sealed", &owner[0], &bad)
        .await;
    assert!(matches!(
        ds.store()
            .route_key_package_refs(vec![w.dave_ref.clone()])
            .await,
        Err(StoreError::Sealed(SealError::Rejected {
            what: "route owner"
        }))
    ));
    raw.replace("kp_routes", "owner_sealed", &bad, &owner[0])
        .await;

    // Everything put back: served as before.
    assert_eq!(ds.fetch(carol, 100).await.unwrap(), before);
    assert_eq!(ds.fetch(dave, 100).await.unwrap().welcomes.len(), 1);
    assert_eq!(
        ds.store()
            .route_key_package_refs(vec![w.dave_ref.clone()])
            .await
            .unwrap(),
        vec![Some(dave)]
    );
    ds.group_info(gina, w.assisted.clone()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_sealed_cells_are_refused_on_sqlite() {
    let t = sqlite_ds(config()).await;
    let w = world(&t.base).await;
    let path = t.dir.as_ref().unwrap().path().join("ds.sqlite");
    let mut raw = Raw::Lite(
        sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display()))
            .await
            .unwrap(),
    );
    tampering(&t.ds, &w, &mut raw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_sealed_cells_are_refused_on_postgres() {
    let db = PgDb::create().await;
    let store = PostgresStore::connect(&db.url, 8).await.unwrap();
    let t = serve_store(store.clone(), Hub::new(), config()).await;
    let w = world(&t.base).await;
    let mut raw = Raw::Pg(sqlx::PgConnection::connect(&db.url).await.unwrap());
    tampering(&t.ds, &w, &mut raw).await;
    if let Raw::Pg(c) = raw {
        c.close().await.unwrap();
    }
    drop(t);
    store.pool().close().await;
}

/// A second DS on the same database with another key file: refused with
/// `WrongDsKey` before it serves anything, for every request; the first
/// goes on.
async fn another_key_file<S: DsStore>(first: &Ds<S>, second: S, w: &World, dir: &std::path::Path) {
    let key = load_or_create_key(&dir.join("other.key")).unwrap();
    let other = Ds::new(
        second,
        Hub::new(),
        key,
        Arc::new(ValidatorAuthenticator::basic()),
        config(),
    );
    let carol = queue(w.client("carol"));
    assert!(matches!(
        other.store().check_key().await,
        Err(StoreError::WrongDsKey)
    ));
    assert!(matches!(
        other.fetch(carol, 100).await,
        Err(DsError::Storage(StoreError::WrongDsKey))
    ));
    assert!(matches!(
        other
            .group_info(queue(w.client("erin")), w.assisted.clone())
            .await,
        Err(DsError::Storage(StoreError::WrongDsKey))
    ));
    assert!(matches!(
        other.claim(b"dave").await,
        Err(DsError::Storage(StoreError::WrongDsKey))
    ));
    assert!(first.fetch(carol, 100).await.unwrap().messages.len() >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_key_file_is_refused_on_sqlite() {
    let t = sqlite_ds(config()).await;
    let w = world(&t.base).await;
    let dir = t.dir.as_ref().unwrap().path();
    let second = SqliteStore::open(dir.join("ds.sqlite"), SqliteConfig::default())
        .await
        .unwrap();
    another_key_file(&t.ds, second, &w, dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_key_file_is_refused_on_postgres() {
    let db = PgDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let store = PostgresStore::connect(&db.url, 8).await.unwrap();
    let t = serve_store(store.clone(), Hub::new(), config()).await;
    let w = world(&t.base).await;
    let second = PostgresStore::connect(&db.url, 4).await.unwrap();
    another_key_file(&t.ds, second.clone(), &w, dir.path()).await;
    second.pool().close().await;
    // A DS process with another key file does not start on the database.
    let out = tokio::process::Command::new(ds_binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--postgres", &db.url])
        .arg("--key-file")
        .arg(dir.path().join("third.key"))
        .args(pki().write_to(dir.path()))
        .args(basic())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another DS key"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"));
    drop(t);
    store.pool().close().await;
}

/// The tables of schema version 1 (before the data at rest was sealed),
/// as that version created them.
const VERSION_1: &[&str] = &[
    "CREATE TABLE clients (identity_tag BLOB PRIMARY KEY, queue_id BLOB NOT NULL UNIQUE,
        last_resort_claims INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE groups (id BLOB PRIMARY KEY, mode INTEGER NOT NULL, epoch INTEGER NOT NULL,
        seq INTEGER NOT NULL, public_state BLOB, group_info BLOB)",
    "CREATE TABLE members (group_id BLOB NOT NULL, queue_id BLOB NOT NULL,
        cursor INTEGER NOT NULL, until INTEGER, PRIMARY KEY (group_id, queue_id))",
    "INSERT INTO groups (id, mode, epoch, seq) VALUES ('a group id in clear', 0, 0, 0)",
];

#[tokio::test]
async fn a_database_of_the_old_schema_is_refused_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite");
    let url = format!("sqlite:{}?mode=rwc", path.display());
    let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
    for s in VERSION_1 {
        sqlx::query(*s).execute(&mut c).await.unwrap();
    }
    let e = SqliteStore::open(&path, SqliteConfig::default())
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::SchemaVersion { found: 1, expected } if expected == SCHEMA_VERSION),
        "{e:?}"
    );
    assert!(e.to_string().contains("schema version 1"), "{e}");
    // Nothing was added to it.
    let meta: Option<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE name = 'ds_meta'")
            .fetch_optional(&mut c)
            .await
            .unwrap();
    assert_eq!(meta, None);
    // A database of a later version is refused the same way.
    let newer = dir.path().join("newer.sqlite");
    drop(
        SqliteStore::open(&newer, SqliteConfig::default())
            .await
            .unwrap(),
    );
    let mut n = sqlx::SqliteConnection::connect(&format!("sqlite:{}", newer.display()))
        .await
        .unwrap();
    sqlx::query("UPDATE ds_meta SET schema_version = 3")
        .execute(&mut n)
        .await
        .unwrap();
    assert!(matches!(
        SqliteStore::open(&newer, SqliteConfig::default()).await,
        Err(StoreError::SchemaVersion { found: 3, .. })
    ));
}

#[tokio::test]
async fn a_database_of_the_old_schema_is_refused_on_postgres() {
    let db = PgDb::create().await;
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    for s in VERSION_1 {
        sqlx::query(sqlx::AssertSqlSafe(
            s.replace("BLOB", "BYTEA")
                .replace("'a group id in clear'", "'\\x00'"),
        ))
        .execute(&mut c)
        .await
        .unwrap();
    }
    let e = PostgresStore::connect(&db.url, 2).await.unwrap_err();
    assert!(
        matches!(e, StoreError::SchemaVersion { found: 1, expected } if expected == SCHEMA_VERSION),
        "{e:?}"
    );
    let meta: bool = sqlx::query_scalar("SELECT to_regclass('ds_meta') IS NOT NULL")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert!(!meta, "nothing was added");
    c.close().await.unwrap();
}
