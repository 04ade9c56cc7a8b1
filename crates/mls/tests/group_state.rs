//! Saved group state (`hsmls::state`) with software custody: a member saves
//! and is loaded back (its process "restarts"), with past epochs, out-of-order
//! keys, cached and own proposals, a pending commit and PSKs, and goes on
//! with the others agreeing; KeyPackage bundles likewise. Every refused blob
//! (altered at any byte, truncated, unknown version, another key, another
//! group, records of another save) gives its own typed error and changes
//! nothing. The same on SoftHSM, across real processes, is in
//! `crates/storage/tests`.

use std::sync::Arc;

use hsmls::state::{FORMAT_VERSION, MAGIC, RecordKind, SealedHeader};
use hsmls::wire::Credential;
use hsmls::wire::LeafIndex;
use hsmls::{
    BasicCredentialValidator, Client, CommitOptions, CredentialValidator, EpochRecord, Group,
    GroupConfig, JoinOptions, KeyPackage, KeyPackageBundle, KeyPackageConfig, ProcessedMessage,
    SavedGroup, Signer, StateError,
};
use hsmls_crypto::Secret;
use hsmls_custody::{KeyCustody, SoftwareCustody, SoftwareSealer, StateSealer};

const NOW: u64 = 1_750_000_000;

fn validator() -> Arc<dyn CredentialValidator> {
    Arc::new(BasicCredentialValidator::default())
}

/// A member: its custody (with its sealer), its client and its group.
struct Member {
    custody: Arc<SoftwareCustody>,
    client: Client,
    group: Option<Group>,
}

impl Member {
    fn new(name: &str) -> Self {
        let custody = Arc::new(SoftwareCustody::new());
        let signer = Signer::generate(
            custody.clone() as Arc<dyn KeyCustody>,
            Credential::Basic(name.as_bytes().to_vec()),
        )
        .unwrap();
        Member {
            custody,
            client: Client::new(signer, validator()),
            group: None,
        }
    }

    fn g(&mut self) -> &mut Group {
        self.group.as_mut().unwrap()
    }

    fn save(&self) -> SavedGroup {
        self.group
            .as_ref()
            .unwrap()
            .save(self.custody.state_sealer())
            .unwrap()
    }

    /// Drops the group (the process ends) and loads it from `saved`.
    fn restart(&mut self, saved: &SavedGroup) {
        self.group = None;
        self.group = Some(self.load(saved).unwrap());
    }

    fn load(&self, saved: &SavedGroup) -> Result<Group, StateError> {
        self.client
            .load_saved_group(self.custody.state_sealer(), saved)
    }

    /// Loads a state blob (no tree or epoch records) with `sealer`.
    fn load_blob(
        &self,
        sealer: &dyn StateSealer,
        group_id: &[u8],
        state: &[u8],
    ) -> Result<Group, StateError> {
        self.client.load_group(sealer, group_id, state, &[], &[])
    }

    fn key_package(&self) -> KeyPackageBundle {
        self.client
            .generate_key_package(&KeyPackageConfig::new(NOW - 10, 3600))
            .unwrap()
    }
}

fn create(config: GroupConfig, group_id: &[u8]) -> Member {
    let mut a = Member::new("alice");
    a.client = a.client.clone().with_group_config(config);
    a.group = Some(
        a.client
            .create_group(group_id.to_vec(), Vec::new(), NOW)
            .unwrap(),
    );
    a
}

/// `committer` adds `joiners` by Welcome.
fn add(members: &mut [Member], committer: usize, joiners: &[usize]) {
    let bundles: Vec<_> = joiners.iter().map(|&j| members[j].key_package()).collect();
    let kps: Vec<KeyPackage> = bundles.iter().map(|b| b.key_package.clone()).collect();
    let out = members[committer].g().add_members(&kps, NOW).unwrap();
    deliver(members, committer, &out.commit);
    for (&j, bundle) in joiners.iter().zip(&bundles) {
        let g = members[j]
            .client
            .join_from_welcome(
                bundle,
                out.welcome.as_ref().unwrap(),
                JoinOptions::default(),
            )
            .unwrap();
        members[j].group = Some(g);
    }
    agree(members);
}

/// Every other member in the group processes and merges `commit`; the
/// committer merges its pending commit.
fn deliver(members: &mut [Member], committer: usize, commit: &[u8]) {
    for (i, m) in members.iter_mut().enumerate() {
        if i == committer || m.group.is_none() {
            continue;
        }
        let ProcessedMessage::StagedCommit(s) = m.g().process_incoming(commit, NOW).unwrap() else {
            panic!("expected a commit");
        };
        m.g().merge_staged_commit(s).unwrap();
    }
    members[committer].g().merge_pending_commit().unwrap();
}

fn agree(members: &[Member]) {
    let groups: Vec<&Group> = members.iter().filter_map(|m| m.group.as_ref()).collect();
    for g in &groups {
        assert_eq!(g.epoch(), groups[0].epoch());
        assert_eq!(g.epoch_authenticator(), groups[0].epoch_authenticator());
        assert_eq!(g.tree_hash(), groups[0].tree_hash());
        assert_eq!(
            g.export_secret(b"state", b"", 32).unwrap(),
            groups[0].export_secret(b"state", b"", 32).unwrap()
        );
    }
}

fn expect_app(g: &mut Group, msg: &[u8], text: &[u8], epoch: u64) {
    match g.process_incoming(msg, NOW).unwrap() {
        ProcessedMessage::ApplicationMessage { data, epoch: e, .. } => {
            assert_eq!(data, text);
            assert_eq!(e, epoch);
        }
        other => panic!("expected application data, got {other:?}"),
    }
}

fn self_update(members: &mut [Member], committer: usize) {
    let out = members[committer].g().self_update(NOW).unwrap();
    deliver(members, committer, &out.commit);
    agree(members);
}

#[test]
fn a_restarted_member_reads_late_messages_commits_and_the_group_agrees() {
    let mut m = vec![
        create(GroupConfig::default(), b"restart"),
        Member::new("bob"),
    ];
    m.push(Member::new("carol"));
    add(&mut m, 0, &[1, 2]);
    // Epoch 1: bob sends three messages; alice reads only the third.
    let late: Vec<_> = (0..3)
        .map(|i| {
            m[1].g()
                .encrypt_application(format!("e1-{i}").as_bytes())
                .unwrap()
        })
        .collect();
    expect_app(m[0].g(), &late[2], b"e1-2", 1);
    self_update(&mut m, 2);
    self_update(&mut m, 1);
    // Epoch 3: carol's proposal is cached at alice, alice proposes her own
    // update, alice has an external PSK.
    let carol_update = m[2].g().propose_update().unwrap();
    for i in [0, 1] {
        let event = m[i].g().process_incoming(&carol_update, NOW).unwrap();
        assert!(matches!(event, ProcessedMessage::Proposal { .. }));
    }
    let alice_update = m[0].g().propose_update().unwrap();
    for i in [1, 2] {
        let event = m[i].g().process_incoming(&alice_update, NOW).unwrap();
        assert!(matches!(event, ProcessedMessage::Proposal { .. }));
    }
    let psk_id = b"shared psk".to_vec();
    for member in m.iter_mut() {
        member
            .g()
            .psk_store_mut()
            .insert_external(psk_id.clone(), Secret::from_slice(&[9; 32]));
    }
    let before = m[0].group.as_ref().unwrap().state_snapshot();
    let authenticator = m[0].group.as_ref().unwrap().epoch_authenticator().to_vec();

    let saved = m[0].save();
    assert_eq!(saved.epoch, 3);
    assert_eq!(
        saved
            .epoch_records
            .iter()
            .map(|r| r.epoch)
            .collect::<Vec<_>>(),
        [1, 2]
    );
    // The blobs show no secret in clear.
    for blob in std::iter::once(&saved.state).chain(saved.epoch_records.iter().map(|r| &r.data)) {
        assert!(!blob.windows(32).any(|w| w == authenticator.as_slice()));
    }
    m[0].restart(&saved);
    assert!(m[0].group.as_ref().unwrap().state_snapshot() == before);
    assert_eq!(m[0].g().pending_proposals().len(), 2);

    // The late messages of epoch 1 (out of order), and not the one read
    // before the restart.
    expect_app(m[0].g(), &late[0], b"e1-0", 1);
    assert!(matches!(
        m[0].g().process_incoming(&late[2], NOW),
        Err(hsmls::GroupError::Protection(_))
    ));
    expect_app(m[0].g(), &late[1], b"e1-1", 1);
    // Alice commits both proposals by reference and a PSK by value.
    let mut options = CommitOptions::new();
    options.psks = vec![m[0].g().external_psk_id(psk_id)];
    let out = m[0].g().commit(options, NOW).unwrap();
    deliver(&mut m, 0, &out.commit);
    agree(&m);
    // Messages both ways, then another restart of everyone.
    let msg = m[0].g().encrypt_application(b"after restart").unwrap();
    expect_app(m[1].g(), &msg, b"after restart", 4);
    expect_app(m[2].g(), &msg, b"after restart", 4);
    for member in m.iter_mut() {
        let saved = member.save();
        member.restart(&saved);
    }
    agree(&m);
    let msg = m[2].g().encrypt_application(b"again").unwrap();
    expect_app(m[0].g(), &msg, b"again", 4);
    self_update(&mut m, 0);
}

#[test]
fn a_pending_commit_and_sent_messages_survive_a_restart() {
    let mut m = vec![
        create(GroupConfig::default(), b"pending"),
        Member::new("bob"),
    ];
    add(&mut m, 0, &[1]);
    let hello = m[0].g().encrypt_application(b"hello").unwrap();
    expect_app(m[1].g(), &hello, b"hello", 1);
    let out = m[0].g().self_update(NOW).unwrap();
    let saved = m[0].save();
    m[0].restart(&saved);
    assert!(m[0].g().has_pending_commit());
    // The Delivery Service sends Alice's own message and commit back: she
    // recognises both after the restart, and the commit merges.
    assert!(matches!(
        m[0].g().process_incoming(&hello, NOW).unwrap(),
        ProcessedMessage::OwnMessage { epoch: 1, .. }
    ));
    match m[0].g().process_incoming(&out.commit, NOW).unwrap() {
        ProcessedMessage::OwnCommit(own) => assert_eq!(own.epoch, 2),
        other => panic!("expected her own commit, got {other:?}"),
    }
    let ProcessedMessage::StagedCommit(s) = m[1].g().process_incoming(&out.commit, NOW).unwrap()
    else {
        panic!("commit");
    };
    m[1].g().merge_staged_commit(s).unwrap();
    agree(&m);
    assert_eq!(m[0].g().epoch(), 2);
    // A saved pending commit that loses after the restart: the winner is
    // staged with the lost commit, which can be made again.
    let mut options = CommitOptions::new();
    options.force_path = true;
    options.authenticated_data = b"mine".to_vec();
    let _lost = m[0].g().commit(options, NOW).unwrap();
    let saved = m[0].save();
    m[0].restart(&saved);
    let won = m[1].g().self_update(NOW).unwrap();
    m[1].g().merge_pending_commit().unwrap();
    let ProcessedMessage::StagedCommit(s) = m[0].g().process_incoming(&won.commit, NOW).unwrap()
    else {
        panic!("the winning commit");
    };
    let lost = s.lost_commit.clone().expect("Alice's commit lost");
    assert_eq!(lost.epoch, 2);
    assert!(lost.force_path);
    assert_eq!(lost.authenticated_data, b"mine");
    m[0].g().merge_staged_commit(s).unwrap();
    agree(&m);
}

#[test]
fn a_removed_member_loads_as_inactive() {
    let mut m = vec![
        create(GroupConfig::default(), b"removed"),
        Member::new("bob"),
    ];
    add(&mut m, 0, &[1]);
    let out = m[0].g().remove_members(&[LeafIndex(1)], NOW).unwrap();
    deliver(&mut m, 0, &out.commit);
    assert!(!m[1].g().is_active());
    let saved = m[1].save();
    m[1].restart(&saved);
    assert!(!m[1].g().is_active());
    assert!(matches!(
        m[1].g().encrypt_application(b"x"),
        Err(hsmls::GroupError::Removed)
    ));
}

#[test]
fn a_saved_key_package_bundle_joins_after_a_restart() {
    let mut m = vec![
        create(GroupConfig::default(), b"bundle"),
        Member::new("dave"),
    ];
    let bundle = m[1].key_package();
    let saved = m[1]
        .client
        .save_key_package(&bundle, m[1].custody.state_sealer())
        .unwrap();
    assert_eq!(saved.reference, bundle.key_package.reference().as_slice());
    assert!(!saved.last_resort);
    assert_eq!(saved.not_after, NOW - 10 + 3600);
    // The process restarts: a new client with the same signature key.
    let restarted = Client::new(m[1].client.signer().clone(), validator());
    let loaded = restarted
        .load_key_package(m[1].custody.state_sealer(), &saved.reference, &saved.data)
        .unwrap();
    assert!(loaded == bundle);
    let out = m[0]
        .g()
        .add_members(std::slice::from_ref(&loaded.key_package), NOW)
        .unwrap();
    m[0].g().merge_pending_commit().unwrap();
    m[1].group = Some(
        restarted
            .join_from_welcome(&loaded, &out.welcome.unwrap(), JoinOptions::default())
            .unwrap(),
    );
    agree(&m);

    // Last resort is in clear; the bundle of another KeyPackage, a client
    // that did not sign it (saving or loading), and a state blob are
    // refused.
    let lr = m[1]
        .client
        .generate_key_package(&KeyPackageConfig::new(NOW, 60).last_resort())
        .unwrap();
    let saved_lr = m[1]
        .client
        .save_key_package(&lr, m[1].custody.state_sealer())
        .unwrap();
    assert!(saved_lr.last_resort);
    assert!(matches!(
        m[1].client.load_key_package(
            m[1].custody.state_sealer(),
            &saved.reference,
            &saved_lr.data
        ),
        Err(StateError::WrongKeyPackage { .. })
    ));
    assert!(matches!(
        m[0].client
            .save_key_package(&lr, m[1].custody.state_sealer()),
        Err(StateError::KeyMismatch { .. })
    ));
    // Another signature key in the same custody: its client does not
    // load Dave's bundle.
    let other = Client::new(
        Signer::generate(
            m[1].custody.clone() as Arc<dyn KeyCustody>,
            Credential::Basic(b"dave".to_vec()),
        )
        .unwrap(),
        validator(),
    );
    assert!(matches!(
        other.load_key_package(
            m[1].custody.state_sealer(),
            &saved_lr.reference,
            &saved_lr.data
        ),
        Err(StateError::KeyMismatch { .. })
    ));
    assert!(matches!(
        m[1].client.load_key_package(
            m[1].custody.state_sealer(),
            &saved_lr.reference,
            &m[0].save().state
        ),
        Err(StateError::WrongRecordKind {
            expected: RecordKind::KeyPackageBundle,
            found: RecordKind::GroupState
        })
    ));
}

/// The offsets of the header fields of a blob whose key id has 16 bytes
/// and group id 32 bytes.
const KEY_ID: std::ops::Range<usize> = 12..28;
const GROUP_ID: std::ops::Range<usize> = 29..61;
const EPOCH: std::ops::Range<usize> = 61..69;
const LENGTH: std::ops::Range<usize> = 69..73;
const BODY: usize = 73;

#[test]
fn every_flipped_byte_of_a_small_blob_gives_its_typed_error() {
    let group_id = b"flip-test-group-0123456789abcdef";
    let a = create(GroupConfig::default(), group_id);
    let saved = a.save();
    let blob = &saved.state;
    assert!(
        blob.len() < 2000,
        "a one-member state is small: {}",
        blob.len()
    );
    assert_eq!(&blob[..8], &MAGIC);
    assert_eq!(&blob[KEY_ID], a.custody.state_sealer().key_id());
    assert_eq!(&blob[GROUP_ID], group_id);
    let (header, body) = SealedHeader::parse(blob).unwrap();
    assert_eq!(
        (header.version, header.kind, header.epoch),
        (FORMAT_VERSION, RecordKind::GroupState, 0)
    );
    assert_eq!(body.len(), blob.len() - BODY);
    for i in 0..blob.len() {
        let mut bad = blob.clone();
        bad[i] ^= 0x01;
        let e = a
            .load_blob(a.custody.state_sealer(), group_id, &bad)
            .unwrap_err();
        let ok = match i {
            0..8 => matches!(e, StateError::BadMagic),
            8 => matches!(e, StateError::UnknownVersion(0x0102)),
            9 => matches!(e, StateError::UnknownVersion(3)),
            10 => matches!(e, StateError::UnknownRecordKind(0)),
            // Length headers: the fields after them shift.
            11 | 28 => matches!(
                e,
                StateError::Truncated
                    | StateError::TrailingData(_)
                    | StateError::MalformedHeader
                    | StateError::SealedByAnotherKey { .. }
                    | StateError::WrongGroup { .. }
            ),
            i if KEY_ID.contains(&i) => matches!(e, StateError::SealedByAnotherKey { .. }),
            i if GROUP_ID.contains(&i) => matches!(e, StateError::WrongGroup { .. }),
            i if EPOCH.contains(&i) => matches!(e, StateError::Altered),
            i if LENGTH.contains(&i) => {
                matches!(e, StateError::Truncated | StateError::TrailingData(_))
            }
            _ => matches!(e, StateError::Altered),
        };
        assert!(ok, "byte {i}: {e:?}");
    }
    // Nothing changed: the original still loads.
    assert!(a.load(&saved).is_ok());
}

#[test]
fn every_truncation_is_truncated_and_a_longer_blob_trailing() {
    let a = create(GroupConfig::default(), b"truncate");
    let saved = a.save();
    let load = |blob: &[u8]| a.load_blob(a.custody.state_sealer(), b"truncate", blob);
    for len in 0..saved.state.len() {
        let e = load(&saved.state[..len]).unwrap_err();
        assert!(matches!(e, StateError::Truncated), "{len}: {e:?}");
    }
    let mut longer = saved.state.clone();
    longer.extend_from_slice(b"xyz");
    assert!(matches!(load(&longer), Err(StateError::TrailingData(3))));
    assert!(matches!(
        load(b"SQLite format 3\0"),
        Err(StateError::BadMagic)
    ));
}

#[test]
fn an_unknown_version_is_refused() {
    let a = create(GroupConfig::default(), b"version");
    let saved = a.save();
    for v in [0u16, 1, 3, 0xffff] {
        let mut blob = saved.state.clone();
        blob[8..10].copy_from_slice(&v.to_be_bytes());
        assert!(
            matches!(a.load(&SavedGroup { state: blob, ..saved.clone() }),
            Err(StateError::UnknownVersion(x)) if x == v)
        );
    }
}

#[test]
fn a_blob_of_another_token_or_group_is_refused() {
    let a = create(GroupConfig::default(), b"group A");
    let saved = a.save();
    let other = SoftwareSealer::generate();
    let e = a.load_blob(&other, b"group A", &saved.state).unwrap_err();
    match e {
        StateError::SealedByAnotherKey { expected, found } => {
            assert_eq!(expected, hex(other.key_id()));
            assert_eq!(found, hex(a.custody.state_sealer().key_id()));
        }
        e => panic!("{e:?}"),
    }
    let e = a
        .load_blob(a.custody.state_sealer(), b"group B", &saved.state)
        .unwrap_err();
    match e {
        StateError::WrongGroup { expected, found } => {
            assert_eq!(expected, hex(b"group B"));
            assert_eq!(found, hex(b"group A"));
        }
        e => panic!("{e:?}"),
    }
    // Keys of another custody: the state names keys this one lacks (a
    // client whose custody is empty)...
    let empty = Client::new(
        Signer::new(
            Arc::new(SoftwareCustody::new()),
            a.client.signer().signature_key.clone(),
            Credential::Basic(b"alice".to_vec()),
        ),
        validator(),
    );
    let e = empty
        .load_group(
            a.custody.state_sealer(),
            b"group A",
            &saved.state,
            &saved.tree_records,
            &[],
        )
        .unwrap_err();
    assert!(matches!(e, StateError::KeyNotFound { .. }), "{e:?}");
    // ... or holds other keys under the same references.
    let stranger = Client::new(
        Signer::generate(
            Arc::new(SoftwareCustody::new()),
            Credential::Basic(b"alice".to_vec()),
        )
        .unwrap(),
        validator(),
    );
    let e = stranger
        .load_group(
            a.custody.state_sealer(),
            b"group A",
            &saved.state,
            &saved.tree_records,
            &[],
        )
        .unwrap_err();
    assert!(matches!(e, StateError::KeyMismatch { .. }), "{e:?}");
    assert!(a.load(&saved).is_ok());
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn epoch_records_must_be_those_of_the_same_save() {
    let mut m = vec![
        create(GroupConfig::default(), b"records"),
        Member::new("bob"),
    ];
    add(&mut m, 0, &[1]);
    self_update(&mut m, 1);
    self_update(&mut m, 0);
    let first = m[0].save();
    let second = m[0].save();
    assert_eq!(first.epoch_records.len(), 2);
    // A record of another save of the same state.
    let mut mixed = second.clone();
    mixed.epoch_records[0] = first.epoch_records[0].clone();
    assert!(matches!(
        m[0].load(&mixed),
        Err(StateError::EpochRecordMismatch(1))
    ));
    // A missing record.
    let mut missing = second.clone();
    missing.epoch_records.remove(1);
    assert!(matches!(
        m[0].load(&missing),
        Err(StateError::MissingEpochRecord(2))
    ));
    // The same record twice.
    let mut twice = second.clone();
    twice.epoch_records.push(second.epoch_records[0].clone());
    assert!(matches!(
        m[0].load(&twice),
        Err(StateError::DuplicateEpochRecord(1))
    ));
    // A record labelled with another epoch than its header's.
    let mut relabelled = second.clone();
    relabelled.epoch_records[1].data = second.epoch_records[0].data.clone();
    assert!(matches!(
        m[0].load(&relabelled),
        Err(StateError::EpochRecordMismatch(2))
    ));
    // An altered record.
    let mut altered = second.clone();
    let last = altered.epoch_records[0].data.len() - 1;
    altered.epoch_records[0].data[last] ^= 0x80;
    assert!(matches!(m[0].load(&altered), Err(StateError::Altered)));
    // The state given as a record.
    let mut kind = second.clone();
    kind.epoch_records[0].data = second.state.clone();
    assert!(matches!(
        m[0].load(&kind),
        Err(StateError::WrongRecordKind {
            expected: RecordKind::EpochRecord,
            found: RecordKind::GroupState
        })
    ));
    // Records of epochs the state does not list (left the window) are
    // ignored.
    self_update(&mut m, 1);
    let third = m[0].save();
    let mut stale = third.clone();
    stale.epoch_records.push(first.epoch_records[0].clone());
    assert_eq!(
        stale
            .epoch_records
            .iter()
            .map(|r| r.epoch)
            .collect::<Vec<_>>(),
        [2, 3, 1]
    );
    let loaded = m[0].load(&stale).unwrap();
    assert!(loaded.state_snapshot() == m[0].g().state_snapshot());
    // Nothing changed: the good sets still load.
    assert!(m[0].load(&second).is_ok() && m[0].load(&third).is_ok());
    let _: &[EpochRecord] = &third.epoch_records;
}

#[test]
fn saved_group_debug_shows_no_bytes() {
    let a = create(GroupConfig::default(), b"debug");
    let saved = a.save();
    let debug = format!("{saved:?}");
    assert!(debug.contains("state_len"), "{debug}");
    assert!(!debug.contains(&hex(&saved.state[80..96])), "{debug}");
}

#[test]
fn a_closed_group_reinitializes_after_a_restart_and_the_link_is_kept() {
    use hsmls::wire::{CipherSuite, ProtocolVersion, ReInit};
    let mut m = vec![create(GroupConfig::default(), b"old"), Member::new("bob")];
    add(&mut m, 0, &[1]);
    let reinit = ReInit {
        group_id: b"new".to_vec(),
        version: ProtocolVersion::MLS10,
        cipher_suite: CipherSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256,
        extensions: vec![],
    };
    let out = m[0].g().commit_reinit(reinit.clone(), NOW).unwrap();
    deliver(&mut m, 0, &out.commit);
    for member in m.iter_mut() {
        let saved = member.save();
        member.restart(&saved);
        assert_eq!(member.g().committed_reinit(), Some(&reinit));
        assert!(matches!(
            member.g().encrypt_application(b"closed"),
            Err(hsmls::GroupError::ReInitialized)
        ));
    }
    // The loaded old groups carry the reinit PSK into the new group.
    let kp = m[1].key_package();
    let (a_client, b_client) = (m[0].client.clone(), m[1].client.clone());
    let (new_a, out) = a_client
        .reinit_group(m[0].g(), std::slice::from_ref(&kp.key_package), NOW)
        .unwrap();
    let new_b = b_client
        .join_reinit(m[1].g(), &kp, &out.welcome.unwrap(), JoinOptions::default())
        .unwrap();
    m[0].group = Some(new_a);
    m[1].group = Some(new_b);
    let link = m[1]
        .g()
        .linked_psk()
        .cloned()
        .expect("joined with a reinit PSK");
    for member in m.iter_mut() {
        let saved = member.save();
        member.restart(&saved);
    }
    assert_eq!(m[1].g().linked_psk(), Some(&link));
    agree(&m);
    self_update(&mut m, 1);
}
