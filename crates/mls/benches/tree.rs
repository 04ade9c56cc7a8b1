//! UpdatePath processing (RFC 9420 §7.5) at 1,000 and 10,000 leaves with
//! software custody: a member stages a copy of the tree, merges the
//! committer's UpdatePath (leaf validation, parent hashes), recomputes the
//! tree hash, and decrypts its path secret.
//!
//! The tree is a freshly filled group (all parent nodes blank), the worst
//! case for resolution sizes: the committer's UpdatePath carries one
//! ciphertext per other member.
//!
//! Run: `cargo bench -p hsmls --bench tree`

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use hsmls::internal::tree::RatchetTree;
use hsmls::internal::tree::{
    GroupParams, LeafNodeParams, TreeKemPrivate, decrypt_update_path, merge_update_path,
    prepare_update_path, sign_leaf_node,
};
use hsmls::wire::LeafIndex;
use hsmls::wire::{
    Capabilities, CipherSuite as WireSuite, Credential, CredentialType, Encode, GroupContext,
    HpkePublicKey, LeafNode, LeafNodeSource, Lifetime, ProtocolVersion, SignaturePublicKey,
};
use hsmls_crypto::{CipherSuite, CipherSuiteProvider};
use hsmls_custody::{KeyCustody, KeySpec, SoftwareCustody};

const GROUP_ID: &[u8] = b"bench group";

fn params() -> LeafNodeParams {
    LeafNodeParams {
        credential: Credential::Basic(b"member".to_vec()),
        capabilities: Capabilities {
            versions: vec![ProtocolVersion::MLS10],
            cipher_suites: vec![WireSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256],
            extensions: vec![],
            proposals: vec![],
            credentials: vec![CredentialType::BASIC],
        },
        extensions: vec![],
    }
}

fn group_context(tree_hash: &[u8]) -> Vec<u8> {
    GroupContext {
        version: ProtocolVersion::MLS10,
        cipher_suite: WireSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256,
        group_id: GROUP_ID.to_vec(),
        epoch: 1,
        tree_hash: tree_hash.to_vec(),
        confirmed_transcript_hash: vec![0; 32],
        extensions: vec![],
    }
    .encode()
    .expect("encode")
}

/// A tree of `n` members: leaf 0 (the committer) and leaf 1 (the receiver,
/// who derives the whole path: the worst case) have keys in `custody` and
/// signed LeafNodes; the other members have distinct software HPKE keys (their LeafNodes are not
/// verified by the processing being measured).
fn group(
    provider: &'static dyn CipherSuiteProvider,
    custody: &SoftwareCustody,
    n: u32,
) -> (RatchetTree, Vec<TreeKemPrivate>, Vec<hsmls_custody::KeyRef>) {
    let p = params();
    let mut privates = Vec::new();
    let mut sig_keys = Vec::new();
    let mut member = |tree: Option<&mut RatchetTree>| {
        let sig = custody
            .generate(KeySpec::ECDSA_SECP256R1_SHA256)
            .expect("keygen");
        let enc = custody
            .generate(KeySpec::DHKEM_P256_HKDF_SHA256)
            .expect("keygen");
        let leaf = sign_leaf_node(
            provider,
            custody,
            &sig,
            HpkePublicKey(enc.public_key().as_bytes().to_vec()),
            &p,
            LeafNodeSource::KeyPackage(Lifetime {
                not_before: 0,
                not_after: u64::MAX,
            }),
            None,
        )
        .expect("sign");
        let index = match tree {
            Some(t) => t.add_leaf(leaf.clone()).expect("add"),
            None => LeafIndex(0),
        };
        privates.push(TreeKemPrivate::new(index, enc));
        sig_keys.push(sig);
        leaf
    };
    let first = member(None);
    let mut tree = RatchetTree::new(provider, first);
    member(Some(&mut tree));
    for i in 2..n {
        let key = provider.kem_generate().expect("kem");
        let pk = key.public_key().as_bytes().to_vec();
        tree.add_leaf(LeafNode {
            encryption_key: HpkePublicKey(pk.clone()),
            signature_key: SignaturePublicKey([pk, i.to_be_bytes().to_vec()].concat()),
            credential: p.credential.clone(),
            capabilities: p.capabilities.clone(),
            leaf_node_source: LeafNodeSource::KeyPackage(Lifetime {
                not_before: 0,
                not_after: u64::MAX,
            }),
            extensions: vec![],
            signature: vec![0; 70],
        })
        .expect("add");
    }
    tree.tree_hash().expect("hash");
    (tree, privates, sig_keys)
}

fn bench_process(c: &mut Criterion) {
    let provider = CipherSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256
        .provider()
        .expect("suite 2");
    let mut g = c.benchmark_group("update_path");
    g.sample_size(20);
    for n in [1_000u32, 10_000] {
        let custody = SoftwareCustody::new();
        let (tree, privates, sig_keys) = group(provider, &custody, n);
        // The committer's self-update.
        let mut committer_tree = tree.clone();
        let prepared = prepare_update_path(
            &mut committer_tree,
            LeafIndex(0),
            GROUP_ID,
            &params(),
            &custody,
            &sig_keys[0],
        )
        .expect("prepare");
        let gc = group_context(committer_tree.tree_hash().expect("hash").as_bytes());
        let created = prepared
            .encrypt(&committer_tree, &gc, &[])
            .expect("encrypt");
        let path = created.update_path;
        let receiver = &privates[1];
        let group_params = GroupParams {
            group_id: GROUP_ID,
            cipher_suite: WireSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256,
            version: ProtocolVersion::MLS10,
            required_capabilities: None,
            now: Some(1),
            max_lifetime: None,
        };
        g.bench_function(format!("process/{n}"), |b| {
            b.iter(|| {
                let mut staged = tree.clone();
                let merged =
                    merge_update_path(&mut staged, LeafIndex(0), &path, &group_params, &[])
                        .expect("merge");
                let th = staged.tree_hash().expect("hash");
                let gc = group_context(th.as_bytes());
                let out = decrypt_update_path(&staged, &merged, &path, receiver, &custody, &gc)
                    .expect("decrypt");
                black_box((staged, out.commit_secret))
            })
        });
        // The parts: merge (LeafNode signature and checks, parent hashes)
        // plus tree hash, and decryption plus key derivation.
        g.bench_function(format!("merge/{n}"), |b| {
            b.iter(|| {
                let mut staged = tree.clone();
                merge_update_path(&mut staged, LeafIndex(0), &path, &group_params, &[])
                    .expect("merge");
                black_box(staged.tree_hash().expect("hash"))
            })
        });
        let mut merged_tree = tree.clone();
        let merged = merge_update_path(&mut merged_tree, LeafIndex(0), &path, &group_params, &[])
            .expect("merge");
        let merged_gc = group_context(merged_tree.tree_hash().expect("hash").as_bytes());
        g.bench_function(format!("decrypt/{n}"), |b| {
            b.iter(|| {
                black_box(
                    decrypt_update_path(
                        &merged_tree,
                        &merged,
                        &path,
                        receiver,
                        &custody,
                        &merged_gc,
                    )
                    .expect("decrypt")
                    .commit_secret,
                )
            })
        });
        g.bench_function(format!("stage_copy/{n}"), |b| {
            b.iter_batched(|| (), |()| black_box(tree.clone()), BatchSize::SmallInput)
        });
    }
    g.finish();
}

/// UpdatePath creation (both phases) for a first self-update in a fresh
/// group of 1,000: one HPKE seal per other member, spread over the cores.
fn bench_create(c: &mut Criterion) {
    let provider = CipherSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256
        .provider()
        .expect("suite 2");
    let mut g = c.benchmark_group("update_path");
    g.sample_size(10);
    let n = 1_000;
    let custody = SoftwareCustody::new();
    let (tree, _, sig_keys) = group(provider, &custody, n);
    g.bench_function(format!("create/{n}"), |b| {
        b.iter(|| {
            let mut staged = tree.clone();
            let prepared = prepare_update_path(
                &mut staged,
                LeafIndex(0),
                GROUP_ID,
                &params(),
                &custody,
                &sig_keys[0],
            )
            .expect("prepare");
            let gc = group_context(staged.tree_hash().expect("hash").as_bytes());
            let created = prepared.encrypt(&staged, &gc, &[]).expect("encrypt");
            custody
                .destroy(created.private.leaf_key())
                .expect("destroy");
            black_box(created.update_path)
        })
    });
    g.finish();
}

criterion_group!(benches, bench_process, bench_create);
criterion_main!(benches);
