//! A deterministic simulation: a million jobs through the scheduler, across many orgs,
//! definitions and lanes, with random failures, cancels, pauses, deactivations and node
//! deaths, checking the invariants after every step. Reproducible from a seed:
//! `SLUICE_SIM_SEED=n cargo test --release -p sluice --test all scheduler_simulation`.

use std::collections::{BTreeMap, HashMap, HashSet};

use sluice::jobs::{DefinitionId, JobId, Lane, MINUTE, Millis, OrgId, Quotas, Status};
use sluice::scheduler::{After, Decision, JobSpec, Outcome, Scheduler};

use crate::support::{Rng, simulated_jobs};

const ORGS: u32 = 24;
const DEFINITIONS: u64 = 96;
const NODES: usize = 3;
const SLOTS_PER_NODE: usize = 24;

struct Definition {
    org: OrgId,
    lane: Lane,
    /// Out of 1,000,000: how often its runs end in an exception.
    exception_rate: u64,
    business_rate: u64,
}

/// What the test knows independently of the scheduler, to check it against.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Known {
    Ready,
    Running { node: usize },
    Postponed { until: Millis },
    Forever,
    Paused,
    Done(Status),
}

struct World {
    rng: Rng,
    scheduler: Scheduler,
    quotas: HashMap<(OrgId, Lane), Quotas>,
    definitions: Vec<Definition>,
    jobs: Vec<Known>,
    job_definition: Vec<u32>,
    /// The dependency token of each job, if any.
    job_token: Vec<Option<u16>>,
    postponements: Vec<u32>,
    running: HashMap<(OrgId, Lane), u32>,
    starts: HashMap<(OrgId, Lane, i64), u32>,
    cancel_requested: HashSet<JobId>,
    pause_requested: HashSet<JobId>,
    deactivated: HashSet<DefinitionId>,
    node_load: [usize; NODES],
    /// Jobs running now and their node, in id order (deterministic iteration).
    in_progress: BTreeMap<JobId, usize>,
    now: Millis,
    seed: u64,
    target: u64,
}

impl World {
    fn new(seed: u64) -> World {
        let mut rng = Rng(seed);
        let mut scheduler = Scheduler::new(Quotas::default());
        let mut quotas = HashMap::new();
        for org in 0..ORGS {
            for lane in Lane::ALL {
                let q = Quotas {
                    max_threads: 1 + rng.below(6) as u32,
                    max_throughput: 20 + rng.below(400) as u32,
                    throughput_window_minutes: 1 + rng.below(3) as u32,
                    max_exceptions: 1 + rng.below(4) as u32,
                    exception_window_minutes: 1 + rng.below(10) as u32,
                    max_postponements: rng.below(4) as u32,
                };
                scheduler.set_quotas(OrgId(org), lane, q);
                quotas.insert((OrgId(org), lane), q);
            }
        }
        let definitions = (0..DEFINITIONS)
            .map(|d| Definition {
                org: OrgId((d % u64::from(ORGS)) as u32),
                lane: Lane::ALL[(d / 7 % 3) as usize],
                exception_rate: match d % 10 {
                    0 => 1_000_000, // always fails
                    1 | 2 => 300_000,
                    _ => 20_000,
                },
                business_rate: if d % 10 == 3 { 200_000 } else { 5_000 },
            })
            .collect();
        World {
            rng,
            scheduler,
            quotas,
            definitions,
            jobs: Vec::new(),
            job_definition: Vec::new(),
            job_token: Vec::new(),
            postponements: Vec::new(),
            running: HashMap::new(),
            starts: HashMap::new(),
            cancel_requested: HashSet::new(),
            pause_requested: HashSet::new(),
            deactivated: HashSet::new(),
            node_load: [0; NODES],
            in_progress: BTreeMap::new(),
            now: 0,
            seed,
            target: simulated_jobs(),
        }
    }

    fn fail(&self, what: String) -> ! {
        panic!("seed {} at {} ms: {what}", self.seed, self.now)
    }

    fn submit(&mut self) {
        let id = self.jobs.len() as u64;
        let d = self.rng.below(DEFINITIONS);
        let definition = &self.definitions[d as usize];
        let token = self.rng.chance(20_000).then(|| self.rng.below(50) as u16);
        self.job_token.push(token);
        let token = token.map(|t| format!("record-{t}"));
        self.scheduler.submit(JobSpec {
            id: JobId(id),
            org: definition.org,
            lane: definition.lane,
            definition: DefinitionId(d),
            dependency_token: token,
        });
        self.jobs.push(Known::Ready);
        self.job_definition.push(d as u32);
        self.postponements.push(0);
    }

    fn key(&self, job: JobId) -> (OrgId, Lane) {
        let d = &self.definitions[self.job_definition[job.0 as usize] as usize];
        (d.org, d.lane)
    }

    fn start_what_may_start(&mut self) {
        while let Some(node) = (0..NODES).find(|n| self.node_load[*n] < SLOTS_PER_NODE) {
            let Some(decision) = self.scheduler.next(self.now) else { break };
            match decision {
                Decision::CanceledOnPickup(job) => {
                    let d = DefinitionId(u64::from(self.job_definition[job.0 as usize]));
                    if !self.deactivated.contains(&d) {
                        self.fail(format!("{job:?} canceled on pickup but {d:?} is active"));
                    }
                    self.expect_state(job, &[Known::Ready]);
                    self.jobs[job.0 as usize] = Known::Done(Status::Canceled);
                    self.scheduler.forget(job);
                }
                Decision::Start(job) => {
                    if self.jobs[job.0 as usize] != Known::Ready {
                        self.fail(format!("{job:?} started while {:?}", self.jobs[job.0 as usize]));
                    }
                    let key = self.key(job);
                    let q = self.quotas[&key];
                    let running = self.running.entry(key).or_default();
                    *running += 1;
                    let window = self.now.div_euclid(q.throughput_window());
                    let starts = self.starts.entry((key.0, key.1, window)).or_default();
                    *starts += 1;
                    if key.1 != Lane::Exempt {
                        let (running, starts) = (*running, *starts);
                        if running > q.max_threads {
                            self.fail(format!(
                                "{key:?}: {running} running over the cap of {}",
                                q.max_threads
                            ));
                        }
                        if starts > q.max_throughput {
                            self.fail(format!(
                                "{key:?}: {starts} starts over the cap of {}",
                                q.max_throughput
                            ));
                        }
                    }
                    self.jobs[job.0 as usize] = Known::Running { node };
                    self.node_load[node] += 1;
                    self.in_progress.insert(job, node);
                }
            }
        }
    }

    fn expect_state(&self, job: JobId, allowed: &[Known]) {
        let known = self.jobs[job.0 as usize];
        if !allowed.contains(&known) {
            self.fail(format!("{job:?} was {known:?}, expected one of {allowed:?}"));
        }
    }

    fn finish(&mut self, job: JobId, outcome: Outcome) {
        let Known::Running { node } = self.jobs[job.0 as usize] else {
            self.fail(format!("{job:?} finished without running"))
        };
        self.node_load[node] -= 1;
        self.in_progress.remove(&job);
        let key = self.key(job);
        *self.running.get_mut(&key).unwrap() -= 1;
        let q = self.quotas[&key];
        let canceling = self.cancel_requested.remove(&job);
        let pausing = self.pause_requested.remove(&job);
        let after =
            self.scheduler.finished(job, self.now, outcome).unwrap_or_else(|e| self.fail(e.to_string()));
        let expected_terminal = match outcome {
            Outcome::Succeeded => Some(After::Succeeded),
            Outcome::BusinessError => Some(After::Failed),
            _ if canceling => Some(After::Canceled),
            _ => None,
        };
        if let Some(expected) = expected_terminal
            && after != expected
        {
            self.fail(format!("{job:?} {outcome:?} became {after:?}, expected {expected:?}"));
        }
        let index = job.0 as usize;
        self.jobs[index] = match after {
            After::Succeeded => Known::Done(Status::Succeeded),
            After::Failed => Known::Done(Status::Failed),
            After::Canceled => Known::Done(Status::Canceled),
            After::Retry | After::Requeued => Known::Ready,
            After::Paused => {
                if !pausing && outcome != Outcome::Stopped {
                    self.fail(format!("{job:?} paused without a pause request"));
                }
                Known::Paused
            }
            After::Postponed { until, count } => {
                self.postponements[index] += 1;
                if count != self.postponements[index] || until != self.now + q.postponement(count) {
                    self.fail(format!("{job:?} postponed to {until} (#{count}), expected D × n"));
                }
                if count > q.max_postponements {
                    self.fail(format!("{job:?} timed postponement #{count} past the maximum"));
                }
                Known::Postponed { until }
            }
            After::PostponedForever { count } => {
                self.postponements[index] += 1;
                if count != self.postponements[index] || count <= q.max_postponements {
                    self.fail(format!("{job:?} postponed forever at #{count}"));
                }
                Known::Forever
            }
        };
        if matches!(self.jobs[index], Known::Done(_)) {
            self.scheduler.forget(job);
        }
    }

    /// One tick: the clock moves, things happen, the invariants are checked.
    fn step(&mut self, submitting: bool, chaos: bool) {
        self.now += 1 + self.rng.below(2_000) as Millis;
        if submitting {
            for _ in 0..self.rng.below(120) {
                if (self.jobs.len() as u64) < self.target {
                    self.submit();
                }
            }
        }
        for job in self.scheduler.wake(self.now) {
            let Known::Postponed { until } = self.jobs[job.0 as usize] else {
                self.fail(format!("{job:?} woke while {:?}", self.jobs[job.0 as usize]));
            };
            if until > self.now {
                self.fail(format!("{job:?} woke early"));
            }
            self.jobs[job.0 as usize] = Known::Ready;
        }
        // Running jobs finish (or their node dies).
        let dead_node = (chaos && self.rng.chance(2_000)).then(|| self.rng.below(NODES as u64) as usize);
        for (job, node) in self.running_jobs() {
            if Some(node) == dead_node {
                self.finish(job, Outcome::Rescued);
                continue;
            }
            if !self.rng.chance(500_000) {
                continue;
            }
            let d = &self.definitions[self.job_definition[job.0 as usize] as usize];
            let roll = self.rng.below(1_000_000);
            let stopping = self.cancel_requested.contains(&job) || self.pause_requested.contains(&job);
            let outcome = if stopping && self.rng.chance(800_000) {
                Outcome::Stopped
            } else if roll < d.exception_rate {
                Outcome::Exception
            } else if roll < d.exception_rate + d.business_rate {
                Outcome::BusinessError
            } else {
                Outcome::Succeeded
            };
            self.finish(job, outcome);
        }
        if chaos {
            self.commands();
        }
        self.start_what_may_start();
    }

    fn blocked_behind_forever(&self, job: usize) -> bool {
        let Some(token) = self.job_token[job] else { return false };
        (0..job).any(|earlier| self.job_token[earlier] == Some(token) && self.jobs[earlier] == Known::Forever)
    }

    fn running_jobs(&self) -> Vec<(JobId, usize)> {
        self.in_progress.iter().map(|(job, node)| (*job, *node)).collect()
    }

    /// Random cancels, pauses, resumes, deactivations.
    fn commands(&mut self) {
        let total = self.jobs.len() as u64;
        if total == 0 {
            return;
        }
        for _ in 0..3 {
            let job = JobId(self.rng.below(total));
            let known = self.jobs[job.0 as usize];
            match self.rng.below(3) {
                0 => {
                    let result = self.scheduler.cancel(job);
                    match (known, result) {
                        (
                            Known::Ready | Known::Postponed { .. } | Known::Forever | Known::Paused,
                            Ok(Status::Canceled),
                        ) => {
                            self.jobs[job.0 as usize] = Known::Done(Status::Canceled);
                            self.scheduler.forget(job);
                        }
                        (Known::Running { .. }, Ok(Status::Canceling)) => {
                            self.cancel_requested.insert(job);
                            self.pause_requested.remove(&job);
                        }
                        (Known::Done(_), Err(_)) => {}
                        (known, result) => {
                            self.fail(format!("cancel of {job:?} while {known:?}: {result:?}"))
                        }
                    }
                }
                1 => match (known, self.scheduler.pause(job)) {
                    (Known::Running { .. }, Ok(Status::Pausing)) => {
                        self.pause_requested.insert(job);
                    }
                    (Known::Running { .. }, Err(_))
                        if self.cancel_requested.contains(&job) || self.pause_requested.contains(&job) => {}
                    (Known::Running { .. }, result) => {
                        self.fail(format!("pause of running {job:?}: {result:?}"))
                    }
                    (_, Ok(_)) => self.fail(format!("pause of {job:?} while {known:?} was allowed")),
                    (_, Err(_)) => {}
                },
                _ => match (known, self.scheduler.resume(job)) {
                    (Known::Postponed { .. } | Known::Forever | Known::Paused, Ok(_)) => {
                        self.jobs[job.0 as usize] = Known::Ready;
                    }
                    (Known::Postponed { .. } | Known::Forever | Known::Paused, Err(e)) => {
                        self.fail(format!("resume of suspended {job:?}: {e}"))
                    }
                    (_, Ok(_)) => self.fail(format!("resume of {job:?} while {known:?} was allowed")),
                    (_, Err(_)) => {}
                },
            }
        }
        if self.rng.chance(1_000) {
            let d = DefinitionId(self.rng.below(DEFINITIONS));
            if self.deactivated.insert(d) {
                self.scheduler.deactivate(d);
            } else {
                self.deactivated.remove(&d);
                self.scheduler.activate(d);
            }
        }
    }
}

#[test]
fn a_million_jobs_keep_every_invariant() {
    let seed = std::env::var("SLUICE_SIM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5EED_2026);
    let mut world = World::new(seed);
    while (world.jobs.len() as u64) < world.target {
        world.step(true, true);
    }
    // Drain: no new work and no more chaos; paused jobs are resumed, and time runs on
    // until nothing can move.
    for i in 0..world.jobs.len() {
        if world.jobs[i] == Known::Paused {
            world.scheduler.resume(JobId(i as u64)).unwrap();
            world.jobs[i] = Known::Ready;
        }
    }
    let mut idle_steps = 0;
    loop {
        world.step(false, false);
        let moving = !world.in_progress.is_empty()
            || Lane::ALL.iter().any(|lane| (0..ORGS).any(|org| world.scheduler.ready(OrgId(org), *lane) > 0));
        if moving {
            idle_steps = 0;
            continue;
        }
        match world.scheduler.next_wake() {
            Some(at) => world.now = at - 1,
            None => {
                idle_steps += 1;
                if idle_steps > 3 {
                    break;
                }
            }
        }
    }
    let mut tally: HashMap<String, u64> = HashMap::new();
    for (i, known) in world.jobs.iter().enumerate() {
        match known {
            Known::Done(status) => *tally.entry(format!("{status:?}")).or_default() += 1,
            Known::Forever => *tally.entry("postponed forever".into()).or_default() += 1,
            // Behind its dependency token, whose earlier job is postponed forever.
            Known::Ready if world.blocked_behind_forever(i) => {
                *tally.entry("waiting on its dependency".into()).or_default() += 1
            }
            other => world.fail(format!("job {i} ended the simulation {other:?}: lost")),
        }
    }
    println!(
        "seed {seed}: {} jobs over {} simulated minutes: {tally:?}",
        world.jobs.len(),
        world.now / MINUTE
    );
    assert_eq!(tally.values().sum::<u64>(), world.target);
    assert!(tally.get("Succeeded").copied().unwrap_or(0) > world.target / 2);
    assert!(
        tally.get("postponed forever").copied().unwrap_or(0) > 0,
        "always-failing definitions end postponed forever"
    );
}
