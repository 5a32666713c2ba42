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
//! The short slice is not enough while plug-ins run CPU-bound guests: a woken node
//! thread the fair scheduler deems to have had more than its share still waits for the
//! kernel's next tick (4 ms here) behind a plug-in thread, and a tenant's commit or
//! start with it. So while runs are seen that a poll leaves unfinished (the engine's
//! run hook), every thread of the process but the plug-ins' and the compiler's runs
//! at real-time priority (`SCHED_RR`, its lowest level), and goes back 100 ms after the
//! last such run (`--node-realtime under-load`; off by default). Trivial jobs end in
//! their first poll and never raise it, so a flood of them costs nothing more. No
//! tenant's code may run on a raised thread (a plug-in's infinite loop there would
//! hold the core at real-time priority), so synchronous steps then run on a runtime of
//! their own. Raising needs `CAP_SYS_NICE`; refused, the node warns once and keeps its
//! threads as they are. Measured (BENCHMARKS.md, "Real-time node threads while
//! plug-ins hold the cores"): beside a CPU-bound flood, a tenant's p99 on a
//! memory-backed store went from about 3.5 times its p99 alone to below it; on this
//! machine's disk the syncs' tail stays; and as the node's own work (which a tenant's
//! requests drive) then runs ahead of every plug-in, and a flood of sync steps cost
//! another tenant more in the runs measured, it is not the default.
//!
//! The node's threads and the plug-ins' threads may also be kept apart on the cores
//! (`--node-cores N`): the node's threads on the first N cores, the plug-ins' on every
//! core, where they take what the node leaves. A node's threads wake each other many
//! times a millisecond, and each wake on a core running a plug-in preempts it; kept
//! apart, the plug-in threads on two cores spent a fifth less CPU a job and trivial jobs
//! drained about a fifth faster (since the writer's linger under a stream, 15-25% slower:
//! BENCHMARKS.md, "Fewer, larger commits under a steady stream"), but the node then has
//! only its cores when a tenant floods it with events, and another tenant's p99 beside
//! such a flood was about half as long again (BENCHMARKS.md, "The node's threads on
//! cores of their own"). So the default keeps them together. Threads inherit the set from the thread that starts
//! them: `main`'s call confines the node's runtime, its writer and its checkpoint
//! thread, and the plug-ins' runtime and the compiler's threads take every core back.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use rustix::thread::CpuSet;

use tokio::runtime::{Builder, Handle, Runtime};

/// How much lower than the node's own threads plug-ins run (a nice value: at 10 the
/// kernel's weights give the node's threads about nine tenths of a contended core).
const NICENESS: i32 = 10;

/// The slice the node's threads ask for by default: the shortest the kernel grants.
pub const NODE_SLICE_US: u64 = 100;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();
static SYNC_RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The cores the process was allowed when it started (before the node was confined).
static EVERY_CORE: OnceLock<CpuSet> = OnceLock::new();

/// Whether the node's threads are raised to real-time priority while plug-ins run
/// CPU-bound guests (`--node-realtime`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NodeRealtime {
    /// Raised while CPU-bound runs are seen, lowered [`CALM_MS`] after the last one.
    UnderLoad,
    /// Never raised.
    Off,
}

/// How long after the last CPU-bound poll the node's threads stay raised: long enough
/// that a flood's short gaps (a batch of its jobs ending together) do not flip them
/// back and forth, short enough that a node drained of CPU-bound work gives plug-ins
/// back their share of its wakes within a blink.
const CALM_MS: u64 = 100;

/// The node's threads' state: never raised (off, or not permitted), at their normal
/// priority, or raised.
const NEVER: u8 = 0;
const NORMAL: u8 = 1;
const RAISED: u8 = 2;
static NODE_PRIORITY: AtomicU8 = AtomicU8::new(NEVER);
/// When a poll last left a guest unfinished, in ms since `STARTED`.
static LAST_LONG_RUN_MS: AtomicU64 = AtomicU64::new(0);
/// The slice the node's threads get back when lowered (ns; 0: the kernel's default).
static NODE_SLICE_NS: AtomicU64 = AtomicU64::new(0);
/// Held while the node's threads are being raised or lowered.
static CHANGING: Mutex<()> = Mutex::new(());
static STARTED: OnceLock<Instant> = OnceLock::new();

/// Threads whose names start so run tenants' code (plug-ins, the compiler): never raised.
const TENANT_THREADS: [&str; 3] = ["sluice-sandbox", "sluice-sync", "sluice-compile"];

/// Whether the node's threads may be raised (`--node-realtime under-load`, and not
/// refused so far): then no tenant's code may run on them (see `sync_steps_handle`).
fn node_may_be_raised() -> bool {
    NODE_PRIORITY.load(Ordering::Relaxed) != NEVER
}

/// Raises the node's own threads to real-time priority while plug-ins run CPU-bound
/// guests, as `mode` says (see `--node-realtime`); `slice_us` is the slice they get back
/// when lowered. Called by `main` once.
pub fn raise_node_under_load(mode: NodeRealtime, slice_us: u64) {
    if mode == NodeRealtime::Off {
        return;
    }
    STARTED.get_or_init(Instant::now);
    NODE_SLICE_NS.store(slice_us.saturating_mul(1_000), Ordering::Relaxed);
    NODE_PRIORITY.store(NORMAL, Ordering::Relaxed);
    sluice::engine::set_run_hook(|long| {
        on_run(long, || STARTED.get().map_or(0, |started| started.elapsed().as_millis() as u64));
    });
}

/// A run seen at `now_ms()`: a poll that left a guest unfinished (`long`) raises the
/// node's threads; a run that ended in its first poll, [`CALM_MS`] after the last
/// long one, lowers them. The clock is read only when it matters: not for a trivial
/// job's run while nothing is raised (every job's path).
fn on_run(long: bool, now_ms: impl FnOnce() -> u64) {
    let state = NODE_PRIORITY.load(Ordering::Relaxed);
    if long {
        LAST_LONG_RUN_MS.store(now_ms(), Ordering::Relaxed);
        if state == NORMAL {
            set_node_priority(true);
        }
    } else if state == RAISED && now_ms().saturating_sub(LAST_LONG_RUN_MS.load(Ordering::Relaxed)) >= CALM_MS
    {
        set_node_priority(false);
    }
}

/// Raises (or lowers) every thread of the process but the tenants' ones. A thread the
/// kernel will not raise (no permission) stops the feature for the process's life.
fn set_node_priority(raise: bool) {
    // Another thread is changing them already: it does this one's work too.
    let Ok(_changing) = CHANGING.try_lock() else { return };
    let (from, to) = if raise { (NORMAL, RAISED) } else { (RAISED, NORMAL) };
    if NODE_PRIORITY.load(Ordering::Relaxed) != from {
        return;
    }
    let threads = node_threads();
    let slice_ns = NODE_SLICE_NS.load(Ordering::Relaxed);
    for (n, tid) in threads.iter().enumerate() {
        let set = if raise { schedule_thread_realtime(*tid) } else { schedule_thread(*tid, 0, slice_ns) };
        let refused = match set {
            Ok(()) => None,
            // The thread ended since the list was read.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => None,
            // Lowering is never refused; a thread it missed is the next raise's.
            Err(_) if !raise => None,
            Err(e) => Some(e),
        };
        if let Some(e) = refused {
            // Raising was refused; the threads raised so far go back.
            tracing::warn!(error = %e, "cannot raise the node's threads to real-time priority under load \
                (needs CAP_SYS_NICE); they stay at their normal priority");
            for tid in &threads[..n] {
                let _ = schedule_thread(*tid, 0, slice_ns);
            }
            NODE_PRIORITY.store(NEVER, Ordering::Relaxed);
            return;
        }
    }
    NODE_PRIORITY.store(to, Ordering::Relaxed);
    tracing::debug!(raised = raise, threads = threads.len(), "the node's threads' priority changed");
}

/// The process's threads but those that run tenants' code, by their names.
fn node_threads() -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return Vec::new() };
    tasks
        .filter_map(|task| {
            let task = task.ok()?;
            let tid: i32 = task.file_name().to_str()?.parse().ok()?;
            let name = std::fs::read_to_string(task.path().join("comm")).ok()?;
            (!TENANT_THREADS.iter().any(|tenant| name.starts_with(tenant))).then_some(tid)
        })
        .collect()
}

/// The executions' runtime, started at first use and kept for the process's life: one
/// thread per core of the machine, each free to run on any of them.
pub fn handle() -> anyhow::Result<Handle> {
    tenant_runtime(&RUNTIME, "sluice-sandbox")
}

/// The synchronous steps' runtime, as the executions' (a runtime of its own, so that a
/// flood of sync steps does not queue in front of jobs' executions): tenants' code off
/// the node's threads, which [`raise_node_under_load`] may raise. Used only then: on
/// the request's own task (a node thread at normal priority) a sync flood cost another
/// tenant less in the runs measured (BENCHMARKS.md, "Real-time node threads while
/// plug-ins hold the cores").
fn sync_steps_handle() -> anyhow::Result<Handle> {
    tenant_runtime(&SYNC_RUNTIME, "sluice-sync")
}

/// Where a service's synchronous steps run (`Options::sync_steps`): their own runtime
/// when the node's threads may be raised, else the request's task.
pub fn sync_steps_runtime() -> anyhow::Result<Option<Handle>> {
    node_may_be_raised().then(sync_steps_handle).transpose()
}

/// A runtime for tenants' code, started at first use and kept for the process's life:
/// one thread per core of the machine, each free to run on any of them, at nice 10.
fn tenant_runtime(cell: &'static OnceLock<Runtime>, name: &'static str) -> anyhow::Result<Handle> {
    if let Some(runtime) = cell.get() {
        return Ok(runtime.handle().clone());
    }
    let runtime = Builder::new_multi_thread()
        .thread_name(name)
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
    Ok(cell.get_or_init(|| runtime).handle().clone())
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

impl SchedAttr {
    /// The attributes of `policy`, every other field zero (its default).
    fn of(policy: u32) -> SchedAttr {
        SchedAttr { size: std::mem::size_of::<SchedAttr>() as u32, policy, ..SchedAttr::default() }
    }
}

/// Makes the calling thread a normal thread at `nice` with a slice of `slice_ns`.
fn schedule_this_thread(nice: i32, slice_ns: u64) -> std::io::Result<()> {
    schedule_thread(0, nice, slice_ns)
}

/// Makes thread `tid` (0: the calling one) a normal thread at `nice` with a slice of
/// `slice_ns`.
#[cfg(target_os = "linux")]
fn schedule_thread(tid: i32, nice: i32, slice_ns: u64) -> std::io::Result<()> {
    const SCHED_OTHER: u32 = 0;
    set_sched_attr(tid, &SchedAttr { nice, runtime: slice_ns, ..SchedAttr::of(SCHED_OTHER) })
}

/// Makes thread `tid` a real-time (`SCHED_RR`) thread at the lowest real-time priority.
#[cfg(target_os = "linux")]
fn schedule_thread_realtime(tid: i32) -> std::io::Result<()> {
    const SCHED_RR: u32 = 2;
    set_sched_attr(tid, &SchedAttr { priority: 1, ..SchedAttr::of(SCHED_RR) })
}

#[cfg(target_os = "linux")]
fn set_sched_attr(tid: i32, attr: &SchedAttr) -> std::io::Result<()> {
    // Neither libc nor rustix wraps `sched_setattr`: the raw system call, on thread `tid`
    // (0: the calling thread), no flags.
    // SAFETY: `attr` is a live `repr(C)` value laid out as the kernel's `struct
    // sched_attr` of the size it declares; the kernel only reads it during the call.
    #[allow(unsafe_code)]
    let result = unsafe { libc::syscall(libc::SYS_sched_setattr, tid, attr as *const SchedAttr, 0) };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn schedule_thread(_tid: i32, nice: i32, _slice_ns: u64) -> std::io::Result<()> {
    rustix::process::setpriority_process(None, nice).map_err(Into::into)
}

#[cfg(not(target_os = "linux"))]
fn schedule_thread_realtime(_tid: i32) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Held by each test here: raising the node's threads changes every thread of the
    /// process but the tenants', the other tests' threads included (a real-time thread
    /// shows no `se.slice`), so these tests take turns.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
        ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

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
        let _turn = one_at_a_time();
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

    /// A thread's scheduling policy, as the kernel reports it.
    fn policy_of(tid: i32) -> i32 {
        // SAFETY: a plain query by thread id; no memory is passed.
        #[allow(unsafe_code)]
        unsafe {
            libc::sched_getscheduler(tid)
        }
    }

    /// A thread with `name` that reports its id and waits until `done` is dropped.
    fn parked_thread(name: &str) -> (i32, std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
        let (id_tx, id_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                id_tx.send(rustix::thread::gettid().as_raw_nonzero().get()).expect("the test waits");
                let _ = done_rx.recv();
            })
            .expect("a thread");
        (id_rx.recv().expect("its id"), done_tx, thread)
    }

    #[test]
    fn the_nodes_threads_are_raised_while_guests_run_long_and_lowered_when_calm_never_the_tenants() {
        let _turn = one_at_a_time();
        const SCHED_OTHER: i32 = 0;
        const SCHED_RR: i32 = 2;
        let (node, node_done, node_thread) = parked_thread("sluice-writer");
        let (plugin, plugin_done, plugin_thread) = parked_thread("sluice-sandbox");
        let (compiler, compiler_done, compiler_thread) = parked_thread("sluice-compile-0");
        let (sync_step, sync_done, sync_thread) = parked_thread("sluice-sync");
        NODE_SLICE_NS.store(0, Ordering::Relaxed);
        NODE_PRIORITY.store(NORMAL, Ordering::Relaxed);

        // Short runs alone raise nothing.
        on_run(false, || 1_000);
        assert_eq!(NODE_PRIORITY.load(Ordering::Relaxed), NORMAL);
        assert_eq!(policy_of(node), SCHED_OTHER);

        // A guest left unfinished by its poll: the node's threads are raised, if the
        // kernel lets this process; otherwise the feature turns itself off.
        on_run(true, || 2_000);
        if NODE_PRIORITY.load(Ordering::Relaxed) == NEVER {
            eprintln!("this process may not use real-time priority: checked that nothing was raised");
            assert_eq!(policy_of(node), SCHED_OTHER);
        } else {
            assert_eq!(NODE_PRIORITY.load(Ordering::Relaxed), RAISED);
            assert_eq!(policy_of(node), SCHED_RR, "the node's thread is raised");
            assert_eq!(policy_of(plugin), SCHED_OTHER, "a plug-in's thread never is");
            assert_eq!(policy_of(compiler), SCHED_OTHER, "nor a compiler's");
            assert_eq!(policy_of(sync_step), SCHED_OTHER, "nor a sync step's");
            // Within the calm period a short run changes nothing; after it, it lowers.
            on_run(false, || 2_000 + CALM_MS - 1);
            assert_eq!(policy_of(node), SCHED_RR);
            on_run(true, || 2_050);
            on_run(false, || 2_050 + CALM_MS - 1);
            assert_eq!(policy_of(node), SCHED_RR, "the calm period counts from the last long run");
            on_run(false, || 2_050 + CALM_MS);
            assert_eq!(NODE_PRIORITY.load(Ordering::Relaxed), NORMAL);
            assert_eq!(policy_of(node), SCHED_OTHER, "lowered once calm");
        }
        for done in [node_done, plugin_done, compiler_done, sync_done] {
            drop(done);
        }
        for thread in [node_thread, plugin_thread, compiler_thread, sync_thread] {
            thread.join().expect("a parked thread");
        }
    }

    #[test]
    fn a_confined_node_keeps_its_threads_on_its_cores_and_plugin_threads_take_every_core_back() {
        let _turn = one_at_a_time();
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
