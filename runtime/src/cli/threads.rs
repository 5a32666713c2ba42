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
//!
//! The node's threads and the plug-ins' threads may also be kept apart on the cores
//! (`--node-cores N`): the node's threads on the first N cores, the plug-ins' on every
//! core, where they take what the node leaves. A node's threads wake each other many
//! times a millisecond, and each wake on a core running a plug-in preempts it; kept
//! apart, the plug-in threads on two cores spent a fifth less CPU a job and trivial jobs
//! drained about a fifth faster, but the node then has only its cores when a tenant
//! floods it with events, and another tenant's p99 beside such a flood was about half
//! as long again (BENCHMARKS.md, "The node's threads on cores of their own"). So the
//! default keeps them together. Threads inherit the set from the thread that starts
//! them: `main`'s call confines the node's runtime, its writer and its checkpoint
//! thread, and the plug-ins' runtime and the compiler's threads take every core back.

use std::sync::OnceLock;

use rustix::thread::CpuSet;

use tokio::runtime::{Builder, Handle, Runtime};

/// How much lower than the node's own threads plug-ins run (a nice value: at 10 the
/// kernel's weights give the node's threads about nine tenths of a contended core).
const NICENESS: i32 = 10;

/// The slice the node's threads ask for by default: the shortest the kernel grants.
pub const NODE_SLICE_US: u64 = 100;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The cores the process was allowed when it started (before the node was confined).
static EVERY_CORE: OnceLock<CpuSet> = OnceLock::new();

/// The executions' runtime, started at first use and kept for the process's life: one
/// thread per core of the machine, each free to run on any of them.
pub fn handle() -> anyhow::Result<Handle> {
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime.handle().clone());
    }
    let runtime = Builder::new_multi_thread()
        .thread_name("sluice-sandbox")
        .worker_threads(machine_cores())
        .enable_all()
        .on_thread_start(|| {
            use_every_core();
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

/// The machine's cores this process may use (all of them, whatever the node's own
/// threads were confined to). `available_parallelism` counts the calling thread's.
pub fn machine_cores() -> usize {
    let every = EVERY_CORE.get_or_init(this_threads_cores);
    (every.count() as usize).max(1)
}

/// Keeps the calling thread, and every thread it starts from now on, on the first
/// `cores` of the machine's cores (0, or as many as the machine has: no confinement).
/// Called by `main` before any other thread runs.
pub fn confine_node(cores: usize) {
    let every = EVERY_CORE.get_or_init(this_threads_cores);
    if cores == 0 || cores >= every.count() as usize {
        return;
    }
    let mut node = CpuSet::new();
    for core in (0..CpuSet::MAX_CPU).filter(|c| every.is_set(*c)).take(cores) {
        node.set(core);
    }
    if let Err(e) = rustix::thread::sched_setaffinity(None, &node) {
        tracing::warn!(error = %e, cores, "cannot keep the node's threads on cores of their own");
    }
}

/// Lets the calling thread run on every core the process had at start: a plug-in's
/// thread, a compiler's, a benchmark's bare loop.
pub fn use_every_core() {
    let every = EVERY_CORE.get_or_init(this_threads_cores);
    if let Err(e) = rustix::thread::sched_setaffinity(None, every) {
        tracing::warn!(error = %e, "cannot let a thread use every core");
    }
}

/// The calling thread's cores (every core, if the kernel will not say).
fn this_threads_cores() -> CpuSet {
    rustix::thread::sched_getaffinity(None).unwrap_or_else(|_| {
        let mut every = CpuSet::new();
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        for core in 0..cores.min(CpuSet::MAX_CPU) {
            every.set(core);
        }
        every
    })
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

    fn cores_of_this_thread() -> u32 {
        rustix::thread::sched_getaffinity(None).expect("this thread's cores").count()
    }

    #[test]
    fn a_confined_node_keeps_its_threads_on_its_cores_and_plugin_threads_take_every_core_back() {
        if machine_cores() < 2 {
            eprintln!("skipped: one core, nothing to keep apart");
            return;
        }
        std::thread::spawn(|| {
            confine_node(1);
            assert_eq!(cores_of_this_thread(), 1);
            // Threads the node starts (its runtime, writer, checkpoints) inherit its core.
            std::thread::spawn(|| {
                assert_eq!(cores_of_this_thread(), 1, "inherited");
                use_every_core();
                assert_eq!(cores_of_this_thread() as usize, machine_cores());
            })
            .join()
            .expect("the plug-in-like thread");
            // The plug-ins' runtime has a thread per core of the machine, not of the node.
            assert_eq!(handle().expect("the executions' runtime").metrics().num_workers(), machine_cores());
        })
        .join()
        .expect("the node-like thread");
        // 0, or every core: nothing is confined.
        std::thread::spawn(|| {
            confine_node(0);
            confine_node(machine_cores());
            assert_eq!(cores_of_this_thread() as usize, machine_cores());
        })
        .join()
        .expect("an unconfined thread");
    }
}
