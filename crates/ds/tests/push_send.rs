//! Messages sent on the push connection (binary frames answered on it):
//! ordered as `POST /v1/messages` orders them, refused with the same
//! problems, nothing stored on a refusal, the connection still serving.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use hsmls::internal::codec::{ContentType, Encode, MlsMessage, MlsMessageBody, PrivateMessage};
use hsmls_custody::SoftwareCustody;
use hsmls_ds::api::{GroupMode, ServerFrame};
use hsmls_ds::client::ClientError;

fn private(group_id: &[u8], epoch: u64, content_type: ContentType) -> Vec<u8> {
    MlsMessage {
        body: MlsMessageBody::PrivateMessage(PrivateMessage {
            group_id: group_id.to_vec(),
            epoch,
            content_type,
            authenticated_data: vec![],
            encrypted_sender_data: vec![7; 16],
            ciphertext: vec![9; 64],
        }),
    }
    .encode()
    .unwrap()
}

fn refused(r: Result<hsmls_ds::api::Accepted, ClientError>) -> (u16, String) {
    let p = problem(r);
    (p.status, p.kind().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_on_the_push_connection_are_ordered_and_pushed() {
    let t = sqlite_ds(config()).await;
    let (mut alice, mut bob, mut carol) = three(&t.base).await;
    // Twenty sends in flight reach the DS in any order (the sending tasks
    // run on two threads), so Bob keeps the keys of up to twenty skipped
    // generations (the engine's default keeps five).
    bob.group_config.secret_tree = hsmls::SecretTreeConfig::new(1000, 20);
    let gid = form(&mut alice, &mut bob, &mut carol, GroupMode::Blind).await;
    let mut bob_push = bob.ds.push(vec![]).await.unwrap();
    let alice_push = alice.ds.push(vec![]).await.unwrap();
    let sender = alice_push.sender();

    // Twenty messages in flight at once on one connection.
    let texts: Vec<String> = (0..20).map(|i| format!("on the socket {i}")).collect();
    let bytes: Vec<Vec<u8>> = texts
        .iter()
        .map(|s| alice.group().encrypt_application(s.as_bytes()).unwrap())
        .collect();
    let sends = bytes.iter().map(|b| {
        let sender = sender.clone();
        let b = b.clone();
        tokio::spawn(async move { sender.send(&b).await })
    });
    let mut seqs = Vec::new();
    for s in sends.collect::<Vec<_>>() {
        let a = s.await.unwrap().unwrap();
        assert_eq!(a.epoch, 1);
        seqs.push(a.seq);
    }
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (2..22).collect::<Vec<u64>>(),
        "gapless after the commit"
    );

    // Bob is pushed all twenty in their order and reads each.
    let mut got = Vec::new();
    while got.len() < 20 {
        match tokio::time::timeout(Duration::from_secs(10), bob_push.next())
            .await
            .expect("pushed in time")
        {
            Some(Ok(ServerFrame::Message(m))) => got.push(m),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got.iter().map(|m| m.seq).collect::<Vec<_>>(), sorted);
    let mut read = Vec::new();
    for m in &got {
        assert_eq!(bob.handle(&m.group_id, m.seq, &m.message), "app");
        read.push(bob.received.last().unwrap().2.clone());
    }
    // Each text once; within one sender's generations, any order.
    let mut read_texts: Vec<String> = read
        .into_iter()
        .map(|r| String::from_utf8(r).unwrap())
        .collect();
    read_texts.sort();
    let mut want = texts.clone();
    want.sort();
    assert_eq!(read_texts, want);
    // Carol, who fetches, sees the same order.
    let batch = carol.ds.fetch(100).await.unwrap();
    assert_eq!(
        batch.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        sorted
    );
    assert_eq!(
        t.ds.store()
            .stored_message_count(gid.clone())
            .await
            .unwrap(),
        20
    );
    bob_push.close().await;
    alice_push.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_on_the_push_connection_store_nothing() {
    let t = sqlite_ds(config()).await;
    let (mut alice, mut bob, mut carol) = three(&t.base).await;
    let gid = form(&mut alice, &mut bob, &mut carol, GroupMode::Blind).await;
    let store = t.ds.store();
    let count = || async { store.stored_message_count(gid.clone()).await.unwrap() };
    let n0 = count().await;
    let push = alice.ds.push(vec![]).await.unwrap();
    let sender = push.sender();

    // Garbage, a commit outside a bundle, a wrong epoch, an unknown group.
    assert_eq!(
        refused(sender.send(&[0xff; 40]).await),
        (400, "malformed-message".into())
    );
    assert_eq!(
        refused(sender.send(&private(&gid, 1, ContentType::Commit)).await),
        (400, "malformed-message".into())
    );
    assert_eq!(
        refused(
            sender
                .send(&private(&gid, 9, ContentType::Application))
                .await
        ),
        (409, "wrong-epoch".into())
    );
    assert_eq!(
        refused(
            sender
                .send(&private(b"no such group", 1, ContentType::Application))
                .await
        ),
        (404, "unknown-group".into())
    );
    assert_eq!(count().await, n0, "nothing stored");

    // The connection still serves: a message, then the same bytes again.
    let m = alice.group().encrypt_application(b"fine").unwrap();
    let a = sender.send(&m).await.unwrap();
    let p = problem(sender.send(&m).await);
    assert_eq!((p.status, p.kind(), p.seq), (409, "duplicate", Some(a.seq)));
    assert_eq!(count().await, n0 + 1);

    // A client outside the group.
    let dave = Client::new(Arc::new(SoftwareCustody::new()), "dave", &t.base).await;
    let dave_push = dave.ds.push(vec![]).await.unwrap();
    assert_eq!(
        refused(
            dave_push
                .sender()
                .send(&private(&gid, 1, ContentType::Application))
                .await
        ),
        (403, "not-member".into())
    );
    assert_eq!(count().await, n0 + 1);

    // Closed: the sender's next send fails without waiting.
    push.close().await;
    assert!(matches!(
        sender.send(&m).await,
        Err(ClientError::Transport(_))
    ));
    dave_push.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_on_the_push_connection_are_rate_limited() {
    let mut cfg = config();
    cfg.rate_limit.per_second = 0.5;
    cfg.rate_limit.burst = 30.0;
    let t = sqlite_ds(cfg).await;
    let (mut alice, mut bob, mut carol) = three(&t.base).await;
    let gid = form(&mut alice, &mut bob, &mut carol, GroupMode::Blind).await;
    let push = alice.ds.push(vec![]).await.unwrap();
    let sender = push.sender();
    let mut outcomes = Vec::new();
    for i in 0..40 {
        let m = alice
            .group()
            .encrypt_application(format!("{i}").as_bytes())
            .unwrap();
        outcomes.push(sender.send(&m).await);
    }
    let limited = outcomes
        .iter()
        .filter(|r| matches!(r, Err(ClientError::Refused(p)) if p.status == 429 && p.kind() == "rate-limited"))
        .count();
    let accepted = outcomes.iter().filter(|r| r.is_ok()).count();
    // The set-up used part of the burst; whatever is left is accepted,
    // the rest refused, and only the accepted are stored.
    assert!(
        limited > 0 && accepted > 0,
        "{accepted} accepted, {limited} limited"
    );
    assert_eq!(accepted + limited, 40);
    assert_eq!(
        t.ds.store().stored_message_count(gid).await.unwrap() as usize,
        accepted
    );
    push.close().await;
}
