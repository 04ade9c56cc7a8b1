//! Refusals are typed and change nothing: a wrong enrolment token (the
//! key generated for it is destroyed), operations before enrolment, a
//! second enrolment, an identity with no KeyPackage, a non-member, an
//! unknown group, a state file of another identity, a missing trust
//! anchor, a DS whose TLS certificate does not chain to the configured
//! root.

mod common;

use common::{Env, identity, token_private_keys};
use hsmls_client::{ClientError, ClientRuntime, GroupId, GroupMode};
use hsmls_credentials::api::problem;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_typed_and_change_nothing() {
    let keys_before = token_private_keys();
    let mut env = Env::start().await;
    let cfg = env.config("alice");
    let alice = ClientRuntime::open(cfg.clone()).await.unwrap();

    // A wrong token: the AS refuses, the key made for it is gone.
    let e = alice.enrol("not-a-token").await.unwrap_err();
    assert!(
        matches!(&e, ClientError::As(hsmls_credentials::client::ClientError::Problem(p)) if p.kind == problem::UNAUTHORIZED),
        "{e:?}"
    );
    assert!(!alice.is_enrolled());
    assert_eq!(token_private_keys(), keys_before + 3);
    assert!(matches!(
        alice.create_group(GroupMode::Blind).await,
        Err(ClientError::NotEnrolled)
    ));
    assert!(matches!(
        alice.replenish_key_packages().await,
        Err(ClientError::NotEnrolled)
    ));

    // Enrolled once; a second enrolment is refused.
    let token = env.as_service.issue_token(&cfg.identity).await.unwrap();
    alice.enrol(&token).await.unwrap();
    env.track(&alice);
    let token = env.as_service.issue_token(&cfg.identity).await.unwrap();
    assert!(matches!(
        alice.enrol(&token).await,
        Err(ClientError::AlreadyEnrolled(id)) if id == identity("alice")
    ));

    // Group operations that cannot be done leave the group as it was.
    let g = alice.create_group(GroupMode::Blind).await.unwrap();
    let e = alice
        .add_members(&g, &[&identity("nobody")])
        .await
        .unwrap_err();
    assert_eq!(e.ds_problem_kind(), Some("no-key-package"), "{e:?}");
    assert!(matches!(
        alice.add_members(&g, &[]).await,
        Err(ClientError::NothingToCommit)
    ));
    assert!(matches!(
        alice.remove_members(&g, &[&identity("bob")]).await,
        Err(ClientError::NotAMember { identity: id, .. }) if id == identity("bob")
    ));
    assert_eq!(alice.epoch(&g).await.unwrap(), 0);
    let other = GroupId(vec![1, 2, 3]);
    assert!(matches!(
        alice.send(&other, b"x").await,
        Err(ClientError::UnknownGroup(id)) if id == "010203"
    ));
    assert!(matches!(
        alice.members(&other).await,
        Err(ClientError::UnknownGroup(_))
    ));
    // The group still works.
    alice.send(&g, b"to myself").await.unwrap();

    // Alice's state file is not Bob's.
    let mut as_bob = cfg.clone();
    as_bob.identity = identity("bob");
    match ClientRuntime::open(as_bob).await {
        Err(ClientError::Config(m)) => assert!(m.contains("belongs to im:alice@hsmls.test"), "{m}"),
        other => panic!("{other:?}"),
    }
    // A DS root that is not the root of the DS's certificate: no
    // connection (TLS refuses it), nothing changes.
    let mut wrong_root = cfg.clone();
    wrong_root.delivery_service.root_certificate = env.dir.path().join("other-root.pem");
    std::fs::write(
        &wrong_root.delivery_service.root_certificate,
        common::ds_tls().0,
    )
    .unwrap();
    let elsewhere = ClientRuntime::open(wrong_root).await.unwrap();
    let e = elsewhere.sync().await.unwrap_err();
    assert!(matches!(&e, ClientError::DsTransport(_)), "{e:?}");
    assert_eq!(
        elsewhere.cursor(&g).await.unwrap(),
        alice.cursor(&g).await.unwrap()
    );
    drop(elsewhere);
    alice.sync().await.unwrap();
    // A trust anchor that is not there.
    let mut bad = env.config("carol");
    bad.authentication_service.root_certificate = "/nonexistent/root.pem".into();
    match ClientRuntime::open(bad).await {
        Err(ClientError::Config(m)) => assert!(m.contains("/nonexistent/root.pem"), "{m}"),
        other => panic!("{other:?}"),
    }
    env.stop().await;
    assert_eq!(token_private_keys(), keys_before);
}
