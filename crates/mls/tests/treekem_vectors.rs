//! treekem.json (RFC 9420 §7.4–§7.6, §7.9): every case of the five implemented
//! suites (0x0001, 0x0002, 0x0003, 0x0005, 0x0007; X448 cases skipped and
//! counted).
//!
//! For each case: the tree validates; each member's private keys (leaf key
//! imported into SoftwareCustody, path secrets) match the tree; every
//! UpdatePath is merged and decrypted by every other member with private
//! keys, giving the expected path secret, commit secret and tree hash; and
//! each member creates a fresh UpdatePath that all others process to the
//! same commit secret and tree.

use std::collections::HashMap;

use hsmls::error::NodeIndex;
use hsmls::error::{KeyKind, LeafNodeError, TreeError};
use hsmls::internal::codec::UpdatePath;
use hsmls::internal::tree::RatchetTree;
use hsmls::internal::tree::{
    GroupParams, LeafNodeParams, TreeKemPrivate, UnverifiedTree, decrypt_update_path,
    merge_update_path, prepare_update_path,
};
use hsmls::wire::LeafIndex;
use hsmls::wire::{
    CipherSuite as WireSuite, Decode, Encode, GroupContext, ProtocolVersion,
    RatchetTree as WireTree,
};
use hsmls_crypto::{CipherSuite, CryptoError};
use hsmls_custody::{KeyCustody, KeyRef, SoftwareCustody};
use hsmls_test_vectors::{CaseCounter, hex_bytes, left_pad, load, per_suite, unhex};
use serde::Deserialize;

#[derive(Deserialize)]
struct PathSecret {
    node: u32,
    #[serde(deserialize_with = "hex_bytes")]
    path_secret: Vec<u8>,
}

#[derive(Deserialize)]
struct LeafPrivate {
    index: u32,
    #[serde(deserialize_with = "hex_bytes")]
    encryption_priv: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    signature_priv: Vec<u8>,
    path_secrets: Vec<PathSecret>,
}

#[derive(Deserialize)]
struct UpdatePathCase {
    sender: u32,
    #[serde(deserialize_with = "hex_bytes")]
    update_path: Vec<u8>,
    path_secrets: Vec<Option<String>>,
    #[serde(deserialize_with = "hex_bytes")]
    commit_secret: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    tree_hash_after: Vec<u8>,
}

#[derive(Deserialize)]
struct Case {
    cipher_suite: u16,
    #[serde(deserialize_with = "hex_bytes")]
    group_id: Vec<u8>,
    epoch: u64,
    #[serde(deserialize_with = "hex_bytes")]
    confirmed_transcript_hash: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    ratchet_tree: Vec<u8>,
    leaves_private: Vec<LeafPrivate>,
    update_paths: Vec<UpdatePathCase>,
}

struct Member {
    private: TreeKemPrivate,
    signature_key: KeyRef,
}

fn group_context(c: &Case, tree_hash: &[u8]) -> Vec<u8> {
    GroupContext {
        version: ProtocolVersion::MLS10,
        cipher_suite: WireSuite(c.cipher_suite),
        group_id: c.group_id.clone(),
        epoch: c.epoch,
        tree_hash: tree_hash.to_vec(),
        confirmed_transcript_hash: c.confirmed_transcript_hash.clone(),
        extensions: Vec::new(),
    }
    .encode()
    .expect("encode GroupContext")
}

#[test]
fn treekem_vectors() {
    let cases: Vec<Case> = load("treekem.json");
    let mut counter = CaseCounter::new("treekem.json");
    let (mut decrypted, mut fresh_processed) = (0usize, 0usize);
    for (n, c) in cases.iter().enumerate() {
        let suite = CipherSuite(c.cipher_suite);
        let Ok(provider) = suite.provider() else {
            counter.skipped_suite(c.cipher_suite);
            continue;
        };
        let params = GroupParams {
            group_id: &c.group_id,
            cipher_suite: WireSuite(suite.0),
            version: ProtocolVersion::MLS10,
            required_capabilities: None,
            now: None,
            max_lifetime: None,
        };
        let wire = WireTree::decode(&c.ratchet_tree).expect("ratchet_tree decodes");
        let mut unverified = UnverifiedTree::new(provider, wire).expect("well formed");
        let hash = unverified.tree_hash().expect("tree hash");
        let tree: RatchetTree = unverified
            .verify(hash.as_bytes(), &params)
            .unwrap_or_else(|e| panic!("case {n}: tree validates: {e}"));

        // Private keys: leaf keys through custody, path secrets checked
        // against the tree's public keys.
        let custody = SoftwareCustody::new();
        let mut members: HashMap<u32, Member> = HashMap::new();
        for lp in &c.leaves_private {
            let leaf_key = custody
                .import(
                    provider.hpke_key_spec(),
                    &left_pad(
                        &lp.encryption_priv,
                        provider.hpke_key_spec().private_key_len(),
                    ),
                )
                .expect("import leaf key");
            let leaf = tree.leaf(LeafIndex(lp.index)).expect("member leaf");
            assert_eq!(
                leaf.encryption_key.as_slice(),
                leaf_key.public_key().as_bytes(),
                "case {n}: leaf {} encryption_priv",
                lp.index
            );
            let signature_key = custody
                .import(
                    provider.signature_key_spec(),
                    &left_pad(
                        &lp.signature_priv,
                        provider.signature_key_spec().private_key_len(),
                    ),
                )
                .expect("import signature key");
            assert_eq!(
                leaf.signature_key.as_slice(),
                signature_key.public_key().as_bytes(),
                "case {n}: leaf {} signature_priv",
                lp.index
            );
            let mut private = TreeKemPrivate::new(LeafIndex(lp.index), leaf_key);
            for ps in &lp.path_secrets {
                private
                    .set_path_secret(&tree, NodeIndex(ps.node), &ps.path_secret)
                    .unwrap_or_else(|e| panic!("case {n}: path secret of node {}: {e}", ps.node));
            }
            members.insert(
                lp.index,
                Member {
                    private,
                    signature_key,
                },
            );
        }

        // The vector's UpdatePaths.
        for (u, up) in c.update_paths.iter().enumerate() {
            let sender = LeafIndex(up.sender);
            let path = UpdatePath::decode(&up.update_path).expect("UpdatePath decodes");
            let mut after = tree.clone();
            let merged = merge_update_path(&mut after, sender, &path, &params, &[])
                .unwrap_or_else(|e| panic!("case {n} path {u}: merge: {e}"));
            let th = after.tree_hash().expect("tree hash");
            assert_eq!(
                th.as_bytes(),
                up.tree_hash_after,
                "case {n} path {u}: tree_hash_after"
            );
            let gc = group_context(c, th.as_bytes());
            for lp in &c.leaves_private {
                let member = &members[&lp.index];
                if lp.index == up.sender {
                    assert!(matches!(
                        decrypt_update_path(&after, &merged, &path, &member.private, &custody, &gc),
                        Err(TreeError::OwnUpdatePath)
                    ));
                    continue;
                }
                let out =
                    decrypt_update_path(&after, &merged, &path, &member.private, &custody, &gc)
                        .unwrap_or_else(|e| {
                            panic!("case {n} path {u} leaf {}: decrypt: {e}", lp.index)
                        });
                let expected = up.path_secrets[lp.index as usize]
                    .as_deref()
                    .map(unhex)
                    .expect("a path secret for every member");
                assert_eq!(
                    out.path_secret.as_bytes(),
                    expected,
                    "case {n} path {u} leaf {}",
                    lp.index
                );
                assert_eq!(
                    out.commit_secret.as_bytes(),
                    up.commit_secret,
                    "case {n} path {u} leaf {}",
                    lp.index
                );
                decrypted += 1;
            }
            // A wrong provisional GroupContext makes decryption fail.
            let other = c
                .leaves_private
                .iter()
                .find(|l| l.index != up.sender)
                .expect("another member");
            let bad_gc = group_context(c, &[0u8; 32]);
            let r = decrypt_update_path(
                &after,
                &merged,
                &path,
                &members[&other.index].private,
                &custody,
                &bad_gc,
            );
            assert!(
                matches!(r, Err(TreeError::Crypto(CryptoError::AeadOpen))),
                "case {n} path {u}: wrong context: {:?}",
                r.err()
            );
            assert_ne!(tree, after, "the merge changed the copy");
            rejected_merges_leave_tree_unchanged(&tree, sender, &path, &params);
        }

        // Fresh UpdatePaths from every member with private keys, processed by
        // all the others.
        for lp in &c.leaves_private {
            let sender = LeafIndex(lp.index);
            let member = &members[&lp.index];
            let mut committer_tree = tree.clone();
            let leaf_params = LeafNodeParams::from_leaf(tree.leaf(sender).expect("leaf"));
            let prepared = prepare_update_path(
                &mut committer_tree,
                sender,
                &c.group_id,
                &leaf_params,
                &custody,
                &member.signature_key,
            )
            .expect("prepare");
            let th = committer_tree.tree_hash().expect("tree hash");
            let gc = group_context(c, th.as_bytes());
            let created = prepared
                .encrypt(&committer_tree, &gc, &[])
                .expect("encrypt");
            assert_eq!(created.private.own_leaf(), sender);
            // Round trip through the wire encoding.
            let path =
                UpdatePath::decode(&created.update_path.encode().expect("encode")).expect("decode");
            for other in &c.leaves_private {
                if other.index == lp.index {
                    continue;
                }
                let mut t = tree.clone();
                let merged =
                    merge_update_path(&mut t, sender, &path, &params, &[]).unwrap_or_else(|e| {
                        panic!("case {n}: fresh path from {}: merge: {e}", lp.index)
                    });
                assert_eq!(t, committer_tree, "case {n}: trees agree");
                assert_eq!(t.tree_hash().expect("hash"), th);
                let out = decrypt_update_path(
                    &t,
                    &merged,
                    &path,
                    &members[&other.index].private,
                    &custody,
                    &gc,
                )
                .unwrap_or_else(|e| {
                    panic!(
                        "case {n}: fresh path from {} to {}: {e}",
                        lp.index, other.index
                    )
                });
                assert_eq!(
                    out.commit_secret, created.commit_secret,
                    "case {n}: commit secret"
                );
                let lca_secret = created
                    .path_secret_for(LeafIndex(other.index))
                    .expect("path secret at the common ancestor");
                assert_eq!(&out.path_secret, lca_secret);
                fresh_processed += 1;
            }
            // The committer's new private keys match the new tree.
            for x in created.private.parent_key_nodes() {
                let key = created.private.parent_key(x).expect("key");
                assert_eq!(
                    committer_tree
                        .encryption_key(x)
                        .expect("non-blank")
                        .as_slice(),
                    key.public_key().as_bytes()
                );
            }
            created
                .private
                .retire(&member.private, &custody)
                .expect("destroy the fresh leaf key");
        }
        counter.ran_suite(c.cipher_suite);
    }
    counter.finish_per_suite(&per_suite(11));
    assert!(
        decrypted > 5 * 100,
        "decrypted {decrypted} vector UpdatePaths"
    );
    assert!(
        fresh_processed > 5 * 100,
        "processed {fresh_processed} fresh UpdatePaths"
    );
}

/// Invalid UpdatePaths are rejected with a typed error and leave the tree
/// unchanged (§7.9.2: the leaf's parent hash and signature cover the path).
fn rejected_merges_leave_tree_unchanged(
    tree: &RatchetTree,
    sender: LeafIndex,
    path: &UpdatePath,
    params: &GroupParams<'_>,
) {
    let check = |t: RatchetTree,
                 r: Result<_, TreeError>,
                 what: &str,
                 expected: &dyn Fn(&TreeError) -> bool| {
        match r {
            Err(e) => assert!(expected(&e), "{what}: {e:?}"),
            Ok(_) => panic!("{what} must be rejected"),
        }
        assert_eq!(&t, tree, "{what}: tree unchanged");
    };
    let bad_signature = |e: &TreeError| {
        matches!(
            e,
            TreeError::InvalidLeafNode {
                reason: LeafNodeError::InvalidSignature,
                ..
            }
        )
    };
    // Another sender: the LeafNodeTBS names the leaf index.
    let other = tree
        .leaves()
        .map(|(i, _)| i)
        .find(|i| *i != sender)
        .expect("another member");
    let mut t = tree.clone();
    let r = merge_update_path(&mut t, other, path, params, &[]);
    check(t, r, "a path under another sender", &bad_signature);
    // A tampered node key breaks the parent-hash chain.
    if !path.nodes.is_empty() {
        let mut bad = path.clone();
        bad.nodes[0].encryption_key = path.leaf_node.encryption_key.clone();
        let mut t = tree.clone();
        let r = merge_update_path(&mut t, sender, &bad, params, &[]);
        check(t, r, "a tampered node key", &|e| {
            matches!(
                e,
                TreeError::DuplicateKey {
                    kind: KeyKind::EncryptionKey,
                    ..
                }
            )
        });
        // A missing ciphertext.
        let mut bad = path.clone();
        let mut fewer = bad.nodes[0].encrypted_path_secret.to_vec();
        fewer.pop();
        bad.nodes[0].encrypted_path_secret = fewer.try_into().unwrap();
        let mut t = tree.clone();
        let r = merge_update_path(&mut t, sender, &bad, params, &[]);
        check(t, r, "a missing ciphertext", &|e| {
            matches!(e, TreeError::UpdatePathCiphertextCount { .. })
        });
        // A missing node.
        let mut bad = path.clone();
        bad.nodes.pop();
        let mut t = tree.clone();
        let r = merge_update_path(&mut t, sender, &bad, params, &[]);
        check(t, r, "a missing UpdatePathNode", &|e| {
            matches!(e, TreeError::UpdatePathLength { .. })
        });
    }
    // A tampered leaf signature.
    let mut bad = path.clone();
    if let Some(b) = bad.leaf_node.signature.last_mut() {
        *b ^= 1;
    }
    let mut t = tree.clone();
    let r = merge_update_path(&mut t, sender, &bad, params, &[]);
    check(t, r, "a bad leaf signature", &bad_signature);
}
