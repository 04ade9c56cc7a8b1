//! Saving and loading group state (`hsmls::state`) at N = 2, 1,000 and
//! 10,000 members: **save** is `Group::save` (encode the state, every tree
//! record and the two past-epoch records, seal each), **save_changes** the
//! incremental save after one self-update commit since the last confirmed
//! save (`Group::save_changes`), **load** is `Client::load_group` (open,
//! decode the tree records on both cores, find the member's keys in
//! custody), with the
//! state-sealing key in `SoftwareCustody` and in SoftHSM (AES-256-GCM in
//! the token). The member's own keys are in `SoftwareCustody` in both, so
//! only the sealing differs. Blob sizes are printed.
//!
//! The group: the creator adds N−1 members in one commit, then two
//! self-updates (so the two retained past epochs have trees of N leaves),
//! and a few application messages are read.
//!
//! Run: `cargo bench -p hsmls --bench state` (SoftHSM with the token's
//! environment, e.g. `bash scripts/bench.sh -p hsmls --bench state`;
//! without it the SoftHSM cases are skipped).

use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hsmls::wire::Credential;
use hsmls::{
    BasicCredentialValidator, Client, CredentialValidator, Group, JoinOptions, KeyPackageConfig,
    ProcessedMessage, Signer,
};
use hsmls_custody::{KeyCustody, Pkcs11Custody, SoftwareCustody, StateSealer};

const NOW: u64 = 1_750_000_000;
const SIZES: [usize; 3] = [2, 1_000, 10_000];

fn validator() -> Arc<dyn CredentialValidator> {
    Arc::new(BasicCredentialValidator::default())
}

fn signer(custody: &Arc<SoftwareCustody>, name: &str) -> Signer {
    Signer::generate(
        custody.clone() as Arc<dyn KeyCustody>,
        Credential::Basic(name.as_bytes().to_vec()),
    )
    .expect("signature key")
}

/// The creator's group of `n` members, its client and custody, and a
/// receiving member (who sends the messages the creator reads).
fn build(n: usize) -> (Group, Client, Arc<SoftwareCustody>) {
    let custody = Arc::new(SoftwareCustody::new());
    let others = Arc::new(SoftwareCustody::new());
    let creator = Client::new(signer(&custody, "creator"), validator());
    let mut group = creator
        .create_group(hsmls::random_group_id(), Vec::new(), NOW)
        .expect("create");
    let config = KeyPackageConfig::new(NOW - 10, 3600);
    let first_client = Client::new(signer(&others, "member-1"), validator());
    let first = first_client.generate_key_package(&config).expect("kp");
    let mut kps = vec![first.key_package.clone()];
    for i in 2..n {
        let s = signer(&others, &format!("member-{i}"));
        kps.push(
            Client::new(s, validator())
                .generate_key_package(&config)
                .expect("kp")
                .key_package,
        );
    }
    let out = group.add_members(&kps, NOW).expect("add");
    group.merge_pending_commit().expect("merge");
    let mut member = first_client
        .join_from_welcome(&first, &out.welcome.expect("welcome"), {
            let mut join = JoinOptions::default();
            join.ratchet_tree = out.ratchet_tree;
            join
        })
        .expect("join");
    for _ in 0..2 {
        let out = group.self_update(NOW).expect("update");
        group.merge_pending_commit().expect("merge");
        let ProcessedMessage::StagedCommit(s) =
            member.process_incoming(&out.commit, NOW).expect("commit")
        else {
            panic!("commit");
        };
        member.merge_staged_commit(s).expect("merge");
        for _ in 0..3 {
            let msg = member.encrypt_application(b"hello").expect("send");
            let event = group.process_incoming(&msg, NOW).expect("read");
            assert!(matches!(event, ProcessedMessage::ApplicationMessage { .. }));
        }
    }
    (group, creator, custody)
}

/// `group` confirmed-saved with `sealer`, then one more self-update: what
/// a client holds when it saves after a commit.
fn after_one_commit(group: &mut Group, sealer: &dyn StateSealer) {
    let (_, ticket) = group.save_changes(sealer).expect("save");
    assert!(group.confirm_saved(ticket));
    let _ = group.self_update(NOW).expect("update");
    group.merge_pending_commit().expect("merge");
}

fn bench(c: &mut Criterion) {
    let token = match Pkcs11Custody::open_from_env() {
        Ok(custody) => Some(
            Arc::new(custody)
                .state_sealer()
                .expect("the token's state-sealing key"),
        ),
        Err(e) => {
            eprintln!(
                "state bench: skipping SoftHSM sealing ({e}); run it through scripts/bench.sh"
            );
            None
        }
    };
    for n in SIZES {
        let started = std::time::Instant::now();
        let (mut group, client, custody) = build(n);
        eprintln!(
            "state bench: built the {n}-member group in {:.1?}",
            started.elapsed()
        );
        let mut sealers: Vec<(&str, &dyn StateSealer)> = vec![("software", custody.state_sealer())];
        if let Some(t) = &token {
            sealers.push(("softhsm", t));
        }
        let mut g = c.benchmark_group("state");
        g.sample_size(if n >= 10_000 { 10 } else { 20 });
        g.warm_up_time(Duration::from_secs(1));
        g.measurement_time(Duration::from_secs(if n >= 10_000 { 8 } else { 3 }));
        for (name, sealer) in sealers {
            let saved = group.save(sealer).expect("save");
            eprintln!(
                "state bench: N = {n}, {name}: state {} bytes, epoch records {:?} bytes",
                saved.state.len(),
                saved
                    .epoch_records
                    .iter()
                    .map(|r| r.data.len())
                    .collect::<Vec<_>>()
            );
            g.bench_function(BenchmarkId::new(format!("save/{name}"), n), |b| {
                b.iter(|| group.save(sealer).expect("save"))
            });
            g.bench_function(BenchmarkId::new(format!("load/{name}"), n), |b| {
                b.iter(|| client.load_saved_group(sealer, &saved).expect("load"))
            });
            after_one_commit(&mut group, sealer);
            let (changes, _) = group.save_changes(sealer).expect("save");
            eprintln!(
                "state bench: N = {n}, {name}: save after a commit writes {} bytes ({} tree records)",
                changes.written_bytes(),
                changes.tree_records.len()
            );
            g.bench_function(BenchmarkId::new(format!("save_changes/{name}"), n), |b| {
                b.iter(|| group.save_changes(sealer).expect("save"))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
