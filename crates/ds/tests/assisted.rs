//! Assisted mode: the DS follows the public group state, derives the
//! routing from the commits, refuses a commit that would not verify (so
//! the group is never stuck on it), and serves the GroupInfo and ratchet
//! tree to members for a resync (a non-member gets neither, and its
//! external commit is refused).

mod common;

use std::sync::Arc;

use common::*;
use hsmls::internal::codec::{
    Decode, Encode, FramedContentBody, MlsMessage, MlsMessageBody, Proposal, ProposalOrRef,
    PublicMessage, Remove, WireFormat,
};
use hsmls::{CommitOptions, HandshakeFraming, JoinOptions, PublicGroup};
use hsmls_custody::SoftwareCustody;
use hsmls_ds::api::{CommitBundle, GroupMode};

/// Bob's commit re-signed with a proposal removing Bob himself: a valid
/// signature, an invalid commit (RFC 9420 §12.2).
fn self_removing(bob: &mut Client, commit: &[u8]) -> Vec<u8> {
    let MlsMessageBody::PublicMessage(mut m) = MlsMessage::decode(commit).unwrap().body else {
        panic!()
    };
    let leaf = bob.group().own_leaf_index();
    if let FramedContentBody::Commit(c) = &mut m.content.body {
        c.proposals
            .push(ProposalOrRef::Proposal(Proposal::Remove(Remove {
                removed: leaf,
            })));
    }
    let cs = hsmls_crypto::CipherSuite(0x0002).provider().unwrap();
    let ctx = bob.group().group_context().clone();
    let signed = hsmls::internal::message_protection::sign_content(
        cs,
        bob.signer.custody.as_ref(),
        &bob.signer.signature_key,
        WireFormat::PUBLIC_MESSAGE,
        m.content,
        Some(&ctx),
    )
    .unwrap();
    MlsMessage {
        body: MlsMessageBody::PublicMessage(PublicMessage {
            content: signed.content,
            auth: hsmls::internal::codec::FramedContentAuthData {
                signature: signed.auth.signature,
                confirmation_tag: m.auth.confirmation_tag,
            },
            membership_tag: m.membership_tag,
        }),
    }
    .encode()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assisted_group_lifecycle() {
    let t = sqlite_ds(config()).await;
    let (mut alice, mut bob, mut carol) = three(&t.base).await;
    let gid = form(&mut alice, &mut bob, &mut carol, GroupMode::Assisted).await;

    // The DS serves the current GroupInfo and ratchet tree.
    let gi = alice.ds.group_info(&gid).await.unwrap();
    let tree =
        hsmls::internal::codec::RatchetTree::decode(&alice.ds.ratchet_tree(&gid).await.unwrap())
            .unwrap();
    let obs = PublicGroup::from_group_info(&gi, Some(tree), validator()).unwrap();
    assert_eq!(obs.tree_hash(), alice.group().tree_hash());
    assert_eq!(obs.epoch(), 1);

    // A self-update, then a proposal by reference committed by another.
    let out = bob.group().self_update(now()).unwrap();
    bob.send_commit(&out, vec![]).await.unwrap();
    for c in [&mut alice, &mut bob, &mut carol] {
        c.sync().await;
    }
    let p = carol.group().propose_update().unwrap();
    carol.ds.send_message(&p.message).await.unwrap();
    for c in [&mut alice, &mut bob, &mut carol] {
        c.sync().await;
    }
    let out = alice.group().commit(CommitOptions::new(), now()).unwrap();
    alice.send_commit(&out, vec![]).await.unwrap();
    for c in [&mut alice, &mut bob, &mut carol] {
        c.sync().await;
    }
    assert_agree(&mut [&mut alice, &mut bob, &mut carol]);
    assert_eq!(alice.group().epoch(), 3);

    // A validly signed commit that would not verify is refused; nothing
    // is stored, the epoch stays, and the group goes on.
    let stored =
        t.ds.store()
            .stored_message_count(gid.clone())
            .await
            .unwrap();
    let out = bob.group().self_update(now()).unwrap();
    let forged = self_removing(&mut bob, &out.commit);
    let p = problem(
        bob.ds
            .send_commit(&CommitBundle {
                commit: forged,
                group_info: out.group_info.clone(),
                ..Default::default()
            })
            .await,
    );
    assert_eq!((p.status, p.kind()), (422, "invalid-handshake"));
    assert_eq!(
        t.ds.store()
            .stored_message_count(gid.clone())
            .await
            .unwrap(),
        stored
    );
    assert_eq!(
        t.ds.store()
            .group(gid.clone())
            .await
            .unwrap()
            .unwrap()
            .epoch,
        3
    );
    // A commit with another epoch's GroupInfo is refused too.
    let p = problem(
        bob.ds
            .send_commit(&CommitBundle {
                commit: out.commit.clone(),
                group_info: Some(gi.clone()),
                ..Default::default()
            })
            .await,
    );
    assert_eq!((p.status, p.kind()), (422, "invalid-group-info"));
    // Without a GroupInfo: refused (the DS must keep serving a current one).
    let p = problem(
        bob.ds
            .send_commit(&CommitBundle {
                commit: out.commit.clone(),
                ..Default::default()
            })
            .await,
    );
    assert_eq!((p.status, p.kind()), (422, "invalid-group-info"));
    // Blind-mode routing declarations are not taken here.
    let p = problem(bob.send_commit(&out, vec![b"carol".to_vec()]).await);
    assert_eq!((p.status, p.kind()), (400, "malformed-request"));
    // The genuine commit passes.
    bob.send_commit(&out, vec![]).await.unwrap();
    for c in [&mut alice, &mut bob, &mut carol] {
        c.sync().await;
    }
    assert_agree(&mut [&mut alice, &mut bob, &mut carol]);

    // Dave, not a member, gets neither the GroupInfo nor the tree, and an
    // external commit of his (from a GroupInfo a member leaked to him) is
    // refused with nothing stored: only members rejoin by external commit.
    let mut dave = Client::new(Arc::new(SoftwareCustody::new()), "dave", &t.base).await;
    dave.group_config.handshake_framing = HandshakeFraming::Public;
    let p = problem(dave.ds.group_info(&gid).await);
    assert_eq!((p.status, p.kind()), (403, "not-member"));
    let p = problem(dave.ds.ratchet_tree(&gid).await);
    assert_eq!((p.status, p.kind()), (403, "not-member"));
    let leaked = alice.ds.group_info(&gid).await.unwrap();
    let (g, commit) = dave
        .mls()
        .join_by_external_commit(&leaked, JoinOptions::default())
        .unwrap();
    let p = problem(
        dave.ds
            .send_commit(&CommitBundle {
                commit,
                group_info: Some(g.group_info().unwrap()),
                ..Default::default()
            })
            .await,
    );
    assert_eq!((p.status, p.kind()), (403, "not-member"));
    let epoch =
        t.ds.store()
            .group(gid.clone())
            .await
            .unwrap()
            .unwrap()
            .epoch;
    assert_eq!(epoch, 4);

    // Bob, who lost his state, rejoins by an external commit (resync:
    // it removes his old leaf) from what the DS serves him.
    let old_leaf = bob.group().own_leaf_index();
    let gi = bob.ds.group_info(&gid).await.unwrap();
    let (g, commit) = bob
        .mls()
        .rejoin_by_external_commit(&gi, JoinOptions::default(), old_leaf)
        .unwrap();
    let new_gi = g.group_info().unwrap();
    bob.group = Some(g);
    let acc = bob
        .ds
        .send_commit(&CommitBundle {
            commit,
            group_info: Some(new_gi),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(acc.epoch, 5);
    bob.positions.insert(gid.clone(), acc.seq);
    for c in [&mut alice, &mut carol] {
        assert_eq!(c.sync().await, vec!["commit"], "{}", c.name);
    }
    assert!(
        t.ds.store()
            .is_member(gid.clone(), queue(&bob))
            .await
            .unwrap()
    );
    bob.send_app("hi, I am back").await;
    for c in [&mut alice, &mut carol] {
        assert_eq!(c.sync().await, vec!["app"]);
    }
    assert_eq!(bob.sync().await, vec!["own"]);
    assert_agree(&mut [&mut alice, &mut bob, &mut carol]);

    // Carol is removed by Alice: the DS reads it from the commit.
    let leaf = carol.group().own_leaf_index();
    let out = alice.group().remove_members(&[leaf], now()).unwrap();
    alice.send_commit(&out, vec![]).await.unwrap();
    assert_eq!(carol.sync().await, vec!["commit"]);
    assert!(
        !t.ds
            .store()
            .is_member(gid.clone(), queue(&carol))
            .await
            .unwrap()
    );
    for c in [&mut alice, &mut bob] {
        c.sync().await;
    }
    assert_agree(&mut [&mut alice, &mut bob]);
}

fn queue(c: &Client) -> [u8; 16] {
    c.ds.session().unwrap().queue_id.try_into().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_mismatches() {
    let t = sqlite_ds(config()).await;
    let (mut alice, mut bob, mut carol) = three(&t.base).await;
    let blind = form(&mut alice, &mut bob, &mut carol, GroupMode::Blind).await;
    // A blind group has no GroupInfo or tree at the DS.
    let p = problem(alice.ds.group_info(&blind).await);
    assert_eq!((p.status, p.kind()), (422, "mode-mismatch"));
    let p = problem(alice.ds.ratchet_tree(&blind).await);
    assert_eq!((p.status, p.kind()), (422, "mode-mismatch"));

    // An assisted group refuses PrivateMessage handshakes.
    let mut dave = Client::new(Arc::new(SoftwareCustody::new()), "dave", &t.base).await;
    let gid = dave.create_group(GroupMode::Assisted).await;
    let mut cfg = dave.group().config().clone();
    cfg.handshake_framing = HandshakeFraming::Private;
    dave.group().set_config(cfg);
    let out = dave.group().self_update(now()).unwrap();
    let p = problem(dave.send_commit(&out, vec![]).await);
    assert_eq!((p.status, p.kind()), (422, "mode-mismatch"));
    assert_eq!(t.ds.store().group(gid).await.unwrap().unwrap().epoch, 0);
    // Creating an assisted group needs a GroupInfo signed by the creator.
    let p = problem(
        alice
            .ds
            .create_group(&hsmls_ds::api::CreateGroup {
                group_id: b"no-group-info".to_vec(),
                mode: GroupMode::Assisted,
                epoch: 0,
                group_info: None,
                ratchet_tree: None,
            })
            .await,
    );
    assert_eq!((p.status, p.kind()), (422, "invalid-group-info"));
    let other = dave.group().group_info().unwrap();
    let p = problem(
        alice
            .ds
            .create_group(&hsmls_ds::api::CreateGroup {
                group_id: dave.group().group_id().to_vec(),
                mode: GroupMode::Assisted,
                epoch: 0,
                group_info: Some(other),
                ratchet_tree: None,
            })
            .await,
    );
    assert_eq!((p.status, p.kind()), (422, "invalid-group-info"));
}
