//! Incremental saves through the SQLite store: a group of 200 members (two
//! tree records) is written once in full, then after each change with the
//! few changed node slots in the state or the tree records of the chunks
//! with many changes (`Group::save_changes`, confirmed after the write), and `read_group` gives back records that load to the same
//! group; the tree shrinking deletes its last record. A tree-record row
//! the store lost, or one replaced by another group's or another save's
//! record, is refused on load with its typed error.

use std::str::FromStr;
use std::sync::Arc;

use hsmls::wire::{Credential, LeafIndex};
use hsmls::{
    BasicCredentialValidator, Client, CredentialValidator, Group, KeyPackageConfig, Signer,
    StateError,
};
use hsmls_custody::{KeyCustody, SoftwareCustody, StateSealer};
use hsmls_storage::{GroupStateStorage, SqliteStorage};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

const NOW: u64 = 1_750_000_000;
const MEMBERS: u32 = 200;

fn client(custody: &Arc<SoftwareCustody>, name: &str) -> Client {
    let signer = Signer::generate(
        custody.clone() as Arc<dyn KeyCustody>,
        Credential::Basic(name.as_bytes().to_vec()),
    )
    .unwrap();
    let validator: Arc<dyn CredentialValidator> = Arc::new(BasicCredentialValidator::default());
    Client::new(signer, validator)
}

fn big_group(client: &Client, group_id: &[u8]) -> Group {
    let others = Arc::new(SoftwareCustody::new());
    let mut group = client
        .create_group(group_id.to_vec(), Vec::new(), NOW)
        .unwrap();
    let config = KeyPackageConfig::new(NOW - 10, 3600);
    let kps: Vec<_> = (1..MEMBERS)
        .map(|i| {
            self::client(&others, &format!("member-{i}"))
                .generate_key_package(&config)
                .unwrap()
                .key_package
        })
        .collect();
    let _ = group.add_members(&kps, NOW).unwrap();
    group.merge_pending_commit().unwrap();
    group
}

/// Saves the changes, writes them, confirms; returns the chunks written.
async fn save(g: &mut Group, sealer: &dyn StateSealer, store: &SqliteStorage) -> Vec<u32> {
    let (saved, ticket) = g.save_changes(sealer).unwrap();
    store.write_group(&saved).await.unwrap();
    assert!(g.confirm_saved(ticket));
    saved.tree_records.iter().map(|r| r.index).collect()
}

async fn load(
    client: &Client,
    sealer: &dyn StateSealer,
    store: &SqliteStorage,
    group_id: &[u8],
) -> Result<Group, StateError> {
    let saved = store.read_group(group_id).await.unwrap().unwrap();
    client.load_saved_group(sealer, &saved)
}

/// Runs `sql` on the store's file through a second connection (what
/// another program, or a damaged file, does behind the store's back).
async fn tamper(path: &std::path::Path, sql: &'static str, bind: Option<Vec<u8>>) {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            SqliteConnectOptions::from_str("sqlite:")
                .unwrap()
                .filename(path),
        )
        .await
        .unwrap();
    let mut q = sqlx::query(sql);
    if let Some(b) = bind {
        q = q.bind(b);
    }
    assert_eq!(q.execute(&pool).await.unwrap().rows_affected(), 1);
    pool.close().await;
}

#[tokio::test]
async fn incremental_writes_read_back_and_load_and_the_tree_shrinks() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStorage::open(dir.path().join("state.db"))
        .await
        .unwrap();
    let custody = Arc::new(SoftwareCustody::new());
    let sealer = custody.state_sealer();
    let alice = client(&custody, "alice");
    let mut g = big_group(&alice, b"incremental");
    let id = g.group_id().to_vec();

    assert_eq!(save(&mut g, sealer, &store).await, [0, 1]);
    let loaded = load(&alice, sealer, &store, &id).await.unwrap();
    assert!(loaded.state_snapshot() == g.state_snapshot());

    // A self-update of leaf 0 changes 9 slots of chunk 0, written in the
    // state; ten removals change chunk 1, sealed again. The rows of the
    // first write stay where nothing replaced them, and still fit.
    let _ = g.self_update(NOW).unwrap();
    g.merge_pending_commit().unwrap();
    assert_eq!(save(&mut g, sealer, &store).await, []);
    let loaded = load(&alice, sealer, &store, &id).await.unwrap();
    assert!(loaded.state_snapshot() == g.state_snapshot());
    let ten: Vec<LeafIndex> = (130..140).map(LeafIndex).collect();
    let _ = g.remove_members(&ten, NOW).unwrap();
    g.merge_pending_commit().unwrap();
    assert_eq!(save(&mut g, sealer, &store).await, [1]);
    let read = store.read_group(&id).await.unwrap().unwrap();
    assert_eq!(read.tree_chunks, 2);
    assert_eq!(read.tree_records.len(), 2);
    let loaded = load(&alice, sealer, &store, &id).await.unwrap();
    assert!(loaded.state_snapshot() == g.state_snapshot());

    // Removing the right half: one chunk left, the row of chunk 1 deleted.
    let right: Vec<LeafIndex> = (128..MEMBERS)
        .filter(|i| !(130..140).contains(i))
        .map(LeafIndex)
        .collect();
    let _ = g.remove_members(&right, NOW).unwrap();
    g.merge_pending_commit().unwrap();
    assert_eq!(save(&mut g, sealer, &store).await, []);
    let read = store.read_group(&id).await.unwrap().unwrap();
    assert_eq!((read.tree_chunks, read.tree_records.len()), (1, 1));
    let mut loaded = load(&alice, sealer, &store, &id).await.unwrap();
    assert!(loaded.state_snapshot() == g.state_snapshot());

    // The loaded group goes on saving incrementally.
    let _ = loaded.self_update(NOW).unwrap();
    loaded.merge_pending_commit().unwrap();
    assert_eq!(save(&mut loaded, sealer, &store).await, []);
    let again = load(&alice, sealer, &store, &id).await.unwrap();
    assert!(again.state_snapshot() == loaded.state_snapshot());
}

#[tokio::test]
async fn a_lost_or_foreign_tree_record_row_is_refused_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = SqliteStorage::open(&path).await.unwrap();
    let custody = Arc::new(SoftwareCustody::new());
    let sealer = custody.state_sealer();
    let alice = client(&custody, "alice");
    let mut g = big_group(&alice, b"tampered");
    let id = g.group_id().to_vec();
    let old = g.save(sealer).unwrap();
    let _ = g.self_update(NOW).unwrap();
    g.merge_pending_commit().unwrap();
    let other = big_group(&alice, b"another group").save(sealer).unwrap();

    // Chunk 0 replaced by the same chunk of an older save.
    assert_eq!(save(&mut g, sealer, &store).await, [0, 1]);
    tamper(
        &path,
        "UPDATE tree_records SET record = ?1 WHERE chunk = 0",
        Some(old.tree_records[0].data.clone()),
    )
    .await;
    assert!(matches!(
        load(&alice, sealer, &store, &id).await,
        Err(StateError::TreeRecordMismatch(0))
    ));
    // Chunk 1 replaced by another group's record (same sealing key).
    g.forget_saved();
    assert_eq!(save(&mut g, sealer, &store).await, [0, 1]);
    assert!(load(&alice, sealer, &store, &id).await.is_ok());
    tamper(
        &path,
        "UPDATE tree_records SET record = ?1 WHERE chunk = 1",
        Some(other.tree_records[1].data.clone()),
    )
    .await;
    assert!(matches!(
        load(&alice, sealer, &store, &id).await,
        Err(StateError::WrongGroup { .. })
    ));
    // The row of chunk 1 lost.
    tamper(&path, "DELETE FROM tree_records WHERE chunk = 1", None).await;
    assert!(matches!(
        load(&alice, sealer, &store, &id).await,
        Err(StateError::MissingTreeRecord(1))
    ));
    // A full save repairs the store.
    g.forget_saved();
    assert_eq!(save(&mut g, sealer, &store).await, [0, 1]);
    let loaded = load(&alice, sealer, &store, &id).await.unwrap();
    assert!(loaded.state_snapshot() == g.state_snapshot());
}
