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

/// The total in use after one item grows from `current` to `desired`, if within `limit`.
fn grown(in_use: usize, current: usize, desired: usize, limit: usize) -> Option<usize> {
    Some(in_use.saturating_sub(current).saturating_add(desired)).filter(|after| *after <= limit)
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let Some(after) = grown(self.memory_in_use, current, desired, self.memory_limit) else {
            self.memory_refused = true;
            return Ok(false);
        };
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
        match grown(self.tables_in_use, current, desired, self.table_limit) {
            Some(after) => {
                self.tables_in_use = after;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    // One `instances` limit also bounds how many memories and tables the execution may
    // create: each is at most a handful per instance in real components.
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
