//! The transparency log: every issuance and revocation is appended;
//! checkpoints are signed by a key in the token; members verify inclusion
//! of a credential before accepting it and keep the last checkpoint they
//! saw, so an AS that shows two members different logs (a split view) is
//! caught.

mod common;

use std::sync::Arc;

use hsmls_as::ca::{LeafRequest, random_serial};
use hsmls_as::store::NewCert;
use hsmls_as::{AuthService, ServiceConfig, SqliteStore, Store};
use hsmls_credentials::tlog::{LogError, LogMonitor};
use hsmls_credentials::{
    EntryKind, LogEntry, Transparency, ValidationError, X509CredentialValidator, cert_hash,
};
use hsmls_custody::{KeyCustody, KeySpec};

use common::{TestAs, custody, enrol, now};

/// Fetches the latest checkpoint and the consistency proof from what the
/// monitor saw, and updates it.
async fn follow<S: Store>(as_: &TestAs<S>, monitor: &LogMonitor) -> Result<u64, LogError> {
    let note = as_.client.checkpoint().await.unwrap();
    let new = as_.service.log_verifier().verify_note(&note)?;
    let old = monitor.latest().map_or(0, |c| c.size);
    let proof = if old == 0 {
        Vec::new()
    } else {
        as_.client
            .consistency_proof(old, new.size)
            .await
            .unwrap()
            .hashes()?
    };
    monitor.update(&note, &proof).map(|c| c.size)
}

async fn members_verify_inclusion<S: Store>(store: S) {
    let as_ = TestAs::start(store).await;
    let alice = enrol(&as_, "alice").await;
    let monitor = Arc::new(LogMonitor::new(as_.service.log_verifier().clone()));
    let v = X509CredentialValidator::new(&[as_.root_der()])
        .unwrap()
        .with_transparency(Transparency::Required(monitor.clone()));
    v.set_crl(&as_.client.crl().await.unwrap()).unwrap();
    let (cred, pk) = (
        &alice.signer.credential,
        alice.signer.signature_public_key(),
    );
    // Not shown to be logged yet.
    assert_eq!(v.check(cred, &pk, None), Err(ValidationError::NotLogged));
    assert_eq!(follow(&as_, &monitor).await, Ok(1));
    let proof = as_
        .client
        .inclusion_proof(&cert_hash(&alice.chain[0]), 1)
        .await
        .unwrap();
    let entry = LogEntry::decode(&proof.entry).unwrap();
    assert_eq!(entry.kind, EntryKind::Issued);
    assert_eq!(entry.identity, alice.identity);
    v.record_inclusion(&alice.chain[0], &proof).unwrap();
    v.check(cred, &pk, None).unwrap();

    // More entries: enrolments and a revocation; the monitor follows.
    let bob = enrol(&as_, "bob").await;
    let carol = enrol(&as_, "carol").await;
    as_.service.revoke(&carol.serial).await.unwrap();
    assert_eq!(follow(&as_, &monitor).await, Ok(4));
    let proof = as_
        .client
        .inclusion_proof(&cert_hash(&bob.chain[0]), 4)
        .await
        .unwrap();
    assert_eq!(proof.index, 1);
    // A proof for another certificate, or a tampered one, is refused.
    assert!(matches!(
        v.record_inclusion(&carol.chain[0], &proof),
        Err(ValidationError::BadInclusion(_))
    ));
    let mut tampered = proof.clone();
    tampered.index = 2;
    assert!(matches!(
        v.record_inclusion(&bob.chain[0], &tampered),
        Err(ValidationError::BadInclusion(_))
    ));
    v.record_inclusion(&bob.chain[0], &proof).unwrap();
    // The revocation is the last entry.
    let last = as_.service.store().log_entry(3).await.unwrap().unwrap();
    let last = LogEntry::decode(&last).unwrap();
    assert_eq!(last.kind, EntryKind::Revoked);
    assert_eq!(last.cert_hash, cert_hash(&carol.chain[0]));
    // Proof endpoints refuse sizes the log does not have.
    let err = as_
        .client
        .inclusion_proof(&cert_hash(&bob.chain[0]), 99)
        .await
        .unwrap_err();
    assert_eq!(
        err.problem_type(),
        Some(hsmls_credentials::api::problem::UNKNOWN_LOG_ENTRY)
    );
    for c in [&alice, &bob, &carol] {
        c.destroy();
    }
    as_.stop().await;
}
on_both_stores!(members_verify_inclusion);

/// A misbehaving AS keeps two logs under one key: member A is shown the
/// log with Carol's certificate, member B the log without it (and with
/// another entry in its place). Each log is consistent on its own, but B's
/// monitor refuses A's checkpoint (forwarded by A, or later served to B)
/// because no consistency proof joins the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_view_is_detected() {
    let _one = common::one_at_a_time().await;
    let dir = tempfile::tempdir().unwrap();
    let store_a = SqliteStore::open(&dir.path().join("a.db")).await.unwrap();
    let store_b = SqliteStore::open(&dir.path().join("b.db")).await.unwrap();
    let custody = custody();
    let t = now();
    let ca = hsmls_as::Ca::create(custody.clone(), hsmls_as::CaProfile::default(), t - 60).unwrap();
    let log_key = custody.generate(KeySpec::ECDSA_SECP256R1_SHA256).unwrap();
    let clock = Arc::new(hsmls_credentials::FixedClock::new(t));
    let config = ServiceConfig::new("https://as.hsmls.test");
    let svc = |store| {
        AuthService::new(
            store,
            ca.clone(),
            log_key.clone(),
            config.clone(),
            clock.clone(),
        )
        .unwrap()
    };
    let (as_a, as_b) = (svc(store_a), svc(store_b));
    let member_key = custody.generate(KeySpec::ECDSA_SECP256R1_SHA256).unwrap();
    let cert = |name: &str| {
        let identity = common::identity(name);
        let serial = random_serial();
        let der = ca
            .issue_leaf(&LeafRequest {
                identity: &identity,
                scheme: hsmls_custody::SignatureScheme::EcdsaSecp256r1Sha256,
                public_key: member_key.public_key().as_bytes(),
                serial: &serial,
                not_before: t,
                not_after: t + 3600,
                crl_url: &config.crl_url(),
            })
            .unwrap();
        let entry = LogEntry {
            kind: EntryKind::Issued,
            time: t,
            serial: serial.clone(),
            identity: identity.clone(),
            spki_hash: [0; 32],
            cert_hash: cert_hash(&der),
        }
        .encode();
        (hex::encode(serial), identity, der, entry)
    };
    async fn put<S: Store>(s: &AuthService<S>, c: &(String, String, Vec<u8>, Vec<u8>)) {
        s.store()
            .issue(&NewCert {
                serial: &c.0,
                identity: &c.1,
                der: &c.2,
                cert_hash: cert_hash(&c.2),
                not_after: t_plus(),
                entry: &c.3,
            })
            .await
            .unwrap();
    }
    fn t_plus() -> u64 {
        now() + 3600
    }
    let (alice, bob, carol, dave) = (cert("alice"), cert("bob"), cert("carol"), cert("dave"));
    for c in [&alice, &bob] {
        put(&as_a, c).await;
        put(&as_b, c).await;
    }
    let monitor_a = LogMonitor::new(as_a.log_verifier().clone());
    let monitor_b = LogMonitor::new(as_b.log_verifier().clone());
    let common_note = as_a.checkpoint().await.unwrap();
    assert_eq!(
        as_b.checkpoint().await.unwrap().lines().nth(2),
        common_note.lines().nth(2)
    );
    monitor_a.update(&common_note, &[]).unwrap();
    monitor_b
        .update(&as_b.checkpoint().await.unwrap(), &[])
        .unwrap();

    // The views part: A's log gets Carol, B's gets Dave instead.
    put(&as_a, &carol).await;
    put(&as_b, &dave).await;
    let proof_a = as_a
        .consistency_proof(2, 3)
        .await
        .unwrap()
        .hashes()
        .unwrap();
    let note_a = as_a.checkpoint().await.unwrap();
    monitor_a.update(&note_a, &proof_a).unwrap();
    let proof_b = as_b
        .consistency_proof(2, 3)
        .await
        .unwrap()
        .hashes()
        .unwrap();
    let note_b = as_b.checkpoint().await.unwrap();
    monitor_b.update(&note_b, &proof_b).unwrap();
    // Carol's inclusion proof verifies for A…
    let inc = as_a.inclusion_proof(&cert_hash(&carol.2), 3).await.unwrap();
    hsmls_credentials::tlog::verify_inclusion(
        &hsmls_credentials::tlog::leaf_hash(&inc.entry),
        inc.index,
        3,
        &hsmls_credentials::api::decode_hashes(&inc.proof).unwrap(),
        &monitor_a.latest().unwrap().root,
    )
    .unwrap();
    // …while B's view has no such entry.
    assert!(matches!(
        as_b.inclusion_proof(&cert_hash(&carol.2), 3).await,
        Err(hsmls_as::AsError::UnknownLogEntry)
    ));

    // A forwards its checkpoint to B (e.g. in a group message): same size,
    // different root.
    assert_eq!(
        monitor_b.check_peer(&note_a, &[]),
        Err(LogError::SplitView { size: 3 })
    );
    // The AS later serves B a grown version of A's log with a consistency
    // proof from A's history: it does not extend what B saw.
    put(&as_a, &cert("erin")).await;
    let note_a4 = as_a.checkpoint().await.unwrap();
    let proof = as_a
        .consistency_proof(3, 4)
        .await
        .unwrap()
        .hashes()
        .unwrap();
    assert_eq!(
        monitor_b.update(&note_a4, &proof),
        Err(LogError::SplitView { size: 4 })
    );
    // B's monitor still holds its own view.
    assert_eq!(monitor_b.latest().unwrap().size, 3);
    // A, who saw the log honestly grow, accepts the same update.
    assert_eq!(monitor_a.update(&note_a4, &proof).unwrap().size, 4);

    for k in [ca.root_key(), ca.issuing_key(), &log_key, &member_key] {
        custody.destroy(k).unwrap();
    }
}
