//! `sluice plugin check` and `sluice plugin run`: the plug-in author's local harness.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use serde_json::json;
use sluice::engine::{
    Complexity, Engine, Execution, ExecutionContext, ExecutionRequest, Limits, LoadError, Plugin, StepConfig,
};
use sluice::records::{Entity, MemoryRecords, OrgRecords};

use super::format::{bytes, clean, count, micros};
use super::{CommonOptions, PluginCommand};

fn engine(common: &CommonOptions) -> anyhow::Result<Engine> {
    Ok(Engine::new(common.engine_settings()?, common.cache_dir().as_deref())?)
}

/// Loads a plug-in file. An over-size file is refused from its size, before it is read.
fn load(engine: &Engine, file: &Path) -> anyhow::Result<Result<Plugin, LoadError>> {
    let size = std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?.len();
    let limit = engine.settings().max_plugin_bytes;
    if size > limit {
        return Ok(Err(LoadError::TooLarge { size, limit }));
    }
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    Ok(engine.load(&bytes))
}

pub async fn run(command: PluginCommand) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommand::Upload { file, name, remote } => {
            super::client::run_plugin_remote(Some((file, name)), &remote).await.map(|()| ExitCode::SUCCESS)
        }
        PluginCommand::List { remote } => {
            super::client::run_plugin_remote(None, &remote).await.map(|()| ExitCode::SUCCESS)
        }
        PluginCommand::Check { file, common } => {
            let engine = engine(&common)?;
            let plugin = match load(&engine, &file)? {
                Ok(plugin) => plugin,
                Err(e) => {
                    eprintln!("error: {}: {e}", file.display());
                    return Ok(ExitCode::from(1));
                }
            };
            print_check(&file, &plugin, &engine.settings().default_limits, &engine.settings().complexity);
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Run {
            file,
            input,
            records,
            config,
            secure_config,
            fuel,
            deadline_ms,
            memory_bytes,
            json,
            repeat,
            common,
        } => {
            let context: ExecutionContext = read_json(&input)?;
            // The stage's view, by the rules the server applies (no post-image before
            // the operation; the Target instead).
            let stage = context.stage;
            let context = context.for_stage(stage);
            let mut initial: Vec<Entity> = match &records {
                Some(path) => read_json(path)?,
                None => Vec::new(),
            };
            // The record the context is about exists as the host's write made it, when
            // the records file does not give it (an update of it then works as on a server).
            if let (Some(id), Some(written)) =
                (&context.record_id, context.post_image.as_ref().or(context.target.as_ref()))
                && context.message != "Delete"
                && !initial.iter().any(|e| e.logical_name == context.entity && &e.id == id)
            {
                initial.push(Entity {
                    logical_name: context.entity.clone(),
                    id: id.clone(),
                    attributes: written.attributes.clone(),
                });
            }
            let fresh_store = || -> anyhow::Result<Arc<MemoryRecords>> {
                Ok(Arc::new(
                    MemoryRecords::with_records(&context.org_id, initial.clone())
                        .map_err(|e| anyhow::anyhow!("bad records file: {e}"))?,
                ))
            };
            let store = fresh_store()?;
            let engine = engine(&common)?;
            let plugin = load(&engine, &file)?
                .with_context(|| format!("{} is not a valid plug-in", file.display()))?;
            let mut limits = engine.settings().default_limits.clone();
            limits.fuel = fuel.unwrap_or(limits.fuel);
            limits.deadline_ms = deadline_ms.unwrap_or(limits.deadline_ms);
            limits.memory_bytes = memory_bytes.unwrap_or(limits.memory_bytes);
            let request = |store: Arc<MemoryRecords>| ExecutionRequest {
                context: context.clone(),
                records: OrgRecords::new(context.org_id.clone(), store),
                config: StepConfig { unsecure: config.clone(), secure: secure_config.clone() },
                limits: limits.clone(),
                stop: None,
                outbound: Default::default(),
            };
            let started = std::time::Instant::now();
            let execution = engine.execute(&plugin, request(store)).await;
            let first = started.elapsed();
            let mut times = Vec::with_capacity(repeat as usize);
            for _ in 0..repeat {
                let store = fresh_store()?;
                let started = std::time::Instant::now();
                engine.execute(&plugin, request(store)).await;
                times.push(started.elapsed());
            }
            let timing = Timing::of(first, times);
            if json {
                print_json(&plugin, &execution, timing.as_ref());
            } else {
                print_run(&file, &plugin, &execution);
                if let Some(t) = &timing {
                    println!(
                        "repeated    {} runs: median {} · p99 {} per execution (the first took {})",
                        count(t.runs),
                        micros(t.median_us),
                        micros(t.p99_us),
                        micros(t.first_us)
                    );
                }
            }
            Ok(if execution.outcome.is_ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
}

fn print_check(file: &Path, plugin: &Plugin, limits: &Limits, complexity: &Complexity) {
    let info = plugin.info();
    println!("{}: a valid Sluice plug-in", file.display());
    println!("  sha256   {}", info.content_hash);
    println!("  size     {}", bytes(info.size_bytes));
    let how = if info.from_cache { "loaded from the artifact cache" } else { "compiled" };
    println!("  native   {how} in {}", micros(info.load_time.as_micros() as u64));
    println!("  imports");
    for name in &info.imports {
        println!("    {name}");
    }
    println!("  exports");
    for name in &info.exports {
        println!("    {name}");
    }
    let (t, most) = (&info.totals, &complexity);
    println!("  contents (the engine's limit in brackets)");
    println!("    functions       {} ({})", count(t.functions), count(most.max_functions.into()));
    println!("    code            {} ({})", bytes(t.code_bytes), bytes(most.max_code_bytes));
    println!(
        "    largest body    {} ({})",
        bytes(t.largest_function_bytes),
        bytes(most.max_function_bytes.into())
    );
    println!("    most locals     {} ({})", count(t.most_locals), count(most.max_locals.into()));
    println!("    data            {} ({})", bytes(t.data_bytes), bytes(most.max_data_bytes));
    println!("    modules         {} ({})", t.modules, most.max_modules);
    println!("  limits per execution");
    println!("    fuel            {} units", count(limits.fuel));
    println!("    deadline        {} ms", count(limits.deadline_ms));
    println!("    memory          {}", bytes(limits.memory_bytes));
    println!("    table elements  {}", count(limits.table_elements));
    println!("    instances       {}", limits.instances);
    println!("    trace log       {}", bytes(limits.trace_log_bytes));
    println!("    output          {}", bytes(limits.output_bytes));
    println!("    record writes   {}", count(limits.record_writes));
}

fn print_run(file: &Path, plugin: &Plugin, execution: &Execution) {
    let info = plugin.info();
    let how = if info.from_cache { "cached" } else { "compiled" };
    println!("plugin      {} ({}, {how})", file.display(), &info.content_hash[..12]);
    match &execution.outcome {
        Ok(output) => {
            println!("outcome     succeeded");
            let pretty = serde_json::to_string_pretty(output).unwrap_or_default();
            println!("output      {}", pretty.replace('\n', "\n            "));
        }
        Err(e) => println!("outcome     failed [{}]: {}", e.code(), clean(&e.to_string())),
    }
    if !execution.changes.is_empty() {
        println!("changes     {} record write(s)", execution.changes.len());
        for change in execution.changes.iter().take(20) {
            println!("            {}", serde_json::to_string(change).unwrap_or_default());
        }
    }
    let trace = &execution.trace;
    let dropped =
        if trace.dropped() > 0 { format!(", {} older dropped", trace.dropped()) } else { String::new() };
    println!("trace       {} line(s), {}{dropped}", trace.len(), bytes(trace.bytes() as u64));
    for line in trace.lines() {
        println!("  | {}", clean(line));
    }
    let a = &execution.accounting;
    println!(
        "accounting  fuel {} · wall {} · host calls {} · peak memory {}",
        count(a.fuel_used),
        micros(a.wall_time_us),
        micros(a.host_time_us),
        bytes(a.peak_memory_bytes)
    );
}

/// Time per execution over `--repeat` runs, in microseconds, end to end.
#[derive(serde::Serialize)]
struct Timing {
    runs: u64,
    first_us: u64,
    median_us: u64,
    p99_us: u64,
}

impl Timing {
    fn of(first: std::time::Duration, mut times: Vec<std::time::Duration>) -> Option<Timing> {
        if times.is_empty() {
            return None;
        }
        times.sort();
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize].as_micros() as u64;
        Some(Timing {
            runs: times.len() as u64,
            first_us: first.as_micros() as u64,
            median_us: at(0.5),
            p99_us: at(0.99),
        })
    }
}

fn print_json(plugin: &Plugin, execution: &Execution, timing: Option<&Timing>) {
    let outcome = match &execution.outcome {
        Ok(output) => json!({ "status": "succeeded", "output": output }),
        Err(e) => json!({ "status": "failed", "error": { "code": e.code(), "message": e.to_string() } }),
    };
    let report = json!({
        "plugin": plugin.info(),
        "outcome": outcome,
        "changes": execution.changes,
        "trace": execution.trace,
        "accounting": execution.accounting,
        "repeated": timing,
    });
    println!("{report}");
}
