//! Per-instance resource limits: the memory cap (with a record of whether the
//! guest hit it) and the error raised when a call's deadline passes.

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

/// Caps linear memory and tables of one store.
pub struct Limiter {
    memory_limit: u64,
    exceeded: bool,
}

impl Limiter {
    pub fn new(memory_limit: u64) -> Self {
        Limiter { memory_limit, exceeded: false }
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
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired as u64 > self.memory_limit {
            self.exceeded = true;
            return Err(MemoryLimitExceeded(self.memory_limit).into());
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
