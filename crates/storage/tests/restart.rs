//! A member whose keys live in the SoftHSM token restarts, twice: each time
//! a new process opens the same token and the same SQLite store, loads the
//! group and goes on — reads the others' messages (one of a past epoch),
//! merges their commits, sends, commits — and every member agrees on the
//! epoch authenticator. Alice lives only in child processes (this test
//! binary re-executed with a role); Bob and Carol live in the parent.
//! Messages go between the processes through files.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use hsmls::{
    Group, GroupConfig, JoinOptions, KeyPackageBundle, KeyPackageConfig, ProcessedMessage,
};
use hsmls_custody::KeyCustody;
use hsmls_storage::{GroupStateStorage, SqliteStorage};

const TEST: &str = "a_member_restarts_on_softhsm_and_the_group_goes_on";

fn app(g: &mut Group, msg: &[u8], expected: &[u8]) {
    match g.process_incoming(msg, NOW).unwrap() {
        ProcessedMessage::ApplicationMessage { data, .. } => assert_eq!(data, expected),
        other => panic!("expected application data, got {other:?}"),
    }
}

fn merge(g: &mut Group, commit: &[u8]) {
    let ProcessedMessage::StagedCommit(s) = g.process_incoming(commit, NOW).unwrap() else {
        panic!("expected a commit");
    };
    g.merge_staged_commit(s).unwrap();
}

/// Alice's process: a fresh custody on the token, the store, the group.
async fn alice_process(role: &str, dir: &Path) {
    let custody = pkcs11_custody();
    let sealer = custody.state_sealer().unwrap();
    let store = SqliteStorage::open(dir.join("alice.db")).await.unwrap();
    let custody_dyn: Arc<dyn KeyCustody> = custody.clone();
    let mut group = if role == "create" {
        let alice = signer(custody_dyn, "alice");
        let mut g = Group::create(
            GroupConfig::default(),
            alice,
            validator(),
            hsmls::group::random_group_id(),
            Vec::new(),
            NOW,
        )
        .unwrap();
        let (bob, carol) = (get(dir, "bob.kp"), get(dir, "carol.kp"));
        let out = g.add_members(&[&bob, &carol], NOW).unwrap();
        g.merge_pending_commit().unwrap();
        put(dir, "welcome", &out.welcome.unwrap());
        g
    } else {
        let groups = store.list_groups().await.unwrap();
        assert_eq!(groups.len(), 1, "one stored group");
        let saved = store.read_group(&groups[0]).await.unwrap().unwrap();
        Group::load(
            &sealer,
            custody_dyn,
            validator(),
            &groups[0],
            &saved.state,
            &saved.epoch_records,
        )
        .unwrap()
    };
    match role {
        "create" => {}
        "continue" => {
            // Bob's message of epoch 1, Bob's commit, Carol's message of
            // epoch 2; then Alice sends and commits.
            app(&mut group, &get(dir, "m1"), b"bob in epoch 1");
            merge(&mut group, &get(dir, "c1"));
            app(&mut group, &get(dir, "m2"), b"carol in epoch 2");
            put(
                dir,
                "m3",
                &group.encrypt_application(b"alice after a restart").unwrap(),
            );
            let out = group.self_update(NOW).unwrap();
            group.merge_pending_commit().unwrap();
            put(dir, "c2", &out.commit);
        }
        "finish" => {
            // A message of epoch 2 that arrives after two commits (the
            // window keeps it), then Carol's commit.
            app(&mut group, &get(dir, "late"), b"bob late, epoch 2");
            merge(&mut group, &get(dir, "c3"));
            put(
                dir,
                "export",
                group.export_secret(b"restart", b"", 32).unwrap().as_bytes(),
            );
        }
        other => panic!("unknown role {other}"),
    }
    put(dir, "alice.auth", group.epoch_authenticator());
    put(dir, "alice.epoch", &group.epoch().to_be_bytes());
    store
        .write_group(&group.save(&sealer).unwrap())
        .await
        .unwrap();
    if role == "finish" {
        // Alice leaves the machine: her token keys go, and her state.
        assert!(store.delete_group(group.group_id()).await.unwrap());
        custody.destroy(&group.signer().signature_key).unwrap();
        custody.destroy(group.own_leaf_key()).unwrap();
    }
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_restarts_on_softhsm_and_the_group_goes_on() {
    if let Some((role, dir)) = child_role() {
        return alice_process(&role, &dir).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let custody = pkcs11_custody();
    let keys_before = token_private_keys(&custody);
    let c: Arc<dyn KeyCustody> = custody.clone();
    let (bob_signer, carol_signer) = (signer(c.clone(), "bob"), signer(c.clone(), "carol"));
    let config = KeyPackageConfig::new(NOW - 10, 3600);
    let bob_kp = KeyPackageBundle::generate(&config, &bob_signer).unwrap();
    let carol_kp = KeyPackageBundle::generate(&config, &carol_signer).unwrap();
    put(d, "bob.kp", &bob_kp.to_bytes().unwrap());
    put(d, "carol.kp", &carol_kp.to_bytes().unwrap());

    run_child(TEST, "create", d);
    let join = |s: &hsmls::Signer, kp: &KeyPackageBundle| {
        Group::join_from_welcome(
            GroupConfig::default(),
            s.clone(),
            validator(),
            kp,
            &get(d, "welcome"),
            JoinOptions::default(),
        )
        .unwrap()
    };
    let mut bob = join(&bob_signer, &bob_kp);
    let mut carol = join(&carol_signer, &carol_kp);
    assert_eq!(bob.epoch_authenticator(), get(d, "alice.auth"));
    assert_eq!(carol.epoch_authenticator(), bob.epoch_authenticator());

    // While Alice is down: a message of epoch 1, a commit, a message of
    // epoch 2.
    put(
        d,
        "m1",
        &bob.encrypt_application(b"bob in epoch 1").unwrap(),
    );
    let c1 = bob.self_update(NOW).unwrap();
    bob.merge_pending_commit().unwrap();
    merge(&mut carol, &c1.commit);
    put(d, "c1", &c1.commit);
    put(
        d,
        "m2",
        &carol.encrypt_application(b"carol in epoch 2").unwrap(),
    );
    let late = bob.encrypt_application(b"bob late, epoch 2").unwrap();

    run_child(TEST, "continue", d);
    app(&mut bob, &get(d, "m3"), b"alice after a restart");
    app(&mut carol, &get(d, "m3"), b"alice after a restart");
    merge(&mut bob, &get(d, "c2"));
    merge(&mut carol, &get(d, "c2"));
    assert_eq!(get(d, "alice.epoch"), 3u64.to_be_bytes());
    for g in [&bob, &carol] {
        assert_eq!(g.epoch(), 3);
        assert_eq!(g.epoch_authenticator(), get(d, "alice.auth"));
    }

    let c3 = carol.self_update(NOW).unwrap();
    carol.merge_pending_commit().unwrap();
    merge(&mut bob, &c3.commit);
    put(d, "c3", &c3.commit);
    put(d, "late", &late);
    run_child(TEST, "finish", d);
    for g in [&bob, &carol] {
        assert_eq!(g.epoch(), 4);
        assert_eq!(g.epoch_authenticator(), get(d, "alice.auth"));
        assert_eq!(
            g.export_secret(b"restart", b"", 32).unwrap().as_bytes(),
            get(d, "export")
        );
    }
    for s in [&bob_signer, &carol_signer] {
        custody.destroy(&s.signature_key).unwrap();
    }
    assert_eq!(
        token_private_keys(&custody),
        keys_before,
        "token keys left behind"
    );
}
