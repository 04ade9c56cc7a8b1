//! Custody benchmarks: sign and DH (derive) per curve, and key generation,
//! per backend (software and PKCS#11).
//!
//! `cargo bench -p hsmls-custody`. The PKCS#11 backend uses the token named
//! by `HSMLS_PKCS11_CONFIG` (run `scripts/setup-hsm.sh` and export what it
//! prints, or use `scripts/bench.sh`); without it the PKCS#11 benches fail.
//!
//! - `sign/{curve}/{backend}`: `KeyCustody::sign` (the call the engine
//!   makes) over a 200-byte message: Ed25519 (PureEdDSA, `CKM_EDDSA`),
//!   ECDSA over P-256/SHA-256, P-384/SHA-384 and P-521/SHA-512 (the digest
//!   in software, `CKM_ECDSA` in the token; DER, low S);
//! - `dh/{curve}/{backend}`: `KeyCustody::dh` with a fixed valid peer key
//!   (`CKM_ECDH1_DERIVE`, the secret read and its object destroyed) on
//!   X25519, P-256, P-384 and P-521; X25519 in software only (SoftHSM has
//!   no Montgomery key agreement: skipped with its reason);
//! - `keygen_hpke/{backend}`, `keygen_signature/{backend}`: P-256 key
//!   generation and destruction (HPKE keys: session objects wrapped under
//!   the token's AES key; signature keys: token objects).
//!
//! Criterion's throughput is one operation per iteration, so it prints the
//! rates (operations per second) beside the times.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hsmls_custody::{KeyCustody, KeySpec, Pkcs11Custody, SoftwareCustody};

fn backends() -> Vec<(&'static str, Box<dyn KeyCustody>)> {
    let pkcs11 = Pkcs11Custody::open_from_env().unwrap_or_else(|e| {
        panic!("the PKCS#11 bench needs the SoftHSM token: run scripts/bench.sh ({e})")
    });
    vec![
        ("software", Box::new(SoftwareCustody::new())),
        ("pkcs11", Box::new(pkcs11)),
    ]
}

/// The curves: the signature key spec and its name, the KEM key spec and
/// its name (Curve25519 signs as Ed25519 and agrees as X25519).
const CURVES: [(&str, KeySpec, &str, KeySpec); 4] = [
    (
        "ed25519",
        KeySpec::ED25519,
        "x25519",
        KeySpec::DHKEM_X25519_HKDF_SHA256,
    ),
    (
        "p256",
        KeySpec::ECDSA_SECP256R1_SHA256,
        "p256",
        KeySpec::DHKEM_P256_HKDF_SHA256,
    ),
    (
        "p384",
        KeySpec::ECDSA_SECP384R1_SHA384,
        "p384",
        KeySpec::DHKEM_P384_HKDF_SHA384,
    ),
    (
        "p521",
        KeySpec::ECDSA_SECP521R1_SHA512,
        "p521",
        KeySpec::DHKEM_P521_HKDF_SHA512,
    ),
];

fn bench(c: &mut Criterion) {
    let message = [0x5au8; 200];
    // Peer public keys, one per KEM, made once in software.
    let peers = SoftwareCustody::new();
    let backends = backends();
    for (curve, sig_spec, kem, kem_spec) in CURVES {
        let mut g = c.benchmark_group(format!("sign/{curve}"));
        g.throughput(Throughput::Elements(1));
        for (name, custody) in &backends {
            let key = custody.generate(sig_spec).unwrap();
            g.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| custody.sign(&key, &message).unwrap())
            });
            custody.destroy(&key).unwrap();
        }
        g.finish();

        let peer_key = peers.generate(kem_spec).unwrap();
        let peer = peer_key.public_key().as_bytes().to_vec();
        let mut g = c.benchmark_group(format!("dh/{kem}"));
        g.throughput(Throughput::Elements(1));
        for (name, custody) in &backends {
            if !custody.capabilities().supports(kem_spec) {
                eprintln!(
                    "dh/{kem}/{name}: skipped: {}",
                    custody.unsupported_reason(kem_spec).unwrap_or_default()
                );
                continue;
            }
            let key = custody.generate(kem_spec).unwrap();
            g.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| custody.dh(&key, &peer).unwrap())
            });
            custody.destroy(&key).unwrap();
        }
        g.finish();
        peers.destroy(&peer_key).unwrap();
    }

    for (name, custody) in &backends {
        let mut g = c.benchmark_group("keygen_hpke");
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let k = custody.generate(KeySpec::DHKEM_P256_HKDF_SHA256).unwrap();
                custody.destroy(&k).unwrap();
            })
        });
        g.finish();

        // Token-object key generation is slow (a file write per object on
        // SoftHSM): fewer samples.
        let mut g = c.benchmark_group("keygen_signature");
        g.sample_size(10);
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let k = custody.generate(KeySpec::ECDSA_SECP256R1_SHA256).unwrap();
                custody.destroy(&k).unwrap();
            })
        });
        g.finish();
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
