//! Handshakes of a member whose certificate the operator revoked, read
//! by a member whose validator holds the new CRL while the DS (its CRL
//! older) still lets the revoked member in: the engine refuses them
//! (`GroupError::SenderCredential`, the X.509 validator's
//! `ValidationError::Revoked` inside), and the runtime acts on that
//! error's type: a refused proposal is reported and its sender removed; a
//! refused commit the DS ordered leaves a group that cannot follow the DS,
//! reported as broken.

mod common;

use common::{Env, assert_agree, drain, identity, member_ids};
use hsmls_client::{ClientEvent, CredentialProblem, ForkReason, GroupMode};

/// The operator revokes `who` at the AS; only `reader`'s validator takes
/// the new CRL (the DS and the other members keep the old one).
async fn revoke_seen_by(
    env: &Env,
    who: &hsmls_client::ClientRuntime,
    reader: &hsmls_client::ClientRuntime,
) {
    let (_, serial, _) = who.certificate().unwrap();
    env.as_service.revoke(&serial).await.unwrap();
    reader
        .validator()
        .set_crl(&env.as_service.crl().await.unwrap())
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_members_proposal_is_refused_and_it_is_removed() {
    for mode in [GroupMode::Blind, GroupMode::Assisted] {
        let mut env = Env::start().await;
        let alice = env.client("alice").await;
        let bob = env.client("bob").await;
        let carol = env.client("carol").await;
        let g = alice.create_group(mode).await.unwrap();
        alice
            .add_members(&g, &[&identity("bob"), &identity("carol")])
            .await
            .unwrap();
        bob.sync().await.unwrap();
        carol.sync().await.unwrap();
        assert_agree(&[&alice, &bob, &carol], &g, 1).await;
        let mut ea = alice.events();
        let mut eb = bob.events();
        let mut ec = carol.events();

        revoke_seen_by(&env, &bob, &alice).await;
        // Bob proposes to leave; the DS, whose CRL is older, takes it.
        bob.leave(&g).await.unwrap();

        // Alice refuses the proposal for Bob's credential, says so, and
        // removes him (the check her runtime ran after the refusal).
        alice.sync().await.unwrap();
        let auth = alice.epoch_authenticator(&g).await.unwrap();
        assert_eq!(
            drain(&mut ea),
            vec![
                ClientEvent::CredentialProblem {
                    group: g.clone(),
                    member: identity("bob"),
                    problem: CredentialProblem::Revoked,
                },
                ClientEvent::MemberRemoved {
                    group: g.clone(),
                    member: identity("bob"),
                    by: Some(identity("alice")),
                },
                ClientEvent::EpochChanged {
                    group: g.clone(),
                    epoch: 2,
                    epoch_authenticator: auth.clone(),
                },
            ],
            "{mode:?}"
        );
        // Carol (old CRL) took the proposal; Alice's commit (with a path:
        // Alice's leaf is new) settles it.
        carol.sync().await.unwrap();
        assert_eq!(
            drain(&mut ec),
            vec![
                ClientEvent::MemberRemoved {
                    group: g.clone(),
                    member: identity("bob"),
                    by: Some(identity("alice")),
                },
                ClientEvent::MemberUpdated {
                    group: g.clone(),
                    member: identity("alice"),
                },
                ClientEvent::EpochChanged {
                    group: g.clone(),
                    epoch: 2,
                    epoch_authenticator: auth,
                },
            ],
            "{mode:?}"
        );
        assert_agree(&[&alice, &carol], &g, 2).await;
        assert_eq!(
            member_ids(&carol, &g).await,
            vec![identity("alice"), identity("carol")]
        );
        bob.sync().await.unwrap();
        assert_eq!(
            drain(&mut eb),
            vec![ClientEvent::Removed {
                group: g.clone(),
                by: Some(identity("alice")),
            }],
            "{mode:?}"
        );
        assert!(bob.groups().await.is_empty());
        env.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_members_commit_ordered_by_the_ds_breaks_the_group() {
    let mut env = Env::start().await;
    let alice = env.client("alice").await;
    let bob = env.client("bob").await;
    let carol = env.client("carol").await;
    let g = alice.create_group(GroupMode::Assisted).await.unwrap();
    alice.add_members(&g, &[&identity("bob")]).await.unwrap();
    bob.sync().await.unwrap();
    let mut ea = alice.events();

    revoke_seen_by(&env, &bob, &alice).await;
    // Bob adds Carol: a commit without a path, judged by Bob's current
    // credential; the DS (old CRL) orders it as epoch 1's commit.
    assert_eq!(bob.add_members(&g, &[&identity("carol")]).await.unwrap(), 2);

    alice.sync().await.unwrap();
    assert_eq!(
        drain(&mut ea),
        vec![
            ClientEvent::CredentialProblem {
                group: g.clone(),
                member: identity("bob"),
                problem: CredentialProblem::Revoked,
            },
            ClientEvent::GroupBroken {
                group: g.clone(),
                reason: ForkReason::InvalidCommit {
                    member: identity("bob"),
                    problem: CredentialProblem::Revoked,
                },
            },
        ]
    );
    // Alice stays where she was and tries no commit the DS would refuse.
    assert_eq!(alice.epoch(&g).await.unwrap(), 1);
    assert_eq!(
        member_ids(&alice, &g).await,
        vec![identity("alice"), identity("bob")]
    );
    // Carol, whose CRL is as old as the DS's, joined by Bob's Welcome:
    // the members with the old CRL follow the DS, Alice cannot.
    carol.sync().await.unwrap();
    assert_agree(&[&bob, &carol], &g, 2).await;
    env.stop().await;
}
