//! CPU-bound work, used to measure the cost of metering and to flood a node with
//! costly jobs. Input parameters (or attributes of the event's record):
//! - `workload`: `sieve` (default) counts the primes below `limit` (default 100,000), a
//!   tight loop of a few instructions, the worst case for metering; `text` formats and
//!   parses `limit` account numbers, closer to what business plug-ins spend CPU on.
//! - `rounds`: repeats the work (default 1).

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

/// Formats `count` account numbers, parses them back and sums them.
fn text_work(count: usize) -> i64 {
    let mut total = 0i64;
    let mut line = String::new();
    for n in 0..count {
        line.clear();
        line.push_str("ACC-");
        line.push_str(&format!("{n:06}"));
        let parsed: i64 = line.rsplit('-').next().and_then(|d| d.parse().ok()).unwrap_or(0);
        total += parsed ^ (line.len() as i64);
    }
    total
}

impl Plugin for CpuBurn {
    fn execute(ctx: Context) -> Result<Output, Error> {
        // An input parameter, or else an attribute of the record the event is about.
        let number = |name: &str| {
            ctx.input(name).or_else(|| ctx.target().and_then(|t| t.get(name))).and_then(|v| v.as_integer())
        };
        let limit = number("limit").unwrap_or(100_000);
        let rounds = number("rounds").unwrap_or(1);
        if !(2..=50_000_000).contains(&limit) {
            return Err(Error::business("limit must be between 2 and 50,000,000"));
        }
        let text = matches!(ctx.input("workload").and_then(|w| w.as_str()), Some("text"));
        let mut result = 0;
        for _ in 0..rounds.max(1) {
            let limit = std::hint::black_box(limit as usize);
            result = if text { text_work(limit) } else { count_primes(limit) };
        }
        Ok(Output::new().with(if text { "checksum" } else { "primes" }, result))
    }
}

sluice_sdk::export_plugin!(CpuBurn);
