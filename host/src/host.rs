//! Starting a host: the runtime, the plugins of one folder, a node serving
//! them and a dispatcher, wired over an in-process bus and ledger (embedded
//! mode) or over NATS and Redis (distributed mode); reloading its plugins.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{HostConfig, MeshConfig};
use crate::dispatch::{self, Dispatcher};
use crate::plugins::{self, PluginSet};
use crate::runtime::Runtime;
use crate::{bus, ledger, node, settle, trust};

/// A watch on a host's plugins folder ([`Host::watch_plugins`]); dropping
/// it stops watching.
pub struct PluginWatch {
    _watch: plugins::watch::Watch,
}

/// What a node registers in the mesh: its id, key and plugins.
fn node_info(id: &str, security: &trust::Security, plugins: &PluginSet) -> ledger::NodeInfo {
    ledger::NodeInfo {
        id: id.to_owned(),
        key: security.key().public().to_string(),
        signed_ms: 0,
        plugins: plugins
            .loaded
            .iter()
            .map(|p| ledger::PluginEntry {
                name: p.plugin.info.name.clone(),
                version: p.plugin.info.version.clone(),
                topics: p.plugin.info.topics.iter().map(|t| t.as_str().to_owned()).collect(),
            })
            .collect(),
    }
}

/// This node's key and trust, as configured.
fn security(mesh: &MeshConfig, node_id: &str) -> anyhow::Result<trust::Security> {
    let store = trust::TrustStore::load(&mesh.trust, mesh.trust_mesh)?;
    // A plugin-less client signs its tasks and decisions too: nodes run
    // only what a key they trust dispatched. Its key is made on first use,
    // like a node's, and must be put in the nodes' trust files.
    let key = match &mesh.key {
        Some(path) => trust::read_key(path)?,
        None => {
            let dir = mesh.data_dir.clone().unwrap_or_else(|| trust::default_data_dir(node_id));
            trust::data_dir_key(&dir, node_id)?
        }
    };
    Ok(trust::Security::new(key, node_id, store, mesh.trust.clone()))
}

/// A host: the runtime, the plugins of one folder, a node serving them, and
/// a dispatcher, over an in-process bus and ledger (embedded mode) or over
/// NATS and Redis (distributed mode).
pub struct Host {
    node: node::Node,
    bus: Arc<dyn bus::Bus>,
    plugins_dir: Option<PathBuf>,
    plugins: arc_swap::ArcSwap<PluginSet>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    /// Rescans of the plugins folder since start.
    rescans: std::sync::atomic::AtomicU64,
    dispatcher: Dispatcher,
    runtime: Runtime,
    registry: Option<Arc<ledger::RedisRegistry>>,
    security: Option<Arc<trust::Security>>,
    /// Reloads the trust files when they change.
    _trust_watch: Option<trust::TrustWatch>,
}

impl Host {
    /// Loads the plugins folder, joins the mesh if one is configured, and
    /// starts serving the plugins.
    pub async fn start(config: HostConfig) -> anyhow::Result<Self> {
        anocast_wire::names::check_node_id(&config.node_id)?;
        if let Some(mesh) = &config.mesh {
            mesh.check()?;
        }
        let runtime = Runtime::new(config.runtime.clone())?;
        let plugins = match &config.plugins {
            Some(dir) => PluginSet::load_dir(&runtime, dir).await?,
            None => PluginSet::default(),
        };
        let security = match &config.mesh {
            Some(mesh) => Some(Arc::new(security(mesh, &config.node_id)?)),
            None => None,
        };
        let trust_watch = match &security {
            Some(security) => security.watch()?,
            None => None,
        };
        type Parts =
            (Arc<dyn bus::Bus>, Arc<dyn ledger::Ledger>, Option<Arc<ledger::RedisRegistry>>, Arc<dyn settle::Store>);
        let (bus, ledger, registry, store): Parts = match (&config.mesh, &security) {
            (Some(mesh), Some(security)) => {
                let bus = bus::NatsBus::connect(
                    &mesh.nats,
                    &mesh.nats_auth,
                    &config.node_id,
                    mesh.connect_timeout,
                    security.clone(),
                )
                .await?
                .with_max_tasks(mesh.max_tasks);
                let conn = ledger::connect_redis(&mesh.redis, &mesh.redis_auth, mesh.connect_timeout).await?;
                // A node (a host with a plugins folder, even an empty one:
                // plugins may be dropped in later) registers; a plugin-less
                // client does not.
                let me = config.plugins.is_some().then(|| node_info(&config.node_id, security, &plugins));
                let registry =
                    Arc::new(ledger::RedisRegistry::start(conn.clone(), me, mesh.liveness, security.clone()).await);
                security.set_registry(registry.clone());
                let store = Arc::new(settle::RedisStore::new(conn.clone(), config.settle.retention));
                (Arc::new(bus), Arc::new(ledger::RedisLedger::new(conn)), Some(registry), store)
            }
            _ => (
                Arc::new(bus::LocalBus::new()),
                Arc::new(ledger::MemoryLedger::new()),
                None,
                Arc::new(settle::MemoryStore::new()),
            ),
        };
        let mut dispatcher = Dispatcher::new(bus.clone(), ledger.clone());
        if let Some(registry) = &registry {
            dispatcher = dispatcher.with_registry(registry.clone());
        }
        if let Some(security) = &security {
            dispatcher = dispatcher.with_security(security.clone());
        }
        anyhow::ensure!(config.nesting.max_depth <= 64, "the nesting depth limit must be at most 64");
        let nesting = Arc::new(dispatch::Nesting::new(dispatcher.clone(), config.nesting));
        let node = node::Node::start(
            &config.node_id,
            &plugins.plugins(),
            bus.clone(),
            ledger,
            security.clone(),
            Some(nesting),
            Arc::new(settle::Staging::new(store, config.settle)),
        )
        .await?;
        Ok(Host {
            node,
            bus,
            plugins_dir: config.plugins.clone(),
            plugins: arc_swap::ArcSwap::from_pointee(plugins),
            reloading: tokio::sync::Mutex::new(()),
            rescans: std::sync::atomic::AtomicU64::new(0),
            dispatcher,
            runtime,
            registry,
            security,
            _trust_watch: trust_watch,
        })
    }

    /// Leaves the mesh cleanly: other dispatchers stop expecting this node
    /// at once instead of when its registration expires.
    pub async fn shutdown(self) {
        let Host { node, registry, bus, .. } = self;
        let id = node.id().to_owned();
        drop(node);
        if let Some(registry) = registry {
            registry.leave(&id).await;
        }
        // What was published (settle decisions above all) reaches the
        // server before the connection goes.
        if let Err(err) = bus.flush().await {
            tracing::warn!(%err, "could not flush the last messages to NATS");
        }
    }

    /// The dispatcher.
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// The plugins folder's contents, as last loaded.
    pub fn plugins(&self) -> Arc<PluginSet> {
        self.plugins.load_full()
    }

    /// Brings the served plugins in step with the plugins folder: loads new
    /// and changed files, swaps in new versions, unloads plugins whose file
    /// is gone. Tasks under way finish on the version they
    /// started with. Does nothing for a plugin-less host.
    pub async fn reload(&self) -> anyhow::Result<()> {
        let Some(dir) = &self.plugins_dir else { return Ok(()) };
        let _one_at_a_time = self.reloading.lock().await;
        self.rescans.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let before = self.plugins.load_full();
        let next = before.rescan(&self.runtime, dir).await?;
        for loaded in &next.loaded {
            let unchanged =
                before.get(&loaded.plugin.info.name).is_some_and(|old| Arc::ptr_eq(&old.plugin, &loaded.plugin));
            if !unchanged {
                self.node.serve(loaded.plugin.clone()).await?;
            }
        }
        for old in &before.loaded {
            if next.get(&old.plugin.info.name).is_none() {
                self.node.withdraw(&old.plugin.info.name).await;
            }
        }
        if let (Some(registry), Some(security)) = (&self.registry, &self.security) {
            registry.update(&node_info(self.node.id(), security, &next)).await;
        }
        for event in plugins::changes(&before, &next) {
            self.bus.announce(self.node.id(), &event).await;
        }
        self.plugins.store(Arc::new(next));
        Ok(())
    }

    /// Watches the plugins folder and reloads on every change, until the
    /// returned value is dropped. `None` for a plugin-less host.
    pub fn watch_plugins(self: &Arc<Self>, debounce: std::time::Duration) -> anyhow::Result<Option<PluginWatch>> {
        let Some(dir) = &self.plugins_dir else { return Ok(None) };
        let (watch, mut changes) = plugins::watch::watch(dir, debounce)?;
        let host = Arc::downgrade(self);
        // Ends when the watch is dropped (the channel closes), never in the
        // middle of a reload.
        tokio::spawn(async move {
            while changes.recv().await.is_some() {
                let Some(host) = host.upgrade() else { break };
                if let Err(err) = host.reload().await {
                    tracing::error!("reloading the plugins folder: {err:#}");
                }
            }
        });
        Ok(Some(PluginWatch { _watch: watch }))
    }

    /// How many times the plugins folder was rescanned since start.
    pub fn rescans(&self) -> u64 {
        self.rescans.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every version of every plugin that still exists: the ones in
    /// service, and older ones whose last tasks are finishing.
    pub fn plugin_versions(&self) -> Vec<node::VersionState> {
        self.node.versions()
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        self.node.id()
    }

    /// What the plugin named `name` has done since start.
    pub fn stats(&self, name: &str) -> Option<Arc<node::WorkerStats>> {
        self.node.stats(name)
    }

    /// What this node's workers staged, and what became of it.
    pub fn staging(&self) -> &Arc<settle::Staging> {
        self.node.staging()
    }

    /// The runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The live nodes of the mesh as this host last saw them (empty in
    /// embedded mode).
    pub fn mesh_nodes(&self) -> Vec<ledger::NodeInfo> {
        use ledger::Registry;
        self.registry.as_ref().map(|r| r.nodes()).unwrap_or_default()
    }

    /// This node's key and what it rejected (distributed mode).
    pub fn security(&self) -> Option<&trust::Security> {
        self.security.as_deref()
    }

    /// Whether this host is part of a mesh (distributed mode).
    pub fn is_distributed(&self) -> bool {
        self.registry.is_some()
    }

    /// The largest payload a task may carry: what the bus carries (NATS's
    /// `max_payload` less room for the headers), unbounded in-process.
    pub fn max_payload(&self) -> usize {
        self.bus.max_payload()
    }
}
