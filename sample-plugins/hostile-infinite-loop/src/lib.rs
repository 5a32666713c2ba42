//! Hostile: spins forever. Must end as `FuelExhausted` (or `DeadlineExceeded` when the
//! fuel budget outlasts the deadline), with the host unharmed.

use sluice_sdk::{Context, Error, Output, Plugin};

struct InfiniteLoop;

impl Plugin for InfiniteLoop {
    fn execute(_: Context) -> Result<Output, Error> {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

sluice_sdk::export_plugin!(InfiniteLoop);
