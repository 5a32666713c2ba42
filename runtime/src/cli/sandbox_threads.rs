//! The threads tenants' plug-ins run on, apart from the node's own.
//!
//! A node's own work (the store's writer, the driver that starts and completes jobs, the
//! API) runs on the main runtime; jobs' executions run on a runtime of their own whose
//! threads have a lower OS priority (nice 10). When plug-ins want more CPU than the
//! machine has, the kernel then runs the node's own threads first, so a CPU-bound flood
//! of one tenant delays no other tenant's commits, starts or requests; the plug-ins
//! share what is left by the engine's fair CPU turns. One thread per core, as the main
//! runtime.

use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle, Runtime};

/// How much lower than the node's own threads plug-ins run (a nice value: at 10 the
/// kernel's weights give the node's threads about nine tenths of a contended core).
const NICENESS: i32 = 10;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The executions' runtime, started at first use and kept for the process's life.
pub fn handle() -> anyhow::Result<Handle> {
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime.handle().clone());
    }
    let runtime = Builder::new_multi_thread()
        .thread_name("sluice-sandbox")
        .enable_all()
        .on_thread_start(|| {
            // On Linux a nice value belongs to a thread: this lowers this worker only.
            if let Err(e) = rustix::process::setpriority_process(None, NICENESS) {
                tracing::warn!(error = %e, "cannot lower a sandbox thread's priority");
            }
        })
        .build()?;
    Ok(RUNTIME.get_or_init(|| runtime).handle().clone())
}
