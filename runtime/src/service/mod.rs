//! The asynchronous service: events in, system jobs through the scheduler, plug-ins run
//! on the engine, results and record writes persisted in batches.
//!
//! One [`Service`] per node. It owns the scheduler (rebuilt from the store at open) and
//! the caches of definitions and compiled plug-ins; the store stays the source of
//! truth. [`Service::run`] is the long-running driver; [`Service::run_until_idle`]
//! drives the same steps until nothing can run now, for tests and the demo.

mod clock;
mod cluster;
mod events;
mod execution;
mod gate;
mod health;
mod loops;
mod operations;
mod payload;
mod runaway;
mod tenancy;
mod writer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, mpsc};

pub use clock::{Clock, DatabaseClock, ManualClock, SystemClock};
pub use cluster::ClusterOptions;
pub use events::{EMAIL_ENTITY, Event, EventOutcome};
pub use gate::{Busy, RELAYED_PER_NODE, RELAYED_PER_ORG, Work};
pub use health::{DefinitionHealth, LaneView, OrgHealth, RUNAWAY_BACKLOG, SAMPLE_EVERY, Series};
pub use loops::{DEPTH_ERROR_CODE, MAX_DEPTH, WORKFLOW_LOOP_CODE, WORKFLOW_LOOP_MESSAGE};
pub use operations::{CANCEL_STARTED_MESSAGE, CANCEL_TERMINAL_MESSAGE};
pub use runaway::{RunawayFlag, RunawayRule};
pub use tenancy::{IssuedToken, LaneHealth, TOKEN_PREFIX};

use crate::engine::{Engine, ExecutionError, Limits, LoadError, Plugin, StopSignal};
use crate::jobs::{
    DefinitionId, HashMapExt as _, HashSetExt as _, IdMap, IdSet, JobId, Lane, Millis, OrgId, Quotas, Status,
};
use crate::records::RecordError;
pub use crate::scheduler::Fairness;
use crate::scheduler::{JobSpec, Refusal, Scheduler};
use crate::store::{
    ChangeKind, Cutoffs, Definition, DefinitionKind, Fence, JobFilter, JobRow, JobUpdate, Operation,
    PluginRow, Store, StoredPlugin,
};
use execution::Finished;
use loops::LoopDetector;

/// Why a service call was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such object in this organisation (another org's ids answer this too).
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("invalid plug-in: {0}")]
    Plugin(#[from] LoadError),
    #[error(transparent)]
    Record(#[from] RecordError),
    /// A synchronous step failed: the event was rolled back.
    #[error("step '{step}' failed: {error}")]
    StepFailed { step: String, error: ExecutionError },
    #[error("the job is {0:?}, which does not allow this")]
    NotAllowed(Status),
    /// A background operation cannot be canceled any more (the message says why).
    #[error("{0}")]
    CancelRefused(&'static str),
    /// The object exists already (an org or custom API of that name).
    #[error("{0} already exists")]
    Conflict(String),
    /// The node holding the job's org did not answer a command in time (several nodes:
    /// a cancel, pause or resume is carried out by the node that holds the org).
    #[error("{0}")]
    Unavailable(String),
    /// Synchronous work (a sync step, a custom-API run), or a command relayed to the
    /// node holding its org, over its org's limit or the node's capacity: refused at
    /// once, nothing done.
    #[error(transparent)]
    Busy(#[from] Busy),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// An import failed to commit part way: its first `committed` events are stored
    /// (with their jobs), the rest are not.
    #[error("the import stopped after {committed} events were stored: {error}")]
    PartlyImported { committed: usize, error: Box<Error> },
}

impl From<Refusal> for Error {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::UnknownJob => Error::NotFound("job"),
            Refusal::NotAllowed(status) => Error::NotAllowed(status),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// How a node runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Executions this node runs at once, per lane: each lane has slots of its own, so a
    /// flood on one lane never takes the other's. Default 16.
    pub slots: usize,
    /// Limits of every execution.
    pub limits: Limits,
    /// Quotas of orgs and lanes the operator has not set.
    pub default_quotas: Quotas,
    pub retention: Retention,
    /// Synchronous executions (sync steps, custom-API runs) one org may have running at
    /// once on this node. Default 8; one more is refused (HTTP 429
    /// `sync-quota-exceeded`). The node's capacity for them is the engine's pool less
    /// the job lanes' `3 × slots`.
    pub sync_per_org: u32,
    /// Several nodes on one database: this node's name and lease timing. `None`: the
    /// only node, holding every org (the embedded SQLite default).
    pub cluster: Option<ClusterOptions>,
    /// Waiting jobs whose payloads this node keeps in memory for their start (about
    /// 0.5 KB each); past them, starts read jobs back from the store, ahead of need.
    /// Default 65,536.
    pub kept_payloads: usize,
    /// How turns between orgs and between an org's definitions are counted: by cost
    /// (the default) or one per job (to measure against). See [`Fairness`].
    pub fairness: Fairness,
    /// The runtime that jobs' executions are polled on; `None`: the caller's. `sluice
    /// serve` gives them one of their own whose threads run at a lower OS priority, so
    /// that however much CPU tenants' plug-ins want, the node's own work (the store's
    /// writer, the driver, the API) is never queued behind them.
    pub executions: Option<tokio::runtime::Handle>,
    /// The runtime synchronous steps run on, the request awaiting them; `None`: the
    /// request's own task. `sluice serve --node-realtime under-load`, whose node threads
    /// may be raised, gives them one of their own, like the executions' and apart from
    /// it (a flood of sync steps there queued a tenant's jobs behind it), so that no
    /// tenant's code runs on a raised thread.
    pub sync_steps: Option<tokio::runtime::Handle>,
    /// When a definition is flagged as a runaway and throttled (see [`RunawayRule`]).
    pub runaway: RunawayRule,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            slots: 16,
            limits: Limits::default(),
            default_quotas: Quotas::default(),
            retention: Retention::default(),
            sync_per_org: 8,
            cluster: None,
            kept_payloads: 65_536,
            fairness: Fairness::Cost,
            executions: None,
            sync_steps: None,
            runaway: RunawayRule::default(),
        }
    }
}

/// How long finished jobs and trace logs are kept (auto-delete-on-success definitions
/// delete their jobs at once). The driver purges once an hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Retention {
    /// Days a succeeded job is kept. Default 30.
    pub succeeded_days: u32,
    /// Days a failed job is kept. Default 60.
    pub failed_days: u32,
    /// Days a canceled job is kept. Default 60.
    pub canceled_days: u32,
    /// Hours a job's plug-in trace log is kept. Default 24.
    pub trace_hours: u32,
    /// Days a background operation is kept, whatever its status (its TTL). Default 90.
    pub operation_days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            succeeded_days: 30,
            failed_days: 60,
            canceled_days: 60,
            trace_hours: 24,
            operation_days: 90,
        }
    }
}

const HOUR: Millis = 60 * 60 * 1000;

/// Completions a slow watcher may fall behind by.
pub const COMPLETIONS_KEPT: usize = 1 << 16;

/// Jobs a retention purge deletes, and trace logs it clears, per transaction.
pub const PURGE_BATCH: u64 = 1_000;

/// Pauses between tries of a failed commit (then the error is returned).
const COMMIT_RETRIES: [std::time::Duration; 3] = [
    std::time::Duration::from_millis(10),
    std::time::Duration::from_millis(100),
    std::time::Duration::from_millis(1000),
];
const DAY: Millis = 24 * HOUR;

/// A handle on the service; cheap to clone.
#[derive(Clone)]
pub struct Service {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn Store>,
    engine: Engine,
    clock: Arc<dyn Clock>,
    options: Options,
    state: Mutex<State>,
    /// Compiled plug-ins by (org, id), loaded once (a plug-in version never changes, so
    /// nothing invalidates an entry). Apart from the state so that an execution looking
    /// up its plug-in never waits on the writer's hold of the state's lock.
    plugins: std::sync::RwLock<HashMap<(OrgId, u64), Plugin>>,
    /// The store's one writer (`writer.rs`): every commit goes through it, grouped.
    writer: std::sync::mpsc::Sender<writer::Request>,
    finished_tx: mpsc::UnboundedSender<Finished>,
    finished_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Finished>>,
    /// Woken when there may be new work (an event, a resume, a quota change).
    work: Notify,
    /// Background operations that ended, once their end is committed (for callbacks).
    ended_tx: mpsc::UnboundedSender<(OrgId, JobId)>,
    ended_rx: Mutex<Option<mpsc::UnboundedReceiver<(OrgId, JobId)>>>,
    metrics: crate::metrics::Metrics,
    sync_gate: Arc<gate::Gate>,
    /// Commands waiting for the node holding their org (several nodes).
    relay_gate: Arc<gate::Gate>,
    /// Compilations at once on this node, and each org's one turn.
    compile_gate: Arc<tokio::sync::Semaphore>,
    compile_turns: crate::turns::Turns<OrgId>,
    /// Each org's turn to commit a request (see `Service::commit_turn`).
    commit_turns: crate::turns::Turns<OrgId>,
    /// Each org's turn for a read whose cost grows with its jobs, and the places for
    /// such reads across orgs (see `Service::org_read`).
    read_turns: crate::turns::Turns<OrgId>,
    long_reads: Arc<tokio::sync::Semaphore>,
    /// When each org last asked for its turn to commit: an import commits in smaller
    /// transactions while other orgs are committing too (`Service::others_committing`).
    committing: Mutex<HashMap<OrgId, std::time::Instant>>,
    /// Why the driver stopped, once it has.
    failure: Mutex<Option<String>>,
    /// The last entry of the change log this node applied (several nodes).
    last_change: Mutex<u64>,
    /// Jobs that reached a terminal status, as their round commits (for watchers).
    completions: tokio::sync::broadcast::Sender<Completion>,
    /// Networks beyond the public internet each org's plug-ins may reach over HTTP (the
    /// operator's allow-lists; most orgs have none).
    outbound: std::sync::RwLock<HashMap<OrgId, crate::engine::OutboundAccess>>,
    /// Orgs whose plug-ins may be larger (or must be smaller) than the engine's
    /// `max-plugin-bytes` (the operator's; set from the configuration file at start).
    plugin_limits: std::sync::RwLock<HashMap<OrgId, u64>>,
    /// Where each org is told of its definitions flagged and released (the
    /// operator's; set from the configuration file at start).
    notify_urls: std::sync::RwLock<HashMap<OrgId, String>>,
    /// Runaway notices, for the deliverer.
    notices_tx: mpsc::UnboundedSender<Notice>,
    notices_rx: Mutex<Option<mpsc::UnboundedReceiver<Notice>>>,
}

/// Something an org is told of at its notification URL (and the operator in the log).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Notice {
    /// `definition.throttled` or `definition.released`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub org: u32,
    pub definition: u64,
    pub definition_name: String,
    /// Why, in words.
    pub reason: String,
    /// The figures of the flag (the one released, for a release).
    pub flag: RunawayFlag,
    /// When (ms since the epoch).
    pub at: Millis,
}

/// A job that reached a terminal status, and when its status was committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    pub job: JobId,
    pub org: OrgId,
    pub status: Status,
    /// When its completion was committed.
    pub at: std::time::Instant,
    /// Its last execution's start and end (where the time before the commit went).
    pub ran: (std::time::Instant, std::time::Instant),
    /// When the writer began the group that committed it.
    pub round_began: std::time::Instant,
}

struct State {
    scheduler: Scheduler,
    /// Shared with the executions that run them (an execution holds its definition as
    /// it was when the job started, without this lock).
    definitions: IdMap<DefinitionId, Arc<Definition>>,
    /// Jobs whose execution is under way on this node, per lane.
    running: [usize; 3],
    loops: LoopDetector,
    /// Postponements so far, per unfinished job (the scheduler decides the next).
    postponements: IdMap<JobId, u32>,
    /// Transitions decided but not yet committed: they ride along with the next round's
    /// commit (group commit). Losing them in a crash is harmless: a job the store still
    /// shows as waiting is simply picked up again.
    pending: Vec<JobUpdate>,
    /// When each start still in `pending` was decided (see [`State::take_pending`]).
    young_starts: IdMap<JobId, std::time::Instant>,
    /// The stop signal of each running execution (raised by cancel and pause).
    stops: IdMap<JobId, StopSignal>,
    /// When the retention policy last ran.
    last_purge: Millis,
    /// Unfinished background operations: their end is announced for the callback.
    background: IdMap<JobId, OrgId>,
    /// Background operations that ended in `pending`: announced when it commits.
    ended: Vec<(OrgId, JobId)>,
    /// What the health view counts and samples.
    counters: health::Counters,
    /// Definitions creating jobs abnormally fast (flagged ones are throttled).
    runaways: runaway::Detector,
    /// What waiting jobs need at their first start, kept from their enqueue (at most
    /// `kept_payloads`).
    queued: IdMap<JobId, execution::Queued>,
    kept_payloads: usize,
    /// Orgs whose next jobs' payloads are being read ahead (see `start_ready`).
    prefetching: IdSet<OrgId>,
    /// Per org, jobs whose run has ended and whose end the writer has not committed yet;
    /// past [`execution::ORG_JOBS_AT_WRITER`] the org's jobs wait to start.
    at_writer: IdMap<OrgId, execution::AtWriter>,
    /// The orgs this node holds, at their lease's epoch (several nodes); `None`: the
    /// only node, holding every org.
    held: Option<IdMap<OrgId, Fence>>,
}

impl State {
    /// Whether this node runs the org's jobs.
    fn holds(&self, org: OrgId) -> bool {
        self.held.as_ref().is_none_or(|held| held.contains_key(&org))
    }

    /// Whether this node is the only one, holding every org.
    fn holds_every_org(&self) -> bool {
        self.held.is_none()
    }

    /// Whether a job made on another node is one start too many of its workflow on its
    /// record within the hour (`LoopDetector::workflow_loops`); counts the start, at
    /// `now` (the detector's times must come in order: another node's creation time may
    /// be older than starts counted here since), as planning does for the jobs of the
    /// orgs this node holds.
    fn starts_workflow_loop(&mut self, job: &JobRow, now: Millis) -> bool {
        let workflow = self
            .definitions
            .get(&job.definition)
            .is_some_and(|definition| matches!(definition.kind, DefinitionKind::Workflow { .. }));
        match &job.record {
            Some((entity, id)) if workflow && !id.is_empty() => {
                self.loops.workflow_loops(job.definition, (entity, id), now)
            }
            _ => false,
        }
    }

    /// Takes unfinished jobs read from the store into the scheduler, in the state they
    /// were left in (a job that was running when its node died runs again); returns the
    /// transitions that settle what that node left half done. A cancel or pause asked of
    /// a running job whose node died is carried out now: the job does not run again.
    fn restore(&mut self, jobs: Vec<JobRow>, now: Millis) -> Vec<JobUpdate> {
        let mut settled = Vec::new();
        for mut job in jobs {
            let (id, org, lane) = (job.id, job.org, job.lane);
            match job.status {
                Status::Canceling => {
                    settled.push(JobUpdate::Status {
                        id,
                        org,
                        lane,
                        at: now,
                        status: Status::Canceled,
                        error: None,
                    });
                    continue;
                }
                Status::Pausing => {
                    settled.push(JobUpdate::Status {
                        id,
                        org,
                        lane,
                        at: now,
                        status: Status::Waiting,
                        error: None,
                    });
                    job.status = Status::Waiting;
                    job.postpone_until = None;
                }
                _ => {}
            }
            if job.status.is_terminal() || self.scheduler.status(id).is_some() {
                continue;
            }
            self.postponements.insert(id, job.postponement_count);
            if job.operation == Operation::BackgroundOperation {
                self.background.insert(id, org);
            }
            self.scheduler.restore(spec_of(&job), job.status, job.postponement_count, job.postpone_until);
            self.scheduler.restore_exceptions(id, &job.exception_times);
            // The row is at hand: its start need not read it back (as for a new job).
            if job.status != Status::Waiting && self.queued.len() < self.kept_payloads {
                self.queued.insert(id, execution::Queued::of_row(job));
            }
        }
        settled
    }

    /// Forgets a job that reached a terminal status; a background operation among them
    /// is remembered in `ended` until the status is committed.
    fn forget(&mut self, id: JobId) {
        self.scheduler.forget(id);
        self.postponements.remove(&id);
        self.queued.remove(&id);
        if let Some(org) = self.background.remove(&id) {
            self.ended.push((org, id));
        }
    }

    /// Takes the pending transitions with the background operations they end.
    ///
    /// With `finishing` (a round's commit, and the jobs whose end it writes), a start
    /// decided less than [`execution::START_COMMIT_DELAY`] ago stays pending, unless its
    /// job ends in this commit or has a later transition pending: most runs are shorter
    /// than that, and their start is then written with their end, one row write instead
    /// of two (`JobUpdate::Finished::started`). A flush takes everything.
    fn take_pending(&mut self, finishing: Option<&IdSet<JobId>>) -> (Vec<JobUpdate>, Vec<(OrgId, JobId)>) {
        let ended = std::mem::take(&mut self.ended);
        let Some(finishing) = finishing else {
            self.young_starts.clear();
            return (std::mem::take(&mut self.pending), ended);
        };
        let now = std::time::Instant::now();
        let mut transitions: IdMap<JobId, u32> = IdMap::with_capacity(self.pending.len());
        for update in &self.pending {
            *transitions.entry(update.id()).or_default() += 1;
        }
        let young = |update: &JobUpdate| match update {
            JobUpdate::Started { id, .. } => {
                !finishing.contains(id)
                    && transitions[id] == 1
                    && self
                        .young_starts
                        .get(id)
                        .is_some_and(|decided| now.duration_since(*decided) < execution::START_COMMIT_DELAY)
            }
            _ => false,
        };
        let (held, taken): (Vec<JobUpdate>, Vec<JobUpdate>) =
            std::mem::take(&mut self.pending).into_iter().partition(young);
        let held_ids: IdSet<JobId> = held.iter().map(JobUpdate::id).collect();
        self.young_starts.retain(|id, _| held_ids.contains(id));
        self.pending = held;
        (taken, ended)
    }
}

/// How recently another org must have committed for an import to commit in its small
/// transactions (`events::IMPORT_CHUNK`) rather than its large ones.
/// Reads whose cost grows with an org's jobs running at once across orgs: half of the
/// PostgreSQL store's four read connections (a third of SQLite's six), so that however
/// many orgs list at once, short reads (authentication, plug-ins' record reads, a job by
/// id) always find one free.
pub const LONG_READS: usize = 2;

const COMMITTING_RECENTLY: std::time::Duration = std::time::Duration::from_millis(100);

impl Service {
    /// Opens the service on a store: loads quotas and definitions, and rebuilds the
    /// scheduler from the unfinished jobs (a job that was running when the node died
    /// runs again).
    pub fn open(
        store: Arc<dyn Store>,
        engine: Engine,
        clock: Arc<dyn Clock>,
        options: Options,
    ) -> Result<Self> {
        let compilations = compilations_at_once(options.executions.as_ref());
        let mut scheduler = Scheduler::new(options.default_quotas);
        scheduler.set_fairness(options.fairness, Some(options.slots as u32));
        for (org, lane, quotas) in store.all_quotas()? {
            scheduler.set_quotas(org, lane, quotas);
        }
        let definitions: IdMap<DefinitionId, Arc<Definition>> =
            store.definitions()?.into_iter().map(|d| (d.id, Arc::new(d))).collect();
        for definition in definitions.values().filter(|d| !d.active) {
            scheduler.deactivate(definition.id);
        }
        // The job lanes own 3 × slots of the engine's pool, so a job never finds it full;
        // synchronous work gets the rest.
        let pool = engine.settings().max_concurrent_executions as usize;
        let job_slots = options.slots * Lane::ALL.len();
        if pool <= job_slots {
            return Err(Error::Invalid(format!(
                "the engine's pool ({pool} executions) must be larger than the job lanes' {job_slots} slots"
            )));
        }
        let sync_gate = Arc::new(gate::Gate::new(
            gate::Work::Synchronous,
            options.sync_per_org,
            (pool - job_slots) as u32,
        ));
        let relay_gate = Arc::new(gate::Gate::new(gate::Work::Relayed, RELAYED_PER_ORG, RELAYED_PER_NODE));
        let (finished_tx, finished_rx) = mpsc::unbounded_channel();
        let (ended_tx, ended_rx) = mpsc::unbounded_channel();
        let (notices_tx, notices_rx) = mpsc::unbounded_channel();
        let single = options.cluster.is_none();
        // A node joining a cluster follows the changes made from now on (it reads
        // everything else fresh as it takes orgs).
        let last_change = if single { 0 } else { store.last_change()? };
        let mut state = State {
            scheduler,
            definitions,
            running: [0; 3],
            loops: LoopDetector::default(),
            postponements: IdMap::new(),
            pending: Vec::new(),
            young_starts: IdMap::new(),
            stops: IdMap::new(),
            last_purge: Millis::MIN / 2,
            background: IdMap::new(),
            ended: Vec::new(),
            counters: health::Counters::default(),
            runaways: runaway::Detector::new(options.runaway),
            queued: IdMap::new(),
            kept_payloads: options.kept_payloads,
            prefetching: IdSet::new(),
            at_writer: IdMap::new(),
            held: (!single).then(IdMap::new),
        };
        // The only node holds every org: it takes every unfinished job now, and delivers
        // the callbacks of operations that ended before a restart and never went out.
        // (With several nodes, each does so for the orgs it takes: `cluster.rs`.)
        if single {
            let settled = state.restore(store.unfinished_jobs()?, clock.now());
            if !settled.is_empty() {
                store.apply(&settled)?;
            }
            for ended in store.undelivered_callbacks()? {
                let _ = ended_tx.send(ended);
            }
        }
        let (writer, requests) = std::sync::mpsc::channel();
        let service = Service {
            shared: Arc::new(Shared {
                store,
                engine,
                clock,
                options,
                state: Mutex::new(state),
                plugins: Default::default(),
                writer,
                finished_tx,
                finished_rx: tokio::sync::Mutex::new(finished_rx),
                work: Notify::new(),
                ended_tx,
                ended_rx: Mutex::new(Some(ended_rx)),
                metrics: crate::metrics::Metrics::default(),
                sync_gate,
                relay_gate,
                compile_gate: Arc::new(tokio::sync::Semaphore::new(compilations)),
                compile_turns: crate::turns::Turns::new(1),
                commit_turns: crate::turns::Turns::new(1),
                read_turns: crate::turns::Turns::new(1),
                long_reads: Arc::new(tokio::sync::Semaphore::new(LONG_READS)),
                committing: Mutex::new(HashMap::new()),
                failure: Mutex::new(None),
                last_change: Mutex::new(last_change),
                completions: tokio::sync::broadcast::channel(COMPLETIONS_KEPT).0,
                outbound: Default::default(),
                plugin_limits: Default::default(),
                notify_urls: Default::default(),
                notices_tx,
                notices_rx: Mutex::new(Some(notices_rx)),
            }),
        };
        writer::spawn(Arc::downgrade(&service.shared), requests).map_err(crate::store::Error::from)?;
        if single {
            service.restore_runaways(None)?;
            service.restore_loop_counts(None)?;
        }
        Ok(service)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    pub fn now(&self) -> Millis {
        self.shared.clock.now()
    }

    /// The background operations that end from now on (and those whose callback was
    /// not delivered before a restart), once each end is durable. One taker per
    /// service: the callback deliverer.
    pub fn take_ended_operations(&self) -> Option<mpsc::UnboundedReceiver<(OrgId, JobId)>> {
        self.shared.ended_rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// The runaway notices (definitions flagged and released), as they happen. One taker
    /// per service: the callback deliverer.
    pub fn take_notices(&self) -> Option<mpsc::UnboundedReceiver<Notice>> {
        self.shared.notices_rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Where the org is told of its runaway definitions (`None`: nowhere but the log).
    pub fn set_notify_url(&self, org: OrgId, url: Option<String>) {
        let mut urls = self.shared.notify_urls.write().unwrap_or_else(|e| e.into_inner());
        match url {
            Some(url) => urls.insert(org, url),
            None => urls.remove(&org),
        };
    }

    pub fn notify_url(&self, org: OrgId) -> Option<String> {
        self.shared.notify_urls.read().unwrap_or_else(|e| e.into_inner()).get(&org).cloned()
    }

    /// Announces committed ends of background operations.
    fn announce_ended(&self, ended: Vec<(OrgId, JobId)>) {
        for operation in ended {
            // Nobody listening (no API server) is fine: the store keeps the operation.
            let _ = self.shared.ended_tx.send(operation);
        }
    }

    /// The Prometheus metrics, with the job gauges read from the store now.
    pub fn metrics_text(&self) -> Result<String> {
        for (org, _) in self.orgs()? {
            self.shared.metrics.set_job_counts(org, &self.job_counts(org)?);
        }
        Ok(self.shared.metrics.encode())
    }

    /// Rounds of finished executions the driver has handed to the writer since the node
    /// opened (`sluice_driver_rounds_total`): jobs finished ÷ rounds is how many a round
    /// gathers.
    pub fn driver_rounds(&self) -> u64 {
        self.shared.metrics.driver_rounds.get()
    }

    /// Starts that waited for their job to be read back from the store since the node
    /// opened (`sluice_starts_read_back_total`).
    pub fn starts_read_back(&self) -> u64 {
        self.shared.metrics.starts_read_back.get()
    }

    /// Jobs whose success this node has committed since it opened
    /// (`sluice_jobs_succeeded_total`).
    pub fn jobs_succeeded(&self) -> u64 {
        self.shared.metrics.jobs_succeeded.get()
    }

    /// Jobs completing from now on, as their completions commit: what a benchmark
    /// measures end-to-end latency with. A watcher that falls more than
    /// [`COMPLETIONS_KEPT`] behind misses the oldest (`RecvError::Lagged`).
    pub fn watch_completions(&self) -> tokio::sync::broadcast::Receiver<Completion> {
        self.shared.completions.subscribe()
    }

    /// Why this node stopped running jobs, if it did: the process should report itself
    /// unhealthy and exit rather than accept work it will not run.
    pub fn failure(&self) -> Option<String> {
        self.shared.failure.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_failure(&self, why: String) {
        self.shared.failure.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(why);
    }

    /// Records how a background operation's callback delivery went.
    pub fn record_delivery(&self, id: JobId, delivery: &crate::store::Delivery) -> Result<()> {
        Ok(self.shared.store.record_delivery(id, delivery)?)
    }

    pub fn options(&self) -> &Options {
        &self.shared.options
    }

    /// Lets the org's plug-ins reach `access`'s networks over HTTP beyond the public
    /// internet (the operator's allow-list; set from the configuration file at start).
    pub fn set_outbound_access(&self, org: OrgId, access: crate::engine::OutboundAccess) {
        self.shared.outbound.write().unwrap_or_else(|e| e.into_inner()).insert(org, access);
    }

    /// What the org's plug-ins may reach over HTTP beyond the public internet.
    pub(crate) fn outbound_access(&self, org: OrgId) -> crate::engine::OutboundAccess {
        self.shared.outbound.read().unwrap_or_else(|e| e.into_inner()).get(&org).cloned().unwrap_or_default()
    }

    /// The largest plug-in upload any org may send: the engine's limit, or an org's
    /// larger one (the API reads upload bodies up to this).
    pub fn max_plugin_bytes(&self) -> u64 {
        let limits = self.shared.plugin_limits.read().unwrap_or_else(|e| e.into_inner());
        limits.values().copied().fold(self.shared.engine.settings().max_plugin_bytes, u64::max)
    }

    /// Sets the largest plug-in the org may upload (the operator's; `[[org]]
    /// max-plugin-bytes` in the configuration file), over the engine's default.
    pub fn set_plugin_limit(&self, org: OrgId, max_bytes: u64) {
        self.shared.plugin_limits.write().unwrap_or_else(|e| e.into_inner()).insert(org, max_bytes);
    }

    /// The largest plug-in the org may upload.
    pub fn plugin_limit(&self, org: OrgId) -> u64 {
        let limits = self.shared.plugin_limits.read().unwrap_or_else(|e| e.into_inner());
        limits.get(&org).copied().unwrap_or(self.shared.engine.settings().max_plugin_bytes)
    }

    // ---- the operator ----

    pub fn create_org(&self, name: &str) -> Result<OrgId> {
        let org = self.shared.store.create_org(name)?;
        self.tell_nodes(org, ChangeKind::Org, 0)?;
        Ok(org)
    }

    pub fn set_quotas(&self, org: OrgId, lane: Lane, quotas: Quotas) -> Result<()> {
        self.shared.store.set_quotas(org, lane, quotas)?;
        self.state().scheduler.set_quotas(org, lane, quotas);
        self.tell_nodes(org, ChangeKind::Quotas, 0)?;
        self.shared.work.notify_one();
        Ok(())
    }

    /// Logs a change for the other nodes (several nodes; the only node has no one to tell).
    fn tell_nodes(&self, org: OrgId, kind: ChangeKind, key: u64) -> Result<()> {
        if self.shared.options.cluster.is_some() {
            self.shared.store.log_change(org, kind, key)?;
        }
        Ok(())
    }

    pub fn quotas(&self, org: OrgId, lane: Lane) -> Quotas {
        self.state().scheduler.quotas(org, lane)
    }

    // ---- definitions ----

    /// Validates and stores a plug-in version (compiled once, cached).
    pub fn upload_plugin(&self, org: OrgId, name: &str, bytes: &[u8]) -> Result<StoredPlugin> {
        let plugin = self.shared.engine.load_within(bytes, self.plugin_limit(org))?;
        let stored = self.shared.store.save_plugin(org, name, &plugin.info().content_hash, bytes)?;
        self.shared.plugins.write().unwrap_or_else(|e| e.into_inner()).insert((org, stored.id), plugin);
        Ok(stored)
    }

    /// Waits for the org's turn to commit a request (an event, a custom-API run). One
    /// org's requests commit one at a time, so however many it sends at once, the
    /// queue for the store's one writer holds at most one of its commits ahead of
    /// anyone else's: an org's request flood costs the others one commit of waiting,
    /// not the flood. Its sync steps still run side by side before their turn.
    async fn commit_turn(&self, org: OrgId) -> Result<tokio::sync::OwnedSemaphorePermit> {
        self.shared
            .committing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(org, std::time::Instant::now());
        self.shared.commit_turns.take(&org).await.ok_or_else(shutting_down)
    }

    /// Whether an org other than `org` asked to commit within [`COMMITTING_RECENTLY`].
    fn others_committing(&self, org: OrgId) -> bool {
        let mut committing = self.shared.committing.lock().unwrap_or_else(|e| e.into_inner());
        committing.retain(|_, at| at.elapsed() < COMMITTING_RECENTLY);
        committing.keys().any(|other| *other != org)
    }

    /// Validates and stores a plug-in as the API does: compiled off the request's
    /// thread, one compilation per org at a time and at most half the node's cores'
    /// worth at once, so one tenant's uploads cannot take the compiler or the CPU from
    /// others (their cost per upload is bounded by the engine's `complexity`).
    pub async fn upload_plugin_bounded(
        &self,
        org: OrgId,
        name: &str,
        bytes: Vec<u8>,
    ) -> Result<StoredPlugin> {
        let _org_turn = self.shared.compile_turns.take(&org).await.ok_or_else(shutting_down)?;
        let _node_turn =
            self.shared.compile_gate.clone().acquire_owned().await.map_err(|_| shutting_down())?;
        let (service, name) = (self.clone(), name.to_owned());
        let compile = move || service.upload_plugin(org, &name, &bytes);
        // A tenant's work: on the plug-ins' runtime's blocking threads when there is one
        // (their priority, never raised with the node's), else on the caller's.
        let compiled = match &self.shared.options.executions {
            Some(runtime) => runtime.spawn_blocking(compile).await,
            None => tokio::task::spawn_blocking(compile).await,
        };
        compiled.map_err(|e| Error::Invalid(format!("the compilation failed: {e}")))?
    }

    /// Saves a step registration or workflow (a new one when its id is 0).
    pub fn save_definition(&self, mut definition: Definition) -> Result<DefinitionId> {
        for plugin in execution::plugins_of(&definition) {
            if self.shared.store.plugin_bytes(definition.org, plugin)?.is_none() {
                return Err(Error::NotFound("plug-in"));
            }
        }
        if let Some(existing) = self.state().definitions.get(&definition.id)
            && existing.org != definition.org
        {
            return Err(Error::NotFound("definition"));
        }
        definition.id = self.shared.store.save_definition(&definition)?;
        let mut state = self.state();
        if definition.active {
            state.scheduler.activate(definition.id);
        } else {
            state.scheduler.deactivate(definition.id);
        }
        let (id, org) = (definition.id, definition.org);
        state.definitions.insert(id, Arc::new(definition));
        drop(state);
        self.tell_nodes(org, ChangeKind::Definition, id.0)?;
        Ok(id)
    }

    /// Activates a workflow, or deactivates it (back to Draft): no new jobs are created
    /// for it, its queued jobs are canceled when picked up, running ones finish.
    pub fn set_active(&self, org: OrgId, id: DefinitionId, active: bool) -> Result<()> {
        let mut state = self.state();
        let definition =
            state.definitions.get_mut(&id).filter(|d| d.org == org).ok_or(Error::NotFound("definition"))?;
        self.shared.store.set_definition_active(org, id, active)?;
        Arc::make_mut(definition).active = active;
        if active {
            state.scheduler.activate(id);
        } else {
            state.scheduler.deactivate(id);
            // Deactivated, it creates no jobs: a runaway flag has nothing left to hold.
            self.clear_runaway(&mut state, org, id);
        }
        drop(state);
        if !active {
            self.keep_runaway_flag(org, id, None);
        }
        self.tell_nodes(org, ChangeKind::Definition, id.0)?;
        self.shared.work.notify_one();
        Ok(())
    }

    // ---- jobs ----

    /// A job of the org, with its live status: a start not yet committed (group
    /// commit) already shows as InProgress.
    /// One of the org's records, as the store holds it (all its attributes).
    pub fn record(&self, org: OrgId, entity: &str, id: &str) -> Result<crate::records::Entity> {
        Ok(self.shared.store.retrieve(&org.0.to_string(), entity, id, &[])?)
    }

    /// The org's records of `entity`, in id order, at most `top` (what a plug-in's query
    /// with no condition would read).
    pub fn records(&self, org: OrgId, entity: &str, top: u32) -> Result<Vec<crate::records::Entity>> {
        let filter = crate::records::Filter {
            entity: entity.to_owned(),
            columns: Vec::new(),
            conditions: Vec::new(),
            top: Some(top),
        };
        Ok(self.shared.store.query(&org.0.to_string(), &filter)?)
    }

    pub fn job(&self, org: OrgId, id: JobId) -> Result<JobRow> {
        let mut job = self.shared.store.job(org, id)?.ok_or(Error::NotFound("job"))?;
        self.live_status(std::slice::from_mut(&mut job));
        Ok(job)
    }

    fn live_status(&self, jobs: &mut [JobRow]) {
        let state = self.state();
        for job in jobs.iter_mut().filter(|j| !j.status.is_terminal()) {
            if let Some(status) = state.scheduler.status(job.id) {
                job.status = status;
            }
        }
    }

    /// Runs `work` on the blocking pool, for a call that may wait for another node's
    /// answer (a cancel, pause, resume or runaway release of an org another node holds:
    /// up to 10 s), so that it never holds one of the runtime's few worker threads.
    pub async fn off_runtime<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Service) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let service = self.clone();
        tokio::task::spawn_blocking(move || work(&service))
            .await
            .map_err(|e| Error::Unavailable(format!("the command failed: {e}")))?
    }

    /// Runs a read whose cost grows with the jobs of the org it reads (its listing; the
    /// counts behind its health where another node holds it: a scan of a million-job
    /// backlog takes a tenth of a second or more) on the blocking pool, one at a time per org (`None`: every org,
    /// the operator's view, not queued behind any org's turn). However many such requests
    /// a tenant sends at once, it holds at most one read connection and one thread, and
    /// never one of the runtime's few workers that every tenant's requests and the
    /// driver need: its reads wait for each other. Across orgs at most [`LONG_READS`]
    /// run at once, in the order they got their org's turn (a fair queue: an org waits
    /// for at most one read of each org ahead of it), so that short reads always find a
    /// connection.
    pub async fn org_read<T: Send + 'static>(
        &self,
        org: Option<OrgId>,
        read: impl FnOnce(&Service) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let _turn = match org {
            Some(org) => Some(self.shared.read_turns.take(&org).await.ok_or_else(shutting_down)?),
            None => None,
        };
        let _place = self.shared.long_reads.clone().acquire_owned().await.map_err(|_| shutting_down())?;
        self.off_runtime(read).await
    }

    /// Cancels a job: Ready and Suspended jobs at once; a running one is marked
    /// Canceling and ends Canceled when its execution returns.
    pub fn cancel(&self, org: OrgId, id: JobId) -> Result<Status> {
        self.command(org, id, ChangeKind::Cancel)
    }

    pub fn pause(&self, org: OrgId, id: JobId) -> Result<Status> {
        self.command(org, id, ChangeKind::Pause)
    }

    pub fn resume(&self, org: OrgId, id: JobId) -> Result<Status> {
        self.command(org, id, ChangeKind::Resume)
    }

    /// Carries out a cancel, pause or resume here if this node holds the org, else asks
    /// the node that does (through the change log) and waits for its answer.
    fn command(&self, org: OrgId, id: JobId, kind: ChangeKind) -> Result<Status> {
        let job = self.job(org, id)?;
        if job.status.is_terminal() {
            return Err(Error::NotAllowed(job.status));
        }
        if !self.state().holds(org) {
            return self.remote_command(org, id, kind);
        }
        let status = self.command_here(org, id, kind)?;
        if kind == ChangeKind::Resume {
            self.shared.work.notify_one();
        }
        Ok(status)
    }

    fn command_here(&self, org: OrgId, id: JobId, kind: ChangeKind) -> Result<Status> {
        // The status joins the job's other transitions in `pending`, in the order they
        // were decided, and is flushed: durable when this returns.
        let mut state = self.state();
        // Unknown to the scheduler: refused as the command itself would be.
        let (_, lane, _) = state.scheduler.owner(id).ok_or(Error::NotFound("job"))?;
        let status = match kind {
            ChangeKind::Cancel => state.scheduler.cancel(id),
            ChangeKind::Pause => state.scheduler.pause(id),
            ChangeKind::Resume => state.scheduler.resume(id),
            other => unreachable!("{other:?} is not a command"),
        }?;
        if matches!(status, Status::Canceling | Status::Pausing)
            && let Some(stop) = state.stops.get(&id)
        {
            stop.stop();
        }
        let now = self.now();
        state.pending.push(JobUpdate::Status { id, org, lane, at: now, status, error: None });
        if status.is_terminal() {
            // A background operation's end is announced once this commits.
            state.forget(id);
        }
        drop(state);
        self.flush()?;
        Ok(status)
    }

    /// Applies the retention policy now, in batches of [`PURGE_BATCH`] rows; returns
    /// (jobs deleted, trace logs cleared).
    pub fn purge(&self) -> Result<(u64, u64)> {
        let (now, r) = (self.now(), self.shared.options.retention);
        let cutoffs = Cutoffs {
            succeeded: now - Millis::from(r.succeeded_days) * DAY,
            failed: now - Millis::from(r.failed_days) * DAY,
            canceled: now - Millis::from(r.canceled_days) * DAY,
            trace: now - Millis::from(r.trace_hours) * HOUR,
            operations: now,
        };
        let (mut deleted, mut cleared) = (0, 0);
        loop {
            let (d, c) = self.shared.store.purge(&cutoffs, PURGE_BATCH)?;
            (deleted, cleared) = (deleted + d, cleared + c);
            if d < PURGE_BATCH && c < PURGE_BATCH {
                return Ok((deleted, cleared));
            }
        }
    }

    /// Purges if the last purge was an hour ago or more.
    pub(super) fn purge_if_due(&self) -> Result<()> {
        let now = self.now();
        {
            let mut state = self.state();
            if now - state.last_purge < HOUR {
                return Ok(());
            }
            state.last_purge = now;
            state.loops.prune(now);
        }
        // Off the driver's thread, in bounded batches: a purge of millions of rows stalls
        // neither the driver nor the writer (each batch is a short transaction of its own).
        let service = self.clone();
        tokio::task::spawn_blocking(move || {
            // With several nodes, one purges at a time: the singleton's holder, for the hour.
            let mine = match &service.shared.options.cluster {
                Some(cluster) => service.shared.store.take_singleton("retention", &cluster.node, HOUR),
                None => Ok(true),
            };
            match mine.map_err(Error::from).and_then(|mine| if mine { service.purge() } else { Ok((0, 0)) }) {
                Ok((0, 0)) => {}
                Ok((deleted, cleared)) => tracing::info!(deleted, cleared, "retention purge"),
                // Retention is housekeeping: the next hour's purge tries again.
                Err(e) => tracing::warn!(error = %e, "retention purge failed"),
            }
        });
        Ok(())
    }

    /// Counts of the org's jobs per lane and status, in lane and status order: the
    /// finished ones from the store's kept counts; the unfinished ones from the
    /// scheduler when this node holds the org (it holds every one of them: counting a
    /// backlog of a million from the store's index took 0.1 s), else from that index.
    pub fn job_counts(&self, org: OrgId) -> Result<Vec<(Lane, Status, u64)>> {
        if !self.state().holds(org) {
            return Ok(self.shared.store.job_counts(org)?);
        }
        let mut counts = self.shared.store.finished_job_counts(org)?;
        let state = self.state();
        if !state.holds(org) {
            // Handed to another node meanwhile: its scheduler has forgotten the org's jobs.
            drop(state);
            return Ok(self.shared.store.job_counts(org)?);
        }
        for lane in Lane::ALL {
            let unfinished = state.scheduler.unfinished(org, lane).into_iter().filter(|(_, n)| *n > 0);
            counts.extend(unfinished.map(|(status, n)| (lane, status, n)));
        }
        counts.sort_by_key(|(lane, status, _)| (lane.index(), status.code()));
        Ok(counts)
    }

    /// The org's jobs that pass `filter`, newest first.
    pub fn jobs(&self, org: OrgId, filter: &JobFilter) -> Result<Vec<JobRow>> {
        let mut jobs = self.shared.store.jobs(org, filter)?;
        self.live_status(&mut jobs);
        // A job the store still shows in the asked status may have moved on (a start not
        // yet committed): the answer holds only jobs in that status now.
        if let Some(status) = filter.status {
            jobs.retain(|job| job.status == status);
        }
        Ok(jobs)
    }

    // ---- definitions, read and deleted ----

    pub fn plugins(&self, org: OrgId) -> Result<Vec<PluginRow>> {
        Ok(self.shared.store.plugins(org)?)
    }

    /// The org's definitions (steps, workflows, custom APIs), by id.
    pub fn definitions(&self, org: OrgId) -> Vec<Definition> {
        let mut list: Vec<Definition> = self
            .state()
            .definitions
            .values()
            .filter(|d| d.org == org)
            .map(|d| Definition::clone(d))
            .collect();
        list.sort_by_key(|d| d.id);
        list
    }

    pub fn definition(&self, org: OrgId, id: DefinitionId) -> Result<Definition> {
        self.state()
            .definitions
            .get(&id)
            .filter(|d| d.org == org)
            .map(|d| Definition::clone(d))
            .ok_or(Error::NotFound("definition"))
    }

    /// Deletes a definition: no new jobs; its queued jobs are canceled when picked up,
    /// as for a deactivated workflow; running ones finish.
    pub fn delete_definition(&self, org: OrgId, id: DefinitionId) -> Result<()> {
        let mut state = self.state();
        if state.definitions.get(&id).is_none_or(|d| d.org != org) {
            return Err(Error::NotFound("definition"));
        }
        self.shared.store.delete_definition(org, id)?;
        state.definitions.remove(&id);
        state.scheduler.deactivate(id);
        self.clear_runaway(&mut state, org, id);
        state.runaways.forget(id);
        drop(state);
        self.tell_nodes(org, ChangeKind::Definition, id.0)?;
        self.shared.work.notify_one();
        Ok(())
    }
}

fn shutting_down() -> Error {
    Error::Invalid("the service is shutting down".into())
}

/// Half the cores (at least one) may compile uploads at once; the rest run jobs. The
/// cores are those of the plug-ins' runtime, a thread per core, when the caller gives
/// one: the thread opening the service may be kept on fewer (`sluice --node-cores`).
fn compilations_at_once(executions: Option<&tokio::runtime::Handle>) -> usize {
    let cores = match executions {
        Some(runtime) => runtime.metrics().num_workers(),
        None => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
    };
    (cores / 2).max(1)
}

fn spec_of(job: &JobRow) -> JobSpec {
    JobSpec {
        id: job.id,
        org: job.org,
        lane: job.lane,
        definition: job.definition,
        dependency_token: job.dependency_token.clone(),
    }
}
