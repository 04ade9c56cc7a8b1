//! The "done when": three clients enrol against an AS whose root
//! and issuing keys are in the SoftHSM token, over real TLS on loopback,
//! each with its signature key generated in the token; they form an MLS
//! group with x509 credentials checked by `X509CredentialValidator`; the
//! operator revokes one; the two others fetch the new CRL and refuse the
//! revoked member's next commit of any kind (with a path, without one, a
//! proposal). The same scenario runs on SQLite and on
//! PostgreSQL.

mod common;

use std::sync::Arc;

use hsmls::CredentialError;
use hsmls::{
    Client, CredentialValidator, Group, GroupError, JoinOptions, KeyPackageBundle,
    KeyPackageConfig, ProcessedMessage,
};
use hsmls_as::Store;
use hsmls_credentials::{ValidationError, X509CredentialValidator};

use common::{TestAs, enrol, now};

async fn three_members_refuse_a_revoked_one<S: Store>(store: S) {
    let as_ = TestAs::start(store).await;
    let mut clients = Vec::new();
    for name in ["alice", "bob", "carol"] {
        clients.push(enrol(&as_, name).await);
    }
    // Every member has its own validator: the AS root as the only trust
    // anchor and the CRL from the distribution point.
    let mut validators: Vec<Arc<X509CredentialValidator>> = Vec::new();
    for _ in &clients {
        validators.push(Arc::new(as_.validator().await));
    }
    let t = now();
    // Each member's MLS client: its signer and its X.509 validator.
    let mls: Vec<Client> = clients
        .iter()
        .zip(&validators)
        .map(|(c, v)| Client::new(c.signer.clone(), v.clone() as Arc<dyn CredentialValidator>))
        .collect();
    let mut alice = mls[0]
        .create_group(b"x509 group".to_vec(), Vec::new(), t)
        .unwrap();
    let bundles: Vec<KeyPackageBundle> = mls[1..]
        .iter()
        .map(|c| c.generate_key_package(&KeyPackageConfig::new(t - 10, 3600)))
        .collect::<Result<_, _>>()
        .unwrap();
    // Alice validates the published KeyPackages with her X.509 validator.
    let kps = bundles
        .iter()
        .map(|b| mls[0].validate_key_package(&b.to_bytes().unwrap(), t))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let out = alice.add_members(&kps, t).unwrap();
    alice.merge_pending_commit().unwrap();
    let welcome = out.welcome.expect("a Welcome");
    let mut joined: Vec<Group> = mls[1..]
        .iter()
        .zip(&bundles)
        .map(|(c, bundle)| {
            c.join_from_welcome(bundle, &welcome, JoinOptions::default())
                .unwrap()
        })
        .collect();
    let mut carol = joined.pop().unwrap();
    let mut bob = joined.pop().unwrap();
    assert_eq!(alice.members().len(), 3);
    assert_eq!(bob.epoch_authenticator(), alice.epoch_authenticator());
    assert_eq!(carol.epoch_authenticator(), alice.epoch_authenticator());

    // Before the revocation Carol's commits are accepted.
    let out = carol.self_update(t).unwrap();
    for g in [&mut alice, &mut bob] {
        let ProcessedMessage::StagedCommit(staged) = g.process_incoming(&out.commit, t).unwrap()
        else {
            panic!("expected a commit");
        };
        g.merge_staged_commit(staged).unwrap();
    }
    carol.merge_pending_commit().unwrap();
    let epoch = alice.epoch();

    // The operator revokes Carol; Alice and Bob fetch the new CRL.
    as_.service.revoke(&clients[2].serial).await.unwrap();
    for v in &validators[..2] {
        v.set_crl(&as_.client.crl().await.unwrap()).unwrap();
    }
    assert_eq!(
        validators[0].check(
            &clients[2].signer.credential,
            &clients[2].signer.signature_public_key(),
            None
        ),
        Err(ValidationError::Revoked)
    );
    // Checking the whole group again names Carol, and only her.
    for (v, g) in validators[..2].iter().zip([&alice, &bob]) {
        assert_eq!(
            v.refused_members(&g.members()),
            vec![(carol.own_leaf_index(), ValidationError::Revoked)]
        );
    }

    // Carol's next commit is refused by both, with the revocation as the
    // reason, and leaves their state as it was: a commit with a path (its
    // new leaf's credential is checked) ...
    let revoked = |e: &CredentialError| {
        matches!(e, CredentialError::Rejected(reason)
            if reason.downcast_ref::<ValidationError>() == Some(&ValidationError::Revoked))
    };
    let out = carol.self_update(t).unwrap();
    for g in [&mut alice, &mut bob] {
        let err = g.process_incoming(&out.commit, t).unwrap_err();
        assert!(
            matches!(&err, GroupError::Credential(e) if revoked(e)),
            "{err:?}"
        );
        assert_eq!(g.epoch(), epoch);
    }
    carol.discard_pending_commit().unwrap();
    // ... a commit without a path (an Add: her current leaf's credential
    // is checked) ...
    let dave = enrol(&as_, "dave").await;
    let dave_mls = Client::new(dave.signer.clone(), validators[2].clone());
    clients.push(dave);
    let dave_bundle = dave_mls
        .generate_key_package(&KeyPackageConfig::new(t - 10, 3600))
        .unwrap();
    let dave_kp = mls[2]
        .validate_key_package(&dave_bundle.to_bytes().unwrap(), t)
        .unwrap();
    let out = carol.add_members(&[dave_kp], t).unwrap();
    let carol_leaf = carol.own_leaf_index();
    for g in [&mut alice, &mut bob] {
        let err = g.process_incoming(&out.commit, t).unwrap_err();
        assert!(
            matches!(&err, GroupError::SenderCredential { sender, error }
                if *sender == carol_leaf && revoked(error)),
            "{err:?}"
        );
        assert_eq!(g.epoch(), epoch);
    }
    carol.discard_pending_commit().unwrap();
    // ... and a proposal.
    let proposal = carol.propose_remove(alice.own_leaf_index()).unwrap();
    for g in [&mut alice, &mut bob] {
        let err = g.process_incoming(&proposal.message, t).unwrap_err();
        assert!(
            matches!(&err, GroupError::SenderCredential { sender, error }
                if *sender == carol_leaf && revoked(error)),
            "{err:?}"
        );
        assert!(g.pending_proposals().is_empty());
    }

    // Alice and Bob go on without her: Alice removes Carol, Bob follows.
    let out = alice.remove_members(&[carol_leaf], t).unwrap();
    let ProcessedMessage::StagedCommit(staged) = bob.process_incoming(&out.commit, t).unwrap()
    else {
        panic!("expected a commit");
    };
    bob.merge_staged_commit(staged).unwrap();
    alice.merge_pending_commit().unwrap();
    assert_eq!(alice.members().len(), 2);
    assert_eq!(bob.epoch_authenticator(), alice.epoch_authenticator());

    for c in &clients {
        c.destroy();
    }
    as_.stop().await;
}

on_both_stores!(three_members_refuse_a_revoked_one);
