//! The host side of a task's imports: what a store holds for one task
//! ([`TaskState`]), WASI's view of it, and the `anocast:worker` imports
//! (`log`, `dispatch`, `store`), which reach the node's services only
//! through [`TaskServices`].

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings;
use super::limits::Limiter;
use super::services::{SubOutcome, SubStatus, SubTask, SubTaskError, TaskServices};
use super::staged::{Op, Tentative};
use super::stdio;

/// What a task's instance may use beyond logging.
pub type Services = Arc<dyn TaskServices>;

/// What a store holds for one task.
pub struct TaskState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limiter: Limiter,
    pub(super) worker: Arc<str>,
    pub(super) request_id: Arc<str>,
    pub(super) stderr_tail: Arc<Mutex<String>>,
    /// Bytes of stdout and stderr logged for the current task (capped).
    pub(super) logged: Arc<AtomicUsize>,
    /// Nested dispatch and the store, when the instance runs a task.
    pub(super) services: Option<Services>,
    /// The plugin's name: its namespace in the store.
    pub(super) plugin: String,
    /// What `handle` staged.
    pub(super) tentative: Tentative,
    /// Whether a sub-task `handle` dispatched had writes staged.
    pub(super) nested_staged: bool,
    /// Whether `handle` was called (sub-tasks may be dispatched only then).
    pub(super) handling: bool,
    /// When the instance is stopped.
    pub(super) deadline: Instant,
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
        let Some(services) = self.services.clone().filter(|_| self.handling) else {
            return Err(bindings::WitDispatchError::Invalid("sub-tasks can be dispatched only from handle()".into()));
        };
        let sub = SubTask {
            topic,
            payload,
            grace: options.grace_ms.map(Duration::from_millis),
            timeout: options.timeout_ms.map(Duration::from_millis),
            content_type: options.content_type,
        };
        tracing::debug!(
            worker = &*self.worker,
            request_id = &*self.request_id,
            topic = sub.topic,
            "dispatching a sub-task"
        );
        match services.dispatch(self.deadline, sub).await {
            Ok(outcome) => {
                // Writes staged down there are settled with this task's
                // transaction; its partial will say so.
                self.nested_staged |= outcome.staged;
                Ok(wit_outcome(outcome))
            }
            Err(err) => Err(wit_sub_error(err)),
        }
    }
}

impl bindings::StoreHost for TaskState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, String> {
        let Some(services) = &self.services else {
            return Err("the store is not available outside a task".into());
        };
        let services = services.clone();
        services.get(&self.plugin, &key).await.inspect_err(|err| {
            tracing::warn!(%err, worker = &*self.worker, "store.get failed");
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
    pub(super) fn forget_task(&mut self) {
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

fn wit_outcome(outcome: SubOutcome) -> bindings::WitOutcome {
    bindings::WitOutcome {
        request_id: outcome.request_id,
        status: match outcome.status {
            SubStatus::Complete => bindings::WitStatus::Complete,
            SubStatus::NoInterest => bindings::WitStatus::NoInterest,
            SubStatus::Incomplete => bindings::WitStatus::Incomplete,
            SubStatus::TimedOut => bindings::WitStatus::TimedOut,
        },
        partials: outcome
            .partials
            .into_iter()
            .map(|p| bindings::WitPartial { worker: p.worker, result: p.result })
            .collect(),
        missing: outcome.missing,
    }
}

fn wit_sub_error(err: SubTaskError) -> bindings::WitDispatchError {
    use bindings::WitDispatchError as E;
    match err {
        SubTaskError::TooDeep(limit) => E::TooDeep(limit),
        SubTaskError::Cycle(chain) => E::Cycle(chain),
        SubTaskError::NoTimeLeft => E::NoTimeLeft,
        SubTaskError::Invalid(why) => E::Invalid(why),
        SubTaskError::Failed(why) => E::Failed(why),
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
