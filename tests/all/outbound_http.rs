//! Plug-ins' outgoing HTTP (`wasi:http`, JavaScript's `fetch`), under Dataverse's sandbox
//! rules: DNS names of public addresses only, redirects not followed, per-execution
//! limits, and an operator allow-list per org, the only way to a loopback server here.

use std::time::Duration;

use sluice::engine::{Execution, ExecutionContext, ExecutionRequest, Limits, OutboundAccess, StepConfig};
use sluice::records::{OrgRecords, Value};
use sluice_sample_plugins as samples;

use crate::support::{engine, plugin, store};

/// A loopback server: `/hello`, `/big` (100 KB), `/slow` (50 ms), `/redirect` (to a
/// private address).
async fn server() -> String {
    let app = axum::Router::new()
        .route("/hello", axum::routing::get(|| async { "hello from the allow-listed server" }))
        .route("/big", axum::routing::get(|| async { "x".repeat(100_000) }))
        .route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                "slow"
            }),
        )
        .route(
            "/redirect",
            axum::routing::get(|| async {
                (axum::http::StatusCode::FOUND, [("location", "http://10.1.2.3/")], "")
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

/// Runs the probe on `urls` with `limits` and the org's `access`; its outputs in order.
async fn probe(urls: &[String], limits: Limits, access: OutboundAccess) -> (Vec<String>, Execution) {
    let mut context = ExecutionContext::new("Probe", "none");
    context.input_parameters.insert("urls".into(), Value::from(urls.join("\n").as_str()));
    let request = ExecutionRequest {
        records: OrgRecords::new(context.org_id.clone(), store(vec![])),
        context,
        config: StepConfig::default(),
        limits,
        stop: None,
        outbound: access,
    };
    let execution = engine().execute(&plugin(samples::JS_HTTP_PROBE), request).await;
    let output = execution.outcome.clone().unwrap_or_else(|e| panic!("the probe itself failed: {e}"));
    let results = (0..urls.len())
        .map(|i| match &output.output_parameters[&format!("r{i}")] {
            Value::String(text) => text.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    (results, execution)
}

fn loopback() -> OutboundAccess {
    OutboundAccess { allow_networks: vec!["127.0.0.1/32".parse().unwrap()] }
}

fn trace_of(execution: &Execution) -> String {
    execution.trace.lines().collect::<Vec<_>>().join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_form_of_a_non_public_target_is_refused_before_connecting() {
    let base = server().await;
    let port = base.rsplit(':').next().unwrap();
    let refused = [
        (format!("{base}/hello"), "names an IP literal (127.0.0.1, a loopback address)"),
        ("http://93.184.216.34/".to_owned(), "names an IP literal (93.184.216.34, a public address)"),
        (format!("http://[::1]:{port}/hello"), "names an IP literal (::1, a loopback address)"),
        (
            format!("http://localhost:{port}/hello"),
            "host localhost resolves to 127.0.0.1, a loopback address",
        ),
        ("http://10.1.2.3/".to_owned(), "names an IP literal (10.1.2.3, a private address)"),
        ("http://169.254.169.254/latest/meta-data/".to_owned(), "a link-local address"),
        ("https://sluice-test.invalid/".to_owned(), "does not resolve"),
    ];
    let urls: Vec<String> =
        refused.iter().map(|(url, _)| url.clone()).chain(["ftp://example.com/file".to_owned()]).collect();
    let (results, execution) = probe(&urls, Limits::default(), OutboundAccess::default()).await;
    let trace = trace_of(&execution);
    for (i, (url, why)) in refused.iter().enumerate() {
        assert!(results[i].starts_with("error:"), "{url}: {}", results[i]);
        assert!(trace.contains(why), "{url}: expected '{why}' in the trace:\n{trace}");
    }
    assert!(results[refused.len()].starts_with("error:"), "ftp: {}", results[refused.len()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allow_list_opens_a_network_and_the_time_is_host_time() {
    let base = server().await;
    let urls = [format!("{base}/hello"), format!("{base}/slow")];
    let (results, execution) = probe(&urls, Limits::default(), loopback()).await;
    assert_eq!(results[0], "200 hello from the allow-listed server");
    assert_eq!(results[1], "200 slow");
    assert!(execution.accounting.host_time_us >= 50_000, "{:?}", execution.accounting);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed_and_where_they_point_is_checked() {
    let base = server().await;
    let urls = [format!("{base}/redirect"), "http://10.1.2.3/".to_owned()];
    let (results, execution) = probe(&urls, Limits::default(), loopback()).await;
    assert!(!results[0].starts_with("200"), "the redirect was followed: {}", results[0]);
    assert!(results[1].starts_with("error:"), "{}", results[1]);
    assert!(trace_of(&execution).contains("10.1.2.3, a private address"), "{}", trace_of(&execution));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_bytes_are_limited_per_execution() {
    let base = server().await;
    let limits = Limits { http_requests: 2, ..Limits::default() };
    let urls = vec![format!("{base}/hello"); 3];
    let (results, execution) = probe(&urls, limits, loopback()).await;
    assert!(results[0].starts_with("200") && results[1].starts_with("200"), "{results:?}");
    assert!(results[2].starts_with("error:"), "{results:?}");
    assert!(trace_of(&execution).contains("past the limit of requests per execution"));

    let limits = Limits { http_bytes: 10_000, ..Limits::default() };
    let (results, execution) = probe(&[format!("{base}/big")], limits, loopback()).await;
    assert!(results[0].starts_with("error:"), "{results:?}");
    assert!(trace_of(&execution).contains("the response body is past the byte limit"));

    let limits = Limits { http_requests: 0, ..Limits::default() };
    let (results, _) = probe(&[format!("{base}/hello")], limits, loopback()).await;
    assert!(results[0].starts_with("error:"), "no requests at all: {results:?}");
}

#[test]
fn an_orgs_allow_list_comes_from_the_configuration_file() {
    let config = sluice::config::ServeConfig::parse(
        "[[org]]\nname = \"contoso\"\noutbound-allow-networks = [\"10.20.0.0/16\"]\n",
    )
    .unwrap();
    assert_eq!(config.orgs[0].outbound_allow_networks, vec!["10.20.0.0/16".parse::<ipnet::IpNet>().unwrap()]);
}
