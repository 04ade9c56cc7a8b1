//! The CA on the SoftHSM token: its keys are sensitive, non-extractable
//! token objects; its chain is accepted by `openssl verify`; a leaf takes
//! nothing from the CSR but the key and the identity.

mod common;

use std::process::Command;
use std::sync::Arc;

use der::{Decode, Encode};
use hsmls::wire::SignaturePublicKey;
use hsmls_as::ca::{Ca, CaProfile, LeafRequest, random_serial};
use hsmls_as::config::pem;
use hsmls_as::csr::{CsrError, verify_csr};
use hsmls_credentials::csr::CustodySigningKey;
use hsmls_credentials::{FixedClock, ValidationError, X509CredentialValidator, x509_credential};
use hsmls_custody::{KeyCustody, KeySpec};
use rcgen::{CertificateParams, CustomExtension, SanType};
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages};

use common::{custody, now};

const CRL_URL: &str = "https://as.hsmls.test/crl";

fn leaf(ca: &Ca, identity: &str, public_key: &[u8], now: u64) -> Vec<u8> {
    ca.issue_leaf(&LeafRequest {
        identity,
        scheme: hsmls_custody::SignatureScheme::EcdsaSecp256r1Sha256,
        public_key,
        serial: &random_serial(),
        not_before: now,
        not_after: now + 7 * 86_400,
        crl_url: CRL_URL,
    })
    .unwrap()
}

#[test]
fn the_ca_keys_are_sensitive_non_extractable_token_objects() {
    let custody = custody();
    let ca = Ca::create(custody.clone(), CaProfile::default(), now()).unwrap();
    for key in [ca.root_key(), ca.issuing_key()] {
        let a = custody.key_attributes(key).unwrap();
        assert!(a.sensitive, "CKA_SENSITIVE");
        assert!(!a.extractable, "CKA_EXTRACTABLE");
        assert!(a.always_sensitive && a.never_extractable);
        assert!(!a.value_readable, "CKA_VALUE readable");
        assert!(a.token_object, "CKA_TOKEN");
        assert!(key.uri().starts_with("pkcs11:"));
    }
    // Found again by URI (as after a restart) with the stored certificates.
    let again = Ca::load(
        custody.clone(),
        CaProfile::default(),
        ca.root_key().uri(),
        ca.issuing_key().uri(),
        ca.root_der().to_vec(),
        ca.issuing_der().to_vec(),
    )
    .unwrap();
    assert_eq!(again.issuing_key(), ca.issuing_key());
    // The wrong certificate for a key is refused.
    assert!(matches!(
        Ca::load(
            custody.clone(),
            CaProfile::default(),
            ca.root_key().uri(),
            ca.issuing_key().uri(),
            ca.issuing_der().to_vec(),
            ca.issuing_der().to_vec(),
        ),
        Err(hsmls_as::CaError::BadKey(_))
    ));
    custody.destroy(ca.root_key()).unwrap();
    custody.destroy(ca.issuing_key()).unwrap();
}

#[test]
fn openssl_accepts_the_chain() {
    let custody = custody();
    let t = now();
    let ca = Ca::create(custody.clone(), CaProfile::default(), t - 60).unwrap();
    let key = custody.generate(KeySpec::ECDSA_SECP256R1_SHA256).unwrap();
    let der = leaf(
        &ca,
        "im:alice@hsmls.test",
        key.public_key().as_bytes(),
        t - 60,
    );
    let dir = tempfile::tempdir().unwrap();
    for (name, d) in [
        ("root.pem", ca.root_der()),
        ("issuing.pem", ca.issuing_der()),
        ("leaf.pem", &der[..]),
    ] {
        std::fs::write(dir.path().join(name), pem("CERTIFICATE", d)).unwrap();
    }
    let out = Command::new("openssl")
        .current_dir(dir.path())
        .args([
            "verify",
            "-purpose",
            "any",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "issuing.pem",
            "leaf.pem",
        ])
        .output()
        .expect("the openssl binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim() == "leaf.pem: OK",
        "openssl verify: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A leaf signed by another CA is refused by openssl too.
    let other = Ca::create(custody.clone(), CaProfile::default(), t - 60).unwrap();
    let foreign = leaf(
        &other,
        "im:alice@hsmls.test",
        key.public_key().as_bytes(),
        t - 60,
    );
    std::fs::write(dir.path().join("foreign.pem"), pem("CERTIFICATE", &foreign)).unwrap();
    let out = Command::new("openssl")
        .current_dir(dir.path())
        .args([
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "issuing.pem",
            "foreign.pem",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    for k in [
        ca.root_key(),
        ca.issuing_key(),
        other.root_key(),
        other.issuing_key(),
        &key,
    ] {
        custody.destroy(k).unwrap();
    }
}

/// A CSR that asks to be a CA (basicConstraints CA:TRUE, keyCertSign, an
/// extra EKU) still gets a plain leaf: only the key and identity are used.
#[test]
fn a_csr_asking_for_ca_true_gets_a_leaf() {
    let custody = custody();
    let t = now();
    let ca = Ca::create(custody.clone(), CaProfile::default(), t - 60).unwrap();
    let key = custody.generate(KeySpec::ECDSA_SECP256R1_SHA256).unwrap();
    let signer =
        CustodySigningKey::new(custody.clone() as Arc<dyn KeyCustody>, key.clone()).unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI("im:mallory@hsmls.test".try_into().unwrap())];
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let mut ca_true =
        CustomExtension::from_oid_content(&[2, 5, 29, 19], vec![0x30, 0x03, 0x01, 0x01, 0xff]);
    ca_true.set_criticality(true);
    params.custom_extensions = vec![ca_true];
    let csr = params.serialize_request(&signer).unwrap();
    let verified = verify_csr(csr.der()).unwrap();
    assert_eq!(verified.public_key, key.public_key().as_bytes());
    assert_eq!(verified.uris, vec!["im:mallory@hsmls.test".to_owned()]);

    let der = leaf(&ca, "im:mallory@hsmls.test", &verified.public_key, t - 60);
    let cert = x509_cert::Certificate::from_der(&der).unwrap();
    let exts = cert.tbs_certificate.extensions.unwrap();
    let find = |oid: &str| {
        exts.iter()
            .find(|e| e.extn_id.to_string() == oid)
            .unwrap_or_else(|| panic!("no extension {oid}"))
    };
    let bc = BasicConstraints::from_der(find("2.5.29.19").extn_value.as_bytes()).unwrap();
    assert!(!bc.ca);
    let ku_ext = find("2.5.29.15");
    assert!(ku_ext.critical);
    let ku = KeyUsage::from_der(ku_ext.extn_value.as_bytes()).unwrap();
    assert_eq!(
        ku.0.into_iter().collect::<Vec<_>>(),
        vec![KeyUsages::DigitalSignature]
    );
    let eku = ExtendedKeyUsage::from_der(find("2.5.29.37").extn_value.as_bytes()).unwrap();
    assert_eq!(
        eku.0.iter().map(|o| o.to_string()).collect::<Vec<_>>(),
        vec!["1.3.6.1.5.5.7.3.40".to_owned()]
    );
    assert_eq!(cert.tbs_certificate.serial_number.as_bytes().len(), 17);
    // The 128 random bits differ between two leaves.
    let der2 = leaf(&ca, "im:mallory@hsmls.test", &verified.public_key, t - 60);
    let cert2 = x509_cert::Certificate::from_der(&der2).unwrap();
    assert_ne!(
        cert.tbs_certificate.serial_number,
        cert2.tbs_certificate.serial_number
    );
    assert_eq!(
        cert.tbs_certificate
            .validity
            .not_after
            .to_unix_duration()
            .as_secs()
            - cert
                .tbs_certificate
                .validity
                .not_before
                .to_unix_duration()
                .as_secs(),
        7 * 86_400
    );
    // The leaf cannot sign another certificate that members accept: a
    // "leaf" issued by the leaf's key does not chain.
    let _ = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .unwrap();
    for k in [ca.root_key(), ca.issuing_key(), &key] {
        custody.destroy(k).unwrap();
    }
}

#[test]
fn a_csr_whose_signature_does_not_match_its_key_is_refused() {
    let custody = custody();
    let key = custody.generate(KeySpec::ECDSA_SECP256R1_SHA256).unwrap();
    let csr = hsmls_credentials::csr::build_csr(
        custody.clone() as Arc<dyn KeyCustody>,
        &key,
        "im:alice@hsmls.test",
    )
    .unwrap();
    assert!(verify_csr(&csr).is_ok());
    // Flip a bit in the signature (the last bytes of the DER).
    let mut bad = csr.clone();
    let n = bad.len();
    bad[n - 3] ^= 1;
    assert_eq!(verify_csr(&bad), Err(CsrError::BadSignature));
    // Change a byte of the signed request info (inside the public key).
    let mut bad = csr.clone();
    let pk = key.public_key().as_bytes();
    let pos = bad.windows(pk.len()).position(|w| w == pk).unwrap();
    bad[pos + 40] ^= 1;
    assert!(matches!(
        verify_csr(&bad),
        Err(CsrError::BadSignature | CsrError::UnsupportedAlgorithm)
    ));
    assert_eq!(verify_csr(b"not a csr"), Err(CsrError::Malformed));
    assert_eq!(verify_csr(&vec![0x30; 9000]), Err(CsrError::TooLarge));
    custody.destroy(&key).unwrap();
}

/// The validator's rules, one by one, on certificates of a CA in the token.
#[test]
fn the_validator_checks_each_rule() {
    let custody = custody();
    let t = now();
    let ca = Ca::create(custody.clone(), CaProfile::default(), t - 60).unwrap();
    let key = custody.generate(KeySpec::ECDSA_SECP256R1_SHA256).unwrap();
    let pk = SignaturePublicKey(key.public_key().as_bytes().to_vec());
    let der = leaf(&ca, "im:alice@hsmls.test", &pk.0, t - 60);
    let chain = vec![der.clone(), ca.issuing_der().to_vec()];
    let clock = Arc::new(FixedClock::new(t));
    let v = X509CredentialValidator::new(&[ca.root_der().to_vec()])
        .unwrap()
        .with_clock(clock.clone());
    let cred = x509_credential(&chain);
    // No CRL yet: refused.
    assert_eq!(v.check(&cred, &pk, None), Err(ValidationError::NoCrl));
    v.set_crl(&ca.sign_crl(1, &[], t - 60, 86_400).unwrap())
        .unwrap();
    let info = v.check(&cred, &pk, Some("im:alice@hsmls.test")).unwrap();
    assert_eq!(info.identity, "im:alice@hsmls.test");
    // The pure-Rust verifier agrees.
    let pure = X509CredentialValidator::new(&[ca.root_der().to_vec()])
        .unwrap()
        .with_clock(clock.clone())
        .with_algorithms(hsmls_credentials::x509::P256_ALGORITHMS);
    pure.set_crl(&ca.sign_crl(1, &[], t - 60, 86_400).unwrap())
        .unwrap();
    assert_eq!(pure.check(&cred, &pk, None).unwrap(), info);
    // Identity claimed differs.
    assert!(matches!(
        v.check(&cred, &pk, Some("im:bob@hsmls.test")),
        Err(ValidationError::IdentityMismatch { .. })
    ));
    // Another key than the certificate's.
    let other = SignaturePublicKey(
        custody
            .generate(KeySpec::ECDSA_SECP256R1_SHA256)
            .map(|k| {
                let b = k.public_key().as_bytes().to_vec();
                custody.destroy(&k).unwrap();
                b
            })
            .unwrap(),
    );
    assert_eq!(
        v.check(&cred, &other, None),
        Err(ValidationError::KeyMismatch)
    );
    // Expired, not yet valid.
    clock.set(t + 8 * 86_400);
    assert_eq!(v.check(&cred, &pk, None), Err(ValidationError::Expired));
    clock.set(t - 3600);
    assert_eq!(v.check(&cred, &pk, None), Err(ValidationError::NotYetValid));
    // An expired CRL refuses everything.
    clock.set(t + 2 * 86_400);
    let short = leaf(&ca, "im:alice@hsmls.test", &pk.0, t + 86_400);
    let short_cred = x509_credential(&[short, ca.issuing_der().to_vec()]);
    assert_eq!(
        v.check(&short_cred, &pk, None),
        Err(ValidationError::CrlExpired)
    );
    clock.set(t);
    // A foreign CA (another root in the token) is refused; one that
    // copies our CA's names fails on the signature.
    let foreign = Ca::create(custody.clone(), CaProfile::named("elsewhere"), t - 60).unwrap();
    let fder = leaf(&foreign, "im:alice@hsmls.test", &pk.0, t - 60);
    assert_eq!(
        v.check(
            &x509_credential(&[fder, foreign.issuing_der().to_vec()]),
            &pk,
            None
        ),
        Err(ValidationError::UnknownIssuer)
    );
    let impostor = Ca::create(custody.clone(), CaProfile::default(), t - 60).unwrap();
    let ider = leaf(&impostor, "im:alice@hsmls.test", &pk.0, t - 60);
    assert_eq!(
        v.check(
            &x509_credential(&[ider, impostor.issuing_der().to_vec()]),
            &pk,
            None
        ),
        Err(ValidationError::BadSignature)
    );
    // The chain without the issuing CA does not reach the root.
    assert_eq!(
        v.check(&x509_credential(std::slice::from_ref(&der)), &pk, None),
        Err(ValidationError::UnknownIssuer)
    );
    // Bad shapes.
    assert_eq!(
        v.check(&x509_credential(&[]), &pk, None),
        Err(ValidationError::EmptyChain)
    );
    assert_eq!(
        v.check(&x509_credential(&vec![der.clone(); 5]), &pk, None),
        Err(ValidationError::ChainTooLong(5))
    );
    assert!(matches!(
        v.check(&x509_credential(&[b"junk".to_vec()]), &pk, None),
        Err(ValidationError::Malformed(_))
    ));
    assert_eq!(
        v.check(
            &hsmls::wire::Credential::Basic(b"alice".to_vec()),
            &pk,
            None
        ),
        Err(ValidationError::UnsupportedType(1))
    );
    // A TLS server certificate of the same CA is not an MLS credential.
    let tls_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let tls = ca
        .issue_tls(&["localhost".into()], &tls_key, t - 60, 86_400)
        .unwrap();
    let tls_pk = SignaturePublicKey(rcgen::PublicKeyData::der_bytes(&tls_key).to_vec());
    assert_eq!(
        v.check(
            &x509_credential(&[tls, ca.issuing_der().to_vec()]),
            &tls_pk,
            None
        ),
        Err(ValidationError::NoIdentity)
    );
    // Revoked; and an older CRL cannot roll the revocation back.
    let serial = hsmls_credentials::leaf_info(&der).unwrap().serial;
    v.set_crl(&ca.sign_crl(2, &[(serial, t)], t, 86_400).unwrap())
        .unwrap();
    assert_eq!(v.check(&cred, &pk, None), Err(ValidationError::Revoked));
    assert_eq!(
        v.set_crl(&ca.sign_crl(3, &[], t - 120, 86_400).unwrap()),
        Err(ValidationError::StaleCrl)
    );
    assert_eq!(v.check(&cred, &pk, None), Err(ValidationError::Revoked));
    // A CRL signed by a foreign CA does not cover our leaves.
    let v2 = X509CredentialValidator::new(&[ca.root_der().to_vec()])
        .unwrap()
        .with_clock(clock.clone());
    v2.set_crl(&foreign.sign_crl(1, &[], t - 60, 86_400).unwrap())
        .unwrap();
    assert_eq!(
        v2.check(&cred, &pk, None),
        Err(ValidationError::RevocationStatusUnknown)
    );
    // valid_successor keeps the SAN identity.
    use hsmls::CredentialValidator;
    let bob = leaf(&ca, "im:bob@hsmls.test", &pk.0, t - 60);
    let alice2 = leaf(&ca, "im:alice@hsmls.test", &pk.0, t - 60);
    assert!(v.valid_successor(&cred, &x509_credential(&[alice2])));
    assert!(!v.valid_successor(&cred, &x509_credential(&[bob])));
    assert!(!v.valid_successor(
        &cred,
        &hsmls::wire::Credential::Basic(b"im:alice@hsmls.test".to_vec())
    ));
    for k in [
        ca.root_key(),
        ca.issuing_key(),
        foreign.root_key(),
        foreign.issuing_key(),
        impostor.root_key(),
        impostor.issuing_key(),
        &key,
    ] {
        custody.destroy(k).unwrap();
    }
}
