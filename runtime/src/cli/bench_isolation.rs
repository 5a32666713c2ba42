//! `sluice bench isolation`: a victim org's steady load beside one hostile org at a
//! time, at each resource tenants share. For every attack it prints the victim's p99
//! end-to-end latency (created → completed, µs, measured as the completion commits)
//! against the victim alone, in the same run; the last line is JSON.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use sluice::engine::{Engine, EngineSettings, Mode};
use sluice::jobs::{JobId, Lane, OrgId, Quotas};
use sluice::records::{Attributes, Value};
use sluice::service::{Event, Fairness, Options, Service, SystemClock};
use sluice::store::{Bulk, Definition, SqliteStore, Trigger};

use super::format::micros;

/// The attacks, each against a fresh node; `alone` is the victim by itself.
pub const ATTACKS: &[&str] =
    &["alone", "conflicting-writes", "compile-bomb", "query-storm", "sync-flood", "pool-fill", "write-storm"];

/// A lane's slots on a node as `sluice serve` runs it by default.
const SLOTS: u32 = 16;

/// Where the victim's jobs are stored: in the attacker's node's store, as every org of a
/// node is today, or in a store (and node) of its own beside it, sharing the engine and
/// the machine: the most that separate stores per org could give.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum VictimStore {
    Shared,
    Own,
    /// The attack in a separate `sluice` process (`sluice bench flood`), on a node, store,
    /// engine and runtimes of its own: only the machine is shared.
    Apart,
}

impl VictimStore {
    fn describe(self) -> &'static str {
        match self {
            VictimStore::Shared => "the victim's jobs in the attacker's node's store (one writer, as today)",
            VictimStore::Own => {
                "the victim on a second node of its own in this process (its own store file, \
                 writer, driver and slots; the engine, runtimes, cores and disk shared)"
            }
            VictimStore::Apart => {
                "the attacker in a separate sluice process (its own node, store, engine and \
                 runtimes): only the cores, the memory and the disk shared, the machine's floor"
            }
        }
    }

    fn label(self) -> &'static str {
        match self {
            VictimStore::Shared => "shared",
            VictimStore::Own => "own",
            VictimStore::Apart => "apart",
        }
    }
}

/// One node as `sluice serve` runs it by default (16 slots per lane, default quotas),
/// counting turns as `fairness` says, on `engine`.
fn node_on(dir: &Path, fairness: Fairness, engine: Engine) -> anyhow::Result<Service> {
    let store = Arc::new(SqliteStore::open(&dir.join("sluice.db"))?);
    let options = Options {
        fairness,
        executions: Some(super::threads::handle()?),
        sync_steps: super::threads::sync_steps_runtime()?,
        ..Options::default()
    };
    Ok(Service::open(store, engine, Arc::new(SystemClock), options)?)
}

fn plugin(service: &Service, org: OrgId, plugins: &Path, name: &str) -> anyhow::Result<u64> {
    let bytes = std::fs::read(plugins.join(format!("{name}.wasm")))?;
    Ok(service.upload_plugin(org, name, &bytes)?.id)
}

fn step(
    service: &Service,
    org: OrgId,
    plugins: &Path,
    name: &str,
    entity: &str,
    mode: Mode,
    config: Option<&str>,
) -> anyhow::Result<()> {
    let plugin = plugin(service, org, plugins, name)?;
    let definition = Definition::step(org, name, plugin, Trigger::on("Create", entity), mode, config);
    service.save_definition(definition)?;
    Ok(())
}

fn creates(entity: &str, from: u64, n: u64) -> Vec<Event> {
    (from..from + n)
        .map(|i| Event {
            message: "Create".into(),
            entity: entity.into(),
            record_id: Some(format!("{entity}-{i}")),
            attributes: Attributes::from([("subject".to_owned(), Value::String(format!("row {i}")))]),
            dependency_token: None,
        })
        .collect()
}

/// A component that passes every check before compilation and compiles for about as
/// long as the engine's bounds allow (a couple of seconds), made once.
pub fn compile_bomb() -> Vec<u8> {
    let body = "local.get 0 i32.const 1 i32.add local.set 0 ".repeat(25);
    let functions = format!("(func (param i32) {body})").repeat(3_000);
    let text = format!(
        r#"(component
            (core module {functions})
            (instance $handler)
            (export "sluice:plugin/handler@0.1.0" (instance $handler)))"#
    );
    wat::parse_str(text).expect("the bomb is valid text")
}

/// The bomb with a custom section appended: new bytes (a new hash, so nothing
/// remembered), the same cost to compile.
fn salted(bomb: &[u8], salt: u64) -> Vec<u8> {
    let payload = format!("\x04salt{salt:020}");
    let mut bytes = bomb.to_vec();
    bytes.push(0); // a custom section
    bytes.push(payload.len() as u8);
    bytes.extend_from_slice(payload.as_bytes());
    bytes
}

/// Starts the attack's load; it runs until `stop` is set.
async fn attack(
    name: &str,
    service: &Service,
    attacker: OrgId,
    plugins: &Path,
    backlog: u64,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::new();
    let hostile = |config: &str| {
        step(service, attacker, plugins, "hostile_tenant", "lead", Mode::Asynchronous, Some(config))
    };
    // A loop firing batches of `entity` events until stopped (refusals are the point).
    let flood = |entity: &'static str, first: u64, batch: u64, pause: Duration, stop: Arc<AtomicBool>| {
        let service = service.clone();
        tokio::spawn(async move {
            let mut n = first;
            while !stop.load(Ordering::Relaxed) {
                let _ = service.fire_batch(attacker, creates(entity, n, batch)).await;
                n += batch;
                tokio::time::sleep(pause).await;
            }
        })
    };
    match name {
        "alone" => {}
        "conflicting-writes" => {
            hostile("conflict")?;
            service.set_quotas(attacker, Lane::Priority, Quotas { max_threads: 16, ..Quotas::default() })?;
            tasks.push(flood("lead", 0, 16, Duration::from_millis(5), stop));
        }
        "compile-bomb" => {
            let service = service.clone();
            let bomb = compile_bomb();
            tasks.push(tokio::spawn(async move {
                let mut salt = 0;
                while !stop.load(Ordering::Relaxed) {
                    let _ = service.upload_plugin_bounded(attacker, "bomb", salted(&bomb, salt)).await;
                    salt += 1;
                }
            }));
        }
        "query-storm" => {
            // A large entity first, then jobs that query all of it over and over.
            for from in (0..20_000).step_by(1_000) {
                service.fire_batch(attacker, creates("task", from, 1_000)).await?;
            }
            hostile("query-storm")?;
            tasks.push(flood("lead", 0, 4, Duration::from_millis(50), stop));
        }
        "sync-flood" => {
            step(service, attacker, plugins, "echo", "lead", Mode::Synchronous, None)?;
            for worker in 0..32 {
                tasks.push(flood("lead", worker * 1_000_000, 1, Duration::from_millis(1), stop.clone()));
            }
        }
        "pool-fill" => {
            // Jobs and sync steps that hold their executions as long as they may.
            step(service, attacker, plugins, "hostile_infinite_loop", "lead", Mode::Asynchronous, None)?;
            step(service, attacker, plugins, "hostile_infinite_loop", "task", Mode::Synchronous, None)?;
            tasks.push(flood("lead", 0, 8, Duration::from_millis(100), stop.clone()));
            for worker in 0..16 {
                tasks.push(flood("task", worker * 1_000_000, 1, Duration::from_millis(10), stop.clone()));
            }
        }
        "write-storm" => {
            step(service, attacker, plugins, "hostile_write_storm", "lead", Mode::Asynchronous, None)?;
            hostile("failed-writes")?;
            tasks.push(flood("lead", 0, 8, Duration::from_millis(20), stop));
        }
        "trivial-flood" | "cpu-flood" | "cost-flood" => {
            // A backlog on the victim's lane, the attacker's thread cap as high as the
            // lane's slots: the two caps together exceed the slots, so only the turns
            // between orgs leave the victim a slot. The backlog is enqueued before the
            // driver starts and topped up as it drains (by at most what drained: a
            // sustained flood, not an event storm). A CPU-bound job burns about 10 ms.
            // The cost flood tops up 100 at a time (a CPU-bound backlog drains slowly,
            // so one large top-up's commit would be the victim's worst wait, not the
            // turns being measured).
            let (plugin, backlog, rounds) = match name {
                "trivial-flood" => ("echo", backlog, 1),
                _ => ("cpu_burn", backlog.min(2_000), 20),
            };
            let top_up = if name == "cost-flood" { 100 } else { 1_000 };
            step(service, attacker, plugins, plugin, "lead", Mode::Asynchronous, None)?;
            let open = Quotas { max_threads: SLOTS, max_throughput: u32::MAX, ..Quotas::default() };
            service.set_quotas(attacker, Lane::Priority, open)?;
            let batch = move |from: u64| {
                let mut events = creates("lead", from, top_up);
                for event in &mut events {
                    event.attributes.insert("rounds".into(), Value::Integer(rounds));
                }
                events
            };
            let mut fired = 0;
            while fired < backlog {
                service.fire_batch(attacker, batch(fired)).await?;
                fired += top_up;
            }
            let (service, mut completions) = (service.clone(), service.watch_completions());
            tasks.push(tokio::spawn(async move {
                let mut completed = 0;
                while !stop.load(Ordering::Relaxed) {
                    match completions.recv().await {
                        Ok(done) if done.org == attacker => completed += 1,
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => completed += missed,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                    if fired - completed.min(fired) < backlog / 2 {
                        let _ = service.fire_batch(attacker, batch(fired)).await;
                        fired += top_up;
                    }
                }
            }));
        }
        "import-alone" => {}
        "import-per-record" | "import-batched" | "import-after" => {
            // Scenario 1: 10,000 accounts, each triggering a workflow, imported in
            // requests of 500 (as `sluice records import` sends them) once, from the
            // start of the victim's load; the workflow's bulk setting is the mode.
            let bulk = match name {
                "import-per-record" => Bulk::PerRecord,
                "import-batched" => Bulk::Batched(100),
                _ => Bulk::AfterImport,
            };
            let echo = plugin(service, attacker, plugins, "echo")?;
            let mut flow =
                Definition::workflow(attacker, "enrich account", echo, Trigger::on("Create", "account"));
            if let sluice::store::DefinitionKind::Workflow { bulk: setting, .. } = &mut flow.kind {
                *setting = bulk;
            }
            service.save_definition(flow)?;
            let service = service.clone();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                for request in 0..20 {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let _ = service.import_batch(attacker, creates("account", request * 500, 500)).await;
                }
            }));
        }
        other => anyhow::bail!("unknown attack '{other}' (one of {})", ATTACKS.join(", ")),
    }
    Ok(tasks)
}

/// Where one victim job's time went, in µs: the event call (its commit), the wait to
/// start, the execution, the wait for its round, the round's commit; and the total.
#[derive(Clone, Copy, Default)]
struct Stages([u64; 6]);

const STAGES: [&str; 6] = ["event", "to start", "run", "to round", "commit", "total"];

/// The victim's end-to-end latencies under one attack.
async fn victim_under(
    name: &str,
    plugins: &Path,
    rate: u64,
    seconds: u64,
    flood: u64,
    fairness: Fairness,
    victims_store: VictimStore,
) -> anyhow::Result<Vec<Stages>> {
    let dir = tempfile::Builder::new().prefix("sluice-bench-isolation-").tempdir()?;
    let engine = Engine::new(EngineSettings::default(), Some(&dir.path().join("artifacts")))?;
    let service = node_on(dir.path(), fairness, engine.clone())?;
    let attacker = service.create_org("attacker")?;
    // With a store of its own the victim is an org of a second node in this process:
    // its own database file, writer, driver and slots; the engine (CPU turns, instance
    // pool, compiler), the runtimes' threads, the cores and the disk stay shared. Its
    // org id is set apart from the attacker's, as the engine tells orgs apart by id.
    let victim_node = match victims_store {
        VictimStore::Shared | VictimStore::Apart => service.clone(),
        VictimStore::Own => {
            let own = dir.path().join("victim");
            std::fs::create_dir_all(&own)?;
            let node = node_on(&own, fairness, engine)?;
            node.create_org("unused")?;
            node
        }
    };
    let victim = victim_node.create_org("victim")?;
    anyhow::ensure!(victim != attacker, "the victim's org id is the attacker's");
    // Beside an import the victim runs a workflow, on the import's lane (regular);
    // otherwise an async step (priority).
    let lane = if name.starts_with("import-") {
        let echo = plugin(&victim_node, victim, plugins, "echo")?;
        victim_node.save_definition(Definition::workflow(
            victim,
            "contact",
            echo,
            Trigger::on("Create", "contact"),
        ))?;
        Lane::Regular
    } else {
        step(&victim_node, victim, plugins, "echo", "contact", Mode::Asynchronous, None)?;
        Lane::Priority
    };
    // The victim stays within its quotas (a throughput cap would queue it by design).
    // Beside a cost flood its thread cap is the attacker's.
    let threads = if name == "cost-flood" { SLOTS } else { Quotas::default().max_threads };
    let quotas = Quotas { max_threads: threads, max_throughput: u32::MAX, ..Quotas::default() };
    victim_node.set_quotas(victim, lane, quotas)?;
    // The attack set up (a flood's backlog enqueued) before the driver starts.
    let stop = Arc::new(AtomicBool::new(false));
    let (attackers, mut apart) = match victims_store {
        VictimStore::Apart => (Vec::new(), Some(FloodProcess::start(name, plugins, flood, fairness).await?)),
        _ => (attack(name, &service, attacker, plugins, flood, stop.clone()).await?, None),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let driver = {
        let service = service.clone();
        tokio::spawn(async move { service.run(async { stop_rx.await.unwrap_or(()) }).await })
    };
    let (victim_stop_tx, victim_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let victim_driver = match victims_store {
        VictimStore::Shared | VictimStore::Apart => None,
        VictimStore::Own => {
            let node = victim_node.clone();
            Some(tokio::spawn(async move { node.run(async { victim_stop_rx.await.unwrap_or(()) }).await }))
        }
    };
    // Let the attack reach its steady state before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut completions = victim_node.watch_completions();
    let mut created: HashMap<JobId, (Instant, Instant)> = HashMap::new();
    let mut latencies = Vec::new();
    let total = rate * seconds;
    let mut interval = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    let mut collect = |completions: &mut tokio::sync::broadcast::Receiver<sluice::service::Completion>,
                       created: &mut HashMap<JobId, (Instant, Instant)>| {
        while let Ok(done) = completions.try_recv() {
            if let Some((fired, returned)) = created.remove(&done.job) {
                let marks = [fired, returned, done.ran.0, done.ran.1, done.round_began, done.at];
                let mut stages = Stages::default();
                for (i, pair) in marks.windows(2).enumerate() {
                    stages.0[i] = pair[1].saturating_duration_since(pair[0]).as_micros() as u64;
                }
                stages.0[5] = done.at.saturating_duration_since(fired).as_micros() as u64;
                latencies.push(stages);
            }
        }
    };
    for n in 0..total {
        interval.tick().await;
        let fired = Instant::now();
        let outcomes = victim_node.fire_batch(victim, creates("contact", n, 1)).await?;
        let returned = Instant::now();
        for job in outcomes.into_iter().flat_map(|o| o.jobs) {
            created.insert(job, (fired, returned));
        }
        collect(&mut completions, &mut created);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !created.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
        collect(&mut completions, &mut created);
    }
    stop.store(true, Ordering::Relaxed);
    for task in attackers {
        task.abort();
    }
    if let Some(process) = apart.take() {
        process.stop().await?;
    }
    let _ = stop_tx.send(());
    driver.await??;
    let _ = victim_stop_tx.send(());
    if let Some(driver) = victim_driver {
        driver.await??;
    }
    for node in [&service, &victim_node] {
        if let Some(reason) = node.failure() {
            anyhow::bail!("the node failed under '{name}': {reason}");
        }
    }
    anyhow::ensure!(created.is_empty(), "{} victim jobs did not complete under '{name}'", created.len());
    // The backlog floods (not `sync-flood`, whose events start no job).
    if matches!(name, "trivial-flood" | "cpu-flood" | "cost-flood") && victims_store != VictimStore::Apart {
        let waiting: u64 = service
            .store()
            .job_counts(attacker)?
            .iter()
            .filter(|(_, status, _)| !status.is_terminal())
            .map(|c| c.2)
            .sum();
        anyhow::ensure!(waiting > 0, "the flood ran out before the victim's load ended: raise --flood");
    }
    Ok(latencies)
}

/// An attack run by a separate `sluice bench flood` process, until stopped.
struct FloodProcess(std::process::Child);

impl FloodProcess {
    /// Starts the attack `name` in a child process; returns once its node runs it.
    async fn start(name: &str, plugins: &Path, flood: u64, fairness: Fairness) -> anyhow::Result<Self> {
        let mut command = std::process::Command::new(std::env::current_exe()?);
        command.args(["bench", "--plugins"]).arg(plugins).args([
            "flood",
            name,
            "--flood",
            &flood.to_string(),
        ]);
        if fairness == Fairness::JobCount {
            command.arg("--turns-in-jobs");
        }
        let mut child =
            command.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn()?;
        let stdout = child.stdout.take().expect("piped");
        let ready = tokio::task::spawn_blocking(move || {
            std::io::BufRead::lines(std::io::BufReader::new(stdout))
                .any(|line| line.is_ok_and(|l| l == FLOODING))
        });
        if ready.await? {
            return Ok(FloodProcess(child));
        }
        let status = child.wait()?;
        anyhow::bail!("the flood process ended before its attack ran: {status}")
    }

    /// Closes the child's input, which stops its attack and its node; fails if it had
    /// ended before (the victim was then measured beside less than the attack).
    async fn stop(mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.0.try_wait()?.is_none(), "the flood process ended during the measurement");
        drop(self.0.stdin.take());
        let status = tokio::task::spawn_blocking(move || self.0.wait()).await??;
        anyhow::ensure!(status.success(), "the flood process failed: {status}");
        Ok(())
    }
}

/// What `sluice bench flood` prints once its attack runs.
const FLOODING: &str = "flooding";

/// `sluice bench flood NAME` (for `--victim-store apart`): one node as `node_on` makes it,
/// running the attack `name` with its driver until its standard input closes.
pub async fn flood(plugins: &Path, name: &str, backlog: u64, fairness: Fairness) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("sluice-bench-flood-").tempdir()?;
    let engine = Engine::new(EngineSettings::default(), Some(&dir.path().join("artifacts")))?;
    let service = node_on(dir.path(), fairness, engine)?;
    let attacker = service.create_org("attacker")?;
    let stop = Arc::new(AtomicBool::new(false));
    let attackers = attack(name, &service, attacker, plugins, backlog, stop.clone()).await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let driver = {
        let service = service.clone();
        tokio::spawn(async move { service.run(async { stop_rx.await.unwrap_or(()) }).await })
    };
    println!("{FLOODING}");
    // Until the parent closes this process's input (or ends).
    tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink())).await??;
    stop.store(true, Ordering::Relaxed);
    for task in attackers {
        task.abort();
    }
    let _ = stop_tx.send(());
    driver.await??;
    if let Some(reason) = service.failure() {
        anyhow::bail!("the node failed under '{name}': {reason}");
    }
    Ok(())
}

fn percentile(samples: &[Stages], stage: usize, p: f64) -> u64 {
    let mut values: Vec<u64> = samples.iter().map(|s| s.0[stage]).collect();
    values.sort_unstable();
    values.get(((values.len().max(1) - 1) as f64 * p) as usize).copied().unwrap_or(0)
}

fn p99(samples: &[Stages]) -> u64 {
    percentile(samples, 5, 0.99)
}

/// Each stage's p50 and p99, for finding where an attack's cost lands.
fn stages_line(samples: &[Stages]) -> String {
    let each = (0..STAGES.len() - 1)
        .map(|i| format!("{} {}/{}", STAGES[i], percentile(samples, i, 0.5), percentile(samples, i, 0.99)))
        .collect::<Vec<_>>()
        .join(", ");
    format!("{each}; slowest 1% (mean µs): {}", slowest_stages(samples))
}

/// Where the slowest hundredth of the jobs (by total) spent their time, as each stage's
/// mean: the p99 of the total is made of these jobs, and each stage's own p99 can hide
/// a tail that several stages share between them.
fn slowest_stages(samples: &[Stages]) -> String {
    let mut slowest: Vec<&Stages> = samples.iter().collect();
    slowest.sort_by_key(|s| std::cmp::Reverse(s.0[STAGES.len() - 1]));
    slowest.truncate((samples.len() / 100).max(1));
    let n = slowest.len().max(1) as u64;
    (0..STAGES.len() - 1)
        .map(|i| format!("{} {}", STAGES[i], slowest.iter().map(|s| s.0[i]).sum::<u64>() / n))
        .collect::<Vec<_>>()
        .join(", ")
}

pub async fn isolation(
    plugins: &Path,
    attacks: &[String],
    rate: u64,
    seconds: u64,
    runs: u32,
) -> anyhow::Result<()> {
    println!(
        "one node, 16 slots per lane, tokio with one worker thread per core; victim: {rate} \
         trivial jobs/s for {seconds} s on the priority lane (4 threads, no throughput cap); \
         attacker: default quotas (4 threads per lane); {runs} round(s), interleaved"
    );
    compare("isolation", "alone", plugins, attacks, rate, seconds, runs, 0, VictimStore::Shared).await
}

/// `sluice bench noisy-neighbour`: the victim beside a backlog of `flood` trivial jobs,
/// then of CPU-bound ones (`cpu_burn`, about 10 ms each), on its own lane with the slots
/// saturated; its p99 end-to-end latency against itself alone, in the same run.
pub async fn noisy_neighbour(
    plugins: &Path,
    flood: u64,
    rate: u64,
    seconds: u64,
    runs: u32,
    victims_store: VictimStore,
) -> anyhow::Result<()> {
    println!(
        "one node, {SLOTS} slots per lane, tokio with one worker thread per core; victim: {rate} \
         trivial jobs/s for {seconds} s on the priority lane (4 threads, no throughput cap); \
         attacker: a backlog on the same lane, {SLOTS} threads (caps together above the slots), \
         no throughput cap; {runs} round(s), interleaved"
    );
    println!("{}", victims_store.describe());
    let floods = ["trivial-flood".to_string(), "cpu-flood".to_string()];
    compare("noisy-neighbour", "alone", plugins, &floods, rate, seconds, runs, flood, victims_store).await
}

/// `sluice bench bulk-import`: MISSION scenario 1 in each bulk-import mode. Org A
/// imports 10,000 accounts (requests of 500), each triggering a workflow whose setting
/// is per-record, batched(100) or after-import; org B's trivial workflow runs beside it
/// on the same lane. B's p99 end-to-end latency against B alone, in the same run.
pub async fn bulk_import(
    plugins: &Path,
    rate: u64,
    seconds: u64,
    runs: u32,
    victims_store: VictimStore,
) -> anyhow::Result<()> {
    println!(
        "one node, {SLOTS} slots per lane, tokio with one worker thread per core; victim: {rate} \
         trivial workflow jobs/s for {seconds} s on the regular lane (4 threads, no throughput \
         cap); attacker: 10,000 accounts imported in requests of 500 from the load's first \
         second, each triggering a workflow (default quotas); {runs} round(s), interleaved"
    );
    let modes: Vec<String> =
        ["import-per-record", "import-batched", "import-after"].iter().map(|m| m.to_string()).collect();
    println!("{}", victims_store.describe());
    compare("bulk-import", "import-alone", plugins, &modes, rate, seconds, runs, 0, victims_store).await
}

/// `sluice bench cost-fairness`: the victim's trivial jobs beside a backlog of CPU-bound
/// ones (`cpu_burn`, about 10 ms each) of an org with the same thread cap (the lane's
/// slots), with turns counted by cost and then in jobs, against the victim alone; `runs`
/// rounds interleaved. The last line is JSON with the victim's p99 ratio under each.
pub async fn cost_fairness(
    plugins: &Path,
    rate: u64,
    seconds: u64,
    runs: u32,
    victims_store: VictimStore,
) -> anyhow::Result<()> {
    println!(
        "one node, {SLOTS} slots per lane, tokio with one worker thread per core; victim: {rate} \
         trivial jobs/s for {seconds} s on the priority lane; attacker: a backlog of 1,000 \
         CPU-bound jobs on the same lane, topped up as it drains; both with {SLOTS} threads and \
         no throughput cap; turns counted by cost, then in jobs; {runs} round(s), interleaved"
    );
    println!("{}", victims_store.describe());
    let runs = runs.max(1);
    let modes = [("cost", Fairness::Cost), ("job-count", Fairness::JobCount)];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    let mut p99s: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    let mut alone_p99s = Vec::new();
    for round in 1..=runs {
        if runs > 1 {
            println!("round {round}");
        }
        let samples =
            victim_under("alone", plugins, rate, seconds, 1_000, Fairness::Cost, victims_store).await?;
        let alone = p99(&samples);
        alone_p99s.push(alone as f64);
        println!("{:<24} p99 {:>12}", "alone", micros(alone));
        println!("{:<24} p50/p99 µs: {}", "", stages_line(&samples));
        for (n, (label, fairness)) in modes.iter().enumerate() {
            let samples =
                victim_under("cost-flood", plugins, rate, seconds, 1_000, *fairness, victims_store).await?;
            let p99 = p99(&samples);
            let ratio = p99 as f64 / alone.max(1) as f64;
            println!("{:<24} p99 {:>12}   ÷ alone {ratio:.2}", format!("turns by {label}"), micros(p99));
            println!("{:<24} p50/p99 µs: {}", "", stages_line(&samples));
            ratios[n].push(ratio);
            p99s[n].push(p99 as f64);
        }
    }
    let round2 = |x: f64| (x * 100.0).round() / 100.0;
    let mut figures = serde_json::Map::new();
    for (n, (label, _)) in modes.iter().enumerate() {
        let ratio = median(ratios[n].clone());
        if runs > 1 {
            println!("median, turns by {label}: ÷ alone {ratio:.2}");
        }
        figures.insert(
            label.to_string(),
            json!({ "victim_p99_us": median(p99s[n].clone()) as u64, "ratio": round2(ratio),
                    "ratios": ratios[n].iter().map(|r| round2(*r)).collect::<Vec<_>>() }),
        );
    }
    println!(
        "{}",
        json!({ "scenario": "cost-fairness", "victim_alone_p99_us": median(alone_p99s) as u64,
                "b_p99_ratio": round2(median(ratios[0].clone())),
                "b_p99_ratio_job_count": round2(median(ratios[1].clone())),
                "rate": rate, "seconds": seconds, "runs": runs, "victim_store": victims_store.label(),
                "fairness": figures })
    );
    Ok(())
}

/// The victim alone (as `alone` sets it up) and under each attack, `runs` rounds
/// interleaved; prints each and the medians, the last line JSON.
#[allow(clippy::too_many_arguments)]
async fn compare(
    scenario: &str,
    alone: &str,
    plugins: &Path,
    attacks: &[String],
    rate: u64,
    seconds: u64,
    runs: u32,
    flood: u64,
    victims_store: VictimStore,
) -> anyhow::Result<()> {
    let runs = runs.max(1);
    let attacks: Vec<&String> = attacks.iter().filter(|a| *a != "alone").collect();
    // Per attack, each round's (victim p99, ratio to that round's victim alone).
    let mut rounds: Vec<Vec<(u64, f64)>> = vec![Vec::new(); attacks.len()];
    let mut alone_p99s = Vec::new();
    for round in 1..=runs {
        if runs > 1 {
            println!("round {round}");
        }
        let samples =
            victim_under(alone, plugins, rate, seconds, flood, Fairness::Cost, victims_store).await?;
        let alone = p99(&samples);
        alone_p99s.push(alone);
        println!("{:<20} p99 {:>12}", "alone", micros(alone));
        println!("{:<20} p50/p99 µs: {}", "", stages_line(&samples));
        for (n, name) in attacks.iter().enumerate() {
            let samples =
                victim_under(name, plugins, rate, seconds, flood, Fairness::Cost, victims_store).await?;
            let p99 = p99(&samples);
            let ratio = p99 as f64 / alone.max(1) as f64;
            println!("{name:<20} p99 {:>12}   ÷ alone {ratio:.2}", micros(p99));
            println!("{:<20} p50/p99 µs: {}", "", stages_line(&samples));
            rounds[n].push((p99, ratio));
        }
    }
    let mut figures = serde_json::Map::new();
    if runs > 1 {
        println!("median of {runs} rounds");
    }
    for (name, results) in attacks.iter().zip(&rounds) {
        let p99 = median(results.iter().map(|r| r.0 as f64).collect()) as u64;
        let ratio = median(results.iter().map(|r| r.1).collect());
        if runs > 1 {
            println!("{name:<20} p99 {:>12}   ÷ alone {ratio:.2}", micros(p99));
        }
        let each: Vec<f64> = results.iter().map(|r| (r.1 * 100.0).round() / 100.0).collect();
        figures.insert(
            name.to_string(),
            json!({ "victim_p99_us": p99, "ratio": (ratio * 100.0).round() / 100.0, "ratios": each }),
        );
    }
    let alone = median(alone_p99s.iter().map(|&p| p as f64).collect()) as u64;
    println!(
        "{}",
        json!({ "scenario": scenario, "victim_alone_p99_us": alone, "rate": rate, "seconds": seconds,
                "runs": runs, "victim_store": victims_store.label(), "attacks": figures })
    );
    Ok(())
}

pub(super) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}
