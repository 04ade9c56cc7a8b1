//! RFC 9420 §9.2 at rest: once the window of retained epochs moves on, the
//! deleted epochs' records are gone from the database files, not only
//! unlinked. A member saves after every change (messages read, commits
//! merged) into an SQLite store; at the end the test reads every file of
//! the store's directory (database, journal, WAL) and searches them for
//!
//! * every sealed epoch record and every sealed state ever written for a
//!   deleted epoch (each 32-byte chunk of the sealed body: blobs larger
//!   than a page are split across overflow pages);
//! * the deleted epochs' secrets in plaintext: the epoch authenticator,
//!   and every 32-byte window of each deleted record's opened plaintext
//!   after its GroupContext (sender data secret, secret tree).
//!
//! With `secure_delete` on (every journal mode) nothing is found; with it
//! off the sealed bytes are found, so the test can fail. The records still
//! retained are found, so the search works.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use hsmls::internal::codec::vl::split_vl;
use hsmls::state::SealedHeader;
use hsmls::wire::Credential;
use hsmls::{
    BasicCredentialValidator, Client, CredentialValidator, Group, JoinOptions, KeyPackageConfig,
    ProcessedMessage, Signer,
};
use hsmls_custody::{KeyCustody, SoftwareCustody, StateSealer};
use hsmls_storage::{GroupStateStorage, JournalMode, SqliteOptions, SqliteStorage};

const NOW: u64 = 1_750_000_000;
const CHUNK: usize = 32;

fn validator() -> Arc<dyn CredentialValidator> {
    Arc::new(BasicCredentialValidator::default())
}

fn signer(custody: &Arc<SoftwareCustody>, name: &str) -> Signer {
    Signer::generate(
        custody.clone() as Arc<dyn KeyCustody>,
        Credential::Basic(name.as_bytes().to_vec()),
    )
    .unwrap()
}

/// Everything written for one epoch while it was current or retained.
#[derive(Default)]
struct Written {
    records: Vec<Vec<u8>>,
    states: Vec<Vec<u8>>,
    authenticator: Vec<u8>,
}

struct Findings {
    /// Deleted epochs whose sealed bytes were found (some chunk of some
    /// version of a record or state).
    sealed: Vec<u64>,
    /// Deleted epochs whose plaintext secrets were found.
    plaintext: Vec<u64>,
    /// Share of the chunks of the retained records found (sanity).
    retained_found: f64,
    deleted_epochs: Vec<u64>,
}

fn sealed_body(blob: &[u8]) -> &[u8] {
    SealedHeader::parse(blob).unwrap().1
}

fn chunks(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes.chunks_exact(CHUNK)
}

async fn run(options: SqliteOptions) -> Findings {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStorage::open_with(dir.path().join("state.db"), options)
        .await
        .unwrap();
    let (ca, cb) = (
        Arc::new(SoftwareCustody::new()),
        Arc::new(SoftwareCustody::new()),
    );
    let sealer = ca.state_sealer();
    let mut alice = Client::new(signer(&ca, "alice"), validator())
        .create_group(hsmls::random_group_id(), Vec::new(), NOW)
        .unwrap();
    let bob_signer = signer(&cb, "bob");
    let kp = Client::new(bob_signer.clone(), validator())
        .generate_key_package(&KeyPackageConfig::new(NOW, 3600))
        .unwrap();
    let out = alice
        .add_members(std::slice::from_ref(&kp.key_package), NOW)
        .unwrap();
    alice.merge_pending_commit().unwrap();
    let mut bob = Client::new(bob_signer, validator())
        .join_from_welcome(&kp, &out.welcome.unwrap(), JoinOptions::default())
        .unwrap();

    let mut written: BTreeMap<u64, Written> = BTreeMap::new();
    let save = |alice: &Group, written: &mut BTreeMap<u64, Written>| {
        let saved = alice.save(sealer).unwrap();
        let w = written.entry(saved.epoch).or_default();
        w.states.push(saved.state.clone());
        w.authenticator = alice.epoch_authenticator().to_vec();
        for r in &saved.epoch_records {
            written
                .entry(r.epoch)
                .or_default()
                .records
                .push(r.data.clone());
        }
        saved
    };
    for _ in 0..7 {
        // A message read in the epoch, one read late (after the commit),
        // a commit: each followed by a save.
        let now_msg = bob.encrypt_application(b"now").unwrap();
        let late_msg = bob.encrypt_application(b"late").unwrap();
        let event = alice.process_incoming(&now_msg, NOW).unwrap();
        assert!(matches!(event, ProcessedMessage::ApplicationMessage { .. }));
        store
            .write_group(&save(&alice, &mut written))
            .await
            .unwrap();
        let out = bob.self_update(NOW).unwrap();
        bob.merge_pending_commit().unwrap();
        let ProcessedMessage::StagedCommit(s) = alice.process_incoming(&out.commit, NOW).unwrap()
        else {
            panic!("commit");
        };
        alice.merge_staged_commit(s).unwrap();
        store
            .write_group(&save(&alice, &mut written))
            .await
            .unwrap();
        let event = alice.process_incoming(&late_msg, NOW).unwrap();
        assert!(
            matches!(event, ProcessedMessage::ApplicationMessage { epoch, .. } if epoch + 1 == alice.epoch())
        );
        store
            .write_group(&save(&alice, &mut written))
            .await
            .unwrap();
    }
    let current = alice.epoch();
    let stored = store.read_group(alice.group_id()).await.unwrap().unwrap();
    let retained: Vec<u64> = stored.epoch_records.iter().map(|r| r.epoch).collect();
    assert_eq!(retained, [current - 2, current - 1]);

    // Every file in the store's directory, read while the store is open
    // (a copy taken while the client runs; closing would checkpoint and
    // remove a WAL), and again after closing.
    let read_files = || {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            files.push(std::fs::read(entry.unwrap().path()).unwrap());
        }
        files
    };
    let mut files = read_files();
    store.close().await;
    files.extend(read_files());
    let mut windows: HashSet<&[u8]> = HashSet::new();
    for f in &files {
        windows.extend(f.windows(CHUNK));
    }

    let deleted_epochs: Vec<u64> = written
        .keys()
        .copied()
        .filter(|e| *e < current - 2)
        .collect();
    assert!(deleted_epochs.len() >= 4, "{deleted_epochs:?}");
    let mut findings = Findings {
        sealed: Vec::new(),
        plaintext: Vec::new(),
        retained_found: 0.0,
        deleted_epochs: deleted_epochs.clone(),
    };
    for &e in &deleted_epochs {
        let w = &written[&e];
        let blobs = w.records.iter().chain(&w.states);
        if blobs
            .flat_map(|b| chunks(sealed_body(b)))
            .any(|c| windows.contains(c))
        {
            findings.sealed.push(e);
        }
        // The plaintext of each record version, after its GroupContext.
        let mut secrets: Vec<Vec<u8>> = vec![w.authenticator.clone()];
        for blob in &w.records {
            let plaintext = sealer
                .open(SealedHeader::aad(blob).unwrap(), sealed_body(blob))
                .unwrap();
            let (_context, rest) = split_vl(&plaintext[16..]).unwrap();
            let (sender_data_secret, _) = split_vl(rest).unwrap();
            assert_eq!(sender_data_secret.len(), 32);
            secrets.extend(rest.windows(CHUNK).map(<[u8]>::to_vec));
        }
        if secrets.iter().any(|s| windows.contains(s.as_slice())) {
            findings.plaintext.push(e);
        }
    }
    let retained_blob = &written[&(current - 1)].records;
    let last = retained_blob.last().unwrap();
    let all: Vec<&[u8]> = chunks(sealed_body(last)).collect();
    let found = all.iter().filter(|c| windows.contains(*c)).count();
    findings.retained_found = found as f64 / all.len() as f64;
    findings
}

async fn check_nothing_survives(journal: JournalMode) {
    let f = run(SqliteOptions::new().journal(journal)).await;
    assert!(
        f.sealed.is_empty(),
        "{journal:?}: sealed bytes of deleted epochs {:?} found",
        f.sealed
    );
    assert!(
        f.plaintext.is_empty(),
        "{journal:?}: secrets of deleted epochs {:?} found",
        f.plaintext
    );
    assert!(
        f.retained_found > 0.8,
        "{journal:?}: the search finds only {:.0}% of a retained record",
        100.0 * f.retained_found
    );
}

#[tokio::test]
async fn deleted_epochs_leave_nothing_with_a_truncated_journal() {
    check_nothing_survives(JournalMode::Truncate).await;
}

#[tokio::test]
async fn deleted_epochs_leave_nothing_with_a_deleted_journal() {
    check_nothing_survives(JournalMode::Delete).await;
}

#[tokio::test]
async fn deleted_epochs_leave_nothing_with_a_checkpointed_wal() {
    check_nothing_survives(JournalMode::WalCheckpoint).await;
}

#[tokio::test]
async fn without_secure_delete_the_deleted_records_are_found() {
    let f = run(SqliteOptions::new().secure_delete(false)).await;
    assert!(
        !f.sealed.is_empty(),
        "secure_delete off, yet no sealed byte of the deleted epochs {:?} was found",
        f.deleted_epochs
    );
    // Sealed: their plaintext is not in the file either way.
    assert!(f.plaintext.is_empty());
}
