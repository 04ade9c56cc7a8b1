//! Cross-checks the HPKE of suites 0x0001, 0x0003, 0x0005 and 0x0007
//! (RFC 9180 base mode with DHKEM(X25519, HKDF-SHA256), DHKEM(P-521,
//! HKDF-SHA512), DHKEM(P-384, HKDF-SHA384); AES-128-GCM, ChaCha20Poly1305,
//! AES-256-GCM) against the independent `hpke` crate: the same
//! DeriveKeyPair, and each side opens what the other sealed, with the
//! recipient key in software and in SoftwareCustody.

use hpke::aead::{AesGcm128, AesGcm256, ChaCha20Poly1305};
use hpke::kdf::{HkdfSha256, HkdfSha384, HkdfSha512};
use hpke::kem::{DhP384HkdfSha384, DhP521HkdfSha512, X25519HkdfSha256};
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use hsmls_crypto::{CipherSuite, CryptoError, HpkeRecipient, hpke as ours};
use hsmls_custody::{KeyCustody, SoftwareCustody};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

fn cross_check<A: hpke::aead::Aead, K: hpke::kdf::Kdf, M: hpke::Kem>(suite: CipherSuite) {
    let cs = suite.provider().unwrap();
    // DeriveKeyPair (RFC 9180 §7.1.3): with rejection sampling for the
    // NIST curves, the plain expansion for X25519.
    for i in 0..32u8 {
        let ikm: Vec<u8> = (0..48)
            .map(|j| i.wrapping_mul(29).wrapping_add(j))
            .collect();
        let pair = cs.kem_derive_key_pair(&ikm).unwrap();
        let (sk, pk) = M::derive_keypair(&ikm);
        assert_eq!(
            pair.private_bytes().as_bytes(),
            &sk.to_bytes()[..],
            "{suite}"
        );
        assert_eq!(pair.public_key().as_bytes(), &pk.to_bytes()[..], "{suite}");
    }

    let mut rng = ChaCha20Rng::seed_from_u64(u64::from(suite.0));
    let custody = SoftwareCustody::new();
    for i in 0..6u8 {
        let recipient = cs.kem_derive_key_pair(&[i; 32]).unwrap();
        let info = vec![i; 7 * usize::from(i)];
        let aad = vec![0xa0 ^ i; usize::from(i)];
        let pt = vec![i; 50 + usize::from(i)];

        // The reference seals, we open (software key and custody key).
        let pk = M::PublicKey::from_bytes(recipient.public_key().as_bytes()).unwrap();
        let (enc, ct) =
            hpke::single_shot_seal::<A, K, M, _>(&OpModeS::Base, &pk, &info, &pt, &aad, &mut rng)
                .unwrap();
        let enc = enc.to_bytes();
        let software = HpkeRecipient::Software(&recipient);
        assert_eq!(
            *ours::open_base(cs, &software, &enc, &info, &aad, &ct).unwrap(),
            pt
        );
        let key = custody
            .import(cs.hpke_key_spec(), recipient.private_bytes().as_bytes())
            .unwrap();
        let in_custody = HpkeRecipient::Custody {
            custody: &custody,
            key: &key,
        };
        assert_eq!(
            *ours::open_base(cs, &in_custody, &enc, &info, &aad, &ct).unwrap(),
            pt
        );
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert!(matches!(
            ours::open_base(cs, &in_custody, &enc, &info, &aad, &bad),
            Err(CryptoError::AeadOpen)
        ));
        custody.destroy(&key).unwrap();

        // We seal (random and fixed ephemeral keys), the reference opens.
        let sk = M::PrivateKey::from_bytes(recipient.private_bytes().as_bytes()).unwrap();
        let fixed = [i ^ 0x5a; 32];
        for ikm_e in [None, Some(&fixed[..])] {
            let (enc, ct) = ours::seal_base(
                cs,
                recipient.public_key().as_bytes(),
                &info,
                &aad,
                &pt,
                ikm_e,
            )
            .unwrap();
            let enc = M::EncappedKey::from_bytes(&enc).unwrap();
            let opened =
                hpke::single_shot_open::<A, K, M>(&OpModeR::Base, &sk, &enc, &info, &ct, &aad)
                    .unwrap();
            assert_eq!(opened, pt, "{suite}");
        }
    }
}

#[test]
fn suite_0x0001_matches_reference() {
    cross_check::<AesGcm128, HkdfSha256, X25519HkdfSha256>(
        CipherSuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_ED25519,
    );
}

#[test]
fn suite_0x0003_matches_reference() {
    cross_check::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
        CipherSuite::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_ED25519,
    );
}

#[test]
fn suite_0x0005_matches_reference() {
    cross_check::<AesGcm256, HkdfSha512, DhP521HkdfSha512>(
        CipherSuite::MLS_256_DHKEMP521_AES256GCM_SHA512_P521,
    );
}

#[test]
fn suite_0x0007_matches_reference() {
    cross_check::<AesGcm256, HkdfSha384, DhP384HkdfSha384>(
        CipherSuite::MLS_256_DHKEMP384_AES256GCM_SHA384_P384,
    );
}

/// RFC 9180 §7.1.4: an X25519 KEM output whose DH value is all zero (a
/// low-order point) is refused on both sides, in software and in custody.
#[test]
fn x25519_low_order_points_are_refused() {
    use hsmls_crypto::PublicKeyFault;
    let cs = CipherSuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_ED25519
        .provider()
        .unwrap();
    let recipient = cs.kem_derive_key_pair(&[3; 32]).unwrap();
    let custody = SoftwareCustody::new();
    let key = custody
        .import(cs.hpke_key_spec(), recipient.private_bytes().as_bytes())
        .unwrap();
    let zero = [0u8; 32];
    let r = ours::open_base(
        cs,
        &HpkeRecipient::Software(&recipient),
        &zero,
        &[],
        &[],
        &[0; 32],
    );
    assert!(
        matches!(
            r,
            Err(CryptoError::InvalidPublicKey(PublicKeyFault::LowOrder))
        ),
        "{r:?}"
    );
    let r = ours::open_base(
        cs,
        &HpkeRecipient::Custody {
            custody: &custody,
            key: &key,
        },
        &zero,
        &[],
        &[],
        &[0; 32],
    );
    assert!(
        matches!(
            r,
            Err(CryptoError::Custody(
                hsmls_custody::CustodyError::InvalidPublicKey(hsmls_custody::PointFault::LowOrder)
            ))
        ),
        "{r:?}"
    );
    let r = ours::seal_base(cs, &zero, &[], &[], b"pt", None);
    assert!(
        matches!(
            r,
            Err(CryptoError::InvalidPublicKey(PublicKeyFault::LowOrder))
        ),
        "{r:?}"
    );
    custody.destroy(&key).unwrap();
}
