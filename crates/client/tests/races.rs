//! Commit races: two members commit for the same epoch; the DS orders
//! one first and answers the other `stale-commit`. The loser's runtime
//! processes the winner and commits what it still wants on the new epoch,
//! without the application; both end in the same epoch with the same
//! epoch authenticator and both intents applied. A race between two
//! members removing the same revoked member ends with one removal.

mod common;

use common::{Env, assert_agree, drain, identity, member_ids};
use hsmls_client::{ClientEvent, CredentialProblem, GroupMode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_commit_is_rebuilt_on_the_new_epoch() {
    let mut env = Env::start().await;
    let alice = env.client("alice").await;
    let bob = env.client("bob").await;
    let carol = env.client("carol").await;
    let dave = env.client("dave").await;
    // No background work: the test decides who has seen what.
    let g = alice.create_group(GroupMode::Blind).await.unwrap();
    assert_eq!(alice.add_members(&g, &[&identity("bob")]).await.unwrap(), 1);
    bob.sync().await.unwrap();
    assert_agree(&[&alice, &bob], &g, 1).await;
    let mut ea = alice.events();
    let mut eb = bob.events();

    // Both commit for epoch 1: Alice adds Carol, Bob (not having seen it)
    // adds Dave. Alice's reaches the DS first.
    assert_eq!(
        alice.add_members(&g, &[&identity("carol")]).await.unwrap(),
        2
    );
    let epoch = bob.add_members(&g, &[&identity("dave")]).await.unwrap();
    assert_eq!(epoch, 3);
    let bob_events = drain(&mut eb);
    assert!(
        bob_events.contains(&ClientEvent::CommitRebuilt {
            group: g.clone(),
            epoch: 2
        }),
        "{bob_events:#?}"
    );
    assert!(bob_events.contains(&ClientEvent::MemberAdded {
        group: g.clone(),
        member: identity("carol"),
        by: Some(identity("alice")),
    }));
    assert!(bob_events.contains(&ClientEvent::MemberAdded {
        group: g.clone(),
        member: identity("dave"),
        by: Some(identity("bob")),
    }));

    alice.sync().await.unwrap();
    carol.sync().await.unwrap();
    dave.sync().await.unwrap();
    assert_agree(&[&alice, &bob, &carol, &dave], &g, 3).await;
    let all = vec![
        identity("alice"),
        identity("bob"),
        identity("carol"),
        identity("dave"),
    ];
    for c in [&alice, &bob, &carol, &dave] {
        assert_eq!(member_ids(c, &g).await, all, "{}", c.identity());
    }
    let alice_events = drain(&mut ea);
    assert!(alice_events.contains(&ClientEvent::MemberAdded {
        group: g.clone(),
        member: identity("dave"),
        by: Some(identity("bob")),
    }));

    // The group works: a message from the winner of the race reaches all.
    let mut ed = dave.events();
    bob.send(&g, b"after the race").await.unwrap();
    dave.sync().await.unwrap();
    assert_eq!(
        drain(&mut ed),
        vec![ClientEvent::Message {
            group: g.clone(),
            sender: identity("bob"),
            epoch: 3,
            data: b"after the race".to_vec(),
        }]
    );

    // The operator revokes Dave. Alice and Bob both find out and both
    // remove him: Alice first; Bob's removal loses the race and, Dave
    // being gone already, nothing is left to commit.
    env.revoke(&dave).await;
    alice.refresh_crl().await.unwrap();
    assert_eq!(alice.epoch(&g).await.unwrap(), 4);
    let alice_events = drain(&mut ea);
    assert!(alice_events.contains(&ClientEvent::CredentialProblem {
        group: g.clone(),
        member: identity("dave"),
        problem: CredentialProblem::Revoked,
    }));
    assert!(alice_events.contains(&ClientEvent::MemberRemoved {
        group: g.clone(),
        member: identity("dave"),
        by: Some(identity("alice")),
    }));
    bob.refresh_crl().await.unwrap();
    let bob_events = drain(&mut eb);
    assert!(bob_events.contains(&ClientEvent::MemberRemoved {
        group: g.clone(),
        member: identity("dave"),
        by: Some(identity("alice")),
    }));
    assert!(
        !bob_events.iter().any(
            |e| matches!(e, ClientEvent::MemberRemoved { by, .. } if by == &Some(identity("bob")))
        ),
        "{bob_events:#?}"
    );
    carol.sync().await.unwrap();
    assert_agree(&[&alice, &bob, &carol], &g, 4).await;
    assert_eq!(
        member_ids(&carol, &g).await,
        vec![identity("alice"), identity("bob"), identity("carol")]
    );
    // Dave learns he was removed; his group state is gone.
    dave.sync().await.unwrap();
    assert_eq!(
        drain(&mut ed),
        vec![ClientEvent::Removed {
            group: g.clone(),
            by: Some(identity("alice")),
        }]
    );
    assert!(dave.groups().await.is_empty());
    env.stop().await;
}
