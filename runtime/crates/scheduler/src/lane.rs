//! One organisation's lane: its ready jobs by definition (taking turns by what each has
//! cost), its running count and its throughput window.

use std::collections::VecDeque;

use sluice_core::jobs::{DefinitionId, IdMap, JobId, Millis, Quotas, Status};

use crate::UNFINISHED;

/// A status's place in [`LaneQueue::by_status`], if it is unfinished.
fn unfinished_slot(status: Status) -> Option<usize> {
    UNFINISHED.iter().position(|s| *s == status)
}

#[derive(Default)]
pub(super) struct LaneQueue {
    pub running: u32,
    /// The throughput window (`now / E`) that `starts` counts.
    pub window: i64,
    pub starts: u32,
    /// Jobs queued and still waiting (queue slots of canceled jobs are not counted).
    pub ready: u64,
    /// Jobs postponed until a time (each with a timer): counted here, as the health
    /// panel asks for them every refresh and the timers are every org's.
    pub postponed: u64,
    /// Jobs of the org and lane held here, per unfinished status (in
    /// [`crate::UNFINISHED`]'s order): what an org's health shows, without reading the
    /// store's index of them.
    pub by_status: [u64; 5],
    /// The org's place in the lane's ring: the cost it has been charged there (virtual
    /// time), and whether it is in the ring now.
    pub charged: u64,
    pub in_ring: bool,
    /// Definitions with queued jobs, in the order they got queued jobs.
    turns: VecDeque<DefinitionId>,
    queues: IdMap<DefinitionId, VecDeque<JobId>>,
    /// The cost each definition has been charged (kept while the org holds the lane, so
    /// a definition that empties its queue keeps its debt, never a credit: it comes
    /// back at `floor` at least).
    definition_charged: IdMap<DefinitionId, u64>,
    /// The charge of the definition that took the last turn.
    floor: u64,
    /// Jobs in progress per definition (for a throttled definition's cap).
    definition_running: IdMap<DefinitionId, u32>,
}

impl LaneQueue {
    /// Moves one job of this org and lane from `from` (none: a new job) to `to` in
    /// [`LaneQueue::by_status`]; finished statuses are not counted here.
    pub fn restatus(&mut self, from: Option<Status>, to: Status) {
        if let Some(i) = from.and_then(unfinished_slot) {
            self.by_status[i] = self.by_status[i].saturating_sub(1);
        }
        if let Some(i) = unfinished_slot(to) {
            self.by_status[i] += 1;
        }
    }

    pub fn push(&mut self, definition: DefinitionId, job: JobId) {
        let queue = self.queues.entry(definition).or_default();
        if queue.is_empty() {
            self.turns.push_back(definition);
            let floor = self.floor;
            let charged = self.definition_charged.entry(definition).or_default();
            *charged = (*charged).max(floor);
        }
        queue.push_back(job);
        self.ready += 1;
    }

    /// Puts a job back at the head of its definition's queue and gives that definition
    /// the next turn: a retry continues the same attempt rather than queueing anew, so a
    /// failing job reaches its exception count (and postponement) promptly even behind
    /// a long backlog.
    pub fn push_front(&mut self, definition: DefinitionId, job: JobId) {
        let queue = self.queues.entry(definition).or_default();
        queue.push_front(job);
        self.turns.retain(|d| *d != definition);
        self.turns.push_front(definition);
        // The lowest charge of the definitions waiting, and the front wins ties.
        let lowest = self.turns.iter().filter_map(|d| self.definition_charged.get(d)).min().copied();
        let charged = self.definition_charged.entry(definition).or_default();
        *charged = lowest.unwrap_or(*charged).min(*charged);
        self.ready += 1;
    }

    /// The definition whose turn it is: the least charged of those `allowed` (given how
    /// many of its jobs are in progress), the earliest queued on ties.
    fn next_turn(&self, allowed: &impl Fn(DefinitionId, u32) -> bool) -> Option<usize> {
        let charged = |d: &DefinitionId| self.definition_charged.get(d).copied().unwrap_or(0);
        (0..self.turns.len())
            .filter(|&i| allowed(self.turns[i], self.running_of(self.turns[i])))
            .min_by_key(|&i| (charged(&self.turns[i]), i))
    }

    /// Jobs of the definition in progress.
    pub fn running_of(&self, definition: DefinitionId) -> u32 {
        self.definition_running.get(&definition).copied().unwrap_or(0)
    }

    /// Whether some definition `allowed` has a queued job (canceled slots included).
    pub fn has_turn(&self, allowed: &impl Fn(DefinitionId, u32) -> bool) -> bool {
        self.next_turn(allowed).is_some()
    }

    /// The oldest live job of the definition whose turn it is, among those `allowed`,
    /// charged `cost` to that definition; `live` tells queue slots still waiting from
    /// those canceled since.
    pub fn pop(
        &mut self,
        cost: impl Fn(DefinitionId) -> u64,
        allowed: impl Fn(DefinitionId, u32) -> bool,
        live: impl Fn(JobId) -> bool,
    ) -> Option<JobId> {
        while let Some(turn) = self.next_turn(&allowed) {
            let definition = self.turns.remove(turn).expect("a turn in range");
            let Some(queue) = self.queues.get_mut(&definition) else { continue };
            let mut found = None;
            while let Some(job) = queue.pop_front() {
                if live(job) {
                    found = Some(job);
                    break;
                }
            }
            if queue.is_empty() {
                self.queues.remove(&definition);
            } else {
                self.turns.push_back(definition);
            }
            if let Some(job) = found {
                let charged = self.definition_charged.entry(definition).or_default();
                self.floor = self.floor.max(*charged);
                *charged = charged.saturating_add(cost(definition));
                self.ready -= 1;
                return Some(job);
            }
        }
        None
    }

    /// The job `pop` would return next, without taking it.
    pub fn peek(
        &self,
        allowed: &impl Fn(DefinitionId, u32) -> bool,
        live: impl Fn(JobId) -> bool,
    ) -> Option<JobId> {
        let definition = self.turns.get(self.next_turn(allowed)?)?;
        self.queues.get(definition)?.iter().copied().find(|job| live(*job))
    }

    /// Corrects a definition's charge once a run's real cost is known (`charged` was
    /// its estimate at the start).
    pub fn correct(&mut self, definition: DefinitionId, charged: u64, cost: u64) {
        if let Some(total) = self.definition_charged.get_mut(&definition) {
            *total = total.saturating_sub(charged).saturating_add(cost);
        }
    }

    /// The quota that forbids one more start now, if one does.
    pub fn held_back_by(&self, quotas: &Quotas, now: Millis) -> Option<&'static str> {
        let window = now.div_euclid(quotas.throughput_window());
        let starts = if window == self.window { self.starts } else { 0 };
        if self.running >= quotas.max_threads {
            Some("max-threads")
        } else if starts >= quotas.max_throughput {
            Some("max-throughput")
        } else {
            None
        }
    }

    /// The first `n` queued jobs of each definition, the likeliest to start next
    /// (canceled slots included until their turn comes).
    pub fn upcoming(&self, n: usize) -> impl Iterator<Item = JobId> + '_ {
        self.queues.values().flat_map(move |queue| queue.iter().take(n).copied())
    }

    /// From each definition's queue, the job `depth` places from its front, or its last
    /// job if it is shorter (canceled slots counted).
    pub fn at_depth(&self, depth: usize) -> impl Iterator<Item = JobId> + '_ {
        self.queues.values().filter_map(move |queue| queue.get(depth).or(queue.back()).copied())
    }

    /// Queued jobs per definition (canceled slots included until their turn comes).
    pub fn queued_by_definition(&self) -> impl Iterator<Item = (DefinitionId, usize)> + '_ {
        self.queues.iter().map(|(d, q)| (*d, q.len()))
    }

    pub fn count_start(&mut self, definition: DefinitionId, quotas: &Quotas, now: Millis) {
        let window = now.div_euclid(quotas.throughput_window());
        if window != self.window {
            self.window = window;
            self.starts = 0;
        }
        self.starts += 1;
        self.running += 1;
        *self.definition_running.entry(definition).or_default() += 1;
    }

    /// One of the definition's jobs is no longer in progress.
    pub fn count_end(&mut self, definition: DefinitionId) {
        self.running = self.running.saturating_sub(1);
        if let Some(running) = self.definition_running.get_mut(&definition) {
            *running -= 1;
            if *running == 0 {
                self.definition_running.remove(&definition);
            }
        }
    }
}
