//! What the API answers and accepts: its own types, so the store's rows can change
//! without changing the wire format.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::engine::{Mode, PluginOutput, Stage};
use crate::records::Attributes;
use crate::service::Event;
use crate::store::{
    ApiParameter, Bulk, Definition, DefinitionKind, Delivery, JobRow, OperationRow, PluginRow, TokenRow,
};

#[derive(Debug, Serialize, ToSchema)]
pub struct OrgView {
    pub id: u32,
    pub name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrg {
    pub name: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueToken {
    #[serde(default)]
    pub label: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub id: u64,
    pub org: u32,
    pub label: String,
    /// The token's first characters.
    pub prefix: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    /// The token itself: only in the answer that issues it. Sluice keeps its hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl TokenView {
    pub fn of(row: TokenRow, token: Option<String>) -> Self {
        TokenView {
            id: row.id,
            org: row.org.0,
            label: row.label,
            prefix: row.prefix,
            created_at: row.created_at,
            revoked_at: row.revoked_at,
            token,
        }
    }
}

/// The caller's organisation, with its callback signing secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct OwnOrgView {
    pub id: u32,
    pub name: String,
    /// Verifies callback signatures (Standard Webhooks, `whsec_…`).
    pub webhook_secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PluginView {
    /// The version's id (one per distinct content in the org).
    pub id: u64,
    pub name: String,
    /// SHA-256 of the bytes: uploading the same bytes again gives the same version.
    pub content_hash: String,
    pub size: u64,
}

impl From<PluginRow> for PluginView {
    fn from(row: PluginRow) -> Self {
        PluginView { id: row.id, name: row.name, content_hash: row.content_hash, size: row.size }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// The plug-in's name (default `plugin`).
    pub name: Option<String>,
}

/// A step registration: a plug-in on a message of an entity.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepRequest {
    pub name: String,
    pub plugin: u64,
    /// `Create`, `Update`, `Delete`.
    pub message: String,
    pub entity: String,
    #[serde(default)]
    pub filtering_attributes: Vec<String>,
    /// `pre-validation`, `pre-operation` or `post-operation` (default).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub stage: Stage,
    /// `synchronous` or `asynchronous` (default).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub mode: Mode,
    #[serde(default = "one")]
    pub rank: i32,
    pub unsecure_config: Option<String>,
    pub secure_config: Option<String>,
    /// Delete each job when it succeeds.
    #[serde(default)]
    pub auto_delete: bool,
    /// What a bulk import's records start: `per-record` (default), `batched(N)` or
    /// `after-import`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub bulk: Bulk,
}

fn one() -> i32 {
    1
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerView {
    pub message: String,
    pub entity: String,
    #[serde(default)]
    pub filtering_attributes: Vec<String>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowStepView {
    pub plugin: u64,
    #[serde(default)]
    pub config: Option<String>,
}

/// A workflow: created as Draft unless `activate` is set.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowRequest {
    pub name: String,
    pub trigger: TriggerView,
    pub steps: Vec<WorkflowStepView>,
    #[serde(default)]
    pub activate: bool,
    #[serde(default)]
    pub auto_delete: bool,
    /// What a bulk import's records start: `per-record` (default), `batched(N)` or
    /// `after-import`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub bulk: Bulk,
}

/// A new version of a workflow: its trigger and steps (its state is kept).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowVersion {
    pub trigger: TriggerView,
    pub steps: Vec<WorkflowStepView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomApiRequest {
    /// The message name the API answers to, unique in the org.
    pub name: String,
    pub plugin: u64,
    #[serde(default)]
    pub parameters: Vec<ApiParameter>,
    pub unsecure_config: Option<String>,
    pub secure_config: Option<String>,
}

/// A runaway flag cleared by hand.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReleasedView {
    pub definition: u64,
    /// The flag it had (why, since when, the figures); `null` if it was not flagged.
    pub released: Option<crate::service::RunawayFlag>,
}

/// A step, a workflow or a custom API.
#[derive(Debug, Serialize, ToSchema)]
pub struct DefinitionView {
    pub id: u64,
    pub name: String,
    /// `step`, `workflow` or `custom-api`.
    pub kind: &'static str,
    pub trigger: TriggerView,
    /// Workflows: Activated (true) or Draft. Steps and custom APIs: true unless
    /// deactivated (`POST /definitions/{id}/deactivate`).
    pub active: bool,
    pub auto_delete: bool,
    /// The kind's own fields (plug-in, stage, mode, rank, steps, version, parameters).
    #[schema(value_type = Object)]
    pub spec: SpecView,
}

/// A definition's own fields as answered: a secure configuration is write-only (the
/// plug-in reads it at run time; the API only says whether there is one).
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum SpecView {
    Step {
        plugin: u64,
        stage: Stage,
        mode: Mode,
        rank: i32,
        unsecure_config: Option<String>,
        has_secure_config: bool,
        bulk: Bulk,
    },
    Workflow {
        version: u32,
        steps: Vec<WorkflowStepView>,
        bulk: Bulk,
    },
    CustomApi {
        plugin: u64,
        parameters: Vec<ApiParameter>,
        unsecure_config: Option<String>,
        has_secure_config: bool,
    },
}

impl From<DefinitionKind> for SpecView {
    fn from(kind: DefinitionKind) -> Self {
        match kind {
            DefinitionKind::Step { plugin, stage, mode, rank, unsecure_config, secure_config, bulk } => {
                SpecView::Step {
                    plugin,
                    stage,
                    mode,
                    rank,
                    unsecure_config,
                    has_secure_config: secure_config.is_some(),
                    bulk,
                }
            }
            DefinitionKind::Workflow { version, steps, bulk } => SpecView::Workflow {
                version,
                bulk,
                steps: steps
                    .into_iter()
                    .map(|s| WorkflowStepView { plugin: s.plugin, config: s.config })
                    .collect(),
            },
            DefinitionKind::CustomApi { plugin, parameters, unsecure_config, secure_config } => {
                SpecView::CustomApi {
                    plugin,
                    parameters,
                    unsecure_config,
                    has_secure_config: secure_config.is_some(),
                }
            }
        }
    }
}

impl From<Definition> for DefinitionView {
    fn from(d: Definition) -> Self {
        DefinitionView {
            id: d.id.0,
            name: d.name,
            kind: d.kind.name(),
            trigger: TriggerView {
                message: d.trigger.message,
                entity: d.trigger.entity,
                filtering_attributes: d.trigger.filtering_attributes,
            },
            active: d.active,
            auto_delete: d.auto_delete,
            spec: d.kind.into(),
        }
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: Attributes,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OutputView {
    #[schema(value_type = Object)]
    pub output_parameters: Attributes,
    #[schema(value_type = Object)]
    pub shared_variables: Attributes,
}

impl From<PluginOutput> for OutputView {
    fn from(o: PluginOutput) -> Self {
        OutputView { output_parameters: o.output_parameters, shared_variables: o.shared_variables }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<Event>,
    /// A bulk import: each matching async step and workflow starts jobs as its `bulk`
    /// setting says (per record, batched, or one after the import). Default false: every
    /// event starts its jobs as a single event would.
    #[serde(default)]
    pub import: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SyncOutputView {
    pub step: String,
    #[serde(flatten)]
    pub output: OutputView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub record_id: String,
    pub correlation_id: String,
    /// What the synchronous steps answered, in the order they ran.
    pub sync_outputs: Vec<SyncOutputView>,
    /// Jobs created for asynchronous steps and workflows.
    pub jobs: Vec<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountingView {
    pub fuel_used: u64,
    pub wall_time_us: u64,
    pub host_time_us: u64,
    pub peak_memory_bytes: u64,
}

impl From<crate::engine::Accounting> for AccountingView {
    fn from(a: crate::engine::Accounting) -> Self {
        AccountingView {
            fuel_used: a.fuel_used,
            wall_time_us: a.wall_time_us,
            host_time_us: a.host_time_us,
            peak_memory_bytes: a.peak_memory_bytes,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecordRef {
    pub entity: String,
    pub id: String,
}

/// A system job (Dataverse's AsyncOperation).
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub id: u64,
    /// `priority`, `regular` or `exempt`.
    pub lane: String,
    /// `async-plugin`, `workflow`, `background-operation`, …
    pub operation: String,
    pub definition: u64,
    pub definition_version: u32,
    pub correlation_id: String,
    pub depth: u32,
    pub record: Option<RecordRef>,
    /// State code: 0 Ready, 1 Suspended, 2 Locked, 3 Completed.
    pub state: u32,
    /// Status code: 0, 10, 20, 21, 22, 30, 31, 32.
    pub status: u32,
    pub status_name: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub postpone_until: Option<i64>,
    pub retry_count: u32,
    pub postponement_count: u32,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub output: Option<serde_json::Value>,
    pub accounting: AccountingView,
}

fn name_of<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

impl From<JobRow> for JobView {
    fn from(j: JobRow) -> Self {
        JobView {
            id: j.id.0,
            lane: j.lane.name().into(),
            operation: name_of(&j.operation),
            definition: j.definition.0,
            definition_version: j.definition_version,
            correlation_id: j.correlation_id,
            depth: j.depth,
            record: j.record.map(|(entity, id)| RecordRef { entity, id }),
            state: j.status.state() as u32,
            status: j.status.code(),
            status_name: j.status.name().into(),
            created_at: j.created_at,
            started_at: j.started_at,
            completed_at: j.completed_at,
            postpone_until: j.postpone_until,
            retry_count: j.retry_count,
            postponement_count: j.postponement_count,
            error_code: j.error_code,
            error_message: j.error_message,
            output: j.output.and_then(|o| serde_json::from_str(&o).ok()),
            accounting: j.accounting.into(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TraceView {
    pub job: u64,
    /// The plug-in's trace log (newest 10 KiB), or null once retention cleared it.
    pub trace: Option<String>,
    pub accounting: AccountingView,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobQuery {
    /// Status code (0, 10, 20, 21, 22, 30, 31, 32) or name (`failed`, …).
    pub status: Option<String>,
    /// `priority`, `regular` or `exempt`.
    pub lane: Option<String>,
    pub definition: Option<u64>,
    pub correlation: Option<String>,
    /// Only jobs older than this id (the next page).
    pub before: Option<u64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiRequest {
    /// The custom API to run.
    pub name: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: Attributes,
}

/// `ExecuteBackgroundOperation`: a custom API request and where to report its end.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackgroundRequest {
    pub request: ApiRequest,
    pub callback_uri: Option<String>,
    /// Runs after every earlier job of the org that named the same token has ended
    /// (chains are per org).
    #[serde(default)]
    pub dependency_token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptedView {
    pub id: String,
    pub location: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CallbackView {
    pub uri: String,
    pub delivery: Delivery,
}

/// A background operation's status resource.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperationView {
    pub id: String,
    pub location: String,
    pub state: u32,
    pub status: u32,
    pub status_name: String,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// The custom API's output parameters, once it succeeded.
    #[schema(value_type = Option<Object>)]
    pub output_parameters: Option<serde_json::Value>,
    /// Percent done: 0 until it ends, 100 once it ended (plug-ins do not report
    /// intermediate progress yet).
    pub progress: u32,
    pub created_at: i64,
    pub completed_at: Option<i64>,
    pub expires_at: i64,
    pub callback: Option<CallbackView>,
}

impl OperationView {
    pub fn of(job: JobRow, operation: OperationRow, location: String) -> Self {
        let output = job
            .output
            .as_deref()
            .and_then(|o| serde_json::from_str::<serde_json::Value>(o).ok())
            .and_then(|o| o.get("output_parameters").cloned());
        OperationView {
            id: job.id.0.to_string(),
            location,
            state: job.status.state() as u32,
            status: job.status.code(),
            status_name: job.status.name().into(),
            error_code: job.error_code,
            error_message: job.error_message,
            output_parameters: output,
            progress: if job.status.is_terminal() { 100 } else { 0 },
            created_at: job.created_at,
            completed_at: job.completed_at,
            expires_at: operation.expires_at,
            callback: operation.callback_uri.map(|uri| CallbackView { uri, delivery: operation.delivery }),
        }
    }
}
