//! Which version of each plugin a node serves: serving one (in place of
//! the version of the same name, swapped atomically), withdrawing one, and
//! the versions that still have tasks under way.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;

use super::Node;
use super::worker::Version;
use crate::bus::{BusError, ErrorKind, ReplyTo, Subscription, Task, TaskReceiver, Work, WorkerId};
use crate::runtime::Plugin;
use crate::topic::Pattern;

/// One plugin name's subscription.
pub(super) struct Served {
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

impl Node {
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
