//! Hostile: recurses without end. Must end as `StackOverflow`.
//!
//! The frames hold only scalars, so they live on the wasm stack the host limits (a
//! Rust guest's arrays would live on its shadow stack in linear memory instead, and
//! overflowing that is an out-of-bounds trap, not a stack overflow).

use sluice_sdk::{Context, Error, Output, Plugin};

struct DeepRecursion;

#[inline(never)]
fn descend(depth: u64) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    // Rotating after the call keeps it from becoming a loop.
    descend(depth + 1).rotate_left(7) ^ depth
}

impl Plugin for DeepRecursion {
    fn execute(ctx: Context) -> Result<Output, Error> {
        let deepest = descend(u64::from(ctx.depth));
        Ok(Output::new().with("depth", deepest as i64))
    }
}

sluice_sdk::export_plugin!(DeepRecursion);
