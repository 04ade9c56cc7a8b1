//! MLS operations with one member's keys in three custodies: `software`
//! (`SoftwareCustody`), `softhsm` (every key in the SoftHSM test token,
//! `HSMLS_PKCS11_CONFIG`) and `tpm` (the split configuration of
//! `scripts/setup-tpm.sh`, `HSMLS_TPM_SPLIT_PKCS11_CONFIG`: the signature
//! key in the swtpm TPM 2.0 through tpm2-pkcs11, HPKE keys in SoftHSM).
//! The group has 8 members; only the measured member's custody differs.
//!
//! - **commit/create**: the member's self-update commit (a fresh leaf HPKE
//!   key generated in custody, the path encrypted in software, the commit
//!   and its confirmation signed with the signature key), then discarded
//!   (the fresh leaf key destroyed);
//! - **commit/process**: the member processes another member's self-update
//!   commit (a PublicMessage, so that the same one can be processed again) (its leaf HPKE key decrypts the path secret: `dh` in custody;
//!   signatures are verified in software), staged and dropped;
//! - **message/create**: an application message (signed with the
//!   signature key, then encrypted).
//!
//! Run: `bash scripts/bench.sh --tpm` (it starts the token and the TPM);
//! a custody whose environment is missing is skipped with a line on stderr.

use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hsmls::wire::Credential;
use hsmls::{
    BasicCredentialValidator, Client, CredentialValidator, Group, GroupConfig, HandshakeFraming,
    JoinOptions, KeyPackageConfig, ProcessedMessage, Signer,
};
use hsmls_custody::pkcs11::Pkcs11Config;
use hsmls_custody::{ConfiguredCustody, KeyCustody, Pkcs11Custody, SoftwareCustody};

const NOW: u64 = 1_750_000_000;
const MEMBERS: usize = 8;

fn validator() -> Arc<dyn CredentialValidator> {
    Arc::new(BasicCredentialValidator::default())
}

/// Commits as PublicMessage, so that one commit can be processed again and
/// again (a PrivateMessage consumes its secret-tree generation).
fn client(custody: Arc<dyn KeyCustody>, name: &str) -> Client {
    let signer = Signer::generate(custody, Credential::Basic(name.as_bytes().to_vec()))
        .expect("signature key");
    let mut config = GroupConfig::default();
    config.handshake_framing = HandshakeFraming::Public;
    Client::new(signer, validator()).with_group_config(config)
}

/// The custodies to measure, with whatever keeps them open.
fn custodies() -> Vec<(&'static str, Arc<dyn KeyCustody>)> {
    let mut out: Vec<(&'static str, Arc<dyn KeyCustody>)> =
        vec![("software", Arc::new(SoftwareCustody::new()))];
    match Pkcs11Custody::open_from_env() {
        Ok(c) => out.push(("softhsm", Arc::new(c))),
        Err(e) => eprintln!("custody_commit: skipping softhsm ({e})"),
    }
    let split = std::env::var_os("HSMLS_TPM_SPLIT_PKCS11_CONFIG")
        .ok_or_else(|| "HSMLS_TPM_SPLIT_PKCS11_CONFIG is not set".to_owned())
        .and_then(|p| Pkcs11Config::from_file(std::path::Path::new(&p)).map_err(|e| e.to_string()))
        .and_then(|c| ConfiguredCustody::open(&c).map_err(|e| e.to_string()));
    match split {
        Ok(c) => out.push(("tpm", c.custody())),
        Err(e) => eprintln!("custody_commit: skipping tpm ({e})"),
    }
    out
}

/// The measured member's group (it created it and added the others, all in
/// software custody), and one other member's group.
fn build(custody: Arc<dyn KeyCustody>) -> (Group, Group) {
    let me = client(custody, "measured");
    let mut group = me
        .create_group(hsmls::random_group_id(), Vec::new(), NOW)
        .expect("create");
    let others = Arc::new(SoftwareCustody::new());
    let config = KeyPackageConfig::new(NOW - 10, 3600);
    let first_client = client(others.clone(), "member-1");
    let first = first_client.generate_key_package(&config).expect("kp");
    let mut kps = vec![first.key_package.clone()];
    for i in 2..MEMBERS {
        let c = client(others.clone(), &format!("member-{i}"));
        kps.push(c.generate_key_package(&config).expect("kp").key_package);
    }
    let out = group.add_members(&kps, NOW).expect("add");
    group.merge_pending_commit().expect("merge");
    let mut join = JoinOptions::default();
    join.ratchet_tree = out.ratchet_tree;
    let other = first_client
        .join_from_welcome(&first, &out.welcome.expect("welcome"), join)
        .expect("join");
    (group, other)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("custody_commit");
    g.sample_size(20);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    for (name, custody) in custodies() {
        let (mut group, mut other) = build(custody);
        g.bench_function(BenchmarkId::new("commit/create", name), |b| {
            b.iter(|| {
                let out = group.self_update(NOW).expect("commit");
                group.discard_pending_commit().expect("discard");
                out
            })
        });
        let commit = other.self_update(NOW).expect("other's commit").commit;
        g.bench_function(BenchmarkId::new("commit/process", name), |b| {
            b.iter(
                || match group.process_incoming(&commit, NOW).expect("process") {
                    ProcessedMessage::StagedCommit(s) => s,
                    e => panic!("expected a commit, got {e:?}"),
                },
            )
        });
        other.discard_pending_commit().expect("discard");
        g.bench_function(BenchmarkId::new("message/create", name), |b| {
            b.iter(|| {
                group
                    .encrypt_application(b"hello from the bench")
                    .expect("send")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
