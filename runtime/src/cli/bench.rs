//! `sluice bench SCENARIO`: load generators for an operator, like redis-benchmark. Each
//! prints a readable summary and, as its last line, one JSON object with the figures.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice::engine::baseline::{self, Bare, types};
use sluice::engine::{Engine, EngineSettings, Mode};
use sluice::jobs::{Lane, OrgId, Quotas, Status};
use sluice::records::Attributes;
use sluice::service::{ClusterOptions, DatabaseClock, Event, Options, RunawayRule, Service, SystemClock};
use sluice::store::{Definition, JobFilter, SqliteStore, Trigger};
use tokio::sync::broadcast::error::RecvError;

use super::format::{bytes, count, micros};
use super::thread_cpu;

/// Where the victim's jobs are stored, for the isolation benches that can tell.
#[derive(clap::Args, Debug)]
pub struct VictimStoreArg {
    /// Where B's jobs are stored: `shared`, in A's node's store (one writer for both,
    /// as every org of a node today); `own`, on a second node in the process with a
    /// store file, writer, driver and slots of its own, sharing the engine, the
    /// runtimes' threads, the cores and the disk (what separate stores could at best
    /// give); `apart`, A in a separate `sluice` process, sharing only the machine (the
    /// floor any design running both tenants on this machine starts from).
    #[arg(long, value_enum, default_value = "shared")]
    victim_store: super::bench_isolation::VictimStore,
}

#[derive(clap::Subcommand)]
pub enum Scenario {
    /// N trivial jobs enqueued, then run to completion on the durable store by the
    /// node's driver (as `sluice serve` runs it); against a bare-wasmtime
    /// instantiate+call loop on one thread and on every core, in the same run. The
    /// default runs past the 65,536 payloads a node keeps in memory.
    Throughput {
        #[arg(long, default_value_t = 200_000)]
        jobs: u64,
        /// Run on this PostgreSQL database (`postgres://user@host:port/database`, an empty
        /// one: the benchmark creates its tables) instead of a fresh SQLite file.
        #[arg(long)]
        database: Option<String>,
        /// With --database: this many nodes in this process, each with its own engine,
        /// sharing the orgs through leases as `sluice serve --database` nodes do.
        #[arg(long, default_value_t = 1)]
        nodes: usize,
        /// The jobs spread over this many orgs (default: one per node, so that every
        /// node holds one).
        #[arg(long)]
        orgs: Option<usize>,
    },
    /// Org B's steady trivial jobs beside org A's backlog on the same lane, slots
    /// saturated (A's thread cap as high as the lane's slots): first a trivial flood,
    /// then a CPU-bound one (`cpu_burn`, about 10 ms a job). B's p99 end-to-end latency
    /// (created -> completed, µs) against B alone, in the same run.
    NoisyNeighbour {
        /// A's backlog, kept topped up as it drains (the CPU-bound one at most 2,000).
        #[arg(long, default_value_t = 20_000)]
        flood: u64,
        /// B's events per second.
        #[arg(long, default_value_t = 200)]
        rate: u64,
        /// Seconds of B's load per measurement.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Rounds of (alone, trivial flood, CPU-bound flood), interleaved; the ratios
        /// reported are the medians.
        #[arg(long, default_value_t = 1)]
        runs: u32,
        #[command(flatten)]
        victim: VictimStoreArg,
    },
    /// Org B's trivial jobs beside org A's backlog of CPU-bound jobs (`cpu_burn`, about
    /// 10 ms each) on the same lane, both with the lane's slots as their thread cap: B's
    /// p99 end-to-end latency against B alone, with turns charged by cost and counted in
    /// jobs, in the same run. The last line is JSON (`b_p99_ratio`).
    CostFairness {
        /// B's events per second.
        #[arg(long, default_value_t = 200)]
        rate: u64,
        /// Seconds of B's load per measurement.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Rounds of (alone, by cost, in jobs), interleaved; the ratios reported are the
        /// medians.
        #[arg(long, default_value_t = 1)]
        runs: u32,
        #[command(flatten)]
        victim: VictimStoreArg,
    },
    /// MISSION scenario 1 in each bulk-import mode: org A imports 10,000 accounts, each
    /// triggering a workflow (per-record, batched(100), after-import); org B's trivial
    /// workflow on the same lane: B's p99 end-to-end latency against B alone.
    BulkImport {
        /// B's events per second.
        #[arg(long, default_value_t = 200)]
        rate: u64,
        /// Seconds of B's load per measurement.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Rounds of (alone, each mode), interleaved; the ratios reported are the medians.
        #[arg(long, default_value_t = 1)]
        runs: u32,
        #[command(flatten)]
        victim: VictimStoreArg,
    },
    /// Dequeue-and-run throughput with a large backlog waiting against a small one;
    /// bytes on disk per waiting job. The large backlog's runs start past the payloads
    /// a node keeps in memory (its first 65,536 jobs run untimed first), so each of its
    /// starts reads its row back; the small one's are all in memory. Each round runs
    /// both, which goes first alternating; the ratio reported is the median of the
    /// rounds'. A rate counts from the drain's first completion: the driver is started
    /// and stopped around each drain, and its start-up (printed apart) is not dequeueing.
    /// Each side's CPU time a job, by thread (Linux), says where a difference went.
    Backlog {
        #[arg(long, default_value_t = 1_000_000)]
        large: u64,
        #[arg(long, default_value_t = 10_000)]
        small: u64,
        /// Jobs run to completion from each backlog in a round (the small backlog is
        /// filled again before each).
        #[arg(long, default_value_t = 10_000)]
        run: u64,
        #[arg(long, default_value_t = 9)]
        rounds: u32,
    },
    /// One attack of the isolation benches on a node of its own, until standard input
    /// closes (what `--victim-store apart` runs in a child process).
    #[command(hide = true)]
    Flood {
        attack: String,
        #[arg(long, default_value_t = 20_000)]
        flood: u64,
        /// Count turns in jobs rather than by cost.
        #[arg(long)]
        turns_in_jobs: bool,
    },
    /// The costliest uploads within the size limit and the complexity bounds: the CPU
    /// time and memory each costs before it is refused or accepted.
    UploadBomb {
        /// Load this one component in this process and print its figures (what the
        /// scenario runs in a child process per shape).
        #[arg(long)]
        load: Option<std::path::PathBuf>,
    },
    /// A victim org's steady load beside one hostile org at a time (conflicting writes,
    /// compile bombs, a query storm, a sync-step flood, a full pool, a write storm): the
    /// victim's p99 end-to-end latency against the victim alone.
    Isolation {
        /// The victim's events per second.
        #[arg(long, default_value_t = 200)]
        rate: u64,
        /// Seconds of victim load per attack.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Attacks to run (comma-separated); all by default.
        #[arg(long, value_delimiter = ',')]
        attacks: Vec<String>,
        /// Rounds of (alone, every attack), interleaved; the ratio reported is the
        /// median of the rounds' (each against its own round's victim alone).
        #[arg(long, default_value_t = 1)]
        runs: u32,
    },
}

/// Quotas that never throttle: the benchmarks measure the machinery, not the caps.
const OPEN: Quotas = Quotas {
    max_threads: 64,
    max_throughput: u32::MAX,
    throughput_window_minutes: 1,
    max_exceptions: 3,
    exception_window_minutes: 5,
    max_postponements: 5,
};

struct Bench {
    service: Service,
    _dir: tempfile_guard::Guard,
}

mod tempfile_guard {
    /// Removes the benchmark's data directory when dropped.
    pub struct Guard(pub std::path::PathBuf);

    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A node on a fresh SQLite file.
fn fresh(name: &str) -> anyhow::Result<Bench> {
    let dir = std::env::temp_dir().join(format!("sluice-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Arc::new(SqliteStore::open(&dir.join("sluice.db"))?);
    // 128 slots on each of three lanes, and room for synchronous work beside them.
    let settings = EngineSettings { max_concurrent_executions: 512, ..EngineSettings::default() };
    let engine = Engine::new(settings, Some(&dir.join("artifacts")))?;
    // Plug-ins on their own threads at a lower priority, as `sluice serve` runs them.
    let executions = Some(super::threads::handle()?);
    // A bench's enqueue is a deliberate flood, which the runaway rule would flag and
    // throttle part-way through a run (at a moment that differs between the sides
    // compared): these benches measure the job path, the rule has its own tests.
    let runaway = RunawayRule { min_backlog: u64::MAX, ..RunawayRule::default() };
    let options = Options { slots: 128, default_quotas: OPEN, executions, runaway, ..Options::default() };
    let service = Service::open(store, engine, Arc::new(SystemClock), options)?;
    Ok(Bench { service, _dir: tempfile_guard::Guard(dir) })
}

fn echo_path(plugins: &Path) -> String {
    plugins.join("echo.wasm").display().to_string()
}

/// An org with the echo plug-in registered on Create of `entity`, as a step (priority
/// lane) or a workflow (regular lane).
fn tenant(service: &Service, name: &str, plugins: &Path, entity: &str, lane: Lane) -> anyhow::Result<OrgId> {
    let org = service.create_org(name)?;
    let bytes = std::fs::read(echo_path(plugins))?;
    let plugin = service.upload_plugin(org, "echo", &bytes)?.id;
    let trigger = Trigger::on("Create", entity);
    let name = format!("echo on {entity}");
    service.save_definition(match lane {
        Lane::Regular => Definition::workflow(org, &name, plugin, trigger),
        _ => Definition::step(org, &name, plugin, trigger, Mode::Asynchronous, None),
    })?;
    Ok(org)
}

fn create(entity: &str, n: u64) -> Event {
    Event {
        message: "Create".into(),
        entity: entity.into(),
        record_id: Some(format!("{entity}-{n}")),
        attributes: Attributes::new(),
        dependency_token: None,
    }
}

/// Enqueues `n` events as imports of 1,000 (as `sluice records import --batch 1000`
/// sends them), with progress; returns events per second.
async fn enqueue(service: &Service, org: OrgId, entity: &str, n: u64) -> anyhow::Result<f64> {
    enqueue_from(service, org, entity, 0, n).await
}

/// [`enqueue`] of the records numbered `first..first + n`.
async fn enqueue_from(
    service: &Service,
    org: OrgId,
    entity: &str,
    first: u64,
    n: u64,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let progress = indicatif::ProgressBar::new(n).with_message(format!("enqueueing {entity} events"));
    let (mut next, end) = (first, first + n);
    while next < end {
        let batch: Vec<Event> = (next..(next + 1_000).min(end)).map(|i| create(entity, i)).collect();
        next += batch.len() as u64;
        service.import_batch(org, batch).await?;
        progress.set_position(next - first);
    }
    progress.finish_and_clear();
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// The bare loop on `threads` threads at once, one `Bare` shared (one engine, as a node
/// has), `calls` calls in all.
fn bare_rate_on_threads(plugins: &Path, calls: u64, threads: usize) -> anyhow::Result<f64> {
    let bare = Bare::new(&echo_path(plugins), false).map_err(|e| anyhow::anyhow!("baseline: {e}"))?;
    let context =
        baseline::context(vec![types::Attribute { name: "n".into(), value: types::Value::Integer(1) }]);
    let each = calls / threads as u64;
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                // Free of the node's cores, as the plug-ins' threads are.
                super::threads::use_every_core();
                for _ in 0..each {
                    bare.call(&context);
                }
            });
        }
    });
    Ok((each * threads as u64) as f64 / started.elapsed().as_secs_f64())
}

fn bare_rate(plugins: &Path, calls: u64) -> anyhow::Result<f64> {
    bare_rate_on_threads(plugins, calls, 1)
}

pub async fn run(scenario: Scenario, plugins: &Path) -> anyhow::Result<()> {
    match scenario {
        Scenario::Throughput { jobs, database, nodes, orgs } => {
            throughput(plugins, jobs, database.as_deref(), nodes.max(1), orgs.unwrap_or(nodes).max(1)).await
        }
        Scenario::NoisyNeighbour { flood, rate, seconds, runs, victim } => {
            super::bench_isolation::noisy_neighbour(plugins, flood, rate, seconds, runs, victim.victim_store)
                .await
        }
        Scenario::CostFairness { rate, seconds, runs, victim } => {
            super::bench_isolation::cost_fairness(plugins, rate, seconds, runs, victim.victim_store).await
        }
        Scenario::BulkImport { rate, seconds, runs, victim } => {
            super::bench_isolation::bulk_import(plugins, rate, seconds, runs, victim.victim_store).await
        }
        Scenario::Backlog { large, small, run, rounds } => backlog(plugins, large, small, run, rounds).await,
        Scenario::Flood { attack, flood, turns_in_jobs } => {
            let fairness = if turns_in_jobs {
                sluice::service::Fairness::JobCount
            } else {
                sluice::service::Fairness::Cost
            };
            super::bench_isolation::flood(plugins, &attack, flood, fairness).await
        }
        Scenario::UploadBomb { load: Some(file) } => super::bench_upload::load_one(&file),
        Scenario::UploadBomb { load: None } => super::bench_upload::upload_bomb(),
        Scenario::Isolation { rate, seconds, attacks, runs } => {
            let attacks = if attacks.is_empty() {
                super::bench_isolation::ATTACKS.iter().map(|a| a.to_string()).collect()
            } else {
                attacks
            };
            super::bench_isolation::isolation(plugins, &attacks, rate, seconds, runs).await
        }
    }
}

/// The nodes of a throughput run and what they run on.
struct Nodes {
    services: Vec<Service>,
    store: &'static str,
    cluster: bool,
    _dir: tempfile_guard::Guard,
}

/// One node on a fresh SQLite file, or `nodes` nodes on the PostgreSQL database at
/// `url`, each as `sluice serve` runs it (leases, adoption, fenced commits per org, the
/// database's clock), each with its own engine.
fn throughput_nodes(url: Option<&str>, nodes: usize) -> anyhow::Result<Nodes> {
    let Some(url) = url else {
        anyhow::ensure!(nodes == 1, "several nodes need --database (SQLite is one node's)");
        let bench = fresh("throughput")?;
        return Ok(Nodes {
            services: vec![bench.service],
            store: "SQLite",
            cluster: false,
            _dir: bench._dir,
        });
    };
    let dir = std::env::temp_dir().join(format!("sluice-bench-cluster-{}", std::process::id()));
    let guard = tempfile_guard::Guard(dir.clone());
    let mut services = Vec::new();
    for n in 0..nodes {
        let store = Arc::new(sluice::store::PostgresStore::open(url)?);
        let settings = EngineSettings { max_concurrent_executions: 512, ..EngineSettings::default() };
        let engine = Engine::new(settings, Some(&dir.join(format!("artifacts-{n}"))))?;
        let cluster = ClusterOptions { node: format!("bench-{n}"), ..ClusterOptions::new() };
        let executions = Some(super::threads::handle()?);
        let options = Options {
            slots: 128,
            default_quotas: OPEN,
            cluster: Some(cluster),
            executions,
            ..Options::default()
        };
        services.push(Service::open(store, engine, Arc::new(DatabaseClock::default()), options)?);
    }
    Ok(Nodes { services, store: "PostgreSQL", cluster: true, _dir: guard })
}

/// Throughput of one SQLite node, or of `nodes` nodes on one PostgreSQL database: the
/// jobs are enqueued over `orgs` orgs first (the nodes share the orgs out), then the
/// clock runs from the drivers' start to the last job's success, counted from the nodes'
/// completion streams. The drivers are `Service::run`, as `sluice serve` runs them.
async fn throughput(
    plugins: &Path,
    jobs: u64,
    url: Option<&str>,
    nodes: usize,
    orgs: usize,
) -> anyhow::Result<()> {
    let Nodes { services, store, cluster, _dir } = throughput_nodes(url, nodes)?;
    let first = &services[0];
    let mut tenants = Vec::new();
    for o in 0..orgs {
        tenants.push(tenant(first, &format!("bench-{o}"), plugins, "account", Lane::Priority)?);
    }
    let started = Instant::now();
    for (o, org) in tenants.iter().enumerate() {
        let share = jobs / orgs as u64 + u64::from((o as u64) < jobs % orgs as u64);
        enqueue(first, *org, "account", share).await?;
    }
    let enqueue_rate = jobs as f64 / started.elapsed().as_secs_f64();
    if cluster {
        // The orgs shared out before the clock starts (each node sees the others' heartbeats).
        for _ in 0..3 {
            for service in &services {
                service.balance()?;
                service.follow()?;
            }
        }
    }
    // Successes are counted from the nodes' own counters of committed successes, not by
    // asking the database (a count over every job each few milliseconds would load the
    // store the run is measuring) nor by watching completions (a watcher costs the
    // writer a record and a wake per job, which `sluice serve` does not pay).
    let succeeded = || services.iter().map(Service::jobs_succeeded).sum::<u64>();
    let before = succeeded();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let mut tasks = Vec::new();
    // Each node's driver, and with several nodes its cluster loop (leases, adoption).
    let loops = if cluster { [false, true].as_slice() } else { [false].as_slice() };
    for service in &services {
        for &cluster_loop in loops {
            let (service, mut stop) = (service.clone(), stop_rx.clone());
            tasks.push(tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if cluster_loop { service.run_cluster(stopped).await } else { service.run(stopped).await }
            }));
        }
    }
    while succeeded() - before < jobs {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(3_600),
            "the jobs did not finish within an hour"
        );
        if let Some(why) = services.iter().find_map(|s| s.failure()) {
            anyhow::bail!("a node failed: {why}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let sluice = jobs as f64 / started.elapsed().as_secs_f64();
    // The drain's rounds (the enqueue made none: the drivers had not started).
    let rounds: u64 = services.iter().map(Service::driver_rounds).sum();
    let _ = stop_tx.send(true);
    for task in tasks {
        task.await??;
    }
    let mut stored = 0;
    for org in &tenants {
        let counts = first.store().job_counts(*org)?;
        stored += counts.iter().filter(|c| c.1 == Status::Succeeded).map(|c| c.2).sum::<u64>();
    }
    anyhow::ensure!(stored == jobs, "{stored} of {jobs} jobs succeeded");
    let (newest_us, beside_us) = listings(first, tenants[0])?;
    // The first org's health, its jobs now all finished: counted, not read.
    let health_us = median_us(|| first.lane_health(tenants[0]).map(drop))?;
    let calls = jobs.min(200_000);
    let bare = bare_rate(plugins, calls)?;
    let cores = super::threads::machine_cores();
    let bare_all = bare_rate_on_threads(plugins, calls, cores)?;
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    // This thread is the node's: its cores are the node's.
    let node_cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let sandbox_workers = super::threads::handle()?.metrics().num_workers();
    println!(
        "throughput: {} jobs over {orgs} org(s) enqueued at {} events/s",
        count(jobs),
        count(enqueue_rate as u64)
    );
    println!(
        "  sluice ({store}, {nodes} node(s) in one process, each 128 slots a lane, a writer thread; \
         {workers} tokio worker thread(s) for the nodes, all kept on {node_cores} of the {cores} cores; \
         {sandbox_workers} at nice 10 for plug-ins, on every core): {} jobs/s",
        count(sluice as u64)
    );
    println!(
        "  the drivers' rounds of finished jobs: {} ({:.1} jobs a round)",
        count(rounds),
        jobs as f64 / rounds.max(1) as f64
    );
    println!("  bare wasmtime instantiate+call loop, one thread:     {} jobs/s", count(bare as u64));
    println!(
        "  bare wasmtime instantiate+call loop, {cores} threads:      {} jobs/s",
        count(bare_all as u64)
    );
    println!("  ratio: {:.3} of one thread, {:.3} of {cores}", sluice / bare, sluice / bare_all);
    println!(
        "  reads beside the run's jobs (median of 5): the first org's newest 100 jobs {}, another org's {}; \
         the first org's health (counts by status, {} finished jobs) {}",
        micros(newest_us),
        micros(beside_us),
        count(jobs / orgs as u64 + u64::from(!jobs.is_multiple_of(orgs as u64))),
        micros(health_us)
    );
    println!(
        "{}",
        json!({"scenario": "throughput", "store": store, "nodes": nodes, "orgs": orgs, "jobs": jobs,
            "enqueue_per_s": enqueue_rate, "sluice_jobs_per_s": sluice, "tokio_workers": workers,
            "node_cores": node_cores,
            "sandbox_workers": sandbox_workers, "driver_rounds": rounds,
            "bare_jobs_per_s": bare, "bare_threads": cores, "bare_all_threads_jobs_per_s": bare_all,
            "ratio": sluice / bare, "ratio_all_threads": sluice / bare_all,
            "newest_jobs_us": newest_us, "newest_jobs_beside_us": beside_us, "health_counts_us": health_us})
    );
    Ok(())
}

/// Runs the driver, as `sluice serve` does, until `jobs` jobs of the backlog have
/// completed; returns completed jobs per second.
/// A drain's figures: how long the driver took to its first completion (its start-up:
/// restoring counts, the retention purge, the first starts), and the completed jobs a
/// second from then on.
struct Drain {
    first_us: u64,
    rate: f64,
    /// Starts that waited for their job to be read back from the store.
    read_back: u64,
    /// Jobs completed, and the CPU time each group of the process's threads spent, in
    /// nanoseconds, from the driver's start to its stop.
    completed: u64,
    cpu_ns: BTreeMap<String, u64>,
}

/// How long listing `org`'s newest 100 jobs takes, and then another org's (one made for
/// it, with no jobs) on the same store: the median of 5 each, in µs.
fn listings(service: &Service, org: OrgId) -> anyhow::Result<(u64, u64)> {
    let beside = service.create_org("beside")?;
    let listing = |org: OrgId| median_us(|| service.jobs(org, &JobFilter::all(100)).map(drop));
    Ok((listing(org)?, listing(beside)?))
}

/// How long `read` takes: the median of 5 runs, in µs.
fn median_us(mut read: impl FnMut() -> Result<(), sluice::service::Error>) -> anyhow::Result<u64> {
    let mut times = Vec::with_capacity(5);
    for _ in 0..5 {
        let started = Instant::now();
        read()?;
        times.push(started.elapsed().as_micros() as u64);
    }
    times.sort_unstable();
    Ok(times[2])
}

/// The CPU time of drains summed by thread group, and the jobs they completed.
#[derive(Default)]
struct CpuByThread {
    ns: BTreeMap<String, u64>,
    jobs: u64,
}

impl CpuByThread {
    fn add(&mut self, drain: &Drain) {
        for (name, ns) in &drain.cpu_ns {
            *self.ns.entry(name.clone()).or_default() += ns;
        }
        self.jobs += drain.completed;
    }

    fn per_job_us(&self, name: &str) -> f64 {
        self.us_a_job(self.ns.get(name).copied().unwrap_or(0))
    }

    fn all_per_job_us(&self) -> f64 {
        self.us_a_job(self.ns.values().sum())
    }

    fn us_a_job(&self, ns: u64) -> f64 {
        ns as f64 / 1_000.0 / self.jobs.max(1) as f64
    }

    /// The groups that spent at least 0.01 µs a job on either side.
    fn names_with(&self, other: &CpuByThread) -> Vec<String> {
        let mut names: Vec<String> = self.ns.keys().chain(other.ns.keys()).cloned().collect();
        names.sort();
        names.dedup();
        names.retain(|name| self.per_job_us(name) >= 0.01 || other.per_job_us(name) >= 0.01);
        names
    }

    fn by_name_us(&self) -> BTreeMap<String, f64> {
        self.ns.keys().map(|name| (name.clone(), self.per_job_us(name))).collect()
    }
}

/// Runs the driver until `jobs` jobs have completed, then stops it.
async fn run_some(service: &Service, jobs: u64) -> anyhow::Result<Drain> {
    let mut completions = service.watch_completions();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let read_back = service.starts_read_back();
    let cpu_before = thread_cpu::Snapshot::now();
    let started = Instant::now();
    let driver = {
        let service = service.clone();
        tokio::spawn(async move { service.run(async { stop_rx.await.unwrap_or(()) }).await })
    };
    let mut completed = 0;
    let mut first = None;
    while completed < jobs {
        match completions.recv().await {
            Ok(_) => completed += 1,
            Err(RecvError::Lagged(missed)) => completed += missed,
            Err(RecvError::Closed) => break,
        }
        first.get_or_insert_with(|| (Instant::now(), completed));
    }
    let (first_at, first_count) = first.unwrap_or((started, 0));
    let rate = (completed - first_count) as f64 / first_at.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    driver.await??;
    Ok(Drain {
        first_us: first_at.duration_since(started).as_micros() as u64,
        rate,
        read_back: service.starts_read_back() - read_back,
        completed,
        cpu_ns: thread_cpu::Snapshot::now().since(&cpu_before),
    })
}

async fn backlog(plugins: &Path, large: u64, small: u64, run: u64, rounds: u32) -> anyhow::Result<()> {
    let kept = Options::default().kept_payloads as u64;
    anyhow::ensure!(small <= kept, "--small {small} is past the {kept} payloads kept in memory");
    anyhow::ensure!(
        large >= kept + run * u64::from(rounds) + small,
        "--large {large} leaves too few jobs past the {kept} payloads kept in memory for {rounds} rounds"
    );
    let (short, long) = (fresh("backlog-small")?, fresh("backlog-large")?);
    let short_org = tenant(&short.service, "bench", plugins, "account", Lane::Priority)?;
    let long_org = tenant(&long.service, "bench", plugins, "account", Lane::Priority)?;
    enqueue(&long.service, long_org, "account", large).await?;
    let per_job = long.service.store().size_on_disk()? as f64 / large as f64;
    // What a tenant's reads cost beside the backlog: its org's listing and the counts
    // behind its health, and another org's listing on the same store.
    let (newest_us, beside_us) = listings(&long.service, long_org)?;
    let counts_us = median_us(|| long.service.lane_health(long_org).map(drop))?;
    // The jobs whose payloads the node kept from their enqueue, untimed.
    run_some(&long.service, kept).await?;
    let (mut small_rates, mut large_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut small_firsts, mut large_firsts) = (Vec::new(), Vec::new());
    let mut large_read_backs = Vec::new();
    let (mut small_cpu, mut large_cpu) = (CpuByThread::default(), CpuByThread::default());
    for round in 0..u64::from(rounds) {
        enqueue_from(&short.service, short_org, "account", round * small, small).await?;
        // Each drain starts on a quiet machine: the log the enqueue or the drain before
        // wrote is copied into its database file by the checkpoint thread, which took
        // 10-15% from whichever drain ran beside it. Which side runs first alternates.
        let settle = || tokio::time::sleep(Duration::from_millis(500));
        let (small_drain, large_drain) = if round % 2 == 0 {
            settle().await;
            let small_drain = run_some(&short.service, run.min(small)).await?;
            settle().await;
            (small_drain, run_some(&long.service, run).await?)
        } else {
            settle().await;
            let large_drain = run_some(&long.service, run).await?;
            settle().await;
            (run_some(&short.service, run.min(small)).await?, large_drain)
        };
        small_firsts.push(small_drain.first_us);
        large_firsts.push(large_drain.first_us);
        small_rates.push(small_drain.rate);
        large_rates.push(large_drain.rate);
        large_read_backs.push(large_drain.read_back);
        small_cpu.add(&small_drain);
        large_cpu.add(&large_drain);
        ratios.push(large_drain.rate / small_drain.rate);
    }
    let ratio = super::bench_isolation::median(ratios.clone());
    let rates = |rates: &[f64]| rates.iter().map(|r| count(*r as u64)).collect::<Vec<_>>().join(", ");
    println!("backlog: {} jobs run to completion from each backlog a round, {rounds} rounds", count(run));
    println!("  with {} waiting (payloads in memory): {} jobs/s", count(small), rates(&small_rates));
    println!(
        "  with {} waiting (past the {} payloads kept): {} jobs/s",
        count(large),
        count(kept),
        rates(&large_rates)
    );
    let firsts = |firsts: &[u64]| firsts.iter().map(|us| micros(*us)).collect::<Vec<_>>().join(", ");
    println!(
        "  the driver's start to its first completion (not in the rates): {} (small), {} (large)",
        firsts(&small_firsts),
        firsts(&large_firsts)
    );
    println!(
        "  starts that waited for their job to be read back (large): {}",
        large_read_backs.iter().map(|n| count(*n)).collect::<Vec<_>>().join(", ")
    );
    println!("  CPU a job, by thread (µs; all rounds' drains, small / large):");
    for name in small_cpu.names_with(&large_cpu) {
        println!(
            "    {name:<16} {:>6.2} / {:>6.2}",
            small_cpu.per_job_us(&name),
            large_cpu.per_job_us(&name)
        );
    }
    let (small_all, large_all) = (small_cpu.all_per_job_us(), large_cpu.all_per_job_us());
    println!("    {:<16} {small_all:>6.2} / {large_all:>6.2} ({:.3})", "all", small_all / large_all);
    println!(
        "  reads beside the large backlog (median of 5): its org's newest 100 jobs {}, its lanes' \
         health (counts by status) {}; another org's newest 100 jobs {}",
        micros(newest_us),
        micros(counts_us),
        micros(beside_us)
    );
    println!(
        "  ratio: median {ratio:.3} · {} on disk per waiting job (event record + job row + indexes)",
        bytes(per_job as u64)
    );
    println!(
        "{}",
        json!({"scenario": "backlog", "small": small, "large": large, "run": run, "rounds": rounds,
            "small_jobs_per_s": small_rates, "large_jobs_per_s": large_rates, "ratios": ratios,
            "small_first_completion_us": small_firsts, "large_first_completion_us": large_firsts,
            "large_starts_read_back": large_read_backs,
            "small_cpu_us_per_job": small_cpu.by_name_us(), "large_cpu_us_per_job": large_cpu.by_name_us(),
            "ratio": ratio, "bytes_per_waiting_job": per_job, "newest_jobs_us": newest_us,
            "health_counts_us": counts_us, "newest_jobs_beside_us": beside_us})
    );
    Ok(())
}
