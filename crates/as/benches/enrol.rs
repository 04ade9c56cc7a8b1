//! AS throughput and member-side validation cost.
//!
//! * `enrol/{sqlite,postgres}`: enrolments per second at the service (no
//!   HTTP): for a batch of 64 orders opened beforehand (untimed), 64
//!   concurrent finalizations, each: CSR parse and signature check, leaf
//!   signed by the issuing key in SoftHSM (on the blocking pool), and one
//!   database transaction claiming the token, storing the certificate and
//!   appending the issuance to the log. SQLite is one file, WAL,
//!   `synchronous=FULL`.
//! * `validate/*`: `X509CredentialValidator` on a two-certificate chain
//!   (leaf, issuing CA) with a CRL: without transparency (with ring's
//!   verifier, the default, and with the pure-Rust p256 one); and, with
//!   transparency required, verifying an inclusion proof for the leaf
//!   (`record_inclusion`, in a log of about 400 entries) then validating.
//!
//! Run with the token and the PostgreSQL server: `bash scripts/bench.sh
//! --as` (or `cargo bench -p hsmls-as --bench enrol` with
//! `HSMLS_PKCS11_CONFIG`, `SOFTHSM2_CONF` and `HSMLS_TEST_PG_URL` set).

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hsmls::wire::SignaturePublicKey;
use hsmls_as::ca::CaProfile;
use hsmls_as::{AuthService, Ca, PgStore, ServiceConfig, SqliteStore, Store};
use hsmls_credentials::csr::build_csr;
use hsmls_credentials::tlog::LogMonitor;
use hsmls_credentials::{
    FixedClock, Transparency, X509CredentialValidator, cert_hash, x509_credential,
};
use hsmls_custody::pkcs11::Pkcs11Config;
use hsmls_custody::{KeyCustody, KeyRef, KeySpec, Pkcs11Custody, SoftwareCustody};

const BATCH: usize = 64;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct Fixture<S: Store> {
    service: Arc<AuthService<S>>,
    csrs: Vec<(String, Vec<u8>)>,
    keys: Vec<KeyRef>,
    custody: Arc<Pkcs11Custody>,
}

fn fixture<S: Store>(store: S) -> Fixture<S> {
    let custody = Arc::new(
        Pkcs11Custody::open(&Pkcs11Config::from_env().expect("HSMLS_PKCS11_CONFIG"))
            .expect("the SoftHSM test token"),
    );
    let t = now();
    let ca = Ca::create(custody.clone(), CaProfile::default(), t - 60).unwrap();
    let log = custody.generate(KeySpec::ECDSA_SECP256R1_SHA256).unwrap();
    let keys = vec![ca.root_key().clone(), ca.issuing_key().clone(), log.clone()];
    let service = Arc::new(
        AuthService::new(
            store,
            ca,
            log,
            ServiceConfig::new("https://as.hsmls.test"),
            Arc::new(FixedClock::new(t)),
        )
        .unwrap(),
    );
    // The clients' keys and CSRs are made once (not part of enrolment).
    let clients: Arc<dyn KeyCustody> = Arc::new(SoftwareCustody::new());
    let csrs = (0..BATCH)
        .map(|i| {
            let identity = format!("im:bench{i}@hsmls.test");
            let key = clients.generate(KeySpec::ECDSA_SECP256R1_SHA256).unwrap();
            let csr = build_csr(clients.clone(), &key, &identity).unwrap();
            (identity, csr)
        })
        .collect();
    Fixture {
        service,
        csrs,
        keys,
        custody,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn bench_enrol<S: Store>(c: &mut Criterion, name: &str, rt: &tokio::runtime::Runtime, store: S) {
    let f = fixture(store);
    let mut group = c.benchmark_group("enrol");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // Untimed: the operator's tokens and the clients' orders.
                    let mut orders = Vec::with_capacity(BATCH);
                    for (identity, csr) in &f.csrs {
                        let token = f.service.issue_token(identity).await.unwrap();
                        let order = f.service.new_order(identity, &token).await.unwrap();
                        orders.push((order.id, csr.clone()));
                    }
                    let start = Instant::now();
                    let tasks: Vec<_> = orders
                        .into_iter()
                        .map(|(id, csr)| {
                            let svc = f.service.clone();
                            tokio::spawn(async move { svc.finalize(&id, &csr).await.unwrap() })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                    total += start.elapsed();
                }
                total
            })
        })
    });
    group.finish();
    for k in &f.keys {
        f.custody.destroy(k).unwrap();
    }
}

fn enrol_sqlite(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let store = rt
        .block_on(SqliteStore::open(&dir.path().join("as.db")))
        .unwrap();
    bench_enrol(c, "sqlite", &rt, store);
}

fn enrol_postgres(c: &mut Criterion) {
    let url = std::env::var("HSMLS_TEST_PG_URL").expect("HSMLS_TEST_PG_URL");
    let schema = format!("bench_{}", now());
    let rt = runtime();
    rt.block_on(async {
        let admin = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .unwrap();
    });
    let options = sqlx::postgres::PgConnectOptions::from_str(&url)
        .unwrap()
        .options([("search_path", schema.as_str())]);
    let store = rt.block_on(PgStore::connect_with(options)).unwrap();
    bench_enrol(c, "postgres", &rt, store);
    rt.block_on(async {
        let admin = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&admin)
            .await
            .unwrap();
    });
}

fn validate(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = rt
        .block_on(SqliteStore::open(&dir.path().join("as.db")))
        .unwrap();
    let f = fixture(store);
    let clients: Arc<dyn KeyCustody> = Arc::new(SoftwareCustody::new());
    let key = clients.generate(KeySpec::ECDSA_SECP256R1_SHA256).unwrap();
    let identity = "im:validated@hsmls.test";
    let (chain, crl, note, proof) = rt.block_on(async {
        // Some history in the log around the certificate, so the proof
        // has a realistic length (about 400 entries).
        let enrol_all = || async {
            for (id, csr) in &f.csrs {
                let token = f.service.issue_token(id).await.unwrap();
                let order = f.service.new_order(id, &token).await.unwrap();
                f.service.finalize(&order.id, csr).await.unwrap();
            }
        };
        for _ in 0..3 {
            enrol_all().await;
        }
        let token = f.service.issue_token(identity).await.unwrap();
        let order = f.service.new_order(identity, &token).await.unwrap();
        let csr = build_csr(clients.clone(), &key, identity).unwrap();
        let order = f.service.finalize(&order.id, &csr).await.unwrap();
        let serial = order
            .certificate
            .unwrap()
            .trim_start_matches("cert/")
            .to_owned();
        let chain = f
            .service
            .certificate(&serial)
            .await
            .unwrap()
            .ders()
            .unwrap();
        for _ in 0..3 {
            enrol_all().await;
        }
        let crl = f.service.crl().await.unwrap();
        let note = f.service.checkpoint().await.unwrap();
        let size = f.service.store().log_size().await.unwrap();
        let proof = f
            .service
            .inclusion_proof(&cert_hash(&chain[0]), size)
            .await
            .unwrap();
        (chain, crl, note, proof)
    });
    let root = f.service.ca().root_der().to_vec();
    let cred = x509_credential(&chain);
    let pk = SignaturePublicKey(key.public_key().as_bytes().to_vec());
    let plain = X509CredentialValidator::new(std::slice::from_ref(&root)).unwrap();
    plain.set_crl(&crl).unwrap();
    plain.check(&cred, &pk, Some(identity)).unwrap();
    let monitor = Arc::new(LogMonitor::new(f.service.log_verifier().clone()));
    monitor.update(&note, &[]).unwrap();
    let logged = X509CredentialValidator::new(std::slice::from_ref(&root))
        .unwrap()
        .with_transparency(Transparency::Required(monitor));
    logged.set_crl(&crl).unwrap();

    let pure = X509CredentialValidator::new(std::slice::from_ref(&root))
        .unwrap()
        .with_algorithms(hsmls_credentials::x509::P256_ALGORITHMS);
    pure.set_crl(&crl).unwrap();

    let mut group = c.benchmark_group("validate");
    group.bench_function("chain_and_crl", |b| {
        b.iter(|| plain.check(&cred, &pk, Some(identity)).unwrap())
    });
    group.bench_function("chain_and_crl_p256", |b| {
        b.iter(|| pure.check(&cred, &pk, Some(identity)).unwrap())
    });
    group.bench_function("with_inclusion_proof", |b| {
        b.iter(|| {
            logged.record_inclusion(&chain[0], &proof).unwrap();
            logged.check(&cred, &pk, Some(identity)).unwrap()
        })
    });
    group.finish();
    for k in &f.keys {
        f.custody.destroy(k).unwrap();
    }
}

criterion_group!(benches, enrol_sqlite, enrol_postgres, validate);
criterion_main!(benches);
