//! The `sluice` client and the README's curl and CLI sessions, run as written against a
//! real `sluice serve` (only its address is changed to the test server's free port).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use sluice_sample_plugins as samples;

/// The shell blocks of the README that follow `<!-- session: NAME -->`.
fn session(readme: &str, name: &str) -> String {
    let marker = format!("<!-- session: {name} -->");
    let after = readme.split(&marker).nth(1).unwrap_or_else(|| panic!("the README has no {name} session"));
    let block = after.split("```sh\n").nth(1).expect("a sh block follows the marker");
    block.split("\n```").next().expect("the block ends").to_owned()
}

struct Server {
    child: Child,
    address: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(dir: &Path) -> Server {
    std::fs::write(dir.join("sluice.toml"), "[callbacks]\nfirst-retry-ms = 20\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--data", "sluice-data", "--config", "sluice.toml", "--listen", "127.0.0.1:0"])
        .current_dir(dir)
        .env_remove("SLUICE_OPERATOR_TOKEN")
        .stdout(Stdio::piped())
        .spawn()
        .expect("sluice serve starts");
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    while let Some(Ok(line)) = stdout.next() {
        if let Some(rest) = line.split("API on http://").nth(1) {
            let address = rest.split('/').next().unwrap().to_owned();
            // Keep reading what the server prints, so that it never writes to a closed pipe.
            std::thread::spawn(move || stdout.for_each(drop));
            return Server { child, address };
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("sluice serve never said where its API is");
}

/// Runs `script` with bash in a directory holding the server's data and the sample
/// plug-ins at their repository path; returns (success, stdout, stderr).
fn run_script(script: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    // The sessions name the sample plug-ins by their path in the repository.
    let samples_dir = Path::new(samples::ECHO).ancestors().nth(3).unwrap();
    std::fs::create_dir_all(dir.path().join("target")).unwrap();
    std::os::unix::fs::symlink(samples_dir, dir.path().join("target/sample-plugins")).unwrap();
    let server = start_server(dir.path());
    let script = script.replace("127.0.0.1:7878", &server.address);
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_sluice")).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(dir.path())
        .env("PATH", path)
        .env("SLUICE_CLIENT_CONFIG", dir.path().join("no-client-config.toml"))
        .env_remove("SLUICE_TOKEN")
        .env_remove("SLUICE_SERVER")
        .output()
        .expect("bash runs");
    drop(server);
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

fn run_session(name: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let (ok, stdout, stderr) = run_script(&session(&readme, name));
    assert!(ok, "the {name} session failed:\n{stdout}\n{stderr}");
    stdout
}

#[test]
fn the_curl_session_runs() {
    let out = run_session("curl");
    assert!(out.contains("\"kind\": \"step\""), "{out}");
    assert!(out.contains("\"fuel_used\""), "{out}");
    assert!(out.contains("\"callback\""), "{out}");
}

#[test]
fn the_cli_session_runs() {
    let out = run_session("cli");
    assert!(out.contains("number accounts"), "{out}");
    assert!(out.contains("async-plugin"), "{out}");
    // `job wait` shows the finished job with its output and readable times; `records get`
    // the record the plug-in updated.
    assert!(
        out.contains(r#"output                        {"output_parameters":{"accountnumber":"ACC-"#),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("completed_at") && l.ends_with('Z') && l.contains('T')),
        "{out}"
    );
    assert!(out.contains("  accountnumber  \"ACC-"), "{out}");
    assert!(out.contains("status_name                 succeeded"), "{out}");
    assert!(out.contains("callback.delivery.state"), "{out}");
    assert!(out.contains("priority"), "{out}");
}

#[test]
fn the_client_imports_records_in_batches_and_names_errors() {
    let script = r#"
export SLUICE_SERVER=http://127.0.0.1:7878
export SLUICE_TOKEN=$(cat sluice-data/operator-token)
ORG=$(sluice org create contoso --json | jq .id)
export SLUICE_TOKEN=$(sluice org token "$ORG")
ECHO=$(sluice plugin upload target/sample-plugins/wasm32-wasip2/plugin/echo.wasm --json | jq .id)
sluice workflow create --name copy --message Create --entity account --step "$ECHO" --activate
for n in $(seq 1 1200); do echo "{\"name\": \"account $n\"}"; done > accounts.jsonl
sluice records import accounts.jsonl --entity account --batch 500
sluice job list --lane regular --limit 1000 --json | jq length
if sluice job show 424242 2> error.txt; then exit 1; fi
cat error.txt
SLUICE_TOKEN=slu_wrong sluice job list 2>&1 || true
"#;
    let (ok, out, err) = run_script(script);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("created 1200 records · 1200 jobs queued"), "{out}");
    assert!(out.contains("\n1000\n"), "{out}");
    assert!(out.contains("404 Not Found not-found: job not found"), "{out}");
    assert!(out.contains("401 Unauthorized unauthorized"), "{out}");
}

#[test]
fn the_client_prints_tenant_text_with_control_characters_escaped() {
    let script = r#"
export SLUICE_SERVER=http://127.0.0.1:7878
export SLUICE_TOKEN=$(cat sluice-data/operator-token)
ORG=$(sluice org create contoso --json | jq .id)
TENANT=$(sluice org token "$ORG" --label $'\e[2J\e[31mred\rover\xe2\x80\xaegnp.exe')
sluice org tokens "$ORG"
if sluice org create $'bell\a' 2> refused.txt; then exit 1; fi
cat refused.txt
SLUICE_TOKEN=$TENANT sluice step register --name s --plugin 1 --message $'\e[31mMerge' --entity account 2>&1 || true
"#;
    let (ok, out, err) = run_script(script);
    assert!(ok, "{out}\n{err}");
    assert!(!out.contains('\u{1b}') && !out.contains('\r') && !out.contains('\u{7}'), "{out:?}");
    assert!(!out.contains('\u{202e}'), "{out:?}");
    assert!(out.contains(r"\u{1b}[2J\u{1b}[31mred\rover\u{202e}gnp.exe"), "{out}");
    assert!(out.contains("422 Unprocessable Entity invalid-name"), "{out}");
    assert!(out.contains(r"unknown message '\u{1b}[31mMerge'"), "{out}");
}

/// Runs `sluice store recount` with `args`; returns (success, stdout, stderr).
fn store_recount(args: &[&str]) -> (bool, String, String) {
    let output =
        Command::new(env!("CARGO_BIN_EXE_sluice")).args(["store", "recount"]).args(args).output().unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

/// `sluice store recount` corrects an org's finished counts that a write without them
/// left wrong (as a node of a version before they were kept would), says which, and
/// finds nothing the second time. A data directory with no store is refused, not made.
#[test]
fn store_recount_corrects_counts_that_drifted() {
    use sluice::jobs::{Lane, Status};
    use sluice::store::{SqliteStore, Store};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("sluice-data");
    std::fs::create_dir_all(&data).unwrap();
    let store = SqliteStore::open(&data.join("sluice.db")).unwrap();
    let org = store.create_org("drifted").unwrap();
    store.insert_jobs(&[sluice::store::conformance::refused_job(org, 1, Status::Failed)]).unwrap();
    drop(store);
    let database = rusqlite::Connection::open(data.join("sluice.db")).unwrap();
    database.execute("UPDATE finished_job_counts SET n = 4", []).unwrap();
    drop(database);

    let recount = |data: &Path| {
        let (ok, out, _) = store_recount(&["--data", data.to_str().unwrap()]);
        (ok, out)
    };
    let (ok, out) = recount(&data);
    assert!(ok, "{out}");
    assert!(out.contains(&format!("org {} priority failed: kept 4, counted 1", org.0)), "{out}");
    assert!(out.contains("1 counts corrected"), "{out}");
    let store = SqliteStore::open(&data.join("sluice.db")).unwrap();
    assert_eq!(store.job_counts(org).unwrap(), vec![(Lane::Priority, Status::Failed, 1)]);
    assert_eq!(recount(&data), (true, "0 counts corrected\n".into()));

    let nowhere = dir.path().join("no-such-node");
    assert!(!recount(&nowhere).0);
    assert!(!nowhere.exists(), "refused input leaves nothing behind");

    // A file that is not a Sluice store, and a store no node of this version has
    // migrated yet: each refused by name, and left as it was.
    let refused = |data: &Path, why: &str| {
        let (ok, out, err) = store_recount(&["--data", data.to_str().unwrap()]);
        assert!(!ok, "{out}");
        assert!(err.contains(why), "{err}");
    };
    let other = dir.path().join("other-app");
    std::fs::create_dir_all(&other).unwrap();
    let file = rusqlite::Connection::open(other.join("sluice.db")).unwrap();
    file.execute_batch("CREATE TABLE notes (text TEXT)").unwrap();
    drop(file);
    refused(&other, "no Sluice store there");
    let file = rusqlite::Connection::open(other.join("sluice.db")).unwrap();
    let mode: String = file.pragma_query_value(None, "journal_mode", |row| row.get(0)).unwrap();
    assert_eq!(mode, "delete", "the refused file's journal is as it was");
    let tables: i64 = file.query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0)).unwrap();
    assert_eq!(tables, 1, "nothing created in it");
    drop(file);

    let database = rusqlite::Connection::open(data.join("sluice.db")).unwrap();
    database.pragma_update(None, "user_version", 8).unwrap();
    drop(database);
    refused(&data, "older than this version of Sluice");
    let database = rusqlite::Connection::open(data.join("sluice.db")).unwrap();
    let version: i64 = database.pragma_query_value(None, "user_version", |row| row.get(0)).unwrap();
    assert_eq!(version, 8, "not migrated");
}

/// The same on PostgreSQL (`--database`, the cluster's database); a database that does
/// not answer is named in the error without its password.
#[test]
fn store_recount_corrects_a_clusters_counts() {
    use sluice::jobs::{Lane, Status};
    use sluice::store::{PostgresStore, Store};
    let url = crate::support::fresh_postgres_database();
    let org = {
        let store = PostgresStore::open(&url).unwrap();
        let org = store.create_org("drifted").unwrap();
        store.insert_jobs(&[sluice::store::conformance::refused_job(org, 1, Status::Canceled)]).unwrap();
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        client.batch_execute("UPDATE finished_job_counts SET n = -2").unwrap();
        org
    };
    let (ok, out, err) = store_recount(&["--database", &url]);
    assert!(ok, "{out}{err}");
    assert!(out.contains(&format!("org {} priority canceled: kept -2, counted 1", org.0)), "{out}");
    assert!(out.contains("1 counts corrected"), "{out}");
    let store = PostgresStore::open(&url).unwrap();
    assert_eq!(store.job_counts(org).unwrap(), vec![(Lane::Priority, Status::Canceled, 1)]);

    let (ok, _, err) = store_recount(&["--database", "postgres://nobody:secret@127.0.0.1:1/none"]);
    assert!(!ok);
    assert!(err.contains("cannot open postgres://nobody@127.0.0.1:1/none"), "{err}");
    assert!(!err.contains("secret"), "{err}");
    let (ok, _, err) = store_recount(&["--database", "host=127.0.0.1 port=1 user=nobody password=secret"]);
    assert!(!ok);
    assert!(err.contains("password=…") && !err.contains("secret"), "{err}");

    // A database without Sluice's schema, and one a node of this version has not
    // migrated yet: refused by name, nothing created or migrated there.
    let tables = |url: &str| -> i64 {
        let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
        client
            .query_one("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()", &[])
            .unwrap()
            .get(0)
    };
    let empty = crate::support::fresh_postgres_database();
    let (ok, _, err) = store_recount(&["--database", &empty]);
    assert!(!ok && err.contains("no Sluice store there"), "{err}");
    assert_eq!(tables(&empty), 0, "nothing created");

    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let known: i64 = client.query_one("SELECT max(applied) FROM schema_version", &[]).unwrap().get(0);
    client.execute("DELETE FROM schema_version WHERE applied = $1", &[&known]).unwrap();
    let (ok, _, err) = store_recount(&["--database", &url]);
    assert!(!ok && err.contains("older than this version of Sluice"), "{err}");
    let applied: i64 = client.query_one("SELECT max(applied) FROM schema_version", &[]).unwrap().get(0);
    assert_eq!(applied, known - 1, "not migrated");
}

/// `sluice bench flood` (the attacker of `--victim-store apart`) runs its attack until the
/// bench closes its input, then stops its node and exits cleanly: a bench that ends, or
/// dies, leaves no flood running behind it.
#[test]
fn a_benchs_flood_process_stops_when_its_input_closes() {
    let plugins = Path::new(samples::ECHO).parent().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["bench", "--plugins"])
        .arg(plugins)
        .args(["flood", "trivial-flood", "--flood", "200"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let first = BufReader::new(child.stdout.take().unwrap()).lines().next().expect("a line").unwrap();
    assert_eq!(first, "flooding");
    assert!(child.try_wait().unwrap().is_none(), "it floods until told to stop");
    drop(child.stdin.take());
    let (exited, exit) = std::sync::mpsc::channel();
    std::thread::spawn(move || exited.send(child.wait().unwrap()));
    let status = exit.recv_timeout(std::time::Duration::from_secs(60)).expect("the flood stops");
    assert!(status.success(), "{status}");
}
