//! Tentative side effects: what workers stage in the host's key-value
//! [`Store`], and how it is committed or aborted after the outcome (the
//! seeds' "keep side effects in an unsure state ... a supplementary
//! message ... side effects not applied expire").
//!
//! - A worker's `handle` stages writes ([`Tentative`], bounded per task)
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

mod store;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use store::{MemoryStore, RedisStore, Store, StoreError, redis_key};

use crate::runtime::Plugin;

/// Longest key a worker may stage, in bytes.
pub const MAX_KEY: usize = 256;
/// Largest value a worker may stage, in bytes.
pub const MAX_VALUE: usize = 1 << 20;
/// Most writes one task may stage.
pub const MAX_OPS: usize = 1000;
/// Most bytes (keys and values) one task may stage.
pub const MAX_TASK_BYTES: usize = 8 << 20;

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

/// How a dispatcher decides, once a dispatch from outside has its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SettlePolicy {
    /// Commit when the outcome is complete and every partial (at least one)
    /// is ok; abort otherwise. The default.
    #[default]
    AllOk,
    /// Always commit.
    Commit,
    /// Always abort (a dry run).
    Abort,
    /// Decide nothing: the caller settles later
    /// ([`crate::Dispatcher::settle`]), or the writes expire.
    Manual,
}

impl SettlePolicy {
    /// Reads `all-ok`, `commit`, `abort` or `manual`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "all-ok" => Ok(SettlePolicy::AllOk),
            "commit" => Ok(SettlePolicy::Commit),
            "abort" => Ok(SettlePolicy::Abort),
            "manual" => Ok(SettlePolicy::Manual),
            other => Err(format!("unknown settle policy {other:?}: use all-ok, commit, abort or manual")),
        }
    }

    /// The policy's name, as [`SettlePolicy::parse`] reads it.
    pub fn as_str(self) -> &'static str {
        match self {
            SettlePolicy::AllOk => "all-ok",
            SettlePolicy::Commit => "commit",
            SettlePolicy::Abort => "abort",
            SettlePolicy::Manual => "manual",
        }
    }

    /// The decision for an outcome that is complete (`complete`) with these
    /// partials' success (`oks`).
    pub fn decide(self, complete: bool, oks: impl IntoIterator<Item = bool>) -> Option<Decision> {
        match self {
            SettlePolicy::AllOk => {
                let mut oks = oks.into_iter().peekable();
                let all_ok = oks.peek().is_some() && oks.all(|ok| ok);
                Some(if complete && all_ok { Decision::Commit } else { Decision::Abort })
            }
            SettlePolicy::Commit => Some(Decision::Commit),
            SettlePolicy::Abort => Some(Decision::Abort),
            SettlePolicy::Manual => None,
        }
    }
}

/// Settings of a node's staging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettleConfig {
    /// How long staged writes wait for a decision after their task's
    /// deadline before they are dropped (default 30 s).
    pub expiry: Duration,
    /// Most bytes staged on the node at once, across tasks (default 64 MiB);
    /// a task whose writes do not fit fails.
    pub max_bytes: usize,
    /// Distributed mode: how long a committed value lives in Redis after its
    /// last write (default 7 days; Redis holds coordination state, not
    /// records).
    pub retention: Duration,
}

impl Default for SettleConfig {
    fn default() -> Self {
        SettleConfig {
            expiry: Duration::from_secs(30),
            max_bytes: 64 << 20,
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// One staged write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set the key to the value.
    Set(String, Vec<u8>),
    /// Remove the key.
    Delete(String),
}

impl Op {
    fn bytes(&self) -> usize {
        match self {
            Op::Set(key, value) => key.len() + value.len(),
            Op::Delete(key) => key.len(),
        }
    }
}

/// The writes one task's `handle` stages, within the per-task limits.
#[derive(Debug, Default)]
pub struct Tentative {
    ops: Vec<Op>,
    bytes: usize,
}

impl Tentative {
    /// Stages `op`, or says why not.
    pub fn stage(&mut self, op: Op) -> Result<(), String> {
        let key = match &op {
            Op::Set(key, _) | Op::Delete(key) => key,
        };
        if key.is_empty() || key.len() > MAX_KEY {
            return Err(format!("a key must be 1-{MAX_KEY} bytes"));
        }
        if let Op::Set(_, value) = &op
            && value.len() > MAX_VALUE
        {
            return Err(format!("a value may be at most {} MiB", MAX_VALUE >> 20));
        }
        if self.ops.len() >= MAX_OPS {
            return Err(format!("a task may stage at most {MAX_OPS} writes"));
        }
        if self.bytes + op.bytes() > MAX_TASK_BYTES {
            return Err(format!("a task may stage at most {} MiB", MAX_TASK_BYTES >> 20));
        }
        self.bytes += op.bytes();
        self.ops.push(op);
        Ok(())
    }

    /// The writes staged so far, leaving none.
    pub fn take(&mut self) -> Vec<Op> {
        self.bytes = 0;
        std::mem::take(&mut self.ops)
    }
}

/// What happened to a node's transactions since it started.
#[derive(Debug, Default, serde::Serialize)]
pub struct SettleStats {
    /// Tasks whose writes were kept for a decision.
    pub staged: AtomicU64,
    /// Tasks whose writes were committed.
    pub committed: AtomicU64,
    /// Tasks whose writes were dropped by an abort.
    pub aborted: AtomicU64,
    /// Tasks whose writes expired without a decision.
    pub expired: AtomicU64,
    /// Commits that arrived after the writes had expired (not applied).
    pub late_commits: AtomicU64,
    /// Decisions received again for a transaction already settled here.
    pub duplicates: AtomicU64,
    /// Tasks whose writes could not be staged (the node's limit) or
    /// applied (the store failed).
    pub failed: AtomicU64,
    /// `settle` hooks called.
    pub hooks: AtomicU64,
    /// `settle` hooks that failed (trapped, or ran out of time).
    pub hooks_failed: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// One task's staged writes, waiting for the decision.
struct Staged {
    plugin: Arc<Plugin>,
    label: Arc<str>,
    request_id: Arc<str>,
    ops: Vec<Op>,
    bytes: usize,
    expires: Instant,
}

/// What became of a transaction, remembered for a while to tell
/// duplicates and late commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Past {
    /// Its writes here were committed or dropped.
    Settled,
    /// Its writes here expired.
    Expired,
    /// Decided while nothing was staged here for it.
    Decided,
}

/// How long a settled or expired transaction is remembered.
const REMEMBER: Duration = Duration::from_secs(600);
/// Most transactions remembered.
const MAX_REMEMBERED: usize = 100_000;

#[derive(Default)]
struct Book {
    pending: HashMap<Arc<str>, Vec<Staged>>,
    past: HashMap<Arc<str>, (Past, Instant)>,
    /// `past`'s transactions in the order they were remembered, to forget
    /// the oldest first.
    past_order: VecDeque<(Arc<str>, Instant)>,
    bytes: usize,
}

impl Book {
    /// Remembers what became of `transaction`, forgetting the oldest beyond
    /// the limit.
    fn remember(&mut self, transaction: Arc<str>, past: Past) {
        let now = Instant::now();
        self.past.insert(transaction.clone(), (past, now));
        self.past_order.push_back((transaction, now));
        while self.past_order.len() > MAX_REMEMBERED {
            self.forget_oldest();
        }
    }

    /// Forgets what was remembered longer than [`REMEMBER`] ago.
    fn forget_old(&mut self, now: Instant) {
        while self.past_order.front().is_some_and(|(_, at)| now.duration_since(*at) >= REMEMBER) {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((transaction, at)) = self.past_order.pop_front()
            // Unless it was remembered again since.
            && self.past.get(&transaction).is_some_and(|(_, when)| *when == at)
        {
            self.past.remove(&transaction);
        }
    }

    /// What became of `transaction`, if it is remembered.
    fn past(&self, transaction: &str) -> Option<Past> {
        self.past.get(transaction).map(|(past, _)| *past)
    }
}

/// A node's staged writes, by transaction.
pub struct Staging {
    config: SettleConfig,
    store: Arc<dyn Store>,
    book: parking_lot::Mutex<Book>,
    stats: SettleStats,
}

impl Staging {
    /// Staging over `store`. Call [`Staging::expire`] now and then (the
    /// node does) to expire writes.
    pub fn new(store: Arc<dyn Store>, config: SettleConfig) -> Self {
        Staging { config, store, book: Default::default(), stats: SettleStats::default() }
    }

    /// The store committed writes go to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// What happened since the node started.
    pub fn stats(&self) -> &SettleStats {
        &self.stats
    }

    /// How often [`Staging::expire`] should run: a quarter of the expiry,
    /// between 10 ms and 1 s.
    pub fn sweep_interval(&self) -> Duration {
        (self.config.expiry / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    /// Keeps the writes `plugin`'s task `request_id` staged for
    /// `transaction`, until the decision or `deadline + expiry`. Fails when
    /// the node's limit would be passed.
    pub fn keep(
        &self,
        transaction: &Arc<str>,
        plugin: &Arc<Plugin>,
        label: &Arc<str>,
        request_id: &Arc<str>,
        deadline: Instant,
        ops: Vec<Op>,
    ) -> Result<(), String> {
        let bytes: usize = ops.iter().map(Op::bytes).sum();
        let mut book = self.book.lock();
        if book.bytes + bytes > self.config.max_bytes {
            drop(book);
            bump(&self.stats.failed);
            return Err(format!("the node's staging is full ({} MiB)", self.config.max_bytes >> 20));
        }
        book.bytes += bytes;
        // Writes that come after their transaction was settled (a worker
        // that did not reply in time) can never be decided on: they expire
        // at the next sweep.
        let expires = match book.past(transaction) {
            Some(_) => Instant::now(),
            None => deadline + self.config.expiry,
        };
        book.pending.entry(transaction.clone()).or_default().push(Staged {
            plugin: plugin.clone(),
            label: label.clone(),
            request_id: request_id.clone(),
            ops,
            bytes,
            expires,
        });
        drop(book);
        bump(&self.stats.staged);
        Ok(())
    }

    /// Applies `decision` to what was staged for `transaction`, once; then
    /// calls each staging plugin's `settle` hook. What happened is counted
    /// in [`Staging::stats`].
    #[tracing::instrument(level = "debug", skip(self), fields(decision = decision.as_str()))]
    pub async fn settle(&self, transaction: &str, decision: Decision) {
        let entries = {
            let mut book = self.book.lock();
            match book.pending.remove(transaction) {
                Some(entries) => {
                    book.bytes -= entries.iter().map(|e| e.bytes).sum::<usize>();
                    book.remember(Arc::from(transaction), Past::Settled);
                    entries
                }
                None => {
                    let past = book.past(transaction);
                    if past.is_none() {
                        // Writes may still come (a worker that missed the
                        // deadline): remembered, they expire at once.
                        book.remember(Arc::from(transaction), Past::Decided);
                    }
                    drop(book);
                    match past {
                        Some(Past::Settled) => {
                            bump(&self.stats.duplicates);
                            tracing::info!(transaction, "ignored a duplicate decision");
                        }
                        Some(Past::Expired) if decision == Decision::Commit => {
                            bump(&self.stats.late_commits);
                            tracing::warn!(
                                transaction,
                                "a commit arrived after the staged writes had expired; they were not applied"
                            );
                        }
                        // Nothing was staged here for it.
                        Some(Past::Expired | Past::Decided) | None => {}
                    }
                    return;
                }
            }
        };
        for entry in entries {
            let committed = match decision {
                Decision::Commit => match self.store.apply(&entry.plugin.info.name, &entry.ops).await {
                    Ok(()) => {
                        bump(&self.stats.committed);
                        true
                    }
                    Err(err) => {
                        bump(&self.stats.failed);
                        tracing::error!(%err, worker = &*entry.label, "could not apply committed writes");
                        false
                    }
                },
                Decision::Abort => {
                    bump(&self.stats.aborted);
                    false
                }
            };
            self.call_hook(entry, committed).await;
        }
    }

    /// Drops the writes whose time has passed (calling their hooks with
    /// `committed = false`) and forgets old transactions.
    pub async fn expire(&self) {
        let now = Instant::now();
        let mut expired = Vec::new();
        {
            let mut book = self.book.lock();
            let due: Vec<Arc<str>> = book
                .pending
                .iter()
                .filter(|(_, entries)| entries.iter().all(|e| e.expires <= now))
                .map(|(t, _)| t.clone())
                .collect();
            for transaction in due {
                if let Some(entries) = book.pending.remove(&transaction) {
                    book.bytes -= entries.iter().map(|e| e.bytes).sum::<usize>();
                    book.remember(transaction, Past::Expired);
                    expired.extend(entries);
                }
            }
            book.forget_old(now);
        }
        for entry in expired {
            bump(&self.stats.expired);
            tracing::info!(worker = &*entry.label, request_id = &*entry.request_id, "staged writes expired");
            self.call_hook(entry, false).await;
        }
    }

    /// Calls the `settle` hook of the plugin that staged `entry`.
    async fn call_hook(&self, entry: Staged, committed: bool) {
        let deadline = Instant::now() + HOOK_TIMEOUT;
        let label = entry.label.clone();
        let result = match entry.plugin.instantiate(label, entry.request_id.clone(), deadline, None).await {
            Ok(mut instance) => instance.settle(&entry.request_id, committed).await,
            Err(err) => Err(err),
        };
        match result {
            Ok(()) => bump(&self.stats.hooks),
            Err(err) => {
                bump(&self.stats.hooks_failed);
                tracing::warn!(%err, worker = &*entry.label, request_id = &*entry.request_id, "settle() failed");
            }
        }
    }
}

/// Longest a `settle` hook may run.
const HOOK_TIMEOUT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_commits_only_complete_all_ok_outcomes() {
        let p = SettlePolicy::AllOk;
        assert_eq!(p.decide(true, [true, true]), Some(Decision::Commit));
        assert_eq!(p.decide(true, [true, false]), Some(Decision::Abort));
        assert_eq!(p.decide(false, [true]), Some(Decision::Abort));
        assert_eq!(p.decide(true, []), Some(Decision::Abort), "no_interest commits nothing");
        assert_eq!(SettlePolicy::Commit.decide(false, [false]), Some(Decision::Commit));
        assert_eq!(SettlePolicy::Abort.decide(true, [true]), Some(Decision::Abort));
        assert_eq!(SettlePolicy::Manual.decide(true, [true]), None);
        assert_eq!(SettlePolicy::parse("all-ok"), Ok(SettlePolicy::AllOk));
        assert!(SettlePolicy::parse("sometimes").is_err());
    }

    #[test]
    fn a_task_stages_within_its_limits() {
        let mut t = Tentative::default();
        assert!(t.stage(Op::Set(String::new(), vec![])).is_err(), "empty key");
        assert!(t.stage(Op::Set("k".repeat(MAX_KEY + 1), vec![])).is_err(), "long key");
        assert!(t.stage(Op::Set("k".into(), vec![0; MAX_VALUE + 1])).is_err(), "big value");
        for i in 0..MAX_OPS {
            t.stage(Op::Delete(format!("k{i}"))).expect("within the limit");
        }
        assert!(t.stage(Op::Delete("one-more".into())).is_err(), "too many writes");
        assert_eq!(t.take().len(), MAX_OPS);
        for _ in 0..8 {
            t.stage(Op::Set("k".into(), vec![0; MAX_VALUE - 1])).expect("8 MiB in all");
        }
        assert!(t.stage(Op::Set("k".into(), vec![0; 16])).is_err(), "too many bytes");
    }
}
