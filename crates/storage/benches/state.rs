//! One `write_group` of an incremental save (the state, the tree records a
//! self-update commit changed, two epoch records, one of them replacing
//! the record that left the window) into SQLite, per journal mode, with
//! `secure_delete` on (and off, for its cost), at the blob sizes of groups
//! of 2, 1,000 and 10,000 members (from `cargo bench -p hsmls --bench
//! state`; the group's full save is written once before). `synchronous =
//! FULL`: each write waits for the disk.
//!
//! Run: `cargo bench -p hsmls-storage --bench state`

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hsmls::{EpochRecord, SavedGroup, TreeRecord};
use hsmls_storage::{GroupStateStorage, JournalMode, SqliteOptions, SqliteStorage};
use rand_core::{OsRng, RngCore};

/// A sealed group's sizes, as measured.
struct Sizes {
    members: usize,
    /// The state blob.
    state: usize,
    /// An epoch record.
    record: usize,
    /// The tree's chunks and the size of one tree record.
    chunks: u32,
    chunk: usize,
    /// The chunks a self-update commit changes.
    changed: u32,
}

const SIZES: [Sizes; 3] = [
    Sizes {
        members: 2,
        state: 1_300,
        record: 800,
        chunks: 1,
        chunk: 700,
        changed: 1,
    },
    Sizes {
        members: 1_000,
        state: 6_000,
        record: 2_100,
        chunks: 8,
        chunk: 41_000,
        changed: 3,
    },
    Sizes {
        members: 10_000,
        state: 9_000,
        record: 2_700,
        chunks: 128,
        chunk: 41_000,
        changed: 7,
    },
];

fn random(len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    OsRng.fill_bytes(&mut v);
    v
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let modes = [
        ("truncate", JournalMode::Truncate, true),
        ("delete", JournalMode::Delete, true),
        ("wal+checkpoint", JournalMode::WalCheckpoint, true),
        ("truncate, secure_delete off", JournalMode::Truncate, false),
    ];
    for size in SIZES {
        let members = size.members;
        let mut g = c.benchmark_group("sqlite_write_group");
        g.sample_size(if members >= 10_000 { 10 } else { 20 });
        g.warm_up_time(Duration::from_secs(1));
        g.measurement_time(Duration::from_secs(3));
        g.throughput(Throughput::Bytes(
            (size.state + 2 * size.record + size.changed as usize * size.chunk) as u64,
        ));
        for (name, journal, secure_delete) in modes {
            let dir = tempfile::tempdir().expect("dir");
            let store = rt
                .block_on(SqliteStorage::open_with(
                    dir.path().join("bench.db"),
                    SqliteOptions::new()
                        .journal(journal)
                        .secure_delete(secure_delete),
                ))
                .expect("open");
            let state = random(size.state);
            let record = random(size.record);
            let chunk = random(size.chunk);
            let mut epoch = 2u64;
            let saved = |epoch: u64, chunks: std::ops::Range<u32>| SavedGroup {
                group_id: b"bench".to_vec(),
                epoch,
                state: state.clone(),
                tree_chunks: size.chunks,
                tree_records: chunks
                    .map(|index| TreeRecord {
                        index,
                        data: chunk.clone(),
                    })
                    .collect(),
                epoch_records: (epoch - 2..epoch)
                    .map(|e| EpochRecord {
                        epoch: e,
                        data: record.clone(),
                    })
                    .collect(),
            };
            rt.block_on(store.write_group(&saved(epoch, 0..size.chunks)))
                .expect("full write");
            g.bench_function(BenchmarkId::new(name, members), |b| {
                b.iter(|| {
                    epoch += 1;
                    rt.block_on(store.write_group(&saved(epoch, 0..size.changed)))
                        .expect("write");
                })
            });
            rt.block_on(store.close());
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
