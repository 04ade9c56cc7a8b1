//! One test-suite for the `KeyCustody` trait, instantiated for every backend:
//! the software backend, the PKCS#11 backend on the SoftHSM test token, the
//! PKCS#11 backend on the TPM 2.0 test token (swtpm through tpm2-pkcs11,
//! `scripts/setup-tpm.sh`: signature keys only, HPKE keys refused), and the
//! split `CustodyRouter` of `.tpm/pkcs11-split.toml` (signature keys in the
//! TPM, HPKE keys in SoftHSM). Every test runs for the keys of cipher suite
//! 0x0002 (`ecdsa_secp256r1_sha256`, `DHKEM(P-256, HKDF-SHA256)`).

mod common;

use std::sync::Arc;

use hsmls_custody::{
    CustodyError, KemAlgorithm, KeyCustody, KeyPurpose, KeyRef, KeySpec, PointFault,
    SignatureScheme, SoftwareCustody,
};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

/// Software DH from the peer's side: the x-coordinate of peer_secret · key.
fn software_dh(peer: &p256::SecretKey, key_public: &[u8]) -> [u8; 32] {
    let public = p256::PublicKey::from_sec1_bytes(key_public).unwrap();
    let shared = p256::ecdh::diffie_hellman(peer.to_nonzero_scalar(), public.as_affine());
    (*shared.raw_secret_bytes()).into()
}

fn random_digest() -> [u8; 32] {
    let mut d = [0u8; 32];
    OsRng.fill_bytes(&mut d);
    d
}

fn uncompressed(secret: &p256::SecretKey) -> Vec<u8> {
    secret
        .public_key()
        .to_encoded_point(false)
        .as_bytes()
        .to_vec()
}

const SIG: KeySpec = KeySpec::ECDSA_SECP256R1_SHA256;
const HPKE: KeySpec = KeySpec::DHKEM_P256_HKDF_SHA256;

/// A fresh P-256 HPKE key of `c`, or, for a backend that holds none
/// (`holds` false: a TPM token without `C_DeriveKey`), `None` after
/// checking that `generate` and `import` refuse it with `Unsupported`.
fn hpke_key(c: &dyn KeyCustody, holds: bool) -> Option<KeyRef> {
    if holds {
        return Some(c.generate(HPKE).unwrap());
    }
    assert!(
        !c.capabilities().supports(HPKE),
        "{}",
        c.capabilities().summary
    );
    let scalar = p256::SecretKey::random(&mut OsRng).to_bytes();
    for r in [c.generate(HPKE), c.import(HPKE, &scalar)] {
        assert!(
            matches!(&r, Err(CustodyError::Unsupported { spec, reason })
                if *spec == HPKE && reason.contains("CKM_ECDH1_DERIVE")),
            "{r:?}"
        );
    }
    None
}

/// `$protected`: whether the backend reports its keys as protected (a token:
/// sensitive, not extractable, value unreadable) or not (process memory);
/// `$hpke`: whether it holds P-256 HPKE keys; `$imports`: whether it
/// imports signature keys (a TPM token does neither: the tests then check
/// the refusals instead).
macro_rules! custody_suite {
    ($backend:ident, $make:expr, $protected:expr, $hpke:expr, $imports:expr, $serial:expr) => {
        mod $backend {
            use super::*;

            /// The TPM for the test's duration, when the backend uses it
            /// (see `common::tpm_serial`).
            fn serial() -> Option<std::sync::MutexGuard<'static, ()>> {
                $serial.then(common::tpm_serial)
            }

            fn custody() -> impl KeyCustody + 'static {
                $make
            }

            const HOLDS_HPKE: bool = $hpke;
            /// Whether the backend imports signature keys (a TPM does not).
            const IMPORTS_SIGNATURE_KEYS: bool = $imports;

            /// The key specs the backend holds.
            fn specs() -> Vec<KeySpec> {
                if HOLDS_HPKE { vec![SIG, HPKE] } else { vec![SIG] }
            }

            #[test]
            fn capabilities_list_the_suite_0x0002_keys() {
                let _serial = serial();
                let c = custody();
                assert!(c.capabilities().supports(SIG), "{}", c.capabilities().summary);
                assert_eq!(
                    c.capabilities().supports(HPKE),
                    HOLDS_HPKE,
                    "{}",
                    c.capabilities().summary
                );
            }

            #[test]
            fn keys_carry_their_spec() {
                let _serial = serial();
                let c = custody();
                let sig = c.generate(SIG).unwrap();
                assert_eq!(sig.spec(), SIG);
                assert_eq!(sig.public_key().spec(), SIG);
                assert_eq!(sig.purpose(), KeyPurpose::Signature);
                assert_eq!(sig.public_key().as_bytes().len(), SIG.public_key_len());
                c.destroy(&sig).unwrap();
                if let Some(hpke) = hpke_key(&c, HOLDS_HPKE) {
                    assert_eq!(hpke.spec(), HPKE);
                    assert_eq!(hpke.public_key().spec(), HPKE);
                    assert_eq!(hpke.purpose(), KeyPurpose::Hpke);
                    assert_eq!(hpke.public_key().as_bytes().len(), HPKE.public_key_len());
                    c.destroy(&hpke).unwrap();
                }
            }

            #[test]
            fn signature_verifies_with_p256_and_is_low_s_der() {
                let _serial = serial();
                let c = custody();
                let key = c.generate(SIG).unwrap();
                // 24 signatures: a token's raw signatures are high-S half the
                // time, so normalisation is exercised.
                for _ in 0..24 {
                    let digest = random_digest();
                    let der = c.sign_prehash(&key, &digest).unwrap();
                    common::assert_valid_low_s_der(key.public_key(), &digest, &der);
                }
                c.destroy(&key).unwrap();
            }

            #[test]
            fn whole_message_signature_is_ecdsa_over_its_sha256() {
                let _serial = serial();
                use p256::ecdsa::signature::Verifier;
                let c = custody();
                let key = c.generate(SIG).unwrap();
                let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(key.public_key().as_bytes())
                    .unwrap();
                for message in [&b""[..], b"hsmls", &[0xa5; 5000]] {
                    let der = c.sign(&key, message).unwrap();
                    let sig = p256::ecdsa::Signature::from_der(&der).unwrap();
                    // p256's Verifier hashes the message with SHA-256.
                    vk.verify(message, &sig).unwrap();
                    let digest: [u8; 32] = Sha256::digest(message).into();
                    common::assert_valid_low_s_der(key.public_key(), &digest, &der);
                    assert!(vk.verify(b"another message", &sig).is_err());
                }
                assert_eq!(
                    SignatureScheme::EcdsaSecp256r1Sha256.prehash(b"hsmls"),
                    Some(Sha256::digest(b"hsmls").to_vec())
                );
                c.destroy(&key).unwrap();
            }

            #[test]
            fn prehash_of_the_wrong_length_is_refused() {
                let _serial = serial();
                let c = custody();
                let key = c.generate(SIG).unwrap();
                for len in [0, 20, 31, 33, 48, 64] {
                    let err = c.sign_prehash(&key, &vec![7u8; len]).unwrap_err();
                    assert!(
                        matches!(
                            err,
                            CustodyError::PrehashLength {
                                scheme: SignatureScheme::EcdsaSecp256r1Sha256,
                                expected: 32,
                                actual,
                            } if actual == len
                        ),
                        "{len}: {err}"
                    );
                }
                c.destroy(&key).unwrap();
            }

            #[test]
            fn signature_does_not_verify_for_another_digest() {
                let _serial = serial();
                use p256::ecdsa::signature::hazmat::PrehashVerifier;
                let c = custody();
                let key = c.generate(SIG).unwrap();
                let der = c.sign_prehash(&key, &Sha256::digest(b"one")).unwrap();
                let sig = p256::ecdsa::Signature::from_der(&der).unwrap();
                let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(key.public_key().as_bytes())
                    .unwrap();
                assert!(vk.verify_prehash(&Sha256::digest(b"two"), &sig).is_err());
                c.destroy(&key).unwrap();
            }

            #[test]
            fn ecdh_equals_software_dh() {
                let _serial = serial();
                let c = custody();
                let Some(key) = hpke_key(&c, HOLDS_HPKE) else {
                    return;
                };
                for _ in 0..4 {
                    let peer = p256::SecretKey::random(&mut OsRng);
                    let dh = c.dh(&key, &uncompressed(&peer)).unwrap();
                    assert_eq!(dh.len(), KemAlgorithm::DhKemP256HkdfSha256.n_dh());
                    assert_eq!(
                        dh.as_bytes(),
                        software_dh(&peer, key.public_key().as_bytes())
                    );
                }
                c.destroy(&key).unwrap();
            }

            #[test]
            fn shared_secret_debug_shows_no_bytes() {
                let _serial = serial();
                let c = custody();
                let Some(key) = hpke_key(&c, HOLDS_HPKE) else {
                    return;
                };
                let dh = c.dh(&key, &uncompressed(&p256::SecretKey::random(&mut OsRng))).unwrap();
                let shown = format!("{dh:?}");
                assert_eq!(shown, "SharedSecret(32 bytes)");
                assert!(!shown.contains(&hex::encode(dh.as_bytes())));
                c.destroy(&key).unwrap();
            }

            #[test]
            fn attributes_say_how_the_key_is_kept() {
                let _serial = serial();
                let c = custody();
                for spec in specs() {
                    let key = c.generate(spec).unwrap();
                    let a = c.key_attributes(&key).unwrap();
                    let protected: bool = $protected;
                    assert_eq!(a.sensitive, protected, "{spec}: {a:?}");
                    assert_eq!(a.extractable, !protected, "{spec}: {a:?}");
                    assert_eq!(a.always_sensitive, protected, "{spec}: {a:?}");
                    assert_eq!(a.value_readable, !protected, "{spec}: {a:?}");
                    c.destroy(&key).unwrap();
                    assert!(matches!(
                        c.key_attributes(&key),
                        Err(CustodyError::KeyNotFound(_))
                    ));
                }
            }

            #[test]
            fn imported_keys_sign_and_agree_like_software() {
                let _serial = serial();
                let c = custody();
                let secret = p256::SecretKey::random(&mut OsRng);
                let scalar = secret.to_bytes();
                if IMPORTS_SIGNATURE_KEYS {
                    let sig = c.import(SIG, &scalar).unwrap();
                    assert_eq!(sig.spec(), SIG);
                    assert_eq!(sig.public_key().as_bytes(), &uncompressed(&secret)[..]);
                    let digest = random_digest();
                    let der = c.sign_prehash(&sig, &digest).unwrap();
                    common::assert_valid_low_s_der(sig.public_key(), &digest, &der);
                    c.destroy(&sig).unwrap();
                } else {
                    // A TPM creates its keys itself: a scalar from outside
                    // is refused, by name.
                    let r = c.import(SIG, &scalar);
                    assert!(
                        matches!(&r, Err(CustodyError::ImportRefused { spec, .. }) if *spec == SIG),
                        "{r:?}"
                    );
                }

                if !HOLDS_HPKE {
                    assert!(hpke_key(&c, false).is_none());
                    return;
                }
                let hpke = c.import(HPKE, &scalar).unwrap();
                assert_eq!(hpke.spec(), HPKE);
                assert_eq!(hpke.public_key().as_bytes(), &uncompressed(&secret)[..]);
                let peer = p256::SecretKey::random(&mut OsRng);
                let dh = c.dh(&hpke, &uncompressed(&peer)).unwrap();
                assert_eq!(dh.as_bytes(), software_dh(&secret, &uncompressed(&peer)));
                c.destroy(&hpke).unwrap();
            }

            #[test]
            fn import_rejects_invalid_scalars() {
                let _serial = serial();
                let c = custody();
                let order =
                    hex::decode("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551")
                        .unwrap();
                for bad in [vec![0u8; 32], order, vec![1u8; 31], vec![1u8; 33], vec![]] {
                    for spec in specs() {
                        assert!(
                            matches!(
                                c.import(spec, &bad),
                                Err(CustodyError::InvalidPrivateKey(s)) if s == spec
                            ),
                            "{spec} {}",
                            hex::encode(&bad)
                        );
                    }
                }
            }

            #[test]
            fn destroyed_key_is_gone() {
                let _serial = serial();
                let c = custody();
                let sig = c.generate(SIG).unwrap();
                let Some(hpke) = hpke_key(&c, HOLDS_HPKE) else {
                    c.destroy(&sig).unwrap();
                    for r in [
                        c.sign_prehash(&sig, &random_digest()),
                        c.sign(&sig, b"message"),
                    ] {
                        assert!(matches!(r, Err(CustodyError::KeyNotFound(_))), "{r:?}");
                    }
                    assert!(matches!(c.find(sig.uri()), Err(CustodyError::KeyNotFound(_))));
                    assert!(matches!(c.destroy(&sig), Err(CustodyError::KeyNotFound(_))));
                    return;
                };
                let peer = uncompressed(&p256::SecretKey::random(&mut OsRng));
                c.destroy(&sig).unwrap();
                c.destroy(&hpke).unwrap();
                assert!(matches!(
                    c.sign_prehash(&sig, &random_digest()),
                    Err(CustodyError::KeyNotFound(_))
                ));
                assert!(matches!(
                    c.sign(&sig, b"message"),
                    Err(CustodyError::KeyNotFound(_))
                ));
                assert!(matches!(
                    c.dh(&hpke, &peer),
                    Err(CustodyError::KeyNotFound(_))
                ));
                assert!(matches!(
                    c.find(sig.uri()),
                    Err(CustodyError::KeyNotFound(_))
                ));
                assert!(matches!(
                    c.find(hpke.uri()),
                    Err(CustodyError::KeyNotFound(_))
                ));
                assert!(matches!(c.destroy(&sig), Err(CustodyError::KeyNotFound(_))));
                assert!(matches!(
                    c.destroy(&hpke),
                    Err(CustodyError::KeyNotFound(_))
                ));
            }

            #[test]
            fn find_by_uri_returns_a_working_key() {
                let _serial = serial();
                let c = custody();
                let sig = c.generate(SIG).unwrap();
                let found_sig = c.find(sig.uri()).unwrap();
                assert_eq!(found_sig.purpose(), KeyPurpose::Signature);
                assert_eq!(found_sig.public_key(), sig.public_key());
                let digest = random_digest();
                let der = c.sign_prehash(&found_sig, &digest).unwrap();
                common::assert_valid_low_s_der(sig.public_key(), &digest, &der);
                assert_eq!(found_sig.spec(), SIG);
                c.destroy(&sig).unwrap();
                let Some(hpke) = hpke_key(&c, HOLDS_HPKE) else {
                    return;
                };
                let found_hpke = c.find(hpke.uri()).unwrap();
                assert_eq!(found_hpke.purpose(), KeyPurpose::Hpke);
                assert_eq!(found_hpke.public_key(), hpke.public_key());
                let peer = p256::SecretKey::random(&mut OsRng);
                let dh = c.dh(&found_hpke, &uncompressed(&peer)).unwrap();
                assert_eq!(dh.as_bytes(), software_dh(&peer, hpke.public_key().as_bytes()));
                assert_eq!(found_hpke.spec(), HPKE);
                c.destroy(&hpke).unwrap();
            }

            #[test]
            fn wrong_purpose_is_refused() {
                let _serial = serial();
                let c = custody();
                let sig = c.generate(SIG).unwrap();
                let peer = uncompressed(&p256::SecretKey::random(&mut OsRng));
                assert!(matches!(
                    c.dh(&sig, &peer),
                    Err(CustodyError::WrongPurpose {
                        expected: KeyPurpose::Hpke,
                        actual: KeyPurpose::Signature,
                        ..
                    })
                ));
                c.destroy(&sig).unwrap();
                let Some(hpke) = hpke_key(&c, HOLDS_HPKE) else {
                    return;
                };
                assert!(matches!(
                    c.sign_prehash(&hpke, &random_digest()),
                    Err(CustodyError::WrongPurpose {
                        expected: KeyPurpose::Signature,
                        actual: KeyPurpose::Hpke,
                        ..
                    })
                ));
                assert!(matches!(
                    c.sign(&hpke, b"message"),
                    Err(CustodyError::WrongPurpose {
                        expected: KeyPurpose::Signature,
                        actual: KeyPurpose::Hpke,
                        ..
                    })
                ));
                c.destroy(&hpke).unwrap();
            }

            #[test]
            fn off_curve_and_malformed_peer_points_are_refused() {
                let _serial = serial();
                let c = custody();
                let Some(hpke) = hpke_key(&c, HOLDS_HPKE) else {
                    return;
                };
                let good = uncompressed(&p256::SecretKey::random(&mut OsRng));
                let mut off_curve = good.clone();
                off_curve[64] ^= 1;
                let compressed = p256::SecretKey::random(&mut OsRng)
                    .public_key()
                    .to_encoded_point(true)
                    .as_bytes()
                    .to_vec();
                let mut zero = vec![0u8; 65];
                zero[0] = 4;
                for (bad, fault) in [
                    (off_curve, PointFault::NotOnCurve),
                    (zero, PointFault::NotOnCurve),
                    (compressed, PointFault::Encoding),
                    (good[..64].to_vec(), PointFault::Encoding),
                    (vec![], PointFault::Encoding),
                ] {
                    let r = c.dh(&hpke, &bad);
                    assert!(
                        matches!(&r, Err(CustodyError::InvalidPublicKey(f)) if *f == fault),
                        "{}: {:?}",
                        hex::encode(&bad),
                        r.err()
                    );
                }
                c.destroy(&hpke).unwrap();
            }

            #[test]
            fn concurrent_signing_and_ecdh_from_several_threads() {
                let _serial = serial();
                let c = Arc::new(custody());
                let sig = c.generate(SIG).unwrap();
                let hpke = hpke_key(&*c, HOLDS_HPKE);
                let threads: Vec<_> = (0..8)
                    .map(|_| {
                        let (c, sig, hpke) = (Arc::clone(&c), sig.clone(), hpke.clone());
                        std::thread::spawn(move || {
                            for _ in 0..25 {
                                let digest = random_digest();
                                let der = c.sign_prehash(&sig, &digest).unwrap();
                                common::assert_valid_low_s_der(sig.public_key(), &digest, &der);
                            }
                            let Some(hpke) = hpke else {
                                return;
                            };
                            let peer = p256::SecretKey::random(&mut OsRng);
                            let dh = c.dh(&hpke, &uncompressed(&peer)).unwrap();
                            assert_eq!(
                                dh.as_bytes(),
                                software_dh(&peer, hpke.public_key().as_bytes())
                            );
                            let own = c.generate(HPKE).unwrap();
                            c.destroy(&own).unwrap();
                        })
                    })
                    .collect();
                for t in threads {
                    t.join().expect("a signing thread failed");
                }
                c.destroy(&sig).unwrap();
                if let Some(hpke) = &hpke {
                    c.destroy(hpke).unwrap();
                }
            }
        }
    };
}

custody_suite!(software, SoftwareCustody::new(), false, true, true, false);
custody_suite!(pkcs11, common::pkcs11_custody(), true, true, true, false);
custody_suite!(tpm, common::tpm_custody(), true, false, false, true);
custody_suite!(split, common::split_router(), true, true, false, true);

/// The PKCS#11 backend holds every key spec but X25519's (SoftHSM 2.6.1
/// has no Montgomery key agreement): it answers `Unsupported` with the
/// reason, for generate and import, and does not list it.
#[test]
fn pkcs11_refuses_x25519_hpke_keys_with_the_reason() {
    let c = common::pkcs11_custody();
    let spec = KeySpec::DHKEM_X25519_HKDF_SHA256;
    assert!(!c.capabilities().supports(spec));
    for r in [c.generate(spec), c.import(spec, &[1u8; 32])] {
        assert!(
            matches!(&r, Err(CustodyError::Unsupported { spec: s, reason })
                if *s == spec && reason.contains("CKM_EC_MONTGOMERY_KEY_PAIR_GEN")),
            "{r:?}"
        );
    }
    let reason = c.unsupported_reason(spec).unwrap();
    assert!(reason.contains("X25519"), "{reason}");
    for spec in KeySpec::ALL {
        if spec != KeySpec::DHKEM_X25519_HKDF_SHA256 {
            assert!(c.capabilities().supports(spec), "{spec}");
            assert_eq!(c.unsupported_reason(spec), None, "{spec}");
        }
    }
}
