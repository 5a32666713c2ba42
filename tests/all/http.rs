//! A real Sluice HTTP server on 127.0.0.1 for the API tests, driven over HTTP only, and
//! small helpers to call it.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value as Json, json};
use sluice::api::ApiSettings;
use sluice::callbacks::{CallbackSettings, Deliverer};
use sluice::service::{Options, Service, SystemClock};
use sluice::store::SqliteStore;

use crate::support::engine;

pub struct TestServer {
    pub base: String,
    pub operator: String,
    pub client: reqwest::Client,
    _data: tempfile::TempDir,
}

/// An answer: status, JSON body (null if none) and headers.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub json: Json,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    /// The error code of an error answer.
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }
}

/// A tenant: its org and token.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub org: u64,
    pub token: String,
}

impl TestServer {
    /// Starts a server (store, driver, API, callback deliverer) on a free port.
    pub async fn start(callbacks: CallbackSettings) -> TestServer {
        let data = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&data.path().join("sluice.db")).unwrap());
        let service =
            Service::open(store, engine().clone(), Arc::new(SystemClock), Options::default()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let operator = "sluop_test_operator_token".to_owned();
        let app = sluice::api::router(service.clone(), &operator, &ApiSettings::default(), &base);
        tokio::spawn(async move { axum::serve(listener, app).await });
        tokio::spawn(Deliverer::new(service.clone(), callbacks, base.clone()).run());
        let driver = service.clone();
        tokio::spawn(async move { driver.run(std::future::pending()).await });
        let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        TestServer { base, operator, client, _data: data }
    }

    /// The server's data directory (its SQLite file is `sluice.db` there).
    pub fn data_dir(&self) -> &std::path::Path {
        self._data.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    /// Sends a request with a bearer token and an optional JSON body.
    pub async fn send(&self, method: Method, path: &str, token: &str, body: Option<Json>) -> Reply {
        let mut request = self.client.request(method, self.url(path)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        reply(request.send().await.unwrap()).await
    }

    /// Sends raw bytes with a content type.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Reply {
        let request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body);
        reply(request.send().await.unwrap()).await
    }

    /// Sends only the head of a request whose `Content-Length` is `length`, over a raw
    /// connection, and reads the answer: an oversize body is refused from its length,
    /// before it is sent (sending it would race the server's early answer).
    pub async fn announce_oversize(
        &self,
        path: &str,
        content_type: &str,
        length: usize,
        token: &str,
    ) -> Reply {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let address = self.base.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let head = format!(
            "POST /api/v1{path} HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {token}\r\n\
             content-type: {content_type}\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
            .await
            .expect("the server answers without waiting for the body")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
        Reply { status, json: serde_json::from_str(body).unwrap_or(Json::Null), headers: Default::default() }
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.send(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Json) -> Reply {
        self.send(Method::POST, path, token, Some(body)).await
    }

    /// Creates an org and issues it a token.
    pub async fn tenant(&self, name: &str) -> Tenant {
        let org = self.post("/orgs", &self.operator, json!({ "name": name })).await;
        assert_eq!(org.status, 201, "{org:?}");
        let id = org.json["id"].as_u64().unwrap();
        let token =
            self.post(&format!("/orgs/{id}/tokens"), &self.operator, json!({ "label": "tests" })).await;
        assert_eq!(token.status, 201, "{token:?}");
        Tenant { org: id, token: token.json["token"].as_str().unwrap().to_owned() }
    }

    /// Uploads a sample plug-in; returns its version id.
    pub async fn upload(&self, tenant: &Tenant, path: &str, name: &str) -> u64 {
        let bytes = std::fs::read(path).unwrap();
        let reply = self
            .raw(Method::POST, &format!("/plugins?name={name}"), &tenant.token, "application/wasm", bytes)
            .await;
        assert_eq!(reply.status, 201, "{reply:?}");
        reply.json["id"].as_u64().unwrap()
    }

    /// Polls `path` until `done` holds for its answer (at most 30 s).
    pub async fn wait_for(&self, path: &str, token: &str, done: impl Fn(&Json) -> bool) -> Json {
        for _ in 0..3000 {
            let reply = self.get(path, token).await;
            if reply.status == 200 && done(&reply.json) {
                return reply.json;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{path} never reached the expected state: {:?}", self.get(path, token).await);
    }
}

async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let json =
        if text.is_empty() { Json::Null } else { serde_json::from_str(&text).unwrap_or(Json::String(text)) };
    Reply { status, json, headers }
}

/// What a receiver got: each request's headers and body.
pub type Received = Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, Vec<u8>)>>>;

/// A local HTTP receiver that records every request and answers with `status` (and a
/// `location` header when it redirects).
pub struct Receiver {
    pub url: String,
    pub received: Received,
}

impl Receiver {
    pub async fn start(status: u16, location: Option<String>, delay: Duration) -> Receiver {
        let received: Received = Arc::default();
        let log = received.clone();
        let app =
            axum::Router::new().fallback(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let log = log.clone();
                let location = location.clone();
                async move {
                    log.lock().unwrap().push((headers, body.to_vec()));
                    tokio::time::sleep(delay).await;
                    let mut response = axum::http::Response::builder().status(status);
                    if let Some(location) = location {
                        response = response.header("location", location);
                    }
                    response.body(axum::body::Body::empty()).unwrap()
                }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/sluice", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, received }
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}
