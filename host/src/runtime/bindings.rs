//! The host's one `bindgen!` of the `anocast:worker` world.
//!
//! Exports are async: every call runs on a fiber so that epoch interruption
//! can yield a busy guest back to the executor. The `log` import is a plain
//! synchronous, infallible host function.

#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "anocast:worker/worker",
    exports: { default: async },
});

pub use self::anocast::worker::host::{Host, Level};
pub use self::anocast::worker::types::{Host as TypesHost, PluginInfo as WitPluginInfo, Task as WitTask};
