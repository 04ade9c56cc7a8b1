//! Two DS processes (`hsmls-ds serve`, real processes) on one PostgreSQL
//! database: claims through both processes, and a push across processes
//! (LISTEN/NOTIFY). The done-when scenario on two processes is in
//! `done_when.rs`.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hsmls_custody::{KeyCustody, SoftwareCustody};
use hsmls_ds::api::{GroupMode, ServerFrame};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_through_both_processes_never_share_a_package() {
    let db = PgDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let (ds1, ds2) = two_processes(&db, &dir, &pki().write_to(dir.path()), &basic()).await;
    let soft = || Arc::new(SoftwareCustody::new()) as Arc<dyn KeyCustody>;
    let mut bob = Client::new(soft(), "bob", &ds1.base).await;
    bob.publish(30, true).await;
    let c1 = Arc::new(Client::new(soft(), "claimer1", &ds1.base).await);
    let c2 = Arc::new(Client::new(soft(), "claimer2", &ds2.base).await);
    let mut tasks = Vec::new();
    for i in 0..60 {
        let c = if i % 2 == 0 { c1.clone() } else { c2.clone() };
        tasks.push(tokio::spawn(async move {
            c.ds.claim_key_package(b"bob").await.unwrap()
        }));
    }
    let mut seen = HashSet::new();
    let mut last_resort = 0;
    for t in tasks {
        let k = t.await.unwrap();
        if k.last_resort {
            last_resort += 1;
        } else {
            assert!(seen.insert(k.key_package), "a KeyPackage handed out twice");
        }
    }
    assert_eq!((seen.len(), last_resort), (30, 30));
    let counts = bob.ds.key_package_counts().await.unwrap();
    assert_eq!((counts.available, counts.last_resort_claims), (0, 30));
    drop((ds1, ds2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_across_processes() {
    let db = PgDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let (ds1, ds2) = two_processes(&db, &dir, &pki().write_to(dir.path()), &basic()).await;
    let soft = || Arc::new(SoftwareCustody::new()) as Arc<dyn KeyCustody>;
    let mut alice = Client::new(soft(), "alice", &ds1.base).await;
    let mut bob = Client::new(soft(), "bob", &ds2.base).await;
    bob.publish(1, false).await;
    let kb = alice.ds.claim_key_package(b"bob").await.unwrap();
    alice.create_group(GroupMode::Blind).await;
    let kb = alice.validate(&kb.key_package);
    let out = alice.group().add_members(&[kb], now()).unwrap();
    // Bob listens on the second process before the commit is sent to the
    // first: the Welcome and the messages reach him by NOTIFY.
    let mut push = bob.ds.push(vec![]).await.unwrap();
    alice.send_commit(&out, vec![]).await.unwrap();
    alice.sync().await;
    match next(&mut push).await {
        ServerFrame::Welcome(w) => bob.join(&w.welcome),
        other => panic!("{other:?}"),
    }
    let seq = alice.send_app("across").await;
    match next(&mut push).await {
        ServerFrame::Message(m) => {
            assert_eq!(m.seq, seq);
            assert_eq!(bob.handle(&m.group_id, m.seq, &m.message), "app");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(bob.received[0].2, b"across");
    push.close().await;
    drop((ds1, ds2));
}

async fn next(push: &mut hsmls_ds::client::PushStream) -> ServerFrame {
    tokio::time::timeout(Duration::from_secs(10), push.next())
        .await
        .expect("pushed across processes in time")
        .unwrap()
        .unwrap()
}
