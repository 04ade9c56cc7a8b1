//! One `write_group` (state plus two epoch records, one of them replacing
//! the record that left the window) into SQLite, per journal mode, with
//! `secure_delete` on (and off, for its cost), at the blob sizes of groups
//! of 2, 1,000 and 10,000 members (from `cargo bench -p hsmls --bench
//! state`). `synchronous = FULL`: each write waits for the disk.
//!
//! Run: `cargo bench -p hsmls-storage --bench state`

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hsmls::{EpochRecord, SavedGroup};
use hsmls_storage::{GroupStateStorage, JournalMode, SqliteOptions, SqliteStorage};
use rand_core::{OsRng, RngCore};

/// (members, state bytes, record bytes) as measured for sealed groups.
const SIZES: [(usize, usize, usize); 3] = [
    (2, 1_850, 800),
    (1_000, 255_000, 2_100),
    (10_000, 2_530_000, 2_700),
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
    for (members, state_len, record_len) in SIZES {
        let mut g = c.benchmark_group("sqlite_write_group");
        g.sample_size(if members >= 10_000 { 10 } else { 20 });
        g.warm_up_time(Duration::from_secs(1));
        g.measurement_time(Duration::from_secs(3));
        g.throughput(Throughput::Bytes((state_len + 2 * record_len) as u64));
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
            let state = random(state_len);
            let record = random(record_len);
            let mut epoch = 2u64;
            g.bench_function(BenchmarkId::new(name, members), |b| {
                b.iter(|| {
                    epoch += 1;
                    let saved = SavedGroup {
                        group_id: b"bench".to_vec(),
                        epoch,
                        state: state.clone(),
                        epoch_records: (epoch - 2..epoch)
                            .map(|e| EpochRecord {
                                epoch: e,
                                data: record.clone(),
                            })
                            .collect(),
                    };
                    rt.block_on(store.write_group(&saved)).expect("write");
                })
            });
            rt.block_on(store.close());
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
