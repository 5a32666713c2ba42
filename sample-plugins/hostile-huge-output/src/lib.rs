//! Hostile: returns a 16 MiB output parameter. Must end as `OutputTooLarge`.

use sluice_sdk::{Context, Error, Output, Plugin};

struct HugeOutput;

impl Plugin for HugeOutput {
    fn execute(_: Context) -> Result<Output, Error> {
        Ok(Output::new().with("blob", "x".repeat(16 << 20)))
    }
}

sluice_sdk::export_plugin!(HugeOutput);
