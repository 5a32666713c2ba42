//! Loading a plug-in: validation of an upload, compilation (or a cache hit), and the
//! pre-linked [`Plugin`] that executions instantiate.
//!
//! Every check happens here, before any of the plug-in's code runs: size, magic number,
//! component (not core module), well-formedness, every import one Sluice provides with
//! the right type, and the handler export with the right type.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use wasmtime::AsContextMut;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, ComponentExportIndex, Instance, InstancePre, TypedFunc};

use super::cache::sha256_hex;
use super::host::ExecutionState;
use super::host::bindings::exports::sluice::plugin::handler::{Output, PluginError};
use super::host::bindings::sluice::plugin::context::ExecutionContext;
use super::{Engine, LoadError};

/// The export every plug-in must have.
pub const HANDLER_EXPORT: &str = "sluice:plugin/handler@0.1.0";

/// Interfaces a plug-in may import, by package and interface, with the version line the
/// host links (a guest's `0.2.x` matches the host's 0.2 by semver, as wasmtime's linker
/// does): Sluice's own, and the WASI 0.2 interfaces a language's standard library links,
/// as plain componentize-py and componentize-js builds import them. Stdio, environment,
/// clocks and random (no environment, frozen clocks), a filesystem with nothing in it
/// (no preopened directory), sockets that refuse every use, and HTTP under the outbound
/// policy (`outbound`). Anything else is refused by name before compiling.
/// The record calls' interface, any version: the host calls that charge fuel
/// (`host.rs`).
const RECORDS_INTERFACE: &str = "sluice:plugin/records@";

const PROVIDED_IMPORTS: &[(&str, &[&str])] = &[
    ("sluice:plugin@0.1.", &["types", "context", "records", "tracing", "config"]),
    (
        "wasi:cli@0.2.",
        &[
            "environment",
            "exit",
            "stdin",
            "stdout",
            "stderr",
            "terminal-input",
            "terminal-output",
            "terminal-stdin",
            "terminal-stdout",
            "terminal-stderr",
        ],
    ),
    ("wasi:clocks@0.2.", &["monotonic-clock", "wall-clock"]),
    ("wasi:io@0.2.", &["error", "poll", "streams"]),
    ("wasi:random@0.2.", &["random", "insecure", "insecure-seed"]),
    ("wasi:filesystem@0.2.", &["types", "preopens"]),
    (
        "wasi:sockets@0.2.",
        &[
            "network",
            "instance-network",
            "udp",
            "udp-create-socket",
            "tcp",
            "tcp-create-socket",
            "ip-name-lookup",
        ],
    ),
    ("wasi:http@0.2.", &["types", "outgoing-handler"]),
];

/// Whether the host provides the import `name` (`ns:package/interface@version`).
fn is_provided(name: &str) -> bool {
    let Some((path, version)) = name.split_once('@') else { return false };
    let Some((package, interface)) = path.split_once('/') else { return false };
    PROVIDED_IMPORTS.iter().any(|(line, interfaces)| {
        let (line_package, line_version) = line.split_once('@').unwrap_or((line, ""));
        line_package == package && version.starts_with(line_version) && interfaces.contains(&interface)
    })
}

/// What `sluice plugin check` reports about a valid plug-in.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    /// SHA-256 of the component bytes: the plug-in version's identity.
    pub content_hash: String,
    pub size_bytes: u64,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    /// Whether the native code came from the artifact cache (no compilation).
    pub from_cache: bool,
    /// Time spent compiling or loading the compiled artifact (`load_time_us` in JSON).
    #[serde(rename = "load_time_us", serialize_with = "micros")]
    pub load_time: Duration,
    /// Its size in the terms of the engine's complexity limits.
    pub totals: super::inspect::Totals,
}

fn micros<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(duration.as_micros() as u64)
}

/// A validated, compiled plug-in, ready to instantiate. Cheap to clone.
#[derive(Clone)]
pub struct Plugin {
    pub(crate) pre: Arc<InstancePre<ExecutionState>>,
    /// The handler's `execute` function among the component's exports, its type checked.
    execute: ComponentExportIndex,
    pub(crate) info: Arc<PluginInfo>,
    /// Whether it imports the record calls, the only host calls that cost fuel.
    pub(crate) pays_host_fuel: bool,
}

/// The handler's `execute` function as the host calls it.
pub(crate) type Handler<'a> = TypedFunc<(&'a ExecutionContext,), (Result<Output, PluginError>,)>;

impl Plugin {
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// The handler of an instance of this plug-in.
    ///
    /// The generated bindings (`PluginPre::instantiate_async`) type-check every export at
    /// every instantiation: a walk of the execution context's record type that was 6% of a
    /// trivial execution. The type cannot change between executions: it was checked once,
    /// when the plug-in was loaded.
    #[allow(unsafe_code)]
    pub(crate) fn handler<'a>(
        &self,
        store: impl AsContextMut<Data = ExecutionState>,
        instance: &Instance,
    ) -> wasmtime::Result<Handler<'a>> {
        let execute = instance
            .get_func(store, self.execute)
            .ok_or_else(|| wasmtime::format_err!("the instance has no `{HANDLER_EXPORT}#execute`"))?;
        // SAFETY: `check_handler_type` checked this export of `pre`'s component against
        // exactly this signature (`&T` lowers as `T`) when the plug-in was loaded, and the
        // instance was made from `pre`: wasmtime's own bindings call through
        // `new_unchecked` on the same grounds.
        Ok(unsafe { Handler::new_unchecked(execute) })
    }
}

/// Checks the handler's `execute` function against the WIT signature, before any guest
/// code runs (`ComponentFunc::typecheck`, as wasmtime's generated code does for
/// world-level functions), and returns where it is among the exports.
fn check_handler_type(pre: &InstancePre<ExecutionState>) -> Result<ComponentExportIndex, LoadError> {
    handler_export::<_, (ExecutionContext,), (Result<Output, PluginError>,)>(pre)
}

/// Where a component's handler `execute` is among its exports, checked to take `Params`
/// and return `Results` (the engine's bindings, or the bare baseline's).
pub(crate) fn handler_export<T, Params, Results>(
    pre: &InstancePre<T>,
) -> Result<ComponentExportIndex, LoadError>
where
    Params: wasmtime::component::ComponentNamedList + wasmtime::component::Lower,
    Results: wasmtime::component::ComponentNamedList + wasmtime::component::Lift,
{
    let mismatch = |reason: String| LoadError::ExportMismatch { expected: HANDLER_EXPORT, reason };
    let component = pre.component();
    let (_, handler) = component
        .get_export(None, HANDLER_EXPORT)
        .ok_or(LoadError::MissingExport { expected: HANDLER_EXPORT })?;
    match component.get_export(Some(&handler), "execute") {
        Some((ComponentItem::ComponentFunc(execute), index)) => execute
            .typecheck::<Params, Results>(&pre.instance_type())
            .map(|()| index)
            .map_err(|e| mismatch(format!("`execute`: {e:#}"))),
        Some(_) => Err(mismatch("`execute` is not a function".into())),
        None => Err(mismatch("it has no `execute` function".into())),
    }
}

impl Engine {
    /// Validates and compiles an uploaded component. Compiled code is cached by content
    /// hash, so loading the same bytes again (even after a restart) does not recompile.
    ///
    /// The order keeps a hostile upload cheap: the envelope, then bytes refused before
    /// (remembered by hash), then one parse for imports, exports and size bounds
    /// ([`inspect`](super::inspect)), and only then compilation. Nothing is written to the
    /// artifact cache unless the plug-in is accepted.
    pub fn load(&self, bytes: &[u8]) -> Result<Plugin, LoadError> {
        self.load_within(bytes, self.inner.settings.max_plugin_bytes)
    }

    /// [`Engine::load`] with a size limit of its own (an org's, set by the operator)
    /// instead of the engine's `max-plugin-bytes`.
    pub fn load_within(&self, bytes: &[u8], max_bytes: u64) -> Result<Plugin, LoadError> {
        let started = Instant::now();
        self.check_envelope(bytes, max_bytes)?;
        let content_hash = sha256_hex(bytes);
        if let Some(refusal) = self.inner.refused.get(&content_hash) {
            return Err(refusal);
        }
        let loaded = self.load_checked(bytes, &content_hash, started);
        if let Err(refusal) = &loaded {
            self.inner.refused.remember(&content_hash, refusal);
        }
        loaded
    }

    fn load_checked(&self, bytes: &[u8], content_hash: &str, started: Instant) -> Result<Plugin, LoadError> {
        let shape = super::inspect::inspect(bytes, &self.inner.settings.complexity)?;
        if let Some(unknown) = shape.imports.iter().find(|name| !is_provided(name)) {
            return Err(LoadError::UnknownImport { name: unknown.clone() });
        }
        if !shape.exports.iter().any(|name| name == HANDLER_EXPORT) {
            return Err(LoadError::MissingExport { expected: HANDLER_EXPORT });
        }
        let (component, compiled) = self.compile(bytes, content_hash)?;
        let ty = component.component_type();
        let engine = &self.inner.wasmtime;
        let imports: Vec<String> = ty.imports(engine).map(|(name, _)| name.to_owned()).collect();
        let exports: Vec<String> = ty.exports(engine).map(|(name, _)| name.to_owned()).collect();
        if let Some(unknown) = imports.iter().find(|name| !is_provided(name)) {
            return Err(LoadError::UnknownImport { name: unknown.clone() });
        }
        let instance_pre = self.inner.linker.instantiate_pre(&component).map_err(|e| {
            let reason = format!("{e:#}");
            let name = reason.split('`').nth(1).unwrap_or("?").to_owned();
            // wasmtime 48 words a present-but-mistyped import as "... has the wrong type";
            // anything else means the linker has no such item (e.g. an unknown version).
            if reason.contains("wrong type") || reason.contains("type mismatch") {
                LoadError::ImportMismatch { name, reason }
            } else {
                LoadError::UnknownImport { name }
            }
        })?;
        if !exports.iter().any(|name| name == HANDLER_EXPORT) {
            return Err(LoadError::MissingExport { expected: HANDLER_EXPORT });
        }
        let execute = check_handler_type(&instance_pre)?;
        // Accepted: only now is newly compiled code kept for the next load.
        let from_cache = compiled.is_none();
        if let Some(component) = compiled {
            match component.serialize() {
                Ok(artifact) => {
                    if let Err(e) = self.inner.cache.put(content_hash, &artifact) {
                        tracing::warn!(%content_hash, "cannot cache the compiled artifact: {e}");
                    }
                }
                Err(e) => tracing::warn!(%content_hash, "cannot serialize the compiled artifact: {e}"),
            }
        }
        let info = PluginInfo {
            content_hash: content_hash.to_owned(),
            size_bytes: bytes.len() as u64,
            imports,
            exports,
            from_cache,
            load_time: started.elapsed(),
            totals: shape.totals,
        };
        let pays_host_fuel = info.imports.iter().any(|name| name.starts_with(RECORDS_INTERFACE));
        Ok(Plugin { pre: Arc::new(instance_pre), execute, info: Arc::new(info), pays_host_fuel })
    }

    /// The checks that need no parsing: size, emptiness, magic number, component layer.
    fn check_envelope(&self, bytes: &[u8], limit: u64) -> Result<(), LoadError> {
        if bytes.len() as u64 > limit {
            return Err(LoadError::TooLarge { size: bytes.len() as u64, limit });
        }
        if bytes.is_empty() {
            return Err(LoadError::Empty);
        }
        if !bytes.starts_with(b"\0asm") {
            return Err(LoadError::NotWasm);
        }
        // The 4 bytes after the magic are version and layer: core modules are 1 0 0 0;
        // components carry layer 1 (bytes 6..8 = 1 0).
        match bytes.get(4..8) {
            Some([1, 0, 0, 0]) => Err(LoadError::CoreModule),
            Some([_, _, 1, 0]) => Ok(()),
            _ => Err(LoadError::Malformed { reason: "unknown WebAssembly version or layer".into() }),
        }
    }

    /// Compiles a component, or loads its native code from the artifact cache; the
    /// second value is the component again if it was compiled now (to cache once it is
    /// accepted).
    #[allow(unsafe_code)]
    fn compile(&self, bytes: &[u8], content_hash: &str) -> Result<(Component, Option<Component>), LoadError> {
        let engine = &self.inner.wasmtime;
        if let Some(artifact) = self.inner.cache.get(content_hash) {
            // SAFETY: the artifact was produced by `Component::serialize` of an engine with
            // the same compatibility hash, written by this cache and checked against its
            // SHA-256 just now; no bytes from outside reach the deserializer.
            match unsafe { Component::deserialize(engine, &artifact) } {
                Ok(component) => return Ok((component, None)),
                Err(e) => tracing::warn!(%content_hash, "recompiling: cached artifact refused: {e}"),
            }
        }
        self.inner.compilations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let component =
            Component::new(engine, bytes).map_err(|e| LoadError::Malformed { reason: format!("{e:#}") })?;
        Ok((component.clone(), Some(component)))
    }
}

/// Refusals remembered by content hash, so the same refused bytes are refused again
/// without parsing or compiling (the newest [`Refused::KEPT`]).
#[derive(Default)]
pub(crate) struct Refused {
    recent: std::sync::Mutex<std::collections::VecDeque<(String, LoadError)>>,
}

impl Refused {
    const KEPT: usize = 1024;

    fn get(&self, content_hash: &str) -> Option<LoadError> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.iter().find(|(hash, _)| hash == content_hash).map(|(_, refusal)| refusal.clone())
    }

    fn remember(&self, content_hash: &str, refusal: &LoadError) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == Self::KEPT {
            recent.pop_front();
        }
        recent.push_back((content_hash.to_owned(), refusal.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::is_provided;

    #[test]
    fn imports_are_matched_by_interface_and_version_line() {
        for name in ["wasi:http/types@0.2.10", "wasi:io/streams@0.2.0", "sluice:plugin/records@0.1.0"] {
            assert!(is_provided(name), "{name}");
        }
        for name in [
            "wasi:http/types@0.3.0",
            "wasi:http/handler@0.2.6",
            "wasi:keyvalue/store@0.2.0",
            "sluice:plugin/records@0.2.0",
            "wasi:io/streams",
            "nonsense",
        ] {
            assert!(!is_provided(name), "{name}");
        }
    }
}
