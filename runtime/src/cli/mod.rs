//! Command-line interface: argument definitions and dispatch.

mod bench;
mod bench_isolation;
mod bench_upload;
mod client;
mod format;
mod plugin;
mod serve;
mod store;
mod thread_cpu;
pub mod threads;

use std::path::PathBuf;

use anyhow::Context as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use client::Remote;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Sluice: a WebAssembly plug-in host for multi-tenant business applications"
)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
    /// Log as JSON lines (one object per event, with its span's fields: a job's org,
    /// lane, job and definition at `debug` level) instead of text. `RUST_LOG` sets the
    /// level (default `info`).
    #[arg(long, global = true)]
    pub log_json: bool,
    /// The time slice, in µs, the node's own threads (writer, driver, API) ask the kernel
    /// for (Linux 6.12 or later): shorter than the plug-ins' threads', so that a woken
    /// node thread preempts a CPU-bound plug-in at once. 0 leaves the kernel's default
    /// (trivial jobs drain about 10% faster; a tenant's p99 beside another's CPU-bound
    /// jobs is about 1.6 times as long).
    #[arg(long, global = true, default_value_t = threads::NODE_SLICE_US)]
    pub node_slice_us: u64,
    /// Keep the node's own threads (writer, driver, API, checkpoints) on this many of the
    /// machine's cores; plug-ins' threads run on every core at a lower priority and take
    /// what the node leaves. On two cores, 1 drained trivial jobs about a fifth faster
    /// before the writer gathered larger groups under a stream, and 15-25% slower since;
    /// a tenant's p99 beside another's flood of events is about half as long again.
    /// 0 (the default) lets every thread run anywhere.
    #[arg(long, global = true, default_value_t = 0)]
    pub node_cores: usize,
    /// `under-load`: while plug-ins run CPU-bound guests, raise the node's own threads
    /// (writer, driver, API, checkpoints; never the plug-ins', the sync steps' or the
    /// compiler's) to real-time priority (`SCHED_RR`, its lowest level), and lower them
    /// 100 ms after the last such run: a woken node thread then takes a core from a
    /// plug-in at once, where the kernel's fair scheduler can keep it waiting up to a
    /// tick (4 ms here). Synchronous steps then run on threads of their own. Needs
    /// `CAP_SYS_NICE` (or root); refused, the node logs a warning once and stays as it
    /// is. Measured on a memory-backed store, a tenant's p99 beside another's CPU-bound
    /// jobs fell from about 3.5 times its p99 alone to below it; but the node's own work,
    /// which a tenant's requests drive, then runs ahead of every plug-in, and beside a
    /// flood of sync steps the p99 was longer in the runs measured, so `off` is the
    /// default (BENCHMARKS.md, "Real-time node threads while plug-ins hold the cores").
    #[arg(long, global = true, value_enum, default_value_t = threads::NodeRealtime::Off)]
    pub node_realtime: threads::NodeRealtime,
}

#[derive(Subcommand)]
enum Command {
    /// Check and run plug-ins locally, in the same sandbox the server uses.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Run the asynchronous service on an embedded SQLite file.
    Serve(serve::ServeArgs),
    /// Load generators: throughput, noisy-neighbour, backlog.
    Bench {
        #[command(subcommand)]
        scenario: bench::Scenario,
        #[arg(long, global = true, default_value = "target/sample-plugins/wasm32-wasip2/plugin")]
        plugins: PathBuf,
    },
    /// The store itself, for an operator: recount.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Run the demo load on a fresh data directory for a while and report per org.
    Demo {
        #[arg(long, default_value = "target/sample-plugins/wasm32-wasip2/plugin")]
        plugins: PathBuf,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Organisations and tenant tokens (operator), your own org (tenant).
    Org {
        #[command(subcommand)]
        command: client::OrgCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Quotas and throttling state.
    Quotas {
        #[command(subcommand)]
        command: client::QuotasCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Step registrations.
    Step {
        #[command(subcommand)]
        command: client::StepCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Workflows: create, version, activate, deactivate, delete.
    Workflow {
        #[command(subcommand)]
        command: client::WorkflowCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Custom APIs: register, run synchronously, delete.
    Api {
        #[command(subcommand)]
        command: client::ApiCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Fire events.
    Event {
        #[command(subcommand)]
        command: client::EventCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Bulk record upload.
    Records {
        #[command(subcommand)]
        command: client::RecordsCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// System jobs: list, show, trace, cancel, pause, resume.
    Job {
        #[command(subcommand)]
        command: client::JobCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Background operations: start, show, wait, cancel.
    Operation {
        #[command(subcommand)]
        command: client::OperationCommand,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Validate a plug-in: print its imports, exports and the limits it would run under.
    /// Exits 1 with the reason if the file is not a valid plug-in.
    Check {
        file: PathBuf,
        #[command(flatten)]
        common: CommonOptions,
    },
    /// Run a plug-in once and print its output or named error, trace log, record
    /// changes and accounting. Exits 1 if the execution failed.
    Run {
        file: PathBuf,
        /// The execution context, as JSON (`message` and `entity` are required).
        #[arg(long)]
        input: PathBuf,
        /// Records to load into the organisation first: a JSON list of entities.
        #[arg(long)]
        records: Option<PathBuf>,
        /// The step's unsecure configuration.
        #[arg(long)]
        config: Option<String>,
        /// The step's secure configuration.
        #[arg(long)]
        secure_config: Option<String>,
        /// Fuel budget (default from the engine's limits).
        #[arg(long)]
        fuel: Option<u64>,
        /// Wall-clock deadline in milliseconds.
        #[arg(long)]
        deadline_ms: Option<u64>,
        /// Linear memory limit in bytes.
        #[arg(long)]
        memory_bytes: Option<u64>,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
        /// Then run it this many times more (each with the records as loaded) and report
        /// the time per execution: instantiation, the call and teardown, as a job pays.
        #[arg(long, default_value_t = 0)]
        repeat: u32,
        #[command(flatten)]
        common: CommonOptions,
    },
    /// Upload a plug-in to a server (content-addressed: the same bytes, the same id).
    Upload {
        file: PathBuf,
        /// Its name (default: the file's name).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List the plug-ins uploaded to a server.
    List {
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(clap::Args)]
pub struct CommonOptions {
    /// Where compiled plug-ins are cached (default: $SLUICE_CACHE_DIR, else
    /// $XDG_CACHE_HOME/sluice, else ~/.cache/sluice).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Compile without reading or writing the artifact cache.
    #[arg(long)]
    no_cache: bool,
    /// The server's configuration file: its `[engine]` table (limits, complexity, plug-in
    /// size) applies here as it would on the server.
    #[arg(long)]
    server_config: Option<PathBuf>,
    /// Largest plug-in file accepted, in bytes (default: the configuration's, 32 MiB).
    #[arg(long)]
    max_plugin_bytes: Option<u64>,
}

impl CommonOptions {
    /// The engine's settings: the configuration file's, with the flags over them.
    fn engine_settings(&self) -> anyhow::Result<sluice::engine::EngineSettings> {
        let mut settings = match &self.server_config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                sluice::config::ServeConfig::parse(&text)
                    .with_context(|| format!("invalid configuration {}", path.display()))?
                    .engine
            }
            None => sluice::engine::EngineSettings::default(),
        };
        if let Some(bytes) = self.max_plugin_bytes {
            settings.max_plugin_bytes = bytes;
        }
        Ok(settings)
    }

    fn cache_dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        let env = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        self.cache_dir
            .clone()
            .or_else(|| env("SLUICE_CACHE_DIR"))
            .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("sluice")))
            .or_else(|| env("HOME").map(|d| d.join(".cache").join("sluice")))
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Plugin(command) => plugin::run(command).await,
        Command::Serve(args) => serve::serve(args).await,
        Command::Demo { plugins, seconds } => serve::demo(plugins, seconds).await,
        Command::Store(command) => {
            tokio::task::spawn_blocking(move || store::run(command)).await?.map(|()| ExitCode::SUCCESS)
        }
        Command::Bench { scenario, plugins } => {
            bench::run(scenario, &plugins).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Org { command, remote } => {
            client::run_org(command, &remote).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Quotas { command, remote } => {
            client::run_quotas(command, &remote).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Step { command, remote } => {
            client::run_step(command, &remote).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Workflow { command, remote } => {
            client::run_workflow(command, &remote).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Api { command, remote } => {
            client::run_api(command, &remote).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Event { command, remote } => {
            client::run_event(command, &remote).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Records { command, remote } => {
            client::run_records(command, &remote).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Job { command, remote } => match client::run_job(command, &remote).await {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) if e.is::<client::JobDidNotSucceed>() => Ok(ExitCode::from(1)),
            Err(e) => Err(e),
        },
        Command::Operation { command, remote } => {
            client::run_operation(command, &remote).await.map(|()| ExitCode::SUCCESS)
        }
    }
}
