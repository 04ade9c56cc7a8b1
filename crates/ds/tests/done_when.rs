//! The "done when": three clients with their signature keys in
//! SoftHSM enrol at the Authentication Service (its CA keys in the token,
//! over HTTPS on loopback), publish KeyPackages with their x509
//! credentials, form a group through the DS, exchange messages; one is
//! offline for several commits and catches up; commits race through two
//! DS processes on one PostgreSQL database; every member ends in the same
//! epoch with the same epoch_authenticator. The DS processes check the
//! credentials with the AS's validator (root and CRL fetched from the AS)
//! and serve TLS with a certificate the AS issued; the clients trust the
//! AS root for both.

#[path = "common/as_.rs"]
mod as_;
mod common;

use std::sync::Arc;

use as_::{TestAs, softhsm};
use common::*;
use hsmls::{CommitOptions, CredentialValidator, Signer};
use hsmls_custody::KeyCustody;
use hsmls_ds::api::GroupMode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_enrolled_softhsm_clients_through_two_ds_processes() {
    let token = softhsm();
    let as_ = TestAs::start(token.clone()).await;
    let root = as_.root_der();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("as-root.der"), &root).unwrap();
    let db = PgDb::create().await;
    let credentials = vec![
        "--as-root".to_string(),
        dir.path().join("as-root.der").display().to_string(),
        "--as-url".to_string(),
        as_.url.clone(),
    ];
    let tls = as_.ds_tls(dir.path());
    let (ds1, ds2) = two_processes(&db, &dir, &tls, &credentials).await;
    let root_pem = as_.root_pem();

    // Every member validates with the AS root and its CRL.
    let validator = || async { as_.validator().await as Arc<dyn CredentialValidator> };
    let custody = token.clone() as Arc<dyn KeyCustody>;
    let (sa, sb, sc) = (
        as_.enrol(&custody, "alice").await.signer,
        as_.enrol(&custody, "bob").await.signer,
        as_.enrol(&custody, "carol").await.signer,
    );
    // Alice and Carol use the first DS process, Bob the second.
    let roots = root_pem.as_bytes();
    let mut alice = Client::with_signer(sa, "alice", &ds1.base, validator().await, roots).await;
    let mut bob = Client::with_signer(sb, "bob", &ds2.base, validator().await, roots).await;
    let mut carol = Client::with_signer(sc, "carol", &ds1.base, validator().await, roots).await;
    bob.publish(2, true).await;
    carol.publish(2, true).await;
    // A basic credential is refused by these DS processes.
    let stranger = hsmls_ds::DsClient::new(&ds1.base, roots).unwrap();
    let basic = Signer::generate(
        Arc::new(hsmls_custody::SoftwareCustody::new()),
        hsmls::wire::Credential::Basic(b"mallory".to_vec()),
    )
    .unwrap();
    let p = problem(stranger.authenticate(&basic).await);
    assert_eq!((p.status, p.kind()), (401, "authentication-failed"));

    // The group, formed through the DS: KeyPackages claimed by identity.
    let kb = alice
        .ds
        .claim_key_package(b"im:bob@hsmls.test")
        .await
        .unwrap();
    let kc = alice
        .ds
        .claim_key_package(b"im:carol@hsmls.test")
        .await
        .unwrap();
    alice.create_group(GroupMode::Blind).await;
    let mut opts = CommitOptions::new();
    opts.add_key_packages = vec![
        alice.validate(&kb.key_package),
        alice.validate(&kc.key_package),
    ];
    let out = alice.group().commit(opts, now()).unwrap();
    alice.send_commit(&out, vec![]).await.unwrap();
    assert_eq!(alice.sync().await, vec!["own-commit"]);
    assert_eq!(bob.sync().await, vec!["welcome"]);
    assert_eq!(carol.sync().await, vec!["welcome"]);

    // Messages through both processes, one order for all.
    alice.send_app("a1").await;
    bob.send_app("b1").await;
    carol.send_app("c1").await;
    for c in [&mut alice, &mut bob, &mut carol] {
        let ev = c.sync().await;
        assert_eq!(ev.len(), 3, "{}: {ev:?}", c.name);
    }
    assert_agree(&mut [&mut alice, &mut bob, &mut carol]);

    // Carol goes offline for three commits and three messages.
    for round in 0..3 {
        let (committer, other) = if round % 2 == 0 {
            (&mut alice, &mut bob)
        } else {
            (&mut bob, &mut alice)
        };
        let out = committer.group().self_update(now()).unwrap();
        committer.send_commit(&out, vec![]).await.unwrap();
        committer.sync().await;
        other.sync().await;
        other
            .send_app(&format!("while carol is away {round}"))
            .await;
        committer.sync().await;
        other.sync().await;
    }
    let ev = carol.sync().await;
    assert_eq!(ev, vec!["commit", "app", "commit", "app", "commit", "app"]);
    assert_agree(&mut [&mut alice, &mut bob, &mut carol]);

    // Commit races through the two processes: one winner per epoch.
    for _ in 0..3 {
        let epoch = alice.group().epoch();
        let oa = alice.group().self_update(now()).unwrap();
        let ob = bob.group().self_update(now()).unwrap();
        let (ra, rb) = tokio::join!(alice.send_commit(&oa, vec![]), bob.send_commit(&ob, vec![]));
        assert_eq!(
            usize::from(ra.is_ok()) + usize::from(rb.is_ok()),
            1,
            "{ra:?} {rb:?}"
        );
        let p = problem(if ra.is_ok() { rb } else { ra });
        assert_eq!(
            (p.kind(), p.current_epoch),
            ("stale-commit", Some(epoch + 1))
        );
        let mut firsts = [alice.sync().await.remove(0), bob.sync().await.remove(0)];
        firsts.sort();
        assert_eq!(
            firsts,
            ["commit-lost".to_string(), "own-commit".to_string()]
        );
        assert_eq!(carol.sync().await, vec!["commit"]);
        assert_agree(&mut [&mut alice, &mut bob, &mut carol]);
        assert_eq!(alice.group().epoch(), epoch + 1);
    }

    // The token's objects of this test go away.
    for c in [&alice, &bob, &carol] {
        for b in c.bundles.values() {
            let _ = b.destroy(&c.signer);
        }
        token.destroy(&c.signer.signature_key).unwrap();
    }
    drop((ds1, ds2));
    as_.stop().await;
}
