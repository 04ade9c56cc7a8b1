//! The application's API (`hsmls::Client` and what it hands out), used
//! only through public paths: a client's group configuration reaches the
//! groups it creates and joins; a KeyPackage is validated once and given
//! to a group as a value, which still checks what depends on the group;
//! a join or a new member's proposal with another client's KeyPackage is
//! refused; `RoutingInfo` reads what each kind of `MLSMessage` carries in
//! clear; a sent proposal names its reference; leaves are `LeafIndex` in
//! errors; reinit and branch follow the client's suite; a loaded group
//! keeps the signer it was saved with.

use std::sync::Arc;

use hsmls::error::CodecError;
use hsmls::wire::{
    CipherSuite, ContentType, LeafIndex, ProtocolVersion, ReInit, RoutingInfo, Sender, WireFormat,
};
use hsmls::{
    BasicCredentialValidator, Client, Credential, CredentialValidator, Group, GroupConfig,
    GroupError, HandshakeFraming, JoinOptions, KeyPackageConfig, KeyPackageError, ProcessedMessage,
    ReInitRule, Signer,
};
use hsmls_custody::{KeyCustody, SoftwareCustody};

const NOW: u64 = 1_750_000_000;

fn validator() -> Arc<dyn CredentialValidator> {
    Arc::new(BasicCredentialValidator::default())
}

fn client(name: &str) -> Client {
    let signer = Signer::generate(
        Arc::new(SoftwareCustody::new()),
        Credential::Basic(name.as_bytes().to_vec()),
    )
    .unwrap();
    Client::new(signer, validator())
}

/// Alice's group with Bob, both with `config`.
fn pair(config: &GroupConfig) -> (Client, Group, Client, Group) {
    let alice = client("alice").with_group_config(config.clone());
    let bob = client("bob").with_group_config(config.clone());
    let bundle = bob
        .generate_key_package(&KeyPackageConfig::new(NOW - 10, 3600))
        .unwrap();
    let key_package = alice
        .validate_key_package(&bundle.to_bytes().unwrap(), NOW)
        .unwrap();
    let mut a = alice
        .create_group(b"client api".to_vec(), Vec::new(), NOW)
        .unwrap();
    let out = a.add_members(&[key_package], NOW).unwrap();
    a.merge_pending_commit().unwrap();
    let b = bob
        .join_from_welcome(&bundle, &out.welcome.unwrap(), JoinOptions::default())
        .unwrap();
    (alice, a, bob, b)
}

#[test]
fn the_client_config_reaches_its_groups_and_key_packages_are_validated_once() {
    let mut config = GroupConfig::default();
    config.handshake_framing = HandshakeFraming::Public;
    config.max_past_epochs = 0;
    let (alice, a, _bob, b) = pair(&config);
    assert_eq!(alice.group_config(), &config);
    assert_eq!(a.config(), &config);
    assert_eq!(b.config(), &config);
    assert_eq!(a.epoch_authenticator(), b.epoch_authenticator());
    assert_eq!(b.own_leaf_index(), LeafIndex(1));
    assert_eq!(
        b.member(LeafIndex(0)).unwrap().credential,
        alice.signer().credential
    );

    // Validation: the bundle's own KeyPackage, bytes that are not one, and
    // a KeyPackage outside its lifetime.
    let carol = client("carol");
    let bundle = carol
        .generate_key_package(&KeyPackageConfig::new(NOW, 60))
        .unwrap();
    let bytes = bundle.to_bytes().unwrap();
    let kp = alice.validate_key_package(&bytes, NOW + 1).unwrap();
    assert!(kp == bundle.key_package);
    assert_eq!(kp.reference(), bundle.key_package.reference());
    let e = alice
        .validate_key_package(&bytes[..bytes.len() - 1], NOW)
        .unwrap_err();
    assert!(
        matches!(e, KeyPackageError::Codec(CodecError::Truncated)),
        "{e:?}"
    );
    assert!(matches!(
        alice.validate_key_package(&bytes, NOW + 61),
        Err(KeyPackageError::Expired { now, .. }) if now == NOW + 61
    ));
}

#[test]
fn a_group_checks_what_a_validated_key_package_depends_on() {
    let (alice, mut a, _bob, _b) = pair(&GroupConfig::default());
    let carol = client("carol");
    let bundle = carol
        .generate_key_package(&KeyPackageConfig::new(NOW, 60))
        .unwrap();
    let kp = alice
        .validate_key_package(&bundle.to_bytes().unwrap(), NOW)
        .unwrap();
    // Valid when validated, expired when added: refused, nothing changed.
    let before = a.state_snapshot();
    assert!(matches!(
        a.add_members(std::slice::from_ref(&kp), NOW + 61),
        Err(GroupError::KeyPackage(KeyPackageError::Expired { .. }))
    ));
    assert!(matches!(
        a.propose_add(&kp, NOW + 61),
        Err(GroupError::KeyPackage(KeyPackageError::Expired { .. }))
    ));
    assert!(a.state_snapshot() == before);
    // The same KeyPackage twice in one commit.
    assert!(matches!(
        a.add_members(&[kp.clone(), kp.clone()], NOW),
        Err(GroupError::InvalidProposal(
            hsmls::ProposalRule::SameClientAddedTwice
        ))
    ));
    assert!(a.state_snapshot() == before);
    let out = a.add_members(&[kp], NOW).unwrap();
    assert_eq!(out.adds[0].index, LeafIndex(2));
    a.merge_pending_commit().unwrap();
    let c = carol
        .join_from_welcome(&bundle, &out.welcome.unwrap(), JoinOptions::default())
        .unwrap();
    assert_eq!(c.epoch_authenticator(), a.epoch_authenticator());
}

#[test]
fn another_clients_key_package_is_refused_and_its_keys_stay() {
    let alice = client("alice");
    let mut a = alice
        .create_group(b"signer".to_vec(), Vec::new(), NOW)
        .unwrap();
    let bob = client("bob");
    let bundle = bob
        .generate_key_package(&KeyPackageConfig::new(NOW - 10, 3600))
        .unwrap();
    let out = a
        .add_members(std::slice::from_ref(&bundle.key_package), NOW)
        .unwrap();
    a.merge_pending_commit().unwrap();
    let welcome = out.welcome.unwrap();
    // Mallory holds Bob's bundle but not his signature key.
    let mallory = client("bob");
    assert!(matches!(
        mallory.join_from_welcome(&bundle, &welcome, JoinOptions::default()),
        Err(GroupError::SignerMismatch)
    ));
    assert!(matches!(
        mallory.new_member_add_proposal(&bundle.key_package, a.group_id(), a.epoch()),
        Err(GroupError::SignerMismatch)
    ));
    // Bob's init key was not used: he still joins.
    let b = bob
        .join_from_welcome(&bundle, &welcome, JoinOptions::default())
        .unwrap();
    assert_eq!(b.epoch_authenticator(), a.epoch_authenticator());
    // Now it is gone (RFC 9420 §9.2).
    assert!(bob.custody().find(bundle.init_key.uri()).is_err());
}

#[test]
fn routing_info_reads_what_each_message_carries_in_clear() {
    let mut config = GroupConfig::default();
    config.handshake_framing = HandshakeFraming::Public;
    let alice = client("alice").with_group_config(config);
    let mut a = alice
        .create_group(b"routing".to_vec(), Vec::new(), NOW)
        .unwrap();
    let bob = client("bob");
    let bundle = bob
        .generate_key_package(&KeyPackageConfig::new(NOW - 10, 3600))
        .unwrap();

    // A KeyPackage.
    let kp_bytes = bundle.to_bytes().unwrap();
    let info = RoutingInfo::parse(&kp_bytes).unwrap();
    assert_eq!(info.wire_format, WireFormat::KEY_PACKAGE);
    assert_eq!(
        info.cipher_suite,
        Some(CipherSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256)
    );
    assert_eq!((info.group_id, info.epoch, info.sender), (None, None, None));

    // A commit (PublicMessage) and its Welcome.
    let out = a
        .add_members(std::slice::from_ref(&bundle.key_package), NOW)
        .unwrap();
    let info = RoutingInfo::parse(&out.commit).unwrap();
    assert_eq!(info.wire_format, WireFormat::PUBLIC_MESSAGE);
    assert_eq!(info.group_id.as_deref(), Some(&b"routing"[..]));
    assert_eq!(info.epoch, Some(0));
    assert_eq!(info.content_type, Some(ContentType::Commit));
    assert_eq!(info.sender, Some(Sender::Member(LeafIndex(0))));
    let welcome = out.welcome.unwrap();
    let info = RoutingInfo::parse(&welcome).unwrap();
    assert_eq!(info.wire_format, WireFormat::WELCOME);
    assert_eq!(
        info.new_members,
        vec![bundle.key_package.reference().clone()]
    );
    assert_eq!((info.group_id, info.epoch), (None, None));
    a.merge_pending_commit().unwrap();
    let mut b = bob
        .join_from_welcome(&bundle, &welcome, JoinOptions::default())
        .unwrap();

    // An application message (PrivateMessage): the sender is encrypted.
    let m = b.encrypt_application(b"hi").unwrap();
    let info = RoutingInfo::parse(&m).unwrap();
    assert_eq!(info.wire_format, WireFormat::PRIVATE_MESSAGE);
    assert_eq!(info.group_id.as_deref(), Some(&b"routing"[..]));
    assert_eq!(info.epoch, Some(1));
    assert_eq!(info.content_type, Some(ContentType::Application));
    assert_eq!(info.sender, None);

    // A proposal (PublicMessage) and a GroupInfo.
    let p = a.propose_update().unwrap();
    let info = RoutingInfo::parse(&p.message).unwrap();
    assert_eq!(info.content_type, Some(ContentType::Proposal));
    assert_eq!(info.sender, Some(Sender::Member(LeafIndex(0))));
    let gi = a.group_info().unwrap();
    let info = RoutingInfo::parse(&gi).unwrap();
    assert_eq!(info.wire_format, WireFormat::GROUP_INFO);
    assert_eq!(info.epoch, Some(1));
    assert_eq!(info.group_id.as_deref(), Some(&b"routing"[..]));
    assert_eq!(info.sender, Some(Sender::Member(a.own_leaf_index())));

    // Not an MLSMessage.
    assert!(matches!(
        RoutingInfo::parse(&m[..m.len() - 1]),
        Err(CodecError::Truncated)
    ));
    let mut longer = m.clone();
    longer.push(0);
    assert!(matches!(
        RoutingInfo::parse(&longer),
        Err(CodecError::TrailingData)
    ));
    assert!(matches!(
        RoutingInfo::parse(&[]),
        Err(CodecError::Truncated)
    ));
    assert!(matches!(
        RoutingInfo::parse(&[0, 1, 0, 9]),
        Err(CodecError::UnknownValue(9))
    ));
}

#[test]
fn a_sent_proposal_names_its_reference_and_leaves_are_leaf_indices() {
    let (_alice, mut a, _bob, mut b) = pair(&GroupConfig::default());
    let sent = b.propose_update().unwrap();
    match a.process_incoming(&sent, NOW).unwrap() {
        ProcessedMessage::Proposal {
            sender, reference, ..
        } => {
            assert_eq!(sender, Sender::Member(LeafIndex(1)));
            assert_eq!(reference, sent.reference);
        }
        other => panic!("expected a proposal, got {other:?}"),
    }
    assert_eq!(a.pending_proposals()[0].reference, sent.reference);
    assert!(b.discard_proposal(&sent.reference));
    assert!(!b.discard_proposal(&sent.reference));
    assert!(matches!(
        a.propose_remove(LeafIndex(9)),
        Err(GroupError::NotAMember(LeafIndex(9)))
    ));
    assert_eq!(
        GroupError::NotAMember(LeafIndex(9)).to_string(),
        "leaf 9 is not a member"
    );
}

#[test]
fn reinit_and_branch_follow_the_clients_suite() {
    let (alice, mut a, bob, mut b) = pair(&GroupConfig::default());
    let mut other_suite = GroupConfig::default();
    other_suite.cipher_suite = CipherSuite(0x0003);
    // A branch keeps the group's suite: a client of another suite cannot.
    let kp = bob
        .generate_key_package(&KeyPackageConfig::new(NOW - 10, 3600))
        .unwrap();
    assert!(matches!(
        alice.clone().with_group_config(other_suite.clone()).branch(
            &a,
            b"branch".to_vec(),
            Vec::new(),
            std::slice::from_ref(&kp.key_package),
            NOW
        ),
        Err(GroupError::ReInit(ReInitRule::BranchChangesVersionOrSuite))
    ));
    // A reinit to suite 0x0002 by a client of another suite is refused.
    let reinit = ReInit {
        group_id: b"new".to_vec(),
        version: ProtocolVersion::MLS10,
        cipher_suite: CipherSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256,
        extensions: Vec::new(),
    };
    let out = a.commit_reinit(reinit, NOW).unwrap();
    a.merge_pending_commit().unwrap();
    let ProcessedMessage::StagedCommit(staged) = b.process_incoming(&out.commit, NOW).unwrap()
    else {
        panic!("the ReInit commit");
    };
    b.merge_staged_commit(staged).unwrap();
    assert!(matches!(
        alice.clone().with_group_config(other_suite).reinit_group(
            &a,
            std::slice::from_ref(&kp.key_package),
            NOW
        ),
        Err(GroupError::ReInit(ReInitRule::CipherSuiteMismatch))
    ));
    let (new_a, out) = alice
        .reinit_group(&a, std::slice::from_ref(&kp.key_package), NOW)
        .unwrap();
    let new_b = bob
        .join_reinit(&b, &kp, &out.welcome.unwrap(), JoinOptions::default())
        .unwrap();
    assert_eq!(new_a.epoch_authenticator(), new_b.epoch_authenticator());
}

#[test]
fn a_loaded_group_keeps_the_signer_it_was_saved_with() {
    let custody = Arc::new(SoftwareCustody::new());
    let old = Signer::generate(
        custody.clone() as Arc<dyn KeyCustody>,
        Credential::Basic(b"alice".to_vec()),
    )
    .unwrap();
    let g = Client::new(old.clone(), validator())
        .create_group(b"rotated".to_vec(), Vec::new(), NOW)
        .unwrap();
    let saved = g.save(custody.state_sealer()).unwrap();
    // The client's signature key was rotated since: the group is loaded
    // from the same custody with its own key.
    let rotated = Client::new(
        Signer::generate(
            custody.clone() as Arc<dyn KeyCustody>,
            Credential::Basic(b"alice".to_vec()),
        )
        .unwrap(),
        validator(),
    );
    let loaded = rotated
        .load_saved_group(custody.state_sealer(), &saved)
        .unwrap();
    assert_eq!(loaded.signer().signature_key, old.signature_key);
    assert_ne!(
        loaded.signer().signature_key,
        rotated.signer().signature_key
    );
    assert_eq!(loaded.epoch_authenticator(), g.epoch_authenticator());
}
