//! A hostile org beside a victim org, at every resource tenants share: the store's
//! commits and readers, the compiler, the instance pool, host calls, sync capacity.
//! Each test runs the victim's steady load beside one attack and asserts that every
//! victim job completes, none of them is charged an exception, and the service stays
//! healthy. Time moves by an injected clock; nothing sleeps.

use std::sync::Arc;

use sluice::engine::Mode;
use sluice::jobs::{DefinitionId, JobId, Lane, OrgId, Quotas, Status};
use sluice::records::Value;
use sluice::service::{Event, ManualClock, Options, Service};
use sluice::store::{Definition, JobFilter, JobRow, SqliteStore, Trigger};
use sluice_sample_plugins as samples;

use crate::support::{attrs, engine};

const T0: i64 = 1_800_000_000_000;

pub struct Harness {
    pub service: Service,
    pub victim: OrgId,
    pub attacker: OrgId,
    _dir: tempfile::TempDir,
}

pub fn harness(options: Options) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("sluice.db")).unwrap());
    let clock = Arc::new(ManualClock::new(T0));
    let service = Service::open(store, engine().clone(), clock, options).unwrap();
    let victim = service.create_org("victim").unwrap();
    let attacker = service.create_org("attacker").unwrap();
    Harness { service, victim, attacker, _dir: dir }
}

impl Harness {
    /// An async step of `path` on Create of `entity`, with its unsecure configuration.
    pub fn step(&self, org: OrgId, path: &str, entity: &str, config: Option<&str>) -> DefinitionId {
        let bytes = std::fs::read(path).unwrap();
        let plugin = self.service.upload_plugin(org, path, &bytes).unwrap().id;
        let definition =
            Definition::step(org, entity, plugin, Trigger::on("Create", entity), Mode::Asynchronous, config);
        self.service.save_definition(definition).unwrap()
    }

    /// Creates `n` records of `entity` in one batch; returns the jobs they started.
    pub async fn create_many(&self, org: OrgId, entity: &str, prefix: &str, n: usize) -> Vec<JobId> {
        let events = (0..n)
            .map(|i| Event {
                message: "Create".into(),
                entity: entity.into(),
                record_id: Some(format!("{prefix}-{i}")),
                attributes: attrs(&[("name", Value::String(format!("{prefix} {i}")))]),
                dependency_token: None,
            })
            .collect();
        let outcomes = self.service.fire_batch(org, events).await.unwrap();
        outcomes.into_iter().flat_map(|o| o.jobs).collect()
    }

    pub fn jobs(&self, org: OrgId) -> Vec<JobRow> {
        self.service.jobs(org, &JobFilter::all(1_000_000)).unwrap()
    }

    /// The victim's jobs all succeeded, none was charged an exception, and the node is
    /// healthy.
    pub fn assert_victim_unharmed(&self, expected: usize) {
        let jobs = self.jobs(self.victim);
        assert_eq!(jobs.len(), expected, "every victim job exists");
        for job in &jobs {
            assert_eq!(
                job.status,
                Status::Succeeded,
                "victim job {} ended {:?}: {:?}",
                job.id.0,
                job.status,
                job.error_message
            );
            assert_eq!(
                (job.retry_count, job.postponement_count),
                (0, 0),
                "victim job {} was charged",
                job.id.0
            );
        }
        assert_eq!(self.service.failure(), None, "the service stays healthy");
    }
}

/// Eight jobs of the attacker create the same record at once: one wins, the others
/// conflict. Before, the conflict aborted the round's commit and the driver stopped:
/// nobody's jobs ran again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_writes_fail_only_the_conflicting_jobs() {
    let h = harness(Options::default());
    let quotas = Quotas { max_exceptions: 2, max_threads: 8, ..Quotas::default() };
    h.service.set_quotas(h.attacker, Lane::Priority, quotas).unwrap();
    h.step(h.attacker, samples::HOSTILE_TENANT, "lead", Some("conflict"));
    h.step(h.victim, samples::ECHO, "account", None);

    let hostile = h.create_many(h.attacker, "lead", "l", 8).await;
    let victims = h.create_many(h.victim, "account", "a", 20).await;
    // The first round runs every job side by side and commits them together: which one
    // finishes first must not matter (with `run_once` it commits alone and the others'
    // creates then see its record, a plug-in error rather than a conflict). Then round by
    // round (each job has at most one new result per round), noting how the attacker's
    // runs ended before retries overwrite it.
    let mut seen = std::collections::BTreeSet::new();
    h.service.run_together().await.unwrap();
    seen.extend(h.jobs(h.attacker).into_iter().filter_map(|j| j.error_code));
    for _ in 0..40 {
        h.service.run_once().await.unwrap();
        seen.extend(h.jobs(h.attacker).into_iter().filter_map(|j| j.error_code));
    }
    h.service.run_until_idle().await.unwrap();

    h.assert_victim_unharmed(victims.len());
    let jobs = h.jobs(h.attacker);
    assert_eq!(jobs.len(), hostile.len());
    let won: Vec<_> = jobs.iter().filter(|j| j.status == Status::Succeeded).collect();
    assert_eq!(won.len(), 1, "exactly one create of the record commits");
    for job in jobs.iter().filter(|j| j.status != Status::Succeeded) {
        assert_eq!(job.status, Status::Waiting, "a conflicting job is retried, then postponed");
        assert!(
            matches!(job.error_code.as_deref(), Some("write-conflict" | "transient-error")),
            "{:?}",
            job.error_code
        );
        assert!(job.retry_count >= 1, "a conflict is a retryable exception");
    }
    assert!(
        seen.contains("write-conflict"),
        "jobs that ran together and lost are named write conflicts: {seen:?}"
    );
    let record = h.service.store().retrieve(&h.attacker.0.to_string(), "task", "clash", &[]).unwrap();
    assert_eq!(record.attributes["subject"], Value::from("mine"));

    // The driver still runs: new work of both orgs completes.
    h.create_many(h.victim, "account", "b", 5).await;
    h.service.run_until_idle().await.unwrap();
    h.assert_victim_unharmed(victims.len() + 5);
}

/// A component that passes the checks before compilation, with `functions` functions
/// of `ops` instructions each; `salt` makes its bytes new.
fn bomb(salt: u64, functions: usize, ops: usize) -> Vec<u8> {
    let body = "local.get 0 i32.const 1 i32.add local.set 0 ".repeat(ops);
    let functions = format!("(func (param i32) {body})").repeat(functions);
    wat::parse_str(format!(
        r#"(component
            (core module {functions} (@custom "salt" "{salt}"))
            (instance $handler)
            (export "sluice:plugin/handler@0.1.0" (instance $handler)))"#
    ))
    .unwrap()
}

fn artifacts_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

/// Uploads that would cost too much to compile are refused before compiling; ones
/// within the bounds compile off the request path, leave nothing on disk when refused,
/// and are refused again without compiling. The victim's jobs run meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compile_bombs_are_refused_cheaply_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let engine =
        sluice::engine::Engine::new(Default::default(), Some(&dir.path().join("artifacts"))).unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("sluice.db")).unwrap());
    let service =
        Service::open(store, engine.clone(), Arc::new(ManualClock::new(T0)), Options::default()).unwrap();
    let h = Harness {
        victim: service.create_org("victim").unwrap(),
        attacker: service.create_org("attacker").unwrap(),
        service,
        _dir: dir,
    };
    h.step(h.victim, samples::ECHO, "account", None);
    let cached = artifacts_in(&h._dir.path().join("artifacts"));
    let victims = h.create_many(h.victim, "account", "a", 20).await;

    // Over the function bound: refused by the look before compiling.
    let compiled = engine.compilations();
    let over = bomb(1, sluice::engine::Complexity::default().max_functions as usize + 1, 1);
    let refused = h.service.upload_plugin_bounded(h.attacker, "bomb", over).await.unwrap_err();
    assert!(refused.to_string().contains("too complex"), "{refused}");
    assert_eq!(engine.compilations(), compiled, "nothing was compiled");

    // Within the bounds but not a plug-in (no `execute`): compiled, refused, not kept.
    let within = bomb(2, 200, 50);
    let refused = h.service.upload_plugin_bounded(h.attacker, "bomb", within.clone()).await.unwrap_err();
    assert!(refused.to_string().contains("execute"), "{refused}");
    assert_eq!(engine.compilations(), compiled + 1);
    assert_eq!(artifacts_in(&h._dir.path().join("artifacts")), cached, "a refused upload leaves no artifact");
    let again = h.service.upload_plugin_bounded(h.attacker, "bomb", within).await.unwrap_err();
    assert_eq!(again.to_string(), refused.to_string());
    assert_eq!(engine.compilations(), compiled + 1, "the same refused bytes are not compiled again");
    assert!(h.service.plugins(h.attacker).unwrap().is_empty(), "a refused upload stores nothing");

    h.service.run_until_idle().await.unwrap();
    h.assert_victim_unharmed(victims.len());
}

/// Queries over a large entity cost fuel for every record they read, and read at most
/// a bounded number: the storm ends in the attacker's own fuel, and the victim's jobs
/// (which read records too) are not held up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_storm_pays_for_what_it_reads() {
    let limits = sluice::engine::Limits { fuel: 500_000_000, ..Default::default() };
    let h = harness(Options { limits, ..Options::default() });
    let rows = sluice::records::MAX_QUERY_SCAN + 2_000;
    for from in (0..rows).step_by(1_000) {
        let events = (from..from + 1_000)
            .map(|i| Event {
                message: "Create".into(),
                entity: "task".into(),
                record_id: Some(format!("t-{i:06}")),
                attributes: attrs(&[("subject", Value::from("busy"))]),
                dependency_token: None,
            })
            .collect();
        h.service.fire_batch(h.attacker, events).await.unwrap();
    }
    h.step(h.attacker, samples::HOSTILE_TENANT, "lead", Some("query-storm"));
    h.step(h.victim, samples::ACCOUNT_NUMBER, "account", None);
    h.create_many(h.attacker, "lead", "l", 4).await;
    let victims = h.create_many(h.victim, "account", "a", 20).await;
    h.service.run_until_idle().await.unwrap();

    h.assert_victim_unharmed(victims.len());
    for job in h.jobs(h.attacker) {
        assert_eq!(job.error_code.as_deref(), Some("fuel-exhausted"), "a storm ends in its own fuel");
        // 500M fuel buys 24 reads of 10,000 records at 2,000 fuel each: not unbounded work.
        assert!(job.accounting.fuel_used >= 500_000_000);
    }
}

/// Failed writes count against the write limit: a plug-in that keeps writing to a
/// record that does not exist ends at the limit instead of spinning until its fuel
/// runs out; a write storm ends there too. Neither touches the victim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_storms_end_at_the_write_limit_even_when_every_write_fails() {
    let h = harness(Options::default());
    h.step(h.attacker, samples::HOSTILE_TENANT, "lead", Some("failed-writes"));
    h.step(h.attacker, samples::HOSTILE_WRITE_STORM, "contact", None);
    h.step(h.victim, samples::ECHO, "account", None);
    h.create_many(h.attacker, "lead", "l", 3).await;
    h.create_many(h.attacker, "contact", "c", 3).await;
    let victims = h.create_many(h.victim, "account", "a", 20).await;
    h.service.run_until_idle().await.unwrap();

    h.assert_victim_unharmed(victims.len());
    for job in h.jobs(h.attacker) {
        assert_eq!(job.error_code.as_deref(), Some("record-write-limit-exceeded"), "job {}", job.id.0);
    }
}

/// Sync steps run in the caller's request: one org may run only so many at once (the
/// rest are refused at once, 429 over HTTP), and they never take the pool's places
/// that the job lanes own, so the victim's jobs never see a full pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_flood_is_bounded_per_org_and_cannot_fill_the_pool_the_jobs_need() {
    let slots = 2;
    // The pool: the lanes' 3 × 2 places and 2 for synchronous work.
    let settings = sluice::engine::EngineSettings { max_concurrent_executions: 8, ..Default::default() };
    let dir = tempfile::tempdir().unwrap();
    let engine = sluice::engine::Engine::new(settings, None).unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("sluice.db")).unwrap());
    // Each sync run spins until its fuel is gone: long enough that the six overlap.
    let limits = sluice::engine::Limits { fuel: 300_000_000, ..Default::default() };
    let options = Options { slots, sync_per_org: 2, limits, ..Options::default() };
    let service = Service::open(store, engine, Arc::new(ManualClock::new(T0)), options).unwrap();
    let h = Harness {
        victim: service.create_org("victim").unwrap(),
        attacker: service.create_org("attacker").unwrap(),
        service,
        _dir: dir,
    };
    let bytes = std::fs::read(samples::HOSTILE_INFINITE_LOOP).unwrap();
    let spin = h.service.upload_plugin(h.attacker, "spin", &bytes).unwrap().id;
    let sync =
        Definition::step(h.attacker, "spin", spin, Trigger::on("Create", "lead"), Mode::Synchronous, None);
    h.service.save_definition(sync).unwrap();
    h.step(h.victim, samples::ECHO, "account", None);
    let victims = h.create_many(h.victim, "account", "a", 20).await;

    let flood = (0..6).map(|i| {
        let service = h.service.clone();
        let attacker = h.attacker;
        tokio::spawn(async move {
            let event = Event {
                message: "Create".into(),
                entity: "lead".into(),
                record_id: Some(format!("lead-{i}")),
                attributes: Default::default(),
                dependency_token: None,
            };
            service.fire(attacker, event).await
        })
    });
    let (flood, driven) = tokio::join!(futures_join(flood.collect()), h.service.run_until_idle());
    driven.unwrap();
    let refused = flood
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(sluice::service::Error::Busy(sluice::service::Busy::OrgLimit {
                    work: sluice::service::Work::Synchronous,
                    limit: 2
                }))
            )
        })
        .count();
    assert!(refused >= 1, "six at once against a limit of two: some are refused ({flood:?})");
    let ran = flood.iter().filter(|r| matches!(r, Err(sluice::service::Error::StepFailed { .. }))).count();
    assert_eq!(ran + refused, 6, "each either ran (and spun out of fuel) or was refused: {flood:?}");
    assert!(ran >= 2, "the org's share still runs");
    h.assert_victim_unharmed(victims.len());
}

/// One of `org`'s slow reads, started and held until the sender is used (or dropped).
async fn held_read(
    service: &Service,
    org: OrgId,
) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<sluice::service::Result<()>>) {
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let service = service.clone();
    let read = tokio::spawn(async move {
        service
            .org_read(Some(org), move |_| {
                let _ = started_tx.send(());
                let _ = held.recv();
                Ok(())
            })
            .await
    });
    started.await.expect("the read started");
    (release, read)
}

async fn futures_join<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

/// Reads whose cost grows with an org's jobs (its job listing, the counts behind its
/// health: a tenth of a second and more over a million-job backlog) run one at a time
/// per org, off the runtime's workers. While one of the attacker's reads holds its turn
/// (here a read that waits until the test releases it), more of them queue behind it,
/// more than the runtime has workers and the store has readers, and the victim's
/// listing and health still answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orgs_slow_reads_wait_for_each_other_not_for_another_orgs() {
    let h = harness(Options::default());
    let (attacker, victim) = (h.attacker, h.victim);
    let (release, slow) = held_read(&h.service, attacker).await;
    let queued: Vec<_> = (0..8)
        .map(|_| {
            let service = h.service.clone();
            tokio::spawn(async move {
                service.org_read(Some(attacker), move |s| s.jobs(attacker, &JobFilter::all(100))).await
            })
        })
        .collect();
    let victims_reads = async {
        let jobs = h.service.org_read(Some(victim), move |s| s.jobs(victim, &JobFilter::all(100))).await;
        let health = h.service.org_read(Some(victim), move |s| s.health(Some(victim))).await;
        (jobs, health)
    };
    // A guard, not a measure: without per-org turns the victim would wait for the release.
    let (jobs, health) = tokio::time::timeout(std::time::Duration::from_secs(30), victims_reads)
        .await
        .expect("the victim's reads answer while the attacker's are held");
    assert!(jobs.unwrap().is_empty());
    assert_eq!(health.unwrap().len(), 1, "the victim sees its own org only");
    assert!(queued.iter().all(|read| !read.is_finished()), "the attacker's other reads wait for its turn");
    release.send(()).unwrap();
    slow.await.unwrap().unwrap();
    for read in queued {
        assert!(read.await.unwrap().unwrap().is_empty());
    }
}

/// Across orgs, at most `LONG_READS` such reads run at once: with two orgs' reads held,
/// a third org's waits for a place (short reads keep the connections left), and runs
/// as soon as one is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reads_of_many_orgs_leave_connections_for_short_ones() {
    assert_eq!(sluice::service::LONG_READS, 2, "the test holds that many");
    let h = harness(Options::default());
    let third = h.service.create_org("another attacker").unwrap();
    let (release_first, first) = held_read(&h.service, h.attacker).await;
    let (release_second, second) = held_read(&h.service, third).await;
    let victim = h.victim;
    let service = h.service.clone();
    let mut waiting = tokio::spawn(async move {
        service.org_read(Some(victim), move |s| s.jobs(victim, &JobFilter::all(10))).await
    });
    // Short reads go on meanwhile: a job by id (none such), the orgs, and the victim's
    // health (its counts are kept ones on the node that holds it).
    assert!(h.service.job(victim, JobId(1)).is_err());
    assert_eq!(h.service.orgs().unwrap().len(), 3);
    let health =
        tokio::time::timeout(std::time::Duration::from_secs(30), h.service.health_read(Some(victim)))
            .await
            .expect("the victim's health does not wait for a long read's place");
    assert_eq!(health.unwrap().len(), 1);
    // Not a measure: a read with a place answers within milliseconds; this one has none.
    let early = tokio::time::timeout(std::time::Duration::from_millis(300), &mut waiting).await;
    assert!(early.is_err(), "a third org's slow read waits for a place: {early:?}");
    release_first.send(()).unwrap();
    first.await.unwrap().unwrap();
    let listed = tokio::time::timeout(std::time::Duration::from_secs(30), waiting)
        .await
        .expect("the waiting read runs once a place is free");
    assert!(listed.unwrap().unwrap().is_empty());
    release_second.send(()).unwrap();
    second.await.unwrap().unwrap();
}
