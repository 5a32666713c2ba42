//! The host side of an execution: the state a `Store` holds for one plug-in run, and the
//! host interfaces of `wit/plugin.wit` (records, tracing, config) implemented on it.
//!
//! Host calls are timed into the execution's accounting and cost fuel for the work they
//! do ([`cost`]), so host CPU is never free. Record calls run on tokio's blocking pool,
//! at most [`RECORD_CALLS_PER_ORG`] of one org's at once, so a slow call waits for its
//! own org's turn and never holds a runtime worker that other tenants' executions need.
//! A host call can end the run (a trap) only for the limits in [`HostTrap`]; record
//! errors go back to the plug-in as values it can handle.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::convert::{attributes_from_wit, entity_to_wit, filter_from_wit, record_error_to_wit};
use super::limiter::Limiter;
use super::trace_log::TraceLog;
use sluice_core::records::{OrgRecords, RecordChange, RecordError, weight};

/// Bindings generated from `wit/plugin.wit`.
///
/// wasmtime 48: imports are `trappable` (host functions return `wasmtime::Result`, whose
/// `Err` traps the guest) and the export is `async`, so execution can yield on fuel and
/// the deadline can be enforced between yields.
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../../../wit",
        // Record calls are async on the host (the guest still sees a blocking call):
        // they wait for the org's turn and the store without blocking a worker.
        imports: { "sluice:plugin/records": async | trappable, default: trappable },
        exports: { default: async },
    });
}

use bindings::sluice::plugin::{config, context, records, tracing, types};

/// The step configuration a plug-in can read.
#[derive(Debug, Clone, Default)]
pub struct StepConfig {
    pub unsecure: Option<String>,
    pub secure: Option<String>,
}

/// Fuel charged for host calls, on top of the guest's own instructions: about what the
/// host's work costs in guest instructions (one unit is about one instruction). Taken
/// from the guest's fuel when the call returns; a call that costs more than what is left
/// ends the execution with `FuelExhausted`.
pub mod cost {
    /// Any record call (a round trip to the store).
    pub const RECORD_CALL: u64 = 5_000;
    /// Each record a query reads, matching or not (parsing and filtering it).
    pub const RECORD_READ: u64 = 2_000;
    /// Each byte of attributes moved into or out of the store.
    pub const BYTE: u64 = 2;
    /// Each byte written to the trace log.
    pub const TRACE_BYTE: u64 = 1;
}

/// Record calls of one org that may run at once on this node (the rest of its calls
/// wait their turn): what keeps one org's query storm from holding the store's readers
/// and the cores, whatever its thread cap.
pub const RECORD_CALLS_PER_ORG: usize = 1;

/// A limit enforced inside a host call; raised as a trap and mapped to its
/// [`ExecutionError`](super::ExecutionError) when the run ends.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HostTrap {
    #[error("more than {limit} record writes in one execution")]
    RecordWriteLimit { limit: u64 },
    /// The host failed to serve a call (not the plug-in's fault): a transient error.
    #[error("the host failed to serve a record call: {0}")]
    HostFailure(String),
}

/// Everything one execution's `Store` holds.
pub(crate) struct ExecutionState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub http: wasmtime_wasi_http::WasiHttpCtx,
    pub outbound: super::outbound::Outbound,
    pub limiter: Limiter,
    pub records: OrgRecords,
    pub config: StepConfig,
    pub trace: TraceLog,
    pub host_time: Duration,
    pub changes: Vec<RecordChange>,
    pub record_write_limit: u64,
    /// Record writes tried, refused ones included: the write limit counts attempts.
    pub write_attempts: u64,
    /// Fuel the host calls since the guest last ran have cost (taken when they return).
    pub fuel_debt: u64,
    /// Every org's turns to make record calls on this node; this org's are looked up at
    /// the execution's first record call (most make none) and kept in `record_gate`.
    pub record_turns: Arc<crate::turns::Turns<String>>,
    pub record_gate: Option<Arc<tokio::sync::Semaphore>>,
    /// Time record calls spent on the blocking pool, not yet charged to the org's CPU
    /// turns (see `execute::guarded`): host work done for a guest counts in its org's
    /// share like the guest's own code.
    pub host_ns: Arc<std::sync::atomic::AtomicU64>,
}

impl ExecutionState {
    /// Runs a host call, adding its duration to the execution's host time.
    fn timed<R>(&mut self, call: impl FnOnce(&mut Self) -> R) -> R {
        let started = Instant::now();
        let result = call(self);
        self.host_time += started.elapsed();
        result
    }

    /// Counts a record write (whether it will succeed or not) against the limit; past
    /// it, the execution traps.
    fn count_write(&mut self) -> wasmtime::Result<()> {
        if self.write_attempts >= self.record_write_limit {
            return Err(wasmtime::Error::new(HostTrap::RecordWriteLimit { limit: self.record_write_limit }));
        }
        self.write_attempts += 1;
        Ok(())
    }

    fn charge(&mut self, fuel: u64) {
        self.fuel_debt = self.fuel_debt.saturating_add(fuel);
    }

    /// Runs a record call on the blocking pool once it is this org's turn, timed into
    /// the host time (waiting for the turn included: it is time the call took).
    async fn record_call<R: Send + 'static>(
        &mut self,
        call: impl FnOnce(&OrgRecords) -> R + Send + 'static,
    ) -> wasmtime::Result<R> {
        let started = Instant::now();
        let gate = match &self.record_gate {
            Some(gate) => gate.clone(),
            None => self.record_gate.insert(self.record_turns.of(&self.records.org().to_owned())).clone(),
        };
        let _turn = gate.acquire_owned().await.map_err(|e| HostTrap::HostFailure(e.to_string()))?;
        let records = self.records.clone();
        let done = tokio::task::spawn_blocking(move || {
            let working = Instant::now();
            (call(&records), working.elapsed())
        })
        .await;
        self.host_time += started.elapsed();
        let done = done.map(|(result, working)| {
            self.host_ns.fetch_add(working.as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
            result
        });
        done.map_err(|e| wasmtime::Error::new(HostTrap::HostFailure(e.to_string())))
    }
}

impl WasiView for ExecutionState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl wasmtime_wasi_http::WasiHttpView for ExecutionState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

impl types::Host for ExecutionState {}
impl context::Host for ExecutionState {}

type RecordResult<T> = wasmtime::Result<Result<T, records::RecordError>>;

fn reply<T>(result: Result<T, RecordError>) -> RecordResult<T> {
    Ok(result.map_err(|e| record_error_to_wit(&e)))
}

impl records::Host for ExecutionState {
    async fn create(&mut self, entity: String, attributes: Vec<types::Attribute>) -> RecordResult<String> {
        self.count_write()?;
        let attributes = match attributes_from_wit(attributes) {
            Ok(attributes) => attributes,
            Err(refused) => return reply(Err(refused)),
        };
        self.charge(cost::RECORD_CALL + cost::BYTE * weight(&attributes));
        let (name, written) = (entity.clone(), attributes.clone());
        let created = self.record_call(move |records| records.create(&name, written)).await?;
        if let Ok(id) = &created {
            let mut attributes = attributes;
            attributes.remove("id");
            self.changes.push(RecordChange::Create { entity, id: id.clone(), attributes });
        }
        reply(created)
    }

    async fn retrieve(
        &mut self,
        entity: String,
        id: String,
        columns: Vec<String>,
    ) -> RecordResult<types::Entity> {
        self.charge(cost::RECORD_CALL);
        let found = self.record_call(move |records| records.retrieve(&entity, &id, &columns)).await?;
        if let Ok(found) = &found {
            self.charge(cost::BYTE * weight(&found.attributes));
        }
        reply(found.map(entity_to_wit))
    }

    async fn update(
        &mut self,
        entity: String,
        id: String,
        attributes: Vec<types::Attribute>,
    ) -> RecordResult<()> {
        self.count_write()?;
        let attributes = match attributes_from_wit(attributes) {
            Ok(attributes) => attributes,
            Err(refused) => return reply(Err(refused)),
        };
        self.charge(cost::RECORD_CALL + cost::BYTE * weight(&attributes));
        let (name, record, written) = (entity.clone(), id.clone(), attributes.clone());
        let updated = self.record_call(move |records| records.update(&name, &record, written)).await?;
        if updated.is_ok() {
            self.changes.push(RecordChange::Update { entity, id, attributes });
        }
        reply(updated)
    }

    async fn delete(&mut self, entity: String, id: String) -> RecordResult<()> {
        self.count_write()?;
        self.charge(cost::RECORD_CALL);
        let (name, record) = (entity.clone(), id.clone());
        let deleted = self.record_call(move |records| records.delete(&name, &record)).await?;
        if deleted.is_ok() {
            self.changes.push(RecordChange::Delete { entity, id });
        }
        reply(deleted)
    }

    async fn query(&mut self, filter: records::Filter) -> RecordResult<Vec<types::Entity>> {
        self.charge(cost::RECORD_CALL);
        let filter = match filter_from_wit(filter) {
            Ok(filter) => filter,
            Err(refused) => return reply(Err(refused)),
        };
        let found = self.record_call(move |records| records.query_counted(&filter)).await?;
        if let Err(RecordError::QueryTooBroad { limit, .. }) = &found {
            self.charge(cost::RECORD_READ * limit);
        }
        let found = found.map(|(entities, read)| {
            let bytes: u64 = entities.iter().map(|e| weight(&e.attributes)).sum();
            self.charge(cost::RECORD_READ * read + cost::BYTE * bytes);
            entities.into_iter().map(entity_to_wit).collect()
        });
        reply(found)
    }
}

impl tracing::Host for ExecutionState {
    fn trace(&mut self, message: String) -> wasmtime::Result<()> {
        self.charge(cost::TRACE_BYTE * message.len() as u64);
        self.timed(|s| s.trace.push(&message));
        Ok(())
    }
}

impl config::Host for ExecutionState {
    fn unsecure(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(self.config.unsecure.clone())
    }

    fn secure(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(self.config.secure.clone())
    }
}
