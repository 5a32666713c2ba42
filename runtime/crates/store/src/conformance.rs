//! The store conformance suite: what every backend must do. Each backend's tests run it
//! against a fresh store of theirs ([`run`], [`read_ahead`], [`listing`], [`counts`] and [`cluster`]); a new backend passes it
//! before anything else uses it. It panics on the first behaviour that differs.

use sluice_core::jobs::{DefinitionId, JobId, Lane, Millis, OrgId, Quotas, Status};
use sluice_core::records::{Attributes, Condition, Filter, Operator, RecordChange, RecordError, Value};
use sluice_core::run::{Accounting, Mode, Stage};

use crate::{
    Batch, Bulk, ChangeKind, Definition, DefinitionKind, Error, JobFilter, JobRow, JobUpdate, NewJob,
    Operation, StartRow, Store, Trigger,
};

fn attrs(pairs: &[(&str, Value)]) -> Attributes {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// A waiting job of `org` numbered `n`, as the suite inserts them (also for backends'
/// own tests).
pub fn new_job(org: OrgId, n: u32) -> NewJob {
    NewJob {
        org,
        lane: Lane::Priority,
        operation: Operation::AsyncPlugin,
        definition: DefinitionId(7),
        definition_version: 1,
        correlation_id: format!("c{n}"),
        depth: 1,
        record: Some(("account".into(), format!("a{n}"))),
        // Not UTF-8, with a zero byte: the store keeps a payload as bytes.
        payload: vec![1, 0, 0xff, n as u8],
        dependency_token: None,
        created_at: 1_000 + i64::from(n),
        status: Status::WaitingForResources,
        error: None,
        background: None,
    }
}

/// A job of `org` numbered `n` refused at its creation, stored finished in `status`
/// (also for backends' own tests).
pub fn refused_job(org: OrgId, n: u32, status: Status) -> NewJob {
    NewJob { status, error: Some(("refused".into(), "at its creation".into())), ..new_job(org, n) }
}

/// `update` for a job on `to` (the suite's jobs are on the priority lane unless it says).
fn on_lane(mut update: JobUpdate, to: Lane) -> JobUpdate {
    if let JobUpdate::Finished { lane, .. } | JobUpdate::Status { lane, .. } = &mut update {
        *lane = to;
    }
    update
}

fn finished(id: JobId, org: OrgId, status: Status, changes: Vec<RecordChange>) -> JobUpdate {
    JobUpdate::Finished {
        id,
        org,
        lane: Lane::Priority,
        at: 5_000,
        started: None,
        status,
        postpone_until: None,
        retried: false,
        postponement_count: 0,
        error: None,
        output: Some("{}".into()),
        accounting: Accounting { fuel_used: 42, wall_time_us: 10, host_time_us: 1, peak_memory_bytes: 65536 },
        trace: Some("line".into()),
        changes,
        delete: false,
        exception_times: vec![4_000, 4_500],
    }
}

/// Every check but the cluster's, on a fresh store from `open`; `reopen` opens the same
/// store again.
pub fn run(open: &dyn Fn() -> Box<dyn Store>, reopen: &dyn Fn() -> Box<dyn Store>) {
    let store = open();
    // Organisations and quotas.
    let a = store.create_org("contoso").unwrap();
    let b = store.create_org("fabrikam").unwrap();
    assert!(matches!(store.create_org("contoso"), Err(Error::Conflict(_))));
    assert_eq!(store.orgs().unwrap(), vec![(a, "contoso".into()), (b, "fabrikam".into())]);
    let quotas = Quotas { max_threads: 9, ..Quotas::default() };
    store.set_quotas(a, Lane::Regular, quotas).unwrap();
    store.set_quotas(a, Lane::Regular, Quotas { max_throughput: 7, ..quotas }).unwrap();
    assert_eq!(store.all_quotas().unwrap(), vec![(a, Lane::Regular, Quotas { max_throughput: 7, ..quotas })]);

    // Plug-ins are content-addressed per org and invisible to other orgs.
    let first = store.save_plugin(a, "echo", "hash1", b"bytes").unwrap();
    assert_eq!(store.save_plugin(a, "echo again", "hash1", b"bytes").unwrap(), first);
    assert_eq!(store.plugin_bytes(a, first.id).unwrap().as_deref(), Some(&b"bytes"[..]));
    assert_eq!(store.plugin_bytes(b, first.id).unwrap(), None);

    // Definitions.
    let mut step = Definition {
        id: DefinitionId(0),
        org: a,
        name: "numbering".into(),
        trigger: Trigger { message: "Create".into(), entity: "account".into(), filtering_attributes: vec![] },
        kind: DefinitionKind::Step {
            plugin: first.id,
            stage: Stage::PostOperation,
            mode: Mode::Asynchronous,
            rank: 1,
            unsecure_config: Some("ACC".into()),
            secure_config: None,
            bulk: Bulk::Batched(250),
        },
        active: true,
        auto_delete: true,
    };
    step.id = store.save_definition(&step).unwrap();
    store.set_definition_active(a, step.id, false).unwrap();
    assert!(matches!(store.set_definition_active(b, step.id, true), Err(Error::NotFound(_))));
    step.active = false;
    assert_eq!(store.definitions().unwrap(), vec![step.clone()]);
    // A runaway flag is kept with its definition, only for its own org.
    assert_eq!(store.runaway_flags().unwrap(), vec![]);
    store.set_runaway_flag(a, step.id, Some("{\"since\":1}")).unwrap();
    assert!(matches!(store.set_runaway_flag(b, step.id, Some("x")), Err(Error::NotFound(_))));
    assert_eq!(store.runaway_flags().unwrap(), vec![(a, step.id, "{\"since\":1}".to_owned())]);
    assert_eq!(store.definitions().unwrap(), vec![step.clone()], "a flag changes nothing else");
    store.set_runaway_flag(a, step.id, None).unwrap();
    assert_eq!(store.runaway_flags().unwrap(), vec![]);

    // Records, confined to their org.
    let (org_a, org_b) = (a.0.to_string(), b.0.to_string());
    let id =
        store.create(&org_a, "account", attrs(&[("id", "r1".into()), ("score", Value::Integer(5))])).unwrap();
    assert_eq!(id, "r1");
    assert!(matches!(store.retrieve(&org_b, "account", "r1", &[]), Err(RecordError::NotFound { .. })));
    let ids = ["nope".to_string(), "r1".to_string()];
    let many = store.retrieve_many(&org_a, "account", &ids).unwrap();
    assert_eq!(many[0], ("nope".to_string(), None));
    assert_eq!(
        (many[1].0.as_str(), many[1].1.as_ref().map(|a| a["score"].clone())),
        ("r1", Some(Value::Integer(5)))
    );
    assert_eq!(store.retrieve_many(&org_b, "account", &ids).unwrap()[1], ("r1".to_string(), None));
    store
        .update(&org_a, "account", "r1", attrs(&[("score", Value::Integer(6)), ("name", "A".into())]))
        .unwrap();
    let filter = Filter {
        entity: "account".into(),
        columns: vec!["score".into()],
        conditions: vec![Condition {
            attribute: "score".into(),
            operator: Operator::GreaterThan,
            value: Value::Integer(5),
        }],
        top: None,
    };
    let found = store.query(&org_a, &filter).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].attributes, attrs(&[("score", Value::Integer(6))]));
    assert!(store.query(&org_b, &filter).unwrap().is_empty());
    assert!(store.delete(&org_b, "account", "r1").is_err());

    // Jobs: batch insert, transitions, reads confined to their org.
    let ids = store.insert_jobs(&[new_job(a, 1), new_job(a, 2), new_job(a, 3)]).unwrap();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids in insertion order");
    assert_eq!(store.job(b, ids[0]).unwrap(), None, "another org's job is not found");
    let mut read = store.starts_by_id(a, &[ids[2], ids[0], JobId(9_999_999)]).unwrap();
    read.sort_by_key(|row| row.id);
    assert_eq!(read.iter().map(|row| row.id).collect::<Vec<_>>(), [ids[0], ids[2]], "unknown ids left out");
    let whole = StartRow::from(store.job(a, ids[0]).unwrap().unwrap());
    assert_eq!(read[0], whole, "what a start needs, as the whole row has it");
    assert!(read.iter().all(|row| row.first_run), "never ran");
    assert_eq!(
        (read[0].payload.as_slice(), read[1].payload.as_slice()),
        (&[1, 0, 0xff, 1][..], &[1, 0, 0xff, 3][..])
    );
    assert!(store.starts_by_id(b, &ids).unwrap().is_empty(), "another org's jobs are left out");
    store
        .apply(&[
            JobUpdate::Started { id: ids[0], org: a, at: 2_000 },
            JobUpdate::Started { id: ids[1], org: a, at: 2_000 },
            JobUpdate::Status {
                id: ids[2],
                org: a,
                lane: Lane::Priority,
                at: 2_500,
                status: Status::Canceled,
                error: None,
            },
        ])
        .unwrap();
    let write = RecordChange::Update {
        entity: "account".into(),
        id: "r1".into(),
        attributes: attrs(&[("done", Value::Boolean(true))]),
    };
    store.apply(&[finished(ids[0], a, Status::Succeeded, vec![write])]).unwrap();
    let done = store.job(a, ids[0]).unwrap().unwrap();
    assert_eq!(
        (done.status, done.started_at, done.completed_at),
        (Status::Succeeded, Some(2_000), Some(5_000))
    );
    assert_eq!(done.accounting.fuel_used, 42);
    assert_eq!(done.exception_times, [4_000, 4_500], "a job's recent exceptions are kept");
    assert_eq!(
        store.retrieve(&org_a, "account", "r1", &[]).unwrap().attributes["done"],
        Value::Boolean(true)
    );

    // A completion whose record write no longer applies is refused whole: no half-commit.
    let stale =
        RecordChange::Update { entity: "account".into(), id: "gone".into(), attributes: Attributes::new() };
    assert!(store.apply(&[finished(ids[1], a, Status::Succeeded, vec![stale])]).is_err());
    assert_eq!(store.job(a, ids[1]).unwrap().unwrap().status, Status::InProgress);

    let unfinished: Vec<JobId> = store.unfinished_jobs().unwrap().iter().map(|j| j.id).collect();
    assert_eq!(unfinished, vec![ids[1]]);
    let mut counts = store.job_counts(a).unwrap();
    counts.sort_by_key(|(_, status, _)| status.code());
    assert_eq!(
        counts,
        vec![
            (Lane::Priority, Status::InProgress, 1),
            (Lane::Priority, Status::Succeeded, 1),
            (Lane::Priority, Status::Canceled, 1)
        ]
    );
    assert_eq!(
        store.jobs(a, &JobFilter { status: Some(Status::Canceled), ..JobFilter::all(10) }).unwrap().len(),
        1
    );

    // Several batches in one transaction (group commit): one whose record write no
    // longer applies is left out alone, the others commit, ids and all.
    let good = Batch {
        changes: vec![(
            a,
            RecordChange::Create {
                entity: "account".into(),
                id: "grouped".into(),
                attributes: attrs(&[("name", Value::from("kept"))]),
            },
        )],
        jobs: vec![new_job(a, 20)],
        ..Batch::default()
    };
    let stale = Batch {
        changes: vec![(a, RecordChange::Delete { entity: "account".into(), id: "never-there".into() })],
        jobs: vec![new_job(a, 21)],
        ..Batch::default()
    };
    let after = Batch { jobs: vec![new_job(b, 22)], ..Batch::default() };
    let results = store.commit_each(&[&good, &stale, &after]).unwrap();
    assert!(matches!(results[1], Err(Error::WriteConflict(_))), "{:?}", results[1]);
    let (kept, later) = (results[0].as_ref().unwrap(), results[2].as_ref().unwrap());
    assert_eq!((kept.len(), later.len()), (1, 1));
    assert!(later[0] > kept[0], "ids in commit order");
    assert_eq!(
        store.retrieve(&org_a, "account", "grouped", &[]).unwrap().attributes["name"],
        Value::from("kept")
    );
    assert_eq!(store.job(b, later[0]).unwrap().unwrap().status, Status::WaitingForResources);
    let all_jobs = store.jobs(a, &JobFilter::all(100)).unwrap();
    assert!(!all_jobs.iter().any(|j| j.correlation_id == "c21"), "the refused batch left nothing");

    // A bulk import's run of creates: all of it lands, or, when one id exists already
    // (in the store or earlier in the run), the batch is refused and leaves nothing.
    let create = |id: &str| {
        (
            a,
            RecordChange::Create {
                entity: "contact".into(),
                id: id.into(),
                attributes: attrs(&[("n", Value::Integer(1))]),
            },
        )
    };
    let imported = Batch { changes: vec![create("i1"), create("i2"), create("i3")], ..Batch::default() };
    assert!(store.commit_each(&[&imported]).unwrap()[0].is_ok());
    assert_eq!(store.retrieve(&org_a, "contact", "i3", &[]).unwrap().attributes["n"], Value::Integer(1));
    for run in
        [vec![create("i4"), create("i2"), create("i5")], vec![create("i6"), create("i7"), create("i6")]]
    {
        let refused = Batch { changes: run, jobs: vec![new_job(a, 23)], ..Batch::default() };
        let result = store.commit_each(&[&refused]).unwrap().pop().unwrap();
        assert!(
            matches!(&result, Err(Error::WriteConflict(why)) if why.contains("already exists")),
            "{result:?}"
        );
        for left_out in ["i4", "i5", "i6", "i7"] {
            assert!(store.retrieve(&org_a, "contact", left_out, &[]).is_err(), "{left_out} was kept");
        }
    }

    // A run whose start is written with its end: one write sets both, in a batch with
    // other jobs' starts and ends (each job's updates in order: a retry started again).
    let quick = store.insert_jobs(&[new_job(b, 30), new_job(b, 31)]).unwrap();
    let mut with_start = finished(quick[0], b, Status::WaitingForResources, vec![]);
    if let JobUpdate::Finished { started, .. } = &mut with_start {
        *started = Some(4_200);
    }
    store
        .apply(&[
            JobUpdate::Started { id: quick[1], org: b, at: 4_100 },
            with_start,
            finished(quick[1], b, Status::Failed, vec![]),
            JobUpdate::Started { id: quick[0], org: b, at: 6_000 },
        ])
        .unwrap();
    let (first, second) =
        (store.job(b, quick[0]).unwrap().unwrap(), store.job(b, quick[1]).unwrap().unwrap());
    assert_eq!((first.status, first.started_at, first.completed_at), (Status::InProgress, Some(6_000), None));
    assert_eq!(
        (second.status, second.started_at, second.completed_at),
        (Status::Failed, Some(4_100), Some(5_000))
    );

    // Auto-delete on success removes the row.
    let mut auto_delete = finished(ids[1], a, Status::Succeeded, vec![]);
    if let JobUpdate::Finished { delete, .. } = &mut auto_delete {
        *delete = true;
    }
    store.apply(&[auto_delete]).unwrap();
    assert_eq!(store.job(a, ids[1]).unwrap(), None);

    // Everything acknowledged is there after a reopen.
    drop(store);
    let again = reopen();
    assert_eq!(again.orgs().unwrap().len(), 2);
    assert_eq!(again.job(a, ids[0]).unwrap().unwrap().status, Status::Succeeded);
    assert_eq!(again.definitions().unwrap().len(), 1);

    // Retention purges in bounded batches, each its own transaction.
    let succeeded = |store: &dyn Store| -> u64 {
        [a, b]
            .iter()
            .flat_map(|org| store.job_counts(*org).unwrap())
            .filter(|c| c.1 == Status::Succeeded)
            .map(|c| c.2)
            .sum()
    };
    let before = succeeded(again.as_ref());
    assert!(before >= 1);
    // Jobs are found by correlation within their org, and a purged job no longer is.
    let by_correlation = |store: &dyn Store, org: OrgId, correlation: &str| -> Vec<JobId> {
        let filter = JobFilter { correlation_id: Some(correlation.into()), ..JobFilter::all(10) };
        store.jobs(org, &filter).unwrap().iter().map(|j| j.id).collect()
    };
    let correlation = again.job(a, ids[0]).unwrap().unwrap().correlation_id;
    assert!(by_correlation(again.as_ref(), a, &correlation).contains(&ids[0]));
    assert!(!by_correlation(again.as_ref(), b, &correlation).contains(&ids[0]), "another org's job");
    let none = crate::Cutoffs { succeeded: 0, failed: 0, canceled: 0, trace: 0, operations: 0 };
    assert_eq!(again.purge(&none, 10).unwrap(), (0, 0), "nothing is older than the cutoffs");
    let old_successes = crate::Cutoffs { succeeded: 10_000, ..none };
    for left in (0..before).rev() {
        assert_eq!(again.purge(&old_successes, 1).unwrap(), (1, 0), "one row per batch of one");
        assert_eq!(succeeded(again.as_ref()), left);
    }
    assert_eq!(again.purge(&old_successes, 1).unwrap(), (0, 0));
    assert!(by_correlation(again.as_ref(), a, &correlation).is_empty(), "purged with its job");
}

/// Reading back a backlog's next jobs (a start's read ahead): many ids at once, mostly
/// consecutive, interleaved with another org's, in any order, some asked twice or
/// unknown; a read returns each of its org's jobs asked for once, as the whole row has
/// it, and nothing else. On a fresh store.
pub fn read_ahead(store: &dyn Store) {
    let a = store.create_org("reading-ahead").unwrap();
    let b = store.create_org("writing-beside").unwrap();
    // Every fourth job another org's, as two busy orgs' enqueues interleave.
    let jobs: Vec<NewJob> = (0..200).map(|n| new_job(if n % 4 == 3 { b } else { a }, n)).collect();
    let ids = store.insert_jobs(&jobs).unwrap();
    let of = |org: OrgId| -> Vec<JobId> {
        ids.iter().zip(&jobs).filter(|(_, job)| job.org == org).map(|(id, _)| *id).collect()
    };
    let (of_a, of_b) = (of(a), of(b));
    // All of a's but every tenth (started already), newest first, with one of b's, an
    // unknown id and a repeat.
    let mut expected: Vec<JobId> =
        of_a.iter().enumerate().filter(|(i, _)| i % 10 != 5).map(|(_, id)| *id).collect();
    let mut asked: Vec<JobId> = expected.iter().rev().copied().collect();
    asked.extend([of_b[0], JobId(u64::MAX / 2), expected[3]]);
    let mut read = store.starts_by_id(a, &asked).unwrap();
    read.sort_by_key(|row| row.id);
    expected.sort();
    assert_eq!(read.iter().map(|row| row.id).collect::<Vec<_>>(), expected, "the org's jobs asked for, once");
    for row in [&read[0], &read[70], &read[read.len() - 1]] {
        assert_eq!(*row, StartRow::from(store.job(a, row.id).unwrap().unwrap()), "as the whole row has it");
    }
    let theirs = store.starts_by_id(b, &of_b).unwrap();
    assert_eq!(theirs.len(), of_b.len(), "another org's own read is whole");
    assert!(store.starts_by_id(b, &of_a).unwrap().is_empty(), "and never reaches into a's");
}

/// An org's job listing, newest first: every lane and status, each filter alone and
/// together, pages through `before`, never another org's jobs. On a fresh store.
pub fn listing(store: &dyn Store) {
    let a = store.create_org("listed").unwrap();
    let b = store.create_org("beside").unwrap();
    let jobs: Vec<NewJob> = (0..90)
        .map(|n| NewJob {
            lane: Lane::ALL[n as usize % 3],
            status: if n % 4 == 1 { Status::Waiting } else { Status::WaitingForResources },
            definition: DefinitionId(if n % 5 == 0 { 8 } else { 7 }),
            ..new_job(if n % 6 == 5 { b } else { a }, n)
        })
        .collect();
    let ids = store.insert_jobs(&jobs).unwrap();
    let ended: Vec<JobUpdate> = ids
        .iter()
        .zip(&jobs)
        .enumerate()
        .filter(|(n, (_, job))| n % 7 == 0 && job.org == a)
        .map(|(n, (id, job))| {
            let status = if n % 2 == 0 { Status::Succeeded } else { Status::Failed };
            on_lane(finished(*id, a, status, vec![]), job.lane)
        })
        .collect();
    store.commit(&Batch { updates: ended, ..Batch::default() }).unwrap();
    let mut rows: Vec<JobRow> = ids.iter().filter_map(|id| store.job(a, *id).unwrap()).collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.id));
    let listed =
        |filter: &JobFilter| -> Vec<JobId> { store.jobs(a, filter).unwrap().iter().map(|j| j.id).collect() };
    let expected = |filter: &JobFilter| -> Vec<JobId> {
        rows.iter()
            .filter(|row| filter.status.is_none_or(|s| row.status == s))
            .filter(|row| filter.lane.is_none_or(|l| row.lane == l))
            .filter(|row| filter.definition.is_none_or(|d| row.definition == d))
            .filter(|row| filter.correlation_id.as_ref().is_none_or(|c| row.correlation_id == *c))
            .filter(|row| filter.before.is_none_or(|before| row.id < before))
            .take(filter.limit as usize)
            .map(|row| row.id)
            .collect()
    };
    let mut filters = vec![
        JobFilter::all(100),
        JobFilter::all(7),
        JobFilter { before: Some(rows[10].id), ..JobFilter::all(5) },
    ];
    for status in
        [Status::WaitingForResources, Status::Waiting, Status::Succeeded, Status::Failed, Status::Canceled]
    {
        filters.push(JobFilter { status: Some(status), ..JobFilter::all(100) });
        for lane in Lane::ALL {
            filters.push(JobFilter { status: Some(status), lane: Some(lane), ..JobFilter::all(4) });
        }
    }
    for lane in Lane::ALL {
        filters.push(JobFilter { lane: Some(lane), before: Some(rows[20].id), ..JobFilter::all(100) });
    }
    filters.push(JobFilter { definition: Some(DefinitionId(8)), ..JobFilter::all(100) });
    filters.push(JobFilter { definition: Some(DefinitionId(9)), ..JobFilter::all(100) });
    filters.push(JobFilter {
        definition: Some(DefinitionId(7)),
        lane: Some(Lane::Regular),
        ..JobFilter::all(3)
    });
    filters.push(JobFilter { correlation_id: Some(rows[3].correlation_id.clone()), ..JobFilter::all(10) });
    filters.push(JobFilter { correlation_id: Some("c5".into()), ..JobFilter::all(10) });
    for filter in &filters {
        assert_eq!(listed(filter), expected(filter), "{filter:?}");
    }
    assert_eq!(listed(&JobFilter::all(100)).len(), 75, "all of a's, none of b's");

    // Pages of 8 through `before` list every job once, newest first.
    let mut paged = Vec::new();
    let mut filter = JobFilter::all(8);
    loop {
        let page = listed(&filter);
        if page.is_empty() {
            break;
        }
        filter.before = page.last().copied();
        paged.extend(page);
    }
    assert_eq!(paged, expected(&JobFilter::all(1_000)));
    assert_eq!(store.jobs(b, &JobFilter::all(100)).unwrap().len(), 15, "b's own, none of a's");
}

/// An org's job counts per lane and status (`Store::job_counts`) against its jobs as
/// listed, through every way a job's status changes: inserted unfinished or finished,
/// started, finished (alone or with its start), canceled, deleted on success, a batch
/// refused, an update of a finished job (refused: a finished status is final) and the
/// retention purge.
pub fn counts(store: &dyn Store) {
    let a = store.create_org("counted").unwrap();
    let b = store.create_org("counted beside").unwrap();
    let truth = |org: OrgId| -> Vec<(Lane, Status, u64)> {
        let mut counts = std::collections::BTreeMap::new();
        for job in store.jobs(org, &JobFilter::all(10_000)).unwrap() {
            counts.entry((job.lane.index(), job.status.code())).or_insert((job.lane, job.status, 0)).2 += 1;
        }
        counts.into_values().collect()
    };
    let counted = |org: OrgId| -> Vec<(Lane, Status, u64)> { store.job_counts(org).unwrap() };
    let check = |when: &str| {
        for org in [a, b] {
            assert_eq!(counted(org), truth(org), "org {} {when}", org.0);
            let finished: Vec<_> = truth(org).into_iter().filter(|c| c.1.is_terminal()).collect();
            assert_eq!(store.finished_job_counts(org).unwrap(), finished, "org {} {when}, finished", org.0);
        }
    };
    let mut jobs: Vec<NewJob> = (0..36)
        .map(|n| NewJob {
            lane: Lane::ALL[n as usize % 3],
            status: if n % 5 == 1 { Status::Waiting } else { Status::WaitingForResources },
            ..new_job(if n % 6 == 5 { b } else { a }, n)
        })
        .collect();
    jobs.push(refused_job(a, 40, Status::Failed));
    jobs.push(refused_job(b, 41, Status::Canceled));
    let ids = store.insert_jobs(&jobs).unwrap();
    check("after the inserts");
    let of_a: Vec<JobId> = ids.iter().zip(&jobs).filter(|(_, j)| j.org == a).map(|(id, _)| *id).collect();
    let lanes: std::collections::HashMap<JobId, Lane> =
        ids.iter().zip(&jobs).map(|(id, job)| (*id, job.lane)).collect();

    // Starts, ends (with their starts, or after them), a cancel, a postponement, an
    // auto-delete.
    let mut updates: Vec<JobUpdate> =
        of_a[..10].iter().map(|id| JobUpdate::Started { id: *id, org: a, at: 4_000 }).collect();
    for (n, id) in of_a[..6].iter().enumerate() {
        updates.push(finished(*id, a, if n % 2 == 0 { Status::Succeeded } else { Status::Failed }, vec![]));
    }
    for id in &of_a[10..14] {
        let mut ended = finished(*id, a, Status::Succeeded, vec![]);
        if let JobUpdate::Finished { started, .. } = &mut ended {
            *started = Some(4_100);
        }
        updates.push(ended);
    }
    let canceled = |id: JobId, at: Millis| JobUpdate::Status {
        id,
        org: a,
        lane: Lane::Priority,
        at,
        status: Status::Canceled,
        error: None,
    };
    updates.push(canceled(of_a[14], 4_200));
    let mut postponed = finished(of_a[15], a, Status::Waiting, vec![]);
    if let JobUpdate::Finished { postpone_until, .. } = &mut postponed {
        *postpone_until = Some(9_000);
    }
    updates.push(postponed);
    let mut deleted = finished(of_a[16], a, Status::Succeeded, vec![]);
    if let JobUpdate::Finished { delete, .. } = &mut deleted {
        *delete = true;
    }
    updates.push(deleted);
    let updates = updates.into_iter().map(|u| on_lane(u.clone(), lanes[&u.id()])).collect();
    store.commit(&Batch { updates, ..Batch::default() }).unwrap();
    check("after starts and ends");

    // A refused batch counts nothing; the batch beside it counts.
    let stale = Batch {
        changes: vec![(a, RecordChange::Delete { entity: "account".into(), id: "never-there".into() })],
        updates: vec![on_lane(finished(of_a[17], a, Status::Succeeded, vec![]), lanes[&of_a[17]])],
        ..Batch::default()
    };
    let kept = Batch {
        updates: vec![on_lane(finished(of_a[18], a, Status::Failed, vec![]), lanes[&of_a[18]])],
        ..Batch::default()
    };
    let results = store.commit_each(&[&stale, &kept]).unwrap();
    assert!(matches!(results[0], Err(Error::WriteConflict(_))), "{:?}", results[0]);
    assert!(results[1].is_ok());
    check("after a refused batch");

    // A finished job's status is final: its updates change nothing, nor its count.
    store
        .apply(&[
            on_lane(finished(of_a[0], a, Status::Failed, vec![]), lanes[&of_a[0]]),
            JobUpdate::Started { id: of_a[1], org: a, at: 6_000 },
            on_lane(canceled(of_a[2], 6_000), lanes[&of_a[2]]),
        ])
        .unwrap();
    assert_eq!(store.job(a, of_a[0]).unwrap().unwrap().status, Status::Succeeded);
    assert_eq!(store.job(a, of_a[1]).unwrap().unwrap().status, Status::Failed);
    assert_eq!(store.job(a, of_a[2]).unwrap().unwrap().status, Status::Succeeded);
    check("after updates of finished jobs");

    // The retention purge: succeeded jobs finished before 6,000 go, and their counts.
    let cutoffs = crate::Cutoffs { succeeded: 6_000, failed: 0, canceled: 0, trace: 0, operations: 0 };
    let (deleted, _) = store.purge(&cutoffs, 1_000).unwrap();
    assert!(deleted >= 6, "{deleted} jobs purged");
    assert!(counted(a).iter().all(|(_, status, _)| *status != Status::Succeeded));
    check("after the purge");
    assert_eq!(store.recount_finished_jobs().unwrap(), vec![], "every write kept the counts");
}

/// An operator's recount finds nothing to correct where every write kept the counts, and
/// corrects the counts of jobs written without them, as a node of a version before the
/// counts were kept would (here through `sql`, run on the store's database as it is).
pub fn recount(store: &dyn Store, sql: &dyn Fn(&str)) {
    let org = store.create_org("recounted").unwrap();
    let ids = store.insert_jobs(&(0..4).map(|n| new_job(org, n)).collect::<Vec<_>>()).unwrap();
    let ended = finished(ids[0], org, Status::Succeeded, vec![]);
    store.commit(&Batch { updates: vec![ended], ..Batch::default() }).unwrap();
    assert_eq!(store.recount_finished_jobs().unwrap(), vec![]);

    sql(&format!("UPDATE jobs SET status = {} WHERE id = {}", Status::Failed.code(), ids[1].0));
    sql(&format!("UPDATE finished_job_counts SET n = n + 5 WHERE org_id = {} AND status = 30", org.0));
    let miscount =
        |status, kept, counted| crate::Miscount { org, lane: Lane::Priority, status, kept, counted };
    assert_eq!(
        store.recount_finished_jobs().unwrap(),
        vec![miscount(Status::Succeeded, 6, 1), miscount(Status::Failed, 0, 1)]
    );
    let counted = vec![
        (Lane::Priority, Status::WaitingForResources, 2),
        (Lane::Priority, Status::Succeeded, 1),
        (Lane::Priority, Status::Failed, 1),
    ];
    assert_eq!(store.job_counts(org).unwrap(), counted);
    assert_eq!(store.recount_finished_jobs().unwrap(), vec![], "corrected once");
}

/// What several nodes on one database share: leases with epochs that fence commits,
/// adoption of jobs created elsewhere, heartbeats, the change log and singletons.
pub fn cluster(store: &dyn Store) {
    let org = store.create_org("leased").unwrap();
    let waiting = store.insert_jobs(&[new_job(org, 1)]).unwrap();

    // Clocks and heartbeats.
    let now = store.database_now().unwrap();
    let system =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    assert!((now - system).abs() < 60_000, "the database's clock is a wall clock");
    store.heartbeat("n1", 30_000).unwrap();
    store.heartbeat("dead", -1).unwrap();
    assert_eq!(store.heartbeat("n2", 30_000).unwrap(), vec!["n1".to_owned(), "n2".to_owned()]);

    // A lease is taken once, with the org's unfinished jobs.
    let taken = store.take_lease("n1", org, 30_000).unwrap().expect("a free lease is taken");
    assert_eq!(taken.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), waiting);
    assert_eq!(taken.released_at, 0, "never given back");
    let first = taken.fence;
    assert_eq!(store.take_lease("n2", org, 30_000).unwrap(), None, "a live lease is not taken");
    assert_eq!(store.renew_leases("n1", &[first], 30_000).unwrap(), vec![org]);
    let leases = store.leases().unwrap();
    assert_eq!((leases[0].org, leases[0].node.as_str(), leases[0].epoch), (org, "n1", first.epoch));

    // Jobs of an unfenced batch wait to be adopted; a fenced batch's are adopted already.
    let elsewhere =
        store.commit(&Batch { jobs: vec![new_job(org, 2)], unadopted: true, ..Batch::default() }).unwrap();
    let fenced = Batch { jobs: vec![new_job(org, 3)], fence: Some(first), ..Batch::default() };
    let here = store.commit(&fenced).unwrap();
    let adopted: Vec<JobId> = store.adopt_jobs(&[first]).unwrap().iter().map(|j| j.id).collect();
    assert_eq!(adopted, elsewhere, "only the unadopted job, once");
    assert!(store.adopt_jobs(&[first]).unwrap().is_empty());
    assert_ne!(here, elsewhere);

    // Released, taken by another node at a new epoch: the old holder is fenced out.
    store.release_lease("n1", first, 9_000).unwrap();
    let second = store.take_lease("n2", org, 30_000).unwrap().expect("a released lease is taken");
    assert_eq!(second.released_at, 9_000, "the releasing node's last time goes to the taker");
    let second = second.fence;
    assert!(second.epoch > first.epoch);
    let started = JobUpdate::Started { id: waiting[0], org, at: 5_000 };
    let stale = Batch { updates: vec![started.clone()], fence: Some(first), ..Batch::default() };
    let current = Batch { jobs: vec![new_job(org, 4)], fence: Some(second), ..Batch::default() };
    let results = store.commit_each(&[&stale, &current]).unwrap();
    assert!(matches!(results[0], Err(Error::Fenced(o)) if o == org), "{:?}", results[0]);
    assert!(results[1].is_ok(), "the other batch commits");
    assert_eq!(store.job(org, waiting[0]).unwrap().unwrap().status, Status::WaitingForResources);
    assert!(store.adopt_jobs(&[first]).unwrap().is_empty(), "a stale fence adopts nothing");
    assert!(store.renew_leases("n1", &[first], 30_000).unwrap().is_empty(), "a lost lease is not renewed");

    // An expired lease is taken by whoever asks; its jobs and throughput come along.
    store.commit(&Batch { updates: vec![started], fence: Some(second), ..Batch::default() }).unwrap();
    assert_eq!(store.starts_since(org, Lane::Priority, 5_000).unwrap(), 1);
    assert_eq!(store.starts_since(org, Lane::Priority, 5_001).unwrap(), 0);
    // A run's start written with its end counts as well.
    let more = store
        .commit(&Batch { jobs: vec![new_job(org, 5)], fence: Some(second), ..Batch::default() })
        .unwrap();
    let mut ended = finished(more[0], org, Status::Succeeded, Vec::new());
    if let JobUpdate::Finished { started, at, .. } = &mut ended {
        (*started, *at) = (Some(65_000), 65_010);
    }
    store.commit(&Batch { updates: vec![ended], fence: Some(second), ..Batch::default() }).unwrap();
    assert_eq!(store.starts_since(org, Lane::Priority, 60_000).unwrap(), 1);
    assert_eq!(store.starts_since(org, Lane::Priority, 5_000).unwrap(), 2);
    assert_eq!(store.starts_since(org, Lane::Regular, 0).unwrap(), 0);
    assert_eq!(store.renew_leases("n2", &[second], -1).unwrap(), vec![org]);
    let third = store.take_lease("n3", org, 30_000).unwrap().expect("an expired lease is taken");
    assert!(third.fence.epoch > second.epoch);
    assert_eq!(third.jobs.len(), 4, "every unfinished job of the org");
    assert!(third.jobs.iter().any(|j| j.id == waiting[0] && j.status == Status::InProgress));

    // The change log: in order, each command answered on its entry.
    let start = store.last_change().unwrap();
    let a = store.log_change(org, ChangeKind::Definition, 7).unwrap();
    let b = store.log_change(org, ChangeKind::Cancel, waiting[0].0).unwrap();
    let changes = store.changes_after(start, 10).unwrap();
    assert_eq!(
        changes.iter().map(|c| (c.id, c.kind, c.key)).collect::<Vec<_>>(),
        vec![(a, ChangeKind::Definition, 7), (b, ChangeKind::Cancel, waiting[0].0)]
    );
    assert_eq!(store.changes_after(a, 10).unwrap().len(), 1);
    assert_eq!(store.last_change().unwrap(), b);
    store.answer_change(b, "canceled").unwrap();
    assert_eq!(store.change(b).unwrap().unwrap().answer.as_deref(), Some("canceled"));
    assert_eq!(store.change(b + 100).unwrap(), None);

    // Singletons: one holder until it lapses.
    assert!(store.take_singleton("retention", "n1", 30_000).unwrap());
    assert!(!store.take_singleton("retention", "n2", 30_000).unwrap());
    assert!(store.take_singleton("retention", "n1", -1).unwrap(), "the holder renews");
    assert!(store.take_singleton("retention", "n2", 30_000).unwrap(), "a lapsed singleton is taken");

    // The loop rule's starts: the org's workflow jobs on a record since a time, the newest
    // `limit`, oldest first.
    let workflow = |n: u32, record: Option<&str>| NewJob {
        lane: Lane::Regular,
        operation: Operation::Workflow,
        definition: DefinitionId(70),
        record: record.map(|id| ("account".to_owned(), id.to_owned())),
        ..new_job(org, n)
    };
    let other = store.create_org("elsewhere").unwrap();
    store
        .insert_jobs(&[
            workflow(100, Some("a1")),
            workflow(200, Some("a1")),
            workflow(300, Some("a2")),
            workflow(400, None),
            NewJob { created_at: 1_350, ..new_job(org, 9) },
            NewJob { org: other, ..workflow(500, Some("a1")) },
        ])
        .unwrap();
    let starts = |since, limit| -> Vec<(String, Millis)> {
        let starts = store.workflow_starts_since(org, since, limit).unwrap();
        assert!(starts.iter().all(|s| s.definition == DefinitionId(70) && s.record.0 == "account"));
        starts.into_iter().map(|s| (s.record.1, s.created_at)).collect()
    };
    let all = vec![("a1".to_owned(), 1_100), ("a1".to_owned(), 1_200), ("a2".to_owned(), 1_300)];
    assert_eq!(starts(0, 100), all, "workflow jobs on a record of this org only");
    assert_eq!(starts(1_200, 100), all[1..], "since a time");
    assert_eq!(starts(0, 2), all[1..], "the newest");
}

/// How one node hears of another's commits (`Store::wait_for_news`), for a backend that
/// serves several nodes: `listening` and `other` are two handles on one database, as two
/// nodes hold. A logged change and jobs left to adopt are news, heard without waiting
/// out the timeout, and each is heard once.
pub fn news(listening: &dyn Store, other: &dyn Store) {
    use std::time::{Duration, Instant};
    let org = other.create_org("newsworthy").unwrap();
    // What came before (the org's creation is no news) is cleared.
    listening.wait_for_news(Duration::from_millis(10)).unwrap();
    let patient = Duration::from_secs(30);

    other.log_change(org, ChangeKind::Definition, 1).unwrap();
    let began = Instant::now();
    assert!(listening.wait_for_news(patient).unwrap(), "a logged change is news");
    assert!(began.elapsed() < patient / 2, "heard when it committed, not at the timeout");
    assert!(!listening.wait_for_news(Duration::from_millis(50)).unwrap(), "news is heard once");

    other.commit(&Batch { jobs: vec![new_job(org, 1)], unadopted: true, ..Batch::default() }).unwrap();
    assert!(listening.wait_for_news(patient).unwrap(), "jobs left to adopt are news");
    other.commit(&Batch { jobs: vec![new_job(org, 2)], ..Batch::default() }).unwrap();
    assert!(!listening.wait_for_news(Duration::from_millis(50)).unwrap(), "jobs already held are not");
}
