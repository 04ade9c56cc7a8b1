//! secret-tree.json (mlswg/mls-implementations test vectors): every case of
//! each implemented cipher suite (0x0001, 0x0002, 0x0003, 0x0005, 0x0007; X448 cases skipped and counted); plus the out-of-order rules of the sender ratchets.

use hsmls::SecretTreeConfig;
use hsmls::error::SecretTreeError;
use hsmls::error::TreeMathError;
use hsmls::internal::secret_tree::{RatchetType, SecretTree, sender_data_key_nonce};
use hsmls::wire::LeafIndex;
use hsmls_crypto::{CipherSuite, CipherSuiteProvider, Secret};
use hsmls_test_vectors::{CaseCounter, hex_bytes, load, per_suite};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    cipher_suite: u16,
    #[serde(deserialize_with = "hex_bytes")]
    encryption_secret: Vec<u8>,
    sender_data: SenderData,
    leaves: Vec<Vec<Generation>>,
}

#[derive(Deserialize)]
struct SenderData {
    #[serde(deserialize_with = "hex_bytes")]
    sender_data_secret: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    ciphertext: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    key: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    nonce: Vec<u8>,
}

#[derive(Deserialize)]
struct Generation {
    generation: u32,
    #[serde(deserialize_with = "hex_bytes")]
    handshake_key: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    handshake_nonce: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    application_key: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    application_nonce: Vec<u8>,
}

fn suite2() -> &'static dyn CipherSuiteProvider {
    CipherSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256
        .provider()
        .unwrap()
}

#[test]
fn secret_tree_vectors() {
    let cases: Vec<Case> = load("secret-tree.json");
    let mut counter = CaseCounter::new("secret-tree.json");
    let mut checked = 0usize;
    for case in cases {
        let Ok(cs) = CipherSuite(case.cipher_suite).provider() else {
            counter.skipped_suite(case.cipher_suite);
            continue;
        };
        let sd = &case.sender_data;
        let (key, nonce) = sender_data_key_nonce(
            cs,
            &Secret::from_slice(&sd.sender_data_secret),
            &sd.ciphertext,
        )
        .unwrap();
        assert_eq!(key.as_bytes(), sd.key.as_slice(), "sender_data key");
        assert_eq!(nonce.as_bytes(), sd.nonce.as_slice(), "sender_data nonce");

        let n_leaves = u32::try_from(case.leaves.len()).unwrap();
        let config = SecretTreeConfig::default();
        // Receiver view: one tree, keys fetched by generation.
        let mut receiver = SecretTree::new(
            cs,
            Secret::from_slice(&case.encryption_secret),
            n_leaves,
            config,
        )
        .unwrap();
        // Sender view: one tree per leaf's own ratchets, stepped one by one.
        let mut sender = SecretTree::new(
            cs,
            Secret::from_slice(&case.encryption_secret),
            n_leaves,
            config,
        )
        .unwrap();
        for (leaf, generations) in (0u32..).zip(&case.leaves) {
            let leaf = LeafIndex(leaf);
            for g in generations {
                for (ratchet, want_key, want_nonce) in [
                    (RatchetType::Handshake, &g.handshake_key, &g.handshake_nonce),
                    (
                        RatchetType::Application,
                        &g.application_key,
                        &g.application_nonce,
                    ),
                ] {
                    let kn = receiver
                        .decryption_key(leaf, ratchet, g.generation)
                        .unwrap();
                    assert_eq!(kn.generation, g.generation);
                    assert_eq!(
                        kn.key.as_bytes(),
                        want_key.as_slice(),
                        "{leaf:?} {ratchet:?} {}",
                        g.generation
                    );
                    assert_eq!(kn.nonce.as_bytes(), want_nonce.as_slice());

                    let kn = loop {
                        let kn = sender.next_encryption_key(leaf, ratchet).unwrap();
                        if kn.generation == g.generation {
                            break kn;
                        }
                        assert!(kn.generation < g.generation);
                    };
                    assert_eq!(kn.key.as_bytes(), want_key.as_slice());
                    assert_eq!(kn.nonce.as_bytes(), want_nonce.as_slice());
                    checked += 1;
                }
            }
        }
        counter.ran_suite(case.cipher_suite);
    }
    counter.finish_per_suite(&per_suite(3));
    // 1 + 8 + 32 leaves, 2 generations, 2 ratchets each.
    assert_eq!(checked, (1 + 8 + 32) * 2 * 2 * 5, "each of the 5 suites");
}

fn tree(config: SecretTreeConfig) -> SecretTree {
    SecretTree::new(suite2(), Secret::from_slice(&[7; 32]), 8, config).unwrap()
}

#[test]
fn out_of_order_within_window_then_used() {
    let config = SecretTreeConfig::new(10, 3);
    let mut reference = tree(config);
    let keys: Vec<_> = (0..10)
        .map(|_| {
            reference
                .next_encryption_key(LeafIndex(3), RatchetType::Application)
                .unwrap()
        })
        .collect();

    let mut t = tree(config);
    let app = RatchetType::Application;
    // Jump to generation 6: 3, 4, 5 are kept; 0, 1, 2 are not.
    assert_eq!(
        t.decryption_key(LeafIndex(3), app, 6).unwrap().key,
        keys[6].key
    );
    assert_eq!(
        t.decryption_key(LeafIndex(3), app, 4).unwrap().key,
        keys[4].key
    );
    assert!(matches!(
        t.decryption_key(LeafIndex(3), app, 4),
        Err(SecretTreeError::GenerationAlreadyUsed(4))
    ));
    assert!(matches!(
        t.decryption_key(LeafIndex(3), app, 6),
        Err(SecretTreeError::GenerationAlreadyUsed(6))
    ));
    assert!(matches!(
        t.decryption_key(LeafIndex(3), app, 1),
        Err(SecretTreeError::GenerationExpired(1))
    ));
    assert_eq!(
        t.decryption_key(LeafIndex(3), app, 5).unwrap().nonce,
        keys[5].nonce
    );
    assert_eq!(
        t.decryption_key(LeafIndex(3), app, 3).unwrap().key,
        keys[3].key
    );
    assert_eq!(
        t.decryption_key(LeafIndex(3), app, 7).unwrap().key,
        keys[7].key
    );
    // The handshake ratchet of the same leaf is independent.
    let hs = t
        .decryption_key(LeafIndex(3), RatchetType::Handshake, 0)
        .unwrap();
    assert_ne!(hs.key, keys[0].key);
}

#[test]
fn too_far_ahead_and_out_of_range() {
    let config = SecretTreeConfig::new(10, 3);
    let mut t = tree(config);
    let app = RatchetType::Application;
    assert!(matches!(
        t.decryption_key(LeafIndex(0), app, 11),
        Err(SecretTreeError::GenerationTooFarAhead {
            generation: 11,
            current: 0,
            max_forward_distance: 10
        })
    ));
    assert!(matches!(
        t.decryption_key(LeafIndex(0), app, u32::MAX),
        Err(SecretTreeError::GenerationTooFarAhead { .. })
    ));
    t.decryption_key(LeafIndex(0), app, 10).unwrap();
    assert!(matches!(
        t.decryption_key(LeafIndex(8), app, 0),
        Err(SecretTreeError::LeafOutOfRange {
            leaf: LeafIndex(8),
            n_leaves: 8
        })
    ));
    assert!(matches!(
        SecretTree::new(suite2(), Secret::zero(32), 0, config),
        Err(SecretTreeError::TreeMath(TreeMathError::EmptyTree))
    ));
    assert!(!format!("{t:?}").contains("07"));
}

#[test]
fn short_ciphertext_sample_uses_whole_ciphertext() {
    let cs = suite2();
    let secret = Secret::from_slice(&[1; 32]);
    let (k1, n1) = sender_data_key_nonce(cs, &secret, &[9; 5]).unwrap();
    let (k2, _) = sender_data_key_nonce(cs, &secret, &[9; 6]).unwrap();
    let (k3, _) = sender_data_key_nonce(cs, &secret, &[9; 32]).unwrap();
    let (k4, _) = sender_data_key_nonce(cs, &secret, &[9; 40]).unwrap();
    assert_ne!(k1, k2);
    assert_eq!(k3, k4);
    assert_eq!((k1.len(), n1.len()), (16, 12));
}
