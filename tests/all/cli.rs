//! `sluice plugin check` and `sluice plugin run`, as a plug-in author uses them.

use std::path::Path;
use std::process::{Command, Output};

use sluice_sample_plugins as samples;

fn sluice(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
        .output()
        .expect("the sluice binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_refuses_every_bad_file_with_a_one_line_error_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let echo = std::fs::read(samples::ECHO).unwrap();
    let oversize = {
        let mut bytes = b"\0asm\x0d\x00\x01\x00".to_vec();
        bytes.resize(33 << 20, 0);
        bytes
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.wasm", vec![], "the file is empty"),
        ("garbage.wasm", b"\x7fELF not wasm at all".to_vec(), "not a WebAssembly binary"),
        ("core.wasm", wat::parse_str("(module)").unwrap(), "core WebAssembly module"),
        ("truncated.wasm", echo[..echo.len() / 2].to_vec(), "malformed component"),
        (
            "unknown-import.wasm",
            wat::parse_str(r#"(component (import "acme:evil/net@1.0.0" (instance)))"#).unwrap(),
            "imports `acme:evil/net@1.0.0`",
        ),
        (
            "no-export.wasm",
            wat::parse_str("(component)").unwrap(),
            "does not export `sluice:plugin/handler@0.1.0`",
        ),
        (
            "wrong-export.wasm",
            wat::parse_str(
                r#"(component
                    (core module $m (func (export "execute")))
                    (core instance $i (instantiate $m))
                    (func $execute (canon lift (core func $i "execute")))
                    (instance $handler (export "execute" (func $execute)))
                    (export "sluice:plugin/handler@0.1.0" (instance $handler)))"#,
            )
            .unwrap(),
            "has the wrong type",
        ),
        ("huge.wasm", oversize, "over the 33554432-byte limit"),
    ];
    for (name, bytes, expected) in cases {
        let file = dir.path().join(name);
        std::fs::write(&file, bytes).unwrap();
        let out = sluice(&["plugin", "check", file.to_str().unwrap()], &dir.path().join("cache"));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.contains(expected), "{name}: expected '{expected}' in: {stderr}");
        assert!(stderr.starts_with("error: "), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    }
}

#[test]
fn check_describes_a_valid_plugin() {
    let cache = tempfile::tempdir().unwrap();
    let out = sluice(&["plugin", "check", samples::ACCOUNT_NUMBER], cache.path());
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for expected in
        ["a valid Sluice plug-in", "sluice:plugin/records@0.1.0", "sluice:plugin/handler@0.1.0", "fuel"]
    {
        assert!(stdout.contains(expected), "missing {expected}: {stdout}");
    }
    assert!(stdout.contains("compiled"));
    let again = text(&sluice(&["plugin", "check", samples::ACCOUNT_NUMBER], cache.path()).stdout);
    assert!(again.contains("loaded from the artifact cache"), "{again}");
}

#[test]
fn run_prints_output_changes_trace_and_accounting() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("context.json");
    let records = dir.path().join("records.json");
    std::fs::write(
        &input,
        r#"{"message": "Create", "entity": "lead", "record_id": "l1",
            "post_image": {"logical_name": "lead", "id": "l1", "attributes": {"country": "DE"}}}"#,
    )
    .unwrap();
    std::fs::write(&records, r#"[{"logical_name": "lead", "id": "l1", "attributes": {"country": "DE"}}]"#)
        .unwrap();
    let args = [
        "plugin",
        "run",
        samples::LEAD_ROUTER,
        "--input",
        input.to_str().unwrap(),
        "--records",
        records.to_str().unwrap(),
        "--config",
        "DE=bertha;*=carol",
    ];
    let out = sluice(&args, &dir.path().join("cache"));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    for expected in
        ["outcome     succeeded", "\"owner\": \"bertha\"", "\"change\":\"update\"", "goes to bertha", "fuel"]
    {
        assert!(stdout.contains(expected), "missing {expected}: {stdout}");
    }

    let mut json_args = args.to_vec();
    json_args.push("--json");
    let out = sluice(&json_args, &dir.path().join("cache"));
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("--json prints one JSON object");
    assert_eq!(report["outcome"]["output"]["output_parameters"]["owner"], "bertha");
    assert!(report["accounting"]["fuel_used"].as_u64().unwrap() > 0);
}

#[test]
fn run_reports_a_named_error_and_exits_1_when_the_plugin_fails() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("context.json");
    std::fs::write(&input, r#"{"message": "Create", "entity": "account"}"#).unwrap();
    let out = sluice(
        &[
            "plugin",
            "run",
            samples::HOSTILE_INFINITE_LOOP,
            "--input",
            input.to_str().unwrap(),
            "--fuel",
            "50000000",
            "--json",
        ],
        &dir.path().join("cache"),
    );
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"]["error"]["code"], "fuel-exhausted");
}

#[test]
fn run_explains_a_bad_context_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("context.json");
    for (body, expected) in [
        ("{not json", "context.json is not valid"),
        (r#"{"message": "Create"}"#, "missing field `entity`"),
        (r#"{"message": "Create", "entity": "a", "colour": 1}"#, "unknown field `colour`"),
    ] {
        std::fs::write(&input, body).unwrap();
        let out = sluice(
            &["plugin", "run", samples::ECHO, "--input", input.to_str().unwrap()],
            &dir.path().join("cache"),
        );
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "expected '{expected}' in {stderr}");
    }
}

/// Without a records file, the record a context is about exists as the write made it (so
/// a plug-in's update of it works, as on a server); `--repeat` reports the time per
/// execution; the plug-in's load time is in microseconds.
#[test]
fn run_creates_the_contexts_record_and_repeats_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("context.json");
    std::fs::write(
        &input,
        r#"{"message": "Create", "entity": "account", "record_id": "a-new",
            "post_image": {"logical_name": "account", "id": "a-new", "attributes": {"name": "Fabrikam"}}}"#,
    )
    .unwrap();
    let args = [
        "plugin",
        "run",
        samples::ACCOUNT_NUMBER,
        "--input",
        input.to_str().unwrap(),
        "--repeat",
        "5",
        "--json",
    ];
    let out = sluice(&args, &dir.path().join("cache"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"]["output"]["output_parameters"]["accountnumber"], "ACC-000001", "{report}");
    assert_eq!(report["repeated"]["runs"], 5, "{report}");
    assert!(report["repeated"]["median_us"].as_u64().unwrap() > 0, "{report}");
    assert!(report["plugin"]["load_time_us"].is_u64(), "{report}");
}
