//! The bus: how tasks reach workers and replies reach dispatchers.
//!
//! [`Bus`] is one of the two seams between embedded and distributed mode
//! (the other is [`crate::ledger::Ledger`]). A dispatcher opens an [`Inbox`],
//! broadcasts a [`Task`] naming the inbox's subject, and reads [`Reply`]s
//! from it; a node subscribes each plugin with its topic patterns in a queue
//! group named after the plugin and answers through the [`ReplySink`] it is
//! handed with each task.
//!
//! Settle decisions (commit or abort a transaction's staged writes, see
//! [`crate::settle`]) reach every node that subscribes to them.
//!
//! [`LocalBus`] is the in-process implementation used in embedded mode,
//! [`NatsBus`] the one of distributed mode.

mod local;
mod message;
mod nats;
pub(crate) mod wire;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;

pub use local::LocalBus;
pub use message::{Ancestor, Decision, Interest, MAX_TIMEOUT, Partial, Reply, Signed, Task, WorkerId};
pub use nats::DEFAULT_MAX_TASKS;

pub(crate) use crate::error::warn_limited;
pub use nats::NatsBus;

use crate::topic::Pattern;

pub use crate::error::{BusError, ErrorKind};

/// A worker's handling of one task, as a future for the bus to run.
pub type Work = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Where a dispatcher reads the replies to one dispatch.
///
/// An inbox can also run work in the dispatcher's own task: the in-process
/// bus hands it one receiving worker per broadcast, which spares a hop
/// between threads (the largest cost of a small dispatch on a busy
/// executor). That work runs while the dispatcher waits in [`Inbox::recv`],
/// and is dropped with the inbox when the dispatch ends.
pub struct Inbox {
    /// The subject replies are addressed to.
    pub subject: String,
    /// The digest of the task broadcast, once signed (distributed mode):
    /// declarations must bind it.
    pub task_digest: [u8; 32],
    tx: mpsc::UnboundedSender<Reply>,
    rx: mpsc::UnboundedReceiver<Reply>,
    work: FuturesUnordered<Work>,
    _registration: Box<dyn Send + Sync>,
}

impl Inbox {
    /// Makes an inbox; `registration` is dropped with it (to unsubscribe).
    pub fn new(subject: String, registration: Box<dyn Send + Sync>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Inbox { subject, task_digest: [0; 32], tx, rx, work: FuturesUnordered::new(), _registration: registration }
    }

    /// Replaces what is dropped with the inbox (to unsubscribe).
    pub fn with_registration(mut self, registration: Box<dyn Send + Sync>) -> Self {
        self._registration = registration;
        self
    }

    /// A sender of replies into this inbox (for the bus's own delivery).
    pub fn sender(&self) -> mpsc::UnboundedSender<Reply> {
        self.tx.clone()
    }

    /// Runs `work` in the dispatcher's task, while it waits for replies.
    pub fn run_here(&mut self, work: Work) {
        self.work.push(work);
    }

    /// The next reply; `None` once the bus has gone away.
    pub async fn recv(&mut self) -> Option<Reply> {
        loop {
            tokio::select! {
                biased;
                reply = self.rx.recv() => return reply,
                Some(()) = self.work.next(), if !self.work.is_empty() => {}
            }
        }
    }
}

/// How a worker answers the dispatcher of the task it was handed.
#[async_trait]
pub trait ReplySink: Send + Sync {
    /// Sends one reply; replies from one worker arrive in the order sent. A
    /// reply to a dispatch that has ended is dropped.
    async fn send(&self, reply: Reply);

    /// Sends a declared worker's acknowledgement together with its partial,
    /// when the result was ready before the acknowledgement left. By default
    /// two replies, in that order; the NATS bus sends one signed envelope
    /// (one signature and one message fewer).
    async fn send_declared_with_result(&self, closed: Option<Vec<String>>, partial: Partial) {
        let worker = partial.worker.clone();
        self.send(Reply::Ack { worker, interest: Interest::Declared, closed }).await;
        self.send(Reply::Partial(partial)).await;
    }
}

/// How a worker gets a [`ReplySink`] for the task it was handed, once it
/// has pinned the version that will handle it: over the network, replies
/// are signed as that exact worker (its version and plugin digest).
pub trait ReplyTo: Send + Sync {
    /// The sink for the replies of `worker`, whose component file has
    /// SHA-256 `digest`.
    fn sink(&self, worker: &WorkerId, digest: [u8; 32]) -> Arc<dyn ReplySink>;
}

/// What a subscriber does with each task that reaches it.
pub trait TaskReceiver: Send + Sync {
    /// Takes one task and returns the work of handling it, which the bus
    /// runs (spawned, or in the dispatcher's task when that is cheaper).
    fn receive(&self, task: Arc<Task>, reply_to: &dyn ReplyTo) -> Work;

    /// Answers a task the node will not run, at once, without asking the
    /// plugin or running anything: an acknowledgement saying `interest`,
    /// [`Interest::Busy`] (no room) or [`Interest::Untrusted`] (its
    /// dispatcher is not trusted to dispatch).
    fn decline(&self, task: Arc<Task>, reply_to: &dyn ReplyTo, interest: Interest) -> Work;
}

/// What a node does with each settle decision it hears of.
pub trait SettleReceiver: Send + Sync {
    /// Takes the decision for `transaction`, signed by `signer` (`None`
    /// in-process), and returns the work of applying it, which the bus
    /// runs.
    fn settle(&self, transaction: Arc<str>, decision: Decision, signer: Option<anocast_wire::PublicKey>) -> Work;
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
    /// Opens an inbox for the replies to `task`.
    async fn open_inbox(&self, task: &Task) -> Result<Inbox, BusError>;

    /// Broadcasts `task` to every queue group subscribed to its topic, with
    /// replies addressed to `inbox`. Returns how many groups received it
    /// when the bus knows (in-process it does; over a network it does not).
    async fn broadcast(&self, task: Arc<Task>, inbox: &mut Inbox) -> Result<Option<usize>, BusError>;

    /// Waits until everything published so far has reached the server
    /// (at once in-process).
    async fn flush(&self) -> Result<(), BusError> {
        Ok(())
    }

    /// The largest payload a task may carry on this bus.
    fn max_payload(&self) -> usize {
        usize::MAX
    }

    /// Tells the mesh that this node's plugin set changed (`event` is a
    /// JSON object, see `docs/protocol.md`). In-process there is no one to
    /// tell.
    async fn announce(&self, node: &str, event: &serde_json::Value) {
        let _ = (node, event);
    }

    /// Tells every node the decision for `transaction` (the request id of a
    /// dispatch from outside), so that each settles what its workers
    /// staged.
    async fn publish_settle(&self, transaction: &str, decision: Decision) -> Result<(), BusError>;

    /// Subscribes `receiver` to every settle decision.
    async fn subscribe_settle(&self, receiver: Arc<dyn SettleReceiver>) -> Result<Subscription, BusError>;

    /// Subscribes `receiver` to `patterns` in the queue group `group` (a
    /// plugin's name): each task reaches one member of each group.
    ///
    /// Dropping the subscription stops deliveries; work already handed to
    /// the receiver runs to its end.
    async fn subscribe(
        &self,
        group: &str,
        patterns: &[Pattern],
        receiver: Arc<dyn TaskReceiver>,
    ) -> Result<Subscription, BusError>;
}
