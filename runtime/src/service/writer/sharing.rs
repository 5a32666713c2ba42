//! How the one writer is shared between tenants.
//!
//! Every tenant's commits go through one thread, so a tenant that writes much (a flood
//! of trivial jobs: its events, starts and completions) keeps the writer busy, and
//! another tenant's event or completion waits for whatever is being written when it
//! arrives, then for the next group. While more than one org writes:
//! - **Light first.** A group holding both light orgs' writes (a few rows) and heavy
//!   ones commits the light ones first, in a transaction of their own.
//! - **A share of each round.** A group takes at most [`ROUND_SHARE`] of one org's
//!   finished executions; the rest wait for the next group.
//! - **Paced.** An org whose writes took the writer for `t` waits `t` before its next
//!   writes are taken, so no org keeps the writer busy more than half the time and a
//!   light org usually finds it idle.
//!
//! - **Held at the start.** A paced org's finished executions wait here; past
//!   `ORG_JOBS_AT_WRITER` of them its jobs wait to start (`Scheduler::hold`), so the
//!   driver, which serves every org, never waits on one org's ends.
//!
//! An org writing alone is never paced or split: its groups are as large as the writer's
//! backlog, one sync for all of them. Measured (BENCHMARKS.md, "The writer under a flood"):
//! a victim's p50 stages beside a trivial flood about halved; its p99 is still set by the
//! flooding org's largest request, one transaction that cannot be interrupted.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::{Reply, Request, Result};
use crate::jobs::{JobId, OrgId};
use crate::service::execution::{Finished, Watched};
use crate::store::Batch;

/// An org with at most this many rows in a group is light: its writes go in a
/// transaction ahead of the heavy orgs' ([`LIGHT_FIRST_ROWS`]) and are never paced.
const LIGHT_ROWS: usize = 32;

/// Heavy orgs' rows in a group past which the light orgs' writes are committed first, in
/// a transaction of their own (one more sync, worth it past about this many rows).
const LIGHT_FIRST_ROWS: usize = 128;

/// Finished executions of one org a group takes while other orgs write too. Under a
/// trivial flood the writer falls behind, and a group would take every round that
/// arrived meanwhile: thousands of jobs, tens of milliseconds.
const ROUND_SHARE: usize = 256;

/// How recently another org must have written for the writer to be shared.
const SHARING_RECENTLY: Duration = Duration::from_millis(100);

/// The org a batch writes for (a request's batch, or one org's share of the service's
/// own); `None` for an empty one.
fn org_of(batch: &Batch) -> Option<OrgId> {
    (batch.changes.first().map(|(org, _)| *org))
        .or_else(|| batch.jobs.first().map(|job| job.org))
        .or_else(|| batch.updates.first().map(|update| update.org()))
}

/// Rows a batch writes, the writer's measure of its cost.
fn rows(batch: &Batch) -> usize {
    batch.changes.len() + batch.updates.len() + batch.jobs.len()
}

/// Rows a request writes: its batch's, or a round's finished executions (a flush's
/// transitions are not counted).
pub(super) fn rows_of(request: &Request) -> usize {
    match request {
        Request::Batch(batch, _) => rows(batch),
        Request::Round(round, _) => round.len(),
        Request::Flush(_) => 0,
    }
}

/// The orgs whose writes go first, when a group holds both light and heavy orgs' writes
/// and the heavy ones are worth a transaction of their own; `None` otherwise.
pub(super) fn light_orgs(
    own: &Batch,
    batches: &[(Batch, Reply<Result<Vec<JobId>>>)],
) -> Option<HashSet<OrgId>> {
    let mut per_org: HashMap<OrgId, usize> = HashMap::new();
    for update in &own.updates {
        *per_org.entry(update.org()).or_default() += 1;
    }
    for job in &own.jobs {
        *per_org.entry(job.org).or_default() += 1;
    }
    for (batch, _) in batches {
        if let Some(org) = org_of(batch) {
            *per_org.entry(org).or_default() += rows(batch);
        }
    }
    let heavy: usize = per_org.values().filter(|rows| **rows > LIGHT_ROWS).sum();
    let light: HashSet<OrgId> =
        per_org.into_iter().filter(|(_, rows)| *rows <= LIGHT_ROWS).map(|(org, _)| org).collect();
    (heavy >= LIGHT_FIRST_ROWS && !light.is_empty()).then_some(light)
}

/// One transaction's share of a group: the service's own batches (one per org, or one
/// for all), the requests' batches, the completions watched and the background
/// operations ended.
#[derive(Default)]
pub(super) struct Part {
    pub(super) owns: Vec<Batch>,
    pub(super) batches: Vec<(Batch, Reply<Result<Vec<JobId>>>)>,
    pub(super) watched: Vec<Watched>,
    pub(super) ended: Vec<(OrgId, JobId)>,
}

impl Part {
    /// Splits off the light orgs' share (batches without an org go with it), in order.
    pub(super) fn split_off_light(&mut self, light: &HashSet<OrgId>) -> Part {
        let is_light = |batch: &Batch| org_of(batch).is_none_or(|org| light.contains(&org));
        let (light_owns, owns) = std::mem::take(&mut self.owns).into_iter().partition(is_light);
        let (light_batches, batches) =
            std::mem::take(&mut self.batches).into_iter().partition(|(batch, _)| is_light(batch));
        let (light_watched, watched) =
            std::mem::take(&mut self.watched).into_iter().partition(|w: &Watched| light.contains(&w.org()));
        let (light_ended, ended) =
            std::mem::take(&mut self.ended).into_iter().partition(|(org, _)| light.contains(org));
        *self = Part { owns, batches, watched, ended };
        Part { owns: light_owns, batches: light_batches, watched: light_watched, ended: light_ended }
    }
}

/// The writer's view of who writes: the orgs seen lately and the paced orgs' next turns.
#[derive(Default)]
pub(super) struct Sharing {
    recent: HashMap<OrgId, Instant>,
    paced: HashMap<OrgId, Instant>,
}

impl Sharing {
    /// Notes the orgs of `requests`; returns whether more than one org wrote lately.
    fn note(&mut self, requests: &VecDeque<Request>, now: Instant) -> bool {
        for request in requests {
            match request {
                Request::Batch(batch, _) => {
                    if let Some(org) = org_of(batch) {
                        self.recent.insert(org, now);
                    }
                }
                Request::Round(round, _) => {
                    for finished in round {
                        self.recent.insert(finished.org(), now);
                    }
                }
                Request::Flush(_) => {}
            }
        }
        self.recent.retain(|_, at| now.duration_since(*at) < SHARING_RECENTLY);
        self.paced.retain(|_, turn| *turn > now);
        self.recent.len() > 1
    }

    /// Whether `request` writes for an org not seen lately: one that would make the
    /// writer shared.
    pub(super) fn newcomer(&self, request: &Request) -> bool {
        match request {
            Request::Batch(batch, _) => org_of(batch).is_some_and(|org| !self.recent.contains_key(&org)),
            Request::Round(round, _) => {
                round.iter().any(|finished| !self.recent.contains_key(&finished.org()))
            }
            Request::Flush(_) => false,
        }
    }

    /// Whether more than one org wrote lately (as of the last group taken): only then is
    /// a group split or an org paced, and only then are rows counted per org.
    pub(super) fn shared(&self) -> bool {
        self.recent.len() > 1
    }

    /// The earliest turn of a paced org, if any waits.
    pub(super) fn next_turn(&self) -> Option<Instant> {
        self.paced.values().min().copied()
    }

    /// The requests the next group commits, in order; the rest stay in `waiting`, in
    /// order. While several orgs write, a paced org's writes wait for its turn, and each
    /// org's finished executions beyond [`ROUND_SHARE`] for the next group (a round split
    /// so is answered with its last part). Flushes are always taken.
    pub(super) fn take_group(&mut self, waiting: &mut VecDeque<Request>) -> Vec<Request> {
        let now = Instant::now();
        if !self.note(waiting, now) {
            self.paced.clear();
            return waiting.drain(..).collect();
        }
        let mut taken: HashMap<OrgId, usize> = HashMap::new();
        let mut group = Vec::with_capacity(waiting.len());
        let mut kept = VecDeque::new();
        for request in waiting.drain(..) {
            match request {
                Request::Batch(batch, reply)
                    if org_of(&batch).is_some_and(|org| self.paced.contains_key(&org)) =>
                {
                    kept.push_back(Request::Batch(batch, reply));
                }
                Request::Round(round, reply) => {
                    let (now, later): (Vec<Finished>, Vec<Finished>) =
                        round.into_iter().partition(|finished| {
                            let count = taken.entry(finished.org()).or_default();
                            *count += 1;
                            *count <= ROUND_SHARE && !self.paced.contains_key(&finished.org())
                        });
                    if later.is_empty() {
                        group.push(Request::Round(now, reply));
                    } else {
                        if !now.is_empty() {
                            group.push(Request::Round(now, None));
                        }
                        kept.push_back(Request::Round(later, reply));
                    }
                }
                other => group.push(other),
            }
        }
        *waiting = kept;
        group
    }

    /// Charges a transaction that took `took` and ended `at` to the heavy orgs in it, by
    /// their rows: each waits as long as its share took.
    pub(super) fn charge(&mut self, batches: &[&Batch], took: Duration, at: Instant) {
        if !self.shared() {
            return;
        }
        let mut per_org: HashMap<OrgId, usize> = HashMap::new();
        for batch in batches {
            let orgs = (batch.changes.iter().map(|(org, _)| *org))
                .chain(batch.updates.iter().map(|update| update.org()))
                .chain(batch.jobs.iter().map(|job| job.org));
            for org in orgs {
                *per_org.entry(org).or_default() += 1;
            }
        }
        let total = per_org.values().sum::<usize>().max(1) as u32;
        for (org, rows) in per_org {
            if rows > LIGHT_ROWS {
                self.paced.insert(org, at + took * rows as u32 / total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::store::conformance::new_job;

    const HEAVY: OrgId = OrgId(1);
    const LIGHT: OrgId = OrgId(2);

    /// A request's batch of `jobs` new jobs of `org`.
    fn batch(org: OrgId, jobs: u32) -> Batch {
        Batch { jobs: (0..jobs).map(|n| new_job(org, n)).collect(), ..Batch::default() }
    }

    fn request(org: OrgId, jobs: u32) -> Request {
        let (sender, _) = mpsc::sync_channel(1);
        Request::Batch(batch(org, jobs), Reply::Blocking(sender))
    }

    fn with_reply(b: Batch) -> (Batch, Reply<Result<Vec<JobId>>>) {
        (b, Reply::Blocking(mpsc::sync_channel(1).0))
    }

    fn orgs(group: &[Request]) -> Vec<OrgId> {
        group
            .iter()
            .filter_map(|r| match r {
                Request::Batch(b, _) => org_of(b),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn light_writes_go_first_only_beside_heavy_ones() {
        let own = Batch::default();
        let both = [with_reply(batch(HEAVY, 500)), with_reply(batch(LIGHT, 2))];
        assert_eq!(light_orgs(&own, &both), Some(HashSet::from([LIGHT])));
        let small = [with_reply(batch(HEAVY, 40)), with_reply(batch(LIGHT, 2))];
        assert_eq!(light_orgs(&own, &small), None, "not worth a second sync");
        let alone = [with_reply(batch(HEAVY, 500))];
        assert_eq!(light_orgs(&own, &alone), None, "nothing light to put first");
    }

    #[test]
    fn the_light_part_takes_the_light_orgs_writes_in_order() {
        let mut part = Part {
            batches: vec![
                with_reply(batch(HEAVY, 500)),
                with_reply(batch(LIGHT, 1)),
                with_reply(batch(LIGHT, 2)),
            ],
            ended: vec![(HEAVY, JobId(1)), (LIGHT, JobId(2))],
            ..Part::default()
        };
        let light = part.split_off_light(&HashSet::from([LIGHT]));
        let jobs = |p: &Part| p.batches.iter().map(|(b, _)| (org_of(b), b.jobs.len())).collect::<Vec<_>>();
        assert_eq!(jobs(&light), vec![(Some(LIGHT), 1), (Some(LIGHT), 2)]);
        assert_eq!(jobs(&part), vec![(Some(HEAVY), 500)]);
        assert_eq!(light.ended, vec![(LIGHT, JobId(2))]);
        assert_eq!(part.ended, vec![(HEAVY, JobId(1))]);
    }

    #[test]
    fn an_org_writing_alone_is_never_paced() {
        let mut sharing = Sharing::default();
        let mut waiting = VecDeque::from([request(HEAVY, 500)]);
        let first = sharing.take_group(&mut waiting);
        let taken = [first[0].batch_ref()];
        sharing.charge(&taken, Duration::from_millis(10), Instant::now());
        waiting.push_back(request(HEAVY, 500));
        assert_eq!(orgs(&sharing.take_group(&mut waiting)), vec![HEAVY], "taken at once");
        assert!(waiting.is_empty());
    }

    #[test]
    fn beside_another_org_a_heavy_writer_waits_as_long_as_its_writes_took() {
        let mut sharing = Sharing::default();
        let mut waiting = VecDeque::from([request(HEAVY, 500), request(LIGHT, 1)]);
        let group = sharing.take_group(&mut waiting);
        assert_eq!(orgs(&group), vec![HEAVY, LIGHT]);
        let took = Duration::from_secs(3_600);
        let batches: Vec<&Batch> = group.iter().map(Request::batch_ref).collect();
        sharing.charge(&batches, took, Instant::now());
        assert!(
            sharing.next_turn().is_some_and(|turn| turn > Instant::now() + took / 2),
            "paced by its rows' share"
        );
        waiting.extend([request(HEAVY, 500), request(LIGHT, 1)]);
        assert_eq!(orgs(&sharing.take_group(&mut waiting)), vec![LIGHT], "the light org is not held back");
        assert_eq!(orgs(waiting.make_contiguous()), vec![HEAVY], "the heavy org's request waits, in order");
    }

    #[test]
    fn another_orgs_write_is_a_newcomer_while_one_org_writes_alone() {
        let mut sharing = Sharing::default();
        let mut waiting = VecDeque::from([request(HEAVY, 500)]);
        sharing.take_group(&mut waiting);
        assert!(!sharing.shared());
        // Such a write ends the linger under way (`mod.rs`): it is not made to wait.
        assert!(sharing.newcomer(&request(LIGHT, 1)));
        assert!(!sharing.newcomer(&request(HEAVY, 500)), "the streaming org's next write");
        let (sender, _) = mpsc::sync_channel(1);
        assert!(!sharing.newcomer(&Request::Flush(Reply::Blocking(sender))), "a flush writes for no org");
    }

    impl Request {
        fn batch_ref(&self) -> &Batch {
            match self {
                Request::Batch(batch, _) => batch,
                _ => panic!("a batch was expected"),
            }
        }
    }
}
