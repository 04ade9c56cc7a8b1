//! A client's life against a real AS (TLS, keys in SoftHSM) and DS:
//! enrolment and KeyPackages, a group created and members added by
//! identity, messages both ways over the live push, a member restarted
//! from its state file who carries on, and a member offline for several
//! commits who catches up.

mod common;

use common::{Env, assert_agree, identity, member_ids, wait_epoch, wait_for};
use hsmls_client::{ClientEvent, ClientRuntime, GroupMode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrol_create_add_talk_restart_and_catch_up() {
    let keys_before = common::token_private_keys();
    let mut env = Env::start().await;
    let alice = env.client("alice").await;
    let bob = env.client("bob").await;
    let carol = env.client("carol").await;

    // Enrolment: a certificate for the configured identity, its key in
    // the token, the checkpoint that logs it, and 3 + 1 KeyPackages.
    let (chain, serial, not_after) = alice.certificate().unwrap();
    let info = hsmls_credentials::leaf_info(&chain[0]).unwrap();
    assert_eq!(info.identity, identity("alice"));
    assert_eq!(hex::encode(&info.serial), serial);
    assert_eq!(info.not_after, not_after);
    assert!(
        alice
            .signature_key_uri()
            .unwrap()
            .starts_with("pkcs11:token=hsmls-test")
    );
    // Each client holds the checkpoint it checked its certificate under:
    // the log had one issuance per enrolment so far.
    for (c, size) in [(&alice, 1), (&bob, 2), (&carol, 3)] {
        assert_eq!(c.log_monitor().latest().unwrap().size, size);
    }
    assert_eq!(alice.replenish_key_packages().await.unwrap(), 0);
    assert!(alice.last_resort_key_package().await.unwrap().is_some());

    let mut ea = alice.events();
    let mut eb = bob.events();
    let mut ec = carol.events();
    for c in [&alice, &bob, &carol] {
        c.start();
    }

    // Alice creates an assisted group and adds Bob and Carol by identity.
    let g = alice.create_group(GroupMode::Assisted).await.unwrap();
    assert_eq!(alice.epoch(&g).await.unwrap(), 0);
    let epoch = alice
        .add_members(&g, &[&identity("bob"), &identity("carol")])
        .await
        .unwrap();
    assert_eq!(epoch, 1);
    for (rx, who) in [(&mut eb, "bob"), (&mut ec, "carol")] {
        let (e, _) = wait_for(rx, who, |e| matches!(e, ClientEvent::Joined { .. })).await;
        let ClientEvent::Joined {
            group,
            epoch,
            mut members,
        } = e
        else {
            unreachable!()
        };
        members.sort();
        assert_eq!((group, epoch), (g.clone(), 1));
        assert_eq!(
            members,
            vec![identity("alice"), identity("bob"), identity("carol")]
        );
    }
    let (e, _) = wait_for(&mut ea, "alice adds", |e| {
        matches!(e, ClientEvent::EpochChanged { epoch: 1, .. })
    })
    .await;
    let ClientEvent::EpochChanged {
        epoch_authenticator,
        ..
    } = e
    else {
        unreachable!()
    };
    assert_eq!(
        epoch_authenticator,
        bob.epoch_authenticator(&g).await.unwrap()
    );
    assert_agree(&[&alice, &bob, &carol], &g, 1).await;
    assert_eq!(
        alice.safety_number(&g).await.unwrap(),
        carol.safety_number(&g).await.unwrap()
    );
    assert_eq!(
        member_ids(&bob, &g).await,
        vec![identity("alice"), identity("bob"), identity("carol")]
    );

    // Messages, each with its sender's identity.
    alice.send(&g, b"hello from alice").await.unwrap();
    for (rx, who) in [(&mut eb, "bob"), (&mut ec, "carol")] {
        let (e, _) = wait_for(rx, who, |e| matches!(e, ClientEvent::Message { .. })).await;
        assert_eq!(
            e,
            ClientEvent::Message {
                group: g.clone(),
                sender: identity("alice"),
                epoch: 1,
                data: b"hello from alice".to_vec(),
            }
        );
    }
    bob.send(&g, b"hi alice").await.unwrap();
    let (e, _) = wait_for(&mut ea, "alice", |e| {
        matches!(e, ClientEvent::Message { .. })
    })
    .await;
    assert_eq!(
        e,
        ClientEvent::Message {
            group: g.clone(),
            sender: identity("bob"),
            epoch: 1,
            data: b"hi alice".to_vec(),
        }
    );

    // Bob stops and a new client is opened from the same configuration and
    // state file: same group, same epoch, same secrets; it carries on.
    let bob_cursor = bob.cursor(&g).await.unwrap();
    bob.shutdown().await;
    drop(bob);
    let bob = ClientRuntime::open(env.config("bob")).await.unwrap();
    env.track(&bob);
    assert!(bob.is_enrolled());
    assert_eq!(bob.groups().await, vec![g.clone()]);
    assert_eq!(bob.cursor(&g).await.unwrap(), bob_cursor);
    // The certificate and the log checkpoint came back from the file.
    assert_eq!(bob.log_monitor().latest().unwrap().size, 2);
    assert_eq!(
        hsmls_credentials::leaf_info(&bob.certificate().unwrap().0[0])
            .unwrap()
            .identity,
        identity("bob")
    );
    assert_agree(&[&alice, &bob], &g, 1).await;
    let mut eb = bob.events();
    bob.start();
    alice.send(&g, b"after bob's restart").await.unwrap();
    let (e, _) = wait_for(&mut eb, "bob after restart", |e| {
        matches!(e, ClientEvent::Message { .. })
    })
    .await;
    assert_eq!(
        e,
        ClientEvent::Message {
            group: g.clone(),
            sender: identity("alice"),
            epoch: 1,
            data: b"after bob's restart".to_vec(),
        }
    );
    bob.send(&g, b"bob is back").await.unwrap();
    let (e, _) = wait_for(&mut ea, "alice", |e| {
        matches!(e, ClientEvent::Message { .. })
    })
    .await;
    assert!(matches!(e, ClientEvent::Message { data, .. } if data == b"bob is back"));
    let (e, _) = wait_for(
        &mut ec,
        "carol",
        |e| matches!(e, ClientEvent::Message { data, .. } if data == b"bob is back"),
    )
    .await;
    assert!(matches!(e, ClientEvent::Message { sender, .. } if sender == identity("bob")));

    // Carol goes offline; three commits and a message go by.
    carol.shutdown().await;
    assert_eq!(alice.self_update(&g).await.unwrap(), 2);
    wait_epoch(&bob, &g, 2).await;
    assert_eq!(bob.self_update(&g).await.unwrap(), 3);
    wait_epoch(&alice, &g, 3).await;
    assert_eq!(alice.self_update(&g).await.unwrap(), 4);
    alice.send(&g, b"while carol was away").await.unwrap();
    wait_epoch(&bob, &g, 4).await;
    assert_eq!(carol.epoch(&g).await.unwrap(), 1);

    // Back online: she catches up in order and reads the message.
    carol.start();
    let (e, before) = wait_for(
        &mut ec,
        "carol catches up",
        |e| matches!(e, ClientEvent::Message { data, .. } if data == b"while carol was away"),
    )
    .await;
    assert!(matches!(e, ClientEvent::Message { epoch: 4, .. }));
    let epochs: Vec<u64> = before
        .iter()
        .filter_map(|e| match e {
            ClientEvent::EpochChanged { epoch, .. } => Some(*epoch),
            _ => None,
        })
        .collect();
    assert_eq!(epochs, vec![2, 3, 4]);
    let updated: Vec<&str> = before
        .iter()
        .filter_map(|e| match e {
            ClientEvent::MemberUpdated { member, .. } => Some(member.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        updated,
        vec![
            identity("alice").as_str(),
            identity("bob").as_str(),
            identity("alice").as_str()
        ]
    );
    assert_agree(&[&alice, &bob, &carol], &g, 4).await;

    // Carol leaves: her proposal is committed by Alice, the member with the
    // lowest leaf that stays; Bob sees Carol go, Carol sees herself removed.
    carol.leave(&g).await.unwrap();
    let (e, _) = wait_for(&mut ec, "carol leaves", |e| {
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
    let (e, _) = wait_for(&mut eb, "bob sees carol go", |e| {
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
    wait_epoch(&bob, &g, 5).await;
    assert_agree(&[&alice, &bob], &g, 5).await;

    // Alice removes Bob.
    assert_eq!(
        alice.remove_members(&g, &[&identity("bob")]).await.unwrap(),
        6
    );
    let (e, _) = wait_for(&mut eb, "bob removed", |e| {
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
    assert_eq!(member_ids(&alice, &g).await, vec![identity("alice")]);

    for c in [&alice, &bob, &carol] {
        c.shutdown().await;
    }
    // Three signature keys and the AS's three keys were token objects.
    assert_eq!(common::token_private_keys(), keys_before + 6);
    env.stop().await;
    assert_eq!(common::token_private_keys(), keys_before);
}
