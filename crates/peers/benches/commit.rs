//! Comparative benchmark: a self-update Commit (an empty commit with an
//! UpdatePath, RFC 9420 §12.4) created by one member and processed by
//! others, in groups of N members, for every implementation behind
//! [`Peer`] (hsmls, openmls, mls-rs), all with suite 0x0002 unless
//! `HSMLS_BENCH_SUITES` names others (below).
//!
//! Group shape: the committer creates the group and adds the other N−1
//! members with one Add commit, so most parent nodes are blank and the
//! committer's UpdatePath is encrypted to about N−1 leaves. hsmls and
//! mls-rs add without a path; openmls's `add_members` always adds one
//! (its committer's own path is then set), so its tree differs by the
//! committer's direct path. `RECEIVERS` of the added members join
//! from the Welcome; the others only contribute KeyPackages.
//!
//! * process: one receiver's `process()` of the committer's self-update
//!   (decrypt, verify, apply the path, key schedule, merge). Each commit is
//!   processed once by each receiver, each timed; then the committer merges
//!   it and makes the next one (untimed). No state is copied, so every
//!   implementation is measured on its ordinary path.
//! * create: the committer's `self_update()` (the pending commit is
//!   discarded, untimed, so every iteration starts from the same epoch).
//!   It runs after process: discarded commits still use up handshake
//!   generations, which receivers would refuse beyond their forward window.
//!
//! Sizes come from `PEERS_BENCH_SIZES` (default `2,100,1000`), e.g.
//! `PEERS_BENCH_SIZES=10000 cargo bench -p hsmls-peers --bench commit`;
//! `PEERS_BENCH_IMPLS=hsmls,mls-rs` selects implementations;
//! `HSMLS_BENCH_SUITES=0x0001,0x0003,0x0007` the cipher suites (default
//! `0x0002`; an implementation whose crypto provider lacks a suite is
//! skipped with a note: openmls_rust_crypto has no 0x0007). Suites other
//! than 0x0002 add the suite to the benchmark names
//! (`self_update_process/100/0x0001`). hsmls spreads
//! UpdatePath encryption and tree validation over the cores; mls-rs does so
//! with `--features mls-rs-rayon`; openmls runs on one thread.
//! To add an implementation, implement `Peer` for it and add one
//! `bench_peer::<ItsPeer>(c, n)` line in `commit_benches`.

use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use hsmls_peers::{HsmlsPeer, MlsRsPeer, OpenMlsPeer, Peer, PeerError};

/// Members that process each commit (each one timed).
const RECEIVERS: usize = 8;

/// A committer and up to `RECEIVERS` receivers in a group of `n` members.
struct BenchGroup<P> {
    committer: P,
    receivers: Vec<P>,
    /// The committer's pending self-update and how many receivers have
    /// processed it.
    round: Option<(Vec<u8>, usize)>,
}

fn build_group<P: Peer>(n: usize, suite: u16) -> Result<BenchGroup<P>, PeerError> {
    let mut committer = P::with_suite(b"committer", suite)?;
    committer.create_group(b"benchmark group")?;
    let mut receivers = Vec::new();
    let mut key_packages = Vec::with_capacity(n.saturating_sub(1));
    for i in 1..n {
        // One client per member: signature keys must be unique (RFC 9420 §7.9).
        let mut member = P::with_suite(format!("member {i}").as_bytes(), suite)?;
        key_packages.push(member.key_package()?);
        if receivers.len() < RECEIVERS {
            receivers.push(member);
        }
    }
    if !key_packages.is_empty() {
        let add = committer.add_members(&key_packages)?;
        committer.merge_pending()?;
        let welcome = add.welcome.ok_or(PeerError::UnexpectedMessage {
            implementation: P::NAME,
            expected: "a Welcome",
        })?;
        for r in &mut receivers {
            r.join(&welcome, None)?;
            assert_eq!(r.epoch_authenticator()?, committer.epoch_authenticator()?);
        }
    }
    assert_eq!(committer.member_count()?, n.max(1));
    Ok(BenchGroup {
        committer,
        receivers,
        round: None,
    })
}

impl<P: Peer> BenchGroup<P> {
    /// Processes the current commit at the next receiver, returning the
    /// time `process` took; starts a new round (untimed) when every
    /// receiver has processed the current commit.
    fn process_one(&mut self) -> Result<Duration, PeerError> {
        let needs_new = match &self.round {
            None => true,
            Some((_, done)) => *done == self.receivers.len(),
        };
        if needs_new {
            if self.round.is_some() {
                self.committer.merge_pending()?;
                let expected = self.committer.epoch_authenticator()?;
                for r in &self.receivers {
                    assert_eq!(r.epoch_authenticator()?, expected, "{} diverged", P::NAME);
                }
            }
            let commit = self.committer.self_update()?.commit;
            self.round = Some((commit, 0));
        }
        let (commit, receiver) = match self.round.as_mut() {
            Some((commit, done)) => match self.receivers.get_mut(*done) {
                Some(r) => {
                    *done += 1;
                    (commit, r)
                }
                None => return Err(PeerError::NoGroup(P::NAME)),
            },
            None => return Err(PeerError::NoGroup(P::NAME)),
        };
        let start = Instant::now();
        let event = receiver.process(commit);
        let elapsed = start.elapsed();
        event?;
        Ok(elapsed)
    }

    /// Ends the process phase: finish the round so everyone is in the same
    /// epoch again.
    fn finish_round(&mut self) -> Result<(), PeerError> {
        if let Some((commit, done)) = self.round.take() {
            for r in &mut self.receivers[done..] {
                r.process(&commit)?;
            }
            self.committer.merge_pending()?;
        }
        Ok(())
    }
}

fn bench_peer<P: Peer>(c: &mut Criterion, n: usize, suite: u16) {
    // A provider may refuse the suite only when a group is made (openmls).
    let probe = P::with_suite(b"probe", suite).and_then(|mut p| p.create_group(b"probe"));
    if let Err(e) = probe {
        eprintln!("{} skipped on suite 0x{suite:04x}: {e}", P::NAME);
        return;
    }
    // The default suite keeps its historical names.
    let tag = match suite {
        hsmls_peers::CIPHER_SUITE => String::new(),
        other => format!("/0x{other:04x}"),
    };
    let started = Instant::now();
    let mut group = match build_group::<P>(n, suite) {
        Ok(g) => g,
        Err(e) => panic!("{} setup at N = {n}: {e}", P::NAME),
    };
    eprintln!(
        "{} N = {n}{tag}: group with {} receivers set up in {:.1?}",
        P::NAME,
        group.receivers.len(),
        started.elapsed()
    );
    // Flat sampling (the same iteration count in every sample) keeps the
    // slow large-group runs short.
    let mode = if n >= 1000 {
        SamplingMode::Flat
    } else {
        SamplingMode::Auto
    };

    if !group.receivers.is_empty() {
        c.benchmark_group(format!("self_update_process/{n}{tag}"))
            .sampling_mode(mode)
            .bench_function(P::NAME, |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| match group.process_one() {
                            Ok(d) => d,
                            Err(e) => panic!("{} process: {e}", P::NAME),
                        })
                        .sum()
                })
            });
        if let Err(e) = group.finish_round() {
            panic!("{} process: {e}", P::NAME);
        }
    }

    c.benchmark_group(format!("self_update_create/{n}{tag}"))
        .sampling_mode(mode)
        .bench_function(P::NAME, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let commit = group.committer.self_update();
                    total += start.elapsed();
                    if let Err(e) = commit.and_then(|_| group.committer.discard_pending()) {
                        panic!("{} create: {e}", P::NAME);
                    }
                }
                total
            })
        });
}

fn sizes() -> Vec<usize> {
    std::env::var("PEERS_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![2, 100, 1000])
}

/// Whether `PEERS_BENCH_IMPLS` (a comma-separated list of names, default
/// all) selects the implementation.
fn selected<P: Peer>() -> bool {
    std::env::var("PEERS_BENCH_IMPLS")
        .map(|list| list.split(',').any(|name| name.trim() == P::NAME))
        .unwrap_or(true)
}

/// `HSMLS_BENCH_SUITES`: comma-separated suites in hex (`0x0001`) or
/// decimal; default 0x0002.
fn suites() -> Vec<u16> {
    std::env::var("HSMLS_BENCH_SUITES")
        .ok()
        .map(|s| {
            s.split(',')
                .filter_map(|v| {
                    let v = v.trim();
                    match v.strip_prefix("0x") {
                        Some(hex) => u16::from_str_radix(hex, 16).ok(),
                        None => v.parse().ok(),
                    }
                })
                .collect()
        })
        .unwrap_or_else(|| vec![hsmls_peers::CIPHER_SUITE])
}

fn commit_benches(c: &mut Criterion) {
    for suite in suites() {
        for n in sizes() {
            if selected::<HsmlsPeer>() {
                bench_peer::<HsmlsPeer>(c, n, suite);
            }
            if selected::<OpenMlsPeer>() {
                bench_peer::<OpenMlsPeer>(c, n, suite);
            }
            if selected::<MlsRsPeer>() {
                bench_peer::<MlsRsPeer>(c, n, suite);
            }
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = commit_benches
}
criterion_main!(benches);
