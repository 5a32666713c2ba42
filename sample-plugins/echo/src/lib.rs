//! Returns its input parameters as output parameters: the smallest useful plug-in, and
//! the one the per-execution benchmarks run.

use sluice_sdk::{Context, Error, Output, Plugin};

struct Echo;

impl Plugin for Echo {
    fn execute(ctx: Context) -> Result<Output, Error> {
        Ok(Output { output_parameters: ctx.input_parameters, shared_variables: Vec::new() })
    }
}

sluice_sdk::export_plugin!(Echo);
