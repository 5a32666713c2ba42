//! The host side of an execution: the state a `Store` holds for one plug-in run, and the
//! host interfaces of `wit/plugin.wit` (records, tracing, config) implemented on it.
//!
//! Host calls are timed into the execution's accounting. A host call can end the run
//! (a trap) only for the limits in [`HostTrap`]; record errors go back to the plug-in
//! as values it can handle.

use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::convert::{attributes_from_wit, entity_to_wit, filter_from_wit, record_error_to_wit};
use super::limiter::Limiter;
use super::trace_log::TraceLog;
use crate::records::{OrgRecords, RecordChange, RecordError};

/// Bindings generated from `wit/plugin.wit`.
///
/// wasmtime 48: imports are `trappable` (host functions return `wasmtime::Result`, whose
/// `Err` traps the guest) and the export is `async`, so execution can yield on fuel and
/// the deadline can be enforced between yields.
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../wit",
        imports: { default: trappable },
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

/// A limit enforced inside a host call; raised as a trap and mapped to its
/// [`ExecutionError`](super::ExecutionError) when the run ends.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HostTrap {
    #[error("more than {limit} record writes in one execution")]
    RecordWriteLimit { limit: u64 },
}

/// Everything one execution's `Store` holds.
pub(crate) struct ExecutionState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limiter: Limiter,
    pub records: OrgRecords,
    pub config: StepConfig,
    pub trace: TraceLog,
    pub host_time: Duration,
    pub changes: Vec<RecordChange>,
    pub record_write_limit: u64,
}

impl ExecutionState {
    /// Runs a host call, adding its duration to the execution's host time.
    fn timed<R>(&mut self, call: impl FnOnce(&mut Self) -> R) -> R {
        let started = Instant::now();
        let result = call(self);
        self.host_time += started.elapsed();
        result
    }

    /// Counts a record write against the limit; past it, the execution traps.
    fn count_write(&mut self) -> wasmtime::Result<()> {
        let writes = self.changes.len() as u64;
        if writes >= self.record_write_limit {
            return Err(wasmtime::Error::new(HostTrap::RecordWriteLimit { limit: self.record_write_limit }));
        }
        Ok(())
    }
}

impl WasiView for ExecutionState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl types::Host for ExecutionState {}
impl context::Host for ExecutionState {}

type RecordResult<T> = wasmtime::Result<Result<T, records::RecordError>>;

fn reply<T>(result: Result<T, RecordError>) -> RecordResult<T> {
    Ok(result.map_err(|e| record_error_to_wit(&e)))
}

impl records::Host for ExecutionState {
    fn create(&mut self, entity: String, attributes: Vec<types::Attribute>) -> RecordResult<String> {
        self.count_write()?;
        self.timed(|s| {
            let attributes = match attributes_from_wit(attributes) {
                Ok(attributes) => attributes,
                Err(refused) => return reply(Err(refused)),
            };
            let created = s.records.create(&entity, attributes.clone());
            if let Ok(id) = &created {
                let mut attributes = attributes;
                attributes.remove("id");
                s.changes.push(RecordChange::Create { entity, id: id.clone(), attributes });
            }
            reply(created)
        })
    }

    fn retrieve(&mut self, entity: String, id: String, columns: Vec<String>) -> RecordResult<types::Entity> {
        self.timed(|s| reply(s.records.retrieve(&entity, &id, &columns).map(entity_to_wit)))
    }

    fn update(&mut self, entity: String, id: String, attributes: Vec<types::Attribute>) -> RecordResult<()> {
        self.count_write()?;
        self.timed(|s| {
            let attributes = match attributes_from_wit(attributes) {
                Ok(attributes) => attributes,
                Err(refused) => return reply(Err(refused)),
            };
            let updated = s.records.update(&entity, &id, attributes.clone());
            if updated.is_ok() {
                s.changes.push(RecordChange::Update { entity, id, attributes });
            }
            reply(updated)
        })
    }

    fn delete(&mut self, entity: String, id: String) -> RecordResult<()> {
        self.count_write()?;
        self.timed(|s| {
            let deleted = s.records.delete(&entity, &id);
            if deleted.is_ok() {
                s.changes.push(RecordChange::Delete { entity, id });
            }
            reply(deleted)
        })
    }

    fn query(&mut self, filter: records::Filter) -> RecordResult<Vec<types::Entity>> {
        self.timed(|s| {
            let found = filter_from_wit(filter).and_then(|filter| s.records.query(&filter));
            reply(found.map(|entities| entities.into_iter().map(entity_to_wit).collect()))
        })
    }
}

impl tracing::Host for ExecutionState {
    fn trace(&mut self, message: String) -> wasmtime::Result<()> {
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
