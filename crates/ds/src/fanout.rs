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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

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

    /// A group has messages up to `seq`.
    pub fn group_advanced(&self, group_id: &[u8], _seq: u64) {
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

    /// Wakes every connection (after hints may have been lost).
    pub fn wake_all(&self) {
        let mut all = self.inner.all.lock().unwrap_or_else(|e| e.into_inner());
        wake(&mut all);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
