//! Three `sluice serve` processes on one PostgreSQL: a mixed load over six orgs on both
//! lanes, with thread caps of 1 to 4 and a throughput cap that binds, sent to the nodes
//! in turn over HTTP. One node is killed (SIGKILL) mid-load and a third starts: every
//! acknowledged job completes, none twice as far as the store shows, the new node takes
//! a share of the orgs, and from the stored start and completion times no (org, lane)
//! ever had more jobs in progress than its cap nor a window more starts than its cap.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice::engine::Mode;
use sluice::jobs::{JobId, Lane, Millis, OrgId, Quotas, Status};
use sluice::service::{ClusterOptions, ManualClock, Options, Service};
use sluice::store::{Definition, JobFilter, JobRow, PostgresStore, Store, Trigger};
use sluice_sample_plugins as samples;

use crate::support::engine;

const OPERATOR: &str = "sluop_multi_node_test_operator";
/// Events per org.
const EVENTS: usize = 120;
/// The org whose throughput cap binds: its events need two windows.
const CAPPED_THROUGHPUT: u32 = 80;

/// A node: `sluice serve` on the database, its own data directory, a free port.
struct Node {
    child: Child,
    base: String,
}

fn start_node(url: &str, config: &Path, data: &Path) -> Node {
    let plugins = Path::new(samples::ECHO).parent().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database", url])
        .arg("--data")
        .arg(data)
        .arg("--config")
        .arg(config)
        .arg("--plugins")
        .arg(plugins)
        .env("SLUICE_OPERATOR_TOKEN", OPERATOR)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("the node prints where its API listens").unwrap();
        if let Some(rest) = line.strip_prefix("sluice: API on ") {
            break rest.split("/api/v1").next().unwrap().to_owned();
        }
    };
    // Keep reading its output so that it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Node { child, base }
}

/// The orgs, their definitions and tokens, written to the database by a node that holds
/// nothing (it never balances): what an operator and tenants set up over the API.
struct Setup {
    orgs: Vec<(OrgId, Lane, Quotas, String)>,
}

fn set_up(url: &str) -> Setup {
    let store = Arc::new(PostgresStore::open(url).unwrap());
    let cluster = ClusterOptions { node: "setup".into(), ..ClusterOptions::new() };
    let options = Options { cluster: Some(cluster), ..Options::default() };
    let setup = Service::open(store, engine().clone(), Arc::new(ManualClock::new(0)), options).unwrap();
    let mut orgs = Vec::new();
    for n in 0..6u32 {
        let org = setup.create_org(&format!("org{n}")).unwrap();
        let lane = if n % 2 == 0 { Lane::Priority } else { Lane::Regular };
        let max_throughput = if n == 0 { CAPPED_THROUGHPUT } else { 100_000 };
        let quotas = Quotas { max_threads: 1 + n % 4, max_throughput, ..Quotas::default() };
        setup.set_quotas(org, lane, quotas).unwrap();
        let burn = setup.upload_plugin(org, "burn", &std::fs::read(samples::CPU_BURN).unwrap()).unwrap().id;
        let on = Trigger::on("Create", "account");
        let definition = match lane {
            Lane::Priority => Definition::step(org, "burn", burn, on, Mode::Asynchronous, None),
            _ => Definition::workflow(org, "burn", burn, on),
        };
        let id = setup.save_definition(definition).unwrap();
        if lane == Lane::Regular {
            setup.set_active(org, id, true).unwrap();
        }
        let token = setup.issue_token(org, "load").unwrap().token;
        orgs.push((org, lane, quotas, token));
    }
    Setup { orgs }
}

/// The most jobs of one (org, lane) in progress at once, from stored [start, end) times.
fn most_at_once(jobs: &[&JobRow]) -> usize {
    let mut edges: Vec<(Millis, i32)> = Vec::new();
    for job in jobs {
        if let (Some(start), Some(end)) = (job.started_at, job.completed_at) {
            edges.push((start, 1));
            edges.push((end, -1));
        }
    }
    // An end at the same millisecond as a start frees its thread first.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    most as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_keep_every_quota_cluster_wide_and_lose_nothing_when_one_is_killed() {
    let url = crate::support::fresh_postgres_database();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, "slots = 4\n[cluster]\nlease-ttl-seconds = 2\n").unwrap();
    let setup = set_up(&url);
    let store = PostgresStore::open(&url).unwrap();

    let mut nodes = vec![
        start_node(&url, &config, &dir.path().join("node1")),
        start_node(&url, &config, &dir.path().join("node2")),
    ];
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let mut acknowledged: Vec<(OrgId, JobId)> = Vec::new();
    let mut refused = 0;
    let mut third = None;
    for n in 0..EVENTS {
        if n == EVENTS / 2 {
            // Mid-load: node 1 dies without a word, node 3 joins.
            let mut killed = nodes.remove(0);
            killed.child.kill().unwrap();
            killed.child.wait().unwrap();
            let in_progress = setup
                .orgs
                .iter()
                .flat_map(|(org, ..)| store.jobs(*org, &JobFilter::all(1_000_000)).unwrap())
                .filter(|j| j.status == Status::InProgress)
                .count();
            eprintln!("multi-node: {in_progress} jobs in progress at the kill (the killed node's run again)");
            let node = start_node(&url, &config, &dir.path().join("node3"));
            third = Some(node.child.id());
            nodes.push(node);
        }
        for (k, (org, _, _, token)) in setup.orgs.iter().enumerate() {
            let node = &nodes[(n + k) % nodes.len()];
            let event = json!({ "message": "Create", "entity": "account", "record_id": format!("a{n}") });
            let reply = client
                .post(format!("{}/api/v1/events", node.base))
                .bearer_auth(token)
                .json(&event)
                .send()
                .await;
            match reply {
                Ok(reply) if reply.status().is_success() => {
                    let body: serde_json::Value = reply.json().await.unwrap();
                    for job in body["jobs"].as_array().unwrap() {
                        acknowledged.push((*org, JobId(job.as_u64().unwrap())));
                    }
                }
                _ => refused += 1,
            }
        }
    }
    assert_eq!(refused, 0, "every event sent to a live node was acknowledged");
    assert_eq!(acknowledged.len(), EVENTS * setup.orgs.len());

    // Every acknowledged job completes (the capped org's second window included).
    let deadline = Instant::now() + Duration::from_secs(150);
    let jobs: Vec<JobRow> = loop {
        let jobs: Vec<JobRow> = setup
            .orgs
            .iter()
            .flat_map(|(org, ..)| store.jobs(*org, &JobFilter::all(1_000_000)).unwrap())
            .collect();
        if jobs.iter().all(|j| j.status.is_terminal()) || Instant::now() > deadline {
            break jobs;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let leases = store.leases().unwrap();
    for node in &mut nodes {
        node.child.kill().unwrap();
        node.child.wait().unwrap();
    }
    let by_id: HashMap<JobId, &JobRow> = jobs.iter().map(|j| (j.id, j)).collect();
    let lost: Vec<_> = acknowledged.iter().filter(|(_, id)| !by_id.contains_key(id)).collect();
    assert!(lost.is_empty(), "acknowledged jobs missing from the store: {lost:?}");
    let unfinished: Vec<_> =
        jobs.iter().filter(|j| j.status != Status::Succeeded).map(|j| (j.id, j.status)).collect();
    assert!(unfinished.is_empty(), "jobs that did not succeed: {unfinished:?}");
    assert_eq!(jobs.len(), acknowledged.len(), "one job per acknowledged event, no more");
    let rerun = jobs.iter().filter(|j| j.retry_count > 0).count();
    eprintln!("multi-node: {} jobs, {rerun} retried; leases at the end: {leases:?}", jobs.len());

    // A node started mid-load took a share of the orgs.
    let third = format!("node-{}-", third.unwrap());
    assert!(leases.iter().any(|l| l.node.starts_with(&third)), "node 3 holds orgs: {leases:?}");

    // The quotas held cluster-wide at every instant.
    for (org, lane, quotas, _) in &setup.orgs {
        let of_org: Vec<&JobRow> = jobs.iter().filter(|j| j.org == *org && j.lane == *lane).collect();
        let most = most_at_once(&of_org);
        assert!(
            most as u32 <= quotas.max_threads,
            "org {} had {most} in progress, cap {}",
            org.0,
            quotas.max_threads
        );
        let window = quotas.throughput_window();
        let mut per_window: HashMap<Millis, u32> = HashMap::new();
        for job in &of_org {
            *per_window.entry(job.started_at.unwrap().div_euclid(window)).or_default() += 1;
        }
        let busiest = per_window.values().copied().max().unwrap_or(0);
        assert!(
            busiest <= quotas.max_throughput,
            "org {}: {busiest} starts in a window, cap {}",
            org.0,
            quotas.max_throughput
        );
        if quotas.max_throughput == CAPPED_THROUGHPUT {
            assert!(per_window.len() >= 2, "the capped org's starts went on in the next window");
        }
    }
}
