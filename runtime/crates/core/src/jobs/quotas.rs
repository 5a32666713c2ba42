//! Per-organisation, per-lane quotas, named as in the Dataverse asynchronous service.

use serde::{Deserialize, Serialize};

use super::{MINUTE, Millis};

/// The quotas of one lane of one organisation. Set by the operator; tenants can read
/// them. The exempt lane ignores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Quotas {
    /// `OrgMaxThreadCount`: at most this many of the org's jobs in progress on the lane
    /// at any instant. Default 4.
    pub max_threads: u32,
    /// `OrgMaxAsyncThroughput`: at most this many job starts per throughput window; at
    /// the cap, runnable jobs wait (WaitingForResources) for the next window. Default 600.
    pub max_throughput: u32,
    /// `AsyncThroughputCapResetTimeIntervalInMinutes` (E): the fixed throughput window,
    /// aligned to the clock. Default 1.
    pub throughput_window_minutes: u32,
    /// `AsyncMaxExceptionCountInTimeUnit` (A): a job that fails with an exception this
    /// many times within the exception window is postponed. Default 3.
    pub max_exceptions: u32,
    /// `AsyncMaxExceptionCounterTimeUnitInMinutes` (D): the exception window; the n-th
    /// postponement of a job lasts D × n minutes. Default 5.
    pub exception_window_minutes: u32,
    /// Postponements after which a job is postponed forever (until resumed or
    /// canceled). Default 5.
    pub max_postponements: u32,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            max_threads: 4,
            max_throughput: 600,
            throughput_window_minutes: 1,
            max_exceptions: 3,
            exception_window_minutes: 5,
            max_postponements: 5,
        }
    }
}

impl Quotas {
    /// E in milliseconds (at least one).
    pub fn throughput_window(&self) -> Millis {
        Millis::from(self.throughput_window_minutes.max(1)) * MINUTE
    }

    /// D in milliseconds.
    pub fn exception_window(&self) -> Millis {
        Millis::from(self.exception_window_minutes) * MINUTE
    }

    /// How long the `n`-th postponement lasts: D × n minutes.
    pub fn postponement(&self, n: u32) -> Millis {
        self.exception_window() * Millis::from(n)
    }
}
