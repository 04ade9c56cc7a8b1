//! Tests of the PKCS#11 backend against the real SoftHSM test token
//! (`HSMLS_PKCS11_CONFIG`, set by `scripts/test.sh`): key attributes as the
//! token reports them, restarts, wrapped HPKE keys, and bad input.

mod common;

use common::{raw_attributes, tuple};

use std::path::PathBuf;

use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use hsmls_custody::pkcs11::{PinSource, Pkcs11Uri};
use hsmls_custody::{
    CustodyError, KeyCustody, KeyObjectFault, KeyPurpose, KeyRef, KeySpec, Pkcs11Custody,
    PointFault, PublicKey,
};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand_core::{OsRng, RngCore};

fn peer() -> (p256::SecretKey, Vec<u8>) {
    let s = p256::SecretKey::random(&mut OsRng);
    let p = s.public_key().to_encoded_point(false).as_bytes().to_vec();
    (s, p)
}

fn software_dh(peer: &p256::SecretKey, key: &KeyRef) -> [u8; 32] {
    let public = p256::PublicKey::from_sec1_bytes(key.public_key().as_bytes()).unwrap();
    (*p256::ecdh::diffie_hellman(peer.to_nonzero_scalar(), public.as_affine()).raw_secret_bytes())
        .into()
}

fn digest() -> [u8; 32] {
    let mut d = [0u8; 32];
    OsRng.fill_bytes(&mut d);
    d
}

const SIG: KeySpec = KeySpec::ECDSA_SECP256R1_SHA256;
const HPKE: KeySpec = KeySpec::DHKEM_P256_HKDF_SHA256;

#[test]
fn capabilities_report_both_key_kinds_on_softhsm() {
    let c = common::pkcs11_custody();
    let caps = c.capabilities();
    // Every key spec but X25519's: SoftHSM 2.6.1 has no Montgomery ECDH.
    let expected: Vec<KeySpec> = KeySpec::ALL
        .into_iter()
        .filter(|s| *s != KeySpec::DHKEM_X25519_HKDF_SHA256)
        .collect();
    assert_eq!(caps.key_specs, expected, "{}", caps.summary);
    assert!(caps.summary.contains("SoftHSM"), "{}", caps.summary);
}

#[test]
fn private_keys_are_sensitive_not_extractable_and_unreadable() {
    let c = common::pkcs11_custody();
    for spec in [SIG, HPKE] {
        let generated = c.generate(spec).unwrap();
        let imported = c
            .import(spec, &p256::SecretKey::random(&mut OsRng).to_bytes())
            .unwrap();
        for (key, made_in_token) in [(generated, true), (imported, false)] {
            let a = c.key_attributes(&key).unwrap();
            // key_attributes says what the token says.
            assert_eq!(tuple(&a), raw_attributes(&c, &key), "{spec}");
            assert!(a.sensitive, "{spec} key is not sensitive");
            assert!(!a.extractable, "{spec} key is extractable");
            assert!(!a.value_readable, "{spec} key's CKA_VALUE is readable");
            // Sensitive from birth only if generated in the token; never
            // extractable only for generated signature keys (an HPKE key
            // was extractable for its one wrap).
            assert_eq!(a.always_sensitive, made_in_token, "{spec}");
            assert_eq!(a.never_extractable, made_in_token && spec == SIG, "{spec}");
            // Signature keys are token objects; HPKE keys session objects.
            assert_eq!(a.token_object, spec == SIG, "{spec}");

            // get_attributes silently drops the unreadable CKA_VALUE.
            let handle = c.private_key_handle(&key).unwrap();
            let values = c
                .with_session(|s| s.get_attributes(handle, &[AttributeType::Value]))
                .unwrap()
                .unwrap();
            assert!(values.is_empty(), "CKA_VALUE was returned");
            c.destroy(&key).unwrap();
        }
    }
}

#[test]
fn hpke_key_cannot_be_wrapped_again() {
    // The HPKE key was extractable for its one wrap; the token must now
    // refuse to wrap it (CKA_EXTRACTABLE true → false was honoured).
    let c = common::pkcs11_custody();
    let key = c.generate(HPKE).unwrap();
    let handle = c.private_key_handle(&key).unwrap();
    let wrapping = c.wrapping_key_handle().expect("no wrapping key");
    let result = c
        .with_session(|s| s.wrap_key(&Mechanism::AesKeyWrapPad, wrapping, handle))
        .unwrap();
    assert!(
        matches!(result, Err(Error::Pkcs11(RvError::KeyUnextractable, _))),
        "{result:?}"
    );
    c.destroy(&key).unwrap();
}

#[test]
fn blob_cannot_be_unwrapped_as_extractable_even_with_the_pin() {
    // An attacker holding the PIN and a blob tries to unwrap it with a
    // template of their own; the wrapping key's CKA_UNWRAP_TEMPLATE refuses.
    let c = common::pkcs11_custody();
    let key = c.generate(HPKE).unwrap();
    let blob = Pkcs11Uri::parse(key.uri()).unwrap().wrapped.unwrap();
    let wrapping = c.wrapping_key_handle().unwrap();
    let unwrap = |extractable: bool, sensitive: bool| {
        c.with_session(|s| {
            s.unwrap_key(
                &Mechanism::AesKeyWrapPad,
                wrapping,
                &blob,
                &[
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::KeyType(KeyType::EC),
                    Attribute::Token(false),
                    Attribute::Sensitive(sensitive),
                    Attribute::Extractable(extractable),
                    Attribute::Derive(true),
                ],
            )
        })
        .unwrap()
    };
    for (extractable, sensitive) in [(true, true), (false, false), (true, false)] {
        let r = unwrap(extractable, sensitive);
        assert!(
            matches!(r, Err(Error::Pkcs11(RvError::TemplateInconsistent, _))),
            "unwrap extractable={extractable} sensitive={sensitive}: {r:?}"
        );
    }
    // The policy's own template is accepted (the key is usable, not exportable).
    let ok = unwrap(false, true).expect("unwrap with the policy template");
    c.with_session(|s| s.destroy_object(ok)).unwrap().unwrap();

    // The wrapping key cannot decrypt the blob, nor be modified.
    let r = c
        .with_session(|s| s.decrypt(&Mechanism::AesKeyWrapPad, wrapping, &blob))
        .unwrap();
    assert!(
        matches!(r, Err(Error::Pkcs11(RvError::KeyFunctionNotPermitted, _))),
        "the wrapping key decrypted a blob: {r:?}"
    );
    let r = c
        .with_session(|s| s.update_attributes(wrapping, &[Attribute::Decrypt(true)]))
        .unwrap();
    assert!(
        matches!(r, Err(Error::Pkcs11(RvError::ActionProhibited, _))),
        "the wrapping key was modified: {r:?}"
    );
    c.destroy(&key).unwrap();
}

#[test]
fn signature_key_found_again_from_a_fresh_custody() {
    let first = common::pkcs11_custody();
    let key = first.generate(SIG).unwrap();
    let uri = key.uri().to_owned();
    drop(first);

    let second = common::pkcs11_custody();
    let found = second.find(&uri).unwrap();
    assert_eq!(found.public_key(), key.public_key());
    assert_eq!(found.spec(), SIG);
    let d = digest();
    let der = second.sign_prehash(&found, &d).unwrap();
    common::assert_valid_low_s_der(key.public_key(), &d, &der);
    // The old KeyRef works too.
    let der = second.sign_prehash(&key, &d).unwrap();
    common::assert_valid_low_s_der(key.public_key(), &d, &der);
    second.destroy(&found).unwrap();
}

#[test]
fn signature_key_found_by_object_label_alone() {
    let c = common::pkcs11_custody();
    let key = c.generate(SIG).unwrap();
    let label = Pkcs11Uri::parse(key.uri()).unwrap().object.unwrap();
    let found = c
        .find(&format!(
            "pkcs11:token=hsmls-test;object={label};type=private"
        ))
        .unwrap();
    assert_eq!(found.public_key(), key.public_key());
    assert_eq!(found.uri(), key.uri());
    c.destroy(&key).unwrap();
}

#[test]
fn wrapped_hpke_key_survives_restart() {
    let (peer_secret, peer_public) = peer();
    let first = common::pkcs11_custody();
    let key = first.generate(HPKE).unwrap();
    let before = first.dh(&key, &peer_public).unwrap();
    drop(first); // closes the sessions: the session object is gone

    let second = common::pkcs11_custody();
    let found = second.find(key.uri()).unwrap();
    assert_eq!(found.public_key(), key.public_key());
    let after = second.dh(&found, &peer_public).unwrap();
    assert_eq!(before.as_bytes(), after.as_bytes());
    assert_eq!(after.as_bytes(), software_dh(&peer_secret, &key));
    // Unwrapped again: sensitive and not extractable, a session object,
    // and (made by C_UnwrapKey) neither always sensitive nor never
    // extractable.
    let a = second.key_attributes(&found).unwrap();
    assert_eq!(tuple(&a), raw_attributes(&second, &found));
    assert_eq!(
        tuple(&a),
        (true, false, false, false, false, false),
        "{a:?}"
    );
    second.destroy(&found).unwrap();

    // A third instance can use the KeyRef directly (unwraps on demand).
    let third = common::pkcs11_custody();
    assert_eq!(
        third.dh(&key, &peer_public).unwrap().as_bytes(),
        before.as_bytes()
    );
}

#[test]
fn tampered_wrapped_key_is_rejected() {
    let c = common::pkcs11_custody();
    let key = c.generate(HPKE).unwrap();
    let other = c.generate(HPKE).unwrap();
    let fresh = common::pkcs11_custody();

    let mut u = Pkcs11Uri::parse(key.uri()).unwrap();
    if let Some(w) = u.wrapped.as_mut() {
        w[10] ^= 0x80;
    }
    assert!(matches!(
        fresh.find(&u.format()),
        Err(CustodyError::InvalidUri(_))
    ));

    // The right blob with another key's public key.
    let mut u = Pkcs11Uri::parse(key.uri()).unwrap();
    u.public = Some(other.public_key().as_bytes().to_vec());
    assert!(matches!(
        fresh.find(&u.format()),
        Err(CustodyError::InvalidUri(_))
    ));

    // A wrapping key that is not in the token.
    let mut u = Pkcs11Uri::parse(key.uri()).unwrap();
    u.wrapping_key_id = Some(vec![0xee; 16]);
    assert!(matches!(
        fresh.find(&u.format()),
        Err(CustodyError::KeyNotFound(_))
    ));
}

#[test]
fn session_pool_stays_within_its_size() {
    let c = std::sync::Arc::new(common::pkcs11_custody());
    let key = c.generate(SIG).unwrap();
    let threads: Vec<_> = (0..12)
        .map(|_| {
            let (c, key) = (c.clone(), key.clone());
            std::thread::spawn(move || {
                for _ in 0..20 {
                    c.sign_prehash(&key, &digest()).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let open = c.open_sessions();
    assert!(
        (1..=common::pkcs11_config().pool_size).contains(&open),
        "{open} sessions"
    );
    c.destroy(&key).unwrap();
}

// ---- bad input: one test each, each with its error variant ----------------

#[test]
fn wrong_pin_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let pin_file = dir.path().join("wrong.pin");
    std::fs::write(&pin_file, "not-the-pin\n").unwrap();
    let mut config = common::pkcs11_config();
    config.pin = PinSource::File(pin_file);
    let err = Pkcs11Custody::open(&config).unwrap_err();
    assert!(matches!(err, CustodyError::PinIncorrect), "{err}");
    assert!(!err.to_string().contains("not-the-pin"));
}

#[test]
fn missing_pin_source_is_a_config_error() {
    let mut config = common::pkcs11_config();
    config.pin = PinSource::File(PathBuf::from("/nonexistent/hsmls/user.pin"));
    assert!(matches!(
        Pkcs11Custody::open(&config),
        Err(CustodyError::Config(_))
    ));
    config.pin = PinSource::Env("HSMLS_TEST_PIN_THAT_IS_NEVER_SET".into());
    assert!(matches!(
        Pkcs11Custody::open(&config),
        Err(CustodyError::Config(_))
    ));
}

#[test]
fn missing_module_is_rejected() {
    let mut config = common::pkcs11_config();
    config.module = PathBuf::from("/nonexistent/libpkcs11-missing.so");
    let err = Pkcs11Custody::open(&config).unwrap_err();
    assert!(matches!(err, CustodyError::ModuleLoad { .. }), "{err}");
}

#[test]
fn a_file_that_is_no_module_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("libfake.so");
    std::fs::write(&fake, b"not a shared library").unwrap();
    let mut config = common::pkcs11_config();
    config.module = fake;
    let err = Pkcs11Custody::open(&config).unwrap_err();
    assert!(matches!(err, CustodyError::ModuleLoad { .. }), "{err}");
}

#[test]
fn unknown_token_label_is_rejected() {
    let mut config = common::pkcs11_config();
    config.token_label = "no-such-token".into();
    let err = Pkcs11Custody::open(&config).unwrap_err();
    assert!(
        matches!(&err, CustodyError::TokenNotFound(l) if l == "no-such-token"),
        "{err}"
    );
}

#[test]
fn uri_naming_no_key_is_not_found() {
    let c = common::pkcs11_custody();
    for uri in [
        "pkcs11:token=hsmls-test;object=hsmls-no-such-key;type=private".to_owned(),
        format!("pkcs11:token=hsmls-test;id={}", "%ab".repeat(16)),
        // A key of another token.
        "pkcs11:token=another-token;object=k;type=private".to_owned(),
    ] {
        let err = c.find(&uri).unwrap_err();
        assert!(matches!(err, CustodyError::KeyNotFound(_)), "{uri}: {err}");
    }
    for uri in ["pkcs11:token=hsmls-test", "software:1", "pkcs11:id=%zz"] {
        let err = c.find(uri).unwrap_err();
        assert!(matches!(err, CustodyError::InvalidUri(_)), "{uri}: {err}");
    }
}

#[test]
fn off_curve_peer_point_is_rejected() {
    let c = common::pkcs11_custody();
    let key = c.generate(HPKE).unwrap();
    let (_, mut point) = peer();
    point[40] ^= 0x01;
    let err = c.dh(&key, &point).unwrap_err();
    assert!(
        matches!(err, CustodyError::InvalidPublicKey(PointFault::NotOnCurve)),
        "{err}"
    );
    c.destroy(&key).unwrap();
}

#[test]
fn key_used_for_the_wrong_purpose_is_refused_by_the_backend() {
    // A KeyRef that lies about its purpose: the backend checks the object.
    let c = common::pkcs11_custody();
    let sig = c.generate(SIG).unwrap();
    let hpke = c.generate(HPKE).unwrap();
    let lying_sig = KeyRef::new(
        PublicKey::new(HPKE, sig.public_key().as_bytes()).unwrap(),
        sig.uri().into(),
    );
    let err = c.dh(&lying_sig, &peer().1).unwrap_err();
    assert!(
        matches!(
            err,
            CustodyError::WrongPurpose {
                actual: KeyPurpose::Signature,
                ..
            }
        ),
        "{err}"
    );
    let lying_hpke = KeyRef::new(
        PublicKey::new(SIG, hpke.public_key().as_bytes()).unwrap(),
        hpke.uri().into(),
    );
    let err = c.sign_prehash(&lying_hpke, &digest()).unwrap_err();
    assert!(
        matches!(
            err,
            CustodyError::WrongPurpose {
                actual: KeyPurpose::Hpke,
                ..
            }
        ),
        "{err}"
    );
    // The same through a fresh instance (no cached handles).
    let fresh = common::pkcs11_custody();
    let err = fresh.dh(&lying_sig, &peer().1).unwrap_err();
    assert!(matches!(err, CustodyError::WrongPurpose { .. }), "{err}");
    c.destroy(&sig).unwrap();
    c.destroy(&hpke).unwrap();
}

#[test]
fn debug_output_shows_no_pin() {
    let config = common::pkcs11_config();
    let c = Pkcs11Custody::open(&config).unwrap();
    let pin = std::fs::read_to_string(match &config.pin {
        PinSource::File(p) => p.clone(),
        PinSource::Env(_) => return,
    })
    .unwrap();
    let shown = format!("{c:?} {config:?}");
    assert!(!shown.contains(pin.trim()), "{shown}");
}

#[test]
fn a_token_key_hsmls_cannot_use_is_named_as_such() {
    // Key objects made by another tool: a secp256k1 signing key, and a P-256 key
    // that can neither sign nor derive. Session objects, visible to the
    // custody's sessions, gone when the test's custody closes.
    let c = common::pkcs11_custody();
    let secp256k1 = vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];
    let p256 = vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let cases = [
        (secp256k1, true, KeyObjectFault::UnsupportedCurve),
        (p256, false, KeyObjectFault::NeitherSignNorDerive),
    ];
    for (params, sign, reason) in cases {
        let mut id = vec![0u8; 16];
        OsRng.fill_bytes(&mut id);
        let (public, private) = c
            .with_session(|s| {
                s.generate_key_pair(
                    &Mechanism::EccKeyPairGen,
                    &[
                        Attribute::EcParams(params.clone()),
                        Attribute::Token(false),
                        Attribute::Id(id.clone()),
                    ],
                    &[
                        Attribute::Token(false),
                        Attribute::Sensitive(true),
                        Attribute::Sign(sign),
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
            object_type: Some("private".into()),
            ..Pkcs11Uri::default()
        }
        .format();
        let err = c.find(&uri).unwrap_err();
        assert!(
            matches!(
                &err,
                CustodyError::UnsupportedKeyObject { uri: u, reason: r } if *u == uri && *r == reason
            ),
            "{err}"
        );
        c.with_session(|s| {
            s.destroy_object(private).unwrap();
            s.destroy_object(public).unwrap();
        })
        .unwrap();
    }
}
