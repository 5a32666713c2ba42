//! The store's one writer: a thread that commits whatever is waiting, from every tenant
//! and the driver, in one transaction (group commit).
//!
//! Before, each commit held a first-come-first-served turn through its own fsync, so a
//! victim's event or round waited for every commit queued ahead of it, each a sync to
//! disk. Now a commit waits at most for the group being written and then rides in the
//! next one: one sync for everything that arrived meanwhile, however many tenants sent
//! it. Each request's batch is its own savepoint, so a request whose record writes no
//! longer apply fails alone (`write-conflict`) and the rest of the group commits. Under
//! one org's steady stream the next group may wait up to 2 ms to gather more (`linger`),
//! until another org's write arrives.
//!
//! Order: job transitions are only ever written from the `pending` list, which the
//! writer takes at the start of a group, so they reach the store in the order they were
//! decided (a command's transition is pushed there too, then flushed). A round's record
//! writes are checked here, between groups, when nothing else is being written; requests'
//! batches come after the round in the transaction.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak, mpsc};
use std::time::Instant;

mod linger;
mod sharing;

use self::linger::Linger;
use self::sharing::{Part, Sharing, light_orgs, rows_of};
use super::events::submit_jobs;
use super::execution::{Finished, ORG_JOBS_AT_WRITER, Watched};
use super::{COMMIT_RETRIES, Error, Result, Service, Shared, shutting_down};
use crate::jobs::Status;
use crate::jobs::{HashMapExt as _, HashSetExt as _, IdMap, IdSet, JobId, OrgId};
use crate::records::{Overlay, RecordStore};
use crate::store::{Batch, Fence, JobUpdate};

/// What the writer is asked to do.
pub(super) enum Request {
    /// A request's batch (an event, a custom-API run, a background operation): record
    /// changes and new jobs, which join the scheduler once durable.
    Batch(Batch, Reply<Result<Vec<JobId>>>),
    /// The pending transitions, made durable (a command's, or starts with no round to
    /// ride with).
    Flush(Reply<Result<()>>),
    /// A round of finished executions: decided, checked and committed here. A round
    /// split across groups ([`Sharing::take_group`]) is answered with its last part.
    Round(Vec<Finished>, Option<Reply<Result<()>>>),
}

/// Splits the service's own batch per org, each fenced as `fence_of` says; writes of
/// orgs it answers `None` for (several nodes: orgs this node no longer holds) are
/// dropped (their new holder decides them again).
fn split_by_org(own: Batch, fence_of: impl Fn(OrgId) -> Option<Option<Fence>>) -> Vec<Batch> {
    let mut per_org: Vec<Batch> = Vec::new();
    let mut index: HashMap<OrgId, usize> = HashMap::new();
    let mut batch_of = |org: OrgId, per_org: &mut Vec<Batch>| -> Option<usize> {
        let fence = fence_of(org)?;
        Some(*index.entry(org).or_insert_with(|| {
            per_org.push(Batch { fence, ..Batch::default() });
            per_org.len() - 1
        }))
    };
    for update in own.updates {
        if let Some(i) = batch_of(update.org(), &mut per_org) {
            per_org[i].updates.push(update);
        }
    }
    for job in own.jobs {
        if let Some(i) = batch_of(job.org, &mut per_org) {
            per_org[i].jobs.push(job);
        }
    }
    per_org
}

/// Answers every request of a group that was not committed with the node's failure.
fn answer_failed(why: &str, done: Vec<Reply<Result<()>>>, batches: Vec<(Batch, Reply<Result<Vec<JobId>>>)>) {
    let failed = || Error::Store(crate::store::Error::Database(why.to_owned()));
    done.into_iter().for_each(|reply| reply.send(Err(failed())));
    batches.into_iter().for_each(|(_, reply)| reply.send(Err(failed())));
}

/// Fences a request's batch by its org's lease if this node holds the org; otherwise its
/// new jobs are left for the holder to adopt.
fn fence_request(batch: &mut Batch, held: &IdMap<OrgId, Fence>) {
    let org = batch.jobs.first().map(|job| job.org);
    match org.and_then(|org| held.get(&org)) {
        Some(fence) => batch.fence = Some(*fence),
        None => batch.unadopted = true,
    }
}

/// Where a round's or a flush's commit is answered.
pub(super) type Answer = tokio::sync::oneshot::Receiver<Result<()>>;

/// Waits for a commit's answer.
pub(super) async fn answered(answer: Answer) -> Result<()> {
    answer.await.map_err(|_| shutting_down())?
}

/// Where a request's result goes: an awaiting task or a blocked thread.
pub(super) enum Reply<T> {
    Async(tokio::sync::oneshot::Sender<T>),
    Blocking(mpsc::SyncSender<T>),
}

impl<T> Reply<T> {
    fn send(self, value: T) {
        // A requester that gave up (a dropped request future) no longer wants it.
        match self {
            Reply::Async(sender) => drop(sender.send(value)),
            Reply::Blocking(sender) => drop(sender.send(value)),
        }
    }
}

/// Starts the writer thread. It holds the service weakly and ends when the service is
/// dropped (the last sender of `requests` with it).
pub(super) fn spawn(shared: Weak<Shared>, requests: mpsc::Receiver<Request>) -> std::io::Result<()> {
    std::thread::Builder::new().name("sluice-writer".into()).spawn(move || {
        let mut waiting = VecDeque::new();
        let mut sharing = Sharing::default();
        let mut linger = Linger::new(Instant::now());
        // Whether work arrived while the last group was written (it is in `waiting`).
        let mut arrived = false;
        loop {
            // Wait for a request, or for a paced org's next turn when only its writes wait.
            let next = match sharing.next_turn() {
                _ if arrived => Err(mpsc::RecvTimeoutError::Timeout),
                _ if waiting.is_empty() => requests.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                Some(turn) => requests.recv_timeout(turn.saturating_duration_since(Instant::now())),
                None => Err(mpsc::RecvTimeoutError::Timeout),
            };
            let closing = match next {
                Ok(request) => {
                    waiting.push_back(request);
                    false
                }
                Err(mpsc::RecvTimeoutError::Timeout) => false,
                Err(mpsc::RecvTimeoutError::Disconnected) if waiting.is_empty() => return,
                Err(mpsc::RecvTimeoutError::Disconnected) => true,
            };
            let steady = std::mem::take(&mut arrived) && !closing;
            if let Some(rest) = linger.wait(steady, sharing.shared(), Instant::now()) {
                // Another org's write ends the wait: the writer is shared from now on.
                let until = Instant::now() + rest;
                while let Ok(request) = requests.recv_timeout(until.saturating_duration_since(Instant::now()))
                {
                    let newcomer = sharing.newcomer(&request);
                    waiting.push_back(request);
                    if newcomer {
                        break;
                    }
                }
            }
            waiting.extend(requests.try_iter());
            // Closing, the rest is committed at once: no turn is worth waiting for.
            let group = if closing { waiting.drain(..).collect() } else { sharing.take_group(&mut waiting) };
            if group.is_empty() {
                continue;
            }
            let Some(shared) = shared.upgrade() else { return };
            linger.began(group.iter().map(rows_of).sum(), Instant::now());
            Service { shared }.commit_group(group, &mut sharing);
            let before = waiting.len();
            waiting.extend(requests.try_iter());
            arrived = waiting.len() > before;
        }
    })?;
    Ok(())
}

impl Service {
    fn request(&self, request: Request) -> Result<()> {
        self.shared.writer.send(request).map_err(|_| shutting_down())
    }

    /// Commits a request's batch in the next group and queues its jobs; returns their ids.
    pub(super) async fn commit_batch(&self, batch: Batch) -> Result<Vec<JobId>> {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        self.request(Request::Batch(batch, Reply::Async(sender)))?;
        receiver.await.map_err(|_| shutting_down())?
    }

    /// Makes the pending transitions durable; returns once they are. Blocks the thread:
    /// for the service's synchronous calls (commands, the driver's flush of starts).
    pub(super) fn flush(&self) -> Result<()> {
        let (sender, receiver) = mpsc::sync_channel(1);
        self.request(Request::Flush(Reply::Blocking(sender)))?;
        receiver.recv().map_err(|_| shutting_down())?
    }

    /// Asks for the pending transitions to be committed, without waiting (a failure
    /// stops the node: see `fail_group`).
    pub(super) fn request_flush(&self) -> Result<()> {
        let (sender, _unwatched) = tokio::sync::oneshot::channel();
        self.request(Request::Flush(Reply::Async(sender)))
    }

    /// Hands a round of finished executions to the writer; returns where its commit is
    /// answered.
    pub(super) fn request_round(&self, finished: Vec<Finished>) -> Result<Answer> {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        self.request(Request::Round(finished, Some(Reply::Async(sender))))?;
        Ok(receiver)
    }

    /// Commits one group: the rounds' and the pending transitions first (one batch, the
    /// service's own), then each request's batch in its savepoint.
    fn commit_group(&self, requests: Vec<Request>, sharing: &mut Sharing) {
        let began = Instant::now();
        let mut own = Batch::default();
        let mut ended: Vec<(OrgId, JobId)> = Vec::new();
        let mut watched: Vec<Watched> = Vec::new();
        let mut done: Vec<Reply<Result<()>>> = Vec::new();
        let mut batches: Vec<(Batch, Reply<Result<Vec<JobId>>>)> = Vec::new();
        // A flush asked for makes every pending transition durable; otherwise starts
        // young enough to be written with their run's end may wait (`take_pending`).
        let flushing = requests.iter().any(|r| matches!(r, Request::Flush(_)));
        // The writes of this group's rounds, in commit order: each job's writes are
        // checked against the store and the earlier jobs' (nothing else writes records
        // until this group commits).
        let round_writes = Arc::new(Overlay::new(self.shared.store.clone() as Arc<dyn RecordStore>));
        // The group's rounds are decided as one, in the order they came: one hold of
        // the state lock for the group, not one per round (under load a group holds
        // dozens of small rounds, and each lock taken waits on the driver's and the
        // executions' turns).
        let mut finished = Vec::new();
        for request in requests {
            match request {
                Request::Round(round, reply) => {
                    finished.extend(round);
                    done.extend(reply);
                }
                Request::Flush(reply) => done.push(reply),
                Request::Batch(batch, reply) => batches.push((batch, reply)),
            }
        }
        let mut ends: IdMap<OrgId, usize> = IdMap::new();
        for run in &finished {
            *ends.entry(run.org()).or_default() += 1;
        }
        if !finished.is_empty() {
            self.prepare_round(finished, &round_writes, &mut own, &mut ended, &mut watched);
        }
        {
            // Whatever was decided up to now, flushes included.
            let (updates, mut more) = self.state().take_pending((!flushing).then(IdSet::new).as_ref());
            own.updates.extend(updates);
            ended.append(&mut more);
        }
        let empty = |b: &Batch| b.changes.is_empty() && b.updates.is_empty() && b.jobs.is_empty();
        if empty(&own) && batches.is_empty() {
            self.announce_ended(ended);
            self.ends_committed(ends);
            done.into_iter().for_each(|reply| reply.send(Ok(())));
            return;
        }
        // Several nodes: the service's writes go per org, each fenced by its lease (a
        // lost lease fails its org's batch alone); a request's new jobs are this node's if
        // it holds their org, else they wait for the org's holder to adopt them.
        let held = self.state().held.clone();
        if let Some(held) = &held {
            for (batch, _) in &mut batches {
                fence_request(batch, held);
            }
        }
        // A tenant's small writes do not wait for another's large ones: when a group
        // holds both, the light orgs' commit first, in a transaction of their own.
        let light = if sharing.shared() { light_orgs(&own, &batches) } else { None };
        let owns = match (&held, &light) {
            (None, None) => vec![own],
            (None, Some(_)) => split_by_org(own, |_| Some(None)),
            (Some(held), _) => split_by_org(own, |org| held.get(&org).map(|fence| Some(*fence))),
        };
        let mut part = Part { owns, batches, watched, ended };
        if let Some(light) = light {
            let first = part.split_off_light(&light);
            if let Err(why) = self.commit_part(first, Vec::new(), began, sharing) {
                // The node has stopped; the rest of the group fails with it.
                return answer_failed(&why, done, part.batches);
            }
        }
        // A failure has stopped the node and answered the part's requests.
        if self.commit_part(part, done, began, sharing).is_ok() {
            self.ends_committed(ends);
        }
        self.shared.work.notify_one();
    }

    /// Counts the committed ends off their orgs' jobs at the writer; an org held back
    /// by them starts again once they are below half its bound.
    fn ends_committed(&self, ends: IdMap<OrgId, usize>) {
        if ends.is_empty() {
            return;
        }
        let mut state = self.state();
        let mut released = false;
        for (org, n) in ends {
            let Some(at_writer) = state.at_writer.get_mut(&org) else { continue };
            at_writer.jobs = at_writer.jobs.saturating_sub(n);
            let release = at_writer.holding && at_writer.jobs < ORG_JOBS_AT_WRITER / 2;
            if release {
                at_writer.holding = false;
            }
            if at_writer.jobs == 0 && !at_writer.holding {
                state.at_writer.remove(&org);
            }
            if release {
                state.scheduler.hold(org, false);
                released = true;
            }
        }
        drop(state);
        if released {
            self.shared.work.notify_one();
        }
    }

    /// Commits one transaction of a group and answers its requests, then `done`. On a
    /// failure the node stops (every request of the part is answered with it) and the
    /// reason is returned.
    fn commit_part(
        &self,
        part: Part,
        done: Vec<Reply<Result<()>>>,
        began: Instant,
        sharing: &mut Sharing,
    ) -> std::result::Result<(), String> {
        let Part { owns, batches, watched, mut ended } = part;
        let all: Vec<&Batch> = owns.iter().chain(batches.iter().map(|(b, _)| b)).collect();
        let writing = Instant::now();
        let mut results = match self.commit_with_retries(&all) {
            Ok(results) => results.into_iter(),
            // The store refuses to commit: the node must stop taking work.
            Err(e) => {
                let why = format!("the store refused a commit: {e}");
                self.fail_group(why.clone(), done, batches);
                return Err(why);
            }
        };
        let at = Instant::now();
        sharing.charge(&all, at - writing, at);
        tracing::trace!(
            updates = owns.iter().map(|b| b.updates.len()).sum::<usize>(),
            requests = batches.len(),
            prepare_us = (writing - began).as_micros() as u64,
            commit_us = (at - writing).as_micros() as u64,
            "group committed"
        );
        let mut lost = Vec::new();
        let mut own_jobs = Vec::new();
        for _ in &owns {
            match results.next().expect("one result per batch") {
                Ok(ids) => own_jobs.push(ids),
                Err(crate::store::Error::Fenced(org)) => {
                    lost.push(org);
                    own_jobs.push(Vec::new());
                }
                // The round's writes were checked just now; a conflict here is a bug, and
                // decisions already taken are not durable: stop the node.
                Err(e) => {
                    let why = format!("a round's commit was refused after its check: {e}");
                    self.fail_group(why.clone(), done, batches);
                    return Err(why);
                }
            }
        }
        let succeeded = owns
            .iter()
            .flat_map(|own| &own.updates)
            .filter(|update| {
                matches!(update, JobUpdate::Finished { status: Status::Succeeded, org, .. } if !lost.contains(org))
            })
            .count();
        self.shared.metrics.jobs_succeeded.inc_by(succeeded as u64);
        for completion in watched.into_iter().filter(|w| !lost.contains(&w.org())) {
            let _ = self.shared.completions.send(completion.committed(at, began));
        }
        ended.retain(|(org, _)| !lost.contains(org));
        let mut replies = Vec::with_capacity(batches.len());
        let mut refenced = Vec::new();
        let mut state = self.state();
        // Jobs join the scheduler only while their org is still held here (a renewal on
        // the cluster's thread may have lost it since the commit).
        let still_held = |state: &super::State, fence: Option<Fence>| {
            fence.is_none_or(|f| state.held.as_ref().is_some_and(|h| h.get(&f.org) == Some(&f)))
        };
        for (own, ids) in owns.iter().zip(&own_jobs) {
            if still_held(&state, own.fence) {
                submit_jobs(&mut state, ids, &own.jobs);
            }
        }
        for ((batch, reply), result) in batches.into_iter().zip(results) {
            match result {
                // The org moved to another node since the batch was fenced: its jobs
                // are committed again for the new holder to adopt.
                Err(crate::store::Error::Fenced(_)) => refenced.push((batch, reply)),
                Ok(ids) => {
                    if !batch.unadopted && still_held(&state, batch.fence) {
                        submit_jobs(&mut state, &ids, &batch.jobs);
                    }
                    replies.push((reply, Ok(ids)));
                }
                Err(e) => replies.push((reply, Err(Error::from(e)))),
            }
        }
        ended.append(&mut state.ended);
        drop(state);
        for org in lost {
            tracing::warn!(org = org.0, "a commit was fenced out: another node holds the org now");
            self.drop_org(org);
        }
        if !refenced.is_empty() {
            for (batch, _) in &mut refenced {
                batch.fence = None;
                batch.unadopted = true;
            }
            let again: Vec<&Batch> = refenced.iter().map(|(b, _)| b).collect();
            let results = self.commit_with_retries(&again);
            match results {
                Ok(results) => {
                    for ((_, reply), result) in refenced.into_iter().zip(results) {
                        replies.push((reply, result.map_err(Error::from)));
                    }
                }
                Err(e) => {
                    let why = e.to_string();
                    for (_, reply) in refenced {
                        replies.push((reply, Err(Error::Store(crate::store::Error::Database(why.clone())))));
                    }
                }
            }
        }
        self.announce_ended(ended);
        done.into_iter().for_each(|reply| reply.send(Ok(())));
        replies.into_iter().for_each(|(reply, result)| reply.send(result));
        Ok(())
    }

    /// Fails every request of a group and the node with it.
    fn fail_group(
        &self,
        why: String,
        done: Vec<Reply<Result<()>>>,
        batches: Vec<(Batch, Reply<Result<Vec<JobId>>>)>,
    ) {
        tracing::error!(error = %why, "group commit failed");
        self.set_failure(why.clone());
        answer_failed(&why, done, batches);
    }

    /// Commits the group, timing it for the metrics. A store failure other than a write
    /// conflict (a busy or failing disk) is tried again a few times before it is
    /// returned: the batches are plain data, so a retry commits exactly the same.
    fn commit_with_retries(&self, batches: &[&Batch]) -> Result<Vec<crate::store::Result<Vec<JobId>>>> {
        let started = Instant::now();
        let mut attempt = 0;
        let results = loop {
            match self.shared.store.commit_each(batches) {
                Ok(results) => break results,
                Err(e) if attempt < COMMIT_RETRIES.len() => {
                    tracing::warn!(error = %e, attempt, "commit failed; trying again");
                    std::thread::sleep(COMMIT_RETRIES[attempt]);
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        };
        self.shared.metrics.commit_latency.observe(started.elapsed().as_secs_f64());
        Ok(results)
    }
}
