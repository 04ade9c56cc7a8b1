//! tree-operations.json (RFC 9420 §7.7, §7.8, §12.1): every case. The cases
//! are for cipher suite 0x0001 only and run with its provider; they
//! exercise Add, Update and Remove and the tree hash.

use hsmls::internal::tree::UnverifiedTree;
use hsmls::wire::LeafIndex;
use hsmls::wire::{Decode, Encode, Proposal, RatchetTree as WireTree};
use hsmls_crypto::CipherSuite;
use hsmls_test_vectors::{CaseCounter, hex_bytes, load};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    cipher_suite: u16,
    #[serde(deserialize_with = "hex_bytes")]
    tree_before: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    proposal: Vec<u8>,
    proposal_sender: u32,
    #[serde(deserialize_with = "hex_bytes")]
    tree_hash_before: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    tree_after: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    tree_hash_after: Vec<u8>,
}

#[test]
fn tree_operations_vectors() {
    let provider = CipherSuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_ED25519
        .provider()
        .expect("suite 1");
    let cases: Vec<Case> = load("tree-operations.json");
    let mut counter = CaseCounter::new("tree-operations.json");
    let mut kinds = [0usize; 3];
    for (n, c) in cases.iter().enumerate() {
        assert_eq!(
            c.cipher_suite, 1,
            "case {n}: the file holds suite-1 cases only"
        );
        let wire = WireTree::decode(&c.tree_before).expect("tree_before decodes");
        let mut tree = UnverifiedTree::new(provider, wire)
            .expect("tree_before is well formed")
            .trusted_without_validation();
        assert_eq!(
            tree.tree_hash().expect("tree hash").as_bytes(),
            c.tree_hash_before,
            "case {n}: tree_hash_before"
        );
        // Exporting gives back the exact encoding.
        assert_eq!(
            tree.to_ratchet_tree().encode().expect("encode"),
            c.tree_before,
            "case {n}: round trip"
        );
        match Proposal::decode(&c.proposal).expect("proposal decodes") {
            Proposal::Add(add) => {
                kinds[0] += 1;
                tree.add_leaf(add.key_package.leaf_node).expect("add");
            }
            Proposal::Update(update) => {
                kinds[1] += 1;
                tree.update_leaf(LeafIndex(c.proposal_sender), update.leaf_node)
                    .expect("update");
            }
            Proposal::Remove(remove) => {
                kinds[2] += 1;
                tree.remove_leaf(remove.removed).expect("remove");
            }
            other => panic!("case {n}: unexpected proposal {other:?}"),
        }
        assert_eq!(
            tree.to_ratchet_tree().encode().expect("encode"),
            c.tree_after,
            "case {n}: tree_after"
        );
        assert_eq!(
            tree.tree_hash().expect("tree hash").as_bytes(),
            c.tree_hash_after,
            "case {n}: tree_hash_after (incremental)"
        );
        // The incremental hash equals a from-scratch one.
        let mut fresh =
            UnverifiedTree::new(provider, WireTree::decode(&c.tree_after).expect("decode"))
                .expect("tree_after is well formed")
                .trusted_without_validation();
        assert_eq!(
            fresh.tree_hash().expect("tree hash").as_bytes(),
            c.tree_hash_after,
            "case {n}: tree_hash_after (fresh)"
        );
        assert_eq!(fresh, tree);
        counter.ran_suite(c.cipher_suite);
    }
    assert_eq!(kinds, [2, 1, 2], "two adds, one update, two removes");
    counter.finish_per_suite(&[(0x0001, 5)]);
}
