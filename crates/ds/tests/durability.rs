//! Durability: `kill -9` of the DS (a real `hsmls-ds serve` process on an
//! SQLite file) during load, twice, and a restart on the same file: every
//! message the DS acknowledged is delivered, in order, exactly once to
//! every member — to members that stayed online (WebSocket push, resuming
//! from their last sequence number after each crash) and to members that
//! were offline throughout (fetch from the stored cursor).

mod common;

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ds_binary, pki};
use hsmls::internal::codec::ContentType;
use hsmls_ds::api::{Ack, GroupPosition, ServerFrame};
use hsmls_ds::loadgen::{message_index, setup_group, synthetic_message};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

async fn start(dir: &std::path::Path, listen: &str) -> (Child, String) {
    let mut child = Command::new(ds_binary())
        .args(["serve", "--listen", listen, "--sqlite"])
        .arg(dir.join("ds.sqlite"))
        .arg("--key-file")
        .arg(dir.join("ds.key"))
        .args(["--rate", "1000000", "--basic-credentials"])
        .args(pki().write_to(dir))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start hsmls-ds");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("started in time")
        .unwrap()
        .expect("printed its address");
    let addr = line.strip_prefix("listening on ").unwrap().to_string();
    (child, addr)
}

/// What one member received: (seq, message index) in arrival order.
type Log = Arc<Mutex<Vec<(u64, u64)>>>;

fn check(name: &str, log: &[(u64, u64)], acked: &HashSet<u64>) {
    let mut seen = HashSet::new();
    for w in log.windows(2) {
        assert!(
            w[1].0 > w[0].0,
            "{name}: seq {} after {}: out of order or twice",
            w[1].0,
            w[0].0
        );
    }
    for (_, idx) in log {
        assert!(seen.insert(*idx), "{name}: message {idx} delivered twice");
    }
    let missing: Vec<_> = acked.iter().filter(|i| !seen.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "{name}: acknowledged messages never delivered: {missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_load_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = start(dir.path(), "127.0.0.1:0").await;
    let mut child = Some(child);
    let base = format!("https://{addr}");
    let tls = hsmls_ds::client::tls_client_config(pki().root_pem.as_bytes()).unwrap();
    let group = Arc::new(
        setup_group(std::slice::from_ref(&base), tls, 4, "durability")
            .await
            .unwrap(),
    );
    let gid = group.group_id.clone();

    // Members 2 and 3 stay online (push, resuming after each crash);
    // members 0 and 1 send and read only at the end.
    let stop = Arc::new(AtomicBool::new(false));
    let mut logs: Vec<Log> = (0..4).map(|_| Log::default()).collect();
    let mut online = Vec::new();
    for (client, log) in group.members.iter().zip(&logs).skip(2) {
        let (client, log) = (client.clone(), log.clone());
        let stop = stop.clone();
        let gid = gid.clone();
        online.push(tokio::spawn(async move {
            let mut last = 1u64; // the commit that formed the group
            let mut idle = 0;
            loop {
                let Ok(mut push) = client
                    .push(vec![GroupPosition {
                        group_id: gid.clone(),
                        seq: last,
                    }])
                    .await
                else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                loop {
                    match tokio::time::timeout(Duration::from_millis(500), push.next()).await {
                        Ok(Some(Ok(ServerFrame::Message(m)))) => {
                            idle = 0;
                            if let Some(idx) = message_index(&m.message).filter(|i| *i != u64::MAX)
                            {
                                log.lock().unwrap().push((m.seq, idx));
                            }
                            last = m.seq;
                            if m.seq.is_multiple_of(50) {
                                let _ = push
                                    .ack(Ack {
                                        messages: vec![GroupPosition {
                                            group_id: gid.clone(),
                                            seq: m.seq,
                                        }],
                                        welcomes: vec![],
                                    })
                                    .await;
                            }
                        }
                        Ok(Some(Ok(_))) => {}
                        Ok(_) => break, // the DS went away: reconnect
                        Err(_) => {
                            idle += 1;
                            if stop.load(Ordering::Acquire) && idle > 6 {
                                return;
                            }
                        }
                    }
                }
            }
        }));
    }

    // Senders: members 0..4 in turn, closed loop, 4 at a time.
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let next = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for s in 0..4 {
        let client = group.members[s].clone();
        let (acked, next, stop, gid) = (acked.clone(), next.clone(), stop.clone(), gid.clone());
        senders.push(tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                let idx = next.fetch_add(1, Ordering::AcqRel);
                let msg = synthetic_message(&gid, 1, ContentType::Application, idx, 64);
                match client.send_message(&msg).await {
                    Ok(_) => {
                        acked.lock().unwrap().insert(idx);
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }

    // Two crashes at moments of the load, each followed by a restart on
    // the same file and address.
    for (round, wait) in [(0, 700u64), (1, 1100)].iter().copied() {
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let mut c = child.take().unwrap();
        c.start_kill().unwrap(); // SIGKILL
        c.wait().await.unwrap();
        let before = acked.lock().unwrap().len();
        assert!(
            before > 50 * (round + 1),
            "load was running ({before} acknowledged)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (c, _) = start(dir.path(), &addr).await;
        child = Some(c);
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Release);
    for s in senders {
        s.await.unwrap();
    }
    for o in online {
        tokio::time::timeout(Duration::from_secs(60), o)
            .await
            .expect("online members drained")
            .unwrap();
    }
    // Offline members read everything from their stored cursors.
    for (client, log) in group.members.iter().zip(&logs).take(2) {
        loop {
            let batch = client.fetch(500).await.unwrap();
            let msgs: Vec<_> = batch
                .messages
                .iter()
                .filter(|q| q.group_id == gid)
                .collect();
            if msgs.is_empty() {
                break;
            }
            {
                let mut log = log.lock().unwrap();
                for q in &msgs {
                    // (The commit that formed the group carries index MAX.)
                    if let Some(idx) = message_index(&q.message).filter(|i| *i != u64::MAX) {
                        log.push((q.seq, idx));
                    }
                }
            }
            let last = msgs.last().unwrap().seq;
            client
                .ack(&Ack {
                    messages: vec![GroupPosition {
                        group_id: gid.clone(),
                        seq: last,
                    }],
                    welcomes: batch.welcomes.iter().map(|w| w.id).collect(),
                })
                .await
                .unwrap();
        }
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 200, "only {} acknowledged", acked.len());
    for (m, log) in logs.iter_mut().enumerate() {
        let log = log.lock().unwrap();
        check(&format!("member {m}"), &log, &acked);
    }
    // Every member saw the same sequence.
    let first: Vec<u64> = logs[0].lock().unwrap().iter().map(|x| x.0).collect();
    for (m, log) in logs.iter().enumerate().skip(1) {
        let seqs: Vec<u64> = log.lock().unwrap().iter().map(|x| x.0).collect();
        let diverge = seqs.iter().zip(&first).position(|(a, b)| a != b);
        assert!(
            seqs.len() == first.len() && diverge.is_none(),
            "member {m}: {} messages, member 0: {}; first difference at {diverge:?}",
            seqs.len(),
            first.len()
        );
    }
    drop(child);
}
