//! API errors: a status, a stable kebab-case code and a message, as
//! `{"error": {"code": …, "message": …}}`. Bad input is always a 4xx with its code;
//! a 500 means Sluice itself failed (and is logged).

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::limits::TooLarge;
use crate::service::Error as ServiceError;
use crate::store::Error as StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<serde_json::Value>,
}

/// The body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, kebab-case: `not-found`, `unauthorized`, `malformed-json`, `unknown-field`,
    /// `invalid-body`, `body-too-large`, `too-large`, `unknown-import`, `step-failed`, …
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), details: None }
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not-found", format!("{what} not found"))
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail { code: self.code.into(), message: self.message, details: self.details },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(what) => ApiError::not_found(what),
            StoreError::Conflict(what) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", format!("{what} already exists"))
            }
            StoreError::WriteConflict(why) => ApiError::new(
                StatusCode::CONFLICT,
                "write-conflict",
                format!("a record changed while the request ran; nothing was written: {why}"),
            ),
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the store failed; see the server log",
                )
            }
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        let message = error.to_string();
        match error {
            ServiceError::NotFound(what) => ApiError::not_found(what),
            ServiceError::Invalid(_) => ApiError::bad_request("invalid-request", message),
            ServiceError::Plugin(load) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, load.code(), message)
            }
            ServiceError::Record(crate::records::RecordError::NotFound { .. }) => {
                ApiError::new(StatusCode::NOT_FOUND, "record-not-found", message)
            }
            ServiceError::Record(crate::records::RecordError::TooLarge(too_large)) => too_large.into(),
            ServiceError::Record(_) => ApiError::bad_request("invalid-record", message),
            ServiceError::StepFailed { step, error } => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "step-failed",
                details: Some(serde_json::json!({ "step": step, "error_code": error.code() })),
                message,
            },
            ServiceError::NotAllowed(_) => ApiError::new(StatusCode::CONFLICT, "status-conflict", message),
            ServiceError::CancelRefused(_) => {
                ApiError::new(StatusCode::CONFLICT, "cancel-not-allowed", message)
            }
            ServiceError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            ServiceError::Unavailable(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "node-unavailable", message)
            }
            ServiceError::Busy(refusal) => {
                use crate::service::{Busy, Work};
                let code = match refusal {
                    Busy::OrgLimit { work: Work::Synchronous, .. } => "sync-quota-exceeded",
                    Busy::NodeCapacity { work: Work::Synchronous, .. } => "sync-capacity-exhausted",
                    Busy::OrgLimit { work: Work::Relayed, .. } => "relay-quota-exceeded",
                    Busy::NodeCapacity { work: Work::Relayed, .. } => "relay-capacity-exhausted",
                };
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message)
            }
            ServiceError::Store(store) => store.into(),
            ServiceError::PartlyImported { committed, error } => {
                let inner: ApiError = (*error).into();
                ApiError {
                    status: inner.status,
                    code: "partly-imported",
                    details: Some(serde_json::json!({ "committed": committed, "error_code": inner.code })),
                    message,
                }
            }
        }
    }
}

impl From<TooLarge> for ApiError {
    fn from(error: TooLarge) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "too-large", error.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let text = rejection.body_text();
        match rejection {
            JsonRejection::JsonDataError(_) if text.contains("unknown field") => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown-field", text)
            }
            JsonRejection::JsonDataError(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-body", text)
            }
            JsonRejection::JsonSyntaxError(_) => ApiError::bad_request("malformed-json", text),
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "send JSON with `content-type: application/json`",
            ),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => too_large(),
            other => ApiError::bad_request("unreadable-body", other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request("invalid-query", rejection.body_text())
    }
}

pub fn too_large() -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body-too-large", "the request body is over the size limit")
}

/// A JSON request body whose refusals are [`ApiError`]s. Every body of the API is a
/// JSON object: an array or a scalar is `invalid-body` (422), even where serde would
/// read a struct from a sequence.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        Ok(Body(Json::<Object<T>>::from_request(request, state).await?.0.0))
    }
}

/// `T` read from a JSON object only.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ObjectVisitor(PhantomData)).map(Object)
    }
}

struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map))
    }
}

/// A query string whose refusals are [`ApiError`]s.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        Ok(Query(axum::extract::Query::<T>::from_request_parts(parts, state).await?.0))
    }
}

/// An id from the path: anything that is not one names nothing (404, like an unknown id).
pub fn parse_id(text: &str, what: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| ApiError::not_found(what))
}

pub async fn no_route() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no-route",
        "no such route; the API is described at /api/v1/openapi.json",
    )
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "this route does not take that method",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_import_answers_with_the_inner_status_and_how_many_were_stored() {
        let conflict =
            ServiceError::Store(crate::store::Error::WriteConflict("a account record exists".into()));
        let error: ApiError =
            ServiceError::PartlyImported { committed: 200, error: Box::new(conflict) }.into();
        assert_eq!((error.status, error.code), (StatusCode::CONFLICT, "partly-imported"));
        assert_eq!(
            error.details,
            Some(serde_json::json!({ "committed": 200, "error_code": "write-conflict" }))
        );
        assert!(error.message.contains("after 200 events"), "{}", error.message);
    }
}
