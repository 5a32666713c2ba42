//! The dashboard in a real browser (Debian's chromium, headless, through chromedriver):
//! the runaway scenario under way, the runaway workflow flagged and the charts drawn;
//! one click deactivates it and the backlog drains. Screenshots are saved to
//! `target/test-artifacts/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
use reqwest::Method;
use serde_json::{Value as Json, json};
use sluice::callbacks::CallbackSettings;
use sluice_sample_plugins as samples;

use crate::http::TestServer;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn browser(profile: &Path) -> (fantoccini::Client, Driver) {
    assert!(
        Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists(),
        "the browser test needs Debian's chromium and chromium-driver: scripts/setup installs them"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver(child);
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({"binary": CHROMIUM, "args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--window-size=1500,1100", format!("--user-data-dir={}", profile.display())]}),
    );
    for _ in 0..100 {
        let connected = ClientBuilder::rustls()
            .expect("a TLS-capable WebDriver client")
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
        if let Ok(client) = connected {
            return (client, driver);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not accept a session");
}

/// Runs `script` in the page until it returns true (at most 60 s).
async fn until(client: &fantoccini::Client, what: &str, script: &str) {
    for _ in 0..300 {
        if client.execute(script, vec![]).await.unwrap() == Json::Bool(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the dashboard never showed {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runaway_is_flagged_charted_and_one_click_drains_it() {
    let server = TestServer::start(CallbackSettings::default()).await;
    // A steady tenant, and a runaway: a workflow started by every lead, its regular
    // lane capped at 120 starts a minute, flooded faster than that.
    let steady = server.tenant("fabrikam").await;
    let router = server.upload(&steady, samples::ACCOUNT_NUMBER, "account-number").await;
    let step = json!({"name": "number accounts", "plugin": router, "message": "Create", "entity": "account"});
    server.post("/steps", &steady.token, step).await;
    let runaway = server.tenant("contoso").await;
    let capped = json!({"max-throughput": 120});
    server
        .send(Method::PUT, &format!("/orgs/{}/quotas/regular", runaway.org), &server.operator, Some(capped))
        .await;
    let echo = server.upload(&runaway, samples::ECHO, "echo").await;
    let workflow = server
        .post(
            "/workflows",
            &runaway.token,
            json!({"name": "runaway lead sync", "trigger": {"message": "Create", "entity": "lead"},
                   "steps": [{"plugin": echo}], "activate": true}),
        )
        .await;
    let workflow = workflow.json["id"].as_u64().unwrap();
    let flood = {
        let (base, token) = (server.url("/events/batch"), runaway.token.clone());
        let (steady_url, steady_token) = (server.url("/events"), steady.token.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for round in 0..60 {
                let events: Vec<Json> = (0..200)
                    .map(|n| json!({"message": "Create", "entity": "lead", "attributes": {"n": n}}))
                    .collect();
                let _ = client.post(&base).bearer_auth(&token).json(&json!({"events": events})).send().await;
                let account = json!({"message": "Create", "entity": "account", "attributes": {"name": format!("a{round}")}});
                let _ = client.post(&steady_url).bearer_auth(&steady_token).json(&account).send().await;
                tokio::time::sleep(Duration::from_millis(1000)).await;
            }
        })
    };

    let profile = tempfile::tempdir().unwrap();
    let (client, _driver) = browser(profile.path()).await;
    client.goto(&format!("{}/dashboard", server.base)).await.unwrap();
    client.find(Locator::Css("input[name=token]")).await.unwrap().send_keys(&server.operator).await.unwrap();
    client.find(Locator::Css("button[type=submit]")).await.unwrap().click().await.unwrap();

    let flag = format!("document.querySelector('.flag[data-definition=\"{workflow}\"]') !== null");
    until(&client, "the runaway flagged", &format!("return {flag};")).await;
    // The runaway rule trips (a surge from nothing to 200 leads a second, the backlog
    // growing): the definition is shown throttled, why, and since when.
    let throttled = format!(
        "const f = document.querySelector('.flag.throttled[data-definition=\"{workflow}\"]'); \
         return !!f && /^throttled since \\d\\d:\\d\\d:\\d\\d UTC: creating \\d+ jobs\\/s (against its usual|where it created almost none)/.test(f.textContent) \
         && Number(f.dataset.since) > 0 \
         && document.querySelector('button.release[data-definition=\"{workflow}\"]') !== null;"
    );
    until(&client, "the runaway throttled, why and since when", &throttled).await;
    let shown = server.get("/health", &runaway.token).await;
    let definition = shown.json[0]["definitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == workflow)
        .unwrap()
        .clone();
    assert!(definition["runaway"]["since"].as_i64().unwrap() > 0, "{definition}");
    assert!(definition["runaway"]["rate"].as_f64().unwrap() >= 20.0, "{definition}");
    let org = runaway.org;
    let charted = format!(
        "const c = window.sluiceCharts[{org}]; return !!c && c.backlog.data[0].length >= 3 \
         && Math.max(...c.backlog.data[1]) >= 100 && c.throughput.data[1].some(v => v > 0);"
    );
    until(&client, "charts with data", &charted).await;
    let other = format!(
        "const c = window.sluiceCharts[{}]; return !!c && c.throughput.data[1].some(v => v > 0);",
        steady.org
    );
    until(&client, "the steady tenant's throughput", &other).await;
    let under_load = client.screenshot().await.unwrap();
    std::fs::write(artifacts().join("dashboard.png"), &under_load).unwrap();

    let button = format!("button.deactivate[data-definition=\"{workflow}\"]");
    client.find(Locator::Css(&button)).await.unwrap().click().await.unwrap();
    let drained = format!(
        "const b = document.querySelector('.backlog[data-definition=\"{workflow}\"]'); \
         return !!b && b.textContent.trim() === '0' && !({flag});"
    );
    until(&client, "the backlog drained", &format!("{{ {drained} }}")).await;
    std::fs::write(artifacts().join("dashboard-drained.png"), client.screenshot().await.unwrap()).unwrap();

    // The job list, filtered to the runaway's canceled jobs, and one job's page.
    client
        .goto(&format!("{}/dashboard/jobs?org={org}&definition={workflow}&status=32", server.base))
        .await
        .unwrap();
    let first = client.find(Locator::Css("table.jobs tbody a")).await.unwrap();
    first.click().await.unwrap();
    let page = client.source().await.unwrap();
    assert!(page.contains("Trace log") && page.contains("definition-deactivated"), "{page}");
    client.close().await.unwrap();
    flood.abort();

    // The store agrees: the workflow is Draft, nothing of it waits, and a new lead starts nothing.
    let state = server.get(&format!("/workflows/{workflow}"), &runaway.token).await;
    assert_eq!(state.json["active"], false);
    let waiting = server.get(&format!("/jobs?definition={workflow}&status=0&limit=10"), &runaway.token).await;
    assert_eq!(waiting.json, json!([]));
    let lead = server.post("/events", &runaway.token, json!({"message": "Create", "entity": "lead"})).await;
    assert_eq!(lead.json["jobs"], json!([]));
}

/// A tenant's dashboard shows its org only; another org's job page is 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_sees_its_own_org_only() {
    let server = TestServer::start(CallbackSettings::default()).await;
    let a = server.tenant("contoso").await;
    let b = server.tenant("fabrikam").await;
    let echo = server.upload(&b, samples::ECHO, "echo").await;
    let step = json!({"name": "echo", "plugin": echo, "message": "Create", "entity": "lead"});
    server.post("/steps", &b.token, step).await;
    let job =
        server.post("/events", &b.token, json!({"message": "Create", "entity": "lead"})).await.json["jobs"]
            [0]
        .clone();
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let login = client
        .post(format!("{}/dashboard/login", server.base))
        .form(&[("token", a.token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let get =
        |path: String| client.get(format!("{}{path}", server.base)).header("cookie", cookie.clone()).send();
    let panel = get("/dashboard/panel".into()).await.unwrap().text().await.unwrap();
    assert!(panel.contains("contoso") && !panel.contains("fabrikam"), "{panel}");
    let other = get(format!("/dashboard/orgs/{}/jobs/{job}", b.org)).await.unwrap();
    assert_eq!(other.status(), 404);
    let deactivate = client
        .post(format!("{}/dashboard/orgs/{}/workflows/1/deactivate", server.base, b.org))
        .header("cookie", cookie.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(deactivate.status(), 404);
    let refused = client
        .post(format!("{}/dashboard/login", server.base))
        .form(&[("token", "slu_nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
}

/// Errors are pages of the dashboard (its frame, HTML, the right status), never bare
/// JSON or text: an unknown page, another org's job, a bad id, a bad filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_dashboard_pages_with_their_status() {
    let server = TestServer::start(CallbackSettings::default()).await;
    let a = server.tenant("contoso").await;
    let b = server.tenant("fabrikam").await;
    let client = reqwest::Client::new();
    let get = |path: String, token: String| {
        client.get(format!("{}{path}", server.base)).header("cookie", format!("sluice_token={token}")).send()
    };
    let framed = "<a class=\"brand\" href=\"/dashboard\">Sluice</a>";
    for (path, token, status) in [
        (format!("/dashboard/orgs/{}/jobs/1", b.org), a.token.clone(), 404),
        (format!("/dashboard/orgs/{}/jobs/999", a.org), a.token.clone(), 404),
        ("/dashboard/orgs/4294967297/jobs/1".to_owned(), server.operator.clone(), 404),
        ("/dashboard/orgs/x/jobs/1".to_owned(), server.operator.clone(), 404),
        (format!("/dashboard/orgs/{}/jobs/y", a.org), a.token.clone(), 404),
        ("/dashboard/jobs?status=sideways".to_owned(), a.token.clone(), 400),
        ("/dashboard/jobs?lane=fast".to_owned(), a.token.clone(), 400),
        ("/dashboard/jobs".to_owned(), server.operator.clone(), 400),
        ("/dashboard/jobs?org=999".to_owned(), server.operator.clone(), 404),
        ("/dashboard/nowhere".to_owned(), a.token.clone(), 404),
    ] {
        let reply = get(path.clone(), token).await.unwrap();
        assert_eq!(reply.status().as_u16(), status, "{path}");
        let kind = reply.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(kind.starts_with("text/html"), "{path}: {kind}");
        let body = reply.text().await.unwrap();
        assert!(body.starts_with("<!doctype html>") && body.contains(framed), "{path}: {body}");
    }
    // Not signed in: the sign-in page, 401.
    let reply = get("/dashboard/jobs".into(), "slu_nope".into()).await.unwrap();
    assert_eq!(reply.status().as_u16(), 401);
    assert!(reply.text().await.unwrap().contains("action=\"/dashboard/login\""));
}
