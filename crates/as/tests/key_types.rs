//! Credentials for every MLS signature scheme: the AS (its own CA key a
//! P-256 key in the token) certifies Ed25519, P-256, P-384 and P-521
//! subject keys generated in the SoftHSM token, after checking each CSR's
//! proof of possession with the key's own algorithm; the X.509 validator
//! accepts those leaves in the cipher suites of their scheme and refuses
//! them, with `ValidationError::SchemeMismatch`, in another suite.

mod common;

use std::sync::Arc;

use der::{Decode, Encode};
use hsmls::wire::{CipherSuite, SignaturePublicKey};
use hsmls::{Client, CredentialError, GroupConfig, GroupError, Signer};
use hsmls_as::Store;
use hsmls_as::csr::{CsrError, verify_csr};
use hsmls_credentials::api::{self, Renew, b64};
use hsmls_credentials::csr::build_csr;
use hsmls_credentials::keys;
use hsmls_credentials::{ValidationError, x509_credential};
use hsmls_custody::{KeyCustody, KeySpec, SignatureScheme};

use common::{TestAs, custody, identity, sqlite};

/// Each scheme with a cipher suite of that scheme.
const SCHEMES: [(SignatureScheme, u16); 4] = [
    (SignatureScheme::Ed25519, 0x0001),
    (SignatureScheme::EcdsaSecp256r1Sha256, 0x0002),
    (SignatureScheme::EcdsaSecp521r1Sha512, 0x0005),
    (SignatureScheme::EcdsaSecp384r1Sha384, 0x0007),
];

fn rejected(e: &CredentialError) -> Option<&ValidationError> {
    match e {
        CredentialError::Rejected(r) => r.downcast_ref::<ValidationError>(),
        _ => None,
    }
}

/// Enrolment over HTTPS, validation in the scheme's suites, and renewal
/// (a proof of possession signed by the current key) for each scheme.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_signature_scheme_is_enrolled_renewed_and_validated() {
    let db = sqlite().await;
    let as_ = TestAs::start(db.store.clone()).await;
    let custody = custody();
    let mut keys_made = Vec::new();
    for (n, (scheme, suite)) in SCHEMES.into_iter().enumerate() {
        let id = identity(&format!("user{n}"));
        let key = custody.generate(KeySpec::Signature(scheme)).unwrap();
        keys_made.push(key.clone());
        let csr = build_csr(custody.clone() as Arc<dyn KeyCustody>, &key, &id).unwrap();
        let verified = verify_csr(&csr).unwrap();
        assert_eq!(verified.scheme, scheme);
        assert_eq!(verified.public_key, key.public_key().as_bytes());
        assert_eq!(verified.uris, vec![id.clone()]);
        let token = as_.service.issue_token(&id).await.unwrap();
        let chain = as_.client.enrol(&id, &token, &csr).await.unwrap();
        let ders = chain.ders().unwrap();
        let v = as_.validator().await;
        let pk = SignaturePublicKey(key.public_key().as_bytes().to_vec());
        let cred = x509_credential(&ders);
        let info = v
            .check_in_suite(CipherSuite(suite), &cred, &pk, Some(&id))
            .unwrap_or_else(|e| panic!("{scheme}: {e}"));
        assert_eq!(info.scheme, scheme);
        assert_eq!(info.public_key, pk.0);
        // 0x0003 shares 0x0001's Ed25519 keys.
        if scheme == SignatureScheme::Ed25519 {
            v.check_in_suite(CipherSuite(3), &cred, &pk, Some(&id))
                .unwrap();
        }
        // Renewal: the AS checks the signature by the current key with its
        // scheme; a signature by the new key is no proof.
        let new_key = custody.generate(KeySpec::Signature(scheme)).unwrap();
        keys_made.push(new_key.clone());
        let new_csr = build_csr(custody.clone() as Arc<dyn KeyCustody>, &new_key, &id).unwrap();
        let mut signed = api::RENEW_LABEL.to_vec();
        signed.extend_from_slice(&new_csr);
        let bad = Renew {
            certificate: b64(&ders[0]),
            csr: b64(&new_csr),
            signature: b64(&custody.sign(&new_key, &signed).unwrap()),
        };
        assert!(as_.client.renew(&bad).await.is_err(), "{scheme}");
        let good = Renew {
            signature: b64(&custody.sign(&key, &signed).unwrap()),
            ..bad
        };
        let renewed = as_.client.renew(&good).await.unwrap().ders().unwrap();
        let new_pk = SignaturePublicKey(new_key.public_key().as_bytes().to_vec());
        let info = v
            .check_in_suite(
                CipherSuite(suite),
                &x509_credential(&renewed),
                &new_pk,
                Some(&id),
            )
            .unwrap();
        assert_eq!(info.scheme, scheme);
    }
    // Each renewal above was refused once, then accepted: two issuances
    // per scheme.
    assert_eq!(as_.service.store().log_size().await.unwrap(), 8);
    for key in &keys_made {
        custody.destroy(key).unwrap();
    }
    as_.stop().await;
}

/// A CSR is refused when its signature does not verify with its key, and
/// when it claims another signature algorithm than its key's.
#[test]
fn each_schemes_proof_of_possession_is_checked() {
    let custody = custody();
    for (scheme, _) in SCHEMES {
        let key = custody.generate(KeySpec::Signature(scheme)).unwrap();
        let csr = build_csr(
            custody.clone() as Arc<dyn KeyCustody>,
            &key,
            "im:alice@hsmls.test",
        )
        .unwrap();
        assert_eq!(verify_csr(&csr).unwrap().scheme, scheme);
        // The signature of another message by the same key.
        let mut req = x509_cert::request::CertReq::from_der(&csr).unwrap();
        let other = custody.sign(&key, b"another message").unwrap();
        req.signature = der::asn1::BitString::from_bytes(&other).unwrap();
        assert_eq!(
            verify_csr(&req.to_der().unwrap()),
            Err(CsrError::BadSignature),
            "{scheme}"
        );
        // Another algorithm than the key's.
        let mut req = x509_cert::request::CertReq::from_der(&csr).unwrap();
        req.algorithm = keys::signature_algorithm(if scheme == SignatureScheme::Ed25519 {
            SignatureScheme::EcdsaSecp256r1Sha256
        } else {
            SignatureScheme::Ed25519
        });
        assert_eq!(
            verify_csr(&req.to_der().unwrap()),
            Err(CsrError::UnsupportedAlgorithm),
            "{scheme}"
        );
        custody.destroy(&key).unwrap();
    }
}

/// A P-384 certificate is refused in a 0x0001 group (and every other
/// pairing of a key with a suite of another scheme), by the validator and
/// by the engine creating a group with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_of_another_scheme_than_the_suites_is_refused() {
    let db = sqlite().await;
    let as_ = TestAs::start(db.store.clone()).await;
    let custody = custody();
    let id = identity("carol");
    let key = custody
        .generate(KeySpec::Signature(SignatureScheme::EcdsaSecp384r1Sha384))
        .unwrap();
    let csr = build_csr(custody.clone() as Arc<dyn KeyCustody>, &key, &id).unwrap();
    let token = as_.service.issue_token(&id).await.unwrap();
    let ders = as_
        .client
        .enrol(&id, &token, &csr)
        .await
        .unwrap()
        .ders()
        .unwrap();
    let v = Arc::new(as_.validator().await);
    let pk = SignaturePublicKey(key.public_key().as_bytes().to_vec());
    let cred = x509_credential(&ders);
    for suite in [0x0001, 0x0002, 0x0003, 0x0005] {
        let expected = keys::suite_scheme(CipherSuite(suite));
        assert_eq!(
            v.check_in_suite(CipherSuite(suite), &cred, &pk, None),
            Err(ValidationError::SchemeMismatch {
                suite,
                expected,
                found: SignatureScheme::EcdsaSecp384r1Sha384,
            })
        );
    }
    // A suite hsmls does not implement (X448/Ed448) has no scheme.
    assert_eq!(
        v.check_in_suite(CipherSuite(0x0004), &cred, &pk, None),
        Err(ValidationError::SchemeMismatch {
            suite: 4,
            expected: None,
            found: SignatureScheme::EcdsaSecp384r1Sha384,
        })
    );
    v.check_in_suite(CipherSuite(0x0007), &cred, &pk, None)
        .unwrap();
    // The engine asks the validator in the group's suite.
    let signer = Signer::new(custody.clone() as Arc<dyn KeyCustody>, key.clone(), cred);
    let mut config = GroupConfig::default();
    config.cipher_suite = CipherSuite(0x0001);
    let client = Client::new(signer.clone(), v.clone()).with_group_config(config);
    let e = client
        .create_group(hsmls::random_group_id(), vec![], common::now())
        .unwrap_err();
    let GroupError::Credential(e) = e else {
        panic!("{e:?}");
    };
    assert!(matches!(
        rejected(&e),
        Some(ValidationError::SchemeMismatch {
            suite: 1,
            expected: Some(SignatureScheme::Ed25519),
            found: SignatureScheme::EcdsaSecp384r1Sha384,
        })
    ));
    // In 0x0007 the same client creates its group.
    let mut config = GroupConfig::default();
    config.cipher_suite = CipherSuite(0x0007);
    let group = Client::new(signer, v)
        .with_group_config(config)
        .create_group(hsmls::random_group_id(), vec![], common::now())
        .unwrap();
    custody.destroy(group.own_leaf_key()).unwrap();
    custody.destroy(&key).unwrap();
    as_.stop().await;
}
