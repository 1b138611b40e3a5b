//! The worker side of a node: receive a task, ask the plugin whether it is
//! interested, declare, run, reply.
//!
//! For every task that reaches a plugin's subscription the node, on a task
//! of its own:
//!
//! 1. makes a fresh instance of the plugin and calls `interested`;
//! 2. not interested: acknowledges, and that is all;
//! 3. interested: declares the worker in the ledger *before* acknowledging
//!    (in distributed mode the list entry is signed with the node's key, see
//!    [`crate::trust`]),
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

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures::FutureExt;

use crate::bus::{
    Bus, BusError, Interest, Partial, Reply, ReplySink, ReplyTo, SettleReceiver, Subscription, Task, TaskReceiver,
    Work, WorkerId,
};
use crate::dispatch::{Nesting, Parent};
use crate::ledger::Ledger;
use crate::runtime::Services;
use crate::runtime::{CallError, Plugin, WitTask};
use crate::settle::{Decision, Staging};
use crate::topic::Pattern;
use crate::trust::Security;

/// How long an instance may outlive its dispatch's deadline.
const DEADLINE_MARGIN: Duration = Duration::from_millis(100);

/// How long an interest list outlives its task's deadline in the ledger.
const LIST_TTL: Duration = Duration::from_secs(30);

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
    served: parking_lot::Mutex<BTreeMap<String, Served>>,
    /// Serializes changes to `served` (each awaits the bus).
    changes: tokio::sync::Mutex<()>,
    /// Per plugin name, across versions.
    stats: parking_lot::Mutex<BTreeMap<String, Arc<WorkerStats>>>,
    /// Every version that may still have tasks, for reporting.
    versions: parking_lot::Mutex<Vec<Weak<Version>>>,
}

/// One plugin name's subscription.
struct Served {
    current: Arc<ArcSwap<Version>>,
    patterns: Vec<Pattern>,
    _subscription: Subscription,
}

/// A version of a plugin that still exists: the one in service, or an older
/// one whose last tasks are finishing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VersionState {
    /// Plugin name.
    pub name: String,
    /// Version.
    pub version: String,
    /// SHA-256 of the component file, hex.
    pub digest: String,
    /// Tasks it is handling now.
    pub in_flight: usize,
    /// Whether it is the version new tasks meet.
    pub current: bool,
}

/// What one plugin of a node has done since the node started.
#[derive(Debug, Default, serde::Serialize)]
pub struct WorkerStats {
    /// Tasks that reached it.
    pub received: AtomicU64,
    /// Tasks it was not interested in.
    pub not_interested: AtomicU64,
    /// Declarations accepted (the worker ran).
    pub declared: AtomicU64,
    /// Declarations refused because the interest window had closed.
    pub refused: AtomicU64,
    /// Error partials it sent.
    pub failed: AtomicU64,
}

impl WorkerStats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
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
            served: Default::default(),
            changes: Default::default(),
            stats: Default::default(),
            versions: Default::default(),
        };
        for plugin in plugins {
            node.serve(plugin.clone()).await?;
        }
        Ok(node)
    }

    /// Serves `plugin`, in place of the version of the same name if any.
    pub async fn serve(&self, plugin: Arc<Plugin>) -> Result<(), BusError> {
        let _change = self.changes.lock().await;
        let name = plugin.info.name.clone();
        let version = Arc::new(self.version(plugin)?);
        {
            let mut versions = self.versions.lock();
            versions.retain(|v| v.strong_count() > 0);
            versions.push(Arc::downgrade(&version));
        }
        let patterns = version.plugin.info.topics.clone();
        if let Some(served) = self.served.lock().get(&name).filter(|s| s.patterns == patterns) {
            served.current.store(version);
            return Ok(());
        }
        let current = Arc::new(ArcSwap::from(version));
        let subscription = self.bus.subscribe(&name, &patterns, Arc::new(Subscriber(current.clone()))).await?;
        // The old subscription (if any) is dropped only now, after the new
        // one is in place; its tasks under way finish.
        let old = self.served.lock().insert(name, Served { current, patterns, _subscription: subscription });
        drop(old);
        Ok(())
    }

    /// Stops serving the plugin named `name`; its tasks under way finish.
    pub async fn withdraw(&self, name: &str) -> bool {
        let _change = self.changes.lock().await;
        let old = self.served.lock().remove(name);
        old.is_some()
    }

    fn version(&self, plugin: Arc<Plugin>) -> Result<Version, BusError> {
        let worker =
            WorkerId { node: self.id.clone(), plugin: plugin.info.name.clone(), version: plugin.info.version.clone() };
        let mut digest = [0u8; 32];
        hex::decode_to_slice(&plugin.digest, &mut digest)
            .map_err(|_| BusError(format!("bad digest of plugin {}", plugin.info.name)))?;
        let signer =
            self.security.as_ref().map(|security| (security.clone(), worker.signing(security.key().public(), digest)));
        let stats = self.stats.lock().entry(plugin.info.name.clone()).or_default().clone();
        Ok(Version {
            label: Arc::from(worker.to_string()),
            worker,
            digest,
            signer,
            plugin,
            ledger: self.ledger.clone(),
            nesting: self.nesting.clone(),
            staging: self.staging.clone(),
            stats,
            in_flight: AtomicUsize::new(0),
        })
    }

    /// What the plugin named `name` has done since the node started.
    pub fn stats(&self, name: &str) -> Option<Arc<WorkerStats>> {
        self.stats.lock().get(name).cloned()
    }

    /// Every version that still exists, by name, the current one first.
    pub fn versions(&self) -> Vec<VersionState> {
        let current: BTreeMap<String, String> =
            self.served.lock().iter().map(|(name, s)| (name.clone(), s.current.load().plugin.digest.clone())).collect();
        let mut states: Vec<VersionState> = self
            .versions
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .map(|v| VersionState {
                name: v.plugin.info.name.clone(),
                version: v.plugin.info.version.clone(),
                digest: v.plugin.digest.clone(),
                in_flight: v.in_flight.load(Ordering::Relaxed),
                current: current.get(&v.plugin.info.name) == Some(&v.plugin.digest),
            })
            .collect();
        states.sort_by(|a, b| (&a.name, !a.current).cmp(&(&b.name, !b.current)));
        states
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
    fn settle(&self, transaction: Arc<str>, decision: Decision) -> Work {
        let staging = self.0.clone();
        Box::pin(async move {
            staging.settle(&transaction, decision).await;
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

/// One version of a plugin, as each of its tasks sees it from start to end.
struct Version {
    worker: WorkerId,
    label: Arc<str>,
    /// SHA-256 of the component file.
    digest: [u8; 32],
    /// Distributed mode: the key that signs declarations, and the worker as
    /// it signs.
    signer: Option<(Arc<Security>, anocast_wire::Worker)>,
    plugin: Arc<Plugin>,
    ledger: Arc<dyn Ledger>,
    nesting: Option<Arc<Nesting>>,
    staging: Arc<Staging>,
    stats: Arc<WorkerStats>,
    /// Tasks under way on this version.
    in_flight: AtomicUsize,
}

/// The subscription's handle on its plugin: whichever version is current
/// when a task arrives handles all of it.
struct Subscriber(Arc<ArcSwap<Version>>);

impl TaskReceiver for Subscriber {
    fn receive(&self, task: Arc<Task>, reply_to: &dyn ReplyTo) -> Work {
        let version = self.0.load_full();
        let replies = reply_to.sink(&version.worker, version.digest);
        version.in_flight.fetch_add(1, Ordering::Relaxed);
        let in_flight = InFlight(version.clone());
        Box::pin(async move {
            let _counted = in_flight;
            version.serve(task, replies).await;
        })
    }
}

/// Counts a task of a version until it ends (or is dropped).
struct InFlight(Arc<Version>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Version {
    #[tracing::instrument(level = "debug", skip_all, fields(worker = &*self.label, request_id = &*task.request_id))]
    async fn serve(self: Arc<Self>, task: Arc<Task>, replies: Arc<dyn ReplySink>) {
        WorkerStats::bump(&self.stats.received);
        let remaining = task.remaining();
        if remaining.is_zero() {
            tracing::debug!("task arrived after its deadline; ignored");
            return;
        }
        let wit_task = WitTask {
            topic: task.topic.to_string(),
            request_id: task.request_id.to_string(),
            payload: task.payload.clone(),
            content_type: task.content_type.clone(),
            deadline_ms: remaining.as_millis() as u64,
            depth: task.depth,
            ancestry: task.ancestry.iter().map(|a| a.request_id.to_string()).collect(),
        };
        // The dispatcher owns the dispatch's deadline and reports a worker
        // still running then as missing; the instance is stopped a little
        // later, so that the two never race.
        let deadline = Instant::now() + remaining + DEADLINE_MARGIN;
        let services = self.nesting.as_ref().map(|nesting| Services {
            parent: Parent { nesting: nesting.clone(), task: task.clone() },
            store: self.staging.store().clone(),
        });
        let instance = self.plugin.instantiate(self.label.clone(), task.request_id.clone(), deadline, services).await;
        let mut instance = match instance {
            Ok(instance) => instance,
            Err(err) => return self.fail_before_declaring(&task, &*replies, "could not start", err).await,
        };
        match instance.interested(&wit_task).await {
            Ok(false) => {
                WorkerStats::bump(&self.stats.not_interested);
                // Counted in the ledger only when the dispatcher said how
                // many answers to expect.
                let expected = task.expected_count(&self.worker.plugin);
                let closed = if expected > 0 {
                    let ttl = task.remaining() + LIST_TTL;
                    self.ledger.decline(&task.interest_key(), ttl, expected).await.unwrap_or_else(|err| {
                        tracing::warn!(%err, "could not count this answer in the ledger");
                        None
                    })
                } else {
                    None
                };
                self.ack(&*replies, Interest::NotInterested, closed).await;
            }
            Ok(true) => {
                let Some(closed) = self.declare_in_ledger(&task).await else {
                    return self.ack(&*replies, Interest::Refused, None).await;
                };
                // A worker that answers on its first poll (no yield, no
                // waiting host call) sends its acknowledgement and partial
                // as one reply; otherwise the acknowledgement goes first.
                let (result, closed) = {
                    let mut handle = std::pin::pin!(instance.handle(&wit_task));
                    match (&mut handle).now_or_never() {
                        Some(result) => (result, Some(closed)),
                        None => {
                            self.ack(&*replies, Interest::Declared, closed).await;
                            (handle.await, None)
                        }
                    }
                };
                // What it staged is kept before its partial leaves, so that
                // the decision can never arrive first.
                let (ops, nested_staged) = instance.take_staged();
                let staged = nested_staged || !ops.is_empty();
                let result = self.keep_staged(&task, ops, result);
                let partial = Partial { staged, ..self.partial(result) };
                match closed {
                    Some(closed) => replies.send_declared_with_result(closed, partial).await,
                    None => replies.send(Reply::Partial(partial)).await,
                }
            }
            Err(err) => self.fail_before_declaring(&task, &*replies, "interested()", err).await,
        }
    }

    async fn ack(&self, replies: &dyn ReplySink, interest: Interest, closed: Option<Vec<String>>) {
        replies.send(Reply::Ack { worker: self.worker.clone(), interest, closed }).await;
    }

    /// Keeps the writes `handle` staged for the task's transaction; a
    /// worker whose writes cannot be kept fails.
    fn keep_staged(
        &self,
        task: &Task,
        ops: Vec<crate::settle::Op>,
        result: Result<Result<Vec<u8>, String>, CallError>,
    ) -> Result<Result<Vec<u8>, String>, CallError> {
        if ops.is_empty() {
            return result;
        }
        let transaction = task.ancestry.first().map_or(&task.request_id, |root| &root.request_id);
        let deadline = Instant::now() + task.remaining();
        match self.staging.keep(transaction, &self.plugin, &self.label, &task.request_id, deadline, ops) {
            Ok(()) => result,
            Err(err) => Ok(Err(format!("could not stage its writes: {err}"))),
        }
    }

    /// The partial of a `handle` call.
    fn partial(&self, result: Result<Result<Vec<u8>, String>, CallError>) -> Partial {
        let result = result.unwrap_or_else(|err| Err(format!("handle() {err}")));
        if let Err(error) = &result {
            WorkerStats::bump(&self.stats.failed);
            tracing::debug!(error, "worker failed");
        }
        Partial { worker: self.worker.clone(), result, staged: false }
    }

    /// Declares in the ledger, then acknowledges. `false`: refused.
    async fn declare(&self, task: &Task, replies: &dyn ReplySink) -> bool {
        match self.declare_in_ledger(task).await {
            Some(closed) => {
                self.ack(replies, Interest::Declared, closed).await;
                true
            }
            None => {
                self.ack(replies, Interest::Refused, None).await;
                false
            }
        }
    }

    /// Declares in the ledger. `None`: refused (the window had closed, or
    /// the ledger failed); otherwise the list's entries when this answer
    /// closed the window.
    async fn declare_in_ledger(&self, task: &Task) -> Option<Option<Vec<String>>> {
        let ttl = task.remaining() + LIST_TTL;
        let entry = match &self.signer {
            None => Ok(self.label.to_string()),
            Some((security, worker)) => {
                anocast_wire::Declaration::entry(task.topic.as_str(), &task.request_id, worker, security.key())
            }
        };
        let declared = match entry {
            Ok(entry) => {
                let expected = task.expected_count(&self.worker.plugin);
                self.ledger.declare(&task.interest_key(), &entry, ttl, expected).await
            }
            Err(err) => Err(crate::ledger::LedgerError(format!("cannot sign the declaration: {err}"))),
        };
        let (accepted, closed) = match declared {
            Ok(declaration) => (declaration.accepted, declaration.closed),
            Err(err) => {
                tracing::warn!(%err, "could not declare; the worker will not run");
                (false, None)
            }
        };
        if accepted {
            WorkerStats::bump(&self.stats.declared);
            Some(closed)
        } else {
            WorkerStats::bump(&self.stats.refused);
            tracing::debug!("declaration refused: the interest window had closed");
            None
        }
    }

    /// A failure before the worker could say whether it is interested is
    /// reported as that worker's error partial, so that it is not lost.
    async fn fail_before_declaring(&self, task: &Task, replies: &dyn ReplySink, what: &str, err: CallError) {
        tracing::warn!(%err, "{what} failed");
        if self.declare(task, replies).await {
            WorkerStats::bump(&self.stats.failed);
            let result = Err(format!("{what} {err}"));
            replies.send(Reply::Partial(Partial { worker: self.worker.clone(), result, staged: false })).await;
        }
    }
}
