//! The scheduler: which job runs next, and what happens to a job after it ran.
//!
//! Pure logic with an injected clock: no I/O, no wasm, no sleeping. The service feeds it
//! submissions, finished executions and commands, asks it for the next job to start, and
//! persists what it decides; on restart the scheduler is rebuilt from the store.
//!
//! Fairness is hierarchical. Lanes take turns; within a lane, organisations with
//! runnable jobs take turns; within an organisation, definitions take turns; within a
//! definition, jobs run in submission order. A backlog therefore only delays its own
//! definition's jobs: everyone else's pickup latency is set by the number of *active*
//! organisations and definitions, not by the size of anyone's backlog.
//!
//! Turns are charged by cost ([`Fairness::Cost`], the default): the next start goes to
//! the org, and within it the definition, that has been charged least (start-time fair
//! queueing, virtual time in fuel units). A start is charged its definition's recent
//! mean cost at once and corrected to the run's real cost ([`Scheduler::run_ended`]), so
//! an org whose jobs burn 100× the fuel gets 1/100th of the starts while others wait,
//! not half of them. An org or definition that comes back after a pause starts at the
//! lane's floor (the charge of the last turn taken): it keeps its debt, never a credit.
//! And since a slot, unlike a core, cannot be taken back from a running job, the last
//! `slots / 8` free slots of a lane go only to orgs holding fewer than that many there:
//! an org arriving at a lane filled by another's long jobs finds a slot at once.
//!
//! Quotas (per organisation and lane, see [`Quotas`]) gate every start on the priority
//! and regular lanes: the thread cap and the fixed throughput window. Exceptions are
//! counted per job within the exception window; past the count the job is postponed for
//! D × n minutes, and after the maximum number of postponements, forever.

mod lane;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ops::Bound;

use lane::LaneQueue;
use sluice_core::jobs::{DefinitionId, IdMap, IdSet, JobId, Lane, Millis, OrgId, Quotas, Status};

/// How turns between orgs, and between an org's definitions, are counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fairness {
    /// By what each job cost (fuel, with host-call time folded in), with headroom for
    /// newcomers in a full lane. The default.
    #[default]
    Cost,
    /// One turn per job, whatever it costs, and no headroom (round robin): what job
    /// systems that cap per key do; kept to measure against.
    JobCount,
}

/// A throttled definition may hold this fraction (1/4) of its org's thread cap on the
/// lane, at least one thread: it keeps running, slowly, while the org's other
/// definitions have the rest.
pub const THROTTLED_SHARE: u32 = 4;

/// The statuses of a job the scheduler holds, in the order it counts them per org and
/// lane ([`Scheduler::unfinished`]).
pub const UNFINISHED: [Status; 5] =
    [Status::WaitingForResources, Status::Waiting, Status::InProgress, Status::Pausing, Status::Canceling];

/// A new definition's first jobs are charged this, in fuel units, until runs of it have
/// ended (about a trivial plug-in's cost).
pub const FIRST_ESTIMATE: u64 = 50_000;

/// Fuel units charged per microsecond spent in host calls (about what a guest burns in
/// that time): waiting on a host call holds a slot as long as computing would.
pub const FUEL_PER_HOST_MICROSECOND: u64 = 1_000;

/// What one run cost, for turns: its fuel (host calls' work included) and its time in
/// host calls.
pub fn cost_of(accounting: &sluice_core::run::Accounting) -> u64 {
    accounting.fuel_used.saturating_add(accounting.host_time_us.saturating_mul(FUEL_PER_HOST_MICROSECOND))
}

/// What the scheduler needs to know of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    pub id: JobId,
    pub org: OrgId,
    pub lane: Lane,
    pub definition: DefinitionId,
    /// Jobs sharing a token run one after another, in submission order.
    pub dependency_token: Option<String>,
}

/// How an execution ended, as far as scheduling is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// The plug-in refused the operation: failed, never retried.
    BusinessError,
    /// Anything else that went wrong: counted, retried, postponed.
    Exception,
    /// The execution was stopped because of a cancel or pause request.
    Stopped,
    /// The node running it died; the job runs again (no exception is counted).
    Rescued,
}

/// What the scheduler decided about a job: the service persists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start this job now.
    Start(JobId),
    /// Picked up, but its definition was deactivated: canceled without running.
    CanceledOnPickup(JobId),
}

/// Where a job went after it finished running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Succeeded,
    Failed,
    /// Back to WaitingForResources for another try.
    Retry,
    /// Suspended until `until` (the `count`-th postponement).
    Postponed {
        until: Millis,
        count: u32,
    },
    /// Suspended with no end: only resume or cancel moves it.
    PostponedForever {
        count: u32,
    },
    /// Suspended by a pause; resume moves it.
    Paused,
    Canceled,
    /// Back in the queue after its node died.
    Requeued,
}

/// Why a command was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no such job")]
    UnknownJob,
    #[error("the job is {0:?}, which does not allow this")]
    NotAllowed(Status),
}

/// A job's scheduling state.
#[derive(Debug, Clone)]
struct Entry {
    definition: DefinitionId,
    /// What its start was charged (its definition's estimate then).
    charged: u64,
    org: OrgId,
    lane: Lane,
    status: Status,
    /// In a definition queue and counted as ready (a job behind its dependency token is not).
    queued: bool,
    /// Its run has ended and its thread is counted free ([`Scheduler::run_ended`]),
    /// though where it goes is not decided yet.
    run_ended: bool,
    /// What few jobs have. A node holds an entry per waiting job (a million, for a
    /// large backlog), so the common one stays at 32 bytes: with these inline it was
    /// about 120, and the driver's lookups missed the cache more.
    rare: Option<Box<Rare>>,
}

// The size the comment on `rare` promises.
const _: () = assert!(std::mem::size_of::<Entry>() <= 32);

/// The parts of a job's entry that most jobs never use.
#[derive(Debug, Clone, Default)]
struct Rare {
    dependency_token: Option<String>,
    /// When its recent exceptions happened (within the exception window).
    failures: VecDeque<Millis>,
    postponements: u32,
    postpone_until: Option<Millis>,
}

impl Entry {
    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    fn postpone_until(&self) -> Option<Millis> {
        self.rare.as_ref().and_then(|r| r.postpone_until)
    }

    fn dependency_token(&self) -> Option<&String> {
        self.rare.as_ref().and_then(|r| r.dependency_token.as_ref())
    }

    fn spec(&self, id: JobId) -> JobSpec {
        JobSpec {
            id,
            org: self.org,
            lane: self.lane,
            definition: self.definition,
            dependency_token: self.dependency_token().cloned(),
        }
    }
}

#[derive(Default)]
pub struct Scheduler {
    default_quotas: Quotas,
    quotas: IdMap<(OrgId, Lane), Quotas>,
    lanes: IdMap<(OrgId, Lane), LaneQueue>,
    /// Per lane, the organisations with ready jobs, by what they have been charged there.
    rings: [BTreeSet<(u64, OrgId)>; 3],
    /// Per lane, the charge of the org that took the last turn.
    floors: [u64; 3],
    fairness: Fairness,
    /// A lane's slots on this node, when the caller bounds them (headroom needs it).
    slots: Option<u32>,
    /// Per lane, jobs in progress (all orgs).
    lane_running: [u32; 3],
    /// Per definition, the recent mean cost of its runs.
    estimates: IdMap<DefinitionId, u64>,
    /// Definitions throttled as runaways: each may have at most a [`THROTTLED_SHARE`]
    /// of its org's lane threads in progress.
    throttled: IdSet<DefinitionId>,
    next_lane: usize,
    jobs: IdMap<JobId, Entry>,
    /// Postponed jobs by the time they wake.
    timers: BTreeSet<(Millis, JobId)>,
    /// Jobs per dependency token of an org (orgs never share a chain), in submission
    /// order; the first may run.
    chains: HashMap<(OrgId, String), VecDeque<JobId>>,
    deactivated: IdSet<DefinitionId>,
    /// Orgs whose jobs are not started any more: this node is handing them to another.
    draining: IdSet<OrgId>,
    /// Orgs whose jobs start only from a time on (see [`Scheduler::start_from`]).
    starting_from: IdMap<OrgId, Millis>,
    /// Orgs whose jobs wait to start until the store has caught up with their ends (see
    /// [`Scheduler::hold`]).
    held: IdSet<OrgId>,
    /// Orgs and lanes whose ready job a quota held back since the last `take_held_back`,
    /// with the quota (for the throttling metrics; one entry per refusal).
    held_back: Vec<(OrgId, Lane, &'static str)>,
}

impl Scheduler {
    /// The quota refusals since the last call.
    pub fn take_held_back(&mut self) -> Vec<(OrgId, Lane, &'static str)> {
        std::mem::take(&mut self.held_back)
    }

    /// Jobs of the org and lane held here in each unfinished status (none of a finished
    /// one: those are forgotten once stored), in [`UNFINISHED`]'s order.
    pub fn unfinished(&self, org: OrgId, lane: Lane) -> [(Status, u64); 5] {
        let counts = self.lanes.get(&(org, lane)).map_or([0; 5], |q| q.by_status);
        std::array::from_fn(|i| (UNFINISHED[i], counts[i]))
    }

    /// Moves a job of the org and lane between statuses in the counts.
    fn restatus(&mut self, org: OrgId, lane: Lane, from: Option<Status>, to: Status) {
        self.lanes.entry((org, lane)).or_default().restatus(from, to);
    }

    /// Jobs of the org and lane postponed until a time (not paused or postponed forever).
    /// Counted as timers are set and cleared: walking the timers, every org's, took
    /// time in proportion to all the postponed jobs of the node, under the lock the
    /// driver needs, at each refresh of any org's health.
    pub fn postponed(&self, org: OrgId, lane: Lane) -> u64 {
        self.lanes.get(&(org, lane)).map_or(0, |q| q.postponed)
    }

    /// Sets the timer of a job of the org and lane postponed until `until`.
    fn set_timer(&mut self, org: OrgId, lane: Lane, until: Millis, job: JobId) {
        self.timers.insert((until, job));
        self.lanes.entry((org, lane)).or_default().postponed += 1;
    }

    /// Clears the timer a job was postponed with.
    fn clear_timer(&mut self, org: OrgId, lane: Lane, until: Millis, job: JobId) {
        self.timers.remove(&(until, job));
        self.count_woken(org, lane);
    }

    /// A postponed job of the org and lane is not any more (its timer is gone).
    fn count_woken(&mut self, org: OrgId, lane: Lane) {
        if let Some(queue) = self.lanes.get_mut(&(org, lane)) {
            queue.postponed = queue.postponed.saturating_sub(1);
        }
    }

    /// Queued jobs of one org and lane per definition.
    pub fn queued_by_definition(&self, org: OrgId, lane: Lane) -> Vec<(DefinitionId, usize)> {
        self.lanes.get(&(org, lane)).map(|q| q.queued_by_definition().collect()).unwrap_or_default()
    }

    pub fn new(default_quotas: Quotas) -> Self {
        Scheduler { default_quotas, ..Default::default() }
    }

    /// How turns are counted, and the slots each lane has on this node (`None`: the
    /// caller does not bound them, so no headroom is kept).
    pub fn set_fairness(&mut self, fairness: Fairness, slots: Option<u32>) {
        self.fairness = fairness;
        self.slots = slots;
    }

    /// The free slots of a lane kept for orgs holding fewer than that many there.
    fn headroom(&self) -> u32 {
        match (self.fairness, self.slots) {
            (Fairness::Cost, Some(slots)) => slots / 8,
            _ => 0,
        }
    }

    /// What an org has been charged on a lane (virtual time, fuel units).
    pub fn charged(&self, org: OrgId, lane: Lane) -> u64 {
        self.lanes.get(&(org, lane)).map_or(0, |q| q.charged)
    }

    pub fn set_quotas(&mut self, org: OrgId, lane: Lane, quotas: Quotas) {
        self.quotas.insert((org, lane), quotas);
    }

    pub fn quotas(&self, org: OrgId, lane: Lane) -> Quotas {
        self.quotas.get(&(org, lane)).copied().unwrap_or(self.default_quotas)
    }

    /// A new job, ready to run (or waiting behind its dependency token).
    pub fn submit(&mut self, spec: JobSpec) {
        let id = spec.id;
        if self.jobs.contains_key(&id) {
            // Known already (a job adopted or restored twice): as it is, counted once.
            return;
        }
        let first_in_chain = match &spec.dependency_token {
            Some(token) => {
                let chain = self.chains.entry((spec.org, token.clone())).or_default();
                chain.push_back(id);
                chain.len() == 1
            }
            None => true,
        };
        let JobSpec { org, lane, definition, dependency_token, .. } = spec;
        let rare =
            dependency_token.map(|token| Box::new(Rare { dependency_token: Some(token), ..Rare::default() }));
        let entry = Entry {
            definition,
            charged: 0,
            org,
            lane,
            status: Status::WaitingForResources,
            queued: false,
            run_ended: false,
            rare,
        };
        self.jobs.insert(id, entry);
        self.restatus(org, lane, None, Status::WaitingForResources);
        if first_in_chain {
            self.enqueue(id);
        }
    }

    /// A job read back from the store after a restart, in the state it was left in.
    /// A job that was running is requeued: its execution died with the node.
    pub fn restore(
        &mut self,
        spec: JobSpec,
        status: Status,
        postponements: u32,
        postpone_until: Option<Millis>,
    ) {
        let id = spec.id;
        if status.is_terminal() || self.jobs.contains_key(&id) {
            return;
        }
        self.submit(spec);
        let entry = self.jobs.get_mut(&id).expect("just submitted");
        if postponements > 0 {
            entry.rare().postponements = postponements;
        }
        if status == Status::Waiting {
            self.dequeue(id);
            let entry = self.jobs.get_mut(&id).expect("just submitted");
            entry.status = Status::Waiting;
            let (org, lane) = (entry.org, entry.lane);
            if let Some(until) = postpone_until {
                entry.rare().postpone_until = Some(until);
                self.set_timer(org, lane, until, id);
            }
            self.restatus(org, lane, Some(Status::WaitingForResources), Status::Waiting);
        }
    }

    /// When a job's recent exceptions happened (those still counted), oldest first.
    pub fn exceptions(&self, job: JobId) -> Vec<Millis> {
        self.jobs
            .get(&job)
            .and_then(|e| e.rare.as_ref())
            .map(|r| r.failures.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Gives a restored job back the exceptions it had (so a restart keeps counting).
    pub fn restore_exceptions(&mut self, job: JobId, times: &[Millis]) {
        if let Some(entry) = self.jobs.get_mut(&job).filter(|_| !times.is_empty()) {
            entry.rare().failures = times.iter().copied().collect();
        }
    }

    /// Queued jobs of the org likely to start soon that the caller `wants`: among the
    /// first `per_definition` of each of its definitions' queues, on every lane, those
    /// still waiting; at most `limit` in all. What is not wanted (a payload already in
    /// memory) is skipped before the limit, so a job missing deep in a later queue is
    /// found however many are in memory ahead of it.
    pub fn upcoming(
        &self,
        org: OrgId,
        per_definition: usize,
        limit: usize,
        wanted: impl Fn(JobId) -> bool,
    ) -> Vec<JobId> {
        Lane::ALL
            .iter()
            .filter_map(|lane| self.lanes.get(&(org, *lane)))
            .flat_map(|queue| queue.upcoming(per_definition))
            .filter(|job| self.status(*job) == Some(Status::WaitingForResources) && wanted(*job))
            .take(limit)
            .collect()
    }

    /// From each of the org's definition queues, the waiting job `depth` places from its
    /// front (or its last): where a read ahead of the queues' payloads must reach.
    pub fn at_depth(&self, org: OrgId, depth: usize) -> impl Iterator<Item = JobId> + '_ {
        Lane::ALL
            .iter()
            .filter_map(move |lane| self.lanes.get(&(org, *lane)))
            .flat_map(move |queue| queue.at_depth(depth))
            .filter(|job| self.status(*job) == Some(Status::WaitingForResources))
    }

    /// The status the scheduler holds for a job (`None` once forgotten or unknown).
    pub fn status(&self, job: JobId) -> Option<Status> {
        self.jobs.get(&job).map(|e| e.status)
    }

    /// What the scheduler knows of a job it holds.
    pub fn spec(&self, job: JobId) -> Option<JobSpec> {
        self.jobs.get(&job).map(|e| e.spec(job))
    }

    /// The org, lane and definition of a job it holds (what [`Scheduler::spec`] says,
    /// without copying a dependency token).
    pub fn owner(&self, job: JobId) -> Option<(OrgId, Lane, DefinitionId)> {
        self.jobs.get(&job).map(|e| (e.org, e.lane, e.definition))
    }

    /// Jobs of the org and lane in progress now.
    pub fn running(&self, org: OrgId, lane: Lane) -> u32 {
        self.lanes.get(&(org, lane)).map_or(0, |q| q.running)
    }

    /// Jobs of the org and lane waiting for resources (ready to start).
    pub fn ready(&self, org: OrgId, lane: Lane) -> u64 {
        self.lanes.get(&(org, lane)).map_or(0, |q| q.ready)
    }

    /// Starts of the org and lane counted in the throughput window that contains `now`.
    pub fn starts_in_window(&self, org: OrgId, lane: Lane, now: Millis) -> u32 {
        let window = now.div_euclid(self.quotas(org, lane).throughput_window());
        self.lanes.get(&(org, lane)).filter(|q| q.window == window).map_or(0, |q| q.starts)
    }

    /// When the next postponed job wakes, or an org may start again, for the driver's
    /// timer.
    pub fn next_wake(&self) -> Option<Millis> {
        let org_starts = self.starting_from.values().min().copied();
        self.timers.first().map(|(at, _)| *at).into_iter().chain(org_starts).min()
    }

    /// The next throughput window start after `now` for any quota-blocked lane, so the
    /// driver knows when waiting jobs can start again.
    pub fn next_window(&self, now: Millis) -> Option<Millis> {
        self.lanes
            .iter()
            .filter(|(_, q)| q.ready > 0)
            .map(|((org, lane), _)| {
                let window = self.quotas(*org, *lane).throughput_window();
                (now.div_euclid(window) + 1) * window
            })
            .min()
    }

    /// Moves postponed jobs whose time has come back to WaitingForResources.
    pub fn wake(&mut self, now: Millis) -> Vec<JobId> {
        if !self.starting_from.is_empty() {
            self.starting_from.retain(|_, from| *from > now);
        }
        let mut woken = Vec::new();
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            let Some(entry) = self.jobs.get_mut(&id) else { continue };
            if entry.status == Status::Waiting && entry.postpone_until() == Some(at) {
                entry.status = Status::WaitingForResources;
                entry.rare().postpone_until = None;
                let (org, lane) = (entry.org, entry.lane);
                self.count_woken(org, lane);
                self.restatus(org, lane, Some(Status::Waiting), Status::WaitingForResources);
                self.enqueue(id);
                woken.push(id);
            }
        }
        woken
    }

    /// The next job to start at `now`, or a queued job of a deactivated definition to
    /// cancel; `None` when nothing may start (no work, or every org is at its quota).
    pub fn next(&mut self, now: Millis) -> Option<Decision> {
        for _ in 0..Lane::ALL.len() {
            let lane = Lane::ALL[self.next_lane];
            if let Some(decision) = self.next_in_lane(lane, now) {
                if matches!(decision, Decision::Start(_)) {
                    self.next_lane = (self.next_lane + 1) % Lane::ALL.len();
                }
                return Some(decision);
            }
            self.next_lane = (self.next_lane + 1) % Lane::ALL.len();
        }
        None
    }

    /// The next job of one lane (for a node whose lanes have slots of their own).
    pub fn next_in_lane(&mut self, lane: Lane, now: Millis) -> Option<Decision> {
        let li = lane.index();
        let headroom = self.headroom();
        let in_headroom =
            self.slots.is_some_and(|slots| slots.saturating_sub(self.lane_running[li]) <= headroom);
        let mut after: Option<(u64, OrgId)> = None;
        loop {
            let key = match after {
                None => self.rings[li].first().copied(),
                Some(k) => self.rings[li].range((Bound::Excluded(k), Bound::Unbounded)).next().copied(),
            }?;
            after = Some(key);
            let org = key.1;
            let quotas = self.quotas(org, lane);
            let draining = self.draining.contains(&org);
            // (Empty but for a moment after a takeover: checked first, on the dequeue path.)
            if (!self.starting_from.is_empty()
                && self.starting_from.get(&org).is_some_and(|from| now < *from))
                || self.held.contains(&org)
            {
                // Stays in the ring: its turn comes again once the time is reached.
                continue;
            }
            let queue = self.lanes.get_mut(&(org, lane)).expect("an org in the ring has a lane queue");
            if queue.ready == 0 || draining {
                queue.in_ring = false;
                self.rings[li].remove(&key);
                continue;
            }
            let jobs = &self.jobs;
            let deactivated = &self.deactivated;
            let live = |id: JobId| jobs.get(&id).is_some_and(|e| e.queued);
            let throttled = &self.throttled;
            let throttled_cap = (quotas.max_threads / THROTTLED_SHARE).max(1);
            let allowed = |d: DefinitionId, running: u32| {
                !throttled.contains(&d) || running < throttled_cap || deactivated.contains(&d)
            };
            // A job of a deactivated definition is canceled when its turn comes even if the
            // org is at its quota: canceling costs no thread and no start.
            let cancelable = || {
                queue
                    .peek(&allowed, live)
                    .and_then(|id| jobs.get(&id))
                    .is_some_and(|e| deactivated.contains(&e.definition))
            };
            if !throttled.is_empty() && !queue.has_turn(&allowed) {
                // Every definition with jobs waiting is throttled and at its share.
                self.held_back.push((org, lane, "runaway-throttled"));
                continue;
            }
            if lane != Lane::Exempt
                && let Some(quota) = queue.held_back_by(&quotas, now)
                && !cancelable()
            {
                self.held_back.push((org, lane, quota));
                continue;
            }
            if in_headroom && queue.running >= headroom && !cancelable() {
                continue;
            }
            self.rings[li].remove(&key);
            let (estimates, fairness) = (&self.estimates, self.fairness);
            let estimate = |d: DefinitionId| estimate_of(estimates, fairness, d);
            let picked = queue.pop(estimate, allowed, live);
            let Some(id) = picked else {
                queue.in_ring = false;
                continue;
            };
            let entry = self.jobs.get_mut(&id).expect("a queued job has an entry");
            entry.queued = false;
            let canceled = self.deactivated.contains(&entry.definition);
            let cost = if canceled { 0 } else { estimate(entry.definition) };
            entry.charged = cost;
            self.floors[li] = self.floors[li].max(queue.charged);
            queue.charged = queue.charged.saturating_add(cost);
            if queue.ready > 0 {
                self.rings[li].insert((queue.charged, org));
            } else {
                queue.in_ring = false;
            }
            if canceled {
                // The definition was charged an estimate for a job that never runs.
                let definition = entry.definition;
                entry.status = Status::Canceled;
                let queue = self.lanes.get_mut(&(org, lane)).expect("still there");
                queue.restatus(Some(Status::WaitingForResources), Status::Canceled);
                queue.correct(definition, estimate_of(&self.estimates, fairness, definition), 0);
                self.finish_chain(id);
                return Some(Decision::CanceledOnPickup(id));
            }
            entry.status = Status::InProgress;
            let definition = entry.definition;
            let queue = self.lanes.get_mut(&(org, lane)).expect("still there");
            queue.restatus(Some(Status::WaitingForResources), Status::InProgress);
            queue.count_start(definition, &quotas, now);
            self.lane_running[li] += 1;
            return Some(Decision::Start(id));
        }
    }

    /// A started job's execution has ended: its thread counts as free for its org's
    /// next job at once, before [`Scheduler::finished`] decides where it goes (which
    /// waits for the round's turn at the store's writer). An org's thread cap bounds the
    /// executions under way, not the commits behind them.
    ///
    /// `cost` is what the run cost ([`cost_of`]): its org and definition are charged
    /// that instead of the estimate their turn was charged at its start, and the
    /// definition's estimate moves toward it.
    pub fn run_ended(&mut self, job: JobId, cost: u64) {
        let Some(entry) = self.jobs.get_mut(&job) else { return };
        if entry.run_ended
            || !matches!(entry.status, Status::InProgress | Status::Pausing | Status::Canceling)
        {
            return;
        }
        entry.run_ended = true;
        let (org, lane, definition) = (entry.org, entry.lane, entry.definition);
        let charged = std::mem::take(&mut entry.charged);
        self.release_thread(org, lane, definition);
        if self.fairness == Fairness::JobCount {
            return;
        }
        let estimate = self.estimates.entry(definition).or_insert(cost);
        // A mean over about the last 8 runs: quick to follow a definition that turns
        // costly, steady over the noise of one run.
        *estimate = (*estimate * 7 + cost) / 8;
        let li = lane.index();
        if let Some(queue) = self.lanes.get_mut(&(org, lane)) {
            let in_ring = queue.in_ring && self.rings[li].remove(&(queue.charged, org));
            queue.charged = queue.charged.saturating_sub(charged).saturating_add(cost);
            queue.correct(definition, charged, cost);
            if in_ring {
                self.rings[li].insert((queue.charged, org));
            }
        }
    }

    /// One of the org's threads on the lane is free.
    fn release_thread(&mut self, org: OrgId, lane: Lane, definition: DefinitionId) {
        if let Some(queue) = self.lanes.get_mut(&(org, lane)) {
            queue.count_end(definition);
        }
        self.lane_running[lane.index()] = self.lane_running[lane.index()].saturating_sub(1);
    }

    /// Records how a started job's execution ended and decides where it goes.
    pub fn finished(&mut self, job: JobId, now: Millis, outcome: Outcome) -> Result<After, Refusal> {
        let entry = self.jobs.get_mut(&job).ok_or(Refusal::UnknownJob)?;
        let was = entry.status;
        if !matches!(was, Status::InProgress | Status::Pausing | Status::Canceling) {
            return Err(Refusal::NotAllowed(was));
        }
        let (org, lane, definition) = (entry.org, entry.lane, entry.definition);
        let counted = !std::mem::take(&mut entry.run_ended);
        let quotas = self.quotas(org, lane);
        if counted {
            self.release_thread(org, lane, definition);
        }
        let entry = self.jobs.get_mut(&job).expect("checked above");
        let after = match (outcome, was) {
            (Outcome::Succeeded, _) => After::Succeeded,
            (Outcome::BusinessError, _) => After::Failed,
            (_, Status::Canceling) => After::Canceled,
            (Outcome::Rescued, _) => After::Requeued,
            (_, Status::Pausing) | (Outcome::Stopped, _) => After::Paused,
            (Outcome::Exception, _) => {
                let rare = entry.rare();
                rare.failures.push_back(now);
                let window_start = now - quotas.exception_window();
                while rare.failures.front().is_some_and(|at| *at <= window_start) {
                    rare.failures.pop_front();
                }
                if (rare.failures.len() as u32) < quotas.max_exceptions.max(1) {
                    After::Retry
                } else {
                    rare.failures.clear();
                    rare.postponements += 1;
                    let count = rare.postponements;
                    if count > quotas.max_postponements {
                        After::PostponedForever { count }
                    } else {
                        After::Postponed { until: now + quotas.postponement(count), count }
                    }
                }
            }
        };
        match after {
            After::Succeeded | After::Failed | After::Canceled => {
                entry.status = match after {
                    After::Succeeded => Status::Succeeded,
                    After::Failed => Status::Failed,
                    _ => Status::Canceled,
                };
                self.finish_chain(job);
            }
            After::Retry | After::Requeued => {
                entry.status = Status::WaitingForResources;
                self.enqueue_with(job, true);
            }
            After::Postponed { until, .. } => {
                entry.status = Status::Waiting;
                entry.rare().postpone_until = Some(until);
                let (org, lane) = (entry.org, entry.lane);
                self.set_timer(org, lane, until, job);
            }
            After::PostponedForever { .. } | After::Paused => {
                entry.status = Status::Waiting;
                if let Some(rare) = &mut entry.rare {
                    rare.postpone_until = None;
                }
            }
        }
        if let Some(now_status) = self.jobs.get(&job).map(|e| e.status) {
            self.restatus(org, lane, Some(was), now_status);
        }
        Ok(after)
    }

    /// Cancels a job: at once if it is not running (Ready, Suspended), else it becomes
    /// Canceling and the service stops its execution. Returns the new status.
    pub fn cancel(&mut self, job: JobId) -> Result<Status, Refusal> {
        let entry = self.jobs.get_mut(&job).ok_or(Refusal::UnknownJob)?;
        match entry.status {
            Status::WaitingForResources | Status::Waiting => {
                let (org, lane, was) = (entry.org, entry.lane, entry.status);
                if let Some(until) = entry.rare.as_mut().and_then(|r| r.postpone_until.take()) {
                    self.clear_timer(org, lane, until, job);
                }
                self.dequeue(job);
                self.restatus(org, lane, Some(was), Status::Canceled);
                let entry = self.jobs.get_mut(&job).expect("checked above");
                entry.status = Status::Canceled;
                self.finish_chain(job);
                Ok(Status::Canceled)
            }
            Status::InProgress | Status::Pausing => {
                let (org, lane, was) = (entry.org, entry.lane, entry.status);
                entry.status = Status::Canceling;
                self.restatus(org, lane, Some(was), Status::Canceling);
                Ok(Status::Canceling)
            }
            other => Err(Refusal::NotAllowed(other)),
        }
    }

    /// Asks a running job to pause: it stops at its next yield and is suspended.
    pub fn pause(&mut self, job: JobId) -> Result<Status, Refusal> {
        let entry = self.jobs.get_mut(&job).ok_or(Refusal::UnknownJob)?;
        match entry.status {
            Status::InProgress => {
                entry.status = Status::Pausing;
                let (org, lane) = (entry.org, entry.lane);
                self.restatus(org, lane, Some(Status::InProgress), Status::Pausing);
                Ok(Status::Pausing)
            }
            other => Err(Refusal::NotAllowed(other)),
        }
    }

    /// Resumes a suspended job (postponed, postponed forever, or paused): it is ready
    /// again with a fresh exception count. Its postponement count is kept.
    pub fn resume(&mut self, job: JobId) -> Result<Status, Refusal> {
        let entry = self.jobs.get_mut(&job).ok_or(Refusal::UnknownJob)?;
        if entry.status != Status::Waiting {
            return Err(Refusal::NotAllowed(entry.status));
        }
        let (org, lane) = (entry.org, entry.lane);
        if let Some(rare) = &mut entry.rare {
            let until = rare.postpone_until.take();
            rare.failures.clear();
            if let Some(until) = until {
                self.clear_timer(org, lane, until, job);
            }
        }
        let entry = self.jobs.get_mut(&job).expect("checked above");
        entry.status = Status::WaitingForResources;
        self.restatus(org, lane, Some(Status::Waiting), Status::WaitingForResources);
        self.enqueue(job);
        Ok(Status::WaitingForResources)
    }

    /// Stops new starts of a definition's queued jobs: each is canceled when picked up
    /// (O(1) now, no scan of the backlog). Running jobs finish normally.
    pub fn deactivate(&mut self, definition: DefinitionId) {
        self.deactivated.insert(definition);
    }

    pub fn activate(&mut self, definition: DefinitionId) {
        self.deactivated.remove(&definition);
    }

    /// Throttles a runaway definition to a [`THROTTLED_SHARE`] of its org's lane threads
    /// (`false`: releases it). Not stopped: its jobs keep starting, fewer at once.
    pub fn set_throttled(&mut self, definition: DefinitionId, throttled: bool) {
        if throttled {
            self.throttled.insert(definition);
        } else {
            self.throttled.remove(&definition);
        }
    }

    /// Jobs of one definition in progress on a lane of its org.
    pub fn running_of(&self, org: OrgId, lane: Lane, definition: DefinitionId) -> u32 {
        self.lanes.get(&(org, lane)).map_or(0, |q| q.running_of(definition))
    }

    /// Forgets everything of an org (this node no longer holds it: another node runs its
    /// jobs now); returns the jobs it held, so that running ones can be stopped. The
    /// org's quotas stay (they are the operator's, not the node's).
    pub fn drop_org(&mut self, org: OrgId) -> Vec<JobId> {
        let dropped: Vec<JobId> = self.jobs.iter().filter(|(_, e)| e.org == org).map(|(id, _)| *id).collect();
        for id in &dropped {
            if let Some(entry) = self.jobs.remove(id)
                && let Some(until) = entry.postpone_until()
            {
                self.timers.remove(&(until, *id));
            }
        }
        for lane in Lane::ALL {
            if let Some(queue) = self.lanes.remove(&(org, lane)) {
                let running = &mut self.lane_running[lane.index()];
                *running = running.saturating_sub(queue.running);
            }
        }
        for ring in &mut self.rings {
            ring.retain(|(_, o)| *o != org);
        }
        self.chains.retain(|(o, _), _| *o != org);
        self.draining.remove(&org);
        self.starting_from.remove(&org);
        self.held.remove(&org);
        dropped
    }

    /// Stops (or resumes) starting an org's jobs: a node hands an org to another once
    /// its running jobs are done.
    pub fn set_draining(&mut self, org: OrgId, draining: bool) {
        if draining {
            self.draining.insert(org);
            return;
        }
        if self.draining.remove(&org) {
            for lane in Lane::ALL {
                if let Some(queue) = self.lanes.get_mut(&(org, lane))
                    && queue.ready > 0
                    && !queue.in_ring
                {
                    queue.in_ring = true;
                    queue.charged = queue.charged.max(self.floors[lane.index()]);
                    self.rings[lane.index()].insert((queue.charged, org));
                }
            }
        }
    }

    /// Holds an org's jobs back from starting (`false`: lets them start again), keeping
    /// its place in the turns: its ends wait for the store's writer, and starting more
    /// would only add to them.
    pub fn hold(&mut self, org: OrgId, held: bool) {
        if held {
            self.held.insert(org);
        } else {
            self.held.remove(&org);
        }
    }

    /// Starts none of an org's jobs before `at`. A node that takes an org over whose
    /// clock is behind the last holder's waits for it, so that the stored times of the
    /// org's runs stay in order across the handover.
    pub fn start_from(&mut self, org: OrgId, at: Millis) {
        self.starting_from.insert(org, at);
    }

    /// Jobs of the org in progress now, on every lane.
    pub fn running_in_org(&self, org: OrgId) -> u32 {
        Lane::ALL.iter().map(|lane| self.running(org, *lane)).sum()
    }

    /// Gives an org's lane the starts already made in the current throughput window (by
    /// the node that held it before), so the window's cap holds across the handover.
    pub fn restore_window(&mut self, org: OrgId, lane: Lane, now: Millis, starts: u32) {
        let quotas = self.quotas(org, lane);
        let queue = self.lanes.entry((org, lane)).or_default();
        queue.window = now.div_euclid(quotas.throughput_window());
        queue.starts = starts;
    }

    /// Forgets a terminal job (after the service persisted it).
    pub fn forget(&mut self, job: JobId) {
        if self.jobs.get(&job).is_some_and(|e| e.status.is_terminal()) {
            self.jobs.remove(&job);
        }
    }

    fn enqueue(&mut self, job: JobId) {
        self.enqueue_with(job, false);
    }

    /// Queues a ready job: at the back of its definition's queue, or at the front (and
    /// with the definition's turn next) for a retry.
    fn enqueue_with(&mut self, job: JobId, retry: bool) {
        let entry = self.jobs.get_mut(&job).expect("enqueue of a known job");
        if entry.queued || entry.status != Status::WaitingForResources {
            return;
        }
        entry.queued = true;
        let (org, lane, definition) = (entry.org, entry.lane, entry.definition);
        let queue = self.lanes.entry((org, lane)).or_default();
        if retry {
            queue.push_front(definition, job);
        } else {
            queue.push(definition, job);
        }
        if !queue.in_ring {
            queue.in_ring = true;
            queue.charged = queue.charged.max(self.floors[lane.index()]);
            self.rings[lane.index()].insert((queue.charged, org));
        }
    }

    /// Takes a queued job out of the ready count; its queue slot is skipped when reached.
    fn dequeue(&mut self, job: JobId) {
        let entry = self.jobs.get_mut(&job).expect("dequeue of a known job");
        if std::mem::take(&mut entry.queued) {
            let key = (entry.org, entry.lane);
            if let Some(queue) = self.lanes.get_mut(&key) {
                queue.ready -= 1;
            }
        }
    }

    /// A job reached a terminal status: it leaves its dependency chain, and if it was
    /// the chain's head, the next job may run.
    fn finish_chain(&mut self, job: JobId) {
        let Some(key) =
            self.jobs.get(&job).and_then(|e| e.dependency_token().map(|token| (e.org, token.clone())))
        else {
            return;
        };
        let Some(chain) = self.chains.get_mut(&key) else { return };
        let was_head = chain.front() == Some(&job);
        chain.retain(|id| *id != job);
        match chain.front().copied() {
            Some(next) if was_head => self.enqueue(next),
            Some(_) => {}
            None => {
                self.chains.remove(&key);
            }
        }
    }
}

/// What a start of `definition` is charged before its run's cost is known.
fn estimate_of(estimates: &IdMap<DefinitionId, u64>, fairness: Fairness, definition: DefinitionId) -> u64 {
    match fairness {
        Fairness::Cost => estimates.get(&definition).copied().unwrap_or(FIRST_ESTIMATE),
        Fairness::JobCount => 1,
    }
}
