//! The tenant's definitions: its org, plug-ins, steps, workflows and custom APIs.

use axum::Json;
use axum::body::Body as RawBody;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::AppState;
use super::auth::Tenant;
use super::error::{ApiError, Body, ErrorBody, Query, parse_id, too_large};
use super::views::{
    CustomApiRequest, DefinitionView, OwnOrgView, PluginView, StepRequest, UploadQuery, WorkflowRequest,
    WorkflowStepView, WorkflowVersion,
};
use crate::jobs::{DefinitionId, OrgId};
use crate::limits::{self, MAX_API_PARAMETERS, MAX_FILTERING_ATTRIBUTES, MAX_WORKFLOW_STEPS, TooLarge};
use crate::service::{LaneHealth, Service};
use crate::store::{Definition, DefinitionKind, Trigger, WorkflowStep};

/// The caller's organisation and its callback signing secret.
#[utoipa::path(get, path = "/org", tag = "tenant",
    responses((status = 200, body = OwnOrgView), (status = "4XX", body = ErrorBody)))]
pub async fn own_org(
    Tenant(org): Tenant,
    State(state): State<AppState>,
) -> Result<Json<OwnOrgView>, ApiError> {
    Ok(Json(OwnOrgView {
        id: org.0,
        name: state.service.org_name(org)?,
        webhook_secret: state.service.webhook_secret(org)?,
    }))
}

/// The caller's quotas and throttling state, per lane (read-only for tenants).
#[utoipa::path(get, path = "/quotas", tag = "tenant",
    responses((status = 200, body = Vec<LaneHealth>), (status = "4XX", body = ErrorBody)))]
pub async fn own_quotas(
    Tenant(org): Tenant,
    State(state): State<AppState>,
) -> Result<Json<Vec<LaneHealth>>, ApiError> {
    Ok(Json(state.service.counts_read(Some(org), move |service| service.lane_health(org)).await?))
}

/// Uploads a plug-in: the raw bytes of a WebAssembly component. It is validated and
/// compiled now; the same bytes give the same version.
#[utoipa::path(post, path = "/plugins", tag = "tenant", params(("name" = Option<String>, Query)),
    request_body(content = Vec<u8>, content_type = "application/wasm"),
    responses((status = 201, body = PluginView), (status = "4XX", body = ErrorBody)))]
pub async fn upload_plugin(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    Query(query): Query<UploadQuery>,
    body: RawBody,
) -> Result<(StatusCode, Json<PluginView>), ApiError> {
    limits::name("a plug-in's name", query.name.as_deref().unwrap_or_default())?;
    let bytes = axum::body::to_bytes(body, state.max_upload_bytes).await.map_err(|_| too_large())?;
    let name = query.name.unwrap_or_else(|| "plugin".into());
    let stored = state.service.upload_plugin_bounded(org, &name, bytes.to_vec()).await?;
    let view =
        PluginView { id: stored.id, name, content_hash: stored.content_hash, size: bytes.len() as u64 };
    Ok((StatusCode::CREATED, Json(view)))
}

/// Lists the org's plug-in versions.
#[utoipa::path(get, path = "/plugins", tag = "tenant",
    responses((status = 200, body = Vec<PluginView>), (status = "4XX", body = ErrorBody)))]
pub async fn list_plugins(
    Tenant(org): Tenant,
    State(state): State<AppState>,
) -> Result<Json<Vec<PluginView>>, ApiError> {
    Ok(Json(state.service.plugins(org)?.into_iter().map(PluginView::from).collect()))
}

fn of_kind(service: &Service, org: OrgId, kind: &'static str) -> Vec<DefinitionView> {
    service.definitions(org).into_iter().filter(|d| d.kind.name() == kind).map(DefinitionView::from).collect()
}

/// The org's definition of that kind; any other id (another kind, another org) is 404.
fn find(service: &Service, org: OrgId, id: &str, kind: &'static str) -> Result<Definition, ApiError> {
    let id = DefinitionId(parse_id(id, kind)?);
    service
        .definition(org, id)
        .ok()
        .filter(|d| d.kind.name() == kind)
        .ok_or_else(|| ApiError::not_found(kind))
}

/// Registers a step: a plug-in on a message of an entity, sync or async.
#[utoipa::path(post, path = "/steps", tag = "tenant", request_body = StepRequest,
    responses((status = 201, body = DefinitionView), (status = "4XX", body = ErrorBody)))]
pub async fn register_step(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    Body(r): Body<StepRequest>,
) -> Result<(StatusCode, Json<DefinitionView>), ApiError> {
    limits::name("a step's name", &r.name)?;
    check_trigger(&r.entity, &r.filtering_attributes)?;
    let message = core_message(&r.message)?;
    let definition = Definition {
        id: DefinitionId(0),
        org,
        name: r.name,
        trigger: Trigger { message, entity: r.entity, filtering_attributes: r.filtering_attributes },
        kind: DefinitionKind::Step {
            plugin: r.plugin,
            stage: r.stage,
            mode: r.mode,
            rank: r.rank,
            unsecure_config: r.unsecure_config,
            secure_config: r.secure_config,
            bulk: r.bulk,
        },
        active: true,
        auto_delete: r.auto_delete,
    };
    let id = state.service.save_definition(definition)?;
    Ok((StatusCode::CREATED, Json(state.service.definition(org, id)?.into())))
}

/// Checks a trigger's entity and filtering attributes against the [`limits`].
fn check_trigger(entity: &str, filtering_attributes: &[String]) -> Result<(), TooLarge> {
    limits::name("a trigger's entity", entity)?;
    let count = filtering_attributes.len();
    limits::check("a trigger's filtering attributes", count, MAX_FILTERING_ATTRIBUTES, "attributes")?;
    filtering_attributes.iter().try_for_each(|name| limits::name("a filtering attribute", name))
}

fn core_message(message: &str) -> Result<String, ApiError> {
    match message.to_ascii_lowercase().as_str() {
        "create" => Ok("Create".into()),
        "update" => Ok("Update".into()),
        "delete" => Ok("Delete".into()),
        _ => Err(ApiError::bad_request(
            "invalid-request",
            format!("unknown message '{message}' (Create, Update or Delete)"),
        )),
    }
}

#[utoipa::path(get, path = "/steps", tag = "tenant",
    responses((status = 200, body = Vec<DefinitionView>), (status = "4XX", body = ErrorBody)))]
pub async fn list_steps(Tenant(org): Tenant, State(state): State<AppState>) -> Json<Vec<DefinitionView>> {
    Json(of_kind(&state.service, org, "step"))
}

#[utoipa::path(get, path = "/steps/{id}", tag = "tenant", params(("id" = u64, Path)),
    responses((status = 200, body = DefinitionView), (status = "4XX", body = ErrorBody)))]
pub async fn get_step(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DefinitionView>, ApiError> {
    Ok(Json(find(&state.service, org, &id, "step")?.into()))
}

/// Deletes a step registration: no new jobs; its queued jobs are canceled on pickup.
#[utoipa::path(delete, path = "/steps/{id}", tag = "tenant", params(("id" = u64, Path)),
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
pub async fn delete_step(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let step = find(&state.service, org, &id, "step")?;
    state.service.delete_definition(org, step.id)?;
    Ok(StatusCode::NO_CONTENT)
}

fn steps(list: Vec<WorkflowStepView>) -> Result<Vec<WorkflowStep>, ApiError> {
    if list.is_empty() {
        return Err(ApiError::bad_request("invalid-request", "a workflow has at least one step"));
    }
    limits::check("a workflow", list.len(), MAX_WORKFLOW_STEPS, "steps")?;
    Ok(list.into_iter().map(|s| WorkflowStep { plugin: s.plugin, config: s.config }).collect())
}

/// Creates a workflow (Draft unless `activate`), version 1.
#[utoipa::path(post, path = "/workflows", tag = "tenant", request_body = WorkflowRequest,
    responses((status = 201, body = DefinitionView), (status = "4XX", body = ErrorBody)))]
pub async fn create_workflow(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    Body(r): Body<WorkflowRequest>,
) -> Result<(StatusCode, Json<DefinitionView>), ApiError> {
    limits::name("a workflow's name", &r.name)?;
    check_trigger(&r.trigger.entity, &r.trigger.filtering_attributes)?;
    let trigger = Trigger {
        message: core_message(&r.trigger.message)?,
        entity: r.trigger.entity,
        filtering_attributes: r.trigger.filtering_attributes,
    };
    let definition = Definition {
        id: DefinitionId(0),
        org,
        name: r.name,
        trigger,
        kind: DefinitionKind::Workflow { version: 1, steps: steps(r.steps)?, bulk: r.bulk },
        active: r.activate,
        auto_delete: r.auto_delete,
    };
    let id = state.service.save_definition(definition)?;
    Ok((StatusCode::CREATED, Json(state.service.definition(org, id)?.into())))
}

#[utoipa::path(get, path = "/workflows", tag = "tenant",
    responses((status = 200, body = Vec<DefinitionView>), (status = "4XX", body = ErrorBody)))]
pub async fn list_workflows(Tenant(org): Tenant, State(state): State<AppState>) -> Json<Vec<DefinitionView>> {
    Json(of_kind(&state.service, org, "workflow"))
}

#[utoipa::path(get, path = "/workflows/{id}", tag = "tenant", params(("id" = u64, Path)),
    responses((status = 200, body = DefinitionView), (status = "4XX", body = ErrorBody)))]
pub async fn get_workflow(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DefinitionView>, ApiError> {
    Ok(Json(find(&state.service, org, &id, "workflow")?.into()))
}

/// Saves a new version of a workflow (trigger and steps); it keeps its state. Jobs
/// queued from now on run the new version.
#[utoipa::path(put, path = "/workflows/{id}", tag = "tenant", params(("id" = u64, Path)),
    request_body = WorkflowVersion,
    responses((status = 200, body = DefinitionView), (status = "4XX", body = ErrorBody)))]
pub async fn version_workflow(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(r): Body<WorkflowVersion>,
) -> Result<Json<DefinitionView>, ApiError> {
    let mut workflow = find(&state.service, org, &id, "workflow")?;
    check_trigger(&r.trigger.entity, &r.trigger.filtering_attributes)?;
    let DefinitionKind::Workflow { version, bulk, .. } = workflow.kind else {
        return Err(ApiError::not_found("workflow"));
    };
    workflow.trigger = Trigger {
        message: core_message(&r.trigger.message)?,
        entity: r.trigger.entity,
        filtering_attributes: r.trigger.filtering_attributes,
    };
    workflow.kind = DefinitionKind::Workflow { version: version + 1, steps: steps(r.steps)?, bulk };
    let id = state.service.save_definition(workflow)?;
    Ok(Json(state.service.definition(org, id)?.into()))
}

async fn set_active(
    state: &AppState,
    org: OrgId,
    id: &str,
    active: bool,
) -> Result<Json<DefinitionView>, ApiError> {
    let workflow = find(&state.service, org, id, "workflow")?;
    state.service.set_active(org, workflow.id, active)?;
    Ok(Json(state.service.definition(org, workflow.id)?.into()))
}

/// Activates a workflow: events start it from now on.
#[utoipa::path(post, path = "/workflows/{id}/activate", tag = "tenant", params(("id" = u64, Path)),
    responses((status = 200, body = DefinitionView), (status = "4XX", body = ErrorBody)))]
pub async fn activate_workflow(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DefinitionView>, ApiError> {
    set_active(&state, org, &id, true).await
}

/// Deactivates a workflow (back to Draft): no new jobs, queued ones are canceled on
/// pickup, running ones finish.
#[utoipa::path(post, path = "/workflows/{id}/deactivate", tag = "tenant", params(("id" = u64, Path)),
    responses((status = 200, body = DefinitionView), (status = "4XX", body = ErrorBody)))]
pub async fn deactivate_workflow(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DefinitionView>, ApiError> {
    set_active(&state, org, &id, false).await
}

/// Deletes a workflow, as deactivation does for its jobs.
#[utoipa::path(delete, path = "/workflows/{id}", tag = "tenant", params(("id" = u64, Path)),
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
pub async fn delete_workflow(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let workflow = find(&state.service, org, &id, "workflow")?;
    state.service.delete_definition(org, workflow.id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Registers a custom API: a plug-in behind a message of its own with declared
/// parameters, run synchronously or as a background operation.
#[utoipa::path(post, path = "/custom-apis", tag = "tenant", request_body = CustomApiRequest,
    responses((status = 201, body = DefinitionView), (status = "4XX", body = ErrorBody)))]
pub async fn register_custom_api(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    Body(r): Body<CustomApiRequest>,
) -> Result<(StatusCode, Json<DefinitionView>), ApiError> {
    limits::name("a custom API's name", &r.name)?;
    limits::check("a custom API's parameters", r.parameters.len(), MAX_API_PARAMETERS, "parameters")?;
    r.parameters.iter().try_for_each(|p| limits::name("a custom API parameter's name", &p.name))?;
    let id = state.service.register_custom_api(
        org,
        &r.name,
        r.plugin,
        r.parameters,
        r.unsecure_config,
        r.secure_config,
    )?;
    Ok((StatusCode::CREATED, Json(state.service.definition(org, id)?.into())))
}

#[utoipa::path(get, path = "/custom-apis", tag = "tenant",
    responses((status = 200, body = Vec<DefinitionView>), (status = "4XX", body = ErrorBody)))]
pub async fn list_custom_apis(
    Tenant(org): Tenant,
    State(state): State<AppState>,
) -> Json<Vec<DefinitionView>> {
    Json(of_kind(&state.service, org, "custom-api"))
}

#[utoipa::path(get, path = "/custom-apis/{name}", tag = "tenant", params(("name" = String, Path)),
    responses((status = 200, body = DefinitionView), (status = "4XX", body = ErrorBody)))]
pub async fn get_custom_api(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<DefinitionView>, ApiError> {
    Ok(Json(state.service.custom_api(org, &name)?.into()))
}

#[utoipa::path(delete, path = "/custom-apis/{name}", tag = "tenant", params(("name" = String, Path)),
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
pub async fn delete_custom_api(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let api = state.service.custom_api(org, &name)?;
    state.service.delete_definition(org, api.id)?;
    Ok(StatusCode::NO_CONTENT)
}
