//! Nested dispatch: a worker dispatching a sub-task from inside `handle`,
//! while its own task stays declared: every worker can be a dispatcher
//! too.
//!
//! A sub-task is an ordinary dispatch, one level deeper, whose ancestry is
//! its parent's with the parent appended. Before anything is broadcast the
//! dispatcher checks, and refuses at once with a [`NestError`]:
//!
//! - cycles: the sub-task's topic must not be the parent's or an ancestor's;
//! - the depth: at most [`NestingConfig::max_depth`] (default 8);
//! - time: the sub-task's deadline is the parent's (or, if sooner, the
//!   moment the parent's instance is stopped) minus
//!   [`NestingConfig::margin`], so that the parent has time to reply; it
//!   must leave at least a millisecond.
//!
//! If the parent's instance is stopped (its deadline), the sub-dispatch is
//! dropped with it: the child's interest list is forgotten and its late
//! replies are discarded.

use std::time::{Duration, Instant};

use super::{DispatchError, DispatchOptions, Dispatcher, Outcome};
use crate::bus::{Ancestor, Task};
use crate::topic::Topic;

/// Limits on nesting. Every dispatching node applies its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NestingConfig {
    /// Deepest a sub-task may be (a task from outside is at depth 0;
    /// default 8).
    pub max_depth: u32,
    /// How much sooner than its parent a sub-task's deadline falls, to leave
    /// the parent time to reply (default 50 ms).
    pub margin: Duration,
}

impl Default for NestingConfig {
    fn default() -> Self {
        NestingConfig { max_depth: 8, margin: Duration::from_millis(50) }
    }
}

/// Settings a worker gives a sub-dispatch; `None` takes the default.
#[derive(Debug, Clone, Default)]
pub struct SubOptions {
    /// The interest window (default 500 ms, never past the deadline).
    pub grace: Option<Duration>,
    /// The deadline (default and maximum: the parent's, minus the margin).
    pub timeout: Option<Duration>,
    /// MIME type of the payload (default `application/octet-stream`).
    pub content_type: Option<String>,
}

/// Why a sub-dispatch was refused. The worker gets it back at once, as a
/// value it can handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NestError {
    /// Past the depth limit.
    #[error("the sub-task would be deeper than the limit of {0} levels")]
    TooDeep(u32),
    /// The topic is already in the chain: the chain, ending with it.
    #[error("dispatching {} would close a cycle: {}", .0.last().map_or("", String::as_str), .0.join(" -> "))]
    Cycle(Vec<String>),
    /// Less than a millisecond left once the margin is kept.
    #[error("no time left for a sub-task before the task's deadline (less than the margin of {0:?})")]
    NoTimeLeft(Duration),
    /// The topic or options are invalid.
    #[error("{0}")]
    Invalid(String),
    /// The bus or the ledger failed.
    #[error("{0}")]
    Failed(String),
}

/// Longest content type a worker may give a sub-task.
const MAX_CONTENT_TYPE: usize = 128;

/// What a node's workers dispatch sub-tasks with.
pub struct Nesting {
    dispatcher: Dispatcher,
    config: NestingConfig,
}

impl Nesting {
    /// Sub-tasks go through `dispatcher`, within `config`'s limits.
    pub fn new(dispatcher: Dispatcher, config: NestingConfig) -> Self {
        Nesting { dispatcher, config }
    }

    /// Dispatches a sub-task of `parent`, whose instance is stopped at
    /// `not_after`, and waits for its outcome.
    #[tracing::instrument(level = "debug", skip_all, fields(parent = &*parent.request_id, topic))]
    pub async fn dispatch(
        &self,
        parent: &Task,
        not_after: Instant,
        topic: &str,
        payload: Vec<u8>,
        options: SubOptions,
    ) -> Result<Outcome, NestError> {
        let topic = Topic::parse(topic).map_err(|e| NestError::Invalid(e.to_string()))?;
        let mut ancestry = parent.ancestry.clone();
        ancestry.push(Ancestor { topic: parent.topic.clone(), request_id: parent.request_id.clone() });
        if ancestry.iter().any(|a| a.topic == topic) {
            let chain = ancestry.iter().map(|a| a.topic.to_string()).chain([topic.to_string()]).collect();
            return Err(NestError::Cycle(chain));
        }
        if ancestry.len() > self.config.max_depth as usize {
            return Err(NestError::TooDeep(self.config.max_depth));
        }
        let left = parent
            .remaining()
            .min(not_after.saturating_duration_since(Instant::now()))
            .saturating_sub(self.config.margin);
        // Whole milliseconds, as the deadline travels.
        let left = Duration::from_millis(left.as_millis() as u64);
        if left.is_zero() {
            return Err(NestError::NoTimeLeft(self.config.margin));
        }
        let timeout = options.timeout.map_or(left, |t| t.min(left));
        if timeout.is_zero() {
            return Err(NestError::Invalid("the timeout must be at least 1 ms".into()));
        }
        let defaults = DispatchOptions::default();
        let content_type = options.content_type.unwrap_or(defaults.content_type);
        if content_type.is_empty()
            || content_type.len() > MAX_CONTENT_TYPE
            || !content_type.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        {
            return Err(NestError::Invalid(format!(
                "the content type must be 1-{MAX_CONTENT_TYPE} printable ASCII characters"
            )));
        }
        // A sub-task's writes are settled with its root's (`settle` is not
        // consulted below depth 0).
        let options =
            DispatchOptions { grace: options.grace.unwrap_or(defaults.grace), timeout, content_type, ..defaults };
        match self.dispatcher.run(topic, payload, &options, ancestry, parent.settler()).await {
            Ok(outcome) => Ok(outcome),
            Err(DispatchError::InvalidOptions(why) | DispatchError::TooLarge(why)) => Err(NestError::Invalid(why)),
            Err(err) => Err(NestError::Failed(err.to_string())),
        }
    }
}
