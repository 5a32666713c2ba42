//! What a step registration says about when it runs, and what one run cost: shared by
//! the engine that measures it and the stores that keep it.

use serde::{Deserialize, Serialize};

/// When a step runs relative to the core operation; Dataverse numbers them 10, 20, 40.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    PreValidation,
    PreOperation,
    #[default]
    PostOperation,
}

impl Stage {
    pub fn number(self) -> u32 {
        match self {
            Stage::PreValidation => 10,
            Stage::PreOperation => 20,
            Stage::PostOperation => 40,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Synchronous,
    #[default]
    Asynchronous,
}

/// Resources one execution used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Accounting {
    /// Fuel consumed: about one unit per WebAssembly instruction.
    pub fuel_used: u64,
    /// Wall time from store creation to the end of the call, in microseconds.
    pub wall_time_us: u64,
    /// Time spent inside host calls (records, tracing, config), in microseconds.
    pub host_time_us: u64,
    /// The largest total linear memory the execution had, in bytes.
    pub peak_memory_bytes: u64,
}
