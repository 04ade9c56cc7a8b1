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
    let gid = form(&mut alice, &mut bob, &mut carol, GroupMode::Blind).await;
    let mut bob_push = bob.ds.push(vec![]).await.unwrap();
    let alice_push = alice.ds.push(vec![]).await.unwrap();
    let sender = alice_push.sender();

    // Twenty messages in flight at once on one connection, ordered as
    // sent (their generations in order: receivers need no out-of-order
    // tolerance).
    let texts: Vec<String> = (0..20).map(|i| format!("on the socket {i}")).collect();
    let bytes: Vec<Vec<u8>> = texts
        .iter()
        .map(|s| alice.group().encrypt_application(s.as_bytes()).unwrap())
        .collect();
    let answers = futures_util::future::join_all(bytes.iter().map(|b| sender.send(b))).await;
    let seqs: Vec<u64> = answers
        .into_iter()
        .map(|a| {
            let a = a.unwrap();
            assert_eq!(a.epoch, 1);
            a.seq
        })
        .collect();
    let sorted: Vec<u64> = (2..22).collect();
    assert_eq!(seqs, sorted, "gapless after the commit, in the order sent");

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
    for (m, text) in got.iter().zip(&texts) {
        assert_eq!(bob.handle(&m.group_id, m.seq, &m.message), "app");
        assert_eq!(bob.received.last().unwrap().2, text.as_bytes());
    }
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

/// The load generator on PostgreSQL, sending on the push connections
/// while every member acknowledges on its own: every message accepted
/// and delivered to every member in one order. (A send used to run only
/// when its connection's loop polled it; with PostgreSQL it held the
/// group's row lock while that loop waited on the store for an
/// acknowledgement: the connections stalled and the run failed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_on_postgres_sends_on_the_push_connections() {
    use hsmls_ds::loadgen::{LoadConfig, SendTransport, run, setup_group};
    use hsmls_ds::store::PostgresStore;
    let db = PgDb::create().await;
    let store = PostgresStore::connect(&db.url, 4).await.unwrap();
    let t = serve_store(store, hsmls_ds::fanout::Hub::new(), config()).await;
    let tls = hsmls_ds::client::tls_client_config(pki().root_pem.as_bytes()).unwrap();
    let group = setup_group(std::slice::from_ref(&t.base), tls, 6, "pg")
        .await
        .unwrap();
    let mut c = LoadConfig::default();
    c.rate = 400.0;
    c.duration = Duration::from_millis(750);
    c.senders = 4;
    c.drain = Duration::from_secs(20);
    c.transport = SendTransport::WebSocket;
    let report = run(&group, &c).await.unwrap();
    assert_eq!(report.failed, 0, "{report}");
    assert_eq!(report.accepted, report.sent, "{report}");
    assert!(report.sent >= 250, "{report}");
    assert_eq!(report.deliveries, report.expected_deliveries, "{report}");
    assert_eq!(report.order_violations, 0, "{report}");
    drop(t);
}
