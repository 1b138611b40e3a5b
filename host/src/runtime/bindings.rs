//! The host's `bindgen!` of the `anocast:worker` world, once per version of
//! the contract.
//!
//! Exports are async: every call runs on a fiber so that epoch interruption
//! can yield a busy guest back to the executor. `log` is a plain synchronous,
//! infallible host function; the nested `dispatch` is async, so a guest
//! waiting for a sub-task suspends its fiber instead of blocking a thread.
//!
//! The 0.2.0 world is the one the host links and calls; 0.1.0 components
//! (no nested dispatch, no store, no `settle` export) are called through
//! their own bindings, and their `host` interface is linked too, so that
//! plugins built against it load.

#![allow(missing_docs)]

pub mod v1 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.0",
        world: "anocast:worker/worker",
        exports: { default: async },
    });
}

mod v2 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "anocast:worker/worker",
        exports: { default: async },
        imports: { "anocast:worker/dispatch": async, "anocast:worker/store.get": async },
        with: { "anocast:worker/types": super::v1::anocast::worker::types },
    });
}

pub use self::v1::anocast::worker::host::Host as HostV1;
pub use self::v1::anocast::worker::types::{Host as TypesHost, PluginInfo as WitPluginInfo, Task as WitTask};
pub use self::v2::Worker;
pub use self::v2::WorkerPre;
pub use self::v2::anocast::worker::dispatch::{
    Error as WitDispatchError, Host as DispatchHost, Options as WitDispatchOptions, Outcome as WitOutcome,
    Partial as WitPartial, Status as WitStatus,
};
pub use self::v2::anocast::worker::host::{Host, Level};
pub use self::v2::anocast::worker::store::Host as StoreHost;

/// The 0.1.0 log levels, as the 0.2.0 ones.
pub fn level_v1(level: v1::anocast::worker::host::Level) -> Level {
    use v1::anocast::worker::host::Level as L;
    match level {
        L::Trace => Level::Trace,
        L::Debug => Level::Debug,
        L::Info => Level::Info,
        L::Warn => Level::Warn,
        L::Error => Level::Error,
    }
}
