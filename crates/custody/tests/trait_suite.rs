//! One test-suite for the `KeyCustody` trait, instantiated for every backend:
//! the software backend and the PKCS#11 backend on the SoftHSM test token.

mod common;

use std::sync::Arc;

use hsmls_custody::{CustodyError, KeyCustody, KeyPurpose, PointFault, SoftwareCustody};
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

macro_rules! custody_suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            fn custody() -> impl KeyCustody + 'static {
                $make
            }

            #[test]
            fn signature_verifies_with_p256_and_is_low_s_der() {
                let c = custody();
                assert!(c.capabilities().signature_keys);
                let key = c.generate(KeyPurpose::Signature).unwrap();
                assert_eq!(key.purpose(), KeyPurpose::Signature);
                // 24 signatures: a token's raw signatures are high-S half the
                // time, so normalisation is exercised.
                for _ in 0..24 {
                    let digest = random_digest();
                    let der = c.sign_digest(&key, &digest).unwrap();
                    common::assert_valid_low_s_der(key.public_key(), &digest, &der);
                }
                c.destroy(&key).unwrap();
            }

            #[test]
            fn signature_does_not_verify_for_another_digest() {
                use p256::ecdsa::signature::hazmat::PrehashVerifier;
                let c = custody();
                let key = c.generate(KeyPurpose::Signature).unwrap();
                let der = c.sign_digest(&key, &Sha256::digest(b"one").into()).unwrap();
                let sig = p256::ecdsa::Signature::from_der(&der).unwrap();
                let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(key.public_key().as_bytes())
                    .unwrap();
                assert!(vk.verify_prehash(&Sha256::digest(b"two"), &sig).is_err());
                c.destroy(&key).unwrap();
            }

            #[test]
            fn ecdh_equals_software_dh() {
                let c = custody();
                assert!(c.capabilities().hpke_keys);
                let key = c.generate(KeyPurpose::Hpke).unwrap();
                assert_eq!(key.purpose(), KeyPurpose::Hpke);
                for _ in 0..4 {
                    let peer = p256::SecretKey::random(&mut OsRng);
                    let dh = c.dh(&key, &uncompressed(&peer)).unwrap();
                    assert_eq!(*dh, software_dh(&peer, key.public_key().as_bytes()));
                }
                c.destroy(&key).unwrap();
            }

            #[test]
            fn imported_keys_sign_and_agree_like_software() {
                let c = custody();
                let secret = p256::SecretKey::random(&mut OsRng);
                let scalar = secret.to_bytes();
                let sig = c.import(KeyPurpose::Signature, &scalar).unwrap();
                assert_eq!(sig.public_key().as_bytes(), &uncompressed(&secret)[..]);
                let digest = random_digest();
                let der = c.sign_digest(&sig, &digest).unwrap();
                common::assert_valid_low_s_der(sig.public_key(), &digest, &der);

                let hpke = c.import(KeyPurpose::Hpke, &scalar).unwrap();
                assert_eq!(hpke.public_key().as_bytes(), &uncompressed(&secret)[..]);
                let peer = p256::SecretKey::random(&mut OsRng);
                let dh = c.dh(&hpke, &uncompressed(&peer)).unwrap();
                assert_eq!(*dh, software_dh(&secret, &uncompressed(&peer)));
                c.destroy(&sig).unwrap();
                c.destroy(&hpke).unwrap();
            }

            #[test]
            fn import_rejects_invalid_scalars() {
                let c = custody();
                let order =
                    hex::decode("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551")
                        .unwrap();
                for bad in [vec![0u8; 32], order, vec![1u8; 31], vec![1u8; 33]] {
                    for purpose in [KeyPurpose::Signature, KeyPurpose::Hpke] {
                        assert!(
                            matches!(
                                c.import(purpose, &bad),
                                Err(CustodyError::InvalidPrivateKey)
                            ),
                            "{purpose} {}",
                            hex::encode(&bad)
                        );
                    }
                }
            }

            #[test]
            fn destroyed_key_is_gone() {
                let c = custody();
                let sig = c.generate(KeyPurpose::Signature).unwrap();
                let hpke = c.generate(KeyPurpose::Hpke).unwrap();
                let peer = uncompressed(&p256::SecretKey::random(&mut OsRng));
                c.destroy(&sig).unwrap();
                c.destroy(&hpke).unwrap();
                assert!(matches!(
                    c.sign_digest(&sig, &random_digest()),
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
                let c = custody();
                let sig = c.generate(KeyPurpose::Signature).unwrap();
                let hpke = c.generate(KeyPurpose::Hpke).unwrap();
                let found_sig = c.find(sig.uri()).unwrap();
                let found_hpke = c.find(hpke.uri()).unwrap();
                assert_eq!(found_sig.purpose(), KeyPurpose::Signature);
                assert_eq!(found_sig.public_key(), sig.public_key());
                assert_eq!(found_hpke.purpose(), KeyPurpose::Hpke);
                assert_eq!(found_hpke.public_key(), hpke.public_key());
                let digest = random_digest();
                let der = c.sign_digest(&found_sig, &digest).unwrap();
                common::assert_valid_low_s_der(sig.public_key(), &digest, &der);
                let peer = p256::SecretKey::random(&mut OsRng);
                let dh = c.dh(&found_hpke, &uncompressed(&peer)).unwrap();
                assert_eq!(*dh, software_dh(&peer, hpke.public_key().as_bytes()));
                c.destroy(&sig).unwrap();
                c.destroy(&hpke).unwrap();
            }

            #[test]
            fn wrong_purpose_is_refused() {
                let c = custody();
                let sig = c.generate(KeyPurpose::Signature).unwrap();
                let hpke = c.generate(KeyPurpose::Hpke).unwrap();
                let peer = uncompressed(&p256::SecretKey::random(&mut OsRng));
                assert!(matches!(
                    c.dh(&sig, &peer),
                    Err(CustodyError::WrongPurpose {
                        expected: KeyPurpose::Hpke,
                        actual: KeyPurpose::Signature,
                        ..
                    })
                ));
                assert!(matches!(
                    c.sign_digest(&hpke, &random_digest()),
                    Err(CustodyError::WrongPurpose {
                        expected: KeyPurpose::Signature,
                        actual: KeyPurpose::Hpke,
                        ..
                    })
                ));
                c.destroy(&sig).unwrap();
                c.destroy(&hpke).unwrap();
            }

            #[test]
            fn off_curve_and_malformed_peer_points_are_refused() {
                let c = custody();
                let hpke = c.generate(KeyPurpose::Hpke).unwrap();
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
                let c = Arc::new(custody());
                let sig = c.generate(KeyPurpose::Signature).unwrap();
                let hpke = c.generate(KeyPurpose::Hpke).unwrap();
                let threads: Vec<_> = (0..8)
                    .map(|_| {
                        let (c, sig, hpke) = (Arc::clone(&c), sig.clone(), hpke.clone());
                        std::thread::spawn(move || {
                            for _ in 0..25 {
                                let digest = random_digest();
                                let der = c.sign_digest(&sig, &digest).unwrap();
                                common::assert_valid_low_s_der(sig.public_key(), &digest, &der);
                            }
                            let peer = p256::SecretKey::random(&mut OsRng);
                            let dh = c.dh(&hpke, &uncompressed(&peer)).unwrap();
                            assert_eq!(*dh, software_dh(&peer, hpke.public_key().as_bytes()));
                            let own = c.generate(KeyPurpose::Hpke).unwrap();
                            c.destroy(&own).unwrap();
                        })
                    })
                    .collect();
                for t in threads {
                    t.join().expect("a signing thread failed");
                }
                c.destroy(&sig).unwrap();
                c.destroy(&hpke).unwrap();
            }
        }
    };
}

custody_suite!(software, SoftwareCustody::new());
custody_suite!(pkcs11, common::pkcs11_custody());
