//! The driver: starts what the scheduler allows, runs each job on the engine, and
//! records how it ended (in batches: one transaction per round of finished jobs).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument as _;

use super::events::Trigger;
use super::payload::RowKeys;
use super::{Error, Result, Service};
use crate::engine::{
    Accounting, ExecutionContext, ExecutionError, ExecutionRequest, Plugin, PluginOutput, StepConfig,
    StopSignal,
};
use crate::jobs::{
    DefinitionId, HashMapExt as _, HashSetExt as _, IdMap, IdSet, JobId, Lane, Millis, OrgId, Status,
};
use crate::records::{OrgRecords, Overlay, RecordStore};
use crate::scheduler::{After, Decision, Outcome};
use crate::store::{Batch, Definition, DefinitionKind, JobUpdate};

/// A job that reached a terminal status in a round, for watchers of completions.
pub(super) struct Watched {
    job: JobId,
    org: OrgId,
    status: Status,
    ran: (std::time::Instant, std::time::Instant),
}

impl Watched {
    pub(super) fn org(&self) -> OrgId {
        self.org
    }

    pub(super) fn committed(
        self,
        at: std::time::Instant,
        round_began: std::time::Instant,
    ) -> super::Completion {
        super::Completion {
            job: self.job,
            org: self.org,
            status: self.status,
            at,
            ran: self.ran,
            round_began,
        }
    }
}

/// A job's execution, done.
pub(super) struct Finished {
    job: JobId,
    lane: Lane,
    definition: DefinitionId,
    org: OrgId,
    correlation: String,
    depth: u32,
    outcome: std::result::Result<PluginOutput, ExecutionError>,
    accounting: Accounting,
    trace: String,
    /// The execution's writes, buffered: committed with the completion if it succeeded.
    overlay: Option<Arc<Overlay>>,
    auto_delete: bool,
    /// When the execution began and ended.
    ran: (std::time::Instant, std::time::Instant),
    /// The service's clock when the driver took the ended run: its stored completion
    /// time (its thread was free from then on, see `Scheduler::run_ended`).
    ended: Millis,
}

impl Finished {
    /// The org whose job ran.
    pub(super) fn org(&self) -> OrgId {
        self.org
    }
}

/// The plug-ins a definition runs.
pub(super) fn plugins_of(definition: &Definition) -> Vec<u64> {
    match &definition.kind {
        DefinitionKind::Step { plugin, .. } | DefinitionKind::CustomApi { plugin, .. } => vec![*plugin],
        DefinitionKind::Workflow { steps, .. } => steps.iter().map(|s| s.plugin).collect(),
    }
}

/// Jobs of one org whose ends the writer has not committed yet past which the org's
/// jobs wait to start (they start again below half of it). The writer takes a share of
/// each org's ends while several orgs write (`writer::sharing`); an org past its share
/// stops starting, and the driver, which serves every org, never waits for it (the
/// node's own bound, [`JOBS_AT_WRITER`], would stop the driver for all of them).
pub(super) const ORG_JOBS_AT_WRITER: usize = 1_024;

/// One org's ends at the writer, and whether its jobs wait for them to be committed.
#[derive(Default)]
pub(super) struct AtWriter {
    pub(super) jobs: usize,
    pub(super) holding: bool,
}

/// What a job's start needs: kept in memory from its enqueue (bounded by
/// `Options::kept_payloads`) so that a first start does not read its row back.
pub(super) struct Queued {
    lane: Lane,
    definition: DefinitionId,
    correlation: String,
    depth: u32,
    payload: Vec<u8>,
    /// The job's creation time, if this is its first start (for the pickup latency).
    first_start_of: Option<crate::jobs::Millis>,
}

/// Jobs read ahead from each of an org's definition queues when a start finds its
/// payload missing from memory, and at most in all (the read holds the state lock while
/// it picks them, and one read connection while it runs).
const PREFETCH: usize = 2_048;
const PREFETCH_IN_ALL: usize = 8_192;

/// A round that started an org's jobs from memory reads the org's queues ahead when the
/// job this deep in one of them has no payload in memory: the next read is under way
/// while the jobs before it run, so that starts past the cache do not wait for it.
/// Before, a read ahead began only when a start found its payload missing, and every
/// start waited for it: 60,000 jobs (all in memory) drained at 65,600 jobs/s on one
/// PostgreSQL node, 200,000 at 39,300.
const PREFETCH_LOW_WATER: usize = PREFETCH / 2;

impl Queued {
    pub(super) fn of_new(job: &crate::store::NewJob) -> Queued {
        Queued {
            lane: job.lane,
            definition: job.definition,
            correlation: job.correlation_id.clone(),
            depth: job.depth,
            payload: job.payload.clone(),
            first_start_of: Some(job.created_at),
        }
    }

    pub(super) fn of_row(row: impl Into<crate::store::StartRow>) -> Queued {
        let row = row.into();
        Queued {
            lane: row.lane,
            definition: row.definition,
            correlation: row.correlation_id,
            depth: row.depth,
            payload: row.payload,
            first_start_of: row.first_run.then_some(row.created_at),
        }
    }
}

/// A job the driver started, on its way to an execution.
struct Start {
    org: OrgId,
    lane: Lane,
    definition: DefinitionId,
    /// What it runs, as it was when the job started (`None`: deleted since).
    runs: Option<Arc<Definition>>,
    id: JobId,
    stop: StopSignal,
    /// What the run needs, if kept in memory; otherwise read back before it runs.
    queued: Option<Queued>,
}

/// How long a start may wait to be written with its run's end (see `State::take_pending`)
/// before it is committed on its own (so the store and the API show a long execution
/// InProgress).
pub(super) const START_COMMIT_DELAY: Duration = Duration::from_millis(20);

/// Finished jobs the driver may have with the writer, not yet committed, before it
/// waits for the oldest round: enough that a commit's fixed costs (the sync, the round
/// trips to a database server) are shared by a few thousand jobs when the store is the
/// bottleneck, few enough that a slow disk slows starts instead of piling up memory.
const JOBS_AT_WRITER: usize = 4_096;

/// The driver takes at most one round of finished executions per this long. Under a flood
/// of short jobs it woke for every completion (the plug-ins' threads run at a lower
/// priority, so each wake preempted one of them at once) and took 2.5 jobs a round;
/// waiting out the rest of the gap lets the plug-ins run and a round gather 13-14
/// (`sluice bench throughput`, SQLite, 200,000 jobs: 14,300-15,400 rounds, as it prints;
/// its median of 5 runs alternated with the build before, 42,100 -> 51,300 jobs/s). Once
/// the writer gathered larger groups under a steady stream (`writer/linger.rs`), the
/// driver's own wakes were the next cost: 300 µs took about 10% more jobs a second than
/// 100 µs (three alternated pairs, about 10,400 rounds of 19 jobs against 25,000 of 8;
/// 500 µs no better). When jobs finish less often than this, no round waits: latency is
/// paid only under a flood.
const ROUND_GAP: Duration = Duration::from_micros(300);

const DEACTIVATED_CODE: &str = "definition-deactivated";
const DEACTIVATED_MESSAGE: &str = "Canceled when picked up: its workflow was deactivated.";

/// Checks that a succeeded execution's writes still apply after the round's earlier
/// writes, and if so adds them to the round. A refused write leaves the round as it was.
fn accept_writes(
    round: &Arc<Overlay>,
    finished: &Finished,
) -> std::result::Result<(), crate::records::RecordError> {
    let Some(overlay) = finished.overlay.as_ref().filter(|_| finished.outcome.is_ok()) else { return Ok(()) };
    let changes = overlay.changes();
    if changes.is_empty() {
        return Ok(());
    }
    let org = finished.org.0.to_string();
    let trial = Overlay::new(round.clone() as Arc<dyn RecordStore>);
    for change in &changes {
        change.replay(&trial, &org)?;
    }
    trial.merge_into(round);
    Ok(())
}

impl Service {
    /// A compiled plug-in, from the cache or loaded from the store (compiled code comes
    /// from the engine's artifact cache).
    pub(super) fn plugin(&self, org: OrgId, id: u64) -> Result<Plugin> {
        if let Some(plugin) = self.shared.plugins.read().unwrap_or_else(|e| e.into_inner()).get(&(org, id)) {
            return Ok(plugin.clone());
        }
        let bytes = self.shared.store.plugin_bytes(org, id)?.ok_or(Error::NotFound("plug-in"))?;
        // Its size was checked against the org's limit when it was uploaded.
        let plugin = self.shared.engine.load_within(&bytes, u64::MAX)?;
        self.shared.plugins.write().unwrap_or_else(|e| e.into_inner()).insert((org, id), plugin.clone());
        Ok(plugin)
    }

    /// Starts every job that may start now (within this node's slots); returns how many.
    /// The transitions are committed with the next round's completions, or now if no
    /// execution will follow to carry them.
    pub(super) fn start_ready(&self) -> Result<usize> {
        let now = self.now();
        let decided = std::time::Instant::now();
        let mut to_run = Vec::new();
        let mut kept_starts: IdSet<OrgId> = IdSet::new();
        let mut running_dry: Vec<OrgId> = Vec::new();
        let (flush, held_back) = {
            let mut state = self.state();
            for id in state.scheduler.wake(now) {
                let (org, lane, _) = state.scheduler.owner(id).expect("a woken job is known");
                state.pending.push(JobUpdate::Status {
                    id,
                    org,
                    lane,
                    at: now,
                    status: Status::WaitingForResources,
                    error: None,
                });
            }
            for lane in Lane::ALL {
                while state.running[lane.index()] < self.shared.options.slots {
                    match state.scheduler.next_in_lane(lane, now) {
                        None => break,
                        Some(Decision::CanceledOnPickup(id)) => {
                            let error = Some((DEACTIVATED_CODE.to_owned(), DEACTIVATED_MESSAGE.to_owned()));
                            let (org, lane, _) = state.scheduler.owner(id).expect("a picked job is known");
                            state.pending.push(JobUpdate::Status {
                                id,
                                org,
                                lane,
                                at: now,
                                status: Status::Canceled,
                                error,
                            });
                            state.forget(id);
                        }
                        Some(Decision::Start(id)) => {
                            let (org, _, definition) =
                                state.scheduler.owner(id).expect("a started job is known");
                            state.pending.push(JobUpdate::Started { id, org, at: now });
                            state.young_starts.insert(id, decided);
                            let stop = StopSignal::default();
                            state.stops.insert(id, stop.clone());
                            let queued = state.queued.remove(&id);
                            if queued.is_some() {
                                kept_starts.insert(org);
                            }
                            let runs = state.definitions.get(&definition).cloned();
                            to_run.push(Start { org, lane, definition, runs, id, stop, queued });
                            state.running[lane.index()] += 1;
                        }
                    }
                }
            }
            // Orgs whose queues run out of payloads in memory soon, not being read already.
            running_dry.extend(kept_starts.into_iter().filter(|org| {
                !state.prefetching.contains(org)
                    && state.queued.len() < state.kept_payloads
                    && state
                        .scheduler
                        .at_depth(*org, PREFETCH_LOW_WATER)
                        .any(|id| !state.queued.contains_key(&id))
            }));
            let mut held_back = state.scheduler.take_held_back();
            held_back.sort();
            held_back.dedup();
            let flush = state.running == [0; 3] && !(state.pending.is_empty() && state.ended.is_empty());
            (flush, held_back)
        };
        for (org, lane, quota) in held_back {
            self.shared.metrics.throttled(org, lane, quota);
        }
        if flush {
            self.request_flush()?;
        }
        let started = to_run.len();
        // A first start finds what it needs kept from the enqueue; a retry (or a start
        // after a restart, or past the cache's bound) reads its job back, in one read
        // per org for the round, off the driver.
        let (ready, unread): (Vec<Start>, Vec<Start>) = to_run.into_iter().partition(|s| s.queued.is_some());
        if !unread.is_empty() {
            self.shared.metrics.starts_read_back.inc_by(unread.len() as u64);
        }
        for start in ready {
            self.spawn_execution(start);
        }
        let mut by_org: IdMap<OrgId, Vec<Start>> = IdMap::new();
        for start in unread {
            by_org.entry(start.org).or_default().push(start);
        }
        for org in running_dry {
            by_org.entry(org).or_default();
        }
        for (org, starts) in by_org {
            self.read_back_and_run(org, starts);
        }
        Ok(started)
    }

    /// Reads back the jobs of `starts` (one org's, their payloads not in memory) in one
    /// read, off the driver, then runs them. Past the cache, the read also brings the
    /// payloads of the org's next jobs (up to `PREFETCH` from each definition's queue),
    /// so that a long backlog is read in a few large reads rather than one per round.
    /// With no starts, it only reads ahead (see `PREFETCH_LOW_WATER`).
    fn read_back_and_run(&self, org: OrgId, starts: Vec<Start>) {
        let service = self.clone();
        // One read ahead per org at a time: rounds starting meanwhile read only their own.
        let (ahead, reading_ahead) = {
            let mut state = self.state();
            let room = state.kept_payloads.saturating_sub(state.queued.len());
            if room > 0 && state.prefetching.insert(org) {
                let starting: IdSet<JobId> = starts.iter().map(|s| s.id).collect();
                // Jobs kept already are skipped before the limit: the job that made a round
                // ask for this read (see `PREFETCH_LOW_WATER`) is always among those read,
                // so no round asks again for a read that brings nothing.
                let wanted = |id: JobId| !starting.contains(&id) && !state.queued.contains_key(&id);
                let ahead = state.scheduler.upcoming(org, PREFETCH, room.min(PREFETCH_IN_ALL), wanted);
                (ahead, true)
            } else {
                (Vec::new(), false)
            }
        };
        if starts.is_empty() && ahead.is_empty() {
            if reading_ahead {
                self.state().prefetching.remove(&org);
            }
            return;
        }
        tokio::spawn(async move {
            let mut ids: Vec<JobId> = starts.iter().map(|s| s.id).collect();
            ids.extend(&ahead);
            let store = service.shared.store.clone();
            let read = tokio::task::spawn_blocking(move || store.starts_by_id(org, &ids)).await;
            let mut rows: IdMap<JobId, crate::store::StartRow> = match read {
                Ok(Ok(rows)) => rows.into_iter().map(|row| (row.id, row)).collect(),
                Ok(Err(e)) => {
                    tracing::warn!(org = org.0, error = %e, "could not read jobs back to start them");
                    IdMap::new()
                }
                Err(e) => {
                    tracing::error!(org = org.0, error = %e, "reading jobs back to start them panicked");
                    IdMap::new()
                }
            };
            for mut start in starts {
                start.queued = rows.remove(&start.id).map(Queued::of_row);
                service.spawn_execution(start);
            }
            let mut state = service.state();
            for id in ahead {
                // Kept only for a job still waiting (one started, canceled or handed
                // to another node meanwhile would never take it out).
                let waiting = state.scheduler.status(id) == Some(Status::WaitingForResources);
                if let Some(row) =
                    rows.remove(&id).filter(|_| waiting && state.queued.len() < state.kept_payloads)
                {
                    state.queued.insert(id, Queued::of_row(row));
                }
            }
            if reading_ahead {
                state.prefetching.remove(&org);
            }
        });
    }

    /// Runs a started job on a task of its own, in its span; its end goes to the driver.
    fn spawn_execution(&self, start: Start) {
        let Start { org, lane, definition, runs, id, stop, queued } = start;
        // At debug level: at info a span per job cost its workers about a tenth of their
        // time (its fields formatted, with colours, when it is made; entered at each
        // poll), and no info event happens inside a job. Made outside the state lock.
        let span = tracing::debug_span!(
            "job",
            org = org.0,
            lane = lane.name(),
            job = id.0,
            definition = definition.0
        );
        let service = self.clone();
        let execution = async move {
            let finished = match queued {
                Some(job) => service.execute_job(org, id, stop, job, runs).await,
                None => service.failed_early(org, lane, id, "the job could not be read from the store"),
            };
            tracing::debug!(ok = finished.outcome.is_ok(), fuel = finished.accounting.fuel_used, "executed");
            // The receiver lives as long as the service.
            let _ = service.shared.finished_tx.send(finished);
        }
        .instrument(span);
        match &self.shared.options.executions {
            Some(runtime) => drop(runtime.spawn(execution)),
            None => drop(tokio::spawn(execution)),
        }
    }

    /// Runs one job: its step, or its workflow's steps in order, against one overlay.
    /// Takes no lock of the service's state (the writer holds it while it prepares a
    /// group, and a job's run must not wait for that).
    async fn execute_job(
        &self,
        org: OrgId,
        id: JobId,
        stop: StopSignal,
        job: Queued,
        definition: Option<Arc<Definition>>,
    ) -> Finished {
        let began = std::time::Instant::now();
        if let Some(created_at) = job.first_start_of {
            let latency = (self.now() - created_at).max(0) as f64 / 1000.0;
            self.shared
                .metrics
                .pickup_latency
                .get_or_create(&crate::metrics::org_lane(org, job.lane))
                .observe(latency);
        }
        let Some(definition) = definition else {
            return self.failed_early(org, job.lane, id, "its definition was deleted");
        };
        let keys = RowKeys { org, correlation_id: &job.correlation, depth: job.depth };
        let context: ExecutionContext = match super::payload::decode(&job.payload, keys) {
            Ok(context) => context,
            Err(e) => return self.failed_early(org, job.lane, id, &format!("corrupt payload: {e}")),
        };
        let steps: Vec<(u64, StepConfig)> = match &definition.kind {
            DefinitionKind::Step { plugin, unsecure_config, secure_config, .. }
            | DefinitionKind::CustomApi { plugin, unsecure_config, secure_config, .. } => {
                vec![(
                    *plugin,
                    StepConfig { unsecure: unsecure_config.clone(), secure: secure_config.clone() },
                )]
            }
            DefinitionKind::Workflow { steps, .. } => steps
                .iter()
                .map(|s| (s.plugin, StepConfig { unsecure: s.config.clone(), secure: None }))
                .collect(),
        };
        let overlay = Arc::new(Overlay::new(self.shared.store.clone() as Arc<dyn RecordStore>));
        let mut context = context;
        let mut accounting = Accounting::default();
        let mut trace = Vec::new();
        let mut outcome = Ok(PluginOutput::default());
        for (plugin, config) in steps {
            let compiled = match self.plugin(org, plugin) {
                Ok(compiled) => compiled,
                Err(e) => {
                    outcome = Err(ExecutionError::Trap { code: format!("plug-in unavailable: {e}") });
                    break;
                }
            };
            let request = ExecutionRequest {
                context: context.clone(),
                records: OrgRecords::new(org.0.to_string(), overlay.clone() as Arc<dyn RecordStore>),
                config,
                limits: self.shared.options.limits.clone(),
                stop: Some(stop.clone()),
                outbound: self.outbound_access(org),
            };
            let execution = self.shared.engine.execute(&compiled, request).await;
            accounting.fuel_used += execution.accounting.fuel_used;
            accounting.wall_time_us += execution.accounting.wall_time_us;
            accounting.host_time_us += execution.accounting.host_time_us;
            accounting.peak_memory_bytes =
                accounting.peak_memory_bytes.max(execution.accounting.peak_memory_bytes);
            trace.extend(execution.trace.lines().map(str::to_owned));
            match execution.outcome {
                Ok(output) => {
                    context.shared_variables.extend(output.shared_variables.clone());
                    outcome = Ok(output);
                }
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        Finished {
            job: id,
            lane: job.lane,
            definition: job.definition,
            org,
            correlation: job.correlation,
            depth: job.depth,
            outcome,
            accounting,
            trace: trace.join("\n"),
            overlay: Some(overlay),
            auto_delete: definition.auto_delete,
            ran: (began, std::time::Instant::now()),
            ended: 0,
        }
    }

    fn failed_early(&self, org: OrgId, lane: Lane, id: JobId, why: &str) -> Finished {
        let now = std::time::Instant::now();
        Finished {
            job: id,
            lane,
            definition: DefinitionId(0),
            org,
            correlation: String::new(),
            depth: 0,
            outcome: Err(ExecutionError::Trap { code: why.to_owned() }),
            accounting: Accounting::default(),
            trace: String::new(),
            overlay: None,
            auto_delete: false,
            ran: (now, now),
            ended: 0,
        }
    }

    /// Decides a round of finished jobs (on the writer, between commits): checks each
    /// succeeded job's writes against the store and `round_writes`, tells the scheduler,
    /// and adds the pending transitions, the completions with their record writes and the
    /// jobs those writes trigger to `commit`.
    pub(super) fn prepare_round(
        &self,
        mut batch: Vec<Finished>,
        round_writes: &Arc<Overlay>,
        commit: &mut Batch,
        ended: &mut Vec<(OrgId, JobId)>,
        watched: &mut Vec<Watched>,
    ) {
        let now = self.now();
        // The round's accepted writes, in commit order: a job's writes are checked
        // against the store as earlier jobs of the group leave it (the writer runs this
        // between commits, so nothing else writes records in between).
        for finished in &mut batch {
            if let Err(conflict) = accept_writes(round_writes, finished) {
                finished.outcome = Err(ExecutionError::WriteConflict { message: conflict.to_string() });
            }
        }
        let mut state = self.state();
        let finishing: IdSet<JobId> = batch.iter().map(|finished| finished.job).collect();
        let (updates, mut more) = state.take_pending(Some(&finishing));
        commit.updates.extend(updates);
        ended.append(&mut more);
        // A finishing job whose start is not yet written (its last transition in this
        // commit): the start goes with the end, in one row write.
        let mut unwritten_starts: IdMap<JobId, (usize, Millis)> = IdMap::new();
        for (i, update) in commit.updates.iter().enumerate() {
            match update {
                JobUpdate::Started { id, at, .. } if finishing.contains(id) => {
                    unwritten_starts.insert(*id, (i, *at));
                }
                other => {
                    unwritten_starts.remove(&other.id());
                }
            }
        }
        let mut folded = IdSet::new();
        // Execution times, only for watchers of completions (benchmarks).
        let watching = self.shared.completions.receiver_count() > 0;
        for finished in batch {
            state.stops.remove(&finished.job);
            let outcome = match &finished.outcome {
                Ok(_) => Outcome::Succeeded,
                Err(ExecutionError::Business { .. }) => Outcome::BusinessError,
                Err(ExecutionError::Stopped) => Outcome::Stopped,
                // The pool was full: not the job's fault, so not its exception. It
                // goes back to the head of its queue, uncharged. (The lanes own their
                // part of the pool, so this is rare.)
                Err(ExecutionError::Busy { .. }) => Outcome::Rescued,
                Err(_) => Outcome::Exception,
            };
            let Ok(after) = state.scheduler.finished(finished.job, now, outcome) else {
                // A job the scheduler no longer knows: its org's lease was lost while it
                // ran (the new holder runs it again); otherwise a bug. Nothing to record.
                if state.holds(finished.org) {
                    tracing::error!(job = finished.job.0, "a finished job unknown to the scheduler");
                }
                continue;
            };
            let exception_times = state.scheduler.exceptions(finished.job);
            let labels = crate::metrics::org_lane(finished.org, finished.lane);
            self.shared
                .metrics
                .run_time
                .get_or_create(&labels)
                .observe(finished.accounting.wall_time_us as f64 / 1e6);
            self.shared.metrics.fuel.get_or_create(&labels).inc_by(finished.accounting.fuel_used);
            let counters = state.counters.definitions.entry(finished.definition).or_default();
            counters.runs += 1;
            counters.fuel += finished.accounting.fuel_used;
            if matches!(outcome, Outcome::Exception | Outcome::BusinessError) {
                counters.failures += 1;
            }
            if outcome == Outcome::Exception {
                let quotas = state.scheduler.quotas(finished.org, finished.lane);
                let window = quotas.exception_window_minutes as crate::jobs::Millis * crate::jobs::MINUTE;
                state.counters.exception(finished.org, finished.lane, now, window);
            }
            let previous = state.postponements.get(&finished.job).copied().unwrap_or(0);
            let (status, postpone_until, postponements) = match after {
                After::Succeeded => (Status::Succeeded, None, previous),
                After::Failed => (Status::Failed, None, previous),
                After::Canceled => (Status::Canceled, None, previous),
                After::Retry | After::Requeued => (Status::WaitingForResources, None, previous),
                After::Postponed { until, count } => (Status::Waiting, Some(until), count),
                After::PostponedForever { count } => (Status::Waiting, None, count),
                After::Paused => (Status::Waiting, None, previous),
            };
            if status.is_terminal() {
                state.forget(finished.job);
                *state.counters.finished.entry(finished.org).or_default() += 1;
            } else {
                state.postponements.insert(finished.job, postponements);
            }
            let succeeded = status == Status::Succeeded;
            let (error, output) = match &finished.outcome {
                Ok(output) => (None, serde_json::to_string(output).ok()),
                Err(e) => (Some((e.code().to_owned(), e.to_string())), None),
            };
            let changes = match (&finished.overlay, succeeded) {
                (Some(overlay), true) => overlay.changes(),
                _ => Vec::new(),
            };
            if let Some(overlay) = finished.overlay.as_ref().filter(|_| succeeded && !changes.is_empty()) {
                let triggers: Vec<Trigger> =
                    changes.iter().map(|c| Trigger::of_change(c, finished.depth + 1)).collect();
                let planned = self.plan_jobs(
                    &mut state,
                    finished.org,
                    &triggers,
                    &finished.correlation,
                    overlay.as_ref(),
                );
                commit.jobs.extend(planned);
            }
            if watching && status.is_terminal() {
                watched.push(Watched { job: finished.job, org: finished.org, status, ran: finished.ran });
            }
            let started = unwritten_starts.remove(&finished.job).map(|(i, at)| {
                folded.insert(i);
                at
            });
            commit.updates.push(JobUpdate::Finished {
                id: finished.job,
                org: finished.org,
                lane: finished.lane,
                at: finished.ended,
                started,
                status,
                postpone_until,
                retried: after == After::Retry,
                postponement_count: postponements,
                error,
                output,
                accounting: finished.accounting,
                trace: (!finished.trace.is_empty()).then_some(finished.trace),
                changes,
                delete: succeeded && finished.auto_delete,
                exception_times,
            });
        }
        if !folded.is_empty() {
            let mut i = 0;
            commit.updates.retain(|_| {
                i += 1;
                !folded.contains(&(i - 1))
            });
        }
    }

    /// Waits for one execution to finish. Cancel-safe: nothing is lost if the wait is
    /// abandoned (the driver selects over it).
    async fn next_finished(&self) -> Option<Finished> {
        self.shared.finished_rx.lock().await.recv().await
    }

    /// Gathers what else has finished, frees their slots and their orgs' threads and
    /// hands the round to the writer; returns where its commit is answered.
    /// Not cancel-safe (received executions are in hand): never raced against anything.
    async fn send_round(&self, first: Finished) -> Result<(super::writer::Answer, usize)> {
        self.send_batch(vec![first]).await
    }

    /// [`Self::send_round`] for executions already in hand, with what else has finished.
    async fn send_batch(&self, mut batch: Vec<Finished>) -> Result<(super::writer::Answer, usize)> {
        // Group commit without waiting: what finished while the last round was being
        // committed is all in the channel, so under load one transaction (one fsync)
        // covers many jobs, and a lone job commits at once. (A fixed window cost every
        // job its length, and with tokio's 1 ms timer up to twice that.)
        let mut receiver = self.shared.finished_rx.lock().await;
        while let Ok(more) = receiver.try_recv() {
            batch.push(more);
        }
        drop(receiver);
        // The runs' threads are free from now on, and the round goes to the writer under
        // the same lock: an org seen with nothing running (to hand it back) has its last
        // ends ahead of any later flush.
        let now = self.now();
        let mut state = self.state();
        for finished in &mut batch {
            state.running[finished.lane.index()] -= 1;
            state.scheduler.run_ended(finished.job, crate::scheduler::cost_of(&finished.accounting));
            finished.ended = now;
            let at_writer = state.at_writer.entry(finished.org).or_default();
            at_writer.jobs += 1;
            if at_writer.jobs >= ORG_JOBS_AT_WRITER && !at_writer.holding {
                at_writer.holding = true;
                state.scheduler.hold(finished.org, true);
            }
        }
        let jobs = batch.len();
        self.shared.metrics.driver_rounds.inc();
        Ok((self.request_round(batch)?, jobs))
    }

    /// Gathers what else has finished and records the round; returns once committed.
    async fn complete_round(&self, first: Finished) -> Result<()> {
        super::writer::answered(self.send_round(first).await?.0).await
    }

    /// Waits for at least one execution to finish and records the round.
    async fn collect_finished(&self) -> Result<()> {
        match self.next_finished().await {
            Some(first) => self.complete_round(first).await,
            None => Ok(()),
        }
    }

    /// One round: starts what may start, then records at least one finished execution
    /// (if any is running). Returns how many jobs started; what the round decided, the
    /// starts of jobs still running included, is durable on return.
    pub async fn run_once(&self) -> Result<usize> {
        self.sample_if_due();
        let started = self.start_ready()?;
        if self.state().running != [0; 3] {
            self.collect_finished().await?;
        }
        self.flush()?;
        Ok(started)
    }

    /// One round in which every job running finishes before any of them commits: starts
    /// what may start, waits for all running executions and records them as one round.
    /// For tests and simulations of jobs that ran side by side, whose order of finishing
    /// must not decide the outcome (with [`Self::run_once`], a job finishing first commits
    /// before the others have run their record calls). Returns how many jobs started.
    pub async fn run_together(&self) -> Result<usize> {
        let started = self.start_ready()?;
        let running: usize = self.state().running.iter().sum();
        let mut batch = Vec::with_capacity(running);
        while batch.len() < running {
            match self.next_finished().await {
                Some(finished) => batch.push(finished),
                None => break,
            }
        }
        if !batch.is_empty() {
            super::writer::answered(self.send_batch(batch).await?.0).await?;
        }
        self.flush()?;
        Ok(started)
    }

    /// Runs jobs until nothing more can start at the clock's current time and nothing
    /// is running: postponed jobs and the next throughput window wait for the clock.
    pub async fn run_until_idle(&self) -> Result<()> {
        self.sample_if_due();
        loop {
            self.start_ready()?;
            if self.state().running == [0; 3] {
                // Whatever start_ready decided (a cancel on pickup) is durable on return.
                return self.flush();
            }
            self.collect_finished().await?;
        }
    }

    /// The node's driver: runs until `shutdown` completes. One job's failure never
    /// ends it; if it ends for any other reason (the store keeps refusing commits, a
    /// bug), the service reports the failure ([`Service::failure`]) so that the process
    /// stops accepting work it would never run.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let mut guard = DriverGuard { service: self, done: false };
        let result = self.drive(shutdown).await;
        if let Err(e) = &result {
            tracing::error!(error = %e, "the driver stopped");
            self.set_failure(format!("the driver stopped: {e}"));
        }
        guard.done = true;
        result
    }

    async fn drive(&self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let mut shutdown = std::pin::pin!(shutdown);
        // Rounds handed to the writer and not yet answered, oldest first: the next
        // rounds' jobs start and run while they commit (the writer commits every round
        // waiting in one transaction). Past `JOBS_AT_WRITER` jobs the driver waits for
        // the oldest.
        let mut committing: std::collections::VecDeque<(super::writer::Answer, usize)> = Default::default();
        let mut at_writer = 0;
        let mut last_round = std::time::Instant::now();
        loop {
            if let Some(why) = self.failure() {
                // The writer could not commit (nobody may have been waiting for it).
                return Err(Error::Store(crate::store::Error::Database(why)));
            }
            if let Err(e) = self.purge_if_due() {
                // Retention is housekeeping: the next hour's purge tries again.
                tracing::warn!(error = %e, "retention purge failed");
            }
            self.sample_if_due();
            // Rounds already committed: a refused commit stops the driver now, not later.
            while let Some(Ok(answer)) = committing.front_mut().map(|(answer, _)| answer.try_recv()) {
                let (_, jobs) = committing.pop_front().expect("a front was answered");
                at_writer -= jobs;
                answer?;
            }
            self.start_ready()?;
            let now = self.now();
            let wake = {
                let state = self.state();
                [state.scheduler.next_wake(), state.scheduler.next_window(now)].into_iter().flatten().min()
            };
            let pause = wake
                .map_or(Duration::from_secs(1), |at| Duration::from_millis((at - now).clamp(1, 1000) as u64));
            let (running, pending) = {
                let state = self.state();
                (state.running != [0; 3], !state.pending.is_empty())
            };
            tokio::select! {
                _ = &mut shutdown => break,
                // Starts ride along with the next round's commit, but not for long: a
                // long execution's start is committed after the window anyway, so the
                // store (and the API) shows it InProgress.
                _ = tokio::time::sleep(START_COMMIT_DELAY), if pending => self.request_flush()?,
                finished = self.next_finished(), if running => {
                    if let Some(first) = finished {
                        // A blocking sleep, not tokio's timer: that one counts whole
                        // milliseconds. It frees this core for the plug-ins (the point),
                        // and the main runtime's other workers run anything else.
                        if let Some(rest) = ROUND_GAP.checked_sub(last_round.elapsed()) {
                            std::thread::sleep(rest);
                        }
                        last_round = std::time::Instant::now();
                        let answer = self.send_round(first).await?;
                        // Slots just freed: start their successors while the round commits.
                        self.start_ready()?;
                        at_writer += answer.1;
                        committing.push_back(answer);
                        while at_writer > JOBS_AT_WRITER {
                            let (oldest, jobs) = committing.pop_front().expect("jobs at the writer are in rounds");
                            at_writer -= jobs;
                            super::writer::answered(oldest).await?;
                        }
                    }
                }
                _ = self.shared.work.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
        // What was handed to the writer is committed before the driver ends.
        for (answer, _) in committing {
            super::writer::answered(answer).await?;
        }
        self.flush()
    }
}

/// Marks the service failed if the driver panics (a panic in the driver must not leave
/// a node that accepts work silently). Dropping the driver's future is a shutdown, not
/// a failure.
struct DriverGuard<'a> {
    service: &'a Service,
    done: bool,
}

impl Drop for DriverGuard<'_> {
    fn drop(&mut self) {
        if !self.done && std::thread::panicking() {
            self.service.set_failure("the driver panicked".into());
        }
    }
}
