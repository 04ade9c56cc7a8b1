//! Costs of the suite-0x0002 operations that dominate commit processing:
//! the labeled KDF, DeriveKeyPair, HPKE seal/open, signatures.
//!
//! `cargo bench -p hsmls-crypto --bench suite`

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use hsmls_crypto::{CipherSuite, HpkeRecipient};
use hsmls_custody::{KeyCustody, KeySpec, SoftwareCustody};

fn bench(c: &mut Criterion) {
    let cs = CipherSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256
        .provider()
        .expect("suite 2");
    let secret = [7u8; 32];

    c.bench_function("expand_with_label/32B", |b| {
        b.iter(|| cs.expand_with_label(black_box(&secret), b"tree", b"left", 32))
    });
    c.bench_function("derive_key_pair", |b| {
        b.iter(|| cs.kem_derive_key_pair(black_box(&secret)))
    });

    let recipient = cs.kem_derive_key_pair(&secret).expect("key pair");
    let pk = recipient.public_key().as_bytes().to_vec();
    let plaintext = [1u8; 32];
    c.bench_function("encrypt_with_label/32B", |b| {
        b.iter(|| cs.encrypt_with_label(&pk, b"UpdatePathNode", b"ctx", &plaintext, None))
    });
    let (kem_output, ct) = cs
        .encrypt_with_label(&pk, b"UpdatePathNode", b"ctx", &plaintext, None)
        .expect("seal");
    c.bench_function("decrypt_with_label/software", |b| {
        let r = HpkeRecipient::Software(&recipient);
        b.iter(|| cs.decrypt_with_label(&r, b"UpdatePathNode", b"ctx", &kem_output, &ct))
    });
    let custody = SoftwareCustody::new();
    let key = custody
        .import(
            KeySpec::DHKEM_P256_HKDF_SHA256,
            recipient.private_bytes().as_bytes(),
        )
        .expect("import");
    c.bench_function("decrypt_with_label/software_custody", |b| {
        let r = HpkeRecipient::Custody {
            custody: &custody,
            key: &key,
        };
        b.iter(|| cs.decrypt_with_label(&r, b"UpdatePathNode", b"ctx", &kem_output, &ct))
    });

    let sig_key = custody
        .generate(KeySpec::ECDSA_SECP256R1_SHA256)
        .expect("key");
    let content = [3u8; 200];
    c.bench_function("sign_with_label/software_custody", |b| {
        b.iter(|| cs.sign_with_label(&custody, &sig_key, b"LeafNodeTBS", &content))
    });
    let sig = cs
        .sign_with_label(&custody, &sig_key, b"LeafNodeTBS", &content)
        .expect("sign");
    let spk = sig_key.public_key().as_bytes().to_vec();
    c.bench_function("verify_with_label", |b| {
        b.iter(|| cs.verify_with_label(&spk, b"LeafNodeTBS", &content, &sig))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
