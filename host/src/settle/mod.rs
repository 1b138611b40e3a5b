//! Tentative side effects: what workers stage in the host's key-value
//! [`Store`], and how it is committed or aborted after the outcome: side
//! effects stay tentative until a follow-up message decides them, and
//! expire when none comes.
//!
//! - A worker's `handle` stages writes ([`Tentative`](crate::runtime::Tentative), bounded per task)
//!   for its task's *transaction*: the request id of the dispatch from
//!   outside that the task descends from (its own at depth 0). Sub-tasks'
//!   writes thus stand or fall with the dispatch that started it all.
//! - Once `handle` returns, and before its partial leaves, the node keeps
//!   the writes in its [`Staging`] until the transaction is settled or its
//!   writes expire ([`SettleConfig::expiry`] after the task's deadline).
//! - The dispatcher of a dispatch from outside decides by its
//!   [`SettlePolicy`] (commit when every partial is ok, by default) and
//!   publishes the decision on the bus; every node settles what it staged
//!   for that transaction: commit applies the writes to the store, abort
//!   drops them; then each plugin's `settle` hook is called.
//! - A transaction is settled at most once per node: a duplicate decision
//!   is counted and ignored; a commit that arrives after the writes expired
//!   is reported (logged, counted) and not applied.
//!
//! Staged writes live in the node's memory: a node that dies before the
//! decision loses them, which is the same as an abort.

mod policy;
mod staging;
mod store;

pub use policy::SettlePolicy;
pub use staging::{SettleConfig, SettleHook, SettleStats, Staging};
pub use store::{MemoryStore, RedisStore, Store, StoreError, redis_key};
