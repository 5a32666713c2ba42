//! The errors of the engine: why a plug-in was refused at upload ([`LoadError`]) and
//! how an execution failed ([`ExecutionError`]).

use std::time::Duration;

/// Why an uploaded plug-in was refused. Each is found before any of its code runs.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("the file is empty")]
    Empty,
    #[error("the plug-in is {size} bytes, over the {limit}-byte limit")]
    TooLarge { size: u64, limit: u64 },
    #[error("not a WebAssembly binary (it does not start with the \\0asm magic number)")]
    NotWasm,
    #[error(
        "this is a core WebAssembly module, not a component: build for wasm32-wasip2 \
         (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule,
    #[error("malformed component: {reason}")]
    Malformed { reason: String },
    #[error("the component imports `{name}`, which Sluice does not provide")]
    UnknownImport { name: String },
    #[error("the component's import `{name}` does not match what Sluice provides: {reason}")]
    ImportMismatch { name: String, reason: String },
    #[error("the component does not export `{expected}`; plug-ins export the handler interface")]
    MissingExport { expected: &'static str },
    #[error("the component's `{expected}` export has the wrong type: {reason}")]
    ExportMismatch { expected: &'static str, reason: String },
    /// Over a bound on what compiling it would cost (see `[engine.complexity]`).
    #[error("the plug-in is too complex to compile: {what}")]
    TooComplex { what: String },
}

impl LoadError {
    /// A stable, kebab-case name for the refusal (the HTTP API's error code).
    pub fn code(&self) -> &'static str {
        match self {
            LoadError::Empty => "empty-plugin",
            LoadError::TooLarge { .. } => "plugin-too-large",
            LoadError::NotWasm => "not-wasm",
            LoadError::CoreModule => "core-module",
            LoadError::Malformed { .. } => "malformed-component",
            LoadError::UnknownImport { .. } => "unknown-import",
            LoadError::ImportMismatch { .. } => "import-mismatch",
            LoadError::MissingExport { .. } => "missing-export",
            LoadError::ExportMismatch { .. } => "export-mismatch",
            LoadError::TooComplex { .. } => "plugin-too-complex",
        }
    }
}

/// How an execution failed. Business and transient errors come from the plug-in; the
/// rest are limits and faults the host enforced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecutionError {
    /// The plug-in refused the operation (Dataverse's `InvalidPluginExecutionException`).
    #[error("{message}")]
    Business { message: String },
    /// The plug-in reported a passing failure and asks to be retried.
    #[error("transient failure: {message}")]
    Transient { message: String },
    #[error("fuel exhausted: the plug-in used its whole budget of {limit} units")]
    FuelExhausted { limit: u64 },
    #[error("deadline exceeded: the plug-in ran past its {} ms deadline", .limit.as_millis())]
    DeadlineExceeded { limit: Duration },
    #[error("memory limit exceeded: the plug-in asked for more than {limit} bytes of linear memory")]
    MemoryLimitExceeded { limit: u64 },
    #[error("stack overflow: the plug-in recursed past its wasm stack")]
    StackOverflow,
    #[error("output too large: {size} bytes, over the {limit}-byte limit")]
    OutputTooLarge { size: u64, limit: u64 },
    #[error("record write limit exceeded: more than {limit} record writes in one execution")]
    RecordWriteLimitExceeded { limit: u64 },
    #[error("instance limit exceeded: the plug-in needs more than {limit} instances")]
    InstanceLimitExceeded { limit: u64 },
    /// The guest broke the canonical ABI in a host call (e.g. a string that is not UTF-8).
    #[error("invalid host call: {message}")]
    InvalidHostCall { message: String },
    /// The guest trapped: `unreachable` (a Rust panic), out-of-bounds access, ...
    #[error("trap: {code}")]
    Trap { code: String },
    /// The run was stopped on request (its job was canceled or paused).
    #[error("stopped on request")]
    Stopped,
    /// Every execution slot of this process is in use.
    #[error("busy: all {slots} execution slots are in use")]
    Busy { slots: u32 },
    /// The execution's record writes no longer apply when its job completes (another
    /// job or event created, changed or deleted the same record meanwhile). Its writes
    /// are dropped and the job runs again: retryable.
    #[error("write conflict: {message}")]
    WriteConflict { message: String },
}

impl ExecutionError {
    /// A stable, machine-readable name for the error (the job's error code).
    pub fn code(&self) -> &'static str {
        match self {
            ExecutionError::Business { .. } => "business-error",
            ExecutionError::Transient { .. } => "transient-error",
            ExecutionError::FuelExhausted { .. } => "fuel-exhausted",
            ExecutionError::DeadlineExceeded { .. } => "deadline-exceeded",
            ExecutionError::MemoryLimitExceeded { .. } => "memory-limit-exceeded",
            ExecutionError::StackOverflow => "stack-overflow",
            ExecutionError::OutputTooLarge { .. } => "output-too-large",
            ExecutionError::RecordWriteLimitExceeded { .. } => "record-write-limit-exceeded",
            ExecutionError::InstanceLimitExceeded { .. } => "instance-limit-exceeded",
            ExecutionError::InvalidHostCall { .. } => "invalid-host-call",
            ExecutionError::Trap { .. } => "trap",
            ExecutionError::Busy { .. } => "busy",
            ExecutionError::Stopped => "stopped",
            ExecutionError::WriteConflict { .. } => "write-conflict",
        }
    }

    /// Whether the job service retries after this error. A business error never is;
    /// everything else counts as an exception (retried, then postponed).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, ExecutionError::Business { .. } | ExecutionError::Stopped)
    }
}
