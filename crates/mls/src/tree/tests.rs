//! Unit tests of the tree module beyond the official vectors: the chunked
//! store against a plain array, incremental tree hashes and resolutions of
//! large trees against from-scratch computations, and TreeKEM with new
//! members (unmerged leaves, excluded leaves, joining at the common
//! ancestor, key deletion).

use hsmls_crypto::{CipherSuite, CipherSuiteProvider};
use hsmls_custody::{KeyCustody, KeyRef, KeySpec, SoftwareCustody};
use proptest::prelude::*;

use super::store::NodeStore;
use super::*;
use crate::codec::{
    self, Capabilities, CipherSuite as WireSuite, Credential, CredentialType, Encode, GroupContext,
    HpkePublicKey, LeafNode, LeafNodeSource, Lifetime, Node, ParentNode, ProtocolVersion,
    SignaturePublicKey,
};
use crate::tree_math::{LeafIndex, NodeIndex};

fn provider() -> &'static dyn CipherSuiteProvider {
    CipherSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256
        .provider()
        .expect("suite 2")
}

fn parent(k: u8) -> Node {
    Node::Parent(ParentNode {
        encryption_key: HpkePublicKey(vec![k]),
        parent_hash: vec![],
        unmerged_leaves: vec![],
    })
}

fn capabilities() -> Capabilities {
    Capabilities {
        versions: vec![ProtocolVersion::MLS10],
        cipher_suites: vec![WireSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256],
        extensions: vec![],
        proposals: vec![],
        credentials: vec![CredentialType::BASIC],
    }
}

/// An unsigned LeafNode with distinct (not necessarily valid) keys, for
/// tests of the tree structure.
fn dummy_leaf(i: u32) -> LeafNode {
    LeafNode {
        encryption_key: HpkePublicKey([b"enc".as_slice(), &i.to_be_bytes()].concat()),
        signature_key: SignaturePublicKey([b"sig".as_slice(), &i.to_be_bytes()].concat()),
        credential: Credential::Basic(i.to_be_bytes().to_vec()),
        capabilities: capabilities(),
        leaf_node_source: LeafNodeSource::KeyPackage(Lifetime {
            not_before: 0,
            not_after: u64::MAX,
        }),
        extensions: vec![],
        signature: vec![],
    }
}

#[derive(Debug, Clone)]
enum StoreOp {
    Set(usize, Option<u8>),
    /// A leaf with keys from `k` (few values, so keys repeat), with an
    /// X.509 credential when the flag is set.
    SetLeaf(usize, u8, bool),
    Resize(usize),
}

fn store_op() -> impl Strategy<Value = StoreOp> {
    prop_oneof![
        4 => (0usize..1200, proptest::option::of(any::<u8>())).prop_map(|(i, k)| StoreOp::Set(i, k)),
        3 => (0usize..1200, 0u8..40, any::<bool>()).prop_map(|(i, k, x)| StoreOp::SetLeaf(i, k, x)),
        1 => (0usize..1200).prop_map(StoreOp::Resize),
    ]
}

/// `dummy_leaf(k)`, with an (empty) X.509 credential if `x509`.
fn indexed_leaf(k: u8, x509: bool) -> Node {
    let mut leaf = dummy_leaf(u32::from(k));
    if x509 {
        leaf.credential = Credential::X509(vec![]);
    }
    Node::Leaf(leaf)
}

/// The store's key lookups and credential counts (answered from per-chunk
/// filters and counts) agree with a scan of `model`.
fn check_key_index(store: &NodeStore, model: &[Option<Node>]) -> Result<(), TestCaseError> {
    use super::store::fingerprint;
    let enc_of = |n: &Node| match n {
        Node::Leaf(l) => l.encryption_key.as_slice().to_vec(),
        Node::Parent(p) => p.encryption_key.as_slice().to_vec(),
    };
    // A few keys in the tree, one absent, and a batch past the filters'
    // limit (every key of the tree plus absent ones).
    let mut enc_keys: Vec<Vec<u8>> = model.iter().flatten().map(enc_of).take(3).collect();
    enc_keys.push(b"absent".to_vec());
    let sig_keys: Vec<Vec<u8>> = (0u8..5)
        .map(|k| [b"sig".as_slice(), &u32::from(k).to_be_bytes()].concat())
        .collect();
    let mut big: Vec<Vec<u8>> = model.iter().flatten().map(enc_of).collect();
    big.extend((0u32..70).map(|k| k.to_be_bytes().to_vec()));
    for keys in [enc_keys, big] {
        let mut fps: Vec<u64> = keys.iter().map(|k| fingerprint(k)).collect();
        fps.sort_unstable();
        fps.dedup();
        let expected: Vec<usize> = model
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                n.as_ref()
                    .is_some_and(|n| fps.binary_search(&fingerprint(&enc_of(n))).is_ok())
            })
            .map(|(i, _)| i)
            .collect();
        let got: Vec<usize> = store.with_any_encryption_fp(&fps).collect();
        prop_assert_eq!(got, expected);
    }
    let mut fps: Vec<u64> = sig_keys.iter().map(|k| fingerprint(k)).collect();
    fps.sort_unstable();
    let expected: Vec<usize> = model
        .iter()
        .enumerate()
        .filter(|(_, n)| matches!(n, Some(Node::Leaf(l)) if fps.binary_search(&fingerprint(l.signature_key.as_slice())).is_ok()))
        .map(|(i, _)| i)
        .collect();
    let got: Vec<usize> = store.with_any_signature_fp(&fps).collect();
    prop_assert_eq!(got, expected);
    let mut counts = store.credential_type_counts();
    counts.retain(|(_, n)| *n > 0);
    counts.sort_unstable();
    let mut expected: Vec<(u16, usize)> = Vec::new();
    for n in model.iter().flatten() {
        if let Node::Leaf(l) = n {
            let t = l.credential.credential_type().0;
            match expected.iter_mut().find(|(u, _)| *u == t) {
                Some((_, c)) => *c += 1,
                None => expected.push((t, 1)),
            }
        }
    }
    expected.sort_unstable();
    prop_assert_eq!(counts, expected);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The chunked copy-on-write store behaves like a plain array, and a
    /// clone is unaffected by later changes.
    #[test]
    fn store_matches_array(ops in proptest::collection::vec(store_op(), 1..60)) {
        let mut store = NodeStore::blank(700);
        let mut model: Vec<Option<Node>> = vec![None; 700];
        let mut snapshots = Vec::new();
        for op in ops {
            snapshots.push((store.clone(), model.clone()));
            match op {
                StoreOp::Set(i, k) => {
                    let node = k.map(parent);
                    store.set(i, node.clone().map(std::sync::Arc::new));
                    if let Some(slot) = model.get_mut(i) {
                        *slot = node;
                    }
                }
                StoreOp::SetLeaf(i, k, x509) => {
                    let node = indexed_leaf(k, x509);
                    store.set(i, Some(std::sync::Arc::new(node.clone())));
                    if let Some(slot) = model.get_mut(i) {
                        *slot = Some(node);
                    }
                }
                StoreOp::Resize(n) => {
                    store.resize(n);
                    model.resize(n, None);
                }
            }
            prop_assert_eq!(store.len(), model.len());
            check_key_index(&store, &model)?;
            for (a, b) in store.iter().zip(&model) {
                prop_assert_eq!(a, b.as_ref());
            }
            for lo in (0..model.len()).step_by(97) {
                for hi in [lo, lo + 3, lo + 300, lo + 1000] {
                    let expected = model
                        .iter()
                        .enumerate()
                        .any(|(i, n)| i >= lo && i <= hi && n.is_some());
                    prop_assert_eq!(store.any_non_blank(lo, hi), expected, "{}..={}", lo, hi);
                }
            }
        }
        for (store, model) in snapshots {
            prop_assert_eq!(store.len(), model.len());
            check_key_index(&store, &model)?;
            for (a, b) in store.iter().zip(&model) {
                prop_assert_eq!(a, b.as_ref());
            }
        }
    }
}

/// Many replacements in one chunk (past the point where its filters are
/// rebuilt), leaves and parents, changing credential types: the lookups
/// and counts still agree with a scan.
#[test]
fn key_index_survives_many_replacements_in_one_chunk() {
    let mut store = NodeStore::blank(600);
    let mut model: Vec<Option<Node>> = vec![None; 600];
    let mut put = |store: &mut NodeStore, i: usize, node: Option<Node>| {
        store.set(i, node.clone().map(std::sync::Arc::new));
        model[i] = node;
        check_key_index(store, &model).unwrap();
    };
    for round in 0u8..4 {
        for i in (0..200).step_by(2) {
            let k = (i as u8 / 2).wrapping_add(round * 7) % 40;
            put(
                &mut store,
                i,
                Some(indexed_leaf(k, (i / 2 + round as usize).is_multiple_of(3))),
            );
        }
        for i in (1..200).step_by(4) {
            put(
                &mut store,
                i,
                Some(parent(round.wrapping_mul(31).wrapping_add(i as u8))),
            );
        }
        for i in (0..200).step_by(6) {
            put(&mut store, i, None);
        }
    }
    store.resize(100);
    model.truncate(100);
    check_key_index(&store, &model).unwrap();
}

fn fresh_hash(tree: &RatchetTree) -> hsmls_crypto::Digest {
    let mut fresh = UnverifiedTree::new(tree.provider(), tree.to_ratchet_tree())
        .expect("well formed")
        .trusted_without_validation();
    fresh.tree_hash().expect("hash")
}

/// The resolution helpers agree with the resolution.
fn check_resolutions(tree: &RatchetTree) {
    let excluded = [LeafIndex(3), LeafIndex(600)];
    for x in 0..tree.node_count() {
        let x = NodeIndex(x);
        let res = tree.resolution_excluding(x, &excluded).expect("resolution");
        assert_eq!(tree.resolution_len(x, &excluded), res.len(), "{x:?}");
        assert_eq!(
            tree.resolution_is_empty(x),
            tree.resolution(x).expect("resolution").is_empty()
        );
        for (k, r) in res.iter().enumerate() {
            assert_eq!(tree.resolution_position(x, &excluded, *r), Some(k));
        }
    }
}

/// Adds, removes and updates over a multi-chunk tree: the incrementally
/// kept tree hash equals a from-scratch one after every change, and the
/// resolution helpers agree with the resolution.
#[test]
fn large_tree_incremental_hashes_and_resolutions() {
    let p = provider();
    let mut tree = RatchetTree::new(p, dummy_leaf(0));
    for i in 1..600 {
        tree.add_leaf(dummy_leaf(i)).expect("add");
    }
    assert_eq!(tree.leaf_count(), 1024);
    assert_eq!(tree.tree_hash().expect("hash"), fresh_hash(&tree));
    // Non-blank parents with unmerged leaves: set some parents by hand.
    for (k, x) in [(1u8, 511u32), (2, 255), (3, 767), (4, 1023)] {
        tree.set_node(NodeIndex(x), Some(parent(k)));
    }
    tree.add_leaf(dummy_leaf(1000)).expect("add after parents");
    assert_eq!(tree.tree_hash().expect("hash"), fresh_hash(&tree));
    // The new leaf is unmerged at every non-blank parent above it.
    for x in tree.direct_path(LeafIndex(600)).expect("path") {
        if let Some(p) = tree.parent_node(x) {
            assert_eq!(p.unmerged_leaves, vec![LeafIndex(600)], "{x:?}");
        }
    }
    assert!(tree.parent_node(NodeIndex(1023)).is_some());
    check_resolutions(&tree);
    let mut next = 1001;
    for step in 0..40u32 {
        let victim = LeafIndex((step * 37) % tree.leaf_count());
        if tree.leaf(victim).is_some() && tree.member_count() > 1 {
            tree.remove_leaf(victim).expect("remove");
        }
        if step % 3 == 0 {
            let i = tree.add_leaf(dummy_leaf(next)).expect("add");
            next += 1;
            assert_eq!(tree.leaf(i), Some(&dummy_leaf(next - 1)));
        }
        if step % 5 == 0 {
            let (i, _) = tree.leaves().nth(step as usize).expect("a member");
            tree.update_leaf(i, dummy_leaf(next)).expect("update");
            next += 1;
        }
        assert_eq!(
            tree.tree_hash().expect("hash"),
            fresh_hash(&tree),
            "step {step}"
        );
    }
    check_resolutions(&tree);
    // Removing everything but leaf 0 truncates back to one leaf.
    let members: Vec<LeafIndex> = tree.leaves().map(|(i, _)| i).collect();
    let keep = members[0];
    for i in members.into_iter().skip(1) {
        tree.remove_leaf(i).expect("remove");
    }
    assert_eq!(tree.member_count(), 1);
    // §7.7: 2^d leaves for the smallest d with 2^d > L.
    assert_eq!(tree.leaf_count(), (keep.0 + 1).next_power_of_two());
    assert_eq!(tree.tree_hash().expect("hash"), fresh_hash(&tree));
}

/// A tree of at least 1,024 leaves hashed from scratch is hashed on two
/// threads (one per half under the root): the same root hash as node by
/// node on this thread, and every node's hash is cached afterwards.
#[test]
fn parallel_tree_hash_matches_serial() {
    let p = provider();
    let mut tree = RatchetTree::new(p, dummy_leaf(0));
    for i in 1..1500 {
        tree.add_leaf(dummy_leaf(i)).expect("add");
    }
    for (k, x) in [(1u8, 511u32), (2, 1023), (3, 2047), (4, 3071)] {
        tree.set_node(NodeIndex(x), Some(parent(k)));
    }
    assert_eq!(tree.leaf_count(), 2048);
    let mut serial = UnverifiedTree::new(p, tree.to_ratchet_tree())
        .expect("well formed")
        .trusted_without_validation();
    let root = serial.root();
    let expected = serial.node_tree_hash(root).expect("serial hash");
    let mut parallel = UnverifiedTree::new(p, tree.to_ratchet_tree())
        .expect("well formed")
        .trusted_without_validation();
    assert!(parallel.cached_hash(root).is_none());
    assert_eq!(parallel.tree_hash().expect("parallel hash"), expected);
    for x in 0..parallel.node_count() {
        let x = NodeIndex(x);
        assert_eq!(
            parallel.cached_hash(x),
            Some(serial.node_tree_hash(x).expect("hash")),
            "{x:?}"
        );
    }
    // A changed leaf in one half: only that path is recomputed, and the
    // hash still matches.
    parallel
        .update_leaf(LeafIndex(1200), dummy_leaf(5000))
        .expect("update");
    serial
        .update_leaf(LeafIndex(1200), dummy_leaf(5000))
        .expect("update");
    let root = serial.root();
    assert_eq!(
        parallel.tree_hash().expect("hash"),
        serial.node_tree_hash(root).expect("hash")
    );
}

/// Membership checks: duplicate keys and credential types.
#[test]
fn check_leaves_fit_rejects_duplicates() {
    let p = provider();
    let mut tree = RatchetTree::new(p, dummy_leaf(0));
    for i in 1..300 {
        tree.add_leaf(dummy_leaf(i)).expect("add");
    }
    tree.check_leaves_fit(&[(None, &dummy_leaf(500))])
        .expect("fresh leaf fits");
    let mut same_enc = dummy_leaf(501);
    same_enc.encryption_key = dummy_leaf(299).encryption_key;
    assert!(matches!(
        tree.check_leaves_fit(&[(None, &same_enc)]),
        Err(TreeError::DuplicateKey {
            kind: KeyKind::EncryptionKey,
            ..
        })
    ));
    let mut same_sig = dummy_leaf(502);
    same_sig.signature_key = dummy_leaf(7).signature_key;
    assert!(matches!(
        tree.check_leaves_fit(&[(None, &same_sig)]),
        Err(TreeError::DuplicateKey {
            kind: KeyKind::SignatureKey,
            ..
        })
    ));
    // A member may keep its signature key but not its encryption key.
    tree.check_leaves_fit(&[(Some(LeafIndex(7)), &same_sig)])
        .expect("own signature key");
    let mut same_own_enc = dummy_leaf(503);
    same_own_enc.encryption_key = dummy_leaf(7).encryption_key;
    let r = tree.check_leaves_fit(&[(Some(LeafIndex(7)), &same_own_enc)]);
    assert!(
        matches!(
            r,
            Err(TreeError::DuplicateKey {
                kind: KeyKind::EncryptionKey,
                ..
            })
        ),
        "{r:?}"
    );
    // Two new leaves with the same key.
    let r = tree.check_leaves_fit(&[(None, &dummy_leaf(600)), (None, &dummy_leaf(600))]);
    assert!(
        matches!(
            r,
            Err(TreeError::DuplicateKey {
                kind: KeyKind::EncryptionKey,
                ..
            })
        ),
        "{r:?}"
    );
    // A credential type the members do not support.
    let mut x509 = dummy_leaf(700);
    x509.credential = Credential::X509(vec![]);
    x509.capabilities.credentials.push(CredentialType::X509);
    assert!(matches!(
        tree.check_leaves_fit(&[(None, &x509)]),
        Err(TreeError::CredentialTypeNotShared(2))
    ));
    // A leaf that does not support the type in use.
    let mut no_basic = dummy_leaf(701);
    no_basic.capabilities.credentials = vec![CredentialType::X509];
    let r = tree.check_leaves_fit(&[(None, &no_basic)]);
    assert!(
        matches!(r, Err(TreeError::CredentialTypeNotShared(1))),
        "{r:?}"
    );
}

struct TestMember {
    private: TreeKemPrivate,
    signature_key: KeyRef,
}

fn signed_member(
    p: &'static dyn CipherSuiteProvider,
    custody: &SoftwareCustody,
    name: &str,
) -> (LeafNode, KeyRef, KeyRef) {
    let sig = custody
        .generate(KeySpec::ECDSA_SECP256R1_SHA256)
        .expect("keygen");
    let enc = custody
        .generate(KeySpec::DHKEM_P256_HKDF_SHA256)
        .expect("keygen");
    let params = LeafNodeParams {
        credential: Credential::Basic(name.as_bytes().to_vec()),
        capabilities: capabilities(),
        extensions: vec![],
    };
    let leaf = sign_leaf_node(
        p,
        custody,
        &sig,
        HpkePublicKey(enc.public_key().as_bytes().to_vec()),
        &params,
        LeafNodeSource::KeyPackage(Lifetime {
            not_before: 100,
            not_after: 200,
        }),
        None,
    )
    .expect("sign");
    (leaf, sig, enc)
}

fn gc(tree_hash: &[u8], epoch: u64) -> Vec<u8> {
    GroupContext {
        version: ProtocolVersion::MLS10,
        cipher_suite: WireSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256,
        group_id: b"g".to_vec(),
        epoch,
        tree_hash: tree_hash.to_vec(),
        confirmed_transcript_hash: vec![],
        extensions: vec![],
    }
    .encode()
    .expect("encode")
}

const PARAMS: GroupParams<'static> = GroupParams {
    group_id: b"g",
    cipher_suite: WireSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256,
    version: ProtocolVersion::MLS10,
    required_capabilities: None,
    now: Some(150),
    max_lifetime: Some(1000),
};

/// A commit that adds a member and carries a path: the new member is an
/// unmerged leaf, excluded from the path encryption, joins with the path
/// secret of the common ancestor; every member ends with the same commit
/// secret and tree; replaced leaf keys are destroyed at merge.
#[test]
fn treekem_with_new_members() {
    let p = provider();
    let custody = SoftwareCustody::new();
    let mut members = Vec::new();
    let mut tree: Option<RatchetTree> = None;
    for i in 0..6 {
        let (leaf, sig, enc) = signed_member(p, &custody, &format!("m{i}"));
        validate_leaf_node(p, &leaf, LeafNodeUsage::KeyPackage, &PARAMS).expect("valid");
        let index = match &mut tree {
            None => {
                tree = Some(RatchetTree::new(p, leaf));
                LeafIndex(0)
            }
            Some(t) => {
                t.check_leaves_fit(&[(None, &leaf)]).expect("fits");
                t.add_leaf(leaf).expect("add")
            }
        };
        members.push(TestMember {
            private: TreeKemPrivate::new(index, enc),
            signature_key: sig,
        });
    }
    let mut tree = tree.expect("tree");
    let mut epoch = 1;

    // Each member commits in turn; everyone else processes.
    let commit = |tree: &mut RatchetTree,
                  members: &mut Vec<TestMember>,
                  sender: usize,
                  added: &[LeafIndex],
                  epoch: u64| {
        let mut staged = tree.clone();
        let s = members[sender].private.own_leaf();
        let params = LeafNodeParams::from_leaf(staged.leaf(s).expect("leaf"));
        let prepared = prepare_update_path(
            &mut staged,
            s,
            b"g",
            &params,
            &custody,
            &members[sender].signature_key,
        )
        .expect("prepare");
        let th = staged.tree_hash().expect("hash");
        let created = prepared
            .encrypt(&staged, &gc(th.as_bytes(), epoch), added)
            .expect("encrypt");
        let total: usize = created
            .update_path
            .nodes
            .iter()
            .map(|n| n.encrypted_path_secret.len())
            .sum();
        let mut results = Vec::new();
        for (m, member) in members.iter().enumerate() {
            if m == sender || added.contains(&member.private.own_leaf()) {
                continue;
            }
            let mut t = tree.clone();
            let merged =
                merge_update_path(&mut t, s, &created.update_path, &PARAMS, added).expect("merge");
            assert_eq!(t, staged);
            let out = decrypt_update_path(
                &t,
                &merged,
                &created.update_path,
                &member.private,
                &custody,
                &gc(th.as_bytes(), epoch),
            )
            .expect("decrypt");
            assert_eq!(out.commit_secret, created.commit_secret);
            results.push((m, out.private));
        }
        *tree = staged;
        for (m, next) in results {
            let old = std::mem::replace(&mut members[m].private, next);
            old.retire(&members[m].private, &custody).expect("retire");
        }
        let old = std::mem::replace(&mut members[sender].private, created.private.clone());
        let old_key = old.leaf_key().clone();
        old.retire(&members[sender].private, &custody)
            .expect("retire");
        assert!(
            matches!(
                custody.find(old_key.uri()),
                Err(hsmls_custody::CustodyError::KeyNotFound(_))
            ),
            "replaced leaf key destroyed"
        );
        (created, total)
    };

    let (_, total) = commit(&mut tree, &mut members, 0, &[], epoch);
    assert_eq!(total, 5, "first path encrypts to every other leaf");
    epoch += 1;
    commit(&mut tree, &mut members, 3, &[], epoch);
    epoch += 1;

    // Add a member, then commit with a path in the same commit.
    let (leaf, sig, enc) = signed_member(p, &custody, "joiner");
    let mut staged = tree.clone();
    let j = staged.add_leaf(leaf).expect("add");
    assert_eq!(j, LeafIndex(6));
    assert!(
        (0..staged.node_count())
            .filter_map(|x| staged.parent_node(NodeIndex(x)))
            .any(|p| p.unmerged_leaves.contains(&j)),
        "the joiner is unmerged at a non-blank ancestor"
    );
    tree = staged;
    members.push(TestMember {
        private: TreeKemPrivate::new(j, enc),
        signature_key: sig,
    });
    let (created, _) = commit(&mut tree, &mut members, 1, &[j], epoch);
    for n in &created.update_path.nodes {
        assert!(n.encrypted_path_secret.len() <= 6);
    }
    // The joiner: path secret of the common ancestor of 1 and 6.
    let secret = created.path_secret_for(j).expect("path secret");
    let lca = crate::tree_math::common_ancestor(
        LeafIndex(1).node_index().expect("node"),
        j.node_index().expect("node"),
    );
    members[6]
        .private
        .join_at(&tree, lca, secret.as_bytes())
        .expect("join");
    assert!(members[6].private.parent_key(lca).is_some());
    assert!(members[6].private.parent_key(tree.root()).is_some());
    epoch += 1;

    // The joiner commits; everybody (including the joiner's keys) works.
    commit(&mut tree, &mut members, 6, &[], epoch);
    epoch += 1;
    commit(&mut tree, &mut members, 5, &[], epoch);

    // The final tree validates as a whole.
    let th = tree.tree_hash().expect("hash");
    let verified = UnverifiedTree::new(p, tree.to_ratchet_tree())
        .expect("well formed")
        .verify(th.as_bytes(), &PARAMS)
        .expect("valid tree");
    assert_eq!(verified, tree);

    // A wrong path secret for joining is rejected.
    let mut bad = TreeKemPrivate::new(LeafIndex(6), members[6].private.leaf_key().clone());
    let r = bad.join_at(&tree, tree.root(), &[7u8; 32]);
    assert!(matches!(r, Err(TreeError::PublicKeyMismatch(_))), "{r:?}");

    // Debug output shows no private key material.
    let debug = format!("{:?}", members[6].private);
    assert!(debug.contains("path_key_nodes"));
    let key = members[6]
        .private
        .parent_key(tree.root())
        .expect("root key");
    let private_hex: String = key
        .private_bytes()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(!debug.contains(&private_hex));
}

/// LeafNode validation rejects what §7.3 rejects.
#[test]
fn leaf_node_validation() {
    let p = provider();
    let custody = SoftwareCustody::new();
    let (leaf, _, _) = signed_member(p, &custody, "a");
    validate_leaf_node(p, &leaf, LeafNodeUsage::KeyPackage, &PARAMS).expect("valid");
    // Wrong source for the use.
    let r = validate_leaf_node(p, &leaf, LeafNodeUsage::Update(LeafIndex(0)), &PARAMS);
    assert!(
        matches!(
            r,
            Err(TreeError::InvalidLeafNode {
                reason: LeafNodeError::WrongSource {
                    expected: LeafNodeSourceType::Update,
                    actual: LeafNodeSourceType::KeyPackage
                },
                ..
            })
        ),
        "{r:?}"
    );
    // Lifetime.
    let late = GroupParams {
        now: Some(201),
        ..PARAMS
    };
    assert!(matches!(
        validate_leaf_node(p, &leaf, LeafNodeUsage::KeyPackage, &late),
        Err(TreeError::InvalidLeafNode {
            reason: LeafNodeError::OutsideLifetime { .. },
            ..
        })
    ));
    let short = GroupParams {
        max_lifetime: Some(50),
        ..PARAMS
    };
    let r = validate_leaf_node(p, &leaf, LeafNodeUsage::KeyPackage, &short);
    assert!(
        matches!(
            r,
            Err(TreeError::InvalidLeafNode {
                reason: LeafNodeError::LifetimeTooLong { max: 50, .. },
                ..
            })
        ),
        "{r:?}"
    );
    // Signature.
    let mut bad = leaf.clone();
    bad.credential = Credential::Basic(b"b".to_vec());
    assert!(matches!(
        validate_leaf_node(p, &bad, LeafNodeUsage::KeyPackage, &PARAMS),
        Err(TreeError::InvalidLeafNode {
            reason: LeafNodeError::InvalidSignature,
            ..
        })
    ));
    // Cipher suite not listed.
    let other_suite = GroupParams {
        cipher_suite: WireSuite(7),
        ..PARAMS
    };
    let r = validate_leaf_node(p, &leaf, LeafNodeUsage::KeyPackage, &other_suite);
    assert!(
        matches!(
            r,
            Err(TreeError::InvalidLeafNode {
                reason: LeafNodeError::CipherSuiteNotSupported(7),
                ..
            })
        ),
        "{r:?}"
    );
    // Required capabilities.
    let req = codec::RequiredCapabilities {
        extension_types: vec![codec::ExtensionType(0xff00)],
        proposal_types: vec![],
        credential_types: vec![],
    };
    let required = GroupParams {
        required_capabilities: Some(&req),
        ..PARAMS
    };
    assert!(matches!(
        validate_leaf_node(p, &leaf, LeafNodeUsage::KeyPackage, &required),
        Err(TreeError::InvalidLeafNode {
            reason: LeafNodeError::MissingRequiredCapability {
                kind: CapabilityKind::Extension,
                value: 0xff00
            },
            ..
        })
    ));
}

/// Malformed trees and out-of-range indices give typed errors, never a
/// panic.
#[test]
fn malformed_input_is_rejected() {
    let p = provider();
    assert!(matches!(
        UnverifiedTree::new(p, codec::RatchetTree(vec![])),
        Err(TreeError::MalformedTree(TreeShape::NoNodes))
    ));
    assert!(matches!(
        UnverifiedTree::new(
            p,
            codec::RatchetTree(vec![Some(Node::Leaf(dummy_leaf(0))), None])
        ),
        Err(TreeError::MalformedTree(TreeShape::LastNodeBlank))
    ));
    assert!(matches!(
        UnverifiedTree::new(p, codec::RatchetTree(vec![Some(parent(1))])),
        Err(TreeError::WrongNodeType(NodeIndex(0)))
    ));
    assert!(matches!(
        UnverifiedTree::new(
            p,
            codec::RatchetTree(vec![
                Some(Node::Leaf(dummy_leaf(0))),
                Some(Node::Leaf(dummy_leaf(1)))
            ])
        ),
        Err(TreeError::WrongNodeType(NodeIndex(1)))
    ));
    // Three nodes given for a two-leaf tree; five are padded to seven.
    let t = UnverifiedTree::new(
        p,
        codec::RatchetTree(vec![
            Some(Node::Leaf(dummy_leaf(0))),
            None,
            None,
            None,
            Some(Node::Leaf(dummy_leaf(2))),
        ]),
    )
    .expect("well formed");
    assert_eq!(t.tree().leaf_count(), 4);
    assert_eq!(t.tree().node_count(), 7);
    // An unverified tree with an unsigned leaf does not validate.
    let mut t = t;
    let h = t.tree_hash().expect("hash");
    let r = t.verify(h.as_bytes(), &PARAMS);
    assert!(
        matches!(
            r,
            Err(TreeError::InvalidLeafNode {
                reason: LeafNodeError::InvalidSignatureKey,
                ..
            })
        ),
        "{:?}",
        r.err()
    );

    let mut tree = RatchetTree::new(p, dummy_leaf(0));
    tree.add_leaf(dummy_leaf(1)).expect("add");
    for x in [NodeIndex(3), NodeIndex(1 << 31), NodeIndex(u32::MAX)] {
        let r = tree.resolution(x);
        assert!(matches!(r, Err(TreeError::TreeMath(_))), "{r:?}");
        assert!(tree.resolution_is_empty(x));
        assert_eq!(tree.resolution_len(x, &[]), 0);
        assert_eq!(tree.resolution_position(x, &[], NodeIndex(0)), None);
        let r = tree.node_tree_hash(x);
        assert!(matches!(r, Err(TreeError::TreeMath(_))), "{r:?}");
        assert!(tree.node(x).is_none());
    }
    for i in [LeafIndex(2), LeafIndex(u32::MAX)] {
        let r = tree.filtered_direct_path(i);
        assert!(matches!(r, Err(TreeError::LeafOutOfRange(_))), "{r:?}");
        let r = tree.remove_leaf(i);
        assert!(matches!(r, Err(TreeError::LeafOutOfRange(_))), "{r:?}");
        let r = tree.update_leaf(i, dummy_leaf(9));
        assert!(matches!(r, Err(TreeError::LeafOutOfRange(_))), "{r:?}");
        assert!(tree.leaf(i).is_none());
    }
    tree.remove_leaf(LeafIndex(1)).expect("remove");
    assert_eq!(tree.leaf_count(), 1);
    assert!(matches!(
        tree.update_leaf(LeafIndex(1), dummy_leaf(9)),
        Err(TreeError::LeafOutOfRange(_))
    ));
    let mut private = TreeKemPrivate::new(
        LeafIndex(0),
        SoftwareCustody::new()
            .generate(KeySpec::DHKEM_P256_HKDF_SHA256)
            .expect("keygen"),
    );
    assert!(matches!(
        private.set_path_secret(&tree, NodeIndex(1), &[0; 32]),
        Err(TreeError::NotOnDirectPath(_))
    ));
    let r = private.join_at(&tree, NodeIndex(u32::MAX), &[0; 32]);
    assert!(matches!(r, Err(TreeError::NotOnDirectPath(_))), "{r:?}");
}

/// Tree validation of a tree large enough to check leaves on several
/// threads: a valid tree passes, one bad leaf signature fails.
#[test]
fn parallel_leaf_validation() {
    let p = provider();
    let custody = SoftwareCustody::new();
    let (first, _, _) = signed_member(p, &custody, "m0");
    let mut tree = RatchetTree::new(p, first);
    for i in 1..70 {
        let (leaf, _, _) = signed_member(p, &custody, &format!("m{i}"));
        tree.add_leaf(leaf).expect("add");
    }
    let th = tree.tree_hash().expect("hash");
    let wire = tree.to_ratchet_tree();
    let verified = UnverifiedTree::new(p, wire.clone())
        .expect("well formed")
        .verify(th.as_bytes(), &PARAMS)
        .expect("valid");
    assert_eq!(verified, tree);
    let mut bad = wire;
    if let Some(Some(Node::Leaf(l))) = bad.0.get_mut(100)
        && let Some(b) = l.signature.last_mut()
    {
        *b ^= 1;
    }
    let mut u = UnverifiedTree::new(p, bad).expect("well formed");
    let h = u.tree_hash().expect("hash");
    assert!(matches!(
        u.verify(h.as_bytes(), &PARAMS),
        Err(TreeError::InvalidLeafNode {
            leaf: Some(LeafIndex(50)),
            ..
        })
    ));
}
