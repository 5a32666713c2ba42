//! Outbound HTTP from plug-ins (`wasi:http/outgoing-handler`), under Dataverse's sandbox
//! rules and the same target policy as callbacks ([`crate::egress`]).
//!
//! A standard JavaScript build (componentize-js) imports `wasi:http` for `fetch`, so the
//! interface is linked for every plug-in; what a request may reach is decided here, not
//! by the guest:
//! - http and https only, to DNS names: an IP literal, or a name that resolves to a
//!   loopback, private, link-local or otherwise non-public address, is refused unless the
//!   operator allow-listed its network for the org; the checked addresses are the ones
//!   connected to (no second lookup);
//! - redirects are handed to the plug-in, never followed: a request to where one points
//!   is checked like any other;
//! - per execution: at most `http-requests` requests and `http-bytes` of bodies (sent and
//!   received together), each request within `http-timeout-ms` and the run's deadline;
//! - the time spent is host time in the run's accounting, and every refusal is a line of
//!   the trace log, so an author sees why a request failed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use ipnet::IpNet;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::egress::{Refused, TargetPolicy};

/// What an org's plug-ins may reach beyond the public internet: networks the operator
/// allow-listed for it (`[[org]] outbound-allow-networks`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutboundAccess {
    pub allow_networks: Vec<IpNet>,
}

/// The hooks of one execution's HTTP view.
pub(crate) struct Outbound {
    policy: TargetPolicy,
    requests_left: u64,
    bytes: u64,
    timeout: Duration,
    deadline: Instant,
    /// Made at the first request: most executions make none, and this is the per-job path.
    usage: Option<Arc<Usage>>,
}

/// What an execution's requests used, shared with the requests in flight.
#[derive(Default)]
pub(crate) struct Usage {
    /// Body bytes (sent and received) the execution may still move.
    bytes_left: AtomicU64,
    /// Time spent in requests, for the run's host time.
    pub spent_ns: AtomicU64,
    /// What happened to each refused or failed request, for the trace log.
    pub notes: Mutex<Vec<String>>,
}

impl Outbound {
    pub fn new(access: &OutboundAccess, limits: &super::Limits, deadline: Instant) -> Outbound {
        Outbound {
            policy: TargetPolicy { allow: access.allow_networks.clone() },
            requests_left: limits.http_requests,
            bytes: limits.http_bytes,
            timeout: Duration::from_millis(limits.http_timeout_ms),
            deadline,
            usage: None,
        }
    }

    /// What the execution's requests used, if it made any.
    pub fn usage(&self) -> Option<&Arc<Usage>> {
        self.usage.as_ref()
    }
}

/// What `send_request` returns (wasmtime-wasi-http 48's hook signature).
type Sent = Box<
    dyn Future<
            Output = Result<
                (http::Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _done: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Sent {
        let target = format!("{} {}", request.method(), request.uri());
        let bytes = self.bytes;
        let usage = self
            .usage
            .get_or_insert_with(|| Arc::new(Usage { bytes_left: AtomicU64::new(bytes), ..Usage::default() }))
            .clone();
        let note = {
            let usage = usage.clone();
            move |text: String| usage.notes.lock().unwrap_or_else(|e| e.into_inner()).push(text)
        };
        if self.requests_left == 0 {
            note(format!("http: {target}: refused: past the limit of requests per execution"));
            return Box::new(async { Err(Error::ConnectionLimitReached) });
        }
        self.requests_left -= 1;
        let policy = self.policy.clone();
        let timeout = self.timeout.min(self.deadline.saturating_duration_since(Instant::now()));
        Box::new(async move {
            let started = Instant::now();
            let sent = send(request, &policy, &usage.bytes_left, timeout).await;
            usage.spent_ns.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            sent.map(|response| {
                let done: Box<dyn Future<Output = Result<(), Error>> + Send> = Box::new(async { Ok(()) });
                (response, done)
            })
            .map_err(|(error, why)| {
                note(format!("http: {target}: {why}"));
                error
            })
        })
    }
}

/// Takes `n` bytes from what the execution may still move; false past it.
fn take(bytes_left: &AtomicU64, n: u64) -> bool {
    bytes_left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(n)).is_ok()
}

/// Sends one request to the addresses the policy checked, and reads its whole answer
/// (within the byte budget); on failure, the error for the guest and why, for the trace.
async fn send(
    request: http::Request<WasiBody>,
    policy: &TargetPolicy,
    bytes_left: &AtomicU64,
    timeout: Duration,
) -> Result<http::Response<WasiBody>, (Error, String)> {
    let (parts, body) = request.into_parts();
    let uri = parts.uri.to_string();
    let (url, addresses) = policy.resolve(&uri).await.map_err(|refused| {
        let error = match &refused {
            Refused::BadUri(_) => Error::HttpRequestUriInvalid,
            Refused::Forbidden { .. } | Refused::IpLiteral { .. } => Error::DestinationIpProhibited,
            Refused::Unresolved { .. } => Error::DestinationNotFound,
        };
        (error, format!("refused: {refused}"))
    })?;
    let budget = usize::try_from(bytes_left.load(Ordering::Relaxed)).unwrap_or(usize::MAX);
    let body = Limited::new(body, budget)
        .collect()
        .await
        .map_err(|_| {
            (Error::HttpRequestBodySize(None), "refused: the request body is past the byte limit".into())
        })?
        .to_bytes();
    if !take(bytes_left, body.len() as u64) {
        return Err((
            Error::HttpRequestBodySize(None),
            "refused: the request body is past the byte limit".into(),
        ));
    }
    let mut client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .no_proxy()
        .user_agent(concat!("Sluice-Plugin/", env!("CARGO_PKG_VERSION")));
    if let Some(domain) = url.domain() {
        // Pinned to the addresses the policy checked: the name is not looked up again.
        client = client.resolve_to_addrs(domain, &addresses);
    }
    let client = client.build().map_err(|e| (Error::InternalError(Some(e.to_string())), e.to_string()))?;
    let mut outgoing = client.request(parts.method, url).body(body);
    for (name, value) in &parts.headers {
        outgoing = outgoing.header(name, value);
    }
    let failed = |e: reqwest::Error| {
        let error = if e.is_timeout() {
            Error::ConnectionTimeout
        } else if e.is_connect() {
            Error::ConnectionRefused
        } else {
            Error::InternalError(Some(e.to_string()))
        };
        (error, format!("failed: {e}"))
    };
    let mut response = outgoing.send().await.map_err(failed)?;
    let mut answer = http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        answer = answer.header(name, value);
    }
    let mut received = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        if !take(bytes_left, chunk.len() as u64) {
            return Err((
                Error::HttpResponseBodySize(None),
                "refused: the response body is past the byte limit".into(),
            ));
        }
        received.extend_from_slice(&chunk);
    }
    let body = Full::new(Bytes::from(received)).map_err(|never| match never {}).boxed_unsync();
    answer.body(body).map_err(|e| (Error::InternalError(Some(e.to_string())), e.to_string()))
}
