//! Runaway definitions, by hand: the tenant or the operator clears a definition's
//! runaway flag (its throttle lifted, its new rate accepted as normal) or deactivates
//! it, each in one request.

use axum::Json;
use axum::extract::{Path, State};

use super::AppState;
use super::auth::{Operator, Tenant};
use super::error::{ApiError, ErrorBody, parse_id};
use super::views::{DefinitionView, ReleasedView};
use crate::jobs::{DefinitionId, OrgId};

/// Off the runtime's threads: with several nodes, the node holding the org does it and
/// this one waits for its answer.
async fn release(state: &AppState, org: OrgId, id: &str) -> Result<Json<ReleasedView>, ApiError> {
    let definition = DefinitionId(parse_id(id, "definition")?);
    let released = state.service.off_runtime(move |service| service.release_runaway(org, definition)).await?;
    Ok(Json(ReleasedView { definition: definition.0, released }))
}

fn deactivate(state: &AppState, org: OrgId, id: &str) -> Result<Json<DefinitionView>, ApiError> {
    let definition = DefinitionId(parse_id(id, "definition")?);
    state.service.set_active(org, definition, false)?;
    Ok(Json(state.service.definition(org, definition)?.into()))
}

/// Clears a definition's runaway flag: its throttle is lifted and its recent rate is
/// accepted as its normal (only a further surge flags it again). `released` is the flag
/// it had, `null` if it had none.
#[utoipa::path(post, path = "/definitions/{id}/release", tag = "tenant", params(("id" = u64, Path)),
    responses((status = 200, body = ReleasedView), (status = "4XX", body = ErrorBody)))]
pub async fn release_own(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ReleasedView>, ApiError> {
    release(&state, org, &id).await
}

/// Deactivates a definition (a step or a workflow): no new jobs, queued ones are
/// canceled on pickup, running ones finish; a runaway flag goes with it.
#[utoipa::path(post, path = "/definitions/{id}/deactivate", tag = "tenant", params(("id" = u64, Path)),
    responses((status = 200, body = DefinitionView), (status = "4XX", body = ErrorBody)))]
pub async fn deactivate_own(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DefinitionView>, ApiError> {
    deactivate(&state, org, &id)
}

/// The operator's [`release_own`] for any org.
#[utoipa::path(post, path = "/orgs/{org}/definitions/{id}/release", tag = "operator",
    params(("org" = u32, Path), ("id" = u64, Path)),
    responses((status = 200, body = ReleasedView), (status = "4XX", body = ErrorBody)))]
pub async fn release_any(
    _: Operator,
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
) -> Result<Json<ReleasedView>, ApiError> {
    let org = super::operator::org_id(&state.service, &org)?;
    release(&state, org, &id).await
}

/// The operator's [`deactivate_own`] for any org.
#[utoipa::path(post, path = "/orgs/{org}/definitions/{id}/deactivate", tag = "operator",
    params(("org" = u32, Path), ("id" = u64, Path)),
    responses((status = 200, body = DefinitionView), (status = "4XX", body = ErrorBody)))]
pub async fn deactivate_any(
    _: Operator,
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
) -> Result<Json<DefinitionView>, ApiError> {
    let org = super::operator::org_id(&state.service, &org)?;
    deactivate(&state, org, &id)
}
