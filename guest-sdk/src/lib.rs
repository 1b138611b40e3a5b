//! `anocast-sdk`: write anocast worker plugins in Rust.
//!
//! A plugin is a WebAssembly component implementing the `anocast:worker`
//! world (see `wit/worker.wit`). With this crate a plugin is one struct, the
//! three functions of [`Worker`], and one [`export!`] call:
//!
//! ```ignore
//! use anocast_sdk::{export, PluginInfo, Task, Worker};
//!
//! struct Echo;
//!
//! impl Worker for Echo {
//!     fn describe() -> PluginInfo {
//!         PluginInfo::new("echo", env!("CARGO_PKG_VERSION"), &["echo.>"])
//!     }
//!     fn interested(task: Task) -> bool {
//!         !task.payload.is_empty()
//!     }
//!     fn handle(task: Task) -> Result<Vec<u8>, String> {
//!         Ok(task.payload)
//!     }
//! }
//!
//! export!(Echo);
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2 --release` (crate type
//! `cdylib`) and drop the `.wasm` into the host's plugins folder.
//!
//! # Layout
//!
//! - [`Worker`], [`Task`], [`PluginInfo`]: the contract, re-exported from the
//!   generated bindings under friendlier names;
//! - [`Task::json`], [`Task::text`], [`json`]: typed payload helpers over serde;
//! - [`log`]: write to the host's log (`trace` ... `error`);
//! - [`dispatch`], [`dispatch_with`]: dispatch a sub-task from
//!   [`Worker::handle`] and get its joined [`Outcome`];
//! - [`store`]: tentative side effects, applied when the dispatch commits
//!   ([`Worker::settle`] hears of it).

#[doc(hidden)]
pub mod bindings {
    //! The generated bindings. Plugin authors use the re-exports at the crate
    //! root instead.
    #![allow(missing_docs, unsafe_code, clippy::too_many_arguments)]

    wit_bindgen::generate!({
        path: "../wit",
        world: "anocast:worker/worker",
        pub_export_macro: true,
        export_macro_name: "__export_worker",
        default_bindings_module: "anocast_sdk::bindings",
    });
}

pub use bindings::anocast::worker::dispatch::{
    Error as DispatchError, Options as DispatchOptions, Outcome, Partial as SubPartial, Status,
};
pub use bindings::anocast::worker::types::{PluginInfo, Task};
#[doc(hidden)]
pub use wit_bindgen;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A worker plugin: what it is, whether it wants a task, and the work.
pub trait Worker {
    /// Name, version and topic patterns. Called once when the plugin loads.
    fn describe() -> PluginInfo;
    /// Whether this worker wants the task. Keep it cheap: decide from the
    /// payload alone.
    fn interested(task: Task) -> bool;
    /// Does the work: `Ok` bytes are the partial reply, `Err` an error
    /// partial.
    fn handle(task: Task) -> Result<Vec<u8>, String>;
    /// Called when what `handle` staged in the [`store`] for `request_id`
    /// was committed (`true`) or dropped (`false`). Nothing by default.
    fn settle(request_id: String, committed: bool) {
        let _ = (request_id, committed);
    }
}

/// Exports a type implementing [`Worker`] as this component's worker.
///
/// Call it once per plugin, at the crate root: `anocast_sdk::export!(MyWorker);`.
///
/// `anocast_sdk::export!(MyWorker, stateless);` also declares the plugin
/// stateless: it keeps nothing from one task for the next, so the host may
/// serve many tasks with one warm instance instead of a fresh one each
/// (docs/writing-plugins.md, "Warm instances").
#[macro_export]
macro_rules! export {
    ($worker:ident) => {
        #[doc(hidden)]
        pub struct __AnocastExport;

        impl $crate::bindings::Guest for __AnocastExport {
            fn describe() -> $crate::PluginInfo {
                <$worker as $crate::Worker>::describe()
            }
            fn interested(task: $crate::Task) -> bool {
                <$worker as $crate::Worker>::interested(task)
            }
            fn handle(task: $crate::Task) -> Result<Vec<u8>, String> {
                <$worker as $crate::Worker>::handle(task)
            }
            fn settle(request_id: String, committed: bool) {
                <$worker as $crate::Worker>::settle(request_id, committed)
            }
        }

        $crate::bindings::__export_worker!(__AnocastExport with_types_in $crate::bindings);
    };
    ($worker:ident, stateless) => {
        $crate::export!($worker);

        // The declaration the host looks for: a custom section by this name
        // (its content is not read).
        #[doc(hidden)]
        #[used]
        #[unsafe(link_section = "anocast:stateless")]
        static __ANOCAST_STATELESS: [u8; 1] = [1];
    };
}

impl PluginInfo {
    /// Builds the plugin's description from its name, version and topic
    /// patterns (`*` matches one token, `>` the rest).
    pub fn new(name: &str, version: &str, topics: &[&str]) -> Self {
        PluginInfo {
            name: name.to_owned(),
            version: version.to_owned(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
        }
    }
}

impl Task {
    /// Decodes the payload as JSON into `T`. The error is ready to be returned
    /// from [`Worker::handle`].
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_slice(&self.payload).map_err(|e| format!("payload is not the expected JSON: {e}"))
    }

    /// The payload as UTF-8 text (lossy: invalid sequences become U+FFFD).
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.payload)
    }
}

/// Encodes `value` as JSON, ready to be returned from [`Worker::handle`].
pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    serde_json::to_vec(value).map_err(|e| format!("could not encode the reply as JSON: {e}"))
}

/// Dispatches `payload` on `topic` as a sub-task of the task being handled,
/// and waits for its joined outcome (host defaults for the options).
///
/// Only [`Worker::handle`] may dispatch. The sub-task's deadline falls a
/// little before the current task's. A sub-task deeper than the host's
/// limit, or on a topic already in the chain this task descends from (a
/// cycle), is refused at once with a [`DispatchError`].
///
/// ```ignore
/// fn handle(task: Task) -> Result<Vec<u8>, String> {
///     let stock = anocast_sdk::dispatch("stock.reserve", &task.payload).map_err(|e| e.to_string())?;
///     if !stock.all_ok() {
///         return Err(format!("stock not reserved: {}", stock.status));
///     }
///     Ok(b"placed".to_vec())
/// }
/// ```
pub fn dispatch(topic: &str, payload: &[u8]) -> Result<Outcome, DispatchError> {
    dispatch_with(topic, payload, &DispatchOptions::default())
}

/// [`dispatch`], with options.
pub fn dispatch_with(topic: &str, payload: &[u8], options: &DispatchOptions) -> Result<Outcome, DispatchError> {
    bindings::anocast::worker::dispatch::dispatch(topic, payload, options)
}

impl Default for DispatchOptions {
    /// Every setting left to the host.
    fn default() -> Self {
        DispatchOptions { grace_ms: None, timeout_ms: None, content_type: None }
    }
}

impl Outcome {
    /// Whether the outcome is complete and every partial is ok (at least one).
    pub fn all_ok(&self) -> bool {
        self.status == Status::Complete && !self.partials.is_empty() && self.partials.iter().all(|p| p.result.is_ok())
    }

    /// The payloads of the ok partials, in worker order.
    pub fn payloads(&self) -> impl Iterator<Item = &[u8]> {
        self.partials.iter().filter_map(|p| p.result.as_deref().ok())
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Complete => "complete",
            Status::NoInterest => "no_interest",
            Status::Incomplete => "incomplete",
            Status::TimedOut => "timed_out",
        })
    }
}

/// Tentative side effects: a key-value store the host keeps for this
/// plugin. Writes are staged by [`Worker::handle`] and applied only if the
/// dispatch they belong to commits (see `wit/worker.wit`); reads see
/// committed values only.
pub mod store {
    use crate::bindings::anocast::worker::store as host;

    /// The committed value of `key`, if any; an error when the store
    /// cannot be read.
    pub fn get(key: &str) -> Result<Option<Vec<u8>>, String> {
        host::get(key)
    }

    /// Stages `value` for `key` (keys 1-256 bytes, values at most 1 MiB).
    pub fn set(key: &str, value: &[u8]) -> Result<(), String> {
        host::stage_set(key, value)
    }

    /// Stages the removal of `key`.
    pub fn delete(key: &str) -> Result<(), String> {
        host::stage_delete(key)
    }
}

/// Writing to the host's log. Records are tagged by the host with the worker
/// and the request id, and are subject to the host's log filter.
pub mod log {
    pub use crate::bindings::anocast::worker::host::Level;
    use crate::bindings::anocast::worker::host::log as host_log;

    /// Writes one record at `level`.
    pub fn log(level: Level, message: &str) {
        host_log(level, message);
    }
    /// Writes one record at `trace` level.
    pub fn trace(message: &str) {
        host_log(Level::Trace, message);
    }
    /// Writes one record at `debug` level.
    pub fn debug(message: &str) {
        host_log(Level::Debug, message);
    }
    /// Writes one record at `info` level.
    pub fn info(message: &str) {
        host_log(Level::Info, message);
    }
    /// Writes one record at `warn` level.
    pub fn warn(message: &str) {
        host_log(Level::Warn, message);
    }
    /// Writes one record at `error` level.
    pub fn error(message: &str) {
        host_log(Level::Error, message);
    }
}
