//! One execution: a fresh `Store` with its host state and limits, instantiation, the
//! handler call under fuel and deadline, and the mapping of whatever happened to an
//! [`ExecutionError`] with accounting.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use sluice_core::run::Accounting;
use wasmtime::component::ResourceTable;
use wasmtime::{CallHook, Store, StoreContextMut, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx};

use super::convert::{context_to_wit, output_from_wit};
use super::cpu::CpuTurn;
use super::host::bindings::exports::sluice::plugin::handler::{Output, PluginError};
use super::host::{ExecutionState, HostTrap, StepConfig};
use super::limiter::Limiter;
use super::outbound::{Outbound, OutboundAccess};
use super::trace_log::TraceLog;
use super::{Engine, ExecutionContext, ExecutionError, Limits, Plugin, PluginOutput};
use sluice_core::records::{OrgRecords, RecordChange};

/// Everything an execution needs besides the plug-in.
pub struct ExecutionRequest {
    pub context: ExecutionContext,
    pub records: OrgRecords,
    pub config: StepConfig,
    pub limits: Limits,
    /// Raised to stop the run at its next yield (a cancel or pause of its job).
    pub stop: Option<StopSignal>,
    /// What the org's plug-ins may reach over HTTP beyond the public internet.
    pub outbound: OutboundAccess,
}

/// Asks a running execution to stop; it ends with [`ExecutionError::Stopped`] at its
/// next yield (within `fuel-yield-interval` units of fuel).
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<AtomicBool>);

impl StopSignal {
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// How a guarded run ended.
enum Ended<T> {
    Done(T),
    Deadline,
    Stopped,
}

/// The result of one execution.
#[derive(Debug, Clone)]
pub struct Execution {
    pub outcome: Result<PluginOutput, ExecutionError>,
    pub trace: TraceLog,
    pub accounting: Accounting,
    /// The record writes the plug-in made, in order.
    pub changes: Vec<RecordChange>,
}

/// The clocks a guest sees are frozen at the start of its execution: a plug-in gets the
/// time from its context, not by polling a clock (this also keeps replays identical).
struct FrozenClock(Duration);

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        self.0
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> u64 {
        0
    }
}

fn sandboxed_wasi(stdout: &MemoryOutputPipe, stderr: &MemoryOutputPipe) -> WasiCtx {
    let started = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    WasiCtx::builder()
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .wall_clock(FrozenClock(started))
        .monotonic_clock(FrozenClock(started))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}

/// A poll that held the CPU this long and left its guest unfinished is a CPU-bound
/// guest's (a fuel yield comes every 100,000 units of fuel, well over this much guest
/// code); a guest that waits on a host call gives its turn back sooner.
const LONG_POLL: Duration = Duration::from_micros(25);

/// Told of every run as it goes: `true` for each poll that held the CPU at least
/// `LONG_POLL` and left its guest unfinished (a CPU-bound guest at its fuel yield),
/// `false` for a run that ended in its first poll. Set once per process by
/// [`set_run_hook`]; the binary uses it to raise its own threads' priority while
/// plug-ins hold the cores.
static RUN_HOOK: std::sync::OnceLock<fn(bool)> = std::sync::OnceLock::new();

/// Sets the function told how runs go (see `RUN_HOOK`); only the first call counts.
/// It runs on the thread that polled the run, so it must be quick.
pub fn set_run_hook(hook: fn(bool)) {
    let _ = RUN_HOOK.set(hook);
}

fn tell_run_hook(long: bool) {
    if let Some(hook) = RUN_HOOK.get() {
        hook(long);
    }
}

/// Polls `work` until it finishes, `deadline` passes or `stop` is raised, each poll in a
/// CPU turn (`turn`, given back after the poll and charged for it, and for the record
/// calls made for the guest on other threads meanwhile: `host_ns`). Fuel yields make a
/// running guest return `Pending` regularly, so the clock is checked, and the turn passes
/// on, even in a tight loop; the tokio timer covers a guest parked in an async host call.
async fn guarded<F: Future>(
    deadline: Instant,
    stop: Option<&StopSignal>,
    mut turn: CpuTurn,
    host_ns: &AtomicU64,
    work: F,
) -> Ended<F::Output> {
    let mut work = pin!(work);
    // The deadline's timer is set by the first poll that leaves the run waiting (for a
    // CPU turn or in a host call): most runs end in their first poll, and a timer costs
    // a registration with tokio's driver and a clock read per run.
    let mut timer = pin!(None::<tokio::time::Sleep>);
    // The first poll comes microseconds after the deadline was set from the start: its
    // clock read is saved (a sixth of what an execution spends reading clocks).
    let mut first_poll = true;
    let mut first_run = true;
    std::future::poll_fn(|cx| {
        if stop.is_some_and(StopSignal::is_stopped) {
            return Poll::Ready(Ended::Stopped);
        }
        if !std::mem::take(&mut first_poll) && Instant::now() >= deadline {
            return Poll::Ready(Ended::Deadline);
        }
        if turn.poll_take(cx).is_ready() {
            let polled = work.as_mut().poll(cx);
            let extra_ns = host_ns.swap(0, Ordering::Relaxed);
            let ran_first = std::mem::replace(&mut first_run, false);
            if let Poll::Ready(output) = polled {
                // Given back as the turn is dropped, on the way out.
                turn.keep_until_drop(extra_ns);
                if ran_first {
                    tell_run_hook(false);
                }
                return Poll::Ready(Ended::Done(output));
            }
            // Left unfinished after holding the CPU a while: a CPU-bound guest at its
            // fuel yield (a guest that only waits on its host calls holds it briefly).
            if turn.give_back(extra_ns) >= LONG_POLL {
                tell_run_hook(true);
            }
        }
        if timer.is_none() {
            timer.set(Some(tokio::time::sleep_until(deadline.into())));
        }
        match timer.as_mut().as_pin_mut().map(|sleep| sleep.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Ended::Deadline),
            _ => Poll::Pending,
        }
    })
    .await
}

impl Engine {
    /// Runs a plug-in once. Never panics on anything the plug-in does: every failure is
    /// an [`ExecutionError`] in the returned [`Execution`].
    pub async fn execute(&self, plugin: &Plugin, request: ExecutionRequest) -> Execution {
        let started = Instant::now();
        let limits = request.limits;
        let turn = self.inner.cpu.execution(request.records.org());
        let trace_limit = usize::try_from(limits.trace_log_bytes).unwrap_or(usize::MAX);
        let stdout = MemoryOutputPipe::new(trace_limit);
        let stderr = MemoryOutputPipe::new(trace_limit);
        let deadline = started + limits.deadline();
        let outbound = Outbound::new(&request.outbound, &limits, deadline);
        let state = ExecutionState {
            wasi: sandboxed_wasi(&stdout, &stderr),
            table: ResourceTable::new(),
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            outbound,
            limiter: Limiter::new(limits.memory_bytes, limits.table_elements, limits.instances),
            records: request.records,
            config: request.config,
            trace: TraceLog::new(trace_limit),
            host_time: Duration::ZERO,
            changes: Vec::new(),
            record_write_limit: limits.record_writes,
            write_attempts: 0,
            fuel_debt: 0,
            record_turns: self.inner.record_turns.clone(),
            record_gate: None,
            host_ns: Arc::default(),
        };
        let mut store = Store::new(&self.inner.wasmtime, state);
        store.limiter(|state| &mut state.limiter);
        // wasmtime 48 (feature `call-hook`): the hook runs as every host call returns to
        // the guest, with the store in hand, so what the call cost is taken from the fuel.
        // Only record calls cost fuel: a plug-in that does not import them never owes
        // any, and runs without the hook (wasmtime calls it at every crossing between
        // guest and host, instantiation's included).
        if plugin.pays_host_fuel {
            store.call_hook(|mut store, hook| match hook {
                CallHook::ReturningFromHost => pay_host_fuel(&mut store),
                _ => Ok(()),
            });
        }
        let fuel_ready = store
            .set_fuel(limits.fuel)
            .and_then(|()| store.fuel_async_yield_interval(Some(self.inner.settings.fuel_yield_interval)));
        if let Err(e) = fuel_ready {
            // Only possible if the engine were built without fuel, which `Engine::new` rules out.
            unreachable!("fuel is enabled on every Sluice engine: {e}");
        }

        let context = context_to_wit(request.context);
        let host_ns = store.data().host_ns.clone();
        let ran = guarded(deadline, request.stop.as_ref(), turn, &host_ns, async {
            let instance = self.instantiate(plugin, &mut store, &limits).await?;
            let call = async {
                let handler = plugin.handler(&mut store, &instance)?;
                handler.call_async(&mut store, (&context,)).await.map(|(output,)| output)
            };
            Ok(call.await)
        })
        .await;

        let fuel_used = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        let outcome = match ran {
            Ended::Deadline => Err(ExecutionError::DeadlineExceeded { limit: limits.deadline() }),
            Ended::Stopped => Err(ExecutionError::Stopped),
            Ended::Done(Err(instantiation)) => Err(instantiation),
            Ended::Done(Ok(call)) => self.outcome(call, store.data(), &limits),
        };

        let state = store.into_data();
        let mut trace = state.trace;
        let mut host_time = state.host_time;
        if let Some(usage) = state.outbound.usage() {
            for note in usage.notes.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                trace.push(note);
            }
            host_time += Duration::from_nanos(usage.spent_ns.load(Ordering::Relaxed));
        }
        for (stream, pipe) in [("stdout", &stdout), ("stderr", &stderr)] {
            for line in String::from_utf8_lossy(&pipe.contents()).lines() {
                trace.push(&format!("[{stream}] {line}"));
            }
        }
        Execution {
            outcome,
            trace,
            accounting: Accounting {
                fuel_used,
                wall_time_us: started.elapsed().as_micros() as u64,
                host_time_us: host_time.as_micros() as u64,
                peak_memory_bytes: state.limiter.peak_memory as u64,
            },
            changes: state.changes,
        }
    }

    async fn instantiate(
        &self,
        plugin: &Plugin,
        store: &mut Store<ExecutionState>,
        limits: &Limits,
    ) -> Result<wasmtime::component::Instance, ExecutionError> {
        match plugin.pre.instantiate_async(&mut *store).await {
            Ok(instance) => Ok(instance),
            Err(e) if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some() => {
                Err(ExecutionError::Busy { slots: self.inner.settings.max_concurrent_executions })
            }
            Err(e) => Err(classify_fault(e, store.data(), limits)),
        }
    }

    /// Turns what the handler call returned into the execution's outcome.
    fn outcome(
        &self,
        call: wasmtime::Result<Result<Output, PluginError>>,
        state: &ExecutionState,
        limits: &Limits,
    ) -> Result<PluginOutput, ExecutionError> {
        match call {
            Ok(Ok(output)) => {
                // A value the host cannot store is the plug-in's own bug: not retried.
                let output = output_from_wit(output)
                    .map_err(|e| ExecutionError::Business { message: format!("invalid output: {e}") })?;
                let size = output.encoded_len();
                if size > limits.output_bytes {
                    return Err(ExecutionError::OutputTooLarge { size, limit: limits.output_bytes });
                }
                Ok(output)
            }
            Ok(Err(PluginError::Business(message))) => Err(ExecutionError::Business { message }),
            Ok(Err(PluginError::Transient(message))) => Err(ExecutionError::Transient { message }),
            Err(fault) => Err(classify_fault(fault, state, limits)),
        }
    }
}

/// Takes what the host calls since the guest last ran cost from its fuel; past what is
/// left, the execution ends as out of fuel.
fn pay_host_fuel(store: &mut StoreContextMut<'_, ExecutionState>) -> wasmtime::Result<()> {
    let debt = std::mem::take(&mut store.data_mut().fuel_debt);
    if debt == 0 {
        return Ok(());
    }
    let fuel = store.get_fuel()?;
    if debt > fuel {
        store.set_fuel(0)?;
        return Err(Trap::OutOfFuel.into());
    }
    store.set_fuel(fuel - debt)
}

/// Names a fault raised while instantiating or running the guest.
fn classify_fault(fault: wasmtime::Error, state: &ExecutionState, limits: &Limits) -> ExecutionError {
    match fault.downcast_ref::<HostTrap>() {
        Some(HostTrap::RecordWriteLimit { limit }) => {
            return ExecutionError::RecordWriteLimitExceeded { limit: *limit };
        }
        Some(failure @ HostTrap::HostFailure(_)) => {
            return ExecutionError::Transient { message: failure.to_string() };
        }
        None => {}
    }
    let memory_exceeded = ExecutionError::MemoryLimitExceeded { limit: limits.memory_bytes };
    if let Some(trap) = fault.downcast_ref::<Trap>() {
        return match trap {
            Trap::OutOfFuel => ExecutionError::FuelExhausted { limit: limits.fuel },
            Trap::StackOverflow => ExecutionError::StackOverflow,
            // A refused memory.grow is followed by the guest's allocator giving up.
            _ if state.limiter.memory_refused => memory_exceeded,
            other => ExecutionError::Trap { code: other.to_string() },
        };
    }
    if state.limiter.memory_refused {
        return memory_exceeded;
    }
    let message = fault.root_cause().to_string();
    // wasmtime 48 reports a store's instance/memory/table count limit with this text.
    if message.contains("resource limit exceeded") {
        return ExecutionError::InstanceLimitExceeded { limit: limits.instances };
    }
    // Anything else failed while crossing the boundary: the guest handed the host
    // values that break the canonical ABI (invalid UTF-8, bad pointers, ...).
    ExecutionError::InvalidHostCall { message }
}
