//! A deterministic simulation of several nodes on one database: a million jobs over
//! three nodes, each with a scheduler of its own, holding orgs through leases with
//! epochs, while nodes die (their state gone, their leases left to expire), stall past
//! their lease's TTL and wake up believing they still hold their orgs, and come back.
//! The store is a model of the database: every start and completion is a fenced commit.
//!
//! Checked at every step, cluster-wide: no (org, lane) has more executions running on
//! all nodes together than its thread cap; no committed throughput window more starts
//! than its cap; no job runs on two nodes at once; no job's completion commits twice.
//! At the end: every job ended (or is postponed forever, or waits behind one that is).
//! Reproducible from a seed: `SLUICE_SIM_SEED=n SLUICE_SIM_JOBS=n cargo test --release
//! --test all cluster_simulation`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use sluice::jobs::{DefinitionId, JobId, Lane, MINUTE, Millis, OrgId, Quotas, Status};
use sluice::scheduler::{After, Decision, JobSpec, Outcome, Scheduler};

use crate::support::{Rng, simulated_jobs};

const ORGS: u32 = 18;
const DEFINITIONS: u64 = 54;
const NODES: usize = 3;
const SLOTS_PER_NODE: usize = 16;
/// The lease's TTL; renewed every third of it.
const TTL: Millis = 30_000;

/// A job's row in the modelled database.
struct Row {
    org: OrgId,
    lane: Lane,
    definition: DefinitionId,
    token: Option<String>,
    status: Status,
    postpone_until: Option<Millis>,
    postponements: u32,
    exceptions: Vec<Millis>,
    adopted: bool,
    /// Terminal completions committed (at most one).
    completions: u32,
}

/// An org's lease row: the holder (node and incarnation), its epoch and expiry.
#[derive(Clone, Copy)]
struct Lease {
    holder: (usize, u64),
    epoch: u64,
    expires: Millis,
}

struct Node {
    incarnation: u64,
    /// Dead until then (its process and state are gone; it restarts empty).
    dead_until: Option<Millis>,
    /// Frozen until then: no renewals, no commits, its executions make no progress.
    stalled_until: Option<Millis>,
    scheduler: Scheduler,
    held: HashMap<OrgId, u64>,
    last_renewal: Millis,
    next_renewal: Millis,
    running: BTreeSet<JobId>,
    /// Executions that ended just before the node froze: their commit lands when it
    /// wakes (fenced out if another node took the org meanwhile).
    in_flight: Vec<(JobId, Outcome)>,
}

struct Cluster {
    rng: Rng,
    now: Millis,
    seed: u64,
    target: u64,
    quotas: HashMap<(OrgId, Lane), Quotas>,
    lanes: Vec<Lane>,
    exception_rates: Vec<u64>,
    deactivated: HashSet<DefinitionId>,
    rows: Vec<Row>,
    unfinished: HashMap<OrgId, BTreeSet<JobId>>,
    unadopted: HashMap<OrgId, BTreeSet<JobId>>,
    leases: HashMap<OrgId, Lease>,
    heartbeats: [Millis; NODES],
    nodes: Vec<Node>,
    /// Executions running now, cluster-wide, and where.
    executing: HashMap<JobId, usize>,
    running: HashMap<(OrgId, Lane), u32>,
    starts: HashMap<(OrgId, Lane, i64), u32>,
    tally: BTreeMap<&'static str, u64>,
}

impl Cluster {
    fn new(seed: u64) -> Cluster {
        let mut rng = Rng(seed);
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
                quotas.insert((OrgId(org), lane), q);
            }
        }
        let lanes = (0..DEFINITIONS).map(|d| Lane::ALL[(d / 7 % 3) as usize]).collect();
        let exception_rates = (0..DEFINITIONS)
            .map(|d| match d % 10 {
                0 => 1_000_000,
                1 | 2 => 300_000,
                _ => 20_000,
            })
            .collect();
        let mut cluster = Cluster {
            rng,
            now: 0,
            seed,
            target: simulated_jobs(),
            quotas,
            lanes,
            exception_rates,
            deactivated: HashSet::new(),
            rows: Vec::new(),
            unfinished: HashMap::new(),
            unadopted: HashMap::new(),
            leases: HashMap::new(),
            heartbeats: [0; NODES],
            nodes: Vec::new(),
            executing: HashMap::new(),
            running: HashMap::new(),
            starts: HashMap::new(),
            tally: BTreeMap::new(),
        };
        for _ in 0..NODES {
            let node = cluster.fresh_node(0);
            cluster.nodes.push(node);
        }
        cluster
    }

    fn fresh_node(&self, incarnation: u64) -> Node {
        let mut scheduler = Scheduler::new(Quotas::default());
        for ((org, lane), q) in &self.quotas {
            scheduler.set_quotas(*org, *lane, *q);
        }
        for definition in &self.deactivated {
            scheduler.deactivate(*definition);
        }
        Node {
            incarnation,
            dead_until: None,
            stalled_until: None,
            scheduler,
            held: HashMap::new(),
            last_renewal: self.now,
            next_renewal: self.now,
            running: BTreeSet::new(),
            in_flight: Vec::new(),
        }
    }

    fn fail(&self, what: String) -> ! {
        panic!("seed {} at {} ms: {what}", self.seed, self.now)
    }

    fn count(&mut self, what: &'static str) {
        *self.tally.entry(what).or_default() += 1;
    }

    fn submit(&mut self) {
        let d = self.rng.below(DEFINITIONS);
        let org = OrgId((d % u64::from(ORGS)) as u32);
        let token = self.rng.chance(20_000).then(|| format!("record-{}", self.rng.below(50)));
        let id = JobId(self.rows.len() as u64);
        self.rows.push(Row {
            org,
            lane: self.lanes[d as usize],
            definition: DefinitionId(d),
            token,
            status: Status::WaitingForResources,
            postpone_until: None,
            postponements: 0,
            exceptions: Vec::new(),
            adopted: false,
            completions: 0,
        });
        self.unfinished.entry(org).or_default().insert(id);
        self.unadopted.entry(org).or_default().insert(id);
    }

    fn spec(&self, id: JobId) -> JobSpec {
        let row = &self.rows[id.0 as usize];
        JobSpec {
            id,
            org: row.org,
            lane: row.lane,
            definition: row.definition,
            dependency_token: row.token.clone(),
        }
    }

    /// Whether node `n` may commit for `org` now: its epoch is the lease's.
    fn fenced(&self, n: usize, org: OrgId) -> bool {
        let node = &self.nodes[n];
        match (node.held.get(&org), self.leases.get(&org)) {
            (Some(epoch), Some(lease)) => !(lease.epoch == *epoch && lease.holder == (n, node.incarnation)),
            _ => true,
        }
    }

    /// Node `n` forgets an org: its executions of it stop, their results are lost.
    fn drop_org(&mut self, n: usize, org: OrgId) {
        self.nodes[n].held.remove(&org);
        for id in self.nodes[n].scheduler.drop_org(org) {
            if self.nodes[n].running.remove(&id) {
                self.stop_execution(id);
                self.count("executions stopped: lease lost");
            }
        }
    }

    fn stop_execution(&mut self, id: JobId) {
        self.executing.remove(&id);
        let row = &self.rows[id.0 as usize];
        *self.running.get_mut(&(row.org, row.lane)).expect("counted at start") -= 1;
    }

    fn set_status(&mut self, id: JobId, status: Status) {
        let row = &mut self.rows[id.0 as usize];
        row.status = status;
        if status.is_terminal() {
            row.completions += 1;
            if row.completions > 1 {
                self.fail(format!("{id:?}'s completion committed twice"));
            }
            let org = row.org;
            self.unfinished.get_mut(&org).expect("an unfinished job").remove(&id);
        }
    }

    /// A node takes an org: the epoch moves on, and the org's unfinished jobs are read
    /// back as the service does (a running job runs again; a canceling one is canceled).
    fn take(&mut self, n: usize, org: OrgId) {
        let epoch = self.leases.get(&org).map_or(1, |l| l.epoch + 1);
        let holder = (n, self.nodes[n].incarnation);
        self.leases.insert(org, Lease { holder, epoch, expires: self.now + TTL });
        self.nodes[n].held.insert(org, epoch);
        self.count("leases taken");
        if let Some(unadopted) = self.unadopted.get_mut(&org) {
            for id in std::mem::take(unadopted) {
                self.rows[id.0 as usize].adopted = true;
            }
        }
        for lane in Lane::ALL {
            let window = self.quotas[&(org, lane)].throughput_window();
            let starts = self.starts.get(&(org, lane, self.now.div_euclid(window))).copied().unwrap_or(0);
            self.nodes[n].scheduler.restore_window(org, lane, self.now, starts);
        }
        let ids: Vec<JobId> =
            self.unfinished.get(&org).map(|s| s.iter().copied().collect()).unwrap_or_default();
        for id in ids {
            let row = &self.rows[id.0 as usize];
            let (status, postponements, until, exceptions) =
                (row.status, row.postponements, row.postpone_until, row.exceptions.clone());
            if self.executing.contains_key(&id) {
                self.fail(format!("{id:?} taken over while still executing"));
            }
            let status = match status {
                Status::Canceling => {
                    self.set_status(id, Status::Canceled);
                    continue;
                }
                Status::InProgress => {
                    self.count("executions run again after a takeover");
                    Status::WaitingForResources
                }
                other => other,
            };
            let spec = self.spec(id);
            let scheduler = &mut self.nodes[n].scheduler;
            scheduler.restore(spec, status, postponements, until);
            scheduler.restore_exceptions(id, &exceptions);
        }
    }

    fn renew_and_balance(&mut self, n: usize) {
        let me = (n, self.nodes[n].incarnation);
        let held: Vec<(OrgId, u64)> = self.nodes[n].held.iter().map(|(o, e)| (*o, *e)).collect();
        for (org, epoch) in held {
            match self.leases.get_mut(&org) {
                Some(lease) if lease.holder == me && lease.epoch == epoch => lease.expires = self.now + TTL,
                _ => self.drop_org(n, org),
            }
        }
        self.nodes[n].last_renewal = self.now;
        self.nodes[n].next_renewal = self.now + TTL / 3;
        self.heartbeats[n] = self.now + TTL;
        let live = self.heartbeats.iter().filter(|h| **h > self.now).count();
        let share = (ORGS as usize).div_ceil(live.max(1));
        for org in (0..ORGS).map(OrgId) {
            if self.nodes[n].held.len() >= share {
                break;
            }
            let free = self.leases.get(&org).is_none_or(|l| l.expires <= self.now);
            if free && !self.nodes[n].held.contains_key(&org) {
                self.take(n, org);
            }
        }
        // Beyond its share: stop starting, release once nothing of the org runs here.
        let mut held: Vec<OrgId> = self.nodes[n].held.keys().copied().collect();
        held.sort_unstable_by_key(|o| std::cmp::Reverse(*o));
        let beyond = held.len().saturating_sub(share);
        for (k, org) in held.into_iter().enumerate() {
            let draining = k < beyond;
            self.nodes[n].scheduler.set_draining(org, draining);
            if draining && self.nodes[n].scheduler.running_in_org(org) == 0 {
                self.drop_org(n, org);
                self.leases.get_mut(&org).expect("held").expires = 0;
                self.count("orgs handed back");
            }
        }
    }

    fn adopt(&mut self, n: usize) {
        let held: Vec<OrgId> = self.nodes[n].held.keys().copied().collect();
        for org in held {
            if self.fenced(n, org) {
                continue;
            }
            let ids: Vec<JobId> =
                self.unadopted.get_mut(&org).map(std::mem::take).unwrap_or_default().into_iter().collect();
            for id in ids {
                self.rows[id.0 as usize].adopted = true;
                let spec = self.spec(id);
                self.nodes[n].scheduler.submit(spec);
            }
        }
    }

    fn finish(&mut self, n: usize, id: JobId, outcome: Outcome) {
        self.nodes[n].running.remove(&id);
        self.stop_execution(id);
        self.commit_finish(n, id, outcome);
    }

    fn commit_finish(&mut self, n: usize, id: JobId, outcome: Outcome) {
        let org = self.rows[id.0 as usize].org;
        let after = self.nodes[n]
            .scheduler
            .finished(id, self.now, outcome)
            .unwrap_or_else(|e| self.fail(e.to_string()));
        if self.fenced(n, org) {
            // The commit is refused: the node drops the org; the new holder runs it again.
            self.count("commits fenced out");
            self.drop_org(n, org);
            return;
        }
        let exceptions = self.nodes[n].scheduler.exceptions(id);
        let row = &mut self.rows[id.0 as usize];
        row.exceptions = exceptions;
        let status = match after {
            After::Succeeded => Status::Succeeded,
            After::Failed => Status::Failed,
            After::Canceled => Status::Canceled,
            After::Retry | After::Requeued => Status::WaitingForResources,
            After::Postponed { until, count } => {
                row.postpone_until = Some(until);
                row.postponements = count;
                Status::Waiting
            }
            After::PostponedForever { count } => {
                row.postpone_until = None;
                row.postponements = count;
                Status::Waiting
            }
            After::Paused => Status::Waiting,
        };
        self.set_status(id, status);
        if status.is_terminal() {
            self.nodes[n].scheduler.forget(id);
        }
    }

    fn start(&mut self, n: usize) {
        for lane in Lane::ALL.iter().cycle().take(Lane::ALL.len() * SLOTS_PER_NODE * 2) {
            if self.nodes[n].running.len() >= SLOTS_PER_NODE {
                return;
            }
            let Some(decision) = self.nodes[n].scheduler.next_in_lane(*lane, self.now) else { continue };
            let id = match decision {
                Decision::Start(id) | Decision::CanceledOnPickup(id) => id,
            };
            let org = self.rows[id.0 as usize].org;
            if self.fenced(n, org) {
                self.count("commits fenced out");
                self.drop_org(n, org);
                continue;
            }
            if matches!(decision, Decision::CanceledOnPickup(_)) {
                self.set_status(id, Status::Canceled);
                self.nodes[n].scheduler.forget(id);
                continue;
            }
            if let Some(other) = self.executing.insert(id, n) {
                self.fail(format!("{id:?} started on node {n} while executing on node {other}"));
            }
            let key = (org, *lane);
            let q = self.quotas[&key];
            let running = self.running.entry(key).or_default();
            *running += 1;
            let window = self.now.div_euclid(q.throughput_window());
            let starts = self.starts.entry((org, *lane, window)).or_default();
            *starts += 1;
            let (running, starts) = (*running, *starts);
            if *lane != Lane::Exempt && (running > q.max_threads || starts > q.max_throughput) {
                self.fail(format!(
                    "{key:?}: {running} running (cap {}), {starts} starts in the window (cap {}), cluster-wide",
                    q.max_threads, q.max_throughput
                ));
            }
            self.set_status(id, Status::InProgress);
            self.nodes[n].running.insert(id);
        }
    }

    fn step_node(&mut self, n: usize, chaos: bool) {
        if let Some(until) = self.nodes[n].dead_until {
            if self.now < until {
                return;
            }
            let incarnation = self.nodes[n].incarnation + 1;
            self.nodes[n] = self.fresh_node(incarnation);
        }
        if let Some(until) = self.nodes[n].stalled_until {
            if self.now < until {
                return;
            }
            self.nodes[n].stalled_until = None;
        }
        // Past a whole TTL without renewing, a node lets every org go.
        if self.now >= self.nodes[n].last_renewal + TTL {
            let held: Vec<OrgId> = self.nodes[n].held.keys().copied().collect();
            for org in held {
                self.drop_org(n, org);
            }
        }
        if self.now >= self.nodes[n].next_renewal {
            self.renew_and_balance(n);
        }
        self.adopt(n);
        for id in self.nodes[n].scheduler.wake(self.now) {
            let org = self.rows[id.0 as usize].org;
            if !self.fenced(n, org) {
                self.rows[id.0 as usize].status = Status::WaitingForResources;
            }
        }
        let running: Vec<JobId> = self.nodes[n].running.iter().copied().collect();
        for id in running {
            if !self.rng.chance(500_000) || !self.nodes[n].running.contains(&id) {
                continue;
            }
            let d = self.rows[id.0 as usize].definition.0 as usize;
            let roll = self.rng.below(1_000_000);
            let outcome = if roll < self.exception_rates[d] {
                Outcome::Exception
            } else if roll < self.exception_rates[d] + 5_000 {
                Outcome::BusinessError
            } else {
                Outcome::Succeeded
            };
            self.finish(n, id, outcome);
        }
        if chaos {
            self.commands(n);
        }
        self.start(n);
        if chaos && self.rng.chance(300) {
            // Killed: its executions die with it; its leases are left to expire.
            for id in std::mem::take(&mut self.nodes[n].running) {
                self.stop_execution(id);
            }
            self.nodes[n].held.clear();
            self.nodes[n].dead_until = Some(self.now + self.rng.below(3 * TTL as u64) as Millis);
            self.heartbeats[n] = 0;
            self.count("node deaths");
        } else if chaos && self.rng.chance(300) {
            // Frozen (a long pause): its executions make no progress, and count as
            // running again only when it wakes within its lease's TTL.
            let pause = self.rng.below(2 * TTL as u64) as Millis;
            self.nodes[n].stalled_until = Some(self.now + pause);
            for id in self.nodes[n].running.clone() {
                self.stop_execution(id);
                if self.rng.chance(500_000) {
                    self.nodes[n].running.remove(&id);
                    self.nodes[n].in_flight.push((id, Outcome::Succeeded));
                }
            }
            self.count("node stalls");
        }
    }

    /// Cancels and resumes, carried out by the org's holder.
    fn commands(&mut self, n: usize) {
        for _ in 0..2 {
            let id = JobId(self.rng.below(self.rows.len().max(1) as u64));
            let Some(row) = self.rows.get(id.0 as usize) else { return };
            if row.status.is_terminal() || self.fenced(n, row.org) || !row.adopted {
                continue;
            }
            if self.rng.chance(500_000) {
                match self.nodes[n].scheduler.cancel(id) {
                    Ok(Status::Canceled) => {
                        self.set_status(id, Status::Canceled);
                        self.nodes[n].scheduler.forget(id);
                    }
                    Ok(status) => self.rows[id.0 as usize].status = status,
                    Err(_) => {}
                }
            } else if let Ok(status) = self.nodes[n].scheduler.resume(id) {
                let row = &mut self.rows[id.0 as usize];
                row.status = status;
                row.postpone_until = None;
                row.exceptions.clear();
            }
        }
        if self.rng.chance(300) {
            let d = DefinitionId(self.rng.below(DEFINITIONS));
            let deactivate = self.deactivated.insert(d);
            if !deactivate {
                self.deactivated.remove(&d);
            }
            // The change log reaches every live node.
            for node in &mut self.nodes {
                if deactivate {
                    node.scheduler.deactivate(d);
                } else {
                    node.scheduler.activate(d);
                }
            }
        }
    }

    fn step(&mut self, submitting: bool, chaos: bool) {
        self.now += 1 + self.rng.below(2_000) as Millis;
        if submitting {
            for _ in 0..self.rng.below(120) {
                if (self.rows.len() as u64) < self.target {
                    self.submit();
                }
            }
        }
        // A stalled node's executions stay frozen, not running.
        let first = self.rng.below(NODES as u64) as usize;
        for k in 0..NODES {
            let n = (first + k) % NODES;
            let was_stalled = self.nodes[n].stalled_until.is_some_and(|until| self.now >= until);
            if was_stalled {
                // Waking: it lets its orgs go first if their TTL passed (in `step_node`),
                // then its frozen executions run on.
                self.nodes[n].stalled_until = None;
                if self.now >= self.nodes[n].last_renewal + TTL {
                    // Its frozen executions are abandoned (`step_node` drops its orgs).
                    for _ in std::mem::take(&mut self.nodes[n].running) {
                        self.count("executions stopped: lease lost");
                    }
                    self.nodes[n].next_renewal = self.now;
                } else {
                    // Nobody can have taken its orgs: the leases have not expired.
                    for id in self.nodes[n].running.clone() {
                        if let Some(other) = self.executing.insert(id, n) {
                            self.fail(format!("{id:?} resumed on node {n} while executing on node {other}"));
                        }
                        let row = &self.rows[id.0 as usize];
                        *self.running.entry((row.org, row.lane)).or_default() += 1;
                    }
                }
                // What it was committing when it froze lands now.
                for (id, outcome) in std::mem::take(&mut self.nodes[n].in_flight) {
                    if self.nodes[n].scheduler.status(id).is_some() {
                        self.commit_finish(n, id, outcome);
                    }
                }
            }
            self.step_node(n, chaos);
        }
    }

    fn blocked_behind_forever(&self, id: usize) -> bool {
        let row = &self.rows[id];
        let Some(token) = &row.token else { return false };
        (0..id).any(|earlier| {
            let e = &self.rows[earlier];
            e.org == row.org && e.token.as_ref() == Some(token) && e.status == Status::Waiting
        })
    }
}

#[test]
fn a_million_jobs_over_three_nodes_keep_every_quota_cluster_wide() {
    let seed = std::env::var("SLUICE_SIM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0xC1_2026);
    let mut cluster = Cluster::new(seed);
    while (cluster.rows.len() as u64) < cluster.target {
        cluster.step(true, true);
    }
    let mut idle_steps = 0;
    loop {
        cluster.step(false, false);
        let unheld =
            |org: &OrgId| !cluster.nodes.iter().any(|n| n.dead_until.is_none() && n.held.contains_key(org));
        let moving = !cluster.executing.is_empty()
            || cluster.unadopted.values().any(|s| !s.is_empty())
            || cluster.unfinished.iter().any(|(org, jobs)| !jobs.is_empty() && unheld(org))
            || cluster.nodes.iter().any(|n| {
                n.dead_until.is_some_and(|t| t > cluster.now)
                    || n.stalled_until.is_some_and(|t| t > cluster.now)
                    || Lane::ALL
                        .iter()
                        .any(|lane| (0..ORGS).any(|org| n.scheduler.ready(OrgId(org), *lane) > 0))
            });
        if moving {
            idle_steps = 0;
            continue;
        }
        match cluster.nodes.iter().filter_map(|n| n.scheduler.next_wake()).min() {
            Some(at) if at > cluster.now => cluster.now = at - 1,
            _ => {
                idle_steps += 1;
                if idle_steps > 3 {
                    break;
                }
            }
        }
    }
    let mut ends: BTreeMap<String, u64> = BTreeMap::new();
    for (i, row) in cluster.rows.iter().enumerate() {
        let end = match row.status {
            status if status.is_terminal() => format!("{status:?}"),
            Status::Waiting if row.postpone_until.is_none() => "postponed forever".into(),
            Status::WaitingForResources if cluster.blocked_behind_forever(i) => {
                "waiting on its dependency".into()
            }
            other => cluster.fail(format!("job {i} ended the simulation {other:?}: lost")),
        };
        *ends.entry(end).or_default() += 1;
    }
    println!(
        "seed {seed}: {} jobs over {} simulated minutes on {NODES} nodes: {ends:?}; {:?}",
        cluster.rows.len(),
        cluster.now / MINUTE,
        cluster.tally
    );
    assert_eq!(ends.values().sum::<u64>(), cluster.target);
    assert!(ends.get("Succeeded").copied().unwrap_or(0) > cluster.target / 2);
    for event in ["node deaths", "node stalls", "commits fenced out", "executions run again after a takeover"]
    {
        assert!(cluster.tally.get(event).copied().unwrap_or(0) > 0, "the chaos included {event}");
    }
}
