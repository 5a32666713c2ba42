//! Shared helpers: one engine per test process, plug-ins compiled once, and a short way
//! to run a plug-in against an in-memory record store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use sluice::engine::{
    Engine, EngineSettings, Execution, ExecutionContext, ExecutionRequest, Limits, Plugin, StepConfig,
};
use sluice::records::{Attributes, Entity, MemoryRecords, OrgRecords, Value};

/// The process-wide engine, with its artifact cache in a temporary folder.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<(Engine, tempfile::TempDir)> = OnceLock::new();
    &ENGINE
        .get_or_init(|| {
            let cache = tempfile::tempdir().expect("a temporary folder");
            let engine =
                Engine::new(EngineSettings::default(), Some(cache.path())).expect("the default engine");
            (engine, cache)
        })
        .0
}

/// A sample plug-in, loaded once per process.
pub fn plugin(path: &str) -> Plugin {
    static LOADED: OnceLock<Mutex<HashMap<String, Plugin>>> = OnceLock::new();
    let mut loaded = LOADED.get_or_init(Default::default).lock().unwrap();
    loaded
        .entry(path.to_owned())
        .or_insert_with(|| {
            let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
            engine().load(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"))
        })
        .clone()
}

/// Attributes from pairs.
pub fn attrs(pairs: &[(&str, Value)]) -> Attributes {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// An event creating record `id` of `entity` with these attributes.
pub fn create_event(entity: &str, id: impl Into<String>, attributes: Attributes) -> sluice::service::Event {
    sluice::service::Event {
        message: "Create".into(),
        entity: entity.into(),
        record_id: Some(id.into()),
        attributes,
        dependency_token: None,
    }
}

pub fn entity(logical_name: &str, id: &str, attributes: &[(&str, Value)]) -> Entity {
    Entity { logical_name: logical_name.into(), id: id.into(), attributes: attrs(attributes) }
}

/// A record store for org `local` holding `records`.
pub fn store(records: Vec<Entity>) -> Arc<MemoryRecords> {
    Arc::new(MemoryRecords::with_records("local", records).expect("valid records"))
}

/// Runs a plug-in once with its unsecure configuration and limits.
pub async fn run_with(
    path: &str,
    context: ExecutionContext,
    records: &Arc<MemoryRecords>,
    config: Option<&str>,
    limits: Limits,
) -> Execution {
    let request = ExecutionRequest {
        records: OrgRecords::new(context.org_id.clone(), records.clone()),
        context,
        config: StepConfig { unsecure: config.map(Into::into), secure: None },
        limits,
        stop: None,
        outbound: Default::default(),
    };
    engine().execute(&plugin(path), request).await
}

/// Runs a plug-in once with default limits.
pub async fn run(
    path: &str,
    context: ExecutionContext,
    records: &Arc<MemoryRecords>,
    config: Option<&str>,
) -> Execution {
    run_with(path, context, records, config, Limits::default()).await
}

/// A context for `message` on the record `entity`/`id`, with its post-image.
pub fn on_record(message: &str, record: &Entity) -> ExecutionContext {
    let mut context = ExecutionContext::new(message, &record.logical_name);
    context.record_id = Some(record.id.clone());
    context.post_image = Some(record.clone());
    context
}

/// Small limits for hostile plug-ins, so tests end quickly.
pub fn tight_limits() -> Limits {
    Limits { fuel: 200_000_000, deadline_ms: 10_000, ..Limits::default() }
}

/// A new, empty database on the test PostgreSQL server (`SLUICE_TEST_DATABASE_URL`, the
/// server `scripts/test` starts on 127.0.0.1 with a throwaway data directory); returns
/// its URL.
pub fn fresh_postgres_database() -> String {
    let base = std::env::var("SLUICE_TEST_DATABASE_URL").expect(
        "SLUICE_TEST_DATABASE_URL is not set: run the tests with scripts/test, which starts PostgreSQL",
    );
    let name = format!("sluice_test_{}", uuid::Uuid::new_v4().simple());
    // On a thread of its own: the blocking client must not run inside a test's runtime.
    let (admin_url, create) = (base.clone(), format!("CREATE DATABASE {name}"));
    std::thread::spawn(move || {
        let mut admin =
            postgres::Client::connect(&admin_url, postgres::NoTls).expect("the test server answers");
        admin.batch_execute(&create).unwrap();
    })
    .join()
    .unwrap();
    let (server, _) = base.rsplit_once('/').expect("a URL naming a database");
    format!("{server}/{name}")
}

/// splitmix64: small, fast and deterministic (the simulations' source of chance).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn chance(&mut self, per_million: u64) -> bool {
        self.below(1_000_000) < per_million
    }
}

/// Jobs a simulation runs; `SLUICE_SIM_JOBS` overrides it when hunting a failure.
pub fn simulated_jobs() -> u64 {
    std::env::var("SLUICE_SIM_JOBS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000)
}
