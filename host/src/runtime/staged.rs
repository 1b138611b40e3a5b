//! The writes one task's `handle` stages through the `store` import, kept
//! in its instance within per-task limits until the task ends and the node
//! hands them to its staging (see the `settle` module).

/// Longest key a worker may stage, in bytes.
pub const MAX_KEY: usize = 256;
/// Largest value a worker may stage, in bytes.
pub const MAX_VALUE: usize = 1 << 20;
/// Most writes one task may stage.
pub const MAX_OPS: usize = 1000;
/// Most bytes (keys and values) one task may stage.
pub const MAX_TASK_BYTES: usize = 8 << 20;

/// One staged write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set the key to the value.
    Set(String, Vec<u8>),
    /// Remove the key.
    Delete(String),
}

impl Op {
    /// Bytes the write holds (key and value).
    pub fn bytes(&self) -> usize {
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

#[cfg(test)]
mod tests {
    use super::*;

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
