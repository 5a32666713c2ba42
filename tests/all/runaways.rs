//! MISSION "beyond the anchors" 2: a definition whose trigger rate surges and whose
//! backlog grows is flagged and throttled automatically (not stopped), its org's other
//! definitions keep their share, the org is told, and it is released when it calms down;
//! a definition whose high rate is its normal is not flagged. Time moves by an injected
//! clock, a second per step; nothing sleeps.

use std::sync::Arc;

use sluice::jobs::{DefinitionId, JobId, Lane, OrgId, Quotas, Status};
use sluice::records::Value;
use sluice::service::{Event, ManualClock, Options, Service};
use sluice::store::{Definition, SqliteStore, Trigger};
use sluice_sample_plugins as samples;

use crate::support::{attrs, engine};

struct Org {
    service: Service,
    clock: Arc<ManualClock>,
    org: OrgId,
    echo: u64,
    dir: tempfile::TempDir,
}

/// A node on the SQLite file in `dir`.
fn open(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Service {
    let store = Arc::new(SqliteStore::open(&dir.join("sluice.db")).unwrap());
    Service::open(store, engine().clone(), clock.clone(), Options::default()).unwrap()
}

fn org(quotas: Quotas) -> Org {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let service = open(dir.path(), &clock);
    let org = service.create_org("contoso").unwrap();
    service.set_quotas(org, Lane::Regular, quotas).unwrap();
    let echo = service.upload_plugin(org, "echo", &std::fs::read(samples::ECHO).unwrap()).unwrap().id;
    Org { service, clock, org, echo, dir }
}

impl Org {
    fn workflow(&self, name: &str, entity: &str) -> DefinitionId {
        self.service
            .save_definition(Definition::workflow(self.org, name, self.echo, Trigger::on("Create", entity)))
            .unwrap()
    }

    /// One simulated second: `n` records of `entity` created in one batch.
    async fn second(&self, entity: &str, n: usize) -> Vec<JobId> {
        self.clock.advance(1_000);
        let now = self.service.now();
        let events = (0..n)
            .map(|i| Event {
                message: "Create".into(),
                entity: entity.into(),
                record_id: Some(format!("{entity}-{now}-{i}")),
                attributes: attrs(&[("n", Value::Integer(i as i64))]),
                dependency_token: None,
            })
            .collect();
        self.service.fire_batch(self.org, events).await.unwrap().into_iter().flat_map(|o| o.jobs).collect()
    }

    /// Two minutes at one `entity` record a second (its baseline), then a thousand a
    /// second until `definition` is flagged (within 60 s: asserted); returns the onset.
    async fn surge_until_flagged(&self, entity: &str, definition: DefinitionId) -> i64 {
        for _ in 0..120 {
            self.second(entity, 1).await;
            self.service.run_until_idle().await.unwrap();
        }
        assert_eq!(self.service.runaway(definition), None);
        let onset = self.service.now();
        for _ in 0..60 {
            self.second(entity, 1_000).await;
            self.service.run_once().await.unwrap();
            if self.service.runaway(definition).is_some() {
                return onset;
            }
        }
        panic!("not flagged within 60 s of the onset");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_surge_is_flagged_and_throttled_within_a_minute_and_released_when_it_calms_down() {
    let o = org(Quotas { max_threads: 4, max_throughput: u32::MAX, ..Quotas::default() });
    let sync = o.workflow("sync leads", "lead");
    let welcome = o.workflow("welcome contacts", "contact");
    let mut notices = o.service.take_notices().unwrap();
    // Two minutes at one lead a second, drained as they come (its baseline), then a
    // thousand a second, far more than 4 threads drain.
    let onset = o.surge_until_flagged("lead", sync).await;
    let flagged_at = o.service.now();
    assert!(flagged_at - onset <= 60_000);
    let flag = o.service.runaway(sync).unwrap();
    assert_eq!(flag.since, flagged_at);
    assert!(flag.rate >= 500.0 && flag.baseline <= 1.5 && flag.backlog >= 1_000, "{flag:?}");
    assert_eq!(o.service.runaway(welcome), None, "the org's other definition is not flagged");

    // The org and the operator are told: a notice (for the org's URL), the health view
    // and the API's figures, the metric.
    let notice = notices.try_recv().expect("a notice");
    assert_eq!((notice.kind, notice.definition, notice.org), ("definition.throttled", sync.0, o.org.0));
    assert_eq!(notice.flag, flag);
    assert!(notice.reason.starts_with("creating "), "{}", notice.reason);
    let health = o.service.health(Some(o.org)).unwrap();
    let shown = health[0].definitions.iter().find(|d| d.id == sync.0).unwrap();
    assert_eq!(shown.runaway.as_ref(), Some(&flag));
    assert!(shown.flag.as_deref().unwrap().starts_with("runaway, throttled: creating"), "{:?}", shown.flag);
    let metrics = o.service.metrics_text().unwrap();
    let line = format!("sluice_runaway_throttled{{org=\"{}\",definition=\"{}\"}} 1", o.org.0, sync.0);
    assert!(metrics.contains(&line), "{metrics}");

    // Throttled, not stopped: of the org's 4 threads the runaway holds one, so three
    // contacts' jobs all start in the next round beside it (with turns alone it would
    // take two of the four).
    // First the runs still under way from before the flag (up to 4) end.
    o.service.run_together().await.unwrap();
    let contacts = o.second("contact", 3).await;
    o.service.run_together().await.unwrap();
    for job in &contacts {
        assert_eq!(o.service.job(o.org, *job).unwrap().status, Status::Succeeded);
    }
    let before = o.service.health(Some(o.org)).unwrap()[0]
        .definitions
        .iter()
        .find(|d| d.id == sync.0)
        .unwrap()
        .backlog;
    o.service.run_once().await.unwrap();
    let after = o.service.health(Some(o.org)).unwrap()[0]
        .definitions
        .iter()
        .find(|d| d.id == sync.0)
        .unwrap()
        .backlog;
    assert!(after <= before, "it still drains");

    // Calm again (two a second): released within a minute, and the org is told.
    let calm = o.service.now();
    let mut released_at = None;
    for _ in 0..90 {
        o.second("lead", 2).await;
        o.service.run_once().await.unwrap();
        if o.service.runaway(sync).is_none() {
            released_at = Some(o.service.now());
            break;
        }
    }
    let released_at = released_at.expect("released once calm");
    assert!(released_at - calm <= 60_000, "released {} s after calming", (released_at - calm) / 1000);
    let notice = notices.try_recv().expect("a release notice");
    assert_eq!((notice.kind, notice.definition), ("definition.released", sync.0));
    assert!(o.service.metrics_text().unwrap().contains(&line.replace("} 1", "} 0")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_definition_whose_high_rate_is_its_normal_is_not_flagged_when_its_lane_falls_behind() {
    let o = org(Quotas { max_threads: 4, max_throughput: u32::MAX, ..Quotas::default() });
    let sync = o.workflow("sync leads", "lead");
    // Five minutes at 50 leads a second, drained as they come.
    for _ in 0..300 {
        o.second("lead", 50).await;
        o.service.run_until_idle().await.unwrap();
    }
    // The same rate, the lane now capped at 60 starts a minute: the backlog grows past
    // the rule's floor, the rate is the definition's usual one.
    let capped =
        Quotas { max_threads: 4, max_throughput: 60, throughput_window_minutes: 1, ..Quotas::default() };
    o.service.set_quotas(o.org, Lane::Regular, capped).unwrap();
    for _ in 0..90 {
        o.second("lead", 50).await;
        o.service.run_until_idle().await.unwrap();
        assert_eq!(o.service.runaway(sync), None);
    }
    let backlog = o.service.health(Some(o.org)).unwrap()[0].definitions[0].backlog;
    assert!(backlog >= 1_000, "the backlog grew: {backlog}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flag_is_cleared_or_the_definition_deactivated_in_one_action() {
    let o = org(Quotas { max_threads: 2, max_throughput: u32::MAX, ..Quotas::default() });
    let sync = o.workflow("sync leads", "lead");
    let other = o.service.create_org("fabrikam").unwrap();
    for _ in 0..40 {
        o.second("lead", 200).await;
        o.service.run_once().await.unwrap();
    }
    assert!(o.service.runaway(sync).is_some());
    // Another org cannot touch it.
    assert!(o.service.release_runaway(other, sync).is_err());
    // Cleared: released, its new rate accepted (no flag again at the same rate).
    let had = o.service.release_runaway(o.org, sync).unwrap();
    assert!(had.is_some());
    assert_eq!(o.service.release_runaway(o.org, sync).unwrap(), None, "nothing to clear twice");
    for _ in 0..60 {
        o.second("lead", 200).await;
        o.service.run_once().await.unwrap();
    }
    assert_eq!(o.service.runaway(sync), None, "200/s is its normal now");
    // A further surge flags it again; deactivating clears the flag with the definition.
    for _ in 0..40 {
        o.second("lead", 4_000).await;
        o.service.run_once().await.unwrap();
    }
    assert!(o.service.runaway(sync).is_some(), "a further surge");
    o.service.set_active(o.org, sync, false).unwrap();
    assert_eq!(o.service.runaway(sync), None);
    assert!(!o.service.definition(o.org, sync).unwrap().active);
}

/// A flag survives a restart: the node opened again on the same file throttles the
/// definition still, shows the same flag, and a release by hand is kept too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_a_definitions_runaway_flag() {
    let mut o = org(Quotas { max_threads: 4, max_throughput: u32::MAX, ..Quotas::default() });
    let sync = o.workflow("sync leads", "lead");
    o.surge_until_flagged("lead", sync).await;
    let flag = o.service.runaway(sync).unwrap();

    o.service = open(o.dir.path(), &o.clock);
    assert_eq!(o.service.runaway(sync), Some(flag.clone()), "flagged again at open");
    let line = format!("sluice_runaway_throttled{{org=\"{}\",definition=\"{}\"}} 1", o.org.0, sync.0);
    assert!(o.service.metrics_text().unwrap().contains(&line));
    let shown =
        o.service.health(Some(o.org)).unwrap()[0].definitions.iter().find(|d| d.id == sync.0).cloned();
    assert_eq!(shown.and_then(|d| d.runaway), Some(flag.clone()));

    assert_eq!(o.service.release_runaway(o.org, sync).unwrap(), Some(flag));
    o.service = open(o.dir.path(), &o.clock);
    assert_eq!(o.service.runaway(sync), None, "the release is kept");
}
