//! Which version of each plugin a node serves: serving one (in place of
//! the version of the same name, swapped atomically), withdrawing one, and
//! the versions that still have tasks under way.
//!
//! The bookkeeping ([`Versions`]) is generic over what a version is
//! ([`Pinned`]), so that the swap is tested on its own, with paused time,
//! by versions that are not plugins.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;

use super::Node;
use super::worker::Version;
use crate::bus::{
    Bus, BusError, ErrorKind, Interest, Reply, ReplySink, ReplyTo, Subscription, Task, TaskReceiver, Work, WorkerId,
};
use crate::runtime::Plugin;
use crate::topic::Pattern;

/// What the bookkeeping needs of one version.
pub(super) trait Pinned: Send + Sync + Sized + 'static {
    /// Who answers, as replies are signed: the worker and its component's
    /// SHA-256.
    fn signs_as(&self) -> (&WorkerId, [u8; 32]);

    /// Its tasks under way.
    fn in_flight(&self) -> &AtomicUsize;

    /// Handles one task to its end.
    fn handle(self: Arc<Self>, task: Arc<Task>, replies: Arc<dyn ReplySink>) -> impl Future<Output = ()> + Send;

    /// Counts a task turned away unasked (`Busy` or `Untrusted`).
    fn turned_away(&self, interest: Interest) {
        let _ = interest;
    }
}

impl Pinned for Version {
    fn signs_as(&self) -> (&WorkerId, [u8; 32]) {
        (&self.worker, self.digest)
    }

    fn in_flight(&self) -> &AtomicUsize {
        &self.in_flight
    }

    fn handle(self: Arc<Self>, task: Arc<Task>, replies: Arc<dyn ReplySink>) -> impl Future<Output = ()> + Send {
        self.serve(task, replies)
    }

    fn turned_away(&self, interest: Interest) {
        let counter = if interest == Interest::Busy { &self.stats.busy } else { &self.stats.untrusted };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// One plugin name's subscription.
struct Served<V> {
    current: Arc<ArcSwap<V>>,
    patterns: Vec<Pattern>,
    _subscription: Subscription,
}

/// The versions of a node's plugins: the one each name serves now, and
/// every one that still exists.
pub(super) struct Versions<V> {
    served: parking_lot::Mutex<BTreeMap<String, Served<V>>>,
    /// Serializes changes to `served` (each awaits the bus).
    changes: tokio::sync::Mutex<()>,
    /// Every version that may still have tasks, for reporting.
    all: parking_lot::Mutex<Vec<Weak<V>>>,
}

impl<V> Default for Versions<V> {
    fn default() -> Self {
        Versions { served: Default::default(), changes: Default::default(), all: Default::default() }
    }
}

impl<V: Pinned> Versions<V> {
    /// Serves `version` under `name` on `patterns`: swapped in place of the
    /// current version when the patterns are the same (tasks under way
    /// finish on the version they started with), else subscribed anew
    /// before the old subscription is dropped.
    pub(super) async fn install(
        &self,
        bus: &dyn Bus,
        name: &str,
        patterns: Vec<Pattern>,
        version: Arc<V>,
    ) -> Result<(), BusError> {
        let _change = self.changes.lock().await;
        {
            let mut all = self.all.lock();
            all.retain(|v| v.strong_count() > 0);
            all.push(Arc::downgrade(&version));
        }
        if let Some(served) = self.served.lock().get(name).filter(|s| s.patterns == patterns) {
            served.current.store(version);
            return Ok(());
        }
        let current = Arc::new(ArcSwap::from(version));
        let subscription = bus.subscribe(name, &patterns, Arc::new(Subscriber(current.clone()))).await?;
        // The old subscription (if any) is dropped only now, after the new
        // one is in place; its tasks under way finish.
        let old = self.served.lock().insert(name.to_owned(), Served { current, patterns, _subscription: subscription });
        drop(old);
        Ok(())
    }

    /// Stops serving `name`; its tasks under way finish.
    pub(super) async fn withdraw(&self, name: &str) -> bool {
        let _change = self.changes.lock().await;
        let old = self.served.lock().remove(name);
        old.is_some()
    }

    /// The version each name serves now.
    pub(super) fn current(&self) -> Vec<(String, Arc<V>)> {
        self.served.lock().iter().map(|(name, s)| (name.clone(), s.current.load_full())).collect()
    }

    /// Every version that still exists: served now, or finishing tasks.
    pub(super) fn alive(&self) -> Vec<Arc<V>> {
        self.all.lock().iter().filter_map(Weak::upgrade).collect()
    }
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

impl Node {
    /// Serves `plugin`, in place of the version of the same name if any.
    pub async fn serve(&self, plugin: Arc<Plugin>) -> Result<(), BusError> {
        let name = plugin.info.name.clone();
        let patterns = plugin.info.topics.clone();
        let version = Arc::new(self.version(plugin)?);
        self.versions.install(&*self.bus, &name, patterns, version).await
    }

    /// Stops serving the plugin named `name`; its tasks under way finish.
    pub async fn withdraw(&self, name: &str) -> bool {
        self.versions.withdraw(name).await
    }

    fn version(&self, plugin: Arc<Plugin>) -> Result<Version, BusError> {
        let worker =
            WorkerId { node: self.id.clone(), plugin: plugin.info.name.clone(), version: plugin.info.version.clone() };
        let mut digest = [0u8; 32];
        hex::decode_to_slice(&plugin.digest, &mut digest)
            .map_err(|_| BusError::new(ErrorKind::Malformed, format!("bad digest of plugin {}", plugin.info.name)))?;
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

    /// Every version that still exists, by name, the current one first.
    pub fn versions(&self) -> Vec<VersionState> {
        let current: BTreeMap<String, String> =
            self.versions.current().into_iter().map(|(name, v)| (name, v.plugin.digest.clone())).collect();
        let mut states: Vec<VersionState> = self
            .versions
            .alive()
            .into_iter()
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
}

/// The subscription's handle on its plugin: whichever version is current
/// when a task arrives handles all of it.
struct Subscriber<V>(Arc<ArcSwap<V>>);

impl<V: Pinned> TaskReceiver for Subscriber<V> {
    fn receive(&self, task: Arc<Task>, reply_to: &dyn ReplyTo) -> Work {
        let version = self.0.load_full();
        let (worker, digest) = version.signs_as();
        let replies = reply_to.sink(worker, digest);
        version.in_flight().fetch_add(1, Ordering::Relaxed);
        let in_flight = InFlight(version.clone());
        Box::pin(async move {
            let _counted = in_flight;
            version.handle(task, replies).await;
        })
    }

    fn decline(&self, task: Arc<Task>, reply_to: &dyn ReplyTo, interest: Interest) -> Work {
        let version = self.0.load_full();
        let (worker, digest) = version.signs_as();
        let (worker, replies) = (worker.clone(), reply_to.sink(worker, digest));
        version.turned_away(interest);
        drop(task);
        Box::pin(async move {
            replies.send(Reply::Ack { worker, interest, closed: None }).await;
        })
    }
}

/// Counts a task of a version until it ends (or is dropped).
struct InFlight<V: Pinned>(Arc<V>);

impl<V: Pinned> Drop for InFlight<V> {
    fn drop(&mut self) {
        self.0.in_flight().fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
