//! Kill the serving process (SIGKILL) with jobs in flight, restart it, and find every
//! acknowledged job completed exactly once, with its plug-in's effect recorded.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use sluice::jobs::Status;
use sluice::records::RecordStore;
use sluice::store::{SqliteStore, Store};
use sluice_sample_plugins as samples;

const CONFIG: &str = "[default-quotas]\nmax-threads = 8\nmax-throughput = 1000000\n";

fn serve(data: &Path, config: &Path, extra: &[&str]) -> Command {
    let plugins = Path::new(samples::ACCOUNT_NUMBER).parent().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command.arg("serve").arg("--data").arg(data).arg("--config").arg(config).arg("--plugins").arg(plugins);
    command.args(extra);
    command
}

#[test]
fn a_killed_server_loses_no_acknowledged_job_and_runs_each_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = (dir.path().join("data"), dir.path().join("sluice.toml"));
    std::fs::write(&config, CONFIG).unwrap();

    let mut server = serve(&data, &config, &["--import", "5000"]).stdout(Stdio::piped()).spawn().unwrap();
    let stdout = BufReader::new(server.stdout.take().unwrap());
    let mut acknowledged = 0;
    for line in stdout.lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("acknowledged ") {
            acknowledged = n.parse().unwrap();
            if acknowledged >= 1_000 {
                break;
            }
        }
    }
    server.kill().unwrap(); // SIGKILL: no shutdown, no flush
    server.wait().unwrap();
    assert!(acknowledged >= 1_000, "the import was acknowledged before the kill");

    let store = SqliteStore::open(&data.join("sluice.db")).unwrap();
    let (org, _) = store.orgs().unwrap().into_iter().find(|(_, name)| name == "importer").unwrap();
    let at_kill = store.jobs(org, &sluice::store::JobFilter::all(1_000_000)).unwrap();
    let unfinished = at_kill.iter().filter(|j| !j.status.is_terminal()).count();
    assert!(unfinished > 0, "the kill caught jobs in flight");
    drop(store);

    let restarted = serve(&data, &config, &["--until-idle", "--seconds", "300"]).output().unwrap();
    assert!(restarted.status.success(), "{}", String::from_utf8_lossy(&restarted.stderr));

    let store = SqliteStore::open(&data.join("sluice.db")).unwrap();
    let jobs = store.jobs(org, &sluice::store::JobFilter::all(1_000_000)).unwrap();
    assert!(
        jobs.len() >= acknowledged as usize,
        "{} jobs for {acknowledged} acknowledged events",
        jobs.len()
    );
    assert!(jobs.iter().all(|j| j.status == Status::Succeeded), "every job completed");
    let records: HashSet<_> = jobs.iter().map(|j| j.record.clone().unwrap()).collect();
    assert_eq!(records.len(), jobs.len(), "exactly one job per imported record");
    for n in 1..=acknowledged {
        let account = store.retrieve(&org.0.to_string(), "account", &format!("import-{n:06}"), &[]).unwrap();
        assert!(account.attributes.contains_key("accountnumber"), "import-{n:06} was numbered");
    }
}
