//! Two DS processes (`hsmls-ds serve`, real processes) on one PostgreSQL
//! database: the done-when test of the Delivery Service (three clients
//! with their keys in SoftHSM form a group through the DS, exchange
//! messages, one is offline for several commits and catches up, commits
//! race through both processes and everyone ends in the same epoch with
//! the same epoch_authenticator), claims through both processes, and a
//! push across processes (LISTEN/NOTIFY).

mod common;

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hsmls::CommitOptions;
use hsmls_custody::pkcs11::{CONFIG_ENV, Pkcs11Config};
use hsmls_custody::{KeyCustody, Pkcs11Custody, SoftwareCustody};
use hsmls_ds::api::{GroupMode, ServerFrame};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A `hsmls-ds serve` child process.
struct DsProcess {
    child: Child,
    base: String,
}

async fn spawn_ds(url: &str, key_file: &std::path::Path) -> DsProcess {
    let mut child = Command::new(ds_binary())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--postgres",
            url,
            "--key-file",
        ])
        .arg(key_file)
        .args(["--ds-identity", "ds.test", "--rate", "100000"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start hsmls-ds");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("hsmls-ds started in time")
        .unwrap()
        .expect("hsmls-ds printed its address");
    let addr = line
        .strip_prefix("listening on ")
        .expect("listening on ADDR");
    DsProcess {
        child,
        base: format!("http://{addr}"),
    }
}

async fn two_processes(db: &PgDb, dir: &tempfile::TempDir) -> (DsProcess, DsProcess) {
    let key = dir.path().join("ds.key");
    let a = spawn_ds(&db.url, &key).await;
    let b = spawn_ds(&db.url, &key).await;
    (a, b)
}

fn softhsm() -> Arc<Pkcs11Custody> {
    if std::env::var_os(CONFIG_ENV).is_none() {
        panic!("{CONFIG_ENV} is not set: run scripts/test.sh (it sets up the SoftHSM token)");
    }
    let config = Pkcs11Config::from_env().unwrap();
    Arc::new(Pkcs11Custody::open(&config).expect("open the SoftHSM test token"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn done_when_three_softhsm_clients_two_ds_processes() {
    let db = PgDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let (ds1, ds2) = two_processes(&db, &dir).await;
    let token = softhsm();
    // Alice and Carol talk to the first process, Bob to the second.
    let mut alice = Client::new(token.clone(), "alice", &ds1.base).await;
    let mut bob = Client::new(token.clone(), "bob", &ds2.base).await;
    let mut carol = Client::new(token.clone(), "carol", &ds1.base).await;
    bob.publish(2, true).await;
    carol.publish(2, true).await;

    // The group, formed through the DS.
    let kb = alice.ds.claim_key_package(b"bob").await.unwrap();
    let kc = alice.ds.claim_key_package(b"carol").await.unwrap();
    alice.create_group(GroupMode::Blind).await;
    let mut opts = CommitOptions::new();
    opts.add_key_packages = vec![
        alice.validate(&kb.key_package),
        alice.validate(&kc.key_package),
    ];
    let out = alice.group().commit(opts, now()).unwrap();
    alice.send_commit(&out, vec![]).await.unwrap();
    assert_eq!(alice.sync().await, vec!["own-commit"]);
    assert_eq!(bob.sync().await, vec!["welcome"]);
    assert_eq!(carol.sync().await, vec!["welcome"]);

    // Messages, each sent through its own process, one order for all.
    alice.send_app("a1").await;
    bob.send_app("b1").await;
    carol.send_app("c1").await;
    for c in [&mut alice, &mut bob, &mut carol] {
        let ev = c.sync().await;
        assert_eq!(ev.len(), 3, "{}: {ev:?}", c.name);
    }

    // Carol goes offline; Alice and Bob commit and talk.
    for round in 0..3 {
        let (committer, other) = if round % 2 == 0 {
            (&mut alice, &mut bob)
        } else {
            (&mut bob, &mut alice)
        };
        let out = committer.group().self_update(now()).unwrap();
        committer.send_commit(&out, vec![]).await.unwrap();
        committer.sync().await;
        other.sync().await;
        other
            .send_app(&format!("while carol is away {round}"))
            .await;
        committer.sync().await;
        other.sync().await;
    }
    let ev = carol.sync().await;
    assert_eq!(ev, vec!["commit", "app", "commit", "app", "commit", "app"]);
    assert_agree(&mut [&mut alice, &mut bob, &mut carol]);

    // Commit races through both processes: exactly one commit per epoch.
    for _ in 0..3 {
        let epoch = alice.group().epoch();
        let oa = alice.group().self_update(now()).unwrap();
        let ob = bob.group().self_update(now()).unwrap();
        let (ra, rb) = tokio::join!(alice.send_commit(&oa, vec![]), bob.send_commit(&ob, vec![]));
        let wins = [ra.is_ok(), rb.is_ok()];
        assert_eq!(wins.iter().filter(|w| **w).count(), 1, "{ra:?} {rb:?}");
        let loser = if ra.is_ok() { rb } else { ra };
        let p = problem(loser);
        assert_eq!(
            (p.kind(), p.current_epoch),
            ("stale-commit", Some(epoch + 1))
        );
        let ea = alice.sync().await;
        let eb = bob.sync().await;
        let ec = carol.sync().await;
        let mut both = [ea[0].as_str(), eb[0].as_str()];
        both.sort();
        assert_eq!(both, ["commit-lost", "own-commit"]);
        assert_eq!(ec, vec!["commit"]);
        assert_agree(&mut [&mut alice, &mut bob, &mut carol]);
        assert_eq!(alice.group().epoch(), epoch + 1);
    }

    // The token's objects of this test go away.
    for c in [&alice, &bob, &carol] {
        for b in c.bundles.values() {
            let _ = b.destroy(&c.signer);
        }
        token.destroy(&c.signer.signature_key).unwrap();
    }
    drop((ds1, ds2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_through_both_processes_never_share_a_package() {
    let db = PgDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let (ds1, ds2) = two_processes(&db, &dir).await;
    let soft = || Arc::new(SoftwareCustody::new()) as Arc<dyn KeyCustody>;
    let mut bob = Client::new(soft(), "bob", &ds1.base).await;
    bob.publish(30, true).await;
    let c1 = Arc::new(Client::new(soft(), "claimer1", &ds1.base).await);
    let c2 = Arc::new(Client::new(soft(), "claimer2", &ds2.base).await);
    let mut tasks = Vec::new();
    for i in 0..60 {
        let c = if i % 2 == 0 { c1.clone() } else { c2.clone() };
        tasks.push(tokio::spawn(async move {
            c.ds.claim_key_package(b"bob").await.unwrap()
        }));
    }
    let mut seen = HashSet::new();
    let mut last_resort = 0;
    for t in tasks {
        let k = t.await.unwrap();
        if k.last_resort {
            last_resort += 1;
        } else {
            assert!(seen.insert(k.key_package), "a KeyPackage handed out twice");
        }
    }
    assert_eq!((seen.len(), last_resort), (30, 30));
    let counts = bob.ds.key_package_counts().await.unwrap();
    assert_eq!((counts.available, counts.last_resort_claims), (0, 30));
    drop((ds1, ds2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_across_processes() {
    let db = PgDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let (ds1, ds2) = two_processes(&db, &dir).await;
    let soft = || Arc::new(SoftwareCustody::new()) as Arc<dyn KeyCustody>;
    let mut alice = Client::new(soft(), "alice", &ds1.base).await;
    let mut bob = Client::new(soft(), "bob", &ds2.base).await;
    bob.publish(1, false).await;
    let kb = alice.ds.claim_key_package(b"bob").await.unwrap();
    alice.create_group(GroupMode::Blind).await;
    let kb = alice.validate(&kb.key_package);
    let out = alice.group().add_members(&[kb], now()).unwrap();
    // Bob listens on the second process before the commit is sent to the
    // first: the Welcome and the messages reach him by NOTIFY.
    let mut push = bob.ds.push(vec![]).await.unwrap();
    alice.send_commit(&out, vec![]).await.unwrap();
    alice.sync().await;
    match next(&mut push).await {
        ServerFrame::Welcome(w) => bob.join(&w.welcome),
        other => panic!("{other:?}"),
    }
    let seq = alice.send_app("across").await;
    match next(&mut push).await {
        ServerFrame::Message(m) => {
            assert_eq!(m.seq, seq);
            assert_eq!(bob.handle(&m.group_id, m.seq, &m.message), "app");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(bob.received[0].2, b"across");
    push.close().await;
    drop((ds1, ds2));
}

async fn next(push: &mut hsmls_ds::client::PushStream) -> ServerFrame {
    tokio::time::timeout(Duration::from_secs(10), push.next())
        .await
        .expect("pushed across processes in time")
        .unwrap()
        .unwrap()
}

impl Drop for DsProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
