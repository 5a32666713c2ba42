//! What must survive a restart or a delete: ids are never handed out twice, a cancel or
//! pause asked of a running job is carried out after a crash, and the exceptions a job
//! had still count towards its postponement.

use std::sync::Arc;

use sluice::engine::{Mode, Stage};
use sluice::jobs::{Lane, OrgId, Quotas, Status};
use sluice::records::Value;
use sluice::service::{Event, ManualClock, Options, Service};
use sluice::store::{Definition, DefinitionKind, JobUpdate, NewJob, Operation, SqliteStore, Store, Trigger};
use sluice_sample_plugins as samples;

use crate::support::{attrs, engine};

const T0: i64 = 1_800_000_000_000;

fn open(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Service {
    let store = Arc::new(SqliteStore::open(&dir.join("sluice.db")).unwrap());
    Service::open(store, engine().clone(), clock.clone(), Options::default()).unwrap()
}

fn step(service: &Service, org: OrgId, path: &str, entity: &str, mode: Mode) -> Definition {
    let plugin = service.upload_plugin(org, path, &std::fs::read(path).unwrap()).unwrap().id;
    Definition::step(org, entity, plugin, Trigger::on("Create", entity), mode, None)
}

fn create(entity: &str, id: &str) -> Event {
    crate::support::create_event(entity, id, attrs(&[("name", Value::from(id))]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_definitions_or_jobs_id_is_never_given_again() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let service = open(dir.path(), &clock);
    let org = service.create_org("contoso").unwrap();
    let first =
        service.save_definition(step(&service, org, samples::ECHO, "account", Mode::Asynchronous)).unwrap();
    service.delete_definition(org, first).unwrap();
    let mut auto_deleting = step(&service, org, samples::ECHO, "account", Mode::Asynchronous);
    auto_deleting.auto_delete = true;
    let second = service.save_definition(auto_deleting).unwrap();
    assert!(second > first, "the deleted step's id {first:?} was given again as {second:?}");

    // An auto-deleted job (the newest row, deleted on success) leaves its id used.
    let job = service.fire(org, create("account", "a1")).await.unwrap().jobs[0];
    service.run_until_idle().await.unwrap();
    assert!(service.job(org, job).is_err(), "the job deleted itself on success");
    let next = service.fire(org, create("account", "a2")).await.unwrap().jobs[0];
    assert!(next > job, "the deleted job's id {job:?} was given again as {next:?}");
}

fn waiting_job(org: OrgId, definition: sluice::jobs::DefinitionId) -> NewJob {
    NewJob {
        org,
        lane: Lane::Priority,
        operation: Operation::AsyncPlugin,
        definition,
        definition_version: 1,
        correlation_id: "c".into(),
        depth: 1,
        record: None,
        // JSON, as an earlier Sluice stored payloads: still read.
        payload: serde_json::to_vec(&sluice::engine::ExecutionContext::new("Create", "account")).unwrap(),
        dependency_token: None,
        created_at: T0,
        status: Status::WaitingForResources,
        error: None,
        background: None,
    }
}

/// A node died while a job it ran was Canceling or Pausing: at restart the cancel is
/// carried out (Canceled) and the pause too (Suspended), instead of running it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_or_pause_asked_before_a_crash_is_carried_out_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let (org, canceling, pausing) = {
        let service = open(dir.path(), &clock);
        let org = service.create_org("contoso").unwrap();
        let definition = service
            .save_definition(step(&service, org, samples::ECHO, "account", Mode::Asynchronous))
            .unwrap();
        let store = service.store();
        let ids = store.insert_jobs(&[waiting_job(org, definition), waiting_job(org, definition)]).unwrap();
        let mut updates = Vec::new();
        for (id, status) in [(ids[0], Status::Canceling), (ids[1], Status::Pausing)] {
            updates.push(JobUpdate::Started { id, org, at: T0 });
            updates.push(JobUpdate::Status { id, org, lane: Lane::Priority, at: T0, status, error: None });
        }
        store.apply(&updates).unwrap();
        (org, ids[0], ids[1])
    };
    let service = open(dir.path(), &clock);
    service.run_until_idle().await.unwrap();
    assert_eq!(service.job(org, canceling).unwrap().status, Status::Canceled);
    let paused = service.job(org, pausing).unwrap();
    assert_eq!((paused.status, paused.retry_count), (Status::Waiting, 0), "suspended, not run again");
    assert_eq!(service.resume(org, pausing).unwrap(), Status::WaitingForResources, "a resume moves it");
}

/// A job's exceptions within D minutes still count after a restart: the A-th exception
/// postpones it even if a restart came between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceptions_counted_before_a_restart_still_count_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let (org, job) = {
        let service = open(dir.path(), &clock);
        let org = service.create_org("contoso").unwrap();
        let quotas = Quotas { max_exceptions: 3, ..Quotas::default() };
        service.set_quotas(org, Lane::Priority, quotas).unwrap();
        let mut flaky = step(&service, org, samples::FLAKY_SYNC, "account", Mode::Asynchronous);
        if let DefinitionKind::Step { unsecure_config, .. } = &mut flaky.kind {
            *unsecure_config = Some("1000000".into());
        }
        service.save_definition(flaky).unwrap();
        let job = service.fire(org, create("account", "a1")).await.unwrap().jobs[0];
        service.run_once().await.unwrap();
        service.run_once().await.unwrap();
        let row = service.job(org, job).unwrap();
        assert_eq!((row.status, row.retry_count), (Status::WaitingForResources, 2), "two exceptions so far");
        (org, job)
    };
    let service = open(dir.path(), &clock);
    service.run_once().await.unwrap();
    let row = service.job(org, job).unwrap();
    assert_eq!(
        (row.status, row.postponement_count),
        (Status::Waiting, 1),
        "the third exception within D postpones it, restart or not"
    );
}

/// The loop rule's counts survive a restart: a workflow started 16 times on a record
/// within the hour is stopped at its 17th start after the restart, not 16 starts later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflows_starts_on_a_record_still_count_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let update = |n: i64| Event {
        message: "Update".into(),
        entity: "account".into(),
        record_id: Some("a1".into()),
        attributes: attrs(&[("number", Value::Integer(n))]),
        dependency_token: None,
    };
    let (org, workflow) = {
        let service = open(dir.path(), &clock);
        let org = service.create_org("contoso").unwrap();
        let plugin = service.upload_plugin(org, "echo", &std::fs::read(samples::ECHO).unwrap()).unwrap().id;
        let definition = Definition::workflow(org, "on-update", plugin, Trigger::on("Update", "account"));
        let workflow = service.save_definition(definition).unwrap();
        service.fire(org, create("account", "a1")).await.unwrap();
        for n in 0..16 {
            service.fire(org, update(n)).await.unwrap();
            clock.advance(60_000);
        }
        service.run_until_idle().await.unwrap();
        (org, workflow)
    };
    let service = open(dir.path(), &clock);
    service.fire(org, update(16)).await.unwrap();
    service.run_until_idle().await.unwrap();
    let filter =
        sluice::store::JobFilter { definition: Some(workflow), ..sluice::store::JobFilter::all(100) };
    let mut jobs = service.store().jobs(org, &filter).unwrap();
    jobs.sort_by_key(|job| job.created_at);
    assert_eq!(jobs.len(), 17);
    let last = jobs.last().unwrap();
    assert_eq!(
        (last.status, last.error_code.as_deref()),
        (Status::Canceled, Some(sluice::service::WORKFLOW_LOOP_CODE))
    );
    assert!(jobs[..16].iter().all(|job| job.status == Status::Succeeded));
}

/// Dataverse hands a pre-validation or pre-operation step the Target (what is being
/// written) and a post-operation step the post-image. The credit validator, registered
/// as its documentation says (pre-validation, sync), accepts a valid account and
/// refuses an invalid one before anything is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_sync_step_sees_the_target_being_written() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let service = open(dir.path(), &clock);
    let org = service.create_org("contoso").unwrap();
    let mut validator = step(&service, org, samples::CREDIT_VALIDATOR, "account", Mode::Synchronous);
    if let DefinitionKind::Step { stage, .. } = &mut validator.kind {
        *stage = Stage::PreValidation;
    }
    service.save_definition(validator).unwrap();

    let valid = Event {
        message: "Create".into(),
        entity: "account".into(),
        record_id: Some("a1".into()),
        attributes: attrs(&[("name", Value::from("Contoso")), ("creditlimit", Value::Integer(100))]),
        dependency_token: None,
    };
    let outcome = service.fire(org, valid).await.expect("a valid account passes the pre-validation step");
    assert_eq!(outcome.sync_outputs[0].1.output_parameters["valid"], Value::Boolean(true));

    let invalid = Event {
        message: "Create".into(),
        entity: "account".into(),
        record_id: Some("a2".into()),
        attributes: attrs(&[("name", Value::from("Fabrikam")), ("creditlimit", Value::Integer(-5))]),
        dependency_token: None,
    };
    let refused = service.fire(org, invalid).await.unwrap_err();
    assert!(refused.to_string().contains("Credit limit cannot be negative"), "{refused}");
    let records = service.store().as_ref() as &dyn sluice::records::RecordStore;
    assert!(records.retrieve(&org.0.to_string(), "account", "a2", &[]).is_err(), "nothing was written");
}

/// The store holds every org's records, webhook secrets and secure configurations: its
/// folder and files are readable by their owner only.
#[cfg(unix)]
#[test]
fn the_store_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    let store = SqliteStore::open(&data.join("sluice.db")).unwrap();
    store.create_org("contoso").unwrap();
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
}
