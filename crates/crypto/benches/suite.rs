//! The same operations for every implemented suite (0x0001, 0x0002,
//! 0x0003, 0x0005, 0x0007), named `operation/suite` so that a table has one
//! row per operation and one column per suite:
//!
//! - hash (`hash/1KiB`) and the KDF (`kdf_extract`,
//!   `expand_with_label/32B`);
//! - HPKE keys: `kem_generate` (a random key pair), `derive_key_pair`
//!   (RFC 9180 `DeriveKeyPair`), `dh/software_custody` (the DH step of
//!   decapsulation, `KeyCustody::dh`);
//! - HPKE: `encrypt_with_label/32B` (seal: encapsulation and AEAD) and
//!   `decrypt_with_label/software_custody` (open, the key in
//!   [`SoftwareCustody`]); 32 bytes is a path secret's size;
//! - AEAD: `aead_seal` and `aead_open` at 32 bytes and 1 KiB (the
//!   application message of the `protection` bench of `hsmls`);
//! - signatures: `sign_with_label/software_custody` and
//!   `verify_with_label` over a 200-byte content.
//!
//! `cargo bench -p hsmls-crypto --bench suite` (all suites), or with a
//! criterion filter: `cargo bench -p hsmls-crypto --bench suite -- 0x0001`.

use std::time::Duration;

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use hsmls_crypto::{CipherSuite, CipherSuiteProvider, HpkeRecipient};
use hsmls_custody::{KeyCustody, SoftwareCustody};

fn bench_suite(c: &mut Criterion, cs: &dyn CipherSuiteProvider) {
    let suite = format!("0x{:04x}", cs.cipher_suite().0);
    let id = |op: &str| format!("{op}/{suite}");
    let secret = vec![7u8; cs.hash_len()];
    let custody = SoftwareCustody::new();

    // Hash and KDF.
    let kib = vec![5u8; 1024];
    c.bench_function(&id("hash/1KiB"), |b| b.iter(|| cs.hash(&[black_box(&kib)])));
    c.bench_function(&id("kdf_extract"), |b| {
        b.iter(|| cs.kdf_extract(black_box(&secret), &[&secret]))
    });
    c.bench_function(&id("expand_with_label/32B"), |b| {
        b.iter(|| cs.expand_with_label(black_box(&secret), b"tree", b"left", 32))
    });

    // HPKE keys.
    c.bench_function(&id("kem_generate"), |b| b.iter(|| cs.kem_generate()));
    c.bench_function(&id("derive_key_pair"), |b| {
        b.iter(|| cs.kem_derive_key_pair(black_box(&secret)))
    });
    let hpke_key = custody.generate(cs.hpke_key_spec()).expect("HPKE key");
    let peer = cs.kem_generate().expect("peer key");
    let peer_public = peer.public_key().as_bytes().to_vec();
    c.bench_function(&id("dh/software_custody"), |b| {
        b.iter(|| custody.dh(&hpke_key, black_box(&peer_public)))
    });

    // HPKE seal and open.
    let pk = hpke_key.public_key().as_bytes().to_vec();
    let plaintext = [1u8; 32];
    c.bench_function(&id("encrypt_with_label/32B"), |b| {
        b.iter(|| cs.encrypt_with_label(&pk, b"UpdatePathNode", b"ctx", &plaintext, None))
    });
    let (kem_output, ct) = cs
        .encrypt_with_label(&pk, b"UpdatePathNode", b"ctx", &plaintext, None)
        .expect("seal");
    let recipient = HpkeRecipient::Custody {
        custody: &custody,
        key: &hpke_key,
    };
    assert_eq!(
        cs.decrypt_with_label(&recipient, b"UpdatePathNode", b"ctx", &kem_output, &ct)
            .expect("open")
            .as_slice(),
        &plaintext[..]
    );
    c.bench_function(&id("decrypt_with_label/software_custody"), |b| {
        b.iter(|| cs.decrypt_with_label(&recipient, b"UpdatePathNode", b"ctx", &kem_output, &ct))
    });

    // AEAD.
    let key = vec![9u8; cs.aead_key_len()];
    let nonce = vec![3u8; cs.aead_nonce_len()];
    for (size, name) in [(32usize, "32B"), (1024, "1KiB")] {
        let message = vec![0x61u8; size];
        c.bench_function(&id(&format!("aead_seal/{name}")), |b| {
            b.iter(|| {
                let mut buffer = message.clone();
                cs.aead_seal_in_place(&key, &nonce, b"aad", &mut buffer)
                    .map(|()| buffer)
            })
        });
        let mut sealed = message.clone();
        cs.aead_seal_in_place(&key, &nonce, b"aad", &mut sealed)
            .expect("seal");
        c.bench_function(&id(&format!("aead_open/{name}")), |b| {
            b.iter(|| {
                let mut buffer = sealed.clone();
                cs.aead_open_in_place(&key, &nonce, b"aad", &mut buffer)
                    .map(|()| buffer)
            })
        });
    }

    // Signatures.
    let sig_key = custody
        .generate(cs.signature_key_spec())
        .expect("signature key");
    let content = [3u8; 200];
    c.bench_function(&id("sign_with_label/software_custody"), |b| {
        b.iter(|| cs.sign_with_label(&custody, &sig_key, b"LeafNodeTBS", &content))
    });
    let sig = cs
        .sign_with_label(&custody, &sig_key, b"LeafNodeTBS", &content)
        .expect("sign");
    let spk = sig_key.public_key().as_bytes().to_vec();
    cs.verify_with_label(&spk, b"LeafNodeTBS", &content, &sig)
        .expect("verify");
    c.bench_function(&id("verify_with_label"), |b| {
        b.iter(|| cs.verify_with_label(&spk, b"LeafNodeTBS", &content, &sig))
    });
}

fn bench(c: &mut Criterion) {
    for suite in CipherSuite::IMPLEMENTED {
        bench_suite(c, suite.provider().expect("an implemented suite"));
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
