//! The tenant's system jobs: list with filters, read, trace log, cancel/pause/resume.

use axum::Json;
use axum::extract::{Path, State};

use super::AppState;
use super::auth::Tenant;
use super::error::{ApiError, ErrorBody, Query, parse_id};
use super::operator::lane;
use super::views::{JobQuery, JobView, TraceView};
use crate::jobs::{DefinitionId, JobId, OrgId, Status};
use crate::store::{JobFilter, JobRow};

fn status(text: &str) -> Result<Status, ApiError> {
    let by_code = text.parse::<u32>().ok().and_then(Status::from_code);
    let by_name = || Status::ALL.into_iter().find(|s| s.name() == text);
    by_code
        .or_else(by_name)
        .ok_or_else(|| ApiError::bad_request("invalid-query", format!("unknown status '{text}'")))
}

/// Lists the org's jobs, newest first.
#[utoipa::path(get, path = "/jobs", tag = "tenant", params(
        ("status" = Option<String>, Query), ("lane" = Option<String>, Query),
        ("definition" = Option<u64>, Query), ("correlation" = Option<String>, Query),
        ("before" = Option<u64>, Query), ("limit" = Option<u32>, Query)),
    responses((status = 200, body = Vec<JobView>), (status = "4XX", body = ErrorBody)))]
pub async fn list_jobs(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    Query(q): Query<JobQuery>,
) -> Result<Json<Vec<JobView>>, ApiError> {
    let filter = JobFilter {
        status: q.status.as_deref().map(status).transpose()?,
        lane: q
            .lane
            .as_deref()
            .map(|l| {
                lane(l).map_err(|_| ApiError::bad_request("invalid-query", format!("unknown lane '{l}'")))
            })
            .transpose()?,
        definition: q.definition.map(DefinitionId),
        correlation_id: q.correlation,
        before: q.before.map(JobId),
        limit: q.limit.unwrap_or(100).clamp(1, 1000),
    };
    let jobs = state.service.org_read(Some(org), move |service| service.jobs(org, &filter)).await?;
    Ok(Json(jobs.into_iter().map(JobView::from).collect()))
}

fn job(state: &AppState, org: OrgId, id: &str) -> Result<JobRow, ApiError> {
    Ok(state.service.job(org, JobId(parse_id(id, "job")?))?)
}

#[utoipa::path(get, path = "/jobs/{id}", tag = "tenant", params(("id" = u64, Path)),
    responses((status = 200, body = JobView), (status = "4XX", body = ErrorBody)))]
pub async fn get_job(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    Ok(Json(job(&state, org, &id)?.into()))
}

/// The job's plug-in trace log and accounting.
#[utoipa::path(get, path = "/jobs/{id}/trace", tag = "tenant", params(("id" = u64, Path)),
    responses((status = 200, body = TraceView), (status = "4XX", body = ErrorBody)))]
pub async fn job_trace(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TraceView>, ApiError> {
    let job = job(&state, org, &id)?;
    Ok(Json(TraceView { job: job.id.0, trace: job.trace, accounting: job.accounting.into() }))
}

async fn command(
    state: &AppState,
    org: OrgId,
    id: &str,
    act: fn(&crate::service::Service, OrgId, JobId) -> crate::service::Result<Status>,
) -> Result<Json<JobView>, ApiError> {
    let id = JobId(parse_id(id, "job")?);
    // With several nodes, a job of an org another node holds is commanded through that
    // node and its answer awaited (up to 10 s): off the runtime's threads.
    state.service.off_runtime(move |service| act(service, org, id)).await?;
    Ok(Json(state.service.job(org, id)?.into()))
}

/// Cancels a job (Ready, Suspended, or running: stopped at its next fuel check).
#[utoipa::path(post, path = "/jobs/{id}/cancel", tag = "tenant", params(("id" = u64, Path)),
    responses((status = 200, body = JobView), (status = "4XX", body = ErrorBody)))]
pub async fn cancel_job(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    command(&state, org, &id, crate::service::Service::cancel).await
}

/// Pauses a running job (it stops at its next fuel check and waits for a resume).
#[utoipa::path(post, path = "/jobs/{id}/pause", tag = "tenant", params(("id" = u64, Path)),
    responses((status = 200, body = JobView), (status = "4XX", body = ErrorBody)))]
pub async fn pause_job(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    command(&state, org, &id, crate::service::Service::pause).await
}

/// Resumes a suspended (postponed or paused) job.
#[utoipa::path(post, path = "/jobs/{id}/resume", tag = "tenant", params(("id" = u64, Path)),
    responses((status = 200, body = JobView), (status = "4XX", body = ErrorBody)))]
pub async fn resume_job(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    command(&state, org, &id, crate::service::Service::resume).await
}
