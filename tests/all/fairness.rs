//! Fairness by cost: an org whose jobs burn the CPU gets its share of a lane, not the
//! lane; another org's jobs beside it start at once. (The scheduler's own tests check
//! the turns' arithmetic; `sluice bench cost-fairness` measures the latency.)

use std::sync::Arc;
use std::time::Instant;

use sluice::jobs::{Lane, OrgId, Quotas, Status};
use sluice::records::Value;
use sluice::service::{Completion, Event, Fairness, ManualClock, Options, Service};
use sluice::store::{Definition, SqliteStore, Trigger};
use sluice_sample_plugins as samples;

use crate::support::{attrs, engine};

fn step(service: &Service, org: OrgId, path: &str, entity: &str) {
    let bytes = std::fs::read(path).unwrap();
    let plugin = service.upload_plugin(org, path, &bytes).unwrap().id;
    let definition = Definition::step(
        org,
        entity,
        plugin,
        Trigger::on("Create", entity),
        sluice::engine::Mode::Asynchronous,
        None,
    );
    service.save_definition(definition).unwrap();
}

fn creates(entity: &str, prefix: &str, n: usize, rounds: i64) -> Vec<Event> {
    (0..n)
        .map(|i| {
            crate::support::create_event(
                entity,
                format!("{prefix}-{i}"),
                attrs(&[("rounds", Value::Integer(rounds))]),
            )
        })
        .collect()
}

/// Org A fills a lane with long CPU-bound jobs, its thread cap as high as the lane's
/// 16 slots and as B's. B's job, fired while A's runs hold the lane, starts before any
/// of them ends: the last slots are kept for an org holding few, and B, charged least,
/// takes them. (Counted in jobs, A would hold all 16 and B would wait for one of A's
/// runs to end; `the_last_free_slots_are_kept_for_an_org_holding_few` in the
/// scheduler's tests checks that contrast.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_bound_flood_leaves_another_org_a_slot_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("sluice.db")).unwrap());
    let options = Options { fairness: Fairness::Cost, ..Options::default() };
    assert_eq!(options.slots, 16);
    let service =
        Service::open(store, engine().clone(), Arc::new(ManualClock::new(1_800_000_000_000)), options)
            .unwrap();
    let (a, b) = (service.create_org("a").unwrap(), service.create_org("b").unwrap());
    let open = Quotas { max_threads: 16, max_throughput: u32::MAX, ..Quotas::default() };
    for org in [a, b] {
        service.set_quotas(org, Lane::Priority, open).unwrap();
    }
    step(&service, a, samples::CPU_BURN, "lead");
    step(&service, b, samples::ECHO, "contact");
    let mut completions = service.watch_completions();
    // A's backlog: 40 jobs of about a fifth of a second of CPU each.
    let flood: Vec<_> = service
        .fire_batch(a, creates("lead", "l", 40, 800))
        .await
        .unwrap()
        .into_iter()
        .flat_map(|o| o.jobs)
        .collect();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let driver = {
        let service = service.clone();
        tokio::spawn(async move { service.run(async { stop_rx.await.unwrap_or(()) }).await })
    };
    // Once A's runs hold the lane (all it may take: 16 less the headroom of 2) ...
    let held = Instant::now();
    loop {
        let in_progress = service.lane_health(a).unwrap()[Lane::Priority.index()].in_progress;
        assert!(in_progress <= 14, "A never takes the lane's last two slots: {in_progress}");
        if in_progress == 14 {
            break;
        }
        assert!(held.elapsed().as_secs() < 30, "A's jobs did not start");
        tokio::task::yield_now().await;
    }
    // ... B fires one trivial job.
    let mine = service.fire_batch(b, creates("contact", "c", 1, 1)).await.unwrap()[0].jobs[0];
    let mut seen: Vec<Completion> = Vec::new();
    while !seen.iter().any(|c| c.job == mine) {
        seen.push(completions.recv().await.unwrap());
    }
    let b_done = *seen.iter().find(|c| c.job == mine).unwrap();
    assert_eq!(b_done.status, Status::Succeeded);
    assert!(
        seen.iter().all(|c| c.org == b),
        "B's job completed before any of A's: it did not wait for one of A's slots"
    );
    // A's runs still going ended after B's started.
    for job in &flood {
        let _ = service.cancel(a, *job);
    }
    while let Ok(c) = tokio::time::timeout(std::time::Duration::from_secs(60), completions.recv()).await {
        let c = c.unwrap();
        if c.org == a {
            assert!(c.ran.1 > b_done.ran.0, "one of A's runs ended before B's started");
        }
        if service.lane_health(a).unwrap()[Lane::Priority.index()].in_progress == 0 {
            break;
        }
    }
    let _ = stop_tx.send(());
    driver.await.unwrap().unwrap();
    assert_eq!(service.failure(), None);
}
