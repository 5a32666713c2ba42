//! The deliverer: one task that receives ended background operations from the service
//! and delivers each one's callback on a task of its own.

use std::time::Duration;

use serde::Serialize;

use super::signature::sign;
use crate::egress::{Refused, TargetPolicy};
use crate::jobs::{JobId, OrgId};
use crate::service::{Notice, Service};
use crate::store::{Delivery, DeliveryState};

/// How callbacks are delivered (`[callbacks]` of the configuration file).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct CallbackSettings {
    /// Tries per callback. Default 3.
    pub tries: u32,
    /// Wait before the second try; doubled before each further one. Default 1000 ms.
    pub first_retry_ms: u64,
    /// Time allowed for each try (connect, send, answer). Default 10 000 ms.
    pub timeout_ms: u64,
    /// Networks (CIDR) allowed as targets although not public, e.g. `["10.20.0.0/16"]`.
    /// Empty by default: only public addresses are contacted.
    pub allow_networks: Vec<ipnet::IpNet>,
}

impl Default for CallbackSettings {
    fn default() -> Self {
        CallbackSettings { tries: 3, first_retry_ms: 1000, timeout_ms: 10_000, allow_networks: Vec::new() }
    }
}

/// The body POSTed to a callback URI.
#[derive(Debug, Serialize)]
struct CallbackBody {
    location: String,
    id: String,
    state: u32,
    status: u32,
    error_code: Option<String>,
    error_message: Option<String>,
}

/// Delivers callbacks of the service's ended background operations.
#[derive(Clone)]
pub struct Deliverer {
    service: Service,
    settings: CallbackSettings,
    /// The API's public base URL, for each operation's `location`.
    base_url: String,
}

impl Deliverer {
    pub fn new(service: Service, settings: CallbackSettings, base_url: String) -> Self {
        Deliverer { service, settings, base_url: base_url.trim_end_matches('/').to_owned() }
    }

    /// Delivers callbacks until the service's channel closes. Returns at once if
    /// another deliverer already took the channel.
    /// Runaway notices go to their org's notification URL meanwhile.
    pub async fn run(self) {
        let Some(mut ended) = self.service.take_ended_operations() else { return };
        if let Some(mut notices) = self.service.take_notices() {
            let deliverer = self.clone();
            tokio::spawn(async move {
                while let Some(notice) = notices.recv().await {
                    let deliverer = deliverer.clone();
                    tokio::spawn(async move { deliverer.notify(notice).await });
                }
            });
        }
        while let Some((org, id)) = ended.recv().await {
            let deliverer = self.clone();
            tokio::spawn(async move { deliverer.deliver(org, id).await });
        }
    }

    /// Tells an org of a runaway definition at its notification URL (if it has one),
    /// signed and retried as callbacks are; the outcome goes to the log.
    pub async fn notify(&self, notice: Notice) {
        let org = OrgId(notice.org);
        let Some(uri) = self.service.notify_url(org) else { return };
        let body = serde_json::to_vec(&notice).expect("plain data serialises");
        let message_id = format!("msg_sluice_{}_{}_{}", notice.kind, notice.definition, notice.at);
        let policy = TargetPolicy { allow: self.settings.allow_networks.clone() };
        let secret = match self.service.webhook_secret(org) {
            Ok(secret) => secret,
            Err(e) => return tracing::error!(org = org.0, error = %e, "no signing secret"),
        };
        let mut backoff = Duration::from_millis(self.settings.first_retry_ms);
        for attempt in 1..=self.settings.tries.max(1) {
            let tried = match policy.resolve(&uri).await {
                Ok((url, addresses)) => self.try_once(&url, &addresses, &secret, &message_id, &body).await,
                Err(Refused::Unresolved { host, reason }) => {
                    Err(format!("{host} does not resolve: {reason}"))
                }
                Err(refused) => {
                    return tracing::warn!(org = org.0, %refused, "notification target refused");
                }
            };
            match tried {
                Ok(()) => return tracing::info!(org = org.0, kind = notice.kind, "org notified"),
                Err(error) if attempt < self.settings.tries => {
                    tracing::info!(org = org.0, attempt, %error, "notification try failed");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                Err(error) => tracing::warn!(org = org.0, %error, "notification not delivered"),
            }
        }
    }

    fn record(&self, id: JobId, delivery: &Delivery) {
        if let Err(e) = self.service.record_delivery(id, delivery) {
            tracing::error!(job = id.0, error = %e, "cannot record a callback delivery");
        }
    }

    /// Delivers one operation's callback (if it asked for one and it is still due).
    pub async fn deliver(&self, org: OrgId, id: JobId) {
        let Ok((job, operation)) = self.service.operation(org, id) else { return };
        let Some(uri) = operation.callback_uri.filter(|_| operation.delivery.state == DeliveryState::Waiting)
        else {
            return;
        };
        let location = format!("{}/api/v1/background-operations/{}", self.base_url, id.0);
        let body = CallbackBody {
            location,
            id: id.0.to_string(),
            state: job.status.state() as u32,
            status: job.status.code(),
            error_code: job.error_code,
            error_message: job.error_message,
        };
        let body = serde_json::to_vec(&body).expect("plain data serialises");
        let mut delivery = Delivery { state: DeliveryState::Waiting, attempts: 0, error: None, at: None };
        let policy = TargetPolicy { allow: self.settings.allow_networks.clone() };
        let secret = match self.service.webhook_secret(org) {
            Ok(secret) => secret,
            Err(e) => {
                tracing::error!(job = id.0, error = %e, "no signing secret");
                return;
            }
        };
        let message_id = format!("msg_sluice_{}", id.0);
        let mut backoff = Duration::from_millis(self.settings.first_retry_ms);
        for attempt in 1..=self.settings.tries.max(1) {
            delivery.attempts = attempt;
            // Resolved and checked at every try: a name that does not resolve now may
            // later, and one that resolves elsewhere later is checked again.
            let tried = match policy.resolve(&uri).await {
                Ok((url, addresses)) => self.try_once(&url, &addresses, &secret, &message_id, &body).await,
                Err(Refused::Unresolved { host, reason }) => {
                    Err(format!("{host} does not resolve: {reason}"))
                }
                Err(refused) => {
                    tracing::warn!(job = id.0, %refused, "callback target refused");
                    delivery = Delivery {
                        state: DeliveryState::Refused,
                        attempts: 0,
                        error: Some(refused.to_string()),
                        at: Some(self.service.now()),
                    };
                    return self.record(id, &delivery);
                }
            };
            match tried {
                Ok(()) => {
                    delivery.state = DeliveryState::Delivered;
                    delivery.error = None;
                    break;
                }
                Err(error) => {
                    tracing::info!(job = id.0, attempt, %error, "callback try failed");
                    delivery.error = Some(error);
                    if attempt < self.settings.tries {
                        self.record(id, &delivery);
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                    } else {
                        delivery.state = DeliveryState::Failed;
                    }
                }
            }
        }
        delivery.at = Some(self.service.now());
        self.record(id, &delivery);
    }

    /// One POST, to the checked addresses only; a redirect is a failure, not followed.
    async fn try_once(
        &self,
        url: &reqwest::Url,
        addresses: &[std::net::SocketAddr],
        secret: &str,
        message_id: &str,
        body: &[u8],
    ) -> Result<(), String> {
        let mut client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(self.settings.timeout_ms))
            .no_proxy()
            .user_agent(concat!("Sluice-Callbacks/", env!("CARGO_PKG_VERSION")));
        if let Some(domain) = url.domain() {
            // Pin the name to the addresses the policy checked (no second lookup).
            client = client.resolve_to_addrs(domain, addresses);
        }
        let client = client.build().map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let response = client
            .post(url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", sign(secret, message_id, timestamp, body))
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| error_chain(&e))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else if status.is_redirection() {
            let to = response.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or("?");
            Err(format!("the receiver answered {status} redirecting to {to}; redirects are not followed"))
        } else {
            Err(format!("the receiver answered {status}"))
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
