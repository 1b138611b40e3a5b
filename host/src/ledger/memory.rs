//! The in-memory ledger of embedded mode: a map of lists behind one lock per
//! shard. Lists are removed by `finish`; one a dispatcher never finished is
//! dropped when its time-to-live has passed.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use rustc_hash::{FxBuildHasher, FxHashMap};

use super::{Declaration, Ledger, LedgerError};

const SHARDS: usize = 16;

/// The embedded ledger.
pub struct MemoryLedger {
    shards: Vec<Mutex<Shard>>,
    hasher: FxBuildHasher,
}

#[derive(Default)]
struct Shard {
    lists: FxHashMap<String, List>,
    next_sweep: Option<Instant>,
}

struct List {
    open: bool,
    workers: Vec<String>,
    answers: u32,
    expires: Instant,
}

impl List {
    /// Counts one answer; closes the window when it makes the count.
    fn answer(&mut self, expected: u32) -> Option<Vec<String>> {
        if expected == 0 {
            return None;
        }
        self.answers += 1;
        (self.answers >= expected).then(|| {
            self.open = false;
            self.workers.clone()
        })
    }
}

impl Default for MemoryLedger {
    fn default() -> Self {
        MemoryLedger { shards: (0..SHARDS).map(|_| Mutex::default()).collect(), hasher: FxBuildHasher }
    }
}

impl MemoryLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        use std::hash::BuildHasher;
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// Whether no list is held (tests check that finished lists go).
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.lock().lists.is_empty())
    }
}

#[async_trait]
impl Ledger for MemoryLedger {
    async fn open(&self, key: &str, ttl: Duration) -> Result<(), LedgerError> {
        let now = Instant::now();
        let mut shard = self.shard(key).lock();
        if shard.next_sweep.is_none_or(|t| now >= t) {
            shard.lists.retain(|_, list| list.expires > now);
            shard.next_sweep = Some(now + Duration::from_secs(1));
        }
        shard.lists.insert(key.to_owned(), List { open: true, workers: Vec::new(), answers: 0, expires: now + ttl });
        Ok(())
    }

    async fn declare(
        &self,
        key: &str,
        worker: &str,
        _ttl: Duration,
        expected: u32,
    ) -> Result<Declaration, LedgerError> {
        let mut shard = self.shard(key).lock();
        match shard.lists.get_mut(key) {
            Some(list) if list.open && list.expires > Instant::now() => {
                list.workers.push(worker.to_owned());
                Ok(Declaration { accepted: true, closed: list.answer(expected) })
            }
            _ => Ok(Declaration { accepted: false, closed: None }),
        }
    }

    async fn decline(&self, key: &str, _ttl: Duration, expected: u32) -> Result<Option<Vec<String>>, LedgerError> {
        let mut shard = self.shard(key).lock();
        match shard.lists.get_mut(key) {
            Some(list) if list.open => Ok(list.answer(expected)),
            _ => Ok(None),
        }
    }

    async fn settle(&self, key: &str, worker: &str) -> Result<usize, LedgerError> {
        let mut shard = self.shard(key).lock();
        let Some(list) = shard.lists.get_mut(key) else { return Ok(0) };
        if let Some(i) = list.workers.iter().position(|w| anocast_wire::declaration::worker_id(w) == worker) {
            list.workers.swap_remove(i);
        }
        Ok(list.workers.len())
    }

    async fn close(&self, key: &str, _ttl: Duration) -> Result<Vec<String>, LedgerError> {
        let mut shard = self.shard(key).lock();
        let Some(list) = shard.lists.get_mut(key) else { return Ok(Vec::new()) };
        list.open = false;
        Ok(list.workers.clone())
    }

    async fn forget(&self, key: &str) -> Result<(), LedgerError> {
        self.shard(key).lock().lists.remove(key);
        Ok(())
    }

    fn forget_later(&self, key: String) {
        self.shard(&key).lock().lists.remove(&key);
    }

    async fn finish(&self, key: &str, _ttl: Duration) -> Result<(), LedgerError> {
        // A list that is gone refuses declarations: nothing else to close.
        self.forget(key).await
    }

    fn in_process(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn the_window_closes_atomically() -> anyhow::Result<()> {
        let ledger = MemoryLedger::new();
        ledger.open("t-1", Duration::from_secs(5)).await?;
        assert!(ledger.declare("t-1", "a", T, 0).await?.accepted);
        assert!(ledger.declare("t-1", "b", T, 0).await?.accepted);
        assert_eq!(ledger.settle("t-1", "a").await?, 1);
        assert_eq!(ledger.close("t-1", T).await?, vec!["b".to_owned()]);
        assert!(!ledger.declare("t-1", "late", T, 0).await?.accepted, "a declaration after close must be refused");
        assert_eq!(ledger.settle("t-1", "b").await?, 0);
        ledger.finish("t-1", T).await?;
        assert!(!ledger.declare("t-1", "after-finish", T, 0).await?.accepted);
        assert!(!ledger.declare("never-opened", "x", T, 0).await?.accepted);
        assert!(ledger.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn the_last_expected_answer_closes_the_window() -> anyhow::Result<()> {
        let ledger = MemoryLedger::new();
        ledger.open("t-2", T).await?;
        assert_eq!(ledger.declare("t-2", "a", T, 3).await?, Declaration { accepted: true, closed: None });
        assert_eq!(ledger.decline("t-2", T, 3).await?, None);
        assert_eq!(
            ledger.declare("t-2", "c", T, 3).await?,
            Declaration { accepted: true, closed: Some(vec!["a".into(), "c".into()]) }
        );
        assert!(!ledger.declare("t-2", "late", T, 3).await?.accepted);
        assert_eq!(ledger.decline("t-2", T, 3).await?, None);
        Ok(())
    }

    #[tokio::test]
    async fn unfinished_lists_expire() -> anyhow::Result<()> {
        let ledger = MemoryLedger::new();
        ledger.open("old", Duration::from_millis(1)).await?;
        ledger.open("fresh", Duration::from_secs(5)).await?;
        std::thread::sleep(Duration::from_millis(5));
        assert!(!ledger.declare("old", "w", T, 0).await?.accepted, "an expired list must refuse declarations");
        assert!(ledger.declare("fresh", "w", T, 0).await?.accepted);
        Ok(())
    }
}
