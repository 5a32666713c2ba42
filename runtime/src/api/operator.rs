//! The operator's routes: organisations, tenant tokens, quotas.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::AppState;
use super::auth::Operator;
use super::error::{ApiError, Body, ErrorBody, parse_id};
use super::views::{CreateOrg, IssueToken, OrgView, TokenView};
use crate::jobs::{Lane, OrgId, Quotas};
use crate::limits;
use crate::service::LaneHealth;

/// The org a path names: an id outside the org id range names none (404), like an
/// unknown one.
pub(super) fn org_id(service: &crate::service::Service, text: &str) -> Result<OrgId, ApiError> {
    let id = parse_id(text, "organisation")?;
    let org = OrgId(u32::try_from(id).map_err(|_| ApiError::not_found("organisation"))?);
    service.org_name(org)?;
    Ok(org)
}

pub fn lane(text: &str) -> Result<Lane, ApiError> {
    Lane::from_name(text).ok_or_else(|| ApiError::not_found("lane"))
}

/// Creates an organisation.
#[utoipa::path(post, path = "/orgs", tag = "operator", request_body = CreateOrg,
    responses((status = 201, body = OrgView), (status = "4XX", body = ErrorBody)))]
pub async fn create_org(
    _: Operator,
    State(state): State<AppState>,
    Body(request): Body<CreateOrg>,
) -> Result<(StatusCode, Json<OrgView>), ApiError> {
    let name = request.name.trim();
    if name.is_empty() {
        return Err(ApiError::bad_request("invalid-request", "an organisation's name is not empty"));
    }
    limits::name("an organisation's name", name)?;
    if name.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-name",
            "an organisation's name has no control characters",
        ));
    }
    let id = state.service.create_org(name)?;
    Ok((StatusCode::CREATED, Json(OrgView { id: id.0, name: name.to_owned() })))
}

/// Lists organisations.
#[utoipa::path(get, path = "/orgs", tag = "operator",
    responses((status = 200, body = Vec<OrgView>), (status = "4XX", body = ErrorBody)))]
pub async fn list_orgs(_: Operator, State(state): State<AppState>) -> Result<Json<Vec<OrgView>>, ApiError> {
    let orgs = state.service.orgs()?;
    Ok(Json(orgs.into_iter().map(|(id, name)| OrgView { id: id.0, name }).collect()))
}

/// Issues a tenant token for the org; the answer is the only time it is shown.
#[utoipa::path(post, path = "/orgs/{org}/tokens", tag = "operator", request_body = IssueToken,
    params(("org" = u32, Path)),
    responses((status = 201, body = TokenView), (status = "4XX", body = ErrorBody)))]
pub async fn issue_token(
    _: Operator,
    State(state): State<AppState>,
    Path(org): Path<String>,
    Body(request): Body<IssueToken>,
) -> Result<(StatusCode, Json<TokenView>), ApiError> {
    let org = org_id(&state.service, &org)?;
    limits::name("a token's label", &request.label)?;
    let issued = state.service.issue_token(org, &request.label)?;
    Ok((StatusCode::CREATED, Json(TokenView::of(issued.row, Some(issued.token)))))
}

/// Lists the org's tokens (prefixes only).
#[utoipa::path(get, path = "/orgs/{org}/tokens", tag = "operator", params(("org" = u32, Path)),
    responses((status = 200, body = Vec<TokenView>), (status = "4XX", body = ErrorBody)))]
pub async fn list_tokens(
    _: Operator,
    State(state): State<AppState>,
    Path(org): Path<String>,
) -> Result<Json<Vec<TokenView>>, ApiError> {
    let org = org_id(&state.service, &org)?;
    Ok(Json(state.service.tokens(org)?.into_iter().map(|row| TokenView::of(row, None)).collect()))
}

/// Revokes a token: it stops working at once.
#[utoipa::path(delete, path = "/orgs/{org}/tokens/{token}", tag = "operator",
    params(("org" = u32, Path), ("token" = u64, Path)),
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
pub async fn revoke_token(
    _: Operator,
    State(state): State<AppState>,
    Path((org, token)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let org = org_id(&state.service, &org)?;
    state.service.revoke_token(org, parse_id(&token, "token")?)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sets one lane's quotas of the org (omitted fields take their defaults).
#[utoipa::path(put, path = "/orgs/{org}/quotas/{lane}", tag = "operator",
    params(("org" = u32, Path), ("lane" = String, Path, description = "priority, regular or exempt")),
    request_body(content = Object, description = "Quotas: max-threads, max-throughput, throughput-window-minutes, max-exceptions, exception-window-minutes, max-postponements"),
    responses((status = 200, body = LaneHealth), (status = "4XX", body = ErrorBody)))]
pub async fn set_quotas(
    _: Operator,
    State(state): State<AppState>,
    Path((org, lane_name)): Path<(String, String)>,
    Body(quotas): Body<Quotas>,
) -> Result<Json<LaneHealth>, ApiError> {
    let org = org_id(&state.service, &org)?;
    let lane = lane(&lane_name)?;
    if quotas.throughput_window_minutes == 0 || quotas.exception_window_minutes == 0 {
        return Err(ApiError::bad_request("invalid-request", "quota windows are at least one minute"));
    }
    state.service.set_quotas(org, lane, quotas)?;
    let health = state.service.counts_read(Some(org), move |service| service.lane_health(org)).await?;
    Ok(Json(health.into_iter().find(|h| h.lane == lane).expect("every lane has health")))
}

/// The org's quotas and throttling state, per lane.
#[utoipa::path(get, path = "/orgs/{org}/quotas", tag = "operator", params(("org" = u32, Path)),
    responses((status = 200, body = Vec<LaneHealth>), (status = "4XX", body = ErrorBody)))]
pub async fn org_quotas(
    _: Operator,
    State(state): State<AppState>,
    Path(org): Path<String>,
) -> Result<Json<Vec<LaneHealth>>, ApiError> {
    let org = org_id(&state.service, &org)?;
    Ok(Json(state.service.counts_read(Some(org), move |service| service.lane_health(org)).await?))
}
