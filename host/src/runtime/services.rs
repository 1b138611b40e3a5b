//! What a task's host imports reach beyond its own instance: nested
//! dispatch (`anocast:worker/dispatch`) and reads of committed values
//! (`anocast:worker/store.get`).
//!
//! The runtime owns this contract and knows nothing of how it is met: the
//! node implements [`TaskServices`] for each task it runs, over its
//! dispatcher and its store. A task without services (describing a plugin,
//! calling a `settle` hook) gets an error from those imports.

use std::time::{Duration, Instant};

use async_trait::async_trait;

/// A sub-task a worker asks for from `handle`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubTask {
    /// Its topic, as the guest wrote it (checked by whoever dispatches it).
    pub topic: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// The interest window; `None`: the dispatcher's default.
    pub grace: Option<Duration>,
    /// The deadline; `None`: as long as the parent allows.
    pub timeout: Option<Duration>,
    /// MIME type of the payload; `None`: the dispatcher's default.
    pub content_type: Option<String>,
}

/// How a sub-dispatch ended, as the guest sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubStatus {
    /// Every declared worker replied.
    Complete,
    /// Nobody declared.
    NoInterest,
    /// A declared worker's node was lost.
    Incomplete,
    /// The deadline passed with workers missing.
    TimedOut,
}

/// One worker's reply to a sub-task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubPartial {
    /// `node/plugin@version`.
    pub worker: String,
    /// Its payload, or its error.
    pub result: Result<Vec<u8>, String>,
}

/// The outcome of a sub-task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubOutcome {
    /// The sub-task's request id.
    pub request_id: String,
    /// How it ended.
    pub status: SubStatus,
    /// The replies, one per worker.
    pub partials: Vec<SubPartial>,
    /// Declared workers that did not reply.
    pub missing: Vec<String>,
    /// Whether writes may have been staged for the parent's transaction
    /// down there (a worker said so, or a declared worker did not reply).
    pub staged: bool,
}

/// Why a sub-task was refused or could not be dispatched. The guest gets
/// it back as a value it can handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubTaskError {
    /// Past the depth limit.
    #[error("the sub-task would be deeper than the limit of {0} levels")]
    TooDeep(u32),
    /// The topic is already in the chain: the chain, ending with it.
    #[error("dispatching it would close a cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    /// No time left before the parent's deadline.
    #[error("no time left for a sub-task before the task's deadline")]
    NoTimeLeft,
    /// The topic or options are invalid.
    #[error("{0}")]
    Invalid(String),
    /// The dispatch failed (the bus or the ledger).
    #[error("{0}")]
    Failed(String),
}

/// What one task's host imports reach. Implemented by the node.
#[async_trait]
pub trait TaskServices: Send + Sync + 'static {
    /// Dispatches `sub` on behalf of the task, whose instance is stopped at
    /// `not_after`, and waits for its outcome. The future is polled where
    /// the guest's host call is; dropping it ends the sub-dispatch.
    async fn dispatch(&self, not_after: Instant, sub: SubTask) -> Result<SubOutcome, SubTaskError>;

    /// The committed value of `key` in `plugin`'s namespace.
    async fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, String>;
}
