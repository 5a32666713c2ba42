//! MISSION scenario 1 in each bulk-import mode: org A imports 10,000 accounts, each
//! triggering a workflow, in two import requests of 5,000 (as `sluice records import
//! --batch 5000` sends them). Per record, the workflow gets 10,000 jobs; `batched(100)`,
//! 100 jobs naming every account once; `after-import`, one job per request. The
//! records all land; org B's job runs beside. (B's latency in each mode:
//! `sluice bench bulk-import`.)

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Value as Json, json};
use sluice::jobs::{DefinitionId, Lane, OrgId, Quotas, Status};
use sluice::records::Value;
use sluice::service::{Event, ManualClock, Options, Service};
use sluice::store::{Bulk, Definition, DefinitionKind, JobFilter, JobRow, SqliteStore, Trigger};
use sluice_sample_plugins as samples;

use crate::support::{attrs, engine};

fn accounts(from: usize, n: usize) -> Vec<Event> {
    (from..from + n)
        .map(|i| {
            let name = attrs(&[("name", Value::String(format!("Account {i}")))]);
            crate::support::create_event("account", format!("acc-{i:05}"), name)
        })
        .collect()
}

struct Imported {
    service: Service,
    flow: DefinitionId,
    a: OrgId,
    b_job: sluice::jobs::JobId,
    _dir: tempfile::TempDir,
}

async fn scenario_1(bulk: Bulk) -> Imported {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("sluice.db")).unwrap());
    let service = Service::open(
        store,
        engine().clone(),
        Arc::new(ManualClock::new(1_800_000_000_000)),
        Options::default(),
    )
    .unwrap();
    let (a, b) = (service.create_org("a").unwrap(), service.create_org("b").unwrap());
    let open = Quotas { max_threads: 8, max_throughput: u32::MAX, ..Quotas::default() };
    service.set_quotas(a, Lane::Regular, open).unwrap();
    let echo = service.upload_plugin(a, "echo", &std::fs::read(samples::ECHO).unwrap()).unwrap().id;
    let mut definition = Definition::workflow(a, "enrich account", echo, Trigger::on("Create", "account"));
    let DefinitionKind::Workflow { bulk: setting, .. } = &mut definition.kind else { unreachable!() };
    *setting = bulk;
    let flow = service.save_definition(definition).unwrap();
    let b_echo = service.upload_plugin(b, "echo", &std::fs::read(samples::ECHO).unwrap()).unwrap().id;
    let step = Definition::step(
        b,
        "b",
        b_echo,
        Trigger::on("Create", "contact"),
        sluice::engine::Mode::Asynchronous,
        None,
    );
    service.save_definition(step).unwrap();

    service.import_batch(a, accounts(0, 5_000)).await.unwrap();
    let b_job = service
        .fire(
            b,
            Event {
                message: "Create".into(),
                entity: "contact".into(),
                record_id: Some("c-1".into()),
                attributes: attrs(&[]),
                dependency_token: None,
            },
        )
        .await
        .unwrap()
        .jobs[0];
    service.import_batch(a, accounts(5_000, 5_000)).await.unwrap();
    service.run_until_idle().await.unwrap();
    Imported { service, flow, a, b_job, _dir: dir }
}

impl Imported {
    fn jobs(&self) -> Vec<JobRow> {
        let jobs = self.service.jobs(self.a, &JobFilter::all(1_000_000)).unwrap();
        jobs.into_iter().filter(|j| j.definition == self.flow).collect()
    }

    fn check_common(&self) {
        for job in self.jobs() {
            assert_eq!(job.status, Status::Succeeded, "{:?}", job.error_message);
        }
        for id in ["acc-00000", "acc-04999", "acc-05000", "acc-09999"] {
            assert!(self.service.record(self.a, "account", id).is_ok(), "{id} was imported");
        }
        let b = self.service.jobs(OrgId(2), &JobFilter::all(10)).unwrap();
        assert_eq!(b.iter().find(|j| j.id == self.b_job).unwrap().status, Status::Succeeded);
    }
}

fn inputs(job: &JobRow) -> Json {
    let output: Json = serde_json::from_str(job.output.as_deref().expect("echo answers its inputs")).unwrap();
    output["output_parameters"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_record_an_import_starts_a_job_per_record() {
    let run = scenario_1(Bulk::PerRecord).await;
    run.check_common();
    let jobs = run.jobs();
    assert_eq!(jobs.len(), 10_000);
    assert!(jobs.iter().all(|j| j.record.as_ref().is_some_and(|(e, _)| e == "account")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_an_import_starts_a_job_per_n_records_naming_each_once() {
    let run = scenario_1(Bulk::Batched(100)).await;
    run.check_common();
    let jobs = run.jobs();
    assert_eq!(jobs.len(), 10_000 / 100);
    let mut named = BTreeSet::new();
    for job in &jobs {
        let output = inputs(job);
        assert_eq!(output["record_count"], json!(100), "{output}");
        let ids: Vec<String> = serde_json::from_str(output["record_ids"].as_str().unwrap()).unwrap();
        assert_eq!(ids.len(), 100);
        named.extend(ids);
        assert_eq!(job.record, None, "a batched job is about many records");
    }
    assert_eq!(named.len(), 10_000, "every account named once");
    assert!(named.contains("acc-00000") && named.contains("acc-09999"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_import_an_import_request_starts_one_job() {
    let run = scenario_1(Bulk::AfterImport).await;
    run.check_common();
    let jobs = run.jobs();
    assert_eq!(jobs.len(), 2, "one per import request");
    for job in &jobs {
        let output = inputs(job);
        assert_eq!(output["record_count"], json!(5_000), "{output}");
        assert!(output.get("record_ids").is_none());
    }
}

/// The setting is for imports only: the same records fired as plain events (or a
/// batch not marked as an import) start a job each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_not_marked_as_an_import_starts_jobs_per_record() {
    let run = scenario_1(Bulk::Batched(100)).await;
    run.service.fire_batch(run.a, accounts(10_000, 50)).await.unwrap();
    run.service.run_until_idle().await.unwrap();
    assert_eq!(run.jobs().len(), 100 + 50);
}
