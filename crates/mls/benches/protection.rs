//! Message protection (RFC 9420 §6.3) and secret-tree (§9) costs for cipher
//! suite 0x0002, with software custody.
//!
//! `cargo bench -p hsmls --bench protection`

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use hsmls::PaddingPolicy;
use hsmls::SecretTreeConfig;
use hsmls::internal::codec::{FramedContent, FramedContentBody};
use hsmls::internal::message_protection::{protect_private, sign_content, unprotect_private};
use hsmls::internal::secret_tree::{RatchetType, SecretTree};
use hsmls::wire::LeafIndex;
use hsmls::wire::{
    CipherSuite as WireCipherSuite, GroupContext, ProtocolVersion, Sender, SignaturePublicKey,
    WireFormat,
};
use hsmls_crypto::{CipherSuite, CipherSuiteProvider, Secret};
use hsmls_custody::{KeyCustody, KeySpec, SoftwareCustody};
use rand_core::OsRng;

fn suite() -> &'static dyn CipherSuiteProvider {
    CipherSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256
        .provider()
        .expect("suite 2")
}

fn tree(n_leaves: u32) -> SecretTree {
    let config = SecretTreeConfig::new(10_000, 5);
    SecretTree::new(suite(), Secret::from_slice(&[9; 32]), n_leaves, config).expect("tree")
}

fn private_message(c: &mut Criterion) {
    let cs = suite();
    let custody = SoftwareCustody::new();
    let signer = custody
        .generate(KeySpec::ECDSA_SECP256R1_SHA256)
        .expect("key");
    let members = vec![
        None,
        Some(SignaturePublicKey(signer.public_key().as_bytes().to_vec())),
    ];
    let context = GroupContext {
        version: ProtocolVersion::MLS10,
        cipher_suite: WireCipherSuite::from(cs.cipher_suite()),
        group_id: vec![1; 16],
        epoch: 7,
        tree_hash: vec![2; 32],
        confirmed_transcript_hash: vec![3; 32],
        extensions: vec![],
    };
    let sender_data_secret = Secret::from_slice(&[4; 32]);
    let framed = FramedContent {
        group_id: context.group_id.clone(),
        epoch: context.epoch,
        sender: Sender::Member(LeafIndex(1)),
        authenticated_data: vec![],
        body: FramedContentBody::Application(vec![0x61; 1024]),
    };
    let content = sign_content(
        cs,
        &custody,
        &signer,
        WireFormat::PRIVATE_MESSAGE,
        framed.clone(),
        Some(&context),
    )
    .expect("sign");

    let mut g = c.benchmark_group("private_message_1KiB");
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_secs(1));

    let mut sender_tree = tree(2);
    g.bench_function("protect", |b| {
        b.iter(|| {
            protect_private(
                cs,
                black_box(&content),
                &mut sender_tree,
                &sender_data_secret,
                PaddingPolicy::NONE,
                &mut OsRng,
            )
            .expect("protect")
        })
    });
    let mut sender_tree = tree(2);
    g.bench_function("sign_and_protect", |b| {
        b.iter(|| {
            let ac = sign_content(
                cs,
                &custody,
                &signer,
                WireFormat::PRIVATE_MESSAGE,
                black_box(framed.clone()),
                Some(&context),
            )
            .expect("sign");
            protect_private(
                cs,
                &ac,
                &mut sender_tree,
                &sender_data_secret,
                PaddingPolicy::NONE,
                &mut OsRng,
            )
            .expect("protect")
        })
    });

    // Unprotect (decrypt and verify the signature): each iteration gets a
    // fresh receiver tree, since a key decrypts once.
    let mut sender_tree = tree(2);
    let message = protect_private(
        cs,
        &content,
        &mut sender_tree,
        &sender_data_secret,
        PaddingPolicy::NONE,
        &mut OsRng,
    )
    .expect("protect");
    let receiver = tree(2);
    g.bench_function("unprotect", |b| {
        b.iter_batched(
            || receiver.clone(),
            |mut t| {
                unprotect_private(
                    cs,
                    black_box(&message),
                    &mut t,
                    &sender_data_secret,
                    &context,
                    &members,
                )
                .expect("unprotect")
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn secret_tree(c: &mut Criterion) {
    let mut g = c.benchmark_group("secret_tree");
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_secs(1));

    // The key of generation n of a sender already in use (its leaf secret
    // derived): n ratchet steps, keeping the last 5 skipped keys.
    for n in [0u32, 1, 10, 100, 1000] {
        let mut warm = tree(2);
        warm.decryption_key(LeafIndex(1), RatchetType::Application, 0)
            .expect("gen 0");
        g.bench_with_input(
            BenchmarkId::new("decryption_key_generation", n),
            &n,
            |b, &n| {
                b.iter_batched(
                    || warm.clone(),
                    |mut t| {
                        t.decryption_key(LeafIndex(1), RatchetType::Application, 1 + n)
                            .expect("key")
                    },
                    BatchSize::SmallInput,
                )
            },
        );
    }
    // A sender's first key: derive the path from the root to its leaf.
    for n_leaves in [2u32, 1024, 65536] {
        let fresh = tree(n_leaves);
        g.bench_with_input(
            BenchmarkId::new("first_key_of_sender", n_leaves),
            &n_leaves,
            |b, &n_leaves| {
                b.iter_batched(
                    || fresh.clone(),
                    |mut t| {
                        t.decryption_key(LeafIndex(n_leaves - 1), RatchetType::Handshake, 0)
                            .expect("key")
                    },
                    BatchSize::SmallInput,
                )
            },
        );
    }
    // The sender side: the next encryption key, ratchet already in use.
    let mut sender = tree(2);
    g.bench_function("next_encryption_key", |b| {
        b.iter(|| {
            sender
                .next_encryption_key(LeafIndex(0), RatchetType::Application)
                .expect("key")
        })
    });
    g.finish();
}

criterion_group!(benches, private_message, secret_tree);
criterion_main!(benches);
