//! The scheduler's rules, one scenario each, on a hand-driven clock.

use super::*;
use sluice_core::jobs::MINUTE;

const ORG_A: OrgId = OrgId(1);
const ORG_B: OrgId = OrgId(2);
const FLOW: DefinitionId = DefinitionId(10);
const STEP: DefinitionId = DefinitionId(20);

fn spec(id: u64, org: OrgId, lane: Lane, definition: DefinitionId) -> JobSpec {
    JobSpec { id: JobId(id), org, lane, definition, dependency_token: None }
}

fn start(s: &mut Scheduler, now: Millis) -> Option<JobId> {
    match s.next(now)? {
        Decision::Start(id) => Some(id),
        Decision::CanceledOnPickup(id) => panic!("{id:?} canceled unexpectedly"),
    }
}

fn quotas(threads: u32, throughput: u32) -> Quotas {
    Quotas { max_threads: threads, max_throughput: throughput, ..Quotas::default() }
}

#[test]
fn the_thread_cap_holds_and_frees_on_completion() {
    let mut s = Scheduler::new(quotas(2, 1000));
    for id in 1..=5 {
        s.submit(spec(id, ORG_A, Lane::Regular, FLOW));
    }
    let first = start(&mut s, 0).unwrap();
    start(&mut s, 0).unwrap();
    assert_eq!(s.next(0), None, "two in progress is the cap");
    assert_eq!(s.running(ORG_A, Lane::Regular), 2);
    assert_eq!(s.finished(first, 1, Outcome::Succeeded), Ok(After::Succeeded));
    assert!(start(&mut s, 1).is_some(), "a finished job frees a thread");
}

#[test]
fn a_thread_is_free_when_its_run_ends_before_its_end_is_decided() {
    let mut s = Scheduler::new(quotas(1, 1000));
    for id in 1..=3 {
        s.submit(spec(id, ORG_A, Lane::Regular, FLOW));
    }
    let first = start(&mut s, 0).unwrap();
    assert_eq!(s.next(0), None, "one in progress is the cap");
    s.run_ended(first, 1);
    s.run_ended(first, 1);
    assert_eq!(s.running(ORG_A, Lane::Regular), 0, "an ended run is counted free once");
    let second = start(&mut s, 1).unwrap();
    assert_eq!(s.finished(first, 2, Outcome::Exception), Ok(After::Retry));
    assert_eq!(s.running(ORG_A, Lane::Regular), 1, "deciding the first frees nothing more");
    assert_eq!(s.next(2), None, "the retried job waits for the thread the second holds");
    assert_eq!(s.finished(second, 3, Outcome::Succeeded), Ok(After::Succeeded));
    assert_eq!(start(&mut s, 3), Some(first), "the retry runs with the thread freed");
}

#[test]
fn an_org_taken_over_from_a_node_whose_clock_is_ahead_starts_once_its_clock_passes() {
    let mut s = Scheduler::new(quotas(4, 1000));
    s.submit(spec(1, ORG_A, Lane::Regular, FLOW));
    s.submit(spec(2, ORG_B, Lane::Regular, FLOW));
    s.start_from(ORG_A, 100);
    assert_eq!(s.next_wake(), Some(100), "the driver wakes when the org may start");
    assert_eq!(start(&mut s, 99), Some(JobId(2)), "another org starts meanwhile");
    assert_eq!(s.next(99), None, "nothing of the org before its time");
    s.wake(100);
    assert_eq!(start(&mut s, 100), Some(JobId(1)));
    assert_eq!(s.next_wake(), None, "nothing left to wait for");
}

#[test]
fn the_throughput_cap_waits_for_the_next_window() {
    let mut s = Scheduler::new(Quotas { throughput_window_minutes: 5, ..quotas(100, 3) });
    for id in 1..=5 {
        s.submit(spec(id, ORG_A, Lane::Priority, STEP));
    }
    let t0 = 7 * MINUTE; // inside the window [5, 10) minutes
    for _ in 0..3 {
        let job = start(&mut s, t0).unwrap();
        s.finished(job, t0, Outcome::Succeeded).unwrap();
    }
    assert_eq!(s.next(t0), None, "three starts fill the window");
    assert_eq!(s.next(10 * MINUTE - 1), None, "still the same window");
    assert_eq!(s.next_window(t0), Some(10 * MINUTE));
    assert!(start(&mut s, 10 * MINUTE).is_some(), "the window reset at 10 minutes");
    assert_eq!(s.starts_in_window(ORG_A, Lane::Priority, 10 * MINUTE), 1);
}

#[test]
fn a_failing_job_is_retried_a_times_then_postponed_d_times_n_then_forever() {
    let q =
        Quotas { max_exceptions: 3, exception_window_minutes: 10, max_postponements: 2, ..quotas(4, 1000) };
    let mut s = Scheduler::new(q);
    s.submit(spec(1, ORG_A, Lane::Priority, STEP));
    let mut now = 0;
    let run_and_fail = |s: &mut Scheduler, now: Millis| {
        let job = start(s, now).expect("the job is ready");
        s.finished(job, now, Outcome::Exception).unwrap()
    };
    for n in 1..=2u32 {
        assert_eq!(run_and_fail(&mut s, now), After::Retry);
        assert_eq!(run_and_fail(&mut s, now + 1), After::Retry);
        let until = now + 2 + 10 * MINUTE * Millis::from(n);
        assert_eq!(run_and_fail(&mut s, now + 2), After::Postponed { until, count: n });
        assert_eq!(s.status(JobId(1)), Some(Status::Waiting));
        assert!(s.wake(until - 1).is_empty(), "not before D × n minutes");
        assert_eq!(s.wake(until), vec![JobId(1)]);
        now = until;
    }
    assert_eq!(run_and_fail(&mut s, now), After::Retry);
    assert_eq!(run_and_fail(&mut s, now), After::Retry);
    assert_eq!(run_and_fail(&mut s, now), After::PostponedForever { count: 3 });
    assert_eq!(s.next_wake(), None);
    assert!(s.wake(Millis::MAX).is_empty(), "postponed forever");
    assert_eq!(s.resume(JobId(1)), Ok(Status::WaitingForResources));
    let job = start(&mut s, now).unwrap();
    assert_eq!(s.finished(job, now, Outcome::Succeeded), Ok(After::Succeeded), "a resume runs it again");
}

#[test]
fn exceptions_older_than_the_window_do_not_count() {
    let q = Quotas { max_exceptions: 2, exception_window_minutes: 5, ..quotas(4, 1000) };
    let mut s = Scheduler::new(q);
    s.submit(spec(1, ORG_A, Lane::Priority, STEP));
    let job = start(&mut s, 0).unwrap();
    assert_eq!(s.finished(job, 0, Outcome::Exception), Ok(After::Retry));
    let job = start(&mut s, 6 * MINUTE).unwrap();
    assert_eq!(s.finished(job, 6 * MINUTE, Outcome::Exception), Ok(After::Retry), "the first fell out");
}

#[test]
fn a_business_error_fails_at_once_and_is_never_retried() {
    let mut s = Scheduler::new(Quotas::default());
    s.submit(spec(1, ORG_A, Lane::Priority, STEP));
    let job = start(&mut s, 0).unwrap();
    assert_eq!(s.finished(job, 0, Outcome::BusinessError), Ok(After::Failed));
    assert_eq!(s.next(0), None);
}

#[test]
fn deactivation_cancels_queued_jobs_on_pickup_and_lets_running_ones_finish() {
    let mut s = Scheduler::new(quotas(1, 1000));
    for id in 1..=3 {
        s.submit(spec(id, ORG_A, Lane::Regular, FLOW));
    }
    let running = start(&mut s, 0).unwrap();
    s.deactivate(FLOW);
    assert_eq!(s.finished(running, 1, Outcome::Succeeded), Ok(After::Succeeded));
    assert_eq!(s.next(1), Some(Decision::CanceledOnPickup(JobId(2))));
    assert_eq!(s.next(1), Some(Decision::CanceledOnPickup(JobId(3))));
    assert_eq!(s.next(1), None, "the backlog drained");
}

#[test]
fn dependency_tokens_serialise_jobs_in_submission_order() {
    let mut s = Scheduler::new(quotas(10, 1000));
    for id in 1..=3 {
        s.submit(JobSpec { dependency_token: Some("acc-1".into()), ..spec(id, ORG_A, Lane::Priority, STEP) });
    }
    assert_eq!(start(&mut s, 0), Some(JobId(1)));
    assert_eq!(s.next(0), None, "job 2 waits for job 1");
    s.finished(JobId(1), 0, Outcome::BusinessError).unwrap();
    assert_eq!(start(&mut s, 0), Some(JobId(2)));
    assert_eq!(s.cancel(JobId(3)), Ok(Status::Canceled), "a waiting member can leave the chain");
    s.finished(JobId(2), 0, Outcome::Succeeded).unwrap();
    assert_eq!(s.next(0), None);
}

#[test]
fn cancel_pause_and_resume_follow_the_state_rules() {
    let mut s = Scheduler::new(quotas(10, 1000));
    s.submit(spec(1, ORG_A, Lane::Priority, STEP));
    s.submit(spec(2, ORG_A, Lane::Priority, STEP));
    assert_eq!(
        s.pause(JobId(1)),
        Err(Refusal::NotAllowed(Status::WaitingForResources)),
        "pause only from Locked"
    );
    assert_eq!(s.resume(JobId(1)), Err(Refusal::NotAllowed(Status::WaitingForResources)));
    let job = start(&mut s, 0).unwrap();
    assert_eq!(s.pause(job), Ok(Status::Pausing));
    assert_eq!(s.finished(job, 0, Outcome::Stopped), Ok(After::Paused));
    assert_eq!(s.resume(job), Ok(Status::WaitingForResources));
    let other = start(&mut s, 0).unwrap();
    assert_eq!(s.cancel(other), Ok(Status::Canceling), "a running job is asked to stop");
    assert_eq!(s.finished(other, 0, Outcome::Stopped), Ok(After::Canceled));
    assert_eq!(s.cancel(other), Err(Refusal::NotAllowed(Status::Canceled)), "terminal is final");
    assert_eq!(s.cancel(JobId(99)), Err(Refusal::UnknownJob));
}

#[test]
fn organisations_and_definitions_take_turns() {
    let mut s = Scheduler::new(quotas(1000, 100_000));
    // Org A floods one workflow; then org A's other step and org B each queue a few.
    for id in 1..=1000 {
        s.submit(spec(id, ORG_A, Lane::Regular, FLOW));
    }
    for id in 1001..=1003 {
        s.submit(spec(id, ORG_A, Lane::Regular, STEP));
    }
    for id in 2001..=2003 {
        s.submit(spec(id, ORG_B, Lane::Regular, STEP));
    }
    let first_ten: Vec<u64> = (0..10).map(|_| start(&mut s, 0).unwrap().0).collect();
    for id in [1001, 1002, 1003, 2001, 2002, 2003] {
        assert!(first_ten.contains(&id), "{id} waited behind the flood: {first_ten:?}");
    }
}

#[test]
fn a_flood_on_one_lane_leaves_the_other_lane_its_own_quota() {
    let mut s = Scheduler::new(quotas(2, 1000));
    for id in 1..=100 {
        s.submit(spec(id, ORG_A, Lane::Regular, FLOW));
    }
    s.submit(spec(500, ORG_A, Lane::Priority, STEP));
    let started: Vec<JobId> = std::iter::from_fn(|| start(&mut s, 0)).collect();
    assert!(started.contains(&JobId(500)));
    assert_eq!(s.running(ORG_A, Lane::Regular), 2);
    assert_eq!(s.running(ORG_A, Lane::Priority), 1);
}

#[test]
fn the_exempt_lane_ignores_quotas() {
    let mut s = Scheduler::new(quotas(1, 1));
    for id in 1..=5 {
        s.submit(spec(id, ORG_A, Lane::Exempt, STEP));
    }
    assert_eq!(std::iter::from_fn(|| start(&mut s, 0)).count(), 5);
}

#[test]
fn a_rescued_job_runs_again_without_counting_an_exception() {
    let q = Quotas { max_exceptions: 1, ..quotas(4, 1000) };
    let mut s = Scheduler::new(q);
    s.submit(spec(1, ORG_A, Lane::Priority, STEP));
    let job = start(&mut s, 0).unwrap();
    assert_eq!(s.finished(job, 0, Outcome::Rescued), Ok(After::Requeued));
    let job = start(&mut s, 0).unwrap();
    assert_eq!(s.finished(job, 0, Outcome::Succeeded), Ok(After::Succeeded));
}

#[test]
fn a_restored_scheduler_resumes_where_the_store_left_off() {
    let mut s = Scheduler::new(Quotas::default());
    s.restore(spec(1, ORG_A, Lane::Priority, STEP), Status::InProgress, 0, None);
    s.restore(spec(2, ORG_A, Lane::Priority, STEP), Status::Waiting, 1, Some(5 * MINUTE));
    s.restore(spec(3, ORG_A, Lane::Priority, STEP), Status::Succeeded, 0, None);
    assert_eq!(start(&mut s, 0), Some(JobId(1)), "a job running at the crash runs again");
    assert_eq!(s.next(0), None);
    assert_eq!(s.wake(5 * MINUTE), vec![JobId(2)]);
    assert_eq!(s.status(JobId(3)), None, "terminal jobs are not scheduled");
}

#[test]
fn a_deactivated_backlog_drains_even_while_its_org_is_at_the_throughput_cap() {
    let mut s = Scheduler::new(quotas(10, 2));
    for id in 1..=5 {
        s.submit(spec(id, ORG_A, Lane::Regular, FLOW));
    }
    start(&mut s, 0).unwrap();
    start(&mut s, 0).unwrap();
    assert_eq!(s.next(0), None, "the window's two starts are used");
    s.deactivate(FLOW);
    for id in 3..=5 {
        assert_eq!(s.next(0), Some(Decision::CanceledOnPickup(JobId(id))), "canceling costs no start");
    }
}

#[test]
fn upcoming_lists_each_definitions_next_waiting_jobs_of_the_org() {
    let mut s = Scheduler::new(quotas(10, 1000));
    for id in 1..=4 {
        s.submit(spec(id, ORG_A, Lane::Regular, FLOW));
    }
    for id in 5..=7 {
        s.submit(spec(id, ORG_A, Lane::Priority, STEP));
    }
    s.submit(spec(8, ORG_B, Lane::Regular, FLOW));
    let mut next = s.upcoming(ORG_A, 2, 100, |_| true);
    next.sort();
    assert_eq!(next, [JobId(1), JobId(2), JobId(5), JobId(6)], "the first two of each queue, no other org's");
    assert_eq!(s.upcoming(ORG_A, 2, 3, |_| true).len(), 3, "no more than the limit");
    // The priority lane's queue comes first: its jobs, unwanted, do not use up the limit.
    let mut unwanted_skipped = s.upcoming(ORG_A, 2, 2, |job| job != JobId(5) && job != JobId(6));
    unwanted_skipped.sort();
    assert_eq!(unwanted_skipped, [JobId(1), JobId(2)], "the limit counts only wanted jobs");
    s.cancel(JobId(1)).unwrap();
    let started = start(&mut s, 0).unwrap();
    let mut next = s.upcoming(ORG_A, 2, 100, |_| true);
    next.sort();
    assert!(!next.contains(&JobId(1)) && !next.contains(&started), "only jobs still waiting: {next:?}");
}

/// Starts `n` jobs one after another, each run ending at once at the cost `cost` gives
/// its org; returns how many each org started.
fn run_costed(
    s: &mut Scheduler,
    n: usize,
    cost: impl Fn(OrgId, DefinitionId) -> u64,
) -> HashMap<JobSpecKey, usize> {
    let mut started: HashMap<JobSpecKey, usize> = HashMap::new();
    for _ in 0..n {
        let job = start(s, 0).expect("both orgs have a backlog");
        let spec = s.spec(job).unwrap();
        *started.entry((spec.org, spec.definition)).or_default() += 1;
        s.run_ended(job, cost(spec.org, spec.definition));
        s.finished(job, 0, Outcome::Succeeded).unwrap();
    }
    started
}

type JobSpecKey = (OrgId, DefinitionId);

fn backlog(s: &mut Scheduler, org: OrgId, definition: DefinitionId, from: u64, n: u64) {
    for id in from..from + n {
        s.submit(spec(id, org, Lane::Regular, definition));
    }
}

#[test]
fn turns_between_orgs_are_charged_by_cost() {
    let mut s = Scheduler::new(quotas(1_000, 1_000_000));
    backlog(&mut s, ORG_A, FLOW, 0, 10_000);
    backlog(&mut s, ORG_B, STEP, 100_000, 10_000);
    // A's jobs cost 100 times B's.
    let cost = |org: OrgId, _| if org == ORG_A { 10_000_000 } else { 100_000 };
    let started = run_costed(&mut s, 5_050, cost);
    let (a, b) = (started[&(ORG_A, FLOW)], started[&(ORG_B, STEP)]);
    // Equal cost for each: B about 100 starts for each of A's (the first estimates aside).
    assert!((45..=60).contains(&a), "A started {a}, B {b}");
    assert!(b > 4_950, "B started {b}");
    let (ca, cb) = (s.charged(ORG_A, Lane::Regular), s.charged(ORG_B, Lane::Regular));
    assert!(ca.abs_diff(cb) <= 10_000_000, "each was charged about the same: {ca} and {cb}");
}

#[test]
fn counted_in_jobs_the_costly_org_takes_every_other_turn() {
    let mut s = Scheduler::new(quotas(1_000, 1_000_000));
    s.set_fairness(Fairness::JobCount, Some(16));
    backlog(&mut s, ORG_A, FLOW, 0, 1_000);
    backlog(&mut s, ORG_B, STEP, 100_000, 1_000);
    let started = run_costed(&mut s, 1_000, |org, _| if org == ORG_A { 10_000_000 } else { 100_000 });
    assert_eq!((started[&(ORG_A, FLOW)], started[&(ORG_B, STEP)]), (500, 500));
}

#[test]
fn definitions_inside_an_org_share_its_turns_by_cost() {
    let mut s = Scheduler::new(quotas(1_000, 1_000_000));
    backlog(&mut s, ORG_A, FLOW, 0, 10_000);
    backlog(&mut s, ORG_A, STEP, 100_000, 10_000);
    let started = run_costed(&mut s, 2_020, |_, d| if d == FLOW { 5_000_000 } else { 50_000 });
    let (flow, step) = (started[&(ORG_A, FLOW)], started[&(ORG_A, STEP)]);
    assert!(
        (15..=30).contains(&flow) && step > 1_990,
        "the runaway-costly flow started {flow}, the step {step}"
    );
}

#[test]
fn an_org_back_from_idle_starts_at_the_floor_with_no_saved_credit() {
    let mut s = Scheduler::new(quotas(1_000, 1_000_000));
    backlog(&mut s, ORG_A, FLOW, 0, 1_000);
    run_costed(&mut s, 100, |_, _| 1_000_000);
    // B arrives after A was charged 100 runs: it shares from now on rather than
    // taking every turn until it has caught up.
    backlog(&mut s, ORG_B, STEP, 100_000, 1_000);
    let started = run_costed(&mut s, 100, |_, _| 1_000_000);
    let b = started[&(ORG_B, STEP)];
    assert!((45..=55).contains(&b), "B took {b} of 100 turns");
}

#[test]
fn the_last_free_slots_are_kept_for_an_org_holding_few() {
    let mut s = Scheduler::new(quotas(16, 1_000_000));
    s.set_fairness(Fairness::Cost, Some(16));
    backlog(&mut s, ORG_A, FLOW, 0, 100);
    let mut a_running = 0;
    while start(&mut s, 0).is_some() {
        a_running += 1;
    }
    assert_eq!(a_running, 14, "A alone leaves the headroom (16 / 8 slots) free");
    backlog(&mut s, ORG_B, STEP, 1_000, 10);
    let first = start(&mut s, 0).expect("B finds a slot at once");
    assert_eq!(s.spec(first).unwrap().org, ORG_B);
    let second = start(&mut s, 0).expect("B holds fewer than the headroom");
    assert_eq!(s.spec(second).unwrap().org, ORG_B);
    assert_eq!(s.next(0), None, "every slot is taken");
    // Counted in jobs, nothing is kept: A takes every slot.
    let mut s = Scheduler::new(quotas(16, 1_000_000));
    s.set_fairness(Fairness::JobCount, Some(16));
    backlog(&mut s, ORG_A, FLOW, 0, 100);
    let mut a_running = 0;
    while a_running < 16 && start(&mut s, 0).is_some() {
        a_running += 1;
    }
    assert_eq!(a_running, 16);
}

#[test]
fn a_freed_slot_goes_to_the_org_charged_least() {
    let mut s = Scheduler::new(quotas(16, 1_000_000));
    s.set_fairness(Fairness::Cost, Some(16));
    backlog(&mut s, ORG_A, FLOW, 0, 100);
    let mut running: Vec<JobId> = std::iter::from_fn(|| start(&mut s, 0)).collect();
    backlog(&mut s, ORG_B, STEP, 1_000, 100);
    running.extend(std::iter::from_fn(|| start(&mut s, 0)));
    assert_eq!(running.len(), 16);
    // A's costly runs end one by one: every slot freed past the headroom goes to B,
    // charged least; the headroom itself stays free (both hold 2 or more).
    for _ in 0..8 {
        let a_job = *running.iter().find(|j| s.spec(**j).unwrap().org == ORG_A).unwrap();
        running.retain(|j| *j != a_job);
        s.run_ended(a_job, 10_000_000);
        s.finished(a_job, 0, Outcome::Succeeded).unwrap();
        while let Some(next) = start(&mut s, 0) {
            assert_eq!(s.spec(next).unwrap().org, ORG_B);
            running.push(next);
        }
        assert!((14..=15).contains(&running.len()), "the lane stays busy but for the headroom");
    }
    assert_eq!((s.running(ORG_A, Lane::Regular), s.running(ORG_B, Lane::Regular)), (6, 8));
}

#[test]
fn a_throttled_definition_keeps_a_quarter_of_its_orgs_threads() {
    let mut s = Scheduler::new(quotas(8, 1_000_000));
    backlog(&mut s, ORG_A, FLOW, 0, 100);
    backlog(&mut s, ORG_A, STEP, 1_000, 100);
    s.set_throttled(FLOW, true);
    let started: Vec<JobId> = std::iter::from_fn(|| start(&mut s, 0)).collect();
    assert_eq!(started.len(), 8, "the org's cap is used in full");
    assert_eq!(s.running_of(ORG_A, Lane::Regular, FLOW), 2, "the runaway holds 8 / 4 threads");
    assert_eq!(s.running_of(ORG_A, Lane::Regular, STEP), 6);
    // With nothing else waiting it still runs, at its share.
    let mut s = Scheduler::new(quotas(8, 1_000_000));
    backlog(&mut s, ORG_A, FLOW, 0, 100);
    s.set_throttled(FLOW, true);
    let first: Vec<JobId> = std::iter::from_fn(|| start(&mut s, 0)).collect();
    assert_eq!(first.len(), 2, "throttled, not stopped");
    s.run_ended(first[0], 1);
    assert!(start(&mut s, 0).is_some(), "an ended run frees its share");
    s.set_throttled(FLOW, false);
    assert_eq!(std::iter::from_fn(|| start(&mut s, 0)).count(), 6, "released: the whole cap again");
}

#[test]
fn the_exempt_lane_ignores_quotas_and_still_takes_turns_between_orgs() {
    let mut s = Scheduler::new(quotas(1, 1));
    for id in 0..10 {
        s.submit(spec(id, ORG_A, Lane::Exempt, FLOW));
        s.submit(spec(100 + id, ORG_B, Lane::Exempt, STEP));
    }
    let jobs: Vec<JobId> = std::iter::from_fn(|| start(&mut s, 0)).collect();
    let started: Vec<OrgId> = jobs.iter().map(|j| s.spec(*j).unwrap().org).collect();
    assert_eq!(started.len(), 20, "no thread or throughput cap on the exempt lane");
    assert!(started.chunks(2).all(|pair| pair.contains(&ORG_A) && pair.contains(&ORG_B)), "{started:?}");
}

#[test]
fn a_held_org_starts_nothing_and_keeps_its_turn() {
    let mut s = Scheduler::new(quotas(10, 1000));
    for id in 1..=3 {
        s.submit(spec(id, ORG_A, Lane::Priority, STEP));
        s.submit(spec(10 + id, ORG_B, Lane::Priority, STEP));
    }
    s.hold(ORG_A, true);
    assert_eq!(start(&mut s, 0), Some(JobId(11)), "the other org starts");
    assert_eq!(start(&mut s, 0), Some(JobId(12)));
    s.hold(ORG_A, false);
    assert_eq!(start(&mut s, 0), Some(JobId(1)), "released, the held org has the next turn");
}

#[test]
fn postponed_jobs_are_counted_per_org_and_lane_as_their_timers_come_and_go() {
    let mut s = Scheduler::new(Quotas::default());
    let waiting = |s: &mut Scheduler, id: u64, org: OrgId, lane: Lane, until: Option<Millis>| {
        s.restore(spec(id, org, lane, STEP), Status::Waiting, 1, until);
    };
    for id in 1..=4 {
        waiting(&mut s, id, ORG_A, Lane::Priority, Some(MINUTE * id as Millis));
    }
    waiting(&mut s, 5, ORG_A, Lane::Regular, Some(MINUTE));
    waiting(&mut s, 6, ORG_A, Lane::Priority, None); // postponed forever: no timer
    waiting(&mut s, 7, ORG_B, Lane::Priority, Some(MINUTE));
    let counts = |s: &Scheduler| {
        [
            s.postponed(ORG_A, Lane::Priority),
            s.postponed(ORG_A, Lane::Regular),
            s.postponed(ORG_B, Lane::Priority),
        ]
    };
    assert_eq!(counts(&s), [4, 1, 1]);
    assert_eq!(s.cancel(JobId(2)), Ok(Status::Canceled));
    assert_eq!(s.resume(JobId(3)), Ok(Status::WaitingForResources));
    assert_eq!(s.resume(JobId(6)), Ok(Status::WaitingForResources), "no timer to clear");
    assert_eq!(counts(&s), [2, 1, 1]);
    assert_eq!(s.wake(MINUTE), vec![JobId(1), JobId(5), JobId(7)]);
    assert_eq!(counts(&s), [1, 0, 0]);
    // A run postponed again counts again, until it wakes.
    let job = loop {
        let job = start(&mut s, MINUTE).expect("ready jobs");
        if job == JobId(1) {
            break job;
        }
        s.finished(job, MINUTE, Outcome::Succeeded).unwrap();
    };
    let failing = Quotas { max_exceptions: 1, max_postponements: 5, ..Quotas::default() };
    s.set_quotas(ORG_A, Lane::Priority, failing);
    assert!(matches!(s.finished(job, MINUTE, Outcome::Exception), Ok(After::Postponed { .. })));
    assert_eq!(counts(&s), [2, 0, 0]);
    s.drop_org(ORG_A);
    assert_eq!(counts(&s), [0, 0, 0]);
    assert_eq!(s.postponed(ORG_B, Lane::Priority), 0);
}

#[test]
fn an_orgs_unfinished_jobs_are_counted_per_lane_and_status_through_every_transition() {
    let mut s = Scheduler::new(quotas(4, 1000));
    for id in 1..=4 {
        s.submit(spec(id, ORG_A, Lane::Priority, STEP));
    }
    s.submit(spec(9, ORG_B, Lane::Priority, STEP));
    // [ready, suspended, in progress, pausing, canceling]
    let counts = |s: &Scheduler| s.unfinished(ORG_A, Lane::Priority).map(|(_, n)| n);
    assert_eq!(counts(&s), [4, 0, 0, 0, 0]);
    let mut started = Vec::new();
    while let Some(job) = start(&mut s, 0) {
        started.push(job);
    }
    let of_a: Vec<JobId> = started.iter().copied().filter(|id| *id != JobId(9)).collect();
    assert_eq!(counts(&s), [0, 0, 4, 0, 0]);
    assert_eq!(s.pause(of_a[0]), Ok(Status::Pausing));
    assert_eq!(s.cancel(of_a[1]), Ok(Status::Canceling));
    assert_eq!(counts(&s), [0, 0, 2, 1, 1]);
    assert_eq!(s.finished(of_a[0], 1, Outcome::Stopped), Ok(After::Paused));
    assert_eq!(s.finished(of_a[1], 1, Outcome::Succeeded), Ok(After::Succeeded));
    assert_eq!(s.finished(of_a[2], 1, Outcome::Exception), Ok(After::Retry));
    assert_eq!(counts(&s), [1, 1, 1, 0, 0]);
    assert_eq!(s.resume(of_a[0]), Ok(Status::WaitingForResources));
    assert_eq!(s.cancel(of_a[2]), Ok(Status::Canceled));
    assert_eq!(s.finished(of_a[3], 1, Outcome::BusinessError), Ok(After::Failed));
    assert_eq!(counts(&s), [1, 0, 0, 0, 0]);
    assert_eq!(s.unfinished(ORG_B, Lane::Priority).map(|(_, n)| n), [0, 0, 1, 0, 0]);
    assert_eq!(s.unfinished(ORG_A, Lane::Regular).map(|(_, n)| n), [0; 5]);
    s.drop_org(ORG_A);
    assert_eq!(counts(&s), [0; 5]);
}

#[test]
fn a_job_submitted_or_restored_again_is_known_once() {
    let mut s = Scheduler::new(quotas(4, 1000));
    s.submit(spec(1, ORG_A, Lane::Priority, STEP));
    s.submit(spec(2, ORG_A, Lane::Priority, STEP));
    let running = start(&mut s, 0).unwrap();
    // Adopted or restored again while known: neither counted nor queued twice, and the
    // running one still running.
    s.submit(spec(1, ORG_A, Lane::Priority, STEP));
    s.restore(spec(2, ORG_A, Lane::Priority, STEP), Status::WaitingForResources, 0, None);
    let counts = |s: &Scheduler| s.unfinished(ORG_A, Lane::Priority).map(|(_, n)| n);
    assert_eq!(counts(&s), [1, 0, 1, 0, 0]);
    assert_eq!(s.running(ORG_A, Lane::Priority), 1);
    let other = start(&mut s, 0).unwrap();
    assert_ne!(other, running);
    assert_eq!(s.next(0), None, "each job queued once");
    assert_eq!(counts(&s), [0, 0, 2, 0, 0]);
}
