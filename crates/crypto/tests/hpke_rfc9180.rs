//! Cross-checks our HPKE (RFC 9180 base mode, DHKEM(P-256, HKDF-SHA256),
//! HKDF-SHA256, AES-128-GCM) against the independent `hpke` crate: each side
//! opens what the other sealed, and both derive the same key pairs and
//! exported secrets.

use hpke::aead::AesGcm128;
use hpke::kdf::HkdfSha256;
use hpke::kem::DhP256HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use hsmls_crypto::{
    CipherSuite, CipherSuiteProvider, CryptoError, HpkeRecipient, PublicKeyFault, hpke as ours,
};
use hsmls_custody::{KeyCustody, KeySpec, SoftwareCustody};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

type Kem = DhP256HkdfSha256;

fn suite() -> &'static dyn CipherSuiteProvider {
    CipherSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256
        .provider()
        .unwrap()
}

#[test]
fn derive_key_pair_matches_reference() {
    let cs = suite();
    for i in 0..32u8 {
        let ikm: Vec<u8> = (0..32)
            .map(|j| i.wrapping_mul(31).wrapping_add(j))
            .collect();
        let ours = cs.kem_derive_key_pair(&ikm).unwrap();
        let (sk, pk) = Kem::derive_keypair(&ikm);
        assert_eq!(ours.private_bytes().as_bytes(), &sk.to_bytes()[..]);
        assert_eq!(ours.public_key().as_bytes(), &pk.to_bytes()[..]);
    }
}

#[test]
fn reference_seals_we_open() {
    let cs = suite();
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let custody = SoftwareCustody::new();
    for i in 0..8u8 {
        let recipient = cs.kem_derive_key_pair(&[i; 32]).unwrap();
        let pk =
            <Kem as hpke::Kem>::PublicKey::from_bytes(recipient.public_key().as_bytes()).unwrap();
        let info = vec![i; usize::from(i) * 9];
        let aad = vec![0xa0 ^ i; usize::from(i)];
        let pt = vec![i; 100 + usize::from(i)];
        let (enc, ct) = hpke::single_shot_seal::<AesGcm128, HkdfSha256, Kem, _>(
            &OpModeS::Base,
            &pk,
            &info,
            &pt,
            &aad,
            &mut rng,
        )
        .unwrap();
        let enc = enc.to_bytes();

        let software = HpkeRecipient::Software(&recipient);
        let opened = ours::open_base(cs, &software, &enc, &info, &aad, &ct).unwrap();
        assert_eq!(*opened, pt);

        let key = custody
            .import(
                KeySpec::DHKEM_P256_HKDF_SHA256,
                recipient.private_bytes().as_bytes(),
            )
            .unwrap();
        let in_custody = HpkeRecipient::Custody {
            custody: &custody,
            key: &key,
        };
        let opened = ours::open_base(cs, &in_custody, &enc, &info, &aad, &ct).unwrap();
        assert_eq!(*opened, pt);

        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert!(matches!(
            ours::open_base(cs, &software, &enc, &info, &aad, &bad),
            Err(CryptoError::AeadOpen)
        ));
    }
}

#[test]
fn we_seal_reference_opens() {
    let cs = suite();
    for i in 0..8u8 {
        let recipient = cs.kem_derive_key_pair(&[0x40 | i; 32]).unwrap();
        let sk = <Kem as hpke::Kem>::PrivateKey::from_bytes(recipient.private_bytes().as_bytes())
            .unwrap();
        let info = vec![i; 3 * usize::from(i)];
        let aad = vec![i; 2];
        let pt = vec![0x55 ^ i; 17 * usize::from(i)];
        let fixed = [i; 32];
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
            let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&enc).unwrap();
            let opened = hpke::single_shot_open::<AesGcm128, HkdfSha256, Kem>(
                &OpModeR::Base,
                &sk,
                &enc,
                &info,
                &ct,
                &aad,
            )
            .unwrap();
            assert_eq!(*opened, pt);
        }
    }
}

#[test]
fn exported_secrets_match_reference() {
    let cs = suite();
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let recipient = cs.kem_derive_key_pair(b"external secret").unwrap();
    let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(recipient.public_key().as_bytes()).unwrap();
    let sk =
        <Kem as hpke::Kem>::PrivateKey::from_bytes(recipient.private_bytes().as_bytes()).unwrap();
    let label = b"MLS 1.0 external init secret";

    // Reference sender, our receiver.
    let (enc, ctx) =
        hpke::setup_sender::<AesGcm128, HkdfSha256, Kem, _>(&OpModeS::Base, &pk, &[], &mut rng)
            .unwrap();
    let mut theirs = [0u8; 32];
    ctx.export(label, &mut theirs).unwrap();
    let mine = ours::export_base_receiver(
        cs,
        &HpkeRecipient::Software(&recipient),
        &enc.to_bytes(),
        &[],
        label,
        32,
    )
    .unwrap();
    assert_eq!(mine.as_bytes(), theirs);

    // Our sender, reference receiver.
    let (enc, mine) =
        ours::export_base_sender(cs, recipient.public_key().as_bytes(), &[], label, 32, None)
            .unwrap();
    let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&enc).unwrap();
    let ctx =
        hpke::setup_receiver::<AesGcm128, HkdfSha256, Kem>(&OpModeR::Base, &sk, &enc, &[]).unwrap();
    let mut theirs = [0u8; 32];
    ctx.export(label, &mut theirs).unwrap();
    assert_eq!(mine.as_bytes(), theirs);
}

#[test]
fn malformed_kem_output_is_a_typed_error() {
    let cs = suite();
    let recipient = cs.kem_derive_key_pair(&[1; 32]).unwrap();
    let r = HpkeRecipient::Software(&recipient);
    for (enc, fault) in [
        (&[][..], PublicKeyFault::Encoding),
        (&[4u8; 65][..], PublicKeyFault::NotOnCurve),
        (&[0u8; 33][..], PublicKeyFault::Encoding),
    ] {
        let r = ours::open_base(cs, &r, enc, &[], &[], &[0; 32]);
        assert!(
            matches!(&r, Err(CryptoError::InvalidPublicKey(f)) if *f == fault),
            "{:?}",
            r.err()
        );
    }
}

#[test]
fn unsupported_suites_are_typed_errors() {
    for id in [0u16, 4, 6, 8, 0xffff] {
        assert!(matches!(
            CipherSuite(id).provider(),
            Err(CryptoError::UnsupportedCipherSuite(x)) if x == id
        ));
    }
}

#[test]
fn implemented_suites_have_providers_of_their_own_value() {
    for suite in CipherSuite::IMPLEMENTED {
        let cs = suite.provider().unwrap();
        assert_eq!(cs.cipher_suite(), suite);
        assert_eq!(cs.hpke_suite().kem_id, cs.kem().kem_id());
        assert_eq!(cs.hpke_key_spec(), KeySpec::Kem(cs.kem()));
    }
}
