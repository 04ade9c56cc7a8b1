//! A member's own messages coming back. A Delivery Service sends a group's
//! messages to every member, the sender included (RFC 9750 §5.2), and
//! orders one commit per epoch (RFC 9420 §14):
//!
//! - the member's pending commit coming back is merged, exactly once, and
//!   reported as `OwnCommit`; later copies (or a copy after the
//!   application merged it) are `OwnMessage`;
//! - when another member's commit wins the epoch, the loser processes the
//!   winner's commit normally, learns what its lost commit was to do
//!   (`StagedCommit::lost_commit`), ends in the same epoch as everyone with
//!   the same epoch authenticator, and commits its changes again;
//! - its own application messages and proposals (PrivateMessage and
//!   PublicMessage framing) are recognised, not errors;
//! - a forged "own" message (the member's sender leaf, other bytes) is
//!   still refused with its exact error, the state unchanged.

use std::sync::Arc;

use hsmls::error::ProtectionError;
use hsmls::error::SecretTreeError;
use hsmls::internal::codec::{MlsMessage, MlsMessageBody};
use hsmls::wire::LeafIndex;
use hsmls::wire::{ContentType, Credential, Decode, Encode, Proposal};
use hsmls::{
    BasicCredentialValidator, Client, CommitOptions, CredentialValidator, Group, GroupConfig,
    GroupError, HandshakeFraming, JoinOptions, KeyPackageBundle, KeyPackageConfig, MessageRule,
    ProcessedMessage, SENT_MESSAGES_KEPT, Signer,
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

fn key_package(s: &Signer) -> KeyPackageBundle {
    Client::new(s.clone(), validator())
        .generate_key_package(&KeyPackageConfig::new(NOW - 10, 3600))
        .unwrap()
}

fn config(framing: HandshakeFraming) -> GroupConfig {
    let mut config = GroupConfig::default();
    config.handshake_framing = framing;
    config
}

/// A group of `n` members (leaf i = member i), built by one add commit.
fn group_of(n: usize, config: &GroupConfig) -> Vec<Group> {
    let mut alice = Client::new(signer("member-0"), validator())
        .with_group_config(config.clone())
        .create_group(b"echo".to_vec(), Vec::new(), NOW)
        .unwrap();
    let joiners: Vec<(Signer, KeyPackageBundle)> = (1..n)
        .map(|i| {
            let s = signer(&format!("member-{i}"));
            let kp = key_package(&s);
            (s, kp)
        })
        .collect();
    let refs: Vec<hsmls::KeyPackage> = joiners
        .iter()
        .map(|(_, kp)| kp.key_package.clone())
        .collect();
    let out = alice.add_members(&refs, NOW).unwrap();
    alice.merge_pending_commit().unwrap();
    let mut groups = vec![alice];
    for (s, kp) in joiners {
        groups.push(
            Client::new(s, validator())
                .with_group_config(config.clone())
                .join_from_welcome(&kp, out.welcome.as_ref().unwrap(), JoinOptions::default())
                .unwrap(),
        );
    }
    groups
}

/// Processes and merges another member's commit; returns what the staged
/// commit said about a lost commit of this member.
fn merge(g: &mut Group, commit: &[u8]) -> Option<hsmls::LostCommit> {
    let ProcessedMessage::StagedCommit(staged) = g.process_incoming(commit, NOW).unwrap() else {
        panic!("expected a staged commit");
    };
    let lost = staged.lost_commit.clone();
    g.merge_staged_commit(staged).unwrap();
    lost
}

/// Every member agrees on the epoch and its authenticator.
fn assert_agree(groups: &[&Group]) {
    for g in groups {
        assert_eq!(g.epoch(), groups[0].epoch());
        assert_eq!(g.epoch_authenticator(), groups[0].epoch_authenticator());
        assert_eq!(g.tree_hash(), groups[0].tree_hash());
    }
}

/// `bytes` come back to `g`: recognised as its own `content_type` message
/// of `epoch`, with nothing changed.
fn assert_own_message(
    g: &mut Group,
    bytes: impl AsRef<[u8]>,
    content_type: ContentType,
    epoch: u64,
) {
    let before = g.state_snapshot();
    match g.process_incoming(bytes, NOW) {
        Ok(ProcessedMessage::OwnMessage {
            content_type: t,
            epoch: e,
        }) => {
            assert_eq!(t, content_type);
            assert_eq!(e, epoch);
        }
        other => panic!("expected OwnMessage({content_type:?}, {epoch}), got {other:?}"),
    }
    assert!(
        g.state_snapshot() == before,
        "recognising an echo changed the state"
    );
}

/// `bytes` are refused; the state is unchanged.
fn rejected(g: &mut Group, bytes: impl AsRef<[u8]>) -> GroupError {
    let before = g.state_snapshot();
    let pending = g.has_pending_commit();
    let err = match g.process_incoming(bytes, NOW) {
        Ok(ev) => panic!("a forged message was accepted: {ev:?}"),
        Err(e) => e,
    };
    assert!(g.state_snapshot() == before, "state changed after {err}");
    assert_eq!(g.has_pending_commit(), pending);
    err
}

/// The committer's pending commit comes back: merged once; later copies
/// are recognised; the same when the application merged it itself.
#[test]
fn own_commit_echo_is_merged_exactly_once() {
    for framing in [HandshakeFraming::Private, HandshakeFraming::Public] {
        let mut g = group_of(3, &config(framing));
        let dave = signer("dave");
        let kd = key_package(&dave);
        let epoch = g[0].epoch();
        let mut options = CommitOptions::new();
        options.add_key_packages = vec![kd.key_package.clone()];
        options.force_path = true;
        let out = g[0].commit(options, NOW).unwrap();
        let fresh = g[0].pending_leaf_key().cloned().expect("a path");
        for i in [1, 2] {
            assert!(merge(&mut g[i], &out.commit).is_none());
        }
        // The echo merges the pending commit.
        match g[0].process_incoming(&out.commit, NOW).unwrap() {
            ProcessedMessage::OwnCommit(own) => {
                assert_eq!(own.epoch, epoch + 1);
                assert_eq!(own.adds, out.adds);
                assert_eq!(own.adds[0].credential, dave.credential);
                assert!(own.removes.is_empty());
            }
            other => panic!("{framing:?}: expected OwnCommit, got {other:?}"),
        }
        assert!(!g[0].has_pending_commit());
        assert_eq!(g[0].epoch(), epoch + 1);
        assert_eq!(g[0].own_leaf_key(), &fresh);
        assert_agree(&[&g[0], &g[1], &g[2]]);
        // A second and a third copy are recognised, not merged again.
        for _ in 0..2 {
            assert_own_message(&mut g[0], &out.commit, ContentType::Commit, epoch);
        }
        assert!(matches!(
            g[0].merge_pending_commit(),
            Err(GroupError::NoPendingCommit)
        ));
        // Dave joins; the group works.
        let d = Client::new(dave, validator())
            .with_group_config(config(framing))
            .join_from_welcome(&kd, out.welcome.as_ref().unwrap(), JoinOptions::default())
            .unwrap();
        g.push(d);
        assert_agree(&[&g[0], &g[1], &g[2], &g[3]]);

        // The application merges on the Delivery Service's answer, before
        // the echo: the echo is then recognised.
        let epoch = g[1].epoch();
        let out = g[1].self_update(NOW).unwrap();
        g[1].merge_pending_commit().unwrap();
        for i in [0, 2, 3] {
            merge(&mut g[i], &out.commit);
        }
        assert_own_message(&mut g[1], &out.commit, ContentType::Commit, epoch);
        assert_agree(&[&g[0], &g[1], &g[2], &g[3]]);
        let m = g[1].encrypt_application(b"after the echo").unwrap();
        match g[3].process_incoming(&m, NOW).unwrap() {
            ProcessedMessage::ApplicationMessage { data, .. } => {
                assert_eq!(data, b"after the echo")
            }
            other => panic!("{other:?}"),
        }
    }
}

/// Two members commit for the same epoch; the Delivery Service orders
/// Bob's first and sends both commits to everyone. Alice, the loser,
/// processes Bob's commit normally (her pending commit is discarded and its
/// fresh key destroyed), recognises her own commit, agrees with everyone,
/// and re-commits the Add she lost.
#[test]
fn lost_commit_race_gives_the_proposals_back() {
    for framing in [HandshakeFraming::Private, HandshakeFraming::Public] {
        let mut g = group_of(3, &config(framing));
        let epoch = g[0].epoch();
        let dave = signer("dave");
        let kd = key_package(&dave);
        let mut options = CommitOptions::new();
        options.add_key_packages = vec![kd.key_package.clone()];
        options.force_path = true;
        options.authenticated_data = b"alice's add".to_vec();
        let lost_out = g[0].commit(options, NOW).unwrap();
        let lost_key = g[0].pending_leaf_key().cloned().expect("a path");
        let won = g[1].self_update(NOW).unwrap();

        // The Delivery Service's order: Bob's commit, then Alice's.
        let mut rebuilt = None;
        for i in [0, 1, 2] {
            for commit in [&won.commit, &lost_out.commit] {
                let r = g[i].process_incoming(commit, NOW);
                match (i, commit == &won.commit) {
                    // Alice: the winner, staged with her lost commit.
                    (0, true) => {
                        let Ok(ProcessedMessage::StagedCommit(staged)) = r else {
                            panic!("alice: expected the winner staged, got {r:?}");
                        };
                        let lost = staged.lost_commit.clone().expect("alice lost her commit");
                        assert_eq!(lost.epoch, epoch);
                        assert_eq!(lost.adds.len(), 1);
                        assert_eq!(lost.adds[0].credential, dave.credential);
                        assert!(lost.removes.is_empty());
                        assert!(lost.force_path);
                        assert_eq!(lost.authenticated_data, b"alice's add");
                        assert!(matches!(
                            lost.proposals.as_slice(),
                            [Proposal::Add(add)] if add.key_package.leaf_node.credential == dave.credential
                        ));
                        g[0].merge_staged_commit(staged).unwrap();
                        assert!(!g[0].has_pending_commit());
                        // The lost commit's fresh leaf key is gone.
                        let custody = g[0].signer().custody.clone();
                        assert!(matches!(
                            custody.dh(&lost_key, lost_key.public_key().as_bytes()),
                            Err(CustodyError::KeyNotFound(_))
                        ));
                        assert_ne!(g[0].own_leaf_key(), &lost_key);
                        // Rebuilt on the new epoch: the same Add.
                        let again = lost.commit_options(&g[0]);
                        assert_eq!(again.add_key_packages, vec![kd.key_package.clone()]);
                        assert!(again.remove_leaves.is_empty());
                        assert!(again.force_path);
                        assert_eq!(again.authenticated_data, b"alice's add");
                        rebuilt = Some(again);
                    }
                    // Alice: her own lost commit, recognised.
                    (0, false) => match r {
                        Ok(ProcessedMessage::OwnMessage {
                            content_type: ContentType::Commit,
                            epoch: e,
                        }) => assert_eq!(e, epoch),
                        other => panic!("alice: expected her lost commit, got {other:?}"),
                    },
                    // Bob: his own commit, merged.
                    (1, true) => assert!(
                        matches!(r, Ok(ProcessedMessage::OwnCommit(ref own)) if own.epoch == epoch + 1),
                        "bob: {r:?}"
                    ),
                    // Bob and Carol: Alice's commit is for a past epoch.
                    (_, false) => assert!(
                        matches!(
                            r,
                            Err(GroupError::WrongEpoch { message, current })
                                if message == epoch && current == epoch + 1
                        ),
                        "member {i}: {r:?}"
                    ),
                    (_, true) => {
                        let Ok(ProcessedMessage::StagedCommit(staged)) = r else {
                            panic!("carol: expected a staged commit, got {r:?}");
                        };
                        assert!(staged.lost_commit.is_none());
                        g[i].merge_staged_commit(staged).unwrap();
                    }
                }
            }
        }
        assert_agree(&[&g[0], &g[1], &g[2]]);
        assert_eq!(g[0].epoch(), epoch + 1);

        // Alice commits her Add again, on the new epoch.
        let out = g[0].commit(rebuilt.expect("rebuilt options"), NOW).unwrap();
        assert_eq!(out.adds[0].credential, dave.credential);
        for i in [1, 2] {
            merge(&mut g[i], &out.commit);
        }
        assert!(matches!(
            g[0].process_incoming(&out.commit, NOW).unwrap(),
            ProcessedMessage::OwnCommit(_)
        ));
        let d = Client::new(dave, validator())
            .with_group_config(config(framing))
            .join_from_welcome(&kd, out.welcome.as_ref().unwrap(), JoinOptions::default())
            .unwrap();
        assert_agree(&[&g[0], &g[1], &g[2], &d]);
    }
}

/// The rebuilt options follow the new epoch: a member the winner already
/// removed is not removed again, a client the winner already added is not
/// added again, PSK nonces are fresh.
#[test]
fn lost_commit_options_follow_the_winner() {
    let mut g = group_of(4, &GroupConfig::default());
    let dave = signer("dave");
    let kd = key_package(&dave);
    let erin = signer("erin");
    let ke = key_package(&erin);
    for m in g.iter_mut() {
        m.psk_store_mut()
            .insert_external(b"team".to_vec(), hsmls_crypto::Secret::from_slice(&[5; 32]));
    }
    // Alice: add Dave and Erin, remove Carol (leaf 2) and leaf 3, a PSK.
    let mut options = CommitOptions::new();
    options.add_key_packages = vec![kd.key_package.clone(), ke.key_package.clone()];
    options.remove_leaves = vec![LeafIndex(2), LeafIndex(3)];
    let psk = g[0].external_psk_id(b"team".to_vec());
    options.psks = vec![psk.clone()];
    let _lost = g[0].commit(options, NOW).unwrap();
    // Bob wins: he removes Carol and adds Dave (who lands at Carol's leaf).
    let mut options = CommitOptions::new();
    options.remove_leaves = vec![LeafIndex(2)];
    options.add_key_packages = vec![kd.key_package.clone()];
    let won = g[1].commit(options, NOW).unwrap();
    let lost = merge(&mut g[0], &won.commit).expect("alice lost");
    assert_eq!(lost.removes.len(), 2);
    let again = lost.commit_options(&g[0]);
    // Dave is a member now (at leaf 2): only Erin is added; Carol is gone:
    // only the member at leaf 3 is removed, found by its key.
    assert_eq!(
        g[0].member(LeafIndex(2)).unwrap().credential,
        dave.credential
    );
    assert_eq!(again.add_key_packages, vec![ke.key_package.clone()]);
    assert_eq!(again.remove_leaves, vec![LeafIndex(3)]);
    assert_eq!(again.psks.len(), 1);
    assert_eq!(again.psks[0].psk, psk.psk);
    assert_ne!(again.psks[0].psk_nonce, psk.psk_nonce);
    // And it commits.
    g[1].merge_pending_commit().unwrap();
    merge(&mut g[3], &won.commit);
    let out = g[0].commit(again, NOW).unwrap();
    assert_eq!(out.adds.len(), 1);
    assert_eq!(out.removes[0].index, LeafIndex(3));
}

/// Own application messages and proposals come back in both framings:
/// recognised, the state unchanged, also a second time and after the
/// epoch moved on.
#[test]
fn own_application_messages_and_proposals_are_recognised() {
    for framing in [HandshakeFraming::Private, HandshakeFraming::Public] {
        let mut g = group_of(3, &config(framing));
        let epoch = g[0].epoch();
        let app = g[0].encrypt_application(b"to everyone").unwrap();
        match g[1].process_incoming(&app, NOW).unwrap() {
            ProcessedMessage::ApplicationMessage { data, .. } => assert_eq!(data, b"to everyone"),
            other => panic!("{other:?}"),
        }
        for _ in 0..2 {
            assert_own_message(&mut g[0], &app, ContentType::Application, epoch);
        }
        // Proposals: an Update and a Remove.
        let update = g[0].propose_update().unwrap();
        let remove = g[0].propose_remove(LeafIndex(2)).unwrap();
        for p in [&update, &remove] {
            assert!(matches!(
                g[1].process_incoming(p, NOW).unwrap(),
                ProcessedMessage::Proposal { .. }
            ));
            assert_own_message(&mut g[0], p, ContentType::Proposal, epoch);
            assert_own_message(&mut g[0], p, ContentType::Proposal, epoch);
        }
        assert_eq!(g[0].pending_proposals().len(), 2);
        // Bob commits both; the old-epoch messages still come back to
        // Alice as hers.
        let out = g[1].commit(CommitOptions::new(), NOW).unwrap();
        merge(&mut g[0], &out.commit);
        g[1].merge_pending_commit().unwrap();
        assert_eq!(g[0].epoch(), epoch + 1);
        assert_own_message(&mut g[0], &app, ContentType::Application, epoch);
        assert_own_message(&mut g[0], &update, ContentType::Proposal, epoch);
    }
}

/// The record is bounded: after [`SENT_MESSAGES_KEPT`] newer messages an
/// old proposal is no longer recognised, and its echo is then refused as a
/// proposal from this member's own leaf (PublicMessage: the signature and
/// membership tag verify) — the newest messages are still recognised.
#[test]
fn the_sent_record_is_bounded() {
    let mut g = group_of(2, &config(HandshakeFraming::Public));
    let epoch = g[0].epoch();
    let proposal = g[0].propose_update().unwrap();
    let mut last = Vec::new();
    for i in 0..SENT_MESSAGES_KEPT {
        last = g[0]
            .encrypt_application(format!("m{i}").as_bytes())
            .unwrap();
    }
    assert_own_message(&mut g[0], &last, ContentType::Application, epoch);
    assert!(matches!(
        rejected(&mut g[0], &proposal),
        GroupError::UnexpectedMessage(MessageRule::OwnProposalNotSent)
    ));
}

/// Copies of the member's own messages with other bytes (same sender leaf)
/// are not recognised: they are processed and refused like any forgery,
/// each with its exact error; the genuine echo still works afterwards.
#[test]
fn forged_own_messages_are_refused() {
    for framing in [HandshakeFraming::Private, HandshakeFraming::Public] {
        let mut g = group_of(3, &config(framing));
        let epoch = g[0].epoch();
        let public = framing == HandshakeFraming::Public;

        // Application message (always a PrivateMessage): the last byte is
        // in the AEAD tag; the sender data still names Alice's leaf, whose
        // key of that generation she deleted when sending (§9.2).
        let app = g[0].encrypt_application(b"mine").unwrap();
        let mut forged = app.clone();
        *forged.last_mut().unwrap() ^= 1;
        let err = rejected(&mut g[0], &forged);
        assert!(
            matches!(
                err,
                GroupError::Protection(ProtectionError::SecretTree(
                    SecretTreeError::GenerationAlreadyUsed(0)
                ))
            ),
            "{err:?}"
        );

        // Proposal: authenticated data added (PublicMessage) or the last
        // byte flipped (PrivateMessage).
        let proposal = g[0].propose_update().unwrap();
        let forged = edit(&proposal.message, public);
        let err = rejected(&mut g[0], &forged);
        if public {
            assert!(
                matches!(
                    err,
                    GroupError::Protection(ProtectionError::InvalidMembershipTag)
                ),
                "{err:?}"
            );
        } else {
            assert!(
                matches!(
                    err,
                    GroupError::Protection(ProtectionError::SecretTree(
                        SecretTreeError::GenerationAlreadyUsed(0)
                    ))
                ),
                "{err:?}"
            );
        }
        assert_own_message(&mut g[0], &proposal, ContentType::Proposal, epoch);
        assert!(matches!(
            g[1].process_incoming(&proposal, NOW).unwrap(),
            ProcessedMessage::Proposal { .. }
        ));
        assert!(matches!(
            g[2].process_incoming(&proposal, NOW).unwrap(),
            ProcessedMessage::Proposal { .. }
        ));

        // Commit: a forged copy of the pending commit is not merged.
        let out = g[0].commit(CommitOptions::new(), NOW).unwrap();
        let forged = edit(&out.commit, public);
        let err = rejected(&mut g[0], &forged);
        if public {
            assert!(
                matches!(
                    err,
                    GroupError::Protection(ProtectionError::InvalidMembershipTag)
                ),
                "{err:?}"
            );
        } else {
            assert!(
                matches!(
                    err,
                    GroupError::Protection(ProtectionError::SecretTree(
                        SecretTreeError::GenerationAlreadyUsed(1)
                    ))
                ),
                "{err:?}"
            );
        }
        assert!(g[0].has_pending_commit());
        // A genuine commit of Alice that is not her pending one (she
        // discarded it and committed again) is refused, not merged.
        if public {
            g[0].discard_pending_commit().unwrap();
            let second = g[0].commit(CommitOptions::new(), NOW).unwrap();
            let err = rejected(&mut g[0], &out.commit);
            assert!(
                matches!(
                    err,
                    GroupError::UnexpectedMessage(MessageRule::OwnCommitNotPending)
                ),
                "{err:?}"
            );
            for i in [1, 2] {
                merge(&mut g[i], &second.commit);
            }
            assert!(matches!(
                g[0].process_incoming(&second.commit, NOW).unwrap(),
                ProcessedMessage::OwnCommit(_)
            ));
        } else {
            for i in [1, 2] {
                merge(&mut g[i], &out.commit);
            }
            assert!(matches!(
                g[0].process_incoming(&out.commit, NOW).unwrap(),
                ProcessedMessage::OwnCommit(_)
            ));
        }
        assert_agree(&[&g[0], &g[1], &g[2]]);
    }
}

/// A copy of `message` with other bytes: authenticated data added to a
/// PublicMessage, or the last byte (in the AEAD tag) of a PrivateMessage
/// flipped.
fn edit(message: &[u8], public: bool) -> Vec<u8> {
    if public {
        let MlsMessageBody::PublicMessage(mut pm) = MlsMessage::decode(message).unwrap().body
        else {
            panic!("a PublicMessage");
        };
        pm.content.authenticated_data = b"forged".to_vec();
        MlsMessage {
            body: MlsMessageBody::PublicMessage(pm),
        }
        .encode()
        .unwrap()
    } else {
        let mut forged = message.to_vec();
        *forged.last_mut().unwrap() ^= 1;
        forged
    }
}

/// A commit whose content is above 256 KiB (its membership tag,
/// signature and confirmed transcript hash are computed on separate
/// threads, and only a message from this member's own leaf is hashed to
/// recognise it): other members stage it with the committer's transcript
/// (same epoch authenticator), a copy with one byte changed is refused
/// with the state unchanged, and the committer recognises its own copy.
#[test]
fn large_commit_is_processed_and_echoed() {
    let mut groups = group_of(3, &config(HandshakeFraming::Public));
    let mut options = CommitOptions::new();
    options.force_path = true;
    options.authenticated_data = vec![0xa5; 300 * 1024];
    let out = groups[0].commit(options, NOW).unwrap();

    let mut bytes = out.commit.clone();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    let before = groups[1].epoch_authenticator().to_vec();
    assert!(matches!(
        groups[1].process_incoming(&bytes, NOW),
        Err(GroupError::Protection(
            ProtectionError::InvalidMembershipTag
        ))
    ));
    assert_eq!(groups[1].epoch_authenticator(), &before[..]);

    merge(&mut groups[1], &out.commit);
    merge(&mut groups[2], &out.commit);
    assert!(matches!(
        groups[0].process_incoming(&out.commit, NOW).unwrap(),
        ProcessedMessage::OwnCommit(_)
    ));
    let expected = groups[0].epoch_authenticator().to_vec();
    assert_ne!(expected, before);
    assert_eq!(groups[1].epoch_authenticator(), &expected[..]);
    assert_eq!(groups[2].epoch_authenticator(), &expected[..]);
}
