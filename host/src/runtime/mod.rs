//! The WebAssembly runtime: one wasmtime engine with its limits, loading
//! components into [`Plugin`]s, and one fresh [`Instance`] (its own `Store`)
//! per task.
//!
//! What a plugin gets, and no more:
//! - WASI p2 with no preopened directories, no sockets, no name lookup, no
//!   environment variables and no arguments; stdout and stderr go to the
//!   host's log (`stdio`);
//! - the `anocast:worker/host` import (`log`);
//! - for plugins built against 0.2.0, from `handle`: the
//!   `anocast:worker/dispatch` import (nested dispatch) and the
//!   `anocast:worker/store` import (tentative side effects, collected in
//!   the instance by `staged`); `store.get` also from `interested`. Both
//!   reach whatever the caller wired in as the task's [`TaskServices`]: the
//!   runtime knows nothing of dispatchers or stores.
//!
//! Limits, all on by default ([`RuntimeConfig`]): a per-call deadline enforced
//! by epoch interruption (one ticker thread per engine) and by a timer around
//! every call, a memory limit per instance, a maximum wasm stack, and a bound
//! on the instances alive at once (the pooling allocator's slots). A trap, a
//! deadline or a limit hit is a [`CallError`] for that one call; the store is
//! dropped with the task, so the next task starts clean, unless the plugin
//! declared itself stateless (`warm`): then an instance whose calls all
//! returned normally waits, warm, for the plugin's next task.
//!
//! # Layout
//!
//! - `config`: [`RuntimeConfig`];
//! - `engine`: [`Runtime`] (engine, linker, slots, epoch ticker) and loading;
//! - `plugin`: [`Plugin`], [`PluginInfo`], [`LoadError`], making instances;
//! - `instance`: [`Instance`] and [`CallError`];
//! - `imports`: the host side of the imports, per task;
//! - `services`: the trait the imports reach the node through;
//! - `staged`: a task's staged writes; `cache`: compiled code on disk;
//!   `warm`: idle instances of stateless plugins.

mod bindings;
mod cache;
mod config;
mod engine;
mod imports;
mod instance;
mod limits;
mod plugin;
mod services;
mod staged;
mod stdio;
mod warm;

pub use bindings::{WitPluginInfo, WitTask};
pub use cache::{CacheStats, CodeCache};
pub use config::RuntimeConfig;
pub use engine::Runtime;
pub use imports::Services;
pub use instance::{CallError, Instance};
pub use limits::{MemoryBudget, default_memory_budget};
pub use plugin::{LoadError, Plugin, PluginInfo};
pub use services::{SubOutcome, SubPartial, SubStatus, SubTask, SubTaskError, TaskServices};
pub use staged::{Op, Tentative};
pub use warm::{MAX_USES, STATELESS_SECTION};
