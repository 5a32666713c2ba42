//! Hostile: allocates 1 MiB blocks, touching each, until memory runs out. Must end as
//! `MemoryLimitExceeded`.

use sluice_sdk::{Context, Error, Output, Plugin};

struct MemoryBomb;

impl Plugin for MemoryBomb {
    fn execute(_: Context) -> Result<Output, Error> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
        }
    }
}

sluice_sdk::export_plugin!(MemoryBomb);
