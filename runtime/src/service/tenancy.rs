//! Organisations' access and health: tenant tokens (stored hashed), the callback
//! signing secret, and each lane's throttling state.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

use super::{Error, Result, Service};
use crate::jobs::{Lane, Millis, OrgId, Quotas, Status};
use crate::store::TokenRow;

/// Every tenant token starts with this, so a leaked one is easy to recognise (and to
/// find with a secret scanner).
pub const TOKEN_PREFIX: &str = "slu_";

/// A token just issued: the only time the token itself is seen.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub row: TokenRow,
}

/// One lane of one org, as the tenant and the operator see it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct LaneHealth {
    #[schema(value_type = String)]
    pub lane: Lane,
    #[schema(value_type = Object)]
    pub quotas: Quotas,
    /// Jobs running now, against `quotas.max-threads`.
    pub in_progress: u32,
    /// Starts in the current throughput window, against `quotas.max-throughput`.
    pub starts_in_window: u32,
    /// When the current throughput window ends (milliseconds since the epoch).
    pub window_ends_at: Millis,
    /// Jobs queued and ready to start.
    pub ready: u64,
    /// Whether a ready job is held back by a quota right now.
    pub throttled: bool,
    /// Stored jobs of this lane by status code.
    pub jobs_by_status: std::collections::BTreeMap<u32, u64>,
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    bytes
}

/// The SHA-256 of a token, as stored and looked up.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Service {
    pub fn orgs(&self) -> Result<Vec<(OrgId, String)>> {
        Ok(self.shared.store.orgs()?)
    }

    /// The org's name, or `NotFound`.
    pub fn org_name(&self, org: OrgId) -> Result<String> {
        self.orgs()?
            .into_iter()
            .find(|(id, _)| *id == org)
            .map(|(_, name)| name)
            .ok_or(Error::NotFound("organisation"))
    }

    /// Issues a tenant token: 32 random bytes, prefixed; only its hash is stored.
    pub fn issue_token(&self, org: OrgId, label: &str) -> Result<IssuedToken> {
        let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()));
        let prefix: String = token.chars().take(TOKEN_PREFIX.len() + 6).collect();
        let row = self.shared.store.create_token(org, label, &prefix, &token_hash(&token), self.now())?;
        Ok(IssuedToken { token, row })
    }

    pub fn tokens(&self, org: OrgId) -> Result<Vec<TokenRow>> {
        Ok(self.shared.store.tokens(org)?)
    }

    pub fn revoke_token(&self, org: OrgId, id: u64) -> Result<()> {
        Ok(self.shared.store.revoke_token(org, id, self.now())?)
    }

    /// The org of a live tenant token.
    pub fn authenticate(&self, token: &str) -> Result<Option<OrgId>> {
        if !token.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        Ok(self.shared.store.token_org(&token_hash(token))?)
    }

    /// The org's callback signing secret, Standard Webhooks style (`whsec_` and the
    /// base64 of 32 random bytes); made at first use.
    pub fn webhook_secret(&self, org: OrgId) -> Result<String> {
        let fresh = format!("whsec_{}", STANDARD.encode(random_bytes::<32>()));
        Ok(self.shared.store.webhook_secret(org, &fresh)?)
    }

    /// Each lane's quotas and throttling state, and its jobs by status
    /// ([`Service::job_counts`]).
    pub fn lane_health(&self, org: OrgId) -> Result<Vec<LaneHealth>> {
        let counts = self.job_counts(org)?;
        let now = self.now();
        let state = self.state();
        Ok(Lane::ALL
            .into_iter()
            .map(|lane| {
                let quotas = state.scheduler.quotas(org, lane);
                let window = quotas.throughput_window();
                let in_progress = state.scheduler.running(org, lane);
                let starts_in_window = state.scheduler.starts_in_window(org, lane, now);
                let ready = state.scheduler.ready(org, lane);
                let capped = in_progress >= quotas.max_threads || starts_in_window >= quotas.max_throughput;
                LaneHealth {
                    lane,
                    quotas,
                    in_progress,
                    starts_in_window,
                    window_ends_at: (now.div_euclid(window) + 1) * window,
                    ready,
                    throttled: ready > 0 && capped && lane != Lane::Exempt,
                    jobs_by_status: counts
                        .iter()
                        .filter(|(l, _, _)| *l == lane)
                        .map(|(_, status, n): &(Lane, Status, u64)| (status.code(), *n))
                        .collect(),
                }
            })
            .collect())
    }
}
