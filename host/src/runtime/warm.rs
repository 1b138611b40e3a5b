//! Warm instances of stateless plugins: the opt-in that lets one instance
//! serve task after task instead of starting fresh for each.
//!
//! A plugin opts in by carrying a custom section named
//! [`STATELESS_SECTION`] (anywhere in the component: at its top level or in
//! one of its core modules). The Rust SDK writes it for
//! `export!(MyWorker, stateless)`; the build of other languages appends it
//! when the plugin folder's `anocast.toml` says `stateless = true`.
//!
//! What reuse keeps and what it does not:
//! - an instance is reused only by later tasks of the same plugin version on
//!   the same node, never by another plugin: isolation between plugins is
//!   unchanged;
//! - its linear memory and globals carry over from one task to the next (that
//!   is the point: a big runtime's interpreter stays initialised), so a
//!   plugin that declares itself stateless promises not to keep one task's
//!   data for another;
//! - an instance goes back to the pool only after its calls all returned
//!   normally; after a trap, a deadline, a memory-limit hit or a cancelled
//!   call it is dropped, and the next task starts fresh;
//! - each idle instance keeps its slot in the pooling allocator until a
//!   task of any plugin finds no slot free: then idle instances give theirs
//!   up first. At most [`crate::runtime::RuntimeConfig::warm_instances`]
//!   wait per plugin, and an instance is retired after [`MAX_USES`] tasks.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use wasmtime::Store;

use super::imports::TaskState;
use super::instance::Exports;

/// Name of the custom section by which a component declares itself
/// stateless (`anocast-build` writes it; a test of the tests crate holds
/// the two names equal).
pub const STATELESS_SECTION: &str = "anocast:stateless";

/// Tasks one warm instance serves before it is retired.
pub const MAX_USES: u32 = 10_000;

/// Whether `bytes` (a component) carry the [`STATELESS_SECTION`].
pub fn declares_stateless(bytes: &[u8]) -> bool {
    wasmparser::Parser::new(0).parse_all(bytes).any(|payload| {
        matches!(payload, Ok(wasmparser::Payload::CustomSection(section)) if section.name() == STATELESS_SECTION)
    })
}

/// A live instance: its store, its exports and its allocator slot.
pub(super) struct Live {
    pub store: Store<TaskState>,
    pub exports: Option<Exports>,
    /// Held for as long as the instance lives.
    pub _slot: OwnedSemaphorePermit,
    pub uses: u32,
}

/// The idle warm instances of one plugin version.
pub(super) struct WarmPool {
    idle: Mutex<Vec<Live>>,
    max: usize,
    /// The runtime's: woken when an instance comes back.
    returned: Arc<Notify>,
}

impl WarmPool {
    pub fn new(max: usize, returned: Arc<Notify>) -> Self {
        WarmPool { idle: Mutex::new(Vec::with_capacity(max)), max, returned }
    }

    /// An idle instance that last ran for `worker`, if any.
    pub fn take(&self, worker: &str) -> Option<Live> {
        let mut idle = self.idle.lock();
        let at = idle.iter().rposition(|live| &*live.store.data().worker == worker)?;
        Some(idle.swap_remove(at))
    }

    /// Keeps `live` for a later task, unless the pool is full or the
    /// instance has served its share.
    pub fn put(&self, mut live: Live) {
        if live.uses >= MAX_USES {
            return;
        }
        live.store.data_mut().forget_task();
        let mut idle = self.idle.lock();
        if idle.len() < self.max {
            idle.push(live);
            drop(idle);
            // Tasks waiting for a slot may take this instance, or have it
            // give its slot up.
            self.returned.notify_waiters();
        }
    }

    /// Drops one idle instance (the least recently used); `false` when
    /// there was none.
    pub fn evict_one(&self) -> bool {
        let mut idle = self.idle.lock();
        if idle.is_empty() {
            return false;
        }
        let evicted = idle.remove(0);
        drop(idle);
        drop(evicted);
        true
    }

    /// Idle instances now.
    pub fn idle(&self) -> usize {
        self.idle.lock().len()
    }
}
