//! The worker side of a node: receive a task, ask the plugin whether it is
//! interested, declare, run, reply.
//!
//! For every task that reaches a plugin's subscription the node, on a task
//! of its own:
//!
//! 1. makes a fresh instance of the plugin and calls `interested`;
//! 2. not interested: acknowledges, and that is all;
//! 3. interested: declares the worker in the ledger *before* acknowledging
//!    (in distributed mode the list entry is signed with the node's key),
//!    so that the dispatcher never sees the acknowledgement without the
//!    declaration. A refused declaration (the window closed) is acknowledged
//!    as such and the worker does not run;
//! 4. calls `handle` on the same instance and sends the partial; when
//!    `handle` is done on its first poll, before the acknowledgement has
//!    left, the two go as one reply (in distributed mode one signed
//!    envelope instead of two).
//!
//! A failure of `interested` itself (a trap, a limit) is reported as a
//! declared worker's error partial: the dispatcher hears of it instead of
//! waiting for nothing.
//!
//! # Layout
//!
//! - this module: [`Node`], its settle subscription and its sweeper;
//! - `versions`: which version of each plugin is served, swapping one in
//!   (hot reload) and withdrawing it, and what is still running on each;
//! - `worker`: the protocol above, for one task on one version;
//! - `services`: what a task's host imports reach (sub-tasks, committed
//!   values) and the `settle` hook staging calls, wired to this node.

mod services;
mod versions;
mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use versions::VersionState;
pub use worker::WorkerStats;

use crate::bus::{Bus, BusError, Decision, SettleReceiver, Subscription, Work};
use crate::dispatch::Nesting;
use crate::ledger::Ledger;
use crate::runtime::Plugin;
use crate::settle::Staging;
use crate::trust::Security;
use versions::Versions;
use worker::Version;

/// A running node's plugin subscriptions. Dropping it unsubscribes them.
///
/// Plugins can be served, replaced and withdrawn while the node runs (hot
/// reload): a replacement with the same topic patterns is swapped in
/// atomically, so that every task after the swap meets the new version while
/// tasks already under way finish on the version they started with, which is
/// freed when the last of them ends. A replacement with other patterns is
/// subscribed before the old subscription is dropped.
pub struct Node {
    id: String,
    bus: Arc<dyn Bus>,
    ledger: Arc<dyn Ledger>,
    security: Option<Arc<Security>>,
    /// How workers dispatch sub-tasks.
    nesting: Option<Arc<Nesting>>,
    /// What workers staged, until it is settled.
    staging: Arc<Staging>,
    _settles: Subscription,
    _sweeper: Sweeper,
    /// Which version of each plugin is served, and which still exist.
    versions: Versions<Version>,
    /// Per plugin name, across versions.
    stats: parking_lot::Mutex<BTreeMap<String, Arc<WorkerStats>>>,
}

impl Node {
    /// Subscribes every plugin to its topic patterns, in a queue group named
    /// after the plugin. With `security` (distributed mode), declarations are
    /// signed with the node's key. With `nesting`, workers may dispatch
    /// sub-tasks and stage writes in `staging` from `handle`; the node
    /// settles them as decisions arrive, and expires them.
    pub async fn start(
        id: &str,
        plugins: &[Arc<Plugin>],
        bus: Arc<dyn Bus>,
        ledger: Arc<dyn Ledger>,
        security: Option<Arc<Security>>,
        nesting: Option<Arc<Nesting>>,
        staging: Arc<Staging>,
    ) -> Result<Self, BusError> {
        let settles = bus.subscribe_settle(Arc::new(SettleSubscriber(staging.clone()))).await?;
        let sweeper = Sweeper::start(&staging);
        let node = Node {
            id: id.to_owned(),
            bus,
            ledger,
            security,
            nesting,
            staging,
            _settles: settles,
            _sweeper: sweeper,
            versions: Versions::default(),
            stats: Default::default(),
        };
        for plugin in plugins {
            node.serve(plugin.clone()).await?;
        }
        Ok(node)
    }

    /// What the plugin named `name` has done since the node started.
    pub fn stats(&self, name: &str) -> Option<Arc<WorkerStats>> {
        self.stats.lock().get(name).cloned()
    }

    /// The node's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The writes the node's workers staged, and what became of them.
    pub fn staging(&self) -> &Arc<Staging> {
        &self.staging
    }
}

/// Hands settle decisions to the node's staging.
struct SettleSubscriber(Arc<Staging>);

impl SettleReceiver for SettleSubscriber {
    fn settle(&self, transaction: Arc<str>, decision: Decision, signer: Option<anocast_wire::PublicKey>) -> Work {
        let staging = self.0.clone();
        Box::pin(async move {
            staging.settle(&transaction, decision, signer).await;
        })
    }
}

/// Expires staged writes now and then, until dropped.
struct Sweeper(tokio::task::JoinHandle<()>);

impl Sweeper {
    fn start(staging: &Arc<Staging>) -> Self {
        let every = staging.sweep_interval();
        let staging = Arc::downgrade(staging);
        Sweeper(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match staging.upgrade() {
                    Some(staging) => staging.expire().await,
                    None => break,
                }
            }
        }))
    }
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        self.0.abort();
    }
}
