//! Hostile: recurses without end. Must end as `StackOverflow`.

use sluice_sdk::{Context, Error, Output, Plugin};

struct DeepRecursion;

#[inline(never)]
fn descend(depth: u64, padding: [u64; 16]) -> u64 {
    let padding = std::hint::black_box(padding);
    if depth == u64::MAX {
        return 0;
    }
    descend(depth + 1, padding) + padding[(depth % 16) as usize]
}

impl Plugin for DeepRecursion {
    fn execute(_: Context) -> Result<Output, Error> {
        let deepest = descend(0, [7; 16]);
        Ok(Output::new().with("depth", deepest as i64))
    }
}

sluice_sdk::export_plugin!(DeepRecursion);
