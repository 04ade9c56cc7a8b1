//! SelfRemove (draft-ietf-mls-extensions) with three members: a member
//! proposes its own removal, another commits it, the remaining members
//! agree and the leaver sees itself removed.

use std::sync::Arc;

use hsmls::wire::{
    Credential, Encode, Proposal, ProposalType, SELF_REMOVE_PROPOSAL_TYPE, SelfRemove,
};
use hsmls::{
    BasicCredentialValidator, Client, CommitOptions, CredentialValidator, Group, GroupError,
    JoinOptions, KeyPackageConfig, ProcessedMessage, ProposalRule, Signer,
};
use hsmls_custody::SoftwareCustody;

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

fn three() -> Vec<Group> {
    let mut a = Client::new(signer("alice"), validator())
        .create_group(b"g".to_vec(), vec![], NOW)
        .unwrap();
    let (sb, sc) = (signer("bob"), signer("carol"));
    let kb = Client::new(sb.clone(), validator())
        .generate_key_package(&KeyPackageConfig::new(NOW - 10, 3600))
        .unwrap();
    let kc = Client::new(sc.clone(), validator())
        .generate_key_package(&KeyPackageConfig::new(NOW - 10, 3600))
        .unwrap();
    let out = a
        .add_members(&[kb.key_package.clone(), kc.key_package.clone()], NOW)
        .unwrap();
    a.merge_pending_commit().unwrap();
    let w = out.welcome.unwrap();
    let b = Client::new(sb, validator())
        .join_from_welcome(&kb, &w, JoinOptions::default())
        .unwrap();
    let c = Client::new(sc, validator())
        .join_from_welcome(&kc, &w, JoinOptions::default())
        .unwrap();
    vec![a, b, c]
}

#[test]
fn self_remove_wire_form_has_no_body() {
    let bytes = Proposal::SelfRemove(SelfRemove {}).encode().unwrap();
    assert_eq!(bytes, SELF_REMOVE_PROPOSAL_TYPE.to_be_bytes().to_vec());
    assert_eq!(SELF_REMOVE_PROPOSAL_TYPE, 0x000A);
    assert_eq!(
        Proposal::SelfRemove(SelfRemove {}).proposal_type(),
        ProposalType::SELF_REMOVE
    );
}

#[test]
fn member_self_removes_and_another_commits() {
    let mut g = three();
    let bob = g[1].own_leaf_index();
    let proposal = g[1].propose_self_remove().unwrap();
    for i in [0, 2] {
        match g[i].process_incoming(&proposal, NOW).unwrap() {
            ProcessedMessage::Proposal {
                proposal, sender, ..
            } => {
                assert_eq!(proposal, Proposal::SelfRemove(SelfRemove {}));
                assert_eq!(sender, hsmls::wire::Sender::Member(bob));
            }
            other => panic!("{other:?}"),
        }
    }
    // Bob cannot commit his own SelfRemove: his commit leaves it out.
    let own = g[1].commit(CommitOptions::new(), NOW).unwrap();
    assert!(own.removes.is_empty());
    g[1].discard_pending_commit().unwrap();

    // Carol commits it.
    let out = g[2].commit(CommitOptions::new(), NOW).unwrap();
    assert_eq!(out.removes.len(), 1);
    assert_eq!(out.removes[0].index, bob);
    g[2].merge_pending_commit().unwrap();
    for i in [0, 1] {
        match g[i].process_incoming(&out.commit, NOW).unwrap() {
            ProcessedMessage::StagedCommit(s) => {
                assert_eq!(s.removes.len(), 1);
                assert_eq!(s.removes[0].index, bob);
                assert!(s.has_path);
                assert_eq!(s.self_removed, i == 1);
                g[i].merge_staged_commit(s).unwrap();
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(!g[1].is_active());
    assert!(matches!(
        g[1].encrypt_application(b"x"),
        Err(GroupError::Removed)
    ));
    assert_eq!(g[0].epoch_authenticator(), g[2].epoch_authenticator());
    assert_eq!(g[0].members().len(), 2);
    assert!(g[0].member(bob).is_none());
    let m = g[0].encrypt_application(b"bye bob").unwrap();
    match g[2].process_incoming(&m, NOW).unwrap() {
        ProcessedMessage::ApplicationMessage { data, .. } => assert_eq!(data, b"bye bob"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn self_remove_conflicting_with_remove_of_same_leaf_is_refused() {
    let mut g = three();
    let bob = g[1].own_leaf_index();
    let proposal = g[1].propose_self_remove().unwrap();
    assert!(matches!(
        g[0].process_incoming(&proposal, NOW).unwrap(),
        ProcessedMessage::Proposal { .. }
    ));
    let mut options = CommitOptions::new();
    options.remove_leaves = vec![bob];
    let before = g[0].state_snapshot();
    assert!(matches!(
        g[0].commit(options, NOW),
        Err(GroupError::InvalidProposal(
            ProposalRule::SeveralChangesToOneLeaf
        ))
    ));
    assert!(g[0].state_snapshot() == before);
}
