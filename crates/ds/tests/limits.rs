//! Limits and bad input: each refusal has its status and problem type,
//! stores nothing, and the server keeps serving.

mod common;

use std::sync::Arc;

use common::*;
use hsmls::KeyPackageConfig;
use hsmls::internal::codec::{ContentType, Encode, MlsMessage, MlsMessageBody, PrivateMessage};
use hsmls_custody::SoftwareCustody;
use hsmls_ds::api::{Challenge, CommitBundle, GroupMode, SessionRequest, b64};

fn private(group_id: &[u8], epoch: u64, content_type: ContentType, len: usize) -> Vec<u8> {
    MlsMessage {
        body: MlsMessageBody::PrivateMessage(PrivateMessage {
            group_id: group_id.to_vec(),
            epoch,
            content_type,
            authenticated_data: vec![],
            encrypted_sender_data: vec![7; 16],
            ciphertext: vec![9; len],
        }),
    }
    .encode()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_nothing_is_stored() {
    let mut cfg = config();
    cfg.max_body = 16 * 1024;
    let t = sqlite_ds(cfg).await;
    let (mut alice, mut bob, mut carol) = three(&t.base).await;
    let gid = form(&mut alice, &mut bob, &mut carol, GroupMode::Blind).await;
    let store = t.ds.store();
    let count = || async { store.stored_message_count(gid.clone()).await.unwrap() };
    let epoch = || async { store.group(gid.clone()).await.unwrap().unwrap().epoch };
    let (n0, e0) = (count().await, epoch().await);

    // Body size.
    let big = private(&gid, 1, ContentType::Application, 20 * 1024);
    let p = problem(alice.ds.send_message(&big).await);
    assert_eq!((p.status, p.kind()), (413, "payload-too-large"));

    // Malformed: garbage, a Welcome, a KeyPackage, a commit outside a
    // bundle, the wrong media type, bad JSON, bad base64.
    for bytes in [vec![0xff; 40], vec![], vec![0, 1, 0, 3, 0]] {
        let p = problem(alice.ds.send_message(&bytes).await);
        assert_eq!((p.status, p.kind()), (400, "malformed-message"));
    }
    let kp = alice.bundles.values().next().unwrap().to_bytes().unwrap();
    let p = problem(alice.ds.send_message(&kp).await);
    assert_eq!((p.status, p.kind()), (400, "malformed-message"));
    let commit = private(&gid, 1, ContentType::Commit, 64);
    let p = problem(alice.ds.send_message(&commit).await);
    assert_eq!((p.status, p.kind()), (400, "malformed-message"));
    let app = private(&gid, 1, ContentType::Application, 64);
    let p = problem(
        alice
            .ds
            .send_raw("POST", "/v1/messages", "application/json", app.clone())
            .await,
    );
    assert_eq!((p.status, p.kind()), (400, "malformed-request"));
    let p = problem(
        alice
            .ds
            .send_raw(
                "POST",
                "/v1/commit-bundles",
                "application/json",
                b"{\"commit\": 5}".to_vec(),
            )
            .await,
    );
    assert_eq!((p.status, p.kind()), (400, "malformed-request"));
    let p = problem(
        alice
            .ds
            .send_raw(
                "POST",
                "/v1/commit-bundles",
                "application/json",
                b"{\"commit\": \"**\"}".to_vec(),
            )
            .await,
    );
    assert_eq!((p.status, p.kind()), (400, "malformed-request"));
    let p = problem(
        alice
            .ds
            .send_commit(&CommitBundle {
                commit: app.clone(),
                ..Default::default()
            })
            .await,
    );
    assert_eq!((p.status, p.kind()), (400, "malformed-message"));

    // Unknown group.
    let p = problem(
        alice
            .ds
            .send_message(&private(b"nowhere", 0, ContentType::Application, 8))
            .await,
    );
    assert_eq!((p.status, p.kind()), (404, "unknown-group"));
    let p = problem(
        alice
            .ds
            .send_commit(&CommitBundle {
                commit: private(b"nowhere", 0, ContentType::Commit, 8),
                ..Default::default()
            })
            .await,
    );
    assert_eq!((p.status, p.kind()), (404, "unknown-group"));

    // Replay of an accepted message: refused, pointing at the original.
    let msg = alice.group().encrypt_application(b"once").unwrap();
    let first = alice.ds.send_message(&msg).await.unwrap();
    let p = problem(alice.ds.send_message(&msg).await);
    assert_eq!(
        (p.status, p.kind(), p.seq),
        (409, "duplicate", Some(first.seq))
    );
    let n1 = count().await;
    assert_eq!(n1, n0 + 1);

    // Non-members post neither messages nor commits.
    let mut dave = Client::new(Arc::new(SoftwareCustody::new()), "dave", &t.base).await;
    let p = problem(
        dave.ds
            .send_message(&private(&gid, 1, ContentType::Application, 8))
            .await,
    );
    assert_eq!((p.status, p.kind()), (403, "not-member"));
    let p = problem(
        dave.ds
            .send_commit(&CommitBundle {
                commit: private(&gid, 1, ContentType::Commit, 8),
                ..Default::default()
            })
            .await,
    );
    assert_eq!((p.status, p.kind()), (403, "not-member"));

    // Wrong epochs: a future one, and one past the window (2 epochs).
    let p = problem(
        alice
            .ds
            .send_message(&private(&gid, 2, ContentType::Application, 8))
            .await,
    );
    assert_eq!(
        (p.status, p.kind(), p.current_epoch),
        (409, "wrong-epoch", Some(1))
    );
    for _ in 0..3 {
        let out = alice.group().self_update(now()).unwrap();
        alice.send_commit(&out, vec![]).await.unwrap();
        alice.sync().await;
    }
    let n2 = count().await;
    let old = private(&gid, 1, ContentType::Application, 12);
    let p = problem(alice.ds.send_message(&old).await);
    assert_eq!(
        (p.status, p.kind(), p.current_epoch),
        (409, "wrong-epoch", Some(4))
    );
    let old_proposal = private(&gid, 3, ContentType::Proposal, 12);
    let p = problem(alice.ds.send_message(&old_proposal).await);
    assert_eq!((p.status, p.kind()), (409, "wrong-epoch"));
    assert_eq!(count().await, n2);

    // A Welcome whose commit lost: neither is stored, nobody is added.
    dave.publish(1, false).await;
    let kd = bob.ds.claim_key_package(b"dave").await.unwrap();
    bob.sync().await;
    let stale = bob.group().epoch();
    let winner = alice.group().self_update(now()).unwrap();
    alice.send_commit(&winner, vec![]).await.unwrap();
    let kd = bob.validate(&kd.key_package);
    let loser = bob.group().add_members(&[kd], now()).unwrap();
    let p = problem(bob.send_commit(&loser, vec![]).await);
    assert_eq!(
        (p.status, p.kind(), p.current_epoch),
        (409, "stale-commit", Some(stale + 1))
    );
    assert!(dave.ds.fetch(10).await.unwrap().welcomes.is_empty());
    assert!(!store.is_member(gid.clone(), queue(&dave)).await.unwrap());
    bob.group().discard_pending_commit().unwrap();
    // A Welcome naming a KeyPackage the DS never handed out.
    bob.sync().await;
    let fake = dave
        .mls()
        .generate_key_package(&KeyPackageConfig::new(now() - 5, 3600))
        .unwrap()
        .to_bytes()
        .unwrap();
    let fake = bob.validate(&fake);
    let out = bob.group().add_members(&[fake], now()).unwrap();
    let p = problem(bob.send_commit(&out, vec![]).await);
    assert_eq!((p.status, p.kind()), (422, "unknown-key-package-ref"));
    bob.group().discard_pending_commit().unwrap();
    let e = epoch().await;
    assert_eq!(e, e0 + 4);

    // Still serving.
    alice.sync().await;
    bob.sync().await;
    carol.sync().await;
    alice.send_app("still here").await;
    assert_eq!(bob.sync().await, vec!["app"]);
    assert_agree(&mut [&mut alice, &mut bob, &mut carol]);
}

fn queue(c: &Client) -> [u8; 16] {
    c.ds.session().unwrap().queue_id.try_into().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_package_publication_rules() {
    let t = sqlite_ds(config()).await;
    let alice = Client::new(Arc::new(SoftwareCustody::new()), "alice", &t.base).await;
    let bob = Client::new(Arc::new(SoftwareCustody::new()), "bob", &t.base).await;
    // Bob's KeyPackage published by Alice.
    let bobs = bob
        .mls()
        .generate_key_package(&KeyPackageConfig::new(now() - 5, 3600))
        .unwrap()
        .to_bytes()
        .unwrap();
    let p = problem(alice.ds.publish_key_packages(vec![bobs]).await);
    assert_eq!((p.status, p.kind()), (403, "identity-mismatch"));
    // Expired, not yet valid, garbage.
    for cfg in [
        KeyPackageConfig::new(now() - 7200, 3600),
        KeyPackageConfig::new(now() + 3600, 3600),
    ] {
        let kp = alice
            .mls()
            .generate_key_package(&cfg)
            .unwrap()
            .to_bytes()
            .unwrap();
        let p = problem(alice.ds.publish_key_packages(vec![kp]).await);
        assert_eq!((p.status, p.kind()), (422, "invalid-key-package"));
    }
    let p = problem(
        alice
            .ds
            .publish_key_packages(vec![vec![0, 1, 0, 5, 1]])
            .await,
    );
    assert_eq!((p.status, p.kind()), (422, "invalid-key-package"));
    // An altered signature.
    let mut kp = alice
        .mls()
        .generate_key_package(&KeyPackageConfig::new(now() - 5, 3600))
        .unwrap()
        .to_bytes()
        .unwrap();
    let last = kp.len() - 1;
    kp[last] ^= 1;
    let p = problem(alice.ds.publish_key_packages(vec![kp]).await);
    assert_eq!((p.status, p.kind()), (422, "invalid-key-package"));
    // Batch size.
    let p = problem(alice.ds.publish_key_packages(vec![]).await);
    assert_eq!((p.status, p.kind()), (400, "malformed-request"));
    // One bad package refuses the batch: nothing stored.
    let good = alice
        .mls()
        .generate_key_package(&KeyPackageConfig::new(now() - 5, 3600))
        .unwrap()
        .to_bytes()
        .unwrap();
    let p = problem(
        alice
            .ds
            .publish_key_packages(vec![good.clone(), vec![1, 2, 3]])
            .await,
    );
    assert_eq!(p.kind(), "invalid-key-package");
    assert_eq!(alice.ds.key_package_counts().await.unwrap().available, 0);
    assert_eq!(
        alice
            .ds
            .publish_key_packages(vec![good])
            .await
            .unwrap()
            .available,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_rules() {
    let t = sqlite_ds(config()).await;
    let alice = Client::new(Arc::new(SoftwareCustody::new()), "alice", &t.base).await;
    let bob = Client::new(Arc::new(SoftwareCustody::new()), "bob", &t.base).await;
    // No session, a forged session, another client's queue.
    let anon = ds_client(&t.base);
    let p = problem(
        anon.send_raw("GET", "/v1/key-packages", "application/json", vec![])
            .await,
    );
    assert_eq!((p.status, p.kind()), (401, "unauthenticated"));
    let mut forged = alice.ds.session().unwrap();
    forged.queue_id = bob.ds.session().unwrap().queue_id;
    let mut raw = b64::decode(&forged.token).unwrap();
    raw[..16].copy_from_slice(&forged.queue_id);
    forged.token = b64::encode(&raw);
    let mallory = ds_client(&t.base);
    mallory.set_session(forged);
    let p = problem(mallory.fetch(10).await);
    assert_eq!((p.status, p.kind()), (401, "unauthenticated"));
    let path = format!(
        "/v1/queues/{}/messages",
        b64::encode(&bob.ds.session().unwrap().queue_id)
    );
    let p = problem(
        alice
            .ds
            .send_raw("GET", &path, "application/json", vec![])
            .await,
    );
    assert_eq!((p.status, p.kind()), (403, "not-own-queue"));

    // Challenges: signed by another key than the credential's, replayed,
    // altered, or for another DS.
    let challenge = || async {
        let b = anon
            .send_raw("POST", "/v1/auth/challenge", "application/json", vec![])
            .await
            .unwrap();
        serde_json::from_slice::<Challenge>(&b).unwrap()
    };
    let sign = |c: &hsmls::Signer, ch: &Challenge| {
        let cs = hsmls_crypto::CipherSuite(0x0002).provider().unwrap();
        cs.sign_with_label(
            c.custody.as_ref(),
            &c.signature_key,
            hsmls_ds::api::AUTH_LABEL,
            &ch.to_be_signed(),
        )
        .unwrap()
    };
    let session = |ch: Challenge, cred_of: &hsmls::Signer, signer: &hsmls::Signer| SessionRequest {
        signature: sign(signer, &ch),
        challenge: ch,
        credential: cred_of.credential.encode().unwrap(),
        signature_key: cred_of.signature_public_key().0,
        cipher_suite: 0x0002,
    };
    let post = |req: SessionRequest| {
        let anon = &anon;
        async move {
            anon.send_raw(
                "POST",
                "/v1/auth/session",
                "application/json",
                serde_json::to_vec(&req).unwrap(),
            )
            .await
        }
    };
    let p = problem(post(session(challenge().await, &alice.signer, &bob.signer)).await);
    assert_eq!((p.status, p.kind()), (401, "authentication-failed"));
    let ok = session(challenge().await, &alice.signer, &alice.signer);
    post(ok.clone()).await.unwrap();
    let p = problem(post(ok).await);
    assert_eq!(
        (p.status, p.kind(), p.title.as_str()),
        (
            401,
            "authentication-failed",
            "authentication failed: challenge already used"
        )
    );
    let mut ch = challenge().await;
    ch.ds_identity = "another.ds".into();
    let p = problem(post(session(ch, &alice.signer, &alice.signer)).await);
    assert_eq!((p.status, p.kind()), (401, "authentication-failed"));
    let mut req = session(challenge().await, &alice.signer, &alice.signer);
    req.credential = vec![0, 1, 0];
    let p = problem(post(req).await);
    assert_eq!((p.status, p.kind()), (401, "authentication-failed"));
    let p = problem(
        anon.send_raw(
            "POST",
            "/v1/auth/session",
            "application/json",
            b"[]".to_vec(),
        )
        .await,
    );
    assert_eq!((p.status, p.kind()), (400, "malformed-request"));
    // The same client gets the same queue in every session.
    let again = ds_client(&t.base);
    let s = again.authenticate(&alice.signer).await.unwrap();
    assert_eq!(s.queue_id, alice.ds.session().unwrap().queue_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_per_client() {
    let mut cfg = config();
    cfg.rate_limit.per_second = 0.5;
    cfg.rate_limit.burst = 5.0;
    let t = sqlite_ds(cfg).await;
    let alice = Client::new(Arc::new(SoftwareCustody::new()), "alice", &t.base).await;
    let bob = Client::new(Arc::new(SoftwareCustody::new()), "bob", &t.base).await;
    for _ in 0..5 {
        alice.ds.key_package_counts().await.unwrap();
    }
    let p = problem(alice.ds.key_package_counts().await);
    assert_eq!((p.status, p.kind()), (429, "rate-limited"));
    // Another client is not limited by Alice's requests.
    bob.ds.key_package_counts().await.unwrap();
}
