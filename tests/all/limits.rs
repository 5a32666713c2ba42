//! Limits and accounting that are not tied to one hostile plug-in, and the artifact
//! cache that spares a restart from recompiling.

use sluice::engine::{Engine, EngineSettings, ExecutionContext, ExecutionError, Limits};
use sluice::records::Value;
use sluice_sample_plugins as samples;

use crate::support::{attrs, run_with, store};

fn burn(limit: i64) -> ExecutionContext {
    let mut context = ExecutionContext::new("sample_Burn", "none");
    context.input_parameters = attrs(&[("limit", Value::Integer(limit))]);
    context
}

#[tokio::test]
async fn fuel_is_metered_in_proportion_to_the_work() {
    let small = run_with(samples::CPU_BURN, burn(10_000), &store(vec![]), None, Limits::default()).await;
    let large = run_with(samples::CPU_BURN, burn(1_000_000), &store(vec![]), None, Limits::default()).await;
    let (small, large) = (small.accounting.fuel_used, large.accounting.fuel_used);
    assert!(large > 50 * small, "100x the sieve costs far more fuel: {small} vs {large}");
}

#[tokio::test]
async fn a_budget_just_below_the_need_fails_and_just_above_succeeds() {
    let need = run_with(samples::CPU_BURN, burn(100_000), &store(vec![]), None, Limits::default())
        .await
        .accounting
        .fuel_used;
    let under = Limits { fuel: need - need / 10, ..Limits::default() };
    let over = Limits { fuel: need + need / 10, ..Limits::default() };
    let starved = run_with(samples::CPU_BURN, burn(100_000), &store(vec![]), None, under.clone()).await;
    assert_eq!(starved.outcome.unwrap_err(), ExecutionError::FuelExhausted { limit: under.fuel });
    let fed = run_with(samples::CPU_BURN, burn(100_000), &store(vec![]), None, over).await;
    assert!(fed.outcome.is_ok());
}

#[tokio::test]
async fn a_smaller_output_limit_refuses_what_the_default_allows() {
    let mut context = ExecutionContext::new("sample_Echo", "none");
    context.input_parameters = attrs(&[("text", Value::from("x".repeat(4096).as_str()))]);
    let tight = Limits { output_bytes: 1024, ..Limits::default() };
    let run = run_with(samples::ECHO, context.clone(), &store(vec![]), None, tight).await;
    assert!(matches!(run.outcome.unwrap_err(), ExecutionError::OutputTooLarge { limit: 1024, .. }));
    let run = run_with(samples::ECHO, context, &store(vec![]), None, Limits::default()).await;
    assert!(run.outcome.is_ok());
}

#[tokio::test]
async fn host_call_time_is_accounted() {
    let mut context = ExecutionContext::new("Update", "contact");
    context.input_parameters = attrs(&[("rounds", Value::Integer(50))]);
    context.post_image = Some(crate::support::entity("contact", "c1", &[("a", Value::Integer(1))]));
    let run = run_with(samples::AUDIT_TRAIL, context, &store(vec![]), None, Limits::default()).await;
    assert!(run.outcome.is_ok());
    assert!(run.accounting.host_time_us <= run.accounting.wall_time_us);
    assert!(run.accounting.wall_time_us > 0);
}

#[test]
fn a_restart_loads_compiled_plugins_from_the_cache_instead_of_recompiling() {
    let cache = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(samples::LEAD_ROUTER).unwrap();
    let first = Engine::new(EngineSettings::default(), Some(cache.path())).unwrap();
    assert!(!first.load(&bytes).unwrap().info().from_cache, "the first load compiles");
    assert!(first.load(&bytes).unwrap().info().from_cache, "the same bytes again do not");
    drop(first);
    let restarted = Engine::new(EngineSettings::default(), Some(cache.path())).unwrap();
    assert!(restarted.load(&bytes).unwrap().info().from_cache, "nor does a restart");
}

#[test]
fn a_corrupt_cache_entry_is_discarded_and_recompiled() {
    let cache = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(samples::ECHO).unwrap();
    let engine = Engine::new(EngineSettings::default(), Some(cache.path())).unwrap();
    engine.load(&bytes).unwrap();
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        let path = entry.unwrap().path();
        let mut artifact = std::fs::read(&path).unwrap();
        let middle = artifact.len() / 2;
        artifact[middle] ^= 0xff;
        std::fs::write(&path, artifact).unwrap();
    }
    let reloaded = engine.load(&bytes).unwrap();
    assert!(!reloaded.info().from_cache, "a tampered artifact is never loaded");
}

#[test]
fn settings_that_cannot_work_are_refused() {
    let bad = EngineSettings { fuel_yield_interval: 0, ..EngineSettings::default() };
    assert!(Engine::new(bad, None).is_err());
    let mut bad = EngineSettings::default();
    bad.default_limits.memory_bytes = bad.max_memory_bytes + 1;
    assert!(Engine::new(bad, None).is_err());
}

/// An artifact that this cache did not make — even one whose plain SHA-256 checksum
/// is right — never reaches wasmtime's deserializer: only the cache's key signs them.
#[test]
fn an_artifact_not_signed_by_the_cache_is_never_loaded() {
    use sha2::Digest as _;
    let cache = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(samples::ECHO).unwrap();
    let engine = Engine::new(EngineSettings::default(), Some(cache.path())).unwrap();
    engine.load(&bytes).unwrap();
    let mut forged = 0;
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cwasm") {
            let mut artifact = std::fs::read(&path).unwrap();
            let checksum = sha2::Sha256::digest(&artifact[32..]);
            artifact[..32].copy_from_slice(&checksum);
            std::fs::write(&path, artifact).unwrap();
            forged += 1;
        }
    }
    assert_eq!(forged, 1);
    let restarted = Engine::new(EngineSettings::default(), Some(cache.path())).unwrap();
    assert!(!restarted.load(&bytes).unwrap().info().from_cache, "a forged artifact is never loaded");
}

#[cfg(unix)]
#[test]
fn the_artifact_cache_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("artifacts");
    let engine = Engine::new(EngineSettings::default(), Some(&dir)).unwrap();
    engine.load(&std::fs::read(samples::ECHO).unwrap()).unwrap();
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        assert_eq!(entry.metadata().unwrap().permissions().mode() & 0o777, 0o600, "{:?}", entry.path());
    }
}
