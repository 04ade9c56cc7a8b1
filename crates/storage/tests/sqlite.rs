//! The storage suite on SQLite (each journal mode), and what is particular
//! to the SQLite file: its pragmas, its permissions, persistence across
//! reopening.

mod suite;

use hsmls_storage::{GroupStateStorage, JournalMode, SqliteOptions, SqliteStorage};

async fn store(journal: JournalMode) -> (SqliteStorage, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStorage::open_with(
        dir.path().join("state.db"),
        SqliteOptions::new().journal(journal),
    )
    .await
    .unwrap();
    (s, dir)
}

storage_suite!(truncate, store(JournalMode::Truncate).await);
storage_suite!(delete, store(JournalMode::Delete).await);
storage_suite!(wal_checkpoint, store(JournalMode::WalCheckpoint).await);

#[tokio::test]
async fn the_connection_runs_with_secure_delete_full_sync_and_the_journal_asked_for() {
    for (journal, name) in [
        (JournalMode::Truncate, "truncate"),
        (JournalMode::Delete, "delete"),
        (JournalMode::WalCheckpoint, "wal"),
    ] {
        let (s, _dir) = store(journal).await;
        let settings = s.connection_settings().await.unwrap();
        assert_eq!(settings.secure_delete, 1);
        assert_eq!(settings.synchronous, 2, "FULL");
        assert_eq!(settings.foreign_keys, 1);
        assert_eq!(settings.journal_mode, name);
    }
    let dir = tempfile::tempdir().unwrap();
    let off = SqliteStorage::open_with(
        dir.path().join("off.db"),
        SqliteOptions::new().secure_delete(false),
    )
    .await
    .unwrap();
    assert_eq!(off.connection_settings().await.unwrap().secure_delete, 0);
}

#[tokio::test]
async fn the_file_is_private_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let s = SqliteStorage::open(&path).await.unwrap();
    let g = hsmls::SavedGroup {
        group_id: b"kept".to_vec(),
        epoch: 9,
        state: b"sealed state".to_vec(),
        tree_chunks: 1,
        tree_records: vec![hsmls::TreeRecord {
            index: 0,
            data: b"sealed tree record".to_vec(),
        }],
        epoch_records: vec![hsmls::EpochRecord {
            epoch: 8,
            data: b"sealed record".to_vec(),
        }],
    };
    s.write_group(&g).await.unwrap();
    s.close().await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The rollback journal is empty (or gone) once the writes committed.
    let journal = dir.path().join("state.db-journal");
    assert!(std::fs::metadata(&journal).map_or(true, |m| m.len() == 0));
    let s = SqliteStorage::open(&path).await.unwrap();
    assert_eq!(s.read_group(b"kept").await.unwrap(), Some(g));
    assert_eq!(s.path(), path);
}
