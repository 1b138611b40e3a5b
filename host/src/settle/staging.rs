//! A node's staging: the writes its workers' tasks staged, kept by
//! transaction until a decision settles them once, or they expire.
//!
//! In distributed mode every staged write remembers who may settle it:
//! the key of its root task's dispatcher, as the task's signature said. A
//! decision signed by any other key changes nothing and is counted.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;

use super::store::Store;
use crate::bus::Decision;
use crate::runtime::Op;
use anocast_wire::PublicKey;

/// What staging calls once a task's writes are settled or expired: in a
/// node, the staging plugin's `settle` export.
#[async_trait]
pub trait SettleHook: Send + Sync + 'static {
    /// The store namespace the writes belong to (the plugin's name).
    fn namespace(&self) -> &str;

    /// Tells the plugin, by `deadline`, whether the writes its task
    /// `request_id` staged were committed.
    async fn settled(
        &self,
        label: &Arc<str>,
        request_id: &Arc<str>,
        committed: bool,
        deadline: std::time::Instant,
    ) -> Result<(), String>;
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
    /// Distributed mode: most bytes staged for the transactions of one
    /// dispatcher (one root key; default 16 MiB, a quarter of
    /// `max_bytes`), so that one dispatcher holding many transactions open
    /// cannot take the node's staging from the others.
    pub max_bytes_per_dispatcher: usize,
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
            max_bytes_per_dispatcher: 16 << 20,
            retention: Duration::from_secs(7 * 24 * 3600),
        }
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
    /// Decisions signed by another key than the root dispatcher's of what
    /// was staged (not applied).
    pub foreign_decisions: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// One task's staged writes, waiting for the decision.
struct Staged {
    /// Who may settle it (`None` in-process).
    settler: Option<PublicKey>,
    hook: Arc<dyn SettleHook>,
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
    /// Decided, by that signer, while nothing was staged here for it.
    Decided(Option<PublicKey>),
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
    /// Bytes staged per root dispatcher (distributed mode).
    by_settler: HashMap<PublicKey, usize>,
}

impl Book {
    /// Forgets the bytes of `entries`, node-wide and per dispatcher.
    fn release(&mut self, entries: &[Staged]) {
        for entry in entries {
            self.bytes -= entry.bytes;
            if let Some(settler) = &entry.settler
                && let Some(held) = self.by_settler.get_mut(settler)
            {
                *held -= entry.bytes;
                if *held == 0 {
                    self.by_settler.remove(settler);
                }
            }
        }
    }

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

    /// Keeps the writes the task `request_id` staged for
    /// `transaction`, until the decision of `settler` (the root
    /// dispatcher's key; `None` in-process) or `deadline + expiry`. Fails
    /// when the node's limit would be passed.
    #[allow(clippy::too_many_arguments)]
    pub fn keep(
        &self,
        transaction: &Arc<str>,
        settler: Option<PublicKey>,
        hook: &Arc<dyn SettleHook>,
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
        if let Some(settler) = &settler {
            let held = book.by_settler.get(settler).copied().unwrap_or(0);
            if held + bytes > self.config.max_bytes_per_dispatcher {
                drop(book);
                bump(&self.stats.failed);
                return Err(format!(
                    "this dispatcher's share of the node's staging is full ({} MiB of {} MiB)",
                    self.config.max_bytes_per_dispatcher >> 20,
                    self.config.max_bytes >> 20
                ));
            }
            *book.by_settler.entry(*settler).or_default() += bytes;
        }
        book.bytes += bytes;
        // Writes that come after their transaction was settled (a worker
        // that did not reply in time) can never be decided on: they expire
        // at the next sweep.
        let expires = match book.past(transaction) {
            Some(Past::Decided(by)) if by != settler => deadline + self.config.expiry,
            Some(_) => Instant::now(),
            None => deadline + self.config.expiry,
        };
        book.pending.entry(transaction.clone()).or_default().push(Staged {
            settler,
            hook: hook.clone(),
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

    /// Applies `decision`, signed by `signer` (`None` in-process), to what
    /// was staged for `transaction` under that signer, once; then calls
    /// each staging plugin's `settle` hook. What happened is counted in
    /// [`Staging::stats`].
    #[tracing::instrument(level = "debug", skip(self, signer), fields(decision = decision.as_str()))]
    pub async fn settle(&self, transaction: &str, decision: Decision, signer: Option<PublicKey>) {
        let entries = {
            let mut book = self.book.lock();
            let entries = book.pending.remove(transaction).map(|entries| {
                let (mine, foreign): (Vec<Staged>, Vec<Staged>) =
                    entries.into_iter().partition(|e| e.settler.is_none() || e.settler == signer);
                if !foreign.is_empty() {
                    book.pending.insert(Arc::from(transaction), foreign);
                }
                mine
            });
            match entries {
                Some(entries) if entries.is_empty() => {
                    drop(book);
                    bump(&self.stats.foreign_decisions);
                    crate::error::warn_limited!(
                        transaction,
                        "ignored a settle decision signed by another key than the root dispatcher's"
                    );
                    return;
                }
                Some(entries) => {
                    book.release(&entries);
                    book.remember(Arc::from(transaction), Past::Settled);
                    entries
                }
                None => {
                    let past = book.past(transaction);
                    if past.is_none() {
                        // Writes may still come (a worker that missed the
                        // deadline): remembered, they expire at once.
                        book.remember(Arc::from(transaction), Past::Decided(signer));
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
                        Some(Past::Expired | Past::Decided(_)) | None => {}
                    }
                    return;
                }
            }
        };
        for entry in entries {
            let committed = match decision {
                Decision::Commit => match self.store.apply(entry.hook.namespace(), &entry.ops).await {
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
                    book.release(&entries);
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
        // The hook's instance is bounded by the wall clock's Instant.
        let deadline = std::time::Instant::now() + HOOK_TIMEOUT;
        let result = entry.hook.settled(&entry.label, &entry.request_id, committed, deadline).await;
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
    use crate::settle::MemoryStore;

    /// A plugin's `settle` hook as staging sees it: records each call.
    #[derive(Default)]
    struct Recorder(parking_lot::Mutex<Vec<(String, bool)>>);

    #[async_trait]
    impl SettleHook for Recorder {
        fn namespace(&self) -> &str {
            "plugin"
        }

        async fn settled(
            &self,
            _label: &Arc<str>,
            request_id: &Arc<str>,
            committed: bool,
            _deadline: std::time::Instant,
        ) -> Result<(), String> {
            self.0.lock().push((request_id.to_string(), committed));
            Ok(())
        }
    }

    struct Bench {
        staging: Staging,
        store: Arc<MemoryStore>,
        recorder: Arc<Recorder>,
        hook: Arc<dyn SettleHook>,
    }

    fn bench(config: SettleConfig) -> Bench {
        let store = Arc::new(MemoryStore::new());
        let recorder = Arc::new(Recorder::default());
        let hook: Arc<dyn SettleHook> = recorder.clone();
        Bench { staging: Staging::new(store.clone(), config), store, recorder, hook }
    }

    impl Bench {
        fn keep(&self, transaction: &str, task: &str, deadline: Instant, ops: Vec<Op>) -> Result<(), String> {
            self.keep_for(None, transaction, task, deadline, ops)
        }

        fn keep_for(
            &self,
            settler: Option<PublicKey>,
            transaction: &str,
            task: &str,
            deadline: Instant,
            ops: Vec<Op>,
        ) -> Result<(), String> {
            let label: Arc<str> = Arc::from("n/plugin@1");
            self.staging.keep(&Arc::from(transaction), settler, &self.hook, &label, &Arc::from(task), deadline, ops)
        }

        async fn value(&self, key: &str) -> Option<Vec<u8>> {
            self.store.get("plugin", key).await.expect("in-memory get")
        }

        fn count(&self, counter: fn(&SettleStats) -> &AtomicU64) -> u64 {
            counter(self.staging.stats()).load(Ordering::Relaxed)
        }
    }

    fn set(key: &str, value: &str) -> Op {
        Op::Set(key.into(), value.as_bytes().to_vec())
    }

    fn public(seed: u8) -> Option<PublicKey> {
        Some(anocast_wire::NodeKey::from_seed(&[seed; 32]).expect("key").public())
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_root_dispatcher_settles() {
        let b = bench(SettleConfig::default());
        let (root, other) = (public(1), public(2));
        let deadline = Instant::now() + Duration::from_secs(1);
        b.keep_for(root, "tx", "task", deadline, vec![set("k", "v")]).expect("kept");
        b.staging.settle("tx", Decision::Commit, other).await;
        b.staging.settle("tx", Decision::Abort, other).await;
        assert_eq!(b.count(|s| &s.foreign_decisions), 2);
        assert_eq!(b.value("k").await, None, "another key's commit applies nothing");
        assert!(b.recorder.0.lock().is_empty(), "nor does its abort drop anything");
        b.staging.settle("tx", Decision::Commit, root).await;
        assert_eq!(b.value("k").await.as_deref(), Some(&b"v"[..]));
        assert_eq!(b.count(|s| &s.committed), 1);

        // A decision for a transaction nothing was staged for yet, by
        // another key, does not doom the root's writes when they come.
        b.staging.settle("later", Decision::Abort, other).await;
        b.keep_for(root, "later", "task", deadline, vec![set("j", "w")]).expect("kept");
        b.staging.expire().await;
        b.staging.settle("later", Decision::Commit, root).await;
        assert_eq!(b.value("j").await.as_deref(), Some(&b"w"[..]));
    }

    #[tokio::test(start_paused = true)]
    async fn one_dispatcher_cannot_take_the_whole_staging() {
        let config = SettleConfig { max_bytes: 20, max_bytes_per_dispatcher: 8, ..SettleConfig::default() };
        let b = bench(config);
        let (hog, other) = (public(1), public(2));
        let deadline = Instant::now() + Duration::from_secs(1);
        b.keep_for(hog, "h1", "t", deadline, vec![set("k", "123")]).expect("4 bytes fit");
        b.keep_for(hog, "h2", "t", deadline, vec![set("k", "123")]).expect("8 fit");
        let err = b.keep_for(hog, "h3", "t", deadline, vec![set("k", "1")]).expect_err("the hog's share is full");
        assert!(err.contains("this dispatcher's share of the node's staging is full"), "{err}");
        b.keep_for(other, "o1", "t", deadline, vec![set("k", "1234567")]).expect("another dispatcher still has room");
        // Settled, the hog's share is free again.
        b.staging.settle("h1", Decision::Abort, hog).await;
        b.keep_for(hog, "h3", "t", deadline, vec![set("k", "1")]).expect("room again");
        // In-process (no keys) only the node-wide limit applies.
        b.keep("local", "t", deadline, vec![set("k", "12345")]).expect("embedded mode has one dispatcher");
    }

    #[tokio::test(start_paused = true)]
    async fn a_commit_applies_once_and_a_duplicate_changes_nothing() {
        let b = bench(SettleConfig::default());
        let deadline = Instant::now() + Duration::from_secs(1);
        b.keep("tx", "task-1", deadline, vec![set("k", "v1")]).expect("kept");
        b.keep("tx", "task-2", deadline, vec![set("j", "w")]).expect("kept");
        assert_eq!(b.value("k").await, None, "nothing is applied before the decision");
        b.staging.settle("tx", Decision::Commit, None).await;
        assert_eq!(b.value("k").await.as_deref(), Some(&b"v1"[..]));
        assert_eq!(b.value("j").await.as_deref(), Some(&b"w"[..]));
        assert_eq!(b.count(|s| &s.committed), 2);
        assert_eq!(*b.recorder.0.lock(), [("task-1".to_owned(), true), ("task-2".to_owned(), true)]);
        // The same decision again, or the opposite one: counted, ignored.
        b.staging.settle("tx", Decision::Abort, None).await;
        assert_eq!(b.count(|s| &s.duplicates), 1);
        assert_eq!(b.value("k").await.as_deref(), Some(&b"v1"[..]), "a late abort undoes nothing");
        assert_eq!(b.recorder.0.lock().len(), 2, "hooks are called once");
    }

    #[tokio::test(start_paused = true)]
    async fn an_abort_drops_the_writes_and_tells_the_hook() {
        let b = bench(SettleConfig::default());
        b.keep("tx", "task", Instant::now() + Duration::from_secs(1), vec![set("k", "v")]).expect("kept");
        b.staging.settle("tx", Decision::Abort, None).await;
        assert_eq!(b.value("k").await, None);
        assert_eq!(b.count(|s| &s.aborted), 1);
        assert_eq!(*b.recorder.0.lock(), [("task".to_owned(), false)]);
    }

    #[tokio::test(start_paused = true)]
    async fn writes_expire_after_their_deadline_and_a_late_commit_is_not_applied() {
        let config = SettleConfig { expiry: Duration::from_secs(30), ..SettleConfig::default() };
        let b = bench(config);
        let deadline = Instant::now() + Duration::from_secs(2);
        b.keep("tx", "task", deadline, vec![set("k", "v")]).expect("kept");
        // Just before deadline + expiry: still kept.
        tokio::time::advance(Duration::from_secs(31)).await;
        b.staging.expire().await;
        assert_eq!(b.count(|s| &s.expired), 0);
        tokio::time::advance(Duration::from_secs(1)).await;
        b.staging.expire().await;
        assert_eq!(b.count(|s| &s.expired), 1);
        assert_eq!(*b.recorder.0.lock(), [("task".to_owned(), false)]);
        b.staging.settle("tx", Decision::Commit, None).await;
        assert_eq!(b.count(|s| &s.late_commits), 1);
        assert_eq!(b.value("k").await, None, "expired writes are never applied");
    }

    #[tokio::test(start_paused = true)]
    async fn writes_staged_after_their_decision_expire_at_the_next_sweep() {
        let b = bench(SettleConfig::default());
        b.staging.settle("tx", Decision::Commit, None).await;
        b.keep("tx", "straggler", Instant::now() + Duration::from_secs(60), vec![set("k", "v")]).expect("kept");
        b.staging.expire().await;
        assert_eq!(b.count(|s| &s.expired), 1);
        assert_eq!(b.value("k").await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_node_wide_limit_refuses_what_does_not_fit() {
        let b = bench(SettleConfig { max_bytes: 10, ..SettleConfig::default() });
        let deadline = Instant::now() + Duration::from_secs(1);
        b.keep("a", "t1", deadline, vec![set("k", "1234")]).expect("5 bytes fit");
        let err = b.keep("b", "t2", deadline, vec![set("k", "123456")]).expect_err("7 more do not");
        assert!(err.contains("staging is full"), "{err}");
        assert_eq!(b.count(|s| &s.failed), 1);
        // Settling the first frees its bytes.
        b.staging.settle("a", Decision::Abort, None).await;
        b.keep("b", "t2", deadline, vec![set("k", "123456")]).expect("fits now");
    }
}
