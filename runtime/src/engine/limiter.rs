//! Memory, table and instance limits of one execution, with peak-memory accounting.
//!
//! Unlike wasmtime's `StoreLimits`, the memory limit here applies to the sum of the
//! execution's linear memories, and a refused growth is remembered so that the trap that
//! usually follows (a Rust guest aborts on allocation failure) is reported as
//! `MemoryLimitExceeded` rather than as a bare `unreachable`.

use wasmtime::ResourceLimiter;

pub(crate) struct Limiter {
    memory_limit: usize,
    table_limit: usize,
    instance_limit: usize,
    memory_in_use: usize,
    tables_in_use: usize,
    pub peak_memory: usize,
    pub memory_refused: bool,
}

impl Limiter {
    pub fn new(memory_limit: u64, table_limit: u64, instance_limit: u64) -> Self {
        let clamp = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Limiter {
            memory_limit: clamp(memory_limit),
            table_limit: clamp(table_limit),
            instance_limit: clamp(instance_limit),
            memory_in_use: 0,
            tables_in_use: 0,
            peak_memory: 0,
            memory_refused: false,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let after = self.memory_in_use - current.min(self.memory_in_use) + desired;
        if after > self.memory_limit {
            self.memory_refused = true;
            return Ok(false);
        }
        self.memory_in_use = after;
        self.peak_memory = self.peak_memory.max(after);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let after = self.tables_in_use - current.min(self.tables_in_use) + desired;
        if after > self.table_limit {
            return Ok(false);
        }
        self.tables_in_use = after;
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.instance_limit
    }

    fn memories(&self) -> usize {
        self.instance_limit
    }

    fn tables(&self) -> usize {
        self.instance_limit
    }
}
