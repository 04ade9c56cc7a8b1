//! Fan-out: a group's messages are stored once, each member has a cursor
//! (the last sequence number it acknowledged). A client fetches what is
//! after its cursors, or keeps a WebSocket open and gets pushed what
//! arrives, resuming from the positions it names.
//!
//! The [`Hub`] wakes the push connections of a process when a group it
//! follows has a new message (from this process's writes, or from another
//! process's through PostgreSQL NOTIFY): a wake-up is a hint, the
//! connection re-reads the store from its position, so a lost hint delays
//! a message until the next wake-up or the periodic re-read, never loses
//! it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};

use axum::body::Bytes;
use tokio::sync::Notify;

use crate::api::QueuedMessage;

use crate::store::QueueId;

/// Push subscriptions of one process.
#[derive(Debug, Clone, Default)]
pub struct Hub {
    inner: Arc<HubInner>,
}

#[derive(Debug, Default)]
struct HubInner {
    groups: Mutex<HashMap<Vec<u8>, Vec<Weak<Notify>>>>,
    queues: Mutex<HashMap<QueueId, Vec<Weak<Notify>>>>,
    all: Mutex<Vec<Weak<Notify>>>,
    recent: Mutex<HashMap<Vec<u8>, Recent>>,
}

/// The last messages a group accepted in this process, so that live
/// push does not read them back from the store.
#[derive(Debug, Default)]
struct Recent {
    /// The push frames (binary), built once per message.
    messages: BTreeMap<u64, Bytes>,
    bytes: usize,
    /// The highest sequence number known (from this process or a hint).
    latest: u64,
    /// A missing message before `latest` and when it was first seen
    /// missing: the messages of one writer batch are published by
    /// concurrent tasks, so seq 6 may come a moment before seq 5.
    gap: Option<(u64, std::time::Instant)>,
}

/// How long a gap in the recent messages is waited for before the store
/// is read (the message may have been accepted by another process, or
/// its publishing task ended early).
pub const GAP_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

/// The most messages kept per group for live push.
pub const RECENT_MESSAGES: usize = 4096;
/// The most bytes kept per group for live push.
pub const RECENT_BYTES: usize = 4 << 20;
/// The most groups with recent messages kept.
const RECENT_GROUPS: usize = 10_000;

/// What the recent-message cache says about a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecentAfter {
    /// Nothing is known after the position.
    UpToDate,
    /// The next messages' push frames (contiguous from the position).
    Messages(Vec<(u64, Bytes)>),
    /// The next message is not in the cache: read the store.
    Unknown,
    /// The next message is not in the cache yet but a later one is: it is
    /// most likely being published; ask again after [`GAP_WAIT`] at most
    /// (its publication wakes the followers).
    Pending,
}

fn wake(list: &mut Vec<Weak<Notify>>) {
    list.retain(|w| match w.upgrade() {
        Some(n) => {
            n.notify_one();
            true
        }
        None => false,
    });
}

/// The push frame (binary, [`QueuedMessage::encode_frame`]) of a group
/// message.
pub fn push_frame(group_id: &[u8], seq: u64, message: &[u8]) -> Bytes {
    Bytes::from(QueuedMessage::encode_frame(group_id, seq, message))
}

impl Hub {
    /// A new hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a connection's `notify` for a group's new messages.
    pub fn follow_group(&self, group_id: &[u8], notify: &Arc<Notify>) {
        let mut g = self.inner.groups.lock().unwrap_or_else(|e| e.into_inner());
        let list = g.entry(group_id.to_vec()).or_default();
        list.retain(|w| w.strong_count() > 0);
        if !list.iter().any(|w| w.as_ptr() == Arc::as_ptr(notify)) {
            list.push(Arc::downgrade(notify));
        }
    }

    /// Registers a connection's `notify` for its queue (Welcomes, new
    /// memberships) and for [`Hub::wake_all`].
    pub fn follow_queue(&self, queue: &QueueId, notify: &Arc<Notify>) {
        let mut q = self.inner.queues.lock().unwrap_or_else(|e| e.into_inner());
        let list = q.entry(*queue).or_default();
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(notify));
        drop(q);
        let mut all = self.inner.all.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(notify));
    }

    /// A message this process accepted at `seq`: its push frame is built
    /// once and kept for live push, and the group's followers are woken.
    pub fn publish(&self, group_id: &[u8], seq: u64, message: &[u8]) {
        let frame = push_frame(group_id, seq, message);
        {
            let mut r = self.inner.recent.lock().unwrap_or_else(|e| e.into_inner());
            if r.len() >= RECENT_GROUPS && !r.contains_key(group_id) {
                r.clear();
            }
            let g = r.entry(group_id.to_vec()).or_default();
            g.bytes += frame.len();
            if let Some(old) = g.messages.insert(seq, frame) {
                g.bytes -= old.len();
            }
            g.latest = g.latest.max(seq);
            while g.messages.len() > RECENT_MESSAGES || g.bytes > RECENT_BYTES {
                match g.messages.pop_first() {
                    Some((_, m)) => g.bytes -= m.len(),
                    None => break,
                }
            }
        }
        self.group_advanced(group_id, seq);
    }

    /// The cached messages after `after` (and at most up to `until`), at
    /// most `limit`.
    pub fn recent_after(
        &self,
        group_id: &[u8],
        after: u64,
        until: Option<u64>,
        limit: usize,
    ) -> RecentAfter {
        let mut r = self.inner.recent.lock().unwrap_or_else(|e| e.into_inner());
        let Some(g) = r.get_mut(group_id) else {
            return RecentAfter::Unknown;
        };
        let last = until.map_or(g.latest, |u| u.min(g.latest));
        if after >= last {
            return RecentAfter::UpToDate;
        }
        let mut out = Vec::new();
        let mut next = after + 1;
        while next <= last && out.len() < limit {
            match g.messages.get(&next) {
                Some(m) => out.push((next, m.clone())),
                None => break,
            }
            next += 1;
        }
        if !out.is_empty() {
            return RecentAfter::Messages(out);
        }
        // `next` is missing and a later message is known. A message older
        // than the cache's oldest, or a gap waited for long enough, is
        // read from the store.
        let oldest = g.messages.first_key_value().map(|(k, _)| *k);
        if oldest.is_none_or(|o| next < o) {
            return RecentAfter::Unknown;
        }
        let cached_after = g.messages.range(next..).next().is_some();
        let now = std::time::Instant::now();
        match g.gap {
            Some((seq, since)) if seq == next => {
                if cached_after && now.duration_since(since) < GAP_WAIT {
                    RecentAfter::Pending
                } else {
                    RecentAfter::Unknown
                }
            }
            _ if cached_after => {
                g.gap = Some((next, now));
                RecentAfter::Pending
            }
            _ => RecentAfter::Unknown,
        }
    }

    /// A group has messages up to `seq`.
    pub fn group_advanced(&self, group_id: &[u8], seq: u64) {
        {
            let mut r = self.inner.recent.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(g) = r.get_mut(group_id) {
                g.latest = g.latest.max(seq);
            }
        }
        let mut g = self.inner.groups.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = g.get_mut(group_id) {
            wake(list);
            if list.is_empty() {
                g.remove(group_id);
            }
        }
    }

    /// A queue has a new Welcome or membership.
    pub fn queue_changed(&self, queue: &QueueId) {
        let mut q = self.inner.queues.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = q.get_mut(queue) {
            wake(list);
            if list.is_empty() {
                q.remove(queue);
            }
        }
    }

    /// Wakes every connection after hints may have been lost: the recent
    /// messages are forgotten first, since their `latest` may be behind
    /// what other processes accepted meanwhile, so every connection
    /// re-reads the store from its position.
    pub fn wake_all(&self) {
        self.inner
            .recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let mut all = self.inner.all.lock().unwrap_or_else(|e| e.into_inner());
        wake(&mut all);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(r: RecentAfter) -> Vec<u64> {
        match r {
            RecentAfter::Messages(v) => v.into_iter().map(|(s, _)| s).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_gap_is_waited_for_then_read_from_the_store() {
        let hub = Hub::new();
        hub.publish(b"g", 1, b"one");
        // Seq 3 published before seq 2 (concurrent tasks of one batch).
        hub.publish(b"g", 3, b"three");
        assert_eq!(seqs(hub.recent_after(b"g", 0, None, 10)), vec![1]);
        assert_eq!(hub.recent_after(b"g", 1, None, 10), RecentAfter::Pending);
        hub.publish(b"g", 2, b"two");
        assert_eq!(seqs(hub.recent_after(b"g", 1, None, 10)), vec![2, 3]);
        // A gap that stays: the store is read after GAP_WAIT.
        hub.publish(b"g", 5, b"five");
        assert_eq!(hub.recent_after(b"g", 3, None, 10), RecentAfter::Pending);
        std::thread::sleep(GAP_WAIT + std::time::Duration::from_millis(5));
        assert_eq!(hub.recent_after(b"g", 3, None, 10), RecentAfter::Unknown);
        // Before the oldest cached message, or a group not cached: the
        // store, at once.
        assert_eq!(hub.recent_after(b"h", 0, None, 10), RecentAfter::Unknown);
        let hub = Hub::new();
        hub.publish(b"g", 7, b"seven");
        assert_eq!(hub.recent_after(b"g", 5, None, 10), RecentAfter::Unknown);
        assert_eq!(hub.recent_after(b"g", 7, None, 10), RecentAfter::UpToDate);
        // After lost hints the cache is not trusted: the store is read.
        hub.wake_all();
        assert_eq!(hub.recent_after(b"g", 7, None, 10), RecentAfter::Unknown);
    }

    #[tokio::test]
    async fn wakes_followers_only() {
        let hub = Hub::new();
        let a = Arc::new(Notify::new());
        let b = Arc::new(Notify::new());
        hub.follow_group(b"g1", &a);
        hub.follow_group(b"g2", &b);
        hub.group_advanced(b"g1", 1);
        tokio::time::timeout(std::time::Duration::from_secs(1), a.notified())
            .await
            .expect("a is woken");
        let woken = tokio::time::timeout(std::time::Duration::from_millis(50), b.notified()).await;
        assert!(woken.is_err(), "b follows another group");
        hub.wake_all();
        drop(a);
        hub.group_advanced(b"g1", 2);
        assert!(
            hub.inner
                .groups
                .lock()
                .unwrap()
                .get(&b"g1".to_vec())
                .is_none()
        );
    }
}
