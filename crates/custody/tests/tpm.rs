//! Tests against the TPM 2.0 test token: tpm2-pkcs11 on a software TPM
//! (swtpm) reached through tpm2-abrmd, started by `scripts/setup-tpm.sh`
//! (`HSMLS_TPM_PKCS11_CONFIG`), and the split configuration
//! `.tpm/pkcs11-split.toml` (`HSMLS_TPM_SPLIT_PKCS11_CONFIG`: signature keys
//! in the TPM, HPKE keys and the state-sealing key in the SoftHSM test
//! token). They fail, never skip, when the TPM is not running.

mod common;

use std::path::Path;
use std::sync::Arc;

use hsmls_custody::pkcs11::Pkcs11Config;
use hsmls_custody::{
    ConfiguredCustody, CustodyError, CustodyRouter, HpkeKeyHome, KeyCustody, KeyHome, KeyPurpose,
    KeySpec, Pkcs11Custody, SealHome, SplitFault, StateSealer,
};
use rand_core::{OsRng, RngCore};

use common::{SPLIT_CONFIG_ENV, TPM_CONFIG_ENV, config_of, raw_attributes, tuple};

const SIG: KeySpec = KeySpec::ECDSA_SECP256R1_SHA256;
const HPKE: KeySpec = KeySpec::DHKEM_P256_HKDF_SHA256;

fn digest() -> [u8; 32] {
    let mut d = [0u8; 32];
    OsRng.fill_bytes(&mut d);
    d
}

/// A generated signature key's private object, read back from the TPM
/// token with raw cryptoki calls: `CKA_SENSITIVE` true, `CKA_EXTRACTABLE`
/// false, always sensitive, never extractable, a token object, and its
/// `CKA_VALUE` unreadable; `key_attributes` reports the same.
#[test]
fn tpm_key_attributes_read_back_sensitive_and_never_extractable() {
    let _serial = common::tpm_serial();
    let c = common::tpm_custody();
    let key = c.generate(SIG).unwrap();
    let (sensitive, extractable, always_sensitive, never_extractable, value_readable, token) =
        raw_attributes(&c, &key);
    assert!(sensitive, "CKA_SENSITIVE");
    assert!(!extractable, "CKA_EXTRACTABLE");
    assert!(always_sensitive, "CKA_ALWAYS_SENSITIVE");
    assert!(never_extractable, "CKA_NEVER_EXTRACTABLE");
    assert!(!value_readable, "CKA_VALUE is readable");
    assert!(token, "CKA_TOKEN");
    assert_eq!(
        tuple(&c.key_attributes(&key).unwrap()),
        (true, false, true, true, false, true)
    );
    // The key signs, and its URI names the TPM token.
    let d = digest();
    let der = c.sign_prehash(&key, &d).unwrap();
    common::assert_valid_low_s_der(key.public_key(), &d, &der);
    assert!(
        key.uri().starts_with("pkcs11:token=hsmls-tpm;"),
        "{}",
        key.uri()
    );
    c.destroy(&key).unwrap();
    assert!(matches!(
        c.key_attributes(&key),
        Err(CustodyError::KeyNotFound(_))
    ));
}

/// What the TPM token can hold, as the probe finds it: P-256 signature
/// keys; no HPKE key of any KEM (no `C_DeriveKey`); no state-sealing key
/// (no `CKM_AES_GCM`: TPM2_EncryptDecrypt has no GCM mode).
#[test]
fn tpm_holds_p256_signature_keys_only_and_cannot_seal() {
    let _serial = common::tpm_serial();
    let c = common::tpm_custody();
    let caps = c.capabilities();
    assert!(caps.supports(SIG), "{}", caps.summary);
    for spec in KeySpec::ALL {
        if spec.purpose() == KeyPurpose::Hpke {
            assert!(!caps.supports(spec), "{spec}: {}", caps.summary);
            let why = c.unsupported_reason(spec).unwrap();
            assert!(
                why.contains("CKM_ECDH1_DERIVE") || why.contains("X25519"),
                "{spec}: {why}"
            );
        }
    }
    assert!(!caps.supports(KeySpec::ED25519), "{}", caps.summary);
    let e = c.can_seal();
    assert!(
        matches!(&e, Err(CustodyError::SealingUnsupported(why)) if why.contains("CKM_AES_GCM")),
        "{e:?}"
    );
    let e = Arc::new(c).state_sealer();
    assert!(
        matches!(&e, Err(CustodyError::SealingUnsupported(_))),
        "{e:?}"
    );
}

/// Forty signature keys generated, used and destroyed by one process.
/// tpm2-pkcs11 1.9.0 keeps one transient object loaded per generated key
/// for the life of the process's connection (the 28th generation failed
/// with `TPM_RC_OBJECT_MEMORY` under tpm2-abrmd's default limit of 27), so
/// `scripts/setup-tpm.sh` starts tpm2-abrmd with `--max-transients=100`
/// (its maximum); this test fails if that limit is lost.
#[test]
fn forty_keys_in_one_process_fit_under_the_raised_transient_limit() {
    let _serial = common::tpm_serial();
    let c = common::tpm_custody();
    for i in 0..40 {
        let key = c.generate(SIG).unwrap_or_else(|e| panic!("key {i}: {e}"));
        let d = digest();
        let der = c.sign_prehash(&key, &d).unwrap();
        common::assert_valid_low_s_der(key.public_key(), &d, &der);
        c.destroy(&key).unwrap();
    }
}

/// A signature key is found again from its URI by a fresh custody (the
/// key blob lives in tpm2-pkcs11's store, the key in the TPM).
#[test]
fn tpm_key_found_again_after_a_restart() {
    let _serial = common::tpm_serial();
    let uri;
    let public;
    {
        let c = common::tpm_custody();
        let key = c.generate(SIG).unwrap();
        uri = key.uri().to_owned();
        public = key.public_key().clone();
    }
    let c = common::tpm_custody();
    let key = c.find(&uri).unwrap();
    assert_eq!(key.public_key(), &public);
    assert_eq!(key.spec(), SIG);
    let d = digest();
    let der = c.sign_prehash(&key, &d).unwrap();
    common::assert_valid_low_s_der(key.public_key(), &d, &der);
    c.destroy(&key).unwrap();
    assert!(matches!(c.find(&uri), Err(CustodyError::KeyNotFound(_))));
}

/// The split configuration: signature keys in the TPM, HPKE keys in
/// SoftHSM (each URI naming its token), X25519 HPKE keys refused (SoftHSM
/// has no X25519 and hpke_keys is "token"), and the state-sealing key in
/// SoftHSM because the TPM cannot seal.
#[test]
fn split_config_routes_each_key_kind_to_its_token() {
    let _serial = common::tpm_serial();
    let split = common::split_custody();
    let tpm_label = split.token().token_label().to_owned();
    let hsm_label = split
        .hpke_token()
        .expect("an HPKE token")
        .token_label()
        .to_owned();
    assert_eq!(tpm_label, "hsmls-tpm");
    assert_ne!(tpm_label, hsm_label);
    let r = split.router();
    assert_eq!(r.home(SIG).unwrap(), KeyHome::Token);
    assert_eq!(r.home(HPKE).unwrap(), KeyHome::HpkeToken);
    assert_eq!(
        r.home(KeySpec::DHKEM_P384_HKDF_SHA384).unwrap(),
        KeyHome::HpkeToken
    );
    let x25519 = r.home(KeySpec::DHKEM_X25519_HKDF_SHA256);
    assert!(
        matches!(
            &x25519,
            Err(CustodyError::KeyHomeRefused {
                purpose: KeyPurpose::Hpke,
                ..
            })
        ),
        "{x25519:?}"
    );
    // Ed25519: the TPM has no CKM_EDDSA, and signature keys never go
    // elsewhere.
    let ed = r.generate(KeySpec::ED25519);
    assert!(
        matches!(
            &ed,
            Err(CustodyError::KeyHomeRefused {
                spec: KeySpec::ED25519,
                purpose: KeyPurpose::Signature,
                ..
            })
        ),
        "{ed:?}"
    );

    let sig = r.generate(SIG).unwrap();
    let hpke = r.generate(HPKE).unwrap();
    assert!(
        sig.uri().contains(&format!("token={tpm_label};")),
        "{}",
        sig.uri()
    );
    assert!(
        hpke.uri().contains(&format!("token={hsm_label};")),
        "{}",
        hpke.uri()
    );
    assert_eq!(r.home_of(sig.uri()).unwrap(), KeyHome::Token);
    assert_eq!(r.home_of(hpke.uri()).unwrap(), KeyHome::HpkeToken);
    // Each key is in its own token and not in the other.
    assert!(split.token().key_attributes(&sig).unwrap().token_object);
    assert!(matches!(
        split.hpke_token().unwrap().find(sig.uri()),
        Err(CustodyError::KeyNotFound(_))
    ));
    // A URI naming a third token names no key of this router.
    let foreign = sig
        .uri()
        .replace(&format!("token={tpm_label}"), "token=elsewhere");
    assert!(matches!(
        r.find(&foreign),
        Err(CustodyError::KeyNotFound(_))
    ));

    // The sealing key lives in SoftHSM, found again by a second opening.
    assert_eq!(split.seal_home().unwrap(), SealHome::HpkeToken);
    let sealer = split.state_sealer().unwrap();
    let sealed = sealer.seal(b"aad", b"group state").unwrap();
    let again = common::split_custody();
    let sealer2 = again.state_sealer().unwrap();
    assert_eq!(sealer2.key_id(), sealer.key_id());
    assert_eq!(&sealer2.open(b"aad", &sealed).unwrap()[..], b"group state");
    let hsm_sealer = Arc::new(common::pkcs11_custody()).state_sealer().unwrap();
    assert_eq!(hsm_sealer.key_id(), sealer.key_id());

    // After a restart both keys are found through the router by URI.
    let r2 = again.router();
    let sig2 = r2.find(sig.uri()).unwrap();
    let hpke2 = r2.find(hpke.uri()).unwrap();
    let d = digest();
    let der = r2.sign_prehash(&sig2, &d).unwrap();
    common::assert_valid_low_s_der(sig.public_key(), &d, &der);
    let peer = hsmls_custody::SoftwareCustody::new();
    let pk = peer.generate(HPKE).unwrap();
    assert_eq!(
        r2.dh(&hpke2, pk.public_key().as_bytes())
            .unwrap()
            .as_bytes(),
        peer.dh(&pk, hpke.public_key().as_bytes())
            .unwrap()
            .as_bytes()
    );
    r.destroy(&sig).unwrap();
    r.destroy(&hpke).unwrap();
    assert!(matches!(
        r2.find(sig.uri()),
        Err(CustodyError::KeyNotFound(_))
    ));
}

/// The TPM alone: HPKE keys refused by default; in process memory only
/// with `hpke_keys = "software"`; and no home for the sealing key either
/// way (never process memory).
#[test]
fn tpm_alone_refuses_hpke_keys_and_has_no_sealing_home() {
    let _serial = common::tpm_serial();
    let config = config_of(TPM_CONFIG_ENV);
    assert_eq!(config.hpke_keys, HpkeKeyHome::Token);
    let alone = ConfiguredCustody::open(&config).unwrap();
    let e = alone.router().generate(HPKE);
    assert!(
        matches!(
            &e,
            Err(CustodyError::KeyHomeRefused { spec, purpose: KeyPurpose::Hpke, reason })
                if *spec == HPKE && reason.contains("CKM_ECDH1_DERIVE")
        ),
        "{e:?}"
    );
    let e = alone.seal_home();
    assert!(
        matches!(&e, Err(CustodyError::NoSealingHome(why))
            if why.contains("CKM_AES_GCM") && why.contains("hpke_token")),
        "{e:?}"
    );
    assert!(matches!(
        alone.state_sealer(),
        Err(CustodyError::NoSealingHome(_))
    ));

    let mut software = config.clone();
    software.hpke_keys = HpkeKeyHome::Software;
    let c = ConfiguredCustody::open(&software).unwrap();
    let r = c.router();
    assert_eq!(r.home(HPKE).unwrap(), KeyHome::Software);
    assert_eq!(r.home(SIG).unwrap(), KeyHome::Token);
    let hpke = r.generate(HPKE).unwrap();
    assert!(hpke.uri().starts_with("software:"), "{}", hpke.uri());
    r.destroy(&hpke).unwrap();
    assert!(matches!(c.seal_home(), Err(CustodyError::NoSealingHome(_))));
}

/// The split's rules, each with its own refusal: the HPKE token must not
/// be the signature token (by label), must not route keys itself, and
/// "software" excludes an HPKE token.
#[test]
fn split_rules_are_refused_each_by_name() {
    let _serial = common::tpm_serial();
    let dir = tempfile::tempdir().unwrap();
    let tpm_path = std::env::var_os(TPM_CONFIG_ENV).unwrap();
    let tpm_text = std::fs::read_to_string(&tpm_path).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    // The HPKE token is the TPM token itself.
    let same = write(
        "same.toml",
        &format!("{tpm_text}\nhpke_token = {:?}\n", Path::new(&tpm_path)),
    );
    let e = ConfiguredCustody::open(&Pkcs11Config::from_file(&same).unwrap());
    assert!(
        matches!(
            e,
            Err(CustodyError::SplitConfig(SplitFault::SameTokenLabel))
        ),
        "{e:?}"
    );
    // The HPKE token's file routes keys itself.
    let split = config_of(SPLIT_CONFIG_ENV);
    let hsm_text = std::fs::read_to_string(split.hpke_token.as_ref().unwrap()).unwrap();
    let nested = write(
        "nested.toml",
        &format!("{hsm_text}\nhpke_keys = \"token-else-software\"\n"),
    );
    let outer = write(
        "outer.toml",
        &format!("{tpm_text}\nhpke_token = {nested:?}\n"),
    );
    let e = ConfiguredCustody::open(&Pkcs11Config::from_file(&outer).unwrap());
    assert!(
        matches!(
            e,
            Err(CustodyError::SplitConfig(SplitFault::NestedHpkeToken))
        ),
        "{e:?}"
    );
    // "software" and an HPKE token.
    let both = write(
        "both.toml",
        &format!(
            "{tpm_text}\nhpke_keys = \"software\"\nhpke_token = {:?}\n",
            split.hpke_token.as_ref().unwrap()
        ),
    );
    let e = Pkcs11Config::from_file(&both);
    assert!(
        matches!(
            e,
            Err(CustodyError::SplitConfig(SplitFault::SoftwareAndHpkeToken))
        ),
        "{e:?}"
    );
    // The same rules hold for a router built in code.
    let tpm: Arc<dyn KeyCustody> = Arc::new(common::tpm_custody());
    let hsm: Arc<dyn KeyCustody> = Arc::new(common::pkcs11_custody());
    for (labels, home, fault) in [
        (("a", "a"), HpkeKeyHome::Token, SplitFault::SameTokenLabel),
        (
            ("a", "b"),
            HpkeKeyHome::Software,
            SplitFault::SoftwareAndHpkeToken,
        ),
    ] {
        let e = CustodyRouter::split(tpm.clone(), labels.0, hsm.clone(), labels.1, home);
        assert!(
            matches!(&e, Err(CustodyError::SplitConfig(f)) if *f == fault),
            "{e:?}"
        );
    }
}

/// `Pkcs11Custody` is what the TPM token is opened as; its label is the
/// configuration's.
#[test]
fn tpm_token_is_found_by_its_label() {
    let _serial = common::tpm_serial();
    let c: Pkcs11Custody = common::tpm_custody();
    assert_eq!(c.token_label(), config_of(TPM_CONFIG_ENV).token_label);
}
