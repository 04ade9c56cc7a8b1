//! One test-suite for every `GroupStateStorage` backend (SQLite today,
//! PostgreSQL later): each function takes a fresh, empty store.
#![allow(dead_code)]

use hsmls::{EpochRecord, SavedGroup, SavedKeyPackage, TreeRecord};
use hsmls_storage::{GroupStateStorage, StorageError};

fn group(id: &[u8], epoch: u64, records: &[u64]) -> SavedGroup {
    SavedGroup {
        group_id: id.to_vec(),
        epoch,
        state: format!("state {epoch} of {}", String::from_utf8_lossy(id)).into_bytes(),
        tree_chunks: 2,
        tree_records: (0..2).map(|c| chunk(c, epoch)).collect(),
        epoch_records: records
            .iter()
            .map(|&e| EpochRecord {
                epoch: e,
                data: format!("record {e} at {epoch}").into_bytes(),
            })
            .collect(),
    }
}

fn chunk(index: u32, epoch: u64) -> TreeRecord {
    TreeRecord {
        index,
        data: format!("chunk {index} at {epoch}").into_bytes(),
    }
}

fn key_package(reference: &[u8], last_resort: bool, not_after: u64) -> SavedKeyPackage {
    SavedKeyPackage {
        reference: reference.to_vec(),
        last_resort,
        not_after,
        data: [reference, b" bundle"].concat(),
    }
}

/// A written group reads back exactly; an unknown one is `None`.
pub async fn write_then_read<S: GroupStateStorage>(s: &S) {
    assert_eq!(s.read_group(b"g1").await.unwrap(), None);
    let g = group(b"g1", 3, &[1, 2]);
    s.write_group(&g).await.unwrap();
    assert_eq!(s.read_group(b"g1").await.unwrap(), Some(g));
    assert_eq!(s.read_group(b"g2").await.unwrap(), None);
}

/// A write replaces the record set: records that left the window are
/// deleted, kept ones replaced, new ones inserted; records come back
/// oldest first whatever the order written.
pub async fn records_follow_the_window<S: GroupStateStorage>(s: &S) {
    s.write_group(&group(b"g", 2, &[0, 1])).await.unwrap();
    let next = group(b"g", 4, &[3, 2]);
    s.write_group(&next).await.unwrap();
    let read = s.read_group(b"g").await.unwrap().unwrap();
    assert_eq!(read.epoch, 4);
    assert_eq!(read.state, next.state);
    assert_eq!(
        read.epoch_records
            .iter()
            .map(|r| r.epoch)
            .collect::<Vec<_>>(),
        [2, 3]
    );
    assert_eq!(read.epoch_records[0].data, b"record 2 at 4");
    // No past epochs kept at all.
    s.write_group(&group(b"g", 5, &[])).await.unwrap();
    assert!(
        s.read_group(b"g")
            .await
            .unwrap()
            .unwrap()
            .epoch_records
            .is_empty()
    );
}

/// Saves of the same epoch replace each other; an older epoch is refused
/// and changes nothing; a write with two records of one epoch is refused.
pub async fn stale_and_duplicate_writes_are_refused<S: GroupStateStorage>(s: &S) {
    let g5 = group(b"g", 5, &[4]);
    s.write_group(&g5).await.unwrap();
    let mut again = group(b"g", 5, &[3, 4]);
    again.state = b"another save of epoch 5".to_vec();
    s.write_group(&again).await.unwrap();
    assert_eq!(s.read_group(b"g").await.unwrap(), Some(again.clone()));
    assert!(matches!(
        s.write_group(&group(b"g", 4, &[3])).await,
        Err(StorageError::EpochRegression { stored: 5, new: 4 })
    ));
    let mut dup = group(b"g", 6, &[5]);
    dup.epoch_records.push(dup.epoch_records[0].clone());
    assert!(matches!(
        s.write_group(&dup).await,
        Err(StorageError::DuplicateEpochRecord(5))
    ));
    assert_eq!(s.read_group(b"g").await.unwrap(), Some(again));
}

/// Tree records: a write inserts or replaces the records it carries and
/// keeps the others (an incremental save), deletes those at or beyond its
/// chunk count (the tree shrank), and a write with two records of one
/// chunk or a record beyond the count is refused and changes nothing.
pub async fn tree_records_are_upserted_and_cut_at_the_count<S: GroupStateStorage>(s: &S) {
    let mut full = group(b"g", 1, &[0]);
    full.tree_chunks = 4;
    full.tree_records = (0..4).map(|c| chunk(c, 1)).collect();
    s.write_group(&full).await.unwrap();
    assert_eq!(s.read_group(b"g").await.unwrap(), Some(full.clone()));
    // Incremental: chunks 1 and 3 changed.
    let mut next = group(b"g", 2, &[1]);
    next.tree_chunks = 4;
    next.tree_records = vec![chunk(3, 2), chunk(1, 2)];
    s.write_group(&next).await.unwrap();
    let read = s.read_group(b"g").await.unwrap().unwrap();
    assert_eq!(read.tree_chunks, 4);
    assert_eq!(read.state, next.state);
    assert_eq!(
        read.tree_records,
        [chunk(0, 1), chunk(1, 2), chunk(2, 1), chunk(3, 2)]
    );
    // The tree shrank to two chunks, chunk 0 changed.
    let mut shrunk = group(b"g", 3, &[2]);
    shrunk.tree_chunks = 2;
    shrunk.tree_records = vec![chunk(0, 3)];
    s.write_group(&shrunk).await.unwrap();
    let read = s.read_group(b"g").await.unwrap().unwrap();
    assert_eq!(read.tree_chunks, 2);
    assert_eq!(read.tree_records, [chunk(0, 3), chunk(1, 2)]);
    // Refused writes change nothing.
    let mut dup = group(b"g", 4, &[3]);
    dup.tree_records = vec![chunk(1, 4), chunk(1, 4)];
    assert!(matches!(
        s.write_group(&dup).await,
        Err(StorageError::DuplicateTreeRecord(1))
    ));
    let mut beyond = group(b"g", 4, &[3]);
    beyond.tree_records = vec![chunk(2, 4)];
    assert!(matches!(
        s.write_group(&beyond).await,
        Err(StorageError::TreeRecordBeyondCount { index: 2, count: 2 })
    ));
    assert_eq!(s.read_group(b"g").await.unwrap(), Some(read));
    // Deleting the group deletes its tree records.
    assert!(s.delete_group(b"g").await.unwrap());
    let mut again = group(b"g", 0, &[]);
    again.tree_chunks = 1;
    again.tree_records = vec![chunk(0, 0)];
    s.write_group(&again).await.unwrap();
    assert_eq!(s.read_group(b"g").await.unwrap(), Some(again));
}

/// Groups are independent; deleting one removes its state and records.
pub async fn list_and_delete_groups<S: GroupStateStorage>(s: &S) {
    assert!(s.list_groups().await.unwrap().is_empty());
    for id in [&b"b"[..], b"a", b"c"] {
        s.write_group(&group(id, 1, &[0])).await.unwrap();
    }
    assert_eq!(
        s.list_groups().await.unwrap(),
        [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
    assert!(s.delete_group(b"b").await.unwrap());
    assert!(!s.delete_group(b"b").await.unwrap());
    assert_eq!(s.read_group(b"b").await.unwrap(), None);
    assert_eq!(
        s.list_groups().await.unwrap(),
        [b"a".to_vec(), b"c".to_vec()]
    );
    assert_eq!(
        s.read_group(b"a").await.unwrap(),
        Some(group(b"a", 1, &[0]))
    );
    // A deleted group can start again at any epoch.
    s.write_group(&group(b"b", 0, &[])).await.unwrap();
}

/// A KeyPackage bundle is taken once; a last-resort one stays.
pub async fn key_packages_are_taken_once_unless_last_resort<S: GroupStateStorage>(s: &S) {
    let once = key_package(b"kp-1", false, 100);
    let lr = key_package(b"kp-lr", true, 100);
    s.store_key_package(&once).await.unwrap();
    s.store_key_package(&lr).await.unwrap();
    assert_eq!(s.take_key_package(b"kp-1").await.unwrap(), Some(once));
    assert_eq!(s.take_key_package(b"kp-1").await.unwrap(), None);
    for _ in 0..2 {
        assert_eq!(
            s.take_key_package(b"kp-lr").await.unwrap(),
            Some(lr.clone())
        );
    }
    assert!(s.delete_key_package(b"kp-lr").await.unwrap());
    assert!(!s.delete_key_package(b"kp-lr").await.unwrap());
    assert_eq!(s.take_key_package(b"kp-lr").await.unwrap(), None);
    assert_eq!(s.take_key_package(b"nothing").await.unwrap(), None);
}

/// Expired bundles are deleted and handed back (to destroy their keys).
pub async fn expired_key_packages_are_deleted<S: GroupStateStorage>(s: &S) {
    for (r, lr, t) in [
        (&b"a"[..], false, 10),
        (b"b", true, 20),
        (b"c", false, 30),
        (b"d", false, 40),
    ] {
        s.store_key_package(&key_package(r, lr, t)).await.unwrap();
    }
    let gone = s.delete_expired_key_packages(30).await.unwrap();
    assert_eq!(
        gone.iter().map(|k| k.reference.clone()).collect::<Vec<_>>(),
        [b"a".to_vec(), b"b".to_vec()]
    );
    assert!(gone[1].last_resort);
    assert_eq!(s.take_key_package(b"b").await.unwrap(), None);
    assert!(s.take_key_package(b"c").await.unwrap().is_some());
    assert!(s.delete_expired_key_packages(30).await.unwrap().is_empty());
}

/// A large state (a 10,000-member group's is several MB) round-trips.
pub async fn large_states_round_trip<S: GroupStateStorage>(s: &S) {
    let mut g = group(b"big", 7, &[5, 6]);
    g.state = (0..4_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
    s.write_group(&g).await.unwrap();
    assert_eq!(s.read_group(b"big").await.unwrap(), Some(g));
}

/// Instantiates every test of the suite for a backend: `$make` is an
/// async expression giving a fresh store (and whatever must outlive it).
#[macro_export]
macro_rules! storage_suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test]
                    async fn $name() {
                        let (store, _guard) = $make;
                        suite::$name(&store).await;
                    }
                };
            }

            case!(write_then_read);
            case!(records_follow_the_window);
            case!(stale_and_duplicate_writes_are_refused);
            case!(tree_records_are_upserted_and_cut_at_the_count);
            case!(list_and_delete_groups);
            case!(key_packages_are_taken_once_unless_last_resort);
            case!(expired_key_packages_are_deleted);
            case!(large_states_round_trip);
        }
    };
}
