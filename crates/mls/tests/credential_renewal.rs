//! A member replaces its own credential in a commit's UpdatePath
//! (`CommitOptions::new_signer`; RFC 9420 §5.3.1: "a Commit with an
//! UpdatePath whose LeafNode has a new credential for the committer"), as
//! a client does with a renewed certificate. The others accept it (even
//! when the old credential no longer validates: §5.3.2, members SHOULD
//! accept a commit whose new credential is valid) and see it in
//! `members()`; the group signs with the new signer after the merge, and
//! saving and loading keep it, also while the commit is pending. A new
//! signature key works the same way (the commit is signed by the old key,
//! the path's LeafNode and the new epoch's GroupInfo by the new one). A
//! credential of another identity is refused by the receivers
//! (`CommitRule::PathCredentialNotSuccessor`) and already by a committer
//! whose validator has the same policy. A member that renewed and lost its
//! group state resyncs by an external commit removing its old leaf (the
//! old credential is the new one's valid predecessor); a resync removing
//! another identity's leaf is refused (`ExternalCommitRemovesOther`).

use std::sync::{Arc, Mutex};

use hsmls::wire::LeafIndex;
use hsmls::{
    BasicCredentialValidator, Client, CommitOptions, CommitRule, Credential, CredentialError,
    CredentialValidator, Group, GroupError, JoinOptions, KeyPackageConfig, ProcessedMessage,
    SignaturePublicKey, Signer,
};
use hsmls_custody::{KeyCustody, SoftwareCustody, SoftwareSealer};

const NOW: u64 = 1_750_000_000;

/// Basic credentials `name#version`: a successor must name the same
/// `name` (unless `any_successor`); credentials marked refused (expired,
/// revoked) do not validate.
#[derive(Debug, Default)]
struct VersionedValidator {
    refused: Mutex<Vec<Vec<u8>>>,
    any_successor: bool,
}

impl VersionedValidator {
    fn refuse(&self, credential: &str) {
        self.refused
            .lock()
            .unwrap()
            .push(credential.as_bytes().to_vec());
    }
}

fn name_of(c: &Credential) -> Option<&[u8]> {
    match c {
        Credential::Basic(id) => id.split(|b| *b == b'#').next(),
        _ => None,
    }
}

impl CredentialValidator for VersionedValidator {
    fn validate(
        &self,
        credential: &Credential,
        key: &SignaturePublicKey,
    ) -> Result<(), CredentialError> {
        BasicCredentialValidator::default().validate(credential, key)?;
        match credential {
            Credential::Basic(id) if self.refused.lock().unwrap().contains(id) => {
                Err(CredentialError::Rejected(hsmls::ValidatorError::new(
                    std::io::Error::other("expired"),
                )))
            }
            _ => Ok(()),
        }
    }

    fn valid_successor(&self, old: &Credential, new: &Credential) -> bool {
        self.any_successor || (name_of(old).is_some() && name_of(old) == name_of(new))
    }
}

fn basic(s: &str) -> Credential {
    Credential::Basic(s.as_bytes().to_vec())
}

struct Party {
    client: Client,
    validator: Arc<VersionedValidator>,
}

fn party(credential: &str, any_successor: bool) -> Party {
    let validator = Arc::new(VersionedValidator {
        any_successor,
        ..Default::default()
    });
    let signer = Signer::generate(Arc::new(SoftwareCustody::new()), basic(credential)).unwrap();
    Party {
        client: Client::new(signer, validator.clone()),
        validator,
    }
}

/// Alice creates a group and adds the others (each with a validator of
/// its own).
fn group_of(parties: &[&Party]) -> Vec<Group> {
    let bundles: Vec<_> = parties[1..]
        .iter()
        .map(|p| {
            p.client
                .generate_key_package(&KeyPackageConfig::new(NOW - 10, 3600))
                .unwrap()
        })
        .collect();
    let mut alice = parties[0]
        .client
        .create_group(b"renewal".to_vec(), Vec::new(), NOW)
        .unwrap();
    let kps: Vec<_> = bundles.iter().map(|b| b.key_package.clone()).collect();
    let out = alice.add_members(&kps, NOW).unwrap();
    alice.merge_pending_commit().unwrap();
    let welcome = out.welcome.unwrap();
    let mut groups = vec![alice];
    for (p, b) in parties[1..].iter().zip(&bundles) {
        groups.push(
            p.client
                .join_from_welcome(b, &welcome, JoinOptions::default())
                .unwrap(),
        );
    }
    groups
}

fn merge(g: &mut Group, commit: &[u8]) {
    let ProcessedMessage::StagedCommit(staged) = g.process_incoming(commit, NOW).unwrap() else {
        panic!("expected a commit");
    };
    assert!(staged.has_path);
    g.merge_staged_commit(staged).unwrap();
}

fn credential_at(g: &Group, leaf: u32) -> Credential {
    g.member(LeafIndex(leaf)).unwrap().credential
}

fn renew(signer: Signer) -> CommitOptions {
    let mut o = CommitOptions::new();
    o.new_signer = Some(signer);
    o
}

#[test]
fn a_renewed_credential_reaches_the_group_and_is_kept() {
    let (a, b, c) = (
        party("alice#1", false),
        party("bob#1", false),
        party("carol#1", false),
    );
    let mut groups = group_of(&[&a, &b, &c]);
    let [alice, bob, carol] = &mut groups[..] else {
        unreachable!()
    };
    // Alice's first credential has expired for Bob and Carol: her renewal
    // must still be accepted (it brings a valid credential).
    b.validator.refuse("alice#1");
    c.validator.refuse("alice#1");

    // Same key, new credential.
    let key = a.client.signer().signature_key.clone();
    let renewed = Signer::new(a.client.custody().clone(), key.clone(), basic("alice#2"));
    let epoch = alice.epoch();
    let out = alice.commit(renew(renewed), NOW).unwrap();
    // Until merged, the group signs as before.
    assert_eq!(alice.signer().credential, basic("alice#1"));
    alice.merge_pending_commit().unwrap();
    assert_eq!(alice.signer().credential, basic("alice#2"));
    assert_eq!(alice.signer().signature_key, key);
    merge(bob, &out.commit);
    merge(carol, &out.commit);
    for g in [&*alice, &*bob, &*carol] {
        assert_eq!(g.epoch(), epoch + 1);
        assert_eq!(credential_at(g, 0), basic("alice#2"));
        assert_eq!(g.epoch_authenticator(), alice.epoch_authenticator());
    }

    // Saved and loaded, the group keeps the new signer: its next path
    // carries alice#2 and its messages verify for the others.
    let sealer = SoftwareSealer::generate();
    let saved = alice.save(&sealer).unwrap();
    let mut loaded = a.client.load_saved_group(&sealer, &saved).unwrap();
    assert_eq!(loaded.signer().credential, basic("alice#2"));
    assert_eq!(loaded.signer().signature_key, key);
    let out = loaded.self_update(NOW).unwrap();
    loaded.merge_pending_commit().unwrap();
    merge(bob, &out.commit);
    assert_eq!(credential_at(bob, 0), basic("alice#2"));
    let msg = loaded.encrypt_application(b"renewed").unwrap();
    match bob.process_incoming(&msg, NOW).unwrap() {
        ProcessedMessage::ApplicationMessage { sender, data, .. } => {
            assert_eq!((sender, data.as_slice()), (LeafIndex(0), &b"renewed"[..]));
        }
        other => panic!("{other:?}"),
    }
    merge(carol, &out.commit);
    *alice = loaded;

    // A new signature key too (key rotation): Bob's commit is saved while
    // pending and loaded again; its echo merges it and the group then
    // signs with the new key.
    let bob_custody = b.client.custody().clone();
    let rotated = Signer::generate(bob_custody.clone(), basic("bob#2")).unwrap();
    let old_key = b.client.signer().signature_key.clone();
    let out = bob.commit(renew(rotated.clone()), NOW).unwrap();
    let saved = bob.save(&sealer).unwrap();
    let mut bob_loaded = b.client.load_saved_group(&sealer, &saved).unwrap();
    assert!(bob_loaded.has_pending_commit());
    assert_eq!(bob_loaded.signer().signature_key, old_key);
    assert!(matches!(
        bob_loaded.process_incoming(&out.commit, NOW).unwrap(),
        ProcessedMessage::OwnCommit(_)
    ));
    assert_eq!(bob_loaded.signer().signature_key, rotated.signature_key);
    assert_eq!(bob_loaded.signer().credential, basic("bob#2"));
    // (From here on Bob is the loaded group; the first one, with the
    // same pending commit and keys, is not used again.)
    merge(alice, &out.commit);
    merge(carol, &out.commit);
    let m = alice.member(LeafIndex(1)).unwrap();
    assert_eq!(m.credential, basic("bob#2"));
    assert_eq!(m.signature_key, rotated.signature_public_key());
    assert_eq!(
        alice.epoch_authenticator(),
        bob_loaded.epoch_authenticator()
    );
    let msg = bob_loaded.encrypt_application(b"new key").unwrap();
    for g in [&mut *alice, &mut *carol] {
        match g.process_incoming(&msg, NOW).unwrap() {
            ProcessedMessage::ApplicationMessage { sender, data, .. } => {
                assert_eq!((sender, data.as_slice()), (LeafIndex(1), &b"new key"[..]));
            }
            other => panic!("{other:?}"),
        }
    }
    // The new epoch's GroupInfo is signed by the new key: a joiner
    // verifies it against Bob's new leaf.
    let dave = party("dave#1", false);
    let gi = out.group_info.expect("a GroupInfo");
    dave.client
        .join_by_external_commit(&gi, JoinOptions::default())
        .unwrap();
    let saved = bob_loaded.save(&sealer).unwrap();
    let reloaded = b.client.load_saved_group(&sealer, &saved).unwrap();
    assert_eq!(reloaded.signer().signature_key, rotated.signature_key);
    bob_custody.destroy(&old_key).unwrap();
}

#[test]
fn a_successor_of_another_identity_is_refused() {
    // Alice's own validator lets any successor through; Bob's does not.
    let (a, b, c) = (
        party("alice#1", true),
        party("bob#1", false),
        party("carol#1", false),
    );
    let mut groups = group_of(&[&a, &b, &c]);
    let [alice, bob, carol] = &mut groups[..] else {
        unreachable!()
    };
    let epoch = bob.epoch();
    let mallory = Signer::new(
        a.client.custody().clone(),
        a.client.signer().signature_key.clone(),
        basic("mallory#1"),
    );
    let out = alice.commit(renew(mallory), NOW).unwrap();
    let before = bob.members();
    let err = bob.process_incoming(&out.commit, NOW).unwrap_err();
    assert!(
        matches!(
            err,
            GroupError::InvalidCommit(CommitRule::PathCredentialNotSuccessor)
        ),
        "{err:?}"
    );
    assert_eq!(bob.epoch(), epoch);
    assert_eq!(bob.members(), before);
    alice.discard_pending_commit().unwrap();
    assert_eq!(alice.signer().credential, basic("alice#1"));

    // Carol's validator refuses it before anything is sent.
    let carol_key = c.client.signer().signature_key.clone();
    let other = Signer::new(
        c.client.custody().clone(),
        carol_key.clone(),
        basic("eve#1"),
    );
    let err = carol.commit(renew(other), NOW).unwrap_err();
    assert!(
        matches!(
            err,
            GroupError::InvalidCommit(CommitRule::PathCredentialNotSuccessor)
        ),
        "{err:?}"
    );
    // A credential her validator refuses.
    c.validator.refuse("carol#2");
    let refused = Signer::new(
        c.client.custody().clone(),
        carol_key.clone(),
        basic("carol#2"),
    );
    let err = carol.commit(renew(refused), NOW).unwrap_err();
    assert!(
        matches!(err, GroupError::Credential(CredentialError::Rejected(_))),
        "{err:?}"
    );
    // A key in another custody backend than the group's.
    let elsewhere = Signer::generate(Arc::new(SoftwareCustody::new()), basic("carol#3")).unwrap();
    let err = carol.commit(renew(elsewhere), NOW).unwrap_err();
    assert!(matches!(err, GroupError::NewSignerCustody), "{err:?}");
    // Nothing pending, nothing changed: a valid renewal still goes.
    assert!(!carol.has_pending_commit());
    assert_eq!(carol.epoch(), epoch);
    let renewed = Signer::new(c.client.custody().clone(), carol_key, basic("carol#4"));
    let out = carol.commit(renew(renewed), NOW).unwrap();
    carol.merge_pending_commit().unwrap();
    merge(bob, &out.commit);
    assert_eq!(credential_at(bob, 2), basic("carol#4"));
}

#[test]
fn a_member_that_renewed_resyncs_by_external_commit() {
    let (a, b, c) = (
        party("alice#1", false),
        party("bob#1", false),
        party("carol#1", false),
    );
    let mut groups = group_of(&[&a, &b, &c]);
    let [_alice, bob, carol] = &mut groups[..] else {
        unreachable!()
    };
    // Alice renewed (same key) and lost her group state before any commit
    // of hers carried the new credential: her resync removes her old leaf
    // (alice#1) with alice#2, a valid successor.
    let renewed = Client::new(
        Signer::new(
            a.client.custody().clone(),
            a.client.signer().signature_key.clone(),
            basic("alice#2"),
        ),
        a.validator.clone(),
    );
    let gi = bob.group_info().unwrap();
    let (alice, commit) = renewed
        .rejoin_by_external_commit(&gi, JoinOptions::default(), LeafIndex(0))
        .unwrap();
    merge(bob, &commit);
    merge(carol, &commit);
    assert_eq!(bob.epoch_authenticator(), alice.epoch_authenticator());
    let creds: Vec<Credential> = bob.members().into_iter().map(|m| m.credential).collect();
    assert_eq!(
        creds,
        vec![basic("alice#2"), basic("bob#1"), basic("carol#1")]
    );

    // Mallory's own validator would let her replace Carol's leaf; Bob's
    // refuses the resync, and nothing changes.
    let mallory = party("mallory#1", true);
    let gi = bob.group_info().unwrap();
    let (_, commit) = mallory
        .client
        .rejoin_by_external_commit(&gi, JoinOptions::default(), LeafIndex(2))
        .unwrap();
    let epoch = bob.epoch();
    let err = bob.process_incoming(&commit, NOW).unwrap_err();
    assert!(
        matches!(
            err,
            GroupError::InvalidCommit(CommitRule::ExternalCommitRemovesOther)
        ),
        "{err:?}"
    );
    assert_eq!(bob.epoch(), epoch);
    // And a joiner with Bob's policy refuses to build it.
    let eve = party("eve#1", false);
    let err = eve
        .client
        .rejoin_by_external_commit(&gi, JoinOptions::default(), LeafIndex(2))
        .unwrap_err();
    assert!(
        matches!(
            err,
            GroupError::InvalidCommit(CommitRule::ExternalCommitRemovesOther)
        ),
        "{err:?}"
    );
}
