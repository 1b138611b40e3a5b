//! The bus: how tasks reach workers and replies reach dispatchers.
//!
//! [`Bus`] is one of the two seams between embedded and distributed mode
//! (the other is [`crate::ledger::Ledger`]). A dispatcher opens an [`Inbox`],
//! broadcasts a [`Task`] naming the inbox's subject, and reads [`Reply`]s
//! from it; a node subscribes each plugin with its topic patterns in a queue
//! group named after the plugin and answers through the [`ReplySink`] it is
//! handed with each task.
//!
//! [`LocalBus`] is the in-process implementation used in embedded mode.

mod local;
mod message;

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;

pub use local::LocalBus;
pub use message::{Interest, Partial, Reply, Task, WorkerId};

use crate::topic::Pattern;

/// A bus failure (never a worker's failure: those travel as replies).
#[derive(Debug, Clone, thiserror::Error)]
#[error("bus: {0}")]
pub struct BusError(pub String);

/// Where a dispatcher reads the replies to one dispatch.
pub struct Inbox {
    /// The subject replies are addressed to.
    pub subject: String,
    rx: mpsc::UnboundedReceiver<Reply>,
    _registration: Box<dyn Send + Sync>,
}

impl Inbox {
    /// Makes an inbox from a receiver and a value whose drop unregisters it.
    pub fn new(subject: String, rx: mpsc::UnboundedReceiver<Reply>, registration: Box<dyn Send + Sync>) -> Self {
        Inbox { subject, rx, _registration: registration }
    }

    /// The next reply; `None` once the bus has gone away.
    pub async fn recv(&mut self) -> Option<Reply> {
        self.rx.recv().await
    }
}

/// How a worker answers the dispatcher of the task it was handed.
pub trait ReplySink: Send + Sync {
    /// Sends one reply. Never blocks; a reply to a dispatch that has ended is
    /// dropped.
    fn send(&self, reply: Reply);
}

/// What a subscriber does with each task that reaches it.
pub trait TaskReceiver: Send + Sync {
    /// Takes one task. Must return quickly (spawn the work).
    fn receive(&self, task: Arc<Task>, replies: Arc<dyn ReplySink>);
}

/// A subscription; dropping it unsubscribes.
pub struct Subscription {
    _registration: Box<dyn Send + Sync>,
}

impl Subscription {
    /// Makes a subscription from a value whose drop unsubscribes.
    pub fn new(registration: Box<dyn Send + Sync>) -> Self {
        Subscription { _registration: registration }
    }
}

/// Carries tasks to workers and replies to dispatchers.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Opens an inbox for one dispatch's replies.
    async fn open_inbox(&self) -> Result<Inbox, BusError>;

    /// Broadcasts `task` to every queue group subscribed to its topic, with
    /// replies addressed to `reply_to`. Returns how many groups received it
    /// when the bus knows (in-process it does; over a network it does not).
    async fn broadcast(&self, task: Arc<Task>, reply_to: &str) -> Result<Option<usize>, BusError>;

    /// Subscribes `receiver` to `patterns` in queue group `group`: each task
    /// reaches one member of each group.
    async fn subscribe(
        &self,
        group: &str,
        patterns: &[Pattern],
        receiver: Arc<dyn TaskReceiver>,
    ) -> Result<Subscription, BusError>;
}
