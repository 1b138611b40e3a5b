//! A loaded plugin: its validated description, its component
//! pre-instantiated for the version of the contract it targets, and making
//! one task's [`Instance`] of it, fresh or warm.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;

use super::bindings::{self, WitPluginInfo};
use super::engine::Runtime;
use super::imports::{Services, TaskState};
use super::instance::{CallError, Exports, Instance, MAX_GUEST_RESOURCES, guard};
use super::limits::{DeadlineExceeded, Limiter};
use super::staged::Tentative;
use super::stdio;
use super::warm::{Live, WarmPool};
use anocast_wire::names;

use crate::topic::Pattern;

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
    pub(super) fn validate(info: WitPluginInfo) -> Result<Self, LoadError> {
        let bad = |s: String| Err(LoadError::InvalidInfo(s));
        let invalid = |e: anocast_wire::NameError| LoadError::InvalidInfo(e.to_string());
        names::check_plugin_name(&info.name).map_err(invalid)?;
        names::check_version(&info.version).map_err(invalid)?;
        if info.topics.is_empty() {
            return bad("it subscribes to no topic pattern".into());
        }
        if info.topics.len() > names::MAX_PATTERNS {
            return bad(format!(
                "it subscribes to {} topic patterns; at most {} are allowed",
                info.topics.len(),
                names::MAX_PATTERNS
            ));
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

/// A loaded, pre-instantiated plugin.
pub struct Plugin {
    /// Name, version and topic patterns.
    pub info: PluginInfo,
    /// sha256 of the component's bytes, hex.
    pub digest: String,
    /// Size of the component, in bytes.
    pub size: usize,
    /// Whether the component declares itself stateless (see [`STATELESS_SECTION`](super::STATELESS_SECTION)).
    pub stateless: bool,
    pub(super) pre: Pre,
    pub(super) runtime: Runtime,
    /// Its idle warm instances, when it is stateless and reuse is on.
    pub(super) warm: Option<Arc<WarmPool>>,
}

/// A plugin pre-instantiated for the version of the contract it targets.
pub(super) enum Pre {
    V2(bindings::WorkerPre<TaskState>),
    V1(bindings::v1::WorkerPre<TaskState>),
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
    ///
    /// It stays whole because it is the one place where a task's store is
    /// made: the WASI context, the resource table, the limiter, the epoch
    /// callback and the instance's deadline are set up together, in the
    /// order wasmtime needs them, and a reader checks the sandbox here.
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
            limiter: Limiter::new(rt.config.memory_limit, rt.memory.clone()),
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

#[cfg(test)]
mod tests {
    use super::*;

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
            info("n", "1", &["a"; 65]),
        ] {
            assert!(matches!(PluginInfo::validate(bad), Err(LoadError::InvalidInfo(_))));
        }
    }
}
