//! KeyPackages on the DS: a batch and a last-resort KeyPackage at
//! enrolment; claims run the batch down, the last-resort one serves when
//! it is empty; the client tops the batch up and replaces the used
//! last-resort KeyPackage, whose keys are then destroyed in the token
//! (the groups joined with it replaced that leaf key by a self-update
//! first). Certificate renewal before expiry is here too: it is the other
//! thing the client keeps current on its own.

mod common;

use common::{Env, assert_agree, drain, identity};
use hsmls_client::{ClientEvent, ClientRuntime, GroupMode, OwnCredentialEvent};
use hsmls_custody::CustodyError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_up_and_last_resort_rotation() {
    let mut env = Env::start().await;
    let alice = env.client("alice").await;
    let mut cfg = env.config("bob");
    cfg.key_packages.batch_size = 2;
    cfg.key_packages.low_water_mark = 2;
    let bob = env.enrol(cfg).await;
    let mut eb = bob.events();
    let (lr_ref, lr_init, lr_leaf) = bob.last_resort_key_package().await.unwrap().unwrap();
    bob.custody().find(&lr_init).unwrap();
    bob.custody().find(&lr_leaf).unwrap();

    // Alice adds Bob to three groups: two batch KeyPackages, then the
    // last-resort one.
    let mut groups = Vec::new();
    for _ in 0..3 {
        let g = alice.create_group(GroupMode::Assisted).await.unwrap();
        assert_eq!(alice.add_members(&g, &[&identity("bob")]).await.unwrap(), 1);
        groups.push(g);
    }
    // Bob joins all three; the last-resort join is followed at once by a
    // self-update that replaces the shared leaf key.
    bob.sync().await.unwrap();
    let events = drain(&mut eb);
    let joined = events
        .iter()
        .filter(|e| matches!(e, ClientEvent::Joined { epoch: 1, .. }))
        .count();
    assert_eq!(joined, 3, "{events:#?}");
    assert!(events.contains(&ClientEvent::EpochChanged {
        group: groups[2].clone(),
        epoch: 2,
        epoch_authenticator: bob.epoch_authenticator(&groups[2]).await.unwrap(),
    }));
    for g in &groups[..2] {
        assert_eq!(bob.epoch(g).await.unwrap(), 1);
    }

    // The DS has none of the batch left and served the last-resort one:
    // Bob publishes two and a new last-resort KeyPackage, and destroys the
    // old one's keys.
    assert_eq!(bob.replenish_key_packages().await.unwrap(), 3);
    assert_eq!(
        drain(&mut eb),
        vec![ClientEvent::KeyPackagesPublished {
            published: 3,
            last_resort_rotated: true,
            available: 2,
        }]
    );
    for uri in [&lr_init, &lr_leaf] {
        assert!(matches!(
            bob.custody().find(uri),
            Err(CustodyError::KeyNotFound(u)) if &u == uri
        ));
    }
    let (new_ref, new_init, _) = bob.last_resort_key_package().await.unwrap().unwrap();
    assert_ne!(new_ref, lr_ref);
    bob.custody().find(&new_init).unwrap();
    // Nothing more to do.
    assert_eq!(bob.replenish_key_packages().await.unwrap(), 0);

    // The groups still work, the one joined with the last-resort
    // KeyPackage included.
    alice.sync().await.unwrap();
    assert_agree(&[&alice, &bob], &groups[2], 2).await;
    for g in &groups {
        bob.send(g, b"still here").await.unwrap();
    }
    let mut ea = alice.events();
    alice.sync().await.unwrap();
    let got: Vec<ClientEvent> = drain(&mut ea)
        .into_iter()
        .filter(|e| matches!(e, ClientEvent::Message { .. }))
        .collect();
    assert_eq!(got.len(), 3);
    for g in &groups {
        let want = ClientEvent::Message {
            group: g.clone(),
            sender: identity("bob"),
            epoch: if g == &groups[2] { 2 } else { 1 },
            data: b"still here".to_vec(),
        };
        assert!(got.contains(&want), "{want:?} in {got:#?}");
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_before_expiry_survives_a_restart() {
    // Leaf certificates live 3 days; Alice renews 4 days before expiry,
    // so at once.
    let mut env = Env::start_with(3 * 86_400).await;
    let mut cfg = env.config("alice");
    cfg.schedule.renew_margin_secs = 4 * 86_400;
    let alice = env.enrol(cfg.clone()).await;
    let (_, serial, not_after) = alice.certificate().unwrap();
    let mut ea = alice.events();
    assert!(alice.renew_if_due().await.unwrap());
    let (chain, new_serial, new_not_after) = alice.certificate().unwrap();
    assert_ne!(new_serial, serial);
    assert!(new_not_after >= not_after);
    assert_eq!(
        drain(&mut ea),
        vec![ClientEvent::OwnCredential(OwnCredentialEvent::Renewed {
            serial: new_serial.clone(),
            not_after: new_not_after,
        })]
    );
    // Same key, same identity.
    let info = hsmls_credentials::leaf_info(&chain[0]).unwrap();
    assert_eq!(info.identity, identity("alice"));
    // The renewed certificate is what a restart finds, and it works with
    // the DS (a new session) and in a new group.
    alice.shutdown().await;
    drop(alice);
    let alice = ClientRuntime::open(cfg).await.unwrap();
    env.track(&alice);
    assert_eq!(alice.certificate().unwrap().1, new_serial);
    let bob = env.client("bob").await;
    let g = alice.create_group(GroupMode::Blind).await.unwrap();
    assert_eq!(alice.add_members(&g, &[&identity("bob")]).await.unwrap(), 1);
    bob.sync().await.unwrap();
    assert_agree(&[&alice, &bob], &g, 1).await;

    // Revoked by the operator: Alice learns it at her next CRL refresh.
    env.revoke(&alice).await;
    let mut ea = alice.events();
    alice.refresh_crl().await.unwrap();
    assert_eq!(
        drain(&mut ea),
        vec![ClientEvent::OwnCredential(OwnCredentialEvent::Revoked {
            serial: new_serial,
        })]
    );
    env.stop().await;
}
