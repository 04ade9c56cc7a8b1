//! Custody benchmarks: sign, ECDH and key generation per backend.
//!
//! `cargo bench -p hsmls-custody`. The PKCS#11 backend uses the token named
//! by `HSMLS_PKCS11_CONFIG` (run `scripts/setup-hsm.sh` and export what it
//! prints, or use `scripts/bench.sh`); without it the PKCS#11 benches fail.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hsmls_custody::{KeyCustody, KeySpec, Pkcs11Custody, SoftwareCustody};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand_core::OsRng;
use sha2::{Digest, Sha256};

fn backends() -> Vec<(&'static str, Box<dyn KeyCustody>)> {
    let pkcs11 = Pkcs11Custody::open_from_env().unwrap_or_else(|e| {
        panic!("the PKCS#11 bench needs the SoftHSM token: run scripts/bench.sh ({e})")
    });
    vec![
        ("software", Box::new(SoftwareCustody::new())),
        ("pkcs11", Box::new(pkcs11)),
    ]
}

fn bench(c: &mut Criterion) {
    let digest: [u8; 32] = Sha256::digest(b"hsmls bench").into();
    let peer = p256::SecretKey::random(&mut OsRng)
        .public_key()
        .to_encoded_point(false);
    for (name, custody) in backends() {
        let sig = custody.generate(KeySpec::ECDSA_SECP256R1_SHA256).unwrap();
        let hpke = custody.generate(KeySpec::DHKEM_P256_HKDF_SHA256).unwrap();

        let mut g = c.benchmark_group("custody");
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("sign", name), |b| {
            b.iter(|| custody.sign_prehash(&sig, &digest).unwrap())
        });
        g.bench_function(BenchmarkId::new("ecdh", name), |b| {
            b.iter(|| custody.dh(&hpke, peer.as_bytes()).unwrap())
        });
        g.bench_function(BenchmarkId::new("keygen_hpke", name), |b| {
            b.iter(|| {
                let k = custody.generate(KeySpec::DHKEM_P256_HKDF_SHA256).unwrap();
                custody.destroy(&k).unwrap();
            })
        });
        g.finish();

        // Token-object key generation is slow (a file write per object on
        // SoftHSM): fewer samples.
        let mut g = c.benchmark_group("custody-slow");
        g.sample_size(10);
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("keygen_signature", name), |b| {
            b.iter(|| {
                let k = custody.generate(KeySpec::ECDSA_SECP256R1_SHA256).unwrap();
                custody.destroy(&k).unwrap();
            })
        });
        g.finish();

        custody.destroy(&sig).unwrap();
        custody.destroy(&hpke).unwrap();
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
