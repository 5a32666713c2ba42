//! Every realistic sample plug-in, run in the sandbox, with its actual output checked.

use sluice::engine::{ExecutionContext, ExecutionError};
use sluice::records::{Decimal, Entity, EntityReference, RecordChange, RecordStore, Value};
use sluice_sample_plugins as samples;

use crate::support::{attrs, entity, on_record, run, store};

fn money(text: &str) -> Value {
    Value::Money(text.parse::<Decimal>().unwrap())
}

#[tokio::test]
async fn account_number_follows_the_highest_number_in_use() {
    let account = entity("account", "a-new", &[("name", "Fabrikam".into())]);
    let records = store(vec![
        entity("account", "a1", &[("accountnumber", "ACC-000041".into())]),
        entity("account", "a2", &[("accountnumber", "ACC-000007".into())]),
        account.clone(),
    ]);
    let run = run(samples::ACCOUNT_NUMBER, on_record("Create", &account), &records, Some("ACC")).await;
    let output = run.outcome.expect("numbering succeeds");
    assert_eq!(output.output_parameters["accountnumber"], Value::from("ACC-000042"));
    let stored = records.retrieve("local", "account", "a-new", &[]).unwrap();
    assert_eq!(stored.attributes["accountnumber"], Value::from("ACC-000042"));
    assert_eq!(stored.attributes["name"], Value::from("Fabrikam"), "other attributes untouched");
    assert!(matches!(&run.changes[..], [RecordChange::Update { id, .. }] if id == "a-new"));
    assert!(run.trace.lines().any(|l| l.contains("a-new becomes ACC-000042")));
}

#[tokio::test]
async fn lead_router_assigns_the_owner_for_the_country_or_the_fallback() {
    let table = "US=alice;DE=bertha;*=carol";
    for (country, owner) in [("DE", "bertha"), ("us", "alice"), ("FR", "carol")] {
        let lead = entity("lead", "l1", &[("country", country.into())]);
        let records = store(vec![lead.clone()]);
        let run = run(samples::LEAD_ROUTER, on_record("Create", &lead), &records, Some(table)).await;
        assert_eq!(run.outcome.unwrap().output_parameters["owner"], Value::from(owner));
        let stored = records.retrieve("local", "lead", "l1", &[]).unwrap();
        let expected = EntityReference { entity: "systemuser".into(), id: owner.into(), name: None };
        assert_eq!(stored.attributes["ownerid"], Value::EntityReference(expected));
    }
}

#[tokio::test]
async fn lead_router_without_a_routing_table_is_a_business_error() {
    let lead = entity("lead", "l1", &[("country", "DE".into())]);
    let run = run(samples::LEAD_ROUTER, on_record("Create", &lead), &store(vec![lead.clone()]), None).await;
    let error = run.outcome.unwrap_err();
    assert!(matches!(&error, ExecutionError::Business { message } if message.contains("no routing table")));
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn rollup_sums_the_open_opportunities_of_the_account() {
    /// An opportunity of `account`, worth `value`, open (state 0) or closed (1).
    fn opportunity(id: &str, account: &str, value: &str, state: i32) -> Entity {
        let parent = EntityReference { entity: "account".into(), id: account.into(), name: None };
        entity(
            "opportunity",
            id,
            &[
                ("parentaccountid", Value::EntityReference(parent)),
                ("estimatedvalue", money(value)),
                ("statecode", Value::OptionSet(state)),
            ],
        )
    }
    let trigger = opportunity("o1", "acc1", "100.00", 0);
    let records = store(vec![
        entity("account", "acc1", &[("name", "Contoso".into())]),
        trigger.clone(),
        opportunity("o2", "acc1", "250.5", 0),
        opportunity("o3", "acc1", "999.00", 1),
        opportunity("o4", "acc2", "5.00", 0),
    ]);
    let run = run(samples::OPPORTUNITY_ROLLUP, on_record("Update", &trigger), &records, None).await;
    let output = run.outcome.expect("rollup succeeds");
    assert_eq!(output.output_parameters["total"], money("350.50"));
    assert_eq!(output.output_parameters["count"], Value::Integer(2));
    let account = records.retrieve("local", "account", "acc1", &[]).unwrap();
    assert_eq!(account.attributes["totalopportunityvalue"], money("350.50"));
}

#[tokio::test]
async fn credit_validator_refuses_a_negative_limit_with_a_business_error() {
    let bad = entity("account", "a1", &[("name", "Contoso".into()), ("creditlimit", money("-5"))]);
    let run = run(samples::CREDIT_VALIDATOR, on_record("Create", &bad), &store(vec![]), None).await;
    assert_eq!(
        run.outcome.unwrap_err(),
        ExecutionError::Business { message: "Credit limit cannot be negative (got -5.00).".into() }
    );

    let nameless = entity("account", "a2", &[("creditlimit", money("10"))]);
    let run =
        crate::support::run(samples::CREDIT_VALIDATOR, on_record("Create", &nameless), &store(vec![]), None)
            .await;
    assert_eq!(
        run.outcome.unwrap_err(),
        ExecutionError::Business { message: "An account needs a name.".into() }
    );

    let good = entity("account", "a3", &[("name", "Contoso".into()), ("creditlimit", money("5000"))]);
    let run =
        crate::support::run(samples::CREDIT_VALIDATOR, on_record("Create", &good), &store(vec![]), None)
            .await;
    assert_eq!(run.outcome.unwrap().output_parameters["valid"], Value::Boolean(true));
}

#[tokio::test]
async fn flaky_plugin_fails_transiently_then_succeeds_on_the_third_attempt() {
    let records = store(vec![]);
    let context = ExecutionContext::new("Update", "account");
    for attempt in 1..=2 {
        let run = run(samples::FLAKY_SYNC, context.clone(), &records, Some("2")).await;
        let error = run.outcome.unwrap_err();
        assert!(
            matches!(&error, ExecutionError::Transient { message } if message.contains(&format!("attempt {attempt}"))),
            "{error}"
        );
        assert!(error.is_retryable());
    }
    let run = run(samples::FLAKY_SYNC, context, &records, Some("2")).await;
    assert_eq!(run.outcome.unwrap().output_parameters["attempts"], Value::Integer(3));
}

#[tokio::test]
async fn audit_trail_keeps_the_newest_ten_kilobytes_of_trace() {
    let record = entity(
        "contact",
        "c1",
        &[("firstname", "Ada".into()), ("lastname", "Lovelace".into()), ("score", Value::Integer(99))],
    );
    let mut context = on_record("Update", &record);
    context.input_parameters = attrs(&[("rounds", Value::Integer(200))]);
    let run = run(samples::AUDIT_TRAIL, context, &store(vec![]), None).await;
    let output = run.outcome.expect("tracing succeeds");
    assert_eq!(output.output_parameters["lines"], Value::Integer(200 * 5));
    assert!(run.trace.bytes() <= 10 * 1024, "{} bytes kept", run.trace.bytes());
    assert!(run.trace.dropped() > 0, "older lines were dropped");
    assert!(run.trace.lines().last().unwrap().starts_with("round 200 post.score"), "the newest line is kept");
}

#[tokio::test]
async fn echo_round_trips_every_value_type_through_the_sandbox() {
    let parameters = attrs(&[
        ("null", Value::Null),
        ("string", "héllo, wörld".into()),
        ("integer", Value::Integer(-42)),
        ("decimal", Value::Decimal("3.14159".parse().unwrap())),
        ("boolean", Value::Boolean(true)),
        ("date-time", Value::DateTime("2026-11-23T05:00:00.5Z".parse().unwrap())),
        ("money", money("1234.56")),
        ("option-set", Value::OptionSet(100_000_001)),
        (
            "lookup",
            Value::EntityReference(EntityReference {
                entity: "account".into(),
                id: "a1".into(),
                name: Some("Contoso".into()),
            }),
        ),
    ]);
    let mut context = ExecutionContext::new("sample_Echo", "none");
    context.input_parameters = parameters.clone();
    let run = run(samples::ECHO, context, &store(vec![]), None).await;
    assert_eq!(run.outcome.unwrap().output_parameters, parameters);
    assert!(run.accounting.fuel_used > 0);
    assert!(run.accounting.peak_memory_bytes > 0);
}

#[tokio::test]
async fn cpu_burn_counts_primes() {
    let mut context = ExecutionContext::new("sample_Burn", "none");
    context.input_parameters = attrs(&[("limit", Value::Integer(100_000))]);
    let run = run(samples::CPU_BURN, context, &store(vec![]), None).await;
    assert_eq!(run.outcome.unwrap().output_parameters["primes"], Value::Integer(9592));
    assert!(run.accounting.fuel_used > 1_000_000, "a sieve of 100,000 costs real fuel");
}

#[tokio::test]
async fn cpu_burn_text_workload_formats_and_parses_account_numbers() {
    let mut context = ExecutionContext::new("sample_Burn", "none");
    context.input_parameters = attrs(&[("limit", Value::Integer(1_000)), ("workload", "text".into())]);
    let run = run(samples::CPU_BURN, context, &store(vec![]), None).await;
    // Each number n contributes n ^ 10 (every line is "ACC-" plus 6 digits).
    let expected: i64 = (0..1_000).map(|n: i64| n ^ 10).sum();
    assert_eq!(run.outcome.unwrap().output_parameters["checksum"], Value::Integer(expected));
}

#[tokio::test]
async fn touch_counter_updates_the_record_that_triggered_it() {
    let contact = entity("contact", "c1", &[("touches", Value::Integer(4))]);
    let records = store(vec![contact.clone()]);
    let mut context = on_record("Update", &contact);
    context.depth = 3;
    let run = run(samples::TOUCH_COUNTER, context, &records, None).await;
    assert_eq!(run.outcome.unwrap().output_parameters["touches"], Value::Integer(5));
    assert_eq!(
        records.retrieve("local", "contact", "c1", &[]).unwrap().attributes["touches"],
        Value::Integer(5)
    );
    assert_eq!(run.trace.lines().collect::<Vec<_>>(), ["depth 3: touches 5"]);
}

#[tokio::test]
async fn welcome_mail_queues_an_email_record_for_a_contact_with_an_address() {
    let contact = entity(
        "contact",
        "c1",
        &[("fullname", "Ada Lovelace".into()), ("emailaddress1", "ada@example.com".into())],
    );
    let records = store(vec![contact.clone()]);
    let sent = run(samples::WELCOME_MAIL, on_record("Create", &contact), &records, None).await;
    let output = sent.outcome.unwrap().output_parameters;
    assert_eq!(output["queued"], Value::Boolean(true));
    let Value::String(id) = &output["email"] else { panic!("{output:?}") };
    let email = records.retrieve("local", "email", id, &[]).unwrap().attributes;
    assert_eq!(email["to"], Value::from("ada@example.com"));
    assert_eq!(email["subject"], Value::from("Welcome, Ada Lovelace"));
    assert!(matches!(&email["regardingobjectid"], Value::EntityReference(r) if r.id == "c1"));

    let silent = entity("contact", "c2", &[("fullname", "No Address".into())]);
    let run =
        run(samples::WELCOME_MAIL, on_record("Create", &silent), &store(vec![silent.clone()]), None).await;
    assert_eq!(run.outcome.unwrap().output_parameters["queued"], Value::Boolean(false));
}

#[test]
fn every_sample_plugin_has_a_test() {
    let sources: String = [
        "sample_plugins.rs",
        "hostile_plugins.rs",
        "hostile_tenants.rs",
        "limits.rs",
        "cli.rs",
        "language_plugins.rs",
        "outbound_http.rs",
    ]
    .iter()
    .map(|file| {
        std::fs::read_to_string(format!("{}/../tests/all/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    })
    .collect();
    for (name, _) in samples::ALL {
        let constant = format!("samples::{}", name.replace('-', "_").to_uppercase());
        assert!(sources.contains(&constant), "sample plug-in {name} has no test (no use of {constant})");
    }
}
