//! `sluice bench upload-bomb`: the costliest uploads we know how to build within the
//! plug-in size limit and the engine's `complexity` bounds, each loaded once (the
//! checks, then compilation, single-threaded as the service does it); prints each one's
//! CPU time and peak memory and, as the last line, JSON with the worst of each. The
//! budget is 5 s of CPU and 512 MiB per upload. Linux only (it reads `/proc`).

use std::time::Instant;

use serde_json::json;
use sluice::engine::{Engine, EngineSettings};

use super::format::bytes;

/// One shape: a name and the component's bytes.
type Shape = (&'static str, Vec<u8>);

fn component(module_fields: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(component
            (core module {module_fields})
            (instance $handler)
            (export "sluice:plugin/handler@0.1.0" (instance $handler)))"#
    ))
    .expect("the shape is valid text")
}

/// Shapes at the bounds: many small functions, a few of the largest, the most locals
/// (used, so the register allocator sees them), deep nesting, and wide branch tables.
fn shapes(settings: &EngineSettings) -> Vec<Shape> {
    let limits = &settings.complexity;
    let budget = settings.max_plugin_bytes as usize - 4096;
    let many = {
        let body = "local.get 0 i32.const 7 i32.mul local.set 0 ".repeat(8);
        let one = format!("(func (param i32) {body})");
        let n = (limits.max_functions as usize).min(budget / 50);
        component(&one.repeat(n))
    };
    let largest = {
        let per_function = limits.max_function_bytes as usize - 64;
        // About 9 bytes per repetition of this body.
        let body = "local.get 0 i32.const 1000 i32.add local.set 0 ".repeat(per_function / 9);
        let n = (budget / per_function).max(1);
        component(&format!("(func (param i32) {body})").repeat(n))
    };
    let locals = {
        let count = limits.max_locals as usize;
        let mut body = String::new();
        for i in (0..count).step_by(count / 2_000) {
            body.push_str(&format!("local.get {i} local.get {} i64.add local.set {i} ", count - 1 - i));
        }
        let one = format!("(func (local {}) {body})", "i64 ".repeat(count));
        component(&one.repeat(16))
    };
    let nested = {
        let depth = 10_000;
        let body = format!("{}{}", "(block ".repeat(depth), ")".repeat(depth));
        component(&format!("(func {body})").repeat(16))
    };
    let branches = {
        let targets = " 0".repeat(60_000);
        let one = format!("(func (param i32) (block (br_table {targets} (local.get 0))))");
        component(&one.repeat(24))
    };
    vec![
        ("many-small-functions", many),
        ("largest-functions", largest),
        ("most-locals", locals),
        ("deep-nesting", nested),
        ("wide-branch-tables", branches),
    ]
}

/// This thread's CPU time in seconds (utime + stime, in clock ticks of 1/100 s).
fn thread_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |n: usize| fields.get(n).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// The process's peak resident memory since the last reset, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn current_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

pub fn upload_bomb() -> anyhow::Result<()> {
    let settings = EngineSettings::default();
    let engine = Engine::new(settings.clone(), None)?;
    println!(
        "each shape loaded once, single-threaded; limit {} per upload; budget 5 s CPU, 512 MiB",
        bytes(settings.max_plugin_bytes)
    );
    let (mut worst_cpu, mut worst_memory) = (0.0f64, 0u64);
    let mut rows = serde_json::Map::new();
    for (name, component) in shapes(&settings) {
        // Resets the peak resident size to the current one (Linux `clear_refs` 5).
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let (rss_before, cpu_before, started) = (current_rss(), thread_cpu_seconds(), Instant::now());
        let outcome = match engine.load(&component) {
            Ok(_) => "accepted".to_owned(),
            Err(refusal) => refusal.code().to_owned(),
        };
        let (cpu, wall) = (thread_cpu_seconds() - cpu_before, started.elapsed().as_secs_f64());
        let memory = peak_rss().saturating_sub(rss_before);
        worst_cpu = worst_cpu.max(cpu);
        worst_memory = worst_memory.max(memory);
        println!(
            "{name:<22} {:>10}  cpu {cpu:>6.2} s  wall {wall:>6.2} s  memory +{:>10}  {outcome}",
            bytes(component.len() as u64),
            bytes(memory)
        );
        rows.insert(
            name.into(),
            json!({ "bytes": component.len(), "cpu_s": cpu, "wall_s": wall, "memory_bytes": memory, "outcome": outcome }),
        );
    }
    println!(
        "{}",
        json!({ "scenario": "upload-bomb", "worst_cpu_s": worst_cpu, "worst_memory_bytes": worst_memory, "shapes": rows })
    );
    Ok(())
}
