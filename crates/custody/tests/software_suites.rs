//! SoftwareCustody with the keys of suites 0x0001/0x0003 (`ed25519`,
//! `DHKEM(X25519, HKDF-SHA256)`), 0x0005 (`ecdsa_secp521r1_sha512`,
//! `DHKEM(P-521, HKDF-SHA512)`) and 0x0007 (`ecdsa_secp384r1_sha384`,
//! `DHKEM(P-384, HKDF-SHA384)`): generation, signatures checked by the
//! RustCrypto/dalek verifiers, Diffie-Hellman both ways, import of known
//! keys (RFC 8032 §7.1, RFC 7748 §6.1), refusals, destruction.

use hsmls_custody::{
    CustodyError, KeyCustody, KeyPurpose, KeySpec, PointFault, SignatureScheme, SoftwareCustody,
};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand_core::OsRng;

const NEW_SPECS: [KeySpec; 6] = [
    KeySpec::ED25519,
    KeySpec::DHKEM_X25519_HKDF_SHA256,
    KeySpec::ECDSA_SECP384R1_SHA384,
    KeySpec::DHKEM_P384_HKDF_SHA384,
    KeySpec::ECDSA_SECP521R1_SHA512,
    KeySpec::DHKEM_P521_HKDF_SHA512,
];

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

#[test]
fn every_spec_is_listed_generated_with_its_sizes_and_destroyed() {
    let c = SoftwareCustody::new();
    for spec in KeySpec::ALL {
        assert!(c.capabilities().supports(spec), "{spec}");
        let key = c.generate(spec).unwrap();
        assert_eq!(key.spec(), spec);
        assert_eq!(
            key.public_key().as_bytes().len(),
            spec.public_key_len(),
            "{spec}"
        );
        assert_eq!(c.find(key.uri()).unwrap(), key);
        c.destroy(&key).unwrap();
        let r = c.find(key.uri());
        assert!(
            matches!(&r, Err(CustodyError::KeyNotFound(_))),
            "{spec}: {r:?}"
        );
        let r = match spec.purpose() {
            KeyPurpose::Signature => c.sign(&key, b"after destroy").map(drop),
            KeyPurpose::Hpke => c.dh(&key, key.public_key().as_bytes()).map(drop),
        };
        assert!(
            matches!(&r, Err(CustodyError::KeyNotFound(_))),
            "{spec}: {r:?}"
        );
    }
}

#[test]
fn ed25519_is_pure_eddsa_over_the_whole_message() {
    use ed25519_dalek::Verifier;
    let c = SoftwareCustody::new();
    let key = c.generate(KeySpec::ED25519).unwrap();
    let vk =
        ed25519_dalek::VerifyingKey::from_bytes(key.public_key().as_bytes().try_into().unwrap())
            .unwrap();
    for message in [&b""[..], b"hsmls", &[0xa5; 5000]] {
        let sig = c.sign(&key, message).unwrap();
        assert_eq!(sig.len(), 64);
        let sig = ed25519_dalek::Signature::from_slice(&sig).unwrap();
        vk.verify(message, &sig).unwrap();
        assert!(vk.verify(b"another message", &sig).is_err());
    }
    // No digest form: EdDSA signs the message itself.
    let r = c.sign_prehash(&key, &[0u8; 32]);
    assert!(
        matches!(
            r,
            Err(CustodyError::PrehashNotApplicable {
                scheme: SignatureScheme::Ed25519
            })
        ),
        "{r:?}"
    );
    assert_eq!(SignatureScheme::Ed25519.prehash(b"x"), None);
    c.destroy(&key).unwrap();
}

/// RFC 8032 §7.1, TEST 1: the imported seed gives the RFC's public key and
/// (Ed25519 is deterministic) the RFC's signature of the empty message.
#[test]
fn ed25519_import_matches_rfc8032_test_1() {
    let c = SoftwareCustody::new();
    let key = c
        .import(
            KeySpec::ED25519,
            &unhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"),
        )
        .unwrap();
    assert_eq!(
        key.public_key().as_bytes(),
        unhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    );
    assert_eq!(
        c.sign(&key, b"").unwrap(),
        unhex(
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bac\
             c61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        )
    );
    let r = c.import(KeySpec::ED25519, &[1u8; 31]);
    assert!(
        matches!(r, Err(CustodyError::InvalidPrivateKey(KeySpec::ED25519))),
        "{r:?}"
    );
    c.destroy(&key).unwrap();
}

/// RFC 7748 §6.1: Alice's and Bob's keys give the RFC's public keys and
/// shared secret, each way.
#[test]
fn x25519_import_and_dh_match_rfc7748() {
    let c = SoftwareCustody::new();
    let spec = KeySpec::DHKEM_X25519_HKDF_SHA256;
    let alice = c
        .import(
            spec,
            &unhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"),
        )
        .unwrap();
    let bob = c
        .import(
            spec,
            &unhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"),
        )
        .unwrap();
    assert_eq!(
        alice.public_key().as_bytes(),
        unhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    );
    assert_eq!(
        bob.public_key().as_bytes(),
        unhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    );
    let shared = unhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
    assert_eq!(
        c.dh(&alice, bob.public_key().as_bytes())
            .unwrap()
            .as_bytes(),
        shared
    );
    assert_eq!(
        c.dh(&bob, alice.public_key().as_bytes())
            .unwrap()
            .as_bytes(),
        shared
    );
    assert_eq!(
        format!("{:?}", c.dh(&alice, bob.public_key().as_bytes()).unwrap()),
        "SharedSecret(32 bytes)"
    );
    c.destroy(&alice).unwrap();
    c.destroy(&bob).unwrap();
}

/// RFC 7748 §6.1, RFC 9180 §7.1.4: a low-order peer key (the all-zero
/// output) is refused; a key of the wrong length is an encoding fault.
#[test]
fn x25519_refuses_low_order_points_and_bad_lengths() {
    let c = SoftwareCustody::new();
    let key = c.generate(KeySpec::DHKEM_X25519_HKDF_SHA256).unwrap();
    let mut order_8 = [0u8; 32];
    order_8[0] = 1; // u = 1: a point of small order.
    for low in [[0u8; 32], order_8] {
        let r = c.dh(&key, &low);
        assert!(
            matches!(r, Err(CustodyError::InvalidPublicKey(PointFault::LowOrder))),
            "{r:?}"
        );
    }
    for len in [0, 31, 33, 65] {
        let r = c.dh(&key, &vec![9u8; len]);
        assert!(
            matches!(r, Err(CustodyError::InvalidPublicKey(PointFault::Encoding))),
            "{len}: {r:?}"
        );
    }
    c.destroy(&key).unwrap();
}

#[test]
fn ecdsa_p384_signs_sha384_and_p521_signs_sha512_in_low_s_der() {
    use p256::ecdsa::signature::Verifier;
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    let c = SoftwareCustody::new();

    let key = c.generate(KeySpec::ECDSA_SECP384R1_SHA384).unwrap();
    let vk = p384::ecdsa::VerifyingKey::from_sec1_bytes(key.public_key().as_bytes()).unwrap();
    for message in [&b""[..], b"hsmls", &[0x5a; 3000]] {
        let der = c.sign(&key, message).unwrap();
        let sig = p384::ecdsa::Signature::from_der(&der).unwrap();
        assert!(sig.normalize_s().is_none(), "low S");
        vk.verify(message, &sig).unwrap();
        assert!(vk.verify(b"other", &sig).is_err());
    }
    let digest = SignatureScheme::EcdsaSecp384r1Sha384.prehash(b"d").unwrap();
    assert_eq!(digest.len(), 48);
    let sig = p384::ecdsa::Signature::from_der(&c.sign_prehash(&key, &digest).unwrap()).unwrap();
    vk.verify_prehash(&digest, &sig).unwrap();
    let r = c.sign_prehash(&key, &[0u8; 32]);
    assert!(
        matches!(
            r,
            Err(CustodyError::PrehashLength {
                scheme: SignatureScheme::EcdsaSecp384r1Sha384,
                expected: 48,
                actual: 32
            })
        ),
        "{r:?}"
    );
    c.destroy(&key).unwrap();

    let key = c.generate(KeySpec::ECDSA_SECP521R1_SHA512).unwrap();
    let vk = p521::ecdsa::VerifyingKey::from_sec1_bytes(key.public_key().as_bytes()).unwrap();
    for message in [&b""[..], b"hsmls", &[0x5a; 3000]] {
        let der = c.sign(&key, message).unwrap();
        let sig = p521::ecdsa::Signature::from_der(&der).unwrap();
        assert!(sig.normalize_s().is_none(), "low S");
        // p521's Verifier hashes with SHA-512.
        vk.verify(message, &sig).unwrap();
        assert!(vk.verify(b"other", &sig).is_err());
    }
    let r = c.sign_prehash(&key, &[0u8; 48]);
    assert!(
        matches!(
            r,
            Err(CustodyError::PrehashLength {
                scheme: SignatureScheme::EcdsaSecp521r1Sha512,
                expected: 64,
                actual: 48
            })
        ),
        "{r:?}"
    );
    c.destroy(&key).unwrap();
}

/// Imported NIST keys give the public key of their scalar; DH agrees with
/// the peer's side computed by the curve crate; points of another length,
/// compressed or off the curve are refused.
#[test]
fn p384_and_p521_import_and_dh_both_ways() {
    let c = SoftwareCustody::new();

    let scalar = [0x42u8; 48];
    let key = c.import(KeySpec::DHKEM_P384_HKDF_SHA384, &scalar).unwrap();
    let secret = p384::SecretKey::from_slice(&scalar).unwrap();
    assert_eq!(
        key.public_key().as_bytes(),
        secret.public_key().to_encoded_point(false).as_bytes()
    );
    let peer = p384::SecretKey::random(&mut OsRng);
    let peer_pub = peer.public_key().to_encoded_point(false);
    let ours = c.dh(&key, peer_pub.as_bytes()).unwrap();
    let theirs = p384::ecdh::diffie_hellman(
        peer.to_nonzero_scalar(),
        p384::PublicKey::from_sec1_bytes(key.public_key().as_bytes())
            .unwrap()
            .as_affine(),
    );
    assert_eq!(ours.as_bytes(), &theirs.raw_secret_bytes()[..]);
    assert_eq!(ours.len(), 48);
    let compressed = peer.public_key().to_encoded_point(true);
    let mut off_curve = peer_pub.as_bytes().to_vec();
    off_curve[96] ^= 1;
    for (bad, fault) in [
        (compressed.as_bytes().to_vec(), PointFault::Encoding),
        (vec![4u8; 65], PointFault::Encoding),
        (off_curve, PointFault::NotOnCurve),
    ] {
        let r = c.dh(&key, &bad);
        assert!(
            matches!(&r, Err(CustodyError::InvalidPublicKey(f)) if *f == fault),
            "{r:?}"
        );
    }
    c.destroy(&key).unwrap();

    let mut scalar = [0x42u8; 66];
    scalar[0] = 0x01;
    let key = c.import(KeySpec::DHKEM_P521_HKDF_SHA512, &scalar).unwrap();
    let secret = p521::SecretKey::from_slice(&scalar).unwrap();
    assert_eq!(
        key.public_key().as_bytes(),
        secret.public_key().to_encoded_point(false).as_bytes()
    );
    let peer = p521::SecretKey::random(&mut OsRng);
    let ours = c
        .dh(&key, peer.public_key().to_encoded_point(false).as_bytes())
        .unwrap();
    let theirs = p521::ecdh::diffie_hellman(
        peer.to_nonzero_scalar(),
        p521::PublicKey::from_sec1_bytes(key.public_key().as_bytes())
            .unwrap()
            .as_affine(),
    );
    assert_eq!(ours.as_bytes(), &theirs.raw_secret_bytes()[..]);
    assert_eq!(ours.len(), 66);
    // A scalar above the group order, and one byte short.
    for (bad, spec) in [
        (vec![0xffu8; 66], KeySpec::DHKEM_P521_HKDF_SHA512),
        (vec![0x42u8; 65], KeySpec::DHKEM_P521_HKDF_SHA512),
        (vec![0xffu8; 48], KeySpec::ECDSA_SECP384R1_SHA384),
    ] {
        let r = c.import(spec, &bad);
        assert!(
            matches!(&r, Err(CustodyError::InvalidPrivateKey(s)) if *s == spec),
            "{r:?}"
        );
    }
    c.destroy(&key).unwrap();
}

/// A key used for the other purpose, and a KeyRef naming another KEM than
/// its key, are refused.
#[test]
fn purposes_and_kems_are_not_mixed() {
    let c = SoftwareCustody::new();
    for spec in NEW_SPECS {
        let key = c.generate(spec).unwrap();
        let r = match spec.purpose() {
            KeyPurpose::Signature => c.dh(&key, &[9u8; 32]).map(drop),
            KeyPurpose::Hpke => c.sign(&key, b"m").map(drop),
        };
        assert!(
            matches!(&r, Err(CustodyError::WrongPurpose { .. })),
            "{spec}: {r:?}"
        );
        c.destroy(&key).unwrap();
    }
}

/// Debug output of a custody and its keys shows no private value.
#[test]
fn debug_never_shows_private_keys() {
    let c = SoftwareCustody::new();
    let seed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    let key = c.import(KeySpec::ED25519, &unhex(seed)).unwrap();
    let shown = format!("{c:?} {key:?}");
    assert!(!shown.contains(seed), "{shown}");
    c.destroy(&key).unwrap();
}
