//! Custom APIs and background operations: a registered plug-in behind a message of its
//! own, run synchronously inside a request or as a background operation (a system job
//! on the regular lane whose end is announced to its callback).

use std::sync::Arc;

use super::events::Trigger as Change;
use super::payload::RowKeys;
use super::{DAY, Error, Result, Service};
use crate::engine::{ExecutionContext, Mode, PluginOutput};
use crate::jobs::{DefinitionId, JobId, Millis, OrgId, Status};
use crate::records::{Attributes, Overlay, RecordStore, Value};
use crate::store::{
    ApiParameter, Background, Batch, Definition, DefinitionKind, JobRow, NewJob, Operation, OperationRow,
    Trigger,
};

/// What DELETE on an ended background operation answers (Dataverse's words).
pub const CANCEL_TERMINAL_MESSAGE: &str =
    "Canceling background operation is not allowed after it is in terminal state.";
/// What DELETE on a running background operation answers.
pub const CANCEL_STARTED_MESSAGE: &str =
    "Canceling background operation is not allowed after it has started.";

const VALUE_TYPES: &[&str] =
    &["string", "integer", "decimal", "boolean", "date-time", "money", "option-set", "entity-reference"];

fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::String(_) => "string",
        Value::Integer(_) => "integer",
        Value::Decimal(_) => "decimal",
        Value::Boolean(_) => "boolean",
        Value::DateTime(_) => "date-time",
        Value::Money(_) => "money",
        Value::OptionSet(_) => "option-set",
        Value::EntityReference(_) => "entity-reference",
    }
}

/// Checks input parameters against a custom API's declaration.
fn check_parameters(declared: &[ApiParameter], given: &Attributes) -> Result<()> {
    for name in given.keys() {
        if !declared.iter().any(|p| &p.name == name) {
            return Err(Error::Invalid(format!("unknown parameter '{name}'")));
        }
    }
    for parameter in declared {
        match given.get(&parameter.name) {
            None | Some(Value::Null) if !parameter.optional => {
                return Err(Error::Invalid(format!("missing parameter '{}'", parameter.name)));
            }
            None | Some(Value::Null) => {}
            Some(value) => {
                let actual = type_of(value);
                let widened = actual == "integer" && matches!(parameter.kind.as_str(), "decimal" | "money");
                if actual != parameter.kind && !widened {
                    return Err(Error::Invalid(format!(
                        "parameter '{}' is {} but must be {}",
                        parameter.name, actual, parameter.kind
                    )));
                }
            }
        }
    }
    Ok(())
}

fn check_api_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 100
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
    if !valid {
        return Err(Error::Invalid(format!(
            "custom API name '{name}': 1 to 100 letters, digits, '_', '.' or '-'"
        )));
    }
    if ["create", "update", "delete"].contains(&name.to_ascii_lowercase().as_str()) {
        return Err(Error::Invalid(format!("'{name}' is a core message, not a custom API name")));
    }
    Ok(())
}

impl Service {
    /// Registers a custom API: a plug-in behind the message `name` (unique in the org)
    /// with declared input parameters.
    pub fn register_custom_api(
        &self,
        org: OrgId,
        name: &str,
        plugin: u64,
        parameters: Vec<ApiParameter>,
        unsecure_config: Option<String>,
        secure_config: Option<String>,
    ) -> Result<DefinitionId> {
        check_api_name(name)?;
        for parameter in &parameters {
            if !VALUE_TYPES.contains(&parameter.kind.as_str()) {
                return Err(Error::Invalid(format!(
                    "parameter '{}' has unknown type '{}' (one of {})",
                    parameter.name,
                    parameter.kind,
                    VALUE_TYPES.join(", ")
                )));
            }
        }
        if self.custom_api(org, name).is_ok() {
            return Err(Error::Conflict(format!("custom API '{name}'")));
        }
        self.save_definition(Definition {
            id: DefinitionId(0),
            org,
            name: name.to_owned(),
            trigger: Trigger::on(name, ""),
            kind: DefinitionKind::CustomApi { plugin, parameters, unsecure_config, secure_config },
            active: true,
            auto_delete: false,
        })
    }

    /// The org's custom API of that name.
    pub fn custom_api(&self, org: OrgId, name: &str) -> Result<Definition> {
        self.state()
            .definitions
            .values()
            .find(|d| {
                d.org == org
                    && matches!(d.kind, DefinitionKind::CustomApi { .. })
                    && d.trigger.message == name
            })
            .map(|d| Definition::clone(d))
            .ok_or(Error::NotFound("custom API"))
    }

    fn api_context(
        &self,
        org: OrgId,
        api: &Definition,
        parameters: Attributes,
        mode: Mode,
    ) -> Result<ExecutionContext> {
        let DefinitionKind::CustomApi { parameters: declared, .. } = &api.kind else {
            return Err(Error::NotFound("custom API"));
        };
        check_parameters(declared, &parameters)?;
        let mut context = ExecutionContext::new(&api.trigger.message, "");
        context.org_id = org.0.to_string();
        context.correlation_id = sluice_core::new_id();
        context.mode = mode;
        context.input_parameters = parameters;
        Ok(context)
    }

    /// Runs a custom API inside the request (the 2-minute deadline of a synchronous
    /// step); its writes commit, with the jobs they trigger, only if it succeeds.
    pub async fn run_custom_api(
        &self,
        org: OrgId,
        name: &str,
        parameters: Attributes,
    ) -> Result<PluginOutput> {
        let api = self.custom_api(org, name)?;
        let context = self.api_context(org, &api, parameters, Mode::Synchronous)?;
        let overlay = Arc::new(Overlay::new(self.shared.store.clone() as Arc<dyn RecordStore>));
        let output = self.run_sync_step(org, &api, &context, &overlay).await?;
        let changes = overlay.changes();
        let triggers: Vec<Change> = changes.iter().map(|c| Change::of_change(c, 2)).collect();
        let _turn = self.commit_turn(org).await?;
        let jobs =
            self.plan_jobs(&mut self.state(), org, &triggers, &context.correlation_id, overlay.as_ref());
        let batch =
            Batch { changes: changes.into_iter().map(|c| (org, c)).collect(), jobs, ..Batch::default() };
        self.commit_and_start(batch).await?;
        Ok(output)
    }

    /// Starts a custom API as a background operation: a job on the regular lane, kept
    /// for the operation TTL; `callback_uri` is told when it ends.
    pub async fn start_background_operation(
        &self,
        org: OrgId,
        name: &str,
        parameters: Attributes,
        callback_uri: Option<String>,
        dependency_token: Option<String>,
    ) -> Result<JobId> {
        if let Some(token) = &dependency_token {
            crate::limits::name("a dependency token", token).map_err(crate::records::RecordError::from)?;
        }
        let api = self.custom_api(org, name)?;
        let context = self.api_context(org, &api, parameters, Mode::Asynchronous)?;
        let now = self.now();
        let ttl = Millis::from(self.shared.options.retention.operation_days) * DAY;
        let keys = RowKeys { org, correlation_id: &context.correlation_id, depth: 1 };
        let job = NewJob {
            org,
            lane: Operation::BackgroundOperation.lane(),
            operation: Operation::BackgroundOperation,
            definition: api.id,
            definition_version: 1,
            correlation_id: context.correlation_id.clone(),
            depth: 1,
            record: None,
            payload: super::payload::encode(&context, keys),
            dependency_token,
            created_at: now,
            status: Status::WaitingForResources,
            error: None,
            background: Some(Background { callback_uri, expires_at: now + ttl }),
        };
        let ids = self.commit_and_start(Batch { jobs: vec![job], ..Batch::default() }).await?;
        Ok(ids[0])
    }

    /// A background operation of the org: its job and its callback record.
    pub fn operation(&self, org: OrgId, id: JobId) -> Result<(JobRow, OperationRow)> {
        let operation =
            self.shared.store.operation(org, id)?.ok_or(Error::NotFound("background operation"))?;
        Ok((self.job(org, id)?, operation))
    }

    /// Cancels a background operation that has not started; refuses once it has.
    pub fn cancel_operation(&self, org: OrgId, id: JobId) -> Result<Status> {
        let (job, _) = self.operation(org, id)?;
        match job.status {
            status if status.is_terminal() => Err(Error::CancelRefused(CANCEL_TERMINAL_MESSAGE)),
            Status::InProgress | Status::Pausing | Status::Canceling => {
                Err(Error::CancelRefused(CANCEL_STARTED_MESSAGE))
            }
            _ => self.cancel(org, id),
        }
    }
}
