//! CPU-bound work: counts the primes below `limit` (input parameter, default 100,000)
//! with a sieve, `rounds` times (default 1). Used to measure the cost of metering.

use sluice_sdk::{Context, Error, Output, Plugin};

struct CpuBurn;

fn count_primes(limit: usize) -> i64 {
    let mut composite = vec![false; limit];
    let mut count = 0;
    for n in 2..limit {
        if !composite[n] {
            count += 1;
            let mut multiple = n * n;
            while multiple < limit {
                composite[multiple] = true;
                multiple += n;
            }
        }
    }
    count
}

impl Plugin for CpuBurn {
    fn execute(ctx: Context) -> Result<Output, Error> {
        let limit = ctx.input("limit").and_then(|v| v.as_integer()).unwrap_or(100_000);
        let rounds = ctx.input("rounds").and_then(|v| v.as_integer()).unwrap_or(1);
        if !(2..=50_000_000).contains(&limit) {
            return Err(Error::business("limit must be between 2 and 50,000,000"));
        }
        let mut primes = 0;
        for _ in 0..rounds.max(1) {
            primes = count_primes(std::hint::black_box(limit as usize));
        }
        Ok(Output::new().with("primes", primes))
    }
}

sluice_sdk::export_plugin!(CpuBurn);
