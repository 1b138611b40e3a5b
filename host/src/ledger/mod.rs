//! The ledger: the shared interest lists `{topic}-{request-id}`.
//!
//! [`Ledger`] is the second seam between embedded and distributed mode. Its
//! contract, which every implementation keeps atomically per key:
//!
//! - [`open`](Ledger::open) starts a dispatch's list, with the interest
//!   window open;
//! - [`declare`](Ledger::declare) pushes a worker's identity, and is refused
//!   unless the window is open; [`decline`](Ledger::decline) counts a
//!   receiver that is not interested. When the task says how many receivers
//!   to expect, the answer that makes the count closes the window;
//! - [`settle`](Ledger::settle) removes that worker's entry and returns how
//!   many remain (an entry is the worker id, alone in embedded mode, or
//!   followed by a space and its signature in distributed mode);
//! - [`close`](Ledger::close) closes the window and returns the workers still
//!   on the list: from then on nobody can join;
//! - [`finish`](Ledger::finish) forgets the list, closing the window if it
//!   is still open; [`forget`](Ledger::forget) does the same when the
//!   ledger has said the window is closed (cheaper in Redis), and
//!   [`forget_later`](Ledger::forget_later) queues that for the background
//!   (Redis forgets queued lists in batches, one request for many).
//!
//! [`MemoryLedger`] is the in-process implementation used in embedded mode,
//! [`RedisLedger`] the one of distributed mode. [`Registry`] is the other
//! thing distributed mode keeps in Redis: which nodes are alive and which
//! plugins they serve.

mod memory;
mod redis;
mod registry;

use std::time::Duration;

use async_trait::async_trait;

pub(crate) use memory::MemoryLedger;
pub use redis::{RedisLedger, connect as connect_redis};
pub use registry::{EntryTrust, Liveness, NodeInfo, PluginEntry};
pub(crate) use registry::{RedisRegistry, Registry};

/// Every Lua script run in Redis, by the name `docs/protocol.md` gives it.
#[cfg(test)]
pub(crate) const SCRIPTS: [(&str, &str); 8] = [
    ("declare", redis::DECLARE),
    ("decline", redis::DECLINE),
    ("settle", redis::SETTLE),
    ("close", redis::CLOSE),
    ("finish", redis::FINISH),
    ("heartbeat", registry::HEARTBEAT),
    ("live", registry::LIVE),
    ("leave", registry::LEAVE),
];

pub use crate::error::{ErrorKind, LedgerError};

/// How long an interest list outlives its task's deadline in the ledger,
/// so that a dispatcher or node that vanishes leaves nothing for long (the
/// dispatcher and the nodes both set TTLs from it).
pub const LIST_TTL_MARGIN: Duration = Duration::from_secs(30);

/// What a declaration came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declaration {
    /// Whether the worker is on the list (and may run).
    pub accepted: bool,
    /// When this was the last expected answer: the window is now closed and
    /// these workers had declared.
    pub closed: Option<Vec<String>>,
}

/// The shared interest lists.
#[async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// Starts the list `key` with its interest window open. `ttl` bounds how
    /// long the list may outlive a dispatcher that vanished.
    async fn open(&self, key: &str, ttl: Duration) -> Result<(), LedgerError>;

    /// Pushes `worker` onto the list, unless the window is closed or the
    /// dispatch is over (then the worker must not run). `ttl` bounds how
    /// long the list may live (past the task's deadline). With `expected`
    /// receivers (0: unknown), the answer that makes the count closes the
    /// window in the same atomic step.
    async fn declare(&self, key: &str, worker: &str, ttl: Duration, expected: u32) -> Result<Declaration, LedgerError>;

    /// Counts a receiver's "not interested" towards `expected`; returns the
    /// declared workers when this answer closed the window.
    async fn decline(&self, key: &str, ttl: Duration, expected: u32) -> Result<Option<Vec<String>>, LedgerError>;

    /// Removes `worker`'s entry; returns the number of entries left.
    async fn settle(&self, key: &str, worker: &str) -> Result<usize, LedgerError>;

    /// Closes the interest window; returns the workers still on the list.
    /// The closed state lasts at least `ttl`.
    async fn close(&self, key: &str, ttl: Duration) -> Result<Vec<String>, LedgerError>;

    /// Forgets the list; declarations stay refused for `ttl`.
    async fn finish(&self, key: &str, ttl: Duration) -> Result<(), LedgerError>;

    /// Forgets the list of a dispatch whose window the ledger closed (a
    /// `close`, or the answer that completed the expected count, returned
    /// its entries): declarations stay refused as long as that closing
    /// said.
    async fn forget(&self, key: &str) -> Result<(), LedgerError>;

    /// Does what [`forget`](Ledger::forget) does, in the background, without
    /// waiting: a failure is logged, and the list then lives out its
    /// time-to-live. Lists may be forgotten together.
    fn forget_later(&self, key: String);

    /// Whether calls complete in-process, without I/O: the dispatcher then
    /// makes them inline rather than in the background.
    fn in_process(&self) -> bool {
        false
    }
}
