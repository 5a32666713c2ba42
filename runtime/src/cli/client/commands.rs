//! The client subcommands, one group per kind of object.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::{Map, Value as Json, json};

use super::table::{cell, clean, clean_lines, fields, table};
use super::{Client, Remote};

/// `NAME=VALUE` pairs as a JSON object: a value that parses as JSON is taken as such
/// (`Count=3`, `Flag=true`, `Limit={"money":"5.00"}`), anything else is a string.
fn parameters(pairs: &[String]) -> anyhow::Result<Json> {
    let mut object = Map::new();
    for pair in pairs {
        let Some((name, value)) = pair.split_once('=') else { bail!("`{pair}` is not NAME=VALUE") };
        let value = serde_json::from_str(value).unwrap_or_else(|_| Json::String(value.to_owned()));
        object.insert(name.to_owned(), value);
    }
    Ok(Json::Object(object))
}

const DEFINITION_COLUMNS: &[&str] = &["id", "name", "kind", "trigger.message", "trigger.entity", "active"];
const JOB_COLUMNS: &[&str] = &[
    "id",
    "lane",
    "operation",
    "definition",
    "status",
    "status_name",
    "depth",
    "error_code",
    "accounting.fuel_used",
];
const JOB_FIELDS: &[&str] = &[
    "id",
    "lane",
    "operation",
    "definition",
    "definition_version",
    "correlation_id",
    "depth",
    "record.entity",
    "record.id",
    "state",
    "status",
    "status_name",
    "created_at",
    "started_at",
    "completed_at",
    "postpone_until",
    "retry_count",
    "postponement_count",
    "error_code",
    "error_message",
    "accounting.fuel_used",
    "accounting.wall_time_us",
    "accounting.host_time_us",
    "accounting.peak_memory_bytes",
    "output",
];
const OPERATION_FIELDS: &[&str] = &[
    "id",
    "location",
    "state",
    "status",
    "status_name",
    "progress",
    "error_code",
    "error_message",
    "callback.uri",
    "callback.delivery.state",
    "callback.delivery.attempts",
    "callback.delivery.error",
];

// ---- organisations and tokens (operator) ----

#[derive(clap::Subcommand)]
pub enum OrgCommand {
    /// Create an organisation (operator).
    Create { name: String },
    /// List organisations (operator).
    List,
    /// Issue a tenant token for an org (operator); printed once.
    Token {
        org: u32,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List an org's tokens, by prefix (operator).
    Tokens { org: u32 },
    /// Revoke a token (operator).
    Revoke { org: u32, token: u64 },
    /// Your own org and its callback signing secret (tenant).
    Show,
}

pub async fn run_org(command: OrgCommand, remote: &Remote) -> anyhow::Result<()> {
    let client = Client::new(remote)?;
    match command {
        OrgCommand::Create { name } => {
            let org = client.post("/orgs", &json!({ "name": name })).await?;
            client.print(&org, |o| fields(o, &["id", "name"]));
        }
        OrgCommand::List => client.print(&client.get("/orgs").await?, |o| table(o, &["id", "name"])),
        OrgCommand::Token { org, label } => {
            let token = client.post(&format!("/orgs/{org}/tokens"), &json!({ "label": label })).await?;
            client.print(&token, |t| format!("{}\n", clean(t["token"].as_str().unwrap_or_default())));
        }
        OrgCommand::Tokens { org } => {
            let tokens = client.get(&format!("/orgs/{org}/tokens")).await?;
            client.print(&tokens, |t| table(t, &["id", "label", "prefix", "created_at", "revoked_at"]));
        }
        OrgCommand::Revoke { org, token } => {
            client.call(Method::DELETE, &format!("/orgs/{org}/tokens/{token}"), None).await?;
            client.print(&json!({ "revoked": token }), |_| format!("token {token} revoked\n"));
        }
        OrgCommand::Show => {
            client.print(&client.get("/org").await?, |o| fields(o, &["id", "name", "webhook_secret"]))
        }
    }
    Ok(())
}

// ---- quotas ----

#[derive(clap::Subcommand)]
pub enum QuotasCommand {
    /// Quotas and throttling state per lane: your org's, or `--org`'s (operator).
    Show {
        #[arg(long)]
        org: Option<u32>,
    },
    /// Set one lane's quotas of an org (operator); unset fields take their defaults.
    Set {
        #[arg(long)]
        org: u32,
        #[arg(long)]
        lane: String,
        /// Quotas as KEY=VALUE: max-threads, max-throughput, throughput-window-minutes,
        /// max-exceptions, exception-window-minutes, max-postponements.
        #[arg(required = true)]
        quotas: Vec<String>,
    },
}

fn lanes_table(lanes: &Json) -> String {
    table(
        lanes,
        &[
            "lane",
            "quotas.max-threads",
            "in_progress",
            "quotas.max-throughput",
            "starts_in_window",
            "ready",
            "throttled",
        ],
    )
}

pub async fn run_quotas(command: QuotasCommand, remote: &Remote) -> anyhow::Result<()> {
    let client = Client::new(remote)?;
    match command {
        QuotasCommand::Show { org } => {
            let path = org.map_or_else(|| "/quotas".to_owned(), |org| format!("/orgs/{org}/quotas"));
            client.print(&client.get(&path).await?, lanes_table);
        }
        QuotasCommand::Set { org, lane, quotas } => {
            let body = parameters(&quotas)?;
            let lane = client.call(Method::PUT, &format!("/orgs/{org}/quotas/{lane}"), Some(&body)).await?;
            client.print(&lane, |l| lanes_table(&json!([l])));
        }
    }
    Ok(())
}

// ---- plug-ins (remote) ----

/// `sluice plugin upload` and `sluice plugin list`.
pub async fn run_plugin_remote(
    upload: Option<(PathBuf, Option<String>)>,
    remote: &Remote,
) -> anyhow::Result<()> {
    let client = Client::new(remote)?;
    let columns = ["id", "name", "size", "content_hash"];
    match upload {
        Some((file, name)) => {
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let name = name.unwrap_or_else(|| {
                file.file_stem().map_or_else(|| "plugin".into(), |s| s.to_string_lossy().replace('_', "-"))
            });
            let plugin = client.upload(&format!("/plugins?name={name}"), bytes).await?;
            client.print(&plugin, |p| fields(p, &columns));
        }
        None => client.print(&client.get("/plugins").await?, |p| table(p, &columns)),
    }
    Ok(())
}

// ---- steps ----

#[derive(clap::Subcommand)]
pub enum StepCommand {
    /// Register a step: a plug-in on a message of an entity.
    Register {
        #[arg(long)]
        name: String,
        #[arg(long)]
        plugin: u64,
        /// Create, Update or Delete.
        #[arg(long)]
        message: String,
        #[arg(long)]
        entity: String,
        /// pre-validation, pre-operation or post-operation.
        #[arg(long, default_value = "post-operation")]
        stage: String,
        /// synchronous or asynchronous.
        #[arg(long, default_value = "asynchronous")]
        mode: String,
        #[arg(long, default_value_t = 1)]
        rank: i32,
        /// Filtering attributes (Update): comma-separated.
        #[arg(long, value_delimiter = ',')]
        filter: Vec<String>,
        #[arg(long)]
        config: Option<String>,
        #[arg(long)]
        secure_config: Option<String>,
        #[arg(long)]
        auto_delete: bool,
    },
    List,
    Show {
        id: u64,
    },
    Delete {
        id: u64,
    },
}

pub async fn run_step(command: StepCommand, remote: &Remote) -> anyhow::Result<()> {
    let client = Client::new(remote)?;
    match command {
        StepCommand::Register {
            name,
            plugin,
            message,
            entity,
            stage,
            mode,
            rank,
            filter,
            config,
            secure_config,
            auto_delete,
        } => {
            let body = json!({"name": name, "plugin": plugin, "message": message, "entity": entity, "stage": stage,
                "mode": mode, "rank": rank, "filtering_attributes": filter, "unsecure_config": config,
                "secure_config": secure_config, "auto_delete": auto_delete});
            let step = client.post("/steps", &body).await?;
            client.print(&step, |s| table(&json!([s]), DEFINITION_COLUMNS));
        }
        StepCommand::List => client.print(&client.get("/steps").await?, |s| table(s, DEFINITION_COLUMNS)),
        StepCommand::Show { id } => {
            let step = client.get(&format!("/steps/{id}")).await?;
            client.print(&step, |s| {
                fields(
                    s,
                    &[
                        "id",
                        "name",
                        "trigger.message",
                        "trigger.entity",
                        "spec.plugin",
                        "spec.stage",
                        "spec.mode",
                        "spec.rank",
                    ],
                )
            });
        }
        StepCommand::Delete { id } => {
            client.call(Method::DELETE, &format!("/steps/{id}"), None).await?;
            client.print(&json!({ "deleted": id }), |_| format!("step {id} deleted\n"));
        }
    }
    Ok(())
}

// ---- workflows ----

#[derive(clap::Args)]
pub struct WorkflowSpec {
    /// Create, Update or Delete.
    #[arg(long)]
    message: String,
    #[arg(long)]
    entity: String,
    #[arg(long, value_delimiter = ',')]
    filter: Vec<String>,
    /// A step, in order: PLUGIN or PLUGIN:CONFIG. Repeat for more steps.
    #[arg(long = "step", required = true)]
    steps: Vec<String>,
}

impl WorkflowSpec {
    fn json(&self) -> anyhow::Result<(Json, Json)> {
        let trigger =
            json!({"message": self.message, "entity": self.entity, "filtering_attributes": self.filter});
        let steps: anyhow::Result<Vec<Json>> = self
            .steps
            .iter()
            .map(|s| {
                let (plugin, config) = s.split_once(':').map_or((s.as_str(), None), |(p, c)| (p, Some(c)));
                let plugin: u64 =
                    plugin.parse().with_context(|| format!("`{s}`: a step is PLUGIN-ID[:CONFIG]"))?;
                Ok(json!({"plugin": plugin, "config": config}))
            })
            .collect();
        Ok((trigger, Json::Array(steps?)))
    }
}

#[derive(clap::Subcommand)]
pub enum WorkflowCommand {
    /// Create a workflow (Draft unless --activate).
    Create {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        spec: WorkflowSpec,
        #[arg(long)]
        activate: bool,
        #[arg(long)]
        auto_delete: bool,
    },
    /// Save a new version (trigger and steps).
    Version {
        id: u64,
        #[command(flatten)]
        spec: WorkflowSpec,
    },
    List,
    Show {
        id: u64,
    },
    Activate {
        id: u64,
    },
    /// Back to Draft: no new jobs, queued ones canceled on pickup.
    Deactivate {
        id: u64,
    },
    Delete {
        id: u64,
    },
}

pub async fn run_workflow(command: WorkflowCommand, remote: &Remote) -> anyhow::Result<()> {
    let client = Client::new(remote)?;
    let one = |w: &Json| table(&json!([w]), DEFINITION_COLUMNS);
    match command {
        WorkflowCommand::Create { name, spec, activate, auto_delete } => {
            let (trigger, steps) = spec.json()?;
            let body = json!({"name": name, "trigger": trigger, "steps": steps, "activate": activate, "auto_delete": auto_delete});
            client.print(&client.post("/workflows", &body).await?, one);
        }
        WorkflowCommand::Version { id, spec } => {
            let (trigger, steps) = spec.json()?;
            let body = json!({"trigger": trigger, "steps": steps});
            client.print(&client.call(Method::PUT, &format!("/workflows/{id}"), Some(&body)).await?, one);
        }
        WorkflowCommand::List => {
            client.print(&client.get("/workflows").await?, |w| table(w, DEFINITION_COLUMNS))
        }
        WorkflowCommand::Show { id } => client.print(&client.get(&format!("/workflows/{id}")).await?, one),
        WorkflowCommand::Activate { id } => {
            client.print(&client.post(&format!("/workflows/{id}/activate"), &json!({})).await?, one)
        }
        WorkflowCommand::Deactivate { id } => {
            client.print(&client.post(&format!("/workflows/{id}/deactivate"), &json!({})).await?, one)
        }
        WorkflowCommand::Delete { id } => {
            client.call(Method::DELETE, &format!("/workflows/{id}"), None).await?;
            client.print(&json!({ "deleted": id }), |_| format!("workflow {id} deleted\n"));
        }
    }
    Ok(())
}

// ---- custom APIs ----

#[derive(clap::Subcommand)]
pub enum ApiCommand {
    /// Register a custom API: a plug-in behind a message of its own.
    Register {
        #[arg(long)]
        name: String,
        #[arg(long)]
        plugin: u64,
        /// A declared parameter: NAME:TYPE, or NAME:TYPE? when optional. Repeat.
        #[arg(long = "param")]
        parameters: Vec<String>,
        #[arg(long)]
        config: Option<String>,
    },
    /// Run a custom API now and print its output parameters.
    Run {
        name: String,
        /// An input parameter NAME=VALUE. Repeat.
        #[arg(long = "param")]
        parameters: Vec<String>,
    },
    List,
    Show {
        name: String,
    },
    Delete {
        name: String,
    },
}

pub async fn run_api(command: ApiCommand, remote: &Remote) -> anyhow::Result<()> {
    let client = Client::new(remote)?;
    match command {
        ApiCommand::Register { name, plugin, parameters, config } => {
            let declared: anyhow::Result<Vec<Json>> = parameters
                .iter()
                .map(|p| {
                    let Some((name, kind)) = p.split_once(':') else { bail!("`{p}` is not NAME:TYPE") };
                    let optional = kind.ends_with('?');
                    Ok(json!({"name": name, "type": kind.trim_end_matches('?'), "optional": optional}))
                })
                .collect();
            let body =
                json!({"name": name, "plugin": plugin, "parameters": declared?, "unsecure_config": config});
            let api = client.post("/custom-apis", &body).await?;
            client.print(&api, |a| table(&json!([a]), DEFINITION_COLUMNS));
        }
        ApiCommand::Run { name, parameters: pairs } => {
            let output = client
                .post(&format!("/custom-apis/{name}/run"), &json!({"parameters": parameters(&pairs)?}))
                .await?;
            client.print(&output, |o| {
                let out = o["output_parameters"].as_object().cloned().unwrap_or_default();
                out.iter().map(|(k, v)| format!("{}  {}\n", clean(k), super::table::cell(v))).collect()
            });
        }
        ApiCommand::List => {
            client.print(&client.get("/custom-apis").await?, |a| table(a, DEFINITION_COLUMNS))
        }
        ApiCommand::Show { name } => {
            let api = client.get(&format!("/custom-apis/{name}")).await?;
            client.print(&api, |a| fields(a, &["id", "name", "spec.plugin", "spec.parameters"]));
        }
        ApiCommand::Delete { name } => {
            client.call(Method::DELETE, &format!("/custom-apis/{name}"), None).await?;
            client.print(&json!({ "deleted": name }), |_| format!("custom API {name} deleted\n"));
        }
    }
    Ok(())
}

// ---- events and records ----

#[derive(clap::Subcommand)]
pub enum EventCommand {
    /// Fire an event: Create, Update or Delete on a record.
    Fire {
        #[arg(long)]
        message: String,
        #[arg(long)]
        entity: String,
        #[arg(long)]
        record: Option<String>,
        /// An attribute NAME=VALUE. Repeat.
        #[arg(long = "set")]
        attributes: Vec<String>,
        /// Its jobs run one at a time, in order, with the org's other jobs naming it.
        #[arg(long)]
        dependency_token: Option<String>,
    },
}

pub async fn run_event(command: EventCommand, remote: &Remote) -> anyhow::Result<()> {
    let client = Client::new(remote)?;
    let EventCommand::Fire { message, entity, record, attributes, dependency_token } = command;
    let body = json!({"message": message, "entity": entity, "record_id": record,
        "attributes": parameters(&attributes)?, "dependency_token": dependency_token});
    let outcome = client.post("/events", &body).await?;
    client.print(&outcome, |o| fields(o, &["record_id", "correlation_id", "jobs"]));
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum RecordsCommand {
    /// Create records from a file (a JSON array of attribute objects, or one object per
    /// line), in batches, each batch one transaction; shows a progress bar. Sent as an
    /// import: each async step and workflow the records trigger starts its jobs as its
    /// `bulk` setting says (per record, batched(N), or one per batch after it commits).
    Import {
        file: PathBuf,
        #[arg(long)]
        entity: String,
        #[arg(long, default_value_t = 500)]
        batch: usize,
    },
    /// Show one record, all its attributes (values in their JSON form).
    Get { entity: String, id: String },
    /// List the first records of an entity, in id order.
    List {
        entity: String,
        #[arg(long, default_value_t = 50)]
        top: u32,
    },
}

/// A record's entity or id as one segment of a path.
fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A record's attributes, one `name  value` line each (values in their JSON form).
fn record_lines(record: &Json) -> String {
    let mut out = format!("{} {}\n", cell(&record["logical_name"]), cell(&record["id"]));
    for (name, value) in record["attributes"].as_object().into_iter().flatten() {
        out.push_str(&format!("  {}  {}\n", clean(name), clean(&value.to_string())));
    }
    out
}

pub async fn run_records(command: RecordsCommand, remote: &Remote) -> anyhow::Result<()> {
    let client = Client::new(remote)?;
    let (file, entity, batch) = match command {
        RecordsCommand::Import { file, entity, batch } => (file, entity, batch),
        RecordsCommand::Get { entity, id } => {
            let record = client.get(&format!("/records/{}/{}", encode(&entity), encode(&id))).await?;
            client.print(&record, record_lines);
            return Ok(());
        }
        RecordsCommand::List { entity, top } => {
            let records = client.get(&format!("/records/{}?top={top}", encode(&entity))).await?;
            client.print(&records, |all| all.as_array().into_iter().flatten().map(record_lines).collect());
            return Ok(());
        }
    };
    let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let records: Vec<Json> = match serde_json::from_str::<Json>(&text) {
        Ok(Json::Array(records)) => records,
        _ => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(n, l)| serde_json::from_str(l).with_context(|| format!("line {}: not JSON", n + 1)))
            .collect::<anyhow::Result<_>>()?,
    };
    let bar = ProgressBar::new(records.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} records · {per_sec} · eta {eta}")
            .expect("a valid template"),
    );
    if client.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let (mut created, mut jobs) = (0usize, 0usize);
    for chunk in records.chunks(batch.max(1)) {
        let events: Vec<Json> =
            chunk.iter().map(|a| json!({"message": "Create", "entity": entity, "attributes": a})).collect();
        let outcomes = client.post("/events/batch", &json!({ "events": events, "import": true })).await?;
        for outcome in outcomes.as_array().into_iter().flatten() {
            jobs += outcome["jobs"].as_array().map_or(0, Vec::len);
        }
        created += chunk.len();
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    client.print(&json!({"created": created, "jobs": jobs}), |_| {
        format!("created {created} records · {jobs} jobs queued\n")
    });
    Ok(())
}

// ---- jobs ----

#[derive(clap::Subcommand)]
pub enum JobCommand {
    /// List jobs, newest first.
    List {
        /// Status code or name (waiting-for-resources, waiting, in-progress, succeeded, failed, canceled …).
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        lane: Option<String>,
        #[arg(long)]
        definition: Option<u64>,
        #[arg(long)]
        correlation: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    Show {
        id: u64,
    },
    /// Wait until the job ends (succeeded, failed or canceled) and show it; exits 1 if
    /// it did not succeed.
    Wait {
        id: u64,
        /// Give up after this many seconds (exit 2).
        #[arg(long, default_value_t = 60)]
        timeout_s: u64,
    },
    /// The plug-in trace log and accounting.
    Trace {
        id: u64,
    },
    Cancel {
        id: u64,
    },
    Pause {
        id: u64,
    },
    Resume {
        id: u64,
    },
}

/// `job wait` saw the job end otherwise than succeeded (exit code 1, not 2).
#[derive(Debug, thiserror::Error)]
#[error("job {0} did not succeed")]
pub struct JobDidNotSucceed(pub u64);

pub async fn run_job(command: JobCommand, remote: &Remote) -> anyhow::Result<()> {
    let client = Client::new(remote)?;
    let one = |j: &Json| fields(j, JOB_FIELDS);
    match command {
        JobCommand::List { status, lane, definition, correlation, limit } => {
            let mut query = vec![format!("limit={limit}")];
            query.extend(status.map(|s| format!("status={s}")));
            query.extend(lane.map(|l| format!("lane={l}")));
            query.extend(definition.map(|d| format!("definition={d}")));
            query.extend(correlation.map(|c| format!("correlation={c}")));
            client
                .print(&client.get(&format!("/jobs?{}", query.join("&"))).await?, |j| table(j, JOB_COLUMNS));
        }
        JobCommand::Show { id } => client.print(&client.get(&format!("/jobs/{id}")).await?, one),
        JobCommand::Wait { id, timeout_s } => {
            let until = std::time::Instant::now() + std::time::Duration::from_secs(timeout_s);
            let job = loop {
                let job = client.get(&format!("/jobs/{id}")).await?;
                if job["status"].as_u64().is_some_and(|s| s >= 30) {
                    break job;
                }
                anyhow::ensure!(
                    std::time::Instant::now() < until,
                    "job {id} did not end within {timeout_s} s (status {})",
                    cell(&job["status_name"])
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            };
            client.print(&job, one);
            if job["status_name"] != "succeeded" {
                return Err(JobDidNotSucceed(id).into());
            }
        }
        JobCommand::Trace { id } => {
            let trace = client.get(&format!("/jobs/{id}/trace")).await?;
            client.print(&trace, |t| {
                let log = clean_lines(t["trace"].as_str().unwrap_or("(no trace log)"));
                format!(
                    "{log}\n{}",
                    fields(
                        t,
                        &[
                            "accounting.fuel_used",
                            "accounting.wall_time_us",
                            "accounting.host_time_us",
                            "accounting.peak_memory_bytes"
                        ]
                    )
                )
            });
        }
        JobCommand::Cancel { id } => {
            client.print(&client.post(&format!("/jobs/{id}/cancel"), &json!({})).await?, one)
        }
        JobCommand::Pause { id } => {
            client.print(&client.post(&format!("/jobs/{id}/pause"), &json!({})).await?, one)
        }
        JobCommand::Resume { id } => {
            client.print(&client.post(&format!("/jobs/{id}/resume"), &json!({})).await?, one)
        }
    }
    Ok(())
}

// ---- background operations ----

#[derive(clap::Subcommand)]
pub enum OperationCommand {
    /// Start a custom API as a background operation.
    Start {
        /// The custom API.
        name: String,
        #[arg(long = "param")]
        parameters: Vec<String>,
        /// Where to POST the signed result when it ends.
        #[arg(long)]
        callback: Option<String>,
        /// Wait for it to end (with a spinner) and print the result.
        #[arg(long)]
        wait: bool,
        /// It runs after the org's earlier jobs naming the same token have ended.
        #[arg(long)]
        dependency_token: Option<String>,
    },
    Show {
        id: String,
    },
    /// Wait for an operation to end, then print it.
    Wait {
        id: String,
    },
    /// Cancel an operation that has not started.
    Cancel {
        id: String,
    },
}

async fn wait(client: &Client, id: &str) -> anyhow::Result<Json> {
    let spinner = ProgressBar::new_spinner().with_message(format!("background operation {id}"));
    if client.json {
        spinner.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    spinner.enable_steady_tick(Duration::from_millis(100));
    loop {
        let operation = client.get(&format!("/background-operations/{id}")).await?;
        let delivery = operation["callback"]["delivery"]["state"].as_str();
        if operation["state"] == 3 && delivery != Some("waiting") {
            spinner.finish_and_clear();
            return Ok(operation);
        }
        spinner.set_message(format!(
            "background operation {id}: {}",
            clean(operation["status_name"].as_str().unwrap_or("?"))
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn run_operation(command: OperationCommand, remote: &Remote) -> anyhow::Result<()> {
    let client = Client::new(remote)?;
    let one = |o: &Json| fields(o, OPERATION_FIELDS);
    match command {
        OperationCommand::Start {
            name,
            parameters: pairs,
            callback,
            wait: wait_for_it,
            dependency_token,
        } => {
            let body = json!({"request": {"name": name, "parameters": parameters(&pairs)?}, "callback_uri": callback,
                "dependency_token": dependency_token});
            let accepted = client.post("/background-operations", &body).await?;
            if wait_for_it {
                let id = accepted["id"].as_str().unwrap_or_default().to_owned();
                client.print(&wait(&client, &id).await?, one);
            } else {
                client.print(&accepted, |a| fields(a, &["id", "location"]));
            }
        }
        OperationCommand::Show { id } => {
            client.print(&client.get(&format!("/background-operations/{id}")).await?, one)
        }
        OperationCommand::Wait { id } => client.print(&wait(&client, &id).await?, one),
        OperationCommand::Cancel { id } => {
            let operation =
                client.call(Method::DELETE, &format!("/background-operations/{id}"), None).await?;
            client.print(&operation, one);
        }
    }
    Ok(())
}
