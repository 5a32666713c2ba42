//! Background operations: `202 Accepted` with a `Location`, the status resource, and
//! cancel before start.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::auth::Tenant;
use super::error::{ApiError, Body, ErrorBody, parse_id};
use super::views::{AcceptedView, BackgroundRequest, OperationView};
use crate::jobs::{JobId, OrgId};

fn location(state: &AppState, id: JobId) -> String {
    format!("{}/api/v1/background-operations/{}", state.base_url, id.0)
}

fn view(state: &AppState, org: OrgId, id: &str) -> Result<OperationView, ApiError> {
    let id = JobId(parse_id(id, "background operation")?);
    let (job, operation) = state.service.operation(org, id)?;
    Ok(OperationView::of(job, operation, location(state, id)))
}

/// Starts a custom API as a background operation (`ExecuteBackgroundOperation`).
/// Answers 202 with the status resource in `Location`.
#[utoipa::path(post, path = "/background-operations", tag = "tenant", request_body = BackgroundRequest,
    responses((status = 202, body = AcceptedView, headers(("location" = String))), (status = "4XX", body = ErrorBody)))]
pub async fn start(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    Body(r): Body<BackgroundRequest>,
) -> Result<Response, ApiError> {
    if let Some(uri) = &r.callback_uri {
        crate::callbacks::parse_uri(uri)
            .map_err(|e| ApiError::bad_request("invalid-callback-uri", e.to_string()))?;
    }
    let id = state
        .service
        .start_background_operation(
            org,
            &r.request.name,
            r.request.parameters,
            r.callback_uri,
            r.dependency_token,
        )
        .await?;
    let location = location(&state, id);
    let body = AcceptedView { id: id.0.to_string(), location: location.clone() };
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(body)).into_response())
}

/// The operation's state, status, error, output parameters and callback delivery.
#[utoipa::path(get, path = "/background-operations/{id}", tag = "tenant", params(("id" = String, Path)),
    responses((status = 200, body = OperationView), (status = "4XX", body = ErrorBody)))]
pub async fn get(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<OperationView>, ApiError> {
    Ok(Json(view(&state, org, &id)?))
}

/// Cancels the operation if it has not started; 409 `cancel-not-allowed` once it has,
/// or once it is in a terminal state.
#[utoipa::path(delete, path = "/background-operations/{id}", tag = "tenant", params(("id" = String, Path)),
    responses((status = 200, body = OperationView), (status = "4XX", body = ErrorBody)))]
pub async fn cancel(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<OperationView>, ApiError> {
    let job = JobId(parse_id(&id, "background operation")?);
    // Awaits the holding node's answer when another node holds the org (see jobs.rs).
    let service = state.service.clone();
    tokio::task::spawn_blocking(move || service.cancel_operation(org, job))
        .await
        .map_err(|e| crate::service::Error::Unavailable(format!("the cancel failed: {e}")))??;
    Ok(Json(view(&state, org, &id)?))
}
