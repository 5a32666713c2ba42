//! The tenant's records, read as its plug-ins read them: one by id, or the first of an
//! entity in id order. Writes go through events (they fire steps and workflows).

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use utoipa::IntoParams;

use super::AppState;
use super::auth::Tenant;
use super::error::{ApiError, ErrorBody, Query};

/// The most records one read returns.
const MOST_RECORDS: u32 = 1_000;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RecordsQuery {
    /// At most this many (default 50, at most 1,000).
    pub top: Option<u32>,
}

/// One record: `{logical_name, id, attributes}`, values in their JSON form.
#[utoipa::path(get, path = "/records/{entity}/{id}", tag = "tenant",
    params(("entity" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = Object), (status = "4XX", body = ErrorBody)))]
pub async fn get_record(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    Path((entity, id)): Path<(String, String)>,
) -> Result<Json<crate::records::Entity>, ApiError> {
    Ok(Json(state.service.record(org, &entity, &id)?))
}

/// The first records of an entity, in id order.
#[utoipa::path(get, path = "/records/{entity}", tag = "tenant",
    params(("entity" = String, Path), RecordsQuery),
    responses((status = 200, body = Vec<Object>), (status = "4XX", body = ErrorBody)))]
pub async fn list_records(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    Path(entity): Path<String>,
    Query(q): Query<RecordsQuery>,
) -> Result<Json<Vec<crate::records::Entity>>, ApiError> {
    let top = q.top.unwrap_or(50).clamp(1, MOST_RECORDS);
    Ok(Json(state.service.records(org, &entity, top)?))
}
