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
//! The modules stand in layers, each using only lower ones (a unit test
//! holds them to it; docs/architecture.md draws the map). Public:
//!
//! - [`runtime`]: wasmtime engine, limits, loading components, one instance
//!   per task, and the [`TaskServices`](runtime::TaskServices) its imports
//!   reach;
//! - [`ledger`]: trait [`Ledger`](ledger::Ledger) (interest lists), the
//!   in-memory and Redis ledgers, the registry of live nodes;
//! - [`dispatch`]: the dispatcher: broadcast, grace, gather, deadline, join;
//! - [`settle`]: tentative side effects: policy, staging, the store;
//! - [`gateway`]: the HTTP API;
//! - [`topic`], [`names`]: topic names and patterns, and the one set of
//!   rules for every name;
//! - [`error`]: the error kinds of the bus, ledger and store;
//! - [`credentials`]: what a host presents to NATS and Redis,
//!   secrets that never print, and URLs with their passwords masked;
//! - [`trust`]: node keys, trusted keys and what was rejected (distributed
//!   mode; the signed formats are in the `anocast-wire` crate);
//! - [`Host`], [`HostConfig`], [`MeshConfig`]: starting a host.
//!
//! Internal: `bus` (the in-process and NATS buses), `node` (the worker
//! side: receive, ask interest, declare, run, reply; plugin versions) and
//! `plugins` (the plugins folder and its watch); what callers need of them
//! is re-exported here.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use anocast::{Host, HostConfig, Topic, DispatchOptions};
//!
//! let host = Host::start(HostConfig { plugins: Some("target/plugins".into()), ..Default::default() }).await?;
//! let outcome = host
//!     .dispatcher()
//!     .dispatch(Topic::parse("text.analyze")?, b"what a great day".to_vec(), &DispatchOptions::default())
//!     .await?;
//! println!("{}", outcome.to_json());
//! # Ok(()) }
//! ```

pub(crate) mod bus;
mod config;
pub mod credentials;
pub mod dispatch;
pub mod error;
pub mod gateway;
mod host;
#[cfg(test)]
mod layers;
pub mod ledger;
pub(crate) mod node;
pub(crate) mod plugins;
#[cfg(test)]
mod protocol_doc;
pub mod runtime;
pub mod settle;
pub mod topic;
pub mod trust;

pub use anocast_wire;

pub use anocast_wire::names;
pub use bus::{DEFAULT_MAX_TASKS, Decision};
pub use bus::{Partial, WorkerId};
pub use config::{HostConfig, MeshConfig, default_node_id};
pub use credentials::{NatsAuth, RedisAuth, Secret, TlsFiles};
pub use dispatch::{DispatchOptions, Dispatcher, NestingConfig, Outcome, Status};
pub use host::{Host, PluginWatch};
pub use node::{VersionState, WorkerStats};
pub use plugins::watch::DEFAULT_DEBOUNCE;
pub use plugins::{LoadedPlugin, PluginDirError, PluginFailure, PluginSet};
pub use runtime::{Runtime, RuntimeConfig};
pub use topic::{Pattern, Topic};
