//! Comparative benchmark: a self-update Commit (an empty commit with an
//! UpdatePath, RFC 9420 §12.4) created by one member and processed by
//! another, in groups of N members, for every implementation behind
//! [`Peer`].
//!
//! Group shape: the committer creates the group and adds the other N−1
//! members with one Add commit (no path), so most parent nodes are blank and
//! the committer's UpdatePath is encrypted to about N−1 leaves — the same
//! tree for every implementation. The receiver is the member at leaf 1.
//!
//! * create: `self_update()` on the committer (the pending commit is
//!   discarded outside the timed part, so every iteration starts from the
//!   same epoch).
//! * process: `process()` of one such commit (decrypt, verify, apply, merge)
//!   on a fresh `fork()` of the receiver each iteration; forking is untimed.
//!
//! Sizes come from `PEERS_BENCH_SIZES` (default `2,100,1000`), e.g.
//! `PEERS_BENCH_SIZES=10000 cargo bench -p hsmls-peers --bench commit`.
//! To add an implementation, implement `Peer` for it and add one
//! `bench_peer::<ItsPeer>(c, n)` line in `commit_benches`.

use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use hsmls_peers::{MlsRsPeer, OpenMlsPeer, Peer, PeerError};

/// A committer and a receiver in a group of `n` members.
struct BenchGroup<P> {
    committer: P,
    receiver: P,
}

fn build_group<P: Peer>(n: usize) -> Result<BenchGroup<P>, PeerError> {
    let mut committer = P::new(b"committer")?;
    let mut receiver = P::new(b"receiver")?;
    committer.create_group(b"benchmark group")?;
    if n < 2 {
        return Ok(BenchGroup {
            committer,
            receiver,
        });
    }
    let mut key_packages = Vec::with_capacity(n - 1);
    key_packages.push(receiver.key_package()?);
    for i in 2..n {
        // One client per member: signature keys must be unique (RFC 9420 §7.9).
        let mut member = P::new(format!("member {i}").as_bytes())?;
        key_packages.push(member.key_package()?);
    }
    let add = committer.add_members(&key_packages)?;
    committer.merge_pending()?;
    let welcome = add.welcome.ok_or(PeerError::UnexpectedMessage {
        implementation: P::NAME,
        expected: "a Welcome",
    })?;
    receiver.join(&welcome, None)?;
    assert_eq!(
        receiver.epoch_authenticator()?,
        committer.epoch_authenticator()?
    );
    assert_eq!(receiver.member_count()?, n);
    Ok(BenchGroup {
        committer,
        receiver,
    })
}

fn bench_peer<P: Peer>(c: &mut Criterion, n: usize) {
    let started = Instant::now();
    let mut group = match build_group::<P>(n) {
        Ok(g) => g,
        Err(e) => panic!("{} setup at N = {n}: {e}", P::NAME),
    };
    eprintln!(
        "{} N = {n}: group set up in {:.1?}",
        P::NAME,
        started.elapsed()
    );

    // The create loop advances the committer's handshake generation far
    // beyond any receiver's forward window; the processed commit is made
    // from this untouched copy instead.
    let mut fresh_committer = match group.committer.fork() {
        Ok(f) => f,
        Err(e) => panic!("{} fork: {e}", P::NAME),
    };

    // Flat sampling (the same iteration count in every sample) keeps the
    // slow large-group runs to about ten iterations.
    let mode = if n >= 1000 {
        SamplingMode::Flat
    } else {
        SamplingMode::Auto
    };
    c.benchmark_group(format!("self_update_create/{n}"))
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

    let commit = match fresh_committer.self_update() {
        Ok(c) => c.commit,
        Err(e) => panic!("{} create: {e}", P::NAME),
    };
    // Check once that the receiver accepts it and agrees with the committer.
    let check = (|| -> Result<bool, PeerError> {
        let mut receiver = group.receiver.fork()?;
        receiver.process(&commit)?;
        fresh_committer.merge_pending()?;
        Ok(receiver.epoch_authenticator()? == fresh_committer.epoch_authenticator()?)
    })();
    assert!(
        matches!(check, Ok(true)),
        "{} process check: {check:?}",
        P::NAME
    );

    c.benchmark_group(format!("self_update_process/{n}"))
        .sampling_mode(mode)
        .bench_function(P::NAME, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut receiver = match group.receiver.fork() {
                        Ok(r) => r,
                        Err(e) => panic!("{} fork: {e}", P::NAME),
                    };
                    let start = Instant::now();
                    let event = receiver.process(&commit);
                    total += start.elapsed();
                    if let Err(e) = event {
                        panic!("{} process: {e}", P::NAME);
                    }
                    drop(receiver);
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

fn commit_benches(c: &mut Criterion) {
    for n in sizes() {
        bench_peer::<OpenMlsPeer>(c, n);
        bench_peer::<MlsRsPeer>(c, n);
        // hsmls: add `bench_peer::<hsmls_peers::HsmlsPeer>(c, n);` once
        // crates/peers/src/hsmls_peer.rs implements `Peer` on hsmls's Group.
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
