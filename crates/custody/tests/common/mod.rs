//! Shared helpers for the custody tests.
#![allow(dead_code)]

use hsmls_custody::pkcs11::{CONFIG_ENV, Pkcs11Config};
use hsmls_custody::{Pkcs11Custody, PublicKey};
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
