//! The store conformance suite on SQLite (a real file, WAL,
//! synchronous=FULL, the batching writer).

mod suite;

use hsmls_ds::store::{SqliteConfig, SqliteStore};

async fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path().join("ds.sqlite"), SqliteConfig::default())
        .await
        .unwrap();
    (dir, s)
}

macro_rules! case {
    ($($name:ident),*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (_dir, s) = store().await;
            suite::$name(&suite::sealed(s)).await;
        }
    )*};
}

case!(
    clients,
    key_packages,
    concurrent_claims,
    commits,
    messages,
    stored_once_and_acknowledged,
    welcomes_and_purge,
    races,
    another_key,
    mixed_messages,
    ordered_batch
);

/// The mixed run again with a writer that waits 100 ms for more: the
/// 120 messages land in one or two transactions, so the writer's
/// appending of several messages together decides them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_messages_in_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let config = SqliteConfig::default().linger(std::time::Duration::from_millis(100));
    let s = SqliteStore::open(dir.path().join("ds.sqlite"), config)
        .await
        .unwrap();
    suite::mixed_messages(&suite::sealed(s)).await;
}

#[tokio::test]
async fn pragmas_and_file_mode() {
    let (dir, s) = store().await;
    assert_eq!(s.settings().await.unwrap(), ("wal".to_string(), 2));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("ds.sqlite"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test]
async fn reopened_store_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ds.sqlite");
    let s = SqliteStore::open(&path, SqliteConfig::default())
        .await
        .unwrap();
    let s = suite::sealed(s);
    let q = s.client_queue([5; 32]).await.unwrap();
    s.create_group(suite::group(b"g", q)).await.unwrap();
    s.append_commit(suite::commit(b"g", 0, q, 1)).await.unwrap();
    drop(s);
    let s = SqliteStore::open(&path, SqliteConfig::default())
        .await
        .unwrap();
    let s = suite::sealed(s);
    assert_eq!(s.find_client([5; 32]).await.unwrap(), Some(q));
    assert_eq!(s.group(b"g".to_vec()).await.unwrap().unwrap().epoch, 1);
}
