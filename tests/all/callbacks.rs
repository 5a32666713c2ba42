//! MISSION scenario 5, over HTTP: a background operation answers 202 with a Location,
//! is polled to its end, and its signed callback reaches a real local receiver; cancel
//! rules; retries; and the SSRF policy refusing internal targets (recorded on the
//! operation, the target never contacted).

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value as Json, json};
use sluice::callbacks::{CallbackSettings, verify};
use sluice::service::{CANCEL_STARTED_MESSAGE, CANCEL_TERMINAL_MESSAGE};
use sluice_sample_plugins as samples;

use crate::http::{Receiver, Tenant, TestServer};

/// Callbacks to loopback allowed (the receivers run there), quick retries.
fn loopback_allowed() -> CallbackSettings {
    CallbackSettings {
        tries: 3,
        first_retry_ms: 20,
        timeout_ms: 500,
        allow_networks: vec!["127.0.0.0/8".parse().unwrap()],
    }
}

async fn with_api(server: &TestServer, name: &str, plugin: &str) -> Tenant {
    let tenant = server.tenant(name).await;
    let id = server.upload(&tenant, plugin, "api").await;
    let api = json!({"name": "sample_Export", "plugin": id, "parameters": [{"name": "FetchXml", "type": "string"}]});
    assert_eq!(server.post("/custom-apis", &tenant.token, api).await.status, 201);
    tenant
}

fn request(callback: &str) -> Json {
    json!({"request": {"name": "sample_Export", "parameters": {"FetchXml": "<fetch><entity name='account'/></fetch>"}},
           "callback_uri": callback})
}

/// Polls the operation until its callback delivery has ended.
async fn delivered(server: &TestServer, tenant: &Tenant, location: &str) -> Json {
    let path = location.split("/api/v1").nth(1).unwrap().to_owned();
    server
        .wait_for(&path, &tenant.token, |op| {
            op["callback"]["delivery"]["state"].as_str().is_some_and(|s| s != "waiting")
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_operation_with_a_signed_callback() {
    let server = TestServer::start(loopback_allowed()).await;
    let tenant = with_api(&server, "contoso", samples::ECHO).await;
    let receiver = Receiver::start(204, None, Duration::ZERO).await;

    let accepted = server.post("/background-operations", &tenant.token, request(&receiver.url)).await;
    assert_eq!(accepted.status, 202, "{accepted:?}");
    let location = accepted.headers["location"].to_str().unwrap().to_owned();
    let id = accepted.json["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("{}/api/v1/background-operations/{id}", server.base));
    assert_eq!(accepted.json["location"], location);

    let operation = delivered(&server, &tenant, &location).await;
    assert_eq!(
        (operation["state"].as_u64(), operation["status"].as_u64()),
        (Some(3), Some(30)),
        "{operation}"
    );
    assert_eq!(operation["output_parameters"]["FetchXml"], "<fetch><entity name='account'/></fetch>");
    assert_eq!(operation["callback"]["delivery"]["state"], "delivered", "{operation}");
    assert_eq!(operation["callback"]["delivery"]["attempts"], 1);

    // The receiver got one POST, signed with the org's secret, Standard Webhooks style.
    let received = receiver.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let (headers, body) = &received[0];
    let secret = server.get("/org", &tenant.token).await.json["webhook_secret"].as_str().unwrap().to_owned();
    let header = |name: &str| headers[name].to_str().unwrap().to_owned();
    let timestamp: i64 = header("webhook-timestamp").parse().unwrap();
    assert!(verify(&secret, &header("webhook-id"), timestamp, body, &header("webhook-signature")));
    assert!(!verify(
        "whsec_c29tZSBvdGhlciBzZWNyZXQ=",
        &header("webhook-id"),
        timestamp,
        body,
        &header("webhook-signature")
    ));
    let body: Json = serde_json::from_slice(body).unwrap();
    assert_eq!(
        body,
        json!({"location": location, "id": id, "state": 3, "status": 30, "error_code": null, "error_message": null})
    );

    // After a terminal state, cancel is refused with Dataverse's message.
    let refused =
        server.send(Method::DELETE, &format!("/background-operations/{id}"), &tenant.token, None).await;
    assert_eq!((refused.status, refused.code()), (409, "cancel-not-allowed"));
    assert_eq!(refused.json["error"]["message"], CANCEL_TERMINAL_MESSAGE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_works_before_the_start_only_and_failures_are_reported() {
    let server = TestServer::start(loopback_allowed()).await;
    let tenant = with_api(&server, "contoso", samples::ECHO).await;
    let receiver = Receiver::start(200, None, Duration::ZERO).await;
    // No regular-lane threads: the operation waits, and a DELETE cancels it.
    let zero = json!({"max-threads": 0});
    let set = server
        .send(Method::PUT, &format!("/orgs/{}/quotas/regular", tenant.org), &server.operator, Some(zero))
        .await;
    assert_eq!(set.status, 200);
    let accepted = server.post("/background-operations", &tenant.token, request(&receiver.url)).await;
    let location = accepted.headers["location"].to_str().unwrap().to_owned();
    let path = location.split("/api/v1").nth(1).unwrap().to_owned();
    assert_eq!(server.get(&path, &tenant.token).await.json["status"], 0);
    let canceled = server.send(Method::DELETE, &path, &tenant.token, None).await;
    assert_eq!(canceled.json["status"], 32, "{canceled:?}");
    let operation = delivered(&server, &tenant, &location).await;
    assert_eq!(operation["callback"]["delivery"]["state"], "delivered");
    let body: Json = serde_json::from_slice(&receiver.received.lock().unwrap()[0].1).unwrap();
    assert_eq!((body["state"].as_u64(), body["status"].as_u64()), (Some(3), Some(32)));

    // A running operation cannot be canceled any more.
    let spin = with_api(&server, "spinner", samples::HOSTILE_INFINITE_LOOP).await;
    let running = server.post("/background-operations", &spin.token, request(&receiver.url)).await;
    let path = format!("/background-operations/{}", running.json["id"].as_str().unwrap());
    server.wait_for(&path, &spin.token, |op| op["status"] == 20).await;
    let refused = server.send(Method::DELETE, &path, &spin.token, None).await;
    assert_eq!(
        (refused.status, refused.json["error"]["message"].as_str()),
        (409, Some(CANCEL_STARTED_MESSAGE))
    );

    // A receiver that keeps failing is tried three times, then the delivery is failed.
    let failing = Receiver::start(500, None, Duration::ZERO).await;
    let failed_op = server.post("/background-operations", &tenant.token, request(&failing.url)).await;
    let zero_again = server
        .send(Method::PUT, &format!("/orgs/{}/quotas/regular", tenant.org), &server.operator, Some(json!({})))
        .await;
    assert_eq!(zero_again.status, 200);
    let operation = delivered(&server, &tenant, failed_op.headers["location"].to_str().unwrap()).await;
    let delivery = &operation["callback"]["delivery"];
    assert_eq!(
        (delivery["state"].as_str(), delivery["attempts"].as_u64()),
        (Some("failed"), Some(3)),
        "{operation}"
    );
    assert!(delivery["error"].as_str().unwrap().contains("500"), "{delivery}");
    assert_eq!(failing.count(), 3);

    // A receiver slower than the timeout fails the same way.
    let slow = Receiver::start(200, None, Duration::from_secs(3)).await;
    let slow_op = server.post("/background-operations", &tenant.token, request(&slow.url)).await;
    let operation = delivered(&server, &tenant, slow_op.headers["location"].to_str().unwrap()).await;
    assert_eq!(operation["callback"]["delivery"]["state"], "failed", "{operation}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_to_internal_targets_are_refused_and_recorded() {
    // The default policy: only public addresses.
    let server =
        TestServer::start(CallbackSettings { first_retry_ms: 20, ..CallbackSettings::default() }).await;
    let tenant = with_api(&server, "contoso", samples::ECHO).await;
    let receiver = Receiver::start(200, None, Duration::ZERO).await;
    let port = receiver.url.split(':').nth(2).unwrap().split('/').next().unwrap().to_owned();
    let targets = [
        (format!("http://127.0.0.1:{port}/hooks"), "loopback"),
        (format!("http://[::1]:{port}/hooks"), "loopback"),
        ("http://10.0.0.1/hooks".to_owned(), "private"),
        ("http://169.254.169.254/latest/meta-data".to_owned(), "link-local"),
        ("http://192.168.1.1/hooks".to_owned(), "private"),
        (format!("http://[::ffff:127.0.0.1]:{port}/hooks"), "loopback"),
        (format!("http://localhost:{port}/hooks"), "loopback"),
    ];
    for (uri, kind) in &targets {
        let accepted = server.post("/background-operations", &tenant.token, request(uri)).await;
        assert_eq!(accepted.status, 202, "{uri}: {accepted:?}");
        let operation = delivered(&server, &tenant, accepted.headers["location"].to_str().unwrap()).await;
        let delivery = &operation["callback"]["delivery"];
        assert_eq!(delivery["state"], "refused", "{uri}: {operation}");
        assert_eq!(delivery["attempts"], 0, "{uri}: never contacted");
        assert!(delivery["error"].as_str().unwrap().contains(kind), "{uri}: {delivery}");
    }
    assert_eq!(receiver.count(), 0, "no refused target was contacted");

    // Redirects are never followed: an allowed target redirecting to loopback fails.
    let inner = Receiver::start(200, None, Duration::ZERO).await;
    let redirector = Receiver::start(307, Some(inner.url.clone()), Duration::ZERO).await;
    let only_redirector = CallbackSettings {
        tries: 1,
        allow_networks: vec![format!("{}/32", "127.0.0.1").parse().unwrap()],
        ..CallbackSettings::default()
    };
    let server = TestServer::start(only_redirector).await;
    let tenant = with_api(&server, "contoso", samples::ECHO).await;
    let accepted = server.post("/background-operations", &tenant.token, request(&redirector.url)).await;
    let operation = delivered(&server, &tenant, accepted.headers["location"].to_str().unwrap()).await;
    let delivery = &operation["callback"]["delivery"];
    assert_eq!(delivery["state"], "failed", "{operation}");
    assert!(delivery["error"].as_str().unwrap().contains("redirects are not followed"), "{delivery}");
    assert_eq!((redirector.count(), inner.count()), (1, 0));
}
