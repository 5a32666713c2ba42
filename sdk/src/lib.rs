//! Write Sluice plug-ins in Rust.
//!
//! A plug-in is a WebAssembly component built for `wasm32-wasip2` against Sluice's WIT
//! world (`wit/plugin.wit`). With this crate, a plug-in is one type implementing
//! [`Plugin`] and one call to [`export_plugin!`]:
//!
//! ```
//! use sluice_sdk::{Context, Error, Output, Plugin, Value, records, trace};
//!
//! /// On Create of an account, gives it an account number and remembers it on the record.
//! struct AccountNumber;
//!
//! impl Plugin for AccountNumber {
//!     fn execute(ctx: Context) -> Result<Output, Error> {
//!         let Some(id) = ctx.record_id.clone() else {
//!             return Err(Error::business("an account number needs a record"));
//!         };
//!         let prefix = sluice_sdk::config::unsecure().unwrap_or_else(|| "ACC".into());
//!         let number = format!("{prefix}-{}", &id[..id.len().min(8)]);
//!         trace!("numbering {id} as {number}");
//!         records::update("account", &id, &[("accountnumber", Value::from(number.as_str())).into()])
//!             .map_err(|e| Error::transient(format!("could not store the number: {e:?}")))?;
//!         Ok(Output::new().with("accountnumber", number))
//!     }
//! }
//!
//! sluice_sdk::export_plugin!(AccountNumber);
//! # fn main() {}
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` (crate type `cdylib`), then
//! check and run it locally in the same sandbox Sluice uses:
//! `sluice plugin check plugin.wasm` and `sluice plugin run plugin.wasm --input context.json`.

// Lets the generated bindings name this crate by its public path, which is also how the
// `export_plugin!` macro reaches them from a plug-in crate that depends only on this one.
extern crate self as sluice_sdk;

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// The raw bindings generated from `wit/plugin.wit`.
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_plugin_world",
        default_bindings_module: "::sluice_sdk::bindings",
        runtime_path: "::sluice_sdk::__wit_bindgen::rt",
    });
}

mod values;

pub use bindings::exports::sluice::plugin::handler::{Output, PluginError as Error};
pub use bindings::sluice::plugin::context::{ExecutionContext as Context, Mode, Stage};
pub use bindings::sluice::plugin::types::{Attribute, Datetime, Decimal, Entity, EntityReference, Value};

/// The organisation's record service. Calls are confined to the plug-in's organisation;
/// writes fire events at depth + 1 with the same correlation id.
pub mod records {
    pub use crate::bindings::sluice::plugin::records::{
        Condition, Filter, Operator, RecordError, create, delete, query, retrieve, update,
    };
}

/// The step's configuration, as registered with it.
pub mod config {
    pub use crate::bindings::sluice::plugin::config::{secure, unsecure};
}

/// Writes one line to the plug-in trace log (Dataverse's `ITracingService.Trace`).
pub fn trace(message: &str) {
    bindings::sluice::plugin::tracing::trace(message);
}

/// `format!`s its arguments into one trace-log line.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)*) => {
        $crate::trace(&::std::format!($($arg)*))
    };
}

/// What a plug-in implements.
pub trait Plugin {
    /// Runs once per execution. `Err(Error::Business(..))` fails the job for good and
    /// its message reaches the caller; `Err(Error::Transient(..))` asks for a retry.
    fn execute(context: Context) -> Result<Output, Error>;
}

/// Exports a [`Plugin`] implementation as the component's `handler`.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            struct SluiceExport;
            impl $crate::bindings::exports::sluice::plugin::handler::Guest for SluiceExport {
                fn execute(
                    context: $crate::Context,
                ) -> ::core::result::Result<$crate::Output, $crate::Error> {
                    <$plugin as $crate::Plugin>::execute(context)
                }
            }
    $crate::bindings::__export_plugin_world!(SluiceExport with_types_in $crate::bindings);
        };
    };
}
