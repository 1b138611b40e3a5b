//! The in-process bus of embedded mode: subscriptions in a list, delivery by
//! direct call, replies through the inbox's channel. One receiving worker
//! runs in the dispatcher's own task; the others are spawned.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use parking_lot::RwLock;
use tokio::sync::mpsc;

use super::Decision;
use super::{
    Bus, BusError, Inbox, Reply, ReplySink, ReplyTo, SettleReceiver, Subscription, Task, TaskReceiver, WorkerId,
};
use crate::topic::Pattern;

/// The embedded bus. Cheap to clone; clones share subscriptions.
#[derive(Clone, Default)]
pub struct LocalBus {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    subs: RwLock<Vec<Sub>>,
    settles: RwLock<Vec<(u64, Arc<dyn SettleReceiver>)>>,
    next_id: AtomicU64,
    round_robin: AtomicUsize,
}

struct Sub {
    id: u64,
    group: String,
    patterns: Vec<Pattern>,
    receiver: Arc<dyn TaskReceiver>,
}

impl LocalBus {
    /// A bus with no subscribers.
    pub fn new() -> Self {
        Self::default()
    }
}

struct LocalSink(mpsc::UnboundedSender<Reply>);

/// In-process replies need no identity of their own: every worker of a task
/// shares the one sink.
struct LocalReplyTo(Arc<LocalSink>);

impl ReplyTo for LocalReplyTo {
    fn sink(&self, _worker: &WorkerId, _digest: [u8; 32]) -> Arc<dyn ReplySink> {
        self.0.clone()
    }
}

#[async_trait]
impl ReplySink for LocalSink {
    async fn send(&self, reply: Reply) {
        // The dispatch may have ended; its replies are then of no use.
        let _ = self.0.send(reply);
    }
}

/// Removes a subscription from the bus when dropped.
struct Unsubscribe {
    bus: Weak<Inner>,
    id: u64,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        if let Some(bus) = self.bus.upgrade() {
            bus.subs.write().retain(|s| s.id != self.id);
            bus.settles.write().retain(|(id, _)| *id != self.id);
        }
    }
}

#[async_trait]
impl Bus for LocalBus {
    async fn open_inbox(&self, _task: &Task) -> Result<Inbox, BusError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        Ok(Inbox::new(format!("_INBOX.local.{id}"), Box::new(())))
    }

    async fn broadcast(&self, task: Arc<Task>, inbox: &mut Inbox) -> Result<Option<usize>, BusError> {
        let reply_to = LocalReplyTo(Arc::new(LocalSink(inbox.sender())));
        let mut works = Vec::new();
        {
            let subs = self.inner.subs.read();
            let topic = task.topic.as_str();
            let matching: Vec<&Sub> = subs.iter().filter(|s| s.patterns.iter().any(|p| p.matches(topic))).collect();
            // One member of each queue group gets the task, in turn.
            let turn = self.inner.round_robin.fetch_add(1, Ordering::Relaxed);
            let mut seen = HashSet::new();
            for sub in &matching {
                if !seen.insert(sub.group.as_str()) {
                    continue;
                }
                let members: Vec<&&Sub> = matching.iter().filter(|s| s.group == sub.group).collect();
                let chosen = members[turn % members.len()];
                works.push(chosen.receiver.receive(task.clone(), &reply_to));
            }
        }
        let delivered = works.len();
        // The first worker runs in the dispatcher's task; the others are
        // spawned, so that other cores can take them.
        let mut works = works.into_iter();
        if let Some(first) = works.next() {
            inbox.run_here(first);
        }
        for work in works {
            tokio::spawn(work);
        }
        Ok(Some(delivered))
    }

    async fn publish_settle(&self, transaction: &str, decision: Decision) -> Result<(), BusError> {
        let transaction: Arc<str> = Arc::from(transaction);
        let works: Vec<_> =
            self.inner.settles.read().iter().map(|(_, r)| r.settle(transaction.clone(), decision, None)).collect();
        for work in works {
            tokio::spawn(work);
        }
        Ok(())
    }

    async fn subscribe_settle(&self, receiver: Arc<dyn SettleReceiver>) -> Result<Subscription, BusError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner.settles.write().push((id, receiver));
        Ok(Subscription::new(Box::new(Unsubscribe { bus: Arc::downgrade(&self.inner), id })))
    }

    async fn subscribe(
        &self,
        group: &str,
        patterns: &[Pattern],
        receiver: Arc<dyn TaskReceiver>,
    ) -> Result<Subscription, BusError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner.subs.write().push(Sub { id, group: group.to_owned(), patterns: patterns.to_vec(), receiver });
        Ok(Subscription::new(Box::new(Unsubscribe { bus: Arc::downgrade(&self.inner), id })))
    }
}
