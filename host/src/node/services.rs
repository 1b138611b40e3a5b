//! What the runtime's contracts reach in a node: a task's host imports
//! ([`TaskServices`]: sub-tasks through the node's [`Nesting`], committed
//! values from its store) and the `settle` hook that staging calls
//! ([`SettleHook`], on a fresh instance of the staging plugin).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use crate::bus::Task;
use crate::dispatch::{NestError, Nesting, Outcome, Status, SubOptions};
use crate::runtime::{Plugin, SubOutcome, SubPartial, SubStatus, SubTask, SubTaskError, TaskServices};
use crate::settle::{SettleHook, Store};

/// One task's link to its node: the task its sub-tasks descend from, how
/// they are dispatched, and the store.
pub(super) struct TaskLink {
    pub(super) nesting: Arc<Nesting>,
    pub(super) task: Arc<Task>,
    pub(super) store: Arc<dyn Store>,
}

#[async_trait]
impl TaskServices for TaskLink {
    async fn dispatch(&self, not_after: Instant, sub: SubTask) -> Result<SubOutcome, SubTaskError> {
        let options = SubOptions { grace: sub.grace, timeout: sub.timeout, content_type: sub.content_type };
        match self.nesting.dispatch(&self.task, not_after, &sub.topic, sub.payload, options).await {
            Ok(outcome) => Ok(sub_outcome(outcome)),
            Err(err) => Err(sub_error(err)),
        }
    }

    async fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.store.get(plugin, key).await.map_err(|err| err.to_string())
    }
}

fn sub_outcome(outcome: Outcome) -> SubOutcome {
    // A sub-task whose workers did not all reply may have staged too.
    let staged = outcome.staged || !outcome.missing.is_empty();
    SubOutcome {
        request_id: outcome.request_id,
        status: match outcome.status {
            Status::Complete => SubStatus::Complete,
            Status::NoInterest => SubStatus::NoInterest,
            // The contract has no word for it yet: some receivers could
            // not answer, as when their node died.
            Status::Incomplete | Status::Overloaded | Status::Unauthorized => SubStatus::Incomplete,
            Status::TimedOut => SubStatus::TimedOut,
        },
        partials: outcome
            .partials
            .into_iter()
            .map(|p| SubPartial { worker: p.worker.to_string(), result: p.result })
            .collect(),
        missing: outcome.missing,
        staged,
    }
}

fn sub_error(err: NestError) -> SubTaskError {
    match err {
        NestError::TooDeep(limit) => SubTaskError::TooDeep(limit),
        NestError::Cycle(chain) => SubTaskError::Cycle(chain),
        NestError::NoTimeLeft(_) => SubTaskError::NoTimeLeft,
        NestError::Invalid(why) => SubTaskError::Invalid(why),
        NestError::Failed(why) => SubTaskError::Failed(why),
    }
}

#[async_trait]
impl SettleHook for Plugin {
    fn namespace(&self) -> &str {
        &self.info.name
    }

    async fn settled(
        &self,
        label: &Arc<str>,
        request_id: &Arc<str>,
        committed: bool,
        deadline: Instant,
    ) -> Result<(), String> {
        let mut instance =
            self.instantiate(label.clone(), request_id.clone(), deadline, None).await.map_err(|e| e.to_string())?;
        instance.settle(request_id, committed).await.map_err(|e| e.to_string())
    }
}
