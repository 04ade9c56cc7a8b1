//! The AS client enrols a signature key generated in a TPM 2.0: the swtpm
//! test token of `scripts/setup-tpm.sh`, reached through tpm2-pkcs11, opened
//! with the split configuration (`HSMLS_TPM_SPLIT_PKCS11_CONFIG`: signature
//! keys in the TPM, HPKE keys in SoftHSM), while the AS keeps its CA keys in
//! SoftHSM. The CSR is signed in the TPM (proof of possession), the
//! certificate binds the TPM key, and an MLS group created with that
//! credential has the TPM key in its leaf. Fails, never skips, without the
//! TPM.

mod common;

use std::sync::Arc;

use hsmls_credentials::csr::build_csr;
use hsmls_credentials::x509_credential;
use hsmls_custody::pkcs11::Pkcs11Config;
use hsmls_custody::{ConfiguredCustody, KeyCustody, KeyHome, KeySpec};

use common::{TestAs, identity, sqlite};

fn split_custody() -> ConfiguredCustody {
    let path = std::env::var_os("HSMLS_TPM_SPLIT_PKCS11_CONFIG").unwrap_or_else(|| {
        panic!(
            "HSMLS_TPM_SPLIT_PKCS11_CONFIG is not set: this test needs the TPM 2.0 test \
             token. Run `bash scripts/test.sh` (it runs scripts/setup-tpm.sh)."
        )
    });
    let config = Pkcs11Config::from_file(std::path::Path::new(&path)).unwrap();
    ConfiguredCustody::open(&config).unwrap_or_else(|e| panic!("the split custody: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_client_enrols_a_key_generated_in_the_tpm() {
    let _one = common::one_at_a_time().await;
    let db = sqlite().await;
    let as_ = TestAs::start(db.store.clone()).await;
    let split = split_custody();
    let tpm = split.custody();
    let who = identity("tpm-alice");

    let key = tpm.generate(KeySpec::ECDSA_SECP256R1_SHA256).unwrap();
    assert_eq!(split.router().home_of(key.uri()).unwrap(), KeyHome::Token);
    assert!(key.uri().contains("token=hsmls-tpm;"), "{}", key.uri());
    // Read from the TPM token itself.
    let a = split.token().key_attributes(&key).unwrap();
    assert!(a.sensitive && !a.extractable && a.never_extractable && !a.value_readable);

    // The CSR is signed in the TPM; the AS checks it and issues.
    let csr = build_csr(tpm.clone(), &key, &who).unwrap();
    let token = as_.service.issue_token(&who).await.unwrap();
    let chain = as_.client.enrol(&who, &token, &csr).await.unwrap();
    let ders = chain.ders().unwrap();

    // The certificate binds the TPM key to the identity, and validates.
    let signer = hsmls::Signer::new(tpm.clone(), key.clone(), x509_credential(&ders));
    let v = as_.validator().await;
    let info = v
        .check(
            &signer.credential,
            &signer.signature_public_key(),
            Some(&who),
        )
        .unwrap();
    assert_eq!(hex::encode(&info.serial), chain.id);
    // Another key with this certificate is refused.
    let other = tpm.generate(KeySpec::ECDSA_SECP256R1_SHA256).unwrap();
    let other_pk = hsmls::wire::SignaturePublicKey(other.public_key().as_bytes().to_vec());
    assert!(matches!(
        v.check(&signer.credential, &other_pk, Some(&who)),
        Err(hsmls_credentials::ValidationError::KeyMismatch)
    ));

    // An MLS group with that credential: its leaf carries the TPM key (its
    // HPKE leaf key is in SoftHSM).
    let group = hsmls::Client::new(signer, Arc::new(v))
        .create_group(b"tpm-enrolled".to_vec(), Vec::new(), common::now())
        .unwrap();
    assert_eq!(
        group.members()[0].signature_key.as_slice(),
        key.public_key().as_bytes()
    );

    for k in [&key, &other] {
        tpm.destroy(k).unwrap();
    }
    as_.stop().await;
}
