//! anocast: a WebAssembly plugin host for event-driven service composition.
//!
//! Worker logic lives in sandboxed WebAssembly components loaded from a
//! folder. A task is broadcast to every plugin whose topic patterns match;
//! each decides from the payload whether it is interested and, if so,
//! declares itself at once on the list `{topic}-{request-id}`; each finished
//! worker replies with a partial; when the list is empty and nobody can still
//! declare, the partials are joined into one [`Outcome`]. Nobody interested
//! within the grace period: `no_interest`. The deadline reached: `timed_out`,
//! naming the missing workers. (The Anocast / Trust Chain pattern.)
//!
//! # Layout
//!
//! - [`runtime`]: wasmtime engine, limits, loading components, a fresh store
//!   per task;
//! - [`plugins`]: the plugins folder;
//! - [`bus`]: trait [`Bus`](bus::Bus) and the in-process bus;
//! - [`ledger`]: trait [`Ledger`](ledger::Ledger) (interest lists) and the
//!   in-memory ledger;
//! - [`dispatch`]: the dispatcher: broadcast, grace, gather, deadline, join;
//! - [`node`]: the worker side: receive, ask interest, declare, run, reply;
//! - [`gateway`]: the HTTP API;
//! - [`cli`]: the `anocast` command;
//! - [`topic`]: topic names and NATS-style patterns.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use anocast::{Host, HostConfig, Topic, DispatchOptions};
//!
//! let host = Host::start(HostConfig { plugins: "target/plugins".into(), ..Default::default() }).await?;
//! let outcome = host
//!     .dispatcher()
//!     .dispatch(Topic::parse("text.analyze")?, b"what a great day".to_vec(), &DispatchOptions::default())
//!     .await?;
//! println!("{}", outcome.to_json());
//! # Ok(()) }
//! ```

pub mod bus;
pub mod cli;
pub mod dispatch;
pub mod gateway;
pub mod ledger;
pub mod node;
pub mod plugins;
pub mod runtime;
pub mod topic;

use std::path::PathBuf;
use std::sync::Arc;

pub use dispatch::{DispatchOptions, Dispatcher, Outcome, Status};
pub use plugins::PluginSet;
pub use runtime::{Runtime, RuntimeConfig};
pub use topic::{Pattern, Topic};

/// What an embedded host needs to start.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The plugins folder.
    pub plugins: PathBuf,
    /// This node's id (default: the host name).
    pub node_id: String,
    /// Runtime limits.
    pub runtime: RuntimeConfig,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig { plugins: PathBuf::from("plugins"), node_id: default_node_id(), runtime: RuntimeConfig::default() }
    }
}

/// The default node id: the machine's host name, or `local`.
pub fn default_node_id() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "local".to_owned())
}

/// An embedded host: the runtime, the plugins of one folder, an in-process
/// bus and ledger, a node serving the plugins and a dispatcher.
pub struct Host {
    node: node::Node,
    plugins: PluginSet,
    dispatcher: Dispatcher,
    runtime: Runtime,
}

impl Host {
    /// Loads the plugins folder and starts serving its plugins in-process.
    pub async fn start(config: HostConfig) -> anyhow::Result<Self> {
        let runtime = Runtime::new(config.runtime.clone())?;
        let plugins = PluginSet::load_dir(&runtime, &config.plugins).await?;
        let bus: Arc<dyn bus::Bus> = Arc::new(bus::LocalBus::new());
        let ledger: Arc<dyn ledger::Ledger> = Arc::new(ledger::MemoryLedger::new());
        let node = node::Node::start(&config.node_id, &plugins.plugins(), bus.clone(), ledger.clone()).await?;
        Ok(Host { node, plugins, dispatcher: Dispatcher::new(bus, ledger), runtime })
    }

    /// The dispatcher.
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// The plugins folder's contents.
    pub fn plugins(&self) -> &PluginSet {
        &self.plugins
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        self.node.id()
    }

    /// The runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }
}
