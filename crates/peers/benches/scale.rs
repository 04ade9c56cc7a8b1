//! hsmls at scale (issue 13): one process, one group of N members, the
//! operations of a large group timed one by one, peak resident size and
//! saved-state size at exit.
//!
//! Suite 0x0002, keys in `SoftwareCustody`, basic credentials, handshakes
//! as PublicMessage, the ratchet tree inside the Welcome.
//!
//! Operations, in the order they run (each needs the ones before; those
//! not asked for run untimed):
//!
//! - `create`: the creator validates the N−1 KeyPackages (bytes in) and
//!   commits them in one commit with an UpdatePath (a Welcome with the
//!   tree inside), then merges it. KeyPackage generation is setup.
//! - `join`: member 1 joins from that Welcome.
//! - `update-create`: the creator's self-update commit (with a path).
//! - `update-process`: member 1 processes it (and merges).
//! - `remove-create`: the creator removes the last member.
//! - `remove-process`: member 1 processes that commit.
//! - `save`, `load`: member 1's group state, sealed by its custody.
//!
//! Run: `cargo bench -p hsmls-peers --bench scale -- N [OP,OP…|all]`
//! (or `SCALE_N`, `SCALE_OPS`). It prints one line per timed operation,
//! then the state size and the peak resident size (`VmHWM`).
//!
//! Each timed operation runs inside [`measured`], a function that is never
//! inlined, so that `valgrind --tool=callgrind --dump-before='scale::measure*'`
//! cuts the profile at its entry and at its end (`measurement_ended`): every
//! even-numbered part is one operation's instructions, with the threads
//! it spawns (`scripts/callgrind-guard.sh`). The bench draws no randomness
//! of its own (fixed group id and identities); the engine's keys are
//! random, which moves instruction counts by a few parts in 10,000.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hsmls::wire::{Credential, LeafIndex};
use hsmls::{
    BasicCredentialValidator, Client, CommitOptions, CredentialValidator, Group, GroupConfig,
    HandshakeFraming, JoinOptions, KeyPackageBundle, KeyPackageConfig, ProcessedMessage, Signer,
};
use hsmls_custody::{KeyCustody, SoftwareCustody};

const NOW: u64 = 1_750_000_000;
const GROUP_ID: &[u8] = b"hsmls scale bench group";

const OPS: [&str; 8] = [
    "create",
    "join",
    "update-create",
    "update-process",
    "remove-create",
    "remove-process",
    "save",
    "load",
];

/// Runs `f` and returns its result and duration. Never inlined: the
/// callgrind guard cuts its profile at this function's entry and at
/// [`measurement_ended`] (callgrind's `--dump-after` does not fire on it).
#[inline(never)]
fn measured<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let out = std::hint::black_box(f());
    let elapsed = started.elapsed();
    measurement_ended();
    (out, elapsed)
}

/// Called when a measured operation has returned; a marker for callgrind.
#[inline(never)]
fn measurement_ended() {
    std::hint::black_box(());
}

fn config() -> GroupConfig {
    let mut config = GroupConfig::default();
    config.cipher_suite = hsmls::wire::CipherSuite(0x0002);
    config.handshake_framing = HandshakeFraming::Public;
    config.ratchet_tree_in_welcome = true;
    config
}

fn validator() -> Arc<dyn CredentialValidator> {
    Arc::new(BasicCredentialValidator::default())
}

fn client(custody: &Arc<SoftwareCustody>, name: &str) -> Client {
    let signer = Signer::generate(
        custody.clone() as Arc<dyn KeyCustody>,
        Credential::Basic(name.as_bytes().to_vec()),
    )
    .expect("signature key");
    Client::new(signer, validator()).with_group_config(config())
}

/// The KeyPackages of members 1..n (bytes), and member 1's client and
/// bundle; generated on every core (setup, not measured).
fn key_packages(
    custody: &Arc<SoftwareCustody>,
    n: usize,
) -> (Vec<Vec<u8>>, Client, KeyPackageBundle) {
    let kp_config = KeyPackageConfig::new(NOW - 10, 3600);
    let first = client(custody, "member-1");
    let first_bundle = first.generate_key_package(&kp_config).expect("kp");
    let mut out = vec![first_bundle.to_bytes().expect("encode")];
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let rest: Vec<usize> = (2..n).collect();
    let per = rest.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = rest
            .chunks(per)
            .map(|chunk| {
                let kp_config = &kp_config;
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|i| {
                            client(custody, &format!("member-{i}"))
                                .generate_key_package(kp_config)
                                .expect("kp")
                                .to_bytes()
                                .expect("encode")
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            out.extend(h.join().expect("key package thread"));
        }
    });
    (out, first, first_bundle)
}

fn merge_incoming(group: &mut Group, commit: &[u8]) {
    match group.process_incoming(commit, NOW).expect("process") {
        ProcessedMessage::StagedCommit(staged) => group.merge_staged_commit(staged).expect("merge"),
        _ => panic!("expected a commit"),
    }
}

fn vm_hwm() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.trim_start_matches("VmHWM:").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let n: usize = args
        .first()
        .cloned()
        .or_else(|| std::env::var("SCALE_N").ok())
        .unwrap_or_else(|| "1000".to_owned())
        .replace('_', "")
        .parse()
        .expect("N: a number of members");
    assert!(n >= 3, "N must be at least 3");
    let ops_arg = args
        .get(1)
        .cloned()
        .or_else(|| std::env::var("SCALE_OPS").ok())
        .unwrap_or_else(|| "all".to_owned());
    let ops: Vec<&str> = if ops_arg == "all" {
        OPS.to_vec()
    } else {
        ops_arg.split(',').collect()
    };
    for op in &ops {
        assert!(OPS.contains(op), "unknown operation {op}; one of {OPS:?}");
    }
    let wanted = |op: &str| ops.contains(&op);
    let last = OPS
        .iter()
        .rposition(|op| wanted(op))
        .expect("one operation");
    let report = |op: &str, d: Duration| {
        println!("scale n={n} op={op} time_ms={:.3}", d.as_secs_f64() * 1e3);
    };

    let started = Instant::now();
    let custody = Arc::new(SoftwareCustody::new());
    let creator_client = client(&custody, "creator");
    let (kps, first_client, first_bundle) = key_packages(&custody, n);
    eprintln!(
        "scale: {} KeyPackages in {:.1?} (setup)",
        kps.len(),
        started.elapsed()
    );
    let mut creator = creator_client
        .create_group(GROUP_ID.to_vec(), Vec::new(), NOW)
        .expect("create group");

    // create
    let (out, d) = measured(|| {
        let mut options = CommitOptions::new();
        options.force_path = true;
        options.add_key_packages = creator_client
            .validate_key_packages(&kps, NOW)
            .expect("valid KeyPackages");
        let out = creator.commit(options, NOW).expect("add commit");
        creator.merge_pending_commit().expect("merge");
        out
    });
    drop(kps);
    if wanted("create") {
        report("create", d);
    }
    let welcome = out.welcome.expect("a Welcome");
    eprintln!(
        "scale: commit {} B, Welcome {} B",
        out.commit.len(),
        welcome.len()
    );
    if last == 0 {
        println!("scale n={n} peak_rss={}", vm_hwm());
        return;
    }

    // join
    let (member, d) = measured(|| {
        first_client
            .join_from_welcome(&first_bundle, &welcome, JoinOptions::default())
            .expect("join")
    });
    let mut member = member;
    drop(welcome);
    if wanted("join") {
        report("join", d);
    }
    assert_eq!(member.epoch_authenticator(), creator.epoch_authenticator());

    // update-create, update-process
    if last >= 2 {
        let (out, d) = measured(|| {
            let mut options = CommitOptions::new();
            options.force_path = true;
            creator.commit(options, NOW).expect("self-update")
        });
        if wanted("update-create") {
            report("update-create", d);
        }
        creator.merge_pending_commit().expect("merge");
        if last >= 3 {
            let ((), d) = measured(|| merge_incoming(&mut member, &out.commit));
            if wanted("update-process") {
                report("update-process", d);
            }
            assert_eq!(member.epoch_authenticator(), creator.epoch_authenticator());
        }
    }

    // remove-create, remove-process
    if last >= 4 {
        let removed = LeafIndex(u32::try_from(n - 1).expect("N fits u32"));
        let (out, d) = measured(|| {
            creator
                .remove_members(&[removed], NOW)
                .expect("remove commit")
        });
        if wanted("remove-create") {
            report("remove-create", d);
        }
        creator.merge_pending_commit().expect("merge");
        if last >= 5 {
            let ((), d) = measured(|| merge_incoming(&mut member, &out.commit));
            if wanted("remove-process") {
                report("remove-process", d);
            }
            assert_eq!(member.epoch_authenticator(), creator.epoch_authenticator());
        }
    }

    // save, load
    if last >= 6 {
        let sealer = custody.state_sealer();
        let (saved, d) = measured(|| member.save(sealer).expect("save"));
        if wanted("save") {
            report("save", d);
        }
        let records: usize = saved.epoch_records.iter().map(|r| r.data.len()).sum();
        println!(
            "scale n={n} state_bytes={} epoch_record_bytes={records}",
            saved.state.len()
        );
        if last >= 7 {
            let (loaded, d) = measured(|| {
                first_client
                    .load_group(sealer, GROUP_ID, &saved.state, &saved.epoch_records)
                    .expect("load")
            });
            if wanted("load") {
                report("load", d);
            }
            assert_eq!(loaded.epoch_authenticator(), member.epoch_authenticator());
        }
    }
    println!("scale n={n} peak_rss={}", vm_hwm());
}
