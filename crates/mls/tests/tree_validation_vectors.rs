//! tree-validation.json (RFC 9420 §4.1.1, §7.8, §7.9.2, §12.4.3.1): every
//! case of the five implemented suites (X448 skipped and counted): resolutions, tree hashes of every node, and the tree
//! validates (parent hashes, leaf signatures with the group id, keys,
//! unmerged leaves). Also checks that tampering is rejected.

use hsmls::error::NodeIndex;
use hsmls::error::TreeError;
use hsmls::internal::tree::{GroupParams, UnverifiedTree};
use hsmls::wire::{
    CipherSuite as WireSuite, Decode, Node, ProtocolVersion, RatchetTree as WireTree,
};
use hsmls_crypto::CipherSuite;
use hsmls_test_vectors::{CaseCounter, hex_bytes, load, per_suite, unhex};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    cipher_suite: u16,
    #[serde(deserialize_with = "hex_bytes")]
    tree: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    group_id: Vec<u8>,
    resolutions: Vec<Vec<u32>>,
    tree_hashes: Vec<String>,
}

#[test]
fn tree_validation_vectors() {
    let cases: Vec<Case> = load("tree-validation.json");
    let mut counter = CaseCounter::new("tree-validation.json");
    for (n, c) in cases.iter().enumerate() {
        let suite = CipherSuite(c.cipher_suite);
        let Ok(provider) = suite.provider() else {
            counter.skipped_suite(c.cipher_suite);
            continue;
        };
        let wire = WireTree::decode(&c.tree).expect("tree decodes");
        let mut unverified = UnverifiedTree::new(provider, wire.clone()).expect("well formed");
        let root_hash = unverified.tree_hash().expect("tree hash");
        let tree = unverified.tree();
        assert_eq!(tree.node_count() as usize, c.resolutions.len(), "case {n}");
        assert_eq!(c.tree_hashes.len(), c.resolutions.len(), "case {n}");
        for (i, expected) in c.resolutions.iter().enumerate() {
            let res: Vec<u32> = tree
                .resolution(NodeIndex(i as u32))
                .expect("resolution")
                .iter()
                .map(|x| x.0)
                .collect();
            assert_eq!(&res, expected, "case {n}: resolution of node {i}");
        }
        let mut tree = unverified.trusted_without_validation();
        for (i, expected) in c.tree_hashes.iter().enumerate() {
            assert_eq!(
                tree.node_tree_hash(NodeIndex(i as u32))
                    .expect("hash")
                    .as_bytes(),
                unhex(expected),
                "case {n}: tree hash of node {i}"
            );
        }
        let params = GroupParams {
            group_id: &c.group_id,
            cipher_suite: WireSuite(suite.0),
            version: ProtocolVersion::MLS10,
            required_capabilities: None,
            now: None,
            max_lifetime: None,
        };
        let verified = UnverifiedTree::new(provider, wire.clone())
            .expect("well formed")
            .verify(root_hash.as_bytes(), &params)
            .unwrap_or_else(|e| panic!("case {n}: the tree must validate: {e}"));
        assert_eq!(verified, tree);

        // A wrong group id breaks the signatures of update/commit leaves;
        // a wrong tree hash is rejected.
        let wrong = UnverifiedTree::new(provider, wire.clone())
            .expect("well formed")
            .verify(&[0u8; 32], &params);
        assert!(
            matches!(wrong, Err(TreeError::TreeHashMismatch)),
            "case {n}"
        );

        // Tampering with any parent node's key makes it fail validation
        // (the tree hash is recomputed so only the parent hash can catch it).
        if let Some(pi) = wire
            .0
            .iter()
            .position(|x| matches!(x, Some(Node::Parent(_))))
        {
            let mut bad = wire.clone();
            if let Some(Some(Node::Parent(p))) = bad.0.get_mut(pi) {
                let last = p.encryption_key.0.len() - 1;
                p.encryption_key.0[last] ^= 1;
            }
            let mut u = UnverifiedTree::new(provider, bad).expect("well formed");
            let h = u.tree_hash().expect("hash");
            let r = u.verify(h.as_bytes(), &params);
            assert!(
                matches!(r, Err(TreeError::ParentHashInvalid(_))),
                "case {n}: a tampered parent node: {:?}",
                r.err()
            );
        }
        counter.ran_suite(c.cipher_suite);
    }
    counter.finish_per_suite(&per_suite(14));
}
