//! DS store throughput and the per-message work outside the store.
//!
//! * `append/{sqlite,postgres}`: 256 application messages appended
//!   concurrently to one group of 10 members (each: the tags and the
//!   sealing of the data at rest, the window, membership and duplicate
//!   checks, the counter under the group row's lock, the row), i.e.
//!   messages accepted per second by the store alone, through the
//!   [`SealedStore`] the DS uses. SQLite is one file, WAL,
//!   `synchronous=FULL`, the batching writer; PostgreSQL the server of
//!   `scripts/setup-postgres.sh` (`fsync=on`), 16 connections, a database
//!   of its own (created and dropped).
//! * `read/sqlite`: one member reading 256 messages after its cursor (and
//!   opening them).
//! * `seal/{tags,seal,open}`: what the sealing layer does to a 256-byte
//!   message: its three tags (HMAC-SHA256), sealing and opening it
//!   (XAES-256-GCM).
//! * `framing`: decoding a 256-byte PrivateMessage's framing and its
//!   SHA-256 (what the DS does to every message before storing it).
//!
//! `bash scripts/bench.sh --ds` (or `cargo bench -p hsmls-ds --bench
//! store` with `HSMLS_TEST_PG_URL` set; without it the PostgreSQL case is
//! skipped with a message).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hsmls::wire::ContentType;
use hsmls_ds::api::GroupMode;
use hsmls_ds::auth::DsKey;
use hsmls_ds::loadgen::synthetic_message;
use hsmls_ds::ordering::{digest, framing};
use hsmls_ds::seal::{AtRest, Sealed};
use hsmls_ds::store::{
    DsStore, NewCommit, NewGroup, NewMessage, PostgresStore, QueueId, SealedStore, SqliteConfig,
    SqliteStore,
};
use sqlx::Connection;

const BATCH: u64 = 256;
const NOW: u64 = 1_800_000_000;

fn sealed<S: DsStore>(s: S) -> Arc<SealedStore<S>> {
    Arc::new(SealedStore::new(s, &DsKey::from_bytes([3; 32])))
}

/// A database of its own on the server of `HSMLS_TEST_PG_URL` (created by
/// the server's admin role, as the tests do): its URL, the admin URL and
/// its name.
async fn bench_database(base: &str) -> (String, String, String) {
    let (_, rest) = base.split_once('@').expect("a postgres URL with a user");
    let host = rest.split('/').next().unwrap();
    let admin = format!("postgres://postgres:postgres@{host}/postgres");
    let mut rnd = [0u8; 6];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut rnd);
    let name = format!("hsmls_ds_bench_{}", hex::encode(rnd));
    let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {name} OWNER hsmls"
    )))
    .execute(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
    let url = base
        .rsplit_once('/')
        .map(|(b, _)| format!("{b}/{name}"))
        .unwrap();
    (url, admin, name)
}

async fn drop_database(admin: &str, name: &str) {
    let mut c = sqlx::PgConnection::connect(admin).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
}

async fn group<S: DsStore>(s: &SealedStore<S>) -> (Vec<u8>, Vec<QueueId>) {
    let mut members = Vec::new();
    let mut tag = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut tag);
    for i in 0..10u8 {
        tag[0] = i;
        members.push(s.client_queue(tag).await.unwrap());
    }
    let gid = tag.to_vec();
    s.create_group(NewGroup {
        group_id: gid.clone(),
        mode: GroupMode::Blind,
        epoch: 0,
        creator: members[0],
        public_state: None,
        group_info: None,
    })
    .await
    .unwrap();
    s.append_commit(NewCommit {
        group_id: gid.clone(),
        epoch: 0,
        digest: [0; 32],
        sender: members[0],
        external: false,
        message: vec![0; 64],
        welcome: None,
        added: members[1..].to_vec(),
        removed: vec![],
        public_state: None,
        group_info: None,
        now: NOW,
    })
    .await
    .unwrap();
    (gid, members)
}

fn append<S: DsStore>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    s: Arc<SealedStore<S>>,
) {
    let (gid, members) = rt.block_on(group(&s));
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut g = c.benchmark_group("append");
    g.throughput(Throughput::Elements(BATCH));
    g.measurement_time(Duration::from_secs(8));
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let mut tasks = Vec::with_capacity(BATCH as usize);
                    for i in 0..BATCH {
                        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let s = s.clone();
                        let bytes = synthetic_message(&gid, 1, ContentType::Application, n, 256);
                        let m = NewMessage {
                            group_id: gid.clone(),
                            epoch: 1,
                            window: 2,
                            digest: digest(&bytes),
                            sender: members[(i % 10) as usize],
                            message: bytes,
                            public_state: None,
                            now: NOW,
                        };
                        tasks.push(tokio::spawn(
                            async move { s.append_message(m).await.unwrap() },
                        ));
                    }
                    for t in tasks {
                        t.await.unwrap();
                    }
                }
                start.elapsed()
            })
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = sealed(
        rt.block_on(SqliteStore::open(
            dir.path().join("bench.sqlite"),
            SqliteConfig::default(),
        ))
        .unwrap(),
    );
    append(c, &rt, "sqlite", sqlite.clone());
    match std::env::var("HSMLS_TEST_PG_URL") {
        Ok(base) => {
            let (url, admin, name) = rt.block_on(bench_database(&base));
            let pg = rt.block_on(PostgresStore::connect(&url, 16)).unwrap();
            append(c, &rt, "postgres", sealed(pg.clone()));
            rt.block_on(async {
                pg.pool().close().await;
                drop_database(&admin, &name).await;
            });
        }
        Err(_) => eprintln!(
            "append/postgres skipped: HSMLS_TEST_PG_URL is not set (bash scripts/bench.sh --ds sets it)"
        ),
    }

    // Reading 256 messages after a cursor.
    let (gid, _) = rt.block_on(async {
        let (gid, members) = group(&sqlite).await;
        for n in 0..BATCH {
            let bytes = synthetic_message(&gid, 1, ContentType::Application, n, 256);
            sqlite
                .append_message(NewMessage {
                    group_id: gid.clone(),
                    epoch: 1,
                    window: 2,
                    digest: digest(&bytes),
                    sender: members[0],
                    message: bytes,
                    public_state: None,
                    now: NOW,
                })
                .await
                .unwrap();
        }
        (gid, members)
    });
    let mut g = c.benchmark_group("read");
    g.throughput(Throughput::Elements(BATCH));
    g.bench_function("sqlite", |b| {
        b.iter(|| {
            rt.block_on(sqlite.read_messages(gid.clone(), 1, None, BATCH as u32))
                .unwrap()
        })
    });
    g.finish();

    let bytes = synthetic_message(&[7; 32], 3, ContentType::Application, 1, 256);
    c.bench_function("framing", |b| {
        b.iter(|| {
            let f = framing(&bytes).unwrap();
            (f.epoch, digest(&bytes))
        })
    });
    // What the sealing layer does to one 256-byte message: its group,
    // member and digest tags, the seal on the way in, the open on the way
    // out.
    let keys = AtRest::new(&DsKey::from_bytes([3; 32]));
    let d = digest(&bytes);
    let g = keys.group_tag(&[7; 32]);
    let t = keys.digest_tag(&d);
    let sealed = keys.seal(Sealed::Message, &[&g, &t], &bytes);
    let mut sg = c.benchmark_group("seal");
    sg.bench_function("tags", |b| {
        b.iter(|| {
            (
                keys.group_tag(&[7; 32]),
                keys.member_tag(&[1; 16]),
                keys.digest_tag(&d),
            )
        })
    });
    sg.bench_function("seal", |b| {
        b.iter(|| keys.seal(Sealed::Message, &[&g, &t], &bytes))
    });
    sg.bench_function("open", |b| {
        b.iter(|| keys.open(Sealed::Message, &[&g, &t], &sealed).unwrap())
    });
    sg.finish();
}

criterion_group!(name = ds; config = Criterion::default().sample_size(20); targets = benches);
criterion_main!(ds);
