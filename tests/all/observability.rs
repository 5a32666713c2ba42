//! The metrics endpoint, scraped like Prometheus does, checked against the store (read
//! through the API).

use std::collections::HashMap;

use reqwest::Method;
use serde_json::json;
use sluice::callbacks::CallbackSettings;
use sluice_sample_plugins as samples;

use crate::http::TestServer;

/// `name{labels} value` lines of an OpenMetrics text, by series.
fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(series, value)| Some((series.to_owned(), value.parse().ok()?)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_match_the_store() {
    let server = TestServer::start(CallbackSettings::default()).await;
    let tenant = server.tenant("contoso").await;
    let org = tenant.org;
    // One thread on the priority lane, so a burst is held back by max-threads.
    let one = json!({"max-threads": 1});
    server.send(Method::PUT, &format!("/orgs/{org}/quotas/priority"), &server.operator, Some(one)).await;
    let plugin = server.upload(&tenant, samples::ACCOUNT_NUMBER, "account-number").await;
    let validator = server.upload(&tenant, samples::CREDIT_VALIDATOR, "credit-validator").await;
    for (name, plugin) in [("number", plugin), ("validate", validator)] {
        let step = json!({"name": name, "plugin": plugin, "message": "Create", "entity": "account"});
        assert_eq!(server.post("/steps", &tenant.token, step).await.status, 201);
    }
    let events: Vec<_> = (0..30)
        .map(|n| {
            // Every third account has no name: the validator fails it (a business error).
            let attributes = if n % 3 == 0 { json!({}) } else { json!({"name": format!("account {n}")}) };
            json!({"message": "Create", "entity": "account", "attributes": attributes})
        })
        .collect();
    let fired = server.post("/events/batch", &tenant.token, json!({ "events": events })).await;
    assert_eq!(fired.status, 200, "{fired:?}");
    let jobs = server
        .wait_for("/jobs?limit=1000", &tenant.token, |jobs| {
            jobs.as_array().unwrap().len() == 60
                && jobs.as_array().unwrap().iter().all(|j| j["status"].as_u64() >= Some(30))
        })
        .await;
    let jobs = jobs.as_array().unwrap();

    let scrape = |token: &str| {
        reqwest::Client::new().get(format!("{}/metrics", server.base)).bearer_auth(token).send()
    };
    assert_eq!(scrape(&tenant.token).await.unwrap().status(), 403, "metrics are the operator's");
    let response = scrape(&server.operator).await.unwrap();
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let metrics = parse(&response.text().await.unwrap());
    let series =
        |name: &str, labels: &str| metrics.get(&format!("{name}{{{labels}}}")).copied().unwrap_or(-1.0);

    let count = |code: u64| jobs.iter().filter(|j| j["status"] == code).count() as f64;
    let lane = format!("org=\"{org}\",lane=\"priority\"");
    assert_eq!(series("sluice_jobs", &format!("{lane},status=\"succeeded\"")), count(30));
    assert_eq!(series("sluice_jobs", &format!("{lane},status=\"failed\"")), count(31));
    assert_eq!(count(31), 10.0);
    assert_eq!(series("sluice_jobs", &format!("{lane},status=\"waiting-for-resources\"")), 0.0);
    assert_eq!(series("sluice_jobs", &format!("org=\"{org}\",lane=\"regular\",status=\"succeeded\"")), 0.0);

    let fuel: u64 = jobs.iter().map(|j| j["accounting"]["fuel_used"].as_u64().unwrap()).sum();
    assert_eq!(series("sluice_fuel_used_total", &lane), fuel as f64);
    assert_eq!(series("sluice_run_seconds_count", &lane), 60.0, "one execution per job");
    assert_eq!(series("sluice_pickup_latency_seconds_count", &lane), 60.0, "one first pickup per job");
    let held = series("sluice_throttled_pickups_total", &format!("{lane},quota=\"max-threads\""));
    assert!(held >= 1.0, "a burst on one thread is held back: {held}");
    assert!(metrics.get("sluice_store_commit_seconds_count").copied().unwrap_or(0.0) >= 1.0);
    // Committed successes, the node's count (the business errors are not among them).
    assert_eq!(metrics.get("sluice_jobs_succeeded_total").copied(), Some(count(30)));
}
