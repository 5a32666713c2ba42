//! `sluice bench upload-bomb`: the costliest uploads we know how to build within the
//! plug-in size limit and the engine's `complexity` bounds, each loaded once in a fresh
//! process of its own (the checks, then compilation, single-threaded as the service does
//! it), so its CPU time and peak memory are its own; prints each and, as the last line,
//! JSON with the worst of each. The budget is 30 s of CPU and 512 MiB per upload: the
//! bounds admit the Python and JavaScript runtimes, whose own builds take 9 to 11 s to
//! compile (BENCHMARKS.md). Linux only (it reads `/proc`).

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

/// Shapes at the bounds: as much code as allowed in the most functions, in the largest
/// functions, in wide branch tables; the most locals (used, so the register allocator
/// sees them); deep nesting. Code size is what compile time follows.
fn shapes(settings: &EngineSettings) -> Vec<Shape> {
    let limits = &settings.complexity;
    let code = (limits.max_code_bytes as usize).min(settings.max_plugin_bytes as usize) * 95 / 100;
    let fill =
        |one: String, bytes_each: usize, most: usize| component(&one.repeat((code / bytes_each).min(most)));
    let functions = limits.max_functions as usize;
    // Each body is measured once, encoded, so the count fills the code bound.
    let encoded = |one: &str| component(one).len().saturating_sub(component("").len()).max(1);
    let many = {
        let one = format!("(func (param i32) {})", "local.get 0 i32.const 7 i32.mul local.set 0 ".repeat(4));
        let each = encoded(&one);
        fill(one, each, functions)
    };
    let both = {
        // The most functions, each as large as the code bound then allows.
        let reps = (code / functions.max(1) / 8).max(1);
        let one =
            format!("(func (param i32) {})", "local.get 0 i32.const 7 i32.mul local.set 0 ".repeat(reps));
        let each = encoded(&one);
        fill(one, each, functions)
    };
    let largest = {
        let per_function = (limits.max_function_bytes as usize).min(code) * 9 / 10;
        let one = format!(
            "(func (param i32) {})",
            "local.get 0 i32.const 1000 i32.add local.set 0 ".repeat(per_function / 9)
        );
        let each = encoded(&one);
        fill(one, each, functions)
    };
    let branches = {
        let targets = " 0".repeat((limits.max_function_bytes as usize / 2).min(60_000));
        let one = format!("(func (param i32) (block (br_table {targets} (local.get 0))))");
        let each = encoded(&one);
        fill(one, each, functions)
    };
    let locals = {
        let count = limits.max_locals as usize;
        let mut body = String::new();
        for i in (0..count).step_by(count / 2_000) {
            body.push_str(&format!("local.get {i} local.get {} i64.add local.set {i} ", count - 1 - i));
        }
        let one = format!("(func (local {}) {body})", "i64 ".repeat(count));
        let each = encoded(&one);
        fill(one, each, functions)
    };
    let nested = {
        let depth = 10_000;
        let one = format!("(func {}{})", "(block ".repeat(depth), ")".repeat(depth));
        let each = encoded(&one);
        fill(one, each, functions)
    };
    vec![
        ("many-small-functions", many),
        ("most-functions-and-code", both),
        ("largest-functions", largest),
        ("wide-branch-tables", branches),
        ("most-locals", locals),
        ("deep-nesting", nested),
    ]
}

/// This process's CPU time in seconds (utime + stime, in clock ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |n: usize| fields.get(n).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// A `/proc/self/status` figure in bytes (`VmHWM`: the peak resident size so far).
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Loads the component in `file` in this fresh process (whose memory so far is little
/// more than the file) and prints its figures as JSON.
pub fn load_one(file: &std::path::Path) -> anyhow::Result<()> {
    let component = std::fs::read(file)?;
    let engine = Engine::new(EngineSettings::default(), None)?;
    let (resident, cpu_before, started) = (status_bytes("VmRSS:"), cpu_seconds(), Instant::now());
    let outcome = match engine.load(&component) {
        Ok(_) => "accepted".to_owned(),
        Err(refusal) => refusal.code().to_owned(),
    };
    let figures = json!({
        "bytes": component.len(),
        "cpu_s": cpu_seconds() - cpu_before,
        "wall_s": started.elapsed().as_secs_f64(),
        "memory_bytes": status_bytes("VmHWM:").saturating_sub(resident),
        "outcome": outcome,
    });
    println!("{figures}");
    Ok(())
}

pub fn upload_bomb() -> anyhow::Result<()> {
    let settings = EngineSettings::default();
    println!(
        "each shape loaded once in a process of its own, single-threaded; limit {} per upload; \
         budget 30 s CPU, 512 MiB",
        bytes(settings.max_plugin_bytes)
    );
    let (mut worst_cpu, mut worst_memory) = (0.0f64, 0u64);
    let mut rows = serde_json::Map::new();
    let dir = tempfile::tempdir()?;
    for (name, component) in shapes(&settings) {
        let file = dir.path().join(format!("{name}.wasm"));
        std::fs::write(&file, component)?;
        let output = std::process::Command::new(std::env::current_exe()?)
            .args(["bench", "upload-bomb", "--load"])
            .arg(&file)
            .output()?;
        anyhow::ensure!(output.status.success(), "{name}: {}", String::from_utf8_lossy(&output.stderr));
        let text = String::from_utf8_lossy(&output.stdout);
        let figures: serde_json::Value = serde_json::from_str(text.lines().last().unwrap_or("{}"))?;
        let cpu = figures["cpu_s"].as_f64().unwrap_or(0.0);
        let memory = figures["memory_bytes"].as_u64().unwrap_or(0);
        worst_cpu = worst_cpu.max(cpu);
        worst_memory = worst_memory.max(memory);
        println!(
            "{name:<22} {:>10}  cpu {cpu:>6.2} s  memory +{:>10}  {}",
            bytes(figures["bytes"].as_u64().unwrap_or(0)),
            bytes(memory),
            figures["outcome"].as_str().unwrap_or("?")
        );
        rows.insert(name.into(), figures);
    }
    println!(
        "{}",
        json!({ "scenario": "upload-bomb", "worst_cpu_s": worst_cpu, "worst_memory_bytes": worst_memory, "shapes": rows })
    );
    Ok(())
}
