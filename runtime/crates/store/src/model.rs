//! The rows the store keeps and the updates it applies.

use serde::{Deserialize, Serialize};

use sluice_core::jobs::{DefinitionId, JobId, Lane, Millis, OrgId, Status};
use sluice_core::records::RecordChange;
use sluice_core::run::{Accounting, Mode, Stage};

/// What kind of work a job is (Dataverse's operation type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    AsyncPlugin,
    Workflow,
    BulkDelete,
    Import,
    Rollup,
    BackgroundOperation,
    Email,
}

impl Operation {
    pub const ALL: [Operation; 7] = [
        Operation::AsyncPlugin,
        Operation::Workflow,
        Operation::BulkDelete,
        Operation::Import,
        Operation::Rollup,
        Operation::BackgroundOperation,
        Operation::Email,
    ];

    /// Its name, as in JSON and in the jobs table (written with every job and read with
    /// every job read back: a match, not a trip through serde).
    pub fn name(self) -> &'static str {
        match self {
            Operation::AsyncPlugin => "async-plugin",
            Operation::Workflow => "workflow",
            Operation::BulkDelete => "bulk-delete",
            Operation::Import => "import",
            Operation::Rollup => "rollup",
            Operation::BackgroundOperation => "background-operation",
            Operation::Email => "email",
        }
    }

    pub fn from_name(name: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|o| o.name() == name)
    }

    pub fn lane(self) -> Lane {
        match self {
            Operation::AsyncPlugin => Lane::Priority,
            Operation::Email => Lane::Exempt,
            _ => Lane::Regular,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPlugin {
    pub id: u64,
    pub content_hash: String,
}

/// A message on an entity that starts a step or a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// `Create`, `Update`, `Delete` or a custom message.
    pub message: String,
    pub entity: String,
    /// For Update: fire only if one of these attributes changed (empty: any).
    #[serde(default)]
    pub filtering_attributes: Vec<String>,
}

/// One step of a workflow: a plug-in and its configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowStep {
    pub plugin: u64,
    #[serde(default)]
    pub config: Option<String>,
}

/// What an async step or workflow does with the records of a bulk import (an event
/// batch sent as an import): its per-record triggers are kept, coalesced, or deferred.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Bulk {
    /// One job per record, as for any event (the default).
    #[default]
    PerRecord,
    /// One job per this many records of an import request, their ids in the input
    /// parameter `record_ids` (a JSON array of strings), their number in `record_count`.
    Batched(u32),
    /// One job per import request, after its records are committed: `record_count`
    /// only (the plug-in queries what it needs).
    AfterImport,
}

/// The most records one batched job names.
pub const MAX_BULK_BATCH: u32 = 1_000;

impl std::fmt::Display for Bulk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bulk::PerRecord => f.write_str("per-record"),
            Bulk::Batched(n) => write!(f, "batched({n})"),
            Bulk::AfterImport => f.write_str("after-import"),
        }
    }
}

impl From<Bulk> for String {
    fn from(bulk: Bulk) -> String {
        bulk.to_string()
    }
}

impl TryFrom<String> for Bulk {
    type Error = String;

    /// `per-record`, `batched(N)` (1 ≤ N ≤ [`MAX_BULK_BATCH`]) or `after-import`.
    fn try_from(text: String) -> Result<Bulk, String> {
        let batched = text.strip_prefix("batched(").and_then(|rest| rest.strip_suffix(')'));
        match (text.as_str(), batched) {
            ("per-record", _) => Ok(Bulk::PerRecord),
            ("after-import", _) => Ok(Bulk::AfterImport),
            (_, Some(n)) => match n.trim().parse::<u32>() {
                Ok(n) if (1..=MAX_BULK_BATCH).contains(&n) => Ok(Bulk::Batched(n)),
                _ => Err(format!("batched(N) needs 1 <= N <= {MAX_BULK_BATCH}, not '{n}'")),
            },
            _ => Err(format!("bulk '{text}': per-record, batched(N) or after-import")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum DefinitionKind {
    /// A step registration: one plug-in on a message.
    Step {
        plugin: u64,
        stage: Stage,
        mode: Mode,
        rank: i32,
        #[serde(default)]
        unsecure_config: Option<String>,
        #[serde(default)]
        secure_config: Option<String>,
        /// What a bulk import's records start (async steps).
        #[serde(default)]
        bulk: Bulk,
    },
    /// A workflow: ordered steps run as one job on the regular lane.
    Workflow {
        version: u32,
        steps: Vec<WorkflowStep>,
        /// What a bulk import's records start.
        #[serde(default)]
        bulk: Bulk,
    },
    /// A custom API: a plug-in behind a message of its own (the trigger's message),
    /// run synchronously or as a background operation with declared parameters.
    CustomApi {
        plugin: u64,
        parameters: Vec<ApiParameter>,
        #[serde(default)]
        unsecure_config: Option<String>,
        #[serde(default)]
        secure_config: Option<String>,
    },
}

/// A declared input parameter of a custom API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ApiParameter {
    pub name: String,
    /// The value type: `string`, `integer`, `decimal`, `boolean`, `date-time`, `money`,
    /// `option-set` or `entity-reference`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub optional: bool,
}

impl DefinitionKind {
    /// What a bulk import's records start (per record for custom APIs).
    pub fn bulk(&self) -> Bulk {
        match self {
            DefinitionKind::Step { bulk, .. } | DefinitionKind::Workflow { bulk, .. } => *bulk,
            DefinitionKind::CustomApi { .. } => Bulk::PerRecord,
        }
    }

    /// `step`, `workflow` or `custom-api`.
    pub fn name(&self) -> &'static str {
        match self {
            DefinitionKind::Step { .. } => "step",
            DefinitionKind::Workflow { .. } => "workflow",
            DefinitionKind::CustomApi { .. } => "custom-api",
        }
    }
}

/// A step registration or a workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    pub id: DefinitionId,
    pub org: OrgId,
    pub name: String,
    pub trigger: Trigger,
    pub kind: DefinitionKind,
    /// A workflow is Activated (true) or Draft; a step is always active.
    pub active: bool,
    /// Delete the job when it succeeds.
    pub auto_delete: bool,
}

impl Trigger {
    /// A trigger on any change of `message` on `entity`.
    pub fn on(message: &str, entity: &str) -> Trigger {
        Trigger { message: message.into(), entity: entity.into(), filtering_attributes: Vec::new() }
    }
}

impl Definition {
    /// A new (unsaved) step registration: post-operation, rank 1, with its unsecure
    /// configuration; `mode` says whether it runs inside the event or as a job.
    pub fn step(
        org: OrgId,
        name: &str,
        plugin: u64,
        trigger: Trigger,
        mode: Mode,
        config: Option<&str>,
    ) -> Self {
        Definition {
            id: DefinitionId(0),
            org,
            name: name.into(),
            trigger,
            kind: DefinitionKind::Step {
                plugin,
                stage: Stage::PostOperation,
                mode,
                rank: 1,
                unsecure_config: config.map(Into::into),
                secure_config: None,
                bulk: Bulk::PerRecord,
            },
            active: true,
            auto_delete: false,
        }
    }

    /// A new (unsaved), activated workflow of one step, version 1.
    pub fn workflow(org: OrgId, name: &str, plugin: u64, trigger: Trigger) -> Self {
        Definition {
            id: DefinitionId(0),
            org,
            name: name.into(),
            trigger,
            kind: DefinitionKind::Workflow {
                version: 1,
                steps: vec![WorkflowStep { plugin, config: None }],
                bulk: Bulk::PerRecord,
            },
            active: true,
            auto_delete: false,
        }
    }
}

/// A job to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub org: OrgId,
    pub lane: Lane,
    pub operation: Operation,
    pub definition: DefinitionId,
    pub definition_version: u32,
    pub correlation_id: String,
    pub depth: u32,
    /// The record the event concerned (entity, id), for loop detection and display.
    pub record: Option<(String, String)>,
    /// The execution context in the service's stored form: opaque bytes to the store.
    pub payload: Vec<u8>,
    pub dependency_token: Option<String>,
    pub created_at: Millis,
    /// WaitingForResources, or a terminal status for a job refused at creation.
    pub status: Status,
    pub error: Option<(String, String)>,
    /// A background operation's callback and expiry, stored with the job.
    pub background: Option<Background>,
}

/// What a background operation adds to its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Background {
    pub callback_uri: Option<String>,
    /// When the operation (and its job) is deleted: its TTL.
    pub expires_at: Millis,
}

/// Where a background operation's callback stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryState {
    /// No callback was asked for.
    None,
    /// The operation has not ended yet, or its callback is being delivered.
    Waiting,
    /// The receiver answered 2xx.
    Delivered,
    /// Every try failed (error, timeout, non-2xx answer or a redirect, never followed).
    Failed,
    /// The target is not allowed (loopback, private, link-local, …): never contacted.
    Refused,
}

/// A stored background operation: its job's id, callback and delivery record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationRow {
    pub job: JobId,
    pub org: OrgId,
    pub callback_uri: Option<String>,
    pub expires_at: Millis,
    pub delivery: Delivery,
}

/// The delivery record of a callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    pub state: DeliveryState,
    pub attempts: u32,
    /// Why the last try failed, or why the target was refused.
    pub error: Option<String>,
    /// When the delivery ended.
    pub at: Option<Millis>,
}

/// A tenant token, as stored: the token itself is never kept, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: u64,
    pub org: OrgId,
    pub label: String,
    /// The token's first characters, to recognise it in a list.
    pub prefix: String,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
}

/// A stored plug-in version (its bytes are fetched separately).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginRow {
    pub id: u64,
    pub name: String,
    pub content_hash: String,
    pub size: u64,
}

/// Which jobs to list; every field narrows the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFilter {
    pub status: Option<Status>,
    pub lane: Option<Lane>,
    pub definition: Option<DefinitionId>,
    pub correlation_id: Option<String>,
    /// Only jobs older than this one (pages through a long list, newest first).
    pub before: Option<JobId>,
    pub limit: u32,
}

impl JobFilter {
    /// Every job, up to `limit`.
    pub fn all(limit: u32) -> Self {
        JobFilter { status: None, lane: None, definition: None, correlation_id: None, before: None, limit }
    }
}

/// A stored job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRow {
    pub id: JobId,
    pub org: OrgId,
    pub lane: Lane,
    pub operation: Operation,
    pub definition: DefinitionId,
    pub definition_version: u32,
    pub correlation_id: String,
    pub depth: u32,
    pub record: Option<(String, String)>,
    /// The execution context in the service's stored form (see [`NewJob::payload`]).
    #[serde(skip)]
    pub payload: Vec<u8>,
    pub dependency_token: Option<String>,
    pub status: Status,
    pub created_at: Millis,
    pub started_at: Option<Millis>,
    pub completed_at: Option<Millis>,
    pub postpone_until: Option<Millis>,
    pub retry_count: u32,
    pub postponement_count: u32,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub output: Option<String>,
    pub accounting: Accounting,
    pub trace: Option<String>,
    /// When its recent exceptions happened (within its exception window), so a restart
    /// keeps counting them.
    pub exception_times: Vec<Millis>,
}

/// What a job's start needs of its row, read back when its payload is not in memory
/// (`Store::starts_by_id`): eight of its columns, not all of them.
#[derive(Debug, Clone, PartialEq)]
pub struct StartRow {
    pub id: JobId,
    pub lane: Lane,
    pub definition: DefinitionId,
    pub correlation_id: String,
    pub depth: u32,
    pub payload: Vec<u8>,
    pub created_at: Millis,
    /// Whether it never ran before (no retry, no postponement): its pickup latency counts.
    pub first_run: bool,
}

impl From<JobRow> for StartRow {
    fn from(row: JobRow) -> StartRow {
        StartRow {
            id: row.id,
            lane: row.lane,
            definition: row.definition,
            correlation_id: row.correlation_id,
            depth: row.depth,
            payload: row.payload,
            created_at: row.created_at,
            first_run: row.retry_count == 0 && row.postponement_count == 0,
        }
    }
}

/// A state transition of a job.
#[derive(Debug, Clone, PartialEq)]
pub enum JobUpdate {
    Started {
        id: JobId,
        org: OrgId,
        at: Millis,
    },
    /// An execution ended. `changes` (the plug-in's record writes) are applied in the
    /// same transaction, to `org`'s records; only for a succeeded run.
    Finished {
        id: JobId,
        org: OrgId,
        /// The job's lane (the finished counts are kept per lane).
        lane: Lane,
        at: Millis,
        /// When this run started, if its start is written with its end (a run shorter
        /// than a commit usually is: one row write instead of two); else `None` and the
        /// start was written by a [`JobUpdate::Started`] before.
        started: Option<Millis>,
        status: Status,
        postpone_until: Option<Millis>,
        retried: bool,
        postponement_count: u32,
        error: Option<(String, String)>,
        output: Option<String>,
        accounting: Accounting,
        trace: Option<String>,
        changes: Vec<RecordChange>,
        /// Delete the job row instead (auto-delete on success).
        delete: bool,
        /// Its recent exceptions' times after this run (see [`JobRow::exception_times`]).
        exception_times: Vec<Millis>,
    },
    /// A status change without a run (cancel, pause request, resume, cancel on pickup).
    Status {
        id: JobId,
        org: OrgId,
        lane: Lane,
        at: Millis,
        status: Status,
        error: Option<(String, String)>,
    },
}

impl JobUpdate {
    /// The job it changes.
    pub fn id(&self) -> JobId {
        match self {
            JobUpdate::Started { id, .. } | JobUpdate::Finished { id, .. } | JobUpdate::Status { id, .. } => {
                *id
            }
        }
    }

    /// The org whose job this is.
    pub fn org(&self) -> OrgId {
        match self {
            JobUpdate::Started { org, .. }
            | JobUpdate::Finished { org, .. }
            | JobUpdate::Status { org, .. } => *org,
        }
    }
}

/// A workflow job made on a record: one start, as the loop rule counts them (more than
/// 16 of one workflow on one record within an hour is a loop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowStart {
    pub definition: DefinitionId,
    /// The record's entity and id.
    pub record: (String, String),
    pub created_at: Millis,
    /// Why it ended, if it failed or was canceled (a job refused for its depth was never
    /// counted as a start).
    pub error_code: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::Operation;

    #[test]
    fn an_operations_name_is_its_json_name() {
        for operation in Operation::ALL {
            assert_eq!(serde_json::to_string(&operation).unwrap(), format!("\"{}\"", operation.name()));
            assert_eq!(Operation::from_name(operation.name()), Some(operation));
        }
        assert_eq!(Operation::from_name("teleport"), None);
    }
}
