//! A member whose credential stops validating (revoked by the application's
//! Authentication Service) is refused for every handshake it sends, not
//! only for one that brings a new leaf (RFC 9750 §"Handling Authentication
//! Failures"): its proposals and path-less commits fail with
//! `GroupError::SenderCredential`, its commits with a path fail on the
//! path's credential, and the validator's own typed reason reaches the
//! application through `ValidatorError::downcast_ref`. Other members go on.

use std::sync::{Arc, Mutex};

use hsmls::wire::LeafIndex;
use hsmls::{
    BasicCredentialValidator, Client, CommitOptions, Credential, CredentialError,
    CredentialValidator, Group, GroupError, JoinOptions, KeyPackageConfig, ProcessedMessage,
    SignaturePublicKey, Signer, ValidatorError,
};
use hsmls_custody::SoftwareCustody;

const NOW: u64 = 1_750_000_000;

/// The validator's own reason, as an application's AS client would have.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("the credential of {0} was revoked")]
struct Revoked(String);

/// Basic credentials, minus the identities revoked so far.
#[derive(Debug, Default)]
struct RevocableValidator {
    revoked: Mutex<Vec<Vec<u8>>>,
}

impl RevocableValidator {
    fn revoke(&self, identity: &str) {
        self.revoked
            .lock()
            .unwrap()
            .push(identity.as_bytes().to_vec());
    }
}

impl CredentialValidator for RevocableValidator {
    fn validate(
        &self,
        credential: &Credential,
        key: &SignaturePublicKey,
    ) -> Result<(), CredentialError> {
        BasicCredentialValidator::default().validate(credential, key)?;
        match credential {
            Credential::Basic(id) if self.revoked.lock().unwrap().contains(id) => {
                Err(CredentialError::Rejected(ValidatorError::new(Revoked(
                    String::from_utf8_lossy(id).into_owned(),
                ))))
            }
            _ => Ok(()),
        }
    }
}

fn client(name: &str, validator: Arc<RevocableValidator>) -> Client {
    let signer = Signer::generate(
        Arc::new(SoftwareCustody::new()),
        Credential::Basic(name.as_bytes().to_vec()),
    )
    .unwrap();
    Client::new(signer, validator)
}

fn merge(g: &mut Group, commit: &[u8]) {
    let ProcessedMessage::StagedCommit(staged) = g.process_incoming(commit, NOW).unwrap() else {
        panic!("expected a commit");
    };
    g.merge_staged_commit(staged).unwrap();
}

/// The error is the validator's `Revoked` reason for `who`.
fn revoked(e: &CredentialError, who: &str) -> bool {
    matches!(e, CredentialError::Rejected(reason)
        if reason.downcast_ref::<Revoked>() == Some(&Revoked(who.to_string())))
}

#[test]
fn a_revoked_member_is_refused_for_every_handshake() {
    let validators: Vec<Arc<RevocableValidator>> = (0..3)
        .map(|_| Arc::new(RevocableValidator::default()))
        .collect();
    let clients: Vec<Client> = ["alice", "bob", "carol"]
        .iter()
        .zip(&validators)
        .map(|(name, v)| client(name, v.clone()))
        .collect();
    let bundles: Vec<_> = clients[1..]
        .iter()
        .map(|c| {
            c.generate_key_package(&KeyPackageConfig::new(NOW - 10, 3600))
                .unwrap()
        })
        .collect();
    let mut alice = clients[0]
        .create_group(b"revocable".to_vec(), Vec::new(), NOW)
        .unwrap();
    let kps: Vec<_> = bundles.iter().map(|b| b.key_package.clone()).collect();
    let out = alice.add_members(&kps, NOW).unwrap();
    alice.merge_pending_commit().unwrap();
    let welcome = out.welcome.unwrap();
    let mut bob = clients[1]
        .join_from_welcome(&bundles[0], &welcome, JoinOptions::default())
        .unwrap();
    let mut carol = clients[2]
        .join_from_welcome(&bundles[1], &welcome, JoinOptions::default())
        .unwrap();
    let carol_leaf = carol.own_leaf_index();
    assert_eq!(carol_leaf, LeafIndex(2));

    // Before the revocation, Carol's path-less proposal is accepted.
    let proposal = carol.propose_remove(LeafIndex(1)).unwrap();
    assert!(matches!(
        alice.process_incoming(&proposal.message, NOW).unwrap(),
        ProcessedMessage::Proposal { .. }
    ));
    // (Forget it: a fresh epoch without it for the rest of the test.)
    let mut options = CommitOptions::new();
    options.include_pending = false;
    options.force_path = true;
    let out = alice.commit(options, NOW).unwrap();
    alice.merge_pending_commit().unwrap();
    merge(&mut bob, &out.commit);
    merge(&mut carol, &out.commit);
    let epoch = alice.epoch();

    // Alice's and Bob's Authentication Service revokes Carol.
    for v in &validators[..2] {
        v.revoke("carol");
    }

    // A proposal: her current leaf's credential is checked.
    let proposal = carol.propose_remove(LeafIndex(0)).unwrap();
    for g in [&mut alice, &mut bob] {
        let err = g.process_incoming(&proposal.message, NOW).unwrap_err();
        assert!(
            matches!(&err, GroupError::SenderCredential { sender, error }
                if *sender == carol_leaf && revoked(error, "carol")),
            "{err:?}"
        );
        assert!(g.pending_proposals().is_empty());
    }

    // A commit without a path (an Add): the same.
    let dave_validator = Arc::new(RevocableValidator::default());
    let dave = client("dave", dave_validator);
    let dave_bundle = dave
        .generate_key_package(&KeyPackageConfig::new(NOW - 10, 3600))
        .unwrap();
    // (Without her own refused proposal, which would require a path.)
    let mut options = CommitOptions::new();
    options.include_pending = false;
    options.add_key_packages = vec![dave_bundle.key_package.clone()];
    let out = carol.commit(options, NOW).unwrap();
    for g in [&mut alice, &mut bob] {
        let err = g.process_incoming(&out.commit, NOW).unwrap_err();
        assert!(
            matches!(&err, GroupError::SenderCredential { sender, error }
                if *sender == carol_leaf && revoked(error, "carol")),
            "{err:?}"
        );
        assert_eq!(g.epoch(), epoch);
    }
    carol.discard_pending_commit().unwrap();

    // A commit with a path: the path's (same, revoked) credential is
    // refused.
    let mut options = CommitOptions::new();
    options.include_pending = false;
    options.force_path = true;
    let out = carol.commit(options, NOW).unwrap();
    for g in [&mut alice, &mut bob] {
        let err = g.process_incoming(&out.commit, NOW).unwrap_err();
        assert!(
            matches!(&err, GroupError::Credential(e) if revoked(e, "carol")),
            "{err:?}"
        );
        assert_eq!(g.epoch(), epoch);
    }
    carol.discard_pending_commit().unwrap();

    // Her application messages are still read (not checked per message;
    // the application removes her), and Bob's path-less commit adding
    // Dave is accepted: only the revoked sender is refused.
    let app = carol.encrypt_application(b"still here").unwrap();
    assert!(matches!(
        alice.process_incoming(&app, NOW).unwrap(),
        ProcessedMessage::ApplicationMessage { sender, .. } if sender == carol_leaf
    ));
    let out = bob
        .add_members(std::slice::from_ref(&dave_bundle.key_package), NOW)
        .unwrap();
    bob.merge_pending_commit().unwrap();
    merge(&mut alice, &out.commit);
    assert_eq!(alice.epoch(), epoch + 1);
    assert_eq!(alice.epoch_authenticator(), bob.epoch_authenticator());

    // Removing her needs nothing from her credential.
    let out = alice.remove_members(&[carol_leaf], NOW).unwrap();
    alice.merge_pending_commit().unwrap();
    merge(&mut bob, &out.commit);
    assert_eq!(alice.members().len(), 3);
    assert_eq!(alice.epoch_authenticator(), bob.epoch_authenticator());
}
