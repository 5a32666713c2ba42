//! The HTTP API, `/api/v1` (axum, JSON). Operators manage organisations, tenant tokens
//! and quotas; tenants upload plug-ins, register steps, workflows and custom APIs, fire
//! events, run custom APIs, start background operations and watch their jobs. A tenant
//! sees only its own org: another org's ids answer 404 like ids that do not exist.
//!
//! Routes and the OpenAPI document (`/api/v1/openapi.json`) come from the same
//! `#[utoipa::path]` attributes (utoipa-axum), so they cannot drift apart.

mod auth;
mod definitions;
mod error;
mod events;
mod health;
mod jobs;
mod operations;
mod operator;
mod records;
mod runaways;
mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use sha2::{Digest, Sha256};
use utoipa::OpenApi as _;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::{TOKEN_COOKIE, Viewer, token_of};
pub use error::{ApiError, ErrorBody};
pub use operator::lane as lane_by_name;

use crate::service::Service;

/// How the API is served (`[api]` of the configuration file).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ApiSettings {
    /// Where to listen. Default `127.0.0.1:7878` (loopback only).
    pub listen: String,
    /// The URL clients reach the API at, for `Location` headers and callbacks.
    /// Default `http://` and the listening address.
    pub public_url: Option<String>,
    /// Largest JSON request body. Default 1 MiB.
    pub max_body_bytes: usize,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings { listen: "127.0.0.1:7878".into(), public_url: None, max_body_bytes: 1 << 20 }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub(crate) service: Service,
    operator_digest: Arc<[u8]>,
    base_url: Arc<str>,
    max_upload_bytes: usize,
    max_body_bytes: usize,
}

/// Refuses a request whose announced length is over its route's limit before reading
/// any of it (a body without a length is still cut off at the limit while read).
async fn refuse_oversize(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let limit =
        if request.uri().path() == "/api/v1/plugins" { state.max_upload_bytes } else { state.max_body_bytes };
    let announced = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return error::too_large().into_response();
    }
    next.run(request).await
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Sluice", description = "WebAssembly plug-in host: tenants, plug-ins, events, system jobs, background operations."),
    servers((url = "/api/v1")),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The routes of `/api/v1`, with the OpenAPI document they describe.
fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(operator::create_org, operator::list_orgs))
        .routes(routes!(operator::issue_token, operator::list_tokens))
        .routes(routes!(operator::revoke_token))
        .routes(routes!(operator::set_quotas))
        .routes(routes!(operator::org_quotas))
        .routes(routes!(runaways::release_any))
        .routes(routes!(runaways::deactivate_any))
        .routes(routes!(runaways::release_own))
        .routes(routes!(runaways::deactivate_own))
        .routes(routes!(definitions::own_org))
        .routes(routes!(definitions::own_quotas))
        .routes(routes!(definitions::upload_plugin, definitions::list_plugins))
        .routes(routes!(definitions::register_step, definitions::list_steps))
        .routes(routes!(definitions::get_step, definitions::delete_step))
        .routes(routes!(definitions::create_workflow, definitions::list_workflows))
        .routes(routes!(
            definitions::get_workflow,
            definitions::version_workflow,
            definitions::delete_workflow
        ))
        .routes(routes!(definitions::activate_workflow))
        .routes(routes!(definitions::deactivate_workflow))
        .routes(routes!(definitions::register_custom_api, definitions::list_custom_apis))
        .routes(routes!(definitions::get_custom_api, definitions::delete_custom_api))
        .routes(routes!(events::run_custom_api))
        .routes(routes!(events::fire_event))
        .routes(routes!(events::fire_batch))
        .routes(routes!(records::list_records))
        .routes(routes!(records::get_record))
        .routes(routes!(jobs::list_jobs))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::job_trace))
        .routes(routes!(jobs::cancel_job))
        .routes(routes!(jobs::pause_job))
        .routes(routes!(jobs::resume_job))
        .routes(routes!(operations::start))
        .routes(routes!(operations::get, operations::cancel))
        .routes(routes!(health::health))
        .split_for_parts()
}

/// The OpenAPI document of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().1
}

/// The whole HTTP application: `/api/v1` and its OpenAPI document.
pub fn router(service: Service, operator_token: &str, settings: &ApiSettings, base_url: &str) -> Router {
    let state = AppState {
        max_upload_bytes: service.max_plugin_bytes() as usize + 1,
        service,
        operator_digest: Sha256::digest(operator_token.as_bytes()).to_vec().into(),
        base_url: base_url.trim_end_matches('/').into(),
        max_body_bytes: settings.max_body_bytes,
    };
    let (api, document) = api();
    let document = Arc::new(document);
    let api = api.route("/openapi.json", get(move || async move { axum::Json(document.as_ref().clone()) }));
    Router::new()
        .nest("/api/v1", api)
        .route("/metrics", get(health::metrics))
        .route("/health", get(health::liveness))
        .merge(crate::dashboard::routes())
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(state.clone(), refuse_oversize))
        .with_state(state)
}
