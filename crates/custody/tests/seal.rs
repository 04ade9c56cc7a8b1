//! One test-suite for `StateSealer`, instantiated for the software sealer
//! and the PKCS#11 sealer on the SoftHSM test token.

mod common;

use std::sync::Arc;

use hsmls_custody::seal::{SEAL_NONCE_LEN, SEAL_TAG_LEN};
use hsmls_custody::{CustodyError, Pkcs11Custody, SoftwareCustody, SoftwareSealer, StateSealer};

/// A sealer under test and a second, unrelated one; `cleanup` removes
/// whatever the test created in the token.
struct Pair {
    sealer: Box<dyn StateSealer>,
    other: Box<dyn StateSealer>,
    cleanup: Box<dyn FnOnce()>,
}

fn software_pair() -> Pair {
    Pair {
        sealer: Box::new(SoftwareSealer::generate()),
        other: Box::new(SoftwareSealer::generate()),
        cleanup: Box::new(|| {}),
    }
}

fn pkcs11_pair() -> Pair {
    let custody = Arc::new(common::pkcs11_custody());
    let sealer = custody.state_sealer().expect("state sealer");
    // A second sealing key under another label, destroyed at the end.
    let mut config = common::pkcs11_config();
    config.state_seal_key_label = format!("hsmls-test-seal-{}", hex::encode(rand_bytes()));
    let other_custody = Arc::new(Pkcs11Custody::open(&config).expect("second custody"));
    let other = other_custody.state_sealer().expect("second sealer");
    let to_destroy = other.clone();
    Pair {
        sealer: Box::new(sealer),
        other: Box::new(other),
        cleanup: Box::new(move || to_destroy.destroy().expect("destroy the test key")),
    }
}

fn rand_bytes() -> [u8; 8] {
    use rand_core::RngCore;
    let mut b = [0u8; 8];
    rand_core::OsRng.fill_bytes(&mut b);
    b
}

macro_rules! sealer_suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            fn pair() -> Pair {
                $make
            }

            #[test]
            fn round_trip_and_fresh_nonces() {
                let p = pair();
                for len in [0usize, 1, 15, 16, 17, 1000, 70_000] {
                    let plaintext: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
                    let a = p.sealer.seal(b"aad", &plaintext).unwrap();
                    let b = p.sealer.seal(b"aad", &plaintext).unwrap();
                    assert_eq!(a.len(), SEAL_NONCE_LEN + len + SEAL_TAG_LEN);
                    assert_ne!(a, b, "two seals of the same plaintext must differ");
                    assert_eq!(&p.sealer.open(b"aad", &a).unwrap()[..], &plaintext[..]);
                    assert_eq!(&p.sealer.open(b"aad", &b).unwrap()[..], &plaintext[..]);
                    if len >= 16 {
                        assert!(
                            !a.windows(16).any(|w| w == &plaintext[..16]),
                            "the plaintext shows through"
                        );
                    }
                }
                assert_eq!(p.sealer.key_id().len(), 16);
                (p.cleanup)();
            }

            #[test]
            fn wrong_aad_is_rejected() {
                let p = pair();
                let sealed = p.sealer.seal(b"group A epoch 3", b"secret state").unwrap();
                for aad in [&b"group A epoch 4"[..], b"", b"group A epoch 3 "] {
                    assert!(matches!(
                        p.sealer.open(aad, &sealed),
                        Err(CustodyError::SealedDataRejected)
                    ));
                }
                (p.cleanup)();
            }

            #[test]
            fn every_flipped_byte_is_rejected() {
                let p = pair();
                let sealed = p.sealer.seal(b"aad", b"a small state blob").unwrap();
                for i in 0..sealed.len() {
                    for bit in [0x01u8, 0x80] {
                        let mut bad = sealed.clone();
                        bad[i] ^= bit;
                        assert!(
                            matches!(
                                p.sealer.open(b"aad", &bad),
                                Err(CustodyError::SealedDataRejected)
                            ),
                            "byte {i} bit {bit:#x}"
                        );
                    }
                }
                (p.cleanup)();
            }

            #[test]
            fn truncated_blobs_are_rejected() {
                let p = pair();
                let sealed = p.sealer.seal(b"aad", b"a small state blob").unwrap();
                for len in 0..sealed.len() {
                    let e = p.sealer.open(b"aad", &sealed[..len]).unwrap_err();
                    if len < SEAL_NONCE_LEN + SEAL_TAG_LEN {
                        assert!(
                            matches!(e, CustodyError::SealedDataTruncated { len: l, min: 28 } if l == len),
                            "{len}: {e:?}"
                        );
                    } else {
                        assert!(matches!(e, CustodyError::SealedDataRejected), "{len}: {e:?}");
                    }
                }
                let mut longer = sealed.clone();
                longer.push(0);
                assert!(matches!(
                    p.sealer.open(b"aad", &longer),
                    Err(CustodyError::SealedDataRejected)
                ));
                (p.cleanup)();
            }

            #[test]
            fn another_sealers_blob_is_rejected() {
                let p = pair();
                assert_ne!(p.sealer.key_id(), p.other.key_id());
                let mine = p.sealer.seal(b"aad", b"state").unwrap();
                let theirs = p.other.seal(b"aad", b"state").unwrap();
                assert!(matches!(
                    p.other.open(b"aad", &mine),
                    Err(CustodyError::SealedDataRejected)
                ));
                assert!(matches!(
                    p.sealer.open(b"aad", &theirs),
                    Err(CustodyError::SealedDataRejected)
                ));
                (p.cleanup)();
            }
        }
    };
}

sealer_suite!(software, software_pair());
sealer_suite!(pkcs11, pkcs11_pair());

#[test]
fn software_custody_has_a_sealer_with_a_random_id() {
    let a = SoftwareCustody::new();
    let b = SoftwareCustody::new();
    assert_eq!(a.state_sealer().key_id().len(), 16);
    assert_ne!(a.state_sealer().key_id(), b.state_sealer().key_id());
    let sealed = a.state_sealer().seal(b"", b"x").unwrap();
    assert!(matches!(
        b.state_sealer().open(b"", &sealed),
        Err(CustodyError::SealedDataRejected)
    ));
    let debug = format!("{:?}", a.state_sealer());
    assert!(
        debug.contains(&hex::encode(a.state_sealer().key_id())),
        "{debug}"
    );
}

#[test]
fn pkcs11_sealing_key_is_sensitive_not_extractable_and_found_again() {
    use cryptoki::object::{Attribute, AttributeType};
    let custody = Arc::new(common::pkcs11_custody());
    let sealer = custody.state_sealer().unwrap();
    let attrs = custody
        .with_session(|s| {
            s.get_attributes(
                sealer.key_handle(),
                &[
                    AttributeType::Token,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::Encrypt,
                    AttributeType::Decrypt,
                    AttributeType::Wrap,
                    AttributeType::Unwrap,
                    AttributeType::Sign,
                    AttributeType::Derive,
                    AttributeType::Modifiable,
                    AttributeType::Label,
                    AttributeType::Id,
                ],
            )
        })
        .unwrap()
        .unwrap();
    for expected in [
        Attribute::Token(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Derive(false),
        Attribute::Modifiable(false),
        Attribute::Label(b"hsmls-state-seal".to_vec()),
        Attribute::Id(sealer.key_id().to_vec()),
    ] {
        assert!(attrs.contains(&expected), "{expected:?} not in {attrs:?}");
    }
    // CKA_VALUE cannot be read (get_attributes drops it silently).
    let value = custody
        .with_session(|s| s.get_attributes(sealer.key_handle(), &[AttributeType::Value]))
        .unwrap();
    assert!(
        !matches!(value, Ok(ref v) if v.iter().any(|a| matches!(a, Attribute::Value(_)))),
        "CKA_VALUE of the sealing key is readable"
    );
    // A second custody (another "process start") finds the same key and
    // opens what the first sealed.
    let sealed = sealer.seal(b"aad", b"survives a restart").unwrap();
    let again = Arc::new(common::pkcs11_custody()).state_sealer().unwrap();
    assert_eq!(again.key_id(), sealer.key_id());
    assert_eq!(
        &again.open(b"aad", &sealed).unwrap()[..],
        b"survives a restart"
    );
}
