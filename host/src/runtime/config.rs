//! The runtime's tunables, each with a default that is safe to serve with.

use std::time::Duration;

/// Tunables of the runtime. Every limit has a sane default.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Linear memory one instance may grow to, in bytes (default 64 MiB).
    pub memory_limit: u64,
    /// Longest a single call into a plugin may run (default 10 s). The
    /// dispatch's own deadline applies too, whichever is sooner.
    pub call_timeout: Duration,
    /// Instances alive at once across all plugins (default 1000). Tasks
    /// beyond that wait for a free slot.
    pub max_instances: u32,
    /// Maximum wasm stack, in bytes (default 512 KiB).
    pub max_wasm_stack: usize,
    /// Period of the epoch ticker: the granularity of deadlines and how
    /// often a busy guest yields to other tasks (default 10 ms).
    pub epoch_tick: Duration,
    /// Where compiled code is cached (see [`CodeCache`](super::CodeCache));
    /// `None` (the default) compiles every time.
    pub cache_dir: Option<std::path::PathBuf>,
    /// Idle warm instances kept per stateless plugin (default 4); 0 turns
    /// instance reuse off, so that every task gets a fresh instance.
    pub warm_instances: usize,
    /// Linear memory all instances may hold together, in bytes (default:
    /// half of the machine's memory). A growth past it fails that task
    /// with an error that says so; other tasks are unaffected.
    pub memory_budget: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            memory_limit: 64 << 20,
            call_timeout: Duration::from_secs(10),
            max_instances: 1000,
            max_wasm_stack: 512 << 10,
            epoch_tick: Duration::from_millis(10),
            cache_dir: None,
            warm_instances: 4,
            memory_budget: super::limits::default_memory_budget(),
        }
    }
}
