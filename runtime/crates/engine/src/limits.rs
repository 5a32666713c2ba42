//! Per-execution sandbox limits and engine-wide settings, with their defaults.
//!
//! Every field documents its default and the error an execution ends with when it hits
//! the limit. These structs are the `[limits]` and `[engine]` tables of Sluice's
//! configuration file (kebab-case keys; unknown keys are an error).

use std::time::Duration;

use serde::{Deserialize, Serialize};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Limits of one plug-in execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Limits {
    /// Fuel budget: about one unit per WebAssembly instruction. Default 10,000,000,000
    /// (several seconds of CPU). Hitting it ends the execution with `FuelExhausted`.
    pub fuel: u64,
    /// Wall-clock deadline in milliseconds, checked whenever the guest yields (every
    /// `fuel-yield-interval` units of fuel). Default 120,000 (2 minutes, as Dataverse).
    /// Hitting it ends the execution with `DeadlineExceeded`.
    pub deadline_ms: u64,
    /// Linear memory, in bytes, across the execution's memories. Default 64 MiB. A guest
    /// that asks for more gets a failed `memory.grow`; if it then traps, the execution
    /// ends with `MemoryLimitExceeded`.
    pub memory_bytes: u64,
    /// Elements across the execution's tables. Default 20,000; growth past it fails.
    pub table_elements: u64,
    /// Core and component instances the execution may create. Default 64 (a
    /// componentize-py build holds 38 core instances); instantiation past it fails with
    /// `InstanceLimitExceeded`.
    pub instances: u64,
    /// Trace-log size in bytes; older lines are dropped to keep the newest. Default
    /// 10 KiB (as Dataverse). Never an error.
    pub trace_log_bytes: u64,
    /// Size of the output (parameter names and values, shared variables), in bytes.
    /// Default 1 MiB. Larger outputs end the execution with `OutputTooLarge`.
    pub output_bytes: u64,
    /// Record writes (create, update, delete) per execution. Default 1,000; one more
    /// ends the execution with `RecordWriteLimitExceeded`, which stops event storms.
    pub record_writes: u64,
    /// Outgoing HTTP requests per execution. Default 16; 0 refuses every request. One
    /// more is refused (`connection-limit-reached` to the plug-in), the run goes on.
    pub http_requests: u64,
    /// Bytes of HTTP bodies, sent and received together, per execution. Default 4 MiB;
    /// a request past it is refused (`HTTP-request-body-size`/`HTTP-response-body-size`).
    pub http_bytes: u64,
    /// Time for one HTTP request, in milliseconds, within the run's deadline. Default
    /// 10,000 (`connection-timeout` to the plug-in).
    pub http_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 10_000_000_000,
            deadline_ms: 120_000,
            memory_bytes: 64 * MIB,
            table_elements: 20_000,
            instances: 64,
            trace_log_bytes: 10 * KIB,
            output_bytes: MIB,
            record_writes: 1_000,
            http_requests: 16,
            http_bytes: 4 * MIB,
            http_timeout_ms: 10_000,
        }
    }
}

impl Limits {
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }
}

/// Engine-wide settings: they shape how plug-ins are compiled and pooled, so they are
/// fixed for the life of the process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct EngineSettings {
    /// WebAssembly stack, in bytes, of every execution. Default 512 KiB. Deeper
    /// recursion ends the execution with `StackOverflow`.
    pub max_wasm_stack: u64,
    /// Largest plug-in upload, in bytes. Default 32 MiB, which fits a plain
    /// componentize-py (about 18 MiB) or componentize-js (about 12 MiB) build; larger
    /// files are refused with `TooLarge` before they are parsed.
    pub max_plugin_bytes: u64,
    /// Core instances one component may hold: each slot of the pool is sized for it.
    /// Default 64 (a componentize-py build holds 38; a Rust one 4 to 6). A component with
    /// more is refused at load (`malformed-component`, naming the limit).
    pub max_core_instances: u32,
    /// Executions that may run at once in this process (the pooling allocator's slots).
    /// Default 256. Past it, instantiation fails with `Busy` until a slot frees.
    pub max_concurrent_executions: u32,
    /// The highest memory limit any execution may be given, in bytes. Default 1 GiB.
    pub max_memory_bytes: u64,
    /// Fuel between two yields of a running guest to the host, where the deadline is
    /// checked and other executions get the thread. Default 100,000 (about a tenth of a
    /// millisecond of work): the deadline is precise to about that much, and a CPU-bound
    /// plug-in holds a runtime thread no longer than that before others' turn (a
    /// yield costs well under a microsecond).
    pub fuel_yield_interval: u64,
    /// Plug-in executions polled at once, shared across orgs by the CPU each has used
    /// (its polls and its record calls): the org that used least goes next. Default: one
    /// per core. Fewer keeps cores free for the host's own work (commits, the API) under a
    /// CPU-bound flood, at the cost of plug-in capacity (on two cores, one turn halves it;
    /// it did not measurably lower a victim's p99 there: BENCHMARKS.md, isolation).
    pub cpu_turns: Option<usize>,
    /// The limits executions get unless told otherwise.
    pub default_limits: Limits,
    /// Bounds on an upload's contents, checked before it is compiled.
    pub complexity: super::Complexity,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            max_wasm_stack: 512 * KIB,
            max_plugin_bytes: 32 * MIB,
            max_core_instances: 64,
            max_concurrent_executions: 256,
            max_memory_bytes: 1024 * MIB,
            fuel_yield_interval: 100_000,
            cpu_turns: None,
            default_limits: Limits::default(),
            complexity: super::Complexity::default(),
        }
    }
}
