//! Events: a message on a record, sent through the API or fired by a plug-in's write.
//!
//! An API event applies its change and runs the matching synchronous steps inline,
//! against a write overlay: pre-validation and pre-operation steps before the change,
//! post-operation steps after it. If any fails, nothing is written and the error goes
//! back to the caller. Then jobs are created for the matching asynchronous steps
//! (priority lane) and activated workflows (regular lane). Writes made by plug-ins fire
//! further events, one level deeper, with the same correlation id; those create jobs
//! only (their synchronous steps are not run).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::payload::RowKeys;
use super::{Error, Result, Service, State, loops};
use crate::engine::{ExecutionContext, Mode, PluginOutput, Stage};
use crate::jobs::{DefinitionId, JobId, Millis, OrgId, Status};
use crate::records::{Attributes, Entity, OrgRecords, Overlay, RecordChange, RecordStore, Value};
use crate::store::{Batch, Bulk, Definition, DefinitionKind, NewJob, Operation, WorkflowStart};

/// A message on a record, as the API receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// `Create`, `Update`, `Delete`.
    pub message: String,
    pub entity: String,
    /// The record (Update, Delete; optional for Create).
    #[serde(default)]
    pub record_id: Option<String>,
    /// The attributes to create or set.
    #[serde(default)]
    pub attributes: Attributes,
    /// Jobs this event creates run one at a time, in submission order, with every other
    /// job of the org that names the same token (Dataverse's dependency token). Chains
    /// are per org: two orgs using the same string share nothing.
    #[serde(default)]
    pub dependency_token: Option<String>,
}

/// What an event did.
#[derive(Debug, Clone, PartialEq)]
pub struct EventOutcome {
    pub record_id: String,
    pub correlation_id: String,
    /// Outputs of the synchronous steps, by step name.
    pub sync_outputs: Vec<(String, PluginOutput)>,
    /// Jobs created for asynchronous steps and workflows (this event and the writes of
    /// its synchronous steps).
    pub jobs: Vec<JobId>,
}

/// A change that may start steps and workflows.
pub(super) struct Trigger {
    pub message: &'static str,
    pub entity: String,
    pub id: String,
    pub changed: Vec<String>,
    pub pre_image: Option<Entity>,
    /// What the change wrote (Create, Update): the jobs' Target.
    pub written: Option<Attributes>,
    pub depth: u32,
}

impl Trigger {
    pub fn of_change(change: &RecordChange, depth: u32) -> Trigger {
        let (message, entity, id, written) = match change {
            RecordChange::Create { entity, id, attributes } => ("Create", entity, id, Some(attributes)),
            RecordChange::Update { entity, id, attributes } => ("Update", entity, id, Some(attributes)),
            RecordChange::Delete { entity, id } => ("Delete", entity, id, None),
        };
        Trigger {
            message,
            entity: entity.clone(),
            id: id.clone(),
            changed: written.map(|w| w.keys().cloned().collect()).unwrap_or_default(),
            pre_image: None,
            written: written.cloned(),
            depth,
        }
    }
}

fn matches(definition: &Definition, org: OrgId, trigger: &Trigger) -> bool {
    let t = &definition.trigger;
    definition.org == org
        && definition.active
        && !matches!(definition.kind, DefinitionKind::CustomApi { .. })
        && t.message.eq_ignore_ascii_case(trigger.message)
        && t.entity == trigger.entity
        && (t.filtering_attributes.is_empty()
            || trigger.message != "Update"
            || t.filtering_attributes.iter().any(|a| trigger.changed.contains(a)))
}

fn is_sync(definition: &Definition) -> bool {
    matches!(definition.kind, DefinitionKind::Step { mode: Mode::Synchronous, .. })
}

/// Reads the records a batch's events name, one read per entity instead of one per
/// event (on PostgreSQL each is a round trip). A failed read-ahead is only a lost
/// shortcut: each event then reads its record itself, and reports what fails.
fn read_ahead(overlay: &Overlay, org: OrgId, events: &[Event]) {
    let mut named: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for event in events {
        let id = match (&event.record_id, event.attributes.get("id")) {
            (Some(id), _) | (None, Some(Value::String(id))) => id,
            _ => continue,
        };
        named.entry(event.entity.as_str()).or_default().push(id.clone());
    }
    let org = org.0.to_string();
    for (entity, ids) in named {
        let _ = overlay.read_ahead(&org, entity, &ids);
    }
}

impl Service {
    /// Fires an event through the API (depth 1, a new correlation).
    pub async fn fire(&self, org: OrgId, event: Event) -> Result<EventOutcome> {
        let mut outcomes = self.fire_batch(org, vec![event]).await?;
        Ok(outcomes.pop().expect("one event, one outcome"))
    }

    /// Fires many events as one transaction (bulk import): each is handled as `fire`
    /// handles one, later events see earlier ones' writes, and all commit together or
    /// not at all. One commit instead of one per event is what makes imports fast.
    pub async fn fire_batch(&self, org: OrgId, events: Vec<Event>) -> Result<Vec<EventOutcome>> {
        self.fire_events(org, events, false).await
    }

    /// Fires many events as a bulk import: as [`Self::fire_batch`], but the async steps
    /// and workflows that the imported records trigger start jobs as each one's `bulk`
    /// setting says: one per record, one per N records (their ids in `record_ids`), or
    /// one for the whole request after its records commit. Jobs that name several
    /// records are listed on the batch's last event. Triggers of what sync steps write,
    /// and every trigger one level deeper, are per record as always.
    pub async fn import_batch(&self, org: OrgId, events: Vec<Event>) -> Result<Vec<EventOutcome>> {
        self.fire_events(org, events, true).await
    }

    async fn fire_events(&self, org: OrgId, events: Vec<Event>, import: bool) -> Result<Vec<EventOutcome>> {
        let store: Arc<dyn RecordStore> = self.shared.store.clone();
        let overlay = Arc::new(Overlay::new(store));
        if events.len() > 1 {
            read_ahead(&overlay, org, &events);
        }
        let mut prepared = Vec::with_capacity(events.len());
        for event in events {
            let start = overlay.changes_len();
            let token = event.dependency_token.clone();
            if let Some(token) = &token {
                crate::limits::name("a dependency token", token)
                    .map_err(crate::records::RecordError::from)?;
            }
            let (outcome, core, pre_image) = self.prepare(org, event, &overlay).await?;
            prepared.push((outcome, start, core, pre_image, overlay.changes_len(), token));
        }
        let changes = overlay.changes();
        let _turn = self.commit_turn(org).await?;
        let mut planned = Vec::new();
        let mut ranges = Vec::with_capacity(prepared.len());
        let mut coalesced = import.then(Coalesced::default);
        // The state lock is taken per event, not for the request: planning a job reads
        // its post-image and encodes its payload, and a request of up to 1,000 events
        // (5,000 for an import) planned under one hold kept every other tenant's events,
        // starts and rounds waiting for all of them. Each event is planned against the
        // definitions as they are at its turn.
        for (outcome, start, core, pre_image, end, token) in &mut prepared {
            let mut triggers: Vec<Trigger> = changes[*start..*end]
                .iter()
                .enumerate()
                .map(|(n, change)| Trigger::of_change(change, if *start + n == *core { 1 } else { 2 }))
                .collect();
            if let Some(trigger) = triggers.get_mut(*core - *start) {
                trigger.pre_image = pre_image.take();
            }
            let mut jobs = self.plan_jobs_coalescing(
                &mut self.state(),
                org,
                &triggers,
                &outcome.correlation_id,
                overlay.as_ref(),
                coalesced.as_mut(),
            );
            for job in &mut jobs {
                job.dependency_token = token.clone();
            }
            ranges.push(planned.len()..planned.len() + jobs.len());
            planned.extend(jobs);
        }
        if let Some(coalesced) = coalesced {
            let bulk = bulk_jobs(&mut self.state(), org, coalesced, self.now());
            if let Some(last) = ranges.last_mut() {
                last.end += bulk.len();
            }
            planned.extend(bulk);
        }
        // The changes, the sync steps' writes and the jobs they start commit together; an
        // import commits IMPORT_CHUNK events a transaction (see there).
        let chunk = if import { IMPORT_CHUNK } else { prepared.len().max(1) };
        let (mut changes, mut planned) = (changes.into_iter(), planned.into_iter());
        let mut chunks = Vec::with_capacity(prepared.len().div_ceil(chunk));
        for first in (0..prepared.len()).step_by(chunk) {
            let last = (first + chunk).min(prepared.len()) - 1;
            let batch = Batch {
                changes: changes
                    .by_ref()
                    .take(prepared[last].4 - prepared[first].1)
                    .map(|c| (org, c))
                    .collect(),
                jobs: planned.by_ref().take(ranges[last].end - ranges[first].start).collect(),
                ..Batch::default()
            };
            chunks.push((first, batch));
        }
        let ids = self.commit_chunks(org, chunks).await?;
        Ok(prepared
            .into_iter()
            .zip(ranges)
            .map(|((mut outcome, ..), range)| {
                outcome.jobs = ids[range].to_vec();
                outcome
            })
            .collect())
    }

    /// Commits a request's transactions in order, each `(index of its first event,
    /// batch)`: one for a plain batch, one per `IMPORT_CHUNK` events for an import,
    /// or per `IMPORT_CHUNK × IMPORT_CHUNKS_ALONE` while no other org is committing.
    /// A failure after the first has committed is [`Error::PartlyImported`], naming how
    /// many events are stored; the failed chunk and those after it store nothing.
    async fn commit_chunks(&self, org: OrgId, chunks: Vec<(usize, Batch)>) -> Result<Vec<JobId>> {
        let mut ids = Vec::new();
        let mut chunks = chunks.into_iter();
        while let Some((first, mut batch)) = chunks.next() {
            if !self.others_committing(org) {
                for (_, more) in chunks.by_ref().take(IMPORT_CHUNKS_ALONE - 1) {
                    batch.changes.extend(more.changes);
                    batch.updates.extend(more.updates);
                    batch.jobs.extend(more.jobs);
                }
            }
            match self.commit_and_start(batch).await {
                Ok(new) => ids.extend(new),
                Err(error) if first > 0 => {
                    return Err(Error::PartlyImported { committed: first, error: Box::new(error) });
                }
                Err(error) => return Err(error),
            }
        }
        Ok(ids)
    }

    /// Commits a request's batch (in the writer's next group), queues its jobs and
    /// starts what may start now rather than when the driver's current round ends: a
    /// tenant's pickup latency must not depend on another tenant's round of work.
    /// Returns the new jobs' ids.
    pub(super) async fn commit_and_start(&self, batch: Batch) -> Result<Vec<JobId>> {
        let ids = self.commit_batch(batch).await?;
        self.start_ready()?;
        self.shared.work.notify_one();
        Ok(ids)
    }

    /// Applies one event to the overlay with its sync steps; returns its outcome (jobs
    /// not yet known), the index of its core change, and its pre-image.
    #[tracing::instrument(name = "event", skip_all, fields(org = org.0, message = %event.message, entity = %event.entity))]
    async fn prepare(
        &self,
        org: OrgId,
        event: Event,
        overlay: &Arc<Overlay>,
    ) -> Result<(EventOutcome, usize, Option<Entity>)> {
        let org_key = org.0.to_string();
        let message = match event.message.to_ascii_lowercase().as_str() {
            "create" => "Create",
            "update" => "Update",
            "delete" => "Delete",
            _ => {
                return Err(Error::Invalid(format!(
                    "unknown message '{}' (Create, Update or Delete)",
                    event.message
                )));
            }
        };
        let id = match (message, &event.record_id) {
            (_, Some(id)) => id.clone(),
            ("Create", None) => match event.attributes.get("id") {
                Some(Value::String(id)) => id.clone(),
                _ => sluice_core::new_id(),
            },
            _ => return Err(Error::Invalid(format!("{message} needs a record_id"))),
        };
        let pre_image = match message {
            "Create" => None,
            _ => Some(overlay.retrieve(&org_key, &event.entity, &id, &[])?),
        };
        let correlation_id = sluice_core::new_id();
        let steps = self.sync_steps(org, message, &event);
        let written = (message != "Delete").then(|| event.attributes.clone());
        let mut context =
            ExecutionContext::for_write(message, &event.entity, &id, written, pre_image.clone(), None);
        context.org_id = org_key.clone();
        context.correlation_id = correlation_id.clone();
        context.mode = Mode::Synchronous;
        let mut sync_outputs = Vec::new();

        for step in steps
            .iter()
            .filter(|s| matches!(s.kind, DefinitionKind::Step { stage, .. } if stage != Stage::PostOperation))
        {
            let output = self.run_sync_step(org, step, &context, overlay).await?;
            context.shared_variables.extend(output.shared_variables.clone());
            sync_outputs.push((step.name.clone(), output));
        }
        let core = overlay.changes_len();
        match message {
            "Create" => {
                let mut attributes = event.attributes.clone();
                attributes.insert("id".into(), Value::String(id.clone()));
                overlay.create(&org_key, &event.entity, attributes)?;
            }
            "Update" => overlay.update(&org_key, &event.entity, &id, event.attributes.clone())?,
            _ => overlay.delete(&org_key, &event.entity, &id)?,
        }
        context.post_image = match message {
            "Delete" => None,
            _ => Some(overlay.retrieve(&org_key, &event.entity, &id, &[])?),
        };
        for step in steps
            .iter()
            .filter(|s| matches!(s.kind, DefinitionKind::Step { stage: Stage::PostOperation, .. }))
        {
            let output = self.run_sync_step(org, step, &context, overlay).await?;
            context.shared_variables.extend(output.shared_variables.clone());
            sync_outputs.push((step.name.clone(), output));
        }
        tracing::debug!(record = %id, correlation = %correlation_id, sync_steps = sync_outputs.len(), "event applied");
        let outcome = EventOutcome { record_id: id, correlation_id, sync_outputs, jobs: Vec::new() };
        Ok((outcome, core, pre_image))
    }

    fn sync_steps(&self, org: OrgId, message: &'static str, event: &Event) -> Vec<Arc<Definition>> {
        let probe = Trigger {
            message,
            entity: event.entity.clone(),
            id: String::new(),
            changed: event.attributes.keys().cloned().collect(),
            pre_image: None,
            written: None,
            depth: 1,
        };
        let state = self.state();
        let mut steps: Vec<Arc<Definition>> =
            state.definitions.values().filter(|d| is_sync(d) && matches(d, org, &probe)).cloned().collect();
        steps.sort_by_key(|d| match d.kind {
            DefinitionKind::Step { stage, rank, .. } => (stage.number(), rank, d.id),
            DefinitionKind::Workflow { .. } | DefinitionKind::CustomApi { .. } => (u32::MAX, 0, d.id),
        });
        steps
    }

    /// Runs a synchronous step or a custom API inside the caller's request, against
    /// `overlay`; its error goes back to the caller.
    pub(super) async fn run_sync_step(
        &self,
        org: OrgId,
        step: &Definition,
        context: &ExecutionContext,
        overlay: &Arc<Overlay>,
    ) -> Result<PluginOutput> {
        let (plugin, stage, unsecure_config, secure_config) = match &step.kind {
            DefinitionKind::Step { plugin, stage, unsecure_config, secure_config, .. } => {
                (plugin, *stage, unsecure_config, secure_config)
            }
            DefinitionKind::CustomApi { plugin, unsecure_config, secure_config, .. } => {
                (plugin, Stage::PostOperation, unsecure_config, secure_config)
            }
            DefinitionKind::Workflow { .. } => {
                return Err(Error::Invalid("a workflow cannot run synchronously".into()));
            }
        };
        let context = context.clone().for_stage(stage);
        let _permit = self.shared.sync_gate.enter(org)?;
        let compiled = self.plugin(org, *plugin)?;
        let records = OrgRecords::new(org.0.to_string(), overlay.clone() as Arc<dyn RecordStore>);
        let config =
            crate::engine::StepConfig { unsecure: unsecure_config.clone(), secure: secure_config.clone() };
        let request = crate::engine::ExecutionRequest {
            context,
            records,
            config,
            limits: self.shared.options.limits.clone(),
            stop: None,
            outbound: self.outbound_access(org),
        };
        // A sync step is a tenant's code: on the sync steps' runtime when there is one,
        // off the node's threads. The request still awaits it, and dropping the request
        // stops it, as when it ran on the request's own task.
        let execution = match &self.shared.options.sync_steps {
            Some(runtime) => {
                let engine = self.shared.engine.clone();
                let run = AbortOnDrop(runtime.spawn(async move { engine.execute(&compiled, request).await }));
                run.await.map_err(|e| Error::StepFailed {
                    step: step.name.clone(),
                    error: crate::engine::ExecutionError::Trap {
                        code: format!("the step's run was lost: {e}"),
                    },
                })?
            }
            None => self.shared.engine.execute(&compiled, request).await,
        };
        execution.outcome.map_err(|error| Error::StepFailed { step: step.name.clone(), error })
    }

    /// Plans the jobs that `triggers` start, with loop detection; `reader` shows the
    /// records as they are after the triggering writes (they may not be committed yet).
    pub(super) fn plan_jobs(
        &self,
        state: &mut State,
        org: OrgId,
        triggers: &[Trigger],
        correlation: &str,
        reader: &dyn RecordStore,
    ) -> Vec<NewJob> {
        self.plan_jobs_coalescing(state, org, triggers, correlation, reader, None)
    }

    /// [`Self::plan_jobs`] for an import: the imported records' own triggers (depth 1)
    /// of definitions whose `bulk` is not per record go to `coalesced` instead.
    fn plan_jobs_coalescing(
        &self,
        state: &mut State,
        org: OrgId,
        triggers: &[Trigger],
        correlation: &str,
        reader: &dyn RecordStore,
        mut coalesced: Option<&mut Coalesced>,
    ) -> Vec<NewJob> {
        let now = self.now();
        let mut new_jobs = Vec::new();
        for trigger in triggers {
            let definitions: Vec<Arc<Definition>> = state
                .definitions
                .values()
                .filter(|d| !is_sync(d) && matches(d, org, trigger))
                .cloned()
                .collect();
            if definitions.is_empty() {
                continue;
            }
            let post_image = match trigger.message {
                "Delete" => None,
                _ => reader.retrieve(&org.0.to_string(), &trigger.entity, &trigger.id, &[]).ok(),
            };
            for definition in definitions {
                if let Some(coalesced) = coalesced.as_deref_mut()
                    && trigger.depth == 1
                    && definition.kind.bulk() != Bulk::PerRecord
                {
                    coalesced
                        .entry((definition.id, trigger.message))
                        .or_insert_with(|| (definition.clone(), Vec::new()))
                        .1
                        .push(trigger.id.clone());
                    continue;
                }
                new_jobs.push(new_job(
                    state,
                    org,
                    &definition,
                    trigger,
                    post_image.clone(),
                    correlation,
                    now,
                    None,
                ));
            }
        }
        new_jobs
    }
}

/// Events of an import committed per transaction while other orgs commit too. An import
/// is validated whole (every event prepared, its sync steps run, on one overlay) before
/// anything commits, then written in transactions of this many events, so that the
/// store's one writer serves other tenants' commits between them: their commit waits at
/// most for one of these (one transaction of 5,000 events held it for about 100 ms when
/// ids were random). An import request whose later transaction fails (a write conflict
/// with another writer) keeps the events before it, as Dataverse's imports do; the
/// error says so. (20 rather than 100: a victim's p99 beside a batched import 1.6 times
/// its own alone rather than 2.2, and the import half as fast, hence
/// [`IMPORT_CHUNKS_ALONE`]; BENCHMARKS.md.)
pub const IMPORT_CHUNK: usize = 20;

/// Transactions of [`IMPORT_CHUNK`] events an import merges into one while no other org
/// has asked to commit within the last 100 ms: alone, an import writes 100 events a
/// transaction, as fast as before.
pub const IMPORT_CHUNKS_ALONE: usize = 5;

/// An import's records per (definition, message) whose jobs are coalesced, in order,
/// with the definition as their events were planned against (the state lock is taken
/// per event, so it may be replaced before the request's jobs are made).
type Coalesced = std::collections::BTreeMap<(DefinitionId, &'static str), (Arc<Definition>, Vec<String>)>;

impl Service {
    /// Counts the loop rule's workflow starts again from the store: the last hour's
    /// workflow jobs on a record of `org` (of every org: `None`). A node does so when it
    /// starts and when it takes an org over, so that neither a restart nor a handover
    /// gives a looping workflow 16 more starts. Blocks the thread.
    pub(super) fn restore_loop_counts(&self, org: Option<OrgId>) -> Result<()> {
        let orgs = match org {
            Some(org) => vec![org],
            None => self.shared.store.orgs()?.into_iter().map(|(org, _)| org).collect(),
        };
        for org in orgs {
            let starts = self.workflow_starts(org)?;
            restore_loop_counts(&mut self.state(), org, &starts);
        }
        Ok(())
    }

    /// The last hour's starts of the org's workflows on records, from the store: the
    /// newest [`LOOP_COUNT_ROWS`].
    pub(super) fn workflow_starts(&self, org: OrgId) -> Result<Vec<WorkflowStart>> {
        let starts =
            self.shared.store.workflow_starts_since(org, self.now() - loops::HOUR, LOOP_COUNT_ROWS)?;
        if starts.len() == LOOP_COUNT_ROWS as usize {
            tracing::warn!(
                org = org.0,
                "the loop rule counts only the org's newest {LOOP_COUNT_ROWS} workflow starts"
            );
        }
        Ok(starts)
    }
}

/// The most workflow starts read back for an org's loop counts. An org whose workflows
/// started more often than this within the hour (a flood: its definitions' runaway flags
/// are up) would make every takeover of it a long read on the cluster's thread, which
/// takes the other orgs too; its oldest starts go uncounted, so a loop among them may
/// get a few more starts.
const LOOP_COUNT_ROWS: u32 = 100_000;

/// Replaces what the loop rule counted of the org's workflows with `starts`.
pub(super) fn restore_loop_counts(state: &mut State, org: OrgId, starts: &[WorkflowStart]) {
    let State { loops, definitions, .. } = state;
    loops.forget_workflows(|d| definitions.get(&d).is_some_and(|d| d.org == org));
    // As planning counts them: a job refused for its depth never counted as a start.
    let counted = |s: &&WorkflowStart| {
        !s.record.1.is_empty() && s.error_code.as_deref() != Some(loops::DEPTH_ERROR_CODE)
    };
    for start in starts.iter().filter(counted) {
        let (entity, id) = &start.record;
        loops.workflow_loops(start.definition, (entity, id), start.created_at);
    }
}

/// The jobs of an import's coalesced triggers: per definition, one per `N` records
/// (`batched(N)`) or one in all (`after-import`), each with its own correlation.
fn bulk_jobs(state: &mut State, org: OrgId, coalesced: Coalesced, now: Millis) -> Vec<NewJob> {
    let mut jobs = Vec::new();
    for ((id, message), (definition, ids)) in coalesced {
        // Deleted since its records were planned: nothing to run (as a job of a deleted
        // definition would be canceled at pickup).
        if !state.definitions.contains_key(&id) {
            continue;
        }
        let trigger = Trigger {
            message,
            entity: definition.trigger.entity.clone(),
            id: String::new(),
            changed: Vec::new(),
            pre_image: None,
            written: None,
            depth: 1,
        };
        let groups: Vec<Option<&[String]>> = match definition.kind.bulk() {
            Bulk::Batched(n) => ids.chunks(n.max(1) as usize).map(Some).collect(),
            _ => vec![None],
        };
        for group in groups {
            let mut inputs = Attributes::new();
            let count = group.map_or(ids.len(), <[String]>::len);
            inputs.insert("record_count".into(), Value::Integer(count as i64));
            if let Some(group) = group {
                let listed = serde_json::to_string(group).expect("strings serialise");
                inputs.insert("record_ids".into(), Value::String(listed));
            }
            let correlation = sluice_core::new_id();
            jobs.push(new_job(state, org, &definition, &trigger, None, &correlation, now, Some(inputs)));
        }
    }
    jobs
}

/// Queues committed jobs (those not refused at creation) with the scheduler.
pub(super) fn submit_jobs(state: &mut State, ids: &[JobId], jobs: &[NewJob]) {
    for (id, job) in ids.iter().zip(jobs) {
        if job.background.is_some() {
            state.background.insert(*id, job.org);
        }
        if job.status == Status::WaitingForResources {
            if state.queued.len() < state.kept_payloads {
                state.queued.insert(*id, super::execution::Queued::of_new(job));
            }
            state.runaways.created(job.definition, 1);
            state.scheduler.submit(crate::scheduler::JobSpec {
                id: *id,
                org: job.org,
                lane: job.lane,
                definition: job.definition,
                dependency_token: job.dependency_token.clone(),
            });
        }
    }
}

/// The entity of e-mail messages. Creating one (through the API, or from a plug-in or a
/// custom API through its record service) is a send-email request: the async steps and
/// workflows on its Create run as e-mail jobs, on the exempt lane, outside the quotas
/// (still in turns with other orgs', by cost).
pub const EMAIL_ENTITY: &str = "email";

/// The job `definition` runs for `trigger`; `bulk` holds the input parameters of a job
/// for many records of an import (no one record: no record id, no images).
#[allow(clippy::too_many_arguments)]
fn new_job(
    state: &mut State,
    org: OrgId,
    definition: &Definition,
    trigger: &Trigger,
    post_image: Option<Entity>,
    correlation: &str,
    now: Millis,
    bulk: Option<Attributes>,
) -> NewJob {
    let sends_email = trigger.entity == EMAIL_ENTITY && trigger.message == "Create";
    let (operation, version) = match &definition.kind {
        DefinitionKind::Step { .. } if sends_email => (Operation::Email, 1),
        DefinitionKind::Workflow { version, .. } if sends_email => (Operation::Email, *version),
        DefinitionKind::Step { .. } => (Operation::AsyncPlugin, 1),
        DefinitionKind::Workflow { version, .. } => (Operation::Workflow, *version),
        DefinitionKind::CustomApi { .. } => (Operation::BackgroundOperation, 1),
    };
    let mut context = ExecutionContext::for_write(
        trigger.message,
        &trigger.entity,
        &trigger.id,
        trigger.written.clone(),
        trigger.pre_image.clone(),
        post_image,
    );
    context.org_id = org.0.to_string();
    context.depth = trigger.depth;
    context.correlation_id = correlation.to_owned();
    let record = match bulk {
        Some(inputs) => {
            context.record_id = None;
            context.input_parameters = inputs;
            None
        }
        None => Some((trigger.entity.clone(), trigger.id.clone())),
    };
    let (mut status, mut error) = (Status::WaitingForResources, None);
    if state.loops.too_deep(correlation, trigger.depth, now) {
        status = Status::Failed;
        error = Some((loops::DEPTH_ERROR_CODE.to_owned(), loops::depth_message(trigger.depth)));
    } else if matches!(definition.kind, DefinitionKind::Workflow { .. })
        && !trigger.id.is_empty()
        // The org's holder counts every start of its workflows on a record; one made for
        // an org held elsewhere is counted by its holder when it adopts it.
        && state.holds(org)
        && state.loops.workflow_loops(definition.id, (&trigger.entity, &trigger.id), now)
    {
        status = Status::Canceled;
        error = Some((loops::WORKFLOW_LOOP_CODE.to_owned(), loops::WORKFLOW_LOOP_MESSAGE.to_owned()));
    }
    NewJob {
        org,
        lane: operation.lane(),
        operation,
        definition: definition.id,
        definition_version: version,
        correlation_id: correlation.to_owned(),
        depth: trigger.depth,
        record,
        payload: super::payload::encode(
            &context,
            RowKeys { org, correlation_id: correlation, depth: trigger.depth },
        ),
        dependency_token: None,
        created_at: now,
        status,
        error,
        background: None,
    }
}

/// A task that is aborted when its handle is dropped (a sync step whose request went
/// away stops at its next yield, as it did when it ran on the request's own task).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> std::future::Future for AbortOnDrop<T> {
    type Output = std::result::Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::RecordChange;

    fn creates(org: OrgId, ids: std::ops::Range<u32>) -> Batch {
        let changes = ids
            .map(|n| {
                let create = RecordChange::Create {
                    entity: "account".into(),
                    id: format!("a{n}"),
                    attributes: Attributes::new(),
                };
                (org, create)
            })
            .collect();
        Batch { changes, ..Batch::default() }
    }

    fn service_on(dir: &std::path::Path) -> Service {
        let store = Arc::new(crate::store::SqliteStore::open(&dir.join("sluice.db")).unwrap());
        let engine = crate::engine::Engine::new(crate::engine::EngineSettings::default(), None).unwrap();
        let clock = Arc::new(super::super::ManualClock::new(1_000));
        Service::open(store, engine, clock, super::super::Options::default()).unwrap()
    }

    /// An import whose third transaction fails (another request took one of its ids
    /// after it was validated), while another org commits too: the first two stay
    /// stored, the error names how many events they held, and nothing of the failed
    /// one is stored.
    #[tokio::test]
    async fn an_import_that_fails_midway_says_how_many_events_were_stored() {
        let dir = tempfile::tempdir().unwrap();
        let service = service_on(dir.path());
        let org = service.create_org("acme").unwrap();
        let other = service.create_org("contoso").unwrap();
        service.commit_batch(creates(org, 250..251)).await.unwrap();
        drop(service.commit_turn(other).await.unwrap());
        assert!(service.others_committing(org));

        let chunks =
            vec![(0, creates(org, 0..100)), (100, creates(org, 100..200)), (200, creates(org, 200..300))];
        match service.commit_chunks(org, chunks).await {
            Err(Error::PartlyImported { committed: 200, error }) => {
                assert!(matches!(*error, Error::Store(crate::store::Error::WriteConflict(_))), "{error}");
            }
            other => panic!("expected a partial import, got {other:?}"),
        }
        let stored = |id: &str| service.shared.store.retrieve(&org.0.to_string(), "account", id, &[]).is_ok();
        assert!(stored("a0") && stored("a199"), "the first two transactions stay");
        assert!(!stored("a200") && !stored("a299"), "nothing of the failed one is stored");

        let chunks = vec![(0, creates(org, 250..251)), (1, creates(org, 300..301))];
        assert!(
            matches!(service.commit_chunks(org, chunks).await, Err(Error::Store(_))),
            "a failure of the first transaction is the plain error"
        );
        assert!(!stored("a300"), "and nothing after it is tried");
    }

    /// The same import with no other org committing: its transactions are merged (up
    /// to `IMPORT_CHUNKS_ALONE` in one), so the failure takes the whole of it.
    #[tokio::test]
    async fn an_import_alone_commits_its_transactions_merged() {
        let dir = tempfile::tempdir().unwrap();
        let service = service_on(dir.path());
        let org = service.create_org("acme").unwrap();
        service.commit_batch(creates(org, 250..251)).await.unwrap();
        assert!(!service.others_committing(org), "the org's own requests are not others'");

        let chunks =
            vec![(0, creates(org, 0..100)), (100, creates(org, 100..200)), (200, creates(org, 200..300))];
        assert!(matches!(service.commit_chunks(org, chunks).await, Err(Error::Store(_))), "one transaction");
        let stored = |id: &str| service.shared.store.retrieve(&org.0.to_string(), "account", id, &[]).is_ok();
        assert!(!stored("a0") && !stored("a199"), "nothing of it is stored");
    }
}
