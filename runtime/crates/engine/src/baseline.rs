//! The baseline Sluice's figures are measured against: a bare wasmtime loop over the
//! same plug-in component (pooling allocator, `InstancePre`, a fresh WASI context per
//! call, synchronous, stub host services, optionally fuel and nothing else). Used by
//! `cargo bench` and `sluice bench`, in the same run as the Sluice side.
//!
//! As wasmtime's generated bindings have it, the loop type-checks the handler at every
//! instantiation; [`Bare::checking_once`] checks it once, as Sluice's engine does (see
//! `Plugin::handler`), for the strictest comparison.

use std::path::Path;

use wasmtime::component::{Component, ComponentExportIndex, HasSelf, Linker, ResourceTable, TypedFunc};
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub mod bindings {
    //! Bindings for the bare loop: synchronous, no fuel, stub host services.
    wasmtime::component::bindgen!({ world: "plugin", path: "../../../wit" });
}

use bindings::sluice::plugin::{config, records, tracing};
pub use bindings::sluice::plugin::{context, types};

pub(crate) struct BareState {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for BareState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl types::Host for BareState {}
impl context::Host for BareState {}
impl tracing::Host for BareState {
    fn trace(&mut self, _: String) {}
}
impl config::Host for BareState {
    fn unsecure(&mut self) -> Option<String> {
        None
    }
    fn secure(&mut self) -> Option<String> {
        None
    }
}
impl records::Host for BareState {
    fn create(&mut self, _: String, _: Vec<types::Attribute>) -> Result<String, records::RecordError> {
        Err(records::RecordError::Invalid("bare".into()))
    }
    fn retrieve(
        &mut self,
        _: String,
        _: String,
        _: Vec<String>,
    ) -> Result<types::Entity, records::RecordError> {
        Err(records::RecordError::Invalid("bare".into()))
    }
    fn update(&mut self, _: String, _: String, _: Vec<types::Attribute>) -> Result<(), records::RecordError> {
        Err(records::RecordError::Invalid("bare".into()))
    }
    fn delete(&mut self, _: String, _: String) -> Result<(), records::RecordError> {
        Err(records::RecordError::Invalid("bare".into()))
    }
    fn query(&mut self, _: records::Filter) -> Result<Vec<types::Entity>, records::RecordError> {
        Err(records::RecordError::Invalid("bare".into()))
    }
}

/// The bare-wasmtime baseline: what one sandboxed call costs with nothing around it.
pub struct Bare {
    engine: wasmtime::Engine,
    pre: bindings::PluginPre<BareState>,
    fuel: bool,
    /// The handler's export, when its type was checked once (`checking_once`).
    checked_execute: Option<ComponentExportIndex>,
}

type Handler<'a> = TypedFunc<
    (&'a context::ExecutionContext,),
    (
        Result<
            bindings::exports::sluice::plugin::handler::Output,
            bindings::exports::sluice::plugin::handler::PluginError,
        >,
    ),
>;

impl Bare {
    /// `fuel` turns on wasmtime's fuel metering alone, to tell its cost from Sluice's.
    pub fn new(path: &str, fuel: bool) -> wasmtime::Result<Bare> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(64).total_core_instances(1024).total_memories(128).total_tables(512);
        super::reset_slots_in_place(&mut pool);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .consume_fuel(fuel)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = wasmtime::Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        bindings::Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        let component = Component::from_file(&engine, Path::new(path))?;
        let pre = bindings::PluginPre::new(linker.instantiate_pre(&component)?)?;
        Ok(Bare { engine, pre, fuel, checked_execute: None })
    }

    /// The loop without fuel, its handler's type checked here rather than at every call.
    pub fn checking_once(path: &str) -> wasmtime::Result<Bare> {
        let mut bare = Bare::new(path, false)?;
        let index = crate::plugin::handler_export::<
            _,
            (context::ExecutionContext,),
            (
                Result<
                    bindings::exports::sluice::plugin::handler::Output,
                    bindings::exports::sluice::plugin::handler::PluginError,
                >,
            ),
        >(bare.pre.instance_pre())
        .map_err(|e| wasmtime::format_err!("{e}"))?;
        bare.checked_execute = Some(index);
        Ok(bare)
    }

    /// One instantiate + call; panics if the plug-in fails (baselines run known plug-ins).
    pub fn call(&self, context: &context::ExecutionContext) {
        let state = BareState { wasi: WasiCtx::builder().build(), table: ResourceTable::new() };
        let mut store = Store::new(&self.engine, state);
        if self.fuel {
            store.set_fuel(u64::MAX / 2).expect("fuel is enabled on a fuel baseline");
        }
        let output = match self.checked_execute {
            None => {
                let plugin = self.pre.instantiate(&mut store).expect("the baseline plug-in instantiates");
                plugin.sluice_plugin_handler().call_execute(&mut store, context)
            }
            Some(index) => {
                let instance = self
                    .pre
                    .instance_pre()
                    .instantiate(&mut store)
                    .expect("the baseline plug-in instantiates");
                let execute = instance.get_func(&mut store, index).expect("the handler is exported");
                // SAFETY: `checking_once` checked this export's type against `Handler`.
                #[allow(unsafe_code)]
                let handler = unsafe { Handler::new_unchecked(execute) };
                handler.call(&mut store, (context,)).map(|(output,)| output)
            }
        };
        assert!(output.expect("the baseline call runs").is_ok());
    }
}

/// A context for the baseline with these input parameters.
pub fn context(parameters: Vec<types::Attribute>) -> context::ExecutionContext {
    context::ExecutionContext {
        org_id: "local".into(),
        user_id: "local".into(),
        message: "sample_Bench".into(),
        entity: "none".into(),
        record_id: None,
        stage: context::Stage::PostOperation,
        mode: context::Mode::Asynchronous,
        depth: 1,
        correlation_id: "bench".into(),
        input_parameters: parameters,
        target: None,
        pre_image: None,
        post_image: None,
        shared_variables: Vec::new(),
    }
}
