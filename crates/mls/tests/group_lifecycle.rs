//! Group lifecycle through the public API: groups of 2, 3, 10 and 100
//! members built by adds over Welcome, with removes, updates, application
//! messages, an external join and PSKs. After every commit all members
//! agree on epoch, tree hash, epoch authenticator and an exported secret.
//! Rejected commits leave the state identical.

use std::sync::Arc;

use hsmls::KeyPackageError;
use hsmls::error::ProtectionError;
use hsmls::error::SecretTreeError;
use hsmls::error::{KeyKind, TreeError};
use hsmls::internal::codec::{MlsMessage, MlsMessageBody};
use hsmls::internal::group::GroupStateSnapshot;
use hsmls::wire::LeafIndex;
use hsmls::wire::{Credential, Decode, Encode};
use hsmls::{
    BasicCredentialValidator, Client, CommitOptions, CommitOutput, CommitRule, CredentialValidator,
    Group, GroupConfig, GroupError, HandshakeFraming, JoinOptions, KeyPackageBundle,
    KeyPackageConfig, MessageRule, ProcessedMessage, ProposalRule, Signer, WelcomePart,
};
use hsmls_crypto::Secret;
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

/// The members of one group, by leaf index (None once removed).
struct Harness {
    members: Vec<Option<Group>>,
    config: GroupConfig,
    next_id: usize,
}

impl Harness {
    fn new(config: GroupConfig) -> Self {
        let g = Client::new(signer("member-0"), validator())
            .with_group_config(config.clone())
            .create_group(hsmls::random_group_id(), Vec::new(), NOW)
            .unwrap();
        Harness {
            members: vec![Some(g)],
            config,
            next_id: 1,
        }
    }

    fn group(&mut self, i: usize) -> &mut Group {
        self.members[i].as_mut().unwrap()
    }

    fn active(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|i| self.members[*i].is_some())
            .collect()
    }

    /// `committer` commits; every other member processes and merges; new
    /// members join from the Welcome.
    fn commit(
        &mut self,
        committer: usize,
        options: CommitOptions,
        joiners: Vec<(Signer, KeyPackageBundle)>,
    ) {
        let _delivered = self.commit_out(committer, options, joiners);
    }

    /// [`Harness::commit`], returning the commit output.
    fn commit_out(
        &mut self,
        committer: usize,
        options: CommitOptions,
        joiners: Vec<(Signer, KeyPackageBundle)>,
    ) -> CommitOutput {
        let out = self.group(committer).commit(options, NOW).unwrap();
        for i in self.active() {
            if i == committer {
                continue;
            }
            let g = self.group(i);
            let ev = g.process_incoming(&out.commit, NOW).unwrap();
            let ProcessedMessage::StagedCommit(staged) = ev else {
                panic!("expected a staged commit");
            };
            let removed = staged.self_removed;
            g.merge_staged_commit(staged).unwrap();
            if removed {
                assert!(!g.is_active());
                self.members[i] = None;
            }
        }
        self.group(committer).merge_pending_commit().unwrap();
        for (s, bundle) in joiners {
            let g = Client::new(s, validator())
                .with_group_config(self.config.clone())
                .join_from_welcome(&bundle, out.welcome.as_ref().expect("welcome"), {
                    let mut join = JoinOptions::default();
                    join.ratchet_tree = out.ratchet_tree.clone();
                    join
                })
                .unwrap();
            let idx = g.own_leaf_index().0 as usize;
            if self.members.len() <= idx {
                self.members.resize_with(idx + 1, || None);
            }
            assert!(self.members[idx].is_none());
            self.members[idx] = Some(g);
        }
        self.check_agreement();
        out
    }

    fn new_joiner(&mut self) -> (Signer, KeyPackageBundle) {
        let s = signer(&format!("member-{}", self.next_id));
        self.next_id += 1;
        let kp = key_package(&s);
        (s, kp)
    }

    /// `committer` adds `n` new members in one commit.
    fn add(&mut self, committer: usize, n: usize) {
        let joiners: Vec<_> = (0..n).map(|_| self.new_joiner()).collect();
        let mut opts = CommitOptions::new();
        opts.add_key_packages = joiners
            .iter()
            .map(|(_, kp)| kp.key_package.clone())
            .collect();
        self.commit(committer, opts, joiners);
    }

    fn check_agreement(&self) {
        let groups: Vec<&Group> = self.members.iter().flatten().collect();
        let first = groups[0];
        let exported = first.export_secret(b"test", b"ctx", 32).unwrap();
        for g in &groups {
            assert_eq!(g.epoch(), first.epoch());
            assert_eq!(g.tree_hash(), first.tree_hash());
            assert_eq!(g.epoch_authenticator(), first.epoch_authenticator());
            assert_eq!(g.export_secret(b"test", b"ctx", 32).unwrap(), exported);
            assert_eq!(g.members().len(), groups.len());
            assert_eq!(g.group_context(), first.group_context());
        }
    }

    /// Every member sends one application message, every other member
    /// reads it.
    fn all_send(&mut self) {
        for s in self.active() {
            let data = format!("hello from {s}").into_bytes();
            let msg = self.group(s).encrypt_application(&data).unwrap();
            for r in self.active() {
                if r == s {
                    continue;
                }
                match self.group(r).process_incoming(&msg, NOW).unwrap() {
                    ProcessedMessage::ApplicationMessage {
                        sender, data: d, ..
                    } => {
                        assert_eq!(sender, LeafIndex(s as u32));
                        assert_eq!(d, data);
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    }
}

fn build(n: usize, config: GroupConfig) -> Harness {
    let mut h = Harness::new(config);
    // Grow in batches to exercise both single and multi-add Welcomes.
    let mut committer = 0;
    while h.active().len() < n {
        let missing = n - h.active().len();
        let batch = missing.min(1 + h.active().len()).min(40);
        h.add(committer, batch);
        committer = (committer + 1) % h.active().len();
        while h.members[committer].is_none() {
            committer = (committer + 1) % h.members.len();
        }
    }
    h
}

#[test]
fn group_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Group>();
    assert_send::<hsmls::StagedCommit>();
}

#[test]
fn two_members() {
    let mut h = build(2, GroupConfig::default());
    assert_eq!(h.group(0).epoch(), 1);
    h.all_send();
    // Debug output of events and groups shows no application data or secret.
    let msg = h.group(0).encrypt_application(b"SECRET-PLAINTEXT").unwrap();
    let ev = h.group(1).process_incoming(&msg, NOW).unwrap();
    assert!(!format!("{ev:?}").contains("SECRET"));
    assert!(!format!("{ev:?}").contains(&format!("{:?}", b"SECRET-PLAINTEXT")));
    let auth = format!("{:02x?}", h.group(0).epoch_authenticator());
    assert!(!format!("{:?}", h.group(0)).contains(&auth));
    assert!(!format!("{:?}", h.group(0).state_snapshot()).contains(&auth));
    // Bob self-updates by an empty commit (path required); his replaced
    // leaf key is destroyed in custody at merge (§9.2).
    let old_key = h.group(1).own_leaf_key().clone();
    let peer = h.group(0).own_leaf_key().public_key().as_bytes().to_vec();
    let custody = h.group(1).signer().custody.clone();
    assert!(custody.dh(&old_key, &peer).is_ok());
    h.commit(1, CommitOptions::new(), Vec::new());
    assert_ne!(h.group(1).own_leaf_key(), &old_key);
    assert!(matches!(
        custody.dh(&old_key, &peer),
        Err(CustodyError::KeyNotFound(_))
    ));
    assert!(custody.dh(h.group(1).own_leaf_key(), &peer).is_ok());
    h.all_send();
    // Alice proposes an Update, Bob commits it; Alice's old leaf key is
    // destroyed, the proposed one becomes her leaf key.
    let old_key = h.group(0).own_leaf_key().clone();
    let prop = h.group(0).propose_update().unwrap();
    let ev = h.group(1).process_incoming(&prop, NOW).unwrap();
    assert!(matches!(ev, ProcessedMessage::Proposal { .. }));
    h.commit(1, CommitOptions::new(), Vec::new());
    let custody = h.group(0).signer().custody.clone();
    assert!(matches!(
        custody.dh(&old_key, &peer),
        Err(CustodyError::KeyNotFound(_))
    ));
    assert!(custody.dh(h.group(0).own_leaf_key(), &peer).is_ok());
    // An Update proposed but superseded by another commit is destroyed too.
    let _ = h.group(0).propose_update().unwrap();
    h.commit(1, CommitOptions::new(), Vec::new());
    h.all_send();
    // Bob leaves: his Remove proposal, committed by Alice.
    let prop = h.group(1).leave().unwrap();
    assert!(matches!(
        h.group(0).process_incoming(&prop, NOW).unwrap(),
        ProcessedMessage::Proposal { .. }
    ));
    let out = h.commit_out(0, CommitOptions::new(), Vec::new());
    assert_eq!(out.removes.len(), 1);
    assert_eq!(h.active(), vec![0]);
}

#[test]
fn three_members_public_handshakes() {
    let mut config = GroupConfig::default();
    config.handshake_framing = HandshakeFraming::Public;
    let mut h = build(3, config);
    h.all_send();
    // Add-only commit with a forced path, then a remove by value.
    let joiner = h.new_joiner();
    let mut opts = CommitOptions::new();
    opts.add_key_packages = vec![joiner.1.key_package.clone()];
    opts.force_path = true;
    h.commit(2, opts, vec![joiner]);
    let mut opts = CommitOptions::new();
    opts.remove_leaves = vec![LeafIndex(1)];
    let out = h.commit_out(0, opts, Vec::new());
    assert_eq!(out.removes[0].index, LeafIndex(1));
    h.all_send();
    // The freed leaf is reused by the next add.
    h.add(3, 1);
    assert!(h.members[1].is_some());
    h.all_send();
}

#[test]
fn ten_members_updates_removes_messages() {
    let mut h = build(10, GroupConfig::default());
    h.all_send();
    // Several members propose updates, one commits them by reference.
    for i in [1usize, 4, 7] {
        let prop = h.group(i).propose_update().unwrap();
        for r in h.active() {
            if r != i {
                assert!(matches!(
                    h.group(r).process_incoming(&prop, NOW).unwrap(),
                    ProcessedMessage::Proposal { .. }
                ));
            }
        }
    }
    let out = h.commit_out(2, CommitOptions::new(), Vec::new());
    let _ = out;
    h.all_send();
    // Remove three members in one commit.
    let mut opts = CommitOptions::new();
    opts.remove_leaves = vec![LeafIndex(3), LeafIndex(5), LeafIndex(9)];
    h.commit(0, opts, Vec::new());
    assert_eq!(h.active().len(), 7);
    h.all_send();
    // Out-of-order application messages within the window.
    let m1 = h.group(6).encrypt_application(b"first").unwrap();
    let m2 = h.group(6).encrypt_application(b"second").unwrap();
    for (msg, want) in [(&m2, b"second".as_slice()), (&m1, b"first".as_slice())] {
        match h.group(0).process_incoming(msg, NOW).unwrap() {
            ProcessedMessage::ApplicationMessage { data, .. } => assert_eq!(data, want),
            other => panic!("{other:?}"),
        }
    }
    // A message replayed is refused (its key was deleted, §9.2).
    assert!(matches!(
        h.group(0).process_incoming(&m1, NOW),
        Err(GroupError::Protection(ProtectionError::SecretTree(
            SecretTreeError::GenerationAlreadyUsed(_)
        )))
    ));
    // A message of the previous epoch delivered after a commit is still
    // readable (past epochs are retained, bounded by max_past_epochs).
    let late = h.group(8).encrypt_application(b"late").unwrap();
    let late_epoch = h.group(8).epoch();
    h.commit(0, CommitOptions::new(), Vec::new());
    match h.group(2).process_incoming(&late, NOW).unwrap() {
        ProcessedMessage::ApplicationMessage { data, epoch, .. } => {
            assert_eq!(data, b"late");
            assert_eq!(epoch, late_epoch);
        }
        other => panic!("{other:?}"),
    }
    // Beyond the retention bound it is refused.
    let late = h.group(8).encrypt_application(b"too late").unwrap();
    for _ in 0..=GroupConfig::default().max_past_epochs {
        h.commit(0, CommitOptions::new(), Vec::new());
    }
    assert!(matches!(
        h.group(2).process_incoming(&late, NOW),
        Err(GroupError::WrongEpoch { .. })
    ));
}

#[test]
fn hundred_members() {
    let mut h = build(100, GroupConfig::default());
    assert_eq!(h.active().len(), 100);
    h.commit(57, CommitOptions::new(), Vec::new());
    // self_update and remove_members shorthands.
    let out = h.group(63).self_update(NOW).unwrap();
    h.group(63).discard_pending_commit().unwrap();
    assert!(out.welcome.is_none());
    let out = h.group(5).remove_members(&[LeafIndex(6)], NOW).unwrap();
    assert_eq!(out.removes[0].index, LeafIndex(6));
    h.group(5).discard_pending_commit().unwrap();
    let mut opts = CommitOptions::new();
    opts.remove_leaves = vec![LeafIndex(10), LeafIndex(20), LeafIndex(30)];
    h.commit(99, opts, Vec::new());
    let msg = h.group(42).encrypt_application(b"to all").unwrap();
    for r in h.active() {
        if r != 42 {
            assert!(matches!(
                h.group(r).process_incoming(&msg, NOW).unwrap(),
                ProcessedMessage::ApplicationMessage { .. }
            ));
        }
    }
}

#[test]
fn external_join_and_psks() {
    let mut h = build(3, GroupConfig::default());
    // External join from the published GroupInfo.
    let gi = h.group(1).group_info().unwrap();
    let s = signer("external");
    let (g, commit) = Client::new(s.clone(), validator())
        .join_by_external_commit(&gi, JoinOptions::default())
        .unwrap();
    for i in h.active() {
        let ev = h.group(i).process_incoming(&commit, NOW).unwrap();
        let ProcessedMessage::StagedCommit(staged) = ev else {
            panic!("expected commit");
        };
        h.group(i).merge_staged_commit(staged).unwrap();
    }
    let idx = g.own_leaf_index().0 as usize;
    if h.members.len() <= idx {
        h.members.resize_with(idx + 1, || None);
    }
    h.members[idx] = Some(g);
    h.check_agreement();
    h.all_send();

    // The external member loses its state and re-joins (resync): its
    // external commit removes its old leaf.
    let gi = h.group(0).group_info().unwrap();
    // Without removing the old leaf, its signature key collides.
    let (_, dup) = Client::new(s.clone(), validator())
        .join_by_external_commit(&gi, JoinOptions::default())
        .unwrap();
    let err = assert_rejected_unchanged(h.group(0), &dup);
    assert!(
        matches!(
            err,
            GroupError::Tree(TreeError::DuplicateKey {
                kind: KeyKind::SignatureKey,
                ..
            })
        ),
        "{err:?}"
    );
    let (g, commit) = Client::new(s, validator())
        .rejoin_by_external_commit(&gi, JoinOptions::default(), LeafIndex(idx as u32))
        .unwrap();
    h.members[idx] = None;
    for i in h.active() {
        let ProcessedMessage::StagedCommit(staged) =
            h.group(i).process_incoming(&commit, NOW).unwrap()
        else {
            panic!("expected commit");
        };
        assert_eq!(staged.removes.len(), 1);
        h.group(i).merge_staged_commit(staged).unwrap();
    }
    let idx = g.own_leaf_index().0 as usize;
    if h.members.len() <= idx {
        h.members.resize_with(idx + 1, || None);
    }
    h.members[idx] = Some(g);
    h.check_agreement();
    h.all_send();
    // Removing another member's leaf by external commit is refused.
    let gi = h.group(0).group_info().unwrap();
    assert!(matches!(
        Client::new(signer("intruder"), validator()).rejoin_by_external_commit(
            &gi,
            JoinOptions::default(),
            LeafIndex(1)
        ),
        Err(GroupError::InvalidCommit(
            CommitRule::ExternalCommitRemovesOther
        ))
    ));

    // External PSK known to every member, injected by value.
    for i in h.active() {
        h.group(i)
            .psk_store_mut()
            .insert_external(b"shared psk".to_vec(), Secret::from_slice(&[7; 32]));
    }
    let id = h.group(0).external_psk_id(b"shared psk".to_vec());
    let mut opts = CommitOptions::new();
    opts.psks = vec![id];
    h.commit(0, opts, Vec::new());
    // Resumption PSK of the previous epoch, by proposal.
    let prev = h.group(2).epoch() - 1;
    let id = h.group(2).resumption_psk_id(prev);
    let prop = h.group(2).propose_psk(id).unwrap();
    for r in h.active() {
        if r != 2 {
            assert!(matches!(
                h.group(r).process_incoming(&prop, NOW).unwrap(),
                ProcessedMessage::Proposal { .. }
            ));
        }
    }
    h.commit(1, CommitOptions::new(), Vec::new());
    h.all_send();
    // A PSK a member does not know makes the commit fail there.
    h.group(0)
        .psk_store_mut()
        .insert_external(b"only alice".to_vec(), Secret::from_slice(&[9; 32]));
    let id = h.group(0).external_psk_id(b"only alice".to_vec());
    let mut opts = CommitOptions::new();
    opts.psks = vec![id];
    let out = h.group(0).commit(opts, NOW).unwrap();
    let before = h.group(1).state_snapshot();
    assert!(matches!(
        h.group(1).process_incoming(&out.commit, NOW),
        Err(GroupError::UnknownPsk)
    ));
    assert_eq!(h.group(1).state_snapshot(), before);
    h.group(0).discard_pending_commit().unwrap();
}

/// The refusals a sweep over flipped bytes may meet: which rule fires
/// depends on the byte, so a sweep accepts exactly these variants.
fn is_tamper_refusal(e: &GroupError) -> bool {
    matches!(
        e,
        GroupError::Malformed(_)
            | GroupError::Protection(_)
            | GroupError::WrongGroupId
            | GroupError::WrongEpoch { .. }
            | GroupError::NotAMember(_)
            | GroupError::UnexpectedMessage(MessageRule::SenderCannotSendContent)
    )
}

fn assert_rejected_unchanged(g: &mut Group, bytes: impl AsRef<[u8]>) -> GroupError {
    let before: GroupStateSnapshot = g.state_snapshot();
    let err = g.process_incoming(bytes, NOW).unwrap_err();
    assert_eq!(g.state_snapshot(), before, "state changed after {err}");
    err
}

#[test]
fn rejected_commits_leave_state_unchanged() {
    for framing in [HandshakeFraming::Private, HandshakeFraming::Public] {
        let mut config = GroupConfig::default();
        config.handshake_framing = framing;
        let mut h = build(3, config);
        let out = h.group(0).commit(CommitOptions::new(), NOW).unwrap();
        // Tampered: flip one byte at a time over the message.
        let mut rejected = 0;
        for pos in (0..out.commit.len()).step_by(7) {
            let mut bad = out.commit.clone();
            bad[pos] ^= 0x01;
            let err = assert_rejected_unchanged(h.group(1), &bad);
            assert!(is_tamper_refusal(&err), "byte {pos}: {err:?}");
            rejected += 1;
        }
        assert!(rejected > 10);
        // Tampered application messages too.
        let app = h.group(2).encrypt_application(b"payload").unwrap();
        for pos in (0..app.len()).step_by(5) {
            let mut bad = app.clone();
            bad[pos] ^= 0x04;
            let err = assert_rejected_unchanged(h.group(1), &bad);
            assert!(is_tamper_refusal(&err), "byte {pos}: {err:?}");
        }
        assert!(matches!(
            h.group(1).process_incoming(&app, NOW).unwrap(),
            ProcessedMessage::ApplicationMessage { .. }
        ));
        // Truncated.
        assert!(matches!(
            assert_rejected_unchanged(h.group(1), &out.commit[..out.commit.len() - 1]),
            GroupError::Malformed(_)
        ));
        // Wrong epoch: re-encode a PublicMessage with another epoch, or
        // deliver after the epoch moved on.
        let msg = MlsMessage::decode(&out.commit).unwrap();
        if let MlsMessageBody::PublicMessage(mut pm) = msg.body.clone() {
            pm.content.epoch += 1;
            let bytes = MlsMessage {
                body: MlsMessageBody::PublicMessage(pm.clone()),
            }
            .encode()
            .unwrap();
            assert!(matches!(
                assert_rejected_unchanged(h.group(1), &bytes),
                GroupError::WrongEpoch { .. }
            ));
            // Bad signature (membership tag recomputed is not possible for
            // an attacker; flip a signature bit).
            // The membership tag covers the signature.
            pm.content.epoch -= 1;
            pm.auth.signature[10] ^= 1;
            let bytes = MlsMessage {
                body: MlsMessageBody::PublicMessage(pm),
            }
            .encode()
            .unwrap();
            assert!(matches!(
                assert_rejected_unchanged(h.group(1), &bytes),
                GroupError::Protection(ProtectionError::InvalidMembershipTag)
            ));
        }
        // The genuine commit still works afterwards.
        let ev = h.group(1).process_incoming(&out.commit, NOW).unwrap();
        let ProcessedMessage::StagedCommit(staged) = ev else {
            panic!()
        };
        h.group(1).merge_staged_commit(staged).unwrap();
        // Replaying it in the next epoch is refused.
        assert!(matches!(
            assert_rejected_unchanged(h.group(1), &out.commit),
            GroupError::WrongEpoch { .. }
        ));
        // A commit by the removed... member's own commit is refused.
        h.group(0).merge_pending_commit().unwrap();
        h.group(2)
            .process_incoming(&out.commit, NOW)
            .map(|ev| match ev {
                ProcessedMessage::StagedCommit(s) => h.group(2).merge_staged_commit(s).unwrap(),
                _ => panic!(),
            })
            .unwrap();
        h.check_agreement();
    }
}

#[test]
fn welcome_without_tree_needs_out_of_band_tree() {
    let mut config = GroupConfig::default();
    config.ratchet_tree_in_welcome = false;
    let mut h = Harness::new(config.clone());
    let (s, kp) = h.new_joiner();
    let out = h
        .group(0)
        .add_members(std::slice::from_ref(&kp.key_package), NOW)
        .unwrap();
    h.group(0).merge_pending_commit().unwrap();
    let welcome = out.welcome.unwrap();
    let err = Client::new(s.clone(), validator())
        .with_group_config(config.clone())
        .join_from_welcome(&kp, &welcome, JoinOptions::default())
        .unwrap_err();
    assert!(matches!(err, GroupError::MissingRatchetTree));
    // A tampered Welcome is refused and the init key is kept: a flipped
    // byte in the GroupInfo's ciphertext (the HPKE context of the
    // GroupSecrets, RFC 9420 §12.4.3.1) or the GroupSecrets' ciphertext
    // fails the GroupSecrets; one in the KeyPackageRef finds no entry.
    for (pos, part) in [
        (welcome.len() - 1, Some(WelcomePart::GroupSecrets)),
        (welcome.len() / 2, Some(WelcomePart::GroupSecrets)),
        (20, None),
    ] {
        let mut bad = welcome.clone();
        bad[pos] ^= 0x80;
        let r = Client::new(s.clone(), validator())
            .with_group_config(config.clone())
            .join_from_welcome(&kp, &bad, {
                let mut join = JoinOptions::default();
                join.ratchet_tree = out.ratchet_tree.clone();
                join
            });
        match part {
            Some(part) => assert!(
                matches!(&r, Err(GroupError::WelcomeDecryption(p)) if *p == part),
                "byte {pos}: {:?}",
                r.err()
            ),
            None => assert!(
                matches!(&r, Err(GroupError::NotInWelcome)),
                "byte {pos}: {:?}",
                r.err()
            ),
        }
    }
    // A Welcome for another KeyPackage is refused.
    let other = key_package(&s);
    assert!(matches!(
        Client::new(s.clone(), validator())
            .with_group_config(config.clone())
            .join_from_welcome(&other, &welcome, {
                let mut join = JoinOptions::default();
                join.ratchet_tree = out.ratchet_tree.clone();
                join
            }),
        Err(GroupError::NotInWelcome)
    ));
    let g = Client::new(s.clone(), validator())
        .with_group_config(config)
        .join_from_welcome(&kp, &welcome, {
            let mut join = JoinOptions::default();
            join.ratchet_tree = out.ratchet_tree;
            join
        })
        .unwrap();
    assert_eq!(g.epoch_authenticator(), h.group(0).epoch_authenticator());
    // The init key was destroyed in custody after use (§9.2).
    assert!(matches!(
        s.custody
            .dh(&kp.init_key, kp.key_package.as_wire().init_key.as_slice()),
        Err(CustodyError::KeyNotFound(_))
    ));
}

#[test]
fn proposal_list_validation_and_context_extensions() {
    let mut h = build(4, GroupConfig::default());
    let before = h.group(0).state_snapshot();
    // Invalid lists are refused at the committer, which stays unchanged.
    let mut opts = CommitOptions::new();
    opts.remove_leaves = vec![LeafIndex(1), LeafIndex(1)];
    assert!(matches!(
        h.group(0).commit(opts, NOW),
        Err(GroupError::InvalidProposal(
            ProposalRule::SeveralChangesToOneLeaf
        ))
    ));
    let mut opts = CommitOptions::new();
    opts.remove_leaves = vec![LeafIndex(0)];
    assert!(matches!(
        h.group(0).commit(opts, NOW),
        Err(GroupError::InvalidProposal(ProposalRule::RemovesCommitter))
    ));
    let mut opts = CommitOptions::new();
    opts.remove_leaves = vec![LeafIndex(17)];
    assert!(matches!(
        h.group(0).commit(opts, NOW),
        Err(GroupError::InvalidProposal(ProposalRule::RemoveBlankLeaf))
    ));
    let (_, kp) = h.new_joiner();
    let mut opts = CommitOptions::new();
    opts.add_key_packages = vec![kp.key_package.clone(), kp.key_package.clone()];
    assert!(matches!(
        h.group(0).commit(opts, NOW),
        Err(GroupError::InvalidProposal(
            ProposalRule::SameClientAddedTwice
        ))
    ));
    // A KeyPackage of an existing member (same signature key) is refused.
    let dup = Client::new(h.group(2).signer().clone(), validator())
        .generate_key_package(&KeyPackageConfig::new(NOW - 10, 3600))
        .unwrap();
    let mut opts = CommitOptions::new();
    opts.add_key_packages = vec![dup.key_package.clone()];
    let r = h.group(0).commit(opts, NOW);
    assert!(
        matches!(
            r,
            Err(GroupError::Tree(TreeError::DuplicateKey {
                kind: KeyKind::SignatureKey,
                ..
            }))
        ),
        "{:?}",
        r.err()
    );
    // An expired KeyPackage is refused.
    let mut opts = CommitOptions::new();
    opts.add_key_packages = vec![kp.key_package.clone()];
    assert!(matches!(
        h.group(0).commit(opts, NOW + 7200),
        Err(GroupError::KeyPackage(KeyPackageError::Expired { .. }))
    ));
    assert_eq!(h.group(0).state_snapshot(), before);
    assert!(!h.group(0).has_pending_commit());
    // A cached proposal that would make the commit invalid can be dropped.
    let expiring = key_package(&signer("short-lived"));
    let prop = h.group(2).propose_add(&expiring.key_package, NOW).unwrap();
    assert!(matches!(
        h.group(0).process_incoming(&prop, NOW).unwrap(),
        ProcessedMessage::Proposal { .. }
    ));
    assert!(matches!(
        h.group(0).commit(CommitOptions::new(), NOW + 7200),
        Err(GroupError::KeyPackage(KeyPackageError::Expired { .. }))
    ));
    let reference = h.group(0).pending_proposals()[0].reference.clone();
    assert!(h.group(0).discard_proposal(&reference));
    let mut opts = CommitOptions::new();
    opts.force_path = true;
    let out = h.group(0).commit(opts, NOW + 7200).unwrap();
    assert!(out.adds.is_empty());
    h.group(0).discard_pending_commit().unwrap();
    h.group(2).discard_proposal(&reference);

    // Add by reference: a proposal, then a commit of the pending list.
    let (s, kp) = h.new_joiner();
    let prop = h.group(1).propose_add(&kp.key_package, NOW).unwrap();
    for r in [0usize, 2, 3] {
        assert!(matches!(
            h.group(r).process_incoming(&prop, NOW).unwrap(),
            ProcessedMessage::Proposal { .. }
        ));
    }
    let out = h.commit_out(3, CommitOptions::new(), vec![(s, kp)]);
    assert_eq!(out.adds.len(), 1);
    assert!(out.welcome.is_some());

    // GroupContextExtensions by value and by reference.
    let rc = hsmls::wire::RequiredCapabilities {
        extension_types: Vec::new(),
        proposal_types: Vec::new(),
        credential_types: vec![hsmls::wire::CredentialType::BASIC],
    };
    let ext = vec![hsmls::wire::Extension::from_data(&rc).unwrap()];
    let mut opts = CommitOptions::new();
    opts.group_context_extensions = Some(ext.clone());
    h.commit(0, opts, Vec::new());
    assert_eq!(h.group(4).group_context().extensions, ext);
    // Requiring a capability no member has is refused.
    let rc_bad = hsmls::wire::RequiredCapabilities {
        extension_types: vec![hsmls::wire::ExtensionType(0xff00)],
        proposal_types: Vec::new(),
        credential_types: Vec::new(),
    };
    let mut opts = CommitOptions::new();
    opts.group_context_extensions = Some(vec![hsmls::wire::Extension::from_data(&rc_bad).unwrap()]);
    assert!(matches!(
        h.group(0).commit(opts, NOW),
        Err(GroupError::InvalidProposal(
            ProposalRule::RequiredCapabilitiesNotMet
        ))
    ));
    let prop = h
        .group(2)
        .propose_group_context_extensions(Vec::new())
        .unwrap();
    for r in h.active() {
        if r != 2 {
            assert!(matches!(
                h.group(r).process_incoming(&prop, NOW).unwrap(),
                ProcessedMessage::Proposal { .. }
            ));
        }
    }
    let out = h.group(1).commit(CommitOptions::new(), NOW).unwrap();
    for r in h.active() {
        if r == 1 {
            continue;
        }
        let ProcessedMessage::StagedCommit(staged) =
            h.group(r).process_incoming(&out.commit, NOW).unwrap()
        else {
            panic!()
        };
        assert_eq!(staged.group_context_extensions, Some(Vec::new()));
        assert!(staged.has_path);
        h.group(r).merge_staged_commit(staged).unwrap();
    }
    h.group(1).merge_pending_commit().unwrap();
    h.check_agreement();
    assert!(h.group(0).group_context().extensions.is_empty());

    // Two commits in one epoch: the loser discards its own.
    let a = h.group(0).commit(CommitOptions::new(), NOW).unwrap();
    let _b = h.group(1).commit(CommitOptions::new(), NOW).unwrap();
    for r in h.active() {
        if r == 0 {
            continue;
        }
        let ProcessedMessage::StagedCommit(staged) =
            h.group(r).process_incoming(&a.commit, NOW).unwrap()
        else {
            panic!()
        };
        h.group(r).merge_staged_commit(staged).unwrap();
    }
    h.group(0).merge_pending_commit().unwrap();
    assert!(!h.group(1).has_pending_commit());
    h.check_agreement();
    h.all_send();
}

#[test]
fn welcome_with_psk() {
    let mut h = build(2, GroupConfig::default());
    for i in h.active() {
        h.group(i)
            .psk_store_mut()
            .insert_external(b"team psk".to_vec(), Secret::from_slice(&[3; 32]));
    }
    let (s, kp) = h.new_joiner();
    let id = h.group(0).external_psk_id(b"team psk".to_vec());
    let mut opts = CommitOptions::new();
    opts.add_key_packages = vec![kp.key_package.clone()];
    opts.psks = vec![id];
    let out = h.group(0).commit(opts, NOW).unwrap();
    let welcome = out.welcome.clone().unwrap();
    // Without the PSK the joiner cannot join.
    assert!(matches!(
        Client::new(s.clone(), validator()).join_from_welcome(
            &kp,
            &welcome,
            JoinOptions::default()
        ),
        Err(GroupError::UnknownPsk)
    ));
    // With a wrong PSK value the GroupInfo does not decrypt.
    let mut wrong = hsmls::PskStore::default();
    wrong.insert_external(b"team psk".to_vec(), Secret::from_slice(&[4; 32]));
    assert!(matches!(
        Client::new(s.clone(), validator()).join_from_welcome(&kp, &welcome, {
            let mut join = JoinOptions::default();
            join.psks = wrong;
            join
        }),
        Err(GroupError::WelcomeDecryption(WelcomePart::GroupInfo))
    ));
    let ProcessedMessage::StagedCommit(staged) =
        h.group(1).process_incoming(&out.commit, NOW).unwrap()
    else {
        panic!()
    };
    assert_eq!(staged.psks.len(), 1);
    h.group(1).merge_staged_commit(staged).unwrap();
    h.group(0).merge_pending_commit().unwrap();
    let mut psks = hsmls::PskStore::default();
    psks.insert_external(b"team psk".to_vec(), Secret::from_slice(&[3; 32]));
    let g = Client::new(s, validator())
        .join_from_welcome(&kp, &welcome, {
            let mut join = JoinOptions::default();
            join.psks = psks;
            join
        })
        .unwrap();
    h.members.push(Some(g));
    h.check_agreement();
    h.all_send();
}

#[test]
fn handshake_framing_policy() {
    // Bob accepts only encrypted handshakes; Alice sends public ones.
    let mut public = GroupConfig::default();
    public.handshake_framing = HandshakeFraming::Public;
    let mut h = build(2, public);
    let mut strict = h.group(1).config().clone();
    strict.accept_public_handshakes = false;
    h.group(1).set_config(strict);
    let out = h.group(0).commit(CommitOptions::new(), NOW).unwrap();
    assert!(matches!(
        assert_rejected_unchanged(h.group(1), &out.commit),
        GroupError::WireFormatPolicy
    ));
    h.group(0).discard_pending_commit().unwrap();
    // A Welcome or KeyPackage is not a group message.
    let kp = key_package(&signer("x")).to_bytes().unwrap();
    assert!(matches!(
        assert_rejected_unchanged(h.group(1), &kp),
        GroupError::UnexpectedMessage(MessageRule::KeyPackage)
    ));
    assert!(matches!(
        assert_rejected_unchanged(h.group(1), b"garbage"),
        GroupError::Malformed(_)
    ));
}

#[test]
fn external_senders_and_new_member_proposals() {
    // The group lists a Delivery Service key as external sender 0.
    let ds = Client::new(signer("delivery service"), validator());
    let senders = hsmls::wire::ExternalSenders(vec![hsmls::wire::ExternalSender {
        signature_key: ds.signer().signature_public_key(),
        credential: ds.signer().credential.clone(),
    }]);
    let mut config = GroupConfig::default();
    config.handshake_framing = HandshakeFraming::Public;
    let g = Client::new(signer("member-0"), validator())
        .with_group_config(config.clone())
        .create_group(
            b"with ds".to_vec(),
            vec![hsmls::wire::Extension::from_data(&senders).unwrap()],
            NOW,
        )
        .unwrap();
    let mut h = Harness {
        members: vec![Some(g)],
        config,
        next_id: 1,
    };
    h.add(0, 3);
    let (group_id, epoch) = (h.group(0).group_id().to_vec(), h.group(0).epoch());

    // The DS proposes removing member 2; member 1 commits it by reference.
    let prop = ds
        .external_proposal(
            &group_id,
            epoch,
            0,
            hsmls::wire::Proposal::Remove(hsmls::wire::Remove {
                removed: LeafIndex(2),
            }),
        )
        .unwrap();
    for i in h.active() {
        match h.group(i).process_incoming(&prop, NOW).unwrap() {
            ProcessedMessage::Proposal {
                sender, reference, ..
            } => {
                assert_eq!(sender, hsmls::wire::Sender::External(0));
                assert_eq!(reference, prop.reference);
            }
            other => panic!("{other:?}"),
        }
    }
    // An Update or ExternalInit is not an external sender's to propose.
    let member = h.group(0).members()[1].clone();
    assert!(matches!(
        ds.external_proposal(
            &group_id,
            epoch,
            0,
            hsmls::wire::Proposal::ExternalInit(hsmls::wire::ExternalInit {
                kem_output: member.encryption_key.0,
            }),
        ),
        Err(GroupError::InvalidProposal(
            ProposalRule::NotAllowedFromExternalSender
        ))
    ));
    // An unknown external sender index or a forged key is refused.
    let bad = Client::new(signer("not the ds"), validator())
        .external_proposal(
            &group_id,
            epoch,
            0,
            hsmls::wire::Proposal::Remove(hsmls::wire::Remove {
                removed: LeafIndex(1),
            }),
        )
        .unwrap();
    assert!(matches!(
        assert_rejected_unchanged(h.group(0), &bad),
        GroupError::Protection(ProtectionError::InvalidSignature(_))
    ));
    let out = h.commit_out(1, CommitOptions::new(), Vec::new());
    assert_eq!(out.removes[0].index, LeafIndex(2));

    // A new member proposes its own Add; member 0 commits it. Its
    // KeyPackage, proposed by another client, is refused.
    let (s, kp) = h.new_joiner();
    let epoch = h.group(0).epoch();
    let joiner = Client::new(s.clone(), validator());
    assert!(matches!(
        ds.new_member_add_proposal(&kp.key_package, &group_id, epoch),
        Err(GroupError::SignerMismatch)
    ));
    let prop = joiner
        .new_member_add_proposal(&kp.key_package, &group_id, epoch)
        .unwrap();
    for i in h.active() {
        assert!(matches!(
            h.group(i).process_incoming(&prop, NOW).unwrap(),
            ProcessedMessage::Proposal { .. }
        ));
    }
    let out = h.commit_out(0, CommitOptions::new(), vec![(s, kp)]);
    assert_eq!(out.adds.len(), 1);
    h.all_send();
}

#[test]
fn commit_with_unknown_proposal_reference_is_rejected() {
    for framing in [HandshakeFraming::Private, HandshakeFraming::Public] {
        let mut h = build(3, {
            let mut config = GroupConfig::default();
            config.handshake_framing = framing;
            config
        });
        // Member 1's Update reaches member 0 but not member 2.
        let prop = h.group(1).propose_update().unwrap();
        assert!(matches!(
            h.group(0).process_incoming(&prop, NOW).unwrap(),
            ProcessedMessage::Proposal { .. }
        ));
        let out = h.group(0).commit(CommitOptions::new(), NOW).unwrap();
        assert!(matches!(
            assert_rejected_unchanged(h.group(2), &out.commit),
            GroupError::UnknownProposalRef
        ));
        // Once the proposal arrives, the same commit is accepted.
        assert!(matches!(
            h.group(2).process_incoming(&prop, NOW).unwrap(),
            ProcessedMessage::Proposal { .. }
        ));
        for i in [1usize, 2] {
            let ProcessedMessage::StagedCommit(staged) =
                h.group(i).process_incoming(&out.commit, NOW).unwrap()
            else {
                panic!()
            };
            assert_eq!(staged.updates.len(), 1);
            h.group(i).merge_staged_commit(staged).unwrap();
        }
        h.group(0).merge_pending_commit().unwrap();
        h.check_agreement();
        h.all_send();
    }
}
