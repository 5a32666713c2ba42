//! The health dashboard ("Organization Insights"): server-rendered HTML at `/dashboard`,
//! refreshed live by a small script that re-fetches the panel every two seconds and
//! feeds the throughput and backlog charts (uPlot, vendored in `assets/`). The
//! operator sees every org; a tenant token shows the same page for its org. The token
//! is kept in an HttpOnly, SameSite=Strict cookie after signing in.

mod html;

use axum::Form;
use axum::Router;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use serde::Deserialize;

use crate::api::{ApiError, AppState, TOKEN_COOKIE, Viewer};
use crate::jobs::{DefinitionId, JobId, Lane, OrgId, Status};
use crate::service::{OrgHealth, Service};
use crate::store::JobFilter;
use html::{escape, page, table};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(dashboard))
        .route("/dashboard/login", post(login))
        .route("/dashboard/logout", post(logout))
        .route("/dashboard/panel", get(panel))
        .route("/dashboard/series", get(series))
        .route("/dashboard/orgs/{org}/workflows/{id}/deactivate", post(deactivate))
        .route("/dashboard/orgs/{org}/definitions/{id}/deactivate", post(deactivate))
        .route("/dashboard/orgs/{org}/definitions/{id}/release", post(release))
        .route("/dashboard/jobs", get(jobs))
        .route("/dashboard/orgs/{org}/jobs/{id}", get(job))
        .route("/dashboard/assets/{file}", get(asset))
        .route("/dashboard/{*rest}", any(no_page))
}

/// A refusal or failure as a page of the dashboard, in its frame and with its status:
/// not signed in is the sign-in page (401); anything else names the error.
struct PageError(ApiError);

impl From<ApiError> for PageError {
    fn from(error: ApiError) -> Self {
        PageError(error)
    }
}

impl From<crate::service::Error> for PageError {
    fn from(error: crate::service::Error) -> Self {
        PageError(error.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let ApiError { status, code, message, .. } = self.0;
        if status == StatusCode::UNAUTHORIZED {
            return (status, Html(login_page(Some(&message)))).into_response();
        }
        let title = status.canonical_reason().unwrap_or("Error");
        let body = format!(
            "<h2>{} {}</h2><p class=\"error\">{}</p><p class=\"hint\">{}</p><p><a href=\"/dashboard\">Back to the dashboard</a></p>",
            status.as_u16(),
            escape(title),
            escape(&message),
            escape(code),
        );
        (status, Html(page(title, "", &body))).into_response()
    }
}

/// An id from a dashboard path: anything else names nothing (404).
fn path_id<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, PageError> {
    text.parse().map_err(|_| PageError(ApiError::not_found(what)))
}

async fn no_page() -> PageError {
    PageError(ApiError::new(StatusCode::NOT_FOUND, "no-page", "the dashboard has no such page"))
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "uplot.min.js" => (include_str!("assets/uplot.min.js"), "text/javascript"),
        "uplot.min.css" => (include_str!("assets/uplot.min.css"), "text/css"),
        "dashboard.js" => (include_str!("assets/dashboard.js"), "text/javascript"),
        "dashboard.css" => (include_str!("assets/dashboard.css"), "text/css"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "max-age=3600")], body).into_response()
}

fn login_page(error: Option<&str>) -> String {
    let error = error.map(|e| format!("<p class=\"error\">{}</p>", escape(e))).unwrap_or_default();
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign in · Sluice</title>
<link rel="stylesheet" href="/dashboard/assets/dashboard.css"></head><body class="login">
<form method="post" action="/dashboard/login"><h1>Sluice</h1>{error}
<label>Token <input type="password" name="token" autocomplete="off" autofocus></label>
<p class="hint">The operator token sees every organisation; a tenant token, its own.</p>
<button type="submit">Sign in</button></form></body></html>"#
    )
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(state): State<AppState>, form: Result<Form<LoginForm>, FormRejection>) -> Response {
    let Ok(Form(form)) = form else {
        return (StatusCode::BAD_REQUEST, Html(login_page(Some("Send the sign-in form.")))).into_response();
    };
    let token = form.token.trim();
    match state.viewer_of(token) {
        Ok(Some(_)) => {
            let cookie = format!("{TOKEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
            ([(header::SET_COOKIE, cookie)], Redirect::to("/dashboard")).into_response()
        }
        _ => (StatusCode::UNAUTHORIZED, Html(login_page(Some("Unknown or revoked token.")))).into_response(),
    }
}

async fn logout() -> Response {
    let cookie = format!("{TOKEN_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/dashboard")).into_response()
}

fn who(service: &Service, viewer: Viewer) -> String {
    match viewer {
        Viewer::Operator => "operator · every organisation".into(),
        Viewer::Tenant(org) => format!("organisation {}", service.org_name(org).unwrap_or_default()),
    }
}

async fn dashboard(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let viewer = match viewer_from(&state, &headers) {
        Some(viewer) => viewer,
        None => return Html(login_page(None)).into_response(),
    };
    let panel = match health_seen_by(&state.service, viewer).await.map(render_panel) {
        Ok(panel) => panel,
        Err(e) => return PageError(e).into_response(),
    };
    let body = format!(
        r#"<div id="alerts"></div><div id="charts"></div><div id="panel">{panel}</div>
<script src="/dashboard/assets/uplot.min.js"></script><script src="/dashboard/assets/dashboard.js"></script>"#
    );
    Html(page("Health", &who(&state.service, viewer), &body)).into_response()
}

/// The viewer of a browser request (cookie or bearer), if signed in.
fn viewer_from(state: &AppState, headers: &HeaderMap) -> Option<Viewer> {
    state.viewer_of(crate::api::token_of(headers)?).ok().flatten()
}

async fn panel(viewer: Viewer, State(state): State<AppState>) -> Result<Html<String>, ApiError> {
    Ok(Html(render_panel(health_seen_by(&state.service, viewer).await?)))
}

async fn series(
    viewer: Viewer,
    State(state): State<AppState>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let health = health_seen_by(&state.service, viewer).await?;
    let series: Vec<serde_json::Value> = health
        .into_iter()
        .map(|h| serde_json::json!({"org": h.org, "name": h.name, "series": h.series}))
        .collect();
    Ok(axum::Json(serde_json::Value::Array(series)))
}

/// The health of the orgs `viewer` sees, read off the runtime (`Service::health_read`).
async fn health_seen_by(service: &Service, viewer: Viewer) -> Result<Vec<OrgHealth>, ApiError> {
    Ok(service.health_read(viewer.scope()).await?)
}

/// The panel: the flagged definitions of every org first (the script moves that box to
/// the top of the page), then each org, flagged orgs first.
fn render_panel(mut health: Vec<OrgHealth>) -> String {
    if health.is_empty() {
        return "<p>No organisation yet.</p>".into();
    }
    health.sort_by_key(|org| (!org.definitions.iter().any(|d| d.flag.is_some()), org.org));
    let alerts: Vec<String> = health
        .iter()
        .flat_map(|org| org.definitions.iter().filter(|d| d.flag.is_some()).map(move |d| (org, d)))
        .map(|(org, d)| {
            format!(
                "<li><strong>{}</strong> of {}: {} {}</li>",
                escape(&d.name),
                escape(&org.name),
                runaway_flag(d).unwrap_or_else(|| escape(d.flag.as_deref().unwrap_or_default())),
                deactivate_button(org.org, d),
            )
        })
        .collect();
    let alerts = if alerts.is_empty() {
        "<div class=\"alerts calm\">No definition is flagged.</div>".to_owned()
    } else {
        format!("<div class=\"alerts\"><h2>Needs attention</h2><ul>{}</ul></div>", alerts.concat())
    };
    alerts + &health.iter().map(render_org).collect::<String>()
}

/// The one-click actions on a definition: deactivate an active workflow or a runaway,
/// release a runaway's throttle (its new rate accepted as normal).
fn deactivate_button(org: u32, d: &crate::service::DefinitionHealth) -> String {
    let id = d.id;
    let release = if d.runaway.is_some() {
        format!(
            "<form method=\"post\" action=\"/dashboard/orgs/{org}/definitions/{id}/release\"><button class=\"release\" data-definition=\"{id}\">Release</button></form>"
        )
    } else {
        String::new()
    };
    // A workflow can always be deactivated here; a step only when it is a runaway.
    let deactivate = if d.active && (d.kind == "workflow" || d.runaway.is_some()) {
        format!(
            "<form method=\"post\" action=\"/dashboard/orgs/{org}/definitions/{id}/deactivate\"><button class=\"deactivate\" data-definition=\"{id}\">Deactivate</button></form>"
        )
    } else if d.kind == "workflow" {
        "draft".into()
    } else {
        String::new()
    };
    release + &deactivate
}

/// A runaway flag as the dashboard shows it: throttled since when (UTC), and why.
fn runaway_flag(d: &crate::service::DefinitionHealth) -> Option<String> {
    let flag = d.runaway.as_ref()?;
    let day = flag.since.div_euclid(1000).rem_euclid(86_400);
    let since = format!("{:02}:{:02}:{:02}", day / 3600, day / 60 % 60, day % 60);
    Some(format!(
        "<span class=\"flag throttled\" data-definition=\"{}\" data-since=\"{}\">throttled since {since} UTC: {}</span>",
        d.id,
        flag.since,
        escape(&flag.reason())
    ))
}

fn count(h: &crate::service::LaneView, status: Status) -> u64 {
    h.health.jobs_by_status.get(&status.code()).copied().unwrap_or(0)
}

fn render_org(org: &OrgHealth) -> String {
    let lanes: Vec<Vec<String>> = org
        .lanes
        .iter()
        .map(|l| {
            let h = &l.health;
            let exempt = h.lane == Lane::Exempt;
            let cap =
                |used: u64, cap: u32| if exempt { format!("{used}") } else { format!("{used} / {cap}") };
            vec![
                h.lane.name().to_owned(),
                count(l, Status::WaitingForResources).to_string(),
                cap(u64::from(h.in_progress), h.quotas.max_threads),
                cap(u64::from(h.starts_in_window), h.quotas.max_throughput),
                format!("{} / {}", l.exceptions_in_window, h.quotas.max_exceptions),
                l.postponed.to_string(),
                l.suspended.to_string(),
                count(l, Status::Succeeded).to_string(),
                count(l, Status::Failed).to_string(),
                count(l, Status::Canceled).to_string(),
                if h.throttled { "<span class=\"throttled\">throttled</span>".into() } else { String::new() },
            ]
        })
        .collect();
    let lanes = table(
        "lanes",
        &[
            "lane",
            "waiting",
            "in progress / threads",
            "starts / throughput",
            "exceptions / A",
            "postponed",
            "suspended",
            "succeeded",
            "failed",
            "canceled",
            "",
        ],
        &lanes,
    );
    let definitions: Vec<Vec<String>> = org
        .definitions
        .iter()
        .map(|d| {
            let action = deactivate_button(org.org, d);
            let flag = runaway_flag(d)
                .or_else(|| {
                    d.flag.as_deref().map(|f| {
                        format!("<span class=\"flag\" data-definition=\"{}\">{}</span>", d.id, escape(f))
                    })
                })
                .unwrap_or_default();
            vec![
                format!(
                    "<a href=\"/dashboard/jobs?org={}&amp;definition={}\">{}</a>",
                    org.org,
                    d.id,
                    escape(&d.name)
                ),
                d.kind.to_owned(),
                format!("<span class=\"backlog\" data-definition=\"{}\">{}</span>", d.id, d.backlog),
                format!("{:+}", d.growth),
                d.runs.to_string(),
                d.failures.to_string(),
                d.fuel_used.to_string(),
                flag,
                action,
            ]
        })
        .collect();
    let definitions = table(
        "definitions",
        &["definition", "kind", "queued", "last minute", "runs", "failures", "fuel", "", ""],
        &definitions,
    );
    let flagged = org.definitions.iter().any(|d| d.flag.is_some());
    format!(
        r#"<section class="org{}" data-org="{id}"><h2>{name} <small>org {id}</small> <a href="/dashboard/jobs?org={id}">jobs</a></h2>
{lanes}<h3>Definitions that cost the most</h3>{definitions}</section>"#,
        if flagged { " flagged" } else { "" },
        id = org.org,
        name = escape(&org.name),
    )
}

async fn deactivate(
    viewer: Result<Viewer, ApiError>,
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
) -> Result<Redirect, PageError> {
    let viewer = viewer?;
    let org = OrgId(path_id(&org, "workflow")?);
    if !viewer.sees(org) {
        return Err(ApiError::not_found("workflow").into());
    }
    state.service.set_active(org, DefinitionId(path_id(&id, "workflow")?), false)?;
    Ok(Redirect::to("/dashboard"))
}

/// Clears a runaway's flag and throttle (its new rate accepted as normal).
async fn release(
    viewer: Result<Viewer, ApiError>,
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
) -> Result<Redirect, PageError> {
    let viewer = viewer?;
    let org = OrgId(path_id(&org, "definition")?);
    if !viewer.sees(org) {
        return Err(ApiError::not_found("definition").into());
    }
    let definition = DefinitionId(path_id(&id, "definition")?);
    // Off the runtime's threads: the node holding the org may be another, answering later.
    state.service.off_runtime(move |service| service.release_runaway(org, definition)).await?;
    Ok(Redirect::to("/dashboard"))
}

#[derive(Deserialize)]
struct JobsQuery {
    org: Option<u32>,
    status: Option<u32>,
    lane: Option<String>,
    definition: Option<u64>,
}

async fn jobs(
    viewer: Result<Viewer, ApiError>,
    State(state): State<AppState>,
    query: Result<Query<JobsQuery>, QueryRejection>,
) -> Result<Html<String>, PageError> {
    let viewer = viewer?;
    let Query(q) = query.map_err(ApiError::from)?;
    let org = match (viewer, q.org) {
        (Viewer::Tenant(org), _) => org,
        (Viewer::Operator, Some(org)) => OrgId(org),
        (Viewer::Operator, None) => {
            return Err(ApiError::bad_request("invalid-query", "name an org: ?org=ID").into());
        }
    };
    let lane = match q.lane.as_deref().filter(|l| !l.is_empty()) {
        Some(l) => Some(crate::api::lane_by_name(l).map_err(|_| {
            ApiError::bad_request(
                "invalid-query",
                format!("unknown lane '{l}' (priority, regular or exempt)"),
            )
        })?),
        None => None,
    };
    let filter = JobFilter {
        status: q.status.and_then(Status::from_code),
        lane,
        definition: q.definition.map(DefinitionId),
        ..JobFilter::all(200)
    };
    let list = state.service.org_read(Some(org), move |service| service.jobs(org, &filter)).await?;
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|j| {
            vec![
                format!("<a href=\"/dashboard/orgs/{}/jobs/{}\">{}</a>", org.0, j.id.0, j.id.0),
                j.lane.name().to_owned(),
                j.definition.0.to_string(),
                format!("{} {:?}", j.status.code(), j.status),
                j.depth.to_string(),
                escape(j.error_code.as_deref().unwrap_or("")),
                j.accounting.fuel_used.to_string(),
                format!("{:.1} ms", j.accounting.wall_time_us as f64 / 1000.0),
            ]
        })
        .collect();
    let selected = |v: Option<u32>, want: u32| if v == Some(want) { " selected" } else { "" };
    let statuses: String = Status::ALL
        .iter()
        .map(|s| {
            format!(
                "<option value=\"{c}\"{sel}>{c} {s:?}</option>",
                c = s.code(),
                sel = selected(q.status, s.code())
            )
        })
        .collect();
    let body = format!(
        r#"<h2>Jobs of {name} <small>newest 200</small></h2>
<form class="filters" method="get"><input type="hidden" name="org" value="{org}">
<label>status <select name="status"><option value="">any</option>{statuses}</select></label>
<label>lane <select name="lane"><option value="">any</option><option>priority</option><option>regular</option><option>exempt</option></select></label>
<label>definition <input name="definition" size="6" value="{definition}"></label><button>Filter</button></form>
{table}"#,
        name = escape(&state.service.org_name(org)?),
        org = org.0,
        definition = q.definition.map(|d| d.to_string()).unwrap_or_default(),
        table = table(
            "jobs",
            &["job", "lane", "definition", "status", "depth", "error", "fuel", "wall time"],
            &rows
        ),
    );
    Ok(Html(page("Jobs", &who(&state.service, viewer), &body)))
}

async fn job(
    viewer: Result<Viewer, ApiError>,
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
) -> Result<Html<String>, PageError> {
    let viewer = viewer?;
    let org = OrgId(path_id(&org, "job")?);
    let id: u64 = path_id(&id, "job")?;
    if !viewer.sees(org) {
        return Err(ApiError::not_found("job").into());
    }
    let j = state.service.job(org, JobId(id))?;
    let fields: Vec<Vec<String>> = [
        ("lane", j.lane.name().to_owned()),
        ("operation", format!("{:?}", j.operation)),
        ("definition", format!("{} (version {})", j.definition.0, j.definition_version)),
        ("status", format!("{} {:?} (state {})", j.status.code(), j.status, j.status.state() as u32)),
        ("correlation", j.correlation_id.clone()),
        ("depth", j.depth.to_string()),
        ("record", j.record.as_ref().map(|(e, i)| format!("{e} {i}")).unwrap_or_default()),
        ("retries", j.retry_count.to_string()),
        ("postponements", j.postponement_count.to_string()),
        ("postponed until", j.postpone_until.map(|t| t.to_string()).unwrap_or_default()),
        (
            "error",
            format!(
                "{} {}",
                j.error_code.clone().unwrap_or_default(),
                j.error_message.clone().unwrap_or_default()
            ),
        ),
        ("fuel used", j.accounting.fuel_used.to_string()),
        ("wall time", format!("{} µs", j.accounting.wall_time_us)),
        ("host calls", format!("{} µs", j.accounting.host_time_us)),
        ("peak memory", format!("{} bytes", j.accounting.peak_memory_bytes)),
    ]
    .into_iter()
    .map(|(k, v)| vec![k.to_owned(), escape(&v)])
    .collect();
    let body = format!(
        "<h2>Job {id} <small><a href=\"/dashboard/jobs?org={org}\">all jobs</a></small></h2>{fields}<h3>Trace log</h3><pre class=\"trace\">{trace}</pre>",
        org = org.0,
        fields = table("job", &["", ""], &fields),
        trace =
            escape(j.trace.as_deref().unwrap_or("(no trace log: none was written, or retention cleared it)")),
    );
    Ok(Html(page(&format!("Job {id}"), &who(&state.service, viewer), &body)))
}
