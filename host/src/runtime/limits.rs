//! Resource limits: per instance, the memory cap (with a record of whether
//! the guest hit it) and the error raised when a call's deadline passes;
//! per node, the [`MemoryBudget`] all instances draw their memory from.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::ResourceLimiter;

/// Most elements a guest table may grow to.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Raised from the epoch callback when a call runs past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the call ran past its deadline")]
pub struct DeadlineExceeded;

/// Raised when a guest grows its memory past the limit.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {0} bytes exceeded")]
pub struct MemoryLimitExceeded(u64);

/// Raised when the node's instance memory budget has no room for a
/// guest's growth.
#[derive(Debug, thiserror::Error)]
#[error("the node's instance memory budget of {} MiB is spent", .0 >> 20)]
pub struct MemoryBudgetSpent(u64);

/// The linear memory all of a node's instances may hold together, on top
/// of each instance's own limit: the sum of max-instances x memory-limit
/// can be far beyond the machine. Instances take from it as they grow
/// (their first pages included) and give back when they are dropped; an
/// idle warm instance keeps what it holds.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: AtomicU64,
    refused: AtomicU64,
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Self {
        MemoryBudget { limit, used: AtomicU64::new(0), refused: AtomicU64::new(0) }
    }

    /// The budget, in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes the live instances hold.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Growths refused because the budget was spent.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Takes `bytes` if they fit.
    fn take(&self, bytes: u64) -> bool {
        let taken = self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            used.checked_add(bytes).filter(|total| *total <= self.limit)
        });
        if taken.is_err() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        taken.is_ok()
    }

    fn give_back(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// Half of this machine's memory (from `/proc/meminfo`), or 4 GiB where it
/// cannot be read: the default [`MemoryBudget`].
pub fn default_memory_budget() -> u64 {
    let total_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
        text.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    });
    total_kib.map_or(4 << 30, |kib| (kib << 10) / 2)
}

/// Caps linear memory and tables of one store, and takes its memory from
/// the node's budget.
pub struct Limiter {
    memory_limit: u64,
    exceeded: bool,
    budget: Arc<MemoryBudget>,
    /// Bytes taken from the budget, given back on drop.
    taken: u64,
    budget_spent: bool,
}

impl Limiter {
    pub fn new(memory_limit: u64, budget: Arc<MemoryBudget>) -> Self {
        Limiter { memory_limit, exceeded: false, budget, taken: 0, budget_spent: false }
    }

    /// Whether a growth was refused because the node's budget was spent.
    pub fn budget_spent(&self) -> bool {
        self.budget_spent
    }

    /// The node's budget, in bytes.
    pub fn budget(&self) -> u64 {
        self.budget.limit()
    }

    /// The memory limit, in bytes.
    pub fn limit(&self) -> u64 {
        self.memory_limit
    }

    /// Whether the guest tried to grow past the memory limit.
    pub fn exceeded(&self) -> bool {
        self.exceeded
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired as u64 > self.memory_limit {
            self.exceeded = true;
            return Err(MemoryLimitExceeded(self.memory_limit).into());
        }
        let growth = desired.saturating_sub(current) as u64;
        if !self.budget.take(growth) {
            self.budget_spent = true;
            return Err(MemoryBudgetSpent(self.budget.limit()).into());
        }
        self.taken += growth;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

impl Drop for Limiter {
    fn drop(&mut self) {
        self.budget.give_back(self.taken);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_share_the_budget_and_give_it_back() {
        let budget = Arc::new(MemoryBudget::new(10 << 20));
        let mut a = Limiter::new(8 << 20, budget.clone());
        let mut b = Limiter::new(8 << 20, budget.clone());
        assert!(a.memory_growing(0, 6 << 20, None).is_ok());
        assert!(b.memory_growing(0, 4 << 20, None).is_ok(), "4 more fit in 10");
        assert!(b.memory_growing(4 << 20, 5 << 20, None).is_err(), "the eleventh MiB does not");
        assert!(b.budget_spent() && !b.exceeded());
        assert_eq!((budget.used(), budget.refused()), (10 << 20, 1));
        assert!(a.memory_growing(6 << 20, 9 << 20, None).is_err(), "past a's own limit");
        assert!(a.exceeded());
        drop(a);
        assert_eq!(budget.used(), 4 << 20, "a gave back what it took");
        assert!(b.memory_growing(4 << 20, 8 << 20, None).is_ok());
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn the_default_budget_is_half_the_machine() {
        let budget = default_memory_budget();
        assert!(budget >= 64 << 20, "{budget}");
    }
}
