//! Health as data: the dashboard's numbers as JSON, and the Prometheus metrics.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;
use super::auth::{Operator, Viewer};
use super::error::{ApiError, ErrorBody};
use crate::service::{OrgHealth, Service};

/// Per org and lane: backlog by status, caps and use, exceptions, postponed and
/// suspended jobs; throughput and backlog over the last ten minutes; the definitions
/// that cost most, a runaway flagged. Tenants see their org, the operator every org.
#[utoipa::path(get, path = "/health", tag = "tenant",
    responses((status = 200, body = Vec<OrgHealth>), (status = "4XX", body = ErrorBody)))]
pub async fn health(viewer: Viewer, State(state): State<AppState>) -> Result<Json<Vec<OrgHealth>>, ApiError> {
    Ok(Json(state.service.health_read(viewer.scope()).await?))
}

/// Prometheus metrics (OpenMetrics text), for the operator's scraper.
pub async fn metrics(_: Operator, State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let text = state.service.org_read(None, Service::metrics_text).await?;
    Ok(([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text))
}

/// Liveness for load balancers and supervisors, without a token: 200 while the node
/// runs jobs, 503 with the reason once its driver has stopped (the process then exits).
pub async fn liveness(State(state): State<AppState>) -> impl IntoResponse {
    match state.service.failure() {
        None => (axum::http::StatusCode::OK, Json(serde_json::json!({ "status": "ok" }))),
        Some(reason) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "unhealthy", "reason": reason })),
        ),
    }
}
