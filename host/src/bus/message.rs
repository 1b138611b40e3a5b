//! What travels on the bus: tasks, acknowledgements, partial replies and
//! settle decisions.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::topic::Topic;

/// One broadcast task.
#[derive(Debug, Clone)]
pub struct Task {
    /// Its topic.
    pub topic: Topic,
    /// Unique id made by the dispatcher.
    pub request_id: Arc<str>,
    /// The payload bytes.
    pub payload: Vec<u8>,
    /// MIME type of the payload.
    pub content_type: String,
    /// When the dispatch gives up (wall clock, so it means the same on every
    /// node).
    pub deadline: SystemTime,
    /// Nesting depth: 0 for a task dispatched from outside.
    pub depth: u32,
    /// The tasks this one was dispatched from, oldest first (as many as
    /// `depth`).
    pub ancestry: Vec<Ancestor>,
    /// The receiving groups (plugin names) the dispatcher expects to answer
    /// (empty: unknown). The answer of the last of them closes the interest
    /// window in the ledger, sparing the dispatcher a round trip. A group
    /// not listed (its node's registration was not seen yet, or changed
    /// since) answers without being counted, so it can never close the
    /// window early.
    pub expected: Vec<String>,
    /// Distributed mode, a task received: who signed it, as the receiver
    /// checked. `None` in-process and for a task being dispatched.
    pub signed: Option<Arc<Signed>>,
    /// A sub-task being dispatched from a task that came over the network:
    /// the key of the root task's dispatcher, which alone settles the
    /// transaction (`None`: the dispatching node is the root).
    pub root: Option<anocast_wire::PublicKey>,
}

/// Who signed a task received over the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The dispatching node's id.
    pub dispatcher: String,
    /// Its key, trusted by the receiver to dispatch.
    pub key: anocast_wire::PublicKey,
    /// The key of the root task's dispatcher: the only one whose settle
    /// decision applies to what the task stages.
    pub root: anocast_wire::PublicKey,
    /// The task's digest, which its replies and declarations bind.
    pub digest: [u8; 32],
}

impl Task {
    /// Time left before the deadline (zero once it has passed).
    pub fn remaining(&self) -> Duration {
        self.deadline.duration_since(SystemTime::now()).unwrap_or_default()
    }

    /// How many answers close the window, for an answer of `group`: the
    /// number of expected groups when `group` is one of them, else 0 (not
    /// counted).
    pub fn expected_count(&self, group: &str) -> u32 {
        if self.expected.iter().any(|g| g == group) { self.expected.len() as u32 } else { 0 }
    }

    /// The digest replies and declarations bind (zeros in-process, where
    /// nothing is signed).
    pub fn digest(&self) -> [u8; 32] {
        self.signed.as_ref().map_or([0; 32], |s| s.digest)
    }

    /// The key whose settle decision applies to what this task stages
    /// (`None` in-process).
    pub fn settler(&self) -> Option<anocast_wire::PublicKey> {
        self.signed.as_ref().map(|s| s.root)
    }

    /// The name of the task's interest list: `{topic}-{request-id}`.
    pub fn interest_key(&self) -> String {
        format!("{}-{}", self.topic, self.request_id)
    }
}

/// A task that another descends from (nested dispatch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ancestor {
    /// Its topic.
    pub topic: Topic,
    /// Its request id.
    pub request_id: Arc<str>,
}

/// A worker as a dispatch sees it: a plugin on a node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId {
    /// The node's id.
    pub node: String,
    /// The plugin's name.
    pub plugin: String,
    /// The plugin's version.
    pub version: String,
}

impl WorkerId {
    /// Reads `node/plugin@version`.
    pub fn parse(text: &str) -> Option<Self> {
        let (node, rest) = text.split_once('/')?;
        let (plugin, version) = rest.split_once('@')?;
        if node.is_empty() || plugin.is_empty() || version.is_empty() {
            return None;
        }
        Some(WorkerId { node: node.into(), plugin: plugin.into(), version: version.into() })
    }
}

impl WorkerId {
    /// The worker as it signs: with its node's public key and the digest of
    /// its plugin's file.
    pub fn signing(&self, key: anocast_wire::PublicKey, digest: [u8; 32]) -> anocast_wire::Worker {
        anocast_wire::Worker {
            node: self.node.clone(),
            plugin: self.plugin.clone(),
            version: self.version.clone(),
            key,
            digest,
        }
    }
}

impl From<&anocast_wire::Worker> for WorkerId {
    fn from(worker: &anocast_wire::Worker) -> Self {
        WorkerId { node: worker.node.clone(), plugin: worker.plugin.clone(), version: worker.version.clone() }
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.node, self.plugin, self.version)
    }
}

pub use anocast_wire::Interest;

/// Longest deadline a dispatch may ask for. A node refuses a task whose
/// deadline lies further ahead (with a minute's allowance for clocks).
pub const MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

/// One worker's reply: ok with payload bytes, or an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    /// Who replied.
    pub worker: WorkerId,
    /// The payload, or why there is none.
    pub result: Result<Vec<u8>, String>,
    /// The worker, or a sub-task it dispatched, staged writes that await
    /// a settle decision.
    pub staged: bool,
}

/// A message from a worker to the dispatcher.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Every receiving worker acknowledges the task once.
    Ack {
        /// Who acknowledges.
        worker: WorkerId,
        /// Its answer.
        interest: Interest,
        /// When this answer was the last expected one, it closed the
        /// interest window: the workers that had declared by then.
        closed: Option<Vec<String>>,
    },
    /// A declared worker's result.
    Partial(Partial),
}

/// What a dispatcher decided for a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Apply the staged writes.
    Commit,
    /// Drop them.
    Abort,
}

impl Decision {
    /// `commit` or `abort`, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Commit => "commit",
            Decision::Abort => "abort",
        }
    }

    /// Reads `commit` or `abort`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "commit" => Some(Decision::Commit),
            "abort" => Some(Decision::Abort),
            _ => None,
        }
    }
}
