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
//! - [`settle`]: tentative side effects, commit and abort, expiry;
//! - [`topic`]: topic names and NATS-style patterns;
//! - [`trust`]: node keys, trusted keys and what was rejected (distributed
//!   mode; the signed formats are in the `anocast-wire` crate).
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

pub mod bus;
mod config;
pub mod dispatch;
pub mod error;
pub mod gateway;
mod host;
#[cfg(test)]
mod layers;
pub mod ledger;
pub mod node;
pub mod plugins;
#[cfg(test)]
mod protocol_doc;
pub mod runtime;
pub mod settle;
pub mod topic;
pub mod trust;

pub use anocast_wire;

pub use anocast_wire::names;
pub use bus::Decision;
pub use config::{HostConfig, MeshConfig, default_node_id};
pub use dispatch::{DispatchOptions, Dispatcher, NestingConfig, Outcome, Status};
pub use host::{Host, PluginWatch};
pub use plugins::PluginSet;
pub use runtime::{Runtime, RuntimeConfig};
pub use topic::{Pattern, Topic};
