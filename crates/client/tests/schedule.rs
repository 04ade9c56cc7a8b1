//! The background work on its schedule: a member commits self-updates
//! every interval (post-compromise security), and after its periodic CRL
//! refresh removes a member the operator revoked; the other members see
//! both, with the committer's identity. In a blind group and in an
//! assisted one (whose DS follows the commit removing the revoked member).

mod common;

use std::time::Duration;

use common::{Env, identity, member_ids, wait_for};
use hsmls_client::{ClientEvent, CredentialProblem, GroupMode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_self_updates_and_revoked_member_removal_blind() {
    scheduled_self_updates_and_revoked_member_removal(GroupMode::Blind).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_self_updates_and_revoked_member_removal_assisted() {
    scheduled_self_updates_and_revoked_member_removal(GroupMode::Assisted).await;
}

async fn scheduled_self_updates_and_revoked_member_removal(mode: GroupMode) {
    let mut env = Env::start().await;
    let mut cfg = env.config("alice");
    cfg.schedule.self_update_interval_secs = 1;
    cfg.schedule.crl_refresh_interval_secs = 1;
    let alice = env.enrol(cfg).await;
    let bob = env.client("bob").await;
    let carol = env.client("carol").await;
    let g = alice.create_group(mode).await.unwrap();
    alice
        .add_members(&g, &[&identity("bob"), &identity("carol")])
        .await
        .unwrap();
    let mut ea = alice.events();
    let mut eb = bob.events();
    let mut ec = carol.events();
    for c in [&alice, &bob, &carol] {
        c.start();
    }

    // Two scheduled self-updates of Alice reach Bob: her leaf changes each
    // time and the epoch moves.
    let alice_keys = |m: &[hsmls_client::MemberInfo]| {
        m.iter()
            .find(|m| m.identity == identity("alice"))
            .map(|m| (m.signature_key.clone(), m.encryption_key.clone()))
            .unwrap()
    };
    for (rx, who) in [(&mut eb, "bob"), (&mut ec, "carol")] {
        wait_for(rx, who, |e| matches!(e, ClientEvent::Joined { .. })).await;
    }
    let before = bob.members(&g).await.unwrap();
    // Updates Bob had already handled are in `before`.
    common::drain(&mut eb);
    let mut epochs = Vec::new();
    for _ in 0..2 {
        let (_, seen) = wait_for(&mut eb, "a scheduled self-update", |e| {
            matches!(e, ClientEvent::MemberUpdated { member, .. } if member == &identity("alice"))
        })
        .await;
        let (e, _) = wait_for(&mut eb, "its epoch", |e| {
            matches!(e, ClientEvent::EpochChanged { .. })
        })
        .await;
        let ClientEvent::EpochChanged { epoch, .. } = e else {
            unreachable!()
        };
        assert!(
            seen.iter()
                .all(|e| !matches!(e, ClientEvent::Message { .. })),
            "{seen:#?}"
        );
        epochs.push(epoch);
    }
    assert!(epochs[0] >= 2 && epochs[1] > epochs[0], "{epochs:?}");
    // The signature key stays; the leaf's encryption key is what changed.
    let (sig_before, enc_before) = alice_keys(&before);
    let (sig_after, enc_after) = alice_keys(&bob.members(&g).await.unwrap());
    assert_eq!(sig_before, sig_after);
    assert_ne!(enc_before, enc_after);

    // The operator revokes Carol. Within a CRL interval Alice notices and
    // removes her; Bob and Carol see it.
    env.revoke(&carol).await;
    let (e, _) = wait_for(&mut ea, "Carol's revocation", |e| {
        matches!(e, ClientEvent::CredentialProblem { .. })
    })
    .await;
    assert_eq!(
        e,
        ClientEvent::CredentialProblem {
            group: g.clone(),
            member: identity("carol"),
            problem: CredentialProblem::Revoked,
        }
    );
    let (e, _) = wait_for(&mut eb, "Carol removed", |e| {
        matches!(e, ClientEvent::MemberRemoved { .. })
    })
    .await;
    assert_eq!(
        e,
        ClientEvent::MemberRemoved {
            group: g.clone(),
            member: identity("carol"),
            by: Some(identity("alice")),
        }
    );
    let (e, _) = wait_for(&mut ec, "Carol told", |e| {
        matches!(e, ClientEvent::Removed { .. })
    })
    .await;
    assert_eq!(
        e,
        ClientEvent::Removed {
            group: g.clone(),
            by: Some(identity("alice")),
        }
    );
    assert!(carol.groups().await.is_empty());

    // Stop the schedule, let Bob settle, and compare.
    alice.shutdown().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    bob.shutdown().await;
    bob.sync().await.unwrap();
    assert_eq!(
        member_ids(&bob, &g).await,
        vec![identity("alice"), identity("bob")]
    );
    assert_eq!(
        alice.epoch_authenticator(&g).await.unwrap(),
        bob.epoch_authenticator(&g).await.unwrap()
    );
    carol.shutdown().await;
    env.stop().await;
}
