//! The WebAssembly runtime: one wasmtime [`Engine`] with its limits, loading
//! components into [`Plugin`]s, and one fresh [`Instance`] (its own `Store`)
//! per task.
//!
//! What a plugin gets, and no more:
//! - WASI p2 with no preopened directories, no sockets, no name lookup, no
//!   environment variables and no arguments; stdout and stderr go to the
//!   host's log ([`stdio`]);
//! - the `anocast:worker/host` import (`log`);
//! - for plugins built against 0.2.0, from `handle`: the
//!   `anocast:worker/dispatch` import (nested dispatch, see
//!   [`crate::dispatch::Nesting`]) and the `anocast:worker/store` import
//!   (tentative side effects, see [`crate::settle`]); `store.get` also
//!   from `interested`.
//!
//! Limits, all on by default ([`RuntimeConfig`]): a per-call deadline enforced
//! by epoch interruption (one ticker thread per engine) and by a timer around
//! every call, a memory limit per instance, a maximum wasm stack, and a bound
//! on the instances alive at once (the pooling allocator's slots). A trap, a
//! deadline or a limit hit is a [`CallError`] for that one call; the store is
//! dropped with the task, so the next task starts clean, unless the plugin
//! declared itself stateless ([`warm`]): then an instance whose calls all
//! returned normally waits, warm, for the plugin's next task.

mod bindings;
mod limits;
mod stdio;
pub mod warm;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

pub use bindings::{WitPluginInfo, WitTask};
use limits::{DeadlineExceeded, Limiter};
pub use warm::STATELESS_SECTION;
use warm::{Live, WarmPool};

use crate::dispatch::{NestError, Outcome, Parent, Status, SubOptions};
use crate::plugins::cache::CodeCache;
use crate::settle::{Op, Tentative};
use crate::topic::Pattern;

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
    /// Where compiled code is cached (see [`crate::plugins::cache`]);
    /// `None` (the default) compiles every time.
    pub cache_dir: Option<std::path::PathBuf>,
    /// Idle warm instances kept per stateless plugin (default 4); 0 turns
    /// instance reuse off, so that every task gets a fresh instance.
    pub warm_instances: usize,
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
        }
    }
}

/// Why a call into a plugin failed. Each is reported as that worker's error
/// partial; none affects other tasks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The call ran past its deadline and was stopped.
    #[error("stopped after exceeding its time limit of {}", humantime::format_duration(*.0))]
    Deadline(Duration),
    /// The guest tried to grow its memory past the limit.
    #[error("exceeded its memory limit of {} MiB", .0 >> 20)]
    Memory(u64),
    /// The guest trapped (a panic, `unreachable`, stack overflow, ...).
    #[error("trapped: {0}")]
    Trap(String),
    /// No instance slot became free before the deadline.
    #[error("no instance slot became free before the deadline (max {0} instances)")]
    Busy(u32),
}

/// Why a file could not be loaded as a plugin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly file (bad magic number)")]
    NotWasm,
    /// A core module, not a component.
    #[error(
        "a core WebAssembly module, not a component: build it for wasm32-wasip2 (or run `wasm-tools component new`)"
    )]
    NotComponent,
    /// The component failed validation or compilation.
    #[error("invalid component: {0}")]
    Compile(String),
    /// The component needs imports the host does not provide.
    #[error("the component needs imports anocast does not provide: {0}")]
    Imports(String),
    /// The component does not export the `worker` world.
    #[error("the component does not implement the anocast:worker/worker world: {0}")]
    WrongWorld(String),
    /// `describe` failed.
    #[error("describe() failed: {0}")]
    Describe(CallError),
    /// `describe` returned something invalid.
    #[error("describe() returned an invalid description: {0}")]
    InvalidInfo(String),
}

/// A plugin's description, validated.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PluginInfo {
    /// Unique name within a node.
    pub name: String,
    /// Version, as the plugin reports it.
    pub version: String,
    /// Topic patterns it subscribes to.
    pub topics: Vec<Pattern>,
}

impl PluginInfo {
    fn validate(info: WitPluginInfo) -> Result<Self, LoadError> {
        let bad = |s: String| Err(LoadError::InvalidInfo(s));
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 64
                && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        };
        if !name_ok(&info.name) {
            return bad(format!(
                "name {:?} must be 1-64 characters of lowercase ASCII letters, digits, '-' and '_'",
                info.name.chars().take(80).collect::<String>()
            ));
        }
        if info.version.is_empty() || info.version.len() > 64 || info.version.chars().any(char::is_whitespace) {
            return bad(format!("version {:?} must be 1-64 characters without spaces", info.version));
        }
        if info.topics.is_empty() {
            return bad("it subscribes to no topic pattern".into());
        }
        let topics = info
            .topics
            .iter()
            .map(|t| Pattern::parse(t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| LoadError::InvalidInfo(e.to_string()))?;
        Ok(PluginInfo { name: info.name, version: info.version, topics })
    }

    /// Whether one of the plugin's patterns matches `topic`.
    pub fn subscribes_to(&self, topic: &str) -> bool {
        self.topics.iter().any(|p| p.matches(topic))
    }
}

/// Bytes of a memory slot reset in place, rather than returned to the kernel,
/// when an instance ends.
const KEEP_RESIDENT: usize = 1 << 20;

/// The engine, the linker and the limits shared by every plugin of a node.
/// Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    engine: Engine,
    cache: Option<Arc<CodeCache>>,
    linker: Linker<TaskState>,
    config: RuntimeConfig,
    slots: Arc<Semaphore>,
    /// The warm pools of the stateless plugins loaded, so that their idle
    /// instances give up their slots when a task finds none free.
    pools: Mutex<Vec<std::sync::Weak<WarmPool>>>,
    /// Woken when an instance goes back to a warm pool: a task waiting for
    /// a slot may take it, or have it give its slot up.
    returned: Arc<tokio::sync::Notify>,
    _ticker: EpochTicker,
}

impl Runtime {
    /// Builds the engine (pooling allocator, epoch interruption, stack and
    /// memory limits) and starts its epoch ticker.
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(config.max_instances > 0, "max_instances must be at least 1");
        anyhow::ensure!(config.memory_limit >= 1 << 16, "the memory limit must be at least 64 KiB");
        anyhow::ensure!(!config.epoch_tick.is_zero(), "the epoch tick must be positive");
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
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                engine,
                cache,
                linker,
                config,
                slots,
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

    /// The underlying engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Drops one idle warm instance, of any plugin, to free its slot;
    /// `false` when there was none.
    fn evict_idle(&self) -> bool {
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

fn first_line(err: &wasmtime::Error) -> String {
    let text = format!("{err:#}");
    text.lines().next().unwrap_or_default().to_owned()
}

/// Tells a core module or random bytes from a component by the preamble.
fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
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

/// A loaded, pre-instantiated plugin.
pub struct Plugin {
    /// Name, version and topic patterns.
    pub info: PluginInfo,
    /// sha256 of the component's bytes, hex.
    pub digest: String,
    /// Size of the component, in bytes.
    pub size: usize,
    /// Whether the component declares itself stateless (see [`warm`]).
    pub stateless: bool,
    pre: Pre,
    runtime: Runtime,
    /// Its idle warm instances, when it is stateless and reuse is on.
    warm: Option<Arc<WarmPool>>,
}

/// A plugin pre-instantiated for the version of the contract it targets.
enum Pre {
    V2(bindings::WorkerPre<TaskState>),
    V1(bindings::v1::WorkerPre<TaskState>),
}

/// An instance's exports, by version of the contract.
enum Exports {
    V2(bindings::Worker),
    V1(bindings::v1::Worker),
}

/// What a task's instance may use beyond logging.
#[derive(Clone)]
pub struct Services {
    /// Nested dispatch.
    pub parent: Parent,
    /// Committed values, for `store.get`.
    pub store: Arc<dyn crate::settle::Store>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("info", &self.info)
            .field("digest", &self.digest)
            .field("stateless", &self.stateless)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// Makes an instance for one task: a fresh one (its own store), or, for
    /// a stateless plugin, a warm one that served an earlier task of this
    /// plugin. `deadline` bounds every call on it, together with the
    /// runtime's call timeout. With `services`, its `handle` may dispatch
    /// sub-tasks and stage writes.
    pub async fn instantiate(
        &self,
        worker: Arc<str>,
        request_id: Arc<str>,
        deadline: Instant,
        services: Option<Services>,
    ) -> Result<Instance, CallError> {
        let rt = &self.runtime.inner;
        // The limit reported in errors: the call timeout, or what was left of
        // the dispatch's deadline (to the millisecond) when that is sooner.
        let now = Instant::now();
        let left = deadline.saturating_duration_since(now);
        let limit = if rt.config.call_timeout <= left {
            rt.config.call_timeout
        } else {
            Duration::from_millis(left.as_millis() as u64)
        };
        let deadline = deadline.min(now + rt.config.call_timeout);
        let slot = match self.acquire(&worker, deadline).await? {
            Acquired::Slot(slot) => slot,
            Acquired::Warm(mut live) => {
                live.uses += 1;
                let state = live.store.data_mut();
                state.request_id = request_id;
                state.services = services;
                state.deadline = deadline;
                state.stderr_tail.lock().clear();
                state.logged.store(0, Ordering::Relaxed);
                live.store.set_epoch_deadline(1);
                return Ok(Instance::new(live, deadline, limit, self.warm.clone()));
            }
        };
        let stderr_tail = Arc::new(Mutex::new(String::new()));
        let logged = Arc::new(AtomicUsize::new(0));
        let wasi = WasiCtxBuilder::new()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stdout(stdio::GuestOutput::new(worker.clone(), "stdout", None, logged.clone()))
            .stderr(stdio::GuestOutput::new(worker.clone(), "stderr", Some(stderr_tail.clone()), logged.clone()))
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_GUEST_RESOURCES);
        let state = TaskState {
            wasi,
            table,
            limiter: Limiter::new(rt.config.memory_limit),
            worker,
            request_id,
            stderr_tail,
            logged,
            services,
            plugin: self.info.name.clone(),
            handling: false,
            deadline,
            tentative: Tentative::default(),
            nested_staged: false,
        };
        let mut store = Store::new(&rt.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        // The deadline is read from the store: a warm instance's changes with
        // each task.
        store.epoch_deadline_callback(|store| {
            if Instant::now() >= store.data().deadline {
                Err(DeadlineExceeded.into())
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        let live = Live { store, exports: None, _slot: slot, uses: 1 };
        let mut instance = Instance::new(live, deadline, limit, self.warm.clone());
        let exports = match &self.pre {
            Pre::V2(pre) => {
                let result = guard(deadline, pre.instantiate_async(&mut instance.live().store)).await;
                instance.outcome_of(result).map(Exports::V2)
            }
            Pre::V1(pre) => {
                let result = guard(deadline, pre.instantiate_async(&mut instance.live().store)).await;
                instance.outcome_of(result).map(Exports::V1)
            }
        };
        instance.live().exports = Some(exports?);
        Ok(instance)
    }

    /// A warm instance of this plugin, else a free slot for a fresh one.
    /// When there is neither, idle warm instances of other plugins give
    /// their slots up; failing that, the task waits until one is released
    /// or an instance goes back to a pool (both wake it), up to `deadline`.
    async fn acquire(&self, worker: &str, deadline: Instant) -> Result<Acquired, CallError> {
        let rt = &self.runtime.inner;
        let returned = rt.returned.clone();
        let wait = async {
            loop {
                // Registered before looking, so that an instance returned
                // meanwhile is not missed.
                let notified = returned.notified();
                let mut notified = std::pin::pin!(notified);
                notified.as_mut().enable();
                if let Some(live) = self.warm.as_ref().and_then(|pool| pool.take(worker)) {
                    return Some(Acquired::Warm(live));
                }
                if let Ok(slot) = rt.slots.clone().try_acquire_owned() {
                    return Some(Acquired::Slot(slot));
                }
                if self.runtime.evict_idle() {
                    continue;
                }
                tokio::select! {
                    slot = rt.slots.clone().acquire_owned() => return slot.ok().map(Acquired::Slot),
                    () = notified => {}
                }
            }
        };
        tokio::time::timeout_at(deadline.into(), wait)
            .await
            .ok()
            .flatten()
            .ok_or(CallError::Busy(rt.config.max_instances))
    }

    /// Warm instances waiting for this plugin's next task (0 unless it is
    /// stateless).
    pub fn warm_idle(&self) -> usize {
        self.warm.as_ref().map_or(0, |pool| pool.idle())
    }
}

/// What a task starts from: a warm instance, or a slot for a fresh one.
enum Acquired {
    Warm(Live),
    Slot(tokio::sync::OwnedSemaphorePermit),
}

/// Most resources (streams, pollables, ...) a guest may hold at once.
const MAX_GUEST_RESOURCES: usize = 10_000;

/// One task's instance of a plugin: `interested` and `handle` run on the same
/// store. When this value is dropped, the store goes with it, or, for a
/// stateless plugin whose calls all returned normally, back to the plugin's
/// warm pool.
pub struct Instance {
    /// `None` only while being dropped.
    live: Option<Live>,
    deadline: Instant,
    limit: Duration,
    warm: Option<Arc<WarmPool>>,
    /// A call is under way (if the instance is dropped now, the call was
    /// cancelled half-way).
    in_call: bool,
    /// A call failed (a trap, a deadline, the memory limit).
    poisoned: bool,
}

/// Calls one export on whichever version of the contract the instance has.
macro_rules! call {
    ($self:ident, |$w:ident, $store:ident| $v2:expr, $v1:expr) => {{
        $self.in_call = true;
        let deadline = $self.deadline;
        let live = $self.live();
        // The call's own slice before its first yield: an epoch tick while
        // the instance waited between calls (on the ledger, say) must not
        // make a short call yield at once (a worker whose `handle` is done
        // on its first poll sends one reply instead of two).
        live.store.set_epoch_deadline(1);
        let $store = &mut live.store;
        let result = match &live.exports {
            Some(Exports::V2($w)) => guard(deadline, $v2).await,
            Some(Exports::V1($w)) => guard(deadline, $v1).await,
            None => return Err(not_initialised()),
        };
        $self.outcome_of(result)
    }};
}

impl Instance {
    fn new(live: Live, deadline: Instant, limit: Duration, warm: Option<Arc<WarmPool>>) -> Self {
        Instance { live: Some(live), deadline, limit, warm, in_call: false, poisoned: false }
    }

    fn live(&mut self) -> &mut Live {
        self.live.as_mut().expect("an instance is live until dropped")
    }

    fn state(&self) -> &TaskState {
        self.live.as_ref().expect("an instance is live until dropped").store.data()
    }

    /// Calls `describe`.
    pub async fn describe(&mut self) -> Result<WitPluginInfo, CallError> {
        call!(self, |w, store| w.call_describe(store), w.call_describe(store))
    }

    /// Calls `interested(task)`.
    pub async fn interested(&mut self, task: &WitTask) -> Result<bool, CallError> {
        call!(self, |w, store| w.call_interested(store, task), w.call_interested(store, task))
    }

    /// Calls `handle(task)`: `Ok(Err(_))` is the guest's own error.
    pub async fn handle(&mut self, task: &WitTask) -> Result<Result<Vec<u8>, String>, CallError> {
        self.live().store.data_mut().handling = true;
        call!(self, |w, store| w.call_handle(store, task), w.call_handle(store, task))
    }

    /// Calls `settle(request_id, committed)`; a 0.1.0 plugin has no such
    /// hook (and could stage nothing).
    pub async fn settle(&mut self, request_id: &str, committed: bool) -> Result<(), CallError> {
        if matches!(self.live().exports, Some(Exports::V1(_))) {
            return Ok(());
        }
        call!(self, |w, store| w.call_settle(store, request_id, committed), {
            let _ = w;
            std::future::ready(Ok(()))
        })
    }

    /// The writes `handle` staged, leaving none, and whether a sub-task it
    /// dispatched had writes staged (for the same transaction).
    pub fn take_staged(&mut self) -> (Vec<Op>, bool) {
        let state = self.live().store.data_mut();
        (state.tentative.take(), state.nested_staged)
    }

    /// Turns the outcome of a guarded call into a [`CallError`] that says
    /// what went wrong; a failed call poisons the instance for reuse.
    fn outcome_of<R>(
        &mut self,
        result: Result<wasmtime::Result<R>, tokio::time::error::Elapsed>,
    ) -> Result<R, CallError> {
        self.in_call = false;
        let outcome = self.error_of(result);
        self.poisoned |= outcome.is_err() || self.state().limiter.exceeded();
        outcome
    }

    fn error_of<R>(&self, result: Result<wasmtime::Result<R>, tokio::time::error::Elapsed>) -> Result<R, CallError> {
        let err = match result {
            Ok(Ok(value)) => return Ok(value),
            Err(_) => return Err(CallError::Deadline(self.limit)),
            Ok(Err(err)) => err,
        };
        let state = self.state();
        if err.is::<DeadlineExceeded>() {
            return Err(CallError::Deadline(self.limit));
        }
        if state.limiter.exceeded() {
            return Err(CallError::Memory(state.limiter.limit()));
        }
        let mut reason = match err.downcast_ref::<wasmtime::Trap>() {
            Some(trap) => trap.to_string(),
            None => first_line(&err),
        };
        let tail = state.stderr_tail.lock();
        if !tail.is_empty() {
            reason.push_str(&format!(" (guest stderr: {})", tail.trim_end()));
        }
        Err(CallError::Trap(reason))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let reusable = !self.in_call && !self.poisoned;
        if let (Some(pool), Some(live), true) = (&self.warm, self.live.take(), reusable) {
            pool.put(live);
        }
    }
}

/// Bounds a call by the instance's deadline.
fn guard<F: std::future::Future>(deadline: Instant, call: F) -> tokio::time::Timeout<F> {
    tokio::time::timeout_at(deadline.into(), call)
}

fn not_initialised() -> CallError {
    CallError::Trap("the instance was not initialised".into())
}

/// What a store holds for one task.
pub struct TaskState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    worker: Arc<str>,
    request_id: Arc<str>,
    stderr_tail: Arc<Mutex<String>>,
    /// Bytes of stdout and stderr logged for the current task (capped).
    logged: Arc<AtomicUsize>,
    /// Nested dispatch and the store, when the instance runs a task.
    services: Option<Services>,
    /// The plugin's name: its namespace in the store.
    plugin: String,
    /// What `handle` staged.
    tentative: Tentative,
    /// Whether a sub-task `handle` dispatched had writes staged.
    nested_staged: bool,
    /// Whether `handle` was called (sub-tasks may be dispatched only then).
    handling: bool,
    /// When the instance is stopped.
    deadline: Instant,
}

impl WasiView for TaskState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Longest log record a guest may write; longer ones are cut.
const MAX_LOG_RECORD: usize = 4096;

impl bindings::TypesHost for TaskState {}

impl bindings::HostV1 for TaskState {
    fn log(&mut self, level: bindings::v1::anocast::worker::host::Level, message: String) {
        bindings::Host::log(self, bindings::level_v1(level), message);
    }
}

impl bindings::DispatchHost for TaskState {
    async fn dispatch(
        &mut self,
        topic: String,
        payload: Vec<u8>,
        options: bindings::WitDispatchOptions,
    ) -> Result<bindings::WitOutcome, bindings::WitDispatchError> {
        let Some(parent) = self.services.as_ref().filter(|_| self.handling).map(|s| s.parent.clone()) else {
            return Err(bindings::WitDispatchError::Invalid("sub-tasks can be dispatched only from handle()".into()));
        };
        let options = SubOptions {
            grace: options.grace_ms.map(Duration::from_millis),
            timeout: options.timeout_ms.map(Duration::from_millis),
            content_type: options.content_type,
        };
        tracing::debug!(worker = &*self.worker, request_id = &*self.request_id, topic, "dispatching a sub-task");
        match parent.dispatch(self.deadline, topic, payload, options).await {
            Ok(outcome) => {
                // Writes staged down there are settled with this task's
                // transaction; its partial will say so. (A sub-task whose
                // workers did not all reply may have staged too.)
                self.nested_staged |= outcome.staged || !outcome.missing.is_empty();
                Ok(wit_outcome(outcome))
            }
            Err(err) => Err(wit_nest_error(err)),
        }
    }
}

impl bindings::StoreHost for TaskState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, String> {
        let Some(services) = &self.services else {
            return Err("the store is not available outside a task".into());
        };
        let store = services.store.clone();
        store.get(&self.plugin, &key).await.map_err(|err| {
            tracing::warn!(%err, worker = &*self.worker, "store.get failed");
            err.to_string()
        })
    }

    fn stage_set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        self.stage(Op::Set(key, value))
    }

    fn stage_delete(&mut self, key: String) -> Result<(), String> {
        self.stage(Op::Delete(key))
    }
}

impl TaskState {
    /// Drops what belonged to the last task, before a warm instance waits
    /// for the next one.
    fn forget_task(&mut self) {
        self.services = None;
        self.tentative = Tentative::default();
        self.nested_staged = false;
        self.handling = false;
    }

    fn stage(&mut self, op: Op) -> Result<(), String> {
        if self.services.is_none() || !self.handling {
            return Err("writes can be staged only from handle()".into());
        }
        self.tentative.stage(op)
    }
}

fn wit_outcome(outcome: Outcome) -> bindings::WitOutcome {
    bindings::WitOutcome {
        request_id: outcome.request_id,
        status: match outcome.status {
            Status::Complete => bindings::WitStatus::Complete,
            Status::NoInterest => bindings::WitStatus::NoInterest,
            Status::Incomplete => bindings::WitStatus::Incomplete,
            Status::TimedOut => bindings::WitStatus::TimedOut,
        },
        partials: outcome
            .partials
            .into_iter()
            .map(|p| bindings::WitPartial { worker: p.worker.to_string(), result: p.result })
            .collect(),
        missing: outcome.missing,
    }
}

fn wit_nest_error(err: NestError) -> bindings::WitDispatchError {
    use bindings::WitDispatchError as E;
    match err {
        NestError::TooDeep(limit) => E::TooDeep(limit),
        NestError::Cycle(chain) => E::Cycle(chain),
        NestError::NoTimeLeft(_) => E::NoTimeLeft,
        NestError::Invalid(why) => E::Invalid(why),
        NestError::Failed(why) => E::Failed(why),
    }
}

impl bindings::Host for TaskState {
    fn log(&mut self, level: bindings::Level, message: String) {
        let message = stdio::clip(&message, MAX_LOG_RECORD);
        let (worker, request_id) = (&*self.worker, &*self.request_id);
        match level {
            bindings::Level::Trace => tracing::trace!(target: "anocast::guest", worker, request_id, "{message}"),
            bindings::Level::Debug => tracing::debug!(target: "anocast::guest", worker, request_id, "{message}"),
            bindings::Level::Info => tracing::info!(target: "anocast::guest", worker, request_id, "{message}"),
            bindings::Level::Warn => tracing::warn!(target: "anocast::guest", worker, request_id, "{message}"),
            bindings::Level::Error => tracing::error!(target: "anocast::guest", worker, request_id, "{message}"),
        }
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

    #[test]
    fn invalid_descriptions_are_refused() {
        let info = |name: &str, version: &str, topics: &[&str]| WitPluginInfo {
            name: name.into(),
            version: version.into(),
            topics: topics.iter().map(|t| (*t).into()).collect(),
        };
        assert!(PluginInfo::validate(info("ok-name_2", "1.0.0", &["a.*"])).is_ok());
        for bad in [
            info("", "1", &["a"]),
            info("Upper", "1", &["a"]),
            info("n", "", &["a"]),
            info("n", "1", &[]),
            info("n", "1", &["a..b"]),
        ] {
            assert!(matches!(PluginInfo::validate(bad), Err(LoadError::InvalidInfo(_))));
        }
    }
}
