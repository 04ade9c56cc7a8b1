//! The store conformance suite: every [`DsStore`] passes the same tests
//! (instantiated in `store_sqlite.rs` and `store_postgres.rs`), through
//! the sealing layer the DS uses ([`SealedStore`]: the store holds tags
//! and sealed cells).
#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::Arc;

use hsmls_ds::api::GroupMode;
use hsmls_ds::auth::DsKey;
use hsmls_ds::store::{
    CommitOutcome, DsStore, MessageOutcome, NewCommit, NewGroup, NewKeyPackage, NewMessage,
    QueueId, SealedStore, StoreError,
};

/// A store under the suite's DS key, shared by concurrent tasks.
pub type Store<S> = Arc<SealedStore<S>>;

/// `store` under the suite's DS key.
pub fn sealed<S: DsStore>(store: S) -> Store<S> {
    Arc::new(SealedStore::new(store, &DsKey::from_bytes([9; 32])))
}

pub const NOW: u64 = 1_800_000_000;

fn tag(n: u8) -> [u8; 32] {
    [n; 32]
}

fn kp(owner: u8, i: u8, last_resort: bool, not_after: u64) -> NewKeyPackage {
    NewKeyPackage {
        reference: vec![owner, i, 0xaa],
        key_package: vec![owner, i, 0xbb, 0xcc],
        not_after,
        last_resort,
    }
}

pub fn group(id: &[u8], creator: QueueId) -> NewGroup {
    NewGroup {
        group_id: id.to_vec(),
        mode: GroupMode::Blind,
        epoch: 0,
        creator,
        public_state: None,
        group_info: None,
    }
}

pub fn commit(id: &[u8], epoch: u64, sender: QueueId, d: u8) -> NewCommit {
    NewCommit {
        group_id: id.to_vec(),
        epoch,
        digest: [d; 32],
        sender,
        external: false,
        message: vec![3, d, epoch as u8],
        welcome: None,
        added: vec![],
        removed: vec![],
        public_state: None,
        group_info: None,
        now: NOW,
    }
}

pub fn message(id: &[u8], epoch: u64, sender: QueueId, d: u8) -> NewMessage {
    NewMessage {
        group_id: id.to_vec(),
        epoch,
        window: 2,
        digest: [d; 32],
        sender,
        message: vec![1, d],
        public_state: None,
        now: NOW,
    }
}

pub async fn clients<S: DsStore>(s: &Store<S>) {
    let a = s.client_queue(tag(1)).await.unwrap();
    let a2 = s.client_queue(tag(1)).await.unwrap();
    let b = s.client_queue(tag(2)).await.unwrap();
    assert_eq!(a, a2);
    assert_ne!(a, b);
    assert_eq!(s.find_client(tag(1)).await.unwrap(), Some(a));
    assert_eq!(s.find_client(tag(3)).await.unwrap(), None);
}

pub async fn key_packages<S: DsStore>(s: &Store<S>) {
    let owner = s.client_queue(tag(10)).await.unwrap();
    s.publish_key_packages(
        owner,
        vec![
            kp(10, 1, false, NOW + 100),
            kp(10, 2, false, NOW - 1),
            kp(10, 3, true, NOW + 100),
            kp(10, 4, false, NOW + 100),
        ],
    )
    .await
    .unwrap();
    // Publishing the same reference again stores it once.
    s.publish_key_packages(owner, vec![kp(10, 1, false, NOW + 100)])
        .await
        .unwrap();
    let c = s.key_package_counts(owner, NOW).await.unwrap();
    assert_eq!(
        (c.available, c.last_resort, c.last_resort_claims),
        (2, 1, 0)
    );
    let first = s
        .claim_key_package(owner, NOW, NOW + 50)
        .await
        .unwrap()
        .unwrap();
    let second = s
        .claim_key_package(owner, NOW, NOW + 50)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.key_package, vec![10, 1, 0xbb, 0xcc], "oldest first");
    assert_eq!(
        second.key_package,
        vec![10, 4, 0xbb, 0xcc],
        "the expired one is skipped"
    );
    assert!(!first.last_resort && !second.last_resort);
    for _ in 0..2 {
        let lr = s
            .claim_key_package(owner, NOW, NOW + 50)
            .await
            .unwrap()
            .unwrap();
        assert!(lr.last_resort);
        assert_eq!(lr.key_package, vec![10, 3, 0xbb, 0xcc]);
    }
    let c = s.key_package_counts(owner, NOW).await.unwrap();
    assert_eq!(
        (c.available, c.last_resort, c.last_resort_claims),
        (0, 1, 2)
    );
    // Routes of handed-out references.
    let routes = s
        .route_key_package_refs(vec![vec![10, 1, 0xaa], vec![9, 9], vec![10, 3, 0xaa]])
        .await
        .unwrap();
    assert_eq!(routes, vec![Some(owner), None, Some(owner)]);
    // Publishing resets the last-resort count.
    s.publish_key_packages(owner, vec![kp(10, 5, false, NOW + 100)])
        .await
        .unwrap();
    assert_eq!(
        s.key_package_counts(owner, NOW)
            .await
            .unwrap()
            .last_resort_claims,
        0
    );
    // Expired packages are never served and are purged; routes expire.
    let p = s.purge(NOW + 60, 0).await.unwrap();
    assert_eq!(p.key_packages, 1, "the one that ended at NOW - 1");
    assert!(p.routes >= 2);
    assert_eq!(
        s.route_key_package_refs(vec![vec![10, 1, 0xaa]])
            .await
            .unwrap(),
        vec![None]
    );
    assert_eq!(
        s.claim_key_package(owner, NOW + 101, NOW + 200)
            .await
            .unwrap(),
        None
    );
    let nobody = s.client_queue(tag(11)).await.unwrap();
    assert_eq!(s.claim_key_package(nobody, NOW, NOW).await.unwrap(), None);
}

/// Concurrent claims never get the same package; once the ordinary ones
/// are gone, the last-resort package is served to every claim.
pub async fn concurrent_claims<S: DsStore>(s: &Store<S>) {
    let owner = s.client_queue(tag(20)).await.unwrap();
    let mut kps: Vec<_> = (0..20).map(|i| kp(20, i, false, NOW + 100)).collect();
    kps.push(kp(20, 200, true, NOW + 100));
    s.publish_key_packages(owner, kps).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.claim_key_package(owner, NOW, NOW + 50).await.unwrap()
        }));
    }
    let mut ordinary = HashSet::new();
    let mut last_resort = 0;
    for t in tasks {
        let c = t
            .await
            .unwrap()
            .expect("a claim never fails while a package is left");
        if c.last_resort {
            last_resort += 1;
        } else {
            assert!(ordinary.insert(c.key_package), "a package handed out twice");
        }
    }
    assert_eq!(ordinary.len(), 20);
    assert_eq!(last_resort, 20);
}

pub async fn commits<S: DsStore>(s: &Store<S>) {
    let a = s.client_queue(tag(30)).await.unwrap();
    let b = s.client_queue(tag(31)).await.unwrap();
    let c = s.client_queue(tag(32)).await.unwrap();
    let outsider = s.client_queue(tag(33)).await.unwrap();
    let g = b"group-commits";
    assert!(s.create_group(group(g, a)).await.unwrap());
    assert!(!s.create_group(group(g, b)).await.unwrap(), "id taken");
    assert_eq!(
        s.append_commit(commit(b"nope", 0, a, 1)).await.unwrap(),
        CommitOutcome::UnknownGroup
    );
    assert_eq!(
        s.append_commit(commit(g, 0, outsider, 1)).await.unwrap(),
        CommitOutcome::NotMember
    );
    // Alice adds Bob and Carol with a Welcome.
    let mut add = commit(g, 0, a, 1);
    add.added = vec![b, c];
    add.welcome = Some((vec![3, 3, 3], vec![b, c]));
    assert_eq!(
        s.append_commit(add.clone()).await.unwrap(),
        CommitOutcome::Accepted { seq: 1, epoch: 1 }
    );
    // The retry of the winner: success again, nothing new stored.
    assert_eq!(
        s.append_commit(add).await.unwrap(),
        CommitOutcome::AlreadyAccepted { seq: 1, epoch: 1 }
    );
    assert_eq!(s.stored_message_count(g.to_vec()).await.unwrap(), 1);
    assert_eq!(s.read_welcomes(b, 10).await.unwrap().len(), 1);
    assert_eq!(s.read_welcomes(c, 10).await.unwrap().len(), 1);
    assert!(s.read_welcomes(a, 10).await.unwrap().is_empty());
    // A second commit for epoch 0, a stale one and a future one: conflicts.
    for (e, d) in [(0, 2), (5, 3)] {
        assert_eq!(
            s.append_commit(commit(g, e, b, d)).await.unwrap(),
            CommitOutcome::Conflict { current_epoch: 1 }
        );
    }
    // A commit that loses stores neither itself nor its Welcome.
    let mut lost = commit(g, 0, b, 4);
    lost.welcome = Some((vec![4, 4], vec![outsider]));
    lost.added = vec![outsider];
    assert_eq!(
        s.append_commit(lost).await.unwrap(),
        CommitOutcome::Conflict { current_epoch: 1 }
    );
    assert!(s.read_welcomes(outsider, 10).await.unwrap().is_empty());
    assert!(!s.is_member(g.to_vec(), outsider).await.unwrap());
    assert_eq!(s.stored_message_count(g.to_vec()).await.unwrap(), 1);
    // New members start after the commit that added them.
    let mb = s.memberships(b).await.unwrap();
    assert_eq!((mb[0].cursor, mb[0].until), (1, None));
    // Bob removes Carol: she gets the commit (until = its seq), then leaves.
    let mut rm = commit(g, 1, b, 5);
    rm.removed = vec![c];
    assert_eq!(
        s.append_commit(rm).await.unwrap(),
        CommitOutcome::Accepted { seq: 2, epoch: 2 }
    );
    assert!(!s.is_member(g.to_vec(), c).await.unwrap());
    let mc = s.memberships(c).await.unwrap();
    assert_eq!(mc[0].until, Some(2));
    assert_eq!(
        s.append_message(message(g, 2, c, 9)).await.unwrap(),
        MessageOutcome::NotMember
    );
    s.acknowledge(c, vec![(g.to_vec(), 2)], vec![])
        .await
        .unwrap();
    assert!(
        s.memberships(c).await.unwrap().is_empty(),
        "left after its last message"
    );
    // An external commit: the sender joins by it.
    let mut ext = commit(g, 2, outsider, 6);
    ext.external = true;
    ext.added = vec![outsider];
    assert_eq!(
        s.append_commit(ext).await.unwrap(),
        CommitOutcome::Accepted { seq: 3, epoch: 3 }
    );
    assert!(s.is_member(g.to_vec(), outsider).await.unwrap());
    let rec = s.group(g.to_vec()).await.unwrap().unwrap();
    assert_eq!((rec.epoch, rec.seq, rec.mode), (3, 3, GroupMode::Blind));
}

pub async fn messages<S: DsStore>(s: &Store<S>) {
    let a = s.client_queue(tag(40)).await.unwrap();
    let b = s.client_queue(tag(41)).await.unwrap();
    let g = b"group-messages";
    s.create_group(group(g, a)).await.unwrap();
    let mut add = commit(g, 0, a, 1);
    add.added = vec![b];
    s.append_commit(add).await.unwrap();
    for e in 1..4 {
        s.append_commit(commit(g, e, a, 10 + e as u8))
            .await
            .unwrap();
    }
    // Epoch 4 now; window 2: epochs 2..=4 accepted.
    assert!(matches!(
        s.append_message(message(g, 4, b, 20)).await.unwrap(),
        MessageOutcome::Accepted { seq: 5, epoch: 4 }
    ));
    assert!(matches!(
        s.append_message(message(g, 2, b, 21)).await.unwrap(),
        MessageOutcome::Accepted { seq: 6, .. }
    ));
    for e in [1, 5] {
        assert_eq!(
            s.append_message(message(g, e, b, 22)).await.unwrap(),
            MessageOutcome::WrongEpoch { current_epoch: 4 }
        );
    }
    assert_eq!(
        s.append_message(message(g, 4, b, 20)).await.unwrap(),
        MessageOutcome::Duplicate { seq: 5 }
    );
    assert_eq!(
        s.append_message(message(b"none", 4, b, 23)).await.unwrap(),
        MessageOutcome::UnknownGroup
    );
    let mut hs = message(g, 3, b, 24);
    hs.window = 0;
    assert_eq!(
        s.append_message(hs).await.unwrap(),
        MessageOutcome::WrongEpoch { current_epoch: 4 }
    );
    // Reading from a position, up to a bound.
    let all = s.read_messages(g.to_vec(), 0, None, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    let some = s.read_messages(g.to_vec(), 2, Some(4), 100).await.unwrap();
    assert_eq!(some.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![3, 4]);
    assert_eq!(
        s.read_messages(g.to_vec(), 0, None, 2).await.unwrap().len(),
        2
    );
}

/// Storage per message does not grow with the group: N members, M
/// messages, M rows; rows go when every member acknowledged them.
pub async fn stored_once_and_acknowledged<S: DsStore>(s: &Store<S>) {
    let g = b"group-fanout";
    let members: Vec<QueueId> = {
        let mut v = Vec::new();
        for i in 0..50u8 {
            v.push(s.client_queue([100 + i; 32]).await.unwrap());
        }
        v
    };
    s.create_group(group(g, members[0])).await.unwrap();
    let mut add = commit(g, 0, members[0], 1);
    add.added = members[1..].to_vec();
    s.append_commit(add).await.unwrap();
    for i in 0..10u8 {
        s.append_message(message(g, 1, members[(i % 50) as usize], 100 + i))
            .await
            .unwrap();
    }
    assert_eq!(s.stored_message_count(g.to_vec()).await.unwrap(), 11);
    // Everyone but the last acknowledges everything: all stay for it.
    for m in &members[..49] {
        s.acknowledge(*m, vec![(g.to_vec(), 11)], vec![])
            .await
            .unwrap();
    }
    assert_eq!(s.stored_message_count(g.to_vec()).await.unwrap(), 10);
    // Acknowledging beyond the last message moves to the last message only;
    // never backwards.
    s.acknowledge(members[49], vec![(g.to_vec(), 6)], vec![])
        .await
        .unwrap();
    assert_eq!(s.stored_message_count(g.to_vec()).await.unwrap(), 5);
    s.acknowledge(members[49], vec![(g.to_vec(), 3)], vec![])
        .await
        .unwrap();
    let m = s.memberships(members[49]).await.unwrap();
    assert_eq!(m[0].cursor, 6);
    s.acknowledge(members[49], vec![(g.to_vec(), 1000)], vec![])
        .await
        .unwrap();
    assert_eq!(s.memberships(members[49]).await.unwrap()[0].cursor, 11);
    assert_eq!(s.stored_message_count(g.to_vec()).await.unwrap(), 0);
}

pub async fn welcomes_and_purge<S: DsStore>(s: &Store<S>) {
    let a = s.client_queue(tag(60)).await.unwrap();
    let b = s.client_queue(tag(61)).await.unwrap();
    let c = s.client_queue(tag(62)).await.unwrap();
    let g = b"group-welcomes";
    s.create_group(group(g, a)).await.unwrap();
    let mut add = commit(g, 0, a, 1);
    add.added = vec![b, c];
    add.welcome = Some((vec![7; 100], vec![b, c]));
    s.append_commit(add).await.unwrap();
    let wb = s.read_welcomes(b, 10).await.unwrap();
    let wc = s.read_welcomes(c, 10).await.unwrap();
    assert_eq!(wb[0].1, vec![7; 100]);
    assert_eq!(wb[0].0, wc[0].0, "one Welcome stored for both");
    // Another client cannot acknowledge Bob's Welcome away.
    s.acknowledge(a, vec![], vec![wb[0].0]).await.unwrap();
    assert_eq!(s.read_welcomes(b, 10).await.unwrap().len(), 1);
    s.acknowledge(b, vec![], vec![wb[0].0]).await.unwrap();
    assert!(s.read_welcomes(b, 10).await.unwrap().is_empty());
    assert_eq!(s.read_welcomes(c, 10).await.unwrap().len(), 1);
    // Never-acknowledged data expires.
    s.append_message(message(g, 1, a, 50)).await.unwrap();
    let p = s.purge(NOW, NOW + 1).await.unwrap();
    assert!(p.messages >= 2 && p.welcomes >= 1, "{p:?}");
    assert!(s.read_welcomes(c, 10).await.unwrap().is_empty());
    assert_eq!(s.stored_message_count(g.to_vec()).await.unwrap(), 0);
}

/// Concurrent commits for one epoch: exactly one wins. Concurrent
/// messages: gapless sequence numbers, read back in order.
pub async fn races<S: DsStore>(s: &Store<S>) {
    let mut qs = Vec::new();
    for i in 0..16u8 {
        qs.push(s.client_queue([200 + i; 32]).await.unwrap());
    }
    let g = b"group-races";
    s.create_group(group(g, qs[0])).await.unwrap();
    let mut add = commit(g, 0, qs[0], 1);
    add.added = qs[1..].to_vec();
    s.append_commit(add).await.unwrap();
    let mut tasks = Vec::new();
    for (i, q) in qs.iter().enumerate() {
        let s = s.clone();
        let q = *q;
        tasks.push(tokio::spawn(async move {
            s.append_commit(commit(g, 1, q, 100 + i as u8))
                .await
                .unwrap()
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            CommitOutcome::Accepted { seq: 2, epoch: 2 } => won += 1,
            CommitOutcome::Conflict { current_epoch: 2 } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(won, 1);
    let mut tasks = Vec::new();
    for i in 0..64u8 {
        let s = s.clone();
        let q = qs[(i % 16) as usize];
        tasks.push(tokio::spawn(async move {
            s.append_message(message(g, 2, q, 150 + i)).await.unwrap()
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            MessageOutcome::Accepted { seq, .. } => seqs.push(seq),
            other => panic!("{other:?}"),
        }
    }
    seqs.sort();
    assert_eq!(seqs, (3..67).collect::<Vec<u64>>(), "gapless");
    let read = s.read_messages(g.to_vec(), 2, None, 1000).await.unwrap();
    assert_eq!(read.len(), 64);
    assert!(read.windows(2).all(|w| w[1].seq == w[0].seq + 1));
}

/// A database written under one DS key refuses another: every call of a
/// store under the other key fails with `WrongDsKey` and serves nothing,
/// while the first key goes on.
pub async fn another_key<S: DsStore + Clone>(s: &Store<S>) {
    let a = s.client_queue(tag(70)).await.unwrap();
    s.create_group(group(b"group-key", a)).await.unwrap();
    let other = SealedStore::new(s.inner().clone(), &DsKey::from_bytes([10; 32]));
    assert!(matches!(
        other.check_key().await,
        Err(StoreError::WrongDsKey)
    ));
    assert!(matches!(
        other.memberships(a).await,
        Err(StoreError::WrongDsKey)
    ));
    assert!(matches!(
        other.group(b"group-key".to_vec()).await,
        Err(StoreError::WrongDsKey)
    ));
    assert!(matches!(
        other.client_queue(tag(71)).await,
        Err(StoreError::WrongDsKey)
    ));
    // The check holds across restarts: a fresh store under the first key
    // still reads everything.
    let again = SealedStore::new(s.inner().clone(), &DsKey::from_bytes([9; 32]));
    assert_eq!(again.memberships(a).await.unwrap().len(), 1);
    assert_eq!(again.find_client(tag(71)).await.unwrap(), None);
}

/// Concurrent messages of every kind at once (the SQLite writer appends
/// such a run together): each gets the outcome it would get alone, the
/// accepted ones a gapless order, and of two identical messages one is
/// accepted and the other names its seq.
pub async fn mixed_messages<S: DsStore>(s: &Store<S>) {
    let a = s.client_queue([90; 32]).await.unwrap();
    let b = s.client_queue([91; 32]).await.unwrap();
    let outsider = s.client_queue([92; 32]).await.unwrap();
    let (g1, g2) = (b"group-mixed-1", b"group-mixed-2");
    for g in [g1, g2] {
        s.create_group(group(g, a)).await.unwrap();
        let mut add = commit(g, 0, a, 1);
        add.added = vec![b];
        s.append_commit(add).await.unwrap();
    }
    // Both groups at epoch 1, seq 1.
    #[derive(Debug, Clone, Copy)]
    enum Kind {
        Fresh,
        Twin,
        Outsider,
        OldEpoch,
        Unknown,
    }
    let mut plan = Vec::new();
    for i in 0..120u8 {
        let (g, kind): (&'static [u8], Kind) = match i % 8 {
            0..=2 => (g1, Kind::Fresh),
            3 => (g1, Kind::Twin),
            4 => (g2, Kind::Fresh),
            5 => (g1, Kind::Outsider),
            6 => (g2, Kind::OldEpoch),
            _ => (b"group-mixed-none", Kind::Unknown),
        };
        let sender = match kind {
            Kind::Outsider => outsider,
            _ if i % 2 == 0 => a,
            _ => b,
        };
        // (Digest 1 is the groups' commit.)
        let digest = match kind {
            Kind::Twin => 200 + i / 8 % 8,
            _ => i + 2,
        };
        let mut m = message(g, 1, sender, digest);
        if let Kind::OldEpoch = kind {
            m.window = 0;
            m.epoch = 0;
        }
        plan.push((kind, g, m));
    }
    let mut tasks = Vec::new();
    for (kind, g, m) in plan {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let digest = m.digest;
            (kind, g, digest, s.append_message(m).await.unwrap())
        }));
    }
    let mut seqs: std::collections::HashMap<&[u8], Vec<u64>> = Default::default();
    let mut twins: std::collections::HashMap<[u8; 32], (Vec<u64>, Vec<u64>)> = Default::default();
    for t in tasks {
        let (kind, g, digest, outcome) = t.await.unwrap();
        match (kind, outcome) {
            (Kind::Fresh, MessageOutcome::Accepted { seq, epoch: 1 }) => {
                seqs.entry(g).or_default().push(seq)
            }
            (Kind::Twin, MessageOutcome::Accepted { seq, epoch: 1 }) => {
                seqs.entry(g).or_default().push(seq);
                twins.entry(digest).or_default().0.push(seq);
            }
            (Kind::Twin, MessageOutcome::Duplicate { seq }) => {
                twins.entry(digest).or_default().1.push(seq)
            }
            (Kind::Outsider, MessageOutcome::NotMember)
            | (Kind::OldEpoch, MessageOutcome::WrongEpoch { current_epoch: 1 })
            | (Kind::Unknown, MessageOutcome::UnknownGroup) => {}
            (kind, other) => panic!("{kind:?}: {other:?}"),
        }
    }
    for (g, expected) in [(&g1[..], 53), (&g2[..], 15)] {
        let mut v = seqs.remove(g).unwrap();
        v.sort_unstable();
        assert_eq!(v, (2..2 + expected).collect::<Vec<u64>>(), "gapless");
        let read = s.read_messages(g.to_vec(), 1, None, 1000).await.unwrap();
        assert_eq!(read.len() as u64, expected);
    }
    // 15 twin messages over 8 digests: one accepted per digest, the rest
    // name it.
    assert_eq!(twins.len(), 8);
    for (accepted, duplicates) in twins.values() {
        assert_eq!(accepted.len(), 1, "{twins:?}");
        assert!(duplicates.iter().all(|d| *d == accepted[0]));
    }
}

/// Several messages in one call: decided in the order given, those of a
/// group numbered in that order, a refusal not stopping the rest.
pub async fn ordered_batch<S: DsStore>(s: &Store<S>) {
    let a = s.client_queue([95; 32]).await.unwrap();
    let outsider = s.client_queue([96; 32]).await.unwrap();
    let (g1, g2) = (b"group-ordered-1", b"group-ordered-2");
    for g in [g1, g2] {
        s.create_group(group(g, a)).await.unwrap();
        s.append_commit(commit(g, 0, a, 1)).await.unwrap();
    }
    let mut batch = Vec::new();
    for i in 0..12u8 {
        let g: &[u8] = if i % 3 == 2 { g2 } else { g1 };
        batch.push(match i {
            5 => message(g1, 1, a, 10), // the same bytes as message 0
            7 => message(g1, 1, outsider, 40),
            _ => message(g, 1, a, 10 + i),
        });
    }
    let outcomes = s.append_messages(batch).await.unwrap();
    assert_eq!(outcomes.len(), 12);
    let (mut next1, mut next2) = (2u64, 2u64);
    for (i, o) in outcomes.iter().enumerate() {
        let want = match i {
            5 => MessageOutcome::Duplicate { seq: 2 },
            7 => MessageOutcome::NotMember,
            _ if i % 3 == 2 => {
                next2 += 1;
                MessageOutcome::Accepted {
                    seq: next2 - 1,
                    epoch: 1,
                }
            }
            _ => {
                next1 += 1;
                MessageOutcome::Accepted {
                    seq: next1 - 1,
                    epoch: 1,
                }
            }
        };
        assert_eq!(*o, want, "message {i}");
    }
    assert!(s.append_messages(vec![]).await.unwrap().is_empty());
}

/// Runs the whole suite on a fresh store.
pub async fn run_all<S: DsStore + Clone>(s: Store<S>) {
    let s = &s;
    clients(s).await;
    key_packages(s).await;
    concurrent_claims(s).await;
    commits(s).await;
    messages(s).await;
    stored_once_and_acknowledged(s).await;
    welcomes_and_purge(s).await;
    races(s).await;
    another_key(s).await;
    mixed_messages(s).await;
    ordered_batch(s).await;
}
