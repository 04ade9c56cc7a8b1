//! A group through the DS (blind mode, SQLite): KeyPackages published and
//! claimed, the group formed by a commit and a Welcome, messages in one
//! order for everyone, a member offline for several commits catching up,
//! a commit race with one winner, a retried commit, live push.

mod common;

use common::*;
use hsmls_ds::api::{Ack, GroupMode, GroupPosition, ServerFrame};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_through_the_ds() {
    let t = sqlite_ds(config()).await;
    let (mut alice, mut bob, mut carol) = three(&t.base).await;
    let gid = form(&mut alice, &mut bob, &mut carol, GroupMode::Blind).await;

    // Messages: one order for everyone, each gets its own back.
    alice.send_app("hello from alice").await;
    bob.send_app("hello from bob").await;
    carol.send_app("hello from carol").await;
    for c in [&mut alice, &mut bob, &mut carol] {
        let ev = c.sync().await;
        assert_eq!(ev.iter().filter(|e| *e == "app").count(), 2, "{}", c.name);
        assert_eq!(ev.iter().filter(|e| *e == "own").count(), 1, "{}", c.name);
    }
    let texts = |c: &Client| -> Vec<Vec<u8>> { c.received.iter().map(|r| r.2.clone()).collect() };
    assert_eq!(
        texts(&alice),
        vec![b"hello from bob".to_vec(), b"hello from carol".to_vec()]
    );
    assert_eq!(
        texts(&bob),
        vec![b"hello from alice".to_vec(), b"hello from carol".to_vec()]
    );

    // Carol goes offline for several commits and messages.
    for i in 0..3 {
        let out = if i % 2 == 0 {
            alice.group().self_update(now()).unwrap()
        } else {
            bob.group().self_update(now()).unwrap()
        };
        let committer = if i % 2 == 0 { &mut alice } else { &mut bob };
        committer.send_commit(&out, vec![]).await.unwrap();
        alice.sync().await;
        bob.sync().await;
        alice.send_app(&format!("while carol is away {i}")).await;
        bob.sync().await;
        alice.sync().await;
    }
    assert_eq!(alice.group().epoch(), 4);
    // Every message of the group is still stored once, for Carol.
    let stored =
        t.ds.store()
            .stored_message_count(gid.clone())
            .await
            .unwrap();
    assert_eq!(
        stored, 6,
        "3 commits and 3 messages wait for carol, once each"
    );
    let ev = carol.sync().await;
    assert_eq!(ev, vec!["commit", "app", "commit", "app", "commit", "app"]);
    assert_agree(&mut [&mut alice, &mut bob, &mut carol]);
    // All acknowledged: nothing is kept.
    assert_eq!(
        t.ds.store()
            .stored_message_count(gid.clone())
            .await
            .unwrap(),
        0
    );

    // A commit race: Alice and Bob commit for the same epoch.
    let oa = alice.group().self_update(now()).unwrap();
    let ob = bob.group().self_update(now()).unwrap();
    let won = alice.send_commit(&oa, vec![]).await.unwrap();
    let p = problem(bob.send_commit(&ob, vec![]).await);
    assert_eq!(p.kind(), "stale-commit");
    assert_eq!(p.status, 409);
    assert_eq!(p.current_epoch, Some(5));
    // The winner's retry (its answer was lost) succeeds again, once.
    let again = alice.send_commit(&oa, vec![]).await.unwrap();
    assert_eq!(again, won);
    assert_eq!(alice.sync().await, vec!["own-commit"]);
    assert_eq!(bob.sync().await, vec!["commit-lost"]);
    assert_eq!(carol.sync().await, vec!["commit"]);
    assert_agree(&mut [&mut alice, &mut bob, &mut carol]);

    // Bob removes Carol (declaring the routing change); she still gets
    // the commit that removes her, then nothing more.
    let carol_leaf = carol.group().own_leaf_index();
    let out = bob.group().remove_members(&[carol_leaf], now()).unwrap();
    bob.send_commit(&out, vec![b"carol".to_vec()])
        .await
        .unwrap();
    bob.sync().await;
    alice.sync().await;
    assert_eq!(carol.sync().await, vec!["commit"]);
    assert!(!carol.group().is_active());
    alice.send_app("carol is gone").await;
    assert_eq!(carol.sync().await, Vec::<String>::new());
    let stale = carol_stale_message(&mut carol);
    let p = problem(carol.ds.send_message(&stale).await);
    assert_eq!(p.kind(), "not-member");
    bob.sync().await;
    alice.sync().await;
    assert_agree(&mut [&mut alice, &mut bob]);
}

/// Some bytes carol would send (her group is closed: a fake framing of
/// the group with her last epoch).
fn carol_stale_message(carol: &mut Client) -> Vec<u8> {
    use hsmls::internal::codec::{ContentType, Encode, MlsMessage, MlsMessageBody, PrivateMessage};
    let g = carol.group();
    MlsMessage {
        body: MlsMessageBody::PrivateMessage(PrivateMessage {
            group_id: g.group_id().to_vec(),
            epoch: g.epoch() + 1,
            content_type: ContentType::Application,
            authenticated_data: vec![],
            encrypted_sender_data: vec![0; 8],
            ciphertext: vec![0; 32],
        }),
    }
    .encode()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_packages_once_then_last_resort() {
    let t = sqlite_ds(config()).await;
    let (alice, mut bob, _carol) = three(&t.base).await;
    let counts = bob.ds.key_package_counts().await.unwrap();
    assert_eq!(
        (
            counts.available,
            counts.last_resort,
            counts.last_resort_claims
        ),
        (2, 1, 0)
    );
    let k1 = alice.ds.claim_key_package(b"bob").await.unwrap();
    let k2 = alice.ds.claim_key_package(b"bob").await.unwrap();
    assert_ne!(k1.key_package, k2.key_package);
    assert!(!k1.last_resort && !k2.last_resort);
    let l1 = alice.ds.claim_key_package(b"bob").await.unwrap();
    let l2 = alice.ds.claim_key_package(b"bob").await.unwrap();
    assert!(l1.last_resort && l2.last_resort);
    assert_eq!(l1.key_package, l2.key_package);
    let counts = bob.ds.key_package_counts().await.unwrap();
    assert_eq!(
        (
            counts.available,
            counts.last_resort,
            counts.last_resort_claims
        ),
        (0, 1, 2)
    );
    // Replenishing resets the count of last-resort claims.
    bob.publish(1, false).await;
    let counts = bob.ds.key_package_counts().await.unwrap();
    assert_eq!((counts.available, counts.last_resort_claims), (1, 0));
    // Unknown clients have nothing.
    let p = problem(alice.ds.claim_key_package(b"nobody").await);
    assert_eq!((p.status, p.kind()), (404, "no-key-package"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_push_resumes_from_a_sequence_number() {
    let t = sqlite_ds(config()).await;
    let (mut alice, mut bob, mut carol) = three(&t.base).await;
    let gid = form(&mut alice, &mut bob, &mut carol, GroupMode::Blind).await;
    let mut push = bob.ds.push(vec![]).await.unwrap();
    let s1 = alice.send_app("one").await;
    let s2 = alice.send_app("two").await;
    let mut got = Vec::new();
    while got.len() < 2 {
        match tokio::time::timeout(std::time::Duration::from_secs(10), push.next())
            .await
            .expect("pushed in time")
        {
            Some(Ok(ServerFrame::Message(m))) => got.push(m),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![s1, s2]);
    for m in &got {
        assert_eq!(bob.handle(&m.group_id, m.seq, &m.message), "app");
    }
    // Acknowledge only the first, reconnect resuming after the second: the
    // third arrives, not the second again.
    push.ack(Ack {
        messages: vec![GroupPosition {
            group_id: gid.clone(),
            seq: s1,
        }],
        welcomes: vec![],
    })
    .await
    .unwrap();
    push.close().await;
    let s3 = alice.send_app("three").await;
    let mut push = bob
        .ds
        .push(vec![GroupPosition {
            group_id: gid.clone(),
            seq: s2,
        }])
        .await
        .unwrap();
    match tokio::time::timeout(std::time::Duration::from_secs(10), push.next())
        .await
        .unwrap()
    {
        Some(Ok(ServerFrame::Message(m))) => assert_eq!(m.seq, s3),
        other => panic!("unexpected {other:?}"),
    }
    push.close().await;
    // A fetch (no position given) starts from the acknowledged cursor.
    let batch = bob.ds.fetch(100).await.unwrap();
    assert_eq!(
        batch.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![s2, s3]
    );
}
