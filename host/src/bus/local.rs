//! The in-process bus of embedded mode: subscriptions in a list, inboxes as
//! channels, delivery by direct call.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use rustc_hash::FxHashMap;
use tokio::sync::mpsc;

use super::{Bus, BusError, Inbox, Reply, ReplySink, Subscription, Task, TaskReceiver};
use crate::topic::Pattern;

/// The embedded bus. Cheap to clone; clones share subscriptions.
#[derive(Clone, Default)]
pub struct LocalBus {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    subs: RwLock<Vec<Sub>>,
    inboxes: Mutex<FxHashMap<u64, mpsc::UnboundedSender<Reply>>>,
    next_id: AtomicU64,
    round_robin: AtomicUsize,
}

struct Sub {
    id: u64,
    group: String,
    patterns: Vec<Pattern>,
    receiver: Arc<dyn TaskReceiver>,
}

const INBOX_PREFIX: &str = "_INBOX.local.";

impl LocalBus {
    /// A bus with no subscribers.
    pub fn new() -> Self {
        Self::default()
    }
}

struct LocalSink(mpsc::UnboundedSender<Reply>);

impl ReplySink for LocalSink {
    fn send(&self, reply: Reply) {
        // The dispatch may have ended; its replies are then of no use.
        let _ = self.0.send(reply);
    }
}

/// Removes an inbox or a subscription from the bus when dropped.
struct Unregister {
    bus: Weak<Inner>,
    id: u64,
    inbox: bool,
}

impl Drop for Unregister {
    fn drop(&mut self) {
        let Some(bus) = self.bus.upgrade() else { return };
        if self.inbox {
            bus.inboxes.lock().remove(&self.id);
        } else {
            bus.subs.write().retain(|s| s.id != self.id);
        }
    }
}

#[async_trait]
impl Bus for LocalBus {
    async fn open_inbox(&self) -> Result<Inbox, BusError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner.inboxes.lock().insert(id, tx);
        let registration = Unregister { bus: Arc::downgrade(&self.inner), id, inbox: true };
        Ok(Inbox::new(format!("{INBOX_PREFIX}{id}"), rx, Box::new(registration)))
    }

    async fn broadcast(&self, task: Arc<Task>, reply_to: &str) -> Result<Option<usize>, BusError> {
        let id = reply_to
            .strip_prefix(INBOX_PREFIX)
            .and_then(|id| id.parse::<u64>().ok())
            .ok_or_else(|| BusError(format!("{reply_to:?} is not an inbox of this bus")))?;
        let tx = self
            .inner
            .inboxes
            .lock()
            .get(&id)
            .cloned()
            .ok_or_else(|| BusError(format!("inbox {reply_to} is closed")))?;
        let sink: Arc<dyn ReplySink> = Arc::new(LocalSink(tx));
        let subs = self.inner.subs.read();
        let topic = task.topic.as_str();
        let matching: Vec<&Sub> = subs.iter().filter(|s| s.patterns.iter().any(|p| p.matches(topic))).collect();
        // One member of each queue group gets the task, in turn.
        let turn = self.inner.round_robin.fetch_add(1, Ordering::Relaxed);
        let mut seen = HashSet::new();
        let mut delivered = 0;
        for sub in &matching {
            if !seen.insert(sub.group.as_str()) {
                continue;
            }
            let members: Vec<&&Sub> = matching.iter().filter(|s| s.group == sub.group).collect();
            let chosen = members[turn % members.len()];
            chosen.receiver.receive(task.clone(), sink.clone());
            delivered += 1;
        }
        Ok(Some(delivered))
    }

    async fn subscribe(
        &self,
        group: &str,
        patterns: &[Pattern],
        receiver: Arc<dyn TaskReceiver>,
    ) -> Result<Subscription, BusError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner.subs.write().push(Sub { id, group: group.to_owned(), patterns: patterns.to_vec(), receiver });
        Ok(Subscription::new(Box::new(Unregister { bus: Arc::downgrade(&self.inner), id, inbox: false })))
    }
}
