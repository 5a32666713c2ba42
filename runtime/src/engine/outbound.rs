//! Outbound HTTP from plug-ins (`wasi:http/outgoing-handler`).
//!
//! A standard JavaScript build (componentize-js) imports `wasi:http` for `fetch`, so the
//! interface is linked for every plug-in; what a request may reach is decided here, not
//! by the guest. Until an org is given an outbound policy, every request is refused
//! with `HTTP-request-denied` before anything is resolved or connected: a plug-in that
//! only links the interface runs, one that calls it gets an error it can handle.

use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// The hooks of one execution's HTTP view: refuses every outgoing request.
#[derive(Debug, Default)]
pub(crate) struct DeniedOutbound;

/// What `send_request` returns (wasmtime-wasi-http 48's hook signature).
type Sent = Box<
    dyn Future<
            Output = Result<
                (http::Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for DeniedOutbound {
    fn send_request(
        &mut self,
        _request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _done: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Sent {
        Box::new(async { Err(Error::HttpRequestDenied) })
    }
}
