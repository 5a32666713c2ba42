//! Per-execution cost of Sluice's engine against bare wasmtime, measured side by side.
//!
//! - `trivial`: the `echo` sample through `Engine::execute` (fresh store, WASI context,
//!   every limit and all accounting on) against a bare wasmtime loop over the same
//!   component (pooling allocator, `InstancePre`, fresh WASI context per call, no fuel),
//!   as wasmtime's generated bindings instantiate it (the handler's type checked at every
//!   instantiation), and against the same loop with the type checked once, as the engine
//!   does (`bare-wasmtime-checked-once`).
//! - `cpu-bound-sieve` and `cpu-bound-text`: the `cpu-burn` sample's two workloads
//!   metered through Sluice against the same bare, unmetered loop.
//!
//! Run: `cargo bench -p sluice --bench engine`. The ratios are printed at the end and
//! recorded in BENCHMARKS.md.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use sluice::engine::{Engine, EngineSettings, ExecutionContext, ExecutionRequest, Limits, StepConfig};
use sluice::records::{MemoryRecords, OrgRecords, Value};

use sluice::engine::baseline::{Bare, context as bare_context, types};

/// The allocator of the `sluice` binary (see `runtime/src/main.rs`), on both sides: the
/// engine is measured as the service runs it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sluice's side: the engine as the job service uses it.
struct Sluice {
    engine: Engine,
    plugin: sluice::engine::Plugin,
    records: Arc<MemoryRecords>,
    runtime: tokio::runtime::Runtime,
}

impl Sluice {
    fn new(path: &str) -> Sluice {
        let engine = Engine::new(EngineSettings::default(), None).unwrap();
        let plugin = engine.load(&std::fs::read(path).unwrap()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Sluice { engine, plugin, records: Arc::new(MemoryRecords::new()), runtime }
    }

    /// Runs `iterations` executions back to back and returns the time taken.
    fn run(&self, iterations: u64, context: &ExecutionContext) -> Duration {
        self.runtime.block_on(async {
            let started = Instant::now();
            for _ in 0..iterations {
                let request = ExecutionRequest {
                    context: context.clone(),
                    records: OrgRecords::new("local", self.records.clone()),
                    config: StepConfig::default(),
                    limits: Limits::default(),
                    stop: None,
                    outbound: Default::default(),
                };
                let execution = self.engine.execute(&self.plugin, request).await;
                assert!(execution.outcome.is_ok(), "{:?}", execution.outcome);
            }
            started.elapsed()
        })
    }
}

/// The CPU-bound workloads of the `cpu-burn` sample and their sizes: a tight sieve loop
/// (the worst case for fuel metering) and text formatting and parsing.
const WORKLOADS: [(&str, i64); 2] = [("sieve", 2_000_000), ("text", 100_000)];

/// Where criterion keeps its results: `CRITERION_HOME`, else `criterion` in the target
/// directory (`CARGO_TARGET_DIR` if set, as criterion itself reads it, else the
/// workspace's `target`).
fn criterion_home() -> std::path::PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(target) => Path::new(&target).join("criterion"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion"),
    }
}

/// Rounds of the interleaved comparison, and executions per side in each.
const ROUNDS: usize = 21;
const PER_ROUND: u64 = 2_000;

/// The trivial ratio measured in alternating rounds (which side goes first alternates
/// too), so that a drift of the machine — these are shared VMs — lands on both sides:
/// criterion's groups run one after the other. Returns the median, lowest and highest
/// of the rounds' ratios.
fn interleaved_ratio(
    bare: &Bare,
    bare_context: &sluice::engine::baseline::context::ExecutionContext,
    sluice: &Sluice,
    context: &ExecutionContext,
) -> (f64, f64, f64) {
    let time_bare = || {
        let started = Instant::now();
        for _ in 0..PER_ROUND {
            bare.call(bare_context);
        }
        started.elapsed()
    };
    let mut ratios: Vec<f64> = (0..ROUNDS)
        .map(|round| {
            let (bare_took, sluice_took) = if round % 2 == 0 {
                let bare_took = time_bare();
                (bare_took, sluice.run(PER_ROUND, context))
            } else {
                let sluice_took = sluice.run(PER_ROUND, context);
                (time_bare(), sluice_took)
            };
            sluice_took.as_secs_f64() / bare_took.as_secs_f64()
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    (ratios[ROUNDS / 2], ratios[0], ratios[ROUNDS - 1])
}

/// Criterion's median for one benchmark, if this run measured it (a filter such as
/// `-- trivial` leaves the other groups unmeasured, and their files, if any, from an
/// earlier run).
fn median_ns(group: &str, id: &str, since: std::time::SystemTime) -> Option<f64> {
    let path = criterion_home().join(group).join(id).join("new/estimates.json");
    let written = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
    if written < since {
        return None;
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let estimates: serde_json::Value = serde_json::from_str(&text).unwrap();
    estimates["median"]["point_estimate"].as_f64()
}

fn main() {
    let started = std::time::SystemTime::now();
    let mut criterion = Criterion::default().configure_from_args().warm_up_time(Duration::from_secs(2));

    let mut trivial = criterion.benchmark_group("trivial");
    let echo_context = {
        let mut context = ExecutionContext::new("sample_Bench", "none");
        context.input_parameters.insert("ping".into(), Value::from("pong"));
        context
    };
    let bare_echo = Bare::new(sluice_sample_plugins::ECHO, false).unwrap();
    let bare_echo_context = bare_context(vec![types::Attribute {
        name: "ping".into(),
        value: types::Value::String("pong".into()),
    }]);
    let bare_echo_checking_once = Bare::checking_once(sluice_sample_plugins::ECHO).unwrap();
    let sluice_echo = Sluice::new(sluice_sample_plugins::ECHO);
    trivial.bench_function("bare-wasmtime", |b| b.iter(|| bare_echo.call(&bare_echo_context)));
    trivial.bench_function("bare-wasmtime-checked-once", |b| {
        b.iter(|| bare_echo_checking_once.call(&bare_echo_context))
    });
    trivial.bench_function("sluice", |b| b.iter_custom(|n| sluice_echo.run(n, &echo_context)));
    trivial.finish();

    let bare_burn = Bare::new(sluice_sample_plugins::CPU_BURN, false).unwrap();
    let bare_fuel_burn = Bare::new(sluice_sample_plugins::CPU_BURN, true).unwrap();
    let sluice_burn = Sluice::new(sluice_sample_plugins::CPU_BURN);
    for (workload, limit) in WORKLOADS {
        let mut cpu = criterion.benchmark_group(format!("cpu-bound-{workload}"));
        cpu.sample_size(20);
        let mut context = ExecutionContext::new("sample_Bench", "none");
        context.input_parameters.insert("limit".into(), Value::Integer(limit));
        context.input_parameters.insert("workload".into(), Value::from(workload));
        let bare_context = bare_context(vec![
            types::Attribute { name: "limit".into(), value: types::Value::Integer(limit) },
            types::Attribute { name: "workload".into(), value: types::Value::String(workload.into()) },
        ]);
        cpu.bench_function("unmetered", |b| b.iter(|| bare_burn.call(&bare_context)));
        cpu.bench_function("bare-fuel", |b| b.iter(|| bare_fuel_burn.call(&bare_context)));
        cpu.bench_function("metered", |b| b.iter_custom(|n| sluice_burn.run(n, &context)));
        cpu.finish();
    }

    criterion.final_summary();

    // With `--test` (as in `cargo test --benches`) nothing is measured: no ratios.
    if std::env::args().any(|a| a == "--test") {
        return;
    }
    let trivial = median_ns("trivial", "bare-wasmtime", started).zip(median_ns("trivial", "sluice", started));
    if let Some((bare, sluice)) = trivial {
        println!(
            "trivial plug-in: sluice {:.1} µs, bare wasmtime {:.1} µs per execution",
            sluice / 1e3,
            bare / 1e3
        );
        println!("RATIO per-execution sluice/bare = {:.3} (target <= 1.18)", sluice / bare);
        if let Some(checked_once) = median_ns("trivial", "bare-wasmtime-checked-once", started) {
            println!(
                "RATIO per-execution sluice/bare with the handler type-checked once = {:.3}",
                sluice / checked_once
            );
        }
        let (median, low, high) =
            interleaved_ratio(&bare_echo, &bare_echo_context, &sluice_echo, &echo_context);
        println!(
            "RATIO per-execution sluice/bare, interleaved: median {median:.3} of {ROUNDS} rounds \
             (lowest {low:.3}, highest {high:.3})"
        );
        // The same against a bare loop that, like the engine, type-checks the handler once
        // rather than at every instantiation (as wasmtime's generated bindings do).
        let (median, low, high) =
            interleaved_ratio(&bare_echo_checking_once, &bare_echo_context, &sluice_echo, &echo_context);
        println!(
            "RATIO per-execution sluice/bare with the handler type-checked once, interleaved: \
             median {median:.3} of {ROUNDS} rounds (lowest {low:.3}, highest {high:.3})"
        );
    }
    for (workload, _) in WORKLOADS {
        let group = format!("cpu-bound-{workload}");
        let medians = [
            median_ns(&group, "unmetered", started),
            median_ns(&group, "metered", started),
            median_ns(&group, "bare-fuel", started),
        ];
        let [Some(unmetered), Some(metered), Some(bare_fuel)] = medians else {
            continue;
        };
        println!(
            "cpu-bound {workload}: metered {:.2} ms, unmetered {:.2} ms",
            metered / 1e6,
            unmetered / 1e6
        );
        println!(
            "RATIO cpu-bound {workload} metered/unmetered = {:.3} (target <= 1.10)",
            metered / unmetered
        );
        println!(
            "  of which wasmtime fuel alone (bare with fuel / bare without) = {:.3}, \
             Sluice around it (metered / bare with fuel) = {:.3}",
            bare_fuel / unmetered,
            metered / bare_fuel
        );
    }
}
