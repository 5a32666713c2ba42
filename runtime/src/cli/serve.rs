//! `sluice serve` and `sluice demo`: the store, the scheduler and the engine as one
//! process on an embedded SQLite file (or one node of several on a PostgreSQL
//! database), with an optional demo load to watch.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sluice::callbacks::Deliverer;
use sluice::config::ServeConfig;
use sluice::engine::{Engine, Mode};
use sluice::jobs::{DefinitionId, Lane, OrgId, Status};
use sluice::records::{Attributes, Value};
use sluice::service::{Clock, ClusterOptions, DatabaseClock, Event, Options, Service, SystemClock};
use sluice::store::{Definition, PostgresStore, SqliteStore, Store, Trigger};

use super::format::{clean, count, micros};

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The data directory: the SQLite file and the compiled-plug-in cache live here.
    #[arg(long, default_value = "sluice-data")]
    data: PathBuf,
    /// The configuration file (TOML); defaults apply without one.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the sample plug-ins are, for the demo load and --import.
    #[arg(long, default_value = "target/sample-plugins/wasm32-wasip2/plugin")]
    plugins: PathBuf,
    /// Run the demo load: a steady tenant, a runaway workflow (deactivated after 15 s)
    /// and an always-failing plug-in.
    #[arg(long)]
    demo_load: bool,
    /// Import this many accounts into the `importer` org, each triggering a workflow
    /// that numbers it; prints `acknowledged N` as events are committed.
    #[arg(long)]
    import: Option<u32>,
    /// Exit once the loads are done and no job is left to run.
    #[arg(long)]
    until_idle: bool,
    /// Stop after this many seconds.
    #[arg(long)]
    seconds: Option<u64>,
    /// Where the HTTP API listens (overrides the configuration; port 0 picks a free
    /// port, printed at start).
    #[arg(long)]
    listen: Option<String>,
    /// A PostgreSQL database shared by several nodes (`postgres://user@host:port/db`;
    /// overrides the configuration's `database`). Default: the data directory's SQLite file.
    #[arg(long)]
    database: Option<String>,
}

/// The operator token: `$SLUICE_OPERATOR_TOKEN`, else the data directory's
/// `operator-token` file, made (readable by its owner only) at first start.
fn operator_token(data: &Path) -> anyhow::Result<(String, String)> {
    if let Some(token) = std::env::var("SLUICE_OPERATOR_TOKEN").ok().filter(|t| !t.trim().is_empty()) {
        return Ok((token.trim().to_owned(), "$SLUICE_OPERATOR_TOKEN".into()));
    }
    let path = data.join("operator-token");
    if !path.exists() {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no random source: {e}"))?;
        let token = format!("sluop_{}", hex::encode(bytes));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        std::io::Write::write_all(&mut options.open(&path)?, token.as_bytes())?;
    }
    let token = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok((token.trim().to_owned(), path.display().to_string()))
}

/// Starts the HTTP API and the callback deliverer; returns the API's base URL.
async fn start_api(
    service: &Service,
    config: &ServeConfig,
    data: &Path,
    listen: Option<&str>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(String, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let address = listen.unwrap_or(&config.api.listen);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let local = listener.local_addr()?;
    let base_url = config.api.public_url.clone().unwrap_or_else(|| format!("http://{local}"));
    let (token, token_source) = operator_token(data)?;
    let app = sluice::api::router(service.clone(), &token, &config.api, &base_url);
    println!("sluice: API on http://{local}/api/v1 (operator token: {token_source})");
    println!("sluice: dashboard on {base_url}/dashboard, metrics on {base_url}/metrics");
    let deliverer = Deliverer::new(service.clone(), config.callbacks.clone(), base_url.clone());
    tokio::spawn(deliverer.run());
    let mut stop = stop;
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
    });
    Ok((base_url, server))
}

fn load_config(path: Option<&Path>) -> anyhow::Result<ServeConfig> {
    let Some(path) = path else { return Ok(ServeConfig::default()) };
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    ServeConfig::parse(&text).with_context(|| format!("{} is not a valid configuration", path.display()))
}

async fn open(data: &Path, config: &ServeConfig) -> anyhow::Result<Service> {
    sluice::files::private_dir(data).with_context(|| format!("cannot make {} private", data.display()))?;
    let engine = Engine::new(config.engine.clone(), Some(&data.join("artifacts")))?;
    let mut options = Options {
        slots: config.slots,
        limits: config.engine.default_limits.clone(),
        default_quotas: config.default_quotas,
        retention: config.retention,
        sync_per_org: config.sync_per_org,
        cluster: None,
        kept_payloads: config.kept_payloads,
        fairness: config.fairness,
        executions: Some(super::threads::handle()?),
        sync_steps: super::threads::sync_steps_runtime()?,
        runaway: config.runaway,
    };
    let (store, clock): (Arc<dyn Store>, Arc<dyn Clock>) = match &config.database {
        // One of several nodes: the database's clock, leases on the orgs.
        Some(url) => {
            let store = PostgresStore::open(url)
                .with_context(|| format!("cannot open {}", super::format::redacted(url)))?;
            let cluster = ClusterOptions {
                lease_ttl: i64::from(config.cluster.lease_ttl_seconds.max(1)) * 1000,
                ..ClusterOptions::new()
            };
            println!("sluice: node {} on {}", cluster.node, super::format::redacted(url));
            options.cluster = Some(cluster);
            (Arc::new(store), Arc::new(DatabaseClock::default()))
        }
        None => (Arc::new(SqliteStore::open(&data.join("sluice.db"))?), Arc::new(SystemClock)),
    };
    let service = Service::open(store, engine, clock, options)?;
    for org in &config.orgs {
        let id = org_named(&service, &org.name)?;
        let access = sluice::engine::OutboundAccess { allow_networks: org.outbound_allow_networks.clone() };
        service.set_outbound_access(id, access);
        if let Some(bytes) = org.max_plugin_bytes {
            service.set_plugin_limit(id, bytes);
        }
        service.set_notify_url(id, org.notify_url.clone());
        for (lane, quotas) in [(Lane::Priority, org.priority), (Lane::Regular, org.regular)] {
            if let Some(quotas) = quotas {
                service.set_quotas(id, lane, quotas)?;
            }
        }
    }
    Ok(service)
}

/// The org of that name, created if missing.
fn org_named(service: &Service, name: &str) -> anyhow::Result<OrgId> {
    if let Some((id, _)) = service.store().orgs()?.into_iter().find(|(_, n)| n == name) {
        return Ok(id);
    }
    Ok(service.create_org(name)?)
}

/// The definition of that name in the org, saved from `make` if missing.
fn definition_named(
    service: &Service,
    org: OrgId,
    name: &str,
    make: impl FnOnce() -> anyhow::Result<Definition>,
) -> anyhow::Result<DefinitionId> {
    if let Some(d) = service.store().definitions()?.into_iter().find(|d| d.org == org && d.name == name) {
        return Ok(d.id);
    }
    Ok(service.save_definition(make()?)?)
}

fn plugin(service: &Service, org: OrgId, dir: &Path, name: &str) -> anyhow::Result<u64> {
    plugin_file(service, org, &dir.join(format!("{name}.wasm")), name)
}

fn plugin_file(service: &Service, org: OrgId, path: &Path, name: &str) -> anyhow::Result<u64> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read {} (build the samples first)", path.display()))?;
    Ok(service.upload_plugin(org, name, &bytes)?.id)
}

fn on(message: &str, entity: &str) -> Trigger {
    Trigger::on(message, entity)
}

fn step(org: OrgId, name: &str, plugin: u64, trigger: Trigger, config: Option<&str>) -> Definition {
    Definition::step(org, name, plugin, trigger, Mode::Asynchronous, config)
}

fn create(entity: &str, id: String, attributes: &[(&str, Value)]) -> Event {
    let attributes: Attributes = attributes.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    Event {
        message: "Create".into(),
        entity: entity.into(),
        record_id: Some(id),
        attributes,
        dependency_token: None,
    }
}

/// The demo tenants and their load: watch the runaway being contained.
async fn demo_load(service: Service, plugins: PathBuf) -> anyhow::Result<()> {
    let steady = org_named(&service, "fabrikam")?;
    let runaway = org_named(&service, "contoso")?;
    let failing = org_named(&service, "northwind")?;
    let router = plugin(&service, steady, &plugins, "lead_router")?;
    definition_named(&service, steady, "route leads", || {
        Ok(step(steady, "route leads", router, on("Create", "lead"), Some("US=alice;DE=bertha;*=carol")))
    })?;
    let echo = plugin(&service, runaway, &plugins, "echo")?;
    let flow = definition_named(&service, runaway, "sync to ERP (runaway)", || {
        Ok(Definition::workflow(runaway, "sync to ERP (runaway)", echo, on("Create", "account")))
    })?;
    service.set_active(runaway, flow, true)?;
    let audit = plugin(&service, runaway, &plugins, "audit_trail")?;
    definition_named(&service, runaway, "audit contacts", || {
        Ok(step(runaway, "audit contacts", audit, on("Create", "contact"), None))
    })?;
    let flaky = plugin(&service, failing, &plugins, "flaky_sync")?;
    definition_named(&service, failing, "always busy", || {
        Ok(step(failing, "always busy", flaky, on("Create", "task"), Some("1000000")))
    })?;

    let polyglot = polyglot_tenant(&service, &plugins)?;

    let started = Instant::now();
    let mut deactivated = false;
    for tick in 0u64.. {
        let run = uuid::Uuid::new_v4().simple().to_string();
        service.fire(steady, create("lead", format!("lead-{run}"), &[("country", "DE".into())])).await?;
        service.fire(runaway, create("contact", format!("contact-{run}"), &[])).await?;
        if started.elapsed() < Duration::from_secs(15) {
            for n in 0..20 {
                service.fire(runaway, create("account", format!("acc-{run}-{n}"), &[])).await?;
            }
        } else if !deactivated {
            service.set_active(runaway, flow, false)?;
            println!(
                "demo: deactivated contoso's runaway workflow; its queued jobs are canceled as they are picked up"
            );
            deactivated = true;
        }
        if tick % 50 == 0 {
            service.fire(failing, create("task", format!("task-{run}"), &[])).await?;
        }
        if let Some(org) = polyglot
            && tick % 5 == 0
        {
            service
                .fire(org, create("account", format!("account-{run}"), &[("name", "Tailspin".into())]))
                .await?;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// A tenant whose plug-ins are written in Python and JavaScript (the samples built beside
/// the Rust ones, under `target/sample-plugins/`): a JavaScript credit validator, sync, and
/// Python account numbering, async, on Create of account. `None` when they are not built.
fn polyglot_tenant(service: &Service, plugins: &Path) -> anyhow::Result<Option<OrgId>> {
    let Some(built) = plugins.parent().and_then(Path::parent) else { return Ok(None) };
    let (python, js) = (built.join("python/account_number.wasm"), built.join("js/credit-validator.wasm"));
    if !python.exists() || !js.exists() {
        println!("demo: the Python and JavaScript samples are not built; tailspin is left out");
        return Ok(None);
    }
    let org = org_named(service, "tailspin")?;
    println!("demo: loading tailspin's Python and JavaScript plug-ins (the first load compiles each, ~10 s)");
    let validator = plugin_file(service, org, &js, "credit-validator (JavaScript)")?;
    definition_named(service, org, "validate accounts (JavaScript)", || {
        let trigger = on("Create", "account");
        Ok(Definition::step(
            org,
            "validate accounts (JavaScript)",
            validator,
            trigger,
            Mode::Synchronous,
            None,
        ))
    })?;
    let numbering = plugin_file(service, org, &python, "account-number (Python)")?;
    definition_named(service, org, "number accounts (Python)", || {
        Ok(step(org, "number accounts (Python)", numbering, on("Create", "account"), Some("TSP")))
    })?;
    Ok(Some(org))
}

/// The crash-test load: N account creates, each triggering the numbering workflow.
async fn import(service: Service, plugins: PathBuf, accounts: u32) -> anyhow::Result<()> {
    let org = org_named(&service, "importer")?;
    let numbering = plugin(&service, org, &plugins, "account_number")?;
    definition_named(&service, org, "number accounts", || {
        Ok(Definition::workflow(org, "number accounts", numbering, on("Create", "account")))
    })?;
    for n in 1..=accounts {
        service.fire(org, create("account", format!("import-{n:06}"), &[])).await?;
        if n % 100 == 0 || n == accounts {
            println!("acknowledged {n}");
        }
    }
    Ok(())
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// One line per org: jobs by status and the pickup latency of recent jobs.
pub fn report(service: &Service) -> anyhow::Result<String> {
    let mut out = String::new();
    for (org, name) in service.store().orgs()? {
        let name = clean(&name);
        let counts = service.job_counts(org)?;
        let of =
            |status: Status| counts.iter().filter(|(_, s, _)| *s == status).map(|(_, _, n)| *n).sum::<u64>();
        let mut latencies: Vec<i64> = service
            .store()
            .jobs(org, &sluice::store::JobFilter::all(2_000))?
            .iter()
            .filter_map(|j| Some(j.started_at? - j.created_at))
            .collect();
        latencies.sort_unstable();
        out.push_str(&format!(
            "{name:>10}: waiting {:>6} · running {:>3} · succeeded {:>7} · failed {:>5} · postponed {:>4} · canceled {:>6} · pickup p50 {} p99 {}\n",
            count(of(Status::WaitingForResources)),
            of(Status::InProgress),
            count(of(Status::Succeeded)),
            count(of(Status::Failed)),
            of(Status::Waiting),
            count(of(Status::Canceled)),
            micros(percentile(&latencies, 0.5) as u64 * 1000),
            micros(percentile(&latencies, 0.99) as u64 * 1000),
        ));
    }
    Ok(out)
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = load_config(args.config.as_deref())?;
    if args.database.is_some() {
        config.database = args.database.clone();
    }
    let service = open(&args.data, &config).await?;
    match &config.database {
        Some(_) => println!("sluice: serving ({} slots per lane)", config.slots),
        None => println!(
            "sluice: serving {} ({} slots per lane)",
            args.data.join("sluice.db").display(),
            config.slots
        ),
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let driver = {
        let service = service.clone();
        tokio::spawn(async move { service.run(async { stop_rx.await.unwrap_or(()) }).await })
    };
    // Several nodes: leases, adoption and the change log (nothing to do for one node).
    let (cluster_stop, cluster_stopped) = tokio::sync::oneshot::channel::<()>();
    let cluster = {
        let service = service.clone();
        tokio::spawn(async move { service.run_cluster(async { cluster_stopped.await.unwrap_or(()) }).await })
    };
    let (api_stop, api_stopped) = tokio::sync::watch::channel(false);
    let (_, api) = start_api(&service, &config, &args.data, args.listen.as_deref(), api_stopped).await?;
    let mut loads = Vec::new();
    if args.demo_load {
        loads.push(tokio::spawn(demo_load(service.clone(), args.plugins.clone())));
    }
    if let Some(accounts) = args.import {
        loads.push(tokio::spawn(import(service.clone(), args.plugins.clone(), accounts)));
    }
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        if driver.is_finished() || service.failure().is_some() {
            // A node that no longer runs jobs must not keep acknowledging them: stop
            // serving and exit non-zero so that a supervisor restarts it (the restart
            // rebuilds the scheduler from the store).
            let reason = service.failure().unwrap_or_else(|| "the driver stopped".into());
            eprintln!("sluice: {reason}; exiting");
            for load in loads {
                load.abort();
            }
            let _ = api_stop.send(true);
            let _ = api.await;
            return Ok(ExitCode::FAILURE);
        }
        if let Some(failed) = loads.iter().position(|l| l.is_finished()) {
            let load = loads.remove(failed);
            load.await?.context("the load failed")?;
        }
        if args.seconds.is_some_and(|s| started.elapsed() >= Duration::from_secs(s)) {
            break;
        }
        if args.until_idle
            && loads.is_empty()
            && service.store().unfinished_jobs()?.iter().all(|j| j.status == Status::Waiting)
        {
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            print!("{}", report(&service)?);
            last_report = Instant::now();
        }
    }
    for load in loads {
        load.abort();
    }
    let _ = api_stop.send(true);
    let _ = stop_tx.send(());
    driver.await??;
    let _ = cluster_stop.send(());
    cluster.await??;
    // What this node held goes to the others now, not after the lease's TTL.
    service.release_all()?;
    api.await??;
    print!("{}", report(&service)?);
    Ok(ExitCode::SUCCESS)
}

/// `sluice demo`: the demo load on a fresh data directory for a while, then a report.
pub async fn demo(plugins: PathBuf, seconds: u64) -> anyhow::Result<ExitCode> {
    let data = tempfile_dir()?;
    let args = ServeArgs {
        data: data.clone(),
        config: None,
        plugins,
        demo_load: true,
        import: None,
        until_idle: false,
        seconds: Some(seconds),
        listen: Some("127.0.0.1:0".into()),
        database: None,
    };
    let code = serve(args).await;
    let _ = std::fs::remove_dir_all(&data);
    code
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("sluice-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
