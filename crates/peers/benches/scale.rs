//! Groups at scale (issue 13): one process, one implementation, one group
//! of N members, the operations of a large group timed one by one, peak
//! resident size and saved-state size at exit.
//!
//! Suite 0x0002, basic credentials, handshakes as PublicMessage, every
//! commit with an UpdatePath, the ratchet tree inside the Welcome. hsmls
//! runs through its own API (the work the callgrind guard counts), with
//! the measured members' keys (the creator's and member 1's) in
//! `SoftwareCustody` or, with `--custody=softhsm`, in the SoftHSM token
//! (`HSMLS_PKCS11_CONFIG`); the other members' keys are in software either
//! way. Every custody call of the measured members is counted (signatures,
//! key agreements, key generations, imports, destructions) and printed
//! with each operation. openmls and mls-rs (`--impl=openmls`,
//! `--impl=mls-rs`) run the same steps through the [`Peer`] trait.
//!
//! Operations, in the order they run (each needs the ones before; those
//! not asked for run untimed):
//!
//! - `keypackage`: one client generates 100 KeyPackages (encoded); the
//!   line gives the time per KeyPackage. Runs only when asked for.
//! - `create`: the creator validates the N−1 KeyPackages (bytes in) and
//!   commits them in one commit with an UpdatePath (a Welcome with the
//!   tree inside), then merges it. KeyPackage generation is setup.
//! - `join`: member 1 joins from that Welcome.
//! - `update-create`: the creator's self-update commit (with a path).
//! - `update-process`: member 1 processes it (and merges).
//! - `remove-create`: the creator removes the last member (N ≥ 3).
//! - `remove-process`: member 1 processes that commit.
//! - `protect-100`, `unprotect-100`, `protect-10k`, `unprotect-10k`: the
//!   creator protects 20 application messages of 100 B (10 KiB), member 1
//!   unprotects them; the line gives the median per message.
//! - `save-full`: member 1's first save, right after it joined: the whole
//!   state (hsmls: `Group::save_changes` with nothing confirmed yet, so
//!   every tree record; sealed by its custody), written to an in-memory
//!   store that keeps records the way the SQLite store does, and
//!   confirmed.
//! - `save`: member 1's save right after `update-process`: what a client
//!   pays to persist a processed commit (hsmls: `Group::save_changes`, the
//!   state and the tree records of the chunks the commit changed).
//! - `load`: member 1's group loaded from the store's records (after an
//!   untimed save of its last changes). openmls and mls-rs keep their own
//!   save for both `save-full` and `save`: mls-rs `write_to_storage`
//!   writes its whole state each time, openmls's save is a copy of every
//!   entry of its storage provider (it writes them as it goes).
//!
//! Run: `cargo bench -p hsmls-peers --bench scale -- N [OP,OP…|all]
//! [--impl=hsmls|openmls|mls-rs] [--custody=software|softhsm]` (or
//! `SCALE_N`, `SCALE_OPS`, `SCALE_IMPL`, `SCALE_CUSTODY`). It prints one
//! line per timed operation, then the state size and the peak resident
//! size (`VmHWM`). `bash scripts/bench.sh --scale` runs the matrix.
//! `SCALE_REPEAT=K` (hsmls only) repeats `update-create`,
//! `update-process` and `save` K times in the one group, a line each: K
//! samples for the price of one group.
//!
//! Each timed operation runs inside [`measured`], a function that is never
//! inlined, so that `valgrind --tool=callgrind --dump-before='scale::measure*'`
//! cuts the profile at its entry and at its end (`measurement_ended`): every
//! even-numbered part is one operation's instructions, with the threads
//! it spawns (`scripts/callgrind-guard.sh`). `keypackage` is timed without
//! it, so the parts of the other operations keep their numbers. The bench
//! draws no randomness of its own (fixed group id and identities); the
//! engine's keys are random, which moves instruction counts by a few parts
//! in 10,000.
//!
//! `SCALE_PERF_CTL=CTL,ACK[,K]` (two FIFOs) samples only the timed
//! operations with `perf record`: [`measured`] writes `enable` before and
//! `disable` after each one (or only the `K`-th, counted from 0 in the
//! order above: create 0, join 1, update-create 2, update-process 3, …)
//! to `CTL` and waits for perf's answer on `ACK`:
//!
//! ```sh
//! mkfifo ctl ack
//! SCALE_PERF_CTL=ctl,ack,3 perf record -D -1 --control=fifo:ctl,ack -F 10000 --call-graph dwarf -- $BENCH 100000 update-process
//! ```

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hsmls::wire::{Credential, LeafIndex};
use hsmls::{
    BasicCredentialValidator, Client, CommitOptions, CredentialValidator, Group, GroupConfig,
    HandshakeFraming, JoinOptions, KeyPackageBundle, KeyPackageConfig, ProcessedMessage,
    SavedGroup, Signer,
};
use hsmls_custody::{
    Capabilities, CustodyError, KeyAttributes, KeyCustody, KeyRef, KeySpec, Pkcs11Custody,
    Pkcs11Sealer, SharedSecret, SoftwareCustody, StateSealer,
};
use hsmls_peers::{HsmlsPeer, MlsRsPeer, OpenMlsPeer, Peer, PeerOptions};

const NOW: u64 = 1_750_000_000;
const GROUP_ID: &[u8] = b"hsmls scale bench group";
/// KeyPackages generated by `keypackage`.
const KEY_PACKAGES_TIMED: usize = 100;
/// Application messages per size in `protect-*` / `unprotect-*`.
const MESSAGES: usize = 20;

const OPS: [&str; 14] = [
    "keypackage",
    "create",
    "join",
    "update-create",
    "update-process",
    "remove-create",
    "remove-process",
    "protect-100",
    "unprotect-100",
    "protect-10k",
    "unprotect-10k",
    "save-full",
    "save",
    "load",
];

/// Runs `f` and returns its result and duration. Never inlined: the
/// callgrind guard cuts its profile at this function's entry and at
/// [`measurement_ended`] (callgrind's `--dump-after` does not fire on it).
#[inline(never)]
fn measured<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    perf_control("enable");
    let started = Instant::now();
    let out = std::hint::black_box(f());
    let elapsed = started.elapsed();
    perf_control("disable");
    measurement_ended();
    (out, elapsed)
}

/// The FIFOs of `perf record --control` named by `SCALE_PERF_CTL`, and
/// which measured operation to sample (all when `None`).
struct PerfControl {
    ctl: std::fs::File,
    ack: std::io::BufReader<std::fs::File>,
    only: Option<usize>,
    seen: usize,
}

/// Sends `command` to perf (when `SCALE_PERF_CTL` is set) and waits for
/// its acknowledgement, so that sampling starts before the operation does.
fn perf_control(command: &str) {
    use std::io::{BufRead, Write};
    static CONTROL: std::sync::OnceLock<Option<Mutex<PerfControl>>> = std::sync::OnceLock::new();
    let control = CONTROL.get_or_init(|| {
        let spec = std::env::var("SCALE_PERF_CTL").ok()?;
        let mut parts = spec.split(',');
        let (Some(ctl), Some(ack)) = (parts.next(), parts.next()) else {
            panic!("SCALE_PERF_CTL=CTL,ACK[,K]");
        };
        let only = parts.next().map(|k| k.parse().expect("SCALE_PERF_CTL: K"));
        let ctl = std::fs::OpenOptions::new()
            .write(true)
            .open(ctl)
            .expect("perf control FIFO");
        let ack = std::fs::File::open(ack).expect("perf ack FIFO");
        Some(Mutex::new(PerfControl {
            ctl,
            ack: std::io::BufReader::new(ack),
            only,
            seen: 0,
        }))
    });
    if let Some(control) = control {
        let mut c = control.lock().expect("perf control lock");
        let index = c.seen;
        if command == "disable" {
            c.seen += 1;
        }
        if c.only.is_some_and(|k| k != index) {
            return;
        }
        writeln!(c.ctl, "{command}").expect("write to perf control FIFO");
        let mut line = String::new();
        c.ack.read_line(&mut line).expect("read perf ack FIFO");
    }
}

/// Called when a measured operation has returned; a marker for callgrind.
#[inline(never)]
fn measurement_ended() {
    std::hint::black_box(());
}

/// Times `f` without the callgrind markers (operations the guard does not
/// count).
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let out = std::hint::black_box(f());
    (out, started.elapsed())
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

/// Custody calls of the measured members, by kind (token operations when
/// the custody is a token).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Ops {
    sign: u64,
    dh: u64,
    generate: u64,
    import: u64,
    destroy: u64,
}

impl Ops {
    fn since(self, before: Ops) -> Ops {
        Ops {
            sign: self.sign - before.sign,
            dh: self.dh - before.dh,
            generate: self.generate - before.generate,
            import: self.import - before.import,
            destroy: self.destroy - before.destroy,
        }
    }
}

/// A [`KeyCustody`] that counts the calls it passes on, and remembers the
/// keys it generated so that token objects left at exit can be destroyed.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn KeyCustody>,
    sign: AtomicU64,
    dh: AtomicU64,
    generate: AtomicU64,
    import: AtomicU64,
    destroy: AtomicU64,
    generated: Mutex<Vec<KeyRef>>,
}

impl Counting {
    fn new(inner: Arc<dyn KeyCustody>) -> Self {
        Self {
            inner,
            sign: AtomicU64::new(0),
            dh: AtomicU64::new(0),
            generate: AtomicU64::new(0),
            import: AtomicU64::new(0),
            destroy: AtomicU64::new(0),
            generated: Mutex::new(Vec::new()),
        }
    }

    fn ops(&self) -> Ops {
        Ops {
            sign: self.sign.load(Ordering::Relaxed),
            dh: self.dh.load(Ordering::Relaxed),
            generate: self.generate.load(Ordering::Relaxed),
            import: self.import.load(Ordering::Relaxed),
            destroy: self.destroy.load(Ordering::Relaxed),
        }
    }

    /// Destroys the keys generated here that still exist (the signature
    /// keys are token objects on a PKCS#11 token).
    fn destroy_left(&self) {
        let keys = std::mem::take(&mut *self.generated.lock().unwrap_or_else(|e| e.into_inner()));
        for key in keys {
            // Keys the engine destroyed already give an error: ignored.
            let _ = self.inner.destroy(&key);
        }
    }
}

impl KeyCustody for Counting {
    fn capabilities(&self) -> &Capabilities {
        self.inner.capabilities()
    }
    fn unsupported_reason(&self, spec: KeySpec) -> Option<String> {
        self.inner.unsupported_reason(spec)
    }
    fn generate(&self, spec: KeySpec) -> Result<KeyRef, CustodyError> {
        self.generate.fetch_add(1, Ordering::Relaxed);
        let key = self.inner.generate(spec)?;
        self.generated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(key.clone());
        Ok(key)
    }
    fn import(&self, spec: KeySpec, private_key: &[u8]) -> Result<KeyRef, CustodyError> {
        self.import.fetch_add(1, Ordering::Relaxed);
        self.inner.import(spec, private_key)
    }
    fn sign_prehash(&self, key: &KeyRef, prehash: &[u8]) -> Result<Vec<u8>, CustodyError> {
        self.sign.fetch_add(1, Ordering::Relaxed);
        self.inner.sign_prehash(key, prehash)
    }
    fn sign(&self, key: &KeyRef, message: &[u8]) -> Result<Vec<u8>, CustodyError> {
        self.sign.fetch_add(1, Ordering::Relaxed);
        self.inner.sign(key, message)
    }
    fn dh(&self, key: &KeyRef, peer_public_key: &[u8]) -> Result<SharedSecret, CustodyError> {
        self.dh.fetch_add(1, Ordering::Relaxed);
        self.inner.dh(key, peer_public_key)
    }
    fn destroy(&self, key: &KeyRef) -> Result<(), CustodyError> {
        self.destroy.fetch_add(1, Ordering::Relaxed);
        self.inner.destroy(key)
    }
    fn find(&self, uri: &str) -> Result<KeyRef, CustodyError> {
        self.inner.find(uri)
    }
    fn key_attributes(&self, key: &KeyRef) -> Result<KeyAttributes, CustodyError> {
        self.inner.key_attributes(key)
    }
}

/// The custody of the measured members and the key that seals their state.
struct MeasuredCustody {
    counting: Arc<Counting>,
    sealer: Sealer,
}

enum Sealer {
    Software(Arc<SoftwareCustody>),
    Token(Pkcs11Sealer),
}

impl MeasuredCustody {
    fn open(name: &str) -> Self {
        match name {
            "software" => {
                let custody = Arc::new(SoftwareCustody::new());
                Self {
                    counting: Arc::new(Counting::new(custody.clone())),
                    sealer: Sealer::Software(custody),
                }
            }
            "softhsm" => {
                let token = Arc::new(
                    Pkcs11Custody::open_from_env()
                        .expect("the SoftHSM token (eval \"$(bash scripts/setup-hsm.sh --env)\")"),
                );
                let sealer = token.state_sealer().expect("the token's state-sealing key");
                Self {
                    counting: Arc::new(Counting::new(token)),
                    sealer: Sealer::Token(sealer),
                }
            }
            other => panic!("unknown custody {other}; software or softhsm"),
        }
    }

    fn sealer(&self) -> &dyn StateSealer {
        match &self.sealer {
            Sealer::Software(custody) => custody.state_sealer(),
            Sealer::Token(sealer) => sealer,
        }
    }

    fn custody(&self) -> Arc<dyn KeyCustody> {
        self.counting.clone()
    }
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

fn client(custody: Arc<dyn KeyCustody>, name: &str) -> Client {
    let signer = Signer::generate(custody, Credential::Basic(name.as_bytes().to_vec()))
        .expect("signature key");
    Client::new(signer, validator()).with_group_config(config())
}

/// Runs `make(i)` for i in 2..n on every core (setup, not measured).
fn on_every_core(n: usize, make: impl Fn(usize) -> Vec<u8> + Sync) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(n);
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let rest: Vec<usize> = (2..n).collect();
    let per = rest.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = rest
            .chunks(per)
            .map(|chunk| {
                let make = &make;
                scope.spawn(move || chunk.iter().map(|&i| make(i)).collect::<Vec<_>>())
            })
            .collect();
        for h in handles {
            out.extend(h.join().expect("key package thread"));
        }
    });
    out
}

/// The KeyPackages of members 1..n (bytes), and member 1's client (in the
/// measured custody) and bundle; the others' keys in `others`.
fn key_packages(
    measured: Arc<dyn KeyCustody>,
    others: &Arc<SoftwareCustody>,
    n: usize,
) -> (Vec<Vec<u8>>, Client, KeyPackageBundle) {
    let kp_config = KeyPackageConfig::new(NOW - 10, 3600);
    let first = client(measured, "member-1");
    let first_bundle = first.generate_key_package(&kp_config).expect("kp");
    let mut out = vec![first_bundle.to_bytes().expect("encode")];
    out.extend(on_every_core(n, |i| {
        client(others.clone(), &format!("member-{i}"))
            .generate_key_package(&kp_config)
            .expect("kp")
            .to_bytes()
            .expect("encode")
    }));
    (out, first, first_bundle)
}

/// `SCALE_REPEAT`: how many self-updates hsmls creates and processes (1
/// if unset).
fn update_repeats() -> usize {
    std::env::var("SCALE_REPEAT")
        .ok()
        .map(|v| v.parse().expect("SCALE_REPEAT: a count"))
        .unwrap_or(1)
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

/// What to run and how to report it.
struct Run {
    implementation: String,
    custody: String,
    n: usize,
    ops: Vec<&'static str>,
    /// Index in [`OPS`] of the last operation asked for.
    last: usize,
}

impl Run {
    fn wanted(&self, op: &str) -> bool {
        self.ops.contains(&op)
    }

    /// Whether `op` runs (asked for, or needed by a later one).
    fn runs(&self, op: &str) -> bool {
        op != "keypackage"
            && OPS
                .iter()
                .position(|o| *o == op)
                .is_some_and(|i| i <= self.last)
    }

    fn prefix(&self) -> String {
        format!(
            "scale impl={} custody={} n={}",
            self.implementation, self.custody, self.n
        )
    }

    /// One line for a timed operation, with the measured members' custody
    /// calls during it (hsmls only).
    fn report(&self, op: &str, d: Duration, ops: Option<Ops>) {
        if !self.wanted(op) {
            return;
        }
        let mut line = format!(
            "{} op={op} time_ms={:.3}",
            self.prefix(),
            d.as_secs_f64() * 1e3
        );
        if let Some(o) = ops {
            line.push_str(&format!(
                " sign={} dh={} generate={} import={} destroy={}",
                o.sign, o.dh, o.generate, o.import, o.destroy
            ));
        }
        println!("{line}");
    }

    fn finish(&self, sizes: Option<StateSizes>) {
        if let Some(s) = sizes {
            println!(
                "{} state_bytes={} epoch_record_bytes={} written_bytes={}",
                self.prefix(),
                s.full - s.epoch_records,
                s.epoch_records,
                s.written
            );
        }
        println!("{} peak_rss={}", self.prefix(), vm_hwm());
    }
}

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str, env: &str, default: &str| {
        raw.iter()
            .find_map(|a| a.strip_prefix(&format!("--{name}=")).map(str::to_owned))
            .or_else(|| std::env::var(env).ok())
            .unwrap_or_else(|| default.to_owned())
    };
    let implementation = flag("impl", "SCALE_IMPL", "hsmls");
    let custody = flag("custody", "SCALE_CUSTODY", "software");
    let args: Vec<&String> = raw.iter().filter(|a| !a.starts_with("--")).collect();
    let n: usize = args
        .first()
        .map(|s| s.to_string())
        .or_else(|| std::env::var("SCALE_N").ok())
        .unwrap_or_else(|| "1000".to_owned())
        .replace('_', "")
        .parse()
        .expect("N: a number of members");
    assert!(n >= 2, "N must be at least 2");
    let ops_arg = args
        .get(1)
        .map(|s| s.to_string())
        .or_else(|| std::env::var("SCALE_OPS").ok())
        .unwrap_or_else(|| "all".to_owned());
    let ops: Vec<&'static str> = if ops_arg == "all" {
        OPS.to_vec()
    } else {
        ops_arg
            .split(',')
            .map(|op| {
                *OPS.iter()
                    .find(|o| **o == op)
                    .unwrap_or_else(|| panic!("unknown operation {op}; one of {OPS:?}"))
            })
            .collect()
    };
    let last = OPS
        .iter()
        .rposition(|op| ops.contains(op))
        .expect("one operation");
    let run = Run {
        implementation,
        custody,
        n,
        ops,
        last,
    };
    match run.implementation.as_str() {
        "hsmls" => run_hsmls(&run),
        "openmls" | "mls-rs" => {
            assert_eq!(
                run.custody, "software",
                "the peers hold their keys in software only"
            );
            if run.implementation == "openmls" {
                run_peer::<OpenMlsPeer>(&run);
            } else {
                run_peer::<MlsRsPeer>(&run);
            }
        }
        "hsmls-peer" => run_peer::<HsmlsPeer>(&run),
        other => panic!("unknown implementation {other}; hsmls, openmls or mls-rs"),
    }
}

/// hsmls through its own API, the measured members' keys in `run.custody`.
fn run_hsmls(run: &Run) {
    let n = run.n;
    let measured_custody = MeasuredCustody::open(&run.custody);
    let custody = measured_custody.custody();
    let counts = || measured_custody.counting.ops();

    if run.wanted("keypackage") {
        let kp_config = KeyPackageConfig::new(NOW - 10, 3600);
        let c = client(custody.clone(), "keypackage bench");
        let before = counts();
        // Their private keys stay in the custody until the end
        // (`destroy_left`).
        let (_bundles, d) = timed(|| {
            (0..KEY_PACKAGES_TIMED)
                .map(|_| {
                    let bundle = c.generate_key_package(&kp_config).expect("kp");
                    bundle.to_bytes().expect("encode");
                    bundle
                })
                .collect::<Vec<_>>()
        });
        let ops = counts().since(before);
        run.report(
            "keypackage",
            d / KEY_PACKAGES_TIMED as u32,
            Some(Ops {
                sign: ops.sign / KEY_PACKAGES_TIMED as u64,
                dh: ops.dh / KEY_PACKAGES_TIMED as u64,
                generate: ops.generate / KEY_PACKAGES_TIMED as u64,
                import: ops.import / KEY_PACKAGES_TIMED as u64,
                destroy: ops.destroy / KEY_PACKAGES_TIMED as u64,
            }),
        );
        if run.last == 0 {
            measured_custody.counting.destroy_left();
            run.finish(None);
            return;
        }
    }

    let started = Instant::now();
    let others = Arc::new(SoftwareCustody::new());
    let creator_client = client(custody.clone(), "creator");
    let (kps, first_client, first_bundle) = key_packages(custody.clone(), &others, n);
    eprintln!(
        "scale: {} KeyPackages in {:.1?} (setup)",
        kps.len(),
        started.elapsed()
    );
    let mut creator = creator_client
        .create_group(GROUP_ID.to_vec(), Vec::new(), NOW)
        .expect("create group");

    // create
    let before = counts();
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
    run.report("create", d, Some(counts().since(before)));
    let welcome = out.welcome.expect("a Welcome");
    eprintln!(
        "scale: commit {} B, Welcome {} B",
        out.commit.len(),
        welcome.len()
    );
    if !run.runs("join") {
        measured_custody.counting.destroy_left();
        run.finish(None);
        return;
    }

    // join
    let before = counts();
    let (member, d) = measured(|| {
        first_client
            .join_from_welcome(&first_bundle, &welcome, JoinOptions::default())
            .expect("join")
    });
    let mut member = member;
    drop(welcome);
    run.report("join", d, Some(counts().since(before)));
    assert_eq!(member.epoch_authenticator(), creator.epoch_authenticator());

    // save-full: the first save, confirmed once "written"
    let sealer = measured_custody.sealer();
    let mut store = MemStore::default();
    let mut sizes = StateSizes::default();
    if run.runs("save-full") {
        let before = counts();
        let ((saved, ticket), d) = measured(|| member.save_changes(sealer).expect("save"));
        run.report("save-full", d, Some(counts().since(before)));
        sizes.full = saved.written_bytes();
        sizes.epoch_records = saved.epoch_records.iter().map(|r| r.data.len()).sum();
        store.write(saved);
        assert!(member.confirm_saved(ticket));
    }

    // update-create, update-process; `SCALE_REPEAT=K` runs the pair (and
    // `save`) K times, the creator's self-updates all the same shape, so
    // that one group gives K samples of each.
    for _ in 0..update_repeats() {
        if !run.runs("update-create") {
            break;
        }
        let before = counts();
        let (out, d) = measured(|| {
            let mut options = CommitOptions::new();
            options.force_path = true;
            creator.commit(options, NOW).expect("self-update")
        });
        run.report("update-create", d, Some(counts().since(before)));
        creator.merge_pending_commit().expect("merge");
        if run.runs("update-process") {
            let before = counts();
            let ((), d) = measured(|| merge_incoming(&mut member, &out.commit));
            run.report("update-process", d, Some(counts().since(before)));
            assert_eq!(member.epoch_authenticator(), creator.epoch_authenticator());
        }
        // save: persisting the processed commit
        if run.runs("save") {
            let before = counts();
            let ((saved, ticket), d) = measured(|| member.save_changes(sealer).expect("save"));
            run.report("save", d, Some(counts().since(before)));
            sizes.written = saved.written_bytes();
            store.write(saved);
            assert!(member.confirm_saved(ticket));
        }
    }

    // remove-create, remove-process
    if run.runs("remove-create") && n >= 3 {
        let removed = LeafIndex(u32::try_from(n - 1).expect("N fits u32"));
        let before = counts();
        let (out, d) = measured(|| {
            creator
                .remove_members(&[removed], NOW)
                .expect("remove commit")
        });
        run.report("remove-create", d, Some(counts().since(before)));
        creator.merge_pending_commit().expect("merge");
        if run.runs("remove-process") {
            let before = counts();
            let ((), d) = measured(|| merge_incoming(&mut member, &out.commit));
            run.report("remove-process", d, Some(counts().since(before)));
            assert_eq!(member.epoch_authenticator(), creator.epoch_authenticator());
        }
    }

    // application messages
    for (size, protect, unprotect) in [
        (100, "protect-100", "unprotect-100"),
        (10 * 1024, "protect-10k", "unprotect-10k"),
    ] {
        if !run.runs(protect) {
            break;
        }
        let data = vec![0x5a; size];
        let before = counts();
        let mut times = Vec::new();
        let mut messages = Vec::new();
        for _ in 0..MESSAGES {
            let (m, d) = measured(|| creator.encrypt_application(&data).expect("protect"));
            times.push(d);
            messages.push(m);
        }
        let ops = counts().since(before);
        run.report(protect, median(times), Some(per_message(ops)));
        if !run.runs(unprotect) {
            break;
        }
        let before = counts();
        let mut times = Vec::new();
        for m in &messages {
            let (got, d) = measured(|| member.process_incoming(m, NOW).expect("unprotect"));
            times.push(d);
            match got {
                ProcessedMessage::ApplicationMessage { data: got, .. } => assert_eq!(got, data),
                _ => panic!("expected an application message"),
            }
        }
        let ops = counts().since(before);
        run.report(unprotect, median(times), Some(per_message(ops)));
    }

    // load
    if run.runs("load") {
        let (saved, ticket) = member.save_changes(sealer).expect("save");
        store.write(saved);
        assert!(member.confirm_saved(ticket));
        let saved = store.read();
        let before = counts();
        let (loaded, d) = measured(|| first_client.load_saved_group(sealer, &saved).expect("load"));
        run.report("load", d, Some(counts().since(before)));
        assert_eq!(loaded.epoch_authenticator(), member.epoch_authenticator());
    }
    measured_custody.counting.destroy_left();
    run.finish(run.runs("save-full").then_some(sizes));
}

/// Bytes of member 1's saves.
#[derive(Default, Clone, Copy)]
struct StateSizes {
    /// The whole state (`save-full`): state, tree records and epoch records.
    full: usize,
    /// The epoch records in it.
    epoch_records: usize,
    /// What `save` wrote (hsmls: the state, the changed tree records and
    /// the epoch records).
    written: usize,
}

/// What a store holds of member 1's group, kept by the rules of the SQLite
/// store (`hsmls-storage`): the state and epoch records replaced, tree
/// records inserted or replaced and cut at the tree's chunk count.
#[derive(Default)]
struct MemStore {
    saved: Option<SavedGroup>,
}

impl MemStore {
    fn write(&mut self, saved: SavedGroup) {
        match &mut self.saved {
            Some(kept) => kept.apply(saved),
            None => self.saved = Some(saved),
        }
    }

    fn read(&self) -> SavedGroup {
        self.saved.clone().expect("a saved state")
    }
}

fn per_message(ops: Ops) -> Ops {
    let m = MESSAGES as u64;
    Ops {
        sign: ops.sign / m,
        dh: ops.dh / m,
        generate: ops.generate / m,
        import: ops.import / m,
        destroy: ops.destroy / m,
    }
}

fn options() -> PeerOptions {
    let mut options = PeerOptions::new(hsmls_peers::CIPHER_SUITE);
    options.public_handshakes = true;
    options.always_path = true;
    options
}

fn peer<P: Peer>(name: &str) -> P {
    P::with_options(name.as_bytes(), options())
        .unwrap_or_else(|e| panic!("{} client {name}: {e}", P::NAME))
}

/// openmls or mls-rs (or hsmls's own adapter) through [`Peer`], the same
/// steps as [`run_hsmls`].
fn run_peer<P: Peer>(run: &Run) {
    let n = run.n;

    if run.wanted("keypackage") {
        let mut c = peer::<P>("keypackage bench");
        let (_, d) = timed(|| {
            for _ in 0..KEY_PACKAGES_TIMED {
                c.key_package().expect("key package");
            }
        });
        run.report("keypackage", d / KEY_PACKAGES_TIMED as u32, None);
        if run.last == 0 {
            run.finish(None);
            return;
        }
    }

    let started = Instant::now();
    let mut creator = peer::<P>("creator");
    let mut member = peer::<P>("member-1");
    let mut kps = vec![member.key_package().expect("key package")];
    kps.extend(on_every_core(n, |i| {
        peer::<P>(&format!("member-{i}"))
            .key_package()
            .expect("key package")
    }));
    eprintln!(
        "scale: {} KeyPackages in {:.1?} (setup)",
        kps.len(),
        started.elapsed()
    );
    creator.create_group(GROUP_ID).expect("create group");

    // create
    let (out, d) = measured(|| {
        let out = creator.add_members(&kps).expect("add");
        creator.merge_pending().expect("merge");
        out
    });
    drop(kps);
    run.report("create", d, None);
    let welcome = out.welcome.expect("a Welcome");
    eprintln!(
        "scale: commit {} B, Welcome {} B",
        out.commit.len(),
        welcome.len()
    );
    if !run.runs("join") {
        run.finish(None);
        return;
    }

    // join
    let ((), d) = measured(|| member.join(&welcome, None).expect("join"));
    drop(welcome);
    run.report("join", d, None);
    let same_epoch = |a: &P, b: &P| {
        assert_eq!(
            a.epoch_authenticator().expect("epoch"),
            b.epoch_authenticator().expect("epoch"),
            "{} diverged",
            P::NAME
        );
    };
    same_epoch(&creator, &member);

    let mut sizes = StateSizes::default();
    if run.runs("save-full") {
        let (saved, d) = measured(|| member.save_state().expect("save"));
        run.report("save-full", d, None);
        sizes.full = saved.size();
    }

    if run.runs("update-create") {
        let (out, d) = measured(|| creator.self_update().expect("self-update"));
        run.report("update-create", d, None);
        creator.merge_pending().expect("merge");
        if run.runs("update-process") {
            let (_, d) = measured(|| member.process(&out.commit).expect("process"));
            run.report("update-process", d, None);
            same_epoch(&creator, &member);
        }
        if run.runs("save") {
            let (saved, d) = measured(|| member.save_state().expect("save"));
            run.report("save", d, None);
            sizes.written = saved.size();
        }
    }

    if run.runs("remove-create") && n >= 3 {
        let removed = u32::try_from(n - 1).expect("N fits u32");
        let (out, d) = measured(|| creator.remove_member(removed).expect("remove"));
        run.report("remove-create", d, None);
        creator.merge_pending().expect("merge");
        if run.runs("remove-process") {
            let (_, d) = measured(|| member.process(&out.commit).expect("process"));
            run.report("remove-process", d, None);
            same_epoch(&creator, &member);
        }
    }

    for (size, protect, unprotect) in [
        (100, "protect-100", "unprotect-100"),
        (10 * 1024, "protect-10k", "unprotect-10k"),
    ] {
        if !run.runs(protect) {
            break;
        }
        let data = vec![0x5a; size];
        let mut times = Vec::new();
        let mut messages = Vec::new();
        for _ in 0..MESSAGES {
            let (m, d) = measured(|| creator.encrypt(&data).expect("protect"));
            times.push(d);
            messages.push(m);
        }
        run.report(protect, median(times), None);
        if !run.runs(unprotect) {
            break;
        }
        let mut times = Vec::new();
        for m in &messages {
            let (got, d) = measured(|| member.process(m).expect("unprotect"));
            times.push(d);
            assert_eq!(got, hsmls_peers::Event::Application(data.clone()));
        }
        run.report(unprotect, median(times), None);
    }

    if run.runs("load") {
        let saved = member.save_state().expect("save");
        let before = member.epoch_authenticator().expect("epoch");
        let ((), d) = measured(|| member.load_state(&saved).expect("load"));
        run.report("load", d, None);
        assert_eq!(member.epoch_authenticator().expect("epoch"), before);
    }
    run.finish(run.runs("save-full").then_some(sizes));
}
