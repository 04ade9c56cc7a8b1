//! Shared helpers for the custody tests.
#![allow(dead_code)]

use cryptoki::object::{Attribute, AttributeInfo, AttributeType};
use hsmls_custody::pkcs11::{CONFIG_ENV, Pkcs11Config};
use hsmls_custody::{KeyAttributes, KeyRef, Pkcs11Custody, PublicKey};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};

/// The configuration of the SoftHSM test token. Fails (never skips) when the
/// environment does not name one.
pub fn pkcs11_config() -> Pkcs11Config {
    if std::env::var_os(CONFIG_ENV).is_none() {
        panic!(
            "{CONFIG_ENV} is not set: the PKCS#11 tests need the SoftHSM test token. \
             Run `bash scripts/test.sh` (it runs scripts/setup-hsm.sh and exports \
             SOFTHSM2_CONF and {CONFIG_ENV})."
        );
    }
    Pkcs11Config::from_env().unwrap_or_else(|e| panic!("bad {CONFIG_ENV}: {e}"))
}

/// A custody on the SoftHSM test token.
pub fn pkcs11_custody() -> Pkcs11Custody {
    Pkcs11Custody::open(&pkcs11_config()).unwrap_or_else(|e| {
        panic!("cannot open the SoftHSM test token: {e} (run `bash scripts/test.sh`)")
    })
}

/// Verifies a DER signature over a SHA-256 digest with p256, and checks it
/// is canonical DER with a low S.
pub fn assert_valid_low_s_der(public: &PublicKey, digest: &[u8; 32], der: &[u8]) {
    let sig = Signature::from_der(der).expect("signature is not DER");
    assert_eq!(
        sig.to_der().as_bytes(),
        der,
        "signature DER is not canonical"
    );
    assert!(sig.normalize_s().is_none(), "signature has a high S");
    let vk = VerifyingKey::from_sec1_bytes(public.as_bytes()).expect("public key");
    vk.verify_prehash(digest, &sig)
        .expect("signature does not verify with p256");
}

/// The environment variable naming the TPM test token's configuration
/// (`eval "$(bash scripts/setup-tpm.sh --env)"`).
pub const TPM_CONFIG_ENV: &str = "HSMLS_TPM_PKCS11_CONFIG";
/// The environment variable naming the split configuration: signature keys
/// in the TPM token, HPKE keys and the sealing key in the SoftHSM token.
pub const SPLIT_CONFIG_ENV: &str = "HSMLS_TPM_SPLIT_PKCS11_CONFIG";

/// The configuration file `var` names. Fails (never skips) when the
/// environment does not name one: the TPM must have been started.
pub fn config_of(var: &str) -> Pkcs11Config {
    let path = std::env::var_os(var).unwrap_or_else(|| {
        panic!(
            "{var} is not set: this test needs the TPM 2.0 test token (swtpm). \
             Run `bash scripts/test.sh` (it runs scripts/setup-tpm.sh and exports {var})."
        )
    });
    Pkcs11Config::from_file(std::path::Path::new(&path))
        .unwrap_or_else(|e| panic!("bad {var}: {e}"))
}

/// Holds the TPM for one test: the TPM tests of a process run one at a
/// time. Three times in full test runs on a busy machine (load 5-8)
/// swtpm entered failure mode during a C_Sign while several tests used the
/// token at once ("Entering failure mode ... EntityGetAuthValue": the
/// command named an object loaded public-only, so a handle was mapped to
/// the wrong object somewhere between tpm2-pkcs11 and tpm2-abrmd), and
/// every later TPM call failed. One TPM user at a time is also what a
/// client process does.
pub fn tpm_serial() -> std::sync::MutexGuard<'static, ()> {
    static TPM: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TPM.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A custody on the TPM test token (tpm2-pkcs11 on swtpm).
pub fn tpm_custody() -> Pkcs11Custody {
    Pkcs11Custody::open(&config_of(TPM_CONFIG_ENV)).unwrap_or_else(|e| {
        panic!("cannot open the TPM test token: {e} (run `bash scripts/setup-tpm.sh`)")
    })
}

/// The split custody: signature keys in the TPM token, HPKE keys in the
/// SoftHSM test token, as `.tpm/pkcs11-split.toml` configures it.
pub fn split_custody() -> hsmls_custody::ConfiguredCustody {
    hsmls_custody::ConfiguredCustody::open(&config_of(SPLIT_CONFIG_ENV)).unwrap_or_else(|e| {
        panic!("cannot open the split custody: {e} (run `bash scripts/test.sh`)")
    })
}

/// The router of [`split_custody`].
pub fn split_router() -> std::sync::Arc<hsmls_custody::CustodyRouter> {
    split_custody().router().clone()
}

/// Reads the protection attributes of a key's private object straight from
/// the token with cryptoki (the `test-utils` access), failing if the token
/// does not report one: the reference `key_attributes` is checked against.
pub fn raw_attributes(c: &Pkcs11Custody, key: &KeyRef) -> (bool, bool, bool, bool, bool, bool) {
    let handle = c.private_key_handle(key).unwrap();
    let attrs = c
        .with_session(|s| {
            s.get_attributes(
                handle,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::AlwaysSensitive,
                    AttributeType::NeverExtractable,
                    AttributeType::Token,
                ],
            )
        })
        .unwrap()
        .unwrap();
    let mut found = [None; 5];
    for a in attrs {
        match a {
            Attribute::Sensitive(b) => found[0] = Some(b),
            Attribute::Extractable(b) => found[1] = Some(b),
            Attribute::AlwaysSensitive(b) => found[2] = Some(b),
            Attribute::NeverExtractable(b) => found[3] = Some(b),
            Attribute::Token(b) => found[4] = Some(b),
            _ => {}
        }
    }
    let info = c
        .with_session(|s| s.get_attribute_info(handle, &[AttributeType::Value]))
        .unwrap()
        .unwrap();
    let value_readable = match info.as_slice() {
        // SoftHSM answers CKR_ATTRIBUTE_SENSITIVE; tpm2-pkcs11, which holds
        // no value at all (the key is in the TPM), CKR_ATTRIBUTE_TYPE_INVALID.
        [AttributeInfo::Sensitive | AttributeInfo::TypeInvalid] => false,
        [AttributeInfo::Available(_)] => true,
        other => panic!("CKA_VALUE info {other:?}"),
    };
    let [Some(a), Some(b), Some(c2), Some(d), Some(e)] = found else {
        panic!("the token did not report every attribute: {found:?}");
    };
    (a, b, c2, d, value_readable, e)
}

pub fn tuple(a: &KeyAttributes) -> (bool, bool, bool, bool, bool, bool) {
    (
        a.sensitive,
        a.extractable,
        a.always_sensitive,
        a.never_extractable,
        a.value_readable,
        a.token_object,
    )
}
