//! PreSharedKey proposals in external commits (RFC 9420 §12.4.3.2): the
//! joiner injects PSKs by value beside its ExternalInit; their psk_secret
//! enters the key schedule (§8.4); a member that lacks a PSK refuses the
//! commit with `UnknownPsk` and keeps its state.

use std::sync::Arc;

use hsmls::PskStore;
use hsmls::internal::codec::{FramedContentBody, MlsMessage, MlsMessageBody, ProposalOrRef};
use hsmls::wire::LeafIndex;
use hsmls::wire::{Credential, Decode, Proposal, Psk, ResumptionPsk, ResumptionPskUsage};
use hsmls::{
    BasicCredentialValidator, Client, CredentialValidator, Group, GroupError, JoinOptions,
    KeyPackageConfig, ProcessedMessage, ProposalRule, Signer,
};
use hsmls_crypto::Secret;
use hsmls_custody::SoftwareCustody;

const NOW: u64 = 1_750_000_000;
const PSK_ID: &[u8] = b"shared psk";
const PSK: &[u8] = b"a pre-shared key, 32 bytes long!";

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

/// Alice creates a group and adds Bob.
fn alice_and_bob() -> (Group, Group) {
    let mut alice = Client::new(signer("alice"), validator())
        .create_group(hsmls::random_group_id(), Vec::new(), NOW)
        .unwrap();
    let bob_signer = signer("bob");
    let kp = Client::new(bob_signer.clone(), validator())
        .generate_key_package(&KeyPackageConfig::new(NOW - 10, 3600))
        .unwrap();
    let out = alice
        .add_members(std::slice::from_ref(&kp.key_package), NOW)
        .unwrap();
    alice.merge_pending_commit().unwrap();
    let bob = Client::new(bob_signer, validator())
        .join_from_welcome(&kp, &out.welcome.unwrap(), JoinOptions::default())
        .unwrap();
    (alice, bob)
}

fn store_with(id: &[u8], value: &[u8]) -> PskStore {
    let mut store = PskStore::default();
    store.insert_external(id.to_vec(), Secret::from_slice(value));
    store
}

/// The PSKs named by PreSharedKey proposals of a commit message.
fn committed_psks(commit: &[u8]) -> Vec<Psk> {
    let MlsMessage {
        body: MlsMessageBody::PublicMessage(m),
    } = MlsMessage::decode(commit).unwrap()
    else {
        panic!("an external commit is a PublicMessage");
    };
    let FramedContentBody::Commit(c) = m.content.body else {
        panic!("not a commit");
    };
    c.proposals
        .iter()
        .filter_map(|p| match p {
            ProposalOrRef::Proposal(Proposal::PreSharedKey(psk)) => Some(psk.psk.psk.clone()),
            _ => None,
        })
        .collect()
}

fn merge(g: &mut Group, commit: &[u8]) {
    match g.process_incoming(commit, NOW).unwrap() {
        ProcessedMessage::StagedCommit(s) => g.merge_staged_commit(s).unwrap(),
        other => panic!("expected a commit, got {other:?}"),
    }
}

#[test]
fn external_join_with_an_external_psk() {
    let (mut alice, mut bob) = alice_and_bob();
    alice
        .psk_store_mut()
        .insert_external(PSK_ID.to_vec(), Secret::from_slice(PSK));
    let gi = alice.group_info().unwrap();

    let (mut carol, commit) = Client::new(signer("carol"), validator())
        .join_by_external_commit(&gi, {
            let mut join = JoinOptions::default();
            join.psks = store_with(PSK_ID, PSK);
            join.external_commit_psks = vec![Psk::External(PSK_ID.to_vec())];
            join
        })
        .unwrap();
    assert_eq!(
        committed_psks(&commit),
        vec![Psk::External(PSK_ID.to_vec())]
    );

    // Bob lacks the PSK: typed error, state unchanged.
    let before = bob.state_snapshot();
    assert!(matches!(
        bob.process_incoming(&commit, NOW),
        Err(GroupError::UnknownPsk)
    ));
    assert!(
        bob.state_snapshot() == before,
        "a refused commit changed Bob's state"
    );

    // A member holding another value under the same id derives another
    // psk_secret: the confirmation tag does not verify.
    let mut wrong = bob.psk_store_mut().clone();
    wrong.insert_external(PSK_ID.to_vec(), Secret::from_slice(b"another value"));
    *bob.psk_store_mut() = wrong;
    let before = bob.state_snapshot();
    assert!(matches!(
        bob.process_incoming(&commit, NOW),
        Err(GroupError::InvalidConfirmationTag)
    ));
    assert!(bob.state_snapshot() == before);

    // With the PSK, everyone agrees.
    bob.psk_store_mut()
        .insert_external(PSK_ID.to_vec(), Secret::from_slice(PSK));
    merge(&mut alice, &commit);
    merge(&mut bob, &commit);
    assert_eq!(alice.epoch_authenticator(), carol.epoch_authenticator());
    assert_eq!(bob.epoch_authenticator(), carol.epoch_authenticator());
    assert_eq!(
        alice.export_secret(b"label", b"context", 32).unwrap(),
        carol.export_secret(b"label", b"context", 32).unwrap()
    );
    let m = carol.encrypt_application(b"hello").unwrap();
    match bob.process_incoming(&m, NOW).unwrap() {
        ProcessedMessage::ApplicationMessage { data, .. } => assert_eq!(data, b"hello"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn the_joiner_needs_the_psk_value() {
    let (alice, _bob) = alice_and_bob();
    let gi = alice.group_info().unwrap();
    let r = Client::new(signer("carol"), validator()).join_by_external_commit(&gi, {
        let mut join = JoinOptions::default();
        join.external_commit_psks = vec![Psk::External(PSK_ID.to_vec())];
        join
    });
    assert!(matches!(r, Err(GroupError::UnknownPsk)));
    // The same PSK twice is refused.
    let r = Client::new(signer("carol"), validator()).join_by_external_commit(&gi, {
        let mut join = JoinOptions::default();
        join.psks = store_with(PSK_ID, PSK);
        join.external_commit_psks = vec![
            Psk::External(PSK_ID.to_vec()),
            Psk::External(PSK_ID.to_vec()),
        ];
        join
    });
    assert!(matches!(
        r,
        Err(GroupError::InvalidProposal(ProposalRule::DuplicatePsk))
    ));
}

/// Bob keeps his PSK store, loses the rest of his state, and re-joins by an
/// external commit that removes his old leaf and injects the resumption
/// PSK of the current epoch and an external PSK.
#[test]
fn rejoin_with_a_resumption_psk_and_an_external_psk() {
    let (mut alice, mut bob) = alice_and_bob();
    alice
        .psk_store_mut()
        .insert_external(PSK_ID.to_vec(), Secret::from_slice(PSK));
    bob.psk_store_mut()
        .insert_external(PSK_ID.to_vec(), Secret::from_slice(PSK));
    let kept = bob.psk_store_mut().clone();
    let old_leaf: LeafIndex = bob.own_leaf_index();
    let bob_signer = bob.signer().clone();
    let resumption = Psk::Resumption(ResumptionPsk {
        usage: ResumptionPskUsage::Application,
        psk_group_id: alice.group_id().to_vec(),
        psk_epoch: alice.epoch(),
    });
    drop(bob);

    let gi = alice.group_info().unwrap();
    let (bob, commit) = Client::new(bob_signer, validator())
        .rejoin_by_external_commit(
            &gi,
            {
                let mut join = JoinOptions::default();
                join.psks = kept;
                join.external_commit_psks =
                    vec![resumption.clone(), Psk::External(PSK_ID.to_vec())];
                join
            },
            old_leaf,
        )
        .unwrap();
    assert_eq!(
        committed_psks(&commit),
        vec![resumption, Psk::External(PSK_ID.to_vec())]
    );
    merge(&mut alice, &commit);
    assert_eq!(alice.epoch_authenticator(), bob.epoch_authenticator());
    assert_eq!(alice.members().len(), 2);
}
