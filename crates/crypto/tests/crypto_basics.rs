//! crypto-basics.json (mlswg/mls-implementations test vectors): every case
//! of the five implemented cipher suites (0x0001, 0x0002, 0x0003, 0x0005,
//! 0x0007); the X448 suites' cases are skipped and counted.

use hsmls_crypto::{CipherSuite, CryptoError, HpkeRecipient};
use hsmls_custody::{KeyCustody, SignatureScheme, SoftwareCustody};
use hsmls_test_vectors::{CaseCounter, hex_bytes, load, per_suite};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    cipher_suite: u16,
    ref_hash: RefHash,
    expand_with_label: ExpandWithLabel,
    derive_secret: DeriveSecret,
    derive_tree_secret: DeriveTreeSecret,
    sign_with_label: SignWithLabel,
    encrypt_with_label: EncryptWithLabel,
}

#[derive(Deserialize)]
struct RefHash {
    label: String,
    #[serde(deserialize_with = "hex_bytes")]
    value: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    out: Vec<u8>,
}

#[derive(Deserialize)]
struct ExpandWithLabel {
    #[serde(deserialize_with = "hex_bytes")]
    secret: Vec<u8>,
    label: String,
    #[serde(deserialize_with = "hex_bytes")]
    context: Vec<u8>,
    length: usize,
    #[serde(deserialize_with = "hex_bytes")]
    out: Vec<u8>,
}

#[derive(Deserialize)]
struct DeriveSecret {
    #[serde(deserialize_with = "hex_bytes")]
    secret: Vec<u8>,
    label: String,
    #[serde(deserialize_with = "hex_bytes")]
    out: Vec<u8>,
}

#[derive(Deserialize)]
struct DeriveTreeSecret {
    #[serde(deserialize_with = "hex_bytes")]
    secret: Vec<u8>,
    label: String,
    generation: u32,
    length: usize,
    #[serde(deserialize_with = "hex_bytes")]
    out: Vec<u8>,
}

#[derive(Deserialize)]
struct SignWithLabel {
    #[serde(deserialize_with = "hex_bytes")]
    r#priv: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    r#pub: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    content: Vec<u8>,
    label: String,
    #[serde(deserialize_with = "hex_bytes")]
    signature: Vec<u8>,
}

#[derive(Deserialize)]
struct EncryptWithLabel {
    #[serde(deserialize_with = "hex_bytes")]
    r#priv: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    r#pub: Vec<u8>,
    label: String,
    #[serde(deserialize_with = "hex_bytes")]
    context: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    plaintext: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    kem_output: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    ciphertext: Vec<u8>,
}

#[test]
fn crypto_basics_vectors() {
    let cases: Vec<Case> = load("crypto-basics.json");
    let mut counter = CaseCounter::new("crypto-basics.json");
    for case in cases {
        let Ok(cs) = CipherSuite(case.cipher_suite).provider() else {
            counter.skipped_suite(case.cipher_suite);
            continue;
        };

        let r = &case.ref_hash;
        let out = cs.ref_hash(r.label.as_bytes(), &r.value).unwrap();
        assert_eq!(out.as_bytes(), r.out.as_slice(), "ref_hash");

        let e = &case.expand_with_label;
        let out = cs
            .expand_with_label(&e.secret, e.label.as_bytes(), &e.context, e.length)
            .unwrap();
        assert_eq!(out.as_bytes(), e.out.as_slice(), "expand_with_label");

        let d = &case.derive_secret;
        let out = cs.derive_secret(&d.secret, d.label.as_bytes()).unwrap();
        assert_eq!(out.as_bytes(), d.out.as_slice(), "derive_secret");

        let t = &case.derive_tree_secret;
        let out = cs
            .derive_tree_secret(&t.secret, t.label.as_bytes(), t.generation, t.length)
            .unwrap();
        assert_eq!(out.as_bytes(), t.out.as_slice(), "derive_tree_secret");

        // sign_with_label: the given signature verifies; so does our own
        // signature made with the vector's private key in a custody backend.
        let s = &case.sign_with_label;
        let label = s.label.as_bytes();
        cs.verify_with_label(&s.r#pub, label, &s.content, &s.signature)
            .expect("vector signature verifies");
        assert!(matches!(
            cs.verify_with_label(&s.r#pub, b"other label", &s.content, &s.signature),
            Err(CryptoError::InvalidSignature)
        ));
        let custody = SoftwareCustody::new();
        let key = custody.import(cs.signature_key_spec(), &s.r#priv).unwrap();
        assert_eq!(key.public_key().as_bytes(), s.r#pub.as_slice());
        let sig = cs
            .sign_with_label(&custody, &key, label, &s.content)
            .unwrap();
        cs.verify_with_label(&s.r#pub, label, &s.content, &sig)
            .expect("own signature verifies");
        let mut tampered = s.content.clone();
        tampered[0] ^= 1;
        assert!(matches!(
            cs.verify_with_label(&s.r#pub, label, &tampered, &sig),
            Err(CryptoError::InvalidSignature)
        ));
        if cs.signature_scheme() != SignatureScheme::Ed25519 {
            // A DER SEQUENCE tag changed to SET (Ed25519 signatures are any
            // 64 bytes: only their length is malformed).
            let mut bad_der = s.signature.clone();
            bad_der[0] = 0x31;
            assert!(matches!(
                cs.verify_with_label(&s.r#pub, label, &s.content, &bad_der),
                Err(CryptoError::MalformedSignature)
            ));
        }
        assert!(matches!(
            cs.verify_with_label(&s.r#pub, label, &s.content, &[]),
            Err(CryptoError::MalformedSignature)
        ));

        // encrypt_with_label: the given ciphertext opens with the vector's
        // private key in a custody backend; so does our own.
        let h = &case.encrypt_with_label;
        let label = h.label.as_bytes();
        let key = custody.import(cs.hpke_key_spec(), &h.r#priv).unwrap();
        assert_eq!(key.public_key().as_bytes(), h.r#pub.as_slice());
        let recipient = HpkeRecipient::Custody {
            custody: &custody,
            key: &key,
        };
        let pt = cs
            .decrypt_with_label(&recipient, label, &h.context, &h.kem_output, &h.ciphertext)
            .unwrap();
        assert_eq!(*pt, h.plaintext, "decrypt_with_label");
        let (kem_output, ct) = cs
            .encrypt_with_label(&h.r#pub, label, &h.context, &h.plaintext, None)
            .unwrap();
        let pt = cs
            .decrypt_with_label(&recipient, label, &h.context, &kem_output, &ct)
            .unwrap();
        assert_eq!(*pt, h.plaintext, "encrypt-then-decrypt");
        assert!(matches!(
            cs.decrypt_with_label(&recipient, b"other", &h.context, &kem_output, &ct),
            Err(CryptoError::AeadOpen)
        ));

        counter.ran_suite(case.cipher_suite);
    }
    counter.finish_per_suite(&per_suite(1));
}

/// A signed message given to `verify` in pieces is the same message as
/// its pieces joined, small or large: suite 0x0002 verifies a large one
/// (from 2 MiB) from its SHA-256 without joining it (p256's prehash
/// verification instead of ring), every other suite joins it.
#[test]
fn signatures_over_pieces_are_over_the_joined_message() {
    let custody = SoftwareCustody::new();
    let mut ran = 0;
    for suite in CipherSuite::IMPLEMENTED {
        let cs = suite.provider().unwrap();
        let key = custody.generate(cs.signature_key_spec()).unwrap();
        let public = key.public_key().as_bytes().to_vec();
        for len in [300, 3 * 1024 * 1024] {
            let message: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let sig = cs.sign(&custody, &key, &[&message]).unwrap();
            let (a, rest) = message.split_at(len / 3);
            let (b, c) = rest.split_at(len / 3);
            cs.verify(&public, &[a, b, c], &sig)
                .unwrap_or_else(|e| panic!("suite {:?}, {len} bytes in pieces: {e}", suite));
            cs.verify(&public, &[&message], &sig).unwrap();
            // A piece moved by one byte, a byte changed, a piece missing.
            let (b1, c1) = rest.split_at(len / 3 + 1);
            assert!(matches!(
                cs.verify(&public, &[a, b1, c1, &[0]], &sig),
                Err(CryptoError::InvalidSignature)
            ));
            let mut changed = c.to_vec();
            changed[c.len() - 1] ^= 0x80;
            assert!(matches!(
                cs.verify(&public, &[a, b, &changed], &sig),
                Err(CryptoError::InvalidSignature)
            ));
            assert!(matches!(
                cs.verify(&public, &[a, c], &sig),
                Err(CryptoError::InvalidSignature)
            ));
            ran += 1;
        }
        custody.destroy(&key).unwrap();
    }
    assert_eq!(ran, 2 * CipherSuite::IMPLEMENTED.len());
}
