//! The sandbox: one wasmtime [`Engine`] per process that validates, compiles and runs
//! plug-ins under hard limits.
//!
//! Lifecycle, as wasmtime intends it: the `Engine` and a pre-filled `Linker` are built
//! once; each plug-in is compiled once (or loaded from the artifact cache) into a
//! pre-linked [`Plugin`]; each execution gets a fresh `Store` with its own host state,
//! limits and fuel, and is thrown away after. This module owns no job semantics (retries,
//! quotas): it turns one call into an [`Execution`] with an outcome, a trace log and
//! accounting.
//!
//! Also here, because the sandbox needs them and so does the service: [`egress`] (where
//! outbound requests of plug-ins and callbacks may go) and [`turns`] (per-key bounds on
//! shared work).

// Unsafe code is denied everywhere but where wasmtime requires it: loading compiled
// artifacts (`plugin`, `Engine::compile`), and calling a handler through the type checked
// at load (`Plugin::handler`; the bare baseline's `Bare::checking_once` does the same).
#![deny(unsafe_code)]

pub mod baseline;
mod cache;
mod context;
mod convert;
mod cpu;
pub mod egress;
mod error;
mod execute;
mod host;
mod inspect;
mod limiter;
mod limits;
mod outbound;
mod plugin;
mod trace_log;
pub mod turns;

use std::path::Path;
use std::sync::Arc;

use wasmtime::component::Linker;
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use cache::sha256_hex;
pub use context::{ExecutionContext, Mode, PluginOutput, Stage};
pub use cpu::{CpuTurn, FairCpu};
pub use error::{ExecutionError, LoadError};
pub use execute::{Accounting, Execution, ExecutionRequest, StopSignal, set_run_hook};
pub use host::StepConfig;
pub use inspect::{Complexity, Totals};
pub use limits::{EngineSettings, Limits};
pub use outbound::OutboundAccess;
pub use plugin::{HANDLER_EXPORT, Plugin, PluginInfo};
pub use trace_log::TraceLog;

use host::ExecutionState;
use host::bindings;

/// Why the engine could not be built from its settings.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("invalid engine settings: {0}")]
    Settings(String),
    #[error("cannot open the compiled-artifact cache: {0}")]
    Cache(#[from] std::io::Error),
}

/// What one component may hold at most; the pool's totals are these (and
/// `max_core_instances`) times its slots.
const MAX_MEMORIES_PER_COMPONENT: u32 = 4;
const MAX_TABLES_PER_COMPONENT: u32 = 16;

/// Host stack kept free above the guest's wasm stack on each async fiber, for host calls.
const HOST_STACK_BYTES: u64 = 1024 * 1024;

/// Bytes of each linear memory, and of each table, reset in place when its slot is freed.
const MEMORY_KEEP_RESIDENT: usize = 1024 * 1024;
const TABLE_KEEP_RESIDENT: usize = 64 * 1024;

/// How a freed slot of the pool is made clean for the next execution: its dirty pages
/// (found with Linux's `PAGEMAP_SCAN`, kernel 6.7 or later; otherwise the lowest pages)
/// are reset in place, up to the sizes above, and only the rest is given back with
/// `madvise`. Each `madvise` of a multi-threaded process makes the kernel flush the TLB
/// of every core running it (an inter-processor interrupt); with the default (`madvise`
/// of every page at every free) those flushes took a third of the workers' time on
/// short jobs. The cost: up to 1 MiB of resident memory per memory slot used lately.
/// Shared with the bare-wasmtime baseline, so that benchmarks compare like with like
/// (wasmtime 48 API: `linear_memory_keep_resident`, `table_keep_resident`, `pagemap_scan`).
pub(crate) fn reset_slots_in_place(pool: &mut PoolingAllocationConfig) {
    pool.linear_memory_keep_resident(MEMORY_KEEP_RESIDENT)
        .table_keep_resident(TABLE_KEEP_RESIDENT)
        .pagemap_scan(wasmtime::Enabled::Auto);
}

/// The plug-in engine. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    wasmtime: wasmtime::Engine,
    linker: Linker<ExecutionState>,
    settings: EngineSettings,
    cache: cache::ArtifactCache,
    /// Uploads refused lately, by content hash.
    refused: plugin::Refused,
    /// Components compiled since start (cache hits and cheap refusals not counted).
    compilations: std::sync::atomic::AtomicU64,
    /// Each org's turn to make record calls (see `host::RECORD_CALLS_PER_ORG`).
    record_turns: Arc<crate::turns::Turns<String>>,
    /// Turns on the CPU, shared across orgs by what each used (see `cpu`).
    cpu: Arc<FairCpu>,
}

impl Engine {
    /// Builds the engine. `cache_dir` keeps compiled artifacts across restarts; `None`
    /// compiles every load.
    pub fn new(settings: EngineSettings, cache_dir: Option<&Path>) -> Result<Self, SetupError> {
        let invalid = |e: wasmtime::Error| SetupError::Settings(format!("{e:#}"));
        let usize_of =
            |n: u64| usize::try_from(n).map_err(|_| SetupError::Settings(format!("{n} is too large")));
        if settings.default_limits.memory_bytes > settings.max_memory_bytes {
            return Err(SetupError::Settings("default-limits.memory-bytes exceeds max-memory-bytes".into()));
        }
        if settings.fuel_yield_interval == 0 {
            return Err(SetupError::Settings("fuel-yield-interval must be at least 1".into()));
        }

        let slots = settings.max_concurrent_executions.max(1);
        let mut pool = PoolingAllocationConfig::new();
        // Every slot can hold the largest component allowed: a tenant whose components
        // use the most instances, memories and tables per execution fills its own
        // executions' slots, never the shared totals that others' executions need.
        pool.total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(settings.max_core_instances))
            .total_memories(slots.saturating_mul(MAX_MEMORIES_PER_COMPONENT))
            .total_tables(slots.saturating_mul(MAX_TABLES_PER_COMPONENT))
            .total_stacks(slots)
            .max_memory_size(usize_of(settings.max_memory_bytes)?)
            .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
            .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
            .max_core_instances_per_component(settings.max_core_instances)
            .table_elements(usize_of(settings.default_limits.table_elements.max(20_000))?);
        reset_slots_in_place(&mut pool);

        let mut config = Config::new();
        // wasmtime 48: async support is always on (`Config::async_support` is deprecated
        // and does nothing); fuel both meters and, with a yield interval, lets the host
        // check deadlines without epoch interruption (which costs ~28% in tight loops).
        config
            .wasm_component_model(true)
            .consume_fuel(true)
            .max_wasm_stack(usize_of(settings.max_wasm_stack)?)
            .async_stack_size(usize_of(settings.max_wasm_stack + HOST_STACK_BYTES)?)
            // One core per compilation: an upload never takes every core from running
            // jobs (uploads are rare; their compile time is bounded by `complexity`).
            .parallel_compilation(false)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let wasmtime = wasmtime::Engine::new(&config).map_err(invalid)?;

        let mut linker = Linker::new(&wasmtime);
        // Every WASI 0.2 interface a standard library links, sandboxed: no preopened
        // directories, sockets refused (`sandboxed_wasi`), HTTP by `outbound`'s rules.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(invalid)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(invalid)?;
        bindings::Plugin::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |state| state)
            .map_err(invalid)?;

        let cache = cache::ArtifactCache::new(cache_dir, &wasmtime)?;
        let cpu_turns = settings
            .cpu_turns
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get));
        let inner = Inner {
            wasmtime,
            linker,
            settings,
            cache,
            refused: Default::default(),
            compilations: Default::default(),
            record_turns: Arc::new(crate::turns::Turns::new(host::RECORD_CALLS_PER_ORG)),
            cpu: FairCpu::new(cpu_turns),
        };
        Ok(Engine { inner: Arc::new(inner) })
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.inner.settings
    }

    /// How many components this engine has compiled (not loaded from the artifact
    /// cache, not refused before compiling).
    pub fn compilations(&self) -> u64 {
        self.inner.compilations.load(std::sync::atomic::Ordering::Relaxed)
    }
}
