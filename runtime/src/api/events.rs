//! Events and synchronous custom API calls: work done inside the request.

use axum::Json;
use axum::extract::{Path, State};

use super::AppState;
use super::auth::Tenant;
use super::error::{ApiError, Body, ErrorBody};
use super::views::{EventBatch, EventView, OutputView, RunRequest, SyncOutputView};
use crate::service::{Event, EventOutcome};

/// At most this many events in one plain batch. It is one transaction, all or nothing,
/// and every tenant's commits wait behind it at the store's one writer (17–19 ms for
/// 1,000 events on SQLite in the writer's trace when ids were random; less since they
/// are time-ordered): its size is what one tenant can make others wait.
const MAX_BATCH: usize = 1_000;

/// At most this many events in one import request: an import commits 20 events a
/// transaction while others commit (`IMPORT_CHUNK`), 100 alone, so others' commits go
/// between.
const MAX_IMPORT: usize = 5_000;

fn view(outcome: EventOutcome) -> EventView {
    EventView {
        record_id: outcome.record_id,
        correlation_id: outcome.correlation_id,
        sync_outputs: outcome
            .sync_outputs
            .into_iter()
            .map(|(step, output)| SyncOutputView { step, output: output.into() })
            .collect(),
        jobs: outcome.jobs.into_iter().map(|j| j.0).collect(),
    }
}

/// Fires an event: applies the change, runs the synchronous steps inline (a failing
/// one rolls the whole event back and its error is the answer), and queues jobs for
/// the asynchronous steps and activated workflows.
#[utoipa::path(post, path = "/events", tag = "tenant",
    request_body(content = Object, description = "{message, entity, record_id?, attributes?}"),
    responses((status = 200, body = EventView), (status = "4XX", body = ErrorBody)))]
pub async fn fire_event(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    Body(event): Body<Event>,
) -> Result<Json<EventView>, ApiError> {
    Ok(Json(view(state.service.fire(org, event).await?)))
}

/// Fires many events in one transaction (bulk upload): all or nothing.
#[utoipa::path(post, path = "/events/batch", tag = "tenant", request_body = EventBatch,
    responses((status = 200, body = Vec<EventView>), (status = "4XX", body = ErrorBody)))]
pub async fn fire_batch(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    Body(batch): Body<EventBatch>,
) -> Result<Json<Vec<EventView>>, ApiError> {
    let most = if batch.import { MAX_IMPORT } else { MAX_BATCH };
    if batch.events.len() > most {
        let what = if batch.import {
            "import request".to_owned()
        } else {
            format!("batch (an import, \"import\": true, may hold {MAX_IMPORT})")
        };
        return Err(ApiError::bad_request("batch-too-large", format!("at most {most} events per {what}")));
    }
    let outcomes = if batch.import {
        state.service.import_batch(org, batch.events).await?
    } else {
        state.service.fire_batch(org, batch.events).await?
    };
    Ok(Json(outcomes.into_iter().map(view).collect()))
}

/// Runs a custom API synchronously and answers its output parameters.
#[utoipa::path(post, path = "/custom-apis/{name}/run", tag = "tenant", params(("name" = String, Path)),
    request_body = RunRequest,
    responses((status = 200, body = OutputView), (status = "4XX", body = ErrorBody)))]
pub async fn run_custom_api(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Body(request): Body<RunRequest>,
) -> Result<Json<OutputView>, ApiError> {
    Ok(Json(state.service.run_custom_api(org, &name, request.parameters).await?.into()))
}
