//! The hostile gallery: each plug-in ends as a failed execution with its named error,
//! within its limit, and the host goes on serving.

use std::time::Duration;

use sluice::engine::{ExecutionContext, ExecutionError, Limits};
use sluice::records::{Filter, RecordStore, Value};
use sluice_sample_plugins as samples;

use crate::support::{run, run_with, store, tight_limits};

fn context() -> ExecutionContext {
    ExecutionContext::new("Create", "account")
}

#[tokio::test]
async fn infinite_loop_runs_out_of_fuel() {
    let limits = tight_limits();
    let run = run_with(samples::HOSTILE_INFINITE_LOOP, context(), &store(vec![]), None, limits.clone()).await;
    assert_eq!(run.outcome.unwrap_err(), ExecutionError::FuelExhausted { limit: limits.fuel });
    assert_eq!(run.accounting.fuel_used, limits.fuel);
}

#[tokio::test]
async fn infinite_loop_with_ample_fuel_hits_the_deadline() {
    let limits = Limits { fuel: u64::MAX / 2, deadline_ms: 300, ..Limits::default() };
    let run = run_with(samples::HOSTILE_INFINITE_LOOP, context(), &store(vec![]), None, limits).await;
    assert_eq!(
        run.outcome.unwrap_err(),
        ExecutionError::DeadlineExceeded { limit: Duration::from_millis(300) }
    );
    // Stopped at the deadline, not whenever the fuel would have run out (years from now).
    assert!(run.accounting.wall_time_us < 30_000_000, "ran {} µs", run.accounting.wall_time_us);
}

#[tokio::test]
async fn memory_bomb_hits_the_memory_limit() {
    let limits = Limits { memory_bytes: 32 << 20, ..tight_limits() };
    let run = run_with(samples::HOSTILE_MEMORY_BOMB, context(), &store(vec![]), None, limits).await;
    assert_eq!(run.outcome.unwrap_err(), ExecutionError::MemoryLimitExceeded { limit: 32 << 20 });
    assert!(run.accounting.peak_memory_bytes <= 32 << 20);
    assert!(run.accounting.peak_memory_bytes > 16 << 20, "it did grow before it was stopped");
    assert!(
        run.trace.lines().any(|l| l.starts_with("[stderr] memory allocation")),
        "the guest's own report is traced"
    );
}

#[tokio::test]
async fn deep_recursion_overflows_the_wasm_stack() {
    let run =
        run_with(samples::HOSTILE_DEEP_RECURSION, context(), &store(vec![]), None, tight_limits()).await;
    assert_eq!(run.outcome.unwrap_err(), ExecutionError::StackOverflow);
}

#[tokio::test]
async fn huge_output_is_refused() {
    let run = run_with(samples::HOSTILE_HUGE_OUTPUT, context(), &store(vec![]), None, tight_limits()).await;
    match run.outcome.unwrap_err() {
        ExecutionError::OutputTooLarge { size, limit } => {
            assert_eq!(limit, Limits::default().output_bytes);
            assert!(size >= 16 << 20, "{size}");
        }
        other => panic!("expected OutputTooLarge, got {other}"),
    }
}

#[tokio::test]
async fn invalid_utf8_inside_a_host_call_traps_the_guest_not_the_host() {
    let run = run_with(samples::HOSTILE_HOST_TRAP, context(), &store(vec![]), None, tight_limits()).await;
    match run.outcome.unwrap_err() {
        ExecutionError::InvalidHostCall { message } => assert!(message.contains("utf-8"), "{message}"),
        other => panic!("expected InvalidHostCall, got {other}"),
    }
    assert!(run.trace.is_empty(), "the broken line never reached the trace log");
}

#[tokio::test]
async fn write_storm_is_stopped_at_the_record_write_limit() {
    let records = store(vec![]);
    let limits = Limits { record_writes: 250, ..tight_limits() };
    let run = run_with(samples::HOSTILE_WRITE_STORM, context(), &records, None, limits).await;
    assert_eq!(run.outcome.unwrap_err(), ExecutionError::RecordWriteLimitExceeded { limit: 250 });
    assert_eq!(run.changes.len(), 250);
    let all_tasks = Filter { entity: "task".into(), columns: vec![], conditions: vec![], top: None };
    assert_eq!(records.query("local", &all_tasks).unwrap().len(), 250);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_keeps_serving_while_and_after_the_whole_gallery_runs_at_once() {
    let hostile = [
        samples::HOSTILE_INFINITE_LOOP,
        samples::HOSTILE_MEMORY_BOMB,
        samples::HOSTILE_DEEP_RECURSION,
        samples::HOSTILE_HUGE_OUTPUT,
        samples::HOSTILE_HOST_TRAP,
        samples::HOSTILE_WRITE_STORM,
    ];
    let mut tasks = Vec::new();
    for path in hostile.into_iter().cycle().take(24) {
        tasks.push(tokio::spawn(async move {
            run_with(path, context(), &store(vec![]), None, tight_limits()).await.outcome
        }));
    }
    // A well-behaved plug-in runs fine in the middle of the storm.
    let mut echo = context();
    echo.input_parameters.insert("ping".into(), Value::from("pong"));
    let answer = run(samples::ECHO, echo.clone(), &store(vec![]), None).await;
    assert_eq!(answer.outcome.unwrap().output_parameters["ping"], Value::from("pong"));
    for task in tasks {
        let outcome = task.await.expect("no execution panics the host");
        assert!(outcome.is_err(), "every hostile plug-in fails");
    }
    let answer = run(samples::ECHO, echo, &store(vec![]), None).await;
    assert!(answer.outcome.is_ok());
}
