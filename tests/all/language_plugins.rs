//! Python and JavaScript plug-ins, built from source by the SDKs' build commands
//! (componentize-py 0.25.1, componentize-js 0.23.0; see `sample-plugins/artifacts`), run
//! in the sandbox and through a server, with the behaviour of their Rust twins.

use reqwest::Method;
use serde_json::json;
use sluice::callbacks::CallbackSettings;
use sluice::engine::{ExecutionContext, ExecutionError};
use sluice::records::{Decimal, EntityReference, RecordChange, RecordStore, Value};
use sluice_sample_plugins as samples;

use crate::http::TestServer;
use crate::support::{entity, on_record, run, store};

/// Each language's samples: (language, echo, account-number, credit-validator).
const LANGUAGES: [(&str, &str, &str, &str); 2] = [
    ("python", samples::PY_ECHO, samples::PY_ACCOUNT_NUMBER, samples::PY_CREDIT_VALIDATOR),
    ("js", samples::JS_ECHO, samples::JS_ACCOUNT_NUMBER, samples::JS_CREDIT_VALIDATOR),
];

/// Every kind of value crosses into each language's values and back unchanged.
#[tokio::test]
async fn echo_returns_every_kind_of_value_unchanged() {
    let mut context = ExecutionContext::new("Ping", "none");
    let decimal = |text: &str| text.parse::<Decimal>().unwrap();
    let values = [
        ("null", Value::Null),
        ("text", Value::from("héllo")),
        ("small", Value::Integer(-7)),
        ("large", Value::Integer(i64::MAX)),
        ("decimal", Value::Decimal(decimal("-12.50"))),
        ("money", Value::Money(decimal("100.0001"))),
        ("yes", Value::Boolean(true)),
        ("when", Value::DateTime("2026-11-23T05:00:00.123Z".parse().unwrap())),
        ("choice", Value::OptionSet(3)),
        (
            "owner",
            Value::EntityReference(EntityReference {
                entity: "systemuser".into(),
                id: "u1".into(),
                name: Some("Alice".into()),
            }),
        ),
    ];
    context.input_parameters = values.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    for (language, echo, _, _) in LANGUAGES {
        let run = run(echo, context.clone(), &store(vec![]), None).await;
        let output = run.outcome.unwrap_or_else(|e| panic!("{language}: {e}"));
        assert_eq!(output.output_parameters, context.input_parameters, "{language}");
    }
}

#[tokio::test]
async fn account_number_follows_the_highest_number_in_use_in_every_language() {
    for (language, _, account_number, _) in LANGUAGES {
        let account = entity("account", "a-new", &[("name", "Fabrikam".into())]);
        let records = store(vec![
            entity("account", "a1", &[("accountnumber", "ACC-000041".into())]),
            entity("account", "a2", &[("accountnumber", "ACC-000007".into())]),
            account.clone(),
        ]);
        let run = run(account_number, on_record("Create", &account), &records, Some("ACC")).await;
        let output = run.outcome.unwrap_or_else(|e| panic!("{language}: {e}"));
        assert_eq!(output.output_parameters["accountnumber"], Value::from("ACC-000042"), "{language}");
        let stored = records.retrieve("local", "account", "a-new", &[]).unwrap();
        assert_eq!(stored.attributes["accountnumber"], Value::from("ACC-000042"), "{language}");
        assert!(matches!(&run.changes[..], [RecordChange::Update { id, .. }] if id == "a-new"), "{language}");
        assert!(
            run.trace.lines().any(|l| l.contains("a-new becomes ACC-000042")),
            "{language}: {:?}",
            run.trace.lines().collect::<Vec<_>>()
        );
    }
}

/// An exception the plug-in does not catch (here the SDK's record-not-found, raised by a
/// host call) is a transient error that keeps its type and message, never a bare trap.
#[tokio::test]
async fn an_uncaught_exception_is_a_transient_error_with_its_message() {
    for (language, _, account_number, _) in LANGUAGES {
        let missing = entity("account", "a-missing", &[("name", "Gone".into())]);
        let run = run(account_number, on_record("Create", &missing), &store(vec![]), None).await;
        match run.outcome {
            Err(ExecutionError::Transient { message }) => {
                assert!(
                    message.contains("RecordNotFound") && message.contains("a-missing"),
                    "{language}: {message}"
                )
            }
            other => panic!("{language}: expected a transient error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn credit_validator_refuses_with_a_business_error_in_every_language() {
    for (language, _, _, validator) in LANGUAGES {
        let risky = entity(
            "account",
            "a9",
            &[("name", "Risky Ltd".into()), ("creditlimit", Value::Money("-500".parse().unwrap()))],
        );
        let run = run(validator, on_record("Create", &risky), &store(vec![]), None).await;
        match run.outcome {
            Err(ExecutionError::Business { message }) => {
                assert_eq!(message, "Credit limit cannot be negative (got -500.00).", "{language}")
            }
            other => panic!("{language}: expected a business error, got {other:?}"),
        }
    }
}

/// Through a real server: a sync validator's business message reaches the caller, an
/// async one's is its failed job's, and an async step's job runs and records its output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_plugins_run_through_a_server() {
    let server = TestServer::start(CallbackSettings::default()).await;
    for (language, _, account_number, validator) in LANGUAGES {
        let tenant = server.tenant(&format!("{language}-tenant")).await;
        let token = &tenant.token;
        let validator = server.upload(&tenant, validator, "credit-validator").await;
        let step = json!({"name": "validate", "plugin": validator, "message": "Create", "entity": "account",
                          "stage": "pre-validation", "mode": "synchronous"});
        assert_eq!(server.post("/steps", token, step).await.status, 201, "{language}");
        let numbering = server.upload(&tenant, account_number, "account-number").await;
        let step = json!({"name": "number", "plugin": numbering, "message": "Create", "entity": "account"});
        assert_eq!(server.post("/steps", token, step).await.status, 201, "{language}");

        let refused = json!({"message": "Create", "entity": "account", "attributes": {"name": "Risky", "creditlimit": {"money": "-5"}}});
        let refused = server.post("/events", token, refused).await;
        assert_eq!((refused.status, refused.code()), (422, "step-failed"), "{language}: {refused:?}");
        let message = refused.json["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("Credit limit cannot be negative (got -5.00)."), "{language}: {refused:?}");

        // The same validator as an async step on contacts: its exception's message is the
        // failed job's.
        let step = json!({"name": "validate contacts", "plugin": validator, "message": "Create", "entity": "contact"});
        assert_eq!(server.post("/steps", token, step).await.status, 201, "{language}");
        let contact = json!({"message": "Create", "entity": "contact", "attributes": {"name": "Risky", "creditlimit": {"money": "-7"}}});
        let contact = server.post("/events", token, contact).await;
        let job = format!("/jobs/{}", contact.json["jobs"][0]);
        let failed = server.wait_for(&job, token, |j| j["status"].as_u64().is_some_and(|s| s >= 30)).await;
        assert_eq!(failed["status_name"], "failed", "{language}: {failed}");
        assert_eq!(failed["error_code"], "business-error", "{language}: {failed}");
        assert!(
            failed["error_message"]
                .as_str()
                .unwrap_or_default()
                .contains("Credit limit cannot be negative (got -7.00)."),
            "{language}: {failed}"
        );

        let created = json!({"message": "Create", "entity": "account", "attributes": {"name": "Contoso"}});
        let created = server.post("/events", token, created).await;
        assert_eq!(created.status, 200, "{language}: {created:?}");
        let job = format!("/jobs/{}", created.json["jobs"][0]);
        let done = server.wait_for(&job, token, |j| j["status"].as_u64().is_some_and(|s| s >= 30)).await;
        assert_eq!(done["status_name"], "succeeded", "{language}: {done}");
        assert_eq!(done["output"]["output_parameters"]["accountnumber"], "ACC-000001", "{language}: {done}");
        let trace = server.send(Method::GET, &format!("{job}/trace"), token, None).await;
        assert!(trace.json.to_string().contains("becomes ACC-000001"), "{language}: {trace:?}");
    }
}

/// What a hostile plug-in's standard library would try: the host's files, its root
/// folder, its environment, a socket, a name lookup. The WASI interfaces are linked, so a
/// plain build loads, but each reaches nothing.
#[tokio::test]
async fn a_python_standard_library_reaches_no_file_socket_or_environment() {
    let run =
        run(samples::PY_SANDBOX_PROBE, ExecutionContext::new("Probe", "none"), &store(vec![]), None).await;
    let output = run.outcome.expect("the probe reports what it tried").output_parameters;
    let said = |key: &str| match &output[key] {
        Value::String(text) => text.clone(),
        other => panic!("{key}: {other:?}"),
    };
    for attempt in ["file", "listing", "socket", "tcp", "lookup"] {
        assert!(said(attempt).starts_with("refused:"), "{attempt}: {}", said(attempt));
    }
    assert_eq!(said("tcp"), "refused: PermissionError", "sockets refuse every use");
    assert_eq!(said("environment"), "allowed: {}", "the environment is empty");
}
