//! How the kernel schedules a node's threads against its plug-ins' threads.
//!
//! A node's own work (the store's writer, the driver that starts and completes jobs, the
//! API) runs on the main runtime; jobs' executions run on a runtime of their own whose
//! threads have a lower OS priority (nice 10). When plug-ins want more CPU than the
//! machine has, the kernel then gives the node's own threads most of it, and the
//! plug-ins share the rest by the engine's fair CPU turns. One thread per core, as the
//! main runtime.
//!
//! Priority alone bounds the node's share, not how soon a woken node thread runs: Linux's
//! scheduler (EEVDF) lets a running plug-in thread finish its time slice (about 1.5 ms on
//! two cores) before a woken writer or driver gets the core, and a victim's commit then
//! waits behind another tenant's CPU-bound job. So the node's threads ask for the
//! shortest slice the kernel grants (`sched_setattr`'s `sched_runtime` for a normal
//! thread, honoured since Linux 6.12, clamped to 0.1–100 ms): a thread with a shorter
//! slice than the running one preempts it when it wakes. Every thread the process
//! starts inherits the main thread's slice; plug-in threads go back to the default.
//! Measured (BENCHMARKS.md, "A short slice for the node's threads"): a victim's p99
//! beside a CPU-bound flood is about two fifths lower, lower in every alternated pair;
//! trivial jobs drain about 10% slower, from the extra preemptions. `--node-slice-us 0`
//! leaves the kernel's default.

use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle, Runtime};

/// How much lower than the node's own threads plug-ins run (a nice value: at 10 the
/// kernel's weights give the node's threads about nine tenths of a contended core).
const NICENESS: i32 = 10;

/// The slice the node's threads ask for by default: the shortest the kernel grants.
pub const NODE_SLICE_US: u64 = 100;

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
            // Per thread on Linux: this lowers this worker only, and gives it the
            // kernel's default slice rather than the node's short one it inherited.
            if let Err(e) = schedule_this_thread(NICENESS, 0) {
                tracing::warn!(error = %e, "cannot lower a sandbox thread's priority");
                if let Err(e) = rustix::process::setpriority_process(None, NICENESS) {
                    tracing::warn!(error = %e, "cannot lower a sandbox thread's nice value either");
                }
            }
        })
        .build()?;
    Ok(RUNTIME.get_or_init(|| runtime).handle().clone())
}

/// Gives the calling thread, and every thread it starts from now on, a time slice of
/// `slice_us` (0: the kernel's default). Called by `main` before any other thread runs.
pub fn shorten_node_slices(slice_us: u64) {
    if let Err(e) = schedule_this_thread(0, slice_us.saturating_mul(1_000)) {
        tracing::warn!(error = %e, slice_us, "cannot shorten the node's time slices (Linux 6.12 or later)");
    }
}

/// `struct sched_attr` of `<linux/sched/types.h>`, its first version (56 bytes).
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    /// For a normal (`SCHED_OTHER`) thread: the slice it asks for, in ns (0: default).
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

/// Makes the calling thread a normal thread at `nice` with a slice of `slice_ns`.
#[cfg(target_os = "linux")]
fn schedule_this_thread(nice: i32, slice_ns: u64) -> std::io::Result<()> {
    const SCHED_OTHER: u32 = 0;
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: SCHED_OTHER,
        nice,
        runtime: slice_ns,
        ..SchedAttr::default()
    };
    // Neither libc nor rustix wraps `sched_setattr`: the raw system call, on this thread
    // (pid 0), no flags.
    // SAFETY: `attr` is a live `repr(C)` value laid out as the kernel's `struct
    // sched_attr` of the size it declares; the kernel only reads it during the call.
    #[allow(unsafe_code)]
    let result = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn schedule_this_thread(nice: i32, _slice_ns: u64) -> std::io::Result<()> {
    rustix::process::setpriority_process(None, nice).map_err(Into::into)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The calling thread's slice as the kernel reports it (a scheduler-debug kernel).
    fn slice_of_this_thread() -> Option<u64> {
        let sched = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
        sched.lines().find_map(|line| line.strip_prefix("se.slice")?.split(':').nth(1)?.trim().parse().ok())
    }

    /// A thread's slice and nice value as the kernel reports them.
    fn scheduling_of_this_thread() -> (u64, i32) {
        let slice = slice_of_this_thread().expect("se.slice");
        let nice = rustix::process::getpriority_process(None).expect("the thread's nice value");
        (slice, nice)
    }

    /// Whether this kernel honours a normal thread's requested slice (Linux 6.12) and
    /// shows it (`/proc/thread-self/sched`).
    fn kernel_shows_custom_slices() -> bool {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut numbers = release.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u32>().ok());
        let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
        version >= (6, 12) && slice_of_this_thread().is_some()
    }

    #[test]
    fn the_nodes_threads_get_a_short_slice_and_plugin_threads_the_default_at_nice_10() {
        if !kernel_shows_custom_slices() {
            eprintln!("skipped: this kernel predates requested slices (Linux 6.12) or does not show them");
            return;
        }
        std::thread::spawn(|| {
            let (default_slice, _) = scheduling_of_this_thread();
            shorten_node_slices(NODE_SLICE_US);
            let (node_slice, node_nice) = scheduling_of_this_thread();
            assert_eq!((node_slice, node_nice), (NODE_SLICE_US * 1_000, 0));
            // Inherited by the threads it starts; a sandbox thread goes back to the default.
            std::thread::spawn(move || {
                assert_eq!(scheduling_of_this_thread().0, NODE_SLICE_US * 1_000, "inherited");
                schedule_this_thread(NICENESS, 0).expect("a lower priority needs no privilege");
                assert_eq!(scheduling_of_this_thread(), (default_slice, NICENESS));
            })
            .join()
            .expect("the sandbox-like thread");
        })
        .join()
        .expect("the node-like thread");
    }
}
