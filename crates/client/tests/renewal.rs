//! A renewed certificate reaches the client's leaves in its existing
//! groups: right after the renewal the runtime commits a self-update in
//! every group whose leaf has the old certificate, its path's LeafNode
//! carrying the new one (`CommitOptions::new_signer`); the other members
//! (and the assisted DS, which follows the tree) accept it and see the new
//! serial, and the group goes on, also after a restart.

mod common;

use common::{Env, assert_agree, drain, identity};
use hsmls_client::{ClientEvent, ClientRuntime, GroupMode, OwnCredentialEvent};

async fn serial_of(c: &ClientRuntime, g: &hsmls_client::GroupId, who: &str) -> Option<String> {
    c.members(g)
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.identity == identity(who))
        .and_then(|m| m.serial)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_reaches_every_group() {
    // Leaf certificates live 3 days; Alice renews 4 days before expiry,
    // so when asked.
    let mut env = Env::start_with(3 * 86_400).await;
    let mut cfg = env.config("alice");
    cfg.schedule.renew_margin_secs = 4 * 86_400;
    let alice = env.enrol(cfg.clone()).await;
    let bob = env.client("bob").await;
    let (_, old_serial, _) = alice.certificate().unwrap();
    let blind = alice.create_group(GroupMode::Blind).await.unwrap();
    let assisted = alice.create_group(GroupMode::Assisted).await.unwrap();
    for g in [&blind, &assisted] {
        assert_eq!(alice.add_members(g, &[&identity("bob")]).await.unwrap(), 1);
    }
    bob.sync().await.unwrap();
    for g in [&blind, &assisted] {
        assert_agree(&[&alice, &bob], g, 1).await;
        assert_eq!(serial_of(&bob, g, "alice").await, Some(old_serial.clone()));
    }
    let mut ea = alice.events();
    let mut eb = bob.events();

    assert!(alice.renew_if_due().await.unwrap());
    let (_, new_serial, not_after) = alice.certificate().unwrap();
    assert_ne!(new_serial, old_serial);
    // Renewed, then one self-update per group (in group-id order).
    let mut groups = vec![blind.clone(), assisted.clone()];
    groups.sort();
    let mut want = vec![ClientEvent::OwnCredential(OwnCredentialEvent::Renewed {
        serial: new_serial.clone(),
        not_after,
    })];
    for g in &groups {
        want.push(ClientEvent::EpochChanged {
            group: g.clone(),
            epoch: 2,
            epoch_authenticator: alice.epoch_authenticator(g).await.unwrap(),
        });
    }
    assert_eq!(drain(&mut ea), want);

    bob.sync().await.unwrap();
    let mut want = Vec::new();
    for g in &groups {
        want.push(ClientEvent::MemberUpdated {
            group: g.clone(),
            member: identity("alice"),
        });
        want.push(ClientEvent::EpochChanged {
            group: g.clone(),
            epoch: 2,
            epoch_authenticator: bob.epoch_authenticator(g).await.unwrap(),
        });
    }
    assert_eq!(drain(&mut eb), want);
    for g in &groups {
        assert_agree(&[&alice, &bob], g, 2).await;
        assert_eq!(serial_of(&bob, g, "alice").await, Some(new_serial.clone()));
        assert_eq!(
            serial_of(&alice, g, "alice").await,
            Some(new_serial.clone())
        );
    }

    // A restart finds nothing left to update, and Alice's messages verify
    // for Bob under her renewed leaf.
    alice.shutdown().await;
    drop(alice);
    let alice = ClientRuntime::open(cfg).await.unwrap();
    env.track(&alice);
    let mut ea = alice.events();
    alice.sync().await.unwrap();
    assert_eq!(drain(&mut ea), vec![]);
    for g in &groups {
        assert_eq!(alice.epoch(g).await.unwrap(), 2);
        alice.send(g, b"renewed").await.unwrap();
    }
    bob.sync().await.unwrap();
    let want: Vec<ClientEvent> = groups
        .iter()
        .map(|g| ClientEvent::Message {
            group: g.clone(),
            sender: identity("alice"),
            epoch: 2,
            data: b"renewed".to_vec(),
        })
        .collect();
    assert_eq!(drain(&mut eb), want);
    env.stop().await;
}
