//! The PKCS#11 backend on the SoftHSM test token with the keys of suites
//! 0x0001/0x0003 (`ed25519` signature keys), 0x0005 (P-521) and 0x0007
//! (P-384): signatures checked by the RustCrypto and dalek verifiers,
//! Diffie-Hellman both ways against software keys, import of known keys,
//! attributes read back from the token, destruction; and the
//! [`CustodyRouter`] that keeps X25519 HPKE keys in software only when the
//! configuration says so. Every test removes the token objects it creates.

mod common;

use std::sync::Arc;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use hsmls_custody::pkcs11::Pkcs11Uri;
use hsmls_custody::{
    CustodyError, CustodyRouter, HpkeKeyHome, KeyCustody, KeyHome, KeyObjectFault, KeyPurpose,
    KeyRef, KeySpec, Pkcs11Custody, SignatureScheme, SoftwareCustody, StateSealer,
};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use rand_core::{OsRng, RngCore};

const ECDSA: [KeySpec; 2] = [
    KeySpec::ECDSA_SECP384R1_SHA384,
    KeySpec::ECDSA_SECP521R1_SHA512,
];
const NIST_HPKE: [KeySpec; 2] = [
    KeySpec::DHKEM_P384_HKDF_SHA384,
    KeySpec::DHKEM_P521_HKDF_SHA512,
];

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// A valid random private key of `spec`, from the software backend's
/// generator (through a scalar the curve crate accepts).
fn random_private(spec: KeySpec) -> Vec<u8> {
    loop {
        let mut k = vec![0u8; spec.private_key_len()];
        OsRng.fill_bytes(&mut k);
        if spec.private_key_len() == 66 {
            k[0] &= 0x01; // below 2^521
        }
        if SoftwareCustody::new().import(spec, &k).is_ok() {
            return k;
        }
    }
}

/// Checks a token signature over `message` with the curve crate's verifier:
/// DER, canonical, low S, over the scheme's hash; Ed25519 with dalek
/// (strict verification).
fn assert_verifies(key: &KeyRef, message: &[u8], sig: &[u8]) {
    let public = key.public_key().as_bytes();
    match key.spec() {
        KeySpec::Signature(SignatureScheme::EcdsaSecp384r1Sha384) => {
            let s = p384::ecdsa::Signature::from_der(sig).expect("DER");
            assert_eq!(s.to_der().as_bytes(), sig, "canonical DER");
            assert!(s.normalize_s().is_none(), "high S");
            let digest = SignatureScheme::EcdsaSecp384r1Sha384
                .prehash(message)
                .unwrap();
            p384::ecdsa::VerifyingKey::from_sec1_bytes(public)
                .unwrap()
                .verify_prehash(&digest, &s)
                .expect("P-384 signature verifies");
        }
        KeySpec::Signature(SignatureScheme::EcdsaSecp521r1Sha512) => {
            let s = p521::ecdsa::Signature::from_der(sig).expect("DER");
            assert_eq!(s.to_der().as_bytes(), sig, "canonical DER");
            assert!(s.normalize_s().is_none(), "high S");
            let digest = SignatureScheme::EcdsaSecp521r1Sha512
                .prehash(message)
                .unwrap();
            p521::ecdsa::VerifyingKey::from_sec1_bytes(public)
                .unwrap()
                .verify_prehash(&digest, &s)
                .expect("P-521 signature verifies");
        }
        KeySpec::Signature(SignatureScheme::Ed25519) => {
            let vk = ed25519_dalek::VerifyingKey::from_bytes(public.try_into().unwrap()).unwrap();
            let s = ed25519_dalek::Signature::from_slice(sig).expect("64 bytes");
            vk.verify_strict(message, &s)
                .expect("Ed25519 signature verifies");
            assert!(vk.verify_strict(b"another message", &s).is_err());
        }
        other => panic!("not a signature spec: {other}"),
    }
}

/// The token's protections for a key it generated (`made_in_token`) or
/// imported: sensitive and never readable; signature keys token objects
/// never extractable when generated; HPKE keys session objects (extractable
/// once, for their wrap).
fn assert_protected(c: &Pkcs11Custody, key: &KeyRef, made_in_token: bool) {
    let a = c.key_attributes(key).unwrap();
    let sig = key.purpose() == KeyPurpose::Signature;
    let spec = key.spec();
    assert!(a.sensitive, "{spec}");
    assert!(!a.extractable, "{spec}");
    assert!(!a.value_readable, "{spec}");
    assert_eq!(a.always_sensitive, made_in_token, "{spec}");
    assert_eq!(a.never_extractable, made_in_token && sig, "{spec}");
    assert_eq!(a.token_object, sig, "{spec}");
}

#[test]
fn ecdsa_p384_and_p521_keys_sign_in_the_token_with_their_prehash() {
    let c = common::pkcs11_custody();
    for spec in ECDSA {
        let generated = c.generate(spec).unwrap();
        assert_eq!(
            generated.public_key().as_bytes().len(),
            spec.public_key_len()
        );
        let imported = c.import(spec, &random_private(spec)).unwrap();
        for (key, made_in_token) in [(generated, true), (imported, false)] {
            assert_protected(&c, &key, made_in_token);
            // Several signatures: SoftHSM's are randomised and half are high S.
            for message in [&b""[..], b"hsmls", &[0x5a; 3000], b"again", b"and again"] {
                let sig = c.sign(&key, message).unwrap();
                assert_verifies(&key, message, &sig);
            }
            let KeySpec::Signature(scheme) = spec else {
                unreachable!()
            };
            let r = c.sign_prehash(&key, &[0u8; 32]);
            assert!(
                matches!(r, Err(CustodyError::PrehashLength { scheme: s, actual: 32, .. }) if s == scheme),
                "{r:?}"
            );
            // Found again by a fresh custody (a restart).
            let again = common::pkcs11_custody().find(key.uri()).unwrap();
            assert_eq!(again, key);
            c.destroy(&key).unwrap();
            let r = c.find(key.uri());
            assert!(matches!(r, Err(CustodyError::KeyNotFound(_))), "{r:?}");
        }
    }
}

#[test]
fn imported_nist_signature_key_signs_like_the_software_key() {
    // The same scalar in both backends: the same public key, and each
    // verifies the other's signatures.
    let c = common::pkcs11_custody();
    let software = SoftwareCustody::new();
    for spec in ECDSA {
        let private = random_private(spec);
        let token_key = c.import(spec, &private).unwrap();
        let soft_key = software.import(spec, &private).unwrap();
        assert_eq!(token_key.public_key(), soft_key.public_key());
        let sig = software.sign(&soft_key, b"m").unwrap();
        assert_verifies(&token_key, b"m", &sig);
        c.destroy(&token_key).unwrap();
    }
}

#[test]
fn ed25519_keys_sign_the_whole_message_in_the_token() {
    let c = common::pkcs11_custody();
    let key = c.generate(KeySpec::ED25519).unwrap();
    assert_eq!(key.public_key().as_bytes().len(), 32);
    assert_protected(&c, &key, true);
    for message in [&b""[..], b"hsmls", &[0x5a; 3000]] {
        let sig = c.sign(&key, message).unwrap();
        assert_eq!(sig.len(), 64);
        assert_verifies(&key, message, &sig);
    }
    let r = c.sign_prehash(&key, &[0u8; 64]);
    assert!(
        matches!(
            r,
            Err(CustodyError::PrehashNotApplicable {
                scheme: SignatureScheme::Ed25519
            })
        ),
        "{r:?}"
    );
    let again = common::pkcs11_custody().find(key.uri()).unwrap();
    assert_eq!(again, key);
    c.destroy(&key).unwrap();
    let r = c.sign(&key, b"gone");
    assert!(matches!(r, Err(CustodyError::KeyNotFound(_))), "{r:?}");
}

#[test]
fn ed25519_import_signs_rfc8032_test_1_exactly() {
    // RFC 8032 §7.1 TEST 1: EdDSA is deterministic, so the token's
    // signature must be the RFC's, byte for byte.
    let c = common::pkcs11_custody();
    let secret = unhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
    let key = c.import(KeySpec::ED25519, &secret).unwrap();
    assert_eq!(
        key.public_key().as_bytes(),
        unhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    );
    assert_protected(&c, &key, false);
    let sig = c.sign(&key, b"").unwrap();
    assert_eq!(
        sig,
        unhex(
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        )
    );
    c.destroy(&key).unwrap();
    let r = c.import(KeySpec::ED25519, &secret[..31]);
    assert!(
        matches!(r, Err(CustodyError::InvalidPrivateKey(s)) if s == KeySpec::ED25519),
        "{r:?}"
    );
}

#[test]
fn ed25519_key_with_the_curve_named_as_a_printable_string_is_found() {
    // PKCS#11 v3.0 allows CKA_EC_PARAMS = PrintableString "edwards25519";
    // a key another tool made that way is an ed25519 key to hsmls, if the
    // token accepts the encoding.
    let c = common::pkcs11_custody();
    let mut name = vec![0x13, 0x0c];
    name.extend_from_slice(b"edwards25519");
    let mut id = vec![0u8; 16];
    OsRng.fill_bytes(&mut id);
    let generated = c
        .with_session(|s| {
            s.generate_key_pair(
                &Mechanism::EccEdwardsKeyPairGen,
                &[
                    Attribute::EcParams(name.clone()),
                    Attribute::Token(false),
                    Attribute::Id(id.clone()),
                ],
                &[
                    Attribute::Token(false),
                    Attribute::Sensitive(true),
                    Attribute::Sign(true),
                    Attribute::Id(id.clone()),
                ],
            )
        })
        .unwrap();
    let (public, private) = generated.expect("SoftHSM 2.6.1 accepts the curve name");
    let uri = Pkcs11Uri {
        token: Some("hsmls-test".into()),
        id: Some(id),
        object_type: Some("private".into()),
        ..Pkcs11Uri::default()
    }
    .format();
    let key = c.find(&uri).unwrap();
    assert_eq!(key.spec(), KeySpec::ED25519);
    let sig = c.sign(&key, b"named curve").unwrap();
    assert_verifies(&key, b"named curve", &sig);
    c.with_session(|s| {
        s.destroy_object(private).unwrap();
        s.destroy_object(public).unwrap();
    })
    .unwrap();
}

#[test]
fn p384_and_p521_hpke_keys_agree_with_software_keys_both_ways() {
    let c = common::pkcs11_custody();
    let software = SoftwareCustody::new();
    for spec in NIST_HPKE {
        let KeySpec::Kem(kem) = spec else {
            unreachable!()
        };
        let generated = c.generate(spec).unwrap();
        let imported = c.import(spec, &random_private(spec)).unwrap();
        for (key, made_in_token) in [(generated, true), (imported, false)] {
            assert_protected(&c, &key, made_in_token);
            for _ in 0..4 {
                let peer = software.generate(spec).unwrap();
                let ours = c.dh(&key, peer.public_key().as_bytes()).unwrap();
                let theirs = software.dh(&peer, key.public_key().as_bytes()).unwrap();
                assert_eq!(ours.len(), kem.n_dh(), "{spec}");
                assert_eq!(ours.as_bytes(), theirs.as_bytes(), "{spec}");
                software.destroy(&peer).unwrap();
            }
            // The wrapped key is unwrapped again by a fresh custody.
            let fresh = common::pkcs11_custody();
            let again = fresh.find(key.uri()).unwrap();
            assert_eq!(again.public_key(), key.public_key());
            let peer = software.generate(spec).unwrap();
            assert_eq!(
                fresh
                    .dh(&again, peer.public_key().as_bytes())
                    .unwrap()
                    .as_bytes(),
                software
                    .dh(&peer, key.public_key().as_bytes())
                    .unwrap()
                    .as_bytes()
            );
            // A point of the other NIST curve is refused before the token.
            let other = if spec == NIST_HPKE[0] {
                NIST_HPKE[1]
            } else {
                NIST_HPKE[0]
            };
            let wrong = software.generate(other).unwrap();
            let r = c.dh(&key, wrong.public_key().as_bytes());
            assert!(matches!(r, Err(CustodyError::InvalidPublicKey(_))), "{r:?}");
            c.destroy(&key).unwrap();
            let r = c.dh(&key, peer.public_key().as_bytes());
            assert!(matches!(r, Err(CustodyError::KeyNotFound(_))), "{r:?}");
        }
    }
}

#[test]
fn p521_dh_values_keep_their_leading_zero_bytes() {
    // A P-521 x-coordinate is below 2^521: its first byte of 66 is 0x00 or
    // 0x01, so about half the values start with a zero byte, which must be
    // kept (Ndh = 66).
    let c = common::pkcs11_custody();
    let software = SoftwareCustody::new();
    let spec = KeySpec::DHKEM_P521_HKDF_SHA512;
    let key = c.generate(spec).unwrap();
    let mut leading_zero = 0;
    for _ in 0..24 {
        let peer = software.generate(spec).unwrap();
        let ours = c.dh(&key, peer.public_key().as_bytes()).unwrap();
        let theirs = software.dh(&peer, key.public_key().as_bytes()).unwrap();
        assert_eq!(ours.len(), 66);
        assert_eq!(ours.as_bytes(), theirs.as_bytes());
        leading_zero += usize::from(ours[0] == 0);
    }
    // (1/2)^24 chance of none.
    assert!(leading_zero > 0);
    c.destroy(&key).unwrap();
}

#[test]
fn x25519_keys_are_refused_by_the_token_with_its_reason() {
    let c = common::pkcs11_custody();
    let spec = KeySpec::DHKEM_X25519_HKDF_SHA256;
    assert!(c.capabilities().summary.contains("X25519"));
    let r = c.generate(spec);
    assert!(
        matches!(&r, Err(CustodyError::Unsupported { spec: s, reason }) if *s == spec && reason.contains("SoftHSM")),
        "{r:?}"
    );
}

#[test]
fn ed25519_object_that_cannot_sign_is_named_as_such() {
    let c = common::pkcs11_custody();
    let mut id = vec![0u8; 16];
    OsRng.fill_bytes(&mut id);
    let (public, private) = c
        .with_session(|s| {
            s.generate_key_pair(
                &Mechanism::EccEdwardsKeyPairGen,
                &[
                    Attribute::EcParams(vec![0x06, 0x03, 0x2b, 0x65, 0x70]),
                    Attribute::Token(false),
                    Attribute::Id(id.clone()),
                ],
                &[
                    Attribute::Token(false),
                    Attribute::Sign(false),
                    Attribute::Derive(false),
                    Attribute::Id(id.clone()),
                ],
            )
        })
        .unwrap()
        .unwrap();
    let uri = Pkcs11Uri {
        token: Some("hsmls-test".into()),
        id: Some(id),
        ..Pkcs11Uri::default()
    }
    .format();
    let r = c.find(&uri);
    assert!(
        matches!(
            &r,
            Err(CustodyError::UnsupportedKeyObject {
                reason: KeyObjectFault::NeitherSignNorDerive,
                ..
            })
        ),
        "{r:?}"
    );
    c.with_session(|s| {
        s.destroy_object(private).unwrap();
        s.destroy_object(public).unwrap();
    })
    .unwrap();
}

fn router(hpke_keys: HpkeKeyHome) -> CustodyRouter {
    CustodyRouter::new(Arc::new(common::pkcs11_custody()), hpke_keys)
}

#[test]
fn router_refuses_x25519_hpke_keys_by_default() {
    let r = router(HpkeKeyHome::Token);
    let x25519 = KeySpec::DHKEM_X25519_HKDF_SHA256;
    assert!(!r.capabilities().supports(x25519));
    for result in [r.generate(x25519), r.import(x25519, &[7u8; 32])] {
        assert!(
            matches!(
                &result,
                Err(CustodyError::KeyHomeRefused { spec, purpose: KeyPurpose::Hpke, reason })
                    if *spec == x25519 && reason.contains("CKM_EC_MONTGOMERY_KEY_PAIR_GEN")
            ),
            "{result:?}"
        );
    }
    let e = r.generate(x25519).unwrap_err().to_string();
    assert!(
        e.contains("0x0001, 0x0003") && e.contains("hpke_keys"),
        "{e}"
    );
    // Everything the token holds goes to the token.
    for spec in KeySpec::ALL {
        if spec != x25519 {
            assert_eq!(r.home(spec).unwrap(), KeyHome::Token, "{spec}");
        }
    }
    // No software backend: a software locator names no key of this router.
    let f = r.find("software:0");
    assert!(matches!(f, Err(CustodyError::KeyNotFound(_))), "{f:?}");
}

#[test]
fn router_keeps_x25519_hpke_keys_in_software_when_configured() {
    let r = router(HpkeKeyHome::TokenElseSoftware);
    let x25519 = KeySpec::DHKEM_X25519_HKDF_SHA256;
    assert_eq!(r.home(x25519).unwrap(), KeyHome::Software);
    assert_eq!(r.home(KeySpec::ED25519).unwrap(), KeyHome::Token);
    assert!(r.capabilities().supports(x25519));

    // Suite 0x0001: the signature key in the token, the HPKE key in memory.
    let sig = r.generate(KeySpec::ED25519).unwrap();
    assert!(sig.uri().starts_with("pkcs11:"), "{}", sig.uri());
    let a = r.key_attributes(&sig).unwrap();
    assert!(a.sensitive && !a.extractable && a.token_object);
    let s = r.sign(&sig, b"suite 1").unwrap();
    assert_verifies(&sig, b"suite 1", &s);

    let hpke = r.generate(x25519).unwrap();
    assert!(hpke.uri().starts_with("software:"), "{}", hpke.uri());
    assert!(r.key_attributes(&hpke).unwrap().extractable);
    let software = SoftwareCustody::new();
    let peer = software.generate(x25519).unwrap();
    assert_eq!(
        r.dh(&hpke, peer.public_key().as_bytes())
            .unwrap()
            .as_bytes(),
        software
            .dh(&peer, hpke.public_key().as_bytes())
            .unwrap()
            .as_bytes()
    );
    // find and destroy go to the backend that made each key.
    assert_eq!(r.find(hpke.uri()).unwrap(), hpke);
    assert_eq!(r.find(sig.uri()).unwrap(), sig);
    r.destroy(&hpke).unwrap();
    r.destroy(&sig).unwrap();
    for uri in [hpke.uri(), sig.uri()] {
        let f = r.find(uri);
        assert!(matches!(f, Err(CustodyError::KeyNotFound(_))), "{f:?}");
    }
    // HPKE keys the token can hold stay in the token.
    let p384 = r.generate(KeySpec::DHKEM_P384_HKDF_SHA384).unwrap();
    assert!(p384.uri().starts_with("pkcs11:"), "{}", p384.uri());
    r.destroy(&p384).unwrap();
}

/// Signature keys never go to software, whatever `hpke_keys` says: the
/// real token, wrapped to report (as a token without `CKM_EDDSA` would)
/// that it holds no Ed25519 keys, gets the refusal.
#[test]
fn router_never_sends_signature_keys_to_software() {
    #[derive(Debug)]
    struct NoEd25519(Pkcs11Custody, hsmls_custody::Capabilities);
    impl KeyCustody for NoEd25519 {
        fn capabilities(&self) -> &hsmls_custody::Capabilities {
            &self.1
        }
        fn generate(&self, spec: KeySpec) -> Result<KeyRef, CustodyError> {
            self.0.generate(spec)
        }
        fn import(&self, spec: KeySpec, k: &[u8]) -> Result<KeyRef, CustodyError> {
            self.0.import(spec, k)
        }
        fn sign_prehash(&self, key: &KeyRef, d: &[u8]) -> Result<Vec<u8>, CustodyError> {
            self.0.sign_prehash(key, d)
        }
        fn sign(&self, key: &KeyRef, m: &[u8]) -> Result<Vec<u8>, CustodyError> {
            self.0.sign(key, m)
        }
        fn dh(&self, key: &KeyRef, p: &[u8]) -> Result<hsmls_custody::SharedSecret, CustodyError> {
            self.0.dh(key, p)
        }
        fn destroy(&self, key: &KeyRef) -> Result<(), CustodyError> {
            self.0.destroy(key)
        }
        fn find(&self, uri: &str) -> Result<KeyRef, CustodyError> {
            self.0.find(uri)
        }
        fn key_attributes(
            &self,
            key: &KeyRef,
        ) -> Result<hsmls_custody::KeyAttributes, CustodyError> {
            self.0.key_attributes(key)
        }
    }
    let token = common::pkcs11_custody();
    let specs = KeySpec::ALL
        .into_iter()
        .filter(|s| token.capabilities().supports(*s) && *s != KeySpec::ED25519)
        .collect();
    let caps = hsmls_custody::Capabilities::new(specs, "no CKM_EDDSA".into());
    let r = CustodyRouter::new(
        Arc::new(NoEd25519(token, caps)),
        HpkeKeyHome::TokenElseSoftware,
    );
    let e = r.generate(KeySpec::ED25519);
    assert!(
        matches!(
            &e,
            Err(CustodyError::KeyHomeRefused {
                spec: KeySpec::ED25519,
                purpose: KeyPurpose::Signature,
                ..
            })
        ),
        "{e:?}"
    );
}

/// With the token's sealing key, an X25519 HPKE key kept in software
/// carries its private key sealed into its URI: another router on the
/// same token (a restarted process) finds it and gets the same DH; a
/// router with another sealing key, or an altered URI, does not.
#[test]
fn router_seals_software_hpke_keys_into_their_uris() {
    let token = Arc::new(common::pkcs11_custody());
    let sealer: Arc<dyn StateSealer> = Arc::new(token.state_sealer().unwrap());
    let r = CustodyRouter::new(token.clone(), HpkeKeyHome::TokenElseSoftware)
        .with_sealed_software_keys(sealer.clone());
    let x25519 = KeySpec::DHKEM_X25519_HKDF_SHA256;
    let hpke = r.generate(x25519).unwrap();
    assert!(
        hpke.uri().starts_with("software-sealed:0020:"),
        "{}",
        hpke.uri()
    );
    let peer = SoftwareCustody::new().generate(x25519).unwrap();
    let dh = r.dh(&hpke, peer.public_key().as_bytes()).unwrap();

    // A restarted process: a new router, the same token key.
    let again = CustodyRouter::new(token.clone(), HpkeKeyHome::TokenElseSoftware)
        .with_sealed_software_keys(sealer.clone());
    let found = again.find(hpke.uri()).unwrap();
    assert_eq!(found, hpke);
    assert_eq!(
        again
            .dh(&found, peer.public_key().as_bytes())
            .unwrap()
            .as_bytes(),
        dh.as_bytes()
    );
    // Another sealing key (another token's) opens nothing.
    let other: Arc<dyn StateSealer> = Arc::new(hsmls_custody::SoftwareSealer::generate());
    let foreign = CustodyRouter::new(token.clone(), HpkeKeyHome::TokenElseSoftware)
        .with_sealed_software_keys(other);
    let f = foreign.find(hpke.uri());
    assert!(matches!(f, Err(CustodyError::SealedDataRejected)), "{f:?}");
    // One changed hex digit of the sealed key.
    let mut altered = hpke.uri().to_owned();
    let last = altered.pop().unwrap();
    altered.push(if last == '0' { '1' } else { '0' });
    let f = again.find(&altered);
    assert!(matches!(f, Err(CustodyError::SealedDataRejected)), "{f:?}");
    // Without the sealer (the default), software keys are plain.
    let plain = router(HpkeKeyHome::TokenElseSoftware)
        .generate(x25519)
        .unwrap();
    assert!(plain.uri().starts_with("software:"), "{}", plain.uri());
    r.destroy(&hpke).unwrap();
    again.destroy(&found).unwrap();
}
