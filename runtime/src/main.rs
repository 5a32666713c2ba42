//! The `sluice` command: a thin shell over the library.

mod cli;

/// mimalloc rather than glibc's malloc: a job's path allocates and frees many small
/// objects across the runtime's threads (its context, its task, its instance's
/// bookkeeping), and glibc's arenas spent a sixth of the workers' time there, much of it
/// consolidating free chunks (see BENCHMARKS.md, "The allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::Parser;

/// Logs go to stderr: text, or JSON lines with `--log-json`.
fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,cranelift=warn,wasmtime=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().with_current_span(true).with_span_list(false).init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let args = cli::Args::parse();
    init_logging(args.log_json);
    // Before the runtime starts its threads: they inherit the slice and the cores.
    if args.node_slice_us > 0 {
        cli::threads::shorten_node_slices(args.node_slice_us);
    }
    // The compiler's threads (wasmtime compiles on rayon's global pool) are tenants'
    // work like the plug-ins': every core, not the node's. Started before the node is
    // confined, so that they count every core.
    let compiler = rayon::ThreadPoolBuilder::new()
        .num_threads(cli::threads::machine_cores())
        .thread_name(|n| format!("sluice-compile-{n}"))
        .start_handler(|_| cli::threads::use_every_core())
        .build_global();
    if let Err(e) = compiler {
        tracing::warn!(error = %e, "cannot set up the compiler's threads");
    }
    cli::threads::confine_node(args.node_cores);
    cli::threads::raise_node_under_load(args.node_realtime, args.node_slice_us);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
