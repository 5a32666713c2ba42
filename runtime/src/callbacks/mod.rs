//! Callbacks of background operations: when an operation ends, Sluice POSTs
//! {location, id, state, status, error code, error message} to its callback URI,
//! signed Standard Webhooks style with the org's secret, retried with exponential
//! backoff, never following a redirect, and only to targets the SSRF policy allows.

mod deliver;
mod signature;

pub use crate::egress::{Refused, TargetPolicy, forbidden_kind, parse as parse_uri};
pub use deliver::{CallbackSettings, Deliverer};
pub use signature::{sign, verify};
