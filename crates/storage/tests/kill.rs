//! `kill -9` during saves: a child process (this test binary re-executed)
//! advances a group's epoch in a loop, saving to SQLite after each commit,
//! and appends "epoch authenticator" to a log after each write returned.
//! The parent kills it with SIGKILL at a random moment, loads the group
//! from the store and checks that it is a complete state of the last
//! logged epoch or of the one after (written, not yet logged), with the
//! logged authenticator. Several rounds continue from what the previous
//! one left. At the end the loaded group goes on: it adds a member, and
//! both exchange messages and commits.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hsmls::{Client, Group, JoinOptions, KeyPackageConfig, ProcessedMessage};
use hsmls_custody::{KeyCustody, Pkcs11Custody, SoftwareCustody};
use hsmls_storage::{GroupStateStorage, SqliteStorage};
use rand_core::{OsRng, RngCore};

const TEST: &str = "a_save_killed_by_sigkill_leaves_the_last_good_state";
const ROUNDS: usize = 6;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn load(custody: &Arc<Pkcs11Custody>, dir: &Path, store: &SqliteStorage) -> Option<Group> {
    let groups = store.list_groups().await.unwrap();
    let id = groups.first()?;
    let saved = store.read_group(id).await.unwrap().unwrap();
    let alice = client_in(custody.clone(), dir, "alice");
    Some(
        alice
            .load_saved_group(&custody.state_sealer().unwrap(), &saved)
            .unwrap_or_else(|e| panic!("the stored state does not load: {e}")),
    )
}

/// The child: load (or create) the group, then commit and save forever.
async fn saver(dir: &Path) {
    let custody = pkcs11_custody();
    let sealer = custody.state_sealer().unwrap();
    let store = SqliteStorage::open(dir.join("state.db")).await.unwrap();
    let mut group = match load(&custody, dir, &store).await {
        Some(g) => g,
        None => {
            let g = client_in(custody.clone(), dir, "alice")
                .create_group(hsmls::random_group_id(), Vec::new(), NOW)
                .unwrap();
            store.write_group(&g.save(&sealer).unwrap()).await.unwrap();
            g
        }
    };
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("log"))
        .unwrap();
    use std::io::Write;
    writeln!(
        log,
        "{} {}",
        group.epoch(),
        hex(group.epoch_authenticator())
    )
    .unwrap();
    put(dir, "ready", b"");
    loop {
        // Alone in the group: the commit goes to no one.
        let _commit = group.self_update(NOW).unwrap();
        group.merge_pending_commit().unwrap();
        store
            .write_group(&group.save(&sealer).unwrap())
            .await
            .unwrap();
        writeln!(
            log,
            "{} {}",
            group.epoch(),
            hex(group.epoch_authenticator())
        )
        .unwrap();
    }
}

fn logged(dir: &Path) -> Vec<(u64, String)> {
    String::from_utf8(get(dir, "log"))
        .unwrap()
        .lines()
        // A line cut by the kill has no authenticator of full length.
        .filter_map(|l| {
            let (e, a) = l.split_once(' ')?;
            (a.len() == 64).then(|| (e.parse().unwrap(), a.to_owned()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_killed_by_sigkill_leaves_the_last_good_state() {
    if let Some((_, dir)) = child_role() {
        return saver(&dir).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let custody = pkcs11_custody();
    let keys_before = token_private_keys(&custody);
    let mut last_epoch = 0;
    let mut unlogged_seen = 0;
    let mut hot_journals = 0;
    for round in 0..ROUNDS {
        let _ = std::fs::remove_file(d.join("ready"));
        let mut child = spawn_child_logged(TEST, "saver", d, &d.join(format!("child-{round}.out")));
        wait_for(d, "ready", Duration::from_secs(60));
        let pause = 20 + OsRng.next_u64() % 300;
        std::thread::sleep(Duration::from_millis(pause));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "round {round}: the child ended by itself"
        );

        // A new process's view: open the store (rolling back a hot
        // journal, if the kill hit a transaction), load the group.
        if std::fs::metadata(d.join("state.db-journal")).is_ok_and(|m| m.len() > 0) {
            hot_journals += 1;
        }
        let store = SqliteStorage::open(d.join("state.db")).await.unwrap();
        let group = load(&custody, d, &store).await.expect("a group is stored");
        let log = logged(d);
        let &(logged_epoch, ref _auth) = log.last().unwrap();
        let epoch = group.epoch();
        assert!(
            epoch == logged_epoch || epoch == logged_epoch + 1,
            "round {round}: loaded epoch {epoch}, last logged {logged_epoch}"
        );
        if epoch == logged_epoch + 1 {
            unlogged_seen += 1;
        }
        if let Some((_, auth)) = log.iter().rev().find(|(e, _)| *e == epoch) {
            assert_eq!(&hex(group.epoch_authenticator()), auth, "round {round}");
        }
        assert!(epoch >= last_epoch, "round {round}: the group went back");
        assert!(
            epoch > last_epoch || round == 0,
            "round {round}: no progress"
        );
        last_epoch = epoch;
        store.close().await;
    }
    eprintln!(
        "kill -9: {ROUNDS} rounds, final epoch {last_epoch}, {hot_journals} kills inside a write transaction, {unlogged_seen} between a commit and its log line"
    );

    // The group goes on: Alice (loaded) adds Bob, both talk and commit.
    let store = SqliteStorage::open(d.join("state.db")).await.unwrap();
    let mut alice = load(&custody, d, &store).await.unwrap();
    let bob_custody = Arc::new(SoftwareCustody::new());
    let bob = Client::new(signer(bob_custody.clone(), "bob"), validator());
    let kp = bob
        .generate_key_package(&KeyPackageConfig::new(NOW - 10, 60))
        .unwrap();
    let key_package = client_in(custody.clone(), d, "alice")
        .validate_key_package(&kp.to_bytes().unwrap(), NOW)
        .unwrap();
    let out = alice.add_members(&[key_package], NOW).unwrap();
    alice.merge_pending_commit().unwrap();
    let mut bob = bob
        .join_from_welcome(&kp, &out.welcome.unwrap(), JoinOptions::default())
        .unwrap();
    let msg = alice.encrypt_application(b"still here").unwrap();
    let ProcessedMessage::ApplicationMessage { data, .. } =
        bob.process_incoming(&msg, NOW).unwrap()
    else {
        panic!("application data");
    };
    assert_eq!(data, b"still here");
    let c = bob.self_update(NOW).unwrap();
    bob.merge_pending_commit().unwrap();
    let ProcessedMessage::StagedCommit(s) = alice.process_incoming(&c.commit, NOW).unwrap() else {
        panic!("commit");
    };
    alice.merge_staged_commit(s).unwrap();
    assert_eq!(alice.epoch(), last_epoch + 2);
    assert_eq!(alice.epoch_authenticator(), bob.epoch_authenticator());
    store
        .write_group(&alice.save(&custody.state_sealer().unwrap()).unwrap())
        .await
        .unwrap();
    // Clean up the token: Alice's signature key (her HPKE keys were
    // session objects of the killed processes).
    custody.destroy(&alice.signer().signature_key).unwrap();
    store.close().await;
    assert_eq!(
        token_private_keys(&custody),
        keys_before,
        "token keys left behind"
    );
}
