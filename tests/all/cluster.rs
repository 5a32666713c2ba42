//! Several nodes on one PostgreSQL, in one process: each org is held by one node, jobs
//! created on another node are adopted by the holder, definitions, quotas and commands
//! reach the holder through the change log, and a node that lost an org's lease cannot
//! commit for it. The MISSION scenarios 2 and 3 run with their requests spread over two
//! nodes. (`multi_node.rs` runs three `sluice serve` processes and kills one.)

use std::sync::Arc;
use std::time::Duration;

use sluice::engine::Mode;
use sluice::jobs::{DefinitionId, JobId, Lane, MINUTE, OrgId, Quotas, Status};
use sluice::records::Value;
use sluice::service::{Busy, ClusterOptions, Event, ManualClock, Options, RELAYED_PER_ORG, Service, Work};
use sluice::store::{ChangeKind, Definition, JobFilter, JobRow, PostgresStore, Trigger};
use sluice_sample_plugins as samples;

use crate::support::{attrs, engine};

const T0: i64 = 1_800_000_000_000;

/// A node named `name` on the database at `url`, leases lasting `ttl` ms.
fn node(url: &str, name: &str, clock: &Arc<ManualClock>, ttl: i64, options: Options) -> Service {
    let store = Arc::new(PostgresStore::open(url).unwrap());
    let cluster = ClusterOptions { node: name.into(), lease_ttl: ttl, poll: Duration::from_millis(20) };
    Service::open(store, engine().clone(), clock.clone(), Options { cluster: Some(cluster), ..options })
        .unwrap()
}

/// Lets the nodes see each other and share the orgs out (each balance sees the others'
/// heartbeats; a node over its share hands orgs back, the others take them).
fn settle(nodes: &[&Service]) {
    for _ in 0..3 {
        for node in nodes {
            node.balance().unwrap();
            node.follow().unwrap();
        }
    }
}

fn holder<'a>(nodes: &[&'a Service], org: OrgId) -> &'a Service {
    let holding: Vec<&Service> =
        nodes.iter().copied().filter(|n| n.held_orgs().iter().any(|f| f.org == org)).collect();
    assert_eq!(holding.len(), 1, "exactly one node holds org {}", org.0);
    holding[0]
}

fn other<'a>(nodes: &[&'a Service], not: &Service) -> &'a Service {
    nodes.iter().copied().find(|n| !std::ptr::eq(*n, not)).unwrap()
}

fn plugin(service: &Service, org: OrgId, path: &str) -> u64 {
    service.upload_plugin(org, path, &std::fs::read(path).unwrap()).unwrap().id
}

async fn create(service: &Service, org: OrgId, entity: &str, id: &str) -> Vec<JobId> {
    let event = Event {
        message: "Create".into(),
        entity: entity.into(),
        record_id: Some(id.into()),
        attributes: attrs(&[("name", Value::from(id))]),
        dependency_token: None,
    };
    service.fire(org, event).await.unwrap().jobs
}

fn jobs_of(service: &Service, org: OrgId, definition: DefinitionId) -> Vec<JobRow> {
    let filter = JobFilter { definition: Some(definition), ..JobFilter::all(1_000_000) };
    service.store().jobs(org, &filter).unwrap()
}

/// Runs a command on a node that does not hold the job's org (it blocks until the
/// holder answers) while the holder follows the change log.
async fn command_elsewhere<T: Send + 'static>(
    asking: &Service,
    holding: &Service,
    command: impl FnOnce(&Service) -> T + Send + 'static,
) -> T {
    let asking = asking.clone();
    let task = tokio::task::spawn_blocking(move || command(&asking));
    while !task.is_finished() {
        holding.follow().unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    task.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orgs_are_shared_out_and_jobs_created_on_another_node_run_on_the_holder() {
    let url = crate::support::fresh_postgres_database();
    let clock = Arc::new(ManualClock::new(T0));
    let a = node(&url, "a", &clock, 30_000, Options::default());
    let orgs: Vec<OrgId> = (0..4).map(|n| a.create_org(&format!("org{n}")).unwrap()).collect();
    a.balance().unwrap();
    assert_eq!(a.held_orgs().len(), 4, "alone, a node holds every org");
    let b = node(&url, "b", &clock, 30_000, Options::default());
    settle(&[&a, &b]);
    assert_eq!((a.held_orgs().len(), b.held_orgs().len()), (2, 2), "a joining node takes its share");

    let mut steps = Vec::new();
    for org in &orgs {
        let echo = plugin(&a, *org, samples::ECHO);
        let on = Trigger::on("Create", "contact");
        steps.push(
            a.save_definition(Definition::step(*org, "echo", echo, on, Mode::Asynchronous, None)).unwrap(),
        );
    }
    b.follow().unwrap();
    // Every org's events go to node b: half of them belong to a's orgs.
    let mut created = Vec::new();
    for org in &orgs {
        created.push((*org, create(&b, *org, "contact", "c1").await[0]));
    }
    for node in [&a, &b] {
        node.follow().unwrap();
        node.run_until_idle().await.unwrap();
    }
    for (org, job) in created {
        let row = a.job(org, job).unwrap();
        assert_eq!(row.status, Status::Succeeded, "org {}'s job ran on its holder", org.0);
    }
}

/// Nodes' clocks, each corrected to the database's, differ by a few milliseconds. When
/// an org is handed to a node whose clock is behind, its first start there waits for
/// that clock to pass the release, so the stored times of the org's runs never show
/// more in progress than its cap (one here) across the handover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_org_handed_to_a_node_whose_clock_is_behind_starts_after_the_last_holders_last_end() {
    let url = crate::support::fresh_postgres_database();
    let (ahead, behind) = (Arc::new(ManualClock::new(T0 + 50)), Arc::new(ManualClock::new(T0)));
    let a = node(&url, "a", &ahead, 30_000, Options::default());
    let org = a.create_org("contoso").unwrap();
    a.balance().unwrap();
    a.set_quotas(org, Lane::Priority, Quotas { max_threads: 1, ..Quotas::default() }).unwrap();
    let echo = plugin(&a, org, samples::ECHO);
    let step =
        Definition::step(org, "echo", echo, Trigger::on("Create", "contact"), Mode::Asynchronous, None);
    a.save_definition(step).unwrap();
    let first = create(&a, org, "contact", "c1").await[0];
    a.run_until_idle().await.unwrap();
    let second = create(&a, org, "contact", "c2").await[0];
    a.release_all().unwrap();

    let b = node(&url, "b", &behind, 30_000, Options::default());
    b.balance().unwrap();
    assert_eq!(b.held_orgs().len(), 1, "b took the released org");
    b.run_until_idle().await.unwrap();
    assert_eq!(
        b.job(org, second).unwrap().status,
        Status::WaitingForResources,
        "not before b's clock passes a's"
    );
    behind.advance(49);
    b.run_until_idle().await.unwrap();
    assert_eq!(b.job(org, second).unwrap().status, Status::WaitingForResources, "a's last time is T0 + 50");
    behind.advance(1);
    b.run_until_idle().await.unwrap();
    let (first, second) = (b.job(org, first).unwrap(), b.job(org, second).unwrap());
    assert_eq!(second.status, Status::Succeeded);
    assert!(
        second.started_at.unwrap() >= first.completed_at.unwrap(),
        "started at {:?}, the last holder's run ended at {:?}",
        second.started_at,
        first.completed_at
    );
}

/// The loop rule's counts move with an org's lease: a workflow started 16 times on a
/// record under one node is stopped at its 17th start under the next, not 16 starts later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflows_starts_on_a_record_are_still_counted_after_its_org_changes_node() {
    let url = crate::support::fresh_postgres_database();
    let clock = Arc::new(ManualClock::new(T0));
    let a = node(&url, "a", &clock, 30_000, Options::default());
    let org = a.create_org("contoso").unwrap();
    a.balance().unwrap();
    let echo = plugin(&a, org, samples::ECHO);
    let workflow = a
        .save_definition(Definition::workflow(org, "on-update", echo, Trigger::on("Update", "account")))
        .unwrap();
    create(&a, org, "account", "a1").await;
    let update = |n: usize| Event {
        message: "Update".into(),
        entity: "account".into(),
        record_id: Some("a1".into()),
        attributes: attrs(&[("name", Value::from(format!("name {n}").as_str()))]),
        dependency_token: None,
    };
    for n in 0..16 {
        a.fire(org, update(n)).await.unwrap();
        clock.advance(MINUTE);
    }
    a.run_until_idle().await.unwrap();
    a.release_all().unwrap();

    let b = node(&url, "b", &clock, 30_000, Options::default());
    b.balance().unwrap();
    assert_eq!(b.held_orgs().len(), 1, "b took the released org");
    b.fire(org, update(16)).await.unwrap();
    b.run_until_idle().await.unwrap();
    let mut jobs = jobs_of(&b, org, workflow);
    jobs.sort_by_key(|job| job.created_at);
    let last = jobs.last().unwrap();
    assert_eq!(jobs.len(), 17);
    assert_eq!(
        (last.status, last.error_code.as_deref()),
        (Status::Canceled, Some(sluice::service::WORKFLOW_LOOP_CODE))
    );
}

/// MISSION's loop rule for workflows (more than 16 starts on one record within an hour:
/// canceled) counts every start once, whichever node the events reach: the org's holder
/// counts the jobs it makes, and those made elsewhere when it adopts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_started_on_one_record_through_two_nodes_is_stopped_at_its_17th_start() {
    let url = crate::support::fresh_postgres_database();
    let clock = Arc::new(ManualClock::new(T0));
    let a = node(&url, "a", &clock, 30_000, Options::default());
    let b = node(&url, "b", &clock, 30_000, Options::default());
    let org = a.create_org("contoso").unwrap();
    settle(&[&a, &b]);
    let nodes = [&a, &b];
    let holding = holder(&nodes, org);
    let elsewhere = other(&nodes, holding);
    let echo = plugin(holding, org, samples::ECHO);
    let workflow = holding
        .save_definition(Definition::workflow(org, "on-update", echo, Trigger::on("Update", "account")))
        .unwrap();
    elsewhere.follow().unwrap();
    create(holding, org, "account", "a1").await;
    // Eighteen updates of one record, every other one through the node that does not
    // hold the org (as a load balancer would spread them), a minute apart.
    for n in 0..18 {
        let through = if n % 2 == 0 { holding } else { elsewhere };
        let event = Event {
            message: "Update".into(),
            entity: "account".into(),
            record_id: Some("a1".into()),
            attributes: attrs(&[("name", Value::from(format!("name {n}").as_str()))]),
            dependency_token: None,
        };
        through.fire(org, event).await.unwrap();
        holding.follow().unwrap();
        clock.advance(MINUTE);
    }
    holding.run_until_idle().await.unwrap();
    let mut jobs = jobs_of(holding, org, workflow);
    jobs.sort_by_key(|job| job.created_at);
    let statuses: Vec<Status> = jobs.iter().map(|job| job.status).collect();
    let mut expected = vec![Status::Succeeded; 16];
    expected.extend([Status::Canceled, Status::Canceled]);
    assert_eq!(statuses, expected, "the 17th and 18th starts within the hour are canceled");
    for job in &jobs[16..] {
        assert_eq!(job.error_code.as_deref(), Some(sluice::service::WORKFLOW_LOOP_CODE));
        assert_eq!(job.started_at, None, "a loop's start is canceled before it runs");
    }
}

/// A hostile tenant's commands relayed to the node holding its org, left unanswered,
/// hold at most its 8 places on the asking node: the next is refused at once, and
/// another org's command through the same node is carried out beside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orgs_unanswered_relayed_commands_are_bounded_and_another_orgs_go_through() {
    let url = crate::support::fresh_postgres_database();
    let clock = Arc::new(ManualClock::new(T0));
    let holding = node(&url, "a", &clock, 30_000, Options::default());
    let attacker = holding.create_org("attacker").unwrap();
    let victim = holding.create_org("victim").unwrap();
    holding.balance().unwrap();
    // The second node holds nothing (it never balances): every command it takes is
    // relayed to the first.
    let asking = node(&url, "b", &clock, 30_000, Options::default());
    let mut waiting = Vec::new();
    for org in [attacker, victim] {
        let echo = plugin(&holding, org, samples::ECHO);
        let on = Trigger::on("Create", "contact");
        holding.save_definition(Definition::step(org, "echo", echo, on, Mode::Asynchronous, None)).unwrap();
        // One thread: an event starts its job at once if it can, and the jobs here must
        // wait (a cancel of a running one answers Canceling).
        holding.set_quotas(org, Lane::Priority, Quotas { max_threads: 1, ..Quotas::default() }).unwrap();
        let mut jobs = Vec::new();
        for n in 0..11 {
            jobs.extend(create(&holding, org, "contact", &format!("c{n}")).await);
        }
        waiting.push(jobs[1..].to_vec());
    }
    let (attacks, victims) = (waiting[0].clone(), waiting[1].clone());

    // The holder does not follow the log for now: the attacker's commands wait.
    let held: Vec<_> = attacks[..RELAYED_PER_ORG as usize]
        .iter()
        .map(|job| {
            let (asking, job) = (asking.clone(), *job);
            tokio::task::spawn_blocking(move || asking.cancel(attacker, job))
        })
        .collect();
    // Cancels logged for the holder and not answered yet.
    let logged = |org: OrgId| {
        let changes = holding.store().changes_after(0, 1_000).unwrap();
        changes.iter().filter(|c| c.org == org && c.kind == ChangeKind::Cancel && c.answer.is_none()).count()
    };
    let began = std::time::Instant::now();
    while logged(attacker) < RELAYED_PER_ORG as usize {
        assert!(began.elapsed() < Duration::from_secs(30), "the attacker's commands were not relayed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let refused = asking.cancel(attacker, attacks[RELAYED_PER_ORG as usize]);
    assert!(
        matches!(
            refused,
            Err(sluice::service::Error::Busy(Busy::OrgLimit { work: Work::Relayed, limit: RELAYED_PER_ORG }))
        ),
        "a ninth command is refused at once: {refused:?}"
    );

    // The victim's command, through the same node, is relayed while the attacker's
    // eight still wait, and carried out.
    let victims_command = {
        let asking = asking.clone();
        tokio::task::spawn_blocking(move || asking.cancel(victim, victims[0]))
    };
    while logged(victim) < 1 {
        assert!(
            !victims_command.is_finished(),
            "the victim's command was refused: {:?}",
            victims_command.await
        );
        assert!(began.elapsed() < Duration::from_secs(30), "the victim's command was not relayed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(logged(attacker), RELAYED_PER_ORG as usize, "beside the attacker's, still unanswered");
    // The holder answers them all, and the attacker's places come back.
    while !(victims_command.is_finished() && held.iter().all(|task| task.is_finished())) {
        assert!(began.elapsed() < Duration::from_secs(60), "the commands were not answered");
        holding.follow().unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(victims_command.await.unwrap().unwrap(), Status::Canceled);
    for task in held {
        assert_eq!(task.await.unwrap().unwrap(), Status::Canceled);
    }
    let last = attacks[RELAYED_PER_ORG as usize];
    let status = command_elsewhere(&asking, &holding, move |n| n.cancel(attacker, last)).await;
    assert_eq!(status.unwrap(), Status::Canceled, "the places were given back");
}

/// An event that reaches a node not holding its org is adopted and run by the holder as
/// soon as it commits: the holder hears of it (PostgreSQL's `NOTIFY`) rather than at its
/// next poll, which here is longer than the test may take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_made_on_another_node_is_adopted_when_it_commits_not_at_the_next_poll() {
    let url = crate::support::fresh_postgres_database();
    let clock = Arc::new(ManualClock::new(T0));
    let slow_poll = |name: &str| {
        let store = Arc::new(PostgresStore::open(&url).unwrap());
        let cluster =
            ClusterOptions { node: name.into(), lease_ttl: 600_000, poll: Duration::from_secs(600) };
        Service::open(
            store,
            engine().clone(),
            clock.clone(),
            Options { cluster: Some(cluster), ..Options::default() },
        )
        .unwrap()
    };
    let holding = slow_poll("a");
    let org = holding.create_org("contoso").unwrap();
    holding.balance().unwrap();
    let asking = slow_poll("b");
    let echo = plugin(&holding, org, samples::ECHO);
    let on = Trigger::on("Create", "contact");
    holding.save_definition(Definition::step(org, "echo", echo, on, Mode::Asynchronous, None)).unwrap();
    asking.follow().unwrap();
    let expiry = |service: &Service| {
        service.store().leases().unwrap().iter().find(|lease| lease.org == org).unwrap().expires_at
    };
    let taken = expiry(&holding);
    // The holder's driver and its cluster loop.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut loops = Vec::new();
    for cluster_loop in [false, true] {
        let (service, mut stop) = (holding.clone(), stop_rx.clone());
        loops.push(tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if cluster_loop { service.run_cluster(stopped).await } else { service.run(stopped).await }
        }));
    }
    // The cluster loop's first turn renews the lease, then follows the log and begins
    // to wait: the event is sent once the renewal shows, so that its job is adopted by
    // news rather than by that first follow.
    let waited = std::time::Instant::now();
    while expiry(&holding) == taken {
        assert!(waited.elapsed() < Duration::from_secs(60), "the cluster loop did not renew the lease");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let job = create(&asking, org, "contact", "c1").await[0];
    let began = std::time::Instant::now();
    while holding.job(org, job).unwrap().status != Status::Succeeded {
        assert!(began.elapsed() < Duration::from_secs(60), "the job was not adopted within a minute");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Both loops end promptly: the cluster loop's wait for news, whose poll is ten
    // minutes, is waited in short slices.
    let _ = stop_tx.send(true);
    for node_loop in loops {
        tokio::time::timeout(Duration::from_secs(30), node_loop).await.unwrap().unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_an_orgs_lease_cannot_commit_for_it() {
    let url = crate::support::fresh_postgres_database();
    let clock = Arc::new(ManualClock::new(T0));
    // Node a's leases are lapsed as soon as taken: it holds the org only until someone asks.
    let a = node(&url, "a", &clock, -1, Options::default());
    let org = a.create_org("contoso").unwrap();
    a.balance().unwrap();
    let echo = plugin(&a, org, samples::ECHO);
    let step =
        Definition::step(org, "echo", echo, Trigger::on("Create", "contact"), Mode::Asynchronous, None);
    a.save_definition(step).unwrap();
    let job = create(&a, org, "contact", "c1").await[0];

    let b = node(&url, "b", &clock, 30_000, Options::default());
    b.balance().unwrap();
    assert_eq!(b.held_orgs().len(), 1, "b took the lapsed lease");

    // Node a does not know yet: it runs the job, and its commit is fenced out.
    a.run_once().await.unwrap();
    assert!(a.held_orgs().is_empty(), "a dropped the org when its commit was refused");
    assert_eq!(a.job(org, job).unwrap().status, Status::WaitingForResources, "nothing of a's run committed");
    b.run_until_idle().await.unwrap();
    let row = b.job(org, job).unwrap();
    assert_eq!((row.status, row.retry_count), (Status::Succeeded, 0), "b ran it, once, as a first run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_2_a_runaway_workflow_is_deactivated_and_drains_across_two_nodes() {
    let url = crate::support::fresh_postgres_database();
    let clock = Arc::new(ManualClock::new(T0));
    let options = Options { slots: 4, ..Options::default() };
    let first = node(&url, "a", &clock, 30_000, options.clone());
    let second = node(&url, "b", &clock, 30_000, options);
    let runaway_org = first.create_org("contoso").unwrap();
    let other_org = first.create_org("fabrikam").unwrap();
    settle(&[&first, &second]);
    let nodes = [&first, &second];
    let (runaway_holder, other_holder) = (holder(&nodes, runaway_org), holder(&nodes, other_org));
    assert!(!std::ptr::eq(runaway_holder, other_holder), "one org each");
    let elsewhere = other(&nodes, runaway_holder);

    // The quota is set on the node that does not hold the org: it reaches the holder.
    elsewhere.set_quotas(runaway_org, Lane::Regular, Quotas { max_threads: 2, ..Quotas::default() }).unwrap();
    let echo = plugin(elsewhere, runaway_org, samples::ECHO);
    let runaway = elsewhere
        .save_definition(Definition::workflow(runaway_org, "runaway", echo, Trigger::on("Create", "account")))
        .unwrap();
    let on_contact = Trigger::on("Create", "contact");
    let own_step = elsewhere
        .save_definition(Definition::step(
            runaway_org,
            "own",
            echo,
            on_contact.clone(),
            Mode::Asynchronous,
            None,
        ))
        .unwrap();
    let their_echo = plugin(elsewhere, other_org, samples::ECHO);
    let neighbour = elsewhere
        .save_definition(Definition::step(
            other_org,
            "echo",
            their_echo,
            on_contact,
            Mode::Asynchronous,
            None,
        ))
        .unwrap();
    for node in nodes {
        node.follow().unwrap();
    }
    // The runaway's events arrive at the node that does not hold its org.
    for n in 0..300 {
        create(elsewhere, runaway_org, "account", &format!("a{n}")).await;
    }
    let own = create(elsewhere, runaway_org, "contact", "c1").await[0];
    let theirs = create(runaway_holder, other_org, "contact", "c1").await[0];
    for node in nodes {
        node.follow().unwrap();
        node.run_once().await.unwrap();
    }
    assert!(
        first.job(other_org, theirs).unwrap().started_at.is_some(),
        "the other org is not behind the runaway"
    );
    assert!(first.job(runaway_org, own).unwrap().started_at.is_some(), "nor is the runaway org's other step");
    let started = jobs_of(&first, runaway_org, runaway).iter().filter(|j| j.started_at.is_some()).count();
    assert_eq!(
        started, 2,
        "the runaway holds its org's regular-lane thread cap (set on the other node), no more"
    );

    // Deactivated on the node that does not hold the org.
    elsewhere.set_active(runaway_org, runaway, false).unwrap();
    assert!(
        create(elsewhere, runaway_org, "account", "after").await.is_empty(),
        "no new jobs once deactivated"
    );
    runaway_holder.follow().unwrap();
    for node in nodes {
        node.run_until_idle().await.unwrap();
    }
    let jobs = jobs_of(&first, runaway_org, runaway);
    assert_eq!(jobs.len(), 300);
    let succeeded = jobs.iter().filter(|j| j.status == Status::Succeeded).count();
    let canceled: Vec<&JobRow> = jobs.iter().filter(|j| j.status == Status::Canceled).collect();
    assert_eq!(succeeded + canceled.len(), 300, "the backlog drained: every job ended");
    assert_eq!(succeeded, started, "only the runs already under way finished");
    assert!(
        canceled
            .iter()
            .all(|j| j.started_at.is_none() && j.error_code.as_deref() == Some("definition-deactivated"))
    );
    assert_eq!(jobs_of(&first, other_org, neighbour)[0].status, Status::Succeeded);
    assert_eq!(jobs_of(&first, runaway_org, own_step)[0].status, Status::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_3_a_failing_plugin_is_postponed_and_resumed_from_another_node() {
    let url = crate::support::fresh_postgres_database();
    let clock = Arc::new(ManualClock::new(T0));
    let first = node(&url, "a", &clock, 30_000, Options::default());
    let second = node(&url, "b", &clock, 30_000, Options::default());
    let org = first.create_org("contoso").unwrap();
    first.create_org("fabrikam").unwrap();
    settle(&[&first, &second]);
    let nodes = [&first, &second];
    let holding = holder(&nodes, org);
    let elsewhere = other(&nodes, holding);

    let quotas =
        Quotas { max_exceptions: 3, exception_window_minutes: 5, max_postponements: 2, ..Quotas::default() };
    elsewhere.set_quotas(org, Lane::Priority, quotas).unwrap();
    let flaky = plugin(elsewhere, org, samples::FLAKY_SYNC);
    let step = Definition::step(
        org,
        "flaky",
        flaky,
        Trigger::on("Create", "account"),
        Mode::Asynchronous,
        Some("1000000"),
    );
    elsewhere.save_definition(step).unwrap();
    holding.follow().unwrap();
    let job = create(elsewhere, org, "account", "a1").await[0];
    holding.follow().unwrap();

    holding.run_until_idle().await.unwrap();
    let row = elsewhere.job(org, job).unwrap();
    assert_eq!((row.status, row.postponement_count, row.retry_count), (Status::Waiting, 1, 2));
    assert_eq!(row.postpone_until, Some(T0 + 5 * MINUTE), "first postponement: D minutes");
    clock.advance(5 * MINUTE);
    holding.run_until_idle().await.unwrap();
    assert_eq!(elsewhere.job(org, job).unwrap().postpone_until, Some(T0 + 15 * MINUTE), "then 2D");
    clock.advance(10 * MINUTE);
    holding.run_until_idle().await.unwrap();
    let row = elsewhere.job(org, job).unwrap();
    assert_eq!(
        (row.status, row.postponement_count, row.postpone_until),
        (Status::Waiting, 3, None),
        "forever"
    );

    // Resumed and canceled through the node that does not hold the org.
    let resumed = command_elsewhere(elsewhere, holding, move |n| n.resume(org, job)).await.unwrap();
    assert_eq!(resumed, Status::WaitingForResources);
    holding.run_until_idle().await.unwrap();
    assert!(elsewhere.job(org, job).unwrap().retry_count > row.retry_count, "a resume runs it again");
    let canceled = command_elsewhere(elsewhere, holding, move |n| n.cancel(org, job)).await.unwrap();
    assert_eq!(canceled, Status::Canceled);
    assert_eq!(elsewhere.job(org, job).unwrap().status, Status::Canceled);
    let refused = command_elsewhere(elsewhere, holding, move |n| n.resume(org, job)).await;
    assert!(matches!(refused, Err(sluice::service::Error::NotAllowed(Status::Canceled))), "{refused:?}");
}

/// Leads fired on `fire_on`, a minute at one a second and then 200 a second, each second
/// run by `holding`, until the holder flags `flow` (asserted); returns the flag.
async fn surge_until_flagged(
    clock: &ManualClock,
    fire_on: &Service,
    holding: &Service,
    org: OrgId,
    flow: DefinitionId,
) -> sluice::service::RunawayFlag {
    let second_of = |n: u64, at: i64| -> Vec<Event> {
        (0..n).map(|i| crate::support::create_event("lead", format!("l-{at}-{i}"), attrs(&[]))).collect()
    };
    for rate in std::iter::repeat_n(1, 60).chain(std::iter::repeat_n(200, 40)) {
        clock.advance(1_000);
        fire_on.fire_batch(org, second_of(rate, holding.now())).await.unwrap();
        holding.follow().unwrap();
        if rate == 1 {
            holding.run_until_idle().await.unwrap();
        } else {
            holding.run_once().await.unwrap();
        }
        if let Some(flag) = holding.runaway(flow) {
            return flag;
        }
    }
    panic!("the holder did not flag the surge");
}

/// The runaway rule across nodes: a surge of events fired on the node that does not
/// hold the org is counted by the holder as it adopts the jobs, flagged and throttled
/// there, and a release asked on the other node reaches the holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_fired_on_another_node_is_flagged_by_the_holder_and_released_from_either() {
    let url = crate::support::fresh_postgres_database();
    let clock = Arc::new(ManualClock::new(T0));
    let first = node(&url, "a", &clock, 30_000, Options::default());
    let second = node(&url, "b", &clock, 30_000, Options::default());
    let org = first.create_org("contoso").unwrap();
    settle(&[&first, &second]);
    let nodes = [&first, &second];
    let holding = holder(&nodes, org);
    let elsewhere = other(&nodes, holding);
    elsewhere.set_quotas(org, Lane::Regular, Quotas { max_threads: 2, ..Quotas::default() }).unwrap();
    let echo = plugin(elsewhere, org, samples::ECHO);
    let flow = elsewhere
        .save_definition(Definition::workflow(org, "sync", echo, Trigger::on("Create", "lead")))
        .unwrap();
    holding.follow().unwrap();
    // All fired on the other node.
    let flag = surge_until_flagged(&clock, elsewhere, holding, org, flow).await;
    assert!(flag.rate >= 100.0, "{flag:?}");
    assert_eq!(elsewhere.runaway(flow), None, "the other node holds no flag of its own");
    // Released from the other node: the holder clears it and answers with the flag.
    let released =
        command_elsewhere(elsewhere, holding, move |n| n.release_runaway(org, flow)).await.unwrap();
    assert_eq!(released, Some(flag));
    assert_eq!(holding.runaway(flow), None);
    let again = command_elsewhere(elsewhere, holding, move |n| n.release_runaway(org, flow)).await.unwrap();
    assert_eq!(again, None, "nothing left to clear");
    assert!(elsewhere.release_runaway(org, DefinitionId(999_999)).is_err(), "an unknown definition");
}

/// A runaway flag moves with its org's lease: the node that takes the org over
/// throttles the definition and shows the flag at once (not after detecting the surge
/// anew), and the node that lost the org no longer holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_flag_moves_with_its_orgs_lease() {
    let url = crate::support::fresh_postgres_database();
    let clock = Arc::new(ManualClock::new(T0));
    // Node a's leases are lapsed as soon as taken: it holds the org only until someone asks.
    let a = node(&url, "a", &clock, -1, Options::default());
    let org = a.create_org("contoso").unwrap();
    a.balance().unwrap();
    a.set_quotas(org, Lane::Regular, Quotas { max_threads: 2, ..Quotas::default() }).unwrap();
    let echo = plugin(&a, org, samples::ECHO);
    let flow =
        a.save_definition(Definition::workflow(org, "sync", echo, Trigger::on("Create", "lead"))).unwrap();
    let flag = surge_until_flagged(&clock, &a, &a, org, flow).await;

    let b = node(&url, "b", &clock, 30_000, Options::default());
    b.balance().unwrap();
    assert_eq!(b.held_orgs().len(), 1, "b took the lapsed lease");
    assert_eq!(b.runaway(flow), Some(flag.clone()), "the flag came with the org");
    let line = format!("sluice_runaway_throttled{{org=\"{}\",definition=\"{}\"}} 1", org.0, flow.0);
    assert!(b.metrics_text().unwrap().contains(&line));
    // Node a learns it lost the org at its next commit, and lets the flag go.
    a.run_once().await.unwrap();
    assert!(a.held_orgs().is_empty());
    assert_eq!(a.runaway(flow), None);
    assert_eq!(b.release_runaway(org, flow).unwrap(), Some(flag));
    assert_eq!(b.runaway(flow), None);
}
