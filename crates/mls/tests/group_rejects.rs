//! Bad input leaves the group state unchanged (RFC 9420 §12.4.2: a commit
//! that fails validation MUST NOT be applied) and is refused with a typed
//! [`GroupError`]: truncated messages, bit-flipped commits, a commit from a
//! removed member, commits for a wrong epoch, replayed messages, a wrong
//! group id, garbage bytes, and a Welcome not addressed to us.
//!
//! Each case compares a digest of the receiver's state before and after:
//! the full [`GroupStateSnapshot`] (context, tree, keys, secrets, secret
//! tree, past epochs, proposal cache, PSKs), plus the epoch, tree hash,
//! epoch authenticator, an exported secret and the member list. After the
//! rejections the genuine messages still process normally.

use std::sync::Arc;

use hsmls::error::ProtectionError;
use hsmls::error::SecretTreeError;
use hsmls::internal::codec::{MlsMessage, MlsMessageBody};
use hsmls::internal::group::GroupStateSnapshot;
use hsmls::wire::LeafIndex;
use hsmls::wire::{Credential, Decode, Encode, Sender};
use hsmls::{
    BasicCredentialValidator, Client, CommitOptions, CommitOutput, CredentialValidator, Group,
    GroupConfig, GroupError, HandshakeFraming, JoinOptions, KeyPackageBundle, KeyPackageConfig,
    Member, MessageRule, ProcessedMessage, ProposalRule, Signer,
};
use hsmls_crypto::Secret;
use hsmls_custody::SoftwareCustody;

const NOW: u64 = 1_750_000_000;

/// Everything observable about a member's state.
#[derive(Debug, PartialEq, Eq)]
struct Digest {
    snapshot: GroupStateSnapshot,
    epoch: u64,
    tree_hash: Vec<u8>,
    epoch_authenticator: Vec<u8>,
    exported: Secret,
    members: Vec<Member>,
    active: bool,
    pending_commit: bool,
}

fn digest(g: &Group) -> Digest {
    Digest {
        snapshot: g.state_snapshot(),
        epoch: g.epoch(),
        tree_hash: g.tree_hash().to_vec(),
        epoch_authenticator: g.epoch_authenticator().to_vec(),
        exported: g.export_secret(b"rejects", b"digest", 32).unwrap(),
        members: g.members(),
        active: g.is_active(),
        pending_commit: g.has_pending_commit(),
    }
}

/// Processes `bytes`, which must be refused without changing the state.
fn rejected(g: &mut Group, bytes: impl AsRef<[u8]>) -> GroupError {
    let before = digest(g);
    let err = match g.process_incoming(bytes, NOW) {
        Ok(ev) => panic!("bad input accepted: {ev:?}"),
        Err(e) => e,
    };
    assert_eq!(digest(g), before, "state changed after rejecting ({err})");
    err
}

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

/// A group of `n` members (leaf i = member i), built by one add commit.
fn group_of(n: usize, config: &GroupConfig, group_id: &[u8]) -> Vec<Group> {
    let mut alice = Client::new(signer("member-0"), validator())
        .with_group_config(config.clone())
        .create_group(group_id.to_vec(), Vec::new(), NOW)
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

/// Delivers `committer`'s commit to every member in `to` and merges it.
fn deliver(groups: &mut [Group], committer: usize, out: &CommitOutput, to: &[usize]) {
    for &i in to {
        if i != committer {
            merge(&mut groups[i], &out.commit);
        }
    }
    groups[committer].merge_pending_commit().unwrap();
}

/// Processes and merges another member's commit.
fn merge(g: &mut Group, commit: &[u8]) {
    let ProcessedMessage::StagedCommit(staged) = g.process_incoming(commit, NOW).unwrap() else {
        panic!("expected a staged commit");
    };
    g.merge_staged_commit(staged).unwrap();
}

fn reencode(body: MlsMessageBody) -> Vec<u8> {
    MlsMessage { body }.encode().unwrap()
}

fn config(framing: HandshakeFraming) -> GroupConfig {
    let mut config = GroupConfig::default();
    config.handshake_framing = framing;
    config
}

/// The refusals a sweep over edited bytes (bit flips, garbage) may meet:
/// which rule fires depends on the byte edited, so a sweep accepts exactly
/// these variants and nothing else (no success, no panic).
fn is_sweep_refusal(e: &GroupError) -> bool {
    matches!(
        e,
        GroupError::Malformed(_)
            | GroupError::Protection(_)
            | GroupError::SecretTree(_)
            | GroupError::WrongGroupId
            | GroupError::WrongEpoch { .. }
            | GroupError::WireFormatPolicy
            | GroupError::NotAMember(_)
            | GroupError::UnexpectedMessage(
                MessageRule::SenderCannotSendContent
                    | MessageRule::NoExternalSenders
                    | MessageRule::Welcome
                    | MessageRule::GroupInfo
                    | MessageRule::KeyPackage
            )
    )
}

#[test]
fn truncated_messages() {
    for framing in [HandshakeFraming::Private, HandshakeFraming::Public] {
        let mut g = group_of(3, &config(framing), b"truncated");
        let out = g[0].commit(CommitOptions::new(), NOW).unwrap();
        let app = g[2].encrypt_application(b"some application data").unwrap();
        for msg in [&out.commit, &app] {
            // Every prefix: from the empty message to one byte short.
            for len in 0..msg.len() {
                let err = rejected(&mut g[1], &msg[..len]);
                assert!(
                    matches!(err, GroupError::Malformed(_)),
                    "truncation to {len}: {err:?}"
                );
            }
            // A byte too many is malformed too (trailing data).
            let mut long = msg.to_vec();
            long.push(0);
            assert!(matches!(
                rejected(&mut g[1], &long),
                GroupError::Malformed(_)
            ));
        }
        // The genuine messages still work.
        assert!(matches!(
            g[1].process_incoming(&app, NOW).unwrap(),
            ProcessedMessage::ApplicationMessage { .. }
        ));
        deliver(&mut g, 0, &out, &[1, 2]);
        assert_eq!(g[1].epoch_authenticator(), g[0].epoch_authenticator());
    }
}

#[test]
fn bit_flipped_commits() {
    for framing in [HandshakeFraming::Private, HandshakeFraming::Public] {
        let mut g = group_of(3, &config(framing), b"bit flips");
        let mut options = CommitOptions::new();
        options.force_path = true;
        let out = g[0].commit(options, NOW).unwrap();
        let mut count = 0;
        for pos in 0..out.commit.len() {
            let mut bad = out.commit.clone();
            bad[pos] ^= 1 << (pos % 8);
            let err = rejected(&mut g[1], &bad);
            assert!(
                is_sweep_refusal(&err),
                "flip at byte {pos} ({framing:?}): {err:?}"
            );
            count += 1;
        }
        assert_eq!(count, out.commit.len());
        deliver(&mut g, 0, &out, &[1, 2]);
        assert_eq!(g[1].epoch_authenticator(), g[0].epoch_authenticator());
    }
}

#[test]
fn commit_from_a_removed_member() {
    for framing in [HandshakeFraming::Private, HandshakeFraming::Public] {
        let mut g = group_of(4, &config(framing), b"removed");
        // Member 3 is removed; it does not see the commit and, still in
        // the old epoch, commits a self-update.
        let removal = g[0].remove_members(&[LeafIndex(3)], NOW).unwrap();
        let mut options = CommitOptions::new();
        options.force_path = true;
        let late = g[3].commit(options, NOW).unwrap();
        deliver(&mut g, 0, &removal, &[1, 2]);
        for r in [1, 2] {
            assert!(matches!(
                rejected(&mut g[r], &late.commit),
                GroupError::WrongEpoch {
                    message: 1,
                    current: 2
                }
            ));
        }
        // A current-epoch commit claiming the removed member's leaf: take
        // member 1's commit and name leaf 3 as the sender.
        let genuine = g[1].self_update(NOW).unwrap();
        match MlsMessage::decode(&genuine.commit).unwrap().body {
            MlsMessageBody::PublicMessage(mut pm) => {
                pm.content.sender = Sender::Member(LeafIndex(3));
                let bytes = reencode(MlsMessageBody::PublicMessage(pm));
                assert!(matches!(
                    rejected(&mut g[2], &bytes),
                    GroupError::NotAMember(hsmls::wire::LeafIndex(3))
                ));
            }
            MlsMessageBody::PrivateMessage(_) => {
                // The sender is inside the encrypted sender data: a removed
                // member has no key for this epoch, so its old-epoch commit
                // is all it can send (refused above).
            }
            _ => panic!("a commit is a PublicMessage or PrivateMessage"),
        }
        // The removed member, once it merged its removal, refuses all input.
        g[3].discard_pending_commit().unwrap();
        let ProcessedMessage::StagedCommit(staged) =
            g[3].process_incoming(&removal.commit, NOW).unwrap()
        else {
            panic!("expected the removal commit");
        };
        assert!(staged.self_removed);
        g[3].merge_staged_commit(staged).unwrap();
        assert!(!g[3].is_active());
        assert!(matches!(
            g[3].process_incoming(&genuine.commit, NOW),
            Err(GroupError::Removed)
        ));
        deliver(&mut g, 1, &genuine, &[0, 2]);
        assert_eq!(g[2].epoch_authenticator(), g[0].epoch_authenticator());
    }
}

#[test]
fn commits_for_a_wrong_epoch() {
    for framing in [HandshakeFraming::Private, HandshakeFraming::Public] {
        let mut g = group_of(3, &config(framing), b"epochs");
        let first = g[0].self_update(NOW).unwrap();
        // Member 2 has not merged the first commit yet: a commit of the
        // next epoch is "from the future".
        deliver(&mut g, 0, &first, &[1]);
        let second = g[1].self_update(NOW).unwrap();
        assert!(matches!(
            rejected(&mut g[2], &second.commit),
            GroupError::WrongEpoch {
                message: 2,
                current: 1
            }
        ));
        merge(&mut g[2], &first.commit);
        // Edited epoch fields.
        for delta in [1u64, u64::MAX] {
            let bytes = match MlsMessage::decode(&second.commit).unwrap().body {
                MlsMessageBody::PublicMessage(mut pm) => {
                    pm.content.epoch = pm.content.epoch.wrapping_add(delta);
                    reencode(MlsMessageBody::PublicMessage(pm))
                }
                MlsMessageBody::PrivateMessage(mut pm) => {
                    pm.epoch = pm.epoch.wrapping_add(delta);
                    reencode(MlsMessageBody::PrivateMessage(pm))
                }
                _ => panic!("unexpected message kind"),
            };
            assert!(matches!(
                rejected(&mut g[2], &bytes),
                GroupError::WrongEpoch { .. }
            ));
        }
        deliver(&mut g, 1, &second, &[0, 2]);
        // Old commits of retained past epochs are refused too (only
        // application messages are read from past epochs).
        for old in [&first.commit, &second.commit] {
            assert!(matches!(
                rejected(&mut g[2], old),
                GroupError::WrongEpoch { current: 3, .. }
            ));
        }
    }
}

#[test]
fn replayed_messages() {
    for framing in [HandshakeFraming::Private, HandshakeFraming::Public] {
        let mut g = group_of(3, &config(framing), b"replay");
        // Application message: the second delivery is refused (its key
        // was deleted, RFC 9420 §9.2).
        let app = g[0].encrypt_application(b"once").unwrap();
        assert!(matches!(
            g[1].process_incoming(&app, NOW).unwrap(),
            ProcessedMessage::ApplicationMessage { .. }
        ));
        let err = rejected(&mut g[1], &app);
        assert!(
            matches!(
                err,
                GroupError::Protection(ProtectionError::SecretTree(
                    SecretTreeError::GenerationAlreadyUsed(0)
                ))
            ),
            "{err:?}"
        );
        // Proposal: received twice. A PrivateMessage's key is gone; a
        // PublicMessage proposal is already cached.
        let proposal = g[2].propose_update().unwrap();
        assert!(matches!(
            g[1].process_incoming(&proposal, NOW).unwrap(),
            ProcessedMessage::Proposal { .. }
        ));
        let err = rejected(&mut g[1], &proposal);
        match framing {
            HandshakeFraming::Private => assert!(
                matches!(
                    err,
                    GroupError::Protection(ProtectionError::SecretTree(
                        SecretTreeError::GenerationAlreadyUsed(0)
                    ))
                ),
                "{err:?}"
            ),
            HandshakeFraming::Public => assert!(
                matches!(
                    err,
                    GroupError::InvalidProposal(ProposalRule::ReceivedTwice)
                ),
                "{err:?}"
            ),
            other => panic!("no test for {other:?}"),
        }
        assert!(matches!(
            g[0].process_incoming(&proposal, NOW).unwrap(),
            ProcessedMessage::Proposal { .. }
        ));
        // Commit: after its merge, a replay is for a past epoch.
        let out = g[0].commit(CommitOptions::new(), NOW).unwrap();
        deliver(&mut g, 0, &out, &[1, 2]);
        assert!(matches!(
            rejected(&mut g[1], &out.commit),
            GroupError::WrongEpoch { .. }
        ));
        // A commit staged but not merged: for a PrivateMessage its key is
        // consumed by the first processing, so a replay is refused.
        let next = g[1].self_update(NOW).unwrap();
        let ProcessedMessage::StagedCommit(staged) =
            g[2].process_incoming(&next.commit, NOW).unwrap()
        else {
            panic!("expected a staged commit");
        };
        if framing == HandshakeFraming::Private {
            let err = rejected(&mut g[2], &next.commit);
            assert!(
                matches!(
                    err,
                    GroupError::Protection(ProtectionError::SecretTree(
                        SecretTreeError::GenerationAlreadyUsed(_)
                    ))
                ),
                "{err:?}"
            );
        }
        drop(staged);
        // The committer's own commit coming back is its pending commit,
        // merged now (group_echo.rs has the echo cases).
        assert!(matches!(
            g[1].process_incoming(&next.commit, NOW).unwrap(),
            ProcessedMessage::OwnCommit(_)
        ));
        assert!(!g[1].has_pending_commit());
    }
}

#[test]
fn wrong_group_id() {
    for framing in [HandshakeFraming::Private, HandshakeFraming::Public] {
        let mut g = group_of(2, &config(framing), b"the group");
        let app = g[0].encrypt_application(b"x").unwrap();
        let out = g[0].self_update(NOW).unwrap();
        for msg in [&out.commit, &app] {
            let bytes = match MlsMessage::decode(msg).unwrap().body {
                MlsMessageBody::PublicMessage(mut pm) => {
                    pm.content.group_id = b"another group".to_vec();
                    reencode(MlsMessageBody::PublicMessage(pm))
                }
                MlsMessageBody::PrivateMessage(mut pm) => {
                    pm.group_id = b"another group".to_vec();
                    reencode(MlsMessageBody::PrivateMessage(pm))
                }
                _ => panic!("unexpected message kind"),
            };
            assert!(matches!(
                rejected(&mut g[1], &bytes),
                GroupError::WrongGroupId
            ));
        }
        // A genuine message of another group (same members' names, other
        // keys) is refused as well.
        let mut other = group_of(2, &config(framing), b"another group");
        let foreign = other[0].self_update(NOW).unwrap();
        assert!(matches!(
            rejected(&mut g[1], &foreign.commit),
            GroupError::WrongGroupId
        ));
        let foreign_app = other[1].encrypt_application(b"hi").unwrap();
        assert!(matches!(
            rejected(&mut g[1], &foreign_app),
            GroupError::WrongGroupId
        ));
        // An application message of another group under our group id is
        // refused by decryption.
        let MlsMessageBody::PrivateMessage(mut pm) = MlsMessage::decode(&foreign_app).unwrap().body
        else {
            panic!("application data is a PrivateMessage");
        };
        pm.group_id = b"the group".to_vec();
        pm.epoch = g[1].epoch();
        let err = rejected(&mut g[1], reencode(MlsMessageBody::PrivateMessage(pm)));
        assert!(
            matches!(
                err,
                GroupError::Protection(ProtectionError::SenderDataDecryption)
            ),
            "{err:?}"
        );
        deliver(&mut g, 0, &out, &[1]);
    }
}

#[test]
fn garbage_bytes() {
    let mut g = group_of(2, &GroupConfig::default(), b"garbage");
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = || {
        // xorshift64*: deterministic garbage.
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut inputs: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0],
        vec![0xff; 4],
        vec![0, 1],
        vec![0, 1, 0, 1],
        vec![0, 1, 0, 2],
        vec![0, 1, 0, 0xff],
        // A PublicMessage header with a huge varint length.
        vec![0, 1, 0, 1, 0xbf, 0xff, 0xff, 0xff],
        // A PrivateMessage header with a 4-byte varint of 1 GB.
        vec![0, 1, 0, 2, 0x80 | 0x3f, 0xff, 0xff, 0xff, 1, 2, 3],
    ];
    for len in [1usize, 7, 64, 300, 4096] {
        for _ in 0..20 {
            let mut v: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if v.len() >= 4 && next() % 2 == 0 {
                // Make it look like an MLSMessage of a plausible kind.
                v[0] = 0;
                v[1] = 1;
                v[2] = 0;
                v[3] = 1 + (next() % 5) as u8;
            }
            inputs.push(v);
        }
    }
    for input in &inputs {
        let err = rejected(&mut g[1], input);
        assert!(
            is_sweep_refusal(&err),
            "garbage of {} bytes: {err:?}",
            input.len()
        );
    }
    // Still working.
    let app = g[0].encrypt_application(b"after the garbage").unwrap();
    assert!(matches!(
        g[1].process_incoming(&app, NOW).unwrap(),
        ProcessedMessage::ApplicationMessage { .. }
    ));
}

#[test]
fn welcome_not_for_us() {
    let cfg = GroupConfig::default();
    let mut g = group_of(2, &cfg, b"welcome");
    let s = signer("newcomer");
    let kp = key_package(&s);
    let out = g[0]
        .add_members(std::slice::from_ref(&kp.key_package), NOW)
        .unwrap();
    let welcome = out.welcome.clone().unwrap();
    // A Welcome given to a member's process_incoming.
    assert!(matches!(
        rejected(&mut g[1], &welcome),
        GroupError::UnexpectedMessage(MessageRule::Welcome)
    ));
    // A GroupInfo and a KeyPackage likewise.
    let gi = g[1].group_info().unwrap();
    assert!(matches!(
        rejected(&mut g[1], &gi),
        GroupError::UnexpectedMessage(MessageRule::GroupInfo)
    ));
    assert!(matches!(
        rejected(&mut g[1], kp.to_bytes().unwrap()),
        GroupError::UnexpectedMessage(MessageRule::KeyPackage)
    ));
    // Another KeyPackage of the same client cannot join from it.
    let other = key_package(&s);
    assert!(matches!(
        Client::new(s.clone(), validator())
            .with_group_config(cfg.clone())
            .join_from_welcome(&other, &welcome, JoinOptions::default()),
        Err(GroupError::NotInWelcome)
    ));
    // A stranger cannot either.
    let stranger = signer("stranger");
    let theirs = key_package(&stranger);
    assert!(matches!(
        Client::new(stranger, validator())
            .with_group_config(cfg.clone())
            .join_from_welcome(&theirs, &welcome, JoinOptions::default()),
        Err(GroupError::NotInWelcome)
    ));
    // A commit is not a Welcome.
    assert!(matches!(
        Client::new(s.clone(), validator())
            .with_group_config(cfg.clone())
            .join_from_welcome(&kp, &out.commit, JoinOptions::default()),
        Err(GroupError::UnexpectedMessage(MessageRule::NotAWelcome))
    ));
    // The right KeyPackage joins; its init key was kept through the
    // refusals above.
    g[0].merge_pending_commit().unwrap();
    let joined = Client::new(s, validator())
        .with_group_config(cfg)
        .join_from_welcome(&kp, &welcome, JoinOptions::default())
        .unwrap();
    assert_eq!(joined.epoch_authenticator(), g[0].epoch_authenticator());
}

#[test]
fn public_message_framing_violations() {
    let public = config(HandshakeFraming::Public);
    let mut g = group_of(3, &public, b"framing");
    let out = g[0].self_update(NOW).unwrap();
    let MlsMessageBody::PublicMessage(pm) = MlsMessage::decode(&out.commit).unwrap().body else {
        panic!("a public commit");
    };
    let edit = |f: &dyn Fn(&mut hsmls::internal::codec::PublicMessage)| {
        let mut m = pm.clone();
        f(&mut m);
        reencode(MlsMessageBody::PublicMessage(m))
    };
    // A wrong membership tag.
    let err = rejected(
        &mut g[1],
        edit(&|m| {
            if let Some(tag) = &mut m.membership_tag {
                tag.0[0] ^= 1;
            }
        }),
    );
    assert!(
        matches!(
            err,
            GroupError::Protection(ProtectionError::InvalidMembershipTag)
        ),
        "{err:?}"
    );
    // Another sender kind for a member's commit.
    for sender in [Sender::External(0), Sender::NewMemberProposal] {
        // (Non-member senders carry no membership tag, RFC 9420 §6.2.)
        let err = rejected(
            &mut g[1],
            edit(&|m| {
                m.content.sender = sender;
                m.membership_tag = None;
            }),
        );
        assert!(
            matches!(
                err,
                GroupError::UnexpectedMessage(MessageRule::SenderCannotSendContent)
            ),
            "{sender:?}: {err:?}"
        );
    }
    let err = rejected(
        &mut g[1],
        edit(&|m| {
            m.content.sender = Sender::NewMemberCommit;
            m.membership_tag = None;
        }),
    );
    // The signature covers the sender: it no longer verifies.
    assert!(
        matches!(
            err,
            GroupError::Protection(ProtectionError::InvalidSignature(_))
        ),
        "{err:?}"
    );
    // A sender leaf beyond the tree.
    let err = rejected(
        &mut g[1],
        edit(&|m| m.content.sender = Sender::Member(LeafIndex(1000))),
    );
    assert!(
        matches!(err, GroupError::NotAMember(hsmls::wire::LeafIndex(1000))),
        "{err:?}"
    );
    // Application data in a PublicMessage.
    let err = rejected(
        &mut g[1],
        edit(&|m| {
            m.content.body = hsmls::internal::codec::FramedContentBody::Application(b"x".to_vec());
            m.auth.confirmation_tag = None;
        }),
    );
    assert!(
        matches!(
            err,
            GroupError::Protection(ProtectionError::ApplicationInPublicMessage)
        ),
        "{err:?}"
    );
    // Authenticated data added after signing.
    let err = rejected(
        &mut g[1],
        edit(&|m| m.content.authenticated_data = b"injected".to_vec()),
    );
    assert!(
        matches!(
            err,
            GroupError::Protection(ProtectionError::InvalidMembershipTag)
        ),
        "{err:?}"
    );
    // A member whose policy refuses public handshakes.
    g[2].set_config({
        let mut o = public.clone();
        o.accept_public_handshakes = false;
        o
    });
    assert!(matches!(
        rejected(&mut g[2], &out.commit),
        GroupError::WireFormatPolicy
    ));
    g[2].set_config(public);
    deliver(&mut g, 0, &out, &[1, 2]);
    assert_eq!(g[1].epoch_authenticator(), g[0].epoch_authenticator());
}

#[test]
fn out_of_order_bounds() {
    use hsmls::SecretTreeConfig;
    let mut cfg = GroupConfig::default();
    cfg.secret_tree = SecretTreeConfig::new(20, 3);
    let mut g = group_of(2, &cfg, b"out of order");
    let messages: Vec<Vec<u8>> = (0..30)
        .map(|i| {
            g[0].encrypt_application(format!("m{i}").as_bytes())
                .unwrap()
        })
        .collect();
    // Too far ahead of the receiver's ratchet (generation 25 > 20).
    let err = rejected(&mut g[1], &messages[25]);
    assert!(
        matches!(
            err,
            GroupError::Protection(ProtectionError::SecretTree(
                SecretTreeError::GenerationTooFarAhead { generation: 25, .. }
            ))
        ),
        "{err:?}"
    );
    // Within the bound, out of order: 10, then 9, 8 and 7 (kept), but not
    // 0 (more than 3 skipped keys back).
    for i in [10usize, 9, 8, 7] {
        match g[1].process_incoming(&messages[i], NOW).unwrap() {
            ProcessedMessage::ApplicationMessage { data, .. } => {
                assert_eq!(data, format!("m{i}").into_bytes());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let err = rejected(&mut g[1], &messages[0]);
    assert!(
        matches!(
            err,
            GroupError::Protection(ProtectionError::SecretTree(
                SecretTreeError::GenerationExpired(0)
            ))
        ),
        "message 0: {err:?}"
    );
    for i in [10u32, 9] {
        let err = rejected(&mut g[1], &messages[i as usize]);
        assert!(
            matches!(err, GroupError::Protection(ProtectionError::SecretTree(SecretTreeError::GenerationAlreadyUsed(n))) if n == i),
            "message {i}: {err:?}"
        );
    }
    // The ratchet went on: 11 and then 25 (now within 20 of it) read fine.
    for i in [11usize, 25] {
        assert!(matches!(
            g[1].process_incoming(&messages[i], NOW).unwrap(),
            ProcessedMessage::ApplicationMessage { .. }
        ));
    }
}

/// A member's commit of more than 256 KiB (here through its
/// authenticated data; in a large group through its UpdatePath) is staged
/// while its signature and transcript hash are computed on other threads,
/// once its membership tag verified (`message_protection::
/// unprotect_received_public`). Signed with another key and tagged by a
/// member, it is refused for its signature (staging found the
/// confirmation tag wrong too: the signature is part of the confirmed
/// transcript hash); signed with the committer's own key but with a
/// changed confirmation tag, for the confirmation tag. The state is
/// unchanged each time, and the genuine commit then merges.
#[test]
fn large_commit_staged_beside_its_checks_counts_only_if_signed() {
    use hsmls::internal::message_protection::{protect_public, sign_content};
    use hsmls::wire::WireFormat;
    use hsmls_custody::{KeyCustody, KeyRef};

    let public = config(HandshakeFraming::Public);
    let mut g = group_of(3, &public, b"large commit");
    let mut options = CommitOptions::new();
    options.force_path = true;
    options.authenticated_data = vec![0x5a; 300 * 1024];
    let out = g[0].commit(options, NOW).unwrap();
    let MlsMessageBody::PublicMessage(pm) = MlsMessage::decode(&out.commit).unwrap().body else {
        panic!("a public commit");
    };
    let cs = hsmls_crypto::CipherSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256
        .provider()
        .unwrap();
    // The commit signed by `key` in `custody`, its confirmation tag's
    // first byte XORed with `flip`, and tagged with the epoch's
    // membership key, as its sender could.
    let resign = |custody: &dyn KeyCustody, key: &KeyRef, flip: u8| {
        let m = g[0].membership();
        let mut ac = sign_content(
            cs,
            custody,
            key,
            WireFormat::PUBLIC_MESSAGE,
            pm.content.clone(),
            Some(m.group_context),
        )
        .unwrap();
        let mut tag = pm.auth.confirmation_tag.clone().unwrap();
        tag.0[0] ^= flip;
        ac.auth.confirmation_tag = Some(tag);
        reencode(MlsMessageBody::PublicMessage(
            protect_public(cs, ac, Some(m)).unwrap(),
        ))
    };
    let custody = SoftwareCustody::new();
    let other_key = custody.generate(cs.signature_key_spec()).unwrap();
    let wrong_signature = resign(&custody, &other_key, 0);
    let own = g[0].signer().clone();
    let wrong_confirmation = resign(own.custody.as_ref(), &own.signature_key, 1);
    custody.destroy(&other_key).unwrap();

    let err = rejected(&mut g[1], &wrong_signature);
    assert!(
        matches!(
            err,
            GroupError::Protection(ProtectionError::InvalidSignature(_))
        ),
        "{err:?}"
    );
    let err = rejected(&mut g[1], &wrong_confirmation);
    assert!(matches!(err, GroupError::InvalidConfirmationTag), "{err:?}");

    deliver(&mut g, 0, &out, &[1, 2]);
    assert_eq!(g[1].epoch_authenticator(), g[0].epoch_authenticator());
    assert_eq!(g[2].epoch_authenticator(), g[0].epoch_authenticator());
}
