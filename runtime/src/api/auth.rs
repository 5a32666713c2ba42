//! Who is calling: a tenant token (`Authorization: Bearer slu_…`, looked up by its
//! SHA-256) names one org; the operator token is compared by digest in constant time.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::ApiError;
use crate::jobs::OrgId;

/// A request made with a tenant token: everything it touches is in this org.
pub struct Tenant(pub OrgId);

/// A request made with the operator token.
pub struct Operator;

/// The dashboard keeps the token in this cookie (HttpOnly, SameSite=Strict).
pub const TOKEN_COOKIE: &str = "sluice_token";

/// The request's token: the bearer token, else the dashboard's cookie.
pub fn token_of(headers: &axum::http::HeaderMap) -> Option<&str> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = || {
        headers.get_all(axum::http::header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|v| {
            v.split(';')
                .filter_map(|c| c.trim().split_once('='))
                .find(|(k, _)| *k == TOKEN_COOKIE)
                .map(|(_, t)| t)
        })
    };
    header.or_else(cookie).map(str::trim)
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    token_of(&parts.headers).ok_or_else(|| unauthorized("send `Authorization: Bearer <token>`"))
}

/// Who is looking: the operator (every org) or one org's tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewer {
    Operator,
    Tenant(OrgId),
}

impl Viewer {
    /// The org the viewer is confined to (`None`: every org).
    pub fn scope(self) -> Option<OrgId> {
        match self {
            Viewer::Operator => None,
            Viewer::Tenant(org) => Some(org),
        }
    }

    pub fn sees(self, org: OrgId) -> bool {
        self.scope().is_none_or(|o| o == org)
    }
}

impl AppState {
    /// Who a token belongs to, if anyone.
    pub fn viewer_of(&self, token: &str) -> Result<Option<Viewer>, ApiError> {
        if self.is_operator(token) {
            return Ok(Some(Viewer::Operator));
        }
        Ok(self.service.authenticate(token)?.map(Viewer::Tenant))
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state.viewer_of(bearer(parts)?)?.ok_or_else(|| unauthorized("unknown or revoked token"))
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// Constant-time equality of two digests.
fn same_digest(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl AppState {
    fn is_operator(&self, token: &str) -> bool {
        same_digest(&Sha256::digest(token.as_bytes()), &self.operator_digest)
    }
}

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        match state.service.authenticate(token)? {
            Some(org) => Ok(Tenant(org)),
            None if state.is_operator(token) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "tenant-token-required",
                "this route acts inside one organisation: use a tenant token of that org",
            )),
            None => Err(unauthorized("unknown or revoked token")),
        }
    }
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        if state.is_operator(token) {
            return Ok(Operator);
        }
        match state.service.authenticate(token)? {
            Some(_) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "operator-token-required",
                "this route is the operator's; tenants read their quotas at /api/v1/quotas",
            )),
            None => Err(unauthorized("unknown or revoked token")),
        }
    }
}
