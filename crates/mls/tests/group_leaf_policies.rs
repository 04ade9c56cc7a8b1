//! KeyPackage and leaf policies: the `last_resort` KeyPackage extension
//! (its init key survives joins; other init keys are destroyed, RFC 9420
//! §9.2), the `application_id` leaf extension (§5.3.3), KeyPackage
//! lifetimes checked against `now` (§7.2, §10.1), `required_capabilities`
//! (§11.1) and the PrivateMessage padding policy of the group config
//! (§6.3.1).

use std::sync::Arc;

use hsmls::KeyPackageError;
use hsmls::PaddingPolicy;
use hsmls::internal::codec::{MlsMessage, MlsMessageBody};
use hsmls::wire::LAST_RESORT;
use hsmls::wire::{Credential, Decode, Extension, ExtensionType, RequiredCapabilities};
use hsmls::{
    BasicCredentialValidator, Client, CredentialValidator, Group, GroupError, JoinOptions,
    KeyPackageBundle, KeyPackageConfig, ProcessedMessage, ProposalRule, Signer,
};
use hsmls_custody::{CustodyError, KeyCustody, SoftwareCustody};

const NOW: u64 = 1_750_000_000;

fn validator() -> Arc<dyn CredentialValidator> {
    Arc::new(BasicCredentialValidator::default())
}

fn signer(name: &str) -> Signer {
    Signer::generate(
        Arc::new(SoftwareCustody::new()),
        Credential::Basic(name.as_bytes().to_vec()),
    )
    .unwrap()
}

fn create(name: &str, extensions: Vec<Extension>) -> Group {
    Client::new(signer(name), validator())
        .create_group(hsmls::random_group_id(), extensions, NOW)
        .unwrap()
}

/// `group` adds the member of `kp` by Welcome and merges; the new member
/// (`signer`) joins from that Welcome.
fn add_and_join(group: &mut Group, signer: Signer, kp: &KeyPackageBundle) -> Group {
    let out = group
        .add_members(std::slice::from_ref(&kp.key_package), NOW)
        .unwrap();
    group.merge_pending_commit().unwrap();
    Client::new(signer, validator())
        .join_from_welcome(kp, &out.welcome.unwrap(), JoinOptions::default())
        .unwrap()
}

/// Whether the custody can still use `key` (ECDH with its own public key).
fn usable(custody: &dyn KeyCustody, key: &hsmls_custody::KeyRef) -> bool {
    custody.dh(key, key.public_key().as_bytes()).is_ok()
}

/// Whether `key` is gone from the custody (ECDH finds no key).
fn destroyed(custody: &dyn KeyCustody, key: &hsmls_custody::KeyRef) -> bool {
    matches!(
        custody.dh(key, key.public_key().as_bytes()),
        Err(CustodyError::KeyNotFound(_))
    )
}

#[test]
fn last_resort_key_package_joins_twice_and_keeps_its_init_key() {
    let bob = signer("bob");
    let kp = Client::new(bob.clone(), validator())
        .generate_key_package(&KeyPackageConfig::new(NOW - 10, 3600).last_resort())
        .unwrap();
    assert!(kp.is_last_resort());
    let wire = kp.key_package.as_wire();
    assert!(
        wire.extensions
            .iter()
            .any(|e| e.extension_type == LAST_RESORT && e.extension_data.is_empty())
    );
    assert!(
        wire.leaf_node
            .capabilities
            .extensions
            .contains(&LAST_RESORT)
    );
    let validated = kp.key_package.clone();

    for founder in ["alice", "carol"] {
        let mut g = create(founder, vec![]);
        let out = g
            .add_members(std::slice::from_ref(&validated), NOW)
            .unwrap();
        g.merge_pending_commit().unwrap();
        let b = Client::new(bob.clone(), validator())
            .join_from_welcome(&kp, &out.welcome.unwrap(), JoinOptions::default())
            .unwrap();
        assert_eq!(b.epoch_authenticator(), g.epoch_authenticator());
        assert!(
            usable(bob.custody.as_ref(), &kp.init_key),
            "the last-resort init key was destroyed"
        );
    }

    // An ordinary KeyPackage's init key is destroyed on join (§9.2).
    let kp = Client::new(bob.clone(), validator())
        .generate_key_package(&KeyPackageConfig::new(NOW - 10, 3600))
        .unwrap();
    assert!(!kp.is_last_resort());
    let mut g = create("dave", vec![]);
    let out = g
        .add_members(std::slice::from_ref(&kp.key_package), NOW)
        .unwrap();
    g.merge_pending_commit().unwrap();
    let welcome = out.welcome.unwrap();
    assert!(usable(bob.custody.as_ref(), &kp.init_key));
    Client::new(bob.clone(), validator())
        .join_from_welcome(&kp, &welcome, JoinOptions::default())
        .unwrap();
    assert!(destroyed(bob.custody.as_ref(), &kp.init_key));
    // ... so the same Welcome cannot be used twice.
    let r = Client::new(bob.clone(), validator()).join_from_welcome(
        &kp,
        &welcome,
        JoinOptions::default(),
    );
    assert!(
        matches!(r, Err(GroupError::Custody(CustodyError::KeyNotFound(_)))),
        "{:?}",
        r.err()
    );
}

/// A last-resort KeyPackage's leaf key is shared by every group joined
/// with it: a group replacing it (here by a self-update) must not destroy
/// it, or the other groups could no longer decrypt a path to it. The
/// application destroys it with the bundle.
#[test]
fn last_resort_leaf_key_survives_an_update_in_another_group() {
    let bob = signer("bob");
    let kp = Client::new(bob.clone(), validator())
        .generate_key_package(&KeyPackageConfig::new(NOW - 10, 3600).last_resort())
        .unwrap();
    let validated = kp.key_package.clone();
    let join = |founder: &mut Group| {
        let out = founder
            .add_members(std::slice::from_ref(&validated), NOW)
            .unwrap();
        founder.merge_pending_commit().unwrap();
        Client::new(bob.clone(), validator())
            .join_from_welcome(&kp, &out.welcome.unwrap(), JoinOptions::default())
            .unwrap()
    };
    let mut alice = create("alice", vec![]);
    let mut carol = create("carol", vec![]);
    let mut bob_a = join(&mut alice);
    let mut bob_b = join(&mut carol);
    assert_eq!(bob_a.own_leaf_key(), &kp.encryption_key);
    assert_eq!(bob_b.own_leaf_key(), &kp.encryption_key);

    // Group A: Bob replaces the shared leaf key by a commit with a path.
    let out = bob_a.self_update(NOW).unwrap();
    bob_a.merge_pending_commit().unwrap();
    let ProcessedMessage::StagedCommit(s) = alice.process_incoming(&out.commit, NOW).unwrap()
    else {
        panic!("expected a commit");
    };
    alice.merge_staged_commit(s).unwrap();
    assert_eq!(alice.epoch_authenticator(), bob_a.epoch_authenticator());
    assert_ne!(bob_a.own_leaf_key(), &kp.encryption_key);
    assert!(
        usable(bob.custody.as_ref(), &kp.encryption_key),
        "group A destroyed the shared last-resort leaf key"
    );

    // Group B: Carol commits with a path, whose path secret is encrypted
    // to Bob's leaf, i.e. to the shared key.
    let out = carol.self_update(NOW).unwrap();
    carol.merge_pending_commit().unwrap();
    let ProcessedMessage::StagedCommit(s) = bob_b.process_incoming(&out.commit, NOW).unwrap()
    else {
        panic!("expected a commit");
    };
    bob_b.merge_staged_commit(s).unwrap();
    assert_eq!(bob_b.epoch_authenticator(), carol.epoch_authenticator());
    let m = carol.encrypt_application(b"still here").unwrap();
    match bob_b.process_incoming(&m, NOW).unwrap() {
        ProcessedMessage::ApplicationMessage { data, .. } => assert_eq!(data, b"still here"),
        other => panic!("unexpected {other:?}"),
    }

    // Bob's own update in group B does not destroy the shared key either.
    let out = bob_b.self_update(NOW).unwrap();
    bob_b.merge_pending_commit().unwrap();
    let ProcessedMessage::StagedCommit(s) = carol.process_incoming(&out.commit, NOW).unwrap()
    else {
        panic!("expected a commit");
    };
    carol.merge_staged_commit(s).unwrap();
    assert_eq!(bob_b.epoch_authenticator(), carol.epoch_authenticator());
    assert!(usable(bob.custody.as_ref(), &kp.encryption_key));
    // The keys that replaced it are the groups' own and stay usable.
    assert!(usable(bob.custody.as_ref(), bob_a.own_leaf_key()));
    assert!(usable(bob.custody.as_ref(), bob_b.own_leaf_key()));

    // Rotating the last-resort KeyPackage destroys its keys.
    kp.destroy(&bob).unwrap();
    assert!(destroyed(bob.custody.as_ref(), &kp.encryption_key));
    assert!(destroyed(bob.custody.as_ref(), &kp.init_key));
    assert!(usable(bob.custody.as_ref(), bob_a.own_leaf_key()));
}

#[test]
fn application_id_is_set_and_read() {
    let bob = signer("bob");
    let kp = Client::new(bob.clone(), validator())
        .generate_key_package(
            &KeyPackageConfig::new(NOW - 10, 3600)
                .application_id(b"bob's phone".to_vec())
                .unwrap(),
        )
        .unwrap();
    let mut a = create("alice", vec![]);
    let mut b = add_and_join(&mut a, bob, &kp);
    let bi = b.own_leaf_index();
    let ai = a.own_leaf_index();
    assert_eq!(
        a.application_id(bi).unwrap().as_deref(),
        Some(&b"bob's phone"[..])
    );
    assert_eq!(
        b.application_id(bi).unwrap().as_deref(),
        Some(&b"bob's phone"[..])
    );
    assert_eq!(b.application_id(ai).unwrap(), None);
    // The leaf keeps it across a self-update by commit.
    let out = b.self_update(NOW).unwrap();
    b.merge_pending_commit().unwrap();
    let ProcessedMessage::StagedCommit(s) = a.process_incoming(&out.commit, NOW).unwrap() else {
        panic!("expected a commit");
    };
    a.merge_staged_commit(s).unwrap();
    assert_eq!(
        a.application_id(bi).unwrap().as_deref(),
        Some(&b"bob's phone"[..])
    );
    assert!(matches!(
        a.application_id(hsmls::wire::LeafIndex(7)),
        Err(GroupError::NotAMember(hsmls::wire::LeafIndex(7)))
    ));
}

#[test]
fn key_packages_outside_their_lifetime_are_rejected() {
    let bob = signer("bob");
    // Valid for [NOW + 100, NOW + 200].
    let future = Client::new(bob.clone(), validator())
        .generate_key_package(&KeyPackageConfig::new(NOW + 100, 100))
        .unwrap();
    // Valid for [NOW - 200, NOW - 100].
    let expired = Client::new(bob.clone(), validator())
        .generate_key_package(&KeyPackageConfig::new(NOW - 200, 100))
        .unwrap();
    let mut a = create("alice", vec![]);
    for kp in [&future, &expired] {
        let before = a.state_snapshot();
        let r = a.add_members(std::slice::from_ref(&kp.key_package), NOW);
        assert!(
            matches!(
                r,
                Err(GroupError::KeyPackage(KeyPackageError::Expired {
                    now: NOW,
                    ..
                }))
            ),
            "{r:?}"
        );
        assert!(a.state_snapshot() == before);
        assert!(matches!(
            a.propose_add(&kp.key_package, NOW),
            Err(GroupError::KeyPackage(KeyPackageError::Expired { .. }))
        ));
    }
    // Within the lifetime it is accepted.
    assert!(
        a.add_members(std::slice::from_ref(&future.key_package), NOW + 150)
            .is_ok()
    );
    a.discard_pending_commit().unwrap();

    // A receiver checks the lifetime against its own `now`: a commit adding
    // a KeyPackage valid at the committer's time but expired at the
    // receiver's is refused with the receiver's state unchanged.
    let carol = signer("carol");
    let kc = Client::new(carol.clone(), validator())
        .generate_key_package(&KeyPackageConfig::new(NOW - 10, 3600))
        .unwrap();
    let mut c = add_and_join(&mut a, carol, &kc);
    let dave = signer("dave");
    let kd = Client::new(dave.clone(), validator())
        .generate_key_package(&KeyPackageConfig::new(NOW - 10, 100))
        .unwrap();
    let out = a
        .add_members(std::slice::from_ref(&kd.key_package), NOW)
        .unwrap();
    let before = c.state_snapshot();
    let r = c.process_incoming(&out.commit, NOW + 1000);
    assert!(
        matches!(
            r,
            Err(GroupError::KeyPackage(KeyPackageError::Expired { .. }))
        ),
        "{r:?}"
    );
    assert!(c.state_snapshot() == before);
    assert!(matches!(
        c.process_incoming(&out.commit, NOW).unwrap(),
        ProcessedMessage::StagedCommit(_)
    ));
}

#[test]
fn required_capabilities_gate_adds() {
    let rc = RequiredCapabilities {
        extension_types: vec![ExtensionType(0xff01)],
        proposal_types: vec![],
        credential_types: vec![],
    };
    let data = hsmls::wire::Encode::encode(&rc).unwrap();
    // The founder's own leaf must support it too: give it through the
    // leaf-capabilities-free create and check the add path only.
    let mut a = create(
        "alice",
        vec![Extension {
            extension_type: ExtensionType::REQUIRED_CAPABILITIES,
            extension_data: data,
        }],
    );
    let bob = signer("bob");
    let plain = Client::new(bob.clone(), validator())
        .generate_key_package(&KeyPackageConfig::new(NOW - 10, 3600))
        .unwrap();
    let r = a.add_members(std::slice::from_ref(&plain.key_package), NOW);
    assert!(
        matches!(
            r,
            Err(GroupError::InvalidProposal(
                ProposalRule::RequiredCapabilitiesNotMet
            ))
        ),
        "{r:?}"
    );
    let mut config = KeyPackageConfig::new(NOW - 10, 3600);
    let mut caps = hsmls::internal::key_package::default_capabilities(
        config.cipher_suite,
        bob.credential.credential_type(),
    );
    caps.extensions.push(ExtensionType(0xff01));
    config.capabilities = Some(caps);
    let able = Client::new(bob.clone(), validator())
        .generate_key_package(&config)
        .unwrap();
    assert!(
        a.add_members(std::slice::from_ref(&able.key_package), NOW)
            .is_ok()
    );
}

/// The encoded length of a PrivateMessage's ciphertext.
fn ciphertext_len(message: &[u8]) -> usize {
    match MlsMessage::decode(message).unwrap().body {
        MlsMessageBody::PrivateMessage(pm) => pm.ciphertext.len(),
        _ => panic!("not a PrivateMessage"),
    }
}

#[test]
fn padding_policy_of_the_group_config() {
    let mut a = create("alice", vec![]);
    let bob = signer("bob");
    let kp = Client::new(bob.clone(), validator())
        .generate_key_package(&KeyPackageConfig::new(NOW - 10, 3600))
        .unwrap();
    let mut b = add_and_join(&mut a, bob, &kp);

    // Without padding, lengths differ with the content.
    let short = a.encrypt_application(b"a").unwrap();
    let long = a.encrypt_application(&[7u8; 40]).unwrap();
    assert_ne!(ciphertext_len(&short), ciphertext_len(&long));

    // With 256-byte blocks, both fit one block (plus the 16-byte AEAD tag).
    let mut config = a.config().clone();
    config.padding = PaddingPolicy::multiple_of(256);
    a.set_config(config);
    assert_eq!(a.config().padding.block(), 256);
    let mut sizes = Vec::new();
    for data in [&b"a"[..], &[7u8; 40][..], &[9u8; 150][..]] {
        let m = a.encrypt_application(data).unwrap();
        let n = ciphertext_len(&m);
        assert_eq!((n - 16) % 256, 0, "ciphertext of {n} bytes is not padded");
        sizes.push(n);
        match b.process_incoming(&m, NOW).unwrap() {
            ProcessedMessage::ApplicationMessage { data: got, .. } => assert_eq!(got, data),
            other => panic!("{other:?}"),
        }
    }
    assert!(sizes.iter().all(|s| *s == sizes[0]));
    // A longer message takes more blocks.
    let m = a.encrypt_application(&[1u8; 600]).unwrap();
    let n = ciphertext_len(&m);
    assert_eq!((n - 16) % 256, 0);
    assert!(n > sizes[0]);
    // Handshakes are padded too.
    let p = a.propose_update().unwrap();
    assert_eq!((ciphertext_len(&p.message) - 16) % 256, 0);
    assert!(matches!(
        b.process_incoming(&p, NOW).unwrap(),
        ProcessedMessage::Proposal { .. }
    ));
}
