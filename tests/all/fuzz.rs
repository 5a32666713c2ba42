//! Fuzz targets (bolero, stable Rust): the upload validator on arbitrary bytes and on
//! `wasm-smith` components, and the API's request decoding on arbitrary bodies. Under
//! `cargo test` each runs for a bounded time with random inputs (one second by default;
//! `BOLERO_RANDOM_TEST_TIME_MS` or `BOLERO_RANDOM_ITERATIONS` run longer — see the
//! README) and replays the regression inputs kept in `tests/fuzz/`. Whatever they find is
//! fixed and its input kept there.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Method, Request};
use sluice::engine::{Engine, EngineSettings};
use sluice::service::{ManualClock, Options, Service};
use sluice::store::SqliteStore;
use tower::ServiceExt as _;

/// An engine without an artifact cache, so every valid input is compiled.
fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::new(EngineSettings::default(), None).unwrap())
}

/// The inputs kept from earlier finds, each replayed by `check`.
fn kept(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz").join(target);
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries.filter_map(|e| std::fs::read(e.ok()?.path()).ok()).collect()
}

fn load_never_panics(bytes: &[u8]) {
    // Refusals are expected; a panic (or an abort) is the failure.
    let _ = engine().load(bytes);
}

#[test]
fn upload_validator_on_arbitrary_bytes() {
    for input in kept("upload") {
        load_never_panics(&input);
    }
    bolero::check!().for_each(|bytes: &[u8]| {
        load_never_panics(bytes);
        // And behind a component header, so the parser gets past the envelope.
        let mut framed = b"\0asm\x0d\0\x01\0".to_vec();
        framed.extend_from_slice(bytes);
        load_never_panics(&framed);
    });
}

#[test]
fn upload_validator_on_wasm_smith_components() {
    bolero::check!().for_each(|bytes: &[u8]| {
        let mut input = arbitrary::Unstructured::new(bytes);
        let Ok(mut config) = input.arbitrary::<wasm_smith::Config>() else { return };
        config.max_funcs = config.max_funcs.min(50);
        config.max_instructions = config.max_instructions.min(500);
        if let Ok(component) = wasm_smith::Component::new(config, &mut input) {
            load_never_panics(&component.to_bytes());
        }
    });
}

/// The API on a fresh node, with one org and its token.
struct Api {
    router: axum::Router,
    token: String,
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn api() -> Api {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("sluice.db")).unwrap());
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let service = Service::open(store, engine().clone(), clock, Options::default()).unwrap();
    let org = service.create_org("fuzz").unwrap();
    let token = service.issue_token(org, "fuzz").unwrap().token;
    let router = sluice::api::router(service, "operator", &Default::default(), "http://127.0.0.1");
    Api { router, token, runtime, _dir: dir }
}

/// The routes that decode a JSON body, with the token they need.
const BODY_ROUTES: &[(&str, &str, bool)] = &[
    ("POST", "/api/v1/events", false),
    ("POST", "/api/v1/events/batch", false),
    ("POST", "/api/v1/steps", false),
    ("POST", "/api/v1/workflows", false),
    ("PUT", "/api/v1/workflows/1", false),
    ("POST", "/api/v1/custom-apis", false),
    ("POST", "/api/v1/custom-apis/x/run", false),
    ("POST", "/api/v1/background-operations", false),
    ("POST", "/api/v1/orgs", true),
    ("POST", "/api/v1/orgs/1/tokens", true),
    ("PUT", "/api/v1/orgs/1/quotas/regular", true),
];

impl Api {
    /// Sends `body` to the route `pick` chooses; the answer must never be a 5xx.
    fn send(&self, pick: u8, body: &[u8]) {
        let (method, path, operator) = BODY_ROUTES[usize::from(pick) % BODY_ROUTES.len()];
        let token = if operator { "operator" } else { &self.token };
        let request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_vec()))
            .unwrap();
        let response = self.runtime.block_on(self.router.clone().oneshot(request)).unwrap();
        assert!(
            response.status().as_u16() < 500,
            "{method} {path} answered {} to {:?}",
            response.status(),
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn api_request_decoding_on_arbitrary_bodies() {
    // A panic inside is the failure bolero reports; nothing is reused after one.
    let api = std::panic::AssertUnwindSafe(api());
    for input in kept("api") {
        if let Some((pick, body)) = input.split_first() {
            api.send(*pick, body);
        }
    }
    bolero::check!().for_each(|bytes: &[u8]| {
        if let Some((pick, body)) = bytes.split_first() {
            api.send(*pick, body);
        }
    });
}

#[test]
fn api_request_decoding_on_json_shaped_bodies() {
    let api = std::panic::AssertUnwindSafe(api());
    bolero::check!().with_type::<(u8, Vec<(String, u8)>)>().for_each(|(pick, fields)| {
        // Objects with arbitrary keys and values of every JSON type: wrong shapes,
        // unknown fields, huge or negative numbers.
        let values =
            ["null", "true", "-1", "1e309", "18446744073709551616", "\"\"", "[]", "{}", "[{}]", "\"x\""];
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| {
                format!("{}: {}", serde_json::to_string(k).unwrap(), values[usize::from(*v) % values.len()])
            })
            .collect();
        api.send(*pick, format!("{{{}}}", body.join(", ")).as_bytes());
    });
}
