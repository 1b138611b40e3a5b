//! One task's instance of a plugin: calling its exports under the task's
//! deadline, telling what went wrong ([`CallError`]), and handing a
//! stateless plugin's instance back to its warm pool when it ends cleanly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::bindings::{self, WitPluginInfo, WitTask};
use super::engine::first_line;
use super::imports::TaskState;
use super::limits::DeadlineExceeded;
use super::staged::Op;
use super::warm::{Live, WarmPool};

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
    /// The guest tried to grow its memory while the node's instances held
    /// all of the node's memory budget.
    #[error("could not grow its memory: the node's instance memory budget of {} MiB is spent by running instances", .0 >> 20)]
    MemoryBudget(u64),
    /// The guest trapped (a panic, `unreachable`, stack overflow, ...).
    #[error("trapped: {0}")]
    Trap(String),
    /// No instance slot became free before the deadline.
    #[error("no instance slot became free before the deadline (max {0} instances)")]
    Busy(u32),
}

/// An instance's exports, by version of the contract.
pub(super) enum Exports {
    V2(bindings::Worker),
    V1(bindings::v1::Worker),
}

/// Most resources (streams, pollables, ...) a guest may hold at once.
pub(super) const MAX_GUEST_RESOURCES: usize = 10_000;

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
    pub(super) fn new(live: Live, deadline: Instant, limit: Duration, warm: Option<Arc<WarmPool>>) -> Self {
        Instance { live: Some(live), deadline, limit, warm, in_call: false, poisoned: false }
    }

    pub(super) fn live(&mut self) -> &mut Live {
        self.live.as_mut().expect("an instance is live until dropped")
    }

    pub(super) fn state(&self) -> &TaskState {
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
    pub(super) fn outcome_of<R>(
        &mut self,
        result: Result<wasmtime::Result<R>, tokio::time::error::Elapsed>,
    ) -> Result<R, CallError> {
        self.in_call = false;
        let outcome = self.error_of(result);
        self.poisoned |= outcome.is_err() || self.state().limiter.exceeded() || self.state().limiter.budget_spent();
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
        if state.limiter.budget_spent() {
            return Err(CallError::MemoryBudget(state.limiter.budget()));
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
pub(super) fn guard<F: std::future::Future>(deadline: Instant, call: F) -> tokio::time::Timeout<F> {
    tokio::time::timeout_at(deadline.into(), call)
}

fn not_initialised() -> CallError {
    CallError::Trap("the instance was not initialised".into())
}
