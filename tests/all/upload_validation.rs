//! Every kind of bad upload is refused at load, before any of its code runs, with an
//! error that names the problem.

use sluice::engine::{Engine, EngineSettings, HANDLER_EXPORT, LoadError};
use sluice_sample_plugins as samples;

use crate::support::engine;

fn component(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).expect("the fixture is valid text")
}

fn refused(bytes: &[u8]) -> LoadError {
    match engine().load(bytes) {
        Ok(_) => panic!("the upload was accepted"),
        Err(e) => e,
    }
}

#[test]
fn an_empty_file_is_refused() {
    assert!(matches!(refused(b""), LoadError::Empty));
}

#[test]
fn bytes_that_are_not_webassembly_are_refused() {
    assert!(matches!(refused(b"MZ\x90\x00 this is a Windows program"), LoadError::NotWasm));
    assert!(matches!(refused(b"(component)"), LoadError::NotWasm), "text format is not accepted");
}

#[test]
fn a_core_module_is_refused_with_advice() {
    let error = refused(&component("(module (func (export \"run\")))"));
    assert!(matches!(error, LoadError::CoreModule));
    assert!(error.to_string().contains("wasm32-wasip2"));
}

#[test]
fn a_truncated_component_is_refused_as_malformed() {
    let echo = std::fs::read(samples::ECHO).unwrap();
    for cut in [9, echo.len() / 3, echo.len() - 1] {
        assert!(matches!(refused(&echo[..cut]), LoadError::Malformed { .. }), "cut at {cut}");
    }
}

#[test]
fn an_unknown_import_is_named() {
    let bytes = component(
        r#"(component
            (import "acme:evil/net@1.0.0" (instance (export "connect" (func (param "host" string)))))
        )"#,
    );
    match refused(&bytes) {
        LoadError::UnknownImport { name } => assert_eq!(name, "acme:evil/net@1.0.0"),
        other => panic!("expected UnknownImport, got {other}"),
    }
}

/// WASI interfaces beyond 0.2's (a newer major, or an unknown one) are refused by name,
/// before compiling; the 0.2 filesystem, sockets and HTTP that standard libraries link
/// are provided (sandboxed: see `hostile_plugins`).
#[test]
fn wasi_interfaces_sluice_does_not_provide_are_refused() {
    for name in
        ["wasi:keyvalue/store@0.2.0-draft", "wasi:filesystem/preopens@0.3.0", "wasi:nn/tensor@0.2.0-rc"]
    {
        let bytes = component(&format!(r#"(component (import "{name}" (instance)))"#));
        assert!(matches!(refused(&bytes), LoadError::UnknownImport { name: n } if n == name), "{name}");
    }
}

#[test]
fn a_mistyped_host_import_is_refused() {
    let bytes = component(
        r#"(component
            (import "sluice:plugin/tracing@0.1.0" (instance (export "trace" (func (param "n" u32)))))
            (instance $handler)
            (export "sluice:plugin/handler@0.1.0" (instance $handler))
        )"#,
    );
    match refused(&bytes) {
        LoadError::ImportMismatch { name, reason } => {
            assert_eq!(name, "sluice:plugin/tracing@0.1.0", "{reason}");
        }
        other => panic!("expected ImportMismatch, got {other}"),
    }
}

#[test]
fn a_component_without_the_handler_export_is_refused() {
    match refused(&component("(component)")) {
        LoadError::MissingExport { expected } => assert_eq!(expected, HANDLER_EXPORT),
        other => panic!("expected MissingExport, got {other}"),
    }
}

#[test]
fn a_handler_export_of_the_wrong_type_is_refused() {
    let bytes = component(
        r#"(component
            (core module $m (func (export "execute")))
            (core instance $i (instantiate $m))
            (func $execute (canon lift (core func $i "execute")))
            (instance $handler (export "execute" (func $execute)))
            (export "sluice:plugin/handler@0.1.0" (instance $handler))
        )"#,
    );
    assert!(matches!(refused(&bytes), LoadError::ExportMismatch { .. }));
}

#[test]
fn an_oversize_plugin_is_refused_before_parsing() {
    let settings = EngineSettings { max_plugin_bytes: 1024, ..EngineSettings::default() };
    let small = Engine::new(settings, None).unwrap();
    let echo = std::fs::read(samples::ECHO).unwrap();
    match small.load(&echo) {
        Err(LoadError::TooLarge { size, limit }) => assert_eq!((size, limit), (echo.len() as u64, 1024)),
        Err(other) => panic!("expected TooLarge, got {other}"),
        Ok(_) => panic!("accepted"),
    }
}

#[test]
fn every_sample_plugin_is_accepted() {
    for (name, path) in samples::ALL {
        // Loaded once per test process (the Python and JavaScript runtimes take seconds).
        let plugin = crate::support::plugin(path);
        let _ = name;
        assert!(plugin.info().exports.iter().any(|e| e == HANDLER_EXPORT));
    }
}

/// The operator sets an org's plug-in size limit over the engine's, larger or smaller;
/// other orgs keep the engine's, and an accepted plug-in runs whatever the limit.
#[test]
fn an_orgs_plugin_size_limit_overrides_the_engines() {
    use std::sync::Arc;

    use sluice::service::{Options, Service, SystemClock};
    use sluice::store::SqliteStore;

    let dir = tempfile::tempdir().unwrap();
    let small = EngineSettings { max_plugin_bytes: 1024, ..EngineSettings::default() };
    let engine = Engine::new(small, Some(&dir.path().join("artifacts"))).unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("sluice.db")).unwrap());
    let service = Service::open(store, engine, Arc::new(SystemClock), Options::default()).unwrap();
    let (larger, tighter, plain) = (
        service.create_org("larger").unwrap(),
        service.create_org("tighter").unwrap(),
        service.create_org("plain").unwrap(),
    );
    service.set_plugin_limit(larger, 1 << 20);
    service.set_plugin_limit(tighter, 100);
    let echo = std::fs::read(samples::ECHO).unwrap();
    assert!(service.upload_plugin(larger, "echo", &echo).is_ok(), "raised for its org");
    for (org, limit) in [(plain, 1024), (tighter, 100)] {
        let refused = service.upload_plugin(org, "echo", &echo).unwrap_err().to_string();
        assert!(refused.contains(&format!("over the {limit}-byte limit")), "{refused}");
        assert!(service.plugins(org).unwrap().is_empty(), "a refused upload stores nothing");
    }
    assert_eq!(service.max_plugin_bytes(), 1 << 20, "the API reads bodies up to the largest org limit");
}
