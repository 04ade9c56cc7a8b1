//! Reinitialization (RFC 9420 §11.2) and subgroup branching (§11.3) with
//! three members: the new groups are linked by a resumption PSK of usage
//! `reinit` / `branch`, every member agrees on the new group's epoch
//! authenticator, the old group refuses use after the ReInit commit, and
//! mismatching Welcomes are refused.

use std::sync::Arc;

use hsmls::wire::{
    CipherSuite, Credential, Extension, ExtensionType, ProtocolVersion, ReInit, ResumptionPskUsage,
};
use hsmls::{
    BasicCredentialValidator, Client, CredentialValidator, Group, GroupError, JoinOptions,
    KeyPackageBundle, KeyPackageConfig, ProcessedMessage, ProposalRule, ReInitRule, Signer,
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

/// The client of `signer`, with the default group configuration.
fn client(signer: &Signer) -> Client {
    Client::new(signer.clone(), validator())
}

/// `group` branches a subgroup `group_id` (RFC 9420 §11.3) with `signer`
/// and the member of `kp`.
fn branch(
    group: &Group,
    signer: &Signer,
    group_id: &[u8],
    kp: &KeyPackageBundle,
) -> Result<(Group, hsmls::CommitOutput), GroupError> {
    client(signer).branch(
        group,
        group_id.to_vec(),
        vec![],
        std::slice::from_ref(&kp.key_package),
        NOW,
    )
}

fn key_package(s: &Signer) -> KeyPackageBundle {
    client(s)
        .generate_key_package(&KeyPackageConfig::new(NOW - 10, 3600))
        .unwrap()
}

/// A three-member group (alice, bob, carol) built by one add commit.
fn three() -> (Vec<Group>, Vec<Signer>) {
    let signers = vec![signer("alice"), signer("bob"), signer("carol")];
    let mut a = client(&signers[0])
        .create_group(b"old group".to_vec(), vec![], NOW)
        .unwrap();
    let kb = key_package(&signers[1]);
    let kc = key_package(&signers[2]);
    let out = a
        .add_members(&[kb.key_package.clone(), kc.key_package.clone()], NOW)
        .unwrap();
    a.merge_pending_commit().unwrap();
    let welcome = out.welcome.unwrap();
    let b = client(&signers[1])
        .join_from_welcome(&kb, &welcome, JoinOptions::default())
        .unwrap();
    let c = client(&signers[2])
        .join_from_welcome(&kc, &welcome, JoinOptions::default())
        .unwrap();
    (vec![a, b, c], signers)
}

fn deliver_commit(groups: &mut [Group], committer: usize, commit: &[u8]) {
    for (i, g) in groups.iter_mut().enumerate() {
        if i == committer {
            g.merge_pending_commit().unwrap();
            continue;
        }
        match g.process_incoming(commit, NOW).unwrap() {
            ProcessedMessage::StagedCommit(s) => g.merge_staged_commit(s).unwrap(),
            other => panic!("expected a commit, got {other:?}"),
        }
    }
}

fn reinit_params() -> ReInit {
    ReInit {
        group_id: b"new group".to_vec(),
        version: ProtocolVersion::MLS10,
        cipher_suite: CipherSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256,
        extensions: vec![Extension {
            extension_type: ExtensionType(0xff01),
            extension_data: b"reinit ext".to_vec(),
        }],
    }
}

/// A KeyPackage that advertises support for the private extension 0xff01
/// (needed for the new group's GroupContext extension).
fn key_package_with_ext(s: &Signer) -> KeyPackageBundle {
    let mut config = KeyPackageConfig::new(NOW - 10, 3600);
    let mut caps = hsmls::internal::key_package::default_capabilities(
        config.cipher_suite,
        s.credential.credential_type(),
    );
    caps.extensions.push(ExtensionType(0xff01));
    config.capabilities = Some(caps);
    client(s).generate_key_package(&config).unwrap()
}

#[test]
fn reinit_three_members() {
    let (mut groups, signers) = three();
    // Bob proposes the ReInit; carol commits it (by reference).
    let proposal = groups[1].propose_reinit(reinit_params()).unwrap();
    for i in [0, 2] {
        match groups[i].process_incoming(&proposal, NOW).unwrap() {
            ProcessedMessage::Proposal { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    let out = groups[2].commit(hsmls::CommitOptions::new(), NOW).unwrap();
    // Receivers see the ReInit in the staged commit.
    let commit = out.commit;
    for (i, g) in groups.iter_mut().enumerate() {
        if i == 2 {
            g.merge_pending_commit().unwrap();
            continue;
        }
        match g.process_incoming(&commit, NOW).unwrap() {
            ProcessedMessage::StagedCommit(s) => {
                assert_eq!(s.reinit.as_ref(), Some(&reinit_params()));
                g.merge_staged_commit(s).unwrap();
            }
            other => panic!("{other:?}"),
        }
    }
    let old_epoch = groups[0].epoch();
    for g in &groups {
        assert_eq!(g.epoch(), old_epoch);
        assert_eq!(g.committed_reinit(), Some(&reinit_params()));
    }
    // The old group refuses further use.
    assert!(matches!(
        groups[0].encrypt_application(b"late"),
        Err(GroupError::ReInitialized)
    ));
    assert!(matches!(
        groups[1].self_update(NOW),
        Err(GroupError::ReInitialized)
    ));
    assert!(matches!(
        groups[2].propose_update(),
        Err(GroupError::ReInitialized)
    ));

    // Alice (not the ReInit committer) creates the new group.
    let kb = key_package_with_ext(&signers[1]);
    let kc = key_package_with_ext(&signers[2]);
    // Omitting a member is refused.
    assert!(matches!(
        client(&signers[0]).reinit_group(&groups[0], std::slice::from_ref(&kb.key_package), NOW),
        Err(GroupError::ReInit(ReInitRule::MemberMissing))
    ));
    let (new_a, out) = client(&signers[0])
        .reinit_group(
            &groups[0],
            &[kb.key_package.clone(), kc.key_package.clone()],
            NOW,
        )
        .unwrap();
    let welcome = out.welcome.unwrap();
    assert_eq!(new_a.epoch(), 1);
    assert_eq!(new_a.group_id(), b"new group");
    assert_eq!(new_a.group_context().extensions, reinit_params().extensions);

    // A plain join cannot use the reinit PSK (it is not in the store).
    let plain = client(&signers[1]).join_from_welcome(&kb, &welcome, JoinOptions::default());
    assert!(matches!(plain, Err(GroupError::UnknownPsk)), "{plain:?}");

    let new_b = client(&signers[1])
        .join_reinit(&groups[1], &kb, &welcome, JoinOptions::default())
        .unwrap();
    let new_c = client(&signers[2])
        .join_reinit(&groups[2], &kc, &welcome, JoinOptions::default())
        .unwrap();
    for g in [&new_b, &new_c] {
        assert_eq!(g.epoch(), 1);
        assert_eq!(g.group_id(), b"new group");
        assert_eq!(g.epoch_authenticator(), new_a.epoch_authenticator());
        let psk = g.linked_psk().unwrap();
        assert_eq!(psk.usage, ResumptionPskUsage::Reinit);
        assert_eq!(psk.psk_group_id, b"old group");
        assert_eq!(psk.psk_epoch, old_epoch);
    }
    assert_ne!(new_a.epoch_authenticator(), groups[0].epoch_authenticator());
    assert_eq!(
        new_a.export_secret(b"x", b"", 32).unwrap().as_bytes(),
        new_c.export_secret(b"x", b"", 32).unwrap().as_bytes()
    );
    // The new group works.
    let mut new = vec![new_a, new_b, new_c];
    let out = new[1].self_update(NOW).unwrap();
    deliver_commit(&mut new, 1, &out.commit);
    assert_eq!(new[0].epoch_authenticator(), new[2].epoch_authenticator());
    let m = new[2].encrypt_application(b"hello new group").unwrap();
    match new[0].process_incoming(&m, NOW).unwrap() {
        ProcessedMessage::ApplicationMessage { data, .. } => assert_eq!(data, b"hello new group"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn reinit_requires_committed_reinit_and_matching_welcome() {
    let (mut groups, signers) = three();
    // Without a committed ReInit there is nothing to reinitialize.
    assert!(matches!(
        client(&signers[0]).reinit_group(&groups[0], &[], NOW),
        Err(GroupError::ReInit(ReInitRule::NoReInitCommitted))
    ));
    // A branch Welcome is not a reinit Welcome.
    let kb = key_package(&signers[1]);
    let (_branch, out) = branch(&groups[0], &signers[0], b"branch", &kb).unwrap();
    let out2 = groups[0].commit_reinit(reinit_params(), NOW).unwrap();
    deliver_commit(&mut groups, 0, &out2.commit);
    let r = client(&signers[1]).join_reinit(
        &groups[1],
        &kb,
        &out.welcome.unwrap(),
        JoinOptions::default(),
    );
    // The Welcome's PSK is a branch PSK: the reinit join does not offer it.
    assert!(matches!(r, Err(GroupError::UnknownPsk)), "{r:?}");
}

#[test]
fn reinit_proposal_must_stand_alone_and_not_downgrade() {
    let (mut groups, signers) = three();
    let mut options = hsmls::CommitOptions::new();
    options.reinit = Some(reinit_params());
    options.add_key_packages = vec![key_package(&signer("dave")).key_package];
    assert!(matches!(
        groups[0].commit(options, NOW),
        Err(GroupError::InvalidProposal(ProposalRule::ReInitNotAlone))
    ));
    let mut low = reinit_params();
    low.version = ProtocolVersion(0);
    assert!(matches!(
        groups[0].propose_reinit(low),
        Err(GroupError::InvalidProposal(
            ProposalRule::ReInitLowersVersion
        ))
    ));
    let _ = signers;
}

#[test]
fn branch_two_of_three() {
    let (mut groups, signers) = three();
    // One more epoch in the old group first.
    let out = groups[1].self_update(NOW).unwrap();
    deliver_commit(&mut groups, 1, &out.commit);
    let epoch = groups[0].epoch();

    // Carol branches a subgroup with Alice (Bob left out).
    let ka = key_package(&signers[0]);
    let (branch_c, out) = branch(&groups[2], &signers[2], b"subgroup", &ka).unwrap();
    let welcome = out.welcome.unwrap();
    let branch_a = client(&signers[0])
        .join_branch(&groups[0], &ka, &welcome, JoinOptions::default())
        .unwrap();
    assert_eq!(branch_a.epoch(), 1);
    assert_eq!(branch_a.members().len(), 2);
    assert_eq!(
        branch_a.epoch_authenticator(),
        branch_c.epoch_authenticator()
    );
    let psk = branch_a.linked_psk().unwrap();
    assert_eq!(psk.usage, ResumptionPskUsage::Branch);
    assert_eq!(psk.psk_epoch, epoch);
    // The old group goes on.
    let out = groups[1].self_update(NOW).unwrap();
    deliver_commit(&mut groups, 1, &out.commit);
    assert_eq!(
        groups[0].epoch_authenticator(),
        groups[2].epoch_authenticator()
    );

    // A branch holding an outsider is refused by the creator and by the
    // joiner.
    let dave = signer("dave");
    let kd = key_package(&dave);
    assert!(matches!(
        branch(&groups[2], &signers[2], b"sub2", &kd),
        Err(GroupError::ReInit(ReInitRule::BranchMemberNotInGroup))
    ));
    // Dave's own "old group" (a different group) cannot verify it either:
    // the PSK comes from a group he is not in.
    let other = client(&dave)
        .create_group(b"dave's".to_vec(), vec![], NOW)
        .unwrap();
    let ka2 = key_package(&signers[0]);
    let (_b2, out) = branch(&groups[2], &signers[2], b"sub3", &ka2).unwrap();
    let r = client(&signers[0]).join_branch(
        &other,
        &ka2,
        &out.welcome.unwrap(),
        JoinOptions::default(),
    );
    assert!(matches!(r, Err(GroupError::UnknownPsk)), "{r:?}");
}
