//! Assisted mode: removing a member whose certificate the AS revoked.
//! The DS finds the removed member's queue in its own routing record
//! (leaf → client), not by validating the removed member's credential, so
//! the removal is accepted although that credential is now refused; the
//! removed member's queue no longer gets the group's messages and it can
//! no longer post. A commit or a proposal by the revoked member itself is
//! refused (the sender's credential is judged as the members judge it).

#[path = "common/as_.rs"]
mod as_;
mod common;

use std::sync::Arc;

use as_::TestAs;
use common::*;
use hsmls::CredentialValidator;
use hsmls_custody::{KeyCustody, SoftwareCustody};
use hsmls_ds::api::GroupMode;
use hsmls_ds::auth::X509Authenticator;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_revoked_member_is_accepted() {
    let soft = Arc::new(SoftwareCustody::new()) as Arc<dyn KeyCustody>;
    let as_ = TestAs::start(soft.clone()).await;
    // The DS checks credentials with the AS root and CRL.
    let ds_validator = as_.validator().await;
    let t = sqlite_ds_with(config(), Arc::new(X509Authenticator(ds_validator.clone()))).await;
    let roots = pki().root_pem.clone();
    let mut clients = Vec::new();
    let mut serials = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let e = as_.enrol(&soft, name).await;
        let v = as_.validator().await as Arc<dyn CredentialValidator>;
        let mut c = Client::with_signer(e.signer, name, &t.base, v, roots.as_bytes()).await;
        c.identity = format!("im:{name}@hsmls.test").into_bytes();
        c.publish(1, true).await;
        clients.push(c);
        serials.push(e.serial);
    }
    let mut carol = clients.pop().unwrap();
    let mut bob = clients.pop().unwrap();
    let mut alice = clients.pop().unwrap();
    let gid = form(&mut alice, &mut bob, &mut carol, GroupMode::Assisted).await;
    alice.send_app("before").await;
    for c in [&mut alice, &mut bob, &mut carol] {
        c.sync().await;
    }
    let carol_queue: [u8; 16] = carol.ds.session().unwrap().queue_id.try_into().unwrap();
    assert!(
        t.ds.store()
            .is_member(gid.clone(), carol_queue)
            .await
            .unwrap()
    );

    // The operator revokes Carol; the DS gets the new CRL (as its
    // periodic CRL refresh does).
    as_.service.revoke(&serials[2]).await.unwrap();
    ds_validator
        .set_crl(&as_.client.crl().await.unwrap())
        .unwrap();
    // Her credential is refused now: no new session...
    let p = problem(ds_client(&t.base).authenticate(&carol.signer).await);
    assert_eq!((p.status, p.kind()), (401, "authentication-failed"));
    // ... and her own commit is refused (the committer is validated).
    let out = carol.group().self_update(now()).unwrap();
    let p = problem(carol.send_commit(&out, vec![]).await);
    assert_eq!((p.status, p.kind()), (422, "invalid-handshake"));
    carol.group().discard_pending_commit().unwrap();
    // ... and so is her proposal (her current credential is refused, as
    // the members refuse it).
    let bob_leaf = bob.group().own_leaf_index();
    let proposal = carol.group().propose_remove(bob_leaf).unwrap();
    let p = problem(carol.ds.send_message(&proposal.message).await);
    assert_eq!((p.status, p.kind()), (422, "invalid-handshake"));

    // Alice removes Carol: accepted, although Carol's credential no
    // longer validates.
    let carol_leaf = carol.group().own_leaf_index();
    let out = alice.group().remove_members(&[carol_leaf], now()).unwrap();
    let removal = alice.send_commit(&out, vec![]).await.unwrap();
    assert_eq!(alice.sync().await, vec!["own-commit"]);
    assert_eq!(bob.sync().await, vec!["commit"]);
    assert_agree(&mut [&mut alice, &mut bob]);
    assert_eq!(alice.group().members().len(), 2);
    assert!(
        !t.ds
            .store()
            .is_member(gid.clone(), carol_queue)
            .await
            .unwrap()
    );

    // The group goes on; Carol's queue gets nothing after her removal.
    alice.send_app("after").await;
    bob.send_app("after, too").await;
    assert_eq!(bob.sync().await, vec!["app", "own"]);
    let batch = carol.ds.fetch(100).await.unwrap();
    let after: Vec<u64> = batch
        .messages
        .iter()
        .filter(|m| m.group_id == gid && m.seq > removal.seq)
        .map(|m| m.seq)
        .collect();
    assert!(after.is_empty(), "Carol still gets messages {after:?}");
    // And she can no longer post to the group.
    let msg = carol.group().encrypt_application(b"still here?").unwrap();
    let p = problem(carol.ds.send_message(&msg).await);
    assert_eq!((p.status, p.kind()), (403, "not-member"));

    as_.stop().await;
}
