//! The engine shared by every plugin of a node: wasmtime's [`Engine`] with
//! the pooling allocator and epoch interruption (one ticker thread), the
//! linker of the host imports, the instance slots, and loading a
//! component into a [`Plugin`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings;
use super::cache::CodeCache;
use super::config::RuntimeConfig;
use super::imports::TaskState;
use super::plugin::{LoadError, Plugin, PluginInfo, Pre};
use super::warm::{self, WarmPool};

/// Bytes of a memory slot reset in place, rather than returned to the kernel,
/// when an instance ends.
const KEEP_RESIDENT: usize = 1 << 20;

/// The engine, the linker and the limits shared by every plugin of a node.
/// Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    pub(super) inner: Arc<RuntimeInner>,
}

pub(super) struct RuntimeInner {
    pub(super) engine: Engine,
    pub(super) cache: Option<Arc<CodeCache>>,
    pub(super) linker: Linker<TaskState>,
    pub(super) config: RuntimeConfig,
    pub(super) slots: Arc<Semaphore>,
    /// The memory all instances draw from.
    pub(super) memory: Arc<super::limits::MemoryBudget>,
    /// The warm pools of the stateless plugins loaded, so that their idle
    /// instances give up their slots when a task finds none free.
    pub(super) pools: Mutex<Vec<std::sync::Weak<WarmPool>>>,
    /// Woken when an instance goes back to a warm pool: a task waiting for
    /// a slot may take it, or have it give its slot up.
    pub(super) returned: Arc<tokio::sync::Notify>,
    _ticker: EpochTicker,
}

impl Runtime {
    /// Builds the engine (pooling allocator, epoch interruption, stack and
    /// memory limits) and starts its epoch ticker.
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(config.max_instances > 0, "max_instances must be at least 1");
        anyhow::ensure!(config.memory_limit >= 1 << 16, "the memory limit must be at least 64 KiB");
        anyhow::ensure!(!config.epoch_tick.is_zero(), "the epoch tick must be positive");
        anyhow::ensure!(
            config.memory_budget >= config.memory_limit,
            "the instance memory budget ({} MiB) must be at least one instance's memory limit ({} MiB)",
            config.memory_budget >> 20,
            config.memory_limit >> 20
        );
        let memory_limit = usize::try_from(config.memory_limit)?;
        let n = config.max_instances;
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(8))
            .max_core_instances_per_component(32)
            .total_memories(n.saturating_mul(2))
            .max_memories_per_component(4)
            .total_tables(n.saturating_mul(4))
            .max_tables_per_component(8)
            .total_stacks(n)
            .max_memory_size(memory_limit)
            .table_elements(100_000)
            // Returning a slot's pages with madvise costs a TLB shootdown on
            // every core (the dominant cost of a small task on two cores).
            // Instead, find the pages a task dirtied (PAGEMAP_SCAN, Linux
            // 6.7+) and zero them in place, up to these sizes per slot; only
            // what lies beyond is returned to the kernel, in batches.
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(64 << 10)
            .async_stack_keep_resident(64 << 10)
            .decommit_batch_size(16);
        let mut cfg = Config::new();
        cfg.wasm_component_model(true)
            .epoch_interruption(true)
            .max_wasm_stack(config.max_wasm_stack)
            .async_stack_size(config.max_wasm_stack + (1 << 20))
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&cfg).map_err(anyhow::Error::from)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
        bindings::Worker::add_to_linker::<TaskState, HasSelf<TaskState>>(&mut linker, |s| s)
            .map_err(anyhow::Error::from)?;
        // Plugins built against 0.1.0 import its `host` interface.
        bindings::v1::anocast::worker::host::add_to_linker::<TaskState, HasSelf<TaskState>>(&mut linker, |s| s)
            .map_err(anyhow::Error::from)?;
        let ticker = EpochTicker::start(&engine, config.epoch_tick);
        let slots = Arc::new(Semaphore::new(n as usize));
        let cache = match &config.cache_dir {
            Some(dir) => Some(Arc::new(CodeCache::open(dir, &engine)?)),
            None => None,
        };
        let memory = Arc::new(super::limits::MemoryBudget::new(config.memory_budget));
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                engine,
                cache,
                linker,
                config,
                slots,
                memory,
                pools: Mutex::new(Vec::new()),
                returned: Arc::new(tokio::sync::Notify::new()),
                _ticker: ticker,
            }),
        })
    }

    /// The configuration this runtime was built with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// The memory budget all instances draw from, and how much of it they
    /// hold.
    pub fn memory_budget(&self) -> &super::limits::MemoryBudget {
        &self.inner.memory
    }

    /// The underlying engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Drops one idle warm instance, of any plugin, to free its slot;
    /// `false` when there was none.
    pub(super) fn evict_idle(&self) -> bool {
        let pools: Vec<Arc<WarmPool>> = self.inner.pools.lock().iter().filter_map(std::sync::Weak::upgrade).collect();
        pools.iter().any(|pool| pool.evict_one())
    }

    /// The compiled-code cache, when one is configured.
    pub fn cache(&self) -> Option<&CodeCache> {
        self.inner.cache.as_deref()
    }

    /// Compiles `bytes` (off the async executor), checks that they implement
    /// the `worker` world, and asks the plugin to `describe` itself.
    pub async fn load(&self, bytes: Vec<u8>) -> Result<Plugin, LoadError> {
        check_header(&bytes)?;
        let stateless = warm::declares_stateless(&bytes);
        let digest = hex::encode(Sha256::digest(&bytes));
        let size = bytes.len();
        let engine = self.inner.engine.clone();
        let cache = self.inner.cache.clone();
        let key = digest.clone();
        let component = tokio::task::spawn_blocking(move || match &cache {
            Some(cache) => cache.get_or_compile(&engine, &key, &bytes),
            None => Component::new(&engine, &bytes),
        })
        .await
        .map_err(|e| LoadError::Compile(e.to_string()))?
        .map_err(|e| LoadError::Compile(first_line(&e)))?;
        let pre = self.inner.linker.instantiate_pre(&component).map_err(|e| LoadError::Imports(first_line(&e)))?;
        let pre = match bindings::WorkerPre::new(pre.clone()) {
            Ok(pre) => Pre::V2(pre),
            Err(err) => match bindings::v1::WorkerPre::new(pre) {
                Ok(pre) => Pre::V1(pre),
                Err(_) => return Err(LoadError::WrongWorld(first_line(&err))),
            },
        };
        let mut plugin = Plugin {
            info: PluginInfo { name: String::new(), version: String::new(), topics: Vec::new() },
            digest,
            size,
            stateless,
            pre,
            runtime: self.clone(),
            // Not yet: the instance that describes the plugin is not kept.
            warm: None,
        };
        let label: Arc<str> = Arc::from("loading");
        let deadline = Instant::now() + self.inner.config.call_timeout.min(Duration::from_secs(5));
        let mut instance =
            plugin.instantiate(label, Arc::from("describe"), deadline, None).await.map_err(LoadError::Describe)?;
        let info = instance.describe().await.map_err(LoadError::Describe)?;
        plugin.info = PluginInfo::validate(info)?;
        if stateless && self.inner.config.warm_instances > 0 {
            let pool = Arc::new(WarmPool::new(self.inner.config.warm_instances, self.inner.returned.clone()));
            let mut pools = self.inner.pools.lock();
            pools.retain(|pool| pool.strong_count() > 0);
            pools.push(Arc::downgrade(&pool));
            plugin.warm = Some(pool);
        }
        Ok(plugin)
    }
}

pub(super) fn first_line(err: &wasmtime::Error) -> String {
    let text = format!("{err:#}");
    text.lines().next().unwrap_or_default().to_owned()
}

/// Tells a core module or random bytes from a component by the preamble.
pub(super) fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => Ok(()),
        Some([0, b'a', b's', b'm', _, _, 0, 0]) => Err(LoadError::NotComponent),
        _ => Err(LoadError::NotWasm),
    }
}

/// Increments the engine's epoch every tick, on one thread per engine, until
/// the runtime is dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: &Engine, tick: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("anocast-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .expect("spawning the epoch ticker thread");
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_tells_components_from_modules_and_garbage() {
        assert_eq!(check_header(b"\0asm\x0d\0\x01\0rest"), Ok(()));
        assert_eq!(check_header(b"\0asm\x01\0\0\0rest"), Err(LoadError::NotComponent));
        assert_eq!(check_header(b"hello world"), Err(LoadError::NotWasm));
        assert_eq!(check_header(b""), Err(LoadError::NotWasm));
    }
}
